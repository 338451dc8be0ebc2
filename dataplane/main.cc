// lbd: the dataplane. `lbd [EAL args] -- --config FILE [--check]`.
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_pdump.h>

#include <unistd.h>
#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane.h"
#include "lb_config.h"
#include "lb_version.h"
#include "log.h"
#include "telemetry.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  g_stop.store(true, std::memory_order_relaxed);
}

size_t count_backends(const lb::cfg::Config& c) {
  size_t n = 0;
  for (const auto& s : c.services) n += s.backends.size();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  // DPDK convention: EAL arguments, then "--", then ours. Without "--" everything is ours, so
  // `lbd --config F --check` and `lbd --help` need no EAL at all.
  int split = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      split = i;
      break;
    }
  }
  std::vector<char*> eal_args(argv, argv + (split == argc ? 1 : split));
  std::vector<std::string> app_args;
  for (int i = (split == argc ? 1 : split + 1); i < argc; ++i) app_args.emplace_back(argv[i]);

  CLI::App app{
      "lbd: kernel-bypass L4 load balancer (DPDK)\n"
      "usage: lbd [EAL options] -- --config FILE [--instance NAME] [--fresh] [--check]\n"
      "       lbd --config FILE --check      (validates the file; no EAL, no root)",
      "lbd"};
  app.footer(
      "EAL options come before '--'. The usual ones: -l/--lcores (the first lcore runs the\n"
      "control thread, each further one a worker), --no-pci or -a PCI (the NICs lbd may use),\n"
      "--file-prefix (default: the instance name; lbctl and dpdk-dumpcap find lbd by it),\n"
      "--log-level=lb:debug, -m/--no-huge (single-process only: no packet capture).\n"
      "All of them: lbd --eal-help, or the DPDK guide's \"EAL parameters\" page.\n"
      "Flows survive a restart: each worker's flow table is kept in\n"
      "/dev/hugepages (or /dev/shm)/lbd-INSTANCE-flows-W and taken over by the next lbd of the\n"
      "instance if capacity, workers and ports are unchanged (else discarded, and logged);\n"
      "--fresh discards them; dataplane.flows.persist = false keeps them in lbd's memory.\n"
      "Manual: lbd(8), lbd.cfg(5).");
  std::string config_path;
  bool check = false;
  std::string instance;
  app.add_option("-c,--config", config_path, "configuration file (libconfig)")->required();
  app.add_option("--instance", instance,
                 "names the pool channel to lb-healthd (/dev/shm/lbd-NAME); default: the "
                 "config's instance");
  app.add_flag("--check", check, "validate the configuration and exit");
  bool fresh = false;
  app.add_flag("--fresh", fresh,
               "start with empty flow tables: discard those a previous lbd of this instance left "
               "(its connections are then lost)");
  app.add_flag_callback(
      "--eal-help",
      [&] {
        // EAL prints its own options and exits while parsing them, before it touches memory.
        std::vector<char*> help{argv[0], const_cast<char*>("--help"), nullptr};
        rte_eal_init(2, help.data());
      },
      "list DPDK's EAL options (they go before '--') and exit");
  app.set_version_flag("--version", "lbd " LB_VERSION);
  try {
    std::reverse(app_args.begin(), app_args.end());  // CLI11 takes them last-first
    app.parse(app_args);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; anything else is a usage error: 2, as for any command
    // (CLI11's own codes, 105..109, mean nothing to a shell script).
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "lbd: %s (lbd --help)\n", e.what());
    return 2;
  }
  if (!check && split == argc) {
    std::fprintf(stderr,
                 "lbd: EAL arguments expected before '--' (e.g. lbd -l 0,1 --no-pci -- --config "
                 "FILE)\n");
    return 2;
  }

  bool eal_up = false;
  try {
    const lb::cfg::Config config = lb::cfg::load_config(config_path);
    if (check) {
      std::printf("%s: OK (%zu port(s), %u worker(s), %zu service(s), %zu backend(s))\n",
                  config_path.c_str(), config.dataplane.ports.size(), config.dataplane.workers,
                  config.services.size(), count_backends(config));
      return 0;
    }
    // lbctl finds lbd's telemetry socket under /var/run/dpdk/<file-prefix>/: unless told
    // otherwise, the prefix is the instance name, so the config file alone says where it is.
    const std::string name = instance.empty() ? config.instance : instance;
    std::string prefix_arg = "--file-prefix=" + name;
    bool has_prefix = false;
    for (char* a : eal_args) has_prefix |= std::string_view(a).starts_with("--file-prefix");
    if (!has_prefix) eal_args.push_back(prefix_arg.data());
    // argv[argc] must be NULL, as getopt (inside rte_eal_init) may read it.
    const int eal_argc = static_cast<int>(eal_args.size());
    eal_args.push_back(nullptr);
    // Every DPDK message from here on is one timestamped line on stderr.
    lb::dp::open_log_stream("lbd");
    lb::dp::clear_errors();
    const int consumed = rte_eal_init(eal_argc, eal_args.data());
    if (consumed < 0) {
      // rte_errno is set on some failures only ("Success" otherwise): what EAL logged says why.
      const std::string logged = lb::dp::recent_errors();
      const std::string code = rte_errno != 0 ? rte_strerror(rte_errno) : "";
      throw std::runtime_error("EAL initialisation failed: " +
                               (logged.empty() ? (code.empty() ? "see EAL's messages above" : code)
                                : code.empty() ? logged
                                               : logged + " (" + code + ")"));
    }
    eal_up = true;
    // dpdk-dumpcap and dpdk-pdump attach as secondary processes and ask lbd, over EAL's IPC, to
    // copy its ports' packets to them (without this: "Cannot find action: mp_pdump"). Until
    // one does, the ports have no callbacks and the packet path is unchanged.
    if (rte_pdump_init() != 0)
      LB_LOG(WARNING, "packet capture (dpdk-dumpcap) unavailable: %s", rte_strerror(rte_errno));
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    {
      lb::dp::FlowMemoryOptions flows;
      if (config.dataplane.flows.persist) flows = {name, config.dataplane.flows.directory, fresh};
      lb::dp::Dataplane dp(config, lb::shm::segment_name(name), flows);
      lb::dp::register_telemetry(&dp);
      dp.launch();
      LB_LOG(INFO, "running; SIGINT or SIGTERM stops");
      // The control thread sleeps between its tasks: with two cores, one polls as a worker and
      // the other is needed by everything else.
      while (!g_stop.load(std::memory_order_relaxed)) {
        dp.control_tick(rte_rdtsc());
        usleep(250);  // 4000 wake-ups a second: pool updates apply well within 1 ms
      }
      LB_LOG(INFO, "stopping");
      lb::dp::unregister_telemetry();
      dp.stop();
      dp.log_summary();
    }
    rte_pdump_uninit();
    rte_eal_cleanup();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lbd: %s\n", e.what());
    if (eal_up) rte_eal_cleanup();
    return 1;
  }
}
