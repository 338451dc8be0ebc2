// Micro-benchmarks of lbd's packet logic (dataplane/core), without DPDK: every benchmark works on
// a burst of 32 and reports items (packets, lookups, picks) per second, except BM_MaglevBuild
// (control-thread work: time per table). BM_Process* call Processor::process once per packet;
// BM_ProcessBurst* call process_burst on the 32 at once, as the worker does. Build: ninja -C build;
// run: build/bench/lbcore_bench [--benchmark_filter=REGEX]. See docs/benchmarking.md.
//
// What a number includes is in each benchmark's comment. Benchmarks that feed Processor copy a
// prebuilt frame into the buffer first (the rewrite is in place); BM_FrameCopy measures that copy
// alone so it can be subtracted.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "bench_frames.h"
#include "checksum.h"
#include "counters.h"
#include "flow_table.h"
#include "maglev.h"
#include "neighbor.h"
#include "packet.h"
#include "pool.h"
#include "processor.h"
#include "scheduler.h"

namespace {

using namespace lb::core;

constexpr int kBurst = 32;
using namespace lb::bench;
constexpr uint32_t kBackendNet = 0x0a140000;  // 10.20.0.0
constexpr uint16_t kBackendPort = 8080;

// ---------------------------------------------------------------------------------------------
// Frames

// An untagged Ethernet/IPv4/TCP frame of `len` bytes (>= 54), TCP checksum left 0.
std::vector<uint8_t> tcp_frame(size_t len, uint32_t sip, uint16_t sport, uint32_t dip,
                               uint16_t dport, uint8_t flags) {
  std::vector<uint8_t> f(len);
  const uint8_t dmac[6] = {0x02, 0, 0, 0, 2, 1}, smac[6] = {0x02, 0, 0, 0, 1, 1};
  write_tcp_frame(f.data(), len, dmac, smac, sip, sport, dip, dport, flags, 1000);
  return f;
}

// Copies `tmpl` into buf at `headroom` and sets the client address and port (IPv4 checksum
// updated): one flow's packet, prepared the way a NIC would hand it over.
inline void stamp(uint8_t* buf, const std::vector<uint8_t>& tmpl, uint32_t ip, uint16_t port,
                  bool client_is_source) {
  uint8_t* f = buf + 128;
  std::memcpy(f, tmpl.data(), tmpl.size());
  uint8_t* iph = f + 14;
  store_be32(iph + (client_is_source ? 12 : 16), ip);
  store_be16(iph + 20 + (client_is_source ? 0 : 2), port);
  set_ipv4_checksum(iph);
}

// ---------------------------------------------------------------------------------------------
// A processor with one service (VIP:80) over `nb` backends on port 1, all MACs resolved.

struct Rig {
  ProcessorConfig cfg;
  NeighborTable neighbors;
  std::unique_ptr<Pool> pool;
  std::unique_ptr<Processor> proc;
  Tick now = 1000;

  explicit Rig(uint32_t capacity, int nb = 3, SchedulerKind kind = SchedulerKind::kRoundRobin) {
    cfg.nports = 2;
    cfg.ports[0] = PortInfo{0x0a0a0001, 0xffffff00, MacAddr{{0x02, 0, 0, 0, 2, 1}}};
    cfg.ports[1] = PortInfo{0x0a140001, 0xffffff00, MacAddr{{0x02, 0, 0, 0, 2, 2}}};
    cfg.flow_capacity = capacity;
    cfg.ticks_per_second = 1000;
    cfg.syn_timeout = 1000000;
    cfg.established_timeout = 1000000;
    cfg.fin_timeout = 1000000;
    cfg.closed_timeout = 1000000;
    Pool::ServiceSpec s{static_cast<ServiceId>(0), kVip, kVport, kind, {}, {}};
    for (int b = 0; b < nb; ++b) {
      const uint32_t ip = kBackendNet + 11 + static_cast<uint32_t>(b);
      const uint16_t slot = neighbors.add(ip, 1);
      neighbors.learn(ip, 1, MacAddr{{0x02, 0, 0, 0, 3, static_cast<uint8_t>(b)}}, 1);
      s.backends.push_back(PoolBackend{static_cast<BackendId>(b), ip, kBackendPort, 1, slot,
                                       static_cast<uint16_t>(1 + b % 3)});
      s.serving.push_back(static_cast<BackendId>(b));
    }
    pool = std::make_unique<Pool>(1, std::vector<Pool::ServiceSpec>{s});
    proc = std::make_unique<Processor>(cfg, neighbors);
  }

