#include "daemon_status.h"

#include <algorithm>

#include "daemon.h"

namespace lb::health {

namespace {

int64_t ms_of(Millis d) {
  return static_cast<int64_t>(d.count());
}

std::string endpoint(uint32_t address, uint16_t port) {
  return cfg::format_ipv4(address) + ":" + std::to_string(port);
}

}  // namespace

std::string format_status(const DaemonStatus& s) {
  std::string out =
      "status: instance " + s.instance + " (" + s.segment + "), " +
      (s.attached ? "attached" : "not attached") + ", generation " + std::to_string(s.generation) +
      " sent, " + std::to_string(s.lbd_applied_generation) + " applied by lbd, " +
      std::to_string(s.updates_sent) + " updates, " + std::to_string(s.ring_full) +
      " ring-full retries, " + std::to_string(s.owed) + " owed, " + std::to_string(s.removals) +
      " removal(s) unacknowledged, " + std::to_string(s.transitions) + " transitions" +
      (s.channel_faults ? ", " + std::to_string(s.channel_faults) + " channel fault(s)" : "");
  for (const ServiceStatus& svc : s.services) {
    out += "\n  service " + svc.name + ": " + std::to_string(svc.active) + "/" +
           std::to_string(svc.backends.size()) + " active" + (svc.fail_open ? " (FAIL-OPEN)" : "") +
           (svc.pending ? " (update pending)" : "");
    for (const BackendStatus& b : svc.backends) {
      out += "\n    " + endpoint(b.address, b.port) + " " + to_string(b.health) + " admin " +
             cfg::to_string(b.admin) + " -> " + to_string(b.live) + ", last " + b.last_result +
             " in " + std::to_string(b.last_latency_ms) + "ms, " +
             std::to_string(b.consecutive_successes) + " ok / " +
             std::to_string(b.consecutive_failures) + " failed in a row, for " +
             format_duration(Millis(b.in_state_ms)) + ", " + std::to_string(b.checks) +
             " checks, " + std::to_string(b.failed_checks) + " failed";
    }
  }
  return out;
}

DaemonStatus Daemon::snapshot() const {
  const TimePoint now = Clock::now();
  DaemonStatus st;
  st.config_file = config_.file;
  st.state_file = options_.state_file;
  st.instance = instance_;
  st.segment = link_.segment();
  st.attached = link_.attached();
  st.epoch = link_.epoch();
  const Publisher& publisher = link_.publisher();
  st.generation = publisher.generation();
  const LbdView lbd = link_.counters();
  st.lbd_received_generation = lbd.received;
  st.lbd_applied_generation = lbd.applied;
  st.lbd_rejected_generation = lbd.rejected;
  st.lbd_pid = link_.lbd_pid();
  st.lbd_heartbeat_age_ms = link_.lbd_heartbeat_age_ms(now).value_or(-1);
  st.updates_sent = publisher.messages_sent();
  st.ring_full = publisher.ring_full();
  st.owed = publisher.owed_count();
  st.removals = publisher.removals();
  st.channel_faults = link_.channel_faults();
  st.attaches = link_.attaches();
  st.transitions = transitions_;
  st.stall_retries = prober_ ? prober_->stall_retries() : 0;
  st.checks_not_started = prober_ ? prober_->local_failures() : 0;
  st.reloads = runtime_.reloads();
  st.reload_failures = runtime_.reload_failures();
  st.pool_apply_seconds = apply_.latency();
  if (announcer_) {
    st.bgp.enabled = true;
    st.bgp.node = node_;
    st.bgp.vips = decisions_;
    st.bgp.in_bird = announcer_->in_bird();
    st.bgp.last_error = announcer_->last_error();
    st.bgp.reloads = announcer_->reloads();
    st.bgp.reload_failures = announcer_->reload_failures();
    st.bgp.timeouts = announcer_->timeouts();
    st.bgp.waiting_ms = announcer_->waiting(now).count();
    st.bgp.bird_config = announcer_->config_path();
    st.bgp.bird_socket = announcer_->socket_path();
  }
  for (const ServiceRuntime& s : services_) {
    ServiceStatus ss;
    ss.name = s.config.name;
    ss.fail_open = s.pool.fail_open;
    ss.active = s.pool.active;
    ss.pending = publisher.owed(s.config.name);
    ss.last_generation = s.last_generation;
    ss.removed = s.removed;
    ss.vip = s.config.vip;
    ss.port = s.config.port;
    // The backends, then those a reload removed that are still draining (the pool's order).
    const size_t kept = s.backends.size();
    for (size_t j = 0; j < kept + s.leaving.size(); ++j) {
      const Leaving* l = j < kept ? nullptr : &s.leaving[j - kept];
      const BackendRuntime& b = l ? l->backend : s.backends[j];
      BackendStatus bs;
      bs.address = b.config.address;
      bs.port = b.config.port;
      bs.weight = b.config.weight;
      bs.admin = b.config.state;
      bs.health = b.health.health();
      bs.live = j < s.pool.entries.size() ? static_cast<shm::BackendState>(s.pool.entries[j].state)
                                          : shm::BackendState::kDraining;
      bs.last_result = describe(b.health.last_result());
      bs.last_http_status = b.health.last_result().http_status;
      bs.last_latency_ms = ms_of(b.health.last_result().latency);
      bs.consecutive_successes = b.health.successes();
      bs.consecutive_failures = b.health.failures();
      bs.in_state_ms = ms_of(std::chrono::duration_cast<Millis>(now - b.health.since()));
      bs.last_change_unix_ms = static_cast<int64_t>(
          std::chrono::duration_cast<Millis>(b.changed_wall.time_since_epoch()).count());
      bs.checks = b.health.checks();
      bs.failed_checks = b.health.failed_checks();
      bs.transitions = b.health.transitions();
      bs.passive_syn_rst = b.health.passive_signals(PassiveSignal::kSynRst);
      bs.passive_syn_timeout = b.health.passive_signals(PassiveSignal::kSynTimeout);
      bs.check_stats = b.checks;
      bs.check_running = !l && prober_ && prober_->running(b.id);
      bs.next_check_in_ms = ms_of(std::chrono::duration_cast<Millis>(b.next_check - now));
      if (l) {
        bs.removed = true;
        bs.next_check_in_ms = 0;
        bs.flows = l->flows;
        bs.drain_left_ms =
            std::max<int64_t>(0, ms_of(std::chrono::duration_cast<Millis>(l->deadline - now)));
      }
      ss.backends.push_back(std::move(bs));
    }
    st.services.push_back(std::move(ss));
  }
  return st;
}

}  // namespace lb::health
