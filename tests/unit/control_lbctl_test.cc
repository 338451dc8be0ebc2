// lbctl's pieces without the daemons: the views (tools/lbctl/render.h) on recorded replies, and
// the two clients (tools/lbctl/clients.h) against fake servers speaking DPDK's telemetry
// protocol and lb-healthd's JSON lines.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "capture.h"
#include "clients.h"
#include "drain_watch.h"
#include "render.h"

namespace lb::ctl {
namespace {

// lbctl node drain's decision, a sample a second.
TEST(LbctlNodeDrain, DrainedWhenBirdHasItAndTheFlowsOrThePortsSaySo) {
  using lbctl::DrainWatch;
  {
    // Flows at the threshold: drained at once, but only once BIRD has the withdrawal.
    DrainWatch w(0, 1000);
    EXPECT_FALSE(w.sample(0, 1000, /*in_bird=*/false));
    EXPECT_NE(w.describe().find("BIRD does not have the withdrawal yet"), std::string::npos);
    EXPECT_TRUE(w.sample(0, 1000, true));
    EXPECT_EQ(w.describe(), "0 active flow(s), 0 packet(s) in the last second");
  }
  {
    // Quiet ports with flows left: three quiet seconds in a row, not one.
    DrainWatch w(0, 1000);
    EXPECT_FALSE(w.sample(12, 1003, true));
    EXPECT_FALSE(w.sample(12, 1100, true));  // 97 packets: busy again, the count restarts
    EXPECT_FALSE(w.sample(12, 1101, true));
    EXPECT_FALSE(w.sample(12, 1102, true));
    EXPECT_TRUE(w.sample(12, 1111, true));  // 9
    EXPECT_EQ(w.rate(), 9u);
  }
  {
    // Quiet while BIRD has not been told: the route still stands, nothing is decided.
    DrainWatch w(0, 0);
    for (int i = 0; i < 5; ++i) EXPECT_FALSE(w.sample(7, 0, false));
    EXPECT_TRUE(w.sample(7, 0, true));  // quiet for five seconds already
  }
  {
    // lbd restarted: its counters start again from 0, which is no quiet second; a second whose
    // load could not be read neither, and the next one only sets the count again.
    DrainWatch w(0, 50000);
    EXPECT_FALSE(w.sample(20, 50500, true));
    EXPECT_FALSE(w.unknown(true));
    EXPECT_FALSE(w.rate());
    EXPECT_NE(w.describe().find("not known"), std::string::npos);
    EXPECT_FALSE(w.sample(20, 3, true));  // the new lbd's count: from here
    EXPECT_FALSE(w.rate());
    EXPECT_FALSE(w.sample(20, 5, true));
    EXPECT_FALSE(w.sample(20, 2, true));  // went back again: not known, not quiet
    EXPECT_FALSE(w.rate());
    EXPECT_FALSE(w.sample(20, 4, true));
    EXPECT_FALSE(w.sample(20, 6, true));
    EXPECT_TRUE(w.sample(20, 8, true));
  }
  {
    // Flows not known (an incomplete listing) decide nothing; the threshold counts.
    DrainWatch w(5, 0);
    EXPECT_FALSE(w.sample(std::nullopt, 500, true));
    EXPECT_EQ(w.describe(), "active flows not known, 500 packet(s) in the last second");
    EXPECT_FALSE(w.sample(6, 1000, true));
    EXPECT_TRUE(w.sample(5, 1500, true));
  }
}

TEST(LbctlRender, TablesAndNumbers) {
  EXPECT_EQ(format_table({{"a", "bb", "c"}, {"ddd", "e", "f"}}), "a    bb  c\nddd  e   f\n");
  EXPECT_EQ(format_table({{"x", ""}}, "  "), "  x\n");
  EXPECT_EQ(format_ms(850), "850ms");
  EXPECT_EQ(format_ms(3200), "3.2s");
  EXPECT_EQ(format_ms(42000), "42s");
  EXPECT_EQ(format_ms(303000), "5m03s");
  EXPECT_EQ(format_ms(7260000), "2h01m");
  EXPECT_EQ(format_ms(-1), "-");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(2.5), "2.5");
  EXPECT_EQ(format_count(1234), "1.2k");
  EXPECT_EQ(format_count(3.4e6), "3.4M");
  EXPECT_EQ(format_count(5.6e9), "5.6G");
}

Json healthd_status() {
  return Json::parse(R"({
    "ok": true,
    "healthd": {"pid": 10, "version": "0.1.0", "config_file": "/etc/lbd/lbd.cfg",
                "state_file": "/etc/lbd/lbd.cfg.state", "instance": "lbd", "segment": "/lbd-lbd",
                "runtime_changes": ["service web: backend 10.20.0.14:8080 added"]},
    "lbd": {"attached": true, "pid": 20, "applied_generation": 70, "generation_sent": 70,
            "rejected_generation": 0},
    "services": [{"name": "web", "vip": "10.10.0.100", "port": 80, "protocol": "tcp",
                  "scheduler": "wrr", "active": 1, "fail_open": false, "pending": false,
                  "backends": [
      {"address": "10.20.0.11", "port": 8080, "weight": 3, "admin": "ready", "health": "up",
       "live": "active", "last_result": "ok", "last_http_status": 200, "last_latency_ms": 2,
       "in_state_ms": 303000},
      {"address": "10.20.0.14", "port": 8080, "weight": 1, "admin": "drain", "health": "down",
       "live": "draining", "last_result": "connection refused", "last_http_status": 0,
       "last_latency_ms": 0, "in_state_ms": 850}]}]
  })");
}

