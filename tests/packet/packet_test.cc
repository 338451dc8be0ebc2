// Packet tests: the real worker path (Dataplane::poll on net_ring ports), table-driven.
//
// Every row of the table is one gtest case: a fresh dataplane (harness.h), optionally with the
// backends' MACs learned from ARP replies, then a script of steps. A step injects frames on a
// port's RX queue, optionally moves the injected clock and runs the control thread's tick, polls
// the workers, and checks
//   - the exact bytes of every frame transmitted, per port and queue (nothing else may come out),
//   - the named counters' deltas over the step,
//   - that no drop reason other than those named moved, and that the ports' RX/TX counters
//     match what was injected and what came out,
//   - optionally the flow tables (verify).
// Expected frames come from tests/support/packet_builder.h: built field by field with checksums
// computed from scratch, never by lbd's own code.

#include <gtest/gtest.h>
#include <rte_cycles.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>

#include <algorithm>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"
#include "processor.h"

namespace lb::test {
namespace {

using core::DropReason;
using core::WorkerCounters;
using tcpf::kAck;
using tcpf::kFin;
using tcpf::kPsh;
using tcpf::kRst;
using tcpf::kSyn;

// ---------------------------------------------------------------------------------------------
// Topology (see config_for() in harness.cc)

constexpr uint32_t kLbClientIp = ip4(10, 10, 0, 1);
constexpr uint32_t kLbBackendIp = ip4(10, 20, 0, 1);
constexpr uint32_t kVip = ip4(10, 10, 0, 100);
constexpr uint16_t kVport = 80;
constexpr uint16_t kEmptyVport = 81;  // service "empty": no backends
constexpr uint16_t kBackendTcpPort = 8080;
constexpr uint16_t kTci = 0x2064;  // PCP 1, VID 100

struct Client {
  uint32_t ip;
  MacAddr mac;
  uint16_t port;
};

struct Backend {
  uint32_t ip;
  MacAddr mac;
  uint32_t id;  // BackendId: config order
};

Client client(uint8_t n, uint16_t port = 0) {
  return {ip4(10, 10, 0, static_cast<uint8_t>(50 + n)), mac(0x02, 0xc1, 0, 0, 0, n),
          port != 0 ? port : static_cast<uint16_t>(40000 + n)};
}

const Backend kB[3] = {
    {ip4(10, 20, 0, 11), mac(0x02, 0xbe, 0, 0, 0, 0x11), 0},
    {ip4(10, 20, 0, 12), mac(0x02, 0xbe, 0, 0, 0, 0x12), 1},
    {ip4(10, 20, 0, 13), mac(0x02, 0xbe, 0, 0, 0, 0x13), 2},
};

// ---------------------------------------------------------------------------------------------
// Frames. A Seg is the part of a TCP segment that NAT leaves alone; the builders below put it
// in the four places it appears: client -> VIP (in), -> backend (out), backend -> client (in),
// VIP -> client (out). lbd decrements TTL (dnat), keeps IP id, rewrites MACs, and removes Ethernet
// padding from what it forwards, so the "out" frames are built without padding.

struct Seg {
  uint8_t flags = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  Bytes payload = {};
  Bytes options = {};
  uint16_t window = 29200;
  uint16_t ip_id = 0x1000;
};

Bytes text(const char* s) {
  return Bytes(s, s + std::char_traits<char>::length(s));
}

Tcp tcp_of(const Seg& s, uint16_t sport, uint16_t dport) {
  Tcp t;
  t.sport = sport;
  t.dport = dport;
  t.seq = s.seq;
  t.ack = s.ack;
  t.flags = s.flags;
  t.window = s.window;
  t.options = s.options;
  t.payload = s.payload;
  return t;
}

Ip ip_of(const Seg& s, uint32_t src, uint32_t dst) {
  Ip ip;
  ip.src = src;
  ip.dst = dst;
  ip.id = s.ip_id;
  return ip;
}

Eth l2(const MacAddr& dst, const MacAddr& src, std::optional<uint16_t> tci) {
  return tci ? eth_vlan(dst, src, *tci) : eth(dst, src);
}

// client -> VIP, as it arrives on the client port (padded to 60 bytes)
Bytes c2v(const Client& c, const Seg& s, std::optional<uint16_t> tci = {},
          uint16_t vport = kVport) {
  return tcp_frame(l2(kLbClientMac, c.mac, tci), ip_of(s, c.ip, kVip), tcp_of(s, c.port, vport));
}
// ... as lbd must send it to backend b
Bytes c2b(const Client& c, const Backend& b, const Seg& s) {
  Ip ip = ip_of(s, c.ip, b.ip);
  ip.ttl = 63;  // lbd is a router hop
  return tcp_frame(eth(b.mac, kLbBackendMac), ip, tcp_of(s, c.port, kBackendTcpPort), 0);
}
// backend b -> client, as it arrives on the backend port
Bytes b2c(const Backend& b, const Client& c, const Seg& s) {
  return tcp_frame(eth(kLbBackendMac, b.mac), ip_of(s, b.ip, c.ip),
                   tcp_of(s, kBackendTcpPort, c.port));
}
// ... as lbd must send it to the client: from VIP:80
Bytes v2c(const Client& c, const Seg& s, std::optional<uint16_t> tci = {}) {
  Ip ip = ip_of(s, kVip, c.ip);
  ip.ttl = 63;
  return tcp_frame(l2(c.mac, kLbClientMac, tci), ip, tcp_of(s, kVport, c.port), 0);
}
// client -> VIP in tunnel mode, as lbd must send it to backend b: the client's IPv4 packet
// unchanged (TTL `ttl`) inside an outer header from the backend port's address (TOS and id
// copied, DF copied, TTL 64, protocol 4), built here from scratch.
Bytes c2b_ipip(const Client& c, const Backend& b, const Seg& s, uint8_t ttl = 64) {
  Ip inner = ip_of(s, c.ip, kVip);
  inner.ttl = ttl;
  Ip outer;
  outer.src = kLbBackendIp;
  outer.dst = b.ip;
  outer.ttl = 64;
  outer.tos = inner.tos;
  outer.id = inner.id;
  outer.frag = inner.frag & 0x4000;
  outer.proto = 4;
  const Bytes packet = ipv4_packet(inner, 6, tcp_segment(inner, tcp_of(s, c.port, kVport)));
  return ethernet(eth(b.mac, kLbBackendMac), 0x0800, ipv4_packet(outer, 4, packet), 0);
}
// client -> VIP with TTL `ttl`, as it arrives.
Bytes c2v_ttl(const Client& c, const Seg& s, uint8_t ttl) {
  Ip ip = ip_of(s, c.ip, kVip);
  ip.ttl = ttl;
  return tcp_frame(eth(kLbClientMac, c.mac), ip, tcp_of(s, c.port, kVport));
}
// The ICMP error lbd sends from `src` about the frame `orig` (untagged; its sender gets it at
// the frame's source MAC, from `port_mac`): fresh IPv4 header (id 0, no DF, TTL 64), `mtu` in
// the second word's low half, and the quote the original IPv4 header and 8 bytes after it.
Bytes icmp_error_about(const Bytes& orig, const MacAddr& port_mac, uint32_t src, uint8_t type,
                       uint8_t code, uint16_t mtu) {
  Ip ip;
  ip.src = src;
  ip.dst = get32(orig.data() + 14 + 12);
  ip.ttl = 64;
  ip.id = 0;
  ip.frag = 0;
  Icmp m;
  m.type = type;
  m.code = code;
  m.id = 0;
  m.seq = mtu;
  m.payload.assign(orig.begin() + 14, orig.begin() + 14 + 28);
  EXPECT_EQ(ref_sum(m.payload.data(), 20), 0xffff) << "the quoted header's own checksum";
  return icmp_frame(eth(get_mac(orig.data() + 6), port_mac), ip, m);
}

// An RST generated by lbd (RFC 793 "Reset Generation"): fresh IPv4 header (id 0, DF, TTL 64),
// window 0, no options, no padding.
Bytes rst_frame(const Eth& e, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                uint8_t flags, uint32_t seq, uint32_t ack) {
  Ip ip;
  ip.src = src;
  ip.dst = dst;
  Tcp t;
  t.sport = sport;
  t.dport = dport;
  t.seq = seq;
  t.ack = ack;
  t.flags = flags;
  t.window = 0;
  return tcp_frame(e, ip, t, 0);
}
// ... toward the client, from the VIP
Bytes rst_to_client(const Client& c, uint16_t vport, uint8_t flags, uint32_t seq, uint32_t ack,
                    std::optional<uint16_t> tci = {}) {
  return rst_frame(l2(c.mac, kLbClientMac, tci), kVip, c.ip, vport, c.port, flags, seq, ack);
}
// ... toward backend b, from client c's address (what the backend of a reset flow gets: SEQ =
// the backend segment's ACK)
Bytes rst_to_backend(const Backend& b, const Client& c, uint32_t seq) {
  return rst_frame(eth(b.mac, kLbBackendMac), c.ip, b.ip, c.port, kBackendTcpPort, kRst, seq, 0);
}

Bytes arp_request(const MacAddr& sha, uint32_t spa, uint32_t tpa,
                  std::optional<uint16_t> tci = {}) {
  Arp a;
  a.op = 1;
  a.sha = sha;
  a.spa = spa;
  a.tpa = tpa;
  return arp_frame(l2(core::kBroadcastMac, sha, tci), a);
}
Bytes arp_reply(const MacAddr& sha, uint32_t spa, const MacAddr& tha, uint32_t tpa,
                std::optional<uint16_t> tci = {}) {
  Arp a;
  a.op = 2;
  a.sha = sha;
  a.spa = spa;
  a.tha = tha;
  a.tpa = tpa;
  return arp_frame(l2(tha, sha, tci), a);
}
Bytes backend_arp_reply(const Backend& b) {
  return arp_reply(b.mac, b.ip, kLbBackendMac, kLbBackendIp);
}

Bytes echo(const MacAddr& dst_mac, const MacAddr& src_mac, uint32_t src, uint32_t dst, uint8_t type,
           uint8_t ttl, const Bytes& payload, std::optional<uint16_t> tci = {}) {
  Ip ip;
  ip.src = src;
  ip.dst = dst;
  ip.ttl = ttl;
  ip.id = 0x4242;
  Icmp m;
  m.type = type;
  m.id = 0x0777;
  m.seq = 3;
  m.payload = payload;
  return icmp_frame(l2(dst_mac, src_mac, tci), ip, m);
}

// A frame without padding, then padded to 60 bytes with `fill` (padding need not be zero).
Bytes padded_with(Bytes f, uint8_t fill) {
  if (f.size() < 60) f.resize(60, fill);
  return f;
}

// The usual handshake and a few data segments of client c (client ISN 1000, backend ISN 5000).
Seg syn_seg(uint32_t seq = 1000) {
  return Seg{.flags = kSyn, .seq = seq, .options = syn_options(), .window = 64240, .ip_id = 0x1111};
}
Seg synack_seg(uint32_t ack = 1001) {
  return Seg{.flags = kSyn | kAck,
             .seq = 5000,
             .ack = ack,
             .options = {2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7},
             .window = 65160,
             .ip_id = 0};
}
Seg ack_seg(uint32_t seq = 1001, uint32_t ack = 5001) {
  return Seg{.flags = kAck, .seq = seq, .ack = ack, .ip_id = 0x1112};
}
Seg data_seg(uint32_t seq, uint32_t ack, const char* payload, uint16_t id = 0x1113) {
  return Seg{.flags = kAck | kPsh, .seq = seq, .ack = ack, .payload = text(payload), .ip_id = id};
}

// A SYN from client 1 to the VIP with its headers open to damage.
Bytes mangled_syn(const std::function<void(Eth&, Ip&, Tcp&)>& mangle, size_t min_len = 60) {
  const Client c = client(1);
  const Seg s = syn_seg();
  Eth e = eth(kLbClientMac, c.mac);
  Ip ip = ip_of(s, c.ip, kVip);
  Tcp t = tcp_of(s, c.port, kVport);
  mangle(e, ip, t);
  return tcp_frame(e, ip, t, min_len);
}

// ---------------------------------------------------------------------------------------------
// Counter checks: the named counter's change over a step, summed over workers or on one.

struct Check {
  std::string name;
  std::function<uint64_t(const WorkerCounters&)> get;
  int64_t want;
  int worker = -1;  // -1: the sum over all workers
};

Check ctr(const char* name, core::Counter WorkerCounters::*field, int64_t n) {
  return {name, [field](const WorkerCounters& wc) { return (wc.*field).get(); }, n};
}
#define LB_CTR(field, n) ctr(#field, &WorkerCounters::field, n)

Check drops(DropReason r, int64_t n = 1) {
  return {"drops[" + std::string(core::to_string(r)) + "]",
          [r](const WorkerCounters& c) { return c.drops[static_cast<size_t>(r)].get(); }, n};
}
Check port_rx(uint16_t p, int64_t n) {
  return {"port[" + std::to_string(p) + "].rx_packets",
          [p](const WorkerCounters& c) { return c.port[p].rx_packets.get(); }, n};
}
Check port_tx(uint16_t p, int64_t n) {
  return {"port[" + std::to_string(p) + "].tx_packets",
          [p](const WorkerCounters& c) { return c.port[p].tx_packets.get(); }, n};
}
Check backend_in(const Backend& b, int64_t n) {
  return {"backend[" + std::to_string(b.id) + "].packets_in",
          [id = b.id](const WorkerCounters& c) { return c.backend[id].packets_in.get(); }, n};
}
Check backend_out(const Backend& b, int64_t n) {
  return {"backend[" + std::to_string(b.id) + "].packets_out",
          [id = b.id](const WorkerCounters& c) { return c.backend[id].packets_out.get(); }, n};
}
Check backend_flows(const Backend& b, int64_t n) {
  return {"backend[" + std::to_string(b.id) + "].flows_total",
          [id = b.id](const WorkerCounters& c) { return c.backend[id].flows_total.get(); }, n};
}
Check backend_syn_rst(const Backend& b, int64_t n) {
  return {"backend[" + std::to_string(b.id) + "].syn_rst",
          [id = b.id](const WorkerCounters& c) { return c.backend[id].syn_rst.get(); }, n};
}
Check backend_syn_timeout(const Backend& b, int64_t n) {
  return {"backend[" + std::to_string(b.id) + "].syn_timeout",
          [id = b.id](const WorkerCounters& c) { return c.backend[id].syn_timeout.get(); }, n};
}
Check on(int worker, Check c) {
  c.worker = worker;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Steps and cases

struct In {
  uint16_t port;
  uint16_t queue;
  Bytes frame;
  size_t split = 0;  // > 0: injected as two chained mbufs, split there
};
In rx_client(Bytes f, uint16_t q = 0) {
  return {kClientPort, q, std::move(f)};
}
In rx_backend(Bytes f, uint16_t q = 0) {
  return {kBackendPort, q, std::move(f)};
}
Emitted tx_client(Bytes f, uint16_t q = 0) {
  return {kClientPort, q, std::move(f)};
}
Emitted tx_backend(Bytes f, uint16_t q = 0) {
  return {kBackendPort, q, std::move(f)};
}

using Verify = std::function<void(const dp::Dataplane&)>;

struct Step {
  std::string what;
  std::vector<In> in = {};
  std::vector<Emitted> out = {};  // exactly what must be transmitted; empty: nothing
  std::vector<Check> checks = {};
  core::Tick advance = 0;     // the clock moves this far before the step
  bool control_tick = false;  // run Dataplane::control_tick(now) before polling
  // Pool updates sent through the shared-memory channel as lb-healthd would (before the
  // control tick, which the step then runs); needs HarnessOptions::channel.
  std::vector<shm::ServiceUpdate> updates = {};
  int rounds = 2;  // poll rounds (all workers each); aging needs more
  Verify verify = {};
};

struct Env {
  core::Tick hz;  // Dataplane::ticks_per_second()
};

struct Case {
  std::string name;  // the gtest name
  std::string description;
  HarnessOptions options = {};
  bool resolve_backends = true;  // learn the backends' MACs from ARP replies first
  std::function<std::vector<Step>(const Env&)> script;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name << " (" << c.description << ")";
}

Verify flows_are(std::vector<uint32_t> per_worker) {
  return [per_worker](const dp::Dataplane& d) {
    for (uint16_t w = 0; w < per_worker.size(); ++w)
      EXPECT_EQ(d.processor(w).flows().size(), per_worker[w]) << "flows on worker " << w;
  };
}

std::vector<Step> operator+(std::vector<Step> a, const std::vector<Step>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// SYN, SYN-ACK, ACK of client c through backend b (the scheduler must pick b).
std::vector<Step> handshake(const Client& c, const Backend& b) {
  return {
      {.what = "client SYN goes to " + ip_str(b.ip),
       .in = {rx_client(c2v(c, syn_seg()))},
       .out = {tx_backend(c2b(c, b, syn_seg()))},
       .checks = {LB_CTR(flows_created, 1), backend_in(b, 1), backend_flows(b, 1)}},
      {.what = "backend SYN-ACK goes to the client from the VIP",
       .in = {rx_backend(b2c(b, c, synack_seg()))},
       .out = {tx_client(v2c(c, synack_seg()))},
       .checks = {LB_CTR(flows_created, 0), backend_out(b, 1)}},
      {.what = "client ACK goes to the same backend",
       .in = {rx_client(c2v(c, ack_seg()))},
       .out = {tx_backend(c2b(c, b, ack_seg()))},
       .checks = {backend_in(b, 1)}},
  };
}

// A frame that must be dropped on the client port, counted under `reason`.
Case malformed(std::string name, std::string description, Bytes frame, DropReason reason) {
  return {.name = std::move(name),
          .description = std::move(description),
          .script = [frame, reason](const Env&) -> std::vector<Step> {
            return {{.what = "dropped",
                     .in = {rx_client(frame)},
                     .out = {},
                     .checks = {drops(reason, 1), port_rx(kClientPort, 1), port_tx(kClientPort, 0),
                                port_tx(kBackendPort, 0), LB_CTR(flows_created, 0)},
                     .verify = flows_are({0})}};
          }};
}

// ---------------------------------------------------------------------------------------------
// Pool changes, as lb-healthd sends them: the full state of service "web".

shm::ServiceUpdate web_update(uint64_t generation,
                              const std::vector<std::pair<Backend, shm::BackendState>>& backends,
                              uint16_t port = kVport) {
  shm::ServiceUpdate u{};
  u.generation = generation;
  std::strncpy(u.name, port == kVport ? "web" : "api", shm::kNameLen - 1);
  u.vip = kVip;
  u.port = port;
  u.backend_count = static_cast<uint32_t>(backends.size());
  for (size_t i = 0; i < backends.size(); ++i)
    u.backends[i] = {
        backends[i].first.ip, kBackendTcpPort, 1, static_cast<uint8_t>(backends[i].second), {}};
  return u;
}

Verify generation_is(uint64_t applied, uint64_t rejected = 0) {
  return [=](const dp::Dataplane& d) {
    ASSERT_NE(d.segment(), nullptr);
    const shm::Header& hd = d.segment()->header();
    EXPECT_EQ(hd.applied_generation.load(), applied);
    EXPECT_EQ(hd.rejected_generation.load(), rejected);
  };
}

void add_pool_change_cases(std::vector<Case>& cases) {
  using S = shm::BackendState;
  const Client c1 = client(1);
  const Client c2 = client(2);
  const HarnessOptions with_channel{.channel = true};
  cases.push_back(
      {.name = "DrainKeepsEstablishedFlows",
       .description = "a draining backend keeps its established flows; new ones avoid it",
       .options = with_channel,
       .script = [=](const Env&) -> std::vector<Step> {
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "healthd: .11 drains",
                     .updates = {web_update(
                         7, {{kB[0], S::kDraining}, {kB[1], S::kActive}, {kB[2], S::kActive}})},
                     .verify = generation_is(7)},
                    {.what = "the established flow still reaches .11",
                     .in = {rx_client(c2v(c1, data_seg(1001, 5001, "GET /")))},
                     .out = {tx_backend(c2b(c1, kB[0], data_seg(1001, 5001, "GET /")))},
                     .checks = {backend_in(kB[0], 1), LB_CTR(flows_reset, 0)}},
                    {.what = "a new connection goes to an active backend (rr: .13)",
                     .in = {rx_client(c2v(c2, syn_seg()))},
                     .out = {tx_backend(c2b(c2, kB[2], syn_seg()))},
                     .checks = {backend_in(kB[2], 1), backend_in(kB[0], 0)}},
                };
       }});
  cases.push_back(
      {.name = "StoppedBackendResetsItsFlows",
       .description = "a backend removed from the pool (or in maint with drop): its client "
                      "gets an RST at its next packet, and so does the backend later",
       .options = with_channel,
       .script = [=](const Env& e) -> std::vector<Step> {
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "healthd: .11 is gone",
                     .updates = {web_update(3, {{kB[1], S::kActive}, {kB[2], S::kActive}})},
                     .verify = generation_is(3)},
                    {.what = "client data is answered with RST (seq = its ACK)",
                     .in = {rx_client(c2v(c1, data_seg(1001, 5001, "GET /")))},
                     .out = {tx_client(rst_to_client(c1, kVport, kRst, 5001, 0))},
                     .checks = {LB_CTR(flows_reset, 1), LB_CTR(flows_active, -1),
                                LB_CTR(rst_backend_stopped, 1), backend_in(kB[0], 0)},
                     .verify = flows_are({1})},  // the reset record
                    {.what = "its retransmission gets the same RST (not a miss)",
                     .in = {rx_client(c2v(c1, data_seg(1001, 5001, "GET /")))},
                     .out = {tx_client(rst_to_client(c1, kVport, kRst, 5001, 0))},
                     .checks = {LB_CTR(flows_reset, 0), LB_CTR(rst_backend_stopped, 1)}},
                    {.what = ".11's late response: an RST from the client's address to .11",
                     .in = {rx_backend(b2c(kB[0], c1, data_seg(5001, 1001, "HTTP/1.1 200", 0)))},
                     .out = {tx_backend(rst_to_backend(kB[0], c1, 1001))},
                     .checks = {LB_CTR(rst_backend_stopped, 1), backend_out(kB[0], 0)}},
                    {.what = "tcp_closed_timeout (2 s) and one sweep later the record is gone",
                     .checks = {LB_CTR(flows_expired, 0), LB_CTR(flows_active, 0)},
                     .advance = 3 * e.hz + 1,
                     .rounds = 40,
                     .verify = flows_are({0})},
                };
       }});
  cases.push_back(
      {.name = "StoppedBackendSpeaksFirst",
       .description = "a removed backend's response in flight becomes the client's RST, from "
                      "the VIP, with the backend's sequence number; the client's next segment "
                      "and the backend's retransmission get RSTs too",
       .options = with_channel,
       .script = [=](const Env& e) -> std::vector<Step> {
         const Seg resp = data_seg(5001, 1006, "HTTP/1.1 200 OK\r\n\r\n", 0);
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "client request -> .11",
                     .in = {rx_client(c2v(c1, data_seg(1001, 5001, "GET /")))},
                     .out = {tx_backend(c2b(c1, kB[0], data_seg(1001, 5001, "GET /")))}},
                    {.what = "healthd: .11 is gone",
                     .updates = {web_update(3, {{kB[1], S::kActive}, {kB[2], S::kActive}})},
                     .verify = generation_is(3)},
                    {.what = ".11's response arrives first: RST|ACK to the client, seq 5001",
                     .in = {rx_backend(b2c(kB[0], c1, resp))},
                     .out = {tx_client(rst_to_client(c1, kVport, kRst | kAck, 5001, 1006))},
                     .checks = {LB_CTR(flows_reset, 1), LB_CTR(flows_active, -1),
                                LB_CTR(rst_backend_stopped, 1), backend_out(kB[0], 0)},
                     .verify = flows_are({1})},
                    {.what = "the client's ACK (a challenge ACK, say): its exact RST",
                     .in = {rx_client(c2v(c1, ack_seg(1006, 5001)))},
                     .out = {tx_client(rst_to_client(c1, kVport, kRst, 5001, 0))},
                     .checks = {LB_CTR(rst_backend_stopped, 1), backend_in(kB[0], 0)}},
                    {.what = ".11 retransmits: it gets an RST from the client's address",
                     .in = {rx_backend(b2c(kB[0], c1, resp))},
                     .out = {tx_backend(rst_to_backend(kB[0], c1, 1006))},
                     .checks = {LB_CTR(rst_backend_stopped, 1)}},
                    {.what = "the client's own RST is not answered",
                     .in = {rx_client(c2v(c1, Seg{.flags = kRst, .seq = 1006, .window = 0}))},
                     .checks = {drops(DropReason::kBackendStopped, 1)}},
                    {.what = "a new SYN on the tuple is scheduled afresh (rr: .13)",
                     .in = {rx_client(c2v(c1, syn_seg(9000)))},
                     .out = {tx_backend(c2b(c1, kB[2], syn_seg(9000)))},
                     .checks = {LB_CTR(flows_created, 1), LB_CTR(flows_reused, 0)},
                     .advance = e.hz / 10,
                     .verify = flows_are({1})},
                };
       }});
  cases.push_back(
      {.name = "PendingSynMovesWhenItsBackendGoesDown",
       .description = "a SYN still unanswered when its backend stops taking new flows moves to "
                      "another backend at the client's retransmission",
       .options = with_channel,
       .script = [=](const Env&) -> std::vector<Step> {
         return {
             {.what = "SYN -> .11",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(c2b(c1, kB[0], syn_seg()))}},
             {.what = "healthd: .11 down (draining)",
              .updates = {web_update(
                  9, {{kB[0], S::kDraining}, {kB[1], S::kActive}, {kB[2], S::kActive}})}},
             {.what = "the retransmitted SYN goes to .13",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(c2b(c1, kB[2], syn_seg()))},
              .checks = {LB_CTR(retries, 1), backend_in(kB[2], 1), backend_in(kB[0], 0)},
              .advance = 1},
         };
       }});
  cases.push_back({.name = "RefusedUpdateChangesNothing",
                   .description =
                       "a malformed update is refused whole (rejected_generation), the pool "
                       "stays, and later updates still apply",
                   .options = with_channel,
                   .script = [=](const Env&) -> std::vector<Step> {
                     shm::ServiceUpdate bad = web_update(4, {{kB[1], S::kActive}});
                     bad.scheduler = 42;
                     return {
                         {.what = "healthd sends a bad update",
                          .updates = {bad},
                          .verify = generation_is(4, 4)},
                         {.what = "round robin still over all three: .11 first",
                          .in = {rx_client(c2v(c1, syn_seg()))},
                          .out = {tx_backend(c2b(c1, kB[0], syn_seg()))}},
                         {.what = "a good update after it applies: only .12",
                          .updates = {web_update(5, {{kB[1], S::kActive}})},
                          .verify = generation_is(5, 4)},
                         {.what = "so the next connection goes to .12",
                          .in = {rx_client(c2v(c2, syn_seg()))},
                          .out = {tx_backend(c2b(c2, kB[1], syn_seg()))}},
                     };
                   }});
  cases.push_back(
      {.name = "NewServiceAtRuntime",
       .description = "an update naming a new service makes lbd serve a new VIP:port at once",
       .options = with_channel,
       .script = [=](const Env&) -> std::vector<Step> {
         return {
             {.what = "nothing listens on VIP:8443 yet",
              .in = {rx_client(c2v(c1, syn_seg(), {}, 8443))},
              .checks = {drops(DropReason::kNotForUs, 1)}},
             {.what = "healthd adds service api on VIP:8443 -> .13",
              .updates = {web_update(2, {{kB[2], S::kActive}}, 8443)},
              .verify = generation_is(2)},
             {.what = "now a SYN to VIP:8443 reaches .13",
              .in = {rx_client(c2v(c1, syn_seg(), {}, 8443))},
              .out = {tx_backend(c2b(c1, kB[2], syn_seg()))},
              .checks = {LB_CTR(flows_created, 1)}},
         };
       }});
}

