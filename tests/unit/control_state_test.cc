// lb-healthd's runtime state (healthd/state_file.h): configuration <-> JSON <-> libconfig text,
// validation of runtime changes by the configuration library, error messages with names instead
// of indexes, the three-way merge of the file with runtime changes, the diff, the atomic write
// and the state file itself.

#include "state_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "daemon.h"
#include "source_dir.h"

namespace lb::health {
namespace {

using test::source_dir;

constexpr const char* kConfig = R"(
instance = "t1";
dataplane: { workers = 1; ports = (
  { name = "client"; device = "d0"; ip = "10.10.0.1/24"; },
  { name = "backend"; device = "d1"; ip = "10.20.0.1/24"; } ); };
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "wrr";
    health = { interval_ms = 2000; timeout_ms = 300; host = "www"; };
    backends = ( { address = "10.20.0.11"; port = 8080; weight = 2; },
                 { address = "10.20.0.12"; port = 8080; state = "drain"; initial_state = "down"; } ); },
  { name = "api"; vip = "10.10.0.101"; port = 443; backends = (); }
);
)";

cfg::Config base_config() {
  return cfg::parse_config(kConfig, "t.cfg");
}

// Runs an edit on the services of kConfig through build_config; the error text, or "" when
// accepted.
template <class F>
std::string edit_error(F&& edit) {
  const cfg::Config c = base_config();
  Json services = services_to_json(c.services);
  edit(services);
  try {
    build_config(c, services, "(runtime change)");
    return "";
  } catch (const cfg::ConfigError& e) {
    return describe_error(e, services);
  }
}

TEST(ControlState, ExamplesRoundTripThroughJsonAndText) {
  for (const char* name : {"minimal.cfg", "demo.cfg", "full.cfg"}) {
    SCOPED_TRACE(name);
    const cfg::Config c = cfg::load_config(source_dir() + "/config/examples/" + name);
    const Json j = config_to_json(c);
    const std::string text = to_libconfig(j, "x.cfg", "a header\nof two lines");
    EXPECT_EQ(text.rfind("# a header\n# of two lines\n", 0), 0u) << text;
    const cfg::Config back = cfg::parse_config(text, "x.cfg");
    EXPECT_EQ(config_to_json(back), j) << text;
  }
}

TEST(ControlState, CanonicalJsonHasEveryEffectiveValue) {
  const Json s = services_to_json(base_config().services);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0]["scheduler"], "wrr");
  EXPECT_EQ(s[0]["health"]["interval_ms"], 2000);
  EXPECT_EQ(s[0]["health"]["fast_interval_ms"], 2000);  // follows interval_ms in the file
  EXPECT_EQ(s[0]["health"]["host"], "www");
  EXPECT_FALSE(s[0]["health"].contains("expect_body"));  // unset stays unset
  EXPECT_EQ(s[0]["backends"][0],
            (Json{{"address", "10.20.0.11"}, {"port", 8080}, {"weight", 2}, {"state", "ready"}}));
  EXPECT_EQ(s[0]["backends"][1]["initial_state"], "down");
  EXPECT_EQ(s[1]["backends"], Json::array());
}

TEST(ControlState, SynFloodKeysRoundTripThroughJsonAndText) {
  cfg::Config c = base_config();
  EXPECT_FALSE(services_to_json(c.services)[0].contains("syn_flood_policy"));  // unset
  c.dataplane.flows.syn_budget = 20;
  c.dataplane.flows.tcp_syn_timeout_pressure = 2;
  c.dataplane.flows.syn_flood_policy = cfg::SynFloodPolicy::kDropNew;
  c.dataplane.flows.stateless_rate = 5000;
  c.services[0].scheduler = cfg::Scheduler::kMaglev;
  c.services[0].forward = cfg::Forward::kTunnel;
  c.services[0].syn_flood_policy = cfg::SynFloodPolicy::kStateless;
  c.services[1].syn_flood_policy = cfg::SynFloodPolicy::kEvictEmbryonic;
  const Json j = config_to_json(c);
  EXPECT_EQ(j["services"][0]["syn_flood_policy"], "stateless");
  const cfg::Config back = cfg::parse_config(to_libconfig(j, "x.cfg", ""), "x.cfg");
  EXPECT_EQ(back.services[0].syn_flood_policy, cfg::SynFloodPolicy::kStateless);
  EXPECT_EQ(back.services[1].syn_flood_policy, cfg::SynFloodPolicy::kEvictEmbryonic);
  EXPECT_EQ(back.dataplane.flows.syn_budget, 20u);
  EXPECT_EQ(back.dataplane.flows.tcp_syn_timeout_pressure, 2u);
  EXPECT_EQ(back.dataplane.flows.syn_flood_policy, cfg::SynFloodPolicy::kDropNew);
  EXPECT_EQ(back.dataplane.flows.stateless_rate, 5000u);
}

