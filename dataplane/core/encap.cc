#include "encap.h"

#include <cstring>

#include "checksum.h"
#include "processor.h"

namespace lb::core {

void write_ipip_header(uint8_t* outer, const uint8_t* ip, uint16_t total_len, uint32_t src,
                       uint32_t dst) {
  // TOS (DSCP and ECN) and id copied, as RFC 2003 3.1 asks; DF copied: a client doing path MTU
  // discovery keeps doing it through the tunnel.
  write_ipv4_header(outer, ip[1], static_cast<uint16_t>(total_len + kTunnelOverhead),
                    load_be16(ip + ip_off::kId),
                    static_cast<uint16_t>(load_be16(ip + ip_off::kFrag) & 0x4000), kTunnelTtl,
                    kIpProtoIpip, src, dst);
}

size_t write_icmp_error(uint8_t* ip, uint8_t type, uint8_t code, uint16_t mtu, uint32_t src) {
  uint8_t* icmp = ip + kIpv4HeaderLen;
  const uint32_t dst = load_be32(ip + ip_off::kSrc);
  std::memcpy(icmp + kIcmpHeaderLen, ip, kIcmpQuoteLen);  // disjoint: [28, 56) from [0, 28)
  icmp[0] = type;
  icmp[1] = code;
  store_be16(icmp + 2, 0);
  store_be16(icmp + 4, 0);
  store_be16(icmp + 6, mtu);
  store_be16(icmp + 2, csum(icmp, kIcmpHeaderLen + kIcmpQuoteLen));
  write_ipv4_header(ip, 0, static_cast<uint16_t>(kIcmpErrorIpLen), 0, 0, kIcmpTtl, kIpProtoIcmp,
                    src, dst);
  return kIcmpErrorIpLen;
}

// The packet in `f` is not forwarded (counted under `why`); its sender gets an ICMP error from
// port `port`'s address, back through that port to the MAC it came from (VLAN tag kept), unless
// this worker's limiter says no or the sender's MAC is a group one.
Verdict Processor::icmp_error(Frame& f, const ParsedPacket& pk, uint16_t port, uint8_t type,
                              uint8_t code, uint16_t mtu, DropReason why) {
  counters_->drop(why);
  const Verdict dropped{Action::kDrop, 0, 0, why};
  uint8_t* p = f.data();
  const MacAddr src_mac = MacAddr::load(p + 6);
  if (src_mac.is_multicast() || size_t{f.off} + pk.l3 + kIcmpErrorIpLen > f.cap) return dropped;
  if (!icmp_limit_.allow(now_, cfg_.ticks_per_second)) {
    counters_->icmp_rate_limited.add();
    return dropped;
  }
  src_mac.store(p);
  cfg_.ports[port].mac.store(p + 6);
  f.len = static_cast<uint16_t>(pk.l3 +
                                write_icmp_error(p + pk.l3, type, code, mtu, cfg_.ports[port].ip));
  (type == icmp_type::kTimeExceeded ? counters_->icmp_time_exceeded : counters_->icmp_frag_needed)
      .add();
  return {Action::kTx, port, 0, why};
}

// forward = "tunnel": the client's packet, unchanged, inside an outer header from the backend
// port's address to the backend, to the backend's next hop.
Verdict Processor::tunnel_to_backend(Frame& f, const ParsedPacket& pk, Flow& fl,
                                     const MacAddr& next_hop, bool relayed) {
  const PortInfo& out = cfg_.ports[fl.backend_port_id];
  if (pk.ip_total_len + kTunnelOverhead > out.mtu)
    return icmp_error(f, pk, fl.client_port_id, icmp_type::kDestUnreachable, icmp_type::kFragNeeded,
                      static_cast<uint16_t>(out.mtu - kTunnelOverhead), DropReason::kFragNeeded);
  const size_t ip_at = size_t{f.off} + pk.l3;
  if (ip_at < kEthHeaderLen + kTunnelOverhead) return drop(DropReason::kNoBuffer);
  uint8_t* outer = f.buf() + ip_at - kTunnelOverhead;
  write_ipip_header(outer, f.buf() + ip_at, pk.ip_total_len, out.ip, fl.backend_ip);
  uint8_t* e = outer - kEthHeaderLen;
  next_hop.store(e);
  out.mac.store(e + 6);
  store_be16(e + 12, kEtherTypeIpv4);
  f.move_start(static_cast<size_t>(e - f.buf()));
  f.len = static_cast<uint16_t>(kEthHeaderLen + kTunnelOverhead + pk.ip_total_len);
  counters_->tunnel_packets.add();
  if (relayed) return tx(fl.backend_port_id);
  BackendCounters& bc = counters_->backend[raw(fl.backend)];
  bc.packets_in.add();
  bc.bytes_in.add(pk.ip_total_len);
  return tx(fl.backend_port_id);
}

}  // namespace lb::core
