#pragma once
// The desired state of every service (from the config at start, then from lb-healthd's updates)
// and its translation into immutable pools. Ids stay stable: the same service name keeps its
// ServiceId and the same service/address/port keeps its BackendId for the life of the process,
// so counters and flows that name them stay meaningful across pool changes.
// build() runs on the control thread; the registry accessors may be called from any thread.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "lb_config.h"
#include "neighbor.h"
#include "pool.h"
#include "shm_abi.h"

namespace lb::dp {

struct ServiceState {
  struct Backend {
    uint32_t ip;
    uint16_t port;
    uint16_t weight;
    shm::BackendState state;
  };
  uint32_t vip = 0;
  uint16_t port = 0;
  cfg::Scheduler scheduler = cfg::Scheduler::kRoundRobin;
  std::vector<Backend> backends;
};
using PoolState = std::map<std::string, ServiceState>;  // by service name

// The config's services, every backend active (lb-healthd takes over from there).
PoolState state_from_config(const cfg::Config& config);

// Applies one update from lb-healthd to `state`. Returns an empty string, or why the update is
// malformed (then `state` is unchanged).
std::string apply_update(PoolState& state, const shm::ServiceUpdate& u);

struct BackendInfo {
  core::ServiceId service;
  uint32_t ip;
  uint16_t port;
};

class PoolBuilder {
 public:
  PoolBuilder(cfg::DataplaneConfig dataplane, core::NeighborTable& neighbors);

  // Throws std::runtime_error (ids or next-hop slots exhausted, a backend no port reaches) or
  // std::invalid_argument (duplicate VIP:port); nothing published changes then.
  std::unique_ptr<core::Pool> build(uint64_t generation, const PoolState& state);

  // Copies, safe from any thread.
  std::vector<BackendInfo> backends() const;
  std::vector<std::string> service_names() const;

  // Port and neighbor slot through which `ip` is reached (control thread; also for flows
  // restored after a restart, flow_memory.h). Throws std::runtime_error like build().
  std::pair<uint16_t, uint16_t> route(uint32_t ip);

 private:
  core::ServiceId service_id(const std::string& name);
  core::BackendId backend_id(core::ServiceId s, uint32_t ip, uint16_t port);

  cfg::DataplaneConfig dataplane_;
  core::NeighborTable& neighbors_;
  mutable std::mutex mu_;  // guards the registry below against telemetry readers
  std::map<std::string, core::ServiceId> service_ids_;
  std::vector<std::string> service_names_;
  std::map<std::tuple<uint16_t, uint32_t, uint16_t>, core::BackendId> backend_ids_;
  std::vector<BackendInfo> backends_;
  std::map<std::pair<uint32_t, uint16_t>, bool> addresses_;  // every VIP:port ever built
};

core::SchedulerKind to_core(cfg::Scheduler s);

}  // namespace lb::dp
