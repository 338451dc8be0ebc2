#include "pool_builder.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <utility>

#include "live_pool.h"
#include "wire.h"

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
    case cfg::Scheduler::kMaglev:
      return core::SchedulerKind::kMaglev;
  }
  return core::SchedulerKind::kRoundRobin;
}

core::MissMode to_core(shm::Miss m) {
  switch (m) {
    case shm::Miss::kDefault:
      return core::MissMode::kDefault;
    case shm::Miss::kDrop:
      return core::MissMode::kDrop;
    case shm::Miss::kRst:
      return core::MissMode::kRst;
    case shm::Miss::kRehash:
      return core::MissMode::kRehash;
  }
  return core::MissMode::kDefault;
}

core::ForwardMode to_core(cfg::Forward f) {
  switch (f) {
    case cfg::Forward::kDnat:
      return core::ForwardMode::kDnat;
    case cfg::Forward::kTunnel:
      return core::ForwardMode::kTunnel;
    case cfg::Forward::kFullnat:
      return core::ForwardMode::kFullnat;
  }
  return core::ForwardMode::kDnat;
}

core::SynPolicy to_core(shm::SynFlood p) {
  switch (p) {
    case shm::SynFlood::kDefault:
      return core::SynPolicy::kDefault;
    case shm::SynFlood::kDropNew:
      return core::SynPolicy::kDropNew;
    case shm::SynFlood::kEvictEmbryonic:
      return core::SynPolicy::kEvictEmbryonic;
    case shm::SynFlood::kStateless:
      return core::SynPolicy::kStateless;
  }
  return core::SynPolicy::kDefault;
}

PoolBuilder::PoolBuilder(cfg::DataplaneConfig dataplane, core::NeighborTable& neighbors)
    : dataplane_(std::move(dataplane)), neighbors_(neighbors) {}

core::ServiceId PoolBuilder::service_id(const std::string& name) {
  auto it = service_ids_.find(name);
  if (it != service_ids_.end()) return it->second;
  core::ServiceId id;
  if (!free_services_.empty()) {
    id = static_cast<core::ServiceId>(free_services_.back());
    free_services_.pop_back();
  } else if (service_names_.size() < core::kMaxServices) {
    id = static_cast<core::ServiceId>(service_names_.size());
    service_names_.emplace_back();
    service_rehashed_base_.push_back(0);
    service_backends_.push_back(0);
    service_named_.push_back(false);
  } else {
    throw std::runtime_error("more than " + std::to_string(core::kMaxServices) +
                             " services (counting removed ones whose flows have not ended yet)");
  }
  service_ids_.emplace(name, id);
  service_names_[core::raw(id)] = name;
  new_services_.push_back(id);
  return id;
}

core::BackendId PoolBuilder::backend_id(core::ServiceId s, uint32_t ip, uint16_t port) {
  const auto key = std::make_tuple(core::raw(s), ip, port);
  auto it = backend_ids_.find(key);
  if (it != backend_ids_.end()) return it->second;
  core::BackendId id;
  if (!free_backends_.empty()) {
    id = static_cast<core::BackendId>(free_backends_.back());
    free_backends_.pop_back();
  } else if (backends_.size() < core::kMaxBackends) {
    id = static_cast<core::BackendId>(backends_.size());
    backends_.emplace_back();
    backend_named_.push_back(false);
  } else {
    throw std::runtime_error("more than " + std::to_string(core::kMaxBackends) +
                             " backends (counting removed ones whose flows have not ended yet)");
  }
  BackendInfo& b = backends_[core::raw(id)];
  b.service = s;
  b.ip = ip;
  b.port = port;
  b.live = true;
  b.neighbor = core::NeighborTable::kNone;  // `base` stays: what the id had counted so far
  backend_ids_.emplace(key, id);
  ++service_backends_[core::raw(s)];
  new_backends_.push_back(id);
  return id;
}

std::pair<uint16_t, uint16_t> PoolBuilder::route(core::BackendId id, uint32_t ip) {
  const cfg::PortConfig* port = cfg::egress_port(dataplane_, ip);
  if (!port) throw std::runtime_error("no port reaches " + cfg::format_ipv4(ip));
  const auto index = static_cast<uint16_t>(port - dataplane_.ports.data());
  const uint32_t next_hop = port->in_subnet(ip) ? ip : *port->gateway;
  const uint16_t slot = neighbors_.add(next_hop, index);
  if (slot == core::NeighborTable::kNone)
    throw std::runtime_error("more than " + std::to_string(core::kMaxNeighbors) + " next hops");
  BackendInfo& b = backends_[core::raw(id)];
  if (b.neighbor != slot) {
    if (neighbor_refs_.size() <= slot) neighbor_refs_.resize(slot + 1u, 0);
    ++neighbor_refs_[slot];
    if (b.neighbor != core::NeighborTable::kNone) unref_neighbor(b.neighbor);
    b.neighbor = slot;
  }
  return {index, slot};
}

