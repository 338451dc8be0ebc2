#include "telemetry.h"

#include <rte_telemetry.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "dataplane.h"
#include "port_stats.h"
#include "telemetry_page.h"

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

static_assert(kTelemetryDictEntries == RTE_TEL_MAX_DICT_ENTRIES);

struct TelDataFree {
  void operator()(rte_tel_data* d) const { rte_tel_data_free(d); }
};
using TelData = std::unique_ptr<rte_tel_data, TelDataFree>;

// A dict being filled, and the bytes it takes in a reply (an upper bound: telemetry_page.h).
// Every add is checked: DPDK refuses a key it does not allow (only [A-Za-z0-9_/]), an entry past
// RTE_TEL_MAX_DICT_ENTRIES, and cuts a string at RTE_TEL_MAX_STRING_LEN (E2BIG); any of them
// fails the command (a null reply) instead of leaving a field out unsaid.
class Dict {
 public:
  explicit Dict(rte_tel_data* d) : d_(d) { rte_tel_data_start_dict(d); }
  void u64(const char* key, uint64_t v) {
    check(rte_tel_data_add_dict_u64(d_, key, v));
    size_.u64(key, v);
  }
  void str(const char* key, const std::string& v) {
    check(rte_tel_data_add_dict_string(d_, key, v.c_str()));
    size_.str(key, v);
  }
  // Adds `e` (a dict) under `key`, which then owns it.
  void dict(const std::string& key, TelData e, size_t e_bytes) {
    const int rc = rte_tel_data_add_dict_container(d_, key.c_str(), e.get(), 0);
    check(rc);
    if (rc == 0) e.release();
    size_.member(key, e_bytes);
  }
  bool ok() const { return ok_; }
  size_t bytes() const { return size_.bytes(); }

 private:
  void check(int rc) { ok_ = ok_ && rc == 0; }
  rte_tel_data* d_;
  JsonSize size_;
  bool ok_ = true;
};

// A command's result: 0, or an error that makes DPDK answer null. (The dicts already added to
// the reply are then not freed: DPDK frees them only when it writes a reply.)
int result(const Dict& d) {
  return d.ok() ? 0 : -ENOSPC;
}

// One page of a listing of ids [0, end) (telemetry_page.h): "PREFIX<id>": entry for the live ids
// from the command's parameter (0 without one) that fit, in id order, and "page": {"from",
// "listed", "total" (live ids in all), "next" (the parameter of the next page; only when more
// remain)}. `live(id)` says whether an id is in use, `fill(id, Dict&)` writes its entry.
template <class Live, class Fill>
int list_page(rte_tel_data* d, const char* params, uint32_t end, const char* prefix, Live&& live,
              Fill&& fill) {
  uint32_t from = 0;
  if (params && !parse_page_from(params, from)) return -EINVAL;
  Dict out(d);
  PageBudget budget;
  uint64_t total = 0, listed = 0;
  int64_t next = -1;
  for (uint32_t id = 0; id < end; ++id) {
    if (!live(id)) continue;
    ++total;
    if (id < from || next >= 0) continue;
    TelData e(rte_tel_data_alloc());
    if (!e) return -ENOMEM;
    Dict entry(e.get());
    fill(id, entry);
    if (!entry.ok()) return -EINVAL;
    const std::string key = prefix + std::to_string(id);
    if (!budget.take(json_member_bytes(key, entry.bytes()))) {
      next = id;  // the first entry of the next page
      continue;
    }
    out.dict(key, std::move(e), entry.bytes());
    ++listed;
  }
  TelData p(rte_tel_data_alloc());
  if (!p) return -ENOMEM;
  Dict page(p.get());
  page.u64("from", from);
  page.u64("listed", listed);
  page.u64("total", total);
  if (next >= 0) page.u64("next", static_cast<uint64_t>(next));
  if (!page.ok()) return -EINVAL;
  const size_t page_bytes = page.bytes();
  out.dict("page", std::move(p), page_bytes);
  return result(out);
}

