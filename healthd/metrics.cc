#include "metrics.h"

#include <array>
#include <map>
#include <optional>
#include <utility>

#include "drop_reason.h"
#include "lb_version.h"
#include "serving_state.h"

namespace lb::health {

// -- The exposition ------------------------------------------------------------------------------

namespace {

using Type = Exposition::Type;

std::optional<uint64_t> u64(const Json& object, const char* key) {
  if (!object.is_object()) return std::nullopt;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number_unsigned()) {
    if (it != object.end() && it->is_number_integer() && it->get<int64_t>() >= 0)
      return it->get<uint64_t>();
    return std::nullopt;
  }
  return it->get<uint64_t>();
}

std::string endpoint(uint32_t address, uint16_t port) {
  return cfg::format_ipv4(address) + ":" + std::to_string(port);
}

// /lb/stats keys, in family order; consecutive entries of one family share its HELP and TYPE.
// A key an lbd does not have (another version) is left out, and so is a family with none.
struct StatKey {
  const char* key;
  const char* family;
  Type type;
  const char* help;
  Label label;  // {"", ""}: none
};

constexpr StatKey kStatKeys[] = {
    {"flows_active",
     "lbd_flow_table_entries",
     Type::kGauge,
     "Flows in lbd's flow tables (every worker's).",
     {}},
    {"flows_created",
     "lbd_flows_created_total",
     Type::kCounter,
     "Flows created: connections scheduled to a backend.",
     {}},
    {"flows_expired",
     "lbd_flows_expired_total",
     Type::kCounter,
     "Flows removed by their idle timeout.",
     {}},
    {"flows_closed",
     "lbd_flows_closed_total",
     Type::kCounter,
     "Flows ended before expiry because a new SYN reused their tuple.",
     {}},
    {"flows_reused",
     "lbd_flows_reused_total",
     Type::kCounter,
     "Flows ended before expiry because a new SYN reused their tuple.",
     {}},
    {"flows_refused",
     "lbd_flows_refused_total",
     Type::kCounter,
     "Connections not given a flow: the table or the SYN budget was full, or the backend-side "
     "tuple in use.",
     {}},
    {"syn_evicted",
     "lbd_syn_evicted_total",
     Type::kCounter,
     "Embryonic flows (SYN seen, no SYN-ACK) evicted for a new SYN (syn_flood_policy "
     "evict-embryonic).",
     {}},
    {"syn_expired_pressure",
     "lbd_syn_expired_pressure_total",
     Type::kCounter,
     "Embryonic flows aged by tcp_syn_timeout_pressure while over half the SYN budget.",
     {}},
    {"syn_stateless",
     "lbd_syn_stateless_total",
     Type::kCounter,
     "SYNs routed by the Maglev table without a flow (syn_flood_policy stateless: over "
     "flows.stateless_rate, or the SYN budget or table full).",
     {}},
    {"flows_reset",
     "lbd_flows_reset_total",
     Type::kCounter,
     "Flows reset because their backend stopped serving (removed, or maint with drop).",
     {}},
    {"retries",
     "lbd_retries_total",
     Type::kCounter,
     "Connections moved to another backend after theirs reset or ignored the SYN.",
     {}},
    {"retry_syn_replayed",
     "lbd_retry_syn_replayed_total",
     Type::kCounter,
     "Retries whose saved SYN was replayed to the new backend at once.",
     {}},
    {"rst_no_backend",
     "lbd_resets_sent_total",
     Type::kCounter,
     "RSTs lbd sent to clients, by reason.",
     {"reason", "no_backend"}},
    {"rst_flow_miss", "lbd_resets_sent_total", Type::kCounter, "", {"reason", "flow_miss"}},
    {"rst_backend_stopped",
     "lbd_resets_sent_total",
     Type::kCounter,
     "",
     {"reason", "backend_stopped"}},
    {"arp_replies", "lbd_arp_replies_total", Type::kCounter, "ARP requests lbd answered.", {}},
    {"arp_learned", "lbd_arp_learned_total", Type::kCounter, "Neighbours lbd learned by ARP.", {}},
    {"icmp_echo_replies",
     "lbd_icmp_echo_replies_total",
     Type::kCounter,
     "ICMP echo requests lbd answered.",
     {}},
    {"handoff_out",
     "lbd_handoff_packets_total",
     Type::kCounter,
     "Packets passed between workers to the flow's owner (out: sent, in: received).",
     {"direction", "out"}},
    {"handoff_in", "lbd_handoff_packets_total", Type::kCounter, "", {"direction", "in"}},
    {"workers", "lbd_workers", Type::kGauge, "lbd's worker cores.", {}},
};

void render_stats(Exposition& x, const Json& stats) {
  const size_t n = std::size(kStatKeys);
  for (size_t i = 0; i < n;) {
    size_t end = i;
    bool any = false;
    while (end < n && std::string_view(kStatKeys[end].family) == kStatKeys[i].family) {
      any = any || u64(stats, kStatKeys[end].key).has_value();
      ++end;
    }
    if (any) {
      x.family(kStatKeys[i].family, kStatKeys[i].type, kStatKeys[i].help);
      for (size_t k = i; k < end; ++k) {
        const std::optional<uint64_t> v = u64(stats, kStatKeys[k].key);
        if (!v) continue;
        if (kStatKeys[k].label.name.empty()) {
          x.sample({}, *v);
        } else {
          x.sample({kStatKeys[k].label}, *v);
        }
      }
    }
    i = end;
  }
}

// One backend, from either side: lb-healthd's view (configured, checked) and lbd's counters,
// summed over the ids lbd has for it (an id not reclaimed yet may repeat a backend).
struct BackendRow {
  const ServiceStatus* service = nullptr;  // lb-healthd's
  const BackendStatus* healthd = nullptr;
  bool in_lbd = false;
  std::optional<ServingState> lbd_state;  // the most serving of its ids
  uint64_t flows_active = 0, flows_total = 0, packets_in = 0, bytes_in = 0, packets_out = 0,
           bytes_out = 0, syn_rst = 0, syn_timeout = 0;
};
using BackendKey = std::pair<std::string, std::string>;  // service, "address:port"

std::map<BackendKey, BackendRow> backend_rows(const DaemonStatus& h, const ctl::LbdSnapshot& lbd) {
  std::map<BackendKey, BackendRow> rows;
  for (const ServiceStatus& s : h.services) {
    for (const BackendStatus& b : s.backends) {
      if (b.removed) continue;  // draining after a reload: lbd's counters still show it
      BackendRow& r = rows[{s.name, endpoint(b.address, b.port)}];
      r.service = &s;
      r.healthd = &b;
    }
  }
  if (!lbd.up) return rows;
  for (const auto& item : lbd.backends.items()) {
    const Json& b = item.value();  // a plain reference: lambdas below capture it (clang 14)
    if (!b.is_object() || !b.contains("service") || !b.contains("address")) continue;
    if (!b["service"].is_string() || !b["address"].is_string()) continue;
    BackendRow& r = rows[{b["service"].get<std::string>(), b["address"].get<std::string>()}];
    r.in_lbd = true;
    const std::optional<ServingState> state = parse_serving_state(b.value("state", std::string()));
    if (state && (!r.lbd_state || *state > *r.lbd_state)) r.lbd_state = state;
    const auto add = [&](uint64_t& field, const char* name) { field += u64(b, name).value_or(0); };
    add(r.flows_active, "flows_active");
    add(r.flows_total, "flows_total");
    add(r.packets_in, "packets_in");
    add(r.bytes_in, "bytes_in");
    add(r.packets_out, "packets_out");
    add(r.bytes_out, "bytes_out");
    add(r.syn_rst, "syn_rst");
    add(r.syn_timeout, "syn_timeout");
  }
  return rows;
}

void render_healthd(Exposition& x, const DaemonStatus& h, double snapshot_age) {
  x.family("lbd_healthd_build_info", Type::kGauge, "lb-healthd's version, as a label.");
  x.sample({{"version", LB_VERSION}}, uint64_t{1});
  x.family("lbd_healthd_snapshot_age_seconds", Type::kGauge,
           "Age of lb-healthd's state in this scrape (its loop publishes it on demand; large "
           "when the loop is stuck).");
  x.sample({}, snapshot_age);
  x.family("lbd_healthd_attached", Type::kGauge,
           "1 when lb-healthd is attached to lbd's shared-memory channel.");
  x.sample({}, uint64_t{h.attached ? 1u : 0u});
  x.family("lbd_healthd_config_reloads_total", Type::kCounter,
           "Reloads of the configuration file, by result.");
  x.sample({{"result", "ok"}}, h.reloads);
  x.sample({{"result", "failed"}}, h.reload_failures);
  x.family("lbd_healthd_checks_retried_after_stall_total", Type::kCounter,
           "Checks run again, not failed: they timed out while lb-healthd's loop was held up "
           "(an answer may have arrived unread).");
  x.sample({}, h.stall_retries);
  x.family("lbd_healthd_checks_not_started_total", Type::kCounter,
           "Checks not started, not counted against the backend: lb-healthd could not open a "
           "socket (out of descriptors: raise its open-file limit).");
  x.sample({}, h.checks_not_started);
  if (h.bgp.enabled) {
    x.family("lbd_healthd_bird_timeouts_total", Type::kCounter,
             "Exchanges with BIRD that got no complete answer in time (BIRD stopped or stuck); "
             "health checks go on meanwhile.");
    x.sample({}, h.bgp.timeouts);
  }

  x.family("lbd_pool_generation_sent", Type::kGauge,
           "The newest pool update generation lb-healthd sent to lbd.");
  x.sample({}, h.generation);
  if (h.attached) {
    x.family("lbd_pool_generation_applied", Type::kGauge,
             "The newest pool update generation lbd applied (as lb-healthd reads it).");
    x.sample({}, h.lbd_applied_generation);
  }
  x.family("lbd_pool_updates_sent_total", Type::kCounter,
           "Pool updates lb-healthd put on the ring to lbd.");
  x.sample({}, h.updates_sent);
  x.family("lbd_pool_ring_full_total", Type::kCounter,
           "Sends refused because the ring to lbd was full (the update waited).");
  x.sample({}, h.ring_full);
  x.family("lbd_pool_apply_duration_seconds", Type::kHistogram,
           "From lb-healthd sending a pool update to seeing lbd apply it.");
  x.histogram({}, h.pool_apply_seconds);

  x.family("lbd_service_backends_active", Type::kGauge,
           "Backends lb-healthd sends to lbd as active, per service.");
  for (const ServiceStatus& s : h.services) {
    if (!s.removed) x.sample({{"service", s.name}}, uint64_t{s.active});
  }
  x.family("lbd_service_fail_open", Type::kGauge,
           "1 while a service has no healthy backend and on_all_down = fail_open sends them all "
           "(panic mode).");
  for (const ServiceStatus& s : h.services) {
    if (!s.removed) x.sample({{"service", s.name}}, uint64_t{s.fail_open ? 1u : 0u});
  }
}

void render_backends(Exposition& x, const std::map<BackendKey, BackendRow>& rows, bool lbd_up) {
  const auto for_checked = [&](auto&& f) {
    for (const auto& [key, r] : rows) {
      if (r.healthd) f(key, *r.healthd);
    }
  };
  const auto labels = [](const BackendKey& k) {
    return std::pair<Label, Label>{{"service", k.first}, {"backend", k.second}};
  };

  // lb-healthd's side: health, weight, admin state and the checks.
  x.family("lbd_backend_up", Type::kGauge, "1 when the backend passes its health checks (UP).");
  for_checked([&](const BackendKey& k, const BackendStatus& b) {
    const auto [s, be] = labels(k);
    x.sample({s, be}, uint64_t{b.health == Health::kUp ? 1u : 0u});
  });
  x.family("lbd_backend_weight", Type::kGauge, "The backend's configured weight.");
  for_checked([&](const BackendKey& k, const BackendStatus& b) {
    const auto [s, be] = labels(k);
    x.sample({s, be}, uint64_t{b.weight});
  });
  x.family("lbd_backend_admin_state", Type::kGauge,
           "The backend's administrative state (ready, drain, maint): 1 for the current one.");
  for_checked([&](const BackendKey& k, const BackendStatus& b) {
    const auto [s, be] = labels(k);
    for (const cfg::AdminState a :
         {cfg::AdminState::kReady, cfg::AdminState::kDrain, cfg::AdminState::kMaint}) {
      x.sample({s, be, {"state", cfg::to_string(a)}}, uint64_t{b.admin == a ? 1u : 0u});
    }
  });
  x.family("lbd_health_checks_total", Type::kCounter, "Health checks that ended.");
  for_checked([&](const BackendKey& k, const BackendStatus& b) {
    const auto [s, be] = labels(k);
    x.sample({s, be}, b.check_stats.duration.count);
  });
  x.family("lbd_health_check_failures_total", Type::kCounter,
           "Health checks that failed, by reason (http_status, timeout, refused, body_mismatch, "
           "error).");
  for_checked([&](const BackendKey& k, const BackendStatus& b) {
    const auto [s, be] = labels(k);
    for (const ResultKind kind : kFailureKinds) {
      x.sample({s, be, {"reason", reason_label(kind)}}, b.check_stats.failed(kind));
    }
  });
  x.family("lbd_health_check_duration_seconds", Type::kHistogram,
           "How long health checks took (to the answer, the error or the timeout).");
  for_checked([&](const BackendKey& k, const BackendStatus& b) {
    const auto [s, be] = labels(k);
    x.histogram({s, be}, b.check_stats.duration);
  });
  x.family("lbd_health_transitions_total", Type::kCounter,
           "Times the backend's health flipped between UP and DOWN (flaps).");
  for_checked([&](const BackendKey& k, const BackendStatus& b) {
    const auto [s, be] = labels(k);
    x.sample({s, be}, b.transitions);
  });

  if (!lbd_up) return;
  // lbd's side: what the dataplane applies and counts.
  const auto for_lbd = [&](auto&& f) {
    for (const auto& [key, r] : rows) {
      if (r.in_lbd) f(key, r);
    }
  };
  x.family("lbd_backend_state", Type::kGauge,
           "The state lbd applies to the backend (active, draining, not_serving): 1 for the "
           "current one.");
  for_lbd([&](const BackendKey& k, const BackendRow& r) {
    const auto [s, be] = labels(k);
    for (const ServingState st :
         {ServingState::kNotServing, ServingState::kDraining, ServingState::kActive}) {
      x.sample({s, be, {"state", to_string(st)}}, uint64_t{r.lbd_state == st ? 1u : 0u});
    }
  });
  x.family("lbd_backend_connections_active", Type::kGauge,
           "Connections (flows) lbd currently has on the backend.");
  for_lbd([&](const BackendKey& k, const BackendRow& r) {
    const auto [s, be] = labels(k);
    x.sample({s, be}, r.flows_active);
  });
  x.family("lbd_backend_connections_total", Type::kCounter,
           "Connections lbd scheduled to the backend.");
  for_lbd([&](const BackendKey& k, const BackendRow& r) {
    const auto [s, be] = labels(k);
    x.sample({s, be}, r.flows_total);
  });
  x.family("lbd_backend_packets_total", Type::kCounter,
           "Packets lbd forwarded for the backend (in: client to backend, out: backend to "
           "client).");
  for_lbd([&](const BackendKey& k, const BackendRow& r) {
    const auto [s, be] = labels(k);
    x.sample({s, be, {"direction", "in"}}, r.packets_in);
    x.sample({s, be, {"direction", "out"}}, r.packets_out);
  });
  x.family("lbd_backend_bytes_total", Type::kCounter,
           "Bytes (IP packets) lbd forwarded for the backend (in: client to backend, out: backend "
           "to client).");
  for_lbd([&](const BackendKey& k, const BackendRow& r) {
    const auto [s, be] = labels(k);
    x.sample({s, be, {"direction", "in"}}, r.bytes_in);
    x.sample({s, be, {"direction", "out"}}, r.bytes_out);
  });
  x.family("lbd_backend_passive_signals_total", Type::kCounter,
           "Passive health signals lbd saw: SYNs the backend answered with RST (syn_rst) or left "
           "unanswered (syn_timeout).");
  for_lbd([&](const BackendKey& k, const BackendRow& r) {
    const auto [s, be] = labels(k);
    x.sample({s, be, {"signal", "syn_rst"}}, r.syn_rst);
    x.sample({s, be, {"signal", "syn_timeout"}}, r.syn_timeout);
  });
}

void render_lbd(Exposition& x, const ctl::LbdSnapshot& lbd) {
  x.family("lbd_service_flows_rehashed_total", Type::kCounter,
           "Non-SYN segments of the service that matched no flow and became flows on the maglev "
           "table's backend of their tuple (miss_policy rehash: an lbd restart, a flow from "
           "another node).");
  if (lbd.services.is_object()) {
    std::map<std::string, uint64_t> by_name;  // one series per service, in name order
    for (const auto& item : lbd.services.items()) {
      const Json& s = item.value();
      if (s.is_object() && s.contains("name") && s["name"].is_string())
        by_name[s["name"].get<std::string>()] = u64(s, "flows_rehashed").value_or(0);
    }
    for (const auto& [name, n] : by_name) x.sample({{"service", name}}, n);
  }
  // Every reason lb-healthd was built with, so that rate() has a series from the first scrape;
  // a reason only lbd knows (another version) follows.
  x.family("lbd_packets_dropped_total", Type::kCounter,
           "Packets lbd dropped, by reason (dataplane/core/drop_reason.h says what each means).");
  for (const std::string_view reason : core::kDropReasonNames) {
    const std::string name(reason);
    x.sample({{"reason", name}}, u64(lbd.drops, name.c_str()).value_or(0));
  }
  for (const auto& item : lbd.drops.items()) {
    const std::string& reason = item.key();
    const bool known = std::find(core::kDropReasonNames.begin(), core::kDropReasonNames.end(),
                                 reason) != core::kDropReasonNames.end();
    const std::optional<uint64_t> v = u64(lbd.drops, reason.c_str());
    if (!known && v) x.sample({{"reason", reason}}, *v);
  }

  render_stats(x, lbd.stats);
  uint64_t capacity = 0;
  for (const auto& [key, w] : lbd.workers.items()) capacity += u64(w, "flow_capacity").value_or(0);
  x.family("lbd_flow_table_capacity", Type::kGauge,
           "Flows lbd's flow tables can hold (every worker's).");
  x.sample({}, capacity);

  // Full-NAT local ports by local address (lbd's own addresses, never a client's): no family
  // without dataplane.fullnat_addresses. docs/operations.md, "Full-NAT", says what to do when
  // ports_free nears 0.
  if (lbd.fullnat.is_object() && !lbd.fullnat.empty()) {
    struct FullnatKey {
      const char* key;
      const char* family;
      Type type;
      const char* help;
    };
    static constexpr FullnatKey kFullnatKeys[] = {
        {"ports_in_use", "lbd_fullnat_ports_in_use", Type::kGauge,
         "Full-NAT local ports held by flows (every worker's), per local address."},
        {"ports_free", "lbd_fullnat_ports_free", Type::kGauge,
         "Full-NAT local ports free for new flows (dataplane.fullnat_ports' size minus those in "
         "use), per local address."},
        {"alloc_failures", "lbd_fullnat_port_alloc_failures_total", Type::kCounter,
         "New full-NAT flows refused for want of a free local port (drop reason "
         "fullnat_ports_exhausted), counted on every local address."},
    };
    for (const FullnatKey& k : kFullnatKeys) {
      x.family(k.family, k.type, k.help);
      for (const auto& [key, a] : lbd.fullnat.items()) {
        if (a.is_object() && a.contains("address") && a["address"].is_string())
          x.sample({{"local_address", a["address"].get<std::string>()}}, u64(a, k.key).value_or(0));
      }
    }
  }

  x.family("lbd_pool_updates_applied_total", Type::kCounter, "Pool updates lbd applied.");
  x.sample({}, u64(lbd.pool, "updates_applied").value_or(0));
  x.family("lbd_pool_updates_rejected_total", Type::kCounter,
           "Pool updates lbd refused (its log says why).");
  x.sample({}, u64(lbd.pool, "updates_rejected").value_or(0));
  x.family("lbd_pool_events_lost_total", Type::kCounter,
           "Passive health events lbd could not post to lb-healthd (ring full).");
  x.sample({}, u64(lbd.pool, "events_lost").value_or(0));

  // Ports, by name. Direction-less drops are the device's or the kernel's: before lbd.
  struct PortKey {
    const char* key;
    const char* family;
    const char* help;
    Label label;
  };
  static constexpr PortKey kPortKeys[] = {
      {"rx_packets",
       "lbd_port_packets_total",
       "Packets lbd's workers received (rx) and sent (tx).",
       {"direction", "rx"}},
      {"tx_packets", "lbd_port_packets_total", "", {"direction", "tx"}},
      {"rx_bytes",
       "lbd_port_bytes_total",
       "Bytes lbd's workers received (rx) and sent (tx).",
       {"direction", "rx"}},
      {"tx_bytes", "lbd_port_bytes_total", "", {"direction", "tx"}},
      {"imissed",
       "lbd_port_rx_missed_packets_total",
       "Packets the device dropped because its RX ring was full (DPDK imissed).",
       {}},
      {"rx_nombuf",
       "lbd_port_rx_nombuf_total",
       "RX mbuf allocation failures (DPDK rx_nombuf): packets lost for want of a buffer.",
       {}},
      {"ierrors",
       "lbd_port_errors_total",
       "Erroneous packets received (rx, DPDK ierrors) and failed transmissions (tx, oerrors).",
       {"direction", "rx"}},
      {"oerrors", "lbd_port_errors_total", "", {"direction", "tx"}},
      {"kernel_rx_dropped",
       "lbd_port_kernel_dropped_packets_total",
       "Drops in the kernel before lbd saw the packet, on AF_XDP/af_packet ports: the "
       "interface's rx_dropped (where=interface) and lbd's sockets' ring-full drops "
       "(where=socket).",
       {"where", "interface"}},
      {"kernel_socket_drops", "lbd_port_kernel_dropped_packets_total", "", {"where", "socket"}},
  };
  const size_t n = std::size(kPortKeys);
  for (size_t i = 0; i < n;) {
    size_t end = i;
    while (end < n && std::string_view(kPortKeys[end].family) == kPortKeys[i].family) ++end;
    const bool kernel = std::string_view(kPortKeys[i].key).starts_with("kernel_");
    x.family(kPortKeys[i].family, Type::kCounter, kPortKeys[i].help);
    for (const auto& [name, p] : lbd.ports.items()) {
      if (kernel && p.value("kernel_iface", std::string()).empty()) continue;  // a DPDK-driven NIC
      for (size_t k = i; k < end; ++k) {
        const std::optional<uint64_t> v = u64(p, kPortKeys[k].key);
        if (!v) continue;
        if (kPortKeys[k].label.name.empty()) {
          x.sample({{"port", name}}, *v);
        } else {
          x.sample({{"port", name}, kPortKeys[k].label}, *v);
        }
      }
    }
    i = end;
  }
  x.family("lbd_port_info", Type::kGauge,
           "lbd's ports: DPDK port id and the kernel interface behind it (\"\" for a NIC DPDK "
           "drives itself).");
  for (const auto& [name, p] : lbd.ports.items()) {
    const std::string id = std::to_string(u64(p, "port_id").value_or(0));
    const std::string iface = p.value("kernel_iface", std::string());
    x.sample({{"port", name}, {"port_id", id}, {"kernel_iface", iface}}, uint64_t{1});
  }
}

}  // namespace

std::string render_metrics(const DaemonStatus& healthd, double snapshot_age_seconds,
                           const ctl::LbdSnapshot& lbd) {
  Exposition x;
  x.family("lbd_up", Type::kGauge,
           "1 when lbd's telemetry answered this scrape; the other lbd_* counters of lbd are "
           "left out while it is 0.");
  x.sample({}, uint64_t{lbd.up ? 1u : 0u});
  x.family("lbd_telemetry_read_duration_seconds", Type::kGauge,
           "How long reading lbd's telemetry took for this scrape.");
  x.sample({}, lbd.seconds);
  render_healthd(x, healthd, snapshot_age_seconds);
  render_backends(x, backend_rows(healthd, lbd), lbd.up);
  if (lbd.up) render_lbd(x, lbd);
  return x.take();
}

}  // namespace lb::health
