#pragma once
// What every lbctl command shares: where lb-healthd's and lbd's sockets are (Context, found
// lazily from the command line and the config file), how a refusal and a usage error end lbctl
// (exit 1 and 2), and how a change is sent and reported.

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <utility>

#include <CLI/CLI.hpp>

#include "clients.h"
#include "lb_config.h"
#include "render.h"

namespace lbctl {

using lb::ctl::Json;
using Clock = std::chrono::steady_clock;

constexpr int kRefused = 1;
constexpr int kUsage = 2;

// Refused, with the reason: exit 1.
struct Refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Bad command line: exit 2.
struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Ctrl-C ends a watch or a drain cleanly (elsewhere it just ends lbctl).
void catch_interrupt();
bool interrupted();
// Sleeps in short steps so that Ctrl-C ends a watch at once.
void pause_for(double seconds);

struct Globals {
  std::string config = "/etc/lbd/lbd.cfg";
  std::string instance;
  std::string socket;
  std::string telemetry;
  bool json = false;
  bool wait = false;
  double timeout_s = 5;
  CLI::Option* config_opt = nullptr;
};

// libconfig text with its comments (`#` and `//` to the end of the line, `/* ... */`) turned
// into spaces; strings, and what looks like a comment inside one, are kept.
std::string without_comments(std::string text);

// Where everything is, found lazily: only what a command needs is looked up.
class Context {
 public:
  explicit Context(Globals& g) : g_(g) {}

  bool json() const { return g_.json; }
  bool wait() const { return g_.wait; }
  int64_t wait_ms() const { return static_cast<int64_t>(std::llround(g_.timeout_s * 1000)); }

  // The config file, when there is one to read: given with --config, or the default if it
  // exists. A file that does not load (being edited, say: `lbctl config reload` must still reach
  // lb-healthd, which reports the error) is searched for the two settings lbctl needs.
  const lb::cfg::Config* config() {
    if (tried_) return cfg_ ? &*cfg_ : nullptr;
    tried_ = true;
    const bool given = g_.config_opt && g_.config_opt->count() > 0;
    if (!given && ::access(g_.config.c_str(), F_OK) != 0) return nullptr;
    try {
      cfg_ = lb::cfg::load_config(g_.config);
    } catch (const lb::cfg::ConfigError& e) {
      error_ = e.what();
      loose_instance_ = setting_in_text("instance");
      loose_socket_ = setting_in_text("control_socket");
      // A file given but not readable at all is an error, unless the sockets were given too.
      if (given && e.line() == 0 && g_.socket.empty()) throw Refused(error_);
      return nullptr;
    }
    return &*cfg_;
  }

  // The config file given with -c, if one was.
  std::optional<std::string> config_given() const {
    if (g_.config_opt && g_.config_opt->count() > 0) return g_.config;
    return std::nullopt;
  }

  std::string instance() {
    if (!g_.instance.empty()) return g_.instance;
    if (const lb::cfg::Config* c = config()) return c->instance;
    if (loose_instance_) return *loose_instance_;
    return "lbd";
  }

  std::string socket_path() {
    if (!g_.socket.empty()) return g_.socket;
    if (const lb::cfg::Config* c = config()) {
      const std::string p = lb::cfg::control_socket_path(*c, g_.instance);
      if (p.empty())
        throw Refused(g_.config +
                      " turns lb-healthd's control socket off (healthd.control_socket "
                      "= \"\")");
      return p;
    }
    if (loose_socket_ && !loose_socket_->empty()) return *loose_socket_;
    return lb::cfg::default_control_socket(instance());
  }

  std::string telemetry_path() {
    if (!g_.telemetry.empty()) return g_.telemetry;
    if (g_.instance.empty() && !config() && !g_.socket.empty()) {
      // Only lb-healthd's socket was given: it knows the instance.
      try {
        const Json pong = call({{"cmd", "ping"}});
        if (pong.value("ok", false) && pong.contains("instance"))
          return lb::ctl::telemetry_path(pong["instance"].get<std::string>());
      } catch (const std::exception&) {
      }
    }
    return lb::ctl::telemetry_path(instance());
  }

  // One request to lb-healthd, on a connection of its own (lb-healthd disconnects clients that
  // stay silent, and a drain can take minutes); the reply, whatever it says.
  Json call(Json req, int64_t timeout_ms = 5000) {
    std::unique_ptr<lb::ctl::ControlClient> control;
    try {
      control = std::make_unique<lb::ctl::ControlClient>(socket_path(), 2000);
    } catch (const lb::ctl::Error& e) {
      if (error_.empty()) throw;
      throw lb::ctl::Error(std::string(e.what()) + "; " + g_.config + " does not load: " + error_);
    }
    return control->request(req, static_cast<int>(timeout_ms));
  }

  // The instance of the lbd whose telemetry socket is used: the directory it is in
  // (/var/run/dpdk/<file prefix>/, lbd's prefix being its instance name) when that is where it is.
  std::string lbd_instance() {
    const std::string path = telemetry_path();
    const std::string dir = "/var/run/dpdk/";
    const std::string file = "/dpdk_telemetry.v2";
    if (path.size() > dir.size() + file.size() && path.starts_with(dir) && path.ends_with(file))
      return path.substr(dir.size(), path.size() - dir.size() - file.size());
    return instance();
  }

  lb::ctl::TelemetryClient& telemetry() {
    if (!telemetry_)
      telemetry_ = std::make_unique<lb::ctl::TelemetryClient>(telemetry_path(), 3000);
    return *telemetry_;
  }
  // The next telemetry() connects again (lbd restarted: the old connection is dead).
  void reconnect_telemetry() { telemetry_.reset(); }

 private:
  // `key = "value"` in the file's text, for a file the loader refuses.
  std::optional<std::string> setting_in_text(const std::string& key) const {
    std::FILE* f = std::fopen(g_.config.c_str(), "r");
    if (!f) return std::nullopt;
    std::string text;
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < (1u << 20))
      text.append(buf, n);
    std::fclose(f);
    // Comments are not settings: `# instance = "edge2"` above the real line took lbctl to
    // another instance's sockets.
    text = without_comments(text);
    const std::regex re("(^|[\\s;{])" + key + "\\s*[=:]\\s*\"([^\"]*)\"");
    std::smatch m;
    if (std::regex_search(text, m, re)) return m[2].str();
    return std::nullopt;
  }

  Globals& g_;
  std::string error_;
  std::optional<std::string> loose_instance_;
  std::optional<std::string> loose_socket_;
  bool tried_ = false;
  std::optional<lb::cfg::Config> cfg_;
  std::unique_ptr<lb::ctl::TelemetryClient> telemetry_;
};

void print_json(const Json& j);
// A reply that refuses becomes exit 1 with its reason.
void check(const Json& reply, bool json);
// ADDR:PORT; the values are checked by lb-healthd, only the shape here.
std::pair<std::string, Json> split_endpoint(const std::string& text, const char* what);
// Sends a change (with "wait" when asked) and reports it.
int run_change(Context& ctx, Json req);

}  // namespace lbctl
