#pragma once
// The per-packet logic of one worker, over plain byte buffers: parse, classify, look up or
// create the flow, schedule, NAT, answer ARP and ICMP echo, build RSTs. It knows nothing of
// DPDK; the dataplane hands it each received frame and acts on the verdict (transmit on a port,
// hand to the owning worker, drop). Tests drive it directly with an injected clock.
//
// Everything here runs on the packet path: no allocation, no locks, no exceptions, no system
// calls. State is this worker's own (flow table, schedulers, SYN cache, counters) except the pool
// (immutable, RCU) and the neighbor table (single-word atomics).

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "counters.h"
#include "encap.h"
#include "flow_table.h"
#include "large_array.h"
#include "neighbor.h"
#include "packet.h"
#include "pool.h"
#include "rss.h"
#include "scheduler.h"
#include "snat.h"

namespace lb::core {

// A packet in its buffer: the frame is buf[off, off + len); buf[0, cap) may be used, so the
// frame can grow into headroom (a VLAN tag) or tailroom (a replayed SYN).
struct Frame {
  // Trivially default-constructible: the worker's array of a batch's frames is not written
  // once before it is filled (3 instructions per packet). Frame{buf, off, len, cap} sets
  // ip_csum_ok to false.
  Frame() = default;
  Frame(uint8_t* buffer, uint16_t headroom, uint16_t length, uint16_t size, bool csum_ok = false)
      : start(buffer + headroom), off(headroom), len(length), cap(size), ip_csum_ok(csum_ok) {}

  // The frame's first byte (buffer + off), kept rather than added for each use: the receive
  // loop computes it for its prefetch anyway, and every rewrite starts from it.
  uint8_t* start;
  uint16_t off;  // headroom: where the frame starts in its buffer
  uint16_t len;
  uint16_t cap;     // the buffer's size
  bool ip_csum_ok;  // the NIC verified the IPv4 header checksum

  // The same from the frame's first byte, where the caller has it already.
  static Frame starting_at(uint8_t* first, uint16_t headroom, uint16_t length, uint16_t size,
                           bool csum_ok) {
    Frame f;
    f.start = first;
    f.off = headroom;
    f.len = length;
    f.cap = size;
    f.ip_csum_ok = csum_ok;
    return f;
  }

