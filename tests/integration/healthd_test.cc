// lb-healthd end to end, on 127.0.0.1 only: real lb-backend servers (each on its own port), the
// real lb-healthd binary, and a fake lbd made of lb::shm::Segment (this process) that reads the
// pool updates the way lbd does. Every wait is on a condition with a deadline.
//
// LB_HEALTHD and LB_BACKEND name the binaries (meson sets them).

#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
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
using lb::shm::BackendState;
using std::chrono::milliseconds;

int64_t ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

std::string binary(const char* env) {
  const char* path = std::getenv(env);
  return path ? path : "";
}

// -- Child processes ------------------------------------------------------------------------

class Process {
 public:
  // stdout goes to a pipe we can read (when `capture_stdout`), stderr to `stderr_file` (or ours).
  Process(const std::vector<std::string>& argv, bool capture_stdout,
          const std::string& stderr_file) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    int out[2] = {-1, -1};
    if (capture_stdout) {
      if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
      posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    }
    if (!stderr_file.empty()) {
      posix_spawn_file_actions_addopen(&fa, 2, stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                       0644);
    }
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (capture_stdout) close(out[1]);
    out_ = out[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      wait_exit(milliseconds(5000));
    }
    if (out_ >= 0) close(out_);
  }

  pid_t pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }

  // The exit status (as from waitpid) once the child has ended, nullopt at the deadline.
  std::optional<int> wait_exit(milliseconds limit) {
    if (exited_) return status_;
    const auto deadline = Clock::now() + limit;
    do {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        status_ = status;
        return status;
      }
      std::this_thread::sleep_for(milliseconds(2));
    } while (Clock::now() < deadline);
    return std::nullopt;
  }
  bool running() {
    if (exited_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
    }
    return !exited_;
  }

  // One line of the child's stdout, within the deadline.
  std::optional<std::string> read_line(milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    std::string line;
    while (Clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char c = 0;
      const ssize_t n = ::read(out_, &c, 1);
      if (n <= 0) return std::nullopt;
      if (c == '\n') return line;
      line += c;
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

// One lb-backend on 127.0.0.1, its port chosen by the kernel.
class Backend {
 public:
  explicit Backend(const std::string& name) : name_(name) {
    proc_ = std::make_unique<Process>(
        std::vector<std::string>{binary("LB_BACKEND"), "--name", name, "--listen", "127.0.0.1",
                                 "--port", "0", "--threads", "16"},
        true, "");
    const std::optional<std::string> line = proc_->read_line(milliseconds(5000));
    if (!line || line->rfind("listening on 127.0.0.1:", 0) != 0)
      throw std::runtime_error("lb-backend did not say where it listens: " + line.value_or(""));
    port_ = static_cast<uint16_t>(std::stoi(line->substr(line->rfind(':') + 1)));
  }

  uint16_t port() const { return port_; }
  const std::string& name() const { return name_; }
  Process& process() { return *proc_; }

  // POST /control/<what>; true on 200.
  bool control(const std::string& what) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(2, 0);
    c.set_read_timeout(2, 0);
    const auto res = c.Post(("/control/" + what).c_str(), "", "text/plain");
    return res && res->status == 200;
  }

  ~Backend() {
    if (proc_ && proc_->running()) {
      proc_->signal(SIGTERM);
      const std::optional<int> status = proc_->wait_exit(milliseconds(5000));
      EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << "lb-backend " << name_ << " did not stop cleanly";
    }
  }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  void kill_now() {
    proc_->signal(SIGKILL);
    proc_->wait_exit(milliseconds(5000));
  }

 private:
  std::string name_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> proc_;
};

// -- The fake lbd ---------------------------------------------------------------------------

struct Seen {
  uint64_t generation = 0;
  std::string name;
  uint8_t flags = 0;
  std::vector<lb::shm::BackendEntry> backends;
  Clock::time_point at;

  std::optional<BackendState> state(uint16_t port) const {
    for (const lb::shm::BackendEntry& b : backends) {
      if (b.port == port) return static_cast<BackendState>(b.state);
    }
    return std::nullopt;
  }
};

class FakeLbd {
 public:
  explicit FakeLbd(const std::string& segment) : buf_(64) {
    seg_.emplace(lb::shm::Segment::create(segment));
    seg_->header().lbd_heartbeat_ms.store(1, std::memory_order_relaxed);
  }

  lb::shm::Header& header() { return seg_->header(); }
  uint64_t epoch() const { return seg_->epoch(); }

  // Takes what is on the ring, as lbd does, and acknowledges it.
  size_t poll() {
    size_t total = 0;
    for (int round = 0; round < 64; ++round) {
      const unsigned n = seg_->receive(buf_.data(), static_cast<unsigned>(buf_.size()));
      const auto now = Clock::now();
      for (unsigned i = 0; i < n; ++i) {
        const lb::shm::ServiceUpdate& u = buf_[i];
        Seen s;
        s.generation = u.generation;
        s.name = std::string(u.name, strnlen(u.name, sizeof u.name));
        s.flags = u.flags;
        s.backends.assign(u.backends, u.backends + std::min<uint32_t>(u.backend_count, 256));
        s.at = now;
        if (!history_.empty()) {
          EXPECT_GT(s.generation, history_.back().generation) << "generations must rise";
        }
        history_.push_back(s);
        latest_[s.name] = std::move(s);
        header().received_generation.store(u.generation, std::memory_order_release);
        header().applied_generation.store(u.generation, std::memory_order_release);
      }
      total += n;
      if (n < buf_.size()) break;
    }
    return total;
  }

  bool post(lb::shm::EventType type, uint32_t count, uint16_t port, const std::string& service) {
    lb::shm::Event e{};
    e.type = static_cast<uint32_t>(type);
    e.count = count;
    e.ip = 0x7f000001;
    e.port = port;
    std::strncpy(e.service, service.c_str(), sizeof e.service - 1);
    return seg_->post(e);
  }

  // Polls until `pred` holds or the deadline passes.
  bool wait(milliseconds limit, const std::function<bool()>& pred) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      poll();
      if (pred()) return true;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(milliseconds(2));
    }
  }

  const Seen* latest(const std::string& service) const {
    const auto it = latest_.find(service);
    return it == latest_.end() ? nullptr : &it->second;
  }
  std::optional<BackendState> state(const std::string& service, uint16_t port) const {
    const Seen* s = latest(service);
    return s ? s->state(port) : std::nullopt;
  }
  const std::vector<Seen>& history() const { return history_; }
  void forget() {
    history_.clear();
    latest_.clear();
  }

 private:
  std::optional<lb::shm::Segment> seg_;
  std::vector<lb::shm::ServiceUpdate> buf_;
  std::vector<Seen> history_;
  std::map<std::string, Seen> latest_;
};

