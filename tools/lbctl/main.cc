// lbctl: inspect and reconfigure a running lbd and lb-healthd (docs/lbctl.md).
//
// Changes go to lb-healthd's control socket (it validates them like the file, applies them all or
// nothing, keeps them in its state file and pushes them to lbd); counters come from lbd's DPDK
// telemetry socket. Exit status: 0 done, 1 refused (the reason on stderr, one line), 2 usage.

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "capture.h"
#include "clients.h"
#include "files.h"
#include "healthd_check.h"
#include "lb_config.h"
#include "lb_version.h"
#include "render.h"

namespace {

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

volatile std::sig_atomic_t g_interrupted = 0;

// Ctrl-C ends a watch or a drain cleanly (elsewhere it just ends lbctl).
void catch_interrupt() {
  std::signal(SIGINT, [](int) { g_interrupted = 1; });
}

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

void print_json(const Json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
}

// A reply that refuses becomes exit 1 with its reason.
void check(const Json& reply, bool json) {
  if (reply.value("ok", false)) return;
  if (json) print_json(reply);
  std::string why = reply.value("error", std::string("lb-healthd refused the request"));
  if (reply.value("accepted", false))
    why += " (lb-healthd has made and kept the change; lbd has not confirmed it)";
  throw Refused(why);
}

// ADDR:PORT; the values are checked by lb-healthd, only the shape here.
std::pair<std::string, Json> split_endpoint(const std::string& text, const char* what) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw Usage(std::string(what) + ": expected ADDR:PORT, found '" + text + "'");
  const std::string port = text.substr(colon + 1);
  if (port.size() > 9 || port.find_first_not_of("0123456789") != std::string::npos)
    throw Usage(std::string(what) + ": the port in '" + text + "' is not a number");
  return {text.substr(0, colon), Json(std::stoll(port))};
}

// Sends a change (with "wait" when asked) and reports it.
int run_change(Context& ctx, Json req) {
  if (ctx.wait()) {
    req["wait"] = true;
    req["timeout_ms"] = ctx.wait_ms();
  }
  const Json reply = ctx.call(req, (ctx.wait() ? ctx.wait_ms() : 0) + 10000);
  check(reply, ctx.json());
  if (ctx.json()) {
    print_json(reply);
    return 0;
  }
  const Json changes = reply.value("changes", Json::array());
  if (changes.empty()) std::printf("no change\n");
  for (const Json& c : changes) std::printf("%s\n", c.get<std::string>().c_str());
  if (reply.contains("lbd")) {
    const Json& l = reply["lbd"];
    std::printf("applied by lbd: generation %s, after %s ms\n",
                l.value("generation", Json()).dump().c_str(),
                l.value("waited_ms", Json()).dump().c_str());
  }
  if (!reply.value("persisted", false) && !changes.empty())
    std::printf("note: not persisted (lb-healthd has no state file): a restart forgets it\n");
  return 0;
}

// -- Health and service options, shared by service add and service set --------------------

struct ServiceOptions {
  std::string scheduler, on_all_down, maint, miss_policy, forward, syn_flood_policy;
  std::string path, expect_status, expect_body, host, initial_state;
  int64_t interval = 0, timeout = 0, rise = 0, fall = 0, fast = 0, down = 0, jitter = 0, port = 0,
          syn_rst = 0, syn_timeout = 0, maglev_table_size = 0;
  std::vector<CLI::Option*> opts;

