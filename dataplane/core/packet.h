#pragma once
// Parsing of untrusted frames over byte spans: Ethernet, one optional 802.1Q tag, ARP, IPv4
// (no options, no fragments), TCP and ICMP. Every step checks the length it reads; the result is a
// kind or a drop reason, never an assertion.

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "bytes.h"
#include "drop_reason.h"

namespace lb::core {

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;
inline constexpr uint16_t kEtherTypeQinQ = 0x88a8;
inline constexpr uint8_t kIpProtoIcmp = 1;
inline constexpr uint8_t kIpProtoTcp = 6;
inline constexpr size_t kEthHeaderLen = 14;
inline constexpr size_t kVlanTagLen = 4;
inline constexpr size_t kIpv4HeaderLen = 20;
inline constexpr size_t kTcpHeaderLen = 20;
inline constexpr size_t kArpLen = 28;
inline constexpr size_t kIcmpHeaderLen = 8;

namespace tcp_flag {
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;
}  // namespace tcp_flag

// Byte offsets inside the headers (RFC 791, 793, 826, 792).
namespace ip_off {
inline constexpr size_t kVerIhl = 0, kTotalLen = 2, kId = 4, kFrag = 6, kTtl = 8, kProto = 9,
                        kCsum = 10, kSrc = 12, kDst = 16;
}
namespace tcp_off {
inline constexpr size_t kSport = 0, kDport = 2, kSeq = 4, kAck = 8, kDataOff = 12, kFlags = 13,
                        kWindow = 14, kCsum = 16, kUrg = 18;
}

enum class PacketKind : uint8_t { kDrop, kArp, kIcmp, kTcp };

struct ParsedPacket {
  PacketKind kind = PacketKind::kDrop;
  DropReason drop = DropReason::kTruncated;  // meaningful when kind == kDrop
  uint16_t l3 = 0;                           // offset of the ARP or IPv4 header
  uint16_t l4 = 0;                           // offset of the TCP or ICMP header
  uint16_t vlan_tci = 0;                     // 0 when untagged
  bool tagged = false;
  // IPv4 TTL, as received: the established path tests it here rather than in the frame, whose
  // address takes three loads to form.
  uint8_t ttl = 0;
  // IPv4 (host order)
  uint32_t src_ip = 0;
  uint32_t dst_ip = 0;
  uint16_t ip_total_len = 0;
  // TCP
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint8_t tcp_flags = 0;
  uint8_t tcp_header_len = 0;
  uint16_t l4_payload_len = 0;  // TCP payload bytes (for RST ack numbers)
};

// Parses `len` bytes at `frame`. Always fills `out.kind`; on kDrop, `out.drop` says why.
// `ip_csum_verified`: the NIC has checked the IPv4 header checksum and found it good
// (RTE_MBUF_F_RX_IP_CKSUM_GOOD), so it is not summed again here.
void parse_packet(const uint8_t* frame, size_t len, ParsedPacket& out,
                  bool ip_csum_verified = false);

// The destination MAC at the front of a frame of at least 8 bytes as one word (its 48 high
// bits), so that a frame's and its port's compare in two instructions.
inline uint64_t dst_mac_key(const uint8_t* frame) {
  uint64_t v;
  std::memcpy(&v, frame, sizeof v);
  return std::endian::native == std::endian::little ? v << 16 : v >> 16;
}

// parse_packet for a frame received on a port whose MAC has the dst_mac_key `port_mac_key`. A
// port in promiscuous mode (af_packet, af_xdp, pcap, a NIC with several MACs) also sees frames
// for other hosts, and balancing them would duplicate what their real destination gets: a frame
// to another host's unicast MAC is kNotOurMac whatever it holds, and so is TCP or ICMP to a
// group address (those carry ARP only; a malformed frame to one keeps its own reason).
void parse_received(const uint8_t* frame, size_t len, ParsedPacket& out, bool ip_csum_verified,
                    uint64_t port_mac_key);

// True when the 20-byte IPv4 header at `ip` sums to all ones (its checksum is right). The
// header's two 64-bit and one 32-bit words added with end-around carries (x86: one add and two
// adc), then, instead of folding to 16 bits, one test: since 2^16 = 1 modulo 0xffff, a 64-bit
// end-around sum is congruent to the 16-bit one's-complement sum of its words modulo 0xffff, and
// that sum, folded, is 0xffff exactly when it is a non-zero multiple of 0xffff (the division is
// a multiply and a compare). Only an all-zero header sums to 0. The one's-complement sum does not
// depend on byte order.
[[gnu::always_inline]] inline bool ipv4_header_checksum_ok(const uint8_t* ip) {
  uint64_t a, b;
  uint32_t c;
  std::memcpy(&a, ip, sizeof a);
  std::memcpy(&b, ip + 8, sizeof b);
  std::memcpy(&c, ip + 16, sizeof c);
#if defined(__x86_64__)
  unsigned long long sum;
  unsigned char carry = _addcarry_u64(0, a, b, &sum);
  carry = _addcarry_u64(carry, sum, c, &sum);
  _addcarry_u64(carry, sum, 0, &sum);
#else
  uint64_t sum = a + b;
  sum += sum < b;  // a + b + 1 cannot wrap again
  sum += c;
  sum += sum < c;
#endif
  return sum != 0 && sum % 0xffff == 0;
}

// 0.0.0.0/8, 127/8, multicast and limited broadcast are never valid sources of traffic we serve.
// By the address's first byte (the frame's first byte of it: no load of the whole address).
inline bool bad_source_first_byte(uint8_t first) {
  return first == 0 || first == 127 || first >= 224;
}
inline bool bad_source_ip(uint32_t a) {
  return bad_source_first_byte(static_cast<uint8_t>(a >> 24));
}

// out.src_ip and dst_ip from `addrs` (the frame's two addresses as one big-endian word, source
// in the high half) and src_port and dst_port from `ports` (likewise): each pair is adjacent in
// ParsedPacket, so one rotate and one store each instead of four swaps and stores.
inline void store_key_words(ParsedPacket& out, uint64_t addrs, uint32_t ports) {
  static_assert(offsetof(ParsedPacket, dst_ip) == offsetof(ParsedPacket, src_ip) + 4 &&
                offsetof(ParsedPacket, dst_port) == offsetof(ParsedPacket, src_port) + 2);
  if constexpr (std::endian::native == std::endian::little) {
    addrs = std::rotl(addrs, 32);  // the source first in memory
    ports = std::rotl(ports, 16);
  }
  std::memcpy(&out.src_ip, &addrs, sizeof addrs);
  std::memcpy(&out.src_port, &ports, sizeof ports);
}

// The common frame (untagged IPv4 with no options carrying TCP) whose every check passes: true,
// with the fields an established flow's packet needs filled as parse() fills them (kind, l3, l4,
// ttl, the addresses and ports, ip_total_len, tcp_flags); complete_common_tcp() fills the others.
// Any frame it does not take (false, `out` untouched) gets the full parse, so a drop keeps the
// reason the full parse gives it.
[[gnu::always_inline]] inline bool parse_common_tcp_partial(const uint8_t* frame, size_t len,
                                                            ParsedPacket& out,
                                                            bool ip_csum_verified) {
  constexpr size_t kL3 = kEthHeaderLen;
  constexpr size_t kL4 = kL3 + kIpv4HeaderLen;
  if (len < kL4 + kTcpHeaderLen) return false;
  // Two compares: EtherType IPv4 with version 4 / IHL 5 (bytes 12-14), and protocol TCP. The
  // word is compared as the frame holds it (masks and values laid out in memory order), not
  // byte-swapped.
  constexpr auto kTypeVerMask =
      std::bit_cast<uint32_t>(std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0});
  constexpr auto kTypeVer = std::bit_cast<uint32_t>(std::array<uint8_t, 4>{0x08, 0x00, 0x45, 0});
  static_assert(kEtherTypeIpv4 == 0x0800);
  uint32_t type_ver;
  std::memcpy(&type_ver, frame + 12, sizeof type_ver);
  if ((type_ver & kTypeVerMask) != kTypeVer || frame[kL3 + ip_off::kProto] != kIpProtoTcp)
    return false;
  const uint8_t* ip = frame + kL3;
  const uint8_t* t = frame + kL4;
  const size_t total = load_be16(ip + ip_off::kTotalLen);
  const size_t doff = static_cast<size_t>(t[tcp_off::kDataOff] >> 4) * 4;
  const uint8_t flags = t[tcp_off::kFlags];
  // More-fragments and the fragment offset (the low 14 bits of the big-endian word), in memory
  // order.
  constexpr auto kFragMask = std::bit_cast<uint16_t>(std::array<uint8_t, 2>{0x3f, 0xff});
  uint16_t frag;
  std::memcpy(&frag, ip + ip_off::kFrag, sizeof frag);
  using namespace tcp_flag;
  if (total < kIpv4HeaderLen + doff || kL3 + total > len || doff < kTcpHeaderLen ||
      (frag & kFragMask) != 0 || (flags & (kSyn | kFin | kRst | kAck)) == 0 ||
      ((flags & kSyn) && (flags & (kFin | kRst))))
    return false;
  const uint64_t addrs = load_be64(ip + ip_off::kSrc);  // source in the high word
  if (bad_source_first_byte(ip[ip_off::kSrc]) ||
      (!ip_csum_verified && !ipv4_header_checksum_ok(ip)))
    return false;
  // kind, drop, l3, l4 and vlan_tci (ParsedPacket's first eight bytes) in one store.
  struct Head {
    PacketKind kind;
    DropReason drop;
    uint16_t l3, l4, vlan_tci;
  };
  static_assert(sizeof(Head) == 8 && offsetof(ParsedPacket, kind) == 0 &&
                offsetof(ParsedPacket, drop) == 1 && offsetof(ParsedPacket, l3) == 2 &&
                offsetof(ParsedPacket, l4) == 4 && offsetof(ParsedPacket, vlan_tci) == 6);
  constexpr auto kHead =
      std::bit_cast<uint64_t>(Head{PacketKind::kTcp, DropReason::kTruncated, kL3, kL4, 0});
  std::memcpy(static_cast<void*>(&out.kind), &kHead, sizeof kHead);
  out.ttl = ip[ip_off::kTtl];
  store_key_words(out, addrs, load_be32(t + tcp_off::kSport));
  out.ip_total_len = static_cast<uint16_t>(total);
  out.tcp_flags = flags;
  return true;
}

