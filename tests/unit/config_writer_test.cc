// The configuration writer (config/writer.h) against the parser: parse -> write -> parse gives the
// same configuration, and every key of the parser's schema (config/schema.h) is written. A key
// added to the parser but not to the writer fails EveryKeyIsWritten (after it is set in kEveryKey).

#include "writer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>

#include "schema.h"
#include "source_dir.h"

namespace lb::cfg {
namespace {

using test::source_dir;

// Every key of the schema, each set to a value that is not its default (the writer leaves some
// defaults out).
constexpr const char* kEveryKey = R"(
instance = "every";
dataplane = {
  workers = 2;
  mbufs = 32767;
  ports = (
    { name = "client"; device = "net_ring0"; ip = "10.10.0.1/24"; gateway = "10.10.0.254";
      rx_descriptors = 512; tx_descriptors = 2048; vip_arp = "all"; },
    { name = "backend"; device = "net_ring1"; ip = "10.20.0.1/24"; vip_arp = "none"; }
  );
  flows = { capacity = 4096; tcp_syn_timeout = 6; tcp_established_timeout = 600;
            tcp_fin_timeout = 11; tcp_closed_timeout = 4; persist = false;
            directory = "/dev/shm"; syn_budget = 40; tcp_syn_timeout_pressure = 2;
            syn_flood_policy = "drop-new"; stateless_rate = 5000; };
  retry = { on_rst = false; syn_timeout_ms = 2000; max_retries = 3; };
  miss_policy = "rst";
  no_backend_policy = "drop";
  maglev_hash_seed = 12345;
  idle = { mode = "sleep"; after_empty_polls = 500; max_sleep_us = 100; };
  fullnat_addresses = [ "10.20.0.5" ];
  fullnat_ports = [ 2000, 60000 ];
};
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80; protocol = "tcp"; scheduler = "maglev";
    forward = "tunnel"; maglev_table_size = 257; miss_policy = "drop";
    syn_flood_policy = "stateless"; on_all_down = "fail_open"; maint = "drop";
    health = { path = "/hc"; interval_ms = 2000; timeout_ms = 300; rise = 3; fall = 4;
               expect_status = "200-204"; fast_interval_ms = 500; down_interval_ms = 5000;
               jitter_pct = 20; expect_body = "ok"; host = "www"; port = 8081;
               initial_state = "down"; passive = { syn_rst = 5; syn_timeout = 6; }; };
    backends = ( { address = "10.20.0.11"; port = 8080; weight = 2; state = "drain";
                   initial_state = "up"; } ); }
);
healthd = { control_socket = "/run/every.sock"; socket_mode = "0600"; socket_owner = "root";
            socket_group = "0"; state_file = "s.json"; control_timeout_ms = 5000;
            drain_timeout_ms = 1000; metrics_listen = "127.0.0.1:9900"; };
bgp = { local_as = 65001; router_id = "10.10.0.1"; next_hop = "10.10.0.1";
        neighbors = ( { address = "10.10.0.254"; as = 65000; } ); hold_time = 30;
        communities = [ "65000:100" ]; med = 10; announce_when = "alive";
        lbd_timeout_ms = 2000; bird_config = "/run/every-bird.conf";
        bird_socket = "/run/every-bird.ctl"; };
)";

// The setting paths of a JSON configuration, list elements as "[]": "services.[].health.path".
void collect_paths(const Json& j, const std::string& path, std::set<std::string>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string p = path.empty() ? it.key() : path + "." + it.key();
      out.insert(p);
      collect_paths(it.value(), p, out);
    }
  } else if (j.is_array()) {
    for (const Json& e : j) collect_paths(e, path + ".[]", out);
  }
}

// parse -> write -> parse: the configuration read back is the one written, and writing it again
// gives the same text.
void expect_round_trip(const Config& c) {
  const std::string text = to_libconfig(config_to_json(c), "x.cfg");
  const Config back = parse_config(text, "x.cfg");
  EXPECT_EQ(config_to_json(back), config_to_json(c)) << text;
  EXPECT_EQ(to_libconfig(config_to_json(back), "x.cfg"), text);
}

