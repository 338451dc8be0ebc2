#include "state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include "daemon.h"

namespace lb::health {

namespace {

// -- From the configuration structs ----------------------------------------------------------

std::string status_range(uint16_t min, uint16_t max) {
  return min == max ? std::to_string(min) : std::to_string(min) + "-" + std::to_string(max);
}

Json health_to_json(const cfg::HealthConfig& h) {
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
  j["initial_state"] = cfg::to_string(h.initial_state);
  j["passive"] = Json{{"syn_rst", h.passive.syn_rst}, {"syn_timeout", h.passive.syn_timeout}};
  return j;
}

Json backend_to_json(const cfg::BackendConfig& b) {
  Json j = Json::object();
  j["address"] = cfg::format_ipv4(b.address);
  j["port"] = b.port;
  j["weight"] = b.weight;
  j["state"] = cfg::to_string(b.state);
  if (b.initial_state) j["initial_state"] = cfg::to_string(*b.initial_state);
  return j;
}

std::string octal_mode(uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777u);
  return buf;
}

// -- libconfig text ---------------------------------------------------------------------------

constexpr int kMaxDepth = 8;  // the deepest configuration setting is 5 levels down

// Where a key goes among its siblings: the order docs/configuration.md lists them in, so a
// saved file reads like a written one. Keys not listed follow, alphabetically.
int key_rank(std::string_view key) {
  static constexpr std::string_view kOrder[] = {"instance",
                                                "dataplane",
                                                "services",
                                                "healthd",
                                                "name",
                                                "device",
                                                "ip",
                                                "gateway",
                                                "vip",
                                                "address",
                                                "port",
                                                "protocol",
                                                "scheduler",
                                                "forward",
                                                "maglev_table_size",
                                                "weight",
                                                "state",
                                                "on_all_down",
                                                "maint",
                                                "workers",
                                                "mbufs",
                                                "miss_policy",
                                                "syn_flood_policy",
                                                "no_backend_policy",
                                                "maglev_hash_seed",
                                                "ports",
                                                "flows",
                                                "retry",
                                                "idle",
                                                "fullnat_addresses",
                                                "fullnat_ports",
                                                "mode",
                                                "after_empty_polls",
                                                "max_sleep_us",
                                                "capacity",
                                                "tcp_syn_timeout",
                                                "tcp_established_timeout",
                                                "tcp_fin_timeout",
                                                "tcp_closed_timeout",
                                                "syn_budget",
                                                "tcp_syn_timeout_pressure",
                                                "stateless_rate",
                                                "on_rst",
                                                "syn_timeout_ms",
                                                "max_retries",
                                                "path",
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
                                                "initial_state",
                                                "passive",
                                                "syn_rst",
                                                "syn_timeout",
                                                "control_socket",
                                                "socket_mode",
                                                "socket_owner",
                                                "socket_group",
                                                "state_file",
                                                "control_timeout_ms",
                                                "drain_timeout_ms",
                                                "metrics_listen",
                                                "health",
                                                "backends"};
  for (size_t i = 0; i < std::size(kOrder); ++i) {
    if (kOrder[i] == key) return static_cast<int>(i);
  }
  return static_cast<int>(std::size(kOrder));
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
    throw cfg::ConfigError(name_, 0, path, what);
  }

