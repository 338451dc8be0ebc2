// Fuzz target: the packet core (core::Processor) as a stateful stream.
//
// The input is a program. Its first byte chooses the policies (RST on a miss or with no backend,
// retries on RST and on SYN retransmission, the SYN cache, one or two workers, maglev services
// that rehash misses and send SYNs statelessly, the SYN-flood knobs); then each op
// builds a mostly valid frame (a client's or a backend's TCP segment, the answer to the last
// frame lbd sent either way, ARP, ICMP echo, an ICMP error quoting one of the last packets lbd
// sent or one it never sent, or raw bytes), damages it as the next bytes say, and gives it to a
// worker, alone or in a burst; other ops move the clock, age the tables or swap the pool for
// another version (backends draining, stopped, removed; a service removed). The services are in
// every forward mode: dnat, tunnel (IPIP) and full-NAT (two local addresses, a few local ports).
// Two workers share the neighbor table and hand frames to each other as lbd's do. The tables
// are small (24 flows per worker, 8 SYN-cache slots, 12 local ports), so they fill, age and get
// reused.
//
// Checked on every verdict: a frame for another host's MAC (or TCP/ICMP to a group MAC) is
// dropped; a drop is counted once, under its reason; a frame handed to another worker is
// unchanged and that worker owns it. On every transmitted frame: it lies inside its
// buffer and parses; its source MAC is its port's and its destination MAC is unicast (toward a
// backend: a resolved next hop's); the IPv4 header checksum is right; the TCP checksum is right
// whenever the input's was (for a replayed SYN: whenever every SYN forwarded so far had a right
// one); TCP leaves either from a VIP:port (to a client) or toward a backend's ip:port, and never
// from or to lbd's own addresses, a client's segment reaching a backend of its service and a
// backend's reply leaving from its service's VIP:port; toward a full-NAT backend only from a
// local address:port of the sending worker; IPIP from the backend port's address to a tunnel
// backend with the input's packet inside unchanged; ARP answers only for a port address, a VIP
// or a local address, ICMP replies come only from a VIP or a port address; an ICMP error passed
// on goes to the flow's other end with its quote translated (check_relayed). After every op,
// each worker's flow counters agree with its table.

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "fuzz.h"
#include "packet_builder.h"
#include "processor.h"