TEST(ConfigWriter, EveryKeyIsWritten) {
  const Config c = parse_config(kEveryKey, "every.cfg");
  std::set<std::string> written;
  collect_paths(config_to_json(c), "", written);
  for (const schema::GroupKeys& g : schema::groups()) {
    for (const std::string_view key : g.keys) {
      const std::string path =
          g.path.empty() ? std::string(key) : std::string(g.path) + "." + std::string(key);
      EXPECT_EQ(written.count(path), 1u)
          << path << " is a key of the parser's schema that the writer does not write (or "
          << "kEveryKey does not set it to a value other than its default)";
    }
  }
  // And nothing the schema does not know.
  std::set<std::string> known;
  for (const schema::GroupKeys& g : schema::groups()) {
    for (const std::string_view key : g.keys)
      known.insert(g.path.empty() ? std::string(key)
                                  : std::string(g.path) + "." + std::string(key));
  }
  for (const std::string& path : written) EXPECT_EQ(known.count(path), 1u) << path;
}

TEST(ConfigWriter, EveryKeyRoundTrips) {
  const Config c = parse_config(kEveryKey, "every.cfg");
  expect_round_trip(c);
  const Config back = parse_config(to_libconfig(config_to_json(c), "x.cfg"), "x.cfg");
  // Spot checks of what config_to_json leaves out at its default, read back from the text.
  EXPECT_EQ(back.dataplane.ports[0].vip_arp, VipArp::kAll);
  EXPECT_EQ(back.dataplane.ports[1].vip_arp, VipArp::kNone);
  EXPECT_FALSE(back.dataplane.flows.persist);
  EXPECT_EQ(back.dataplane.flows.directory, "/dev/shm");
  ASSERT_TRUE(back.bgp.enabled());
  EXPECT_EQ(back.bgp.local_as, 65001u);
  ASSERT_EQ(back.bgp.neighbors.size(), 1u);
  EXPECT_EQ(back.bgp.neighbors[0].as, 65000u);
  EXPECT_EQ(back.bgp.communities, (std::vector<std::pair<uint16_t, uint16_t>>{{65000, 100}}));
  EXPECT_EQ(back.bgp.med, 10u);
  EXPECT_EQ(back.bgp.announce_when, AnnounceWhen::kAlive);
  EXPECT_EQ(back.bgp.bird_socket, "/run/every-bird.ctl");
}

TEST(ConfigWriter, ExamplesRoundTrip) {
  for (const char* name : {"minimal.cfg", "demo.cfg", "full.cfg"}) {
    SCOPED_TRACE(name);
    expect_round_trip(load_config(source_dir() + "/config/examples/" + name));
  }
}

TEST(ConfigWriter, KeysInSchemaOrder) {
  const Config c = parse_config(kEveryKey, "every.cfg");
  const std::string text = to_libconfig(config_to_json(c), "x.cfg", "saved");
  EXPECT_EQ(text.rfind("# saved\ninstance = \"every\";\ndataplane = {\n  workers = 2;\n", 0), 0u)
      << text;
  EXPECT_LT(text.find("  maint = \"drop\";"), text.find("  health = {")) << text;
  EXPECT_LT(text.find("  health = {"), text.find("  backends = (")) << text;
  EXPECT_LT(text.find("services = ("), text.find("bgp = {")) << text;
}

TEST(ConfigWriter, UnknownKeysFollowForTheParserToRefuse) {
  Json j = config_to_json(parse_config(kEveryKey, "every.cfg"));
  j["dataplane"]["workerz"] = 3;
  const std::string text = to_libconfig(j, "x.cfg");
  EXPECT_GT(text.find("  workerz = 3;"), text.find("  fullnat_ports = ")) << text;
  try {
    parse_config(text, "x.cfg");
    ADD_FAILURE() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "dataplane.workerz");
  }
}

}  // namespace
}  // namespace lb::cfg