// ---------------------------------------------------------------------------------------------
// ICMP errors (dataplane/core/icmp_error.cc): the quote is the first `n` bytes of the IPv4
// packet of an untagged frame, built from scratch, so that an expected frame's inner checksums
// are computed independently of lbd.

Bytes quote(const Bytes& frame, size_t n) {
  return Bytes(frame.begin() + 14, frame.begin() + 14 + static_cast<std::ptrdiff_t>(n));
}
// Frame `f` (untagged IPv4) with TTL `ttl` and its header checksum made right again: what a
// packet lbd forwarded (one hop, TTL 64 -> 63) looks like in an ICMP error's quote.
Bytes with_ttl(Bytes f, uint8_t ttl) {
  f[14 + 8] = ttl;
  f[14 + 10] = f[14 + 11] = 0;
  const auto sum = static_cast<uint16_t>(~ref_sum(f.data() + 14, 20));
  f[14 + 10] = static_cast<uint8_t>(sum >> 8);
  f[14 + 11] = static_cast<uint8_t>(sum & 0xff);
  return f;
}
// Destination unreachable (type 3) or time exceeded (11); `mtu` is the next-hop MTU of a
// fragmentation needed (code 4). Not padded: long enough.
Bytes icmp_err(const Eth& e, uint32_t src, uint32_t dst, uint8_t type, uint8_t code, uint16_t mtu,
               const Bytes& quoted) {
  Ip ip;
  ip.src = src;
  ip.dst = dst;
  ip.ttl = 63;
  ip.id = 0x5151;
  ip.frag = 0;
  Icmp m;
  m.type = type;
  m.code = code;
  m.seq = mtu;
  m.payload = quoted;
  return icmp_frame(e, ip, m, 0);
}
constexpr uint32_t kRouterIp = ip4(10, 10, 0, 254);
const MacAddr kRouterMac = mac(0x02, 0xaa, 0, 0, 0, 0xfe);
const Seg kUpData = data_seg(1001, 5001, "GET / HTTP/1.1\r\n\r\n", 0x1113);
const Seg kDownData = data_seg(5001, 1019, "HTTP/1.1 200 OK\r\n\r\n", 0x2001);

void icmp_error_cases(std::vector<Case>& cases) {
  const Client c1 = client(1);
  const Backend& b = kB[0];
  cases.push_back(
      {.name = "IcmpFragNeededFromBackendSideReachesClientAboutTheVip",
       .description = "dnat: the backend's frag-needed about lbd -> backend goes to the client "
                      "from the VIP, quoting client -> VIP with inner IP and TCP checksums",
       .script = [=](const Env&) -> std::vector<Step> {
         return handshake(c1, b) +
                std::vector<Step>{
                    {.what = "frag needed, MTU 1280, quoting 48 bytes (TCP checksum included)",
                     .in = {rx_backend(icmp_err(eth(kLbBackendMac, b.mac), b.ip, c1.ip, 3, 4, 1280,
                                                quote(c2b(c1, b, kUpData), 48)))},
                     .out = {tx_client(icmp_err(eth(c1.mac, kLbClientMac), kVip, c1.ip, 3, 4, 1280,
                                                quote(with_ttl(c2v(c1, kUpData), 63), 48)))},
                     .checks = {LB_CTR(icmp_errors_translated, 1)}},
                    {.what = "time exceeded quoting 28 bytes (no TCP checksum: ports only)",
                     .in = {rx_backend(icmp_err(eth(kLbBackendMac, b.mac), b.ip, c1.ip, 11, 0, 0,
                                                quote(c2b(c1, b, kUpData), 28)))},
                     .out = {tx_client(icmp_err(eth(c1.mac, kLbClientMac), kVip, c1.ip, 11, 0, 0,
                                                quote(with_ttl(c2v(c1, kUpData), 63), 28)))},
                     .checks = {LB_CTR(icmp_errors_translated, 1)}},
                };
       }});
  cases.push_back(
      {.name = "IcmpFragNeededFromClientSideReachesBackend",
       .description = "dnat: a client-side router's frag-needed about VIP -> client goes to the "
                      "backend, quoting backend -> client",
       .script = [=](const Env&) -> std::vector<Step> {
         return handshake(c1, b) +
                std::vector<Step>{
                    {.what = "frag needed, MTU 1400, from the router to the VIP",
                     .in = {rx_client(icmp_err(eth(kLbClientMac, kRouterMac), kRouterIp, kVip, 3, 4,
                                               1400, quote(v2c(c1, kDownData), 48)))},
                     .out = {tx_backend(icmp_err(eth(b.mac, kLbBackendMac), kRouterIp, b.ip, 3, 4,
                                                 1400,
                                                 quote(with_ttl(b2c(b, c1, kDownData), 63), 48)))},
                     .checks = {LB_CTR(icmp_errors_translated, 1), backend_in(b, 0)}},
                };
       }});
  cases.push_back(
      {.name = "IcmpErrorQuotingNoFlowIsDropped",
       .description = "an error about a connection lbd does not have, or sent to another "
                      "address than the quote's source, is dropped and counted",
       .script = [=](const Env&) -> std::vector<Step> {
         const Client c2 = client(2);
         return handshake(c1, b) +
                std::vector<Step>{
                    {.what = "quotes client 2's segment: no flow",
                     .in = {rx_backend(icmp_err(eth(kLbBackendMac, b.mac), b.ip, c2.ip, 3, 4, 1280,
                                                quote(c2b(c2, b, kUpData), 48)))},
                     .checks = {drops(DropReason::kIcmpErrorNoFlow, 1),
                                LB_CTR(icmp_errors_translated, 0)}},
                    {.what = "quotes client 1's segment, sent to 10.10.0.1",
                     .in = {rx_backend(icmp_err(eth(kLbBackendMac, b.mac), b.ip, kLbClientIp, 3, 4,
                                                1280, quote(c2b(c1, b, kUpData), 48)))},
                     .checks = {drops(DropReason::kIcmpErrorNoFlow, 1)}},
                };
       }});
  cases.push_back({.name = "IcmpErrorsAreRateLimitedPerWorker",
                   .description = "101 errors at once: 100 (the burst) go on, one is dropped",
                   .script = [=](const Env& e) -> std::vector<Step> {
                     const Bytes in = icmp_err(eth(kLbBackendMac, b.mac), b.ip, c1.ip, 3, 4, 1280,
                                               quote(c2b(c1, b, kUpData), 48));
                     const Bytes out = icmp_err(eth(c1.mac, kLbClientMac), kVip, c1.ip, 3, 4, 1280,
                                                quote(with_ttl(c2v(c1, kUpData), 63), 48));
                     Step s{.what = "101 errors",
                            .checks = {LB_CTR(icmp_errors_translated, 100),
                                       drops(DropReason::kIcmpErrorRateLimited, 1)},
                            .rounds = 4};  // two bursts of at most 64
                     for (int i = 0; i < 101; ++i) s.in.push_back(rx_backend(in));
                     for (int i = 0; i < 100; ++i) s.out.push_back(tx_client(out));
                     Step later{.what = "a second later, the bucket has refilled",
                                .in = {rx_backend(in)},
                                .out = {tx_client(out)},
                                .checks = {LB_CTR(icmp_errors_translated, 1)},
                                .advance = e.hz};
                     return handshake(c1, b) + std::vector<Step>{s, later};
                   }});
}

// ---------------------------------------------------------------------------------------------
// Full-NAT (HarnessOptions::fullnat): the client's segment leaves from local:lport, the
// backend answers local:lport.

constexpr uint32_t kLocal = ip4(10, 20, 0, 50);
// client -> VIP as lbd must send it to backend b from local:lport
Bytes l2b(const Backend& b, const Seg& s, uint16_t lport, uint32_t local = kLocal) {
  Ip ip = ip_of(s, local, b.ip);
  ip.ttl = 63;  // lbd is a router hop
  return tcp_frame(eth(b.mac, kLbBackendMac), ip, tcp_of(s, lport, kBackendTcpPort), 0);
}
// backend b -> local:lport, as it arrives on the backend port
Bytes b2l(const Backend& b, const Seg& s, uint16_t lport, uint32_t local = kLocal) {
  return tcp_frame(eth(kLbBackendMac, b.mac), ip_of(s, b.ip, local),
                   tcp_of(s, kBackendTcpPort, lport));
}
Check fullnat_in_use(uint32_t li, int64_t n) {
  return {"fullnat[" + std::to_string(li) + "].ports_in_use",
          [li](const WorkerCounters& c) { return c.fullnat[li].ports_in_use.get(); }, n};
}
Check fullnat_failures(uint32_t li, int64_t n) {
  return {"fullnat[" + std::to_string(li) + "].alloc_failures",
          [li](const WorkerCounters& c) { return c.fullnat[li].alloc_failures.get(); }, n};
}

void fullnat_cases(std::vector<Case>& cases) {
  const Client c1 = client(1);
  const Backend& b = kB[0];
  const HarnessOptions one{.fullnat = true};
  cases.push_back(
      {.name = "FullnatSynDataFinBothWays",
       .description = "client -> VIP leaves as 10.20.0.50:1024 -> backend; the backend's "
                      "replies to 10.20.0.50:1024 go back as VIP -> client; FIN both ways",
       .options = one,
       .script = [=](const Env& e) -> std::vector<Step> {
         const Seg fin_up{.flags = kFin | kAck, .seq = 1019, .ack = 5020, .ip_id = 0x1115};
         const Seg fin_down{.flags = kFin | kAck, .seq = 5020, .ack = 1020, .ip_id = 0x2002};
         const Seg last_ack = ack_seg(1020, 5021);
         return {
             {.what = "SYN leaves from the first local port",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(l2b(b, syn_seg(), 1024))},
              .checks = {LB_CTR(flows_created, 1), backend_in(b, 1), fullnat_in_use(0, 1)},
              .verify =
                  [](const dp::Dataplane& d) {
                    const core::SnatPorts& sp = d.processor(0).snat();
                    EXPECT_EQ(sp.stats(0).in_use, 1u);
                    EXPECT_NE(sp.flow_of(0, 1024), core::SnatPorts::kNoFlow);
                  }},
             {.what = "SYN-ACK to the local address goes to the client from the VIP",
              .in = {rx_backend(b2l(b, synack_seg(), 1024))},
              .out = {tx_client(v2c(c1, synack_seg()))},
              .checks = {backend_out(b, 1)}},
             {.what = "ACK",
              .in = {rx_client(c2v(c1, ack_seg()))},
              .out = {tx_backend(l2b(b, ack_seg(), 1024))}},
             {.what = "data up",
              .in = {rx_client(c2v(c1, kUpData))},
              .out = {tx_backend(l2b(b, kUpData, 1024))}},
             {.what = "data down",
              .in = {rx_backend(b2l(b, kDownData, 1024))},
              .out = {tx_client(v2c(c1, kDownData))}},
             {.what = "client FIN",
              .in = {rx_client(c2v(c1, fin_up))},
              .out = {tx_backend(l2b(b, fin_up, 1024))}},
             {.what = "backend FIN",
              .in = {rx_backend(b2l(b, fin_down, 1024))},
              .out = {tx_client(v2c(c1, fin_down))}},
             {.what = "last ACK",
              .in = {rx_client(c2v(c1, last_ack))},
              .out = {tx_backend(l2b(b, last_ack, 1024))}},
             {.what = "the port is held until the record is reclaimed (closed timeout 2 s)",
              .checks = {fullnat_in_use(0, 0)},
              .advance = e.hz,
              .rounds = 40},
             {.what = "then it is free again",
              .checks = {fullnat_in_use(0, -1), LB_CTR(flows_expired, 1)},
              .advance = 2 * e.hz,
              .rounds = 40,
              .verify = flows_are({0})},
         };
       }});
  {
    // A second full-NAT service on the VIP, port 8000, balanced to the same backend.
    HarnessOptions two = one;
    two.services_extra =
        "  { name = \"web2\"; vip = \"10.10.0.100\"; port = 8000; forward = \"fullnat\";\n"
        "    backends = ( { address = \"10.20.0.11\"; port = 8080; } ); },\n";
    cases.push_back(
        {.name = "FullnatOneClientPortToTwoServicesOfOneBackend",
         .description = "one client ip:port to two full-NAT services of one backend: two flows "
                        "from two local ports, each answered from its own service (a full-NAT "
                        "flow is not indexed under its backend key, so it is no flow_conflict)",
         .options = two,
         .script = [=](const Env&) -> std::vector<Step> {
           // VIP:8000 -> client, as lbd must send the backend's answer to local:1025.
           const auto v2c_8000 = [&](const Seg& s) {
             Ip ip = ip_of(s, kVip, c1.ip);
             ip.ttl = 63;
             return tcp_frame(eth(c1.mac, kLbClientMac), ip, tcp_of(s, 8000, c1.port), 0);
           };
           return {
               {.what = "SYN to :80 leaves from local port 1024",
                .in = {rx_client(c2v(c1, syn_seg()))},
                .out = {tx_backend(l2b(b, syn_seg(), 1024))},
                .checks = {LB_CTR(flows_created, 1), fullnat_in_use(0, 1)}},
               {.what = "the same client ip:port's SYN to :8000 leaves from 1025",
                .in = {rx_client(c2v(c1, syn_seg(), {}, 8000))},
                .out = {tx_backend(l2b(b, syn_seg(), 1025))},
                .checks = {LB_CTR(flows_created, 1), fullnat_in_use(0, 1),
                           drops(DropReason::kFlowConflict, 0)}},
               {.what = "the backend's SYN-ACK to 1025 goes to the client from VIP:8000",
                .in = {rx_backend(b2l(b, synack_seg(), 1025))},
                .out = {tx_client(v2c_8000(synack_seg()))}},
               {.what = "and its SYN-ACK to 1024 from VIP:80",
                .in = {rx_backend(b2l(b, synack_seg(), 1024))},
                .out = {tx_client(v2c(c1, synack_seg()))},
                .verify = flows_are({2})},
           };
         }});
  }
  cases.push_back({.name = "FullnatRstBothWaysAndStrayReplies",
                   .description =
                       "an RST from either side is translated; a segment to a local port no "
                       "flow holds, or from another backend, is fullnat_no_flow",
                   .options = {.retry_on_rst = false, .fullnat = true},
                   .script = [=](const Env&) -> std::vector<Step> {
                     const Seg rst_down{.flags = kRst | kAck, .seq = 5001, .ack = 1001, .ip_id = 0};
                     const Seg rst_up{.flags = kRst, .seq = 1001, .ip_id = 0x1116};
                     const Client c2 = client(2);
                     return {
                         {.what = "SYN",
                          .in = {rx_client(c2v(c1, syn_seg()))},
                          .out = {tx_backend(l2b(b, syn_seg(), 1024))}},
                         {.what = "SYN of client 2 takes the next port",
                          .in = {rx_client(c2v(c2, syn_seg()))},
                          .out = {tx_backend(l2b(kB[1], syn_seg(), 1025))}},
                         {.what = "segment to port 1030: no flow",
                          .in = {rx_backend(b2l(b, synack_seg(), 1030))},
                          .checks = {drops(DropReason::kFullnatNoFlow, 1)}},
                         {.what = "backend .12 to client 1's port 1024: not its flow",
                          .in = {rx_backend(b2l(kB[1], synack_seg(), 1024))},
                          .checks = {drops(DropReason::kFullnatNoFlow, 1)}},
                         {.what = "backend's RST to client 2's port goes to client 2 from the VIP",
                          .in = {rx_backend(b2l(kB[1], rst_down, 1025))},
                          .out = {tx_client(v2c(c2, rst_down))}},
                         {.what = "client 1's RST goes to its backend from the local port",
                          .in = {rx_client(c2v(c1, rst_up))},
                          .out = {tx_backend(l2b(b, rst_up, 1024))}},
                     };
                   }});
  {
    HarnessOptions tiny = one;
    tiny.fullnat_first = 2000;
    tiny.fullnat_last = 2001;
    tiny.flows_extra = "fullnat_port_hold = 10;";
    cases.push_back(
        {.name = "FullnatPortsExhausted",
         .description = "with ports 2000-2001 the third concurrent SYN is a counted drop, "
                        "and a port is reused once its flow's record is reclaimed and its "
                        "hold (10 s here) has passed",
         .options = tiny,
         .script = [=](const Env& e) -> std::vector<Step> {
           const Client c2 = client(2), c3 = client(3);
           return {
               {.what = "two SYNs take 2000 and 2001",
                .in = {rx_client(c2v(c1, syn_seg())), rx_client(c2v(c2, syn_seg()))},
                .out = {tx_backend(l2b(kB[0], syn_seg(), 2000)),
                        tx_backend(l2b(kB[1], syn_seg(), 2001))},
                .checks = {fullnat_in_use(0, 2)}},
               {.what = "the third finds none",
                .in = {rx_client(c2v(c3, syn_seg()))},
                .checks = {drops(DropReason::kFullnatPortsExhausted, 1), fullnat_failures(0, 1),
                           LB_CTR(flows_refused, 1), LB_CTR(flows_created, 0)},
                .verify = flows_are({2})},
               {.what = "client 1 resets: its flow closes, its port stays held",
                .in = {rx_client(c2v(c1, Seg{.flags = kRst, .seq = 1001, .ip_id = 0x1116}))},
                .out = {tx_backend(
                    l2b(kB[0], Seg{.flags = kRst, .seq = 1001, .ip_id = 0x1116}, 2000))},
                .checks = {fullnat_in_use(0, 0)}},
               {.what = "2.5 s later its record is reclaimed (closed timeout 2 s), client 2's "
                        "not yet (SYN timeout 3 s)",
                .checks = {fullnat_in_use(0, -1), LB_CTR(flows_expired, 1)},
                .advance = e.hz * 5 / 2,
                .rounds = 40},
               {.what = "client 3's retransmission finds port 2000 free but in its hold: a "
                        "counted drop of its own",
                .in = {rx_client(c2v(c3, syn_seg()))},
                .checks = {drops(DropReason::kFullnatPortsCooling, 1), fullnat_failures(0, 1),
                           LB_CTR(flows_refused, 1), LB_CTR(flows_created, 0)}},
               {.what = "10 s after its release, client 3's next retransmission gets port 2000 "
                        "(rr: its two failed tries took .13 and .11, so .12)",
                .in = {rx_client(c2v(c3, syn_seg()))},
                .out = {tx_backend(l2b(kB[1], syn_seg(), 2000))},
                .checks = {fullnat_in_use(0, 0), LB_CTR(flows_created, 1)},
                .advance = e.hz * 10,
                .rounds = 40},
           };
         }});
  }
  {
    // With 2 workers, worker w owns the local ports p with p % 2 == w.
    Client own0 = client(5, 41000);
    Client own1 = client(6, 42000);
    while (core::flow_owner(own0.ip, own0.port, 2, 128) != 0) ++own0.port;
    while (core::flow_owner(own1.ip, own1.port, 2, 128) != 1) ++own1.port;
    HarnessOptions two = one;
    two.workers = 2;
    cases.push_back(
        {.name = "FullnatTwoWorkersConnRedirect",
         .description = "each worker takes ports of its own parity; a reply that arrives on "
                        "the other worker's queue is handed to the port's owner and translated",
         .options = two,
         .script = [=](const Env&) -> std::vector<Step> {
           // More replies than a burst, all for worker 1's flow, on worker 0's queue: handed
           // over a burst at a time and sent in the order they came.
           Step burst{.what = "40 replies to 1025 on queue 0: handed to worker 1, in order",
                      .checks = {on(0, LB_CTR(handoff_out, 40)), on(1, LB_CTR(handoff_in, 40)),
                                 drops(DropReason::kHandoffFull, 0)},
                      .rounds = 3};
           for (uint32_t i = 0; i < 40; ++i) {
             const Seg d = data_seg(5001 + 19 * i, 1019, "HTTP/1.1 200 OK\r\n\r\n", 0x2001);
             burst.in.push_back(rx_backend(b2l(kB[0], d, 1025), 0));
             burst.out.push_back(tx_client(v2c(own1, d), 1));
           }
           return {
               {.what = "worker 1's client: port 1025, sent on queue 1",
                .in = {rx_client(c2v(own1, syn_seg()), 1)},
                .out = {tx_backend(l2b(kB[0], syn_seg(), 1025), 1)}},
               {.what = "worker 0's client: port 1024, sent on queue 0",
                .in = {rx_client(c2v(own0, syn_seg()), 0)},
                .out = {tx_backend(l2b(kB[0], syn_seg(), 1024), 0)}},
               {.what = "reply to 1025 on queue 0: redirected to worker 1",
                .in = {rx_backend(b2l(kB[0], synack_seg(), 1025), 0)},
                .out = {tx_client(v2c(own1, synack_seg()), 1)},
                .checks = {on(0, LB_CTR(handoff_out, 1)), on(1, LB_CTR(handoff_in, 1)),
                           on(1, backend_out(kB[0], 1))}},
               {.what = "reply to 1024 on queue 1: redirected to worker 0",
                .in = {rx_backend(b2l(kB[0], synack_seg(), 1024), 1)},
                .out = {tx_client(v2c(own0, synack_seg()), 0)},
                .checks = {on(1, LB_CTR(handoff_out, 1)), on(0, LB_CTR(handoff_in, 1))}},
               {.what = "reply to 1024 on queue 0: no handoff",
                .in = {rx_backend(b2l(kB[0], kDownData, 1024), 0)},
                .out = {tx_client(v2c(own0, kDownData), 0)},
                .checks = {LB_CTR(handoff_out, 0)}},
               burst,
           };
         }});
  }
  cases.push_back({.name = "FullnatArpForTheLocalAddress",
                   .description =
                       "who-has 10.20.0.50 on the backend port is answered; on the client "
                       "port (not its subnet) it is not",
                   .options = one,
                   .resolve_backends = false,
                   .script = [=](const Env&) -> std::vector<Step> {
                     return {
                         {.what = "backend asks for 10.20.0.50",
                          .in = {rx_backend(arp_request(b.mac, b.ip, kLocal))},
                          .out = {tx_backend(arp_reply(kLbBackendMac, kLocal, b.mac, b.ip))},
                          .checks = {LB_CTR(arp_replies, 1)}},
                         {.what = "client asks for 10.20.0.50",
                          .in = {rx_client(arp_request(c1.mac, c1.ip, kLocal))},
                          .checks = {drops(DropReason::kArpNotForUs, 1)}},
                     };
                   }});
  cases.push_back(
      {.name = "FullnatIcmpFragNeededBothWays",
       .description = "fullnat: the backend's frag-needed about local -> backend reaches the "
                      "client about client -> VIP; a client-side router's about VIP -> client "
                      "reaches the backend from the local address about backend -> local",
       .options = one,
       .script = [=](const Env&) -> std::vector<Step> {
         return {
             {.what = "SYN",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(l2b(b, syn_seg(), 1024))}},
             {.what = "backend: frag needed, MTU 1280, to the local address",
              .in = {rx_backend(icmp_err(eth(kLbBackendMac, b.mac), b.ip, kLocal, 3, 4, 1280,
                                         quote(l2b(b, kUpData, 1024), 48)))},
              .out = {tx_client(icmp_err(eth(c1.mac, kLbClientMac), kVip, c1.ip, 3, 4, 1280,
                                         quote(with_ttl(c2v(c1, kUpData), 63), 48)))},
              .checks = {LB_CTR(icmp_errors_translated, 1)}},
             {.what = "client-side router: frag needed, MTU 1400, to the VIP",
              .in = {rx_client(icmp_err(eth(kLbClientMac, kRouterMac), kRouterIp, kVip, 3, 4, 1400,
                                        quote(v2c(c1, kDownData), 48)))},
              .out = {tx_backend(icmp_err(eth(b.mac, kLbBackendMac), kLocal, b.ip, 3, 4, 1400,
                                          quote(with_ttl(b2l(b, kDownData, 1024), 63), 48)))},
              .checks = {LB_CTR(icmp_errors_translated, 1)}},
         };
       }});
}

