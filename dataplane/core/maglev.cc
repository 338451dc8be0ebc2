#include "maglev.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>
#include <utility>

namespace lb::core {

namespace {

bool is_prime(uint32_t m) {
  if (m < 2) return false;
  if (m % 2 == 0) return m == 2;
  for (uint32_t d = 3; uint64_t{d} * d <= m; d += 2)
    if (m % d == 0) return false;
  return true;
}

std::string ip_port(uint32_t ip, uint16_t port) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 0xff) + "." +
         std::to_string((ip >> 8) & 0xff) + "." + std::to_string(ip & 0xff) + ":" +
         std::to_string(port);
}

// a^-1 mod m for a prime m and 0 < a < m (extended Euclid).
uint32_t inverse_mod(uint32_t a, uint32_t m) {
  int64_t t = 0, new_t = 1, r = m, new_r = a;
  while (new_r != 0) {
    const int64_t q = r / new_r;
    t = std::exchange(new_t, t - q * new_t);
    r = std::exchange(new_r, r - q * new_r);
  }
  return static_cast<uint32_t>(t < 0 ? t + m : t);
}

// The fill: backends take turns, each claiming the next slot of its permutation that is still
// free. Done naively that is up to ~M ln M probes (690 k for 256 backends at M = 65537; fewer
// with few backends, as none walks its permutation more than once), most of them either
// mispredicted loop exits (half full: is the next one free?) or long walks over a nearly full
// table. Three phases give exactly the naive table (tests/unit/maglev_test.cc compares them with
// a reference) in less time: 256 backends 1.05-1.10 ms -> 0.66-0.72 ms, 1000 backends 1.09-1.14
// -> 0.71-0.73 ms (CPU time, best of 15 x 10, naive and this alternated in one process, on the
// shared 2-vCPU development VM):
//   - rounds(), up to 90 % full: in each round the candidate of every backend that has a turn
//     (its first slot free at the start of the round) is found for all of them together, one
//     probe per backend still searching per pass and no branch on what it found, so no loop
//     exit is mispredicted; then they claim in turn order, and one whose candidate an earlier
//     backend claimed in this round walks on from there;
//   - probe(): a plain walk, predictable once most probes hit taken slots;
//   - scan(), the last ~sqrt(M) / 2 free slots: instead of walking ~M / F slots to find one of
//     F free ones, each turn computes for every free slot how many steps away it is along the
//     backend's permutation, ((s - pos) * skip^-1) mod M, and takes the nearest.
class Filler {
 public:
  // Below this many backends a round is too short to pay for its bookkeeping (measured: 10
  // backends 1.09 ms with rounds, 0.86 without; 32 backends 0.79 with, 0.95 without). With 3
  // backends the whole build takes 0.47 ms (naive fill: 0.42).
  static constexpr size_t kRoundsFrom = 32;

