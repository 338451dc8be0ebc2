#include "flow_table.h"

#include <array>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace lb::core {

const char* to_string(TcpState s) {
  switch (s) {
    case TcpState::kSynSent:
      return "SYN_SENT";
    case TcpState::kSynRecv:
      return "SYN_RECV";
    case TcpState::kEstablished:
      return "ESTABLISHED";
    case TcpState::kFinWait:
      return "FIN_WAIT";
    case TcpState::kTimeWait:
      return "TIME_WAIT";
    case TcpState::kClosed:
      return "CLOSED";
    case TcpState::kReset:
      return "RESET";
  }
  return "?";
}

namespace {
uint32_t bucket_count(uint32_t capacity) {
  // Two keys per flow in 8-slot buckets, 47 % of the slots used at capacity (17 buckets per 32
  // flows): capacity fills of 24 M flows (sizes 1 k..100 k, 12 k seeds) found no refused key;
  // at exactly 50 % one key in ~3 M was refused.
  const uint64_t want = (uint64_t{capacity} * 17 + 31) / 32;
  return static_cast<uint32_t>(want < 2 ? 2 : want);
}
}  // namespace

size_t FlowTable::region_bytes(uint32_t capacity) {
  // records | index | free list, each starting on a cache line
  const size_t free_bytes = (size_t{capacity} * sizeof(uint32_t) + 63) / 64 * 64;
  return size_t{capacity} * sizeof(Flow) + size_t{bucket_count(capacity)} * sizeof(Bucket) +
         free_bytes;
}

FlowTable::FlowTable(uint32_t capacity, uint64_t seed)
    : capacity_(capacity),
      nbuckets_(bucket_count(capacity)),
      seed_(seed),
      own_(region_bytes(capacity) / sizeof(Line)),
      links_(capacity) {
  place(reinterpret_cast<std::byte*>(own_.data()));  // zero-filled: the index is empty
  clear();
}

FlowTable::FlowTable(uint32_t capacity, uint64_t seed, std::span<std::byte> region, Region how,
                     RepairReport* repaired)
    : capacity_(capacity), nbuckets_(bucket_count(capacity)), seed_(seed), links_(capacity) {
  if (region.size() < region_bytes(capacity) ||
      reinterpret_cast<uintptr_t>(region.data()) % alignof(Line) != 0)
    throw std::invalid_argument("flow table region: " + std::to_string(region.size()) +
                                " bytes, need " + std::to_string(region_bytes(capacity)) +
                                " on a 64-byte boundary");
  place(region.data());
  if (how == Region::kAttach) {
    const RepairReport r = repair();
    if (repaired) *repaired = r;
    rebuild_embryonic();
    return;
  }
  reset();
}

void FlowTable::reset() {
  std::memset(static_cast<void*>(flows_), 0, size_t{capacity_} * sizeof(Flow));
  std::memset(static_cast<void*>(buckets_), 0, size_t{nbuckets_} * sizeof(Bucket));
  clear();
}

FlowTable::FlowTable(FlowTable&& o) noexcept
    : capacity_(o.capacity_),
      nbuckets_(o.nbuckets_),
      seed_(o.seed_),
      size_(o.size_),
      hand_(o.hand_),
      free_top_(o.free_top_),
      own_(std::move(o.own_)),
      links_(std::move(o.links_)),
      emb_head_(std::exchange(o.emb_head_, kNoFlow)),
      emb_tail_(std::exchange(o.emb_tail_, kNoFlow)),
      emb_count_(std::exchange(o.emb_count_, 0)),
      flows_(std::exchange(o.flows_, nullptr)),
      buckets_(std::exchange(o.buckets_, nullptr)),
      free_(std::exchange(o.free_, nullptr)) {
  o.capacity_ = o.nbuckets_ = o.size_ = o.free_top_ = o.hand_ = 0;
}

void FlowTable::place(std::byte* base) {
  flows_ = reinterpret_cast<Flow*>(base);
  buckets_ = reinterpret_cast<Bucket*>(base + size_t{capacity_} * sizeof(Flow));
  free_ = reinterpret_cast<uint32_t*>(base + size_t{capacity_} * sizeof(Flow) +
                                      size_t{nbuckets_} * sizeof(Bucket));
}

