// The control protocol against lb-healthd's real loop in-process (healthd/daemon.h with its
// ControlServer) and a fake lbd on a real channel segment: every runtime change reaches lbd,
// is persisted, survives a restart; refusals change nothing; "wait" is answered when lbd
// applies (or refuses) the change; reload merges the file with runtime changes.

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "channel.h"
#include "daemon.h"
#include "fake_telemetry.h"
#include "log.h"
#include "protocol.h"
#include "state_file.h"

namespace lb::health {
namespace {

// Backends on addresses nothing listens on: their checks fail fast, which does not matter here.
std::string config_text(const std::string& extra_backend = "", int weight = 1) {
  return "dataplane: { workers = 1; ports = ( { name = \"p0\"; device = \"d0\"; "
         "ip = \"10.0.0.1/24\"; gateway = \"10.0.0.254\"; } ); };\n"
         "services = (\n"
         "  { name = \"web\"; vip = \"10.0.0.100\"; port = 80;\n"
         "    health = { interval_ms = 1000; timeout_ms = 50; initial_state = \"up\"; };\n"
         "    backends = ( { address = \"127.0.0.1\"; port = 1; weight = " +
         std::to_string(weight) + "; }" + extra_backend + " ); }\n);\n";
}

// lbd's telemetry socket as lb-healthd reads it while backends drain: /lb/backends with the
// flow counts the test sets, paged as lbd pages it (test::lbd_page), after `fillers` other
// backends without flows; /lb/services with the services the test says lbd has.
class FakeTelemetry {
 public:
  explicit FakeTelemetry(std::string path)
      : server_(std::move(path), [this](const std::string& cmd) { return answer(cmd); }) {}
  // Active flows lbd reports for "service|address:port".
  void set(const std::string& key, int64_t flows) {
    server_.locked([&] { flows_[key] = flows; });
  }
  // `fillers` backends of another service before the test's, `per_page` a reply; `legacy`: an
  // lbd from before paging, whose one reply is the first page without a word of the rest.
  void pages(int fillers, size_t per_page, bool legacy = false) {
    server_.locked([&] {
      fillers_ = fillers;
      per_page_ = per_page;
      legacy_ = legacy;
    });
  }
  void set_services(std::vector<std::string> names) {
    server_.locked([&] { services_ = std::move(names); });
  }
  int queries() const { return server_.commands(); }
  const std::string& path() const { return server_.path(); }

 private:
  Json answer(const std::string& cmd) const {
    if (cmd.substr(0, cmd.find(',')) == "/lb/services") {
      std::map<uint64_t, Json> services;
      for (size_t id = 0; id < services_.size(); ++id)
        services[id] = {{"id", id}, {"name", services_[id]}, {"flows_rehashed", 0}};
      return test::lbd_page(cmd, "service_", services, per_page_);
    }
    if (cmd.substr(0, cmd.find(',')) != "/lb/backends") return Json();
    std::map<uint64_t, Json> backends;
    uint64_t id = 0;
    for (int i = 0; i < fillers_; ++i, ++id) {
      backends[id] = {{"id", id},
                      {"state", "active"},
                      {"service", "other"},
                      {"address", "10.9.0." + std::to_string(i % 250) + ":" + std::to_string(i)},
                      {"flows_active", 0}};
    }
    for (const auto& [key, n] : flows_) {
      const size_t bar = key.find('|');
      backends[id] = {{"id", id},
                      {"state", "draining"},
                      {"service", key.substr(0, bar)},
                      {"address", key.substr(bar + 1)},
                      {"flows_active", n}};
      ++id;
    }
    Json page = test::lbd_page(cmd, "backend_", backends, per_page_);
    if (legacy_) page.erase("page");
    return page;
  }
  std::map<std::string, int64_t> flows_;
  int fillers_ = 0;
  size_t per_page_ = 1000;
  bool legacy_ = false;
  std::vector<std::string> services_;
  test::FakeTelemetry server_;  // last: its thread reads the above
};

class ControlDaemonTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    set_log_level(LogLevel::kError);
  }
  static void TearDownTestSuite() { curl_global_cleanup(); }

