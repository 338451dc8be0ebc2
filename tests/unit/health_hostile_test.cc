// lb-healthd's checks (healthd/probe.h) against backends that misbehave at the TCP level: a
// scripted server on 127.0.0.1 that accepts and never answers, answers byte by byte, sends a
// 10 MB body, redirects, answers HTTP/1.0 without Content-Length, closes mid-headers, or splits
// the expected body text across writes. Each must end within timeout_ms with the right verdict
// and never hold up another check.

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "probe.h"

namespace lb::health {
namespace {

using Steady = std::chrono::steady_clock;

// A listening socket on 127.0.0.1; each accepted connection is handed to `script` on a thread
// of its own (the request is read first, up to the blank line).
class ScriptedServer {
 public:
  using Script = std::function<void(int fd, const std::atomic<bool>& stop)>;
  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    listen_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
        listen(listen_, 512) != 0) {
      ADD_FAILURE() << "cannot listen on a loopback port";
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] {
      while (!stop_) {
        const int fd = accept(listen_, nullptr, nullptr);
        if (fd < 0) {
          if (stop_) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        ++accepted_;
        workers_.emplace_back([this, fd] {
          read_request(fd);
          script_(fd, stop_);
          // Lingering until the client gives up: a closed socket would end a hung check early.
          for (int i = 0; i < 1000 && !stop_; ++i) {
            char c;
            const ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
            if (n == 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          close(fd);
        });
      }
    });
  }
  ~ScriptedServer() {
    stop_ = true;
    shutdown(listen_, SHUT_RDWR);
    close(listen_);
    acceptor_.join();
    for (std::thread& t : workers_) t.join();
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

  static void read_request(int fd) {
    std::string req;
    char buf[1024];
    for (int i = 0; i < 200 && req.find("\r\n\r\n") == std::string::npos; ++i) {
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      req.append(buf, static_cast<size_t>(n));
    }
  }
  static void send_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }

 private:
  Script script_;
  int listen_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::vector<std::thread> workers_;  // only the acceptor adds, joined after it
};

class HostileTest : public testing::Test {
 protected:
  static void SetUpTestSuite() { curl_global_init(CURL_GLOBAL_DEFAULT); }
  static void TearDownTestSuite() { curl_global_cleanup(); }

  static ProbeSpec spec(uint16_t port, Millis timeout, const std::string& body = "") {
    ProbeSpec s;
    s.url = "http://127.0.0.1:" + std::to_string(port) + "/healthcheck";
    s.timeout = timeout;
    s.expect = cfg::StatusRange{200, 299};
    s.expect_body = body;
    return s;
  }

