#pragma once
// lbd's end of the pool channel (channel/channel.h): takes lb-healthd's updates off the ring,
// builds and publishes the pool they describe (through the Dataplane, like any pool change),
// acknowledges them in the segment's header once every worker uses them, and posts the passive
// health events (SYNs answered with RST, or unanswered) back. Control thread only: the
// Dataplane's control_tick() calls tick().

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "channel.h"
#include "pool_builder.h"

namespace lb::dp {

class Dataplane;

// What the control thread did with lb-healthd's updates (any thread may read).
struct ControlStats {
  std::atomic<uint64_t> updates_applied{0};
  std::atomic<uint64_t> updates_rejected{0};
  std::atomic<uint64_t> events_posted{0};
  std::atomic<uint64_t> events_lost{0};
  std::atomic<uint64_t> channel_faults{0};  // refused from the segment as corrupted
};

class PoolChannel {
 public:
  // Creates the segment `shm_name` (shm::Segment::create: throws std::runtime_error). `state` is
  // what the dataplane's first pool was built from; `stats` is where what was done is counted.
  PoolChannel(Dataplane& dp, const std::string& shm_name, PoolState state, ControlStats& stats);

  // `now` in TSC ticks.
  void tick(uint64_t now);

  const shm::Segment& segment() const { return segment_; }
  // Backend id `id` is free for another backend, which starts from `totals`: nothing of the old
  // owner's is posted as the new one's.
  void released(uint32_t id, const BackendTotals& totals);

 private:
  void receive_updates();
  // Counts and logs update `generation` as refused, and says so in the segment's header.
  void refuse(uint64_t generation, const std::string& why);
  // The header's applied_generation once every worker uses what was published for it.
  void acknowledge();
  // Builds and publishes the maglev tables the last build left for later (PoolBuilder::build's
  // defer_tables), once that pool is published and acknowledged.
  void complete_tables();
  void post_passive_events();
  void log_faults(uint64_t now);

  Dataplane& dp_;
  ControlStats& stats_;
  uint64_t tsc_hz_;
  shm::Segment segment_;
  PoolState state_;  // what the published pool was built from
  std::vector<shm::ServiceUpdate> rx_updates_;
  std::vector<shm::ServiceUpdate> accepted_;  // this tick's updates that passed their checks
  std::optional<std::pair<uint64_t, uint64_t>> pending_ack_;  // (RCU token, generation)
  std::vector<uint64_t> last_syn_rst_, last_syn_timeout_;     // by BackendId, summed
  uint64_t next_events_ = 0;
  uint64_t next_fault_log_ = 0;  // faults are logged at most every 10 s
  uint64_t faults_logged_ = 0;
  uint64_t generation_ = 0;     // of the last published pool
  bool tables_failed_ = false;  // complete_tables() failed and logged so: retried quietly
};

}  // namespace lb::dp
