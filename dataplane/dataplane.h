#pragma once
// The DPDK side of lbd: ports, mempool, one core::Processor per worker lcore, the handoff rings
// between workers, the pool published through RCU, and the control thread's periodic work (ARP
// for next hops, freeing retired pools). EAL must be initialised before construction.
//
// Worker w polls RX queue w of every port, transmits on TX queue w of every port, and owns the
// flows that core::flow_owner() assigns to it; a packet that arrives at another worker is handed
// to its owner over the owner's ring. See docs/architecture.md.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "flow_list.h"
#include "flow_memory.h"
#include "lb_config.h"
#include "neighbor.h"
#include "pool.h"
#include "pool_builder.h"
#include "pool_channel.h"
#include "processor.h"

struct rte_mempool;
struct rte_ring;
struct rte_mbuf;
struct rte_rcu_qsbr;

namespace lb::dp {

class Dataplane {
 public:
  static constexpr uint16_t kBurst = 32;
  // A next hop whose MAC was not confirmed by ARP for this long (it is asked every second after
  // 30 s) is forgotten (and logged as lost).
  static constexpr uint32_t kNeighborLostAfter = 60;
  static constexpr uint16_t kBatch = 2 * kBurst;  // frames processed together (all ports)

  // Sets up ports (probing vdevs named in the config when they do not exist yet), queues, the
  // mempool and the workers' state, and publishes the config's pool. With a non-empty
  // `shm_name` it also creates the shared-memory segment lb-healthd attaches to. With
  // `flows.instance`, the flow tables live in files that outlive the process and are taken over
  // from a previous lbd (flow_memory.h). Throws std::runtime_error with an actionable message on
  // any failure.
  explicit Dataplane(const cfg::Config& config, const std::string& shm_name = {},
                     const FlowMemoryOptions& flows = {});
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // Launches worker w on the w-th worker lcore. Throws if there are fewer worker lcores than
  // configured workers.
  void launch();
  // Asks the workers to stop and waits for them.
  void stop();

  // One iteration of worker w's loop at time `now` (TSC ticks). The lcore loop calls it; tests
  // call it directly with an injected clock. Returns the number of packets handled.
  uint32_t poll(uint16_t worker, core::Tick now);
  // The RSS redirection-table size flow ownership is computed with (core::flow_owner).
  uint16_t reta_size() const { return reta_size_; }

  // The control thread's periodic work; `now` in TSC ticks: pool updates from lb-healthd,
  // passive health events to it, ARP for next hops, freeing retired pools, reclaiming ids.
  void control_tick(core::Tick now);

  // Backend and service ids (and next-hop slots) that no pool names any more, on their way to
  // being reused (reclaim_ids()).
  size_t ids_leaving() const {
    return leaving_backends_.size() + leaving_services_.size() + retiring_neighbors_.size();
  }

  // Logs what lbd did: packets, flows, drops by reason, pool updates (at shutdown).
  void log_summary() const;

  // Builds the pool for `state` (PoolBuilder::build: throws, and nothing published changes).
  // Control thread.
  std::unique_ptr<core::Pool> build(uint64_t generation, const PoolState& state,
                                    bool defer_tables = false) {
    return builder_.build(generation, state, defer_tables);
  }
  // Records the services of the pool state just published for the next lbd (FlowMemory::
  // record_services). Control thread.
  void record_services(const PoolState& state);
  // Publishes a new pool; the old one is freed once every worker has passed a quiescent point.
  // Returns the RCU token that tells when every worker uses the new one.
  uint64_t publish(std::unique_ptr<core::Pool> pool);
  // Whether every worker has passed a quiescent state since publish() returned `token` (so
  // uses that pool or a newer one), waiting up to `wait_us` for it.
  bool quiescent(uint64_t token, uint32_t wait_us = 0) const;

  // What the control thread did with lb-healthd's updates (pool_channel.h).
  using ControlStats = dp::ControlStats;
  const ControlStats& control_stats() const { return control_stats_; }
  // Backend id's counters summed over workers, for the life of the process (subtract the
  // registry's BackendInfo::base for what its current backend counted). Any thread.
  BackendTotals backend_totals(uint32_t id) const;
  // The workers' flows_rehashed sum for service id `id` (PoolBuilder::service_rehashed_base()
  // is what an earlier holder of the id left in it).
  uint64_t service_rehashed_total(core::ServiceId id) const;
  // What backend `b` (the registry's entry for id) counted since it was given its id.
  BackendTotals backend_counts(uint32_t id, const BackendInfo& b) const;
  // By BackendId, as of the last published pool.
  ServingState backend_state(uint32_t id) const {
    return id < backend_state_.size() ? backend_state_[id].load(std::memory_order_relaxed)
                                      : ServingState::kNotServing;
  }
  const shm::Segment* segment() const { return channel_ ? &channel_->segment() : nullptr; }

