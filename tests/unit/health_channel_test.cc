// lb-healthd's side of the channel: its loop in-process against a real Segment whose
// fields a hostile or broken neighbour corrupted (refused with a log line, never a crash or a
// wrong decision); the instance lock (one lb-healthd per instance); the health file a restarted
// lb-healthd starts from.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rte_ring.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "channel.h"
#include "daemon.h"
#include "log.h"
#include "runtime_dir.h"

namespace lb::health {
namespace {

constexpr uid_t kOtherUid = 65534;  // nobody: a test-only uid that is not ours

std::string config_text(const std::string& instance = "") {
  // Slow checks of a port nobody listens on: only what the test does changes the state.
  return (instance.empty() ? "" : "instance = \"" + instance + "\";\n") +
         "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
         "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
         "services = ( { name = \"web\"; vip = \"10.0.0.100\"; port = 80;\n"
         "  health = { interval_ms = 60000; timeout_ms = 50; passive = { syn_rst = 3; }; };\n"
         "  backends = ( { address = \"127.0.0.1\"; port = 1; },\n"
         "               { address = \"127.0.0.2\"; port = 1; } ); } );\n";
}

class HealthChannelTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    set_log_level(LogLevel::kError);
  }
  static void TearDownTestSuite() { curl_global_cleanup(); }

  void SetUp() override {
    instance_ = "hc-" + std::to_string(getpid()) + "-" +
                testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = std::filesystem::path(testing::TempDir()) / ("lb_rt_" + instance_);
    std::filesystem::remove_all(dir_);
    segment_.emplace(shm::Segment::create(shm::segment_name(instance_)));
    buf_.resize(64);
  }
  void TearDown() override {
    d_.reset();
    std::filesystem::remove_all(dir_);
  }

  Options options(bool runtime_dir) const {
    Options o;
    o.instance = instance_;
    o.seed = 1;
    if (runtime_dir) o.runtime_dir = dir_.string();
    return o;
  }
  void start(bool runtime_dir = false) {
    d_ = std::make_unique<Daemon>(cfg::parse_config(config_text(), "t.cfg"), options(runtime_dir));
  }

  // lbd's part: takes updates off the ring and acknowledges them.
  void lbd_tick() {
    const unsigned n = segment_->receive(buf_.data(), 64);
    shm::Header& h = segment_->header();
    for (unsigned i = 0; i < n; ++i) {
      latest_[buf_[i].name] = buf_[i];
      h.received_generation.store(buf_[i].generation);
    }
    h.applied_generation.store(h.received_generation.load());
  }
  bool turn_until(const std::function<bool()>& pred, Millis limit = Millis(3000)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      d_->turn(-1, Millis(2));
      lbd_tick();
      if (pred()) return true;
    }
    return false;
  }
  void turn_for(Millis t) {
    turn_until([] { return false; }, t);
  }

  rte_ring* update_ring() {
    auto* base = reinterpret_cast<uint8_t*>(&segment_->header());
    return reinterpret_cast<rte_ring*>(base + segment_->header().update_ring_offset);
  }
  rte_ring* event_ring() {
    auto* base = reinterpret_cast<uint8_t*>(&segment_->header());
    return reinterpret_cast<rte_ring*>(base + segment_->header().event_ring_offset);
  }
  shm::BackendState state_in_lbd(size_t backend) {
    return static_cast<shm::BackendState>(latest_["web"].backends[backend].state);
  }
  Health health(size_t backend) const {
    return d_->snapshot().services[0].backends[backend].health;
  }
  void set_weight(int weight) {
    ASSERT_TRUE(d_->change("weight", [&](Json& services) {
                    services[0]["backends"][0]["weight"] = weight;
                    return Status();
                  }).ok());
  }

  static shm::Event event(uint32_t count, uint32_t ip = 0x7f000001, const char* service = "web") {
    shm::Event e{};
    e.type = static_cast<uint32_t>(shm::EventType::kSynRst);
    e.count = count;
    e.ip = ip;
    e.port = 1;
    std::snprintf(e.service, sizeof e.service, "%s", service);
    return e;
  }

  std::string instance_;
  std::filesystem::path dir_;
  std::optional<shm::Segment> segment_;
  std::unique_ptr<Daemon> d_;
  std::vector<shm::ServiceUpdate> buf_;
  std::map<std::string, shm::ServiceUpdate> latest_;
};

