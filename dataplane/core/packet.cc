#include "packet.h"

#include <cstring>

#include "checksum.h"

namespace lb::core {

namespace {

inline void drop(ParsedPacket& out, DropReason r) {
  out.kind = PacketKind::kDrop;
  out.drop = r;
}

}  // namespace

namespace {
// The parser itself, inlined into both entry points (parse_received's fast path calls no
// function).
[[gnu::always_inline]] inline void parse(const uint8_t* frame, size_t len, ParsedPacket& out,
                                         bool ip_csum_verified) {
  if (parse_common_tcp(frame, len, out, ip_csum_verified)) [[likely]]
    return;
  out = ParsedPacket{};
  if (len < kEthHeaderLen) return drop(out, DropReason::kTruncated);
  size_t off = 12;
  uint16_t type = load_be16(frame + off);
  if (type == kEtherTypeVlan) {
    if (len < kEthHeaderLen + kVlanTagLen) return drop(out, DropReason::kTruncated);
    out.tagged = true;
    out.vlan_tci = load_be16(frame + 14);
    off += kVlanTagLen;
    type = load_be16(frame + off);
    if (type == kEtherTypeVlan || type == kEtherTypeQinQ)
      return drop(out, DropReason::kVlanStacked);
  } else if (type == kEtherTypeQinQ) {
    return drop(out, DropReason::kVlanStacked);
  }
  off += 2;
  out.l3 = static_cast<uint16_t>(off);

  if (type == kEtherTypeArp) {
    if (len < off + kArpLen) return drop(out, DropReason::kTruncated);
    const uint8_t* a = frame + off;
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request or reply
    const uint16_t op = load_be16(a + 6);
    if (load_be16(a) != 1 || load_be16(a + 2) != kEtherTypeIpv4 || a[4] != 6 || a[5] != 4 ||
        (op != 1 && op != 2))
      return drop(out, DropReason::kArpMalformed);
    out.kind = PacketKind::kArp;
    return;
  }
  if (type != kEtherTypeIpv4) return drop(out, DropReason::kUnsupportedEthertype);

  if (len < off + kIpv4HeaderLen) return drop(out, DropReason::kTruncated);
  const uint8_t* ip = frame + off;
  const uint8_t ver_ihl = ip[ip_off::kVerIhl];
  if ((ver_ihl >> 4) != 4) return drop(out, DropReason::kIpVersion);
  const size_t ihl = static_cast<size_t>(ver_ihl & 0x0f) * 4;
  if (ihl < kIpv4HeaderLen || len < off + ihl) return drop(out, DropReason::kIpHeaderLength);
  // Options are legal IPv4 but serve no TCP flow we balance and are a classic attack vector:
  // DPVS and Katran drop them too.
  if (ihl != kIpv4HeaderLen) return drop(out, DropReason::kIpOptions);
  const uint16_t total = load_be16(ip + ip_off::kTotalLen);
  if (total < ihl || off + total > len) return drop(out, DropReason::kIpTotalLength);
  if (!ip_csum_verified && !ipv4_header_checksum_ok(ip)) return drop(out, DropReason::kIpChecksum);
  // More-fragments set or a non-zero offset: a fragment. The flow key needs the ports, which
  // only the first fragment has; like DPVS and Katran we drop rather than reassemble.
  if ((load_be16(ip + ip_off::kFrag) & 0x3fff) != 0) return drop(out, DropReason::kIpFragment);
  out.src_ip = load_be32(ip + ip_off::kSrc);
  out.dst_ip = load_be32(ip + ip_off::kDst);
  out.ip_total_len = total;
  out.ttl = ip[ip_off::kTtl];
  if (bad_source_ip(out.src_ip)) return drop(out, DropReason::kIpBadAddress);
  const uint8_t proto = ip[ip_off::kProto];
  const size_t l4 = off + ihl;
  const size_t l4_len = total - ihl;
  out.l4 = static_cast<uint16_t>(l4);

  if (proto == kIpProtoTcp) {
    if (l4_len < kTcpHeaderLen) return drop(out, DropReason::kTruncated);
    const uint8_t* t = frame + l4;
    const size_t doff = static_cast<size_t>(t[tcp_off::kDataOff] >> 4) * 4;
    if (doff < kTcpHeaderLen || doff > l4_len) return drop(out, DropReason::kTcpHeaderLength);
    const uint8_t flags = t[tcp_off::kFlags];
    using namespace tcp_flag;
    if ((flags & (kSyn | kFin | kRst | kAck)) == 0 || ((flags & kSyn) && (flags & (kFin | kRst))))
      return drop(out, DropReason::kTcpFlags);
    out.src_port = load_be16(t + tcp_off::kSport);
    out.dst_port = load_be16(t + tcp_off::kDport);
    out.tcp_flags = flags;
    out.tcp_header_len = static_cast<uint8_t>(doff);
    out.l4_payload_len = static_cast<uint16_t>(l4_len - doff);
    out.kind = PacketKind::kTcp;
    return;
  }
  if (proto == kIpProtoIcmp) {
    if (l4_len < kIcmpHeaderLen) return drop(out, DropReason::kTruncated);
    out.l4_payload_len = static_cast<uint16_t>(l4_len);
    out.kind = PacketKind::kIcmp;
    return;
  }
  return drop(out, DropReason::kUnsupportedProtocol);
}
}  // namespace

void parse_packet(const uint8_t* frame, size_t len, ParsedPacket& out, bool ip_csum_verified) {
  parse(frame, len, out, ip_csum_verified);
}

void parse_received(const uint8_t* frame, size_t len, ParsedPacket& out, bool ip_csum_verified,
                    uint64_t port_mac_key) {
  parse(frame, len, out, ip_csum_verified);
  // After the parse, whose returns the compiler threads into these tests: a TCP segment to the
  // port's MAC pays one load, a shift and a compare. A frame that parsed (or any of 14 bytes or
  // more) holds the 8 bytes read.
  if (out.kind == PacketKind::kDrop) [[unlikely]] {
    if (len >= kEthHeaderLen && !(frame[0] & 1) && dst_mac_key(frame) != port_mac_key)
      out.drop = DropReason::kNotOurMac;
  } else if (dst_mac_key(frame) != port_mac_key) [[unlikely]] {
    if (out.kind != PacketKind::kArp || !(frame[0] & 1)) drop(out, DropReason::kNotOurMac);
  }
}

ArpView read_arp(const uint8_t* a) {
  return ArpView{load_be16(a + 6), MacAddr::load(a + 8), load_be32(a + 14), MacAddr::load(a + 18),
                 load_be32(a + 24)};
}

}  // namespace lb::core

namespace lb::core {
size_t build_arp_request(uint8_t* buf, const MacAddr& src_mac, uint32_t sip, uint32_t tip) {
  std::memset(buf, 0, 60);
  kBroadcastMac.store(buf);
  src_mac.store(buf + 6);
  store_be16(buf + 12, kEtherTypeArp);
  uint8_t* a = buf + kEthHeaderLen;
  store_be16(a, 1);
  store_be16(a + 2, kEtherTypeIpv4);
  a[4] = 6;
  a[5] = 4;
  store_be16(a + 6, 1);
  src_mac.store(a + 8);
  store_be32(a + 14, sip);
  store_be32(a + 24, tip);
  return 60;
}
}  // namespace lb::core
