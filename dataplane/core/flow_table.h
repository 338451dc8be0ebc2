#pragma once
// The per-worker flow table. One record per TCP connection, reachable from both directions:
//   client -> VIP      key (client_ip, vip, client_port, vport)
//   backend -> client  key (backend_ip, client_ip, backend_port, client_port)
// (a full-NAT flow under its client key only: Flow::indexes_backend_key).
// Fixed capacity, allocated at start-up, owned by one worker: no locks, no allocation after
// construction. The index is a two-choice hash of 8-slot, 64-byte buckets (signature + reference),
// kept under half full at capacity (47 %), so a lookup touches at most two bucket lines and one
// record, and nearly always one: keys stay in their primary bucket while it has room.
// Aging walks the records with a clock hand, a bounded number per call.
// Embryonic records (inserted in kSynSent, the backend has not answered yet) are also on a FIFO
// list, oldest first, kept beside the region (rebuilt on attach): under a SYN flood the
// processor evicts or ages them from its head without ever looking at an established flow.
//
// Records, index and free list live in one region at a fixed base and refer to each other by
// index, never by pointer: the region may be anonymous memory (the default) or a mapping that
// outlives the process (dataplane/flow_memory.h), which a new process re-attaches after repairing
// whatever a kill -9 interrupted half way (repair()).

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "bytes.h"
#include "ids.h"
#include "large_array.h"

namespace lb::core {

using Tick = uint64_t;  // monotonic time in ticks; the table only compares them

struct FlowKey {
  uint32_t src_ip;
  uint32_t dst_ip;
  uint16_t src_port;
  uint16_t dst_port;
  bool operator==(const FlowKey&) const = default;
};

enum class Dir : uint8_t { kFromClient = 0, kFromBackend = 1 };

enum class TcpState : uint8_t {
  kSynSent,      // client SYN forwarded, no answer yet
  kSynRecv,      // backend answered SYN-ACK
  kEstablished,  // client acknowledged
  kFinWait,      // one side sent FIN
  kTimeWait,     // both sides sent FIN
  kClosed,       // RST seen
  // Its backend stopped serving and the client was sent an RST: the record stays for
  // tcp_closed_timeout so that late segments of either side are answered with RSTs too. It no
  // longer counts as a flow (flows_active, lbctl flows) nor names a backend.
  kReset,
};
const char* to_string(TcpState s);

struct alignas(64) Flow {
  Tick expires;
  Tick created;  // when the current backend was chosen (SYN retry timing)
  uint32_t client_ip;
  uint32_t vip;
  uint32_t backend_ip;
  BackendId backend;
  uint32_t serial;  // creation number; ties SYN-cache entries to this flow
  uint16_t client_port;
  uint16_t vport;
  uint16_t backend_port;
  uint16_t service;         // ServiceId
  uint16_t client_vlan;     // 802.1Q TCI the client's packets carried
  uint8_t client_port_id;   // port the client's packets arrive on, and replies leave by
  uint8_t backend_port_id;  // port the backend is reached through
  uint16_t neighbor;        // neighbor-table slot of the backend's next hop
  // Full-NAT (core/snat.h): the local port the backend sees as the client's and, in
  // local_addr, the index of the local address (0 in other modes). The backend's replies find
  // the flow by these (SnatPorts::flow_of), not by the index: its backend key below is never
  // what they carry.
  uint16_t local_port;
  MacAddr client_mac;  // where replies to the client go (learned from its SYN)
  // Bit fields: the record has no byte to spare (at most 16 local addresses).
  uint8_t client_tagged : 1;
  uint8_t local_addr : 7;
  TcpState state;
  uint8_t fin_seen;  // bit 0: client sent FIN, bit 1: backend sent FIN
  uint8_t retries;
  uint8_t in_use;
  ForwardMode forward;  // its service's when it began (a record of an older lbd: 0, dnat)