TEST(ControlState, ForwardRoundTripsThroughJsonAndText) {
  cfg::Config c = base_config();
  EXPECT_FALSE(services_to_json(c.services)[0].contains("forward"));  // the default, dnat
  // Full-NAT needs its local addresses, which the writer keeps with its port range.
  c.dataplane.fullnat_addresses = {0x0a140032, 0x0a140033};  // 10.20.0.50, .51
  c.dataplane.fullnat_port_first = 2000;
  c.dataplane.fullnat_port_last = 2999;
  for (const cfg::Forward f : {cfg::Forward::kTunnel, cfg::Forward::kFullnat}) {
    c.services[0].forward = f;
    const Json j = config_to_json(c);
    EXPECT_EQ(j["services"][0]["forward"], cfg::to_string(f));
    const cfg::Config back = cfg::parse_config(to_libconfig(j, "x.cfg", ""), "x.cfg");
    EXPECT_EQ(back.services[0].forward, f);
    EXPECT_EQ(back.services[1].forward, cfg::Forward::kDnat);
    EXPECT_EQ(back.dataplane.fullnat_addresses, c.dataplane.fullnat_addresses);
    EXPECT_EQ(back.dataplane.fullnat_port_first, 2000);
    EXPECT_EQ(back.dataplane.fullnat_port_last, 2999);
  }
}

TEST(ControlState, HealthdGroupRoundTrips) {
  const std::string text = std::string(kConfig) +
                           "healthd = { control_socket = \"/run/x.sock\"; socket_mode = \"0640\"; "
                           "socket_group = \"adm\"; state_file = \"s.json\"; "
                           "control_timeout_ms = 500; };\n";
  const cfg::Config c = cfg::parse_config(text, "t.cfg");
  const cfg::Config back = cfg::parse_config(to_libconfig(config_to_json(c), "x"), "x");
  EXPECT_EQ(back.healthd.control_socket, "/run/x.sock");
  EXPECT_EQ(back.healthd.socket_mode, 0640u);
  EXPECT_EQ(back.healthd.socket_group, "adm");
  EXPECT_EQ(back.healthd.state_file, "s.json");
  EXPECT_EQ(back.healthd.control_timeout_ms, 500u);
}

TEST(ControlState, ValidChangeIsAccepted) {
  EXPECT_EQ(edit_error([](Json& s) {
              s[0]["backends"].push_back({{"address", "10.20.0.13"}, {"port", 8080}});
            }),
            "");
  const cfg::Config c = base_config();
  Json s = services_to_json(c.services);
  s[1]["backends"].push_back({{"address", "10.20.0.14"}, {"port", 9000}, {"weight", 7}});
  const cfg::Config built = build_config(c, s, "(runtime)");
  EXPECT_EQ(built.file, "t.cfg");  // the file it stands for, not the generated text
  ASSERT_EQ(built.services[1].backends.size(), 1u);
  EXPECT_EQ(built.services[1].backends[0].weight, 7u);
  EXPECT_EQ(built.dataplane.ports.size(), 2u);
  EXPECT_EQ(built.instance, "t1");
}

