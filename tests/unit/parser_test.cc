// The frame parser on good frames of every kind, on every malformation it must name, and on
// arbitrary bytes (every truncation of valid frames, random and mutated frames). Buffers are
// heap copies of exactly the frame's length so that AddressSanitizer sees any over-read.

#include "packet.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "checksum.h"
#include "packet_builder.h"

namespace lb::core {
namespace {

using test::Arp;
using test::Bytes;
using test::Eth;
using test::Icmp;
using test::Ip;
using test::ip4;
using test::Tcp;
namespace f = test::tcpf;

const MacAddr kDstMac = test::mac(0x02, 0x00, 0x00, 0x00, 0x00, 0x01);
const MacAddr kSrcMac = test::mac(0x02, 0xcc, 0x00, 0x00, 0x00, 0x07);
const uint32_t kClient = ip4(192, 0, 2, 7);
const uint32_t kVip = ip4(10, 10, 0, 100);

ParsedPacket parse(const Bytes& b, size_t len) {
  // An exact-size copy: reading one byte past `len` is a heap overflow under ASan.
  std::vector<uint8_t> copy(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(len));
  ParsedPacket pk;
  pk.kind = PacketKind::kArp;  // garbage in: the parser must always set kind
  parse_packet(copy.data(), copy.size(), pk);
  return pk;
}
ParsedPacket parse(const Bytes& b) {
  return parse(b, b.size());
}

std::string describe(const ParsedPacket& pk) {
  if (pk.kind == PacketKind::kDrop) return "drop " + std::string(to_string(pk.drop));
  return pk.kind == PacketKind::kArp ? "arp" : pk.kind == PacketKind::kIcmp ? "icmp" : "tcp";
}

Ip client_ip() {
  Ip ip;
  ip.src = kClient;
  ip.dst = kVip;
  ip.id = 0x1234;
  return ip;
}

Tcp syn() {
  Tcp t;
  t.sport = 40000;
  t.dport = 80;
  t.seq = 1000;
  t.flags = f::kSyn;
  t.options = test::syn_options();
  return t;
}

Tcp data_segment() {
  Tcp t;
  t.sport = 40000;
  t.dport = 80;
  t.seq = 1001;
  t.ack = 5001;
  t.flags = f::kAck | f::kPsh;
  t.payload = {'h', 'e', 'l', 'l', 'o', '!', '\n'};
  return t;
}

Icmp echo() {
  Icmp m;
  m.id = 77;
  m.seq = 3;
  m.payload = Bytes(32, 0x5a);
  return m;
}

Arp arp_request() {
  Arp a;
  a.op = 1;
  a.sha = kSrcMac;
  a.spa = kClient;
  a.tpa = kVip;
  return a;
}

// ---------------------------------------------------------------------------------------------
// Good frames

TEST(ParsePacket, TcpSynWithOptions) {
  for (bool tagged : {false, true}) {
    SCOPED_TRACE(tagged ? "tagged" : "untagged");
    const Eth e = tagged ? test::eth_vlan(kDstMac, kSrcMac, 0x6064) : test::eth(kDstMac, kSrcMac);
    const Bytes b = test::tcp_frame(e, client_ip(), syn());
    const ParsedPacket pk = parse(b);
    ASSERT_EQ(pk.kind, PacketKind::kTcp) << describe(pk);
    const uint16_t l3 = tagged ? 18 : 14;
    EXPECT_EQ(pk.tagged, tagged);
    EXPECT_EQ(pk.vlan_tci, tagged ? 0x6064 : 0);
    EXPECT_EQ(pk.l3, l3);
    EXPECT_EQ(pk.l4, l3 + 20);
    EXPECT_EQ(pk.src_ip, kClient);
    EXPECT_EQ(pk.dst_ip, kVip);
    EXPECT_EQ(pk.ip_total_len, 60);
    EXPECT_EQ(pk.src_port, 40000);
    EXPECT_EQ(pk.dst_port, 80);
    EXPECT_EQ(pk.tcp_flags, f::kSyn);
    EXPECT_EQ(pk.tcp_header_len, 40);
    EXPECT_EQ(pk.l4_payload_len, 0);
  }
}

TEST(ParsePacket, TcpDataPaddingIgnored) {
  // 54 + 7 = 61 bytes: no padding. Then the same with 40 bytes of trailing padding.
  for (size_t min_len : {size_t{0}, size_t{101}}) {
    const Bytes b =
        test::tcp_frame(test::eth(kDstMac, kSrcMac), client_ip(), data_segment(), min_len);
    const ParsedPacket pk = parse(b);
    ASSERT_EQ(pk.kind, PacketKind::kTcp) << describe(pk);
    EXPECT_EQ(pk.ip_total_len, 47);
    EXPECT_EQ(pk.tcp_header_len, 20);
    EXPECT_EQ(pk.l4_payload_len, 7);
    EXPECT_EQ(pk.tcp_flags, f::kAck | f::kPsh);
  }
  // A bare ACK in a minimum 60-byte frame: 6 bytes of padding are not payload.
  Tcp ack = data_segment();
  ack.payload.clear();
  const Bytes b = test::tcp_frame(test::eth(kDstMac, kSrcMac), client_ip(), ack);
  ASSERT_EQ(b.size(), 60u);
  const ParsedPacket pk = parse(b);
  ASSERT_EQ(pk.kind, PacketKind::kTcp);
  EXPECT_EQ(pk.l4_payload_len, 0);
  EXPECT_EQ(pk.ip_total_len, 40);
}

TEST(ParsePacket, TcpValidFlagCombinations) {
  const uint8_t ok[] = {f::kSyn,
                        f::kSyn | f::kAck,
                        f::kAck,
                        f::kFin,
                        f::kFin | f::kAck,
                        f::kRst,
                        f::kRst | f::kAck,
                        f::kPsh | f::kAck,
                        f::kFin | f::kPsh | f::kAck,
                        f::kSyn | 0x40 | 0x80,  // ECN setup SYN
                        f::kAck | f::kUrg,
                        f::kRst | f::kFin};
  for (uint8_t flags : ok) {
    Tcp t = data_segment();
    t.flags = flags;
    const ParsedPacket pk = parse(test::tcp_frame(test::eth(kDstMac, kSrcMac), client_ip(), t));
    ASSERT_EQ(pk.kind, PacketKind::kTcp) << test::tcp_flags_str(flags) << " " << describe(pk);
    EXPECT_EQ(pk.tcp_flags, flags);
  }
}

TEST(ParsePacket, IcmpEcho) {
  for (bool tagged : {false, true}) {
    const Eth e = tagged ? test::eth_vlan(kDstMac, kSrcMac, 5) : test::eth(kDstMac, kSrcMac);
    const Bytes b = test::icmp_frame(e, client_ip(), echo());
    const ParsedPacket pk = parse(b);
    ASSERT_EQ(pk.kind, PacketKind::kIcmp) << describe(pk);
    EXPECT_EQ(pk.tagged, tagged);
    EXPECT_EQ(pk.l3, tagged ? 18 : 14);
    EXPECT_EQ(pk.l4, pk.l3 + 20);
    EXPECT_EQ(pk.src_ip, kClient);
    EXPECT_EQ(pk.dst_ip, kVip);
    EXPECT_EQ(pk.ip_total_len, 20 + 8 + 32);
    EXPECT_EQ(pk.l4_payload_len, 8 + 32);  // for ICMP: the whole message
  }
  // A bare 8-byte echo is enough.
  Icmp m = echo();
  m.payload.clear();
  EXPECT_EQ(parse(test::icmp_frame(test::eth(kDstMac, kSrcMac), client_ip(), m)).kind,
            PacketKind::kIcmp);
}

TEST(ParsePacket, ArpRequestAndReply) {
  for (bool tagged : {false, true}) {
    for (uint16_t op : std::initializer_list<uint16_t>{1, 2}) {
      Arp a = arp_request();
      a.op = op;
      a.tha = op == 2 ? kDstMac : MacAddr{};
      const Eth e =
          tagged ? test::eth_vlan(test::mac(0xff, 0xff, 0xff, 0xff, 0xff, 0xff), kSrcMac, 0x0123)
                 : test::eth(kDstMac, kSrcMac);
      const Bytes b = test::arp_frame(e, a);
      const ParsedPacket pk = parse(b);
      ASSERT_EQ(pk.kind, PacketKind::kArp) << describe(pk);
      EXPECT_EQ(pk.tagged, tagged);
      EXPECT_EQ(pk.vlan_tci, tagged ? 0x0123 : 0);
      EXPECT_EQ(pk.l3, tagged ? 18 : 14);
      const ArpView v = read_arp(b.data() + pk.l3);
      EXPECT_EQ(v.op, op);
      EXPECT_EQ(v.sha, kSrcMac);
      EXPECT_EQ(v.spa, kClient);
      EXPECT_EQ(v.tha, a.tha);
      EXPECT_EQ(v.tpa, kVip);
    }
  }
  // An unpadded 42-byte ARP (as some stacks hand it over) is complete.
  EXPECT_EQ(parse(test::arp_frame(test::eth(kDstMac, kSrcMac), arp_request(), 0)).kind,
            PacketKind::kArp);
}

TEST(ParsePacket, TaggedFlagResetBetweenCalls) {
  ParsedPacket pk;
  const Bytes tagged =
      test::tcp_frame(test::eth_vlan(kDstMac, kSrcMac, 9), client_ip(), data_segment());
  const Bytes runt(10, 0);
  parse_packet(tagged.data(), tagged.size(), pk);
  ASSERT_TRUE(pk.tagged);
  parse_packet(runt.data(), runt.size(), pk);
  EXPECT_EQ(pk.kind, PacketKind::kDrop);
  EXPECT_FALSE(pk.tagged);
  EXPECT_EQ(pk.vlan_tci, 0);
}

TEST(ParsePacket, SourceAddressesAllowed) {
  for (uint32_t src : {ip4(1, 0, 0, 0), ip4(126, 255, 255, 255), ip4(128, 0, 0, 1),
                       ip4(223, 255, 255, 255), ip4(10, 0, 0, 1), ip4(169, 254, 1, 1)}) {
    Ip ip = client_ip();
    ip.src = src;
    EXPECT_EQ(parse(test::tcp_frame(test::eth(kDstMac, kSrcMac), ip, syn())).kind, PacketKind::kTcp)
        << test::ip_str(src);
  }
}

TEST(ParsePacket, DontFragmentAndEvilBitAreNotFragments) {
  for (uint16_t frag : std::initializer_list<uint16_t>{0x0000, 0x4000, 0x8000, 0xc000}) {
    Ip ip = client_ip();
    ip.frag = frag;
    EXPECT_EQ(parse(test::tcp_frame(test::eth(kDstMac, kSrcMac), ip, syn())).kind, PacketKind::kTcp)
        << std::hex << frag;
  }
}

TEST(Ipv4HeaderChecksum, FastCheckAgreesWithTheReferenceSum) {
  // The five-word native-order sum against RFC 1071 over big-endian words, on random headers
  // with their right checksum, one off, and the all-zero and all-ones corner cases.
  std::mt19937 rng(7);
  for (int n = 0; n < 20000; ++n) {
    uint8_t h[20];
    for (uint8_t& b : h) b = static_cast<uint8_t>(rng());
    if (n == 0) std::fill(std::begin(h), std::end(h), uint8_t{0});
    if (n == 1) std::fill(std::begin(h), std::end(h), uint8_t{0xff});
    EXPECT_EQ(ipv4_header_checksum_ok(h), csum(h, 20) == 0) << n;
    if (n > 1) {
      test::set16(h + 10, 0);
      test::set16(h + 10, csum(h, 20));
      EXPECT_TRUE(ipv4_header_checksum_ok(h)) << n;
      test::set16(h + 10, static_cast<uint16_t>(test::get16(h + 10) + 1));
      EXPECT_EQ(ipv4_header_checksum_ok(h), csum(h, 20) == 0) << n;
    }
  }
}

TEST(BuildArpRequest, ExactBytes) {
  const MacAddr me = test::mac(0x02, 0, 0, 0, 0, 2);
  uint8_t buf[64];
  std::memset(buf, 0xee, sizeof buf);
  const size_t n = build_arp_request(buf, me, ip4(10, 20, 0, 1), ip4(10, 20, 0, 11));
  ASSERT_EQ(n, 60u);
  EXPECT_EQ(buf[60], 0xee);  // wrote no more than it said
  Arp a;
  a.op = 1;
  a.sha = me;
  a.spa = ip4(10, 20, 0, 1);
  a.tpa = ip4(10, 20, 0, 11);
  const Bytes want = test::arp_frame(test::eth(core::kBroadcastMac, me), a);
  EXPECT_TRUE(test::FramesEqual(want, Bytes(buf, buf + n)));
  EXPECT_EQ(parse(want).kind, PacketKind::kArp);
}

// ---------------------------------------------------------------------------------------------
// Bad frames: every reason the parser can give.

struct BadCase {
  std::string name;
  Bytes frame;
  DropReason want;
};

Bytes prefix(const Bytes& b, size_t n) {
  return Bytes(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
}

Bytes with_byte(Bytes b, size_t at, uint8_t v) {
  b[at] = v;
  return b;
}

Bytes tcp_with(const Ip& ip, const Tcp& t, bool tagged = false) {
  const Eth e = tagged ? test::eth_vlan(kDstMac, kSrcMac, 7) : test::eth(kDstMac, kSrcMac);
  return test::tcp_frame(e, ip, t);
}

std::vector<BadCase> bad_cases() {
  std::vector<BadCase> c;
  const Bytes good = tcp_with(client_ip(), syn());
  const Bytes good_tagged = tcp_with(client_ip(), syn(), true);

  // Ethernet and 802.1Q
  for (size_t n = 0; n < 14; ++n)
    c.push_back({"runt " + std::to_string(n), prefix(good, n), DropReason::kTruncated});
  for (size_t n = 14; n < 18; ++n)
    c.push_back({"tag cut " + std::to_string(n), prefix(good_tagged, n), DropReason::kTruncated});
  {
    Eth e = test::eth(kDstMac, kSrcMac);
    e.tags = {{7, 0x8100}, {8, 0x8100}};
    c.push_back(
        {"two 802.1Q tags", test::tcp_frame(e, client_ip(), syn()), DropReason::kVlanStacked});
    e.tags = {{7, 0x8100}, {8, 0x88a8}};
    c.push_back({"802.1ad inside 802.1Q", test::tcp_frame(e, client_ip(), syn()),
                 DropReason::kVlanStacked});
    e.tags = {{7, 0x88a8}, {8, 0x8100}};
    c.push_back(
        {"802.1ad outer tag", test::tcp_frame(e, client_ip(), syn()), DropReason::kVlanStacked});
    e.tags = {{7, 0x88a8}};
    c.push_back(
        {"802.1ad single tag", test::tcp_frame(e, client_ip(), syn()), DropReason::kVlanStacked});
  }
  for (uint16_t type :
       std::initializer_list<uint16_t>{0x86dd, 0x0000, 0x0805, 0x8035, 0x88cc, 0xffff}) {
    for (bool tagged : {false, true}) {
      Eth e = tagged ? test::eth_vlan(kDstMac, kSrcMac, 3) : test::eth(kDstMac, kSrcMac);
      e.type = type;
      c.push_back({"ethertype " + std::to_string(type) + (tagged ? " tagged" : ""),
                   test::tcp_frame(e, client_ip(), syn()), DropReason::kUnsupportedEthertype});
    }
  }

  // IPv4 header
  for (size_t n = 14; n < 34; ++n)
    c.push_back({"ip cut " + std::to_string(n), prefix(good, n), DropReason::kTruncated});
  for (size_t n = 18; n < 38; ++n)
    c.push_back(
        {"tagged ip cut " + std::to_string(n), prefix(good_tagged, n), DropReason::kTruncated});
  for (uint8_t v : std::initializer_list<uint8_t>{0, 1, 5, 6, 15}) {
    Ip ip = client_ip();
    ip.version = v;
    c.push_back({"ip version " + std::to_string(v), tcp_with(ip, syn()), DropReason::kIpVersion});
  }
  for (uint8_t ihl = 0; ihl < 5; ++ihl) {
    Ip ip = client_ip();
    ip.ihl = ihl;
    c.push_back({"ihl " + std::to_string(ihl), tcp_with(ip, syn()), DropReason::kIpHeaderLength});
  }
  {
    // IHL 15 (60 bytes) in a frame that ends 30 bytes after the IP header starts.
    Ip ip = client_ip();
    ip.ihl = 15;
    Bytes b = test::tcp_frame(test::eth(kDstMac, kSrcMac), ip, Tcp{}, 0);
    b.resize(14 + 30);
    c.push_back({"ihl past the frame", b, DropReason::kIpHeaderLength});
    // IHL 6 with the last byte of the options missing.
    ip = client_ip();
    ip.options = {1, 1, 1, 0};
    b = test::ethernet(test::eth(kDstMac, kSrcMac), 0x0800, test::ipv4_packet(ip, 6, {}), 0);
    b.pop_back();
    c.push_back({"ihl 6, 23 bytes", b, DropReason::kIpHeaderLength});
  }
  {
    Ip ip = client_ip();
    ip.options = {1, 1, 1, 0};  // NOP NOP NOP EOL
    c.push_back({"ip options (ihl 6)", tcp_with(ip, syn()), DropReason::kIpOptions});
    ip.options = Bytes(40, 1);
    c.push_back({"ip options (ihl 15)", tcp_with(ip, syn()), DropReason::kIpOptions});
    ip.options = {0x94, 0x04, 0, 0};  // router alert
    c.push_back({"router alert", tcp_with(ip, data_segment(), true), DropReason::kIpOptions});
  }
  for (uint16_t total : std::initializer_list<uint16_t>{0, 1, 19}) {
    Ip ip = client_ip();
    ip.total_len = total;
    c.push_back({"total length " + std::to_string(total) + " < ihl", tcp_with(ip, syn()),
                 DropReason::kIpTotalLength});
  }
  {
    // 74-byte frame, IP header at 14: total length 61 is one past the end.
    Ip ip = client_ip();
    ip.total_len = 61;
    c.push_back({"total length past the frame", tcp_with(ip, syn()), DropReason::kIpTotalLength});
    ip.total_len = 0xffff;
    c.push_back({"total length 65535", tcp_with(ip, syn()), DropReason::kIpTotalLength});
    ip.total_len = 61;  // 78-byte frame, IP header at 18
    c.push_back({"tagged: total length past the frame", tcp_with(ip, syn(), true),
                 DropReason::kIpTotalLength});
  }
  {
    const Bytes b = tcp_with(client_ip(), syn());
    const uint16_t right = test::get16(b.data() + 24);
    for (uint16_t wrong : std::initializer_list<uint16_t>{
             uint16_t(right + 1), uint16_t(right ^ 0x8000), uint16_t(0), uint16_t(~right)}) {
      if (wrong == right) continue;
      Bytes bad = b;
      test::set16(bad.data() + 24, wrong);
      c.push_back({"ip checksum " + std::to_string(wrong), bad, DropReason::kIpChecksum});
    }
    // A flipped bit anywhere in the header, checksum left alone.
    for (size_t i = 0; i < 20; ++i)
      c.push_back({"ip header bit flip at " + std::to_string(i),
                   with_byte(b, 14 + i, static_cast<uint8_t>(b[14 + i] ^ 0x10)),
                   i == 0   ? DropReason::kIpVersion      // 0x45 -> 0x55
                   : i == 2 ? DropReason::kIpTotalLength  // 60 -> 4156
                            : DropReason::kIpChecksum});
  }
  for (uint16_t frag : std::initializer_list<uint16_t>{0x2000, 0x6000, 0x0001, 0x4001, 0x1fff,
                                                       0x2001, 0x3fff, 0x00b9}) {
    Ip ip = client_ip();
    ip.frag = frag;
    c.push_back({"fragment " + std::to_string(frag), tcp_with(ip, syn()), DropReason::kIpFragment});
  }
  for (uint32_t src :
       {ip4(0, 0, 0, 0), ip4(0, 1, 2, 3), ip4(127, 0, 0, 1), ip4(127, 255, 255, 255),
        ip4(224, 0, 0, 1), ip4(239, 255, 255, 250), ip4(240, 0, 0, 1), ip4(255, 255, 255, 255)}) {
    Ip ip = client_ip();
    ip.src = src;
    c.push_back({"source " + test::ip_str(src), tcp_with(ip, syn()), DropReason::kIpBadAddress});
    c.push_back({"icmp source " + test::ip_str(src),
                 test::icmp_frame(test::eth(kDstMac, kSrcMac), ip, echo()),
                 DropReason::kIpBadAddress});
  }
  for (uint8_t proto : std::initializer_list<uint8_t>{0, 2, 17, 41, 47, 50, 132, 255}) {
    Ip ip = client_ip();
    ip.proto = proto;
    c.push_back({"protocol " + std::to_string(proto), tcp_with(ip, syn()),
                 DropReason::kUnsupportedProtocol});
  }

  // TCP
  for (uint16_t l4 = 0; l4 < 20; ++l4) {
    Ip ip = client_ip();
    ip.total_len = static_cast<uint16_t>(20 + l4);
    c.push_back(
        {"tcp in " + std::to_string(l4) + " bytes", tcp_with(ip, syn()), DropReason::kTruncated});
  }
  for (uint8_t doff = 0; doff < 5; ++doff) {
    Tcp t = data_segment();
    t.data_off = doff;
    c.push_back({"tcp data offset " + std::to_string(doff), tcp_with(client_ip(), t),
                 DropReason::kTcpHeaderLength});
  }
  {
    Tcp t = data_segment();
    t.payload.clear();
    t.data_off = 6;  // 24 > 20 bytes of segment
    c.push_back({"tcp data offset past the segment", tcp_with(client_ip(), t),
                 DropReason::kTcpHeaderLength});
    t.data_off = 15;
    c.push_back({"tcp data offset 15", tcp_with(client_ip(), t), DropReason::kTcpHeaderLength});
    // The frame's padding would hold 24 bytes, but the IP total length says 40.
    t.data_off = 6;
    c.push_back(
        {"tcp options in the padding", tcp_with(client_ip(), t), DropReason::kTcpHeaderLength});
    // Options cut by the IP total length.
    Ip ip = client_ip();
    ip.total_len = 20 + 39;
    c.push_back(
        {"syn options cut by total length", tcp_with(ip, syn()), DropReason::kTcpHeaderLength});
  }
  for (uint8_t flags :
       {uint8_t{0}, f::kPsh, f::kUrg, uint8_t{f::kPsh | f::kUrg | 0xc0}, uint8_t{f::kSyn | f::kFin},
        uint8_t{f::kSyn | f::kRst}, uint8_t{f::kSyn | f::kFin | f::kAck},
        uint8_t{f::kSyn | f::kRst | f::kAck}, uint8_t{0xff}}) {
    Tcp t = data_segment();
    t.flags = flags;
    c.push_back({"tcp flags " + test::tcp_flags_str(flags), tcp_with(client_ip(), t),
                 DropReason::kTcpFlags});
  }

  // ICMP
  for (uint16_t l4 = 0; l4 < 8; ++l4) {
    Ip ip = client_ip();
    ip.total_len = static_cast<uint16_t>(20 + l4);
    c.push_back({"icmp in " + std::to_string(l4) + " bytes",
                 test::icmp_frame(test::eth(kDstMac, kSrcMac), ip, echo()),
                 DropReason::kTruncated});
  }

  // ARP
  {
    const Bytes a = test::arp_frame(test::eth(kDstMac, kSrcMac), arp_request(), 0);
    for (size_t n = 14; n < 42; ++n)
      c.push_back({"arp cut " + std::to_string(n), prefix(a, n), DropReason::kTruncated});
    const Bytes at = test::arp_frame(test::eth_vlan(kDstMac, kSrcMac, 1), arp_request(), 0);
    c.push_back({"tagged arp cut", Bytes(at.begin(), at.end() - 1), DropReason::kTruncated});
  }
  auto arp_bad = [&](const std::string& name, auto mutate) {
    Arp a = arp_request();
    mutate(a);
    c.push_back({name, test::arp_frame(test::eth(kDstMac, kSrcMac), a), DropReason::kArpMalformed});
    c.push_back({name + " tagged", test::arp_frame(test::eth_vlan(kDstMac, kSrcMac, 2), a),
                 DropReason::kArpMalformed});
  };
  arp_bad("arp htype 6", [](Arp& a) { a.htype = 6; });
  arp_bad("arp htype 0", [](Arp& a) { a.htype = 0; });
  arp_bad("arp ptype ipv6", [](Arp& a) { a.ptype = 0x86dd; });
  arp_bad("arp hlen 8", [](Arp& a) { a.hlen = 8; });
  arp_bad("arp plen 16", [](Arp& a) { a.plen = 16; });
  arp_bad("arp op 0", [](Arp& a) { a.op = 0; });
  arp_bad("arp op 3 (rarp)", [](Arp& a) { a.op = 3; });
  arp_bad("arp op 0x0101", [](Arp& a) { a.op = 0x0101; });
  return c;
}

TEST(ParsePacket, NicVerifiedIpChecksumIsNotSummedAgain) {
  Bytes b = tcp_with(client_ip(), syn());
  test::set16(b.data() + 24, static_cast<uint16_t>(test::get16(b.data() + 24) ^ 0x0101));
  ParsedPacket pk;
  parse_packet(b.data(), b.size(), pk);
  EXPECT_EQ(describe(pk), "drop " + std::string(to_string(DropReason::kIpChecksum)));
  parse_packet(b.data(), b.size(), pk, /*ip_csum_verified=*/true);
  EXPECT_EQ(describe(pk), "tcp");
  // Every other check still applies to a NIC-verified frame.
  b[14] = 0x46;
  parse_packet(b.data(), b.size(), pk, true);
  EXPECT_EQ(describe(pk), "drop " + std::string(to_string(DropReason::kIpOptions)));
}

TEST(ParsePacket, EveryDropReason) {
  std::vector<bool> seen(kDropReasonCount, false);
  for (const BadCase& bc : bad_cases()) {
    SCOPED_TRACE(bc.name);
    const ParsedPacket pk = parse(bc.frame);
    EXPECT_EQ(pk.kind, PacketKind::kDrop) << describe(pk) << "\n" << test::describe(bc.frame);
    EXPECT_EQ(to_string(pk.drop), to_string(bc.want))
        << test::describe(bc.frame) << test::hexdump(bc.frame);
    seen[static_cast<size_t>(bc.want)] = true;
  }
  // The table covers every reason the parser is documented to give.
  for (DropReason r :
       {DropReason::kTruncated, DropReason::kVlanStacked, DropReason::kUnsupportedEthertype,
        DropReason::kIpVersion, DropReason::kIpHeaderLength, DropReason::kIpOptions,
        DropReason::kIpTotalLength, DropReason::kIpChecksum, DropReason::kIpFragment,
        DropReason::kIpBadAddress, DropReason::kUnsupportedProtocol, DropReason::kTcpHeaderLength,
        DropReason::kTcpFlags, DropReason::kArpMalformed})
    EXPECT_TRUE(seen[static_cast<size_t>(r)]) << to_string(r);
}

// ---------------------------------------------------------------------------------------------
// Truncation: every prefix of valid unpadded frames, and every IP total length.

struct GoodFrame {
  std::string name;
  Bytes frame;  // unpadded: its last byte is the last byte of the packet
  PacketKind kind;
  size_t l3;
};

std::vector<GoodFrame> good_frames() {
  std::vector<GoodFrame> g;
  const Eth plain = test::eth(kDstMac, kSrcMac);
  const Eth tagged = test::eth_vlan(kDstMac, kSrcMac, 42);
  Tcp syn_data = syn();
  syn_data.payload = {1, 2, 3};
  g.push_back({"tcp syn", test::tcp_frame(plain, client_ip(), syn_data, 0), PacketKind::kTcp, 14});
  g.push_back(
      {"tcp syn tagged", test::tcp_frame(tagged, client_ip(), syn_data, 0), PacketKind::kTcp, 18});
  g.push_back(
      {"tcp data", test::tcp_frame(plain, client_ip(), data_segment(), 0), PacketKind::kTcp, 14});
  g.push_back({"icmp", test::icmp_frame(plain, client_ip(), echo(), 0), PacketKind::kIcmp, 14});
  g.push_back(
      {"icmp tagged", test::icmp_frame(tagged, client_ip(), echo(), 0), PacketKind::kIcmp, 18});
  g.push_back({"arp", test::arp_frame(plain, arp_request(), 0), PacketKind::kArp, 14});
  g.push_back({"arp tagged", test::arp_frame(tagged, arp_request(), 0), PacketKind::kArp, 18});
  return g;
}

TEST(ParsePacket, EveryTruncationOfValidFrames) {
  for (const GoodFrame& g : good_frames()) {
    SCOPED_TRACE(g.name);
    ASSERT_EQ(parse(g.frame).kind, g.kind);
    for (size_t n = 0; n < g.frame.size(); ++n) {
      const ParsedPacket pk = parse(g.frame, n);
      ASSERT_EQ(pk.kind, PacketKind::kDrop) << "length " << n << ": " << describe(pk);
      // Cut before the end of the Ethernet/ARP/IPv4 header: truncated. Cut after the IPv4
      // header: the IPv4 total length points past the frame.
      const size_t l3_min = g.kind == PacketKind::kArp ? 28 : 20;
      const DropReason want =
          n < g.l3 + l3_min ? DropReason::kTruncated : DropReason::kIpTotalLength;
      ASSERT_EQ(to_string(pk.drop), to_string(want)) << "length " << n;
    }
    // Padding after the packet never matters.
    for (size_t pad = 1; pad < 64; ++pad) {
      Bytes b = g.frame;
      b.resize(b.size() + pad, static_cast<uint8_t>(pad));
      ASSERT_EQ(parse(b).kind, g.kind) << "pad " << pad;
    }
  }
}

TEST(ParsePacket, EveryIpTotalLength) {
  // The frame stays whole; the IPv4 total length (checksum kept right) moves from 0 to the frame
  // end. The TCP header is 40 bytes (20 of options), then 3 bytes of payload.
  Tcp t = syn();
  t.payload = {1, 2, 3};
  const Bytes whole = test::tcp_frame(test::eth(kDstMac, kSrcMac), client_ip(), t, 0);
  const size_t ip_len = whole.size() - 14;
  for (size_t total = 0; total <= ip_len + 5; ++total) {
    Ip ip = client_ip();
    ip.total_len = static_cast<uint16_t>(total);
    const Bytes b = test::tcp_frame(test::eth(kDstMac, kSrcMac), ip, t, 0);
    const ParsedPacket pk = parse(b);
    if (total < 20 || total > ip_len) {
      EXPECT_EQ(to_string(pk.drop), "ip_bad_total_length") << total;
    } else if (total < 40) {
      EXPECT_EQ(to_string(pk.drop), "truncated") << total;
    } else if (total < 60) {
      EXPECT_EQ(to_string(pk.drop), "tcp_bad_offset") << total;
    } else {
      ASSERT_EQ(pk.kind, PacketKind::kTcp) << total;
      EXPECT_EQ(pk.ip_total_len, total);
      EXPECT_EQ(pk.l4_payload_len, total - 60);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary bytes: never crash, never read past the end (ASan), and whatever is accepted is
// consistent with the frame.

void check_consistent(const Bytes& b, const ParsedPacket& pk) {
  if (pk.kind == PacketKind::kDrop) {
    ASSERT_LT(static_cast<size_t>(pk.drop), kDropReasonCount);
    return;
  }
  const test::Decoded d = test::decode(b);
  ASSERT_EQ(pk.l3, pk.tagged ? 18u : 14u);
  ASSERT_EQ(pk.tagged, d.tags.size() == 1);
  if (pk.kind == PacketKind::kArp) {
    ASSERT_LE(pk.l3 + 28u, b.size());
    ASSERT_EQ(d.type, 0x0806);
    ASSERT_TRUE(d.arp.op == 1 || d.arp.op == 2);
    return;
  }
  ASSERT_EQ(d.type, 0x0800);
  ASSERT_LE(size_t{pk.l3} + pk.ip_total_len, b.size());
  ASSERT_EQ(pk.l4, pk.l3 + 20);
  ASSERT_TRUE(test::ref_sum(b.data() + pk.l3, 20) == 0xffff) << "accepted a bad IP checksum";
  ASSERT_EQ(pk.src_ip, d.ip_src);
  ASSERT_EQ(pk.dst_ip, d.ip_dst);
  ASSERT_EQ(d.frag & 0x3fff, 0);
  if (pk.kind == PacketKind::kTcp) {
    ASSERT_EQ(d.proto, 6);
    ASSERT_GE(pk.tcp_header_len, 20);
    ASSERT_EQ(size_t{pk.l4} + pk.tcp_header_len + pk.l4_payload_len,
              size_t{pk.l3} + pk.ip_total_len);
    ASSERT_EQ(pk.src_port, d.sport);
    ASSERT_EQ(pk.dst_port, d.dport);
    ASSERT_EQ(pk.tcp_flags, d.flags);
  } else {
    ASSERT_EQ(d.proto, 1);
    ASSERT_GE(pk.l4_payload_len, 8);
    ASSERT_EQ(size_t{pk.l4} + pk.l4_payload_len, size_t{pk.l3} + pk.ip_total_len);
  }
}

TEST(ParsePacket, RandomBytesNeverCrash) {
  std::mt19937_64 rng(0xfeed);
  for (int rep = 0; rep < 200000; ++rep) {
    Bytes b(rng() % 130);
    for (uint8_t& x : b) x = static_cast<uint8_t>(rng());
    // Steer a share of them past the first checks.
    if (b.size() >= 14 && rep % 2) {
      const uint16_t types[] = {0x0800, 0x0806, 0x8100};
      test::set16(b.data() + 12, types[rng() % 3]);
      if (b.size() >= 18 && b[12] == 0x81) test::set16(b.data() + 16, rep % 4 ? 0x0800 : 0x0806);
    }
    const ParsedPacket pk = parse(b);
    check_consistent(b, pk);
    if (HasFatalFailure()) FAIL() << test::hexdump(b);
  }
}

TEST(ParsePacket, CommonPartialParseThenCompleteIsTheFullParse) {
  // The burst loop's parse of the common frame fills part of ParsedPacket and completes it only
  // for packets that leave the established path: the two together must give what parse_packet
  // gives, field for field, and it must take no frame the full parse would not take as TCP.
  // The completion also runs on untagged TCP the full parse filled: it must change nothing.
  std::mt19937_64 rng(0x15e57);
  const std::vector<GoodFrame> goods = good_frames();
  size_t taken = 0;
  for (int rep = 0; rep < 100000; ++rep) {
    Bytes b = goods[rng() % goods.size()].frame;
    const int flips = static_cast<int>(rng() % 3);
    for (int i = 0; i < flips; ++i) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (rng() % 8 == 0) b.resize(b.size() + rng() % 20, 0);
    const test::Decoded d = test::decode(b);
    if (d.type == 0x0800 && b.size() >= d.l3 + 20 && rep % 4) {
      test::set16(b.data() + d.l3 + 10, 0);
      test::set16(b.data() + d.l3 + 10, test::ref_checksum(b.data() + d.l3, 20));
    }
    const ParsedPacket full = parse(b);
    if (full.kind == PacketKind::kTcp && full.l3 == kEthHeaderLen) {
      // Completing what the full parse filled (the burst does not mark which parse ran) changes
      // nothing.
      ParsedPacket again = full;
      complete_common_tcp(b.data(), again);
      EXPECT_EQ(again.drop, full.drop);
      EXPECT_EQ(again.vlan_tci, full.vlan_tci);
      EXPECT_EQ(again.tagged, full.tagged);
      EXPECT_EQ(again.tcp_header_len, full.tcp_header_len);
      EXPECT_EQ(again.l4_payload_len, full.l4_payload_len);
      if (HasFailure()) FAIL() << test::hexdump(b);
    }
    // Whatever the burst's array held before: fields the partial parse must overwrite.
    ParsedPacket pk;
    pk.kind = PacketKind::kArp;
    pk.drop = DropReason::kIpChecksum;
    pk.l3 = pk.l4 = 0xa5a5;
    pk.vlan_tci = 0x0fff;
    pk.tagged = true;
    pk.src_ip = pk.dst_ip = 0xa5a5a5a5;
    pk.ip_total_len = pk.src_port = pk.dst_port = pk.l4_payload_len = 0xa5a5;
    pk.tcp_flags = pk.tcp_header_len = 0xa5;
    if (!parse_common_tcp_partial(b.data(), b.size(), pk, false)) continue;
    ++taken;
    complete_common_tcp(b.data(), pk);
    ASSERT_EQ(full.kind, PacketKind::kTcp) << test::hexdump(b);
    EXPECT_EQ(pk.kind, full.kind);
    EXPECT_EQ(pk.drop, full.drop);
    EXPECT_EQ(pk.l3, full.l3);
    EXPECT_EQ(pk.l4, full.l4);
    EXPECT_EQ(pk.vlan_tci, full.vlan_tci);
    EXPECT_EQ(pk.tagged, full.tagged);
    EXPECT_EQ(pk.src_ip, full.src_ip);
    EXPECT_EQ(pk.dst_ip, full.dst_ip);
    EXPECT_EQ(pk.ip_total_len, full.ip_total_len);
    EXPECT_EQ(pk.src_port, full.src_port);
    EXPECT_EQ(pk.dst_port, full.dst_port);
    EXPECT_EQ(pk.tcp_flags, full.tcp_flags);
    EXPECT_EQ(pk.tcp_header_len, full.tcp_header_len);
    EXPECT_EQ(pk.l4_payload_len, full.l4_payload_len);
    if (HasFailure()) FAIL() << test::hexdump(b);
  }
  EXPECT_GT(taken, 1000u);
}

TEST(ParsePacket, MutatedValidFramesNeverCrash) {
  std::mt19937_64 rng(0xbeef);
  const std::vector<GoodFrame> goods = good_frames();
  size_t accepted = 0;
  for (int rep = 0; rep < 200000; ++rep) {
    Bytes b = goods[rng() % goods.size()].frame;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (rng() % 4 == 0) b.resize(rng() % (b.size() + 1));
    if (rng() % 8 == 0) b.resize(b.size() + rng() % 20, 0);
    // Keep the IP checksum right half the time so that the later checks run too.
    if (rep % 2) {
      const test::Decoded d = test::decode(b);
      if (d.type == 0x0800 && b.size() >= d.l3 + 20) {
        test::set16(b.data() + d.l3 + 10, 0);
        test::set16(b.data() + d.l3 + 10, test::ref_checksum(b.data() + d.l3, 20));
      }
    }
    const ParsedPacket pk = parse(b);
    check_consistent(b, pk);
    if (HasFatalFailure()) FAIL() << test::hexdump(b);
    accepted += pk.kind != PacketKind::kDrop;
  }
  EXPECT_GT(accepted, 1000u);  // the mutations did reach the accepting paths
}

}  // namespace
}  // namespace lb::core