  bool fullnat() const { return forward == ForwardMode::kFullnat; }
  // Whether the index holds the record under backend_key() too. A full-NAT flow's backend
  // answers its local address and port, where SnatPorts::flow_of finds the flow: its backend
  // key is never what a packet carries, and indexed it would only refuse (kConflict) another
  // flow of the same client ip:port to the same backend through another VIP.
  bool indexes_backend_key() const { return !fullnat(); }

  FlowKey client_key() const { return {client_ip, vip, client_port, vport}; }
  FlowKey backend_key() const { return {backend_ip, client_ip, backend_port, client_port}; }
};
static_assert(sizeof(Flow) == 64, "one cache line per flow");

namespace detail {
// Bits set in a byte: a table, not std::popcount (without -mpopcnt that is a libgcc call).
inline constexpr auto kBitsSet = [] {
  std::array<uint8_t, 256> t{};
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint8_t>(std::popcount(i));
  return t;
}();
// index_add fills a primary bucket up to kSlots - kKeepFree keys before weighing the two
// choices. Measured (capacity inserts at 50 % load, 30 M in all over 2,200 seeds and sizes
// 4 Ki..4 Mi): 2 -> 4.6 % of keys in their secondary bucket, no insert refused; 1 -> 2.1 % but
// 1 refusal in ~300 k; pure two-choice (8) -> 30 % secondary.
inline constexpr int kKeepFree = 2;
inline uint32_t make_ref(uint32_t idx, Dir d) {
  return ((idx << 1) | static_cast<uint32_t>(d)) + 1;
}
}  // namespace detail

class FlowTable {
 public:
  static constexpr uint32_t kNoFlow = UINT32_MAX;
  enum class InsertResult : uint8_t { kOk, kFull, kIndexFull, kConflict };

  // `seed` keys the hash so that a remote party cannot aim collisions at one bucket.
  explicit FlowTable(uint32_t capacity, uint64_t seed = 0x6c62642d666c6f77ull);

  // The same over `region` (region_bytes(capacity) bytes, 64-byte aligned), which the caller
  // owns and keeps mapped for the table's life. kFresh starts empty; kAttach takes the records
  // and index a previous table with this capacity and seed left there (all zero is an empty
  // table), made consistent by repair(), whose report goes to `repaired`. Throws
  // std::invalid_argument when the region is too small or misaligned.
  struct RepairReport;
  enum class Region : uint8_t { kFresh, kAttach };
  FlowTable(uint32_t capacity, uint64_t seed, std::span<std::byte> region, Region how,
            RepairReport* repaired = nullptr);
  static size_t region_bytes(uint32_t capacity);

  FlowTable(FlowTable&& o) noexcept;
  FlowTable& operator=(FlowTable&&) = delete;
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  // Makes a table left by a process that may have died in the middle of an insert, erase or
  // rebind consistent: drops index references that do not lead to a record in use whose key in
  // that direction hashes to the slot (or that repeat one already seen), erases records in use
  // whose two references are not both there (or that another record with the same key shadows),
  // and rebuilds the free list and the count. Whatever it keeps is findable from both keys.
  struct RepairReport {
    uint32_t kept = 0;             // records in use afterwards
    uint32_t refs_dropped = 0;     // index slots cleared
    uint32_t records_dropped = 0;  // records in use that were erased
  };
  RepairReport repair();
  // Empty, as a fresh table over zeroed memory is: every record and index slot zero, every record
  // free (Processor::reset()).
  void reset();