// -- Configuration --------------------------------------------------------------------------

struct ServiceSpec {
  std::string name;
  uint16_t vip_port;
  std::vector<uint16_t> backend_ports;
  std::string extra;          // more keys for the service
  std::string health_extra;   // more keys for its health group
  std::string backend_extra;  // more keys for every backend
};

struct HealthTiming {
  int interval_ms = 100;
  int timeout_ms = 50;
  int rise = 2;
  int fall = 3;
};

std::string config_text(const std::vector<ServiceSpec>& services, const HealthTiming& t) {
  std::ostringstream o;
  o << "dataplane: {\n  workers = 1;\n"
       "  ports = ( { name = \"p0\"; device = \"net_null0\"; ip = \"10.0.0.1/24\";"
       " gateway = \"10.0.0.254\"; } );\n};\nservices = (\n";
  for (size_t i = 0; i < services.size(); ++i) {
    const ServiceSpec& s = services[i];
    o << R"(  { name = ")" << s.name << R"("; vip = "10.0.0.100"; port = )" << s.vip_port << ";\n"
      << "    health = { interval_ms = " << t.interval_ms << "; timeout_ms = " << t.timeout_ms
      << "; rise = " << t.rise << "; fall = " << t.fall << "; jitter_pct = 0; " << s.health_extra
      << " };\n    " << s.extra << "\n    backends = (";
    for (size_t j = 0; j < s.backend_ports.size(); ++j) {
      o << (j ? ", " : " ") << "{ address = \"127.0.0.1\"; port = " << s.backend_ports[j] << "; "
        << s.backend_extra << " }";
    }
    o << " ); }" << (i + 1 < services.size() ? "," : "") << "\n";
  }
  o << ");\n";
  return o.str();
}

// -- The fixture ----------------------------------------------------------------------------

class HealthdTest : public testing::Test {
 protected:
  void SetUp() override {
    if (binary("LB_HEALTHD").empty() || binary("LB_BACKEND").empty())
      GTEST_SKIP() << "LB_HEALTHD / LB_BACKEND not set (run through meson test)";
    static std::atomic<int> counter{0};
    instance_ = "it-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    dir_ = std::filesystem::path(testing::TempDir()) / ("lb_healthd_" + instance_);
    std::filesystem::create_directories(dir_);
    config_ = (dir_ / "lbd.cfg").string();
    log_ = (dir_ / "healthd.log").string();
  }

