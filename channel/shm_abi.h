#pragma once
// The whole ABI between lb-healthd and lbd: one POSIX shared-memory segment, created by lbd,
// holding a header and two DPDK rings (rte_ring_init on the segment; neither process needs EAL
// for them). Everything here is standard layout with fixed sizes and offsets, checked below;
// docs/shm-abi.md describes it for humans. Change anything here and bump kVersion.
//
// Neither side trusts what it reads from the segment: every field is checked before use
// (channel.cc, and lbd's apply_update()), and anything outside the ranges below is refused as
// corrupted.
//
//   offset 0            Header (4 KiB page)
//   update_ring_offset  rte_ring of ServiceUpdate, healthd -> lbd (single producer/consumer)
//   event_ring_offset   rte_ring of Event, lbd -> healthd (single producer/consumer)

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "lb_limits.h"
#include "serving_state.h"

namespace lb::shm {

inline constexpr uint64_t kMagic = 0x314d48532d44424cull;  // "LBD-SHM1" little-endian
// 2: maglev (scheduler 4, table size, miss flags); 3: ServiceUpdate::forward;
// 4: ServiceUpdate::syn_policy
inline constexpr uint32_t kVersion = 4;
inline constexpr uint32_t kNameLen = 48;  // service names, NUL-terminated (config allows 32)
inline constexpr uint32_t kMaxBackendsPerService = limits::kMaxBackendsPerService;
inline constexpr uint32_t kUpdateRingSlots = 64;   // power of two
inline constexpr uint32_t kEventRingSlots = 1024;  // power of two
inline constexpr size_t kHeaderSize = 4096;
// No real channel reaches this generation (a billion updates a second for 146 years): a larger
// one in a message or in the header is corruption.
inline constexpr uint64_t kMaxGeneration = uint64_t{1} << 62;
// The most an Event may count: more SYNs than 100 GbE carries in the 100 ms between two posts
// (14.9 million); lbd clamps to it.
inline constexpr uint32_t kMaxEventCount = uint32_t{1} << 24;

// What a backend may do in the pool lbd builds from an update.
enum class BackendState : uint8_t {
  kActive = 0,    // takes new flows (health up and admin ready)
  kDraining = 1,  // no new flows; established flows continue (drain, or health down)
  kStopped = 2,   // no new flows; established flows are dropped (maint with policy "drop")
};
// The wire values are the ABI (BackendEntry::state): they never change.
static_assert(static_cast<uint8_t>(BackendState::kActive) == 0 &&
              static_cast<uint8_t>(BackendState::kDraining) == 1 &&
              static_cast<uint8_t>(BackendState::kStopped) == 2);

// What lbd applies for a wire state (dataplane/pool_builder.cc builds its pool by it): a stopped
// backend keeps its id but does not serve.
constexpr ServingState serving_state(BackendState s) {
  switch (s) {
    case BackendState::kActive:
      return ServingState::kActive;
    case BackendState::kDraining:
      return ServingState::kDraining;
    case BackendState::kStopped:
      return ServingState::kNotServing;
  }
  return ServingState::kNotServing;
}
static_assert(serving_state(BackendState::kActive) == ServingState::kActive &&
              serving_state(BackendState::kDraining) == ServingState::kDraining &&
              serving_state(BackendState::kStopped) == ServingState::kNotServing);

// ServiceUpdate::scheduler. The wire has its own numbers; policy/wire.h asserts that they are
// the config's (lb::cfg::Scheduler) and converts.
enum class Scheduler : uint8_t {
  kRoundRobin = 0,
  kWeightedRoundRobin = 1,
  kRandom = 2,
  kLeastConnections = 3,
  kMaglev = 4,
};
inline constexpr uint8_t kMaxScheduler = static_cast<uint8_t>(Scheduler::kMaglev);

struct BackendEntry {
  uint32_t ip;  // host byte order
  uint16_t port;
  uint16_t weight;  // 0 .. 65535; 0 takes no new flows
  uint8_t state;    // BackendState
  uint8_t reserved[3];
};
static_assert(std::is_standard_layout_v<BackendEntry> && sizeof(BackendEntry) == 12);

inline constexpr uint8_t kServiceRemoved = 1;  // ServiceUpdate::flags
// ServiceUpdate::flags bits 1-2: what lbd does with a non-SYN segment that matches no flow.
inline constexpr uint8_t kMissShift = 1, kMissMask = 3 << kMissShift;
enum class Miss : uint8_t {
  kDefault = 0,  // the dataplane's miss_policy
  kDrop = 1,
  kRst = 2,
  kRehash = 3,  // to the maglev table's backend of the tuple (scheduler maglev only)
};

// ServiceUpdate::syn_policy: what a SYN does when the embryonic budget or the flow table is full.
enum class SynFlood : uint8_t {
  kDefault = 0,  // the dataplane's flows.syn_flood_policy
  kDropNew = 1,
  kEvictEmbryonic = 2,
  kStateless = 3,  // routed by the Maglev table without a flow (maglev + tunnel only)
};
inline constexpr uint8_t kMaxSynFlood = static_cast<uint8_t>(SynFlood::kStateless);

// The full state of one service (never a delta): applying the same update twice is harmless,
// and a lost intermediate update is superseded by the next one.
struct ServiceUpdate {
  uint64_t generation;  // healthd's counter, strictly increasing across all its updates; 1 ..
                        // kMaxGeneration
  char name[kNameLen];  // the service's identity
  uint32_t vip;         // host byte order
  uint16_t port;
  uint8_t scheduler;  // 0 rr, 1 wrr, 2 random, 3 lc, 4 maglev (lb::cfg::Scheduler order)
  uint8_t flags;      // kServiceRemoved, Miss << kMissShift; other bits must be 0
  uint32_t backend_count;
  uint32_t maglev_table_size;  // scheduler maglev: a prime, 257 .. 5000011; otherwise 0
  uint8_t forward;             // 0 dnat, 1 tunnel, 2 fullnat (lb::cfg::Forward order)
  uint8_t syn_policy;          // SynFlood
  uint8_t reserved[2];         // must be 0
  BackendEntry backends[kMaxBackendsPerService];
  uint8_t padding[4];  // to generation's alignment, explicit so that it is 0; must be 0
};
static_assert(std::is_standard_layout_v<ServiceUpdate>);
static_assert(offsetof(ServiceUpdate, name) == 8 && offsetof(ServiceUpdate, vip) == 56 &&
              offsetof(ServiceUpdate, backend_count) == 64 &&
              offsetof(ServiceUpdate, maglev_table_size) == 68 &&
              offsetof(ServiceUpdate, forward) == 72 && offsetof(ServiceUpdate, syn_policy) == 73 &&
              offsetof(ServiceUpdate, backends) == 76);
static_assert(sizeof(ServiceUpdate) == 76 + 12 * kMaxBackendsPerService + 4);
static_assert(sizeof(ServiceUpdate) % 4 == 0, "rte_ring element sizes are multiples of 4");

enum class EventType : uint32_t {
  kSynRst = 1,      // the backend answered `count` of our SYNs with RST (passive signal)
  kSynTimeout = 2,  // `count` SYNs to the backend went unanswered until the client retried
};

struct Event {
  uint32_t type;   // EventType
  uint32_t count;  // 1 .. kMaxEventCount
  uint32_t ip;     // the backend, host byte order
  uint16_t port;
  uint16_t reserved;
  char service[kNameLen];
};
static_assert(std::is_standard_layout_v<Event> && sizeof(Event) == 64);

static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "the header's atomics must be address-free to live in shared memory");