  uint64_t hash(const FlowKey& k) const {
    return hash_words(uint64_t{k.src_ip} << 32 | k.dst_ip, uint32_t{k.src_port} << 16 | k.dst_port);
  }
  // hash() of the key whose addresses are `addrs` (source in the high word) and ports `ports`
  // (source port in the high half): a TCP/IPv4 frame's bytes 12-19 of the IPv4 header and 0-3 of
  // the TCP header, read as one big-endian 64-bit and one 32-bit word.
  uint64_t hash_words(uint64_t addrs, uint32_t ports) const {
    uint64_t a = addrs ^ seed_;
    const uint64_t b = uint64_t{ports} ^ (seed_ >> 17);
    a *= 0x9e3779b97f4a7c15ull;
    a ^= a >> 32;
    a ^= b * 0xc2b2ae3d27d4eb4full;
    a *= 0x165667b19e3779f9ull;
    a ^= a >> 29;
    return a;
  }
  // First stage of a burst: the bucket lines of `h` (both when a miss is likely: a SYN).
  // Always inline: gcc 12 finds a function whose only effect is __builtin_prefetch free of side
  // effects and deletes its calls (its dead-store elimination removed both calls of this one,
  // process_burst's and new_flow's in handle_tcp, so that no bucket was prefetched before the
  // record stage read it); inlined, the prefetches stay.
  [[gnu::always_inline]] void prefetch(uint64_t h, bool likely_miss = false) const {
    // Keys go to their primary bucket while it has room (index_add), so that one line is
    // nearly always the only one a hit needs; a miss reads both.
    __builtin_prefetch(&buckets_[bucket1(h)]);
    if (likely_miss) __builtin_prefetch(&buckets_[bucket2(h)]);
  }

  // The flow `k` belongs to, with the direction it matched; kNoFlow when none.
  uint32_t lookup(const FlowKey& k, uint64_t h, Dir& dir) const;
  // The established path's lookup, from `hint` (what prefetch_record() returned): a hit there,
  // the common case, reads no bucket again. match_hint: the record the hint names when its key
  // is `k`, in use or not (the hint may be stale: the burst's earlier packets erased or rebound
  // flows), else kNoFlow. in_use_dnat: that record is in use (a record in use is always indexed
  // under its keys, so it is the flow of `k`) and forwards by dnat, the two bytes read as one
  // 16-bit word and tested once. Anything else takes lookup().
  uint32_t match_hint(uint32_t hint, const FlowKey& k, Dir& dir) const {
    return match(hint, k, dir);
  }
  bool in_use_dnat(uint32_t idx) const {
    static_assert(offsetof(Flow, forward) == offsetof(Flow, in_use) + 1 &&
                  sizeof(ForwardMode) == 1 && static_cast<uint8_t>(ForwardMode::kDnat) == 0);
    uint16_t w;
    std::memcpy(&w, reinterpret_cast<const uint8_t*>(&flows_[idx]) + offsetof(Flow, in_use),
                sizeof w);
    return w == (std::endian::native == std::endian::little ? 0x0001 : 0x0100);
  }

  // Second stage of a burst: with the primary bucket of `h` in cache (prefetch()), prefetches
  // the record its signature points at, so that lookup() then touches only cached lines; when
  // the primary bucket has no such signature (a key in its secondary bucket, or a miss), the
  // secondary bucket instead. Returns the reference it prefetched (0: none), lookup()'s hint.
  uint32_t prefetch_record(uint64_t h) const {
    return prefetch_record_in(buckets_, flows_, nbuckets_, h);
  }
  // prefetch_record() of each of h[0, n) into hint[0, n): the burst's second stage as one loop
  // over the table's constants held in registers (in the caller's loop a byte store into its
  // arrays may alias any member, so the compiler reloaded them for every packet).
  void prefetch_records(const uint64_t* h, uint32_t* hint, uint32_t n) const {
    const Bucket* const buckets = buckets_;
    const Flow* const flows = flows_;
    const uint32_t nbuckets = nbuckets_;
    for (uint32_t i = 0; i < n; ++i) hint[i] = prefetch_record_in(buckets, flows, nbuckets, h[i]);
  }

