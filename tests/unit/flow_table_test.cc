// The per-worker flow table: both directions, erase, conflicts, capacity, rebind, aging with an
// injected clock and a bounded budget, and a long randomized run against a std::map model.

#include "flow_table.h"
#include "flow_list.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "packet_builder.h"

namespace lb::core {
namespace {

using test::ip4;

Flow make_flow(uint32_t client_ip, uint16_t client_port, uint32_t vip, uint16_t vport,
               uint32_t backend_ip, uint16_t backend_port, Tick expires = 100) {
  Flow f{};
  f.client_ip = client_ip;
  f.client_port = client_port;
  f.vip = vip;
  f.vport = vport;
  f.backend_ip = backend_ip;
  f.backend_port = backend_port;
  f.backend = static_cast<BackendId>(backend_ip & 0xff);
  f.expires = expires;
  f.created = expires / 2;
  f.serial = client_port;
  f.state = TcpState::kEstablished;
  f.client_mac = test::mac(2, 0, 0, 0, 0, static_cast<uint8_t>(client_port));
  return f;
}

Flow flow_n(uint32_t n, Tick expires = 100) {
  return make_flow(ip4(10, 1, 0, 0) + (n >> 8), static_cast<uint16_t>(1024 + (n & 0xff)),
                   ip4(10, 2, 0, 1), 80, ip4(10, 3, 0, 1) + (n % 7), 8080, expires);
}

uint32_t find(const FlowTable& t, const FlowKey& k, Dir& d) {
  return t.lookup(k, t.hash(k), d);
}
uint32_t find(const FlowTable& t, const FlowKey& k) {
  Dir d;
  return find(t, k, d);
}

// Both keys of `f` lead to `idx` with the right direction, and the record holds `f`.
::testing::AssertionResult Findable(const FlowTable& t, uint32_t idx, const Flow& f) {
  Dir d = Dir::kFromBackend;
  const uint32_t c = find(t, f.client_key(), d);
  if (c != idx || d != Dir::kFromClient)
    return ::testing::AssertionFailure() << "client key -> " << c << " want " << idx;
  const uint32_t b = find(t, f.backend_key(), d);
  if (b != idx || d != Dir::kFromBackend)
    return ::testing::AssertionFailure() << "backend key -> " << b << " want " << idx;
  const Flow& g = t.at(idx);
  if (!g.in_use || g.client_key() != f.client_key() || g.backend_key() != f.backend_key() ||
      g.expires != f.expires || g.serial != f.serial || !(g.client_mac == f.client_mac))
    return ::testing::AssertionFailure() << "record " << idx << " does not hold the flow";
  return ::testing::AssertionSuccess();
}

TEST(FlowTable, TcpStateNames) {
  EXPECT_STREQ(to_string(TcpState::kSynSent), "SYN_SENT");
  EXPECT_STREQ(to_string(TcpState::kSynRecv), "SYN_RECV");
  EXPECT_STREQ(to_string(TcpState::kEstablished), "ESTABLISHED");
  EXPECT_STREQ(to_string(TcpState::kFinWait), "FIN_WAIT");
  EXPECT_STREQ(to_string(TcpState::kTimeWait), "TIME_WAIT");
  EXPECT_STREQ(to_string(TcpState::kClosed), "CLOSED");
  EXPECT_STREQ(to_string(TcpState::kReset), "RESET");
}

TEST(FlowTable, HashIsSeededAndDeterministic) {
  FlowTable a(16, 1), a2(16, 1), b(16, 2);
  const FlowKey k{ip4(10, 1, 0, 1), ip4(10, 2, 0, 1), 1234, 80};
  EXPECT_EQ(a.hash(k), a2.hash(k));
  EXPECT_NE(a.hash(k), b.hash(k));
  // Every field matters.
  std::set<uint64_t> seen;
  for (FlowKey v : {k, FlowKey{k.src_ip + 1, k.dst_ip, k.src_port, k.dst_port},
                    FlowKey{k.src_ip, k.dst_ip + 1, k.src_port, k.dst_port},
                    FlowKey{k.src_ip, k.dst_ip, uint16_t(k.src_port + 1), k.dst_port},
                    FlowKey{k.src_ip, k.dst_ip, k.src_port, uint16_t(k.dst_port + 1)},
                    FlowKey{k.dst_ip, k.src_ip, k.dst_port, k.src_port}})
    seen.insert(a.hash(v));
  EXPECT_EQ(seen.size(), 6u);
}

TEST(FlowTable, HashIsTheSameFunctionAsBeforeAndHashWordsAgrees) {
  // Flow tables outlive the process in files (docs/operations.md): the hash of a key must not
  // change. The reference is the formula written out independently of hash_words().
  const auto reference = [](const FlowKey& k, uint64_t seed) {
    uint64_t a = (uint64_t{k.src_ip} << 32 | k.dst_ip) ^ seed;
    const uint64_t b = (uint64_t{k.src_port} << 16 | k.dst_port) ^ (seed >> 17);
    a *= 0x9e3779b97f4a7c15ull;
    a ^= a >> 32;
    a ^= b * 0xc2b2ae3d27d4eb4full;
    a *= 0x165667b19e3779f9ull;
    a ^= a >> 29;
    return a;
  };
  // Fixed values besides, for lbd's default seed and seed 0 (computed from the formula as it
  // stood before hash_words, 0f8cbfc): a change made to both the formula and the reference above
  // still fails here.
  const FlowKey client{ip4(192, 0, 2, 1), ip4(10, 10, 0, 100), 40000, 80};
  const FlowKey backend{ip4(10, 20, 0, 11), ip4(192, 0, 2, 1), 8080, 40000};
  EXPECT_EQ(FlowTable(16, 0x6c62642d666c6f77ull).hash(client), 0x0cdfa9430df58b1eull);
  EXPECT_EQ(FlowTable(16, 0x6c62642d666c6f77ull).hash(backend), 0x6ab8ce3c49166347ull);
  EXPECT_EQ(FlowTable(16, 0).hash(client), 0xdfe4bf314a73f735ull);
  EXPECT_EQ(FlowTable(16, 0).hash(backend), 0x3eebaa42bc8c23b9ull);
  std::mt19937_64 rng(15);
  for (int n = 0; n < 10000; ++n) {
    const uint64_t seed = n == 0 ? 0x6c62642d666c6f77ull : rng();
    const FlowTable t(16, seed);
    const FlowKey k{static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng()),
                    static_cast<uint16_t>(rng()), static_cast<uint16_t>(rng())};
    ASSERT_EQ(t.hash(k), reference(k, seed)) << n;
    // The words a TCP/IPv4 frame holds: IPv4 bytes 12-19 and TCP bytes 0-3, big-endian.
    uint8_t frame_words[12];
    test::set32(frame_words, k.src_ip);
    test::set32(frame_words + 4, k.dst_ip);
    test::set16(frame_words + 8, k.src_port);
    test::set16(frame_words + 10, k.dst_port);
    ASSERT_EQ(t.hash_words(load_be<uint64_t>(frame_words), load_be32(frame_words + 8)), t.hash(k))
        << n;
  }
}

TEST(FlowTable, PrefetchRecordsGivesEachHashItsPrefetchRecordHint) {
  // The burst's record stage over a whole array (table constants in registers) gives every hash
  // what prefetch_record() gives it: keys in the table (both directions), missing ones, 0.
  FlowTable t(256);
  std::vector<uint64_t> h;
  for (uint16_t n = 0; n < 40; ++n) {
    const Flow f =
        make_flow(ip4(192, 0, 2, static_cast<uint8_t>(n + 1)), static_cast<uint16_t>(40000 + n),
                  ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 11), 8080);
    uint32_t idx = FlowTable::kNoFlow;
    if (n % 4 != 3) {
      ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk);
    }
    h.push_back(t.hash(f.client_key()));
    h.push_back(t.hash(f.backend_key()));
  }
  h.push_back(0);
  std::vector<uint32_t> hint(h.size(), 12345);
  t.prefetch_records(h.data(), hint.data(), static_cast<uint32_t>(h.size()));
  uint32_t found = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(hint[i], t.prefetch_record(h[i])) << i;
    found += hint[i] != 0;
  }
  EXPECT_GE(found, 60u);  // 30 flows in the table, two keys each
}

