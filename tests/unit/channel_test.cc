// The shared-memory channel between lbd (Segment) and lb-healthd (Attachment): layout, attach,
// restart detection, a forked producer pushing many updates, full rings, events, and lbd's
// validation of what it receives; who may have made the segment (owner, mode, type) and what
// each side does with a segment whose fields were corrupted (refuses, never crashes).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <rte_ring.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "channel.h"
#include "live_pool.h"
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

Event make_event(EventType type, uint32_t count) {
  Event e{};
  e.type = static_cast<uint32_t>(type);
  e.count = count;
  e.ip = 0x0a14000b;
  e.port = 8080;
  std::strcpy(e.service, "web");
  return e;
}

TEST(ShmAbi, LayoutIsFixed) {
  EXPECT_EQ(sizeof(BackendEntry), 12u);
  EXPECT_EQ(sizeof(Event), 64u);
  EXPECT_EQ(offsetof(ServiceUpdate, forward), 72u);
  EXPECT_EQ(offsetof(ServiceUpdate, syn_policy), 73u);
  EXPECT_EQ(offsetof(ServiceUpdate, backends), 76u);
  EXPECT_EQ(sizeof(ServiceUpdate), 76u + 12u * kMaxBackendsPerService + 4u);
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
  ASSERT_EQ(fchmod(fd, 0600), 0);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
  std::string why;
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("the same build"), std::string::npos) << why;  // the wrong size
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(segment_size())), 0);
  close(fd);
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("not an lbd segment"), std::string::npos) << why;
  shm_unlink(name.c_str());
}

// -- Who made the segment ------------------------------------------------------------------

// A test-only uid that is not ours (nobody).
constexpr uid_t kOtherUid = 65534;

TEST(Trust, RefusesASegmentOfAnotherUserOrWithAnotherMode) {
  const std::string name = test_name("owner");
  const std::string path = segment_path(name);
  Segment seg = Segment::create(name);
  struct stat st {};
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, geteuid());
  std::string why;
  ASSERT_TRUE(Attachment::try_attach(name, why)) << why;

  for (const mode_t mode : {mode_t{0644}, mode_t{0660}, mode_t{0606}, mode_t{0700}, mode_t{0400}}) {
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
    EXPECT_FALSE(Attachment::try_attach(name, why)) << std::oct << mode;
    EXPECT_NE(why.find("not 0600: not lbd's segment, refused"), std::string::npos) << why;
  }
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  // A second name for it (another user's hard link could be swapped in and out).
  const std::string link_path = path + ".link";
  ASSERT_EQ(link(path.c_str(), link_path.c_str()), 0);
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("2 links"), std::string::npos) << why;
  unlink(link_path.c_str());
  ASSERT_TRUE(Attachment::try_attach(name, why)) << why;

  if (geteuid() != 0) {
    GTEST_SKIP() << "another owner needs root (chown to uid " << kOtherUid << ")";
  }
  ASSERT_EQ(chown(path.c_str(), kOtherUid, static_cast<gid_t>(-1)), 0);
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("owned by uid 65534, not by uid 0"), std::string::npos) << why;
}