  struct Ended {
    ProbeResult result;
    Millis after{0};  // since the start of run()
    std::string local_error;
  };
  // Runs `p` until `n` checks have ended or 10 s have passed.
  static std::map<uint64_t, Ended> run(Prober& p, size_t n, Steady::time_point start) {
    std::map<uint64_t, Ended> out;
    while (out.size() < n && Steady::now() < start + std::chrono::seconds(10)) {
      bool woke = false;
      for (Prober::Done& d : p.poll(Millis(1000), -1, woke)) {
        out[d.id] =
            Ended{std::move(d.result), std::chrono::duration_cast<Millis>(Steady::now() - start),
                  std::move(d.local_error)};
      }
    }
    return out;
  }
};

const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

TEST_F(HostileTest, AcceptsAndNeverAnswers) {
  ScriptedServer hang([](int, const std::atomic<bool>& stop) {
    for (int i = 0; i < 400 && !stop; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  ScriptedServer fine([](int fd, const std::atomic<bool>&) { ScriptedServer::send_all(fd, kOk); });
  Prober p;
  const auto start = Steady::now();
  p.start(1, spec(hang.port(), Millis(200)));
  p.start(2, spec(fine.port(), Millis(2000)));
  auto r = run(p, 2, start);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].result.kind, ResultKind::kTimeout) << describe(r[1].result);
  EXPECT_GE(r[1].after, Millis(195));
  EXPECT_LT(r[1].after, Millis(1000));
  EXPECT_EQ(r[2].result.kind, ResultKind::kOk) << describe(r[2].result);
  EXPECT_LT(r[2].after, r[1].after);
}

TEST_F(HostileTest, AnswersByteByByte) {
  // 20 ms a byte: a valid answer that would take 1.2 s; the timeout counts from the start.
  ScriptedServer slow([](int fd, const std::atomic<bool>& stop) {
    for (char c : kOk) {
      if (stop) return;
      ScriptedServer::send_all(fd, std::string(1, c));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  Prober p;
  const auto start = Steady::now();
  p.start(1, spec(slow.port(), Millis(300)));
  auto r = run(p, 1, start);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[1].result.kind, ResultKind::kTimeout) << describe(r[1].result);
  EXPECT_LT(r[1].after, Millis(1000));  // the answer would take 1.2 s
}

TEST_F(HostileTest, TenMegabyteBody) {
  ScriptedServer big([](int fd, const std::atomic<bool>&) {
    const size_t size = size_t{10} << 20;
    ScriptedServer::send_all(
        fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\nalive");
    const std::string chunk(64 * 1024, 'x');
    for (size_t sent = 5; sent < size; sent += chunk.size()) {
      ScriptedServer::send_all(fd, chunk.substr(0, std::min(chunk.size(), size - sent)));
    }
  });
  Prober p;
  const auto start = Steady::now();
  p.start(1, spec(big.port(), Millis(3000), "alive"));
  auto r = run(p, 1, start);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[1].result.kind, ResultKind::kOk) << describe(r[1].result);
}

TEST_F(HostileTest, RedirectIsNotFollowed) {
  ScriptedServer redirect([](int fd, const std::atomic<bool>&) {
    ScriptedServer::send_all(fd,
                             "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\n"
                             "Content-Length: 0\r\n\r\n");
  });
  Prober p;
  p.start(1, spec(redirect.port(), Millis(2000)));
  auto r = run(p, 1, Steady::now());
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[1].result.kind, ResultKind::kHttpStatus);
  EXPECT_EQ(r[1].result.http_status, 302);
  EXPECT_EQ(redirect.accepted(), 1);
}

TEST_F(HostileTest, Http10WithoutContentLength) {
  ScriptedServer old([](int fd, const std::atomic<bool>&) {
    ScriptedServer::send_all(fd, "HTTP/1.0 200 OK\r\n\r\nstatus: alive\n");
    shutdown(fd, SHUT_WR);
  });
  Prober p;
  p.start(1, spec(old.port(), Millis(2000), "alive"));
  auto r = run(p, 1, Steady::now());
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[1].result.kind, ResultKind::kOk) << describe(r[1].result);
}

// A backend that dies after its status line (or within a header): libcurl ends the transfer
// with CURLE_OK and status 200, but nothing was answered.
TEST_F(HostileTest, ClosesMidHeaders) {
  for (const std::string cut_at : {"HTTP/1.1 200 OK\r\nContent-Le", "HTTP/1.1 200 OK\r\n",
                                   "HTTP/1.1 200 OK\r\nServer: x\r\n"}) {
    ScriptedServer cut([&](int fd, const std::atomic<bool>&) {
      ScriptedServer::send_all(fd, cut_at);
      shutdown(fd, SHUT_WR);
    });
    Prober p;
    p.start(1, spec(cut.port(), Millis(2000)));
    auto r = run(p, 1, Steady::now());
    ASSERT_EQ(r.size(), 1u);
    EXPECT_FALSE(r[1].result.ok()) << cut_at;
    EXPECT_EQ(r[1].result.kind, ResultKind::kError) << describe(r[1].result);
  }
}

// The same with an interim 100 answer first: its blank line does not end the final headers.
TEST_F(HostileTest, ClosesMidHeadersAfterAnInterimAnswer) {
  ScriptedServer cut([](int fd, const std::atomic<bool>&) {
    ScriptedServer::send_all(fd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n");
    shutdown(fd, SHUT_WR);
  });
  ScriptedServer whole([](int fd, const std::atomic<bool>&) {
    ScriptedServer::send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n" + kOk);
  });
  Prober p;
  p.start(1, spec(cut.port(), Millis(2000)));
  p.start(2, spec(whole.port(), Millis(2000)));
  auto r = run(p, 2, Steady::now());
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].result.kind, ResultKind::kError) << describe(r[1].result);
  EXPECT_EQ(r[2].result.kind, ResultKind::kOk) << describe(r[2].result);
}

TEST_F(HostileTest, ExpectedBodySplitAcrossWrites) {
  ScriptedServer split([](int fd, const std::atomic<bool>&) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ScriptedServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"status\":\"");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ScriptedServer::send_all(fd, "ok\"}\n");
  });
  Prober p;
  p.start(1, spec(split.port(), Millis(2000), "\"status\":\"ok\""));
  auto r = run(p, 1, Steady::now());
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[1].result.kind, ResultKind::kOk) << describe(r[1].result);
}

}  // namespace
}  // namespace lb::health