TEST(FlowTable, EveryFieldOfEitherKeyDecidesAHit) {
  // The key compare reads the record's fields as words (two orders: client and backend key):
  // changing any one field, or any one bit of it, of either key is a miss, through the hint
  // prefetch_record() gives as through the buckets.
  FlowTable t(64);
  const Flow f =
      make_flow(ip4(192, 0, 2, 1), 40000, ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 11), 8080);
  uint32_t idx = FlowTable::kNoFlow;
  ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk);
  for (const Dir want : {Dir::kFromClient, Dir::kFromBackend}) {
    const FlowKey k = want == Dir::kFromClient ? f.client_key() : f.backend_key();
    Dir d = want == Dir::kFromClient ? Dir::kFromBackend : Dir::kFromClient;
    const uint64_t h = t.hash(k);
    EXPECT_EQ(t.match_hint(t.prefetch_record(h), k, d), idx);
    EXPECT_TRUE(t.in_use_dnat(idx));
    EXPECT_EQ(d, want);
    for (int bit = 0; bit < 96; ++bit) {
      FlowKey m = k;
      if (bit < 32)
        m.src_ip ^= 1u << bit;
      else if (bit < 64)
        m.dst_ip ^= 1u << (bit - 32);
      else if (bit < 80)
        m.src_port = static_cast<uint16_t>(m.src_port ^ (1u << (bit - 64)));
      else
        m.dst_port = static_cast<uint16_t>(m.dst_port ^ (1u << (bit - 80)));
      // The hint of the unchanged key (its record) must not match the changed one either.
      EXPECT_EQ(t.match_hint(t.prefetch_record(h), m, d), FlowTable::kNoFlow)
          << static_cast<int>(want) << " bit " << bit;
      EXPECT_EQ(find(t, m), FlowTable::kNoFlow) << static_cast<int>(want) << " bit " << bit;
    }
  }
}

TEST(FlowTable, InUseDnatIsInUseAndDnat) {
  // The established path's one 16-bit test of in_use and forward: true only for a record in
  // use whose mode is dnat.
  FlowTable t(64);
  uint32_t idx[3];
  const ForwardMode modes[3] = {ForwardMode::kDnat, ForwardMode::kTunnel, ForwardMode::kFullnat};
  for (int i = 0; i < 3; ++i) {
    Flow f = make_flow(ip4(192, 0, 2, 1), static_cast<uint16_t>(40000 + i), ip4(10, 10, 0, 100), 80,
                       ip4(10, 20, 0, 11), 8080);
    f.forward = modes[i];
    ASSERT_EQ(t.insert(f, idx[i]), FlowTable::InsertResult::kOk);
    EXPECT_EQ(t.in_use_dnat(idx[i]), i == 0) << i;
  }
  t.erase(idx[0]);
  EXPECT_FALSE(t.in_use_dnat(idx[0]));  // its mode is still dnat, the record is free
}

TEST(FlowTable, InsertAndLookupBothDirections) {
  FlowTable t(64);
  const Flow f =
      make_flow(ip4(192, 0, 2, 1), 40000, ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 11), 8080);
  uint32_t idx = FlowTable::kNoFlow;
  ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk);
  ASSERT_LT(idx, t.capacity());
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(Findable(t, idx, f));
  EXPECT_EQ(t.at(idx).in_use, 1);
  t.prefetch(t.hash(f.client_key()));

  // Nearby keys are misses: the reverse of either key, and each field changed by one.
  const FlowKey ck = f.client_key();
  const FlowKey bk = f.backend_key();
  for (FlowKey k : {FlowKey{ck.dst_ip, ck.src_ip, ck.dst_port, ck.src_port},
                    FlowKey{bk.dst_ip, bk.src_ip, bk.dst_port, bk.src_port},
                    FlowKey{ck.src_ip + 1, ck.dst_ip, ck.src_port, ck.dst_port},
                    FlowKey{ck.src_ip, ck.dst_ip + 1, ck.src_port, ck.dst_port},
                    FlowKey{ck.src_ip, ck.dst_ip, uint16_t(ck.src_port + 1), ck.dst_port},
                    FlowKey{ck.src_ip, ck.dst_ip, ck.src_port, uint16_t(ck.dst_port + 1)},
                    FlowKey{bk.src_ip, bk.dst_ip, uint16_t(bk.src_port + 1), bk.dst_port},
                    FlowKey{bk.src_ip, bk.dst_ip + 1, bk.src_port, bk.dst_port}})
    EXPECT_EQ(find(t, k), FlowTable::kNoFlow);
}

TEST(FlowTable, EraseRemovesBothKeysAndFreesTheRecord) {
  FlowTable t(4);
  std::vector<uint32_t> idx(4);
  for (uint32_t i = 0; i < 4; ++i)
    ASSERT_EQ(t.insert(flow_n(i), idx[i]), FlowTable::InsertResult::kOk);
  t.erase(idx[1]);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.at(idx[1]).in_use, 0);
  EXPECT_EQ(find(t, flow_n(1).client_key()), FlowTable::kNoFlow);
  EXPECT_EQ(find(t, flow_n(1).backend_key()), FlowTable::kNoFlow);
  for (uint32_t i : {0u, 2u, 3u}) EXPECT_TRUE(Findable(t, idx[i], flow_n(i)));
  // Erasing a free record is a no-op (no double free of the slot).
  t.erase(idx[1]);
  EXPECT_EQ(t.size(), 3u);
  // The record is reused; the table is then full again.
  uint32_t again;
  ASSERT_EQ(t.insert(flow_n(9), again), FlowTable::InsertResult::kOk);
  EXPECT_EQ(again, idx[1]);
  EXPECT_TRUE(Findable(t, again, flow_n(9)));
  uint32_t none;
  EXPECT_EQ(t.insert(flow_n(10), none), FlowTable::InsertResult::kFull);
  // The same key can come back after an erase.
  t.erase(idx[0]);
  ASSERT_EQ(t.insert(flow_n(0), again), FlowTable::InsertResult::kOk);
  EXPECT_TRUE(Findable(t, again, flow_n(0)));
}