  void SetUp() override {
    instance_ = "ctl-" + std::to_string(getpid());
    segment_.emplace(shm::Segment::create(shm::segment_name(instance_)));
    dir_ = std::filesystem::path("/tmp") /
           ("lbctl_daemon_" + std::to_string(getpid()) + "_" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_path_ = (dir_ / "lbd.cfg").string();
    state_path_ = config_path_ + ".state";
    write_config(config_text());
    updates_.resize(64);
  }
  void TearDown() override {
    if (client_ >= 0) ::close(client_);
    d_.reset();
    std::filesystem::remove_all(dir_);
  }

  void write_config(const std::string& text) const { std::ofstream(config_path_) << text; }

  // lb-healthd as main.cc makes it: the file merged with the state file, a control socket.
  void start() {
    if (client_ >= 0) ::close(client_);
    client_ = -1;
    d_.reset();
    const cfg::Config file = cfg::load_config(config_path_);
    Startup s = load_startup(file, state_path_);
    Options o;
    o.config_path = config_path_;
    o.instance = instance_;
    o.seed = 1;
    o.state_file = state_path_;
    o.telemetry = telemetry_path_;
    d_ = std::make_unique<Daemon>(std::move(s.running), o);
    d_->set_base(std::move(s.base));
    ControlOptions co;
    co.path = (dir_ / "ctl.sock").string();
    d_->set_control(std::make_unique<ControlServer>(co));
    client_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, co.path.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::connect(client_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_TRUE(turn_until([&] { return latest_.count("web") == 1; }));
  }

  // The fake lbd: takes updates off the ring (at most per_tick_ a tick), acknowledges (or
  // refuses) them like lbd. What it applied is in lbd_: like lbd, it refuses an update whose
  // VIP:port another service it has holds, and those refuse_names_ names.
  void lbd_tick() {
    const unsigned n = segment_->receive(updates_.data(), per_tick_);
    for (unsigned i = 0; i < n; ++i) {
      const shm::ServiceUpdate& u = updates_[i];
      latest_[u.name] = u;
      ++received_;
      ++received_by_name_[u.name];
      shm::Header& h = segment_->header();
      h.received_generation.store(u.generation);
      const bool removal = (u.flags & shm::kServiceRemoved) != 0;
      bool refused = refuse_ || refuse_names_.count(u.name) != 0;
      for (const auto& [name, held] : lbd_) {
        if (!removal && name != u.name && held.vip == u.vip && held.port == u.port) refused = true;
      }
      if (refused) {
        h.rejected_generation.store(u.generation);
      } else if (removal) {
        lbd_.erase(u.name);
      } else {
        lbd_[u.name] = u;
      }
    }
    if (ack_) segment_->header().applied_generation.store(segment_->header().received_generation);
  }

  bool turn_until(const std::function<bool()>& pred, Millis limit = Millis(5000)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      d_->turn(-1, Millis(5));
      lbd_tick();
      if (pred()) return true;
    }
    return false;
  }

  // Sends a request and turns the loop until its reply arrives (or `limit` passes: null).
  Json request(const Json& req, Millis limit = Millis(5000)) {
    const std::string line = req.dump() + "\n";
    EXPECT_EQ(::send(client_, line.data(), line.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(line.size()));
    return reply(limit);
  }

  Json reply(Millis limit = Millis(5000)) {
    Json out;
    turn_until(
        [&] {
          char buf[65536];
          const ssize_t n = ::recv(client_, buf, sizeof buf, MSG_DONTWAIT);
          if (n > 0) buffer_.append(buf, static_cast<size_t>(n));
          const size_t nl = buffer_.find('\n');
          if (nl == std::string::npos) return false;
          out = Json::parse(buffer_.substr(0, nl));
          buffer_.erase(0, nl + 1);
          return true;
        },
        limit);
    return out;
  }

  std::vector<std::pair<uint32_t, uint16_t>> backends_in_lbd(const std::string& service) {
    std::vector<std::pair<uint32_t, uint16_t>> out;
    const auto it = latest_.find(service);
    if (it == latest_.end()) return out;
    for (uint32_t i = 0; i < it->second.backend_count; ++i)
      out.emplace_back(it->second.backends[i].ip, it->second.backends[i].port);
    return out;
  }

  Json running_services() const { return services_to_json(d_->config().services); }

  std::string instance_;
  std::optional<shm::Segment> segment_;
  std::filesystem::path dir_;
  std::string config_path_;
  std::string state_path_;
  std::string telemetry_path_;  // lbd's telemetry socket for lb-healthd; empty: its default
  std::unique_ptr<Daemon> d_;
  int client_ = -1;
  std::string buffer_;
  std::vector<shm::ServiceUpdate> updates_;
  std::map<std::string, shm::ServiceUpdate> latest_;
  size_t received_ = 0;
  std::map<std::string, size_t> received_by_name_;
  std::map<std::string, shm::ServiceUpdate> lbd_;  // what the fake lbd applied
  std::set<std::string> refuse_names_;
  unsigned per_tick_ = 64;
  bool ack_ = true;
  bool refuse_ = false;
};

constexpr uint32_t kLocal2 = 0x7f000002;

TEST_F(ControlDaemonTest, EveryChangeReachesLbdAndIsKept) {
  start();
  Json r = request({{"cmd", "backend.add"},
                    {"service", "web"},
                    {"backend", {{"address", "127.0.0.2"}, {"port", 8080}, {"weight", 3}}}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["changes"],
            Json::array({"service web: backend 127.0.0.2:8080 added (weight 3, ready)"}));
  EXPECT_EQ(r["persisted"], true);
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 2; }));
  EXPECT_EQ(backends_in_lbd("web")[1], std::make_pair(kLocal2, uint16_t{8080}));
  EXPECT_EQ(latest_["web"].backends[1].weight, 3);
  // Kept in the state file: the file's services as base, the running ones beside.
  std::optional<RuntimeState> st = read_state(state_path_);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->running, running_services());
  EXPECT_EQ(st->base, services_to_json(cfg::load_config(config_path_).services));

  r = request({{"cmd", "backend.set"},
               {"service", "web"},
               {"address", "127.0.0.2"},
               {"port", 8080},
               {"weight", 0},
               {"state", "drain"}});
  ASSERT_EQ(r["ok"], true) << r;
  ASSERT_TRUE(turn_until([&] {
    return latest_["web"].backends[1].weight == 0 &&
           latest_["web"].backends[1].state == static_cast<uint8_t>(shm::BackendState::kDraining);
  }));

  r = request(
      {{"cmd", "service.add"},
       {"service", {{"name", "api"}, {"vip", "10.0.0.101"}, {"port", 443}, {"scheduler", "lc"}}}});
  ASSERT_EQ(r["ok"], true) << r;
  ASSERT_TRUE(turn_until([&] { return latest_.count("api") == 1; }));
  EXPECT_EQ(latest_["api"].vip, 0x0a000065u);
  EXPECT_EQ(latest_["api"].scheduler, static_cast<uint8_t>(cfg::Scheduler::kLeastConnections));

  r = request(
      {{"cmd", "service.set"},
       {"name", "api"},
       {"set", {{"vip", "10.0.0.102"}, {"port", 8443}, {"health", {{"interval_ms", 500}}}}}});
  ASSERT_EQ(r["ok"], true) << r;
  ASSERT_TRUE(turn_until([&] { return latest_["api"].vip == 0x0a000066u; }));
  EXPECT_EQ(latest_["api"].port, 8443);
  // fast and down intervals that followed interval_ms follow it here too.
  EXPECT_EQ(d_->config().services[1].health.fast_interval_ms, 500u);

  r = request(
      {{"cmd", "backend.remove"}, {"service", "web"}, {"address", "127.0.0.2"}, {"port", 8080}});
  ASSERT_EQ(r["ok"], true) << r;
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 1; }));
  r = request({{"cmd", "service.remove"}, {"name", "api"}});
  ASSERT_EQ(r["ok"], true) << r;
  ASSERT_TRUE(turn_until([&] { return (latest_["api"].flags & shm::kServiceRemoved) != 0; }));

  // A change that changes nothing says so.
  r = request({{"cmd", "backend.set"},
               {"service", "web"},
               {"address", "127.0.0.1"},
               {"port", 1},
               {"weight", 1}});
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["changes"], Json::array());

  // The status says what runs.
  r = request({{"cmd", "status"}});
  ASSERT_EQ(r["ok"], true);
  ASSERT_EQ(r["services"].size(), 1u);
  EXPECT_EQ(r["services"][0]["name"], "web");
  EXPECT_EQ(r["services"][0]["vip"], "10.0.0.100");
  EXPECT_EQ(r["services"][0]["backends"][0]["address"], "127.0.0.1");
  EXPECT_TRUE(r["services"][0]["backends"][0].contains("last_result"));
  EXPECT_EQ(r["lbd"]["attached"], true);
  EXPECT_EQ(r["healthd"]["state_file"], state_path_);
}

TEST_F(ControlDaemonTest, RefusalsChangeNothing) {
  start();
  const Json before = running_services();
  const size_t sent = received_;
  struct Case {
    Json req;
    const char* code;
    const char* error;  // substring
  };
  const Case cases[] = {
      {{{"cmd", "backend.add"},
        {"service", "nope"},
        {"backend", {{"address", "127.0.0.2"}, {"port", 1}}}},
       "not_found",
       "unknown service 'nope' (services: web)"},
      {{{"cmd", "backend.add"},
        {"service", "web"},
        {"backend", {{"address", "127.0.0.1"}, {"port", 1}}}},
       "exists",
       "already has backend 127.0.0.1:1"},
      {{{"cmd", "backend.add"},
        {"service", "web"},
        {"backend", {{"address", "127.0.0.256"}, {"port", 1}}}},
       "invalid",
       "malformed IPv4 address '127.0.0.256'"},
      {{{"cmd", "backend.add"},
        {"service", "web"},
        {"backend", {{"address", "127.0.0.2"}, {"port", 1}, {"weight", 65536}}}},
       "invalid",
       "weight: value 65536 is out of range 0..65535"},
      {{{"cmd", "backend.add"},
        {"service", "web"},
        {"backend", {{"address", "127.0.0.2"}, {"port", 0}}}},
       "invalid",
       "port: value 0 is out of range 1..65535"},
      {{{"cmd", "backend.add"}, {"service", "web"}, {"backend", "127.0.0.2:1"}},
       "bad_request",
       "field 'backend': expected an object, found string"},
      {{{"cmd", "backend.set"},
        {"service", "web"},
        {"address", "127.0.0.1"},
        {"port", 1},
        {"weight", -1}},
       "invalid",
       "weight: value -1 is out of range 0..65535"},
      {{{"cmd", "backend.set"},
        {"service", "web"},
        {"address", "127.0.0.1"},
        {"port", 0},
        {"weight", 2}},
       "invalid",
       "service 'web': backend: port: value 0 is out of range 1..65535"},
      {{{"cmd", "backend.remove"}, {"service", "web"}, {"address", "127.0.0.1.1"}, {"port", 1}},
       "invalid",
       "service 'web': backend: malformed IPv4 address '127.0.0.1.1'"},
      {{{"cmd", "backend.set"},
        {"service", "web"},
        {"address", "127.0.0.9"},
        {"port", 1},
        {"state", "drain"}},
       "not_found",
       "service 'web' has no backend 127.0.0.9:1 (backends: 127.0.0.1:1)"},
      {{{"cmd", "backend.set"},
        {"service", "web"},
        {"address", "127.0.0.1"},
        {"port", 1},
        {"state", "off"}},
       "invalid",
       "state: unknown state 'off' (expected ready, drain, maint)"},
      {{{"cmd", "backend.set"}, {"service", "web"}, {"address", "127.0.0.1"}, {"port", 1}},
       "bad_request",
       "nothing to set"},
      {{{"cmd", "backend.set"},
        {"service", "web"},
        {"address", "1.2.3"},
        {"port", 1},
        {"weight", 2}},
       "invalid",
       "malformed IPv4 address '1.2.3'"},
      {{{"cmd", "backend.remove"}, {"service", "web"}, {"address", "127.0.0.1"}, {"port", "1"}},
       "invalid",
       "port: expected an integer, found string"},
      {{{"cmd", "backend.remove"}, {"service", "web"}, {"address", "127.0.0.1"}},
       "bad_request",
       "missing field 'port'"},
      {{{"cmd", "backend.remove"},
        {"service", "web"},
        {"address", "127.0.0.1"},
        {"port", 1},
        {"nOw", true}},
       "bad_request",
       "unknown field 'nOw' for backend.remove"},
      {{{"cmd", "service.add"}, {"service", {{"name", "web"}, {"vip", "10.0.0.9"}, {"port", 1}}}},
       "exists",
       "service 'web' already exists"},
      {{{"cmd", "service.add"}, {"service", {{"name", "x"}, {"vip", "10.0.0.100"}, {"port", 80}}}},
       "invalid",
       "service 'x': vip: 10.0.0.100:80 is already used by service 'web'"},
      {{{"cmd", "service.add"},
        {"service", {{"name", "bad name"}, {"vip", "10.0.0.9"}, {"port", 1}}}},
       "invalid",
       "invalid name 'bad name'"},
      {{{"cmd", "service.set"}, {"name", "web"}, {"set", {{"scheduler", "fastest"}}}},
       "invalid",
       "service 'web': scheduler: unknown scheduler 'fastest'"},
      {{{"cmd", "service.set"}, {"name", "web"}, {"set", {{"name", "www"}}}},
       "bad_request",
       "cannot be renamed"},
      {{{"cmd", "service.set"}, {"name", "web"}, {"set", {{"health", {{"interval_ms", 5}}}}}},
       "invalid",
       "health.interval_ms: value 5 is out of range 10..3600000"},
      {{{"cmd", "service.remove"}, {"name", "nope"}}, "not_found", "unknown service 'nope'"},
      {{{"cmd", "frob"}}, "unknown_command", "unknown command 'frob'"},
      {{{"nocmd", 1}}, "bad_request", "missing field 'cmd'"},
      {{{"cmd", 7}}, "bad_request", "field 'cmd': expected a string, found number"},
      {{{"cmd", "status"}, {"wait", true}}, "bad_request", "unknown field 'wait' for status"},
      {{{"cmd", "backend.remove"},
        {"service", "web"},
        {"address", "127.0.0.1"},
        {"port", 1},
        {"wait", true},
        {"timeout_ms", 0}},
       "bad_request",
       "timeout_ms"},
      {{{"cmd", "config.reload"}, {"replace", "yes"}}, "bad_request", "expected true or false"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.req.dump());
    const Json r = request(c.req);
    EXPECT_EQ(r["ok"], false) << r;
    EXPECT_EQ(r["code"], c.code) << r;
    EXPECT_NE(r.value("error", std::string()).find(c.error), std::string::npos) << r;
  }
  // The daemon still serves, nothing changed, nothing was sent, nothing was written.
  EXPECT_EQ(request({{"cmd", "ping"}})["ok"], true);
  EXPECT_EQ(running_services(), before);
  turn_until([] { return false; }, Millis(50));
  EXPECT_EQ(received_, sent);
  EXPECT_FALSE(std::filesystem::exists(state_path_));
}