  void add(CLI::App* app) {
    opts.push_back(app->add_option("--scheduler", scheduler, "rr, wrr, random, lc or maglev")
                       ->check(CLI::IsMember({"rr", "wrr", "random", "lc", "maglev"})));
    opts.push_back(app->add_option("--on-all-down", on_all_down, "fail_closed or fail_open")
                       ->check(CLI::IsMember({"fail_closed", "fail_open"})));
    opts.push_back(app->add_option("--maint", maint, "keep or drop: flows of backends in maint")
                       ->check(CLI::IsMember({"keep", "drop"})));
    opts.push_back(app->add_option("--health-path", path, "health check path (health.path)"));
    opts.push_back(
        app->add_option("--interval", interval, "ms between checks (health.interval_ms)"));
    opts.push_back(app->add_option("--health-timeout", timeout, "ms (health.timeout_ms)"));
    opts.push_back(app->add_option("--rise", rise, "passing checks to come up (health.rise)"));
    opts.push_back(app->add_option("--fall", fall, "failing checks to go down (health.fall)"));
    opts.push_back(app->add_option("--expect-status", expect_status, "\"200-299\" or \"200\""));
    opts.push_back(app->add_option("--fast-interval", fast, "ms (health.fast_interval_ms)"));
    opts.push_back(app->add_option("--down-interval", down, "ms (health.down_interval_ms)"));
    opts.push_back(app->add_option("--jitter", jitter, "percent (health.jitter_pct)"));
    opts.push_back(app->add_option("--expect-body", expect_body,
                                   "text the body must contain "
                                   "(\"\" unsets)"));
    opts.push_back(app->add_option("--health-host", host, "Host header of checks (\"\" unsets)"));
    opts.push_back(app->add_option("--health-port", port, "port checked instead (0 unsets)"));
    opts.push_back(app->add_option("--initial-state", initial_state,
                                   "up or down before the first checks (health.initial_state)")
                       ->check(CLI::IsMember({"up", "down"})));
    opts.push_back(app->add_option("--passive-syn-rst", syn_rst, "health.passive.syn_rst"));
    opts.push_back(
        app->add_option("--passive-syn-timeout", syn_timeout, "health.passive.syn_timeout"));
    opts.push_back(app->add_option("--maglev-table-size", maglev_table_size,
                                   "prime, entries of the maglev table (default 65537)"));
    opts.push_back(app->add_option("--miss-policy", miss_policy,
                                   "drop, rst or rehash (maglev): a segment with no flow")
                       ->check(CLI::IsMember({"drop", "rst", "rehash"})));
    opts.push_back(app->add_option("--forward", forward, "dnat, tunnel or fullnat")
                       ->check(CLI::IsMember({"dnat", "tunnel", "fullnat"})));
    opts.push_back(
        app->add_option("--syn-flood-policy", syn_flood_policy,
                        "drop-new, evict-embryonic or stateless (maglev + tunnel): a SYN flood")
            ->check(CLI::IsMember({"drop-new", "evict-embryonic", "stateless"})));
  }

  bool given(size_t i) const { return opts[i]->count() > 0; }

  // The settings given, as config keys; `unset` turns "" and 0 into null (service set).
  Json settings(bool unset) const {
    Json s = Json::object();
    Json h = Json::object();
    Json passive = Json::object();
    const auto text = [&](const std::string& v) { return unset && v.empty() ? Json() : Json(v); };
    if (given(0)) s["scheduler"] = scheduler;
    if (given(1)) s["on_all_down"] = on_all_down;
    if (given(2)) s["maint"] = maint;
    if (given(3)) h["path"] = path;
    if (given(4)) h["interval_ms"] = interval;
    if (given(5)) h["timeout_ms"] = timeout;
    if (given(6)) h["rise"] = rise;
    if (given(7)) h["fall"] = fall;
    if (given(8)) h["expect_status"] = expect_status;
    if (given(9)) h["fast_interval_ms"] = fast;
    if (given(10)) h["down_interval_ms"] = down;
    if (given(11)) h["jitter_pct"] = jitter;
    if (given(12)) h["expect_body"] = text(expect_body);
    if (given(13)) h["host"] = text(host);
    if (given(14)) h["port"] = unset && port == 0 ? Json() : Json(port);
    if (given(15)) h["initial_state"] = initial_state;
    if (given(16)) passive["syn_rst"] = syn_rst;
    if (given(17)) passive["syn_timeout"] = syn_timeout;
    if (given(18)) s["maglev_table_size"] = maglev_table_size;
    if (given(19)) s["miss_policy"] = miss_policy;
    if (given(20)) s["forward"] = forward;
    if (given(21)) s["syn_flood_policy"] = syn_flood_policy;
    if (!passive.empty()) h["passive"] = passive;
    if (!h.empty()) s["health"] = h;
    return s;
  }
};

// -- Numbers on the command line ---------------------------------------------------------------

// CLI11 takes an empty value as 0 (`--weight ''` set the weight to 0) and reads integers with
// base prefixes ("010" is 8, "0x10" 16). Every number option takes decimal only: an integer is
// [-]digits (leading zeros are dropped, so "010" is 10), a number also takes a fraction.
std::string strict_decimal(std::string& value, bool fraction) {
  std::string_view v = value;
  const bool negative = !v.empty() && v[0] == '-';
  if (negative) v.remove_prefix(1);
  const size_t dot = fraction ? v.find('.') : std::string_view::npos;
  const std::string_view whole = v.substr(0, dot);
  const std::string_view part = dot == std::string_view::npos ? "" : v.substr(dot + 1);
  const auto digits = [](std::string_view d) {
    return d.find_first_not_of("0123456789") == std::string_view::npos;
  };
  if (whole.empty() || !digits(whole) || !digits(part) ||
      (dot != std::string_view::npos && part.empty())) {
    return std::string(fraction ? "expected a number" : "expected an integer") + ", found '" +
           value + "'";
  }
  const size_t first = std::min(whole.find_first_not_of('0'), whole.size() - 1);
  value = (negative ? "-" : "") + std::string(v.substr(first));
  return "";
}

