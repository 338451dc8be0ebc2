// lb-healthd's /metrics (healthd/metrics.h, metrics_server.h, check_stats.h): the text format
// (escaping, families, histograms), every drop reason present, lbd's per-backend counters summed
// over its ids, lbd down answered with lb-healthd's own metrics and lbd_up 0, the HTTP server's
// bounds, the loop handing over its snapshot, and `promtool check metrics` on the output when
// promtool is installed.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "channel.h"
#include "check_stats.h"
#include "daemon.h"
#include "drop_reason.h"
#include "fake_telemetry.h"
#include "log.h"
#include "metrics.h"
#include "metrics_server.h"

namespace lb::health {
namespace {

using namespace std::chrono_literals;

// -- A checker of the text format, written from the format's description (not from metrics.cc):
// families declared once with HELP then TYPE, samples only of the family declared last (the
// name, or name_bucket/_sum/_count for a histogram), counters named *_total, label values
// quoted with only \\, \" and \n escapes, histogram buckets cumulative and ending in +Inf.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

struct Parsed {
  std::map<std::string, std::string> types;  // family -> type
  std::vector<Sample> samples;
  std::vector<std::string> errors;
};

Parsed parse_exposition(const std::string& text) {
  Parsed p;
  std::istringstream lines(text);
  std::string family;
  std::string help_for;
  int n = 0;
  for (std::string line; std::getline(lines, line);) {
    ++n;
    const std::string at = "line " + std::to_string(n) + ": ";
    if (line.rfind("# HELP ", 0) == 0) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      if (p.types.count(name) != 0) p.errors.push_back(at + "family " + name + " declared twice");
      help_for = name;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream w(line.substr(7));
      std::string name, type;
      w >> name >> type;
      if (name != help_for) p.errors.push_back(at + "TYPE without HELP for " + name);
      if (type != "counter" && type != "gauge" && type != "histogram")
        p.errors.push_back(at + "type " + type);
      if (type == "counter" && !name.ends_with("_total"))
        p.errors.push_back(at + "counter " + name + " does not end in _total");
      p.types[name] = type;
      family = name;
      continue;
    }
    if (line.empty() || line[0] == '#') {
      p.errors.push_back(at + "unexpected line '" + line + "'");
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          p.errors.push_back(at + "bad label in '" + line + "'");
          break;
        }
        const std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\') {
            ++j;
            if (line[j] == 'n') {
              value += '\n';
            } else if (line[j] == '\\' || line[j] == '"') {
              value += line[j];
            } else {
              p.errors.push_back(at + "bad escape in '" + line + "'");
            }
          } else {
            value += line[j];
          }
        }
        if (s.labels.count(key) != 0) p.errors.push_back(at + "label " + key + " repeated");
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      p.errors.push_back(at + "no value in '" + line + "'");
      continue;
    }
    s.value = line.substr(i + 1);
    const auto type = p.types.find(family);
    const bool histogram = type != p.types.end() && type->second == "histogram";
    const bool ours = s.name == family ||
                      (histogram && (s.name == family + "_bucket" || s.name == family + "_sum" ||
                                     s.name == family + "_count"));
    if (!ours) p.errors.push_back(at + s.name + " outside its family (" + family + ")");
    char* end = nullptr;
    if (s.value != "+Inf" && s.value != "NaN") {
      std::strtod(s.value.c_str(), &end);
      if (*end != '\0') p.errors.push_back(at + "value '" + s.value + "'");
    }
    p.samples.push_back(std::move(s));
  }
  return p;
}

// The value of the one sample `name` with (at least) `labels`; nullopt when absent.
std::optional<double> value(const Parsed& p, const std::string& name,
                            const std::map<std::string, std::string>& labels = {}) {
  std::optional<double> found;
  for (const Sample& s : p.samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      const auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (!match) continue;
    EXPECT_FALSE(found.has_value()) << name << " matched twice";
    found = std::strtod(s.value.c_str(), nullptr);
  }
  return found;
}

size_t count(const Parsed& p, const std::string& name) {
  size_t n = 0;
  for (const Sample& s : p.samples) n += s.name == name ? 1u : 0u;
  return n;
}

// -- The text format -----------------------------------------------------------------------------