// -- A corrupted segment ------------------------------------------------------------------------

TEST_F(HealthChannelTest, CorruptedUpdateRingIsRefusedThenAValidSegmentIsUsedAgain) {
  start();
  ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  const uint32_t mask = update_ring()->mask;
  update_ring()->mask = 0xffffffffu;  // enqueueing with it would write far past the ring
  set_weight(5);
  turn_for(Millis(50));
  DaemonStatus st = d_->snapshot();
  EXPECT_FALSE(st.attached);
  EXPECT_GE(st.channel_faults, 1u);
  EXPECT_EQ(latest_["web"].backends[0].weight, 1);
  // Attach attempts (every 100 ms) refuse it while it stays corrupted.
  turn_for(Millis(250));
  EXPECT_FALSE(d_->snapshot().attached);
  // Repaired (as a new lbd would make it): attached again, and the change arrives.
  update_ring()->mask = mask;
  ASSERT_TRUE(turn_until([&] { return latest_["web"].backends[0].weight == 5; }));
  EXPECT_TRUE(d_->snapshot().attached);
}

TEST_F(HealthChannelTest, CorruptedEventRingIsRefused) {
  start();
  ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  ASSERT_TRUE(segment_->post(event(100)));
  event_ring()->prod.tail = 0x7fffffffu;  // would claim two billion events
  turn_for(Millis(50));
  EXPECT_FALSE(d_->snapshot().attached);
  EXPECT_GE(d_->snapshot().channel_faults, 1u);
  EXPECT_EQ(health(0), Health::kUp);  // the event was never believed
}

// lbd's counters in the header are judged against what was sent: a header that claims lbd
// applied more than lb-healthd ever sent cannot tell a waiting `lbctl --wait` "applied".
TEST_F(HealthChannelTest, ImpossibleLbdCountersAreRefusedNotBelieved) {
  start();
  ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  const uint64_t sent = d_->snapshot().generation;
  set_weight(7);
  std::optional<AckResult> ack;
  d_->when_applied(sent, Millis(400), [&](const AckResult& a) { ack = a; });
  // lbd does not read; the header is overwritten with a generation never sent.
  segment_->header().applied_generation.store(sent + 1000);
  const auto deadline = Clock::now() + Millis(1000);
  while (!ack && Clock::now() < deadline) d_->turn(-1, Millis(2));
  ASSERT_TRUE(ack.has_value());
  EXPECT_FALSE(ack->ok) << "a forged applied_generation was believed";
  EXPECT_GE(d_->snapshot().channel_faults, 1u);
}

// Events that name no backend we run, or carry impossible counts or types, never take a
// backend down; a real one does.
TEST_F(HealthChannelTest, InjectedEventsAreValidatedBeforeAnyDecision) {
  start();
  ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  std::vector<shm::Event> forged = {
      event(100, 0x7f000009),            // a backend the service does not have
      event(100, 0x7f000001, "nosuch"),  // a service we do not run
      event(shm::kMaxEventCount + 1),    // more SYNs than 100 GbE carries in 100 ms
      event(0),                          // nothing happened
  };
  forged.push_back(event(100));
  forged.back().type = 42;
  forged.push_back(event(100));
  std::memset(forged.back().service, 'w', sizeof forged.back().service);  // unterminated
  for (const shm::Event& e : forged) ASSERT_TRUE(segment_->post(e));
  turn_for(Millis(100));
  EXPECT_EQ(health(0), Health::kUp);
  EXPECT_EQ(health(1), Health::kUp);
  EXPECT_TRUE(d_->snapshot().attached);  // bad messages are dropped, the ring is fine
  EXPECT_EQ(d_->snapshot().channel_faults, 4u);
  // A well-formed event over the threshold: DOWN at once, and lbd is told.
  ASSERT_TRUE(segment_->post(event(3)));
  ASSERT_TRUE(turn_until([&] { return state_in_lbd(0) == shm::BackendState::kDraining; }));
  EXPECT_EQ(health(0), Health::kDown);
}