  Filler(std::span<const MaglevBackend> sorted, uint32_t m, uint32_t* entries)
      : m_(m), entries_(entries), taken_((m + 63) / 64, 0) {
    const size_t n = sorted.size();
    pos_.resize(n);
    skip_.resize(n);
    id_.resize(n);
    weight_.resize(n);
    credit_.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      const uint64_t key = uint64_t{sorted[i].ip} << 16 | sorted[i].port;
      pos_[i] = static_cast<uint32_t>(maglev_fmix64(key ^ kMaglevOffsetSeed) % m);
      skip_[i] = static_cast<uint32_t>(maglev_fmix64(key ^ kMaglevSkipSeed) % (m - 1) + 1);
      id_[i] = sorted[i].id;
      weight_[i] = sorted[i].weight;
      max_weight_ = std::max(max_weight_, sorted[i].weight);
    }
    equal_weights_ =
        std::all_of(weight_.begin(), weight_.end(), [&](uint32_t w) { return w == max_weight_; });
  }

  void run() {
    if (pos_.size() >= kRoundsFrom) rounds(static_cast<uint32_t>(uint64_t{m_} * 9 / 10));
    uint32_t tail = 1;
    while (uint64_t{tail} * tail * 4 < m_) ++tail;  // ~sqrt(M) / 2: 128 for 65537
    probe(m_ > tail ? m_ - tail : 0);
    scan();
  }

 private:
  bool taken(uint32_t p) const { return (taken_[p >> 6] >> (p & 63)) & 1; }
  uint32_t step(uint32_t p, uint32_t by) const {
    p += by;  // both < M <= 5,000,011: no overflow
    return p >= m_ ? p - m_ : p;
  }
  // Whether backend i takes a turn now (weights, as in Katran's MaglevHashV2): its credit grows
  // by its weight every round and pays the largest weight per turn.
  bool turn(size_t i) {
    if (equal_weights_) return true;
    credit_[i] += weight_[i];
    if (credit_[i] < max_weight_) return false;
    credit_[i] -= max_weight_;
    return true;
  }
  void claim(size_t i, uint32_t p) {
    taken_[p >> 6] |= uint64_t{1} << (p & 63);
    entries_[p] = id_[i];
    pos_[i] = step(p, skip_[i]);
    ++filled_;
  }

  // Whole rounds while a round (at most N claims) cannot take the table past `stop`; ends at a
  // round boundary, where probe() starts.
  void rounds(uint32_t stop) {
    const size_t n = pos_.size();
    struct Search {
      uint32_t pos;
      uint32_t skip;
      uint32_t backend;
    };
    std::vector<uint32_t> order, cand(n);
    std::vector<Search> searching(n);
    order.reserve(n);
    while (filled_ + n <= stop) {
      order.clear();
      for (size_t i = 0; i < n; ++i)
        if (turn(i)) order.push_back(static_cast<uint32_t>(i));
      size_t live = 0;
      for (const uint32_t i : order) searching[live++] = Search{pos_[i], skip_[i], i};
      // Every pass probes each backend still searching once, with no branch on the outcome:
      // each writes its probe as its candidate and moves on, and only those that probed a taken
      // slot stay in the list (the last candidate written is then the free one).
      Search* const list = searching.data();
      uint32_t* const found = cand.data();
      const uint64_t* const bits = taken_.data();
      const uint32_t m = m_;
      while (live != 0) {
        size_t out = 0;
        for (size_t k = 0; k < live; ++k) {
          Search x = list[k];
          const auto busy = static_cast<size_t>((bits[x.pos >> 6] >> (x.pos & 63)) & 1);
          found[x.backend] = x.pos;
          x.pos += x.skip;
          x.pos = x.pos >= m ? x.pos - m : x.pos;
          list[out] = x;
          out += busy;
        }
        live = out;
      }
      for (const uint32_t i : order) {
        uint32_t p = cand[i];
        while (taken(p)) p = step(p, skip_[i]);
        claim(i, p);
      }
    }
  }

  void probe(uint32_t stop) {
    while (filled_ < stop) {
      if (turn(next_)) {
        uint32_t p = pos_[next_];
        while (taken(p)) p = step(p, skip_[next_]);
        claim(next_, p);
      }
      if (++next_ == pos_.size()) next_ = 0;
    }
  }

  void scan() {
    std::vector<uint32_t> vacant;
    for (size_t w = 0; w < taken_.size(); ++w)
      for (uint64_t bits = ~taken_[w]; bits != 0; bits &= bits - 1) {
        const auto s = static_cast<uint32_t>(w * 64 + static_cast<size_t>(std::countr_zero(bits)));
        if (s < m_) vacant.push_back(s);
      }
    // Per backend, skip^-1 and its Shoup constant floor(skip^-1 * 2^32 / M): then
    // d * skip^-1 mod M = d * inv - floor(d * shoup / 2^32) * M, less one M if that is >= M,
    // in 32-bit integers (M < 2^31).
    const size_t n = pos_.size();
    std::vector<uint32_t> inv(n), shoup(n);
    for (size_t i = 0; i < n; ++i) {
      inv[i] = inverse_mod(skip_[i], m_);
      shoup[i] = static_cast<uint32_t>((uint64_t{inv[i]} << 32) / m_);
    }
    while (filled_ < m_) {
      if (turn(next_)) {
        const uint32_t pos = pos_[next_], a = inv[next_], b = shoup[next_];
        uint32_t best = UINT32_MAX;
        size_t at = 0;
        for (size_t k = 0; k < vacant.size(); ++k) {
          const uint32_t d = vacant[k] >= pos ? vacant[k] - pos : vacant[k] + m_ - pos;
          const auto q = static_cast<uint32_t>((uint64_t{d} * b) >> 32);
          uint32_t steps = d * a - q * m_;
          steps = steps >= m_ ? steps - m_ : steps;
          if (steps < best) {
            best = steps;
            at = k;
          }
        }
        const uint32_t p = vacant[at];
        vacant[at] = vacant.back();
        vacant.pop_back();
        claim(next_, p);
      }
      if (++next_ == pos_.size()) next_ = 0;
    }
  }

  const uint32_t m_;
  uint32_t* const entries_;
  std::vector<uint64_t> taken_;  // one bit per slot: 8 KiB at M = 65537, so probes stay in L1
  std::vector<uint32_t> pos_;    // per backend (in key order): its next choice
  std::vector<uint32_t> skip_;
  std::vector<uint32_t> id_;
  std::vector<uint32_t> weight_;
  std::vector<uint64_t> credit_;
  uint32_t max_weight_ = 0;
  bool equal_weights_ = false;  // then every backend has a turn in every round
  uint32_t filled_ = 0;
  size_t next_ = 0;  // whose turn it is (probe() and scan())
};

}  // namespace

