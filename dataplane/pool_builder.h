#pragma once
// The desired state of every service (from the config at start, then from lb-healthd's updates)
// and its translation into immutable pools. Ids stay stable while a backend or service exists:
// the same service name keeps its ServiceId and the same service/address/port keeps its
// BackendId, so counters and flows that name them stay meaningful across pool changes. An id
// whose owner has left the state is given back (release_*) by the dataplane once no pool and no
// flow can name it (Dataplane::reclaim_ids), and reused: the caps (kMaxBackends, kMaxServices,
// kMaxNeighbors) apply to what exists, not to history.
// build() and release_*() run on the control thread; the registry accessors may be called from
// any thread.

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
  uint32_t maglev_table_size = 0;  // scheduler maglev only
  shm::Miss miss = shm::Miss::kDefault;
  cfg::Forward forward = cfg::Forward::kDnat;
  shm::SynFlood syn_policy = shm::SynFlood::kDefault;
};
using PoolState = std::map<std::string, ServiceState>;  // by service name

// The config's services, every backend active (lb-healthd takes over from there).
PoolState state_from_config(const cfg::Config& config);

// Applies one update from lb-healthd to `state`. Returns an empty string, or why the update is
// malformed (then `state` is unchanged).
std::string apply_update(PoolState& state, const shm::ServiceUpdate& u);

// A backend's counters summed over workers; see BackendInfo::base.
struct BackendTotals {
  uint64_t packets_in = 0, bytes_in = 0, packets_out = 0, bytes_out = 0;
  uint64_t flows_total = 0, syn_rst = 0, syn_timeout = 0, flows_rehashed = 0;
};

// What changed from `before` to `after`, briefly, for the log: "web: +10.20.0.14:8080 active,
// 10.20.0.12:8080 active -> draining; -service api". At most `max_items` changes are named, then
// "(+N more)"; "no change" when there is none.
std::string describe_changes(const PoolState& before, const PoolState& after, size_t max_items = 8);

struct BackendInfo {
  core::ServiceId service{};
  uint32_t ip = 0;
  uint16_t port = 0;
  bool live = false;                               // the id belongs to a backend (false: a free id)
  uint16_t neighbor = core::NeighborTable::kNone;  // its next hop's slot, once it was routed
  // The workers' counters of this id when it was given to this backend: they are never zeroed
  // (each worker alone writes its own), so this backend's counts are the sums minus these.
  BackendTotals base;
};

class PoolBuilder {
 public:
  PoolBuilder(cfg::DataplaneConfig dataplane, core::NeighborTable& neighbors);

  // Throws std::runtime_error (ids or next-hop slots exhausted, a backend no port reaches) or
  // std::invalid_argument (duplicate VIP:port); nothing published changes then, and the ids it
  // had taken for new backends and services are free again.
  //
  // `defer_tables`: a maglev service whose active backends changed keeps its previous table (of
  // the same size) in this pool, and the new one is left for the next build, which the caller
  // makes right after publishing this one (tables_pending()). So a pool change reaches the
  // workers without waiting for a table build (~0.65 ms for 256 backends at M = 65537); in
  // between, a table entry that names a backend no longer active for the service falls back
  // to one that is (Processor::maglev_pick). The new tables are checked here all the same.
  std::unique_ptr<core::Pool> build(uint64_t generation, const PoolState& state,
                                    bool defer_tables = false);
  // Whether the last build left maglev tables to build (see build()).
  bool tables_pending() const { return tables_pending_; }

  // Control thread. Ids the last successful build() no longer named (each reported once), to be
  // released when nothing can name them.
  std::vector<core::BackendId> take_unnamed_backends();
  std::vector<core::ServiceId> take_unnamed_services();
  // Whether the last successful build() named the id (a backend re-added before its old id was
  // released keeps it).
  bool named(core::BackendId id) const;
  bool named(core::ServiceId id) const;
  // Whether some backend id of service `s` is still taken.
  bool has_backends(core::ServiceId s) const;
  // The id is free for another backend, which will start from `totals`. Neighbor slots no taken
  // backend id uses any more are then in take_unused_neighbors().
  void release(core::BackendId id, const BackendTotals& totals);
  // The service id is free for another service, whose rehashed misses are counted from
  // `rehashed_total` (the workers' sum for the id now).
  void release(core::ServiceId id, uint64_t rehashed_total);
  std::vector<uint16_t> take_unused_neighbors();

