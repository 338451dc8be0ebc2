// Fuzz target: lb-healthd's control socket. The input is what a client sends (JSON lines, or
// anything else), written to a real ControlServer whose requests are answered by
// handle_request against an in-process Daemon, as lb-healthd's loop does; the loop itself is not
// turned, so no health check ever reaches an address a request names. Every reply must be one
// JSON object per line with a boolean "ok", and a refusal must carry a "code" and an "error" for
// the user; "internal" (an exception that escaped a handler) counts as a crash. Each input gets
// a fresh Daemon and server, so an input's outcome depends on it alone.

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

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
};

Env* env = nullptr;

void remove_dir() {
  if (env) fs::remove_all(env->dir);
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

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  lb::health::set_log_level(lb::health::LogLevel::kError);
  lb::health::set_log_fd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  env = new Env;
  // A tmpfs when there is one: config.save writes and syncs the file.
  const fs::path base =
      fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  env->dir = base / ("lb-fuzz-control-" + std::to_string(::getpid()));
  fs::create_directories(env->dir);
  std::atexit(remove_dir);
  env->config_path = env->dir / "lbd.cfg";
  env->config = lb::cfg::parse_config(kConfig, env->config_path.string());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // config.save may have rewritten it: every input starts from the same file.
  std::ofstream(env->config_path, std::ios::trunc) << kConfig;
  lb::health::Options o;
  o.config_path = env->config_path.string();
  o.instance = "fuzz";
  o.seed = 1;
  auto d = std::make_unique<lb::health::Daemon>(env->config, o);
  lb::health::ControlOptions co;
  co.path = (env->dir / "ctl.sock").string();
  co.max_request = 4096;  // small, so that inputs can reach the limit
  auto server = std::make_unique<lb::health::ControlServer>(co);

  const int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, co.path.c_str(), sizeof a.sun_path - 1);
  LB_FUZZ_CHECK(::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "connect: %s",
                std::strerror(errno));
  size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(client, data + sent, size - sent, MSG_NOSIGNAL);
    LB_FUZZ_CHECK(n > 0, "send: %s", std::strerror(errno));  // inputs fit the socket's buffer
    sent += static_cast<size_t>(n);
  }
  ::shutdown(client, SHUT_WR);
  const std::string replies = exchange(*d, *server, client);
  ::close(client);

  size_t start = 0;
  while (start < replies.size()) {
    const size_t nl = replies.find('\n', start);
    LB_FUZZ_CHECK(nl != std::string::npos, "a reply without its newline: %s",
                  replies.substr(start).c_str());
    const std::string line = replies.substr(start, nl - start);
    start = nl + 1;
    const Json r = Json::parse(line, nullptr, false);
    LB_FUZZ_CHECK(r.is_object() && r.contains("ok") && r["ok"].is_boolean(), "reply: %s",
                  line.c_str());
    if (r["ok"].get<bool>()) continue;
    LB_FUZZ_CHECK(r.contains("code") && r["code"].is_string() && r.contains("error") &&
                      r["error"].is_string() && !r["error"].get<std::string>().empty(),
                  "refusal without code and error: %s", line.c_str());
    LB_FUZZ_CHECK(r["code"] != "internal", "internal error: %s", line.c_str());
  }
  return 0;
}
