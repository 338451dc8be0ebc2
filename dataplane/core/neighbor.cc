#include "neighbor.h"

namespace lb::core {

uint16_t NeighborTable::add(uint32_t ip, uint16_t port) {
  const uint64_t k = make_key(ip, port);
  const uint16_t n = count_.load(std::memory_order_relaxed);
  for (uint16_t i = 0; i < n; ++i)
    if (entries_[i].key.load(std::memory_order_relaxed) == k) return i;
  uint16_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else if (n < kMaxNeighbors) {
    slot = n;
  } else {
    return kNone;
  }
  Entry& e = entries_[slot];
  e.mac.store(0, std::memory_order_relaxed);
  e.confirmed.store(0, std::memory_order_relaxed);
  // release pairs with the acquire in key() and learn(): a reader that sees the key sees the
  // cleared MAC.
  e.key.store(k, std::memory_order_release);
  // release pairs with the acquire in size()/learn(): a reader that sees the count sees the key.
  if (slot == n) count_.store(static_cast<uint16_t>(n + 1), std::memory_order_release);
  ++added_;
  return slot;
}

void NeighborTable::retire(uint16_t slot) {
  Entry& e = entries_[slot];
  e.key.store(0, std::memory_order_release);  // pairs with the acquire in learn()
  e.mac.store(0, std::memory_order_release);  // pairs with the acquire in lookup()
  e.confirmed.store(0, std::memory_order_relaxed);
  ++retired_;
}

void NeighborTable::recycle(uint16_t slot) {
  // A worker may have stored a MAC after retire() cleared it; add() clears it again.
  free_.push_back(slot);
  --retired_;
}

bool NeighborTable::learn(uint32_t ip, uint16_t port, const MacAddr& mac, uint64_t now_seconds) {
  if (mac.is_zero() || mac.is_multicast()) return false;
  const uint64_t k = make_key(ip, port);
  const uint16_t n = count_.load(std::memory_order_acquire);
  bool hit = false;
  for (uint16_t i = 0; i < n; ++i) {
    Entry& e = entries_[i];
    // acquire pairs with the release in add().
    if (e.key.load(std::memory_order_acquire) != k) continue;
    // release pairs with the acquire in lookup().
    e.mac.store(mac.to_u64() | kValid, std::memory_order_release);
    e.confirmed.store(now_seconds, std::memory_order_relaxed);
    hit = true;
  }
  return hit;
}

}  // namespace lb::core
