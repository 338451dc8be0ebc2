#pragma once
// What lb-healthd owes lbd, and the order it is paid in, over the update ring
// (shm::Attachment). Single-threaded: the daemon's loop owns it.
//
// - A running service whose state lbd does not have yet is owed ONE message: its full state,
//   built when it is sent. A service marked again while it waits moves to the back of the queue
//   and is still sent once, with its newest state: a full ring coalesces ("newest full state
//   per service wins") and the queue never holds more than one entry per name.
// - A removed service is owed one removal message. Once sent, it is kept only until lbd
//   acknowledges it (received_generation at or past it), then forgotten: what a change costs
//   never depends on how many services were removed before.
// - Updates and removals share one queue, ordered by their newest change, so neither starves
//   the other and causally ordered changes arrive in order.
// - A VIP:port is freed before it is taken: an update whose VIP:port lbd was last sent for
//   another service that is owed too (it moves away, or is removed) waits for that one, whatever
//   the order of the queue. A cycle (two services swapping VIPs) is broken by removing one of
//   them from lbd first; it is sent whole again right after.
// - lbd refuses an update whole (rejected_generation). Its header keeps only the newest refusal,
//   so every update lbd took since the last look is sent again (its newest state, after whatever
//   was sent before it, which may have freed what it needed): at most kMaxResends times in a row
//   for one service whose update was the refused one (twice that for one sent with it), then
//   logged and left until the service changes again.

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "channel.h"
#include "health_state.h"  // Clock, TimePoint, Millis

namespace lb::health {

class Publisher {
 public:
  // Writes the full state of running service `name` into `out` (with `generation`); false when
  // it does not run any more (nothing is sent).
  using Fill =
      std::function<bool(const std::string& name, uint64_t generation, shm::ServiceUpdate& out)>;
  // Told after a message went onto the ring.
  using Sent = std::function<void(const std::string& name, uint64_t generation, bool removal)>;

  // How many times in a row the state of one service is sent again after lbd refused it.
  static constexpr int kMaxResends = 3;

  // `name` runs and lbd needs its newest state (a change, or lbd needs everything again).
  void update(const std::string& name);
  // `name` no longer runs: lbd is told once.
  void remove(const std::string& name);
  // `name` runs again: a removal still owed or unacknowledged is dropped (the update that
  // follows replaces the service whole, with a newer generation).
  void cancel_removal(const std::string& name);

  enum class Outcome {
    kDone,     // nothing is owed any more
    kFull,     // the ring is full: the rest waits, in order
    kRefused,  // the attachment found the segment corrupted (shm::Attachment::broken())
  };
  // Sends what is owed, oldest change first, until done or the ring is full.
  Outcome flush(shm::Attachment& att, shm::ServiceUpdate& scratch, const Fill& fill,
                const Sent& sent);

  // lbd took every message up to `received` off the ring: removals up to there are retired.
  void acknowledged(uint64_t received);
  // Attached (again) to an lbd that has seen generations up to `seen`. The same lbd as before
  // (`same_lbd`, one epoch) may have lost what was sent but not acknowledged: owed again. A new
  // lbd started from its config file and never saw any removal: all are forgotten; the caller
  // says again which ones it needs (remove()) and owes every running service (update()).
  // `rejected`: lbd's rejected_generation now (refusals before this attach are not ours).
  void attached(uint64_t seen, bool same_lbd, uint64_t rejected = 0);
  // lbd's counters as just read: updates lbd may have refused since the last call are owed
  // again (see above).
  void progress(uint64_t received, uint64_t applied, uint64_t rejected);

