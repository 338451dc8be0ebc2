#pragma once
// Network-order field access over raw bytes. Packets are untrusted and unaligned: every access
// goes through memcpy, which compilers turn into a single (byte-swapped) load or store.

#include <bit>
#include <cstdint>
#include <cstring>

namespace lb::core {

// std::byteswap is C++23; these are what it would do for the sizes we use.
inline uint16_t byteswap(uint16_t v) {
  return __builtin_bswap16(v);
}
inline uint32_t byteswap(uint32_t v) {
  return __builtin_bswap32(v);
}
inline uint64_t byteswap(uint64_t v) {
  return __builtin_bswap64(v);
}

template <class T>
inline T load_be(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::little) v = byteswap(v);
  return v;
}

template <class T>
inline void store_be(uint8_t* p, T v) {
  if constexpr (std::endian::native == std::endian::little) v = byteswap(v);
  std::memcpy(p, &v, sizeof v);
}

inline uint16_t load_be16(const uint8_t* p) {
  return load_be<uint16_t>(p);
}
inline uint32_t load_be32(const uint8_t* p) {
  return load_be<uint32_t>(p);
}
inline uint64_t load_be64(const uint8_t* p) {
  return load_be<uint64_t>(p);
}
inline void store_be16(uint8_t* p, uint16_t v) {
  store_be<uint16_t>(p, v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  store_be<uint32_t>(p, v);
}

struct MacAddr {
  uint8_t b[6]{};
  bool operator==(const MacAddr&) const = default;
  bool is_zero() const { return (b[0] | b[1] | b[2] | b[3] | b[4] | b[5]) == 0; }
  bool is_broadcast() const { return (b[0] & b[1] & b[2] & b[3] & b[4] & b[5]) == 0xff; }
  bool is_multicast() const { return (b[0] & 1) != 0; }
  // The 48-bit value of the address, first byte most significant: one byte-swapped load and a
  // shift, where a byte loop cost ~20 instructions on every packet to a backend (neighbor MAC).
  uint64_t to_u64() const {
    uint64_t v = 0;
    std::memcpy(&v, b, 6);
    if constexpr (std::endian::native == std::endian::little) return byteswap(v) >> 16;
    return v >> 16;
  }
  static MacAddr from_u64(uint64_t v) {
    MacAddr m;
    if constexpr (std::endian::native == std::endian::little)
      v = byteswap(v << 16);
    else
      v <<= 16;
    std::memcpy(m.b, &v, 6);
    return m;
  }
  // The address as the 8 bytes whose first 6 are the address in wire order (the last two are
  // zero): what one 8-byte store puts at a frame's front when bytes 6 and 7 are written next.
  uint64_t image() const {
    uint64_t v = 0;
    std::memcpy(&v, b, 6);
    return v;
  }
  // image() of the address whose to_u64() is the low 48 bits of `v` (the bits above are ignored).
  static uint64_t image_of_u64(uint64_t v) {
    if constexpr (std::endian::native == std::endian::little) return byteswap(v << 16);
    return v << 16;
  }
  static MacAddr from_image(uint64_t image) {
    MacAddr m;
    std::memcpy(m.b, &image, 6);
    return m;
  }
  static MacAddr load(const uint8_t* p) {
    MacAddr m;
    std::memcpy(m.b, p, 6);
    return m;
  }
  void store(uint8_t* p) const { std::memcpy(p, b, 6); }
};

inline constexpr MacAddr kBroadcastMac{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

}  // namespace lb::core