  // Lists the live flows of every worker, as their owners see them: the whole table of each is
  // walked by its worker, kFlowListBudget records per loop iteration (no iteration stalls for
  // long, whatever the table size), and each keeps its `max` oldest flows. Waits up to
  // `timeout_ms` for the walks. Any thread but a worker's; serialised.
  struct FlowSample {
    uint16_t worker;
    core::Flow flow;
    core::Tick now;  // the worker's clock when the walk ended
  };
  struct FlowList {
    std::vector<FlowSample> flows;  // the `max` oldest of all workers, oldest first
    uint64_t total = 0;             // live flows in the tables of the workers that answered
    uint16_t answered = 0;          // workers that finished their walk in time
  };
  FlowList list_flows(uint32_t max, uint32_t timeout_ms);
  static constexpr uint32_t kMaxListed = core::FlowLister::kMaxListed;
  // Records a worker examines per loop iteration for a listing: 1,024 records (64 KiB, a few
  // microseconds) per iteration, a million-flow table in 1,024 iterations.
  static constexpr uint32_t kFlowListBudget = 1024;

  uint16_t workers() const { return static_cast<uint16_t>(workers_.size()); }
  uint16_t port_count() const { return static_cast<uint16_t>(ports_.size()); }
  uint16_t port_id(uint16_t index) const { return ports_[index].id; }
  const std::string& port_name(uint16_t index) const { return ports_[index].name; }
  const core::MacAddr& port_mac(uint16_t index) const { return ports_[index].mac; }
  const core::WorkerCounters& counters(uint16_t worker) const;
  const core::Processor& processor(uint16_t worker) const;
  const core::Pool& pool() const { return *current_.load(std::memory_order_acquire); }
  const PoolBuilder& builder() const { return builder_; }
  const core::NeighborTable& neighbors() const { return neighbors_; }
  uint64_t ticks_per_second() const { return tsc_hz_; }
  const cfg::Config& config() const { return config_; }

 private:
  struct Port {
    std::string name;
    uint16_t id = 0;
    core::MacAddr mac;
    bool started = false;
    bool rx_ip_csum = false;  // the NIC checks IPv4 header checksums (mbuf ol_flags)
  };
  struct TxBuffer {
    rte_mbuf* m[2 * kBurst];
    uint16_t n = 0;
    uint64_t bytes = 0;  // the pkt_len of m[0, n) (TX buffers; handoff buffers leave it 0)
  };
  // A request from list_flows() to one worker: `request` (seq << 32 | max, release) by the
  // requester; the worker walks its table over its next iterations in `lister` (its own), then
  // stores `answered` = seq (release); the requester reads `lister` and `now` after acquiring
  // it. A worker that sees a newer request abandons the walk it was doing.
  struct ListSlot {
    std::atomic<uint64_t> request{0};
    std::atomic<uint64_t> answered{0};
    uint64_t serving = 0;  // the worker's: the request its walk is for
    core::Tick now = 0;
    core::FlowLister lister;
  };
  struct Worker {
    std::unique_ptr<core::Processor> proc;
    std::unique_ptr<ListSlot> list;
    rte_ring* handoff = nullptr;  // packets other workers received for our flows (MP/SC)
    rte_ring* ctl = nullptr;      // frames the control thread wants sent (SP/SC)
    rte_ring* forget = nullptr;   // ids whose scheduler state to forget (SP/SC), reclaim_ids()
    std::vector<TxBuffer> tx;     // per port
    // Per owner worker: packets for it, enqueued on its handoff ring a burst at a time (one
    // multi-producer CAS per burst instead of per packet) by flush().
    std::vector<TxBuffer> to_owner;
    unsigned lcore = 0;
  };

