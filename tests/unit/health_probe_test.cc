// lb-healthd's checks (healthd/probe.h): the pure verdict (classify), the status range parser,
// the probe spec from the config, and the libcurl multi Prober against a real HTTP server on
// 127.0.0.1 (status, body, Host header, a fresh connection per check, timeout, refused).

#include "probe.h"

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

namespace lb::health {
namespace {

ProbeSpec spec_200_299() {
  ProbeSpec s;
  s.url = "http://127.0.0.1:1/healthcheck";
  s.timeout = Millis(100);
  s.expect = cfg::StatusRange{200, 299};
  return s;
}

TEST(StatusRange, Parse) {
  const auto one = cfg::parse_status_range("204");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->min, 204);
  EXPECT_EQ(one->max, 204);
  const auto range = cfg::parse_status_range("200-399");
  ASSERT_TRUE(range);
  EXPECT_EQ(range->min, 200);
  EXPECT_EQ(range->max, 399);
  EXPECT_TRUE(range->contains(200));
  EXPECT_TRUE(range->contains(399));
  EXPECT_FALSE(range->contains(199));
  EXPECT_FALSE(range->contains(400));
  EXPECT_FALSE(range->contains(0));
  const auto edges = cfg::parse_status_range("100-599");
  ASSERT_TRUE(edges);
  EXPECT_EQ(edges->min, 100);
  EXPECT_EQ(edges->max, 599);
  for (const char* bad : {"", "2xx", "20", "2000", "099", "600", "200-", "-200", "299-200",
                          "200-600", "200 - 299", " 200", "200-299-300", "+200", "0x1"}) {
    EXPECT_FALSE(cfg::parse_status_range(bad)) << "'" << bad << "'";
  }
}

TEST(Classify, Verdicts) {
  ProbeSpec s = spec_200_299();
  EXPECT_EQ(classify(CURLE_OK, 0, 200, "", "", s, Millis(1)).kind, ResultKind::kOk);
  EXPECT_EQ(classify(CURLE_OK, 0, 299, "", "", s, Millis(1)).kind, ResultKind::kOk);
  const ProbeResult r503 = classify(CURLE_OK, 0, 503, "", "", s, Millis(4));
  EXPECT_EQ(r503.kind, ResultKind::kHttpStatus);
  EXPECT_EQ(r503.http_status, 503);
  EXPECT_EQ(r503.latency, Millis(4));
  EXPECT_EQ(describe(r503), "http status 503");
  EXPECT_EQ(classify(CURLE_OK, 0, 199, "", "", s, Millis(1)).kind, ResultKind::kHttpStatus);
  EXPECT_EQ(classify(CURLE_OK, 0, 300, "", "", s, Millis(1)).kind, ResultKind::kHttpStatus);

  s.expect_body = "ok";
  EXPECT_EQ(classify(CURLE_OK, 0, 200, "status: ok\n", "", s, Millis(1)).kind, ResultKind::kOk);
  EXPECT_EQ(classify(CURLE_OK, 0, 200, "status: fine", "", s, Millis(1)).kind,
            ResultKind::kBodyMismatch);
  // A wrong status is reported as such even when the body would not match either.
  EXPECT_EQ(classify(CURLE_OK, 0, 500, "", "", s, Millis(1)).kind, ResultKind::kHttpStatus);
  // The connection closed within the headers: libcurl says CURLE_OK, with the status it read.
  const ProbeResult cut = classify(CURLE_OK, 0, 200, "", "", s, Millis(1), false);
  EXPECT_EQ(cut.kind, ResultKind::kError);
  EXPECT_EQ(describe(cut), "Connection closed within the answer's headers");

  const ProbeResult timeout =
      classify(CURLE_OPERATION_TIMEDOUT, 0, 0, "", "Operation timed out after 100 milliseconds", s,
               Millis(100));
  EXPECT_EQ(timeout.kind, ResultKind::kTimeout);
  EXPECT_EQ(describe(timeout), "timeout");
  EXPECT_EQ(classify(CURLE_COULDNT_CONNECT, ECONNREFUSED, 0, "", "x", s, Millis(0)).kind,
            ResultKind::kRefused);
  const ProbeResult unreachable = classify(CURLE_COULDNT_CONNECT, EHOSTUNREACH, 0, "",
                                           "Failed to connect: No route to host", s, Millis(0));
  EXPECT_EQ(unreachable.kind, ResultKind::kError);
  EXPECT_EQ(describe(unreachable), "Failed to connect: No route to host");
  const ProbeResult empty = classify(CURLE_GOT_NOTHING, 0, 0, "", "", s, Millis(0));
  EXPECT_EQ(empty.kind, ResultKind::kError);
  EXPECT_EQ(describe(empty), curl_easy_strerror(CURLE_GOT_NOTHING));
}

TEST(ProbeSpecTest, FromConfig) {
  cfg::ServiceConfig svc;
  svc.health.path = "/healthz?full=1";
  svc.health.timeout_ms = 250;
  svc.health.expect_status_min = 200;
  svc.health.expect_status_max = 399;
  svc.health.expect_body = "alive";
  cfg::BackendConfig b;
  b.address = 0x0a14000c;
  b.port = 8080;
  ProbeSpec s = make_spec(svc, b);
  EXPECT_EQ(s.url, "http://10.20.0.12:8080/healthz?full=1");
  EXPECT_EQ(s.host, "");
  EXPECT_EQ(s.timeout, Millis(250));
  EXPECT_EQ(s.expect.max, 399);
  EXPECT_EQ(s.expect_body, "alive");
  svc.health.port = 9000;
  svc.health.host = "www.example.com";
  s = make_spec(svc, b);
  EXPECT_EQ(s.url, "http://10.20.0.12:9000/healthz?full=1");
  EXPECT_EQ(s.host, "www.example.com");
}

// A real server on 127.0.0.1 with a few paths, recording what it was sent.
class ProberTest : public testing::Test {
 protected:
  static void SetUpTestSuite() { curl_global_init(CURL_GLOBAL_DEFAULT); }
  static void TearDownTestSuite() { curl_global_cleanup(); }