// What another user may have left at the name before lbd starts: never used, never followed.
TEST(Trust, LbdReplacesWhateverHoldsTheNameAndAttachersRefuseLinks) {
  const std::string name = test_name("preempt");
  const std::string path = segment_path(name);
  // A symbolic link to a file of ours: lb-healthd does not follow it, lbd replaces the link.
  const std::string victim = "/tmp/lbd-test-victim-" + std::to_string(getpid());
  std::ofstream(victim) << "precious\n";
  ASSERT_EQ(symlink(victim.c_str(), path.c_str()), 0);
  std::string why;
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("symbolic link"), std::string::npos) << why;
  {
    Segment seg = Segment::create(name);
    struct stat st {};
    ASSERT_EQ(lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    ASSERT_TRUE(Attachment::try_attach(name, why)) << why;
  }
  std::ifstream in(victim);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "precious");
  unlink(victim.c_str());
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "lbd removes its segment when it exits";

  if (geteuid() != 0) GTEST_SKIP() << "a file of another user needs root (chown)";
  // A world-writable file of another user, made before lbd starts (the name is predictable).
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fchown(fd, kOtherUid, static_cast<gid_t>(-1)), 0);
  ASSERT_EQ(fchmod(fd, 0666), 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(segment_size())), 0);
  struct stat theirs {};
  ASSERT_EQ(fstat(fd, &theirs), 0);
  EXPECT_FALSE(Attachment::try_attach(name, why));
  EXPECT_NE(why.find("owned by uid 65534"), std::string::npos) << why;
  Segment seg = Segment::create(name);
  struct stat st {};
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_NE(st.st_ino, theirs.st_ino);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto a = Attachment::try_attach(name, why);
  ASSERT_TRUE(a) << why;
  // What the other user still holds open is not the segment: nothing written there arrives.
  void* theirs_map = mmap(nullptr, segment_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(theirs_map, MAP_FAILED);
  std::memset(theirs_map, 0xff, segment_size());
  munmap(theirs_map, segment_size());
  close(fd);
  EXPECT_TRUE(a->send(make_update(1, "web", 1)));
  ServiceUpdate out[2];
  EXPECT_EQ(seg.receive(out, 2), 1u);
  EXPECT_EQ(seg.faults(), 0u);
}

// -- Corrupted fields: both sides refuse, neither crashes -----------------------------------

struct Rings {
  rte_ring* updates;
  rte_ring* events;
};

Rings rings_of(Segment& seg) {
  auto* base = reinterpret_cast<uint8_t*>(&seg.header());
  return {reinterpret_cast<rte_ring*>(base + seg.header().update_ring_offset),
          reinterpret_cast<rte_ring*>(base + seg.header().event_ring_offset)};
}

// Each corruption of a ring's control fields: a fresh segment, the field broken, then both
// sides try to use that ring.
struct RingCorruption {
  const char* what;
  std::function<void(rte_ring*)> corrupt;
};

const std::vector<RingCorruption>& ring_corruptions() {
  static const std::vector<RingCorruption> all = {
      {"mask", [](rte_ring* r) { r->mask = 0xffffffffu; }},
      {"mask too small", [](rte_ring* r) { r->mask = 1; }},
      {"size", [](rte_ring* r) { r->size = 1u << 30; }},
      {"capacity", [](rte_ring* r) { r->capacity = 1u << 30; }},
      {"flags", [](rte_ring* r) { r->flags = 0; }},
      {"sync type", [](rte_ring* r) { std::memset(&r->prod.sync_type, 0x7f, 4); }},
      {"producer head", [](rte_ring* r) { r->prod.head = 12345; }},
      {"producer tail", [](rte_ring* r) { r->prod.tail = 0x80000000u; }},
      {"consumer head", [](rte_ring* r) { r->cons.head = 777; }},
      {"consumer tail", [](rte_ring* r) { r->cons.tail = 0x40000000u; }},
  };
  return all;
}

// A fresh segment and lb-healthd's attachment to it.
struct Connected {
  std::string name;
  Segment seg;
  std::optional<Attachment> a;
};
Connected connect(const char* what) {
  const std::string name = test_name(what);
  Segment seg = Segment::create(name);
  std::string why;
  std::optional<Attachment> a = Attachment::try_attach(name, why);
  EXPECT_TRUE(a) << why;
  return Connected{name, std::move(seg), std::move(a)};
}

TEST(Corruption, UpdateRingRefusedByBothSides) {
  for (const RingCorruption& c : ring_corruptions()) {
    SCOPED_TRACE(c.what);
    auto [name, seg, a] = connect("corrupt-upd");
    ASSERT_TRUE(a);
    std::string why;
    ASSERT_TRUE(a->send(make_update(1, "web", 1)));  // something on the ring
    c.corrupt(rings_of(seg).updates);
    const std::string what = c.what;
    // Each side judges the fields it depends on: the other side's own head is only its own
    // business (and may move under a check), so lb-healthd (the producer) does not judge
    // lbd's consumer head, nor lbd the producer head.
    if (what != "consumer head") {
      // lb-healthd: the send is refused, the attachment broken from then on, and a new
      // attachment refuses the segment outright.
      EXPECT_FALSE(a->send(make_update(2, "web", 1)));
      EXPECT_TRUE(a->broken());
      EXPECT_NE(a->last_fault().find("update ring"), std::string::npos) << a->last_fault();
      EXPECT_FALSE(a->send(make_update(3, "web", 1)));
      EXPECT_FALSE(Attachment::try_attach(name, why));
      EXPECT_NE(why.find("update ring"), std::string::npos) << why;
    }
    if (what != "producer head") {
      // lbd: nothing is read off a ring it cannot trust, on every try.
      ServiceUpdate out[4];
      EXPECT_EQ(seg.receive(out, 4), 0u);
      EXPECT_EQ(seg.receive(out, 4), 0u);
      EXPECT_EQ(seg.faults(), 2u);
      EXPECT_NE(seg.last_fault().find("update ring"), std::string::npos) << seg.last_fault();
    }
  }
}

