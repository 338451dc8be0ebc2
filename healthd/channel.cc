#include "channel.h"

#include <fcntl.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>

namespace lb::shm {

namespace {

size_t align_up(size_t n, size_t a) {
  return (n + a - 1) / a * a;
}

struct Layout {
  size_t update_offset, event_offset, total;
};

Layout layout() {
  const auto upd =
      static_cast<size_t>(rte_ring_get_memsize_elem(sizeof(ServiceUpdate), kUpdateRingSlots));
  const auto evt = static_cast<size_t>(rte_ring_get_memsize_elem(sizeof(Event), kEventRingSlots));
  Layout l;
  l.update_offset = kHeaderSize;
  l.event_offset = align_up(l.update_offset + upd, 4096);
  l.total = align_up(l.event_offset + evt, 4096);
  return l;
}

std::string errno_text() {
  return std::strerror(errno);
}

uint64_t new_epoch() {
  std::random_device rd;
  const auto now =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return (uint64_t{rd()} << 32 ^ rd()) ^ now ^ static_cast<uint64_t>(getpid());
}

}  // namespace

std::string segment_name(const std::string& instance) {
  return "/lbd-" + instance;
}

Segment Segment::create(const std::string& name) {
  const Layout l = layout();
  shm_unlink(name.c_str());  // a new lbd is a new epoch; attached readers notice the new inode
  const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) throw std::runtime_error("shm_open(" + name + "): " + errno_text());
  if (ftruncate(fd, static_cast<off_t>(l.total)) != 0) {
    const std::string err = errno_text();
    close(fd);
    shm_unlink(name.c_str());
    throw std::runtime_error("ftruncate(" + name + "): " + err);
  }
  void* base = mmap(nullptr, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) {
    shm_unlink(name.c_str());
    throw std::runtime_error("mmap(" + name + "): " + errno_text());
  }
  Segment s;
  s.name_ = name;
  s.base_ = base;
  s.size_ = l.total;
  auto* bytes = static_cast<uint8_t*>(base);
  s.updates_ = reinterpret_cast<rte_ring*>(bytes + l.update_offset);
  s.events_ = reinterpret_cast<rte_ring*>(bytes + l.event_offset);
  if (rte_ring_init(s.updates_, "lb_updates", kUpdateRingSlots, RING_F_SP_ENQ | RING_F_SC_DEQ) !=
          0 ||
      rte_ring_init(s.events_, "lb_events", kEventRingSlots, RING_F_SP_ENQ | RING_F_SC_DEQ) != 0)
    throw std::runtime_error("rte_ring_init on " + name + " failed");
  s.hdr_ = new (base) Header{};
  Header& h = *s.hdr_;
  h.version = kVersion;
  h.header_size = sizeof(Header);
  h.update_size = sizeof(ServiceUpdate);
  h.event_size = sizeof(Event);
  h.epoch = new_epoch();
  h.update_ring_offset = l.update_offset;
  h.event_ring_offset = l.event_offset;
  h.total_size = l.total;
  h.lbd_pid.store(static_cast<uint64_t>(getpid()), std::memory_order_relaxed);
  // release pairs with the acquire in try_attach(): the magic is the last word written.
  std::atomic_ref<uint64_t>(h.magic).store(kMagic, std::memory_order_release);
  return s;
}

Segment::Segment(Segment&& o) noexcept
    : name_(std::move(o.name_)),
      base_(o.base_),
      size_(o.size_),
      hdr_(o.hdr_),
      updates_(o.updates_),
      events_(o.events_) {
  o.base_ = nullptr;
}

Segment::~Segment() {
  if (!base_) return;
  munmap(base_, size_);
  shm_unlink(name_.c_str());
}

unsigned Segment::receive(ServiceUpdate* out, unsigned max) {
  return rte_ring_sc_dequeue_burst_elem(updates_, out, sizeof(ServiceUpdate), max, nullptr);
}

bool Segment::post(const Event& e) {
  return rte_ring_sp_enqueue_elem(events_, const_cast<Event*>(&e), sizeof(Event)) == 0;
}

std::optional<Attachment> Attachment::try_attach(const std::string& name, std::string& why) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    why = "shm_open(" + name + "): " + errno_text() + (errno == ENOENT ? " (is lbd running?)" : "");
    return std::nullopt;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < kHeaderSize) {
    close(fd);
    why = name + ": not initialised yet";
    return std::nullopt;
  }
  const Layout l = layout();
  void* base =
      mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) {
    why = "mmap(" + name + "): " + errno_text();
    return std::nullopt;
  }
  Attachment a;
  a.name_ = name;
  a.base_ = base;
  a.size_ = static_cast<size_t>(st.st_size);
  a.inode_ = st.st_ino;
  a.hdr_ = static_cast<Header*>(base);
  const Header& h = *a.hdr_;
  // acquire pairs with the release of the magic in Segment::create().
  if (std::atomic_ref<uint64_t>(const_cast<uint64_t&>(h.magic)).load(std::memory_order_acquire) !=
      kMagic) {
    why = name + ": not an lbd segment, or not initialised yet";
    return std::nullopt;
  }
  if (h.version != kVersion || h.update_size != sizeof(ServiceUpdate) ||
      h.event_size != sizeof(Event) || h.total_size != a.size_ || h.total_size != l.total ||
      h.update_ring_offset != l.update_offset || h.event_ring_offset != l.event_offset) {
    why = name + ": ABI version " + std::to_string(h.version) + " (we speak " +
          std::to_string(kVersion) +
          ") or layout differs: lbd and lb-healthd must be the same build";
    return std::nullopt;
  }
  auto* bytes = static_cast<uint8_t*>(base);
  a.updates_ = reinterpret_cast<rte_ring*>(bytes + h.update_ring_offset);
  a.events_ = reinterpret_cast<rte_ring*>(bytes + h.event_ring_offset);
  return a;
}

Attachment::Attachment(Attachment&& o) noexcept {
  *this = std::move(o);
}

Attachment& Attachment::operator=(Attachment&& o) noexcept {
  if (this != &o) {
    release();
    name_ = std::move(o.name_);
    base_ = o.base_;
    size_ = o.size_;
    inode_ = o.inode_;
    hdr_ = o.hdr_;
    updates_ = o.updates_;
    events_ = o.events_;
    o.base_ = nullptr;
  }
  return *this;
}

void Attachment::release() {
  if (base_) munmap(base_, size_);
  base_ = nullptr;
}

Attachment::~Attachment() {
  release();
}

bool Attachment::stale() const {
  const int fd = shm_open(name_.c_str(), O_RDONLY, 0);
  if (fd < 0) return true;
  struct stat st {};
  const bool same = fstat(fd, &st) == 0 && st.st_ino == inode_;
  close(fd);
  return !same;
}

bool Attachment::send(const ServiceUpdate& u) {
  return rte_ring_sp_enqueue_elem(updates_, const_cast<ServiceUpdate*>(&u),
                                  sizeof(ServiceUpdate)) == 0;
}

unsigned Attachment::receive(Event* out, unsigned max) {
  return rte_ring_sc_dequeue_burst_elem(events_, out, sizeof(Event), max, nullptr);
}

}  // namespace lb::shm