TEST(MetricsFormat, LabelValuesAndHelpAreEscaped) {
  EXPECT_EQ(escape_label_value("plain-1.2:80"), "plain-1.2:80");
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(escape_help("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");  // quotes stay in HELP

  Exposition x;
  x.family("lbd_test_total", Exposition::Type::kCounter, "Help with \\ and\nnewline.");
  x.sample({{"service", "we\"b\\\n"}}, uint64_t{18446744073709551615u});
  x.family("lbd_gauge", Exposition::Type::kGauge, "A gauge.");
  x.sample({}, 0.25);
  x.sample({{"a", "1"}, {"b", ""}}, 1e-9);
  EXPECT_EQ(x.text(),
            "# HELP lbd_test_total Help with \\\\ and\\nnewline.\n"
            "# TYPE lbd_test_total counter\n"
            "lbd_test_total{service=\"we\\\"b\\\\\\n\"} 18446744073709551615\n"
            "# HELP lbd_gauge A gauge.\n"
            "# TYPE lbd_gauge gauge\n"
            "lbd_gauge 0.25\n"
            "lbd_gauge{a=\"1\",b=\"\"} 1e-09\n");
  const Parsed p = parse_exposition(x.text());
  EXPECT_TRUE(p.errors.empty()) << p.errors[0];
  ASSERT_EQ(p.samples.size(), 3u);
  EXPECT_EQ(p.samples[0].labels.at("service"), "we\"b\\\n");  // reads back as it was
}

TEST(MetricsFormat, HistogramBucketsAreCumulativeWithInf) {
  static constexpr double kBounds[] = {0.1, 1};
  Histogram h(kBounds);
  for (const double v : {0.05, 0.1, 0.5, 1.0, 7.0}) h.observe(v);  // a bound is "<=": its bucket
  EXPECT_EQ(h.counts, (std::vector<uint64_t>{2, 2, 1}));
  Exposition x;
  x.family("lbd_h_seconds", Exposition::Type::kHistogram, "H.");
  x.histogram({{"service", "web"}}, h);
  EXPECT_EQ(x.text(),
            "# HELP lbd_h_seconds H.\n"
            "# TYPE lbd_h_seconds histogram\n"
            "lbd_h_seconds_bucket{service=\"web\",le=\"0.1\"} 2\n"
            "lbd_h_seconds_bucket{service=\"web\",le=\"1\"} 4\n"
            "lbd_h_seconds_bucket{service=\"web\",le=\"+Inf\"} 5\n"
            "lbd_h_seconds_sum{service=\"web\"} 8.65\n"
            "lbd_h_seconds_count{service=\"web\"} 5\n");
}

TEST(MetricsFormat, CheckStatsCountFailuresByReason) {
  CheckStats s;
  ProbeResult r;
  r.latency = 3ms;
  for (const ResultKind k : {ResultKind::kOk, ResultKind::kTimeout, ResultKind::kTimeout,
                             ResultKind::kRefused, ResultKind::kHttpStatus}) {
    r.kind = k;
    s.observe(r);
  }
  EXPECT_EQ(s.duration.count, 5u);
  EXPECT_DOUBLE_EQ(s.duration.sum, 0.015);
  EXPECT_EQ(s.failed(ResultKind::kTimeout), 2u);
  EXPECT_EQ(s.failed(ResultKind::kRefused), 1u);
  EXPECT_EQ(s.failed(ResultKind::kHttpStatus), 1u);
  EXPECT_EQ(s.failed(ResultKind::kBodyMismatch), 0u);
  EXPECT_EQ(s.failed(ResultKind::kOk), 0u);
}

TEST(MetricsFormat, ApplyTrackerMeasuresFromSendToApply) {
  ApplyTracker t;
  const TimePoint t0{};
  t.observe(5, 0, false, t0);  // not attached: nothing to measure
  EXPECT_FALSE(t.waiting());
  t.observe(6, 5, true, t0 + 1ms);
  t.observe(8, 5, true, t0 + 2ms);
  EXPECT_TRUE(t.waiting());
  t.observe(8, 7, true, t0 + 4ms);   // 6 applied: 3 ms
  t.observe(8, 8, true, t0 + 10ms);  // 8 applied: 8 ms
  EXPECT_FALSE(t.waiting());
  EXPECT_EQ(t.latency().count, 2u);
  EXPECT_NEAR(t.latency().sum, 0.011, 1e-9);
  t.observe(9, 8, true, t0 + 11ms);
  t.observe(9, 8, false, t0 + 12ms);  // detached: lbd will never apply it
  EXPECT_FALSE(t.waiting());
  t.observe(10, 0, true, t0 + 13ms);
  t.observe(10, 0, true, t0 + 13ms + ApplyTracker::kGiveUp + 1ms);  // lbd stuck: given up
  EXPECT_FALSE(t.waiting());
  EXPECT_EQ(t.latency().count, 2u);
}

// -- The exposition ------------------------------------------------------------------------------

DaemonStatus healthd_status() {
  DaemonStatus st;
  st.attached = true;
  st.generation = 12;
  st.lbd_applied_generation = 11;
  st.updates_sent = 9;
  st.reloads = 2;
  st.reload_failures = 1;
  ServiceStatus web;
  web.name = "web";
  web.active = 1;
  BackendStatus a;
  a.address = 0x0a14000b;  // 10.20.0.11
  a.port = 8080;
  a.weight = 3;
  a.transitions = 4;
  ProbeResult r;
  r.kind = ResultKind::kOk;
  r.latency = 2ms;
  a.check_stats.observe(r);
  r.kind = ResultKind::kTimeout;
  r.latency = 500ms;
  a.check_stats.observe(r);
  BackendStatus b = a;
  b.address = 0x0a14000c;  // 10.20.0.12
  b.health = Health::kDown;
  b.admin = cfg::AdminState::kMaint;
  BackendStatus gone = a;
  gone.address = 0x0a14000d;  // removed by a reload, draining
  gone.removed = true;
  web.backends = {a, b, gone};
  st.services.push_back(web);
  return st;
}

ctl::LbdSnapshot lbd_counters() {
  ctl::LbdSnapshot c;
  c.up = true;
  c.seconds = 0.002;
  // Every key lbd's /lb/stats has (dataplane/telemetry.cc), so that promtool lints them all.
  c.stats = {{"rx_packets", 5000},      {"tx_packets", 4900},
             {"dropped", 12},           {"flows_active", 7},
             {"flows_created", 1000},   {"flows_expired", 990},
             {"flows_reused", 2},       {"flows_refused", 0},
             {"flows_reset", 1},        {"retries", 1},
             {"retry_syn_replayed", 1}, {"rst_no_backend", 3},
             {"rst_flow_miss", 4},      {"rst_backend_stopped", 5},
             {"arp_replies", 6},        {"arp_learned", 3},
             {"icmp_echo_replies", 2},  {"handoff_out", 8},
             {"handoff_in", 8},         {"workers", 2}};
  c.drops = Json::object();
  for (size_t i = 0; i < core::kDropReasonCount; ++i)
    c.drops[std::string(core::kDropReasonNames[i])] = i;
  c.drops["a_newer_reason"] = 77;  // an lbd newer than lb-healthd
  c.ports = {{"client",
              {{"name", "client"},
               {"port_id", 0},
               {"rx_packets", 100},
               {"tx_packets", 90},
               {"rx_bytes", 6400},
               {"tx_bytes", 5000},
               {"imissed", 5},
               {"ierrors", 1},
               {"oerrors", 2},
               {"rx_nombuf", 6},
               {"kernel_iface", "lb-c"},
               {"kernel_rx_dropped", 43516},
               {"kernel_socket_drops", 8}}},
             {"nic",
              {{"name", "nic"},
               {"port_id", 1},
               {"rx_packets", 1},
               {"tx_packets", 1},
               {"rx_bytes", 64},
               {"tx_bytes", 64},
               {"imissed", 0},
               {"ierrors", 0},
               {"oerrors", 0},
               {"rx_nombuf", 0},
               {"kernel_iface", ""},
               {"kernel_rx_dropped", 0},
               {"kernel_socket_drops", 0}}}};
  const auto backend = [](int id, const char* state, const char* addr, uint64_t base) {
    return Json{{"id", id},
                {"state", state},
                {"service", "web"},
                {"address", addr},
                {"flows_active", base},
                {"flows_total", base * 10},
                {"packets_in", base * 100},
                {"bytes_in", base * 1000},
                {"packets_out", base * 200},
                {"bytes_out", base * 2000},
                {"syn_rst", base + 1},
                {"syn_timeout", base + 2}};
  };
  // 10.20.0.11 twice: an old id not reclaimed yet and its new one.
  c.backends = {{"backend_0", backend(0, "not_serving", "10.20.0.11:8080", 1)},
                {"backend_1", backend(1, "draining", "10.20.0.12:8080", 2)},
                {"backend_2", backend(2, "active", "10.20.0.11:8080", 4)},
                {"backend_3", backend(3, "draining", "10.20.0.13:8080", 8)}};
  c.workers = {{"worker_0", {{"worker", 0}, {"flow_capacity", 1024}}},
               {"worker_1", {{"worker", 1}, {"flow_capacity", 1024}}}};
  c.pool = {{"updates_applied", 11}, {"updates_rejected", 1}, {"events_lost", 0}};
  c.services = {{"service_0", {{"id", 0}, {"name", "web"}, {"flows_rehashed", 42}}}};
  c.fullnat = {{"fullnat_0",
                {{"address", "10.20.0.50"},
                 {"ports_in_use", 1834},
                 {"ports_free", 62678},
                 {"alloc_failures", 3}}},
               {"fullnat_1",
                {{"address", "10.20.0.51"},
                 {"ports_in_use", 0},
                 {"ports_free", 64512},
                 {"alloc_failures", 3}}}};
  return c;
}

TEST(MetricsExposition, EveryFamilyWellFormed) {
  const std::string text = render_metrics(healthd_status(), 0.05, lbd_counters());
  const Parsed p = parse_exposition(text);
  for (const std::string& e : p.errors) ADD_FAILURE() << e;
  // Every family has samples.
  for (const auto& [family, type] : p.types) {
    bool any = false;
    for (const Sample& s : p.samples) any = any || s.name.rfind(family, 0) == 0;
    EXPECT_TRUE(any) << family << " has no sample";
  }
  // No label that could be a client's address: only these names (local_address: lbd's own
  // full-NAT addresses).
  const std::set<std::string> allowed = {"service", "backend", "reason",  "direction",    "state",
                                         "signal",  "port",    "port_id", "kernel_iface", "where",
                                         "le",      "result",  "version", "local_address"};
  for (const Sample& s : p.samples) {
    for (const auto& [k, v] : s.labels) EXPECT_TRUE(allowed.count(k)) << s.name << " " << k;
  }
}

TEST(MetricsExposition, EveryDropReasonPresent) {
  ctl::LbdSnapshot lbd = lbd_counters();
  lbd.drops.erase("no_backend");  // an older lbd without it: counted 0, still present
  const Parsed p = parse_exposition(render_metrics(healthd_status(), 0, lbd));
  EXPECT_EQ(count(p, "lbd_packets_dropped_total"), core::kDropReasonCount + 1);
  for (size_t i = 0; i < core::kDropReasonCount; ++i) {
    const std::string reason(core::kDropReasonNames[i]);
    EXPECT_EQ(value(p, "lbd_packets_dropped_total", {{"reason", reason}}),
              reason == "no_backend" ? 0.0 : static_cast<double>(i))
        << reason;
  }
  EXPECT_EQ(value(p, "lbd_packets_dropped_total", {{"reason", "a_newer_reason"}}), 77.0);
  // The reasons users search for are there by name.
  for (const char* r : {"flow_table_full", "no_backend", "tx_full", "not_for_us", "truncated"})
    EXPECT_TRUE(value(p, "lbd_packets_dropped_total", {{"reason", r}})) << r;
}

TEST(MetricsExposition, BackendsFromBothSides) {
  const Parsed p = parse_exposition(render_metrics(healthd_status(), 0, lbd_counters()));
  const std::map<std::string, std::string> a = {{"service", "web"}, {"backend", "10.20.0.11:8080"}};
  const std::map<std::string, std::string> b = {{"service", "web"}, {"backend", "10.20.0.12:8080"}};
  const std::map<std::string, std::string> gone = {{"service", "web"},
                                                   {"backend", "10.20.0.13:8080"}};
  const auto with = [](std::map<std::string, std::string> l, const char* k, const char* v) {
    l[k] = v;
    return l;
  };
  // lbd's counters, summed over both ids of 10.20.0.11 (bases 1 and 4).
  EXPECT_EQ(value(p, "lbd_backend_connections_active", a), 5.0);
  EXPECT_EQ(value(p, "lbd_backend_connections_total", a), 50.0);
  EXPECT_EQ(value(p, "lbd_backend_packets_total", with(a, "direction", "in")), 500.0);
  EXPECT_EQ(value(p, "lbd_backend_packets_total", with(a, "direction", "out")), 1000.0);
  EXPECT_EQ(value(p, "lbd_backend_bytes_total", with(a, "direction", "in")), 5000.0);
  EXPECT_EQ(value(p, "lbd_backend_bytes_total", with(a, "direction", "out")), 10000.0);
  EXPECT_EQ(value(p, "lbd_backend_passive_signals_total", with(a, "signal", "syn_rst")), 7.0);
  // Its state is the most serving of its ids.
  EXPECT_EQ(value(p, "lbd_backend_state", with(a, "state", "active")), 1.0);
  EXPECT_EQ(value(p, "lbd_backend_state", with(a, "state", "not_serving")), 0.0);
  EXPECT_EQ(value(p, "lbd_backend_state", with(b, "state", "draining")), 1.0);
  // lb-healthd's view.
  EXPECT_EQ(value(p, "lbd_backend_up", a), 1.0);
  EXPECT_EQ(value(p, "lbd_backend_up", b), 0.0);
  EXPECT_EQ(value(p, "lbd_backend_weight", a), 3.0);
  EXPECT_EQ(value(p, "lbd_backend_admin_state", with(b, "state", "maint")), 1.0);
  EXPECT_EQ(value(p, "lbd_backend_admin_state", with(b, "state", "ready")), 0.0);
  EXPECT_EQ(value(p, "lbd_health_checks_total", a), 2.0);
  EXPECT_EQ(value(p, "lbd_health_check_failures_total", with(a, "reason", "timeout")), 1.0);
  EXPECT_EQ(value(p, "lbd_health_check_failures_total", with(a, "reason", "refused")), 0.0);
  EXPECT_EQ(value(p, "lbd_health_check_duration_seconds_count", a), 2.0);
  EXPECT_EQ(value(p, "lbd_health_check_duration_seconds_bucket", with(a, "le", "0.0025")), 1.0);
  EXPECT_EQ(value(p, "lbd_health_check_duration_seconds_bucket", with(a, "le", "0.5")), 2.0);
  EXPECT_EQ(value(p, "lbd_health_transitions_total", a), 4.0);
  // A backend a reload removed: lbd's counters only, until lbd forgets it.
  EXPECT_FALSE(value(p, "lbd_backend_up", gone));
  EXPECT_EQ(value(p, "lbd_backend_connections_active", gone), 8.0);
}

TEST(MetricsExposition, LbdTotalsPortsAndPool) {
  ctl::LbdSnapshot lbd = lbd_counters();
  // An lbd of another version, without some keys: their samples (and empty families) left out.
  for (const char* key : {"rst_backend_stopped", "handoff_out", "handoff_in"}) lbd.stats.erase(key);
  const Parsed p = parse_exposition(render_metrics(healthd_status(), 0.25, lbd));
  EXPECT_EQ(value(p, "lbd_up"), 1.0);
  EXPECT_EQ(value(p, "lbd_flow_table_entries"), 7.0);
  EXPECT_EQ(value(p, "lbd_flow_table_capacity"), 2048.0);
  EXPECT_EQ(value(p, "lbd_flows_created_total"), 1000.0);
  EXPECT_EQ(value(p, "lbd_flows_expired_total"), 990.0);
  EXPECT_EQ(value(p, "lbd_flows_reused_total"), 2.0);  // lbd's flows_reused (once flows_closed)
  EXPECT_EQ(value(p, "lbd_resets_sent_total", {{"reason", "flow_miss"}}), 4.0);
  EXPECT_FALSE(value(p, "lbd_resets_sent_total", {{"reason", "backend_stopped"}}));  // not in lbd
  EXPECT_FALSE(value(p, "lbd_handoff_packets_total"));  // no key: no family
  EXPECT_EQ(p.types.count("lbd_handoff_packets_total"), 0u);
  EXPECT_EQ(value(p, "lbd_port_packets_total", {{"port", "client"}, {"direction", "rx"}}), 100.0);
  EXPECT_EQ(value(p, "lbd_port_bytes_total", {{"port", "client"}, {"direction", "tx"}}), 5000.0);
  EXPECT_EQ(value(p, "lbd_port_rx_missed_packets_total", {{"port", "client"}}), 5.0);
  EXPECT_EQ(value(p, "lbd_port_rx_nombuf_total", {{"port", "client"}}), 6.0);
  EXPECT_EQ(value(p, "lbd_port_errors_total", {{"port", "client"}, {"direction", "tx"}}), 2.0);
  EXPECT_EQ(value(p, "lbd_port_kernel_dropped_packets_total",
                  {{"port", "client"}, {"where", "interface"}}),
            43516.0);
  EXPECT_EQ(
      value(p, "lbd_port_kernel_dropped_packets_total", {{"port", "client"}, {"where", "socket"}}),
      8.0);
  // A NIC DPDK drives itself has no kernel counters.
  EXPECT_FALSE(
      value(p, "lbd_port_kernel_dropped_packets_total", {{"port", "nic"}, {"where", "socket"}}));
  EXPECT_EQ(value(p, "lbd_port_info", {{"port", "client"}, {"kernel_iface", "lb-c"}}), 1.0);
  EXPECT_EQ(value(p, "lbd_pool_generation_sent"), 12.0);
  EXPECT_EQ(value(p, "lbd_pool_generation_applied"), 11.0);
  EXPECT_EQ(value(p, "lbd_pool_updates_applied_total"), 11.0);
  EXPECT_EQ(value(p, "lbd_pool_updates_rejected_total"), 1.0);
  EXPECT_EQ(value(p, "lbd_healthd_config_reloads_total", {{"result", "failed"}}), 1.0);
  EXPECT_EQ(value(p, "lbd_healthd_snapshot_age_seconds"), 0.25);
  EXPECT_EQ(value(p, "lbd_service_backends_active", {{"service", "web"}}), 1.0);
}

TEST(MetricsExposition, FullnatPortsPerLocalAddress) {
  const Parsed p = parse_exposition(render_metrics(healthd_status(), 0, lbd_counters()));
  for (const std::string& e : p.errors) ADD_FAILURE() << e;
  const std::map<std::string, std::string> a = {{"local_address", "10.20.0.50"}};
  const std::map<std::string, std::string> b = {{"local_address", "10.20.0.51"}};
  EXPECT_EQ(value(p, "lbd_fullnat_ports_in_use", a), 1834.0);
  EXPECT_EQ(value(p, "lbd_fullnat_ports_free", a), 62678.0);
  EXPECT_EQ(value(p, "lbd_fullnat_port_alloc_failures_total", a), 3.0);
  EXPECT_EQ(value(p, "lbd_fullnat_ports_in_use", b), 0.0);  // present at 0: rate() has a series
  EXPECT_EQ(value(p, "lbd_fullnat_ports_free", b), 64512.0);
  EXPECT_EQ(p.types.at("lbd_fullnat_ports_free"), "gauge");
  EXPECT_EQ(p.types.at("lbd_fullnat_port_alloc_failures_total"), "counter");
  EXPECT_EQ(count(p, "lbd_fullnat_ports_in_use"), 2u);
  // No full-NAT address (an empty reply), or an lbd without the command: no family at all.
  for (const Json& none : {Json::object(), Json()}) {
    ctl::LbdSnapshot lbd = lbd_counters();
    lbd.fullnat = none;
    const Parsed q = parse_exposition(render_metrics(healthd_status(), 0, lbd));
    for (const std::string& e : q.errors) ADD_FAILURE() << e;
    for (const char* f : {"lbd_fullnat_ports_in_use", "lbd_fullnat_ports_free",
                          "lbd_fullnat_port_alloc_failures_total"}) {
      EXPECT_EQ(q.types.count(f), 0u) << f;
      EXPECT_EQ(count(q, f), 0u) << f;
    }
  }
}

TEST(MetricsExposition, LbdDownStillAnswersWithHealthd) {
  ctl::LbdSnapshot down;
  down.error = "cannot connect";
  const Parsed p = parse_exposition(render_metrics(healthd_status(), 0, down));
  for (const std::string& e : p.errors) ADD_FAILURE() << e;
  EXPECT_EQ(value(p, "lbd_up"), 0.0);
  EXPECT_EQ(value(p, "lbd_backend_up", {{"backend", "10.20.0.11:8080"}}), 1.0);
  EXPECT_EQ(value(p, "lbd_health_checks_total", {{"backend", "10.20.0.11:8080"}}), 2.0);
  EXPECT_EQ(count(p, "lbd_packets_dropped_total"), 0u);
  EXPECT_EQ(count(p, "lbd_backend_connections_total"), 0u);
  EXPECT_EQ(p.types.count("lbd_backend_connections_total"), 0u);  // no family without samples
}

// `promtool check metrics` (Debian's prometheus package), when installed: the format as
// Prometheus itself reads it, including its naming lint.
TEST(MetricsExposition, PromtoolAccepts) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "promtool not installed (tools/install-deps.sh installs it)";
  for (const bool up : {true, false}) {
    ctl::LbdSnapshot lbd = up ? lbd_counters() : ctl::LbdSnapshot{};
    const std::string path = "/tmp/lbd_metrics_test_" + std::to_string(getpid()) + ".txt";
    std::ofstream(path) << render_metrics(healthd_status(), 0.01, lbd);
    const std::string out = path + ".out";
    const int rc =
        std::system(("promtool check metrics < " + path + " > " + out + " 2>&1").c_str());
    std::ifstream in(out);
    const std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(rc, 0) << "lbd up: " << up << "\n" << said;
    EXPECT_EQ(said, "") << "lbd up: " << up;  // no lint warning either
    std::filesystem::remove(path);
    std::filesystem::remove(out);
  }
}