  Verdict run(uint8_t* buf, size_t len, uint16_t port) {
    Frame f{buf, 128, static_cast<uint16_t>(len), 2048};
    return proc->process(f, port, *pool, now);
  }

  // Opens flows 0..n-1 with SYN, SYN-ACK, ACK: all ESTABLISHED. Returns each flow's backend.
  std::vector<uint32_t> establish(uint32_t n) {
    std::vector<uint32_t> backend_ip(n);
    std::vector<uint8_t> buf(2048);
    const auto syn = tcp_frame(60, 0, 0, kVip, kVport, 0x02);
    const auto ack = tcp_frame(60, 0, 0, kVip, kVport, 0x10);
    for (uint32_t i = 0; i < n; ++i) {
      stamp(buf.data(), syn, client_ip(i), client_port(i), true);
      if (run(buf.data(), syn.size(), 0).action != Action::kTx) std::abort();
      backend_ip[i] = load_be32(buf.data() + 128 + 14 + 16);
      auto sa = tcp_frame(60, backend_ip[i], kBackendPort, client_ip(i), client_port(i), 0x12);
      std::memcpy(buf.data() + 128, sa.data(), sa.size());
      if (run(buf.data(), sa.size(), 1).action != Action::kTx) std::abort();
      stamp(buf.data(), ack, client_ip(i), client_port(i), true);
      if (run(buf.data(), ack.size(), 0).action != Action::kTx) std::abort();
    }
    return backend_ip;
  }
};

// ---------------------------------------------------------------------------------------------
// Parsing

// parse_packet on 32 frames already in cache (64-byte data segments to the VIP).
void BM_Parse(benchmark::State& state) {
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < kBurst; ++i)
    frames.push_back(tcp_frame(64, client_ip(static_cast<uint32_t>(i)),
                               client_port(static_cast<uint32_t>(i)), kVip, kVport, 0x18));
  ParsedPacket pk;
  for (auto _ : state) {
    for (int i = 0; i < kBurst; ++i) {
      parse_packet(frames[static_cast<size_t>(i)].data(), 64, pk);
      benchmark::DoNotOptimize(pk);
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_Parse);

// ---------------------------------------------------------------------------------------------
// Flow table

FlowTable& filled_table(uint32_t n) {
  // Built once per size and reused by the hit and miss benchmarks (10 M takes seconds).
  static std::vector<std::pair<uint32_t, std::unique_ptr<FlowTable>>> cache;
  for (auto& [size, t] : cache)
    if (size == n) return *t;
  auto t = std::make_unique<FlowTable>(n + n / 16 + 64, 0x1234567);
  for (uint32_t i = 0; i < n; ++i) {
    Flow f{};
    f.client_ip = client_ip(i);
    f.client_port = client_port(i);
    f.vip = kVip;
    f.vport = kVport;
    f.backend_ip = kBackendNet + 11 + i % 3;
    f.backend_port = kBackendPort;
    uint32_t idx;
    if (t->insert(f, idx) != FlowTable::InsertResult::kOk) std::abort();
  }
  cache.emplace_back(n, std::move(t));
  return *cache.back().second;
}

std::vector<FlowKey> random_keys(uint32_t n, bool present, size_t count) {
  std::mt19937 rng(42);
  std::vector<FlowKey> keys(count);
  for (FlowKey& k : keys) {
    const uint32_t i = static_cast<uint32_t>(rng() % n);
    // Absent keys: a client port outside the range inserted.
    k = FlowKey{client_ip(i), kVip,
                present ? client_port(i) : static_cast<uint16_t>(65000 + i % 500), kVport};
  }
  return keys;
}

// hash + lookup of 32 random keys, present (client direction) or absent, in a table of N flows.
void lookup_bursts(benchmark::State& state, bool present) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  const FlowTable& t = filled_table(n);
  const auto keys = random_keys(n, present, 1 << 16);
  size_t k = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBurst; ++i, k = (k + 1) & 0xffff) {
      Dir d;
      const uint32_t idx = t.lookup(keys[k], t.hash(keys[k]), d);
      benchmark::DoNotOptimize(idx);
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
void BM_FlowLookupHit(benchmark::State& state) {
  lookup_bursts(state, true);
}
BENCHMARK(BM_FlowLookupHit)->Arg(1000)->Arg(1000000)->Arg(10000000);

// Hits with every hash computed and its primary bucket line prefetched first for the burst
// (what the worker's staged burst loop does).
void BM_FlowLookupHitPrefetched(benchmark::State& state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  const FlowTable& t = filled_table(n);
  const auto keys = random_keys(n, true, 1 << 16);
  size_t k = 0;
  uint64_t h[kBurst];
  for (auto _ : state) {
    for (int i = 0; i < kBurst; ++i) {
      h[i] = t.hash(keys[(k + static_cast<size_t>(i)) & 0xffff]);
      t.prefetch(h[i]);
    }
    for (int i = 0; i < kBurst; ++i, k = (k + 1) & 0xffff) {
      Dir d;
      const uint32_t idx = t.lookup(keys[k], h[i], d);
      benchmark::DoNotOptimize(idx);
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_FlowLookupHitPrefetched)->Arg(1000)->Arg(1000000)->Arg(10000000);

// Absent keys (a SYN's first look).
void BM_FlowLookupMiss(benchmark::State& state) {
  lookup_bursts(state, false);
}
BENCHMARK(BM_FlowLookupMiss)->Arg(1000)->Arg(1000000)->Arg(10000000);

// insert of 32 new flows (both keys, conflict check included) into a table of capacity C, filled
// from empty to full over and over (the refill is not timed).
void BM_FlowInsert(benchmark::State& state) {
  const uint32_t cap = static_cast<uint32_t>(state.range(0));
  auto t = std::make_unique<FlowTable>(cap, 0x1234567);
  uint32_t next = 0;
  for (auto _ : state) {
    if (next + kBurst > cap) {
      state.PauseTiming();
      t = std::make_unique<FlowTable>(cap, 0x1234567);
      next = 0;
      state.ResumeTiming();
    }
    for (int i = 0; i < kBurst; ++i, ++next) {
      Flow f{};
      f.client_ip = client_ip(next);
      f.client_port = client_port(next);
      f.vip = kVip;
      f.vport = kVport;
      f.backend_ip = kBackendNet + 11 + next % 3;
      f.backend_port = kBackendPort;
      uint32_t idx;
      benchmark::DoNotOptimize(t->insert(f, idx));
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_FlowInsert)->Arg(1 << 16)->Arg(1 << 20);

// ---------------------------------------------------------------------------------------------
// Processor: the whole per-packet decision and rewrite

// Copying a 64-byte template into the buffer and stamping the client address (with the IPv4
// checksum): the preparation the Processor benchmarks below pay per packet.
void BM_FrameCopy(benchmark::State& state) {
  const auto tmpl = tcp_frame(64, 0, 0, kVip, kVport, 0x18);
  std::vector<uint8_t> buf(2048);
  uint32_t i = 0;
  for (auto _ : state) {
    for (int b = 0; b < kBurst; ++b, ++i) {
      stamp(buf.data(), tmpl, client_ip(i & 0xfffff), client_port(i & 0xfffff), true);
      benchmark::DoNotOptimize(buf.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_FrameCopy);

// Processor::process on 32 SYNs of new flows: parse, VIP lookup, miss, schedule (rr, 3
// backends), insert, SYN cache copy, DNAT with checksum updates, new Ethernet header. The table
// (capacity 2^20) is rebuilt untimed when full.
void BM_ProcessSyn(benchmark::State& state) {
  constexpr uint32_t kCap = 1 << 20;
  auto rig = std::make_unique<Rig>(kCap);
  const auto syn = tcp_frame(60, 0, 0, kVip, kVport, 0x02);
  std::vector<uint8_t> buf(2048);
  uint32_t next = 0;
  for (auto _ : state) {
    if (next + kBurst > kCap) {
      state.PauseTiming();
      rig = std::make_unique<Rig>(kCap);
      next = 0;
      state.ResumeTiming();
    }
    for (int b = 0; b < kBurst; ++b, ++next) {
      stamp(buf.data(), syn, client_ip(next), client_port(next), true);
      benchmark::DoNotOptimize(rig->run(buf.data(), syn.size(), 0));
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_ProcessSyn);

// 32 SYNs of new flows through Processor::process_burst (the worker's path).
void BM_ProcessBurstSyn(benchmark::State& state) {
  constexpr uint32_t kCap = 1 << 20;
  auto rig = std::make_unique<Rig>(kCap);
  const auto syn = tcp_frame(60, 0, 0, kVip, kVport, 0x02);
  std::vector<std::vector<uint8_t>> bufs(kBurst, std::vector<uint8_t>(2048));
  Frame frames[kBurst];
  Verdict verdicts[kBurst];
  uint32_t next = 0;
  for (auto _ : state) {
    if (next + kBurst > kCap) {
      state.PauseTiming();
      rig = std::make_unique<Rig>(kCap);
      next = 0;
      state.ResumeTiming();
    }
    for (int b = 0; b < kBurst; ++b, ++next) {
      stamp(bufs[static_cast<size_t>(b)].data(), syn, client_ip(next), client_port(next), true);
      frames[b] = Frame{bufs[static_cast<size_t>(b)].data(), 128, 60, 2048};
    }
    rig->proc->process_burst(frames, kBurst, 0, *rig->pool, rig->now, verdicts);
    benchmark::DoNotOptimize(verdicts);
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_ProcessBurstSyn);

// A rig with flows 0..n-1 established, built once per n (10 M takes a while) and shared by the
// data and reply benchmarks; `backend` is each flow's backend address.
struct EstablishedRig {
  std::unique_ptr<Rig> rig;
  std::vector<uint32_t> backend;
  std::vector<uint32_t> order;  // a random visiting order, as independent clients arrive
};
EstablishedRig& established(uint32_t n) {
  static std::vector<std::pair<uint32_t, EstablishedRig>> cache;
  for (auto& [size, r] : cache)
    if (size == n) return r;
  EstablishedRig r;
  r.rig = std::make_unique<Rig>(n + n / 16 + 64);
  r.backend = r.rig->establish(n);
  r.order.resize(n);
  for (uint32_t i = 0; i < n; ++i) r.order[i] = i;
  std::shuffle(r.order.begin(), r.order.end(), std::mt19937(7));
  cache.emplace_back(n, std::move(r));
  return cache.back().second;
}

// Processor::process on 32 client data segments (64 B) of established flows, N flows visited in
// a random order: lookup hit, state refresh, DNAT, checksums, Ethernet header, counters.
void BM_ProcessData(benchmark::State& state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  EstablishedRig& er = established(n);
  Rig& rig = *er.rig;
  const auto data = tcp_frame(64, 0, 0, kVip, kVport, 0x18);
  std::vector<uint8_t> buf(2048);
  uint32_t i = 0;
  for (auto _ : state) {
    for (int b = 0; b < kBurst; ++b) {
      const uint32_t f = er.order[i];
      stamp(buf.data(), data, client_ip(f), client_port(f), true);
      benchmark::DoNotOptimize(rig.run(buf.data(), data.size(), 0));
      i = i + 1 == n ? 0 : i + 1;
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_ProcessData)->Arg(1000)->Arg(1000000)->Arg(10000000);

// The worker's path: Processor::process_burst on the same 32 segments at once (parse all, hash
// and prefetch the buckets, prefetch the records, then decide each), N flows in random order.
void BM_ProcessBurstData(benchmark::State& state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  EstablishedRig& er = established(n);
  Rig& rig = *er.rig;
  const auto data = tcp_frame(64, 0, 0, kVip, kVport, 0x18);
  std::vector<std::vector<uint8_t>> bufs(kBurst, std::vector<uint8_t>(2048));
  Frame frames[kBurst];
  Verdict verdicts[kBurst];
  uint32_t i = 0;
  for (auto _ : state) {
    for (int b = 0; b < kBurst; ++b) {
      const uint32_t f = er.order[i];
      stamp(bufs[static_cast<size_t>(b)].data(), data, client_ip(f), client_port(f), true);
      frames[b] = Frame{bufs[static_cast<size_t>(b)].data(), 128, 64, 2048};
      i = i + 1 == n ? 0 : i + 1;
    }
    rig.proc->process_burst(frames, kBurst, 0, *rig.pool, rig.now, verdicts);
    benchmark::DoNotOptimize(verdicts);
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_ProcessBurstData)->Arg(1000)->Arg(1000000)->Arg(10000000);

// The reply direction: a backend's 64-byte segment to the client, reverse NAT back to the VIP.
void BM_ProcessReply(benchmark::State& state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  EstablishedRig& er = established(n);
  Rig& rig = *er.rig;
  const std::vector<uint32_t>& backend = er.backend;
  std::vector<std::vector<uint8_t>> tmpl;
  for (int b = 0; b < 3; ++b)
    tmpl.push_back(
        tcp_frame(64, kBackendNet + 11 + static_cast<uint32_t>(b), kBackendPort, 0, 0, 0x18));
  std::vector<uint8_t> buf(2048);
  uint32_t i = 0;
  for (auto _ : state) {
    for (int b = 0; b < kBurst; ++b) {
      const uint32_t f = er.order[i];
      stamp(buf.data(), tmpl[backend[f] - (kBackendNet + 11)], client_ip(f), client_port(f), false);
      benchmark::DoNotOptimize(rig.run(buf.data(), 64, 1));
      i = i + 1 == n ? 0 : i + 1;
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_ProcessReply)->Arg(1000)->Arg(1000000)->Arg(10000000);

// ---------------------------------------------------------------------------------------------
// Schedulers: 32 picks for one service.

void BM_SchedulerPick(benchmark::State& state) {
  const auto kind = static_cast<SchedulerKind>(state.range(0));
  const int nb = static_cast<int>(state.range(1));
  Rig rig(1024, nb, kind);
  Scheduler sched(7);
  auto counters = std::make_unique<WorkerCounters>();
  const PoolService& svc = rig.pool->services()[0];
  for (auto _ : state) {
    for (int i = 0; i < kBurst; ++i) {
      const PoolBackend* b = sched.pick(*rig.pool, svc, *counters);
      benchmark::DoNotOptimize(b);
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_SchedulerPick)
    ->ArgNames({"kind", "backends"})
    ->Args({static_cast<int>(SchedulerKind::kRoundRobin), 3})
    ->Args({static_cast<int>(SchedulerKind::kWeightedRoundRobin), 3})
    ->Args({static_cast<int>(SchedulerKind::kRandom), 3})
    ->Args({static_cast<int>(SchedulerKind::kLeastConn), 3})
    ->Args({static_cast<int>(SchedulerKind::kRoundRobin), 64})
    ->Args({static_cast<int>(SchedulerKind::kWeightedRoundRobin), 64})
    ->Args({static_cast<int>(SchedulerKind::kLeastConn), 64});

// ---------------------------------------------------------------------------------------------
// Maglev: a service's table, built by the control thread on every pool change, and the lookup a
// new flow (or a miss) does in it.

std::vector<MaglevBackend> maglev_backends(int64_t n, bool weighted) {
  std::vector<MaglevBackend> v;
  for (uint32_t i = 0; i < static_cast<uint32_t>(n); ++i)
    v.push_back(MaglevBackend{kBackendNet + 11 + i, kBackendPort, weighted ? 1 + i % 4 : 1, i});
  return v;
}

// One whole build: validation, sort, permutations, the fill loop, the table's allocation.
void BM_MaglevBuild(benchmark::State& state) {
  const auto bs = maglev_backends(state.range(0), state.range(2) != 0);
  const auto m = static_cast<uint32_t>(state.range(1));
  for (auto _ : state) {
    const MaglevTable t(bs, m);
    benchmark::DoNotOptimize(t.entries().data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MaglevBuild)
    ->ArgNames({"backends", "M", "weighted"})
    ->Args({3, 65537, 0})
    ->Args({256, 65537, 0})
    ->Args({256, 65537, 1})
    ->Args({1000, 65537, 0})
    ->Args({256, 655373, 0})
    ->Unit(benchmark::kMicrosecond);

// 32 flows: maglev_flow_hash of the client side, then the table entry (65537 entries, 256
// backends; 256 KiB, so in L2 here).
void BM_MaglevLookup(benchmark::State& state) {
  const MaglevTable t(maglev_backends(256, false));
  uint32_t i = 0;
  for (auto _ : state) {
    for (int b = 0; b < kBurst; ++b, ++i) {
      const uint32_t id = t.lookup(
          maglev_flow_hash(client_ip(i & 0xfffff), client_port(i & 0xfffff), kVip, kVport));
      benchmark::DoNotOptimize(id);
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_MaglevLookup);

// ---------------------------------------------------------------------------------------------
// Checksums: the RFC 1624 update a DNAT does per packet (IPv4 + TCP, address and port).

void BM_ChecksumUpdate(benchmark::State& state) {
  uint16_t ipc = 0x1234, tc = 0x4321;
  uint32_t from = kVip, to = kBackendNet + 11;
  for (auto _ : state) {
    for (int i = 0; i < kBurst; ++i) {
      ipc = csum_update32(ipc, from, to);
      tc = csum_update16(csum_update32(tc, from, to), kVport, kBackendPort);
      benchmark::DoNotOptimize(ipc);
      benchmark::DoNotOptimize(tc);
      std::swap(from, to);
    }
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}
BENCHMARK(BM_ChecksumUpdate);

}  // namespace

BENCHMARK_MAIN();
