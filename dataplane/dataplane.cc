#include "dataplane.h"

#include <rte_cycles.h>
#include <rte_debug.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_random.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "log.h"

namespace lb::dp {

namespace {

uint32_t prefix_mask(uint8_t len) {
  return len == 0 ? 0 : ~uint32_t{0} << (32 - len);
}

core::VipArp to_core(cfg::VipArp v) {
  switch (v) {
    case cfg::VipArp::kSubnet:
      return core::VipArp::kSubnet;
    case cfg::VipArp::kAll:
      return core::VipArp::kAll;
    case cfg::VipArp::kNone:
      return core::VipArp::kNone;
  }
  return core::VipArp::kSubnet;
}

// The kernel interface a vdev drives ("iface=eth1" of net_af_packet0 / net_af_xdp0), or "".
std::string kernel_interface(const std::string& device) {
  const std::string name = device.substr(0, device.find(','));
  if (!name.starts_with("net_af_packet") && !name.starts_with("net_af_xdp")) return {};
  for (size_t at = device.find(','); at != std::string::npos; at = device.find(',', at + 1)) {
    const size_t end = device.find(',', at + 1);
    const std::string kv = device.substr(at + 1, end == std::string::npos ? end : end - at - 1);
    if (kv.starts_with("iface=")) return kv.substr(6);
  }
  return {};
}

std::runtime_error dpdk_error(const std::string& what, int err) {
  return std::runtime_error(what + ": " + rte_strerror(err < 0 ? -err : err));
}

// The tick clock and the wall clock, read together (flow_memory.h).
core::ClockPair clock_now() {
  return {rte_rdtsc(), boottime_ns()};
}

}  // namespace

Dataplane::Dataplane(const cfg::Config& config, const std::string& shm_name,
                     const FlowMemoryOptions& flows)
    : config_(config), tsc_hz_(rte_get_tsc_hz()), builder_(config.dataplane, neighbors_) {
  try {
    setup(shm_name, flows);
  } catch (...) {
    release();  // the destructor does not run for a half-built object
    throw;
  }
}

void Dataplane::setup(const std::string& shm_name, const FlowMemoryOptions& flows) {
  const cfg::DataplaneConfig& dc = config_.dataplane;
  const uint16_t nworkers = static_cast<uint16_t>(dc.workers);
  const int socket = static_cast<int>(rte_socket_id());

  // Every worker keeps up to a burst in RX, a burst per port in TX buffers and its rings;
  // descriptors hold the rest.
  uint32_t descriptors = 0;
  for (const cfg::PortConfig& pc : dc.ports)
    descriptors += (uint32_t{pc.rx_descriptors} + pc.tx_descriptors) * nworkers;
  const uint32_t needed = descriptors + nworkers * (4u * kBurst * 8u) + 1024;
  if (dc.mbufs < needed)
    LB_LOG(WARNING, "dataplane.mbufs = %u is below the %u the rings can hold; RX may starve",
           dc.mbufs, needed);
  mbufs_ = rte_pktmbuf_pool_create("lb_mbufs", dc.mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
  if (!mbufs_)
    throw dpdk_error("cannot create a pool of " + std::to_string(dc.mbufs) +
                         " mbufs (hugepages, or -m with --no-huge?)",
                     rte_errno);

  // The first pool: everything in the config, all live, until lb-healthd says otherwise.
  PoolState state = state_from_config(config_);
  std::unique_ptr<core::Pool> first = builder_.build(0, state);

  // Ports that reach backends get replies addressed to clients; the others get clients' packets.
  // With RSS on source fields on the latter and destination fields on the former, both
  // directions of a flow hash the client's ip:port and land on the owning worker. A port that
  // gets both (one arm) hashes all four fields: core::rss_fields() decides, from the config's
  // services (RSS is set once, at start).
  std::vector<bool> has_backends(dc.ports.size(), false);
  for (const core::PoolService& s : first->services())
    for (const core::PoolBackend& b : first->backends(s)) has_backends[b.out_port] = true;

  ports_.resize(dc.ports.size());
  for (size_t i = 0; i < dc.ports.size(); ++i) resolve_port(i, dc.ports[i]);
  // flow_owner() and every port's RETA must agree on one table size: the smallest.
  for (const Port& port : ports_) {
    rte_eth_dev_info info;
    if (nworkers > 1 && rte_eth_dev_info_get(port.id, &info) == 0 && info.reta_size &&
        (info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_TCP))
      reta_size_ = std::min<uint16_t>(reta_size_, info.reta_size);
  }
  std::vector<core::PortRole> roles(dc.ports.size());
  for (size_t i = 0; i < dc.ports.size(); ++i) {
    core::PortInfo info{};
    info.ip = dc.ports[i].ip;
    info.mask = prefix_mask(dc.ports[i].prefix_len);
    info.vip_arp = to_core(dc.ports[i].vip_arp);
    roles[i].reaches_backends = has_backends[i];
    for (const core::PoolService& s : first->services())
      roles[i].answers_vips |= info.answers_arp_for(s.vip);
  }
  const std::vector<core::RssFields> fields = core::rss_fields(roles);
  for (size_t i = 0; i < dc.ports.size(); ++i)
    setup_port(i, dc.ports[i], fields[i] == core::RssFields::kSource,
               fields[i] == core::RssFields::kDestination);

  size_t qsbr_size = rte_rcu_qsbr_get_memsize(nworkers);
  qsbr_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("lb_qsbr", qsbr_size, RTE_CACHE_LINE_SIZE));
  if (!qsbr_ || rte_rcu_qsbr_init(qsbr_, nworkers) != 0)
    throw std::runtime_error("cannot set up RCU for " + std::to_string(nworkers) + " workers");

  core::ProcessorConfig pc;
  pc.workers = nworkers;
  pc.nports = static_cast<uint16_t>(ports_.size());
  for (size_t i = 0; i < ports_.size(); ++i) {
    pc.ports[i] = {dc.ports[i].ip, prefix_mask(dc.ports[i].prefix_len), ports_[i].mac,
                   to_core(dc.ports[i].vip_arp)};
    // The port's MTU as DPDK has it (1500 unless set): what a tunnelled packet must fit.
    uint16_t mtu = core::kDefaultMtu;
    if (rte_eth_dev_get_mtu(ports_[i].id, &mtu) == 0 && mtu >= 576) pc.ports[i].mtu = mtu;
  }
  pc.flow_capacity = dc.flows.capacity;
  pc.syn_timeout = dc.flows.tcp_syn_timeout * tsc_hz_;
  pc.established_timeout = dc.flows.tcp_established_timeout * tsc_hz_;
  pc.fin_timeout = dc.flows.tcp_fin_timeout * tsc_hz_;
  pc.closed_timeout = dc.flows.tcp_closed_timeout * tsc_hz_;
  pc.syn_budget = static_cast<uint32_t>(uint64_t{dc.flows.capacity} * dc.flows.syn_budget / 100);
  pc.syn_timeout_pressure = dc.flows.tcp_syn_timeout_pressure * tsc_hz_;
  pc.syn_policy = dc.flows.syn_flood_policy == cfg::SynFloodPolicy::kDropNew
                      ? core::SynPolicy::kDropNew
                      : core::SynPolicy::kEvictEmbryonic;
  pc.stateless_rate = dc.flows.stateless_rate;
  pc.retry_syn_after = dc.retry.syn_timeout_ms * tsc_hz_ / 1000;
  pc.retry_on_rst = dc.retry.on_rst;
  pc.max_retries = static_cast<uint8_t>(dc.retry.max_retries);
  pc.rst_on_miss = dc.miss_policy == cfg::MissPolicy::kRst;
  pc.maglev_seed = dc.maglev_hash_seed;
  pc.rst_on_no_backend = dc.no_backend_policy == cfg::NoBackendPolicy::kRst;
  pc.ticks_per_second = tsc_hz_;
  pc.reta_size = reta_size_;
  for (uint32_t addr : dc.fullnat_addresses) pc.fullnat_addrs[pc.nfullnat++] = addr;
  pc.fullnat_port_first = dc.fullnat_port_first;
  pc.fullnat_port_last = dc.fullnat_port_last;
  pc.fullnat_port_hold = dc.flows.fullnat_port_hold * tsc_hz_;
  // A per-process random seed keeps remote parties from aiming hash collisions at a bucket.
  pc.hash_seed = (rte_rdtsc() * uint64_t{0x9e3779b97f4a7c15}) ^ static_cast<uint64_t>(getpid());

  flow_memory_ = std::make_unique<FlowMemory>(flows, flow_file_params(config_, reta_size_, tsc_hz_),
                                              pc.hash_seed, clock_now());
  if (!shm_name.empty()) {
    // lb-healthd will push the running state, which may have backends the file has not (added
    // at runtime): restored flows to those go on as draining until it has (flow_memory.h).
    flow_memory_->attach(dc, clock_now());
    PoolState kept = state;
    if (keep_restored_backends(kept, flow_memory_->targets(), flow_memory_->recorded_services()) !=
        0) {
      try {
        first = builder_.build(0, kept);
        state = std::move(kept);
      } catch (const std::exception& e) {
        // Too many backends or next hops with them: lbd starts all the same, from the file.
        LB_LOG(WARNING,
               "cannot keep the backends restored flows name that the file does not list (%s): "
               "their flows are reset on their next packet",
               e.what());
      }
    }
  }
  flow_memory_->record_services(state);
  workers_.resize(nworkers);
  for (uint16_t w = 0; w < nworkers; ++w) {
    Worker& wk = workers_[w];
    pc.worker = w;
    core::FlowTable table = flow_memory_->table(w, *first, builder_, neighbors_, dc, clock_now());
    pc.hash_seed = table.seed();  // a re-attached table's index is keyed with its own
    // Without kept holds (no flow files), a ring that begins where the last process's began
    // would hand out first the ports the backends may still hold in TIME_WAIT.
    pc.fullnat_port_start = flows.fullnat_port_start.value_or(static_cast<uint32_t>(rte_rand()));
    wk.proc = std::make_unique<core::Processor>(pc, neighbors_, std::move(table),
                                                flow_memory_->port_holds(w));
    wk.list = std::make_unique<ListSlot>();
    const std::string hname = "lb_handoff_" + std::to_string(w);
    const std::string cname = "lb_ctl_" + std::to_string(w);
    const std::string fname = "lb_forget_" + std::to_string(w);
    wk.handoff = rte_ring_create(hname.c_str(), 4096, socket, RING_F_SC_DEQ);
    wk.ctl = rte_ring_create(cname.c_str(), 256, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    wk.forget = rte_ring_create(fname.c_str(), 1024, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!wk.handoff || !wk.ctl || !wk.forget)
      throw dpdk_error("cannot create worker rings", rte_errno);
    wk.tx.resize(ports_.size());
    wk.to_owner.resize(nworkers);
    if (rte_rcu_qsbr_thread_register(qsbr_, w) != 0)
      throw std::runtime_error("cannot register worker with RCU");
  }

  owned_current_ = std::move(first);
  current_.store(owned_current_.get(), std::memory_order_release);
  for (uint32_t id = 0; id < core::kMaxBackends; ++id) {
    const auto bid = static_cast<core::BackendId>(id);
    backend_state_[id].store(owned_current_->state(bid), std::memory_order_relaxed);
  }
  if (!shm_name.empty()) {
    channel_ = std::make_unique<PoolChannel>(*this, shm_name, std::move(state), control_stats_);
    LB_LOG(INFO, "pool channel %s ready (epoch %016llx)", shm_name.c_str(),
           static_cast<unsigned long long>(channel_->segment().epoch()));
  }
  LB_LOG(INFO, "%zu port(s), %u worker(s), %zu service(s), %u flows per worker (%.1f MiB)",
         ports_.size(), nworkers, config_.services.size(), dc.flows.capacity,
         static_cast<double>(workers_[0].proc->flows().memory_bytes()) / (1 << 20));
}

void Dataplane::resolve_port(size_t index, const cfg::PortConfig& pc) {
  Port& port = ports_[index];
  port.name = pc.name;
  const std::string devname = pc.device.substr(0, pc.device.find(','));
  uint16_t id;
  if (rte_eth_dev_get_port_by_name(devname.c_str(), &id) != 0) {
    // The kernel-interface PMDs fail with EPERM or ENODEV-less texts for an interface that does
    // not exist: say what is wrong before asking them.
    const std::string iface = kernel_interface(pc.device);
    if (!iface.empty() && if_nametoindex(iface.c_str()) == 0)
      throw std::runtime_error("port '" + pc.name + "': no such interface '" + iface +
                               "' (device '" + pc.device + "')");
    clear_errors();
    const int rc = rte_dev_probe(pc.device.c_str());
    if (rc != 0 || rte_eth_dev_get_port_by_name(devname.c_str(), &id) != 0) {
      const std::string logged = recent_errors();
      const std::string code =
          rc != 0 ? rte_strerror(rc < 0 ? -rc : rc) : "no ethdev port after probing";
      throw std::runtime_error("port '" + pc.name + "': cannot probe device '" + pc.device +
                               "': " + (logged.empty() ? code : logged + " (" + code + ")"));
    }
  }
  port.id = id;
}

void Dataplane::setup_port(size_t index, const cfg::PortConfig& pc, bool rss_src_only,
                           bool rss_dst_only) {
  Port& port = ports_[index];
  const uint16_t id = port.id;
  rte_eth_dev_info info;
  int rc = rte_eth_dev_info_get(id, &info);
  if (rc != 0) throw dpdk_error("port '" + pc.name + "': cannot read device info", rc);
  const uint16_t nq = static_cast<uint16_t>(config_.dataplane.workers);
  if (info.max_rx_queues < nq || info.max_tx_queues < nq)
    throw std::runtime_error(
        "port '" + pc.name + "' (" + pc.device + ") has " + std::to_string(info.max_rx_queues) +
        " RX / " + std::to_string(info.max_tx_queues) + " TX queues; " + std::to_string(nq) +
        " workers need one each (for af_packet add qpairs=N to the device)");

  rte_eth_conf conf{};
  static uint8_t rss_key[40];
  std::memcpy(rss_key, core::kRssKey, sizeof rss_key);
  if (nq > 1 && (info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_TCP)) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = rss_key;
    conf.rx_adv_conf.rss_conf.rss_key_len = sizeof rss_key;
    uint64_t hf = RTE_ETH_RSS_NONFRAG_IPV4_TCP;
    const uint64_t src = RTE_ETH_RSS_L3_SRC_ONLY | RTE_ETH_RSS_L4_SRC_ONLY;
    const uint64_t dst = RTE_ETH_RSS_L3_DST_ONLY | RTE_ETH_RSS_L4_DST_ONLY;
    if (rss_src_only && (info.flow_type_rss_offloads & src) == src) hf |= src;
    if (rss_dst_only && (info.flow_type_rss_offloads & dst) == dst) hf |= dst;
    conf.rx_adv_conf.rss_conf.rss_hf = hf;
  }
  // The NIC checks IPv4 header checksums where it can (a 20-byte sum saved per packet); the TCP
  // checksum is never verified, only updated incrementally, as a router would.
  if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM) {
    conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
    port.rx_ip_csum = true;
  }
  rc = rte_eth_dev_configure(id, nq, nq, &conf);
  if (rc != 0) throw dpdk_error("port '" + pc.name + "': configure failed", rc);
  uint16_t nb_rx = pc.rx_descriptors;
  uint16_t nb_tx = pc.tx_descriptors;
  rte_eth_dev_adjust_nb_rx_tx_desc(id, &nb_rx, &nb_tx);
  const int socket = rte_eth_dev_socket_id(id) < 0 ? 0 : rte_eth_dev_socket_id(id);
  for (uint16_t q = 0; q < nq; ++q) {
    rc = rte_eth_rx_queue_setup(id, q, nb_rx, static_cast<unsigned>(socket), nullptr, mbufs_);
    if (rc != 0) throw dpdk_error("port '" + pc.name + "': RX queue setup failed", rc);
    rc = rte_eth_tx_queue_setup(id, q, nb_tx, static_cast<unsigned>(socket), nullptr);
    if (rc != 0) throw dpdk_error("port '" + pc.name + "': TX queue setup failed", rc);
  }
  if (conf.rxmode.mq_mode == RTE_ETH_MQ_RX_RSS && info.reta_size) {
    // RETA entry i -> queue (i mod R) mod workers, R the smallest table among ports, so that
    // core::flow_owner() predicts the queue on every port alike.
    std::vector<rte_eth_rss_reta_entry64> reta(info.reta_size / RTE_ETH_RETA_GROUP_SIZE);
    for (uint16_t i = 0; i < info.reta_size; ++i) {
      auto& e = reta[i / RTE_ETH_RETA_GROUP_SIZE];
      e.mask = ~uint64_t{0};
      e.reta[i % RTE_ETH_RETA_GROUP_SIZE] = static_cast<uint16_t>((i % reta_size_) % nq);
    }
    if (rte_eth_dev_rss_reta_update(id, reta.data(), info.reta_size) != 0)
      LB_LOG(WARNING, "port '%s': RETA update refused; workers hand packets to their owners",
             pc.name.c_str());
  }
  rte_ether_addr mac;
  rc = rte_eth_macaddr_get(id, &mac);
  if (rc != 0) throw dpdk_error("port '" + pc.name + "': no MAC address", rc);
  std::memcpy(port.mac.b, mac.addr_bytes, 6);
  rc = rte_eth_dev_start(id);
  if (rc != 0) throw dpdk_error("port '" + pc.name + "': start failed", rc);
  port.started = true;
  LB_LOG(INFO, "port %s: %s id %u mac %02x:%02x:%02x:%02x:%02x:%02x ip %s/%u, %u queue(s)%s%s",
         pc.name.c_str(), pc.device.c_str(), id, mac.addr_bytes[0], mac.addr_bytes[1],
         mac.addr_bytes[2], mac.addr_bytes[3], mac.addr_bytes[4], mac.addr_bytes[5],
         cfg::format_ipv4(pc.ip).c_str(), pc.prefix_len, nq,
         conf.rxmode.mq_mode == RTE_ETH_MQ_RX_RSS ? ", RSS" : "",
         port.rx_ip_csum ? ", RX IPv4 checksum offload" : "");
}

