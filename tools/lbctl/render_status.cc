// lbctl status: lb-healthd's status with lbd's per-backend counters, and lbd's own view when
// lb-healthd cannot be reached.
#include <algorithm>
#include <map>
#include <sstream>

#include "render.h"
#include "render_util.h"

namespace lb::ctl {

using namespace view;

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

}  // namespace lb::ctl
