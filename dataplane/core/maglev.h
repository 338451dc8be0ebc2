#pragma once
// Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4) with Katran's weights
// (MaglevHashV2): the building block of scheduler = "maglev". The control thread builds a
// MaglevTable from a service's backends; the packet path reads table[slot(flow hash)], one load.
//
// Everything that decides an entry is fixed and documented here, so that every node and every
// restart builds the same table from the same pool and sends the same flow to the same backend:
//   - backends are taken in order of their stable key (address, port), never arrival order;
//   - key(b) = ip << 16 | port (48 bits, host order);
//     offset(b) = fmix64(key ^ kMaglevOffsetSeed) % M,
//     skip(b)   = fmix64(key ^ kMaglevSkipSeed) % (M - 1) + 1,
//     where fmix64 is MurmurHash3's 64-bit finaliser; backend b's j-th choice is
//     (offset + j * skip) % M, a permutation of the M slots because M is prime;
//   - turns: in each round every backend adds its weight to a running credit and, when the credit
//     reaches the largest weight W, takes one turn (credit -= W): it claims its next choice that is
//     still free. A weight-w backend thus takes w turns for every W rounds, so it ends up with
//     w / sum(weights) of the M entries (equal weights: exactly floor or ceil of M / N each).
//     Weight 0 takes no turn and gets no entry;
//   - the flow: maglev_flow_hash() of the client side (client ip, client port, VIP, VIP port) with
//     a seed that is a setting (the same on every node), slot = (hash >> 32) * M >> 32: a
//     multiply-shift in integers, exact and the same on every machine, without a division.
// Changing any of these (seeds, fmix64, the key, the order, the turn rule) moves flows between
// nodes that run different versions: the golden values in tests/unit/maglev_test.cc pin them.

#include <cstdint>
#include <span>
#include <vector>

namespace lb::core {

// ASCII "mglv-off", "mglv-skp", "mglv-flw".
inline constexpr uint64_t kMaglevOffsetSeed = 0x6d676c762d6f6666ull;
inline constexpr uint64_t kMaglevSkipSeed = 0x6d676c762d736b70ull;
inline constexpr uint64_t kMaglevDefaultFlowSeed = 0x6d676c762d666c77ull;

// 65537 as in Katran and Envoy: with N <= 256 backends each share is within 1 % of M / N.
inline constexpr uint32_t kMaglevDefaultTableSize = 65537;
// Envoy's largest: 20 MB of entries per service; building it takes ~100x the default.
inline constexpr uint32_t kMaglevMaxTableSize = 5000011;
// The entry of a table whose backends all have weight 0 (or none): no backend.
inline constexpr uint32_t kMaglevNoEntry = UINT32_MAX;

struct MaglevBackend {
  uint32_t ip;      // host order, as in PoolBackend
  uint16_t port;    // with ip: the stable key that orders backends and seeds their permutation
  uint32_t weight;  // 0: no entries
  uint32_t id;      // what the table holds for this backend (not kMaglevNoEntry)
  friend bool operator==(const MaglevBackend&, const MaglevBackend&) = default;
};

// MurmurHash3's fmix64: a bijection of 64-bit words in which every input bit flips every output
// bit with probability ~1/2.
constexpr uint64_t maglev_fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

// The hash a flow is placed by: its client side only, so that both the SYN and any later segment
// of the connection (on this node or another) find the same entry. All integers in host order.
constexpr uint64_t maglev_flow_hash(uint32_t client_ip, uint16_t client_port, uint32_t vip,
                                    uint16_t vport, uint64_t seed = kMaglevDefaultFlowSeed) {
  const uint64_t a = uint64_t{client_ip} << 32 | vip;
  const uint64_t b = uint64_t{client_port} << 16 | vport;
  return maglev_fmix64(maglev_fmix64(a ^ seed) ^ b);
}

// Whether `m` can be a table size: prime, 2 <= m <= kMaglevMaxTableSize.
bool maglev_table_size_ok(uint32_t m);
// The smallest prime >= m (for "did you mean" in errors); 0 when it exceeds kMaglevMaxTableSize.
uint32_t maglev_next_prime(uint32_t m);

class MaglevTable {
 public:
  // An empty table: every lookup gives kMaglevNoEntry.
  MaglevTable() = default;

  // Builds the table of `table_size` entries for `backends` (any order). Control thread only: it
  // allocates, and takes ~0.7 ms for 256 backends at M = 65537 (BM_MaglevBuild). Throws
  // std::invalid_argument when `table_size` is not a valid size (see maglev_table_size_ok), when
  // more backends have a weight > 0 than the table has entries, when two backends share an address
  // and port, or when an id is kMaglevNoEntry. No backend with a weight > 0: every entry is
  // kMaglevNoEntry.
  explicit MaglevTable(std::span<const MaglevBackend> backends,
                       uint32_t table_size = kMaglevDefaultTableSize);
  // Throws what MaglevTable(backends, table_size) would, without building it (microseconds).
  static void check(std::span<const MaglevBackend> backends,
                    uint32_t table_size = kMaglevDefaultTableSize);

  // Table sizes are below 2^32, so the high 32 bits of the hash scaled by M land in [0, M) with
  // each slot taking 2^32 / M hash values (+-1): the same spread as % M.
  uint32_t slot(uint64_t flow_hash) const {
    return static_cast<uint32_t>(((flow_hash >> 32) * size_) >> 32);
  }
  // The id for a flow of hash `flow_hash`; kMaglevNoEntry when no backend takes new flows.
  uint32_t lookup(uint64_t flow_hash) const { return entries_[slot(flow_hash)]; }

  uint32_t size() const { return size_; }
  std::span<const uint32_t> entries() const { return entries_; }

 private:
  // Never empty, so lookup() needs no branch: the default table is one kMaglevNoEntry.
  std::vector<uint32_t> entries_ = std::vector<uint32_t>(1, kMaglevNoEntry);
  uint32_t size_ = 1;
};

}  // namespace lb::core
