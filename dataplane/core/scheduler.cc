#include "scheduler.h"

namespace lb::core {

Scheduler::Scheduler(uint64_t seed)
    : cursor_(kMaxServices, 0), current_(kMaxBackends, 0), rng_(seed | 1) {}

const PoolBackend* Scheduler::pick(const Pool& pool, const PoolService& s, const WorkerCounters& c,
                                   BackendId exclude) {
  const std::span<const PoolBackend> b = pool.backends(s);
  if (b.empty()) return nullptr;
  switch (s.scheduler) {
    case SchedulerKind::kRoundRobin:
      return round_robin(b, s.id, exclude);
    case SchedulerKind::kWeightedRoundRobin:
      return weighted(b, exclude);
    case SchedulerKind::kRandom:
      return random(b, exclude);
    case SchedulerKind::kLeastConn:
      return least_conn(b, s.id, c, exclude);
    case SchedulerKind::kMaglev:
      // New flows are placed by the table (Processor::new_flow); this is the retry of one whose
      // backend refused it, which any other backend may take.
      return round_robin(b, s.id, exclude);
  }
  return nullptr;
}

const PoolBackend* Scheduler::round_robin(std::span<const PoolBackend> b, ServiceId s,
                                          BackendId exclude) {
  const PoolBackend* p = next_in_cycle(b, s);
  if (p->id == exclude) {
    if (b.size() == 1) return nullptr;
    p = next_in_cycle(b, s);
  }
  return p;
}

// Smooth weighted round robin (nginx): every pick adds each weight to its backend's current
// value, takes the largest, and charges it the total. Over a cycle of sum(w) picks each backend
// gets exactly its weight, interleaved rather than in runs.
const PoolBackend* Scheduler::weighted(std::span<const PoolBackend> b, BackendId exclude) {
  const PoolBackend* best = nullptr;
  int64_t total = 0;
  for (const PoolBackend& x : b) {
    if (x.id == exclude) continue;
    int64_t& cw = current_[raw(x.id)];
    cw += x.weight;
    total += x.weight;
    if (!best || cw > current_[raw(best->id)]) best = &x;
  }
  if (best) current_[raw(best->id)] -= total;
  return best;
}

uint32_t Scheduler::next_random() {
  // xorshift64*: fast, and good enough to spread flows; not for anything secret.
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  return static_cast<uint32_t>((rng_ * 0x2545f4914f6cdd1dull) >> 32);
}

const PoolBackend* Scheduler::random(std::span<const PoolBackend> b, BackendId exclude) {
  const auto n = static_cast<uint32_t>(b.size());
  auto i = static_cast<uint32_t>((uint64_t{next_random()} * n) >> 32);
  if (b[i].id == exclude) {
    if (n == 1) return nullptr;
    i = (i + 1 + static_cast<uint32_t>((uint64_t{next_random()} * (n - 1)) >> 32)) % n;
  }
  return &b[i];
}

// Weighted least connections (IPVS wlc): the smallest active/weight, compared by cross
// multiplication; the scan starts one further each time so that ties rotate.
const PoolBackend* Scheduler::least_conn(std::span<const PoolBackend> b, ServiceId s,
                                         const WorkerCounters& c, BackendId exclude) {
  const auto n = static_cast<uint32_t>(b.size());
  const uint32_t start = cursor_[raw(s)]++ % n;
  const PoolBackend* best = nullptr;
  uint64_t best_active = 0;
  for (uint32_t k = 0; k < n; ++k) {
    const PoolBackend& x = b[(start + k) % n];
    if (x.id == exclude) continue;
    const uint64_t active = c.backend[raw(x.id)].flows_active.get();
    if (!best || active * best->weight < best_active * x.weight) {
      best = &x;
      best_active = active;
    }
  }
  return best;
}

}  // namespace lb::core
