#pragma once
// lb-healthd's one event loop: checks every backend (Prober), keeps each backend's health
// (BackendHealth), builds each service's live pool (build_pool) and pushes it to lbd over the
// shared-memory channel (shm::Attachment), coalescing when the ring is full. Single-threaded:
// everything here runs on the thread that calls run()/turn().

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "channel.h"
#include "health_state.h"
#include "lb_config.h"
#include "live_pool.h"
#include "probe.h"

namespace lb::health {

struct Options {
  std::string config_path;
  std::string instance;        // overrides the file's `instance` when not empty
  Millis channel_period{100};  // attach retries, staleness and epoch checks
  uint64_t seed = 0;           // jitter; 0: from std::random_device
};

// Problems the config library does not know about because they are lb-healthd's own limits
// (the channel carries at most shm::kMaxBackendsPerService backends per service). "file:line:
// path: message", like a ConfigError; nullopt when the config is fine.
std::optional<std::string> check_for_healthd(const cfg::Config& config);

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
  bool check_running = false;
  int64_t next_check_in_ms = 0;  // meaningless while check_running
};

struct ServiceStatus {
  std::string name;
  bool fail_open = false;  // panic mode: every non-maint backend sent as active
  uint32_t active = 0;
  bool pending = false;  // its newest state is waiting for room in the ring
  uint64_t last_generation = 0;
  std::vector<BackendStatus> backends;
};

struct DaemonStatus {
  std::string config_file;
  std::string instance;
  std::string segment;
  bool attached = false;
  uint64_t epoch = 0;
  uint64_t generation = 0;  // newest generation sent
  uint64_t lbd_received_generation = 0;
  uint64_t lbd_applied_generation = 0;
  uint64_t updates_sent = 0;
  uint64_t ring_full = 0;  // sends refused because the ring was full
  uint64_t attaches = 0;
  uint64_t transitions = 0;
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
  std::vector<ServiceStatus> services;
};

std::string format_status(const DaemonStatus& s);  // multi-line, for the log

class Daemon {
 public:
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

  // Re-reads the file. A bad file is logged with file:line and changes nothing.
  bool reload();
  // Replaces the running configuration; backends that stay (same service, address and port)
  // keep their health and counters.
  void apply(cfg::Config config);

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
  };
  struct ServiceRuntime {
    cfg::ServiceConfig config;
    std::vector<BackendRuntime> backends;
    LivePool pool;
    bool pending = false;
    uint64_t last_generation = 0;
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
  void mark_all_pending();
  void drain_events(TimePoint now);
  void flush();
  void handle_signals(int signal_fd);
  uint64_t random() { return rng_(); }

  Options options_;
  cfg::Config config_;
  std::string instance_;
  std::string segment_;
  std::vector<ServiceRuntime> services_;
  std::unordered_map<uint64_t, std::pair<size_t, size_t>> by_id_;  // id -> service, backend
  std::unordered_map<std::string, size_t> by_name_;                // service name -> index
  std::set<std::string> removed_;  // services dropped by a reload: lbd is told on every push
  bool removals_pending_ = false;
  uint64_t next_id_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<Prober> prober_;

  std::optional<shm::Attachment> att_;
  uint64_t epoch_ = 0;
  bool wait_logged_ = false;
  TimePoint next_channel_{};
  uint64_t generation_ = 0;
  bool ring_full_logged_ = false;
  size_t flush_cursor_ = 0;
  std::unique_ptr<shm::ServiceUpdate> scratch_;

  uint64_t updates_sent_ = 0;
  uint64_t ring_full_ = 0;
  uint64_t attaches_ = 0;
  uint64_t transitions_ = 0;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
  bool stop_ = false;
};

}  // namespace lb::health
