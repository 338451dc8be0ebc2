// lb-healthd's control socket server (healthd/control.h) on its own: framing, limits, deferred
// replies, hostile clients, and the socket file's life. The server runs in the test's thread
// (as in the daemon's loop); clients are plain sockets, in a thread where they must block.

#include "control_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "log.h"

namespace lb::health {
namespace {

using namespace std::chrono_literals;

class ControlServerTest : public testing::Test {
 protected:
  static void SetUpTestSuite() { set_log_level(LogLevel::kError); }

  void SetUp() override {
    dir_ = std::filesystem::path("/tmp") /
           ("lbctl_srv_" + std::to_string(getpid()) + "_" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    path_ = (dir_ / "sub" / "ctl.sock").string();  // the directory is created by the server
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start(Millis idle = Millis(10000), size_t max_request = 1024, size_t max_clients = 64) {
    ControlOptions o;
    o.path = path_;
    o.mode = 0640;
    o.idle_timeout = idle;
    o.max_request = max_request;
    o.max_clients = max_clients;
    server_ = std::make_unique<ControlServer>(o);
  }

  // What the daemon's handler would be: echoes, defers, throws on request.
  std::optional<Json> handle(ControlServer::ConnId id, const Json& req) {
    ++handled_;
    const std::string cmd = req.value("cmd", std::string());
    if (cmd == "defer") {
      deferred_ = id;
      return std::nullopt;
    }
    if (cmd == "throw") throw std::runtime_error("boom");
    return Json{{"ok", true}, {"echo", req}};
  }

  void pump_once() {
    pollfd p{server_->fd(), POLLIN, 0};
    ::poll(&p, 1, 5);
    server_->service(Clock::now(),
                     [this](ControlServer::ConnId id, const Json& r) { return handle(id, r); });
  }

  // Serves until `pred` holds (bounded).
  bool pump_until(const std::function<bool()>& pred, Millis limit = Millis(5000)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      pump_once();
      if (pred()) return true;
    }
    return false;
  }

  int connect_client() const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    return fd;
  }

  static void send_all(int fd, const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << std::strerror(errno);
      done += static_cast<size_t>(n);
    }
  }

  // Reads whatever has arrived, without blocking; false at end of file.
  static bool drain(int fd, std::string& into) {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        into.append(buf, static_cast<size_t>(n));
        continue;
      }
      return n != 0;
    }
  }

  // Serves until the client has `lines` complete lines (or end of file); returns them.
  std::vector<Json> read_lines(int fd, size_t lines, bool* eof = nullptr) {
    std::string buf;
    bool open = true;
    pump_until([&] {
      open = drain(fd, buf);
      return !open || static_cast<size_t>(std::count(buf.begin(), buf.end(), '\n')) >= lines;
    });
    if (eof) *eof = !open;
    std::vector<Json> out;
    size_t start = 0;
    for (size_t nl = buf.find('\n'); nl != std::string::npos; nl = buf.find('\n', start)) {
      out.push_back(Json::parse(buf.substr(start, nl - start)));
      start = nl + 1;
    }
    return out;
  }

  // Serves until the server has closed the client's connection.
  bool closed_by_server(int fd) {
    std::string ignored;
    return pump_until([&] { return !drain(fd, ignored); });
  }

  Json roundtrip(int fd, const std::string& line) {
    send_all(fd, line);
    const std::vector<Json> r = read_lines(fd, 1);
    return r.empty() ? Json() : r[0];
  }

  std::filesystem::path dir_;
  std::string path_;
  std::unique_ptr<ControlServer> server_;
  int handled_ = 0;
  std::optional<ControlServer::ConnId> deferred_;
};

