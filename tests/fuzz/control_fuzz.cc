// Fuzz target: lb-healthd's control socket. The input is what a client sends (JSON lines, or
// anything else), written to a real ControlServer whose requests are answered by
// handle_request against an in-process Daemon, as lb-healthd's loop does; the loop itself is not
// turned, so no health check ever reaches an address a request names. Every reply must be one
// JSON object per line with a boolean "ok", and a refusal must carry a "code" and an "error" for
// the user; "internal" (an exception that escaped a handler) counts as a crash. Each input gets
// a fresh Daemon and its own client connection, and starts from the same config file, so an
// input's outcome depends on it alone. The server is kept from one input to the next (its socket,
// bind and listen were set-up cost, not what the target checks) only when the last input left it
// with no connection; the file is written again only when a config.save replaced it.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "daemon.h"
#include "fuzz.h"
#include "log.h"
#include "protocol.h"

namespace {

namespace fs = std::filesystem;
using lb::health::Json;

// Two services, one with a drained backend and a health group; the addresses are never probed.
constexpr const char* kConfig = R"(instance = "fuzz";
dataplane: {
  workers = 1;
  ports = ( { name = "client"; device = "net_null0"; ip = "10.10.0.1/24"; },
            { name = "backend"; device = "net_null1"; ip = "10.20.0.1/24"; gateway = "10.20.0.254"; } );
};
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "wrr";
    health = { path = "/healthz"; interval_ms = 60000; rise = 2; fall = 3; };
    backends = ( { address = "10.20.0.11"; port = 8080; weight = 2; },
                 { address = "10.20.0.12"; port = 8080; state = "drain"; } ); },
  { name = "api"; vip = "10.10.0.101"; port = 443;
    backends = ( { address = "10.20.0.13"; port = 8443; } ); }
);
)";

struct Env {
  fs::path dir;
  fs::path config_path;
  lb::cfg::Config config;
  lb::health::ControlOptions control;
  std::unique_ptr<lb::health::ControlServer> server;
  struct stat written {};  // the config file as the target last wrote it
};

Env* env = nullptr;

constexpr std::string_view kDirPrefix = "lb-fuzz-control-";

void remove_dir() {
  if (env) fs::remove_all(env->dir);
}

// A run stopped by SIGINT or a crash leaves its directory behind (libFuzzer exits without
// running atexit handlers): remove those whose process is gone. A directory whose PID now
// belongs to another process stays.
void remove_stale_dirs(const fs::path& base) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kDirPrefix)) continue;
    const std::string digits = name.substr(kDirPrefix.size());
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::strtol(digits.c_str(), nullptr, 10);
    if (pid <= 0 || pid > INT32_MAX) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    fs::remove_all(entry.path(), ec);
  }
}

// Turns the server until the client has every reply (the server closes once the client's
// requests are all answered) or nothing moves any more (a request waiting for lbd).
std::string exchange(lb::health::Daemon& d, lb::health::ControlServer& server, int client) {
  std::string replies;
  int idle = 0;
  while (idle < 3) {
    server.service(lb::health::Clock::now(),
                   [&](lb::health::ControlServer::ConnId id, const Json& request) {
                     return lb::health::handle_request(d, server, id, request);
                   });
    char buf[65536];
    const ssize_t n = ::recv(client, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) break;
    if (n > 0) {
      replies.append(buf, static_cast<size_t>(n));
      idle = 0;
    } else {
      ++idle;
    }
  }
  return replies;
}

// What the target checks of a reply line, read without building it: only the top-level
// members' values are kept (a status reply's services are tokenised and dropped). The line must
// be exactly one JSON object (sax_parse in strict mode, as Json::parse).
struct ReplyCheck {
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using string_t = Json::string_t;
  using binary_t = Json::binary_t;

  int depth = 0;
  bool object = false;  // the line is an object (its first event)
  std::string member;   // the top-level member being read
  std::optional<bool> ok;
  std::optional<std::string> code;
  std::optional<std::string> error;