// -- The server ----------------------------------------------------------------------------------

// lbd's telemetry socket answering from `replies`.
class FakeLbd {
 public:
  FakeLbd(std::string path, std::map<std::string, Json> replies)
      : replies_(std::move(replies)), server_(std::move(path), [this](const std::string& cmd) {
          const auto it = replies_.find(cmd);
          return it == replies_.end() ? Json() : it->second;
        }) {}
  void set_delay(std::chrono::milliseconds d) { server_.set_delay(d); }
  int commands() const { return server_.commands(); }

 private:
  std::map<std::string, Json> replies_;
  test::FakeTelemetry server_;  // last: its thread reads replies_
};

std::map<std::string, Json> fake_replies() {
  const ctl::LbdSnapshot c = lbd_counters();
  return {{"/lb/stats", c.stats},       {"/lb/drops", c.drops},     {"/lb/ports", c.ports},
          {"/lb/backends", c.backends}, {"/lb/workers", c.workers}, {"/lb/pool", c.pool},
          {"/lb/services", c.services}, {"/lb/fullnat", c.fullnat}};
}

class MetricsServerTest : public testing::Test {
 protected:
  static void SetUpTestSuite() { set_log_level(LogLevel::kError); }
  void SetUp() override {
    telemetry_ = "/tmp/lbd_metrics_test_" + std::to_string(getpid()) + ".sock";
  }
  // A server on a free loopback port, with a "loop" thread publishing snapshots when asked.
  void start(Millis snapshot_wait = 500ms) {
    MetricsOptions o;
    o.listen = {0x7f000001, 0};
    o.telemetry = telemetry_;
    o.snapshot_wait = snapshot_wait;
    o.max_request = 4096;
    o.max_connections = 4;
    server_ = std::make_unique<MetricsServer>(o);
    server_->publish(healthd_status());
    loop_ = std::thread([this] {
      while (!stop_) {
        if (server_->wants_snapshot() && publishing_) {
          DaemonStatus st = healthd_status();
          st.generation = ++published_;
          server_->publish(st);
        }
        std::this_thread::sleep_for(2ms);
      }
    });
  }
  void TearDown() override {
    stop_ = true;
    if (loop_.joinable()) loop_.join();
    server_.reset();
  }
  httplib::Result get(const std::string& path) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(5, 0);
    return c.Get(path);
  }

  std::string telemetry_;
  std::unique_ptr<MetricsServer> server_;
  std::thread loop_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> publishing_{true};
  std::atomic<uint64_t> published_{0};
};