  void TearDown() override {
    if (healthd_ && healthd_->running()) {
      // A clean stop, so that the sanitizers' exit checks run and count.
      healthd_->signal(SIGTERM);
      const std::optional<int> status = healthd_->wait_exit(milliseconds(5000));
      ASSERT_TRUE(status.has_value()) << "lb-healthd did not stop on SIGTERM";
      EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "status " << *status;
    }
    healthd_.reset();
    for (const char* bad : {"AddressSanitizer", "LeakSanitizer", "runtime error:"}) {
      EXPECT_FALSE(log_has(bad)) << bad;
    }
    if (HasFailure()) {
      std::ifstream in(log_);
      std::cerr << "---- lb-healthd log (" << log_ << ") ----\n" << in.rdbuf() << "----\n";
    } else {
      std::filesystem::remove_all(dir_);
    }
  }

  std::string segment() const { return lb::shm::segment_name(instance_); }

  void write_config(const std::string& text) const {
    const std::string tmp = config_ + ".tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, config_);
  }

  // Its runtime directory (instance lock, health file) is the test's own.
  std::unique_ptr<Process> spawn_healthd(const std::string& log,
                                         const std::string& runtime_dir = "") const {
    return std::make_unique<Process>(
        std::vector<std::string>{binary("LB_HEALTHD"), "--config", config_, "--instance", instance_,
                                 "--log-level", "debug", "--runtime-dir",
                                 runtime_dir.empty() ? (dir_ / "run").string() : runtime_dir},
        false, log);
  }
  void start_healthd() { healthd_ = spawn_healthd(log_); }

  std::string log_text() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  bool log_has(const std::string& what) const { return log_text().find(what) != std::string::npos; }
  bool wait_log(milliseconds limit, const std::string& what) const {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      if (log_has(what)) return true;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return log_has(what);
  }

  // Every listed service has reached lbd, with each backend in the wanted state.
  static bool all(const FakeLbd& lbd, const std::vector<std::string>& services,
                  const std::vector<std::pair<uint16_t, BackendState>>& want) {
    for (const std::string& s : services) {
      for (const auto& [port, state] : want) {
        if (lbd.state(s, port) != state) return false;
      }
    }
    return true;
  }

  std::string instance_;
  std::filesystem::path dir_;
  std::string config_;
  std::string log_;
  std::unique_ptr<Process> healthd_;
};

constexpr auto kActive = BackendState::kActive;
constexpr auto kDraining = BackendState::kDraining;
constexpr auto kStopped = BackendState::kStopped;

// A backend whose health path fails goes out after `fall` checks, in about fall x interval, and
// comes back after `rise`; the other backend is never touched.
TEST_F(HealthdTest, FailAndRecoverWithinTheExpectedTime) {
  Backend a("a"), b("b");
  const HealthTiming t;
  write_config(config_text({{"web", 80, {a.port(), b.port()}, "", "", ""}}, t));
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}});
  }));
  // Wait for a passing check, so that the next one is a regular one.
  ASSERT_TRUE(wait_log(milliseconds(3000), "web 127.0.0.1:" + std::to_string(a.port()) + " ok in"));

  ASSERT_TRUE(a.control("health/fail"));
  const auto failed_at = Clock::now();
  ASSERT_TRUE(
      lbd.wait(milliseconds(5000), [&] { return lbd.state("web", a.port()) == kDraining; }));
  const int64_t down_ms = ms_between(failed_at, lbd.latest("web")->at);
  EXPECT_EQ(lbd.state("web", b.port()), kActive);
  // fall checks: the first within one interval, the other fall-1 one (fast) interval apart.
  const int64_t slack = 300;
  EXPECT_LE(down_ms, t.fall * t.interval_ms + t.timeout_ms + slack);
  EXPECT_GE(down_ms, (t.fall - 1) * t.interval_ms - 10);
  EXPECT_TRUE(
      wait_log(milliseconds(1000), "web 127.0.0.1:" + std::to_string(a.port()) +
                                       " DOWN after 3 failures: http status 503 (was UP for"));

  ASSERT_TRUE(a.control("health/ok"));
  const auto fixed_at = Clock::now();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] { return lbd.state("web", a.port()) == kActive; }));
  const int64_t up_ms = ms_between(fixed_at, lbd.latest("web")->at);
  EXPECT_LE(up_ms, t.rise * t.interval_ms + t.timeout_ms + slack);
  EXPECT_GE(up_ms, (t.rise - 1) * t.interval_ms - 10);
  EXPECT_TRUE(wait_log(milliseconds(1000), "web 127.0.0.1:" + std::to_string(a.port()) +
                                               " UP after 2 successes: ok (was DOWN for"));
  // b never left.
  for (const Seen& s : lbd.history()) EXPECT_EQ(s.state(b.port()), kActive);
  std::cout << "[ measured ] down after " << down_ms << " ms, up after " << up_ms << " ms\n";
}

