// The shared-memory channel between lbd (Segment) and lb-healthd (Attachment): layout, attach,
// restart detection, a forked producer pushing many updates, full rings, events, and lbd's
// validation of what it receives.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "channel.h"
#include "pool_builder.h"

namespace lb::shm {
namespace {

std::string test_name(const char* what) {
  return "/lbd-test-" + std::string(what) + "-" + std::to_string(getpid());
}

ServiceUpdate make_update(uint64_t gen, const char* name, uint32_t nbackends) {
  ServiceUpdate u{};
  u.generation = gen;
  std::strncpy(u.name, name, kNameLen - 1);
  u.vip = 0x0a0a0064;
  u.port = 80;
  u.backend_count = nbackends;  // may exceed the array to test refusal; only that many are set
  for (uint32_t i = 0; i < nbackends && i < kMaxBackendsPerService; ++i)
    u.backends[i] = {0x0a140000u + i + 1, 8080, 1, 0, {}};
  return u;
}

TEST(ShmAbi, LayoutIsFixed) {
  EXPECT_EQ(sizeof(BackendEntry), 12u);
  EXPECT_EQ(sizeof(Event), 64u);
  EXPECT_EQ(offsetof(ServiceUpdate, backends), 72u);
  EXPECT_EQ(sizeof(ServiceUpdate), 72u + 12u * kMaxBackendsPerService);
  EXPECT_EQ(offsetof(Header, epoch), 24u);
  EXPECT_EQ(offsetof(Header, applied_generation), 64u);
  EXPECT_LE(sizeof(Header), kHeaderSize);
}

TEST(Channel, AttachWaitsForTheSegment) {
  const std::string name = test_name("attach");
  std::string why;
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("is lbd running?"), std::string::npos) << why;
  Segment seg = Segment::create(name);
  auto a = Attachment::try_attach(name, why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->epoch(), seg.epoch());
  EXPECT_FALSE(a->stale());
}

TEST(Channel, RefusesSomethingElse) {
  const std::string name = test_name("garbage");
  const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
  close(fd);
  std::string why;
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("not an lbd segment"), std::string::npos) << why;
  shm_unlink(name.c_str());
}

TEST(Channel, LbdRestartIsANewEpochAndMakesAttachmentsStale) {
  const std::string name = test_name("epoch");
  std::string why;
  std::optional<Segment> seg(Segment::create(name));
  auto a = Attachment::try_attach(name, why);
  ASSERT_TRUE(a);
  const uint64_t first = a->epoch();
  seg.reset();  // lbd exits: the name goes away
  EXPECT_TRUE(a->stale());
  seg.emplace(Segment::create(name));  // lbd starts again
  EXPECT_TRUE(a->stale());
  auto b = Attachment::try_attach(name, why);
  ASSERT_TRUE(b) << why;
  EXPECT_FALSE(b->stale());
  EXPECT_NE(b->epoch(), first);
  // Updates sent to the old segment never reach the new one.
  EXPECT_TRUE(a->send(make_update(1, "web", 1)));
  ServiceUpdate out[4];
  EXPECT_EQ(seg->receive(out, 4), 0u);
}

TEST(Channel, FullRingNeverBlocks) {
  const std::string name = test_name("full");
  Segment seg = Segment::create(name);
  std::string why;
  auto a = Attachment::try_attach(name, why);
  ASSERT_TRUE(a);
  uint64_t sent = 0;
  const auto start = std::chrono::steady_clock::now();
  while (a->send(make_update(sent + 1, "web", 3))) ++sent;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(sent, kUpdateRingSlots - 1);  // an rte_ring holds one less than its size
  EXPECT_FALSE(a->send(make_update(sent + 1, "web", 3)));
  ServiceUpdate out[kUpdateRingSlots];
  ASSERT_EQ(seg.receive(out, kUpdateRingSlots), sent);
  for (uint64_t i = 0; i < sent; ++i) EXPECT_EQ(out[i].generation, i + 1);
  EXPECT_TRUE(a->send(make_update(sent + 1, "web", 3)));  // room again
}