void FlowTable::clear() {
  // Hand out low indexes first: a small table stays in few pages.
  for (uint32_t i = 0; i < capacity_; ++i) free_[i] = capacity_ - 1 - i;
  free_top_ = capacity_;
  size_ = 0;
  hand_ = 0;
  for (uint32_t i = 0; i < capacity_; ++i) links_[i] = {};
  emb_head_ = emb_tail_ = kNoFlow;
  emb_count_ = 0;
}

void FlowTable::unlink(uint32_t idx) {
  const Link l = links_[idx];
  if (l.prev != kNoFlow)
    links_[l.prev].next = l.next;
  else
    emb_head_ = l.next;
  if (l.next != kNoFlow)
    links_[l.next].prev = l.prev;
  else
    emb_tail_ = l.prev;
  links_[idx] = {};
  --emb_count_;
}

void FlowTable::rebuild_embryonic() {
  emb_head_ = emb_tail_ = kNoFlow;
  emb_count_ = 0;
  for (uint32_t i = 0; i < capacity_; ++i) {
    links_[i] = {};
    if (flows_[i].in_use && starts_embryonic(flows_[i])) link_tail(i);
  }
}

FlowTable::RepairReport FlowTable::repair() {
  RepairReport r;
  // Which references of each record the index holds: bit d for direction d.
  std::vector<uint8_t> seen(capacity_, 0);
  for (uint32_t bi = 0; bi < nbuckets_; ++bi) {
    Bucket& b = buckets_[bi];
    for (int s = 0; s < kSlots; ++s) {
      const uint32_t ref = b.ref[s];
      if (ref == 0) {
        b.sig[s] = 0;  // harmless, but an empty slot reads as empty everywhere
        continue;
      }
      const uint32_t idx = (ref - 1) >> 1;
      const auto d = static_cast<Dir>((ref - 1) & 1);
      const uint8_t bit = static_cast<uint8_t>(1u << static_cast<unsigned>(d));
      // A full-NAT record has no backend reference (an lbd before 2026-12-08 made one: dropped).
      bool ok = idx < capacity_ && flows_[idx].in_use == 1 && (seen[idx] & bit) == 0 &&
                (d == Dir::kFromClient || flows_[idx].indexes_backend_key());
      if (ok) {
        const Flow& f = flows_[idx];
        const uint64_t h = hash(d == Dir::kFromClient ? f.client_key() : f.backend_key());
        ok = b.sig[s] == static_cast<uint32_t>(h >> 32) && (bi == bucket1(h) || bi == bucket2(h));
      }
      if (ok) {
        seen[idx] |= bit;
        continue;
      }
      b.ref[s] = 0;
      b.sig[s] = 0;
      ++r.refs_dropped;
    }
  }
  for (uint32_t idx = 0; idx < capacity_; ++idx) {
    Flow& f = flows_[idx];
    if (f.in_use == 0) continue;
    const bool both = f.indexes_backend_key();
    bool ok = f.in_use == 1 && seen[idx] == (both ? 3 : 1);
    if (ok) {
      // Its references are there; a second record with the same key (which no sequence of
      // operations makes, but a torn image might) would hide one of them.
      Dir d;
      const FlowKey ck = f.client_key(), bk = f.backend_key();
      ok = lookup(ck, hash(ck), d) == idx && (!both || lookup(bk, hash(bk), d) == idx);
    }
    if (ok) continue;
    if (seen[idx] & 1) index_remove(hash(f.client_key()), detail::make_ref(idx, Dir::kFromClient));
    if (seen[idx] & 2)
      index_remove(hash(f.backend_key()), detail::make_ref(idx, Dir::kFromBackend));
    r.refs_dropped += static_cast<uint32_t>(std::popcount(seen[idx]));
    f.in_use = 0;
    ++r.records_dropped;
  }
  free_top_ = 0;
  for (uint32_t i = capacity_; i-- > 0;)
    if (flows_[i].in_use == 0) free_[free_top_++] = i;
  size_ = capacity_ - free_top_;
  hand_ = 0;
  r.kept = size_;
  return r;
}

uint32_t FlowTable::match_slots(const Bucket& bk, uint32_t m, const FlowKey& k, Dir& dir) const {
  for (; m != 0; m &= m - 1) {
    const uint32_t idx = match(bk.ref[__builtin_ctz(m)], k, dir);
    if (idx != kNoFlow) return idx;
  }
  return kNoFlow;
}

