#include "render.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <sstream>

#include "render_util.h"

namespace lb::ctl {

using namespace view;

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
namespace view {

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

}  // namespace view

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
