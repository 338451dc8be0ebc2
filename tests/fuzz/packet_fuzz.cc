// Fuzz target: the packet core (core::Processor) as a stateful stream.
//
// The input is a program. Its first byte chooses the policies (RST on a miss or with no backend,
// retries on RST and on SYN retransmission, the SYN cache, one or two workers); then each op
// builds a mostly valid frame (a client's or a backend's TCP segment, the answer to the last
// frame lbd sent either way, ARP, ICMP echo, or raw bytes), damages it as the next bytes say,
// and gives it to a worker, alone or in a burst; other ops move the clock, age the tables or
// swap the pool for another version (backends draining, stopped, removed; a service removed).
// Two workers share the neighbor table and hand frames to each other as lbd's do. The tables
// are small (24 flows per worker, 8 SYN-cache slots), so they fill, age and get reused.
//
// Checked on every verdict: a frame for another host's MAC (or TCP/ICMP to a group MAC) is
// dropped; a drop is counted once, under its reason; a frame handed to another worker is
// unchanged and that worker owns it. On every transmitted frame: it lies inside its
// buffer and parses; its source MAC is its port's and its destination MAC is unicast (toward a
// backend: a resolved next hop's); the IPv4 header checksum is right; the TCP checksum is right
// whenever the input's was (for a replayed SYN: whenever every SYN forwarded so far had a right
// one); TCP leaves either from a VIP:port (to a client) or toward a backend's ip:port, and never
// from or to lbd's own addresses; ARP answers only for a port address or a VIP, ICMP replies come
// only from those. After every op, each worker's flow counters agree with its table.

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
// Services 0-3 (service 3 has no backends); entries 4-5 are addresses of no service.
constexpr Endpoint kDest[6] = {{kVip1, 80}, {kVip1, 443}, {kVip2, 80},
                               {kVip2, 25}, {kVip1, 81},  {kPortIp[0], 22}};
constexpr int kServices = 4;

