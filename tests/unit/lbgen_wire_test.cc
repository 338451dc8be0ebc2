// lb-gen's checks of what comes back verify checksums with native-order 8-byte adds
// (tools/lb_gen/wire.h): they must agree with the RFC 1071 word sum, whatever the segment's
// length, and refuse any single corrupted byte.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "../../tools/lb_gen/wire.h"

namespace {

using namespace lb::gen;

// An IPv4/TCP frame with both checksums computed by the big-endian word sum.
std::vector<uint8_t> frame(size_t payload, uint32_t seed) {
  std::vector<uint8_t> f(kPayload + payload);
  for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<uint8_t>(seed * 131 + i * 7 + 3);
  uint8_t* ip = f.data() + kIp;
  ip[0] = 0x45;
  wr16(ip + 2, static_cast<uint16_t>(40 + payload));
  ip[9] = 6;
  wr16(ip + 10, 0);
  wr16(ip + 10, finish(sum_words(ip, 20)));
  uint8_t* tcp = f.data() + kTcp;
  tcp[12] = 0x50;
  wr16(tcp + 16, 0);
  const uint64_t pseudo = pseudo_sum(rd32(ip + 12), rd32(ip + 16), 20 + payload);
  wr16(tcp + 16, finish(sum_words(tcp, 20 + payload, pseudo)));
  return f;
}

TEST(LbGenWire, NativeSumsVerifyWhatTheWordSumBuilt) {
  for (size_t payload = 0; payload <= 40; ++payload)
    for (uint32_t seed = 0; seed < 16; ++seed) {
      const std::vector<uint8_t> f = frame(payload, seed);
      EXPECT_TRUE(ip_csum_ok(f.data())) << payload << " " << seed;
      EXPECT_TRUE(tcp_csum_ok(f.data(), 40 + payload)) << payload << " " << seed;
    }
}

TEST(LbGenWire, AnyCorruptedByteIsRefused) {
  for (size_t payload : {0u, 7u, 8u, 13u}) {
    const std::vector<uint8_t> good = frame(payload, 5);
    for (size_t at = kIp; at < good.size(); ++at) {
      if (at == kIp + 2 || at == kIp + 3) continue;  // the total length sets what is summed
      std::vector<uint8_t> f = good;
      f[at] ^= 0x10;
      const bool ip_ok = ip_csum_ok(f.data());
      const bool tcp_ok = tcp_csum_ok(f.data(), 40 + payload);
      if (at < kIp + 12)
        EXPECT_FALSE(ip_ok) << "byte " << at;
      else if (at >= kIp + 12 && at < kTcp)  // addresses: in both sums
        EXPECT_FALSE(ip_ok || tcp_ok) << "byte " << at;
      else
        EXPECT_FALSE(tcp_ok) << "byte " << at << " payload " << payload;
    }
  }
}

}  // namespace