TEST_F(MetricsServerTest, ScrapeReadsLbdAndAFreshSnapshot) {
  FakeLbd lbd(telemetry_, fake_replies());
  start();
  ASSERT_NE(server_->port(), 0);
  const auto r = get("/metrics");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  const Parsed p = parse_exposition(r->body);
  for (const std::string& e : p.errors) ADD_FAILURE() << e;
  EXPECT_EQ(value(p, "lbd_up"), 1.0);
  EXPECT_EQ(value(p, "lbd_flows_created_total"), 1000.0);
  EXPECT_EQ(value(p, "lbd_service_flows_rehashed_total", {{"service", "web"}}), 42.0);
  EXPECT_EQ(lbd.commands(), 8);  // one connection, every command once (/lb/fullnat too)
  // The snapshot was made for this scrape (the "loop" numbers them in lbd_pool_generation_sent).
  EXPECT_EQ(value(p, "lbd_pool_generation_sent"), static_cast<double>(published_.load()));
  EXPECT_GE(published_.load(), 1u);
  EXPECT_LT(*value(p, "lbd_healthd_snapshot_age_seconds"), 0.5);
  const auto again = get("/metrics");
  ASSERT_TRUE(again);
  EXPECT_EQ(value(parse_exposition(again->body), "lbd_pool_generation_sent"),
            static_cast<double>(published_.load()));
  EXPECT_EQ(published_.load(), 2u);
}

