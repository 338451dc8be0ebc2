// lb-healthd's channel to lbd under churn: thousands of services added and
// removed at run time, then a weight change and a health change must still reach lbd at once,
// and what each change costs on the ring must not grow with that history.
//
// lb-healthd's real loop (Daemon, in-process, runtime changes through Daemon::change() as the
// control socket makes them) and a fake lbd on a real channel Segment that consumes like lbd:
// its own thread, a tick every 250 us, bursts of 16 off the ring until it is empty, each update
// applied with lbd's own dp::apply_update(), then received_ and applied_generation stored.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "channel.h"
#include "daemon.h"
#include "log.h"
#include "pool_builder.h"

namespace lb::health {
namespace {

using std::chrono::microseconds;

class FakeLbd {
 public:
  explicit FakeLbd(const std::string& name) : segment_(shm::Segment::create(name)) {
    thread_ = std::thread([this] { run(); });
  }
  ~FakeLbd() {
    stop_ = true;
    thread_.join();
  }
  uint64_t messages() const { return messages_.load(); }
  // When lbd last applied what it took off the ring.
  Clock::time_point applied_at() {
    std::lock_guard lock(mu_);
    return applied_at_;
  }
  uint64_t applied() const { return segment_.header().applied_generation.load(); }
  // The weight and state lbd applies for `service`'s first backend; nullopt when it has none.
  std::optional<std::pair<uint16_t, shm::BackendState>> first_backend(const std::string& service) {
    std::lock_guard lock(mu_);
    const auto it = state_.find(service);
    if (it == state_.end() || it->second.backends.empty()) return std::nullopt;
    return std::make_pair(it->second.backends[0].weight, it->second.backends[0].state);
  }
  size_t services() {
    std::lock_guard lock(mu_);
    return state_.size();
  }
  // The lbd thread posts it on its next tick (the event ring has one producer).
  void post(const shm::Event& e) {
    std::lock_guard lock(mu_);
    event_ = e;
  }
  // While paused, lbd reads nothing (its ring fills up).
  void pause(bool paused) { paused_ = paused; }

 private:
  void run() {
    std::vector<shm::ServiceUpdate> buf(16);  // lbd's burst (Dataplane::rx_updates_)
    shm::Header& h = segment_.header();
    while (!stop_) {
      while (!paused_) {
        const unsigned n = segment_.receive(buf.data(), 16);
        if (n == 0) break;
        std::lock_guard lock(mu_);
        for (unsigned i = 0; i < n; ++i) {
          // release pairs with lb-healthd's acquire (Daemon::read_lbd).
          h.received_generation.store(buf[i].generation, std::memory_order_release);
          if (!dp::apply_update(state_, buf[i]).empty())
            h.rejected_generation.store(buf[i].generation, std::memory_order_release);
        }
        messages_ += n;
        applied_at_ = Clock::now();
      }
      h.applied_generation.store(h.received_generation.load(std::memory_order_relaxed),
                                 std::memory_order_release);
      {
        std::lock_guard lock(mu_);
        if (event_) {
          segment_.post(*event_);
          event_.reset();
        }
      }
      std::this_thread::sleep_for(microseconds(250));  // lbd's control tick
    }
  }

  shm::Segment segment_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  std::atomic<uint64_t> messages_{0};
  std::mutex mu_;
  dp::PoolState state_;
  std::optional<shm::Event> event_;
  Clock::time_point applied_at_;
};

std::string config_text() {
  // The backend's checks are slow (a minute apart): only the changes below move its state.
  return "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
         "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
         "services = ( { name = \"web\"; vip = \"10.0.0.100\"; port = 80;\n"
         "  health = { interval_ms = 60000; timeout_ms = 50; passive = { syn_rst = 3; }; };\n"
         "  backends = ( { address = \"127.0.0.1\"; port = 1; } ); } );\n";
}

class ChurnTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    set_log_level(LogLevel::kError);
  }
  static void TearDownTestSuite() { curl_global_cleanup(); }

  void SetUp() override {
    instance_ = "churn-" + std::to_string(getpid());
    lbd_ = std::make_unique<FakeLbd>(shm::segment_name(instance_));
    Options o;
    o.instance = instance_;
    o.seed = 1;
    d_ = std::make_unique<Daemon>(cfg::parse_config(config_text(), "churn.cfg"), o);
    ASSERT_TRUE(settle());
  }

