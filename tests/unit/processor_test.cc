// The per-packet logic of one worker, driven with frames built byte by byte and an injected
// clock. Every transmitted frame is compared with the exact bytes expected (built from scratch by
// packet_builder.h) and has its checksums recomputed independently.
//
// Topology (as in docs/architecture.md):
//   port 0 "client"  10.10.0.1/24  02:00:00:00:00:10   clients 10.10.0.50.. (MAC 02:cc:..:50+i)
//   port 1 "backend" 10.20.0.1/24  02:00:00:00:00:20   backends 10.20.0.11/12/13:8080 (ids 1-3)
//   service 5: VIP 10.10.0.100:80, round robin over the three backends.

#include "processor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "packet_builder.h"

namespace lb::core {
namespace {

using test::Arp;
using test::Bytes;
using test::FramesEqual;
using test::Icmp;
using test::Ip;
using test::ip4;
using test::mac;
using test::Tcp;
namespace tf = test::tcpf;

constexpr uint16_t kClientSide = 0;
constexpr uint16_t kBackendSide = 1;
const MacAddr kPortMac[2] = {mac(0x02, 0, 0, 0, 0, 0x10), mac(0x02, 0, 0, 0, 0, 0x20)};
constexpr uint32_t kPortIp[2] = {ip4(10, 10, 0, 1), ip4(10, 20, 0, 1)};
constexpr uint32_t kVip = ip4(10, 10, 0, 100);
constexpr uint32_t kVip2 = ip4(10, 10, 0, 101);
constexpr uint16_t kVport = 80;
constexpr ServiceId kSvc{5};
constexpr int kBackends = 3;
constexpr uint32_t kBackendIp[kBackends] = {ip4(10, 20, 0, 11), ip4(10, 20, 0, 12),
                                            ip4(10, 20, 0, 13)};
constexpr uint16_t kBackendTcpPort = 8080;
const MacAddr kBackendMac[kBackends] = {
    mac(0x02, 0xbb, 0, 0, 0, 0x11), mac(0x02, 0xbb, 0, 0, 0, 0x12), mac(0x02, 0xbb, 0, 0, 0, 0x13)};
constexpr uint32_t kBackendId[kBackends] = {1, 2, 3};

constexpr uint32_t client_ip(int c) {
  return ip4(10, 10, 0, static_cast<uint8_t>(50 + c));
}
MacAddr client_mac(int c) {
  return mac(0x02, 0xcc, 0, 0, 0, static_cast<uint8_t>(50 + c));
}

// A TCP segment: its IPv4 and TCP headers (and payload).
struct Seg {
  Ip ip;
  Tcp tcp;
};

Seg client_seg(int c, uint16_t cport, uint8_t flags, uint32_t seq, uint32_t ack = 0,
               Bytes payload = {}, Bytes options = {}) {
  Seg s;
  s.ip.src = client_ip(c);
  s.ip.dst = kVip;
  s.ip.ttl = 61;
  s.ip.id = static_cast<uint16_t>(0x1000u + static_cast<uint32_t>(c) * 16 + (seq & 15));
  s.tcp.sport = cport;
  s.tcp.dport = kVport;
  s.tcp.seq = seq;
  s.tcp.ack = ack;
  s.tcp.flags = flags;
  s.tcp.window = 29200;
  s.tcp.payload = std::move(payload);
  s.tcp.options = std::move(options);
  return s;
}
Seg client_syn(int c, uint16_t cport, uint32_t isn) {
  return client_seg(c, cport, tf::kSyn, isn, 0, {}, test::syn_options(isn));
}

Seg backend_seg(int b, int c, uint16_t cport, uint8_t flags, uint32_t seq, uint32_t ack,
                Bytes payload = {}, Bytes options = {}) {
  Seg s;
  s.ip.src = kBackendIp[b];
  s.ip.dst = client_ip(c);
  s.ip.ttl = 64;
  s.ip.id = static_cast<uint16_t>(0x2000u + static_cast<uint32_t>(b) * 16 + (seq & 15));
  s.tcp.sport = kBackendTcpPort;
  s.tcp.dport = cport;
  s.tcp.seq = seq;
  s.tcp.ack = ack;
  s.tcp.flags = flags;
  s.tcp.window = 65160;
  s.tcp.payload = std::move(payload);
  s.tcp.options = std::move(options);
  return s;
}

Bytes client_frame(int c, const Seg& s, std::optional<uint16_t> vlan = {}) {
  const test::Eth e = vlan ? test::eth_vlan(kPortMac[kClientSide], client_mac(c), *vlan)
                           : test::eth(kPortMac[kClientSide], client_mac(c));
  return test::tcp_frame(e, s.ip, s.tcp);
}
Bytes backend_frame(int b, const Seg& s) {
  return test::tcp_frame(test::eth(kPortMac[kBackendSide], kBackendMac[b]), s.ip, s.tcp);
}

// What lbd must send for a client segment toward backend b: DNAT, new Ethernet header, no
// padding, checksums as if computed from scratch.
Bytes to_backend(int b, Seg s) {
  s.ip.dst = kBackendIp[b];
  s.tcp.dport = kBackendTcpPort;
  --s.ip.ttl;  // lbd is a router hop
  return test::tcp_frame(test::eth(kBackendMac[b], kPortMac[kBackendSide]), s.ip, s.tcp, 0);
}
// ... and for a backend segment toward client c: reverse NAT.
Bytes to_client(int c, Seg s, std::optional<uint16_t> vlan = {}) {
  s.ip.src = kVip;
  s.tcp.sport = kVport;
  --s.ip.ttl;
  const test::Eth e = vlan ? test::eth_vlan(client_mac(c), kPortMac[kClientSide], *vlan)
                           : test::eth(client_mac(c), kPortMac[kClientSide]);
  return test::tcp_frame(e, s.ip, s.tcp, 0);
}
// An RST as lbd builds it (RFC 793 reset generation): fresh IPv4 header (id 0, DF, TTL 64), no
// options, window 0, no padding.
Bytes rst_frame(const test::Eth& e, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                uint32_t seq, uint32_t ack, uint8_t flags) {
  Ip ip;
  ip.src = src;
  ip.dst = dst;
  ip.ttl = 64;
  ip.id = 0;
  ip.frag = 0x4000;
  Tcp t;
  t.sport = sport;
  t.dport = dport;
  t.seq = seq;
  t.ack = ack;
  t.flags = flags;
  t.window = 0;
  return test::tcp_frame(e, ip, t, 0);
}

// An RST from the VIP answering client c.
Bytes rst_to_client(int c, uint16_t cport, uint32_t seq, uint32_t ack, uint8_t flags,
                    std::optional<uint16_t> vlan = {}, uint32_t from = kVip) {
  const test::Eth e = vlan ? test::eth_vlan(client_mac(c), kPortMac[kClientSide], *vlan)
                           : test::eth(client_mac(c), kPortMac[kClientSide]);
  return rst_frame(e, from, client_ip(c), kVport, cport, seq, ack, flags);
}

int backend_index(const Bytes& frame) {
  const test::Decoded d = test::decode(frame);
  for (int b = 0; b < kBackends; ++b)
    if (d.ip_dst == kBackendIp[b]) return b;
  return -1;
}

std::string verdict_str(const Verdict& v) {
  switch (v.action) {
    case Action::kDrop:
      return "drop " + std::string(to_string(v.reason));
    case Action::kTx:
      return "tx port " + std::to_string(v.port);
    case Action::kHandoff:
      return "handoff to worker " + std::to_string(v.worker);
    case Action::kConsumed:
      return "consumed";
  }
  return "?";
}

struct Out {
  Verdict v{};
  Bytes frame;  // the frame as transmitted (kTx), or the buffer's frame afterwards
  uint16_t off = 0;
  uint16_t len = 0;
  bool tx(uint16_t port) const { return v.action == Action::kTx && v.port == port; }
  bool dropped(DropReason r) const { return v.action == Action::kDrop && v.reason == r; }
};

::testing::AssertionResult IsTx(const Out& o, uint16_t port) {
  if (o.tx(port)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << verdict_str(o.v) << ", want tx port " << port;
}
::testing::AssertionResult IsDrop(const Out& o, DropReason r) {
  if (o.dropped(r)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << verdict_str(o.v) << ", want drop " << to_string(r);
}

class ProcessorTest : public ::testing::Test {
 protected:
  ProcessorTest() {
    cfg_.worker = 0;
    cfg_.workers = 1;
    cfg_.nports = 2;
    cfg_.ports[0] = PortInfo{kPortIp[0], 0xffffff00, kPortMac[0]};
    cfg_.ports[1] = PortInfo{kPortIp[1], 0xffffff00, kPortMac[1]};
    cfg_.flow_capacity = 64;
    cfg_.hash_seed = 0x1234567;
    cfg_.syn_timeout = 50;
    cfg_.established_timeout = 1000;
    cfg_.fin_timeout = 200;
    cfg_.closed_timeout = 30;
    cfg_.retry_syn_after = 0;
    cfg_.retry_on_rst = true;
    cfg_.max_retries = 2;
    cfg_.rst_on_miss = false;
    cfg_.rst_on_no_backend = true;
    cfg_.syn_cache_slots = 64;
    cfg_.ticks_per_second = 10;
    for (int b = 0; b < kBackends; ++b) {
      slot_[b] = neighbors_->add(kBackendIp[b], kBackendSide);
      EXPECT_EQ(slot_[b], b);  // pool_backend() relies on it
      neighbors_->learn(kBackendIp[b], kBackendSide, kBackendMac[b], 1);
    }
    pool_ = make_pool({0, 1, 2});
  }

  static PoolBackend pool_backend(int b, uint16_t weight = 1) {
    return PoolBackend{static_cast<BackendId>(kBackendId[b]),
                       kBackendIp[b],
                       kBackendTcpPort,
                       kBackendSide,
                       static_cast<uint16_t>(b),
                       weight};
  }
  // Service 5 over the given backends (in that order); `draining` stay serving.
  std::unique_ptr<Pool> make_pool(const std::vector<int>& live,
                                  const std::vector<int>& draining = {},
                                  SchedulerKind kind = SchedulerKind::kRoundRobin) {
    Pool::ServiceSpec s{kSvc, kVip, kVport, kind, {}, {}};
    s.forward = forward_;
    s.syn_policy = syn_policy_;
    s.miss = miss_;
    for (int b : live) {
      s.backends.push_back(pool_backend(b));
      s.serving.push_back(static_cast<BackendId>(kBackendId[b]));
    }
    for (int b : draining) s.serving.push_back(static_cast<BackendId>(kBackendId[b]));
    return std::make_unique<Pool>(++generation_, std::vector<Pool::ServiceSpec>{s});
  }

  // Opens n flows at `now`: SYNs from clients i % 5, ports 1000 + i, each sent to a backend.
  void OpenFlows(uint32_t n, Tick now) {
    for (uint32_t i = 0; i < n; ++i) {
      const int c = static_cast<int>(i % 5);
      ASSERT_TRUE(IsTx(
          Run(client_frame(c, client_syn(c, static_cast<uint16_t>(1000 + i), 1)), kClientSide, now),
          kBackendSide))
          << "flow " << i;
    }
  }

  Processor& proc() {
    if (!proc_) proc_ = std::make_unique<Processor>(cfg_, *neighbors_);
    return *proc_;
  }
  void Restart() { proc_.reset(); }

  // Runs one frame through `p` (default: proc()) in a buffer of exactly `cap` bytes with the
  // frame at `headroom`. For kTx, checks that the frame stays in the buffer, parses, and has
  // correct checksums (unless the input's own checksums were wrong).
  Out Run(const Bytes& in, uint16_t port, Tick now, Processor* p = nullptr, uint16_t headroom = 128,
          size_t cap = 2048) {
    if (!p) p = &proc();
    // Exactly the buffer's size, so that ASan sees any write or read past it.
    std::vector<uint8_t> buf(std::max(cap, size_t{headroom} + in.size()), 0xa5);
    std::copy(in.begin(), in.end(), buf.begin() + headroom);
    Frame f{buf.data(), headroom, static_cast<uint16_t>(in.size()),
            static_cast<uint16_t>(buf.size())};
    Out o;
    o.v = p->process(f, port, *pool_, now);
    o.off = f.off;
    o.len = f.len;
    EXPECT_LE(size_t{f.off} + f.len, buf.size()) << "frame runs past its buffer";
    if (size_t{f.off} + f.len <= buf.size())
      o.frame.assign(buf.begin() + f.off, buf.begin() + f.off + f.len);
    // An IPIP frame (forward = "tunnel") is not for the parser; tunnelled() builds its bytes.
    const bool ipip = o.frame.size() > 23 && o.frame[12] == 0x08 && o.frame[23] == 4;
    if (o.v.action == Action::kTx && !ipip) {
      EXPECT_LT(o.v.port, cfg_.nports);
      ParsedPacket pk;
      parse_packet(o.frame.data(), o.frame.size(), pk);
      EXPECT_NE(pk.kind, PacketKind::kDrop)
          << "output does not parse: " << to_string(pk.drop) << "\n"
          << test::describe(o.frame);
      if (check_checksums_ && test::checksum_errors(in).empty()) {
        EXPECT_TRUE(test::ChecksumsOk(o.frame));
      }
    }
    return o;
  }

  // Client c opens cport (SYN, SYN-ACK, ACK) and must land on backend b.
  void Establish(int c, uint16_t cport, int b, Tick now) {
    const Seg syn = client_syn(c, cport, 1000u * static_cast<uint32_t>(c) + cport);
    const Out o1 = Run(client_frame(c, syn), kClientSide, now);
    ASSERT_TRUE(IsTx(o1, kBackendSide));
    ASSERT_TRUE(FramesEqual(to_backend(b, syn), o1.frame));
    const Seg sa = backend_seg(b, c, cport, tf::kSyn | tf::kAck, 5000, syn.tcp.seq + 1, {},
                               {2, 4, 0x05, 0xb4});
    const Out o2 = Run(backend_frame(b, sa), kBackendSide, now);
    ASSERT_TRUE(IsTx(o2, kClientSide));
    ASSERT_TRUE(FramesEqual(to_client(c, sa), o2.frame));
    const Seg ack = client_seg(c, cport, tf::kAck, syn.tcp.seq + 1, 5001);
    const Out o3 = Run(client_frame(c, ack), kClientSide, now);
    ASSERT_TRUE(IsTx(o3, kBackendSide));
    ASSERT_TRUE(FramesEqual(to_backend(b, ack), o3.frame));
    ASSERT_EQ(State(c, cport), TcpState::kEstablished);
  }

  const Flow* FindFlow(int c, uint16_t cport, const Processor* p = nullptr, uint32_t vip = kVip) {
    const FlowTable& t = (p ? *p : proc()).flows();
    const FlowKey k{client_ip(c), vip, cport, kVport};
    Dir d;
    const uint32_t idx = t.lookup(k, t.hash(k), d);
    return idx == FlowTable::kNoFlow ? nullptr : &t.at(idx);
  }
  std::optional<TcpState> State(int c, uint16_t cport) {
    const Flow* f = FindFlow(c, cport);
    if (!f) return std::nullopt;
    return f->state;
  }

  const WorkerCounters& C() { return proc().counters(); }
  const BackendCounters& BC(int b) { return proc().counters().backend[kBackendId[b]]; }
  uint64_t Drops(DropReason r) { return C().drops[static_cast<size_t>(r)].get(); }

  ProcessorConfig cfg_;
  std::unique_ptr<NeighborTable> neighbors_ = std::make_unique<NeighborTable>();
  uint16_t slot_[kBackends]{};
  uint64_t generation_ = 0;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<Processor> proc_;
  bool check_checksums_ = true;
  ForwardMode forward_ = ForwardMode::kDnat;  // make_pool()'s service
  SynPolicy syn_policy_ = SynPolicy::kDefault;
  MissMode miss_ = MissMode::kDefault;
};

// ---------------------------------------------------------------------------------------------
// New flows, NAT both ways

TEST_F(ProcessorTest, SynsFromThreeClientsGoRoundRobinWithExactBytes) {
  for (int c = 0; c < 3; ++c) {
    SCOPED_TRACE("client " + std::to_string(c));
    const Seg syn =
        client_syn(c, static_cast<uint16_t>(40000 + c), 111111u * static_cast<uint32_t>(c + 1));
    const Bytes in = client_frame(c, syn);
    ASSERT_EQ(in.size(), 74u);
    const Out o = Run(in, kClientSide, 7);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_TRUE(FramesEqual(to_backend(c, syn), o.frame));
    EXPECT_EQ(o.off, 128);  // untagged in, untagged out: the header stays where it was
  }
  EXPECT_EQ(C().flows_created.get(), 3u);
  EXPECT_EQ(C().flows_active.get(), 3u);
  EXPECT_EQ(proc().flows().size(), 3u);
  for (int b = 0; b < kBackends; ++b) {
    EXPECT_EQ(BC(b).flows_active.get(), 1u);
    EXPECT_EQ(BC(b).flows_total.get(), 1u);
    EXPECT_EQ(BC(b).packets_in.get(), 1u);
    EXPECT_EQ(BC(b).bytes_in.get(), 60u);  // IPv4 bytes: 20 + 20 + 20 of options
    EXPECT_EQ(BC(b).packets_out.get(), 0u);
    const Flow* f = FindFlow(b, static_cast<uint16_t>(40000 + b));
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->state, TcpState::kSynSent);
    EXPECT_EQ(f->expires, 7 + cfg_.syn_timeout);
    EXPECT_EQ(f->created, 7u);
    EXPECT_EQ(raw(f->backend), kBackendId[b]);
    EXPECT_EQ(f->backend_ip, kBackendIp[b]);
    EXPECT_EQ(f->backend_port, kBackendTcpPort);
    EXPECT_EQ(f->client_mac, client_mac(b));
    EXPECT_EQ(f->client_port_id, kClientSide);
    EXPECT_EQ(f->backend_port_id, kBackendSide);
    EXPECT_EQ(f->service, raw(kSvc));
    EXPECT_EQ(f->client_tagged, 0);
  }
  // The fourth starts the cycle again.
  const Seg syn = client_syn(3, 40003, 4);
  const Out o = Run(client_frame(3, syn), kClientSide, 8);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, syn), o.frame));
}