  uint8_t* data() const { return start; }
  uint8_t* buf() const { return start - off; }
  // The frame now starts `at` bytes into its buffer (a header grew or shrank in place).
  void move_start(size_t at) {
    start = buf() + at;
    off = static_cast<uint16_t>(at);
  }
};
static_assert(sizeof(Frame) == 16 && std::is_trivially_default_constructible_v<Frame> &&
              std::is_trivially_copyable_v<Frame>);

enum class Action : uint8_t {
  kDrop,     // free it; `reason` was counted
  kTx,       // send on `port`
  kHandoff,  // another worker owns the flow: pass it to `worker` unchanged
  kConsumed  // used by the control logic (an ARP reply learned): free it, not an error
};

struct Verdict {
  Action action;
  uint16_t port;    // kTx
  uint16_t worker;  // kHandoff
  DropReason reason;
};

// `v` into `out` as one 8-byte store: gcc stores a Verdict's four fields one by one (two of its
// eight bytes are padding), ~3 instructions more for each packet of the established path.
inline void store_verdict(Verdict& out, const Verdict& v) {
  static_assert(sizeof(Verdict) == 8 && offsetof(Verdict, port) == 2 &&
                offsetof(Verdict, worker) == 4 && offsetof(Verdict, reason) == 6);
  if constexpr (std::endian::native == std::endian::little) {
    const uint64_t w = uint64_t{static_cast<uint8_t>(v.action)} | uint64_t{v.port} << 16 |
                       uint64_t{v.worker} << 32 | uint64_t{static_cast<uint8_t>(v.reason)} << 48;
    std::memcpy(&out, &w, sizeof w);
  } else {
    out = v;
  }
}

// Which VIPs a port answers ARP for (cfg::VipArp): inside its subnet, all, none.
enum class VipArp : uint8_t { kSubnet, kAll, kNone };

struct PortInfo {
  uint32_t ip;
  uint32_t mask;
  MacAddr mac;
  VipArp vip_arp = VipArp::kSubnet;
  uint16_t mtu = kDefaultMtu;  // IPv4 bytes a frame may carry (forward = "tunnel" checks it)
  // Whether an ARP request on this port for `vip` (a VIP) is lbd's to answer.
  bool answers_arp_for(uint32_t vip) const {
    return vip_arp == VipArp::kAll || (vip_arp == VipArp::kSubnet && (vip & mask) == (ip & mask));
  }
};

struct ProcessorConfig {
  uint16_t worker = 0;
  uint16_t workers = 1;
  uint16_t nports = 0;
  std::array<PortInfo, kMaxPorts> ports{};
  uint32_t flow_capacity = 1024;
  uint64_t hash_seed = 0x6c62642d666c6f77ull;
  // timeouts and the SYN retry delay, in ticks
  Tick syn_timeout = 0;
  Tick established_timeout = 0;
  Tick fin_timeout = 0;
  Tick closed_timeout = 0;
  Tick retry_syn_after = 0;  // 0: never retry on a client SYN retransmission
  bool retry_on_rst = true;
  uint8_t max_retries = 2;
  bool rst_on_miss = false;  // a miss of a service whose MissMode is kDefault
  // Seeds the hash of a flow's client side that places it in a maglev table: the same on every
  // node and across restarts, so that any of them sends the flow to the same backend.
  uint64_t maglev_seed = kMaglevDefaultFlowSeed;
  bool rst_on_no_backend = true;
  // SYN floods: at most syn_budget embryonic flows (0: the capacity); past half of that the
  // new ones get syn_timeout_pressure (0: syn_timeout) and older ones age by it; when the budget
  // or the table is full a SYN follows syn_policy (a service's own, else this one).
  uint32_t syn_budget = 0;
  Tick syn_timeout_pressure = 0;
  SynPolicy syn_policy = SynPolicy::kDropNew;  // what lbd did before; the config's default differs
  // kStateless services: above this many new flows per second (0: no limit), or when the budget
  // or the table is full, a SYN goes to its Maglev backend without a flow.
  uint32_t stateless_rate = 0;
  uint32_t syn_cache_slots = 4096;  // power of two; 0 disables replay of SYNs on retry
  uint64_t ticks_per_second = 1000;
  // Flow ownership across workers: owner = reta[toeplitz(client ip, port) % reta.size]
  uint16_t reta_size = 128;
  // Full-NAT local addresses (dataplane.fullnat_addresses): the sources of full-NAT flows.
  std::array<uint32_t, SnatPorts::kMaxLocalAddrs> fullnat_addrs{};
  uint8_t nfullnat = 0;
  uint16_t fullnat_port_first = SnatPorts::kFirstPort;
  uint16_t fullnat_port_last = 65535;
  Tick fullnat_port_hold = 0;  // ticks a freed local port waits before a new flow takes it
  // Where each local address's ring of free ports begins (SnatPorts::Memory::start): random per
  // process in lbd, 0 (the first port) in tests.
  uint32_t fullnat_port_start = 0;
};

class Processor {
 public:
  Processor(const ProcessorConfig& cfg, NeighborTable& neighbors);
  // Over a flow table made elsewhere, which may already hold flows: a table re-attached after a
  // restart (dataplane/flow_memory.h). Records that cannot be this worker's (a backend id, port
  // or state out of range) are erased; the active-flow counts and the creation numbers continue
  // from what is left.
  // `fullnat_holds`: the full-NAT ports' hold times kept with the table (SnatPorts::Memory::holds),
  // or empty.
  Processor(const ProcessorConfig& cfg, NeighborTable& neighbors, FlowTable table,
            std::span<uint64_t> fullnat_holds = {});

