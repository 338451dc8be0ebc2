#pragma once
// Next-hop MAC addresses (backends on a port's subnet, and gateways), shared by all workers and
// the control thread. Slots are created by the control thread before any pool that names them is
// published, and never reused; a MAC is one 64-bit word, so it is read and written whole without
// a lock. ARP replies and requests seen by any worker refresh it; the control thread asks for the
// slots that are missing or getting old.

#include <atomic>
#include <cstdint>
#include <optional>

#include "bytes.h"
#include "ids.h"

namespace lb::core {

class NeighborTable {
 public:
  static constexpr uint16_t kNone = UINT16_MAX;

  // Control thread only. Returns the slot for ip on port (existing or new); kNone when full.
  uint16_t add(uint32_t ip, uint16_t port);

  // Any thread. The MAC of `slot`, if known.
  std::optional<MacAddr> lookup(uint16_t slot) const {
    // acquire pairs with the release in learn(): a MAC is seen whole.
    const uint64_t v = entries_[slot].mac.load(std::memory_order_acquire);
    if (!(v & kValid)) return std::nullopt;
    return MacAddr::from_u64(v & kMacMask);
  }

  // Any thread (rare path: ARP). Records mac for ip if ip is a known next hop on `port`.
  // Returns true when it was one.
  bool learn(uint32_t ip, uint16_t port, const MacAddr& mac, uint64_t now_seconds);

  uint16_t size() const { return count_.load(std::memory_order_acquire); }
  uint32_t ip(uint16_t slot) const { return entries_[slot].ip; }
  uint16_t port(uint16_t slot) const { return entries_[slot].port; }
  // When the MAC was last confirmed (seconds, the caller's clock); 0 if never.
  uint64_t confirmed(uint16_t slot) const {
    return entries_[slot].confirmed.load(std::memory_order_relaxed);
  }
  // Control thread: forget a MAC that stopped answering, so packets to it are counted as
  // unresolved instead of going to a stale address.
  void invalidate(uint16_t slot) { entries_[slot].mac.store(0, std::memory_order_release); }

 private:
  static constexpr uint64_t kValid = uint64_t{1} << 48;
  static constexpr uint64_t kMacMask = kValid - 1;
  struct Entry {
    uint32_t ip = 0;
    uint16_t port = 0;
    std::atomic<uint64_t> mac{0};
    std::atomic<uint64_t> confirmed{0};
  };
  Entry entries_[kMaxNeighbors];
  std::atomic<uint16_t> count_{0};
};

}  // namespace lb::core
