#include "render.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <sstream>

namespace lb::ctl {

namespace {

std::string str(const Json& j, const char* key, const std::string& fallback = "-") {
  if (!j.is_object()) return fallback;
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

double num(const Json& j, const char* key) {
  if (!j.is_object()) return 0;
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

uint64_t u64(const Json& j, const char* key) {
  if (!j.is_object()) return 0;
  const auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer())
    return static_cast<uint64_t>(std::max<int64_t>(0, it->get<int64_t>()));
  return 0;
}

// Counters only grow; a smaller value means lbd restarted: the rate restarts from 0.
double rate(uint64_t before, uint64_t after, double dt) {
  if (dt <= 0 || after < before) return 0;
  return static_cast<double>(after - before) / dt;
}

std::string fixed1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// backend key as lbd's telemetry spells it: service|ip:port
std::string backend_key(const std::string& service, const std::string& address) {
  return service + "|" + address;
}

std::map<std::string, Json> backends_by_key(const Json& backends) {
  std::map<std::string, Json> out;
  if (!backends.is_object()) return out;
  for (auto it = backends.begin(); it != backends.end(); ++it) {
    const Json& b = it.value();
    out[backend_key(str(b, "service", ""), str(b, "address", ""))] = b;
  }
  return out;
}

// A group of a table's rows under a line of its own (a service and its backends).
struct Section {
  std::string header;
  size_t first = 0;  // index in the rows
  size_t count = 0;
};

std::string format_table_with_sections(const std::vector<std::vector<std::string>>& rows,
                                       const std::vector<Section>& sections);

}  // namespace

std::string format_table(const std::vector<std::vector<std::string>>& rows,
                         const std::string& indent) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (r.size() > width.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line = indent;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line.append(width[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string format_ms(int64_t ms) {
  char buf[32];
  if (ms < 0) return "-";
  if (ms < 1000) {
    std::snprintf(buf, sizeof buf, "%" PRId64 "ms", ms);
  } else if (ms < 10000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  } else if (ms < 60000) {
    std::snprintf(buf, sizeof buf, "%" PRId64 "s", ms / 1000);
  } else if (ms < 3600000) {
    std::snprintf(buf, sizeof buf, "%" PRId64 "m%02" PRId64 "s", ms / 60000, ms / 1000 % 60);
  } else if (ms < 86400000) {
    std::snprintf(buf, sizeof buf, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, ms / 60000 % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%" PRId64 "d%02" PRId64 "h", ms / 86400000, ms / 3600000 % 24);
  }
  return buf;
}

std::string format_count(double n) {
  char buf[32];
  const double a = n < 0 ? -n : n;
  if (a < 1000) {
    if (n == static_cast<double>(static_cast<int64_t>(n))) {
      std::snprintf(buf, sizeof buf, "%" PRId64, static_cast<int64_t>(n));
    } else {
      std::snprintf(buf, sizeof buf, "%.1f", n);
    }
  } else if (a < 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fk", n / 1e3);
  } else if (a < 1e9) {
    std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.1fG", n / 1e9);
  }
  return buf;
}

// -- status ----------------------------------------------------------------------------------

Json merge_status(const Json& status, const Json& backends, const std::string& unavailable) {
  Json out = status;
  const bool have = backends.is_object();
  out["lbd_counters"] = {{"available", have}, {"error", have ? "" : unavailable}};
  const auto by_key = backends_by_key(backends);
  if (!out.contains("services") || !out["services"].is_array()) return out;
  for (Json& s : out["services"]) {
    const std::string name = str(s, "name", "");
    if (!s.contains("backends") || !s["backends"].is_array()) continue;
    for (Json& b : s["backends"]) {
      const std::string addr = str(b, "address", "") + ":" + str(b, "port", "");
      const auto it = by_key.find(backend_key(name, addr));
      if (!have || it == by_key.end()) {
        b["lbd"] = nullptr;
        continue;
      }
      Json c = it->second;
      c.erase("service");
      c.erase("address");
      b["lbd"] = std::move(c);
    }
  }
  return out;
}

std::string render_status(const Json& m) {
  std::ostringstream o;
  const Json& h = m.value("healthd", Json::object());
  const Json& l = m.value("lbd", Json::object());
  o << "lb-healthd " << str(h, "version") << " (pid " << str(h, "pid") << "), instance "
    << str(h, "instance") << ", config " << str(h, "config_file") << "\n";
  const Json changes = h.value("runtime_changes", Json::array());
  if (!changes.empty()) {
    o << changes.size() << " runtime change(s) over the file, kept in " << str(h, "state_file")
      << " (lbctl config diff)\n";
  }
  if (l.value("attached", false)) {
    o << "lbd: attached (pid " << str(l, "pid") << "), generation " << str(l, "applied_generation")
      << " applied of " << str(l, "generation_sent") << " sent";
    const uint64_t rejected = u64(l, "rejected_generation");
    if (rejected != 0) o << ", last refused " << rejected;
    o << "\n";
  } else {
    o << "lbd: not attached (" << str(h, "segment") << " not found: is lbd running?)\n";
  }
  const Json& node = m.value("node", Json::object());
  if (node.value("bgp", false)) {
    std::string announced, withdrawn;
    for (const Json& v : node.value("vips", Json::array())) {
      std::string& list = v.value("announced", false) ? announced : withdrawn;
      list += (list.empty() ? "" : ", ") + str(v, "vip");
      if (!v.value("announced", false)) list += " (" + str(v, "why") + ")";
    }
    o << "node: " << str(node, "state") << "; bgp announces "
      << (announced.empty() ? "nothing" : announced);
    if (!withdrawn.empty()) o << "; withdrawn " << withdrawn;
    if (!node.value("in_bird", false)) o << "; BIRD not told: " << str(node, "bird_error");
    o << "\n";
  } else if (node.contains("state")) {
    o << "node: " << str(node, "state") << " (no bgp group: nothing announced)\n";
  }
  const Json& counters = m.value("lbd_counters", Json::object());
  const bool have = counters.value("available", false);
  if (!have) o << "flow counters: unavailable: " << str(counters, "error") << "\n";
  o << "\n";

  std::vector<std::vector<std::string>> rows;
  rows.push_back({"  -> RemoteAddress:Port", "Weight", "Admin", "Health", "Live", "ActiveFlows",
                  "TotalFlows", "For", "LastCheck"});
  std::vector<Section> blocks;
  for (const Json& s : m.value("services", Json::array())) {
    Section b;
    const Json bs = s.value("backends", Json::array());
    std::string flags =
        str(s, "name") + ", " + str(s, "active", "0") + "/" + std::to_string(bs.size()) + " active";
    if (s.value("removed", false)) flags += ", REMOVED: draining";
    if (s.value("fail_open", false)) flags += ", FAIL-OPEN";
    if (s.value("pending", false)) flags += ", update pending";
    std::string proto = str(s, "protocol", "tcp");
    for (char& ch : proto) ch = ch >= 'a' && ch <= 'z' ? static_cast<char>(ch - 'a' + 'A') : ch;
    b.header = proto + "  " + str(s, "vip") + ":" + str(s, "port") + " " + str(s, "scheduler") +
               " (" + flags + ")";
    b.first = rows.size();
    for (const Json& be : bs) {
      const Json& c = be.value("lbd", Json());
      const bool removed = be.value("removed", false);
      std::string last = str(be, "last_result");
      if (be.value("last_http_status", 0) != 0 || last == "ok")
        last += " in " + format_ms(be.value("last_latency_ms", int64_t{0}));
      // Removed by a reload: no more checks; it leaves lbd's pool once its flows have ended.
      if (removed)
        last = "drains, at most " + format_ms(be.value("drain_left_ms", int64_t{0})) + " more";
      rows.push_back({"  -> " + str(be, "address") + ":" + str(be, "port"), str(be, "weight"),
                      removed ? "removed" : str(be, "admin"), removed ? "-" : str(be, "health"),
                      str(be, "live"), c.is_object() ? str(c, "flows_active", "0") : "-",
                      c.is_object() ? str(c, "flows_total", "0") : "-",
                      removed ? "-" : format_ms(be.value("in_state_ms", int64_t{-1})), last});
    }
    b.count = rows.size() - b.first;
    blocks.push_back(b);
  }
  o << "Prot LocalAddress:Port Scheduler (Service, Flags)\n"
    << format_table_with_sections(rows, blocks);
  return o.str();
}

Json lbd_status(const Json& backends, const Json& pool, const Json& stats, const Json& hello,
                const std::string& healthd_error) {
  Json out = {{"ok", false}, {"healthd", {{"reachable", false}, {"error", healthd_error}}}};
  out["lbd"] = {{"pid", hello.is_object() ? hello.value("pid", Json()) : Json()},
                {"applied_generation", u64(pool, "applied_generation")},
                {"received_generation", u64(pool, "received_generation")},
                {"healthd_pid", u64(pool, "healthd_pid")},
                {"flows_active", u64(stats, "flows_active")}};
  // In lbd's id order, grouped by service in the order each first appears.
  std::vector<std::pair<uint64_t, Json>> list;
  if (backends.is_object()) {
    for (auto it = backends.begin(); it != backends.end(); ++it)
      list.emplace_back(u64(it.value(), "id"), it.value());
  }
  std::sort(list.begin(), list.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  Json services = Json::array();
  std::map<std::string, size_t> index;
  for (const auto& [id, b] : list) {
    const std::string service = str(b, "service", "");
    const std::string address = str(b, "address", "");
    const size_t colon = address.rfind(':');
    auto [at, fresh] = index.try_emplace(service, services.size());
    if (fresh) services.push_back({{"name", service}, {"backends", Json::array()}});
    Json c = b;
    for (const char* k : {"service", "address", "state", "id"}) c.erase(k);
    Json e = {{"address", address.substr(0, colon)},
              {"port", colon == std::string::npos ? Json() : Json(address.substr(colon + 1))},
              {"live", str(b, "state")},
              {"lbd", std::move(c)}};
    if (colon != std::string::npos) {
      try {
        e["port"] = std::stoi(address.substr(colon + 1));
      } catch (const std::exception&) {
      }
    }
    services[at->second]["backends"].push_back(std::move(e));
  }
  out["services"] = std::move(services);
  return out;
}

std::string render_lbd_status(const Json& m) {
  std::ostringstream o;
  const Json& h = m.value("healthd", Json::object());
  const Json& l = m.value("lbd", Json::object());
  o << "lb-healthd: UNREACHABLE: " << str(h, "error") << "\n";
  o << "lbd (pid " << str(l, "pid") << ") forwards with the pool it last applied (generation "
    << str(l, "applied_generation") << "), " << str(l, "flows_active", "0")
    << " active flow(s); health, admin states and runtime changes wait for lb-healthd.\n";
  if (u64(l, "healthd_pid") != 0) {
    o << "lbd still sees lb-healthd attached (pid " << u64(l, "healthd_pid")
      << "): is its control socket elsewhere (--socket)?\n";
  }
  o << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"  -> RemoteAddress:Port", "Live", "ActiveFlows", "TotalFlows"}};
  std::vector<Section> blocks;
  for (const Json& s : m.value("services", Json::array())) {
    const Json bs = s.value("backends", Json::array());
    blocks.push_back({str(s, "name") + " (" + std::to_string(bs.size()) + " backend(s) in lbd)",
                      rows.size(), 0});
    for (const Json& b : bs) {
      const Json& c = b.value("lbd", Json::object());
      rows.push_back({"  -> " + str(b, "address") + ":" + str(b, "port"), str(b, "live"),
                      str(c, "flows_active", "0"), str(c, "flows_total", "0")});
    }
    blocks.back().count = bs.size();
  }
  o << "Service (as lbd names it)\n" << format_table_with_sections(rows, blocks);
  if (blocks.empty()) o << "(lbd has no backend)\n";
  return o.str();
}

namespace {

std::string format_table_with_sections(const std::vector<std::vector<std::string>>& rows,
                                       const std::vector<Section>& sections) {
  // One table for the alignment; the section lines are put between its rows (rows[0] is the
  // column header).
  std::vector<std::string> lines;
  std::istringstream in(format_table(rows));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::string out = lines.empty() ? "" : lines[0] + "\n";
  for (const Section& s : sections) {
    out += s.header + "\n";
    for (size_t i = s.first; i < s.first + s.count && i < lines.size(); ++i) out += lines[i] + "\n";
  }
  return out;
}

}  // namespace

// -- stats -----------------------------------------------------------------------------------

// /lb/ports' counters of what was lost before lbd saw it (dataplane/port_stats.h).
constexpr const char* kPortDrops[] = {"imissed",   "ierrors",           "oerrors",
                                      "rx_nombuf", "kernel_rx_dropped", "kernel_socket_drops"};

Json stats_report(const Sample& a, const Sample& b) {
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
      ports[it.key()] = std::move(p);
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

// -- flows -----------------------------------------------------------------------------------

Json parse_flows(const Json& reply, size_t limit) {
  Json out = {
      {"total", nullptr}, {"workers", nullptr}, {"answered", nullptr}, {"flows", Json::array()}};
  const Json* lines = &reply;
  if (reply.is_object()) {
    for (const char* k : {"total", "workers", "answered"})
      if (reply.contains(k) && reply[k].is_number_integer()) out[k] = u64(reply, k);
    if (!reply.contains("flows")) return out;
    lines = &reply["flows"];
  }
  if (!lines->is_array()) return out;
  std::vector<Json> all;
  for (const Json& l : *lines) {
    if (!l.is_string()) continue;
    std::istringstream in(l.get<std::string>());
    uint64_t worker = 0;
    std::string client, vip, backend, state;
    uint64_t age = 0;
    uint64_t expires = 0;
    if (!(in >> worker >> client >> vip >> backend >> state >> age >> expires)) continue;
    all.push_back({{"worker", worker},
                   {"client", client},
                   {"vip", vip},
                   {"backend", backend},
                   {"state", state},
                   {"age_ms", age},
                   {"expires_in_ms", expires}});
  }
  std::stable_sort(all.begin(), all.end(), [](const Json& a, const Json& b) {
    return a["age_ms"].get<uint64_t>() > b["age_ms"].get<uint64_t>();
  });
  for (size_t i = 0; i < all.size() && i < limit; ++i) out["flows"].push_back(std::move(all[i]));
  return out;
}

std::string render_flows(const Json& parsed) {
  const Json& flows = parsed.value("flows", Json::array());
  std::vector<std::vector<std::string>> rows = {
      {"client", "vip", "backend", "state", "age", "expires in", "worker"}};
  for (const Json& f : flows) {
    rows.push_back({str(f, "client"), str(f, "vip"), str(f, "backend"), str(f, "state"),
                    format_ms(f.value("age_ms", int64_t{0})),
                    format_ms(f.value("expires_in_ms", int64_t{0})), str(f, "worker")});
  }
  std::string head;
  const Json& total = parsed.value("total", Json());
  if (total.is_number_integer()) {
    const uint64_t t = u64(parsed, "total");
    if (t == 0 && flows.empty()) {
      head = "no flows\n";
    } else if (t <= flows.size()) {
      head = std::to_string(t) + (t == 1 ? " flow" : " flows") + ", oldest first:\n";
    } else {
      head = std::to_string(flows.size()) + " of " + std::to_string(t) + " flows, oldest first:\n";
    }
  } else if (flows.empty()) {
    head = "no flows in the sample\n";  // an older lbd, which only sampled its table
  }
  const uint64_t workers = u64(parsed, "workers");
  const uint64_t answered = u64(parsed, "answered");
  if (workers > answered)
    head += "(" + std::to_string(workers - answered) + " of " + std::to_string(workers) +
            " workers did not answer in time: their flows are missing)\n";
  if (rows.size() == 1) return head;
  return head + format_table(rows);
}

}  // namespace lb::ctl