Dataplane::~Dataplane() {
  release();
}

void Dataplane::release() {
  stop();
  if (flow_memory_) flow_memory_->stopped_cleanly(clock_now());
  for (Port& p : ports_) {
    if (!p.started) continue;
    rte_eth_dev_stop(p.id);
    rte_eth_dev_close(p.id);
  }
  for (Worker& w : workers_) {
    for (TxBuffer& t : w.tx) rte_pktmbuf_free_bulk(t.m, t.n);
    rte_mbuf* m;
    if (w.handoff)
      while (rte_ring_dequeue(w.handoff, reinterpret_cast<void**>(&m)) == 0) rte_pktmbuf_free(m);
    if (w.ctl)
      while (rte_ring_dequeue(w.ctl, reinterpret_cast<void**>(&m)) == 0) rte_pktmbuf_free(m);
    rte_ring_free(w.handoff);
    rte_ring_free(w.ctl);
    rte_ring_free(w.forget);
  }
  workers_.clear();
  ports_.clear();
  rte_free(qsbr_);
  qsbr_ = nullptr;
  rte_mempool_free(mbufs_);
  mbufs_ = nullptr;
}

const core::WorkerCounters& Dataplane::counters(uint16_t worker) const {
  return workers_[worker].proc->counters();
}
const core::Processor& Dataplane::processor(uint16_t worker) const {
  return *workers_[worker].proc;
}

