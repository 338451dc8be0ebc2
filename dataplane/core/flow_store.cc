#include "flow_store.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace lb::core {

namespace {

std::string num(uint64_t v) {
  return std::to_string(v);
}

// `t` moved by `shift` ticks, 0 when that would go below 0 (it is then long past).
Tick shifted(Tick t, int64_t shift) {
  if (shift < 0 && t < static_cast<uint64_t>(-(shift + 1)) + 1) return 0;
  return t + static_cast<uint64_t>(shift);
}

std::string_view boot_id_of(const FlowFileHeader& h) {
  return {h.boot_id, strnlen(h.boot_id, sizeof h.boot_id)};
}

}  // namespace

size_t flow_file_bytes(uint32_t capacity, uint32_t port_holds) {
  return kFlowFileHeaderBytes + FlowTable::region_bytes(capacity) +
         size_t{port_holds} * sizeof(uint64_t);
}

std::string flow_file_mismatch(const FlowFileHeader& h, uint64_t file_bytes,
                               const FlowFileParams& p) {
  if (file_bytes < sizeof(FlowFileHeader))
    return "the file is " + num(file_bytes) + " bytes, shorter than a header";
  if (std::memcmp(h.magic, kFlowFileMagic, sizeof h.magic) != 0)
    return "it is not a finished flow table (no magic: an lbd stopped while making it)";
  if (h.layout != kFlowFileLayout)
    return "its layout is version " + num(h.layout) + ", this lbd's is " + num(kFlowFileLayout);
  if (h.header_bytes != kFlowFileHeaderBytes || h.flow_bytes != sizeof(Flow))
    return "its records are laid out differently (header " + num(h.header_bytes) + " bytes, flow " +
           num(h.flow_bytes) + " bytes; this lbd: " + num(kFlowFileHeaderBytes) + ", " +
           num(sizeof(Flow)) + ")";
  if (h.capacity != p.capacity)
    return "it holds " + num(h.capacity) + " flows, dataplane.flows.capacity is now " +
           num(p.capacity);
  if (h.table_bytes != FlowTable::region_bytes(h.capacity) ||
      file_bytes < flow_file_bytes(h.capacity, h.port_holds))
    return "the file is " + num(file_bytes) + " bytes, a table of " + num(h.capacity) +
           " flows needs " + num(flow_file_bytes(h.capacity, h.port_holds));
  if (h.worker != p.worker)
    return "it is worker " + num(h.worker) + "'s table, not worker " + num(p.worker) + "'s";
  if (h.workers != p.workers)
    return "it was made for " + num(h.workers) + " worker(s), dataplane.workers is now " +
           num(p.workers) + " (flows would belong to other workers)";
  if (h.reta_size != p.reta_size)
    return "the RSS redirection table had " + num(h.reta_size) + " entries, now " +
           num(p.reta_size) + " (flows would belong to other workers)";
  if (h.nports != p.nports || h.ports_digest != p.ports_digest)
    return "the ports or the full-NAT settings changed (" + num(h.nports) + " ports then, " +
           num(p.nports) +
           " now; a port's name or address, dataplane.fullnat_addresses or fullnat_ports "
           "differ): a flow's port or local address would be another";
  if (h.port_holds != p.port_holds)
    return "it keeps " + num(h.port_holds) + " full-NAT ports, this worker has " +
           num(p.port_holds);
  if (boot_id_of(h) != p.boot_id)
    return "it was made before the machine rebooted (boot id " + std::string(boot_id_of(h)) +
           ", now " + p.boot_id + "): its deadlines count from another boot";
  const uint64_t hi = h.tsc_hz > p.tsc_hz ? h.tsc_hz : p.tsc_hz;
  const uint64_t lo = h.tsc_hz > p.tsc_hz ? p.tsc_hz : h.tsc_hz;
  // DPDK measures the rate and rounds it to 10 MHz: two runs may differ by one step (~0.4 %).
  if (lo == 0 || (hi - lo) > hi / 100)
    return "its deadlines are in ticks of " + num(h.tsc_hz) + " Hz, this clock runs at " +
           num(p.tsc_hz) + " Hz";
  return {};
}

