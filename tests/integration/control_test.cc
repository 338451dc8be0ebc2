// lbctl and lb-healthd's control socket, end to end on 127.0.0.1: the real lb-healthd and lbctl
// binaries, real lb-backend servers, and a fake lbd (lb::shm::Segment in this process) that
// applies, ignores or refuses updates on demand. Every subcommand that needs no dataplane, its
// exit status and its one-line errors; hostile clients on the socket; restarts that keep
// runtime changes. (tests/lbctl/lbctl_e2e.sh does the rest with a real lbd and traffic.)
//
// LB_HEALTHD, LB_BACKEND and LBCTL name the binaries (meson sets them).

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "channel.h"
#include "shm_abi.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using std::chrono::milliseconds;

std::string binary(const char* env) {
  const char* path = std::getenv(env);
  return path ? path : "";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A child process; stdout and stderr to files.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& out, const std::string& err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      wait_exit(milliseconds(5000));
    }
  }
  void signal(int sig) const { ::kill(pid_, sig); }
  pid_t pid() const { return pid_; }
  bool running() {
    poll_exit();
    return !exited_;
  }
  std::optional<int> wait_exit(milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (!poll_exit() && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(2));
    return exited_ ? std::optional<int>(status_) : std::nullopt;
  }
  bool poll_exit() {
    if (exited_) return true;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      exited_ = true;
      status_ = st;
    }
    return exited_;
  }
  int status() const { return status_; }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

// The fake lbd: reads the update ring like lbd, and acknowledges, ignores or refuses.
class FakeLbd {
 public:
  enum class Mode { kApply, kIgnore, kRefuse };
  explicit FakeLbd(const std::string& segment) : buf_(64) {
    seg_.emplace(lb::shm::Segment::create(segment));
  }
  void poll() {
    for (int round = 0; round < 16; ++round) {
      const unsigned n = seg_->receive(buf_.data(), 64);
      for (unsigned i = 0; i < n; ++i) {
        const lb::shm::ServiceUpdate& u = buf_[i];
        lb::shm::Header& h = seg_->header();
        ++messages;
        h.received_generation.store(u.generation);
        if (mode == Mode::kRefuse) {
          h.rejected_generation.store(u.generation);
          h.applied_generation.store(u.generation);  // lbd moves on past a refused update
          continue;
        }
        latest[std::string(u.name, strnlen(u.name, sizeof u.name))] = u;
      }
      if (n < 64) break;
    }
    if (mode == Mode::kApply)
      seg_->header().applied_generation.store(seg_->header().received_generation.load());
  }
  bool wait(milliseconds limit, const std::function<bool()>& pred) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      poll();
      if (pred()) return true;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(milliseconds(2));
    }
  }
  std::vector<uint16_t> ports(const std::string& service) const {
    std::vector<uint16_t> out;
    const auto it = latest.find(service);
    if (it == latest.end() || (it->second.flags & lb::shm::kServiceRemoved) != 0) return out;
    for (uint32_t i = 0; i < it->second.backend_count; ++i)
      out.push_back(it->second.backends[i].port);
    return out;
  }
  Mode mode = Mode::kApply;
  std::map<std::string, lb::shm::ServiceUpdate> latest;
  uint64_t messages = 0;  // taken off the ring

 private:
  std::optional<lb::shm::Segment> seg_;
  std::vector<lb::shm::ServiceUpdate> buf_;
};

struct Result {
  int code = -1;  // exit status; -1: did not end in time
  std::string out;
  std::string err;
};

class ControlTest : public testing::Test {
 protected:
  void SetUp() override {
    if (binary("LB_HEALTHD").empty() || binary("LB_BACKEND").empty() || binary("LBCTL").empty())
      GTEST_SKIP() << "LB_HEALTHD / LB_BACKEND / LBCTL not set (run through meson test)";
    static std::atomic<int> counter{0};
    instance_ = "ctl-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    dir_ = std::filesystem::path("/tmp") / ("lbctl_it_" + instance_);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_ = (dir_ / "lbd.cfg").string();
    socket_ = (dir_ / "run" / "ctl.sock").string();
    log_ = (dir_ / "healthd.log").string();
    lbd_ = std::make_unique<FakeLbd>(lb::shm::segment_name(instance_));
    for (int i = 0; i < 2; ++i) start_backend(i);
  }

