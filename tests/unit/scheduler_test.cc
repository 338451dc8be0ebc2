// New-flow schedulers against simple reference models: round robin, smooth weighted round robin
// (nginx), random, weighted least connections. Plus the rules common to all of them: an empty
// pool gives nullptr, weight-0 backends and the excluded backend are never returned, and a new
// Pool (backends removed or added) is followed at once.

#include "scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "packet_builder.h"

namespace lb::core {
namespace {

constexpr ServiceId kSvc{3};
constexpr SchedulerKind kAllKinds[] = {SchedulerKind::kRoundRobin,
                                       SchedulerKind::kWeightedRoundRobin, SchedulerKind::kRandom,
                                       SchedulerKind::kLeastConn};

std::string name(SchedulerKind k) {
  switch (k) {
    case SchedulerKind::kRoundRobin:
      return "rr";
    case SchedulerKind::kWeightedRoundRobin:
      return "wrr";
    case SchedulerKind::kRandom:
      return "random";
    case SchedulerKind::kLeastConn:
      return "lc";
    case SchedulerKind::kMaglev:
      return "maglev";
  }
  return "?";
}

struct B {
  uint32_t id;
  uint16_t weight = 1;
};

PoolBackend backend(uint32_t id, uint16_t weight) {
  return PoolBackend{static_cast<BackendId>(id),
                     test::ip4(10, 20, 0, 0) + id,
                     8080,
                     1,
                     static_cast<uint16_t>(id),
                     weight};
}

std::unique_ptr<Pool> make_pool(SchedulerKind kind, const std::vector<B>& bs,
                                uint64_t generation = 1) {
  Pool::ServiceSpec s{kSvc, test::ip4(10, 10, 0, 100), 80, kind, {}, {}};
  for (const B& b : bs) {
    s.backends.push_back(backend(b.id, b.weight));
    s.serving.push_back(static_cast<BackendId>(b.id));
  }
  return std::make_unique<Pool>(generation, std::vector<Pool::ServiceSpec>{s});
}

std::vector<B> equal(std::initializer_list<uint32_t> ids) {
  std::vector<B> v;
  for (uint32_t id : ids) v.push_back({id, 1});
  return v;
}

TEST(Pool, ServingFlowAgreesWithServingForEveryRecordBackend) {
  // The established path asks serving_flow(), which has no range check: for every id a flow
  // record in use may name (below kMaxBackends, or kGoneBackend), the same answer as serving().
  const auto pool = make_pool(SchedulerKind::kRoundRobin, {{1, 1}, {2, 0}, {4095, 1}});
  for (uint32_t id = 0; id <= raw(kGoneBackend); ++id) {
    const auto b = static_cast<BackendId>(id);
    ASSERT_EQ(pool->serving_flow(b), pool->serving(b)) << id;
  }
  EXPECT_TRUE(pool->serving_flow(static_cast<BackendId>(1)));
  EXPECT_TRUE(pool->serving_flow(static_cast<BackendId>(2)));  // weight 0: draining, serving
  EXPECT_FALSE(pool->serving_flow(static_cast<BackendId>(3)));
  EXPECT_FALSE(pool->serving_flow(kGoneBackend));
}

class SchedulerTest : public ::testing::Test {
 protected:
  // The id picked for the pool's one service; 0 for nullptr (ids in these tests start at 1).
  uint32_t Pick(const Pool& pool, BackendId exclude = kNoBackend) {
    const PoolService* s = pool.find(test::ip4(10, 10, 0, 100), 80);
    EXPECT_NE(s, nullptr);
    if (!s) return 0;
    const PoolBackend* b = sched_.pick(pool, *s, *counters_, exclude);
    if (!b) return 0;
    // The pointer is into the pool's own backend list.
    const auto list = pool.backends(*s);
    EXPECT_TRUE(b >= list.data() && b < list.data() + list.size());
    return raw(b->id);
  }
  std::vector<uint32_t> Picks(const Pool& pool, size_t n, BackendId exclude = kNoBackend) {
    std::vector<uint32_t> v;
    for (size_t i = 0; i < n; ++i) v.push_back(Pick(pool, exclude));
    return v;
  }
  void SetActive(uint32_t id, uint64_t n) {
    Counter& c = counters_->backend[id].flows_active;
    c.sub(c.get());
    c.add(n);
  }

