// lb-healthd's groups: `healthd` (control socket, state file, metrics) and `bgp` (parser.h).

#include "parser.h"

#include <algorithm>

namespace lb::cfg::detail {

HealthdConfig Parser::parse_healthd(const Setting& h) const {
  check_keys(h, schema::Group::kHealthd);
  HealthdConfig out;
  out.line = static_cast<int>(h.getSourceLine());
  const auto printable = [](const std::string& text) {
    return std::all_of(text.begin(), text.end(),
                       [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
  };
  if (const Setting* s = find(h, "control_socket")) {
    std::string path = as_string(*s);
    if (!path.empty() && (path[0] != '/' || path.size() > kMaxSocketPathLen || !printable(path))) {
      fail(*s, "invalid control_socket " + quote(path) + " (an absolute path of at most " +
                   std::to_string(kMaxSocketPathLen) +
                   " bytes without control characters, or \"\" for no socket)");
    }
    out.control_socket = std::move(path);
  }
  if (const Setting* s = find(h, "socket_mode")) {
    if (s->getType() == Setting::TypeInt || s->getType() == Setting::TypeInt64) {
      fail(*s,
           "expected a string, found an integer (write the mode in octal as a string, "
           "e.g. \"0660\")");
    }
    const std::string text = as_string(*s);
    const bool octal =
        text.size() >= 3 && text.size() <= 4 &&
        std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; });
    const unsigned long mode = octal ? std::stoul(text, nullptr, 8) : 0;
    if (!octal || mode > 0777) {
      fail(*s, "invalid socket_mode " + quote(text) +
                   " (expected an octal mode of 3 or 4 digits such as \"0660\", at most "
                   "\"0777\")");
    }
    out.socket_mode = static_cast<uint32_t>(mode);
  }
  struct Account {
    const char* key;
    std::string* field;
    int* line;
  };
  for (const auto& [key, field, line] :
       {Account{"socket_owner", &out.socket_owner, &out.socket_owner_line},
        Account{"socket_group", &out.socket_group, &out.socket_group_line}}) {
    const Setting* s = find(h, key);
    if (s == nullptr) continue;
    *field = as_string(*s);
    *line = static_cast<int>(s->getSourceLine());
    const std::string& v = *field;
    const bool numeric =
        !v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    const bool name = !v.empty() && v[0] != '-' && std::all_of(v.begin(), v.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-' || c == '.';
    });
    if (v.size() > kMaxAccountNameLen || (!numeric && !name)) {
      fail(*s, std::string("invalid ") + key + " " + quote(v) + " (a name of 1.." +
                   std::to_string(kMaxAccountNameLen) +
                   " characters from A-Z a-z 0-9 _ - . not starting with '-', or a number)");
    }
  }
  if (const Setting* s = find(h, "state_file")) {
    std::string path = as_string(*s);
    if (path.size() > kMaxStatePathLen || !printable(path) ||
        (!path.empty() && path.back() == '/')) {
      fail(*s, "invalid state_file " + quote(path) + " (a file path of at most " +
                   std::to_string(kMaxStatePathLen) +
                   " bytes without control characters, or \"\" to keep runtime changes in "
                   "memory only)");
    }
    out.state_file = std::move(path);
  }
  optional_integer(h, "control_timeout_ms", out.control_timeout_ms, kMinControlTimeoutMs,
                   kMaxControlTimeoutMs);
  optional_integer(h, "drain_timeout_ms", out.drain_timeout_ms, 0, kMaxDrainTimeoutMs);
  if (const Setting* s = find(h, "metrics_listen")) {
    std::string listen = as_string(*s);
    if (!listen.empty() && !parse_listen(listen)) {
      fail(*s, "invalid metrics_listen " + quote(listen) +
                   " (expected an IPv4 address and a port such as \"127.0.0.1:9813\", "
                   "\"0.0.0.0:9813\" for every interface, or \"\" for no endpoint)");
    }
    out.metrics_listen = std::move(listen);
    out.metrics_listen_line = static_cast<int>(s->getSourceLine());
  }
  return out;
}

uint32_t Parser::as_number(const Setting& s) const {
  // 0 and 4294967295 are reserved (RFC 7607, RFC 7300); 23456 is AS_TRANS (RFC 6793).
  const auto as = integer_as<uint32_t>(s, 1, 4294967294);
  if (as == 23456) fail(s, "AS 23456 is AS_TRANS (RFC 6793), not a real AS number");
  return as;
}

