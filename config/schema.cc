#include "schema.h"

#include <array>
#include <string>

namespace lb::cfg::schema {

namespace {

using K = std::string_view;

// Each list is the order the parser names the keys in ("allowed: ..." messages, which tests and
// docs/configuration.md quote) and the order a written file has them in: a group's scalars
// first, its lists and subgroups after, as an operator would write it.
constexpr K kRoot[] = {"instance", "dataplane", "services", "healthd", "bgp"};
constexpr K kDataplane[] = {"workers",
                            "mbufs",
                            "ports",
                            "flows",
                            "retry",
                            "miss_policy",
                            "no_backend_policy",
                            "maglev_hash_seed",
                            "idle",
                            "fullnat_addresses",
                            "fullnat_ports"};
constexpr K kPort[] = {"name",           "device",         "ip",     "gateway",
                       "rx_descriptors", "tx_descriptors", "vip_arp"};
constexpr K kFlows[] = {"capacity",         "tcp_syn_timeout",    "tcp_established_timeout",
                        "tcp_fin_timeout",  "tcp_closed_timeout", "persist",
                        "directory",        "syn_budget",         "tcp_syn_timeout_pressure",
                        "syn_flood_policy", "stateless_rate",     "fullnat_port_hold"};
constexpr K kRetry[] = {"on_rst", "syn_timeout_ms", "max_retries"};
constexpr K kIdle[] = {"mode", "after_empty_polls", "max_sleep_us"};
constexpr K kService[] = {"name",
                          "vip",
                          "port",
                          "protocol",
                          "scheduler",
                          "forward",
                          "maglev_table_size",
                          "miss_policy",
                          "syn_flood_policy",
                          "on_all_down",
                          "maint",
                          "health",
                          "backends"};
constexpr K kHealth[] = {"path",
                         "interval_ms",
                         "timeout_ms",
                         "rise",
                         "fall",
                         "expect_status",
                         "fast_interval_ms",
                         "down_interval_ms",
                         "jitter_pct",
                         "expect_body",
                         "host",
                         "port",
                         "initial_state",
                         "passive"};
constexpr K kPassive[] = {"syn_rst", "syn_timeout"};
constexpr K kBackend[] = {"address", "port", "weight", "state", "initial_state"};
constexpr K kHealthd[] = {"control_socket",   "socket_mode",   "socket_owner",
                          "socket_group",     "state_file",    "control_timeout_ms",
                          "drain_timeout_ms", "metrics_listen"};
constexpr K kBgp[] = {"local_as",       "router_id",   "next_hop",   "neighbors",
                      "hold_time",      "communities", "med",        "announce_when",
                      "lbd_timeout_ms", "bird_config", "bird_socket"};
constexpr K kBgpNeighbor[] = {"address", "as"};

constexpr std::array kGroups = {
    GroupKeys{Group::kRoot, "", kRoot},
    GroupKeys{Group::kDataplane, "dataplane", kDataplane},
    GroupKeys{Group::kPort, "dataplane.ports.[]", kPort},
    GroupKeys{Group::kFlows, "dataplane.flows", kFlows},
    GroupKeys{Group::kRetry, "dataplane.retry", kRetry},
    GroupKeys{Group::kIdle, "dataplane.idle", kIdle},
    GroupKeys{Group::kService, "services.[]", kService},
    GroupKeys{Group::kHealth, "services.[].health", kHealth},
    GroupKeys{Group::kPassive, "services.[].health.passive", kPassive},
    GroupKeys{Group::kBackend, "services.[].backends.[]", kBackend},
    GroupKeys{Group::kHealthd, "healthd", kHealthd},
    GroupKeys{Group::kBgp, "bgp", kBgp},
    GroupKeys{Group::kBgpNeighbor, "bgp.neighbors.[]", kBgpNeighbor},
};

}  // namespace

std::span<const GroupKeys> groups() {
  return kGroups;
}

std::span<const std::string_view> keys(Group group) {
  for (const GroupKeys& g : kGroups) {
    if (g.group == group) return g.keys;
  }
  return {};
}

std::optional<Group> group_at(std::string_view path) {
  // "services.[2].health" -> "services.[].health"
  std::string shape;
  for (size_t i = 0; i < path.size(); ++i) {
    shape += path[i];
    if (path[i] == '[') {
      while (i + 1 < path.size() && path[i + 1] != ']') ++i;
    }
  }
  for (const GroupKeys& g : kGroups) {
    if (g.path == shape) return g.group;
  }
  return std::nullopt;
}

}  // namespace lb::cfg::schema