void PoolBuilder::unref_neighbor(uint16_t slot) {
  if (--neighbor_refs_[slot] == 0) unused_neighbors_.push_back(slot);
}

std::unique_ptr<core::Pool> PoolBuilder::build(uint64_t generation, const PoolState& state,
                                               bool defer_tables) {
  std::lock_guard lock(mu_);
  new_backends_.clear();
  new_services_.clear();
  try {
    std::vector<core::Pool::ServiceSpec> specs;
    std::map<std::string, MaglevCache> maglev;
    bool pending = false;
    std::vector<bool> backend_seen(core::kMaxBackends, false);
    std::vector<bool> service_seen(core::kMaxServices, false);
    for (const auto& [name, s] : state) {
      core::Pool::ServiceSpec spec{service_id(name), s.vip, s.port, to_core(s.scheduler), {}, {}};
      service_seen[core::raw(spec.id)] = true;
      for (const ServiceState::Backend& b : s.backends) {
        // A stopped backend exists (its id and counters stay) but is not serving: its flows are
        // reset.
        const core::BackendId id = backend_id(spec.id, b.ip, b.port);
        backend_seen[core::raw(id)] = true;
        const ServingState serving = shm::serving_state(b.state);
        if (serving == ServingState::kNotServing) continue;
        spec.serving.push_back(id);
        if (serving != ServingState::kActive) {
          // Draining: its established flows go on, so it needs its next hop as much as an active
          // backend does. One that has never been active (the file's pool at lbd's start has
          // a backend draining under health.initial_state = "down", state = "drain" or maint,
          // and the flows lbd restores for it) is routed here; if no port reaches it, it has
          // no flow that could go on, and the pool does not fail for it.
          try {
            route(id, b.ip);
          } catch (const std::runtime_error&) {
          }
          continue;
        }
        const auto [port, slot] = route(id, b.ip);
        spec.backends.push_back({id, b.ip, b.port, port, slot, b.weight});
      }
      spec.miss = to_core(s.miss);
      spec.forward = to_core(s.forward);
      spec.syn_policy = to_core(s.syn_policy);
      if (s.scheduler == cfg::Scheduler::kMaglev) {
        MaglevCache c;
        c.from = core::maglev_backends(spec.backends);
        c.size = s.maglev_table_size;
        const auto old = maglev_.find(name);
        const bool same_size = old != maglev_.end() && old->second.size == c.size;
        if (same_size && !old->second.stale && old->second.from == c.from) {
          c.table = old->second.table;
        } else if (same_size && defer_tables) {
          core::MaglevTable::check(c.from, c.size);
          c.table = old->second.table;
          c.stale = true;
          pending = true;
        } else {
          c.table = std::make_shared<const core::MaglevTable>(c.from, c.size);
          ++maglev_builds_;
        }
        spec.maglev = c.table;
        spec.maglev_table_size = c.size;
        maglev.emplace(name, std::move(c));
      }
      specs.push_back(std::move(spec));
    }
    // Services removed (or moved) keep their old addresses known to the workers while they may
    // have flows (direction of their last packets). The pool leaves out those in use.
    std::vector<core::Pool::Address> retired;
    for (const auto& [addr, id] : addresses_) retired.push_back({addr.first, addr.second});
    auto pool = std::make_unique<core::Pool>(generation, specs, retired);
    for (const auto& spec : specs) addresses_[{spec.vip, spec.port}] = spec.id;
    maglev_ = std::move(maglev);
    tables_pending_ = pending;
    for (uint32_t id = 0; id < backends_.size(); ++id) {
      if (backend_named_[id] && !backend_seen[id])
        unnamed_backends_.push_back(static_cast<core::BackendId>(id));
      backend_named_[id] = backend_seen[id];
    }
    for (uint16_t id = 0; id < service_names_.size(); ++id) {
      if (service_named_[id] && !service_seen[id])
        unnamed_services_.push_back(static_cast<core::ServiceId>(id));
      service_named_[id] = service_seen[id];
    }
    return pool;
  } catch (...) {
    // Nothing was published: the ids taken for this build name nothing.
    for (core::BackendId id : new_backends_) release_locked(id, backends_[core::raw(id)].base);
    for (core::ServiceId id : new_services_)
      release_locked(id, service_rehashed_base_[core::raw(id)]);
    throw;
  }
}