// ---------------------------------------------------------------------------------------------
// ICMP errors in tunnel mode (icmp_error.cc, Processor::icmp_error_tunnel).

// The IPv4 packet of untagged frame `f` (its Ethernet padding cut off).
Bytes ip_packet_of(const Bytes& f) {
  const size_t total = get16(f.data() + 14 + 2);
  return Bytes(f.begin() + 14, f.begin() + 14 + static_cast<std::ptrdiff_t>(total));
}
// The quote `q` (a whole IPv4 packet with a TCP segment) checked here from scratch: its header
// checksum and its TCP checksum (pseudo-header included) must verify.
void expect_quote_checksums(const Bytes& q) {
  ASSERT_GE(q.size(), 40u);
  EXPECT_EQ(ref_sum(q.data(), 20), 0xffff) << "the quoted IPv4 header's checksum";
  ASSERT_EQ(get16(q.data() + 2), q.size()) << "the quote must hold the whole packet";
  EXPECT_EQ(ref_sum(q.data() + 20, q.size() - 20,
                    ref_pseudo(get32(q.data() + 12), get32(q.data() + 16), 6, q.size() - 20)),
            0xffff)
      << "the quoted TCP checksum";
}
// The IPv4 packet `inner` inside lbd's IPIP header to backend b (TOS, id and DF copied, TTL 64),
// the header built here from scratch.
Bytes ipip_to_backend(const Backend& b, const Bytes& inner) {
  Ip outer;
  outer.src = kLbBackendIp;
  outer.dst = b.ip;
  outer.ttl = 64;
  outer.tos = inner[1];
  outer.id = get16(inner.data() + 4);
  outer.frag = get16(inner.data() + 6) & 0x4000;
  outer.proto = 4;
  return ethernet(eth(b.mac, kLbBackendMac), 0x0800, ipv4_packet(outer, 4, inner), 0);
}
// An ICMP error lbd sends from its client port to client c: fresh header (id 0, no DF, TTL 64).
Bytes icmp_to_client(const Client& c, uint8_t type, uint8_t code, uint16_t mtu,
                     const Bytes& quoted) {
  Ip ip;
  ip.src = kLbClientIp;
  ip.dst = c.ip;
  ip.ttl = 64;
  ip.id = 0;
  ip.frag = 0;
  Icmp m;
  m.type = type;
  m.code = code;
  m.seq = mtu;
  m.payload = quoted;
  return icmp_frame(eth(c.mac, kLbClientMac), ip, m, 0);
}
constexpr uint32_t kBackendRouterIp = ip4(10, 20, 0, 254);
const MacAddr kBackendRouterMac = mac(0x02, 0xaa, 0, 0, 0, 0xfd);

