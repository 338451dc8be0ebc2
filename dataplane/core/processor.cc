#include "processor.h"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>

#include "checksum.h"

namespace lb::core {

Processor::Processor(const ProcessorConfig& cfg, NeighborTable& neighbors)
    : Processor(cfg, neighbors, FlowTable(cfg.flow_capacity, cfg.hash_seed)) {}

Processor::Processor(const ProcessorConfig& cfg, NeighborTable& neighbors, FlowTable table,
                     std::span<uint64_t> fullnat_holds)
    : cfg_(cfg),
      neighbors_(neighbors),
      table_(std::move(table)),
      sched_(cfg.hash_seed ^ (uint64_t{cfg.worker} << 32)),
      syn_cache_(cfg.syn_cache_slots),
      snat_(std::span<const uint32_t>(cfg.fullnat_addrs.data(), cfg.nfullnat), cfg.worker,
            cfg.workers, cfg.fullnat_port_first, cfg.fullnat_port_last, cfg.fullnat_port_hold,
            {fullnat_holds, cfg.fullnat_port_start}),
      fullnat_holds_(fullnat_holds),
      counters_storage_(1),
      counters_(&counters_storage_[0]) {
  // Sweep period in ticks: 1 s, or longer so that at most 2 M records are examined per second.
  constexpr uint64_t kRecordsPerSecond = 2'000'000;
  const uint64_t cap = cfg.flow_capacity == 0 ? 1 : cfg.flow_capacity;
  const double sweep_s = cap <= kRecordsPerSecond ? 1.0 : double(cap) / kRecordsPerSecond;
  const double interval = sweep_s * double(cfg.ticks_per_second) * kAgeBatch / double(cap);
  age_interval_ = interval < 1 ? 1 : static_cast<Tick>(interval);
  syn_budget_ = cfg.syn_budget != 0 && cfg.syn_budget < table_.capacity() ? cfg.syn_budget
                                                                          : table_.capacity();
  syn_high_water_ = syn_budget_ / 2;
  if (cfg.stateless_rate != 0) {
    // A tenth of a second: a burst is noticed within it, and a second's rate is not spent in
    // its first moments.
    rate_window_ = cfg.ticks_per_second >= 10 ? cfg.ticks_per_second / 10 : 1;
    const uint64_t per_window = uint64_t{cfg.stateless_rate} * rate_window_ /
                                (cfg.ticks_per_second ? cfg.ticks_per_second : 1);
    rate_window_max_ =
        per_window == 0 ? 1 : static_cast<uint32_t>(std::min<uint64_t>(per_window, UINT32_MAX));
  }
  if (cfg_.syn_timeout_pressure == 0 || cfg_.syn_timeout_pressure > cfg_.syn_timeout)
    cfg_.syn_timeout_pressure = cfg_.syn_timeout;
  for (size_t i = 0; i < kMaxPorts; ++i) {
    uint8_t word[8] = {};
    cfg.ports[i].mac.store(word);
    mac_key_[i] = dst_mac_key(word);
    store_be16(word + 6, kEtherTypeIpv4);
    std::memcpy(&eth_src_word_[i], word, sizeof word);
  }
  for (uint16_t i = 0; i < cfg.nports; ++i)
    local_filter_ |= uint64_t{1} << ((cfg.ports[i].ip * 0x9e3779b1u) >> 26);
  for (uint8_t i = 0; i < cfg.nfullnat; ++i)
    local_filter_ |= uint64_t{1} << ((cfg.fullnat_addrs[i] * 0x9e3779b1u) >> 26);
  // New flows must not take the creation number of a restored one: it keys the SYN cache.
  if (table_.size() != 0) adopt_flows();
}

void Processor::reset() {
  table_.reset();
  sched_.reset(cfg_.hash_seed ^ (uint64_t{cfg_.worker} << 32));
  for (size_t i = 0; i < syn_cache_.size(); ++i) syn_cache_[i] = SynSlot{};
  std::fill(fullnat_holds_.begin(), fullnat_holds_.end(), uint64_t{0});  // as a new file's
  snat_ = SnatPorts(std::span<const uint32_t>(cfg_.fullnat_addrs.data(), cfg_.nfullnat),
                    cfg_.worker, cfg_.workers, cfg_.fullnat_port_first, cfg_.fullnat_port_last,
                    cfg_.fullnat_port_hold, {fullnat_holds_, cfg_.fullnat_port_start});
  // All zero bytes, as the new mapping was (a memset: ASan does not instrument it, and the
  // fuzz target resets for every input).
  std::memset(static_cast<void*>(counters_), 0, sizeof(WorkerCounters));
  serial_ = 0;
  now_ = 0;
  icmp_limit_ = IcmpLimiter{};
  icmp_relay_limit_ = IcmpLimiter{};
  age_due_ = 0;
  created_since_age_ = 0;
  rate_window_start_ = 0;
  rate_window_flows_ = 0;
}

void Processor::adopt_flows() {
  for (uint32_t idx = 0; idx < table_.capacity(); ++idx) {
    const Flow& f = table_.at(idx);
    if (!f.in_use) continue;
    // A reset record (backend_stopped()) names no backend and is not counted as a flow.
    const bool reset = f.state == TcpState::kReset && f.backend == kNoBackend;
    if ((!reset && (raw(f.backend) > raw(kGoneBackend) || f.state > TcpState::kClosed)) ||
        f.client_port_id >= cfg_.nports || f.backend_port_id >= cfg_.nports ||
        f.forward > ForwardMode::kFullnat || f.neighbor >= kMaxNeighbors ||
        (f.fullnat() && !snat_.claim(idx, f.local_addr, f.local_port))) {
      table_.erase(idx);
      continue;
    }
    if (f.serial > serial_) serial_ = f.serial;
    if (f.fullnat()) counters_->fullnat[f.local_addr].ports_in_use.add();
    if (reset) continue;
    counters_->flows_active.add();
    counters_->backend[raw(f.backend)].flows_active.add();
  }
  snat_.rebuild_free();
}

bool Processor::is_local(uint32_t ip) const {
  for (uint16_t i = 0; i < cfg_.nports; ++i)
    if (cfg_.ports[i].ip == ip) return true;
  return false;
}

Verdict Processor::process(Frame& f, uint16_t in_port, const Pool& pool, Tick now) {
  ParsedPacket pk;
  parse_received(f.data(), f.len, pk, f.ip_csum_ok, mac_key_[in_port]);
  now_ = now;
  return dispatch(f, pk, in_port, pool, now);
}

void Processor::process_burst(Frame* frames, uint16_t n, uint16_t in_port, const Pool& pool,
                              Tick now, Verdict* out) {
  uint16_t ports[kMaxBurst];
  for (uint16_t& p : ports) p = in_port;
  process_burst(frames, ports, n, pool, now, out);
}

void Processor::process_burst(Frame* frames, const uint16_t* in_ports, uint16_t n, const Pool& pool,
                              Tick now, Verdict* out) {
  // Not value-initialized: the parse sets every field of the entries used (the fast parse
  // those of the established path, complete_common_tcp() the rest before any other path).
  union Parsed {
    Parsed() {}
    ParsedPacket p[kMaxBurst];
  } parsed;
  ParsedPacket* pk = parsed.p;
  uint64_t hash[kMaxBurst];
  uint32_t hint[kMaxBurst];
  if (n > kMaxBurst) n = kMaxBurst;
  now_ = now;
  for (uint16_t i = 0; i < n; ++i) {
    const uint8_t* p = frames[i].data();
    if (parse_received_common(p, frames[i].len, pk[i], frames[i].ip_csum_ok, mac_key_[in_ports[i]]))
        [[likely]] {
      // pk[i] holds only what an established flow's packet needs: complete_common_tcp() below
      // fills the rest before any other path reads it.
      // The key's words straight from the frame (fixed offsets), not from pk[i]'s fields.
      constexpr size_t kAddrs = kEthHeaderLen + ip_off::kSrc;
      constexpr size_t kPorts = kEthHeaderLen + kIpv4HeaderLen + tcp_off::kSport;
      hash[i] = table_.hash_words(load_be64(p + kAddrs), load_be32(p + kPorts));
    } else {
      parse_received(p, frames[i].len, pk[i], frames[i].ip_csum_ok, mac_key_[in_ports[i]]);
      if (pk[i].kind != PacketKind::kTcp) {
        hash[i] = 0;  // the record stage's input for every frame; unused
        continue;
      }
      hash[i] = table_.hash(key_of(pk[i]));
    }
    // The primary bucket only, for a SYN too: its miss finds no signature there, and the record
    // stage then prefetches the secondary bucket, a whole stage before the lookup reads it.
    table_.prefetch(hash[i]);
  }
  // Every frame's, TCP or not (the others' hints are never read): no test per frame.
  table_.prefetch_records(hash, hint, n);
  const Pool::ServingView serving = pool.serving_view();
  const Tick expires = now + cfg_.established_timeout;
  for (uint16_t i = 0; i < n; ++i) {
    if (pk[i].kind != PacketKind::kTcp) {
      out[i] = dispatch(frames[i], pk[i], in_ports[i], pool, now);
      continue;
    }
    Dir dir;
    uint32_t idx = table_.match_hint(hint[i], key_of(pk[i]), dir);
    Verdict v;
    if (idx != FlowTable::kNoFlow && table_.in_use_dnat(idx) &&
        forward_established(frames[i], pk[i], idx, dir, serving, expires, v)) [[likely]] {
      store_verdict(out[i], v);
    } else {
      // The hint named no record in use with this key (stale, or none): the full lookup.
      if (idx == FlowTable::kNoFlow || !table_.at(idx).in_use)
        idx = table_.lookup(key_of(pk[i]), hash[i], dir);
      // forward_established changed nothing: the frame is still the one parsed. Every untagged
      // TCP frame is one the fast parse took or one whose full parse complete_common_tcp()
      // repeats exactly (no mark needed).
      if (pk[i].l3 == kEthHeaderLen) complete_common_tcp(frames[i].data(), pk[i]);
      out[i] = handle_tcp(frames[i], pk[i], hash[i], idx, dir, in_ports[i], pool, now);
    }
  }
}

// Most packets: a data segment or ACK of an established dnat flow whose backend serves, with
// TTL to spare and a known next hop. What from_client/from_backend and to_backend/to_client do
// for it, without their calls and checks; anything else (false, nothing changed) takes them.
bool Processor::forward_established(Frame& f, const ParsedPacket& pk, uint32_t idx, Dir dir,
                                    Pool::ServingView serving, Tick expires, Verdict& v) {
  using namespace tcp_flag;
  Flow& fl = table_.at(idx);
  // The caller found the record in use and its mode dnat (FlowTable::in_use_dnat).
  if (fl.state != TcpState::kEstablished || (pk.tcp_flags & (kSyn | kFin | kRst)) || pk.ttl <= 1 ||
      !serving.serving_flow(fl.backend))
    return false;
  if (dir == Dir::kFromClient) {
    uint64_t mac;
    if (!neighbors_.lookup_image(fl.neighbor, mac)) return false;
    fl.expires = expires;
    v = dnat_to_backend(f, pk, fl, mac);
  } else {
    fl.expires = expires;
    v = dnat_to_client(f, pk, fl);
  }
  return true;
}

Verdict Processor::dispatch(Frame& f, const ParsedPacket& pk, uint16_t in_port, const Pool& pool,
                            Tick now) {
  switch (pk.kind) {
    case PacketKind::kTcp: {
      const uint64_t hash = table_.hash(key_of(pk));
      Dir dir;
      const uint32_t idx = table_.lookup(key_of(pk), hash, dir);
      return handle_tcp(f, pk, hash, idx, dir, in_port, pool, now);
    }
    case PacketKind::kArp:
      return handle_arp(f, pk, in_port, pool, now);
    case PacketKind::kIcmp:
      return handle_icmp(f, pk, in_port, pool, now);
    case PacketKind::kDrop:
      break;
  }
  return drop(pk.drop);
}

// ---------------------------------------------------------------------------------------------
// ARP: answer for the port's own address and for the VIPs it is the place to ask for (by default
// those inside its subnet: a VIP of the client side is not answered on the backend port); learn
// next hops from what we see.

Verdict Processor::handle_arp(Frame& f, const ParsedPacket& pk, uint16_t in_port, const Pool& pool,
                              Tick now) {
  uint8_t* p = f.data();
  uint8_t* a = p + pk.l3;
  const ArpView arp = read_arp(a);
  const bool learned =
      arp.spa != 0 && neighbors_.learn(arp.spa, in_port, arp.sha, now / cfg_.ticks_per_second);
  if (learned) counters_->arp_learned.add();
  const PortInfo& port = cfg_.ports[in_port];
  // Full-NAT local addresses are answered on the port whose subnet holds them: the backends'.
  const bool for_us =
      arp.tpa == port.ip ||
      (arp.op == 1 && port.answers_arp_for(arp.tpa) && pool.is_vip(arp.tpa)) ||
      (arp.op == 1 && (arp.tpa & port.mask) == (port.ip & port.mask) && snat_.find(arp.tpa) >= 0);
  if (arp.op == 2 || !for_us) {
    // A reply to our request, or a next hop announcing itself (gratuitous ARP): used, not
    // dropped. Anything else on the wire is someone else's conversation.
    if (learned || (arp.op == 2 && for_us))
      return {Action::kConsumed, 0, 0, DropReason::kTruncated};
    return drop(DropReason::kArpNotForUs);
  }
  if (arp.spa == 0 || arp.sha.is_multicast()) return drop(DropReason::kArpMalformed);
  arp.sha.store(p);  // Ethernet destination
  port.mac.store(p + 6);
  store_be16(a + 6, 2);
  port.mac.store(a + 8);
  store_be32(a + 14, arp.tpa);
  arp.sha.store(a + 18);
  store_be32(a + 24, arp.spa);
  counters_->arp_replies.add();
  return tx(in_port);
}

// ---------------------------------------------------------------------------------------------
// ICMP: echo requests to our addresses and VIPs are answered; errors that quote a flow's packet
// follow the flow (icmp_error.cc); nothing else is ours to handle.

Verdict Processor::handle_icmp(Frame& f, const ParsedPacket& pk, uint16_t in_port, const Pool& pool,
                               Tick now) {
  if (is_icmp_error(f.data() + pk.l4)) return icmp_error(f, pk, pool, now);
  if (!is_local(pk.dst_ip) && !pool.is_vip(pk.dst_ip)) return drop(DropReason::kIcmpNotForUs);
  if (is_local(pk.src_ip) || snat_.find(pk.src_ip) >= 0 || pool.is_vip(pk.src_ip))
    return drop(DropReason::kIpBadAddress);
  uint8_t* p = f.data();
  uint8_t* ip = p + pk.l3;
  uint8_t* icmp = p + pk.l4;
  if (icmp[0] != 8) return drop(DropReason::kIcmpUnsupported);
  if (icmp[1] != 0) return drop(DropReason::kIcmpMalformed);
  const MacAddr src_mac = MacAddr::load(p + 6);
  if (src_mac.is_multicast()) return drop(DropReason::kIcmpMalformed);
  src_mac.store(p);
  cfg_.ports[in_port].mac.store(p + 6);
  store_be32(ip + ip_off::kSrc, pk.dst_ip);
  store_be32(ip + ip_off::kDst, pk.src_ip);
  ip[ip_off::kTtl] = 64;
  store_be16(ip + ip_off::kCsum, 0);
  store_be16(ip + ip_off::kCsum, csum(ip, kIpv4HeaderLen));
  icmp[0] = 0;  // echo reply
  // Recomputed rather than updated (RFC 1624): an all-zero reply (id 0, seq 0, zero payload)
  // must carry 0xffff, where the incremental update gives 0x0000, which fails verification.
  // Echo is a rare path; l4_payload_len is the whole ICMP message, inside the frame.
  store_be16(icmp + 2, 0);
  store_be16(icmp + 2, csum(icmp, pk.l4_payload_len));
  counters_->icmp_echo_replies.add();
  return tx(in_port);
}

// ---------------------------------------------------------------------------------------------
// TCP

Verdict Processor::handle_tcp(Frame& f, const ParsedPacket& pk, uint64_t hash, uint32_t idx,
                              Dir dir, uint16_t in_port, const Pool& pool, Tick now) {
  // A flow in this worker's table is this worker's: only the owner of a flow creates it. So a
  // hit is handled at once, and the service and owner are looked up on a miss only.
  if (idx != FlowTable::kNoFlow) {
    if (dir == Dir::kFromClient) return from_client(f, pk, hash, idx, in_port, pool, now);
    // Never a full-NAT flow (not indexed under its backend key): its backend answers its local
    // address (fullnat_reply below).
    return from_backend(f, pk, idx, pool, now);
  }
  if (snat_.addresses() != 0) {
    const int li = snat_.find(pk.dst_ip);
    if (li >= 0) return fullnat_reply(f, pk, li, pool, now);
  }
  const PoolService* svc = pool.find(pk.dst_ip, pk.dst_port);
  if (cfg_.workers > 1) {
    // Toward a VIP the client is the source; otherwise (a backend's reply) the destination.
    // Addresses of services removed since start count as VIPs here, so that their flows'
    // remaining client packets still reach the owner (which resets them).
    const bool to_vip = svc || pool.was_service(pk.dst_ip, pk.dst_port);
    const uint16_t owner = to_vip
                               ? flow_owner(pk.src_ip, pk.src_port, cfg_.workers, cfg_.reta_size)
                               : flow_owner(pk.dst_ip, pk.dst_port, cfg_.workers, cfg_.reta_size);
    if (owner != cfg_.worker) return {Action::kHandoff, 0, owner, DropReason::kTruncated};
  }
  // Only the owner judges the source: at another worker the packet of a flow missed because
  // the flow is the owner's (it may be one whose client has since become a backend's address,
  // which keeps going until it ends).
  if (!svc) return drop(is_local(pk.dst_ip) ? DropReason::kLocalTcp : DropReason::kNotForUs);
  if (spoofed_client(pk.src_ip, pool)) return drop(DropReason::kIpBadAddress);
  using namespace tcp_flag;
  if ((pk.tcp_flags & (kSyn | kAck)) == kSyn)
    return new_flow_inline(f, pk, hash, in_port, pool, *svc, now, false);
  return miss(f, pk, hash, in_port, pool, *svc, now);
}

// A non-SYN client segment to a service, no flow. With kRehash (maglev services) it is the
// connection of a flow this worker does not know (lbd restarted, the flow moved here from
// another node, its record expired): the table gives the backend every node gives it, and a flow
// there lets it go on. A backend the table names is always active (pool.backend()): never one
// that is draining or stopped.
Verdict Processor::miss(Frame& f, const ParsedPacket& pk, uint64_t hash, uint16_t in_port,
                        const Pool& pool, const PoolService& svc, Tick now) {
  if (svc.miss == MissMode::kRehash && svc.maglev && maglev_pick(pk, pool, svc))
    return new_flow(f, pk, hash, in_port, pool, svc, now, true);
  const bool rst = svc.miss == MissMode::kRst || (svc.miss != MissMode::kDrop && cfg_.rst_on_miss);
  if (rst && !(pk.tcp_flags & tcp_flag::kRst)) {
    const Verdict v = reply_rst(f, pk, in_port);
    if (v.action == Action::kTx) counters_->rst_flow_miss.add();
    return v;
  }
  return drop(DropReason::kFlowMiss);
}

Verdict Processor::new_flow(Frame& f, const ParsedPacket& pk, uint64_t hash, uint16_t in_port,
                            const Pool& pool, const PoolService& svc, Tick now, bool rehash) {
  return new_flow_inline(f, pk, hash, in_port, pool, svc, now, rehash);
}

namespace {
// memcpy(dst, src, n) for the 40 to 80 bytes of a SYN's IPv4 and TCP headers, as fixed-size
// copies that overlap (32 bytes from each end, and the middle 32 when n > 64): the variable
// memcpy was a `rep movsq` with its set-up (callgrind: ~32 instructions per SYN, ~12 now).
// Neither end reads or writes past n bytes.
[[gnu::always_inline]] inline void copy_syn_headers(uint8_t* dst, const uint8_t* src, size_t n) {
  static_assert(kIpv4HeaderLen + kTcpHeaderLen >= 32 && kIpv4HeaderLen + 60 <= 96);
  std::memcpy(dst, src, 32);
  if (n > 64) std::memcpy(dst + 32, src + 32, 32);
  std::memcpy(dst + n - 32, src + n - 32, 32);
}
// A new record's client side, in words: its address and the VIP (the parse's two adjacent
// addresses, in the record's order), its port and the VIP's port (likewise), and its MAC (frame
// bytes 6-11) as one 8-byte copy whose two extra bytes (the EtherType) land on the record's bit
// fields and state, which the caller writes after it. Field by field, gcc reloaded the MAC from
// three stack copies (callgrind: -3 instructions per SYN).
[[gnu::always_inline]] inline void copy_client_side(Flow& fl, const ParsedPacket& pk,
                                                    const uint8_t* frame) {
  static_assert(offsetof(ParsedPacket, dst_ip) == offsetof(ParsedPacket, src_ip) + 4 &&
                offsetof(Flow, vip) == offsetof(Flow, client_ip) + 4 &&
                offsetof(ParsedPacket, dst_port) == offsetof(ParsedPacket, src_port) + 2 &&
                offsetof(Flow, vport) == offsetof(Flow, client_port) + 2);
  static_assert(offsetof(Flow, client_mac) + 8 == offsetof(Flow, state) + 1 &&
                offsetof(Flow, state) + 1 < sizeof(Flow));
  auto* rec = reinterpret_cast<uint8_t*>(&fl);
  std::memcpy(rec + offsetof(Flow, client_ip), &pk.src_ip, 8);
  std::memcpy(rec + offsetof(Flow, client_port), &pk.src_port, 4);
  std::memcpy(rec + offsetof(Flow, client_mac), frame + 6, 8);
}
}  // namespace

Verdict Processor::new_flow_inline(Frame& f, const ParsedPacket& pk, uint64_t hash,
                                   uint16_t in_port, const Pool& pool, const PoolService& svc,
                                   Tick now, bool rehash) {
  // The backend's replies go to the MAC the SYN came from (frame bytes 6-11, copied into the
  // record below): never to a group address.
  if (f.data()[6] & 1) return drop(DropReason::kEthBadSource);
  // A router hop (dnat, fullnat) does not forward a packet whose TTL ends here: no flow for it.
  if (svc.forward != ForwardMode::kTunnel && f.data()[pk.l3 + ip_off::kTtl] <= 1)
    return time_exceeded(f, pk, in_port);
  bool stateless = false;
  if (!rehash) {
    const bool full = table_.embryonic() >= syn_budget_ || table_.size() == table_.capacity();
    // The policy matters only when the table or the budget is full, or for a maglev service
    // (the only kind that may go stateless): the common SYN takes neither branch.
    if (full || svc.maglev) [[unlikely]] {
      const SynPolicy p = svc.syn_policy == SynPolicy::kDefault ? cfg_.syn_policy : svc.syn_policy;
      if (p == SynPolicy::kStateless && svc.maglev) {
        stateless = full || over_stateless_rate(now);
      } else if (full) {
        DropReason why;
        if (!syn_room(p, why)) {
          counters_->flows_refused.add();
          return drop(why);
        }
      }
    }
  } else if (table_.size() == table_.capacity() && table_.embryonic() != 0) {
    // A rehashed segment belongs to a connection past its handshake (a stateless SYN's ACK, a
    // flow from before a restart): it takes the place of the oldest embryonic flow.
    DropReason why;
    syn_room(SynPolicy::kEvictEmbryonic, why);
  }
  const PoolBackend* b =
      svc.maglev ? maglev_pick(pk, pool, svc) : sched_.pick_new(pool, svc, *counters_);
  if (!b) {
    if (!cfg_.rst_on_no_backend) return drop(DropReason::kNoBackend);
    const Verdict v = reply_rst(f, pk, in_port);
    if (v.action == Action::kTx) counters_->rst_no_backend.add();
    return v;
  }
  if (++serial_ == 0) serial_ = 1;  // 0 marks an unused SYN-cache slot
  // The record is written once, in place in the free record the insert takes (a stateless SYN,
  // which makes no record, writes stateless_flow_): every field but in_use, which commit sets.
  // The record is a freed one, not zeroed: a field added to Flow must be set here too.
  Flow* slot = stateless ? &stateless_flow_ : table_.next_free();
  if (!slot) {
    counters_->flows_refused.add();
    return drop(DropReason::kFlowTableFull);
  }
  // The backend key's two bucket lines, which the insert reads (nearly always a miss, so both):
  // in a large table they are cache misses, fetched here while the record is written. (A
  // full-NAT flow is not indexed under it, Flow::indexes_backend_key: computed anyway, so that
  // the common SYN takes no branch more.)
  const bool fullnat = svc.forward == ForwardMode::kFullnat;
  const FlowKey backend_key{b->ip, pk.src_ip, b->port, pk.src_port};
  const uint64_t backend_hash = table_.hash(backend_key);
  if (!stateless) table_.prefetch(backend_hash, true);
  Flow& fl = *slot;
  fl.expires = now + (syn_pressure() ? cfg_.syn_timeout_pressure : cfg_.syn_timeout);
  fl.created = now;
  copy_client_side(fl, pk, f.data());
  fl.backend_ip = b->ip;
  fl.backend = b->id;
  fl.serial = serial_;
  fl.backend_port = b->port;
  fl.service = raw(svc.id);
  fl.client_vlan = pk.vlan_tci;
  fl.client_port_id = static_cast<uint8_t>(in_port);
  fl.backend_port_id = static_cast<uint8_t>(b->out_port);
  fl.neighbor = b->neighbor;
  fl.local_port = 0;
  fl.client_tagged = pk.tagged;
  fl.local_addr = 0;
  // A tunnel flow's backend answers the client directly: lbd never sees its SYN-ACK (nor RST),
  // so the handshake counts as answered from the start (kSynRecv: SYN timeout until the client's
  // ACK makes it established). The SYN-retry logic, which waits in kSynSent for an answer that
  // would never come, then leaves it alone: a retransmitted SYN goes to the same backend.
  fl.state = rehash                                ? TcpState::kEstablished
             : svc.forward == ForwardMode::kTunnel ? TcpState::kSynRecv
                                                   : TcpState::kSynSent;
  fl.fin_seen = 0;
  fl.retries = 0;
  fl.in_use = 0;
  fl.forward = svc.forward;
  if (stateless) {
    // No record: the client's next segments miss and the maglev rehash gives them this same
    // backend (the table's pick for the tuple), making a flow only once the client answers.
    counters_->syn_stateless.add();
    return to_backend(f, pk, fl);
  }
  uint32_t idx;
  const FlowTable::InsertResult r =
      fullnat ? table_.commit_client_after_miss(hash, idx)
              : table_.commit_after_miss(hash, backend_key, backend_hash, idx);
  if (r != FlowTable::InsertResult::kOk) {
    counters_->flows_refused.add();
    return drop(r == FlowTable::InsertResult::kConflict ? DropReason::kFlowConflict
                                                        : DropReason::kFlowTableFull);
  }
  if (fullnat) {
    if (const SnatPorts::Alloc bound = fullnat_bind(idx); bound != SnatPorts::Alloc::kOk)
        [[unlikely]] {
      table_.erase(idx);
      counters_->flows_refused.add();
      return drop(bound == SnatPorts::Alloc::kCooling ? DropReason::kFullnatPortsCooling
                                                      : DropReason::kFullnatPortsExhausted);
    }
  }
  // Through a local reference: each counter's store (an atomic) makes gcc load counters_ again.
  WorkerCounters& c = *counters_;
  c.flows_created.add();
  c.flows_active.add();
  ++created_since_age_;
  ++rate_window_flows_;
  BackendCounters& bc = c.backend[raw(b->id)];
  bc.flows_active.add();
  bc.flows_total.add();
  if (rehash) {
    bc.flows_rehashed.add();
    counters_->flows_rehashed.add();
    Flow& nf = table_.at(idx);
    counters_->service[nf.service].flows_rehashed.add();
    track_state(nf, Dir::kFromClient, pk.tcp_flags, now);  // its FIN or RST counts
    return to_backend(f, pk, nf);
  }
  if (syn_cache_.size() != 0 && pk.l4_payload_len == 0 && fl.forward != ForwardMode::kTunnel) {
    // Keep the client's SYN (IP and TCP headers, options included) so that a retry after a
    // backend's RST can replay it to the next backend at once instead of waiting ~1 s for the
    // client's retransmission. Slots are overwritten freely: a lost slot only costs that wait.
    SynSlot& s = syn_cache_[serial_ & (syn_cache_.size() - 1)];
    const size_t n = kIpv4HeaderLen + pk.tcp_header_len;
    s.serial = serial_;
    s.len = static_cast<uint8_t>(n);
    copy_syn_headers(s.hdr, f.data() + pk.l3, n);
  }
  // A dnat SYN with its next hop known: what to_backend() does for it (the TTL was checked
  // above), without its checks for the other modes.
  uint64_t mac;
  if (fl.forward == ForwardMode::kDnat && neighbors_.lookup_image(fl.neighbor, mac))
    return dnat_to_backend(f, pk, fl, mac);
  return to_backend(f, pk, fl);
}

Verdict Processor::from_client(Frame& f, const ParsedPacket& pk, uint64_t hash, uint32_t idx,
                               uint16_t in_port, const Pool& pool, Tick now) {
  using namespace tcp_flag;
  Flow& fl = table_.at(idx);
  if ((pk.tcp_flags & (kSyn | kAck)) == kSyn) {
    const bool serving = pool.serving(fl.backend);
    bool reschedule = false;
    switch (fl.state) {
      case TcpState::kSynSent:
        if (!pool.active(fl.backend)) {
          // Its backend stopped taking new flows while the handshake was pending (health down,
          // drained, removed): nothing is established yet, so move it now.
          if (!resteer(idx, pool, now)) reschedule = true;
        } else if (cfg_.retry_syn_after != 0 && now - fl.created >= cfg_.retry_syn_after &&
                   fl.retries < cfg_.max_retries) {
          // The client is retransmitting a SYN its backend never answered. If no other backend
          // can take it, wait another full delay before counting the backend again.
          counters_->backend[raw(fl.backend)].syn_timeout.add();
          if (!resteer(idx, pool, now)) {
            fl.created = now;
            table_.requeue(idx);  // the list stays in `created` order
          }
        }
        break;
      case TcpState::kSynRecv:
      case TcpState::kEstablished:
        // A SYN inside a live connection goes where the connection is (the backend's TCP
        // answers it); only a backend that has left the pool gives the tuple up.
        reschedule = !serving;
        break;
      case TcpState::kFinWait:
      case TcpState::kTimeWait:
      case TcpState::kClosed:
      case TcpState::kReset:
        // A new connection reusing the tuple: schedule it afresh, never stuck to the old
        // backend (kubernetes #81775).
        reschedule = true;
        break;
    }
    if (reschedule) {
      if (fl.state != TcpState::kReset) {  // a reset flow was released when it was reset
        release(fl);
        counters_->flows_reused.add();
      }
      fullnat_release(fl);
      table_.erase(idx);
      const PoolService* svc = pool.find(pk.dst_ip, pk.dst_port);
      if (!svc) return drop(DropReason::kNotForUs);
      // The pool may have changed since the flow began (its client now a backend's address).
      if (spoofed_client(pk.src_ip, pool)) return drop(DropReason::kIpBadAddress);
      return new_flow(f, pk, hash, in_port, pool, *svc, now);  // its client key just left
    }
  }
  if (!pool.serving(fl.backend))
    return backend_stopped(f, pk, idx, Dir::kFromClient, in_port, pool, now);
  track_state(fl, Dir::kFromClient, pk.tcp_flags, now);
  return to_backend(f, pk, fl);
}

Verdict Processor::from_backend(Frame& f, const ParsedPacket& pk, uint32_t idx, const Pool& pool,
                                Tick now) {
  Flow& fl = table_.at(idx);
  if ((pk.tcp_flags & tcp_flag::kRst) && fl.state == TcpState::kSynSent) {
    // Refused before the handshake: the client has seen nothing yet, so another backend can
    // take the connection without it noticing.
    counters_->backend[raw(fl.backend)].syn_rst.add();
    if (cfg_.retry_on_rst && fl.retries < cfg_.max_retries && resteer(idx, pool, now))
      return replay_syn(f, idx);
  }
  if (!pool.serving(fl.backend))
    return backend_stopped(f, pk, idx, Dir::kFromBackend, fl.backend_port_id, pool, now);
  track_state(fl, Dir::kFromBackend, pk.tcp_flags, now);
  return to_client(f, pk, fl);
}

// The flow's backend was removed or stopped for maintenance (or the flow was reset already: its
// backend is then kNoBackend, which never serves). Every connection of a stopped backend ends
// with an RST to its client, whichever side speaks first:
//  - the client: an RST answering its segment (SEQ = SEG.ACK, exactly what it expects);
//  - the backend (a response in flight, its FIN on an idle keep-alive connection): its segment
//    becomes the RST, reverse-NATed from the VIP, with the backend's SEQ, which is the client's
//    RCV.NXT when the segment is the next in order (RFC 5961 accepts exactly that; a client
//    that finds it merely in its window sends a challenge ACK, answered below).
// The record then stays (kReset) for tcp_closed_timeout: a later client segment (retransmission,
// challenge ACK) gets its own exact RST, and a later backend segment gets one from the client's
// address, so that the backend's socket closes too instead of retransmitting for minutes.
// A handshake that has not reached the client yet (SYN_SENT) moves to another backend instead.
Verdict Processor::backend_stopped(Frame& f, const ParsedPacket& pk, uint32_t idx, Dir d,
                                   uint16_t in_port, const Pool& pool, Tick now) {
  using namespace tcp_flag;
  Flow& fl = table_.at(idx);
  const bool first = fl.state != TcpState::kReset;
  if (first) {
    if (d == Dir::kFromBackend && fl.state == TcpState::kSynSent && resteer(idx, pool, now))
      return replay_syn(f, idx);  // its SYN-ACK: the client has seen nothing yet
    release(fl);
    counters_->flows_reset.add();
    fl.state = TcpState::kReset;
    fl.backend = kNoBackend;  // names no backend: its id can be reused
    table_.settle(idx);
  }
  fl.expires = now + cfg_.closed_timeout;
  Verdict v;
  if (d == Dir::kFromBackend && first) {
    v = rst_to_client(f, pk, fl);
  } else {
    if (pk.tcp_flags & kRst) return drop(DropReason::kBackendStopped);  // no RST for an RST
    v = reply_rst(f, pk, in_port);
  }
  if (v.action == Action::kTx) counters_->rst_backend_stopped.add();
  return v;
}

bool Processor::resteer(uint32_t idx, const Pool& pool, Tick now) {
  Flow& fl = table_.at(idx);
  const PoolService* svc = pool.service(static_cast<ServiceId>(fl.service));
  if (!svc) return false;
  const PoolBackend* b = sched_.pick(pool, *svc, *counters_, fl.backend);
  if (!b) return false;
  const BackendId old = fl.backend;
  if (!table_.rebind(idx, b->id, b->ip, b->port)) return false;
  counters_->backend[raw(old)].flows_active.sub();
  counters_->backend[raw(b->id)].flows_active.add();
  counters_->backend[raw(b->id)].flows_total.add();
  fl.backend_port_id = static_cast<uint8_t>(b->out_port);
  fl.neighbor = b->neighbor;
  fl.retries = static_cast<uint8_t>(fl.retries + 1);
  fl.created = now;
  fl.state = TcpState::kSynSent;
  fl.fin_seen = 0;
  fl.expires = now + cfg_.syn_timeout;
  table_.requeue(idx);
  counters_->retries.add();
  return true;
}

Verdict Processor::replay_syn(Frame& f, uint32_t idx) {
  Flow& fl = table_.at(idx);
  if (syn_cache_.size() == 0) return drop(DropReason::kRetryAbsorbed);
  const SynSlot& s = syn_cache_[fl.serial & (syn_cache_.size() - 1)];
  if (s.serial != fl.serial) return drop(DropReason::kRetryAbsorbed);
  if (size_t{f.off} + kEthHeaderLen + s.len > f.cap) return drop(DropReason::kNoBuffer);
  // The backend's RST becomes the client's SYN: a plain Ethernet header (to_backend rewrites
  // it) and the saved headers, which still address the VIP.
  uint8_t* p = f.data();
  store_be16(p + 12, kEtherTypeIpv4);
  std::memcpy(p + kEthHeaderLen, s.hdr, s.len);
  f.len = static_cast<uint16_t>(kEthHeaderLen + s.len);
  ParsedPacket pk;
  parse_packet(p, f.len, pk);
  if (pk.kind != PacketKind::kTcp) return drop(DropReason::kRetryAbsorbed);
  counters_->retry_syn_replayed.add();
  return to_backend(f, pk, fl);
}

void Processor::track_state(Flow& fl, Dir d, uint8_t flags, Tick now) {
  using namespace tcp_flag;
  if (fl.state == TcpState::kEstablished && !(flags & (kSyn | kFin | kRst))) {
    fl.expires = now + cfg_.established_timeout;  // most packets: data and ACKs
    return;
  }
  track_change(fl, d, flags, now);
}

// Out of line: the established fast path above stays as short as it was before the embryonic
// list (callgrind: +8 instructions per established packet while this was inlined with it).
void Processor::track_change(Flow& fl, Dir d, uint8_t flags, Tick now) {
  using namespace tcp_flag;
  if (flags & kRst) {
    fl.state = TcpState::kClosed;
    fl.expires = now + cfg_.closed_timeout;
    table_.settle(table_.index_of(fl));
    return;
  }
  const TcpState before = fl.state;
  if (d == Dir::kFromClient) {
    if (flags & kFin) fl.fin_seen |= 1;
    if (fl.state == TcpState::kSynRecv && (flags & kAck)) fl.state = TcpState::kEstablished;
  } else {
    if (flags & kFin) fl.fin_seen |= 2;
    if (fl.state == TcpState::kSynSent && (flags & kSyn) && (flags & kAck))
      fl.state = TcpState::kSynRecv;
  }
  if (fl.state != TcpState::kClosed) {
    if (fl.fin_seen == 3)
      fl.state = TcpState::kTimeWait;
    else if (fl.fin_seen)
      fl.state = TcpState::kFinWait;
  }
  // The handshake moved on (SYN-ACK, the tunnel client's ACK, a FIN): no longer embryonic.
  if (fl.state != before) table_.settle(table_.index_of(fl));
  Tick t = cfg_.closed_timeout;
  switch (fl.state) {
    case TcpState::kSynSent:
    case TcpState::kSynRecv:
      t = cfg_.syn_timeout;
      break;
    case TcpState::kEstablished:
      t = cfg_.established_timeout;
      break;
    case TcpState::kFinWait:
      t = cfg_.fin_timeout;
      break;
    case TcpState::kTimeWait:
    case TcpState::kClosed:
    case TcpState::kReset:
      break;
  }
  fl.expires = now + t;
}

void Processor::release(const Flow& fl) {
  counters_->flows_active.sub();
  counters_->backend[raw(fl.backend)].flows_active.sub();
}

bool Processor::over_stateless_rate(Tick now) {
  if (rate_window_max_ == 0) return false;
  if (now - rate_window_start_ >= rate_window_) {
    rate_window_start_ = now;
    rate_window_flows_ = 0;
  }
  return rate_window_flows_ >= rate_window_max_;
}

bool Processor::syn_room(SynPolicy p, DropReason& why) {
  const uint32_t oldest = table_.oldest_embryonic();
  if (p == SynPolicy::kDropNew || oldest == FlowTable::kNoFlow) {
    why = table_.size() == table_.capacity() ? DropReason::kFlowTableFull
                                             : DropReason::kSynBudgetFull;
    return false;
  }
  // Only an embryonic flow is ever evicted: its client has seen nothing from the backend yet
  // (a legitimate one retransmits its SYN), and an established flow is never touched.
  const Flow& victim = table_.at(oldest);
  fullnat_release(victim);
  release(victim);
  counters_->syn_evicted.add();
  table_.erase(oldest);
  return true;
}

uint32_t Processor::age(Tick now, uint32_t budget) {
  now_ = now;  // the time a full-NAT port freed here is released at (fullnat_release)
  uint32_t n = 0;
  if (cfg_.syn_timeout_pressure < cfg_.syn_timeout && syn_pressure() &&
      now >= cfg_.syn_timeout_pressure) {
    // Under a flood, embryonic flows older than the pressure timeout go first, from the list's
    // head (IPVS's and DPVS's defence modes shorten the SYN timeout the same way).
    n = table_.expire_embryonic(now - cfg_.syn_timeout_pressure, budget,
                                [this](uint32_t, const Flow& fl) {
                                  fullnat_release(fl);
                                  release(fl);
                                  counters_->flows_expired.add();
                                  counters_->syn_expired_pressure.add();
                                });
  }
  return n + table_.expire(now, budget - n, [this](uint32_t, const Flow& fl) {
    fullnat_release(fl);  // its port is free again only now: after its close timeout
    if (fl.state == TcpState::kReset) return;  // released and counted when it was reset
    release(fl);
    counters_->flows_expired.add();
  });
}

uint32_t Processor::age_paced(Tick now) {
  uint64_t records = uint64_t{created_since_age_} * kAgePerNewFlow;
  created_since_age_ = 0;
  if (now >= age_due_) {
    const Tick batches = (now - age_due_) / age_interval_ + 1;
    records += batches * kAgeBatch;
    // Far behind (more than a catch-up's worth): restart the pace from now rather than owe it.
    age_due_ = batches > kAgeMaxPerPoll / kAgeBatch ? now + age_interval_
                                                    : age_due_ + batches * age_interval_;
  }
  return age(now, records > kAgeMaxPerPoll ? kAgeMaxPerPoll : static_cast<uint32_t>(records));
}

// ---------------------------------------------------------------------------------------------
// Rewrites

bool Processor::write_l2_slow(Frame& f, const ParsedPacket& pk, const MacAddr& dst,
                              const MacAddr& src, bool tagged, uint16_t tci) {
  const size_t l2 = tagged ? kEthHeaderLen + kVlanTagLen : kEthHeaderLen;
  const size_t ip_at = size_t{f.off} + pk.l3;
  if (ip_at < l2) return false;
  const size_t start = ip_at - l2;
  uint8_t* e = f.buf() + start;
  dst.store(e);
  src.store(e + 6);
  if (tagged) {
    store_be16(e + 12, kEtherTypeVlan);
    store_be16(e + 14, tci);
  }
  store_be16(e + l2 - 2, kEtherTypeIpv4);
  f.move_start(start);
  f.len = static_cast<uint16_t>(l2 + pk.ip_total_len);  // drops any Ethernet padding
  return true;
}

namespace {
// What TTL - 1 adds to the IPv4 checksum: the TTL is the high byte of the word at offset 8, and
// for any word w >= 0x100 (TTL >= 1, which every caller has checked) csum_delta16(w, w - 0x100)
// is ~w + w - 0x100 = 0xffff - 0x100, whatever the word: no need to read it.
constexpr uint32_t kTtlDecrementDelta = 0xffff - 0x100;
// TTL - 1 with the IPv4 checksum updated. The TTL must be at least 1.
inline void decrement_ttl(uint8_t* ip) {
  store_be16(ip + ip_off::kCsum, csum_apply(load_be16(ip + ip_off::kCsum), kTtlDecrementDelta));
  --ip[ip_off::kTtl];
}
// One dnat hop: the address at `addr_at` of the IPv4 header `ip` becomes `to`, the TCP port at
// `port_at` of `t` becomes `pto`, and the TTL goes down by one. The TCP checksum covers the
// address through the pseudo-header, so both checksums take the address change (RFC 1624); the
// TTL is the IPv4 header's alone (kTtlDecrementDelta: the TTL is at least 1). All of it in the
// frame's byte order (csum_add32): the old address and port are read from the frame, the
// checksums are loaded and stored unswapped, and only `to` and `pto` are swapped, as their
// stores need anyway. Always inline: its callers are, and gcc's growth limits otherwise call it
// out of line from handle_tcp, where a SYN's rewrite is inlined.
[[gnu::always_inline]] inline void nat_hop(uint8_t* ip, uint8_t* t, size_t addr_at, uint32_t to,
                                           size_t port_at, uint16_t pto) {
  static_assert(kTtlDecrementDelta == 0xfeff);
  constexpr uint32_t kTtlDelta = std::endian::native == std::endian::little ? 0xfffe : 0xfeff;
  uint32_t from_w, to_w;
  uint16_t pfrom_w, pto_w, ic, tc;
  store_be32(reinterpret_cast<uint8_t*>(&to_w), to);
  store_be16(reinterpret_cast<uint8_t*>(&pto_w), pto);
  std::memcpy(&from_w, ip + addr_at, sizeof from_w);
  std::memcpy(&pfrom_w, t + port_at, sizeof pfrom_w);
  std::memcpy(&ic, ip + ip_off::kCsum, sizeof ic);
  std::memcpy(&tc, t + tcp_off::kCsum, sizeof tc);
  const uint32_t d = csum_add32(~from_w, to_w);
  ic = static_cast<uint16_t>(
      ~csum_fold32(csum_add32(d, uint32_t{static_cast<uint16_t>(~ic)} + kTtlDelta)));
  tc = static_cast<uint16_t>(~csum_fold32(csum_add32(
      d, uint32_t{static_cast<uint16_t>(~tc)} + static_cast<uint16_t>(~pfrom_w) + pto_w)));
  std::memcpy(ip + ip_off::kCsum, &ic, sizeof ic);
  --ip[ip_off::kTtl];
  std::memcpy(t + tcp_off::kCsum, &tc, sizeof tc);
  std::memcpy(ip + addr_at, &to_w, sizeof to_w);
  std::memcpy(t + port_at, &pto_w, sizeof pto_w);
}
}  // namespace

Verdict Processor::to_backend(Frame& f, const ParsedPacket& pk, Flow& fl) {
  const std::optional<MacAddr> mac = neighbors_.lookup(fl.neighbor);
  if (!mac) return drop(DropReason::kNeighborUnresolved);
  if (fl.forward == ForwardMode::kTunnel) return tunnel_to_backend(f, pk, fl, *mac);
  uint8_t* ip = f.data() + pk.l3;
  uint8_t* t = f.data() + pk.l4;
  if (ip[ip_off::kTtl] <= 1) return time_exceeded(f, pk, fl.client_port_id);
  if (fl.fullnat()) {
    fullnat_to_backend(ip, t, fl, snat_.address(fl.local_addr));
    decrement_ttl(ip);
    return l2_to_backend(f, pk, fl, mac->image());
  }
  return dnat_to_backend(f, pk, fl, mac->image());
}

// DNAT: VIP:vport -> backend:port.
Verdict Processor::dnat_to_backend(Frame& f, const ParsedPacket& pk, Flow& fl, uint64_t mac) {
  nat_hop(f.data() + pk.l3, f.data() + pk.l4, ip_off::kDst, fl.backend_ip, tcp_off::kDport,
          fl.backend_port);
  return l2_to_backend(f, pk, fl, mac);
}

Verdict Processor::l2_to_backend(Frame& f, const ParsedPacket& pk, Flow& fl, uint64_t mac) {
  if (pk.l3 == kEthHeaderLen) [[likely]]
    write_l2_untagged(f, pk, mac, fl.backend_port_id);
  else if (!write_l2_slow(f, pk, MacAddr::from_image(mac), cfg_.ports[fl.backend_port_id].mac,
                          false, 0))
    return drop(DropReason::kNoBuffer);
  BackendCounters& bc = counters_->backend[raw(fl.backend)];
  bc.packets_in.add();
  bc.bytes_in.add(pk.ip_total_len);
  return tx(fl.backend_port_id);
}

Verdict Processor::to_client(Frame& f, const ParsedPacket& pk, Flow& fl) {
  uint8_t* ip = f.data() + pk.l3;
  uint8_t* t = f.data() + pk.l4;
  if (ip[ip_off::kTtl] <= 1) return time_exceeded(f, pk, fl.backend_port_id);
  if (fl.fullnat()) {
    fullnat_to_client(ip, t, fl, snat_.address(fl.local_addr));
    decrement_ttl(ip);
    return l2_to_client(f, pk, fl);
  }
  return dnat_to_client(f, pk, fl);
}

// Reverse NAT: backend:port -> VIP:vport, so the client only ever sees the VIP.
Verdict Processor::dnat_to_client(Frame& f, const ParsedPacket& pk, Flow& fl) {
  nat_hop(f.data() + pk.l3, f.data() + pk.l4, ip_off::kSrc, fl.vip, tcp_off::kSport, fl.vport);
  return l2_to_client(f, pk, fl);
}

Verdict Processor::l2_to_client(Frame& f, const ParsedPacket& pk, Flow& fl) {
  // The client's MAC and the two bytes after it in the record: one load.
  static_assert(offsetof(Flow, client_mac) + sizeof(uint64_t) <= sizeof(Flow));
  if (!fl.client_tagged && pk.l3 == kEthHeaderLen) [[likely]] {
    uint64_t mac;
    std::memcpy(&mac, reinterpret_cast<const uint8_t*>(&fl) + offsetof(Flow, client_mac),
                sizeof mac);
    write_l2_untagged(f, pk, mac, fl.client_port_id);
  } else if (!write_l2_slow(f, pk, fl.client_mac, cfg_.ports[fl.client_port_id].mac,
                            fl.client_tagged != 0, fl.client_vlan)) {
    return drop(DropReason::kNoBuffer);
  }
  BackendCounters& bc = counters_->backend[raw(fl.backend)];
  bc.packets_out.add();
  bc.bytes_out.add(pk.ip_total_len);
  return tx(fl.client_port_id);
}

// An RST answering the segment in `f` (RFC 793, "Reset Generation"), built in place and sent
// back where the segment came from.
Verdict Processor::reply_rst(Frame& f, const ParsedPacket& pk, uint16_t in_port) {
  using namespace tcp_flag;
  uint8_t* p = f.data();
  const uint8_t* t = p + pk.l4;
  const MacAddr src_mac = MacAddr::load(p + 6);
  if (src_mac.is_multicast()) return drop(DropReason::kIpBadAddress);
  const uint32_t seg_seq = load_be32(t + tcp_off::kSeq);
  const uint32_t seg_ack = load_be32(t + tcp_off::kAck);
  const uint8_t flags = pk.tcp_flags;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t out_flags = kRst;
  if (flags & kAck) {
    seq = seg_ack;
  } else {
    ack = seg_seq + pk.l4_payload_len + ((flags & kSyn) ? 1u : 0u) + ((flags & kFin) ? 1u : 0u);
    out_flags = kRst | kAck;
  }
  src_mac.store(p);
  cfg_.ports[in_port].mac.store(p + 6);
  write_rst(f, pk, pk.dst_ip, pk.src_ip, pk.dst_port, pk.src_port, seq, ack, out_flags);
  return tx(in_port);
}

// The backend's segment in `f` (of flow `fl`) made into an RST to the client, as if the backend
// had sent it: from VIP:vport, SEQ the segment's (one more for a SYN), ACK the segment's.
Verdict Processor::rst_to_client(Frame& f, const ParsedPacket& pk, const Flow& fl) {
  using namespace tcp_flag;
  const uint8_t* t = f.data() + pk.l4;
  const uint32_t seq = load_be32(t + tcp_off::kSeq) + ((pk.tcp_flags & kSyn) ? 1u : 0u);
  const bool acks = (pk.tcp_flags & kAck) != 0;
  write_rst(f, pk, fl.vip, fl.client_ip, fl.vport, fl.client_port, seq,
            acks ? load_be32(t + tcp_off::kAck) : 0, acks ? kRst | kAck : kRst);
  ParsedPacket out = pk;
  out.ip_total_len = kIpv4HeaderLen + kTcpHeaderLen;
  if (!write_l2(f, out, fl.client_mac, cfg_.ports[fl.client_port_id].mac, fl.client_tagged != 0,
                fl.client_vlan))
    return drop(DropReason::kNoBuffer);
  return tx(fl.client_port_id);
}

// A bare RST (fresh IPv4 header: id 0, DF, TTL 64; no options, window 0) in place of the IPv4
// packet at pk.l3; the Ethernet header is the caller's.
void Processor::write_rst(Frame& f, const ParsedPacket& pk, uint32_t src, uint32_t dst,
                          uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
                          uint8_t flags) {
  uint8_t* ip = f.data() + pk.l3;
  uint8_t* t = f.data() + pk.l4;
  write_ipv4_header(ip, 0, kIpv4HeaderLen + kTcpHeaderLen, 0, 0x4000 /* DF */, 64, kIpProtoTcp, src,
                    dst);
  store_be16(t + tcp_off::kSport, sport);
  store_be16(t + tcp_off::kDport, dport);
  store_be32(t + tcp_off::kSeq, seq);
  store_be32(t + tcp_off::kAck, ack);
  t[tcp_off::kDataOff] = 0x50;
  t[tcp_off::kFlags] = flags;
  store_be16(t + tcp_off::kWindow, 0);
  store_be16(t + tcp_off::kCsum, 0);
  store_be16(t + tcp_off::kUrg, 0);
  const uint32_t pseudo = csum_pseudo_ipv4(src, dst, kIpProtoTcp, kTcpHeaderLen);
  store_be16(t + tcp_off::kCsum, csum_fold(csum_partial(t, kTcpHeaderLen, pseudo)));
  f.len = static_cast<uint16_t>(pk.l3 + kIpv4HeaderLen + kTcpHeaderLen);
}

}  // namespace lb::core