// Written so that the miss, the common case out here (every SYN's client key: its hint was
// empty), needs no register saved: no call but the tail calls into match_slots() and
// lookup_matched(). As one function it saved five registers and a vector on
// the stack around match_slots() (callgrind: ~50 instructions per miss).
uint32_t FlowTable::lookup(const FlowKey& k, uint64_t h, Dir& dir) const {
  const uint32_t sig = static_cast<uint32_t>(h >> 32);
  const Bucket& b1 = buckets_[bucket1(h)];
  if (const uint32_t m1 = slots_equal(b1.sig, sig); m1 != 0)
    return lookup_matched(b1, m1, k, h, dir);
  const Bucket& b2 = buckets_[bucket2(h)];
  const uint32_t m2 = slots_equal(b2.sig, sig);
  return m2 == 0 ? kNoFlow : match_slots(b2, m2, k, dir);
}

uint32_t FlowTable::lookup_matched(const Bucket& b1, uint32_t m1, const FlowKey& k, uint64_t h,
                                   Dir& dir) const {
  const uint32_t idx = match_slots(b1, m1, k, dir);
  return idx != kNoFlow ? idx : lookup_in(bucket2(h), k, static_cast<uint32_t>(h >> 32), dir);
}

void FlowTable::index_remove(uint64_t h, uint32_t ref) {
  for (uint32_t bi : {bucket1(h), bucket2(h)}) {
    Bucket& b = buckets_[bi];
    if (const uint32_t m = slots_equal(b.ref, ref)) {
      const int s = std::countr_zero(m);
      b.ref[s] = 0;
      b.sig[s] = 0;
      return;
    }
  }
}

FlowTable::InsertResult FlowTable::insert(const Flow& f, uint32_t& idx) {
  if (free_top_ == 0) return InsertResult::kFull;
  const FlowKey ck = f.client_key();
  const uint64_t h = hash(ck);
  Dir d;
  if (lookup(ck, h, d) != kNoFlow) return InsertResult::kConflict;
  return insert_after_miss(f, h, idx);
}

FlowTable::InsertResult FlowTable::insert_after_miss(const Flow& f, uint64_t client_hash,
                                                     uint32_t& idx) {
  Flow* r = next_free();
  if (!r) return InsertResult::kFull;
  *r = f;         // keys must be in place before the index can verify against them
  r->in_use = 0;  // still free until both keys are indexed (a failed insert leaves it so)
  return commit_after_miss(client_hash, idx);
}

FlowTable::InsertResult FlowTable::commit_client_after_miss(uint64_t client_hash, uint32_t& idx) {
  const uint32_t i = free_[free_top_ - 1];
  Flow& f = flows_[i];
  if (!index_add(client_hash, detail::make_ref(i, Dir::kFromClient)))
    return InsertResult::kIndexFull;
  take_free(i, f);
  idx = i;
  return InsertResult::kOk;
}

void FlowTable::erase(uint32_t idx) {
  const Flow& f = flows_[idx];
  if (!f.in_use) return;
  erase_hashed(idx, hash(f.client_key()), f.indexes_backend_key() ? hash(f.backend_key()) : 0);
}

void FlowTable::erase_hashed(uint32_t idx, uint64_t client_hash, uint64_t backend_hash) {
  Flow& f = flows_[idx];
  if (!f.in_use) return;
  index_remove(client_hash, detail::make_ref(idx, Dir::kFromClient));
  if (f.indexes_backend_key()) index_remove(backend_hash, detail::make_ref(idx, Dir::kFromBackend));
  if (on_list(idx)) unlink(idx);
  f.in_use = 0;
  free_[free_top_++] = idx;
  --size_;
}

bool FlowTable::rebind(uint32_t idx, BackendId backend, uint32_t backend_ip,
                       uint16_t backend_port) {
  Flow& f = flows_[idx];
  if (!f.indexes_backend_key()) {
    f.backend = backend;
    f.backend_ip = backend_ip;
    f.backend_port = backend_port;
    return true;
  }
  Flow moved = f;
  moved.backend = backend;
  moved.backend_ip = backend_ip;
  moved.backend_port = backend_port;
  const FlowKey nk = moved.backend_key();
  const uint64_t nh = hash(nk);
  Dir d;
  if (lookup(nk, nh, d) != kNoFlow) return false;
  const uint32_t ref = detail::make_ref(idx, Dir::kFromBackend);
  const Flow old = f;
  index_remove(hash(old.backend_key()), ref);
  f = moved;
  if (!index_add(nh, ref)) {
    f = old;
    index_add(hash(old.backend_key()), ref);  // its slot was just freed, so this cannot fail
    return false;
  }
  return true;
}

}  // namespace lb::core
