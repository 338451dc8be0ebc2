#include "flow_memory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <span>
#include <stdexcept>
#include <tuple>

#include <nlohmann/json.hpp>

#include "log.h"
#include "pool_builder.h"
#include "snat.h"

namespace lb::dp {

namespace {

constexpr long kHugetlbfsMagic = 0x958458f6;  // linux/magic.h
constexpr long kTmpfsMagic = 0x01021994;
constexpr const char* kHugeDir = "/dev/hugepages";
constexpr const char* kShmDir = "/dev/shm";

std::string sys_error(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

struct FsInfo {
  long type = 0;
  size_t page = 0;  // the size the file is rounded to (the huge page size on hugetlbfs)
  bool ok = false;
};

FsInfo fs_info(const std::string& dir) {
  struct statfs s {};
  FsInfo fi;
  if (statfs(dir.c_str(), &s) != 0) return fi;
  fi.type = static_cast<long>(s.f_type);
  fi.page = fi.type == kHugetlbfsMagic ? static_cast<size_t>(s.f_bsize)
                                       : static_cast<size_t>(sysconf(_SC_PAGESIZE));
  fi.ok = true;
  return fi;
}

// Huge pages of `page` bytes nobody has taken or reserved.
uint64_t free_huge_pages(size_t page) {
  const std::string base =
      "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(page / 1024) + "kB/";
  auto read = [&](const char* f) {
    uint64_t v = 0;
    std::ifstream in(base + f);
    in >> v;
    return v;
  };
  const uint64_t free = read("free_hugepages");
  const uint64_t resv = read("resv_hugepages");
  return free > resv ? free - resv : 0;
}

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

}  // namespace

std::string services_file_name(const std::string& instance) {
  return "lbd-" + instance + "-services.json";
}

std::string flow_file_name(const std::string& instance, uint16_t worker) {
  return "lbd-" + instance + "-flows-" + std::to_string(worker);
}

std::string read_boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

uint64_t boottime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

core::FlowFileParams flow_file_params(const cfg::Config& config, uint16_t reta_size,
                                      uint64_t tsc_hz) {
  const cfg::DataplaneConfig& dc = config.dataplane;
  core::FlowFileParams p;
  p.capacity = dc.flows.capacity;
  p.workers = static_cast<uint16_t>(dc.workers);
  p.reta_size = reta_size;
  p.nports = static_cast<uint16_t>(dc.ports.size());
  // A flow names its ports by index: the same index must be the same port (its device may
  // change: a NIC replaced, af_xdp for af_packet).
  core::SettingsDigest d;
  for (const cfg::PortConfig& port : dc.ports) d.add(port.name).add(port.ip).add(port.prefix_len);
  // A full-NAT flow names its local address by index too (nothing added when there is none, so
  // a file made before full-NAT existed still matches).
  for (uint32_t addr : dc.fullnat_addresses) d.add(addr);
  if (!dc.fullnat_addresses.empty()) d.add(dc.fullnat_port_first).add(dc.fullnat_port_last);
  p.ports_digest = d.value();
  p.fullnat_addresses = static_cast<uint8_t>(dc.fullnat_addresses.size());
  p.fullnat_first = dc.fullnat_port_first;
  p.fullnat_last = dc.fullnat_port_last;
  p.tsc_hz = tsc_hz;
  p.boot_id = read_boot_id();
  return p;
}

struct FlowMemory::File {
  std::string path;
  int fd = -1;
  void* map = MAP_FAILED;
  size_t bytes = 0;
  bool attached = false;       // holds the table of a previous lbd
  bool discard_flows = false;  // lbd --fresh: its flows end, its full-NAT port holds stay
  bool hugetlbfs = false;
  // attach()'s work on an attached file, which table() finishes.
  bool prepared = false;
  std::optional<core::FlowTable> table;
  core::FlowTable::RepairReport repaired;
  int64_t shift = 0;
  uint32_t held = 0;       // full-NAT ports in use or waiting their hold
  uint32_t discarded = 0;  // --fresh: the flows it had
  uint32_t prev_pid = 0;
  bool prev_clean = false;

