// lb-healthd's loop in-process (healthd/daemon.h), against a real channel segment: turns driven
// by the test, reload keeping state, removals, the status snapshot, and its own config limit.

#include "daemon.h"

#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "channel.h"
#include "log.h"

namespace lb::health {
namespace {

// A loopback port nobody listens on: checks to it are refused at once.
uint16_t closed_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ADD_FAILURE() << "cannot bind a loopback port";
  }
  close(fd);
  return ntohs(a.sin_port);
}

std::string config(uint16_t port, const std::string& service_extra,
                   const std::string& backend_extra, const std::string& more_services = "") {
  return "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
         "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
         "services = (\n"
         "  { name = \"web\"; vip = \"10.0.0.100\"; port = 80; " +
         service_extra +
         "\n    health = { interval_ms = 20; timeout_ms = 20; fall = 1; rise = 1; jitter_pct = 0; "
         "};"
         "\n    backends = ( { address = \"127.0.0.1\"; port = " +
         std::to_string(port) + "; " + backend_extra + " } ); }" + more_services + "\n);\n";
}

class DaemonTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    set_log_level(LogLevel::kWarning);
  }
  static void TearDownTestSuite() { curl_global_cleanup(); }

  void SetUp() override {
    instance_ = "unit-" + std::to_string(getpid());
    segment_.emplace(shm::Segment::create(shm::segment_name(instance_)));
    updates_.resize(64);
  }

  std::unique_ptr<Daemon> make(const std::string& text) {
    Options o;
    o.config_path = "unused.cfg";
    o.instance = instance_;
    o.seed = 1;
    return std::make_unique<Daemon>(cfg::parse_config(text, "test.cfg"), o);
  }

  // Turns the loop and reads the ring until `pred` holds (bounded).
  bool run_until(Daemon& d, const std::function<bool()>& pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      d.turn(-1, Millis(5));
      const unsigned n = segment_->receive(updates_.data(), 64);
      for (unsigned i = 0; i < n; ++i) {
        const shm::ServiceUpdate& u = updates_[i];
        latest_[u.name] = u;
        ++received_;
      }
      if (pred()) return true;
    }
    return false;
  }

  std::optional<shm::BackendState> state(const std::string& service) const {
    const auto it = latest_.find(service);
    if (it == latest_.end() || it->second.backend_count == 0) return std::nullopt;
    return static_cast<shm::BackendState>(it->second.backends[0].state);
  }

  std::string instance_;
  std::optional<shm::Segment> segment_;
  std::vector<shm::ServiceUpdate> updates_;
  std::map<std::string, shm::ServiceUpdate> latest_;
  size_t received_ = 0;
};