void Dataplane::launch() {
  unsigned lcore = rte_get_next_lcore(~0u, 1, 0);
  for (uint16_t w = 0; w < workers_.size(); ++w) {
    if (lcore >= RTE_MAX_LCORE)
      throw std::runtime_error(std::to_string(workers_.size()) +
                               " workers need as many worker lcores besides the main one "
                               "(EAL -l), found " +
                               std::to_string(w));
    workers_[w].lcore = lcore;
    lcore = rte_get_next_lcore(lcore, 1, 0);
  }
  stop_.store(false, std::memory_order_relaxed);
  for (uint16_t w = 0; w < workers_.size(); ++w) {
    launch_args_[w] = {this, w};
    if (rte_eal_remote_launch(&Dataplane::lcore_main, &launch_args_[w], workers_[w].lcore) != 0)
      throw std::runtime_error("cannot launch worker on lcore " +
                               std::to_string(workers_[w].lcore));
  }
  launched_ = true;
}

void Dataplane::stop() {
  if (!launched_) return;
  stop_.store(true, std::memory_order_relaxed);
  for (const Worker& w : workers_) rte_eal_wait_lcore(w.lcore);
  launched_ = false;
}

int Dataplane::lcore_main(void* arg) {
  const auto* a = static_cast<const LaunchArg*>(arg);
  Dataplane& dp = *a->dp;
  const uint16_t w = a->w;
  LB_LOG(INFO, "worker %u on lcore %u", w, rte_lcore_id());
  rte_rcu_qsbr_thread_online(dp.qsbr_, w);
  const cfg::IdleConfig idle = dp.config_.dataplane.idle;
  if (idle.mode == cfg::IdleMode::kPoll) {
    while (!dp.stop_.load(std::memory_order_relaxed)) dp.poll(w, rte_rdtsc());
  } else {
    uint32_t empty = 0, sleep_us = 1;
    while (!dp.stop_.load(std::memory_order_relaxed)) {
      if (dp.poll(w, rte_rdtsc()) != 0) {
        empty = 0;
        sleep_us = 1;
      } else if (++empty >= idle.after_empty_polls) {
        dp.idle_sleep(w, sleep_us);
        sleep_us = std::min(sleep_us * 2, idle.max_sleep_us);
      }
    }
  }
  rte_rcu_qsbr_thread_offline(dp.qsbr_, w);
  return 0;
}