// Moving a service onto another's VIP:port names the one moved (the file's check alone blamed
// whichever came later in the file).
TEST_F(ControlDaemonTest, AServiceSetOntoAnothersAddressNamesTheServiceSet) {
  start();
  ASSERT_EQ(request({{"cmd", "service.add"},
                     {"service", {{"name", "api"}, {"vip", "10.0.0.101"}, {"port", 443}}}})["ok"],
            true);
  Json r = request(
      {{"cmd", "service.set"}, {"name", "web"}, {"set", {{"vip", "10.0.0.101"}, {"port", 443}}}});
  EXPECT_EQ(r["code"], "invalid") << r;
  EXPECT_EQ(r["error"], "service 'web': vip: 10.0.0.101:443 is already used by service 'api'");
  r = request({{"cmd", "service.set"}, {"name", "api"}, {"set", {{"port", 80}}}});
  EXPECT_EQ(r["ok"], true) << r;  // 10.0.0.101:80 is free
  r = request({{"cmd", "service.set"}, {"name", "api"}, {"set", {{"vip", "10.0.0.100"}}}});
  EXPECT_EQ(r["error"], "service 'api': vip: 10.0.0.100:80 is already used by service 'web'") << r;
}

TEST_F(ControlDaemonTest, WaitIsAnsweredWhenLbdHasApplied) {
  start();
  ack_ = false;
  const Json add = {{"cmd", "backend.add"},
                    {"service", "web"},
                    {"backend", {{"address", "127.0.0.2"}, {"port", 1}}},
                    {"wait", true},
                    {"timeout_ms", 5000},
                    {"id", 42}};
  const std::string line = add.dump() + "\n";
  ASSERT_EQ(::send(client_, line.data(), line.size(), 0), static_cast<ssize_t>(line.size()));
  // lbd has received it but not applied it: no reply yet.
  EXPECT_TRUE(reply(Millis(300)).is_null());
  EXPECT_EQ(backends_in_lbd("web").size(), 2u);
  ack_ = true;
  const Json r = reply();
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["id"], 42);
  EXPECT_EQ(r["lbd"]["applied"], true);
  EXPECT_GE(r["lbd"]["applied_generation"].get<uint64_t>(), r["lbd"]["generation"].get<uint64_t>());
  EXPECT_GE(r["lbd"]["waited_ms"].get<int64_t>(), 250);

  // lbd refuses the update that carries the change.
  refuse_ = true;
  Json bad = request({{"cmd", "backend.set"},
                      {"service", "web"},
                      {"address", "127.0.0.2"},
                      {"port", 1},
                      {"weight", 9},
                      {"wait", true}});
  EXPECT_EQ(bad["ok"], false) << bad;
  EXPECT_EQ(bad["code"], "rejected");
  EXPECT_EQ(bad["accepted"], true);
  EXPECT_NE(bad["error"].get<std::string>().find("lbd refused update"), std::string::npos);
  refuse_ = false;

  // lbd does not apply at all: the wait ends at its timeout; the change stays made.
  ack_ = false;
  const auto t0 = Clock::now();
  Json late = request({{"cmd", "backend.set"},
                       {"service", "web"},
                       {"address", "127.0.0.2"},
                       {"port", 1},
                       {"weight", 7},
                       {"wait", true},
                       {"timeout_ms", 200}});
  const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - t0).count();
  EXPECT_EQ(late["ok"], false) << late;
  EXPECT_EQ(late["code"], "timeout");
  EXPECT_NE(late["error"].get<std::string>().find("did not apply the change within"),
            std::string::npos);
  EXPECT_GE(waited, 190);
  EXPECT_LT(waited, 3000);
  EXPECT_EQ(d_->config().services[0].backends[1].weight, 7u);

  // A client that gives up while waiting does not disturb the daemon.
  const std::string again =
      Json{{"cmd", "backend.set"}, {"service", "web"}, {"address", "127.0.0.2"}, {"port", 1},
           {"weight", 6},          {"wait", true},     {"timeout_ms", 100}}
          .dump() +
      "\n";
  ASSERT_EQ(::send(client_, again.data(), again.size(), 0), static_cast<ssize_t>(again.size()));
  turn_until([] { return false; }, Millis(20));
  ::close(client_);
  client_ = -1;
  turn_until([] { return false; }, Millis(300));
  EXPECT_EQ(d_->control()->clients(), 0u);
}

