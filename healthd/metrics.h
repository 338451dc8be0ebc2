#pragma once
// lb-healthd's /metrics in the Prometheus text exposition format (version 0.0.4): what lb-healthd
// knows (a DaemonStatus snapshot: health, checks, the pool it sends) and lbd's counters, read from
// lbd's telemetry socket at scrape time (lbd sums its per-worker counters there). Names follow
// node_exporter's IPVS collector and HAProxy's exporter; docs/operations.md#monitoring lists them.
// Labels are bounded: service, backend ("address:port" of a configured backend), port, reason,
// direction, state; never a client address.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "check_stats.h"
#include "daemon.h"
#include "telemetry_client.h"

namespace lb::health {

// One label: name="value".
struct Label {
  std::string_view name;
  std::string_view value;
};
using Labels = std::initializer_list<Label>;

// A label value as the text format writes it: backslash, double quote and newline escaped.
std::string escape_label_value(std::string_view value);
// HELP text: backslash and newline escaped.
std::string escape_help(std::string_view help);

// Writes families one after the other; each family's HELP and TYPE lines come first and all its
// samples follow them, as the format requires.
class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  void family(std::string_view name, Type type, std::string_view help);
  // A sample of the current family (`suffix`: "_bucket", "_sum", "_count" for a histogram).
  void sample(Labels labels, uint64_t value, std::string_view suffix = "");
  void sample(Labels labels, double value, std::string_view suffix = "");
  // The _bucket (cumulative, with le="+Inf"), _sum and _count lines of one histogram.
  void histogram(Labels labels, const Histogram& h);

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void line(Labels labels, std::string_view suffix, const Label* extra, std::string_view value);
  std::string out_;
  std::string name_;  // the current family
};

// lbd's telemetry as one scrape read it.
struct LbdCounters {
  bool up = false;
  std::string error;  // why not, when !up
  Json stats;         // /lb/stats
  Json drops;         // /lb/drops
  Json ports;         // /lb/ports
  Json backends;      // /lb/backends
  Json workers;       // /lb/workers
  Json pool;          // /lb/pool
  Json services;      // /lb/services (null from an lbd without it)
  Json fullnat;       // /lb/fullnat: ports per full-NAT local address (null from an lbd without it)
  double seconds = 0;  // how long reading took
};

// Reads every command from lbd's telemetry at `path` over one connection, each reply waited for
// at most `timeout`. Never throws: a failure is up == false with the reason.
LbdCounters read_lbd(const std::string& path, std::chrono::milliseconds timeout);

// The whole exposition. `snapshot_age`: how old `healthd` is (the loop publishes it on demand).
std::string render_metrics(const DaemonStatus& healthd, double snapshot_age_seconds,
                           const LbdCounters& lbd);

}  // namespace lb::health
