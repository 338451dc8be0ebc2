#pragma once
// What lbd's two in-process benchmarks (lbcore_bench, lbd_worker_cost) share: the service they
// balance, how flow i's client is numbered, and the Ethernet/IPv4/TCP frames they feed lbd.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bytes.h"
#include "checksum.h"

namespace lb::bench {

constexpr uint32_t kVip = 0x0a0a0064;  // 10.10.0.100
constexpr uint16_t kVport = 80;
constexpr uint32_t kClientNet = 0x0a800000;  // 10.128.0.0
constexpr uint16_t kPortBase = 1024;
constexpr uint32_t kPortsPerIp = 60000;

// Flow i's client: 10.128.0.0 + i / 60000, port 1024 + i % 60000.
inline uint32_t client_ip(uint32_t i) {
  return kClientNet + i / kPortsPerIp;
}
inline uint16_t client_port(uint32_t i) {
  return static_cast<uint16_t>(kPortBase + i % kPortsPerIp);
}

// Recomputes the checksum of the 20-byte IPv4 header at `ip`.
inline void set_ipv4_checksum(uint8_t* ip) {
  core::store_be16(ip + 10, 0);
  core::store_be16(ip + 10, core::csum(ip, 20));
}

// Writes an untagged Ethernet/IPv4/TCP frame of `len` bytes (>= 54) at `f`: IPv4 checksum
// right, TCP checksum 0 (lbd updates it incrementally and never verifies it).
inline void write_tcp_frame(uint8_t* f, size_t len, const uint8_t* dmac, const uint8_t* smac,
                            uint32_t sip, uint16_t sport, uint32_t dip, uint16_t dport,
                            uint8_t flags, uint32_t seq = 0) {
  std::memset(f, 0, len);
  std::memcpy(f, dmac, 6);
  std::memcpy(f + 6, smac, 6);
  core::store_be16(f + 12, 0x0800);
  uint8_t* ip = f + 14;
  ip[0] = 0x45;
  core::store_be16(ip + 2, static_cast<uint16_t>(len - 14));
  core::store_be16(ip + 6, 0x4000);
  ip[8] = 64;
  ip[9] = 6;
  core::store_be32(ip + 12, sip);
  core::store_be32(ip + 16, dip);
  set_ipv4_checksum(ip);
  uint8_t* t = ip + 20;
  core::store_be16(t, sport);
  core::store_be16(t + 2, dport);
  core::store_be32(t + 4, seq);
  t[12] = 0x50;
  t[13] = flags;
  core::store_be16(t + 14, 65535);
}

}  // namespace lb::bench
