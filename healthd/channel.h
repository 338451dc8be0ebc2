#pragma once
// Both ends of the shared-memory channel defined in shm_abi.h. lbd owns the segment (Segment);
// lb-healthd and lbctl attach to it (Attachment). Neither end ever blocks on the other: sends
// fail when a ring is full and the caller decides (healthd coalesces, lbd drops events).
// Control-path code: may throw std::runtime_error from create/attach with an actionable message.

#include <optional>
#include <string>

#include "shm_abi.h"

struct rte_ring;

namespace lb::shm {

// The segment name for a config: "/lbd-<name>" (POSIX shm names start with one slash).
std::string segment_name(const std::string& instance);

class Segment {
 public:
  // Replaces any segment of that name (a new lbd start is a new epoch), mode 0600.
  static Segment create(const std::string& name);
  Segment(Segment&& o) noexcept;
  Segment& operator=(Segment&&) = delete;
  ~Segment();

  Header& header() { return *hdr_; }
  const Header& header() const { return *hdr_; }
  uint64_t epoch() const { return hdr_->epoch; }
  // Up to `max` updates off the ring, oldest first.
  unsigned receive(ServiceUpdate* out, unsigned max);
  // False when the ring is full (healthd is not reading): the event is lost, counters are not.
  bool post(const Event& e);

 private:
  Segment() = default;
  std::string name_;
  void* base_ = nullptr;
  size_t size_ = 0;
  Header* hdr_ = nullptr;
  rte_ring* updates_ = nullptr;
  rte_ring* events_ = nullptr;
};

class Attachment {
 public:
  // Attaches to the named segment; nullopt (with the reason in `why`) when it does not exist
  // yet or is not a valid lbd segment of this version.
  static std::optional<Attachment> try_attach(const std::string& name, std::string& why);
  Attachment(Attachment&& o) noexcept;
  Attachment& operator=(Attachment&& o) noexcept;
  ~Attachment();

  // The name now refers to another segment, or to none (lbd restarted or stopped): attach again.
  bool stale() const;
  uint64_t epoch() const { return hdr_->epoch; }
  const Header& header() const { return *hdr_; }
  Header& header() { return *hdr_; }
  // False when the ring is full: the caller keeps the newest state and tries again later.
  bool send(const ServiceUpdate& u);
  unsigned receive(Event* out, unsigned max);

 private:
  Attachment() = default;
  void release();
  std::string name_;
  void* base_ = nullptr;
  size_t size_ = 0;
  uint64_t inode_ = 0;
  Header* hdr_ = nullptr;
  rte_ring* updates_ = nullptr;
  rte_ring* events_ = nullptr;
};

}  // namespace lb::shm