// An HTTP backend on 127.0.0.1 (any port) answering 200 "ok" to every request while it lives.
struct OkBackend {
  httplib::Server server;
  std::thread thread;
  int port = 0;
  OkBackend() {
    server.Get(".*", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    port = server.bind_to_any_port("127.0.0.1");
    if (port <= 0) return;
    thread = std::thread([this] { server.listen_after_bind(); });
    while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~OkBackend() {
    server.stop();
    if (thread.joinable()) thread.join();
  }
};

TEST_F(DaemonTest, ReloadKeepsHealthAndAppliesAdminState) {
  const uint16_t port = closed_port();
  auto d = make(config(port, "", ""));
  EXPECT_EQ(d->segment(), "/lbd-" + instance_);
  ASSERT_TRUE(run_until(*d, [&] { return state("web") == shm::BackendState::kDraining; }));
  DaemonStatus st = d->snapshot();
  EXPECT_TRUE(st.attached);
  EXPECT_EQ(st.epoch, segment_->epoch());
  ASSERT_EQ(st.services.size(), 1u);
  ASSERT_EQ(st.services[0].backends.size(), 1u);
  const BackendStatus b = st.services[0].backends[0];
  EXPECT_EQ(b.health, Health::kDown);
  EXPECT_EQ(b.live, shm::BackendState::kDraining);
  EXPECT_EQ(b.last_result, "connection refused");
  EXPECT_GE(b.checks, 1u);
  EXPECT_EQ(b.transitions, 1u);
  EXPECT_GE(st.transitions, 1u);
  EXPECT_EQ(segment_->header().healthd_pid.load(), static_cast<uint64_t>(getpid()));
  EXPECT_GT(segment_->header().healthd_heartbeat_ms.load(), 0u);

  // maint with drop: stopped; the health and the counters survive the reload.
  d->apply(cfg::parse_config(config(port, "maint = \"drop\";", "state = \"maint\";"), "test.cfg"),
           ApplyKind::kReload);
  st = d->snapshot();
  EXPECT_EQ(st.services[0].backends[0].health, Health::kDown);
  EXPECT_GE(st.services[0].backends[0].checks, b.checks);
  EXPECT_EQ(st.services[0].backends[0].transitions, 1u);
  EXPECT_EQ(st.services[0].backends[0].admin, cfg::AdminState::kMaint);
  ASSERT_TRUE(run_until(*d, [&] { return state("web") == shm::BackendState::kStopped; }));

  // A new service and then its removal.
  d->apply(cfg::parse_config(
               config(port, "", "",
                      ",\n  { name = \"api\"; vip = \"10.0.0.100\"; port = 81; backends = (); }"),
               "test.cfg"),
           ApplyKind::kReload);
  ASSERT_TRUE(run_until(*d, [&] { return latest_.count("api") == 1; }));
  EXPECT_EQ(latest_["api"].backend_count, 0u);
  d->apply(cfg::parse_config(config(port, "", ""), "test.cfg"), ApplyKind::kReload);
  ASSERT_TRUE(run_until(*d, [&] {
    return latest_.count("api") == 1 && (latest_["api"].flags & shm::kServiceRemoved) != 0;
  }));
  const std::string text = format_status(d->snapshot());
  EXPECT_NE(text.find("service web: 0/1 active"), std::string::npos) << text;
  EXPECT_NE(text.find("DOWN admin ready -> draining, last connection refused"), std::string::npos)
      << text;

  d.reset();  // a clean end says so in the header
  EXPECT_EQ(segment_->header().healthd_pid.load(), 0u);
}

TEST_F(DaemonTest, FailOpenSendsActive) {
  auto d = make(config(closed_port(), "on_all_down = \"fail_open\";", ""));
  // Up at first, then down after one refused check, then sent as active anyway.
  ASSERT_TRUE(run_until(*d, [&] { return d->snapshot().services[0].fail_open; }));
  ASSERT_TRUE(run_until(*d, [&] { return state("web") == shm::BackendState::kActive; }));
  EXPECT_EQ(d->snapshot().services[0].backends[0].health, Health::kDown);
}

// A BIRD that is alive but does not answer (SIGSTOPped, stuck): its socket accepts
// connections (the kernel's backlog) and nothing comes back. The loop must not wait for it:
// every turn stays short, and the checks in flight meanwhile are not failed by the loop's own
// delay (each of them would be a false `timeout`, and after `fall` the backend would go DOWN).
TEST_F(DaemonTest, AStuckBirdDelaysNoCheck) {
  const std::string dir = testing::TempDir() + "stuck_bird_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string sock = dir + "/bird.ctl";
  const int bird = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", sock.c_str());
  ASSERT_EQ(::bind(bird, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(bird, 64), 0);  // never accepted

  OkBackend backend;
  const int port = backend.port;
  ASSERT_GT(port, 0);

  auto d = make(
      "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
      "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
      "services = ( { name = \"web\"; vip = \"10.0.0.100\"; port = 80;\n"
      "  health = { interval_ms = 200; timeout_ms = 200; fall = 1; rise = 1; };\n"
      "  backends = ( { address = \"127.0.0.1\"; port = " +
      std::to_string(port) +
      "; } ); } );\n"
      "bgp = { local_as = 65001; router_id = \"10.0.0.3\"; next_hop = \"10.0.0.1\";\n"
      "  neighbors = ( { address = \"10.0.0.254\"; as = 65000; } );\n"
      "  bird_config = \"" +
      dir + "/bird.conf\"; bird_socket = \"" + sock + "\"; };\n");
  // 2.5 s: BIRD is asked (the file is new), does not answer within its second, is asked again.
  Millis longest{0};
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (std::chrono::steady_clock::now() < end) {
    const auto t0 = std::chrono::steady_clock::now();
    d->turn(-1, Millis(5));
    longest = std::max(longest,
                       std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - t0));
  }
  const DaemonStatus st = d->snapshot();
  const BackendStatus& b = st.services.at(0).backends.at(0);
  EXPECT_LT(longest, Millis(150));
  EXPECT_EQ(b.health, Health::kUp) << b.last_result;
  EXPECT_GE(b.checks, 8u);
  EXPECT_EQ(b.transitions, 0u) << b.last_result;
  EXPECT_EQ(b.failed_checks, 0u) << b.last_result;
  EXPECT_FALSE(st.bgp.in_bird);
  EXPECT_NE(st.bgp.last_error.find("in time"), std::string::npos) << st.bgp.last_error;
  d.reset();
  ::close(bird);
  std::filesystem::remove_all(dir);
}

// lb-healthd out of descriptors (a limit of 1024 and hundreds of hung backends holding them):
// a check that cannot open its socket is not the backend's failure. Here nothing listens on the
// backend's port, so every check that reached it would be refused and, with fall = 1, take it
// DOWN; with no descriptor left none reaches it, and it stays UP, its checks put off.
TEST_F(DaemonTest, OutOfDescriptorsFailsNoBackend) {
  auto d = make(config(closed_port(), "", ""));
  d->turn(-1, Millis(0));  // attached, the ring mapped: whatever the loop itself opens
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  const int lowest = open("/dev/null", O_RDONLY);  // the lowest free descriptor
  close(lowest);
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(lowest);  // not one more descriptor
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < end) d->turn(-1, Millis(5));
  DaemonStatus st = d->snapshot();
  setrlimit(RLIMIT_NOFILE, &old);
  const BackendStatus& b = st.services.at(0).backends.at(0);
  EXPECT_EQ(b.health, Health::kUp) << b.last_result;
  EXPECT_EQ(b.failed_checks, 0u) << b.last_result;
  EXPECT_GE(st.checks_not_started, 3u);
  // With descriptors again, its checks reach it (and are refused).
  ASSERT_TRUE(
      run_until(*d, [&] { return d->snapshot().services[0].backends[0].health == Health::kDown; }));
  EXPECT_EQ(d->snapshot().services[0].backends[0].last_result, "connection refused");
}

// A shorter interval (a reload, `lbctl service set --interval`) applies to the check already
// scheduled: a backend waiting out an old interval of a minute (or a DOWN one its hour-long
// down_interval_ms) is not left unchecked that long after the operator asked for 100 ms.
TEST_F(DaemonTest, AShorterIntervalAppliesToTheCheckAlreadyScheduled) {
  OkBackend backend;
  const int port = backend.port;
  ASSERT_GT(port, 0);
  const auto text = [&](int interval_ms) {
    return "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
           "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
           "services = ( { name = \"web\"; vip = \"10.0.0.100\"; port = 80;\n"
           "  health = { interval_ms = " +
           std::to_string(interval_ms) +
           "; timeout_ms = 100; jitter_pct = 0; };\n"
           "  backends = ( { address = \"127.0.0.1\"; port = " +
           std::to_string(port) + "; } ); } );\n";
  };
  auto d = make(text(60000));
  ASSERT_TRUE(run_until(*d, [&] { return d->snapshot().services[0].backends[0].checks == 1; }));
  EXPECT_GT(d->snapshot().services[0].backends[0].next_check_in_ms, 50000);
  d->apply(cfg::parse_config(text(100), "test.cfg"), ApplyKind::kRuntimeChange, "service set web");
  EXPECT_LE(d->snapshot().services[0].backends[0].next_check_in_ms, 100);
  ASSERT_TRUE(run_until(*d, [&] { return d->snapshot().services[0].backends[0].checks >= 3; }));
  // A longer one waits for the check already scheduled: nothing is checked sooner or later
  // than either interval says.
  d->apply(cfg::parse_config(text(60000), "test.cfg"), ApplyKind::kReload);
  const int64_t next = d->snapshot().services[0].backends[0].next_check_in_ms;
  EXPECT_LE(next, 100);
}

// The loader itself refuses what one pool update cannot carry (lb_limits.h): lbd --check,
// lb-healthd and every runtime change alike.
TEST(CheckForHealthd, AtMost256BackendsPerService) {
  std::string backends;
  for (int i = 0; i < 257; ++i) {
    backends += std::string(i ? ", " : "") + "{ address = \"10.0.1." + std::to_string(i % 250 + 1) +
                "\"; port = " + std::to_string(1000 + i) + "; }";
  }
  const std::string text =
      "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
      "ip = \"10.0.0.1/16\"; } ); };\n"
      "services = ( { name = \"big\"; vip = \"10.0.0.100\"; port = 80;\n backends = ( " +
      backends + " ); } );\n";
  try {
    cfg::parse_config(text, "big.cfg");
    ADD_FAILURE() << "257 backends accepted";
  } catch (const cfg::ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "big.cfg:3: services.[0].backends: 257 backends: at most 256 per service (what "
                 "one pool update carries)");
  }
  const size_t last = text.rfind(", {");
  const cfg::Config ok = cfg::parse_config(text.substr(0, last) + " ); } );\n", "big.cfg");
  EXPECT_EQ(ok.services[0].backends.size(), 256u);
  EXPECT_FALSE(check_for_healthd(ok).has_value());
}