  void setup(const std::string& shm_name, const FlowMemoryOptions& flows);
  void release();
  void resolve_port(size_t index, const cfg::PortConfig& pc);
  void setup_port(size_t index, const cfg::PortConfig& pc, bool rss_src_only, bool rss_dst_only);
  void walk_flows(Worker& wk, core::Tick now);
  void apply(uint16_t w, rte_mbuf* m, const core::Frame& f, const core::Verdict& v,
             uint16_t in_port);
  // apply() of a kTx verdict: the frame's new bounds, and into the port's TX buffer.
  inline void queue_tx(uint16_t w, rte_mbuf* m, const core::Frame& f, uint16_t port);
  // queue_tx() into `t`, which has room for it.
  static inline void append_tx(TxBuffer& t, rte_mbuf* m, const core::Frame& f);
  // Whether every TX buffer of `wk` has room for `n` more packets.
  static bool tx_room(const Worker& wk, uint16_t n) {
    for (const TxBuffer& t : wk.tx)
      if (t.n + n > 2 * kBurst) return false;
    return true;
  }
  // Sends worker w's buffered packets: to its ports, and to the owners' handoff rings.
  void flush(uint16_t w);
  void flush_handoff(Worker& wk, uint16_t owner);
  // Asks for every unresolved next hop, and refreshes old ones; true if any is unresolved.
  bool send_arp_requests(core::Tick now);
  void reclaim_pools();
  void reclaim_ids(core::Tick now);
  void watch(core::Tick now);
  void watch_links();
  void watch_neighbors();
  void watch_drops(core::Tick now);
  bool post_forget(uint64_t what);
  void forget_ids(Worker& wk);
  static int lcore_main(void* arg);
  // Worker w sleeps `us` microseconds (dataplane.idle.mode "sleep"), offline for RCU meanwhile.
  void idle_sleep(uint16_t w, uint32_t us);
  struct LaunchArg {
    Dataplane* dp;
    uint16_t w;
  };

  cfg::Config config_;
  uint64_t tsc_hz_;
  std::vector<Port> ports_;
  rte_mempool* mbufs_ = nullptr;
  core::NeighborTable neighbors_;
  PoolBuilder builder_;
  std::unique_ptr<FlowMemory> flow_memory_;  // outlives workers_ (their tables are in it)
  std::vector<Worker> workers_;
  rte_rcu_qsbr* qsbr_ = nullptr;
  // acquire by workers in poll() pairs with the release in publish().
  std::atomic<const core::Pool*> current_{nullptr};
  std::vector<std::pair<uint64_t, std::unique_ptr<const core::Pool>>> retired_;
  std::unique_ptr<const core::Pool> owned_current_;
  std::atomic<bool> stop_{false};
  bool launched_ = false;
  uint16_t reta_size_ = 128;
  core::Tick next_arp_ = 0;
  core::Tick arp_fast_until_ = 0;         // ask unresolved next hops every 100 ms until then
  uint32_t arp_adds_seen_ = 0;            // neighbors_.added() when arp_fast_until_ was set
  std::unique_ptr<PoolChannel> channel_;  // with a shm_name: lb-healthd's updates and events
  // An id that no pool names since the publish of RCU token `token`: step 0 waits for that
  // token and for its flows to end, step 1 (token: one started then) for every worker to have
  // forgotten it and reported a quiescent state. Services also linger tcp_closed_timeout once
  // they have no backend left (`since`), for the reset records of their flows.
  struct Leaving {
    uint64_t token = 0;
    uint8_t step = 0;
    core::Tick since = 0;
  };
  std::map<uint32_t, Leaving> leaving_backends_, leaving_services_;
  // What the control thread last logged (watch()), once a second.
  core::Tick next_watch_ = 0;
  std::vector<int> link_up_;                                   // by port: -1 unknown, 0 down, 1 up
  std::vector<std::pair<uint64_t, uint64_t>> neighbor_seen_;   // by slot: (ip:port, MAC or 0)
  std::array<uint64_t, core::kDropReasonCount> drops_seen_{};  // sums at the last look
  std::array<double, core::kDropReasonCount> drop_rate_{};     // per second, smoothed
  std::array<core::Tick, core::kDropReasonCount> drop_logged_{};
  std::vector<std::pair<uint64_t, uint16_t>> retiring_neighbors_;  // (RCU token, slot)
  ControlStats control_stats_;
  std::mutex list_mu_;
  uint64_t list_seq_ = 0;
  std::array<std::atomic<ServingState>, core::kMaxBackends> backend_state_{};
  LaunchArg launch_args_[core::kMaxWorkers]{};
};

}  // namespace lb::dp
