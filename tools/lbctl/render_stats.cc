// lbctl stats and top: totals and rates between two snapshots of lbd's telemetry.
#include <algorithm>
#include <map>
#include <sstream>

#include "render.h"
#include "render_util.h"

namespace lb::ctl {

using namespace view;

// -- stats -----------------------------------------------------------------------------------

// /lb/ports' counters of what was lost before lbd saw it (dataplane/port_stats.h).
constexpr const char* kPortDrops[] = {"imissed",   "ierrors",           "oerrors",
                                      "rx_nombuf", "kernel_rx_dropped", "kernel_socket_drops"};

Json stats_report(const LbdSnapshot& a, const LbdSnapshot& b) {
  const double dt = b.t - a.t;
  Json r;
  r["interval_s"] = dt;
  r["workers"] = u64(b.stats, "workers");
  uint64_t rx_bytes[2] = {0, 0};
  uint64_t tx_bytes[2] = {0, 0};
  Json ports = Json::object();
  if (b.ports.is_object()) {
    for (auto it = b.ports.begin(); it != b.ports.end(); ++it) {
      const Json& pb = it.value();
      const Json pa =
          a.ports.is_object() ? a.ports.value(it.key(), Json::object()) : Json::object();
      Json p;
      for (const char* k : {"rx_packets", "rx_bytes", "tx_packets", "tx_bytes"}) {
        p[k] = u64(pb, k);
        p[std::string(k) + "_per_s"] = rate(u64(pa, k), u64(pb, k), dt);
      }
      // Drops before lbd saw the packet: the device's and the kernel interface's.
      uint64_t before[2] = {0, 0};
      for (const char* k : kPortDrops) {
        p[k] = u64(pb, k);
        p[std::string(k) + "_per_s"] = rate(u64(pa, k), u64(pb, k), dt);
      }
      for (const char* k : {"imissed", "rx_nombuf", "kernel_rx_dropped", "kernel_socket_drops"}) {
        before[0] += u64(pa, k);
        before[1] += u64(pb, k);
      }
      p["dropped_before_lbd"] = before[1];
      p["dropped_before_lbd_per_s"] = rate(before[0], before[1], dt);
      p["kernel_iface"] = str(pb, "kernel_iface", "");
      // By its name: lbd keys a port whose name DPDK refuses as a key "port_<index>".
      ports[str(pb, "name", it.key())] = std::move(p);
      rx_bytes[0] += u64(pa, "rx_bytes");
      rx_bytes[1] += u64(pb, "rx_bytes");
      tx_bytes[0] += u64(pa, "tx_bytes");
      tx_bytes[1] += u64(pb, "tx_bytes");
    }
  }
  Json totals = Json::object();
  Json rates = Json::object();
  if (b.stats.is_object()) {
    for (auto it = b.stats.begin(); it != b.stats.end(); ++it) {
      const std::string& k = it.key();
      if (k == "workers") continue;
      totals[k] = u64(b.stats, k.c_str());
      if (k != "flows_active")
        rates[k] = rate(u64(a.stats, k.c_str()), u64(b.stats, k.c_str()), dt);
    }
  }
  totals["rx_bytes"] = rx_bytes[1];
  totals["tx_bytes"] = tx_bytes[1];
  rates["rx_bytes"] = rate(rx_bytes[0], rx_bytes[1], dt);
  rates["tx_bytes"] = rate(tx_bytes[0], tx_bytes[1], dt);
  r["totals"] = std::move(totals);
  r["rates"] = std::move(rates);
  Json drops = Json::object();
  if (b.drops.is_object()) {
    for (auto it = b.drops.begin(); it != b.drops.end(); ++it) {
      const char* k = it.key().c_str();
      drops[it.key()] = {{"total", u64(b.drops, k)},
                         {"per_s", rate(u64(a.drops, k), u64(b.drops, k), dt)}};
    }
  }
  r["drops"] = std::move(drops);
  r["ports"] = std::move(ports);
  const auto before = backends_by_key(a.backends);
  Json backends = Json::array();
  if (b.backends.is_object()) {
    std::vector<std::pair<uint64_t, Json>> list;
    for (auto it = b.backends.begin(); it != b.backends.end(); ++it) {
      const Json& x = it.value();
      const std::string key = backend_key(str(x, "service", ""), str(x, "address", ""));
      const auto pa = before.find(key);
      const Json& y = pa != before.end() ? pa->second : Json::object();
      Json e;
      e["service"] = str(x, "service", "");
      e["address"] = str(x, "address", "");
      e["state"] = str(x, "state", "");
      e["flows_active"] = u64(x, "flows_active");
      e["flows_total"] = u64(x, "flows_total");
      e["new_flows_per_s"] = rate(u64(y, "flows_total"), u64(x, "flows_total"), dt);
      for (const char* k : {"packets_in", "bytes_in", "packets_out", "bytes_out", "syn_rst",
                            "syn_timeout", "flows_rehashed"}) {
        e[k] = u64(x, k);
        e[std::string(k) + "_per_s"] = rate(u64(y, k), u64(x, k), dt);
      }
      list.emplace_back(u64(x, "id"), std::move(e));
    }
    std::sort(list.begin(), list.end(),
              [](const auto& p, const auto& q) { return p.first < q.first; });
    for (auto& [id, e] : list) backends.push_back(std::move(e));
  }
  r["backends"] = std::move(backends);
  // Per service, by name (an id may change hands between the samples: then no rate).
  std::map<std::string, std::pair<uint64_t, uint64_t>> before_services;  // name -> (id, count)
  if (a.services.is_object())
    for (const auto& [key, x] : a.services.items())
      before_services[str(x, "name", "")] = {u64(x, "id"), u64(x, "flows_rehashed")};
  std::vector<std::pair<std::string, Json>> services;
  if (b.services.is_object()) {
    for (const auto& [key, x] : b.services.items()) {
      const std::string name = str(x, "name", "");
      const uint64_t n = u64(x, "flows_rehashed");
      const auto pa = before_services.find(name);
      const bool same = pa != before_services.end() && pa->second.first == u64(x, "id");
      services.emplace_back(
          name, Json{{"service", name},
                     {"flows_rehashed", n},
                     {"flows_rehashed_per_s", rate(same ? pa->second.second : n, n, dt)}});
    }
  }
  std::sort(services.begin(), services.end(),
            [](const auto& p, const auto& q) { return p.first < q.first; });
  r["services"] = Json::array();
  for (auto& [name, e] : services) r["services"].push_back(std::move(e));
  // Full-NAT local ports per local address ("fullnat_<index>" in lbd's reply, the config's
  // order); the rate against the same address in the earlier sample.
  r["fullnat"] = Json::array();
  std::map<std::string, Json> fullnat_before;
  if (a.fullnat.is_object())
    for (const auto& [key, x] : a.fullnat.items()) fullnat_before[str(x, "address", "")] = x;
  if (b.fullnat.is_object()) {
    for (const auto& [key, x] : b.fullnat.items()) {
      const std::string address = str(x, "address", "");
      const auto pa = fullnat_before.find(address);
      const Json y = pa != fullnat_before.end() ? pa->second : Json::object();
      r["fullnat"].push_back(
          {{"address", address},
           {"ports_in_use", u64(x, "ports_in_use")},
           {"ports_free", u64(x, "ports_free")},
           {"alloc_failures", u64(x, "alloc_failures")},
           {"alloc_failures_per_s", rate(u64(y, "alloc_failures"), u64(x, "alloc_failures"), dt)}});
    }
  }
  return r;
}

std::string render_stats(const Json& r, const std::string& instance, const Json& pid) {
  std::ostringstream o;
  o << "lbd instance " << instance << " (pid " << (pid.is_null() ? "?" : pid.dump()) << ", "
    << str(r, "workers") << " worker(s)), rates over " << fixed1(num(r, "interval_s")) << "s\n\n";
  const Json& t = r["totals"];
  const Json& rt = r["rates"];
  std::vector<std::vector<std::string>> rows = {{"", "total", "per second"}};
  const auto line = [&](const char* label, const char* key, bool with_rate = true) {
    if (!t.contains(key)) return;
    rows.push_back({label, format_count(num(t, key)),
                    with_rate ? format_count(num(rt, key)) : std::string("")});
  };
  line("packets in", "rx_packets");
  line("packets out", "tx_packets");
  line("bytes in", "rx_bytes");
  line("bytes out", "tx_bytes");
  line("new flows", "flows_created");
  line("active flows", "flows_active", false);
  line("flows expired", "flows_expired");
  line("flows reused by a SYN", "flows_reused");
  line("flows reused by a SYN", "flows_closed");  // what an older lbd called it
  line("flows reset", "flows_reset");
  line("flows refused", "flows_refused");
  line("SYN flows evicted", "syn_evicted");
  line("SYN flows aged under pressure", "syn_expired_pressure");
  line("SYNs forwarded without a flow", "syn_stateless");
  line("misses rehashed to flows", "flows_rehashed");
  line("retries", "retries");
  line("RST, no backend", "rst_no_backend");
  line("RST, flow miss", "rst_flow_miss");
  line("RST, backend stopped", "rst_backend_stopped");
  line("dropped", "dropped");
  o << format_table(rows);

  std::vector<std::vector<std::string>> drops = {{"drop reason", "total", "per second"}};
  for (auto it = r["drops"].begin(); it != r["drops"].end(); ++it) {
    if (num(it.value(), "total") == 0) continue;
    drops.push_back(
        {it.key(), format_count(num(it.value(), "total")), format_count(num(it.value(), "per_s"))});
  }
  o << "\n";
  if (drops.size() == 1) {
    o << "no drops\n";
  } else {
    o << format_table(drops);
  }

  std::vector<std::vector<std::string>> ports = {{"port", "rx packets", "rx pkt/s", "rx bytes",
                                                  "rx B/s", "tx packets", "tx pkt/s", "tx bytes",
                                                  "tx B/s"}};
  for (auto it = r["ports"].begin(); it != r["ports"].end(); ++it) {
    const Json& p = it.value();
    ports.push_back({it.key(), format_count(num(p, "rx_packets")),
                     format_count(num(p, "rx_packets_per_s")), format_count(num(p, "rx_bytes")),
                     format_count(num(p, "rx_bytes_per_s")), format_count(num(p, "tx_packets")),
                     format_count(num(p, "tx_packets_per_s")), format_count(num(p, "tx_bytes")),
                     format_count(num(p, "tx_bytes_per_s"))});
  }
  o << "\n" << format_table(ports);

  std::vector<std::vector<std::string>> early = {
      {"port", "dropped before lbd", "per second", "imissed", "rx nombuf", "ierrors", "oerrors",
       "kernel iface", "iface rx dropped", "socket drops"}};
  for (auto it = r["ports"].begin(); it != r["ports"].end(); ++it) {
    const Json& p = it.value();
    const std::string iface = str(p, "kernel_iface", "");
    early.push_back({it.key(), format_count(num(p, "dropped_before_lbd")),
                     format_count(num(p, "dropped_before_lbd_per_s")),
                     format_count(num(p, "imissed")), format_count(num(p, "rx_nombuf")),
                     format_count(num(p, "ierrors")), format_count(num(p, "oerrors")),
                     iface.empty() ? "-" : iface,
                     iface.empty() ? "-" : format_count(num(p, "kernel_rx_dropped")),
                     iface.empty() ? "-" : format_count(num(p, "kernel_socket_drops"))});
  }
  o << "\n" << format_table(early);

  std::vector<std::vector<std::string>> ss = {{"service", "misses rehashed", "per second"}};
  for (const Json& s : r.value("services", Json::array()))
    ss.push_back({str(s, "service"), format_count(num(s, "flows_rehashed")),
                  format_count(num(s, "flows_rehashed_per_s"))});
  if (ss.size() > 1) o << "\n" << format_table(ss);

  std::vector<std::vector<std::string>> fn = {
      {"full-NAT address", "ports in use", "ports free", "alloc failures", "per second"}};
  for (const Json& f : r.value("fullnat", Json::array()))
    fn.push_back({str(f, "address"), format_count(num(f, "ports_in_use")),
                  format_count(num(f, "ports_free")), format_count(num(f, "alloc_failures")),
                  format_count(num(f, "alloc_failures_per_s"))});
  if (fn.size() > 1) o << "\n" << format_table(fn);

  std::vector<std::vector<std::string>> bs = {{"service", "backend", "state", "active", "total",
                                               "new/s", "pkt in/s", "B in/s", "pkt out/s",
                                               "B out/s", "syn rst", "syn timeout", "rehashed"}};
  for (const Json& b : r["backends"]) {
    bs.push_back({str(b, "service"), str(b, "address"), str(b, "state"),
                  format_count(num(b, "flows_active")), format_count(num(b, "flows_total")),
                  format_count(num(b, "new_flows_per_s")), format_count(num(b, "packets_in_per_s")),
                  format_count(num(b, "bytes_in_per_s")), format_count(num(b, "packets_out_per_s")),
                  format_count(num(b, "bytes_out_per_s")), format_count(num(b, "syn_rst")),
                  format_count(num(b, "syn_timeout")), format_count(num(b, "flows_rehashed"))});
  }
  o << "\n";
  if (bs.size() == 1) {
    o << "no backends\n";
  } else {
    o << format_table(bs);
  }
  return o.str();
}

}  // namespace lb::ctl
