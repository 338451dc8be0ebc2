// The Maglev table against a reference written here from the paper's pseudocode (NSDI 2016,
// section 3.4, with Katran's weighted turns), plus its properties with the numbers printed:
// balance, weights, disruption when a backend leaves or joins, determinism across input order
// and processes, and golden values that pin the hashes every node must share.

#include "maglev.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace lb::core {
namespace {

// ---------------------------------------------------------------------------------------------
// The reference: the paper's Populate() as printed, with the permutation computed as
// (offset + j * skip) mod M, an int64 table with -1 for empty, and the hashes written from their
// definitions in maglev.h (MurmurHash3 fmix64, the documented seeds), not taken from the code.

uint64_t ref_fmix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

std::vector<uint32_t> reference_table(std::vector<MaglevBackend> bs, uint32_t m) {
  std::erase_if(bs, [](const MaglevBackend& b) { return b.weight == 0; });
  std::sort(bs.begin(), bs.end(), [](const MaglevBackend& x, const MaglevBackend& y) {
    return std::tie(x.ip, x.port) < std::tie(y.ip, y.port);
  });
  const size_t n = bs.size();
  std::vector<uint64_t> offset(n), skip(n), next(n, 0), credit(n, 0);
  uint64_t max_weight = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t name = uint64_t{bs[i].ip} * 65536 + bs[i].port;
    offset[i] = ref_fmix64(name ^ 0x6d676c762d6f6666ull) % m;          // "mglv-off"
    skip[i] = ref_fmix64(name ^ 0x6d676c762d736b70ull) % (m - 1) + 1;  // "mglv-skp"
    max_weight = std::max<uint64_t>(max_weight, bs[i].weight);
  }
  std::vector<int64_t> entry(m, -1);
  uint64_t n_filled = 0;
  while (n > 0 && n_filled < m) {
    for (size_t i = 0; i < n && n_filled < m; ++i) {
      credit[i] += bs[i].weight;
      if (credit[i] < max_weight) continue;  // not this backend's turn in this round
      credit[i] -= max_weight;
      uint64_t c = (offset[i] + next[i] * skip[i]) % m;
      while (entry[c] >= 0) {
        ++next[i];
        c = (offset[i] + next[i] * skip[i]) % m;
      }
      entry[c] = bs[i].id;
      ++next[i];
      ++n_filled;
    }
  }
  std::vector<uint32_t> out(m);
  for (uint32_t s = 0; s < m; ++s)
    out[s] = entry[s] < 0 ? kMaglevNoEntry : static_cast<uint32_t>(entry[s]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pools

// Backend i: 10.20.i/256.i%256:8080 with id i.
MaglevBackend backend(uint32_t i, uint32_t weight = 1) {
  return MaglevBackend{0x0a140000u + i, 8080, weight, i};
}
std::vector<MaglevBackend> equal_pool(uint32_t n) {
  std::vector<MaglevBackend> v;
  for (uint32_t i = 0; i < n; ++i) v.push_back(backend(i));
  return v;
}

std::vector<uint32_t> build(const std::vector<MaglevBackend>& bs, uint32_t m = 65537) {
  const MaglevTable t(bs, m);
  EXPECT_EQ(t.size(), m);
  return {t.entries().begin(), t.entries().end()};
}

std::map<uint32_t, uint32_t> counts(const std::vector<uint32_t>& table) {
  std::map<uint32_t, uint32_t> c;
  for (uint32_t id : table) ++c[id];
  return c;
}

// Of the entries that held a backend other than `removed` in `before`, the share that holds a
// different backend in `after`.
double moved_share(const std::vector<uint32_t>& before, const std::vector<uint32_t>& after,
                   uint32_t removed) {
  uint64_t others = 0, moved = 0;
  for (size_t s = 0; s < before.size(); ++s) {
    if (before[s] == removed) continue;
    ++others;
    if (after[s] != before[s]) ++moved;
  }
  return others ? static_cast<double>(moved) / static_cast<double>(others) : 0.0;
}

uint64_t digest(const std::vector<uint32_t>& table) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the ids
  for (uint32_t id : table) {
    h ^= id;
    h *= 0x100000001b3ull;
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Against the reference

TEST(MaglevTest, MatchesReference) {
  struct Case {
    std::string name;
    std::vector<MaglevBackend> backends;
    uint32_t m;
  };
  std::vector<Case> cases;
  for (uint32_t n : {1u, 2u, 3u, 10u, 100u, 256u}) cases.push_back({"equal", equal_pool(n), 65537});
  {
    std::vector<MaglevBackend> w;
    for (uint32_t i = 0; i < 20; ++i) w.push_back(backend(i, 1 + i % 4));
    w.push_back(backend(20, 0));
    w.push_back(backend(21, 0));
    cases.push_back({"weights 1..4 and two 0", w, 65537});
    cases.push_back({"weights 1..4, M = 251", w, 251});
  }
  cases.push_back({"weights 1 and 100", {backend(0, 1), backend(1, 100), backend(2, 7)}, 65537});
  {
    // Same address, different ports; the key orders by address then port.
    std::vector<MaglevBackend> p;
    for (uint16_t port = 9000; port > 8990; --port)
      p.push_back(MaglevBackend{0x0a140005, port, 1, static_cast<uint32_t>(port - 8990u)});
    p.push_back(MaglevBackend{0x0a140004, 9999, 1, 77});
    cases.push_back({"one address, ten ports", p, 4099});
  }
  {
    // The build fills in phases that depend on N and on how full the table is (see Filler in
    // maglev.cc); random pools of every size through each of them, weights 0..5.
    std::mt19937 rng(20260101);
    const uint32_t sizes[] = {13, 251, 4099, 65537};
    for (int k = 0; k < 24; ++k) {
      const uint32_t m = sizes[static_cast<size_t>(k) % 4];
      const uint32_t n = 1 + static_cast<uint32_t>(rng() % std::min<uint32_t>(m, 400));
      std::vector<MaglevBackend> bs;
      for (uint32_t i = 0; i < n; ++i) {
        const uint32_t w = k % 2 ? static_cast<uint32_t>(rng() % 6) : 1;
        bs.push_back(
            MaglevBackend{static_cast<uint32_t>(rng()), static_cast<uint16_t>(rng()), w, i});
      }
      bs[0].weight = std::max(bs[0].weight, 1u);  // at least one backend takes flows
      cases.push_back({"random pool " + std::to_string(k) + ", N = " + std::to_string(n), bs, m});
    }
  }
  cases.push_back({"N = M", equal_pool(13), 13});
  cases.push_back({"N = M - 1", equal_pool(12), 13});
  cases.push_back({"N close to M", equal_pool(4000), 4001});
  cases.push_back({"M = 2", equal_pool(2), 2});
  cases.push_back({"large M", equal_pool(17), 1000003});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name + ", M = " + std::to_string(c.m));
    const std::vector<uint32_t> want = reference_table(c.backends, c.m);
    const std::vector<uint32_t> got = build(c.backends, c.m);
    ASSERT_EQ(got.size(), want.size());
    size_t diff = 0;
    for (size_t s = 0; s < got.size(); ++s) diff += got[s] != want[s];
    EXPECT_EQ(diff, 0u) << "entries that differ from the reference";
    // And the table is full: no entry left empty while a backend takes flows.
    EXPECT_EQ(std::count(got.begin(), got.end(), kMaglevNoEntry), 0);
  }
}

// The hashes and the turn rule decide where every flow goes on every node: a change here moves
// flows between nodes that run different versions. These values were computed once by this
// implementation (and agree with the reference above); change them only on purpose.
TEST(MaglevTest, GoldenValues) {
  // MurmurHash3's fmix64 of 1, as published with it.
  EXPECT_EQ(maglev_fmix64(0), 0u);
  EXPECT_EQ(maglev_fmix64(1), 0xb456bcfc34c2cb2cull);
  EXPECT_EQ(maglev_flow_hash(0x0a000001, 40000, 0x0a0a0064, 80), 0xb6663702555042b6ull);
  EXPECT_EQ(maglev_flow_hash(0x0a000001, 40000, 0x0a0a0064, 80, 1), 0xc818559c7319fe0bull);
  const std::vector<uint32_t> t = build(equal_pool(10));
  EXPECT_EQ(digest(t), 0x8236a0cdaabee8e1ull);
  EXPECT_EQ(std::vector<uint32_t>(t.begin(), t.begin() + 12),
            (std::vector<uint32_t>{1, 1, 1, 7, 4, 4, 4, 6, 7, 7, 2, 2}));
}

// ---------------------------------------------------------------------------------------------
// Edge cases and errors

TEST(MaglevTest, NoBackendGivesNoEntry) {
  const MaglevTable empty;
  EXPECT_EQ(empty.lookup(0), kMaglevNoEntry);
  EXPECT_EQ(empty.lookup(UINT64_MAX), kMaglevNoEntry);
  for (const auto& bs :
       {std::vector<MaglevBackend>{}, std::vector<MaglevBackend>{backend(1, 0), backend(2, 0)}}) {
    const MaglevTable t(bs);
    EXPECT_EQ(t.size(), 65537u);
    EXPECT_EQ(std::count(t.entries().begin(), t.entries().end(), kMaglevNoEntry), 65537);
    EXPECT_EQ(t.lookup(maglev_flow_hash(1, 2, 3, 4)), kMaglevNoEntry);
  }
}

TEST(MaglevTest, OneBackendTakesEverything) {
  const std::vector<uint32_t> t = build({backend(7), backend(8, 0)});
  EXPECT_EQ(std::count(t.begin(), t.end(), 7u), 65537);
}

TEST(MaglevTest, AsManyBackendsAsEntries) {
  // Every backend gets exactly one entry; one more backend than entries is refused.
  const std::vector<uint32_t> t = build(equal_pool(4001), 4001);
  std::vector<uint32_t> sorted = t;
  std::sort(sorted.begin(), sorted.end());
  std::vector<uint32_t> ids(4001);
  std::iota(ids.begin(), ids.end(), 0u);
  EXPECT_EQ(sorted, ids);
  try {
    MaglevTable(equal_pool(4004), 4003);
    FAIL() << "4004 backends in 4003 entries accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "maglev: 4004 backends with a weight above 0 do not fit a table of 4003 entries (one "
              "entry at least each): use a larger table size");
  }
  // Weight-0 backends need no entry, so they do not count.
  std::vector<MaglevBackend> bs = equal_pool(7);
  for (uint32_t i = 100; i < 110; ++i) bs.push_back(backend(i, 0));
  EXPECT_NO_THROW(MaglevTable(bs, 7));
}

TEST(MaglevTest, RefusesBadTableSizes) {
  const std::pair<uint32_t, std::string> bad[] = {
      {0, "maglev table size 0 is not prime (the next prime is 2)"},
      {1, "maglev table size 1 is not prime (the next prime is 2)"},
      {65536, "maglev table size 65536 is not prime (the next prime is 65537)"},
      {65535, "maglev table size 65535 is not prime (the next prime is 65537)"},
      {1000001, "maglev table size 1000001 is not prime (the next prime is 1000003)"},
      {5000012, "maglev table size 5000012 is not at most 5000011"},
      {UINT32_MAX, "maglev table size 4294967295 is not at most 5000011"},
  };
  for (const auto& [m, msg] : bad) {
    SCOPED_TRACE(m);
    EXPECT_FALSE(maglev_table_size_ok(m));
    try {
      MaglevTable(equal_pool(3), m);
      ADD_FAILURE() << "accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()), msg);
    }
  }
  for (uint32_t m : {2u, 3u, 13u, 251u, 4093u, 16381u, 65537u, 5000011u})
    EXPECT_TRUE(maglev_table_size_ok(m)) << m;
  // The primes below 100 exactly.
  std::vector<uint32_t> primes;
  for (uint32_t m = 0; m < 100; ++m)
    if (maglev_table_size_ok(m)) primes.push_back(m);
  EXPECT_EQ(primes, (std::vector<uint32_t>{2,  3,  5,  7,  11, 13, 17, 19, 23, 29, 31, 37, 41,
                                           43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97}));
  EXPECT_EQ(maglev_next_prime(5000011), 5000011u);
  EXPECT_EQ(maglev_next_prime(5000012), 0u);
}

TEST(MaglevTest, RefusesDuplicateKeysAndTheNoEntryId) {
  std::vector<MaglevBackend> bs = equal_pool(3);
  bs.push_back(MaglevBackend{0x0a140001, 8080, 5, 99});  // same address and port as backend 1
  try {
    MaglevTable t(bs);
    FAIL() << "duplicate accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "maglev: backend 10.20.0.1:8080 is listed twice");
  }
  bs.back().port = 8081;  // another port of the same address is another backend
  EXPECT_NO_THROW(MaglevTable{bs});
  bs.back().id = kMaglevNoEntry;
  try {
    MaglevTable t(bs);
    FAIL() << "id kMaglevNoEntry accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "maglev: backend 10.20.0.1:8081 has the id 4294967295, which means no backend");
  }
}

TEST(MaglevTest, SlotIsAMultiplyShiftIntoTheTable) {
  const MaglevTable t(equal_pool(3), 13);
  EXPECT_EQ(t.slot(0), 0u);
  EXPECT_EQ(t.slot(UINT64_MAX), 12u);
  EXPECT_EQ(t.slot(0x00000000ffffffffull), 0u);  // only the high 32 bits count
  // Slot s takes the hashes whose high word is in [ceil(s * 2^32 / M), ceil((s + 1) * 2^32 / M)).
  for (uint32_t s = 0; s < 13; ++s) {
    const uint64_t lo = ((uint64_t{s} << 32) + 12) / 13;
    EXPECT_EQ(t.slot(lo << 32), s);
    if (lo > 0) {
      EXPECT_EQ(t.slot((lo - 1) << 32 | 0xffffffffu), s - 1);
    }
    EXPECT_EQ(t.lookup(lo << 32), t.entries()[s]);
  }
}

// ---------------------------------------------------------------------------------------------
// Properties, with their numbers

TEST(MaglevTest, BalanceWithEqualWeights) {
  for (uint32_t n : {3u, 10u, 100u, 256u}) {
    const auto c = counts(build(equal_pool(n)));
    ASSERT_EQ(c.size(), n) << "every backend has entries";
    uint32_t lo = UINT32_MAX, hi = 0;
    for (const auto& [id, k] : c) {
      lo = std::min(lo, k);
      hi = std::max(hi, k);
    }
    const double ratio = static_cast<double>(hi) / lo;
    std::printf("balance N=%-4u M=65537: entries per backend min %u max %u, max/min %.4f\n", n, lo,
                hi, ratio);
    EXPECT_LE(ratio, 1.1);
    // Turns in rounds: equal weights give floor or ceil of M / N each.
    EXPECT_EQ(lo, 65537 / n);
    EXPECT_LE(hi - lo, 1u);
  }
}

TEST(MaglevTest, FlowsSpreadOverTheEntries) {
  // The flow hash and the multiply-shift spread clients as the table does: 3 M flows from
  // 10.0.0.0/16 clients, 3 backends.
  const MaglevTable t(equal_pool(3));
  std::map<uint32_t, uint64_t> c;
  const uint32_t flows = 3000000;
  for (uint32_t i = 0; i < flows; ++i)
    ++c[t.lookup(maglev_flow_hash(0x0a000000u + i % 65536, static_cast<uint16_t>(1024 + i / 65536),
                                  0x0a0a0064, 80))];
  for (const auto& [id, k] : c) {
    const double share = static_cast<double>(k) / flows;
    std::printf("flows to backend %u: %.4f\n", id, share);
    EXPECT_NEAR(share, 1.0 / 3, 0.005);
  }
  EXPECT_EQ(c.size(), 3u);
}

TEST(MaglevTest, WeightsGiveProportionalShares) {
  {
    // A weight-2 backend beside weight-1 ones: twice the entries.
    std::vector<MaglevBackend> bs = equal_pool(4);
    bs[2].weight = 2;
    const auto c = counts(build(bs));
    const double ratio = static_cast<double>(c.at(2)) / ((c.at(0) + c.at(1) + c.at(3)) / 3.0);
    std::printf("weights 1,1,2,1: entries %u %u %u %u, weight-2 / weight-1 = %.4f\n", c.at(0),
                c.at(1), c.at(2), c.at(3), ratio);
    EXPECT_NEAR(ratio, 2.0, 0.01);
  }
  {
    // Weights 0..5 over 60 backends: each share within 2 % of w / sum(w), weight 0 none.
    std::vector<MaglevBackend> bs;
    uint32_t total = 0;
    for (uint32_t i = 0; i < 60; ++i) {
      bs.push_back(backend(i, i % 6));
      total += i % 6;
    }
    const auto c = counts(build(bs));
    double worst = 0;
    for (uint32_t i = 0; i < 60; ++i) {
      const uint32_t w = i % 6;
      if (w == 0) {
        EXPECT_EQ(c.count(i), 0u) << "weight 0 got entries: " << i;
        continue;
      }
      const double want = 65537.0 * w / total;
      worst = std::max(worst, std::abs(c.at(i) / want - 1));
    }
    std::printf("weights 0..5 over 60 backends: worst share off by %.3f %%\n", worst * 100);
    EXPECT_LT(worst, 0.02);
  }
}

TEST(MaglevTest, RemovingOneBackendMovesLittleElse) {
  std::printf("remove 1 of N (M = 65537): share of the other backends' entries that move\n");
  for (uint32_t n : {3u, 10u, 100u, 256u, 1000u}) {
    const std::vector<MaglevBackend> all = equal_pool(n);
    const std::vector<uint32_t> before = build(all);
    // Several backends in turn (first, middle, last and two more), each removed alone.
    double worst = 0, sum = 0;
    const uint32_t picks[] = {0, n / 3, n / 2, (2 * n) / 3, n - 1};
    for (uint32_t r : picks) {
      std::vector<MaglevBackend> less = all;
      less.erase(less.begin() + r);
      const std::vector<uint32_t> after = build(less);
      // The removed backend's entries all went to the others.
      ASSERT_EQ(std::count(after.begin(), after.end(), r), 0);
      const double moved = moved_share(before, after, r);
      worst = std::max(worst, moved);
      sum += moved;
    }
    std::printf("  N=%-4u moved: mean %.3f %%, worst %.3f %% (of 5 removals)\n", n, 100 * sum / 5,
                100 * worst);
    EXPECT_LT(worst, 0.01) << "N=" << n;
  }
}

TEST(MaglevTest, AddingBackends) {
  std::printf("add a backend (M = 65537)\n");
  for (uint32_t n : {3u, 10u, 100u, 256u, 1000u}) {
    const std::vector<MaglevBackend> all = equal_pool(n);
    const std::vector<uint32_t> full = build(all);
    // One removed, then added back: the table is a function of the set, not of its history, so
    // every entry returns to the backend it had (the removal's flows go home).
    std::vector<MaglevBackend> back = all;
    const MaglevBackend gone = back[n / 2];
    back.erase(back.begin() + n / 2);
    ASSERT_NE(build(back), full);
    back.push_back(gone);
    const std::vector<uint32_t> restored = build(back);
    size_t same = 0;
    for (size_t s = 0; s < full.size(); ++s) same += restored[s] == full[s];
    // A backend that was never there joins: it takes ~1/(N + 1) of the table, and little moves
    // between the others.
    std::vector<MaglevBackend> more = all;
    more.push_back(backend(5000));
    const std::vector<uint32_t> grown = build(more);
    const double taken =
        static_cast<double>(std::count(grown.begin(), grown.end(), 5000u)) / 65537.0;
    const double churn = moved_share(grown, full, 5000);
    std::printf(
        "  N=%-4u remove + add back: %.3f %% of entries as before; a new backend takes %.3f %% "
        "(1/(N+1) = %.3f %%), %.3f %% of the others' entries move between them\n",
        n, 100.0 * static_cast<double>(same) / 65537.0, 100 * taken, 100.0 / (n + 1), 100 * churn);
    EXPECT_EQ(same, full.size());
    EXPECT_NEAR(taken, 1.0 / (n + 1), 0.01 / (n + 1));
    EXPECT_LT(churn, 0.01);
  }
}

TEST(MaglevTest, SameTableFromAnyInputOrder) {
  std::mt19937 rng(1);
  for (uint32_t n : {3u, 10u, 256u}) {
    std::vector<MaglevBackend> bs;
    for (uint32_t i = 0; i < n; ++i) bs.push_back(backend(i, 1 + i % 3));
    const std::vector<uint32_t> want = build(bs);
    for (int round = 0; round < 5; ++round) {
      std::shuffle(bs.begin(), bs.end(), rng);
      ASSERT_EQ(build(bs), want) << "N=" << n << " shuffle " << round;
    }
  }
}

TEST(MaglevTest, SameHashAndTableInAnotherProcess) {
  // Nothing per process (no random seed, no address-dependent hashing): this test runs itself
  // again as a new process (exec: its own address layout, its own start-up), which prints its
  // flow hashes and table digest; they must be this process's.
  std::vector<uint64_t> mine;
  for (uint32_t i = 0; i < 100; ++i)
    mine.push_back(maglev_flow_hash(0x0a000000u + i * 7919, static_cast<uint16_t>(1024 + i),
                                    0x0a0a0064, 80, 0x1234567890abcdefull));
  std::vector<MaglevBackend> bs = equal_pool(50);
  std::reverse(bs.begin(), bs.end());
  mine.push_back(digest(build(bs)));
  if (std::getenv("LB_MAGLEV_CHILD")) {
    for (uint64_t v : mine) std::printf("value %016llx\n", static_cast<unsigned long long>(v));
    return;
  }
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT_GT(len, 0);
  exe[len] = 0;
  const std::string cmd = std::string("LB_MAGLEV_CHILD=1 '") + exe +
                          "' --gtest_filter=MaglevTest.SameHashAndTableInAnotherProcess";
  FILE* child = popen(cmd.c_str(), "r");
  ASSERT_NE(child, nullptr);
  std::vector<uint64_t> theirs;
  char line[256];
  while (std::fgets(line, sizeof line, child)) {
    unsigned long long v;
    if (std::sscanf(line, "value %llx", &v) == 1) theirs.push_back(v);
  }
  ASSERT_EQ(pclose(child), 0);
  EXPECT_EQ(theirs, mine);
  // And the seed matters: another seed, other hashes.
  EXPECT_NE(maglev_flow_hash(1, 2, 3, 4, 5), maglev_flow_hash(1, 2, 3, 4, 6));
}

}  // namespace
}  // namespace lb::core
