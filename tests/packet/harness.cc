#include "harness.h"

#include <unistd.h>

#include <rte_bus_vdev.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <cstring>
#include <stdexcept>

namespace lb::test {

namespace {

unsigned next_seq() {
  static unsigned seq = 0;
  return ++seq;
}

rte_ring* make_ring(const std::string& name) {
  // The test is the only producer of RX rings and the only consumer of TX rings, and each
  // queue is served by one worker.
  rte_ring* r = rte_ring_create(name.c_str(), 1024, static_cast<int>(rte_socket_id()),
                                RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!r) throw std::runtime_error("rte_ring_create " + name + " failed");
  return r;
}

std::string config_for(const HarnessOptions& o, const std::string& client_dev,
                       const std::string& backend_dev) {
  std::string s;
  s += "dataplane: {\n";
  s += "  workers = " + std::to_string(o.workers) + ";\n";
  s += "  mbufs = 4095;\n";
  s += "  ports = (\n";
  s += "    { name = \"client\"; device = \"" + client_dev +
       "\"; ip = \"10.10.0.1/24\"; rx_descriptors = 64; tx_descriptors = 64; },\n";
  s += "    { name = \"backend\"; device = \"" + backend_dev +
       "\"; ip = \"10.20.0.1/24\"; rx_descriptors = 64; tx_descriptors = 64; }\n";
  s += "  );\n";
  s += "  flows = { capacity = " + std::to_string(o.flow_capacity) +
       "; tcp_syn_timeout = 3; tcp_established_timeout = 60;\n";
  s += "            tcp_fin_timeout = 4; tcp_closed_timeout = 2; " + o.flows_extra + " };\n";
  s += std::string("  retry = { on_rst = ") + (o.retry_on_rst ? "true" : "false") +
       "; syn_timeout_ms = 1000; max_retries = 2; };\n";
  s += std::string("  miss_policy = \"") + o.miss_policy + "\";\n";
  s += std::string("  no_backend_policy = \"") + o.no_backend_policy + "\";\n";
  if (o.fullnat) {
    s += std::string("  fullnat_addresses = [\"10.20.0.50\"") +
         (o.fullnat_addresses > 1 ? ", \"10.20.0.51\"" : "") + "];\n";
    s += "  fullnat_ports = [" + std::to_string(o.fullnat_first) + ", " +
         std::to_string(o.fullnat_last) + "];\n";
  }
  s += "};\n";
  s += "services = (\n";
  s += std::string("  { name = \"web\"; vip = \"10.10.0.100\"; port = 80; scheduler = \"") +
       o.scheduler + "\";\n";
  s += std::string("    forward = \"") + (o.fullnat ? "fullnat" : o.forward) + "\"; " +
       o.web_extra + "\n";
  s += "    backends = (";
  for (uint8_t b = 0; b < o.backends; ++b)
    s += std::string(b ? ",\n                 " : " ") + "{ address = \"10.20.0.1" +
         std::to_string(b + 1) + "\"; port = 8080; }";
  s += " ); },\n";
  s += o.services_extra;
  s += "  { name = \"empty\"; vip = \"10.10.0.100\"; port = 81; backends = (); }\n";
  s += ");\n";
  return s;
}

// Ring ports start with MAC 00:00:00:00:00:00 and the ring PMD has no mac_addr_set. It does
// take mac_addr_add, and ethdev puts an added address in the first all-zero slot: with the one
// slot a ring port has, that is the default address.
void set_mac(uint16_t port, const MacAddr& m) {
  rte_ether_addr a;
  std::memcpy(a.addr_bytes, m.b, 6);
  if (rte_eth_dev_default_mac_addr_set(port, &a) != 0) rte_eth_dev_mac_addr_add(port, &a, 0);
  rte_ether_addr got;
  if (rte_eth_macaddr_get(port, &got) != 0 || std::memcmp(got.addr_bytes, m.b, 6) != 0)
    throw std::runtime_error("cannot set the MAC address of port " + std::to_string(port));
}

}  // namespace

Harness::Harness(const HarnessOptions& options) : workers_(options.workers), seq_(next_seq()) {
  try {
    setup(options);
  } catch (...) {
    release();
    throw;
  }
}

void Harness::setup(const HarnessOptions& options) {
  const std::string tag = std::to_string(seq_);
  port_names_[kClientPort] = "pt_client_" + tag;
  port_names_[kBackendPort] = "pt_backend_" + tag;
  pool_ = rte_pktmbuf_pool_create(("pt_mp_" + tag).c_str(), 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                  static_cast<int>(rte_socket_id()));
  if (!pool_) throw std::runtime_error("cannot create the test mempool");
  for (uint16_t p = 0; p < kPorts; ++p) {
    for (uint16_t q = 0; q < workers_; ++q) {
      const std::string base = "pt" + tag + "_" + std::to_string(p) + "_" + std::to_string(q);
      rx_[p].push_back(make_ring(base + "rx"));
      tx_[p].push_back(make_ring(base + "tx"));
    }
    const int id = rte_eth_from_rings(port_names_[p].c_str(), rx_[p].data(), workers_,
                                      tx_[p].data(), workers_, rte_socket_id());
    if (id < 0) throw std::runtime_error("rte_eth_from_rings " + port_names_[p] + " failed");
    set_mac(static_cast<uint16_t>(id), p == kClientPort ? kLbClientMac : kLbBackendMac);
  }
  config_text_ = config_for(options, device_name(kClientPort), device_name(kBackendPort));
  if (options.channel) shm_name_ = "/lbd-pt-" + std::to_string(getpid()) + "-" + tag;
  dp::FlowMemoryOptions flows = options.flows;
  if (!flows.fullnat_port_start) flows.fullnat_port_start = 0;  // expected frames name ports
  dp_ = std::make_unique<dp::Dataplane>(cfg::parse_config(config_text_, "packet_test.cfg"),
                                        shm_name_, flows);
}

Harness::~Harness() {
  release();
}

void Harness::release() {
  // Frames lbd transmitted may be its own mbufs (ARP requests): free them before its pool.
  drain();
  dp_.reset();  // stops and closes (releases) the ports
  for (uint16_t p = 0; p < kPorts; ++p) rte_vdev_uninit(device_name(p).c_str());
  for (uint16_t p = 0; p < kPorts; ++p) {
    for (rte_ring* r : rx_[p]) free_ring_contents(r);
    for (rte_ring* r : tx_[p]) free_ring_contents(r);
    for (rte_ring* r : rx_[p]) rte_ring_free(r);
    for (rte_ring* r : tx_[p]) rte_ring_free(r);
    rx_[p].clear();
    tx_[p].clear();
  }
  rte_mempool_free(pool_);
  pool_ = nullptr;
}

std::string Harness::device_name(uint16_t port) const {
  // rte_eth_from_rings(name) makes the vdev (and ethdev) "net_ring_<name>".
  return "net_ring_" + port_names_[port];
}

void Harness::free_ring_contents(rte_ring* r) {
  void* m;
  while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
}

void Harness::inject(uint16_t port, uint16_t queue, const Bytes& frame) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  ASSERT_NE(m, nullptr) << "test mempool exhausted";
  char* p = rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size()));
  ASSERT_NE(p, nullptr) << "frame of " << frame.size() << " bytes does not fit an mbuf";
  std::memcpy(p, frame.data(), frame.size());
  ASSERT_EQ(rte_ring_enqueue(rx_[port][queue], m), 0) << "RX ring full";
}