// A hung health path is a timeout; closed connections and a dead server are failures too, each
// logged with its own reason.
TEST_F(HealthdTest, HangCloseAndRefusedAreFailures) {
  Backend a("a"), b("b"), c("c");
  write_config(config_text({{"web", 80, {a.port(), b.port(), c.port()}, "", "", ""}}, {}));
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}, {c.port(), kActive}});
  }));
  ASSERT_TRUE(a.control("hang"));
  ASSERT_TRUE(b.control("close"));
  c.kill_now();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kDraining}, {b.port(), kDraining}, {c.port(), kDraining}});
  }));
  const std::string a_id = "web 127.0.0.1:" + std::to_string(a.port());
  const std::string b_id = "web 127.0.0.1:" + std::to_string(b.port());
  const std::string c_id = "web 127.0.0.1:" + std::to_string(c.port());
  EXPECT_TRUE(wait_log(milliseconds(1000), a_id + " DOWN after 3 failures: timeout"));
  EXPECT_TRUE(
      wait_log(milliseconds(1000), b_id + " DOWN after 3 failures: Empty reply from server"));
  EXPECT_TRUE(wait_log(milliseconds(1000), c_id + " DOWN after 3 failures: connection refused"));
  EXPECT_TRUE(wait_log(milliseconds(1000), "web: no backend is active"));

  ASSERT_TRUE(a.control("unhang"));
  ASSERT_TRUE(b.control("ok"));
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}, {c.port(), kDraining}});
  }));
}

// lb-healthd started before lbd waits (logging once), then pushes every service in full.
TEST_F(HealthdTest, WaitsForLbdThenPushesTheFullState) {
  Backend a("a");
  write_config(
      config_text({{"web", 80, {a.port()}, "", "", ""}, {"api", 81, {a.port()}, "", "", ""}}, {}));
  start_healthd();
  ASSERT_TRUE(wait_log(milliseconds(3000), "waiting for lbd"));
  std::this_thread::sleep_for(milliseconds(400));  // several 100 ms retries
  const std::string text = log_text();
  size_t n = 0;
  for (size_t at = text.find("waiting for lbd"); at != std::string::npos;
       at = text.find("waiting for lbd", at + 1)) {
    ++n;
  }
  EXPECT_EQ(n, 1u) << "the wait is logged once";
  const auto created = Clock::now();
  FakeLbd lbd(segment());
  ASSERT_TRUE(lbd.wait(milliseconds(3000), [&] {
    return all(lbd, {"web", "api"}, {{a.port(), kActive}});
  }));
  EXPECT_LT(ms_between(created, Clock::now()), 1000);
  EXPECT_EQ(lbd.header().healthd_pid.load(), static_cast<uint64_t>(healthd_->pid()));
  // The heartbeat moves.
  const uint64_t beat = lbd.header().healthd_heartbeat_ms.load();
  EXPECT_TRUE(lbd.wait(milliseconds(2000),
                       [&] { return lbd.header().healthd_heartbeat_ms.load() > beat; }));
}

// kill -9 of lb-healthd, then a new one: the full state is pushed again, with generations above
// the old ones.
TEST_F(HealthdTest, KillDashNineAndRestartRepushes) {
  Backend a("a"), b("b");
  write_config(config_text(
      {{"web", 80, {a.port(), b.port()}, "", "", ""}, {"api", 81, {b.port()}, "", "", ""}}, {}));
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}}) &&
           all(lbd, {"api"}, {{b.port(), kActive}});
  }));
  ASSERT_TRUE(a.control("health/fail"));
  ASSERT_TRUE(
      lbd.wait(milliseconds(5000), [&] { return lbd.state("web", a.port()) == kDraining; }));
  const uint64_t before = lbd.history().back().generation;

  healthd_->signal(SIGKILL);
  ASSERT_TRUE(healthd_->wait_exit(milliseconds(5000)));
  lbd.poll();
  lbd.forget();
  start_healthd();
  // A new lb-healthd starts from the health the last one decided (a DOWN), pushes everything,
  // and finds `a` still failing.
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return lbd.latest("web") != nullptr && lbd.latest("api") != nullptr;
  }));
  EXPECT_GT(lbd.history().front().generation, before);
  EXPECT_EQ(lbd.header().healthd_pid.load(), static_cast<uint64_t>(healthd_->pid()));
  ASSERT_TRUE(
      lbd.wait(milliseconds(5000), [&] { return lbd.state("web", a.port()) == kDraining; }));
  EXPECT_EQ(lbd.state("web", b.port()), kActive);
}

