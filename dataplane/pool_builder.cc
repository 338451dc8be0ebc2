#include "pool_builder.h"

#include <stdexcept>

namespace lb::dp {

core::SchedulerKind to_core(cfg::Scheduler s) {
  switch (s) {
    case cfg::Scheduler::kRoundRobin: return core::SchedulerKind::kRoundRobin;
    case cfg::Scheduler::kWeightedRoundRobin: return core::SchedulerKind::kWeightedRoundRobin;
    case cfg::Scheduler::kRandom: return core::SchedulerKind::kRandom;
    case cfg::Scheduler::kLeastConnections: return core::SchedulerKind::kLeastConn;
  }
  return core::SchedulerKind::kRoundRobin;
}

PoolBuilder::PoolBuilder(std::vector<cfg::PortConfig> ports, core::NeighborTable& neighbors)
    : ports_(std::move(ports)), neighbors_(neighbors) {}

core::ServiceId PoolBuilder::service_id(const std::string& name) {
  auto it = service_ids_.find(name);
  if (it != service_ids_.end()) return it->second;
  if (service_names_.size() >= core::kMaxServices)
    throw std::runtime_error("more than " + std::to_string(core::kMaxServices) + " services");
  const auto id = static_cast<core::ServiceId>(service_names_.size());
  service_ids_.emplace(name, id);
  service_names_.push_back(name);
  return id;
}

core::BackendId PoolBuilder::backend_id(core::ServiceId s, uint32_t ip, uint16_t port) {
  const auto key = std::make_tuple(core::raw(s), ip, port);
  auto it = backend_ids_.find(key);
  if (it != backend_ids_.end()) return it->second;
  if (backends_.size() >= core::kMaxBackends)
    throw std::runtime_error("more than " + std::to_string(core::kMaxBackends) + " backends");
  const auto id = static_cast<core::BackendId>(backends_.size());
  backend_ids_.emplace(key, id);
  backends_.push_back({s, ip, port});
  return id;
}

std::pair<uint16_t, uint16_t> PoolBuilder::route(uint32_t ip) {
  // On-link first (the most specific route a port can offer), then the first gateway.
  std::optional<std::pair<uint16_t, uint32_t>> via;
  for (size_t i = 0; i < ports_.size() && !via; ++i)
    if (ports_[i].in_subnet(ip)) via = {static_cast<uint16_t>(i), ip};
  for (size_t i = 0; i < ports_.size() && !via; ++i)
    if (ports_[i].gateway) via = {static_cast<uint16_t>(i), *ports_[i].gateway};
  if (!via) throw std::runtime_error("no port reaches " + cfg::format_ipv4(ip));
  const uint16_t slot = neighbors_.add(via->second, via->first);
  if (slot == core::NeighborTable::kNone)
    throw std::runtime_error("more than " + std::to_string(core::kMaxNeighbors) + " next hops");
  return {via->first, slot};
}

std::unique_ptr<core::Pool> PoolBuilder::build(uint64_t generation,
                                               const std::vector<cfg::ServiceConfig>& services) {
  std::vector<core::Pool::ServiceSpec> specs;
  for (const cfg::ServiceConfig& s : services) {
    core::Pool::ServiceSpec spec{service_id(s.name), s.vip, s.port, to_core(s.scheduler), {}, {}};
    for (const cfg::BackendConfig& b : s.backends) {
      const core::BackendId id = backend_id(spec.id, b.address, b.port);
      const auto [port, slot] = route(b.address);
      spec.backends.push_back(
          {id, b.address, b.port, port, slot, static_cast<uint16_t>(b.weight)});
      spec.serving.push_back(id);
    }
    specs.push_back(std::move(spec));
  }
  return std::make_unique<core::Pool>(generation, specs);
}

}  // namespace lb::dp