TEST(FlowTable, Conflicts) {
  FlowTable t(16);
  const Flow a =
      make_flow(ip4(192, 0, 2, 1), 40000, ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 11), 8080);
  uint32_t ia;
  ASSERT_EQ(t.insert(a, ia), FlowTable::InsertResult::kOk);
  uint32_t ib = 12345;
  // Same client key, another backend.
  Flow b = a;
  b.backend_ip = ip4(10, 20, 0, 12);
  EXPECT_EQ(t.insert(b, ib), FlowTable::InsertResult::kConflict);
  // Same backend key through another VIP (two services balancing to one backend).
  Flow c = a;
  c.vip = ip4(10, 10, 0, 101);
  EXPECT_EQ(t.insert(c, ib), FlowTable::InsertResult::kConflict);
  // A flow whose client key is another flow's backend key.
  Flow d =
      make_flow(a.backend_ip, a.backend_port, a.client_ip, a.client_port, ip4(10, 30, 0, 1), 9);
  EXPECT_EQ(t.insert(d, ib), FlowTable::InsertResult::kConflict);
  EXPECT_EQ(ib, 12345u);  // untouched on failure
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(Findable(t, ia, a));
  // The same client from another port is no conflict.
  Flow e = a;
  e.client_port = 40001;
  ASSERT_EQ(t.insert(e, ib), FlowTable::InsertResult::kOk);
  EXPECT_TRUE(Findable(t, ia, a));
  EXPECT_TRUE(Findable(t, ib, e));
}

// A full-NAT flow is indexed under its client key only: its backend answers a local address and
// port (SnatPorts), never the client's. So one client ip:port through two full-NAT VIPs to one
// backend makes two flows, not a conflict (as it is for dnat, whose backend key is the reply's);
// rebind and erase touch no backend key; a dnat flow may hold that backend key meanwhile.
TEST(FlowTable, FullnatFlowIsIndexedUnderItsClientKeyOnly) {
  FlowTable t(16);
  Flow a = make_flow(ip4(192, 0, 2, 1), 40000, ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 11), 8080);
  a.forward = ForwardMode::kFullnat;
  uint32_t ia, ib, ic;
  ASSERT_EQ(t.insert(a, ia), FlowTable::InsertResult::kOk);
  Dir d;
  EXPECT_EQ(find(t, a.client_key(), d), ia);
  EXPECT_EQ(d, Dir::kFromClient);
  EXPECT_EQ(find(t, a.backend_key()), FlowTable::kNoFlow);
  Flow b = a;  // another VIP, the same client ip:port and backend: in place, as new_flow does
  b.vip = ip4(10, 10, 0, 101);
  Flow* r = t.next_free();
  ASSERT_NE(r, nullptr);
  *r = b;
  r->in_use = 0;
  ASSERT_EQ(t.commit_client_after_miss(t.hash(b.client_key()), ib), FlowTable::InsertResult::kOk);
  EXPECT_EQ(find(t, b.client_key()), ib);
  // A dnat flow of that client to that backend through a third VIP holds the backend key.
  Flow c = a;
  c.vip = ip4(10, 10, 0, 102);
  c.forward = ForwardMode::kDnat;
  ASSERT_EQ(t.insert(c, ic), FlowTable::InsertResult::kOk);
  EXPECT_TRUE(Findable(t, ic, c));
  EXPECT_EQ(t.size(), 3u);
  // Rebind onto another backend, even onto the dnat flow's backend key: no index change.
  ASSERT_TRUE(t.rebind(ia, BackendId{12}, ip4(10, 20, 0, 12), 8080));
  EXPECT_EQ(t.at(ia).backend_ip, ip4(10, 20, 0, 12));
  EXPECT_EQ(find(t, t.at(ia).backend_key()), FlowTable::kNoFlow);
  ASSERT_TRUE(t.rebind(ib, c.backend, c.backend_ip, c.backend_port));
  EXPECT_TRUE(Findable(t, ic, c));
  t.erase(ia);
  t.erase(ib);
  EXPECT_EQ(find(t, a.client_key()), FlowTable::kNoFlow);
  EXPECT_EQ(find(t, b.client_key()), FlowTable::kNoFlow);
  EXPECT_TRUE(Findable(t, ic, c));
  EXPECT_EQ(t.size(), 1u);
}

// The new-flow path writes its record in place (next_free) and then indexes it
// (commit_after_miss): a commit that fails leaves the record free and the table as it was, and
// the record is the one the next insert takes.
TEST(FlowTable, InPlaceInsertCommitsOrLeavesTheRecordFree) {
  FlowTable t(4);
  const Flow a =
      make_flow(ip4(192, 0, 2, 1), 40000, ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 11), 8080);
  Flow* r = t.next_free();
  ASSERT_NE(r, nullptr);
  *r = a;
  r->in_use = 0;
  uint32_t ia = 999;
  const FlowKey ck = a.client_key();
  ASSERT_EQ(t.commit_after_miss(t.hash(ck), ia), FlowTable::InsertResult::kOk);
  EXPECT_EQ(&t.at(ia), r);
  EXPECT_EQ(t.at(ia).in_use, 1);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(Findable(t, ia, a));
  // Another client to the same backend ip:port as a's client (its backend key is a's): refused.
  Flow c = a;
  c.vip = ip4(10, 10, 0, 101);
  Flow* r2 = t.next_free();
  ASSERT_NE(r2, nullptr);
  EXPECT_NE(r2, r);
  *r2 = c;
  r2->in_use = 0;
  uint32_t ic = 999;
  EXPECT_EQ(t.commit_after_miss(t.hash(c.client_key()), ic), FlowTable::InsertResult::kConflict);
  EXPECT_EQ(ic, 999u);
  EXPECT_EQ(r2->in_use, 0);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(find(t, c.client_key()), FlowTable::kNoFlow);
  EXPECT_TRUE(Findable(t, ia, a));
  // The refused record is still the next free one; the table fills to capacity and then says so.
  EXPECT_EQ(t.next_free(), r2);
  for (uint32_t n = 0; n < 3; ++n) {
    uint32_t i;
    ASSERT_EQ(t.insert(flow_n(n), i), FlowTable::InsertResult::kOk) << n;
  }
  EXPECT_EQ(t.next_free(), nullptr);
}

TEST(FlowTable, FullTableKeepsExistingFlows) {
  constexpr uint32_t kCap = 100;
  FlowTable t(kCap);
  std::vector<uint32_t> idx(kCap);
  std::set<uint32_t> distinct;
  for (uint32_t i = 0; i < kCap; ++i) {
    ASSERT_EQ(t.insert(flow_n(i), idx[i]), FlowTable::InsertResult::kOk) << i;
    distinct.insert(idx[i]);
  }
  EXPECT_EQ(distinct.size(), kCap);
  EXPECT_EQ(t.size(), kCap);
  uint32_t none = 777;
  EXPECT_EQ(t.insert(flow_n(kCap), none), FlowTable::InsertResult::kFull);
  EXPECT_EQ(none, 777u);
  // Full is checked first: even a conflicting flow gets kFull.
  EXPECT_EQ(t.insert(flow_n(0), none), FlowTable::InsertResult::kFull);
  EXPECT_EQ(t.size(), kCap);
  for (uint32_t i = 0; i < kCap; ++i) EXPECT_TRUE(Findable(t, idx[i], flow_n(i))) << i;
  EXPECT_EQ(find(t, flow_n(kCap).client_key()), FlowTable::kNoFlow);
  t.erase(idx[50]);
  uint32_t j;
  EXPECT_EQ(t.insert(flow_n(kCap), j), FlowTable::InsertResult::kOk);
  EXPECT_TRUE(Findable(t, j, flow_n(kCap)));
}

