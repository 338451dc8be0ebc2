#pragma once
// Next-hop MAC addresses (backends on a port's subnet, and gateways), shared by all workers and
// the control thread. Slots are created by the control thread before any pool that names them is
// published; a MAC is one 64-bit word, so it is read and written whole without a lock. ARP replies
// and requests seen by any worker refresh it; the control thread asks for the slots that are
// missing or getting old.
//
// A slot no backend uses any more is given back in two steps (the control thread's, see
// Dataplane::reclaim_ids): retire() when no pool and no flow can name it, so that workers stop
// matching it; recycle() once every worker has passed a quiescent state since, so that an ARP
// reply a worker was storing into it when it was retired cannot land on its next owner.

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "bytes.h"
#include "ids.h"

namespace lb::core {

class NeighborTable {
 public:
  static constexpr uint16_t kNone = UINT16_MAX;

  // Control thread only. Returns the slot for ip on port (existing, recycled or new); kNone
  // when all kMaxNeighbors are in use.
  uint16_t add(uint32_t ip, uint16_t port);
  // Control thread only: the slot stops matching ARP and is forgotten (see above).
  void retire(uint16_t slot);
  // Control thread only: a retired slot may be handed out again.
  void recycle(uint16_t slot);
  // Slots in use (neither free nor retired).
  uint16_t in_use() const { return static_cast<uint16_t>(size() - free_.size() - retired_); }
  // Control thread only: next hops added so far (new or recycled slots), so that the control
  // thread can tell that one appeared even where a slot was reused.
  uint32_t added() const { return added_; }

  // Any thread. The MAC of `slot`, if known.
  std::optional<MacAddr> lookup(uint16_t slot) const {
    // acquire pairs with the release in learn(): a MAC is seen whole.
    const uint64_t v = entries_[slot].mac.load(std::memory_order_acquire);
    if (!(v & kValid)) return std::nullopt;
    return MacAddr::from_u64(v & kMacMask);
  }
  // The same as the 8 bytes whose first 6 are the address in wire order (MacAddr::image()):
  // false when unknown. The packet path's form: two instructions from the stored word.
  bool lookup_image(uint16_t slot, uint64_t& image) const {
    // acquire pairs with the release in learn(), as in lookup().
    const uint64_t v = entries_[slot].mac.load(std::memory_order_acquire);
    image = MacAddr::image_of_u64(v);
    return (v & kValid) != 0;
  }

  // Any thread (rare path: ARP). Records mac for ip if ip is a known next hop on `port`.
  // Returns true when it was one.
  bool learn(uint32_t ip, uint16_t port, const MacAddr& mac, uint64_t now_seconds);

  // Slots ever created: [0, size()) holds every slot in use, and free or retired ones.
  uint16_t size() const { return count_.load(std::memory_order_acquire); }
  // Whether `slot` is in use (a retired or free slot has no address).
  bool used(uint16_t slot) const { return key(slot) != 0; }
  uint32_t ip(uint16_t slot) const { return static_cast<uint32_t>(key(slot) >> 16); }
  uint16_t port(uint16_t slot) const { return static_cast<uint16_t>(key(slot)); }
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
  static constexpr uint64_t kUsed = uint64_t{1} << 48;  // in a key: the slot is in use
  static uint64_t make_key(uint32_t ip, uint16_t port) { return kUsed | uint64_t{ip} << 16 | port; }
  uint64_t key(uint16_t slot) const {
    // acquire pairs with the release in add(): a slot seen in use is seen with its address.
    return entries_[slot].key.load(std::memory_order_acquire);
  }
  struct Entry {
    std::atomic<uint64_t> key{0};  // make_key(ip, port); 0: free or retired
    std::atomic<uint64_t> mac{0};
    std::atomic<uint64_t> confirmed{0};
  };
  Entry entries_[kMaxNeighbors];
  std::atomic<uint16_t> count_{0};
  std::vector<uint16_t> free_;  // control thread only
  uint16_t retired_ = 0;        // control thread only
  uint32_t added_ = 0;          // control thread only
};

}  // namespace lb::core