TEST(ControlState, BadValuesAreRefusedWithTheLoadersWords) {
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["weight"] = 70000; }),
            "service 'web' backend 10.20.0.11:8080: weight: value 70000 is out of range 0..65535");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["weight"] = "3"; }),
            "service 'web' backend 10.20.0.11:8080: weight: expected an integer, found a string");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["weight"] = 1.5; }),
            "service 'web' backend 10.20.0.11:8080: weight: expected an integer, found a float");
  EXPECT_EQ(edit_error([](Json& s) {
              s[0]["backends"].push_back({{"address", "10.20.0.300"}, {"port", 80}});
            }),
            "service 'web' backend 10.20.0.300:80: address: malformed IPv4 address "
            "'10.20.0.300' (expected a.b.c.d, decimal, no leading zeros)");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["wieght"] = 1; }),
            "service 'web' backend 10.20.0.11:8080: wieght: unknown setting 'wieght' (did you "
            "mean 'weight'? allowed: address, port, weight, state, initial_state)");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["state"] = "down"; }),
            "service 'web' backend 10.20.0.11:8080: state: unknown state 'down' (expected "
            "ready, drain, maint)");
  EXPECT_EQ(edit_error([](Json& s) {
              s[0]["backends"].push_back({{"address", "10.20.0.11"}, {"port", 8080}});
            }),
            "service 'web' backend 10.20.0.11:8080: address: duplicate backend 10.20.0.11:8080");
  EXPECT_EQ(edit_error([](Json& s) {
              s[1]["vip"] = "10.10.0.100";
              s[1]["port"] = 80;
            }),
            "service 'api': vip: 10.10.0.100:80 is already used by service 'web'");
  EXPECT_EQ(edit_error([](Json& s) {
              s[1]["backends"].push_back({{"address", "192.168.1.5"}, {"port", 80}});
            }),
            "service 'api' backend 192.168.1.5:80: address: backend 192.168.1.5 is reachable "
            "through no port: it is in no port's subnet and no port has a gateway");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["health"]["interval_ms"] = 100; }),
            "service 'web': health.timeout_ms: timeout_ms 300 exceeds interval_ms 100");
  EXPECT_EQ(edit_error([](Json& s) {
              s.push_back({{"name", "x"}, {"vip", "10.10.0.9"}});
            }),
            "service 'x': port: missing required setting 'port'");
  EXPECT_EQ(edit_error([](Json& s) { s.push_back("web"); }),
            "service #3: expected a group { ... }, found a string");
}

TEST(ControlState, JsonWithoutAConfigSpellingIsRefused) {
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["weight"] = nullptr; }),
            "service 'web' backend 10.20.0.11:8080: weight: null is not a value (leave the "
            "setting out to use its default)");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["we ight"] = 1; }),
            "service 'web' backend 10.20.0.11:8080: we ight: unknown setting 'we ight' (not a "
            "setting name)");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["health"]["path"] = std::string("/a\0b", 4); }),
            "service 'web': health.path: the string contains a NUL byte");
  EXPECT_EQ(edit_error([](Json& s) {
              s[0]["health"]["passive"]["syn_rst"] = Json::parse("[[[[[[[[1]]]]]]]]");
            }),
            "service 'web': health.passive.syn_rst.[0].[0].[0].[0]: nested too deeply");
  EXPECT_EQ(edit_error([](Json& s) { s[0]["backends"][0]["port"] = 18446744073709551615ull; }),
            "service 'web' backend 10.20.0.11:18446744073709551615: port: integer "
            "18446744073709551615 does not fit in 64 bits");
  // A string is written with escapes and read back as it was.
  const cfg::Config c = base_config();
  Json s = services_to_json(c.services);
  s[0]["health"]["expect_body"] = "say \"hi\"\\\n\t\x01";
  EXPECT_EQ(build_config(c, s, "x").services[0].health.expect_body, "say \"hi\"\\\n\t\x01");
}

// A runtime change is held to the loader's limits (lb_limits.h) like the file.
TEST(ControlState, LimitsAreChecked) {
  const cfg::Config c = base_config();
  Json s = services_to_json(c.services);
  for (int i = 0; i < 257; ++i)
    s[1]["backends"].push_back({{"address", "10.20.0.50"}, {"port", 1000 + i}});
  try {
    build_config(c, s, "x");
    FAIL() << "257 backends accepted";
  } catch (const cfg::ConfigError& e) {
    EXPECT_EQ(describe_error(e, s),
              "service 'api': backends: 257 backends: at most 256 per service (what one pool "
              "update carries)");
  }
}