TEST_F(ControlDaemonTest, ReloadMergesReplacesAndRefusesBrokenFiles) {
  start();
  ASSERT_EQ(request({{"cmd", "backend.add"},
                     {"service", "web"},
                     {"backend", {{"address", "127.0.0.2"}, {"port", 1}}}})["ok"],
            true);
  // The file changes the first backend's weight: both changes run after a reload.
  write_config(config_text("", 4));
  Json r = request({{"cmd", "config.reload"}, {"wait", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["changes"], Json::array({"service web: backend 127.0.0.1:1: weight 1 -> 4"}));
  EXPECT_EQ(r["lbd"]["applied"], true);
  ASSERT_EQ(d_->config().services[0].backends.size(), 2u);
  EXPECT_EQ(d_->config().services[0].backends[0].weight, 4u);
  EXPECT_EQ(request({{"cmd", "config.diff"}})["changes"],
            Json::array({"service web: backend 127.0.0.2:1 added (weight 1, ready)"}));

  // A broken file: refused with file:line, nothing changes (not even the state file).
  const Json before = running_services();
  const std::string state_before = [&] {
    std::ifstream in(state_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }();
  write_config(config_text("", 4) + "oops = ;\n");
  r = request({{"cmd", "config.reload"}});
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["code"], "config");
  EXPECT_EQ(r["error"].get<std::string>().rfind(config_path_ + ":7: syntax error", 0), 0u) << r;
  write_config(
      config_text("", 4).replace(config_text("", 4).find("weight = 4"), 10, "weight = 99999"));
  r = request({{"cmd", "config.reload"}});
  EXPECT_EQ(r["code"], "config");
  EXPECT_NE(r["error"].get<std::string>().find(
                config_path_ + ":5: services.[0].backends.[0].weight: value 99999 is out of range"),
            std::string::npos)
      << r;
  EXPECT_EQ(running_services(), before);
  {
    std::ifstream in(state_path_);
    std::stringstream s;
    s << in.rdbuf();
    EXPECT_EQ(s.str(), state_before);
  }
  // SIGHUP's path is the same.
  EXPECT_FALSE(d_->reload());
  EXPECT_EQ(running_services(), before);

  // A file that collides with a runtime change: refused, says so.
  write_config(config_text(", { address = \"127.0.0.2\"; port = 1; weight = 0; }", 4));
  r = request({{"cmd", "config.reload"}});
  ASSERT_EQ(r["ok"], true) << r;  // the same backend: the file's values win, no conflict
  EXPECT_EQ(d_->config().services[0].backends[1].weight, 0u);

  // A file that collides with a runtime change: refused, and says which.
  ASSERT_EQ(request({{"cmd", "service.add"},
                     {"service", {{"name", "api"}, {"vip", "10.0.0.101"}, {"port", 443}}}})["ok"],
            true);
  const Json with_api = running_services();
  std::string clash = config_text(", { address = \"127.0.0.2\"; port = 1; weight = 0; }", 4);
  clash.insert(clash.rfind(");"),
               ", { name = \"other\"; vip = \"10.0.0.101\"; port = 443; backends = (); }\n");
  write_config(clash);
  r = request({{"cmd", "config.reload"}});
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["code"], "conflict");
  EXPECT_NE(r["error"].get<std::string>().find(
                config_path_ + ": the file conflicts with runtime changes: service 'api': vip: "
                               "10.0.0.101:443 is already used by service 'other'"),
            std::string::npos)
      << r;
  EXPECT_EQ(running_services(), with_api);
  ASSERT_EQ(request({{"cmd", "service.remove"}, {"name", "api"}})["ok"], true);

  // --replace: the file as it is, runtime changes dropped.
  ASSERT_EQ(request({{"cmd", "backend.add"},
                     {"service", "web"},
                     {"backend", {{"address", "127.0.0.3"}, {"port", 1}}}})["ok"],
            true);
  write_config(config_text("", 4));
  r = request({{"cmd", "config.reload"}, {"replace", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(d_->config().services[0].backends.size(), 1u);
  EXPECT_EQ(request({{"cmd", "config.diff"}})["changes"], Json::array());
}

TEST_F(ControlDaemonTest, RestartKeepsRuntimeChanges) {
  start();
  ASSERT_EQ(
      request({{"cmd", "backend.add"},
               {"service", "web"},
               {"backend", {{"address", "127.0.0.2"}, {"port", 1}, {"state", "maint"}}}})["ok"],
      true);
  ASSERT_EQ(request({{"cmd", "service.add"},
                     {"service", {{"name", "api"}, {"vip", "10.0.0.101"}, {"port", 443}}}})["ok"],
            true);
  const Json running = running_services();
  start();  // a new lb-healthd from the same file and state file
  EXPECT_EQ(running_services(), running);
  EXPECT_EQ(request({{"cmd", "config.diff"}})["changes"].size(), 2u);
  ASSERT_TRUE(turn_until([&] { return latest_.count("api") == 1; }));
}

TEST_F(ControlDaemonTest, ServiceOfTheFileRemovedAtRunTimeStaysRemovedInLbd) {
  std::string text = config_text();
  text.insert(text.rfind(");"),
              ", { name = \"api\"; vip = \"10.0.0.101\"; port = 443; backends = (); }\n");
  write_config(text);
  start();
  ASSERT_TRUE(turn_until([&] { return latest_.count("api") == 1; }));
  ASSERT_EQ(request({{"cmd", "service.remove"}, {"name", "api"}})["ok"], true);
  ASSERT_TRUE(turn_until([&] { return (latest_["api"].flags & shm::kServiceRemoved) != 0; }));
  // lbd restarts from the file (api included) while lb-healthd restarts from file + state:
  // lb-healthd must tell the new lbd that api is gone.
  latest_.clear();
  start();
  ASSERT_TRUE(turn_until([&] {
    return latest_.count("api") == 1 && (latest_["api"].flags & shm::kServiceRemoved) != 0;
  }));
  EXPECT_EQ(d_->config().services.size(), 1u);
}

TEST_F(ControlDaemonTest, SaveWritesTheFileAndKeepsTheOld) {
  start();
  ASSERT_EQ(request({{"cmd", "backend.add"},
                     {"service", "web"},
                     {"backend", {{"address", "127.0.0.2"}, {"port", 1}, {"weight", 5}}}})["ok"],
            true);
  const std::string old = config_text();
  Json r = request({{"cmd", "config.show"}});
  ASSERT_EQ(r["ok"], true);
  EXPECT_EQ(services_to_json(cfg::parse_config(r["text"], "x").services), running_services());
  r = request({{"cmd", "config.save"}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["backup"], config_path_ + ".bak");
  std::ifstream bak(config_path_ + ".bak");
  std::stringstream b;
  b << bak.rdbuf();
  EXPECT_EQ(b.str(), old);
  EXPECT_EQ(services_to_json(cfg::load_config(config_path_).services), running_services());
  EXPECT_EQ(request({{"cmd", "config.diff"}})["changes"], Json::array());
  // And a reload of the saved file changes nothing.
  r = request({{"cmd", "config.reload"}});
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["changes"], Json::array());
}

// -- A reload that removes: drain, never reset -----------------------------------------------

constexpr const char* kSecond = ", { address = \"127.0.0.2\"; port = 8080; }";

std::optional<shm::BackendState> state_of(const shm::ServiceUpdate& u, uint32_t ip, uint16_t port) {
  for (uint32_t i = 0; i < u.backend_count; ++i) {
    if (u.backends[i].ip == ip && u.backends[i].port == port)
      return static_cast<shm::BackendState>(u.backends[i].state);
  }
  return std::nullopt;
}

TEST_F(ControlDaemonTest, BackendRemovedByReloadDrainsWhileItHasFlowsThenGoes) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.set("web|127.0.0.2:8080", 3);  // three established connections on it
  write_config(config_text(kSecond));
  start();
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 2; }));

  write_config(config_text());  // the file drops 127.0.0.2:8080
  Json r = request({{"cmd", "config.reload"}, {"wait", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["changes"],
            Json::array({"service web: backend 127.0.0.2:8080 removed",
                         "service web: backend 127.0.0.2:8080 drains: no new flows; it leaves "
                         "lbd's pool once its flows have ended (at most 5m00s)"}));
  // lbd keeps it, draining: no new flows, the established ones go on.
  EXPECT_EQ(state_of(latest_["web"], kLocal2, 8080), shm::BackendState::kDraining);
  EXPECT_EQ(d_->config().services[0].backends.size(), 1u);  // the running config has it no more
  // ... for as long as lbd counts flows on it.
  const int before = lbd_telemetry.queries();
  turn_until([] { return false; }, Millis(1200));
  EXPECT_GE(lbd_telemetry.queries(), before + 2) << "lb-healthd should keep counting";
  EXPECT_EQ(state_of(latest_["web"], kLocal2, 8080), shm::BackendState::kDraining);
  r = request({{"cmd", "status"}});
  ASSERT_EQ(r["services"][0]["backends"].size(), 2u) << r;
  const Json& leaving = r["services"][0]["backends"][1];
  EXPECT_EQ(leaving["removed"], true);
  EXPECT_EQ(leaving["live"], "draining");
  EXPECT_EQ(leaving["flows_active"], 3);
  EXPECT_GT(leaving["drain_left_ms"].get<int64_t>(), 290000);

  // Its last connection ends: it leaves lbd's pool.
  lbd_telemetry.set("web|127.0.0.2:8080", 0);
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 1; }, Millis(3000)));
  EXPECT_EQ(backends_in_lbd("web")[0], std::make_pair(0x7f000001u, uint16_t{1}));
  EXPECT_EQ(request({{"cmd", "status"}})["services"][0]["backends"].size(), 1u);
}