TEST(CheckForHealthd, SocketOwnerAndGroupMustExist) {
  // lb-healthd gives its control socket to these accounts when it starts: one that does not
  // exist must be refused where the file is validated (--check, lbctl config check, a reload),
  // with its line, not only when the real start fails.
  const std::string base =
      "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
      "ip = \"10.0.0.1/24\"; } ); };\n"
      "services = ( { name = \"web\"; vip = \"10.0.0.100\"; port = 80; backends = (); } );\n"
      "healthd = {\n";
  const cfg::Config no_user = cfg::parse_config(
      base + "  socket_mode = \"0660\";\n  socket_owner = \"lbd-no-such-user\";\n};\n", "h.cfg");
  std::optional<std::string> problem = check_for_healthd(no_user);
  ASSERT_TRUE(problem.has_value());
  EXPECT_EQ(*problem,
            "h.cfg:5: healthd.socket_owner: no such user 'lbd-no-such-user' on this host "
            "(lb-healthd gives its control socket to it when it starts)");
  // Runtime changes do not look the accounts up again (they cannot change them).
  EXPECT_FALSE(healthd_problem(no_user, false).has_value());

  const cfg::Config no_group = cfg::parse_config(
      base + "  socket_owner = \"root\";\n  socket_group = \"lbd-no-such-group\";\n};\n", "h.cfg");
  problem = check_for_healthd(no_group);
  ASSERT_TRUE(problem.has_value());
  EXPECT_EQ(problem->rfind("h.cfg:5: healthd.socket_group: no such group 'lbd-no-such-group'", 0),
            0u)
      << *problem;

  // Accounts that exist, by name or number, pass.
  const cfg::Config ok = cfg::parse_config(
      base + "  socket_owner = \"root\";\n  socket_group = \"0\";\n};\n", "h.cfg");
  EXPECT_FALSE(check_for_healthd(ok).has_value()) << *check_for_healthd(ok);
  const cfg::Config huge =
      cfg::parse_config(base + "  socket_owner = \"4294967295\";\n};\n", "h.cfg");
  problem = check_for_healthd(huge);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("h.cfg:4: healthd.socket_owner: uid 4294967295 is out of range"),
            std::string::npos)
      << *problem;
}

}  // namespace
}  // namespace lb::health