  // Back to the state the first constructor leaves, with the same config: no flow, every counter
  // zero, schedulers, SYN cache, full-NAT ports, ICMP limiters and aging pace as new. Not for the
  // packet path: for a harness that runs many independent inputs (tests/fuzz/packet_fuzz.cc), to
  // which building a Processor (its counters alone are ~300 KB) costs more than an input does.
  // Every member below that a packet, aging or forget() changes is restored here
  // (ProcessorTest.ResetIsIndistinguishableFromANewProcessor).
  void reset();

  Verdict process(Frame& f, uint16_t in_port, const Pool& pool, Tick now);

  // The same for a burst received on one port (at most kMaxBurst frames), staged as in DPDK's
  // l3fwd: parse every frame and prefetch its flow buckets, then prefetch the records they
  // point at, then decide each packet with its lines in cache. out[i] is frames[i]'s verdict.
  // in_ports[i] is the port frames[i] arrived on (a batch may gather several ports' bursts).
  static constexpr uint16_t kMaxBurst = 64;
  void process_burst(Frame* frames, const uint16_t* in_ports, uint16_t n, const Pool& pool,
                     Tick now, Verdict* out);
  void process_burst(Frame* frames, uint16_t n, uint16_t in_port, const Pool& pool, Tick now,
                     Verdict* out);

  // Bounded aging work: examines up to `budget` flow records.
  uint32_t age(Tick now, uint32_t budget);

  // Aging for every poll, paced by time and by new flows: examines the whole table once per
  // sweep period (one second up to 2 M records, capacity / 2 M seconds above) in batches of
  // kAgeBatch records, plus kAgePerNewFlow records for every flow created since the last call,
  // so that expiry keeps up with any rate of new flows. An idle poll costs two compares
  // instead of a 64-record scan. At most kAgeMaxPerPoll records per call; after a pause (a
  // descheduled worker, a test's clock jump) the time pace restarts instead of being owed.
  static constexpr uint32_t kAgeBatch = 64;
  static constexpr uint32_t kAgeMaxPerPoll = 16 * kAgeBatch;
  static constexpr uint32_t kAgePerNewFlow = 2;
  uint32_t age(Tick now) {
    if (now < age_due_ && created_since_age_ == 0) return 0;
    return age_paced(now);
  }

  // A backend or service id that no pool names and no flow of this worker refers to any more is
  // about to be reused: its scheduler state is forgotten (its counters are not: each counts for
  // the life of the process, and readers subtract what it had when the id was reused).
  template <class Id>
  void forget(Id id) {
    sched_.forget(id);
  }

  WorkerCounters& counters() { return *counters_; }
  const WorkerCounters& counters() const { return *counters_; }
  const FlowTable& flows() const { return table_; }
  const ProcessorConfig& config() const { return cfg_; }
  const SnatPorts& snat() const { return snat_; }

 private:
  struct SynSlot {
    uint32_t serial;  // the flow it belongs to; 0 unused
    uint8_t len;      // IPv4 + TCP header bytes saved
    uint8_t hdr[20 + 60];
  };

