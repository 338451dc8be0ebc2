#include "writer.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>

#include "schema.h"

namespace lb::cfg {

namespace {

// -- From the configuration structs ----------------------------------------------------------

std::string status_range(uint16_t min, uint16_t max) {
  return min == max ? std::to_string(min) : std::to_string(min) + "-" + std::to_string(max);
}

Json health_to_json(const HealthConfig& h) {
  Json j = Json::object();
  j["path"] = h.path;
  j["interval_ms"] = h.interval_ms;
  j["timeout_ms"] = h.timeout_ms;
  j["rise"] = h.rise;
  j["fall"] = h.fall;
  j["expect_status"] = status_range(h.expect_status_min, h.expect_status_max);
  j["fast_interval_ms"] = h.fast_interval_ms;
  j["down_interval_ms"] = h.down_interval_ms;
  j["jitter_pct"] = h.jitter_pct;
  if (!h.expect_body.empty()) j["expect_body"] = h.expect_body;
  if (!h.host.empty()) j["host"] = h.host;
  if (h.port != 0) j["port"] = h.port;
  j["initial_state"] = to_string(h.initial_state);
  j["passive"] = Json{{"syn_rst", h.passive.syn_rst}, {"syn_timeout", h.passive.syn_timeout}};
  return j;
}

Json backend_to_json(const BackendConfig& b) {
  Json j = Json::object();
  j["address"] = format_ipv4(b.address);
  j["port"] = b.port;
  j["weight"] = b.weight;
  j["state"] = to_string(b.state);
  if (b.initial_state) j["initial_state"] = to_string(*b.initial_state);
  return j;
}

Json bgp_to_json(const BgpConfig& b) {
  Json j = Json::object();
  j["local_as"] = b.local_as;
  j["router_id"] = format_ipv4(b.router_id);
  j["next_hop"] = format_ipv4(b.next_hop);
  Json neighbors = Json::array();
  for (const BgpNeighbor& n : b.neighbors)
    neighbors.push_back(Json{{"address", format_ipv4(n.address)}, {"as", n.as}});
  j["neighbors"] = std::move(neighbors);
  j["hold_time"] = b.hold_time;
  if (!b.communities.empty()) {
    Json c = Json::array();
    for (const auto& [asn, value] : b.communities)
      c.push_back(std::to_string(asn) + ":" + std::to_string(value));
    j["communities"] = std::move(c);
  }
  if (b.med) j["med"] = *b.med;
  j["announce_when"] = to_string(b.announce_when);
  j["lbd_timeout_ms"] = b.lbd_timeout_ms;
  if (b.bird_config) j["bird_config"] = *b.bird_config;
  if (b.bird_socket) j["bird_socket"] = *b.bird_socket;
  return j;
}

std::string octal_mode(uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777u);
  return buf;
}

// -- libconfig text ---------------------------------------------------------------------------

constexpr int kMaxDepth = 8;  // the deepest configuration setting is 5 levels down

// Where a key goes among its siblings: its place in its group's schema list, so a written file
// reads like the documentation. Keys the group does not have follow, alphabetically.
int key_rank(const std::optional<schema::Group>& group, std::string_view key) {
  if (!group) return 0;
  const std::span<const std::string_view> keys = schema::keys(*group);
  const auto it = std::find(keys.begin(), keys.end(), key);
  return static_cast<int>(it - keys.begin());
}

bool setting_name(std::string_view key) {
  // libconfig: [A-Za-z*][-A-Za-z0-9_*]*
  if (key.empty()) return false;
  const auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!alpha(key[0]) && key[0] != '*') return false;
  return std::all_of(key.begin(), key.end(), [&](char c) {
    return alpha(c) || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '*';
  });
}

std::string shown_key(std::string_view key) {
  std::string out;
  for (const char c : key.substr(0, 64)) {
    out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c;
  }
  return "'" + out + (key.size() > 64 ? "...'" : "'");
}

std::string libconfig_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

class Emitter {
 public:
  explicit Emitter(std::string name) : name_(std::move(name)) {}

  std::string root(const Json& j) {
    if (!j.is_object()) fail("", "expected an object at the top");
    members(j, "", 0);
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw ConfigError(name_, 0, path, what);
  }

