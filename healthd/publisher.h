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
//   the other and causally ordered changes arrive in order (a removal that frees a VIP before
//   the update that takes it).

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <unordered_map>

#include "channel.h"

namespace lb::health {

class Publisher {
 public:
  // Writes the full state of running service `name` into `out` (with `generation`); false when
  // it does not run any more (nothing is sent).
  using Fill =
      std::function<bool(const std::string& name, uint64_t generation, shm::ServiceUpdate& out)>;
  // Told after a message went onto the ring.
  using Sent = std::function<void(const std::string& name, uint64_t generation, bool removal)>;

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
  void attached(uint64_t seen, bool same_lbd);

  uint64_t generation() const { return generation_; }  // the newest sent
  // Every change made so far is on the ring once sent_through(ticket()) holds.
  uint64_t ticket() const { return next_seq_ - 1; }
  bool sent_through(uint64_t ticket) const { return queue_.empty() || queue_.front().seq > ticket; }
  bool idle() const { return queue_.empty(); }
  bool owed(const std::string& name) const { return where_.count(name) != 0; }
  size_t owed_count() const { return queue_.size(); }
  size_t removals() const { return removals_.size(); }  // owed or not yet acknowledged
  uint64_t messages_sent() const { return messages_sent_; }
  uint64_t ring_full() const { return ring_full_; }

 private:
  struct Entry {
    std::string name;
    uint64_t seq = 0;  // when it was last marked: the queue is ordered by it
  };
  void owe(const std::string& name);

  std::list<Entry> queue_;
  std::unordered_map<std::string, std::list<Entry>::iterator> where_;
  // Removed services lbd may still have: 0 while owed, else the generation that carried it.
  std::unordered_map<std::string, uint64_t> removals_;
  uint64_t generation_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t messages_sent_ = 0;
  uint64_t ring_full_ = 0;
};

}  // namespace lb::health