TEST(Corruption, EventRingRefusedByBothSides) {
  const Event e = make_event(EventType::kSynRst, 1);
  for (const RingCorruption& c : ring_corruptions()) {
    SCOPED_TRACE(c.what);
    auto [name, seg, a] = connect("corrupt-evt");
    ASSERT_TRUE(a);
    std::string why;
    ASSERT_TRUE(seg.post(e));
    c.corrupt(rings_of(seg).events);
    const std::string what = c.what;
    // lbd produces events: anything but the consumer's own head and tail stops it.
    if (what != "consumer head") {
      EXPECT_FALSE(seg.post(e));
      EXPECT_NE(seg.last_fault().find("event ring"), std::string::npos) << seg.last_fault();
    }
    // lb-healthd consumes them: anything but the producer's head stops it, for good, and a new
    // attachment refuses the segment.
    Event out[4];
    if (what != "producer head") {
      EXPECT_EQ(a->receive(out, 4), 0u);
      EXPECT_TRUE(a->broken());
      EXPECT_FALSE(a->send(make_update(1, "web", 1)));
      EXPECT_FALSE(Attachment::try_attach(name, why));
      EXPECT_NE(why.find("event ring"), std::string::npos) << why;
    }
  }
}

TEST(Corruption, HeaderFieldsRefusedAtAttach) {
  const std::vector<std::pair<const char*, std::function<void(Header&)>>> cases = {
      {"magic", [](Header& h) { h.magic = 0; }},
      {"version", [](Header& h) { h.version = kVersion + 1; }},
      {"header_size", [](Header& h) { h.header_size = 1; }},
      {"update_size", [](Header& h) { h.update_size = 8; }},
      {"event_size", [](Header& h) { h.event_size = 1 << 20; }},
      {"update_ring_offset", [](Header& h) { h.update_ring_offset = 1 << 30; }},
      {"event_ring_offset", [](Header& h) { h.event_ring_offset = 8; }},
      {"total_size", [](Header& h) { h.total_size = 1; }},
      {"epoch", [](Header& h) { h.epoch = 0; }},
      {"received_generation", [](Header& h) { h.received_generation = kMaxGeneration + 1; }},
      {"applied_generation", [](Header& h) { h.applied_generation = ~uint64_t{0}; }},
      {"rejected_generation", [](Header& h) { h.rejected_generation = ~uint64_t{0} - 5; }},
  };
  for (const auto& [what, corrupt] : cases) {
    SCOPED_TRACE(what);
    const std::string name = test_name("corrupt-hdr");
    Segment seg = Segment::create(name);
    corrupt(seg.header());
    std::string why;
    EXPECT_FALSE(Attachment::try_attach(name, why));
    EXPECT_FALSE(why.empty());
  }
}