// lbd lists its backends a page at a time (about 60 a reply of its 4,096): a draining backend
// on a later page is counted there, not taken for one without flows (its connections were reset).
TEST_F(ControlDaemonTest, DrainCountsTheFlowsOnEveryPageOfLbdsListing) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.pages(300, 50);  // the draining backend is the 301st: on the seventh page
  lbd_telemetry.set("web|127.0.0.2:8080", 3);
  write_config(config_text(kSecond));
  start();
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 2; }));
  write_config(config_text());
  ASSERT_EQ(request({{"cmd", "config.reload"}, {"wait", true}})["ok"], true);
  EXPECT_EQ(state_of(latest_["web"], kLocal2, 8080), shm::BackendState::kDraining);
  const int before = lbd_telemetry.queries();
  turn_until([] { return false; }, Millis(1200));
  EXPECT_GE(lbd_telemetry.queries(), before + 14) << "every page, at every count";
  EXPECT_EQ(state_of(latest_["web"], kLocal2, 8080), shm::BackendState::kDraining)
      << "drained while lbd counted 3 flows on it";
  const Json r = request({{"cmd", "status"}});
  ASSERT_EQ(r["services"][0]["backends"].size(), 2u) << r;
  EXPECT_EQ(r["services"][0]["backends"][1]["flows_active"], 3);
  lbd_telemetry.set("web|127.0.0.2:8080", 0);
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 1; }, Millis(3000)));
}

// A listing that is not complete (an lbd from before paging: its one reply left out what did
// not fit) says nothing of a backend it lacks: its flows are not known, and the drain waits for
// its timeout instead of ending at once.
TEST_F(ControlDaemonTest, DrainWaitsWhenLbdsListingIsIncomplete) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.pages(300, 50, /*legacy=*/true);
  lbd_telemetry.set("web|127.0.0.2:8080", 3);
  write_config(config_text(kSecond));
  start();
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 2; }));
  write_config(config_text());
  ASSERT_EQ(request({{"cmd", "config.reload"}, {"drain_timeout_ms", 1500}})["ok"], true);
  const auto t0 = Clock::now();
  ASSERT_TRUE(turn_until([&] { return state_of(latest_["web"], kLocal2, 8080).has_value(); }));
  turn_until([] { return false; }, Millis(900));
  EXPECT_EQ(state_of(latest_["web"], kLocal2, 8080), shm::BackendState::kDraining)
      << "a backend lbd's incomplete listing lacks was taken for one without flows";
  // Its timeout ends it.
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 1; }, Millis(4000)));
  EXPECT_GE(Clock::now() - t0, Millis(1400));
}

TEST_F(ControlDaemonTest, ReloadDrainTimeoutAndNow) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.set("web|127.0.0.2:8080", 5);  // connections that never end
  write_config(config_text(kSecond));
  start();
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 2; }));
  // A drain timeout: removed after it, flows or not.
  write_config(config_text());
  Json r = request({{"cmd", "config.reload"}, {"drain_timeout_ms", 400}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_NE(r["changes"].dump().find("(at most 400ms)"), std::string::npos) << r;
  const auto t0 = Clock::now();
  ASSERT_TRUE(turn_until([&] { return state_of(latest_["web"], kLocal2, 8080).has_value(); }));
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 1; }, Millis(3000)));
  EXPECT_GE(Clock::now() - t0, Millis(350));

  // --now (a drain timeout of 0): removed in the same update.
  write_config(config_text(kSecond));
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("web").size() == 2; }));
  write_config(config_text());
  r = request({{"cmd", "config.reload"}, {"drain_timeout_ms", 0}, {"wait", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["changes"], Json::array({"service web: backend 127.0.0.2:8080 removed"}));
  EXPECT_EQ(backends_in_lbd("web").size(), 1u);

  // Bad values are refused.
  r = request({{"cmd", "config.reload"}, {"drain_timeout_ms", -1}});
  EXPECT_EQ(r["code"], "bad_request") << r;
  r = request({{"cmd", "config.reload"}, {"drain_timeout_ms", "5"}});
  EXPECT_EQ(r["code"], "bad_request") << r;
}

TEST_F(ControlDaemonTest, BackendReAddedWhileDrainingIsABackendAgain) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.set("web|127.0.0.2:8080", 1);
  write_config(config_text(kSecond));
  start();
  write_config(config_text());
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  ASSERT_TRUE(turn_until(
      [&] { return state_of(latest_["web"], kLocal2, 8080) == shm::BackendState::kDraining; }));
  // Back in the file before it drained: checked and served again, not removed later.
  write_config(config_text(kSecond));
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  lbd_telemetry.set("web|127.0.0.2:8080", 0);
  turn_until([] { return false; }, Millis(800));
  EXPECT_EQ(backends_in_lbd("web").size(), 2u);
  EXPECT_EQ(d_->config().services[0].backends.size(), 2u);
  EXPECT_FALSE(request({{"cmd", "status"}})["services"][0]["backends"][1].contains("removed"));
}