int cmd_stats(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  Dict out(d);
  uint64_t rx = 0, tx = 0, drops = 0;
  for (uint16_t p = 0; p < dp->port_count(); ++p) {
    rx += LB_SUM(c.port[p].rx_packets.get());
    tx += LB_SUM(c.port[p].tx_packets.get());
  }
  for (size_t r = 0; r < core::kDropReasonCount; ++r) drops += LB_SUM(c.drops[r].get());
  out.u64("rx_packets", rx);
  out.u64("tx_packets", tx);
  out.u64("dropped", drops);
  out.u64("flows_active", LB_SUM(c.flows_active.get()));
  out.u64("flows_created", LB_SUM(c.flows_created.get()));
  out.u64("flows_expired", LB_SUM(c.flows_expired.get()));
  out.u64("flows_reused", LB_SUM(c.flows_reused.get()));
  out.u64("flows_refused", LB_SUM(c.flows_refused.get()));
  out.u64("flows_rehashed", LB_SUM(c.flows_rehashed.get()));
  out.u64("syn_evicted", LB_SUM(c.syn_evicted.get()));
  out.u64("syn_expired_pressure", LB_SUM(c.syn_expired_pressure.get()));
  out.u64("syn_stateless", LB_SUM(c.syn_stateless.get()));
  out.u64("flows_reset", LB_SUM(c.flows_reset.get()));
  out.u64("retries", LB_SUM(c.retries.get()));
  out.u64("retry_syn_replayed", LB_SUM(c.retry_syn_replayed.get()));
  out.u64("rst_no_backend", LB_SUM(c.rst_no_backend.get()));
  out.u64("rst_flow_miss", LB_SUM(c.rst_flow_miss.get()));
  out.u64("rst_backend_stopped", LB_SUM(c.rst_backend_stopped.get()));
  out.u64("arp_replies", LB_SUM(c.arp_replies.get()));
  out.u64("arp_learned", LB_SUM(c.arp_learned.get()));
  out.u64("icmp_echo_replies", LB_SUM(c.icmp_echo_replies.get()));
  out.u64("icmp_time_exceeded", LB_SUM(c.icmp_time_exceeded.get()));
  out.u64("icmp_frag_needed", LB_SUM(c.icmp_frag_needed.get()));
  out.u64("icmp_rate_limited", LB_SUM(c.icmp_rate_limited.get()));
  out.u64("tunnel_packets", LB_SUM(c.tunnel_packets.get()));
  out.u64("icmp_errors_translated", LB_SUM(c.icmp_errors_translated.get()));
  out.u64("handoff_out", LB_SUM(c.handoff_out.get()));
  out.u64("handoff_in", LB_SUM(c.handoff_in.get()));
  out.u64("workers", dp->workers());
  return result(out);
}

int cmd_drops(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  Dict out(d);
  for (size_t r = 0; r < core::kDropReasonCount; ++r) {
    const std::string name(core::kDropReasonNames[r]);
    out.u64(name.c_str(), LB_SUM(c.drops[r].get()));
  }
  return result(out);
}

int cmd_ports(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  // At most kMaxPorts (16) entries of at most ~700 bytes (names of 32 characters, 20-digit
  // counters): one reply (tests/unit/telemetry_page_test.cc).
  Dict out(d);
  for (uint16_t p = 0; p < dp->port_count(); ++p) {
    TelData e(rte_tel_data_alloc());
    if (!e) return -ENOMEM;
    Dict port(e.get());
    port.str("name", dp->port_name(p));
    port.u64("port_id", dp->port_id(p));
    port.u64("rx_packets", LB_SUM(c.port[p].rx_packets.get()));
    port.u64("rx_bytes", LB_SUM(c.port[p].rx_bytes.get()));
    port.u64("tx_packets", LB_SUM(c.port[p].tx_packets.get()));
    port.u64("tx_bytes", LB_SUM(c.port[p].tx_bytes.get()));
    // Drops before lbd: the device's and the kernel's (port_stats.h).
    const PortDrops pd = read_port_drops(dp->port_id(p));
    port.u64("imissed", pd.imissed);
    port.u64("ierrors", pd.ierrors);
    port.u64("oerrors", pd.oerrors);
    port.u64("rx_nombuf", pd.rx_nombuf);
    port.str("kernel_iface", pd.kernel_iface);
    port.u64("kernel_rx_dropped", pd.kernel_rx_dropped);
    port.u64("kernel_socket_drops", pd.kernel_socket_drops);
    if (!port.ok()) return -EINVAL;
    // Keyed by the port's name; a name DPDK refuses as a key (the config allows '-', DPDK only
    // [A-Za-z0-9_/]) is keyed "port_<index>" instead, the name inside as always.
    const std::string& name = dp->port_name(p);
    const bool valid = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '/';
    });
    const size_t bytes = port.bytes();
    out.dict(valid ? name : "port_" + std::to_string(p), std::move(e), bytes);
  }
  return result(out);
}