// Applies strict_decimal to every integer and number option of `app` and its subcommands.
void strict_numbers(CLI::App* app) {
  static const CLI::Validator kInteger([](std::string& v) { return strict_decimal(v, false); }, "",
                                       "INTEGER");
  static const CLI::Validator kNumber([](std::string& v) { return strict_decimal(v, true); }, "",
                                      "NUMBER");
  for (CLI::Option* o : app->get_options()) {
    std::string type = o->get_type_name();  // "FLOAT:FLOAT in [0.001 - 60]": the type first
    type = type.substr(0, type.find(':'));
    // transform(): before the option's own checks (a Range says less about '').
    if (type == "INT" || type == "UINT") o->transform(kInteger);
    if (type == "FLOAT") o->transform(kNumber);
  }
  for (CLI::App* sub : app->get_subcommands({})) strict_numbers(sub);
}

// -- Commands --------------------------------------------------------------------------------

// lb-healthd cannot be reached: what lbd applies, and exit 1 (the reason on stderr).
int status_from_lbd(Context& ctx, const std::string& only, const std::string& healthd_error) {
  Json view;
  try {
    lb::ctl::TelemetryClient& t = ctx.telemetry();
    view = lb::ctl::lbd_status(t.query("/lb/backends"), t.query("/lb/pool"), t.query("/lb/stats"),
                               t.hello(), healthd_error);
  } catch (const std::exception& e) {
    throw Refused(healthd_error + "; and lbd: " + e.what());
  }
  if (!only.empty()) {
    Json kept = Json::array();
    for (const Json& s : view["services"]) {
      if (s.value("name", std::string()) == only) kept.push_back(s);
    }
    view["services"] = kept;
  }
  if (ctx.json()) {
    print_json(view);
  } else {
    std::fputs(lb::ctl::render_lbd_status(view).c_str(), stdout);
  }
  std::fflush(stdout);
  throw Refused(healthd_error + " (shown: what lbd applies)");
}

int cmd_status(Context& ctx, const std::string& only) {
  Json status;
  try {
    status = ctx.call({{"cmd", "status"}});
  } catch (const lb::ctl::Error& e) {
    return status_from_lbd(ctx, only, e.what());
  }
  check(status, ctx.json());
  if (!only.empty()) {
    Json kept = Json::array();
    for (const Json& s : status["services"]) {
      if (s.value("name", std::string()) == only) kept.push_back(s);
    }
    if (kept.empty()) throw Refused("unknown service '" + only + "'");
    status["services"] = kept;
  }
  Json backends;
  std::string why;
  try {
    backends = ctx.telemetry().query("/lb/backends");
  } catch (const std::exception& e) {
    why = e.what();
  }
  const Json merged = lb::ctl::merge_status(status, backends, why);
  if (ctx.json()) {
    print_json(merged);
  } else {
    std::fputs(lb::ctl::render_status(merged).c_str(), stdout);
  }
  return 0;
}

lb::ctl::Sample take_sample(lb::ctl::TelemetryClient& t) {
  lb::ctl::Sample s;
  s.t = std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  s.stats = t.query("/lb/stats");
  s.drops = t.query("/lb/drops");
  s.ports = t.query("/lb/ports");
  s.backends = t.query("/lb/backends");
  s.services = t.query("/lb/services");
  // Last, and optional: an lbd older than full-NAT refuses the command (the reply is read whole,
  // the connection stays usable); the table is then left out.
  try {
    s.fullnat = t.query("/lb/fullnat");
  } catch (const lb::ctl::Error&) {
    s.fullnat = Json();
  }
  return s;
}

