// Loader and validator for the lbd configuration file. The rules are listed, key by key, in
// docs/configuration.md; keep the two in step.
//
// Design: libconfig parses the text into a tree; a single Parser walks that tree top-down, checks
// each setting's type, range and spelling as it converts it, then runs the cross-setting checks
// (duplicates, overlaps, reachability). The first problem ends the load with a ConfigError that
// names the file, the source line and the setting path, so an operator can go straight to it.

#include "lb_config.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <string_view>
#include <utility>

#include <libconfig.h++>

#include "lb_limits.h"

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

namespace {

using libconfig::Setting;

// Limits, in one place so the messages and docs/configuration.md can be checked against them.
constexpr int64_t kMinWorkers = 1, kMaxWorkers = limits::kMaxWorkers;
constexpr int64_t kMinMbufs = 1023, kMaxMbufs = 4194303;
constexpr int kMinPorts = 1, kMaxPorts = static_cast<int>(limits::kMaxPorts);
constexpr int64_t kMinDescriptors = 64, kMaxDescriptors = 16384;
constexpr int64_t kMinFlowCapacity = 1024, kMaxFlowCapacity = 67108864;
constexpr int64_t kMinTimeoutS = 1, kMaxTimeoutS = 86400;
constexpr int64_t kMinSynRetryMs = 100, kMaxSynRetryMs = 60000;
constexpr int64_t kMaxIdleAfterPolls = 100000000, kMaxIdleSleepUs = 100000;
constexpr int64_t kMaxRetries = 8;

bool is_prime(uint32_t m) {
  if (m < 2) return false;
  for (uint32_t d = 2; uint64_t{d} * d <= m; ++d)
    if (m % d == 0) return false;
  return true;
}
constexpr int64_t kMinIntervalMs = 10, kMaxIntervalMs = 3600000;
constexpr int64_t kMinRiseFall = 1, kMaxRiseFall = 100;
constexpr int64_t kMinStatus = 100, kMaxStatus = 599;
constexpr int64_t kMaxDrainTimeoutMs = 86400000;  // a day
constexpr int64_t kMaxWeight = 65535;
constexpr size_t kMaxNameLen = 32;
constexpr size_t kMaxHealthPathLen = 1024;
constexpr int64_t kMaxJitterPct = 50;
constexpr size_t kMaxExpectBodyLen = 1024;
constexpr size_t kMaxHostLen = 255;
constexpr int64_t kMaxPassiveSignals = 1000000;
constexpr size_t kMaxSocketPathLen = 107;  // sockaddr_un::sun_path, with its NUL
constexpr size_t kMaxStatePathLen = 4096;
constexpr size_t kMaxBgpNeighbors = 16;
constexpr size_t kMaxAccountNameLen = 32;
constexpr int64_t kMinControlTimeoutMs = 100, kMaxControlTimeoutMs = 3600000;

enum class RangeError { kNone, kMalformed, kReversed };

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

const char* type_name(Setting::Type type) {
  switch (type) {
    case Setting::TypeInt:
    case Setting::TypeInt64:
      return "an integer";
    case Setting::TypeFloat:
      return "a float";
    case Setting::TypeString:
      return "a string";
    case Setting::TypeBoolean:
      return "a boolean";
    case Setting::TypeGroup:
      return "a group { ... }";
    case Setting::TypeArray:
      return "an array [ ... ]";
    case Setting::TypeList:
      return "a list ( ... )";
    case Setting::TypeNone:
      break;
  }
  return "nothing";
}

std::string quote(std::string_view s) {
  return "'" + std::string(s) + "'";
}

std::string join(const std::vector<std::string_view>& names, std::string_view sep) {
  std::string out;
  for (const std::string_view name : names) {
    if (!out.empty()) out += sep;
    out += name;
  }
  return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLen) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

uint32_t prefix_mask(unsigned prefix_len) {
  return prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
}

std::string cidr(uint32_t network, unsigned prefix_len) {
  return format_ipv4(network) + "/" + std::to_string(prefix_len);
}

// 0.0.0.0/8 ("this network"), 224.0.0.0/4 (multicast) and 240.0.0.0/4 (reserved, with the
// limited broadcast) can never be a host we send to or answer from.
std::optional<std::string> non_unicast_reason(uint32_t addr) {
  if ((addr >> 24) == 0) return "is in 0.0.0.0/8, not a usable host address";
  if ((addr >> 28) == 0xe) return "is a multicast address";
  if ((addr >> 28) == 0xf) return "is a reserved or broadcast address";
  return std::nullopt;
}

// libconfig 1.5 keeps an integer literal without the L suffix in 32 bits and wraps it silently:
// "capacity = 4294968320;" reads as 1024. That would turn a typo into a valid, wrong value, so
// integers are checked against the literal in the source text; this is what was written.
struct Literal {
  std::string text;
  std::optional<int64_t> value;  // nullopt: beyond 64 bits
};

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '*';
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f';
}