TEST_F(MetricsServerTest, LbdDownAnswersWithLbdUpZero) {
  start();  // nothing listens on telemetry_
  const auto r = get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const Parsed p = parse_exposition(r->body);
  EXPECT_TRUE(p.errors.empty());
  EXPECT_EQ(value(p, "lbd_up"), 0.0);
  EXPECT_EQ(value(p, "lbd_backend_up", {{"backend", "10.20.0.11:8080"}}), 1.0);
}

TEST_F(MetricsServerTest, StuckLoopServesTheLastSnapshotWithItsAge) {
  publishing_ = false;
  start(100ms);
  std::this_thread::sleep_for(150ms);
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = get("/metrics");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const Parsed p = parse_exposition(r->body);
  EXPECT_GE(*value(p, "lbd_healthd_snapshot_age_seconds"), 0.2);
  EXPECT_EQ(value(p, "lbd_pool_generation_sent"), 12.0);  // start()'s
  EXPECT_GE(took, 100ms);                                 // it waited for the loop, boundedly
  EXPECT_LT(took, 2s);
}

TEST_F(MetricsServerTest, OnlyGetOfMetrics) {
  start();
  EXPECT_EQ(get("/")->status, 404);
  EXPECT_EQ(get("/metrics/x")->status, 404);
  httplib::Client c("127.0.0.1", server_->port());
  const auto post = c.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->get_header_value("Allow"), "GET, HEAD");
  const auto head = c.Head("/metrics");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");
  // A HEAD's headers are the GET's: its Content-Length is the body's a GET gets (about, as the
  // figures in it change between the two scrapes), not 0.
  const auto got = c.Get("/metrics");
  ASSERT_TRUE(got);
  ASSERT_TRUE(head->has_header("Content-Length"));
  const size_t length = std::stoul(head->get_header_value("Content-Length"));
  EXPECT_GT(length, got->body.size() / 2);
  EXPECT_LT(length, got->body.size() * 2);
  EXPECT_EQ(head->get_header_value("Content-Type"), got->get_header_value("Content-Type"));
}