Json lbd_backends() {
  return Json::parse(R"({
    "backend_0": {"id": 0, "state": "active", "service": "web", "address": "10.20.0.11:8080",
                  "flows_active": 12, "flows_total": 340},
    "backend_1": {"id": 1, "state": "active", "service": "api", "address": "10.20.0.11:8080",
                  "flows_active": 99, "flows_total": 99}
  })");
}

TEST(LbctlRender, StatusMergesLbdCountersByServiceAndAddress) {
  const Json m = merge_status(healthd_status(), lbd_backends(), "");
  EXPECT_EQ(m["lbd_counters"]["available"], true);
  const Json& bs = m["services"][0]["backends"];
  EXPECT_EQ(bs[0]["lbd"]["flows_active"], 12);  // web's, not api's
  EXPECT_EQ(bs[0]["lbd"]["flows_total"], 340);
  EXPECT_TRUE(bs[1]["lbd"].is_null());  // lbd does not know it yet
  const std::string text = render_status(m);
  EXPECT_NE(text.find("TCP  10.10.0.100:80 wrr (web, 1/2 active)"), std::string::npos) << text;
  EXPECT_NE(text.find("1 runtime change(s)"), std::string::npos) << text;
  EXPECT_NE(text.find("lbd: attached (pid 20), generation 70 applied of 70 sent"),
            std::string::npos)
      << text;
  // Columns line up: the backend rows and the header share the widths.
  const size_t header = text.find("  -> RemoteAddress:Port");
  const size_t row = text.find("  -> 10.20.0.11:8080");
  ASSERT_NE(header, std::string::npos);
  ASSERT_NE(row, std::string::npos);
  const auto column = [&](size_t line_start, const std::string& what) {
    return text.find(what, line_start) - line_start;
  };
  EXPECT_EQ(column(header, "Weight"), column(row, "3  "));
  EXPECT_NE(text.find("12           340         5m03s  ok in 2ms"), std::string::npos) << text;
  EXPECT_NE(
      text.find("drain  down    draining  -            -           850ms  connection refused"),
      std::string::npos)
      << text;
}

