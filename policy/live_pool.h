#pragma once
// From per-backend facts (admin state x health) to the live pool lbd gets: pure functions.
//
//   admin ready + UP   -> kActive
//   admin ready + DOWN -> kDraining   (no new flows; established flows continue)
//   admin drain        -> kDraining
//   admin maint        -> kStopped with maint = "drop", else kDraining
//
// No backend kActive: on_all_down = "fail_closed" sends that as is (lbd applies its
// no_backend_policy); "fail_open" sends every backend not in maint as kActive (Envoy's panic
// mode) and says so in `fail_open`.

#include <cstdint>
#include <span>
#include <vector>

#include "health.h"
#include "lb_config.h"
#include "shm_abi.h"

namespace lb::health {

struct BackendView {
  uint32_t address = 0;
  uint16_t port = 0;
  uint32_t weight = 1;
  cfg::AdminState admin = cfg::AdminState::kReady;
  Health health = Health::kUp;
};

shm::BackendState backend_state(cfg::AdminState admin, Health health, cfg::MaintPolicy maint);
const char* to_string(shm::BackendState s);  // "active", "draining", "stopped"

struct LivePool {
  std::vector<shm::BackendEntry> entries;  // one per backend, config order
  uint32_t active = 0;                     // entries with kActive (after fail_open)
  bool fail_open = false;                  // no backend was active and fail_open made them so

  bool operator==(const LivePool& o) const;
};

LivePool build_pool(std::span<const BackendView> backends, cfg::AllDownPolicy on_all_down,
                    cfg::MaintPolicy maint);

// The full-state message for one service. `pool` may be empty (a service with no backends).
void fill_update(shm::ServiceUpdate& out, const cfg::ServiceConfig& service, const LivePool& pool,
                 uint64_t generation);
// The message that removes a service lbd knows by `name`.
void fill_removal(shm::ServiceUpdate& out, const std::string& name, uint64_t generation);

}  // namespace lb::health
