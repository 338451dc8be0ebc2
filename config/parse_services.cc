// The `services` list: each service, its backends and its health check (parser.h).

#include "parser.h"

#include <algorithm>
#include <charconv>

namespace lb::cfg::detail {

namespace {

bool is_prime(uint32_t m) {
  if (m < 2) return false;
  for (uint32_t d = 2; uint64_t{d} * d <= m; ++d)
    if (m % d == 0) return false;
  return true;
}

}  // namespace

RangeError parse_range(std::string_view text, StatusRange& out) {
  const auto code = [](std::string_view part) -> std::optional<uint16_t> {
    if (part.size() != 3) return std::nullopt;
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc{} || end != part.data() + part.size() || v < kMinStatus || v > kMaxStatus) {
      return std::nullopt;
    }
    return static_cast<uint16_t>(v);
  };
  const size_t dash = text.find('-');
  const std::optional<uint16_t> min = code(text.substr(0, dash));
  const std::optional<uint16_t> max =
      dash == std::string_view::npos ? min : code(text.substr(dash + 1));
  if (!min || !max) return RangeError::kMalformed;
  if (*min > *max) return RangeError::kReversed;
  out.min = *min;
  out.max = *max;
  return RangeError::kNone;
}

// A full-NAT address is lbd's own: no service's VIP, no backend. A full-NAT service needs one.
void Parser::check_fullnat_addresses(const Config& config) const {
  for (size_t i = 0; i < config.services.size(); ++i) {
    if (config.services[i].forward == Forward::kFullnat &&
        config.dataplane.fullnat_addresses.empty()) {
      fail(service_settings_[i].group,
           "forward = \"fullnat\" needs dataplane.fullnat_addresses (the addresses lbd "
           "connects to the backends from)");
    }
  }
  for (size_t i = 0; i < config.dataplane.fullnat_addresses.size(); ++i) {
    const uint32_t addr = config.dataplane.fullnat_addresses[i];
    for (const ServiceConfig& service : config.services) {
      if (service.vip == addr) {
        fail(*fullnat_settings_[i],
             format_ipv4(addr) + " is the VIP of service " + quote(service.name));
      }
      for (const BackendConfig& b : service.backends) {
        if (b.address == addr) {
          fail(*fullnat_settings_[i],
               format_ipv4(addr) + " is a backend of service " + quote(service.name));
        }
      }
    }
  }
}

void Parser::parse_services(const Setting& services, Config& config) {
  if (services.getLength() == 0) fail(services, "expected at least one service, found none");
  if (static_cast<uint32_t>(services.getLength()) > limits::kMaxServices) {
    fail(services, std::to_string(services.getLength()) + " services: at most " +
                       std::to_string(limits::kMaxServices));
  }
  for (int i = 0; i < services.getLength(); ++i) {
    ServiceSettings where;
    ServiceConfig service = parse_service(as_group(services[i]), config.dataplane, where);
    for (size_t j = 0; j < config.services.size(); ++j) {
      const ServiceConfig& other = config.services[j];
      const ServiceSettings& other_where = service_settings_[j];
      if (other.name == service.name) {
        fail(where.name, "duplicate service name " + quote(service.name) + " (first at line " +
                             std::to_string(other_where.name.line()) + ", " +
                             other_where.group.path() + ")");
      }
      if (other.vip == service.vip && other.port == service.port) {
        fail(where.vip, format_ipv4(service.vip) + ":" + std::to_string(service.port) +
                            " is already used by service " + quote(other.name) + " (line " +
                            std::to_string(other_where.vip.line()) + ")");
      }
    }
    config.services.push_back(std::move(service));
    service_settings_.push_back(std::move(where));
  }
  size_t total = 0;
  for (const ServiceConfig& sc : config.services) total += sc.backends.size();
  if (total > limits::kMaxBackends) {
    fail(services, std::to_string(total) + " backends in all: at most " +
                       std::to_string(limits::kMaxBackends) + " (lbd's backend table)");
  }
}