// A backend DOWN before lb-healthd restarts (cleanly or killed) stays out of lbd's pool through
// the restart: the new lb-healthd starts from the health the last one decided, not from
// initial_state (up), so lbd never gets it back as active for a fall period.
TEST_F(HealthdTest, RestartKeepsAKnownDownBackendOut) {
  Backend a("a"), b("b");
  write_config(config_text({{"web", 80, {a.port(), b.port()}, "", "", ""}}, {}));
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}});
  }));
  ASSERT_TRUE(a.control("health/fail"));
  ASSERT_TRUE(
      lbd.wait(milliseconds(5000), [&] { return lbd.state("web", a.port()) == kDraining; }));
  for (const int sig : {SIGTERM, SIGKILL}) {
    SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGKILL");
    healthd_->signal(sig);
    ASSERT_TRUE(healthd_->wait_exit(milliseconds(5000)).has_value());
    lbd.poll();
    lbd.forget();
    start_healthd();
    ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] { return lbd.latest("web") != nullptr; }));
    // Longer than a fall period (3 x 100 ms) and the first checks: `a` is never active.
    const auto until = Clock::now() + milliseconds(1000);
    while (Clock::now() < until) {
      lbd.poll();
      std::this_thread::sleep_for(milliseconds(5));
    }
    ASSERT_FALSE(lbd.history().empty());
    for (const Seen& s : lbd.history()) {
      EXPECT_EQ(s.state(a.port()), kDraining) << "generation " << s.generation;
      EXPECT_EQ(s.state(b.port()), kActive) << "generation " << s.generation;
    }
    EXPECT_TRUE(wait_log(milliseconds(1000), "web 127.0.0.1:" + std::to_string(a.port()) +
                                                 " starts DOWN, as last decided"));
  }
}

// One lb-healthd per instance: a second one refuses to start with one line and exit 1, and
// the first keeps running and keeps its pid in the header. An lb-healthd that exits while
// another one's pid is in the header leaves it there.
TEST_F(HealthdTest, SecondLbHealthdForTheInstanceRefusesToStart) {
  Backend a("a");
  write_config(config_text({{"web", 80, {a.port()}, "", "", ""}}, {}));
  FakeLbd lbd(segment());
  start_healthd();
  const auto first_pid = static_cast<uint64_t>(healthd_->pid());
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return lbd.latest("web") != nullptr && lbd.header().healthd_pid.load() == first_pid;
  }));
  const std::string second_log = (dir_ / "second.log").string();
  std::unique_ptr<Process> second = spawn_healthd(second_log);
  const std::optional<int> status = second->wait_exit(milliseconds(5000));
  ASSERT_TRUE(status.has_value()) << "the second lb-healthd did not exit";
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  std::ifstream in(second_log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_NE(text.find("ERROR fatal: another lb-healthd (pid " + std::to_string(first_pid) +
                      ") is running instance " + instance_ + " (it holds "),
            std::string::npos)
      << text;
  EXPECT_TRUE(healthd_->running());
  lbd.poll();
  EXPECT_EQ(lbd.header().healthd_pid.load(), first_pid);

  // Another lb-healthd's pid in the header (one that attached since, however it got past the
  // lock): the first one exiting leaves it there.
  const uint64_t other_pid = first_pid + 1;
  lbd.header().healthd_pid.store(other_pid);
  healthd_->signal(SIGTERM);
  const std::optional<int> first_status = healthd_->wait_exit(milliseconds(5000));
  ASSERT_TRUE(first_status.has_value());
  EXPECT_TRUE(WIFEXITED(*first_status) && WEXITSTATUS(*first_status) == 0);
  EXPECT_EQ(lbd.header().healthd_pid.load(), other_pid)
      << "an exiting lb-healthd cleared another one's pid";
}

