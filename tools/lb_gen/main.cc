// lb-gen: a DPDK traffic generator that plays both sides of lbd (clients and backends) and checks
// every packet that comes back. `lb-gen [EAL args] -- [options]`; see --help and
// docs/benchmarking.md.
//
// Ports: either two ports the EAL made (--vdev net_memif0,...: lbd or testpmd in another
// process), or in-process net_ring pairs to an lbd Dataplane (--inproc-lbd CONFIG) or to a plain
// io forwarder (--inproc-io) running on the second lcore.

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataplane.h"
#include "gen.h"
#include "lb_config.h"
#include "lb_version.h"

namespace {

using lb::gen::Mac;

std::optional<Mac> parse_mac(const std::string& s) {
  Mac m;
  unsigned v[6];
  char extra;
  if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                  &extra) != 6)
    return std::nullopt;
  for (int i = 0; i < 6; ++i) {
    if (v[i] > 255) return std::nullopt;
    m.b[i] = static_cast<uint8_t>(v[i]);
  }
  return m;
}

uint32_t need_ip(const std::string& s, const char* what) {
  const std::optional<uint32_t> ip = lb::cfg::parse_ipv4(s);
  if (!ip) throw std::runtime_error(std::string(what) + ": not an IPv4 address: " + s);
  return *ip;
}

lb::gen::Backend parse_endpoint(const std::string& s, const char* what) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos)
    throw std::runtime_error(std::string(what) + ": want IP:PORT, got " + s);
  const uint32_t ip = need_ip(s.substr(0, colon), what);
  const unsigned long port = std::stoul(s.substr(colon + 1));
  if (port == 0 || port > 65535) throw std::runtime_error(std::string(what) + ": bad port in " + s);
  return {ip, static_cast<uint16_t>(port)};
}

// ---------------------------------------------------------------------------------------------
// In-process peers over net_ring: ring r[0] carries lb-gen -> peer, r[1] peer -> lb-gen.

struct RingPair {
  rte_ring* to_peer = nullptr;
  rte_ring* to_gen = nullptr;
  uint16_t gen_port = 0;
  uint16_t peer_port = 0;
  std::string peer_device;
};

void set_mac(uint16_t port, const Mac& m) {
  rte_ether_addr a;
  std::memcpy(a.addr_bytes, m.b, 6);
  // The ring PMD has no mac_addr_set, but ethdev puts an added address in the (only, all-zero)
  // default slot.
  if (rte_eth_dev_default_mac_addr_set(port, &a) != 0) rte_eth_dev_mac_addr_add(port, &a, 0);
}

RingPair make_pair(const std::string& name, const Mac& gen_mac, const Mac& peer_mac) {
  RingPair rp;
  const int socket = static_cast<int>(rte_socket_id());
  rp.to_peer = rte_ring_create((name + "_tp").c_str(), 1024, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rp.to_gen = rte_ring_create((name + "_tg").c_str(), 1024, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!rp.to_peer || !rp.to_gen) throw std::runtime_error("cannot create rings for " + name);
  const int g = rte_eth_from_rings(("lbgen_" + name).c_str(), &rp.to_gen, 1, &rp.to_peer, 1,
                                   static_cast<unsigned>(socket));
  const int p = rte_eth_from_rings(("lbpeer_" + name).c_str(), &rp.to_peer, 1, &rp.to_gen, 1,
                                   static_cast<unsigned>(socket));
  if (g < 0 || p < 0) throw std::runtime_error("rte_eth_from_rings failed for " + name);
  rp.gen_port = static_cast<uint16_t>(g);
  rp.peer_port = static_cast<uint16_t>(p);
  rp.peer_device = "net_ring_lbpeer_" + name;  // the ethdev name rte_eth_from_rings gives it
  set_mac(rp.gen_port, gen_mac);
  set_mac(rp.peer_port, peer_mac);
  return rp;
}

// A plain io forwarder (what testpmd --forward-mode=io does) between two ports, on one lcore.
struct IoFwd {
  uint16_t a, b;
  std::atomic<bool> stop{false};
  uint64_t forwarded = 0, dropped = 0;
};

int io_main(void* arg) {
  auto* f = static_cast<IoFwd*>(arg);
  rte_mbuf* burst[32];
  const uint16_t ports[2] = {f->a, f->b};
  while (!f->stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < 2; ++i) {
      const uint16_t n = rte_eth_rx_burst(ports[i], 0, burst, 32);
      if (!n) continue;
      const uint16_t sent = rte_eth_tx_burst(ports[i ^ 1], 0, burst, n);
      f->forwarded += sent;
      if (sent < n) {
        f->dropped += n - sent;
        rte_pktmbuf_free_bulk(burst + sent, n - sent);
      }
    }
  }
  return 0;
}