bool is_digit(char c, bool hex) {
  return (c >= '0' && c <= '9') || (hex && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
}

// Finds, among the `name = <integer>` assignments that begin on `line`, the literal libconfig
// wrapped into `stored`. Returns nullopt when the value was kept exactly (or nothing is found, e.g.
// the setting came from a file we cannot re-read), so at worst this check is skipped.
std::optional<Literal> find_wrapped_literal(std::string_view text, size_t line_begin,
                                            std::string_view name, int stored) {
  const size_t line_end = std::min(text.find('\n', line_begin), text.size());
  std::optional<Literal> wrapped;
  for (size_t at = line_begin; at < line_end; ++at) {
    // Skip strings and comments: "name = 5" inside them is not an assignment.
    if (text[at] == '"') {
      for (++at; at < line_end && text[at] != '"'; ++at) {
        if (text[at] == '\\') ++at;
      }
      continue;
    }
    if (text[at] == '#' || text.substr(at, 2) == "//") break;
    if (text.substr(at, 2) == "/*") {
      at = text.find("*/", at + 2);
      if (at == std::string_view::npos || at >= line_end) break;
      ++at;
      continue;
    }
    if (text.substr(at, name.size()) != name) continue;
    if (at > 0 && is_name_char(text[at - 1])) continue;
    size_t pos = at + name.size();
    if (pos < text.size() && is_name_char(text[pos])) continue;
    while (pos < text.size() && is_space(text[pos])) ++pos;
    if (pos >= text.size() || (text[pos] != '=' && text[pos] != ':')) continue;
    ++pos;
    while (pos < text.size() && is_space(text[pos])) ++pos;
    const size_t start = pos;
    bool negative = false;
    if (pos < text.size() && (text[pos] == '-' || text[pos] == '+')) negative = text[pos++] == '-';
    const bool hex = !negative && pos + 2 < text.size() && text[pos] == '0' &&
                     (text[pos + 1] == 'x' || text[pos + 1] == 'X') &&
                     is_digit(text[pos + 2], true);
    if (hex) pos += 2;
    const size_t digits = pos;
    while (pos < text.size() && is_digit(text[pos], hex)) ++pos;
    if (pos == digits || (pos < text.size() && (text[pos] == 'L' || text[pos] == '.'))) continue;

    // Re-read the literal the way libconfig 1.5 does (strtol/strtoul, then a cast to int) to
    // recognise the one that produced `stored`, and exactly, to know what was meant.
    Literal literal{std::string(text.substr(start, pos - start)), std::nullopt};
    int as_stored = 0;
    if (hex) {
      uint64_t v = 0;
      const auto [end, ec] = std::from_chars(text.data() + digits, text.data() + pos, v, 16);
      if (ec == std::errc{} && v <= uint64_t{std::numeric_limits<int64_t>::max()}) {
        literal.value = static_cast<int64_t>(v);
      }
      if (ec != std::errc{}) v = std::numeric_limits<uint64_t>::max();
      as_stored = static_cast<int>(static_cast<uint32_t>(v));
    } else {
      // from_chars takes no '+', so parse the magnitude and apply the sign.
      uint64_t magnitude = 0;
      const auto [end, ec] =
          std::from_chars(text.data() + digits, text.data() + pos, magnitude, 10);
      constexpr uint64_t kMaxPositive = std::numeric_limits<int64_t>::max();
      int64_t clamped = 0;
      if (ec != std::errc{} || magnitude > kMaxPositive + (negative ? 1 : 0)) {
        clamped =
            negative ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
      } else if (negative) {
        // -(2^63) is representable; negate in unsigned space to avoid overflow.
        clamped = static_cast<int64_t>(~magnitude + 1);
        literal.value = clamped;
      } else {
        clamped = static_cast<int64_t>(magnitude);
        literal.value = clamped;
      }
      as_stored = static_cast<int>(static_cast<uint32_t>(static_cast<uint64_t>(clamped)));
    }
    if (as_stored != stored) continue;
    if (literal.value && *literal.value == stored) return std::nullopt;  // kept exactly
    wrapped = std::move(literal);
  }
  return wrapped;
}

struct Source {
  std::string text;
  std::vector<size_t> line_starts;  // line_starts[n - 1] = offset of line n

  explicit Source(std::string t) : text(std::move(t)) {
    line_starts.push_back(0);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n') line_starts.push_back(i + 1);
    }
  }
};