TEST_F(ControlServerTest, AnswersInOrderAndEchoesIds) {
  start();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  const int fd = connect_client();
  // Two requests in one write, the second with CRLF; blank lines are skipped.
  send_all(fd, "{\"cmd\":\"a\",\"id\":1}\n\n   \n{\"cmd\":\"b\",\"id\":\"x\"}\r\n");
  const std::vector<Json> r = read_lines(fd, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["echo"]["cmd"], "a");
  EXPECT_EQ(r[0]["id"], 1);
  EXPECT_EQ(r[1]["echo"]["cmd"], "b");
  EXPECT_EQ(r[1]["id"], "x");
  // A request split over several writes.
  send_all(fd, "{\"cmd\":");
  pump_once();
  send_all(fd, "\"c\"}\n");
  EXPECT_EQ(read_lines(fd, 1).at(0)["echo"]["cmd"], "c");
  // The last request may end with the connection instead of a newline.
  send_all(fd, "{\"cmd\":\"last\"}");
  ::shutdown(fd, SHUT_WR);
  bool eof = false;
  const std::vector<Json> last = read_lines(fd, 1, &eof);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0]["echo"]["cmd"], "last");
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  EXPECT_TRUE(pump_until([&] { return server_->clients() == 0; }));
}

// accept() failing for want of descriptors left the listening socket readable: every turn of
// lb-healthd's loop woke at once and logged a warning. Now it is left out for a while (the
// client waits in the backlog) and served once descriptors are free again.
TEST_F(ControlServerTest, OutOfDescriptorsPausesAcceptingInsteadOfSpinning) {
  start();
  const int client = connect_client();  // waits in the backlog
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  const int lowest = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // the next descriptor's number
  ASSERT_GE(lowest, 0);
  ::close(lowest);
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(lowest);  // no descriptor can be made now
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  for (int i = 0; i < 3; ++i)
    server_->service(Clock::now(),
                     [this](ControlServer::ConnId id, const Json& r) { return handle(id, r); });
  pollfd p{server_->fd(), POLLIN, 0};
  const int ready = ::poll(&p, 1, 0);
  const auto next = server_->next_deadline();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_EQ(ready, 0) << "the loop would wake at once, on every turn";
  EXPECT_GT(next, Clock::now()) << "due at once";
  EXPECT_LT(next, Clock::now() + Millis(200)) << "not tried again soon";
  EXPECT_EQ(server_->clients(), 0u);
  send_all(client, "{\"cmd\":\"ping\"}\n");
  const std::vector<Json> r = read_lines(client, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["ok"], true);
  ::close(client);
}

TEST_F(ControlServerTest, MalformedRequestsAreAnsweredAndTheConnectionKept) {
  start();
  const int fd = connect_client();
  Json r = roundtrip(fd, "garbage\n");
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["code"], "malformed");
  EXPECT_NE(r["error"].get<std::string>().find("not JSON"), std::string::npos) << r;
  r = roundtrip(fd, "[1,2,3]\n");
  EXPECT_EQ(r["code"], "malformed");
  EXPECT_NE(r["error"].get<std::string>().find("expected a JSON object, found array"),
            std::string::npos);
  r = roundtrip(fd, std::string(100, '[') + std::string(100, ']') + "\n");
  EXPECT_EQ(r["code"], "malformed");
  EXPECT_NE(r["error"].get<std::string>().find("nested deeper"), std::string::npos) << r;
  // A key given twice in one object (nlohmann-json alone would keep the last); the same key in
  // two objects is fine.
  r = roundtrip(fd, "{\"cmd\":\"ok\",\"args\":{\"name\":\"web\",\"name\":\"api\"}}\n");
  EXPECT_EQ(r["code"], "malformed");
  EXPECT_NE(r["error"].get<std::string>().find("key \"name\" given twice"), std::string::npos) << r;
  r = roundtrip(fd, "{\"cmd\":\"ok\",\"cmd\":\"throw\"}\n");
  EXPECT_EQ(r["code"], "malformed");
  EXPECT_EQ(roundtrip(fd, "{\"cmd\":\"ok\",\"a\":{\"cmd\":1},\"b\":[{\"cmd\":2}]}\n")["ok"], true);
  r = roundtrip(fd, "{\"cmd\":\"\xff\xfe\"}\n");  // not UTF-8
  EXPECT_EQ(r["code"], "malformed");
  r = roundtrip(fd, std::string("{\"cmd\":\"x\"}\0junk\n", 17));
  EXPECT_EQ(r["code"], "malformed");
  r = roundtrip(fd, "{\"cmd\":\"throw\"}\n");
  EXPECT_EQ(r["code"], "internal");
  EXPECT_NE(r["error"].get<std::string>().find("boom"), std::string::npos);
  // Still serving.
  EXPECT_EQ(roundtrip(fd, "{\"cmd\":\"ok\"}\n")["ok"], true);
  ::close(fd);
}