  void TearDown() override {
    if (healthd_ && healthd_->running()) {
      healthd_->signal(SIGTERM);
      const std::optional<int> st = healthd_->wait_exit(milliseconds(5000));
      EXPECT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0)
          << "lb-healthd did not stop cleanly";
    }
    healthd_.reset();
    for (auto& b : backends_) {
      b->signal(SIGTERM);
      b->wait_exit(milliseconds(5000));
    }
    backends_.clear();
    const std::string log = read_file(log_);
    for (const char* bad : {"AddressSanitizer", "runtime error:"})
      EXPECT_EQ(log.find(bad), std::string::npos) << bad;
    if (HasFailure()) {
      std::cerr << "---- lb-healthd log ----\n" << log << "----\n";
    } else {
      std::filesystem::remove_all(dir_);
    }
  }

  void start_backend(int i) {
    const std::string out = (dir_ / ("b" + std::to_string(i) + ".out")).string();
    backends_.push_back(std::make_unique<Process>(
        std::vector<std::string>{binary("LB_BACKEND"), "--name", "b" + std::to_string(i),
                                 "--listen", "127.0.0.1", "--port", "0"},
        out, (dir_ / "backends.err").string()));
    const auto deadline = Clock::now() + milliseconds(5000);
    while (Clock::now() < deadline) {
      const std::string text = read_file(out);
      const size_t at = text.find("listening on 127.0.0.1:");
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        ports_.push_back(static_cast<uint16_t>(std::stoi(text.substr(at + 23))));
        return;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    throw std::runtime_error("lb-backend did not start");
  }

  std::string config_text(int weight = 1, const std::string& extra = "") const {
    return "instance = \"" + instance_ +
           "\";\n"
           "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"net_null0\"; "
           "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
           "services = (\n"
           "  { name = \"web\"; vip = \"10.0.0.100\"; port = 80;\n"
           "    health = { interval_ms = 100; timeout_ms = 50; };\n"
           "    backends = ( { address = \"127.0.0.1\"; port = " +
           std::to_string(ports_[0]) + "; weight = " + std::to_string(weight) + "; } ); }\n" +
           extra + ");\nhealthd = { control_socket = \"" + socket_ +
           "\"; socket_mode = \"0600\"; control_timeout_ms = 300; };\n";
  }

  void write_config(const std::string& text) const {
    std::ofstream(config_ + ".tmp") << text;
    std::filesystem::rename(config_ + ".tmp", config_);
  }

  void start_healthd() {
    healthd_ = std::make_unique<Process>(
        std::vector<std::string>{binary("LB_HEALTHD"), "--config", config_}, "/dev/null", log_);
    const auto deadline = Clock::now() + milliseconds(5000);
    while (Clock::now() < deadline && !std::filesystem::exists(socket_)) {
      ASSERT_TRUE(healthd_->running()) << read_file(log_);
      std::this_thread::sleep_for(milliseconds(5));
    }
    ASSERT_TRUE(lbd_->wait(milliseconds(5000), [&] { return lbd_->latest.count("web") == 1; }));
  }

  // Runs lbctl -c CONFIG ARGS while the fake lbd keeps reading its ring.
  Result lbctl(const std::vector<std::string>& args, milliseconds limit = milliseconds(20000),
               const std::string& config = "") {
    std::vector<std::string> argv = {binary("LBCTL"), "-c", config.empty() ? config_ : config};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string out = (dir_ / "lbctl.out").string();
    const std::string err = (dir_ / "lbctl.err").string();
    std::filesystem::remove(err);
    Result r;
    {
      Process p(argv, out, err);
      const auto deadline = Clock::now() + limit;
      while (!p.poll_exit() && Clock::now() < deadline) {
        lbd_->poll();
        std::this_thread::sleep_for(milliseconds(1));
      }
      if (p.poll_exit() && WIFEXITED(p.status())) r.code = WEXITSTATUS(p.status());
    }
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
  }

  Json status() {
    const Result r = lbctl({"--json", "status"});
    EXPECT_EQ(r.code, 0) << r.err;
    return Json::parse(r.out);
  }

  // One raw connection to the control socket.
  int connect_raw() const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, socket_.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    return fd;
  }

  // Reads until a newline or end of file (bounded); what came.
  static std::string read_reply(int fd, milliseconds limit, bool* eof = nullptr) {
    std::string got;
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        if (eof) *eof = true;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
      if (got.find('\n') != std::string::npos && !eof) break;
    }
    return got;
  }

  std::string instance_;
  std::filesystem::path dir_;
  std::string config_;
  std::string socket_;
  std::string log_;
  std::unique_ptr<FakeLbd> lbd_;
  std::vector<std::unique_ptr<Process>> backends_;
  std::vector<uint16_t> ports_;
  std::unique_ptr<Process> healthd_;
};