TEST(LbctlRender, StatusSaysWhenLbdIsUnreachable) {
  Json st = healthd_status();
  st["lbd"]["attached"] = false;
  const Json m = merge_status(st, Json(), "cannot connect to lbd's telemetry at X: No such file");
  EXPECT_EQ(m["lbd_counters"]["available"], false);
  const std::string text = render_status(m);
  EXPECT_NE(text.find("lbd: not attached (/lbd-lbd not found: is lbd running?)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("flow counters: unavailable: cannot connect to lbd's telemetry at X"),
            std::string::npos)
      << text;
}

TEST(LbctlRender, StatsRatesOverTheInterval) {
  LbdSnapshot a;
  a.t = 10;
  a.stats = {{"rx_packets", 1000}, {"tx_packets", 900}, {"flows_created", 10},
             {"flows_active", 5},  {"dropped", 4},      {"workers", 2}};
  a.drops = {{"bad_checksum", 4}, {"flow_miss", 0}};
  a.ports = {
      {"client",
       {{"rx_packets", 600}, {"rx_bytes", 60000}, {"tx_packets", 500}, {"tx_bytes", 50000}}}};
  a.backends = lbd_backends();
  LbdSnapshot b = a;
  b.t = 12;
  b.stats["rx_packets"] = 3000;
  b.stats["flows_created"] = 30;
  b.stats["flows_active"] = 7;
  b.drops["bad_checksum"] = 10;
  b.ports["client"]["rx_bytes"] = 100000;
  b.backends["backend_0"]["flows_total"] = 350;
  b.backends["backend_1"]["flows_total"] = 50;  // counters went back: lbd restarted
  const Json r = stats_report(a, b);
  EXPECT_EQ(r["interval_s"], 2.0);
  EXPECT_EQ(r["workers"], 2);
  EXPECT_EQ(r["totals"]["rx_packets"], 3000);
  EXPECT_EQ(r["rates"]["rx_packets"], 1000.0);
  EXPECT_EQ(r["rates"]["flows_created"], 10.0);
  EXPECT_FALSE(r["rates"].contains("flows_active"));  // a level, not a counter
  EXPECT_EQ(r["totals"]["flows_active"], 7);
  EXPECT_EQ(r["drops"]["bad_checksum"]["per_s"], 3.0);
  EXPECT_EQ(r["totals"]["rx_bytes"], 100000);
  EXPECT_EQ(r["rates"]["rx_bytes"], 20000.0);
  ASSERT_EQ(r["backends"].size(), 2u);
  EXPECT_EQ(r["backends"][0]["service"], "web");
  EXPECT_EQ(r["backends"][0]["new_flows_per_s"], 5.0);
  EXPECT_EQ(r["backends"][1]["new_flows_per_s"], 0.0);
  const std::string text = render_stats(r, "edge1", 4100);
  EXPECT_NE(text.find("lbd instance edge1 (pid 4100, 2 worker(s)), rates over 2.0s"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("new flows     30      10"), std::string::npos) << text;
  EXPECT_NE(text.find("bad_checksum  10     3"), std::string::npos) << text;
  EXPECT_EQ(text.find("flow_miss"), std::string::npos) << "zero drops are left out";
}

// Drops before lbd (the device's and the kernel's) are per port, with rates, and one
// sum of what never reached lbd's workers.
TEST(LbctlRender, StatsPortDropsBeforeLbd) {
  LbdSnapshot a;
  a.t = 1;
  a.ports = {{"client",
              {{"rx_packets", 10},
               {"imissed", 1},
               {"rx_nombuf", 2},
               {"ierrors", 3},
               {"oerrors", 4},
               {"kernel_iface", "lb-c"},
               {"kernel_rx_dropped", 100},
               {"kernel_socket_drops", 0}}},
             {"nic", {{"rx_packets", 10}, {"imissed", 0}, {"kernel_iface", ""}}}};
  LbdSnapshot b = a;
  b.t = 3;
  b.ports["client"]["kernel_rx_dropped"] = 300;
  b.ports["client"]["kernel_socket_drops"] = 40;
  b.ports["nic"]["imissed"] = 8;
  const Json r = stats_report(a, b);
  const Json& c = r["ports"]["client"];
  EXPECT_EQ(c["kernel_iface"], "lb-c");
  EXPECT_EQ(c["kernel_rx_dropped"], 300);
  EXPECT_EQ(c["kernel_rx_dropped_per_s"], 100.0);
  EXPECT_EQ(c["kernel_socket_drops_per_s"], 20.0);
  EXPECT_EQ(c["ierrors"], 3);
  EXPECT_EQ(c["dropped_before_lbd"], 1 + 2 + 300 + 40);
  EXPECT_EQ(c["dropped_before_lbd_per_s"], 120.0);
  EXPECT_EQ(r["ports"]["nic"]["dropped_before_lbd_per_s"], 4.0);
  const std::string text = render_stats(r, "test", 7);
  EXPECT_NE(text.find("dropped before lbd"), std::string::npos) << text;
  EXPECT_NE(text.find("client  343                 120"), std::string::npos) << text;
  EXPECT_NE(text.find("lb-c"), std::string::npos) << text;
}

// Full-NAT local ports per local address: levels as they are, allocation failures with a rate;
// no table without full-NAT addresses (an empty reply, or an lbd without /lb/fullnat).
TEST(LbctlRender, StatsFullnatPortsPerLocalAddress) {
  LbdSnapshot a;
  a.t = 1;
  a.fullnat = {{"fullnat_0",
                {{"address", "10.20.0.50"},
                 {"ports_in_use", 10},
                 {"ports_free", 64502},
                 {"alloc_failures", 4}}}};
  LbdSnapshot b = a;
  b.t = 3;
  b.fullnat["fullnat_0"] = {{"address", "10.20.0.50"},
                            {"ports_in_use", 1834},
                            {"ports_free", 62678},
                            {"alloc_failures", 10}};
  const Json r = stats_report(a, b);
  ASSERT_EQ(r["fullnat"].size(), 1u);
  EXPECT_EQ(r["fullnat"][0]["address"], "10.20.0.50");
  EXPECT_EQ(r["fullnat"][0]["ports_in_use"], 1834);
  EXPECT_EQ(r["fullnat"][0]["ports_free"], 62678);
  EXPECT_EQ(r["fullnat"][0]["alloc_failures"], 10);
  EXPECT_EQ(r["fullnat"][0]["alloc_failures_per_s"], 3.0);
  const std::string text = render_stats(r, "test", 7);
  EXPECT_NE(text.find("full-NAT address  ports in use  ports free  alloc failures  per second"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("10.20.0.50        1.8k          62.7k       10              3"),
            std::string::npos)
      << text;
  for (const Json& none : {Json::object(), Json()}) {
    LbdSnapshot c = b;
    c.fullnat = none;
    EXPECT_EQ(render_stats(stats_report(c, c), "test", 7).find("full-NAT"), std::string::npos);
  }
}

// lbctl capture names lbd's ports as the config does; dumpcap wants the ethdev name.
TEST(LbctlCapture, DumpcapArgsFromTheConfig) {
  cfg::Config c;
  cfg::PortConfig client;
  client.name = "client";
  client.device = "net_af_xdp0,iface=lb-c";
  cfg::PortConfig nic;
  nic.name = "uplink";
  nic.device = "0000:03:00.0";
  c.dataplane.ports = {client, nic};
  CaptureRequest r;
  r.port = "client";
  r.filter = "tcp port 80";
  r.file = "/tmp/x.pcapng";
  r.count = 10;
  r.duration = 2.5;
  EXPECT_EQ(dumpcap_args(&c, "lbd", r),
            (std::vector<std::string>{"--file-prefix=lbd", "-i", "net_af_xdp0", "-p", "-w",
                                      "/tmp/x.pcapng", "-f", "tcp port 80", "-c", "10", "-a",
                                      "duration:3"}));
  r = CaptureRequest{};
  r.port = "uplink";
  r.file = "f";
  EXPECT_EQ(
      dumpcap_args(&c, "edge", r),
      (std::vector<std::string>{"--file-prefix=edge", "-i", "0000:03:00.0", "-p", "-w", "f"}));
  r.port = "1";  // a DPDK port number is passed as it is
  EXPECT_EQ(dumpcap_args(&c, "edge", r)[2], "1");
  r.port = "net_af_xdp0";
  EXPECT_EQ(dumpcap_args(&c, "edge", r)[2], "net_af_xdp0");
  r.port = "clinet";
  try {
    dumpcap_args(&c, "edge", r);
    ADD_FAILURE() << "an unknown port is refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "unknown port 'clinet': lbd's ports are client, uplink");
  }
  EXPECT_EQ(dumpcap_args(nullptr, "edge", r)[2], "clinet");  // no config: as given
  EXPECT_EQ(file_prefix_of("/var/run/dpdk/edge/dpdk_telemetry.v2"), "edge");
  EXPECT_EQ(file_prefix_of("/tmp/sock"), "");
}

// Before dumpcap fails with "EAL init failed: is primary process running?", lbctl says why.
TEST(LbctlCapture, SaysWhyDumpcapCannotAttach) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("lbctl-capture-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  EXPECT_NE(capture_blocker(dir.string()).find("no lbd runs with this file prefix"),
            std::string::npos);
  std::ofstream(dir / "mp_socket").put('x');
  EXPECT_EQ(capture_blocker(dir.string()), "");
  std::ofstream(dir / "fbarray_nohugemem").put('x');
  EXPECT_NE(capture_blocker(dir.string()).find("lbd runs without hugepages (EAL --no-huge)"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(LbctlRender, StatsHeaderNamesTheInstance) {
  // The default instance is called "lbd": the header said "lbd lbd (pid 7)".
  const std::string text = render_stats(stats_report(LbdSnapshot{}, LbdSnapshot{}), "lbd", 7);
  EXPECT_EQ(text.rfind("lbd instance lbd (pid 7, 0 worker(s))", 0), 0u) << text;
  EXPECT_EQ(text.find("lbd lbd"), std::string::npos) << text;
}

TEST(LbctlRender, StatsCountersNamedForWhatTheyCount) {
  LbdSnapshot a;
  a.stats = {{"flows_reused", 2}, {"flows_reset", 1}, {"rst_backend_stopped", 3}};
  const std::string text = render_stats(stats_report(a, a), "lbd", 7);
  EXPECT_NE(text.find("flows reused by a SYN  2"), std::string::npos) << text;
  EXPECT_NE(text.find("flows reset            1"), std::string::npos) << text;
  EXPECT_NE(text.find("RST, backend stopped   3"), std::string::npos) << text;
  EXPECT_EQ(text.find("flows closed"), std::string::npos) << text;
  // An older lbd's name for the same counter is shown under the new one.
  a.stats = {{"flows_closed", 5}};
  EXPECT_NE(render_stats(stats_report(a, a), "lbd", 7).find("flows reused by a SYN  5"),
            std::string::npos);
}

TEST(LbctlRender, FlowsOldestFirstAndLimited) {
  const Json lines =
      Json::array({"0 10.10.0.50:40000 10.10.0.100:80 10.20.0.11:8080 established 1500 899000",
                   "1 10.10.0.50:40001 10.10.0.100:80 10.20.0.12:8080 syn_sent 20 4980", "garbage",
                   7, "0 10.10.0.50:40002 10.10.0.100:80 10.20.0.13:8080 fin_wait 90000 9000"});
  const Json reply = {{"total", 1234}, {"workers", 2}, {"answered", 2}, {"flows", lines}};
  const Json p = parse_flows(reply, 2);
  EXPECT_EQ(p["total"], 1234);
  const Json& f = p["flows"];
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0]["client"], "10.10.0.50:40002");
  EXPECT_EQ(f[0]["age_ms"], 90000);
  EXPECT_EQ(f[1]["backend"], "10.20.0.11:8080");
  EXPECT_EQ(f[1]["state"], "established");
  EXPECT_EQ(f[1]["worker"], 0);
  const std::string text = render_flows(p);
  EXPECT_EQ(text.rfind("2 of 1234 flows, oldest first:\n", 0), 0u) << text;
  EXPECT_NE(text.find("10.10.0.50:40000  10.10.0.100:80  10.20.0.11:8080  established  1.5s"),
            std::string::npos)
      << text;
}

TEST(LbctlRender, FlowsTotalWhenAllAreListed) {
  const Json one = Json::array({"0 10.10.0.50:1 10.10.0.100:80 10.20.0.11:8080 SYN_SENT 3 4000"});
  const std::string text = render_flows(
      parse_flows({{"total", 1}, {"workers", 1}, {"answered", 1}, {"flows", one}}, 20));
  EXPECT_EQ(text.rfind("1 flow, oldest first:\n", 0), 0u) << text;
  EXPECT_EQ(
      render_flows(parse_flows({{"total", 0}, {"workers", 1}, {"answered", 1}, {"flows", {}}}, 20)),
      "no flows\n");
  // A worker that did not finish its walk in time is said, not silently left out.
  const std::string late = render_flows(
      parse_flows({{"total", 1}, {"workers", 2}, {"answered", 1}, {"flows", one}}, 20));
  EXPECT_NE(late.find("(1 of 2 workers did not answer in time"), std::string::npos) << late;
  // An older lbd answered with the bare array of a sample, without a total.
  const Json old = parse_flows(one, 20);
  EXPECT_TRUE(old["total"].is_null());
  EXPECT_EQ(old["flows"].size(), 1u);
  EXPECT_EQ(render_flows(parse_flows(Json::array(), 20)), "no flows in the sample\n");
}

// -- Clients -------------------------------------------------------------------------------

class FakeServer {
 public:
  FakeServer(int type, std::string path) : path_(std::move(path)) {
    std::filesystem::remove(path_);
    fd_ = ::socket(AF_UNIX, type, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
  }
  ~FakeServer() {
    join();
    ::close(fd_);
    std::filesystem::remove(path_);
  }
  // Serves `connections` connections one after the other with `body` (given the connected
  // socket and the connection's number from 0) in a thread.
  void serve(std::function<void(int, int)> body, int connections) {
    thread_ = std::thread([this, body = std::move(body), connections] {
      for (int i = 0; i < connections; ++i) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        body(c, i);
        ::close(c);
      }
    });
  }
  void serve(std::function<void(int)> body) {
    serve([body = std::move(body)](int c, int) { body(c); }, 1);
  }
  const std::string& path() const { return path_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::thread thread_;
};

std::string temp_socket(const char* name) {
  return "/tmp/lbctl_" + std::string(name) + "_" + std::to_string(getpid()) + ".sock";
}

void send_msg(int fd, const std::string& s) {
  ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
}

std::string recv_msg(int fd) {
  char buf[4096];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

TEST(LbctlTelemetry, SpeaksDpdkTelemetryV2) {
  FakeServer srv(SOCK_SEQPACKET, temp_socket("tel"));
  std::vector<std::string> asked;
  srv.serve([&](int c) {
    send_msg(c, R"({"version": "DPDK 22.11.0", "pid": 4100, "max_output_len": 16384})");
    asked.push_back(recv_msg(c));
    send_msg(c, R"({"/lb/stats": {"rx_packets": 5, "workers": 1}})");
    asked.push_back(recv_msg(c));
    send_msg(c, R"({"/lb/flows": ["0 a b c established 1 2"]})");
    asked.push_back(recv_msg(c));
    send_msg(c, R"({"/lb/nope": null})");
    asked.push_back(recv_msg(c));  // and no answer to that one
    recv_msg(c);                   // until the client leaves
  });
  {
    TelemetryClient t(srv.path(), 300);
    EXPECT_EQ(t.hello()["pid"], 4100);
    EXPECT_EQ(t.query("/lb/stats")["rx_packets"], 5);
    EXPECT_EQ(t.query("/lb/flows,20")[0], "0 a b c established 1 2");
    try {
      t.query("/lb/nope");
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("refused /lb/nope"), std::string::npos) << e.what();
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
      t.query("/lb/stats");
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("within 300 ms"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  }
  srv.join();
  ASSERT_EQ(asked.size(), 4u);
  EXPECT_EQ(asked[0], "/lb/stats");
  EXPECT_EQ(asked[1], "/lb/flows,20");
  EXPECT_EQ(asked[2], "/lb/nope");
}

TEST(LbctlTelemetry, StatusFromLbdAloneWhenLbHealthdIsUnreachable) {
  // lb-healthd is down, lbd's telemetry answers: `lbctl status` shows lbd's pool (services,
  // backends, their live states and flows) and says plainly that lb-healthd is unreachable.
  FakeServer srv(SOCK_SEQPACKET, temp_socket("tel_status"));
  srv.serve([&](int c) {
    send_msg(c, R"({"version": "DPDK 22.11.0", "pid": 4100, "max_output_len": 16384})");
    const std::map<std::string, std::string> answers = {
        {"/lb/backends", R"({"/lb/backends": {
           "backend_1": {"id": 1, "state": "draining", "service": "web",
                         "address": "10.20.0.12:8080", "flows_active": 3, "flows_total": 40},
           "backend_0": {"id": 0, "state": "active", "service": "web",
                         "address": "10.20.0.11:8080", "flows_active": 14, "flows_total": 58},
           "backend_2": {"id": 2, "state": "active", "service": "api",
                         "address": "10.20.0.11:8080", "flows_active": 0, "flows_total": 5}}})"},
        {"/lb/pool", R"({"/lb/pool": {"applied_generation": 74, "received_generation": 74,
                                       "healthd_pid": 0, "updates_applied": 74}})"},
        {"/lb/stats", R"({"/lb/stats": {"flows_active": 17, "workers": 1}})"}};
    for (int i = 0; i < 3; ++i) {
      const std::string q = recv_msg(c);
      const auto it = answers.find(q);
      send_msg(c, it != answers.end() ? it->second : "{}");
    }
    recv_msg(c);
  });
  Json view;
  {
    TelemetryClient t(srv.path(), 1000);
    view = lbd_status(t.query("/lb/backends"), t.query("/lb/pool"), t.query("/lb/stats"), t.hello(),
                      "cannot connect to lb-healthd at /run/lbd/lbd.sock: No such file or "
                      "directory (is lb-healthd running?)");
  }
  srv.join();
  EXPECT_EQ(view["ok"], false);
  EXPECT_EQ(view["healthd"]["reachable"], false);
  EXPECT_EQ(view["lbd"]["pid"], 4100);
  EXPECT_EQ(view["lbd"]["flows_active"], 17);
  ASSERT_EQ(view["services"].size(), 2u);
  EXPECT_EQ(view["services"][0]["name"], "web");  // lbd's order: ids 0, 1, then 2
  ASSERT_EQ(view["services"][0]["backends"].size(), 2u);
  EXPECT_EQ(view["services"][0]["backends"][0]["address"], "10.20.0.11");
  EXPECT_EQ(view["services"][0]["backends"][0]["port"], 8080);
  EXPECT_EQ(view["services"][0]["backends"][1]["live"], "draining");
  EXPECT_EQ(view["services"][0]["backends"][1]["lbd"]["flows_active"], 3);
  EXPECT_EQ(view["services"][1]["name"], "api");
  const std::string text = render_lbd_status(view);
  EXPECT_EQ(text.rfind("lb-healthd: UNREACHABLE: cannot connect to lb-healthd at "
                       "/run/lbd/lbd.sock: No such file or directory (is lb-healthd running?)\n",
                       0),
            0u)
      << text;
  EXPECT_NE(text.find("lbd (pid 4100) forwards with the pool it last applied (generation 74), 17 "
                      "active flow(s)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("web (2 backend(s) in lbd)\n"
                      "  -> 10.20.0.11:8080     active    14           58\n"
                      "  -> 10.20.0.12:8080     draining  3            40\n"
                      "api (1 backend(s) in lbd)\n"
                      "  -> 10.20.0.11:8080     active    0            5\n"),
            std::string::npos)
      << text;
}

TEST(LbctlRender, RemovedBackendsDrainingAfterAReload) {
  Json st = healthd_status();
  Json& b = st["services"][0]["backends"][1];
  b["removed"] = true;
  b["drain_left_ms"] = 250000;
  b["flows_active"] = 3;
  st["services"].push_back(Json::parse(R"({"name": "old", "vip": "10.10.0.101", "port": 80,
      "removed": true, "active": 0, "backends": []})"));
  const std::string text = render_status(merge_status(st, lbd_backends(), ""));
  EXPECT_NE(text.find("-> 10.20.0.14:8080     1       removed  -       draining  -            -"
                      "           -      drains, at most 4m10s more"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("TCP  10.10.0.101:80 - (old, 0/0 active, REMOVED: draining)"),
            std::string::npos)
      << text;
}

TEST(LbctlTelemetry, MissingSocketSaysSo) {
  try {
    TelemetryClient t("/tmp/lbctl-no-such-dir/dpdk_telemetry.v2", 100);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot connect to lbd's telemetry at /tmp/lbctl-no-such-dir/dpdk_telemetry.v2: No "
              "such file or directory (is lbd running?)");
  }
  EXPECT_EQ(telemetry_path("edge1"), "/var/run/dpdk/edge1/dpdk_telemetry.v2");
}

TEST(LbctlControl, OneRequestLineOneReplyLine) {
  FakeServer srv(SOCK_STREAM, temp_socket("ctl"));
  std::string got;
  srv.serve([&](int c) {
    std::string in;
    while (in.find('\n') == std::string::npos) {
      const std::string part = recv_msg(c);
      if (part.empty()) return;
      in += part;
    }
    got = in;
    // The reply in two pieces, and a second line the client keeps for later.
    send_msg(c, "{\"ok\": true, \"x\"");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    send_msg(c, ": 1}\n{\"ok\": false}\n");
    while (!recv_msg(c).empty()) {  // later requests are never answered
    }
  });
  {
    ControlClient c(srv.path(), 1000);
    const Json r = c.request({{"cmd", "ping"}}, 2000);
    EXPECT_EQ(r["x"], 1);
    EXPECT_EQ(c.request({{"cmd", "again"}}, 2000)["ok"], false);
    try {
      c.request({{"cmd", "status"}}, 200);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no reply from lb-healthd"), std::string::npos)
          << e.what();
    }
  }
  srv.join();
  EXPECT_EQ(got, "{\"cmd\":\"ping\"}\n");
  try {
    ControlClient c("/tmp/lbctl-no-such.sock", 100);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot connect to lb-healthd at /tmp/lbctl-no-such.sock: No such file or directory "
              "(is lb-healthd running?)");
  }
}

TEST(LbctlControl, ServerThatHangsUp) {
  FakeServer srv(SOCK_STREAM, temp_socket("hup"));
  srv.serve([](int c) { recv_msg(c); });
  ControlClient c(srv.path(), 1000);
  try {
    c.request({{"cmd", "ping"}}, 2000);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("closed the connection without a reply"),
              std::string::npos)
        << e.what();
  }
}

