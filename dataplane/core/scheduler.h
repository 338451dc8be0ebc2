#pragma once
// New-flow schedulers, one instance per worker (their cursors and weights are per-worker state,
// so no worker ever writes what another reads). Exactness is per worker: round robin over n
// backends gives each of them one of every n new flows a worker schedules.

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "counters.h"
#include "pool.h"

namespace lb::core {

inline constexpr BackendId kNoBackend = static_cast<BackendId>(UINT32_MAX);

class Scheduler {
 public:
  explicit Scheduler(uint64_t seed = 0x853c49e6748fea9bull);

  // The backend for the next new flow of `s`, never `exclude` (used by retries); nullptr when no
  // backend can take it. `c` supplies this worker's active-flow counts for least-connections.
  const PoolBackend* pick(const Pool& pool, const PoolService& s, const WorkerCounters& c,
                          BackendId exclude = kNoBackend);
  // The same for a new flow (no backend to exclude): round robin, the common scheduler, inline
  // in the SYN path, where pick()'s call and switch cost more than the pick itself.
  const PoolBackend* pick_new(const Pool& pool, const PoolService& s, const WorkerCounters& c) {
    if (s.scheduler != SchedulerKind::kRoundRobin || s.count == 0) return pick(pool, s, c);
    return next_in_cycle(pool.backends(s), s.id);
  }

  // The id is about to be given to another backend (or service): start it afresh, so that it
  // inherits no smooth-WRR weight (or cursor) from its last owner.
  void forget(BackendId id) { current_[raw(id)] = 0; }
  void forget(ServiceId id) { cursor_[raw(id)] = 0; }
  // As constructed with `seed`, without allocating (Processor::reset()).
  void reset(uint64_t seed) {
    std::fill(cursor_.begin(), cursor_.end(), 0u);
    std::fill(current_.begin(), current_.end(), int64_t{0});
    rng_ = seed | 1;
  }

 private:
  // Round robin's pick: the next backend of `b` (not empty) in service `s`'s cycle. Inline, for
  // pick_new() and round_robin() both.
  const PoolBackend* next_in_cycle(std::span<const PoolBackend> b, ServiceId s) {
    return &b[cursor_[raw(s)]++ % static_cast<uint32_t>(b.size())];
  }
  const PoolBackend* round_robin(std::span<const PoolBackend> b, ServiceId s, BackendId exclude);
  const PoolBackend* weighted(std::span<const PoolBackend> b, BackendId exclude);
  const PoolBackend* random(std::span<const PoolBackend> b, BackendId exclude);
  const PoolBackend* least_conn(std::span<const PoolBackend> b, ServiceId s,
                                const WorkerCounters& c, BackendId exclude);
  uint32_t next_random();

  std::vector<uint32_t> cursor_;  // per ServiceId
  std::vector<int64_t> current_;  // smooth-WRR current weight, per BackendId
  uint64_t rng_;
};

}  // namespace lb::core