namespace lb::fuzz {
namespace {

using core::Action;
using core::DropReason;
using core::Frame;
using core::MacAddr;
using core::PacketKind;
using core::Pool;
using core::PoolBackend;
using core::Processor;
using core::Tick;
using core::Verdict;
using test::Bytes;
using test::ip4;
using test::mac;
namespace tf = test::tcpf;

// --- The network --------------------------------------------------------------------------------
// port 0 "client" 10.10.0.1/24, port 1 "backend" 10.20.0.1/24 (gateway 10.20.0.254).

constexpr uint16_t kPorts = 2;
const MacAddr kPortMac[kPorts] = {mac(0x02, 0, 0, 0, 0, 0x10), mac(0x02, 0, 0, 0, 0, 0x20)};
constexpr uint32_t kPortIp[kPorts] = {ip4(10, 10, 0, 1), ip4(10, 20, 0, 1)};
constexpr uint32_t kGateway = ip4(10, 20, 0, 254);
const MacAddr kGatewayMac = mac(0x02, 0xbb, 0, 0, 0, 0xfe);
const MacAddr kRouterMac = mac(0x02, 0xcc, 0, 0, 0, 0xfe);  // remote clients come through it

struct Endpoint {
  uint32_t ip;
  uint16_t port;
};
constexpr uint32_t kVip1 = ip4(10, 10, 0, 100);
constexpr uint32_t kVip2 = ip4(10, 10, 0, 101);
// Services 0-5 in every forward mode: 0-3 dnat (service 3 has no backends), 4 tunnel (IPIP to
// its backends, which answer the client directly), 5 full-NAT (from a local address and port).
constexpr int kServices = 6;
constexpr int kTunnelService = 4;
constexpr int kFullnatService = 5;
constexpr Endpoint kService[kServices] = {{kVip1, 80}, {kVip1, 443}, {kVip2, 80},
                                          {kVip2, 25}, {kVip2, 443}, {kVip1, 8000}};
constexpr core::ForwardMode kForward[kServices] = {
    core::ForwardMode::kDnat, core::ForwardMode::kDnat,   core::ForwardMode::kDnat,
    core::ForwardMode::kDnat, core::ForwardMode::kTunnel, core::ForwardMode::kFullnat};
// Where a client's segment goes: services 0-3, two addresses of no service, services 4-5 (in
// this order so that the seeds written before the tunnel and full-NAT services keep their
// meaning).
constexpr Endpoint kDest[8] = {kService[0], kService[1],      kService[2], kService[3],
                               {kVip1, 81}, {kPortIp[0], 22}, kService[4], kService[5]};

// Full-NAT local addresses, on the backend port's subnet (lbd answers ARP for them there), and
// a small range of local ports (each worker owns those p with p % workers == worker), so that
// they run out and cool down (held kFullnatHold ticks after their flow's record goes).
constexpr uint32_t kLocal[2] = {ip4(10, 20, 0, 50), ip4(10, 20, 0, 51)};
constexpr uint16_t kFullnatFirst = 2000, kFullnatLast = 2011;
constexpr Tick kFullnatHold = 40;

// Backend entries (BackendId = index): service, address, port, weight. No two share an
// address and port, so a backend's ip:port names its service.
struct BackendSpec {
  int service;
  uint32_t ip;
  uint16_t port;
  uint16_t weight;
};
constexpr std::array<BackendSpec, 11> kBackends = {{
    {0, ip4(10, 20, 0, 11), 8080, 1},
    {0, ip4(10, 20, 0, 12), 8080, 1},
    {0, ip4(10, 20, 0, 13), 8080, 1},
    {1, ip4(10, 20, 0, 12), 8443, 3},
    {1, ip4(10, 20, 0, 14), 8443, 1},  // its MAC is learned only from ARP
    {2, ip4(198, 51, 100, 7), 80, 1},  // behind the gateway
    {2, ip4(10, 20, 0, 11), 9000, 2},
    {kTunnelService, ip4(10, 20, 0, 13), 443, 1},
    {kTunnelService, ip4(198, 51, 100, 7), 443, 1},
    {kFullnatService, ip4(10, 20, 0, 12), 8000, 1},
    {kFullnatService, ip4(10, 20, 0, 14), 8000, 2},
}};
// Next hops in neighbor-slot order.
constexpr uint32_t kNextHop[] = {ip4(10, 20, 0, 11), ip4(10, 20, 0, 12), ip4(10, 20, 0, 13),
                                 ip4(10, 20, 0, 14), kGateway};
MacAddr next_hop_mac(uint32_t ip) {
  return ip == kGateway ? kGatewayMac : mac(0x02, 0xbb, 0, 0, 0, static_cast<uint8_t>(ip & 0xff));
}
uint16_t slot_of(uint32_t backend_ip) {
  for (uint16_t s = 0; s < 4; ++s)
    if (kNextHop[s] == backend_ip) return s;
  return 4;  // the gateway
}

// Clients 0-7 on the client subnet, 8-11 behind a router. Then sources from elsewhere: lbd's
// own addresses and backends' (refused as clients), the gateway, and invalid ones.
uint32_t client_ip(uint32_t c) {
  return c < 8 ? ip4(10, 10, 0, static_cast<uint8_t>(50 + c))
               : ip4(203, 0, 113, static_cast<uint8_t>(c));
}
MacAddr client_mac(uint32_t c) {
  return c < 8 ? mac(0x02, 0xcc, 0, 0, 0, static_cast<uint8_t>(0x50 + c)) : kRouterMac;
}
constexpr uint32_t kMartians[] = {kVip1,
                                  kVip2,
                                  kPortIp[0],
                                  kPortIp[1],
                                  kGateway,
                                  ip4(10, 20, 0, 11),
                                  ip4(198, 51, 100, 7),
                                  0,
                                  ip4(127, 0, 0, 1),
                                  0xffffffff,
                                  ip4(224, 0, 0, 5),
                                  kLocal[0]};
constexpr uint16_t kClientPorts[] = {40000, 40001, 40002, 50000, 1024, 65535};

bool is_vip(uint32_t ip) {
  return ip == kVip1 || ip == kVip2;
}
bool is_local(uint32_t ip) {
  return ip == kPortIp[0] || ip == kPortIp[1];
}
bool is_fullnat_addr(uint32_t ip) {
  return ip == kLocal[0] || ip == kLocal[1];
}
// The service at ip:port, or -1.
int service_at(uint32_t ip, uint16_t port) {
  for (int s = 0; s < kServices; ++s)
    if (kService[s].ip == ip && kService[s].port == port) return s;
  return -1;
}
bool is_service(uint32_t ip, uint16_t port) {
  return service_at(ip, port) >= 0;
}
// The service of the backend at ip:port, or -1.
int backend_service(uint32_t ip, uint16_t port) {
  for (const BackendSpec& b : kBackends)
    if (b.ip == ip && b.port == port) return b.service;
  return -1;
}
bool is_backend(uint32_t ip, uint16_t port) {
  return backend_service(ip, port) >= 0;
}
bool is_tunnel_backend_ip(uint32_t ip) {
  for (const BackendSpec& b : kBackends)
    if (b.service == kTunnelService && b.ip == ip) return true;
  return false;
}

// Pool versions. 0: everything active. 1: 10.20.0.12:8080 draining, .13:8080 stopped (its flows
// are reset), .14:8443 weight 0; the tunnel's .13:443 draining, full-NAT's .12:8000 stopped.
// 2: service 1 removed, 198.51.100.7 stopped (on both its ports), full-NAT's .14 weight 0.
// 3: service 0 with no live backend (all draining), service 2 and the tunnel empty (stopped),
// full-NAT's all draining.
// With `maglev` (the policy byte's 0x40), services 0, 2, 4 and 5 are maglev services (a table
// of 257 entries): 0 (dnat) and 4 (tunnel) rehash their misses, 4 sends SYNs without a flow when
// the table is full or over the stateless rate (syn_policy stateless), 2 evicts embryonic flows,
// 5 (full-NAT, which cannot rehash) drops new ones.
enum class Role { kActive, kDraining, kStopped, kWeightZero };
using Roles = std::array<Role, kBackends.size()>;
std::unique_ptr<Pool> make_pool(uint64_t generation, const Roles& roles, bool without_service1,
                                bool maglev) {
  constexpr core::SchedulerKind kKinds[kServices] = {
      core::SchedulerKind::kRoundRobin, core::SchedulerKind::kWeightedRoundRobin,
      core::SchedulerKind::kLeastConn,  core::SchedulerKind::kRandom,
      core::SchedulerKind::kRoundRobin, core::SchedulerKind::kWeightedRoundRobin};
  constexpr bool kMaglevService[kServices] = {true, false, true, false, true, true};
  constexpr core::MissMode kMiss[kServices] = {core::MissMode::kRehash,  core::MissMode::kDefault,
                                               core::MissMode::kDefault, core::MissMode::kDefault,
                                               core::MissMode::kRehash,  core::MissMode::kDefault};
  constexpr core::SynPolicy kSynPolicy[kServices] = {
      core::SynPolicy::kDefault, core::SynPolicy::kDefault,   core::SynPolicy::kEvictEmbryonic,
      core::SynPolicy::kDefault, core::SynPolicy::kStateless, core::SynPolicy::kDropNew};
  std::vector<Pool::ServiceSpec> specs;
  for (int s = 0; s < kServices; ++s) {
    if (s == 1 && without_service1) continue;
    const bool m = maglev && kMaglevService[s];
    Pool::ServiceSpec spec{static_cast<core::ServiceId>(s),
                           kService[s].ip,
                           kService[s].port,
                           m ? core::SchedulerKind::kMaglev : kKinds[s],
                           {},
                           {}};
    spec.forward = kForward[s];
    if (m) {
      spec.maglev_table_size = 257;
      spec.miss = kMiss[s];
      spec.syn_policy = kSynPolicy[s];
    }
    for (uint32_t i = 0; i < kBackends.size(); ++i) {
      const BackendSpec& b = kBackends[i];
      if (b.service != s || roles[i] == Role::kStopped) continue;
      spec.serving.push_back(static_cast<core::BackendId>(i));
      if (roles[i] == Role::kDraining) continue;
      const uint16_t weight = roles[i] == Role::kWeightZero ? 0 : b.weight;
      spec.backends.push_back(
          PoolBackend{static_cast<core::BackendId>(i), b.ip, b.port, 1, slot_of(b.ip), weight});
    }
    specs.push_back(std::move(spec));
  }
  std::vector<Pool::Address> retired;
  if (without_service1) retired.push_back({kService[1].ip, kService[1].port});
  return std::make_unique<Pool>(generation, specs, retired);
}

const std::array<std::unique_ptr<Pool>, 4>& pools(bool maglev) {
  constexpr Role A = Role::kActive, D = Role::kDraining, S = Role::kStopped, W = Role::kWeightZero;
  const auto versions = [](bool m) {
    return std::array<std::unique_ptr<Pool>, 4>{
        make_pool(1, {A, A, A, A, A, A, A, A, A, A, A}, false, m),
        make_pool(2, {A, D, S, A, W, A, A, D, A, S, A}, false, m),
        make_pool(3, {A, A, A, A, A, S, A, A, S, A, W}, true, m),
        make_pool(4, {D, D, D, A, A, S, S, S, S, D, D}, false, m),
    };
  };
  static const std::array<std::unique_ptr<Pool>, 4> plain = versions(false);
  static const std::array<std::unique_ptr<Pool>, 4> with_maglev = versions(true);
  return maglev ? with_maglev : plain;
}

// --- Frames -------------------------------------------------------------------------------------

// A frame to process and what the checks need to know of it.
struct Input {
  Bytes frame;
  uint16_t port = 0;
  uint16_t headroom = 128;
  uint16_t tailroom = 64;
  bool nic_ip_ok = false;  // the NIC verified the IPv4 header checksum (only when it is right)
};

// Damage as the next byte says: VLAN tag and MAC addresses are chosen by the builders; here
// checksums, bytes, length, headroom and the NIC's checksum flag.
void damage(Input& in, Reader& r) {
  Bytes& f = in.frame;
  const uint8_t how = r.u8();
  const test::Decoded d = test::decode(f);
  if ((how & 0x01) && d.type == 0x0800 && d.proto == 6 && f.size() >= d.l4 + 18)
    f[d.l4 + 16] ^= static_cast<uint8_t>(1 + r.u8() % 255);  // TCP checksum
  if ((how & 0x02) && d.type == 0x0800 && f.size() >= d.l3 + 12)
    f[d.l3 + 10] ^= static_cast<uint8_t>(1 + r.u8() % 255);  // IPv4 header checksum
  if (how & 0x04) {
    const int n = 1 + r.pick(4);
    for (int i = 0; i < n && !f.empty(); ++i) f[r.u16() % f.size()] = r.u8();
    if (r.bit() && d.type == 0x0800 && f.size() >= d.l3 + 20) {
      // Keep the IPv4 header checksum right so that the TCP logic sees the damage.
      test::set16(f.data() + d.l3 + 10, 0);
      test::set16(f.data() + d.l3 + 10, test::ref_checksum(f.data() + d.l3, 20));
    }
  }
  if (how & 0x08) {
    const uint16_t len = r.u16();
    if (len & 0x8000)
      f.resize(f.size() + (len & 0xff), static_cast<uint8_t>(len >> 8));  // padding, any value
    else if (!f.empty())
      f.resize(len % f.size());
  }
  if (how & 0x10) in.headroom = r.pick(20);  // room for a VLAN tag, or not
  if (how & 0x20) in.tailroom = r.pick(80);  // room for a replayed SYN, or not
  if (how & 0x40) {
    const test::Decoded now = test::decode(f);
    in.nic_ip_ok = now.type == 0x0800 && f.size() >= now.l3 + 20 &&
                   test::ref_sum(f.data() + now.l3, 20) == 0xffff;
  }
  if (how & 0x80) in.port ^= 1;  // in on the wrong port
}

// The Ethernet header of a frame toward lbd's port: its MAC, or (as the next byte says) a
// group address or another host's.
test::Eth eth_to(uint16_t port, const MacAddr& src, Reader& r) {
  const uint8_t how = r.u8();
  MacAddr dst = kPortMac[port];
  switch (how & 0x07) {
    case 5:
      dst = core::kBroadcastMac;
      break;
    case 6:
      dst = mac(0x01, 0x00, 0x5e, 0, 0, 0x12);
      break;
    case 7:
      dst = how & 0x08 ? kPortMac[port ^ 1] : mac(0x02, 0xdd, 0, 0, 0, how);
      break;
    default:
      break;
  }
  test::Eth e = test::eth(dst, src);
  if (how & 0x10) e.tags.push_back(test::VlanTag{static_cast<uint16_t>(r.u16() & 0xefff), 0x8100});
  if ((how & 0x60) == 0x60) e.src = mac(0x01, 0x00, 0x5e, 0, 0, 0x34);  // a group source
  return e;
}

constexpr uint8_t kClientFlags[] = {tf::kSyn,
                                    tf::kAck,
                                    tf::kAck | tf::kPsh,
                                    tf::kFin | tf::kAck,
                                    tf::kRst,
                                    tf::kRst | tf::kAck,
                                    tf::kSyn,
                                    tf::kAck,
                                    tf::kSyn | tf::kAck,
                                    tf::kFin};
constexpr uint8_t kBackendFlags[] = {tf::kSyn | tf::kAck,
                                     tf::kAck,
                                     tf::kAck | tf::kPsh,
                                     tf::kFin | tf::kAck,
                                     tf::kRst,
                                     tf::kRst | tf::kAck,
                                     tf::kAck,
                                     tf::kSyn};
template <size_t N>
uint8_t flags_from(const uint8_t (&table)[N], Reader& r) {
  const uint8_t k = r.u8();
  return k < 0xf0 ? table[k % N] : r.u8();  // now and then any flags at all
}

test::Tcp segment(uint16_t sport, uint16_t dport, uint8_t flags, Reader& r) {
  test::Tcp t;
  t.sport = sport;
  t.dport = dport;
  t.flags = flags;
  const uint8_t how = r.u8();
  t.seq = how & 0x01 ? r.u32() : r.u8();
  t.ack = how & 0x02 ? r.u32() : r.u8();
  if ((flags & tf::kSyn) && !(how & 0x04)) t.options = test::syn_options(r.u8());
  const size_t payload = how & 0x08 ? size_t{r.u16()} % 1460 : size_t{r.pick(40)};
  t.payload.assign(payload, static_cast<uint8_t>(how));
  return t;
}

test::Ip ip_header(uint32_t src, uint32_t dst, Reader& r) {
  test::Ip ip;
  ip.src = src;
  ip.dst = dst;
  ip.id = r.u8();
  ip.ttl = static_cast<uint8_t>(1 + r.u8() % 64);
  return ip;
}

Input client_segment(Reader& r) {
  const uint8_t who = r.u8();
  const uint32_t c = who % 12;
  const uint32_t src = who >= 0xf0 ? kMartians[who % std::size(kMartians)] : client_ip(c);
  const uint16_t cport = kClientPorts[r.pick(std::size(kClientPorts))];
  const Endpoint dst = kDest[r.pick(std::size(kDest))];
  const uint8_t flags = flags_from(kClientFlags, r);
  Input in;
  in.port = 0;
  const test::Eth e = eth_to(0, client_mac(c), r);
  const test::Ip ip = ip_header(src, dst.ip, r);
  in.frame = test::tcp_frame(e, ip, segment(cport, dst.port, flags, r));
  return in;
}

Input backend_segment(Reader& r) {
  const BackendSpec& b = kBackends[r.pick(kBackends.size())];
  const uint32_t c = r.pick(12);
  const uint16_t cport = kClientPorts[r.pick(std::size(kClientPorts))];
  const uint8_t flags = flags_from(kBackendFlags, r);
  Input in;
  in.port = 1;
  const test::Eth e = eth_to(1, next_hop_mac(kNextHop[slot_of(b.ip)]), r);
  const test::Ip ip = ip_header(b.ip, client_ip(c), r);
  in.frame = test::tcp_frame(e, ip, segment(b.port, cport, flags, r));
  return in;
}

// The other end's answer to the last TCP segment lbd sent on `port`: a backend answering a
// client's segment, or a client answering a backend's. This is how handshakes complete and
// flows move through their states.
std::optional<Input> answer(const Bytes& last, uint16_t port, Reader& r) {
  const test::Decoded d = test::decode(last);
  if (!d.ok || d.type != 0x0800 || d.proto != 6) return std::nullopt;
  const uint8_t flags = (d.flags & tf::kSyn) && !(d.flags & tf::kAck) && r.u8() < 0xc0
                            ? static_cast<uint8_t>(tf::kSyn | tf::kAck)
                            : flags_from(kBackendFlags, r);
  Input in;
  in.port = port;
  const test::Eth e = eth_to(port, d.dst, r);
  test::Ip ip = ip_header(d.ip_dst, d.ip_src, r);
  test::Tcp t = segment(d.dport, d.sport, flags, r);
  t.ack = d.seq + 1;
  in.frame = test::tcp_frame(e, ip, t);
  return in;
}

Input arp(Reader& r) {
  const uint8_t how = r.u8();
  constexpr uint32_t kTargets[] = {kPortIp[0],        kPortIp[1], kVip1,     kVip2,
                                   ip4(10, 10, 0, 7), kGateway,   kLocal[0], kLocal[1]};
  constexpr uint32_t kSenders[] = {
      ip4(10, 20, 0, 11), ip4(10, 20, 0, 14), kGateway, ip4(10, 10, 0, 50), 0, ip4(10, 20, 0, 99)};
  test::Arp a;
  a.op = how & 0x01 ? 2 : 1;
  a.spa = kSenders[r.pick(std::size(kSenders))];
  a.tpa = kTargets[r.pick(std::size(kTargets))];
  switch ((how >> 1) & 0x03) {
    case 0:
      a.sha = next_hop_mac(a.spa);
      break;
    case 1:
      a.sha = mac(0x02, 0xee, 0, 0, 0, r.u8());  // moved to another MAC
      break;
    case 2:
      a.sha = mac(0x01, 0x00, 0x5e, 0, 0, 1);  // a group address: never learned, never answered
      break;
    default:
      a.sha = core::MacAddr{};
      break;
  }
  if (a.op == 2) a.tha = kPortMac[(how >> 3) & 1];
  Input in;
  in.port = (how >> 3) & 1;
  test::Eth e = eth_to(in.port, a.sha, r);
  if (a.op == 1 && !(how & 0x10)) e.dst = core::kBroadcastMac;
  if (how & 0x20) {
    a.htype = r.u8();
    a.hlen = r.u8();
  }
  in.frame = test::arp_frame(e, a);
  return in;
}

Input icmp(Reader& r) {
  const uint8_t how = r.u8();
  constexpr uint32_t kTargets[] = {kVip1, kPortIp[0], kPortIp[1], ip4(10, 10, 0, 200)};
  const uint32_t c = r.pick(12);
  const uint32_t src = how & 0x80 ? kMartians[r.pick(std::size(kMartians))] : client_ip(c);
  test::Icmp m;
  m.type = how & 0x01 ? r.u8() : 8;
  m.code = how & 0x02 ? r.u8() : 0;
  m.id = r.u16();
  m.seq = r.u16();
  m.payload.assign(how & 0x04 ? size_t{r.u16()} % 1400 : size_t{r.pick(64)},
                   static_cast<uint8_t>(how));
  Input in;
  in.port = 0;
  const test::Eth e = eth_to(0, client_mac(c), r);
  in.frame = test::icmp_frame(e, ip_header(src, kTargets[r.pick(std::size(kTargets))], r), m);
  return in;
}

Input raw(Reader& r) {
  Input in;
  in.port = r.u8() & 1;
  size_t n = 0;
  const uint8_t* p = r.take(n, r.u8());
  in.frame.assign(p, p + n);
  return in;
}

// A packet lbd never sent, for an ICMP error to quote, as the next byte says: VIP:port ->
// client (as lbd sends a client), client or local address:port -> backend (as dnat and full-NAT
// send a backend), IPIP from a port address to a backend around a client's packet to a VIP:port
// (as the tunnel sends), or any protocol. `side`: the port such a packet would leave on.
Bytes made_up_quote(Reader& r, uint16_t& side) {
  const uint8_t how = r.u8();
  const Endpoint svc = kDest[r.pick(std::size(kDest))];
  const uint32_t c = client_ip(r.pick(12));
  const uint16_t cport = kClientPorts[r.pick(std::size(kClientPorts))];
  const BackendSpec& b = kBackends[r.pick(kBackends.size())];
  const uint8_t flags = flags_from(kClientFlags, r);
  test::Ip ip;
  ip.id = how;
  switch (how & 0x03) {
    case 0:
      ip.src = svc.ip;
      ip.dst = c;
      side = 0;
      return test::ipv4_packet(ip, 6, test::tcp_segment(ip, segment(svc.port, cport, flags, r)));
    case 1: {
      const bool local = (how & 0x04) != 0;
      ip.src = local ? kLocal[(how >> 3) & 1] : c;
      ip.dst = b.ip;
      side = 1;
      const uint16_t sport = local ? static_cast<uint16_t>(kFullnatFirst + r.pick(12)) : cport;
      return test::ipv4_packet(ip, 6, test::tcp_segment(ip, segment(sport, b.port, flags, r)));
    }
    case 2: {
      test::Ip inner = ip;
      inner.src = c;
      inner.dst = svc.ip;
      const Bytes packet =
          test::ipv4_packet(inner, 6, test::tcp_segment(inner, segment(cport, svc.port, flags, r)));
      ip.src = kPortIp[((how >> 2) & 1) ^ 1];  // the backend port's address, or not
      ip.dst = b.ip;
      side = 1;
      return test::ipv4_packet(ip, 4, packet);
    }
    default:
      ip.src = svc.ip;
      ip.dst = c;
      ip.proto = r.u8();
      side = how >> 7;
      return test::ipv4_packet(ip, 6, test::tcp_segment(ip, segment(svc.port, cport, flags, r)));
  }
}

// An ICMP error quoting `quote` (an IPv4 packet) that left lbd on port `side`, as the next bytes
// say: destination unreachable (fragmentation needed with an MTU among them) or time exceeded,
// now and then any type; the quote whole (as much as fits in 576 bytes, RFC 1812 4.3.2.3), its
// IPv4 header and 8 bytes (RFC 792) or cut anywhere from 20 bytes on; bytes of it damaged (its
// IPv4 checksum fixed up or not). From a router on that side (or, now and then, the other):
// on the client side a client or the clients' router, on the backend side the gateway, the
// quote's destination or another host; addressed to the quote's source, as RFC 792 says, or
// now and then to another address.
Input quote_error(Bytes quote, uint16_t side, Reader& r) {
  const uint8_t how = r.u8();
  const uint32_t qsrc = quote.size() >= 20 ? test::get32(quote.data() + 12) : 0;
  const uint32_t qdst = quote.size() >= 20 ? test::get32(quote.data() + 16) : 0;
  test::Icmp m;
  const uint8_t kind = r.u8();
  constexpr uint16_t kMtus[] = {1280, 1400, 576, 1500, 68, 0, 1480, 9000};
  switch (kind & 0x07) {
    case 0:
    case 1:
      m.type = 3;
      m.code = 4;  // fragmentation needed: bytes 6-7 are the next hop's MTU (RFC 1191)
      m.seq = kMtus[(kind >> 3) % std::size(kMtus)];
      break;
    case 2:
      m.type = 3;
      m.code = 3;
      break;
    case 3:
      m.type = 3;
      m.code = 1;
      break;
    case 4:
      m.type = 3;
      m.code = static_cast<uint8_t>((kind >> 3) % 16);
      break;
    case 5:
    case 6:
      m.type = 11;
      break;
    default:
      m.type = 11;
      m.code = 1;
      break;
  }
  if (kind >= 0xf8) {
    m.type = r.u8();
    m.code = r.u8();
  }
  const uint8_t cut = r.u8();
  size_t keep = quote.size();
  if (cut < 0x40)
    keep = std::min<size_t>(keep, 576 - 28);
  else if (cut < 0x80)
    keep = std::min<size_t>(keep, 28);
  else
    keep = std::min<size_t>(keep, 20 + (cut & 0x3f));
  quote.resize(keep);
  const uint8_t dmg = r.u8();
  for (int i = 0; i < (dmg & 0x03) && !quote.empty(); ++i)
    quote[r.u8() % quote.size()] ^= static_cast<uint8_t>(1 + r.u8() % 255);
  if ((dmg & 0x04) && quote.size() >= 20) {
    test::set16(quote.data() + 10, 0);
    test::set16(quote.data() + 10, test::ref_checksum(quote.data(), 20));
  }
  m.payload = std::move(quote);
  Input in;
  in.port = static_cast<uint16_t>(side ^ ((how >> 3) & 1));
  uint32_t src;
  MacAddr src_mac;
  if (in.port == 0) {
    const uint32_t c = r.pick(12);
    src = c < 8 ? client_ip(c) : ip4(203, 0, 113, 1);
    src_mac = client_mac(c);
  } else {
    const uint8_t k = r.pick(3);
    src = k == 0 ? kGateway : k == 1 ? qdst : ip4(10, 20, 0, 99);
    src_mac = next_hop_mac(src);
  }
  uint32_t dst = qsrc;
  if (how & 0x06) {
    constexpr uint32_t kWrong[] = {kVip1,     kVip2,     kPortIp[0],        kPortIp[1],
                                   kLocal[0], kLocal[1], ip4(10, 10, 0, 50)};
    dst = kWrong[r.pick(std::size(kWrong))];
  }
  const test::Eth e = eth_to(in.port, src_mac, r);
  in.frame = test::icmp_frame(e, ip_header(src, dst, r), m);
  return in;
}

// --- The run ------------------------------------------------------------------------------------

// LB_FUZZ_TRACE=1 prints every frame and its verdict (to see what an input does).
const bool kTrace = std::getenv("LB_FUZZ_TRACE") != nullptr;

struct Policy {
  bool rst_on_miss, rst_on_no_backend, retry_on_rst, retry_on_syn, syn_cache;
  uint16_t workers;
  bool maglev;  // services 0, 2, 4, 5 are maglev ones (make_pool)
  bool flood;   // SYN-flood knobs: a small embryonic budget, pressure timeout, stateless rate
};

// The neighbor table every Processor refers to, rebuilt in place for each input.
std::optional<core::NeighborTable>& neighbor_storage() {
  static std::optional<core::NeighborTable> n;
  return n;
}

// Processor `w` of policy `p`, as new: built at the first input with this policy and reset()
// for every later one. Building costs more than most inputs (its counters alone are ~300 KB,
// mapped and zeroed), and reset() restores exactly the new state
// (ProcessorTest.ResetIsIndistinguishableFromANewProcessor).
Processor& processor(const Policy& p, uint16_t w, core::NeighborTable& neighbors);

class Run {
 public:
  explicit Run(const Policy& p)
      : workers_(p.workers), maglev_(p.maglev), neighbors_(neighbor_storage().emplace()) {
    for (uint32_t ip : kNextHop) neighbors_.add(ip, 1);
    // Every next hop resolved but 10.20.0.14, which only ARP teaches.
    for (uint32_t ip : kNextHop)
      if (ip != ip4(10, 20, 0, 14)) neighbors_.learn(ip, 1, next_hop_mac(ip), 0);
    for (uint16_t w = 0; w < p.workers; ++w) procs_[w] = &processor(p, w, neighbors_);
  }
  static core::ProcessorConfig config(const Policy& p, uint16_t w) {
    core::ProcessorConfig cfg;
    cfg.workers = p.workers;
    cfg.nports = kPorts;
    for (uint16_t i = 0; i < kPorts; ++i) cfg.ports[i] = {kPortIp[i], 0xffffff00, kPortMac[i]};
    cfg.flow_capacity = 24;
    cfg.syn_timeout = 50;
    cfg.established_timeout = 3000;
    cfg.fin_timeout = 200;
    cfg.closed_timeout = 30;
    cfg.retry_syn_after = p.retry_on_syn ? 20 : 0;
    cfg.retry_on_rst = p.retry_on_rst;
    cfg.max_retries = 2;
    cfg.rst_on_miss = p.rst_on_miss;
    cfg.rst_on_no_backend = p.rst_on_no_backend;
    cfg.syn_cache_slots = p.syn_cache ? 8 : 0;
    cfg.ticks_per_second = 100;
    cfg.reta_size = 128;
    cfg.worker = w;
    for (uint32_t ip : kLocal) cfg.fullnat_addrs[cfg.nfullnat++] = ip;
    cfg.fullnat_port_first = kFullnatFirst;
    cfg.fullnat_port_last = kFullnatLast;
    cfg.fullnat_port_hold = kFullnatHold;
    cfg.fullnat_port_start = 0;
    if (p.flood) {
      // Past 3 embryonic flows the new ones get the pressure timeout; at 6 (or a full table) a
      // SYN follows its service's policy, by default evicting the oldest embryonic flow; a
      // stateless service sends at most 3 SYNs a second with a flow.
      cfg.syn_budget = 6;
      cfg.syn_timeout_pressure = 10;
      cfg.syn_policy = core::SynPolicy::kEvictEmbryonic;
      cfg.stateless_rate = 3;
    }
    return cfg;
  }