TEST(Channel, ForkedProducerManyUpdatesInOrderNothingLost) {
  const std::string name = test_name("fork");
  Segment seg = Segment::create(name);
  constexpr uint64_t kUpdates = 100000;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::string why;
    auto a = Attachment::try_attach(name, why);
    if (!a) _exit(2);
    for (uint64_t g = 1; g <= kUpdates; ++g) {
      // The service's backend count changes with each generation so the final state is known.
      const ServiceUpdate u =
          make_update(g, g % 2 ? "odd" : "even", static_cast<uint32_t>(1 + g % 7));
      while (!a->send(u)) std::this_thread::yield();
    }
    _exit(0);
  }
  uint64_t expected = 1;
  dp::PoolState state;
  std::vector<ServiceUpdate> buf(16);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (expected <= kUpdates && std::chrono::steady_clock::now() < deadline) {
    const unsigned n = seg.receive(buf.data(), 16);
    for (unsigned i = 0; i < n; ++i) {
      ASSERT_EQ(buf[i].generation, expected) << "out of order or lost";
      ASSERT_EQ(dp::apply_update(state, buf[i]), "");
      ++expected;
    }
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(expected, kUpdates + 1);
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state["even"].backends.size(), 1 + kUpdates % 7);
  EXPECT_EQ(state["odd"].backends.size(), 1 + (kUpdates - 1) % 7);
}

// The same with threads, so that ThreadSanitizer (build-tsan in tools/test.sh) sees both ends.
TEST(Channel, ThreadedProducerAndConsumer) {
  const std::string name = test_name("threads");
  Segment seg = Segment::create(name);
  constexpr uint64_t kUpdates = 20000;
  std::thread producer([&] {
    std::string why;
    auto a = Attachment::try_attach(name, why);
    ASSERT_TRUE(a) << why;
    for (uint64_t g = 1; g <= kUpdates; ++g) {
      const ServiceUpdate u = make_update(g, "web", static_cast<uint32_t>(1 + g % 5));
      while (!a->send(u)) std::this_thread::yield();
    }
    // Wait for lbd's acknowledgement like lb-healthd does.
    while (a->header().applied_generation.load(std::memory_order_acquire) < kUpdates)
      std::this_thread::yield();
  });
  uint64_t expected = 1;
  std::vector<ServiceUpdate> buf(16);
  while (expected <= kUpdates) {
    const unsigned n = seg.receive(buf.data(), 16);
    for (unsigned i = 0; i < n; ++i) ASSERT_EQ(buf[i].generation, expected++);
    if (n)
      seg.header().applied_generation.store(expected - 1, std::memory_order_release);
    else
      std::this_thread::yield();
  }
  producer.join();
}

TEST(Channel, EventsFlowBack) {
  const std::string name = test_name("events");
  Segment seg = Segment::create(name);
  std::string why;
  auto a = Attachment::try_attach(name, why);
  ASSERT_TRUE(a);
  Event e{};
  e.type = static_cast<uint32_t>(EventType::kSynRst);
  e.count = 3;
  e.ip = 0x0a14000b;
  e.port = 8080;
  std::strcpy(e.service, "web");
  uint32_t posted = 0;
  while (seg.post(e)) ++posted;
  EXPECT_EQ(posted, kEventRingSlots - 1);
  Event out[8];
  ASSERT_EQ(a->receive(out, 8), 8u);
  EXPECT_EQ(out[0].count, 3u);
  EXPECT_STREQ(out[0].service, "web");
}

