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
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

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
  state_ = state_from_config(config_);
  std::unique_ptr<core::Pool> first = builder_.build(0, state_);

  // Ports that reach backends get replies addressed to clients; the others get clients' packets.
  // With RSS on source fields on the latter and destination fields on the former, both
  // directions of a flow hash the client's ip:port and land on the owning worker.
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
  for (size_t i = 0; i < dc.ports.size(); ++i) {
    const bool client_only = !has_backends[i];
    const bool backend_only = has_backends[i] && !first->is_vip(dc.ports[i].ip);
    setup_port(i, dc.ports[i], client_only, backend_only && !client_only);
  }

  size_t qsbr_size = rte_rcu_qsbr_get_memsize(nworkers);
  qsbr_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("lb_qsbr", qsbr_size, RTE_CACHE_LINE_SIZE));
  if (!qsbr_ || rte_rcu_qsbr_init(qsbr_, nworkers) != 0)
    throw std::runtime_error("cannot set up RCU for " + std::to_string(nworkers) + " workers");

  core::ProcessorConfig pc;
  pc.workers = nworkers;
  pc.nports = static_cast<uint16_t>(ports_.size());
  for (size_t i = 0; i < ports_.size(); ++i)
    pc.ports[i] = {dc.ports[i].ip, prefix_mask(dc.ports[i].prefix_len), ports_[i].mac};
  pc.flow_capacity = dc.flows.capacity;
  pc.syn_timeout = dc.flows.tcp_syn_timeout * tsc_hz_;
  pc.established_timeout = dc.flows.tcp_established_timeout * tsc_hz_;
  pc.fin_timeout = dc.flows.tcp_fin_timeout * tsc_hz_;
  pc.closed_timeout = dc.flows.tcp_closed_timeout * tsc_hz_;
  pc.retry_syn_after = dc.retry.syn_timeout_ms * tsc_hz_ / 1000;
  pc.retry_on_rst = dc.retry.on_rst;
  pc.max_retries = static_cast<uint8_t>(dc.retry.max_retries);
  pc.rst_on_miss = dc.miss_policy == cfg::MissPolicy::kRst;
  pc.rst_on_no_backend = dc.no_backend_policy == cfg::NoBackendPolicy::kRst;
  pc.ticks_per_second = tsc_hz_;
  pc.reta_size = reta_size_;
  // A per-process random seed keeps remote parties from aiming hash collisions at a bucket.
  pc.hash_seed = (rte_rdtsc() * uint64_t{0x9e3779b97f4a7c15}) ^ static_cast<uint64_t>(getpid());

  flow_memory_ = std::make_unique<FlowMemory>(flows, flow_file_params(config_, reta_size_, tsc_hz_),
                                              pc.hash_seed, clock_now());
  workers_.resize(nworkers);
  for (uint16_t w = 0; w < nworkers; ++w) {
    Worker& wk = workers_[w];
    pc.worker = w;
    core::FlowTable table = flow_memory_->table(w, *first, builder_, clock_now());
    pc.hash_seed = table.seed();  // a re-attached table's index is keyed with its own
    wk.proc = std::make_unique<core::Processor>(pc, neighbors_, std::move(table));
    wk.sample = std::make_unique<SampleSlot>();
    const std::string hname = "lb_handoff_" + std::to_string(w);
    const std::string cname = "lb_ctl_" + std::to_string(w);
    wk.handoff = rte_ring_create(hname.c_str(), 4096, socket, RING_F_SC_DEQ);
    wk.ctl = rte_ring_create(cname.c_str(), 256, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!wk.handoff || !wk.ctl) throw dpdk_error("cannot create worker rings", rte_errno);
    wk.tx.resize(ports_.size());
    if (rte_rcu_qsbr_thread_register(qsbr_, w) != 0)
      throw std::runtime_error("cannot register worker with RCU");
  }

  owned_current_ = std::move(first);
  current_.store(owned_current_.get(), std::memory_order_release);
  for (uint32_t id = 0; id < core::kMaxBackends; ++id) {
    const auto bid = static_cast<core::BackendId>(id);
    backend_state_[id].store(owned_current_->active(bid)    ? 2
                             : owned_current_->serving(bid) ? 1
                                                            : 0,
                             std::memory_order_relaxed);
  }
  if (!shm_name.empty()) {
    segment_.emplace(shm::Segment::create(shm_name));
    rx_updates_.resize(16);
    LB_LOG(INFO, "pool channel %s ready (epoch %016llx)", shm_name.c_str(),
           static_cast<unsigned long long>(segment_->epoch()));
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
    const int rc = rte_dev_probe(pc.device.c_str());
    if (rc != 0 || rte_eth_dev_get_port_by_name(devname.c_str(), &id) != 0)
      throw dpdk_error("port '" + pc.name + "': cannot probe device '" + pc.device + "'", rc);
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
  while (!dp.stop_.load(std::memory_order_relaxed)) dp.poll(w, rte_rdtsc());
  rte_rcu_qsbr_thread_offline(dp.qsbr_, w);
  return 0;
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
  auto process_batch = [&] {
    wk.proc->process_burst(frames, in_ports, m, pool, now, verdicts);
    for (uint16_t i = 0; i < m; ++i) apply(w, batch[i], frames[i], verdicts[i], in_ports[i]);
    m = 0;
  };
  uint32_t handled = 0;
  for (uint16_t p = 0; p < ports_.size(); ++p) {
    const uint16_t n = rte_eth_rx_burst(ports_[p].id, w, batch + m, kBurst);
    if (n == 0) continue;
    handled += n;
    uint64_t bytes = 0;
    for (uint16_t i = m; i < m + n; ++i) {
      rte_prefetch0(rte_pktmbuf_mtod(batch[i], void*));
      bytes += batch[i]->pkt_len;
    }
    c.port[p].rx_packets.add(n);
    c.port[p].rx_bytes.add(bytes);
    const bool rx_ip_csum = ports_[p].rx_ip_csum;
    const uint16_t end = static_cast<uint16_t>(m + n);
    for (uint16_t i = m; i < end; ++i) {
      rte_mbuf* mb = batch[i];
      if (mb->nb_segs != 1) {  // not produced at MTU 1500 with 2 KiB buffers
        c.drop(core::DropReason::kMultiSegment);
        rte_pktmbuf_free(mb);
        continue;
      }
      batch[m] = mb;
      in_ports[m] = p;
      frames[m++] = {static_cast<uint8_t*>(mb->buf_addr), mb->data_off, mb->data_len, mb->buf_len,
                     rx_ip_csum && (mb->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) ==
                                       RTE_MBUF_F_RX_IP_CKSUM_GOOD};
    }
    if (m + kBurst > kBatch) process_batch();  // no room for another full burst
  }
  if (m != 0) process_batch();
  rte_mbuf* burst[kBurst];
  unsigned n =
      rte_ring_sc_dequeue_burst(wk.handoff, reinterpret_cast<void**>(burst), kBurst, nullptr);
  if (n) {
    c.handoff_in.add(n);
    for (unsigned i = 0; i < n; ++i) handle(w, burst[i], burst[i]->port, pool, now);
    handled += n;
  }
  n = rte_ring_sc_dequeue_burst(wk.ctl, reinterpret_cast<void**>(burst), kBurst, nullptr);
  for (unsigned i = 0; i < n; ++i) {
    TxBuffer& t = wk.tx[burst[i]->port];
    if (t.n == 2 * kBurst) flush(w);
    t.m[t.n++] = burst[i];
  }
  flush(w);
  wk.proc->age(now);
  // relaxed: a request seen one iteration late costs nothing.
  if (wk.sample->want.load(std::memory_order_relaxed) != 0) answer_sample(wk, now);
  rte_rcu_qsbr_quiescent(qsbr_, w);
  return handled;
}