  // Inserts `f` (both keys; a full-NAT flow its client key only) and returns its index in `idx`.
  // Fails when the table is at capacity (kFull), both candidate buckets of a key are full
  // (kIndexFull), or a key is already present (kConflict: for example two VIPs balanced by dnat
  // to the same backend for the same client ip:port).
  InsertResult insert(const Flow& f, uint32_t& idx);
  // The same when the caller has just looked up the client key with `client_hash` and missed
  // (the new-flow path): the client key is not checked or hashed again.
  InsertResult insert_after_miss(const Flow& f, uint64_t client_hash, uint32_t& idx);
  // insert_after_miss() in two steps, so that the new-flow path writes its record once, in
  // place, instead of building it on the stack and copying it: next_free() is the record the
  // insert will take (nullptr: the table is full, kFull), which the caller fills entirely but for
  // in_use (0: it stays free until commit_after_miss() has indexed both of its keys, so that a
  // failed insert, or a process killed meanwhile, leaves a free record).
  Flow* next_free() { return free_top_ != 0 ? &flows_[free_[free_top_ - 1]] : nullptr; }
  // Inline (defined below): it is most of a SYN's insert, and its call cost the new-flow path
  // ~20 instructions.
  [[gnu::always_inline]] inline InsertResult commit_after_miss(uint64_t client_hash,
                                                               uint32_t& idx) {
    const Flow& f = flows_[free_[free_top_ - 1]];
    if (!f.indexes_backend_key()) return commit_client_after_miss(client_hash, idx);
    return commit_after_miss(client_hash, hash(f.backend_key()), idx);
  }
  // commit_after_miss() of a record indexed under its client key only (a full-NAT flow:
  // Flow::indexes_backend_key()). Out of line: inlined beside the dnat SYN's commit, it cost
  // that SYN ~3 instructions (callgrind).
  [[gnu::noinline]] InsertResult commit_client_after_miss(uint64_t client_hash, uint32_t& idx);
  // The same with the backend key's hash, which the caller computed (to prefetch its buckets).
  [[gnu::always_inline]] inline InsertResult commit_after_miss(uint64_t client_hash,
                                                               uint64_t backend_hash,
                                                               uint32_t& idx) {
    return commit_after_miss(client_hash, flows_[free_[free_top_ - 1]].backend_key(), backend_hash,
                             idx);
  }
  // The same with the backend key too, which must be next_free()'s backend_key(): the caller
  // has it in registers, where reading it back from the record just written cost a SYN ~10
  // instructions.
  [[gnu::always_inline]] inline InsertResult commit_after_miss(uint64_t client_hash,
                                                               const FlowKey& backend_key,
                                                               uint64_t backend_hash,
                                                               uint32_t& idx);

  // Removes its keys and frees the record (and takes it off the embryonic list).
  void erase(uint32_t idx);

  // The embryonic list: records inserted waiting for their handshake (starts_embryonic) join
  // its tail; they leave it when erased or when the caller says the handshake moved on
  // (settle()). O(1), no allocation. Membership is kept in the links beside the region, not in
  // the record, so the record (and the flow file's layout) is what it was.
  static bool starts_embryonic(const Flow& f) {
    // A tunnel flow never sees its backend's SYN-ACK: it starts in kSynRecv and is embryonic
    // until the client's ACK.
    return f.state == TcpState::kSynSent ||
           (f.state == TcpState::kSynRecv && f.forward == ForwardMode::kTunnel);
  }
  uint32_t embryonic() const { return emb_count_; }
  uint32_t oldest_embryonic() const { return emb_head_; }  // kNoFlow when none
  uint32_t next_embryonic(uint32_t idx) const { return links_[idx].next; }
  bool on_list(uint32_t idx) const { return links_[idx].prev != kOffList; }
  void settle(uint32_t idx) {
    if (on_list(idx)) unlink(idx);
  }
  // The record's handshake began again (the caller set its `created` to now): to the list's
  // tail, so that the list stays in `created` order (expire_embryonic stops at the first record
  // not old enough).
  void requeue(uint32_t idx) {
    if (!on_list(idx)) return;
    unlink(idx);
    link_tail(idx);
  }
  uint32_t index_of(const Flow& f) const { return static_cast<uint32_t>(&f - flows_); }