TEST(ApplyUpdate, RefusesMalformedAndKeepsState) {
  dp::PoolState state;
  ASSERT_EQ(dp::apply_update(state, make_update(1, "web", 2)), "");
  const dp::PoolState before = state;
  ServiceUpdate u = make_update(2, "web", 3);
  std::memset(u.name, 'x', kNameLen);  // not terminated
  EXPECT_NE(dp::apply_update(state, u), "");
  u = make_update(2, "web", kMaxBackendsPerService + 1);
  EXPECT_NE(dp::apply_update(state, u).find("at most"), std::string::npos);
  u = make_update(2, "web", 2);
  u.scheduler = 9;
  EXPECT_NE(dp::apply_update(state, u).find("scheduler"), std::string::npos);
  u = make_update(2, "web", 2);
  u.backends[1].state = 7;
  EXPECT_NE(dp::apply_update(state, u).find("malformed backend #1"), std::string::npos);
  u = make_update(2, "web", 2);
  u.port = 0;
  EXPECT_NE(dp::apply_update(state, u), "");
  ASSERT_EQ(state.size(), before.size());
  EXPECT_EQ(state["web"].backends.size(), 2u);
}

TEST(ApplyUpdate, ReplacesWholeServiceAndRemoves) {
  dp::PoolState state;
  ASSERT_EQ(dp::apply_update(state, make_update(1, "web", 3)), "");
  ServiceUpdate u = make_update(2, "web", 1);
  u.backends[0].state = static_cast<uint8_t>(BackendState::kDraining);
  ASSERT_EQ(dp::apply_update(state, u), "");
  ASSERT_EQ(state["web"].backends.size(), 1u);
  EXPECT_EQ(state["web"].backends[0].state, BackendState::kDraining);
  ASSERT_EQ(dp::apply_update(state, make_update(3, "api", 1)), "");
  u = make_update(4, "web", 0);
  u.flags = kServiceRemoved;
  ASSERT_EQ(dp::apply_update(state, u), "");
  EXPECT_EQ(state.count("web"), 0u);
  EXPECT_EQ(state.count("api"), 1u);
}

}  // namespace
}  // namespace lb::shm

namespace lb::dp {
namespace {

// lbd's first pool (before lb-healthd attaches) follows the same policy as lb-healthd.
TEST(StateFromConfig, AdminAndInitialStatesCountFromTheStart) {
  const cfg::Config c = cfg::parse_config(R"(
dataplane: { workers = 1; ports = ( { name = "p"; device = "net_null0"; ip = "10.20.0.1/24"; } ); };
services = (
  { name = "web"; vip = "10.20.0.100"; port = 80; maint = "drop";
    health = { initial_state = "up"; };
    backends = ( { address = "10.20.0.11"; port = 80; },
                 { address = "10.20.0.12"; port = 80; state = "drain"; },
                 { address = "10.20.0.13"; port = 80; state = "maint"; },
                 { address = "10.20.0.14"; port = 80; initial_state = "down"; } ); },
  { name = "panic"; vip = "10.20.0.100"; port = 81; on_all_down = "fail_open";
    health = { initial_state = "down"; };
    backends = ( { address = "10.20.0.21"; port = 80; } ); }
);
)",
                                          "t.cfg");
  PoolState st = state_from_config(c);
  ASSERT_EQ(st.size(), 2u);
  const auto& web = st.at("web").backends;
  ASSERT_EQ(web.size(), 4u);
  EXPECT_EQ(web[0].state, shm::BackendState::kActive);
  EXPECT_EQ(web[1].state, shm::BackendState::kDraining);
  EXPECT_EQ(web[2].state, shm::BackendState::kStopped);   // maint with maint = "drop"
  EXPECT_EQ(web[3].state, shm::BackendState::kDraining);  // starts down
  // Every backend down but fail_open: they are sent as active (Envoy's panic mode).
  ASSERT_EQ(st.at("panic").backends.size(), 1u);
  EXPECT_EQ(st.at("panic").backends[0].state, shm::BackendState::kActive);
}

}  // namespace
}  // namespace lb::dp
