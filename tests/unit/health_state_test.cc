// lb-healthd's per-backend state machine (healthd/health_state.h), driven by an injected clock:
// rise/fall, the choice of interval, jitter bounds, passive signals, and the words it logs.

#include "health_state.h"

#include <gtest/gtest.h>

#include <random>

namespace lb::health {
namespace {

using std::chrono::milliseconds;

const TimePoint kT0 = TimePoint{} + std::chrono::hours(1);

ProbeResult ok() {
  return ProbeResult{ResultKind::kOk, 200, "", Millis(3)};
}
ProbeResult refused() {
  return ProbeResult{ResultKind::kRefused, 0, "", Millis(1)};
}
ProbeResult status(long code) {
  return ProbeResult{ResultKind::kHttpStatus, code, "", Millis(2)};
}

HealthParams params(uint32_t rise, uint32_t fall) {
  HealthParams p;
  p.rise = rise;
  p.fall = fall;
  p.interval = Millis(1000);
  p.fast_interval = Millis(200);
  p.down_interval = Millis(5000);
  p.jitter_pct = 0;
  return p;
}

TEST(HealthState, InitialStateAndNoCheckYet) {
  const BackendHealth up(params(2, 3), Health::kUp, kT0);
  EXPECT_EQ(up.health(), Health::kUp);
  EXPECT_EQ(up.last_result().kind, ResultKind::kNone);
  EXPECT_EQ(describe(up.last_result()), "no check yet");
  EXPECT_EQ(up.since(), kT0);
  const BackendHealth down(params(2, 3), Health::kDown, kT0);
  EXPECT_EQ(down.health(), Health::kDown);
  EXPECT_EQ(to_health(cfg::InitialState::kDown), Health::kDown);
  EXPECT_EQ(to_health(cfg::InitialState::kUp), Health::kUp);
}

TEST(HealthState, FallsAfterFallConsecutiveFailures) {
  BackendHealth h(params(2, 3), Health::kUp, kT0);
  TimePoint t = kT0;
  EXPECT_FALSE(h.on_probe(refused(), t += milliseconds(1000)));
  EXPECT_FALSE(h.on_probe(refused(), t += milliseconds(200)));
  EXPECT_EQ(h.failures(), 2u);
  EXPECT_EQ(h.health(), Health::kUp);
  const std::optional<Transition> tr = h.on_probe(refused(), t += milliseconds(200));
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->from, Health::kUp);
  EXPECT_EQ(tr->to, Health::kDown);
  EXPECT_EQ(tr->reason, "after 3 failures: connection refused");
  EXPECT_EQ(tr->was_for, Millis(1400));
  EXPECT_EQ(h.health(), Health::kDown);
  EXPECT_EQ(h.since(), t);
  EXPECT_EQ(h.transitions(), 1u);
  EXPECT_EQ(h.checks(), 3u);
  EXPECT_EQ(h.failed_checks(), 3u);
  // More failures while down change nothing.
  EXPECT_FALSE(h.on_probe(refused(), t += milliseconds(5000)));
  EXPECT_EQ(h.failures(), 4u);
}

TEST(HealthState, ASuccessResetsTheFailureCount) {
  BackendHealth h(params(2, 3), Health::kUp, kT0);
  TimePoint t = kT0;
  EXPECT_FALSE(h.on_probe(refused(), t += milliseconds(1)));
  EXPECT_FALSE(h.on_probe(refused(), t += milliseconds(1)));
  EXPECT_FALSE(h.on_probe(ok(), t += milliseconds(1)));
  EXPECT_EQ(h.failures(), 0u);
  EXPECT_EQ(h.successes(), 1u);
  EXPECT_FALSE(h.on_probe(refused(), t += milliseconds(1)));
  EXPECT_FALSE(h.on_probe(refused(), t += milliseconds(1)));
  EXPECT_EQ(h.health(), Health::kUp);
  EXPECT_TRUE(h.on_probe(refused(), t += milliseconds(1)));
}

TEST(HealthState, RisesAfterRiseConsecutiveSuccesses) {
  BackendHealth h(params(2, 3), Health::kDown, kT0);
  TimePoint t = kT0;
  EXPECT_FALSE(h.on_probe(ok(), t += milliseconds(5000)));
  EXPECT_FALSE(h.on_probe(status(503), t += milliseconds(200)));  // resets
  EXPECT_FALSE(h.on_probe(ok(), t += milliseconds(5000)));
  const std::optional<Transition> tr = h.on_probe(ok(), t += milliseconds(200));
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->to, Health::kUp);
  EXPECT_EQ(tr->reason, "after 2 successes: ok");
  EXPECT_EQ(tr->was_for, Millis(10400));
  EXPECT_EQ(h.last_result().latency, Millis(3));
}

