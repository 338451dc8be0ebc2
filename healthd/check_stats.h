#pragma once
// What lb-healthd accumulates for its metrics (metrics.h) as its loop runs: how long each
// backend's checks took and why they failed, and how long lbd took to apply each pool update.
// Plain data, copied into the daemon's status snapshot; single-threaded like the loop.

#include <array>
#include <cstdint>
#include <deque>
#include <span>
#include <utility>
#include <vector>

#include "health_state.h"

namespace lb::health {

// A Prometheus histogram's state over fixed upper bounds (static storage, ascending).
struct Histogram {
  std::span<const double> bounds;
  std::vector<uint64_t> counts;  // per bucket, not cumulative; the last is above every bound
  double sum = 0;
  uint64_t count = 0;

  explicit Histogram(std::span<const double> upper_bounds = {})
      : bounds(upper_bounds), counts(upper_bounds.size() + 1, 0) {}
  void observe(double value);
};

// Check durations: 1 ms (a backend on the same host) to 10 s (the longest sensible timeout).
inline constexpr double kCheckSecondsBounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                 0.25,  0.5,    1,     2.5,  5,     10};
// Pool apply latency: lbd's control thread picks an update up within a millisecond or so;
// seconds mean it is stuck or was busy.
inline constexpr double kApplySecondsBounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,    0.25,  0.5,    1,     2.5,  5};

// The failed kinds of check result, as lbd_health_check_failures_total's `reason`.
inline constexpr std::array<ResultKind, 5> kFailureKinds = {
    ResultKind::kHttpStatus, ResultKind::kTimeout, ResultKind::kRefused, ResultKind::kBodyMismatch,
    ResultKind::kError};
// "http_status", "timeout", "refused", "body_mismatch", "error"; "ok", "none" for the others.
const char* reason_label(ResultKind kind);

// One backend's checks since lb-healthd started checking it.
struct CheckStats {
  Histogram duration{kCheckSecondsBounds};
  std::array<uint64_t, kFailureKinds.size()> failures{};  // in kFailureKinds' order

  void observe(const ProbeResult& result);
  uint64_t failed(ResultKind kind) const;
};

// From the turn lb-healthd put an update on the ring to the turn it saw lbd's applied
// generation reach it. Fed every turn with the newest generation sent and lbd's applied one;
// an update lbd has not applied after kGiveUp (lbd stuck or gone) is not measured.
class ApplyTracker {
 public:
  static constexpr Millis kGiveUp{10000};
  static constexpr size_t kMaxTracked = 64;

  void observe(uint64_t sent, uint64_t applied, bool attached, TimePoint now);
  // An update is on its way: the loop looks again soon, for a latency worth measuring.
  bool waiting() const { return !pending_.empty(); }
  const Histogram& latency() const { return latency_; }

 private:
  std::deque<std::pair<uint64_t, TimePoint>> pending_;  // generation, when seen sent
  uint64_t last_sent_ = 0;
  Histogram latency_{kApplySecondsBounds};
};

}  // namespace lb::health
