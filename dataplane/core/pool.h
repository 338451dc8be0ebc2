#pragma once
// The pool: which services exist and which backends take new flows. Built by the control thread,
// then immutable; workers read it through a pointer that the control thread swaps (RCU).

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "ids.h"
#include "maglev.h"
#include "serving_state.h"

namespace lb::core {

enum class SchedulerKind : uint8_t {
  kRoundRobin,
  kWeightedRoundRobin,
  kRandom,
  kLeastConn,
  kMaglev
};

// A non-SYN client segment that matches no flow: the dataplane's miss_policy (drop or rst), or,
// for a maglev service, a new flow to the table's backend of its tuple (the one any node with
// the same pool picks, so a connection survives a restart or a move to another node).
enum class MissMode : uint8_t { kDefault, kDrop, kRst, kRehash };
// What a SYN does when the embryonic budget or the table is full (docs/operations.md, "SYN
// floods"); kDefault: the dataplane's flows.syn_flood_policy.
enum class SynPolicy : uint8_t { kDefault, kDropNew, kEvictEmbryonic, kStateless };

struct PoolBackend {
  BackendId id;
  uint32_t ip;
  uint16_t port;
  uint16_t out_port;  // port it is reached through
  uint16_t neighbor;  // neighbor-table slot of its next hop
  uint16_t weight;    // > 0: a backend with weight 0 takes no new flows and is not listed
};

struct PoolService {
  ServiceId id;
  uint32_t vip;
  uint16_t port;
  SchedulerKind scheduler;
  MissMode miss = MissMode::kDefault;
  ForwardMode forward = ForwardMode::kDnat;
  SynPolicy syn_policy = SynPolicy::kDefault;
  uint32_t first = 0;  // its backends are backends()[first, first + count)
  uint32_t count = 0;
  uint32_t total_weight = 0;
  // kMaglev: the table of its active backends (ids), owned by the pool; otherwise nullptr.
  const MaglevTable* maglev = nullptr;
};

class Pool {
 public:
  struct ServiceSpec {
    ServiceId id;
    uint32_t vip;
    uint16_t port;
    SchedulerKind scheduler;
    std::vector<PoolBackend> backends;  // those that take new flows (weight 0 ones are skipped)
    std::vector<BackendId> serving;     // those whose established flows continue (draining)
    MissMode miss = MissMode::kDefault;
    ForwardMode forward = ForwardMode::kDnat;
    SynPolicy syn_policy = SynPolicy::kDefault;
    // kMaglev: the table of `backends` (see maglev_backends()), shared with the pool before when
    // they have not changed; left empty, the pool builds it (table size maglev_table_size).
    std::shared_ptr<const MaglevTable> maglev = {};
    uint32_t maglev_table_size = kMaglevDefaultTableSize;
  };
  struct Address {
    uint32_t vip;
    uint16_t port;
  };
  // Throws std::invalid_argument on duplicate VIP:port or ids out of range. `retired` lists
  // the VIP:ports of services removed since start (see was_service()).
  Pool(uint64_t generation, const std::vector<ServiceSpec>& services,
       const std::vector<Address>& retired = {});

  uint64_t generation() const { return generation_; }