// process_burst forwards established dnat segments on an inline path (forward_established) and
// parses common frames inline: a burst must give exactly what the same frames give one at a
// time through process(), verdicts, bytes and drop counts, including the frames the inline
// paths hand back (a tagged client, TTL 1, a FIN, an RST then data of the same flow in the same
// burst, another host's MAC, a bad IPv4 checksum).
TEST_F(ProcessorTest, BurstMatchesOneAtATime) {
  Processor one(cfg_, *neighbors_);
  Processor burst(cfg_, *neighbors_);
  const Tick now = 10;
  // Flows 0..2 untagged (clients 0, 1, 2), flow 3 from a VLAN-tagged client (client 3).
  for (Processor* p : {&one, &burst}) {
    for (int c = 0; c < 4; ++c) {
      const uint16_t cport = static_cast<uint16_t>(2000 + c);
      const std::optional<uint16_t> vlan = c == 3 ? std::optional<uint16_t>{7} : std::nullopt;
      const Seg syn = client_syn(c, cport, 100);
      ASSERT_TRUE(IsTx(Run(client_frame(c, syn, vlan), kClientSide, now, p), kBackendSide));
      const int b = c % kBackends;  // round robin, each processor from backend 0
      ASSERT_TRUE(
          IsTx(Run(backend_frame(b, backend_seg(b, c, cport, tf::kSyn | tf::kAck, 500, 101)),
                   kBackendSide, now, p),
               kClientSide));
      ASSERT_TRUE(IsTx(
          Run(client_frame(c, client_seg(c, cport, tf::kAck, 101, 501), vlan), kClientSide, now, p),
          kBackendSide));
    }
  }
  struct In {
    Bytes frame;
    uint16_t port;
  };
  std::vector<In> in;
  auto data = [](int c, uint32_t seq) {
    return client_seg(c, static_cast<uint16_t>(2000 + c), tf::kAck | tf::kPsh, seq, 501,
                      Bytes(10, 0x61));
  };
  auto reply = [](int c, uint32_t seq) {
    return backend_seg(c % kBackends, c, static_cast<uint16_t>(2000 + c), tf::kAck, seq, 111,
                       Bytes(7, 0x62));
  };
  in.push_back({client_frame(0, data(0, 101)), kClientSide});
  in.push_back({backend_frame(0, reply(0, 501)), kBackendSide});
  in.push_back({client_frame(0, data(0, 111)), kClientSide});  // the same flow again
  in.push_back({client_frame(3, data(3, 101), 7), kClientSide});
  in.push_back({backend_frame(0, reply(3, 501)), kBackendSide});  // to the tagged client
  Seg ttl1 = data(1, 101);
  ttl1.ip.ttl = 1;
  in.push_back({client_frame(1, ttl1), kClientSide});
  Seg fin = data(1, 101);
  fin.tcp.flags = tf::kFin | tf::kAck;
  in.push_back({client_frame(1, fin), kClientSide});
  Seg rst = data(2, 101);
  rst.tcp.flags = tf::kRst;
  rst.tcp.payload.clear();
  in.push_back({client_frame(2, rst), kClientSide});
  in.push_back({client_frame(2, data(2, 101)), kClientSide});  // after its RST, same burst
  Bytes other_mac = client_frame(0, data(0, 121));
  other_mac[5] ^= 0x40;  // another host's unicast MAC
  in.push_back({other_mac, kClientSide});
  Bytes bad_csum = client_frame(0, data(0, 121));
  bad_csum[14 + 10] ^= 0x01;
  in.push_back({bad_csum, kClientSide});
  in.push_back({backend_frame(2, reply(2, 501)), kBackendSide});

  std::vector<Out> want;
  for (const In& i : in) want.push_back(Run(i.frame, i.port, now + 1, &one));
  const size_t n = in.size();
  std::vector<std::vector<uint8_t>> bufs(n);
  std::vector<Frame> frames(n);
  std::vector<uint16_t> ports(n);
  std::vector<Verdict> got(n);
  for (size_t i = 0; i < n; ++i) {
    bufs[i].assign(2048, 0xa5);
    std::copy(in[i].frame.begin(), in[i].frame.end(), bufs[i].begin() + 128);
    frames[i] = Frame{bufs[i].data(), 128, static_cast<uint16_t>(in[i].frame.size()), 2048};
    ports[i] = in[i].port;
  }
  burst.process_burst(frames.data(), ports.data(), static_cast<uint16_t>(n), *pool_, now + 1,
                      got.data());
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(verdict_str(got[i]), verdict_str(want[i].v)) << "frame " << i;
    EXPECT_EQ(got[i].port, want[i].v.port) << "frame " << i;
    const Bytes out(bufs[i].begin() + frames[i].off,
                    bufs[i].begin() + frames[i].off + frames[i].len);
    EXPECT_TRUE(FramesEqual(want[i].frame, out)) << "frame " << i;
  }
  for (size_t r = 0; r < kDropReasonCount; ++r)
    EXPECT_EQ(burst.counters().drops[r].get(), one.counters().drops[r].get())
        << to_string(static_cast<DropReason>(r));
  EXPECT_EQ(burst.counters().backend[kBackendId[0]].packets_in.get(),
            one.counters().backend[kBackendId[0]].packets_in.get());
  EXPECT_EQ(burst.counters().backend[kBackendId[0]].bytes_out.get(),
            one.counters().backend[kBackendId[0]].bytes_out.get());
  // The burst really took the inline path and the frames it hands back: some of each.
  EXPECT_GT(one.counters().backend[kBackendId[0]].packets_in.get(), 0u);
  EXPECT_GT(one.counters().drops[static_cast<size_t>(DropReason::kNotOurMac)].get(), 0u);
  EXPECT_GT(one.counters().drops[static_cast<size_t>(DropReason::kIpChecksum)].get(), 0u);
  for (int c = 0; c < 4; ++c) {
    const Flow* a = FindFlow(c, static_cast<uint16_t>(2000 + c), &one);
    const Flow* b = FindFlow(c, static_cast<uint16_t>(2000 + c), &burst);
    ASSERT_EQ(a == nullptr, b == nullptr) << "client " << c;
    if (a) {
      EXPECT_EQ(a->state, b->state) << "client " << c;
      EXPECT_EQ(a->expires, b->expires) << "client " << c;
    }
  }
}

TEST_F(ProcessorTest, HandshakeDataAndReverseNatArePinned) {
  const uint16_t cport = 51000;
  const Seg syn = client_syn(1, cport, 100);
  Out o = Run(client_frame(1, syn), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  ASSERT_EQ(backend_index(o.frame), 0);

  // SYN-ACK from the backend: to the client, from the VIP, out of the port it came in on.
  const Seg sa = backend_seg(0, 1, cport, tf::kSyn | tf::kAck, 7000, 101, {}, {2, 4, 0x05, 0x78});
  o = Run(backend_frame(0, sa), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(1, sa), o.frame));
  EXPECT_EQ(State(1, cport), TcpState::kSynRecv);
  EXPECT_EQ(FindFlow(1, cport)->expires, 2 + cfg_.syn_timeout);

  // The client's ACK: a 54-byte segment in a padded 60-byte frame; the padding is not sent.
  const Seg ack = client_seg(1, cport, tf::kAck, 101, 7001);
  const Bytes ack_in = client_frame(1, ack);
  ASSERT_EQ(ack_in.size(), 60u);
  o = Run(ack_in, kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, ack), o.frame));
  EXPECT_EQ(o.frame.size(), 54u);
  EXPECT_EQ(State(1, cport), TcpState::kEstablished);
  EXPECT_EQ(FindFlow(1, cport)->expires, 3 + cfg_.established_timeout);

  // Data both ways, all pinned to backend 0 while other clients are scheduled in between
  // (round robin from backend 1: 1 2 0 1 2, so one of them also lands on backend 0).
  uint64_t bytes_in = 60 + 40, bytes_out = 44;
  for (uint32_t i = 0; i < 5; ++i) {
    const Seg other = client_syn(2, static_cast<uint16_t>(60000 + i), i);
    o = Run(client_frame(2, other), kClientSide, 4);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_EQ(backend_index(o.frame), static_cast<int>((i + 1) % 3));
    if (backend_index(o.frame) == 0) bytes_in += 60;

    Bytes payload(10 + i * 100, static_cast<uint8_t>('a' + i));
    const Seg up = client_seg(1, cport, tf::kAck | tf::kPsh, 101 + i * 1000, 7001, payload);
    o = Run(client_frame(1, up), kClientSide, 10 + i);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_TRUE(FramesEqual(to_backend(0, up), o.frame));
    bytes_in += 40 + payload.size();

    const Seg down = backend_seg(0, 1, cport, tf::kAck | tf::kPsh, 7001 + i, 101, payload);
    o = Run(backend_frame(0, down), kBackendSide, 10 + i);
    ASSERT_TRUE(IsTx(o, kClientSide));
    EXPECT_TRUE(FramesEqual(to_client(1, down), o.frame));
    bytes_out += 40 + payload.size();
  }
  EXPECT_EQ(BC(0).packets_in.get(), 8u);  // SYN, ACK, 5 data, the other client's SYN
  EXPECT_EQ(BC(0).bytes_in.get(), bytes_in);
  EXPECT_EQ(BC(0).packets_out.get(), 6u);  // SYN-ACK, 5 data
  EXPECT_EQ(BC(0).bytes_out.get(), bytes_out);
  EXPECT_EQ(BC(0).flows_active.get(), 2u);
  EXPECT_EQ(BC(1).flows_active.get(), 2u);
  EXPECT_EQ(BC(2).flows_active.get(), 2u);
  EXPECT_EQ(C().flows_created.get(), 6u);
  EXPECT_EQ(FindFlow(1, cport)->expires, 14 + cfg_.established_timeout);
}

// ---------------------------------------------------------------------------------------------
// TCP states, timeouts, expiry

struct Step {
  bool from_client;
  uint8_t flags;
};
struct StateCase {
  std::string name;
  std::vector<Step> steps;  // after the client's SYN
  TcpState want;
  Tick ProcessorConfig::*timeout;
};

TEST_F(ProcessorTest, StatesTimeoutsAndExpiry) {
  constexpr bool kC = true, kB = false;
  const uint8_t SA = tf::kSyn | tf::kAck, A = tf::kAck, FA = tf::kFin | tf::kAck, R = tf::kRst,
                RA = tf::kRst | tf::kAck, F = tf::kFin;
  const std::vector<StateCase> cases = {
      {"syn", {}, TcpState::kSynSent, &ProcessorConfig::syn_timeout},
      {"syn-ack", {{kB, SA}}, TcpState::kSynRecv, &ProcessorConfig::syn_timeout},
      {"ack before syn-ack", {{kC, A}}, TcpState::kSynSent, &ProcessorConfig::syn_timeout},
      {"established",
       {{kB, SA}, {kC, A}},
       TcpState::kEstablished,
       &ProcessorConfig::established_timeout},
      {"data",
       {{kB, SA}, {kC, A}, {kB, A}, {kC, A}},
       TcpState::kEstablished,
       &ProcessorConfig::established_timeout},
      {"client fin",
       {{kB, SA}, {kC, A}, {kC, FA}},
       TcpState::kFinWait,
       &ProcessorConfig::fin_timeout},
      {"backend fin",
       {{kB, SA}, {kC, A}, {kB, FA}},
       TcpState::kFinWait,
       &ProcessorConfig::fin_timeout},
      {"half closed data",
       {{kB, SA}, {kC, A}, {kC, FA}, {kB, A}},
       TcpState::kFinWait,
       &ProcessorConfig::fin_timeout},
      {"fin fin",
       {{kB, SA}, {kC, A}, {kC, FA}, {kB, FA}},
       TcpState::kTimeWait,
       &ProcessorConfig::closed_timeout},
      {"fin fin, backend first",
       {{kB, SA}, {kC, A}, {kB, FA}, {kC, F}},
       TcpState::kTimeWait,
       &ProcessorConfig::closed_timeout},
      {"fin fin last ack",
       {{kB, SA}, {kC, A}, {kC, FA}, {kB, FA}, {kC, A}},
       TcpState::kTimeWait,
       &ProcessorConfig::closed_timeout},
      {"client rst",
       {{kB, SA}, {kC, A}, {kC, R}},
       TcpState::kClosed,
       &ProcessorConfig::closed_timeout},
      {"client rst|ack",
       {{kB, SA}, {kC, A}, {kC, RA}},
       TcpState::kClosed,
       &ProcessorConfig::closed_timeout},
      {"backend rst",
       {{kB, SA}, {kC, A}, {kB, RA}},
       TcpState::kClosed,
       &ProcessorConfig::closed_timeout},
      {"backend rst in syn_recv",
       {{kB, SA}, {kB, R}},
       TcpState::kClosed,
       &ProcessorConfig::closed_timeout},
      {"client rst in syn_sent", {{kC, R}}, TcpState::kClosed, &ProcessorConfig::closed_timeout},
      {"ack after rst",
       {{kB, SA}, {kC, A}, {kC, R}, {kC, A}, {kB, A}},
       TcpState::kClosed,
       &ProcessorConfig::closed_timeout},
      {"fin after rst",
       {{kB, SA}, {kC, R}, {kC, FA}, {kB, FA}},
       TcpState::kClosed,
       &ProcessorConfig::closed_timeout},
  };
  for (const StateCase& sc : cases) {
    SCOPED_TRACE(sc.name);
    Restart();
    const uint16_t cport = 42000;
    Tick now = 100;
    const Seg syn = client_syn(0, cport, 1);
    ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, now), kBackendSide));
    for (const Step& s : sc.steps) {
      now += 10;
      const Out o =
          s.from_client
              ? Run(client_frame(0, client_seg(0, cport, s.flags, 2, 1)), kClientSide, now)
              : Run(backend_frame(0, backend_seg(0, 0, cport, s.flags, 1, 2)), kBackendSide, now);
      ASSERT_TRUE(IsTx(o, s.from_client ? kBackendSide : kClientSide))
          << "every segment of the flow is forwarded";
    }
    const Flow* f = FindFlow(0, cport);
    ASSERT_NE(f, nullptr);
    EXPECT_STREQ(to_string(f->state), to_string(sc.want));
    const Tick deadline = now + cfg_.*sc.timeout;
    EXPECT_EQ(f->expires, deadline);
    // Aging: nothing before the deadline, the flow at it.
    EXPECT_EQ(proc().age(deadline - 1, cfg_.flow_capacity), 0u);
    EXPECT_EQ(proc().flows().size(), 1u);
    EXPECT_EQ(proc().age(deadline, cfg_.flow_capacity), 1u);
    EXPECT_EQ(proc().flows().size(), 0u);
    EXPECT_EQ(C().flows_expired.get(), 1u);
    EXPECT_EQ(C().flows_active.get(), 0u);
    EXPECT_EQ(BC(0).flows_active.get(), 0u);
    EXPECT_EQ(BC(0).flows_total.get(), 1u);
    // After expiry the tuple is a miss.
    EXPECT_TRUE(IsDrop(
        Run(client_frame(0, client_seg(0, cport, tf::kAck, 3, 1)), kClientSide, deadline + 1),
        DropReason::kFlowMiss));
  }
}

TEST_F(ProcessorTest, PacedAgingSweepsOncePerSecondAndIdlePollsDoNothing) {
  // 1024 records at 1000 ticks/s: a batch of 64 every 62 ticks, the table once per ~1 s.
  cfg_.flow_capacity = 1024;
  cfg_.ticks_per_second = 1000;
  cfg_.syn_timeout = 100;
  constexpr int kFlows = 600;
  OpenFlows(kFlows, 0);
  // Nothing expires before the deadline, however often the pacer is called (many calls per
  // tick, as idle polls do: were each to examine a batch, the whole table would be visited
  // again and again and everything would go at once at the deadline, failing the pace check).
  Tick now = 0;
  for (; now < 100; ++now)
    for (int i = 0; i < 20; ++i) EXPECT_EQ(proc().age(now), 0u);
  // From the deadline, everything goes within one sweep (1 s = 1000 ticks), a batch at a time.
  uint32_t total = 0;
  for (; now <= 100 + 1000 && total < kFlows; ++now) {
    const uint32_t n = proc().age(now);
    EXPECT_LE(n, Processor::kAgeBatch);
    total += n;
  }
  EXPECT_EQ(total, static_cast<uint32_t>(kFlows));
  EXPECT_GT(now, 100 + 1000 / 2) << "a sweep is paced, not done at once";
  EXPECT_EQ(C().flows_expired.get(), static_cast<uint32_t>(kFlows));
  EXPECT_EQ(C().flows_active.get(), 0u);
}

