// The one reader of lbd's telemetry counters (telemetry/lbd_snapshot.h) that lbctl stats/top and
// lb-healthd's /metrics share, against a fake lbd speaking DPDK's telemetry protocol.

#include "lbd_snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "fake_telemetry.h"

namespace lb::ctl {
namespace {

using namespace std::chrono_literals;

std::string socket_path(const char* name) {
  return "/tmp/lbd_snapshot_test_" + std::to_string(getpid()) + "_" + name + ".sock";
}

// Every counter command answered with an object naming it; /lb/fullnat as `fullnat` says.
test::FakeTelemetry::Answer lbd(bool fullnat) {
  return [fullnat](const std::string& cmd) -> Json {
    if (cmd == "/lb/fullnat" && !fullnat) return nullptr;  // an lbd without full-NAT
    return Json{{"from", cmd}};
  };
}

TEST(LbdSnapshot, ReadsEveryCommandOverOneConnection) {
  test::FakeTelemetry server(socket_path("all"), lbd(true));
  const LbdSnapshot s = read_snapshot(server.path(), 1000ms);
  ASSERT_TRUE(s.up) << s.error;
  EXPECT_EQ(s.stats["from"], "/lb/stats");
  EXPECT_EQ(s.drops["from"], "/lb/drops");
  EXPECT_EQ(s.ports["from"], "/lb/ports");
  EXPECT_EQ(s.backends["from"], "/lb/backends");
  EXPECT_EQ(s.workers["from"], "/lb/workers");
  EXPECT_EQ(s.pool["from"], "/lb/pool");
  EXPECT_EQ(s.services["from"], "/lb/services");
  EXPECT_EQ(s.fullnat["from"], "/lb/fullnat");
  EXPECT_GE(s.seconds, 0.0);
}

TEST(LbdSnapshot, AnLbdWithoutFullnatIsStillUpAndTheConnectionGoesOn) {
  test::FakeTelemetry server(socket_path("nofullnat"), lbd(false));
  TelemetryClient t(server.path(), 1000);
  const LbdSnapshot a = read_snapshot(t);
  EXPECT_TRUE(a.up);
  EXPECT_TRUE(a.fullnat.is_null());
  // The refused command's reply was read whole: a second snapshot on the same connection works
  // (lbctl stats --watch takes every sample over one connection).
  const LbdSnapshot b = read_snapshot(t);
  EXPECT_TRUE(b.up);
  EXPECT_EQ(b.stats["from"], "/lb/stats");
  EXPECT_GE(b.t, a.t);
}

TEST(LbdSnapshot, AReplyThatIsNotAnObjectIsAFailureNotZeros) {
  test::FakeTelemetry server(socket_path("notobject"), [](const std::string& cmd) -> Json {
    if (cmd == "/lb/pool") return Json::array({1, 2});
    return Json::object();
  });
  const LbdSnapshot s = read_snapshot(server.path(), 1000ms);
  EXPECT_FALSE(s.up);
  EXPECT_NE(s.error.find("not an object"), std::string::npos) << s.error;
  EXPECT_TRUE(s.stats.is_null());  // nothing half-read is kept
}

// lbd pages its listings (one reply holds ~60 of its 4,096 backends): a snapshot has them all,
// merged, without the pages' "page" entries.
TEST(LbdSnapshot, ListingsAreReadPageByPage) {
  std::map<uint64_t, Json> backends, services, workers;
  for (uint64_t id = 0; id < 300; ++id) {
    backends[id * 3] = {{"id", id * 3},
                        {"service", "s" + std::to_string(id % 7)},
                        {"address", "10.0.0.1:" + std::to_string(1000 + id)},
                        {"flows_active", 1}};
  }
  for (uint64_t id = 0; id < 1024; ++id)
    services[id] = {{"id", id}, {"name", "svc" + std::to_string(id)}};
  for (uint64_t w = 0; w < 64; ++w) workers[w] = {{"worker", w}, {"flow_capacity", 10}};
  test::FakeTelemetry server(socket_path("paged"), [&](const std::string& cmd) -> Json {
    if (cmd.starts_with("/lb/backends")) return test::lbd_page(cmd, "backend_", backends, 50);
    if (cmd.starts_with("/lb/services")) return test::lbd_page(cmd, "service_", services, 100);
    if (cmd.starts_with("/lb/workers")) return test::lbd_page(cmd, "worker_", workers, 40);
    return Json::object();
  });
  const LbdSnapshot s = read_snapshot(server.path(), 1000ms);
  ASSERT_TRUE(s.up) << s.error;
  ASSERT_EQ(s.backends.size(), 300u);
  EXPECT_FALSE(s.backends.contains("page"));
  EXPECT_EQ(s.backends["backend_897"]["address"], "10.0.0.1:1299");
  EXPECT_EQ(s.services.size(), 1024u);
  EXPECT_FALSE(s.services.contains("page"));
  EXPECT_EQ(s.workers.size(), 64u);
  EXPECT_EQ(s.workers["worker_63"]["worker"], 63);
}

// The merge of a listing's pages (pure): complete only when the last page says so; an lbd from
// before paging gives what it gave, not complete; a page that does not advance is an error.
TEST(PageMerger, CompleteOnlyAtTheLastPage) {
  PageMerger m;
  EXPECT_EQ(m.add({{"backend_1", {{"id", 1}}},
                   {"backend_5", {{"id", 5}}},
                   {"page", {{"from", 0}, {"listed", 2}, {"total", 3}, {"next", 9}}}}),
            std::optional<uint64_t>(9));
  EXPECT_FALSE(m.listing().complete);
  EXPECT_EQ(
      m.add({{"backend_9", {{"id", 9}}}, {"page", {{"from", 9}, {"listed", 1}, {"total", 3}}}}),
      std::nullopt);
  const Listing l = m.take();
  EXPECT_TRUE(l.complete);
  EXPECT_EQ(l.total, 3u);
  EXPECT_EQ(l.entries.size(), 3u);
  EXPECT_FALSE(l.entries.contains("page"));

  PageMerger old;  // an lbd from before paging: one reply, perhaps cut short
  EXPECT_EQ(old.add({{"backend_0", {{"id", 0}}}}), std::nullopt);
  EXPECT_FALSE(old.listing().complete);
  EXPECT_EQ(old.listing().entries.size(), 1u);

  PageMerger stuck;
  EXPECT_THROW(stuck.add({{"page", {{"from", 4}, {"total", 9}, {"next", 4}}}}), Error);
  PageMerger other;  // the page that came is not the one asked for
  other.add({{"page", {{"from", 4}, {"total", 9}, {"next", 8}}}});
  EXPECT_THROW(other.add({{"page", {{"from", 2}, {"total", 9}, {"next", 9}}}}), Error);
  PageMerger bad;
  EXPECT_THROW(bad.add(Json::array()), Error);
  EXPECT_THROW(bad.add({{"page", {{"total", 9}}}}), Error);
  EXPECT_THROW(bad.add({{"page", {{"from", 0}, {"total", -1}}}}), Error);
}

// query_all asks for every page over one connection, the first without a parameter.
TEST(PageMerger, QueryAllAsksForEveryPage) {
  std::map<uint64_t, Json> backends;
  for (uint64_t id = 0; id < 4096; id += 2) backends[id] = {{"id", id}};
  test::FakeTelemetry server(socket_path("queryall"), [&](const std::string& cmd) -> Json {
    return test::lbd_page(cmd, "backend_", backends, 60);
  });
  TelemetryClient t(server.path(), 1000);
  const Listing l = t.query_all("/lb/backends");
  EXPECT_TRUE(l.complete);
  EXPECT_EQ(l.total, 2048u);
  EXPECT_EQ(l.entries.size(), 2048u);
  EXPECT_EQ(server.commands(), 35);  // ceil(2048 / 60)
  EXPECT_EQ(l.entries["backend_4094"]["id"], 4094);
  // A refused page is an error, not a shorter listing.
  test::FakeTelemetry refusing(socket_path("refusing"), [&](const std::string& cmd) -> Json {
    if (cmd != "/lb/backends") return nullptr;
    return test::lbd_page(cmd, "backend_", backends, 60);
  });
  TelemetryClient r(refusing.path(), 1000);
  EXPECT_THROW(r.query_all("/lb/backends"), Error);
}

TEST(LbdSnapshot, NoLbdIsDownWithTheReason) {
  const LbdSnapshot s = read_snapshot(socket_path("nobody"), 200ms);
  EXPECT_FALSE(s.up);
  EXPECT_NE(s.error.find("cannot connect"), std::string::npos) << s.error;
  EXPECT_NE(s.error.find(socket_path("nobody")), std::string::npos) << s.error;
}

}  // namespace
}  // namespace lb::ctl