void Dataplane::idle_sleep(uint16_t w, uint32_t us) {
  // Offline while asleep: the worker holds no pool between polls, so the control thread need not
  // wait for it to free an old pool or acknowledge an update (rte_rcu_qsbr_check skips offline
  // threads). Online again before the next poll reads the pool.
  rte_rcu_qsbr_thread_offline(qsbr_, w);
  rte_delay_us_sleep(us);
  rte_rcu_qsbr_thread_online(qsbr_, w);
  core::WorkerCounters& c = workers_[w].proc->counters();
  c.idle_sleeps.add();
  c.idle_sleep_us.add(us);
}

// Defined here, where poll() queues most packets through it.
inline void Dataplane::queue_tx(uint16_t w, rte_mbuf* m, const core::Frame& f, uint16_t port) {
  TxBuffer& t = workers_[w].tx[port];
  if (t.n == 2 * kBurst) flush(w);
  append_tx(t, m, f);
}

inline void Dataplane::append_tx(TxBuffer& t, rte_mbuf* m, const core::Frame& f) {
  m->data_off = f.off;
  m->data_len = f.len;
  m->pkt_len = f.len;
  t.m[t.n++] = m;
  t.bytes += f.len;
}

uint32_t Dataplane::poll(uint16_t w, core::Tick now) {
  Worker& wk = workers_[w];
  core::WorkerCounters& c = wk.proc->counters();
  // acquire pairs with the release in publish(): the pool is seen fully built.
  const core::Pool& pool = *current_.load(std::memory_order_acquire);
  // Bursts of every port are gathered into one batch of up to kBatch frames before they are
  // processed, so that the bucket prefetches of the whole batch are in flight together and the
  // first packets' lines have the other port's parsing to arrive behind.
  static_assert(kBatch <= core::Processor::kMaxBurst && kBatch >= kBurst);
  rte_mbuf* batch[kBatch];
  core::Frame frames[kBatch];
  uint16_t in_ports[kBatch];
  core::Verdict verdicts[kBatch];
  uint16_t m = 0;
  // Inline (called from three places): out of line, its loops reread the captures and `m`.
  auto process_batch = [&]() __attribute__((always_inline)) {
    wk.proc->process_burst(frames, in_ports, m, pool, now, verdicts);
    // Every TX buffer made to have room for the whole batch first, so that the loop appends
    // without a fullness check or a call that may flush (whose possible writes would make the
    // compiler reload the buffers' addresses for every packet).
    if (!tx_room(wk, m)) flush(w);
    TxBuffer* const tx = wk.tx.data();
    for (uint16_t i = 0; i < m; ++i) {
      if (verdicts[i].action == core::Action::kTx) [[likely]]
        append_tx(tx[verdicts[i].port], batch[i], frames[i]);
      else
        apply(w, batch[i], frames[i], verdicts[i], in_ports[i]);
    }
    m = 0;
  };
  uint32_t handled = 0;
  for (uint16_t p = 0; p < ports_.size(); ++p) {
    const uint16_t n = rte_eth_rx_burst(ports_[p].id, w, batch + m, kBurst);
    if (n == 0) continue;
    handled += n;
    uint64_t bytes = 0;
    const uint16_t end = static_cast<uint16_t>(m + n);
    // One pass: the frames' prefetches go out one by one as the loop reaches them, well before
    // process_burst parses the first. One loop for each setting of the port's checksum offload,
    // chosen once per burst rather than tested for every frame.
    auto receive = [&]<bool kRxIpCsum>() __attribute__((always_inline)) {
      // `first`: the frame's first byte, computed once for the prefetch and the frame.
      auto take = [&](rte_mbuf * mb, uint8_t * first, size_t at) __attribute__((always_inline)) {
        in_ports[at] = p;
        frames[at] =
            core::Frame::starting_at(first, mb->data_off, mb->data_len, mb->buf_len,
                                     kRxIpCsum && (mb->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) ==
                                                      RTE_MBUF_F_RX_IP_CKSUM_GOOD);
      };
      // Until a frame in several segments (never at MTU 1500 with 2 KiB buffers), every frame
      // stays where it is in `batch`: no copy, one index.
      size_t i = m;  // not a uint16_t: gcc kept one apart from the arrays' index
      for (; i < end; ++i) {
        rte_mbuf* mb = batch[i];
        if (mb->nb_segs != 1) [[unlikely]]
          break;
        uint8_t* first = rte_pktmbuf_mtod(mb, uint8_t*);
        rte_prefetch0(first);
        bytes += mb->pkt_len;
        take(mb, first, i);
      }
      // After one, the frames that follow move up over the ones dropped.
      m = static_cast<uint16_t>(i);
      for (; i < end; ++i) {
        rte_mbuf* mb = batch[i];
        uint8_t* first = rte_pktmbuf_mtod(mb, uint8_t*);
        rte_prefetch0(first);
        bytes += mb->pkt_len;
        if (mb->nb_segs != 1) {
          c.drop(core::DropReason::kMultiSegment);
          rte_pktmbuf_free(mb);
          continue;
        }
        batch[m] = mb;
        take(mb, first, m++);
      }
    };
    if (ports_[p].rx_ip_csum)
      receive.template operator()<true>();
    else
      receive.template operator()<false>();
    c.port[p].rx_packets.add(n);
    c.port[p].rx_bytes.add(bytes);
    if (m + kBurst > kBatch) process_batch();  // no room for another full burst
  }
  if (m != 0) process_batch();
  // Packets other workers received for flows this one owns: a burst through the same stages.
  // Their sender checked nb_segs and set m->port to the port index they came in on.
  const auto handed = static_cast<uint16_t>(
      rte_ring_sc_dequeue_burst(wk.handoff, reinterpret_cast<void**>(batch), kBurst, nullptr));
  if (handed) {
    c.handoff_in.add(handed);
    for (uint16_t i = 0; i < handed; ++i) {
      rte_mbuf* mb = batch[i];
      rte_prefetch0(rte_pktmbuf_mtod(mb, void*));
      in_ports[i] = mb->port;
      frames[i] = {static_cast<uint8_t*>(mb->buf_addr), mb->data_off, mb->data_len, mb->buf_len,
                   ports_[mb->port].rx_ip_csum &&
                       (mb->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD};
    }
    m = handed;
    process_batch();
    handled += handed;
  }
  rte_mbuf* burst[kBurst];
  unsigned n = rte_ring_sc_dequeue_burst(wk.ctl, reinterpret_cast<void**>(burst), kBurst, nullptr);
  for (unsigned i = 0; i < n; ++i) {
    TxBuffer& t = wk.tx[burst[i]->port];
    if (t.n == 2 * kBurst) flush(w);
    t.m[t.n++] = burst[i];
    t.bytes += burst[i]->pkt_len;
  }
  flush(w);
  wk.proc->age(now);
  // Last of the iteration, after everything that uses the pool: once the control thread sees
  // the ring empty it may reuse an id, which only the next iteration's pool can name.
  if (!rte_ring_empty(wk.forget)) forget_ids(wk);
  // relaxed: a request seen one iteration late costs nothing.
  if (wk.list->request.load(std::memory_order_relaxed) != wk.list->serving ||
      !wk.list->lister.done())
    walk_flows(wk, now);
  rte_rcu_qsbr_quiescent(qsbr_, w);
  return handled;
}

void Dataplane::walk_flows(Worker& wk, core::Tick now) {
  ListSlot& s = *wk.list;
  // acquire pairs with the release in list_flows(): the request is seen whole.
  const uint64_t request = s.request.load(std::memory_order_acquire);
  if (request != s.serving) {
    s.serving = request;
    s.lister.start(static_cast<uint32_t>(request & 0xffffffff));
  }
  if (!s.lister.step(wk.proc->flows(), now, kFlowListBudget)) return;
  s.now = now;
  s.answered.store(request >> 32, std::memory_order_release);  // pairs with list_flows()
}

Dataplane::FlowList Dataplane::list_flows(uint32_t max, uint32_t timeout_ms) {
  std::lock_guard lock(list_mu_);
  max = std::clamp<uint32_t>(max, 1, kMaxListed);
  const uint64_t seq = ++list_seq_;
  for (Worker& w : workers_) w.list->request.store(seq << 32 | max, std::memory_order_release);
  FlowList out;
  const uint64_t deadline = rte_get_timer_cycles() + rte_get_timer_hz() * timeout_ms / 1000;
  for (uint16_t w = 0; w < workers_.size(); ++w) {
    ListSlot& s = *workers_[w].list;
    while (s.answered.load(std::memory_order_acquire) != seq && rte_get_timer_cycles() < deadline)
      rte_delay_us_sleep(100);
    // A worker that is not polling is skipped; it will finish (or abandon) the walk later.
    if (s.answered.load(std::memory_order_acquire) != seq) continue;
    ++out.answered;
    out.total += s.lister.total();
    for (const core::Flow& f : s.lister.oldest()) out.flows.push_back({w, f, s.now});
  }
  // Oldest first over all workers (their clocks are one TSC), then keep `max`.
  std::stable_sort(out.flows.begin(), out.flows.end(),
                   [](const FlowSample& a, const FlowSample& b) {
                     return a.now - a.flow.created > b.now - b.flow.created;
                   });
  if (out.flows.size() > max) out.flows.resize(max);
  return out;
}

void Dataplane::apply(uint16_t w, rte_mbuf* m, const core::Frame& f, const core::Verdict& v,
                      uint16_t in_port) {
  Worker& wk = workers_[w];
  switch (v.action) {
    case core::Action::kTx:
      queue_tx(w, m, f, v.port);
      return;
    case core::Action::kHandoff: {
      m->port = in_port;  // the owner needs to know which of our ports it came in on
      TxBuffer& t = wk.to_owner[v.worker];
      if (t.n == 2 * kBurst) flush_handoff(wk, v.worker);
      t.m[t.n++] = m;
      return;
    }
    case core::Action::kDrop:
    case core::Action::kConsumed:
      break;
  }
  rte_pktmbuf_free(m);
}

void Dataplane::flush_handoff(Worker& wk, uint16_t owner) {
  TxBuffer& t = wk.to_owner[owner];
  const unsigned sent = rte_ring_mp_enqueue_burst(
      workers_[owner].handoff, reinterpret_cast<void* const*>(t.m), t.n, nullptr);
  core::WorkerCounters& c = wk.proc->counters();
  c.handoff_out.add(sent);
  if (sent < t.n) {
    c.drops[static_cast<size_t>(core::DropReason::kHandoffFull)].add(t.n - sent);
    rte_pktmbuf_free_bulk(t.m + sent, t.n - sent);
  }
  t.n = 0;
}

void Dataplane::flush(uint16_t w) {
  Worker& wk = workers_[w];
  for (uint16_t o = 0; o < wk.to_owner.size(); ++o)
    if (wk.to_owner[o].n != 0) flush_handoff(wk, o);
  core::WorkerCounters& c = wk.proc->counters();
  for (uint16_t p = 0; p < wk.tx.size(); ++p) {
    TxBuffer& t = wk.tx[p];
    if (t.n == 0) continue;
    const uint16_t sent = rte_eth_tx_burst(ports_[p].id, w, t.m, t.n);
    // Bytes summed as the buffer filled, less those not sent: the sent mbufs are the driver's
    // now, and not read again.
    uint64_t bytes = t.bytes;
    for (uint16_t i = sent; i < t.n; ++i) bytes -= t.m[i]->pkt_len;
    c.port[p].tx_packets.add(sent);
    c.port[p].tx_bytes.add(bytes);
    if (sent < t.n) {
      c.drops[static_cast<size_t>(core::DropReason::kTxFull)].add(t.n - sent);
      rte_pktmbuf_free_bulk(t.m + sent, t.n - sent);
    }
    t.n = 0;
    t.bytes = 0;
  }
}

void Dataplane::record_services(const PoolState& state) {
  if (flow_memory_) flow_memory_->record_services(state);
}

uint64_t Dataplane::publish(std::unique_ptr<core::Pool> pool) {
  const core::Pool* next = pool.get();
  for (uint32_t id = 0; id < core::kMaxBackends; ++id) {
    const auto bid = static_cast<core::BackendId>(id);
    backend_state_[id].store(next->state(bid), std::memory_order_relaxed);
  }
  // release pairs with the acquire in poll().
  current_.store(next, std::memory_order_release);
  const uint64_t token = rte_rcu_qsbr_start(qsbr_);
  retired_.emplace_back(token, std::move(owned_current_));
  owned_current_ = std::move(pool);
  // What this pool no longer names is on its way out once no worker holds an older one.
  for (core::BackendId id : builder_.take_unnamed_backends()) leaving_backends_[raw(id)] = {token};
  for (core::ServiceId id : builder_.take_unnamed_services()) leaving_services_[raw(id)] = {token};
  reclaim_pools();
  return token;
}

void Dataplane::reclaim_pools() {
  // Non-blocking: a pool is freed once every online worker has reported a quiescent state
  // after it was replaced (VPP frees too early; we wait for the token).
  std::erase_if(retired_,
                [this](const auto& r) { return rte_rcu_qsbr_check(qsbr_, r.first, false) == 1; });
}

bool Dataplane::quiescent(uint64_t token, uint32_t wait_us) const {
  const uint64_t until = rte_get_timer_cycles() + rte_get_timer_hz() * wait_us / 1000000;
  for (;;) {
    if (rte_rcu_qsbr_check(qsbr_, token, false) == 1) return true;
    if (rte_get_timer_cycles() >= until) return false;
    rte_pause();
  }
}

// -- Reusing ids ------------------------------------------------------------------------------
// A backend id is reused once nothing can name it: no pool a worker may still hold (the RCU
// token of the first publish without it), and no flow (its per-worker flows_active gauges sum
// to zero; after that no worker writes its counters or picks it, as no pool names it). Then every
// worker forgets its scheduler state for the id (forget ring), and reports a quiescent state, so
// that its last counter writes are visible here; what the counters hold then becomes the base
// the next owner's counts are measured from. A service id follows once none of its backend ids
// is left. A next-hop slot is retired when no taken backend id routes through it, and recycled
// one grace period later.

BackendTotals Dataplane::backend_totals(uint32_t id) const {
  BackendTotals t;
  for (const Worker& w : workers_) {
    const core::BackendCounters& c = w.proc->counters().backend[id];
    t.packets_in += c.packets_in.get();
    t.bytes_in += c.bytes_in.get();
    t.packets_out += c.packets_out.get();
    t.bytes_out += c.bytes_out.get();
    t.flows_total += c.flows_total.get();
    t.syn_rst += c.syn_rst.get();
    t.syn_timeout += c.syn_timeout.get();
    t.flows_rehashed += c.flows_rehashed.get();
  }
  return t;
}

uint64_t Dataplane::service_rehashed_total(core::ServiceId id) const {
  uint64_t n = 0;
  for (const Worker& w : workers_) n += w.proc->counters().service[raw(id)].flows_rehashed.get();
  return n;
}

BackendTotals Dataplane::backend_counts(uint32_t id, const BackendInfo& b) const {
  BackendTotals t = backend_totals(id);
  t.packets_in -= b.base.packets_in;
  t.bytes_in -= b.base.bytes_in;
  t.packets_out -= b.base.packets_out;
  t.bytes_out -= b.base.bytes_out;
  t.flows_total -= b.base.flows_total;
  t.syn_rst -= b.base.syn_rst;
  t.syn_timeout -= b.base.syn_timeout;
  t.flows_rehashed -= b.base.flows_rehashed;
  return t;
}

bool Dataplane::post_forget(uint64_t what) {
  // The control thread is the only producer: room seen here stays.
  for (const Worker& w : workers_)
    if (rte_ring_free_count(w.forget) == 0) return false;
  for (Worker& w : workers_)
    rte_ring_sp_enqueue(w.forget, reinterpret_cast<void*>(static_cast<uintptr_t>(what)));
  return true;
}

void Dataplane::forget_ids(Worker& wk) {
  void* items[32];
  const unsigned n = rte_ring_sc_dequeue_burst(wk.forget, items, 32, nullptr);
  for (unsigned i = 0; i < n; ++i) {
    const auto what = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(items[i]));
    const auto id = static_cast<uint32_t>(what);
    if (what >> 32)
      wk.proc->forget(static_cast<core::ServiceId>(id));
    else
      wk.proc->forget(static_cast<core::BackendId>(id));
  }
}

