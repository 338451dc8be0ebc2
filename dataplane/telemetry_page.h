#pragma once
// How much of a listing (/lb/backends, /lb/services, /lb/workers) one telemetry reply carries.
// DPDK 22.11 writes a reply into a buffer of MAX_OUTPUT_LEN (16 KiB, lib/telemetry/telemetry.c)
// and a dict holds RTE_TEL_MAX_DICT_ENTRIES (256): an entry past either is left out of the reply
// without an error (the JSON writer skips what does not fit), so a listing of lbd's 4,096
// backends used to end after about 60 of them. lbd therefore pages such listings: each reply
// holds the entries that fit the budget below, counted in bytes with the upper bounds below, and
// says where the next page starts (docs/architecture.md, "Counters and telemetry").
//
// Pure: no DPDK here, so that the bounds are unit-tested (tests/unit/telemetry_page_test.cc);
// telemetry.cc checks the constants against DPDK's headers.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lb::dp {

// DPDK 22.11's limits on one reply (MAX_OUTPUT_LEN is private to telemetry.c).
inline constexpr size_t kTelemetryReplyBytes = 16 * 1024;
inline constexpr size_t kTelemetryDictEntries = 256;
// What the entries of one page may take: the reply less a margin for the reply's frame
// ({"/lb/backends":{...}}, ~20 bytes), the "page" entry (~100 bytes) and any miscount.
inline constexpr size_t kPageBytes = kTelemetryReplyBytes - 2048;
// Entries of one page: the dict's room less the "page" entry, with a margin.
inline constexpr size_t kPageEntries = kTelemetryDictEntries - 16;

// Bytes DPDK's JSON writer uses for a value (upper bounds).
constexpr size_t json_u64_bytes(uint64_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}
// A string: its quotes and each character at most escaped to two ("\n", "\"").
constexpr size_t json_str_bytes(std::string_view s) {
  return 2 + 2 * s.size();
}
// One member of an object: ,"name":value (the first one's '{' instead of the comma).
constexpr size_t json_member_bytes(std::string_view name, size_t value_bytes) {
  return name.size() + 4 + value_bytes;
}
// An object's braces.
inline constexpr size_t kJsonObjectBytes = 2;

// The bytes of an object being written, member by member (an upper bound).
class JsonSize {
 public:
  constexpr void u64(std::string_view key, uint64_t v) {
    bytes_ += json_member_bytes(key, json_u64_bytes(v));
  }
  constexpr void str(std::string_view key, std::string_view v) {
    bytes_ += json_member_bytes(key, json_str_bytes(v));
  }
  constexpr void member(std::string_view key, size_t value_bytes) {
    bytes_ += json_member_bytes(key, value_bytes);
  }
  constexpr size_t bytes() const { return kJsonObjectBytes + bytes_; }

 private:
  size_t bytes_ = 0;
};

// What one page has taken so far: an entry is taken while both the count and the bytes stay
// within the page's bounds.
class PageBudget {
 public:
  constexpr PageBudget(size_t max_entries = kPageEntries, size_t max_bytes = kPageBytes)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}
  // Takes an entry of `bytes` (its member: key and value) when it fits; false when it does not
  // (the page is full: the entry starts the next one).
  constexpr bool take(size_t bytes) {
    if (entries_ >= max_entries_ || bytes > max_bytes_ - bytes_) return false;
    ++entries_;
    bytes_ += bytes;
    return true;
  }
  constexpr size_t entries() const { return entries_; }
  constexpr size_t bytes() const { return bytes_; }

 private:
  size_t max_entries_;
  size_t max_bytes_;
  size_t entries_ = 0;
  size_t bytes_ = 0;
};

// The parameter of a paged command ("/lb/backends,FROM"): the first id to list, decimal digits
// only; empty (no parameter) is 0. False for anything else.
constexpr bool parse_page_from(std::string_view param, uint32_t& from) {
  uint64_t v = 0;
  for (const char c : param) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
    if (v > UINT32_MAX) return false;
  }
  from = static_cast<uint32_t>(v);
  return true;
}

}  // namespace lb::dp