TEST(HealthState, RiseAndFallOfOne) {
  BackendHealth h(params(1, 1), Health::kUp, kT0);
  const auto down = h.on_probe(status(500), kT0 + milliseconds(1));
  ASSERT_TRUE(down);
  EXPECT_EQ(down->reason, "after 1 failure: http status 500");
  const auto up = h.on_probe(ok(), kT0 + milliseconds(2));
  ASSERT_TRUE(up);
  EXPECT_EQ(up->reason, "after 1 success: ok");
}

TEST(HealthState, IntervalSelection) {
  BackendHealth h(params(2, 3), Health::kUp, kT0);
  TimePoint t = kT0;
  // Steady UP: interval.
  EXPECT_FALSE(h.flip_in_progress());
  EXPECT_EQ(h.base_interval(), Millis(1000));
  EXPECT_EQ(h.next_check(t, 12345), t + Millis(1000));
  // UP with failures counting toward a flip: fast.
  h.on_probe(refused(), t += milliseconds(1));
  EXPECT_TRUE(h.flip_in_progress());
  EXPECT_EQ(h.base_interval(), Millis(200));
  h.on_probe(refused(), t += milliseconds(1));
  EXPECT_EQ(h.base_interval(), Millis(200));
  // DOWN with nothing toward a flip: down interval.
  h.on_probe(refused(), t += milliseconds(1));
  EXPECT_FALSE(h.flip_in_progress());
  EXPECT_EQ(h.base_interval(), Millis(5000));
  // DOWN with a success toward rising: fast again.
  h.on_probe(ok(), t += milliseconds(1));
  EXPECT_TRUE(h.flip_in_progress());
  EXPECT_EQ(h.base_interval(), Millis(200));
  // A failure ends the attempt: back to the down interval.
  h.on_probe(refused(), t += milliseconds(1));
  EXPECT_EQ(h.base_interval(), Millis(5000));
  h.on_probe(ok(), t += milliseconds(1));
  h.on_probe(ok(), t += milliseconds(1));
  EXPECT_EQ(h.health(), Health::kUp);
  EXPECT_EQ(h.base_interval(), Millis(1000));
}

TEST(HealthState, ReloadKeepsStateAndChangesThresholds) {
  BackendHealth h(params(2, 3), Health::kUp, kT0);
  h.on_probe(refused(), kT0 + milliseconds(1));
  h.on_probe(refused(), kT0 + milliseconds(2));
  h.set_params(params(2, 2));
  EXPECT_EQ(h.failures(), 2u);
  EXPECT_TRUE(h.on_probe(refused(), kT0 + milliseconds(3)));
}

TEST(HealthState, JitterBounds) {
  EXPECT_EQ(jittered(Millis(1000), 0, 999), Millis(1000));
  std::mt19937_64 rng(42);
  Millis lo = Millis::max(), hi = Millis::min();
  for (int i = 0; i < 20000; ++i) {
    const Millis j = jittered(Millis(1000), 10, rng());
    ASSERT_GE(j, Millis(900));
    ASSERT_LE(j, Millis(1100));
    lo = std::min(lo, j);
    hi = std::max(hi, j);
  }
  // The whole range is used, both ends included.
  EXPECT_EQ(lo, Millis(900));
  EXPECT_EQ(hi, Millis(1100));
  for (uint64_t r : {uint64_t{0}, uint64_t{1}, ~uint64_t{0}}) {
    const Millis j = jittered(Millis(100), 50, r);
    EXPECT_GE(j, Millis(50));
    EXPECT_LE(j, Millis(150));
  }
  // Never zero or negative, even for tiny intervals.
  EXPECT_GE(jittered(Millis(1), 50, 0), Millis(1));
  EXPECT_EQ(jittered(Millis(10), 50, 0), Millis(5));
}

TEST(HealthState, NextCheckUsesJitter) {
  HealthParams p = params(2, 3);
  p.jitter_pct = 20;
  const BackendHealth h(p, Health::kUp, kT0);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    const TimePoint next = h.next_check(kT0, rng());
    ASSERT_GE(next, kT0 + Millis(800));
    ASSERT_LE(next, kT0 + Millis(1200));
  }
}

TEST(HealthState, PassiveSignalsWithinOneInterval) {
  HealthParams p = params(2, 3);
  p.passive_syn_rst = 5;
  p.passive_syn_timeout = 0;  // off
  BackendHealth h(p, Health::kUp, kT0);
  // Off: counted, never acted on.
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynTimeout, 1000, kT0));
  EXPECT_EQ(h.passive_signals(PassiveSignal::kSynTimeout), 1000u);
  // Spread over more than one interval: the window restarts, no flip.
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynRst, 3, kT0 + milliseconds(10)));
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynRst, 1, kT0 + milliseconds(500)));
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynRst, 3, kT0 + milliseconds(1100)));  // new window
  EXPECT_EQ(h.health(), Health::kUp);
  // Within one: down at once.
  const auto tr = h.on_passive(PassiveSignal::kSynRst, 2, kT0 + milliseconds(1300));
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->to, Health::kDown);
  EXPECT_EQ(tr->reason, "after 5 SYNs answered with RST within 200ms (passive, threshold 5)");
  EXPECT_EQ(h.passive_signals(PassiveSignal::kSynRst), 9u);
  // While down, signals are only counted; checks bring it back.
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynRst, 100, kT0 + milliseconds(1400)));
  EXPECT_FALSE(h.on_probe(ok(), kT0 + milliseconds(1500)));
  EXPECT_TRUE(h.on_probe(ok(), kT0 + milliseconds(1700)));
  // Back up, the window starts empty.
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynRst, 4, kT0 + milliseconds(1800)));
  EXPECT_TRUE(h.on_passive(PassiveSignal::kSynRst, 1, kT0 + milliseconds(1900)));
}

