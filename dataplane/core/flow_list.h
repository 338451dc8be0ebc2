#pragma once
// The listing of one worker's live flows (lbctl flows, /lb/flows): every record of the table is
// examined, a bounded number per call, so that the owning worker can spread the walk over its
// loop iterations instead of stalling for the whole table (64 MB at a million flows). It counts
// the live flows and keeps the oldest `max` of them.
//
// The walk is not a snapshot: a flow created behind the cursor while it moves is not seen, and
// one erased after it was seen is still listed. Each record is examined exactly once per walk.

#include <array>
#include <cstdint>
#include <span>

#include "flow_table.h"

namespace lb::core {

class FlowLister {
 public:
  static constexpr uint32_t kMaxListed = 256;

  // Starts a new walk that will keep the `max` (at most kMaxListed) oldest live flows.
  void start(uint32_t max);

  // Examines up to `budget` more records of `t`; true once the whole table has been examined.
  // A live flow is one in use, not past its deadline at `now` (an expired record only waits for
  // the aging sweep) and not a reset record (TcpState::kReset).
  bool step(const FlowTable& t, Tick now, uint32_t budget);

  bool done() const { return done_; }
  // Live flows seen by the walk.
  uint64_t total() const { return total_; }
  // The oldest live flows seen (created first; then by creation number), oldest first. Sorts in
  // place: call once the walk is done.
  std::span<const Flow> oldest();

 private:
  // The kept flows form a heap ordered by `older`: the youngest kept flow is at its root, where
  // an older one replaces it.
  static bool older(const Flow& a, const Flow& b) {
    return a.created != b.created ? a.created < b.created : a.serial < b.serial;
  }

  uint32_t cursor_ = 0;
  uint32_t max_ = 0;
  uint32_t kept_ = 0;
  uint64_t total_ = 0;
  bool done_ = true;
  bool sorted_ = false;
  std::array<Flow, kMaxListed> flows_{};
};

}  // namespace lb::core