  uint64_t generation() const { return generation_; }  // the newest sent
  // Every change made so far is on the ring once sent_through(ticket()) holds.
  uint64_t ticket() const { return next_seq_ - 1; }
  bool sent_through(uint64_t ticket) const { return queue_.empty() || queue_.front().seq > ticket; }
  bool idle() const { return queue_.empty(); }
  bool owed(const std::string& name) const { return where_.count(name) != 0; }
  // The services owed whose newest change came after `ticket`.
  std::vector<std::string> owed_since(uint64_t ticket) const;
  size_t owed_count() const { return queue_.size(); }
  size_t removals() const { return removals_.size(); }  // owed or not yet acknowledged
  bool removing(const std::string& name) const { return removals_.count(name) != 0; }
  // The newest message sent for `name` (its state or its removal); 0: none.
  uint64_t last_sent(const std::string& name) const {
    const auto it = last_sent_.find(name);
    return it == last_sent_.end() ? 0 : it->second;
  }
  uint64_t messages_sent() const { return messages_sent_; }
  uint64_t ring_full() const { return ring_full_; }
  // Updates sent that lbd has not applied yet and that are still each service's newest (the
  // others are pruned as they pile up): bounded by the services, not by the updates sent.
  size_t unsettled() const { return unsettled_.size(); }

 private:
  struct Entry {
    std::string name;
    uint64_t seq = 0;  // when it was last marked: the queue is ordered by it
  };
  void owe(const std::string& name);
  // What lbd was last sent for `name` holds (or no longer holds) its VIP:port.
  void hold(const std::string& name, uint64_t key);
  void release(const std::string& name);
  bool send(shm::Attachment& att, shm::ServiceUpdate& scratch, const std::string& name,
            bool removal, const Sent& sent);

  std::list<Entry> queue_;
  std::unordered_map<std::string, std::list<Entry>::iterator> where_;
  // Removed services lbd may still have: 0 while owed, else the generation that carried it.
  std::unordered_map<std::string, uint64_t> removals_;
  uint64_t generation_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t messages_sent_ = 0;
  uint64_t ring_full_ = 0;
  // The VIP:port (vip << 16 | port) of each service as last sent to this lbd, both ways.
  std::unordered_map<std::string, uint64_t> held_;
  std::unordered_map<uint64_t, std::string> holder_;
  // Updates sent that lbd has not applied yet (it may refuse them), oldest first.
  std::deque<std::pair<uint64_t, std::string>> unsettled_;
  std::unordered_map<std::string, uint64_t> last_sent_;
  // Sent again in a row since its last change: refused for sure (lbd's rejected_generation was
  // its update), and maybe (it was sent with one that was).
  struct Resends {
    int refused = 0;
    int maybe = 0;
  };
  std::unordered_map<std::string, Resends> resends_;
  uint64_t rejected_seen_ = 0;
};

// The outcome of waiting for lbd to apply a change.
struct AckResult {
  bool ok = false;
  std::string code;                 // "timeout" or "rejected" when !ok
  std::string error;                // one line when !ok
  uint64_t generation = 0;          // the newest update that carries the change (0: not sent)
  uint64_t applied_generation = 0;  // lbd's, when the wait ended
  int64_t waited_ms = 0;
};

// lbd's counters from the segment's header.
struct LbdView {
  uint64_t received = 0;
  uint64_t applied = 0;
  uint64_t rejected = 0;
};

// lb-healthd's end of the channel to lbd: attaching to lbd's segment (again when lbd restarts
// or its epoch changes), refusing a segment whose header cannot be true, paying what the
// Publisher owes, the heartbeats both ways, lbd's passive events, and waiting for lbd to apply a
// change. It knows nothing of services but their names: the daemon fills the messages.
class LbdLink {
 public:
  // `owe_everything` is called whenever lbd needs the full state again (attached, new epoch):
  // it marks every removal and running service in publisher(), and returns how many services run.
  LbdLink(Millis retry_period, std::function<size_t()> owe_everything);
  ~LbdLink();  // gives up the header's healthd_pid if it is still ours
  LbdLink(const LbdLink&) = delete;
  LbdLink& operator=(const LbdLink&) = delete;