// Events lbd queued while no lb-healthd read them (stopped for minutes, say) carry no time:
// they are dropped at attach, not counted in one passive window as if they had just happened.
TEST_F(HealthChannelTest, EventsQueuedBeforeAttachAreDropped) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(segment_->post(event(1)));  // threshold 3
  start();
  ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  turn_for(Millis(50));
  EXPECT_EQ(health(0), Health::kUp);
  EXPECT_EQ(state_in_lbd(0), shm::BackendState::kActive);
  EXPECT_EQ(d_->snapshot().channel_faults, 0u);
  // Those that arrive once attached count.
  ASSERT_TRUE(segment_->post(event(3)));
  ASSERT_TRUE(turn_until([&] { return health(0) == Health::kDown; }));
}

// -- The instance lock ----------------------------------------------------------------------------

TEST_F(HealthChannelTest, OneLbHealthdPerInstance) {
  prepare_runtime_dir(dir_.string());
  std::optional<InstanceLock> first(InstanceLock::acquire(dir_.string(), "edge"));
  try {
    InstanceLock::acquire(dir_.string(), "edge");
    FAIL() << "a second lock on the same instance was granted";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "another lb-healthd (pid " + std::to_string(getpid()) +
                                         ") is running instance edge (it holds " + dir_.string() +
                                         "/edge.lock); stop it first");
  }
  InstanceLock other = InstanceLock::acquire(dir_.string(), "edge2");  // another instance
  first.reset();                                                       // the first one exits
  InstanceLock again = InstanceLock::acquire(dir_.string(), "edge");
  EXPECT_EQ(again.path(), dir_.string() + "/edge.lock");

  // The daemon takes it itself: a second daemon for the instance does not start.
  start(true);
  EXPECT_THROW(std::make_unique<Daemon>(cfg::parse_config(config_text(), "t.cfg"), options(true)),
               std::runtime_error);
}

TEST_F(HealthChannelTest, RuntimeDirectoryMustBeWritableByUsAlone) {
  std::filesystem::create_directories(dir_);
  chmod(dir_.c_str(), 0777);
  EXPECT_THROW(prepare_runtime_dir(dir_.string()), std::runtime_error);
  chmod(dir_.c_str(), 0700);
  EXPECT_NO_THROW(prepare_runtime_dir(dir_.string()));
  const std::string link = dir_.string() + "-link";
  std::filesystem::remove(link);
  std::filesystem::create_directory_symlink(dir_, link);
  EXPECT_THROW(prepare_runtime_dir(link), std::runtime_error);
  std::filesystem::remove(link);
  // A lock file that is not ours (planted by another user) is refused, not used.
  if (geteuid() != 0) GTEST_SKIP() << "a file of another user needs root (chown)";
  const std::string lock = lock_file_path(dir_.string(), "x");
  std::ofstream(lock) << "1\n";
  ASSERT_EQ(chown(lock.c_str(), kOtherUid, static_cast<gid_t>(-1)), 0);
  try {
    InstanceLock::acquire(dir_.string(), "x");
    FAIL() << "a lock file of another user was used";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("owned by uid 65534"), std::string::npos) << e.what();
  }
  ASSERT_EQ(chown(dir_.c_str(), kOtherUid, static_cast<gid_t>(-1)), 0);
  EXPECT_THROW(prepare_runtime_dir(dir_.string()), std::runtime_error);
}

// -- The health file --------------------------------------------------------------------------