void tunnel_icmp_cases(std::vector<Case>& cases) {
  HarnessOptions tunnel;
  tunnel.forward = "tunnel";
  const Client c1 = client(1);
  const Backend& b = kB[0];
  // What a router between lbd and the backend quotes: lbd's IPIP packet, whole (20 + 58 bytes).
  const Bytes ipip = quote(c2b_ipip(c1, b, kUpData), 20 + 58);
  const Bytes inner = quote(c2v(c1, kUpData), 58);  // the client's packet, unchanged inside
  const auto from_router = [](uint8_t type, uint8_t code, uint16_t mtu, const Bytes& q) {
    return rx_backend(icmp_err(eth(kLbBackendMac, kBackendRouterMac), kBackendRouterIp,
                               kLbBackendIp, type, code, mtu, q));
  };
  const std::vector<Step> opened = {
      {.what = "SYN, tunnelled",
       .in = {rx_client(c2v(c1, syn_seg()))},
       .out = {tx_backend(c2b_ipip(c1, b, syn_seg()))}},
      {.what = "data, tunnelled",
       .in = {rx_client(c2v(c1, kUpData))},
       .out = {tx_backend(c2b_ipip(c1, b, kUpData))}},
  };
  cases.push_back(
      {.name = "TunnelIcmpAboutIpipReachesClient",
       .description = "tunnel: a backend-side router's error about lbd's IPIP packet reaches the "
                      "client from lbd's client address, quoting the client's own packet "
                      "(checksums verified from scratch), a frag-needed's MTU less 20",
       .options = tunnel,
       .script = [=](const Env&) -> std::vector<Step> {
         expect_quote_checksums(inner);
         return opened +
                std::vector<Step>{
                    {.what = "frag needed, MTU 1280, quoting the whole IPIP packet",
                     .in = {from_router(3, 4, 1280, ipip)},
                     .out = {tx_client(icmp_to_client(c1, 3, 4, 1260, inner))},
                     .checks = {LB_CTR(icmp_errors_translated, 1), LB_CTR(tunnel_packets, 0)}},
                    {.what = "time exceeded quoting 20 + 28 bytes: MTU field stays 0",
                     .in = {from_router(11, 0, 0, quote(c2b_ipip(c1, b, kUpData), 48))},
                     .out = {tx_client(icmp_to_client(c1, 11, 0, 0, quote(c2v(c1, kUpData), 28)))},
                     .checks = {LB_CTR(icmp_errors_translated, 1)}},
                    {.what = "frag needed, MTU 80: less than 68 + 20, the client gets 68",
                     .in = {from_router(3, 4, 80, ipip)},
                     .out = {tx_client(icmp_to_client(c1, 3, 4, 68, inner))},
                     .checks = {LB_CTR(icmp_errors_translated, 1)}},
                };
       }});
  cases.push_back(
      {.name = "TunnelIcmpNotAboutAFlowIsDropped",
       .description = "tunnel: errors quoting an IPIP packet to another backend, from another "
                      "source, or too short, and one quoting plain client -> backend TCP (lbd "
                      "sends none in tunnel mode), are dropped and counted",
       .options = tunnel,
       .script = [=](const Env&) -> std::vector<Step> {
         const Bytes to_b2 = quote(c2b_ipip(c1, kB[1], kUpData), 48);
         Bytes from_other = ipip;  // outer source 10.20.0.2, its checksum made right
         from_other[15] = 2;
         from_other[10] = from_other[11] = 0;
         const uint16_t sum = ref_checksum(from_other.data(), 20);
         from_other[10] = static_cast<uint8_t>(sum >> 8);
         from_other[11] = static_cast<uint8_t>(sum & 0xff);
         return opened + std::vector<Step>{
                             {.what = "quotes an IPIP packet to backend .12: not this flow's",
                              .in = {from_router(3, 4, 1280, to_b2)},
                              .checks = {drops(DropReason::kIcmpErrorNoFlow, 1),
                                         LB_CTR(icmp_errors_translated, 0)}},
                             {.what = "quotes an IPIP packet from 10.20.0.2: not lbd's",
                              .in = {from_router(3, 4, 1280, from_other)},
                              .checks = {drops(DropReason::kIcmpErrorNoFlow, 1)}},
                             {.what = "quotes 20 + 20 + 4 bytes: too short for the ports",
                              .in = {from_router(3, 4, 1280, quote(c2b_ipip(c1, b, kUpData), 44))},
                              .checks = {drops(DropReason::kIcmpMalformed, 1)}},
                             {.what = "quotes client -> backend TCP (a dnat packet)",
                              .in = {from_router(3, 4, 1280, quote(c2b(c1, b, kUpData), 48))},
                              .checks = {drops(DropReason::kIcmpErrorNoFlow, 1)}},
                         };
       }});
  cases.push_back(
      {.name = "TunnelIcmpAboutBackendAnswerIsTunnelledToBackend",
       .description = "tunnel: a client-side router's error about the backend's answer (VIP -> "
                      "client, addressed to the VIP) goes unchanged inside the flow's tunnel to "
                      "its backend, which holds the connection",
       .options = tunnel,
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg big{.flags = kAck, .seq = 5001, .ack = 1019, .payload = Bytes(1433, 'd')};
         const Bytes down = quote(v2c(c1, kDownData), 59);
         expect_quote_checksums(down);
         const Bytes err =
             icmp_err(eth(kLbClientMac, kRouterMac), kRouterIp, kVip, 3, 4, 1400, down);
         return opened +
                std::vector<Step>{
                    {.what = "frag needed, MTU 1400, from the router to the VIP",
                     .in = {rx_client(err)},
                     .out = {tx_backend(ipip_to_backend(b, ip_packet_of(err)))},
                     // An error passed on, not the client's traffic to the backend (as in
                     // dnat, IcmpFragNeededFromClientSideReachesBackend).
                     .checks = {LB_CTR(icmp_errors_translated, 1), LB_CTR(tunnel_packets, 1),
                                backend_in(b, 0)}},
                    {.what = "an error of 1481 bytes does not fit the tunnel: dropped, "
                             "and no error about an error (RFC 1122 3.2.2)",
                     .in = {rx_client(icmp_err(eth(kLbClientMac, kRouterMac), kRouterIp, kVip, 3, 4,
                                               1400, quote(v2c(c1, big), 1453)))},
                     .checks = {drops(DropReason::kFragNeeded, 1),
                                LB_CTR(icmp_errors_translated, 0), LB_CTR(icmp_frag_needed, 0)}},
                };
       }});
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const Client c1 = client(1);
  const Client c2 = client(2);
  const Client c3 = client(3);
  const Client c4 = client(4);

  // --- forward = "tunnel" (IPIP), and lbd as a router hop ----------------------------------
  {
    HarnessOptions tunnel;
    tunnel.forward = "tunnel";
    const Seg fin{.flags = kAck | kFin, .seq = 1019, .ack = 5001, .ip_id = 0x1114};
    const Seg rst{.flags = kRst, .seq = 1001, .ip_id = 0x1115};
    cases.push_back(
        {.name = "TunnelSynDataFinRstAreWrappedUnchanged",
         .description = "forward = tunnel: each client packet goes to its backend in IPIP, inner "
                        "bytes (TTL included) untouched",
         .options = tunnel,
         .script = [=](const Env&) -> std::vector<Step> {
           return {
               {.what = "SYN, wrapped, to the scheduled backend",
                .in = {rx_client(c2v(c1, syn_seg()))},
                .out = {tx_backend(c2b_ipip(c1, kB[0], syn_seg()))},
                .checks = {LB_CTR(flows_created, 1), LB_CTR(tunnel_packets, 1),
                           backend_in(kB[0], 1)}},
               {.what = "ACK follows it",
                .in = {rx_client(c2v(c1, ack_seg()))},
                .out = {tx_backend(c2b_ipip(c1, kB[0], ack_seg()))}},
               {.what = "data with TTL 1: the inner TTL is not lbd's to decrement",
                .in = {rx_client(c2v_ttl(c1, data_seg(1001, 5001, "GET / HTTP/1.1\r\n\r\n"), 1))},
                .out = {tx_backend(
                    c2b_ipip(c1, kB[0], data_seg(1001, 5001, "GET / HTTP/1.1\r\n\r\n"), 1))},
                .checks = {LB_CTR(icmp_time_exceeded, 0)}},
               {.what = "the client's FIN",
                .in = {rx_client(c2v(c1, fin))},
                .out = {tx_backend(c2b_ipip(c1, kB[0], fin))}},
               {.what = "another client's SYN goes to the next backend",
                .in = {rx_client(c2v(c2, syn_seg()))},
                .out = {tx_backend(c2b_ipip(c2, kB[1], syn_seg()))}},
               {.what = "and its RST",
                .in = {rx_client(c2v(c2, rst))},
                .out = {tx_backend(c2b_ipip(c2, kB[1], rst))},
                .checks = {LB_CTR(tunnel_packets, 1)}},
           };
         }});
    const Seg fits{
        .flags = kAck, .seq = 1001, .ack = 5001, .payload = Bytes(1440, 'a'), .ip_id = 0x1116};
    const Seg big{
        .flags = kAck, .seq = 2441, .ack = 5001, .payload = Bytes(1441, 'b'), .ip_id = 0x1117};
    cases.push_back({.name = "TunnelTooBigGetsFragmentationNeeded",
                     .description =
                         "forward = tunnel: a packet of 1481 bytes does not fit the 1500-byte "
                         "port once wrapped: ICMP 3/4 with MTU 1480 back to the client",
                     .options = tunnel,
                     .script = [=](const Env&) -> std::vector<Step> {
                       return {
                           {.what = "SYN",
                            .in = {rx_client(c2v(c1, syn_seg()))},
                            .out = {tx_backend(c2b_ipip(c1, kB[0], syn_seg()))}},
                           {.what = "1480 bytes fit exactly",
                            .in = {rx_client(c2v(c1, fits))},
                            .out = {tx_backend(c2b_ipip(c1, kB[0], fits))}},
                           {.what = "1481 do not: fragmentation-needed from the client port",
                            .in = {rx_client(c2v(c1, big))},
                            .out = {tx_client(icmp_error_about(c2v(c1, big), kLbClientMac,
                                                               kLbClientIp, 3, 4, 1480))},
                            .checks = {drops(DropReason::kFragNeeded, 1),
                                       LB_CTR(icmp_frag_needed, 1), LB_CTR(tunnel_packets, 0)}},
                       };
                     }});
  }
  tunnel_icmp_cases(cases);
  cases.push_back(
      {.name = "DnatTtlDecrementAndExpiry",
       .description = "dnat is a router hop: TTL - 1 both ways; TTL <= 1 gets time-exceeded "
                      "from the port it came in on, and a SYN so answered makes no flow",
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg data = data_seg(1001, 5001, "x");
         const Seg down = data_seg(5001, 1002, "y", 0x2001);
         return std::vector<Step>{
                    {.what = "SYN with TTL 1: time-exceeded, no flow",
                     .in = {rx_client(c2v_ttl(c1, syn_seg(), 1))},
                     .out = {tx_client(icmp_error_about(c2v_ttl(c1, syn_seg(), 1), kLbClientMac,
                                                        kLbClientIp, 11, 0, 0))},
                     .checks = {drops(DropReason::kTtlExceeded, 1), LB_CTR(icmp_time_exceeded, 1),
                                LB_CTR(flows_created, 0)}}} +
                handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "client data with TTL 2 leaves with TTL 1",
                     .in = {rx_client(c2v_ttl(c1, data, 2))},
                     .out = {tx_backend([&] {
                       Ip ip = ip_of(data, c1.ip, kB[0].ip);
                       ip.ttl = 1;
                       return tcp_frame(eth(kB[0].mac, kLbBackendMac), ip,
                                        tcp_of(data, c1.port, kBackendTcpPort), 0);
                     }())}},
                    {.what = "a backend segment with TTL 1: time-exceeded from the backend port",
                     .in = {rx_backend([&] {
                       Ip ip = ip_of(down, kB[0].ip, c1.ip);
                       ip.ttl = 1;
                       return tcp_frame(eth(kLbBackendMac, kB[0].mac), ip,
                                        tcp_of(down, kBackendTcpPort, c1.port));
                     }())},
                     .out = {tx_backend(icmp_error_about(
                         [&] {
                           Ip ip = ip_of(down, kB[0].ip, c1.ip);
                           ip.ttl = 1;
                           return tcp_frame(eth(kLbBackendMac, kB[0].mac), ip,
                                            tcp_of(down, kBackendTcpPort, c1.port));
                         }(),
                         kLbBackendMac, kLbBackendIp, 11, 0, 0))},
                     .checks = {drops(DropReason::kTtlExceeded, 1), LB_CTR(icmp_time_exceeded, 1)}},
                };
       }});

  // --- ARP -----------------------------------------------------------------------------------
  cases.push_back(
      {.name = "ArpRequestForPortIp",
       .description = "who-has the port's address is answered on that port",
       .resolve_backends = false,
       .script = [=](const Env&) -> std::vector<Step> {
         return {
             {.what = "client asks for 10.10.0.1",
              .in = {rx_client(arp_request(c1.mac, c1.ip, kLbClientIp))},
              .out = {tx_client(arp_reply(kLbClientMac, kLbClientIp, c1.mac, c1.ip))},
              .checks = {LB_CTR(arp_replies, 1), LB_CTR(arp_learned, 0)}},
             {.what = "backend asks for 10.20.0.1: answered, and its MAC learned",
              .in = {rx_backend(arp_request(kB[0].mac, kB[0].ip, kLbBackendIp))},
              .out = {tx_backend(arp_reply(kLbBackendMac, kLbBackendIp, kB[0].mac, kB[0].ip))},
              .checks = {LB_CTR(arp_replies, 1), LB_CTR(arp_learned, 1)}},
         };
       }});
  cases.push_back({.name = "ArpRequestForVip",
                   .description = "who-has the VIP is answered with the client port's MAC",
                   .resolve_backends = false,
                   .script = [=](const Env&) -> std::vector<Step> {
                     return {{.what = "client asks for 10.10.0.100",
                              .in = {rx_client(arp_request(c1.mac, c1.ip, kVip))},
                              .out = {tx_client(arp_reply(kLbClientMac, kVip, c1.mac, c1.ip))},
                              .checks = {LB_CTR(arp_replies, 1), port_tx(kClientPort, 1)}}};
                   }});
  cases.push_back(
      {.name = "ArpForVipNotOnTheBackendPort",
       .description = "who-has a client-side VIP asked on the backend port is not answered "
                      "(the VIP is not in that port's subnet)",
       .resolve_backends = false,
       .script = [=](const Env&) -> std::vector<Step> {
         const MacAddr host = mac(0x02, 0xaa, 0, 0, 0, 0x99);
         return {
             {.what = "a host of the backend segment asks for 10.10.0.100",
              .in = {rx_backend(arp_request(host, ip4(10, 20, 0, 99), kVip))},
              .checks = {drops(DropReason::kArpNotForUs, 1), LB_CTR(arp_replies, 0)}},
             {.what = "and for lbd's backend port address: answered",
              .in = {rx_backend(arp_request(host, ip4(10, 20, 0, 99), kLbBackendIp))},
              .out = {tx_backend(arp_reply(kLbBackendMac, kLbBackendIp, host, ip4(10, 20, 0, 99)))},
              .checks = {LB_CTR(arp_replies, 1)}}};
       }});
  cases.push_back({.name = "ArpNotForUs",
                   .description = "ARP for another address is dropped and counted",
                   .resolve_backends = false,
                   .script = [=](const Env&) -> std::vector<Step> {
                     return {
                         {.what = "request for 10.10.0.77",
                          .in = {rx_client(arp_request(c1.mac, c1.ip, ip4(10, 10, 0, 77)))},
                          .checks = {drops(DropReason::kArpNotForUs, 1), LB_CTR(arp_replies, 0)}},
                         {.what = "reply to 10.10.0.77, broadcast",
                          .in = {rx_client([=] {
                            Bytes f = arp_reply(c2.mac, c2.ip, c1.mac, ip4(10, 10, 0, 77));
                            core::kBroadcastMac.store(f.data());
                            return f;
                          }())},
                          .checks = {drops(DropReason::kArpNotForUs, 1)}},
                         {.what = "the same reply in a frame for its target's MAC",
                          .in = {rx_client(arp_reply(c2.mac, c2.ip, c1.mac, ip4(10, 10, 0, 77)))},
                          .checks = {drops(DropReason::kNotOurMac, 1)}},
                     };
                   }});
  cases.push_back({.name = "ArpMalformed",
                   .description = "ARP with a hardware length other than 6 is dropped",
                   .resolve_backends = false,
                   .script = [=](const Env&) -> std::vector<Step> {
                     Arp a;
                     a.sha = c1.mac;
                     a.spa = c1.ip;
                     a.tpa = kLbClientIp;
                     a.hlen = 8;
                     return {{.what = "hlen 8",
                              .in = {rx_client(arp_frame(eth(core::kBroadcastMac, c1.mac), a))},
                              .checks = {drops(DropReason::kArpMalformed, 1)}}};
                   }});
  cases.push_back(
      {.name = "ControlTickArpsForBackends",
       .description = "control_tick() makes worker 0 ask for every unresolved backend; "
                      "replies resolve them; resolved ones are refreshed after 30 s",
       .resolve_backends = false,
       .script = [=](const Env& e) -> std::vector<Step> {
         std::vector<Emitted> requests;
         for (const Backend& b : kB)
           requests.push_back(tx_backend(arp_request(kLbBackendMac, kLbBackendIp, b.ip)));
         return {
             {.what = "first tick: three requests on the backend port, queue 0",
              .out = requests,
              .checks = {port_tx(kBackendPort, 3), port_tx(kClientPort, 0)},
              .control_tick = true},
             {.what = "the backends answer",
              .in = {rx_backend(backend_arp_reply(kB[0])), rx_backend(backend_arp_reply(kB[1])),
                     rx_backend(backend_arp_reply(kB[2]))},
              .checks = {LB_CTR(arp_learned, 3), LB_CTR(arp_replies, 0)}},
             {.what = "a second later: all resolved, nothing asked",
              .checks = {port_tx(kBackendPort, 0)},
              .advance = e.hz,
              .control_tick = true},
             {.what = "30 s after they were learned: asked again",
              .out = requests,
              .checks = {port_tx(kBackendPort, 3)},
              .advance = 30 * e.hz,
              .control_tick = true},
         };
       }});

  cases.push_back(
      {.name = "ControlTickRetriesUnresolvedQuickly",
       .description = "for 2 s after lbd starts, an unanswered next hop is asked again every "
                      "100 ms (a request sent before a memif link is up is lost), then once a "
                      "second",
       .resolve_backends = false,
       .script = [=](const Env& e) -> std::vector<Step> {
         std::vector<Emitted> all;
         for (const Backend& b : kB)
           all.push_back(tx_backend(arp_request(kLbBackendMac, kLbBackendIp, b.ip)));
         const std::vector<Emitted> third = {
             tx_backend(arp_request(kLbBackendMac, kLbBackendIp, kB[2].ip))};
         return {
             {.what = "first tick: three requests", .out = all, .control_tick = true},
             {.what = "50 ms later: not yet", .advance = e.hz / 20, .control_tick = true},
             {.what = "100 ms after the first: asked again",
              .out = all,
              .advance = e.hz / 20,
              .control_tick = true},
             {.what = "two answer",
              .in = {rx_backend(backend_arp_reply(kB[0])), rx_backend(backend_arp_reply(kB[1]))},
              .checks = {LB_CTR(arp_learned, 2)}},
             {.what = "100 ms later: only the third",
              .out = third,
              .advance = e.hz / 10,
              .control_tick = true},
             {.what = "2 s after start: the third again",
              .out = third,
              .advance = 2 * e.hz - e.hz / 5,
              .control_tick = true},
             {.what = "100 ms later: no more every 100 ms",
              .advance = e.hz / 10,
              .control_tick = true},
             {.what = "a second after the last: the third again",
              .out = third,
              .advance = e.hz - e.hz / 10,
              .control_tick = true},
         };
       }});

  // --- ICMP ----------------------------------------------------------------------------------
  cases.push_back(
      {.name = "IcmpEchoToVip",
       .description = "echo requests to the VIP and to the port's address are answered",
       .resolve_backends = false,
       .script = [=](const Env&) -> std::vector<Step> {
         const Bytes payload = text("0123456789abcdefghijklmnopqrstuv");
         return {
             {.what = "ping the VIP (32 bytes)",
              .in = {rx_client(echo(kLbClientMac, c1.mac, c1.ip, kVip, 8, 61, payload))},
              .out = {tx_client(echo(c1.mac, kLbClientMac, kVip, c1.ip, 0, 64, payload))},
              .checks = {LB_CTR(icmp_echo_replies, 1)}},
             {.what = "ping 10.10.0.1 (no payload: padded frame, answered in place)",
              .in = {rx_client(echo(kLbClientMac, c1.mac, c1.ip, kLbClientIp, 8, 1, {}))},
              .out = {tx_client(echo(c1.mac, kLbClientMac, kLbClientIp, c1.ip, 0, 64, {}))},
              .checks = {LB_CTR(icmp_echo_replies, 1)}},
         };
       }});

  // --- Scheduling and NAT --------------------------------------------------------------------
  cases.push_back(
      {.name = "SynBeforeArpResolved",
       .description = "a SYN to an unresolved backend is dropped; its retransmission after "
                      "the ARP reply goes through",
       .resolve_backends = false,
       .script = [=](const Env&) -> std::vector<Step> {
         return {
             {.what = "SYN, backend MAC unknown",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .checks = {drops(DropReason::kNeighborUnresolved, 1), LB_CTR(flows_created, 1)}},
             {.what = "ARP reply from 10.20.0.11",
              .in = {rx_backend(backend_arp_reply(kB[0]))},
              .checks = {LB_CTR(arp_learned, 1)}},
             {.what = "SYN retransmitted",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
              .checks = {LB_CTR(flows_created, 0), backend_in(kB[0], 1)}},
         };
       }});
  cases.push_back({.name = "SynRoundRobin",
                   .description = "SYNs of 4 clients go to .11, .12, .13, then .11 again",
                   .script = [=](const Env&) -> std::vector<Step> {
                     std::vector<Step> s;
                     const Client cs[4] = {c1, c2, c3, c4};
                     for (int i = 0; i < 4; ++i) {
                       const Backend& b = kB[i % 3];
                       s.push_back({.what = "SYN of client " + ip_str(cs[i].ip),
                                    .in = {rx_client(c2v(cs[i], syn_seg()))},
                                    .out = {tx_backend(c2b(cs[i], b, syn_seg()))},
                                    .checks = {LB_CTR(flows_created, 1), LB_CTR(flows_active, 1),
                                               backend_in(b, 1), backend_flows(b, 1),
                                               port_rx(kClientPort, 1), port_tx(kBackendPort, 1)}});
                     }
                     s.back().verify = flows_are({4});
                     return s;
                   }});
  cases.push_back(
      {.name = "SynAckNatedToClient",
       .description = "the backend's SYN-ACK leaves from VIP:80 toward the client's MAC",
       .script = [=](const Env&) -> std::vector<Step> { return handshake(c1, kB[0]); }});
  cases.push_back(
      {.name = "DataPinnedBothWays",
       .description = "two interleaved connections stay on their backends in both directions",
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg c1_get = data_seg(1001, 5001, "GET /a HTTP/1.1\r\n\r\n");
         const Seg c2_get = data_seg(1001, 5001, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n", 0x2000);
         const Seg b_resp = data_seg(5001, 1021, "HTTP/1.1 200 OK\r\n\r\n", 0x0);
         const Seg c1_ack = ack_seg(1021, 5020);
         return handshake(c1, kB[0]) + handshake(c2, kB[1]) +
                std::vector<Step>{
                    {.what = "client 1 data -> .11",
                     .in = {rx_client(c2v(c1, c1_get))},
                     .out = {tx_backend(c2b(c1, kB[0], c1_get))},
                     .checks = {backend_in(kB[0], 1), backend_in(kB[1], 0)}},
                    {.what = "client 2 data -> .12",
                     .in = {rx_client(c2v(c2, c2_get))},
                     .out = {tx_backend(c2b(c2, kB[1], c2_get))},
                     .checks = {backend_in(kB[1], 1), backend_in(kB[0], 0)}},
                    {.what = ".12 answers client 2, .11 answers client 1 (one burst)",
                     .in = {rx_backend(b2c(kB[1], c2, b_resp)), rx_backend(b2c(kB[0], c1, b_resp))},
                     .out = {tx_client(v2c(c2, b_resp)), tx_client(v2c(c1, b_resp))},
                     .checks = {backend_out(kB[0], 1), backend_out(kB[1], 1)}},
                    {.what = "client 1 ACK -> .11",
                     .in = {rx_client(c2v(c1, c1_ack))},
                     .out = {tx_backend(c2b(c1, kB[0], c1_ack))},
                     .checks = {backend_in(kB[0], 1), LB_CTR(flows_created, 0)},
                     .verify = flows_are({2})},
                };
       }});
  cases.push_back(
      {.name = "PaddingRemoved",
       .description = "Ethernet padding (not necessarily zero) is not forwarded",
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg two = data_seg(1001, 5001, "hi");
         const Seg one = data_seg(5001, 1003, "!", 0x0);
         const Bytes in_c =
             padded_with(tcp_frame(eth(kLbClientMac, c1.mac), ip_of(two, c1.ip, kVip),
                                   tcp_of(two, c1.port, kVport), 0),
                         0xee);
         const Bytes in_b =
             padded_with(tcp_frame(eth(kLbBackendMac, kB[0].mac), ip_of(one, kB[0].ip, c1.ip),
                                   tcp_of(one, kBackendTcpPort, c1.port), 0),
                         0x55);
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "56-byte segment in a 60-byte frame -> 56 bytes to the backend",
                     .in = {rx_client(in_c)},
                     .out = {tx_backend(c2b(c1, kB[0], two))},
                     .checks = {backend_in(kB[0], 1)}},
                    {.what = "55-byte segment in a 60-byte frame -> 55 bytes to the client",
                     .in = {rx_backend(in_b)},
                     .out = {tx_client(v2c(c1, one))},
                     .checks = {backend_out(kB[0], 1)}},
                };
       }});

  // --- Connection end, aging, tuple reuse ----------------------------------------------------
  cases.push_back(
      {.name = "FinFinThenExpired",
       .description = "after FIN both ways the flow lives tcp_closed_timeout (2 s), then goes "
                      "within one aging sweep",
       .script = [=](const Env& e) -> std::vector<Step> {
         const Seg cfin{.flags = kFin | kAck, .seq = 1001, .ack = 5001, .ip_id = 0x1114};
         const Seg bfin{.flags = kFin | kAck, .seq = 5001, .ack = 1002, .ip_id = 0};
         const Seg last = ack_seg(1002, 5002);
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "client FIN -> .11",
                     .in = {rx_client(c2v(c1, cfin))},
                     .out = {tx_backend(c2b(c1, kB[0], cfin))},
                     .checks = {backend_in(kB[0], 1)}},
                    {.what = "backend FIN -> client",
                     .in = {rx_backend(b2c(kB[0], c1, bfin))},
                     .out = {tx_client(v2c(c1, bfin))},
                     .checks = {backend_out(kB[0], 1)}},
                    {.what = "last ACK -> .11",
                     .in = {rx_client(c2v(c1, last))},
                     .out = {tx_backend(c2b(c1, kB[0], last))},
                     .checks = {backend_in(kB[0], 1)},
                     .verify = flows_are({1})},
                    {.what = "one tick before the timeout: still there",
                     .checks = {LB_CTR(flows_expired, 0)},
                     .advance = 2 * e.hz - 1,
                     .rounds = 40,
                     .verify = flows_are({1})},
                    // Aging is paced by time (the whole table once per second), so a flow
                    // goes between its deadline and one sweep after it.
                    {.what = "within one aging sweep (1 s) after the timeout: expired",
                     .checks = {LB_CTR(flows_expired, 1), LB_CTR(flows_active, -1)},
                     .advance = e.hz + 1,
                     .rounds = 40,
                     .verify = flows_are({0})},
                    {.what = "a late ACK of the client is a miss",
                     .in = {rx_client(c2v(c1, last))},
                     .checks = {drops(DropReason::kFlowMiss, 1)}},
                };
       }});
  cases.push_back(
      {.name = "ClientRstEndsFlow",
       .description = "a client RST is forwarded and the flow expires tcp_closed_timeout later",
       .script = [=](const Env& e) -> std::vector<Step> {
         const Seg rst{.flags = kRst | kAck, .seq = 1001, .ack = 5001, .window = 0};
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "client RST -> .11",
                     .in = {rx_client(c2v(c1, rst))},
                     .out = {tx_backend(c2b(c1, kB[0], rst))},
                     .checks = {backend_in(kB[0], 1)},
                     .verify = flows_are({1})},
                    {.what = "2 s later: gone",
                     .checks = {LB_CTR(flows_expired, 1)},
                     .advance = 2 * e.hz,
                     .rounds = 40,
                     .verify = flows_are({0})},
                    {.what = "the backend's late ACK matches nothing (not to a VIP)",
                     .in = {rx_backend(b2c(kB[0], c1, ack_seg(5001, 1001)))},
                     .checks = {drops(DropReason::kNotForUs, 1)}},
                };
       }});
  cases.push_back({.name = "BackendRstThenSynReuse",
                   .description =
                       "an established flow's backend RST reaches the client; a new SYN on the "
                       "tuple is scheduled afresh (next backend)",
                   .script = [=](const Env&) -> std::vector<Step> {
                     const Seg rst{.flags = kRst, .seq = 5001, .window = 0, .ip_id = 0};
                     return handshake(c1, kB[0]) +
                            std::vector<Step>{
                                {.what = ".11 RST -> client",
                                 .in = {rx_backend(b2c(kB[0], c1, rst))},
                                 .out = {tx_client(v2c(c1, rst))},
                                 .checks = {backend_out(kB[0], 1), LB_CTR(retries, 0)}},
                                {.what = "same tuple, new SYN -> .12",
                                 .in = {rx_client(c2v(c1, syn_seg(77000)))},
                                 .out = {tx_backend(c2b(c1, kB[1], syn_seg(77000)))},
                                 .checks = {LB_CTR(flows_reused, 1), LB_CTR(flows_created, 1),
                                            backend_in(kB[1], 1)},
                                 .verify = flows_are({1})},
                            };
                   }});
  cases.push_back(
      {.name = "SynReusesClosedTuple",
       .description = "after FIN/FIN, a SYN on the same tuple goes to the next backend in rr",
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg cfin{.flags = kFin | kAck, .seq = 1001, .ack = 5001};
         const Seg bfin{.flags = kFin | kAck, .seq = 5001, .ack = 1002};
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "client FIN",
                     .in = {rx_client(c2v(c1, cfin))},
                     .out = {tx_backend(c2b(c1, kB[0], cfin))},
                     .checks = {backend_in(kB[0], 1)}},
                    {.what = "backend FIN",
                     .in = {rx_backend(b2c(kB[0], c1, bfin))},
                     .out = {tx_client(v2c(c1, bfin))},
                     .checks = {backend_out(kB[0], 1)}},
                    {.what = "new SYN, same ports -> .12",
                     .in = {rx_client(c2v(c1, syn_seg(90000)))},
                     .out = {tx_backend(c2b(c1, kB[1], syn_seg(90000)))},
                     .checks = {LB_CTR(flows_reused, 1), LB_CTR(flows_created, 1),
                                backend_in(kB[1], 1), backend_flows(kB[1], 1)},
                     .verify = flows_are({1})},
                    {.what = "its SYN-ACK from .12 reaches the client",
                     .in = {rx_backend(b2c(kB[1], c1, synack_seg(90001)))},
                     .out = {tx_client(v2c(c1, synack_seg(90001)))},
                     .checks = {backend_out(kB[1], 1)}},
                };
       }});

  // --- Misses and missing backends -----------------------------------------------------------
  cases.push_back({.name = "MissDropped",
                   .description = "non-SYN segments without a flow are dropped (miss_policy drop)",
                   .script = [=](const Env&) -> std::vector<Step> {
                     return {
                         {.what = "ACK",
                          .in = {rx_client(c2v(c1, ack_seg()))},
                          .checks = {drops(DropReason::kFlowMiss, 1), LB_CTR(rst_flow_miss, 0)}},
                         {.what = "FIN",
                          .in = {rx_client(c2v(c1, Seg{.flags = kFin | kAck, .seq = 1, .ack = 2}))},
                          .checks = {drops(DropReason::kFlowMiss, 1)}},
                         {.what = "SYN-ACK to the VIP",
                          .in = {rx_client(c2v(c1, synack_seg()))},
                          .checks = {drops(DropReason::kFlowMiss, 1), LB_CTR(flows_created, 0)},
                          .verify = flows_are({0})},
                     };
                   }});
  cases.push_back({.name = "MissAnsweredWithRst",
                   .description =
                       "miss_policy rst: RFC 793 resets (seq/ack from the segment); never an "
                       "RST for an RST",
                   .options = {.miss_policy = "rst"},
                   .script = [=](const Env&) -> std::vector<Step> {
                     const Seg with_ack = data_seg(5000, 7000, "0123456789");
                     const Seg fin_only{.flags = kFin, .seq = 9000, .payload = text("abcde")};
                     return {
                         {.what = "ACK+10 bytes: RST seq=SEG.ACK",
                          .in = {rx_client(c2v(c1, with_ack))},
                          .out = {tx_client(rst_to_client(c1, kVport, kRst, 7000, 0))},
                          .checks = {LB_CTR(rst_flow_miss, 1)}},
                         {.what = "FIN+5 bytes without ACK: RST|ACK ack=SEG.SEQ+5+1",
                          .in = {rx_client(c2v(c1, fin_only))},
                          .out = {tx_client(rst_to_client(c1, kVport, kRst | kAck, 0, 9006))},
                          .checks = {LB_CTR(rst_flow_miss, 1)}},
                         {.what = "RST: dropped",
                          .in = {rx_client(c2v(c1, Seg{.flags = kRst, .seq = 1}))},
                          .checks = {drops(DropReason::kFlowMiss, 1), LB_CTR(rst_flow_miss, 0)}},
                     };
                   }});
  cases.push_back({.name = "NoBackendRst",
                   .description = "a SYN to a service without backends is answered RST|ACK",
                   .script = [=](const Env&) -> std::vector<Step> {
                     return {
                         {.what = "SYN to VIP:81",
                          .in = {rx_client(c2v(c1, syn_seg(777), {}, kEmptyVport))},
                          .out = {tx_client(rst_to_client(c1, kEmptyVport, kRst | kAck, 0, 778))},
                          .checks = {LB_CTR(rst_no_backend, 1), LB_CTR(flows_created, 0)},
                          .verify = flows_are({0})}};
                   }});
  cases.push_back({.name = "NoBackendDrop",
                   .description = "no_backend_policy drop: the SYN is dropped and counted",
                   .options = {.no_backend_policy = "drop"},
                   .script = [=](const Env&) -> std::vector<Step> {
                     return {
                         {.what = "SYN to VIP:81",
                          .in = {rx_client(c2v(c1, syn_seg(777), {}, kEmptyVport))},
                          .checks = {drops(DropReason::kNoBackend, 1), LB_CTR(rst_no_backend, 0)}}};
                   }});

  // --- Retry ---------------------------------------------------------------------------------
  cases.push_back(
      {.name = "RetryOnRst",
       .description = "a backend refusing the SYN is replaced at once: the client's SYN, "
                      "options and all, goes to the next backend; the client sees nothing",
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg refuse{.flags = kRst | kAck, .seq = 0, .ack = 1001, .window = 0, .ip_id = 0};
         return {
             {.what = "SYN -> .11",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
              .checks = {backend_in(kB[0], 1)}},
             {.what = ".11 RST: the saved SYN goes to .12",
              .in = {rx_backend(b2c(kB[0], c1, refuse))},
              .out = {tx_backend(c2b(c1, kB[1], syn_seg()))},
              .checks = {LB_CTR(retries, 1), LB_CTR(retry_syn_replayed, 1),
                         backend_syn_rst(kB[0], 1), backend_in(kB[1], 1), backend_out(kB[0], 0),
                         port_tx(kClientPort, 0)}},
             {.what = ".12 SYN-ACK -> client",
              .in = {rx_backend(b2c(kB[1], c1, synack_seg()))},
              .out = {tx_client(v2c(c1, synack_seg()))},
              .checks = {backend_out(kB[1], 1)}},
             {.what = "client ACK -> .12",
              .in = {rx_client(c2v(c1, ack_seg()))},
              .out = {tx_backend(c2b(c1, kB[1], ack_seg()))},
              .checks = {backend_in(kB[1], 1)},
              .verify = flows_are({1})},
         };
       }});
  cases.push_back(
      {.name = "RetryGivesUp",
       .description = "after max_retries (2) re-steers the next refusal reaches the client",
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg refuse{.flags = kRst | kAck, .seq = 0, .ack = 1001, .window = 0, .ip_id = 0};
         return {
             {.what = "SYN -> .11",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
              .checks = {backend_in(kB[0], 1)}},
             {.what = ".11 refuses -> .12",
              .in = {rx_backend(b2c(kB[0], c1, refuse))},
              .out = {tx_backend(c2b(c1, kB[1], syn_seg()))},
              .checks = {LB_CTR(retries, 1)}},
             {.what = ".12 refuses -> .13",
              .in = {rx_backend(b2c(kB[1], c1, refuse))},
              .out = {tx_backend(c2b(c1, kB[2], syn_seg()))},
              .checks = {LB_CTR(retries, 1), backend_syn_rst(kB[1], 1)}},
             {.what = ".13 refuses: the client gets the RST from the VIP",
              .in = {rx_backend(b2c(kB[2], c1, refuse))},
              .out = {tx_client(v2c(c1, refuse))},
              .checks = {LB_CTR(retries, 0), backend_syn_rst(kB[2], 1), backend_out(kB[2], 1)}},
         };
       }});
  cases.push_back({.name = "RetryOnRstDisabled",
                   .description = "retry.on_rst = false: the backend's RST goes to the client",
                   .options = {.retry_on_rst = false},
                   .script = [=](const Env&) -> std::vector<Step> {
                     const Seg refuse{
                         .flags = kRst | kAck, .seq = 0, .ack = 1001, .window = 0, .ip_id = 0};
                     return {
                         {.what = "SYN -> .11",
                          .in = {rx_client(c2v(c1, syn_seg()))},
                          .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
                          .checks = {backend_in(kB[0], 1)}},
                         {.what = ".11 RST -> client",
                          .in = {rx_backend(b2c(kB[0], c1, refuse))},
                          .out = {tx_client(v2c(c1, refuse))},
                          .checks = {LB_CTR(retries, 0), backend_syn_rst(kB[0], 1)}},
                     };
                   }});
  cases.push_back({.name = "SynRetransmitResteered",
                   .description =
                       "a SYN retransmitted retry.syn_timeout_ms (1 s) after the first goes to "
                       "the next backend; one retransmitted earlier does not",
                   .script = [=](const Env& e) -> std::vector<Step> {
                     return {
                         {.what = "SYN -> .11",
                          .in = {rx_client(c2v(c1, syn_seg()))},
                          .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
                          .checks = {backend_in(kB[0], 1)}},
                         {.what = "0.5 s: retransmission -> .11",
                          .in = {rx_client(c2v(c1, syn_seg()))},
                          .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
                          .checks = {backend_in(kB[0], 1), LB_CTR(retries, 0)},
                          .advance = e.hz / 2},
                         {.what = "1 s: retransmission -> .12",
                          .in = {rx_client(c2v(c1, syn_seg()))},
                          .out = {tx_backend(c2b(c1, kB[1], syn_seg()))},
                          .checks = {backend_in(kB[1], 1), LB_CTR(retries, 1),
                                     backend_syn_timeout(kB[0], 1), LB_CTR(flows_created, 0)},
                          .advance = e.hz - e.hz / 2,
                          .verify = flows_are({1})},
                     };
                   }});

  // --- 802.1Q --------------------------------------------------------------------------------
  cases.push_back(
      {.name = "VlanTaggedClient",
       .description = "a tagged client is answered with its tag (ARP, ICMP, NAT); the backend "
                      "side is untagged",
       .script = [=](const Env&) -> std::vector<Step> {
         const Seg get = data_seg(1001, 5001, "GET / HTTP/1.1\r\n\r\n");
         return {
             {.what = "tagged ARP request for the VIP",
              .in = {rx_client(arp_request(c1.mac, c1.ip, kVip, kTci))},
              .out = {tx_client(arp_reply(kLbClientMac, kVip, c1.mac, c1.ip, kTci))},
              .checks = {LB_CTR(arp_replies, 1)}},
             {.what = "tagged ping",
              .in = {rx_client(echo(kLbClientMac, c1.mac, c1.ip, kVip, 8, 64, text("ping"), kTci))},
              .out = {tx_client(
                  echo(c1.mac, kLbClientMac, kVip, c1.ip, 0, 64, text("ping"), kTci))},
              .checks = {LB_CTR(icmp_echo_replies, 1)}},
             {.what = "tagged SYN -> untagged to .11",
              .in = {rx_client(c2v(c1, syn_seg(), kTci))},
              .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
              .checks = {LB_CTR(flows_created, 1)}},
             {.what = "SYN-ACK -> client, tagged",
              .in = {rx_backend(b2c(kB[0], c1, synack_seg()))},
              .out = {tx_client(v2c(c1, synack_seg(), kTci))},
              .checks = {backend_out(kB[0], 1)}},
             {.what = "tagged data -> .11",
              .in = {rx_client(c2v(c1, get, kTci))},
              .out = {tx_backend(c2b(c1, kB[0], get))},
              .checks = {backend_in(kB[0], 1)}},
         };
       }});
  cases.push_back({.name = "VlanTaggedMissRst",
                   .description = "miss_policy rst: the RST to a tagged client carries its tag",
                   .options = {.miss_policy = "rst"},
                   .script = [=](const Env&) -> std::vector<Step> {
                     return {{.what = "tagged ACK without a flow",
                              .in = {rx_client(c2v(c1, ack_seg(1, 2), kTci))},
                              .out = {tx_client(rst_to_client(c1, kVport, kRst, 2, 0, kTci))},
                              .checks = {LB_CTR(rst_flow_miss, 1)}}};
                   }});

  cases.push_back(
      {.name = "BackendMacChange",
       .description = "a backend's new MAC (gratuitous ARP) is used for its flows at once",
       .script = [=](const Env&) -> std::vector<Step> {
         Backend moved = kB[0];
         moved.mac = mac(0x02, 0xbe, 0, 0, 0x01, 0x11);
         const Seg get = data_seg(1001, 5001, "GET / HTTP/1.1\r\n\r\n");
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "gratuitous ARP reply from 10.20.0.11 with a new MAC",
                     .in = {rx_backend(
                         arp_reply(moved.mac, moved.ip, core::kBroadcastMac, moved.ip))},
                     .checks = {LB_CTR(arp_learned, 1), drops(DropReason::kArpNotForUs, 0)}},
                    {.what = "client data goes to the new MAC",
                     .in = {rx_client(c2v(c1, get))},
                     .out = {tx_backend(c2b(c1, moved, get))},
                     .checks = {backend_in(kB[0], 1)}},
                };
       }});
  cases.push_back(
      {.name = "UnansweredSynExpires",
       .description = "a SYN no backend answers is forgotten after tcp_syn_timeout (3 s), within "
                      "one aging sweep",
       .script = [=](const Env& e) -> std::vector<Step> {
         return {
             {.what = "SYN -> .11",
              .in = {rx_client(c2v(c1, syn_seg()))},
              .out = {tx_backend(c2b(c1, kB[0], syn_seg()))},
              .checks = {LB_CTR(flows_created, 1)}},
             {.what = "2.9 s: still there",
              .checks = {LB_CTR(flows_expired, 0)},
              .advance = 3 * e.hz - e.hz / 10,
              .rounds = 40,
              .verify = flows_are({1})},
             // Aging sweeps the table once a second: gone by one sweep after the deadline.
             {.what = "within one aging sweep (1 s) after 3 s: expired",
              .checks = {LB_CTR(flows_expired, 1)},
              .advance = e.hz / 10 + e.hz,
              .rounds = 40,
              .verify = flows_are({0})},
         };
       }});
  cases.push_back(
      {.name = "MultiSegment",
       .description = "a chained mbuf is dropped by the dataplane before parsing",
       .script = [=](const Env&) -> std::vector<Step> {
         In in = rx_client(c2v(c1, syn_seg()));
         in.split = 34;
         return {{.what = "SYN in two segments",
                  .in = {in},
                  .checks = {drops(DropReason::kMultiSegment, 1), LB_CTR(flows_created, 0)}}};
       }});
  cases.push_back(
      {.name = "MultiSegmentInBurst",
       .description = "a chained mbuf between two frames of one burst is dropped, and the frame "
                      "after it is processed in its turn (poll moves it up over the dropped one)",
       .script = [=](const Env&) -> std::vector<Step> {
         In split = rx_client(c2v(client(3), syn_seg()));
         split.split = 34;
         return {
             {.what = "SYN, a SYN in two segments, SYN: one burst",
              .in = {rx_client(c2v(c1, syn_seg())), split, rx_client(c2v(c2, syn_seg()))},
              .out = {tx_backend(c2b(c1, kB[0], syn_seg())), tx_backend(c2b(c2, kB[1], syn_seg()))},
              .checks = {drops(DropReason::kMultiSegment, 1), LB_CTR(flows_created, 2)}}};
       }});

  // --- Two workers ---------------------------------------------------------------------------
  {
    // Clients owned by worker 0 and by worker 1 (RETA of 128, as lbd uses on ring ports).
    Client own0 = client(5, 41000);
    Client own1 = client(6, 42000);
    while (core::flow_owner(own0.ip, own0.port, 2, 128) != 0) ++own0.port;
    while (core::flow_owner(own1.ip, own1.port, 2, 128) != 1) ++own1.port;
    cases.push_back(
        {.name = "TwoWorkersHandoff",
         .description = "packets on the wrong worker's queue are handed to the owner, which "
                        "alone holds the flow and transmits on its own queue",
         .options = {.workers = 2},
         .script = [=](const Env&) -> std::vector<Step> {
           return {
               {.what = "ARP on queue 1 is answered by worker 1 on queue 1",
                .in = {rx_client(arp_request(c1.mac, c1.ip, kVip), 1)},
                .out = {tx_client(arp_reply(kLbClientMac, kVip, c1.mac, c1.ip), 1)},
                .checks = {on(1, LB_CTR(arp_replies, 1)), on(0, LB_CTR(arp_replies, 0))}},
               {.what = "SYN of worker 1's client on queue 0: handed off, sent on queue 1",
                .in = {rx_client(c2v(own1, syn_seg()), 0)},
                .out = {tx_backend(c2b(own1, kB[0], syn_seg()), 1)},
                .checks = {on(0, LB_CTR(handoff_out, 1)), on(1, LB_CTR(handoff_in, 1)),
                           on(0, LB_CTR(flows_created, 0)), on(1, LB_CTR(flows_created, 1)),
                           on(0, port_rx(kClientPort, 1)), on(1, port_tx(kBackendPort, 1))},
                .verify = flows_are({0, 1})},
               {.what = "its SYN-ACK on backend queue 0: handed off, sent on client queue 1",
                .in = {rx_backend(b2c(kB[0], own1, synack_seg()), 0)},
                .out = {tx_client(v2c(own1, synack_seg()), 1)},
                .checks = {on(0, LB_CTR(handoff_out, 1)), on(1, LB_CTR(handoff_in, 1)),
                           on(1, backend_out(kB[0], 1))}},
               {.what = "its ACK on queue 1: no handoff",
                .in = {rx_client(c2v(own1, ack_seg()), 1)},
                .out = {tx_backend(c2b(own1, kB[0], ack_seg()), 1)},
                .checks = {LB_CTR(handoff_out, 0), LB_CTR(handoff_in, 0),
                           on(1, backend_in(kB[0], 1))}},
               {.what = "SYN of worker 0's client on queue 0: kept (worker 0's rr starts at .11)",
                .in = {rx_client(c2v(own0, syn_seg()), 0)},
                .out = {tx_backend(c2b(own0, kB[0], syn_seg()), 0)},
                .checks = {LB_CTR(handoff_out, 0), on(0, LB_CTR(flows_created, 1))},
                .verify = flows_are({1, 1})},
               {.what = "its SYN-ACK on backend queue 1: handed to worker 0",
                .in = {rx_backend(b2c(kB[0], own0, synack_seg()), 1)},
                .out = {tx_client(v2c(own0, synack_seg()), 0)},
                .checks = {on(1, LB_CTR(handoff_out, 1)), on(0, LB_CTR(handoff_in, 1))}},
           };
         }});
  }

  // --- Malformed and unwanted frames (each dropped on the client port, nothing sent) ---------
  {
    Bytes cut = mangled_syn([](Eth&, Ip&, Tcp&) {}, 0);
    cut.resize(30);
    cases.push_back(malformed("Truncated", "30 bytes of a SYN", cut, DropReason::kTruncated));
  }
  cases.push_back(
      malformed("EthernetRunt", "10-byte frame", Bytes(10, 0xab), DropReason::kTruncated));
  {
    const Client c = client(1);
    Ip ip;
    ip.src = c.ip;
    ip.dst = kVip;
    cases.push_back(
        malformed("TruncatedTcpHeader", "IPv4 carrying 10 bytes of TCP",
                  ethernet(eth(kLbClientMac, c.mac), 0x0800, ipv4_packet(ip, 6, Bytes(10, 0))),
                  DropReason::kTruncated));
  }
  cases.push_back(malformed("BadIhl", "IHL 4", mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.ihl = 4; }),
                            DropReason::kIpHeaderLength));
  cases.push_back(malformed("IhlPastFrame", "IHL 15 (60 bytes) in a 60-byte frame",
                            mangled_syn([](Eth&, Ip& ip, Tcp& t) {
                              ip.ihl = 15;
                              t.options.clear();  // 54 bytes, padded to 60
                            }),
                            DropReason::kIpHeaderLength));
  cases.push_back(malformed("IpOptions", "router alert option (IHL 6)",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) {
                              ip.options = {0x94, 4, 0, 0};
                            }),
                            DropReason::kIpOptions));
  {
    Bytes bad = mangled_syn([](Eth&, Ip&, Tcp&) {});
    bad[14 + 10] ^= 0x5a;
    cases.push_back(
        malformed("BadIpChecksum", "IPv4 header checksum off", bad, DropReason::kIpChecksum));
  }
  cases.push_back(malformed("IpFragmentMf", "more-fragments set",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.frag = 0x2000; }),
                            DropReason::kIpFragment));
  cases.push_back(malformed("IpFragmentOffset", "last fragment, offset 185",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.frag = 185; }),
                            DropReason::kIpFragment));
  cases.push_back(malformed("IpVersion", "version 6 in an IPv4 frame",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.version = 6; }),
                            DropReason::kIpVersion));
  cases.push_back(malformed("TotalLengthPastFrame", "total length 300 in a 60-byte frame",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.total_len = 300; }),
                            DropReason::kIpTotalLength));
  cases.push_back(malformed("TotalLengthBelowIhl", "total length 10",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.total_len = 10; }),
                            DropReason::kIpTotalLength));
  cases.push_back(malformed("TcpOffsetSmall", "TCP data offset 4",
                            mangled_syn([](Eth&, Ip&, Tcp& t) { t.data_off = 4; }),
                            DropReason::kTcpHeaderLength));
  cases.push_back(malformed("TcpOffsetPastSegment", "TCP data offset 15, 40-byte segment",
                            mangled_syn([](Eth&, Ip&, Tcp& t) { t.data_off = 15; }),
                            DropReason::kTcpHeaderLength));
  cases.push_back(malformed("TcpSynFin", "SYN+FIN",
                            mangled_syn([](Eth&, Ip&, Tcp& t) { t.flags = kSyn | kFin; }),
                            DropReason::kTcpFlags));
  cases.push_back(malformed("TcpNoFlags", "no flags",
                            mangled_syn([](Eth&, Ip&, Tcp& t) { t.flags = 0; }),
                            DropReason::kTcpFlags));
  cases.push_back(malformed("StackedVlan", "two 802.1Q tags", mangled_syn([](Eth& e, Ip&, Tcp&) {
                              e.tags = {VlanTag{5, 0x8100}, VlanTag{6, 0x8100}};
                            }),
                            DropReason::kVlanStacked));
  cases.push_back(malformed("QinQ", "802.1ad outer tag", mangled_syn([](Eth& e, Ip&, Tcp&) {
                              e.tags = {VlanTag{5, 0x88a8}, VlanTag{6, 0x8100}};
                            }),
                            DropReason::kVlanStacked));
  cases.push_back(malformed("Ipv6Ethertype", "ethertype 0x86dd",
                            mangled_syn([](Eth& e, Ip&, Tcp&) { e.type = 0x86dd; }),
                            DropReason::kUnsupportedEthertype));
  cases.push_back(malformed("LoopbackSource", "source 127.0.0.1",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.src = ip4(127, 0, 0, 1); }),
                            DropReason::kIpBadAddress));
  cases.push_back(malformed("MulticastSource", "source 224.1.2.3",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.src = ip4(224, 1, 2, 3); }),
                            DropReason::kIpBadAddress));
  cases.push_back(malformed("Udp", "protocol 17",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.proto = 17; }),
                            DropReason::kUnsupportedProtocol));
  cases.push_back(malformed("TcpToLbAddress", "SYN to 10.10.0.1:22",
                            mangled_syn([](Eth&, Ip& ip, Tcp& t) {
                              ip.dst = kLbClientIp;
                              t.dport = 22;
                            }),
                            DropReason::kLocalTcp));
  cases.push_back(malformed("TcpToOtherAddress", "SYN to 10.10.0.200:80",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.dst = ip4(10, 10, 0, 200); }),
                            DropReason::kNotForUs));
  cases.push_back(malformed("TcpToVipOtherPort", "SYN to VIP:443",
                            mangled_syn([](Eth&, Ip&, Tcp& t) { t.dport = 443; }),
                            DropReason::kNotForUs));
  cases.push_back(malformed("IcmpNotForUs", "echo to 10.10.0.200",
                            echo(kLbClientMac, c1.mac, c1.ip, ip4(10, 10, 0, 200), 8, 64, {}),
                            DropReason::kIcmpNotForUs));
  cases.push_back(malformed("IcmpUnsupported", "timestamp request to the VIP",
                            echo(kLbClientMac, c1.mac, c1.ip, kVip, 13, 64, Bytes(12, 0)),
                            DropReason::kIcmpUnsupported));
  {
    Arp a;
    a.sha = c1.mac;
    a.spa = c1.ip;
    a.tpa = kLbClientIp;
    Bytes short_arp = arp_frame(eth(core::kBroadcastMac, c1.mac), a, 0);
    short_arp.resize(14 + 20);
    cases.push_back(
        malformed("ArpTruncated", "20 bytes of ARP", short_arp, DropReason::kTruncated));
  }
  // --- A strict edge: other hosts' frames, spoofed sources, group source MACs ----------------
  const MacAddr other_host = mac(0x02, 0xdd, 0, 0, 0, 0x01);
  cases.push_back(malformed(
      "SynToAnotherHostsMac", "SYN to the VIP in a frame for 02:dd:00:00:00:01",
      mangled_syn([=](Eth& e, Ip&, Tcp&) { e.dst = other_host; }), DropReason::kNotOurMac));
  cases.push_back(malformed("SynToBroadcastMac", "SYN to the VIP in a broadcast frame",
                            mangled_syn([](Eth& e, Ip&, Tcp&) { e.dst = core::kBroadcastMac; }),
                            DropReason::kNotOurMac));
  cases.push_back(malformed("SpoofedVipSource", "SYN to the VIP from the VIP",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.src = kVip; }),
                            DropReason::kIpBadAddress));
  cases.push_back(malformed("SpoofedPortAddressSource", "SYN to the VIP from 10.20.0.1 (lbd)",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.src = kLbBackendIp; }),
                            DropReason::kIpBadAddress));
  cases.push_back(malformed("SpoofedBackendSource", "SYN to the VIP from backend 10.20.0.11",
                            mangled_syn([](Eth&, Ip& ip, Tcp&) { ip.src = kB[0].ip; }),
                            DropReason::kIpBadAddress));
  cases.push_back(
      malformed("SynFromMulticastMac", "SYN to the VIP from 01:00:5e:00:00:09",
                mangled_syn([](Eth& e, Ip&, Tcp&) { e.src = mac(0x01, 0, 0x5e, 0, 0, 0x09); }),
                DropReason::kEthBadSource));
  cases.push_back(
      {.name = "OtherHostsFramesLeaveAFlowAlone",
       .description = "segments of an established flow in frames for another MAC are dropped "
                      "(an RST among them closes nothing); the flow carries on",
       .script = [=](const Env&) -> std::vector<Step> {
         Bytes data_other = c2v(c1, data_seg(1001, 5001, "GET"));
         other_host.store(data_other.data());
         Bytes rst_other = c2v(c1, Seg{.flags = kRst, .seq = 1004});
         other_host.store(rst_other.data());
         Bytes reply_other = b2c(kB[0], c1, data_seg(5001, 1004, "OK"));
         other_host.store(reply_other.data());
         return handshake(c1, kB[0]) +
                std::vector<Step>{
                    {.what = "client data, RST and a backend reply, all for another MAC",
                     .in = {rx_client(data_other), rx_client(rst_other), rx_backend(reply_other)},
                     .checks = {drops(DropReason::kNotOurMac, 3), backend_in(kB[0], 0),
                                backend_out(kB[0], 0)}},
                    {.what = "the same data for lbd goes through",
                     .in = {rx_client(c2v(c1, data_seg(1001, 5001, "GET")))},
                     .out = {tx_backend(c2b(c1, kB[0], data_seg(1001, 5001, "GET")))},
                     .checks = {backend_in(kB[0], 1)}},
                    {.what = "and so does the backend's reply",
                     .in = {rx_backend(b2c(kB[0], c1, data_seg(5001, 1004, "OK")))},
                     .out = {tx_client(v2c(c1, data_seg(5001, 1004, "OK")))},
                     .checks = {backend_out(kB[0], 1)},
                     .verify = flows_are({1})},
                };
       }});
  cases.push_back(
      {.name = "ArpToAGroupMacIsAnswered",
       .description = "an ARP request to a multicast MAC is answered (group addresses carry ARP)",
       .resolve_backends = false,
       .script = [=](const Env&) -> std::vector<Step> {
         Bytes req = arp_request(c1.mac, c1.ip, kVip);
         mac(0x01, 0, 0x5e, 0, 0, 1).store(req.data());
         return {{.what = "who-has 10.10.0.100 to 01:00:5e:00:00:01",
                  .in = {rx_client(req)},
                  .out = {tx_client(arp_reply(kLbClientMac, kVip, c1.mac, c1.ip))},
                  .checks = {LB_CTR(arp_replies, 1)}}};
       }});
  add_pool_change_cases(cases);
  icmp_error_cases(cases);
  fullnat_cases(cases);
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Runner

