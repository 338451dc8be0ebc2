// Loader and validator for the lbd configuration file. The rules are listed, key by key, in
// docs/configuration.md; keep the two in step.
//
// Design: libconfig parses the text into a tree; a single Parser (parser.h, its methods by section
// in parse_*.cc) walks that tree top-down, checks each setting's type, range and spelling as it
// converts it, then runs the cross-setting checks (duplicates, overlaps, reachability). The first
// problem ends the load with a ConfigError that names the file, the source line and the setting
// path, so an operator can go straight to it. This file: the public functions of lb_config.h.

#include "lb_config.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>

#include "parser.h"

namespace lb::cfg {

namespace {

// "file:line: path: message", or "file:line: message" for problems with the file as a whole
// (I/O, syntax), which belong to no setting.
std::string format_error(const std::string& file, int line, const std::string& path,
                         const std::string& what) {
  std::string out = file + ":" + std::to_string(line) + ": ";
  if (!path.empty()) out += path + ": ";
  out += what;
  return out;
}

}  // namespace

ConfigError::ConfigError(std::string file, int line, std::string path, const std::string& what)
    : std::runtime_error(format_error(file, line, path, what)),
      file_(std::move(file)),
      line_(line),
      path_(std::move(path)) {}

// ---------------------------------------------------------------------------------------------
// Addresses and names.

std::optional<uint32_t> parse_ipv4(const std::string& text) {
  uint32_t addr = 0;
  size_t pos = 0;
  for (int octet = 0; octet < 4; ++octet) {
    if (octet > 0) {
      if (pos >= text.size() || text[pos] != '.') return std::nullopt;
      ++pos;
    }
    const size_t start = pos;
    uint32_t value = 0;
    while (pos < text.size() && pos - start < 4 && text[pos] >= '0' && text[pos] <= '9') {
      value = value * 10 + static_cast<uint32_t>(text[pos] - '0');
      ++pos;
    }
    const size_t digits = pos - start;
    // A leading zero is refused because inet_aton() would read "010" as octal 8: the same text
    // must not mean different addresses to lbd and to the tools around it.
    if (digits == 0 || digits > 3 || value > 255 || (digits > 1 && text[start] == '0')) {
      return std::nullopt;
    }
    addr = (addr << 8) | value;
  }
  if (pos != text.size()) return std::nullopt;
  return addr;
}

std::string format_ipv4(uint32_t addr) {
  return std::to_string(addr >> 24) + "." + std::to_string((addr >> 16) & 0xff) + "." +
         std::to_string((addr >> 8) & 0xff) + "." + std::to_string(addr & 0xff);
}

const char* to_string(Scheduler s) {
  switch (s) {
    case Scheduler::kRoundRobin:
      return "rr";
    case Scheduler::kWeightedRoundRobin:
      return "wrr";
    case Scheduler::kRandom:
      return "random";
    case Scheduler::kLeastConnections:
      return "lc";
    case Scheduler::kMaglev:
      return "maglev";
  }
  return "?";
}

const char* to_string(SynFloodPolicy p) {
  switch (p) {
    case SynFloodPolicy::kDropNew:
      return "drop-new";
    case SynFloodPolicy::kEvictEmbryonic:
      return "evict-embryonic";
    case SynFloodPolicy::kStateless:
      return "stateless";
  }
  return "?";
}

const char* to_string(MissPolicy p) {
  switch (p) {
    case MissPolicy::kDrop:
      return "drop";
    case MissPolicy::kRst:
      return "rst";
    case MissPolicy::kRehash:
      return "rehash";
  }
  return "?";
}

const char* to_string(IdleMode m) {
  switch (m) {
    case IdleMode::kPoll:
      return "poll";
    case IdleMode::kSleep:
      return "sleep";
  }
  return "?";
}

const char* to_string(NoBackendPolicy p) {
  switch (p) {
    case NoBackendPolicy::kRst:
      return "rst";
    case NoBackendPolicy::kDrop:
      return "drop";
  }
  return "?";
}

const char* to_string(Protocol p) {
  switch (p) {
    case Protocol::kTcp:
      return "tcp";
  }
  return "?";
}

const char* to_string(Forward f) {
  switch (f) {
    case Forward::kDnat:
      return "dnat";
    case Forward::kTunnel:
      return "tunnel";
    case Forward::kFullnat:
      return "fullnat";
  }
  return "?";
}

const char* to_string(InitialState s) {
  switch (s) {
    case InitialState::kUp:
      return "up";
    case InitialState::kDown:
      return "down";
  }
  return "?";
}

const char* to_string(AdminState s) {
  switch (s) {
    case AdminState::kReady:
      return "ready";
    case AdminState::kDrain:
      return "drain";
    case AdminState::kMaint:
      return "maint";
  }
  return "?";
}

const char* to_string(AllDownPolicy p) {
  switch (p) {
    case AllDownPolicy::kFailClosed:
      return "fail_closed";
    case AllDownPolicy::kFailOpen:
      return "fail_open";
  }
  return "?";
}

const char* to_string(MaintPolicy p) {
  switch (p) {
    case MaintPolicy::kKeep:
      return "keep";
    case MaintPolicy::kDrop:
      return "drop";
  }
  return "?";
}

const char* to_string(AnnounceWhen w) {
  switch (w) {
    case AnnounceWhen::kServing:
      return "serving";
    case AnnounceWhen::kAlive:
      return "alive";
  }
  return "?";
}

const char* to_string(VipArp v) {
  switch (v) {
    case VipArp::kSubnet:
      return "subnet";
    case VipArp::kAll:
      return "all";
    case VipArp::kNone:
      return "none";
  }
  return "?";
}

std::string bird_config_path(const Config& config, const std::string& instance) {
  if (config.bgp.bird_config) return *config.bgp.bird_config;
  return "/run/lbd/" + (instance.empty() ? config.instance : instance) + "-bird.conf";
}

std::string bird_socket_path(const Config& config, const std::string& instance) {
  if (config.bgp.bird_socket) return *config.bgp.bird_socket;
  return "/run/lbd/" + (instance.empty() ? config.instance : instance) + "-bird.ctl";
}

std::string default_control_socket(const std::string& instance) {
  return "/run/lbd/" + instance + ".sock";
}

std::string control_socket_path(const Config& config, const std::string& instance) {
  if (config.healthd.control_socket) return *config.healthd.control_socket;
  return default_control_socket(instance.empty() ? config.instance : instance);
}

std::optional<ListenAddress> parse_listen(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  const std::optional<uint32_t> address = parse_ipv4(text.substr(0, colon));
  const std::string port = text.substr(colon + 1);
  if (!address || port.empty() || port.size() > 5 || port[0] == '0' ||
      port.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const unsigned long value = std::stoul(port);
  if (value > 65535) return std::nullopt;
  return ListenAddress{*address, static_cast<uint16_t>(value)};
}

std::string metrics_listen(const HealthdConfig& healthd) {
  return healthd.metrics_listen.value_or(kDefaultMetricsListen);
}

std::string state_file_path(const Config& config, const std::string& config_path) {
  if (!config.healthd.state_file) return config_path + ".state";
  const std::string& path = *config.healthd.state_file;
  if (path.empty() || path[0] == '/') return path;
  const size_t slash = config_path.rfind('/');
  return slash == std::string::npos ? path : config_path.substr(0, slash + 1) + path;
}

const PortConfig* egress_port(const DataplaneConfig& dataplane, uint32_t addr) {
  for (const PortConfig& port : dataplane.ports) {
    if (port.in_subnet(addr)) return &port;
  }
  for (const PortConfig& port : dataplane.ports) {
    if (port.gateway) return &port;
  }
  return nullptr;
}

using detail::Parser;

std::optional<StatusRange> parse_status_range(std::string_view text) {
  StatusRange range;
  if (detail::parse_range(text, range) != detail::RangeError::kNone) return std::nullopt;
  return range;
}

Config parse_config(const std::string& text, const std::string& name) {
  return Parser(name, text, "").run();
}

Config load_config(const std::string& path) {
  int error = 0;
  std::optional<std::string> text = detail::read_file(path, &error);
  if (!text) throw ConfigError(path, 0, "", std::string("cannot read: ") + std::strerror(error));
  // @include "x.cfg" is resolved next to the including file, not in lbd's working directory.
  const size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty()) dir = "/";
  return Parser(path, std::move(*text), std::move(dir)).run();
}

}  // namespace lb::cfg