struct Header {
  uint64_t magic;  // written last by lbd at creation (release): a reader that sees it sees all
  uint32_t version;
  uint32_t header_size;
  uint32_t update_size;
  uint32_t event_size;
  uint64_t epoch;  // differs on every lbd start: healthd pushes its full state again
  uint64_t update_ring_offset;
  uint64_t event_ring_offset;
  uint64_t total_size;
  // Written by lbd, read by lb-healthd (release/acquire pairs as noted at each use).
  std::atomic<uint64_t> received_generation;  // newest update taken off the ring
  std::atomic<uint64_t> applied_generation;   // newest update every worker is now using
  std::atomic<uint64_t> lbd_heartbeat_ms;     // lbd's control loop, monotonic ms; stale = stuck
  std::atomic<uint64_t> lbd_pid;
  std::atomic<uint64_t> rejected_generation;  // newest update lbd refused (logged with why)
  // Written by healthd.
  std::atomic<uint64_t> healthd_pid;
  std::atomic<uint64_t> healthd_heartbeat_ms;
};
static_assert(std::is_standard_layout_v<Header>);
static_assert(offsetof(Header, epoch) == 24 && offsetof(Header, received_generation) == 56 &&
              offsetof(Header, applied_generation) == 64 && sizeof(Header) <= kHeaderSize);

}  // namespace lb::shm
