#pragma once
// lbctl node drain's decision (cmd_node.cc), apart from its sockets so that it is tested alone:
// fed one sample of lbd's load a second, it says when the node's traffic has gone.

#include <cstdint>
#include <optional>
#include <string>

namespace lbctl {

class DrainWatch {
 public:
  // A second with fewer packets than this received on lbd's ports is quiet: with ECMP a
  // withdrawn route moves every flow to the other nodes at once, and the flows left in lbd's
  // table only wait for their idle timeout.
  static constexpr uint64_t kQuietPackets = 10;
  // Quiet this many seconds in a row: one quiet second also happens before the router has
  // taken the withdrawal, on a node with little traffic.
  static constexpr int kQuietSeconds = 3;

  // `threshold`: drained at this many active flows; `packets`: lbd's ports' received packets
  // when the drain began.
  DrainWatch(int64_t threshold, uint64_t packets) : threshold_(threshold), packets_(packets) {}

  // One second later: lbd's active flows (nullopt: not known, an incomplete listing), its
  // ports' received packets, and whether BIRD has the withdrawal. True once drained: BIRD has
  // it, and the flows are at most the threshold or the ports have been quiet kQuietSeconds.
  bool sample(std::optional<uint64_t> flows, uint64_t packets, bool in_bird);
  // A second whose load could not be read (lbd's telemetry gone: lbd restarting). Never drained;
  // the next sample only sets where the packets count from.
  bool unknown(bool in_bird);

  // The last second's packets; nullopt when the counters went back (lbd restarted) and the
  // second says nothing.
  std::optional<uint64_t> rate() const { return rate_; }
  std::optional<uint64_t> flows() const { return flows_; }
  // What the last sample saw, for the user: "12 active flow(s), 3 packet(s) in the last second".
  std::string describe() const;

 private:
  int64_t threshold_;
  uint64_t packets_;
  bool packets_known_ = true;  // packets_ is the count the next sample's is measured from
  std::optional<uint64_t> flows_;
  std::optional<uint64_t> rate_;
  int quiet_ = 0;  // quiet seconds in a row
  bool in_bird_ = false;
};

}  // namespace lbctl
