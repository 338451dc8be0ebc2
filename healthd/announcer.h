#pragma once
// lb-healthd's BGP announcer (docs/architecture.md#announcing-vips): decides which VIPs this node
// announces, and makes a local BIRD 2 announce exactly those. lb-healthd writes BIRD's whole
// configuration (render_bird_config: the VIPs as static /32 routes via bgp.next_hop, one BGP
// session per neighbor) and asks BIRD to reload it over its control socket ("configure"). BIRD
// diffs the static routes and sends only the announcements and withdrawals; the sessions stay up.
// No BGP of our own: BIRD speaks it. Single-threaded, called from the daemon's loop, which it
// never blocks: a BIRD that does not answer (stopped, stuck) delays no health check.

#include <chrono>
#include <cstdint>
#include <memory>
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
  int64_t heartbeat_age_ms = -1;  // -1: not seen moving since lb-healthd attached
  int64_t unapplied_ms = 0;       // how long the newest generation sent has waited unapplied
};

// One service as the decision sees it.
struct ServiceServing {
  uint32_t vip = 0;
  bool serving = false;  // a backend active on its own (not by fail_open) with a weight > 0
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

// One "configure" exchange with the BIRD listening on `socket` (its greeting, the command,
// its reply), never blocking: the constructor connects (a local socket connects at once or
// fails), advance() reads and writes what the socket lets it, until done(). The caller waits
// for fd() to become ready for events() (or for deadline()), and calls advance() again.
class BirdExchange {
 public:
  BirdExchange(const std::string& socket, TimePoint deadline);
  ~BirdExchange();
  BirdExchange(const BirdExchange&) = delete;
  BirdExchange& operator=(const BirdExchange&) = delete;

  // Does what is ready; true once the exchange has ended (error(), timed_out()).
  bool advance(TimePoint now);
  bool done() const { return fd_ < 0; }
  // nullopt when BIRD said it reconfigured (or had nothing to do), else why not, in one line.
  const std::optional<std::string>& error() const { return error_; }
  bool timed_out() const { return timed_out_; }  // BIRD did not finish answering in time
  int fd() const { return fd_; }
  short events() const;  // POLLIN or POLLOUT
  TimePoint deadline() const { return deadline_; }

 private:
  enum class Phase { kConnecting, kGreeting, kSending, kReply };
  void fail(std::string why);

  int fd_ = -1;
  Phase phase_ = Phase::kGreeting;
  TimePoint deadline_;
  std::string in_;    // what BIRD sent that is not parsed yet
  std::string text_;  // the reply's lines so far
  std::string out_ = "configure\n";
  std::optional<std::string> error_;
  bool timed_out_ = false;
};

// Asks the BIRD listening on `socket` to re-read its configuration, waiting for its answer (at
// most `timeout`): a BirdExchange run to its end. nullopt when BIRD said it reconfigured (or
// had nothing to do), else why not, in one line.
std::optional<std::string> bird_configure(const std::string& socket, Millis timeout);

// Keeps BIRD announcing what decide() said, without ever blocking its caller (the loop that
// runs the health checks): the exchange with BIRD goes on across calls.
class Announcer {
 public:
  // `timeout`: how long BIRD has to answer one exchange.
  Announcer(cfg::Config config, std::string instance, Millis timeout = Millis(1000));
  // Makes BIRD announce exactly `vips` (ascending): the file is written when they change (or
  // was never written), and BIRD is asked to reload after every write, and again `retry` after
  // an attempt ended without BIRD having it. A write while an exchange is in flight is sent
  // once that one ends. Advances the exchange in flight (advance()) first. Returns true when
  // it wrote or started a reload.
  bool set(const std::vector<uint32_t>& vips, TimePoint now, Millis retry = Millis(1000));
  // Advances the exchange in flight without blocking, and starts the next one it owes.
  void advance(TimePoint now);
  // An exchange with BIRD is in flight: wait for fd() (events()) or deadline(), then advance().
  bool busy() const { return exchange_ != nullptr; }
  int fd() const { return exchange_ ? exchange_->fd() : -1; }
  short events() const { return exchange_ ? exchange_->events() : 0; }
  TimePoint deadline() const { return exchange_ ? exchange_->deadline() : TimePoint::max(); }
  // How long the exchange in flight has waited for BIRD (0: none in flight).
  Millis waiting(TimePoint now) const;

  const std::vector<uint32_t>& announced() const { return wanted_; }  // what the file says
  bool in_bird() const { return in_bird_; }  // BIRD confirmed it read the newest file
  const std::string& last_error() const { return last_error_; }
  uint64_t reloads() const { return reloads_; }
  uint64_t reload_failures() const { return reload_failures_; }
  uint64_t timeouts() const { return timeouts_; }  // exchanges BIRD did not finish in time
  const std::string& config_path() const { return config_path_; }
  const std::string& socket_path() const { return socket_path_; }

 private:
  void start(TimePoint now);
  void finish(TimePoint now);

  cfg::Config config_;
  std::string instance_;
  std::string config_path_;
  std::string socket_path_;
  Millis timeout_;
  Millis retry_{1000};
  std::vector<uint32_t> wanted_;
  bool written_ = false;
  bool write_failed_ = false;
  bool in_bird_ = false;
  uint64_t file_version_ = 0;  // files written
  uint64_t sent_version_ = 0;  // the file the exchange in flight (or the last one) asked about
  std::unique_ptr<BirdExchange> exchange_;
  TimePoint started_{};
  TimePoint next_try_{};
  std::string last_error_;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
  uint64_t timeouts_ = 0;
};

}  // namespace lb::health
