#pragma once
// lbctl's commands, by group: what lb-healthd and lbd say (cmd_view.cc: status, stats, flows,
// capture), changes to backends, services and the configuration (cmd_change.cc), and the node
// (cmd_node.cc: drain, ready). main.cc reads the command line and calls one of them; each
// returns the exit status or throws Refused / Usage.

#include <cstdint>
#include <string>
#include <vector>

#include "capture.h"
#include "context.h"

namespace lbctl {

int cmd_status(Context& ctx, const std::string& only);
int cmd_stats(Context& ctx, bool watch, double period, double interval, int64_t count);
int cmd_flows(Context& ctx, int64_t limit);
// Replaces lbctl with dpdk-dumpcap (its output, Ctrl-C and exit status are the capture's).
int cmd_capture(Context& ctx, const lb::ctl::CaptureRequest& r);

int cmd_backend_add(Context& ctx, const std::string& service, const std::string& endpoint,
                    CLI::Option* weight_opt, int64_t weight, const std::string& state,
                    const std::string& initial);
int cmd_backend_set(Context& ctx, const std::string& service, const std::string& endpoint,
                    CLI::Option* weight_opt, int64_t weight, const std::string& state,
                    const std::string& initial);
// Drains first (no new flows), waits until lbd has no flow left on the backend, then removes it.
int cmd_backend_remove(Context& ctx, const std::string& service, const std::string& endpoint,
                       bool now, double drain_timeout);

// The health and service options of service add and service set.
struct ServiceOptions {
  std::string scheduler, on_all_down, maint, miss_policy, forward, syn_flood_policy;
  std::string path, expect_status, expect_body, host, initial_state;
  int64_t interval = 0, timeout = 0, rise = 0, fall = 0, fast = 0, down = 0, jitter = 0, port = 0,
          syn_rst = 0, syn_timeout = 0, maglev_table_size = 0;
  std::vector<CLI::Option*> opts;

  void add(CLI::App* app);
  bool given(size_t i) const { return opts[i]->count() > 0; }
  // The settings given, as config keys; `unset` turns "" and 0 into null (service set).
  Json settings(bool unset) const;
};

int cmd_service_add(Context& ctx, const std::string& name, const std::string& vip,
                    const std::vector<std::string>& backends, const ServiceOptions& o);
int cmd_service_set(Context& ctx, const std::string& name, const std::string& vip,
                    CLI::Option* port_opt, int64_t port, const ServiceOptions& o);
int cmd_config_check(Context& ctx, const std::string& file);
int cmd_config_reload(Context& ctx, bool replace, bool now, CLI::Option* drain_opt, double drain_s);
int cmd_config_save(Context& ctx, const std::string& output);
int cmd_config_diff(Context& ctx);

// Withdraws every VIP, then waits until lbd's traffic has gone (cmd_node.cc says how).
int cmd_node_drain(Context& ctx, double timeout, int64_t threshold);
int cmd_node_ready(Context& ctx);

}  // namespace lbctl