// The rest of what parse() fills for a frame parse_common_tcp_partial() took into `out`. For a
// frame the full parse found to be untagged TCP (l3 == kEthHeaderLen) it writes what is there.
inline void complete_common_tcp(const uint8_t* frame, ParsedPacket& out) {
  const auto doff = static_cast<uint8_t>((frame[out.l4 + tcp_off::kDataOff] >> 4) * 4);
  out.drop = DropReason::kTruncated;
  out.vlan_tci = 0;
  out.tagged = false;
  out.tcp_header_len = doff;
  out.l4_payload_len = static_cast<uint16_t>(out.ip_total_len - kIpv4HeaderLen - doff);
}

// Both: `out` filled as parse() fills it.
[[gnu::always_inline]] inline bool parse_common_tcp(const uint8_t* frame, size_t len,
                                                    ParsedPacket& out, bool ip_csum_verified) {
  if (!parse_common_tcp_partial(frame, len, out, ip_csum_verified)) return false;
  complete_common_tcp(frame, out);
  return true;
}

// parse_received's common case, inline in the burst loop: true when `frame` is such a frame
// and addressed to the port's MAC, with `out` filled as parse_common_tcp_partial() fills it
// (complete_common_tcp() for the rest). On false `out` is undefined: call parse_received.
[[gnu::always_inline]] inline bool parse_received_common(const uint8_t* frame, size_t len,
                                                         ParsedPacket& out, bool ip_csum_verified,
                                                         uint64_t port_mac_key) {
  return parse_common_tcp_partial(frame, len, out, ip_csum_verified) &&
         dst_mac_key(frame) == port_mac_key;
}

// ARP (Ethernet/IPv4 only) fields, valid when parse_packet said kArp.
struct ArpView {
  uint16_t op;  // 1 request, 2 reply
  MacAddr sha;
  uint32_t spa;
  MacAddr tha;
  uint32_t tpa;
};
ArpView read_arp(const uint8_t* arp);

}  // namespace lb::core

namespace lb::core {
// Writes a broadcast ARP request "who has tip? tell sip" (60 bytes, padded) into buf, which must
// hold 60 bytes. Returns the length.
size_t build_arp_request(uint8_t* buf, const MacAddr& src_mac, uint32_t sip, uint32_t tip);
}  // namespace lb::core