// lbd restarts (a new segment, a new epoch): lb-healthd notices on its own and pushes its current
// state, including what it learnt before.
TEST_F(HealthdTest, ResyncsAfterLbdRestart) {
  Backend a("a"), b("b");
  write_config(config_text(
      {{"web", 80, {a.port(), b.port()}, "", "", ""}, {"api", 81, {b.port()}, "", "", ""}}, {}));
  std::optional<FakeLbd> lbd;
  lbd.emplace(segment());
  start_healthd();
  ASSERT_TRUE(lbd->wait(milliseconds(5000), [&] {
    return all(*lbd, {"web"}, {{a.port(), kActive}}) && lbd->latest("api") != nullptr;
  }));
  ASSERT_TRUE(a.control("health/fail"));
  ASSERT_TRUE(
      lbd->wait(milliseconds(5000), [&] { return lbd->state("web", a.port()) == kDraining; }));
  const uint64_t old_epoch = lbd->epoch();

  lbd.reset();  // lbd exits: the segment is unlinked
  std::this_thread::sleep_for(milliseconds(50));
  const auto restarted = Clock::now();
  lbd.emplace(segment());
  EXPECT_NE(lbd->epoch(), old_epoch);
  ASSERT_TRUE(lbd->wait(milliseconds(3000), [&] {
    return lbd->latest("web") != nullptr && lbd->latest("api") != nullptr;
  }));
  EXPECT_LT(ms_between(restarted, Clock::now()), 1000);
  // The state it had, at once: a is still known to be down.
  EXPECT_EQ(lbd->state("web", a.port()), kDraining);
  EXPECT_EQ(lbd->state("web", b.port()), kActive);
  EXPECT_EQ(lbd->header().healthd_pid.load(), static_cast<uint64_t>(healthd_->pid()));
  EXPECT_TRUE(wait_log(milliseconds(1000), "attaching again"));
}

// More services than the ring has slots, and lbd not reading: lb-healthd keeps checking and
// beating; when lbd reads again, the newest state of every service arrives.
TEST_F(HealthdTest, FullRingNeverBlocksAndNewestStateWins) {
  Backend a("a"), b("b");
  std::vector<ServiceSpec> services;
  const size_t n = lb::shm::kUpdateRingSlots + 16;
  for (size_t i = 0; i < n; ++i) {
    services.push_back({"s" + std::to_string(i),
                        static_cast<uint16_t>(1000 + i),
                        {a.port(), b.port()},
                        "",
                        "",
                        ""});
  }
  write_config(config_text(services, {}));
  FakeLbd lbd(segment());
  start_healthd();
  // Not reading: wait until it is attached and the ring has filled up.
  const auto deadline = Clock::now() + milliseconds(5000);
  while (lbd.header().healthd_pid.load() != static_cast<uint64_t>(healthd_->pid()) &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_TRUE(wait_log(milliseconds(3000), "update ring to lbd is full"));

  // Still alive and working while the ring is full: heartbeats and checks go on.
  ASSERT_TRUE(a.control("health/fail"));
  const uint64_t beat = lbd.header().healthd_heartbeat_ms.load();
  ASSERT_TRUE(wait_log(milliseconds(5000), "s0 127.0.0.1:" + std::to_string(a.port()) + " DOWN"));
  ASSERT_TRUE(wait_log(milliseconds(5000), "s" + std::to_string(n - 1) +
                                               " 127.0.0.1:" + std::to_string(a.port()) + " DOWN"));
  EXPECT_GT(lbd.header().healthd_heartbeat_ms.load(), beat);
  EXPECT_TRUE(healthd_->running());

  // Reading again: every service ends with a down, b up.
  std::vector<std::string> names;
  names.reserve(services.size());
  for (const ServiceSpec& s : services) names.push_back(s.name);
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, names, {{a.port(), kDraining}, {b.port(), kActive}});
  }));
  EXPECT_TRUE(wait_log(milliseconds(2000), "update ring has room again"));
  // Coalesced: far fewer updates than services x changes would have been without it is not
  // guaranteed, but no service got more than its first state, the newest state, and what was
  // queued before the change.
  std::map<std::string, int> per_service;
  for (const Seen& s : lbd.history()) ++per_service[s.name];
  for (const auto& [name, count] : per_service) EXPECT_LE(count, 3) << name;
}