  void execute(Reader& r) {
    std::vector<Input> burst;
    size_t want = 0;  // frames still to gather into `burst`
    while (!r.empty()) {
      const uint8_t op = r.u8();
      std::optional<Input> in;
      switch (op % 16) {
        case 0:
        case 1:
        case 2:
          in = client_segment(r);
          break;
        case 3: {
          // An ICMP error quoting one of the last frames lbd sent (0: the last), or a packet
          // lbd never sent.
          const uint8_t which = r.u8();
          if (sent_count_ != 0 && !(which & 0x80)) {
            const Sent& s = sent_[(sent_count_ - 1 - which % std::min(sent_count_, kSent)) % kSent];
            in = quote_error(s.packet, s.port, r);
          } else {
            uint16_t side = 0;
            Bytes q = made_up_quote(r, side);
            in = quote_error(std::move(q), side, r);
          }
          break;
        }
        case 4:
        case 5:
          in = backend_segment(r);
          break;
        case 6:
        case 7:
          in = answer(last_tx_[1], 1, r);
          break;
        case 8:
          in = answer(last_tx_[0], 0, r);
          break;
        case 9:
          in = arp(r);
          break;
        case 10:
          in = icmp(r);
          break;
        case 11:
          in = raw(r);
          break;
        case 12:
          now_ += op & 0x80 ? Tick{r.u16()} : Tick{r.u8()};
          if (kTrace)
            std::fprintf(stderr, "clock -> %llu\n", static_cast<unsigned long long>(now_));
          break;
        case 13: {
          const uint8_t budget = op & 0x80 ? 0 : r.u8();  // 0x80: paced, as lbd's loop does
          for (auto& p : procs_)
            if (p) op & 0x80 ? p->age(now_) : p->age(now_, budget);
          break;
        }
        case 14:
          pool_ = r.pick(4);
          if (kTrace) std::fprintf(stderr, "pool %u\n", pool_);
          break;
        case 15:
          if (op & 0x80) worker_ = static_cast<uint16_t>((worker_ + 1) % workers_);
          want = 1 + r.pick(Processor::kMaxBurst);
          break;
      }
      if (in) {
        if (op % 16 != 11) damage(*in, r);
        burst.push_back(std::move(*in));
        if (want > 0) --want;
      }
      // process_burst takes at most kMaxBurst frames (lbd's poll gathers at most that many).
      if (!burst.empty() && (want == 0 || burst.size() == Processor::kMaxBurst)) {
        process(worker_, burst, false);
        burst.clear();
      }
      check_tables();
    }
    if (!burst.empty()) process(worker_, burst, false);
    check_tables();
  }