namespace lb::health {
namespace {

// The soft open-file limit set low for one test, restored after it.
class LowFileLimit {
 public:
  explicit LowFileLimit(int spare) {
    getrlimit(RLIMIT_NOFILE, &old_);
    const int lowest = open("/dev/null", O_RDONLY);  // the lowest free descriptor
    close(lowest);
    rlimit low = old_;
    low.rlim_cur = static_cast<rlim_t>(lowest + spare);
    ok_ = setrlimit(RLIMIT_NOFILE, &low) == 0;
  }
  ~LowFileLimit() { setrlimit(RLIMIT_NOFILE, &old_); }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  bool ok_ = false;
};

// lb-healthd out of descriptors (checks of hung backends hold them all): a check that cannot
// even open its socket says nothing of its backend. libcurl reports it like a refused connect
// ("Couldn't connect to server", no errno); it must come back as a local error, not a failure.
TEST_F(HostileTest, NoSocketLeftIsNotTheBackendsFailure) {
  ScriptedServer hang([](int, const std::atomic<bool>& stop) {
    for (int i = 0; i < 400 && !stop; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  ScriptedServer fine([](int fd, const std::atomic<bool>&) { ScriptedServer::send_all(fd, kOk); });
  Prober p;
  std::map<uint64_t, Ended> r;
  {
    LowFileLimit limit(12);
    ASSERT_TRUE(limit.ok());
    const auto start = Steady::now();
    for (uint64_t i = 1; i <= 30; ++i) p.start(i, spec(hang.port(), Millis(300)));
    p.start(100, spec(fine.port(), Millis(300)));
    r = run(p, 31, start);
  }
  ASSERT_EQ(r.size(), 31u);
  size_t local = 0;
  for (const auto& [id, e] : r) {
    if (id == 100) {
      EXPECT_FALSE(e.local_error.empty()) << "the healthy backend's check: " << describe(e.result);
    }
    if (!e.local_error.empty()) {
      ++local;
      EXPECT_EQ(e.local_error, std::strerror(EMFILE));
    } else {
      EXPECT_EQ(e.result.kind, ResultKind::kTimeout) << id << ": " << describe(e.result);
    }
  }
  EXPECT_GT(local, 0u);
  EXPECT_EQ(p.local_failures(), local);
  // With descriptors again, the same check passes.
  p.start(100, spec(fine.port(), Millis(2000)));
  r = run(p, 1, Steady::now());
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[100].local_error.empty());
  EXPECT_EQ(r[100].result.kind, ResultKind::kOk) << describe(r[100].result);
}

TEST(OpenFileLimit, RaisedToTheHardLimitAtMostWant) {
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 600) GTEST_SKIP() << "hard limit too low";
  rlimit low = old;
  low.rlim_cur = 512;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  uint64_t before = 0;
  const uint64_t now = raise_open_file_limit(600, before);
  rlimit seen{};
  getrlimit(RLIMIT_NOFILE, &seen);
  setrlimit(RLIMIT_NOFILE, &old);
  EXPECT_EQ(before, 512u);
  EXPECT_EQ(now, 600u);
  EXPECT_EQ(seen.rlim_cur, 600u);
  // Never lowered.
  low.rlim_cur = 700;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  const uint64_t kept = raise_open_file_limit(600, before);
  setrlimit(RLIMIT_NOFILE, &old);
  EXPECT_EQ(kept, 700u);
}

}  // namespace
}  // namespace lb::health