TEST(FlowTable, FillsToCapacityWithoutIndexOverflow) {
  // The index keeps at most half its slots used at capacity: a big table of distinct flows must
  // fill completely without kIndexFull.
  for (uint32_t cap : {1u, 2u, 3u, 7u, 1000u, 65536u}) {
    FlowTable t(cap, 0x1234 + cap);
    std::mt19937 rng(cap);
    auto r32 = [&] { return static_cast<uint32_t>(rng()); };
    std::set<std::tuple<uint32_t, uint16_t>> used;
    std::vector<std::pair<uint32_t, Flow>> flows;
    while (flows.size() < cap) {
      const uint32_t cip = ip4(100, 64, 0, 0) + r32() % 65536;
      const auto cport = static_cast<uint16_t>(1024 + r32() % 60000);
      if (!used.insert({cip, cport}).second) continue;
      const Flow f =
          make_flow(cip, cport, ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 10) + r32() % 16, 8080);
      uint32_t idx;
      ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk)
          << "cap " << cap << " at " << flows.size();
      flows.push_back({idx, f});
    }
    EXPECT_EQ(t.size(), cap);
    uint32_t idx;
    EXPECT_EQ(t.insert(make_flow(1, 1, 2, 2, 3, 3), idx), FlowTable::InsertResult::kFull);
    for (const auto& [i, f] : flows) ASSERT_TRUE(Findable(t, i, f));
  }
}

TEST(FlowTable, Rebind) {
  FlowTable t(16);
  const Flow a = flow_n(1);
  const Flow b = flow_n(2);
  uint32_t ia, ib;
  ASSERT_EQ(t.insert(a, ia), FlowTable::InsertResult::kOk);
  ASSERT_EQ(t.insert(b, ib), FlowTable::InsertResult::kOk);

  const uint32_t new_ip = ip4(10, 3, 0, 200);
  ASSERT_TRUE(t.rebind(ia, BackendId{200}, new_ip, 9090));
  Flow moved = a;
  moved.backend = BackendId{200};
  moved.backend_ip = new_ip;
  moved.backend_port = 9090;
  EXPECT_TRUE(Findable(t, ia, moved));
  EXPECT_EQ(raw(t.at(ia).backend), 200u);
  EXPECT_EQ(find(t, a.backend_key()), FlowTable::kNoFlow);  // the old backend key is gone
  EXPECT_TRUE(Findable(t, ib, b));
  EXPECT_EQ(t.size(), 2u);

  // Onto another flow's backend key: refused, nothing changes.
  const Flow c =
      make_flow(a.client_ip, a.client_port, ip4(10, 2, 0, 9), 80, ip4(10, 3, 0, 77), 7777);
  uint32_t ic;
  ASSERT_EQ(t.insert(c, ic), FlowTable::InsertResult::kOk);
  EXPECT_FALSE(t.rebind(ia, BackendId{77}, ip4(10, 3, 0, 77), 7777));
  EXPECT_TRUE(Findable(t, ia, moved));
  EXPECT_TRUE(Findable(t, ic, c));

  // Onto a key that is some flow's client key: refused too.
  const Flow d =
      make_flow(ip4(10, 3, 0, 88), 8888, a.client_ip, a.client_port, ip4(10, 3, 0, 99), 1);
  uint32_t id;
  ASSERT_EQ(t.insert(d, id), FlowTable::InsertResult::kOk);
  EXPECT_FALSE(t.rebind(ia, BackendId{88}, ip4(10, 3, 0, 88), 8888));
  EXPECT_TRUE(Findable(t, ia, moved));
  EXPECT_TRUE(Findable(t, id, d));

  // Rebinding back frees the way for the old key again.
  ASSERT_TRUE(t.rebind(ia, a.backend, a.backend_ip, a.backend_port));
  EXPECT_TRUE(Findable(t, ia, a));
  EXPECT_EQ(find(t, moved.backend_key()), FlowTable::kNoFlow);
  // Erase after rebind removes the current keys.
  t.erase(ia);
  EXPECT_EQ(find(t, a.client_key()), FlowTable::kNoFlow);
  EXPECT_EQ(find(t, a.backend_key()), FlowTable::kNoFlow);
  EXPECT_EQ(t.size(), 3u);
}

TEST(FlowTable, ExpireOnlyWhatIsDue) {
  constexpr uint32_t kN = 100;
  FlowTable t(kN);
  std::map<uint32_t, Flow> live;
  for (uint32_t i = 0; i < kN; ++i) {
    uint32_t idx;
    ASSERT_EQ(t.insert(flow_n(i, /*expires=*/i), idx), FlowTable::InsertResult::kOk);
    live[idx] = flow_n(i, i);
  }
  std::vector<Tick> expired;
  const uint32_t n = t.expire(49, kN, [&](uint32_t idx, const Flow& f) {
    // Called before the erase, with the live record.
    EXPECT_EQ(f.in_use, 1);
    EXPECT_TRUE(Findable(t, idx, live.at(idx)));
    expired.push_back(f.expires);
    live.erase(idx);
  });
  EXPECT_EQ(n, 50u);
  ASSERT_EQ(expired.size(), 50u);
  for (Tick e : expired) EXPECT_LE(e, 49u);
  EXPECT_EQ(t.size(), 50u);
  for (const auto& [idx, f] : live) EXPECT_TRUE(Findable(t, idx, f));
  // A deadline equal to now is due.
  EXPECT_EQ(t.expire(50, kN, [](uint32_t, const Flow&) {}), 1u);
  EXPECT_EQ(t.expire(50, kN, [](uint32_t, const Flow&) {}), 0u);
  EXPECT_EQ(t.expire(1000, 0, [](uint32_t, const Flow&) {}), 0u);
  EXPECT_EQ(t.size(), 49u);
}

TEST(FlowTable, ExpireBudgetIsBounded) {
  for (uint32_t cap : {100u, 128u, 1000u}) {
    FlowTable t(cap);
    constexpr uint32_t kFlows = 100;
    for (uint32_t i = 0; i < kFlows; ++i) {
      uint32_t idx;
      ASSERT_EQ(t.insert(flow_n(i, 5), idx), FlowTable::InsertResult::kOk);
    }
    constexpr uint32_t kBudget = 10;
    uint32_t total = 0;
    uint32_t calls = 0;
    std::set<uint32_t> seen;
    while (t.size() > 0) {
      uint32_t cb = 0;
      const uint32_t n = t.expire(1000, kBudget, [&](uint32_t idx, const Flow&) {
        ++cb;
        EXPECT_TRUE(seen.insert(idx).second) << "expired twice: " << idx;
      });
      EXPECT_LE(n, kBudget);
      EXPECT_EQ(n, cb);
      total += n;
      ASSERT_LE(++calls, cap / kBudget + 1) << "the clock hand does not cover the table";
    }
    EXPECT_EQ(total, kFlows);
    EXPECT_EQ(seen.size(), kFlows);
    // Records are handed out from index 0 up, and the hand starts at 0: the 100 flows sit in
    // the first 100 records, so 10 calls of budget 10 reach them all.
    EXPECT_EQ(calls, kFlows / kBudget);
  }
}

