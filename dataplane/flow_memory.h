#pragma once
// Where the workers' flow tables live: one file per instance and worker,
// <directory>/lbd-<instance>-flows-<worker>, that lbd maps itself (MAP_SHARED) and that outlives
// it, so that a restarted lbd (kill -9, crash, upgrade, SIGTERM) re-attaches the tables and every
// established connection goes on. The layout and the rules that decide whether a file may be
// taken over are core/flow_store.h's; this part makes, checks, maps and locks the files.
//
// - Directory: hugetlbfs (/dev/hugepages) when it is mounted and has free pages for the table
//   (the flow table is touched at random: TLB reach matters), else POSIX shared memory
//   (/dev/shm, advised to use transparent huge pages where the kernel allows), unless
//   dataplane.flows.directory names one.
// - Safety: files are made under a temporary name (O_CREAT|O_EXCL, mode 0600), filled, and
//   renamed into place; existing ones are opened with O_NOFOLLOW and refused unless they are
//   regular files of lbd's user that nobody else may write. Each is locked (flock) for the life
//   of the process: a second lbd of the same instance is refused instead of sharing a table.
// - Files are kept when lbd exits, cleanly or not; lbd --fresh discards them on purpose, and a
//   file that does not fit (core::flow_file_mismatch) is discarded with a log line saying why.
//
// Control thread only; nothing here runs on the packet path.

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flow_store.h"
#include "flow_table.h"
#include "lb_config.h"
#include "neighbor.h"
#include "pool.h"

namespace lb::dp {

class PoolBuilder;
struct ServiceState;
using PoolState = std::map<std::string, ServiceState>;

// A service address and a backend that a restored flow names.
struct FlowTarget {
  uint32_t vip;
  uint16_t vport;
  uint32_t backend_ip;
  uint16_t backend_port;
  friend auto operator<=>(const FlowTarget&, const FlowTarget&) = default;
};

// Adds to `state` (the config file's pool, which lbd starts from) each backend restored flows
// name that its service (by VIP:port) does not list, as draining: lbd's first pool comes from
// the file, and the running state lb-healthd pushes within moments of attaching may have
// backends the file has not (lbctl backend add). Their flows go on until lb-healthd's state
// says the backend is gone (then they are reset, as when it is removed). Returns how many were
// added. A flow whose VIP:port is no service of the file's is left to be reset.
//
// A flow whose VIP:port is no service of the file's belongs to a service added at run time
// (lbctl service add): `named` (what the last lbd recorded, FlowMemory::recorded_services())
// gives that service's name, and it is added to `state` under it, with the backends its flows
// name draining (no new flows), so that lb-healthd's push of the same name takes it over and
// the flows go on. Without a name for it, or with the name now another address's, its flows
// are left to be reset.
struct NamedService {
  std::string name;
  uint32_t vip = 0;
  uint16_t port = 0;
  cfg::Forward forward = cfg::Forward::kDnat;
  friend bool operator==(const NamedService&, const NamedService&) = default;
};
size_t keep_restored_backends(PoolState& state, const std::vector<FlowTarget>& targets,
                              const std::vector<NamedService>& named = {});

struct FlowMemoryOptions {
  std::string instance;   // empty: anonymous memory, the tables end with the process
  std::string directory;  // empty: /dev/hugepages if it has room, else /dev/shm
  bool fresh = false;     // discard the tables a previous lbd left (not the full-NAT port holds)
  // Where each worker's ring of free full-NAT ports begins (core::SnatPorts::Memory::start);
  // unset: at random, per process. Tests fix it.
  std::optional<uint32_t> fullnat_port_start;
};

// The file name of `worker`'s table for `instance` (without directory).
std::string flow_file_name(const std::string& instance, uint16_t worker);
// /proc/sys/kernel/random/boot_id, without its newline.
std::string read_boot_id();
// CLOCK_BOOTTIME in nanoseconds.
uint64_t boottime_ns();
// What a table file must have been made for to be taken over by lbd running `config` (every
// worker; the caller sets FlowFileParams::worker).
core::FlowFileParams flow_file_params(const cfg::Config& config, uint16_t reta_size,
                                      uint64_t tsc_hz);

class FlowMemory {
 public:
  // `params` without its worker (set per file). Opens or makes every worker's file; `seed` keys
  // the tables that are made new; `clock` is now. Throws std::runtime_error with what to do when
  // a file is another user's, is used by another lbd, or cannot be made.
  FlowMemory(const FlowMemoryOptions& options, const core::FlowFileParams& params, uint64_t seed,
             const core::ClockPair& clock);
  ~FlowMemory();
  FlowMemory(const FlowMemory&) = delete;
  FlowMemory& operator=(const FlowMemory&) = delete;

  bool persistent() const { return !files_.empty(); }

  // Takes over the tables of the files a previous lbd left (repaired, deadlines moved to this
  // process's clock, full-NAT holds restored; --fresh discards their flows here), before
  // table() gives them this process's ids. table() does it if the caller has not.
  void attach(const cfg::DataplaneConfig& dataplane, const core::ClockPair& clock);
  // After attach(): what the flows taken over name, each once (see keep_restored_backends).
  std::vector<FlowTarget> targets() const;

  // The services (name and address) the last lbd of this instance ran, as it recorded them
  // beside its tables (<shm>/lbd-<instance>-services.json); empty without one or when it cannot
  // be read (logged). The tables' flows name services by address only: this names those added
  // at run time, which the file does not have (keep_restored_backends).
  std::vector<NamedService> recorded_services() const;
  // Control thread, whenever the pool state changes: records its services' names and
  // addresses for the next lbd (written only when they changed; a failure is logged, never
  // thrown: the flows go on, only a later restart would reset those of runtime services).
  void record_services(const PoolState& state);

  // Worker w's table, once: a re-attached one is repaired (core::FlowTable::repair) and its flows
  // given this process's ids from `first` and `builder` (core::restore_flows): a flow whose
  // service or backend the pool does not have gets core::kGoneBackend and is reset on its next
  // packet. `clock` is now: this process's tick and CLOCK_BOOTTIME, read together.
  core::FlowTable table(uint16_t w, const core::Pool& first, const PoolBuilder& builder,
                        const core::NeighborTable& neighbors, const cfg::DataplaneConfig& dataplane,
                        const core::ClockPair& clock);

  // Worker w's full-NAT port hold times, kept in its file after the table (core/snat.h,
  // SnatPorts::Memory::holds); empty when the tables are not persistent. Valid after table(w).
  std::span<uint64_t> port_holds(uint16_t w);

  // Control thread, at every tick (it does the work once a second): records the clock in every
  // header, so that the next lbd knows how long this one has been gone.
  void tick(const core::ClockPair& clock);
  // After the workers have stopped for good: the tables are whole.
  void stopped_cleanly(const core::ClockPair& clock);

  struct File;  // one mapped, locked file (flow_memory.cc)

 private:
  std::vector<std::unique_ptr<File>> files_;
  core::FlowFileParams params_;
  uint64_t seed_;
  uint64_t next_tick_ = 0;
  std::string services_path_;                          // empty when the tables are not persistent
  std::optional<std::vector<NamedService>> recorded_;  // what services_path_ holds, once written
  bool record_failed_ = false;                         // logged once until a write succeeds
};

}  // namespace lb::dp