void Dataplane::reclaim_ids(core::Tick now) {
  const auto passed = [this](uint64_t token) {
    return rte_rcu_qsbr_check(qsbr_, token, false) == 1;
  };
  // One step of an id on its way out; true once it may be released. `ready()`: nothing but
  // pools names it any more (no flow; for a service, no backend id left).
  const auto step = [&](Leaving& l, uint64_t forget, auto&& ready) {
    if (!passed(l.token)) return false;
    if (l.step == 0) {
      if (ready() && post_forget(forget)) {
        l.token = rte_rcu_qsbr_start(qsbr_);
        l.step = 1;
      }
      return false;
    }
    for (const Worker& w : workers_)
      if (!rte_ring_empty(w.forget)) return false;  // not taken by every worker yet
    return true;
  };
  for (auto it = leaving_backends_.begin(); it != leaving_backends_.end();) {
    const uint32_t id = it->first;
    const auto no_flows = [&] {
      uint64_t flows = 0;
      for (const Worker& w : workers_) flows += w.proc->counters().backend[id].flows_active.get();
      return flows == 0;
    };
    if (builder_.named(static_cast<core::BackendId>(id))) {
      it = leaving_backends_.erase(it);  // back before it was reused: it keeps its id
    } else if (step(it->second, id, no_flows)) {
      const BackendTotals t = backend_totals(id);
      builder_.release(static_cast<core::BackendId>(id), t);
      if (channel_) channel_->released(id, t);
      it = leaving_backends_.erase(it);
    } else {
      ++it;
    }
  }
  const core::Tick linger = config_.dataplane.flows.tcp_closed_timeout * tsc_hz_;
  for (auto it = leaving_services_.begin(); it != leaving_services_.end();) {
    const auto id = static_cast<core::ServiceId>(it->first);
    Leaving& l = it->second;
    const auto lingered = [&] {
      if (builder_.has_backends(id)) return false;
      if (l.since == 0) l.since = now;
      return now - l.since >= linger;
    };
    if (builder_.named(id)) {
      it = leaving_services_.erase(it);
    } else if (step(l, uint64_t{1} << 32 | it->first, lingered)) {
      builder_.release(id, service_rehashed_total(id));
      it = leaving_services_.erase(it);
    } else {
      ++it;
    }
  }
  for (uint16_t slot : builder_.take_unused_neighbors()) {
    neighbors_.retire(slot);
    retiring_neighbors_.emplace_back(rte_rcu_qsbr_start(qsbr_), slot);
  }
  std::erase_if(retiring_neighbors_, [&](const auto& r) {
    if (!passed(r.first)) return false;
    neighbors_.recycle(r.second);
    return true;
  });
}

