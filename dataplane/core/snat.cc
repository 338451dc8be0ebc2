#include "snat.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace lb::core {

namespace {
// The lowest port >= lo with p % workers == worker.
uint32_t first_port(uint16_t worker, uint16_t workers, uint16_t lo) {
  const uint32_t w = workers == 0 ? 1 : workers;
  return lo + (worker + w - lo % w) % w;
}
}  // namespace

uint32_t SnatPorts::ports_per_address(uint16_t worker, uint16_t workers, uint16_t lo, uint16_t hi) {
  const uint32_t first = first_port(worker, workers, lo);
  if (hi < lo || first > hi) return 0;
  return (hi - first) / (workers == 0 ? 1u : workers) + 1;
}

size_t SnatPorts::hold_index(uint32_t li, uint16_t port, uint16_t worker, uint16_t workers,
                             uint32_t addresses, uint16_t lo, uint16_t hi) {
  const uint32_t w = workers == 0 ? 1 : workers;
  const uint32_t first = first_port(worker, workers, lo);
  if (li >= addresses || port < first || port > hi || owner_of(port, workers) != worker)
    return kNoHold;
  return size_t{li} * ports_per_address(worker, workers, lo, hi) + (port - first) / w;
}

SnatPorts::SnatPorts(std::span<const uint32_t> local_ips, uint16_t worker, uint16_t workers,
                     uint16_t lo, uint16_t hi, uint64_t hold, Memory memory)
    : worker_(worker), workers_(workers == 0 ? 1 : workers), hold_(hold) {
  if (local_ips.size() > kMaxLocalAddrs)
    throw std::invalid_argument("more than " + std::to_string(kMaxLocalAddrs) +
                                " full-NAT local addresses");
  if (worker_ >= workers_) throw std::invalid_argument("full-NAT ports: worker out of range");
  if (lo == 0) throw std::invalid_argument("full-NAT ports: port 0 is not a port");
  first_ = first_port(worker_, workers_, lo);
  last_ = hi;
  nports_ = ports_per_address(worker_, workers_, lo, hi);
  if (nports_ == 0 && !local_ips.empty())
    throw std::invalid_argument("full-NAT ports " + std::to_string(lo) + "-" + std::to_string(hi) +
                                " leave worker " + std::to_string(worker) + " none");
  const size_t slots = local_ips.size() * size_t{nports_};
  if (!memory.holds.empty() && memory.holds.size() != slots)
    throw std::invalid_argument("full-NAT port holds: " + std::to_string(memory.holds.size()) +
                                " kept, " + std::to_string(slots) + " ports");
  uint64_t* usable = memory.holds.data();
  if (memory.holds.empty() && slots != 0) {
    own_usable_ = LargeArray<uint64_t>(slots);  // zeroed: usable at once
    usable = own_usable_.data();
  }
  start_ = nports_ == 0 ? 0 : memory.start % nports_;
  for (uint32_t i = 0; i < local_ips.size(); ++i) {
    if (local_ips[i] == 0) throw std::invalid_argument("full-NAT local address 0.0.0.0");
    for (uint32_t j = 0; j < i; ++j)
      if (local_ips[j] == local_ips[i])
        throw std::invalid_argument("full-NAT local address listed twice");
    Addr& a = addr_[i];
    a.ip = local_ips[i];
    a.ring = LargeArray<uint16_t>(nports_);
    a.flow = LargeArray<uint32_t>(nports_);
    a.usable = usable + size_t{i} * nports_;
  }
  naddr_ = static_cast<uint32_t>(local_ips.size());
  rebuild_free();
}

SnatPorts::Alloc SnatPorts::alloc(uint32_t flow, uint8_t& li, uint16_t& port, uint64_t now) {
  bool cooling = false;
  for (uint32_t n = 0; n < naddr_; ++n) {
    const uint32_t i = (next_ + n) % naddr_;
    Addr& a = addr_[i];
    if (a.in_use == nports_) continue;
    // FIFO: the head was released first, so when it still waits, so do all the others.
    const uint32_t s = a.ring[a.head];
    if (now < a.usable[s]) {
      cooling = true;
      continue;
    }
    a.head = a.head + 1 == nports_ ? 0 : a.head + 1;
    ++a.in_use;
    a.flow[s] = flow + 1;
    li = static_cast<uint8_t>(i);
    port = port_of(s);
    next_ = i + 1 == naddr_ ? 0 : i + 1;
    return Alloc::kOk;
  }
  for (uint32_t i = 0; i < naddr_; ++i) ++addr_[i].failures;
  return cooling ? Alloc::kCooling : Alloc::kExhausted;
}

void SnatPorts::release(uint8_t li, uint16_t port, uint64_t now) {
  if (flow_of(li, port) == kNoFlow) return;
  Addr& a = addr_[li];
  const uint32_t s = slot(port);
  a.flow[s] = 0;
  // The free ports are the in-use count's complement, after head: the freed one goes last.
  const uint32_t free = nports_ - a.in_use;
  a.ring[(a.head + free) % nports_] = static_cast<uint16_t>(s);
  a.usable[s] = now + hold_;
  --a.in_use;
}

bool SnatPorts::claim(uint32_t flow, uint8_t li, uint16_t port) {
  if (li >= naddr_ || port < first_ || port > last_ || owner_of(port, workers_) != worker_)
    return false;
  Addr& a = addr_[li];
  uint32_t& f = a.flow[slot(port)];
  if (f != 0) return false;
  f = flow + 1;
  ++a.in_use;
  return true;
}

void SnatPorts::rebuild_free() {
  for (uint32_t i = 0; i < naddr_; ++i) {
    Addr& a = addr_[i];
    a.head = 0;
    uint32_t n = 0;
    bool held = false;
    for (uint32_t k = 0; k < nports_; ++k) {
      const uint32_t s = start_ + k < nports_ ? start_ + k : start_ + k - nports_;
      if (a.flow[s] != 0) continue;
      held |= a.usable[s] != 0;
      a.ring[n++] = static_cast<uint16_t>(s);
    }
    // FIFO by hold time (ports never used first), so that alloc() need only look at the head.
    if (held)
      std::stable_sort(&a.ring[0], &a.ring[0] + n,
                       [&a](uint16_t x, uint16_t y) { return a.usable[x] < a.usable[y]; });
  }
}

}  // namespace lb::core