std::optional<std::string> read_file(const std::string& path, int* error) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) {
    *error = errno;
    return std::nullopt;
  }
  std::string text;
  std::array<char, 65536> buffer{};
  for (;;) {
    const size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get());
    text.append(buffer.data(), n);
    if (n < buffer.size()) break;
  }
  if (std::ferror(file.get()) != 0) {
    // fopen() succeeds on a directory; the read is what fails, with EISDIR.
    *error = errno != 0 ? errno : EIO;
    return std::nullopt;
  }
  return text;
}

template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

// A string setting that names a subsetting: where it is and what it said, for cross-checks that
// point back at the exact line.
struct Where {
  const Setting* setting = nullptr;
  int line() const { return static_cast<int>(setting->getSourceLine()); }
  std::string path() const { return setting->getPath(); }
};

struct PortSettings {
  Where group, name, device, ip;
};

struct ServiceSettings {
  Where group, name, vip;
  std::vector<Where> backend_address;
};

class Parser {
 public:
  Parser(std::string name, std::string text, std::string include_dir)
      : name_(std::move(name)), include_dir_(std::move(include_dir)) {
    sources_.emplace("", Source(std::move(text)));
  }

  Config run() {
    const std::string& text = sources_.at("").text;
    if (const size_t nul = text.find('\0'); nul != std::string::npos) {
      // libconfig reads C strings and would silently drop everything after the NUL.
      const auto line =
          1 + std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(nul), '\n');
      throw ConfigError(name_, static_cast<int>(line), "", "file contains a NUL byte");
    }
    libconfig::Config tree;
    if (!include_dir_.empty()) tree.setIncludeDir(include_dir_.c_str());
    try {
      tree.readString(text);
    } catch (const libconfig::ParseException& e) {
      // libconfig says "syntax error", "duplicate setting name", "cannot open include file"...
      throw ConfigError(e.getFile() != nullptr ? source_name(e.getFile()) : name_, e.getLine(), "",
                        e.getError());
    }

