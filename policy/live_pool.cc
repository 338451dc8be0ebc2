#include "live_pool.h"

#include <algorithm>
#include <cstring>

#include "wire.h"

namespace lb::health {

shm::BackendState backend_state(cfg::AdminState admin, Health health, cfg::MaintPolicy maint) {
  switch (admin) {
    case cfg::AdminState::kReady:
      return health == Health::kUp ? shm::BackendState::kActive : shm::BackendState::kDraining;
    case cfg::AdminState::kDrain:
      return shm::BackendState::kDraining;
    case cfg::AdminState::kMaint:
      return maint == cfg::MaintPolicy::kDrop ? shm::BackendState::kStopped
                                              : shm::BackendState::kDraining;
  }
  return shm::BackendState::kDraining;
}

const char* to_string(shm::BackendState s) {
  switch (s) {
    case shm::BackendState::kActive:
      return "active";
    case shm::BackendState::kDraining:
      return "draining";
    case shm::BackendState::kStopped:
      return "stopped";
  }
  return "?";
}

bool LivePool::operator==(const LivePool& o) const {
  if (active != o.active || fail_open != o.fail_open || entries.size() != o.entries.size())
    return false;
  for (size_t i = 0; i < entries.size(); ++i) {
    const shm::BackendEntry& a = entries[i];
    const shm::BackendEntry& b = o.entries[i];
    if (a.ip != b.ip || a.port != b.port || a.weight != b.weight || a.state != b.state)
      return false;
  }
  return true;
}

LivePool build_pool(std::span<const BackendView> backends, cfg::AllDownPolicy on_all_down,
                    cfg::MaintPolicy maint) {
  LivePool pool;
  pool.entries.reserve(backends.size());
  for (const BackendView& b : backends) {
    shm::BackendEntry e{};
    e.ip = b.address;
    e.port = b.port;
    e.weight = static_cast<uint16_t>(std::min<uint32_t>(b.weight, 65535));
    const shm::BackendState st = backend_state(b.admin, b.health, maint);
    e.state = static_cast<uint8_t>(st);
    if (st == shm::BackendState::kActive) ++pool.active;
    pool.entries.push_back(e);
  }
  if (pool.active == 0 && on_all_down == cfg::AllDownPolicy::kFailOpen) {
    for (size_t i = 0; i < backends.size(); ++i) {
      if (backends[i].admin == cfg::AdminState::kMaint) continue;
      pool.entries[i].state = static_cast<uint8_t>(shm::BackendState::kActive);
      ++pool.active;
    }
    pool.fail_open = pool.active > 0;
  }
  return pool;
}

namespace {
void copy_name(char (&dst)[shm::kNameLen], const std::string& name) {
  std::memset(dst, 0, sizeof dst);
  std::memcpy(dst, name.data(), std::min<size_t>(name.size(), shm::kNameLen - 1));
}
}  // namespace

void fill_update(shm::ServiceUpdate& out, const cfg::ServiceConfig& service, const LivePool& pool,
                 uint64_t generation) {
  std::memset(&out, 0, sizeof out);
  out.generation = generation;
  copy_name(out.name, service.name);
  out.vip = service.vip;
  out.port = service.port;
  out.scheduler = to_wire(service.scheduler);
  out.flags = 0;
  out.forward = static_cast<uint8_t>(service.forward);
  out.syn_policy = static_cast<uint8_t>(to_wire(service.syn_flood_policy));
  if (service.scheduler == cfg::Scheduler::kMaglev)
    out.maglev_table_size = service.maglev_table_size;
  // Unset for a service that is not maglev, or is full-NAT (ServiceConfig::rehash_by_default):
  // lbd applies its dataplane's miss_policy.
  if (service.rehash_by_default() || service.miss_policy) {
    const shm::Miss w = to_wire(service.miss_policy.value_or(cfg::MissPolicy::kRehash));
    out.flags = static_cast<uint8_t>(static_cast<uint8_t>(w) << shm::kMissShift);
  }
  const size_t n = std::min<size_t>(pool.entries.size(), shm::kMaxBackendsPerService);
  out.backend_count = static_cast<uint32_t>(n);
  for (size_t i = 0; i < n; ++i) out.backends[i] = pool.entries[i];
}

void fill_removal(shm::ServiceUpdate& out, const std::string& name, uint64_t generation) {
  std::memset(&out, 0, sizeof out);
  out.generation = generation;
  copy_name(out.name, name);
  out.flags = shm::kServiceRemoved;
}

}  // namespace lb::health