void Harness::inject_chained(uint16_t port, uint16_t queue, const Bytes& frame, size_t split) {
  ASSERT_LT(split, frame.size());
  rte_mbuf* head = rte_pktmbuf_alloc(pool_);
  rte_mbuf* tail = rte_pktmbuf_alloc(pool_);
  ASSERT_TRUE(head && tail) << "test mempool exhausted";
  std::memcpy(rte_pktmbuf_append(head, static_cast<uint16_t>(split)), frame.data(), split);
  std::memcpy(rte_pktmbuf_append(tail, static_cast<uint16_t>(frame.size() - split)),
              frame.data() + split, frame.size() - split);
  ASSERT_EQ(rte_pktmbuf_chain(head, tail), 0);
  ASSERT_EQ(rte_ring_enqueue(rx_[port][queue], head), 0) << "RX ring full";
}

void Harness::poll(uint16_t first, int rounds) {
  for (int r = 0; r < rounds; ++r) {
    dp_->poll(first, now);
    for (uint16_t w = 0; w < workers_; ++w)
      if (w != first) dp_->poll(w, now);
  }
}

std::vector<Emitted> Harness::drain() {
  std::vector<Emitted> out;
  for (uint16_t p = 0; p < kPorts; ++p) {
    for (uint16_t q = 0; q < tx_[p].size(); ++q) {
      void* v;
      while (rte_ring_dequeue(tx_[p][q], &v) == 0) {
        auto* m = static_cast<rte_mbuf*>(v);
        const auto* d = rte_pktmbuf_mtod(m, const uint8_t*);
        Bytes b(d, d + m->data_len);
        if (m->nb_segs != 1 || m->pkt_len != m->data_len)
          ADD_FAILURE() << "port " << p << " queue " << q << ": mbuf with " << m->nb_segs
                        << " segments, pkt_len " << m->pkt_len << ", data_len " << m->data_len;
        rte_pktmbuf_free(m);
        out.push_back({p, q, std::move(b)});
      }
    }
  }
  return out;
}

}  // namespace lb::test