void Dataplane::answer_sample(Worker& wk, core::Tick now) {
  SampleSlot& s = *wk.sample;
  // acquire pairs with the release in sample_flows(): the request is seen whole.
  const uint32_t want = std::min(s.want.load(std::memory_order_acquire), kMaxSample);
  uint32_t n = 0;
  wk.proc->flows().sample(now, s.cursor, want, 64 * kMaxSample,
                          [&](uint32_t, const core::Flow& f) { s.flows[n++] = f; });
  s.count = n;
  s.now = now;
  s.want.store(0, std::memory_order_relaxed);
  s.ready.store(1, std::memory_order_release);  // pairs with the acquire in sample_flows()
}

std::vector<Dataplane::FlowSample> Dataplane::sample_flows(uint32_t per_worker,
                                                           uint32_t timeout_ms) {
  std::lock_guard lock(sample_mu_);
  per_worker = std::clamp<uint32_t>(per_worker, 1, kMaxSample);
  for (Worker& w : workers_) {
    w.sample->ready.store(0, std::memory_order_relaxed);
    w.sample->want.store(per_worker, std::memory_order_release);
  }
  std::vector<FlowSample> out;
  const uint64_t deadline = rte_get_timer_cycles() + rte_get_timer_hz() * timeout_ms / 1000;
  for (uint16_t w = 0; w < workers_.size(); ++w) {
    SampleSlot& s = *workers_[w].sample;
    while (s.ready.load(std::memory_order_acquire) == 0 && rte_get_timer_cycles() < deadline)
      rte_delay_us_sleep(100);
    if (s.ready.load(std::memory_order_acquire) == 0) {
      s.want.store(0, std::memory_order_relaxed);  // a worker that is not polling: skip it
      continue;
    }
    for (uint32_t i = 0; i < s.count; ++i) out.push_back({w, s.flows[i], s.now});
  }
  return out;
}