int64_t now_ms() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST_F(HealthChannelTest, HealthFileRoundTripAndEveryFallback) {
  prepare_runtime_dir(dir_.string());
  const std::string path = health_file_path(dir_.string(), "edge");
  const int64_t now = now_ms();
  HealthMemory m;
  m[{"web", 0x0a14000b, 8080}] = {Health::kDown, now - 5000};
  m[{"web", 0x0a14000c, 8080}] = {Health::kUp, now - 100};
  auto put = [&](const std::string& text, mode_t mode = 0600) {
    std::filesystem::remove(path);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    fchmod(fd, mode);
    close(fd);
  };
  put(format_health_memory("edge", m, now));
  std::string why;
  EXPECT_EQ(read_health_memory(path, "edge", now + 1000, why), m) << why;

  const std::vector<std::pair<std::string, std::string>> refused = {
      {format_health_memory("other", m, now), "written for instance other"},
      {format_health_memory("edge", m, now - 6 * 60 * 1000), "too old to trust"},
      {format_health_memory("edge", m, now + 10 * 60 * 1000), "in the future"},
      {"{not json", "parse"},
      {R"({"format": "lb-healthd health 1", "instance": "edge", "written_unix_ms": )" +
           std::to_string(now) +
           R"(, "backends": [{"service": "web", "address": "10.20.0.11", "port": 0,
              "health": "down", "since_unix_ms": 1}]})",
       "malformed backend entry"},
      {R"({"format": "lb-healthd health 1", "instance": "edge", "written_unix_ms": )" +
           std::to_string(now) +
           R"(, "backends": [{"service": "web", "address": "10.20.0.11", "port": 80,
              "health": "sideways", "since_unix_ms": 1}]})",
       "malformed backend entry"},
  };
  for (const auto& [text, expect] : refused) {
    SCOPED_TRACE(expect);
    put(text);
    why.clear();
    EXPECT_TRUE(read_health_memory(path, "edge", now, why).empty());
    EXPECT_NE(why.find(expect), std::string::npos) << why;
  }
  put(format_health_memory("edge", m, now), 0666);  // others could have rewritten it
  EXPECT_TRUE(read_health_memory(path, "edge", now, why).empty());
  EXPECT_NE(why.find("writable by others"), std::string::npos) << why;
  std::filesystem::remove(path);
  EXPECT_TRUE(read_health_memory(path, "edge", now, why).empty());
  EXPECT_NE(why.find("No such file"), std::string::npos) << why;
}

// The daemon keeps the file up to date and a new one starts from it: a backend known DOWN is
// sent to lbd as draining from the very first update; one the file does not know starts from
// initial_state.
TEST_F(HealthChannelTest, RestartStartsFromTheLastDecidedHealth) {
  start(true);
  ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  ASSERT_TRUE(segment_->post(event(3)));  // 127.0.0.1:1 goes DOWN
  ASSERT_TRUE(turn_until([&] { return state_in_lbd(0) == shm::BackendState::kDraining; }));
  std::string why;
  const HealthMemory m =
      read_health_memory(health_file_path(dir_.string(), instance_), instance_, now_ms(), why);
  ASSERT_EQ(m.size(), 2u) << why;
  EXPECT_EQ(m.at(BackendKey{"web", 0x7f000001, 1}).health, Health::kDown);
  EXPECT_EQ(m.at(BackendKey{"web", 0x7f000002, 1}).health, Health::kUp);

  d_.reset();  // lb-healthd stops (the lock goes with it)
  latest_.clear();
  start(true);
  EXPECT_EQ(health(0), Health::kDown);
  EXPECT_EQ(health(1), Health::kUp);
  ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  EXPECT_EQ(state_in_lbd(0), shm::BackendState::kDraining);
  EXPECT_EQ(state_in_lbd(1), shm::BackendState::kActive);

  // Without the file: initial_state (up) for everyone.
  d_.reset();
  std::filesystem::remove(health_file_path(dir_.string(), instance_));
  start(true);
  EXPECT_EQ(health(0), Health::kUp);
}

// -- lbd's heartbeat -----------------------------------------------------------------------------

// lbd killed (-9 included) leaves its segment behind, its heartbeat frozen at its last value. An
// lb-healthd that attaches to it then (restarted meanwhile, or attaching again after refusing
// it) must not count lbd alive because it reads a heartbeat for the first time: only one that
// moves is lbd's.
TEST_F(HealthChannelTest, AFrozenHeartbeatIsNotALiveLbd) {
  segment_->header().lbd_heartbeat_ms.store(123456);  // the dead lbd's last beat
  LbdLink link(Millis(10), [] { return size_t{0}; });
  link.set_segment(shm::segment_name(instance_));
  const TimePoint t0 = Clock::now();
  link.tick(t0);
  ASSERT_TRUE(link.attached());
  link.heartbeat(t0);
  EXPECT_FALSE(link.lbd_heartbeat_age_ms(t0 + Millis(1)).has_value());
  link.heartbeat(t0 + Millis(500));
  EXPECT_FALSE(link.lbd_heartbeat_age_ms(t0 + Millis(500)).has_value());
  // A live lbd's control loop moves it: alive from then on, aged from that move.
  segment_->header().lbd_heartbeat_ms.store(123457);
  link.heartbeat(t0 + Millis(600));
  EXPECT_EQ(link.lbd_heartbeat_age_ms(t0 + Millis(650)), 50);
  link.heartbeat(t0 + Millis(700));  // not moved since: it ages
  EXPECT_EQ(link.lbd_heartbeat_age_ms(t0 + Millis(700)), 100);
}

