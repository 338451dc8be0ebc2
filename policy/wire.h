#pragma once
// The config's enums as the channel carries them (shm_abi.h has its own explicit numbers): the
// asserts below fail the build when either side renumbers without the other.

#include <cstdint>
#include <optional>

#include "lb_config.h"
#include "shm_abi.h"

namespace lb::health {

static_assert(static_cast<uint8_t>(cfg::Scheduler::kRoundRobin) ==
              static_cast<uint8_t>(shm::Scheduler::kRoundRobin));
static_assert(static_cast<uint8_t>(cfg::Scheduler::kWeightedRoundRobin) ==
              static_cast<uint8_t>(shm::Scheduler::kWeightedRoundRobin));
static_assert(static_cast<uint8_t>(cfg::Scheduler::kRandom) ==
              static_cast<uint8_t>(shm::Scheduler::kRandom));
static_assert(static_cast<uint8_t>(cfg::Scheduler::kLeastConnections) ==
              static_cast<uint8_t>(shm::Scheduler::kLeastConnections));
static_assert(static_cast<uint8_t>(cfg::Scheduler::kMaglev) ==
              static_cast<uint8_t>(shm::Scheduler::kMaglev));

constexpr uint8_t to_wire(cfg::Scheduler s) {
  return static_cast<uint8_t>(s);
}
// nullopt for a number no scheduler has.
constexpr std::optional<cfg::Scheduler> scheduler_from_wire(uint8_t v) {
  if (v > shm::kMaxScheduler) return std::nullopt;
  return static_cast<cfg::Scheduler>(v);
}

// The service's miss policy as ServiceUpdate::flags carry it (Miss << kMissShift).
constexpr shm::Miss to_wire(cfg::MissPolicy m) {
  switch (m) {
    case cfg::MissPolicy::kDrop:
      return shm::Miss::kDrop;
    case cfg::MissPolicy::kRst:
      return shm::Miss::kRst;
    case cfg::MissPolicy::kRehash:
      return shm::Miss::kRehash;
  }
  return shm::Miss::kDefault;
}

// A service's own syn_flood_policy as ServiceUpdate::syn_policy carries it; unset: kDefault.
constexpr shm::SynFlood to_wire(std::optional<cfg::SynFloodPolicy> p) {
  if (!p) return shm::SynFlood::kDefault;
  switch (*p) {
    case cfg::SynFloodPolicy::kDropNew:
      return shm::SynFlood::kDropNew;
    case cfg::SynFloodPolicy::kEvictEmbryonic:
      return shm::SynFlood::kEvictEmbryonic;
    case cfg::SynFloodPolicy::kStateless:
      return shm::SynFlood::kStateless;
  }
  return shm::SynFlood::kDefault;
}

}  // namespace lb::health