TEST_F(ControlServerTest, OversizedRequestIsRefusedAndTheConnectionClosed) {
  start(Millis(10000), 64 * 1024);
  const int fd = connect_client();
  // 10 MB without a newline, from a thread: the write blocks until the server gives up.
  std::atomic<bool> writer_done{false};
  ssize_t written = 0;
  int write_errno = 0;
  std::thread writer([&] {
    const std::string chunk(1 << 20, 'x');
    for (int i = 0; i < 10; ++i) {
      const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n < 0) {
        write_errno = errno;
        break;
      }
      written += n;
    }
    writer_done = true;
  });
  std::string reply;
  bool open = true;
  ASSERT_TRUE(pump_until(
      [&] {
        open = drain(fd, reply);
        return !open && writer_done;
      },
      Millis(10000)));
  writer.join();
  EXPECT_LT(written, 10 << 20);  // the server stopped reading
  EXPECT_TRUE(write_errno == EPIPE || write_errno == ECONNRESET) << std::strerror(write_errno);
  ASSERT_NE(reply.find('\n'), std::string::npos) << reply;
  const Json r = Json::parse(reply.substr(0, reply.find('\n')));
  EXPECT_EQ(r["code"], "too_large");
  EXPECT_NE(r["error"].get<std::string>().find("65536 bytes"), std::string::npos) << r;
  ::close(fd);
  EXPECT_EQ(handled_, 0);
  // Others are unaffected.
  const int other = connect_client();
  EXPECT_EQ(roundtrip(other, "{\"cmd\":\"ok\"}\n")["ok"], true);
  ::close(other);
}

TEST_F(ControlServerTest, SilentClientIsDisconnected) {
  start(Millis(200));
  const int fd = connect_client();
  const auto t0 = Clock::now();
  bool eof = false;
  const std::vector<Json> r = read_lines(fd, 1, &eof);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["code"], "idle");
  EXPECT_TRUE(closed_by_server(fd));
  const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - t0);
  EXPECT_GE(waited.count(), 190);
  EXPECT_LT(waited.count(), 3000);
  ::close(fd);
  // A client that keeps talking is not idle.
  const int busy = connect_client();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(roundtrip(busy, "{\"cmd\":\"x\"}\n")["ok"], true);
    const auto until = Clock::now() + Millis(80);
    pump_until([&] { return Clock::now() >= until; });
  }
  ::close(busy);
  EXPECT_NE(server_->next_deadline(), TimePoint::max());
}

TEST_F(ControlServerTest, WhenFullTheQuietestClientMakesRoom) {
  start(Millis(10000), 1024, 2);
  const int a = connect_client();
  const int b = connect_client();
  EXPECT_EQ(roundtrip(a, "{\"cmd\":\"x\"}\n")["ok"], true);
  EXPECT_EQ(roundtrip(b, "{\"cmd\":\"x\"}\n")["ok"], true);
  // Both slots held by clients that say nothing more: a new one is served, the one silent for
  // longest (a) is told why and disconnected.
  const int c = connect_client();
  EXPECT_EQ(roundtrip(c, "{\"cmd\":\"x\"}\n")["ok"], true);
  const std::vector<Json> r = read_lines(a, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["code"], "evicted");
  EXPECT_TRUE(closed_by_server(a));
  EXPECT_EQ(server_->evicted(), 1u);
  EXPECT_EQ(server_->clients(), 2u);
  EXPECT_EQ(roundtrip(b, "{\"cmd\":\"x\"}\n")["ok"], true);
  ::close(a);
  ::close(b);
  ::close(c);
}

TEST_F(ControlServerTest, WhenFullAClientThatNeverSpokeMakesRoomFirst) {
  start(Millis(10000), 1024, 2);
  const int a = connect_client();
  EXPECT_EQ(roundtrip(a, "{\"cmd\":\"x\"}\n")["ok"], true);
  // b connects after a's request and says nothing: a is the longer silent, but b never asked
  // anything (500 idle connections must not push out the one real client among them).
  const int b = connect_client();
  ASSERT_TRUE(pump_until([&] { return server_->clients() == 2; }));
  const int c = connect_client();
  EXPECT_EQ(roundtrip(c, "{\"cmd\":\"x\"}\n")["ok"], true);
  EXPECT_EQ(read_lines(b, 1).at(0)["code"], "evicted");
  EXPECT_TRUE(closed_by_server(b));
  EXPECT_EQ(roundtrip(a, "{\"cmd\":\"x\"}\n")["ok"], true);
  EXPECT_EQ(server_->evicted(), 1u);
  ::close(a);
  ::close(b);
  ::close(c);
}