  static std::string child(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  void indent(int depth) { out_.append(static_cast<size_t>(depth) * 2, ' '); }

  void members(const Json& obj, const std::string& path, int depth) {
    std::vector<const std::string*> keys;
    for (auto it = obj.begin(); it != obj.end(); ++it) keys.push_back(&it.key());
    const std::optional<schema::Group> group = schema::group_at(path);
    std::stable_sort(keys.begin(), keys.end(), [&](const std::string* a, const std::string* b) {
      const int ra = key_rank(group, *a);
      const int rb = key_rank(group, *b);
      return ra != rb ? ra < rb : *a < *b;
    });
    for (const std::string* key : keys) {
      const std::string p = child(path, *key);
      if (!setting_name(*key))
        fail(p, "unknown setting " + shown_key(*key) + " (not a setting name)");
      indent(depth);
      out_ += *key;
      out_ += " = ";
      value(obj.at(*key), p, depth);
      out_ += ";\n";
    }
  }

  void value(const Json& v, const std::string& path, int depth) {
    if (depth >= kMaxDepth) fail(path, "nested too deeply");
    switch (v.type()) {
      case Json::value_t::object:
        out_ += "{\n";
        members(v, path, depth + 1);
        indent(depth);
        out_ += "}";
        break;
      case Json::value_t::array:
        if (v.empty()) {
          out_ += "()";
          break;
        }
        out_ += "(\n";
        for (size_t i = 0; i < v.size(); ++i) {
          indent(depth + 1);
          value(v[i], path + ".[" + std::to_string(i) + "]", depth + 1);
          out_ += i + 1 < v.size() ? ",\n" : "\n";
        }
        indent(depth);
        out_ += ")";
        break;
      case Json::value_t::string: {
        const std::string& s = v.get_ref<const std::string&>();
        if (s.find('\0') != std::string::npos) fail(path, "the string contains a NUL byte");
        out_ += libconfig_string(s);
        break;
      }
      case Json::value_t::boolean:
        out_ += v.get<bool>() ? "true" : "false";
        break;
      case Json::value_t::number_integer:
        integer(v.get<int64_t>());
        break;
      case Json::value_t::number_unsigned: {
        const uint64_t u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail(path, "integer " + std::to_string(u) + " does not fit in 64 bits");
        integer(static_cast<int64_t>(u));
        break;
      }
      case Json::value_t::number_float: {
        char buf[64];
        const auto r = std::to_chars(buf, buf + sizeof buf, v.get<double>());
        std::string text(buf, r.ptr);
        if (text.find_first_of(".eE") == std::string::npos) text += ".0";
        out_ += text;
        break;
      }
      case Json::value_t::null:
        fail(path, "null is not a value (leave the setting out to use its default)");
      case Json::value_t::binary:
      case Json::value_t::discarded:
        fail(path, "not a configuration value");
    }
  }

  void integer(int64_t n) {
    out_ += std::to_string(n);
    if (n > std::numeric_limits<int32_t>::max() || n < std::numeric_limits<int32_t>::min())
      out_ += "L";
  }

  std::string name_;
  std::string out_;
};

}  // namespace

Json service_to_json(const ServiceConfig& s) {
  Json j = Json::object();
  j["name"] = s.name;
  j["vip"] = format_ipv4(s.vip);
  j["port"] = s.port;
  j["protocol"] = to_string(s.protocol);
  j["scheduler"] = to_string(s.scheduler);
  if (s.forward != Forward::kDnat) j["forward"] = to_string(s.forward);
  if (s.maglev_table_size != kDefaultMaglevTableSize) j["maglev_table_size"] = s.maglev_table_size;
  if (s.miss_policy) j["miss_policy"] = to_string(*s.miss_policy);
  if (s.syn_flood_policy) j["syn_flood_policy"] = to_string(*s.syn_flood_policy);
  j["on_all_down"] = to_string(s.on_all_down);
  j["maint"] = to_string(s.maint);
  j["health"] = health_to_json(s.health);
  Json backends = Json::array();
  for (const BackendConfig& b : s.backends) backends.push_back(backend_to_json(b));
  j["backends"] = std::move(backends);
  return j;
}

Json services_to_json(const std::vector<ServiceConfig>& services) {
  Json out = Json::array();
  for (const ServiceConfig& s : services) out.push_back(service_to_json(s));
  return out;
}

