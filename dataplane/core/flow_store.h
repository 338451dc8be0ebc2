#pragma once
// The layout of a file that keeps one worker's flow table across lbd restarts, and what decides
// whether a new lbd may take it over. dataplane/flow_memory.h makes, maps and locks the files;
// this part is pure (no system calls) so that every rule is unit tested.
//
//   [0, kFlowFileHeaderBytes)   FlowFileHeader
//   [kFlowFileHeaderBytes, ..)  FlowTable's region (records | index | free list), by index only
//   then port_holds x uint64    the full-NAT ports' hold times (core/snat.h, SnatPorts::Memory),
//                               in ticks: the backends' TIME_WAIT outlives lbd
//
// A table is taken over only when everything a flow's meaning depends on is the same: the layout
// of Flow and of the index (kFlowFileLayout, sizes), the capacity, which worker owns which client
// (workers, RETA size), what a flow's port numbers refer to (the ports, by digest) and the clock
// its deadlines are in (boot, TSC rate). Ids a process hands out (backends, services, next-hop
// slots) are not kept: restore_flows() gives each flow this process's ids from what it stores
// durably (addresses and ports).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "flow_table.h"
#include "ids.h"

namespace lb::core {

inline constexpr char kFlowFileMagic[8] = {'L', 'B', 'D', 'F', 'L', 'O', 'W', 'S'};
// Bump on any change to Flow, the index, the region's layout or this header.
inline constexpr uint32_t kFlowFileLayout = 3;  // 3: full-NAT port holds after the table
inline constexpr size_t kFlowFileHeaderBytes = 4096;

// The tick clock (TSC) and CLOCK_BOOTTIME, read together.
struct ClockPair {
  uint64_t tsc;
  uint64_t boot_ns;  // CLOCK_BOOTTIME: counts while the machine is suspended, as timeouts should
};

struct FlowFileHeader {
  char magic[8];  // written last when a file is made: a file without it was never finished
  uint32_t layout;
  uint32_t header_bytes;  // where the table region starts
  uint32_t flow_bytes;    // sizeof(Flow)
  uint32_t capacity;
  uint64_t table_bytes;  // FlowTable::region_bytes(capacity)
  uint64_t hash_seed;    // the table's: its index is only valid with it
  uint16_t worker;
  uint16_t workers;
  uint16_t reta_size;
  uint16_t nports;
  uint64_t ports_digest;  // settings_digest() of the ports' names and addresses
  uint64_t tsc_hz;
  char boot_id[40];  // /proc/sys/kernel/random/boot_id, NUL-padded
  // The clock, refreshed by the control thread: clock[clock_slot] is a pair read together (the
  // other slot is the one being written).
  ClockPair clock[2];
  uint32_t clock_slot;
  uint32_t pid;             // the lbd that last attached
  uint64_t created_unix_s;  // when the file was made
  uint32_t clean;           // 1: the last lbd stopped its workers before it exited
  uint32_t port_holds;      // full-NAT ports whose hold times follow the table
};
static_assert(sizeof(FlowFileHeader) <= kFlowFileHeaderBytes);
static_assert(offsetof(FlowFileHeader, layout) == 8 && offsetof(FlowFileHeader, capacity) == 20,
              "the magic, layout and capacity stay where every version reads them");
static_assert(kFlowFileHeaderBytes % 64 == 0, "the table region starts on a cache line");

// What a new lbd would write, and so expects of a file it takes over.
struct FlowFileParams {
  uint32_t capacity = 0;
  uint16_t worker = 0;
  uint16_t workers = 1;
  uint16_t reta_size = 0;
  uint16_t nports = 0;
  uint64_t ports_digest = 0;  // covers the full-NAT addresses and port range too
  uint32_t port_holds = 0;    // this worker's full-NAT ports (SnatPorts::Memory::holds)
  // The full-NAT geometry port_holds follows from, per worker (FlowMemory sets it per file).
  uint8_t fullnat_addresses = 0;
  uint16_t fullnat_first = 0;
  uint16_t fullnat_last = 0;
  uint64_t tsc_hz = 0;
  std::string boot_id;
};

// Bytes of the file for `capacity` flows before rounding to the page size.
size_t flow_file_bytes(uint32_t capacity, uint32_t port_holds = 0);

// Empty when `h` (of a file of `file_bytes`) may be taken over by a process with `p`; otherwise
// why not, for the log ("capacity 65536, the config now says 131072").
std::string flow_file_mismatch(const FlowFileHeader& h, uint64_t file_bytes,
                               const FlowFileParams& p);

// A new header for `p` and `seed`, without its magic (set it once the table is in place).
void init_flow_file_header(FlowFileHeader& h, const FlowFileParams& p, uint64_t seed,
                           const ClockPair& now, uint64_t unix_s, uint32_t pid);

// Records `now` in the slot not in use, then makes it the one in use (control thread).
void record_clock(FlowFileHeader& h, const ClockPair& now);
ClockPair recorded_clock(const FlowFileHeader& h);

// Ticks to add to the deadlines of a table whose clock was last recorded as `then`, so that a
// flow has the time it had left less the time that passed meanwhile (by CLOCK_BOOTTIME): 0 when
// the tick counter kept pace (within 1 s or 1 % of the time between, the TSC rate being known
// to ~0.5 %), else the difference (a TSC that was reset or jumped, a suspended VM).
int64_t flow_clock_shift(const ClockPair& then, const ClockPair& now, uint64_t tsc_hz);

// FNV-1a over what flows' port numbers refer to, for FlowFileHeader::ports_digest.
class SettingsDigest {
 public:
  SettingsDigest& add(std::string_view s);
  SettingsDigest& add(uint64_t v);
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
};

// What this process calls the backend, service and route of a restored flow.
struct FlowBinding {
  BackendId backend = kGoneBackend;  // kGoneBackend: the backend is not known any more
  uint16_t service = kMaxServices;   // kMaxServices: no such service any more
  // Where the backend is reached; not used for a gone one (its flows are only ever reset).
  uint16_t backend_port_id = 0;
  uint16_t neighbor = 0;
};

struct RestoreReport {
  uint32_t kept = 0;     // flows that go on (gone ones included)
  uint32_t expired = 0;  // past their deadline: they ended while lbd was down
  uint32_t gone = 0;     // kept, but their backend is not known: reset on their next packet
};

// Makes the flows of a re-attached table this process's: moves their deadlines by `shift`
// ticks, erases those due at `now`, sets backend, service, port and next hop from `bind`, and
// numbers them 1..kept (creation numbers key the SYN cache, which a new process starts empty).
RestoreReport restore_flows(FlowTable& table, Tick now, int64_t shift,
                            const std::function<FlowBinding(const Flow&)>& bind);

// Makes the full-NAT port hold times of a re-attached file this process's, before
// restore_flows(): moves them by `shift`, and gives each port a flow of `table` holds the time it
// may be handed out again once that flow ends: its deadline (shifted) + `hold`, or `now` + `hold`
// when the flows end now (lbd --fresh discards them). `index` says which of `holds` is a flow's
// port (SnatPorts::hold_index), or any value >= holds.size() when none is. Returns how many ports
// may not be handed out at `now` (held by a flow that goes on, or waiting their hold).
uint32_t restore_port_holds(std::span<uint64_t> holds, const FlowTable& table, Tick now,
                            int64_t shift, Tick hold, bool flows_end_now,
                            const std::function<size_t(const Flow&)>& index);

}  // namespace lb::core