TEST_F(ControlServerTest, WhenFullAClientWhoseRequestIsWaitingIsNotEvicted) {
  start(Millis(10000), 1024, 2);
  const int a = connect_client();
  const int b = connect_client();
  EXPECT_EQ(roundtrip(a, "{\"cmd\":\"x\"}\n")["ok"], true);
  EXPECT_EQ(roundtrip(b, "{\"cmd\":\"x\"}\n")["ok"], true);
  // A newcomer, then a's next request before the server has read it (the connection is seen
  // first): a has been silent longest, but its request is there, unread: b makes room.
  const int c = connect_client();
  send_all(a, "{\"cmd\":\"x\"}\n");
  ASSERT_TRUE(pump_until([&] { return server_->evicted() == 1; }));
  EXPECT_EQ(read_lines(a, 1).at(0)["ok"], true);
  EXPECT_EQ(read_lines(b, 1).at(0)["code"], "evicted");
  EXPECT_EQ(roundtrip(c, "{\"cmd\":\"x\"}\n")["ok"], true);
  ::close(a);
  ::close(b);
  ::close(c);
}

// Clients that send requests and never read the replies: once their replies back up, the
// server reads nothing more from them, so their requests wait unread — but they are not in
// flight. When such clients hold every slot, a new client still gets in at once: the one whose
// replies stopped moving first makes room.
TEST_F(ControlServerTest, WhenFullClientsThatDoNotReadTheirRepliesMakeRoom) {
  start(Millis(10000), 65536, 2);
  const std::string request = "{\"cmd\":\"x\",\"pad\":\"" + std::string(16000, 'p') + "\"}\n";
  const int a = connect_client();
  const int b = connect_client();
  for (const int fd : {a, b}) {
    // Sends (whole requests, in order) until neither the socket nor the server takes more.
    size_t sent = 0;
    for (int refused = 0; refused < 20;) {
      const size_t at = sent % request.size();
      const ssize_t n =
          ::send(fd, request.data() + at, request.size() - at, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        refused = 0;
      } else {
        ++refused;
      }
      pump_once();
    }
    int unread = 0;
    ASSERT_EQ(::ioctl(fd, FIONREAD, &unread), 0);
    ASSERT_GT(unread, 0);  // its replies wait for it
  }
  EXPECT_EQ(server_->clients(), 2u);
  const auto t0 = Clock::now();
  const int c = connect_client();
  const Json r = roundtrip(c, "{\"cmd\":\"status\"}\n");
  EXPECT_EQ(r["ok"], true) << r.dump();
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_EQ(server_->evicted(), 1u);
  EXPECT_EQ(server_->clients(), 2u);
  ::close(a);
  ::close(b);
  ::close(c);
}

TEST_F(ControlServerTest, TooManyClientsWithRequestsInFlightAreTurnedAway) {
  start(Millis(10000), 1024, 2);
  const int a = connect_client();
  const int b = connect_client();
  send_all(a, "{\"cmd\":\"defer\"}\n");
  ASSERT_TRUE(pump_until([&] { return deferred_.has_value(); }));
  const ControlServer::ConnId first = *deferred_;
  deferred_.reset();
  send_all(b, "{\"cmd\":\"defer\"}\n");
  ASSERT_TRUE(pump_until([&] { return deferred_.has_value(); }));
  // Every slot waits on an answer: nobody is evicted, the newcomer is refused.
  const int c = connect_client();
  const std::vector<Json> r = read_lines(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["code"], "busy");
  EXPECT_TRUE(closed_by_server(c));
  ::close(c);
  EXPECT_EQ(server_->evicted(), 0u);
  server_->reply(first, Json{{"ok", true}});
  server_->reply(*deferred_, Json{{"ok", true}});
  EXPECT_EQ(read_lines(a, 1).at(0)["ok"], true);
  EXPECT_EQ(read_lines(b, 1).at(0)["ok"], true);
  ::close(a);
  ::close(b);
}

