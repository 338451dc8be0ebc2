#include "channel.h"

#include <fcntl.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <tuple>

namespace lb::shm {

namespace {

constexpr int kSyncSingle = RTE_RING_SYNC_ST;
constexpr int kRingFlags = RING_F_SP_ENQ | RING_F_SC_DEQ;

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

std::string errno_text(int err) {
  return std::strerror(err);
}

uint64_t random64() {
  std::random_device rd;
  return uint64_t{rd()} << 32 ^ rd();
}

uint64_t new_epoch() {
  const auto now =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  const uint64_t e = random64() ^ now ^ static_cast<uint64_t>(getpid());
  return e != 0 ? e : 1;  // 0 is never an epoch: a header that says 0 is refused
}

uint32_t sync_type(const rte_ring_headtail& ht) {
  uint32_t v = 0;  // copied, not loaded as the enum: a corrupted value is no valid enumerator
  std::memcpy(&v, &ht.sync_type, sizeof v);
  return v;
}

enum class Role { kProducer, kConsumer };

// Why `r` cannot be used as a ring of `slots` elements by `role`, or "". DPDK indexes the
// elements with `mask` and wraps with `size`: both must be what we made before any enqueue or
// dequeue. Heads and tails are 32-bit counters: our own side's head equals its tail between
// operations (single producer, single consumer), and the distance to the other side's tail
// never exceeds the capacity.
std::string ring_problem(const rte_ring* r, uint32_t slots, Role role) {
  if (r->size != slots || r->mask != slots - 1 || r->capacity != slots - 1) {
    return "ring geometry corrupted (size " + std::to_string(r->size) + ", mask " +
           std::to_string(r->mask) + ", capacity " + std::to_string(r->capacity) + "; expected " +
           std::to_string(slots) + ", " + std::to_string(slots - 1) + ", " +
           std::to_string(slots - 1) + ")";
  }
  if (r->flags != kRingFlags || sync_type(r->prod) != kSyncSingle ||
      sync_type(r->cons) != kSyncSingle) {
    return "ring flags corrupted (flags " + std::to_string(r->flags) + ")";
  }
  // relaxed: only the distance is judged; the enqueue or dequeue that follows loads the other
  // side's tail again with the acquire DPDK pairs with that side's release.
  const uint32_t prod_head = __atomic_load_n(&r->prod.head, __ATOMIC_RELAXED);
  const uint32_t prod_tail = __atomic_load_n(&r->prod.tail, __ATOMIC_RELAXED);
  const uint32_t cons_head = __atomic_load_n(&r->cons.head, __ATOMIC_RELAXED);
  const uint32_t cons_tail = __atomic_load_n(&r->cons.tail, __ATOMIC_RELAXED);
  const bool ok = role == Role::kProducer
                      ? prod_head == prod_tail && prod_head - cons_tail <= slots - 1
                      : cons_head == cons_tail && prod_tail - cons_head <= slots - 1;
  if (!ok) {
    return "ring indexes corrupted (producer " + std::to_string(prod_head) + "/" +
           std::to_string(prod_tail) + ", consumer " + std::to_string(cons_head) + "/" +
           std::to_string(cons_tail) + ")";
  }
  return "";
}

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

void check_name(const std::string& name) {
  if (name.size() < 2 || name[0] != '/' || name.find('/', 1) != std::string::npos ||
      name.size() > 200)
    throw std::runtime_error("shared-memory name '" + name + "': expected /NAME");
}

}  // namespace

std::string segment_name(const std::string& instance) {
  return "/lbd-" + instance;
}

std::string segment_path(const std::string& name) {
  return "/dev/shm" + name;
}

size_t segment_size() {
  return layout().total;
}

std::string message_problem(const ServiceUpdate& u) {
  if (u.generation == 0 || u.generation > kMaxGeneration)
    return "update with impossible generation " + std::to_string(u.generation);
  return "";
}

std::string event_problem(const Event& e) {
  if (e.type != static_cast<uint32_t>(EventType::kSynRst) &&
      e.type != static_cast<uint32_t>(EventType::kSynTimeout))
    return "event of unknown type " + std::to_string(e.type);
  if (e.count == 0 || e.count > kMaxEventCount)
    return "event with impossible count " + std::to_string(e.count);
  const size_t len = strnlen(e.service, sizeof e.service);
  if (len == 0 || len == sizeof e.service) return "event with an empty or unterminated service";
  if (e.ip == 0 || e.port == 0) return "event for backend address 0";
  return "";
}

uint64_t plausible_pid(uint64_t pid) {
  return pid <= 4194304 ? pid : 0;  // PID_MAX_LIMIT on 64-bit Linux
}

Segment Segment::create(const std::string& name) {
  check_name(name);
  const Layout l = layout();
  const std::string path = segment_path(name);
  // Built under a fresh name nobody else can have made (O_EXCL, no symlink followed), then
  // renamed over whatever holds the real name: attachers see either the old file or this one,
  // complete, and a file another user left there is replaced, never used.
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    char suffix[24];
    std::snprintf(suffix, sizeof suffix, ".new-%016llx",
                  static_cast<unsigned long long>(random64()));
    tmp = path + suffix;
    fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST)
      throw std::runtime_error("cannot create " + tmp + ": " + errno_text(errno));
  }
  if (fd < 0) throw std::runtime_error("cannot create a fresh file beside " + path);
  struct stat st {};
  // open() applied the umask: the file gets exactly 0600.
  if (::fchmod(fd, 0600) != 0 || ::ftruncate(fd, static_cast<off_t>(l.total)) != 0 ||
      ::fstat(fd, &st) != 0) {
    const std::string err = errno_text(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot size " + tmp + ": " + err);
  }
  void* base = mmap(nullptr, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("mmap(" + tmp + "): " + errno_text(map_errno));
  }
  Segment s;
  s.name_ = name;
  s.base_ = base;
  s.size_ = l.total;
  s.dev_ = st.st_dev;
  s.inode_ = st.st_ino;
  auto* bytes = static_cast<uint8_t*>(base);
  s.updates_ = reinterpret_cast<rte_ring*>(bytes + l.update_offset);
  s.events_ = reinterpret_cast<rte_ring*>(bytes + l.event_offset);
  if (rte_ring_init(s.updates_, "lb_updates", kUpdateRingSlots, kRingFlags) != 0 ||
      rte_ring_init(s.events_, "lb_events", kEventRingSlots, kRingFlags) != 0) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("rte_ring_init on " + tmp + " failed");
  }
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
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    struct stat old {};
    const std::string whose =
        ::lstat(path.c_str(), &old) == 0 && old.st_uid != ::geteuid()
            ? " (it belongs to uid " + std::to_string(old.st_uid) + ": remove it)"
            : "";
    throw std::runtime_error("cannot put the segment in place at " + path + ": " + errno_text(err) +
                             whose);
  }
  return s;
}