  // Erases embryonic records from the head of the list while their `created` is at or before
  // `cutoff`, at most `budget` of them, calling on_expire(idx, flow) first. Returns how many.
  template <class F>
  uint32_t expire_embryonic(Tick cutoff, uint32_t budget, F&& on_expire) {
    uint32_t n = 0;
    while (n < budget && emb_head_ != kNoFlow && flows_[emb_head_].created <= cutoff) {
      const uint32_t idx = emb_head_;
      on_expire(idx, flows_[idx]);
      erase(idx);
      ++n;
    }
    return n;
  }

  // Moves the flow to another backend (re-keys the backend direction, when the flow is indexed
  // under it). False, with the flow unchanged, when the new key cannot be indexed.
  bool rebind(uint32_t idx, BackendId backend, uint32_t backend_ip, uint16_t backend_port);

  Flow& at(uint32_t idx) { return flows_[idx]; }
  const Flow& at(uint32_t idx) const { return flows_[idx]; }

  // Examines up to `budget` records from the clock hand; calls on_expire(idx, flow) for each one
  // in use whose deadline has passed, then erases it. Returns how many expired. Records are
  // examined 32 at a time: the bucket lines of the expired ones are prefetched before any is
  // erased, so that their misses overlap instead of following one another.
  template <class F>
  uint32_t expire(Tick now, uint32_t budget, F&& on_expire) {
    // A chunk never spans more than the table, so it sees each record once.
    const uint32_t max_chunk = capacity_ < 32 ? capacity_ : 32;
    constexpr uint32_t kChunk = 32;
    uint32_t n = 0;
    while (budget != 0 && max_chunk != 0) {
      const uint32_t chunk = budget < max_chunk ? budget : max_chunk;
      budget -= chunk;
      uint32_t due[kChunk];
      uint64_t hc[kChunk], hb[kChunk];
      uint32_t k = 0;
      // The chunk in runs of consecutive records (two when it wraps past the table's end), so
      // that the per-record loop has no wrap test.
      for (uint32_t left = chunk; left != 0;) {
        const uint32_t run = left < capacity_ - hand_ ? left : capacity_ - hand_;
        left -= run;
        // By pointer, the index computed only for a record that is due: by index, each record
        // cost its address's shift and add too (callgrind: 8 instructions per record, now 5).
        for (const Flow *p = flows_ + hand_, *end = p + run; p != end; ++p) {
          const Flow& f = *p;
          // The deadline first: nearly every record a sweep examines in a busy table is in use
          // and not due, which the first test then settles alone.
          if (f.expires <= now && f.in_use) [[unlikely]] {
            due[k] = index_of(f);
            hc[k] = hash(f.client_key());
            hb[k] = hash(f.backend_key());  // unused when !f.indexes_backend_key()
            __builtin_prefetch(&buckets_[bucket1(hc[k])], 1);
            __builtin_prefetch(&buckets_[bucket1(hb[k])], 1);
            ++k;
          }
        }
        hand_ = hand_ + run == capacity_ ? 0 : hand_ + run;
      }
      for (uint32_t j = 0; j < k; ++j) {
        on_expire(due[j], flows_[due[j]]);
        erase_hashed(due[j], hc[j], hb[j]);
      }
      n += k;
    }
    return n;
  }

  // The two buckets a key of hash `h` may be indexed in (primary first): for tests that need
  // keys crowding the same buckets.
  std::pair<uint32_t, uint32_t> candidate_buckets(uint64_t h) const {
    return {bucket1(h), bucket2(h)};
  }

  uint32_t size() const { return size_; }
  uint32_t capacity() const { return capacity_; }
  uint64_t seed() const { return seed_; }
  size_t memory_bytes() const {
    return size_t{capacity_} * (sizeof(Flow) + sizeof(uint32_t) + sizeof(Link)) +
           size_t{nbuckets_} * sizeof(Bucket);
  }