  ~File() {
    if (map != MAP_FAILED) munmap(map, bytes);
    if (fd >= 0) close(fd);  // releases the lock
  }
  core::FlowFileHeader& header() { return *static_cast<core::FlowFileHeader*>(map); }
  std::span<std::byte> region() {
    return {static_cast<std::byte*>(map) + core::kFlowFileHeaderBytes,
            static_cast<size_t>(header().table_bytes)};
  }
  std::span<uint64_t> port_holds() {
    auto* at = static_cast<std::byte*>(map) + core::kFlowFileHeaderBytes + header().table_bytes;
    return {reinterpret_cast<uint64_t*>(at), header().port_holds};
  }
  void map_whole(size_t n) {
    bytes = n;
    // MAP_POPULATE: the pages are there before the first packet, not faulted in by a worker.
    map = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) throw std::runtime_error(sys_error("cannot map " + path, errno));
    // Advisory: tmpfs gives huge pages only where shmem_enabled allows it.
    if (!hugetlbfs) madvise(map, n, MADV_HUGEPAGE);
  }
  void lock(const std::string& what) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return;
    if (errno == EWOULDBLOCK)
      throw std::runtime_error(what +
                               " is in use by another lbd (the same instance running twice?)");
    throw std::runtime_error(sys_error("cannot lock " + what, errno));
  }
};