TEST_F(ProcessorTest, PacedAgingCatchesUpAtMostAFewBatchesPerPoll) {
  cfg_.flow_capacity = 4096;
  cfg_.ticks_per_second = 1000;
  cfg_.syn_timeout = 10;
  constexpr uint32_t kFlows = 2000;
  OpenFlows(kFlows, 0);
  EXPECT_EQ(proc().age(0), 0u);
  // Ten seconds without a poll: the catch-up poll examines at most kAgeMaxPerPoll records, so
  // it cannot expire all 2000, and the pace restarts from there instead of owing ten sweeps.
  static_assert(Processor::kAgeMaxPerPoll < kFlows);
  const uint32_t first = proc().age(10'000);
  EXPECT_GT(first, 0u);
  EXPECT_LE(first, Processor::kAgeMaxPerPoll);
  EXPECT_EQ(proc().age(10'000), 0u);
  // The rest goes at the normal pace, within one sweep.
  uint32_t total = first;
  for (Tick now = 10'001; now <= 11'000; ++now) total += proc().age(now);
  EXPECT_EQ(total, kFlows);
  EXPECT_EQ(C().flows_expired.get(), kFlows);
}

TEST_F(ProcessorTest, PacedAgingKeepsUpWithNewFlows) {
  // A table of 1 M records swept by time alone would take a second per pass; a steady stream of
  // new flows with a short timeout must still find room: every new flow pays for
  // kAgePerNewFlow records of aging on the next call.
  cfg_.flow_capacity = 4096;
  cfg_.ticks_per_second = 1'000'000;  // one tick = 1 us: 4096 records take 1 s by time alone
  cfg_.syn_timeout = 1000;            // 1 ms
  Tick now = 0;
  uint32_t refused = 0;
  for (uint32_t i = 0; i < 40'000; ++i, now += 2) {  // 500 k new flows/s for 80 ms
    const Out o = Run(
        client_frame(static_cast<int>(i % 5),
                     client_syn(static_cast<int>(i % 5), static_cast<uint16_t>(1 + i % 60000), 1)),
        kClientSide, now);
    if (!IsTx(o, kBackendSide)) ++refused;
    proc().age(now);
  }
  EXPECT_EQ(refused, 0u) << "the table filled up: aging fell behind the new flows";
  EXPECT_EQ(Drops(DropReason::kFlowTableFull), 0u);
  EXPECT_GT(C().flows_expired.get(), 30'000u);
}

TEST_F(ProcessorTest, AgingIsBoundedByBudget) {
  OpenFlows(30, 0);
  EXPECT_EQ(C().flows_active.get(), 30u);
  uint32_t total = 0;
  for (int call = 0; call < 64 / 8; ++call) {
    const uint32_t n = proc().age(cfg_.syn_timeout, 8);
    EXPECT_LE(n, 8u);
    total += n;
  }
  EXPECT_EQ(total, 30u);
  EXPECT_EQ(C().flows_expired.get(), 30u);
  EXPECT_EQ(C().flows_active.get(), 0u);
  for (int b = 0; b < kBackends; ++b) EXPECT_EQ(BC(b).flows_active.get(), 0u);
}

TEST_F(ProcessorTest, SynReusingAClosedTupleIsRescheduled) {
  const uint8_t A = tf::kAck, FA = tf::kFin | tf::kAck, RA = tf::kRst | tf::kAck;
  struct Close {
    std::string name;
    std::vector<Step> steps;
  };
  const std::vector<Close> closes = {
      {"time_wait", {{true, FA}, {false, FA}, {true, A}}},
      {"fin_wait (client)", {{true, FA}}},
      {"fin_wait (backend)", {{false, FA}}},
      {"client rst", {{true, RA}}},
      {"backend rst", {{false, RA}}},
  };
  for (const Close& cl : closes) {
    SCOPED_TRACE(cl.name);
    Restart();
    const uint16_t cport = 33333;
    ASSERT_NO_FATAL_FAILURE(Establish(0, cport, 0, 10));
    for (const Step& s : cl.steps) {
      const Out o =
          s.from_client
              ? Run(client_frame(0, client_seg(0, cport, s.flags, 9, 9)), kClientSide, 11)
              : Run(backend_frame(0, backend_seg(0, 0, cport, s.flags, 9, 9)), kBackendSide, 11);
      ASSERT_EQ(o.v.action, Action::kTx);
    }
    // The same 4-tuple connects again: the next backend in the cycle, not the old one.
    const Seg syn = client_syn(0, cport, 777);
    const Out o = Run(client_frame(0, syn), kClientSide, 12);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_TRUE(FramesEqual(to_backend(1, syn), o.frame));
    EXPECT_EQ(State(0, cport), TcpState::kSynSent);
    EXPECT_EQ(FindFlow(0, cport)->expires, 12 + cfg_.syn_timeout);
    EXPECT_EQ(C().flows_reused.get(), 1u);
    EXPECT_EQ(C().flows_created.get(), 2u);
    EXPECT_EQ(C().flows_active.get(), 1u);
    EXPECT_EQ(BC(0).flows_active.get(), 0u);
    EXPECT_EQ(BC(1).flows_active.get(), 1u);
    EXPECT_EQ(proc().flows().size(), 1u);
    // The old backend's late segments no longer reach the client.
    EXPECT_TRUE(IsDrop(Run(backend_frame(0, backend_seg(0, 0, cport, A, 9, 9)), kBackendSide, 13),
                       DropReason::kNotForUs));
  }
}

TEST_F(ProcessorTest, SynInsideALiveConnectionStaysOnItsBackend) {
  ASSERT_NO_FATAL_FAILURE(Establish(0, 2000, 0, 1));
  const Seg syn = client_syn(0, 2000, 5);
  const Out o = Run(client_frame(0, syn), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, syn), o.frame));
  EXPECT_EQ(State(0, 2000), TcpState::kEstablished);
  EXPECT_EQ(C().flows_created.get(), 1u);
  EXPECT_EQ(C().flows_reused.get(), 0u);
  // Also in SYN_RECV.
  ASSERT_TRUE(IsTx(Run(client_frame(1, client_syn(1, 2001, 1)), kClientSide, 3), kBackendSide));
  ASSERT_TRUE(IsTx(
      Run(backend_frame(1, backend_seg(1, 1, 2001, tf::kSyn | tf::kAck, 1, 2)), kBackendSide, 3),
      kClientSide));
  const Out o2 = Run(client_frame(1, client_syn(1, 2001, 1)), kClientSide, 4);
  ASSERT_TRUE(IsTx(o2, kBackendSide));
  EXPECT_EQ(backend_index(o2.frame), 1);
  EXPECT_EQ(State(1, 2001), TcpState::kSynRecv);
}

// ---------------------------------------------------------------------------------------------
// Misses, no backend, RST generation

TEST_F(ProcessorTest, NonSynMissIsDropped) {
  for (uint8_t flags :
       {tf::kAck, uint8_t{tf::kAck | tf::kPsh}, uint8_t{tf::kFin | tf::kAck}, tf::kRst,
        uint8_t{tf::kRst | tf::kAck}, uint8_t{tf::kSyn | tf::kAck}, tf::kFin}) {
    SCOPED_TRACE(test::tcp_flags_str(flags));
    EXPECT_TRUE(IsDrop(Run(client_frame(0, client_seg(0, 5555, flags, 1, 2)), kClientSide, 1),
                       DropReason::kFlowMiss));
  }
  EXPECT_EQ(Drops(DropReason::kFlowMiss), 7u);
  EXPECT_EQ(C().rst_flow_miss.get(), 0u);
  EXPECT_EQ(proc().flows().size(), 0u);
}

TEST_F(ProcessorTest, TcpNotToAServiceIsDropped) {
  Seg s = client_syn(0, 1234, 1);
  s.tcp.dport = 81;  // VIP, but no service on that port
  EXPECT_TRUE(IsDrop(Run(client_frame(0, s), kClientSide, 1), DropReason::kNotForUs));
  s = client_syn(0, 1234, 1);
  s.ip.dst = ip4(10, 10, 0, 200);  // nobody
  EXPECT_TRUE(IsDrop(Run(client_frame(0, s), kClientSide, 1), DropReason::kNotForUs));
  s.ip.dst = kPortIp[0];  // lbd's own address: no TCP service there
  EXPECT_TRUE(IsDrop(Run(client_frame(0, s), kClientSide, 1), DropReason::kLocalTcp));
  s.ip.dst = kPortIp[1];
  EXPECT_TRUE(IsDrop(Run(client_frame(0, s), kClientSide, 1), DropReason::kLocalTcp));
  EXPECT_EQ(proc().flows().size(), 0u);
}

TEST_F(ProcessorTest, RstOnMissFollowsRfc793) {
  cfg_.rst_on_miss = true;
  struct Case {
    std::string name;
    uint8_t flags;
    uint32_t seq, ack;
    size_t payload;
    bool rst;  // answered at all
    uint32_t rst_seq, rst_ack;
    uint8_t rst_flags;
  };
  const std::vector<Case> cases = {
      // ACK set: <SEQ=SEG.ACK><CTL=RST>
      {"ack", tf::kAck, 100, 5000, 0, true, 5000, 0, tf::kRst},
      {"data", tf::kAck | tf::kPsh, 100, 0xfffffff0, 300, true, 0xfffffff0, 0, tf::kRst},
      {"fin|ack", tf::kFin | tf::kAck, 100, 42, 0, true, 42, 0, tf::kRst},
      {"syn|ack", tf::kSyn | tf::kAck, 7, 9, 0, true, 9, 0, tf::kRst},
      // No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SYN and FIN counting one each.
      {"fin", tf::kFin, 100, 0, 0, true, 0, 101, tf::kRst | tf::kAck},
      {"fin with data", tf::kFin | tf::kPsh, 100, 0, 3, true, 0, 104, tf::kRst | tf::kAck},
      {"fin wraps", tf::kFin, 0xffffffff, 0, 0, true, 0, 0, tf::kRst | tf::kAck},
      // Never an RST for an RST.
      {"rst", tf::kRst, 100, 0, 0, false, 0, 0, 0},
      {"rst|ack", tf::kRst | tf::kAck, 100, 5, 0, false, 0, 0, 0},
  };
  uint64_t rsts = 0;
  for (const Case& k : cases) {
    for (bool tagged : {false, true}) {
      SCOPED_TRACE(k.name + (tagged ? " tagged" : ""));
      Seg s = client_seg(2, 4321, k.flags, k.seq, k.ack, Bytes(k.payload, 0x77));
      s.ip.tos = 0x28;               // not copied into the RST
      s.tcp.options = {1, 1, 1, 0};  // nor the options
      const std::optional<uint16_t> vlan = tagged ? std::optional<uint16_t>(0x0ffe) : std::nullopt;
      const Out o = Run(client_frame(2, s, vlan), kClientSide, 1);
      if (!k.rst) {
        EXPECT_TRUE(IsDrop(o, DropReason::kFlowMiss));
        continue;
      }
      ++rsts;
      ASSERT_TRUE(IsTx(o, kClientSide));
      EXPECT_TRUE(
          FramesEqual(rst_to_client(2, 4321, k.rst_seq, k.rst_ack, k.rst_flags, vlan), o.frame));
    }
  }
  EXPECT_EQ(C().rst_flow_miss.get(), rsts);
  EXPECT_EQ(proc().flows().size(), 0u);
}

TEST_F(ProcessorTest, NoBackendAnswersRstOrDrops) {
  pool_ = make_pool({});  // the service exists, no backend takes new flows
  for (uint32_t payload : {0u, 5u}) {
    Seg syn = client_syn(1, 6000, 0x7ffffff0);
    syn.tcp.payload = Bytes(payload, 1);  // a TFO-style SYN with data: SEG.LEN counts it
    const Out o = Run(client_frame(1, syn), kClientSide, 1);
    ASSERT_TRUE(IsTx(o, kClientSide));
    EXPECT_TRUE(FramesEqual(
        rst_to_client(1, 6000, 0, 0x7ffffff0 + 1 + payload, tf::kRst | tf::kAck), o.frame));
  }
  EXPECT_EQ(C().rst_no_backend.get(), 2u);
  EXPECT_EQ(C().flows_created.get(), 0u);
  EXPECT_EQ(proc().flows().size(), 0u);

  // Weight-0 backends are no backends either; and with the drop policy, a counted drop.
  Restart();
  cfg_.rst_on_no_backend = false;
  Pool::ServiceSpec s{kSvc,
                      kVip,
                      kVport,
                      SchedulerKind::kRoundRobin,
                      {pool_backend(0, 0)},
                      {static_cast<BackendId>(kBackendId[0])}};
  pool_ = std::make_unique<Pool>(99, std::vector<Pool::ServiceSpec>{s});
  EXPECT_TRUE(
      IsDrop(Run(client_frame(1, client_syn(1, 6001, 1)), kClientSide, 1), DropReason::kNoBackend));
  EXPECT_EQ(Drops(DropReason::kNoBackend), 1u);
  EXPECT_EQ(C().rst_no_backend.get(), 0u);
}

// ---------------------------------------------------------------------------------------------
// A restart over the same table memory (lbd's flow files: dataplane/flow_memory.h)

TEST_F(ProcessorTest, ANewProcessorOverTheSameTableMemoryContinuesEveryFlow) {
  // The table in memory that outlives the Processor, as a file mapping does.
  struct alignas(64) Line {
    std::byte b[64];
  };
  std::vector<Line> mem(FlowTable::region_bytes(cfg_.flow_capacity) / sizeof(Line));
  const std::span<std::byte> region(reinterpret_cast<std::byte*>(mem.data()),
                                    mem.size() * sizeof(Line));
  auto start = [&](FlowTable::Region how) {
    proc_ = std::make_unique<Processor>(cfg_, *neighbors_,
                                        FlowTable(cfg_.flow_capacity, cfg_.hash_seed, region, how));
  };
  start(FlowTable::Region::kFresh);
  for (int c = 0; c < 3; ++c) ASSERT_NO_FATAL_FAILURE(Establish(c, 100, c, 10));
  const Seg syn = client_syn(3, 200, 77);  // a handshake still pending: backend 0 (round robin)
  ASSERT_TRUE(IsTx(Run(client_frame(3, syn), kClientSide, 11), kBackendSide));
  const Seg fin = client_seg(0, 100, tf::kFin | tf::kAck, 1101, 5001);  // one side closing
  ASSERT_TRUE(IsTx(Run(client_frame(0, fin), kClientSide, 12), kBackendSide));
  std::vector<Flow> before;
  for (int c = 0; c < 3; ++c) before.push_back(*FindFlow(c, 100));
  before.push_back(*FindFlow(3, 200));

  // The process is gone; a new one (new Processor, new counters, empty SYN cache) takes the
  // memory over.
  start(FlowTable::Region::kAttach);
  EXPECT_EQ(proc().flows().size(), 4u);
  EXPECT_EQ(C().flows_active.get(), 4u);
  EXPECT_EQ(BC(0).flows_active.get(), 2u);
  EXPECT_EQ(BC(1).flows_active.get(), 1u);
  EXPECT_EQ(BC(2).flows_active.get(), 1u);
  EXPECT_EQ(C().flows_created.get(), 0u);
  for (int i = 0; i < 4; ++i) {
    const Flow* f = FindFlow(i, i < 3 ? 100 : 200);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(std::memcmp(f, &before[static_cast<size_t>(i)], sizeof(Flow)), 0) << i;
  }
  // Every flow goes on, byte for byte, both ways.
  for (int c = 0; c < 3; ++c) {
    SCOPED_TRACE("client " + std::to_string(c));
    const Seg up = client_seg(c, 100, tf::kAck | tf::kPsh, 1101 + (c == 0), 5001, Bytes(30, 'u'));
    Out o = Run(client_frame(c, up), kClientSide, 20);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_TRUE(FramesEqual(to_backend(c, up), o.frame));
    const Seg down = backend_seg(c, c, 100, tf::kAck | tf::kPsh, 5001, 1131, Bytes(40, 'd'));
    o = Run(backend_frame(c, down), kBackendSide, 21);
    ASSERT_TRUE(IsTx(o, kClientSide));
    EXPECT_TRUE(FramesEqual(to_client(c, down), o.frame));
  }
  EXPECT_EQ(State(0, 100), TcpState::kFinWait);
  // The pending handshake completes on its backend.
  const Seg sa = backend_seg(0, 3, 200, tf::kSyn | tf::kAck, 9000, 78);
  Out o = Run(backend_frame(0, sa), kBackendSide, 22);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(3, sa), o.frame));
  EXPECT_EQ(State(3, 200), TcpState::kSynRecv);

  // New flows take creation numbers after the restored ones: the SYN cache (keyed by them) can
  // never replay a new client's SYN for a restored flow.
  uint32_t restored_max = 0;
  for (const Flow& f : before) restored_max = std::max(restored_max, f.serial);
  ASSERT_TRUE(IsTx(Run(client_frame(4, client_syn(4, 300, 5)), kClientSide, 23), kBackendSide));
  EXPECT_EQ(FindFlow(4, 300)->serial, restored_max + 1);
  // Aging goes on from the restored deadlines.
  EXPECT_EQ(FindFlow(0, 100)->expires, 21 + cfg_.fin_timeout);
  EXPECT_EQ(proc().age(21 + cfg_.fin_timeout, cfg_.flow_capacity), 3u);  // and the handshakes
  EXPECT_EQ(FindFlow(0, 100), nullptr);
  EXPECT_EQ(C().flows_active.get(), 2u);
}

TEST_F(ProcessorTest, RestoredFlowsThatCannotBeThisWorkersAreErased) {
  struct alignas(64) Line {
    std::byte b[64];
  };
  std::vector<Line> mem(FlowTable::region_bytes(cfg_.flow_capacity) / sizeof(Line));
  const std::span<std::byte> region(reinterpret_cast<std::byte*>(mem.data()),
                                    mem.size() * sizeof(Line));
  {
    FlowTable t(cfg_.flow_capacity, cfg_.hash_seed, region, FlowTable::Region::kFresh);
    auto add = [&](int c, auto change) {
      Flow f{};
      f.client_ip = client_ip(c);
      f.client_port = 100;
      f.vip = kVip;
      f.vport = kVport;
      f.backend_ip = kBackendIp[0];
      f.backend_port = kBackendTcpPort;
      f.backend = static_cast<BackendId>(kBackendId[0]);
      f.backend_port_id = kBackendSide;
      f.expires = 1000;
      f.state = TcpState::kEstablished;
      change(f);
      uint32_t idx;
      ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk);
    };
    add(0, [](Flow&) {});
    add(1, [](Flow& f) { f.backend = kGoneBackend; });  // kept: reset on its next packet
    add(2, [](Flow& f) { f.backend = static_cast<BackendId>(raw(kGoneBackend) + 1); });
    add(3, [](Flow& f) { f.client_port_id = 2; });
    add(4, [](Flow& f) { f.backend_port_id = 7; });
    add(5, [](Flow& f) { f.state = static_cast<TcpState>(200); });
    add(6, [](Flow& f) { f.neighbor = kMaxNeighbors; });
    add(7, [](Flow& f) {  // a reset record: kept, but no flow and no backend's
      f.state = TcpState::kReset;
      f.backend = kNoBackend;
    });
  }
  proc_ = std::make_unique<Processor>(
      cfg_, *neighbors_,
      FlowTable(cfg_.flow_capacity, cfg_.hash_seed, region, FlowTable::Region::kAttach));
  EXPECT_EQ(proc().flows().size(), 3u);
  EXPECT_NE(FindFlow(0, 100), nullptr);
  EXPECT_NE(FindFlow(1, 100), nullptr);
  EXPECT_NE(FindFlow(7, 100), nullptr);
  EXPECT_EQ(C().flows_active.get(), 2u);
  EXPECT_EQ(C().backend[raw(kGoneBackend)].flows_active.get(), 1u);
  // The flow whose backend is gone: its next client segment gets the backend-stopped RST.
  const Seg up = client_seg(1, 100, tf::kAck, 500, 600);
  const Out o = Run(client_frame(1, up), kClientSide, 10);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(rst_to_client(1, 100, 600, 0, tf::kRst), o.frame));
  EXPECT_EQ(C().flows_reset.get(), 1u);
  EXPECT_EQ(C().flows_active.get(), 1u);
  EXPECT_EQ(C().backend[raw(kGoneBackend)].flows_active.get(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Retry on another backend

TEST_F(ProcessorTest, BackendRstIsTurnedIntoTheReplayedSyn) {
  const uint16_t cport = 45678;
  const Seg syn = client_syn(0, cport, 0xabcdef01);
  Out o = Run(client_frame(0, syn), kClientSide, 10);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  ASSERT_TRUE(FramesEqual(to_backend(0, syn), o.frame));

  // Backend 0 refuses: the client's SYN, options and all, goes to backend 1 in the RST's buffer.
  const Seg rst0 = backend_seg(0, 0, cport, tf::kRst | tf::kAck, 0, syn.tcp.seq + 1);
  o = Run(backend_frame(0, rst0), kBackendSide, 20);
  ASSERT_TRUE(IsTx(o, kBackendSide)) << "the client must not see the RST";
  EXPECT_TRUE(FramesEqual(to_backend(1, syn), o.frame));
  EXPECT_EQ(BC(0).syn_rst.get(), 1u);
  EXPECT_EQ(C().retries.get(), 1u);
  EXPECT_EQ(C().retry_syn_replayed.get(), 1u);
  EXPECT_EQ(BC(0).flows_active.get(), 0u);
  EXPECT_EQ(BC(1).flows_active.get(), 1u);
  EXPECT_EQ(BC(1).flows_total.get(), 1u);
  EXPECT_EQ(BC(1).packets_in.get(), 1u);
  EXPECT_EQ(C().flows_active.get(), 1u);
  const Flow* f = FindFlow(0, cport);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(raw(f->backend), kBackendId[1]);
  EXPECT_EQ(f->state, TcpState::kSynSent);
  EXPECT_EQ(f->retries, 1);
  EXPECT_EQ(f->created, 20u);
  EXPECT_EQ(f->expires, 20 + cfg_.syn_timeout);
  // Backend 0's key is free again: a retransmitted RST from it is a plain miss.
  EXPECT_TRUE(IsDrop(Run(backend_frame(0, rst0), kBackendSide, 21), DropReason::kNotForUs));

  // Backend 1 accepts: its SYN-ACK reaches the client from the VIP.
  const Seg sa = backend_seg(1, 0, cport, tf::kSyn | tf::kAck, 999, syn.tcp.seq + 1);
  o = Run(backend_frame(1, sa), kBackendSide, 22);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(0, sa), o.frame));
  EXPECT_EQ(State(0, cport), TcpState::kSynRecv);
  EXPECT_EQ(C().flows_created.get(), 1u);
}

// The SYN cache copies a SYN's headers in fixed-size pieces that overlap (copy_syn_headers):
// every header length a SYN can have, 40 to 80 bytes (no options to 40 bytes of them, on both
// sides of 64, where a third piece is needed), must come back byte for byte.
TEST_F(ProcessorTest, ReplayedSynKeepsHeadersOfEveryLength) {
  for (size_t olen = 0; olen <= 40; olen += 4) {
    SCOPED_TRACE("TCP options: " + std::to_string(olen) + " bytes");
    const auto cport = static_cast<uint16_t>(46000 + olen);
    // An option whose bytes all differ, so that a byte copied to the wrong place shows.
    Bytes options;
    if (olen != 0) {
      options = {0xfe, static_cast<uint8_t>(olen)};
      for (size_t i = 2; i < olen; ++i) options.push_back(static_cast<uint8_t>(0x40 + i));
    }
    const Seg syn =
        client_seg(0, cport, tf::kSyn, 7000 + static_cast<uint32_t>(olen), 0, {}, options);
    Out o = Run(client_frame(0, syn), kClientSide, 10);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    const Flow* f = FindFlow(0, cport);
    ASSERT_NE(f, nullptr);
    const int first =
        static_cast<int>(std::find(std::begin(kBackendId), std::end(kBackendId), raw(f->backend)) -
                         std::begin(kBackendId));
    ASSERT_LT(first, kBackends);
    ASSERT_TRUE(FramesEqual(to_backend(first, syn), o.frame));
    const Seg rst = backend_seg(first, 0, cport, tf::kRst | tf::kAck, 0, syn.tcp.seq + 1);
    o = Run(backend_frame(first, rst), kBackendSide, 11);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    f = FindFlow(0, cport);
    ASSERT_NE(f, nullptr);
    const int next =
        static_cast<int>(std::find(std::begin(kBackendId), std::end(kBackendId), raw(f->backend)) -
                         std::begin(kBackendId));
    ASSERT_LT(next, kBackends);
    EXPECT_NE(next, first);
    EXPECT_TRUE(FramesEqual(to_backend(next, syn), o.frame));
  }
  EXPECT_EQ(C().retry_syn_replayed.get(), 11u);
}

TEST_F(ProcessorTest, RetriesStopAtMaxRetries) {
  const uint16_t cport = 45679;
  const Seg syn = client_syn(0, cport, 5);
  ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 10), kBackendSide));
  // 0 refuses -> 1, 1 refuses -> 2 (max_retries = 2), 2 refuses -> the client gets the RST.
  for (int b = 0; b < 2; ++b) {
    const Out o = Run(backend_frame(b, backend_seg(b, 0, cport, tf::kRst | tf::kAck, 0, 6)),
                      kBackendSide, 11);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_TRUE(FramesEqual(to_backend(b + 1, syn), o.frame));
  }
  const Seg last = backend_seg(2, 0, cport, tf::kRst | tf::kAck, 0, 6);
  const Out o = Run(backend_frame(2, last), kBackendSide, 12);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(0, last), o.frame));
  EXPECT_EQ(State(0, cport), TcpState::kClosed);
  EXPECT_EQ(C().retries.get(), 2u);
  EXPECT_EQ(C().retry_syn_replayed.get(), 2u);
  for (int b = 0; b < kBackends; ++b) EXPECT_EQ(BC(b).syn_rst.get(), 1u);
  EXPECT_EQ(BC(2).flows_active.get(), 1u);  // until the closed flow expires
  EXPECT_EQ(proc().age(12 + cfg_.closed_timeout, 64), 1u);
  EXPECT_EQ(BC(2).flows_active.get(), 0u);
  EXPECT_EQ(C().flows_active.get(), 0u);
}

// A retried handshake starts again (its `created` is now): it goes to the embryonic list's
// tail, which stays in `created` order, so that the pressure mode's expiry from the head (oldest
// first, stopping at the first one not old enough) still reaches the older ones behind it.
TEST_F(ProcessorTest, ARetriedHandshakeGoesToTheEmbryonicTail) {
  const uint16_t cports[3] = {45700, 45701, 45702};
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(IsTx(
        Run(client_frame(0, client_syn(0, cports[i], 5)), kClientSide, static_cast<Tick>(10 + i)),
        kBackendSide));
  const Flow* first = FindFlow(0, cports[0]);
  ASSERT_NE(first, nullptr);
  const FlowTable& t = proc().flows();
  ASSERT_EQ(t.oldest_embryonic(), t.index_of(*first));
  // The first one's backend (0: round robin) refuses it: replayed to backend 1 at tick 20.
  const Out o = Run(backend_frame(0, backend_seg(0, 0, cports[0], tf::kRst | tf::kAck, 0, 6)),
                    kBackendSide, 20);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(first->created, 20u);
  std::vector<uint32_t> order;
  for (uint32_t i = t.oldest_embryonic(); i != FlowTable::kNoFlow; i = t.next_embryonic(i))
    order.push_back(i);
  EXPECT_EQ(order,
            (std::vector<uint32_t>{t.index_of(*FindFlow(0, cports[1])),
                                   t.index_of(*FindFlow(0, cports[2])), t.index_of(*first)}));
  EXPECT_EQ(t.embryonic(), 3u);
}

TEST_F(ProcessorTest, RstRetryDisabledOrImpossible) {
  // retry_on_rst = false: the RST goes through and closes the flow.
  cfg_.retry_on_rst = false;
  ASSERT_TRUE(IsTx(Run(client_frame(0, client_syn(0, 1, 1)), kClientSide, 1), kBackendSide));
  const Seg rst = backend_seg(0, 0, 1, tf::kRst | tf::kAck, 0, 2);
  Out o = Run(backend_frame(0, rst), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(0, rst), o.frame));
  EXPECT_EQ(State(0, 1), TcpState::kClosed);
  EXPECT_EQ(BC(0).syn_rst.get(), 1u);  // still a signal about the backend
  EXPECT_EQ(C().retries.get(), 0u);

  // One backend only: nowhere to go.
  Restart();
  cfg_.retry_on_rst = true;
  pool_ = make_pool({0});
  ASSERT_TRUE(IsTx(Run(client_frame(0, client_syn(0, 1, 1)), kClientSide, 1), kBackendSide));
  o = Run(backend_frame(0, rst), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(0, rst), o.frame));
  EXPECT_EQ(C().retries.get(), 0u);

  // An RST after the handshake is the backend's answer to the connection: passed on.
  Restart();
  pool_ = make_pool({0, 1, 2});
  ASSERT_NO_FATAL_FAILURE(Establish(0, 2, 0, 1));
  o = Run(backend_frame(0, backend_seg(0, 0, 2, tf::kRst | tf::kAck, 0, 2)), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_EQ(C().retries.get(), 0u);
  EXPECT_EQ(BC(0).syn_rst.get(), 0u);
}