// A client sending an endless header gets 431 and is disconnected; the server keeps serving.
TEST_F(MetricsServerTest, OversizedRequestRefused) {
  start();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(server_->port());
  a.sin_addr.s_addr = htonl(0x7f000001);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  std::string req = "GET /metrics HTTP/1.1\r\nX-Big: ";
  req += std::string(64 * 1024, 'a');
  size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server closed: fine
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buf[512];
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 2000) > 0) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  EXPECT_NE(reply.find("431"), std::string::npos) << reply;
  EXPECT_LT(sent, req.size() + 1);
  const auto r = get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// A slow lbd delays the scrape, never the loop: the loop's thread here only publishes.
TEST_F(MetricsServerTest, ScrapeTimeIsBoundedWhenLbdIsSlow) {
  FakeLbd lbd(telemetry_, fake_replies());
  lbd.set_delay(400ms);  // past the 250 ms per reply
  start();
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = get("/metrics");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r);
  const Parsed p = parse_exposition(r->body);
  EXPECT_EQ(value(p, "lbd_up"), 0.0);
  EXPECT_LT(took, 1500ms);
}

TEST(MetricsServerStart, BusyPortIsAClearError) {
  MetricsOptions o;
  o.listen = {0x7f000001, 0};
  MetricsServer first(o);
  o.listen.port = first.port();
  try {
    MetricsServer second(o);
    FAIL() << "two servers on one port";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot serve metrics on 127.0.0.1:" +
                                         std::to_string(first.port())),
              std::string::npos)
        << e.what();
  }
}