namespace {

// Opens an existing file if it is one lbd may use; nullptr when there is none.
std::unique_ptr<FlowMemory::File> open_existing(const std::string& path) {
  auto f = std::make_unique<FlowMemory::File>();
  f->path = path;
  f->fd = open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (f->fd < 0) {
    if (errno == ENOENT) return nullptr;
    throw std::runtime_error(sys_error("cannot open flow table " + path, errno) +
                             " (a symbolic link is refused; remove it)");
  }
  struct stat st {};
  if (fstat(f->fd, &st) != 0) throw std::runtime_error(sys_error("cannot stat " + path, errno));
  if (!S_ISREG(st.st_mode))
    throw std::runtime_error("flow table " + path + " is not a regular file: remove it");
  if (st.st_uid != geteuid())
    throw std::runtime_error("flow table " + path + " belongs to uid " + std::to_string(st.st_uid) +
                             ", not to lbd's (" + std::to_string(geteuid()) +
                             "): refusing it; remove it if it is stale");
  if ((st.st_mode & 077) != 0)
    throw std::runtime_error("flow table " + path + " has mode 0" +
                             std::to_string((st.st_mode >> 6 & 7) * 100 +
                                            (st.st_mode >> 3 & 7) * 10 + (st.st_mode & 7)) +
                             ", lbd makes them 0600: refusing it; remove it");
  f->lock("flow table " + path);
  f->hugetlbfs = fs_info(path.substr(0, path.rfind('/'))).type == kHugetlbfsMagic;
  if (st.st_size < static_cast<off_t>(sizeof(core::FlowFileHeader))) {
    f->bytes = static_cast<size_t>(st.st_size);  // too short to map: the caller discards it
    return f;
  }
  f->map_whole(static_cast<size_t>(st.st_size));
  return f;
}

// Makes `dir`/`name` for `params`: under a temporary name, filled, then renamed into place.
std::unique_ptr<FlowMemory::File> create(const std::string& dir, const std::string& name,
                                         const core::FlowFileParams& params, uint64_t seed,
                                         const core::ClockPair& clock) {
  const FsInfo fi = fs_info(dir);
  if (!fi.ok) throw std::runtime_error(sys_error("flow table directory " + dir, errno));
  auto f = std::make_unique<FlowMemory::File>();
  f->hugetlbfs = fi.type == kHugetlbfsMagic;
  std::string tmp = dir + "/" + name + ".tmpXXXXXX";
  f->fd = mkostemp(tmp.data(), O_CLOEXEC);  // O_CREAT | O_EXCL, mode 0600
  if (f->fd < 0) throw std::runtime_error(sys_error("cannot create a file in " + dir, errno));
  f->path = tmp;
  try {
    // Locked before it has its name, so that no other lbd can take it in between.
    f->lock("flow table " + tmp);
    const size_t bytes =
        round_up(core::flow_file_bytes(params.capacity, params.port_holds), fi.page);
    // Reserved now: tmpfs or hugetlbfs running out later would be a SIGBUS on a worker.
    int rc = fallocate(f->fd, 0, 0, static_cast<off_t>(bytes));
    if (rc != 0 && errno == EOPNOTSUPP) rc = ftruncate(f->fd, static_cast<off_t>(bytes));
    if (rc != 0)
      throw std::runtime_error(sys_error(
          "cannot reserve " + std::to_string(bytes >> 20) + " MiB for a flow table in " + dir,
          errno));
    f->map_whole(bytes);
    core::FlowFileHeader& h = f->header();
    init_flow_file_header(h, params, seed, clock, static_cast<uint64_t>(time(nullptr)),
                          static_cast<uint32_t>(getpid()));
    // The region is zero, which is an empty table to FlowTable::repair() should this process
    // die before table() sets it up.
    std::atomic_thread_fence(std::memory_order_release);  // the magic last: the file is whole
    std::memcpy(h.magic, core::kFlowFileMagic, sizeof h.magic);
    const std::string path = dir + "/" + name;
    if (rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error(sys_error("cannot rename " + tmp + " to " + path, errno));
    f->path = path;
  } catch (...) {
    unlink(tmp.c_str());
    throw;
  }
  return f;
}

}  // namespace

FlowMemory::FlowMemory(const FlowMemoryOptions& options, const core::FlowFileParams& params,
                       uint64_t seed, const core::ClockPair& clock)
    : params_(params), seed_(seed) {
  if (options.instance.empty()) return;
  std::vector<std::string> dirs;  // where a table may be, in order of preference
  // The services' names go beside the tables, on tmpfs (hugetlbfs files cannot be written).
  services_path_ = std::string(kShmDir) + "/" + services_file_name(options.instance);
  if (!options.directory.empty()) {
    const FsInfo fi = fs_info(options.directory);
    if (!fi.ok)
      throw std::runtime_error(sys_error("dataplane.flows.directory " + options.directory, errno));
    if (fi.type != kHugetlbfsMagic && fi.type != kTmpfsMagic)
      throw std::runtime_error("dataplane.flows.directory " + options.directory +
                               " is neither hugetlbfs nor tmpfs: flow tables must stay in memory");
    dirs.push_back(options.directory);
    if (fi.type == kTmpfsMagic)
      services_path_ = options.directory + "/" + services_file_name(options.instance);
  } else {
    if (fs_info(kHugeDir).type == kHugetlbfsMagic) dirs.push_back(kHugeDir);
    dirs.push_back(kShmDir);
  }
  for (uint16_t w = 0; w < params.workers; ++w) {
    core::FlowFileParams p = params;
    p.worker = w;
    p.port_holds = p.fullnat_addresses * core::SnatPorts::ports_per_address(
                                             w, p.workers, p.fullnat_first, p.fullnat_last);
    const std::string name = flow_file_name(options.instance, w);
    std::unique_ptr<File> file;
    for (const std::string& dir : dirs) {
      const std::string path = dir + "/" + name;
      if (!exists(path)) continue;
      std::unique_ptr<File> f = open_existing(path);  // throws if not ours, or in use
      if (!f) continue;
      std::string why = f->map == MAP_FAILED ? "the file is " + std::to_string(f->bytes) +
                                                   " bytes, shorter than a header"
                                             : core::flow_file_mismatch(f->header(), f->bytes, p);
      if (why.empty() && !file) {
        // --fresh: its flows are discarded in table(), not its full-NAT ports' holds (the
        // backends' TIME_WAIT does not know lbd restarted).
        f->attached = true;
        f->discard_flows = options.fresh;
        file = std::move(f);
        continue;
      }
      if (why.empty()) why = "a table for this worker was found in " + file->path;
      LB_LOG(NOTICE, "discarding flow table %s: %s", path.c_str(), why.c_str());
      if (unlink(path.c_str()) != 0)
        throw std::runtime_error(sys_error("cannot remove " + path, errno));
    }
    if (!file) {
      const size_t bytes = core::flow_file_bytes(p.capacity, p.port_holds);
      std::string dir = dirs.back();
      for (const std::string& d : dirs) {
        const FsInfo fi = fs_info(d);
        if (fi.type != kHugetlbfsMagic ||
            free_huge_pages(fi.page) >= round_up(bytes, fi.page) / fi.page) {
          dir = d;
          break;
        }
        LB_LOG(NOTICE, "%s has fewer than the %zu free huge pages worker %u's flow table needs",
               d.c_str(), round_up(bytes, fi.page) / fi.page, w);
      }
      try {
        file = create(dir, name, p, seed_, clock);
      } catch (const std::exception& e) {
        if (dir == dirs.back()) throw;
        LB_LOG(NOTICE, "%s; trying %s", e.what(), dirs.back().c_str());
        file = create(dirs.back(), name, p, seed_, clock);
      }
    }
    files_.push_back(std::move(file));
  }
  // The files of workers this lbd does not have (the last one had more): nobody takes them
  // over, and left in place they would hold their memory for good, and their flows for a
  // later lbd with as many workers again. Discarded like any file that does not fit.
  for (uint32_t w = params.workers; w < core::kMaxWorkers; ++w) {
    const std::string name = flow_file_name(options.instance, static_cast<uint16_t>(w));
    for (const std::string& dir : dirs) {
      const std::string path = dir + "/" + name;
      if (!exists(path)) continue;
      open_existing(path);  // throws if not ours, or in use by another lbd
      LB_LOG(NOTICE, "discarding flow table %s: this lbd has %u workers", path.c_str(),
             params.workers);
      if (unlink(path.c_str()) != 0)
        throw std::runtime_error(sys_error("cannot remove " + path, errno));
    }
  }
}

FlowMemory::~FlowMemory() = default;

void FlowMemory::attach(const cfg::DataplaneConfig& dataplane, const core::ClockPair& clock) {
  for (uint16_t w = 0; w < files_.size(); ++w) {
    File& f = *files_[w];
    if (!f.attached || f.prepared) continue;
    f.prepared = true;
    core::FlowFileHeader& h = f.header();
    f.prev_pid = h.pid;
    f.prev_clean = h.clean != 0;
    h.clean = 0;
    h.pid = static_cast<uint32_t>(getpid());
    f.table.emplace(params_.capacity, h.hash_seed, f.region(), core::FlowTable::Region::kAttach,
                    &f.repaired);
    f.shift = core::flow_clock_shift(core::recorded_clock(h), clock, h.tsc_hz);
    record_clock(h, clock);
    f.held = core::restore_port_holds(f.port_holds(), *f.table, clock.tsc, f.shift,
                                      dataplane.flows.fullnat_port_hold * params_.tsc_hz,
                                      f.discard_flows, [&](const core::Flow& fl) {
                                        return core::SnatPorts::hold_index(
                                            fl.local_addr, fl.local_port, w, params_.workers,
                                            params_.fullnat_addresses, params_.fullnat_first,
                                            params_.fullnat_last);
                                      });
    if (f.discard_flows) {
      f.discarded = f.table->size();
      f.table->reset();
    }
  }
}

std::vector<FlowTarget> FlowMemory::targets() const {
  std::vector<FlowTarget> out;
  for (const auto& f : files_) {
    if (!f->table || f->discard_flows) continue;
    const core::FlowTable& t = *f->table;
    for (uint32_t idx = 0; idx < t.capacity(); ++idx) {
      const core::Flow& fl = t.at(idx);
      // A reset record names no backend (it only answers late segments with RSTs).
      if (!fl.in_use || fl.state == core::TcpState::kReset) continue;
      out.push_back({fl.vip, fl.vport, fl.backend_ip, fl.backend_port});
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

core::FlowTable FlowMemory::table(uint16_t w, const core::Pool& first, const PoolBuilder& builder,
                                  const core::NeighborTable& neighbors,
                                  const cfg::DataplaneConfig& dataplane,
                                  const core::ClockPair& clock) {
  if (files_.empty()) return core::FlowTable(params_.capacity, seed_);
  File& f = *files_.at(w);
  core::FlowFileHeader& h = f.header();
  const double mib = static_cast<double>(f.bytes) / (1 << 20);
  if (!f.attached) {
    core::FlowTable t(params_.capacity, h.hash_seed, f.region(), core::FlowTable::Region::kFresh);
    h.pid = static_cast<uint32_t>(getpid());
    record_clock(h, clock);
    LB_LOG(INFO, "worker %u: new flow table %s (%.1f MiB%s)", w, f.path.c_str(), mib,
           f.hugetlbfs ? ", huge pages" : "");
    return t;
  }
  attach(dataplane, clock);  // unless the caller has (to learn the flows' targets() first)
  core::FlowTable t = std::move(*f.table);
  f.table.reset();
  const uint32_t prev_pid = f.prev_pid;
  const bool prev_clean = f.prev_clean;
  const core::FlowTable::RepairReport repaired = f.repaired;
  const int64_t shift = f.shift;
  const uint32_t held = f.held;
  if (f.discard_flows) {
    LB_LOG(NOTICE,
           "worker %u: lbd --fresh: %u flows of %s (left by lbd pid %u) discarded; %u full-NAT "
           "ports wait their hold (flows.fullnat_port_hold) before they are used again",
           w, f.discarded, f.path.c_str(), prev_pid, held);
    return t;
  }

  // This process's ids for each service and backend the flows name, by address.
  std::map<std::tuple<uint32_t, uint16_t, uint32_t, uint16_t>, core::FlowBinding> known;
  const std::vector<BackendInfo> registry = builder.backends();
  auto bind = [&](const core::Flow& fl) {
    const auto key = std::make_tuple(fl.vip, fl.vport, fl.backend_ip, fl.backend_port);
    if (auto it = known.find(key); it != known.end()) return it->second;
    core::FlowBinding b;
    if (const core::PoolService* svc = first.find(fl.vip, fl.vport)) {
      b.service = core::raw(svc->id);
      for (uint32_t id = 0; id < registry.size(); ++id) {
        const BackendInfo& r = registry[id];
        if (!r.live || r.service != svc->id || r.ip != fl.backend_ip || r.port != fl.backend_port ||
            !first.serving(static_cast<core::BackendId>(id)))
          continue;
        // Every backend of the first pool was routed when it was built (PoolBuilder::build).
        if (r.neighbor == core::NeighborTable::kNone) break;
        b.backend = static_cast<core::BackendId>(id);
        b.backend_port_id = neighbors.port(r.neighbor);
        b.neighbor = r.neighbor;
        break;
      }
    }
    if (b.backend == core::kGoneBackend) {
      // Its late segments are answered with RSTs out of the port that reaches it.
      if (const cfg::PortConfig* port = cfg::egress_port(dataplane, fl.backend_ip))
        b.backend_port_id = static_cast<uint16_t>(port - dataplane.ports.data());
      else
        b.backend_port_id = fl.backend_port_id < params_.nports ? fl.backend_port_id : 0;
    }
    known.emplace(key, b);
    return b;
  };
  const core::RestoreReport r = core::restore_flows(t, clock.tsc, shift, bind);
  LB_LOG(INFO,
         "worker %u: re-attached flow table %s (%.1f MiB%s), left by lbd pid %u (%s): %u flows "
         "go on, %u of them to backends this pool does not have (reset on their next packet); "
         "%u ended while lbd was down; repaired %u index entries and %u records",
         w, f.path.c_str(), mib, f.hugetlbfs ? ", huge pages" : "", prev_pid,
         prev_clean ? "stopped cleanly" : "did not stop cleanly", r.kept, r.gone, r.expired,
         repaired.refs_dropped, repaired.records_dropped);
  if (!f.port_holds().empty())
    LB_LOG(INFO, "worker %u: %u full-NAT ports in use or waiting their hold", w, held);
  if (shift != 0)
    LB_LOG(NOTICE,
           "worker %u: the tick counter did not keep pace with the clock while lbd was "
           "down; deadlines moved by %lld ticks",
           w, static_cast<long long>(shift));
  return t;
}

size_t keep_restored_backends(PoolState& state, const std::vector<FlowTarget>& targets,
                              const std::vector<NamedService>& named) {
  size_t added = 0;
  for (const FlowTarget& t : targets) {
    const bool served = std::any_of(state.begin(), state.end(), [&](const auto& e) {
      return e.second.vip == t.vip && e.second.port == t.vport;
    });
    if (!served) {
      // A service added at run time: back under its name, with no backend taking new flows.
      const auto n = std::find_if(named.begin(), named.end(), [&](const NamedService& x) {
        return x.vip == t.vip && x.port == t.vport;
      });
      const std::string address = cfg::format_ipv4(t.vip) + ":" + std::to_string(t.vport);
      if (n == named.end()) {
        LB_LOG(NOTICE,
               "restored flows go to %s, which is no service of the file's and was not "
               "recorded by the last lbd: they are reset on their next packet",
               address.c_str());
        continue;
      }
      if (state.count(n->name) != 0 || state.size() >= core::kMaxServices) {
        LB_LOG(NOTICE,
               "restored flows go to %s, service %s when the last lbd ran, a name the file now "
               "gives another address: they are reset on their next packet",
               address.c_str(), n->name.c_str());
        continue;
      }
      ServiceState s;
      s.vip = t.vip;
      s.port = t.vport;
      s.forward = n->forward;
      state.emplace(n->name, std::move(s));
      LB_LOG(INFO,
             "restored flows go to %s, service %s (added at run time, not in the file): it takes "
             "no new connection until lb-healthd pushes its state",
             address.c_str(), n->name.c_str());
    }
    for (auto& [name, s] : state) {
      if (s.vip != t.vip || s.port != t.vport) continue;
      const bool listed = std::any_of(s.backends.begin(), s.backends.end(), [&](const auto& b) {
        return b.ip == t.backend_ip && b.port == t.backend_port;
      });
      if (listed || s.backends.size() >= shm::kMaxBackendsPerService) break;
      s.backends.push_back({t.backend_ip, t.backend_port, 1, shm::BackendState::kDraining});
      LB_LOG(INFO,
             "service %s: restored flows go to %s:%u, which the file does not list: draining "
             "until lb-healthd says whether it runs",
             name.c_str(), cfg::format_ipv4(t.backend_ip).c_str(), t.backend_port);
      ++added;
      break;
    }
  }
  return added;
}

namespace {

const char* const kForwards[] = {"dnat", "tunnel", "fullnat"};  // by cfg::Forward

// Checks `path` as the flow tables' files are checked (a regular file of lbd's user that nobody
// else may write, no symbolic link) and reads it, up to `limit` bytes. nullopt: no such file.
std::optional<std::string> read_own_file(const std::string& path, size_t limit) {
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw std::runtime_error(sys_error("cannot open it", errno));
  }
  struct stat st {};
  std::string text;
  try {
    if (fstat(fd, &st) != 0) throw std::runtime_error(sys_error("cannot stat it", errno));
    if (!S_ISREG(st.st_mode)) throw std::runtime_error("not a regular file");
    if (st.st_uid != geteuid() || (st.st_mode & 022) != 0)
      throw std::runtime_error("another user's, or writable by others");
    if (static_cast<uint64_t>(st.st_size) > limit)
      throw std::runtime_error(std::to_string(st.st_size) + " bytes, more than any lbd writes");
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
      const ssize_t r = read(fd, text.data() + got, text.size() - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw std::runtime_error(sys_error("cannot read it", errno));
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    text.resize(got);
  } catch (...) {
    close(fd);
    throw;
  }
  close(fd);
  return text;
}

}  // namespace

std::vector<NamedService> FlowMemory::recorded_services() const {
  if (services_path_.empty()) return {};
  std::vector<NamedService> out;
  try {
    // About 100 bytes a service, at most kMaxServices of them.
    const std::optional<std::string> text = read_own_file(services_path_, 1 << 20);
    if (!text) return {};
    const nlohmann::json j = nlohmann::json::parse(*text);
    const nlohmann::json& list = j.at("services");
    if (!list.is_array() || list.size() > core::kMaxServices)
      throw std::runtime_error("\"services\" is not a list of at most " +
                               std::to_string(core::kMaxServices));
    for (const nlohmann::json& e : list) {
      NamedService n;
      n.name = e.at("name").get<std::string>();
      const std::optional<uint32_t> vip = cfg::parse_ipv4(e.at("vip").get<std::string>());
      const auto port = e.at("port").get<int64_t>();
      const auto forward = e.at("forward").get<std::string>();
      const auto f = std::find(std::begin(kForwards), std::end(kForwards), forward);
      if (n.name.empty() || n.name.size() >= shm::kNameLen || !vip || *vip == 0 || port < 1 ||
          port > 65535 || f == std::end(kForwards))
        throw std::runtime_error("a malformed service: " + e.dump());
      n.vip = *vip;
      n.port = static_cast<uint16_t>(port);
      n.forward = static_cast<cfg::Forward>(f - std::begin(kForwards));
      out.push_back(std::move(n));
    }
  } catch (const std::exception& e) {
    LB_LOG(WARNING, "ignoring %s (%s): restored flows of services added at run time will be reset",
           services_path_.c_str(), e.what());
    return {};
  }
  return out;
}

void FlowMemory::record_services(const PoolState& state) {
  if (services_path_.empty()) return;
  std::vector<NamedService> now;
  for (const auto& [name, s] : state) now.push_back({name, s.vip, s.port, s.forward});
  if (recorded_ && *recorded_ == now) return;
  nlohmann::json list = nlohmann::json::array();
  for (const NamedService& n : now)
    list.push_back({{"name", n.name},
                    {"vip", cfg::format_ipv4(n.vip)},
                    {"port", n.port},
                    {"forward", kForwards[static_cast<size_t>(n.forward)]}});
  const std::string text =
      nlohmann::json{{"written_by", "lbd " + std::to_string(getpid())}, {"services", list}}.dump(
          1) +
      "\n";
  // Made whole under a temporary name, then renamed over the old one: a reader sees one or
  // the other.
  std::string tmp = services_path_ + ".tmpXXXXXX";
  const int fd = mkostemp(tmp.data(), O_CLOEXEC);  // mode 0600
  std::string error;
  if (fd < 0) {
    error = sys_error("cannot create " + tmp, errno);
  } else {
    size_t put = 0;
    while (put < text.size() && error.empty()) {
      const ssize_t w = write(fd, text.data() + put, text.size() - put);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0)
        error = sys_error("cannot write " + tmp, errno);
      else
        put += static_cast<size_t>(w);
    }
    close(fd);
    if (error.empty() && rename(tmp.c_str(), services_path_.c_str()) != 0)
      error = sys_error("cannot rename " + tmp + " to " + services_path_, errno);
    if (!error.empty()) unlink(tmp.c_str());
  }
  if (!error.empty()) {
    if (!record_failed_)
      LB_LOG(WARNING,
             "%s: a restart of lbd would reset the flows of services added at run time "
             "(retried at the next pool change)",
             error.c_str());
    record_failed_ = true;
    recorded_.reset();
    return;
  }
  if (record_failed_) LB_LOG(INFO, "recorded the services' names in %s", services_path_.c_str());
  record_failed_ = false;
  recorded_ = std::move(now);
}

std::span<uint64_t> FlowMemory::port_holds(uint16_t w) {
  if (files_.empty()) return {};
  return files_.at(w)->port_holds();
}

void FlowMemory::tick(const core::ClockPair& clock) {
  if (files_.empty() || clock.tsc < next_tick_) return;
  next_tick_ = clock.tsc + params_.tsc_hz;
  for (auto& f : files_) record_clock(f->header(), clock);
}

void FlowMemory::stopped_cleanly(const core::ClockPair& clock) {
  for (auto& f : files_) {
    record_clock(f->header(), clock);
    f->header().clean = 1;
  }
}

}  // namespace lb::dp