// Sleeps in short steps so that Ctrl-C ends a watch at once.
void pause_for(double seconds) {
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (!g_interrupted && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

int cmd_stats(Context& ctx, bool watch, double period, double interval, int64_t count) {
  catch_interrupt();
  lb::ctl::TelemetryClient& t = ctx.telemetry();
  const std::string instance = ctx.lbd_instance();
  const Json pid = t.hello().value("pid", Json());
  const bool redraw = watch && !ctx.json() && ::isatty(1);
  lb::ctl::Sample a = take_sample(t);
  int64_t frames = 0;
  for (;;) {
    pause_for(watch ? period : interval);
    if (g_interrupted) break;
    lb::ctl::Sample b = take_sample(t);
    const Json report = lb::ctl::stats_report(a, b);
    if (ctx.json()) {
      std::printf("%s\n", report.dump(watch ? -1 : 2).c_str());
    } else {
      if (redraw) std::fputs("\x1b[H\x1b[2J", stdout);
      std::fputs(lb::ctl::render_stats(report, instance, pid).c_str(), stdout);
      if (watch && !redraw) std::fputs("\n", stdout);
    }
    std::fflush(stdout);
    a = std::move(b);
    if (!watch || (count > 0 && ++frames >= count)) break;
  }
  return 0;
}

int cmd_flows(Context& ctx, int64_t limit) {
  if (limit < 1) throw Usage("--limit: at least 1");
  const int64_t asked = std::min<int64_t>(limit, 256);
  const Json reply = ctx.telemetry().query("/lb/flows," + std::to_string(asked));
  const Json flows = lb::ctl::parse_flows(reply, static_cast<size_t>(limit));
  if (ctx.json()) {
    print_json(flows);
  } else {
    std::fputs(lb::ctl::render_flows(flows).c_str(), stdout);
  }
  return 0;
}

// Replaces lbctl with dpdk-dumpcap (its output, Ctrl-C and exit status are the capture's).
int cmd_capture(Context& ctx, const lb::ctl::CaptureRequest& r) {
  if (r.file.empty()) throw Usage("capture: -w FILE is required");
  const std::string telemetry = ctx.telemetry_path();
  std::string prefix = lb::ctl::file_prefix_of(telemetry);
  if (prefix.empty()) prefix = ctx.instance();
  const std::string why = lb::ctl::capture_blocker(telemetry.substr(0, telemetry.rfind('/')));
  if (!why.empty()) throw Refused("cannot capture: " + why);
  std::vector<std::string> args;
  try {
    args = lb::ctl::dumpcap_args(ctx.config(), prefix, r);
  } catch (const std::invalid_argument& e) {
    throw Refused(e.what());
  }
  args.insert(args.begin(), "dpdk-dumpcap");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  execvp(argv[0], argv.data());
  throw Refused(std::string("cannot run dpdk-dumpcap: ") + std::strerror(errno) +
                " (Debian package dpdk)");
}

int cmd_backend_add(Context& ctx, const std::string& service, const std::string& endpoint,
                    CLI::Option* weight_opt, int64_t weight, const std::string& state,
                    const std::string& initial) {
  const auto [addr, port] = split_endpoint(endpoint, "backend");
  Json b = {{"address", addr}, {"port", port}};
  if (weight_opt->count() > 0) b["weight"] = weight;
  if (!state.empty()) b["state"] = state;
  if (!initial.empty()) b["initial_state"] = initial;
  return run_change(ctx, {{"cmd", "backend.add"}, {"service", service}, {"backend", b}});
}

int cmd_backend_set(Context& ctx, const std::string& service, const std::string& endpoint,
                    CLI::Option* weight_opt, int64_t weight, const std::string& state,
                    const std::string& initial) {
  const auto [addr, port] = split_endpoint(endpoint, "backend");
  Json req = {{"cmd", "backend.set"}, {"service", service}, {"address", addr}, {"port", port}};
  if (weight_opt->count() > 0) req["weight"] = weight;
  if (!state.empty()) req["state"] = state;
  if (!initial.empty()) req["initial_state"] = initial;
  if (!req.contains("weight") && !req.contains("state") && !req.contains("initial_state"))
    throw Usage("backend set: give --weight, --state or --initial-state");
  return run_change(ctx, req);
}

// Drains first (no new flows), waits until lbd has no flow left on the backend, then removes it.
int cmd_backend_remove(Context& ctx, const std::string& service, const std::string& endpoint,
                       bool now, double drain_timeout) {
  const auto [addr, port] = split_endpoint(endpoint, "backend");
  const Json remove = {
      {"cmd", "backend.remove"}, {"service", service}, {"address", addr}, {"port", port}};
  if (now) return run_change(ctx, remove);
  const std::string label = service + " " + addr + ":" + port.dump();
  lb::ctl::TelemetryClient* t = nullptr;
  try {
    t = &ctx.telemetry();
  } catch (const std::exception& e) {
    throw Refused(std::string("cannot watch the backend drain: ") + e.what() +
                  " (lbctl backend remove --now removes it without draining)");
  }
  Json drain = {{"cmd", "backend.set"},
                {"service", service},
                {"address", addr},
                {"port", port},
                {"state", "drain"},
                {"wait", true},
                {"timeout_ms", ctx.wait_ms()}};
  const Json r = ctx.call(drain, ctx.wait_ms() + 10000);
  check(r, ctx.json());
  catch_interrupt();
  const auto start = Clock::now();
  const std::string key_addr = addr + ":" + port.dump();
  uint64_t active = 0;
  bool told = false;
  for (;;) {
    const Json backends = t->query("/lb/backends");
    active = 0;
    for (auto it = backends.begin(); it != backends.end(); ++it) {
      const Json& b = it.value();
      if (b.value("service", std::string()) == service &&
          b.value("address", std::string()) == key_addr)
        active = b.value("flows_active", uint64_t{0});
    }
    if (active == 0) break;
    if (!told && !ctx.json()) {
      std::printf("draining %s: %llu active flow(s); waiting (at most %.0fs)\n", label.c_str(),
                  static_cast<unsigned long long>(active), drain_timeout);
      std::fflush(stdout);
      told = true;
    }
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited >= drain_timeout || g_interrupted) {
      throw Refused(label + " still has " + std::to_string(active) + " active flow(s) after " +
                    std::to_string(static_cast<int>(waited)) +
                    "s; it stays in drain (lbctl backend remove --now removes it at once)");
    }
    pause_for(0.2);
  }
  if (!ctx.json()) {
    std::printf("%s drained after %.1fs\n", label.c_str(),
                std::chrono::duration<double>(Clock::now() - start).count());
  }
  return run_change(ctx, remove);
}

// lbd's active flows (every backend) and the packets its ports have received, for node drain.
std::pair<uint64_t, uint64_t> lbd_load(lb::ctl::TelemetryClient& t) {
  uint64_t flows = 0, packets = 0;
  const Json backends = t.query("/lb/backends");
  for (auto it = backends.begin(); it != backends.end(); ++it)
    flows += it.value().value("flows_active", uint64_t{0});
  const Json ports = t.query("/lb/ports");
  for (auto it = ports.begin(); it != ports.end(); ++it) {
    if (it.value().is_object()) packets += it.value().value("rx_packets", uint64_t{0});
  }
  return {flows, packets};
}

void print_node(const Json& node) {
  std::string announced;
  for (const Json& v : node.value("vips", Json::array())) {
    if (v.value("announced", false))
      announced += (announced.empty() ? "" : ", ") + v.value("vip", std::string());
  }
  std::printf("node %s: announcing %s%s\n", node.value("state", std::string("?")).c_str(),
              announced.empty() ? "nothing" : announced.c_str(),
              node.value("in_bird", false)
                  ? ""
                  : ("; BIRD not told yet: " + node.value("bird_error", std::string())).c_str());
}

// Withdraws every VIP, then waits until lbd's traffic has gone: its active flows at most
// `threshold`, or its ports quiet (fewer than kQuietPackets a second: with ECMP a withdrawn
// route moves every flow at once, and the flows left in lbd's table only wait for their idle
// timeout), or `timeout` seconds.
int cmd_node_drain(Context& ctx, double timeout, int64_t threshold) {
  constexpr uint64_t kQuietPackets = 10;
  const Json r = ctx.call({{"cmd", "node.drain"}});
  check(r, ctx.json());
  if (!ctx.json()) print_node(r["node"]);
  std::fflush(stdout);
  lb::ctl::TelemetryClient* t = nullptr;
  try {
    t = &ctx.telemetry();
  } catch (const std::exception& e) {
    throw Refused(std::string("node draining, but lbd's traffic cannot be watched: ") + e.what());
  }
  catch_interrupt();
  const auto start = Clock::now();
  auto [flows, packets] = lbd_load(*t);
  for (;;) {
    pause_for(1.0);
    const auto [f, p] = lbd_load(*t);
    const uint64_t rate = p - std::min(p, packets);
    flows = f;
    packets = p;
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    const bool done = static_cast<int64_t>(flows) <= threshold || rate < kQuietPackets;
    if (done) {
      if (ctx.json()) {
        print_json({{"ok", true},
                    {"node", r["node"]},
                    {"waited_s", waited},
                    {"flows_active", flows},
                    {"rx_packets_last_second", rate}});
      } else {
        std::printf("drained after %.1fs: %llu active flow(s), %llu packet(s) in the last second\n",
                    waited, static_cast<unsigned long long>(flows),
                    static_cast<unsigned long long>(rate));
      }
      return 0;
    }
    if (waited >= timeout || g_interrupted) {
      throw Refused("node still busy after " + std::to_string(static_cast<int>(waited)) +
                    "s: " + std::to_string(flows) + " active flow(s), " + std::to_string(rate) +
                    " packet(s)/s; it stays draining (lbctl node ready announces again)");
    }
  }
}

int cmd_node_ready(Context& ctx) {
  const Json r = ctx.call({{"cmd", "node.ready"}});
  check(r, ctx.json());
  if (ctx.json()) {
    print_json(r);
  } else {
    print_node(r["node"]);
  }
  return 0;
}

int cmd_service_add(Context& ctx, const std::string& name, const std::string& vip,
                    const std::vector<std::string>& backends, const ServiceOptions& o) {
  const auto [addr, port] = split_endpoint(vip, "VIP");
  Json s = o.settings(false);
  s["name"] = name;
  s["vip"] = addr;
  s["port"] = port;
  Json list = Json::array();
  for (const std::string& b : backends) {
    const auto [ba, bp] = split_endpoint(b, "--backend");
    list.push_back({{"address", ba}, {"port", bp}});
  }
  s["backends"] = list;
  return run_change(ctx, {{"cmd", "service.add"}, {"service", s}});
}

int cmd_service_set(Context& ctx, const std::string& name, const std::string& vip,
                    CLI::Option* port_opt, int64_t port, const ServiceOptions& o) {
  Json set = o.settings(true);
  if (!vip.empty()) {
    if (vip.find(':') != std::string::npos) {
      const auto [addr, p] = split_endpoint(vip, "--vip");
      set["vip"] = addr;
      set["port"] = p;
    } else {
      set["vip"] = vip;
    }
  }
  if (port_opt->count() > 0) set["port"] = port;
  if (set.empty()) throw Usage("service set: nothing to set (see lbctl service set --help)");
  return run_change(ctx, {{"cmd", "service.set"}, {"name", name}, {"set", set}});
}

int cmd_config_check(Context& ctx, const std::string& file) {
  try {
    const lb::cfg::Config c = lb::cfg::load_config(file);
    if (std::optional<lb::cfg::ConfigError> p = lb::cfg::healthd_problem(c)) throw *p;
    size_t backends = 0;
    for (const auto& s : c.services) backends += s.backends.size();
    if (ctx.json()) {
      print_json(
          {{"ok", true}, {"file", file}, {"services", c.services.size()}, {"backends", backends}});
    } else {
      std::printf("%s: OK (%zu service(s), %zu backend(s))\n", file.c_str(), c.services.size(),
                  backends);
    }
    return 0;
  } catch (const lb::cfg::ConfigError& e) {
    if (ctx.json()) print_json({{"ok", false}, {"code", "config"}, {"error", e.what()}});
    throw Refused(e.what());
  }
}

int cmd_config_reload(Context& ctx, bool replace, bool now, CLI::Option* drain_opt,
                      double drain_s) {
  Json req = {{"cmd", "config.reload"}};
  if (replace) req["replace"] = true;
  if (now) req["drain_timeout_ms"] = 0;
  if (drain_opt->count() > 0) req["drain_timeout_ms"] = std::llround(drain_s * 1000);
  return run_change(ctx, req);
}

int cmd_config_save(Context& ctx, const std::string& output) {
  if (output.empty()) {
    const Json r = ctx.call({{"cmd", "config.save"}});
    check(r, ctx.json());
    if (ctx.json()) {
      print_json(r);
    } else {
      std::printf("saved the running configuration to %s (previous file kept as %s)\n",
                  r.value("path", std::string()).c_str(), r.value("backup", std::string()).c_str());
    }
    return 0;
  }
  const Json r = ctx.call({{"cmd", "config.show"}});
  check(r, ctx.json());
  const std::string text = r.value("text", std::string());
  if (output == "-") {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  try {
    // A file written over keeps its mode, owner and group, like lb-healthd's own save.
    struct stat st {};
    if (::stat(output.c_str(), &st) == 0) {
      lb::write_file_atomic(output, text, st.st_mode & 07777, lb::FileOwner{st.st_uid, st.st_gid});
    } else {
      lb::write_file_atomic(output, text, 0644);
    }
  } catch (const std::exception& e) {
    throw Refused(e.what());
  }
  if (!ctx.json()) std::printf("wrote the running configuration to %s\n", output.c_str());
  return 0;
}

int cmd_config_diff(Context& ctx) {
  const Json r = ctx.call({{"cmd", "config.diff"}});
  check(r, ctx.json());
  if (ctx.json()) {
    print_json(r);
    return 0;
  }
  const Json changes = r.value("changes", Json::array());
  if (changes.empty()) {
    std::printf("no runtime changes: lb-healthd runs %s as it is\n",
                r.value("path", std::string()).c_str());
  }
  for (const Json& c : changes) std::printf("%s\n", c.get<std::string>().c_str());
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{
      "lbctl: inspect and reconfigure a running lbd and lb-healthd (docs/lbctl.md).\n"
      "Exit status: 0 done, 1 refused (reason on stderr), 2 usage.",
      "lbctl"};
  app.fallthrough();
  app.require_subcommand(1);
  Globals g;
  g.config_opt = app.add_option(
      "-c,--config", g.config, "configuration file: finds both sockets (default /etc/lbd/lbd.cfg)");
  app.add_option("-i,--instance", g.instance, "instance name (default: the config's)");
  app.add_option("--socket", g.socket, "lb-healthd's control socket (default: from the config)");
  app.add_option("--telemetry", g.telemetry,
                 "lbd's telemetry socket (default /var/run/dpdk/<instance>/dpdk_telemetry.v2)");
  app.add_flag("--json", g.json, "JSON output");
  app.add_flag("--wait", g.wait, "changes: return once lbd has applied the change");
  app.add_option("--timeout", g.timeout_s, "seconds --wait waits (default 5, at most 60)")
      ->check(CLI::Range(0.001, 60.0));
  app.set_version_flag("--version", "lbctl " LB_VERSION);

  Context ctx(g);
  std::function<int()> action;

  std::string only;
  auto* status = app.add_subcommand("status", "services, backends, health and flows");
  status->add_option("service", only, "only this service");
  status->callback([&] { action = [&] { return cmd_status(ctx, only); }; });

  // backend
  auto* backend = app.add_subcommand("backend", "add, remove or change a backend");
  backend->require_subcommand(1);
  std::string b_service, b_endpoint, b_state, b_initial;
  int64_t b_weight = 1;
  bool b_now = false;
  double b_drain = 300;
  auto* b_add = backend->add_subcommand("add", "add a backend to a service");
  b_add->add_option("service", b_service, "service name")->required();
  b_add->add_option("backend", b_endpoint, "ADDR:PORT")->required();
  CLI::Option* add_weight = b_add->add_option("--weight", b_weight, "weight (default 1)");
  b_add->add_option("--state", b_state, "ready (default), drain or maint")
      ->check(CLI::IsMember({"ready", "drain", "maint"}));
  b_add->add_option("--initial-state", b_initial, "up or down before its first checks")
      ->check(CLI::IsMember({"up", "down"}));
  b_add->callback([&] {
    action = [&] {
      return cmd_backend_add(ctx, b_service, b_endpoint, add_weight, b_weight, b_state, b_initial);
    };
  });
  auto* b_set = backend->add_subcommand("set", "change a backend's weight or admin state");
  b_set->add_option("service", b_service, "service name")->required();
  b_set->add_option("backend", b_endpoint, "ADDR:PORT")->required();
  CLI::Option* set_weight = b_set->add_option("--weight", b_weight, "weight");
  b_set->add_option("--state", b_state, "ready, drain or maint")
      ->check(CLI::IsMember({"ready", "drain", "maint"}));
  b_set->add_option("--initial-state", b_initial, "up or down")
      ->check(CLI::IsMember({"up", "down"}));
  b_set->callback([&] {
    action = [&] {
      return cmd_backend_set(ctx, b_service, b_endpoint, set_weight, b_weight, b_state, b_initial);
    };
  });
  auto* b_remove = backend->add_subcommand(
      "remove", "drain a backend, wait for its flows to end, remove it (--now: at once)");
  b_remove->add_option("service", b_service, "service name")->required();
  b_remove->add_option("backend", b_endpoint, "ADDR:PORT")->required();
  b_remove->add_flag("--now", b_now, "remove at once: its established flows are cut");
  b_remove->add_option("--drain-timeout", b_drain, "seconds to wait for flows (default 300)")
      ->check(CLI::PositiveNumber);
  b_remove->callback([&] {
    action = [&] { return cmd_backend_remove(ctx, b_service, b_endpoint, b_now, b_drain); };
  });

  // service
  auto* service = app.add_subcommand("service", "add, remove or change a service");
  service->require_subcommand(1);
  std::string s_name, s_vip;
  std::vector<std::string> s_backends;
  int64_t s_port = 0;
  ServiceOptions add_opts;
  ServiceOptions set_opts;
  auto* s_add = service->add_subcommand("add", "add a service (a new VIP is served at once)");
  s_add->add_option("name", s_name, "service name")->required();
  s_add->add_option("vip", s_vip, "VIP:PORT")->required();
  s_add->add_option("--backend", s_backends, "ADDR:PORT (repeat for more)");
  add_opts.add(s_add);
  s_add->callback(
      [&] { action = [&] { return cmd_service_add(ctx, s_name, s_vip, s_backends, add_opts); }; });
  auto* s_set = service->add_subcommand("set", "change a service's VIP, scheduler or checks");
  s_set->add_option("name", s_name, "service name")->required();
  s_set->add_option("--vip", s_vip, "VIP or VIP:PORT");
  CLI::Option* port_opt = s_set->add_option("--port", s_port, "port on the VIP");
  set_opts.add(s_set);
  s_set->callback([&] {
    action = [&] { return cmd_service_set(ctx, s_name, s_vip, port_opt, s_port, set_opts); };
  });
  auto* s_remove = service->add_subcommand("remove", "remove a service and its VIP");
  s_remove->add_option("name", s_name, "service name")->required();
  s_remove->callback([&] {
    action = [&] { return run_change(ctx, {{"cmd", "service.remove"}, {"name", s_name}}); };
  });

  // node
  auto* node = app.add_subcommand("node", "drain this node (withdraw its VIPs) or make it ready");
  node->require_subcommand(1);
  double n_timeout = 300;
  int64_t n_threshold = 0;
  auto* n_drain = node->add_subcommand(
      "drain", "withdraw every VIP over BGP, wait for lbd's traffic to go (docs/operations.md)");
  n_drain->add_option("--timeout", n_timeout, "seconds to wait (default 300)")
      ->check(CLI::Range(0.0, 86400.0));
  n_drain->add_option("--threshold", n_threshold, "drained at this many active flows (default 0)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  n_drain->callback([&] { action = [&] { return cmd_node_drain(ctx, n_timeout, n_threshold); }; });
  auto* n_ready = node->add_subcommand("ready", "announce the VIPs again");
  n_ready->callback([&] { action = [&] { return cmd_node_ready(ctx); }; });

  // stats, flows
  auto* stats = app.add_subcommand("stats", "rates and counters from lbd");
  double watch_s = 1;
  double interval_s = 1;
  int64_t count = 0;
  CLI::Option* watch_opt = stats->add_option("--watch", watch_s, "redraw every SECONDS (default 1)")
                               ->expected(0, 1)
                               ->default_str("1")
                               ->check(CLI::Range(0.05, 3600.0));
  stats->add_option("--interval", interval_s, "seconds the rates are measured over (default 1)")
      ->check(CLI::Range(0.05, 3600.0));
  stats->add_option("--count", count, "with --watch: stop after N screens");
  stats->callback([&] {
    action = [&] { return cmd_stats(ctx, watch_opt->count() > 0, watch_s, interval_s, count); };
  });
  auto* flows = app.add_subcommand("flows", "lbd's live flows: their number and the oldest");
  int64_t limit = 20;
  flows->add_option("--limit", limit, "list the N oldest flows (default 20, at most 256)");
  flows->callback([&] { action = [&] { return cmd_flows(ctx, limit); }; });

  // capture
  auto* capture = app.add_subcommand(
      "capture", "capture a port's packets to a pcapng file (dpdk-dumpcap; lbd on hugepages)");
  lb::ctl::CaptureRequest cap;
  capture->add_option("port", cap.port, "port name from the config (or DPDK port number)")
      ->required();
  capture->add_option("filter", cap.filter, "libpcap filter, e.g. 'tcp port 80'");
  capture->add_option("-w,--write", cap.file, "pcapng file to write")->required();
  // Not -c: that is lbctl's --config, before or after the subcommand.
  capture->add_option("--count", cap.count, "stop after N packets")->check(CLI::PositiveNumber);
  capture->add_option("--duration", cap.duration, "stop after SECONDS")->check(CLI::PositiveNumber);
  capture->callback([&] { action = [&] { return cmd_capture(ctx, cap); }; });

  // config
  auto* config = app.add_subcommand("config", "check, reload, save or diff the configuration");
  config->require_subcommand(1);
  std::string check_file, output;
  bool replace = false;
  auto* c_check = config->add_subcommand("check", "validate a file as the daemons would");
  c_check->add_option("file", check_file, "configuration file")->required();
  c_check->callback([&] { action = [&] { return cmd_config_check(ctx, check_file); }; });
  auto* c_reload = config->add_subcommand(
      "reload", "lb-healthd re-reads its file and applies what changed in it");
  c_reload->add_flag("--replace", replace,
                     "the file replaces the running services (runtime changes are dropped)");
  bool reload_now = false;
  double reload_drain = 0;
  CLI::Option* now_opt = c_reload->add_flag(
      "--now", reload_now, "what the file removes goes at once: its connections are reset");
  CLI::Option* reload_drain_opt =
      c_reload
          ->add_option("--drain-timeout", reload_drain,
                       "seconds what the file removes may drain (default: the file's "
                       "healthd.drain_timeout_ms)")
          ->check(CLI::Range(0.0, 86400.0));
  reload_drain_opt->excludes(now_opt);
  c_reload->callback([&] {
    action = [&] {
      return cmd_config_reload(ctx, replace, reload_now, reload_drain_opt, reload_drain);
    };
  });
  auto* c_save = config->add_subcommand(
      "save", "write the running configuration over lb-healthd's file (or to -o FILE)");
  c_save->add_option("-o,--output", output, "write here instead ('-': standard output)");
  c_save->callback([&] { action = [&] { return cmd_config_save(ctx, output); }; });
  auto* c_diff = config->add_subcommand("diff", "runtime changes not in the file");
  c_diff->callback([&] { action = [&] { return cmd_config_diff(ctx); }; });

  strict_numbers(&app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lbctl: %s (lbctl --help)\n", e.what());
    return kUsage;
  }
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return action ? action() : kUsage;
  } catch (const Usage& e) {
    std::fprintf(stderr, "lbctl: %s\n", e.what());
    return kUsage;
  } catch (const Refused& e) {
    std::fprintf(stderr, "lbctl: %s\n", e.what());
    return kRefused;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lbctl: %s\n", e.what());
    return kRefused;
  }
}

}  // namespace

int main(int argc, char** argv) {
  return run(argc, argv);
}