// lb-healthd's real loop with the server: a scrape gets the loop's own state through the
// snapshot hand-over (checks counted as they end, the pool update timed to its ack) while the
// loop runs on another thread, as in lb-healthd.
TEST(MetricsDaemon, ScrapeSeesTheLoopsChecksAndApplyLatency) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  set_log_level(LogLevel::kError);
  // A loopback port nobody listens on: every check is refused at once.
  const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::getsockname(probe, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(probe);
  const std::string backend = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const std::string instance = "metrics-" + std::to_string(getpid());
  std::optional<shm::Segment> lbd(shm::Segment::create(shm::segment_name(instance)));
  Options o;
  o.config_path = "unused.cfg";
  o.instance = instance;
  o.seed = 1;
  o.telemetry = "/nonexistent";
  Daemon d(
      cfg::parse_config("dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
                        "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
                        "services = ( { name = \"web\"; vip = \"10.0.0.100\"; port = 80;\n"
                        "  health = { interval_ms = 20; timeout_ms = 20; fall = 2; rise = 1; "
                        "jitter_pct = 0; };\n"
                        "  backends = ( { address = \"127.0.0.1\"; port = " +
                            std::to_string(ntohs(a.sin_port)) + "; } ); } );\n",
                        "test.cfg"),
      o);
  MetricsOptions mo;
  mo.listen = {0x7f000001, 0};
  mo.telemetry = "/nonexistent";
  auto server = std::make_unique<MetricsServer>(mo);
  const uint16_t port = server->port();
  d.set_metrics(std::move(server));

  std::atomic<bool> stop{false};
  std::thread loop([&] {
    std::vector<shm::ServiceUpdate> updates(64);
    while (!stop) {
      d.turn(-1, Millis(5));
      // The fake lbd applies what it receives a few milliseconds later.
      const unsigned n = lbd->receive(updates.data(), 64);
      if (n > 0) {
        std::this_thread::sleep_for(3ms);
        lbd->header().received_generation.store(updates[n - 1].generation);
        lbd->header().applied_generation.store(updates[n - 1].generation);
      }
    }
  });
  const std::map<std::string, std::string> labels = {{"service", "web"}, {"backend", backend}};
  std::optional<Parsed> last;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    httplib::Client c("127.0.0.1", port);
    const auto r = c.Get("/metrics");
    ASSERT_TRUE(r);
    last = parse_exposition(r->body);
    if (value(*last, "lbd_backend_up", labels) == 0.0 &&
        value(*last, "lbd_pool_apply_duration_seconds_count").value_or(0) >= 1)
      break;
    std::this_thread::sleep_for(20ms);
  }
  stop = true;
  loop.join();
  ASSERT_TRUE(last);
  for (const std::string& e : last->errors) ADD_FAILURE() << e;
  EXPECT_EQ(value(*last, "lbd_up"), 0.0);
  EXPECT_EQ(value(*last, "lbd_healthd_attached"), 1.0);
  EXPECT_EQ(value(*last, "lbd_backend_up", labels), 0.0);
  const double checks = value(*last, "lbd_health_checks_total", labels).value_or(0);
  auto refused = labels;
  refused["reason"] = "refused";
  EXPECT_GE(checks, 2.0);
  EXPECT_EQ(value(*last, "lbd_health_check_failures_total", refused), checks);
  EXPECT_EQ(value(*last, "lbd_health_transitions_total", labels), 1.0);
  // Sent, applied 3 ms later, seen by the loop: at least 3 ms, and well under a second.
  const double n = value(*last, "lbd_pool_apply_duration_seconds_count").value_or(0);
  const double sum = value(*last, "lbd_pool_apply_duration_seconds_sum").value_or(0);
  EXPECT_GE(n, 1.0);
  EXPECT_GE(sum / n, 0.003);
  EXPECT_LT(sum / n, 0.5);
  EXPECT_LT(*value(*last, "lbd_healthd_snapshot_age_seconds"), 0.5);
  curl_global_cleanup();
}

}  // namespace
}  // namespace lb::health