TEST_F(ProcessorTest, RstRetryWithoutCachedSynIsAbsorbed) {
  cfg_.syn_cache_slots = 0;
  const Seg syn = client_syn(0, 7, 70);
  ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1), kBackendSide));
  EXPECT_TRUE(IsDrop(
      Run(backend_frame(0, backend_seg(0, 0, 7, tf::kRst | tf::kAck, 0, 71)), kBackendSide, 2),
      DropReason::kRetryAbsorbed));
  EXPECT_EQ(C().retries.get(), 1u);
  EXPECT_EQ(C().retry_syn_replayed.get(), 0u);
  // The client's retransmission reaches the new backend.
  const Out o = Run(client_frame(0, syn), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(1, syn), o.frame));
}

TEST_F(ProcessorTest, RstRetryOverwrittenCacheSlotIsAbsorbed) {
  cfg_.syn_cache_slots = 2;
  // Flows 1, 2, 3: flow 3 overwrites flow 1's slot.
  for (int c = 0; c < 3; ++c)
    ASSERT_TRUE(IsTx(Run(client_frame(c, client_syn(c, 9, 1)), kClientSide, 1), kBackendSide));
  EXPECT_TRUE(IsDrop(
      Run(backend_frame(0, backend_seg(0, 0, 9, tf::kRst | tf::kAck, 0, 2)), kBackendSide, 2),
      DropReason::kRetryAbsorbed));
  // Flow 2's slot is intact.
  const Out o =
      Run(backend_frame(1, backend_seg(1, 1, 9, tf::kRst | tf::kAck, 0, 2)), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_NE(backend_index(o.frame), 1);
  EXPECT_TRUE(FramesEqual(to_backend(backend_index(o.frame), client_syn(1, 9, 1)), o.frame));
}

TEST_F(ProcessorTest, RstRetryNeedsRoomForTheSyn) {
  const Seg syn = client_syn(0, 8, 80);  // 74 bytes; the backend's RST is 60
  ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1), kBackendSide));
  const Bytes rst = backend_frame(0, backend_seg(0, 0, 8, tf::kRst | tf::kAck, 0, 81));
  const Out o = Run(rst, kBackendSide, 2, nullptr, /*headroom=*/0, /*cap=*/rst.size());
  EXPECT_TRUE(IsDrop(o, DropReason::kNoBuffer));
}

TEST_F(ProcessorTest, RetryOnClientSynRetransmission) {
  cfg_.retry_syn_after = 20;
  const uint16_t cport = 3030;
  const Seg syn = client_syn(0, cport, 12345);
  const Bytes in = client_frame(0, syn);
  struct Tx {
    Tick at;
    int backend;
  };
  // Created at 100 on backend 0. Retransmissions before 20 ticks stay; at 20 they move (the
  // timer restarts on the new backend); after max_retries (2) moves they stay.
  const std::vector<Tx> plan = {{100, 0}, {110, 0}, {119, 0}, {120, 1},
                                {139, 1}, {140, 2}, {160, 2}, {200, 2}};
  for (const Tx& t : plan) {
    SCOPED_TRACE("at " + std::to_string(t.at));
    const Out o = Run(in, kClientSide, t.at);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_TRUE(FramesEqual(to_backend(t.backend, syn), o.frame));
  }
  EXPECT_EQ(C().retries.get(), 2u);
  EXPECT_EQ(C().retry_syn_replayed.get(), 0u);
  EXPECT_EQ(BC(0).syn_timeout.get(), 1u);
  EXPECT_EQ(BC(1).syn_timeout.get(), 1u);
  EXPECT_EQ(BC(2).syn_timeout.get(), 0u);
  EXPECT_EQ(BC(2).flows_active.get(), 1u);
  EXPECT_EQ(BC(0).flows_active.get() + BC(1).flows_active.get(), 0u);
  EXPECT_EQ(C().flows_created.get(), 1u);
  // A late SYN-ACK from the first backend finds no flow.
  EXPECT_TRUE(IsDrop(Run(backend_frame(0, backend_seg(0, 0, cport, tf::kSyn | tf::kAck, 1, 12346)),
                         kBackendSide, 201),
                     DropReason::kNotForUs));

  // retry_syn_after = 0: never.
  Restart();
  cfg_.retry_syn_after = 0;
  for (Tick at : {100u, 1000u, 100000u}) {
    const Out o = Run(in, kClientSide, at);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_EQ(backend_index(o.frame), 0);
  }
  EXPECT_EQ(C().retries.get(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Pool changes

TEST_F(ProcessorTest, BackendRemovedFromPool) {
  for (int c = 0; c < 3; ++c) ASSERT_NO_FATAL_FAILURE(Establish(c, 100, c, 1));
  // Backend 1 leaves: no new flows, but its flows continue (it is still `serving`).
  pool_ = make_pool({0, 2}, {1});
  const Seg up = client_seg(1, 100, tf::kAck | tf::kPsh, 2000, 3000, Bytes(100, 1));
  Out o = Run(client_frame(1, up), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(1, up), o.frame));
  const Seg down = backend_seg(1, 1, 100, tf::kAck, 3000, 2100, Bytes(50, 2));
  o = Run(backend_frame(1, down), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(1, down), o.frame));
  // A SYN inside the live connection also stays.
  o = Run(client_frame(1, client_syn(1, 100, 1)), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(backend_index(o.frame), 1);
  // New flows avoid it.
  std::map<int, int> seen;
  for (int i = 0; i < 20; ++i) {
    o = Run(client_frame(3, client_syn(3, static_cast<uint16_t>(200 + i), 1)), kClientSide, 4);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    ++seen[backend_index(o.frame)];
  }
  EXPECT_EQ(seen.count(1), 0u);
  EXPECT_EQ(seen[0], 10);
  EXPECT_EQ(seen[2], 10);

  // Gone entirely (not even serving): a SYN on its live tuple is scheduled afresh.
  pool_ = make_pool({0, 2});
  o = Run(client_frame(1, client_syn(1, 100, 9)), kClientSide, 5);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_NE(backend_index(o.frame), 1);
  EXPECT_EQ(C().flows_reused.get(), 1u);
  EXPECT_EQ(BC(1).flows_active.get(), 0u);
  EXPECT_EQ(State(1, 100), TcpState::kSynSent);
}

TEST_F(ProcessorTest, PendingSynMovesWhenItsBackendStopsTakingFlows) {
  for (bool draining : {false, true}) {
    SCOPED_TRACE(draining ? "draining" : "removed");
    Restart();
    pool_ = make_pool({0, 1, 2});
    const Seg syn = client_syn(0, 404, 1);
    ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1), kBackendSide));
    pool_ = draining ? make_pool({1, 2}, {0}) : make_pool({1, 2});
    // Non-SYN segments of the pending handshake still go to a draining backend.
    if (draining) {
      const Out o = Run(client_frame(0, client_seg(0, 404, tf::kAck, 2, 0)), kClientSide, 2);
      ASSERT_TRUE(IsTx(o, kBackendSide));
      EXPECT_EQ(backend_index(o.frame), 0);
    }
    // The retransmitted SYN moves, as nothing is established yet.
    const Out o = Run(client_frame(0, syn), kClientSide, 2);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    EXPECT_NE(backend_index(o.frame), 0);
    EXPECT_TRUE(FramesEqual(to_backend(backend_index(o.frame), syn), o.frame));
    EXPECT_EQ(BC(0).flows_active.get(), 0u);
    EXPECT_EQ(C().flows_active.get(), 1u);
    EXPECT_EQ(C().retries.get(), 1u);
    EXPECT_EQ(State(0, 404), TcpState::kSynSent);
  }
  // No backend left at all: the SYN is answered with an RST.
  Restart();
  pool_ = make_pool({0});
  const Seg syn = client_syn(0, 405, 1);
  ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1), kBackendSide));
  pool_ = make_pool({}, {0});
  const Out o = Run(client_frame(0, syn), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(rst_to_client(0, 405, 0, 2, tf::kRst | tf::kAck), o.frame));
  EXPECT_EQ(C().flows_active.get(), 0u);
  EXPECT_EQ(proc().flows().size(), 0u);
}

// ---------------------------------------------------------------------------------------------
// ARP

Bytes arp_request_frame(const MacAddr& from_mac, uint32_t from_ip, uint32_t target,
                        const MacAddr& to_mac, std::optional<uint16_t> vlan = {}) {
  Arp a;
  a.op = 1;
  a.sha = from_mac;
  a.spa = from_ip;
  a.tpa = target;
  const test::Eth e = vlan ? test::eth_vlan(to_mac, from_mac, *vlan) : test::eth(to_mac, from_mac);
  return test::arp_frame(e, a);
}
Bytes arp_reply_frame(const MacAddr& from_mac, uint32_t from_ip, const MacAddr& to_mac,
                      uint32_t to_ip, std::optional<uint16_t> vlan = {}) {
  Arp a;
  a.op = 2;
  a.sha = from_mac;
  a.spa = from_ip;
  a.tha = to_mac;
  a.tpa = to_ip;
  const test::Eth e = vlan ? test::eth_vlan(to_mac, from_mac, *vlan) : test::eth(to_mac, from_mac);
  return test::arp_frame(e, a);
}

TEST_F(ProcessorTest, ArpRequestsForPortAndVipAreAnswered) {
  struct Case {
    std::string name;
    uint16_t port;
    uint32_t target;
    std::optional<uint16_t> vlan;
  };
  const std::vector<Case> cases = {
      {"client port address", kClientSide, kPortIp[0], {}},
      {"VIP", kClientSide, kVip, {}},
      {"tagged, VIP", kClientSide, kVip, 0x3005},
      {"backend port address", kBackendSide, kPortIp[1], {}},
  };
  uint64_t replies = 0;
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const MacAddr asker = client_mac(4);
    const uint32_t asker_ip = client_ip(4);
    const Bytes in = arp_request_frame(asker, asker_ip, k.target, core::kBroadcastMac, k.vlan);
    const Out o = Run(in, k.port, 1);
    ASSERT_TRUE(IsTx(o, k.port));
    ++replies;
    // The reply: to the asker, from the port's MAC, "target is at port MAC".
    const Bytes want = arp_reply_frame(kPortMac[k.port], k.target, asker, asker_ip, k.vlan);
    EXPECT_TRUE(FramesEqual(want, o.frame));
  }
  EXPECT_EQ(C().arp_replies.get(), replies);
}

TEST_F(ProcessorTest, ArpNotForUs) {
  // A request for another host, for the other port's address, or a gratuitous one.
  EXPECT_TRUE(IsDrop(
      Run(arp_request_frame(client_mac(0), client_ip(0), ip4(10, 10, 0, 7), core::kBroadcastMac),
          kClientSide, 1),
      DropReason::kArpNotForUs));
  EXPECT_TRUE(
      IsDrop(Run(arp_request_frame(client_mac(0), client_ip(0), kPortIp[1], core::kBroadcastMac),
                 kClientSide, 1),
             DropReason::kArpNotForUs));
  EXPECT_TRUE(
      IsDrop(Run(arp_request_frame(client_mac(0), client_ip(0), client_ip(0), core::kBroadcastMac),
                 kClientSide, 1),
             DropReason::kArpNotForUs));
  // A reply addressed to someone else (in a broadcast frame: one for their MAC is not_our_mac).
  EXPECT_TRUE(
      IsDrop(Run(arp_reply_frame(client_mac(0), client_ip(0), core::kBroadcastMac, client_ip(1)),
                 kClientSide, 1),
             DropReason::kArpNotForUs));
  // A probe (sender 0.0.0.0) or a multicast sender is not answered.
  EXPECT_TRUE(IsDrop(
      Run(arp_request_frame(client_mac(0), 0, kPortIp[0], core::kBroadcastMac), kClientSide, 1),
      DropReason::kArpMalformed));
  EXPECT_TRUE(IsDrop(
      Run(arp_request_frame(mac(0x01, 0, 0x5e, 0, 0, 1), client_ip(0), kVip, core::kBroadcastMac),
          kClientSide, 1),
      DropReason::kArpMalformed));
  EXPECT_EQ(C().arp_replies.get(), 0u);
  EXPECT_EQ(Drops(DropReason::kArpNotForUs), 4u);
}

// A VIP is answered for on the port whose subnet holds it, not on another port (a client-side
// VIP asked on the backend segment is someone else's question): by default. vip_arp = "all"
// answers every VIP on the port (a segment that treats a VIP outside it as on-link), "none"
// none (routed VIPs: the router sends to the port's address and needs no ARP for them).
TEST_F(ProcessorTest, ArpForAVipOnlyWhereItsSubnetIs) {
  const uint32_t routed = ip4(192, 0, 2, 80);  // in no port's subnet
  Pool::ServiceSpec web{kSvc, kVip, kVport, SchedulerKind::kRoundRobin, {}, {}};
  Pool::ServiceSpec far{ServiceId{6}, routed, kVport, SchedulerKind::kRoundRobin, {}, {}};
  pool_ = std::make_unique<Pool>(9, std::vector<Pool::ServiceSpec>{web, far});
  const auto ask = [&](uint16_t port, uint32_t target) {
    // From a host that is no next hop (a next hop's request is used to learn its MAC).
    return Run(arp_request_frame(mac(0x02, 0xaa, 0, 0, 0, 0x99), ip4(10, 20, 0, 99), target,
                                 core::kBroadcastMac),
               port, 1);
  };
  EXPECT_TRUE(IsTx(ask(kClientSide, kVip), kClientSide));
  EXPECT_TRUE(IsDrop(ask(kBackendSide, kVip), DropReason::kArpNotForUs));
  EXPECT_TRUE(IsDrop(ask(kClientSide, routed), DropReason::kArpNotForUs));
  EXPECT_TRUE(IsDrop(ask(kBackendSide, routed), DropReason::kArpNotForUs));
  // vip_arp = "all" on the backend port, "none" on the client port.
  cfg_.ports[kBackendSide].vip_arp = VipArp::kAll;
  cfg_.ports[kClientSide].vip_arp = VipArp::kNone;
  Restart();
  EXPECT_TRUE(IsTx(ask(kBackendSide, kVip), kBackendSide));
  EXPECT_TRUE(IsTx(ask(kBackendSide, routed), kBackendSide));
  EXPECT_TRUE(IsDrop(ask(kClientSide, kVip), DropReason::kArpNotForUs));
  // The port's own address is always answered.
  EXPECT_TRUE(IsTx(ask(kClientSide, kPortIp[0]), kClientSide));
}

TEST_F(ProcessorTest, ArpLearnsNextHops) {
  const MacAddr moved = mac(0x02, 0xbb, 0, 0, 0x99, 0x11);
  // A reply from backend 0 with a new MAC, on the backend port.
  Out o = Run(arp_reply_frame(moved, kBackendIp[0], kPortMac[1], kPortIp[1]), kBackendSide, 50);
  EXPECT_EQ(o.v.action, Action::kConsumed) << verdict_str(o.v);
  EXPECT_EQ(C().arp_learned.get(), 1u);
  ASSERT_TRUE(neighbors_->lookup(slot_[0]).has_value());
  EXPECT_EQ(*neighbors_->lookup(slot_[0]), moved);
  EXPECT_EQ(neighbors_->confirmed(slot_[0]), 5u);  // 50 ticks at 10 per second
  // New flows to backend 0 use it.
  const Seg syn = client_syn(0, 1, 1);
  o = Run(client_frame(0, syn), kClientSide, 51);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  Bytes want = to_backend(0, syn);
  moved.store(want.data());
  EXPECT_TRUE(FramesEqual(want, o.frame));

  // A request from a backend teaches too (and is answered).
  o = Run(arp_request_frame(kBackendMac[0], kBackendIp[0], kPortIp[1], core::kBroadcastMac),
          kBackendSide, 60);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(*neighbors_->lookup(slot_[0]), kBackendMac[0]);
  EXPECT_EQ(C().arp_learned.get(), 2u);

  // Not learned: an unknown address; a known address on the wrong port.
  o = Run(arp_reply_frame(moved, ip4(10, 20, 0, 99), kPortMac[1], kPortIp[1]), kBackendSide, 70);
  EXPECT_EQ(o.v.action, Action::kConsumed);
  o = Run(arp_reply_frame(moved, kBackendIp[1], kPortMac[0], kPortIp[0]), kClientSide, 70);
  EXPECT_EQ(o.v.action, Action::kConsumed);
  EXPECT_EQ(C().arp_learned.get(), 2u);
  EXPECT_EQ(*neighbors_->lookup(slot_[1]), kBackendMac[1]);

  // A gratuitous ARP from a next hop (a request for its own address) is used, not dropped.
  const MacAddr moved1 = mac(0x02, 0xbb, 0, 0, 0x99, 0x12);
  o = Run(arp_request_frame(moved1, kBackendIp[1], kBackendIp[1], core::kBroadcastMac),
          kBackendSide, 80);
  EXPECT_EQ(o.v.action, Action::kConsumed) << verdict_str(o.v);
  EXPECT_EQ(*neighbors_->lookup(slot_[1]), moved1);
  EXPECT_EQ(C().arp_learned.get(), 3u);
  EXPECT_EQ(C().arp_replies.get(), 1u);  // only the request for the port's address
}

// A next-hop slot no backend uses is retired (it stops matching ARP at once), then recycled for
// another next hop, which starts unresolved (add() clears the MAC again, against a worker that
// stored one while the slot was being retired).
TEST(NeighborTable, RetiredSlotIsRecycledClean) {
  NeighborTable t;
  const uint32_t a = ip4(10, 20, 0, 30);
  const uint32_t b = ip4(10, 20, 0, 31);
  const uint16_t s = t.add(a, 1);
  ASSERT_EQ(s, 0);
  EXPECT_TRUE(t.learn(a, 1, kBackendMac[0], 5));
  t.retire(s);
  EXPECT_FALSE(t.used(s));
  EXPECT_FALSE(t.lookup(s).has_value());
  EXPECT_FALSE(t.learn(a, 1, kBackendMac[0], 6));  // no longer a next hop
  EXPECT_EQ(t.in_use(), 0u);
  EXPECT_EQ(t.add(b, 1), 1) << "a retired slot is not handed out before recycle()";
  t.recycle(s);
  const uint16_t again = t.add(a, 1);
  EXPECT_EQ(again, s);
  EXPECT_TRUE(t.used(again));
  EXPECT_EQ(t.ip(again), a);
  EXPECT_EQ(t.port(again), 1);
  EXPECT_FALSE(t.lookup(again).has_value()) << "starts unresolved";
  EXPECT_EQ(t.confirmed(again), 0u);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.in_use(), 2u);
}

TEST_F(ProcessorTest, NeighborUnresolved) {
  neighbors_->invalidate(slot_[0]);
  const Seg syn = client_syn(0, 1, 1);
  EXPECT_TRUE(IsDrop(Run(client_frame(0, syn), kClientSide, 1), DropReason::kNeighborUnresolved));
  EXPECT_EQ(Drops(DropReason::kNeighborUnresolved), 1u);
  // The flow exists; once the MAC is learned, the client's retransmission goes through.
  EXPECT_EQ(State(0, 1), TcpState::kSynSent);
  EXPECT_EQ(
      Run(arp_reply_frame(kBackendMac[0], kBackendIp[0], kPortMac[1], kPortIp[1]), kBackendSide, 2)
          .v.action,
      Action::kConsumed);
  const Out o = Run(client_frame(0, syn), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, syn), o.frame));
}

// ---------------------------------------------------------------------------------------------
// ICMP

Bytes echo_frame(int c, uint32_t dst, const Icmp& m, std::optional<uint16_t> vlan = {},
                 uint8_t ttl = 55) {
  Ip ip;
  ip.src = client_ip(c);
  ip.dst = dst;
  ip.ttl = ttl;
  ip.id = 0x4242;
  const test::Eth e = vlan ? test::eth_vlan(kPortMac[0], client_mac(c), *vlan)
                           : test::eth(kPortMac[0], client_mac(c));
  return test::icmp_frame(e, ip, m);
}
Bytes echo_reply_frame(int c, uint32_t from, Icmp m, std::optional<uint16_t> vlan = {}) {
  Ip ip;
  ip.src = from;
  ip.dst = client_ip(c);
  ip.ttl = 64;
  ip.id = 0x4242;
  m.type = 0;
  const test::Eth e = vlan ? test::eth_vlan(client_mac(c), kPortMac[0], *vlan)
                           : test::eth(client_mac(c), kPortMac[0]);
  return test::icmp_frame(e, ip, m);
}

