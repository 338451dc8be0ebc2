#pragma once
// lb-healthd's one event loop: checks every backend (Prober), keeps each backend's health
// (BackendHealth), builds each service's live pool (build_pool) and pushes it to lbd over the
// shared-memory channel (shm::Attachment) through a Publisher, which coalesces when the ring is
// full. Single-threaded: everything here runs on the thread that calls run()/turn().

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "announcer.h"
#include "channel.h"
#include "check_stats.h"
#include "control_server.h"
#include "health_state.h"
#include "healthd_check.h"  // cfg::healthd_problem
#include "lb_config.h"
#include "live_pool.h"
#include "probe.h"
#include "publisher.h"
#include "runtime_dir.h"
#include "state_file.h"

namespace lb::health {

class MetricsServer;  // metrics_server.h

struct Options {
  std::string config_path;
  std::string instance;        // overrides the file's `instance` when not empty
  Millis channel_period{100};  // attach retries, staleness and epoch checks
  uint64_t seed = 0;           // jitter; 0: from std::random_device
  std::string state_file;      // where runtime changes are kept; empty: in memory only
  // lbd's telemetry socket, where the flows of draining backends are counted; empty:
  // /var/run/dpdk/<instance>/dpdk_telemetry.v2 (lbd's default --file-prefix is the instance).
  std::string telemetry;
  // The instance lock and the health file (runtime_dir.h); empty: neither (tests).
  std::string runtime_dir;
};

// Problems the config library does not know about because they are lb-healthd's own limits
// (the channel carries at most shm::kMaxBackendsPerService backends per service), or depend on
// the host: the healthd.socket_owner and socket_group accounts must exist (lb-healthd gives its
// control socket to them at start). "file:line: path: message", like a ConfigError; nullopt when
// the config is fine.
std::optional<std::string> check_for_healthd(const cfg::Config& config);
// The same as a ConfigError: cfg::healthd_problem (healthd_check.h).

// -- Runtime changes (the control socket, docs/lbctl.md) ----------------------------------------

// Why an edit was refused: a short code for programs ("not_found", "exists", "invalid", ...)
// and one line for people.
struct Refusal {
  std::string code;
  std::string message;
};

// Edits the running services (JSON with the config file's keys, state_file.h) in place.
using ServicesEdit = std::function<std::optional<Refusal>(Json& services)>;

struct ChangeResult {
  bool ok = false;
  Refusal refusal;                   // when !ok
  std::vector<std::string> changes;  // what changed, one line each (diff_services)
  bool persisted = false;            // written to the state file
  // Every update sent to lbd after this generation carries the change (when_applied()).
  uint64_t mark = 0;
};

// The outcome of waiting for lbd to apply a change.
struct AckResult {
  bool ok = false;
  std::string code;                 // "timeout" or "rejected" when !ok
  std::string error;                // one line when !ok
  uint64_t generation = 0;          // the newest update that carries the change (0: not sent)
  uint64_t applied_generation = 0;  // lbd's, when the wait ended
  int64_t waited_ms = 0;
};

// -- A snapshot of everything lb-healthd knows, for operators (a later control socket
// serializes it; SIGUSR1 logs it today). Plain data, no pointers into the daemon.
struct BackendStatus {
  uint32_t address = 0;
  uint16_t port = 0;
  uint32_t weight = 0;
  cfg::AdminState admin = cfg::AdminState::kReady;
  Health health = Health::kUp;
  shm::BackendState live = shm::BackendState::kActive;  // what lbd was (or will be) sent
  std::string last_result;                              // describe(ProbeResult)
  long last_http_status = 0;
  int64_t last_latency_ms = 0;
  uint32_t consecutive_successes = 0;
  uint32_t consecutive_failures = 0;
  int64_t in_state_ms = 0;          // since the last flip (or start)
  int64_t last_change_unix_ms = 0;  // wall clock of the last flip (or start)
  uint64_t checks = 0;
  uint64_t failed_checks = 0;
  uint64_t transitions = 0;
  uint64_t passive_syn_rst = 0;
  uint64_t passive_syn_timeout = 0;
  CheckStats check_stats;  // durations and failure reasons, for the metrics
  bool check_running = false;
  int64_t next_check_in_ms = 0;  // meaningless while check_running
  // Removed by a reload, draining until lbd has no flow on it (the rest above is as it was
  // when it was removed; it is not checked any more).
  bool removed = false;
  int64_t flows = -1;         // lbd's count when last read; -1: not read yet
  int64_t drain_left_ms = 0;  // until it is removed whatever its flows
};

struct ServiceStatus {
  std::string name;
  bool removed = false;  // removed by a reload; in lbd's pool until its backends have drained
  uint32_t vip = 0;
  uint16_t port = 0;
  bool fail_open = false;  // panic mode: every non-maint backend sent as active
  uint32_t active = 0;
  bool pending = false;  // its newest state is waiting to be sent
  uint64_t last_generation = 0;
  std::vector<BackendStatus> backends;
};

// The node's BGP announcements (the config's bgp group).
struct BgpStatus {
  bool enabled = false;
  NodeState node = NodeState::kReady;
  std::vector<VipDecision> vips;  // decide()'s newest, one per VIP
  bool in_bird = false;           // BIRD confirmed it read the newest announcements
  std::string last_error;         // why BIRD could not be told, when it could not
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
  std::string bird_config;
  std::string bird_socket;
};

struct DaemonStatus {
  std::string config_file;
  std::string state_file;  // empty: runtime changes are kept in memory only
  std::string instance;
  std::string segment;
  bool attached = false;
  uint64_t epoch = 0;
  uint64_t generation = 0;  // newest generation sent
  uint64_t lbd_received_generation = 0;
  uint64_t lbd_applied_generation = 0;
  uint64_t lbd_rejected_generation = 0;
  uint64_t lbd_pid = 0;
  int64_t lbd_heartbeat_age_ms = -1;  // -1: not attached
  uint64_t updates_sent = 0;
  uint64_t ring_full = 0;       // sends refused because the ring was full
  size_t owed = 0;              // services whose newest state or removal waits to be sent
  size_t removals = 0;          // removals lbd has not acknowledged yet
  uint64_t channel_faults = 0;  // what was refused from the segment as corrupted
  uint64_t attaches = 0;
  uint64_t transitions = 0;
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
  Histogram pool_apply_seconds;  // ApplyTracker's
  std::vector<ServiceStatus> services;
  BgpStatus bgp;
};

std::string format_status(const DaemonStatus& s);  // multi-line, for the log

class Daemon {
 public:
  // With options.runtime_dir, takes the instance lock (throws std::runtime_error when another
  // lb-healthd runs the instance) and starts each backend from its health in the health file.
  Daemon(cfg::Config config, Options options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until SIGTERM or SIGINT is read from `signal_fd` (a non-blocking signalfd for SIGTERM,
  // SIGINT, SIGHUP and SIGUSR1; SIGHUP reloads the file, SIGUSR1 logs the status). Returns the
  // exit code.
  int run(int signal_fd);

  // One turn of the loop: waits at most `max_wait` (less when a check or the channel is due).
  // Returns false once a stop was requested.
  bool turn(int signal_fd, Millis max_wait);

  // Re-reads the file (SIGHUP, `lbctl config reload`). A bad file is logged with file:line and
  // changes nothing. What changed in the file since it was last read is applied to the running
  // services; runtime changes the file does not touch stay (state_file.h). With `replace`, the
  // file's services replace the running ones.
  // A backend (or service) the file no longer has drains (docs/operations.md): lbd is told
  // it is draining (no new flows, established ones continue), and it leaves lbd's pool once lbd
  // counts no flow on it, or after `drain_timeout` (default: healthd.drain_timeout_ms), when
  // its remaining connections are reset. A zero timeout removes at once. The result's changes
  // say which drain.
  bool reload();
  ChangeResult reload_config(bool replace, std::optional<Millis> drain_timeout = std::nullopt);
  // Replaces the running configuration; backends that stay (same service, address and port)
  // keep their health and counters. `why` is said in the log ("reload", "runtime change ...").
  // Backends and services it drops drain for `drain` (0: removed at once; runtime changes,
  // whose removals lbctl drains itself); those already draining go on draining. A reload sends
  // every service to lbd again; a runtime change only what it changed.
  void apply(cfg::Config config, const std::string& why = "reload", Millis drain = Millis(0));

  // A runtime change: `edit` works on a copy of the running services; the result is validated
  // exactly like the file, persisted to the state file, then applied (all or nothing). `what`
  // names it in the log.
  ChangeResult change(const std::string& what, const ServicesEdit& edit);
  // Writes the running configuration over the config file (the old one kept as FILE.bak).
  ChangeResult save_config();
  // The running configuration as a config file.
  std::string running_config_text() const;
  // The running services against the file's (diff_services(base, running)).
  std::vector<std::string> runtime_changes() const;
  const cfg::Config& config() const { return config_; }
  const Options& options() const { return options_; }
  // The file's services when they differ from the running ones (from the state file at start).
  // A service of the file that does not run (removed at run time) is removed in lbd too, which
  // starts from the file.
  void set_base(Json base);

  // Calls `done` (from the loop) once lbd has applied every update sent after `mark`, refused
  // one of them, or `timeout` has passed.
  void when_applied(uint64_t mark, Millis timeout, std::function<void(const AckResult&)> done);

  // The control socket: polled with the checks, served by the loop.
  void set_control(std::unique_ptr<ControlServer> control);
  ControlServer* control() { return control_.get(); }
  // The Prometheus endpoint: the loop hands it a snapshot() whenever a scrape asks for one.
  void set_metrics(std::unique_ptr<MetricsServer> metrics);

  // `lbctl node drain` / `ready`: a draining node withdraws every VIP (bgp group); takes effect
  // in the same turn. Not kept across restarts: lb-healthd starts ready.
  void set_node_state(NodeState state);
  NodeState node_state() const { return node_; }

  void request_stop() { stop_ = true; }
  DaemonStatus snapshot() const;
  const std::string& segment() const { return segment_; }

 private:
  struct BackendRuntime {
    uint64_t id = 0;
    cfg::BackendConfig config;
    ProbeSpec spec;
    BackendHealth health;
    TimePoint next_check;
    std::chrono::system_clock::time_point changed_wall;
    std::string label;  // "web 10.20.0.12:8080"
    CheckStats checks;
  };
  // A backend removed by a reload while lbd drains it (in lbd's pool as draining, not checked).
  struct Leaving {
    BackendRuntime backend;  // as it was when removed (its status is shown as it was)
    TimePoint since;
    TimePoint deadline;  // removed then, flows or not
    uint64_t mark = 0;   // the generation sent when it was removed: later ones carry it draining
    int64_t flows = -1;  // lbd's count when last read
  };
  struct ServiceRuntime {
    cfg::ServiceConfig config;
    std::vector<BackendRuntime> backends;
    LivePool pool;
    uint64_t last_generation = 0;
    std::vector<Leaving> leaving;
    bool removed = false;  // the service itself was removed by a reload: it goes with `leaving`
  };

  TimePoint first_check(const BackendHealth& h, TimePoint now);
  void index();
  void recompute(ServiceRuntime& s);
  void on_transition(ServiceRuntime& s, BackendRuntime& b, const Transition& t);
  TimePoint start_due(TimePoint now);
  void handle_result(uint64_t id, const ProbeResult& r, TimePoint now);
  void channel_tick(TimePoint now);
  void attach(TimePoint now);
  void detach();
  void owe_everything();
  void drain_events(TimePoint now);
  void flush();
  // lbd's counters from the header, checked against what we sent; false (and detached) when
  // they cannot be true.
  struct LbdView {
    uint64_t received = 0;
    uint64_t applied = 0;
    uint64_t rejected = 0;
  };
  bool read_lbd(LbdView& v, TimePoint now);
  void check_channel(TimePoint now);
  void refuse_segment(const std::string& why, TimePoint now);
  void write_health(TimePoint now);
  std::optional<Health> remembered(const std::string& service, const cfg::BackendConfig& b,
                                   TimePoint now, TimePoint& since);
  void handle_signals(int signal_fd);
  uint64_t random() { return rng_(); }
  bool anything_pending() const { return att_ && !publisher_.idle(); }
  // Writes the state file for (base, running); "" or why it could not.
  std::string persist(const Json& base, const Json& running, bool& persisted);
  void check_waiters(TimePoint now);
  // Decides the VIPs to announce and has BIRD announce them (bgp group).
  void announce_tick(TimePoint now);
  void tick_metrics(TimePoint now);
  // Draining after a reload: what was removed and how far its flows have gone.
  void start_leaving(ServiceRuntime& s, BackendRuntime b, Millis drain, TimePoint now);
  void tick_leaving(TimePoint now);
  bool anything_leaving() const;
  // lbd's active flows per "service|address:port"; nullopt (with `why`) when its telemetry
  // cannot be read.
  std::optional<std::unordered_map<std::string, int64_t>> lbd_flows(std::string& why);

  struct Waiter {
    uint64_t mark = 0;
    uint64_t ticket = 0;             // Publisher::ticket() when the change was made
    std::optional<uint64_t> target;  // the newest generation carrying the change, once sent
    TimePoint start;
    TimePoint deadline;
    std::function<void(const AckResult&)> done;
  };

  Options options_;
  cfg::Config config_;
  std::string instance_;
  std::string segment_;
  std::vector<ServiceRuntime> services_;
  std::unordered_map<uint64_t, std::pair<size_t, size_t>> by_id_;  // id -> service, backend
  std::unordered_map<std::string, size_t> by_name_;                // service name -> index
  uint64_t next_id_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<Prober> prober_;

  std::optional<shm::Attachment> att_;
  uint64_t epoch_ = 0;  // of the lbd last attached to; 0: none yet
  bool wait_logged_ = false;
  TimePoint next_channel_{};
  Publisher publisher_;
  bool ring_full_logged_ = false;
  std::unique_ptr<shm::ServiceUpdate> scratch_;
  uint64_t faults_seen_ = 0;     // the attachment's faults already logged
  uint64_t channel_faults_ = 0;  // over all attachments
  TimePoint next_fault_log_{};

  std::optional<InstanceLock> lock_;
  HealthMemory memory_;  // read at start, used by the first apply() only
  bool health_dirty_ = false;
  TimePoint next_health_write_{};
  bool health_write_failed_ = false;

  uint64_t attaches_ = 0;
  uint64_t transitions_ = 0;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
  bool stop_ = false;

  uint64_t lbd_beat_ = 0;  // lbd's heartbeat as last seen, and when it last moved
  TimePoint lbd_beat_seen_{};
  Json base_;  // the config file's services when last read (state_file.h)
  std::vector<Waiter> waiters_;
  std::unique_ptr<ControlServer> control_;
  TimePoint next_leaving_check_{};
  std::string telemetry_error_;  // the last reason lbd's flow counts could not be read
  ApplyTracker apply_;
  std::unique_ptr<MetricsServer> metrics_;

  std::optional<Announcer> announcer_;  // with a bgp group
  std::string bgp_key_;  // its BIRD config without VIPs: a reload that changes it restarts it
  NodeState node_ = NodeState::kReady;
  std::vector<VipDecision> decisions_;
  std::optional<TimePoint> unapplied_since_;  // the newest generation sent waits since then
};

}  // namespace lb::health