uint64_t read(const dp::Dataplane& d, const Check& c) {
  if (c.worker >= 0) return c.get(d.counters(static_cast<uint16_t>(c.worker)));
  uint64_t sum = 0;
  for (uint16_t w = 0; w < d.workers(); ++w) sum += c.get(d.counters(w));
  return sum;
}

std::string where(uint16_t port, uint16_t queue) {
  return std::string(port == kClientPort ? "client" : "backend") + " port, queue " +
         std::to_string(queue);
}

std::string show(const std::vector<Emitted>& frames) {
  if (frames.empty()) return "(none)\n";
  std::string s;
  for (size_t i = 0; i < frames.size(); ++i)
    s += "#" + std::to_string(i) + " on " + where(frames[i].port, frames[i].queue) + ": " +
         describe(frames[i].frame) + hexdump(frames[i].frame);
  return s;
}

void compare_output(std::vector<Emitted> want, const std::vector<Emitted>& got) {
  // drain() returns frames by port, then queue, then ring order.
  std::stable_sort(want.begin(), want.end(), [](const Emitted& a, const Emitted& b) {
    return std::pair(a.port, a.queue) < std::pair(b.port, b.queue);
  });
  bool same_places = want.size() == got.size();
  for (size_t i = 0; same_places && i < want.size(); ++i)
    same_places = want[i].port == got[i].port && want[i].queue == got[i].queue;
  if (!same_places) {
    ADD_FAILURE() << "expected " << want.size() << " frame(s), got " << got.size()
                  << "\n--- expected\n"
                  << show(want) << "--- transmitted\n"
                  << show(got);
    return;
  }
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(FramesEqual(want[i].frame, got[i].frame))
        << "frame #" << i << " on " << where(got[i].port, got[i].queue);
}