  bool scalar() {
    if (depth == 0) return false;  // a bare value: not an object
    if (depth == 1) {
      if (member == "ok") ok.reset();
      if (member == "code") code.reset();
      if (member == "error") error.reset();
    }
    return true;
  }
  bool null() { return scalar(); }
  bool boolean(bool v) {
    if (!scalar()) return false;
    if (depth == 1 && member == "ok") ok = v;
    return true;
  }
  bool number_integer(number_integer_t) { return scalar(); }
  bool number_unsigned(number_unsigned_t) { return scalar(); }
  bool number_float(number_float_t, const string_t&) { return scalar(); }
  bool binary(binary_t&) { return scalar(); }
  bool string(string_t& v) {
    if (!scalar()) return false;
    if (depth == 1 && member == "code") code = v;
    if (depth == 1 && member == "error") error = v;
    return true;
  }
  bool start_object(size_t) {
    if (depth == 0)
      object = true;
    else if (!scalar())
      return false;
    ++depth;
    return true;
  }
  bool key(string_t& k) {
    if (depth == 1) member = k;
    return true;
  }
  bool end_object() {
    --depth;
    return true;
  }
  bool start_array(size_t) {
    if (!scalar()) return false;
    ++depth;
    return true;
  }
  bool end_array() {
    --depth;
    return true;
  }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception&) { return false; }
};

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// config.save replaces the file (write_file_atomic: a new inode) and a reload reads it: every
// input starts from kConfig. Unchanged since the target wrote it: nothing to do.
void restore_config_file() {
  struct stat now {};
  if (::stat(env->config_path.c_str(), &now) == 0 && same_file(now, env->written)) return;
  std::ofstream(env->config_path, std::ios::trunc) << kConfig;
  LB_FUZZ_CHECK(::stat(env->config_path.c_str(), &env->written) == 0, "stat %s: %s",
                env->config_path.c_str(), std::strerror(errno));
}

// The server left with no connection and nothing deferred is the state a new one starts in
// (connection ids go on counting; no reply carries them). Otherwise it is built again.
void settle_server(lb::health::Daemon& d) {
  lb::health::ControlServer& server = *env->server;
  for (int i = 0; i < 4 && server.clients() > 0; ++i)
    server.service(lb::health::Clock::now(),
                   [&](lb::health::ControlServer::ConnId id, const Json& request) {
                     return lb::health::handle_request(d, server, id, request);
                   });
  if (server.clients() > 0) env->server.reset();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  lb::health::set_log_level(lb::health::LogLevel::kError);
  lb::health::set_log_fd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  env = new Env;
  // A tmpfs when there is one: config.save writes and syncs the file.
  const fs::path base =
      fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  remove_stale_dirs(base);
  env->dir = base / (std::string(kDirPrefix) + std::to_string(::getpid()));
  fs::create_directories(env->dir);
  std::atexit(remove_dir);
  env->config_path = env->dir / "lbd.cfg";
  env->config = lb::cfg::parse_config(kConfig, env->config_path.string());
  env->control.path = (env->dir / "ctl.sock").string();
  env->control.max_request = 4096;  // small, so that inputs can reach the limit
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  restore_config_file();
  lb::health::Options o;
  o.config_path = env->config_path.string();
  o.instance = "fuzz";
  o.seed = 1;
  auto d = std::make_unique<lb::health::Daemon>(env->config, o);
  if (!env->server) env->server = std::make_unique<lb::health::ControlServer>(env->control);
  lb::health::ControlServer& server = *env->server;

  const int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, env->control.path.c_str(), sizeof a.sun_path - 1);
  LB_FUZZ_CHECK(::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "connect: %s",
                std::strerror(errno));
  size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(client, data + sent, size - sent, MSG_NOSIGNAL);
    LB_FUZZ_CHECK(n > 0, "send: %s", std::strerror(errno));  // inputs fit the socket's buffer
    sent += static_cast<size_t>(n);
  }
  ::shutdown(client, SHUT_WR);
  const std::string replies = exchange(*d, server, client);
  ::close(client);
  settle_server(*d);

  size_t start = 0;
  while (start < replies.size()) {
    const size_t nl = replies.find('\n', start);
    LB_FUZZ_CHECK(nl != std::string::npos, "a reply without its newline: %s",
                  replies.substr(start).c_str());
    const std::string line = replies.substr(start, nl - start);
    start = nl + 1;
    ReplyCheck r;
    const bool parsed = Json::sax_parse(line, &r);
    LB_FUZZ_CHECK(parsed && r.object && r.ok, "reply: %s", line.c_str());
    if (*r.ok) continue;
    LB_FUZZ_CHECK(r.code && r.error && !r.error->empty(), "refusal without code and error: %s",
                  line.c_str());
    LB_FUZZ_CHECK(*r.code != "internal", "internal error: %s", line.c_str());
  }
  return 0;
}
