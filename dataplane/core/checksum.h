#pragma once
// Internet checksum (RFC 1071) and its incremental update (RFC 1624, eqn. 3: HC' = ~(~HC + ~m +
// m')). All 16-bit words are taken in network order, as load_be16 reads them.

#include <bit>
#include <cstddef>
#include <cstdint>

#include "bytes.h"

namespace lb::core {

// One's-complement sum of `len` bytes added to `sum` (not folded, not complemented).
inline uint32_t csum_partial(const uint8_t* p, size_t len, uint32_t sum = 0) {
  uint64_t acc = sum;
  while (len >= 2) {
    acc += load_be16(p);
    p += 2;
    len -= 2;
  }
  if (len) acc += static_cast<uint32_t>(p[0]) << 8;
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint32_t>(acc);
}

inline uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

// The full checksum of a buffer, ready to store.
inline uint16_t csum(const uint8_t* p, size_t len) {
  return csum_fold(csum_partial(p, len));
}

// TCP/UDP pseudo-header sum for IPv4 (addresses in host order of their big-endian words).
inline uint32_t csum_pseudo_ipv4(uint32_t src, uint32_t dst, uint8_t proto, uint16_t l4_len) {
  uint64_t acc = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + l4_len;
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint32_t>(acc);
}

// RFC 1624 update of checksum `hc` when a 16-bit word changes from `from` to `to`.
inline uint16_t csum_update16(uint16_t hc, uint16_t from, uint16_t to) {
  uint32_t sum = static_cast<uint16_t>(~hc);
  sum += static_cast<uint16_t>(~from);
  sum += to;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// The same for a 32-bit field (an IPv4 address): two 16-bit words at once.
inline uint16_t csum_update32(uint16_t hc, uint32_t from, uint32_t to) {
  uint32_t sum = static_cast<uint16_t>(~hc);
  sum += static_cast<uint16_t>(~(from >> 16));
  sum += static_cast<uint16_t>(~from);
  sum += to >> 16;
  sum += to & 0xffff;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// The same update split in two (RFC 1624): the unfolded sum that changing `from` into `to`
// adds, computed once per packet and applied to both the IPv4 and the TCP checksum.
inline uint32_t csum_delta32(uint32_t from, uint32_t to) {
  return (~from >> 16) + (~from & 0xffff) + (to >> 16) + (to & 0xffff);
}
inline uint32_t csum_delta16(uint16_t from, uint16_t to) {
  return static_cast<uint16_t>(~from) + uint32_t{to};
}
inline uint16_t csum_apply(uint16_t hc, uint32_t delta) {
  uint32_t sum = static_cast<uint16_t>(~hc) + delta;  // delta < 2^19: no overflow
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// One's-complement arithmetic on words as they lie in memory (loaded with memcpy, not swapped):
// the sum of byte-swapped 16-bit words is the byte-swapped sum (RFC 1071, 2.(B)), so a checksum
// and the fields it covers can be updated without swapping either. 32-bit addition with the
// end-around carry, and the fold of a 32-bit sum to 16 bits in one add of its rotation (the
// high half gets low + high + the carry out of the low half). Neither gives 0 for a sum that
// is not all zeros, as the fold loops above do not.
inline uint32_t csum_add32(uint32_t a, uint32_t b) {
  a += b;
  return a + (a < b);
}
inline uint16_t csum_fold32(uint32_t x) {
  return static_cast<uint16_t>((x + std::rotl(x, 16)) >> 16);
}

}  // namespace lb::core
