// Flow tables that outlive the process (core/flow_store.h, FlowTable over a region): a table
// re-attached over the same memory holds the same flows; the header rules that decide whether a
// new lbd may take a file over, each with its reason; the clock; giving restored flows the new
// process's ids; and images left half-updated by a process killed in the middle of an insert,
// erase or rebind, which repair() must make consistent.

#include "flow_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "flow_table.h"
#include "packet_builder.h"

namespace lb::core {
namespace {

using test::ip4;

// A region as a file mapping would give it: 64-byte aligned, outliving any one table.
struct Memory {
  explicit Memory(uint32_t capacity)
      : lines((FlowTable::region_bytes(capacity) + 63) / 64), cap(capacity) {}
  struct alignas(64) Line {
    std::byte b[64];
  };
  std::vector<Line> lines;
  uint32_t cap;
  std::span<std::byte> span() { return {reinterpret_cast<std::byte*>(lines.data()), bytes()}; }
  size_t bytes() const { return lines.size() * 64; }
  std::byte* base() { return reinterpret_cast<std::byte*>(lines.data()); }
  // The layout FlowTable documents: records | buckets (sig[8], ref[8]) | free list.
  Flow& record(uint32_t idx) { return reinterpret_cast<Flow*>(base())[idx]; }
  uint32_t* bucket(uint32_t b) {
    return reinterpret_cast<uint32_t*>(base() + size_t{cap} * sizeof(Flow) + size_t{b} * 64);
  }
  uint32_t nbuckets() const {
    return static_cast<uint32_t>((FlowTable::region_bytes(cap) - size_t{cap} * sizeof(Flow) -
                                  (size_t{cap} * 4 + 63) / 64 * 64) /
                                 64);
  }
  uint32_t* free_list() {
    return reinterpret_cast<uint32_t*>(base() + size_t{cap} * sizeof(Flow) +
                                       size_t{nbuckets()} * 64);
  }
};

Flow flow_n(uint32_t n, Tick expires = 1000) {
  Flow f{};
  f.client_ip = ip4(10, 1, 0, 0) + (n >> 8);
  f.client_port = static_cast<uint16_t>(1024 + (n & 0xff));
  f.vip = ip4(10, 2, 0, 1);
  f.vport = 80;
  f.backend_ip = ip4(10, 3, 0, 1) + n % 7;
  f.backend_port = 8080;
  f.backend = static_cast<BackendId>(n % 7);
  f.expires = expires;
  f.created = expires / 2;
  f.serial = n + 1;
  f.state = TcpState::kEstablished;
  f.client_mac = test::mac(2, 0, 0, 0, 0, static_cast<uint8_t>(n));
  return f;
}

uint32_t find(const FlowTable& t, const FlowKey& k, Dir& d) {
  return t.lookup(k, t.hash(k), d);
}

// Both keys of `f` (a full-NAT flow: its client key) lead to `idx`, which holds `f` byte for
// byte (apart from in_use).
::testing::AssertionResult Holds(const FlowTable& t, uint32_t idx, const Flow& f) {
  Dir d = Dir::kFromBackend;
  if (find(t, f.client_key(), d) != idx || d != Dir::kFromClient)
    return ::testing::AssertionFailure() << "client key does not lead to " << idx;
  const uint32_t b = find(t, f.backend_key(), d);
  if (f.indexes_backend_key() ? b != idx || d != Dir::kFromBackend : b != FlowTable::kNoFlow)
    return ::testing::AssertionFailure() << "backend key leads to " << b << ", record " << idx;
  Flow g = t.at(idx);
  Flow want = f;
  want.in_use = 1;
  if (std::memcmp(&g, &want, sizeof g) != 0)
    return ::testing::AssertionFailure() << "record " << idx << " differs";
  return ::testing::AssertionSuccess();
}

// Every invariant a consistent table keeps: each record in use is found from both keys (a
// full-NAT record from its client key only); the index refers to nothing else; the count and the
// free list account for every other record.
::testing::AssertionResult Consistent(FlowTable& t, Memory& m) {
  uint32_t in_use = 0, want_refs = 0;
  for (uint32_t i = 0; i < t.capacity(); ++i) {
    const Flow& f = t.at(i);
    if (f.in_use > 1) return ::testing::AssertionFailure() << "record " << i << " in_use 2+";
    if (!f.in_use) continue;
    ++in_use;
    want_refs += f.indexes_backend_key() ? 2u : 1u;
    Dir d;
    if (find(t, f.client_key(), d) != i ||
        (f.indexes_backend_key() && find(t, f.backend_key(), d) != i))
      return ::testing::AssertionFailure() << "record " << i << " not found from its keys";
  }
  if (in_use != t.size())
    return ::testing::AssertionFailure() << "size " << t.size() << ", " << in_use << " in use";
  uint32_t refs = 0;
  for (uint32_t b = 0; b < m.nbuckets(); ++b)
    for (int s = 0; s < 8; ++s) {
      const uint32_t ref = m.bucket(b)[8 + s];
      if (ref == 0) continue;
      ++refs;
      const uint32_t idx = (ref - 1) >> 1;
      if (idx >= t.capacity() || !t.at(idx).in_use)
        return ::testing::AssertionFailure() << "bucket " << b << " refers to free record " << idx;
    }
  if (refs != want_refs)
    return ::testing::AssertionFailure()
           << refs << " index entries for " << in_use << " flows (" << want_refs << " wanted)";
  // The free records are exactly what inserts get, each once, then the table is full.
  std::set<uint32_t> handed;
  const uint32_t room = t.capacity() - t.size();
  for (uint32_t n = 0; n < room; ++n) {
    uint32_t idx;
    if (t.insert(flow_n(100000 + n), idx) != FlowTable::InsertResult::kOk)
      return ::testing::AssertionFailure() << "insert " << n << " of " << room << " refused";
    if (!handed.insert(idx).second)
      return ::testing::AssertionFailure() << "record " << idx << " handed out twice";
  }
  uint32_t idx;
  if (t.insert(flow_n(200000), idx) != FlowTable::InsertResult::kFull)
    return ::testing::AssertionFailure() << "more room than free records";
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------
// The same memory, another table

TEST(FlowStore, ATableOverTheSameMemoryHoldsTheSameFlows) {
  constexpr uint32_t kCap = 2048;
  Memory m(kCap);
  std::map<uint32_t, Flow> live;
  {
    FlowTable t(kCap, 0x5eed, m.span(), FlowTable::Region::kFresh);
    for (uint32_t n = 0; n < 1500; ++n) {
      uint32_t idx;
      ASSERT_EQ(t.insert(flow_n(n), idx), FlowTable::InsertResult::kOk);
      live[idx] = flow_n(n);
    }
    for (uint32_t n = 0; n < 1500; n += 3) {  // some erased, some moved
      Dir d;
      const uint32_t idx = find(t, flow_n(n).client_key(), d);
      if (n % 2) {
        t.erase(idx);
        live.erase(idx);
      } else {
        ASSERT_TRUE(
            t.rebind(idx, BackendId{99}, ip4(10, 4, 0, 1), static_cast<uint16_t>(9000 + n)));
        live[idx].backend = BackendId{99};
        live[idx].backend_ip = ip4(10, 4, 0, 1);
        live[idx].backend_port = static_cast<uint16_t>(9000 + n);
      }
    }
  }  // the process is gone; its memory is not
  FlowTable::RepairReport r;
  FlowTable t(kCap, 0x5eed, m.span(), FlowTable::Region::kAttach, &r);
  EXPECT_EQ(r.kept, live.size());
  EXPECT_EQ(r.refs_dropped, 0u);
  EXPECT_EQ(r.records_dropped, 0u);
  EXPECT_EQ(t.size(), live.size());
  for (const auto& [idx, f] : live) ASSERT_TRUE(Holds(t, idx, f)) << idx;
  EXPECT_TRUE(Consistent(t, m));
}

TEST(FlowStore, ZeroMemoryIsAnEmptyTable) {
  Memory m(1024);
  FlowTable t(1024, 7, m.span(), FlowTable::Region::kAttach);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Consistent(t, m));
}

TEST(FlowStore, RegionTooSmallOrMisalignedIsRefused) {
  Memory m(1024);
  EXPECT_THROW(FlowTable(1024, 1, m.span().first(m.bytes() - 64), FlowTable::Region::kFresh),
               std::invalid_argument);
  EXPECT_THROW(FlowTable(1024, 1, m.span().subspan(8, m.bytes() - 64), FlowTable::Region::kFresh),
               std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Images a kill -9 can leave. Each starts from a consistent table of kFlows flows, makes the
// writes an operation had done when the process died, and checks what repair() makes of it.

constexpr uint32_t kCap = 1024;
constexpr uint32_t kFlows = 600;

class HalfUpdated : public ::testing::Test {
 protected:
  HalfUpdated() {
    FlowTable t(kCap, kSeed, m_.span(), FlowTable::Region::kFresh);
    for (uint32_t n = 0; n < kFlows; ++n) {
      uint32_t idx;
      EXPECT_EQ(t.insert(flow_n(n), idx), FlowTable::InsertResult::kOk);
      idx_[n] = idx;
    }
  }
  static constexpr uint64_t kSeed = 0xfeedf00d;

  // Puts `ref` with the signature of hash `h` in the first empty slot of bucket `b`.
  void add_ref(uint32_t b, uint64_t h, uint32_t ref) {
    uint32_t* bk = m_.bucket(b);
    for (int s = 0; s < 8; ++s)
      if (bk[8 + s] == 0) {
        bk[s] = static_cast<uint32_t>(h >> 32);
        bk[8 + s] = ref;
        return;
      }
    FAIL() << "bucket " << b << " full";
  }
  // Removes `ref` from the index.
  void drop_ref(uint32_t ref) {
    for (uint32_t b = 0; b < m_.nbuckets(); ++b)
      for (int s = 0; s < 8; ++s)
        if (m_.bucket(b)[8 + s] == ref) {
          m_.bucket(b)[8 + s] = 0;
          m_.bucket(b)[s] = 0;
          return;
        }
    FAIL() << "ref " << ref << " not in the index";
  }
  static uint32_t ref(uint32_t idx, Dir d) { return ((idx << 1) | static_cast<uint32_t>(d)) + 1; }
  // A table like the one in m_ (same capacity and seed) to compute hashes and buckets with.
  uint64_t hash_(const FlowKey& k) const { return probe_.hash(k); }
  uint32_t primary(const FlowKey& k) const { return probe_.candidate_buckets(hash_(k)).first; }
  // A record not in use (the next an insert would take).
  uint32_t free_record() {
    for (uint32_t i = 0; i < kCap; ++i)
      if (!m_.record(i).in_use) return i;
    return kCap;
  }

  // Attaches, checks the report and that every flow not named in `lost` is there unchanged.
  void Expect(uint32_t refs_dropped, uint32_t records_dropped, std::set<uint32_t> lost = {}) {
    FlowTable::RepairReport r;
    FlowTable t(kCap, kSeed, m_.span(), FlowTable::Region::kAttach, &r);
    EXPECT_EQ(r.refs_dropped, refs_dropped);
    EXPECT_EQ(r.records_dropped, records_dropped);
    EXPECT_EQ(r.kept, kFlows - lost.size());
    for (uint32_t n = 0; n < kFlows; ++n) {
      Dir d;
      if (lost.count(n)) {
        EXPECT_EQ(find(t, flow_n(n).client_key(), d), FlowTable::kNoFlow) << n;
        EXPECT_EQ(find(t, flow_n(n).backend_key(), d), FlowTable::kNoFlow) << n;
      } else {
        EXPECT_TRUE(Holds(t, idx_[n], flow_n(n))) << n;
      }
    }
    EXPECT_TRUE(Consistent(t, m_));
  }

  Memory m_{kCap};
  uint32_t idx_[kFlows]{};
  FlowTable probe_{kCap, kSeed};
};

TEST_F(HalfUpdated, NothingInterrupted) {
  Expect(0, 0);
}

TEST_F(HalfUpdated, InsertDiedAfterTheRecordAndTheClientKey) {
  // insert_after_miss: record written (in_use 0), client key indexed; backend key not yet.
  const uint32_t i = free_record();
  const Flow f = flow_n(5000);
  m_.record(i) = f;
  add_ref(primary(f.client_key()), hash_(f.client_key()), ref(i, Dir::kFromClient));
  Expect(1, 0);
}

TEST_F(HalfUpdated, InsertDiedBeforeMarkingTheRecordInUse) {
  const uint32_t i = free_record();
  const Flow f = flow_n(5000);
  m_.record(i) = f;
  add_ref(primary(f.client_key()), hash_(f.client_key()), ref(i, Dir::kFromClient));
  add_ref(primary(f.backend_key()), hash_(f.backend_key()), ref(i, Dir::kFromBackend));
  Expect(2, 0);  // the client never got an answer from it: the flow is not kept
}

TEST_F(HalfUpdated, InsertWhoseStoresLandedOutOfOrder) {
  // The compiler may order the stores of an insert otherwise: in use, one key missing.
  const uint32_t i = free_record();
  Flow f = flow_n(5000);
  f.in_use = 1;
  m_.record(i) = f;
  add_ref(primary(f.backend_key()), hash_(f.backend_key()), ref(i, Dir::kFromBackend));
  Expect(1, 1);
}

TEST_F(HalfUpdated, EraseDiedAfterTheFirstKey) {
  drop_ref(ref(idx_[7], Dir::kFromClient));
  Expect(1, 1, {7});
}

TEST_F(HalfUpdated, EraseDiedBeforeTheFreeListPush) {
  drop_ref(ref(idx_[8], Dir::kFromClient));
  drop_ref(ref(idx_[8], Dir::kFromBackend));
  m_.record(idx_[8]).in_use = 0;  // the free list was not updated: repair rebuilds it
  Expect(0, 0, {8});
}

TEST_F(HalfUpdated, RebindDiedBetweenTheKeys) {
  // rebind: old backend key removed, record rewritten, new key not yet indexed.
  const uint32_t i = idx_[9];
  drop_ref(ref(i, Dir::kFromBackend));
  m_.record(i).backend_ip = ip4(10, 9, 9, 9);
  Expect(1, 1, {9});  // the client key's entry goes with the record
}

TEST_F(HalfUpdated, RebindDiedAfterTheNewKeyBeforeTheRecord) {
  // The new key's entry landed, the record still holds the old backend: the entry leads to a
  // record whose key is another, so it goes; the flow stays on its old backend.
  const uint32_t i = idx_[10];
  Flow moved = flow_n(10);
  moved.backend_ip = ip4(10, 9, 9, 9);
  add_ref(primary(moved.backend_key()), hash_(moved.backend_key()), ref(i, Dir::kFromBackend));
  Expect(1, 0);
}

TEST_F(HalfUpdated, GarbageReferencesAndRecords) {
  // Out of range, a duplicate of a live reference, a wrong signature, in_use neither 0 nor 1,
  // and a free list overwritten.
  const Flow f = flow_n(11);
  add_ref(0, 0x1234ull << 32, ref(kCap + 5, Dir::kFromClient));
  add_ref(primary(f.client_key()), hash_(f.client_key()), ref(idx_[11], Dir::kFromClient));
  add_ref(primary(flow_n(12).client_key()), 0xdeadull << 32, ref(idx_[12], Dir::kFromClient));
  m_.record(idx_[13]).in_use = 7;
  for (uint32_t i = 0; i < kCap; ++i) m_.free_list()[i] = 3;
  Expect(3 + 2, 1, {13});
}

TEST_F(HalfUpdated, TwoRecordsWithOneKey) {
  // A torn image with another record holding flow 14's keys, both indexed: one of them goes.
  const uint32_t i = free_record();
  Flow f = flow_n(14);
  f.in_use = 1;
  m_.record(i) = f;
  add_ref(primary(f.client_key()), hash_(f.client_key()), ref(i, Dir::kFromClient));
  add_ref(primary(f.backend_key()), hash_(f.backend_key()), ref(i, Dir::kFromBackend));
  FlowTable::RepairReport r;
  FlowTable t(kCap, kSeed, m_.span(), FlowTable::Region::kAttach, &r);
  EXPECT_EQ(r.records_dropped, 1u);
  EXPECT_EQ(r.refs_dropped, 2u);
  EXPECT_EQ(r.kept, kFlows);
  EXPECT_TRUE(Consistent(t, m_));
}

TEST_F(HalfUpdated, FullnatRecordsKeepTheirClientReferenceOnly) {
  // A full-NAT record is indexed under its client key only (Flow::indexes_backend_key): one
  // as this lbd writes it is kept as it is; one an lbd before 2026-12-08 wrote, with a backend
  // reference too, is kept and loses that reference.
  Flow now = flow_n(5000), old = flow_n(5001);
  for (Flow* f : {&now, &old}) {
    f->forward = ForwardMode::kFullnat;
    f->local_port = static_cast<uint16_t>(f->client_port + 1);
  }
  const uint32_t i = free_record();
  m_.record(i) = now;
  m_.record(i).in_use = 1;
  add_ref(primary(now.client_key()), hash_(now.client_key()), ref(i, Dir::kFromClient));
  const uint32_t j = free_record();
  m_.record(j) = old;
  m_.record(j).in_use = 1;
  add_ref(primary(old.client_key()), hash_(old.client_key()), ref(j, Dir::kFromClient));
  add_ref(primary(old.backend_key()), hash_(old.backend_key()), ref(j, Dir::kFromBackend));
  FlowTable::RepairReport r;
  FlowTable t(kCap, kSeed, m_.span(), FlowTable::Region::kAttach, &r);
  EXPECT_EQ(r.refs_dropped, 1u);
  EXPECT_EQ(r.records_dropped, 0u);
  EXPECT_EQ(r.kept, kFlows + 2);
  EXPECT_TRUE(Holds(t, i, now));
  EXPECT_TRUE(Holds(t, j, old));
  for (uint32_t n = 0; n < kFlows; ++n) EXPECT_TRUE(Holds(t, idx_[n], flow_n(n))) << n;
  // Erased, each takes its one reference with it.
  t.erase(i);
  t.erase(j);
  Dir d;
  EXPECT_EQ(find(t, now.client_key(), d), FlowTable::kNoFlow);
  EXPECT_EQ(find(t, old.client_key(), d), FlowTable::kNoFlow);
  EXPECT_TRUE(Consistent(t, m_));
}

TEST_F(HalfUpdated, RandomDamageAlwaysEndsConsistent) {
  // Whatever bytes of the index and the in_use flags a crash (or worse) leaves, repair()
  // returns a table that keeps every invariant, and keeps every flow it did not touch.
  std::mt19937 mt(42);
  auto rng = [&mt] { return static_cast<uint32_t>(mt()); };
  const std::vector<std::byte> clean(m_.span().begin(), m_.span().end());
  for (int round = 0; round < 200; ++round) {
    std::copy(clean.begin(), clean.end(), m_.span().begin());
    std::set<uint32_t> touched;
    const int writes = 1 + static_cast<int>(rng() % 8);
    for (int w = 0; w < writes; ++w) {
      const uint32_t n = rng() % kFlows;
      switch (rng() % 4) {
        case 0:  // a reference slot anywhere
          m_.bucket(rng() % m_.nbuckets())[8 + rng() % 8] = rng() % (2 * kCap + 8);
          break;
        case 1:  // a signature anywhere
          m_.bucket(rng() % m_.nbuckets())[rng() % 8] = static_cast<uint32_t>(rng());
          break;
        case 2:  // a flow's in_use
          m_.record(idx_[n]).in_use = static_cast<uint8_t>(rng() % 3);
          touched.insert(n);
          break;
        case 3:  // a flow's key
          m_.record(idx_[n]).client_port ^= static_cast<uint16_t>(1 + rng() % 100);
          touched.insert(n);
          break;
      }
    }
    FlowTable t(kCap, kSeed, m_.span(), FlowTable::Region::kAttach);
    // Index damage may cost a flow its entry (then it goes), but never corrupts another.
    uint32_t kept = 0;
    for (uint32_t n = 0; n < kFlows; ++n) {
      if (!t.at(idx_[n]).in_use) continue;
      ++kept;
      if (touched.count(n)) continue;
      ASSERT_TRUE(Holds(t, idx_[n], flow_n(n))) << "round " << round << " flow " << n;
    }
    EXPECT_GE(kept + static_cast<uint32_t>(writes), kFlows) << "round " << round;
    ASSERT_TRUE(Consistent(t, m_)) << "round " << round;  // (fills the table up)
  }
}

// ---------------------------------------------------------------------------------------------
// The header

FlowFileParams params() {
  FlowFileParams p;
  p.capacity = 65536;
  p.worker = 1;
  p.workers = 2;
  p.reta_size = 128;
  p.nports = 2;
  p.ports_digest = SettingsDigest().add("client").add(ip4(10, 10, 0, 1)).value();
  p.tsc_hz = 2'450'000'000;
  p.boot_id = "c421dbb3-4c96-4830-beec-628ce485415d";
  return p;
}

struct HeaderCase {
  const char* name;
  void (*change)(FlowFileHeader&, uint64_t& file_bytes, FlowFileParams&);
  const char* why;  // a substring of the reason; nullptr: taken over
};

TEST(FlowStore, HeaderDecidesWhetherATableIsTakenOver) {
  const HeaderCase cases[] = {
      {"same", [](FlowFileHeader&, uint64_t&, FlowFileParams&) {}, nullptr},
      {"TSC rate one 10 MHz step off",
       [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.tsc_hz += 10'000'000; }, nullptr},
      {"no magic", [](FlowFileHeader& h, uint64_t&, FlowFileParams&) { h.magic[0] = 0; },
       "not a finished flow table"},
      {"short", [](FlowFileHeader&, uint64_t& b, FlowFileParams&) { b = 100; },
       "shorter than a header"},
      {"layout", [](FlowFileHeader& h, uint64_t&, FlowFileParams&) { h.layout = 0; },
       "layout is version 0, this lbd's is 3"},
      {"record size", [](FlowFileHeader& h, uint64_t&, FlowFileParams&) { h.flow_bytes = 128; },
       "laid out differently"},
      {"capacity", [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.capacity = 131072; },
       "it holds 65536 flows, dataplane.flows.capacity is now 131072"},
      {"truncated file",
       [](FlowFileHeader&, uint64_t& b, FlowFileParams&) { b = flow_file_bytes(65536) - 64; },
       "a table of 65536 flows needs"},
      {"worker", [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.worker = 0; },
       "it is worker 1's table, not worker 0's"},
      {"workers", [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.workers = 4; },
       "made for 2 worker(s), dataplane.workers is now 4"},
      {"reta", [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.reta_size = 512; },
       "redirection table had 128 entries, now 512"},
      {"ports", [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.ports_digest ^= 1; },
       "the ports or the full-NAT settings changed"},
      {"port count", [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.nports = 3; },
       "2 ports then, 3 now"},
      {"reboot",
       [](FlowFileHeader&, uint64_t&, FlowFileParams& p) {
         p.boot_id = "00000000-1111-2222-3333-444444444444";
       },
       "before the machine rebooted"},
      {"clock", [](FlowFileHeader&, uint64_t&, FlowFileParams& p) { p.tsc_hz = 3'000'000'000; },
       "ticks of 2450000000 Hz, this clock runs at 3000000000 Hz"},
  };
  for (const HeaderCase& c : cases) {
    SCOPED_TRACE(c.name);
    FlowFileHeader h;
    FlowFileParams p = params();
    init_flow_file_header(h, p, 0x5eed, {100, 200}, 1700000000, 42);
    std::memcpy(h.magic, kFlowFileMagic, sizeof h.magic);
    uint64_t bytes = flow_file_bytes(p.capacity);
    c.change(h, bytes, p);
    const std::string why = flow_file_mismatch(h, bytes, p);
    if (!c.why) {
      EXPECT_EQ(why, "");
    } else {
      EXPECT_NE(why.find(c.why), std::string::npos) << why;
    }
  }
}

TEST(FlowStore, HeaderKeepsWhatItWasMadeWith) {
  FlowFileHeader h;
  init_flow_file_header(h, params(), 0x5eed, {100, 200}, 1700000000, 42);
  EXPECT_EQ(h.hash_seed, 0x5eedu);
  EXPECT_EQ(h.capacity, 65536u);
  EXPECT_EQ(h.table_bytes, FlowTable::region_bytes(65536));
  EXPECT_STREQ(h.boot_id, params().boot_id.c_str());
  EXPECT_EQ(h.pid, 42u);
  EXPECT_EQ(h.clean, 0u);
  EXPECT_EQ(recorded_clock(h).tsc, 100u);
  record_clock(h, {300, 400});
  EXPECT_EQ(recorded_clock(h).tsc, 300u);
  EXPECT_EQ(recorded_clock(h).boot_ns, 400u);
  record_clock(h, {500, 600});
  EXPECT_EQ(recorded_clock(h).tsc, 500u);
  EXPECT_EQ(recorded_clock(h).boot_ns, 600u);
  // The previous pair is still whole in the other slot: a writer killed half way through its
  // next record leaves the slot in use untouched.
  EXPECT_EQ(h.clock[h.clock_slot ^ 1u].tsc, 300u);
}

TEST(FlowStore, ClockShiftOnlyWhenTheTickCounterDidNotKeepPace) {
  constexpr uint64_t hz = 2'000'000'000;
  constexpr uint64_t s = 1'000'000'000;  // ns
  const ClockPair then{1'000 * hz, 500 * s};
  // 3 s later by both clocks: nothing to move.
  EXPECT_EQ(flow_clock_shift(then, {1'003 * hz, 503 * s}, hz), 0);
  // The rate known to 0.5 % only: a day at that error is still not a jump.
  EXPECT_EQ(flow_clock_shift(then, {1'000 * hz + 86'400 * hz / 200 * 201, (500 + 86'400) * s}, hz),
            0);
  // The counter restarted (a resumed VM): 3 s passed, the counter says -990 s.
  EXPECT_EQ(flow_clock_shift(then, {10 * hz, 503 * s}, hz),
            static_cast<int64_t>(10 * hz) - static_cast<int64_t>(1'003 * hz));
  // The counter ran 60 s ahead of the clock.
  EXPECT_EQ(flow_clock_shift(then, {1'063 * hz, 503 * s}, hz), static_cast<int64_t>(60 * hz));
}

TEST(FlowStore, SettingsDigestSeesEveryField) {
  std::set<uint64_t> seen;
  seen.insert(SettingsDigest().add("client").add(1).add(24).value());
  seen.insert(SettingsDigest().add("client").add(1).add(25).value());
  seen.insert(SettingsDigest().add("client").add(2).add(24).value());
  seen.insert(SettingsDigest().add("clienu").add(1).add(24).value());
  seen.insert(SettingsDigest().add("clien").add("t").add(1).add(24).value());
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_EQ(SettingsDigest().add("a").add(7).value(), SettingsDigest().add("a").add(7).value());
}

// ---------------------------------------------------------------------------------------------
// Giving restored flows the new process's ids

TEST(FlowStore, RestoreMovesDeadlinesExpiresRebindsAndRenumbers) {
  Memory m(1024);
  FlowTable t(1024, 3, m.span(), FlowTable::Region::kFresh);
  std::map<uint32_t, uint32_t> idx;  // n -> record
  for (uint32_t n = 0; n < 20; ++n) {
    Flow f = flow_n(n, /*expires=*/100 + n * 10);  // deadlines 100 .. 290
    f.serial = 1000 + n;
    ASSERT_EQ(t.insert(f, idx[n]), FlowTable::InsertResult::kOk);
  }
  // Backends 10.3.0.1 .. 10.3.0.7; the new process knows all but 10.3.0.4 (n % 7 == 3).
  uint32_t calls = 0;
  const RestoreReport r = restore_flows(t, /*now=*/1150, /*shift=*/1000, [&](const Flow& f) {
    ++calls;
    FlowBinding b;
    b.service = 3;
    if (f.backend_ip != ip4(10, 3, 0, 4)) {
      b.backend = static_cast<BackendId>(100 + (f.backend_ip & 0xff));
      b.backend_port_id = 1;
      b.neighbor = static_cast<uint16_t>(f.backend_ip & 0xff);
    }
    return b;
  });
  // Deadlines 1100 .. 1290 after the shift; those <= 1150 ended (n = 0..5).
  EXPECT_EQ(r.expired, 6u);
  EXPECT_EQ(r.kept, 14u);
  EXPECT_EQ(r.gone, 2u);  // n = 10, 17
  EXPECT_EQ(calls, 14u);
  EXPECT_EQ(t.size(), 14u);
  std::set<uint32_t> serials;
  for (uint32_t n = 6; n < 20; ++n) {
    const Flow& f = t.at(idx[n]);
    ASSERT_TRUE(f.in_use) << n;
    EXPECT_EQ(f.expires, 1100 + n * 10);
    EXPECT_EQ(f.created, (100 + n * 10) / 2 + 1000);
    EXPECT_EQ(f.service, 3);
    if (n % 7 == 3) {
      EXPECT_EQ(f.backend, kGoneBackend) << n;
    } else {
      EXPECT_EQ(raw(f.backend), 100 + (f.backend_ip & 0xff)) << n;
      EXPECT_EQ(f.backend_port_id, 1);
    }
    serials.insert(f.serial);
    Dir d;
    EXPECT_EQ(find(t, f.client_key(), d), idx[n]);
  }
  EXPECT_EQ(serials, (std::set<uint32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}));
  // A shift back past zero is an expiry, not a wrap to the far future.
  const RestoreReport back = restore_flows(t, 10, -5000, [](const Flow&) { return FlowBinding{}; });
  EXPECT_EQ(back.expired, 14u);
  EXPECT_EQ(t.size(), 0u);
}

// The full-NAT ports' hold times in a re-attached file: moved like the deadlines, a flow's port
// free at its deadline + hold (or now + hold when the flows are discarded), a hold no release
// could have set (beyond now + hold) not trusted.
TEST(FlowStore, PortHoldsFollowTheirFlowsAndTheClock) {
  Memory m(64);
  FlowTable t(64, 3, m.span(), FlowTable::Region::kFresh);
  uint32_t idx;
  Flow f = flow_n(1, /*expires=*/200);
  f.forward = ForwardMode::kFullnat;
  f.local_port = 3;  // holds index 3 below
  ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk);
  Flow d = flow_n(2, 900);  // a dnat flow has no port
  ASSERT_EQ(t.insert(d, idx), FlowTable::InsertResult::kOk);
  auto index = [](const Flow& fl) { return size_t{fl.local_port}; };
  {
    std::vector<uint64_t> holds = {0, 150, 900000, 7, 0};
    // shift +1000, now 1100, hold 60: 150 -> 1150; 900000 -> 1160 (clamped); the flow's port
    // 3: 200 + 1000 + 60.
    EXPECT_EQ(restore_port_holds(holds, t, 1100, 1000, 60, false, index), 3u);
    EXPECT_EQ(holds, (std::vector<uint64_t>{0, 1150, 1160, 1260, 0}));
  }
  {
    std::vector<uint64_t> holds = {0, 0, 0, 0, 0};
    EXPECT_EQ(restore_port_holds(holds, t, 5000, 0, 60, /*flows_end_now=*/true, index), 1u);
    EXPECT_EQ(holds, (std::vector<uint64_t>{0, 0, 0, 5060, 0}));
  }
}

}  // namespace
}  // namespace lb::core