 private:
  const Pool& pool() const { return *pools(maglev_)[pool_]; }

  // Processes `ins` on worker w as one burst (one frame: process()), checks every verdict,
  // then gives the frames handed off to their owners.
  void process(uint16_t w, std::vector<Input>& ins, bool handed) {
    Processor& p = *procs_[w];
    const size_t n = ins.size();
    LB_FUZZ_CHECK(n <= Processor::kMaxBurst, "a burst of %zu frames", n);
    std::vector<std::vector<uint8_t>> bufs(n);
    std::vector<Frame> frames(n);
    std::vector<uint16_t> ports(n);
    for (size_t i = 0; i < n; ++i) {
      const Input& in = ins[i];
      // Exactly the buffer's size, so that AddressSanitizer sees any access past it.
      bufs[i].assign(size_t{in.headroom} + in.frame.size() + in.tailroom, 0xa5);
      std::copy(in.frame.begin(), in.frame.end(), bufs[i].begin() + in.headroom);
      frames[i] = Frame{bufs[i].data(), in.headroom, static_cast<uint16_t>(in.frame.size()),
                        static_cast<uint16_t>(bufs[i].size()), in.nic_ip_ok};
      ports[i] = in.port;
    }
    // The MACs a next hop may have while this burst runs: those before it, and those its ARP
    // frames may teach (the table afterwards is added by check_tx).
    hop_macs_.clear();
    for (uint16_t s = 0; s < neighbors_.size(); ++s)
      if (const auto m = neighbors_.lookup(s)) hop_macs_.push_back(*m);
    for (const Input& in : ins) {
      const test::Decoded d = test::decode(in.frame);
      if (d.type == 0x0806 && d.ok) hop_macs_.push_back(d.arp.sha);
      // A client's SYN goes into the SYN cache when it makes a flow, whether or not it leaves
      // (its next hop may be unresolved): with a wrong TCP checksum, a later replay has it too.
      if (d.type == 0x0800 && d.proto == 6 && (d.flags & (tf::kSyn | tf::kAck)) == tf::kSyn &&
          is_service(d.ip_dst, d.dport) && !test::checksum_errors(in.frame).empty())
        bad_syn_seen_ = true;
    }
    uint64_t before[core::kDropReasonCount];
    for (size_t k = 0; k < core::kDropReasonCount; ++k) before[k] = p.counters().drops[k].get();
    std::vector<Verdict> v(n);
    if (n == 1)
      v[0] = p.process(frames[0], ports[0], pool(), now_);
    else
      p.process_burst(frames.data(), ports.data(), static_cast<uint16_t>(n), pool(), now_,
                      v.data());
    if (kTrace) {
      for (size_t i = 0; i < n; ++i) {
        std::fprintf(stderr, "t=%llu worker %u port %u%s: %s",
                     static_cast<unsigned long long>(now_), w, ports[i], n > 1 ? " (burst)" : "",
                     test::describe(ins[i].frame).c_str());
        switch (v[i].action) {
          case Action::kDrop:
            std::fprintf(stderr, "  -> drop %s\n",
                         std::string(core::to_string(v[i].reason)).c_str());
            break;
          case Action::kTx:
            std::fprintf(stderr, "  -> tx port %u: %s", v[i].port,
                         test::describe(frames[i].data(), frames[i].len).c_str());
            break;
          case Action::kHandoff:
            std::fprintf(stderr, "  -> handoff to worker %u\n", v[i].worker);
            break;
          case Action::kConsumed:
            std::fprintf(stderr, "  -> consumed\n");
            break;
        }
      }
    }
    uint64_t dropped[core::kDropReasonCount] = {};
    std::vector<Input> handoff[core::kMaxWorkers];
    for (size_t i = 0; i < n; ++i) {
      const Input& in = ins[i];
      // A frame for another host is never acted on; a group address carries ARP only.
      if (in.frame.size() >= 14) {
        const test::Decoded d = test::decode(in.frame);
        const bool ours = d.dst == kPortMac[in.port] || (d.dst.is_multicast() && d.type == 0x0806);
        LB_FUZZ_CHECK(ours || v[i].action == Action::kDrop, "acted on a frame for %s: %s",
                      test::mac_str(d.dst).c_str(), test::describe(in.frame).c_str());
      }
      switch (v[i].action) {
        case Action::kDrop:
          LB_FUZZ_CHECK(static_cast<size_t>(v[i].reason) < core::kDropReasonCount, "reason %u",
                        static_cast<unsigned>(v[i].reason));
          ++dropped[static_cast<size_t>(v[i].reason)];
          break;
        case Action::kTx: {
          check_tx(w, v[i], frames[i], in);
          // An ICMP error lbd makes as a router hop answers a TCP packet it does not forward,
          // which is counted under its drop reason too (time exceeded: ttl_exceeded;
          // fragmentation needed: frag_needed). Those come from a port address; errors passed on
          // about a flow answer an ICMP error (a tunnel's too come from a port address).
          const test::Decoded o = test::decode(frames[i].data(), frames[i].len);
          if (o.ok && o.type == 0x0800 && o.proto == 1 && is_local(o.ip_src) &&
              test::decode(in.frame).proto != 1) {
            if (o.icmp_type == 11) ++dropped[static_cast<size_t>(DropReason::kTtlExceeded)];
            if (o.icmp_type == 3) ++dropped[static_cast<size_t>(DropReason::kFragNeeded)];
          }
          break;
        }
        case Action::kHandoff:
          LB_FUZZ_CHECK(!handed, "worker %u handed off a frame it was handed", w);
          LB_FUZZ_CHECK(v[i].worker < workers_ && v[i].worker != w, "handoff to worker %u",
                        v[i].worker);
          LB_FUZZ_CHECK(frames[i].off == in.headroom && frames[i].len == in.frame.size() &&
                            std::equal(in.frame.begin(), in.frame.end(), frames[i].data()),
                        "a frame handed off was changed");
          handoff[v[i].worker].push_back(in);
          break;
        case Action::kConsumed: {
          const test::Decoded d = test::decode(in.frame);
          LB_FUZZ_CHECK(d.type == 0x0806, "consumed a frame of type 0x%04x", d.type);
          break;
        }
      }
    }
    for (size_t k = 0; k < core::kDropReasonCount; ++k)
      LB_FUZZ_CHECK(p.counters().drops[k].get() - before[k] == dropped[k],
                    "drops[%s] moved by %llu for %llu drop verdicts",
                    std::string(core::to_string(static_cast<DropReason>(k))).c_str(),
                    static_cast<unsigned long long>(p.counters().drops[k].get() - before[k]),
                    static_cast<unsigned long long>(dropped[k]));
    for (uint16_t o = 0; o < workers_; ++o)
      if (!handoff[o].empty()) process(o, handoff[o], true);
  }

