// lbd's worker path alone, on one core, with full bursts: the cost per packet of
// Dataplane::poll (RX burst, parse, flow lookup, NAT, TX burst, aging) without a second process,
// cross-core traffic or a generator competing for the CPU. The harness fills the RX rings of two
// net_ring ports with one burst each, calls poll() once, and takes what came out of the TX rings;
// only poll() is timed (and, under callgrind, only poll() is counted: see bench/instructions.sh).
// --mode io replaces poll() by what testpmd --forward-mode=io does on the same ports; --mode syn
// feeds lbd SYNs of new flows only (32 new flows per poll, backends silent).
//
// Flows are visited in a random order by default (as independent clients would arrive); --order
// seq visits them in creation order, which lays their records out sequentially in memory.
//
// SYN mode's default table has room for every flow the run opens, twice over, and an embryonic
// budget (flows.syn_budget) of 100 %: every flow stays embryonic (the backends are silent), so
// with lbd's default budget (50 %) the SYN pressure mode (past half the budget) and then the
// eviction of the oldest embryonic flow would be what the run measures, as --mode flood does.
// --syn-budget PCT sets flows.syn_budget (with --capacity N: a table that fills the budget, the
// cost of a SYN in a SYN flood's steady state); SYN mode prints what became of the flows.
//
// --capacity N --syn-timeout S (SYN mode): a table of N flows whose SYN_SENT flows expire after
// S seconds, so that once the run is longer than S aging erases a flow for every one created
// (the steady state of a busy balancer). With --capacity, flows.syn_budget is lbd's default
// unless --syn-budget says otherwise.
//
// --flow-dir DIR keeps the flow table in a file in DIR (/dev/hugepages, /dev/shm), as lbd does
// by default (dataplane/flow_memory.h), instead of anonymous memory; the file is removed at exit.
//
// usage: lbd_worker_cost [--mode lbd|syn|io] [--flows N] [--bursts B] [--size BYTES]
//                        [--dir both|c2b] [--order random|seq] [--capacity N] [--syn-timeout S]
//                        [--flow-dir DIR] [--forward dnat|tunnel] [--syn-budget PCT]
// --forward tunnel (with --dir c2b: the backends answer clients directly) wraps in IPIP.
//
// --workers 2 --owner W (mode lbd): two workers, every packet arriving at worker 0's queue, for
// flows owned by worker W: with --owner 1 worker 0 hands each packet to worker 1 over the handoff
// ring (a NIC that cannot steer by the flow's client side; "conn redirect" in full-NAT), so the
// difference from --owner 0 is the handoff's cost per packet. Both workers' polls are timed.
//
// --mode flood: established flows under a spoofed SYN flood (docs/benchmarking.md, "SYN
// floods"). Each poll carries --est N data segments of established flows per direction; the
// second half of the run adds --syn N SYNs of new tuples per poll on the client side, in a table
// of --capacity flows (default 4 x --flows) that the flood fills, under --policy drop-new |
// evict-embryonic | stateless (stateless: a maglev service, needs --forward tunnel --dir c2b).
// Printed: established packets forwarded per million cycles before and during the flood, their
// ratio, established packets lost, and what became of the SYNs.

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_frames.h"
#include "dataplane.h"
#include "lb_config.h"
#include "rss.h"

namespace {

constexpr uint16_t kBurst = 32;
using namespace lb::bench;
using lb::core::load_be32;
using lb::core::store_be16;
const uint8_t kLbdMac[2][6] = {{0x02, 0, 0, 0, 2, 1}, {0x02, 0, 0, 0, 2, 2}};
const uint8_t kPeerMac[2][6] = {{0x02, 0, 0, 0, 1, 1}, {0x02, 0, 0, 0, 1, 2}};

// Ethernet/IPv4/TCP into an mbuf; lbd checks the IPv4 checksum and updates the TCP one.
void build(rte_mbuf* m, uint16_t len, const uint8_t* dmac, const uint8_t* smac, uint32_t sip,
           uint16_t sport, uint32_t dip, uint16_t dport, uint8_t flags) {
  write_tcp_frame(rte_pktmbuf_mtod(m, uint8_t*), len, dmac, smac, sip, sport, dip, dport, flags);
  m->data_len = len;
  m->pkt_len = len;
}

// A client's SYN as hosts send it: 74 bytes, a 40-byte TCP header (MSS, SACK permitted,
// timestamps, window scale) and no payload. lbd keeps such a SYN for a replay to another backend
// (its SYN cache), which a SYN carrying data skips, so the SYN modes pay that copy as real SYNs do.
constexpr uint16_t kSynLen = 74;
void build_syn(rte_mbuf* m, const uint8_t* dmac, const uint8_t* smac, uint32_t sip, uint16_t sport,
               uint32_t dip, uint16_t dport) {
  // Linux's order: MSS 1460, SACK permitted, timestamps (value 1, echo 0), NOP, window scale 7
  static constexpr uint8_t kOptions[20] = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0,
                                           0, 1, 0,    0,    0, 0, 1, 3,  3, 7};
  build(m, kSynLen, dmac, smac, sip, sport, dip, dport, 0x02);
  uint8_t* t = rte_pktmbuf_mtod(m, uint8_t*) + 14 + 20;
  t[12] = 0xa0;  // data offset: 10 words
  std::memcpy(t + 20, kOptions, sizeof kOptions);
}