bool maglev_table_size_ok(uint32_t m) {
  return m <= kMaglevMaxTableSize && is_prime(m);
}

uint32_t maglev_next_prime(uint32_t m) {
  for (uint32_t p = std::max<uint32_t>(m, 2); p <= kMaglevMaxTableSize; ++p)
    if (is_prime(p)) return p;
  return 0;
}

namespace {

// The backends that get entries, in the order of turns (their stable key, so that arrival order
// cannot change the table); throws std::invalid_argument as MaglevTable() documents.
std::vector<MaglevBackend> checked_turn_order(std::span<const MaglevBackend> backends, uint32_t m) {
  if (!maglev_table_size_ok(m)) {
    std::string msg = "maglev table size " + std::to_string(m) + " is not ";
    if (m > kMaglevMaxTableSize)
      msg += "at most " + std::to_string(kMaglevMaxTableSize);
    else if (const uint32_t p = maglev_next_prime(m))
      msg += "prime (the next prime is " + std::to_string(p) + ")";
    else
      msg += "prime";
    throw std::invalid_argument(msg);
  }
  const auto key = [](const MaglevBackend& b) { return uint64_t{b.ip} << 16 | b.port; };
  std::vector<MaglevBackend> sorted(backends.begin(), backends.end());
  std::sort(sorted.begin(), sorted.end(),
            [&](const MaglevBackend& x, const MaglevBackend& y) { return key(x) < key(y); });
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i].id == kMaglevNoEntry)
      throw std::invalid_argument("maglev: backend " + ip_port(sorted[i].ip, sorted[i].port) +
                                  " has the id " + std::to_string(kMaglevNoEntry) +
                                  ", which means no backend");
    if (i > 0 && key(sorted[i - 1]) == key(sorted[i]))
      throw std::invalid_argument("maglev: backend " + ip_port(sorted[i].ip, sorted[i].port) +
                                  " is listed twice");
  }
  std::erase_if(sorted, [](const MaglevBackend& b) { return b.weight == 0; });
  if (sorted.size() > m)
    throw std::invalid_argument("maglev: " + std::to_string(sorted.size()) +
                                " backends with a weight above 0 do not fit a table of " +
                                std::to_string(m) +
                                " entries (one entry at least each): use a larger table size");
  return sorted;
}

}  // namespace

void MaglevTable::check(std::span<const MaglevBackend> backends, uint32_t table_size) {
  checked_turn_order(backends, table_size);
}

MaglevTable::MaglevTable(std::span<const MaglevBackend> backends, uint32_t table_size) {
  const std::vector<MaglevBackend> sorted = checked_turn_order(backends, table_size);
  entries_.assign(table_size, kMaglevNoEntry);
  size_ = table_size;
  if (!sorted.empty()) Filler(sorted, table_size, entries_.data()).run();
}

}  // namespace lb::core