  void SetUp() override {
    server_.Get("/ok", [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.set_content("all good\n", "text/plain");
    });
    server_.Get("/503", [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      res.status = 503;
      res.set_content("no\n", "text/plain");
    });
    server_.Get("/slow", [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      for (int i = 0; i < 100 && !stopping_; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      res.set_content("late\n", "text/plain");
    });
    server_.Get("/after50ms", [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      res.set_content("in time\n", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before listen has started would be lost: wait until it runs.
    for (int i = 0; i < 500 && !server_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_TRUE(server_.is_running());
  }

  void TearDown() override {
    stopping_ = true;
    server_.stop();
    thread_.join();
  }

  void record(const httplib::Request& req) {
    std::lock_guard<std::mutex> lock(mu_);
    last_host_ = req.get_header_value("Host");
    last_connection_ = req.get_header_value("Connection");
    peers_[req.remote_port]++;
    ++requests_;
  }

  ProbeSpec spec(const std::string& path) const {
    ProbeSpec s = spec_200_299();
    s.url = "http://127.0.0.1:" + std::to_string(port_) + path;
    // Long enough that a loaded machine (CI runs builds beside it) never turns an answer into
    // a timeout; the timeout tests set their own.
    s.timeout = Millis(2000);
    return s;
  }

  // Runs the prober until `n` checks have ended (bounded by a deadline).
  std::map<uint64_t, ProbeResult> run(Prober& p, size_t n) {
    std::map<uint64_t, ProbeResult> out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      bool woke = false;
      for (Prober::Done& d : p.poll(Millis(50), -1, woke)) out[d.id] = std::move(d.result);
    }
    return out;
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::string last_host_, last_connection_;
  std::map<int, int> peers_;  // client port -> requests on that connection
  int requests_ = 0;
};

TEST_F(ProberTest, StatusBodyAndHost) {
  Prober p;
  ProbeSpec ok = spec("/ok");
  ok.expect_body = "good";
  ProbeSpec mismatch = spec("/ok");
  mismatch.expect_body = "bad";
  p.start(1, ok);
  p.start(2, spec("/503"));
  p.start(3, mismatch);
  EXPECT_EQ(p.running(), 3u);
  EXPECT_TRUE(p.running(2));
  auto results = run(p, 3);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[1].kind, ResultKind::kOk) << describe(results[1]);
  EXPECT_EQ(results[1].http_status, 200);
  EXPECT_EQ(results[2].kind, ResultKind::kHttpStatus);
  EXPECT_EQ(results[2].http_status, 503);
  EXPECT_EQ(results[3].kind, ResultKind::kBodyMismatch);
  EXPECT_EQ(p.running(), 0u);
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(last_host_, "127.0.0.1:" + std::to_string(port_));  // curl's default
    EXPECT_EQ(last_connection_, "close");
  }

  ProbeSpec host = spec("/ok");
  host.host = "www.example.com";
  p.start(4, host);
  results = run(p, 1);
  EXPECT_EQ(results[4].kind, ResultKind::kOk);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(last_host_, "www.example.com");
}

TEST_F(ProberTest, EveryCheckIsAFreshConnection) {
  Prober p;
  for (uint64_t i = 0; i < 5; ++i) {
    p.start(i, spec("/ok"));
    ASSERT_EQ(run(p, 1).size(), 1u);
  }
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(requests_, 5);
  EXPECT_EQ(peers_.size(), 5u);  // five client ports: no connection was reused
}

TEST_F(ProberTest, IgnoresProxyEnvironment) {
  setenv("http_proxy", "http://127.0.0.1:1", 1);
  setenv("HTTP_PROXY", "http://127.0.0.1:1", 1);
  Prober p;
  p.start(1, spec("/ok"));
  auto results = run(p, 1);
  unsetenv("http_proxy");
  unsetenv("HTTP_PROXY");
  EXPECT_EQ(results[1].kind, ResultKind::kOk) << describe(results[1]);
}

TEST_F(ProberTest, TimeoutDoesNotBlockOtherChecks) {
  Prober p;
  ProbeSpec slow = spec("/slow");
  slow.timeout = Millis(150);
  const auto start = std::chrono::steady_clock::now();
  p.start(1, slow);
  p.start(2, spec("/ok"));
  std::map<uint64_t, std::chrono::steady_clock::time_point> ended;
  std::map<uint64_t, ProbeResult> results;
  const auto deadline = start + std::chrono::seconds(5);
  while (results.size() < 2 && std::chrono::steady_clock::now() < deadline) {
    bool woke = false;
    // A long wait: curl's own timers (the 150 ms timeout) cut it short.
    for (Prober::Done& d : p.poll(Millis(1000), -1, woke)) {
      ended[d.id] = std::chrono::steady_clock::now();
      results[d.id] = std::move(d.result);
    }
  }
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[2].kind, ResultKind::kOk);
  EXPECT_LT(ended[2], ended[1]);  // the fast one is not held up by the slow one
  EXPECT_EQ(results[1].kind, ResultKind::kTimeout) << describe(results[1]);
  const auto took = ended[1] - start;
  EXPECT_GE(took, std::chrono::milliseconds(140));
  EXPECT_LT(took, std::chrono::milliseconds(400));
}

// The loop that polls the checks is held up (a slow fsync of the state file, say) across a
// check's deadline, while the backend's answer arrives in time: libcurl would see the expired
// deadline before the answer. The check is not failed; it runs again and passes.
TEST_F(ProberTest, TimeoutWhileTheCallerWasAwayIsCheckedAgain) {
  Prober p;
  ProbeSpec s = spec("/after50ms");
  s.timeout = Millis(200);
  p.start(1, s);
  bool woke = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(p.poll(Millis(5), -1, woke).empty());
    std::lock_guard<std::mutex> lock(mu_);
    if (requests_ == 1) break;  // asked: the answer comes 50 ms later
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // away past the 200 ms deadline
  const auto results = run(p, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results.at(1).kind, ResultKind::kOk) << describe(results.at(1));
  EXPECT_EQ(p.stall_retries(), 1u);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(requests_, 2);
}

TEST_F(ProberTest, ConnectionRefused) {
  // A port that was just ours and is now closed: nobody listens there.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  close(fd);
  ProbeSpec s = spec_200_299();
  s.url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/";
  Prober p;
  p.start(9, s);
  auto results = run(p, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[9].kind, ResultKind::kRefused) << describe(results[9]);
}

TEST_F(ProberTest, CancelAndWake) {
  Prober p;
  ProbeSpec slow = spec("/slow");
  slow.timeout = Millis(2000);
  p.start(1, slow);
  p.cancel(1);
  EXPECT_FALSE(p.running(1));
  // A readable wake fd ends the wait early and says so.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  bool woke = false;
  const auto start = std::chrono::steady_clock::now();
  p.poll(Millis(2000), fds[0], woke);
  EXPECT_TRUE(woke);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  close(fds[0]);
  close(fds[1]);
}

}  // namespace
}  // namespace lb::health