void run_step(Harness& h, const Step& s, size_t index) {
  SCOPED_TRACE("step " + std::to_string(index) + ": " + s.what);
  const dp::Dataplane& d = h.dp();
  std::vector<uint64_t> before;
  for (const Check& c : s.checks) before.push_back(read(d, c));
  std::vector<Check> implicit;  // every drop reason, and the ports' packet counters
  for (size_t r = 0; r < core::kDropReasonCount; ++r)
    implicit.push_back(drops(static_cast<DropReason>(r), 0));
  for (uint16_t p = 0; p < kPorts; ++p) {
    int64_t in = 0;
    int64_t out = 0;
    for (const In& i : s.in) in += i.port == p;
    for (const Emitted& o : s.out) out += o.port == p;
    implicit.push_back(port_rx(p, in));
    implicit.push_back(port_tx(p, out));
  }
  std::vector<uint64_t> implicit_before;
  for (const Check& c : implicit) implicit_before.push_back(read(d, c));

  h.now += s.advance;
  for (const In& i : s.in) {
    if (i.split != 0)
      h.inject_chained(i.port, i.queue, i.frame, i.split);
    else
      h.inject(i.port, i.queue, i.frame);
  }
  if (!s.updates.empty()) {
    std::string why;
    auto healthd = shm::Attachment::try_attach(h.shm_name(), why);
    ASSERT_TRUE(healthd) << why;
    for (const shm::ServiceUpdate& u : s.updates) ASSERT_TRUE(healthd->send(u));
  }
  if (s.control_tick || !s.updates.empty()) h.dp().control_tick(h.now);
  h.poll(s.in.empty() ? 0 : s.in.front().queue, s.rounds);
  // lbd's control loop ticks every millisecond: the tick after the workers' quiescent reports
  // acknowledges the update (applied_generation).
  if (!s.updates.empty()) h.dp().control_tick(h.now);
  compare_output(s.out, h.drain());

  for (size_t i = 0; i < s.checks.size(); ++i) {
    const Check& c = s.checks[i];
    EXPECT_EQ(static_cast<int64_t>(read(d, c) - before[i]), c.want)
        << (c.worker >= 0 ? "worker " + std::to_string(c.worker) + " " : std::string()) << c.name;
  }
  for (size_t i = 0; i < implicit.size(); ++i) {
    const Check& c = implicit[i];
    const bool named = std::any_of(s.checks.begin(), s.checks.end(), [&](const Check& x) {
      return x.name == c.name && x.worker < 0;
    });
    if (named) continue;
    EXPECT_EQ(static_cast<int64_t>(read(d, c) - implicit_before[i]), c.want)
        << c.name << " (not expected to change otherwise)";
  }
  if (s.verify) s.verify(d);
}

class PacketTest : public ::testing::TestWithParam<Case> {};

TEST_P(PacketTest, Run) {
  const Case& c = GetParam();
  SCOPED_TRACE(c.description);
  Harness h(c.options);
  dp::Dataplane& d = h.dp();
  ASSERT_EQ(d.port_mac(kClientPort), kLbClientMac);
  ASSERT_EQ(d.port_mac(kBackendPort), kLbBackendMac);
  const Env env{d.ticks_per_second()};
  h.now = 1000 * env.hz;
  if (c.resolve_backends) {
    run_step(h,
             {.what = "setup: ARP replies from the backends",
              .in = {rx_backend(backend_arp_reply(kB[0])), rx_backend(backend_arp_reply(kB[1])),
                     rx_backend(backend_arp_reply(kB[2]))},
              .checks = {LB_CTR(arp_learned, 3)}},
             0);
  }
  const std::vector<Step> steps = c.script(env);
  for (size_t i = 0; i < steps.size(); ++i) {
    run_step(h, steps[i], i + 1);
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Dataplane, PacketTest, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& tpi) { return tpi.param.name; });

}  // namespace
}  // namespace lb::test

namespace lb::test {
namespace {

using dp::Dataplane;

// /lb/flows and lbctl flows: every worker walks its whole table over its loop iterations while
// the requester waits (here: a second thread, the test thread being the worker).
Dataplane::FlowList list_while_polling(Harness& h, uint32_t max, uint32_t timeout_ms,
                                       int* polls = nullptr) {
  auto list = std::async(std::launch::async, [&] { return h.dp().list_flows(max, timeout_ms); });
  int n = 0;
  while (list.wait_for(std::chrono::microseconds(50)) != std::future_status::ready) {
    h.poll(0, 1);
    ++n;
  }
  if (polls) *polls = n;
  return list.get();
}

TEST(FlowList, TheOwnerListsItsFlows) {
  Harness h(HarnessOptions{});
  h.now = 1000 * h.dp().ticks_per_second();
  for (const Backend& b : kB) h.inject(kBackendPort, 0, backend_arp_reply(b));
  h.poll(0, 2);
  for (uint8_t n = 1; n <= 3; ++n) h.inject(kClientPort, 0, c2v(client(n), syn_seg()));
  h.poll(0, 2);
  ASSERT_EQ(h.drain().size(), 3u);
  const Dataplane::FlowList got = list_while_polling(h, 10, 5000);
  EXPECT_EQ(got.total, 3u);
  EXPECT_EQ(got.answered, 1u);
  ASSERT_EQ(got.flows.size(), 3u);
  std::set<uint32_t> clients, backends;
  for (const auto& s : got.flows) {
    EXPECT_EQ(s.worker, 0);
    EXPECT_EQ(s.flow.state, core::TcpState::kSynSent);
    EXPECT_EQ(s.flow.vip, kVip);
    clients.insert(s.flow.client_ip);
    backends.insert(s.flow.backend_ip);
  }
  EXPECT_EQ(clients.size(), 3u);
  EXPECT_EQ(backends, (std::set<uint32_t>{kB[0].ip, kB[1].ip, kB[2].ip}));
  // Fewer asked than exist: the oldest, oldest first, and the total still counts them all.
  h.now += h.dp().ticks_per_second();
  h.inject(kClientPort, 0, c2v(client(9), syn_seg()));
  h.poll(0, 1);
  ASSERT_EQ(h.drain().size(), 1u);
  const Dataplane::FlowList two = list_while_polling(h, 2, 5000);
  EXPECT_EQ(two.total, 4u);
  ASSERT_EQ(two.flows.size(), 2u);
  for (const auto& s : two.flows) EXPECT_NE(s.flow.client_ip, client(9).ip);
  // A worker that does not poll makes the request time out instead of hang.
  const auto start = std::chrono::steady_clock::now();
  const Dataplane::FlowList none = h.dp().list_flows(10, 50);
  EXPECT_TRUE(none.flows.empty());
  EXPECT_EQ(none.answered, 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // ... and the next request is answered in full all the same.
  EXPECT_EQ(list_while_polling(h, 10, 5000).total, 4u);
}

// The issue: with a million-record table, each call scanned a 16 k-record window and moved on,
// so "no flows" came back 69 times in 70 while three connections were open. Every call must
// list all of them, whatever the table size, with no loop iteration walking more than
// kFlowListBudget records.
TEST(FlowList, AMillionRecordTableIsListedWholeEveryCall) {
  Harness h(HarnessOptions{.flow_capacity = 1u << 20});
  h.now = 1000 * h.dp().ticks_per_second();
  for (const Backend& b : kB) h.inject(kBackendPort, 0, backend_arp_reply(b));
  h.poll(0, 2);
  for (uint8_t n = 1; n <= 3; ++n) h.inject(kClientPort, 0, c2v(client(n), syn_seg()));
  h.poll(0, 2);
  ASSERT_EQ(h.drain().size(), 3u);
  for (int call = 0; call < 5; ++call) {
    SCOPED_TRACE("call " + std::to_string(call));
    int polls = 0;
    const Dataplane::FlowList got = list_while_polling(h, 20, 20000, &polls);
    EXPECT_EQ(got.total, 3u);
    EXPECT_EQ(got.flows.size(), 3u);
    // A whole walk takes capacity / budget iterations: it is spread, not done in one.
    EXPECT_GE(polls, static_cast<int>((1u << 20) / Dataplane::kFlowListBudget) - 1);
  }
}

}  // namespace
}  // namespace lb::test

namespace lb::test {
namespace {

// -- Ids are given back and reused (lbd used to never free backend, service or next-hop ids,
// so removed backends stayed in /lb/backends forever and the lifetime caps of 4,096 backends and
// 1,024 services eventually refused every update).

struct TestBackend {
  uint32_t ip;
  uint16_t weight = 1;
};

shm::ServiceUpdate service_update(uint64_t generation, const std::string& name, uint16_t port,
                                  cfg::Scheduler scheduler, const std::vector<TestBackend>& bs) {
  shm::ServiceUpdate u{};
  u.generation = generation;
  std::strncpy(u.name, name.c_str(), shm::kNameLen - 1);
  u.vip = kVip;
  u.port = port;
  u.scheduler = static_cast<uint8_t>(scheduler);
  u.backend_count = static_cast<uint32_t>(bs.size());
  for (size_t i = 0; i < bs.size(); ++i)
    u.backends[i] = {bs[i].ip,
                     kBackendTcpPort,
                     bs[i].weight,
                     static_cast<uint8_t>(shm::BackendState::kActive),
                     {}};
  return u;
}

shm::ServiceUpdate removal(uint64_t generation, const std::string& name) {
  shm::ServiceUpdate u{};
  u.generation = generation;
  std::strncpy(u.name, name.c_str(), shm::kNameLen - 1);
  u.flags = shm::kServiceRemoved;
  return u;
}

// lb-healthd's side of the channel, and the control loop around it.
class Control {
 public:
  explicit Control(Harness& h) : h_(h) {
    std::string why;
    healthd_ = shm::Attachment::try_attach(h.shm_name(), why);
    EXPECT_TRUE(healthd_) << why;
  }
  // Sends the updates, then ticks and polls as lbd's loops would.
  void send(const std::vector<shm::ServiceUpdate>& us) {
    for (const shm::ServiceUpdate& u : us) ASSERT_TRUE(healthd_->send(u));
    h_.dp().control_tick(h_.now);
    h_.poll(0, 1);
    h_.dp().control_tick(h_.now);
  }
  // `n` control ticks `step` apart, each followed by a poll of the workers.
  void run(int n, core::Tick step) {
    for (int i = 0; i < n; ++i) {
      h_.now += step;
      h_.dp().control_tick(h_.now);
      h_.poll(0, 1);
    }
  }
  uint64_t next() { return ++generation_; }

 private:
  Harness& h_;
  std::optional<shm::Attachment> healthd_;
  uint64_t generation_ = 100;
};

// The live entries of the registry, as /lb/backends lists them: "service ip".
std::set<std::string> listed_backends(const dp::Dataplane& d) {
  std::set<std::string> out;
  const std::vector<dp::BackendInfo> bs = d.builder().backends();
  const std::vector<std::string> names = d.builder().service_names();
  for (const dp::BackendInfo& b : bs)
    if (b.live) out.insert(names[core::raw(b.service)] + " " + ip_str(b.ip));
  return out;
}

// What lbd transmitted, without its own ARP requests for new next hops.
std::vector<Emitted> ip_out(Harness& h) {
  std::vector<Emitted> out = h.drain();
  std::erase_if(out, [](const Emitted& e) { return decode(e.frame).type != 0x0800; });
  return out;
}

int id_of(const dp::Dataplane& d, uint32_t ip) {
  const std::vector<dp::BackendInfo> bs = d.builder().backends();
  for (size_t id = 0; id < bs.size(); ++id)
    if (bs[id].live && bs[id].ip == ip) return static_cast<int>(id);
  return -1;
}

TEST(IdReuse, ThousandsOfAddRemoveCyclesStayUnderTheCaps) {
  Harness h(HarnessOptions{.channel = true});
  const core::Tick hz = h.dp().ticks_per_second();
  h.now = 1000 * hz;
  Control ctl(h);
  for (const Backend& b : kB) h.inject(kBackendPort, 0, backend_arp_reply(b));
  // 3,000 services and 6,000 backends over the run: both past the lifetime caps of 1,024 and
  // 4,096 that held before ids were reused; 200 next-hop addresses, each reused many times.
  constexpr int kCycles = 3000;
  size_t most_backends = 0;
  size_t most_services = 0;
  for (int i = 0; i < kCycles; ++i) {
    const std::string name = "t" + std::to_string(i);
    const auto port = static_cast<uint16_t>(2000 + i % 1000);
    const uint32_t b1 = ip4(10, 20, 0, static_cast<uint8_t>(20 + (2 * i) % 200));
    const uint32_t b2 = ip4(10, 20, 0, static_cast<uint8_t>(21 + (2 * i) % 200));
    ctl.send({service_update(ctl.next(), name, port, cfg::Scheduler::kRoundRobin, {{b1}, {b2}})});
    ASSERT_EQ(h.dp().control_stats().updates_rejected.load(), 0u) << "cycle " << i;
    ctl.send({removal(ctl.next(), name)});
    h.now += hz / 50;  // 20 ms a cycle: removed services linger tcp_closed_timeout (2 s)
    // Each cycle adds next hops, so lbd keeps asking the unresolved ones every 100 ms: their
    // ARP requests are taken off the TX rings as a NIC would.
    h.drain();
    most_backends = std::max(most_backends, h.dp().builder().backend_ids_taken());
    most_services = std::max(most_services, h.dp().builder().service_ids_taken());
  }
  EXPECT_EQ(h.dp().control_stats().updates_rejected.load(), 0u);
  std::printf("most ids taken at once: %zu backends, %zu services; next-hop slots %u\n",
              most_backends, most_services, h.dp().neighbors().size());
  EXPECT_LT(most_backends, 3u + 2u * 10);
  EXPECT_LT(most_services, 2u + 2u * 110);
  ctl.run(400, hz / 100);  // 4 s: past the lingering
  EXPECT_EQ(h.dp().ids_leaving(), 0u);
  EXPECT_EQ(h.dp().builder().backend_ids_taken(), 3u);
  EXPECT_EQ(h.dp().builder().service_ids_taken(), 2u);
  EXPECT_EQ(h.dp().neighbors().in_use(), 3u);
  EXPECT_LE(h.dp().neighbors().size(), 3u + 16u);  // not the 200 addresses used
  // What exists is what is listed: web's three backends, nothing of the 3,000 removed services.
  EXPECT_EQ(listed_backends(h.dp()),
            (std::set<std::string>{"web 10.20.0.11", "web 10.20.0.12", "web 10.20.0.13"}));
  // And it still balances: a new connection to web reaches a backend (whose MAC, unconfirmed
  // for the run's minute, is learned again).
  for (const Backend& b : kB) h.inject(kBackendPort, 0, backend_arp_reply(b));
  h.poll(0, 1);
  h.inject(kClientPort, 0, c2v(client(1), syn_seg()));
  h.poll(0, 1);
  const std::vector<Emitted> out = ip_out(h);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].port, kBackendPort);
}

TEST(IdReuse, AReusedIdStartsFromZero) {
  Harness h(HarnessOptions{.channel = true});
  const core::Tick hz = h.dp().ticks_per_second();
  h.now = 1000 * hz;
  Control ctl(h);
  const Backend old1{ip4(10, 20, 0, 50), mac(0x02, 0xbe, 0, 0, 0, 0x50), 0};
  const Backend old2{ip4(10, 20, 0, 51), mac(0x02, 0xbe, 0, 0, 0, 0x51), 0};
  const Backend new1{ip4(10, 20, 0, 60), mac(0x02, 0xbe, 0, 0, 0, 0x60), 0};
  const Backend new2{ip4(10, 20, 0, 61), mac(0x02, 0xbe, 0, 0, 0, 0x61), 0};
  // Service "x" (wrr over .50 and .51) takes one connection: .50 (its smooth-WRR weight is then
  // -1, .51's +1) counts a flow and a packet.
  ctl.send({service_update(ctl.next(), "x", 2001, cfg::Scheduler::kWeightedRoundRobin,
                           {{old1.ip}, {old2.ip}})});
  h.inject(kBackendPort, 0, backend_arp_reply(old1));
  h.inject(kBackendPort, 0, backend_arp_reply(old2));
  h.poll(0, 1);
  h.inject(kClientPort, 0, c2v(client(1), syn_seg(), {}, 2001));
  h.poll(0, 1);
  ASSERT_EQ(ip_out(h).size(), 1u);
  const int x1 = id_of(h.dp(), old1.ip);
  const int x2 = id_of(h.dp(), old2.ip);
  ASSERT_GE(x1, 0);
  ASSERT_GE(x2, 0);
  const dp::BackendInfo info1 = h.dp().builder().backends()[static_cast<size_t>(x1)];
  EXPECT_EQ(h.dp().backend_counts(static_cast<uint32_t>(x1), info1).flows_total, 1u);

  // "x" is removed; its flow holds .50's id until it ends (tcp_syn_timeout, 3 s).
  ctl.send({removal(ctl.next(), "x")});
  ctl.run(100, hz / 100);
  EXPECT_NE(id_of(h.dp(), old1.ip), -1) << "released while a flow names it";
  EXPECT_EQ(id_of(h.dp(), old2.ip), -1) << ".51 had no flow: released";
  ctl.run(600, hz / 100);  // and "x"'s service id lingers 2 s (tcp_closed_timeout) after that
  EXPECT_EQ(id_of(h.dp(), old1.ip), -1);
  EXPECT_EQ(h.dp().ids_leaving(), 0u);

  // Service "y" (wrr over .60 and .61) is given both ids again.
  ctl.send({service_update(ctl.next(), "y", 2002, cfg::Scheduler::kWeightedRoundRobin,
                           {{new1.ip}, {new2.ip}})});
  const int y1 = id_of(h.dp(), new1.ip);
  const int y2 = id_of(h.dp(), new2.ip);
  ASSERT_EQ((std::set<int>{y1, y2}), (std::set<int>{x1, x2})) << "the ids are reused";
  for (int id : {y1, y2}) {
    const auto u = static_cast<uint32_t>(id);
    const dp::BackendTotals t = h.dp().backend_counts(u, h.dp().builder().backends()[u]);
    EXPECT_EQ(t.flows_total, 0u) << "id " << id;
    EXPECT_EQ(t.packets_in, 0u) << "id " << id;
    EXPECT_EQ(t.bytes_in, 0u) << "id " << id;
    uint64_t active = 0;
    for (uint16_t w = 0; w < h.dp().workers(); ++w)
      active += h.dp().counters(w).backend[u].flows_active.get();
    EXPECT_EQ(active, 0u);
  }
  // Nor their smooth-WRR weights: a fresh pair of equal weights alternates from the first.
  h.inject(kBackendPort, 0, backend_arp_reply(new1));
  h.inject(kBackendPort, 0, backend_arp_reply(new2));
  h.poll(0, 1);
  const Backend want[4] = {new1, new2, new1, new2};
  for (uint8_t c = 0; c < 4; ++c) {
    h.inject(kClientPort, 0, c2v(client(static_cast<uint8_t>(10 + c)), syn_seg(), {}, 2002));
    h.poll(0, 1);
    const std::vector<Emitted> out = ip_out(h);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(decode(out[0].frame).ip_dst, want[c].ip) << "connection " << int(c);
  }
  const auto u1 = static_cast<uint32_t>(y1);
  EXPECT_EQ(h.dp().backend_counts(u1, h.dp().builder().backends()[u1]).flows_total, 2u);
}

}  // namespace
}  // namespace lb::test

namespace lb::test {
namespace {

// The "pool generation N applied: ..." log line says briefly what changed.
TEST(PoolLog, DescribesWhatChanged) {
  using S = shm::BackendState;
  dp::PoolState a;
  a["web"] = {
      ip4(10, 10, 0, 100),
      80,
      cfg::Scheduler::kWeightedRoundRobin,
      {{ip4(10, 20, 0, 11), 8080, 1, S::kActive}, {ip4(10, 20, 0, 12), 8080, 1, S::kActive}}};
  a["api"] = {ip4(10, 10, 0, 101), 80, cfg::Scheduler::kRoundRobin, {}};
  EXPECT_EQ(dp::describe_changes(a, a), "no change");
  dp::PoolState b = a;
  b.erase("api");
  b["web"].backends[1].state = S::kDraining;
  b["web"].backends[0].weight = 5;
  b["web"].backends.push_back({ip4(10, 20, 0, 14), 8080, 2, S::kActive});
  b["new"] = {ip4(10, 10, 0, 102), 443, cfg::Scheduler::kLeastConnections, {}};
  EXPECT_EQ(dp::describe_changes(a, b),
            "-service api, +service new 10.10.0.102:443 lc (0 backends), web: 10.20.0.11:8080 "
            "weight 1 -> 5, web: 10.20.0.12:8080 active -> draining, web: +10.20.0.14:8080 "
            "active weight 2");
  EXPECT_EQ(dp::describe_changes(b, a, 2),
            "-service new, +service api 10.10.0.101:80 rr (0 backends) (+3 more)");
  dp::PoolState c = a;
  c["web"].port = 8080;
  c["web"].scheduler = cfg::Scheduler::kRoundRobin;
  c["web"].backends.pop_back();
  EXPECT_EQ(dp::describe_changes(a, c),
            "web: 10.10.0.100:80 -> 10.10.0.100:8080, web: wrr -> rr, web: -10.20.0.12:8080");
}

// ---------------------------------------------------------------------------------------------
// A restart over the flow files (flow_memory.h): a Dataplane destroyed and built again over the
// same files, as lbd is after kill -9, a crash or SIGTERM, with the real clock (flows hold TSC
// deadlines, which the new one checks against the TSC).

class FlowFiles : public ::testing::Test {
 protected:
  FlowFiles() {
    std::string tmpl = "/dev/shm/lbd-pt-flows-" + std::to_string(getpid()) + "-XXXXXX";
    if (mkdtemp(tmpl.data())) dir_ = tmpl;
  }
  ~FlowFiles() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  void SetUp() override { ASSERT_FALSE(dir_.empty()) << "mkdtemp in /dev/shm failed"; }

