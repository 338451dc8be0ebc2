#include "check_stats.h"

#include <algorithm>
#include <chrono>

namespace lb::health {

void Histogram::observe(double value) {
  const auto it = std::lower_bound(bounds.begin(), bounds.end(), value);  // first bound >= value
  ++counts[static_cast<size_t>(it - bounds.begin())];
  sum += value;
  ++count;
}

const char* reason_label(ResultKind kind) {
  switch (kind) {
    case ResultKind::kNone:
      return "none";
    case ResultKind::kOk:
      return "ok";
    case ResultKind::kHttpStatus:
      return "http_status";
    case ResultKind::kTimeout:
      return "timeout";
    case ResultKind::kRefused:
      return "refused";
    case ResultKind::kBodyMismatch:
      return "body_mismatch";
    case ResultKind::kError:
      return "error";
  }
  return "error";
}

void CheckStats::observe(const ProbeResult& result) {
  duration.observe(std::chrono::duration<double>(result.latency).count());
  const auto it = std::find(kFailureKinds.begin(), kFailureKinds.end(), result.kind);
  if (it != kFailureKinds.end()) ++failures[static_cast<size_t>(it - kFailureKinds.begin())];
}

uint64_t CheckStats::failed(ResultKind kind) const {
  const auto it = std::find(kFailureKinds.begin(), kFailureKinds.end(), kind);
  return it == kFailureKinds.end() ? 0 : failures[static_cast<size_t>(it - kFailureKinds.begin())];
}

void ApplyTracker::observe(uint64_t sent, uint64_t applied, bool attached, TimePoint now) {
  if (!attached) {
    // A new lbd starts its own generations: nothing sent before is ever applied by it.
    pending_.clear();
    last_sent_ = sent;
    return;
  }
  if (sent > last_sent_) {
    if (pending_.size() == kMaxTracked) pending_.pop_front();
    pending_.emplace_back(sent, now);
    last_sent_ = sent;
  }
  while (!pending_.empty() && pending_.front().first <= applied) {
    latency_.observe(std::chrono::duration<double>(now - pending_.front().second).count());
    pending_.pop_front();
  }
  while (!pending_.empty() && now - pending_.front().second > kGiveUp) pending_.pop_front();
}

}  // namespace lb::health