TEST(ControlState, PathsAreSaidWithNames) {
  const Json s = services_to_json(base_config().services);
  EXPECT_EQ(describe_path("services.[0].backends.[1].weight", s),
            "service 'web' backend 10.20.0.12:8080: weight");
  EXPECT_EQ(describe_path("services.[1].health.rise", s), "service 'api': health.rise");
  EXPECT_EQ(describe_path("services.[1]", s), "service 'api'");
  EXPECT_EQ(describe_path("services.[5].name", s), "service #6: name");
  EXPECT_EQ(describe_path("services.[0].backends.[9]", s), "service 'web' backend #10");
  EXPECT_EQ(describe_path("dataplane.workers", s), "dataplane.workers");
  EXPECT_EQ(describe_path("services", s), "services");
}

// -- Merge ---------------------------------------------------------------------------------

Json svc(const std::string& name, Json backends, Json extra = Json::object()) {
  Json s = {{"name", name},
            {"vip", "10.10.0.100"},
            {"port", 80},
            {"scheduler", "rr"},
            {"health", {{"path", "/h"}, {"interval_ms", 1000}}},
            {"backends", std::move(backends)}};
  s.merge_patch(extra);
  return s;
}

Json be(const std::string& addr, int weight = 1, const std::string& state = "ready") {
  return {{"address", addr}, {"port", 80}, {"weight", weight}, {"state", state}};
}

TEST(ControlMerge, NoRuntimeChangesMeansTheFile) {
  const Json base = Json::array({svc("web", {be("1.1.1.1"), be("1.1.1.2")})});
  const Json file = Json::array({svc("web", {be("1.1.1.2", 5), be("1.1.1.3")}), svc("api", {})});
  EXPECT_EQ(merge_services(base, file, base), file);
}

TEST(ControlMerge, RuntimeChangesTheFileLeavesAloneStay) {
  const Json base = Json::array({svc("web", {be("1.1.1.1"), be("1.1.1.2")})});
  // Runtime: a backend added, a weight changed, a service added, the scheduler changed.
  const Json running = Json::array(
      {svc("web", {be("1.1.1.1", 9), be("1.1.1.2"), be("1.1.1.9")}, {{"scheduler", "wrr"}}),
       svc("rt", {be("2.2.2.2")})});
  // The file: the health path changed, a backend's state changed, a service added.
  const Json file = Json::array(
      {svc("web", {be("1.1.1.1"), be("1.1.1.2", 1, "drain")}, {{"health", {{"path", "/new"}}}}),
       svc("api", {})});
  const Json m = merge_services(base, file, running);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0]["name"], "web");
  EXPECT_EQ(m[0]["scheduler"], "wrr");             // runtime
  EXPECT_EQ(m[0]["health"]["path"], "/new");       // file
  EXPECT_EQ(m[0]["health"]["interval_ms"], 1000);  // untouched
  EXPECT_EQ(m[0]["backends"],
            Json::array({be("1.1.1.1", 9), be("1.1.1.2", 1, "drain"), be("1.1.1.9")}));
  EXPECT_EQ(m[1]["name"], "api");  // the file's order first ...
  EXPECT_EQ(m[2]["name"], "rt");   // ... then what only runs
}

TEST(ControlMerge, TheFileWinsWhereBothChanged) {
  const Json base = Json::array({svc("web", {be("1.1.1.1")})});
  const Json running = Json::array({svc("web", {be("1.1.1.1", 3)})});
  const Json file = Json::array({svc("web", {be("1.1.1.1", 5)})});
  EXPECT_EQ(merge_services(base, file, running)[0]["backends"][0]["weight"], 5);
}