// -- What an operator needs to know after start ---------------------------------------------
// The control thread looks once a second at what the workers and the ports did, and logs the
// changes: links going up or down, next hops resolved, changing MAC or lost, drop counts rising
// sharply. Workers never log.

namespace {

std::string mac_str(uint64_t v) {
  char b[18];
  const core::MacAddr m = core::MacAddr::from_u64(v);
  std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m.b[0], m.b[1], m.b[2], m.b[3],
                m.b[4], m.b[5]);
  return b;
}

// A drop reason's rate that deserves a line: at least this many a second, and several times
// what it usually is (its rate smoothed over about ten seconds).
constexpr double kDropsWorthALine = 100;
constexpr double kDropsRise = 4;

}  // namespace

void Dataplane::watch(core::Tick now) {
  if (now < next_watch_) return;
  const bool first = next_watch_ == 0;
  next_watch_ = now + tsc_hz_;
  watch_links();
  watch_neighbors();
  if (!first) watch_drops(now);
  for (size_t r = 0; r < core::kDropReasonCount; ++r) {
    uint64_t n = 0;
    for (const Worker& w : workers_) n += w.proc->counters().drops[r].get();
    drops_seen_[r] = n;
  }
}

void Dataplane::watch_links() {
  link_up_.resize(ports_.size(), -1);
  for (size_t i = 0; i < ports_.size(); ++i) {
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(ports_[i].id, &link) != 0) continue;
    const int up = link.link_status == RTE_ETH_LINK_UP ? 1 : 0;
    if (up == link_up_[i]) continue;
    std::string text = up ? "link up" : "link down";
    if (up && link.link_speed != RTE_ETH_SPEED_NUM_NONE &&
        link.link_speed != RTE_ETH_SPEED_NUM_UNKNOWN)
      text += ", " + std::to_string(link.link_speed) + " Mbps";
    if (up) text += link.link_duplex == RTE_ETH_LINK_FULL_DUPLEX ? " full-duplex" : " half-duplex";
    if (up || link_up_[i] == -1)
      LB_LOG_LINK(INFO, "port %s: %s", ports_[i].name.c_str(), text.c_str());
    else
      LB_LOG_LINK(WARNING, "port %s: %s", ports_[i].name.c_str(), text.c_str());
    link_up_[i] = up;
  }
}