ServiceConfig Parser::parse_service(const Setting& s, const DataplaneConfig& dp,
                                    ServiceSettings& where) const {
  check_keys(s, schema::Group::kService);
  ServiceConfig out;
  out.line = static_cast<int>(s.getSourceLine());
  where.group.setting = &s;
  where.name.setting = &require(s, "name");
  out.name = as_name(*where.name.setting);
  where.vip.setting = &require(s, "vip");
  out.vip = as_address(*where.vip.setting);
  for (const PortConfig& port : dp.ports) {
    if (port.ip == out.vip) {
      fail(where.vip, "VIP " + format_ipv4(out.vip) + " is the address of port " +
                          quote(port.name) + " (a VIP must be an address of its own)");
    }
    // A VIP outside every port's subnet is routed to lbd and may be anything unicast.
    if (port.in_subnet(out.vip)) check_host_in_subnet(*where.vip.setting, port, out.vip);
  }
  out.port = integer_as<uint16_t>(require(s, "port"), 1, 65535);
  if (const Setting* p = find(s, "protocol")) {
    out.protocol = enumeration<Protocol>(*p, "protocol", {{"tcp", Protocol::kTcp}});
  }
  if (const Setting* p = find(s, "scheduler")) {
    out.scheduler = enumeration<Scheduler>(*p, "scheduler",
                                           {{"rr", Scheduler::kRoundRobin},
                                            {"wrr", Scheduler::kWeightedRoundRobin},
                                            {"random", Scheduler::kRandom},
                                            {"lc", Scheduler::kLeastConnections},
                                            {"maglev", Scheduler::kMaglev}});
  }
  if (const Setting* p = find(s, "forward")) {
    out.forward = enumeration<Forward>(
        *p, "forward",
        {{"dnat", Forward::kDnat}, {"tunnel", Forward::kTunnel}, {"fullnat", Forward::kFullnat}});
  }
  if (const Setting* p = find(s, "maglev_table_size")) {
    out.maglev_table_size = integer_as<uint32_t>(*p, kMinMaglevTableSize, kMaxMaglevTableSize);
    if (!is_prime(out.maglev_table_size)) {
      uint32_t next = out.maglev_table_size + 1;
      while (!is_prime(next)) ++next;
      fail(*p, "maglev_table_size " + std::to_string(out.maglev_table_size) +
                   " is not prime (the next prime is " + std::to_string(next) + ")");
    }
  }
  if (const Setting* p = find(s, "miss_policy")) {
    out.miss_policy = enumeration<MissPolicy>(
        *p, "miss_policy",
        {{"drop", MissPolicy::kDrop}, {"rst", MissPolicy::kRst}, {"rehash", MissPolicy::kRehash}});
    if (out.miss_policy == MissPolicy::kRehash && out.scheduler != Scheduler::kMaglev)
      fail(*p, "miss_policy \"rehash\" needs scheduler = \"maglev\" (scheduler is \"" +
                   std::string(to_string(out.scheduler)) + "\")");
    if (out.miss_policy == MissPolicy::kRehash && out.forward == Forward::kFullnat)
      fail(*p,
           "miss_policy \"rehash\" cannot continue a full-NAT connection (its backend knows "
           "it by the local address and port of the node that began it): use \"rst\" or "
           "\"drop\", or forward = \"dnat\" or \"tunnel\"");
  }
  if (const Setting* p = find(s, "syn_flood_policy")) {
    out.syn_flood_policy =
        enumeration<SynFloodPolicy>(*p, "syn_flood_policy",
                                    {{"drop-new", SynFloodPolicy::kDropNew},
                                     {"evict-embryonic", SynFloodPolicy::kEvictEmbryonic},
                                     {"stateless", SynFloodPolicy::kStateless}});
    // A stateless SYN leaves no record: later segments must find the same backend without one
    // (the Maglev table), and its backend must answer the client directly (a dnat or fullnat
    // SYN-ACK coming back through lbd would find nothing to translate it by).
    if (out.syn_flood_policy == SynFloodPolicy::kStateless &&
        (out.scheduler != Scheduler::kMaglev || out.forward != Forward::kTunnel))
      fail(*p, std::string("syn_flood_policy \"stateless\" needs scheduler = \"maglev\" and "
                           "forward = \"tunnel\" (scheduler is \"") +
                   to_string(out.scheduler) + "\", forward \"" + to_string(out.forward) + "\")");
  }
  if (const Setting* h = find(s, "health")) out.health = parse_health(as_group(*h));
  if (const Setting* p = find(s, "on_all_down")) {
    out.on_all_down = enumeration<AllDownPolicy>(
        *p, "on_all_down",
        {{"fail_closed", AllDownPolicy::kFailClosed}, {"fail_open", AllDownPolicy::kFailOpen}});
  }
  if (const Setting* p = find(s, "maint")) {
    out.maint = enumeration<MaintPolicy>(
        *p, "maint policy", {{"keep", MaintPolicy::kKeep}, {"drop", MaintPolicy::kDrop}});
  }

  const Setting& backends = as_list(require(s, "backends"));
  if (static_cast<uint32_t>(backends.getLength()) > limits::kMaxBackendsPerService) {
    fail(backends, std::to_string(backends.getLength()) + " backends: at most " +
                       std::to_string(limits::kMaxBackendsPerService) +
                       " per service (what one pool update carries)");
  }
  for (int i = 0; i < backends.getLength(); ++i) {
    const Setting& b = as_group(backends[i]);
    check_keys(b, schema::Group::kBackend);
    BackendConfig backend;
    backend.line = static_cast<int>(b.getSourceLine());
    const Setting& address_setting = require(b, "address");
    backend.address = as_address(address_setting);
    backend.port = integer_as<uint16_t>(require(b, "port"), 1, 65535);
    optional_integer(b, "weight", backend.weight, 0, kMaxWeight);
    if (const Setting* st = find(b, "state")) {
      backend.state = enumeration<AdminState>(*st, "state",
                                              {{"ready", AdminState::kReady},
                                               {"drain", AdminState::kDrain},
                                               {"maint", AdminState::kMaint}});
    }
    if (const Setting* st = find(b, "initial_state")) backend.initial_state = initial_state(*st);
    for (size_t j = 0; j < out.backends.size(); ++j) {
      if (out.backends[j].address == backend.address && out.backends[j].port == backend.port) {
        fail(address_setting, "duplicate backend " + format_ipv4(backend.address) + ":" +
                                  std::to_string(backend.port) + " (first at line " +
                                  std::to_string(where.backend_address[j].line()) + ")");
      }
    }
    out.backends.push_back(backend);
    where.backend_address.push_back(Where{&address_setting});
  }
  return out;
}

