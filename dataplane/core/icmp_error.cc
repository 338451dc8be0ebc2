// ICMP errors that quote a packet of a flow (destination unreachable, fragmentation needed among
// them, and time exceeded), translated through the flow's NAT and sent to the other end, as
// IPVS's ip_vs_in_icmp/ip_vs_out_icmp and DPVS do: without it a backend's "fragmentation needed"
// never reaches the client (which only knows the VIP) and path MTU discovery stalls.
//
// The quoted packet is one lbd sent, so it is post-NAT; reversed, it is a packet the flow would
// receive:
//   quoted client|local -> backend   (an error from the backend's side, about lbd -> backend):
//     dnat: the backend key reversed (backend, client, bport, cport);
//     fullnat: (local address, local port) -> SnatPorts;
//     goes to the client, about VIP:vport <- client:cport, from the VIP (as IPVS does).
//   quoted VIP -> client             (an error from the client's side, about lbd -> client):
//     the client key reversed (client, VIP, cport, vport);
//     goes to the backend, about backend:bport -> client|local:port; in fullnat from the local
//     address (the backend's socket is connected to it), in dnat from the reporting router.
// Every changed field is updated in the quoted IP header and its checksum, the quoted TCP
// checksum when the quote holds it (incrementally: its payload need not be quoted whole), and
// the outer header; the ICMP checksum is recomputed over the message.
//
// forward = "tunnel" (lbd sees the client side only):
//   quoted lbd -> backend IPIP (an error from a router between lbd and the backend about lbd's
//     tunnel packet): the inner quote names the flow (client -> VIP); the outer quote is dropped
//     and the rest goes to the client from lbd's client-side address, a fragmentation-needed's
//     MTU less the tunnel's 20 bytes, as a Linux ipip device does (ipip_err) and as lbd's own
//     fragmentation-needed at the port does;
//   quoted VIP -> client (an error from a router between the backend and the client, addressed
//     to the VIP, which routes to lbd): sent unchanged inside the flow's tunnel to its backend,
//     which holds the VIP and the connection (Katran does the same).

#include <cstring>
#include <optional>

#include "checksum.h"
#include "processor.h"

