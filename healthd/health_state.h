#pragma once
// The health state machine of one backend (HAProxy's rise/fall with fastinter/downinter), pure:
// no clock, no I/O, no randomness of its own. The caller passes the time of every event and a
// random number where jitter needs one, so tests drive it with an injected clock.
//
//   UP   --(fall consecutive failed checks, or a passive threshold within one interval)--> DOWN
//   DOWN --(rise consecutive passing checks)--------------------------------------------> UP
//
// Next check = now + (fast_interval while a flip is in progress, i.e. some consecutive results
// already count toward one; else down_interval while DOWN; else interval), spread by +-jitter_pct.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "health.h"  // Health, to_string(Health): "UP", "DOWN"
#include "lb_config.h"

namespace lb::health {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Millis = std::chrono::milliseconds;

Health to_health(cfg::InitialState s);

// What a check (or a passive signal) found.
enum class ResultKind : uint8_t {
  kNone,          // no check has ended yet
  kOk,            // status in range (and body matched)
  kHttpStatus,    // a response with a status outside the expected range
  kTimeout,       // no complete answer within timeout_ms (connect or total)
  kRefused,       // connection refused (RST to our SYN)
  kBodyMismatch,  // status in range, expect_body not in the body
  kError,         // anything else: `detail` has curl's text
};

struct ProbeResult {
  ResultKind kind = ResultKind::kNone;
  long http_status = 0;  // when a response arrived
  std::string detail;    // curl's error text (kError, kTimeout)
  Millis latency{0};     // from start to end of the check

  bool ok() const { return kind == ResultKind::kOk; }
};

// One phrase: "ok", "http status 503", "timeout", "connection refused", "body mismatch", or
// curl's text for other errors; "no check yet" before the first.
std::string describe(const ProbeResult& r);

// "850ms", "3.2s", "42s", "5m03s", "2h01m".
std::string format_duration(Millis d);

enum class PassiveSignal : uint8_t { kSynRst, kSynTimeout };
const char* describe(PassiveSignal s);  // "SYNs answered with RST", "SYNs unanswered"

struct HealthParams {
  uint32_t rise = 2;
  uint32_t fall = 3;
  Millis interval{1000};
  Millis fast_interval{1000};
  Millis down_interval{1000};
  uint32_t jitter_pct = 0;
  uint32_t passive_syn_rst = 0;  // 0: off
  uint32_t passive_syn_timeout = 0;

  static HealthParams from(const cfg::HealthConfig& h);
};

struct Transition {
  Health from;
  Health to;
  std::string reason;  // "after 3 failures: connection refused"
  Millis was_for;      // time spent in `from`
};

// base +- base * pct / 100, picked by `random` (any 64-bit value, e.g. from mt19937_64); never
// below 1 ms.
Millis jittered(Millis base, uint32_t pct, uint64_t random);

class BackendHealth {
 public:
  BackendHealth(const HealthParams& params, Health initial, TimePoint now);

  // A reload: thresholds and intervals change, the state and counts stay.
  void set_params(const HealthParams& params) { params_ = params; }
  const HealthParams& params() const { return params_; }

  // Applies the result of a check that ended at `now`; returns the flip it caused, if any.
  std::optional<Transition> on_probe(const ProbeResult& result, TimePoint now);

  // `count` passive signals reported by lbd at `now`. They count within a window of one
  // `interval` opened by the first; reaching the threshold takes an UP backend DOWN at once.
  // Ignored (only counted) while DOWN or when that signal's threshold is 0.
  std::optional<Transition> on_passive(PassiveSignal signal, uint32_t count, TimePoint now);

  bool flip_in_progress() const { return health_ == Health::kUp ? failures_ > 0 : successes_ > 0; }
  // The interval before the next check, before jitter.
  Millis base_interval() const;
  // When the next check is due, for a check that ended (or a schedule made) at `now`.
  TimePoint next_check(TimePoint now, uint64_t random) const {
    return now + jittered(base_interval(), params_.jitter_pct, random);
  }

  Health health() const { return health_; }
  uint32_t successes() const { return successes_; }  // consecutive
  uint32_t failures() const { return failures_; }    // consecutive
  TimePoint since() const { return since_; }         // last flip (or creation)
  const ProbeResult& last_result() const { return last_; }
  uint64_t checks() const { return checks_; }
  uint64_t failed_checks() const { return failed_checks_; }
  uint64_t transitions() const { return transitions_; }
  uint64_t passive_signals(PassiveSignal s) const { return passive_[index(s)].total; }

 private:
  struct Window {
    TimePoint start{};
    uint64_t count = 0;
    uint64_t total = 0;
  };
  static size_t index(PassiveSignal s) { return s == PassiveSignal::kSynRst ? 0 : 1; }
  Transition flip(Health to, std::string reason, TimePoint now);

  HealthParams params_;
  Health health_;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
  TimePoint since_;
  ProbeResult last_;
  uint64_t checks_ = 0;
  uint64_t failed_checks_ = 0;
  uint64_t transitions_ = 0;
  Window passive_[2];
};

}  // namespace lb::health