TEST_F(ProcessorTest, IcmpEchoIsAnswered) {
  Icmp m;
  m.id = 0x1234;
  m.seq = 7;
  m.payload = Bytes(56, 0);
  for (size_t i = 0; i < m.payload.size(); ++i) m.payload[i] = static_cast<uint8_t>(i * 7);
  struct Case {
    std::string name;
    uint32_t dst;
    std::optional<uint16_t> vlan;
  };
  for (const Case& k : std::vector<Case>{{"VIP", kVip, {}},
                                         {"port address", kPortIp[0], {}},
                                         {"other port's address", kPortIp[1], {}},
                                         {"tagged VIP", kVip, 0x0064}}) {
    SCOPED_TRACE(k.name);
    const Out o = Run(echo_frame(0, k.dst, m, k.vlan), kClientSide, 1);
    ASSERT_TRUE(IsTx(o, kClientSide));
    EXPECT_TRUE(FramesEqual(echo_reply_frame(0, k.dst, m, k.vlan), o.frame));
  }
  EXPECT_EQ(C().icmp_echo_replies.get(), 4u);
}

TEST_F(ProcessorTest, IcmpEchoReplyChecksumEdgeCases) {
  // Random echo requests: every reply's checksum is right (Run recomputes it from scratch). And
  // requests crafted so that the reply's checksum is 0x0000, or the request's is 0x0000/0xffff.
  std::mt19937 rng(8);
  auto check = [&](const Icmp& m) {
    const Out o = Run(echo_frame(1, kVip, m), kClientSide, 1);
    ASSERT_TRUE(IsTx(o, kClientSide));
    EXPECT_TRUE(FramesEqual(echo_reply_frame(1, kVip, m), o.frame));
  };
  for (int i = 0; i < 500; ++i) {
    Icmp m;
    m.id = static_cast<uint16_t>(rng());
    m.seq = static_cast<uint16_t>(rng());
    m.payload.resize(rng() % 64);
    for (uint8_t& x : m.payload) x = static_cast<uint8_t>(rng());
    ASSERT_NO_FATAL_FAILURE(check(m));
  }
  // Reply words: 0x0000 (type/code), csum, id, seq. Reply checksum 0x0000 <=> id + seq = 0xffff.
  Icmp m;
  m.id = 0xf000;
  m.seq = 0x0fff;
  ASSERT_NO_FATAL_FAILURE(check(m));
  // Request checksum 0x0000 <=> 0x0800 + id + seq = 0xffff.
  m.id = 0xf000;
  m.seq = 0x07ff;
  ASSERT_NO_FATAL_FAILURE(check(m));
  // An all-zero reply (id 0, seq 0, no payload): its only valid checksum is 0xffff.
  m.id = 0;
  m.seq = 0;
  ASSERT_NO_FATAL_FAILURE(check(m));
}

TEST_F(ProcessorTest, IcmpNotForUsOrUnsupported) {
  Icmp echo;
  echo.id = 1;
  EXPECT_TRUE(IsDrop(Run(echo_frame(0, ip4(10, 10, 0, 99), echo), kClientSide, 1),
                     DropReason::kIcmpNotForUs));
  Icmp reply = echo;
  reply.type = 0;
  EXPECT_TRUE(
      IsDrop(Run(echo_frame(0, kVip, reply), kClientSide, 1), DropReason::kIcmpUnsupported));
  // An error too short to quote an IPv4 header and 8 bytes (icmp_error.cc).
  Icmp unreach = echo;
  unreach.type = 3;
  unreach.code = 4;
  EXPECT_TRUE(
      IsDrop(Run(echo_frame(0, kVip, unreach), kClientSide, 1), DropReason::kIcmpMalformed));
  Icmp bad_code = echo;
  bad_code.code = 1;
  EXPECT_TRUE(
      IsDrop(Run(echo_frame(0, kVip, bad_code), kClientSide, 1), DropReason::kIcmpMalformed));
  EXPECT_EQ(C().icmp_echo_replies.get(), 0u);
}

// ---------------------------------------------------------------------------------------------
// 802.1Q

TEST_F(ProcessorTest, TaggedClientGetsTaggedReplies) {
  const uint16_t tci = 0xa064;  // PCP 5, VID 100
  const Seg syn = client_syn(2, 9999, 42);
  Out o = Run(client_frame(2, syn, tci), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, syn), o.frame));  // the backend side is untagged
  EXPECT_EQ(o.off, 128 + 4);
  const Flow* f = FindFlow(2, 9999);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->client_tagged, 1);
  EXPECT_EQ(f->client_vlan, tci);

  const Seg sa = backend_seg(0, 2, 9999, tf::kSyn | tf::kAck, 1, 43);
  o = Run(backend_frame(0, sa), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(2, sa, tci), o.frame));
  EXPECT_EQ(o.off, 128 - 4);  // the tag grew into the headroom

  // No headroom for the tag: refused rather than written out of the buffer.
  o = Run(backend_frame(0, sa), kBackendSide, 3, nullptr, /*headroom=*/0);
  EXPECT_TRUE(IsDrop(o, DropReason::kNoBuffer));
  o = Run(backend_frame(0, sa), kBackendSide, 3, nullptr, /*headroom=*/3);
  EXPECT_TRUE(IsDrop(o, DropReason::kNoBuffer));
  o = Run(backend_frame(0, sa), kBackendSide, 3, nullptr, /*headroom=*/4);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_EQ(o.off, 0);
  EXPECT_TRUE(FramesEqual(to_client(2, sa, tci), o.frame));
}

// ---------------------------------------------------------------------------------------------
// Capacity and conflicts

TEST_F(ProcessorTest, FlowTableFullRefusesNewFlowsOnly) {
  cfg_.flow_capacity = 4;
  cfg_.syn_policy = SynPolicy::kDropNew;
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(
        IsTx(Run(client_frame(0, client_syn(0, static_cast<uint16_t>(i + 1), 1)), kClientSide, 1),
             kBackendSide));
  EXPECT_TRUE(IsDrop(Run(client_frame(0, client_syn(0, 5, 1)), kClientSide, 2),
                     DropReason::kFlowTableFull));
  EXPECT_EQ(C().flows_refused.get(), 1u);
  EXPECT_EQ(Drops(DropReason::kFlowTableFull), 1u);
  EXPECT_EQ(C().flows_created.get(), 4u);
  EXPECT_EQ(C().flows_active.get(), 4u);
  // Existing flows are untouched.
  const Out o = Run(client_frame(0, client_seg(0, 1, tf::kAck, 2, 1)), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(backend_index(o.frame), 0);
  // Room again after one expires.
  ASSERT_EQ(proc().age(1 + cfg_.syn_timeout, 64), 3u);
  EXPECT_TRUE(IsTx(Run(client_frame(0, client_syn(0, 5, 1)), kClientSide, 60), kBackendSide));
}

// ---------------------------------------------------------------------------------------------
// SYN floods (docs/operations.md, "SYN floods")

// A spoofed SYN: a random-looking source that is none of lbd's or the pool's addresses.
Seg flood_syn(uint32_t i) {
  Seg s = client_syn(0, static_cast<uint16_t>(1024 + (i % 50000)), 7 * i + 1);
  s.ip.src = ip4(198, 18, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i));
  return s;
}

class SynFloodTest : public ProcessorTest {
 protected:
  static constexpr int kEstablished = 9;
  void EstablishSome(Tick now) {
    for (int i = 0; i < kEstablished; ++i)
      ASSERT_NO_FATAL_FAILURE(Establish(i, static_cast<uint16_t>(4000 + i), i % 3, now));
  }
  // Every established flow still goes to its backend, both ways.
  void ExpectEstablishedForward(Tick now) {
    for (int i = 0; i < kEstablished; ++i) {
      const auto cport = static_cast<uint16_t>(4000 + i);
      const Seg d = client_seg(i, cport, tf::kAck | tf::kPsh, 5000, 5001, {1, 2, 3});
      const Out o = Run(client_frame(i, d), kClientSide, now);
      ASSERT_TRUE(IsTx(o, kBackendSide)) << i;
      EXPECT_TRUE(FramesEqual(to_backend(i % 3, d), o.frame)) << i;
      const Seg r = backend_seg(i % 3, i, cport, tf::kAck, 5001, 5003);
      EXPECT_TRUE(IsTx(Run(backend_frame(i % 3, r), kBackendSide, now), kClientSide)) << i;
      EXPECT_EQ(State(i, cport), TcpState::kEstablished);
    }
  }
  const Flow* FloodFlow(uint32_t i) {
    const FlowTable& t = proc().flows();
    const Seg s = flood_syn(i);
    const FlowKey k{s.ip.src, kVip, s.tcp.sport, kVport};
    Dir d;
    const uint32_t idx = t.lookup(k, t.hash(k), d);
    return idx == FlowTable::kNoFlow ? nullptr : &t.at(idx);
  }
  // A handshake of client c on `port`, whichever backend takes it.
  ::testing::AssertionResult Handshake(int c, uint16_t port, Tick now) {
    const Out o = Run(client_frame(c, client_syn(c, port, 1)), kClientSide, now);
    if (!o.tx(kBackendSide)) return ::testing::AssertionFailure() << "SYN " << verdict_str(o.v);
    const int b = backend_index(o.frame);
    if (!Run(backend_frame(b, backend_seg(b, c, port, tf::kSyn | tf::kAck, 5, 2)), kBackendSide,
             now)
             .tx(kClientSide))
      return ::testing::AssertionFailure() << "SYN-ACK";
    if (!Run(client_frame(c, client_seg(c, port, tf::kAck, 2, 6)), kClientSide, now)
             .tx(kBackendSide))
      return ::testing::AssertionFailure() << "ACK";
    if (State(c, port) != TcpState::kEstablished) return ::testing::AssertionFailure() << "state";
    return ::testing::AssertionSuccess();
  }
  uint32_t Flood(uint32_t from, uint32_t n, Tick now, uint32_t* tx = nullptr) {
    uint32_t sent = 0;
    for (uint32_t i = from; i < from + n; ++i)
      sent += Run(client_frame(0, flood_syn(i)), kClientSide, now).tx(kBackendSide);
    if (tx) *tx = sent;
    return sent;
  }
};

TEST_F(SynFloodTest, EvictEmbryonicEvictsTheOldestAndNeverAnEstablishedFlow) {
  cfg_.syn_policy = SynPolicy::kEvictEmbryonic;
  EstablishSome(1);
  const uint32_t cap = cfg_.flow_capacity;  // 64
  EXPECT_EQ(Flood(0, 1000, 2), 1000u) << "every SYN goes out: the oldest embryonic makes room";
  EXPECT_EQ(proc().flows().size(), cap);
  EXPECT_EQ(proc().flows().embryonic(), cap - kEstablished);
  EXPECT_EQ(C().syn_evicted.get(), 1000 - (cap - kEstablished));
  EXPECT_EQ(C().flows_refused.get(), 0u);
  EXPECT_EQ(C().flows_created.get(), 1000u + kEstablished);
  EXPECT_EQ(C().flows_active.get(), cap);
  uint64_t per_backend = 0;
  for (int b = 0; b < kBackends; ++b) per_backend += BC(b).flows_active.get();
  EXPECT_EQ(per_backend, cap) << "evictions release their backend's count";
  ExpectEstablishedForward(3);
  // The survivors are the newest SYNs, the evicted ones the oldest.
  for (uint32_t i : {0u, 500u, 1000u - (cap - kEstablished) - 1})
    EXPECT_EQ(FloodFlow(i), nullptr) << i;
  for (uint32_t i : {1000u - (cap - kEstablished), 999u}) EXPECT_NE(FloodFlow(i), nullptr) << i;
  // A legitimate client still gets through, and its handshake completes.
  EXPECT_TRUE(Handshake(20, 4100, 4));
  EXPECT_EQ(C().syn_evicted.get(), 1000 - (cap - kEstablished) + 1);
  ExpectEstablishedForward(5);
}

TEST_F(SynFloodTest, DropNewRefusesOverTheBudgetAndKeepsEstablishedFlows) {
  cfg_.syn_policy = SynPolicy::kDropNew;
  cfg_.syn_budget = 20;
  EstablishSome(1);
  EXPECT_EQ(Flood(0, 500, 2), 20u);
  EXPECT_EQ(proc().flows().embryonic(), 20u);
  EXPECT_EQ(C().flows_refused.get(), 480u);
  EXPECT_EQ(Drops(DropReason::kSynBudgetFull), 480u);
  EXPECT_EQ(C().syn_evicted.get(), 0u);
  EXPECT_EQ(C().flows_active.get(), 20u + kEstablished);
  ExpectEstablishedForward(3);
  // A handshake that completes frees its budget slot; then one more SYN fits.
  const Seg s0 = flood_syn(0);
  const Flow* f0 = FloodFlow(0);
  ASSERT_NE(f0, nullptr);
  const int b =
      static_cast<int>(std::find(kBackendIp, kBackendIp + kBackends, f0->backend_ip) - kBackendIp);
  ASSERT_LT(b, kBackends);
  Seg sa = backend_seg(b, 0, s0.tcp.sport, tf::kSyn | tf::kAck, 9, s0.tcp.seq + 1);
  sa.ip.dst = s0.ip.src;
  EXPECT_TRUE(IsTx(Run(backend_frame(b, sa), kBackendSide, 3), kClientSide));
  EXPECT_EQ(proc().flows().embryonic(), 19u);
  EXPECT_EQ(f0->state, TcpState::kSynRecv);
  EXPECT_EQ(Flood(1000, 2, 3), 1u);
}

TEST_F(SynFloodTest, TableFullOfEstablishedFlowsRefusesWhateverThePolicy) {
  for (SynPolicy p : {SynPolicy::kEvictEmbryonic, SynPolicy::kDropNew}) {
    Restart();
    cfg_.syn_policy = p;
    cfg_.flow_capacity = 1024;
    // 1024 established flows (rehash would be simpler, but the handshake is the real path).
    for (int i = 0; i < 1024; ++i)
      ASSERT_TRUE(Handshake(i / 200, static_cast<uint16_t>(2000 + i % 200), 1)) << i;
    EXPECT_EQ(proc().flows().embryonic(), 0u);
    EXPECT_EQ(Flood(0, 100, 2), 0u);
    EXPECT_EQ(Drops(DropReason::kFlowTableFull), 100u);
    EXPECT_EQ(C().flows_refused.get(), 100u);
    EXPECT_EQ(C().syn_evicted.get(), 0u);
    EXPECT_EQ(C().flows_active.get(), 1024u);
  }
}

TEST_F(SynFloodTest, SynTimeoutShortensUnderPressure) {
  cfg_.syn_budget = 20;  // high-water mark 10
  cfg_.syn_timeout = 50;
  cfg_.syn_timeout_pressure = 5;
  EstablishSome(1);
  // Below the mark: SYN flows keep the normal timeout.
  EXPECT_EQ(Flood(0, 9, 10), 9u);
  EXPECT_EQ(proc().age(30, 1000), 0u);
  EXPECT_EQ(C().syn_expired_pressure.get(), 0u);
  // Past it: new ones get the short one, and older ones are aged by it from the oldest.
  EXPECT_EQ(Flood(100, 6, 30), 6u);  // 15 embryonic
  ASSERT_NE(FloodFlow(105), nullptr);
  EXPECT_EQ(FloodFlow(105)->expires, 30u + 5u);
  EXPECT_EQ(FloodFlow(100)->expires, 30u + 50u) << "the 10th: the mark was reached after it";
  EXPECT_EQ(proc().age(34, 1000), 9u) << "the 9 created at 10 (cutoff 29); not the 6 at 30";
  EXPECT_EQ(C().syn_expired_pressure.get(), 9u);
  EXPECT_EQ(proc().flows().embryonic(), 6u);
  // 6 < 10: no pressure any more; each waits for its own deadline: 30 + 5 for the five
  // created under pressure, 30 + 50 for the first.
  EXPECT_EQ(proc().age(35, 1000), 5u);
  EXPECT_EQ(C().syn_expired_pressure.get(), 9u);
  EXPECT_EQ(C().flows_active.get(), uint64_t{kEstablished} + 1);
  ExpectEstablishedForward(36);
}

// A pool published before its maglev table (PoolBuilder::build's defer_tables) holds the table
// of the backends before the change. Here it still names backend 2, which left service 5 and now
// serves another service under the same id: no SYN goes to it, the tuples of backends 0 and 1
// keep their backend, and the others are spread over those two (the same on any node).
TEST_F(ProcessorTest, MaglevTableOfAnEarlierPoolOnlyPicksTheServicesActiveBackends) {
  cfg_.flow_capacity = 1024;  // 400 SYNs, all embryonic
  Pool::ServiceSpec s{kSvc, kVip, kVport, SchedulerKind::kMaglev, {}, {}};
  const PoolBackend all[] = {pool_backend(0), pool_backend(1), pool_backend(2)};
  for (int b : {0, 1}) {
    s.backends.push_back(all[b]);
    s.serving.push_back(all[b].id);
  }
  s.maglev = std::make_shared<const MaglevTable>(maglev_backends(all), 257);
  Pool::ServiceSpec other{ServiceId{6}, kVip2,      kVport, SchedulerKind::kRoundRobin,
                          {all[2]},     {all[2].id}};
  pool_ = std::make_unique<Pool>(++generation_, std::vector<Pool::ServiceSpec>{s, other});
  std::map<uint32_t, int> to;  // backend address -> SYNs
  int moved = 0;
  for (uint16_t port = 1000; port < 1400; ++port) {
    const uint64_t h = maglev_flow_hash(client_ip(0), port, kVip, kVport);
    const uint32_t stale = s.maglev->lookup(h);
    const Out o = Run(client_frame(0, client_syn(0, port, 1)), kClientSide, 7);
    ASSERT_TRUE(o.tx(kBackendSide)) << port;
    ASSERT_GE(o.frame.size(), 34u);
    const uint32_t dst = test::get32(o.frame.data() + 30);
    ++to[dst];
    if (stale != kBackendId[2]) {
      EXPECT_EQ(dst, stale == kBackendId[0] ? kBackendIp[0] : kBackendIp[1]) << port;
    } else {
      ++moved;
      const uint32_t expect = kBackendIp[((h & 0xffffffffu) * 2) >> 32];
      EXPECT_EQ(dst, expect) << port;
    }
  }
  std::printf(
      "stale table: %d of 400 tuples named the departed backend and moved; backend 0 %d, "
      "backend 1 %d\n",
      moved, to[kBackendIp[0]], to[kBackendIp[1]]);
  EXPECT_EQ(to.count(kBackendIp[2]), 0u);
  EXPECT_GT(moved, 80);  // about a third of 400
  EXPECT_EQ(to[kBackendIp[0]] + to[kBackendIp[1]], 400);
}

// syn_flood_policy "stateless": a maglev service in tunnel mode.
class StatelessTest : public SynFloodTest {
 protected:
  StatelessTest() {
    forward_ = ForwardMode::kTunnel;
    syn_policy_ = SynPolicy::kStateless;
    miss_ = MissMode::kRehash;
    pool_ = make_pool({0, 1, 2}, {}, SchedulerKind::kMaglev);
  }
};

TEST_F(StatelessTest, OverTheNewFlowRateSynsGoWithoutAFlow) {
  cfg_.stateless_rate = 100;  // ticks_per_second 10: windows of 1 tick, 10 new flows each
  EXPECT_EQ(Flood(0, 30, 5), 30u) << "every SYN goes out";
  EXPECT_EQ(C().flows_created.get(), 10u);
  EXPECT_EQ(C().syn_stateless.get(), 20u);
  EXPECT_EQ(proc().flows().size(), 10u);
  EXPECT_EQ(Flood(100, 30, 6), 30u);  // the next window
  EXPECT_EQ(C().flows_created.get(), 20u);
  EXPECT_EQ(C().syn_stateless.get(), 40u);
  EXPECT_EQ(C().flows_refused.get(), 0u);
  // A stateless SYN goes where the flow's SYN would have: its retransmission, now under the
  // rate, makes a flow to the same backend.
  const Out first = Run(client_frame(0, flood_syn(29)), kClientSide, 7);
  ASSERT_TRUE(IsTx(first, kBackendSide));
  ASSERT_NE(FloodFlow(29), nullptr);
  EXPECT_EQ(C().syn_stateless.get(), 40u);
}

