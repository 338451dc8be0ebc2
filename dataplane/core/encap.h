#pragma once
// What lbd does as a router hop rather than a NAT: IPIP encapsulation for forward = "tunnel"
// (direct server return) and the two ICMP errors a router sends, fragmentation-needed (a client
// packet that no longer fits the backend port once wrapped) and time-exceeded (dnat's TTL ran
// out here). Builders over byte buffers, used by Processor (its hooks are defined in encap.cc).
// Packet path: no allocation, no locks, no system calls.

#include <cstddef>
#include <cstdint>

#include "bytes.h"
#include "checksum.h"
#include "packet.h"

namespace lb::core {

inline constexpr uint8_t kIpProtoIpip = 4;
// The outer header: what a tunnel packet costs on the wire, and what a client's path MTU loses.
inline constexpr uint16_t kTunnelOverhead = kIpv4HeaderLen;
inline constexpr uint8_t kTunnelTtl = 64;
inline constexpr uint16_t kDefaultMtu = 1500;
inline constexpr uint16_t kMinIpv4Mtu = 68;  // RFC 791: every link carries 68 bytes whole
inline constexpr uint8_t kIcmpTtl = 64;
// An ICMP error quotes the offending packet's IPv4 header and its first 8 payload bytes (RFC
// 792): enough for the sender to find its socket (the TCP ports and sequence number).
inline constexpr size_t kIcmpQuoteLen = kIpv4HeaderLen + 8;
inline constexpr size_t kIcmpErrorIpLen = kIpv4HeaderLen + kIcmpHeaderLen + kIcmpQuoteLen;  // 56

namespace icmp_type {
inline constexpr uint8_t kDestUnreachable = 3, kTimeExceeded = 11;
inline constexpr uint8_t kFragNeeded = 4;  // code of kDestUnreachable
}  // namespace icmp_type

// The one writer of the IPv4 headers lbd makes itself (the tunnel's outer header, ICMP errors,
// RSTs): no options, the header checksum computed. Inline: it is on the packet path.
inline void write_ipv4_header(uint8_t* ip, uint8_t tos, uint16_t total_len, uint16_t id,
                              uint16_t frag, uint8_t ttl, uint8_t proto, uint32_t src,
                              uint32_t dst) {
  ip[ip_off::kVerIhl] = 0x45;
  ip[1] = tos;
  store_be16(ip + ip_off::kTotalLen, total_len);
  store_be16(ip + ip_off::kId, id);
  store_be16(ip + ip_off::kFrag, frag);
  ip[ip_off::kTtl] = ttl;
  ip[ip_off::kProto] = proto;
  store_be32(ip + ip_off::kSrc, src);
  store_be32(ip + ip_off::kDst, dst);
  store_be16(ip + ip_off::kCsum, 0);
  store_be16(ip + ip_off::kCsum, csum(ip, kIpv4HeaderLen));
}

// Wraps the IPv4 packet at `ip` (`total_len` bytes) in an outer IPv4 header written in the
// kIpv4HeaderLen bytes before it: src -> dst, protocol 4, TTL kTunnelTtl, TOS, id and DF copied
// from the inner header (RFC 2003 3.1), header checksum computed. The inner packet is not
// touched. `outer` must point kIpv4HeaderLen bytes before `ip`.
void write_ipip_header(uint8_t* outer, const uint8_t* ip, uint16_t total_len, uint32_t src,
                       uint32_t dst);

// Turns the IPv4 packet at `ip` (at least kIcmpQuoteLen bytes readable) into an ICMP error of
// `type`/`code` from `src` to the packet's source, in place: a fresh IPv4 header (TTL 64, no DF:
// an error must not itself need fragmentation-needed), the ICMP header with `mtu` in its
// next-hop MTU field (type 3 code 4; 0 otherwise), and the quote. `ip` must have
// kIcmpErrorIpLen writable bytes. Returns kIcmpErrorIpLen.
size_t write_icmp_error(uint8_t* ip, uint8_t type, uint8_t code, uint16_t mtu, uint32_t src);

// Per-worker limit on the ICMP errors lbd originates (RFC 1812 4.3.2.8): a token bucket of
// kBurst, refilled at kPerSecond. A flood of expiring or oversize packets costs the worker a
// compare each beyond it, and its victims at most kPerSecond errors a second.
class IcmpLimiter {
 public:
  static constexpr uint32_t kPerSecond = 1000;
  static constexpr uint32_t kBurst = 100;
  bool allow(uint64_t now, uint64_t ticks_per_second) {
    const uint64_t per_token = ticks_per_second / kPerSecond ? ticks_per_second / kPerSecond : 1;
    if (now - last_ >= per_token) {
      const uint64_t add = (now - last_) / per_token;
      tokens_ = add >= kBurst - tokens_ ? kBurst : tokens_ + static_cast<uint32_t>(add);
      last_ += add * per_token;
      if (tokens_ == kBurst) last_ = now;
    }
    if (tokens_ == 0) return false;
    --tokens_;
    return true;
  }

 private:
  uint64_t last_ = 0;
  uint32_t tokens_ = kBurst;
};

}  // namespace lb::core