TEST(FlowTable, ExpireHandWrapsAround) {
  FlowTable t(8);
  std::vector<uint32_t> idx(8);
  for (uint32_t i = 0; i < 8; ++i)
    ASSERT_EQ(t.insert(flow_n(i, 10), idx[i]), FlowTable::InsertResult::kOk);
  EXPECT_EQ(t.expire(5, 8, [](uint32_t, const Flow&) {}), 0u);  // not due yet: a full lap
  // The hand is back at the start; three calls of budget 3 cover all 8 records (and one more).
  uint32_t n = 0;
  for (int i = 0; i < 3; ++i) n += t.expire(10, 3, [](uint32_t, const Flow&) {});
  EXPECT_EQ(n, 8u);
  EXPECT_EQ(t.size(), 0u);
}

// The sweep examines a chunk in runs of consecutive records: a chunk that passes the table's
// end is two runs, and a free record whose stale deadline has passed is never reported (the
// deadline is tested before in_use).
TEST(FlowTable, ExpireChunkAcrossTheTableEnd) {
  FlowTable t(10);
  std::vector<uint32_t> idx(10);
  for (uint32_t i = 0; i < 10; ++i)
    ASSERT_EQ(t.insert(flow_n(i, 100), idx[i]), FlowTable::InsertResult::kOk);
  ASSERT_EQ(idx[9], 9u);  // records are handed out from index 0 up
  EXPECT_EQ(t.expire(50, 7, [](uint32_t, const Flow&) {}), 0u);  // records 0-6: none due
  t.at(9).expires = 10;
  t.at(1).expires = 10;
  t.at(2).expires = 10;
  t.erase(8);
  t.at(8).expires = 0;  // a free record's stale deadline
  std::vector<uint32_t> got;
  const auto note = [&](uint32_t i, const Flow& f) {
    EXPECT_EQ(f.in_use, 1);
    got.push_back(i);
  };
  // Records 7, 8, 9, then 0 and 1: due are 9 and 1, not the free 8.
  EXPECT_EQ(t.expire(50, 5, note), 2u);
  EXPECT_EQ(got, (std::vector<uint32_t>{9, 1}));
  // The hand went on from record 2.
  got.clear();
  EXPECT_EQ(t.expire(50, 1, note), 1u);
  EXPECT_EQ(got, (std::vector<uint32_t>{2}));
  EXPECT_EQ(t.size(), 6u);
}

// The new-flow path hashes the backend key itself (to prefetch its buckets) and hands the hash
// to the commit: the same result as the commit that hashes the key it reads from the record.
TEST(FlowTable, InPlaceCommitWithTheBackendHash) {
  FlowTable t(4);
  const Flow a =
      make_flow(ip4(192, 0, 2, 1), 40000, ip4(10, 10, 0, 100), 80, ip4(10, 20, 0, 11), 8080);
  Flow* r = t.next_free();
  ASSERT_NE(r, nullptr);
  *r = a;
  r->in_use = 0;
  uint32_t ia = 999;
  ASSERT_EQ(t.commit_after_miss(t.hash(a.client_key()), t.hash(a.backend_key()), ia),
            FlowTable::InsertResult::kOk);
  EXPECT_EQ(&t.at(ia), r);
  EXPECT_TRUE(Findable(t, ia, a));
  Flow c = a;  // another VIP, balanced to the same backend for the same client: a conflict
  c.vip = ip4(10, 10, 0, 101);
  Flow* r2 = t.next_free();
  ASSERT_NE(r2, nullptr);
  *r2 = c;
  r2->in_use = 0;
  uint32_t ic = 999;
  EXPECT_EQ(t.commit_after_miss(t.hash(c.client_key()), t.hash(c.backend_key()), ic),
            FlowTable::InsertResult::kConflict);
  EXPECT_EQ(ic, 999u);
  EXPECT_EQ(r2->in_use, 0);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(Findable(t, ia, a));
}

// A failed insert (index overflow) must leave no trace, whatever the caller's Flow says about
// in_use. Needs keys that all land in the same two buckets: found by search over the table's
// own candidate_buckets().
class FlowTableIndexFull : public ::testing::Test {
 protected:
  static constexpr uint32_t kCap = 16;  // 9 buckets of 8 slots
  static constexpr uint64_t kSeed = 0x5eed;

  static std::pair<uint32_t, uint32_t> buckets_of(const FlowTable& t, const FlowKey& k) {
    return t.candidate_buckets(t.hash(k));
  }
  // Both candidate buckets are 0 and 1.
  static bool crowded(const FlowTable& t, const FlowKey& k) {
    const auto [a, b] = buckets_of(t, k);
    return (a == 0 && b == 1) || (a == 1 && b == 0);
  }
  // Neither candidate is bucket 0 or 1.
  static bool clear(const FlowTable& t, const FlowKey& k) {
    const auto [a, b] = buckets_of(t, k);
    return a > 1 && b > 1;
  }
  // The next flow whose backend key is crowded, and whose client key is crowded or clear.
  static Flow next_flow(const FlowTable& t, uint16_t& next_port, bool client_crowded) {
    for (;;) {
      Flow f = make_flow(ip4(10, 1, 0, 1), next_port++, ip4(10, 2, 0, 1), 80, ip4(10, 3, 0, 1), 0);
      if (client_crowded ? !crowded(t, f.client_key()) : !clear(t, f.client_key())) continue;
      for (uint32_t p = 1; p < 65536; ++p) {
        f.backend_port = static_cast<uint16_t>(p);
        if (crowded(t, f.backend_key())) return f;
      }
    }
  }