  // Whether `dst` is a MAC a next hop may have while this burst runs.
  bool next_hop_mac_now(const MacAddr& dst) const {
    bool next_hop = std::find(hop_macs_.begin(), hop_macs_.end(), dst) != hop_macs_.end();
    for (uint16_t s = 0; s < neighbors_.size(); ++s)
      next_hop = next_hop || neighbors_.lookup(s) == dst;
    return next_hop;
  }

  // The IPv4 packet in an output frame, for later ICMP errors to quote.
  void remember(const uint8_t* ip, size_t len, uint16_t port) {
    Sent& s = sent_[sent_count_++ % kSent];
    s.packet.assign(ip, ip + len);
    s.port = port;
  }

  void check_tx(uint16_t w, const Verdict& v, const Frame& f, const Input& in) {
    LB_FUZZ_CHECK(v.port < kPorts, "tx on port %u", v.port);
    LB_FUZZ_CHECK(size_t{f.off} + f.len <= f.cap, "frame [%u, +%u) past its %u-byte buffer", f.off,
                  f.len, f.cap);
    const uint8_t* p = f.data();
    const size_t n = f.len;
    const test::Decoded d = test::decode(p, n);
    // Only when a check fails (the message arguments are evaluated then).
    const auto shown = [&] { return test::describe(p, n) + "input:\n" + test::describe(in.frame); };
    LB_FUZZ_CHECK(n >= 14 && d.src == kPortMac[v.port], "source MAC not port %u's\n%s", v.port,
                  shown().c_str());
    LB_FUZZ_CHECK(!d.dst.is_multicast(), "to a group MAC\n%s", shown().c_str());
    if (d.type == 0x0806) {
      // A full-NAT local address is answered on the port whose subnet holds it.
      LB_FUZZ_CHECK(d.ok && d.arp.op == 2 && d.arp.sha == kPortMac[v.port] && d.dst == d.arp.tha &&
                        (d.arp.spa == kPortIp[v.port] || is_vip(d.arp.spa) ||
                         (is_fullnat_addr(d.arp.spa) && v.port == 1)),
                    "ARP output\n%s", shown().c_str());
      return;
    }
    LB_FUZZ_CHECK(d.type == 0x0800, "type 0x%04x\n%s", d.type, shown().c_str());
    const test::Decoded din = test::decode(in.frame);
    if (d.proto == 4) {
      check_tunnel(v, p, n, d, in, din);
      remember(p + d.l3, n - d.l3, v.port);
      return;
    }
    core::ParsedPacket pk;
    core::parse_packet(p, n, pk);
    LB_FUZZ_CHECK(pk.kind == PacketKind::kTcp || pk.kind == PacketKind::kIcmp,
                  "output does not parse (%s)\n%s", std::string(core::to_string(pk.drop)).c_str(),
                  shown().c_str());
    // Forwarded TCP loses any Ethernet padding; an echo reply keeps the request's.
    LB_FUZZ_CHECK(pk.kind == PacketKind::kIcmp ? n >= d.l3 + d.total_len : n == d.l3 + d.total_len,
                  "%zu bytes for IPv4 length %u\n%s", n, d.total_len, shown().c_str());
    const std::string errors = test::checksum_errors(p, n);
    remember(p + d.l3, std::min<size_t>(n - d.l3, d.total_len), v.port);
    if (pk.kind == PacketKind::kIcmp) {
      // An echo reply from a VIP or a port address; or an error: one lbd makes as a router hop
      // (time exceeded, fragmentation needed: from a port address), or one about a flow that lbd
      // passes on to the flow's other end. Never to lbd's own addresses; both checksums right
      // (lbd computes the ICMP one afresh for every message it sends).
      const bool echo_reply = d.icmp_type == 0 && (is_vip(d.ip_src) || is_local(d.ip_src));
      const bool error = d.icmp_type == 3 || d.icmp_type == 11;
      LB_FUZZ_CHECK((echo_reply || error) && !is_vip(d.ip_dst) && !is_local(d.ip_dst) &&
                        !is_fullnat_addr(d.ip_dst) && errors.empty(),
                    "ICMP output %s\n%s", errors.c_str(), shown().c_str());
      if (error && din.type == 0x0800 && din.proto == 1) check_relayed(v, p, n, d, in, din);
      return;
    }
    const bool to_client = is_service(d.ip_src, d.sport);
    const bool to_backend = is_backend(d.ip_dst, d.dport);
    LB_FUZZ_CHECK(to_client != to_backend, "TCP neither from a VIP:port nor to a backend\n%s",
                  shown().c_str());
    const bool din_tcp = din.type == 0x0800 && din.proto == 6;
    const int din_service = din_tcp ? service_at(din.ip_dst, din.dport) : -1;
    if (to_backend) {
      const int bs = backend_service(d.ip_dst, d.dport);
      LB_FUZZ_CHECK(v.port == 1 && !is_vip(d.ip_src) && !is_local(d.ip_src),
                    "to a backend from lbd's own address, or on port %u\n%s", v.port,
                    shown().c_str());
      // Full-NAT: from a local address and a local port of the worker that sent it (its owner,
      // to which the backend's replies come back); dnat: from the client, never a local address.
      // A tunnel backend gets IPIP only, but for an RST: the answer to its own segment to a
      // client whose flow was reset (it should not send through lbd, but may).
      if (kForward[bs] == core::ForwardMode::kFullnat)
        LB_FUZZ_CHECK(
            is_fullnat_addr(d.ip_src) && d.sport >= kFullnatFirst && d.sport <= kFullnatLast &&
                core::SnatPorts::owner_of(d.sport, workers_) == w,
            "full-NAT not from a local address:port of worker %u\n%s", w, shown().c_str());
      else
        LB_FUZZ_CHECK(!is_fullnat_addr(d.ip_src) &&
                          (kForward[bs] == core::ForwardMode::kDnat || (d.flags & tf::kRst)),
                      "%s backend from a local address, or TCP to a tunnel backend\n%s",
                      kForward[bs] == core::ForwardMode::kDnat ? "dnat" : "tunnel",
                      shown().c_str());
      // A client's segment goes to a backend of the service it is addressed to.
      LB_FUZZ_CHECK(din_service < 0 || din_service == bs,
                    "a segment to service %d went to a backend of service %d\n%s", din_service, bs,
                    shown().c_str());
      // An RST that answers a segment (reply_rst) goes back to the MAC it came from, as a host
      // answers its sender: a backend behind a router, or one whose MAC changed, arrives from a
      // MAC the neighbor table does not hold for its address.
      const bool answers_sender =
          (d.flags & tf::kRst) && din.ok && d.dst == din.src && is_backend(din.ip_src, din.sport);
      LB_FUZZ_CHECK(next_hop_mac_now(d.dst) || answers_sender,
                    "to a backend but not to a next hop's MAC\n%s", shown().c_str());
    } else {
      LB_FUZZ_CHECK(!is_vip(d.ip_dst) && !is_local(d.ip_dst) && !is_fullnat_addr(d.ip_dst),
                    "to lbd's own address\n%s", shown().c_str());
      // A backend's reply (to the client in dnat, to a local address in full-NAT) leaves from
      // the VIP:port of the backend's service; an RST answering a client's segment leaves from
      // the VIP:port the segment was addressed to.
      const int from = service_at(d.ip_src, d.sport);
      if (din_tcp && is_backend(din.ip_src, din.sport))
        LB_FUZZ_CHECK(from == backend_service(din.ip_src, din.sport),
                      "a reply of a backend of service %d from service %d's VIP:port\n%s",
                      backend_service(din.ip_src, din.sport), from, shown().c_str());
      LB_FUZZ_CHECK(din_service < 0 || din_service == from,
                    "an answer to a segment to service %d from service %d's VIP:port\n%s",
                    din_service, from, shown().c_str());
    }
    // The IPv4 header checksum is always right: the parser (or the NIC) checked the input's.
    LB_FUZZ_CHECK(test::ref_sum(p + d.l3, 20) == 0xffff, "IPv4 checksum\n%s", shown().c_str());
    // A SYN to a backend that a backend's segment made (one addressed to a client or to a
    // full-NAT local address, not to a VIP:port) is the client's SYN replayed from the SYN cache
    // (replay_syn): after the backend's RST (retry_on_rst), or after any segment of a backend
    // that stopped while the handshake was pending (backend_stopped, e.g. its SYN-ACK). Its
    // checksums are the cached SYN's, whatever the segment's were. A client's segment (to a
    // VIP:port, on either port) is never replayed: a SYN it makes is itself.
    const bool replay =
        to_backend && (d.flags & tf::kSyn) && din_tcp && !is_service(din.ip_dst, din.dport);
    if (replay) {
      if (!bad_syn_seen_)
        LB_FUZZ_CHECK(errors.empty(), "replayed SYN: %s\n%s", errors.c_str(), shown().c_str());
    } else if (test::checksum_errors(in.frame).empty()) {
      LB_FUZZ_CHECK(errors.empty(), "%s\n%s", errors.c_str(), shown().c_str());
    }
    last_tx_[v.port].assign(p, p + n);
  }