TEST(Corruption, MalformedMessagesAreDroppedAndCounted) {
  auto [name, seg, a] = connect("corrupt-msg");
  ASSERT_TRUE(a);
  // Updates whose generation cannot be (lbd checks everything else in apply_update()).
  ASSERT_TRUE(a->send(make_update(0, "web", 1)));
  ASSERT_TRUE(a->send(make_update(kMaxGeneration + 1, "web", 1)));
  ASSERT_TRUE(a->send(make_update(7, "web", 1)));
  ServiceUpdate out[4];
  ASSERT_EQ(seg.receive(out, 4), 1u);
  EXPECT_EQ(out[0].generation, 7u);
  EXPECT_EQ(seg.faults(), 2u);
  EXPECT_NE(seg.last_fault().find("impossible generation"), std::string::npos);
  // Events: unknown type, counts 0 and too large, unterminated or empty service, address 0.
  const Event good = make_event(EventType::kSynTimeout, 2);
  std::vector<Event> bad(6, good);
  bad[0].type = 9;
  bad[1].count = 0;
  bad[2].count = kMaxEventCount + 1;
  std::memset(bad[3].service, 'x', kNameLen);
  bad[4].service[0] = '\0';
  bad[5].ip = 0;
  for (const Event& e : bad) ASSERT_TRUE(seg.post(e));
  ASSERT_TRUE(seg.post(good));
  Event got[8];
  ASSERT_EQ(a->receive(got, 8), 1u);
  EXPECT_EQ(got[0].count, 2u);
  EXPECT_EQ(a->faults(), 6u);
  EXPECT_FALSE(a->broken());  // a bad message is dropped; the ring itself is fine
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
  const Event e = make_event(EventType::kSynRst, 3);
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
  u = make_update(2, "web", 2);
  u.flags = 0x80;
  EXPECT_NE(dp::apply_update(state, u).find("unknown flags"), std::string::npos);
  u.flags = kServiceRemoved | 8;  // not even a removal (bits 1-2 are the miss policy)
  EXPECT_NE(dp::apply_update(state, u).find("unknown flags"), std::string::npos);
  u = make_update(2, "", 2);
  EXPECT_NE(dp::apply_update(state, u), "");
  ASSERT_EQ(state.size(), before.size());
  EXPECT_EQ(state["web"].backends.size(), 2u);
}

TEST(ApplyUpdate, ForwardModeIsCheckedAndCarried) {
  dp::PoolState state;
  ServiceUpdate u = make_update(1, "web", 2);
  EXPECT_EQ(u.forward, 0u);  // dnat
  ASSERT_EQ(dp::apply_update(state, u), "");
  EXPECT_EQ(state["web"].forward, cfg::Forward::kDnat);
  u = make_update(2, "web", 2);
  u.forward = 3;
  EXPECT_EQ(dp::apply_update(state, u), "web: unknown forward mode 3");
  u = make_update(2, "web", 2);
  u.reserved[1] = 1;
  EXPECT_EQ(dp::apply_update(state, u), "web: reserved bytes are not 0");
  u = make_update(2, "web", 2);
  u.padding[0] = 1;
  EXPECT_EQ(dp::apply_update(state, u), "web: reserved bytes are not 0");
  // Until the dataplane forwards them, the other modes are refused by name.
  u = make_update(2, "web", 2);
  u.forward = static_cast<uint8_t>(cfg::Forward::kTunnel);
  EXPECT_EQ(dp::apply_update(state, u), "");
  EXPECT_EQ(state["web"].forward, cfg::Forward::kTunnel);
  u.forward = static_cast<uint8_t>(cfg::Forward::kFullnat);
  ASSERT_EQ(dp::apply_update(state, u), "");
  EXPECT_EQ(state["web"].forward, cfg::Forward::kFullnat);
}

TEST(ApplyUpdate, FillUpdateCarriesForward) {
  cfg::ServiceConfig s;
  s.name = "web";
  s.vip = 0x0a0a0064;
  s.port = 80;
  auto u = std::make_unique<ServiceUpdate>();
  for (const cfg::Forward f :
       {cfg::Forward::kDnat, cfg::Forward::kTunnel, cfg::Forward::kFullnat}) {
    s.forward = f;
    health::fill_update(*u, s, health::LivePool{}, 1);
    EXPECT_EQ(u->forward, static_cast<uint8_t>(f));
    EXPECT_EQ(u->reserved[0] | u->reserved[1], 0);
  }
}