  Verdict handle_arp(Frame& f, const ParsedPacket& pk, uint16_t in_port, const Pool& pool,
                     Tick now);
  Verdict handle_icmp(Frame& f, const ParsedPacket& pk, uint16_t in_port, const Pool& pool,
                      Tick now);
  // `idx`, `dir`: what the flow table's lookup of the packet's key (hash `hash`) found.
  Verdict handle_tcp(Frame& f, const ParsedPacket& pk, uint64_t hash, uint32_t idx, Dir dir,
                     uint16_t in_port, const Pool& pool, Tick now);
  // Inline, defined and used in processor.cc only: the packet path of most packets.
  // `serving`: the pool's serving_view(); `expires`: now + the established timeout.
  [[gnu::always_inline]] inline bool forward_established(Frame& f, const ParsedPacket& pk,
                                                         uint32_t idx, Dir dir,
                                                         Pool::ServingView serving, Tick expires,
                                                         Verdict& v);
  Verdict dispatch(Frame& f, const ParsedPacket& pk, uint16_t in_port, const Pool& pool, Tick now);
  static FlowKey key_of(const ParsedPacket& pk) {
    return {pk.src_ip, pk.dst_ip, pk.src_port, pk.dst_port};
  }
  // `hash` is the client key's, which the caller has just looked up and not found.
  // `rehash`: a non-SYN segment of a connection this worker has no flow for (MissMode kRehash):
  // the flow starts established, at the maglev backend of its tuple.
  Verdict new_flow(Frame& f, const ParsedPacket& pk, uint64_t hash, uint16_t in_port,
                   const Pool& pool, const PoolService& svc, Tick now, bool rehash = false);
  // The same, inline (defined and used in processor.cc only): a client SYN's, in handle_tcp,
  // where the call and its prologue cost more than a SYN can spare.
  [[gnu::always_inline]] inline Verdict new_flow_inline(Frame& f, const ParsedPacket& pk,
                                                        uint64_t hash, uint16_t in_port,
                                                        const Pool& pool, const PoolService& svc,
                                                        Tick now, bool rehash);
  // The active backend the maglev table of `svc` gives this tuple, or nullptr when the service
  // has none.
  const PoolBackend* maglev_pick(const ParsedPacket& pk, const Pool& pool,
                                 const PoolService& svc) const {
    const uint64_t h =
        maglev_flow_hash(pk.src_ip, pk.src_port, pk.dst_ip, pk.dst_port, cfg_.maglev_seed);
    const uint32_t id = svc.maglev->lookup(h);
    const PoolBackend* b =
        id == kMaglevNoEntry ? nullptr : pool.backend(static_cast<BackendId>(id));
    const std::span<const PoolBackend> mine = pool.backends(svc);
    const auto at = reinterpret_cast<uintptr_t>(b) - reinterpret_cast<uintptr_t>(mine.data());
    if (at < mine.size_bytes()) [[likely]]
      return b;
    // The table names a backend that is not (or no longer) one of the service's active ones:
    // only while a pool change waits for its table, which the control thread builds right after
    // publishing it (PoolBuilder::build's defer_tables). Every node with the same pool picks the
    // same one here too.
    return mine.empty() ? nullptr : &mine[(h & 0xffffffffu) * mine.size() >> 32];
  }
  Verdict miss(Frame& f, const ParsedPacket& pk, uint64_t hash, uint16_t in_port, const Pool& pool,
               const PoolService& svc, Tick now);
  Verdict from_client(Frame& f, const ParsedPacket& pk, uint64_t hash, uint32_t idx,
                      uint16_t in_port, const Pool& pool, Tick now);
  Verdict from_backend(Frame& f, const ParsedPacket& pk, uint32_t idx, const Pool& pool, Tick now);
  Verdict to_backend(Frame& f, const ParsedPacket& pk, Flow& fl);
  Verdict to_client(Frame& f, const ParsedPacket& pk, Flow& fl);
  // Their dnat rewrites, and what follows every mode's rewrite: the Ethernet header, the
  // backend's counters, the port.
  // Inline, defined and used in processor.cc only.
  [[gnu::always_inline]] inline Verdict dnat_to_backend(Frame& f, const ParsedPacket& pk, Flow& fl,
                                                        uint64_t mac);
  [[gnu::always_inline]] inline Verdict dnat_to_client(Frame& f, const ParsedPacket& pk, Flow& fl);
  // `dst`: the next hop's MAC as MacAddr::image() gives it.
  [[gnu::always_inline]] inline Verdict l2_to_backend(Frame& f, const ParsedPacket& pk, Flow& fl,
                                                      uint64_t dst);
  [[gnu::always_inline]] inline Verdict l2_to_client(Frame& f, const ParsedPacket& pk, Flow& fl);
  // Full-NAT (fullnat.cc): a backend's reply to local address `li`; the source rewrite of a
  // flow toward its backend and the destination rewrite back to its client.
  Verdict fullnat_reply(Frame& f, const ParsedPacket& pk, int li, const Pool& pool, Tick now);
  SnatPorts::Alloc fullnat_bind(uint32_t idx);
  static void fullnat_to_backend(uint8_t* ip, uint8_t* t, const Flow& fl, uint32_t local_ip);
  static void fullnat_to_client(uint8_t* ip, uint8_t* t, const Flow& fl, uint32_t local_ip);
  // ICMP errors quoting a flow's packet (icmp_error.cc).
  static bool is_icmp_error(const uint8_t* icmp);
  Verdict icmp_error(Frame& f, const ParsedPacket& pk, const Pool& pool, Tick now);
  Verdict icmp_error_tunnel(Frame& f, const ParsedPacket& pk, Tick now);
  void fullnat_release(const Flow& fl) {
    if (!fl.fullnat()) return;
    snat_.release(fl.local_addr, fl.local_port, now_);
    counters_->fullnat[fl.local_addr].ports_in_use.sub();
  }
  Verdict reply_rst(Frame& f, const ParsedPacket& pk, uint16_t in_port);
  // encap.cc: forward = "tunnel", and the ICMP errors lbd sends as a router hop.
  // `relayed`: an ICMP error passed on to the backend, counted as such (icmp_errors_translated)
  // and not as the backend's traffic, as in the other modes.
  Verdict tunnel_to_backend(Frame& f, const ParsedPacket& pk, Flow& fl, const MacAddr& next_hop,
                            bool relayed = false);
  Verdict icmp_error(Frame& f, const ParsedPacket& pk, uint16_t port, uint8_t type, uint8_t code,
                     uint16_t mtu, DropReason why);
  Verdict time_exceeded(Frame& f, const ParsedPacket& pk, uint16_t port) {
    return icmp_error(f, pk, port, icmp_type::kTimeExceeded, 0, 0, DropReason::kTtlExceeded);
  }
  Verdict backend_stopped(Frame& f, const ParsedPacket& pk, uint32_t idx, Dir d, uint16_t in_port,
                          const Pool& pool, Tick now);
  Verdict rst_to_client(Frame& f, const ParsedPacket& pk, const Flow& fl);
  static void write_rst(Frame& f, const ParsedPacket& pk, uint32_t src, uint32_t dst,
                        uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags);
  bool resteer(uint32_t idx, const Pool& pool, Tick now);
  Verdict replay_syn(Frame& f, uint32_t idx);
  void track_state(Flow& fl, Dir d, uint8_t flags, Tick now);
  [[gnu::noinline]] void track_change(Flow& fl, Dir d, uint8_t flags, Tick now);
  void release(const Flow& fl);
  // A SYN found the embryonic budget or the table full: makes room by evicting the oldest
  // embryonic flow (true), or says why it cannot.
  bool syn_room(SynPolicy p, DropReason& why);
  // kStateless: this worker created its new-flow budget of the current window already.
  bool over_stateless_rate(Tick now);
  bool syn_pressure() const { return table_.embryonic() >= syn_high_water_; }
  bool is_local(uint32_t ip) const;
  // A client toward a VIP:port can be neither lbd itself (a VIP, a port's address, a full-NAT
  // local address) nor one of its backends (balanced back to a backend, maybe the same one):
  // such a source is spoofed. A local address as a client would make a flow whose backend key
  // (backend, local address, ...) shadows the full-NAT flow with that local port.
  // Checked only where a flow is created or refused (a miss), never on a flow-table hit: a
  // source refused here never becomes a client key, and the config refuses a backend on a VIP
  // or a port's address, so no backend key has one either (docs/architecture.md, "A strict
  // edge"). Inline, with a one-word filter before the ports' loop: it runs for every SYN.
  bool spoofed_client(uint32_t src, const Pool& pool) const {
    if (((local_filter_ >> ((src * 0x9e3779b1u) >> 26)) & 1) &&
        (is_local(src) || snat_.find(src) >= 0))
      return true;
    return pool.is_vip_or_backend(src);
  }
  bool write_l2(Frame& f, const ParsedPacket& pk, const MacAddr& dst, const MacAddr& src,
                bool tagged, uint16_t tci) {
    if (!tagged && pk.l3 == kEthHeaderLen) {
      // Untagged in and out (the parse found the IPv4 EtherType at 12): the addresses only.
      dst.store(f.data());
      src.store(f.data() + 6);
      f.len = static_cast<uint16_t>(kEthHeaderLen + pk.ip_total_len);  // drops any padding
      return true;
    }
    return write_l2_slow(f, pk, dst, src, tagged, tci);
  }
  bool write_l2_slow(Frame& f, const ParsedPacket& pk, const MacAddr& dst, const MacAddr& src,
                     bool tagged, uint16_t tci);
  // write_l2 of a frame that was and stays untagged (pk.l3 == kEthHeaderLen) toward `out_port`:
  // `dst` (MacAddr::image()) in one 8-byte store, then the port's address and the IPv4 EtherType
  // (eth_src_word_) in another over dst's two spare bytes.
  void write_l2_untagged(Frame& f, const ParsedPacket& pk, uint64_t dst, uint16_t out_port) {
    uint8_t* p = f.data();
    std::memcpy(p, &dst, sizeof dst);
    std::memcpy(p + 6, &eth_src_word_[out_port], sizeof dst);
    f.len = static_cast<uint16_t>(kEthHeaderLen + pk.ip_total_len);  // drops any padding
  }