  // The segment of another instance: detached now, attached on the next tick().
  void set_segment(std::string segment);
  const std::string& segment() const { return segment_; }
  // Attaches, or notices lbd went away or restarted; at most once per retry period.
  void tick(TimePoint now);
  TimePoint next_tick() const { return next_tick_; }
  void detach();
  // Faults the attachment saw, and what lbd acknowledged (retires removals).
  void check(TimePoint now);
  // lbd's counters, checked against what we sent; false (and detached) when they cannot be
  // true, or when not attached (`v` untouched).
  bool read_lbd(LbdView& v, TimePoint now);
  // Sends what is owed (Publisher::flush), logging once when the ring fills and frees.
  void flush(const Publisher::Fill& fill, const Publisher::Sent& sent);
  // lbd's passive events, at most the ring's size per call. Those lbd had queued before we
  // attached are dropped at attach: an event carries no time.
  void receive(const std::function<void(const shm::Event&)>& on_event);
  // Writes our heartbeat and notes when lbd's last moved.
  void heartbeat(TimePoint now);

  // Calls `done` once lbd has applied the updates that carry a change, refused one of them (and
  // it is not sent again), or `timeout` has passed (checked by check_waiters()). The change is
  // carried by the newest messages of the services owed and marked after `ticket` (0: every one
  // owed), sent after `mark`.
  void when_applied(uint64_t mark, Millis timeout, std::function<void(const AckResult&)> done,
                    uint64_t ticket = 0);
  void check_waiters(TimePoint now);
  bool waiting() const { return !waiters_.empty(); }
  // Answers every waiter with a timeout saying `why` (lb-healthd stops).
  void fail_waiters(const std::string& why);

  Publisher& publisher() { return publisher_; }
  const Publisher& publisher() const { return publisher_; }
  bool attached() const { return att_.has_value(); }
  // Something is owed and could be sent: the loop retries the ring soon.
  bool pending() const { return att_ && !publisher_.idle(); }
  uint64_t epoch() const { return att_ ? att_->epoch() : 0; }
  // lbd's counters as they are (zeros when not attached), unchecked: for the status.
  LbdView counters() const;
  uint64_t lbd_pid() const;
  // How long ago lbd's heartbeat last moved; nullopt when not attached or not seen moving since
  // we attached.
  std::optional<int64_t> lbd_heartbeat_age_ms(TimePoint now) const;
  // How long the newest generation sent has waited for lbd to apply (or refuse) it; nullopt
  // when it has not (or when not attached).
  std::optional<int64_t> unapplied_ms(TimePoint now);
  uint64_t channel_faults() const { return channel_faults_; }
  uint64_t attaches() const { return attaches_; }

 private:
  struct Waiter {
    uint64_t mark = 0;
    uint64_t ticket = 0;             // Publisher::ticket() when the change was made
    std::vector<std::string> names;  // the services whose messages carry the change
    // The generation each of `names` was last sent with, as seen here: a removal's is forgotten
    // by the Publisher once lbd has it (acknowledged), before lbd has applied it.
    std::vector<uint64_t> sent;
    std::optional<uint64_t> target;  // the newest generation carrying the change, once sent
    TimePoint start;
    TimePoint deadline;
    std::function<void(const AckResult&)> done;
  };
  void attach();
  void refuse_segment(const std::string& why, TimePoint now);

  Millis retry_period_;
  std::function<size_t()> owe_everything_;
  std::string segment_;
  std::optional<shm::Attachment> att_;
  uint64_t epoch_ = 0;  // of the lbd last attached to; 0: none yet
  bool wait_logged_ = false;
  TimePoint next_tick_{};
  Publisher publisher_;
  bool ring_full_logged_ = false;
  std::unique_ptr<shm::ServiceUpdate> scratch_;
  uint64_t faults_seen_ = 0;     // the attachment's faults already logged
  uint64_t channel_faults_ = 0;  // over all attachments
  TimePoint next_fault_log_{};
  uint64_t attaches_ = 0;
  // lbd's heartbeat as last seen, and when it last moved: unset until it has moved since we
  // attached (a dead lbd's segment keeps its last beat, which is no sign of life).
  uint64_t lbd_beat_ = 0;
  std::optional<TimePoint> lbd_beat_seen_;
  std::vector<Waiter> waiters_;
  std::optional<TimePoint> unapplied_since_;  // the newest generation sent waits since then
};

}  // namespace lb::health