Segment::Segment(Segment&& o) noexcept
    : name_(std::move(o.name_)),
      base_(o.base_),
      size_(o.size_),
      dev_(o.dev_),
      inode_(o.inode_),
      hdr_(o.hdr_),
      updates_(o.updates_),
      events_(o.events_),
      faults_(o.faults_),
      last_fault_(std::move(o.last_fault_)) {
  o.base_ = nullptr;
}

Segment::~Segment() {
  if (!base_) return;
  munmap(base_, size_);
  // Only our own file: a newer lbd may have put its segment in place of ours.
  const std::string path = segment_path(name_);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == inode_)
    ::unlink(path.c_str());
}

void Segment::fault(std::string why) {
  ++faults_;
  last_fault_ = std::move(why);
}

unsigned Segment::receive(ServiceUpdate* out, unsigned max) {
  if (std::string why = ring_problem(updates_, kUpdateRingSlots, Role::kConsumer); !why.empty()) {
    fault("update ring: " + why);
    return 0;
  }
  const unsigned n =
      rte_ring_sc_dequeue_burst_elem(updates_, out, sizeof(ServiceUpdate), max, nullptr);
  unsigned kept = 0;
  for (unsigned i = 0; i < n; ++i) {
    if (std::string why = message_problem(out[i]); !why.empty()) {
      fault(std::move(why));
      continue;
    }
    if (kept != i) out[kept] = out[i];
    ++kept;
  }
  return kept;
}

bool Segment::post(const Event& e) {
  if (std::string why = ring_problem(events_, kEventRingSlots, Role::kProducer); !why.empty()) {
    fault("event ring: " + why);
    return false;
  }
  return rte_ring_sp_enqueue_elem(events_, const_cast<Event*>(&e), sizeof(Event)) == 0;
}