  void Run(bool client_crowded_last, uint8_t caller_in_use) {
    FlowTable t(kCap, kSeed);
    ASSERT_EQ(t.memory_bytes() - kCap * (sizeof(Flow) + 4 + 8), 9 * 64u) << "layout assumption";
    uint16_t port = 1;
    std::vector<std::pair<uint32_t, Flow>> ok;
    FlowTable::InsertResult r = FlowTable::InsertResult::kOk;
    Flow failed{};
    // Buckets 0 and 1 hold 16 keys. Seven fully crowded flows take 14 slots; then either more
    // fully crowded ones (the 9th flow's client key overflows), or flows with the client key
    // elsewhere (the 10th flow's backend key overflows, and its client key must be rolled back).
    const int want_ok = client_crowded_last ? 8 : 9;
    for (int i = 0; i < 12 && r == FlowTable::InsertResult::kOk; ++i) {
      Flow f = next_flow(t, port, i < 7 || client_crowded_last);
      f.in_use = caller_in_use;
      uint32_t idx = 999;
      r = t.insert(f, idx);
      if (r == FlowTable::InsertResult::kOk)
        ok.push_back({idx, f});
      else
        failed = f;
    }
    ASSERT_EQ(r, FlowTable::InsertResult::kIndexFull) << "more keys than slots must overflow";
    EXPECT_EQ(ok.size(), static_cast<size_t>(want_ok));
    EXPECT_EQ(t.size(), ok.size());
    for (auto& [i, f] : ok) {
      f.in_use = 1;
      EXPECT_TRUE(Findable(t, i, f));
    }
    EXPECT_EQ(find(t, failed.client_key()), FlowTable::kNoFlow) << "client key not rolled back";
    EXPECT_EQ(find(t, failed.backend_key()), FlowTable::kNoFlow);

    // Expiring everything visits exactly the flows that exist.
    uint32_t visited = 0;
    const uint32_t n = t.expire(UINT64_MAX, kCap, [&](uint32_t, const Flow&) { ++visited; });
    EXPECT_EQ(n, ok.size()) << "expired a flow that was never inserted";
    EXPECT_EQ(visited, ok.size());
    EXPECT_EQ(t.size(), 0u);
    // And the table still holds exactly kCap distinct flows afterwards.
    std::set<uint32_t> idxs;
    for (uint32_t i = 0; i < kCap; ++i) {
      uint32_t idx;
      ASSERT_EQ(t.insert(flow_n(1000 + i), idx), FlowTable::InsertResult::kOk) << i;
      EXPECT_TRUE(idxs.insert(idx).second) << "record " << idx << " handed out twice";
    }
    uint32_t idx;
    EXPECT_EQ(t.insert(flow_n(2000), idx), FlowTable::InsertResult::kFull);
    for (uint32_t i = 0; i < kCap; ++i) {
      Dir d;
      const uint32_t at = find(t, flow_n(1000 + i).client_key(), d);
      ASSERT_NE(at, FlowTable::kNoFlow);
      EXPECT_TRUE(Findable(t, at, flow_n(1000 + i)));
    }
  }
};

TEST_F(FlowTableIndexFull, ClientKeyOverflows) {
  Run(true, 0);
}
TEST_F(FlowTableIndexFull, BackendKeyOverflowsAndClientKeyIsRolledBack) {
  Run(false, 0);
}
TEST_F(FlowTableIndexFull, CallerFlowMarkedInUse) {
  Run(true, 1);
}
TEST_F(FlowTableIndexFull, CallerFlowMarkedInUseBackendOverflow) {
  Run(false, 1);
}

// Walks `t` to the end, `budget` records per step; the clients' ports of the flows listed.
std::vector<uint16_t> list_all(const FlowTable& t, Tick now, uint32_t max, uint32_t budget,
                               uint64_t* total = nullptr, uint32_t* steps = nullptr) {
  FlowLister l;
  l.start(max);
  uint32_t n = 1;
  while (!l.step(t, now, budget)) ++n;
  if (total) *total = l.total();
  if (steps) *steps = n;
  std::vector<uint16_t> ports;
  for (const Flow& f : l.oldest()) ports.push_back(f.client_port);
  return ports;
}

TEST(FlowLister, SkipsFreeExpiredAndResetRecords) {
  FlowTable t(16);
  std::vector<uint32_t> idx(7);
  for (uint32_t i = 0; i < 7; ++i)
    ASSERT_EQ(t.insert(flow_n(i, /*expires=*/i < 3 ? 10 : 100), idx[i]),
              FlowTable::InsertResult::kOk);
  t.erase(idx[4]);
  t.at(idx[6]).state = TcpState::kReset;  // not a connection any more
  uint64_t total = 0;
  // flow_n(i): client port 1024 + i, created at expires / 2: the first three are the oldest.
  EXPECT_EQ(list_all(t, 5, 16, 16, &total), (std::vector<uint16_t>{1024, 1025, 1026, 1027, 1029}));
  EXPECT_EQ(total, 5u);
  // Past the first three deadlines, before the aging sweep has erased them: not listed.
  EXPECT_EQ(list_all(t, 10, 16, 3, &total), (std::vector<uint16_t>{1027, 1029}));
  EXPECT_EQ(total, 2u);
  EXPECT_EQ(list_all(t, 100, 16, 16, &total), std::vector<uint16_t>{});
  EXPECT_EQ(total, 0u);
}

TEST(FlowLister, KeepsTheOldestAndCountsAll) {
  FlowTable t(64);
  std::mt19937 rng(5);
  std::vector<Tick> created(40);
  for (uint32_t i = 0; i < 40; ++i) {
    Flow f = flow_n(i, 1000);
    f.created = rng() % 500;
    f.serial = i;
    created[i] = f.created;
    uint32_t idx;
    ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk);
  }
  std::vector<uint32_t> order(40);
  for (uint32_t i = 0; i < 40; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return created[a] < created[b]; });
  std::vector<uint16_t> want;
  for (uint32_t i = 0; i < 7; ++i) want.push_back(static_cast<uint16_t>(1024 + order[i]));
  uint64_t total = 0;
  EXPECT_EQ(list_all(t, 1, 7, 5, &total), want);
  EXPECT_EQ(total, 40u);
  EXPECT_EQ(list_all(t, 1, 0, 64, &total), std::vector<uint16_t>{});
  EXPECT_EQ(total, 40u);
}

// Three flows at scattered indexes of a million-record table (the case: each call used
// to look at a 16 k-record window only): every walk finds all three, in budget-sized steps.
TEST(FlowLister, AMillionRecordTableIsWalkedWhole) {
  constexpr uint32_t kCap = 1u << 20;
  FlowTable t(kCap);
  std::vector<uint32_t> idx(kCap);
  for (uint32_t i = 0; i < kCap; ++i)
    ASSERT_EQ(t.insert(flow_n(i, 100), idx[i]), FlowTable::InsertResult::kOk);
  const std::set<uint32_t> keep = {7, kCap / 2 + 3, kCap - 1};
  for (uint32_t i = 0; i < kCap; ++i)
    if (!keep.count(i)) t.erase(idx[i]);
  ASSERT_EQ(t.size(), 3u);
  std::set<uint32_t> at;
  for (uint32_t i : keep) at.insert(idx[i]);
  EXPECT_GT(*at.rbegin() - *at.begin(), kCap / 2) << "the three are spread over the table";
  for (int call = 0; call < 3; ++call) {
    uint64_t total = 0;
    uint32_t steps = 0;
    const std::vector<uint16_t> ports = list_all(t, 1, 20, 1024, &total, &steps);
    EXPECT_EQ(total, 3u);
    EXPECT_EQ(ports.size(), 3u);
    EXPECT_EQ(steps, kCap / 1024);
  }
}

TEST(FlowTable, MemoryBytes) {
  for (uint32_t cap : {1u, 2u, 100u, 1000u, 4096u, 100000u, 1u << 20}) {
    FlowTable t(cap);
    // record + free-list entry + embryonic-list links
    const size_t per_flow = sizeof(Flow) + sizeof(uint32_t) + 2 * sizeof(uint32_t);
    const size_t mem = t.memory_bytes();
    ASSERT_GT(mem, per_flow * cap) << cap;
    const size_t index = mem - per_flow * cap;
    ASSERT_EQ(index % 64, 0u);
    const size_t slots = index / 64 * 8;
    EXPECT_GE(slots, 4u * cap) << "at most half the index slots used at capacity";
    EXPECT_LE(slots, 17u * cap / 4 + 16) << "sized to the design load (47 %), not rounded up";
    EXPECT_EQ(sizeof(Flow), 64u);
  }
}