 private:
  static constexpr int kSlots = 8;
  struct alignas(64) Bucket {
    uint32_t sig[kSlots];
    uint32_t ref[kSlots];  // 0 empty, else ((idx << 1) | dir) + 1
  };
  static_assert(sizeof(Bucket) == 64);

  // Multiply-shift ranges (Lemire), so that the bucket count need not be a power of two: the
  // index is sized to the design load exactly instead of up to twice that.
  static uint32_t bucket1_of(uint64_t h, uint32_t nbuckets) {
    return static_cast<uint32_t>((uint64_t{static_cast<uint32_t>(h)} * nbuckets) >> 32);
  }
  static uint32_t bucket2_of(uint64_t h, uint32_t nbuckets) {
    // Another 32-bit word of the key: the low word mixed with the signature.
    const uint32_t sig = static_cast<uint32_t>(h >> 32);
    const uint32_t w = static_cast<uint32_t>(h) ^ (sig * 0x5bd1e995u) ^ 0x9e3779b9u;
    return static_cast<uint32_t>((uint64_t{std::rotl(w, 16)} * nbuckets) >> 32);
  }
  uint32_t bucket1(uint64_t h) const { return bucket1_of(h, nbuckets_); }
  uint32_t bucket2(uint64_t h) const { return bucket2_of(h, nbuckets_); }
  // prefetch_record() over the table's constants passed in.
  [[gnu::always_inline]] static uint32_t prefetch_record_in(const Bucket* buckets,
                                                            const Flow* flows, uint32_t nbuckets,
                                                            uint64_t h) {
    const uint32_t sig = static_cast<uint32_t>(h >> 32);
    const Bucket& bk = buckets[bucket1_of(h, nbuckets)];
    for (uint32_t m = slots_equal(bk.sig, sig); m != 0; m &= m - 1) {
      const uint32_t ref = bk.ref[__builtin_ctz(m)];
      if (ref != 0) {
        __builtin_prefetch(&flows[(ref - 1) >> 1]);
        return ref;
      }
    }
    __builtin_prefetch(&buckets[bucket2_of(h, nbuckets)]);
    return 0;
  }
  // Bit s set where v[s] == x, for the 8 slots of a bucket: two SSE2 compares where the ISA has
  // them (as DPDK's cuckoo hash compares signatures), a loop elsewhere.
  static uint32_t slots_equal(const uint32_t (&v)[kSlots], uint32_t x) {
#if defined(__SSE2__)
    const __m128i k = _mm_set1_epi32(static_cast<int>(x));
    const __m128i lo = _mm_cmpeq_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(v)), k);
    const __m128i hi = _mm_cmpeq_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(v + 4)), k);
    return static_cast<uint32_t>(_mm_movemask_ps(_mm_castsi128_ps(lo)) |
                                 (_mm_movemask_ps(_mm_castsi128_ps(hi)) << 4));
#else
    uint32_t m = 0;
    for (int s = 0; s < kSlots; ++s) m |= uint32_t{v[s] == x} << s;
    return m;