TEST(LbctlControl, EvictedOrBusyIsSentAgainOnANewConnection) {
  // lb-healthd, full: the first connection is evicted before its request is read, the second
  // refused as busy, the third served. lbctl's request reaches the third, once.
  FakeServer srv(SOCK_STREAM, temp_socket("evict"));
  std::vector<std::string> got;
  srv.serve(
      [&](int c, int i) {
        if (i == 0) {
          send_msg(c, "{\"ok\": false, \"code\": \"evicted\", \"error\": \"make room\"}\n");
          return;
        }
        std::string in;
        while (in.find('\n') == std::string::npos) {
          const std::string part = recv_msg(c);
          if (part.empty()) return;
          in += part;
        }
        got.push_back(in);
        send_msg(c, i == 1 ? "{\"ok\": false, \"code\": \"busy\", \"error\": \"full\"}\n"
                           : "{\"ok\": true, \"served\": 3}\n");
      },
      3);
  {
    ControlClient c(srv.path(), 1000);
    const Json r = c.request({{"cmd", "status"}}, 2000);
    EXPECT_EQ(r["served"], 3) << r.dump();
  }
  srv.join();
  EXPECT_EQ(got, (std::vector<std::string>{"{\"cmd\":\"status\"}\n", "{\"cmd\":\"status\"}\n"}));
  // Any other refusal is the answer, not a reason to ask again.
  FakeServer other(SOCK_STREAM, temp_socket("refused"));
  int connections = 0;
  other.serve([&](int c) {
    ++connections;
    recv_msg(c);
    send_msg(c, "{\"ok\": false, \"code\": \"unknown_backend\", \"error\": \"no\"}\n");
  });
  ControlClient c(other.path(), 1000);
  EXPECT_EQ(c.request({{"cmd", "x"}}, 2000)["code"], "unknown_backend");
  other.join();
  EXPECT_EQ(connections, 1);
}

}  // namespace
}  // namespace lb::ctl