void Dataplane::watch_neighbors() {
  const uint16_t n = neighbors_.size();
  neighbor_seen_.resize(n, {0, 0});
  for (uint16_t slot = 0; slot < n; ++slot) {
    auto& [seen_key, seen_mac] = neighbor_seen_[slot];
    const uint64_t key =
        neighbors_.used(slot) ? uint64_t{neighbors_.ip(slot)} << 16 | neighbors_.port(slot) : 0;
    const std::optional<core::MacAddr> mac = neighbors_.lookup(slot);
    const uint64_t m = key != 0 && mac ? mac->to_u64() | uint64_t{1} << 48 : 0;
    if (key != seen_key) seen_mac = 0;  // another next hop in the slot, or none
    seen_key = key;
    if (m == seen_mac) continue;
    const std::string who = cfg::format_ipv4(neighbors_.ip(slot)) + " (port " +
                            ports_[neighbors_.port(slot)].name + ")";
    if (m != 0 && seen_mac == 0)
      LB_LOG_NEIGH(INFO, "next hop %s resolved: %s", who.c_str(), mac_str(m).c_str());
    else if (m != 0)
      LB_LOG_NEIGH(WARNING, "next hop %s changed MAC: %s -> %s", who.c_str(),
                   mac_str(seen_mac).c_str(), mac_str(m).c_str());
    else
      LB_LOG_NEIGH(WARNING,
                   "next hop %s lost: no ARP answer for %u s; its packets are dropped "
                   "(neighbor_unresolved) until it answers",
                   who.c_str(), kNeighborLostAfter);
    seen_mac = m;
  }
}

