#pragma once
// Turns services and backends (from the config, later from lb-healthd) into immutable pools, and
// keeps the ids stable: the same service name keeps its ServiceId and the same
// service/address/port keeps its BackendId for the life of the process, so counters and flows
// that name them stay meaningful across pool changes. Control thread only.

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "lb_config.h"
#include "neighbor.h"
#include "pool.h"

namespace lb::dp {

struct BackendInfo {
  core::ServiceId service;
  uint32_t ip;
  uint16_t port;
};

class PoolBuilder {
 public:
  PoolBuilder(std::vector<cfg::PortConfig> ports, core::NeighborTable& neighbors);

  // A pool in which every backend of every service is live (weights as configured).
  // Throws std::runtime_error when ids or neighbor slots run out, or a backend has no route.
  std::unique_ptr<core::Pool> build(uint64_t generation,
                                    const std::vector<cfg::ServiceConfig>& services);

  const std::vector<BackendInfo>& backends() const { return backends_; }
  const std::vector<std::string>& service_names() const { return service_names_; }

 private:
  core::ServiceId service_id(const std::string& name);
  core::BackendId backend_id(core::ServiceId s, uint32_t ip, uint16_t port);
  // Port and neighbor slot through which `ip` is reached.
  std::pair<uint16_t, uint16_t> route(uint32_t ip);

  std::vector<cfg::PortConfig> ports_;
  core::NeighborTable& neighbors_;
  std::map<std::string, core::ServiceId> service_ids_;
  std::vector<std::string> service_names_;
  std::map<std::tuple<uint16_t, uint32_t, uint16_t>, core::BackendId> backend_ids_;
  std::vector<BackendInfo> backends_;
};

core::SchedulerKind to_core(cfg::Scheduler s);

}  // namespace lb::dp
