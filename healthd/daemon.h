#pragma once
// lb-healthd's one event loop, composed of its jobs:
// - checking: every backend is checked (Prober), keeps its health (BackendHealth) and gives its
//   service's live pool (build_pool); backends a reload removed drain (daemon_services.cc);
// - publishing: the pools go to lbd over the shared-memory channel (LbdLink, publisher.h);
// - runtime configuration: reloads and runtime changes are planned, validated and kept by
//   RuntimeConfig (runtime_config.h), then applied here;
// - status: snapshot() for operators (daemon_status.h/.cc);
// - announcing: the bgp group's VIPs (Announcer, announcer.h).
// Single-threaded: everything here runs on the thread that calls run()/turn().

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
#include "daemon_status.h"
#include "health_state.h"
#include "healthd_check.h"  // cfg::healthd_problem
#include "lb_config.h"
#include "live_pool.h"
#include "probe.h"
#include "publisher.h"
#include "result.h"
#include "runtime_config.h"
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
  // say which drain. Errors: RuntimeConfig::reload()'s, "instance" (another lb-healthd runs it).
  bool reload();
  Result<Change> reload_config(bool replace, std::optional<Millis> drain_timeout = std::nullopt);
  // Replaces the running configuration; backends that stay (same service, address and port)
  // keep their health and counters. `kind` (and `what`, for a runtime change) is said in the
  // log. Backends and services it drops drain for `drain` (0: removed at once; runtime changes,
  // whose removals lbctl drains itself); those already draining go on draining (one the
  // configuration has again comes back with its health). A load or reload sends every service to
  // lbd again; a runtime change only what it changed.
  void apply(cfg::Config config, ApplyKind kind, const std::string& what = "",
             Millis drain = Millis(0));

  // A runtime change: `edit` works on a copy of the running services; the result is validated
  // exactly like the file, persisted to the state file, then applied (all or nothing). `what`
  // names it in the log. Errors: RuntimeConfig::edit()'s.
  Result<Change> change(const std::string& what, const ServicesEdit& edit);
  // Writes the running configuration over the config file (the old one kept as FILE.bak).
  Result<Change> save_config();
  // The running configuration as a config file.
  std::string running_config_text() const { return RuntimeConfig::text(config_); }
  // The running services against the file's (diff_services(base, running)).
  std::vector<std::string> runtime_changes() const { return runtime_.runtime_changes(config_); }
  const cfg::Config& config() const { return config_; }
  const Publisher& publisher() const { return link_.publisher(); }
  const Options& options() const { return options_; }
  // The file's services when they differ from the running ones (from the state file at start).
  // A service of the file that does not run (removed at run time) is removed in lbd too, which
  // starts from the file.
  void set_base(Json base);

  // Calls `done` (from the loop) once lbd has applied the updates that carry a change (those
  // owed to lbd and marked after `ticket`, a Change's; sent after `mark`), refused one of them,
  // or `timeout` has passed.
  void when_applied(uint64_t mark, Millis timeout, std::function<void(const AckResult&)> done,
                    uint64_t ticket = 0) {
    link_.when_applied(mark, timeout, std::move(done), ticket);
  }

  // The control socket: polled with the checks, served by the loop.
  void set_control(std::unique_ptr<ControlServer> control);
  ControlServer* control() { return control_.get(); }
  // The Prometheus endpoint: the loop hands it a snapshot() whenever a scrape asks for one.
  void set_metrics(std::unique_ptr<MetricsServer> metrics);

  // `lbctl node drain` / `ready`: a draining node withdraws every VIP (bgp group); takes effect
  // in the same turn. Not kept across restarts: lb-healthd starts ready.
  void set_node_state(NodeState state);
  NodeState node_state() const { return node_; }
  // BIRD is being told something (an exchange in flight: it never blocks the loop).
  bool announcing() const;
  // Calls `done` (from the loop, at the end of a turn) once BIRD is no longer being told
  // anything: it answered, failed or timed out.
  void when_announced(std::function<void()> done);

  void request_stop() { stop_ = true; }
  DaemonStatus snapshot() const;  // daemon_status.cc
  const std::string& segment() const { return link_.segment(); }

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
  // lbd's active flows per "service|address:port", read from its telemetry.
  struct LbdFlows {
    std::unordered_map<std::string, int64_t> by_backend;
    // lbd listed every backend it has (every page read). Only then is a backend it does not
    // list known to have no flow: a listing cut short says nothing of what it lacks.
    bool complete = false;
    // The flows of `key`: its count, 0 when a complete listing lacks it, nullopt (not known)
    // when an incomplete one does.
    std::optional<int64_t> of(const std::string& key) const {
      const auto it = by_backend.find(key);
      if (it != by_backend.end()) return it->second;
      return complete ? std::optional<int64_t>(0) : std::nullopt;
    }
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

  // -- Checking (daemon_services.cc) --
  TimePoint first_check(const BackendHealth& h, TimePoint now);
  void index();
  void recompute(ServiceRuntime& s);
  void on_transition(ServiceRuntime& s, BackendRuntime& b, const Transition& t);
  TimePoint start_due(TimePoint now);
  void handle_result(uint64_t id, const ProbeResult& r, TimePoint now);
  // A check lb-healthd could not start for want of a descriptor (Prober::Done::local_error):
  // not counted, the backend checked again on its usual schedule; logged once per episode.
  void put_off(uint64_t id, const std::string& why, TimePoint now);
  uint64_t put_off_unlogged_ = 0;                     // since the last line about it
  TimePoint put_off_logged_{};                        // when that line was written
  void on_event(const shm::Event& e, TimePoint now);  // lbd's passive signals
  void write_health(TimePoint now);
  std::optional<Health> remembered(const std::string& service, const cfg::BackendConfig& b,
                                   TimePoint now, TimePoint& since);
  uint64_t random() { return rng_(); }
  // Draining after a reload: what was removed and how far its flows have gone.
  void start_leaving(ServiceRuntime& s, BackendRuntime b, Millis drain, TimePoint now);
  void tick_leaving(TimePoint now);
  bool anything_leaving() const;
  // lbd's active flows per "service|address:port" (/lb/backends, every page); why not when its
  // telemetry cannot be read.
  Result<LbdFlows> lbd_flows();
  // The names of the services lbd has (its telemetry's /lb/services).
  Result<std::vector<std::string>> lbd_services();
  // lbd's pool is lb-healthd's: a service lbd has that lb-healthd neither runs nor drains (an
  // earlier lb-healthd's, say, removed by a reload while it drained) is removed. Read once per
  // attach; retried while lbd's telemetry cannot be read.
  void reconcile(TimePoint now);

  // -- Publishing (LbdLink) --
  size_t owe_everything();
  void flush();

  // -- The loop (daemon.cc) --
  void handle_signals(int signal_fd);
  // Decides the VIPs to announce and has BIRD announce them (bgp group).
  void announce_tick(TimePoint now);
  void tick_metrics(TimePoint now);

  Options options_;
  cfg::Config config_;
  std::string instance_;
  std::vector<ServiceRuntime> services_;
  std::unordered_map<uint64_t, std::pair<size_t, size_t>> by_id_;  // id -> service, backend
  std::unordered_map<std::string, size_t> by_name_;                // service name -> index
  uint64_t next_id_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<Prober> prober_;
  uint64_t transitions_ = 0;

  LbdLink link_;
  RuntimeConfig runtime_;

  std::optional<InstanceLock> lock_;
  HealthMemory memory_;  // read at start, used by the first apply() only
  bool health_dirty_ = false;
  TimePoint next_health_write_{};
  bool health_write_failed_ = false;
  bool stop_ = false;

  std::unique_ptr<ControlServer> control_;
  TimePoint next_leaving_check_{};
  std::string telemetry_error_;  // the last reason lbd's flow counts could not be read
  bool reconcile_ = false;       // lbd's services are to be read (attached)
  TimePoint next_reconcile_{};
  std::string reconcile_error_;  // the last reason they could not be
  ApplyTracker apply_;
  std::unique_ptr<MetricsServer> metrics_;

  std::optional<Announcer> announcer_;  // with a bgp group
  // The group's announcer after a reload removed the group or moved BIRD's files (another
  // BIRD), while that BIRD is told to withdraw every VIP: asked again every second until it has
  // it, for kRetireFor at most.
  std::optional<Announcer> retiring_;
  TimePoint retiring_until_{};
  static constexpr Millis kRetireFor{60000};
  void retire_announcer(const char* why, TimePoint now);
  void tick_retiring(TimePoint now);
  std::vector<std::function<void()>> announce_waiters_;
  void answer_announce_waiters();
  std::string bgp_key_;  // its BIRD config without VIPs: a reload that changes it restarts it
  NodeState node_ = NodeState::kReady;
  std::vector<VipDecision> decisions_;
};

}  // namespace lb::health