// A bgp group (one neighbor) whose BIRD files are `bird`.conf and `bird`.ctl, with `extra`.
std::string bgp_group(const std::string& bird, const std::string& extra = "") {
  return "bgp = { local_as = 65001; router_id = \"10.0.0.1\"; next_hop = \"10.0.0.1\"; "
         "neighbors = ( { address = \"10.0.0.254\"; as = 65000; } ); " +
         extra + " bird_config = \"" + bird + ".conf\"; bird_socket = \"" + bird + ".ctl\"; };\n";
}

// The same through the daemon: with a bgp group, a restarted lb-healthd facing a dead lbd's
// segment announces nothing, not even for bgp.lbd_timeout_ms.
TEST_F(HealthChannelTest, RestartedHealthdDoesNotAnnounceForADeadLbd) {
  const std::string bird =
      (std::filesystem::path(testing::TempDir()) / (instance_ + "-bird")).string();
  const std::string text = config_text() + bgp_group(bird, "lbd_timeout_ms = 1000;");
  segment_->header().lbd_heartbeat_ms.store(123456);  // lbd died; nobody moves it any more
  d_ = std::make_unique<Daemon>(cfg::parse_config(text, "t.cfg"), options(false));
  const auto until = Clock::now() + Millis(400);
  bool attached = false;
  while (Clock::now() < until) {
    d_->turn(-1, Millis(5));
    const DaemonStatus st = d_->snapshot();
    attached = attached || st.attached;
    ASSERT_EQ(st.bgp.vips.size(), 1u);
    EXPECT_FALSE(st.bgp.vips[0].announce) << st.bgp.vips[0].why;
    if (st.bgp.vips[0].announce) break;
  }
  EXPECT_TRUE(attached);
  d_.reset();
  std::filesystem::remove(bird + ".conf");
}

// announce_when = "serving": a backend with weight 0 is up but takes no new connections
// (docs/configuration.md: "draining"): a VIP whose backends all have weight 0 has no serving
// backend, and is withdrawn; one with weight again is announced.
TEST_F(HealthChannelTest, AVipWhoseBackendsAllHaveWeightZeroIsNotAnnounced) {
  const std::string bird =
      (std::filesystem::path(testing::TempDir()) / (instance_ + "-bird")).string();
  const std::string text = config_text() + bgp_group(bird);
  d_ = std::make_unique<Daemon>(cfg::parse_config(text, "t.cfg"), options(false));
  uint64_t beat = 1;
  const auto announced = [&] {
    segment_->header().lbd_heartbeat_ms.store(++beat);  // lbd alive
    const DaemonStatus st = d_->snapshot();
    return st.bgp.vips.size() == 1 && st.bgp.vips[0].announce;
  };
  ASSERT_TRUE(turn_until(announced));
  auto weigh = [&](int w) {
    ASSERT_TRUE(d_->change("weights", [&](Json& services) {
                    for (Json& b : services[0]["backends"]) b["weight"] = w;
                    return Status();
                  }).ok());
  };
  weigh(0);
  ASSERT_TRUE(turn_until([&] { return latest_["web"].backends[1].weight == 0; }));
  EXPECT_TRUE(turn_until([&] { return !announced(); }, Millis(500)))
      << "announced with every backend at weight 0: " << d_->snapshot().bgp.vips[0].why;
  EXPECT_EQ(d_->snapshot().bgp.vips[0].why, "no serving backend");
  weigh(1);
  EXPECT_TRUE(turn_until(announced));
  d_.reset();
  std::filesystem::remove(bird + ".conf");
}

}  // namespace
}  // namespace lb::health