TEST_F(StatelessTest, AFullTableForwardsSynsAndTheirAcksEvictTheOldestEmbryonic) {
  EXPECT_EQ(Flood(0, 64, 2), 64u);
  ASSERT_EQ(proc().flows().size(), 64u);
  EXPECT_EQ(proc().flows().embryonic(), 64u) << "tunnel flows wait for the client's ACK";
  EXPECT_EQ(Flood(64, 10, 2), 10u);
  EXPECT_EQ(C().syn_stateless.get(), 10u);
  EXPECT_EQ(C().flows_refused.get(), 0u);
  EXPECT_EQ(FloodFlow(70), nullptr);
  // The client of SYN 70 answers: its ACK is rehashed to the same backend and takes the place
  // of the oldest embryonic flow.
  const Out syn = Run(client_frame(0, flood_syn(70)), kClientSide, 3);
  ASSERT_TRUE(IsTx(syn, kBackendSide));
  EXPECT_EQ(C().syn_stateless.get(), 11u);
  Seg a = flood_syn(70);
  a.tcp.flags = tf::kAck;
  a.tcp.seq += 1;
  a.tcp.ack = 1;
  const Out ack = Run(client_frame(0, a), kClientSide, 3);
  ASSERT_TRUE(IsTx(ack, kBackendSide));
  ASSERT_GE(ack.frame.size(), 34u);
  ASSERT_GE(syn.frame.size(), 34u);
  // The same backend: the same destination MAC and outer destination address.
  EXPECT_TRUE(std::equal(ack.frame.begin(), ack.frame.begin() + 6, syn.frame.begin()));
  EXPECT_TRUE(std::equal(ack.frame.begin() + 30, ack.frame.begin() + 34, syn.frame.begin() + 30));
  EXPECT_EQ(C().flows_rehashed.get(), 1u);
  EXPECT_EQ(C().syn_evicted.get(), 1u);
  EXPECT_EQ(FloodFlow(0), nullptr) << "the oldest embryonic flow made room";
  ASSERT_NE(FloodFlow(70), nullptr);
  EXPECT_EQ(FloodFlow(70)->state, TcpState::kEstablished);
  EXPECT_EQ(proc().flows().size(), 64u);
}

TEST_F(ProcessorTest, FlowConflictBetweenTwoVips) {
  // Two services balancing to the same backend addresses: the same client ip:port to both
  // VIPs would share one backend-side tuple.
  Pool::ServiceSpec a{kSvc, kVip, kVport, SchedulerKind::kRoundRobin, {}, {}};
  Pool::ServiceSpec b{ServiceId{6}, kVip2, kVport, SchedulerKind::kRoundRobin, {}, {}};
  for (int i = 0; i < kBackends; ++i) {
    a.backends.push_back(pool_backend(i));
    PoolBackend pb = pool_backend(i);
    pb.id = static_cast<BackendId>(10 + i);
    b.backends.push_back(pb);
  }
  pool_ = std::make_unique<Pool>(7, std::vector<Pool::ServiceSpec>{a, b});
  ASSERT_TRUE(IsTx(Run(client_frame(0, client_syn(0, 5000, 1)), kClientSide, 1), kBackendSide));
  Seg s = client_syn(0, 5000, 1);
  s.ip.dst = kVip2;
  EXPECT_TRUE(IsDrop(Run(client_frame(0, s), kClientSide, 1), DropReason::kFlowConflict));
  EXPECT_EQ(C().flows_refused.get(), 1u);
  EXPECT_EQ(C().flows_active.get(), 1u);
  // Another client port is fine (and the second VIP's cursor has moved on).
  s.tcp.sport = 5001;
  const Out o = Run(client_frame(0, s), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(backend_index(o.frame), 1);
  EXPECT_NE(FindFlow(0, 5001, nullptr, kVip2), nullptr);
}

// ---------------------------------------------------------------------------------------------
// Several workers

TEST_F(ProcessorTest, TwoWorkersHandOffToTheOwner) {
  cfg_.workers = 2;
  cfg_.worker = 0;
  Processor w0(cfg_, *neighbors_);
  cfg_.worker = 1;
  Processor w1(cfg_, *neighbors_);
  Processor* w[2] = {&w0, &w1};
  std::map<int, int> owners;
  std::map<int, int> next_backend;  // each worker schedules on its own
  for (uint16_t cport = 1000; cport < 1040; ++cport) {
    SCOPED_TRACE("client port " + std::to_string(cport));
    const int c = cport % 3;
    const uint16_t owner = flow_owner(client_ip(c), cport, 2, cfg_.reta_size);
    ++owners[owner];
    Processor& mine = *w[owner];
    Processor& other = *w[1 - owner];

    // The SYN at the wrong worker: handed over untouched, no flow created there.
    const Seg syn = client_syn(c, cport, cport);
    const Bytes syn_in = client_frame(c, syn);
    Out o = Run(syn_in, kClientSide, 1, &other);
    ASSERT_EQ(o.v.action, Action::kHandoff) << verdict_str(o.v);
    EXPECT_EQ(o.v.worker, owner);
    EXPECT_EQ(o.frame, syn_in);
    EXPECT_EQ(o.off, 128);
    // At the owner: scheduled there.
    o = Run(syn_in, kClientSide, 1, &mine);
    ASSERT_TRUE(IsTx(o, kBackendSide));
    const int b = next_backend[owner]++ % kBackends;
    EXPECT_TRUE(FramesEqual(to_backend(b, syn), o.frame));

    // The backend's reply: same owner, from the other direction.
    const Seg sa = backend_seg(b, c, cport, tf::kSyn | tf::kAck, 1, cport + 1u);
    const Bytes sa_in = backend_frame(b, sa);
    o = Run(sa_in, kBackendSide, 2, &other);
    ASSERT_EQ(o.v.action, Action::kHandoff) << verdict_str(o.v);
    EXPECT_EQ(o.v.worker, owner);
    EXPECT_EQ(o.frame, sa_in);
    o = Run(sa_in, kBackendSide, 2, &mine);
    ASSERT_TRUE(IsTx(o, kClientSide));
    EXPECT_TRUE(FramesEqual(to_client(c, sa), o.frame));
  }
  // Both workers own some, and each holds exactly its own flows.
  EXPECT_GT(owners[0], 5);
  EXPECT_GT(owners[1], 5);
  EXPECT_EQ(w0.flows().size(), static_cast<uint32_t>(owners[0]));
  EXPECT_EQ(w1.flows().size(), static_cast<uint32_t>(owners[1]));
  EXPECT_EQ(w0.counters().flows_created.get() + w1.counters().flows_created.get(), 40u);
  // ARP and ICMP are answered by whichever worker gets them.
  Icmp m;
  m.id = 5;
  EXPECT_TRUE(IsTx(Run(echo_frame(0, kVip, m), kClientSide, 3, &w0), kClientSide));
  EXPECT_TRUE(IsTx(Run(echo_frame(0, kVip, m), kClientSide, 3, &w1), kClientSide));
}

// An RST from client c's address:cport to backend b (what a backend of a reset flow gets).
Bytes rst_to_backend(int b, int c, uint16_t cport, uint32_t seq) {
  return rst_frame(test::eth(kBackendMac[b], kPortMac[kBackendSide]), client_ip(c), kBackendIp[b],
                   cport, kBackendTcpPort, seq, 0, tf::kRst);
}

// A client-side router's frag-needed (MTU 1400) to the VIP, quoting the segment lbd sent client
// c on flow cport (VIP:vport -> client): what a router past lbd sends about a response.
Bytes router_error_about_response(int c, uint16_t cport) {
  Seg s = backend_seg(0, c, cport, tf::kAck | tf::kPsh, 5001, 11, Bytes(20, 2));
  s.ip.src = kVip;
  s.tcp.sport = kVport;
  const Bytes orig = test::ipv4_packet(s.ip, 6, test::tcp_segment(s.ip, s.tcp));
  Ip ip;
  ip.src = ip4(10, 10, 0, 254);
  ip.dst = kVip;
  ip.ttl = 64;
  Icmp m;
  m.type = 3;
  m.code = 4;
  m.seq = 1400;
  m.payload.assign(orig.begin(), orig.begin() + 48);
  return test::icmp_frame(test::eth(kPortMac[kClientSide], mac(0x02, 0xaa, 0, 0, 0, 0xfe)), ip, m);
}

TEST_F(ProcessorTest, FlowsOfAStoppedBackendAreReset) {
  for (int c = 0; c < 3; ++c) ASSERT_NO_FATAL_FAILURE(Establish(c, 10, c, 1));
  // Client c's next sequence number is 1000 c + 11, the backend's 5001.
  // Backend 0 is gone (not even draining), the client speaks first: its segment is answered
  // with an RST from the VIP (RFC 793: SEQ = SEG.ACK).
  pool_ = make_pool({1, 2});
  const Seg up = client_seg(0, 10, tf::kAck | tf::kPsh, 11, 5001, Bytes(20, 1));
  Out o = Run(client_frame(0, up), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(rst_to_client(0, 10, 5001, 0, tf::kRst), o.frame));
  EXPECT_EQ(C().flows_reset.get(), 1u);
  EXPECT_EQ(C().rst_backend_stopped.get(), 1u);
  ASSERT_NE(FindFlow(0, 10), nullptr);
  EXPECT_EQ(State(0, 10), TcpState::kReset);  // kept to answer late segments
  EXPECT_EQ(BC(0).flows_active.get(), 0u);
  EXPECT_EQ(BC(0).packets_in.get(), 2u);  // SYN and ACK only
  EXPECT_EQ(C().flows_active.get(), 2u);
  // Its retransmission gets another RST, not a miss.
  o = Run(client_frame(0, up), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(rst_to_client(0, 10, 5001, 0, tf::kRst), o.frame));
  // The backend, still up but no longer in the pool, sends its response: it gets an RST from
  // the client's address (SEQ = SEG.ACK), so its socket closes too.
  const Seg late = backend_seg(0, 0, 10, tf::kAck | tf::kPsh, 5001, 11, Bytes(30, 2));
  o = Run(backend_frame(0, late), kBackendSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(rst_to_backend(0, 0, 10, 11), o.frame));
  EXPECT_EQ(C().rst_backend_stopped.get(), 3u);
  EXPECT_EQ(C().flows_reset.get(), 1u);
  EXPECT_EQ(BC(0).packets_out.get(), 1u);  // the SYN-ACK only

  // Backend 1 stops and speaks first (a response in flight): its segment becomes the client's
  // RST, from the VIP, with the backend's SEQ (the client's RCV.NXT) and ACK.
  pool_ = make_pool({2});
  const Seg resp = backend_seg(1, 1, 10, tf::kAck | tf::kPsh, 5001, 1011, Bytes(40, 3));
  o = Run(backend_frame(1, resp), kBackendSide, 4);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(rst_to_client(1, 10, 5001, 1011, tf::kRst | tf::kAck), o.frame));
  EXPECT_EQ(State(1, 10), TcpState::kReset);
  EXPECT_EQ(C().flows_reset.get(), 2u);
  EXPECT_EQ(BC(1).flows_active.get(), 0u);
  EXPECT_EQ(BC(1).packets_out.get(), 1u);  // the RST is not the backend's traffic
  // The client's own next segment (a retransmission, or a challenge ACK had the RST not been
  // exact) gets its exact RST; the backend's retransmission gets one from the client.
  const Seg c1 = client_seg(1, 10, tf::kAck, 1011, 5001);
  o = Run(client_frame(1, c1), kClientSide, 5);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(rst_to_client(1, 10, 5001, 0, tf::kRst), o.frame));
  o = Run(backend_frame(1, resp), kBackendSide, 5);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(rst_to_backend(1, 1, 10, 1011), o.frame));
  // Never an RST for an RST.
  EXPECT_TRUE(IsDrop(Run(client_frame(1, client_seg(1, 10, tf::kRst, 1011, 0)), kClientSide, 5),
                     DropReason::kBackendStopped));

  // The whole service is removed: the client's own RST is not answered with another.
  pool_ = std::make_unique<Pool>(50, std::vector<Pool::ServiceSpec>{});
  EXPECT_TRUE(IsDrop(Run(client_frame(2, client_seg(2, 10, tf::kRst, 11, 0)), kClientSide, 5),
                     DropReason::kBackendStopped));
  EXPECT_EQ(C().flows_reset.get(), 3u);
  EXPECT_EQ(C().flows_active.get(), 0u);
  EXPECT_EQ(proc().flows().size(), 3u);  // three reset records

  // They go after tcp_closed_timeout (30 ticks) without counting as expired flows.
  proc().age(5 + 31, 64);
  EXPECT_EQ(proc().flows().size(), 0u);
  EXPECT_EQ(C().flows_expired.get(), 0u);
  EXPECT_EQ(C().flows_created.get() - C().flows_reset.get(), C().flows_active.get());
}

// A reset flow (its backend left the pool) names no backend (kNoBackend) and may have lost its
// next hop: an ICMP error quoting it is about a connection that is over, and is dropped. It
// used to be relayed to the backend: its counters indexed by kNoBackend, a write far outside
// the counters (a crash), and its frame sent through a next-hop slot that may have been reused.
TEST_F(ProcessorTest, IcmpErrorAboutAResetFlowIsDropped) {
  ASSERT_NO_FATAL_FAILURE(Establish(0, 10, 0, 1));
  // The error about a live flow goes to its backend.
  Out o = Run(router_error_about_response(0, 10), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(C().icmp_errors_translated.get(), 1u);
  pool_ = make_pool({1, 2});
  o = Run(client_frame(0, client_seg(0, 10, tf::kAck, 11, 5001)), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kClientSide));  // the RST
  ASSERT_EQ(State(0, 10), TcpState::kReset);
  o = Run(router_error_about_response(0, 10), kClientSide, 4);
  EXPECT_EQ(o.v.action, Action::kDrop);
  EXPECT_EQ(Drops(DropReason::kIcmpErrorNoFlow), 1u);
  EXPECT_EQ(C().icmp_errors_translated.get(), 1u);
}
TEST_F(ProcessorTest, ResetFlowTupleTakesANewSyn) {
  ASSERT_NO_FATAL_FAILURE(Establish(0, 10, 0, 1));
  pool_ = make_pool({1, 2});
  const Seg up = client_seg(0, 10, tf::kAck, 11, 5001);
  ASSERT_TRUE(IsTx(Run(client_frame(0, up), kClientSide, 2), kClientSide));
  // The client reconnects from the same port: scheduled afresh (rr: backend 2), not counted as
  // a reuse.
  const Seg syn = client_syn(0, 10, 777);
  const Out o = Run(client_frame(0, syn), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(2, syn), o.frame));
  EXPECT_EQ(State(0, 10), TcpState::kSynSent);
  EXPECT_EQ(C().flows_reused.get(), 0u);
  EXPECT_EQ(C().flows_active.get(), 1u);
  EXPECT_EQ(BC(2).flows_active.get(), 1u);
}

TEST_F(ProcessorTest, ResetOfATaggedClientCarriesItsTag) {
  const uint16_t tci = 0xa064;
  const Seg syn = client_syn(2, 9999, 42);
  ASSERT_TRUE(IsTx(Run(client_frame(2, syn, tci), kClientSide, 1), kBackendSide));
  const Seg sa = backend_seg(0, 2, 9999, tf::kSyn | tf::kAck, 1, 43);
  ASSERT_TRUE(IsTx(Run(backend_frame(0, sa), kBackendSide, 1), kClientSide));
  ASSERT_TRUE(IsTx(Run(client_frame(2, client_seg(2, 9999, tf::kAck, 43, 2), tci), kClientSide, 1),
                   kBackendSide));
  pool_ = make_pool({1, 2});
  const Seg fin = backend_seg(0, 2, 9999, tf::kFin | tf::kAck, 2, 43);
  const Out o = Run(backend_frame(0, fin), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(rst_to_client(2, 9999, 2, 43, tf::kRst | tf::kAck, tci), o.frame));
  EXPECT_EQ(o.off, 128 - 4);
}

TEST_F(ProcessorTest, SynAckFromAStoppedBackendMovesTheHandshake) {
  const Seg syn = client_syn(0, 10, 100);
  ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1), kBackendSide));
  pool_ = make_pool({1, 2});
  // Backend 0 answers after it was removed: the client has seen nothing, so its saved SYN goes
  // to the next backend instead (rr: backend 2), in the SYN-ACK's buffer, as on a refusal.
  const Seg sa = backend_seg(0, 0, 10, tf::kSyn | tf::kAck, 5000, 101);
  const Out o = Run(backend_frame(0, sa), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(2, syn), o.frame));
  EXPECT_EQ(C().retries.get(), 1u);
  EXPECT_EQ(C().flows_reset.get(), 0u);
  EXPECT_EQ(BC(0).flows_active.get(), 0u);
  EXPECT_EQ(BC(2).flows_active.get(), 1u);
  EXPECT_EQ(State(0, 10), TcpState::kSynSent);
}

// With several workers, a client segment of a flow whose service has since been removed must
// still reach the flow's owner (which resets it, as in FlowsOfAStoppedBackendAreReset): the pool
// remembers removed services' addresses (Pool::was_service), so the segment is not mistaken
// for a backend's reply owned by whoever owns (VIP, vport).
TEST_F(ProcessorTest, RemovedServiceSegmentGoesToTheFlowOwner) {
  cfg_.workers = 2;
  const uint16_t vip_owner = flow_owner(kVip, kVport, 2, cfg_.reta_size);
  uint16_t cport = 1;
  while (flow_owner(client_ip(0), cport, 2, cfg_.reta_size) == vip_owner) ++cport;
  const uint16_t owner = static_cast<uint16_t>(1 - vip_owner);
  cfg_.worker = owner;
  Processor w_owner(cfg_, *neighbors_);
  cfg_.worker = vip_owner;
  Processor w_other(cfg_, *neighbors_);
  ASSERT_TRUE(
      IsTx(Run(client_frame(0, client_syn(0, cport, 1)), kClientSide, 1, &w_owner), kBackendSide));
  pool_ = std::make_unique<Pool>(50, std::vector<Pool::ServiceSpec>{},
                                 std::vector<Pool::Address>{{kVip, kVport}});
  const Out o =
      Run(client_frame(0, client_seg(0, cport, tf::kAck, 2, 1)), kClientSide, 2, &w_other);
  EXPECT_EQ(o.v.action, Action::kHandoff) << verdict_str(o.v);
  EXPECT_EQ(o.v.worker, owner);
}

// ---------------------------------------------------------------------------------------------
// A strict edge: frames for other hosts, spoofed sources, group source MACs

// Client c's segment in a frame with the given Ethernet addresses.
Bytes framed(const test::Eth& e, const Seg& s) {
  return test::tcp_frame(e, s.ip, s.tcp);
}

TEST_F(ProcessorTest, FramesForOtherMacsAreDroppedAndCounted) {
  // A port in promiscuous mode also receives frames for other hosts: none may be balanced,
  // answered or learned from. Group addresses carry ARP only.
  const MacAddr other = mac(0x02, 0xdd, 0, 0, 0, 1);
  const MacAddr group = mac(0x01, 0x00, 0x5e, 0x00, 0x00, 0x12);
  const MacAddr moved = mac(0x02, 0xbb, 0, 0, 0x99, 0x11);
  const Seg syn = client_syn(0, 1000, 7);
  Icmp echo;
  echo.id = 3;
  Ip echo_ip;
  echo_ip.src = client_ip(0);
  echo_ip.dst = kVip;
  Bytes bad_csum = framed(test::eth(other, client_mac(0)), syn);
  bad_csum[14 + 10] ^= 0x5a;
  Bytes bad_csum_bcast = framed(test::eth(core::kBroadcastMac, client_mac(0)), syn);
  bad_csum_bcast[14 + 10] ^= 0x5a;
  test::Eth v6 = test::eth(mac(0x33, 0x33, 0, 0, 0, 1), client_mac(0));
  v6.type = 0x86dd;
  struct Case {
    std::string name;
    Bytes frame;
    uint16_t port;
    DropReason want;
  };
  const std::vector<Case> cases = {
      {"SYN to another host's MAC", framed(test::eth(other, client_mac(0)), syn), kClientSide,
       DropReason::kNotOurMac},
      {"SYN to the other port's MAC", framed(test::eth(kPortMac[1], client_mac(0)), syn),
       kClientSide, DropReason::kNotOurMac},
      {"tagged SYN to another host's MAC", framed(test::eth_vlan(other, client_mac(0), 5), syn),
       kClientSide, DropReason::kNotOurMac},
      {"SYN to broadcast", framed(test::eth(core::kBroadcastMac, client_mac(0)), syn), kClientSide,
       DropReason::kNotOurMac},
      {"SYN to a multicast MAC", framed(test::eth(group, client_mac(0)), syn), kClientSide,
       DropReason::kNotOurMac},
      {"echo request to the VIP, broadcast",
       test::icmp_frame(test::eth(core::kBroadcastMac, client_mac(0)), echo_ip, echo), kClientSide,
       DropReason::kNotOurMac},
      {"ARP request for the VIP to another host's MAC",
       arp_request_frame(client_mac(0), client_ip(0), kVip, other), kClientSide,
       DropReason::kNotOurMac},
      {"ARP reply of a backend to another host's MAC",
       arp_reply_frame(moved, kBackendIp[0], other, kPortIp[1]), kBackendSide,
       DropReason::kNotOurMac},
      {"bad IPv4 checksum, another host's MAC", bad_csum, kClientSide, DropReason::kNotOurMac},
      // Malformed frames to a group address keep their own reason.
      {"bad IPv4 checksum, broadcast", bad_csum_bcast, kClientSide, DropReason::kIpChecksum},
      {"IPv6 to a multicast MAC", test::ethernet(v6, 0x86dd, Bytes(40, 0)), kClientSide,
       DropReason::kUnsupportedEthertype},
      {"10-byte runt", Bytes(10, 0x02), kClientSide, DropReason::kTruncated},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    EXPECT_TRUE(IsDrop(Run(k.frame, k.port, 1), k.want));
  }
  EXPECT_EQ(Drops(DropReason::kNotOurMac), 9u);
  EXPECT_EQ(Drops(DropReason::kIpChecksum), 1u);
  EXPECT_EQ(Drops(DropReason::kUnsupportedEthertype), 1u);
  EXPECT_EQ(Drops(DropReason::kTruncated), 1u);
  EXPECT_EQ(C().flows_created.get(), 0u);
  EXPECT_EQ(C().arp_replies.get(), 0u);
  EXPECT_EQ(C().arp_learned.get(), 0u);
  EXPECT_EQ(C().icmp_echo_replies.get(), 0u);
  EXPECT_EQ(*neighbors_->lookup(slot_[0]), kBackendMac[0]);  // the MAC did not move
}