  // forward = "tunnel": IPIP from the backend port's address to a backend of the tunnel service,
  // to its next hop, around the input's IPv4 packet, unchanged: a client's segment to the
  // service's VIP:port, or an ICMP error about a packet the service's backend sent from it.
  void check_tunnel(const Verdict& v, const uint8_t* p, size_t n, const test::Decoded& d,
                    const Input& in, const test::Decoded& din) {
    const auto shown = [&] { return test::describe(p, n) + "input:\n" + test::describe(in.frame); };
    LB_FUZZ_CHECK(v.port == 1 && d.ihl == 20 && n == d.l3 + d.total_len &&
                      test::ref_sum(p + d.l3, 20) == 0xffff && d.ttl == core::kTunnelTtl &&
                      d.ip_src == kPortIp[1] && is_tunnel_backend_ip(d.ip_dst),
                  "IPIP outer header: not from port 1's address to a tunnel backend, or bad\n%s",
                  shown().c_str());
    LB_FUZZ_CHECK(next_hop_mac_now(d.dst), "IPIP not to a next hop's MAC\n%s", shown().c_str());
    const uint8_t* inner = p + d.l3 + 20;
    const size_t inner_len = d.total_len - 20;
    LB_FUZZ_CHECK(din.type == 0x0800 && din.l3 + din.total_len <= in.frame.size() &&
                      inner_len == din.total_len &&
                      std::equal(inner, inner + inner_len, in.frame.data() + din.l3),
                  "the tunnel's inner packet is not the input's\n%s", shown().c_str());
    if (din.proto == 6) {
      LB_FUZZ_CHECK(service_at(din.ip_dst, din.dport) == kTunnelService,
                    "tunnelled a segment that is not to the tunnel service\n%s", shown().c_str());
    } else {
      // The error came to the VIP: it quotes the backend's packet from the VIP:port to a client.
      const uint8_t* q = in.frame.data() + din.l4 + 8;
      LB_FUZZ_CHECK(din.proto == 1 && (din.icmp_type == 3 || din.icmp_type == 11) &&
                        din.l4 + 8 + 28 <= in.frame.size() &&
                        service_at(test::get32(q + 12), test::get16(q + 20)) == kTunnelService &&
                        din.ip_dst == test::get32(q + 12),
                    "tunnelled an ICMP message that is no error about the tunnel service\n%s",
                    shown().c_str());
    }
  }

