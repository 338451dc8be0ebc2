#pragma once
// Shared by the fuzz targets. Each target is one LLVMFuzzerTestOneInput in its own file, linked
// either with libFuzzer (clang, -Dfuzz=true: tests/fuzz/meson.build) or with replay_main.cc (any
// compiler: the unit suite replays the seed corpus and every regression input through the same
// function). A broken invariant prints what broke and aborts, which both treat as a failure.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define LB_FUZZ_CHECK(cond, ...)                                                                 \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "fuzz invariant broken at %s:%d: %s\n  ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                         \
      std::fprintf(stderr, "\n");                                                                \
      std::abort();                                                                              \
    }                                                                                            \
  } while (0)

namespace lb::fuzz {

// Reads the fuzz input as a stream of small decisions. Past the end every read is 0, so any
// input decodes to a valid program (libFuzzer's FuzzedDataProvider does the same; its header is
// clang's, and the replay build may use gcc).
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ == end_; }
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  uint8_t u8() { return p_ == end_ ? 0 : *p_++; }
  // Two statements: the operands of | are unsequenced, and gcc and clang read them in
  // different orders.
  uint16_t u16() {
    const uint16_t hi = u8();
    return static_cast<uint16_t>(hi << 8 | u8());
  }
  uint32_t u32() {
    const uint32_t hi = u16();
    return hi << 16 | u16();
  }
  bool bit() { return (u8() & 1) != 0; }
  // One of n choices (0 < n <= 256).
  uint8_t pick(uint32_t n) { return static_cast<uint8_t>(u8() % n); }
  // Up to `max` raw bytes (fewer when the input ends).
  const uint8_t* take(size_t& n, size_t max) {
    n = max < left() ? max : left();
    const uint8_t* q = p_;
    p_ += n;
    return q;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace lb::fuzz
