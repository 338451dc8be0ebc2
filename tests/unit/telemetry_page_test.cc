// lbd's telemetry pages (dataplane/telemetry_page.h) against DPDK 22.11's limits on a reply
// (16 KiB, 256 dict entries) with the largest configuration lbd accepts: 4,096 backends, 1,024
// services, 64 workers, 16 ports, names of 32 characters and counters at their largest. The
// entries are written here as dataplane/telemetry.cc writes them; nlohmann's dump() writes the
// same bytes as DPDK's writer for these values (no spaces), so the replies' real sizes are
// checked against the bounds. Then a whole listing is paged as lbd pages it and merged as its
// readers merge it (telemetry/telemetry_client.h).

#include "telemetry_page.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

#include "lb_limits.h"
#include "parser.h"  // cfg::detail::kMaxNameLen
#include "serving_state.h"
#include "telemetry_client.h"

namespace lb::dp {
namespace {

using Json = nlohmann::json;
constexpr uint64_t kMax = UINT64_MAX;  // 20 digits

// An object and its size bound, filled member by member as telemetry.cc's Dict does.
struct Entry {
  Json json = Json::object();
  JsonSize size;
  void u64(const char* k, uint64_t v) {
    json[k] = v;
    size.u64(k, v);
  }
  void str(const char* k, const std::string& v) {
    json[k] = v;
    size.str(k, v);
  }
};

std::string longest_name(char c = 'n') {
  return std::string(cfg::detail::kMaxNameLen, c);
}

// /lb/backends' entry (cmd_backends) at its largest.
Entry backend(uint32_t id, const std::string& service) {
  Entry e;
  e.u64("id", id);
  std::string state;  // the longest name
  for (const std::string_view s : kServingStateNames)
    if (s.size() > state.size()) state = s;
  e.str("state", state);
  e.str("service", service);
  e.str("address", "255.255.255.255:65535");
  for (const char* k : {"flows_active", "flows_total", "packets_in", "bytes_in", "packets_out",
                        "bytes_out", "syn_rst", "syn_timeout", "flows_rehashed"})
    e.u64(k, kMax);
  return e;
}

// The page lbd answers for `ids` from `from` (list_page): the entries that fit, and "page".
Json page_of(uint32_t from, uint32_t end, const char* prefix,
             Entry (*make)(uint32_t id, const std::string& name), const std::string& name) {
  Json out = Json::object();
  PageBudget budget;
  uint64_t listed = 0;
  int64_t next = -1;
  for (uint32_t id = from; id < end; ++id) {
    const Entry e = make(id, name);
    const std::string key = prefix + std::to_string(id);
    if (!budget.take(json_member_bytes(key, e.size.bytes()))) {
      next = id;
      break;
    }
    out[key] = e.json;
    ++listed;
  }
  out["page"] = {{"from", from}, {"listed", listed}, {"total", end}};
  if (next >= 0) out["page"]["next"] = next;
  return out;
}

// The whole reply as DPDK sends it.
size_t reply_bytes(const char* cmd, const Json& value) {
  return Json{{cmd, value}}.dump().size();
}

TEST(TelemetryPage, BoundsAreUpperBoundsOfWhatIsWritten) {
  const Entry b = backend(limits::kMaxBackends - 1, longest_name());
  EXPECT_LE(b.json.dump().size(), b.size.bytes());
  // Above by the strings' lengths only (what escaping could add; the names lbd's config allows,
  // A-Z a-z 0-9 _ -, need none), 11 + 32 + 21, and the first member's comma, counted though not
  // written.
  EXPECT_EQ(b.size.bytes(), b.json.dump().size() + 11 + 32 + 21 + 1);
  // A string that needs escaping stays within its bound.
  Entry odd;
  odd.str("name", std::string(40, '"') + "\\\n\t");
  EXPECT_LE(odd.json.dump().size(), odd.size.bytes());
  EXPECT_EQ(json_u64_bytes(0), 1u);
  EXPECT_EQ(json_u64_bytes(kMax), 20u);
}

TEST(TelemetryPage, BudgetBoundsEntriesAndBytes) {
  PageBudget by_count(3, 1000);
  EXPECT_TRUE(by_count.take(10));
  EXPECT_TRUE(by_count.take(10));
  EXPECT_TRUE(by_count.take(10));
  EXPECT_FALSE(by_count.take(1));
  PageBudget by_bytes(100, 25);
  EXPECT_TRUE(by_bytes.take(20));
  EXPECT_FALSE(by_bytes.take(6));
  EXPECT_TRUE(by_bytes.take(5));
  EXPECT_EQ(by_bytes.bytes(), 25u);
  EXPECT_FALSE(by_bytes.take(SIZE_MAX));  // no overflow
  // Room for the reply's frame and its "page" entry.
  EXPECT_LE(kPageEntries + 1, kTelemetryDictEntries);
  EXPECT_LT(kPageBytes + 256, kTelemetryReplyBytes);
}

TEST(TelemetryPage, ParameterIsTheFirstId) {
  uint32_t from = 7;
  EXPECT_TRUE(parse_page_from("", from));
  EXPECT_EQ(from, 0u);
  EXPECT_TRUE(parse_page_from("4095", from));
  EXPECT_EQ(from, 4095u);
  EXPECT_FALSE(parse_page_from("-1", from));
  EXPECT_FALSE(parse_page_from("1x", from));
  EXPECT_FALSE(parse_page_from(" 1", from));
  EXPECT_FALSE(parse_page_from("99999999999", from));
}

// Every page of the largest backend listing fits in one reply, and the pages merged are every
// backend once: what a reader of 4,096 backends gets (it used to get about 60).
TEST(TelemetryPage, EveryBackendOfTheLargestConfigIsListed) {
  const std::string service = longest_name();
  ctl::PageMerger merged;
  std::optional<uint64_t> next = 0;
  int pages = 0;
  while (next) {
    const Json page =
        page_of(static_cast<uint32_t>(*next), limits::kMaxBackends, "backend_", backend, service);
    EXPECT_LT(reply_bytes("/lb/backends", page), kTelemetryReplyBytes);
    EXPECT_LE(page.size(), kTelemetryDictEntries);
    next = merged.add(page);
    ++pages;
  }
  const ctl::Listing l = merged.take();
  EXPECT_TRUE(l.complete);
  EXPECT_EQ(l.total, limits::kMaxBackends);
  ASSERT_EQ(l.entries.size(), limits::kMaxBackends);
  for (uint32_t id = 0; id < limits::kMaxBackends; ++id)
    ASSERT_TRUE(l.entries.contains("backend_" + std::to_string(id))) << id;
  // At their largest (every counter of 20 digits), 28 a page: 147 pages (entries of a running
  // lbd: ~50 a page).
  EXPECT_GE(l.entries.size() / static_cast<size_t>(pages), 27u);
  std::printf("4096 backends of the largest size: %d pages\n", pages);
}

Entry service(uint32_t id, const std::string& name) {
  Entry e;
  e.u64("id", id);
  e.str("name", name);
  e.u64("flows_rehashed", kMax);
  return e;
}

Entry worker(uint32_t w, const std::string&) {
  Entry e;
  e.u64("worker", w);
  for (const char* k : {"flows_active", "flow_capacity", "flows_created", "handoff_out",
                        "handoff_in", "idle_sleeps", "idle_sleep_us"})
    e.u64(k, kMax);
  return e;
}

// 1,024 services: the 256 entries of a dict bound a page before its bytes do.
TEST(TelemetryPage, ServicesAndWorkersPageToo) {
  for (const auto& [cmd, prefix, end, make] :
       {std::tuple{"/lb/services", "service_", limits::kMaxServices, &service},
        std::tuple{"/lb/workers", "worker_", limits::kMaxWorkers, &worker}}) {
    ctl::PageMerger merged;
    std::optional<uint64_t> next = 0;
    while (next) {
      const Json page = page_of(static_cast<uint32_t>(*next), end, prefix, make, longest_name());
      EXPECT_LT(reply_bytes(cmd, page), kTelemetryReplyBytes) << cmd;
      EXPECT_LE(page.size(), kTelemetryDictEntries) << cmd;
      next = merged.add(page);
    }
    EXPECT_TRUE(merged.listing().complete);
    EXPECT_EQ(merged.listing().entries.size(), end) << cmd;
  }
  // Unpaged, the largest of each would not fit: why they page.
  Json all_services = Json::object(), all_workers = Json::object();
  for (uint32_t id = 0; id < limits::kMaxServices; ++id)
    all_services["service_" + std::to_string(id)] = service(id, longest_name()).json;
  for (uint32_t w = 0; w < limits::kMaxWorkers; ++w)
    all_workers["worker_" + std::to_string(w)] = worker(w, "").json;
  EXPECT_GT(all_services.size(), kTelemetryDictEntries);
  EXPECT_GT(reply_bytes("/lb/workers", all_workers), kTelemetryReplyBytes);
}

// /lb/ports and /lb/fullnat are not paged: their largest replies fit.
TEST(TelemetryPage, PortsAndFullnatFitInOneReply) {
  Json ports = Json::object();
  for (uint32_t p = 0; p < limits::kMaxPorts; ++p) {
    Entry e;
    e.str("name", longest_name('a' + static_cast<char>(p)));
    e.u64("port_id", kMax);
    for (const char* k : {"rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "imissed", "ierrors",
                          "oerrors", "rx_nombuf"})
      e.u64(k, kMax);
    e.str("kernel_iface", std::string(15, 'i'));  // IFNAMSIZ - 1
    e.u64("kernel_rx_dropped", kMax);
    e.u64("kernel_socket_drops", kMax);
    ports[longest_name('a' + static_cast<char>(p))] = e.json;
  }
  EXPECT_LT(reply_bytes("/lb/ports", ports), kPageBytes);
  Json fullnat = Json::object();
  for (uint32_t i = 0; i < limits::kMaxFullnatAddresses; ++i) {
    fullnat["fullnat_" + std::to_string(i)] = {{"address", "255.255.255.255"},
                                               {"ports_in_use", kMax},
                                               {"ports_free", kMax},
                                               {"alloc_failures", kMax}};
  }
  EXPECT_LT(reply_bytes("/lb/fullnat", fullnat), kPageBytes);
}

}  // namespace
}  // namespace lb::dp
