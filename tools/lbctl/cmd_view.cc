// lbctl status, stats, flows and capture: what lb-healthd and lbd say.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "commands.h"

namespace lbctl {

namespace {

// lb-healthd cannot be reached: what lbd applies, and exit 1 (the reason on stderr).
int status_from_lbd(Context& ctx, const std::string& only, const std::string& healthd_error) {
  Json view;
  try {
    lb::ctl::TelemetryClient& t = ctx.telemetry();
    view = lb::ctl::lbd_status(t.query_all("/lb/backends").entries, t.query("/lb/pool"),
                               t.query("/lb/stats"), t.hello(), healthd_error);
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

}  // namespace

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
    std::string names;
    for (const Json& s : status["services"]) {
      if (s.value("name", std::string()) == only) kept.push_back(s);
      names += (names.empty() ? "" : ", ") + s.value("name", std::string());
    }
    if (kept.empty()) {
      throw Refused("unknown service '" + only +
                    "' (services: " + (names.empty() ? "none" : names) + ")");
    }
    status["services"] = kept;
  }
  Json backends;
  std::string why;
  try {
    backends = ctx.telemetry().query_all("/lb/backends").entries;  // every page
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

int cmd_stats(Context& ctx, bool watch, double period, double interval, int64_t count) {
  catch_interrupt();
  lb::ctl::TelemetryClient& t = ctx.telemetry();
  const std::string instance = ctx.lbd_instance();
  const Json pid = t.hello().value("pid", Json());
  const bool redraw = watch && !ctx.json() && ::isatty(1);
  lb::ctl::LbdSnapshot a = lb::ctl::read_snapshot(t);
  int64_t frames = 0;
  for (;;) {
    pause_for(watch ? period : interval);
    if (interrupted()) break;
    lb::ctl::LbdSnapshot b = lb::ctl::read_snapshot(t);
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

}  // namespace lbctl