  Scheduler sched_{0x1234};
  std::unique_ptr<WorkerCounters> counters_ = std::make_unique<WorkerCounters>();
};

// ---------------------------------------------------------------------------------------------
// Common rules

TEST_F(SchedulerTest, EmptyPoolGivesNull) {
  for (SchedulerKind k : kAllKinds) {
    SCOPED_TRACE(name(k));
    EXPECT_EQ(Pick(*make_pool(k, {})), 0u);
    // Only weight-0 backends: none is listed, so none takes new flows.
    EXPECT_EQ(Pick(*make_pool(k, {{1, 0}, {2, 0}})), 0u);
    EXPECT_EQ(Pick(*make_pool(k, {}), static_cast<BackendId>(1)), 0u);
  }
}

// pick_new (the new-flow path's inline round robin) is pick() without an excluded backend: the
// same backends in the same order for every scheduler, sharing pick()'s state (a retry's pick
// in between moves the same cursor), and nullptr for an empty pool.
TEST_F(SchedulerTest, PickNewIsPickWithoutExclude) {
  for (SchedulerKind k : kAllKinds) {
    SCOPED_TRACE(name(k));
    const auto pool = make_pool(k, {{1, 1}, {2, 3}, {3, 1}, {4, 2}});
    const PoolService* s = pool->find(test::ip4(10, 10, 0, 100), 80);
    ASSERT_NE(s, nullptr);
    Scheduler a{0x77}, b{0x77};
    for (int i = 0; i < 100; ++i) {
      const PoolBackend* x =
          i % 7 == 3 ? a.pick(*pool, *s, *counters_) : a.pick_new(*pool, *s, *counters_);
      const PoolBackend* y = b.pick(*pool, *s, *counters_);
      ASSERT_EQ(x, y) << i;
    }
    const auto empty = make_pool(k, {});
    const PoolService* es = empty->find(test::ip4(10, 10, 0, 100), 80);
    ASSERT_NE(es, nullptr);
    EXPECT_EQ(a.pick_new(*empty, *es, *counters_), nullptr);
  }
}

TEST_F(SchedulerTest, WeightZeroNeverPicked) {
  for (SchedulerKind k : kAllKinds) {
    SCOPED_TRACE(name(k));
    const auto pool = make_pool(k, {{1, 1}, {2, 0}, {3, 2}, {4, 0}});
    std::map<uint32_t, int> seen;
    for (uint32_t id : Picks(*pool, 3000)) ++seen[id];
    EXPECT_EQ(seen.count(2), 0u);
    EXPECT_EQ(seen.count(4), 0u);
    EXPECT_EQ(seen.count(0), 0u);
    EXPECT_GT(seen[1], 0);
    EXPECT_GT(seen[3], 0);
  }
}

TEST_F(SchedulerTest, ExcludedNeverReturned) {
  for (SchedulerKind k : kAllKinds) {
    for (uint32_t n : {1u, 2u, 3u, 5u}) {
      std::vector<B> bs;
      for (uint32_t i = 1; i <= n; ++i) bs.push_back({i, static_cast<uint16_t>(i)});
      const auto pool = make_pool(k, bs);
      for (uint32_t ex = 1; ex <= n; ++ex) {
        SCOPED_TRACE(name(k) + " n=" + std::to_string(n) + " exclude " + std::to_string(ex));
        std::map<uint32_t, int> seen;
        for (int i = 0; i < 400; ++i) {
          // Interleave with plain picks, as a worker does (retries among new flows).
          ++seen[Pick(*pool, static_cast<BackendId>(ex))];
          if (i % 3 == 0) Pick(*pool);
        }
        EXPECT_EQ(seen.count(ex), 0u);
        if (n == 1) {
          EXPECT_EQ(seen[0], 400) << "the only backend is excluded: nullptr";
        } else {
          EXPECT_EQ(seen.count(0), 0u);
          EXPECT_EQ(seen.size(), n - 1) << "every other backend gets some";
        }
      }
      // An exclude that is not in the pool changes nothing.
      for (uint32_t id : Picks(*pool, 50, static_cast<BackendId>(999)))
        EXPECT_TRUE(id >= 1 && id <= n);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Round robin

TEST_F(SchedulerTest, RoundRobinBalancedOverEveryPrefix) {
  for (uint32_t n = 1; n <= 7; ++n) {
    sched_ = Scheduler(n);
    std::vector<B> bs;
    for (uint32_t i = 1; i <= n; ++i) bs.push_back({i, static_cast<uint16_t>(i * 3)});  // ignored
    const auto pool = make_pool(SchedulerKind::kRoundRobin, bs);
    std::vector<int> count(n + 1, 0);
    for (uint32_t k = 1; k <= 10 * n; ++k) {
      const uint32_t id = Pick(*pool);
      ASSERT_TRUE(id >= 1 && id <= n);
      ++count[id];
      const auto [mn, mx] = std::minmax_element(count.begin() + 1, count.end());
      ASSERT_LE(*mx - *mn, 1) << "n=" << n << " after " << k << " picks";
      if (k % n == 0) {
        ASSERT_EQ(*mx, *mn) << "n=" << n << " not exact after " << k;
      }
      // In pool order.
      ASSERT_EQ(id, (k - 1) % n + 1);
    }
  }
}

TEST_F(SchedulerTest, RoundRobinCursorIsPerService) {
  Pool::ServiceSpec a{
      ServiceId{1}, test::ip4(10, 10, 0, 1), 80, SchedulerKind::kRoundRobin, {}, {}};
  Pool::ServiceSpec b{
      ServiceId{2}, test::ip4(10, 10, 0, 2), 80, SchedulerKind::kRoundRobin, {}, {}};
  for (uint32_t i = 1; i <= 3; ++i) a.backends.push_back(backend(i, 1));
  for (uint32_t i = 11; i <= 12; ++i) b.backends.push_back(backend(i, 1));
  const Pool pool(1, {a, b});
  const PoolService* sa = pool.service(ServiceId{1});
  const PoolService* sb = pool.service(ServiceId{2});
  ASSERT_TRUE(sa && sb);
  std::vector<uint32_t> ga, gb;
  for (int i = 0; i < 6; ++i) {
    ga.push_back(raw(sched_.pick(pool, *sa, *counters_)->id));
    gb.push_back(raw(sched_.pick(pool, *sb, *counters_)->id));
    gb.push_back(raw(sched_.pick(pool, *sb, *counters_)->id));
  }
  EXPECT_EQ(ga, (std::vector<uint32_t>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(gb, (std::vector<uint32_t>{11, 12, 11, 12, 11, 12, 11, 12, 11, 12, 11, 12}));
}

TEST_F(SchedulerTest, RoundRobinExcludeTakesTheNext) {
  const auto pool = make_pool(SchedulerKind::kRoundRobin, equal({1, 2, 3, 4}));
  EXPECT_EQ(Pick(*pool), 1u);
  EXPECT_EQ(Pick(*pool, static_cast<BackendId>(2)), 3u);  // 2 was next: skipped
  EXPECT_EQ(Pick(*pool), 4u);
  EXPECT_EQ(Pick(*pool, static_cast<BackendId>(4)), 1u);  // 1 is next: not affected
  EXPECT_EQ(Pick(*pool), 2u);
}

TEST_F(SchedulerTest, RoundRobinFollowsPoolChanges) {
  const auto p1 = make_pool(SchedulerKind::kRoundRobin, equal({1, 2, 3}), 1);
  const auto p2 = make_pool(SchedulerKind::kRoundRobin, equal({1, 3}), 2);     // 2 removed
  const auto p3 = make_pool(SchedulerKind::kRoundRobin, equal({1, 3, 4}), 3);  // 4 added
  const auto p4 = make_pool(SchedulerKind::kRoundRobin, equal({5, 1, 3, 4, 6}), 4);
  // Any window of size(set) consecutive picks holds every member exactly once.
  auto check = [&](const Pool& p, std::vector<uint32_t> set, int picks) {
    std::sort(set.begin(), set.end());
    const std::vector<uint32_t> got = Picks(p, static_cast<size_t>(picks));
    for (size_t i = 0; i + set.size() <= got.size(); ++i) {
      std::vector<uint32_t> w(got.begin() + static_cast<long>(i),
                              got.begin() + static_cast<long>(i + set.size()));
      std::sort(w.begin(), w.end());
      ASSERT_EQ(w, set) << "window at " << i;
    }
  };
  Picks(*p1, 4);
  check(*p2, {1, 3}, 9);
  check(*p3, {1, 3, 4}, 10);
  check(*p4, {1, 3, 4, 5, 6}, 17);
  check(*p1, {1, 2, 3}, 8);
}

// ---------------------------------------------------------------------------------------------
// Smooth weighted round robin

// nginx's algorithm, written from its description.
class RefSwrr {
 public:
  explicit RefSwrr(std::vector<uint16_t> w) : w_(std::move(w)), cur_(w_.size(), 0) {}
  size_t pick() {
    int64_t total = 0;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < w_.size(); ++i) {
      cur_[i] += w_[i];
      total += w_[i];
      if (best == SIZE_MAX || cur_[i] > cur_[best]) best = i;
    }
    cur_[best] -= total;
    return best;
  }

 private:
  std::vector<uint16_t> w_;
  std::vector<int64_t> cur_;
};

TEST_F(SchedulerTest, WeightedNginxExample) {
  // nginx's commit message: weights {5, 1, 1} give a a b a c a a.
  const auto pool = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 5}, {2, 1}, {3, 1}});
  EXPECT_EQ(Picks(*pool, 14), (std::vector<uint32_t>{1, 1, 2, 1, 3, 1, 1, 1, 1, 2, 1, 3, 1, 1}));
}

TEST_F(SchedulerTest, WeightedMatchesReferenceAndIsSmooth) {
  std::mt19937 rng(2024);
  for (int rep = 0; rep < 300; ++rep) {
    const size_t n = 1 + rng() % 8;
    std::vector<uint16_t> w(n);
    std::vector<B> bs;
    for (size_t i = 0; i < n; ++i) {
      w[i] = static_cast<uint16_t>(1 + rng() % (rep % 3 == 0 ? 100 : 10));
      bs.push_back({static_cast<uint32_t>(i + 1), w[i]});
    }
    const int64_t total = std::accumulate(w.begin(), w.end(), int64_t{0});
    sched_ = Scheduler(static_cast<uint64_t>(rep));
    const auto pool = make_pool(SchedulerKind::kWeightedRoundRobin, bs);
    RefSwrr ref(w);
    std::vector<int64_t> count(n, 0);
    std::vector<uint32_t> seq;
    const int64_t picks = 3 * total;
    for (int64_t k = 1; k <= picks; ++k) {
      const uint32_t id = Pick(*pool);
      ASSERT_EQ(id, ref.pick() + 1) << "rep " << rep << " pick " << k;
      ++count[id - 1];
      for (size_t i = 0; i < n; ++i) {
        // From a fresh state, for every prefix of k picks (proof: the current weight of i,
        // x_i = k*w_i - c_i*W, is > -W, since the one picked had at least W/n before paying W;
        // and the x sum to 0, so x_i = -sum(others) <= (n-1)W):
        //   k*w_i/W - (n-1) <= c_i < k*w_i/W + 1
        ASSERT_LT(count[i] * total, k * w[i] + total) << "rep " << rep << " k " << k;
        ASSERT_GE(count[i] * total, k * w[i] - static_cast<int64_t>(n - 1) * total);
      }
      // Exact over every full cycle of sum(w) picks.
      if (k % total == 0) {
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(count[i], k / total * w[i]);
      }
      seq.push_back(id);
    }
    // Any window of L picks, anywhere: c_i < L*w_i/W + n (the difference of two prefix bounds).
    // Much weaker than the prefix bound, but it holds for every window.
    if (total > 100) continue;
    for (size_t len = 1; len <= static_cast<size_t>(total); ++len) {
      std::vector<int64_t> win(n, 0);
      for (size_t at = 0; at < seq.size(); ++at) {
        ++win[seq[at] - 1];
        if (at >= len) --win[seq[at - len] - 1];
        if (at + 1 < len) continue;
        for (size_t i = 0; i < n; ++i)
          ASSERT_LT(win[i] * total,
                    static_cast<int64_t>(len) * w[i] + static_cast<int64_t>(n) * total)
              << "rep " << rep << " window " << len << " ending at " << at;
      }
    }
  }
}

TEST_F(SchedulerTest, WeightedBurstsAreShort) {
  // {5,1,1}: plain WRR would give a a a a a b c; the smooth one never gives a more than
  // ceil(5/7 * k) + 1 times in any window of k picks (checked on its periodic sequence).
  const auto pool = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 5}, {2, 1}, {3, 1}});
  const std::vector<uint32_t> seq = Picks(*pool, 70);
  for (size_t len = 1; len <= 7; ++len)
    for (size_t at = 0; at + len <= seq.size(); ++at) {
      const auto a = std::count(seq.begin() + static_cast<long>(at),
                                seq.begin() + static_cast<long>(at + len), 1u);
      EXPECT_LE(a, static_cast<long>((5 * len + 6) / 7 + 1)) << "len " << len << " at " << at;
    }
  // b and c are never adjacent to themselves.
  for (size_t i = 1; i < seq.size(); ++i) {
    if (seq[i] != 1) {
      EXPECT_NE(seq[i], seq[i - 1]) << i;
    }
  }
}