TEST_F(ControlDaemonTest, ServiceRemovedByReloadDrainsBeforeLbdIsTold) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.set("api|127.0.0.2:8080", 2);
  std::string with_api = config_text();
  with_api.insert(with_api.rfind(");"),
                  ", { name = \"api\"; vip = \"10.0.0.101\"; port = 80;\n"
                  "    backends = ( { address = \"127.0.0.2\"; port = 8080; } ); }\n");
  write_config(with_api);
  start();
  ASSERT_TRUE(turn_until([&] { return backends_in_lbd("api").size() == 1; }));
  write_config(config_text());
  Json r = request({{"cmd", "config.reload"}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_NE(r["changes"].dump().find("service api: drains before it goes"), std::string::npos) << r;
  // lbd keeps the service, its backend draining, while it has flows.
  turn_until([] { return false; }, Millis(800));
  ASSERT_EQ(latest_["api"].flags & shm::kServiceRemoved, 0) << "told too early";
  EXPECT_EQ(state_of(latest_["api"], kLocal2, 8080), shm::BackendState::kDraining);
  r = request({{"cmd", "status"}});
  ASSERT_EQ(r["services"].size(), 2u) << r;
  EXPECT_EQ(r["services"][1]["removed"], true);
  EXPECT_EQ(r["services"][1]["vip"], "10.0.0.101");
  lbd_telemetry.set("api|127.0.0.2:8080", 0);
  ASSERT_TRUE(
      turn_until([&] { return (latest_["api"].flags & shm::kServiceRemoved) != 0; }, Millis(3000)));
  EXPECT_EQ(request({{"cmd", "status"}})["services"].size(), 1u);
}

// The file's services plus `more` (", { name = ...; }" entries).
std::string with_services(const std::string& more, const std::string& base = config_text()) {
  std::string text = base;
  text.insert(text.rfind(");"), more);
  return text;
}

std::string service_entry(const std::string& name, const std::string& vip,
                          const std::string& backend = "127.0.0.2") {
  return ", { name = \"" + name + "\"; vip = \"" + vip + "\"; port = 80;\n" +
         "    health = { interval_ms = 60000; initial_state = \"up\"; };\n" +
         "    backends = ( { address = \"" + backend + "\"; port = 8080; } ); }\n";
}

TEST_F(ControlDaemonTest, ServiceDrainingWhenLbHealthdRestartsIsRemovedFromLbd) {
  // lb-healthd restarts while a service a reload removed drains: the new one does not know it
  // (neither the file nor the state file has it), but lbd has it, holding its VIP:port.
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.set("api|127.0.0.2:8080", 2);
  write_config(with_services(service_entry("api", "10.0.0.101")));
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_.count("api") == 1; }));
  write_config(config_text());
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  turn_until([] { return false; }, Millis(300));
  ASSERT_EQ(lbd_.count("api"), 1u) << "drains first";

  lbd_telemetry.set_services({"web", "api"});  // what lbd has
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_.count("api") == 0; }, Millis(2000)))
      << "lbd still has a service lb-healthd does not know";
  EXPECT_EQ(lbd_.count("web"), 1u);
  // Its VIP:port is free again.
  const Json r = request({{"cmd", "service.add"},
                          {"service", {{"name", "api2"}, {"vip", "10.0.0.101"}, {"port", 80}}},
                          {"wait", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(lbd_.count("api2"), 1u);
}

// A service a reload removed drains before lbd is told: with announce_when = "alive" its VIP
// stays announced meanwhile (it was withdrawn at once, and in a fleet whose every node had the
// same reload its connections lost their route), and is withdrawn once it has drained.
TEST_F(ControlDaemonTest, AServiceDrainingAfterAReloadKeepsItsVipAnnounced) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.set("api|127.0.0.2:8080", 2);
  const std::string bgp =
      "bgp = { local_as = 65001; router_id = \"10.0.0.3\"; next_hop = \"10.0.0.1\";\n"
      "  neighbors = ( { address = \"10.0.0.254\"; as = 65000; } );\n"
      "  announce_when = \"alive\"; bird_config = \"" +
      (dir_ / "bird.conf").string() + "\"; bird_socket = \"" + (dir_ / "bird.ctl").string() +
      "\"; };\n";
  write_config(with_services(service_entry("api", "10.0.0.101")) + bgp);
  start();
  uint64_t beat = 1;
  const auto announced = [&](uint32_t vip) {
    segment_->header().lbd_heartbeat_ms.store(++beat);  // lbd alive
    for (const VipDecision& v : d_->snapshot().bgp.vips)
      if (v.vip == vip) return v.announce;
    return false;
  };
  constexpr uint32_t kApiVip = 0x0a000065;  // 10.0.0.101
  ASSERT_TRUE(turn_until([&] { return lbd_.count("api") == 1 && announced(kApiVip); }));
  write_config(config_text() + bgp);
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  for (auto end = Clock::now() + Millis(600); Clock::now() < end;) {
    turn_until([] { return false; }, Millis(20));
    ASSERT_TRUE(announced(kApiVip)) << "withdrawn while its connections drain";
  }
  ASSERT_EQ(lbd_.count("api"), 1u) << "drains first";
  lbd_telemetry.set("api|127.0.0.2:8080", 0);
  EXPECT_TRUE(
      turn_until([&] { return lbd_.count("api") == 0 && !announced(kApiVip); }, Millis(3000)));
}

TEST_F(ControlDaemonTest, AVipMovedInOneReloadIsFreedBeforeItIsTaken) {
  // b (first in the file) takes a's VIP while a moves away; lbd takes one update per tick.
  per_tick_ = 1;
  write_config(with_services(service_entry("b", "10.0.0.102") + service_entry("a", "10.0.0.101")));
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_.count("a") == 1 && lbd_.count("b") == 1; }));
  write_config(with_services(service_entry("b", "10.0.0.101") + service_entry("a", "10.0.0.103")));
  Json r = request({{"cmd", "config.reload"}, {"wait", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(lbd_["a"].vip, 0x0a000067u);
  EXPECT_EQ(lbd_["b"].vip, 0x0a000065u);
  EXPECT_EQ(segment_->header().rejected_generation.load(), 0u) << "sent in an order lbd refuses";

  // Two services swap their VIPs: one goes through a removal, nothing is refused.
  write_config(with_services(service_entry("b", "10.0.0.103") + service_entry("a", "10.0.0.101")));
  r = request({{"cmd", "config.reload"}, {"wait", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(lbd_["a"].vip, 0x0a000065u);
  EXPECT_EQ(lbd_["b"].vip, 0x0a000067u);
  EXPECT_EQ(segment_->header().rejected_generation.load(), 0u) << "sent in an order lbd refuses";
}

TEST_F(ControlDaemonTest, UpdatesLbdRefusedAreSentAgainAFewTimes) {
  // lbd has a and b from an earlier lb-healthd; the new one, started from a file where b takes
  // a's VIP, does not know what lbd holds: b is refused until a's update frees the VIP.
  per_tick_ = 1;
  write_config(with_services(service_entry("b", "10.0.0.102") + service_entry("a", "10.0.0.101")));
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_.count("a") == 1 && lbd_.count("b") == 1; }));
  write_config(with_services(service_entry("b", "10.0.0.101") + service_entry("a", "10.0.0.103")));
  d_.reset();
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_["b"].vip == 0x0a000065u; }, Millis(2000)))
      << "b's refused update was not sent again";
  EXPECT_EQ(lbd_["a"].vip, 0x0a000067u);

  // An update lbd always refuses is sent again at most a few times.
  refuse_names_ = {"web"};
  received_by_name_.clear();
  ASSERT_EQ(request({{"cmd", "backend.set"},
                     {"service", "web"},
                     {"address", "127.0.0.1"},
                     {"port", 1},
                     {"weight", 7}})["ok"],
            true);
  turn_until([] { return false; }, Millis(500));
  EXPECT_EQ(received_by_name_["web"], 1u + Publisher::kMaxResends);
}

TEST_F(ControlDaemonTest, WaitIsNotRefusedForAnotherChangesRefusedUpdate) {
  write_config(with_services(service_entry("api", "10.0.0.101")));
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_.count("api") == 1; }));
  refuse_names_ = {"api"};
  // api changes, then web (waited for) before either is sent: lbd refuses api's only.
  ASSERT_TRUE(d_->change("api", [](Json& services) {
                  services[1]["backends"][0]["weight"] = 5;
                  return Status();
                }).ok());
  const Result<Change> c = d_->change("web", [](Json& services) {
    services[0]["backends"][0]["weight"] = 5;
    return Status();
  });
  ASSERT_TRUE(c.ok());
  std::optional<AckResult> ack;
  d_->when_applied(
      c->mark, Millis(2000), [&](const AckResult& a) { ack = a; }, c->ticket);
  ASSERT_TRUE(turn_until([&] { return ack.has_value(); }));
  EXPECT_TRUE(ack->ok) << ack->code << ": " << ack->error;
  EXPECT_EQ(lbd_["web"].backends[0].weight, 5u);
}