std::optional<Attachment> Attachment::try_attach(const std::string& name, std::string& why) {
  const std::string path = segment_path(name);
  // O_NOFOLLOW: a symbolic link planted at the name is refused, not followed.
  const int fd = ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    why = path + ": " + errno_text(err) +
          (err == ENOENT  ? " (is lbd running?)"
           : err == ELOOP ? " (a symbolic link, not lbd's segment: refused)"
                          : "");
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    why = path + ": " + errno_text(errno);
    ::close(fd);
    return std::nullopt;
  }
  // lbd's segment is a regular file of our own user, mode 0600, with no other name: anything
  // else may have been made by another user for us to write the pool into or read events from.
  const uid_t euid = ::geteuid();
  std::string distrust;
  if (!S_ISREG(st.st_mode)) {
    distrust = "not a regular file";
  } else if (st.st_uid != euid) {
    distrust = "owned by uid " + std::to_string(st.st_uid) + ", not by uid " +
               std::to_string(euid) + " (lb-healthd's user, which lbd must run as)";
  } else if ((st.st_mode & 07777) != 0600) {
    distrust = "mode " + mode_text(st.st_mode) + ", not 0600";
  } else if (st.st_nlink != 1) {
    distrust = std::to_string(st.st_nlink) + " links, not 1";
  }
  if (!distrust.empty()) {
    ::close(fd);
    why = path + ": " + distrust + ": not lbd's segment, refused";
    return std::nullopt;
  }
  const Layout l = layout();
  if (static_cast<uint64_t>(st.st_size) != l.total) {
    ::close(fd);
    why = path + ": " + std::to_string(st.st_size) + " bytes, expected " + std::to_string(l.total) +
          ": lbd and lb-healthd must be the same build";
    return std::nullopt;
  }
  void* base = mmap(nullptr, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    why = "mmap(" + path + "): " + errno_text(map_errno);
    return std::nullopt;
  }
  Attachment a;
  a.name_ = name;
  a.base_ = base;
  a.size_ = l.total;
  a.dev_ = st.st_dev;
  a.inode_ = st.st_ino;
  a.hdr_ = static_cast<Header*>(base);
  const Header& h = *a.hdr_;
  // acquire pairs with the release of the magic in Segment::create().
  if (std::atomic_ref<uint64_t>(const_cast<uint64_t&>(h.magic)).load(std::memory_order_acquire) !=
      kMagic) {
    why = path + ": not an lbd segment, or not initialised yet";
    return std::nullopt;
  }
  if (h.version != kVersion || h.header_size != sizeof(Header) ||
      h.update_size != sizeof(ServiceUpdate) || h.event_size != sizeof(Event) ||
      h.total_size != l.total || h.update_ring_offset != l.update_offset ||
      h.event_ring_offset != l.event_offset) {
    why = path + ": ABI version " + std::to_string(h.version) + " (we speak " +
          std::to_string(kVersion) +
          ") or layout differs: lbd and lb-healthd must be the same build";
    return std::nullopt;
  }
  // relaxed: lbd's counters are only judged here; the daemon loads them again with acquire.
  const uint64_t generations[] = {h.received_generation.load(std::memory_order_relaxed),
                                  h.applied_generation.load(std::memory_order_relaxed),
                                  h.rejected_generation.load(std::memory_order_relaxed)};
  if (h.epoch == 0 || std::any_of(std::begin(generations), std::end(generations),
                                  [](uint64_t g) { return g > kMaxGeneration; })) {
    why = path + ": header corrupted (epoch or generations out of range): refused";
    return std::nullopt;
  }
  // The rings from our own layout (the header's offsets were checked equal to it).
  auto* bytes = static_cast<uint8_t*>(base);
  a.updates_ = reinterpret_cast<rte_ring*>(bytes + l.update_offset);
  a.events_ = reinterpret_cast<rte_ring*>(bytes + l.event_offset);
  for (const auto& [ring, slots, role, what] :
       {std::tuple{a.updates_, kUpdateRingSlots, Role::kProducer, "update ring"},
        std::tuple{a.events_, kEventRingSlots, Role::kConsumer, "event ring"}}) {
    if (std::string problem = ring_problem(ring, slots, role); !problem.empty()) {
      why = path + ": " + what + ": " + problem + ": refused";
      return std::nullopt;
    }
  }
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
    dev_ = o.dev_;
    inode_ = o.inode_;
    hdr_ = o.hdr_;
    updates_ = o.updates_;
    events_ = o.events_;
    broken_ = o.broken_;
    faults_ = o.faults_;
    last_fault_ = std::move(o.last_fault_);
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
  struct stat st {};
  return ::lstat(segment_path(name_).c_str(), &st) != 0 || st.st_dev != dev_ || st.st_ino != inode_;
}

void Attachment::fault(std::string why, bool breaks) {
  ++faults_;
  last_fault_ = std::move(why);
  broken_ = broken_ || breaks;
}

bool Attachment::send(const ServiceUpdate& u) {
  if (broken_) return false;
  if (std::string why = ring_problem(updates_, kUpdateRingSlots, Role::kProducer); !why.empty()) {
    fault("update ring: " + why, true);
    return false;
  }
  return rte_ring_sp_enqueue_elem(updates_, const_cast<ServiceUpdate*>(&u),
                                  sizeof(ServiceUpdate)) == 0;
}

unsigned Attachment::receive(Event* out, unsigned max) {
  if (broken_) return 0;
  if (std::string why = ring_problem(events_, kEventRingSlots, Role::kConsumer); !why.empty()) {
    fault("event ring: " + why, true);
    return 0;
  }
  const unsigned n = rte_ring_sc_dequeue_burst_elem(events_, out, sizeof(Event), max, nullptr);
  unsigned kept = 0;
  for (unsigned i = 0; i < n; ++i) {
    if (std::string why = event_problem(out[i]); !why.empty()) {
      fault(std::move(why), false);
      continue;
    }
    if (kept != i) out[kept] = out[i];
    ++kept;
  }
  return kept;
}

}  // namespace lb::shm
