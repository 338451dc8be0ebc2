// The Toeplitz hash and flow ownership (dataplane/core/rss.h) against a reference written from
// the definition and Microsoft's published verification vectors.

#include "rss.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "packet_builder.h"

namespace lb::core {
namespace {

using test::Bytes;
using test::ip4;

// Toeplitz from its definition (Microsoft RSS): for each set bit i of the input, XOR in the 32
// key bits starting at bit i.
uint32_t ref_toeplitz(const std::vector<uint8_t>& key, const std::vector<uint8_t>& in) {
  auto key_bit = [&](size_t i) { return (uint32_t{key[i / 8]} >> (7 - i % 8)) & 1u; };
  uint32_t r = 0;
  for (size_t i = 0; i < in.size() * 8; ++i) {
    if (!((uint32_t{in[i / 8]} >> (7 - i % 8)) & 1u)) continue;
    uint32_t v = 0;
    for (size_t b = 0; b < 32; ++b) v = (v << 1) | key_bit(i + b);
    r ^= v;
  }
  return r;
}

const std::vector<uint8_t> kMsKey = {0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67,
                                     0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
                                     0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
                                     0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

TEST(Toeplitz, MicrosoftVerificationVectors) {
  ASSERT_EQ(std::vector<uint8_t>(kRssKey, kRssKey + 40), kMsKey);
  struct V {
    uint32_t src;
    uint16_t sport;
    uint32_t dst;
    uint16_t dport;
    uint32_t ipv4, ipv4_tcp;
  };
  // "Verifying the RSS Hash Calculation", Windows driver documentation.
  const V vs[] = {
      {ip4(66, 9, 149, 187), 2794, ip4(161, 142, 100, 80), 1766, 0x323e8fc2, 0x51ccc178},
      {ip4(199, 92, 111, 2), 14230, ip4(65, 69, 140, 83), 4739, 0xd718262a, 0xc626b0ea},
      {ip4(24, 19, 198, 95), 12898, ip4(12, 22, 207, 184), 38024, 0xd2d0a5de, 0x5c2b394a},
      {ip4(38, 27, 205, 30), 48228, ip4(209, 142, 163, 6), 2217, 0x82989176, 0xafc7327f},
      {ip4(153, 39, 163, 191), 44251, ip4(202, 188, 127, 2), 1303, 0x5d1809c5, 0x10e828a2},
  };
  for (const V& v : vs) {
    Bytes in;
    test::put32(in, v.src);
    test::put32(in, v.dst);
    EXPECT_EQ(toeplitz_hash(kRssKey, in.data(), in.size()), v.ipv4);
    EXPECT_EQ(ref_toeplitz(kMsKey, in), v.ipv4);
    test::put16(in, v.sport);
    test::put16(in, v.dport);
    EXPECT_EQ(toeplitz_hash(kRssKey, in.data(), in.size()), v.ipv4_tcp);
    EXPECT_EQ(ref_toeplitz(kMsKey, in), v.ipv4_tcp);
  }
}

TEST(FlowOwner, IsTheRssQueueOfTheClientFields) {
  std::mt19937 rng(3);
  std::map<uint16_t, int> spread;
  for (int i = 0; i < 20000; ++i) {
    const auto ip = static_cast<uint32_t>(rng());
    const auto port = static_cast<uint16_t>(rng());
    Bytes in;
    test::put32(in, ip);
    test::put16(in, port);
    const uint32_t h = ref_toeplitz(kMsKey, in);
    for (uint16_t workers : {uint16_t{2}, uint16_t{3}, uint16_t{4}, uint16_t{7}}) {
      for (uint16_t reta : {uint16_t{64}, uint16_t{128}, uint16_t{512}}) {
        const uint16_t want = static_cast<uint16_t>((h % reta) % workers);
        ASSERT_EQ(flow_owner(ip, port, workers, reta), want);
      }
    }
    EXPECT_EQ(flow_owner(ip, port, 1, 128), 0);
    EXPECT_EQ(flow_owner(ip, port, 0, 128), 0);
    ++spread[flow_owner(ip, port, 4, 128)];
  }
  for (uint16_t w = 0; w < 4; ++w) EXPECT_NEAR(spread[w], 5000, 400) << w;
}

}  // namespace
}  // namespace lb::core

namespace lb::core {
namespace {

// Two arms: the client port hashes sources, the backend port destinations; one arm (a port with
// clients and backends), or a backend port that also answers for a VIP, hashes all four fields.
TEST(RssFields, ByWhatEachPortReceives) {
  using F = RssFields;
  EXPECT_EQ(rss_fields({{false, true}, {true, false}}),
            (std::vector<F>{F::kSource, F::kDestination}));
  // One arm: the backends' port is where clients arrive too (its VIP answered there or routed).
  EXPECT_EQ(rss_fields({{true, true}}), (std::vector<F>{F::kFourTuple}));
  EXPECT_EQ(rss_fields({{true, false}}), (std::vector<F>{F::kFourTuple}));
  // Two ports both reaching backends, one answering for the VIPs: neither receives clients only.
  EXPECT_EQ(rss_fields({{true, true}, {true, false}}),
            (std::vector<F>{F::kFourTuple, F::kFourTuple}));
  // A client port, and a backend port that answers for a VIP as well.
  EXPECT_EQ(rss_fields({{false, true}, {true, true}}), (std::vector<F>{F::kSource, F::kFourTuple}));
  EXPECT_TRUE(rss_fields({}).empty());
}

}  // namespace
}  // namespace lb::core
