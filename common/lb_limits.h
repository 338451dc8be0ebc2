#pragma once
// What one lbd and its channel hold: the sizes of lbd's fixed tables and of a pool update. The
// config loader refuses a file beyond them (file:line), so nothing is silently cut at run time;
// lbd, lb-healthd and the channel's ABI take their sizes from here.

#include <cstdint>

namespace lb::limits {

inline constexpr uint32_t kMaxPorts = 16;
inline constexpr uint32_t kMaxWorkers = 64;
// Backends one service may have: what one pool update (shm::ServiceUpdate) carries.
inline constexpr uint32_t kMaxBackendsPerService = 256;
// Services and backends that exist at once (lbd's id spaces; ids are reused once free).
inline constexpr uint32_t kMaxServices = 1024;
inline constexpr uint32_t kMaxBackends = 4096;
// Next hops (backends' and gateways' MACs) lbd resolves at once.
inline constexpr uint32_t kMaxNeighbors = 1024;
// Full-NAT local addresses (dataplane.fullnat_addresses).
inline constexpr uint32_t kMaxFullnatAddresses = 16;

}  // namespace lb::limits