// ---------------------------------------------------------------------------------------------
// The embryonic list (SYN floods)

std::vector<uint32_t> embryonic_list(const FlowTable& t) {
  std::vector<uint32_t> v;
  for (uint32_t i = t.oldest_embryonic(); i != FlowTable::kNoFlow; i = t.next_embryonic(i)) {
    v.push_back(i);
    if (v.size() > t.capacity()) break;  // a cycle
  }
  return v;
}

Flow syn_flow(uint32_t n, Tick created) {
  Flow f = flow_n(n, created + 5);
  f.state = TcpState::kSynSent;
  f.created = created;
  return f;
}

TEST(FlowTable, EmbryonicListKeepsInsertOrderAndOnlySynSent) {
  FlowTable t(64);
  std::vector<uint32_t> want;
  for (uint32_t n = 0; n < 10; ++n) {
    uint32_t idx;
    const Flow f = n % 3 == 0 ? flow_n(n) : syn_flow(n, n);  // every third established
    ASSERT_EQ(t.insert(f, idx), FlowTable::InsertResult::kOk);
    EXPECT_EQ(t.on_list(idx), n % 3 != 0);
    if (n % 3 != 0) want.push_back(idx);
  }
  EXPECT_EQ(t.embryonic(), want.size());
  EXPECT_EQ(embryonic_list(t), want);
  // Settled (SYN-ACK seen), erased from the middle, from the head, from the tail.
  t.at(want[2]).state = TcpState::kSynRecv;
  t.settle(want[2]);
  t.settle(want[2]);  // twice is harmless
  t.erase(want[4]);
  t.erase(want[0]);
  t.erase(want.back());
  ASSERT_EQ(want.size(), 6u);
  std::vector<uint32_t> left = {want[1], want[3]};
  EXPECT_EQ(embryonic_list(t), left);
  EXPECT_EQ(t.embryonic(), 2u);
  // A settled record is no longer on the list, but still in the table.
  EXPECT_FALSE(t.on_list(want[2]));
  EXPECT_TRUE(t.at(want[2]).in_use);
  // A freed record reused by a new SYN joins at the tail.
  uint32_t idx;
  ASSERT_EQ(t.insert(syn_flow(100, 50), idx), FlowTable::InsertResult::kOk);
  left.push_back(idx);
  EXPECT_EQ(embryonic_list(t), left);
}

// A tunnel flow never sees its backend's SYN-ACK: inserted in kSynRecv, it is embryonic until
// the client's ACK settles it; a dnat flow in kSynRecv has had its answer.
TEST(FlowTable, TunnelFlowInSynRecvIsEmbryonic) {
  FlowTable t(64);
  uint32_t tun, dnat;
  Flow f = flow_n(1);
  f.state = TcpState::kSynRecv;
  f.forward = ForwardMode::kTunnel;
  ASSERT_EQ(t.insert(f, tun), FlowTable::InsertResult::kOk);
  f = flow_n(2);
  f.state = TcpState::kSynRecv;
  ASSERT_EQ(t.insert(f, dnat), FlowTable::InsertResult::kOk);
  EXPECT_TRUE(t.on_list(tun));
  EXPECT_FALSE(t.on_list(dnat));
  EXPECT_EQ(embryonic_list(t), std::vector<uint32_t>{tun});
}

TEST(FlowTable, ExpireEmbryonicTakesTheOldestOnlyUpToCutoffAndBudget) {
  FlowTable t(64);
  std::vector<uint32_t> syn;
  uint32_t idx;
  ASSERT_EQ(t.insert(flow_n(1000, 1), idx), FlowTable::InsertResult::kOk);  // established
  const uint32_t est = idx;
  for (uint32_t n = 0; n < 8; ++n) {
    ASSERT_EQ(t.insert(syn_flow(n, 10 + n), idx), FlowTable::InsertResult::kOk);
    syn.push_back(idx);
  }
  std::vector<uint32_t> seen;
  auto rec = [&](uint32_t i, const Flow& f) {
    EXPECT_EQ(f.state, TcpState::kSynSent);
    seen.push_back(i);
  };
  EXPECT_EQ(t.expire_embryonic(13, 2, rec), 2u);    // the budget stops it
  EXPECT_EQ(t.expire_embryonic(13, 100, rec), 2u);  // the cutoff stops it (created 10..13)
  EXPECT_EQ(seen, (std::vector<uint32_t>{syn[0], syn[1], syn[2], syn[3]}));
  EXPECT_EQ(t.embryonic(), 4u);
  EXPECT_EQ(t.size(), 5u);
  EXPECT_EQ(t.expire_embryonic(1000, 100, rec), 4u);
  EXPECT_EQ(t.embryonic(), 0u);
  EXPECT_EQ(t.size(), 1u);  // the established flow, older than all of them, is untouched
  EXPECT_TRUE(t.at(est).in_use);
}

TEST(FlowTable, EmbryonicListRebuiltOnAttach) {
  struct alignas(64) Line {
    std::byte b[64];
  };
  std::vector<Line> lines((FlowTable::region_bytes(256) + 63) / 64);
  const std::span<std::byte> region(reinterpret_cast<std::byte*>(lines.data()),
                                    lines.size() * sizeof(Line));
  std::vector<uint32_t> syn;
  {
    FlowTable t(256, 9, region, FlowTable::Region::kFresh);
    uint32_t idx;
    for (uint32_t n = 0; n < 20; ++n) {
      ASSERT_EQ(t.insert(n % 2 ? flow_n(n) : syn_flow(n, n), idx), FlowTable::InsertResult::kOk);
      if (n % 2 == 0) syn.push_back(idx);
    }
  }
  FlowTable t(256, 9, region, FlowTable::Region::kAttach);
  EXPECT_EQ(t.embryonic(), syn.size());
  std::vector<uint32_t> got = embryonic_list(t);
  std::sort(got.begin(), got.end());
  std::sort(syn.begin(), syn.end());
  EXPECT_EQ(got, syn);
}

// Fixed memory: a flood of inserts and evictions through the list allocates nothing and the
// list never outgrows the table.
TEST(FlowTable, EmbryonicChurnKeepsListConsistent) {
  FlowTable t(1024);
  std::mt19937 rng(5);
  uint32_t n = 0;
  for (int round = 0; round < 200000; ++round) {
    uint32_t idx;
    if (t.size() == t.capacity() || rng() % 4 == 0) {
      const uint32_t old = t.oldest_embryonic();
      if (old != FlowTable::kNoFlow) t.erase(old);
      continue;
    }
    if (t.insert(rng() % 8 == 0 ? flow_n(n) : syn_flow(n, n), idx) ==
            FlowTable::InsertResult::kOk &&
        rng() % 5 == 0) {
      t.at(idx).state = TcpState::kEstablished;
      t.settle(idx);
    }
    ++n;
  }
  const std::vector<uint32_t> l = embryonic_list(t);
  EXPECT_EQ(l.size(), t.embryonic());
  for (uint32_t i : l) EXPECT_EQ(t.at(i).state, TcpState::kSynSent);
  uint32_t syn_sent = 0;
  for (uint32_t i = 0; i < t.capacity(); ++i)
    syn_sent += t.at(i).in_use && t.at(i).state == TcpState::kSynSent;
  EXPECT_EQ(syn_sent, t.embryonic());
}