// Backend entries (BackendId = index): service, address, port, weight.
struct BackendSpec {
  int service;
  uint32_t ip;
  uint16_t port;
  uint16_t weight;
};
constexpr std::array<BackendSpec, 7> kBackends = {{
    {0, ip4(10, 20, 0, 11), 8080, 1},
    {0, ip4(10, 20, 0, 12), 8080, 1},
    {0, ip4(10, 20, 0, 13), 8080, 1},
    {1, ip4(10, 20, 0, 12), 8443, 3},
    {1, ip4(10, 20, 0, 14), 8443, 1},  // its MAC is learned only from ARP
    {2, ip4(198, 51, 100, 7), 80, 1},  // behind the gateway
    {2, ip4(10, 20, 0, 11), 9000, 2},
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
                                  ip4(224, 0, 0, 5)};
constexpr uint16_t kClientPorts[] = {40000, 40001, 40002, 50000, 1024, 65535};

bool is_vip(uint32_t ip) {
  return ip == kVip1 || ip == kVip2;
}
bool is_local(uint32_t ip) {
  return ip == kPortIp[0] || ip == kPortIp[1];
}
bool is_service(uint32_t ip, uint16_t port) {
  for (int s = 0; s < kServices; ++s)
    if (kDest[s].ip == ip && kDest[s].port == port) return true;
  return false;
}
bool is_backend(uint32_t ip, uint16_t port) {
  for (const BackendSpec& b : kBackends)
    if (b.ip == ip && b.port == port) return true;
  return false;
}

// Pool versions. 0: everything active. 1: 10.20.0.12:8080 draining, .13 stopped (its flows are
// reset), .14 weight 0. 2: service 1 removed, 198.51.100.7 stopped. 3: service 0 with no live
// backend (all draining), service 2 empty.
enum class Role { kActive, kDraining, kStopped, kWeightZero };
std::unique_ptr<Pool> make_pool(uint64_t generation, const std::array<Role, 7>& roles,
                                bool without_service1) {
  constexpr core::SchedulerKind kKinds[kServices] = {
      core::SchedulerKind::kRoundRobin, core::SchedulerKind::kWeightedRoundRobin,
      core::SchedulerKind::kLeastConn, core::SchedulerKind::kRandom};
  std::vector<Pool::ServiceSpec> specs;
  for (int s = 0; s < kServices; ++s) {
    if (s == 1 && without_service1) continue;
    Pool::ServiceSpec spec{
        static_cast<core::ServiceId>(s), kDest[s].ip, kDest[s].port, kKinds[s], {}, {}};
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
  if (without_service1) retired.push_back({kDest[1].ip, kDest[1].port});
  return std::make_unique<Pool>(generation, specs, retired);
}

const std::array<std::unique_ptr<Pool>, 4>& pools() {
  using R = Role;
  static const std::array<std::unique_ptr<Pool>, 4> p = {
      make_pool(
          1, {R::kActive, R::kActive, R::kActive, R::kActive, R::kActive, R::kActive, R::kActive},
          false),
      make_pool(2,
                {R::kActive, R::kDraining, R::kStopped, R::kActive, R::kWeightZero, R::kActive,
                 R::kActive},
                false),
      make_pool(
          3, {R::kActive, R::kActive, R::kActive, R::kActive, R::kActive, R::kStopped, R::kActive},
          true),
      make_pool(4,
                {R::kDraining, R::kDraining, R::kDraining, R::kActive, R::kActive, R::kStopped,
                 R::kStopped},
                false),
  };
  return p;
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
  constexpr uint32_t kTargets[] = {kPortIp[0], kPortIp[1],        kVip1,
                                   kVip2,      ip4(10, 10, 0, 7), kGateway};
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

// --- The run ------------------------------------------------------------------------------------

// LB_FUZZ_TRACE=1 prints every frame and its verdict (to see what an input does).
const bool kTrace = std::getenv("LB_FUZZ_TRACE") != nullptr;

struct Policy {
  bool rst_on_miss, rst_on_no_backend, retry_on_rst, retry_on_syn, syn_cache;
  uint16_t workers;
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
  explicit Run(const Policy& p) : workers_(p.workers), neighbors_(neighbor_storage().emplace()) {
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
        case 3:
          in = client_segment(r);
          break;
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
  const Pool& pool() const { return *pools()[pool_]; }

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
          check_tx(v[i], frames[i], in);
          // An ICMP error lbd makes as a router hop answers a packet it does not forward, which
          // is counted under its drop reason too (time exceeded: ttl_exceeded; fragmentation
          // needed: frag_needed). Those come from a port address; errors passed on about a flow
          // do not.
          const test::Decoded o = test::decode(frames[i].data(), frames[i].len);
          if (o.ok && o.type == 0x0800 && o.proto == 1 && is_local(o.ip_src)) {
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

  void check_tx(const Verdict& v, const Frame& f, const Input& in) {
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
      LB_FUZZ_CHECK(d.ok && d.arp.op == 2 && d.arp.sha == kPortMac[v.port] && d.dst == d.arp.tha &&
                        (d.arp.spa == kPortIp[v.port] || is_vip(d.arp.spa)),
                    "ARP output\n%s", shown().c_str());
      return;
    }
    LB_FUZZ_CHECK(d.type == 0x0800, "type 0x%04x\n%s", d.type, shown().c_str());
    core::ParsedPacket pk;
    core::parse_packet(p, n, pk);
    LB_FUZZ_CHECK(pk.kind == PacketKind::kTcp || pk.kind == PacketKind::kIcmp,
                  "output does not parse (%s)\n%s", std::string(core::to_string(pk.drop)).c_str(),
                  shown().c_str());
    // Forwarded TCP loses any Ethernet padding; an echo reply keeps the request's.
    LB_FUZZ_CHECK(pk.kind == PacketKind::kIcmp ? n >= d.l3 + d.total_len : n == d.l3 + d.total_len,
                  "%zu bytes for IPv4 length %u\n%s", n, d.total_len, shown().c_str());
    const std::string errors = test::checksum_errors(p, n);
    if (pk.kind == PacketKind::kIcmp) {
      // An echo reply from a VIP or a port address; or an error: one lbd makes as a router hop
      // (time exceeded, fragmentation needed: from a port address), or one about a flow that lbd
      // passes on to the flow's other end. Never to lbd's own addresses, header checksum right.
      const bool echo_reply = d.icmp_type == 0 && (is_vip(d.ip_src) || is_local(d.ip_src));
      const bool error = d.icmp_type == 3 || d.icmp_type == 11;
      LB_FUZZ_CHECK((echo_reply || error) && !is_vip(d.ip_dst) && !is_local(d.ip_dst) &&
                        test::ref_sum(p + d.l3, 20) == 0xffff && (!echo_reply || errors.empty()),
                    "ICMP output\n%s", shown().c_str());
      return;
    }
    const test::Decoded din = test::decode(in.frame);
    const bool to_client = is_service(d.ip_src, d.sport);
    const bool to_backend = is_backend(d.ip_dst, d.dport);
    LB_FUZZ_CHECK(to_client != to_backend, "TCP neither from a VIP:port nor to a backend\n%s",
                  shown().c_str());
    if (to_backend) {
      LB_FUZZ_CHECK(v.port == 1 && !is_vip(d.ip_src) && !is_local(d.ip_src),
                    "to a backend from lbd's own address, or on port %u\n%s", v.port,
                    shown().c_str());
      bool next_hop = std::find(hop_macs_.begin(), hop_macs_.end(), d.dst) != hop_macs_.end();
      for (uint16_t s = 0; s < neighbors_.size(); ++s)
        next_hop = next_hop || neighbors_.lookup(s) == d.dst;
      // An RST that answers a segment (reply_rst) goes back to the MAC it came from, as a host
      // answers its sender: a backend behind a router, or one whose MAC changed, arrives from a
      // MAC the neighbor table does not hold for its address.
      const bool answers_sender =
          (d.flags & tf::kRst) && din.ok && d.dst == din.src && is_backend(din.ip_src, din.sport);
      LB_FUZZ_CHECK(next_hop || answers_sender, "to a backend but not to a next hop's MAC\n%s",
                    shown().c_str());
    } else {
      LB_FUZZ_CHECK(!is_vip(d.ip_dst) && !is_local(d.ip_dst), "to lbd's own address\n%s",
                    shown().c_str());
    }
    // The IPv4 header checksum is always right: the parser (or the NIC) checked the input's.
    LB_FUZZ_CHECK(test::ref_sum(p + d.l3, 20) == 0xffff, "IPv4 checksum\n%s", shown().c_str());
    // A SYN to a backend that a backend's segment made (one addressed to a client or to a
    // full-NAT local address, not to a VIP:port) is the client's SYN replayed from the SYN cache
    // (replay_syn): after the backend's RST (retry_on_rst), or after any segment of a backend
    // that stopped while the handshake was pending (backend_stopped, e.g. its SYN-ACK). Its
    // checksums are the cached SYN's, whatever the segment's were. A client's segment (to a
    // VIP:port, on either port) is never replayed: a SYN it makes is itself.
    const bool replay = to_backend && (d.flags & tf::kSyn) && din.type == 0x0800 &&
                        din.proto == 6 && !is_service(din.ip_dst, din.dport);
    if (replay) {
      if (!bad_syn_seen_)
        LB_FUZZ_CHECK(errors.empty(), "replayed SYN: %s\n%s", errors.c_str(), shown().c_str());
    } else if (test::checksum_errors(in.frame).empty()) {
      LB_FUZZ_CHECK(errors.empty(), "%s\n%s", errors.c_str(), shown().c_str());
    }
    last_tx_[v.port].assign(p, p + n);
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
      LB_FUZZ_CHECK(c.flows_active.get() == size && per_backend == size &&
                        c.flows_created.get() - c.flows_expired.get() - c.flows_reused.get() -
                                c.flows_reset.get() ==
                            size,
                    "worker %u: table %llu, active %llu, by backend %llu", w,
                    static_cast<unsigned long long>(size),
                    static_cast<unsigned long long>(c.flows_active.get()),
                    static_cast<unsigned long long>(per_backend));
      LB_FUZZ_CHECK(p.flows().size() <= p.flows().capacity(), "over capacity");
    }
  }

  uint16_t workers_;
  core::NeighborTable& neighbors_;
  std::array<Processor*, 2> procs_{};
  Tick now_ = 1000;
  uint32_t pool_ = 0;
  uint16_t worker_ = 0;
  Bytes last_tx_[kPorts];
  std::vector<MacAddr> hop_macs_;
  bool bad_syn_seen_ = false;
};

Processor& processor(const Policy& p, uint16_t w, core::NeighborTable& neighbors) {
  // By the policy byte's bits: 32 policies x 2 worker counts x 2 workers.
  static std::array<std::unique_ptr<Processor>, 128> cache;
  const size_t key = size_t{p.rst_on_miss} | size_t{p.rst_on_no_backend} << 1 |
                     size_t{p.retry_on_rst} << 2 | size_t{p.retry_on_syn} << 3 |
                     size_t{p.syn_cache} << 4 | size_t{p.workers == 2} << 5 | size_t{w} << 6;
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
                                (p & 0x10) == 0, static_cast<uint16_t>(p & 0x20 ? 2 : 1)};
  auto run = std::make_unique<lb::fuzz::Run>(policy);
  run->execute(r);
  return 0;
}
