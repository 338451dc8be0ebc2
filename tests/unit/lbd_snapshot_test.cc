// The one reader of lbd's telemetry counters (telemetry/lbd_snapshot.h) that lbctl stats/top and
// lb-healthd's /metrics share, against a fake lbd speaking DPDK's telemetry protocol.

#include "lbd_snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
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

TEST(LbdSnapshot, NoLbdIsDownWithTheReason) {
  const LbdSnapshot s = read_snapshot(socket_path("nobody"), 200ms);
  EXPECT_FALSE(s.up);
  EXPECT_NE(s.error.find("cannot connect"), std::string::npos) << s.error;
  EXPECT_NE(s.error.find(socket_path("nobody")), std::string::npos) << s.error;
}

}  // namespace
}  // namespace lb::ctl