Json config_to_json(const Config& config) {
  Json j = Json::object();
  j["instance"] = config.instance;
  const DataplaneConfig& dp = config.dataplane;
  Json d = Json::object();
  d["workers"] = dp.workers;
  d["mbufs"] = dp.mbufs;
  Json ports = Json::array();
  for (const PortConfig& p : dp.ports) {
    Json pj = Json::object();
    pj["name"] = p.name;
    pj["device"] = p.device;
    pj["ip"] = format_ipv4(p.ip) + "/" + std::to_string(p.prefix_len);
    if (p.gateway) pj["gateway"] = format_ipv4(*p.gateway);
    pj["rx_descriptors"] = p.rx_descriptors;
    pj["tx_descriptors"] = p.tx_descriptors;
    if (p.vip_arp != VipArp::kSubnet) pj["vip_arp"] = to_string(p.vip_arp);
    ports.push_back(std::move(pj));
  }
  d["ports"] = std::move(ports);
  d["flows"] = Json{{"capacity", dp.flows.capacity},
                    {"tcp_syn_timeout", dp.flows.tcp_syn_timeout},
                    {"tcp_established_timeout", dp.flows.tcp_established_timeout},
                    {"tcp_fin_timeout", dp.flows.tcp_fin_timeout},
                    {"tcp_closed_timeout", dp.flows.tcp_closed_timeout},
                    {"syn_budget", dp.flows.syn_budget},
                    {"tcp_syn_timeout_pressure", dp.flows.tcp_syn_timeout_pressure},
                    {"syn_flood_policy", to_string(dp.flows.syn_flood_policy)},
                    {"stateless_rate", dp.flows.stateless_rate},
                    {"fullnat_port_hold", dp.flows.fullnat_port_hold}};
  if (!dp.flows.persist) d["flows"]["persist"] = false;
  if (!dp.flows.directory.empty()) d["flows"]["directory"] = dp.flows.directory;
  d["retry"] = Json{{"on_rst", dp.retry.on_rst},
                    {"syn_timeout_ms", dp.retry.syn_timeout_ms},
                    {"max_retries", dp.retry.max_retries}};
  d["miss_policy"] = to_string(dp.miss_policy);
  d["no_backend_policy"] = to_string(dp.no_backend_policy);
  if (dp.maglev_hash_seed != kDefaultMaglevHashSeed) d["maglev_hash_seed"] = dp.maglev_hash_seed;
  if (!dp.fullnat_addresses.empty()) {
    Json a = Json::array();
    for (const uint32_t addr : dp.fullnat_addresses) a.push_back(format_ipv4(addr));
    d["fullnat_addresses"] = std::move(a);
  }
  if (dp.fullnat_port_first != DataplaneConfig{}.fullnat_port_first ||
      dp.fullnat_port_last != DataplaneConfig{}.fullnat_port_last)
    d["fullnat_ports"] = Json::array({dp.fullnat_port_first, dp.fullnat_port_last});
  if (dp.idle != IdleConfig{}) {
    d["idle"] = Json{{"mode", to_string(dp.idle.mode)},
                     {"after_empty_polls", dp.idle.after_empty_polls},
                     {"max_sleep_us", dp.idle.max_sleep_us}};
  }
  j["dataplane"] = std::move(d);
  j["services"] = services_to_json(config.services);
  const HealthdConfig& h = config.healthd;
  const HealthdConfig defaults;
  Json hj = Json::object();
  if (h.control_socket) hj["control_socket"] = *h.control_socket;
  if (h.socket_mode != defaults.socket_mode) hj["socket_mode"] = octal_mode(h.socket_mode);
  if (!h.socket_owner.empty()) hj["socket_owner"] = h.socket_owner;
  if (!h.socket_group.empty()) hj["socket_group"] = h.socket_group;
  if (h.state_file) hj["state_file"] = *h.state_file;
  if (h.control_timeout_ms != defaults.control_timeout_ms)
    hj["control_timeout_ms"] = h.control_timeout_ms;
  if (h.drain_timeout_ms != defaults.drain_timeout_ms) hj["drain_timeout_ms"] = h.drain_timeout_ms;
  if (h.metrics_listen) hj["metrics_listen"] = *h.metrics_listen;
  if (!hj.empty() || h.line != 0) j["healthd"] = std::move(hj);
  if (config.bgp.enabled()) j["bgp"] = bgp_to_json(config.bgp);
  return j;
}

std::string to_libconfig(const Json& config, const std::string& name,
                         const std::string& header_comment) {
  std::string out;
  std::istringstream lines(header_comment);
  for (std::string line; std::getline(lines, line);) out += "# " + line + "\n";
  return out + Emitter(name).root(config);
}

}  // namespace lb::cfg
