// Full-NAT local ports (dataplane/core/snat.h): per-worker ownership by port, FIFO reuse,
// exhaustion counted, release of a port not held ignored, restore after a restart.

#include "snat.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <vector>

namespace lb::core {
namespace {

constexpr uint32_t kL1 = 0x0a000a01;  // 10.0.10.1
constexpr uint32_t kL2 = 0x0a000a02;

TEST(SnatPorts, WorkersOwnDisjointSharesCoveringEveryPort) {
  for (uint16_t workers : {uint16_t{1}, uint16_t{2}, uint16_t{3}, uint16_t{4}, uint16_t{6}}) {
    std::vector<int> seen(65536, 0);
    uint32_t total = 0;
    for (uint16_t w = 0; w < workers; ++w) {
      const std::vector<uint32_t> ips = {kL1};
      SnatPorts sp(ips, w, workers);
      const uint32_t n = SnatPorts::ports_per_address(w, workers);
      total += n;
      for (uint32_t i = 0; i < n; ++i) {
        uint8_t li;
        uint16_t port;
        ASSERT_EQ(sp.alloc(i, li, port), SnatPorts::Alloc::kOk);
        EXPECT_EQ(SnatPorts::owner_of(port, workers), w);
        EXPECT_GE(port, SnatPorts::kFirstPort);
        ++seen[port];
        EXPECT_EQ(sp.flow_of(li, port), i);
      }
      uint8_t li;
      uint16_t port;
      EXPECT_EQ(sp.alloc(99, li, port), SnatPorts::Alloc::kExhausted)
          << "worker " << w << " of " << workers;
      EXPECT_EQ(sp.stats(0).alloc_failures, 1u);
      EXPECT_EQ(sp.stats(0).free, 0u);
      EXPECT_EQ(sp.stats(0).in_use, n);
    }
    EXPECT_EQ(total, 65536u - SnatPorts::kFirstPort) << workers << " workers";
    for (uint32_t p = 0; p < 65536; ++p)
      EXPECT_EQ(seen[p], p >= SnatPorts::kFirstPort ? 1 : 0) << "port " << p;
  }
}

TEST(SnatPorts, RoundRobinOverAddressesAndFifoReuse) {
  const std::vector<uint32_t> ips = {kL1, kL2};
  SnatPorts sp(ips, 1, 2);
  uint8_t li[4];
  uint16_t port[4];
  for (uint32_t i = 0; i < 4; ++i) ASSERT_EQ(sp.alloc(i, li[i], port[i]), SnatPorts::Alloc::kOk);
  EXPECT_EQ(li[0], 0);
  EXPECT_EQ(li[1], 1);
  EXPECT_EQ(li[2], 0);
  EXPECT_EQ(port[0], 1025);
  EXPECT_EQ(port[2], 1027);
  EXPECT_EQ(sp.find(kL2), 1);
  EXPECT_EQ(sp.find(0x01020304), -1);
  // A released port goes to the back of the queue: not reused while others are free.
  sp.release(li[0], port[0]);
  EXPECT_EQ(sp.flow_of(li[0], port[0]), SnatPorts::kNoFlow);
  sp.release(li[0], port[0]);  // twice: ignored
  EXPECT_EQ(sp.stats(0).in_use, 1u);
  uint8_t l;
  uint16_t p;
  ASSERT_EQ(sp.alloc(10, l, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(l, 0);
  EXPECT_EQ(p, 1029);  // not 1025, freed just now
  ASSERT_EQ(sp.alloc(11, l, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(l, 1);
  EXPECT_EQ(p, 1029);
}

TEST(SnatPorts, FreedPortComesBackAfterAllOthers) {
  const std::vector<uint32_t> ips = {kL1};
  SnatPorts sp(ips, 0, 16);
  const uint32_t n = SnatPorts::ports_per_address(0, 16);
  std::vector<uint16_t> ports(n);
  uint8_t li;
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(sp.alloc(i, li, ports[i]), SnatPorts::Alloc::kOk);
  sp.release(0, ports[5]);
  sp.release(0, ports[2]);
  uint16_t p;
  ASSERT_EQ(sp.alloc(100, li, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, ports[5]);
  ASSERT_EQ(sp.alloc(101, li, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, ports[2]);
  EXPECT_EQ(sp.alloc(102, li, p), SnatPorts::Alloc::kExhausted);
}

// A released port waits its hold before a new flow takes it (the backend's TIME_WAIT for the old
// connection); the oldest released goes first once it has waited, and while every free port
// waits, alloc says so rather than that the ports are exhausted.
TEST(SnatPorts, ReleasedPortWaitsItsHold) {
  const std::vector<uint32_t> ips = {kL1};
  SnatPorts sp(ips, 0, 16, SnatPorts::kFirstPort, 65535, 100);
  const uint32_t n = SnatPorts::ports_per_address(0, 16);
  std::vector<uint16_t> ports(n);
  uint8_t li;
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(sp.alloc(i, li, ports[i], 5), SnatPorts::Alloc::kOk);
  uint16_t p;
  EXPECT_EQ(sp.alloc(99, li, p, 5), SnatPorts::Alloc::kExhausted);
  sp.release(0, ports[3], 1000);
  sp.release(0, ports[7], 1050);
  EXPECT_EQ(sp.alloc(100, li, p, 1000), SnatPorts::Alloc::kCooling);
  EXPECT_EQ(sp.alloc(100, li, p, 1099), SnatPorts::Alloc::kCooling);
  EXPECT_EQ(sp.stats(0).alloc_failures, 3u);
  ASSERT_EQ(sp.alloc(100, li, p, 1100), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, ports[3]);
  EXPECT_EQ(sp.alloc(101, li, p, 1149), SnatPorts::Alloc::kCooling);
  ASSERT_EQ(sp.alloc(101, li, p, 1150), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, ports[7]);
  // After a restart (claim + rebuild_free) when the free ports were released is not known.
  SnatPorts again(ips, 0, 16, SnatPorts::kFirstPort, 65535, 100);
  ASSERT_TRUE(again.claim(1, 0, ports[0]));
  again.rebuild_free();
  ASSERT_EQ(again.alloc(2, li, p, 0), SnatPorts::Alloc::kOk);
  EXPECT_NE(p, ports[0]);
}

// The backends' TIME_WAIT outlives lbd: hold times kept by the caller (the flow file) make a
// new SnatPorts hand out never-used ports first, then the longest-released, and a port still
// waiting only once its time has come.
TEST(SnatPorts, HoldsKeptAcrossARestartDecideTheOrder) {
  const std::vector<uint32_t> ips = {kL1};
  const uint32_t n = SnatPorts::ports_per_address(0, 16);
  std::vector<uint64_t> holds(n);
  uint8_t li;
  uint16_t p;
  std::vector<uint16_t> used;
  {
    SnatPorts sp(ips, 0, 16, SnatPorts::kFirstPort, 65535, 100, {holds, 0});
    for (uint32_t i = 0; i < 4; ++i) {
      ASSERT_EQ(sp.alloc(i, li, p, 10), SnatPorts::Alloc::kOk);
      used.push_back(p);
    }
    sp.release(0, used[2], 500);  // usable at 600
    sp.release(0, used[0], 700);  // at 800
    sp.release(0, used[1], 50);   // at 150
    // used[3] is still in use when the process ends (--fresh would mark it, core/flow_store.h)
  }
  EXPECT_EQ(holds[SnatPorts::hold_index(0, used[2], 0, 16, 1, SnatPorts::kFirstPort, 65535)], 600u);
  EXPECT_EQ(SnatPorts::hold_index(0, used[2] + 1, 0, 16, 1, SnatPorts::kFirstPort, 65535),
            SnatPorts::kNoHold);  // worker 1's
  EXPECT_EQ(SnatPorts::hold_index(1, used[2], 0, 16, 1, SnatPorts::kFirstPort, 65535),
            SnatPorts::kNoHold);  // no second address
  EXPECT_EQ(SnatPorts::hold_index(0, 80, 0, 16, 1, SnatPorts::kFirstPort, 65535),
            SnatPorts::kNoHold);
  SnatPorts again(ips, 0, 16, SnatPorts::kFirstPort, 65535, 100, {holds, 0});
  std::vector<uint16_t> order;
  while (again.alloc(1, li, p, 700) == SnatPorts::Alloc::kOk) order.push_back(p);
  // Every port but the one waiting until 800 (used[0]); never-used ones first, used[3] (hold 0)
  // among them, then used[1] (150) and used[2] (600).
  ASSERT_EQ(order.size(), n - 1);
  EXPECT_EQ(order[n - 3], used[1]);
  EXPECT_EQ(order[n - 2], used[2]);
  EXPECT_EQ(std::count(order.begin(), order.end(), used[0]), 0);
  EXPECT_EQ(again.alloc(1, li, p, 799), SnatPorts::Alloc::kCooling);
  ASSERT_EQ(again.alloc(1, li, p, 800), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, used[0]);
  std::vector<uint64_t> wrong(n + 1);
  EXPECT_THROW(SnatPorts(ips, 0, 16, SnatPorts::kFirstPort, 65535, 100, {wrong, 0}),
               std::invalid_argument);
}

// Without kept holds a process begins its rings at Memory::start, so that a restart does not
// take again the ports the previous process took first.
TEST(SnatPorts, RingsBeginAtStart) {
  const std::vector<uint32_t> ips = {kL1, kL2};
  const uint32_t n = SnatPorts::ports_per_address(1, 2);  // 32256: 1025, 1027, ...
  SnatPorts sp(ips, 1, 2, SnatPorts::kFirstPort, 65535, 0, {{}, n + 5});
  uint8_t li;
  uint16_t p;
  ASSERT_EQ(sp.alloc(0, li, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, 1025 + 2 * 5);
  EXPECT_EQ(li, 0);
  ASSERT_EQ(sp.alloc(1, li, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, 1025 + 2 * 5);
  EXPECT_EQ(li, 1);
  std::set<uint16_t> got = {p};
  while (sp.alloc(2, li, p) == SnatPorts::Alloc::kOk)
    if (li == 1) got.insert(p);
  EXPECT_EQ(got.size(), n);  // the ring wraps round to the first port: every port once
  EXPECT_TRUE(got.count(1025));
}

TEST(SnatPorts, ForeignOrOutOfRangePortsHaveNoFlow) {
  const std::vector<uint32_t> ips = {kL1};
  SnatPorts sp(ips, 0, 2);
  EXPECT_EQ(sp.flow_of(0, 1025), SnatPorts::kNoFlow);  // worker 1's
  EXPECT_EQ(sp.flow_of(0, 80), SnatPorts::kNoFlow);
  EXPECT_EQ(sp.flow_of(3, 1024), SnatPorts::kNoFlow);
  sp.release(0, 1025);  // not ours: ignored
  EXPECT_EQ(sp.stats(0).in_use, 0u);
}

TEST(SnatPorts, ClaimAfterRestartThenAllocSkipsClaimed) {
  const std::vector<uint32_t> ips = {kL1};
  SnatPorts sp(ips, 0, 1);
  EXPECT_TRUE(sp.claim(7, 0, 1024));
  EXPECT_TRUE(sp.claim(8, 0, 1026));
  EXPECT_FALSE(sp.claim(9, 0, 1026));  // held
  EXPECT_FALSE(sp.claim(9, 0, 100));
  sp.rebuild_free();
  EXPECT_EQ(sp.flow_of(0, 1026), 8u);
  uint8_t li;
  uint16_t p;
  std::set<uint16_t> got;
  while (sp.alloc(1, li, p) == SnatPorts::Alloc::kOk) got.insert(p);
  EXPECT_EQ(got.size(), 65536u - 1024u - 2u);
  EXPECT_FALSE(got.count(1024));
  EXPECT_FALSE(got.count(1026));
}

TEST(SnatPorts, RefusesBadAddressLists) {
  const std::vector<uint32_t> twice = {kL1, kL1};
  EXPECT_THROW(SnatPorts(twice, 0, 1), std::invalid_argument);
  const std::vector<uint32_t> zero = {0};
  EXPECT_THROW(SnatPorts(zero, 0, 1), std::invalid_argument);
  const std::vector<uint32_t> many(SnatPorts::kMaxLocalAddrs + 1, kL1);
  EXPECT_THROW(SnatPorts(many, 0, 1), std::invalid_argument);
  const std::vector<uint32_t> one = {kL1};
  EXPECT_THROW(SnatPorts(one, 2, 2), std::invalid_argument);
}

TEST(SnatPorts, ANarrowRangeIsSplitToo) {
  const std::vector<uint32_t> ips = {kL1};
  SnatPorts w0(ips, 0, 2, 2000, 2003), w1(ips, 1, 2, 2000, 2003);
  EXPECT_EQ(SnatPorts::ports_per_address(0, 2, 2000, 2003), 2u);
  uint8_t li;
  uint16_t p;
  ASSERT_EQ(w0.alloc(0, li, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, 2000);
  ASSERT_EQ(w0.alloc(1, li, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, 2002);
  EXPECT_EQ(w0.alloc(2, li, p), SnatPorts::Alloc::kExhausted);
  ASSERT_EQ(w1.alloc(0, li, p), SnatPorts::Alloc::kOk);
  EXPECT_EQ(p, 2001);
  EXPECT_EQ(w1.flow_of(0, 2005), SnatPorts::kNoFlow);                     // past the range
  EXPECT_THROW(SnatPorts(ips, 1, 2, 3000, 3000), std::invalid_argument);  // worker 1: none
}

TEST(SnatPorts, NoAddressesMeansEveryAllocFails) {
  SnatPorts sp({}, 0, 1);
  uint8_t li;
  uint16_t p;
  EXPECT_EQ(sp.alloc(0, li, p), SnatPorts::Alloc::kExhausted);
}

}  // namespace
}  // namespace lb::core