TEST_F(SchedulerTest, WeightedWithExclude) {
  const auto pool = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 3}, {2, 1}, {3, 2}});
  std::map<uint32_t, int> seen;
  for (uint32_t id : Picks(*pool, 3000, static_cast<BackendId>(1))) ++seen[id];
  EXPECT_EQ(seen.count(1), 0u);
  // Among the others, in proportion 1:2 (exactly, as every 3 picks are a cycle of {2:1, 3:2}).
  EXPECT_EQ(seen[2], 1000);
  EXPECT_EQ(seen[3], 2000);
  // Back to plain picks: all three, in proportion over a long run.
  seen.clear();
  for (uint32_t id : Picks(*pool, 6000)) ++seen[id];
  EXPECT_NEAR(seen[1], 3000, 3);
  EXPECT_NEAR(seen[2], 1000, 3);
  EXPECT_NEAR(seen[3], 2000, 3);
}

TEST_F(SchedulerTest, WeightedFollowsPoolChanges) {
  const auto p1 = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 3}, {2, 2}, {3, 1}}, 1);
  const auto p2 = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 3}, {3, 1}}, 2);
  const auto p3 = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 3}, {3, 1}, {4, 4}}, 3);
  Picks(*p1, 4);  // mid-cycle
  std::map<uint32_t, int> seen;
  for (uint32_t id : Picks(*p2, 4000)) ++seen[id];
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_NEAR(seen[1], 3000, 8);
  EXPECT_NEAR(seen[3], 1000, 8);
  seen.clear();
  for (uint32_t id : Picks(*p3, 8000)) ++seen[id];
  EXPECT_NEAR(seen[1], 3000, 8);
  EXPECT_NEAR(seen[3], 1000, 8);
  EXPECT_NEAR(seen[4], 4000, 8);
}