#endif
  }
  // The record of index reference `ref` (0: none) if its key in that direction is `k`.
  uint32_t match(uint32_t ref, const FlowKey& k, Dir& dir) const {
    if (ref == 0) return kNoFlow;  // an empty slot (or an empty hint)
    const uint32_t r = ref - 1;
    const uint32_t idx = r >> 1;
    const Dir d = static_cast<Dir>(r & 1);
    const Flow& f = flows_[idx];
    if (!same_key(f, d, k)) return kNoFlow;
    dir = d;
    return idx;
  }
  // The record of a slot of `bk` set in `m` (its signature matched) whose key is `k`. Out of
  // line: on a miss (every SYN's client key, every new flow's backend key) no signature matches
  // and the loop is never entered; kept out, its code and registers leave the miss path
  // (callgrind: -6 instructions per SYN).
  [[gnu::noinline]] uint32_t match_slots(const Bucket& bk, uint32_t m, const FlowKey& k,
                                         Dir& dir) const;
  // lookup() once the primary bucket `b1` has slots `m1` whose signature matched: those, then
  // the secondary bucket. Out of line, so that lookup()'s miss saves no registers.
  [[gnu::noinline]] uint32_t lookup_matched(const Bucket& b1, uint32_t m1, const FlowKey& k,
                                            uint64_t h, Dir& dir) const;
  // f's key in direction d == k, compared as an 8-byte word of addresses and a 4-byte word of
  // ports (FlowKey has no padding): the client key's fields lie in the record in the key's
  // order, so they are read as the two words directly; the backend key's are gathered.
  static bool same_key(const Flow& f, Dir d, const FlowKey& k) {
    static_assert(sizeof(FlowKey) == 12 && offsetof(FlowKey, dst_ip) == 4 &&
                  offsetof(FlowKey, src_port) == 8 && offsetof(FlowKey, dst_port) == 10);
    static_assert(offsetof(Flow, vip) == offsetof(Flow, client_ip) + 4 &&
                  offsetof(Flow, vport) == offsetof(Flow, client_port) + 2);
    uint64_t addrs, kaddrs;
    uint32_t ports, kports;
    if (d == Dir::kFromClient) {
      std::memcpy(&addrs, &f.client_ip, sizeof addrs);
      std::memcpy(&ports, &f.client_port, sizeof ports);
    } else {
      const uint32_t a[2] = {f.backend_ip, f.client_ip};
      const uint16_t p[2] = {f.backend_port, f.client_port};
      std::memcpy(&addrs, a, sizeof addrs);
      std::memcpy(&ports, p, sizeof ports);
    }
    std::memcpy(&kaddrs, &k.src_ip, sizeof kaddrs);
    std::memcpy(&kports, &k.src_port, sizeof kports);
    return ((addrs ^ kaddrs) | (ports ^ kports)) == 0;
  }
  // One bucket's half of lookup(), inline (defined below): commit_after_miss' backend-key check
  // runs it on both buckets, whose call and return cost a SYN ~35 instructions.
  [[gnu::always_inline]] inline uint32_t lookup_in(uint32_t bucket, const FlowKey& k, uint32_t sig,
                                                   Dir& dir) const;
  static constexpr uint32_t kOffList = kNoFlow - 1;  // Link::prev of a record not on the list
  struct Link {
    uint32_t prev = kOffList, next = kOffList;
  };
  [[gnu::always_inline]] inline void link_tail(uint32_t idx);
  // The commit's last step: the free record on top (index i, `f`), its keys indexed, is in use.
  [[gnu::always_inline]] inline void take_free(uint32_t i, Flow& f);
  void unlink(uint32_t idx);
  void rebuild_embryonic();  // from the records' states, in index order (attach)
  // Inline: commit_after_miss calls it twice per new flow.
  [[gnu::always_inline]] inline bool index_add(uint64_t h, uint32_t ref) {
    return index_add_at(
        bucket1(h), [&] { return bucket2(h); }, static_cast<uint32_t>(h >> 32), ref);
  }
  // index_add() with the primary bucket's index `b1` known; second() gives the secondary's,
  // needed only when the primary is nearly full.
  template <class Second>
  [[gnu::always_inline]] inline bool index_add_at(uint32_t b1, Second second, uint32_t sig,
                                                  uint32_t ref);
  void index_remove(uint64_t h, uint32_t ref);
  // erase() with both keys' hashes already known.
  void erase_hashed(uint32_t idx, uint64_t client_hash, uint64_t backend_hash);

  struct alignas(64) Line {
    std::byte b[64];
  };
  // Points flows_, buckets_ and free_ into `base` (region_bytes(capacity_) bytes).
  void place(std::byte* base);
  void clear();  // empty table: no record in use, every record free

  uint32_t capacity_;
  uint32_t nbuckets_;
  uint64_t seed_;
  uint32_t size_ = 0;
  uint32_t hand_ = 0;
  uint32_t free_top_ = 0;   // free_[0 .. free_top_) are free record indexes
  LargeArray<Line> own_;    // the region, when the table allocated it itself
  LargeArray<Link> links_;  // embryonic list, by record index
  uint32_t emb_head_ = kNoFlow;
  uint32_t emb_tail_ = kNoFlow;
  uint32_t emb_count_ = 0;
  Flow* flows_ = nullptr;
  Bucket* buckets_ = nullptr;
  uint32_t* free_ = nullptr;  // a stack of free record indexes
};

