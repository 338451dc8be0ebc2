#pragma once
// lb-gen's own view of the wire: Ethernet, ARP, IPv4 and TCP fields, and the Internet checksum.
// Written independently of dataplane/core on purpose: lb-gen checks what lbd emits, so it must
// not share lbd's parser or checksum code (a bug there would otherwise check itself).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace lb::gen {

inline uint16_t rd16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
inline uint32_t rd32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline void wr16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void wr32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

struct Mac {
  uint8_t b[6]{};
  bool operator==(const Mac&) const = default;
  bool zero() const { return (b[0] | b[1] | b[2] | b[3] | b[4] | b[5]) == 0; }
  void put(uint8_t* p) const { std::memcpy(p, b, 6); }
  static Mac at(const uint8_t* p) {
    Mac m;
    std::memcpy(m.b, p, 6);
    return m;
  }
  std::string str() const {
    char s[24];
    std::snprintf(s, sizeof s, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
    return s;
  }
};

inline std::string ip_str(uint32_t ip) {
  char s[20];
  std::snprintf(s, sizeof s, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff,
                ip & 0xff);
  return s;
}

// Offsets in an untagged Ethernet frame.
inline constexpr size_t kEthHdr = 14;
inline constexpr size_t kIp = 14;
inline constexpr size_t kTcp = 34;
inline constexpr size_t kPayload = 54;   // TCP without options
inline constexpr size_t kMinFrame = 60;  // Ethernet minimum without FCS
inline constexpr size_t kMaxFrame = 1514;
inline constexpr uint16_t kTypeIpv4 = 0x0800;
inline constexpr uint16_t kTypeArp = 0x0806;

namespace flag {
inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;
}

// One's-complement sum of big-endian 16-bit words, not folded. 32-bit loads into a 64-bit
// accumulator: the carries are folded once at the end (a different technique from lbd's).
inline uint64_t sum_words(const uint8_t* p, size_t len, uint64_t acc = 0) {
  while (len >= 4) {
    acc += rd32(p);
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    acc += rd16(p);
    p += 2;
    len -= 2;
  }
  if (len) acc += uint64_t{p[0]} << 8;
  return acc;
}

inline uint16_t fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}

// The checksum to store for data summing to `acc` (the checksum field counted as zero).
inline uint16_t finish(uint64_t acc) {
  return static_cast<uint16_t>(~fold(acc) & 0xffff);
}

inline uint64_t pseudo_sum(uint32_t src, uint32_t dst, size_t tcp_len) {
  return uint64_t{src} + dst + 6u + tcp_len;  // 32-bit halves fold out the same as 16-bit words
}

// The checks of what comes back sum in native byte order, 8 bytes per add with the carries
// counted apart: the one's-complement sum of byte-swapped words is the byte-swapped sum
// (RFC 1071), and "all ones" reads the same either way, so a verify needs no swapping.
inline uint64_t sum_native(const uint8_t* p, size_t len, uint64_t init) {
  uint64_t acc = init, carries = 0;
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    acc += v;
    carries += acc < v;  // 2^64 is 1 in one's-complement arithmetic
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p, len);  // the odd byte, if any, is the high byte of a zero-padded word
  acc += tail;
  carries += acc < tail;
  const uint64_t s = (acc & 0xffffffff) + (acc >> 32) + carries;
  return (s & 0xffffffff) + (s >> 32);
}

inline uint16_t bswap16(uint16_t v) {
  return static_cast<uint16_t>((v << 8) | (v >> 8));
}

// Whether the IPv4 header checksum and the TCP checksum of a frame verify (sum to all ones).
inline bool ip_csum_ok(const uint8_t* frame) {
  return fold(sum_native(frame + kIp, 20, 0)) == 0xffff;
}
inline bool tcp_csum_ok(const uint8_t* frame, size_t ip_total_len) {
  const size_t tcp_len = ip_total_len - 20;
  uint64_t addrs;  // source and destination address, as they lie in the header
  std::memcpy(&addrs, frame + kIp + 12, 8);
  const uint64_t pseudo =
      (addrs & 0xffffffff) + (addrs >> 32) + bswap16(6) + bswap16(static_cast<uint16_t>(tcp_len));
  return fold(sum_native(frame + kTcp, tcp_len, pseudo)) == 0xffff;
}

// A payload tag: lets lb-gen check that what comes back belongs to the flow its headers name.
//   0..1 magic 'L''G', 2 direction (0 client->backend, 1 backend->client), 3 backend index,
//   4..7 tuple id
inline constexpr size_t kTagLen = 8;
inline constexpr uint16_t kTagMagic = 0x4c47;

inline std::string hex(const uint8_t* p, size_t len, size_t max = 96) {
  std::string s;
  char b[4];
  for (size_t i = 0; i < len && i < max; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    s += b;
    if (i % 16 == 15)
      s += '\n';
    else if (i % 2 == 1)
      s += ' ';
  }
  if (len > max) s += "...";
  return s;
}

}  // namespace lb::gen