std::vector<core::BackendId> PoolBuilder::take_unnamed_backends() {
  std::lock_guard lock(mu_);
  return std::exchange(unnamed_backends_, {});
}

std::vector<core::ServiceId> PoolBuilder::take_unnamed_services() {
  std::lock_guard lock(mu_);
  return std::exchange(unnamed_services_, {});
}

std::vector<uint16_t> PoolBuilder::take_unused_neighbors() {
  std::lock_guard lock(mu_);
  return std::exchange(unused_neighbors_, {});
}

bool PoolBuilder::named(core::BackendId id) const {
  std::lock_guard lock(mu_);
  return core::raw(id) < backend_named_.size() && backend_named_[core::raw(id)];
}

bool PoolBuilder::named(core::ServiceId id) const {
  std::lock_guard lock(mu_);
  return core::raw(id) < service_named_.size() && service_named_[core::raw(id)];
}

bool PoolBuilder::has_backends(core::ServiceId s) const {
  std::lock_guard lock(mu_);
  return service_backends_[core::raw(s)] != 0;
}

void PoolBuilder::release(core::BackendId id, const BackendTotals& totals) {
  std::lock_guard lock(mu_);
  release_locked(id, totals);
}

void PoolBuilder::release(core::ServiceId id, uint64_t rehashed_total) {
  std::lock_guard lock(mu_);
  release_locked(id, rehashed_total);
}

void PoolBuilder::release_locked(core::BackendId id, const BackendTotals& totals) {
  BackendInfo& b = backends_[core::raw(id)];
  if (!b.live) return;
  backend_ids_.erase(std::make_tuple(core::raw(b.service), b.ip, b.port));
  --service_backends_[core::raw(b.service)];
  if (b.neighbor != core::NeighborTable::kNone) unref_neighbor(b.neighbor);
  b = BackendInfo{};
  b.base = totals;
  backend_named_[core::raw(id)] = false;
  free_backends_.push_back(core::raw(id));
}

void PoolBuilder::release_locked(core::ServiceId id, uint64_t rehashed_total) {
  std::string& name = service_names_[core::raw(id)];
  if (name.empty()) return;
  service_rehashed_base_[core::raw(id)] = rehashed_total;
  service_ids_.erase(name);
  name.clear();
  std::erase_if(addresses_, [id](const auto& a) { return a.second == id; });
  service_named_[core::raw(id)] = false;
  free_services_.push_back(core::raw(id));
}

std::vector<BackendInfo> PoolBuilder::backends() const {
  std::lock_guard lock(mu_);
  return backends_;
}

std::vector<std::string> PoolBuilder::service_names() const {
  std::lock_guard lock(mu_);
  return service_names_;
}

std::vector<uint64_t> PoolBuilder::service_rehashed_base() const {
  std::lock_guard lock(mu_);
  return service_rehashed_base_;
}

size_t PoolBuilder::backend_ids_taken() const {
  std::lock_guard lock(mu_);
  return backends_.size() - free_backends_.size();
}

size_t PoolBuilder::service_ids_taken() const {
  std::lock_guard lock(mu_);
  return service_names_.size() - free_services_.size();
}

namespace {

std::string endpoint(uint32_t ip, uint16_t port) {
  return cfg::format_ipv4(ip) + ":" + std::to_string(port);
}

}  // namespace