HealthConfig Parser::parse_health(const Setting& h) const {
  check_keys(h, schema::Group::kHealth);
  HealthConfig out;
  out.line = static_cast<int>(h.getSourceLine());
  if (const Setting* p = find(h, "path")) {
    out.path = as_string(*p);
    // It goes verbatim into "GET <path> HTTP/1.1": a space or control byte would split or
    // corrupt the request line.
    const bool clean = std::all_of(out.path.begin(), out.path.end(), [](char c) {
      return static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
    });
    if (out.path.empty() || out.path[0] != '/' || !clean || out.path.size() > kMaxHealthPathLen) {
      fail(*p, "invalid path " + quote(out.path) + " (must start with '/', be at most " +
                   std::to_string(kMaxHealthPathLen) +
                   " bytes and contain no spaces or control characters)");
    }
  }
  const Setting* interval = find(h, "interval_ms");
  if (interval != nullptr)
    out.interval_ms = integer_as<uint32_t>(*interval, kMinIntervalMs, kMaxIntervalMs);
  if (const Setting* t = find(h, "timeout_ms")) {
    out.timeout_ms = integer_as<uint32_t>(*t, 1, kMaxIntervalMs);
    // A check still running when the next is due would overlap it.
    if (out.timeout_ms > out.interval_ms) {
      fail(*t, "timeout_ms " + std::to_string(out.timeout_ms) + " exceeds interval_ms " +
                   std::to_string(out.interval_ms));
    }
  } else if (interval != nullptr && out.timeout_ms > out.interval_ms) {
    fail(*interval, "interval_ms " + std::to_string(out.interval_ms) +
                        " is shorter than the default timeout_ms " +
                        std::to_string(out.timeout_ms) + "; set timeout_ms too");
  }
  optional_integer(h, "rise", out.rise, kMinRiseFall, kMaxRiseFall);
  optional_integer(h, "fall", out.fall, kMinRiseFall, kMaxRiseFall);
  if (const Setting* e = find(h, "expect_status")) parse_expect_status(*e, out);
  // The next check is scheduled when the previous one has ended, so these may be shorter
  // than timeout_ms without checks overlapping.
  out.fast_interval_ms = out.interval_ms;
  out.down_interval_ms = out.interval_ms;
  optional_integer(h, "fast_interval_ms", out.fast_interval_ms, kMinIntervalMs, kMaxIntervalMs);
  optional_integer(h, "down_interval_ms", out.down_interval_ms, kMinIntervalMs, kMaxIntervalMs);
  optional_integer(h, "jitter_pct", out.jitter_pct, 0, kMaxJitterPct);
  if (const Setting* b = find(h, "expect_body")) {
    out.expect_body = as_string(*b);
    if (out.expect_body.empty() || out.expect_body.size() > kMaxExpectBodyLen) {
      fail(*b, "expect_body must be 1.." + std::to_string(kMaxExpectBodyLen) + " bytes, found " +
                   std::to_string(out.expect_body.size()) +
                   " (leave the key out to skip the body check)");
    }
  }
  if (const Setting* n = find(h, "host")) {
    out.host = as_string(*n);
    // It goes verbatim into the "Host:" request header.
    const bool clean = std::all_of(out.host.begin(), out.host.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
    });
    if (out.host.empty() || out.host.size() > kMaxHostLen || !clean) {
      fail(*n, "invalid host " + quote(out.host) + " (1.." + std::to_string(kMaxHostLen) +
                   " characters from A-Z a-z 0-9 . - _ : [ ])");
    }
  }
  optional_integer(h, "port", out.port, 1, 65535);
  if (const Setting* st = find(h, "initial_state")) out.initial_state = initial_state(*st);
  if (const Setting* p = find(h, "passive")) {
    const Setting& passive = as_group(*p);
    check_keys(passive, schema::Group::kPassive);
    optional_integer(passive, "syn_rst", out.passive.syn_rst, 0, kMaxPassiveSignals);
    optional_integer(passive, "syn_timeout", out.passive.syn_timeout, 0, kMaxPassiveSignals);
  }
  return out;
}