inline uint32_t FlowTable::lookup_in(uint32_t bi, const FlowKey& k, uint32_t sig, Dir& dir) const {
  const Bucket& bk = buckets_[bi];
  const uint32_t m = slots_equal(bk.sig, sig);
  return m == 0 ? kNoFlow : match_slots(bk, m, k, dir);
}

template <class Second>
inline bool FlowTable::index_add_at(uint32_t b1, Second second, uint32_t sig, uint32_t ref) {
  Bucket* b = &buckets_[b1];
  uint32_t empty = slots_equal(b->ref, 0);
  // The primary bucket while it has more than kKeepFree free slots, so that a lookup usually
  // needs one line; past that the emptier of the two, which keeps the longest bucket short.
  if (detail::kBitsSet[empty] <= detail::kKeepFree) [[unlikely]] {
    Bucket* b2 = &buckets_[second()];
    const uint32_t empty2 = slots_equal(b2->ref, 0);
    if (detail::kBitsSet[empty2] > detail::kBitsSet[empty]) {
      b = b2;
      empty = empty2;
    }
    if (empty == 0) return false;  // the emptier one is full, so both are
  }
  // Not std::countr_zero: `empty` is not 0 here, and without BMI (tzcnt) gcc guards bsf
  // against 0 with a compare and a branch (callgrind: 3 instructions per index slot).
  const int s = __builtin_ctz(empty);
  b->sig[s] = sig;
  b->ref[s] = ref;
  return true;
}

inline void FlowTable::link_tail(uint32_t idx) {
  links_[idx] = {emb_tail_, kNoFlow};
  if (emb_tail_ != kNoFlow)
    links_[emb_tail_].next = idx;
  else
    emb_head_ = idx;
  emb_tail_ = idx;
  ++emb_count_;
}

inline FlowTable::InsertResult FlowTable::commit_after_miss(uint64_t client_hash, const FlowKey& bk,
                                                            uint64_t bh, uint32_t& idx) {
  const uint32_t i = free_[free_top_ - 1];
  Flow& f = flows_[i];
  // The backend key's buckets, for its conflict lookup (nearly always a miss, which reads both)
  // and then its index slot.
  const uint32_t sig = static_cast<uint32_t>(bh >> 32);
  const uint32_t b1 = bucket1(bh);
  const uint32_t b2 = bucket2(bh);
  Dir d;
  if (lookup_in(b1, bk, sig, d) != kNoFlow || lookup_in(b2, bk, sig, d) != kNoFlow)
    return InsertResult::kConflict;
  if (!index_add(client_hash, detail::make_ref(i, Dir::kFromClient)))
    return InsertResult::kIndexFull;
  if (!index_add_at(
          b1, [b2] { return b2; }, sig, detail::make_ref(i, Dir::kFromBackend))) {
    index_remove(client_hash, detail::make_ref(i, Dir::kFromClient));
    return InsertResult::kIndexFull;
  }
  take_free(i, f);
  idx = i;
  return InsertResult::kOk;
}

inline void FlowTable::take_free(uint32_t i, Flow& f) {
  --free_top_;
  f.in_use = 1;
  if (starts_embryonic(f)) link_tail(i);
  ++size_;
}

}  // namespace lb::core