struct Rig {
  rte_mempool* pool = nullptr;
  uint16_t queues = 1;   // one per worker
  rte_ring* rx[2][2]{};  // harness -> port, per queue (the harness only fills queue 0)
  rte_ring* tx[2][2]{};  // port -> harness, per queue
  uint16_t port[2]{};
};

rte_mbuf* alloc(rte_mempool* pool) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (!m) throw std::runtime_error("mbuf pool exhausted");
  return m;
}

void inject(rte_ring* r, rte_mbuf** m, unsigned n) {
  if (rte_ring_sp_enqueue_bulk(r, reinterpret_cast<void**>(m), n, nullptr) != n)
    throw std::runtime_error("RX ring full");
}

// What port p transmitted, from every queue.
unsigned take(const Rig& r, int p, rte_mbuf** m, unsigned max) {
  unsigned n = 0;
  for (uint16_t q = 0; q < r.queues && n < max; ++q)
    n += rte_ring_sc_dequeue_burst(r.tx[p][q], reinterpret_cast<void**>(m + n), max - n, nullptr);
  return n;
}

// What testpmd --forward-mode=io does per iteration: RX a burst on each port, TX it on the
// other, free what TX refused.
__attribute__((noinline)) uint32_t io_poll(const uint16_t* port) {
  rte_mbuf* b[kBurst];
  uint32_t n_all = 0;
  for (int p = 0; p < 2; ++p) {
    const uint16_t n = rte_eth_rx_burst(port[p], 0, b, kBurst);
    if (!n) continue;
    const uint16_t sent = rte_eth_tx_burst(port[p ^ 1], 0, b, n);
    if (sent < n) rte_pktmbuf_free_bulk(b + sent, n - sent);
    n_all += n;
  }
  return n_all;
}