  // Turns lb-healthd's loop until lbd has applied everything it sent (false after `limit`).
  bool settle(Millis limit = Millis(2000)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      d_->turn(-1, Millis(1));
      const DaemonStatus st = d_->snapshot();
      const bool owed = std::any_of(st.services.begin(), st.services.end(),
                                    [](const ServiceStatus& s) { return s.pending; });
      if (st.attached && !owed && st.generation > 0 && lbd_->applied() == st.generation)
        return true;
    }
    return false;
  }

  void change(const std::string& what, const ServicesEdit& edit) {
    const Result<Change> r = d_->change(what, edit);
    ASSERT_TRUE(r.ok()) << what << ": " << (r.ok() ? "" : r.error().message);
  }

  void add_and_remove(int i) {
    const std::string name = "t" + std::to_string(i);
    change("service add " + name, [&](Json& services) {
      services.push_back({{"name", name},
                          {"vip", "10.0.0.210"},
                          {"port", 2000 + i % 1000},
                          {"backends", Json::array()}});
      return Status();
    });
    d_->turn(-1, Millis(0));
    change("service remove " + name, [&](Json& services) {
      for (auto it = services.begin(); it != services.end(); ++it) {
        if ((*it)["name"] == name) {
          services.erase(it);
          break;
        }
      }
      return Status();
    });
    d_->turn(-1, Millis(0));
  }

  void set_weight(int weight) {
    change("weight", [&](Json& services) {
      services[0]["backends"][0]["weight"] = weight;
      return Status();
    });
  }

  // How long a change takes to be applied by lbd once lb-healthd has made it (`make` returned:
  // as when the control socket's request is handled), the loop turning as lb-healthd's does;
  // -1 when it never is (within 2 s).
  int64_t latency_us(const std::function<void()>& make, const std::function<bool()>& applied) {
    make();
    const auto t0 = Clock::now();
    while (Clock::now() - t0 < Millis(2000)) {
      d_->turn(-1, Millis(1));
      if (applied())
        return std::chrono::duration_cast<microseconds>(lbd_->applied_at() - t0).count();
    }
    return -1;
  }

  std::string instance_;
  std::unique_ptr<FakeLbd> lbd_;
  std::unique_ptr<Daemon> d_;
};

// LB_CHURN_CYCLES overrides the number of add/remove cycles (for measurements: 200, 2000);
// LB_CHURN_MEASURE=1 carries on to the end whatever happens, to measure a broken channel too.
int cycles() {
  const char* env = std::getenv("LB_CHURN_CYCLES");
  return env ? std::atoi(env) : 3000;
}
bool measuring() {
  return std::getenv("LB_CHURN_MEASURE") != nullptr;
}

