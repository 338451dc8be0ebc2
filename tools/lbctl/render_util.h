#pragma once
// What lbctl's views share (render.cc, render_status.cc, render_stats.cc): lenient readers of
// JSON fields (a missing or mistyped field reads as a fallback, never throws) and the table with
// section lines. Internal to the views.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "render.h"

namespace lb::ctl::view {

inline std::string str(const Json& j, const char* key, const std::string& fallback = "-") {
  if (!j.is_object()) return fallback;
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

inline double num(const Json& j, const char* key) {
  if (!j.is_object()) return 0;
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

inline uint64_t u64(const Json& j, const char* key) {
  if (!j.is_object()) return 0;
  const auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer())
    return static_cast<uint64_t>(std::max<int64_t>(0, it->get<int64_t>()));
  return 0;
}

// Counters only grow; a smaller value means lbd restarted: the rate restarts from 0.
inline double rate(uint64_t before, uint64_t after, double dt) {
  if (dt <= 0 || after < before) return 0;
  return static_cast<double>(after - before) / dt;
}

inline std::string fixed1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// backend key as lbd's telemetry spells it: service|ip:port
inline std::string backend_key(const std::string& service, const std::string& address) {
  return service + "|" + address;
}

inline std::map<std::string, Json> backends_by_key(const Json& backends) {
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

// The rows as one aligned table (rows[0] its column header), each section's header line
// before its rows.
std::string format_table_with_sections(const std::vector<std::vector<std::string>>& rows,
                                       const std::vector<Section>& sections);

}  // namespace lb::ctl::view