namespace lb::core {

namespace {
constexpr uint8_t kIcmpDestUnreachable = 3;
constexpr uint8_t kIcmpTimeExceeded = 11;
constexpr size_t kQuotedTcpCsumEnd = tcp_off::kCsum + 2;
}  // namespace

Verdict Processor::icmp_error(Frame& f, const ParsedPacket& pk, const Pool& pool, Tick now) {
  uint8_t* p = f.data();
  uint8_t* ip = p + pk.l3;
  uint8_t* icmp = p + pk.l4;
  // The quoted IPv4 header (no options) and at least the TCP ports and sequence number.
  if (pk.l4_payload_len < kIcmpHeaderLen + kIpv4HeaderLen + 8)
    return drop(DropReason::kIcmpMalformed);
  uint8_t* qip = icmp + kIcmpHeaderLen;
  if (qip[ip_off::kVerIhl] == 0x45 && qip[ip_off::kProto] == kIpProtoIpip)
    return icmp_error_tunnel(f, pk, now);
  if (qip[ip_off::kVerIhl] != 0x45 || qip[ip_off::kProto] != kIpProtoTcp)
    return drop(DropReason::kIcmpErrorNoFlow);
  uint8_t* qt = qip + kIpv4HeaderLen;
  const size_t quoted_l4 = pk.l4_payload_len - kIcmpHeaderLen - kIpv4HeaderLen;
  const uint32_t qsrc = load_be32(qip + ip_off::kSrc), qdst = load_be32(qip + ip_off::kDst);
  const uint16_t qsport = load_be16(qt + tcp_off::kSport), qdport = load_be16(qt + tcp_off::kDport);
  // An error goes back to the quoted packet's sender: lbd, under the address it sent from.
  if (pk.dst_ip != qsrc) return drop(DropReason::kIcmpErrorNoFlow);

  // Which flow, and which worker owns it.
  uint32_t idx = FlowTable::kNoFlow;
  bool to_client;  // the error is about lbd -> backend: it goes to the client
  uint16_t owner = cfg_.worker;
  const int li = snat_.addresses() != 0 ? snat_.find(qsrc) : -1;
  if (li >= 0) {  // fullnat, about local -> backend
    to_client = true;
    owner = SnatPorts::owner_of(qsport, cfg_.workers);
    if (owner == cfg_.worker) {
      idx = snat_.flow_of(static_cast<uint8_t>(li), qsport);
      if (idx != FlowTable::kNoFlow) {
        const Flow& fl = table_.at(idx);
        if (!fl.in_use || fl.backend_ip != qdst || fl.backend_port != qdport)
          idx = FlowTable::kNoFlow;
      }
    }
  } else {
    const bool from_vip = pool.is_vip(qsrc);
    to_client = !from_vip;
    // Either way the client's address and port are in the quote: its owner's.
    owner = from_vip ? flow_owner(qdst, qdport, cfg_.workers, cfg_.reta_size)
                     : flow_owner(qsrc, qsport, cfg_.workers, cfg_.reta_size);
    if (owner == cfg_.worker) {
      const FlowKey k{qdst, qsrc, qdport, qsport};
      Dir dir;
      idx = table_.lookup(k, table_.hash(k), dir);
      // The flow must be the one the quote's direction names. A quote to a backend from the
      // client's own address finds dnat flows only: a full-NAT flow is not indexed under its
      // backend key (its packets to the backend leave from a local address, above).
      if (idx != FlowTable::kNoFlow && (dir == Dir::kFromClient) != from_vip)
        idx = FlowTable::kNoFlow;
    }
  }
  if (owner != cfg_.worker) return {Action::kHandoff, 0, owner, DropReason::kTruncated};
  // A reset flow (its backend left: backend_stopped) is kept only to answer the client's and the
  // backend's late segments with RSTs: it names no backend (kNoBackend) and its next-hop slot
  // may have gone to another address. An error about it is about a connection that is over.
  if (idx == FlowTable::kNoFlow || table_.at(idx).state == TcpState::kReset)
    return drop(DropReason::kIcmpErrorNoFlow);
  // A budget of its own, so that relaying a flood of errors cannot starve lbd's own.
  if (!icmp_relay_limit_.allow(now, cfg_.ticks_per_second))
    return drop(DropReason::kIcmpErrorRateLimited);
  Flow& fl = table_.at(idx);
  if (fl.forward == ForwardMode::kTunnel) {
    if (to_client) return drop(DropReason::kIcmpErrorNoFlow);  // lbd sends a tunnel flow no TCP
    // Too big for the tunnel: only dropped, where tunnel_to_backend would answer
    // fragmentation-needed, and an error is never sent about an error (RFC 1122 3.2.2).
    if (pk.ip_total_len + kTunnelOverhead > cfg_.ports[fl.backend_port_id].mtu)
      return drop(DropReason::kFragNeeded);
    const std::optional<MacAddr> mac = neighbors_.lookup(fl.neighbor);
    if (!mac) return drop(DropReason::kNeighborUnresolved);
    counters_->icmp_errors_translated.add();
    return tunnel_to_backend(f, pk, fl, *mac, /*relayed=*/true);
  }
  const uint32_t local = fl.fullnat() ? snat_.address(fl.local_addr) : 0;

  // The quote's new addresses and ports.
  uint32_t nsrc, ndst;
  uint16_t nsport, ndport;
  uint32_t outer_src = load_be32(ip + ip_off::kSrc), outer_dst;
  if (to_client) {  // quoted client|local -> backend becomes client -> VIP
    nsrc = fl.client_ip;
    nsport = fl.client_port;
    ndst = fl.vip;
    ndport = fl.vport;
    outer_src = fl.vip;
    outer_dst = fl.client_ip;
  } else {  // quoted VIP -> client becomes backend -> client|local
    nsrc = fl.backend_ip;
    nsport = fl.backend_port;
    ndst = fl.fullnat() ? local : fl.client_ip;
    ndport = fl.fullnat() ? fl.local_port : fl.client_port;
    if (fl.fullnat()) outer_src = local;
    outer_dst = fl.backend_ip;
  }
  const uint32_t dq = csum_delta32(qsrc, nsrc) + csum_delta32(qdst, ndst);
  store_be16(qip + ip_off::kCsum, csum_apply(load_be16(qip + ip_off::kCsum), dq));
  if (quoted_l4 >= kQuotedTcpCsumEnd) {
    store_be16(qt + tcp_off::kCsum,
               csum_apply(load_be16(qt + tcp_off::kCsum),
                          dq + csum_delta16(qsport, nsport) + csum_delta16(qdport, ndport)));
  }
  store_be32(qip + ip_off::kSrc, nsrc);
  store_be32(qip + ip_off::kDst, ndst);
  store_be16(qt + tcp_off::kSport, nsport);
  store_be16(qt + tcp_off::kDport, ndport);
  store_be16(icmp + 2, 0);
  store_be16(icmp + 2, csum(icmp, pk.l4_payload_len));
  store_be32(ip + ip_off::kSrc, outer_src);
  store_be32(ip + ip_off::kDst, outer_dst);
  store_be16(ip + ip_off::kCsum, 0);
  store_be16(ip + ip_off::kCsum, csum(ip, kIpv4HeaderLen));

  if (to_client) {
    if (!write_l2(f, pk, fl.client_mac, cfg_.ports[fl.client_port_id].mac, fl.client_tagged != 0,
                  fl.client_vlan))
      return drop(DropReason::kNoBuffer);
    counters_->icmp_errors_translated.add();
    return tx(fl.client_port_id);
  }
  const std::optional<MacAddr> mac = neighbors_.lookup(fl.neighbor);
  if (!mac) return drop(DropReason::kNeighborUnresolved);
  if (!write_l2(f, pk, *mac, cfg_.ports[fl.backend_port_id].mac, false, 0))
    return drop(DropReason::kNoBuffer);
  counters_->icmp_errors_translated.add();
  return tx(fl.backend_port_id);
}

// An error about lbd's own tunnel packet (see the top of this file).
Verdict Processor::icmp_error_tunnel(Frame& f, const ParsedPacket& pk, Tick now) {
  uint8_t* p = f.data();
  uint8_t* ip = p + pk.l3;
  uint8_t* icmp = p + pk.l4;
  uint8_t* qip = icmp + kIcmpHeaderLen;
  // The outer quote, then the inner IPv4 header (no options) and the TCP ports and sequence.
  if (pk.l4_payload_len < kIcmpHeaderLen + kTunnelOverhead + kIpv4HeaderLen + 8)
    return drop(DropReason::kIcmpMalformed);
  const uint8_t* inner = qip + kTunnelOverhead;
  if (inner[ip_off::kVerIhl] != 0x45 || inner[ip_off::kProto] != kIpProtoTcp)
    return drop(DropReason::kIcmpErrorNoFlow);
  const uint32_t qsrc = load_be32(qip + ip_off::kSrc), qdst = load_be32(qip + ip_off::kDst);
  const uint8_t* it = inner + kIpv4HeaderLen;
  const uint32_t client = load_be32(inner + ip_off::kSrc), vip = load_be32(inner + ip_off::kDst);
  const uint16_t cport = load_be16(it + tcp_off::kSport), vport = load_be16(it + tcp_off::kDport);
  if (pk.dst_ip != qsrc) return drop(DropReason::kIcmpErrorNoFlow);
  const uint16_t owner = flow_owner(client, cport, cfg_.workers, cfg_.reta_size);
  if (owner != cfg_.worker) return {Action::kHandoff, 0, owner, DropReason::kTruncated};
  const FlowKey k{client, vip, cport, vport};
  Dir dir;
  const uint32_t idx = table_.lookup(k, table_.hash(k), dir);
  if (idx == FlowTable::kNoFlow || dir != Dir::kFromClient)
    return drop(DropReason::kIcmpErrorNoFlow);
  const Flow& fl = table_.at(idx);
  if (fl.forward != ForwardMode::kTunnel || fl.backend_ip != qdst ||
      cfg_.ports[fl.backend_port_id].ip != qsrc)
    return drop(DropReason::kIcmpErrorNoFlow);
  if (!icmp_relay_limit_.allow(now, cfg_.ticks_per_second))
    return drop(DropReason::kIcmpErrorRateLimited);
  // The client's packet had room for the tunnel's header less than the router said.
  if (icmp[0] == icmp_type::kDestUnreachable && icmp[1] == icmp_type::kFragNeeded) {
    const uint16_t mtu = load_be16(icmp + 6);
    store_be16(icmp + 6, mtu > kMinIpv4Mtu + kTunnelOverhead
                             ? static_cast<uint16_t>(mtu - kTunnelOverhead)
                             : kMinIpv4Mtu);
  }
  const size_t quote = pk.l4_payload_len - kIcmpHeaderLen - kTunnelOverhead;
  std::memmove(qip, qip + kTunnelOverhead, quote);
  const size_t icmp_len = kIcmpHeaderLen + quote;
  store_be16(icmp + 2, 0);
  store_be16(icmp + 2, csum(icmp, icmp_len));
  const PortInfo& out = cfg_.ports[fl.client_port_id];
  write_ipv4_header(ip, 0, static_cast<uint16_t>(kIpv4HeaderLen + icmp_len), 0, 0, kIcmpTtl,
                    kIpProtoIcmp, out.ip, fl.client_ip);
  if (!write_l2(f, pk, fl.client_mac, out.mac, fl.client_tagged != 0, fl.client_vlan))
    return drop(DropReason::kNoBuffer);
  f.len = static_cast<uint16_t>(f.len - kTunnelOverhead);  // write_l2 counted the outer quote
  counters_->icmp_errors_translated.add();
  return tx(fl.client_port_id);
}

bool Processor::is_icmp_error(const uint8_t* icmp) {
  return icmp[0] == kIcmpDestUnreachable || icmp[0] == kIcmpTimeExceeded;
}

}  // namespace lb::core