std::string Parser::as_path_key(const Setting& s, const char* key, bool socket) const {
  std::string path = as_string(s);
  const size_t max = socket ? kMaxSocketPathLen : kMaxStatePathLen;
  const bool ok = !path.empty() && path[0] == '/' && path.size() <= max && path.back() != '/' &&
                  std::all_of(path.begin(), path.end(), [](char c) {
                    // BIRD's own config syntax takes it between double quotes.
                    return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f && c != '"';
                  });
  if (!ok) {
    fail(s, std::string("invalid ") + key + " " + quote(path) +
                " (an absolute file path of at most " + std::to_string(max) +
                " bytes, without control characters or '\"')");
  }
  return path;
}

BgpConfig Parser::parse_bgp(const Setting& g, const Config& config) const {
  check_keys(g, schema::Group::kBgp);
  BgpConfig out;
  out.line = static_cast<int>(g.getSourceLine());
  out.local_as = as_number(require(g, "local_as"));
  out.router_id = as_address(require(g, "router_id"));
  const Setting& nh = require(g, "next_hop");
  out.next_hop = as_address(nh);
  const auto& ports = config.dataplane.ports;
  if (std::none_of(ports.begin(), ports.end(),
                   [&](const PortConfig& p) { return p.ip == out.next_hop; })) {
    std::vector<std::string> addresses;
    for (const PortConfig& p : ports) addresses.push_back(format_ipv4(p.ip));
    fail(nh, "next_hop " + format_ipv4(out.next_hop) +
                 " is the address of no port (routers must send the VIPs' packets to lbd: " +
                 join(std::vector<std::string_view>(addresses.begin(), addresses.end()), ", ") +
                 ")");
  }
  const Setting& list = as_list(require(g, "neighbors"));
  if (list.getLength() < 1 || list.getLength() > static_cast<int>(kMaxBgpNeighbors)) {
    fail(list, "expected 1.." + std::to_string(kMaxBgpNeighbors) + " neighbors, found " +
                   std::to_string(list.getLength()));
  }
  for (int i = 0; i < list.getLength(); ++i) {
    const Setting& n = as_group(list[i]);
    check_keys(n, schema::Group::kBgpNeighbor);
    BgpNeighbor neighbor;
    neighbor.line = static_cast<int>(n.getSourceLine());
    neighbor.address = as_address(require(n, "address"));
    neighbor.as = as_number(require(n, "as"));
    for (const BgpNeighbor& other : out.neighbors) {
      if (other.address == neighbor.address) {
        fail(n["address"], "neighbor " + format_ipv4(neighbor.address) + " is listed twice");
      }
    }
    if (neighbor.address == out.router_id || neighbor.address == out.next_hop) {
      fail(n["address"], "neighbor " + format_ipv4(neighbor.address) +
                             " is this node's own router_id or next_hop");
    }
    out.neighbors.push_back(neighbor);
  }
  optional_integer(g, "hold_time", out.hold_time, 3, 65535);
  if (const Setting* s = find(g, "communities")) {
    const Setting& c = s->getType() == Setting::TypeArray ? *s : as_list(*s);
    for (int i = 0; i < c.getLength(); ++i) {
      const std::string text = as_string(c[i]);
      const size_t colon = text.find(':');
      const std::optional<uint32_t> a =
          colon == std::string::npos ? std::nullopt : parse_u16(text.substr(0, colon));
      const std::optional<uint32_t> b =
          colon == std::string::npos ? std::nullopt : parse_u16(text.substr(colon + 1));
      if (!a || !b) {
        fail(c[i], "invalid community " + quote(text) +
                       " (expected \"ASN:VALUE\", each 0..65535, e.g. \"65000:100\")");
      }
      out.communities.emplace_back(static_cast<uint16_t>(*a), static_cast<uint16_t>(*b));
    }
  }
  if (const Setting* s = find(g, "med")) out.med = integer_as<uint32_t>(*s, 0, 4294967295);
  if (const Setting* s = find(g, "announce_when")) {
    out.announce_when = enumeration<AnnounceWhen>(
        *s, "announce_when",
        {{"serving", AnnounceWhen::kServing}, {"alive", AnnounceWhen::kAlive}});
  }
  optional_integer(g, "lbd_timeout_ms", out.lbd_timeout_ms, 100, 600000);
  if (const Setting* s = find(g, "bird_config"))
    out.bird_config = as_path_key(*s, "bird_config", false);
  if (const Setting* s = find(g, "bird_socket"))
    out.bird_socket = as_path_key(*s, "bird_socket", true);
  return out;
}

// "0".."65535" in decimal without leading zeros; nullopt otherwise.
std::optional<uint32_t> Parser::parse_u16(const std::string& text) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  uint32_t v = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > 65535) return std::nullopt;
  return v;
}

}  // namespace lb::cfg::detail