TEST(ControlMerge, RemovalsOnEitherSide) {
  const Json base = Json::array({svc("web", {be("1.1.1.1"), be("1.1.1.2")}), svc("old", {})});
  // Runtime removed backend .2 and the service "old"; the file removed backend .1.
  const Json running = Json::array({svc("web", {be("1.1.1.1")})});
  Json file = Json::array({svc("web", {be("1.1.1.2")}), svc("old", {})});
  Json m = merge_services(base, file, running);
  ASSERT_EQ(m.size(), 1u);  // "old" stays removed: the file did not touch it
  EXPECT_EQ(m[0]["backends"], Json::array());
  // The file changes what the runtime removed: it comes back, as the file says.
  file = Json::array({svc("web", {be("1.1.1.2", 4)}), svc("old", {}, {{"port", 81}})});
  m = merge_services(base, file, running);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0]["backends"], Json::array({be("1.1.1.2", 4)}));
  EXPECT_EQ(m[1]["port"], 81);
  // The file removes a service the runtime changed: it goes.
  const Json running2 =
      Json::array({svc("web", {be("1.1.1.1"), be("1.1.1.2")}), svc("old", {be("3.3.3.3")})});
  m = merge_services(base, Json::array({svc("web", {be("1.1.1.1"), be("1.1.1.2")})}), running2);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0]["name"], "web");
}

TEST(ControlMerge, KeysTheFileAddsOrDropsFollowTheFile) {
  const Json base = Json::array({svc("web", {}, {{"health", {{"host", "a"}}}})});
  const Json running = Json::array({svc("web", {}, {{"health", {{"host", "a"}}}, {"port", 81}})});
  const Json file = Json::array({svc("web", {}, {{"health", {{"host", nullptr}, {"port", 9}}}})});
  const Json m = merge_services(base, file, running);
  EXPECT_FALSE(m[0]["health"].contains("host"));
  EXPECT_EQ(m[0]["health"]["port"], 9);
  EXPECT_EQ(m[0]["port"], 81);
}

TEST(ControlDiff, SaysWhatChanged) {
  const Json a = Json::array({svc("web", {be("1.1.1.1"), be("1.1.1.2")}), svc("old", {})});
  const Json b = Json::array({svc("web", {be("1.1.1.1", 3), be("1.1.1.3")},
                                  {{"scheduler", "wrr"}, {"health", {{"path", "/x y"}}}}),
                              svc("new", {be("9.9.9.9")})});
  const std::vector<std::string> d = diff_services(a, b);
  const std::vector<std::string> expected = {
      "service old removed",
      "service web: health.path /h -> \"/x y\"",
      "service web: scheduler rr -> wrr",
      "service web: backend 1.1.1.2:80 removed",
      "service web: backend 1.1.1.1:80: weight 1 -> 3",
      "service web: backend 1.1.1.3:80 added (weight 1, ready)",
      "service new added (10.10.0.100:80, 1 backend(s))"};
  EXPECT_EQ(d, expected);
  EXPECT_TRUE(diff_services(a, a).empty());
  // A value with control characters is shown escaped: one line, nothing for a terminal to obey
  // (expect_body "a\x01\x1b[2J" showed as "a" and cleared the screen).
  const Json c = Json::array(
      {svc("web", {be("1.1.1.1"), be("1.1.1.2")}, {{"health", {{"expect_body", "a\x01\x1b[2J"}}}}),
       svc("old", {})});
  EXPECT_EQ(
      diff_services(a, c),
      std::vector<std::string>{"service web: health.expect_body set to \"a\\u0001\\u001b[2J\""});
}

// -- Files ---------------------------------------------------------------------------------

class ControlFiles : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(testing::TempDir()) /
           ("control_state_" + std::to_string(getpid()) + "_" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string read(const std::string& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::filesystem::path dir_;
};

TEST_F(ControlFiles, AtomicWriteReplacesWholeAndLeavesNothingBehind) {
  const std::string p = path("f");
  write_file_atomic(p, "one\n", 0600);
  EXPECT_EQ(read(p), "one\n");
  struct stat st {};
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  write_file_atomic(p, "two\n", 0640);
  EXPECT_EQ(read(p), "two\n");
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1u);
  // Without the fsyncs: the same whole replacement, mode and nothing left behind.
  write_file_atomic(p, "three\n", 0600, std::nullopt, Durability::kAtomicOnly);
  EXPECT_EQ(read(p), "three\n");
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1u);
  try {
    write_file_atomic(path("missing/f"), "x", 0600);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path("missing/f")), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos);
  }
}