  Verdict drop(DropReason r) {
    counters_->drop(r);
    return {Action::kDrop, 0, 0, r};
  }
  static Verdict tx(uint16_t port) { return {Action::kTx, port, 0, DropReason::kTruncated}; }

  ProcessorConfig cfg_;
  NeighborTable& neighbors_;
  FlowTable table_;
  Scheduler sched_;
  LargeArray<SynSlot> syn_cache_;
  SnatPorts snat_;
  std::span<uint64_t> fullnat_holds_;
  LargeArray<WorkerCounters> counters_storage_;
  WorkerCounters* counters_;
  uint64_t mac_key_[kMaxPorts];       // each port's MAC as dst_mac_key() reads it from a frame
  uint64_t eth_src_word_[kMaxPorts];  // each port's MAC and EtherType IPv4: frame bytes 6-13
  uint64_t local_filter_ = 0;         // bit (ip * k) >> 26 set for each port's and local address
  uint32_t serial_ = 0;
  Tick now_ = 0;                  // the packet's time, for the ICMP limiter
  IcmpLimiter icmp_limit_;        // the errors lbd originates (frag-needed, time exceeded, ...)
  IcmpLimiter icmp_relay_limit_;  // the errors it translates for a flow (icmp_error.cc)
  Tick age_due_ = 0;              // when the next batch is due
  uint32_t created_since_age_ = 0;
  Tick age_interval_ = 1;  // ticks per batch
  uint32_t syn_budget_ = 0;
  uint32_t syn_high_water_ = 0;
  Tick rate_window_ = 1;          // ticks; stateless_rate is counted per window
  uint32_t rate_window_max_ = 0;  // new flows per window; 0: no limit
  Tick rate_window_start_ = 0;
  uint32_t rate_window_flows_ = 0;
  uint32_t age_paced(Tick now);
  void adopt_flows();
  // The record a stateless SYN (which makes none in the table) is forwarded from: a member, not
  // a local, because a 64-byte aligned local made every call of handle_tcp, where new_flow is
  // inlined, realign its stack (~6 instructions per SYN). new_flow writes all of it before use.
  Flow stateless_flow_{};
};

}  // namespace lb::core