void Dataplane::handle(uint16_t w, rte_mbuf* m, uint16_t in_port, const core::Pool& pool,
                       core::Tick now) {
  if (m->nb_segs != 1) {
    workers_[w].proc->counters().drop(core::DropReason::kMultiSegment);
    rte_pktmbuf_free(m);
    return;
  }
  core::Frame f{static_cast<uint8_t*>(m->buf_addr), m->data_off, m->data_len, m->buf_len};
  apply(w, m, f, workers_[w].proc->process(f, in_port, pool, now), in_port);
}

void Dataplane::apply(uint16_t w, rte_mbuf* m, const core::Frame& f, const core::Verdict& v,
                      uint16_t in_port) {
  Worker& wk = workers_[w];
  switch (v.action) {
    case core::Action::kTx: {
      m->data_off = f.off;
      m->data_len = f.len;
      m->pkt_len = f.len;
      TxBuffer& t = wk.tx[v.port];
      if (t.n == 2 * kBurst) flush(w);
      t.m[t.n++] = m;
      return;
    }
    case core::Action::kHandoff:
      m->port = in_port;  // the owner needs to know which of our ports it came in on
      if (rte_ring_mp_enqueue(workers_[v.worker].handoff, m) == 0) {
        wk.proc->counters().handoff_out.add();
        return;
      }
      wk.proc->counters().drop(core::DropReason::kHandoffFull);
      break;
    case core::Action::kDrop:
    case core::Action::kConsumed:
      break;
  }
  rte_pktmbuf_free(m);
}

void Dataplane::flush(uint16_t w) {
  Worker& wk = workers_[w];
  core::WorkerCounters& c = wk.proc->counters();
  for (uint16_t p = 0; p < wk.tx.size(); ++p) {
    TxBuffer& t = wk.tx[p];
    if (t.n == 0) continue;
    const uint16_t sent = rte_eth_tx_burst(ports_[p].id, w, t.m, t.n);
    uint64_t bytes = 0;
    for (uint16_t i = 0; i < sent; ++i) bytes += t.m[i]->pkt_len;
    c.port[p].tx_packets.add(sent);
    c.port[p].tx_bytes.add(bytes);
    if (sent < t.n) {
      c.drops[static_cast<size_t>(core::DropReason::kTxFull)].add(t.n - sent);
      rte_pktmbuf_free_bulk(t.m + sent, t.n - sent);
    }
    t.n = 0;
  }
}

uint64_t Dataplane::publish(std::unique_ptr<core::Pool> pool) {
  const core::Pool* next = pool.get();
  for (uint32_t id = 0; id < core::kMaxBackends; ++id) {
    const auto bid = static_cast<core::BackendId>(id);
    backend_state_[id].store(next->active(bid)    ? 2
                             : next->serving(bid) ? 1
                                                  : 0,
                             std::memory_order_relaxed);
  }
  // release pairs with the acquire in poll().
  current_.store(next, std::memory_order_release);
  const uint64_t token = rte_rcu_qsbr_start(qsbr_);
  retired_.emplace_back(token, std::move(owned_current_));
  owned_current_ = std::move(pool);
  reclaim_pools();
  return token;
}

void Dataplane::reclaim_pools() {
  // Non-blocking: a pool is freed once every online worker has reported a quiescent state
  // after it was replaced (VPP frees too early; we wait for the token).
  std::erase_if(retired_,
                [this](const auto& r) { return rte_rcu_qsbr_check(qsbr_, r.first, false) == 1; });
  if (pending_ack_ && rte_rcu_qsbr_check(qsbr_, pending_ack_->first, false) == 1) {
    // release pairs with healthd's/lbctl's acquire: every worker now uses that generation.
    segment_->header().applied_generation.store(pending_ack_->second, std::memory_order_release);
    pending_ack_.reset();
  }
}

