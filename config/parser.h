#pragma once
// The configuration loader's inside (not for other parts: they use lb_config.h). One Parser walks
// libconfig's tree top-down, checks each setting's type, range and spelling as it converts it,
// then runs the cross-setting checks (duplicates, overlaps, reachability). Its methods live by
// section: parser.cc (errors, structure, scalars), parse_dataplane.cc, parse_services.cc
// (services, backends, health checks), parse_daemons.cc (the healthd and bgp groups).

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <libconfig.h++>

#include "int_literal.h"
#include "lb_config.h"
#include "lb_limits.h"
#include "printable.h"
#include "schema.h"

namespace lb::cfg::detail {

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
RangeError parse_range(std::string_view text, StatusRange& out);

// 'value' for a message, on one line whatever the value holds (lb::printable).
inline std::string quote(std::string_view s) {
  return "'" + printable(s) + "'";
}
std::string join(const std::vector<std::string_view>& names, std::string_view sep);
// 0.0.0.0/8 ("this network"), 224.0.0.0/4 (multicast) and 240.0.0.0/4 (reserved, with the
// limited broadcast) can never be a host we send to or answer from.
std::optional<std::string> non_unicast_reason(uint32_t addr);
std::optional<std::string> read_file(const std::string& path, int* error);

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

  Config run();

 private:
  // -- Errors and structure (parser.cc) ---------------------------------------------------------
  std::string source_name(const char* file) const;
  std::string file_of(const Setting& s) const;
  // " \"NAME\" (PATH: why)" for libconfig's "cannot open include file" at `line` of `file` ("":
  // the text parsed); "" when that line has no @include.
  std::string include_problem(const std::string& file, int line) const;
  [[noreturn]] void fail(const Setting& s, const std::string& what) const;
  [[noreturn]] void fail(const Where& where, const std::string& what) const;
  static std::string child_path(const Setting& parent, std::string_view key);
  // Every group is closed: a key its schema list (schema.h) does not have is refused.
  void check_keys(const Setting& group, schema::Group keys) const;
  const Setting* find(const Setting& group, const char* key) const;
  const Setting& require(const Setting& group, const char* key) const;
  void expect_type(const Setting& s, Setting::Type type) const;
  const Setting& as_group(const Setting& s) const;
  const Setting& as_list(const Setting& s) const;

  // -- Scalars (parser.cc) ----------------------------------------------------------------------
  int64_t as_integer(const Setting& s, int64_t min, int64_t max) const;
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
  std::optional<Literal> wrapped_literal(const Setting& s) const;
  const Source* source_of(const Setting& s) const;
  // The text of a file by its name as source_name() gives it ("": the text parsed), read once.
  const Source* source(const std::string& key) const;
  std::string as_string(const Setting& s) const;
  bool as_bool(const Setting& s) const;
  std::string as_name(const Setting& s) const;
  uint32_t as_address(const Setting& s) const;

  // -- Dataplane (parse_dataplane.cc) -----------------------------------------------------------
  DataplaneConfig parse_dataplane(const Setting& dp);
  IdleConfig parse_idle(const Setting& g) const;
  void parse_fullnat_addresses(const Setting& list, DataplaneConfig& out);
  void parse_ports(const Setting& ports, DataplaneConfig& out);
  PortConfig parse_port(const Setting& p, PortSettings& where) const;
  void check_host_in_subnet(const Setting& s, const PortConfig& port, uint32_t addr) const;
  uint16_t descriptors(const Setting& s) const;
  void check_port_against_earlier(const PortConfig& port, const PortSettings& where,
                                  const std::vector<PortConfig>& earlier) const;
  FlowConfig parse_flows(const Setting& f) const;
  RetryConfig parse_retry(const Setting& r) const;

  // -- Services, backends, health checks (parse_services.cc) ------------------------------------
  void parse_services(const Setting& services, Config& config);
  ServiceConfig parse_service(const Setting& s, const DataplaneConfig& dp,
                              ServiceSettings& where) const;
  HealthConfig parse_health(const Setting& h) const;
  InitialState initial_state(const Setting& s) const;
  void parse_expect_status(const Setting& s, HealthConfig& out) const;
  void check_backends(const Config& config) const;
  void check_fullnat_addresses(const Config& config) const;

  // -- lb-healthd's groups: healthd, bgp (parse_daemons.cc) -------------------------------------
  HealthdConfig parse_healthd(const Setting& h) const;
  uint32_t as_number(const Setting& s) const;
  std::string as_path_key(const Setting& s, const char* key, bool socket) const;
  BgpConfig parse_bgp(const Setting& g, const Config& config) const;
  static std::optional<uint32_t> parse_u16(const std::string& text);

  std::string name_;
  std::string include_dir_;
  // Keyed by file name as reported; "" is the text being parsed. Filled lazily for @include'd
  // files, and only for the wrapped-integer check.
  mutable std::map<std::string, Source> sources_;
  std::vector<PortSettings> port_settings_;
  std::vector<ServiceSettings> service_settings_;
  std::vector<const Setting*> fullnat_settings_;
};

}  // namespace lb::cfg::detail
