// lb-healthd's BGP announcer (healthd/announcer.h): the announce/withdraw decision, the BIRD
// configuration it writes (checked by BIRD's own parser when bird is installed), and the talk
// over BIRD's control socket, against a fake BIRD on a Unix socket.

#include "announcer.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace lb::health {
namespace {

constexpr uint32_t kVip1 = 0x0a640064;  // 10.100.0.100
constexpr uint32_t kVip2 = 0x0a640065;  // 10.100.0.101

cfg::Config fleet_config(const std::string& extra = "") {
  return cfg::parse_config(R"(dataplane: {
  workers = 1;
  ports = ( { name = "front"; device = "net_null0"; ip = "10.31.0.2/24"; gateway = "10.31.0.1"; },
            { name = "back"; device = "net_null1"; ip = "10.20.0.21/24"; } );
};
services = (
  { name = "web"; vip = "10.100.0.100"; port = 80;
    backends = ( { address = "10.20.0.11"; port = 8080; } ); },
  { name = "tls"; vip = "10.100.0.100"; port = 443; backends = (); },
  { name = "api"; vip = "10.100.0.101"; port = 80; backends = (); }
);
bgp = { local_as = 65001; router_id = "10.31.0.3"; next_hop = "10.31.0.2";
  neighbors = ( { address = "10.31.0.1"; as = 65000; }, { address = "10.31.0.9"; as = 65009; } );
)" + extra + "};\n",
                           "fleet.cfg");
}

LbdLiveness alive() {
  return LbdLiveness{true, 5, 0};
}

TEST(Decide, AnnouncesServingVipsOfALiveLbd) {
  const cfg::Config c = fleet_config();
  const auto d =
      decide(c.bgp, NodeState::kReady, alive(), {{kVip1, true}, {kVip1, false}, {kVip2, false}});
  ASSERT_EQ(d.size(), 2u);  // one per VIP, ascending
  EXPECT_EQ(d[0].vip, kVip1);
  EXPECT_TRUE(d[0].announce) << d[0].why;  // one of its two services serves
  EXPECT_EQ(d[1].vip, kVip2);
  EXPECT_FALSE(d[1].announce);
  EXPECT_EQ(d[1].why, "no serving backend");
}

TEST(Decide, AliveAnnouncesWhateverTheBackends) {
  const cfg::Config c = fleet_config("announce_when = \"alive\";");
  const auto d = decide(c.bgp, NodeState::kReady, alive(), {{kVip2, false}});
  ASSERT_EQ(d.size(), 1u);
  EXPECT_TRUE(d[0].announce);
}

TEST(Decide, WithdrawsEverythingWhenLbdIsNotAlive) {
  const cfg::Config c = fleet_config("lbd_timeout_ms = 500;");
  const std::vector<ServiceServing> serving = {{kVip1, true}, {kVip2, true}};
  struct Case {
    LbdLiveness lbd;
    const char* why;
  };
  for (const Case& k :
       {Case{{false, 5, 0}, "lbd is not attached"},
        Case{{true, -1, 0}, "lbd's heartbeat has not moved since lb-healthd attached"},
        Case{{true, 500, 0}, "lbd's heartbeat stopped 500 ms ago"},
        Case{{true, 5, 500}, "lbd has not applied the newest generation for 500 ms"}}) {
    for (const VipDecision& v : decide(c.bgp, NodeState::kReady, k.lbd, serving)) {
      EXPECT_FALSE(v.announce) << k.why;
      EXPECT_EQ(v.why, k.why);
    }
  }
  // Just inside the bound both still count as alive.
  for (const VipDecision& v : decide(c.bgp, NodeState::kReady, {true, 499, 499}, serving))
    EXPECT_TRUE(v.announce) << v.why;
}

TEST(Decide, DrainingWithdrawsEveryVip) {
  const cfg::Config c = fleet_config("announce_when = \"alive\";");
  for (const VipDecision& v :
       decide(c.bgp, NodeState::kDraining, alive(), {{kVip1, true}, {kVip2, true}})) {
    EXPECT_FALSE(v.announce);
    EXPECT_EQ(v.why, "node draining");
  }
  EXPECT_STREQ(to_string(NodeState::kDraining), "draining");
}

