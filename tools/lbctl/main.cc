// lbctl: inspect and reconfigure a running lbd and lb-healthd (docs/lbctl.md).
//
// Changes go to lb-healthd's control socket (it validates them like the file, applies them all or
// nothing, keeps them in its state file and pushes them to lbd); counters come from lbd's DPDK
// telemetry socket. Exit status: 0 done, 1 refused (the reason on stderr, one line), 2 usage.
// This file reads the command line; the commands are in cmd_*.cc (commands.h).

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "commands.h"
#include "lb_version.h"
#include "printable.h"

namespace lbctl {
namespace {

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
  // CLI11 saturates a value too large for its type (strtoll): `--weight 99999999999999999999`
  // went on as 9223372036854775807. Every integer option is an int64_t.
  const std::string shown = value.size() > 24 ? value.substr(0, 20) + "..." : value;
  if (fraction) {
    errno = 0;
    const double d = std::strtod(value.c_str(), nullptr);
    if (errno == ERANGE && std::isinf(d)) return "value " + shown + " is out of range";
  } else {
    int64_t n = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc{} || end != value.data() + value.size())
      return "value " + shown + " is out of range -9223372036854775808..9223372036854775807";
  }
  return "";
}

// For options that must be above 0 (CLI11's PositiveNumber says "not in range 0.000000 to" a
// number of 309 digits).
const CLI::Validator kAboveZero(
    [](std::string& v) {
      const double d = std::strtod(v.c_str(), nullptr);
      return d > 0 ? std::string() : "expected a number above 0, found '" + v + "'";
    },
    "POSITIVE", "POSITIVE");
const CLI::Validator kAtLeastOne(
    [](std::string& v) {
      return std::strtoll(v.c_str(), nullptr, 10) >= 1
                 ? std::string()
                 : "expected an integer of at least 1, found '" + v + "'";
    },
    ">= 1", ">= 1");

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

// The one line of an error, whatever it quotes (an argument, a name a client gave lb-healthd):
// CR, LF, tab and the other control characters escaped (\r, \n, \t, \xNN).
void print_error(const char* what) {
  // One line whatever the message holds (a value quoted from the user's input may not).
  std::string line = "lbctl: " + lb::printable(what);
  line += '\n';
  std::fputs(line.c_str(), stderr);
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
      ->check(kAboveZero);
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
  s_set->add_option("--vip", s_vip, "VIP or VIP:PORT")
      ->check(CLI::Validator(
          [](std::string& v) {
            return v.empty() ? std::string("expected VIP or VIP:PORT, found ''") : std::string();
          },
          "", ""));
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
  stats->add_option("--count", count, "with --watch: stop after N screens")
      ->check(kAtLeastOne)
      ->needs(watch_opt);
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
  capture->add_option("--count", cap.count, "stop after N packets")->check(kAboveZero);
  capture->add_option("--duration", cap.duration, "stop after SECONDS")->check(kAboveZero);
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
    print_error((std::string(e.what()) + " (lbctl --help)").c_str());
    return kUsage;
  }
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return action ? action() : kUsage;
  } catch (const Usage& e) {
    print_error(e.what());
    return kUsage;
  } catch (const Refused& e) {
    print_error(e.what());
    return kRefused;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kRefused;
  }
}

}  // namespace
}  // namespace lbctl

int main(int argc, char** argv) {
  return lbctl::run(argc, argv);
}