TEST_F(ControlServerTest, DeferredReplyHoldsTheNextRequest) {
  start(Millis(100));  // deferred requests are not idle
  const int fd = connect_client();
  send_all(fd, "{\"cmd\":\"defer\",\"id\":7}\n{\"cmd\":\"after\"}\n");
  ASSERT_TRUE(pump_until([&] { return deferred_.has_value(); }));
  const auto until = Clock::now() + Millis(300);
  pump_until([&] { return Clock::now() >= until; });
  EXPECT_EQ(handled_, 1);  // "after" waits for the deferred reply
  std::string got;
  EXPECT_TRUE(drain(fd, got));
  EXPECT_EQ(got, "");
  server_->reply(*deferred_, Json{{"ok", true}, {"late", true}});
  const std::vector<Json> r = read_lines(fd, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["late"], true);
  EXPECT_EQ(r[0]["id"], 7);
  EXPECT_EQ(r[1]["echo"]["cmd"], "after");
  // A client that leaves while its reply is deferred: the reply goes nowhere, nothing breaks.
  deferred_.reset();
  send_all(fd, "{\"cmd\":\"defer\"}\n");
  ASSERT_TRUE(pump_until([&] { return deferred_.has_value(); }));
  ::close(fd);
  ASSERT_TRUE(pump_until([&] { return server_->clients() == 0; }));
  server_->reply(*deferred_, Json{{"ok", true}});
  // reply_all_deferred answers whoever still waits.
  const int w = connect_client();
  send_all(w, "{\"cmd\":\"defer\"}\n");
  deferred_.reset();
  ASSERT_TRUE(pump_until([&] { return deferred_.has_value(); }));
  server_->reply_all_deferred(error_reply("stopping", "bye"));
  EXPECT_EQ(read_lines(w, 1).at(0)["code"], "stopping");
  ::close(w);
}

TEST_F(ControlServerTest, SocketFileLifecycle) {
  start();
  // A second server on the same path: refused while the first is alive.
  ControlOptions o;
  o.path = path_;
  try {
    ControlServer second(o);
    FAIL() << "two servers on one socket";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("another process"), std::string::npos) << e.what();
  }
  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(path_));  // removed on the way out
  // A stale socket (its server died without removing it) is replaced.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(fd);  // bound, never listened: connect is refused
  }
  start();
  const int c = connect_client();
  EXPECT_EQ(roundtrip(c, "{\"cmd\":\"x\"}\n")["ok"], true);
  ::close(c);
  server_.reset();
  // Not a socket: left alone.
  std::ofstream(path_) << "precious";
  EXPECT_THROW(start(), std::runtime_error);
  EXPECT_TRUE(std::filesystem::exists(path_));
  std::filesystem::remove(path_);
  // Owner and group that do not exist.
  o.group = "no-such-group-lbctl";
  EXPECT_THROW(ControlServer bad(o), std::runtime_error);
  EXPECT_FALSE(std::filesystem::exists(path_));
  o.group = "0";  // numeric ids need no lookup
  o.owner = "root";
  if (getuid() == 0) {
    EXPECT_NO_THROW(ControlServer ok(o));
  }
}

// -- What clients can do to the log ---------------------------------------------------------