// A passive signal from lbd over the threshold takes a backend out at once, though its health
// path answers; checks bring it back after `rise`.
TEST_F(HealthdTest, PassiveSignalsTakeABackendDown) {
  Backend a("a"), b("b");
  HealthTiming t;
  t.interval_ms = 1000;  // slow checks: the flip must come from the signal, not a check
  t.timeout_ms = 200;
  write_config(config_text({{"web",
                             80,
                             {a.port(), b.port()},
                             "",
                             "down_interval_ms = 100; fast_interval_ms = 100;"
                             " passive = { syn_rst = 3; syn_timeout = 2; };",
                             ""}},
                           t));
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}});
  }));
  // Below the threshold: nothing.
  ASSERT_TRUE(lbd.post(lb::shm::EventType::kSynRst, 2, a.port(), "web"));
  std::this_thread::sleep_for(milliseconds(200));
  lbd.poll();
  EXPECT_EQ(lbd.state("web", a.port()), kActive);
  // Reaching it within the interval: out at once.
  ASSERT_TRUE(lbd.post(lb::shm::EventType::kSynRst, 1, a.port(), "web"));
  const auto posted = Clock::now();
  ASSERT_TRUE(
      lbd.wait(milliseconds(2000), [&] { return lbd.state("web", a.port()) == kDraining; }));
  EXPECT_LT(ms_between(posted, lbd.latest("web")->at), 400);
  EXPECT_TRUE(wait_log(milliseconds(1000), "DOWN after 3 SYNs answered with RST within"));
  // Checks pass: back after rise (down/fast interval 100 ms).
  ASSERT_TRUE(lbd.wait(milliseconds(3000), [&] { return lbd.state("web", a.port()) == kActive; }));
  // The other signal.
  ASSERT_TRUE(lbd.post(lb::shm::EventType::kSynTimeout, 2, b.port(), "web"));
  ASSERT_TRUE(
      lbd.wait(milliseconds(2000), [&] { return lbd.state("web", b.port()) == kDraining; }));
  EXPECT_TRUE(wait_log(milliseconds(1000), "DOWN after 2 SYNs unanswered within"));
}

// SIGHUP reloads: admin states and policies apply, a removed service is removed in lbd, and a
// bad file is refused with file:line while everything keeps running.
TEST_F(HealthdTest, ReloadOnSighup) {
  Backend a("a"), b("b");
  write_config(config_text(
      {{"web", 80, {a.port(), b.port()}, "", "", ""}, {"api", 81, {b.port()}, "", "", ""}}, {}));
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}}) &&
           lbd.latest("api") != nullptr;
  }));
  // b drained in web, maint with drop in api; a keeps its health across the reload.
  ASSERT_TRUE(a.control("health/fail"));
  ASSERT_TRUE(
      lbd.wait(milliseconds(5000), [&] { return lbd.state("web", a.port()) == kDraining; }));
  std::string text = config_text({{"web", 80, {a.port(), b.port()}, "", "", ""},
                                  {"api", 81, {b.port()}, "maint = \"drop\";", "", ""}},
                                 {});
  // Per-backend admin state: b in web is drained, b in api is in maint.
  const std::string b_entry = "{ address = \"127.0.0.1\"; port = " + std::to_string(b.port()) + ";";
  const size_t first = text.find(b_entry);
  const size_t second = text.find(b_entry, first + 1);
  ASSERT_NE(second, std::string::npos);
  text.insert(second + b_entry.size(), " state = \"maint\";");
  text.insert(first + b_entry.size(), " state = \"drain\";");
  write_config(text);
  healthd_->signal(SIGHUP);
  ASSERT_TRUE(lbd.wait(milliseconds(3000), [&] {
    return lbd.state("web", b.port()) == kDraining && lbd.state("api", b.port()) == kStopped;
  }));
  EXPECT_EQ(lbd.state("web", a.port()), kDraining);  // still down: health survived the reload
  EXPECT_TRUE(wait_log(milliseconds(1000), "admin state ready -> drain (reload)"));

  // A bad file: refused with file:line, nothing changes, still running.
  write_config(text + "services_typo = 1;\n");
  const size_t seen = lbd.history().size();
  healthd_->signal(SIGHUP);
  ASSERT_TRUE(wait_log(milliseconds(3000),
                       "reload failed, keeping the running configuration: " + config_ + ":"));
  EXPECT_TRUE(log_has("services_typo: unknown setting 'services_typo'"));
  std::this_thread::sleep_for(milliseconds(300));
  lbd.poll();
  EXPECT_EQ(lbd.history().size(), seen);
  EXPECT_TRUE(healthd_->running());

  // Drop a service: it drains first (its backends draining, its VIP kept), and lbd is told to
  // remove it once lbd has no flow on it, or after healthd.drain_timeout_ms. This fake lbd has no
  // telemetry to count flows: lb-healthd says so and removes the service at the timeout.
  write_config(config_text({{"web", 80, {a.port(), b.port()}, "", "", ""}}, {}) +
               "healthd = { drain_timeout_ms = 1500; };\n");
  const auto dropped = std::chrono::steady_clock::now();
  healthd_->signal(SIGHUP);
  ASSERT_TRUE(wait_log(milliseconds(3000), "service api removed (reload): it drains"));
  ASSERT_TRUE(lbd.wait(milliseconds(3000), [&] {
    const Seen* s = lbd.latest("api");
    return s && (s->flags & lb::shm::kServiceRemoved) != 0;
  }));
  EXPECT_GE(std::chrono::steady_clock::now() - dropped, milliseconds(1400)) << "not drained";
  EXPECT_TRUE(log_has("cannot count the flows of draining backends"));
  // b is back to ready in web.
  ASSERT_TRUE(lbd.wait(milliseconds(3000), [&] { return lbd.state("web", b.port()) == kActive; }));
}