// Per full-NAT local address: its ports over all workers (core/snat.h). Keyed "fullnat_<index>"
// with the address inside: DPDK refuses a dictionary key with a '.' (only alphanumerics, '_' and
// '/'), so an address as the key left the reply empty.
int cmd_fullnat(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  Dict out(d);  // at most kMaxFullnatAddresses (16) entries of ~150 bytes: one reply
  const std::vector<uint32_t>& addrs = dp->config().dataplane.fullnat_addresses;
  for (size_t i = 0; i < addrs.size(); ++i) {
    TelData e(rte_tel_data_alloc());
    if (!e) return -ENOMEM;
    Dict entry(e.get());
    entry.str("address", cfg::format_ipv4(addrs[i]));
    const uint64_t in_use = LB_SUM(c.fullnat[i].ports_in_use.get());
    const uint64_t total = uint64_t{dp->config().dataplane.fullnat_port_last} + 1 -
                           dp->config().dataplane.fullnat_port_first;
    entry.u64("ports_in_use", in_use);
    entry.u64("ports_free", in_use > total ? 0 : total - in_use);
    entry.u64("alloc_failures", LB_SUM(c.fullnat[i].alloc_failures.get()));
    if (!entry.ok()) return -EINVAL;
    const size_t bytes = entry.bytes();
    out.dict("fullnat_" + std::to_string(i), std::move(e), bytes);
  }
  return result(out);
}

// "/lb/backends[,FROM]": a page of the backends (list_page): up to 4,096 of ~280 bytes each.
int cmd_backends(const char*, const char* params, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  const std::vector<BackendInfo> backends = dp->builder().backends();
  const std::vector<std::string> services = dp->builder().service_names();
  return list_page(
      // rte_telemetry (22.11) nests dicts only under dicts, and keys allow [A-Za-z0-9_] only.
      d, params, static_cast<uint32_t>(backends.size()), "backend_",
      [&](uint32_t id) { return backends[id].live; },  // not a free id
      [&](uint32_t id, Dict& e) {
        const BackendInfo& b = backends[id];
        e.u64("id", id);
        e.str("state", std::string(to_string(dp->backend_state(id))));
        e.str("service", services[core::raw(b.service)]);
        e.str("address", cfg::format_ipv4(b.ip) + ":" + std::to_string(b.port));
        // An id's counters run for the life of the process: these are what this backend
        // counted since it was given the id.
        const BackendTotals t = dp->backend_counts(id, b);
        e.u64("flows_active", LB_SUM(c.backend[id].flows_active.get()));
        e.u64("flows_total", t.flows_total);
        e.u64("packets_in", t.packets_in);
        e.u64("bytes_in", t.bytes_in);
        e.u64("packets_out", t.packets_out);
        e.u64("bytes_out", t.bytes_out);
        e.u64("syn_rst", t.syn_rst);
        e.u64("syn_timeout", t.syn_timeout);
        e.u64("flows_rehashed", t.flows_rehashed);
      });
}

