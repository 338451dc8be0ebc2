// Internet checksum (RFC 1071) and its incremental update (RFC 1624) against a from-scratch
// reference (ref_sum / ref_checksum in packet_builder.h, which share no code with checksum.h).

#include "checksum.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "packet_builder.h"

namespace lb::core {
namespace {

using test::Bytes;
using test::ref_checksum;
using test::ref_sum;

Bytes random_bytes(std::mt19937_64& rng, size_t n) {
  Bytes b(n);
  for (uint8_t& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

uint16_t word(const Bytes& b, size_t i) {
  return test::get16(b.data() + 2 * i);
}
void set_word(Bytes& b, size_t i, uint16_t v) {
  test::set16(b.data() + 2 * i, v);
}
bool all_zero(const Bytes& b) {
  for (uint8_t x : b)
    if (x) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Full checksum

TEST(Checksum, KnownVectors) {
  // RFC 1071 section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
  const Bytes rfc = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(csum_partial(rfc.data(), rfc.size()), 0xddf2u);
  EXPECT_EQ(csum(rfc.data(), rfc.size()), 0x220d);
  // A real IPv4 header (checksum field zeroed): its checksum is b861.
  const Bytes ip = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                    0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  EXPECT_EQ(csum(ip.data(), ip.size()), 0xb861);
  Bytes with = ip;
  test::set16(with.data() + 10, 0xb861);
  EXPECT_EQ(csum(with.data(), with.size()), 0);  // a correct header verifies to zero
}

TEST(Checksum, EmptyAndDegenerate) {
  EXPECT_EQ(csum(nullptr, 0), 0xffff);
  const Bytes zeros(64, 0);
  EXPECT_EQ(csum(zeros.data(), zeros.size()), 0xffff);
  const Bytes ones(64, 0xff);
  EXPECT_EQ(csum(ones.data(), ones.size()), 0x0000);
  const Bytes one = {0xab};
  EXPECT_EQ(csum(one.data(), 1), static_cast<uint16_t>(~0xab00));
}

TEST(Checksum, MatchesReferenceOnRandomBuffers) {
  std::mt19937_64 rng(1071);
  for (size_t n = 0; n <= 300; ++n) {
    for (int rep = 0; rep < 20; ++rep) {
      const Bytes b = random_bytes(rng, n);
      ASSERT_EQ(csum(b.data(), n), ref_checksum(b)) << "len " << n << "\n" << test::hexdump(b);
      ASSERT_EQ(csum_partial(b.data(), n), ref_sum(b.data(), n)) << "len " << n;
    }
  }
}

TEST(Checksum, ManyCarries) {
  // 64 KiB of 0xff..: every addition carries; the 64-bit accumulator must not lose any.
  std::mt19937_64 rng(7);
  for (size_t n : {65535u, 65536u, 131071u}) {
    Bytes b(n, 0xff);
    EXPECT_EQ(csum(b.data(), n), ref_checksum(b)) << n;
    for (int i = 0; i < 16; ++i) b[rng() % n] = static_cast<uint8_t>(rng());
    EXPECT_EQ(csum(b.data(), n), ref_checksum(b)) << n;
  }
}

TEST(Checksum, PartialSumsChainOnEvenSplits) {
  std::mt19937_64 rng(42);
  for (int rep = 0; rep < 2000; ++rep) {
    const size_t n = rng() % 200;
    const Bytes b = random_bytes(rng, n);
    const size_t k = (rng() % (n / 2 + 1)) * 2;  // an even split point
    const uint32_t first = csum_partial(b.data(), k);
    ASSERT_LE(first, 0xffffu);  // folded
    EXPECT_EQ(csum_fold(csum_partial(b.data() + k, n - k, first)), ref_checksum(b))
        << "len " << n << " split " << k;
  }
}

TEST(Checksum, FoldHandlesLargeSums) {
  EXPECT_EQ(csum_fold(0), 0xffff);
  EXPECT_EQ(csum_fold(0xffff), 0);
  EXPECT_EQ(csum_fold(0x1fffe), 0);          // 0xfffe + 1 carry = 0xffff
  EXPECT_EQ(csum_fold(0xffffffff), 0);       // folds twice
  EXPECT_EQ(csum_fold(0x00010000), 0xfffe);  // 1
  EXPECT_EQ(csum_fold(0x12345), static_cast<uint16_t>(~0x2346));
}

TEST(Checksum, PseudoHeaderMatchesReference) {
  std::mt19937_64 rng(793);
  for (int rep = 0; rep < 10000; ++rep) {
    const auto src = static_cast<uint32_t>(rng());
    const auto dst = static_cast<uint32_t>(rng());
    const auto len = static_cast<uint16_t>(rng());
    const uint8_t proto = rep % 2 ? 6 : 17;
    // The 12 pseudo-header bytes, summed the plain way.
    Bytes ph;
    test::put32(ph, src);
    test::put32(ph, dst);
    test::put8(ph, 0);
    test::put8(ph, proto);
    test::put16(ph, len);
    const uint32_t got = csum_pseudo_ipv4(src, dst, proto, len);
    ASSERT_LE(got, 0xffffu);
    // Equal as one's-complement numbers: 0 and 0xffff are the same value.
    const uint16_t want = ref_sum(ph.data(), ph.size());
    EXPECT_EQ(got % 0xffff, want % 0xffffu) << std::hex << src << " " << dst << " " << len;
    // And what matters: a segment summed from it checksums like the reference.
    const Bytes seg = random_bytes(rng, rng() % 60);
    EXPECT_EQ(csum_fold(csum_partial(seg.data(), seg.size(), got)),
              ref_checksum(seg.data(), seg.size(), test::ref_pseudo(src, dst, proto, len)));
  }
}

// ---------------------------------------------------------------------------------------------
// Incremental update (RFC 1624). For a canonical old checksum (as computed over the data), eqn. 3
// gives exactly the recomputed checksum, with one exception: if the new data sum to zero (all
// zero words), recomputation gives 0xffff and eqn. 3 gives 0x0000, the other representation of
// zero (RFC 1624 section 3 discusses exactly this).

// Checks csum_update16 for one change of word i of `b` (whose checksum is ref_checksum(b)).
::testing::AssertionResult Update16Ok(Bytes b, size_t i, uint16_t to) {
  const uint16_t hc = ref_checksum(b);
  const uint16_t from = word(b, i);
  set_word(b, i, to);
  const uint16_t full = ref_checksum(b);
  const uint16_t upd = csum_update16(hc, from, to);
  const uint16_t want = all_zero(b) ? 0x0000 : full;
  // The split form (delta once, applied where needed) must give the same result.
  const uint16_t split = csum_apply(hc, csum_delta16(from, to));
  if (upd == want && split == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << std::hex << "hc 0x" << hc << " word " << std::dec << i << std::hex << " 0x" << from
         << " -> 0x" << to << ": update 0x" << upd << ", split 0x" << split << ", recomputed 0x"
         << full << "\n"
         << test::hexdump(b);
}

::testing::AssertionResult Update32Ok(Bytes b, size_t i, uint32_t to) {
  const uint16_t hc = ref_checksum(b);
  const uint32_t from = test::get32(b.data() + 2 * i);
  test::set32(b.data() + 2 * i, to);
  const uint16_t full = ref_checksum(b);
  const uint16_t upd = csum_update32(hc, from, to);
  const uint16_t want = all_zero(b) ? 0x0000 : full;
  const uint16_t split = csum_apply(hc, csum_delta32(from, to));
  if (upd == want && split == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << std::hex << "hc 0x" << hc << " word " << std::dec << i << std::hex << " 0x" << from
         << " -> 0x" << to << ": update 0x" << upd << ", split 0x" << split << ", recomputed 0x"
         << full << "\n"
         << test::hexdump(b);
}

// The value of word i that makes the checksum of b 0x0000 (the words sum to 0xffff).
uint16_t word_for_zero_checksum(Bytes b, size_t i) {
  set_word(b, i, 0);
  return static_cast<uint16_t>(0xffff - ref_sum(b.data(), b.size()));
}

TEST(ChecksumUpdate, Update16RandomData) {
  std::mt19937_64 rng(1624);
  for (int rep = 0; rep < 200000; ++rep) {
    const size_t words = 1 + rng() % 40;
    Bytes b = random_bytes(rng, 2 * words);
    const size_t i = rng() % words;
    uint16_t to = static_cast<uint16_t>(rng());
    switch (rng() % 8) {
      case 0:
        to = 0x0000;
        break;
      case 1:
        to = 0xffff;
        break;
      case 2:
        to = word(b, i);
        break;  // no change
      case 3:
        to = word_for_zero_checksum(b, i);
        break;
      case 4:
        set_word(b, i, 0x0000);
        break;
      case 5:
        set_word(b, i, 0xffff);
        break;
      case 6:
        set_word(b, i, word_for_zero_checksum(b, i));
        break;  // old checksum 0x0000
      default:
        break;
    }
    ASSERT_TRUE(Update16Ok(b, i, to));
  }
}

TEST(ChecksumUpdate, Update16EdgeValuesExhaustive) {
  // Two- and three-word buffers over all combinations of awkward values.
  const uint16_t edge[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0xfffe, 0xffff, 0x1234};
  for (uint16_t w0 : edge)
    for (uint16_t from : edge)
      for (uint16_t to : edge) {
        Bytes b(4);
        set_word(b, 0, w0);
        set_word(b, 1, from);
        ASSERT_TRUE(Update16Ok(b, 1, to));
        for (uint16_t w2 : edge) {
          Bytes c(6);
          set_word(c, 0, w0);
          set_word(c, 1, from);
          set_word(c, 2, w2);
          ASSERT_TRUE(Update16Ok(c, 1, to));
        }
      }
}

TEST(ChecksumUpdate, Update16AllTargetValues) {
  std::mt19937_64 rng(99);
  for (size_t rep = 0; rep < 4; ++rep) {
    const Bytes b = random_bytes(rng, 20);
    for (uint32_t to = 0; to <= 0xffff; ++to)
      ASSERT_TRUE(Update16Ok(b, rep % 10, static_cast<uint16_t>(to)));
  }
  // A single word: the data become all zero for to == 0.
  for (uint32_t from = 0; from <= 0xffff; from += 257)
    for (uint32_t to = 0; to <= 0xffff; to += 3) {
      Bytes b(2);
      set_word(b, 0, static_cast<uint16_t>(from));
      ASSERT_TRUE(Update16Ok(b, 0, static_cast<uint16_t>(to)));
    }
}

TEST(ChecksumUpdate, Update32RandomData) {
  std::mt19937_64 rng(3232);
  for (int rep = 0; rep < 200000; ++rep) {
    const size_t words = 2 + rng() % 40;
    Bytes b = random_bytes(rng, 2 * words);
    const size_t i = rng() % (words - 1);
    uint32_t to = static_cast<uint32_t>(rng());
    switch (rng() % 8) {
      case 0:
        to = 0;
        break;
      case 1:
        to = 0xffffffff;
        break;
      case 2:
        to = test::get32(b.data() + 2 * i);
        break;
      case 3:
        to = 0xffff0000;
        break;
      case 4:
        to = 0x0000ffff;
        break;
      case 5:
        test::set32(b.data() + 2 * i, 0);
        break;
      case 6:
        test::set32(b.data() + 2 * i, 0xffffffff);
        break;
      default:
        break;
    }
    ASSERT_TRUE(Update32Ok(b, i, to));
  }
}

TEST(ChecksumUpdate, Update32EdgeValuesExhaustive) {
  const uint32_t edge[] = {0x00000000, 0xffffffff, 0x0000ffff, 0xffff0000,
                           0x00010000, 0x0000fffe, 0x80008000, 0x0a140b0c};
  const uint16_t other[] = {0x0000, 0x0001, 0xfffe, 0xffff};
  for (uint16_t w : other)
    for (uint32_t from : edge)
      for (uint32_t to : edge) {
        Bytes b(6);
        set_word(b, 0, w);
        test::set32(b.data() + 2, from);
        ASSERT_TRUE(Update32Ok(b, 1, to));
        Bytes c(4);
        test::set32(c.data(), from);
        ASSERT_TRUE(Update32Ok(c, 0, to));
      }
}

TEST(ChecksumUpdate, AddAndFoldInMemoryOrder) {
  // csum_add32 and csum_fold32 give what the fold loops give, in either byte order, and 0 only
  // for an all-zero sum.
  std::mt19937_64 rng(1071);
  const uint32_t edge[] = {0, 1, 0xffff, 0x10000, 0xffff0000, 0xffffffff, 0xfffeffff, 0x0001fffe};
  for (int rep = 0; rep < 200000; ++rep) {
    const uint32_t a = rep < 64 ? edge[rep % 8] : static_cast<uint32_t>(rng());
    const uint32_t b = rep < 64 ? edge[rep / 8] : static_cast<uint32_t>(rng());
    const uint64_t wide = uint64_t{a} + b;
    const uint16_t want = static_cast<uint16_t>(~csum_fold(static_cast<uint32_t>(
        (wide & 0xffffffff) + (wide >> 32))));  // the 32-bit end-around sum, folded
    const uint16_t got = csum_fold32(csum_add32(a, b));
    ASSERT_EQ(got, want) << std::hex << a << " " << b;
    ASSERT_EQ(got == 0, a == 0 && b == 0);
    ASSERT_EQ(csum_fold32(csum_add32(byteswap(a), byteswap(b))), byteswap(want));
  }
}

TEST(ChecksumUpdate, ChainedUpdatesOfARealHeader) {
  // DNAT the way the processor does it: the IPv4 header checksum and the TCP checksum (through
  // the pseudo-header) both take the address change; the TCP one also takes the port change.
  std::mt19937_64 rng(5);
  for (int rep = 0; rep < 20000; ++rep) {
    test::Ip ip;
    ip.src = static_cast<uint32_t>(rng());
    ip.dst = static_cast<uint32_t>(rng());
    ip.id = static_cast<uint16_t>(rng());
    ip.ttl = static_cast<uint8_t>(rng());
    test::Tcp t;
    t.sport = static_cast<uint16_t>(rng());
    t.dport = static_cast<uint16_t>(rng());
    t.seq = static_cast<uint32_t>(rng());
    t.ack = static_cast<uint32_t>(rng());
    t.flags = static_cast<uint8_t>(rng());
    t.payload = random_bytes(rng, rng() % 9);
    Bytes pkt = test::ipv4_packet(ip, 6, test::tcp_segment(ip, t));
    uint8_t* h = pkt.data();
    uint8_t* tcp = h + 20;
    const auto new_dst = static_cast<uint32_t>(rng());
    const auto new_port = static_cast<uint16_t>(rng());
    if (rep % 3 == 2) {  // as the processor's nat_hop does: in the frame's byte order
      uint32_t from_w, to_w;
      uint16_t pfrom_w, pto_w, ic, tc;
      std::memcpy(&from_w, h + 16, 4);
      std::memcpy(&pfrom_w, tcp + 2, 2);
      std::memcpy(&ic, h + 10, 2);
      std::memcpy(&tc, tcp + 16, 2);
      store_be32(reinterpret_cast<uint8_t*>(&to_w), new_dst);
      store_be16(reinterpret_cast<uint8_t*>(&pto_w), new_port);
      const uint32_t d = csum_add32(~from_w, to_w);
      ic = static_cast<uint16_t>(~csum_fold32(csum_add32(d, static_cast<uint16_t>(~ic))));
      tc = static_cast<uint16_t>(~csum_fold32(csum_add32(
          d, uint32_t{static_cast<uint16_t>(~tc)} + static_cast<uint16_t>(~pfrom_w) + pto_w)));
      std::memcpy(h + 10, &ic, 2);
      std::memcpy(tcp + 16, &tc, 2);
    } else if (rep % 3 == 0) {
      store_be16(h + 10, csum_update32(load_be16(h + 10), ip.dst, new_dst));
      uint16_t tc = csum_update32(load_be16(tcp + 16), ip.dst, new_dst);
      tc = csum_update16(tc, t.dport, new_port);
      store_be16(tcp + 16, tc);
    } else {  // as the processor does: one address delta for both, plus the port's
      const uint32_t d = csum_delta32(ip.dst, new_dst);
      store_be16(h + 10, csum_apply(load_be16(h + 10), d));
      store_be16(tcp + 16, csum_apply(load_be16(tcp + 16), d + csum_delta16(t.dport, new_port)));
    }
    store_be32(h + 16, new_dst);
    store_be16(tcp + 2, new_port);

    ip.dst = new_dst;
    t.dport = new_port;
    const Bytes want = test::ipv4_packet(ip, 6, test::tcp_segment(ip, t));
    ASSERT_EQ(pkt, want) << "rep " << rep << "\n" << test::hexdump(pkt) << test::hexdump(want);
  }
}

}  // namespace
}  // namespace lb::core