TEST(BirdConfig, HasTheRoutesSessionsAndAttributes) {
  const cfg::Config c = fleet_config("hold_time = 6; med = 20; communities = [ \"65000:100\" ];");
  const std::string text = render_bird_config(c, "n1", {kVip1, kVip2});
  for (const char* want :
       {"router id 10.31.0.3;", "route 10.100.0.100/32 via 10.31.0.2;",
        "route 10.100.0.101/32 via 10.31.0.2;", "bgp_community.add((65000,100));", "bgp_med = 20;",
        "protocol bgp n_10_31_0_1 {", "neighbor 10.31.0.1 as 65000;",
        "neighbor 10.31.0.9 as 65009;", "local as 65001;", "hold time 6;", "keepalive time 2;",
        "export filter lbd_export;", "import none;"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  }
  const std::string none = render_bird_config(c, "n1", {});
  EXPECT_EQ(none.find("route "), std::string::npos) << none;
  EXPECT_EQ(render_bird_config(fleet_config(), "n1", {}).find("bgp_med"), std::string::npos);
}

// BIRD's own parser (bird -p) reads what we write, with and without routes.
TEST(BirdConfig, BirdParsesIt) {
  if (std::system("command -v bird >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "bird (Debian bird2) is not installed";
  const cfg::Config c = fleet_config("med = 5; communities = [ \"65000:1\", \"1:2\" ];");
  const auto dir = std::filesystem::path(testing::TempDir()) / "announce_bird_parse";
  std::filesystem::create_directories(dir);
  for (const std::vector<uint32_t>& vips : {std::vector<uint32_t>{}, {kVip1, kVip2}}) {
    const auto file = dir / "bird.conf";
    std::ofstream(file) << render_bird_config(c, "n1", vips);
    const std::string cmd = "bird -p -c " + file.string() + " 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << render_bird_config(c, "n1", vips);
  }
}

// A fake BIRD: greets, reads one command, answers with `reply`, and counts the requests.
class FakeBird {
 public:
  FakeBird(std::string path, std::string reply) : path_(std::move(path)), reply_(std::move(reply)) {
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) ::close(c);
          return;
        }
        const std::string hello = "0001 BIRD 2.0.12 ready.\n";
        (void)!::write(c, hello.data(), hello.size());
        char buf[256];
        const ssize_t n = ::read(c, buf, sizeof buf);
        if (n > 0) {
          last_ = std::string(buf, static_cast<size_t>(n));
          ++requests_;
          (void)!::write(c, reply_.data(), reply_.size());
        }
        ::close(c);
      }
    });
  }
  ~FakeBird() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  int requests() const { return requests_; }
  std::string last() const { return last_; }

 private:
  std::string path_, reply_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::string last_;
  std::thread thread_;
};

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(testing::TempDir()) / (name + std::to_string(::getpid()))).string();
}

TEST(BirdControl, ConfigureAnswers) {
  const std::string sock = temp_path("bird_ok.");
  {
    FakeBird bird(sock, "0002-Reading configuration from /x\n0003 Reconfigured\n");
    EXPECT_EQ(bird_configure(sock, Millis(1000)), std::nullopt);
    EXPECT_EQ(bird.last(), "configure\n");
  }
  {
    FakeBird bird(sock, "0002-Reading configuration from /x\n8002 /x:3:5 syntax error\n");
    const auto e = bird_configure(sock, Millis(1000));
    ASSERT_TRUE(e.has_value());
    EXPECT_NE(e->find("BIRD refused: Reading configuration from /x / /x:3:5 syntax error"),
              std::string::npos)
        << *e;
  }
  const auto none = bird_configure(sock, Millis(200));
  ASSERT_TRUE(none.has_value());
  EXPECT_NE(none->find("cannot reach BIRD at " + sock), std::string::npos) << *none;
}

// Runs the exchange in flight to its end, as the daemon's loop does (waiting on its socket),
// with the loop's clock at `now`.
void settle(Announcer& a, TimePoint now) {
  for (int i = 0; i < 1000 && a.busy(); ++i) {
    pollfd p{a.fd(), a.events(), 0};
    ::poll(&p, 1, 10);
    a.advance(now);
  }
  ASSERT_FALSE(a.busy());
}