// The log written to a file for the length of a test.
class CapturedLog {
 public:
  explicit CapturedLog(const std::filesystem::path& file, LogLevel level = LogLevel::kInfo)
      : path_(file), saved_(log_level()) {
    fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    set_log_fd(fd_);
    set_log_level(level);
  }
  ~CapturedLog() {
    set_log_fd(-1);
    set_log_level(saved_);
    ::close(fd_);
  }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;
  std::string text() const {
    std::ifstream in(path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    std::istringstream in(text());
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

 private:
  std::filesystem::path path_;
  LogLevel saved_;
  int fd_ = -1;
};

TEST(Log, ControlCharactersAreEscapedSoAnEventIsOneLine) {
  const auto file = std::filesystem::path("/tmp") / ("lbctl_log_" + std::to_string(getpid()));
  {
    CapturedLog captured(file);
    log(LogLevel::kInfo, "name '%s' refused",
        "x\r\n2024-01-01T00:00:00.000Z lb-healthd[1] ERROR forged\x1b[31m\t\x7f");
    const std::vector<std::string> lines = captured.lines();
    ASSERT_EQ(lines.size(), 1u) << captured.text();
    EXPECT_NE(lines[0].find(" INFO name 'x\\r\\n2024-01-01T00:00:00.000Z lb-healthd[1] ERROR "
                            "forged\\x1b[31m\\t\\x7f' refused"),
              std::string::npos)
        << lines[0];
    // UTF-8 and printable text are left alone.
    log(LogLevel::kInfo, "caf\xc3\xa9 ok");
    EXPECT_NE(captured.text().find("caf\xc3\xa9 ok\n"), std::string::npos);
  }
  std::filesystem::remove(file);
  EXPECT_EQ(escape_control("a\nb\x01"), "a\\nb\\x01");
}

TEST(Log, LimiterAllowsABurstThenOneAPeriodAndCountsTheRest) {
  LogLimiter limit(3, Millis(1000));
  const auto t0 = LogLimiter::Clock::now();
  uint64_t held = 0;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limit.allow(7, t0, held));
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(limit.allow(7, t0 + Millis(i), held));
  EXPECT_TRUE(limit.allow(8, t0, held)) << "another key has its own budget";
  EXPECT_TRUE(limit.allow(7, t0 + Millis(1000), held));
  EXPECT_EQ(held, 100u);  // said with the next line let through
  EXPECT_FALSE(limit.allow(7, t0 + Millis(1001), held));
  // A flood that stops: what was held back is handed out once, when the budget is back.
  EXPECT_TRUE(limit.take_quiet(t0 + Millis(1500)).empty());
  const auto quiet = limit.take_quiet(t0 + Millis(2500));
  ASSERT_EQ(quiet.size(), 1u);
  EXPECT_EQ(quiet[0], std::make_pair(uint64_t{7}, uint64_t{1}));
  EXPECT_TRUE(limit.take_quiet(t0 + Millis(9000)).empty());
  EXPECT_EQ(limit.keys(), 0u);  // forgotten once idle
}

TEST_F(ControlServerTest, GarbageFromAClientIsLoggedEscapedAndRateLimited) {
  const auto file = dir_ / "healthd.log";
  std::filesystem::create_directories(dir_);
  CapturedLog captured(file);
  start();
  const int c = connect_client();
  // 300 malformed requests at once, each with a CR and an escape sequence inside the line, one
  // pretending to be a log line of its own.
  std::string flood;
  for (int i = 0; i < 300; ++i)
    flood += "garbage " + std::to_string(i) +
             "\r2024-01-01T00:00:00.000Z lb-healthd[1] ERROR forged\x1b[2J\n";
  send_all(c, flood);
  const std::vector<Json> replies = read_lines(c, 300);
  ASSERT_EQ(replies.size(), 300u);
  for (const Json& r : replies) EXPECT_EQ(r["code"], "malformed");
  ::close(c);
  const std::string text = captured.text();
  EXPECT_EQ(text.find('\r'), std::string::npos) << "a raw CR reached the log";
  EXPECT_EQ(text.find('\x1b'), std::string::npos) << "a raw escape sequence reached the log";
  const std::vector<std::string> lines = captured.lines();
  size_t about_client = 0;
  for (const std::string& l : lines) {
    EXPECT_EQ(l.find(" lb-healthd["), 24u) << "every line starts with a timestamp: " << l;
    if (l.find("malformed request") != std::string::npos) ++about_client;
  }
  // 10 at once, then one a second: the flood is told in a few lines, not 300.
  EXPECT_GE(about_client, 10u) << text;
  EXPECT_LE(about_client, 12u) << text;
  EXPECT_NE(text.find("(pid " + std::to_string(getpid()) + ", uid " + std::to_string(getuid()) +
                      "): malformed request: not JSON"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("garbage 0\\r2024-01-01T00:00:00.000Z lb-healthd[1] ERROR forged\\x1b[2"),
            std::string::npos)
      << text;
  // Once the client has stopped, what was held back is said in one line.
  ASSERT_TRUE(pump_until(
      [&] { return captured.text().find("were held back") != std::string::npos; }, Millis(4000)))
      << captured.text();
}

}  // namespace
}  // namespace lb::health