  // An ICMP error about a flow, passed on to its other end with the quote translated through
  // the flow's NAT (icmp_error.cc; docs/architecture.md, "ICMP errors that quote a flow").
  // The quote is of a packet lbd sent; what goes out quotes the packet the receiver sent (or
  // would have), which passes the checks of lbd's own TCP read backwards: to a client it quotes
  // that client -> a VIP:port, to a backend it quotes that backend -> a client or a local address.
  void check_relayed(const Verdict& v, const uint8_t* p, size_t n, const test::Decoded& d,
                     const Input& in, const test::Decoded& din) {
    const auto shown = [&] { return test::describe(p, n) + "input:\n" + test::describe(in.frame); };
    const uint8_t* qi = in.frame.data() + din.l4 + 8;  // the input's quote
    const size_t qi_len = din.l3 + din.total_len - (din.l4 + 8);
    const uint8_t* qo = p + d.l4 + 8;  // the output's
    const size_t qo_len = d.l3 + d.total_len - (d.l4 + 8);
    LB_FUZZ_CHECK(din.ihl == 20 && din.l3 + din.total_len <= in.frame.size() && qi_len >= 28 &&
                      qi[0] == 0x45 && qo_len >= 20 && d.ihl == 20,
                  "relayed an error with a short or odd quote\n%s", shown().c_str());
    LB_FUZZ_CHECK(d.icmp_type == din.icmp_type && d.icmp_code == din.icmp_code,
                  "relayed error's type or code changed\n%s", shown().c_str());
    // The error was addressed to the quote's source: lbd, as it sent the quoted packet.
    const uint32_t qsrc = test::get32(qi + 12), qdst = test::get32(qi + 16);
    LB_FUZZ_CHECK(din.ip_dst == qsrc, "relayed an error not addressed to the quote's source\n%s",
                  shown().c_str());
    const bool frag_needed = din.icmp_type == 3 && din.icmp_code == 4;
    const uint16_t mtu_in = test::get16(in.frame.data() + din.l4 + 6);
    const uint16_t mtu_out = test::get16(p + d.l4 + 6);
    if (qi[9] == 4) {
      // About lbd's IPIP packet: the client gets the inner quote, from the client port's
      // address; a fragmentation-needed's MTU less the tunnel's 20 bytes (at least 68).
      LB_FUZZ_CHECK(qi_len >= 48 && qsrc == kPortIp[1] && is_tunnel_backend_ip(qdst) &&
                        service_at(test::get32(qi + 36), test::get16(qi + 42)) == kTunnelService &&
                        d.ip_src == kPortIp[v.port] && d.ip_dst == test::get32(qi + 32) &&
                        qo_len == qi_len - 20 && std::equal(qo, qo + qo_len, qi + 20),
                    "an error about a tunnel packet, relayed wrong\n%s", shown().c_str());
      const uint16_t want = !frag_needed       ? mtu_in
                            : mtu_in > 68 + 20 ? static_cast<uint16_t>(mtu_in - 20)
                                               : 68;
      LB_FUZZ_CHECK(
          mtu_out == want && test::get16(p + d.l4 + 4) == test::get16(in.frame.data() + din.l4 + 4),
          "an error about a tunnel packet: MTU %u for %u\n%s", mtu_out, mtu_in, shown().c_str());
      return;
    }
    LB_FUZZ_CHECK(qi[9] == 6 && qo[9] == 6 && qo_len == qi_len &&
                      test::get32(p + d.l4 + 4) == test::get32(in.frame.data() + din.l4 + 4),
                  "relayed error's quote length or bytes 4-7 changed\n%s", shown().c_str());
    const uint32_t osrc = test::get32(qo + 12), odst = test::get32(qo + 16);
    const uint16_t qsport = test::get16(qi + 20), qdport = test::get16(qi + 22);
    const uint16_t osport = test::get16(qo + 20), odport = test::get16(qo + 22);
    // Whom it goes to is the quote's source now: a client that sent to a VIP:port, or a backend
    // that sent from its ip:port.
    const int svc = service_at(odst, odport);
    const int bsvc = backend_service(osrc, osport);
    LB_FUZZ_CHECK(d.ip_dst == osrc && ((svc >= 0) != (bsvc >= 0)),
                  "relayed error neither to a client about a VIP:port nor to a backend about its "
                  "own packet\n%s",
                  shown().c_str());
    if (svc >= 0) {
      // lbd's packet went to a backend of that service: from the client (dnat) or from a local
      // address (full-NAT); now it is the client's to the VIP:port, sent from the VIP.
      const int was = backend_service(qdst, test::get16(qi + 22));
      const bool fullnat = kForward[svc] == core::ForwardMode::kFullnat;
      LB_FUZZ_CHECK(was == svc && kForward[svc] != core::ForwardMode::kTunnel &&
                        (fullnat ? is_fullnat_addr(qsrc) && !is_fullnat_addr(osrc)
                                 : osrc == qsrc && osport == qsport) &&
                        !is_vip(osrc) && !is_local(osrc) && d.ip_src == odst,
                    "an error about lbd -> backend relayed wrong\n%s", shown().c_str());
    } else {
      // lbd's packet went from the VIP:port of that backend's service to a client; now it is
      // the backend's to the client (dnat; outer source the router's) or to a local address
      // (full-NAT; outer source that address).
      const bool fullnat = kForward[bsvc] == core::ForwardMode::kFullnat;
      LB_FUZZ_CHECK(service_at(qsrc, qsport) == bsvc &&
                        kForward[bsvc] != core::ForwardMode::kTunnel &&
                        (fullnat ? is_fullnat_addr(odst) && odport >= kFullnatFirst &&
                                       odport <= kFullnatLast && d.ip_src == odst
                                 : odst == qdst && odport == qdport && d.ip_src == din.ip_src) &&
                        v.port == 1,
                    "an error about lbd -> client relayed wrong\n%s", shown().c_str());
      LB_FUZZ_CHECK(next_hop_mac_now(d.dst),
                    "relayed error to a backend not to a next hop's MAC\n%s", shown().c_str());
    }
    // The rest of the quote is unchanged; its checksums stay right when they were: the IPv4
    // header's always, the TCP one when the quote holds the whole segment.
    for (size_t i = 0; i < qo_len; ++i) {
      const bool changed = (i >= 10 && i < 24) || i == 36 || i == 37;
      LB_FUZZ_CHECK(changed || qo[i] == qi[i], "relayed quote's byte %zu changed\n%s", i,
                    shown().c_str());
    }
    if (test::ref_sum(qi, 20) == 0xffff)
      LB_FUZZ_CHECK(test::ref_sum(qo, 20) == 0xffff, "relayed quote's IPv4 checksum\n%s",
                    shown().c_str());
    const uint16_t qtotal = test::get16(qi + 2);
    if (qtotal >= 40 && qtotal <= qi_len &&
        test::ref_sum(qi + 20, qtotal - 20, test::ref_pseudo(qsrc, qdst, 6, qtotal - 20)) == 0xffff)
      LB_FUZZ_CHECK(test::ref_sum(qo + 20, qtotal - 20,
                                  test::ref_pseudo(osrc, odst, 6, qtotal - 20)) == 0xffff,
                    "relayed quote's TCP checksum\n%s", shown().c_str());
  }