TEST(AnnouncerTest, WritesOnChangeAndRetriesUntilBirdHasIt) {
  const std::string conf = temp_path("bird_conf."), sock = temp_path("bird_ctl.");
  cfg::Config c = fleet_config("bird_config = \"" + conf + "\"; bird_socket = \"" + sock + "\";");
  Announcer a(c, "n1");
  const TimePoint t0 = Clock::now();
  // No BIRD yet: the file is written (a BIRD started later reads it), the reload retried.
  EXPECT_TRUE(a.set({kVip1}, t0, Millis(1000)));
  EXPECT_FALSE(a.in_bird());
  EXPECT_NE(a.last_error().find("cannot reach BIRD"), std::string::npos) << a.last_error();
  std::stringstream text;
  text << std::ifstream(conf).rdbuf();
  EXPECT_NE(text.str().find("route 10.100.0.100/32 via 10.31.0.2;"), std::string::npos);
  EXPECT_FALSE(a.set({kVip1}, t0 + Millis(500), Millis(1000)));  // not before the retry
  FakeBird bird(sock, "0003 Reconfigured\n");
  EXPECT_TRUE(a.set({kVip1}, t0 + Millis(1000), Millis(1000)));
  settle(a, t0 + Millis(1000));
  EXPECT_TRUE(a.in_bird());
  EXPECT_EQ(bird.requests(), 1);
  EXPECT_FALSE(a.set({kVip1}, t0 + Millis(5000)));  // nothing changed: BIRD is not bothered
  EXPECT_EQ(bird.requests(), 1);
  // A withdrawal goes at once, whatever the retry period.
  EXPECT_TRUE(a.set({}, t0 + Millis(5001)));
  settle(a, t0 + Millis(5001));
  EXPECT_TRUE(a.in_bird());
  EXPECT_EQ(bird.requests(), 2);
  EXPECT_TRUE(a.announced().empty());
  std::stringstream after;
  after << std::ifstream(conf).rdbuf();
  EXPECT_EQ(after.str().find("route "), std::string::npos) << after.str();
  EXPECT_EQ(a.reload_failures(), 1u);
  std::filesystem::remove(conf);
}

// A BIRD that is alive but does not answer (stopped, stuck): its socket accepts (the kernel's
// backlog) and nothing comes back. set() returns at once; the exchange times out after its
// second, which is counted and said; the next try is a retry period after that attempt ended
// (not after it started: that would be due at once, again and again).
TEST(AnnouncerTest, AStuckBirdNeverBlocksAndIsRetriedFromWhenTheAttemptEnded) {
  const std::string conf = temp_path("bird_conf_stuck."), sock = temp_path("bird_ctl_stuck.");
  ::unlink(sock.c_str());
  const int bird = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
  ASSERT_EQ(::bind(bird, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(bird, 16), 0);  // never accepted
  cfg::Config c = fleet_config("bird_config = \"" + conf + "\"; bird_socket = \"" + sock + "\";");
  Announcer a(c, "n1", Millis(1000));
  const TimePoint t0 = Clock::now();
  const auto before = Clock::now();
  EXPECT_TRUE(a.set({kVip1}, t0, Millis(1000)));
  EXPECT_LT(Clock::now() - before, Millis(100));
  EXPECT_TRUE(a.busy());
  EXPECT_FALSE(a.in_bird());
  EXPECT_EQ(a.waiting(t0 + Millis(300)), Millis(300));
  EXPECT_FALSE(a.set({kVip1}, t0 + Millis(500)));  // still waiting for BIRD
  EXPECT_TRUE(a.busy());
  // A change meanwhile is written at once and sent once BIRD is free.
  EXPECT_TRUE(a.set({kVip1, kVip2}, t0 + Millis(600)));
  EXPECT_EQ(a.reloads(), 1u);
  // The deadline passes: timed out, and the newer file is asked about at once.
  a.advance(t0 + Millis(1000));
  EXPECT_EQ(a.timeouts(), 1u);
  EXPECT_NE(a.last_error().find("stuck"), std::string::npos) << a.last_error();
  EXPECT_TRUE(a.busy());
  EXPECT_EQ(a.reloads(), 2u);
  a.advance(t0 + Millis(2000));
  EXPECT_EQ(a.timeouts(), 2u);
  EXPECT_FALSE(a.busy());
  // Retried `retry` after that attempt ended (t0 + 2 s), not after it started.
  EXPECT_FALSE(a.set({kVip1, kVip2}, t0 + Millis(2500), Millis(1000)));
  EXPECT_FALSE(a.busy());
  EXPECT_TRUE(a.set({kVip1, kVip2}, t0 + Millis(3000), Millis(1000)));
  EXPECT_TRUE(a.busy());
  EXPECT_EQ(a.reload_failures(), 2u);
  ::close(bird);
  ::unlink(sock.c_str());
  std::filesystem::remove(conf);
}

}  // namespace
}  // namespace lb::health