  HarnessOptions options(uint8_t backends = 3, uint16_t workers = 1, bool fresh = false) const {
    HarnessOptions o;
    o.backends = backends;
    o.workers = workers;
    o.flows = {"pt", dir_, fresh};
    return o;
  }
  // A new lbd: the clock is the TSC, and the backends' MACs are learnt again from ARP.
  static void Start(Harness& h, uint8_t backends = 3) {
    h.now = rte_rdtsc();
    std::vector<In> arp;
    for (uint8_t b = 0; b < backends; ++b) arp.push_back(rx_backend(backend_arp_reply(kB[b])));
    run_step(h,
             {.what = "ARP replies from the backends",
              .in = arp,
              .checks = {LB_CTR(arp_learned, backends)}},
             0);
  }
  static void Run(Harness& h, const std::vector<Step>& steps) {
    for (size_t i = 0; i < steps.size(); ++i) {
      run_step(h, steps[i], i + 1);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  std::string dir_;
};

const Seg kUp = data_seg(1001, 5001, "GET / HTTP/1.1\r\n\r\n", 0x1114);
const Seg kDown = data_seg(5001, 1019, "HTTP/1.1 200 OK\r\n\r\n", 0x2001);

TEST_F(FlowFiles, ARebuiltDataplaneContinuesItsEstablishedFlowsByteForByte) {
  const Client c[3] = {client(1), client(2), client(3)};
  {
    Harness h(options());
    ASSERT_NO_FATAL_FAILURE(Start(h));
    for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(Run(h, handshake(c[i], kB[i])));
    // The file is lbd's alone.
    struct stat st {};
    ASSERT_EQ(stat((dir_ + "/lbd-pt-flows-0").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(st.st_uid, geteuid());
    // A second lbd of the same instance is refused while this one runs (its flow memory: two
    // dataplanes cannot share one EAL process).
    try {
      dp::FlowMemory twin(options().flows,
                          dp::flow_file_params(h.dp().config(), 128, h.dp().ticks_per_second()), 1,
                          {rte_rdtsc(), dp::boottime_ns()});
      ADD_FAILURE() << "a second lbd took the same flow files";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("in use by another lbd"), std::string::npos) << e.what();
    }
  }  // gone: ports closed, memory unmapped; the files stay
  Harness h(options());
  ASSERT_NO_FATAL_FAILURE(Start(h));
  EXPECT_EQ(h.dp().processor(0).flows().size(), 3u);
  EXPECT_EQ(h.dp().counters(0).flows_active.get(), 3u);
  for (const Backend& b : kB)
    EXPECT_EQ(h.dp().counters(0).backend[b.id].flows_active.get(), 1u) << ip_str(b.ip);
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE("client " + std::to_string(i + 1));
    Run(h, {{.what = "the client's next segment reaches its backend",
             .in = {rx_client(c2v(c[i], kUp))},
             .out = {tx_backend(c2b(c[i], kB[i], kUp))},
             .checks = {backend_in(kB[i], 1), LB_CTR(flows_created, 0)}},
            {.what = "the backend's answer reaches the client from the VIP",
             .in = {rx_backend(b2c(kB[i], c[i], kDown))},
             .out = {tx_client(v2c(c[i], kDown))},
             .checks = {backend_out(kB[i], 1)}}});
  }
  // New flows are scheduled as usual beside them.
  Run(h, handshake(client(4), kB[0]));
  EXPECT_EQ(h.dp().processor(0).flows().size(), 4u);
}

TEST_F(FlowFiles, FlowsOfABackendRemovedWhileLbdWasDownAreResetOnTheirFirstPacket) {
  const Client c[6] = {client(1), client(2), client(3), client(4), client(5), client(6)};
  {
    Harness h(options());
    ASSERT_NO_FATAL_FAILURE(Start(h));
    for (int i = 0; i < 6; ++i) ASSERT_NO_FATAL_FAILURE(Run(h, handshake(c[i], kB[i % 3])));
  }
  Harness h(options(/*backends=*/2));  // the config no longer has 10.20.0.13
  ASSERT_NO_FATAL_FAILURE(Start(h, 2));
  EXPECT_EQ(h.dp().processor(0).flows().size(), 6u);
  Run(h, {{.what = "a client of the removed backend gets an RST on its next segment",
           .in = {rx_client(c2v(c[2], kUp))},
           .out = {tx_client(rst_to_client(c[2], kVport, kRst, 5001, 0))},
           .checks = {LB_CTR(flows_reset, 1), LB_CTR(flows_active, -1),
                      LB_CTR(rst_backend_stopped, 1)},
           .verify = flows_are({6})},  // the reset record stays for tcp_closed_timeout
          {.what = "the removed backend's late answer to it: an RST from the client's address",
           .in = {rx_backend(b2c(kB[2], c[2], kDown))},
           .out = {tx_backend(rst_to_backend(kB[2], c[2], 1019))},
           .checks = {LB_CTR(rst_backend_stopped, 1)}},
          {.what = "the removed backend speaks first on the other flow: RST|ACK to its client",
           .in = {rx_backend(b2c(kB[2], c[5], kDown))},
           .out = {tx_client(rst_to_client(c[5], kVport, kRst | kAck, 5001, 1019))},
           .checks = {LB_CTR(flows_reset, 1), LB_CTR(flows_active, -1),
                      LB_CTR(rst_backend_stopped, 1)},
           .verify = flows_are({6})},
          {.what = "the others go on",
           .in = {rx_client(c2v(c[0], kUp)), rx_client(c2v(c[4], kUp))},
           .out = {tx_backend(c2b(c[0], kB[0], kUp)), tx_backend(c2b(c[4], kB[1], kUp))},
           .checks = {LB_CTR(flows_reset, 0)}}});
}

// A backend keeps a full-NAT connection's (local address, port) in TIME_WAIT for 60 s whatever
// becomes of lbd: a new lbd, with --fresh or not, does not hand such a port out again before its
// hold (flows.fullnat_port_hold) has passed.
TEST_F(FlowFiles, FullnatPortHoldsOutliveARestart) {
  HarnessOptions o = options();
  o.fullnat = true;
  o.flows_extra = "fullnat_port_hold = 60;";
  auto syn_from = [](const Client& c, uint16_t lport) {
    return Step{.what = "the SYN leaves from local port " + std::to_string(lport),
                .in = {rx_client(c2v(c, syn_seg()))},
                .out = {tx_backend(l2b(kB[0], syn_seg(), lport))},
                .checks = {LB_CTR(flows_created, 1)}};
  };
  {
    Harness h(o);
    ASSERT_NO_FATAL_FAILURE(Start(h));
    ASSERT_NO_FATAL_FAILURE(Run(h, {syn_from(client(1), 1024)}));
  }
  {
    SCOPED_TRACE("lbd --fresh: the flow is discarded, its port waits its hold");
    HarnessOptions f = o;
    f.flows.fresh = true;
    Harness h(f);
    ASSERT_NO_FATAL_FAILURE(Start(h));
    EXPECT_EQ(h.dp().processor(0).flows().size(), 0u);
    ASSERT_NO_FATAL_FAILURE(Run(h, {syn_from(client(2), 1025)}));
  }
  SCOPED_TRACE("a restart that keeps its flows keeps the holds too");
  Harness h(o);
  ASSERT_NO_FATAL_FAILURE(Start(h));
  EXPECT_EQ(h.dp().processor(0).flows().size(), 1u);  // client 2's, on 1025
  Run(h, {syn_from(client(3), 1026)});
}

// A backend the file's pool starts draining (health.initial_state = "down" until lb-healthd's
// checks decide, state = "drain", maint with maint = "keep") is serving: its established flows go
// on through a restart like any other's, which needs its next hop known.
TEST_F(FlowFiles, FlowsOfBackendsTheNewPoolStartsDrainingGoOn) {
  const Client c[3] = {client(1), client(2), client(3)};
  {
    Harness h(options());
    ASSERT_NO_FATAL_FAILURE(Start(h));
    for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(Run(h, handshake(c[i], kB[i])));
  }
  HarnessOptions o = options();
  o.web_extra = "health = { initial_state = \"down\"; };";
  Harness h(o);
  ASSERT_NO_FATAL_FAILURE(Start(h));
  EXPECT_EQ(h.dp().processor(0).flows().size(), 3u);
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE("client " + std::to_string(i + 1));
    Run(h, {{.what = "the client's next segment reaches its (draining) backend",
             .in = {rx_client(c2v(c[i], kUp))},
             .out = {tx_backend(c2b(c[i], kB[i], kUp))},
             .checks = {backend_in(kB[i], 1), LB_CTR(flows_reset, 0)}},
            {.what = "the backend's answer reaches the client from the VIP",
             .in = {rx_backend(b2c(kB[i], c[i], kDown))},
             .out = {tx_client(v2c(c[i], kDown))},
             .checks = {backend_out(kB[i], 1)}}});
  }
  Run(h, {{.what = "a new client finds no backend taking new flows",
           .in = {rx_client(c2v(client(4), syn_seg()))},
           .out = {tx_client(rst_to_client(client(4), kVport, kRst | kAck, 0, 1001))},
           .checks = {LB_CTR(flows_created, 0)}}});
}

// lbd starts from the file's pool; lb-healthd pushes the running state moments later. A backend
// added at runtime (lbctl backend add) is in the second only: the flows a restart restores for it
// go on (draining until lb-healthd's state comes), and are reset only if that state does not have
// it either.
TEST_F(FlowFiles, FlowsOfABackendAddedAtRuntimeGoOnThroughARestart) {
  const Client c[2] = {client(1), client(2)};
  HarnessOptions o = options(/*backends=*/2);
  o.channel = true;
  // What lb-healthd runs: the file's two backends and 10.20.0.13, added with lbctl.
  const std::vector<TestBackend> running = {{kB[0].ip}, {kB[1].ip}, {kB[2].ip}};
  auto only_third = service_update(0, "web", kVport, cfg::Scheduler::kRoundRobin, running);
  only_third.backends[0].state = static_cast<uint8_t>(shm::BackendState::kDraining);
  only_third.backends[1].state = static_cast<uint8_t>(shm::BackendState::kDraining);
  {
    Harness h(o);
    ASSERT_NO_FATAL_FAILURE(Start(h, 2));
    Control ctl(h);
    only_third.generation = ctl.next();
    ctl.send({only_third});  // new flows go to the runtime backend
    h.inject(kBackendPort, 0, backend_arp_reply(kB[2]));
    h.poll(0, 1);
    h.drain();
    for (const Client& x : c) ASSERT_NO_FATAL_FAILURE(Run(h, handshake(x, kB[2])));
  }
  Harness h(o);
  ASSERT_NO_FATAL_FAILURE(Start(h, 2));
  EXPECT_EQ(h.dp().processor(0).flows().size(), 2u);
  h.inject(kBackendPort, 0, backend_arp_reply(kB[2]));
  h.poll(0, 1);
  h.drain();
  Run(h, {{.what = "before lb-healthd's push: the client's next segment reaches its backend",
           .in = {rx_client(c2v(c[0], kUp))},
           .out = {tx_backend(c2b(c[0], kB[2], kUp))},
           .checks = {backend_in(kB[2], 1), LB_CTR(flows_reset, 0)}}});
  Control ctl(h);
  only_third.generation = ctl.next();
  ctl.send({only_third});  // lb-healthd attaches and pushes the running state
  Run(h, {{.what = "after it: still there, both ways",
           .in = {rx_client(c2v(c[1], kUp))},
           .out = {tx_backend(c2b(c[1], kB[2], kUp))},
           .checks = {backend_in(kB[2], 1), LB_CTR(flows_reset, 0)}},
          {.what = "the backend's answer reaches the client from the VIP",
           .in = {rx_backend(b2c(kB[2], c[1], kDown))},
           .out = {tx_client(v2c(c[1], kDown))},
           .checks = {backend_out(kB[2], 1)}}});
  // lb-healthd's state does not have it after all (removed while lbd was down): reset.
  ctl.send({service_update(ctl.next(), "web", kVport, cfg::Scheduler::kRoundRobin,
                           {{kB[0].ip}, {kB[1].ip}})});
  Run(h, {{.what = "removed by lb-healthd's state: the client's next segment is reset",
           .in = {rx_client(c2v(c[0], kUp))},
           .out = {tx_client(rst_to_client(c[0], kVport, kRst, 5001, 0))},
           .checks = {LB_CTR(flows_reset, 1), LB_CTR(flows_active, -1),
                      LB_CTR(rst_backend_stopped, 1)}}});
}

// A service added at run time (lbctl service add): the new lbd starts from the file, which does
// not have it, and learns its name from what the last lbd recorded beside its tables, so that
// its restored flows wait for lb-healthd's push of that name instead of being reset.
TEST_F(FlowFiles, FlowsOfAServiceAddedAtRuntimeGoOnThroughARestart) {
  constexpr uint16_t kApiPort = 8000;
  const Client c[2] = {client(1), client(2)};
  HarnessOptions o = options(/*backends=*/2);
  o.channel = true;
  const auto api = [](uint64_t generation) {
    return service_update(generation, "api", kApiPort, cfg::Scheduler::kRoundRobin, {{kB[2].ip}});
  };
  // VIP:8000 -> client, as lbd must send the backend's answer.
  const auto v2c_api = [](const Client& x, const Seg& sg) {
    Ip ip = ip_of(sg, kVip, x.ip);
    ip.ttl = 63;
    return tcp_frame(eth(x.mac, kLbClientMac), ip, tcp_of(sg, kApiPort, x.port), 0);
  };
  const std::string names = dir_ + "/lbd-pt-services.json";
  {
    Harness h(o);
    ASSERT_NO_FATAL_FAILURE(Start(h, 2));
    Control ctl(h);
    ctl.send({api(ctl.next())});
    h.inject(kBackendPort, 0, backend_arp_reply(kB[2]));
    h.poll(0, 1);
    h.drain();
    for (const Client& x : c) {
      Run(h, {{.what = "SYN to the runtime service goes to its backend",
               .in = {rx_client(c2v(x, syn_seg(), {}, kApiPort))},
               .out = {tx_backend(c2b(x, kB[2], syn_seg()))},
               .checks = {LB_CTR(flows_created, 1)}},
              {.what = "its SYN-ACK goes to the client from VIP:8000",
               .in = {rx_backend(b2c(kB[2], x, synack_seg()))},
               .out = {tx_client(v2c_api(x, synack_seg()))}}});
      ASSERT_FALSE(HasFailure());
    }
  }
  // lbd recorded the names of its services, in a file that is lbd's alone.
  struct stat st {};
  ASSERT_EQ(stat(names.c_str(), &st), 0) << names;
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  {
    std::ifstream in(names);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("\"api\""), std::string::npos) << text;
  }
  Harness h(o);
  ASSERT_NO_FATAL_FAILURE(Start(h, 2));
  EXPECT_EQ(h.dp().processor(0).flows().size(), 2u);
  const std::vector<std::string> services = h.dp().builder().service_names();
  EXPECT_NE(std::find(services.begin(), services.end(), "api"), services.end());
  h.inject(kBackendPort, 0, backend_arp_reply(kB[2]));
  h.poll(0, 1);
  h.drain();
  Run(h, {{.what = "before lb-healthd's push: the client's next segment reaches its backend",
           .in = {rx_client(c2v(c[0], kUp, {}, kApiPort))},
           .out = {tx_backend(c2b(c[0], kB[2], kUp))},
           .checks = {backend_in(kB[2], 1), LB_CTR(flows_reset, 0)}},
          {.what = "a new connection to it is refused until lb-healthd's push: no backend "
                   "takes it yet",
           .in = {rx_client(c2v(client(3), syn_seg(), {}, kApiPort))},
           .out = {tx_client(rst_to_client(client(3), kApiPort, kRst | kAck, 0, 1001))},
           .checks = {LB_CTR(flows_created, 0)}}});
  Control ctl(h);
  ctl.send({api(ctl.next())});  // lb-healthd attaches and pushes the running state
  Run(h, {{.what = "after it: still there, both ways",
           .in = {rx_client(c2v(c[1], kUp, {}, kApiPort))},
           .out = {tx_backend(c2b(c[1], kB[2], kUp))},
           .checks = {backend_in(kB[2], 1), LB_CTR(flows_reset, 0)}},
          {.what = "the backend's answer reaches the client from VIP:8000",
           .in = {rx_backend(b2c(kB[2], c[1], kDown))},
           .out = {tx_client(v2c_api(c[1], kDown))},
           .checks = {backend_out(kB[2], 1)}}});
  // lb-healthd does not run it after all (removed while lbd was down): reset.
  ctl.send({removal(ctl.next(), "api")});
  Run(h, {{.what = "removed by lb-healthd: the client's next segment is reset",
           .in = {rx_client(c2v(c[0], kUp, {}, kApiPort))},
           .out = {tx_client(rst_to_client(c[0], kApiPort, kRst, 5001, 0))},
           .checks = {LB_CTR(flows_reset, 1), LB_CTR(flows_active, -1)}}});
}

// The names file is only a help: unreadable or not lbd's (a symbolic link), it is ignored and
// lbd starts all the same, then writes its own in its place.
TEST_F(FlowFiles, AServicesFileThatCannotBeReadIsIgnoredAndReplaced) {
  const std::string names = dir_ + "/lbd-pt-services.json";
  const std::string target = dir_ + "/elsewhere";
  for (const std::string& bad : {std::string("{\"services\": [{\"name\": 7}]}"),
                                 std::string("not json"), std::string("symlink")}) {
    SCOPED_TRACE(bad);
    std::filesystem::remove(names);
    if (bad == "symlink") {
      std::ofstream(target) << "{\"services\": []}";
      std::filesystem::create_symlink(target, names);
    } else {
      std::ofstream(names) << bad;
      chmod(names.c_str(), 0600);
    }
    HarnessOptions o = options();
    o.channel = true;  // as lbd runs with lb-healthd: it reads the file
    Harness h(o);
    ASSERT_NO_FATAL_FAILURE(Start(h));
    struct stat st {};
    ASSERT_EQ(lstat(names.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    std::ifstream in(names);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("\"web\""), std::string::npos) << text;
  }
}

// Fewer workers than the last lbd had: the files of the workers that are gone are discarded too,
// not left holding memory (huge pages) and old flows that a later lbd with as many workers as
// before would take over as its own.
TEST_F(FlowFiles, FilesOfWorkersThatAreGoneAreDiscarded) {
  {
    Harness h(options(3, 2));
    ASSERT_NO_FATAL_FAILURE(Start(h));
    uint64_t flows = 0;
    for (uint8_t i = 1; i <= 8; ++i) {
      const Client c = client(i);
      const uint16_t w = core::flow_owner(c.ip, c.port, 2, h.dp().reta_size());
      h.inject(kClientPort, w, c2v(c, syn_seg()));
      h.poll(w, 1);
      h.drain();
    }
    for (uint16_t w = 0; w < 2; ++w) flows += h.dp().processor(w).flows().size();
    ASSERT_EQ(flows, 8u);
    ASSERT_NE(h.dp().processor(1).flows().size(), 0u);
  }
  {
    Harness h(options(3, 1));
    ASSERT_NO_FATAL_FAILURE(Start(h));
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/lbd-pt-flows-1"))
        << "worker 1's file outlived worker 1";
  }
  Harness h(options(3, 2));
  ASSERT_NO_FATAL_FAILURE(Start(h));
  EXPECT_EQ(h.dp().processor(1).flows().size(), 0u) << "flows of two lbds ago came back";
}

TEST_F(FlowFiles, FreshOrOtherSettingsStartEmpty) {
  const Client c = client(1);
  auto open_one = [&](const HarnessOptions& o) {
    Harness h(o);
    ASSERT_NO_FATAL_FAILURE(Start(h));
    ASSERT_NO_FATAL_FAILURE(Run(h, handshake(c, kB[0])));
  };
  auto expect_empty = [&](const HarnessOptions& o) {
    Harness h(o);
    ASSERT_NO_FATAL_FAILURE(Start(h));
    uint64_t flows = 0;
    for (uint16_t w = 0; w < h.workers(); ++w) flows += h.dp().processor(w).flows().size();
    EXPECT_EQ(flows, 0u);
  };
  {
    SCOPED_TRACE("lbd --fresh");
    open_one(options());
    expect_empty(options(3, 1, /*fresh=*/true));
  }
  {
    SCOPED_TRACE("another number of workers");
    open_one(options());
    expect_empty(options(3, 2));
    // and the files are now the new settings'
    EXPECT_TRUE(std::filesystem::exists(dir_ + "/lbd-pt-flows-1"));
  }
}

}  // namespace
}  // namespace lb::test

namespace lb::test {
namespace {

// ---------------------------------------------------------------------------------------------
// scheduler = "maglev": placement by the table, misses rehashed to the same backend.

// The Maglev paper's population (NSDI 2016, section 3.4, equal weights), written out plainly:
// backends ordered by (ip, port), offset/skip from fmix64 of the key with the documented seeds,
// each takes the next free slot of its permutation in turn. And the flow's slot from its client
// side. Independent of dataplane/core/maglev.cc's faster fill.
uint64_t ref_fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

std::vector<uint32_t> ref_maglev(std::vector<uint32_t> ips, uint16_t port, uint32_t m) {
  std::sort(ips.begin(), ips.end());
  const size_t n = ips.size();
  std::vector<uint64_t> offset(n), skip(n), next(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t key = uint64_t{ips[i]} << 16 | port;
    offset[i] = ref_fmix64(key ^ 0x6d676c762d6f6666ull) % m;          // "mglv-off"
    skip[i] = ref_fmix64(key ^ 0x6d676c762d736b70ull) % (m - 1) + 1;  // "mglv-skp"
  }
  std::vector<uint32_t> entry(m, 0);  // backend ip
  uint32_t filled = 0;
  while (true) {
    for (size_t i = 0; i < n; ++i) {
      uint64_t c = (offset[i] + next[i] * skip[i]) % m;
      while (entry[c] != 0) {
        ++next[i];
        c = (offset[i] + next[i] * skip[i]) % m;
      }
      entry[c] = ips[i];
      ++next[i];
      if (++filled == m) return entry;
    }
  }
}

uint32_t ref_pick(const std::vector<uint32_t>& table, const Client& c, uint16_t vport,
                  uint64_t seed = 0x6d676c762d666c77ull) {
  const uint64_t a = uint64_t{c.ip} << 32 | kVip;
  const uint64_t b = uint64_t{c.port} << 16 | vport;
  const uint64_t h = ref_fmix64(ref_fmix64(a ^ seed) ^ b);
  return table[((h >> 32) * table.size()) >> 32];
}

constexpr uint16_t kMaglevVport = 2002;
constexpr uint32_t kSmallTable = 1009;  // prime; the reference's naive fill stays quick

shm::ServiceUpdate maglev_update(uint64_t generation, const std::vector<TestBackend>& bs,
                                 const std::vector<shm::BackendState>& states = {}) {
  shm::ServiceUpdate u =
      service_update(generation, "mg", kMaglevVport, cfg::Scheduler::kMaglev, bs);
  u.maglev_table_size = kSmallTable;
  u.flags = static_cast<uint8_t>(static_cast<uint8_t>(shm::Miss::kRehash) << shm::kMissShift);
  for (size_t i = 0; i < states.size(); ++i) u.backends[i].state = static_cast<uint8_t>(states[i]);
  return u;
}

// Worker 0's flows_rehashed of the service named `name` (0 when lbd has no such service) and
// that of every other service: a rehashed miss counts for its own service only.
std::pair<uint64_t, uint64_t> rehashed_of(Harness& h, const std::string& name) {
  const std::vector<std::string> names = h.dp().builder().service_names();
  std::pair<uint64_t, uint64_t> r{0, 0};
  for (size_t id = 0; id < core::kMaxServices; ++id) {
    const uint64_t n = h.dp().counters(0).service[id].flows_rehashed.get();
    (id < names.size() && names[id] == name ? r.first : r.second) += n;
  }
  return r;
}

// Sends the maglev service of `bs` to `h`'s lbd and tells it every backend's MAC.
void start_maglev(Harness& h, Control& ctl, const std::vector<TestBackend>& bs) {
  ctl.send({maglev_update(ctl.next(), bs)});
  ASSERT_EQ(h.dp().control_stats().updates_rejected.load(), 0u);
  for (const Backend& be : kB) h.inject(kBackendPort, 0, backend_arp_reply(be));
  h.poll(0, 1);
  h.drain();
}

const Backend* backend_at(uint32_t ip) {
  for (const Backend& b : kB)
    if (b.ip == ip) return &b;
  return nullptr;
}

TEST(Maglev, SynGoesToTheReferenceTablesBackend) {
  Harness h(HarnessOptions{.channel = true});
  h.now = 1000 * h.dp().ticks_per_second();
  Control ctl(h);
  start_maglev(h, ctl, {{kB[2].ip}, {kB[0].ip}, {kB[1].ip}});
  const std::vector<uint32_t> ref = ref_maglev({kB[0].ip, kB[1].ip, kB[2].ip}, 8080, kSmallTable);
  std::map<uint32_t, int> per_backend;
  for (uint16_t n = 0; n < 300; ++n) {
    const Client c = client(static_cast<uint8_t>(1 + n % 40), static_cast<uint16_t>(30000 + n));
    h.inject(kClientPort, 0, c2v(c, syn_seg(), {}, kMaglevVport));
    h.poll(0, 1);
    const std::vector<Emitted> out = ip_out(h);
    ASSERT_EQ(out.size(), 1u) << n;
    const Decoded d = decode(out[0].frame);
    EXPECT_EQ(d.ip_dst, ref_pick(ref, c, kMaglevVport)) << "client " << n;
    ++per_backend[d.ip_dst];
  }
  EXPECT_EQ(per_backend.size(), 3u);  // the reference spreads 300 flows over all three
}

// Two nodes with the same pool, each its own lbd (Dataplane, Processor, tables), the second
// given the backends in another order: the connection node A scheduled goes on through node B,
// which has no flow for it, to the same backend; B reverse-NATs the backend's reply.
TEST(Maglev, AMissOnAnotherNodeGoesToTheSameBackend) {
  // Node A (its own Dataplane, Processor and tables; one lbd process holds one at a time)
  // schedules 30 connections.
  std::map<uint8_t, uint32_t> chosen;
  {
    Harness a(HarnessOptions{.channel = true});
    a.now = 1000 * a.dp().ticks_per_second();
    Control ca(a);
    start_maglev(a, ca, {{kB[0].ip}, {kB[1].ip}, {kB[2].ip}});
    for (uint8_t n = 1; n <= 30; ++n) {
      a.inject(kClientPort, 0, c2v(client(n), syn_seg(), {}, kMaglevVport));
      a.poll(0, 1);
      const std::vector<Emitted> out = ip_out(a);
      ASSERT_EQ(out.size(), 1u);
      chosen[n] = decode(out[0].frame).ip_dst;
    }
    EXPECT_EQ(a.dp().counters(0).flows_rehashed.get(), 0u);
  }
  // Node B, built separately, given the backends in another order (so other ids), has no flow.
  Harness b(HarnessOptions{.channel = true});
  b.now = 1000 * b.dp().ticks_per_second();
  Control cb(b);
  start_maglev(b, cb, {{kB[1].ip}, {kB[2].ip}, {kB[0].ip}});
  std::set<uint32_t> used;
  for (uint8_t n = 1; n <= 30; ++n) {
    const Client c = client(n);
    used.insert(chosen[n]);
    b.inject(kClientPort, 0, c2v(c, data_seg(1001, 5001, "GET /"), {}, kMaglevVport));
    b.poll(0, 1);
    std::vector<Emitted> out = ip_out(b);
    ASSERT_EQ(out.size(), 1u) << int{n};
    const Decoded d = decode(out[0].frame);
    EXPECT_EQ(d.ip_dst, chosen[n]) << int{n};
    EXPECT_EQ(d.dport, kBackendTcpPort);
    EXPECT_EQ(d.payload, text("GET /"));
    // The backend's answer goes back through B, from the VIP.
    const Backend* be = backend_at(chosen[n]);
    ASSERT_NE(be, nullptr);
    b.inject(kBackendPort, 0, b2c(*be, c, data_seg(5001, 1006, "200 OK")));
    b.poll(0, 1);
    out = ip_out(b);
    ASSERT_EQ(out.size(), 1u);
    const Decoded r = decode(out[0].frame);
    EXPECT_EQ(out[0].port, kClientPort);
    EXPECT_EQ(r.ip_src, kVip);
    EXPECT_EQ(r.sport, kMaglevVport);
    EXPECT_EQ(r.ip_dst, c.ip);
    EXPECT_EQ(r.payload, text("200 OK"));
  }
  EXPECT_EQ(used.size(), 3u);
  EXPECT_EQ(b.dp().counters(0).flows_rehashed.get(), 30u);
  EXPECT_EQ(rehashed_of(b, "mg"), std::make_pair(uint64_t{30}, uint64_t{0}));
}

// A miss is never sent to a backend that is not serving new flows: the draining backend's
// entries went to the others when the table was rebuilt; its established flows continue.
TEST(Maglev, AMissNeverGoesToADrainingBackend) {
  Harness h(HarnessOptions{.channel = true});
  h.now = 1000 * h.dp().ticks_per_second();
  Control ctl(h);
  const std::vector<TestBackend> bs = {{kB[0].ip}, {kB[1].ip}, {kB[2].ip}};
  start_maglev(h, ctl, bs);
  // One established connection per client, noting who went to .11.
  std::vector<Client> on_first;
  for (uint8_t n = 1; n <= 60; ++n) {  // 10.10.0.51..110: .100, the VIP, is skipped
    if (n == 50) continue;
    const Client c = client(n);
    h.inject(kClientPort, 0, c2v(c, syn_seg(), {}, kMaglevVport));
    h.poll(0, 1);
    const std::vector<Emitted> out = ip_out(h);
    ASSERT_EQ(out.size(), 1u);
    if (decode(out[0].frame).ip_dst == kB[0].ip) on_first.push_back(c);
  }
  ASSERT_GE(on_first.size(), 5u);
  using S = shm::BackendState;
  ctl.send({maglev_update(ctl.next(), bs, {S::kDraining, S::kActive, S::kActive})});
  ASSERT_EQ(h.dp().control_stats().updates_rejected.load(), 0u);
  h.drain();
  // Established flows to the draining backend continue there.
  h.inject(kClientPort, 0, c2v(on_first[0], data_seg(1001, 5001, "x"), {}, kMaglevVport));
  h.poll(0, 1);
  std::vector<Emitted> out = ip_out(h);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(decode(out[0].frame).ip_dst, kB[0].ip);
  // Misses of tuples whose table entry was .11 (other ports of the same clients, and the same
  // clients after their flows are gone): none reaches it.
  int sent = 0;
  for (uint16_t p = 1; p <= 400; ++p) {
    const Client c = client(static_cast<uint8_t>(100 + p % 100), static_cast<uint16_t>(20000 + p));
    h.inject(kClientPort, 0, c2v(c, data_seg(1001, 5001, "y"), {}, kMaglevVport));
    h.poll(0, 1);
    out = ip_out(h);
    ASSERT_EQ(out.size(), 1u);
    const Decoded d = decode(out[0].frame);
    EXPECT_NE(d.ip_dst, kB[0].ip) << p;
    EXPECT_TRUE(d.ip_dst == kB[1].ip || d.ip_dst == kB[2].ip);
    ++sent;
  }
  EXPECT_EQ(h.dp().counters(0).flows_rehashed.get(), static_cast<uint64_t>(sent));
  EXPECT_EQ(rehashed_of(h, "mg"), std::make_pair(static_cast<uint64_t>(sent), uint64_t{0}));
  // And the table gives the draining backend's share to the others as the reference does.
  const std::vector<uint32_t> ref = ref_maglev({kB[1].ip, kB[2].ip}, 8080, kSmallTable);
  const Client c = client(250, 31000);
  h.inject(kClientPort, 0, c2v(c, data_seg(1001, 5001, "z"), {}, kMaglevVport));
  h.poll(0, 1);
  out = ip_out(h);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(decode(out[0].frame).ip_dst, ref_pick(ref, c, kMaglevVport));
}

// A pool change of a maglev service is published first with the service's previous table, so
// that it reaches the workers without waiting for a table build; the new table follows in a
// second pool from the same state (PoolChannel does both in one control tick: the test above
// sees the new table's picks right after the update).
TEST(Maglev, APoolChangeIsPublishedBeforeItsTable) {
  Harness h(HarnessOptions{.channel = true});
  const std::vector<TestBackend> bs = {{kB[0].ip}, {kB[1].ip}, {kB[2].ip}};
  using S = shm::BackendState;
  dp::PoolState one, two;
  ASSERT_EQ(dp::apply_update(one, maglev_update(1, bs)), "");
  two = one;
  ASSERT_EQ(dp::apply_update(two, maglev_update(2, bs, {S::kActive, S::kDraining, S::kActive})),
            "");
  const dp::PoolBuilder& b = h.dp().builder();
  const auto table = [](const core::Pool& p) { return p.find(kVip, kMaglevVport)->maglev; };
  const uint64_t builds = b.maglev_builds();
  const auto first = h.dp().build(1, one, true);  // no table before: built now
  EXPECT_EQ(b.maglev_builds(), builds + 1);
  EXPECT_FALSE(b.tables_pending());
  const auto deferred = h.dp().build(2, two, true);
  EXPECT_EQ(b.maglev_builds(), builds + 1);
  EXPECT_TRUE(b.tables_pending());
  EXPECT_EQ(table(*deferred), table(*first)) << "the previous table, shared";
  EXPECT_EQ(deferred->backends(*deferred->find(kVip, kMaglevVport)).size(), 2u);
  const auto completed = h.dp().build(2, two);
  EXPECT_EQ(b.maglev_builds(), builds + 2);
  EXPECT_FALSE(b.tables_pending());
  const std::vector<uint32_t> ref = ref_maglev({kB[0].ip, kB[2].ip}, 8080, kSmallTable);
  const std::span<const uint32_t> got = table(*completed)->entries();
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    const core::PoolBackend* pb = completed->backend(static_cast<core::BackendId>(got[i]));
    ASSERT_NE(pb, nullptr) << i;
    ASSERT_EQ(pb->ip, ref[i]) << i;
  }
  // Built once: the next build of the same state reuses it, deferred or not.
  EXPECT_EQ(table(*h.dp().build(2, two, true)), table(*completed));
  EXPECT_EQ(b.maglev_builds(), builds + 2);
  EXPECT_FALSE(b.tables_pending());
}

// The other schedulers keep their miss policy (drop here), also next to a maglev service.
TEST(Maglev, OtherServicesStillDropMisses) {
  Harness h(HarnessOptions{.channel = true});
  h.now = 1000 * h.dp().ticks_per_second();
  Control ctl(h);
  start_maglev(h, ctl, {{kB[0].ip}, {kB[1].ip}, {kB[2].ip}});
  h.inject(kClientPort, 0, c2v(client(1), data_seg(1001, 5001, "x")));  // web, rr
  h.poll(0, 1);
  EXPECT_TRUE(ip_out(h).empty());
  EXPECT_EQ(h.dp().counters(0).drops[static_cast<size_t>(DropReason::kFlowMiss)].get(), 1u);
  EXPECT_EQ(h.dp().counters(0).flows_rehashed.get(), 0u);
}

// The control thread builds a service's table only when its active backends change: an update
// of another service, or one that repeats the same pool, reuses it.
TEST(Maglev, TablesAreRebuiltOnlyForServicesWhosePoolChanged) {
  Harness h(HarnessOptions{.channel = true});
  h.now = 1000 * h.dp().ticks_per_second();
  Control ctl(h);
  const std::vector<TestBackend> bs = {{kB[0].ip}, {kB[1].ip}, {kB[2].ip}};
  const uint64_t at_start = h.dp().builder().maglev_builds();
  ctl.send({maglev_update(ctl.next(), bs)});
  EXPECT_EQ(h.dp().builder().maglev_builds(), at_start + 1);
  ctl.send({service_update(ctl.next(), "x", 2003, cfg::Scheduler::kRoundRobin, {{kB[0].ip}})});
  ctl.send({maglev_update(ctl.next(), bs)});
  EXPECT_EQ(h.dp().builder().maglev_builds(), at_start + 1);
  using S = shm::BackendState;
  ctl.send({maglev_update(ctl.next(), bs, {S::kActive, S::kDraining, S::kActive})});
  EXPECT_EQ(h.dp().builder().maglev_builds(), at_start + 2);
  ctl.send({maglev_update(ctl.next(), {{kB[0].ip}, {kB[1].ip, 2}, {kB[2].ip}})});
  EXPECT_EQ(h.dp().builder().maglev_builds(), at_start + 3);
  EXPECT_EQ(h.dp().control_stats().updates_rejected.load(), 0u);
  // A maglev table size that is not prime, or rehash for a service that is not maglev: refused.
  shm::ServiceUpdate bad = maglev_update(ctl.next(), bs);
  bad.maglev_table_size = 1000;
  ctl.send({bad});
  EXPECT_EQ(h.dp().control_stats().updates_rejected.load(), 1u);
  shm::ServiceUpdate rr = service_update(ctl.next(), "x", 2003, cfg::Scheduler::kRoundRobin, bs);
  rr.flags = static_cast<uint8_t>(static_cast<uint8_t>(shm::Miss::kRehash) << shm::kMissShift);
  ctl.send({rr});
  EXPECT_EQ(h.dp().control_stats().updates_rejected.load(), 2u);
}

// ---------------------------------------------------------------------------------------------
// SYN floods (docs/operations.md, "SYN floods"): each policy through the real worker path, with
// a budget of 10 embryonic flows (1 % of 1024).

void learn_backends(Harness& h) {
  for (const Backend& be : kB) h.inject(kBackendPort, 0, backend_arp_reply(be));
  h.poll(0, 1);
  h.drain();
}

// Flood SYN i: from one of 40 client addresses, each from many ports.
Client flood_client(uint32_t i) {
  return client(static_cast<uint8_t>(1 + i % 40), static_cast<uint16_t>(10000 + i / 40));
}

// Sends flood SYNs [from, from + n), 16 per poll; returns what lbd transmitted.
std::vector<Emitted> flood(Harness& h, uint32_t from, uint32_t n) {
  std::vector<Emitted> all;
  for (uint32_t i = from; i < from + n; ++i) {
    h.inject(kClientPort, 0, c2v(flood_client(i), syn_seg(i)));
    if ((i - from) % 16 == 15 || i + 1 == from + n) {
      h.poll(0, 1);
      for (Emitted& e : ip_out(h)) all.push_back(std::move(e));
    }
  }
  return all;
}

struct Connection {
  Client c;
  const Backend* b;
};

// A dnat handshake of client n; the backend is whichever lbd picks.
Connection handshake_of(Harness& h, uint8_t n) {
  const Client c = client(n);
  h.inject(kClientPort, 0, c2v(c, syn_seg()));
  h.poll(0, 1);
  std::vector<Emitted> out = ip_out(h);
  EXPECT_EQ(out.size(), 1u) << "SYN of client " << int{n};
  if (out.size() != 1) return {c, nullptr};
  const Backend* b = backend_at(decode(out[0].frame).ip_dst);
  EXPECT_NE(b, nullptr);
  if (!b) return {c, nullptr};
  EXPECT_EQ(out[0].frame, c2b(c, *b, syn_seg()));
  h.inject(kBackendPort, 0, b2c(*b, c, synack_seg()));
  h.poll(0, 1);
  out = ip_out(h);
  EXPECT_EQ(out.size(), 1u);
  if (out.size() == 1) {
    EXPECT_EQ(out[0].frame, v2c(c, synack_seg()));
  }
  h.inject(kClientPort, 0, c2v(c, ack_seg()));
  h.poll(0, 1);
  out = ip_out(h);
  EXPECT_EQ(out.size(), 1u);
  if (out.size() == 1) {
    EXPECT_EQ(out[0].frame, c2b(c, *b, ack_seg()));
  }
  return {c, b};
}

// The connection's data goes through both ways, byte for byte.
void expect_data_both_ways(Harness& h, const Connection& k) {
  ASSERT_NE(k.b, nullptr);
  const Seg up = data_seg(1001, 5001, "GET /");
  h.inject(kClientPort, 0, c2v(k.c, up));
  h.poll(0, 1);
  std::vector<Emitted> out = ip_out(h);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, c2b(k.c, *k.b, up));
  const Seg down = data_seg(5001, 1006, "200 OK");
  h.inject(kBackendPort, 0, b2c(*k.b, k.c, down));
  h.poll(0, 1);
  out = ip_out(h);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame, v2c(k.c, down));
}