  // The service listening on vip:port, or nullptr.
  const PoolService* find(uint32_t vip, uint16_t port) const {
    uint32_t i = slot_hash(vip, port);
    for (;;) {
      const Slot& s = slots_[i];
      if (s.service == kEmpty) return nullptr;
      if (s.vip == vip && s.port == port) return &services_[s.service];
      i = (i + 1) & slot_mask_;
    }
  }
  bool is_vip(uint32_t ip) const;
  // `ip` is a VIP or the address of a backend listed in a service (one that may take new
  // flows): never a client's, so a new flow from it is refused as spoofed. Asked for every SYN:
  // a bit filter of their hashes answers nearly every client with one load, and the sorted
  // list settles the rest.
  bool is_vip_or_backend(uint32_t ip) const {
    const uint32_t h = (ip * 0x9e3779b1u) >> filter_shift_;
    if (((filter_[h >> 6] >> (h & 63)) & 1) == 0) return false;
    return std::binary_search(reserved_.begin(), reserved_.end(), ip);
  }
  // vip:port belonged to a service that has been removed: packets to it are still clients'
  // (of flows being reset), not backends' replies.
  bool was_service(uint32_t vip, uint16_t port) const {
    for (const Address& a : retired_)
      if (a.vip == vip && a.port == port) return true;
    return false;
  }
  const PoolService* service(ServiceId id) const {
    return raw(id) < by_id_.size() && by_id_[raw(id)] != kEmpty ? &services_[by_id_[raw(id)]]
                                                                : nullptr;
  }
  std::span<const PoolBackend> backends(const PoolService& s) const {
    return {backends_.data() + s.first, s.count};
  }
  // Whether established flows to `id` keep going (it is in the pool, maybe draining). Flows to
  // a backend that is not serving (removed, or stopped for maintenance) are reset.
  bool serving(BackendId id) const { return state(id) != ServingState::kNotServing; }
  // serving() of the backend of a flow record in use that is not kReset: at most kGoneBackend
  // (Processor::adopt_flows erases any other), whose slot is always kNotServing, so no range
  // check (the established path's every packet).
  bool serving_flow(BackendId id) const { return serving_view().serving_flow(id); }
  // serving_flow() over the state array's address, which a burst loop keeps in a register
  // instead of loading it through the pool for each packet.
  struct ServingView {
    const ServingState* state;
    bool serving_flow(BackendId id) const { return state[raw(id)] != ServingState::kNotServing; }
  };
  ServingView serving_view() const { return {state_.data()}; }
  // Whether `id` takes new flows.
  bool active(BackendId id) const { return state(id) == ServingState::kActive; }
  ServingState state(BackendId id) const {
    return raw(id) < kMaxBackends ? state_[raw(id)] : ServingState::kNotServing;
  }
  std::span<const PoolService> services() const { return services_; }
  // The active backend `id` (one load), or nullptr when it takes no new flows.
  const PoolBackend* backend(BackendId id) const {
    return raw(id) < kMaxBackends && active_at_[raw(id)] != kEmpty ? &backends_[active_at_[raw(id)]]
                                                                   : nullptr;
  }

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  struct Slot {
    uint32_t vip;
    uint16_t port;
    uint32_t service = kEmpty;
  };
  uint32_t slot_hash(uint32_t vip, uint16_t port) const {
    const uint64_t h = (uint64_t{vip} << 16 | port) * 0x9e3779b97f4a7c15ull;
    return static_cast<uint32_t>(h >> 40) & slot_mask_;
  }

  uint64_t generation_;
  std::vector<PoolService> services_;
  std::vector<PoolBackend> backends_;
  std::vector<uint32_t> by_id_;  // ServiceId -> index in services_
  std::vector<Slot> slots_;
  uint32_t slot_mask_ = 0;
  std::vector<uint32_t> vips_;      // sorted, unique
  std::vector<uint32_t> reserved_;  // VIPs and backend addresses, sorted, unique
  std::vector<uint64_t> filter_;    // bit (ip * k) >> filter_shift_ set for each of reserved_
  uint32_t filter_shift_ = 26;
  std::vector<Address> retired_;     // few: services removed at runtime
  std::vector<ServingState> state_;  // by BackendId
  std::vector<uint32_t> active_at_;  // by BackendId: index in backends_, or kEmpty
  std::vector<std::shared_ptr<const MaglevTable>> tables_;  // what services_[i].maglev point at
};

// What a maglev table is built from: the backends that take new flows, with their ids.
std::vector<MaglevBackend> maglev_backends(std::span<const PoolBackend> backends);

}  // namespace lb::core