void Dataplane::receive_updates() {
  shm::Header& h = segment_->header();
  std::unique_ptr<core::Pool> built;
  uint64_t last = 0;
  for (;;) {
    const unsigned n =
        segment_->receive(rx_updates_.data(), static_cast<unsigned>(rx_updates_.size()));
    if (n == 0) break;
    for (unsigned i = 0; i < n; ++i) {
      const shm::ServiceUpdate& u = rx_updates_[i];
      h.received_generation.store(u.generation, std::memory_order_release);
      // Each update is tried on a copy: a bad one is refused whole and the rest still apply.
      PoolState next = state_;
      std::string why = apply_update(next, u);
      if (why.empty()) {
        try {
          built = builder_.build(u.generation, next);
          state_ = std::move(next);
          last = u.generation;
          control_stats_.updates_applied.fetch_add(1, std::memory_order_relaxed);
          continue;
        } catch (const std::exception& e) {
          why = e.what();
        }
      }
      control_stats_.updates_rejected.fetch_add(1, std::memory_order_relaxed);
      h.rejected_generation.store(u.generation, std::memory_order_release);
      LB_LOG(ERR, "pool update %llu refused: %s", static_cast<unsigned long long>(u.generation),
             why.c_str());
    }
  }
  if (built) {
    const uint64_t token = publish(std::move(built));
    pending_ack_ = {token, last};
    // Workers report a quiescent state every loop iteration (microseconds): wait for them a
    // little so the acknowledgement is not a whole control tick late. Bounded: a stalled
    // worker delays only the ack, which the next ticks retry.
    const uint64_t until = rte_get_timer_cycles() + rte_get_timer_hz() / 5000;  // 200 us
    while (rte_rcu_qsbr_check(qsbr_, token, false) != 1 && rte_get_timer_cycles() < until)
      rte_pause();
    reclaim_pools();
  } else if (!pending_ack_) {
    // Nothing to wait for: what was received is all applied (or refused).
    const uint64_t r = h.received_generation.load(std::memory_order_relaxed);
    if (h.applied_generation.load(std::memory_order_relaxed) < r)
      h.applied_generation.store(r, std::memory_order_release);
  }
}

void Dataplane::post_passive_events() {
  const std::vector<BackendInfo> backends = builder_.backends();
  const std::vector<std::string> services = builder_.service_names();
  last_syn_rst_.resize(backends.size(), 0);
  last_syn_timeout_.resize(backends.size(), 0);
  for (uint32_t id = 0; id < backends.size(); ++id) {
    uint64_t rst = 0;
    uint64_t timeout = 0;
    for (const Worker& w : workers_) {
      rst += w.proc->counters().backend[id].syn_rst.get();
      timeout += w.proc->counters().backend[id].syn_timeout.get();
    }
    const std::pair<shm::EventType, uint64_t> deltas[] = {
        {shm::EventType::kSynRst, rst - last_syn_rst_[id]},
        {shm::EventType::kSynTimeout, timeout - last_syn_timeout_[id]}};
    last_syn_rst_[id] = rst;
    last_syn_timeout_[id] = timeout;
    for (const auto& [type, delta] : deltas) {
      if (delta == 0) continue;
      shm::Event e{};
      e.type = static_cast<uint32_t>(type);
      e.count = static_cast<uint32_t>(std::min<uint64_t>(delta, UINT32_MAX));
      e.ip = backends[id].ip;
      e.port = backends[id].port;
      const std::string& name = services[core::raw(backends[id].service)];
      std::memcpy(e.service, name.data(), std::min<size_t>(name.size(), shm::kNameLen - 1));
      if (segment_->post(e))
        control_stats_.events_posted.fetch_add(1, std::memory_order_relaxed);
      else
        control_stats_.events_lost.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void Dataplane::control_tick(core::Tick now) {
  if (segment_) {
    segment_->header().lbd_heartbeat_ms.store(now * 1000 / tsc_hz_, std::memory_order_relaxed);
    receive_updates();
    if (now >= next_events_) {
      next_events_ = now + tsc_hz_ / 10;
      post_passive_events();
    }
  }
  reclaim_pools();
  if (flow_memory_) flow_memory_->tick({now, boottime_ns()});
  if (now >= next_arp_) {
    next_arp_ = now + tsc_hz_;
    send_arp_requests(now);
  }
}

void Dataplane::send_arp_requests(core::Tick now) {
  // Unresolved next hops are asked every second; resolved ones are refreshed after 30 s.
  const uint64_t now_s = now / tsc_hz_;
  const uint16_t n = neighbors_.size();
  for (uint16_t slot = 0; slot < n; ++slot) {
    const bool known = neighbors_.lookup(slot).has_value();
    if (known && now_s < neighbors_.confirmed(slot) + 30) continue;
    const uint16_t p = neighbors_.port(slot);
    rte_mbuf* m = rte_pktmbuf_alloc(mbufs_);
    if (!m) return;
    const size_t len = core::build_arp_request(rte_pktmbuf_mtod(m, uint8_t*), ports_[p].mac,
                                               config_.dataplane.ports[p].ip, neighbors_.ip(slot));
    m->data_len = static_cast<uint16_t>(len);
    m->pkt_len = static_cast<uint32_t>(len);
    m->port = p;
    if (rte_ring_sp_enqueue(workers_[0].ctl, m) != 0) {
      rte_pktmbuf_free(m);
      return;
    }
  }
}

}  // namespace lb::dp