// Signals seen before checks took the backend DOWN were answered by that DOWN: once checks bring
// it back, they do not count toward taking it down again (one more RST within the same interval
// must not undo `rise` passing checks).
TEST(HealthState, PassiveWindowStartsEmptyAfterChecksFlipIt) {
  HealthParams p = params(2, 3);
  p.passive_syn_rst = 5;
  BackendHealth h(p, Health::kUp, kT0);
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynRst, 4, kT0 + milliseconds(10)));
  EXPECT_FALSE(h.on_probe(refused(), kT0 + milliseconds(100)));
  EXPECT_FALSE(h.on_probe(refused(), kT0 + milliseconds(200)));
  ASSERT_TRUE(h.on_probe(refused(), kT0 + milliseconds(300)));
  EXPECT_EQ(h.health(), Health::kDown);
  EXPECT_FALSE(h.on_probe(ok(), kT0 + milliseconds(400)));
  ASSERT_TRUE(h.on_probe(ok(), kT0 + milliseconds(500)));
  EXPECT_EQ(h.health(), Health::kUp);
  EXPECT_FALSE(h.on_passive(PassiveSignal::kSynRst, 1, kT0 + milliseconds(600)));
  EXPECT_EQ(h.health(), Health::kUp);
  // Five new ones within an interval still do.
  EXPECT_TRUE(h.on_passive(PassiveSignal::kSynRst, 4, kT0 + milliseconds(700)));
}

TEST(HealthState, PassiveSynTimeout) {
  HealthParams p = params(2, 3);
  p.passive_syn_timeout = 1;
  BackendHealth h(p, Health::kUp, kT0);
  const auto tr = h.on_passive(PassiveSignal::kSynTimeout, 1, kT0);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->reason, "after 1 SYNs unanswered within 0ms (passive, threshold 1)");
}

TEST(HealthState, FromConfig) {
  cfg::HealthConfig c;
  c.rise = 4;
  c.fall = 5;
  c.interval_ms = 3000;
  c.fast_interval_ms = 300;
  c.down_interval_ms = 30000;
  c.jitter_pct = 25;
  c.passive.syn_rst = 7;
  c.passive.syn_timeout = 9;
  const HealthParams p = HealthParams::from(c);
  EXPECT_EQ(p.rise, 4u);
  EXPECT_EQ(p.fall, 5u);
  EXPECT_EQ(p.interval, Millis(3000));
  EXPECT_EQ(p.fast_interval, Millis(300));
  EXPECT_EQ(p.down_interval, Millis(30000));
  EXPECT_EQ(p.jitter_pct, 25u);
  EXPECT_EQ(p.passive_syn_rst, 7u);
  EXPECT_EQ(p.passive_syn_timeout, 9u);
}

TEST(HealthState, Describe) {
  EXPECT_EQ(describe(ok()), "ok");
  EXPECT_EQ(describe(status(503)), "http status 503");
  EXPECT_EQ(describe(refused()), "connection refused");
  EXPECT_EQ(describe(ProbeResult{ResultKind::kTimeout, 0, "x", Millis(0)}), "timeout");
  EXPECT_EQ(describe(ProbeResult{ResultKind::kBodyMismatch, 200, "", Millis(0)}), "body mismatch");
  EXPECT_EQ(describe(ProbeResult{ResultKind::kError, 0, "Empty reply from server", Millis(0)}),
            "Empty reply from server");
  EXPECT_STREQ(to_string(Health::kUp), "UP");
  EXPECT_STREQ(to_string(Health::kDown), "DOWN");
}

TEST(HealthState, FormatDuration) {
  EXPECT_EQ(format_duration(Millis(0)), "0ms");
  EXPECT_EQ(format_duration(Millis(850)), "850ms");
  EXPECT_EQ(format_duration(Millis(3250)), "3.2s");
  EXPECT_EQ(format_duration(Millis(42000)), "42s");
  EXPECT_EQ(format_duration(Millis(303000)), "5m03s");
  EXPECT_EQ(format_duration(Millis(7260000)), "2h01m");
  EXPECT_EQ(format_duration(Millis(-5)), "0ms");
}

}  // namespace
}  // namespace lb::health
