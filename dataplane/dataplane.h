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
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "channel.h"

#include "flow_memory.h"
#include "lb_config.h"
#include "neighbor.h"
#include "pool.h"
#include "pool_builder.h"
#include "processor.h"

struct rte_mempool;
struct rte_ring;
struct rte_mbuf;
struct rte_rcu_qsbr;

namespace lb::dp {

class Dataplane {
 public:
  static constexpr uint16_t kBurst = 32;
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

  // The control thread's periodic work; `now` in TSC ticks: pool updates from lb-healthd,
  // passive health events to it, ARP for next hops, freeing retired pools.
  void control_tick(core::Tick now);

  // Publishes a new pool; the old one is freed once every worker has passed a quiescent point.
  // Returns the RCU token that tells when every worker uses the new one.
  uint64_t publish(std::unique_ptr<core::Pool> pool);

  // What the control thread did with lb-healthd's updates (any thread may read).
  struct ControlStats {
    std::atomic<uint64_t> updates_applied{0};
    std::atomic<uint64_t> updates_rejected{0};
    std::atomic<uint64_t> events_posted{0};
    std::atomic<uint64_t> events_lost{0};
  };
  const ControlStats& control_stats() const { return control_stats_; }
  // 2 active, 1 draining, 0 not serving; by BackendId, as of the last published pool.
  uint8_t backend_state(uint32_t id) const {
    return id < backend_state_.size() ? backend_state_[id].load(std::memory_order_relaxed) : 0;
  }
  const shm::Segment* segment() const { return segment_ ? &*segment_ : nullptr; }

  // A sample of the flow tables, as their owners see them.
  struct FlowSample {
    uint16_t worker;
    core::Flow flow;
    core::Tick now;  // the worker's clock when it copied the flow
  };
  // Asks every worker for up to `per_worker` flows and waits up to `timeout_ms` for them to
  // answer at the end of their next loop iteration. Any thread but a worker's; serialised.
  std::vector<FlowSample> sample_flows(uint32_t per_worker, uint32_t timeout_ms);
  static constexpr uint32_t kMaxSample = 256;

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
  };
  // A request from sample_flows() to one worker: `want` (release) by the requester; the worker
  // fills `flows`, then stores `ready` (release); the requester reads after acquiring `ready`.
  struct SampleSlot {
    std::atomic<uint32_t> want{0};
    std::atomic<uint32_t> ready{0};
    uint32_t count = 0;
    uint32_t cursor = 0;
    core::Tick now = 0;
    std::array<core::Flow, kMaxSample> flows;
  };
  struct Worker {
    std::unique_ptr<core::Processor> proc;
    std::unique_ptr<SampleSlot> sample;
    rte_ring* handoff = nullptr;  // packets other workers received for our flows (MP/SC)
    rte_ring* ctl = nullptr;      // frames the control thread wants sent (SP/SC)
    std::vector<TxBuffer> tx;     // per port
    unsigned lcore = 0;
  };

  void setup(const std::string& shm_name, const FlowMemoryOptions& flows);
  void release();
  void resolve_port(size_t index, const cfg::PortConfig& pc);
  void setup_port(size_t index, const cfg::PortConfig& pc, bool rss_src_only, bool rss_dst_only);
  void answer_sample(Worker& wk, core::Tick now);
  void apply(uint16_t w, rte_mbuf* m, const core::Frame& f, const core::Verdict& v,
             uint16_t in_port);
  void handle(uint16_t w, rte_mbuf* m, uint16_t in_port, const core::Pool& pool, core::Tick now);
  void flush(uint16_t w);
  void send_arp_requests(core::Tick now);
  void reclaim_pools();
  void receive_updates();
  void post_passive_events();
  static int lcore_main(void* arg);
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
  core::Tick next_events_ = 0;
  PoolState state_;  // what the published pool was built from
  std::optional<shm::Segment> segment_;
  std::vector<shm::ServiceUpdate> rx_updates_;
  std::optional<std::pair<uint64_t, uint64_t>> pending_ack_;  // (RCU token, generation)
  std::vector<uint64_t> last_syn_rst_, last_syn_timeout_;     // by BackendId, summed
  ControlStats control_stats_;
  std::mutex sample_mu_;
  std::array<std::atomic<uint8_t>, core::kMaxBackends> backend_state_{};
  LaunchArg launch_args_[core::kMaxWorkers]{};
};

}  // namespace lb::dp