TEST_F(ChurnTest, ThousandsOfServiceCyclesThenChangesStillArriveAtOnce) {
  const int n = cycles();
  const uint64_t before = lbd_->messages();
  const auto t0 = Clock::now();
  uint64_t worst = 0;   // ring messages for one add + remove cycle, lbd having caught up
  int behind = 0;       // cycles after which lbd had not caught up within 20 ms
  bool settled = true;  // lbd had caught up with the cycle before: this one is counted alone
  for (int i = 0; i < n; ++i) {
    const uint64_t m0 = lbd_->messages();
    add_and_remove(i);
    const bool counted = settled;
    settled = settle(Millis(20));
    if (settled) {
      if (counted) worst = std::max(worst, lbd_->messages() - m0);
    } else {
      ++behind;  // what it sends now counts for the next cycle, but in the total all the same
      if (!measuring()) {
        ASSERT_LT(behind, 100) << "lbd keeps falling behind: nothing reaches it any more?";
      }
    }
  }
  const double churn_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double per_change = static_cast<double>(lbd_->messages() - before) / (2.0 * n);
  std::printf(
      "[ measured ] %d add/remove cycles in %.1fs: %.2f ring messages per change, at "
      "most %llu per cycle; %d cycle(s) left lbd behind\n",
      n, churn_s, per_change, static_cast<unsigned long long>(worst), behind);
  const bool caught_up = settle();
  const uint64_t churned = lbd_->messages() - before;
  // Nothing changes for 500 ms: nothing is sent (a resend of history would show here).
  const uint64_t idle0 = lbd_->messages();
  const auto idle_end = Clock::now() + Millis(500);
  while (Clock::now() < idle_end) d_->turn(-1, Millis(1));
  const uint64_t idle = lbd_->messages() - idle0;
  // One change: what it costs on the ring and how long lbd takes to apply it.
  const uint64_t m1 = lbd_->messages();
  const int64_t first_us = latency_us([&] { set_weight(100); },
                                      [&] {
                                        const auto b = lbd_->first_backend("web");
                                        return b && b->first == 100;
                                      });
  const uint64_t first_messages = lbd_->messages() - m1;
  std::printf(
      "[ measured ] then: %llu ring messages in 500 ms idle; one weight change applied "
      "by lbd after %lld us (-1: never) and %llu ring messages\n",
      static_cast<unsigned long long>(idle), static_cast<long long>(first_us),
      static_cast<unsigned long long>(first_messages));
  ASSERT_TRUE(caught_up) << "lbd never caught up";
  ASSERT_GE(first_us, 0) << "a weight change never reached lbd";
  // One message per change: the service's state, or its removal. Never a resend of history.
  EXPECT_LE(churned, 2u * static_cast<uint64_t>(n));
  EXPECT_LE(worst, 2u);
  EXPECT_EQ(idle, 0u);
  EXPECT_EQ(first_messages, 1u);
  EXPECT_EQ(lbd_->services(), 1u);  // every removal reached lbd

  // After all that, a weight change and a health change reach lbd at once, each one message.
  std::vector<int64_t> weight_us;
  for (int k = 0; k < 20; ++k) {
    const int weight = 2 + k;
    const uint64_t m0 = lbd_->messages();
    const int64_t us = latency_us([&] { set_weight(weight); },
                                  [&] {
                                    const auto b = lbd_->first_backend("web");
                                    return b && b->first == weight;
                                  });
    ASSERT_GE(us, 0) << "weight " << weight << " never reached lbd";
    ASSERT_TRUE(settle());
    EXPECT_EQ(lbd_->messages() - m0, 1u) << "weight " << weight;
    weight_us.push_back(us);
  }
  std::sort(weight_us.begin(), weight_us.end());
  // lbd reports 3 SYNs answered with RST (passive threshold 3): the backend goes DOWN.
  shm::Event e{};
  e.type = static_cast<uint32_t>(shm::EventType::kSynRst);
  e.count = 3;
  e.ip = 0x7f000001;
  e.port = 1;
  std::snprintf(e.service, sizeof e.service, "web");
  const uint64_t m0 = lbd_->messages();
  const int64_t down_us = latency_us([&] { lbd_->post(e); },
                                     [&] {
                                       const auto b = lbd_->first_backend("web");
                                       return b && b->second == shm::BackendState::kDraining;
                                     });
  ASSERT_GE(down_us, 0) << "the backend's DOWN never reached lbd";
  ASSERT_TRUE(settle());
  EXPECT_EQ(lbd_->messages() - m0, 1u);
  std::printf(
      "[ measured ] after them: a weight change applied by lbd %lld us after "
      "lb-healthd made it (median of %zu; max %lld us); a DOWN from a passive event "
      "applied %lld us after lbd posted it\n",
      static_cast<long long>(weight_us[weight_us.size() / 2]), weight_us.size(),
      static_cast<long long>(weight_us.back()), static_cast<long long>(down_us));
  // lbd's budget for applying a pool change is 1 ms (its control tick is 250 us).
  EXPECT_LT(weight_us[weight_us.size() / 2], 1000);
}

// lbd does not read for a while (its ring fills up) while services come and go: when it reads
// again, it gets each service's newest state once and every removal once, not the history.
TEST_F(ChurnTest, FullRingCoalescesToTheNewestStatePerService) {
  lbd_->pause(true);
  const uint64_t m0 = lbd_->messages();
  // 500 services added and removed and 48 weight changes while lbd reads nothing: the first
  // messages fill the ring, the rest wait, one per service.
  for (int i = 0; i < 500; ++i) add_and_remove(i);
  for (int w = 2; w < 50; ++w) {
    set_weight(w);
    d_->turn(-1, Millis(0));
  }
  EXPECT_TRUE(d_->snapshot().services[0].pending);
  lbd_->pause(false);
  ASSERT_TRUE(settle());
  const uint64_t sent = lbd_->messages() - m0;
  const auto b = lbd_->first_backend("web");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->first, 49);          // the newest weight
  EXPECT_EQ(lbd_->services(), 1u);  // every removal arrived
  // What filled the ring, then one message per service that changed: web's newest state and
  // each removal (a service removed before its addition was sent costs one message, not two).
  EXPECT_LE(sent, (shm::kUpdateRingSlots - 1) + 500u + 1u);
  std::printf("[ measured ] 1048 changes while lbd did not read: %llu ring messages\n",
              static_cast<unsigned long long>(sent));
}

}  // namespace
}  // namespace lb::health
