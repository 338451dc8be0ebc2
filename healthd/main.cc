// lb-healthd: checks lbd's backends over HTTP and pushes each service's live pool to lbd; takes
// runtime changes from lbctl on its control socket and keeps them in its state file.
// `lb-healthd --config FILE [--instance NAME] [--runtime-dir DIR] [--log-level LEVEL] [--check]`;
// docs/healthd.md, docs/lbctl.md.
#include <curl/curl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <string>

#include "control_server.h"
#include "daemon.h"
#include "lb_config.h"
#include "lb_version.h"
#include "log.h"
#include "metrics_server.h"
#include "runtime_dir.h"
#include "state_file.h"
#include "telemetry_client.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{
      "lb-healthd: HTTP health checks for lbd's backends; pushes each service's live pool to lbd\n"
      "over shared memory (/dev/shm/lbd-<instance>).\n"
      "Signals: SIGTERM/SIGINT stop, SIGHUP reloads the file (a bad file is refused and the\n"
      "running configuration kept), SIGUSR1 logs the state of every backend.\n"
      "Runtime changes: lbctl, on the control socket (healthd.control_socket, default\n"
      "/run/lbd/<instance>.sock); they are kept in healthd.state_file (default <config>.state).",
      "lb-healthd"};
  std::string config_path;
  std::string instance;
  std::string level = "info";
  std::string runtime_dir = lb::health::default_runtime_dir();
  bool check = false;
  app.add_option("-c,--config", config_path, "configuration file (the same as lbd's)")->required();
  app.add_option("-i,--instance", instance,
                 "instance name (overrides the file's `instance`; default \"lbd\"): the segment "
                 "is /lbd-<instance>");
  app.add_option("--runtime-dir", runtime_dir,
                 "where the instance lock and the backends' last health are kept (default "
                 "/run/lbd for root, else $XDG_RUNTIME_DIR/lbd or /tmp/lbd-<uid>); only "
                 "lb-healthd's user may write there");
  app.add_option("--log-level", level, "debug, info, warning or error (default info)");
  app.add_flag("--check", check, "validate the configuration and exit");
  app.set_version_flag("--version", "lb-healthd " LB_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version: 0
  } catch (const CLI::ParseError& e) {
    // CLI11's own codes (106 for a missing --config, 109 for an unknown option...) say nothing
    // to a service manager: every usage error is 2, as for lbctl.
    std::fprintf(stderr, "lb-healthd: %s (lb-healthd --help)\n", e.what());
    return 2;
  }

  const std::optional<lb::health::LogLevel> parsed = lb::health::parse_log_level(level);
  if (!parsed) {
    std::fprintf(stderr, "lb-healthd: --log-level: expected debug, info, warning or error\n");
    return 2;
  }
  lb::health::set_log_level(*parsed);
  if (!instance.empty()) {
    // The same rule as the file's `instance` key: it becomes part of a shm name.
    const bool ok =
        instance.size() <= 32 && instance.find_first_not_of(
                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789_-") == std::string::npos;
    if (!ok) {
      std::fprintf(stderr, "lb-healthd: --instance: use 1..32 characters from A-Z a-z 0-9 _ -\n");
      return 2;
    }
  }

  lb::cfg::Config config;
  try {
    config = lb::cfg::load_config(config_path);
  } catch (const lb::cfg::ConfigError& e) {
    std::fprintf(stderr, "lb-healthd: %s\n", e.what());
    return 1;
  }
  if (const std::optional<std::string> problem = lb::health::check_for_healthd(config)) {
    std::fprintf(stderr, "lb-healthd: %s\n", problem->c_str());
    return 1;
  }
  // Runtime changes kept from an earlier run are merged with the file (state_file.h).
  const std::string state_path = lb::cfg::state_file_path(config, config_path);
  lb::health::Startup startup;
  try {
    startup = lb::health::load_startup(config, state_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lb-healthd: %s\n", e.what());
    return 1;
  }
  const std::string socket_path = lb::cfg::control_socket_path(config, instance);
  if (check) {
    size_t backends = 0;
    for (const auto& s : startup.running.services) backends += s.backends.size();
    std::printf("%s: OK (%zu service(s), %zu backend(s), segment %s, control socket %s, %s)\n",
                config_path.c_str(), startup.running.services.size(), backends,
                lb::shm::segment_name(instance.empty() ? config.instance : instance).c_str(),
                socket_path.empty() ? "none" : socket_path.c_str(),
                state_path.empty() ? "runtime changes not persisted"
                : startup.from_state
                    ? ("state " + state_path + ": " + std::to_string(startup.changes.size()) +
                       " runtime change(s) over the file")
                          .c_str()
                    : ("state " + state_path + ": none yet").c_str());
    return 0;
  }

  // Signals arrive through a signalfd polled with the checks: no handler runs inside the loop.
  sigset_t set;
  sigemptyset(&set);
  for (const int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set, sig);
  if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) {
    std::perror("lb-healthd: sigprocmask");
    return 1;
  }
  const int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    std::perror("lb-healthd: signalfd");
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);

  // A socket per check in flight: the default soft limit (1024 under systemd) is raised.
  {
    size_t backends = 0;
    for (const auto& s : startup.running.services) backends += s.backends.size();
    uint64_t before = 0;
    const uint64_t limit = lb::health::raise_open_file_limit(lb::health::kWantedOpenFiles, before);
    if (limit != before) {
      HLOG_INFO("open-file limit raised from %llu to %llu (a socket per check in flight)",
                static_cast<unsigned long long>(before), static_cast<unsigned long long>(limit));
    }
    if (limit < backends + 256) {
      HLOG_WARNING(
          "open-file limit %llu is low for %zu backend(s): checks that find no socket are put "
          "off (raise LimitNOFILE=)",
          static_cast<unsigned long long>(limit), backends);
    }
  }

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    std::fprintf(stderr, "lb-healthd: curl_global_init failed\n");
    return 1;
  }
  int rc = 0;
  try {
    lb::health::Options options;
    options.config_path = config_path;
    options.instance = instance;
    options.state_file = state_path;
    options.runtime_dir = runtime_dir;
    if (startup.from_state) {
      HLOG_INFO("runtime state %s: %zu change(s) over %s%s", state_path.c_str(),
                startup.changes.size(), config_path.c_str(),
                startup.base_moved ? " (the file changed since: its changes are applied too)" : "");
      for (const std::string& c : startup.changes) HLOG_INFO("  kept: %s", c.c_str());
    }
    const lb::cfg::HealthdConfig hc = config.healthd;
    lb::health::Daemon daemon(std::move(startup.running), options);
    daemon.set_base(std::move(startup.base));
    if (!socket_path.empty()) {
      lb::health::ControlOptions co;
      co.path = socket_path;
      co.mode = hc.socket_mode;
      co.owner = hc.socket_owner;
      co.group = hc.socket_group;
      co.idle_timeout = lb::health::Millis(hc.control_timeout_ms);
      try {
        daemon.set_control(std::make_unique<lb::health::ControlServer>(co));
        HLOG_INFO("control socket %s (mode %04o%s%s%s%s)", socket_path.c_str(), hc.socket_mode,
                  hc.socket_owner.empty() ? "" : ", owner ", hc.socket_owner.c_str(),
                  hc.socket_group.empty() ? "" : ", group ", hc.socket_group.c_str());
      } catch (const std::exception& e) {
        // A socket the file asks for must be there; the default one is tried (it needs
        // /run/lbd, i.e. usually root), and its absence said loudly.
        if (hc.control_socket) {
          throw std::runtime_error(std::string("control socket: ") + e.what() +
                                   " (healthd.control_socket = \"\" runs without one)");
        }
        HLOG_WARNING(
            "control socket: %s: running without one: lbctl cannot reach this "
            "lb-healthd (set healthd.control_socket to a path it may create)",
            e.what());
      }
    } else {
      HLOG_INFO("no control socket (healthd.control_socket is empty)");
    }
    if (const std::string listen = lb::cfg::metrics_listen(hc); !listen.empty()) {
      lb::health::MetricsOptions mo;
      mo.listen = *lb::cfg::parse_listen(listen);  // validated with the file
      mo.telemetry = lb::ctl::telemetry_path(instance.empty() ? config.instance : instance);
      try {
        daemon.set_metrics(std::make_unique<lb::health::MetricsServer>(mo));
        HLOG_INFO("metrics on http://%s/metrics", listen.c_str());
      } catch (const std::exception& e) {
        // Like the control socket: an endpoint the file asks for must be there; the default
        // one (another instance may hold its port) is given up loudly.
        if (hc.metrics_listen)
          throw std::runtime_error(std::string(e.what()) +
                                   " (healthd.metrics_listen = \"\" runs without metrics)");
        HLOG_WARNING("%s: running without metrics (set healthd.metrics_listen)", e.what());
      }
    } else {
      HLOG_INFO("no metrics endpoint (healthd.metrics_listen is empty)");
    }
    rc = daemon.run(sfd);
  } catch (const std::exception& e) {
    HLOG_ERROR("fatal: %s", e.what());
    rc = 1;
  }
  curl_global_cleanup();
  close(sfd);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lb-healthd: %s\n", e.what());
    return 1;
  }
}