void setup_peer_port(uint16_t port, rte_mempool* pool) {
  rte_eth_conf conf{};
  if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
      rte_eth_rx_queue_setup(port, 0, 1024, rte_socket_id(), nullptr, pool) != 0 ||
      rte_eth_tx_queue_setup(port, 0, 1024, rte_socket_id(), nullptr) != 0 ||
      rte_eth_dev_start(port) != 0)
    throw std::runtime_error("cannot set up in-process io port " + std::to_string(port));
}

void lbd_tick(void* arg) {
  static_cast<lb::dp::Dataplane*>(arg)->control_tick(rte_rdtsc());
}

}  // namespace

int main(int argc, char** argv) {
  int split = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      split = i;
      break;
    }
  }
  std::vector<std::string> app_args;
  for (int i = (split == argc ? 1 : split + 1); i < argc; ++i) app_args.emplace_back(argv[i]);

  CLI::App app{
      "lb-gen: plays the clients and the backends of lbd (or of a plain forwarder) over two DPDK\n"
      "ports and checks every packet that comes back.\n"
      "usage: lb-gen [EAL args] -- --vip IP:PORT [options]",
      "lb-gen"};
  lb::gen::Options o;
  std::string vip = "10.10.0.100:80", backends, client_net = "10.128.0.0", client_ip = "10.10.0.2";
  std::string lbd_mac, lbd_backend_mac, peer = "lbd", dir = "both", inproc_lbd;
  bool inproc_io = false;
  app.add_option("--client-port", o.client_port, "DPDK port id facing lbd's client side")
      ->capture_default_str();
  app.add_option("--backend-port", o.backend_port, "DPDK port id facing lbd's backend side")
      ->capture_default_str();
  app.add_option("--vip", vip, "the service, IP:PORT")->capture_default_str();
  app.add_option("--flows", o.flows,
                 "concurrent flows (1 .. 10 M+); with --syn-only the number of distinct tuples "
                 "cycled through")
      ->capture_default_str();
  app.add_option("--duration", o.duration, "seconds measured")->capture_default_str();
  app.add_option("--warmup", o.warmup, "seconds of load before measuring")->capture_default_str();
  app.add_option("--burst", o.burst, "packets per TX burst")->capture_default_str();
  app.add_option("--size", o.size, "data frame bytes without FCS (60..1514; 64 = 10 B payload)")
      ->capture_default_str();
  app.add_option("--syn-share", o.syn_share,
                 "share of client packets that close a flow (FIN) and open a new one (SYN)")
      ->capture_default_str();
  app.add_flag("--syn-only", o.syn_only,
               "every client packet is the SYN of a new flow (backends do not answer): new "
               "flows/s");
  std::string order = "seq";
  app.add_option("--order", order,
                 "order data visits the flows in: seq (creation order) or scattered (each next "
                 "flow ~0.62 of the table away, so the forwarder's records are not read in "
                 "sequence)")
      ->check(CLI::IsMember({"seq", "scattered"}))
      ->capture_default_str();
  app.add_option("--dir", dir, "data directions: both, c2b (client->backend), b2c")
      ->capture_default_str();
  app.add_option("--rate", o.rate_mpps, "cap per direction in Mpps (0: as fast as the ring takes)")
      ->capture_default_str();
  app.add_option("--peer", peer,
                 "lbd (NAT checks, handshakes, ARP) or io (a forwarder that changes nothing)")
      ->capture_default_str();
  app.add_option("--backends", backends,
                 "expected backends IP:PORT,... (lbd: any other is an error, and lb-gen waits for "
                 "lbd's ARP for each; io: the backends lb-gen plays)");
  app.add_option("--client-net", client_net, "first client address")->capture_default_str();
  app.add_option("--client-ip", client_ip, "lb-gen's address on the client side (ARP for the VIP)")
      ->capture_default_str();
  app.add_option("--lbd-mac", lbd_mac, "lbd's client-port MAC (default: ARP for the VIP)");
  app.add_option("--lbd-backend-mac", lbd_backend_mac,
                 "lbd's backend-port MAC (default: learnt from its ARP requests)");
  app.add_option("--window", o.window, "handshakes in flight while setting up flows")
      ->capture_default_str();
  app.add_option("--setup-timeout", o.setup_timeout, "seconds")->capture_default_str();
  app.add_option("--link-timeout", o.link_timeout, "seconds to wait for both links")
      ->capture_default_str();
  app.add_option("--resolve-timeout", o.resolve_timeout,
                 "seconds to learn the VIP's MAC and answer lbd's ARP for every backend")
      ->capture_default_str();
  app.add_option("--linger", o.linger,
                 "after the report, wait up to this many seconds for the peer to disconnect")
      ->capture_default_str();
  app.add_flag("--progress", o.progress, "print rates every second");
  app.add_flag("--quiet-errors", o.quiet_errors, "count errors without printing the first ones");
  app.add_option("--inproc-lbd", inproc_lbd,
                 "run lbd (this config; its port devices are replaced by net_ring pairs) on the "
                 "second lcore of this process");
  app.add_flag("--inproc-io", inproc_io,
               "run a plain io forwarder on the second lcore over net_ring");
  app.set_version_flag("--version", "lb-gen " LB_VERSION);
  try {
    std::reverse(app_args.begin(), app_args.end());  // CLI11 takes them last-first
    app.parse(app_args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  bool eal_up = false;
  try {
    const lb::gen::Backend v = parse_endpoint(vip, "--vip");
    o.vip = v.ip;
    o.vport = v.port;
    size_t pos = 0;
    while (pos < backends.size()) {
      size_t end = backends.find(',', pos);
      if (end == std::string::npos) end = backends.size();
      if (end > pos)
        o.backends.push_back(parse_endpoint(backends.substr(pos, end - pos), "--backends"));
      pos = end + 1;
    }
    o.client_net = need_ip(client_net, "--client-net");
    o.client_ip = need_ip(client_ip, "--client-ip");
    if (!lbd_mac.empty()) {
      const auto m = parse_mac(lbd_mac);
      if (!m) throw std::runtime_error("--lbd-mac: not a MAC address: " + lbd_mac);
      o.lbd_client_mac = *m;
    }
    if (!lbd_backend_mac.empty()) {
      const auto m = parse_mac(lbd_backend_mac);
      if (!m) throw std::runtime_error("--lbd-backend-mac: not a MAC address: " + lbd_backend_mac);
      o.lbd_backend_mac = *m;
    }
    if (peer == "lbd")
      o.peer = lb::gen::Peer::kLbd;
    else if (peer == "io")
      o.peer = lb::gen::Peer::kIo;
    else
      throw std::runtime_error("--peer: lbd or io, not " + peer);
    if (dir == "both") {
    } else if (dir == "c2b") {
      o.backend_dir = false;
    } else if (dir == "b2c") {
      o.client_dir = false;
    } else {
      throw std::runtime_error("--dir: both, c2b or b2c, not " + dir);
    }
    o.scattered = order == "scattered";
    if (o.duration <= 0 || o.duration > 3600) throw std::runtime_error("--duration: 0 .. 3600 s");
    if (o.warmup < 0 || o.warmup > 600) throw std::runtime_error("--warmup: 0 .. 600 s");
    if (!inproc_lbd.empty() && inproc_io)
      throw std::runtime_error("--inproc-lbd and --inproc-io exclude each other");
    std::optional<lb::cfg::Config> lbd_config;
    if (!inproc_lbd.empty()) {
      lbd_config = lb::cfg::load_config(inproc_lbd);
      if (lbd_config->dataplane.ports.size() != 2)
        throw std::runtime_error(inproc_lbd +
                                 ": --inproc-lbd wants exactly two ports (client "
                                 "side first, backend side second)");
      if (lbd_config->dataplane.workers != 1)
        throw std::runtime_error(inproc_lbd + ": --inproc-lbd runs one worker (workers = 1)");
      o.peer = lb::gen::Peer::kLbd;
    }
    if (inproc_io) o.peer = lb::gen::Peer::kIo;

    if (split == argc)
      throw std::runtime_error(
          "EAL arguments expected before '--' (e.g. lb-gen -l 0 --no-pci "
          "--vdev ... -- --vip ...)");
    std::vector<char*> eal_args(argv, argv + split);
    eal_args.push_back(nullptr);  // argv[argc] is NULL, as getopt expects
    if (rte_eal_init(split, eal_args.data()) < 0)
      throw std::runtime_error(std::string("EAL initialisation failed: ") +
                               rte_strerror(rte_errno));
    eal_up = true;

    const bool inproc = lbd_config.has_value() || inproc_io;
    std::unique_ptr<lb::dp::Dataplane> dp;
    IoFwd io;
    rte_mempool* io_pool = nullptr;
    unsigned worker_lcore = RTE_MAX_LCORE;
    if (inproc) {
      worker_lcore = rte_get_next_lcore(~0u, 1, 0);
      if (worker_lcore >= RTE_MAX_LCORE)
        throw std::runtime_error("in-process peers need a second lcore (EAL -l 0,1)");
      const RingPair c = make_pair("c", Mac{{0x02, 0, 0, 0, 1, 1}}, Mac{{0x02, 0, 0, 0, 2, 1}});
      const RingPair b = make_pair("b", Mac{{0x02, 0, 0, 0, 1, 2}}, Mac{{0x02, 0, 0, 0, 2, 2}});
      o.client_port = c.gen_port;
      o.backend_port = b.gen_port;
      if (lbd_config) {
        lbd_config->dataplane.ports[0].device = c.peer_device;
        lbd_config->dataplane.ports[1].device = b.peer_device;
      } else {
        io_pool = rte_pktmbuf_pool_create("lbgen_io", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                          static_cast<int>(rte_socket_id()));
        if (!io_pool) throw std::runtime_error("cannot create the io forwarder's mbuf pool");
        setup_peer_port(c.peer_port, io_pool);
        setup_peer_port(b.peer_port, io_pool);
        io.a = c.peer_port;
        io.b = b.peer_port;
      }
    }

    int status;
    {
      lb::gen::Generator g(o);
      if (lbd_config) {
        dp = std::make_unique<lb::dp::Dataplane>(*lbd_config);
        dp->launch();
      } else if (inproc_io) {
        if (rte_eal_remote_launch(io_main, &io, worker_lcore) != 0)
          throw std::runtime_error("cannot launch the io forwarder");
      }
      status = lbd_config ? g.run(lbd_tick, dp.get()) : g.run();
      if (dp) {
        dp->stop();
        const lb::core::WorkerCounters& wc = dp->counters(0);
        uint64_t drops = 0;
        for (size_t r = 0; r < lb::core::kDropReasonCount; ++r) {
          const uint64_t n = wc.drops[r].get();
          if (n)
            std::printf("lbd (in-process): dropped %llu as %s\n",
                        static_cast<unsigned long long>(n),
                        std::string(lb::core::kDropReasonNames[r]).c_str());
          drops += n;
        }
        std::printf("lbd (in-process): flows created %llu, active %llu, dropped %llu\n",
                    static_cast<unsigned long long>(wc.flows_created.get()),
                    static_cast<unsigned long long>(wc.flows_active.get()),
                    static_cast<unsigned long long>(drops));
        dp.reset();
      }
      if (inproc_io) {
        io.stop.store(true, std::memory_order_relaxed);
        rte_eal_wait_lcore(worker_lcore);
        std::printf("io forwarder (in-process): forwarded %llu, dropped %llu\n",
                    static_cast<unsigned long long>(io.forwarded),
                    static_cast<unsigned long long>(io.dropped));
      }
    }
    if (io_pool) rte_mempool_free(io_pool);
    rte_eal_cleanup();
    return status;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lb-gen: %s\n", e.what());
    if (eal_up) rte_eal_cleanup();
    return 2;
  }
}
