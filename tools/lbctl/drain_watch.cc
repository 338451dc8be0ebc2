#include "drain_watch.h"

namespace lbctl {

bool DrainWatch::sample(std::optional<uint64_t> flows, uint64_t packets, bool in_bird) {
  flows_ = flows;
  in_bird_ = in_bird;
  // Fewer than before: lbd started again (its counters from 0); this second is not known.
  rate_ = packets_known_ && packets >= packets_ ? std::optional<uint64_t>(packets - packets_)
                                                : std::nullopt;
  packets_ = packets;
  packets_known_ = true;
  quiet_ = rate_ && *rate_ < kQuietPackets ? quiet_ + 1 : 0;
  if (!in_bird) return false;  // the routes still stand: whatever lbd sees proves nothing
  return (flows && static_cast<int64_t>(*flows) <= threshold_) || quiet_ >= kQuietSeconds;
}

bool DrainWatch::unknown(bool in_bird) {
  flows_.reset();
  rate_.reset();
  quiet_ = 0;
  in_bird_ = in_bird;
  packets_known_ = false;
  return false;
}

std::string DrainWatch::describe() const {
  std::string out =
      flows_ ? std::to_string(*flows_) + " active flow(s)" : std::string("active flows not known");
  out += rate_ ? ", " + std::to_string(*rate_) + " packet(s) in the last second"
               : std::string(", packets in the last second not known (lbd restarting?)");
  if (!in_bird_) out += "; BIRD does not have the withdrawal yet";
  return out;
}

}  // namespace lbctl