// An id given to another backend starts with a fresh smooth-WRR weight once forgotten (lbd
// forgets an id on every worker before reusing it).
TEST_F(SchedulerTest, ForgottenIdStartsAfresh) {
  const auto old = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 1}, {2, 1}}, 1);
  const auto reused = make_pool(SchedulerKind::kWeightedRoundRobin, {{1, 1}, {2, 1}}, 2);
  EXPECT_EQ(Picks(*old, 1), (std::vector<uint32_t>{1}));  // id 1 is now at -1, id 2 at +1
  Scheduler stale = sched_;
  const PoolService& svc = *reused->find(test::ip4(10, 10, 0, 100), 80);
  std::vector<uint32_t> got;
  for (int i = 0; i < 4; ++i) got.push_back(raw(stale.pick(*reused, svc, *counters_)->id));
  EXPECT_EQ(got, (std::vector<uint32_t>{2, 1, 2, 1})) << "without forget(), the weights stay";
  sched_.forget(static_cast<BackendId>(1));
  sched_.forget(static_cast<BackendId>(2));
  EXPECT_EQ(Picks(*reused, 4), (std::vector<uint32_t>{1, 2, 1, 2})) << "fresh: in list order";
}

// ---------------------------------------------------------------------------------------------
// Random

double chi_square(const std::map<uint32_t, int>& seen, const std::vector<uint32_t>& ids,
                  double expected) {
  double chi = 0;
  for (uint32_t id : ids) {
    const auto it = seen.find(id);
    const double o = it == seen.end() ? 0 : it->second;
    chi += (o - expected) * (o - expected) / expected;
  }
  return chi;
}