// The one line of an error, without the trailing newline.
std::string one_line(const std::string& err) {
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  return err.substr(0, err.find('\n'));
}

TEST_F(ControlTest, EverySubcommandAndItsExitStatus) {
  write_config(config_text());
  start_healthd();
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string b0 = "127.0.0.1:" + std::to_string(ports_[0]);
  const std::string b1 = "127.0.0.1:" + std::to_string(ports_[1]);

  Result r = lbctl({"status"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("TCP  10.0.0.100:80 rr (web, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  -> " + b0), std::string::npos) << r.out;
  // No lbd telemetry here (the fake has none): said plainly, not an error.
  EXPECT_NE(r.out.find("flow counters: unavailable: cannot connect to lbd's telemetry"),
            std::string::npos)
      << r.out;

  r = lbctl({"--wait", "backend", "add", "web", b1, "--weight", "2"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("service web: backend " + b1 + " added (weight 2, ready)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("applied by lbd: generation"), std::string::npos) << r.out;
  EXPECT_EQ(lbd_->ports("web"), (std::vector<uint16_t>{ports_[0], ports_[1]}));

  r = lbctl({"backend", "set", "web", b1, "--state", "drain", "--wait"});  // --wait after: fine
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lbd_->latest["web"].backends[1].state,
            static_cast<uint8_t>(lb::shm::BackendState::kDraining));
  Json s = status();
  EXPECT_EQ(s["services"][0]["backends"][1]["admin"], "drain");
  EXPECT_EQ(s["services"][0]["backends"][1]["weight"], 2);
  EXPECT_EQ(s["lbd_counters"]["available"], false);

  // Refused: exit 1, one line on stderr saying why; usage: exit 2.
  r = lbctl({"backend", "set", "web", b1, "--weight", "70000"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(one_line(r.err), "lbctl: service 'web' backend " + b1 +
                                 ": weight: value 70000 is out of range 0..65535");
  r = lbctl({"backend", "add", "web", "10.0.0.300:80"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(one_line(r.err).find("malformed IPv4 address '10.0.0.300'"), std::string::npos);
  r = lbctl({"backend", "add", "nope", b0});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(one_line(r.err), "lbctl: unknown service 'nope' (services: web)");
  r = lbctl({"status", "nope"});  // the same words as lb-healthd's
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(one_line(r.err), "lbctl: unknown service 'nope' (services: web)");
  r = lbctl({"backend", "set", "web", "127.0.0.1:1", "--weight", "3"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(one_line(r.err).find("service 'web' has no backend 127.0.0.1:1"), std::string::npos);
  r = lbctl({"backend", "add", "web", b0});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(one_line(r.err).find("already has backend"), std::string::npos);
  for (const std::vector<std::string>& usage :
       {std::vector<std::string>{"backend", "add", "web", "127.0.0.1"},
        {"backend", "set", "web", b1, "--state", "bogus"},
        {"backend", "set", "web", b1, "--weight", "many"},
        {"backend", "set", "web", b1},
        {"frobnicate"},
        {}}) {
    r = lbctl(usage);
    EXPECT_EQ(r.code, 2) << testing::PrintToString(usage) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }

  // remove drains first, which needs lbd's flow counters: without them it refuses, untouched.
  r = lbctl({"backend", "remove", "web", b1});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(one_line(r.err).find("cannot watch the backend drain"), std::string::npos);
  EXPECT_NE(r.err.find("--now"), std::string::npos);
  r = lbctl({"--wait", "backend", "remove", "web", b1, "--now"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lbd_->ports("web"), std::vector<uint16_t>{ports_[0]});

  // Services.
  r = lbctl({"--wait", "service", "add", "api", "10.0.0.101:443", "--backend", b1, "--scheduler",
             "lc", "--interval", "200", "--health-timeout", "100"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lbd_->ports("api"), std::vector<uint16_t>{ports_[1]});
  EXPECT_EQ(lbd_->latest["api"].vip, 0x0a000065u);
  r = lbctl({"--wait", "service", "set", "api", "--vip", "10.0.0.102:8443", "--rise", "1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lbd_->latest["api"].vip, 0x0a000066u);
  EXPECT_EQ(lbd_->latest["api"].port, 8443);
  r = lbctl({"service", "add", "dup", "10.0.0.102:8443"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(one_line(r.err),
            "lbctl: service 'dup': vip: 10.0.0.102:8443 is already used by service 'api'");
  r = lbctl({"service", "set", "api", "--health-timeout", "999"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(one_line(r.err).find("timeout_ms 999 exceeds interval_ms 200"), std::string::npos);
  r = lbctl({"config", "diff"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("service api added (10.0.0.102:8443, 1 backend(s))"), std::string::npos)
      << r.out;
  r = lbctl({"--wait", "service", "remove", "api"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(lbd_->ports("api").empty());
  r = lbctl({"service", "remove", "api"});
  EXPECT_EQ(r.code, 1);

  // config check: the daemons' validation.
  const std::string broken = (dir_ / "broken.cfg").string();
  std::ofstream(broken) << config_text(70000);
  r = lbctl({"config", "check", broken});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(one_line(r.err), "lbctl: " + broken +
                                 ":6: services.[0].backends.[0].weight: value 70000 is out of "
                                 "range 0..65535");
  r = lbctl({"config", "check", config_});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(": OK (1 service(s), 1 backend(s))"), std::string::npos);

  // config reload re-reads lb-healthd's own file: given another one with -c, it is refused (it
  // answered "no change", exit 0, the other file's content not applied).
  const std::string other = (dir_ / "other.cfg").string();
  std::ofstream(other) << config_text(7);
  r = lbctl({"config", "reload"}, milliseconds(20000), other);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(one_line(r.err), "lbctl: lb-healthd reloads its own file, " + config_ + ", not " +
                                 other +
                                 " (-c only says where the sockets are): copy it over that "
                                 "file, or leave -c out");
  EXPECT_EQ(status()["services"][0]["backends"][0]["weight"], 1);
  // The same file under another name is the same file.
  const std::string alias = (dir_ / "alias.cfg").string();
  std::filesystem::create_symlink(config_, alias);
  r = lbctl({"config", "reload"}, milliseconds(20000), alias);
  EXPECT_EQ(r.code, 0) << r.err;

  // config save -o: a valid file of the running state.
  const std::string saved = (dir_ / "saved.cfg").string();
  r = lbctl({"config", "save", "-o", saved});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lbctl({"config", "check", saved}).code, 0);
  // ... written through a symlink, which stays (it used to be replaced by a regular file).
  const std::string link = (dir_ / "link.cfg").string();
  const std::string target = (dir_ / "target.cfg").string();
  std::ofstream(target) << "old\n";
  std::filesystem::create_symlink("target.cfg", link);
  r = lbctl({"config", "save", "-o", link});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_EQ(read_file(target), read_file(saved));
  // --json: a JSON answer (there was no output at all).
  r = lbctl({"--json", "config", "save", "-o", saved});
  EXPECT_EQ(r.code, 0) << r.err;
  const Json j = Json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON: '" << r.out << "'";
  EXPECT_EQ(j.value("ok", false), true) << r.out;
  EXPECT_EQ(j.value("path", std::string()), saved) << r.out;
}

// Issue 17: `service add` / `service remove` 200 times (each removal used to be resent on every
// push, into a 64-slot ring, ahead of every service update), then a weight change: it still
// reaches lbd at once, and each change costs one message on the ring.
TEST_F(ControlTest, ManyServiceCyclesDoNotStarveLaterChanges) {
  write_config(config_text());
  start_healthd();
  const uint64_t m0 = lbd_->messages;
  constexpr int kCycles = 200;
  const auto t0 = Clock::now();
  for (int i = 0; i < kCycles; ++i) {
    const std::string name = "t" + std::to_string(i);
    Result r = lbctl({"service", "add", name, "10.0.0.210:" + std::to_string(2000 + i)});
    ASSERT_EQ(r.code, 0) << r.err;
    r = lbctl({"service", "remove", name});
    ASSERT_EQ(r.code, 0) << r.err;
  }
  const auto churn_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
  const std::string b0 = "127.0.0.1:" + std::to_string(ports_[0]);
  const auto t1 = Clock::now();
  const Result r =
      lbctl({"--wait", "--timeout", "3", "backend", "set", "web", b0, "--weight", "2"});
  const auto wait_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t1).count();
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lbd_->latest["web"].backends[0].weight, 2);
  const uint64_t messages = lbd_->messages - m0;
  std::cout << "[ measured ] " << kCycles << " service add/remove cycles in " << churn_ms
            << " ms; then `lbctl --wait backend set --weight` took " << wait_ms << " ms; "
            << messages << " ring messages for " << 2 * kCycles + 1 << " changes\n";
  EXPECT_LE(messages, 2u * kCycles + 1);
  for (int i = 0; i < kCycles; ++i) EXPECT_TRUE(lbd_->ports("t" + std::to_string(i)).empty());
  // A service added now is served.
  const std::string b1 = "127.0.0.1:" + std::to_string(ports_[1]);
  const Result add = lbctl(
      {"--wait", "--timeout", "3", "service", "add", "late", "10.0.0.211:80", "--backend", b1});
  EXPECT_EQ(add.code, 0) << add.err;
  EXPECT_EQ(lbd_->ports("late"), std::vector<uint16_t>{ports_[1]});
}

TEST_F(ControlTest, ReloadGoodAndBrokenFiles) {
  write_config(config_text());
  start_healthd();
  const std::string b1 = "127.0.0.1:" + std::to_string(ports_[1]);
  ASSERT_EQ(lbctl({"backend", "add", "web", b1}).code, 0);
  // A good file: its change applied, the runtime change kept.
  write_config(config_text(5));
  Result r = lbctl({"--wait", "config", "reload"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("weight 1 -> 5"), std::string::npos) << r.out;
  ASSERT_TRUE(lbd_->wait(milliseconds(2000), [&] {
    return lbd_->latest["web"].backends[0].weight == 5 && lbd_->ports("web").size() == 2;
  }));
  // Broken files: exit 1, file:line, nothing changes.
  const std::string before = lbctl({"config", "save", "-o", "-"}).out;
  ASSERT_NE(before.find("weight = 5;"), std::string::npos) << before;
  write_config(config_text(5) + "services = ();\n");  // a duplicate setting
  r = lbctl({"config", "reload"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(one_line(r.err).rfind("lbctl: " + config_ + ":9: ", 0), 0u) << r.err;
  write_config(config_text(5).replace(config_text(5).find("weight = 5"), 10, "weight = \"5\""));
  r = lbctl({"config", "reload"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(one_line(r.err), "lbctl: " + config_ +
                                 ":6: services.[0].backends.[0].weight: expected an integer, "
                                 "found a string");
  EXPECT_EQ(lbctl({"config", "save", "-o", "-"}).out, before);
  // SIGHUP does the same as `config reload`.
  write_config(config_text(7));
  healthd_->signal(SIGHUP);
  ASSERT_TRUE(lbd_->wait(milliseconds(3000), [&] {
    return lbd_->latest["web"].backends[0].weight == 7 && lbd_->ports("web").size() == 2;
  }));
  // --replace drops the runtime change: the backend drains (this fake lbd has no telemetry to
  // count its flows, so it would stay draining until healthd.drain_timeout_ms)...
  r = lbctl({"--wait", "config", "reload", "--replace"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("service web: backend " + b1 + " drains"), std::string::npos) << r.out;
  ASSERT_EQ(lbd_->ports("web"), (std::vector<uint16_t>{ports_[0], ports_[1]}));
  EXPECT_EQ(lbd_->latest["web"].backends[1].state,
            static_cast<uint8_t>(lb::shm::BackendState::kDraining));
  // ... --now removes at once (b1 added back first: a backend that drains is a backend again).
  ASSERT_EQ(lbctl({"backend", "add", "web", b1}).code, 0);
  r = lbctl({"--wait", "config", "reload", "--replace", "--now"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lbd_->ports("web"), std::vector<uint16_t>{ports_[0]});
  // A drain timeout under a millisecond is a short drain, not --now (it was rounded to 0 ms,
  // which removes at once and resets the connections).
  ASSERT_EQ(lbctl({"backend", "add", "web", b1}).code, 0);
  r = lbctl({"config", "reload", "--replace", "--drain-timeout", "0.0004"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("service web: backend " + b1 + " drains"), std::string::npos) << r.out;
}

TEST_F(ControlTest, RestartKeepsRuntimeChanges) {
  write_config(config_text());
  start_healthd();
  const std::string b1 = "127.0.0.1:" + std::to_string(ports_[1]);
  ASSERT_EQ(lbctl({"backend", "add", "web", b1, "--weight", "4", "--state", "maint"}).code, 0);
  ASSERT_EQ(
      lbctl({"backend", "set", "web", "127.0.0.1:" + std::to_string(ports_[0]), "--weight", "9"})
          .code,
      0);
  const Json running = status()["services"][0]["backends"];
  for (const int sig : {SIGTERM, SIGKILL}) {
    SCOPED_TRACE(sig);
    healthd_->signal(sig);
    ASSERT_TRUE(healthd_->wait_exit(milliseconds(5000)).has_value());
    lbd_->latest.clear();
    start_healthd();
    const Json now = status()["services"][0]["backends"];
    ASSERT_EQ(now.size(), 2u);
    EXPECT_EQ(now[0]["weight"], 9);
    EXPECT_EQ(now[1]["address"], "127.0.0.1");
    EXPECT_EQ(now[1]["port"], ports_[1]);
    EXPECT_EQ(now[1]["weight"], 4);
    EXPECT_EQ(now[1]["admin"], "maint");
    ASSERT_TRUE(lbd_->wait(milliseconds(2000), [&] { return lbd_->ports("web").size() == 2; }));
  }
  // config save makes them the file's; nothing is a runtime change any more.
  Result r = lbctl({"config", "save"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(config_ + ".bak"));
  r = lbctl({"config", "diff"});
  EXPECT_NE(r.out.find("no runtime changes"), std::string::npos) << r.out;
  r = lbctl({"config", "check", config_});
  EXPECT_NE(r.out.find("(1 service(s), 2 backend(s))"), std::string::npos) << r.out;
}

TEST_F(ControlTest, WaitReportsLbdThatDoesNotApplyOrRefuses) {
  write_config(config_text());
  start_healthd();
  const std::string b0 = "127.0.0.1:" + std::to_string(ports_[0]);
  lbd_->mode = FakeLbd::Mode::kIgnore;
  const auto t0 = Clock::now();
  Result r = lbctl({"--wait", "--timeout", "0.5", "backend", "set", "web", b0, "--weight", "3"});
  const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(one_line(r.err).find("lbd did not apply the change within"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("lb-healthd has made and kept the change"), std::string::npos);
  EXPECT_GE(took, 450);
  EXPECT_LT(took, 5000);
  lbd_->mode = FakeLbd::Mode::kRefuse;
  r = lbctl({"--wait", "backend", "set", "web", b0, "--weight", "4"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(one_line(r.err).find("lbd refused update"), std::string::npos) << r.err;
  lbd_->mode = FakeLbd::Mode::kApply;
  r = lbctl({"--wait", "backend", "set", "web", b0, "--weight", "5"});
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST_F(ControlTest, HostileClientsAreRefusedAndTheDaemonCarriesOn) {
  write_config(config_text());
  start_healthd();
  // Garbage.
  int fd = connect_raw();
  ASSERT_EQ(::send(fd, "\x01\x02garbage\n", 10, MSG_NOSIGNAL), 10);
  Json r = Json::parse(read_reply(fd, milliseconds(3000)));
  EXPECT_EQ(r["code"], "malformed");
  ASSERT_EQ(::send(fd, "{\"cmd\":\"ping\"}\n", 15, MSG_NOSIGNAL), 15);
  EXPECT_EQ(Json::parse(read_reply(fd, milliseconds(3000)))["ok"], true);
  ::close(fd);
  // 10 MB in one request.
  fd = connect_raw();
  std::atomic<bool> done{false};
  std::thread writer([&] {
    const std::string chunk(1 << 20, '{');
    for (int i = 0; i < 10; ++i) {
      if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;
    }
    done = true;
  });
  bool eof = false;
  const std::string got = read_reply(fd, milliseconds(10000), &eof);
  writer.join();
  EXPECT_TRUE(eof);
  ASSERT_NE(got.find('\n'), std::string::npos) << got.substr(0, 200);
  r = Json::parse(got.substr(0, got.find('\n')));
  EXPECT_EQ(r["code"], "too_large");
  ::close(fd);
  // A client that connects and says nothing: told, then disconnected (control_timeout_ms 300).
  fd = connect_raw();
  const auto t0 = Clock::now();
  eof = false;
  const std::string idle = read_reply(fd, milliseconds(5000), &eof);
  EXPECT_TRUE(eof);
  EXPECT_NE(idle.find("\"code\":\"idle\""), std::string::npos) << idle;
  EXPECT_GE(std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count(), 250);
  ::close(fd);
  // Many at once, each sending half a request and leaving.
  for (int i = 0; i < 100; ++i) {
    const int c = connect_raw();
    ::send(c, "{\"cmd\":", 7, MSG_NOSIGNAL);
    ::close(c);
  }
  // Still alive, still answering, still checking.
  EXPECT_TRUE(healthd_->running());
  const Result st = lbctl({"status"});
  EXPECT_EQ(st.code, 0) << st.err;
  const std::string log = read_file(log_);
  EXPECT_NE(log.find("more than 131072 bytes without a newline"), std::string::npos);
}

// VmRSS of a process in KiB (0 when it cannot be read).
long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

TEST_F(ControlTest, FiveHundredIdleClientsDoNotLockLbctlOut) {
  // Idle clients are not timed out during the test (10 s): only making room lets lbctl in.
  std::string text = config_text();
  const std::string short_timeout = "control_timeout_ms = 300;";
  text.replace(text.find(short_timeout), short_timeout.size(), "control_timeout_ms = 10000;");
  write_config(text);
  start_healthd();
  ASSERT_EQ(status()["ok"], true);
  const long rss_before = rss_kib(healthd_->pid());
  // A line that never ends (100 KB, no newline, the connection kept open) and 500 clients that
  // connect and say nothing, all held open.
  std::vector<int> fds;
  const int endless = connect_raw();
  const std::string part(100000, 'x');
  ASSERT_EQ(::send(endless, part.data(), part.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(part.size()));
  fds.push_back(endless);
  for (int i = 0; i < 500; ++i) fds.push_back(connect_raw());
  std::this_thread::sleep_for(milliseconds(200));
  for (int i = 0; i < 3; ++i) {
    const auto t0 = Clock::now();
    const Result r = lbctl({"status"}, milliseconds(5000));
    const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_LT(took, 1000) << "lbctl status took " << took << " ms";
    std::cout << "lbctl status with 500 idle clients: " << took << " ms, exit " << r.code << "\n";
  }
  const long rss_after = rss_kib(healthd_->pid());
  std::cout << "lb-healthd VmRSS " << rss_before << " KiB before, " << rss_after << " KiB after\n";
  // 64 connections of at most 128 KiB buffered each: 8 MiB, plus the allocator's slack.
  EXPECT_LT(rss_after - rss_before, 16 * 1024);
  for (const int fd : fds) ::close(fd);
  EXPECT_TRUE(healthd_->running());
  EXPECT_NE(read_file(log_).find("evicted"), std::string::npos);
}

}  // namespace
