// Full-NAT (docs/architecture.md, "Full-NAT"): a flow of a fullnat service leaves lbd from one
// of its local addresses and a local port of the owning worker (snat.h), so that the backend
// answers lbd whatever its routes. The backend's replies carry (local address, local port) as
// destination: the port names the owning worker (another worker hands the packet over, DPVS's
// "conn redirect") and, there, the flow by direct index.

#include "checksum.h"
#include "processor.h"

namespace lb::core {

Verdict Processor::fullnat_reply(Frame& f, const ParsedPacket& pk, int li, const Pool& pool,
                                 Tick now) {
  const uint16_t owner = SnatPorts::owner_of(pk.dst_port, cfg_.workers);
  if (owner != cfg_.worker) return {Action::kHandoff, 0, owner, DropReason::kTruncated};
  const uint32_t idx = snat_.flow_of(static_cast<uint8_t>(li), pk.dst_port);
  if (idx == SnatPorts::kNoFlow) return drop(DropReason::kFullnatNoFlow);
  const Flow& fl = table_.at(idx);
  // The port may have been reused by a flow to another backend: only its own backend's
  // segments are its replies.
  if (!fl.in_use || fl.backend_ip != pk.src_ip || fl.backend_port != pk.src_port)
    return drop(DropReason::kFullnatNoFlow);
  return from_backend(f, pk, idx, pool, now);
}

SnatPorts::Alloc Processor::fullnat_bind(uint32_t idx) {
  Flow& fl = table_.at(idx);
  uint8_t li;
  uint16_t port;
  const SnatPorts::Alloc r = snat_.alloc(idx, li, port, now_);
  if (r != SnatPorts::Alloc::kOk) {
    for (uint32_t i = 0; i < snat_.addresses(); ++i) counters_->fullnat[i].alloc_failures.add();
    return r;
  }
  counters_->fullnat[li].ports_in_use.add();
  fl.local_addr = li & 0x7f;  // < kMaxLocalAddrs
  fl.local_port = port;
  return SnatPorts::Alloc::kOk;
}

// client:cport -> VIP:vport becomes local:lport -> backend:bport. One delta for both checksums
// (RFC 1624); the TCP one also takes the ports.
void Processor::fullnat_to_backend(uint8_t* ip, uint8_t* t, const Flow& fl, uint32_t local_ip) {
  const uint32_t d = csum_delta32(fl.client_ip, local_ip) + csum_delta32(fl.vip, fl.backend_ip);
  store_be16(ip + ip_off::kCsum, csum_apply(load_be16(ip + ip_off::kCsum), d));
  store_be16(t + tcp_off::kCsum, csum_apply(load_be16(t + tcp_off::kCsum),
                                            d + csum_delta16(fl.client_port, fl.local_port) +
                                                csum_delta16(fl.vport, fl.backend_port)));
  store_be32(ip + ip_off::kSrc, local_ip);
  store_be32(ip + ip_off::kDst, fl.backend_ip);
  store_be16(t + tcp_off::kSport, fl.local_port);
  store_be16(t + tcp_off::kDport, fl.backend_port);
}

// backend:bport -> local:lport becomes VIP:vport -> client:cport.
void Processor::fullnat_to_client(uint8_t* ip, uint8_t* t, const Flow& fl, uint32_t local_ip) {
  const uint32_t d = csum_delta32(fl.backend_ip, fl.vip) + csum_delta32(local_ip, fl.client_ip);
  store_be16(ip + ip_off::kCsum, csum_apply(load_be16(ip + ip_off::kCsum), d));
  store_be16(t + tcp_off::kCsum, csum_apply(load_be16(t + tcp_off::kCsum),
                                            d + csum_delta16(fl.backend_port, fl.vport) +
                                                csum_delta16(fl.local_port, fl.client_port)));
  store_be32(ip + ip_off::kSrc, fl.vip);
  store_be32(ip + ip_off::kDst, fl.client_ip);
  store_be16(t + tcp_off::kSport, fl.vport);
  store_be16(t + tcp_off::kDport, fl.client_port);
}

}  // namespace lb::core