TEST_F(SchedulerTest, RandomIsRoughlyUniform) {
  // 5 backends, 100000 picks: chi-square with 4 degrees of freedom is above 18.5 with
  // probability 0.001. The seed is fixed, so the test is deterministic.
  const auto pool = make_pool(SchedulerKind::kRandom, equal({1, 2, 3, 4, 5}));
  std::map<uint32_t, int> seen;
  for (uint32_t id : Picks(*pool, 100000)) ++seen[id];
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_LT(chi_square(seen, {1, 2, 3, 4, 5}, 20000.0), 18.5);
  // With one excluded: the others stay uniform (3 degrees of freedom: 16.3 at 0.001).
  seen.clear();
  for (uint32_t id : Picks(*pool, 100000, static_cast<BackendId>(3))) ++seen[id];
  EXPECT_EQ(seen.count(3), 0u);
  EXPECT_LT(chi_square(seen, {1, 2, 4, 5}, 25000.0), 16.3);
  // Pairs of consecutive picks are independent-looking too (24 dof: 51.2 at 0.001).
  std::map<uint32_t, int> pairs;
  uint32_t prev = Pick(*pool);
  for (int i = 0; i < 100000; ++i) {
    const uint32_t id = Pick(*pool);
    ++pairs[prev * 10 + id];
    prev = id;
  }
  std::vector<uint32_t> keys;
  for (uint32_t a = 1; a <= 5; ++a)
    for (uint32_t b = 1; b <= 5; ++b) keys.push_back(a * 10 + b);
  EXPECT_LT(chi_square(pairs, keys, 4000.0), 51.2);
}