// A waited-for removal is applied once lbd has applied it, not when lbd has only received it,
// and names the generation it went in (the Publisher forgets a removal once lbd has it).
TEST_F(ControlDaemonTest, WaitForARemovalEndsWhenLbdAppliedIt) {
  write_config(with_services(service_entry("api", "10.0.0.101")));
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_.count("api") == 1; }));
  ack_ = false;  // lbd receives, does not apply
  Json r =
      request({{"cmd", "service.remove"}, {"name", "api"}, {"wait", true}, {"timeout_ms", 300}});
  EXPECT_EQ(r["ok"], false) << r;
  EXPECT_EQ(r["code"], "timeout") << r;
  EXPECT_GT(r["lbd"]["generation"].get<uint64_t>(), 0u) << r;
  ack_ = true;
  ASSERT_EQ(request({{"cmd", "service.add"},
                     {"service", {{"name", "api"}, {"vip", "10.0.0.101"}, {"port", 80}}}})["ok"],
            true);
  ASSERT_TRUE(turn_until([&] { return lbd_.count("api") == 1; }));
  r = request({{"cmd", "service.remove"}, {"name", "api"}, {"wait", true}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_GT(r["lbd"]["generation"].get<uint64_t>(), 0u) << r;
  EXPECT_EQ(lbd_.count("api"), 0u);
}

// A service whose resends ran out (lbd kept refusing it: another service held its VIP:port) is
// sent again once a removal frees something in lbd.
TEST_F(ControlDaemonTest, AServiceGivenUpIsSentAgainWhenARemovalFreesItsVip) {
  write_config(with_services(service_entry("a", "10.0.0.101")));
  start();
  ASSERT_TRUE(turn_until([&] { return lbd_.count("a") == 1; }));
  // lbd also holds "ghost" on 10.0.0.102:80, which lb-healthd does not know (its telemetry
  // cannot be read here, so nothing removes it at attach).
  shm::ServiceUpdate ghost = lbd_["a"];
  std::strncpy(ghost.name, "ghost", sizeof ghost.name);
  ghost.vip = 0x0a000066u;
  lbd_["ghost"] = ghost;
  ASSERT_EQ(request({{"cmd", "service.add"},
                     {"service", {{"name", "b"}, {"vip", "10.0.0.102"}, {"port", 80}}}})["ok"],
            true);
  turn_until([] { return false; }, Millis(500));
  ASSERT_EQ(lbd_.count("b"), 0u) << "refused: ghost holds its VIP:port";
  EXPECT_EQ(received_by_name_["b"], 1u + Publisher::kMaxResends);
  // Something else frees the VIP:port in lbd: a removal lb-healthd sends (here, of "ghost").
  lbd_.erase("ghost");
  ASSERT_EQ(request({{"cmd", "service.remove"}, {"name", "a"}})["ok"], true);
  EXPECT_TRUE(turn_until([&] { return lbd_.count("b") == 1; }, Millis(1000)))
      << "b, given up, was never sent again";
}

// A reconcile (reading which services lbd has, retried every 5 s while lbd's telemetry cannot
// be read) that comes due after lbd went away does not spin the loop: the turn still waits for
// its other deadlines. Before 0797971 reconcile() returned early while detached without moving
// its retry time, and every turn after it returned at once until lbd came back.
TEST_F(ControlDaemonTest, AReconcileDueWhileLbdIsAwayDoesNotSpinTheLoop) {
  start();  // attached; lbd's services could not be read (no telemetry here): retried in 5 s
  segment_.reset();  // lbd stops: its segment goes
  const auto turn_for = [&](Millis d) {
    int turns = 0;
    for (const auto end = Clock::now() + d; Clock::now() < end; ++turns) d_->turn(-1, Millis(50));
    return turns;
  };
  turn_for(Millis(5300));  // detached, and past the retry time
  const int turns = turn_for(Millis(500));
  EXPECT_LT(turns, 200) << "lb-healthd's loop turned " << turns << " times in 500 ms";
}

// While lbd takes updates but does not apply them (a worker stalled), what lb-healthd keeps per
// update sent stays bounded by the services, not by the updates; once lbd applies again,
// nothing is left.
TEST_F(ControlDaemonTest, UpdatesToAStalledLbdKeepBoundedState) {
  start();
  ack_ = false;
  for (int i = 0; i < 300; ++i) {
    const size_t before = received_;
    ASSERT_TRUE(d_->change("web", [i](Json& services) {
                    services[0]["backends"][0]["weight"] = 1 + i % 50;
                    return Status();
                  }).ok());
    ASSERT_TRUE(turn_until([&] { return received_ > before; })) << i;
  }
  EXPECT_LE(d_->publisher().unsettled(), 20u);
  ack_ = true;
  ASSERT_TRUE(turn_until([&] { return d_->publisher().unsettled() == 0; }));
  EXPECT_EQ(lbd_["web"].backends[0].weight, 1u + 299 % 50);
}

TEST_F(ControlDaemonTest, BackendBackBeforeItDrainedKeepsItsHealth) {
  FakeTelemetry lbd_telemetry((dir_ / "telemetry.sock").string());
  telemetry_path_ = lbd_telemetry.path();
  lbd_telemetry.set("web|127.0.0.2:8080", 1);
  // 127.0.0.2:8080 starts up and goes DOWN at its first check (nothing listens there).
  std::string text = config_text(kSecond);
  text.replace(text.find("interval_ms = 1000"), 18, "interval_ms = 100; fall = 1");
  write_config(text);
  start();
  ASSERT_TRUE(turn_until(
      [&] { return state_of(latest_["web"], kLocal2, 8080) == shm::BackendState::kDraining; }));
  ASSERT_EQ(request({{"cmd", "status"}})["services"][0]["backends"][1]["health"], "down");
  // Slow checks from now on: only what it was decides until the next one.
  std::string slow = config_text(kSecond);
  slow.replace(slow.find("interval_ms = 1000"), 18, "interval_ms = 60000");
  std::string without = config_text();
  without.replace(without.find("interval_ms = 1000"), 18, "interval_ms = 60000");
  write_config(without);
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  write_config(slow);
  ASSERT_EQ(request({{"cmd", "config.reload"}, {"wait", true}})["ok"], true);
  const Json st = request({{"cmd", "status"}});
  EXPECT_EQ(st["services"][0]["backends"][1]["health"], "down") << st;
  EXPECT_EQ(state_of(latest_["web"], kLocal2, 8080), shm::BackendState::kDraining)
      << "a backend known DOWN is sent as active";
}

TEST_F(ControlDaemonTest, ReloadSaysWhatOnlyARestartApplies) {
  // lbd reads dataplane at its start, lb-healthd its healthd group (but drain_timeout_ms) at its
  // own: a reload that changes only those said "no change", as if the file said what runs.
  start();
  std::string text = config_text();
  text.replace(text.find("workers = 1;"), 12, "workers = 1; flows = { tcp_fin_timeout = 20; };");
  write_config(text + "healthd = { drain_timeout_ms = 1000; control_timeout_ms = 2000; };\n");
  Json r = request({{"cmd", "config.reload"}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["changes"],
            Json::array({"dataplane.flows.tcp_fin_timeout 10 -> 20: lbd reads it at its start "
                         "only (restart lbd to apply it)",
                         "healthd.control_timeout_ms set to 2000: lb-healthd reads it at its "
                         "start only (restart lb-healthd to apply it)"}))
      << r;
  // Said once, as the file's other changes are: the next reload has nothing new to say.
  r = request({{"cmd", "config.reload"}});
  EXPECT_EQ(r["changes"], Json::array()) << r;
  // The bgp group a reload does apply: said too (the reply said nothing of it).
  write_config(config_text() +
               "bgp = { local_as = 65001; router_id = \"10.0.0.3\"; next_hop = \"10.0.0.1\";\n"
               "  neighbors = ( { address = \"10.0.0.254\"; as = 65000; } );\n"
               "  bird_config = \"" +
               (dir_ / "bird.conf").string() + "\"; bird_socket = \"" +
               (dir_ / "bird.ctl").string() + "\"; };\n");
  r = request({{"cmd", "config.reload"}});
  ASSERT_EQ(r["ok"], true) << r;
  const Json changes = r["changes"];
  EXPECT_NE(std::find(changes.begin(), changes.end(), Json("bgp.local_as set to 65001")),
            changes.end())
      << r;
  EXPECT_NE(std::find(changes.begin(), changes.end(),
                      Json("dataplane.flows.tcp_fin_timeout 20 -> 10: lbd reads it at its start "
                           "only (restart lbd to apply it)")),
            changes.end())
      << r;
}

TEST_F(ControlDaemonTest, SaveWritesThroughASymlinkedConfigFile) {
  // /etc/lbd/lbd.cfg -> a file a deployment manages: the save goes to that file and the link
  // stays (it used to be replaced by a regular file, leaving the target with the old text).
  const std::filesystem::path real = dir_ / "managed" / "edge1.cfg";
  std::filesystem::create_directories(real.parent_path());
  const std::string old = config_text();
  std::ofstream(real) << old;
  std::filesystem::remove(config_path_);
  std::filesystem::create_symlink("managed/edge1.cfg", config_path_);
  start();
  ASSERT_EQ(request({{"cmd", "backend.add"},
                     {"service", "web"},
                     {"backend", {{"address", "127.0.0.2"}, {"port", 1}}}})["ok"],
            true);
  const Json r = request({{"cmd", "config.save"}});
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_TRUE(std::filesystem::is_symlink(config_path_));
  EXPECT_EQ(std::filesystem::read_symlink(config_path_), "managed/edge1.cfg");
  EXPECT_EQ(services_to_json(cfg::load_config(real.string()).services), running_services());
  std::ifstream bak(r["backup"].get<std::string>());
  std::stringstream b;
  b << bak.rdbuf();
  EXPECT_EQ(b.str(), old);
  EXPECT_EQ(request({{"cmd", "config.diff"}})["changes"], Json::array());
}

TEST_F(ControlDaemonTest, SaveKeepsTheFilesOwnerGroupAndMode) {
  // An operators' group that may read the file (and a mode to match) must survive a save, for
  // the new file and for the .bak (the group used to be dropped).
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give the file to another owner and group";
  constexpr uid_t kUid = 4343;
  constexpr gid_t kGid = 4242;
  ASSERT_EQ(::chown(config_path_.c_str(), kUid, kGid), 0) << std::strerror(errno);
  ASSERT_EQ(::chmod(config_path_.c_str(), 0640), 0);
  start();
  ASSERT_EQ(request({{"cmd", "backend.add"},
                     {"service", "web"},
                     {"backend", {{"address", "127.0.0.2"}, {"port", 1}}}})["ok"],
            true);
  const Json r = request({{"cmd", "config.save"}});
  ASSERT_EQ(r["ok"], true) << r;
  for (const std::string& path : {config_path_, config_path_ + ".bak"}) {
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_uid, kUid) << path;
    EXPECT_EQ(st.st_gid, kGid) << path;
    EXPECT_EQ(st.st_mode & 07777, 0640u) << path;
  }
  EXPECT_EQ(services_to_json(cfg::load_config(config_path_).services), running_services());
}

// -- The command table drives help, the unknown command's error and docs/lbctl.md -------------

// A BIRD that answers each connection `delay` after it was made (a slow or stopped one).
class SlowBird {
 public:
  SlowBird(std::string path, Millis delay) : path_(std::move(path)), delay_(delay) {
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) ::close(c);
          return;
        }
        std::this_thread::sleep_for(delay_);
        const std::string hello = "0001 BIRD 2.0.12 ready.\n";
        (void)!::write(c, hello.data(), hello.size());
        char buf[256];
        if (::read(c, buf, sizeof buf) > 0) {
          ++requests_;
          const std::string reply = "0003 Reconfigured\n";
          (void)!::write(c, reply.data(), reply.size());
        }
        ::close(c);
      }
    });
  }
  ~SlowBird() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  int requests() const { return requests_; }

 private:
  std::string path_;
  Millis delay_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