std::string describe_changes(const PoolState& before, const PoolState& after, size_t max_items) {
  std::vector<std::string> items;
  for (const auto& [name, old] : before)
    if (!after.count(name)) items.push_back("-service " + name);
  for (const auto& [name, now] : after) {
    const auto it = before.find(name);
    if (it == before.end()) {
      items.push_back("+service " + name + " " + endpoint(now.vip, now.port) + " " +
                      cfg::to_string(now.scheduler) + " (" + std::to_string(now.backends.size()) +
                      " backends)");
      continue;
    }
    const ServiceState& old = it->second;
    if (old.vip != now.vip || old.port != now.port)
      items.push_back(name + ": " + endpoint(old.vip, old.port) + " -> " +
                      endpoint(now.vip, now.port));
    if (old.scheduler != now.scheduler)
      items.push_back(name + ": " + cfg::to_string(old.scheduler) + " -> " +
                      cfg::to_string(now.scheduler));
    const auto same = [](const ServiceState::Backend& a, const ServiceState::Backend& b) {
      return a.ip == b.ip && a.port == b.port;
    };
    for (const ServiceState::Backend& b : old.backends)
      if (std::none_of(now.backends.begin(), now.backends.end(),
                       [&](const auto& x) { return same(x, b); }))
        items.push_back(name + ": -" + endpoint(b.ip, b.port));
    for (const ServiceState::Backend& b : now.backends) {
      const auto o = std::find_if(old.backends.begin(), old.backends.end(),
                                  [&](const auto& x) { return same(x, b); });
      const std::string e = name + ": " + endpoint(b.ip, b.port);
      if (o == old.backends.end()) {
        items.push_back(name + ": +" + endpoint(b.ip, b.port) + " " + health::to_string(b.state) +
                        (b.weight != 1 ? " weight " + std::to_string(b.weight) : ""));
        continue;
      }
      if (o->state != b.state)
        items.push_back(e + " " + health::to_string(o->state) + " -> " +
                        health::to_string(b.state));
      if (o->weight != b.weight)
        items.push_back(e + " weight " + std::to_string(o->weight) + " -> " +
                        std::to_string(b.weight));
    }
  }
  if (items.empty()) return "no change";
  std::string out;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > max_items) out += " (+" + std::to_string(items.size() - max_items) + " more)";
  return out;
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
  if ((u.flags & ~(shm::kServiceRemoved | shm::kMissMask)) != 0)
    return name + ": unknown flags " + std::to_string(u.flags);
  if (u.flags & shm::kServiceRemoved) {
    state.erase(name);
    return {};
  }
  if (u.backend_count > shm::kMaxBackendsPerService)
    return name + ": " + std::to_string(u.backend_count) + " backends (at most " +
           std::to_string(shm::kMaxBackendsPerService) + ")";
  const std::optional<cfg::Scheduler> scheduler = health::scheduler_from_wire(u.scheduler);
  if (!scheduler) return name + ": unknown scheduler " + std::to_string(u.scheduler);
  const bool maglev = *scheduler == cfg::Scheduler::kMaglev;
  if (maglev && (u.maglev_table_size < cfg::kMinMaglevTableSize ||
                 u.maglev_table_size > cfg::kMaxMaglevTableSize ||
                 !core::maglev_table_size_ok(u.maglev_table_size)))
    return name + ": maglev table size " + std::to_string(u.maglev_table_size) +
           " is not a prime in " + std::to_string(cfg::kMinMaglevTableSize) + ".." +
           std::to_string(cfg::kMaxMaglevTableSize);
  if (!maglev && u.maglev_table_size != 0)
    return name + ": a maglev table size for a service that is not maglev";
  const auto miss = static_cast<shm::Miss>((u.flags & shm::kMissMask) >> shm::kMissShift);
  if (miss == shm::Miss::kRehash && !maglev)
    return name + ": miss policy rehash for a service that is not maglev";
  if (u.port == 0 || u.vip == 0) return name + ": no VIP or port";
  if (u.forward > static_cast<uint8_t>(cfg::Forward::kFullnat))
    return name + ": unknown forward mode " + std::to_string(u.forward);
  if (u.reserved[0] != 0 || u.reserved[1] != 0 || u.padding[0] != 0 || u.padding[1] != 0 ||
      u.padding[2] != 0 || u.padding[3] != 0)
    return name + ": reserved bytes are not 0";
  const auto forward = static_cast<cfg::Forward>(u.forward);
  if (miss == shm::Miss::kRehash && forward == cfg::Forward::kFullnat)
    return name +
           ": miss policy rehash for a full-NAT service (a rehashed flow cannot continue "
           "its connection)";
  if (u.syn_policy > shm::kMaxSynFlood)
    return name + ": unknown SYN flood policy " + std::to_string(u.syn_policy);
  const auto syn_policy = static_cast<shm::SynFlood>(u.syn_policy);
  if (syn_policy == shm::SynFlood::kStateless && (!maglev || forward != cfg::Forward::kTunnel))
    return name + ": SYN flood policy stateless for a service that is not maglev and tunnel";
  ServiceState st;
  st.vip = u.vip;
  st.port = u.port;
  st.scheduler = *scheduler;
  st.maglev_table_size = u.maglev_table_size;
  st.miss = miss;
  st.forward = forward;
  st.syn_policy = syn_policy;
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