TEST_F(SchedulerTest, RandomIsSeeded) {
  const auto pool = make_pool(SchedulerKind::kRandom, equal({1, 2, 3, 4, 5, 6, 7, 8}));
  Scheduler a(7), b(7), c(8);
  const PoolService* s = pool->find(test::ip4(10, 10, 0, 100), 80);
  std::vector<uint32_t> va, vb, vc;
  for (int i = 0; i < 64; ++i) {
    va.push_back(raw(a.pick(*pool, *s, *counters_)->id));
    vb.push_back(raw(b.pick(*pool, *s, *counters_)->id));
    vc.push_back(raw(c.pick(*pool, *s, *counters_)->id));
  }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
}

// ---------------------------------------------------------------------------------------------
// Weighted least connections

TEST_F(SchedulerTest, LeastConnPicksTheLeastLoaded) {
  const auto pool = make_pool(SchedulerKind::kLeastConn, equal({1, 2, 3}));
  SetActive(1, 5);
  SetActive(2, 0);
  SetActive(3, 3);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Pick(*pool), 2u);  // counters unchanged: always 2
  SetActive(2, 4);
  EXPECT_EQ(Pick(*pool), 3u);
  EXPECT_EQ(Pick(*pool, static_cast<BackendId>(3)), 2u);  // next least, 3 excluded
  // Counters of backends outside the pool do not matter.
  SetActive(4, 0);
  EXPECT_EQ(Pick(*pool), 3u);
}

