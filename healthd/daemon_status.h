#pragma once
// A snapshot of everything lb-healthd knows, for operators: the control socket's `status`, the
// metrics endpoint, and SIGUSR1's log lines. Plain data, no pointers into the daemon
// (Daemon::snapshot(), daemon_status.cc).

#include <cstdint>
#include <string>
#include <vector>

#include "announcer.h"  // NodeState, VipDecision
#include "channel.h"
#include "check_stats.h"
#include "health_state.h"
#include "lb_config.h"

namespace lb::health {

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
  uint64_t timeouts = 0;   // exchanges BIRD did not finish in time (stopped or stuck)
  int64_t waiting_ms = 0;  // how long the exchange in flight has waited (0: none)
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
  int64_t lbd_heartbeat_age_ms = -1;  // -1: not attached, or not seen moving since attaching
  uint64_t updates_sent = 0;
  uint64_t ring_full = 0;       // sends refused because the ring was full
  size_t owed = 0;              // services whose newest state or removal waits to be sent
  size_t removals = 0;          // removals lbd has not acknowledged yet
  uint64_t channel_faults = 0;  // what was refused from the segment as corrupted
  uint64_t attaches = 0;
  uint64_t transitions = 0;
  uint64_t stall_retries = 0;       // checks run again: they timed out while the loop was held up
  uint64_t checks_not_started = 0;  // no socket for them (lb-healthd out of descriptors)
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
  Histogram pool_apply_seconds;  // ApplyTracker's
  std::vector<ServiceStatus> services;
  BgpStatus bgp;
};

std::string format_status(const DaemonStatus& s);  // multi-line, for the log

}  // namespace lb::health