// on_all_down: fail_closed sends the empty pool as is; fail_open sends every non-maint backend as
// active and says so loudly.
TEST_F(HealthdTest, FailOpenAndFailClosed) {
  Backend a("a"), b("b"), c("c");
  std::string text = config_text(
      {{"open", 80, {a.port(), b.port(), c.port()}, "on_all_down = \"fail_open\";", "", ""},
       {"closed", 81, {a.port(), b.port()}, "", "", ""}},
      {});
  const std::string c_entry = "{ address = \"127.0.0.1\"; port = " + std::to_string(c.port()) + ";";
  text.insert(text.find(c_entry) + c_entry.size(), " state = \"maint\";");
  write_config(text);
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"open", "closed"}, {{a.port(), kActive}, {b.port(), kActive}}) &&
           lbd.state("open", c.port()) == kDraining;
  }));
  ASSERT_TRUE(a.control("health/fail"));
  ASSERT_TRUE(b.control("health/fail"));
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"closed"}, {{a.port(), kDraining}, {b.port(), kDraining}});
  }));
  ASSERT_TRUE(lbd.wait(milliseconds(2000), [&] {
    return all(lbd, {"open"}, {{a.port(), kActive}, {b.port(), kActive}, {c.port(), kDraining}});
  }));
  EXPECT_TRUE(wait_log(milliseconds(1000),
                       "WARNING open: no backend is active: on_all_down = fail_open sends all 2 "
                       "non-maint backend(s) as active (panic mode)"));
  EXPECT_TRUE(wait_log(milliseconds(1000), "WARNING closed: no backend is active: lbd applies"));

  ASSERT_TRUE(a.control("health/ok"));
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"open", "closed"}, {{a.port(), kActive}, {b.port(), kDraining}});
  }));
  EXPECT_TRUE(wait_log(milliseconds(1000), "open: fail_open (panic mode) ended"));
}

// Configured initial state down, a healthy backend: out until `rise` checks pass. SIGTERM then
// ends the daemon cleanly and it says so in the header.
TEST_F(HealthdTest, InitialStateDownAndCleanExit) {
  Backend a("a"), b("b");
  HealthTiming t;
  t.rise = 3;
  write_config(
      config_text({{"web", 80, {a.port(), b.port()}, "", "initial_state = \"down\";", ""}}, t));
  FakeLbd lbd(segment());
  start_healthd();
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] { return lbd.latest("web") != nullptr; }));
  EXPECT_EQ(lbd.history().front().state(a.port()), kDraining);
  EXPECT_EQ(lbd.history().front().state(b.port()), kDraining);
  ASSERT_TRUE(lbd.wait(milliseconds(5000), [&] {
    return all(lbd, {"web"}, {{a.port(), kActive}, {b.port(), kActive}});
  }));
  EXPECT_TRUE(wait_log(milliseconds(1000), "UP after 3 successes: ok"));

  healthd_->signal(SIGUSR1);
  EXPECT_TRUE(wait_log(milliseconds(2000), "service web: 2/2 active"));
  healthd_->signal(SIGTERM);
  const std::optional<int> status = healthd_->wait_exit(milliseconds(3000));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  EXPECT_EQ(lbd.header().healthd_pid.load(), 0u);
  EXPECT_TRUE(log_has("stopped"));
}

// A bad file at start: exit 1 with file:line on stderr, nothing started.
TEST_F(HealthdTest, RefusesABadFileAtStart) {
  write_config("dataplane: { workers = 1; };\n");
  start_healthd();
  const std::optional<int> status = healthd_->wait_exit(milliseconds(3000));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  EXPECT_TRUE(log_has(config_ + ":1: dataplane.ports: missing required setting 'ports'"))
      << log_text();
}

}  // namespace
