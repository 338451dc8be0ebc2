#pragma once
// lb-healthd's BGP announcer (docs/architecture.md#announcing-vips): decides which VIPs this node
// announces, and makes a local BIRD 2 announce exactly those. lb-healthd writes BIRD's whole
// configuration (render_bird_config: the VIPs as static /32 routes via bgp.next_hop, one BGP
// session per neighbor) and asks BIRD to reload it over its control socket ("configure"). BIRD
// diffs the static routes and sends only the announcements and withdrawals; the sessions stay up.
// No BGP of our own: BIRD speaks it. Single-threaded, called from the daemon's loop.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "health_state.h"  // Clock, TimePoint, Millis
#include "lb_config.h"

namespace lb::health {

// The node's administrative state (`lbctl node drain` / `lbctl node ready`).
enum class NodeState { kReady, kDraining };
const char* to_string(NodeState s);  // "ready", "draining"

// What the decision needs to know of lbd.
struct LbdLiveness {
  bool attached = false;
  int64_t heartbeat_age_ms = -1;  // -1: never seen move
  int64_t unapplied_ms = 0;       // how long the newest generation sent has waited unapplied
};

// One service as the decision sees it.
struct ServiceServing {
  uint32_t vip = 0;
  bool serving = false;  // at least one backend active on its own (not by fail_open)
};

struct VipDecision {
  uint32_t vip = 0;
  bool announce = false;
  std::string why;  // one line: why it is (not) announced
};

// Per VIP, in ascending order: announced while the node is ready, lbd is alive (attached, its
// heartbeat younger than bgp.lbd_timeout_ms, no generation unapplied for that long), and (with
// announce_when = "serving") one of the VIP's services has a serving backend. A /32 cannot
// say which port serves, so a VIP shared by services stays while any of them serves.
std::vector<VipDecision> decide(const cfg::BgpConfig& bgp, NodeState node, const LbdLiveness& lbd,
                                const std::vector<ServiceServing>& services);

// BIRD's configuration announcing `vips` (ascending) for `config` (bgp enabled).
std::string render_bird_config(const cfg::Config& config, const std::string& instance,
                               const std::vector<uint32_t>& vips);

// Asks the BIRD listening on `socket` to re-read its configuration. nullopt when BIRD said it
// reconfigured (or had nothing to do), else why not, in one line. Waits at most `timeout`.
std::optional<std::string> bird_configure(const std::string& socket, Millis timeout);

// Keeps BIRD announcing what decide() said.
class Announcer {
 public:
  Announcer(cfg::Config config, std::string instance);
  // Makes BIRD announce exactly `vips` (ascending): the file is written when they change (or
  // was never written), and BIRD is asked to reload after every write, and again every
  // `retry` while it could not be told. Returns true when it wrote or reloaded.
  bool set(const std::vector<uint32_t>& vips, TimePoint now, Millis retry = Millis(1000));

  const std::vector<uint32_t>& announced() const { return wanted_; }  // what the file says
  bool in_bird() const { return in_bird_; }  // BIRD confirmed it read the newest file
  const std::string& last_error() const { return last_error_; }
  uint64_t reloads() const { return reloads_; }
  uint64_t reload_failures() const { return reload_failures_; }
  const std::string& config_path() const { return config_path_; }
  const std::string& socket_path() const { return socket_path_; }

 private:
  cfg::Config config_;
  std::string instance_;
  std::string config_path_;
  std::string socket_path_;
  std::vector<uint32_t> wanted_;
  bool written_ = false;
  bool write_failed_ = false;
  bool in_bird_ = false;
  TimePoint next_try_{};
  std::string last_error_;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
};

}  // namespace lb::health
