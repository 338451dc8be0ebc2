#include "telemetry.h"

#include <rte_telemetry.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "dataplane.h"
#include "port_stats.h"

namespace lb::dp {

namespace {

// Telemetry runs on EAL's own thread. It reads the workers' counters (relaxed atomics) and the
// id registry (immutable while the dataplane runs); never the pool, which RCU frees behind it.
std::atomic<const Dataplane*> g_dp{nullptr};

using core::WorkerCounters;

template <class F>
uint64_t sum(const Dataplane& dp, F&& f) {
  uint64_t total = 0;
  for (uint16_t w = 0; w < dp.workers(); ++w) total += f(dp.counters(w));
  return total;
}

#define LB_SUM(expr) sum(*dp, [&](const WorkerCounters& c) { return (expr); })

int cmd_stats(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  uint64_t rx = 0, tx = 0, drops = 0;
  for (uint16_t p = 0; p < dp->port_count(); ++p) {
    rx += LB_SUM(c.port[p].rx_packets.get());
    tx += LB_SUM(c.port[p].tx_packets.get());
  }
  for (size_t r = 0; r < core::kDropReasonCount; ++r) drops += LB_SUM(c.drops[r].get());
  rte_tel_data_add_dict_u64(d, "rx_packets", rx);
  rte_tel_data_add_dict_u64(d, "tx_packets", tx);
  rte_tel_data_add_dict_u64(d, "dropped", drops);
  rte_tel_data_add_dict_u64(d, "flows_active", LB_SUM(c.flows_active.get()));
  rte_tel_data_add_dict_u64(d, "flows_created", LB_SUM(c.flows_created.get()));
  rte_tel_data_add_dict_u64(d, "flows_expired", LB_SUM(c.flows_expired.get()));
  rte_tel_data_add_dict_u64(d, "flows_reused", LB_SUM(c.flows_reused.get()));
  rte_tel_data_add_dict_u64(d, "flows_refused", LB_SUM(c.flows_refused.get()));
  rte_tel_data_add_dict_u64(d, "flows_rehashed", LB_SUM(c.flows_rehashed.get()));
  rte_tel_data_add_dict_u64(d, "syn_evicted", LB_SUM(c.syn_evicted.get()));
  rte_tel_data_add_dict_u64(d, "syn_expired_pressure", LB_SUM(c.syn_expired_pressure.get()));
  rte_tel_data_add_dict_u64(d, "syn_stateless", LB_SUM(c.syn_stateless.get()));
  rte_tel_data_add_dict_u64(d, "flows_reset", LB_SUM(c.flows_reset.get()));
  rte_tel_data_add_dict_u64(d, "retries", LB_SUM(c.retries.get()));
  rte_tel_data_add_dict_u64(d, "retry_syn_replayed", LB_SUM(c.retry_syn_replayed.get()));
  rte_tel_data_add_dict_u64(d, "rst_no_backend", LB_SUM(c.rst_no_backend.get()));
  rte_tel_data_add_dict_u64(d, "rst_flow_miss", LB_SUM(c.rst_flow_miss.get()));
  rte_tel_data_add_dict_u64(d, "rst_backend_stopped", LB_SUM(c.rst_backend_stopped.get()));
  rte_tel_data_add_dict_u64(d, "arp_replies", LB_SUM(c.arp_replies.get()));
  rte_tel_data_add_dict_u64(d, "arp_learned", LB_SUM(c.arp_learned.get()));
  rte_tel_data_add_dict_u64(d, "icmp_echo_replies", LB_SUM(c.icmp_echo_replies.get()));
  rte_tel_data_add_dict_u64(d, "icmp_time_exceeded", LB_SUM(c.icmp_time_exceeded.get()));
  rte_tel_data_add_dict_u64(d, "icmp_frag_needed", LB_SUM(c.icmp_frag_needed.get()));
  rte_tel_data_add_dict_u64(d, "icmp_rate_limited", LB_SUM(c.icmp_rate_limited.get()));
  rte_tel_data_add_dict_u64(d, "tunnel_packets", LB_SUM(c.tunnel_packets.get()));
  rte_tel_data_add_dict_u64(d, "icmp_errors_translated", LB_SUM(c.icmp_errors_translated.get()));
  rte_tel_data_add_dict_u64(d, "handoff_out", LB_SUM(c.handoff_out.get()));
  rte_tel_data_add_dict_u64(d, "handoff_in", LB_SUM(c.handoff_in.get()));
  rte_tel_data_add_dict_u64(d, "workers", dp->workers());
  return 0;
}

int cmd_drops(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  for (size_t r = 0; r < core::kDropReasonCount; ++r) {
    const std::string name(core::kDropReasonNames[r]);
    rte_tel_data_add_dict_u64(d, name.c_str(), LB_SUM(c.drops[r].get()));
  }
  return 0;
}

int cmd_ports(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  for (uint16_t p = 0; p < dp->port_count(); ++p) {
    rte_tel_data* e = rte_tel_data_alloc();
    if (!e) return -1;
    rte_tel_data_start_dict(e);
    rte_tel_data_add_dict_string(e, "name", dp->port_name(p).c_str());
    rte_tel_data_add_dict_u64(e, "port_id", dp->port_id(p));
    rte_tel_data_add_dict_u64(e, "rx_packets", LB_SUM(c.port[p].rx_packets.get()));
    rte_tel_data_add_dict_u64(e, "rx_bytes", LB_SUM(c.port[p].rx_bytes.get()));
    rte_tel_data_add_dict_u64(e, "tx_packets", LB_SUM(c.port[p].tx_packets.get()));
    rte_tel_data_add_dict_u64(e, "tx_bytes", LB_SUM(c.port[p].tx_bytes.get()));
    // Drops before lbd: the device's and the kernel's (port_stats.h).
    const PortDrops pd = read_port_drops(dp->port_id(p));
    rte_tel_data_add_dict_u64(e, "imissed", pd.imissed);
    rte_tel_data_add_dict_u64(e, "ierrors", pd.ierrors);
    rte_tel_data_add_dict_u64(e, "oerrors", pd.oerrors);
    rte_tel_data_add_dict_u64(e, "rx_nombuf", pd.rx_nombuf);
    rte_tel_data_add_dict_string(e, "kernel_iface", pd.kernel_iface.c_str());
    rte_tel_data_add_dict_u64(e, "kernel_rx_dropped", pd.kernel_rx_dropped);
    rte_tel_data_add_dict_u64(e, "kernel_socket_drops", pd.kernel_socket_drops);
    rte_tel_data_add_dict_container(d, dp->port_name(p).c_str(), e, 0);
  }
  return 0;
}

// Per full-NAT local address: its ports over all workers (core/snat.h). Keyed "fullnat_<index>"
// with the address inside: DPDK refuses a dictionary key with a '.' (only alphanumerics, '_' and
// '/'), so an address as the key left the reply empty.
int cmd_fullnat(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  const std::vector<uint32_t>& addrs = dp->config().dataplane.fullnat_addresses;
  for (size_t i = 0; i < addrs.size(); ++i) {
    rte_tel_data* e = rte_tel_data_alloc();
    if (!e) return -1;
    rte_tel_data_start_dict(e);
    rte_tel_data_add_dict_string(e, "address", cfg::format_ipv4(addrs[i]).c_str());
    const uint64_t in_use = LB_SUM(c.fullnat[i].ports_in_use.get());
    const uint64_t total = uint64_t{dp->config().dataplane.fullnat_port_last} + 1 -
                           dp->config().dataplane.fullnat_port_first;
    rte_tel_data_add_dict_u64(e, "ports_in_use", in_use);
    rte_tel_data_add_dict_u64(e, "ports_free", in_use > total ? 0 : total - in_use);
    rte_tel_data_add_dict_u64(e, "alloc_failures", LB_SUM(c.fullnat[i].alloc_failures.get()));
    rte_tel_data_add_dict_container(d, ("fullnat_" + std::to_string(i)).c_str(), e, 0);
  }
  return 0;
}

int cmd_backends(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  const std::vector<BackendInfo> backends = dp->builder().backends();
  const std::vector<std::string> services = dp->builder().service_names();
  for (uint32_t id = 0; id < backends.size(); ++id) {
    const BackendInfo& b = backends[id];
    if (!b.live) continue;  // a free id
    rte_tel_data* e = rte_tel_data_alloc();
    if (!e) return -1;
    rte_tel_data_start_dict(e);
    const std::string addr = cfg::format_ipv4(b.ip) + ":" + std::to_string(b.port);
    rte_tel_data_add_dict_u64(e, "id", id);
    rte_tel_data_add_dict_string(e, "state", to_string(dp->backend_state(id)).data());
    rte_tel_data_add_dict_string(e, "service", services[core::raw(b.service)].c_str());
    rte_tel_data_add_dict_string(e, "address", addr.c_str());
    // An id's counters run for the life of the process: these are what this backend counted
    // since it was given the id.
    const BackendTotals t = dp->backend_counts(id, b);
    rte_tel_data_add_dict_u64(e, "flows_active", LB_SUM(c.backend[id].flows_active.get()));
    rte_tel_data_add_dict_u64(e, "flows_total", t.flows_total);
    rte_tel_data_add_dict_u64(e, "packets_in", t.packets_in);
    rte_tel_data_add_dict_u64(e, "bytes_in", t.bytes_in);
    rte_tel_data_add_dict_u64(e, "packets_out", t.packets_out);
    rte_tel_data_add_dict_u64(e, "bytes_out", t.bytes_out);
    rte_tel_data_add_dict_u64(e, "syn_rst", t.syn_rst);
    rte_tel_data_add_dict_u64(e, "syn_timeout", t.syn_timeout);
    rte_tel_data_add_dict_u64(e, "flows_rehashed", t.flows_rehashed);
    // rte_telemetry (22.11) nests dicts only under dicts, and keys allow [A-Za-z0-9_] only.
    rte_tel_data_add_dict_container(d, ("backend_" + std::to_string(id)).c_str(), e, 0);
  }
  return 0;
}

int cmd_services(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  const std::vector<std::string> names = dp->builder().service_names();
  const std::vector<uint64_t> base = dp->builder().service_rehashed_base();
  for (uint16_t id = 0; id < names.size(); ++id) {
    if (names[id].empty()) continue;  // a free id
    rte_tel_data* e = rte_tel_data_alloc();
    if (!e) return -1;
    rte_tel_data_start_dict(e);
    rte_tel_data_add_dict_u64(e, "id", id);
    rte_tel_data_add_dict_string(e, "name", names[id].c_str());
    rte_tel_data_add_dict_u64(
        e, "flows_rehashed",
        dp->service_rehashed_total(static_cast<core::ServiceId>(id)) - base[id]);
    rte_tel_data_add_dict_container(d, ("service_" + std::to_string(id)).c_str(), e, 0);
  }
  return 0;
}

int cmd_workers(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  for (uint16_t w = 0; w < dp->workers(); ++w) {
    const WorkerCounters& c = dp->counters(w);
    rte_tel_data* e = rte_tel_data_alloc();
    if (!e) return -1;
    rte_tel_data_start_dict(e);
    rte_tel_data_add_dict_u64(e, "worker", w);
    rte_tel_data_add_dict_u64(e, "flows_active", c.flows_active.get());
    rte_tel_data_add_dict_u64(e, "flow_capacity", dp->processor(w).flows().capacity());
    rte_tel_data_add_dict_u64(e, "flows_created", c.flows_created.get());
    rte_tel_data_add_dict_u64(e, "handoff_out", c.handoff_out.get());
    rte_tel_data_add_dict_u64(e, "handoff_in", c.handoff_in.get());
    rte_tel_data_add_dict_u64(e, "idle_sleeps", c.idle_sleeps.get());
    rte_tel_data_add_dict_u64(e, "idle_sleep_us", c.idle_sleep_us.get());
    rte_tel_data_add_dict_container(d, ("worker_" + std::to_string(w)).c_str(), e, 0);
  }
  return 0;
}

int cmd_pool(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  rte_tel_data_start_dict(d);
  const Dataplane::ControlStats& cs = dp->control_stats();
  rte_tel_data_add_dict_u64(d, "updates_applied", cs.updates_applied.load());
  rte_tel_data_add_dict_u64(d, "updates_rejected", cs.updates_rejected.load());
  rte_tel_data_add_dict_u64(d, "events_posted", cs.events_posted.load());
  rte_tel_data_add_dict_u64(d, "events_lost", cs.events_lost.load());
  rte_tel_data_add_dict_u64(d, "channel_faults", cs.channel_faults.load());
  if (const shm::Segment* seg = dp->segment()) {
    const shm::Header& h = seg->header();
    rte_tel_data_add_dict_u64(d, "epoch", seg->epoch());
    rte_tel_data_add_dict_u64(d, "received_generation", h.received_generation.load());
    rte_tel_data_add_dict_u64(d, "applied_generation", h.applied_generation.load());
    rte_tel_data_add_dict_u64(d, "rejected_generation", h.rejected_generation.load());
    rte_tel_data_add_dict_u64(d, "healthd_pid", shm::plausible_pid(h.healthd_pid.load()));
  }
  return 0;
}

// "/lb/flows,N": the live flows of every worker, the N oldest (default 20, at most 256, and what
// fits in a telemetry reply), as {"total": live flows, "workers": W, "answered": workers that
// finished their walk, "flows": ["worker client vip backend state age_ms expires_in_ms", ...]}.
int cmd_flows(const char*, const char* params, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  uint32_t n = 20;
  if (params && *params) {
    char* end = nullptr;
    const unsigned long v = std::strtoul(params, &end, 10);
    if (*end != '\0' || v == 0) return -EINVAL;
    n = static_cast<uint32_t>(std::min<unsigned long>(v, Dataplane::kMaxListed));
  }
  // The walks are done by the workers themselves, over their loop iterations (a million-flow
  // table takes about a thousand of them); the dataplane outlives this call.
  const Dataplane::FlowList list = const_cast<Dataplane*>(dp)->list_flows(n, 2000);
  rte_tel_data* lines = rte_tel_data_alloc();
  if (!lines) return -1;
  rte_tel_data_start_array(lines, RTE_TEL_STRING_VAL);
  const uint64_t hz = dp->ticks_per_second();
  size_t bytes = 0;
  for (const Dataplane::FlowSample& s : list.flows) {
    const core::Flow& f = s.flow;
    char line[RTE_TEL_MAX_STRING_LEN];
    const auto age_ms = static_cast<unsigned long long>((s.now - f.created) * 1000 / hz);
    const auto left_ms =
        static_cast<unsigned long long>(f.expires > s.now ? (f.expires - s.now) * 1000 / hz : 0);
    snprintf(line, sizeof line, "%u %s:%u %s:%u %s:%u %s %llu %llu", s.worker,
             cfg::format_ipv4(f.client_ip).c_str(), f.client_port, cfg::format_ipv4(f.vip).c_str(),
             f.vport, cfg::format_ipv4(f.backend_ip).c_str(), f.backend_port,
             core::to_string(f.state), age_ms, left_ms);
    bytes += strlen(line) + 4;
    if (bytes > 14 * 1024) break;  // replies are limited to 16 KiB
    rte_tel_data_add_array_string(lines, line);
  }
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_u64(d, "total", list.total);
  rte_tel_data_add_dict_u64(d, "workers", dp->workers());
  rte_tel_data_add_dict_u64(d, "answered", list.answered);
  rte_tel_data_add_dict_container(d, "flows", lines, 0);
  return 0;
}

}  // namespace

void register_telemetry(const Dataplane* dp) {
  // release pairs with the acquire in every command.
  g_dp.store(dp, std::memory_order_release);
  static bool registered = false;  // rte_telemetry has no way to unregister a command
  if (registered) return;
  registered = true;
  rte_telemetry_register_cmd("/lb/stats", cmd_stats, "Totals over all workers and ports.");
  rte_telemetry_register_cmd("/lb/drops", cmd_drops, "Dropped packets by reason.");
  rte_telemetry_register_cmd("/lb/fullnat", cmd_fullnat,
                             "Full-NAT local addresses: ports in use, free, allocation failures.");
  rte_telemetry_register_cmd("/lb/ports", cmd_ports,
                             "Per-port RX/TX packets and bytes, and drops before lbd: the "
                             "device's (imissed...) and the kernel interface's.");
  rte_telemetry_register_cmd("/lb/backends", cmd_backends,
                             "Per-backend flows, packets, bytes and passive health signals.");
  rte_telemetry_register_cmd("/lb/services", cmd_services,
                             "Per-service counters: misses rehashed to flows.");
  rte_telemetry_register_cmd("/lb/workers", cmd_workers, "Per-worker flow table use.");
  rte_telemetry_register_cmd("/lb/flows", cmd_flows,
                             "The live flows (total, and the N oldest). Parameters: N.");
  rte_telemetry_register_cmd("/lb/pool", cmd_pool,
                             "Pool updates from lb-healthd: generations received and applied.");
}

void unregister_telemetry() {
  g_dp.store(nullptr, std::memory_order_release);
}

}  // namespace lb::dp