TEST(SynFlood, DropNewRefusesSynsOverTheBudgetAndKeepsEstablishedFlows) {
  HarnessOptions o;
  o.flows_extra = "syn_budget = 1; syn_flood_policy = \"drop-new\";";
  Harness h(o);
  learn_backends(h);
  const Connection a = handshake_of(h, 41), b = handshake_of(h, 42);
  const core::WorkerCounters& c = h.dp().counters(0);
  EXPECT_EQ(flood(h, 0, 50).size(), 10u);
  EXPECT_EQ(c.flows_refused.get(), 40u);
  EXPECT_EQ(c.drops[static_cast<size_t>(DropReason::kSynBudgetFull)].get(), 40u);
  EXPECT_EQ(c.syn_evicted.get(), 0u);
  EXPECT_EQ(h.dp().processor(0).flows().embryonic(), 10u);
  EXPECT_EQ(h.dp().processor(0).flows().size(), 12u);
  expect_data_both_ways(h, a);
  expect_data_both_ways(h, b);
}

TEST(SynFlood, EvictEmbryonicForwardsEverySynAndKeepsEstablishedFlows) {
  HarnessOptions o;
  o.flows_extra = "syn_budget = 1; syn_flood_policy = \"evict-embryonic\";";
  Harness h(o);
  learn_backends(h);
  const Connection a = handshake_of(h, 41), b = handshake_of(h, 42);
  const core::WorkerCounters& c = h.dp().counters(0);
  const std::vector<Emitted> out = flood(h, 0, 50);
  ASSERT_EQ(out.size(), 50u);
  for (size_t i = 0; i < out.size(); ++i) {
    const Backend* be = backend_at(decode(out[i].frame).ip_dst);
    ASSERT_NE(be, nullptr) << i;
    EXPECT_EQ(out[i].frame,
              c2b(flood_client(static_cast<uint32_t>(i)), *be, syn_seg(static_cast<uint32_t>(i))))
        << i;
  }
  EXPECT_EQ(c.syn_evicted.get(), 40u);
  EXPECT_EQ(c.flows_refused.get(), 0u);
  EXPECT_EQ(h.dp().processor(0).flows().embryonic(), 10u);
  EXPECT_EQ(h.dp().processor(0).flows().size(), 12u);
  expect_data_both_ways(h, a);
  expect_data_both_ways(h, b);
  // A new client still completes its handshake (its SYN evicts the oldest flood entry).
  const Connection n = handshake_of(h, 43);
  EXPECT_EQ(c.syn_evicted.get(), 41u);
  expect_data_both_ways(h, n);
}

TEST(SynFlood, StatelessRoutesByTheMaglevTableWithoutAFlow) {
  HarnessOptions o;
  o.scheduler = "maglev";
  o.forward = "tunnel";
  o.web_extra = "maglev_table_size = 1009; syn_flood_policy = \"stateless\";";
  o.flows_extra = "syn_budget = 1;";
  Harness h(o);
  learn_backends(h);
  const std::vector<uint32_t> ref = ref_maglev({kB[0].ip, kB[1].ip, kB[2].ip}, 8080, 1009);
  const core::WorkerCounters& c = h.dp().counters(0);
  const std::vector<Emitted> out = flood(h, 0, 50);
  ASSERT_EQ(out.size(), 50u);
  for (uint32_t i = 0; i < 50; ++i) {
    const Client fc = flood_client(i);
    const Backend* be = backend_at(ref_pick(ref, fc, kVport));
    ASSERT_NE(be, nullptr);
    EXPECT_EQ(out[i].frame, c2b_ipip(fc, *be, syn_seg(i))) << i;
  }
  EXPECT_EQ(c.flows_created.get(), 10u) << "the budget's worth get a flow";
  EXPECT_EQ(c.syn_stateless.get(), 40u);
  EXPECT_EQ(c.flows_refused.get(), 0u);
  EXPECT_EQ(c.syn_evicted.get(), 0u);
  EXPECT_EQ(h.dp().processor(0).flows().size(), 10u);
  // The client of a stateless SYN answers: the maglev rehash sends its ACK to the same backend
  // and makes the flow then.
  const Client fc = flood_client(49);
  const Backend* be = backend_at(ref_pick(ref, fc, kVport));
  ASSERT_NE(be, nullptr);
  h.inject(kClientPort, 0, c2v(fc, ack_seg()));
  h.poll(0, 1);
  const std::vector<Emitted> ack = ip_out(h);
  ASSERT_EQ(ack.size(), 1u);
  EXPECT_EQ(ack[0].frame, c2b_ipip(fc, *be, ack_seg()));
  EXPECT_EQ(c.flows_rehashed.get(), 1u);
  EXPECT_EQ(h.dp().processor(0).flows().size(), 11u);
}

}  // namespace
}  // namespace lb::test
