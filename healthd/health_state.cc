#include "health_state.h"

#include <cstdio>
#include <utility>

namespace lb::health {

Health to_health(cfg::InitialState s) {
  return s == cfg::InitialState::kUp ? Health::kUp : Health::kDown;
}

std::string describe(const ProbeResult& r) {
  switch (r.kind) {
    case ResultKind::kNone:
      return "no check yet";
    case ResultKind::kOk:
      return "ok";
    case ResultKind::kHttpStatus:
      return "http status " + std::to_string(r.http_status);
    case ResultKind::kTimeout:
      return "timeout";
    case ResultKind::kRefused:
      return "connection refused";
    case ResultKind::kBodyMismatch:
      return "body mismatch";
    case ResultKind::kError:
      return r.detail.empty() ? std::string("error") : r.detail;
  }
  return "?";
}

const char* describe(PassiveSignal s) {
  return s == PassiveSignal::kSynRst ? "SYNs answered with RST" : "SYNs unanswered";
}

std::string format_duration(Millis d) {
  const long long ms = d.count() < 0 ? 0 : static_cast<long long>(d.count());
  char buf[48];
  if (ms < 1000) {
    std::snprintf(buf, sizeof buf, "%lldms", ms);
  } else if (ms < 10000) {
    std::snprintf(buf, sizeof buf, "%lld.%llds", ms / 1000, ms % 1000 / 100);
  } else if (ms < 60000) {
    std::snprintf(buf, sizeof buf, "%llds", ms / 1000);
  } else if (ms < 3600000) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", ms / 60000, ms / 1000 % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", ms / 3600000, ms / 60000 % 60);
  }
  return buf;
}

HealthParams HealthParams::from(const cfg::HealthConfig& h) {
  HealthParams p;
  p.rise = h.rise;
  p.fall = h.fall;
  p.interval = Millis(h.interval_ms);
  p.fast_interval = Millis(h.fast_interval_ms);
  p.down_interval = Millis(h.down_interval_ms);
  p.jitter_pct = h.jitter_pct;
  p.passive_syn_rst = h.passive.syn_rst;
  p.passive_syn_timeout = h.passive.syn_timeout;
  return p;
}

Millis jittered(Millis base, uint32_t pct, uint64_t random) {
  const int64_t b = base.count();
  const int64_t spread = b * static_cast<int64_t>(pct) / 100;
  int64_t out = b;
  if (spread > 0) {
    const auto span = static_cast<uint64_t>(2 * spread + 1);
    out = b - spread + static_cast<int64_t>(random % span);
  }
  return Millis(out < 1 ? 1 : out);
}

BackendHealth::BackendHealth(const HealthParams& params, Health initial, TimePoint now)
    : params_(params), health_(initial), since_(now) {}

Millis BackendHealth::base_interval() const {
  if (flip_in_progress()) return params_.fast_interval;
  if (health_ == Health::kDown) return params_.down_interval;
  return params_.interval;
}

Transition BackendHealth::flip(Health to, std::string reason, TimePoint now) {
  Transition t{health_, to, std::move(reason), std::chrono::duration_cast<Millis>(now - since_)};
  health_ = to;
  since_ = now;
  ++transitions_;
  // Whatever flipped it, the signals seen before are answered: a backend checks brought back
  // starts with empty passive windows.
  for (Window& each : passive_) each.count = 0;
  return t;
}

std::optional<Transition> BackendHealth::on_probe(const ProbeResult& result, TimePoint now) {
  ++checks_;
  last_ = result;
  if (result.ok()) {
    ++successes_;
    failures_ = 0;
    if (health_ == Health::kDown && successes_ >= params_.rise) {
      return flip(Health::kUp,
                  "after " + std::to_string(successes_) +
                      (successes_ == 1 ? " success: " : " successes: ") + describe(result),
                  now);
    }
  } else {
    ++failed_checks_;
    ++failures_;
    successes_ = 0;
    if (health_ == Health::kUp && failures_ >= params_.fall) {
      return flip(Health::kDown,
                  "after " + std::to_string(failures_) +
                      (failures_ == 1 ? " failure: " : " failures: ") + describe(result),
                  now);
    }
  }
  return std::nullopt;
}

std::optional<Transition> BackendHealth::on_passive(PassiveSignal signal, uint32_t count,
                                                    TimePoint now) {
  Window& w = passive_[index(signal)];
  w.total += count;
  const uint32_t threshold =
      signal == PassiveSignal::kSynRst ? params_.passive_syn_rst : params_.passive_syn_timeout;
  if (threshold == 0 || health_ == Health::kDown || count == 0) return std::nullopt;
  if (w.count == 0 || now - w.start >= params_.interval) {
    w.start = now;
    w.count = 0;
  }
  w.count += count;
  if (w.count < threshold) return std::nullopt;
  const uint64_t seen = w.count;
  const auto within = std::chrono::duration_cast<Millis>(now - w.start);
  successes_ = 0;
  return flip(Health::kDown,
              "after " + std::to_string(seen) + " " + describe(signal) + " within " +
                  format_duration(within) + " (passive, threshold " + std::to_string(threshold) +
                  ")",
              now);
}

}  // namespace lb::health