    Config config;
    config.file = name_;
    const Setting& root = tree.getRoot();
    check_keys(root, {"dataplane", "services", "instance", "healthd", "bgp"});
    if (const Setting* s = find(root, "instance")) {
      config.instance = as_name(*s);
      config.instance_line = static_cast<int>(s->getSourceLine());
    }
    config.dataplane = parse_dataplane(as_group(require(root, "dataplane")));
    parse_services(as_list(require(root, "services")), config);
    check_backends(config);
    check_fullnat_addresses(config);
    if (const Setting* h = find(root, "healthd")) config.healthd = parse_healthd(as_group(*h));
    if (const Setting* b = find(root, "bgp")) config.bgp = parse_bgp(as_group(*b), config);
    return config;
  }

 private:
  // -- Errors ----------------------------------------------------------------------------------

  std::string source_name(const char* file) const {
    if (include_dir_.empty() || include_dir_ == "." || file[0] == '/') return file;
    return include_dir_ + (include_dir_.back() == '/' ? "" : "/") + file;
  }

  std::string file_of(const Setting& s) const {
    const char* file = s.getSourceFile();
    return file == nullptr ? name_ : source_name(file);
  }

  [[noreturn]] void fail(const Setting& s, const std::string& what) const {
    throw ConfigError(file_of(s), static_cast<int>(s.getSourceLine()), s.getPath(), what);
  }

  [[noreturn]] void fail(const Where& where, const std::string& what) const {
    fail(*where.setting, what);
  }

  static std::string child_path(const Setting& parent, std::string_view key) {
    std::string path = parent.getPath();
    if (!path.empty()) path += ".";
    return path + std::string(key);
  }

  // -- Structure -------------------------------------------------------------------------------

  // Every group is closed: a misspelt optional key would otherwise be ignored and its default
  // used without a word.
  void check_keys(const Setting& group, std::initializer_list<std::string_view> allowed) const {
    for (int i = 0; i < group.getLength(); ++i) {
      const Setting& child = group[i];
      const std::string_view key = child.getName();
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string what = "unknown setting " + quote(key) + " (";
      std::string_view best;
      size_t best_distance = key.size() < 5 ? 2 : 3;  // closer than this is a likely typo
      for (const std::string_view candidate : allowed) {
        const size_t d = edit_distance(key, candidate);
        if (d < best_distance) {
          best_distance = d;
          best = candidate;
        }
      }
      if (!best.empty()) what += "did you mean " + quote(best) + "? ";
      what += "allowed: " + join(std::vector<std::string_view>(allowed), ", ") + ")";
      fail(child, what);
    }
  }

  const Setting* find(const Setting& group, const char* key) const {
    return group.exists(key) ? &group[key] : nullptr;
  }

  const Setting& require(const Setting& group, const char* key) const {
    if (const Setting* s = find(group, key)) return *s;
    // The setting is not there to point at; the group that should hold it is.
    throw ConfigError(file_of(group), static_cast<int>(group.getSourceLine()),
                      child_path(group, key), "missing required setting " + quote(key));
  }

  void expect_type(const Setting& s, Setting::Type type) const {
    if (s.getType() != type) {
      fail(s, std::string("expected ") + type_name(type) + ", found " + type_name(s.getType()));
    }
  }

  const Setting& as_group(const Setting& s) const {
    expect_type(s, Setting::TypeGroup);
    return s;
  }

  const Setting& as_list(const Setting& s) const {
    // An empty "[]" is an array to libconfig, but means the same as "()" here.
    if (s.getType() == Setting::TypeArray && s.getLength() == 0) return s;
    expect_type(s, Setting::TypeList);
    return s;
  }

  // -- Scalars ---------------------------------------------------------------------------------

  int64_t as_integer(const Setting& s, int64_t min, int64_t max) const {
    int64_t value = 0;
    std::string shown;
    if (s.getType() == Setting::TypeInt64) {
      value = static_cast<long long>(s);
    } else if (s.getType() == Setting::TypeInt) {
      value = static_cast<int>(s);
      if (std::optional<Literal> literal = wrapped_literal(s)) {
        if (!literal->value) {
          fail(s, "integer " + literal->text + " does not fit in 64 bits (expected " +
                      std::to_string(min) + ".." + std::to_string(max) + ")");
        }
        value = *literal->value;
        shown = literal->text;
      }
    } else {
      fail(s, std::string("expected an integer, found ") + type_name(s.getType()));
    }
    if (value < min || value > max) {
      if (shown.empty()) shown = std::to_string(value);
      fail(s, "value " + shown + " is out of range " + std::to_string(min) + ".." +
                  std::to_string(max));
    }
    return value;
  }

  template <typename T>
  T integer_as(const Setting& s, int64_t min, int64_t max) const {
    return static_cast<T>(as_integer(s, min, max));
  }

  // Reads an optional integer key into `out`, which keeps its default when the key is absent.
  template <typename T>
  void optional_integer(const Setting& group, const char* key, T& out, int64_t min,
                        int64_t max) const {
    if (const Setting* s = find(group, key)) out = integer_as<T>(*s, min, max);
  }

  std::optional<Literal> wrapped_literal(const Setting& s) const {
    const char* name = s.getName();
    const unsigned line = s.getSourceLine();
    if (name == nullptr || line == 0) return std::nullopt;
    const Source* source = source_of(s);
    if (source == nullptr || line > source->line_starts.size()) return std::nullopt;
    return find_wrapped_literal(source->text, source->line_starts[line - 1], name,
                                static_cast<int>(s));
  }

  const Source* source_of(const Setting& s) const {
    const char* file = s.getSourceFile();
    const std::string key = file == nullptr ? "" : source_name(file);
    auto it = sources_.find(key);
    if (it == sources_.end()) {
      int error = 0;
      std::optional<std::string> text = read_file(key, &error);
      if (!text) return nullptr;
      it = sources_.emplace(key, Source(std::move(*text))).first;
    }
    return &it->second;
  }

  std::string as_string(const Setting& s) const {
    expect_type(s, Setting::TypeString);
    return static_cast<const char*>(s);
  }

  bool as_bool(const Setting& s) const {
    expect_type(s, Setting::TypeBoolean);
    return static_cast<bool>(s);
  }

  std::string as_name(const Setting& s) const {
    std::string value = as_string(s);
    if (!valid_name(value)) {
      fail(s, "invalid name " + quote(value) + " (use 1.." + std::to_string(kMaxNameLen) +
                  " characters from A-Z a-z 0-9 _ -)");
    }
    return value;
  }

  template <typename E>
  E enumeration(const Setting& s, const char* what,
                std::initializer_list<EnumName<E>> names) const {
    const std::string value = as_string(s);
    std::vector<std::string_view> expected;
    for (const EnumName<E>& n : names) {
      if (n.name == value) return n.value;
      expected.push_back(n.name);
    }
    fail(s, std::string("unknown ") + what + " " + quote(value) + " (expected " +
                join(expected, ", ") + ")");
  }

  uint32_t as_address(const Setting& s) const {
    const std::string text = as_string(s);
    const std::optional<uint32_t> addr = parse_ipv4(text);
    if (!addr) {
      fail(s, "malformed IPv4 address " + quote(text) +
                  " (expected a.b.c.d, decimal, no leading zeros)");
    }
    if (std::optional<std::string> reason = non_unicast_reason(*addr)) {
      fail(s, format_ipv4(*addr) + " " + *reason);
    }
    return *addr;
  }

  // -- Dataplane -------------------------------------------------------------------------------

  DataplaneConfig parse_dataplane(const Setting& dp) {
    check_keys(dp,
               {"workers", "mbufs", "ports", "flows", "retry", "miss_policy", "no_backend_policy",
                "maglev_hash_seed", "idle", "fullnat_addresses", "fullnat_ports"});
    DataplaneConfig out;
    out.line = static_cast<int>(dp.getSourceLine());
    out.workers = integer_as<uint32_t>(require(dp, "workers"), kMinWorkers, kMaxWorkers);
    optional_integer(dp, "mbufs", out.mbufs, kMinMbufs, kMaxMbufs);
    parse_ports(as_list(require(dp, "ports")), out);
    if (const Setting* flows = find(dp, "flows")) out.flows = parse_flows(as_group(*flows));
    if (const Setting* retry = find(dp, "retry")) out.retry = parse_retry(as_group(*retry));
    if (const Setting* s = find(dp, "miss_policy")) {
      out.miss_policy = enumeration<MissPolicy>(
          *s, "miss_policy", {{"drop", MissPolicy::kDrop}, {"rst", MissPolicy::kRst}});
    }
    if (const Setting* s = find(dp, "no_backend_policy")) {
      out.no_backend_policy = enumeration<NoBackendPolicy>(
          *s, "no_backend_policy",
          {{"rst", NoBackendPolicy::kRst}, {"drop", NoBackendPolicy::kDrop}});
    }
    optional_integer(dp, "maglev_hash_seed", out.maglev_hash_seed, 0, INT64_MAX);
    if (const Setting* idle = find(dp, "idle")) out.idle = parse_idle(as_group(*idle));
    if (const Setting* s = find(dp, "fullnat_addresses")) parse_fullnat_addresses(*s, out);
    if (const Setting* s = find(dp, "fullnat_ports")) {
      if ((s->getType() != Setting::TypeArray && s->getType() != Setting::TypeList) ||
          s->getLength() != 2)
        fail(*s, "expected [first, last] (e.g. [1024, 65535])");
      out.fullnat_port_first = static_cast<uint16_t>(as_integer((*s)[0], 1, 65535));
      out.fullnat_port_last = static_cast<uint16_t>(as_integer((*s)[1], 1, 65535));
      // Every worker owns the ports p with p % workers == its index: each needs one at least.
      if (uint32_t{out.fullnat_port_last} + 1 < uint32_t{out.fullnat_port_first} + out.workers) {
        fail(*s, "ports " + std::to_string(out.fullnat_port_first) + ".." +
                     std::to_string(out.fullnat_port_last) + " leave some of the " +
                     std::to_string(out.workers) + " workers no port");
      }
    }
    return out;
  }

  IdleConfig parse_idle(const Setting& g) const {
    check_keys(g, {"mode", "after_empty_polls", "max_sleep_us"});
    IdleConfig out;
    if (const Setting* s = find(g, "mode")) {
      out.mode = enumeration<IdleMode>(*s, "mode",
                                       {{"poll", IdleMode::kPoll}, {"sleep", IdleMode::kSleep}});
    }
    optional_integer(g, "after_empty_polls", out.after_empty_polls, 1, kMaxIdleAfterPolls);
    optional_integer(g, "max_sleep_us", out.max_sleep_us, 1, kMaxIdleSleepUs);
    return out;
  }

  void parse_fullnat_addresses(const Setting& list, DataplaneConfig& out) {
    if (list.getType() != Setting::TypeArray && list.getType() != Setting::TypeList)
      fail(list, "expected a list of IPv4 addresses");
    if (static_cast<uint32_t>(list.getLength()) > limits::kMaxFullnatAddresses) {
      fail(list, "at most " + std::to_string(limits::kMaxFullnatAddresses) +
                     " full-NAT addresses, found " + std::to_string(list.getLength()));
    }
    for (int i = 0; i < list.getLength(); ++i) {
      const Setting& s = list[i];
      const uint32_t addr = as_address(s);
      for (uint32_t earlier : out.fullnat_addresses)
        if (earlier == addr) fail(s, format_ipv4(addr) + " is listed twice");
      bool in_subnet = false;
      for (const PortConfig& port : out.ports) {
        if (!port.in_subnet(addr)) continue;
        in_subnet = true;
        check_host_in_subnet(s, port, addr);
      }
      if (!in_subnet) {
        fail(s, format_ipv4(addr) +
                    " is in no port's subnet: lbd answers ARP for a full-NAT address on the "
                    "port whose subnet holds it (the backends')");
      }
      out.fullnat_addresses.push_back(addr);
      fullnat_settings_.push_back(&s);
    }
  }

  // A full-NAT address is lbd's own: no service's VIP, no backend. A full-NAT service needs one.
  void check_fullnat_addresses(const Config& config) const {
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

  void parse_ports(const Setting& ports, DataplaneConfig& out) {
    const int count = ports.getLength();
    if (count < kMinPorts || count > kMaxPorts) {
      fail(ports, "expected " + std::to_string(kMinPorts) + ".." + std::to_string(kMaxPorts) +
                      " ports, found " + std::to_string(count));
    }
    for (int i = 0; i < count; ++i) {
      PortSettings where;
      PortConfig port = parse_port(as_group(ports[i]), where);
      check_port_against_earlier(port, where, out.ports);
      out.ports.push_back(std::move(port));
      port_settings_.push_back(where);
    }
  }

  PortConfig parse_port(const Setting& p, PortSettings& where) const {
    check_keys(p,
               {"name", "device", "ip", "gateway", "rx_descriptors", "tx_descriptors", "vip_arp"});
    PortConfig port;
    port.line = static_cast<int>(p.getSourceLine());
    where.group.setting = &p;
    where.name.setting = &require(p, "name");
    port.name = as_name(*where.name.setting);
    where.device.setting = &require(p, "device");
    port.device = as_string(*where.device.setting);
    if (port.device.empty()) fail(where.device, "device must not be empty");

    where.ip.setting = &require(p, "ip");
    const Setting& ip = *where.ip.setting;
    const std::string text = as_string(ip);
    const size_t slash = text.find('/');
    if (slash == std::string::npos) {
      fail(ip, "expected address/prefix-length (e.g. 10.0.0.1/24), found " + quote(text));
    }
    const std::optional<uint32_t> addr = parse_ipv4(text.substr(0, slash));
    if (!addr) fail(ip, "malformed IPv4 address " + quote(text.substr(0, slash)));
    const std::string prefix_text = text.substr(slash + 1);
    unsigned prefix = 0;
    const auto [end, ec] =
        std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), prefix);
    if (ec != std::errc{} || end != prefix_text.data() + prefix_text.size() || prefix < 1 ||
        prefix > 32 || (prefix_text.size() > 1 && prefix_text[0] == '0')) {
      fail(ip, "prefix length must be 1..32, found " + quote(prefix_text));
    }
    if (std::optional<std::string> reason = non_unicast_reason(*addr)) {
      fail(ip, format_ipv4(*addr) + " " + *reason);
    }
    port.ip = *addr;
    port.prefix_len = static_cast<uint8_t>(prefix);
    check_host_in_subnet(ip, port, *addr);

    if (const Setting* gw = find(p, "gateway")) {
      const uint32_t gateway = as_address(*gw);
      if (!port.in_subnet(gateway)) {
        fail(*gw, "gateway " + format_ipv4(gateway) + " is outside the port's subnet " +
                      cidr(port.ip & prefix_mask(prefix), prefix));
      }
      if (gateway == port.ip) fail(*gw, "gateway is the port's own address");
      check_host_in_subnet(*gw, port, gateway);
      port.gateway = gateway;
    }
    if (const Setting* s = find(p, "rx_descriptors")) port.rx_descriptors = descriptors(*s);
    if (const Setting* s = find(p, "tx_descriptors")) port.tx_descriptors = descriptors(*s);
    if (const Setting* s = find(p, "vip_arp")) {
      port.vip_arp = enumeration<VipArp>(
          *s, "vip_arp",
          {{"subnet", VipArp::kSubnet}, {"all", VipArp::kAll}, {"none", VipArp::kNone}});
    }
    return port;
  }

  // On subnets with a network and a broadcast address (/30 and wider), neither is a host.
  void check_host_in_subnet(const Setting& s, const PortConfig& port, uint32_t addr) const {
    if (port.prefix_len > 30) return;
    const uint32_t mask = prefix_mask(port.prefix_len);
    const std::string subnet = cidr(port.ip & mask, port.prefix_len);
    if ((addr & ~mask) == 0) fail(s, format_ipv4(addr) + " is the network address of " + subnet);
    if ((addr & ~mask) == ~mask) {
      fail(s, format_ipv4(addr) + " is the broadcast address of " + subnet);
    }
  }

  uint16_t descriptors(const Setting& s) const {
    const int64_t n = as_integer(s, kMinDescriptors, kMaxDescriptors);
    // The PMDs size their rings in powers of two; anything else is rounded or refused by them.
    if ((n & (n - 1)) != 0) fail(s, "value " + std::to_string(n) + " is not a power of two");
    return static_cast<uint16_t>(n);
  }

  void check_port_against_earlier(const PortConfig& port, const PortSettings& where,
                                  const std::vector<PortConfig>& earlier) const {
    // DPDK identifies a device by what precedes the first comma ("0000:01:00.0",
    // "net_af_packet0"); the rest are arguments, so two ports cannot differ only there.
    const auto device_id = [](const std::string& device) {
      return device.substr(0, device.find(','));
    };
    for (size_t j = 0; j < earlier.size(); ++j) {
      const PortConfig& other = earlier[j];
      const PortSettings& other_where = port_settings_[j];
      if (other.name == port.name) {
        fail(where.name, "duplicate port name " + quote(port.name) + " (first at line " +
                             std::to_string(other_where.name.line()) + ", " +
                             other_where.group.path() + ")");
      }
      if (device_id(other.device) == device_id(port.device)) {
        fail(where.device, "device " + quote(device_id(port.device)) + " is already used by port " +
                               quote(other.name) + " (line " +
                               std::to_string(other_where.device.line()) + ")");
      }
      const unsigned shorter = std::min(port.prefix_len, other.prefix_len);
      if (((port.ip ^ other.ip) & prefix_mask(shorter)) == 0) {
        fail(where.ip, "subnet " + cidr(port.ip & prefix_mask(port.prefix_len), port.prefix_len) +
                           " overlaps subnet " +
                           cidr(other.ip & prefix_mask(other.prefix_len), other.prefix_len) +
                           " of port " + quote(other.name) + " (line " +
                           std::to_string(other_where.ip.line()) + ")");
      }
    }
  }

  FlowConfig parse_flows(const Setting& f) const {
    check_keys(f, {"capacity", "tcp_syn_timeout", "tcp_established_timeout", "tcp_fin_timeout",
                   "tcp_closed_timeout", "persist", "directory", "syn_budget",
                   "tcp_syn_timeout_pressure", "syn_flood_policy", "stateless_rate"});
    FlowConfig out;
    optional_integer(f, "capacity", out.capacity, kMinFlowCapacity, kMaxFlowCapacity);
    optional_integer(f, "tcp_syn_timeout", out.tcp_syn_timeout, kMinTimeoutS, kMaxTimeoutS);
    optional_integer(f, "tcp_established_timeout", out.tcp_established_timeout, kMinTimeoutS,
                     kMaxTimeoutS);
    optional_integer(f, "tcp_fin_timeout", out.tcp_fin_timeout, kMinTimeoutS, kMaxTimeoutS);
    optional_integer(f, "tcp_closed_timeout", out.tcp_closed_timeout, kMinTimeoutS, kMaxTimeoutS);
    optional_integer(f, "syn_budget", out.syn_budget, 1, 100);
    optional_integer(f, "tcp_syn_timeout_pressure", out.tcp_syn_timeout_pressure, kMinTimeoutS,
                     kMaxTimeoutS);
    optional_integer(f, "stateless_rate", out.stateless_rate, 1, 100000000);
    if (const Setting* s = find(f, "syn_flood_policy"))
      out.syn_flood_policy =
          enumeration<SynFloodPolicy>(*s, "syn_flood_policy",
                                      {{"drop-new", SynFloodPolicy::kDropNew},
                                       {"evict-embryonic", SynFloodPolicy::kEvictEmbryonic}});
    if (const Setting* s = find(f, "persist")) out.persist = as_bool(*s);
    if (const Setting* s = find(f, "directory")) {
      out.directory = as_string(*s);
      if (out.directory.empty() || out.directory[0] != '/')
        fail(*s, "expected an absolute directory path (e.g. \"/dev/hugepages\"), found " +
                     quote(out.directory));
      while (out.directory.size() > 1 && out.directory.back() == '/') out.directory.pop_back();
    }
    return out;
  }

  RetryConfig parse_retry(const Setting& r) const {
    check_keys(r, {"on_rst", "syn_timeout_ms", "max_retries"});
    RetryConfig out;
    if (const Setting* s = find(r, "on_rst")) out.on_rst = as_bool(*s);
    optional_integer(r, "syn_timeout_ms", out.syn_timeout_ms, kMinSynRetryMs, kMaxSynRetryMs);
    optional_integer(r, "max_retries", out.max_retries, 0, kMaxRetries);
    return out;
  }

  // -- Services --------------------------------------------------------------------------------

  void parse_services(const Setting& services, Config& config) {
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

  ServiceConfig parse_service(const Setting& s, const DataplaneConfig& dp,
                              ServiceSettings& where) const {
    check_keys(s,
               {"name", "vip", "port", "protocol", "scheduler", "forward", "maglev_table_size",
                "miss_policy", "syn_flood_policy", "health", "backends", "on_all_down", "maint"});
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
      out.miss_policy = enumeration<MissPolicy>(*p, "miss_policy",
                                                {{"drop", MissPolicy::kDrop},
                                                 {"rst", MissPolicy::kRst},
                                                 {"rehash", MissPolicy::kRehash}});
      if (out.miss_policy == MissPolicy::kRehash && out.scheduler != Scheduler::kMaglev)
        fail(*p, "miss_policy \"rehash\" needs scheduler = \"maglev\" (scheduler is \"" +
                     std::string(to_string(out.scheduler)) + "\")");
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
      check_keys(b, {"address", "port", "weight", "state", "initial_state"});
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

  HealthConfig parse_health(const Setting& h) const {
    check_keys(h, {"path", "interval_ms", "timeout_ms", "rise", "fall", "expect_status",
                   "fast_interval_ms", "down_interval_ms", "jitter_pct", "expect_body", "host",
                   "port", "initial_state", "passive"});
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
      check_keys(passive, {"syn_rst", "syn_timeout"});
      optional_integer(passive, "syn_rst", out.passive.syn_rst, 0, kMaxPassiveSignals);
      optional_integer(passive, "syn_timeout", out.passive.syn_timeout, 0, kMaxPassiveSignals);
    }
    return out;
  }

  // -- lb-healthd's control socket and state file ------------------------------------------------

  HealthdConfig parse_healthd(const Setting& h) const {
    check_keys(h, {"control_socket", "socket_mode", "socket_owner", "socket_group", "state_file",
                   "control_timeout_ms", "drain_timeout_ms", "metrics_listen"});
    HealthdConfig out;
    out.line = static_cast<int>(h.getSourceLine());
    const auto printable = [](const std::string& text) {
      return std::all_of(text.begin(), text.end(),
                         [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
    };
    if (const Setting* s = find(h, "control_socket")) {
      std::string path = as_string(*s);
      if (!path.empty() &&
          (path[0] != '/' || path.size() > kMaxSocketPathLen || !printable(path))) {
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
      const bool numeric = !v.empty() && std::all_of(v.begin(), v.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
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

  // -- lb-healthd's BGP announcer ---------------------------------------------------------------

  uint32_t as_number(const Setting& s) const {
    // 0 and 4294967295 are reserved (RFC 7607, RFC 7300); 23456 is AS_TRANS (RFC 6793).
    const auto as = integer_as<uint32_t>(s, 1, 4294967294);
    if (as == 23456) fail(s, "AS 23456 is AS_TRANS (RFC 6793), not a real AS number");
    return as;
  }

  std::string as_path_key(const Setting& s, const char* key, bool socket) const {
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

  BgpConfig parse_bgp(const Setting& g, const Config& config) const {
    check_keys(g, {"local_as", "router_id", "next_hop", "neighbors", "hold_time", "communities",
                   "med", "announce_when", "lbd_timeout_ms", "bird_config", "bird_socket"});
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
      check_keys(n, {"address", "as"});
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
  static std::optional<uint32_t> parse_u16(const std::string& text) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
    uint32_t v = 0;
    for (const char c : text) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    if (v > 65535) return std::nullopt;
    return v;
  }

  InitialState initial_state(const Setting& s) const {
    return enumeration<InitialState>(s, "initial_state",
                                     {{"up", InitialState::kUp}, {"down", InitialState::kDown}});
  }

  void parse_expect_status(const Setting& s, HealthConfig& out) const {
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
  void check_backends(const Config& config) const {
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

  std::string name_;
  std::string include_dir_;
  // Keyed by file name as reported; "" is the text being parsed. Filled lazily for @include'd
  // files, and only for the wrapped-integer check.
  mutable std::map<std::string, Source> sources_;
  std::vector<PortSettings> port_settings_;
  std::vector<ServiceSettings> service_settings_;
  std::vector<const Setting*> fullnat_settings_;
};

}  // namespace

std::optional<StatusRange> parse_status_range(std::string_view text) {
  StatusRange range;
  if (parse_range(text, range) != RangeError::kNone) return std::nullopt;
  return range;
}

Config parse_config(const std::string& text, const std::string& name) {
  return Parser(name, text, "").run();
}

Config load_config(const std::string& path) {
  int error = 0;
  std::optional<std::string> text = read_file(path, &error);
  if (!text) throw ConfigError(path, 0, "", std::string("cannot read: ") + std::strerror(error));
  // @include "x.cfg" is resolved next to the including file, not in lbd's working directory.
  const size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty()) dir = "/";
  return Parser(path, std::move(*text), std::move(dir)).run();
}

}  // namespace lb::cfg