TEST_F(ProcessorTest, ArpIsAnsweredOnGroupAndOwnMacs) {
  const MacAddr group = mac(0x01, 0x00, 0x5e, 0x00, 0x00, 0x01);
  for (const MacAddr& to : {core::kBroadcastMac, group, kPortMac[0]}) {
    SCOPED_TRACE(test::mac_str(to));
    const Out o = Run(arp_request_frame(client_mac(1), client_ip(1), kVip, to), kClientSide, 1);
    ASSERT_TRUE(IsTx(o, kClientSide));
    EXPECT_TRUE(
        FramesEqual(arp_reply_frame(kPortMac[0], kVip, client_mac(1), client_ip(1)), o.frame));
  }
  EXPECT_EQ(C().arp_replies.get(), 3u);
  EXPECT_EQ(Drops(DropReason::kNotOurMac), 0u);
}

TEST_F(ProcessorTest, EstablishedFlowIgnoresFramesForOtherMacs) {
  ASSERT_NO_FATAL_FAILURE(Establish(0, 2000, 0, 1));
  const MacAddr other = mac(0x02, 0xdd, 0, 0, 0, 2);
  const Seg data = client_seg(0, 2000, tf::kAck | tf::kPsh, 2001, 5001, Bytes(10, 7));
  const Seg rst = client_seg(0, 2000, tf::kRst, 2011, 0);
  const Seg reply = backend_seg(0, 0, 2000, tf::kAck, 5001, 2011, Bytes(5, 1));
  const uint64_t in = BC(0).packets_in.get();
  EXPECT_TRUE(IsDrop(Run(framed(test::eth(other, client_mac(0)), data), kClientSide, 2),
                     DropReason::kNotOurMac));
  EXPECT_TRUE(IsDrop(Run(framed(test::eth(other, client_mac(0)), rst), kClientSide, 2),
                     DropReason::kNotOurMac));
  EXPECT_TRUE(IsDrop(Run(framed(test::eth(other, kBackendMac[0]), reply), kBackendSide, 2),
                     DropReason::kNotOurMac));
  EXPECT_EQ(BC(0).packets_in.get(), in);
  EXPECT_EQ(BC(0).packets_out.get(), 1u);             // the SYN-ACK only
  EXPECT_EQ(State(0, 2000), TcpState::kEstablished);  // the RST did not close it
  // The same segments addressed to lbd go through.
  const Out o = Run(client_frame(0, data), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, data), o.frame));
  ASSERT_TRUE(IsTx(Run(backend_frame(0, reply), kBackendSide, 3), kClientSide));
  EXPECT_EQ(Drops(DropReason::kNotOurMac), 3u);
}

TEST_F(ProcessorTest, SpoofedSourcesAreDroppedAndCounted) {
  // Two services; with rst_on_miss a spoofed non-SYN would otherwise draw an RST.
  cfg_.rst_on_miss = true;
  Pool::ServiceSpec a{kSvc, kVip, kVport, SchedulerKind::kRoundRobin, {}, {}};
  Pool::ServiceSpec b{ServiceId{6}, kVip2, kVport, SchedulerKind::kRoundRobin, {}, {}};
  for (int i = 0; i < 2; ++i) a.backends.push_back(pool_backend(i));
  b.backends.push_back(pool_backend(2));
  pool_ = std::make_unique<Pool>(7, std::vector<Pool::ServiceSpec>{a, b});
  struct Case {
    std::string name;
    uint32_t src;
    uint16_t port;
    uint8_t flags;
  };
  const std::vector<Case> cases = {
      {"SYN from the VIP itself", kVip, kClientSide, tf::kSyn},
      {"SYN from another service's VIP", kVip2, kClientSide, tf::kSyn},
      {"SYN from the client port's address", kPortIp[0], kClientSide, tf::kSyn},
      {"SYN from the backend port's address", kPortIp[1], kClientSide, tf::kSyn},
      {"SYN from a backend of this service", kBackendIp[0], kClientSide, tf::kSyn},
      {"SYN from a backend of the other service", kBackendIp[2], kClientSide, tf::kSyn},
      {"SYN from a backend, on the backend port", kBackendIp[1], kBackendSide, tf::kSyn},
      {"ACK from the VIP (no RST back)", kVip, kClientSide, tf::kAck},
      {"RST|ACK from a backend", kBackendIp[0], kClientSide, tf::kRst | tf::kAck},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    Seg s = client_seg(0, 3000, k.flags, 1);
    s.ip.src = k.src;
    EXPECT_TRUE(IsDrop(Run(framed(test::eth(kPortMac[k.port], client_mac(0)), s), k.port, 1),
                       DropReason::kIpBadAddress));
  }
  Icmp echo;
  echo.id = 9;
  for (uint32_t src : {kVip, kPortIp[1]}) {
    Ip ip;
    ip.src = src;
    ip.dst = kVip;
    EXPECT_TRUE(IsDrop(
        Run(test::icmp_frame(test::eth(kPortMac[0], client_mac(0)), ip, echo), kClientSide, 1),
        DropReason::kIpBadAddress));
  }
  EXPECT_EQ(Drops(DropReason::kIpBadAddress), cases.size() + 2);
  EXPECT_EQ(C().flows_created.get(), 0u);
  EXPECT_EQ(C().rst_flow_miss.get(), 0u);
  EXPECT_EQ(C().icmp_echo_replies.get(), 0u);
  for (int i = 0; i < kBackends; ++i) EXPECT_EQ(BC(i).packets_in.get(), 0u);
  // A real client still gets through, to the first backend (no cursor moved).
  const Out o = Run(client_frame(1, client_syn(1, 3000, 1)), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(backend_index(o.frame), 0);
}

TEST_F(ProcessorTest, ABackendAddressIsRefusedAsAClientWhileInThePool) {
  // 10.20.0.13 is no backend yet: it may be a client. Once it is one, it may open no new flow,
  // but the flow it has keeps going (a flow-table hit is never checked: the check is on the
  // new-flow path only) until its tuple is reused.
  pool_ = make_pool({0, 1});
  Seg syn = client_syn(0, 4000, 1);
  syn.ip.src = kBackendIp[2];
  ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1), kBackendSide));
  pool_ = make_pool({0, 1, 2});
  Seg syn2 = syn;
  syn2.tcp.sport = 4001;
  EXPECT_TRUE(IsDrop(Run(client_frame(0, syn2), kClientSide, 2), DropReason::kIpBadAddress));
  Seg data = client_seg(0, 4000, tf::kAck, 2, 1);
  data.ip.src = kBackendIp[2];
  ASSERT_TRUE(IsTx(Run(client_frame(0, data), kClientSide, 3), kBackendSide));
  Seg rst = client_seg(0, 4000, tf::kRst, 2, 0);
  rst.ip.src = kBackendIp[2];
  ASSERT_TRUE(IsTx(Run(client_frame(0, rst), kClientSide, 4), kBackendSide));
  // The closed tuple reused by a new SYN: rescheduled, so checked like any new flow.
  EXPECT_TRUE(IsDrop(Run(client_frame(0, syn), kClientSide, 5), DropReason::kIpBadAddress));
  EXPECT_EQ(C().flows_reused.get(), 1u);
  EXPECT_EQ(C().flows_created.get(), 1u);
  EXPECT_EQ(Drops(DropReason::kIpBadAddress), 2u);
  EXPECT_EQ(proc().flows().size(), 0u);
}

// The same with two workers: the worker that does not own the flow misses it, and must hand the
// packet to the owner (which has the flow) before it judges the source as a new flow's. It
// used to drop it as a spoofed source, so that the half of the connection's packets RSS gave
// the other worker were lost.
TEST_F(ProcessorTest, ABackendAddressKeepsItsFlowWithTwoWorkers) {
  cfg_.workers = 2;
  cfg_.worker = 0;
  Processor w0(cfg_, *neighbors_);
  cfg_.worker = 1;
  Processor w1(cfg_, *neighbors_);
  Processor* w[2] = {&w0, &w1};
  pool_ = make_pool({0, 1});
  Seg syn = client_syn(0, 4000, 1);
  syn.ip.src = kBackendIp[2];
  const uint16_t owner = flow_owner(kBackendIp[2], 4000, 2, cfg_.reta_size);
  ASSERT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1, w[owner]), kBackendSide));
  pool_ = make_pool({0, 1, 2});
  Seg data = client_seg(0, 4000, tf::kAck, 2, 1);
  data.ip.src = kBackendIp[2];
  const Out o = Run(client_frame(0, data), kClientSide, 2, w[1 - owner]);
  EXPECT_EQ(o.v.action, Action::kHandoff) << verdict_str(o.v);
  EXPECT_EQ(o.v.worker, owner);
  ASSERT_TRUE(IsTx(Run(client_frame(0, data), kClientSide, 2, w[owner]), kBackendSide));
  // A new flow from it is still refused, by its owner.
  Seg syn2 = syn;
  syn2.tcp.sport = 4001;
  const uint16_t owner2 = flow_owner(kBackendIp[2], 4001, 2, cfg_.reta_size);
  EXPECT_TRUE(
      IsDrop(Run(client_frame(0, syn2), kClientSide, 3, w[owner2]), DropReason::kIpBadAddress));
  EXPECT_EQ(Run(client_frame(0, syn2), kClientSide, 3, w[1 - owner2]).v.action, Action::kHandoff);
}

// A full-NAT local address is lbd's own too: a client with it as its source would make a flow
// whose backend key (backend, local address, backend port, client port) shadows the full-NAT
// flow that uses that local port toward the same backend, and takes its replies.
TEST_F(ProcessorTest, AFullnatLocalAddressIsRefusedAsAClient) {
  cfg_.fullnat_addrs[0] = ip4(10, 20, 0, 50);
  cfg_.fullnat_addrs[1] = ip4(10, 20, 0, 51);
  cfg_.nfullnat = 2;
  for (const uint32_t local : {ip4(10, 20, 0, 50), ip4(10, 20, 0, 51)}) {
    Seg syn = client_syn(0, 2000, 1);
    syn.ip.src = local;
    EXPECT_TRUE(IsDrop(Run(client_frame(0, syn), kClientSide, 1), DropReason::kIpBadAddress));
  }
  EXPECT_EQ(proc().flows().size(), 0u);
  // Nor is an echo from it answered, as one from a port's address is not.
  Ip ip;
  ip.src = ip4(10, 20, 0, 50);
  ip.dst = kVip;
  ip.ttl = 55;
  Icmp m;
  m.id = 7;
  EXPECT_TRUE(
      IsDrop(Run(test::icmp_frame(test::eth(kPortMac[0], client_mac(0)), ip, m), kClientSide, 1),
             DropReason::kIpBadAddress));
  // Its neighbor in the same subnet is a client like any other.
  Seg syn = client_syn(0, 2000, 1);
  syn.ip.src = ip4(10, 20, 0, 52);
  EXPECT_TRUE(IsTx(Run(client_frame(0, syn), kClientSide, 1), kBackendSide));
}

TEST_F(ProcessorTest, SynFromAGroupSourceMacCreatesNoFlow) {
  // The backend's replies would go to the MAC the SYN came from.
  const Seg syn = client_syn(0, 5000, 1);
  EXPECT_TRUE(
      IsDrop(Run(framed(test::eth(kPortMac[0], mac(0x01, 0, 0x5e, 0, 0, 9)), syn), kClientSide, 1),
             DropReason::kEthBadSource));
  EXPECT_TRUE(IsDrop(Run(framed(test::eth(kPortMac[0], core::kBroadcastMac), syn), kClientSide, 1),
                     DropReason::kEthBadSource));
  EXPECT_EQ(C().flows_created.get(), 0u);
  // The scheduler did not move: the first real SYN goes to the first backend.
  const Out o = Run(client_frame(0, syn), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, syn), o.frame));
  pool_ = make_pool({});  // no backend: no RST to a group address either
  Seg syn2 = syn;
  syn2.tcp.sport = 5001;
  EXPECT_TRUE(
      IsDrop(Run(framed(test::eth(kPortMac[0], mac(0x03, 0, 0, 0, 0, 1)), syn2), kClientSide, 3),
             DropReason::kEthBadSource));
  EXPECT_EQ(Drops(DropReason::kEthBadSource), 3u);
  EXPECT_EQ(C().flows_created.get(), 1u);
  EXPECT_EQ(C().rst_no_backend.get(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Counters under mixed traffic, and robustness

TEST_F(ProcessorTest, CountersMatchTheTraffic) {
  cfg_.flow_capacity = 256;
  std::mt19937 rng(77);
  struct Conn {
    int c;
    uint16_t port;
    int b;
  };
  std::vector<Conn> open;
  uint64_t pkts_in[kBackends] = {}, bytes_in[kBackends] = {}, pkts_out[kBackends] = {},
           bytes_out[kBackends] = {};
  uint16_t next_port = 1;
  Tick now = 1;
  uint64_t created = 0, closed_by_rst = 0;
  for (int step = 0; step < 3000; ++step) {
    now += rng() % 3;
    const uint64_t what = rng() % 10;
    if (what < 3 || open.empty()) {
      const int c = static_cast<int>(rng() % 8);
      const uint16_t port = next_port++;
      const Seg syn = client_syn(c, port, 1);
      const Out o = Run(client_frame(c, syn), kClientSide, now);
      if (o.dropped(DropReason::kFlowTableFull)) continue;
      ASSERT_TRUE(IsTx(o, kBackendSide));
      const int b = backend_index(o.frame);
      ASSERT_GE(b, 0);
      ++pkts_in[b];
      bytes_in[b] += 60;
      ++created;
      open.push_back({c, port, b});
    } else if (what < 8) {
      const Conn& k = open[rng() % open.size()];
      const Bytes payload(rng() % 200, 3);
      if (rng() % 2) {
        const Out o = Run(client_frame(k.c, client_seg(k.c, k.port, tf::kAck, 1, 1, payload)),
                          kClientSide, now);
        ASSERT_TRUE(IsTx(o, kBackendSide));
        ASSERT_EQ(backend_index(o.frame), k.b);
        ++pkts_in[k.b];
        bytes_in[k.b] += 40 + payload.size();
      } else {
        const Out o =
            Run(backend_frame(k.b, backend_seg(k.b, k.c, k.port, tf::kAck, 1, 1, payload)),
                kBackendSide, now);
        ASSERT_TRUE(IsTx(o, kClientSide));
        ++pkts_out[k.b];
        bytes_out[k.b] += 40 + payload.size();
      }
    } else {
      // The client resets; the flow lingers closed until it expires.
      const size_t i = rng() % open.size();
      const Conn k = open[i];
      open.erase(open.begin() + static_cast<long>(i));
      const Out o =
          Run(client_frame(k.c, client_seg(k.c, k.port, tf::kRst, 1, 0)), kClientSide, now);
      ASSERT_TRUE(IsTx(o, kBackendSide));
      ++pkts_in[k.b];
      bytes_in[k.b] += 40;
      ++closed_by_rst;
    }
    if (step % 50 == 0) proc().age(now, 16);
    // Live flows never expire here: keep them fresh enough (syn_timeout 50 in SYN_SENT).
    if (step % 20 == 0) {
      for (const Conn& k : open)
        if (State(k.c, k.port) == TcpState::kSynSent) {
          const Out o =
              Run(client_frame(k.c, client_seg(k.c, k.port, tf::kAck, 1, 1)), kClientSide, now);
          ASSERT_TRUE(IsTx(o, kBackendSide));
          ++pkts_in[k.b];
          bytes_in[k.b] += 40;
        }
    }
  }
  uint64_t active = 0;
  for (int b = 0; b < kBackends; ++b) {
    SCOPED_TRACE("backend " + std::to_string(b));
    EXPECT_EQ(BC(b).packets_in.get(), pkts_in[b]);
    EXPECT_EQ(BC(b).bytes_in.get(), bytes_in[b]);
    EXPECT_EQ(BC(b).packets_out.get(), pkts_out[b]);
    EXPECT_EQ(BC(b).bytes_out.get(), bytes_out[b]);
    active += BC(b).flows_active.get();
  }
  EXPECT_EQ(C().flows_created.get(), created);
  EXPECT_EQ(C().flows_active.get(), proc().flows().size());
  EXPECT_EQ(active, proc().flows().size());
  EXPECT_EQ(C().flows_created.get() - C().flows_expired.get() - C().flows_reused.get() -
                C().flows_reset.get(),
            C().flows_active.get());
  EXPECT_GE(proc().flows().size(), open.size());
  EXPECT_GT(closed_by_rst, 100u);
  EXPECT_GT(C().flows_expired.get(), 50u);
}

TEST_F(ProcessorTest, MutatedFramesNeverCrash) {
  cfg_.rst_on_miss = true;
  cfg_.retry_syn_after = 5;
  check_checksums_ = false;  // a mutated input may carry a wrong TCP checksum through
  std::vector<std::pair<Bytes, uint16_t>> corpus;
  for (int c = 0; c < 3; ++c) {
    const uint16_t cport = static_cast<uint16_t>(100 + c);
    corpus.push_back({client_frame(c, client_syn(c, cport, 1)), kClientSide});
    corpus.push_back({client_frame(c, client_syn(c, cport, 1), 0x123), kClientSide});
    corpus.push_back(
        {client_frame(c, client_seg(c, cport, tf::kAck, 2, 2, Bytes(30, 1))), kClientSide});
    corpus.push_back(
        {client_frame(c, client_seg(c, cport, tf::kFin | tf::kAck, 2, 2)), kClientSide});
    for (int b = 0; b < kBackends; ++b) {
      corpus.push_back(
          {backend_frame(b, backend_seg(b, c, cport, tf::kSyn | tf::kAck, 1, 2)), kBackendSide});
      corpus.push_back(
          {backend_frame(b, backend_seg(b, c, cport, tf::kRst | tf::kAck, 0, 2)), kBackendSide});
      corpus.push_back(
          {backend_frame(b, backend_seg(b, c, cport, tf::kAck, 1, 2, Bytes(9, 9))), kBackendSide});
    }
    Icmp m;
    m.id = static_cast<uint16_t>(c);
    corpus.push_back({echo_frame(c, kVip, m), kClientSide});
    corpus.push_back(
        {arp_request_frame(client_mac(c), client_ip(c), kVip, core::kBroadcastMac), kClientSide});
  }
  corpus.push_back(
      {arp_reply_frame(kBackendMac[1], kBackendIp[1], kPortMac[1], kPortIp[1]), kBackendSide});
  std::mt19937_64 rng(99);
  Tick now = 0;
  size_t tx = 0;
  for (int i = 0; i < 100000; ++i) {
    now += rng() % 3;
    Bytes b = corpus[rng() % corpus.size()].first;
    const uint16_t port = corpus[rng() % corpus.size()].second;
    if (rng() % 4) {
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
      if (rng() % 2) {  // keep the IP checksum right so that the TCP logic runs
        const test::Decoded d = test::decode(b);
        if (d.type == 0x0800 && b.size() >= d.l3 + 20) {
          test::set16(b.data() + d.l3 + 10, 0);
          test::set16(b.data() + d.l3 + 10, test::ref_checksum(b.data() + d.l3, 20));
        }
      }
      if (rng() % 8 == 0) b.resize(rng() % (b.size() + 1));
    }
    const auto headroom = static_cast<uint16_t>(rng() % 3 == 0 ? rng() % 8 : 128);
    const size_t cap = rng() % 3 == 0 ? headroom + b.size() : 2048;
    const Out o = Run(b, port, now, nullptr, headroom, cap);
    if (HasFailure()) FAIL() << test::describe(b) << test::hexdump(b);
    if (o.v.action == Action::kTx) {
      ++tx;
      // The IPv4 header checksum is always right: the parser checked the input's.
      const test::Decoded d = test::decode(o.frame);
      if (d.type == 0x0800) {
        ASSERT_EQ(test::ref_sum(o.frame.data() + d.l3, 20), 0xffff) << test::describe(o.frame);
      }
      // And when the input's TCP/ICMP checksum was right, so is the output's (except for a
      // replayed SYN: the output is then a cached client SYN, which may have been mutated).
      const bool replay = (test::decode(b).flags & tf::kRst) && (d.flags & tf::kSyn);
      if (!replay && test::checksum_errors(b).empty()) {
        ASSERT_TRUE(test::ChecksumsOk(o.frame)) << "input:\n" << test::describe(b);
      }
    }
    ASSERT_NE(o.v.action, Action::kHandoff);
    if (i % 100 == 0) proc().age(now, 64);
  }
  EXPECT_GT(tx, 10000u);
  EXPECT_EQ(C().flows_active.get(), proc().flows().size());
}

// ---------------------------------------------------------------------------------------------
// forward = "tunnel" (IPIP, direct server return), and lbd as a router hop (TTL, ICMP errors)

// What lbd must send for client c's segment to backend b in tunnel mode: the client's IPv4
// packet byte for byte inside an outer header from the backend port's address, built here from
// scratch (TOS and id copied, DF copied, TTL 64, protocol 4).
Bytes tunnelled(int b, const Seg& s) {
  Ip outer;
  outer.src = kPortIp[kBackendSide];
  outer.dst = kBackendIp[b];
  outer.ttl = 64;
  outer.tos = s.ip.tos;
  outer.id = s.ip.id;
  outer.frag = s.ip.frag & 0x4000;
  outer.proto = 4;
  const Bytes inner = test::ipv4_packet(s.ip, 6, test::tcp_segment(s.ip, s.tcp));
  return test::ethernet(test::eth(kBackendMac[b], kPortMac[kBackendSide]), 0x0800,
                        test::ipv4_packet(outer, 4, inner), 0);
}

// An ICMP error as lbd sends it for segment `s` (its sender gets it from `port`'s address, at
// `to_mac`): fresh IPv4 header (id 0, no DF, TTL 64), the next-hop MTU in the low half of the
// second word, the quote the segment's IPv4 header and first 8 TCP bytes. Checksums from scratch.
Bytes icmp_error_frame(uint16_t port, const MacAddr& to_mac, const Seg& s, uint8_t type,
                       uint8_t code, uint16_t mtu) {
  const Bytes orig = test::ipv4_packet(s.ip, 6, test::tcp_segment(s.ip, s.tcp));
  Ip ip;
  ip.src = kPortIp[port];
  ip.dst = s.ip.src;
  ip.ttl = 64;
  ip.id = 0;
  ip.frag = 0;
  test::Icmp m;
  m.type = type;
  m.code = code;
  m.id = 0;
  m.seq = mtu;
  m.payload.assign(orig.begin(), orig.begin() + 28);
  return test::icmp_frame(test::eth(to_mac, kPortMac[port]), ip, m);
}

// The quote of an ICMP error frame (untagged) is the original header, checksum and all.
void ExpectQuoteOf(const Bytes& icmp_frame, const Seg& s) {
  ASSERT_EQ(icmp_frame.size(), 14u + 56u);
  const uint8_t* quote = icmp_frame.data() + 14 + 20 + 8;
  EXPECT_EQ(test::ref_sum(quote, 20), 0xffff) << "quoted IPv4 header checksum";
  EXPECT_EQ(test::get32(quote + 12), s.ip.src);
  EXPECT_EQ(test::get32(quote + 16), s.ip.dst);
  EXPECT_EQ(quote[8], s.ip.ttl);
  EXPECT_EQ(test::get16(quote + 20), s.tcp.sport);
  EXPECT_EQ(test::get16(quote + 22), s.tcp.dport);
  EXPECT_EQ(test::get32(quote + 24), s.tcp.seq);
}

class TunnelTest : public ProcessorTest {
 protected:
  TunnelTest() {
    forward_ = ForwardMode::kTunnel;
    pool_ = make_pool({0, 1, 2});
  }
};

TEST_F(TunnelTest, SynDataFinRstAreWrappedUnchanged) {
  const uint16_t cport = 40000;
  const Seg syn = client_syn(0, cport, 7000);
  Out o = Run(client_frame(0, syn), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  const int b = backend_index(o.frame);
  ASSERT_GE(b, 0);
  EXPECT_TRUE(FramesEqual(tunnelled(b, syn), o.frame));
  // lbd never sees the SYN-ACK: the handshake counts as answered (kSynRecv), not pending.
  EXPECT_EQ(State(0, cport), TcpState::kSynRecv);
  EXPECT_EQ(FindFlow(0, cport)->forward, ForwardMode::kTunnel);

  const Seg ack = client_seg(0, cport, tf::kAck, 7001, 5001);
  o = Run(client_frame(0, ack), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(tunnelled(b, ack), o.frame));
  EXPECT_EQ(State(0, cport), TcpState::kEstablished);

  // Data with TOS set and TTL 1: the inner header is left alone (no TTL decrement, no expiry).
  Seg data = client_seg(0, cport, tf::kAck | tf::kPsh, 7001, 5001, Bytes(14, 0x47));
  data.ip.tos = 0x28;
  data.ip.ttl = 1;
  o = Run(client_frame(0, data, 0x0064), kClientSide, 3);  // VLAN-tagged: the tag stays behind
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(tunnelled(b, data), o.frame));
  EXPECT_EQ(o.frame[14 + 20 + 8], 1) << "inner TTL";

  // Not DF: the outer header is not DF either.
  Seg fin = client_seg(0, cport, tf::kAck | tf::kFin, 7015, 5001);
  fin.ip.frag = 0;
  o = Run(client_frame(0, fin), kClientSide, 4);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(tunnelled(b, fin), o.frame));
  EXPECT_EQ(State(0, cport), TcpState::kFinWait);  // the client's FIN ends it

  const uint16_t cport2 = 40001;
  const Seg syn2 = client_syn(1, cport2, 9000);
  o = Run(client_frame(1, syn2), kClientSide, 5);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  const int b2 = backend_index(o.frame);
  EXPECT_TRUE(FramesEqual(tunnelled(b2, syn2), o.frame));
  const Seg rst = client_seg(1, cport2, tf::kRst, 9001);
  o = Run(client_frame(1, rst), kClientSide, 6);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(tunnelled(b2, rst), o.frame));
  EXPECT_EQ(State(1, cport2), TcpState::kClosed);

  EXPECT_EQ(C().tunnel_packets.get(), 6u);
  EXPECT_EQ(C().flows_created.get(), 2u);
  EXPECT_EQ(Drops(DropReason::kTtlExceeded), 0u);
}

