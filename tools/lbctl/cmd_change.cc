// lbctl backend, service and config: changes sent to lb-healthd's control socket.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "commands.h"
#include "files.h"
#include "healthd_check.h"

namespace lbctl {

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
  // Its active flows; nullopt while not known: lbd's listing (every page) lacks it but is not
  // complete (an lbd that does not page), so its absence says nothing.
  std::optional<uint64_t> active;
  bool told = false;
  for (;;) {
    const lb::ctl::Listing backends = t->query_all("/lb/backends");
    active = backends.complete ? std::optional<uint64_t>(0) : std::nullopt;
    for (const auto& [key, b] : backends.entries.items()) {
      if (b.is_object() && b.value("service", std::string()) == service &&
          b.value("address", std::string()) == key_addr)
        active = active.value_or(0) + b.value("flows_active", uint64_t{0});
    }
    if (active == uint64_t{0}) break;
    const std::string flows =
        active ? std::to_string(*active) + " active flow(s)"
               : std::string("flows not known (lbd's listing of its backends is incomplete)");
    if (!told && !ctx.json()) {
      std::printf("draining %s: %s; waiting (at most %.0fs)\n", label.c_str(), flows.c_str(),
                  drain_timeout);
      std::fflush(stdout);
      told = true;
    }
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited >= drain_timeout || interrupted()) {
      throw Refused(label + (active ? " still has " : ": ") + flows + " after " +
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

// -- Health and service options, shared by service add and service set --------------------

void ServiceOptions::add(CLI::App* app) {
  opts.push_back(app->add_option("--scheduler", scheduler, "rr, wrr, random, lc or maglev")
                     ->check(CLI::IsMember({"rr", "wrr", "random", "lc", "maglev"})));
  opts.push_back(app->add_option("--on-all-down", on_all_down, "fail_closed or fail_open")
                     ->check(CLI::IsMember({"fail_closed", "fail_open"})));
  opts.push_back(app->add_option("--maint", maint, "keep or drop: flows of backends in maint")
                     ->check(CLI::IsMember({"keep", "drop"})));
  opts.push_back(app->add_option("--health-path", path, "health check path (health.path)"));
  opts.push_back(app->add_option("--interval", interval, "ms between checks (health.interval_ms)"));
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

Json ServiceOptions::settings(bool unset) const {
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

namespace {

// Whether two paths name one file (a link, another spelling); nullopt when either cannot be
// looked at from here (a relative path of lb-healthd's, another mount namespace).
std::optional<bool> same_file(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  if (a.empty() || a[0] != '/' || ::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0)
    return std::nullopt;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

int cmd_config_reload(Context& ctx, bool replace, bool now, CLI::Option* drain_opt,
                      double drain_s) {
  // lb-healthd re-reads its own file: `lbctl -c new.cfg config reload` answered "no change" and
  // exit 0, new.cfg never read.
  if (const std::optional<std::string> given = ctx.config_given()) {
    const Json pong = ctx.call({{"cmd", "ping"}});
    check(pong, ctx.json());
    const std::string theirs = pong.value("config_file", std::string());
    if (same_file(theirs, *given) == false) {
      throw Refused("lb-healthd reloads its own file, " + theirs + ", not " + *given +
                    " (-c only says where the sockets are): copy it over that file, or leave "
                    "-c out");
    }
  }
  Json req = {{"cmd", "config.reload"}};
  if (replace) req["replace"] = true;
  if (now) req["drain_timeout_ms"] = 0;
  // 0 removes at once; any other value drains at least a millisecond (0.0004 s meant a drain).
  if (drain_opt->count() > 0) {
    req["drain_timeout_ms"] =
        drain_s > 0 ? std::max<int64_t>(1, std::llround(drain_s * 1000)) : int64_t{0};
  }
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
    // A file written over keeps its mode, owner and group, like lb-healthd's own save; a
    // symlink is written through, as lb-healthd's save does.
    const std::string target = lb::symlink_target(output);
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0) {
      lb::write_file_atomic(target, text, st.st_mode & 07777, lb::FileOwner{st.st_uid, st.st_gid});
    } else {
      lb::write_file_atomic(target, text, 0644);
    }
  } catch (const std::exception& e) {
    throw Refused(e.what());
  }
  if (ctx.json()) {
    print_json({{"ok", true}, {"path", output}});
  } else {
    std::printf("wrote the running configuration to %s\n", output.c_str());
  }
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

}  // namespace lbctl