// A full-NAT service's misses cannot be rehashed (its backend knows a connection by the local
// address:port of the node that began it): a maglev full-NAT service leaves the miss policy to
// lbd's dataplane, and lbd refuses an update that asks for rehash anyway.
TEST(ApplyUpdate, FullnatMaglevServicesDoNotRehash) {
  cfg::ServiceConfig s;
  s.name = "web";
  s.vip = 0x0a0a0064;
  s.port = 80;
  s.scheduler = cfg::Scheduler::kMaglev;
  s.maglev_table_size = 1009;
  auto u = std::make_unique<ServiceUpdate>();
  const auto miss_of = [](const ServiceUpdate& x) {
    return static_cast<Miss>((x.flags & kMissMask) >> kMissShift);
  };
  health::fill_update(*u, s, health::LivePool{}, 1);
  EXPECT_EQ(miss_of(*u), Miss::kRehash);  // dnat: rehash by default
  s.forward = cfg::Forward::kFullnat;
  health::fill_update(*u, s, health::LivePool{}, 2);
  EXPECT_EQ(miss_of(*u), Miss::kDefault);  // full-NAT: the dataplane's
  s.miss_policy = cfg::MissPolicy::kRst;
  health::fill_update(*u, s, health::LivePool{}, 3);
  EXPECT_EQ(miss_of(*u), Miss::kRst);
  dp::PoolState state;
  ASSERT_EQ(dp::apply_update(state, *u), "");
  u->flags = static_cast<uint8_t>(static_cast<uint8_t>(Miss::kRehash) << kMissShift);
  EXPECT_EQ(dp::apply_update(state, *u),
            "web: miss policy rehash for a full-NAT service (a rehashed flow cannot continue its "
            "connection)");
  EXPECT_EQ(state["web"].miss, Miss::kRst);  // unchanged
}

TEST(ApplyUpdate, SynFloodPolicyIsCheckedAndCarried) {
  dp::PoolState state;
  ServiceUpdate u = make_update(1, "web", 2);
  EXPECT_EQ(u.syn_policy, 0u);  // the dataplane's
  ASSERT_EQ(dp::apply_update(state, u), "");
  EXPECT_EQ(state["web"].syn_policy, SynFlood::kDefault);
  u = make_update(2, "web", 2);
  u.syn_policy = 4;
  EXPECT_EQ(dp::apply_update(state, u), "web: unknown SYN flood policy 4");
  for (const SynFlood p : {SynFlood::kDropNew, SynFlood::kEvictEmbryonic}) {
    u = make_update(2, "web", 2);
    u.syn_policy = static_cast<uint8_t>(p);
    ASSERT_EQ(dp::apply_update(state, u), "");
    EXPECT_EQ(state["web"].syn_policy, p);
  }
  // Stateless: maglev and tunnel only.
  u = make_update(3, "web", 2);
  u.syn_policy = static_cast<uint8_t>(SynFlood::kStateless);
  EXPECT_EQ(dp::apply_update(state, u),
            "web: SYN flood policy stateless for a service that is not maglev and tunnel");
  u.scheduler = static_cast<uint8_t>(Scheduler::kMaglev);
  u.maglev_table_size = 1009;
  EXPECT_NE(dp::apply_update(state, u), "") << "maglev but dnat";
  u.forward = static_cast<uint8_t>(cfg::Forward::kTunnel);
  ASSERT_EQ(dp::apply_update(state, u), "");
  EXPECT_EQ(state["web"].syn_policy, SynFlood::kStateless);
}

TEST(ApplyUpdate, FillUpdateCarriesSynFloodPolicy) {
  cfg::ServiceConfig s;
  s.name = "web";
  s.vip = 0x0a0a0064;
  s.port = 80;
  auto u = std::make_unique<ServiceUpdate>();
  health::fill_update(*u, s, health::LivePool{}, 1);
  EXPECT_EQ(u->syn_policy, static_cast<uint8_t>(SynFlood::kDefault));
  const std::pair<cfg::SynFloodPolicy, SynFlood> wire[] = {
      {cfg::SynFloodPolicy::kDropNew, SynFlood::kDropNew},
      {cfg::SynFloodPolicy::kEvictEmbryonic, SynFlood::kEvictEmbryonic},
      {cfg::SynFloodPolicy::kStateless, SynFlood::kStateless}};
  for (const auto& [p, w] : wire) {
    s.syn_flood_policy = p;
    health::fill_update(*u, s, health::LivePool{}, 1);
    EXPECT_EQ(u->syn_policy, static_cast<uint8_t>(w));
  }
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