TEST_F(TunnelTest, ARetransmittedSynIsNotAnUnansweredOne) {
  cfg_.retry_syn_after = 5;  // a dnat flow would move to another backend on this SYN
  const Seg syn = client_syn(0, 41000, 1);
  Out o = Run(client_frame(0, syn), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  const int b = backend_index(o.frame);
  o = Run(client_frame(0, syn), kClientSide, 20);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(tunnelled(b, syn), o.frame));
  EXPECT_EQ(C().retries.get(), 0u);
  EXPECT_EQ(BC(b).syn_timeout.get(), 0u);
  EXPECT_EQ(C().flows_created.get(), 1u);
}

TEST_F(TunnelTest, TooBigOnceWrappedGetsFragmentationNeeded) {
  const uint16_t cport = 42000;
  ASSERT_TRUE(IsTx(Run(client_frame(0, client_syn(0, cport, 1)), kClientSide, 1), kBackendSide));
  // 1480 bytes of IPv4 fit the 1500-byte port with the outer header; 1481 do not.
  const Seg fits = client_seg(0, cport, tf::kAck, 2, 1, Bytes(1440, 0x61));
  Out o = Run(client_frame(0, fits), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(o.frame.size(), 14u + 1500u);
  const Seg big = client_seg(0, cport, tf::kAck, 1442, 1, Bytes(1441, 0x62));
  o = Run(client_frame(0, big), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(icmp_error_frame(kClientSide, client_mac(0), big, 3, 4, 1480), o.frame));
  ExpectQuoteOf(o.frame, big);
  EXPECT_EQ(test::get16(o.frame.data() + 14 + 20 + 6), 1480) << "next-hop MTU";
  EXPECT_EQ(C().icmp_frag_needed.get(), 1u);
  EXPECT_EQ(Drops(DropReason::kFragNeeded), 1u);

  // A flood of them: the first kBurst are answered at one instant, the rest only counted.
  for (uint32_t i = 0; i < IcmpLimiter::kBurst + 50; ++i) Run(client_frame(0, big), kClientSide, 3);
  EXPECT_EQ(C().icmp_frag_needed.get(), IcmpLimiter::kBurst);  // the first, then 99 more...
  EXPECT_EQ(Drops(DropReason::kFragNeeded), 1u + IcmpLimiter::kBurst + 50);
  EXPECT_EQ(C().icmp_rate_limited.get(), 51u);
  // ...and a second later the bucket is full again.
  o = Run(client_frame(0, big), kClientSide, 3 + cfg_.ticks_per_second);
  EXPECT_TRUE(IsTx(o, kClientSide));
}

// The same for a tunnel flow, whose relayed error is wrapped toward the backend.
TEST_F(TunnelTest, IcmpErrorAboutAResetFlowIsDropped) {
  const uint16_t cport = 40000;
  Out o = Run(client_frame(0, client_syn(0, cport, 7000)), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  const int b = backend_index(o.frame);
  ASSERT_GE(b, 0);
  o = Run(client_frame(0, client_seg(0, cport, tf::kAck, 7001, 5001)), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  o = Run(router_error_about_response(0, cport), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_EQ(C().icmp_errors_translated.get(), 1u);
  std::vector<int> others;
  for (int i = 0; i < kBackends; ++i)
    if (i != b) others.push_back(i);
  pool_ = make_pool(others);
  o = Run(client_frame(0, client_seg(0, cport, tf::kAck, 7001, 5001)), kClientSide, 3);
  ASSERT_EQ(State(0, cport), TcpState::kReset);
  o = Run(router_error_about_response(0, cport), kClientSide, 4);
  EXPECT_EQ(o.v.action, Action::kDrop);
  EXPECT_EQ(Drops(DropReason::kIcmpErrorNoFlow), 1u);
  EXPECT_EQ(C().icmp_errors_translated.get(), 1u);
}

TEST_F(ProcessorTest, DnatDecrementsTtlBothWays) {
  const uint16_t cport = 43000;
  Establish(0, cport, 0, 1);  // its frames compare with TTL - 1 (to_backend, to_client)
  Seg data = client_seg(0, cport, tf::kAck, 1001 + cport, 5001, Bytes(1, 0x78));
  data.ip.ttl = 2;
  Out o = Run(client_frame(0, data), kClientSide, 2);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(FramesEqual(to_backend(0, data), o.frame));
  EXPECT_EQ(o.frame[14 + 8], 1);
  Seg reply = backend_seg(0, 0, cport, tf::kAck, 5001, 1002 + cport);
  reply.ip.ttl = 255;
  o = Run(backend_frame(0, reply), kBackendSide, 2);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(to_client(0, reply), o.frame));
  EXPECT_EQ(o.frame[14 + 8], 254);
}

TEST_F(ProcessorTest, DnatAnswersAnExpiringPacketWithTimeExceeded) {
  // A SYN with TTL 1 makes no flow: the client gets time-exceeded from the client port.
  Seg syn = client_syn(0, 44000, 1);
  syn.ip.ttl = 1;
  Out o = Run(client_frame(0, syn), kClientSide, 1);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(icmp_error_frame(kClientSide, client_mac(0), syn, 11, 0, 0), o.frame));
  ExpectQuoteOf(o.frame, syn);
  EXPECT_EQ(FindFlow(0, 44000), nullptr);
  EXPECT_EQ(C().flows_created.get(), 0u);

  // In a flow, either side: TTL 0 or 1 is answered from the port it came in on.
  const uint16_t cport = 44001;
  Establish(0, cport, 0, 2);
  Seg data = client_seg(0, cport, tf::kAck, 1001 + cport, 5001);
  data.ip.ttl = 0;
  o = Run(client_frame(0, data), kClientSide, 3);
  ASSERT_TRUE(IsTx(o, kClientSide));
  EXPECT_TRUE(FramesEqual(icmp_error_frame(kClientSide, client_mac(0), data, 11, 0, 0), o.frame));
  Seg reply = backend_seg(0, 0, cport, tf::kAck, 5001, 1001 + cport);
  reply.ip.ttl = 1;
  o = Run(backend_frame(0, reply), kBackendSide, 3);
  ASSERT_TRUE(IsTx(o, kBackendSide));
  EXPECT_TRUE(
      FramesEqual(icmp_error_frame(kBackendSide, kBackendMac[0], reply, 11, 0, 0), o.frame));
  ExpectQuoteOf(o.frame, reply);
  EXPECT_EQ(C().icmp_time_exceeded.get(), 3u);
  EXPECT_EQ(Drops(DropReason::kTtlExceeded), 3u);
  EXPECT_EQ(State(0, cport), TcpState::kEstablished);
}

// ---------------------------------------------------------------------------------------------
// reset(): the fuzz target (tests/fuzz/packet_fuzz.cc) reuses one Processor for many inputs.

// A random stream of what a worker sees: SYNs, ACKs, data, FINs and RSTs from clients and
// backends (to flows that exist or not), ICMP echo and TTL 1, clock steps and aging, pool changes.
struct StreamOp {
  Bytes frame;  // empty: no frame
  uint16_t port = 0;
  Tick step = 0;  // the clock moves first
  int age = -1;   // >= 0: age(now, age) after the frame; -2: paced age(now)
  int pool = -1;  // >= 0: switch to that pool version first
};

std::vector<StreamOp> random_stream(uint32_t seed, size_t n) {
  std::mt19937 g(seed);
  const auto pick = [&](uint32_t k) { return static_cast<uint32_t>(g() % k); };
  std::vector<StreamOp> ops;
  for (size_t i = 0; i < n; ++i) {
    StreamOp op;
    const int c = static_cast<int>(pick(5));
    const auto cport = static_cast<uint16_t>(1000 + pick(12));
    const int b = static_cast<int>(pick(kBackends));
    const uint8_t cflags[] = {
        tf::kSyn, tf::kSyn, tf::kAck, tf::kAck | tf::kPsh, tf::kFin | tf::kAck, tf::kRst};
    const uint8_t bflags[] = {tf::kSyn | tf::kAck, tf::kAck, tf::kFin | tf::kAck, tf::kRst};
    switch (pick(8)) {
      case 0:
      case 1:
      case 2: {
        const uint8_t fl = cflags[pick(std::size(cflags))];
        Seg s = fl == tf::kSyn
                    ? client_syn(c, cport, pick(1000))
                    : client_seg(c, cport, fl, pick(1000), pick(1000), Bytes(pick(3) * 7, 0x33));
        if (pick(16) == 0) s.ip.ttl = 1;  // time exceeded
        op.frame = client_frame(c, s);
        op.port = kClientSide;
        if (pick(32) == 0) {
          // More time-exceeded errors at once than the ICMP limiter's burst allows.
          s.ip.ttl = 1;
          op.frame = client_frame(c, s);
          for (uint32_t k = 0; k < IcmpLimiter::kBurst + 10; ++k) ops.push_back(op);
        }
        break;
      }
      case 3:
      case 4:
        op.frame = backend_frame(
            b, backend_seg(b, c, cport, bflags[pick(std::size(bflags))], pick(1000), pick(1000)));
        op.port = kBackendSide;
        break;
      case 5:
        op.frame =
            echo_frame(c, pick(2) ? kVip : kPortIp[0], Icmp{8, 0, 7, static_cast<uint16_t>(i)});
        op.port = kClientSide;
        break;
      case 6:
        op.step = pick(4) == 0 ? 1 + pick(400) : pick(5);
        op.age = pick(2) ? -2 : static_cast<int>(pick(20));
        break;
      case 7:
        op.pool = static_cast<int>(pick(3));
        break;
    }
    ops.push_back(std::move(op));
  }
  return ops;
}

// Everything a Processor shows: its counters (every byte) and its flow table (every record).
::testing::AssertionResult SameObservables(const Processor& a, const Processor& b) {
  if (std::memcmp(&a.counters(), &b.counters(), sizeof(WorkerCounters)) != 0) {
    size_t at = 0;
    const auto* pa = reinterpret_cast<const unsigned char*>(&a.counters());
    const auto* pb = reinterpret_cast<const unsigned char*>(&b.counters());
    while (pa[at] == pb[at]) ++at;
    return ::testing::AssertionFailure() << "counters differ at byte " << at;
  }
  const FlowTable& ta = a.flows();
  const FlowTable& tb = b.flows();
  if (ta.size() != tb.size() || ta.embryonic() != tb.embryonic())
    return ::testing::AssertionFailure() << "table sizes " << ta.size() << "/" << ta.embryonic()
                                         << " and " << tb.size() << "/" << tb.embryonic();
  for (uint32_t i = 0; i < ta.capacity(); ++i)
    if (std::memcmp(&ta.at(i), &tb.at(i), sizeof(Flow)) != 0)
      return ::testing::AssertionFailure() << "flow record " << i << " differs";
  if (a.snat().addresses() != b.snat().addresses())
    return ::testing::AssertionFailure() << "full-NAT addresses differ";
  return ::testing::AssertionSuccess();
}

TEST_F(ProcessorTest, ResetIsIndistinguishableFromANewProcessor) {
  cfg_.flow_capacity = 16;  // full, so that flows are refused, evicted and reused
  cfg_.syn_cache_slots = 8;
  cfg_.retry_syn_after = 3;
  cfg_.syn_budget = 8;
  cfg_.syn_policy = SynPolicy::kEvictEmbryonic;
  // Pool versions: all three backends; backend 1 draining; backend 0 gone, weighted.
  const auto set_pool = [&](int v) {
    pool_ = v == 0   ? make_pool({0, 1, 2})
            : v == 1 ? make_pool({0, 2}, {1})
                     : make_pool({1, 2}, {}, SchedulerKind::kWeightedRoundRobin);
  };
  // Runs `ops` on each processor in `ps` from clock `now`; every verdict and output frame must be
  // the same on all of them, and so must everything they show after each step.
  // `sent`: frames transmitted. ASSERTs return from the lambda only: callers check
  // HasFatalFailure().
  const auto run = [&](const std::vector<StreamOp>& ops, std::vector<Processor*> ps, Tick now,
                       size_t& sent) {
    sent = 0;
    set_pool(0);
    for (size_t i = 0; i < ops.size(); ++i) {
      const StreamOp& op = ops[i];
      now += op.step;
      if (op.pool >= 0) set_pool(op.pool);
      std::vector<Out> outs;
      for (Processor* p : ps) {
        if (!op.frame.empty()) outs.push_back(Run(op.frame, op.port, now, p));
        if (op.age == -2)
          p->age(now);
        else if (op.age >= 0)
          p->age(now, static_cast<uint32_t>(op.age));
      }
      for (size_t k = 1; k < outs.size(); ++k) {
        ASSERT_EQ(verdict_str(outs[0].v), verdict_str(outs[k].v)) << "op " << i;
        ASSERT_TRUE(FramesEqual(outs[0].frame, outs[k].frame)) << "op " << i;
      }
      sent += !outs.empty() && outs[0].v.action == Action::kTx;
      for (size_t k = 1; k < ps.size(); ++k)
        ASSERT_TRUE(SameObservables(*ps[0], *ps[k])) << "op " << i;
    }
  };
  uint64_t rate_limited = 0;
  uint64_t moved = 0;  // retries and evictions
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Processor used(cfg_, *neighbors_);
    size_t sent = 0;
    run(random_stream(seed, 600), {&used}, 1000, sent);
    ASSERT_FALSE(HasFatalFailure());
    ASSERT_GT(used.counters().flows_created.get(), 0u);
    ASSERT_FALSE(SameObservables(used, Processor(cfg_, *neighbors_)));
    used.reset();
    Processor fresh(cfg_, *neighbors_);
    ASSERT_TRUE(SameObservables(used, fresh));
    // The same again, from a clock far from where the first stream left it; the stream exercises
    // what reset() must have forgotten: creation numbers (SYN cache keys), scheduler cursors and
    // weights, the ICMP limiters' tokens and the aging pace.
    run(random_stream(seed + 1000, 600), {&used, &fresh}, 500, sent);
    ASSERT_FALSE(HasFatalFailure());
    ASSERT_GT(sent, 100u);
    moved += fresh.counters().retries.get() + fresh.counters().syn_evicted.get();
    rate_limited += fresh.counters().icmp_rate_limited.get();
  }
  // What the streams must have exercised: the limiter's state, retries and evictions.
  EXPECT_GT(rate_limited, 0u);
  EXPECT_GT(moved, 0u);
}

TEST(Counter, AddSubAndGetAgreeWithPlainArithmetic) {
  // Counter::add is one add to memory on x86-64 (inline asm), an atomic load and store elsewhere:
  // the same totals, wrap-around included (a gauge goes down by adding the two's complement).
  Counter c;
  uint64_t want = 0;
  std::mt19937_64 rng(3);
  for (int n = 0; n < 1000; ++n) {
    const uint64_t v = n % 3 == 0 ? rng() : rng() % 1000;
    if (n % 5 == 0) {
      c.sub(v);
      want -= v;
    } else {
      c.add(v);
      want += v;
    }
    ASSERT_EQ(c.get(), want) << n;
  }
  const auto owned = std::make_unique<WorkerCounters>();  // ~300 KB: not on the stack
  WorkerCounters& w = *owned;
  w.backend[7].bytes_in.add(60);
  w.backend[7].packets_in.add();
  EXPECT_EQ(w.backend[7].bytes_in.get(), 60u);
  EXPECT_EQ(w.backend[7].packets_in.get(), 1u);
  EXPECT_EQ(w.backend[7].packets_out.get(), 0u);
  EXPECT_EQ(w.backend[6].bytes_in.get(), 0u);
}

}  // namespace
}  // namespace lb::core
