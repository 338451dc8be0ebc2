#pragma once
// Full-NAT local ports of one worker (docs/architecture.md, "Full-NAT").
//
// A full-NAT flow leaves lbd from (local address, local port) so that the backend's replies come
// back to lbd whatever its routes. The replies' destination port must name the worker that owns
// the flow, because a NIC hashing the backend's 4-tuple may deliver them to any queue: as in
// DPVS, each worker owns a disjoint share of every local address's ports, here the ports p in
// [kFirstPort, 65535] with p % workers == worker (the low bits of the port when the worker count
// is a power of two). A reply received by another worker goes to owner_of(port) over the handoff
// rings ("conn redirect"); no NIC flow rule is needed.
//
// The arithmetic: a worker owns about (65536 - kFirstPort) / workers ports per local address, so
// the concurrent full-NAT flows of a worker are at most local addresses x that, and of the whole
// node local addresses x 64512 (whatever the number of workers), shared by all backends. A flow
// holds its port until its record is reclaimed (its close/time-wait timeout has passed), never
// less.
//
// Per local address: a FIFO ring of free ports (the oldest freed is reused first), per port the
// time it may be handed out again, and the flow index each port in use belongs to, so a reply
// finds its flow by direct index. A released port waits `hold` (flows.fullnat_port_hold, 60 s):
// the backend keeps the connection it closed in TIME_WAIT that long (Linux), and a new connection
// from the same local address and port would meet it there (its SYN answered with an ACK for the
// old one) and stall. So a node sustains at most addresses x ports / hold new full-NAT
// connections per second; past that a SYN is refused and counted (fullnat_ports_cooling), not
// stalled. Allocation and release are O(1), no search; all memory is allocated by the
// constructor.
//
// The backends' TIME_WAIT outlives an lbd process, so the hold times may live in memory the
// caller keeps across restarts (Memory::holds: the flow file, dataplane/flow_memory.h); a new
// SnatPorts then hands out the ports that were never used or released longest ago first, and
// those still held only once their time has come. Without that memory a process begins each ring
// at Memory::start (random in lbd, as Linux picks ephemeral ports) rather than at the first port,
// so that a restart does not take again exactly the ports its predecessor used last.

#include <cstdint>
#include <span>

#include "large_array.h"
#include "lb_limits.h"

namespace lb::core {

// Where SnatPorts' hold times live and where its rings begin (see above).
struct SnatPortMemory {
  // addresses x ports_per_address() ticks (SnatPorts::hold_index() says which is which), each
  // the time its port may be handed out again (0: at once), kept by the caller; empty: the
  // SnatPorts' own.
  std::span<uint64_t> holds;
  uint32_t start = 0;  // the ring's first port is the (start % ports)-th of the worker's
};

class SnatPorts {
 public:
  static constexpr uint16_t kFirstPort = 1024;
  static constexpr uint32_t kMaxLocalAddrs = limits::kMaxFullnatAddresses;
  static constexpr uint32_t kNoFlow = UINT32_MAX;

  // The worker that owns local port `port` among `workers`.
  static uint16_t owner_of(uint16_t port, uint16_t workers) {
    return workers <= 1 ? uint16_t{0} : static_cast<uint16_t>(port % workers);
  }
  // How many ports of each local address worker `worker` of `workers` owns in [lo, hi].
  static uint32_t ports_per_address(uint16_t worker, uint16_t workers, uint16_t lo = kFirstPort,
                                    uint16_t hi = 65535);

  using Memory = SnatPortMemory;
  // Which of Memory::holds is local address `li`'s port `port`, for worker `worker` of
  // `workers` with `addresses` local addresses and the ports [lo, hi]; kNoHold when that worker
  // does not own the port or there is no such address or port.
  static constexpr size_t kNoHold = SIZE_MAX;
  static size_t hold_index(uint32_t li, uint16_t port, uint16_t worker, uint16_t workers,
                           uint32_t addresses, uint16_t lo, uint16_t hi);