// ---------------------------------------------------------------------------------------------
// Randomized against a model

using KeyT = std::tuple<uint32_t, uint32_t, uint16_t, uint16_t>;
KeyT key_of(const FlowKey& k) {
  return {k.src_ip, k.dst_ip, k.src_port, k.dst_port};
}

struct Model {
  std::map<uint32_t, Flow> flows;                 // idx -> flow
  std::map<KeyT, std::pair<uint32_t, Dir>> keys;  // key -> idx, dir
  void add(uint32_t idx, const Flow& f) {
    flows[idx] = f;
    keys[key_of(f.client_key())] = {idx, Dir::kFromClient};
    keys[key_of(f.backend_key())] = {idx, Dir::kFromBackend};
  }
  void remove(uint32_t idx) {
    const Flow f = flows.at(idx);
    keys.erase(key_of(f.client_key()));
    keys.erase(key_of(f.backend_key()));
    flows.erase(idx);
  }
};

struct ModelParams {
  uint32_t capacity;
  uint32_t clients, client_ports, vips, backends, backend_ports;
  int ops;
};

class FlowTableModel : public ::testing::TestWithParam<ModelParams> {};

TEST_P(FlowTableModel, MatchesStdMap) {
  const ModelParams p = GetParam();
  FlowTable t(p.capacity, 0xabcdef);
  Model m;
  std::mt19937_64 rng(p.capacity * 31 + static_cast<uint64_t>(p.ops));
  // Disjoint address ranges: a client key never equals a backend key, so every conflict is one
  // the model can see.
  auto client = [&] { return ip4(10, 1, 0, 0) + static_cast<uint32_t>(rng() % p.clients); };
  auto cport = [&] { return static_cast<uint16_t>(1000 + rng() % p.client_ports); };
  auto vip = [&] { return ip4(10, 2, 0, 0) + static_cast<uint32_t>(rng() % p.vips); };
  auto backend = [&] { return ip4(10, 3, 0, 0) + static_cast<uint32_t>(rng() % p.backends); };
  auto bport = [&] { return static_cast<uint16_t>(8000 + rng() % p.backend_ports); };
  Tick now = 0;
  uint32_t inserted = 0, conflicts = 0, fulls = 0, rebinds = 0, expired = 0;

  auto check_all = [&] {
    ASSERT_EQ(t.size(), m.flows.size());
    for (const auto& [idx, f] : m.flows) ASSERT_TRUE(Findable(t, idx, f)) << idx;
  };

  for (int op = 0; op < p.ops; ++op) {
    const uint64_t what = rng() % 100;
    if (what < 40) {
      Flow f = make_flow(client(), cport(), vip(), 80, backend(), bport(), now + 1 + rng() % 2000);
      f.vport = static_cast<uint16_t>(80 + rng() % 2);
      uint32_t idx = FlowTable::kNoFlow;
      const FlowTable::InsertResult r = t.insert(f, idx);
      FlowTable::InsertResult want = FlowTable::InsertResult::kOk;
      if (m.flows.size() == p.capacity)
        want = FlowTable::InsertResult::kFull;
      else if (m.keys.count(key_of(f.client_key())) || m.keys.count(key_of(f.backend_key())))
        want = FlowTable::InsertResult::kConflict;
      ASSERT_EQ(r, want) << "op " << op;
      if (r == FlowTable::InsertResult::kOk) {
        ASSERT_EQ(m.flows.count(idx), 0u) << "record " << idx << " already in use";
        ASSERT_LT(idx, p.capacity);
        f.in_use = 1;
        m.add(idx, f);
        ++inserted;
      }
      conflicts += r == FlowTable::InsertResult::kConflict;
      fulls += r == FlowTable::InsertResult::kFull;
    } else if (what < 60) {
      if (m.flows.empty()) continue;
      auto it = m.flows.begin();
      std::advance(it, static_cast<long>(rng() % m.flows.size()));
      const uint32_t idx = it->first;
      t.erase(idx);
      m.remove(idx);
    } else if (what < 70) {
      if (m.flows.empty()) continue;
      auto it = m.flows.begin();
      std::advance(it, static_cast<long>(rng() % m.flows.size()));
      const uint32_t idx = it->first;
      Flow moved = it->second;
      moved.backend_ip = backend();
      moved.backend_port = bport();
      moved.backend = static_cast<BackendId>(moved.backend_ip & 0xff);
      const bool want = m.keys.count(key_of(moved.backend_key())) == 0;
      ASSERT_EQ(t.rebind(idx, moved.backend, moved.backend_ip, moved.backend_port), want)
          << "op " << op;
      if (want) {
        m.remove(idx);
        m.add(idx, moved);
        ++rebinds;
      }
    } else if (what < 95) {
      // Lookups of random keys of both shapes.
      const FlowKey k = rng() % 2 ? FlowKey{client(), vip(), cport(), uint16_t(80 + rng() % 2)}
                                  : FlowKey{backend(), client(), bport(), cport()};
      Dir d = Dir::kFromBackend;
      const uint32_t got = find(t, k, d);
      const auto it = m.keys.find(key_of(k));
      if (it == m.keys.end()) {
        ASSERT_EQ(got, FlowTable::kNoFlow) << "op " << op;
      } else {
        ASSERT_EQ(got, it->second.first) << "op " << op;
        ASSERT_EQ(d, it->second.second);
      }
    } else {
      now += rng() % 50;
      const auto budget = static_cast<uint32_t>(rng() % (p.capacity + 1));
      uint32_t cb = 0;
      const uint32_t n = t.expire(now, budget, [&](uint32_t idx, const Flow& f) {
        ++cb;
        ASSERT_EQ(m.flows.count(idx), 1u);
        ASSERT_LE(f.expires, now);
        m.remove(idx);
      });
      ASSERT_EQ(n, cb);
      ASSERT_LE(n, budget);
      expired += n;
    }
    if (op % 1000 == 0) {
      check_all();
      if (HasFatalFailure()) return;
    }
  }
  check_all();
  // The run did exercise every path.
  EXPECT_GT(inserted, 100u);
  EXPECT_GT(conflicts, 10u);
  EXPECT_GT(rebinds, 10u);
  EXPECT_GT(expired, 10u);
  if (p.capacity < 500) {
    EXPECT_GT(fulls, 10u);
  }
}

INSTANTIATE_TEST_SUITE_P(Small, FlowTableModel,
                         ::testing::Values(ModelParams{64, 8, 16, 2, 4, 2, 50000},
                                           ModelParams{8, 2, 4, 1, 2, 2, 20000},
                                           ModelParams{256, 16, 32, 2, 4, 4, 100000}));
INSTANTIATE_TEST_SUITE_P(Large, FlowTableModel,
                         ::testing::Values(ModelParams{4096, 256, 64, 4, 16, 4, 200000}));

}  // namespace
}  // namespace lb::core
