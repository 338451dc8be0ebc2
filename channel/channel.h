#pragma once
// Both ends of the shared-memory channel defined in shm_abi.h. lbd owns the segment (Segment);
// lb-healthd attaches to it (Attachment). Neither end ever blocks on the other: sends fail when
// a ring is full and the caller decides (healthd coalesces, lbd drops events).
// Control-path code: may throw std::runtime_error from create with an actionable message.
//
// Trust: the segment is a file in /dev/shm, a directory every user may write to. lbd creates it
// under a random temporary name (O_EXCL | O_NOFOLLOW, mode 0600) and renames it into place, so
// the name only ever refers to a complete segment of lbd's, and nobody can have created it
// first. lb-healthd attaches only to a regular file owned by its own user with mode 0600 and
// one link (lbd and lb-healthd run as the same user, normally root). Both sides then check
// every field before using it: the header at attach, each ring's geometry (size, mask, capacity,
// flags, head and tail) before every enqueue and dequeue, and each message received. What fails
// a check is refused and counted (faults(), last_fault()), never used.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "shm_abi.h"

struct rte_ring;

namespace lb::shm {

// The segment name for a config: "/lbd-<name>" (POSIX shm names start with one slash).
std::string segment_name(const std::string& instance);
// Where glibc keeps a POSIX shm segment of that name: "/dev/shm/lbd-<name>".
std::string segment_path(const std::string& name);
// The size of a segment (header and both rings).
size_t segment_size();

// Why `u` cannot come from a well-behaved lb-healthd at the channel level (its generation), or
// "" when it can. Its content is lbd's to judge (apply_update()).
std::string message_problem(const ServiceUpdate& u);
// Why `e` is not a well-formed event (type, count, service name, backend address), or "".
std::string event_problem(const Event& e);

// A pid read from the segment, for display: 0 when it cannot be one.
uint64_t plausible_pid(uint64_t pid);

class Segment {
 public:
  // Creates the segment and puts it in place of any file of that name (a new lbd start is a
  // new epoch), mode 0600.
  static Segment create(const std::string& name);
  Segment(Segment&& o) noexcept;
  Segment& operator=(Segment&&) = delete;
  ~Segment();

  Header& header() { return *hdr_; }
  const Header& header() const { return *hdr_; }
  uint64_t epoch() const { return hdr_->epoch; }
  // Up to `max` updates off the ring, oldest first. Updates with an impossible generation are
  // dropped, and a ring whose geometry is corrupted is not read at all: both count as faults.
  unsigned receive(ServiceUpdate* out, unsigned max);
  // False when the ring is full (healthd is not reading) or corrupted (a fault): the event is
  // lost, counters are not.
  bool post(const Event& e);

  // What was refused because the segment held something invalid.
  uint64_t faults() const { return faults_; }
  const std::string& last_fault() const { return last_fault_; }

 private:
  Segment() = default;
  void fault(std::string why);
  std::string name_;
  void* base_ = nullptr;
  size_t size_ = 0;
  uint64_t dev_ = 0;
  uint64_t inode_ = 0;
  Header* hdr_ = nullptr;
  rte_ring* updates_ = nullptr;
  rte_ring* events_ = nullptr;
  uint64_t faults_ = 0;
  std::string last_fault_;
};

class Attachment {
 public:
  // Attaches to the named segment; nullopt (with the reason in `why`) when it does not exist
  // yet, is not lbd's (owner, mode, type), or is not a valid lbd segment of this version.
  static std::optional<Attachment> try_attach(const std::string& name, std::string& why);
  Attachment(Attachment&& o) noexcept;
  Attachment& operator=(Attachment&& o) noexcept;
  ~Attachment();

  // The name now refers to another segment, or to none (lbd restarted or stopped): attach again.
  bool stale() const;
  uint64_t epoch() const { return hdr_->epoch; }
  const Header& header() const { return *hdr_; }
  Header& header() { return *hdr_; }
  // False when the ring is full (the caller keeps the newest state and tries again later), or
  // when the ring is found corrupted (broken() from then on).
  bool send(const ServiceUpdate& u);
  // Up to `max` well-formed events (event_problem()); malformed ones are dropped as faults.
  unsigned receive(Event* out, unsigned max);

  // A ring was found corrupted: nothing more is sent or received; attach again.
  bool broken() const { return broken_; }
  uint64_t faults() const { return faults_; }
  const std::string& last_fault() const { return last_fault_; }

 private:
  Attachment() = default;
  void release();
  void fault(std::string why, bool breaks);
  std::string name_;
  void* base_ = nullptr;
  size_t size_ = 0;
  uint64_t dev_ = 0;
  uint64_t inode_ = 0;
  Header* hdr_ = nullptr;
  rte_ring* updates_ = nullptr;
  rte_ring* events_ = nullptr;
  bool broken_ = false;
  uint64_t faults_ = 0;
  std::string last_fault_;
};

}  // namespace lb::shm