// `node drain` has BIRD told: the loop does not wait for BIRD (every turn stays short, checks
// and other clients go on), but the reply does, so that it says whether BIRD has it.
TEST_F(ControlDaemonTest, NodeDrainIsAnsweredOnceBirdHasItWithoutHoldingTheLoop) {
  const std::string sock = (dir_ / "bird.ctl").string();
  SlowBird bird(sock, Millis(300));
  write_config(config_text() +
               "bgp = { local_as = 65001; router_id = \"10.0.0.3\"; next_hop = \"10.0.0.1\";\n"
               "  neighbors = ( { address = \"10.0.0.254\"; as = 65000; } );\n"
               "  announce_when = \"alive\"; bird_config = \"" +
               (dir_ / "bird.conf").string() + "\"; bird_socket = \"" + sock + "\"; };\n");
  start();
  // lbd alive (its heartbeat moves): the VIP is announced, once BIRD has it.
  uint64_t beat = 1;
  Millis longest{0};
  const auto turn = [&] {
    segment_->header().lbd_heartbeat_ms.store(++beat);
    const auto t0 = Clock::now();
    d_->turn(-1, Millis(5));
    longest = std::max(longest, std::chrono::duration_cast<Millis>(Clock::now() - t0));
    lbd_tick();
  };
  const auto announced = [&] {
    const DaemonStatus st = d_->snapshot();
    return st.bgp.in_bird && !st.bgp.vips.empty() && st.bgp.vips[0].announce;
  };
  for (auto end = Clock::now() + Millis(5000); Clock::now() < end && !announced();) turn();
  ASSERT_TRUE(announced());
  const int asked = bird.requests();

  longest = Millis(0);
  const auto t0 = Clock::now();
  const std::string line = "{\"cmd\":\"node.drain\"}\n";
  ASSERT_EQ(::send(client_, line.data(), line.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(line.size()));
  Json r;
  for (auto end = Clock::now() + Millis(5000); Clock::now() < end && r.is_null();) {
    turn();
    char buf[65536];
    const ssize_t n = ::recv(client_, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) buffer_.append(buf, static_cast<size_t>(n));
    if (const size_t nl = buffer_.find('\n'); nl != std::string::npos) {
      r = Json::parse(buffer_.substr(0, nl));
      buffer_.erase(0, nl + 1);
    }
  }
  const auto took = Clock::now() - t0;
  ASSERT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["node"]["state"], "draining");
  EXPECT_EQ(r["node"]["in_bird"], true) << r;
  EXPECT_EQ(r["node"]["vips"][0]["announced"], false);
  EXPECT_EQ(bird.requests(), asked + 1);
  EXPECT_GE(took, Millis(250));
  EXPECT_LT(longest, Millis(150));
}

// A reload that moves BIRD's files (another BIRD) has the old BIRD withdraw what it announced
// for us, and one that removes the bgp group keeps asking until BIRD has the withdrawal (it
// was tried once: a BIRD that was restarting kept announcing).
TEST_F(ControlDaemonTest, TheBirdLeftBehindWithdrawsEveryVipEvenIfItWasAway) {
  const auto bgp = [&](const std::string& bird) {
    return "bgp = { local_as = 65001; router_id = \"10.0.0.3\"; next_hop = \"10.0.0.1\";\n"
           "  neighbors = ( { address = \"10.0.0.254\"; as = 65000; } );\n"
           "  announce_when = \"alive\"; bird_config = \"" +
           (dir_ / (bird + ".conf")).string() + "\"; bird_socket = \"" +
           (dir_ / (bird + ".ctl")).string() + "\"; };\n";
  };
  const auto routes = [&](const std::string& bird) {
    std::ifstream in(dir_ / (bird + ".conf"));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("route 10.0.0.100/32") != std::string::npos;
  };
  uint64_t beat = 1;
  const auto turn = [&] {
    segment_->header().lbd_heartbeat_ms.store(++beat);
    d_->turn(-1, Millis(5));
    lbd_tick();
  };
  const auto until = [&](const std::function<bool()>& done) {
    for (auto end = Clock::now() + Millis(5000); Clock::now() < end && !done();) turn();
    return done();
  };
  auto a = std::make_unique<SlowBird>((dir_ / "a.ctl").string(), Millis(0));
  write_config(config_text() + bgp("a"));
  start();
  ASSERT_TRUE(until([&] { return d_->snapshot().bgp.in_bird && routes("a"); }));
  auto b = std::make_unique<SlowBird>((dir_ / "b.ctl").string(), Millis(0));
  const int asked_a = a->requests();
  write_config(config_text() + bgp("b"));
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  EXPECT_TRUE(until([&] { return !routes("a") && a->requests() > asked_a; }))
      << "the old BIRD was not told to withdraw";
  EXPECT_TRUE(until([&] { return d_->snapshot().bgp.in_bird && routes("b"); }));
  // BIRD b is away (restarting) when the group is removed: it gets the withdrawal once back.
  b.reset();
  write_config(config_text());
  ASSERT_EQ(request({{"cmd", "config.reload"}})["ok"], true);
  for (auto end = Clock::now() + Millis(1500); Clock::now() < end;) turn();
  EXPECT_FALSE(routes("b"));  // the file says so at once; BIRD could not be asked to read it
  b = std::make_unique<SlowBird>((dir_ / "b.ctl").string(), Millis(0));
  EXPECT_TRUE(until([&] { return b->requests() > 0; }))
      << "the withdrawal was not asked again once BIRD was back";
}

TEST_F(ControlDaemonTest, HelpListsEveryCommandOfTheTable) {
  start();
  const Json r = request({{"cmd", "help"}});
  ASSERT_TRUE(r.value("ok", false)) << r.dump();
  ASSERT_EQ(r["commands"].size(), commands().size());
  for (size_t i = 0; i < commands().size(); ++i) {
    EXPECT_EQ(r["commands"][i]["cmd"], std::string(commands()[i].name));
    EXPECT_EQ(r["commands"][i]["changes"], commands()[i].change != nullptr);
  }
  const Json backend_set = r["commands"][4];
  EXPECT_EQ(backend_set["cmd"], "backend.set");
  EXPECT_EQ(backend_set["fields"],
            Json::array({"service", "address", "port", "weight", "state", "initial_state"}));
  const Json unknown = request({{"cmd", "frob"}});
  for (const Command& c : commands()) {
    EXPECT_NE(unknown.value("error", std::string()).find(std::string(c.name)), std::string::npos)
        << c.name << " is missing from: " << unknown.dump();
  }
}

TEST(ControlProtocol, DocsTableIsTheCommandTable) {
  std::ifstream in(std::string(LB_SOURCE_DIR) + "/docs/lbctl.md");
  ASSERT_TRUE(in) << "docs/lbctl.md";
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const std::string begin_mark = "<!-- protocol table: generated from healthd/protocol.cc";
  const std::string end_mark = "<!-- end of protocol table -->";
  const size_t a = doc.find(begin_mark);
  const size_t b = doc.find(end_mark);
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(b, std::string::npos);
  const size_t start = doc.find('\n', a) + 1;
  if (std::getenv("LB_UPDATE_DOCS") != nullptr) {  // LB_UPDATE_DOCS=1 control_daemon_test
    std::ofstream(std::string(LB_SOURCE_DIR) + "/docs/lbctl.md")
        << doc.substr(0, start) + protocol_table_markdown() + doc.substr(b);
    return;
  }
  EXPECT_EQ(doc.substr(start, b - start), protocol_table_markdown())
      << "docs/lbctl.md's protocol table is out of date: run LB_UPDATE_DOCS=1 "
         "build/tests/lbctl/control_daemon_test --gtest_filter=ControlProtocol.*";
}

}  // namespace
}  // namespace lb::health