void init_flow_file_header(FlowFileHeader& h, const FlowFileParams& p, uint64_t seed,
                           const ClockPair& now, uint64_t unix_s, uint32_t pid) {
  std::memset(static_cast<void*>(&h), 0, sizeof h);
  h.layout = kFlowFileLayout;
  h.header_bytes = kFlowFileHeaderBytes;
  h.flow_bytes = sizeof(Flow);
  h.capacity = p.capacity;
  h.table_bytes = FlowTable::region_bytes(p.capacity);
  h.hash_seed = seed;
  h.worker = p.worker;
  h.workers = p.workers;
  h.reta_size = p.reta_size;
  h.nports = p.nports;
  h.ports_digest = p.ports_digest;
  h.port_holds = p.port_holds;
  h.tsc_hz = p.tsc_hz;
  std::memcpy(h.boot_id, p.boot_id.data(), std::min(p.boot_id.size(), sizeof h.boot_id - 1));
  h.clock[0] = now;
  h.clock[1] = now;
  h.pid = pid;
  h.created_unix_s = unix_s;
}

void record_clock(FlowFileHeader& h, const ClockPair& now) {
  std::atomic_ref<uint32_t> slot(h.clock_slot);
  const uint32_t next = slot.load(std::memory_order_relaxed) ^ 1u;
  h.clock[next] = now;
  // release: a process that reads the slot after this one died finds the pair whole (x86 keeps
  // stores in order; this keeps the compiler from reordering them).
  slot.store(next, std::memory_order_release);
}

ClockPair recorded_clock(const FlowFileHeader& h) {
  // acquire pairs with the release in record_clock().
  const uint32_t s = std::atomic_ref<uint32_t>(const_cast<uint32_t&>(h.clock_slot))
                         .load(std::memory_order_acquire);
  return h.clock[s & 1u];
}

int64_t flow_clock_shift(const ClockPair& then, const ClockPair& now, uint64_t tsc_hz) {
  constexpr uint64_t kNs = 1'000'000'000;
  const uint64_t elapsed_ns = now.boot_ns > then.boot_ns ? now.boot_ns - then.boot_ns : 0;
  // In two parts so that nothing overflows for any uptime.
  const uint64_t elapsed_ticks = elapsed_ns / kNs * tsc_hz + elapsed_ns % kNs * tsc_hz / kNs;
  const uint64_t expected = then.tsc + elapsed_ticks;
  const uint64_t tolerance = elapsed_ticks / 100 > tsc_hz ? elapsed_ticks / 100 : tsc_hz;
  const uint64_t off = now.tsc > expected ? now.tsc - expected : expected - now.tsc;
  if (off <= tolerance) return 0;
  const auto mag = static_cast<int64_t>(off);
  return now.tsc > expected ? mag : -mag;
}

SettingsDigest& SettingsDigest::add(std::string_view s) {
  add(uint64_t{s.size()});
  for (char c : s) {
    h_ ^= static_cast<uint8_t>(c);
    h_ *= 0x100000001b3ull;
  }
  return *this;
}

SettingsDigest& SettingsDigest::add(uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h_ ^= (v >> (8 * i)) & 0xff;
    h_ *= 0x100000001b3ull;
  }
  return *this;
}

RestoreReport restore_flows(FlowTable& table, Tick now, int64_t shift,
                            const std::function<FlowBinding(const Flow&)>& bind) {
  RestoreReport r;
  for (uint32_t idx = 0; idx < table.capacity(); ++idx) {
    Flow& f = table.at(idx);
    if (!f.in_use) continue;
    f.expires = shifted(f.expires, shift);
    f.created = shifted(f.created, shift);
    if (f.expires <= now) {
      table.erase(idx);
      ++r.expired;
      continue;
    }
    f.serial = ++r.kept;
    // A reset record (Processor::backend_stopped) names no backend: it only answers late
    // segments with RSTs, which go back where they came from.
    if (f.state == TcpState::kReset) continue;
    const FlowBinding b = bind(f);
    f.backend = b.backend;
    f.service = b.service;
    f.backend_port_id = static_cast<uint8_t>(b.backend_port_id);
    f.neighbor = b.neighbor;
    if (b.backend == kGoneBackend) ++r.gone;
  }
  return r;
}

uint32_t restore_port_holds(std::span<uint64_t> holds, const FlowTable& table, Tick now,
                            int64_t shift, Tick hold, bool flows_end_now,
                            const std::function<size_t(const Flow&)>& index) {
  // No release ever set a hold beyond now + hold: a larger one is not to be trusted.
  for (uint64_t& t : holds)
    if (t != 0) t = std::min(shifted(t, shift), now + hold);
  for (uint32_t idx = 0; idx < table.capacity(); ++idx) {
    const Flow& f = table.at(idx);
    if (!f.in_use || !f.fullnat()) continue;
    const size_t i = index(f);
    if (i >= holds.size()) continue;
    const Tick ends = flows_end_now ? now : shifted(f.expires, shift);
    holds[i] = ends + hold;
  }
  uint32_t held = 0;
  for (uint64_t t : holds) held += t > now;
  return held;
}

}  // namespace lb::core