// A field of /proc/self/status ("VmRSS") or /proc/self/smaps_rollup ("AnonHugePages"), KiB.
long proc_kib(const char* file, const char* field) {
  FILE* f = std::fopen(file, "r");
  if (!f) return -1;
  char line[256];
  long v = -1;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, field, n) == 0 && line[n] == ':' &&
        std::sscanf(line + n + 1, "%ld", &v) == 1)
      break;
  std::fclose(f);
  return v;
}
long rss_kib() {
  return proc_kib("/proc/self/status", "VmRSS");
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "lbd", dir = "both", order = "random", forward = "dnat";
  uint32_t flows = 1000, bursts = 100000;
  uint32_t capacity_arg = 0;  // 0: room for every flow the run opens
  uint32_t syn_timeout = 600;
  uint32_t syn_budget = 0;  // 0: 100 in SYN mode without --capacity, else lbd's default
  std::string flow_dir;
  uint16_t size = 64;
  std::string policy = "evict-embryonic";
  uint32_t est_per_poll = 8, syn_per_poll = 24;
  uint16_t workers = 1, owner = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "lbd_worker_cost: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--mode")
      mode = next();
    else if (a == "--flows")
      flows = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--bursts")
      bursts = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--size")
      size = static_cast<uint16_t>(std::stoul(next()));
    else if (a == "--dir")
      dir = next();
    else if (a == "--order")
      order = next();
    else if (a == "--capacity")
      capacity_arg = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--syn-timeout")
      syn_timeout = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--syn-budget")
      syn_budget = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--flow-dir")
      flow_dir = next();
    else if (a == "--forward")
      forward = next();
    else if (a == "--policy")
      policy = next();
    else if (a == "--est")
      est_per_poll = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--syn")
      syn_per_poll = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--workers")
      workers = static_cast<uint16_t>(std::stoul(next()));
    else if (a == "--owner")
      owner = static_cast<uint16_t>(std::stoul(next()));
    else {
      std::fprintf(stderr,
                   "usage: lbd_worker_cost [--mode lbd|syn|io|flood] [--flows N] [--bursts B] "
                   "[--size 60..1514] [--dir both|c2b] [--order random|seq] [--capacity N] "
                   "[--syn-timeout S] [--syn-budget PCT] [--flow-dir DIR] [--forward dnat|tunnel] "
                   "[--policy drop-new|evict-embryonic|stateless] [--est N] [--syn N] "
                   "[--workers 1|2 --owner 0|1]\n");
      return 2;
    }
  }
  const bool flood = mode == "flood";
  if ((mode != "lbd" && mode != "io" && mode != "syn" && !flood) || flows == 0 || size < 60 ||
      size > 1514 || (dir != "both" && dir != "c2b") || (order != "random" && order != "seq") ||
      (forward != "dnat" && forward != "tunnel") ||
      (forward == "tunnel" && dir == "both" && (mode == "lbd" || flood)) ||
      (policy != "drop-new" && policy != "evict-embryonic" && policy != "stateless") ||
      (flood && policy == "stateless" && forward != "tunnel") ||
      (flood && (est_per_poll == 0 || est_per_poll + syn_per_poll > kBurst)) || workers < 1 ||
      workers > 2 || owner >= workers || (workers > 1 && mode != "lbd") || syn_budget > 100) {
    std::fprintf(stderr, "lbd_worker_cost: bad arguments\n");
    return 2;
  }
  const bool syn = mode == "syn";
  const bool both = dir == "both" && !syn;
  const std::string prefix = "lbdwc" + std::to_string(getpid());
  std::vector<std::string> eal = {"lbd_worker_cost",
                                  "-l",
                                  "0",
                                  "--no-pci",
                                  "--no-huge",
                                  "-m",
                                  "1024",
                                  "--no-telemetry",
                                  "--file-prefix",
                                  prefix,
                                  "--log-level=lb:warning"};
  std::vector<char*> eargv;
  for (std::string& s : eal) eargv.push_back(s.data());
  eargv.push_back(nullptr);  // argv[argc] is NULL, as getopt expects
  if (rte_eal_init(static_cast<int>(eal.size()), eargv.data()) < 0) {
    std::fprintf(stderr, "lbd_worker_cost: EAL init failed\n");
    return 1;
  }
  int rc = 0;
  try {
    Rig r;
    r.pool = rte_pktmbuf_pool_create("wc_pool", 32767, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                     static_cast<int>(rte_socket_id()));
    if (!r.pool) throw std::runtime_error("cannot create the mbuf pool");
    const char* names[2] = {"wc_c", "wc_b"};
    r.queues = workers;
    for (int p = 0; p < 2; ++p) {
      for (uint16_t q = 0; q < r.queues; ++q) {
        const std::string base = std::string(names[p]) + "_" + std::to_string(q);
        r.rx[p][q] =
            rte_ring_create((base + "_rx").c_str(), 4096, static_cast<int>(rte_socket_id()),
                            RING_F_SP_ENQ | RING_F_SC_DEQ);
        r.tx[p][q] =
            rte_ring_create((base + "_tx").c_str(), 4096, static_cast<int>(rte_socket_id()),
                            RING_F_SP_ENQ | RING_F_SC_DEQ);
        if (!r.rx[p][q] || !r.tx[p][q]) throw std::runtime_error("cannot create rings");
      }
      const int id =
          rte_eth_from_rings(names[p], r.rx[p], r.queues, r.tx[p], r.queues, rte_socket_id());
      if (id < 0) throw std::runtime_error("cannot create ring ports");
      r.port[p] = static_cast<uint16_t>(id);
      rte_ether_addr a;
      std::memcpy(a.addr_bytes, kLbdMac[p], 6);
      if (rte_eth_dev_default_mac_addr_set(r.port[p], &a) != 0)
        rte_eth_dev_mac_addr_add(r.port[p], &a, 0);
    }
    // SYN mode opens flows + 32 per burst: room for all of them twice over, and all of the
    // table for embryonic flows, so that neither the SYN budget nor the pressure mode (past half
    // of it) is reached and nothing expires meanwhile; unless --capacity and a short
    // --syn-timeout ask for the steady state where every new flow meets an expired one (aging
    // erases as many flows as SYNs create), or --syn-budget for a budget that fills.
    const uint32_t opened = syn ? flows + bursts * kBurst : flows;
    const uint32_t capacity = capacity_arg ? capacity_arg
                              : flood      ? std::max<uint32_t>(4 * flows, 1024)
                              : syn        ? 2 * opened + 1024
                                           : opened + opened / 16 + 1024;
    if (syn && syn_budget == 0 && capacity_arg == 0) syn_budget = 100;
    const std::string budget_key =
        syn_budget ? "; syn_budget = " + std::to_string(syn_budget) : std::string();
    const bool stateless = flood && policy == "stateless";
    const std::string flood_flows =
        flood && !stateless ? "; syn_flood_policy = \"" + policy + "\"" : std::string();
    const std::string flood_service = stateless ? "  syn_flood_policy = \"stateless\";\n" : "";
    const std::string cfg =
        "dataplane: { workers = " + std::to_string(workers) +
        "; mbufs = 16383;\n"
        "  ports = ( { name = \"client\"; device = \"net_ring_wc_c\"; ip = \"10.10.0.1/24\"; },\n"
        "            { name = \"backend\"; device = \"net_ring_wc_b\"; ip = \"10.20.0.1/24\"; } "
        ");\n"
        "  flows = { capacity = " +
        std::to_string(capacity) + "; tcp_syn_timeout = " + std::to_string(syn_timeout) +
        budget_key + flood_flows + "; };\n};\n" +
        "services = ( { name = \"web\"; vip = \"10.10.0.100\"; port = 80; scheduler = \"" +
        (stateless ? "maglev" : "rr") + "\";\n" + flood_service + "  forward = \"" + forward +
        "\";\n"
        "  backends = ( { address = \"10.20.0.11\"; port = 8080; },\n"
        "               { address = \"10.20.0.12\"; port = 8080; },\n"
        "               { address = \"10.20.0.13\"; port = 8080; } ); } );\n";
    std::unique_ptr<lb::dp::Dataplane> dp;
    uint64_t handled_all = 0;  // packets poll() handled over the whole run, setup included
    auto poll_once = [&]() {
      handled_all += dp->poll(0, rte_rdtsc());
      for (uint32_t n = 1; workers > 1 && n != 0;) handled_all += n = dp->poll(1, rte_rdtsc());
    };
    // The tuple of flow f: with --workers 2, the f-th tuple whose owner is --owner (every
    // packet arrives at worker 0's queue, so owner 1 makes worker 0 hand each one over).
    std::vector<uint32_t> tuple(flows);
    std::vector<uint32_t> backend(flows, 0x0a14000b);  // io: every reply from 10.20.0.11
    rte_mbuf* in[kBurst];
    rte_mbuf* out[4 * kBurst];
    if (mode == "lbd" || syn || flood) {
      lb::dp::FlowMemoryOptions fm;
      if (!flow_dir.empty()) fm = {prefix, flow_dir, true};
      dp = std::make_unique<lb::dp::Dataplane>(lb::cfg::parse_config(cfg, "worker_cost.cfg"),
                                               std::string(), fm);
      // lbd asks for its backends' MACs: answer every request from the backend side.
      dp->control_tick(rte_rdtsc());
      for (int round = 0; round < 4; ++round) {
        poll_once();
        unsigned n = take(r, 1, out, 4 * kBurst);
        unsigned k = 0;
        for (unsigned i = 0; i < n; ++i) {
          const uint8_t* f = rte_pktmbuf_mtod(out[i], const uint8_t*);
          if (out[i]->data_len >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 1) {
            rte_mbuf* m = alloc(r.pool);
            uint8_t* a = rte_pktmbuf_mtod(m, uint8_t*);
            std::memset(a, 0, 60);
            std::memcpy(a, f + 6, 6);
            std::memcpy(a + 6, kPeerMac[1], 6);
            store_be16(a + 12, 0x0806);
            store_be16(a + 14, 1);
            store_be16(a + 16, 0x0800);
            a[18] = 6;
            a[19] = 4;
            store_be16(a + 20, 2);
            std::memcpy(a + 22, kPeerMac[1], 6);
            std::memcpy(a + 28, f + 38, 4);
            std::memcpy(a + 32, f + 22, 6);
            std::memcpy(a + 38, f + 28, 4);
            m->data_len = 60;
            m->pkt_len = 60;
            in[k++] = m;
          }
        }
        rte_pktmbuf_free_bulk(out, n);
        if (k) inject(r.rx[1][0], in, k);
      }
      poll_once();
      for (uint32_t f = 0, t = 0; f < flows; ++t)
        if (lb::core::flow_owner(client_ip(t), client_port(t), workers, dp->reta_size()) == owner)
          tuple[f++] = t;
      // Open every flow: SYN, SYN-ACK, ACK through poll(), a burst at a time.
      for (uint32_t base = 0; base < flows; base += kBurst) {
        const unsigned n = std::min<uint32_t>(kBurst, flows - base);
        for (unsigned i = 0; i < n; ++i) {
          in[i] = alloc(r.pool);
          build(in[i], 60, kLbdMac[0], kPeerMac[0], client_ip(tuple[base + i]),
                client_port(tuple[base + i]), kVip, kVport, 0x02);
        }
        inject(r.rx[0][0], in, n);
        poll_once();
        unsigned got = take(r, 1, out, 4 * kBurst);
        if (got != n) throw std::runtime_error("SYNs did not all reach the backend side");
        for (unsigned i = 0; i < n; ++i) {
          const uint8_t* f = rte_pktmbuf_mtod(out[i], const uint8_t*);
          backend[base + i] = load_be32(f + 30);
          in[i] = alloc(r.pool);
          build(in[i], 60, kLbdMac[1], kPeerMac[1], backend[base + i], 8080,
                client_ip(tuple[base + i]), client_port(tuple[base + i]), 0x12);
        }
        rte_pktmbuf_free_bulk(out, got);
        inject(r.rx[1][0], in, n);
        poll_once();
        got = take(r, 0, out, 4 * kBurst);
        if (got != n) throw std::runtime_error("SYN-ACKs did not all reach the client side");
        rte_pktmbuf_free_bulk(out, got);
        for (unsigned i = 0; i < n; ++i) {
          in[i] = alloc(r.pool);
          build(in[i], 60, kLbdMac[0], kPeerMac[0], client_ip(tuple[base + i]),
                client_port(tuple[base + i]), kVip, kVport, 0x10);
        }
        inject(r.rx[0][0], in, n);
        poll_once();
        got = take(r, 1, out, 4 * kBurst);
        rte_pktmbuf_free_bulk(out, got);
      }
    } else {
      for (int p = 0; p < 2; ++p) {
        rte_eth_conf conf{};
        if (rte_eth_dev_configure(r.port[p], 1, 1, &conf) != 0 ||
            rte_eth_rx_queue_setup(r.port[p], 0, 1024, rte_socket_id(), nullptr, r.pool) != 0 ||
            rte_eth_tx_queue_setup(r.port[p], 0, 1024, rte_socket_id(), nullptr) != 0 ||
            rte_eth_dev_start(r.port[p]) != 0)
          throw std::runtime_error("cannot start the ring ports");
      }
    }
    const long rss_after_setup = rss_kib();

    // The measurement: one burst per direction in, one poll, everything out.
    uint64_t cycles = 0, packets = 0, out_packets = 0, polls = 0;
    // Per poll, for the median: a poll preempted by another process (this machine is shared)
    // costs milliseconds and would drag a mean far off.
    std::vector<double> per_poll;
    per_poll.reserve(bursts);
    std::vector<uint32_t> visit(flows);
    std::iota(visit.begin(), visit.end(), 0u);
    if (order == "random") std::shuffle(visit.begin(), visit.end(), std::mt19937(12345));
    uint32_t next = 0;
    uint32_t fresh = flows;  // SYN mode: the next tuple never used
    // Flood mode, per phase (0: established only, 1: with the flood): cycles, established
    // packets in and out, SYNs in and out.
    struct Phase {
      uint64_t cycles = 0, est_in = 0, est_out = 0, syn_in = 0, syn_out = 0;
    } phase[2];
    const unsigned est_n = flood ? est_per_poll : kBurst;
    // Where a frame's TCP flags are on the backend side: inside IPIP in tunnel mode.
    const unsigned flags_at = forward == "tunnel" ? 14 + 20 + 20 + 13 : 14 + 20 + 13;
    for (uint32_t it = 0; it < bursts; ++it) {
      const int ph = flood && it >= bursts / 2 ? 1 : 0;
      const unsigned syn_n = ph ? syn_per_poll : 0;
      for (unsigned i = 0; i < est_n + syn_n; ++i) {
        in[i] = alloc(r.pool);
        if (syn || i >= est_n) {
          build_syn(in[i], kLbdMac[0], kPeerMac[0], client_ip(fresh), client_port(fresh), kVip,
                    kVport);
          ++fresh;
          continue;
        }
        const uint32_t f = visit[(next + i) % flows];
        build(in[i], size, kLbdMac[0], kPeerMac[0], client_ip(tuple[f]), client_port(tuple[f]),
              kVip, kVport, 0x18);
      }
      inject(r.rx[0][0], in, est_n + syn_n);
      phase[ph].est_in += syn ? 0 : est_n;
      phase[ph].syn_in += syn_n;
      if (both) {
        phase[ph].est_in += est_n;
        for (unsigned i = 0; i < est_n; ++i) {
          const uint32_t f = visit[(next + i) % flows];
          in[i] = alloc(r.pool);
          build(in[i], size, kLbdMac[1], kPeerMac[1], backend[f], 8080, client_ip(tuple[f]),
                client_port(tuple[f]), 0x18);
        }
        inject(r.rx[1][0], in, est_n);
      }
      next = (next + est_n) % flows;
      const uint64_t t0 = rte_rdtsc();
      uint32_t n = dp ? dp->poll(0, t0) : io_poll(r.port);
      // The second worker's poll is part of the cost (it does the handed-over packets' work);
      // each packet is counted once, as it was offered.
      if (workers > 1) {
        // Until it has nothing left: one poll takes one burst from the handoff ring.
        while (dp->poll(1, t0) != 0) {
        }
        n = est_n * (both ? 2 : 1);
      }
      const uint64_t dt = rte_rdtsc() - t0;
      cycles += dt;
      phase[ph].cycles += dt;
      handled_all += n;
      if (n) per_poll.push_back(static_cast<double>(dt) / n);
      packets += n;
      ++polls;
      for (int p = 0; p < 2; ++p) {
        unsigned got;
        while ((got = take(r, p, out, 4 * kBurst)) > 0) {
          out_packets += got;
          for (unsigned i = 0; flood && i < got; ++i) {
            const uint8_t* fr = rte_pktmbuf_mtod(out[i], const uint8_t*);
            const bool is_syn =
                p == 1 && out[i]->data_len > flags_at && (fr[flags_at] & 0x12) == 0x02;
            ++(is_syn ? phase[ph].syn_out : phase[ph].est_out);
          }
          rte_pktmbuf_free_bulk(out, got);
        }
      }
    }
    const double hz = static_cast<double>(rte_get_tsc_hz());
    const double mean = packets ? static_cast<double>(cycles) / static_cast<double>(packets) : 0;
    std::sort(per_poll.begin(), per_poll.end());
    auto pct = [&](double q) {
      return per_poll.empty()
                 ? 0.0
                 : per_poll[static_cast<size_t>(q * static_cast<double>(per_poll.size() - 1))];
    };
    const double cpp = pct(0.5);
    std::printf(
        "mode %s, %u worker(s) (flows owned by worker %u), %u flows (%s order), %u B, %s: %llu "
        "packets in %llu polls, %llu out; median %.1f "
        "TSC cycles (%.1f ns) per packet = %.2f Mpps on one core (p10 %.1f, p90 %.1f, mean "
        "%.1f cycles); VmRSS %ld KiB after setup, %ld KiB of it in transparent huge pages\n",
        mode.c_str(), workers, owner, flows, order.c_str(), syn ? kSynLen : size,
        syn    ? "SYNs of new flows"
        : both ? "both directions"
               : "client->backend only",
        static_cast<unsigned long long>(packets), static_cast<unsigned long long>(polls),
        static_cast<unsigned long long>(out_packets), cpp, cpp / hz * 1e9,
        cpp > 0 ? hz / cpp / 1e6 : 0.0, pct(0.1), pct(0.9), mean, rss_after_setup,
        proc_kib("/proc/self/smaps_rollup", "AnonHugePages"));
    std::printf(
        "RESULT mode=%s workers=%u owner=%u flows=%u size=%u packets=%llu polls=%llu out=%llu "
        "cycles_per_packet=%.1f ns_per_packet=%.2f mpps=%.3f mean_cycles=%.1f "
        "handled_all=%llu\n",
        mode.c_str(), workers, owner, flows, size, static_cast<unsigned long long>(packets),
        static_cast<unsigned long long>(polls), static_cast<unsigned long long>(out_packets), cpp,
        cpp / hz * 1e9, cpp > 0 ? hz / cpp / 1e6 : 0.0, mean,
        static_cast<unsigned long long>(handled_all));
    if (syn) {
      // Whether the run measured what it says: with room, no eviction and nothing expired.
      const lb::core::WorkerCounters& c = dp->counters(0);
      std::printf(
          "RESULT mode=syn capacity=%u syn_budget=%u flows_created=%llu syn_evicted=%llu "
          "flows_expired=%llu syn_expired_pressure=%llu flows_refused=%llu table=%u "
          "embryonic=%u\n",
          capacity, syn_budget, static_cast<unsigned long long>(c.flows_created.get()),
          static_cast<unsigned long long>(c.syn_evicted.get()),
          static_cast<unsigned long long>(c.flows_expired.get()),
          static_cast<unsigned long long>(c.syn_expired_pressure.get()),
          static_cast<unsigned long long>(c.flows_refused.get()), dp->processor(0).flows().size(),
          dp->processor(0).flows().embryonic());
    }
    if (flood) {
      // Established packets forwarded per million TSC cycles of poll(): the core's capacity for
      // them, before and during the flood.
      auto per_mcycle = [](const Phase& x) {
        return x.cycles ? static_cast<double>(x.est_out) * 1e6 / static_cast<double>(x.cycles)
                        : 0.0;
      };
      const lb::core::WorkerCounters& c = dp->counters(0);
      const double before = per_mcycle(phase[0]), during = per_mcycle(phase[1]);
      const uint64_t lost =
          (phase[0].est_in - phase[0].est_out) + (phase[1].est_in - phase[1].est_out);
      std::printf(
          "RESULT mode=flood policy=%s forward=%s flows=%u capacity=%u est_per_poll=%u "
          "syn_per_poll=%u est_before_per_mcycle=%.1f est_during_per_mcycle=%.1f ratio=%.3f "
          "est_lost=%llu syn_in=%llu syn_out=%llu flows_refused=%llu syn_evicted=%llu "
          "syn_stateless=%llu syn_expired_pressure=%llu table=%u embryonic=%u\n",
          policy.c_str(), forward.c_str(), flows, capacity, est_per_poll, syn_per_poll, before,
          during, before > 0 ? during / before : 0.0, static_cast<unsigned long long>(lost),
          static_cast<unsigned long long>(phase[1].syn_in),
          static_cast<unsigned long long>(phase[1].syn_out),
          static_cast<unsigned long long>(c.flows_refused.get()),
          static_cast<unsigned long long>(c.syn_evicted.get()),
          static_cast<unsigned long long>(c.syn_stateless.get()),
          static_cast<unsigned long long>(c.syn_expired_pressure.get()),
          dp->processor(0).flows().size(), dp->processor(0).flows().embryonic());
      if (lost != 0) {
        std::fprintf(stderr, "lbd_worker_cost: %llu established packets lost\n",
                     static_cast<unsigned long long>(lost));
        rc = 1;
      }
    } else if (out_packets != packets) {
      std::fprintf(stderr, "lbd_worker_cost: %llu packets in, %llu out: lbd dropped some\n",
                   static_cast<unsigned long long>(packets),
                   static_cast<unsigned long long>(out_packets));
      rc = 1;
    }
    dp.reset();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lbd_worker_cost: %s\n", e.what());
    rc = 1;
  }
  // EAL leaves its runtime directory (/var/run/dpdk/<prefix>) behind; the prefix is ours.
  const std::string runtime_dir = rte_eal_get_runtime_dir();
  rte_eal_cleanup();
  std::error_code ec;
  for (uint16_t w = 0; !flow_dir.empty() && w < workers; ++w)
    std::filesystem::remove(flow_dir + "/" + lb::dp::flow_file_name(prefix, w), ec);
  if (runtime_dir.find(prefix) != std::string::npos) std::filesystem::remove_all(runtime_dir, ec);
  return rc;
}
