#pragma once
#include <cstdint>

#include "lb_limits.h"

namespace lb::core {

// Strong ids: a BackendId is stable for the life of the process (the same address:port of the
// same service keeps its id across pool changes), so per-backend counters and flows can refer
// to it after the backend has left the pool.
enum class BackendId : uint32_t {};
enum class ServiceId : uint16_t {};

inline constexpr uint32_t kMaxBackends = limits::kMaxBackends;
inline constexpr uint32_t kMaxServices = limits::kMaxServices;
inline constexpr uint32_t kMaxPorts = limits::kMaxPorts;
inline constexpr uint32_t kMaxNeighbors = limits::kMaxNeighbors;
inline constexpr uint32_t kMaxWorkers = limits::kMaxWorkers;
// The backend of a flow restored after a restart whose backend the new process does not know
// (removed while lbd was down): no pool ever serves it, so the flow's next packet resets it.
// Counters have a slot for it; nothing lists it.
inline constexpr BackendId kGoneBackend = static_cast<BackendId>(kMaxBackends);

// How a service's client packets reach the backend (lb::cfg::Forward): destination rewritten,
// wrapped unchanged in IPIP (direct server return), or both addresses rewritten. Each flow keeps
// the mode it began with (Flow::forward).
enum class ForwardMode : uint8_t { kDnat, kTunnel, kFullnat };

inline constexpr uint32_t raw(BackendId id) {
  return static_cast<uint32_t>(id);
}
inline constexpr uint16_t raw(ServiceId id) {
  return static_cast<uint16_t>(id);
}

}  // namespace lb::core
