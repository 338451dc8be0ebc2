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
  uint64_t to_u64() const {
    uint64_t v = 0;
    for (uint8_t x : b) v = (v << 8) | x;
    return v;
  }
  static MacAddr from_u64(uint64_t v) {
    MacAddr m;
    for (int i = 5; i >= 0; --i) {
      m.b[i] = static_cast<uint8_t>(v & 0xff);
      v >>= 8;
    }
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