  // Each worker's flow counters agree with its table.
  void check_tables() const {
    for (uint16_t w = 0; w < workers_; ++w) {
      const Processor& p = *procs_[w];
      const core::WorkerCounters& c = p.counters();
      // A flow whose backend stopped stays in the table (kReset) for closed_timeout to answer
      // with RSTs, but was released and counted (flows_reset) when it was reset.
      uint64_t size = 0;
      for (uint32_t i = 0; i < p.flows().capacity(); ++i) {
        const core::Flow& fl = p.flows().at(i);
        if (fl.in_use && fl.state != core::TcpState::kReset) ++size;
      }
      uint64_t per_backend = 0;
      for (uint32_t b = 0; b < kBackends.size(); ++b)
        per_backend += c.backend[b].flows_active.get();
      // Every flow ends once: expired (under SYN pressure too), reused, reset, or evicted for a
      // newer SYN (evict-embryonic).
      LB_FUZZ_CHECK(c.flows_active.get() == size && per_backend == size &&
                        c.flows_created.get() - c.flows_expired.get() - c.flows_reused.get() -
                                c.flows_reset.get() - c.syn_evicted.get() ==
                            size,
                    "worker %u: table %llu, active %llu, by backend %llu; created %llu, expired "
                    "%llu, reused %llu, reset %llu, evicted %llu",
                    w, static_cast<unsigned long long>(size),
                    static_cast<unsigned long long>(c.flows_active.get()),
                    static_cast<unsigned long long>(per_backend),
                    static_cast<unsigned long long>(c.flows_created.get()),
                    static_cast<unsigned long long>(c.flows_expired.get()),
                    static_cast<unsigned long long>(c.flows_reused.get()),
                    static_cast<unsigned long long>(c.flows_reset.get()),
                    static_cast<unsigned long long>(c.syn_evicted.get()));
      LB_FUZZ_CHECK(p.flows().size() <= p.flows().capacity(), "over capacity");
    }
  }

  uint16_t workers_;
  bool maglev_;
  core::NeighborTable& neighbors_;
  std::array<Processor*, 2> procs_{};
  Tick now_ = 1000;
  uint32_t pool_ = 0;
  uint16_t worker_ = 0;
  Bytes last_tx_[kPorts];
  // The last kSent IPv4 packets lbd sent and their ports, for ICMP errors to quote.
  struct Sent {
    Bytes packet;
    uint16_t port = 0;
  };
  static constexpr size_t kSent = 8;
  std::array<Sent, kSent> sent_;
  size_t sent_count_ = 0;
  std::vector<MacAddr> hop_macs_;
  bool bad_syn_seen_ = false;
};

Processor& processor(const Policy& p, uint16_t w, core::NeighborTable& neighbors) {
  // By the policy byte's bits that shape a Processor: 32 policies x 2 worker counts x the SYN-
  // flood knobs or not x 2 workers (maglev is the pool's).
  static std::array<std::unique_ptr<Processor>, 256> cache;
  const size_t key = size_t{p.rst_on_miss} | size_t{p.rst_on_no_backend} << 1 |
                     size_t{p.retry_on_rst} << 2 | size_t{p.retry_on_syn} << 3 |
                     size_t{p.syn_cache} << 4 | size_t{p.workers == 2} << 5 | size_t{p.flood} << 6 |
                     size_t{w} << 7;
  std::unique_ptr<Processor>& slot = cache[key];
  if (slot)
    slot->reset();
  else
    slot = std::make_unique<Processor>(Run::config(p, w), neighbors);
  return *slot;
}

}  // namespace
}  // namespace lb::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lb::fuzz::Reader r(data, size);
  const uint8_t p = r.u8();
  const lb::fuzz::Policy policy{(p & 0x01) != 0, (p & 0x02) == 0,
                                (p & 0x04) == 0, (p & 0x08) == 0,
                                (p & 0x10) == 0, static_cast<uint16_t>(p & 0x20 ? 2 : 1),
                                (p & 0x40) != 0, (p & 0x80) != 0};
  auto run = std::make_unique<lb::fuzz::Run>(policy);
  run->execute(r);
  return 0;
}