  SnatPorts() = default;
  // The ports [lo, hi] of each address (dataplane.fullnat_ports). Throws
  // std::invalid_argument for more than kMaxLocalAddrs addresses, a zero address, a repeated
  // one, worker >= workers, a range in which this worker owns no port, or a Memory::holds of
  // another size.
  // `hold`: ticks a released port waits before alloc() gives it to another flow.
  SnatPorts(std::span<const uint32_t> local_ips, uint16_t worker, uint16_t workers,
            uint16_t lo = kFirstPort, uint16_t hi = 65535, uint64_t hold = 0, Memory memory = {});

  uint32_t addresses() const { return naddr_; }
  uint32_t address(uint32_t li) const { return addr_[li].ip; }
  // The index of local address `ip`, or -1.
  int find(uint32_t ip) const {
    for (uint32_t i = 0; i < naddr_; ++i)
      if (addr_[i].ip == ip) return static_cast<int>(i);
    return -1;
  }

  // Takes a free port for flow `flow` at time `now`: from the local address after the last one
  // used that has one whose hold has passed (round robin). kExhausted: every address of this
  // worker has all its ports in use; kCooling: some are free but were released less than the
  // hold ago (both counted against each address in failures).
  enum class Alloc : uint8_t { kOk, kExhausted, kCooling };
  Alloc alloc(uint32_t flow, uint8_t& li, uint16_t& port, uint64_t now = 0);
  // Gives the port back at time `now` (its flow's record is being reclaimed); it is handed out
  // again at now + hold at the earliest. A port that is not in use (a second release) is ignored.
  void release(uint8_t li, uint16_t port, uint64_t now = 0);
  // The flow that holds (li, port), or kNoFlow (not in use, not this worker's, out of range).
  uint32_t flow_of(uint8_t li, uint16_t port) const {
    if (li >= naddr_ || port < first_ || port > last_ || owner_of(port, workers_) != worker_)
      return kNoFlow;
    const uint32_t f = addr_[li].flow[slot(port)];
    return f == 0 ? kNoFlow : f - 1;
  }
  // Marks (li, port) as held by `flow` (a flow restored after a restart). False when it is not
  // this worker's or already held; call rebuild_free() once after the last claim.
  bool claim(uint32_t flow, uint8_t li, uint16_t port);
  // Puts every port no flow holds in the ring: those free soonest first (by their hold time),
  // ties from Memory::start on.
  void rebuild_free();

  struct Stats {
    uint32_t in_use = 0;
    uint32_t free = 0;
    uint64_t alloc_failures = 0;
  };
  Stats stats(uint32_t li) const {
    const Addr& a = addr_[li];
    return {a.in_use, nports_ - a.in_use, a.failures};
  }

 private:
  struct Addr {
    uint32_t ip = 0;
    uint32_t in_use = 0;
    uint64_t failures = 0;
    uint32_t head = 0;           // next free port to hand out, in ring
    LargeArray<uint16_t> ring;   // free ports by slot, FIFO: ring[(head + i) % nports_], i < free
    uint64_t* usable = nullptr;  // per slot: when its port may be handed out (Memory::holds)
    LargeArray<uint32_t> flow;   // per slot: flow index + 1, 0 when free
  };
  uint32_t slot(uint16_t port) const { return (port - first_) / workers_; }
  uint16_t port_of(uint32_t s) const { return static_cast<uint16_t>(first_ + s * workers_); }

  Addr addr_[kMaxLocalAddrs];
  uint32_t naddr_ = 0;
  uint32_t nports_ = 0;  // ports per address this worker owns
  uint16_t worker_ = 0;
  uint16_t workers_ = 1;
  uint32_t first_ = kFirstPort;  // this worker's lowest port
  uint32_t last_ = 65535;        // the range's highest
  uint32_t next_ = 0;            // round-robin start
  uint64_t hold_ = 0;
  uint32_t start_ = 0;               // Memory::start % nports_
  LargeArray<uint64_t> own_usable_;  // the hold times when the caller keeps none
};

}  // namespace lb::core
