// lbctl node drain and ready: the node's BGP announcements (lb-healthd's bgp group).
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

#include "commands.h"
#include "drain_watch.h"

namespace lbctl {

namespace {

// lbd's active flows (every backend, every page of the listing; nullopt when the listing is not
// complete: then they are not known) and the packets its ports have received, for node drain.
std::pair<std::optional<uint64_t>, uint64_t> lbd_load(lb::ctl::TelemetryClient& t) {
  uint64_t flows = 0, packets = 0;
  const lb::ctl::Listing backends = t.query_all("/lb/backends");
  for (const auto& [key, b] : backends.entries.items()) {
    if (b.is_object()) flows += b.value("flows_active", uint64_t{0});
  }
  const Json ports = t.query("/lb/ports");
  for (auto it = ports.begin(); it != ports.end(); ++it) {
    if (it.value().is_object()) packets += it.value().value("rx_packets", uint64_t{0});
  }
  return {backends.complete ? std::optional<uint64_t>(flows) : std::nullopt, packets};
}

void print_node(const Json& node) {
  std::string announced;
  for (const Json& v : node.value("vips", Json::array())) {
    if (v.value("announced", false))
      announced += (announced.empty() ? "" : ", ") + v.value("vip", std::string());
  }
  std::printf("node %s: announcing %s%s\n", node.value("state", std::string("?")).c_str(),
              announced.empty() ? "nothing" : announced.c_str(),
              node.value("in_bird", false)
                  ? ""
                  : ("; BIRD not told yet: " + node.value("bird_error", std::string())).c_str());
}

}  // namespace

// Withdraws every VIP, then waits until lbd's traffic has gone (DrainWatch) or `timeout`
// seconds.
int cmd_node_drain(Context& ctx, double timeout, int64_t threshold) {
  const Json r = ctx.call({{"cmd", "node.drain"}});
  check(r, ctx.json());
  if (!ctx.json()) print_node(r["node"]);
  std::fflush(stdout);
  uint64_t first = 0;
  try {
    first = lbd_load(ctx.telemetry()).second;
  } catch (const std::exception& e) {
    throw Refused(std::string("node draining, but lbd's traffic cannot be watched: ") + e.what());
  }
  catch_interrupt();
  const auto start = Clock::now();
  DrainWatch watch(threshold, first);
  bool in_bird = r["node"].value("in_bird", false);
  for (;;) {
    pause_for(1.0);
    if (!in_bird) {
      // lb-healthd tells BIRD again at its next change or retry: ask how that went.
      try {
        in_bird = ctx.call({{"cmd", "status"}})["node"].value("in_bird", false);
      } catch (const std::exception&) {
      }
    }
    bool done = false;
    try {
      const auto [flows, packets] = lbd_load(ctx.telemetry());
      done = watch.sample(flows, packets, in_bird);
    } catch (const std::exception&) {
      done = watch.unknown(in_bird);  // lbd restarting: connect again next second
      ctx.reconnect_telemetry();
    }
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (done) {
      if (ctx.json()) {
        print_json({{"ok", true},
                    {"node", r["node"]},
                    {"waited_s", waited},
                    {"flows_active", watch.flows() ? Json(*watch.flows()) : Json()},
                    {"rx_packets_last_second", watch.rate() ? Json(*watch.rate()) : Json()}});
      } else {
        std::printf("drained after %.1fs: %s\n", waited, watch.describe().c_str());
      }
      return 0;
    }
    if (waited >= timeout || interrupted()) {
      throw Refused("node still busy after " + std::to_string(static_cast<int>(waited)) + "s: " +
                    watch.describe() + "; it stays draining (lbctl node ready announces again)");
    }
  }
}

int cmd_node_ready(Context& ctx) {
  const Json r = ctx.call({{"cmd", "node.ready"}});
  check(r, ctx.json());
  if (ctx.json()) {
    print_json(r);
  } else {
    print_node(r["node"]);
  }
  return 0;
}

}  // namespace lbctl