TEST_F(ControlFiles, StateFileRoundTripsAndRefusesGarbage) {
  EXPECT_FALSE(read_state(path("none")).has_value());
  const Json base = services_to_json(base_config().services);
  Json running = base;
  running[1]["backends"].push_back(be("10.20.0.20"));
  write_file_atomic(path("s"), format_state(RuntimeState{base, running}, "t.cfg"), 0600);
  const std::optional<RuntimeState> st = read_state(path("s"));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->base, base);
  EXPECT_EQ(st->running, running);
  // Refused with what to do (lb-healthd does not start with it), in words of its own.
  std::ofstream(path("bad")) << "{ not json";
  try {
    read_state(path("bad"));
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              path("bad") +
                  ": not a lb-healthd state file: parse error at line 1, column 4: syntax error "
                  "while parsing object key - invalid literal; last read: '{ no'; expected string "
                  "literal (move it away to start from the config file alone: the runtime "
                  "changes it kept are then lost)");
  }
  std::ofstream(path("other")) << R"({"lb_healthd_state": 2, "base": [], "running": []})";
  try {
    read_state(path("other"));
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not a lb-healthd state file"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("(move it away to start from the config file alone"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(ControlFiles, StartupMergesTheStateWithTheFile) {
  const cfg::Config file = base_config();
  // No state file: the file as it is.
  Startup s = load_startup(file, path("state"));
  EXPECT_FALSE(s.from_state);
  EXPECT_EQ(services_to_json(s.running.services), services_to_json(file.services));

  // A runtime change kept: it is back, with the file's other settings.
  const Json base = services_to_json(file.services);
  Json running = base;
  running[1]["backends"].push_back(be("10.20.0.20"));
  write_file_atomic(path("state"), format_state(RuntimeState{base, running}, "t.cfg"), 0600);
  s = load_startup(file, path("state"));
  EXPECT_TRUE(s.from_state);
  EXPECT_FALSE(s.base_moved);
  ASSERT_EQ(s.running.services[1].backends.size(), 1u);
  EXPECT_EQ(s.changes,
            std::vector<std::string>{"service api: backend 10.20.0.20:80 added (weight 1, ready)"});
  EXPECT_EQ(s.base, base);

  // The file changed meanwhile in a way that collides with the runtime change.
  const cfg::Config moved = cfg::parse_config(
      std::string(kConfig).replace(std::string(kConfig).find("10.10.0.101"), 11, "10.20.0.20"),
      "t.cfg");
  try {
    load_startup(moved, path("state"));
    FAIL() << "a state that no longer fits was accepted";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path("state")), std::string::npos) << what;
    EXPECT_NE(what.find("is the VIP of service 'api'"), std::string::npos) << what;
  }

  // A state file that is not one.
  std::ofstream(path("state")) << "garbage";
  EXPECT_THROW(load_startup(file, path("state")), std::runtime_error);
}

TEST(ControlConfigKeys, DefaultPaths) {
  cfg::Config c = base_config();
  EXPECT_EQ(cfg::control_socket_path(c), "/run/lbd/t1.sock");
  EXPECT_EQ(cfg::control_socket_path(c, "other"), "/run/lbd/other.sock");
  EXPECT_EQ(cfg::state_file_path(c, "/etc/lbd/lbd.cfg"), "/etc/lbd/lbd.cfg.state");
  c.healthd.state_file = "run/x.state";
  EXPECT_EQ(cfg::state_file_path(c, "/etc/lbd/lbd.cfg"), "/etc/lbd/run/x.state");
  EXPECT_EQ(cfg::state_file_path(c, "lbd.cfg"), "run/x.state");
  c.healthd.state_file = "";
  EXPECT_EQ(cfg::state_file_path(c, "/etc/lbd/lbd.cfg"), "");
  c.healthd.control_socket = "";
  EXPECT_EQ(cfg::control_socket_path(c), "");
}

}  // namespace
}  // namespace lb::health