void Dataplane::watch_drops(core::Tick now) {
  for (size_t r = 0; r < core::kDropReasonCount; ++r) {
    uint64_t n = 0;
    for (const Worker& w : workers_) n += w.proc->counters().drops[r].get();
    const double rate = static_cast<double>(n - drops_seen_[r]);  // a second's worth
    const double usual = drop_rate_[r];
    drop_rate_[r] = usual + (rate - usual) / 10;
    if (rate < kDropsWorthALine || rate < kDropsRise * usual) continue;
    if (drop_logged_[r] != 0 && now - drop_logged_[r] < 10 * tsc_hz_) continue;  // rate limit
    drop_logged_[r] = now;
    LB_LOG_DROPS(WARNING, "%s drops rising: %.0f in the last second (usually %.0f/s), %llu in all",
                 std::string(core::kDropReasonNames[r]).c_str(), rate, usual,
                 static_cast<unsigned long long>(n));
  }
}

void Dataplane::log_summary() const {
  uint64_t rx = 0, tx = 0, created = 0, expired = 0, reused = 0, reset = 0, refused = 0;
  uint64_t active = 0;
  std::array<uint64_t, core::kDropReasonCount> drops{};
  for (const Worker& w : workers_) {
    const core::WorkerCounters& c = w.proc->counters();
    for (size_t p = 0; p < ports_.size(); ++p) {
      rx += c.port[p].rx_packets.get();
      tx += c.port[p].tx_packets.get();
    }
    created += c.flows_created.get();
    expired += c.flows_expired.get();
    reused += c.flows_reused.get();
    reset += c.flows_reset.get();
    refused += c.flows_refused.get();
    active += c.flows_active.get();
    for (size_t r = 0; r < drops.size(); ++r) drops[r] += c.drops[r].get();
  }
  uint64_t dropped = 0;
  std::string by_reason;
  for (size_t r = 0; r < drops.size(); ++r) {
    if (drops[r] == 0) continue;
    dropped += drops[r];
    by_reason += (by_reason.empty() ? "" : ", ") + std::string(core::kDropReasonNames[r]) + " " +
                 std::to_string(drops[r]);
  }
  const auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
  LB_LOG(INFO,
         "summary: %llu packets in, %llu out; flows: %llu created, %llu expired, %llu reused by a "
         "SYN, %llu reset, %llu refused, %llu still open; %llu dropped%s%s%s; pool updates: %llu "
         "applied, %llu refused",
         u(rx), u(tx), u(created), u(expired), u(reused), u(reset), u(refused), u(active),
         u(dropped), by_reason.empty() ? "" : " (", by_reason.c_str(), by_reason.empty() ? "" : ")",
         u(control_stats_.updates_applied.load()), u(control_stats_.updates_rejected.load()));
}

void Dataplane::control_tick(core::Tick now) {
  if (channel_) channel_->tick(now);
  reclaim_pools();
  reclaim_ids(now);
  watch(now);
  if (flow_memory_) flow_memory_->tick({now, boottime_ns()});
  if (now >= next_arp_) {
    // For 2 s after lbd starts or gets new next hops, an unresolved one is asked every 100 ms
    // instead of every second: a request sent before the port's link is up (a memif client at
    // start) is lost, and until one is answered every packet for that next hop is dropped as
    // neighbor_unresolved. After that, once a second (a next hop that is down is not flooded).
    if (neighbors_.added() != arp_adds_seen_) {
      arp_adds_seen_ = neighbors_.added();
      arp_fast_until_ = now + 2 * tsc_hz_;
    }
    const bool unresolved = send_arp_requests(now);
    next_arp_ = now + (unresolved && now < arp_fast_until_ ? tsc_hz_ / 10 : tsc_hz_);
  }
}

bool Dataplane::send_arp_requests(core::Tick now) {
  // Unresolved next hops are asked at every call; resolved ones are refreshed after 30 s.
  const uint64_t now_s = now / tsc_hz_;
  const uint16_t n = neighbors_.size();
  bool unresolved = false;
  for (uint16_t slot = 0; slot < n; ++slot) {
    if (!neighbors_.used(slot)) continue;
    const bool known = neighbors_.lookup(slot).has_value();
    unresolved |= !known;
    if (known && now_s >= neighbors_.confirmed(slot) + kNeighborLostAfter) {
      // It stopped answering: packets toward it are counted as unresolved rather than sent to
      // a MAC that may belong to nobody now (or to someone else).
      neighbors_.invalidate(slot);
      unresolved = true;
      continue;
    }
    if (known && now_s < neighbors_.confirmed(slot) + 30) continue;
    const uint16_t p = neighbors_.port(slot);
    rte_mbuf* m = rte_pktmbuf_alloc(mbufs_);
    if (!m) return true;
    const size_t len = core::build_arp_request(rte_pktmbuf_mtod(m, uint8_t*), ports_[p].mac,
                                               config_.dataplane.ports[p].ip, neighbors_.ip(slot));
    m->data_len = static_cast<uint16_t>(len);
    m->pkt_len = static_cast<uint32_t>(len);
    m->port = p;
    if (rte_ring_sp_enqueue(workers_[0].ctl, m) != 0) {
      rte_pktmbuf_free(m);
      return true;
    }
  }
  return unresolved;
}

}  // namespace lb::dp
