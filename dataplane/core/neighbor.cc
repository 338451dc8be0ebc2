#include "neighbor.h"

namespace lb::core {

uint16_t NeighborTable::add(uint32_t ip, uint16_t port) {
  const uint16_t n = count_.load(std::memory_order_relaxed);
  for (uint16_t i = 0; i < n; ++i)
    if (entries_[i].ip == ip && entries_[i].port == port) return i;
  if (n >= kMaxNeighbors) return kNone;
  entries_[n].ip = ip;
  entries_[n].port = port;
  // release pairs with the acquire in size()/learn(): a reader that sees the count sees the key.
  count_.store(static_cast<uint16_t>(n + 1), std::memory_order_release);
  return n;
}

bool NeighborTable::learn(uint32_t ip, uint16_t port, const MacAddr& mac, uint64_t now_seconds) {
  if (mac.is_zero() || mac.is_multicast()) return false;
  const uint16_t n = count_.load(std::memory_order_acquire);
  bool hit = false;
  for (uint16_t i = 0; i < n; ++i) {
    Entry& e = entries_[i];
    if (e.ip != ip || e.port != port) continue;
    // release pairs with the acquire in lookup().
    e.mac.store(mac.to_u64() | kValid, std::memory_order_release);
    e.confirmed.store(now_seconds, std::memory_order_relaxed);
    hit = true;
  }
  return hit;
}

}  // namespace lb::core
