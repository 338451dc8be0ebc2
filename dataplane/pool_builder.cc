#include "pool_builder.h"

#include "live_pool.h"

#include <cstring>
#include <stdexcept>

namespace lb::dp {

core::SchedulerKind to_core(cfg::Scheduler s) {
  switch (s) {
    case cfg::Scheduler::kRoundRobin:
      return core::SchedulerKind::kRoundRobin;
    case cfg::Scheduler::kWeightedRoundRobin:
      return core::SchedulerKind::kWeightedRoundRobin;
    case cfg::Scheduler::kRandom:
      return core::SchedulerKind::kRandom;
    case cfg::Scheduler::kLeastConnections:
      return core::SchedulerKind::kLeastConn;
  }
  return core::SchedulerKind::kRoundRobin;
}

PoolBuilder::PoolBuilder(cfg::DataplaneConfig dataplane, core::NeighborTable& neighbors)
    : dataplane_(std::move(dataplane)), neighbors_(neighbors) {}

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
  const cfg::PortConfig* port = cfg::egress_port(dataplane_, ip);
  if (!port) throw std::runtime_error("no port reaches " + cfg::format_ipv4(ip));
  const auto index = static_cast<uint16_t>(port - dataplane_.ports.data());
  const uint32_t next_hop = port->in_subnet(ip) ? ip : *port->gateway;
  const uint16_t slot = neighbors_.add(next_hop, index);
  if (slot == core::NeighborTable::kNone)
    throw std::runtime_error("more than " + std::to_string(core::kMaxNeighbors) + " next hops");
  return {index, slot};
}

std::unique_ptr<core::Pool> PoolBuilder::build(uint64_t generation, const PoolState& state) {
  std::lock_guard lock(mu_);
  std::vector<core::Pool::ServiceSpec> specs;
  for (const auto& [name, s] : state) {
    core::Pool::ServiceSpec spec{service_id(name), s.vip, s.port, to_core(s.scheduler), {}, {}};
    for (const ServiceState::Backend& b : s.backends) {
      if (b.state == shm::BackendState::kStopped) continue;  // its flows are reset
      const core::BackendId id = backend_id(spec.id, b.ip, b.port);
      spec.serving.push_back(id);
      if (b.state != shm::BackendState::kActive) continue;
      const auto [port, slot] = route(b.ip);
      spec.backends.push_back({id, b.ip, b.port, port, slot, b.weight});
    }
    specs.push_back(std::move(spec));
  }
  // Services removed since start keep their address known to the workers (direction of their
  // flows' last packets); bounded by the number of services ever configured.
  std::vector<core::Pool::Address> retired;
  for (auto& [addr, live] : addresses_) live = false;
  for (const auto& spec : specs) addresses_[{spec.vip, spec.port}] = true;
  for (const auto& [addr, live] : addresses_)
    if (!live) retired.push_back({addr.first, addr.second});
  return std::make_unique<core::Pool>(generation, specs, retired);
}

std::vector<BackendInfo> PoolBuilder::backends() const {
  std::lock_guard lock(mu_);
  return backends_;
}

std::vector<std::string> PoolBuilder::service_names() const {
  std::lock_guard lock(mu_);
  return service_names_;
}

PoolState state_from_config(const cfg::Config& config) {
  // What lb-healthd would send before its first check, by the same policy code: admin state,
  // initial health state, maint and all-down policies all count from the first packet.
  PoolState state;
  auto u = std::make_unique<shm::ServiceUpdate>();
  for (const cfg::ServiceConfig& s : config.services) {
    std::vector<health::BackendView> views;
    for (const cfg::BackendConfig& b : s.backends)
      views.push_back({b.address, b.port, b.weight, b.state,
                       s.initial_state(b) == cfg::InitialState::kUp ? health::Health::kUp
                                                                    : health::Health::kDown});
    const health::LivePool pool = health::build_pool(views, s.on_all_down, s.maint);
    health::fill_update(*u, s, pool, 0);
    const std::string why = apply_update(state, *u);
    if (!why.empty()) throw std::runtime_error("service " + s.name + ": " + why);
  }
  return state;
}

std::string apply_update(PoolState& state, const shm::ServiceUpdate& u) {
  const size_t len = strnlen(u.name, shm::kNameLen);
  if (len == 0 || len == shm::kNameLen) return "service name empty or not terminated";
  const std::string name(u.name, len);
  if ((u.flags & ~shm::kServiceRemoved) != 0)
    return name + ": unknown flags " + std::to_string(u.flags);
  if (u.flags & shm::kServiceRemoved) {
    state.erase(name);
    return {};
  }
  if (u.backend_count > shm::kMaxBackendsPerService)
    return name + ": " + std::to_string(u.backend_count) + " backends (at most " +
           std::to_string(shm::kMaxBackendsPerService) + ")";
  if (u.scheduler > static_cast<uint8_t>(cfg::Scheduler::kLeastConnections))
    return name + ": unknown scheduler " + std::to_string(u.scheduler);
  if (u.port == 0 || u.vip == 0) return name + ": no VIP or port";
  ServiceState st;
  st.vip = u.vip;
  st.port = u.port;
  st.scheduler = static_cast<cfg::Scheduler>(u.scheduler);
  for (uint32_t i = 0; i < u.backend_count; ++i) {
    const shm::BackendEntry& b = u.backends[i];
    if (b.state > static_cast<uint8_t>(shm::BackendState::kStopped) || b.ip == 0 || b.port == 0)
      return name + ": malformed backend #" + std::to_string(i);
    st.backends.push_back({b.ip, b.port, b.weight, static_cast<shm::BackendState>(b.state)});
  }
  state[name] = std::move(st);
  return {};
}

}  // namespace lb::dp