  static std::string child(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  void indent(int depth) { out_.append(static_cast<size_t>(depth) * 2, ' '); }

  void members(const Json& obj, const std::string& path, int depth) {
    std::vector<const std::string*> keys;
    for (auto it = obj.begin(); it != obj.end(); ++it) keys.push_back(&it.key());
    std::stable_sort(keys.begin(), keys.end(), [](const std::string* a, const std::string* b) {
      const int ra = key_rank(*a);
      const int rb = key_rank(*b);
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

// -- Paths and names ---------------------------------------------------------------------------

// "[12]" at the front of `s` (after an optional '.'): the index, and `s` advanced past it.
std::optional<size_t> take_index(std::string_view& s) {
  if (s.starts_with(".")) s.remove_prefix(1);
  if (!s.starts_with("[")) return std::nullopt;
  const size_t close = s.find(']');
  if (close == std::string_view::npos) return std::nullopt;
  size_t n = 0;
  const auto r = std::from_chars(s.data() + 1, s.data() + close, n);
  if (r.ec != std::errc{} || r.ptr != s.data() + close) return std::nullopt;
  s.remove_prefix(close + 1);
  return n;
}

std::string service_label(const Json& services, size_t i) {
  if (services.is_array() && i < services.size() && services[i].is_object()) {
    const Json& s = services[i];
    if (auto it = s.find("name"); it != s.end() && it->is_string())
      return "service '" + it->get<std::string>() + "'";
  }
  return "service #" + std::to_string(i + 1);
}

std::string backend_key(const Json& b) {
  if (!b.is_object()) return "";
  const auto a = b.find("address");
  const auto p = b.find("port");
  if (a == b.end() || !a->is_string()) return "";
  if (p == b.end() || !p->is_number_integer()) return a->get<std::string>();
  return a->get<std::string>() + ":" + p->dump();
}

std::string backend_label(const Json& services, size_t i, size_t j) {
  if (services.is_array() && i < services.size() && services[i].is_object()) {
    const auto bs = services[i].find("backends");
    if (bs != services[i].end() && bs->is_array() && j < bs->size()) {
      const std::string key = backend_key((*bs)[j]);
      if (!key.empty()) return "backend " + key;
    }
  }
  return "backend #" + std::to_string(j + 1);
}

// -- Merge and diff ----------------------------------------------------------------------------

std::string service_key(const Json& s) {
  if (!s.is_object()) return "";
  const auto n = s.find("name");
  return n != s.end() && n->is_string() ? n->get<std::string>() : "";
}

using KeyFn = std::string (*)(const Json&);

std::map<std::string, const Json*> by_key(const Json& list, KeyFn key) {
  std::map<std::string, const Json*> out;
  if (!list.is_array()) return out;
  for (const Json& e : list) {
    const std::string k = key(e);
    if (!k.empty()) out.emplace(k, &e);
  }
  return out;
}

Json merge_list(const Json& base, const Json& file, const Json& running, KeyFn key);

// Key by key: what the file changed since `base` wins; everything else is `running`'s.
Json merge_object(const Json& base, const Json& file, const Json& running) {
  Json out = running;
  std::vector<std::string> keys;
  for (auto it = base.begin(); it != base.end(); ++it) keys.push_back(it.key());
  for (auto it = file.begin(); it != file.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (const std::string& k : keys) {
    const auto b = base.find(k);
    const auto f = file.find(k);
    const auto r = running.find(k);
    const bool in_b = b != base.end();
    const bool in_f = f != file.end();
    const bool in_r = r != running.end();
    if (in_b && in_f && in_r && k == "backends" && b->is_array() && f->is_array() &&
        r->is_array()) {
      out[k] = merge_list(*b, *f, *r, &backend_key);
      continue;
    }
    if (in_b && in_f && *b == *f) continue;  // the file left it alone
    if (!in_f) {
      if (in_b) out.erase(k);  // the file took it out
      continue;
    }
    if (in_b && in_r && b->is_object() && f->is_object() && r->is_object()) {
      out[k] = merge_object(*b, *f, *r);
    } else {
      out[k] = *f;
    }
  }
  return out;
}

Json merge_list(const Json& base, const Json& file, const Json& running, KeyFn key) {
  const auto b = by_key(base, key);
  const auto f = by_key(file, key);
  const auto r = by_key(running, key);
  Json out = Json::array();
  if (file.is_array()) {
    for (const Json& fe : file) {
      const std::string k = key(fe);
      const auto bi = b.find(k);
      const auto ri = r.find(k);
      if (bi == b.end()) {
        out.push_back(fe);  // the file added it
      } else if (ri != r.end()) {
        out.push_back(merge_object(*bi->second, fe, *ri->second));
      } else if (*bi->second != fe) {
        out.push_back(fe);  // removed at run time, but the file changed it since: it is back
      }
    }
  }
  if (running.is_array()) {
    for (const Json& re : running) {
      const std::string k = key(re);
      if (k.empty() || f.count(k) != 0 || b.count(k) != 0) continue;
      out.push_back(re);  // added at run time
    }
  }
  return out;
}

std::string shown(const Json& v) {
  if (v.is_string()) {
    const std::string& t = v.get_ref<const std::string&>();
    const bool plain =
        !t.empty() && t.size() <= 80 && t.find_first_of(" \t\r\n\"'\\") == std::string::npos;
    if (plain) return t;
  }
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

void diff_object(const Json& from, const Json& to, const std::string& prefix,
                 const std::string& path, std::vector<std::string>& out) {
  std::vector<std::string> keys;
  for (auto it = from.begin(); it != from.end(); ++it) keys.push_back(it.key());
  for (auto it = to.begin(); it != to.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (const std::string& k : keys) {
    if (k == "backends" && path.empty()) continue;  // listed backend by backend
    const auto a = from.find(k);
    const auto b = to.find(k);
    const std::string p = path.empty() ? k : path + "." + k;
    if (a == from.end()) {
      out.push_back(prefix + p + " set to " + shown(*b));
    } else if (b == to.end()) {
      out.push_back(prefix + p + " unset (was " + shown(*a) + ")");
    } else if (*a != *b) {
      if (a->is_object() && b->is_object()) {
        diff_object(*a, *b, prefix, p, out);
      } else {
        out.push_back(prefix + p + " " + shown(*a) + " -> " + shown(*b));
      }
    }
  }
}

std::string service_summary(const Json& s) {
  std::string out;
  const auto vip = s.find("vip");
  const auto port = s.find("port");
  if (vip != s.end() && port != s.end()) out = vip->dump() + ":" + port->dump();
  const auto bs = s.find("backends");
  const size_t n = bs != s.end() && bs->is_array() ? bs->size() : 0;
  out.erase(std::remove(out.begin(), out.end(), '"'), out.end());
  return out + (out.empty() ? "" : ", ") + std::to_string(n) + " backend(s)";
}

std::string iso_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::runtime_error sys_error(const std::string& path, const std::string& what, int err) {
  return std::runtime_error(path + ": " + what + ": " + std::strerror(err));
}

}  // namespace

// -- Public ----------------------------------------------------------------------------------

Json service_to_json(const cfg::ServiceConfig& s) {
  Json j = Json::object();
  j["name"] = s.name;
  j["vip"] = cfg::format_ipv4(s.vip);
  j["port"] = s.port;
  j["protocol"] = cfg::to_string(s.protocol);
  j["scheduler"] = cfg::to_string(s.scheduler);
  if (s.forward != cfg::Forward::kDnat) j["forward"] = cfg::to_string(s.forward);
  if (s.maglev_table_size != cfg::kDefaultMaglevTableSize)
    j["maglev_table_size"] = s.maglev_table_size;
  if (s.miss_policy) j["miss_policy"] = cfg::to_string(*s.miss_policy);
  if (s.syn_flood_policy) j["syn_flood_policy"] = cfg::to_string(*s.syn_flood_policy);
  j["on_all_down"] = cfg::to_string(s.on_all_down);
  j["maint"] = cfg::to_string(s.maint);
  j["health"] = health_to_json(s.health);
  Json backends = Json::array();
  for (const cfg::BackendConfig& b : s.backends) backends.push_back(backend_to_json(b));
  j["backends"] = std::move(backends);
  return j;
}

Json services_to_json(const std::vector<cfg::ServiceConfig>& services) {
  Json out = Json::array();
  for (const cfg::ServiceConfig& s : services) out.push_back(service_to_json(s));
  return out;
}

Json config_to_json(const cfg::Config& config) {
  Json j = Json::object();
  j["instance"] = config.instance;
  const cfg::DataplaneConfig& dp = config.dataplane;
  Json d = Json::object();
  d["workers"] = dp.workers;
  d["mbufs"] = dp.mbufs;
  Json ports = Json::array();
  for (const cfg::PortConfig& p : dp.ports) {
    Json pj = Json::object();
    pj["name"] = p.name;
    pj["device"] = p.device;
    pj["ip"] = cfg::format_ipv4(p.ip) + "/" + std::to_string(p.prefix_len);
    if (p.gateway) pj["gateway"] = cfg::format_ipv4(*p.gateway);
    pj["rx_descriptors"] = p.rx_descriptors;
    pj["tx_descriptors"] = p.tx_descriptors;
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
                    {"syn_flood_policy", cfg::to_string(dp.flows.syn_flood_policy)},
                    {"stateless_rate", dp.flows.stateless_rate}};
  d["retry"] = Json{{"on_rst", dp.retry.on_rst},
                    {"syn_timeout_ms", dp.retry.syn_timeout_ms},
                    {"max_retries", dp.retry.max_retries}};
  d["miss_policy"] = cfg::to_string(dp.miss_policy);
  d["no_backend_policy"] = cfg::to_string(dp.no_backend_policy);
  if (dp.maglev_hash_seed != cfg::kDefaultMaglevHashSeed)
    d["maglev_hash_seed"] = dp.maglev_hash_seed;
  if (!dp.fullnat_addresses.empty()) {
    Json a = Json::array();
    for (const uint32_t addr : dp.fullnat_addresses) a.push_back(cfg::format_ipv4(addr));
    d["fullnat_addresses"] = std::move(a);
  }
  if (dp.fullnat_port_first != cfg::DataplaneConfig{}.fullnat_port_first ||
      dp.fullnat_port_last != cfg::DataplaneConfig{}.fullnat_port_last)
    d["fullnat_ports"] = Json::array({dp.fullnat_port_first, dp.fullnat_port_last});
  if (dp.idle != cfg::IdleConfig{}) {
    d["idle"] = Json{{"mode", cfg::to_string(dp.idle.mode)},
                     {"after_empty_polls", dp.idle.after_empty_polls},
                     {"max_sleep_us", dp.idle.max_sleep_us}};
  }
  j["dataplane"] = std::move(d);
  j["services"] = services_to_json(config.services);
  const cfg::HealthdConfig& h = config.healthd;
  const cfg::HealthdConfig defaults;
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
  return j;
}

std::string to_libconfig(const Json& config, const std::string& name,
                         const std::string& header_comment) {
  std::string out;
  std::istringstream lines(header_comment);
  for (std::string line; std::getline(lines, line);) out += "# " + line + "\n";
  return out + Emitter(name).root(config);
}

cfg::Config build_config(const cfg::Config& config, const Json& services, const std::string& name) {
  Json j = config_to_json(config);
  j["services"] = services;
  cfg::Config out = cfg::parse_config(to_libconfig(j, name), name);
  // The healthd group is the running one, checked when lb-healthd started.
  if (std::optional<cfg::ConfigError> problem = healthd_problem(out, false)) throw *problem;
  out.file = config.file;
  return out;
}

std::string error_message(const cfg::ConfigError& e) {
  std::string prefix = e.file() + ":" + std::to_string(e.line()) + ": ";
  if (!e.path().empty()) prefix += e.path() + ": ";
  const std::string what = e.what();
  return what.starts_with(prefix) ? what.substr(prefix.size()) : what;
}

std::string describe_path(const std::string& path, const Json& services) {
  std::string_view rest = path;
  if (!rest.starts_with("services")) return path;
  rest.remove_prefix(std::string_view("services").size());
  const std::optional<size_t> i = take_index(rest);
  if (!i) return path;
  std::string out = service_label(services, *i);
  if (rest.starts_with(".backends")) {
    std::string_view after = rest.substr(std::string_view(".backends").size());
    if (const std::optional<size_t> j = take_index(after)) {
      out += " " + backend_label(services, *i, *j);
      rest = after;
    }
  }
  if (rest.starts_with(".")) rest.remove_prefix(1);
  if (!rest.empty()) out += ": " + std::string(rest);
  return out;
}

std::string describe_error(const cfg::ConfigError& e, const Json& services) {
  // Line numbers of the generated text mean nothing to the client: "(first at line 13)",
  // "(line 4)" and "(first at line 3, services.[0])" are left out.
  static const std::regex kLine(R"( \((first at )?line [0-9]+(, [^)]*)?\))");
  const std::string message = std::regex_replace(error_message(e), kLine, "");
  if (e.path().empty()) return message;
  return describe_path(e.path(), services) + ": " + message;
}

Json merge_services(const Json& base, const Json& file, const Json& running) {
  return merge_list(base, file, running, &service_key);
}

std::vector<std::string> diff_services(const Json& from, const Json& to) {
  std::vector<std::string> out;
  const auto a = by_key(from, &service_key);
  const auto b = by_key(to, &service_key);
  for (const auto& [name, s] : a) {
    if (b.count(name) == 0) out.push_back("service " + name + " removed");
  }
  if (!to.is_array()) return out;
  for (const Json& s : to) {
    const std::string name = service_key(s);
    const auto old = a.find(name);
    if (old == a.end()) {
      out.push_back("service " + name + " added (" + service_summary(s) + ")");
      continue;
    }
    const std::string prefix = "service " + name + ": ";
    diff_object(*old->second, s, prefix, "", out);
    const auto ob = old->second->find("backends");
    const auto nb = s.find("backends");
    const Json empty = Json::array();
    const Json& olist = ob != old->second->end() ? *ob : empty;
    const Json& nlist = nb != s.end() ? *nb : empty;
    const auto x = by_key(olist, &backend_key);
    const auto y = by_key(nlist, &backend_key);
    for (const auto& [key, be] : x) {
      if (y.count(key) == 0) out.push_back(prefix + "backend " + key + " removed");
    }
    for (const Json& be : nlist) {
      const std::string key = backend_key(be);
      const auto o = x.find(key);
      if (o == x.end()) {
        std::string what = prefix + "backend " + key + " added";
        if (be.contains("weight") && be.contains("state"))
          what += " (weight " + be["weight"].dump() + ", " + be["state"].get<std::string>() + ")";
        out.push_back(what);
      } else {
        diff_object(*o->second, be, prefix + "backend " + key + ": ", "", out);
      }
    }
  }
  return out;
}

std::string format_state(const RuntimeState& state, const std::string& config_path) {
  Json j = Json::object();
  j["lb_healthd_state"] = 1;
  j["config_file"] = config_path;
  j["saved_at"] = iso_now();
  j["about"] =
      "lb-healthd's runtime changes (lbctl). base: the config file's services when lb-healthd "
      "last read it; running: the services it runs. Written by lb-healthd at every change; to "
      "make the changes permanent use `lbctl config save`.";
  j["base"] = state.base;
  j["running"] = state.running;
  return j.dump(2) + "\n";
}

std::optional<RuntimeState> read_state(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw sys_error(path, "cannot read", errno);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw sys_error(path, "cannot read", err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    throw std::runtime_error(path + ": not a lb-healthd state file: " + e.what());
  }
  if (!j.is_object() || j.value("lb_healthd_state", Json()) != Json(1) || !j.contains("base") ||
      !j["base"].is_array() || !j.contains("running") || !j["running"].is_array()) {
    throw std::runtime_error(path +
                             ": not a lb-healthd state file (version 1 with \"base\" and "
                             "\"running\" lists expected)");
  }
  return RuntimeState{j["base"], j["running"]};
}

Startup load_startup(const cfg::Config& file_config, const std::string& state_path) {
  Startup st;
  st.running = file_config;
  st.base = services_to_json(file_config.services);
  if (state_path.empty()) return st;
  const std::optional<RuntimeState> state = read_state(state_path);
  if (!state) return st;
  st.from_state = true;
  st.base_moved = state->base != st.base;
  const Json merged = merge_services(state->base, st.base, state->running);
  st.changes = diff_services(st.base, merged);
  if (merged == st.base) return st;
  try {
    st.running = build_config(file_config, merged, state_path);
  } catch (const cfg::ConfigError& e) {
    throw std::runtime_error(state_path + ": the runtime changes kept there do not fit " +
                             file_config.file + " any more: " + describe_error(e, merged) +
                             " (fix the file, or move the state file away to start from the "
                             "file alone)");
  }
  return st;
}

}  // namespace lb::health