  // Copies, safe from any thread. Indexed by id; free ids have `live` false (backends) or an
  // empty name (services).
  std::vector<BackendInfo> backends() const;
  std::vector<std::string> service_names() const;
  // By service id: the workers' flows_rehashed sum when the id was last given out (counts of
  // the service holding it now are the sum minus this).
  std::vector<uint64_t> service_rehashed_base() const;
  // Ids taken now (including those waiting to be released).
  size_t backend_ids_taken() const;
  size_t service_ids_taken() const;

 private:
  core::ServiceId service_id(const std::string& name);
  core::BackendId backend_id(core::ServiceId s, uint32_t ip, uint16_t port);
  // Port and neighbor slot through which backend `id` at `ip` is reached.
  std::pair<uint16_t, uint16_t> route(core::BackendId id, uint32_t ip);
  void unref_neighbor(uint16_t slot);
  void release_locked(core::BackendId id, const BackendTotals& totals);
  void release_locked(core::ServiceId id, uint64_t rehashed_total);

  cfg::DataplaneConfig dataplane_;
  core::NeighborTable& neighbors_;
  mutable std::mutex mu_;  // guards the registry below against telemetry readers
  std::map<std::string, core::ServiceId> service_ids_;
  std::vector<std::string> service_names_;  // by id; "" for a free id
  std::vector<uint16_t> free_services_;
  std::vector<uint64_t> service_rehashed_base_;  // by id, see service_rehashed_base()
  std::vector<uint32_t> service_backends_;       // by service id: backend ids taken
  // Every VIP:port a service still taken has had, with that service: the workers keep knowing
  // them as service addresses while flows to them may remain (Pool::was_service).
  std::map<std::pair<uint32_t, uint16_t>, core::ServiceId> addresses_;
  std::map<std::tuple<uint16_t, uint32_t, uint16_t>, core::BackendId> backend_ids_;
  std::vector<BackendInfo> backends_;  // by id
  std::vector<uint32_t> free_backends_;
  std::vector<uint32_t> neighbor_refs_;  // by slot: taken backend ids routed through it
  std::vector<uint16_t> unused_neighbors_;
  // What the last successful build named, and what it stopped naming (not yet taken).
  std::vector<bool> backend_named_, service_named_;
  std::vector<core::BackendId> unnamed_backends_;
  std::vector<core::ServiceId> unnamed_services_;
  // The maglev table each service had in the last build, with what it was built from: a build
  // reuses it while its active backends (and ids, weights, size) are the same, so that a change
  // to one service costs no table build for the others (~0.7 ms each at 256 backends).
  struct MaglevCache {
    std::vector<core::MaglevBackend> from;
    uint32_t size = 0;
    std::shared_ptr<const core::MaglevTable> table;  // built from `from`, unless `stale`
    bool stale = false;  // the table of an earlier `from`, kept by a build with defer_tables
  };
  std::map<std::string, MaglevCache> maglev_;
  uint64_t maglev_builds_ = 0;
  bool tables_pending_ = false;

 public:
  // Tables built so far (the others were reused): for tests and the log.
  uint64_t maglev_builds() const { return maglev_builds_; }

 private:
  // Taken by the build in progress: given back if it fails.
  std::vector<core::BackendId> new_backends_;
  std::vector<core::ServiceId> new_services_;
};

core::SchedulerKind to_core(cfg::Scheduler s);
core::MissMode to_core(shm::Miss m);
core::ForwardMode to_core(cfg::Forward f);
core::SynPolicy to_core(shm::SynFlood p);

}  // namespace lb::dp