TEST_F(SchedulerTest, LeastConnIsWeighted) {
  const auto pool = make_pool(SchedulerKind::kLeastConn, {{1, 1}, {2, 2}, {3, 3}});
  SetActive(1, 2);  // 2/1
  SetActive(2, 2);  // 2/2
  SetActive(3, 2);  // 2/3 <- least
  EXPECT_EQ(Pick(*pool), 3u);
  SetActive(3, 4);  // 4/3 > 2/2
  EXPECT_EQ(Pick(*pool), 2u);
  SetActive(1, 0);
  EXPECT_EQ(Pick(*pool), 1u);
}

TEST_F(SchedulerTest, LeastConnTiesRotate) {
  const auto pool = make_pool(SchedulerKind::kLeastConn, equal({1, 2, 3, 4}));
  for (uint32_t id = 1; id <= 4; ++id) SetActive(id, 7);
  std::map<uint32_t, int> seen;
  for (uint32_t id : Picks(*pool, 40)) ++seen[id];
  for (uint32_t id = 1; id <= 4; ++id) EXPECT_EQ(seen[id], 10) << id;
}

TEST_F(SchedulerTest, LeastConnMatchesReferenceWhenFlowsAccumulate) {
  // Each pick opens a flow on the backend picked (as the processor counts them), and sometimes
  // one closes somewhere. Every pick must be among the least loaded by active/weight, and the
  // loads stay within the greedy bound: (k-n)*w_i/W <= a_i <= k*w_i/W + 1 with no closes.
  std::mt19937 rng(11);
  for (int rep = 0; rep < 50; ++rep) {
    const size_t n = 1 + rng() % 6;
    std::vector<B> bs;
    int64_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      bs.push_back({static_cast<uint32_t>(i + 1), static_cast<uint16_t>(1 + rng() % 5)});
      total += bs.back().weight;
    }
    for (const B& b : bs) SetActive(b.id, 0);
    const auto pool = make_pool(SchedulerKind::kLeastConn, bs);
    const bool closes = rep % 2;
    for (int64_t k = 1; k <= 500; ++k) {
      const uint32_t id = Pick(*pool);
      ASSERT_TRUE(id >= 1 && id <= n);
      const uint64_t a = counters_->backend[id].flows_active.get();
      for (const B& b : bs) {
        const uint64_t other = counters_->backend[b.id].flows_active.get();
        ASSERT_LE(a * b.weight, other * bs[id - 1].weight)
            << "picked " << id << " (" << a << ") over " << b.id << " (" << other << ")";
      }
      counters_->backend[id].flows_active.add();
      if (closes && rng() % 3 == 0) {
        const uint32_t c = static_cast<uint32_t>(1 + rng() % n);
        if (counters_->backend[c].flows_active.get() > 0) counters_->backend[c].flows_active.sub();
      }
      if (!closes) {
        for (const B& b : bs) {
          const auto ai = static_cast<int64_t>(counters_->backend[b.id].flows_active.get());
          ASSERT_LE(ai * total, k * b.weight + total) << "rep " << rep << " k " << k;
          ASSERT_GE(ai * total, (k - static_cast<int64_t>(n)) * b.weight);
        }
      }
    }
  }
}

}  // namespace
}  // namespace lb::core