InitialState Parser::initial_state(const Setting& s) const {
  return enumeration<InitialState>(s, "initial_state",
                                   {{"up", InitialState::kUp}, {"down", InitialState::kDown}});
}

void Parser::parse_expect_status(const Setting& s, HealthConfig& out) const {
  const std::string text = as_string(s);
  StatusRange range;
  switch (parse_range(text, range)) {
    case RangeError::kMalformed:
      fail(s, "invalid expect_status " + quote(text) + R"( (expected "NNN" or "NNN-MMM" with )" +
                  "codes in " + std::to_string(kMinStatus) + ".." + std::to_string(kMaxStatus) +
                  ")");
    case RangeError::kReversed:
      fail(s, "invalid expect_status " + quote(text) + " (first code is above the last)");
    case RangeError::kNone:
      break;
  }
  out.expect_status_min = range.min;
  out.expect_status_max = range.max;
}

// Needs every VIP, so it runs once all services are read.
void Parser::check_backends(const Config& config) const {
  for (size_t i = 0; i < config.services.size(); ++i) {
    const ServiceConfig& service = config.services[i];
    for (size_t j = 0; j < service.backends.size(); ++j) {
      const uint32_t addr = service.backends[j].address;
      const Where& where = service_settings_[i].backend_address[j];
      for (const PortConfig& port : config.dataplane.ports) {
        if (port.ip == addr) {
          fail(where,
               "backend " + format_ipv4(addr) + " is the address of port " + quote(port.name));
        }
        // One behind a gateway is outside every port's subnet and may be anything unicast.
        if (port.in_subnet(addr)) check_host_in_subnet(*where.setting, port, addr);
      }
      for (const ServiceConfig& other : config.services) {
        if (other.vip == addr) {
          fail(where, "backend " + format_ipv4(addr) + " is the VIP of service " +
                          quote(other.name) + " (a load balancer cannot be its own backend)");
        }
      }
      if (egress_port(config.dataplane, addr) == nullptr) {
        fail(where, "backend " + format_ipv4(addr) +
                        " is reachable through no port: it is in no port's subnet and no "
                        "port has a gateway");
      }
    }
  }
}

}  // namespace lb::cfg::detail