// "/lb/services[,FROM]": a page of the services (list_page): up to 1,024 of ~110 bytes each.
int cmd_services(const char*, const char* params, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  const std::vector<std::string> names = dp->builder().service_names();
  const std::vector<uint64_t> base = dp->builder().service_rehashed_base();
  return list_page(
      d, params, static_cast<uint32_t>(names.size()), "service_",
      [&](uint32_t id) { return !names[id].empty(); },  // not a free id
      [&](uint32_t id, Dict& e) {
        e.u64("id", id);
        e.str("name", names[id]);
        e.u64("flows_rehashed",
              dp->service_rehashed_total(static_cast<core::ServiceId>(id)) - base[id]);
      });
}

// "/lb/workers[,FROM]": a page of the workers (list_page): up to 64 of up to ~300 bytes each.
int cmd_workers(const char*, const char* params, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  return list_page(
      d, params, dp->workers(), "worker_", [](uint32_t) { return true; },
      [&](uint32_t w, Dict& e) {
        const WorkerCounters& c = dp->counters(static_cast<uint16_t>(w));
        e.u64("worker", w);
        e.u64("flows_active", c.flows_active.get());
        e.u64("flow_capacity", dp->processor(static_cast<uint16_t>(w)).flows().capacity());
        e.u64("flows_created", c.flows_created.get());
        e.u64("handoff_out", c.handoff_out.get());
        e.u64("handoff_in", c.handoff_in.get());
        e.u64("idle_sleeps", c.idle_sleeps.get());
        e.u64("idle_sleep_us", c.idle_sleep_us.get());
      });
}

int cmd_pool(const char*, const char*, rte_tel_data* d) {
  const Dataplane* dp = g_dp.load(std::memory_order_acquire);
  if (!dp) return -1;
  Dict out(d);
  const Dataplane::ControlStats& cs = dp->control_stats();
  out.u64("updates_applied", cs.updates_applied.load());
  out.u64("updates_rejected", cs.updates_rejected.load());
  out.u64("events_posted", cs.events_posted.load());
  out.u64("events_lost", cs.events_lost.load());
  out.u64("channel_faults", cs.channel_faults.load());
  if (const shm::Segment* seg = dp->segment()) {
    const shm::Header& h = seg->header();
    out.u64("epoch", seg->epoch());
    out.u64("received_generation", h.received_generation.load());
    out.u64("applied_generation", h.applied_generation.load());
    out.u64("rejected_generation", h.rejected_generation.load());
    out.u64("healthd_pid", shm::plausible_pid(h.healthd_pid.load()));
  }
  return result(out);
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
  TelData lines(rte_tel_data_alloc());
  if (!lines) return -ENOMEM;
  rte_tel_data_start_array(lines.get(), RTE_TEL_STRING_VAL);
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
    // Digits, addresses and a state name: nothing DPDK escapes ("...", and a comma).
    bytes += strlen(line) + 4;
    if (bytes > kPageBytes) break;  // replies are limited to 16 KiB (telemetry_page.h)
    // At most kMaxListed (256) lines: within the array's RTE_TEL_MAX_ARRAY_ENTRIES (512).
    if (rte_tel_data_add_array_string(lines.get(), line) != 0) return -ENOSPC;
  }
  Dict out(d);
  out.u64("total", list.total);
  out.u64("workers", dp->workers());
  out.u64("answered", list.answered);
  out.dict("flows", std::move(lines), bytes);
  return result(out);
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
                             "Per-backend flows, packets, bytes, passive health. Paged: "
                             "parameter FROM (first id), \"page\" has the next.");
  rte_telemetry_register_cmd("/lb/services", cmd_services,
                             "Per-service counters: misses rehashed to flows. Paged: "
                             "parameter FROM (first id), \"page\" has the next.");
  rte_telemetry_register_cmd("/lb/workers", cmd_workers,
                             "Per-worker flow table use. Paged: parameter FROM (first "
                             "worker), \"page\" has the next.");
  rte_telemetry_register_cmd("/lb/flows", cmd_flows,
                             "The live flows (total, and the N oldest). Parameters: N.");
  rte_telemetry_register_cmd("/lb/pool", cmd_pool,
                             "Pool updates from lb-healthd: generations received and applied.");
}

void unregister_telemetry() {
  g_dp.store(nullptr, std::memory_order_release);
}

}  // namespace lb::dp
