#include "pool_channel.h"

#include <rte_cycles.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>

#include "dataplane.h"
#include "log.h"

namespace lb::dp {

PoolChannel::PoolChannel(Dataplane& dp, const std::string& shm_name, PoolState state,
                         ControlStats& stats)
    : dp_(dp),
      stats_(stats),
      tsc_hz_(dp.ticks_per_second()),
      segment_(shm::Segment::create(shm_name)),
      state_(std::move(state)) {
  rx_updates_.resize(16);
}

void PoolChannel::tick(uint64_t now) {
  segment_.header().lbd_heartbeat_ms.store(now * 1000 / tsc_hz_, std::memory_order_relaxed);
  receive_updates();
  complete_tables();  // normally done right after the publish; here if that failed
  if (now >= next_events_) {
    next_events_ = now + tsc_hz_ / 10;
    post_passive_events();
  }
  log_faults(now);
  acknowledge();
}

void PoolChannel::receive_updates() {
  shm::Header& h = segment_.header();
  std::optional<PoolState> before;
  // Every update is checked on its own (a bad one is refused whole and the rest still apply),
  // then the pool is built once for all of this tick's: a build costs up to a maglev table per
  // changed service (~0.6 ms for 256 backends), which a burst of updates must not pay each.
  PoolState next = state_;
  accepted_.clear();
  for (;;) {
    const unsigned n =
        segment_.receive(rx_updates_.data(), static_cast<unsigned>(rx_updates_.size()));
    if (n == 0) break;
    for (unsigned i = 0; i < n; ++i) {
      const shm::ServiceUpdate& u = rx_updates_[i];
      h.received_generation.store(u.generation, std::memory_order_release);
      if (!before) before = state_;  // for the log: what this tick's updates changed
      PoolState trial = next;
      if (std::string why = apply_update(trial, u); !why.empty()) {
        refuse(u.generation, why);
        continue;
      }
      next = std::move(trial);
      accepted_.push_back(u);
    }
  }
  std::unique_ptr<core::Pool> built;
  uint64_t last = 0;
  size_t applied = 0;
  if (!accepted_.empty()) {
    try {
      built = dp_.build(accepted_.back().generation, next, true);
      state_ = std::move(next);
      last = accepted_.back().generation;
      applied = accepted_.size();
    } catch (const std::exception&) {
      // One of them passed its checks but not the build: find it by building them one by one.
      for (const shm::ServiceUpdate& u : accepted_) {
        PoolState one = state_;
        // It passed above on a state that held every update before it; one of those may be the
        // one refused here, so it is checked again.
        if (std::string why = apply_update(one, u); !why.empty()) {
          refuse(u.generation, why);
          continue;
        }
        try {
          built = dp_.build(u.generation, one, true);
          state_ = std::move(one);
          last = u.generation;
          ++applied;
        } catch (const std::exception& e) {
          refuse(u.generation, e.what());
        }
      }
    }
  }
  stats_.updates_applied.fetch_add(applied, std::memory_order_relaxed);
  if (built) {
    const uint64_t token = dp_.publish(std::move(built));
    dp_.record_services(state_);
    pending_ack_ = {token, last};
    generation_ = last;
    LB_LOG_POOL(INFO, "pool generation %llu applied%s: %s", static_cast<unsigned long long>(last),
                applied > 1 ? (" (" + std::to_string(applied) + " updates)").c_str() : "",
                describe_changes(*before, state_).c_str());
    // Workers report a quiescent state every loop iteration (microseconds): wait for them a
    // little so the acknowledgement is not a whole control tick late. Bounded: a stalled
    // worker delays only the ack, which the next ticks retry.
    dp_.quiescent(token, 200);
    acknowledge();
    tables_failed_ = false;
    complete_tables();
  } else if (!pending_ack_) {
    // Nothing to wait for: what was received is all applied (or refused).
    const uint64_t r = h.received_generation.load(std::memory_order_relaxed);
    if (h.applied_generation.load(std::memory_order_relaxed) < r)
      h.applied_generation.store(r, std::memory_order_release);
  }
}

void PoolChannel::complete_tables() {
  if (!dp_.builder().tables_pending()) return;
  try {
    // The same state as the pool just published: only the deferred tables are new (every other
    // table, id and next hop is reused), and they were checked when it was built.
    dp_.publish(dp_.build(generation_, state_));
  } catch (const std::exception& e) {
    // Nothing new is published: the workers keep the previous tables with their fallback.
    if (!tables_failed_)
      LB_LOG_POOL(ERR, "pool generation %llu: maglev tables not built yet, retried every tick: %s",
                  static_cast<unsigned long long>(generation_), e.what());
    tables_failed_ = true;
  }
}

void PoolChannel::refuse(uint64_t generation, const std::string& why) {
  stats_.updates_rejected.fetch_add(1, std::memory_order_relaxed);
  segment_.header().rejected_generation.store(generation, std::memory_order_release);
  LB_LOG_POOL(ERR, "pool update %llu refused: %s", static_cast<unsigned long long>(generation),
              why.c_str());
}

void PoolChannel::acknowledge() {
  if (pending_ack_ && dp_.quiescent(pending_ack_->first)) {
    // release pairs with healthd's/lbctl's acquire: every worker now uses that generation.
    segment_.header().applied_generation.store(pending_ack_->second, std::memory_order_release);
    pending_ack_.reset();
  }
}

void PoolChannel::post_passive_events() {
  const std::vector<BackendInfo> backends = dp_.builder().backends();
  const std::vector<std::string> services = dp_.builder().service_names();
  last_syn_rst_.resize(backends.size(), 0);
  last_syn_timeout_.resize(backends.size(), 0);
  for (uint32_t id = 0; id < backends.size(); ++id) {
    if (!backends[id].live) continue;  // a free id (its last sums were noted when it was freed)
    const BackendTotals t = dp_.backend_totals(id);
    const std::pair<shm::EventType, uint64_t> deltas[] = {
        {shm::EventType::kSynRst, t.syn_rst - last_syn_rst_[id]},
        {shm::EventType::kSynTimeout, t.syn_timeout - last_syn_timeout_[id]}};
    last_syn_rst_[id] = t.syn_rst;
    last_syn_timeout_[id] = t.syn_timeout;
    for (const auto& [type, delta] : deltas) {
      if (delta == 0) continue;
      shm::Event e{};
      e.type = static_cast<uint32_t>(type);
      e.count = static_cast<uint32_t>(std::min<uint64_t>(delta, shm::kMaxEventCount));
      e.ip = backends[id].ip;
      e.port = backends[id].port;
      const std::string& name = services[core::raw(backends[id].service)];
      std::memcpy(e.service, name.data(), std::min<size_t>(name.size(), shm::kNameLen - 1));
      if (segment_.post(e))
        stats_.events_posted.fetch_add(1, std::memory_order_relaxed);
      else
        stats_.events_lost.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void PoolChannel::released(uint32_t id, const BackendTotals& totals) {
  if (id < last_syn_rst_.size()) {
    last_syn_rst_[id] = totals.syn_rst;
    last_syn_timeout_[id] = totals.syn_timeout;
  }
}

void PoolChannel::log_faults(uint64_t now) {
  // What the segment held that could not be valid was refused (shm::Segment); said here,
  // rate-limited, as a corrupted ring is refused on every tick.
  const uint64_t faults = segment_.faults();
  stats_.channel_faults.store(faults, std::memory_order_relaxed);
  if (faults != faults_logged_ && now >= next_fault_log_) {
    LB_LOG(ERR, "pool channel: refused %llu invalid item(s) from the shared-memory segment: %s",
           static_cast<unsigned long long>(faults - faults_logged_), segment_.last_fault().c_str());
    faults_logged_ = faults;
    next_fault_log_ = now + 10 * tsc_hz_;
  }
}

}  // namespace lb::dp
