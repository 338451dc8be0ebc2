// Tests for the configuration library (config/lb_config.h): the shipped examples, defaults, every
// validation rule (each with the exact line and setting path it must report), and the address
// helpers.

#include "lb_config.h"
#include "source_dir.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace lb::cfg {
namespace {

using test::source_dir;

std::string example(std::string_view name) {
  return source_dir() + "/config/examples/" + std::string(name);
}

constexpr uint32_t ip(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

// A valid file whose lines the bad cases below replace; the numbered copy in the comment is what
// their expected line numbers refer to. Lines 7, 11 and 17 are placeholders for additions.
// clang-format off
//  1 dataplane: {
//  2   workers = 2;
//  3   ports = (
//  4     { name = "client"; ... ip = "10.10.0.1/24"; },
//  5     { name = "backend"; ... ip = "10.20.0.1/24"; }
//  6   );
//  7   # dataplane extra
//  8 };
//  9 services = (
// 10   { name = "web"; vip = "10.10.0.100"; port = 80;
// 11     # service extra
// 12     backends = (
// 13       { address = "10.20.0.11"; port = 8080; },
// 14       { address = "10.20.0.12"; port = 8080; }
// 15     ); }
// 16 );
// 17 # top-level extra
constexpr std::string_view kBase = R"(dataplane: {
  workers = 2;
  ports = (
    { name = "client"; device = "net_af_packet0,iface=lb-c"; ip = "10.10.0.1/24"; },
    { name = "backend"; device = "net_af_packet1,iface=lb-b"; ip = "10.20.0.1/24"; }
  );
  # dataplane extra
};
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80;
    # service extra
    backends = (
      { address = "10.20.0.11"; port = 8080; },
      { address = "10.20.0.12"; port = 8080; }
    ); }
);
# top-level extra
)";
// clang-format on

// kBase with lines first..last (1-based, inclusive) replaced by `text` (which may span lines).
std::string replace_lines(int first, int last, std::string_view text) {
  std::istringstream in{std::string(kBase)};
  std::string out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (n == first) out += std::string(text) + "\n";
    if (n < first || n > last) out += line + "\n";
  }
  return out;
}

constexpr std::string_view kName = "test.cfg";

Config parse(const std::string& text) {
  return parse_config(text, std::string(kName));
}

TEST(ConfigBase, IsValid) {
  // Every bad case is a one-place edit of this text, so it must itself be accepted.
  const Config c = parse(std::string(kBase));
  EXPECT_EQ(c.file, kName);
  EXPECT_EQ(c.dataplane.workers, 2u);
  EXPECT_EQ(c.dataplane.line, 1);
  ASSERT_EQ(c.dataplane.ports.size(), 2u);
  EXPECT_EQ(c.dataplane.ports[1].line, 5);
  ASSERT_EQ(c.services.size(), 1u);
  EXPECT_EQ(c.services[0].line, 10);
  ASSERT_EQ(c.services[0].backends.size(), 2u);
  EXPECT_EQ(c.services[0].backends[0].line, 13);
  EXPECT_EQ(c.services[0].backends[1].address, ip(10, 20, 0, 12));
}

// -------------------------------------------------------------------------------------------
// Bad inputs.

struct BadCase {
  const char* label;
  int first;  // lines of kBase to replace; 0 = `text` is the whole file
  int last;
  const char* text;
  int line;             // expected ConfigError::line()
  const char* path;     // expected ConfigError::path(), exactly
  const char* message;  // expected substring of what()
};

// gtest finds this by name to print a case in failure messages.
void PrintTo(const BadCase& c, std::ostream* os) {  // NOLINT(readability-identifier-naming)
  *os << c.label;
}

class BadConfig : public testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, IsRejectedWithLineAndPath) {
  const BadCase& c = GetParam();
  const std::string text =
      c.first == 0 ? std::string(c.text) : replace_lines(c.first, c.last, c.text);
  try {
    parse(text);
    FAIL() << "accepted:\n" << text;
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    RecordProperty("what", what);  // shows the full message in --gtest_output=xml reports
    EXPECT_EQ(e.file(), kName) << what;
    EXPECT_EQ(e.line(), c.line) << what;
    EXPECT_EQ(e.path(), c.path) << what;
    EXPECT_NE(what.find(c.message), std::string::npos) << what;
    // The documented shape: "file:line: path: message", or "file:line: message" without a path.
    std::string prefix = std::string(kName) + ":" + std::to_string(c.line) + ": ";
    if (*c.path != '\0') prefix += std::string(c.path) + ": ";
    EXPECT_EQ(what.rfind(prefix, 0), 0u) << what;
  }
}

// clang-format off
constexpr BadCase kBadCases[] = {
  // --- File-level: syntax, structure, top-level keys.
  {"syntax_error", 2, 2, "  workers = 2 3;", 2, "", "syntax error"},
  {"syntax_error_unclosed_group", 0, 0, "dataplane: {\n  workers = 1;\n", 3, "", "syntax error"},
  {"duplicate_key", 7, 7, "  workers = 3;", 7, "", "duplicate setting name"},
  // Which file, and why (libconfig says only "cannot open include file").
  {"include_missing", 17, 17, R"(@include "no-such-file.cfg")", 17, "", "cannot open include file \"no-such-file.cfg\" (no-such-file.cfg: No such file or directory)"},
  // libconfig reads a byte order mark as a syntax error.
  {"utf8_bom", 1, 1, "\xEF\xBB\xBF" "dataplane: {", 1, "", "the file starts with a UTF-8 byte order mark (EF BB BF): save it without one"},
  {"missing_dataplane", 0, 0, "services = ();\n", 0, "dataplane", "missing required setting 'dataplane'"},
  {"missing_services", 9, 16, "", 0, "services", "missing required setting 'services'"},
  {"unknown_top_level", 17, 17, "servics = ();", 17, "servics", "unknown setting 'servics' (did you mean 'services'?"},
  {"dataplane_not_group", 1, 8, "dataplane = 1;", 1, "dataplane", "expected a group { ... }, found an integer"},

  // --- dataplane scalars.
  {"unknown_key_typo", 2, 2, "  workerz = 2;", 2, "dataplane.workerz", "unknown setting 'workerz' (did you mean 'workers'? allowed: workers, mbufs, ports, flows, retry, miss_policy, no_backend_policy, maglev_hash_seed, idle, fullnat_addresses, fullnat_ports)"},
  {"missing_workers", 2, 2, "", 1, "dataplane.workers", "missing required setting 'workers'"},
  {"fullnat_outside_subnets", 7, 7, R"(  fullnat_addresses = ["10.30.0.5"];)", 7, "dataplane.fullnat_addresses.[0]", "10.30.0.5 is in no port's subnet"},
  {"fullnat_twice", 7, 7, R"(  fullnat_addresses = ["10.20.0.50", "10.20.0.50"];)", 7, "dataplane.fullnat_addresses.[1]", "10.20.0.50 is listed twice"},
  {"fullnat_broadcast", 7, 7, R"(  fullnat_addresses = ["10.20.0.255"];)", 7, "dataplane.fullnat_addresses.[0]", "is the broadcast address of 10.20.0.0/24"},
  {"fullnat_is_vip", 7, 7, R"(  fullnat_addresses = ["10.10.0.100"];)", 7, "dataplane.fullnat_addresses.[0]", "10.10.0.100 is the VIP of service 'web'"},
  {"fullnat_is_backend", 7, 7, R"(  fullnat_addresses = ["10.20.0.12"];)", 7, "dataplane.fullnat_addresses.[0]", "10.20.0.12 is a backend of service 'web'"},
  {"fullnat_not_list", 7, 7, R"(  fullnat_addresses = "10.20.0.50";)", 7, "dataplane.fullnat_addresses", "expected a list of IPv4 addresses"},
  {"fullnat_service_without_addresses", 11, 11, R"(    forward = "fullnat";)", 10, "services.[0]", "forward = \"fullnat\" needs dataplane.fullnat_addresses"},
  {"fullnat_ports_shape", 7, 7, R"(  fullnat_ports = [1024];)", 7, "dataplane.fullnat_ports", "expected [first, last]"},
  {"fullnat_ports_one_per_worker", 7, 7, R"(  fullnat_ports = [2000, 2000];)", 7, "dataplane.fullnat_ports", "ports 2000..2000 leave some of the 2 workers no port"},
  {"workers_string", 2, 2, R"(  workers = "2";)", 2, "dataplane.workers", "expected an integer, found a string"},
  {"workers_float", 2, 2, "  workers = 2.0;", 2, "dataplane.workers", "expected an integer, found a float"},
  {"workers_bool", 2, 2, "  workers = true;", 2, "dataplane.workers", "expected an integer, found a boolean"},
  {"workers_too_many", 2, 2, "  workers = 65;", 2, "dataplane.workers", "value 65 is out of range 1..64"},
  {"workers_zero", 2, 2, "  workers = 0;", 2, "dataplane.workers", "value 0 is out of range 1..64"},
  {"workers_negative", 2, 2, "  workers = -1;", 2, "dataplane.workers", "value -1 is out of range 1..64"},
  {"workers_int64_too_many", 2, 2, "  workers = 65L;", 2, "dataplane.workers", "value 65 is out of range 1..64"},
  // libconfig 1.5 wraps these to 2, 16383 and 1024: they must not be taken as such.
  {"workers_wraps_32_bits", 2, 2, "  workers = 4294967298;", 2, "dataplane.workers", "value 4294967298 is out of range 1..64"},
  {"mbufs_hex_wraps", 7, 7, "  mbufs = 0x100003FFF;", 7, "dataplane.mbufs", "value 0x100003FFF is out of range 1023..4194303"},
  {"capacity_wraps_same_line", 7, 7, "  flows = { tcp_fin_timeout = 10; capacity = 4294968320; };", 7, "dataplane.flows.capacity", "value 4294968320 is out of range 1024..67108864"},
  {"workers_wraps_comment", 2, 2, "  workers = 4294967298; # workers = 2", 2, "dataplane.workers", "value 4294967298 is out of range 1..64"},
  {"workers_wraps_string", 2, 2, R"(  workers = 4294967298; mbufs = 1023; # "workers = 2")", 2, "dataplane.workers", "value 4294967298 is out of range 1..64"},
  {"workers_beyond_64_bits", 2, 2, "  workers = 99999999999999999999;", 2, "dataplane.workers", "does not fit in 64 bits"},
  {"mbufs_too_few", 7, 7, "  mbufs = 1022;", 7, "dataplane.mbufs", "value 1022 is out of range 1023..4194303"},
  {"miss_policy_unknown", 7, 7, R"(  miss_policy = "reset";)", 7, "dataplane.miss_policy", "unknown miss_policy 'reset' (expected drop, rst)"},
  {"no_backend_policy_unknown", 7, 7, R"(  no_backend_policy = "ignore";)", 7, "dataplane.no_backend_policy", "unknown no_backend_policy 'ignore' (expected rst, drop)"},
  {"policy_not_string", 7, 7, "  miss_policy = 1;", 7, "dataplane.miss_policy", "expected a string, found an integer"},

  // --- flows and retry.
  {"flows_not_group", 7, 7, "  flows = 5;", 7, "dataplane.flows", "expected a group { ... }, found an integer"},
  {"flows_unknown_key", 7, 7, "  flows = { idle_timeout = 5; };", 7, "dataplane.flows.idle_timeout", "unknown setting 'idle_timeout'"},
  {"flows_capacity_small", 7, 7, "  flows = { capacity = 1000; };", 7, "dataplane.flows.capacity", "value 1000 is out of range 1024..67108864"},
  {"flows_timeout_zero", 7, 7, "  flows = {\n    tcp_fin_timeout = 0;\n  };", 8, "dataplane.flows.tcp_fin_timeout", "value 0 is out of range 1..86400"},
  {"syn_budget_zero", 7, 7, "  flows = {\n    syn_budget = 0;\n  };", 8, "dataplane.flows.syn_budget", "value 0 is out of range 1..100"},
  {"syn_budget_over", 7, 7, "  flows = { syn_budget = 101; };", 7, "dataplane.flows.syn_budget", "value 101 is out of range 1..100"},
  {"syn_flood_policy_unknown", 7, 7, "  flows = {\n\n    syn_flood_policy = \"stateless\";\n  };", 9, "dataplane.flows.syn_flood_policy", "stateless"},
  {"flows_timeout_long", 7, 7, "  flows = { tcp_established_timeout = 86401; };", 7, "dataplane.flows.tcp_established_timeout", "out of range 1..86400"},
  {"flows_directory_relative", 7, 7, "  flows = { directory = \"dev/shm\"; };", 7, "dataplane.flows.directory", "expected an absolute directory path (e.g. \"/dev/hugepages\"), found 'dev/shm'"},
  {"flows_persist_not_bool", 7, 7, "  flows = { persist = 1; };", 7, "dataplane.flows.persist", "expected"},
  {"retry_syn_timeout_small", 7, 7, "  retry = { syn_timeout_ms = 50; };", 7, "dataplane.retry.syn_timeout_ms", "value 50 is out of range 100..60000"},
  {"retry_max_retries", 7, 7, "  retry = { max_retries = 9; };", 7, "dataplane.retry.max_retries", "value 9 is out of range 0..8"},
  {"retry_on_rst_int", 7, 7, "  retry = { on_rst = 1; };", 7, "dataplane.retry.on_rst", "expected a boolean, found an integer"},
  {"retry_unknown_key", 7, 7, "  retry = { on_fin = true; };", 7, "dataplane.retry.on_fin", "unknown setting 'on_fin'"},

  // --- ports.
  {"ports_empty", 3, 6, "  ports = ();", 3, "dataplane.ports", "expected 1..16 ports, found 0"},
  {"ports_group", 3, 6, "  ports = { };", 3, "dataplane.ports", "expected a list ( ... ), found a group { ... }"},
  {"port_not_group", 3, 6, R"(  ports = ( "eth0" );)", 3, "dataplane.ports.[0]", "expected a group { ... }, found a string"},
  {"port_unknown_key", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24"; gatway = "10.20.0.254"; })", 5, "dataplane.ports.[1].gatway", "did you mean 'gateway'?"},
  {"port_missing_ip", 5, 5, R"(    { name = "backend"; device = "net_af_packet1,iface=lb-b"; })", 5, "dataplane.ports.[1].ip", "missing required setting 'ip'"},
  {"port_missing_name_multiline", 5, 5, "    {\n      device = \"net_af_packet1\"; ip = \"10.20.0.1/24\";\n    }", 5, "dataplane.ports.[1].name", "missing required setting 'name'"},
  {"port_bad_name", 5, 5, R"(    { name = "back end"; device = "net_af_packet1"; ip = "10.20.0.1/24"; })", 5, "dataplane.ports.[1].name", "invalid name 'back end'"},
  {"port_empty_name", 5, 5, R"(    { name = ""; device = "net_af_packet1"; ip = "10.20.0.1/24"; })", 5, "dataplane.ports.[1].name", "invalid name ''"},
  {"port_empty_device", 5, 5, R"(    { name = "backend"; device = ""; ip = "10.20.0.1/24"; })", 5, "dataplane.ports.[1].device", "must not be empty"},
  {"port_ip_malformed", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.300/24"; })", 5, "dataplane.ports.[1].ip", "malformed IPv4 address '10.20.0.300'"},
  {"port_ip_no_prefix", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1"; })", 5, "dataplane.ports.[1].ip", "expected address/prefix-length"},
  {"port_prefix_33", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/33"; })", 5, "dataplane.ports.[1].ip", "prefix length must be 1..32, found '33'"},
  {"port_prefix_0", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/0"; })", 5, "dataplane.ports.[1].ip", "prefix length must be 1..32, found '0'"},
  {"port_prefix_junk", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24x"; })", 5, "dataplane.ports.[1].ip", "prefix length must be 1..32, found '24x'"},
  {"port_ip_network", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.0/24"; })", 5, "dataplane.ports.[1].ip", "10.20.0.0 is the network address of 10.20.0.0/24"},
  {"port_ip_broadcast", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.255/24"; })", 5, "dataplane.ports.[1].ip", "10.20.0.255 is the broadcast address of 10.20.0.0/24"},
  {"port_ip_broadcast_30", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.3/30"; })", 5, "dataplane.ports.[1].ip", "broadcast address of 10.20.0.0/30"},
  {"port_ip_multicast", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "224.0.0.1/24"; })", 5, "dataplane.ports.[1].ip", "multicast"},
  {"port_duplicate_name", 5, 5, R"(    { name = "client"; device = "net_af_packet1"; ip = "10.20.0.1/24"; })", 5, "dataplane.ports.[1].name", "duplicate port name 'client' (first at line 4, dataplane.ports.[0])"},
  {"port_duplicate_device", 5, 5, R"(    { name = "backend"; device = "net_af_packet0,iface=lb-b"; ip = "10.20.0.1/24"; })", 5, "dataplane.ports.[1].device", "device 'net_af_packet0' is already used by port 'client'"},
  {"port_overlapping_subnets", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.10.128.1/16"; })", 5, "dataplane.ports.[1].ip", "subnet 10.10.0.0/16 overlaps subnet 10.10.0.0/24 of port 'client' (line 4)"},
  {"port_gateway_outside", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24"; gateway = "10.30.0.1"; })", 5, "dataplane.ports.[1].gateway", "gateway 10.30.0.1 is outside the port's subnet 10.20.0.0/24"},
  {"port_gateway_self", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24"; gateway = "10.20.0.1"; })", 5, "dataplane.ports.[1].gateway", "gateway is the port's own address"},
  {"port_gateway_malformed", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24"; gateway = "10.20.0."; })", 5, "dataplane.ports.[1].gateway", "malformed IPv4 address '10.20.0.'"},
  {"port_rx_not_power_of_two", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24"; rx_descriptors = 1000; })", 5, "dataplane.ports.[1].rx_descriptors", "value 1000 is not a power of two"},
  {"port_vip_arp_unknown", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24"; vip_arp = "some"; })", 5, "dataplane.ports.[1].vip_arp", "unknown vip_arp 'some' (expected subnet, all, none)"},
  {"port_tx_too_large", 5, 5, R"(    { name = "backend"; device = "net_af_packet1"; ip = "10.20.0.1/24"; tx_descriptors = 32768; })", 5, "dataplane.ports.[1].tx_descriptors", "value 32768 is out of range 64..16384"},

  // --- services.
  {"services_empty", 9, 16, "services = ();", 9, "services", "expected at least one service"},
  {"services_empty_array", 9, 16, "services = [];", 9, "services", "expected at least one service"},
  {"service_not_group", 9, 16, "services = ( 1 );", 9, "services.[0]", "expected a group { ... }, found an integer"},
  {"service_missing_name", 10, 10, R"(  { vip = "10.10.0.100"; port = 80;)", 10, "services.[0].name", "missing required setting 'name'"},
  {"service_bad_name", 10, 10, R"(  { name = "web/1"; vip = "10.10.0.100"; port = 80;)", 10, "services.[0].name", "invalid name 'web/1'"},
  {"service_unknown_key", 11, 11, R"(    schedular = "rr";)", 11, "services.[0].schedular", "did you mean 'scheduler'?"},
  {"service_duplicate_name", 16, 16, ", { name = \"web\"; vip = \"10.10.0.101\"; port = 80; backends = (); }\n);", 16, "services.[1].name", "duplicate service name 'web' (first at line 10, services.[0])"},
  {"service_duplicate_vip_port", 16, 16, ", { name = \"web2\";\n    vip = \"10.10.0.100\"; port = 80; backends = (); }\n);", 17, "services.[1].vip", "10.10.0.100:80 is already used by service 'web' (line 10)"},
  {"service_vip_is_port_ip", 10, 10, R"(  { name = "web"; vip = "10.10.0.1"; port = 80;)", 10, "services.[0].vip", "VIP 10.10.0.1 is the address of port 'client'"},
  {"service_vip_subnet_network", 10, 10, R"(  { name = "web"; vip = "10.10.0.0"; port = 80;)", 10, "services.[0].vip", "10.10.0.0 is the network address of 10.10.0.0/24"},
  {"service_vip_subnet_broadcast", 10, 10, R"(  { name = "web"; vip = "10.10.0.255"; port = 80;)", 10, "services.[0].vip", "10.10.0.255 is the broadcast address of 10.10.0.0/24"},
  {"service_vip_backend_subnet_broadcast", 10, 10, R"(  { name = "web"; vip = "10.20.0.255"; port = 80;)", 10, "services.[0].vip", "10.20.0.255 is the broadcast address of 10.20.0.0/24"},
  {"service_vip_malformed", 10, 10, R"(  { name = "web"; vip = "10.10.0"; port = 80;)", 10, "services.[0].vip", "malformed IPv4 address '10.10.0'"},
  {"service_vip_zero", 10, 10, R"(  { name = "web"; vip = "0.0.0.0"; port = 80;)", 10, "services.[0].vip", "0.0.0.0 is in 0.0.0.0/8"},
  {"service_vip_not_string", 10, 10, R"(  { name = "web"; vip = 10; port = 80;)", 10, "services.[0].vip", "expected a string, found an integer"},
  {"service_port_zero", 10, 10, R"(  { name = "web"; vip = "10.10.0.100"; port = 0;)", 10, "services.[0].port", "value 0 is out of range 1..65535"},
  {"service_port_too_large", 10, 10, R"(  { name = "web"; vip = "10.10.0.100"; port = 65536;)", 10, "services.[0].port", "value 65536 is out of range 1..65535"},
  {"service_missing_port", 10, 10, R"(  { name = "web"; vip = "10.10.0.100";)", 10, "services.[0].port", "missing required setting 'port'"},
  {"service_protocol_udp", 11, 11, R"(    protocol = "udp";)", 11, "services.[0].protocol", "unknown protocol 'udp' (expected tcp)"},
  {"service_scheduler_unknown", 11, 11, R"(    scheduler = "xx";)", 11, "services.[0].scheduler", "unknown scheduler 'xx' (expected rr, wrr, random, lc, maglev)"},
  {"maglev_table_not_prime", 11, 11, R"(    scheduler = "maglev"; maglev_table_size = 65536;)", 11, "services.[0].maglev_table_size", "maglev_table_size 65536 is not prime (the next prime is 65537)"},
  {"maglev_table_too_small", 11, 11, R"(    scheduler = "maglev"; maglev_table_size = 251;)", 11, "services.[0].maglev_table_size", "value 251 is out of range 257..5000011"},
  {"maglev_table_too_large", 11, 11, R"(    scheduler = "maglev"; maglev_table_size = 5000087;)", 11, "services.[0].maglev_table_size", "value 5000087 is out of range 257..5000011"},
  {"maglev_table_string", 11, 11, R"(    scheduler = "maglev"; maglev_table_size = "65537";)", 11, "services.[0].maglev_table_size", "expected an integer, found a string"},
  {"rehash_needs_maglev", 11, 11, R"(    scheduler = "wrr"; miss_policy = "rehash";)", 11, "services.[0].miss_policy", "miss_policy \"rehash\" needs scheduler = \"maglev\" (scheduler is \"wrr\")"},
  {"rehash_needs_maglev_default", 11, 11, R"(    miss_policy = "rehash";)", 11, "services.[0].miss_policy", "needs scheduler = \"maglev\" (scheduler is \"rr\")"},
  {"rehash_not_fullnat", 11, 11, R"(    scheduler = "maglev"; forward = "fullnat"; miss_policy = "rehash";)", 11, "services.[0].miss_policy", "miss_policy \"rehash\" cannot continue a full-NAT connection (its backend knows it by the local address and port of the node that began it): use \"rst\" or \"drop\", or forward = \"dnat\" or \"tunnel\""},
  {"service_miss_policy_unknown", 11, 11, R"(    miss_policy = "reset";)", 11, "services.[0].miss_policy", "unknown miss_policy 'reset' (expected drop, rst, rehash)"},
  {"rehash_not_dataplane_wide", 7, 7, R"(  miss_policy = "rehash";)", 7, "dataplane.miss_policy", "unknown miss_policy 'rehash' (expected drop, rst)"},
  {"maglev_seed_negative", 7, 7, R"(  maglev_hash_seed = -1;)", 7, "dataplane.maglev_hash_seed", "value -1 is out of range 0..9223372036854775807"},
  {"idle_not_group", 7, 7, R"(  idle = "sleep";)", 7, "dataplane.idle", "expected a group { ... }, found a string"},
  {"idle_mode_unknown", 7, 7, R"(  idle = { mode = "interrupt"; };)", 7, "dataplane.idle.mode", "unknown mode 'interrupt' (expected poll, sleep)"},
  {"idle_sleep_zero", 7, 7, R"(  idle = { max_sleep_us = 0; };)", 7, "dataplane.idle.max_sleep_us", "value 0 is out of range 1..100000"},
  {"idle_polls_zero", 7, 7, R"(  idle = { after_empty_polls = 0; };)", 7, "dataplane.idle.after_empty_polls", "value 0 is out of range 1..100000000"},
  {"idle_unknown_key", 7, 7, R"(  idle = { sleep_us = 5; };)", 7, "dataplane.idle.sleep_us", "unknown setting 'sleep_us'"},
  {"service_forward_unknown", 11, 11, R"(    forward = "dsr";)", 11, "services.[0].forward", "unknown forward 'dsr' (expected dnat, tunnel, fullnat)"},
  {"stateless_needs_maglev", 11, 11, R"(    forward = "tunnel"; syn_flood_policy = "stateless";)", 11, "services.[0].syn_flood_policy", "syn_flood_policy \"stateless\" needs scheduler = \"maglev\" and forward = \"tunnel\" (scheduler is \"rr\", forward \"tunnel\")"},
  {"stateless_needs_tunnel", 11, 11, R"(    scheduler = "maglev";
    syn_flood_policy = "stateless";)", 12, "services.[0].syn_flood_policy", "(scheduler is \"maglev\", forward \"dnat\")"},
  {"service_syn_flood_policy_unknown", 11, 11, R"(    syn_flood_policy = "cookies";)", 11, "services.[0].syn_flood_policy", "unknown syn_flood_policy 'cookies' (expected drop-new, evict-embryonic, stateless)"},
  {"stateless_rate_zero", 7, 7, "  flows = { stateless_rate = 0; };", 7, "dataplane.flows.stateless_rate", "value 0 is out of range 1..100000000"},
  {"service_forward_not_string", 11, 11, R"(    forward = 1;)", 11, "services.[0].forward", "expected a string, found an integer"},
  {"service_scheduler_case", 11, 11, R"(    scheduler = "RR";)", 11, "services.[0].scheduler", "unknown scheduler 'RR'"},

  // --- health.
  {"health_not_group", 11, 11, R"(    health = "/";)", 11, "services.[0].health", "expected a group { ... }, found a string"},
  {"health_unknown_key", 11, 11, R"(    health = { url = "/"; };)", 11, "services.[0].health.url", "unknown setting 'url'"},
  {"health_path_relative", 11, 11, R"(    health = { path = "healthcheck"; };)", 11, "services.[0].health.path", "must start with '/'"},
  {"health_path_space", 11, 11, R"(    health = { path = "/a b"; };)", 11, "services.[0].health.path", "invalid path '/a b'"},
  // A value quoted in a message keeps the message on one line: control characters escaped.
  {"health_path_crlf", 11, 11, R"(    health = { path = "/x\r\nX-Evil: 1\x1b"; };)", 11, "services.[0].health.path", "invalid path '/x\\r\\nX-Evil: 1\\x1b' (must start"},
  {"health_interval_small", 11, 11, "    health = { interval_ms = 5; timeout_ms = 1; };", 11, "services.[0].health.interval_ms", "value 5 is out of range 10..3600000"},
  {"health_timeout_above_interval", 11, 11, "    health = { interval_ms = 100;\n      timeout_ms = 200; };", 12, "services.[0].health.timeout_ms", "timeout_ms 200 exceeds interval_ms 100"},
  {"health_timeout_zero", 11, 11, "    health = { timeout_ms = 0; };", 11, "services.[0].health.timeout_ms", "value 0 is out of range 1..3600000"},
  {"health_default_timeout_above_interval", 11, 11, "    health = { interval_ms = 100; };", 11, "services.[0].health.interval_ms", "shorter than the default timeout_ms 500"},
  {"health_rise_zero", 11, 11, "    health = { rise = 0; };", 11, "services.[0].health.rise", "value 0 is out of range 1..100"},
  {"health_fall_large", 11, 11, "    health = { fall = 101; };", 11, "services.[0].health.fall", "value 101 is out of range 1..100"},
  {"health_status_high", 11, 11, R"(    health = { expect_status = "600"; };)", 11, "services.[0].health.expect_status", "invalid expect_status '600'"},
  {"health_status_reversed", 11, 11, R"(    health = { expect_status = "299-200"; };)", 11, "services.[0].health.expect_status", "first code is above the last"},
  {"health_status_pattern", 11, 11, R"(    health = { expect_status = "2xx"; };)", 11, "services.[0].health.expect_status", R"(expected "NNN" or "NNN-MMM")"},
  {"health_status_open_range", 11, 11, R"(    health = { expect_status = "200-"; };)", 11, "services.[0].health.expect_status", "invalid expect_status '200-'"},
  {"health_status_int", 11, 11, "    health = { expect_status = 200; };", 11, "services.[0].health.expect_status", "expected a string, found an integer"},

  // --- health: lb-healthd's keys.
  {"health_fast_interval_small", 11, 11, "    health = { fast_interval_ms = 5; };", 11, "services.[0].health.fast_interval_ms", "value 5 is out of range 10..3600000"},
  {"health_fast_interval_typo", 11, 11, "    health = { fast_intervl_ms = 50; };", 11, "services.[0].health.fast_intervl_ms", "did you mean 'fast_interval_ms'?"},
  {"health_down_interval_large", 11, 11, "    health = {\n      down_interval_ms = 3600001; };", 12, "services.[0].health.down_interval_ms", "value 3600001 is out of range 10..3600000"},
  {"health_down_interval_string", 11, 11, R"(    health = { down_interval_ms = "5s"; };)", 11, "services.[0].health.down_interval_ms", "expected an integer, found a string"},
  {"health_jitter_large", 11, 11, "    health = { jitter_pct = 51; };", 11, "services.[0].health.jitter_pct", "value 51 is out of range 0..50"},
  {"health_jitter_negative", 11, 11, "    health = { jitter_pct = -1; };", 11, "services.[0].health.jitter_pct", "value -1 is out of range 0..50"},
  {"health_expect_body_empty", 11, 11, R"(    health = { expect_body = ""; };)", 11, "services.[0].health.expect_body", "expect_body must be 1..1024 bytes, found 0"},
  {"health_expect_body_int", 11, 11, "    health = { expect_body = 1; };", 11, "services.[0].health.expect_body", "expected a string, found an integer"},
  {"health_host_space", 11, 11, R"(    health = { host = "www.example.com x"; };)", 11, "services.[0].health.host", "invalid host 'www.example.com x'"},
  {"health_host_empty", 11, 11, R"(    health = { host = ""; };)", 11, "services.[0].health.host", "invalid host ''"},
  {"health_host_crlf", 11, 11, R"(    health = { host = "a\r\nX-Evil: 1"; };)", 11, "services.[0].health.host", "invalid host"},
  {"health_port_zero", 11, 11, "    health = { port = 0; };", 11, "services.[0].health.port", "value 0 is out of range 1..65535"},
  {"health_port_large", 11, 11, "    health = { port = 65536; };", 11, "services.[0].health.port", "value 65536 is out of range 1..65535"},
  {"health_initial_state_unknown", 11, 11, R"(    health = { initial_state = "maybe"; };)", 11, "services.[0].health.initial_state", "unknown initial_state 'maybe' (expected up, down)"},
  {"health_initial_state_case", 11, 11, R"(    health = { initial_state = "UP"; };)", 11, "services.[0].health.initial_state", "unknown initial_state 'UP'"},
  {"health_passive_not_group", 11, 11, "    health = { passive = 5; };", 11, "services.[0].health.passive", "expected a group { ... }, found an integer"},
  {"health_passive_unknown_key", 11, 11, "    health = { passive = { syn_rts = 1; }; };", 11, "services.[0].health.passive.syn_rts", "unknown setting 'syn_rts' (did you mean 'syn_rst'? allowed: syn_rst, syn_timeout)"},
  {"health_passive_negative", 11, 11, "    health = { passive = {\n      syn_timeout = -1; }; };", 12, "services.[0].health.passive.syn_timeout", "value -1 is out of range 0..1000000"},
  {"health_passive_large", 11, 11, "    health = { passive = { syn_rst = 1000001; }; };", 11, "services.[0].health.passive.syn_rst", "value 1000001 is out of range 0..1000000"},

  // --- service policies for lb-healthd.
  {"service_on_all_down_unknown", 11, 11, R"(    on_all_down = "open";)", 11, "services.[0].on_all_down", "unknown on_all_down 'open' (expected fail_closed, fail_open)"},
  {"service_on_all_down_bool", 11, 11, "    on_all_down = true;", 11, "services.[0].on_all_down", "expected a string, found a boolean"},
  {"service_maint_unknown", 11, 11, R"(    maint = "keep_flows";)", 11, "services.[0].maint", "unknown maint policy 'keep_flows' (expected keep, drop)"},
  {"service_on_all_down_typo", 11, 11, R"(    on_all_dwn = "fail_open";)", 11, "services.[0].on_all_dwn", "did you mean 'on_all_down'?"},

  // --- instance.
  {"instance_bad_name", 17, 17, R"(instance = "lbd/1";)", 17, "instance", "invalid name 'lbd/1'"},
  {"instance_empty", 17, 17, R"(instance = "";)", 17, "instance", "invalid name ''"},
  {"instance_int", 17, 17, "instance = 1;", 17, "instance", "expected a string, found an integer"},
  {"instance_typo", 17, 17, R"(instanse = "a";)", 17, "instanse", "did you mean 'instance'?"},

  // --- backends.
  {"backends_missing", 12, 15, "  }", 10, "services.[0].backends", "missing required setting 'backends'"},
  {"backends_not_list", 12, 15, "    backends = { }; }", 12, "services.[0].backends", "expected a list ( ... ), found a group { ... }"},
  {"backend_unknown_key", 14, 14, R"(      { address = "10.20.0.12"; port = 8080; wieght = 2; })", 14, "services.[0].backends.[1].wieght", "did you mean 'weight'?"},
  {"backend_missing_port", 14, 14, R"(      { address = "10.20.0.12"; })", 14, "services.[0].backends.[1].port", "missing required setting 'port'"},
  {"backend_missing_address", 14, 14, "      {\n        port = 8080; }", 14, "services.[0].backends.[1].address", "missing required setting 'address'"},
  {"backend_address_malformed", 14, 14, R"(      { address = "10.20.0.012"; port = 8080; })", 14, "services.[0].backends.[1].address", "malformed IPv4 address '10.20.0.012'"},
  {"backend_port_zero", 14, 14, R"(      { address = "10.20.0.12"; port = 0; })", 14, "services.[0].backends.[1].port", "value 0 is out of range 1..65535"},
  {"backend_weight_large", 14, 14, R"(      { address = "10.20.0.12"; port = 8080; weight = 65536; })", 14, "services.[0].backends.[1].weight", "value 65536 is out of range 0..65535"},
  {"backend_weight_float", 14, 14, R"(      { address = "10.20.0.12"; port = 8080; weight = 1.5; })", 14, "services.[0].backends.[1].weight", "expected an integer, found a float"},
  {"backend_duplicate", 14, 14, R"(      { address = "10.20.0.11"; port = 8080; })", 14, "services.[0].backends.[1].address", "duplicate backend 10.20.0.11:8080 (first at line 13)"},
  {"backend_is_vip", 14, 14, R"(      { address = "10.10.0.100"; port = 8080; })", 14, "services.[0].backends.[1].address", "backend 10.10.0.100 is the VIP of service 'web'"},
  {"backend_is_later_vip", 16, 16, ", { name = \"b\"; vip = \"10.20.0.12\"; port = 80; backends = (); }\n);", 14, "services.[0].backends.[1].address", "backend 10.20.0.12 is the VIP of service 'b'"},
  {"backend_is_port_ip", 14, 14, R"(      { address = "10.20.0.1"; port = 8080; })", 14, "services.[0].backends.[1].address", "backend 10.20.0.1 is the address of port 'backend'"},
  // A port subnet's network and broadcast addresses are nobody's.
  {"backend_subnet_network", 14, 14, R"(      { address = "10.20.0.0"; port = 8080; })", 14, "services.[0].backends.[1].address", "10.20.0.0 is the network address of 10.20.0.0/24"},
  {"backend_subnet_broadcast", 14, 14, R"(      { address = "10.20.0.255"; port = 8080; })", 14, "services.[0].backends.[1].address", "10.20.0.255 is the broadcast address of 10.20.0.0/24"},
  {"backend_subnet_broadcast_client_side", 14, 14, R"(      { address = "10.10.0.255"; port = 8080; })", 14, "services.[0].backends.[1].address", "10.10.0.255 is the broadcast address of 10.10.0.0/24"},
  {"backend_unreachable", 14, 14, R"(      { address = "192.168.1.5"; port = 8080; })", 14, "services.[0].backends.[1].address", "backend 192.168.1.5 is reachable through no port"},
  {"backend_state_unknown", 14, 14, R"(      { address = "10.20.0.12"; port = 8080; state = "disabled"; })", 14, "services.[0].backends.[1].state", "unknown state 'disabled' (expected ready, drain, maint)"},
  {"backend_state_int", 14, 14, R"(      { address = "10.20.0.12"; port = 8080; state = 0; })", 14, "services.[0].backends.[1].state", "expected a string, found an integer"},
  {"backend_initial_state_unknown", 14, 14, R"(      { address = "10.20.0.12"; port = 8080; initial_state = "ready"; })", 14, "services.[0].backends.[1].initial_state", "unknown initial_state 'ready' (expected up, down)"},
  {"backend_unknown_key_allowed_list", 14, 14, R"(      { address = "10.20.0.12"; port = 8080; stat = "drain"; })", 14, "services.[0].backends.[1].stat", "(did you mean 'state'? allowed: address, port, weight, state, initial_state)"},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Rules, BadConfig, testing::ValuesIn(kBadCases),
                         [](const testing::TestParamInfo<BadCase>& param_info) {
                           return std::string(param_info.param.label);
                         });

// lb-healthd's control socket and state file: the `healthd` group, on line 17.
constexpr BadCase kHealthdBadCases[] = {
    {"HealthdNotAGroup", 17, 17, "healthd = 1;", 17, "healthd", "expected a group"},
    {"HealthdUnknownKey", 17, 17, "healthd = { control_sockt = \"/run/x.sock\"; };", 17,
     "healthd.control_sockt", "did you mean 'control_socket'?"},
    {"ControlSocketRelative", 17, 17, "healthd = { control_socket = \"run/x.sock\"; };", 17,
     "healthd.control_socket", "invalid control_socket 'run/x.sock' (an absolute path"},
    {"ControlSocketTooLong", 17, 17,
     "healthd = { control_socket = \"/run/"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaa.sock\"; };",
     17, "healthd.control_socket", "at most 107 bytes"},
    {"ControlSocketNotAString", 17, 17, "healthd = { control_socket = true; };", 17,
     "healthd.control_socket", "expected a string, found a boolean"},
    {"SocketModeInteger", 17, 17, "healthd = { socket_mode = 660; };", 17, "healthd.socket_mode",
     "write the mode in octal as a string"},
    {"SocketModeNotOctal", 17, 17, "healthd = { socket_mode = \"0680\"; };", 17,
     "healthd.socket_mode", "invalid socket_mode '0680'"},
    {"SocketModeSetuid", 17, 17, "healthd = { socket_mode = \"4660\"; };", 17,
     "healthd.socket_mode", "at most \"0777\""},
    {"SocketModeShort", 17, 17, "healthd = { socket_mode = \"66\"; };", 17, "healthd.socket_mode",
     "3 or 4 digits"},
    {"SocketOwnerBad", 17, 17, "healthd = { socket_owner = \"-root\"; };", 17,
     "healthd.socket_owner", "invalid socket_owner '-root'"},
    {"SocketGroupSpace", 17, 17, "healthd = { socket_group = \"lb d\"; };", 17,
     "healthd.socket_group", "invalid socket_group 'lb d'"},
    {"StateFileDirectory", 17, 17, "healthd = { state_file = \"/var/lib/lbd/\"; };", 17,
     "healthd.state_file", "invalid state_file '/var/lib/lbd/'"},
    {"ControlTimeoutLow", 17, 17, "healthd = { control_timeout_ms = 99; };", 17,
     "healthd.control_timeout_ms", "value 99 is out of range 100..3600000"},
    {"DrainTimeoutNegative", 17, 17, "healthd = { drain_timeout_ms = -1; };", 17,
     "healthd.drain_timeout_ms", "value -1 is out of range 0..86400000"},
    {"DrainTimeoutString", 17, 17, "healthd = { drain_timeout_ms = \"5m\"; };", 17,
     "healthd.drain_timeout_ms", "expected an integer, found a string"},
    {"MetricsListenNoPort", 17, 17, "healthd = { metrics_listen = \"127.0.0.1\"; };", 17,
     "healthd.metrics_listen", "invalid metrics_listen '127.0.0.1' (expected an IPv4 address"},
    {"MetricsListenPortZero", 17, 17, "healthd = { metrics_listen = \"127.0.0.1:0\"; };", 17,
     "healthd.metrics_listen", "invalid metrics_listen '127.0.0.1:0'"},
    {"MetricsListenPortLarge", 17, 17, "healthd = { metrics_listen = \"127.0.0.1:65536\"; };", 17,
     "healthd.metrics_listen", "invalid metrics_listen '127.0.0.1:65536'"},
    {"MetricsListenHostName", 17, 17, "healthd = { metrics_listen = \"localhost:9813\"; };", 17,
     "healthd.metrics_listen", "invalid metrics_listen 'localhost:9813'"},
    {"MetricsListenIpv6", 17, 17, "healthd = { metrics_listen = \"[::1]:9813\"; };", 17,
     "healthd.metrics_listen", "invalid metrics_listen '[::1]:9813'"},
    {"MetricsListenPortOnly", 17, 17, "healthd = { metrics_listen = \":9813\"; };", 17,
     "healthd.metrics_listen", "invalid metrics_listen ':9813'"},
    {"MetricsListenInteger", 17, 17, "healthd = { metrics_listen = 9813; };", 17,
     "healthd.metrics_listen", "expected a string, found an integer"},
};
INSTANTIATE_TEST_SUITE_P(HealthdGroup, BadConfig, testing::ValuesIn(kHealthdBadCases),
                         [](const testing::TestParamInfo<BadCase>& param_info) {
                           return std::string(param_info.param.label);
                         });

TEST(HealthdGroup, Defaults) {
  const Config c = parse(std::string(kBase));
  EXPECT_FALSE(c.healthd.control_socket.has_value());
  EXPECT_EQ(c.healthd.socket_mode, 0660u);
  EXPECT_EQ(c.healthd.socket_owner, "");
  EXPECT_EQ(c.healthd.socket_group, "");
  EXPECT_FALSE(c.healthd.state_file.has_value());
  EXPECT_EQ(c.healthd.control_timeout_ms, 10000u);
  EXPECT_EQ(c.healthd.drain_timeout_ms, 300000u);
  EXPECT_EQ(c.healthd.socket_owner_line, 0);
  EXPECT_EQ(c.healthd.line, 0);
  EXPECT_EQ(control_socket_path(c), "/run/lbd/lbd.sock");
  EXPECT_EQ(control_socket_path(c, "edge2"), "/run/lbd/edge2.sock");
  EXPECT_EQ(default_control_socket("x"), "/run/lbd/x.sock");
  EXPECT_EQ(state_file_path(c, "/etc/lbd/lbd.cfg"), "/etc/lbd/lbd.cfg.state");
  // /metrics on loopback unless the file says otherwise.
  EXPECT_FALSE(c.healthd.metrics_listen.has_value());
  EXPECT_EQ(metrics_listen(c.healthd), "127.0.0.1:9813");
  EXPECT_EQ(c.healthd.metrics_listen_line, 0);
}

TEST(HealthdGroup, EverySet) {
  const Config c = parse(replace_lines(
      17, 17,
      "instance = \"edge1\";\n"
      "healthd = { control_socket = \"/run/lbd/edge.sock\"; socket_mode = \"0640\";\n"
      "  socket_owner = \"root\"; socket_group = \"1000\"; state_file = \"state/lbd.json\";\n"
      "  control_timeout_ms = 2500;\n  drain_timeout_ms = 0; metrics_listen = \"0.0.0.0:19813\"; "
      "};"));
  EXPECT_EQ(c.healthd.control_socket, "/run/lbd/edge.sock");
  EXPECT_EQ(c.healthd.socket_mode, 0640u);
  EXPECT_EQ(c.healthd.socket_owner, "root");
  EXPECT_EQ(c.healthd.socket_group, "1000");
  EXPECT_EQ(c.healthd.state_file, "state/lbd.json");
  EXPECT_EQ(c.healthd.control_timeout_ms, 2500u);
  EXPECT_EQ(c.healthd.drain_timeout_ms, 0u);
  EXPECT_EQ(metrics_listen(c.healthd), "0.0.0.0:19813");
  EXPECT_EQ(c.healthd.metrics_listen_line, 21);
  EXPECT_EQ(c.healthd.socket_owner_line, 19);  // where each was set, for lb-healthd's lookup
  EXPECT_EQ(c.healthd.socket_group_line, 19);
  EXPECT_EQ(c.healthd.line, 18);
  EXPECT_EQ(control_socket_path(c), "/run/lbd/edge.sock");
  EXPECT_EQ(control_socket_path(c, "other"), "/run/lbd/edge.sock");  // the file's path wins
  EXPECT_EQ(state_file_path(c, "/etc/lbd/lbd.cfg"), "/etc/lbd/state/lbd.json");
  EXPECT_EQ(state_file_path(c, "lbd.cfg"), "state/lbd.json");
}

TEST(HealthdGroup, EmptyPathsTurnThingsOff) {
  const Config c =
      parse(replace_lines(17, 17, "healthd = { control_socket = \"\"; state_file = \"\"; };"));
  EXPECT_EQ(control_socket_path(c), "");
  EXPECT_EQ(state_file_path(c, "/etc/lbd/lbd.cfg"), "");
  const Config d = parse(replace_lines(17, 17, "healthd = { state_file = \"/var/lib/lbd/s\"; };"));
  EXPECT_EQ(state_file_path(d, "/etc/lbd/lbd.cfg"), "/var/lib/lbd/s");
  const Config e = parse(replace_lines(17, 17, "healthd = {};"));
  EXPECT_EQ(e.healthd.line, 17);
  const Config f = parse(replace_lines(17, 17, "healthd = { metrics_listen = \"\"; };"));
  EXPECT_EQ(metrics_listen(f.healthd), "");
}

TEST(HealthdGroup, ListenAddresses) {
  const std::optional<ListenAddress> a = parse_listen("10.1.2.3:80");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->address, ip(10, 1, 2, 3));
  EXPECT_EQ(a->port, 80);
  EXPECT_EQ(parse_listen("0.0.0.0:65535")->port, 65535);
  for (const char* bad : {"", "10.1.2.3", "10.1.2.3:", "10.1.2.3:080", "10.1.2.3:-1", "10.1.2.3:8o",
                          "10.1.2:80", "10.1.2.3:80:80", "10.1.2.3:100000"}) {
    EXPECT_FALSE(parse_listen(bad).has_value()) << bad;
  }
}

// -- bgp (lb-healthd's announcer) ------------------------------------------------------------

// One valid bgp group on line 17 and the next ones; each bad case changes one thing.
#define LB_BGP(first, rest)                                                                \
  "bgp = { local_as = 65001; router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\";\n" first \
  "\n  neighbors = ( { address = \"10.10.0.254\"; as = 65000; } );\n" rest " };"

const BadCase kBgpBadCases[] = {
    {"BgpNotAGroup", 17, 17, "bgp = 1;", 17, "bgp", "expected a group"},
    {"BgpUnknownKey", 17, 17, LB_BGP("  hold_tme = 9;", ""), 18, "bgp.hold_tme",
     "did you mean 'hold_time'?"},
    {"BgpNoLocalAs", 17, 17,
     "bgp = { router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\"; neighbors = (); };", 17,
     "bgp.local_as", "missing required setting 'local_as'"},
    {"BgpLocalAsZero", 17, 17,
     "bgp = { local_as = 0; router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\";\n"
     "  neighbors = ( { address = \"10.10.0.254\"; as = 65000; } ); };",
     17, "bgp.local_as", "value 0 is out of range 1..4294967294"},
    {"BgpAsTrans", 17, 17,
     "bgp = { local_as = 23456; router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\";\n"
     "  neighbors = ( { address = \"10.10.0.254\"; as = 65000; } ); };",
     17, "bgp.local_as", "AS_TRANS"},
    {"BgpRouterIdMalformed", 17, 17,
     "bgp = { local_as = 65001; router_id = \"10.10.0\"; next_hop = \"10.10.0.1\"; };", 17,
     "bgp.router_id", "malformed IPv4 address '10.10.0'"},
    {"BgpNoNextHop", 17, 17, "bgp = { local_as = 65001; router_id = \"10.10.0.3\"; };", 17,
     "bgp.next_hop", "missing required setting 'next_hop'"},
    {"BgpNextHopNotAPort", 17, 17,
     "bgp = { local_as = 65001; router_id = \"10.10.0.3\";\n  next_hop = \"10.10.0.9\"; };", 18,
     "bgp.next_hop",
     "next_hop 10.10.0.9 is the address of no port (routers must send the VIPs' packets to lbd: "
     "10.10.0.1, 10.20.0.1)"},
    {"BgpNoNeighbors", 17, 17,
     "bgp = { local_as = 65001; router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\";\n"
     "  neighbors = (); };",
     18, "bgp.neighbors", "expected 1..16 neighbors, found 0"},
    {"BgpNeighborNoAs", 17, 17,
     "bgp = { local_as = 65001; router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\";\n"
     "  neighbors = ( { address = \"10.10.0.254\"; } ); };",
     18, "bgp.neighbors.[0].as", "missing required setting 'as'"},
    {"BgpNeighborTwice", 17, 17,
     "bgp = { local_as = 65001; router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\";\n"
     "  neighbors = ( { address = \"10.10.0.254\"; as = 65000; },\n"
     "    { address = \"10.10.0.254\"; as = 65002; } ); };",
     19, "bgp.neighbors.[1].address", "neighbor 10.10.0.254 is listed twice"},
    {"BgpNeighborIsSelf", 17, 17,
     "bgp = { local_as = 65001; router_id = \"10.10.0.3\"; next_hop = \"10.10.0.1\";\n"
     "  neighbors = ( { address = \"10.10.0.1\"; as = 65000; } ); };",
     18, "bgp.neighbors.[0].address", "is this node's own router_id or next_hop"},
    {"BgpHoldTimeTooShort", 17, 17, LB_BGP("  hold_time = 2;", ""), 18, "bgp.hold_time",
     "value 2 is out of range 3..65535"},
    {"BgpCommunityMalformed", 17, 17, LB_BGP("", "  communities = [ \"65000:100\", \"65000\" ];"),
     20, "bgp.communities.[1]", "invalid community '65000' (expected \"ASN:VALUE\""},
    {"BgpCommunityTooBig", 17, 17, LB_BGP("", "  communities = [ \"65536:1\" ];"), 20,
     "bgp.communities.[0]", "invalid community '65536:1'"},
    {"BgpMedNegative", 17, 17, LB_BGP("", "  med = -1;"), 20, "bgp.med",
     "value -1 is out of range 0..4294967295"},
    {"BgpAnnounceWhenUnknown", 17, 17, LB_BGP("", "  announce_when = \"always\";"), 20,
     "bgp.announce_when", "unknown announce_when 'always' (expected serving, alive)"},
    {"BgpLbdTimeoutTooShort", 17, 17, LB_BGP("", "  lbd_timeout_ms = 10;"), 20,
     "bgp.lbd_timeout_ms", "value 10 is out of range 100..600000"},
    {"BgpBirdSocketRelative", 17, 17, LB_BGP("", "  bird_socket = \"bird.ctl\";"), 20,
     "bgp.bird_socket", "invalid bird_socket 'bird.ctl' (an absolute file path"},
    {"BgpBirdConfigQuote", 17, 17, LB_BGP("", "  bird_config = \"/run/a\\\"b\";"), 20,
     "bgp.bird_config", "without control characters or '\"'"},
};
INSTANTIATE_TEST_SUITE_P(BgpGroup, BadConfig, testing::ValuesIn(kBgpBadCases),
                         [](const testing::TestParamInfo<BadCase>& param_info) {
                           return std::string(param_info.param.label);
                         });

TEST(BgpGroup, LeftOutMeansNoAnnouncing) {
  const Config c = parse(std::string(kBase));
  EXPECT_FALSE(c.bgp.enabled());
  EXPECT_EQ(bird_config_path(c), "/run/lbd/lbd-bird.conf");
  EXPECT_EQ(bird_socket_path(c, "n2"), "/run/lbd/n2-bird.ctl");
}

TEST(BgpGroup, DefaultsAndEverySet) {
  const Config d = parse(replace_lines(17, 17, LB_BGP("", "")));
  ASSERT_TRUE(d.bgp.enabled());
  EXPECT_EQ(d.bgp.line, 17);
  EXPECT_EQ(d.bgp.local_as, 65001u);
  EXPECT_EQ(d.bgp.router_id, ip(10, 10, 0, 3));
  EXPECT_EQ(d.bgp.next_hop, ip(10, 10, 0, 1));
  ASSERT_EQ(d.bgp.neighbors.size(), 1u);
  EXPECT_EQ(d.bgp.neighbors[0].address, ip(10, 10, 0, 254));
  EXPECT_EQ(d.bgp.neighbors[0].as, 65000u);
  EXPECT_EQ(d.bgp.neighbors[0].line, 19);
  EXPECT_EQ(d.bgp.hold_time, 9u);
  EXPECT_TRUE(d.bgp.communities.empty());
  EXPECT_FALSE(d.bgp.med.has_value());
  EXPECT_EQ(d.bgp.announce_when, AnnounceWhen::kServing);
  EXPECT_EQ(d.bgp.lbd_timeout_ms, 1000u);
  EXPECT_EQ(bird_config_path(d), "/run/lbd/lbd-bird.conf");
  EXPECT_EQ(bird_socket_path(d), "/run/lbd/lbd-bird.ctl");

  const Config c = parse(replace_lines(
      17, 17,
      LB_BGP("  hold_time = 30; med = 4294967295; announce_when = \"alive\";",
             "  communities = [ \"65000:100\", \"0:65535\" ]; lbd_timeout_ms = 500;\n"
             "  bird_config = \"/etc/lbd/bird.conf\"; bird_socket = \"/run/lbd/b.ctl\";")));
  EXPECT_EQ(c.bgp.hold_time, 30u);
  EXPECT_EQ(c.bgp.med, 4294967295u);
  EXPECT_EQ(c.bgp.announce_when, AnnounceWhen::kAlive);
  ASSERT_EQ(c.bgp.communities.size(), 2u);
  EXPECT_EQ(c.bgp.communities[0], (std::pair<uint16_t, uint16_t>{65000, 100}));
  EXPECT_EQ(c.bgp.communities[1], (std::pair<uint16_t, uint16_t>{0, 65535}));
  EXPECT_EQ(c.bgp.lbd_timeout_ms, 500u);
  EXPECT_EQ(bird_config_path(c), "/etc/lbd/bird.conf");
  EXPECT_EQ(bird_socket_path(c, "other"), "/run/lbd/b.ctl");
  EXPECT_STREQ(to_string(AnnounceWhen::kServing), "serving");
}
#undef LB_BGP

TEST(BadConfigExtra, TooManyPorts) {
  std::string ports = "  ports = (\n";
  for (int i = 0; i < 17; ++i) {
    ports += "    { name = \"p" + std::to_string(i) + "\"; device = \"dev" + std::to_string(i) +
             "\"; ip = \"10." + std::to_string(i) + ".0.1/24\"; }" + (i < 16 ? ",\n" : "\n");
  }
  ports += "  );";
  try {
    parse(replace_lines(3, 6, ports));
    FAIL() << "17 ports accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(e.path(), "dataplane.ports");
    EXPECT_NE(std::string(e.what()).find("expected 1..16 ports, found 17"), std::string::npos)
        << e.what();
  }
}

TEST(BadConfigExtra, NulByte) {
  // libconfig would stop reading at the NUL and quietly ignore the rest of the file.
  const std::string text = replace_lines(7, 7, std::string("  # \0", 5));
  try {
    parse(text);
    FAIL() << "NUL byte accepted";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "test.cfg:7: file contains a NUL byte");
  }
}

TEST(BadConfigExtra, ExactMessageFormat) {
  try {
    parse(replace_lines(11, 11, "    scheduler = \"xx\";"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "test.cfg:11: services.[0].scheduler: unknown scheduler 'xx' (expected rr, wrr, "
                 "random, lc, maglev)");
  }
}

TEST(ConfigErrorTest, ComposesWhat) {
  const ConfigError with_path("a.cfg", 3, "dataplane.workers", "bad");
  EXPECT_STREQ(with_path.what(), "a.cfg:3: dataplane.workers: bad");
  EXPECT_EQ(with_path.file(), "a.cfg");
  EXPECT_EQ(with_path.line(), 3);
  EXPECT_EQ(with_path.path(), "dataplane.workers");
  const ConfigError without_path("a.cfg", 0, "", "cannot read: x");
  EXPECT_STREQ(without_path.what(), "a.cfg:0: cannot read: x");
}

// -------------------------------------------------------------------------------------------
// Accepted variants and defaults.

TEST(GoodConfig, FullnatAddressesAndPorts) {
  const Config c = parse(replace_lines(
      7, 7, R"(  fullnat_addresses = ["10.20.0.50", "10.20.0.1"]; fullnat_ports = [2000, 2999];)"));
  ASSERT_EQ(c.dataplane.fullnat_addresses.size(), 2u);
  EXPECT_EQ(c.dataplane.fullnat_addresses[0], 0x0a140032u);
  EXPECT_EQ(c.dataplane.fullnat_addresses[1], 0x0a140001u);  // a port's own address may be one
  EXPECT_EQ(c.dataplane.fullnat_port_first, 2000);
  EXPECT_EQ(c.dataplane.fullnat_port_last, 2999);
  const Config d = parse(std::string(kBase));
  EXPECT_TRUE(d.dataplane.fullnat_addresses.empty());
  EXPECT_EQ(d.dataplane.fullnat_port_first, 1024);
  EXPECT_EQ(d.dataplane.fullnat_port_last, 65535);
}

TEST(GoodConfig, DefaultsApplied) {
  const Config c = parse(std::string(kBase));
  const DataplaneConfig& dp = c.dataplane;
  EXPECT_EQ(dp.mbufs, 16383u);
  EXPECT_EQ(dp.flows.capacity, 1048576u);
  EXPECT_EQ(dp.flows.tcp_syn_timeout, 5u);
  EXPECT_EQ(dp.flows.tcp_established_timeout, 900u);
  EXPECT_EQ(dp.flows.tcp_fin_timeout, 10u);
  EXPECT_EQ(dp.flows.tcp_closed_timeout, 5u);
  EXPECT_EQ(dp.flows.syn_budget, 50u);
  EXPECT_EQ(dp.flows.tcp_syn_timeout_pressure, 1u);
  EXPECT_EQ(dp.flows.syn_flood_policy, SynFloodPolicy::kEvictEmbryonic);
  EXPECT_TRUE(dp.flows.persist);
  EXPECT_EQ(dp.flows.directory, "");
  EXPECT_TRUE(dp.retry.on_rst);
  EXPECT_EQ(dp.retry.syn_timeout_ms, 1000u);
  EXPECT_EQ(dp.retry.max_retries, 2u);
  EXPECT_EQ(dp.miss_policy, MissPolicy::kDrop);
  EXPECT_EQ(dp.no_backend_policy, NoBackendPolicy::kRst);
  for (const PortConfig& port : dp.ports) {
    EXPECT_EQ(port.rx_descriptors, 1024);
    EXPECT_EQ(port.tx_descriptors, 1024);
    EXPECT_FALSE(port.gateway.has_value());
    EXPECT_EQ(port.vip_arp, VipArp::kSubnet);
  }
  const ServiceConfig& s = c.services[0];
  EXPECT_EQ(s.protocol, Protocol::kTcp);
  EXPECT_EQ(s.scheduler, Scheduler::kRoundRobin);
  EXPECT_EQ(s.forward, Forward::kDnat);
  EXPECT_EQ(s.health.path, "/healthcheck");
  EXPECT_EQ(s.health.interval_ms, 1000u);
  EXPECT_EQ(s.health.timeout_ms, 500u);
  EXPECT_EQ(s.health.rise, 2u);
  EXPECT_EQ(s.health.fall, 3u);
  EXPECT_EQ(s.health.expect_status_min, 200);
  EXPECT_EQ(s.health.expect_status_max, 299);
  EXPECT_EQ(s.health.line, 0);
  EXPECT_EQ(s.backends[0].weight, 1u);
}

TEST(GoodConfig, ServiceSynFloodPolicy) {
  Config c = parse(replace_lines(11, 11, R"(    syn_flood_policy = "drop-new";)"));
  EXPECT_EQ(c.services[0].syn_flood_policy, SynFloodPolicy::kDropNew);
  EXPECT_FALSE(parse(std::string(kBase)).services[0].syn_flood_policy.has_value());
  c = parse(replace_lines(
      11, 11, R"(    scheduler = "maglev"; forward = "tunnel"; syn_flood_policy = "stateless";)"));
  EXPECT_EQ(c.services[0].syn_flood_policy, SynFloodPolicy::kStateless);
  EXPECT_EQ(c.dataplane.flows.stateless_rate, 125000u);
  c = parse(replace_lines(7, 7, "  flows = { stateless_rate = 1000; };"));
  EXPECT_EQ(c.dataplane.flows.stateless_rate, 1000u);
}

TEST(GoodConfig, SynFloodKeys) {
  const Config c = parse(
      replace_lines(7, 7,
                    "  flows = { syn_budget = 20; tcp_syn_timeout_pressure = 2; syn_flood_policy = "
                    "\"drop-new\"; };"));
  EXPECT_EQ(c.dataplane.flows.syn_budget, 20u);
  EXPECT_EQ(c.dataplane.flows.tcp_syn_timeout_pressure, 2u);
  EXPECT_EQ(c.dataplane.flows.syn_flood_policy, SynFloodPolicy::kDropNew);
}

TEST(GoodConfig, PartialGroupsKeepOtherDefaults) {
  const Config c = parse(
      replace_lines(11, 11, "    health = { interval_ms = 20000; expect_status = \"204\"; };"));
  const HealthConfig& h = c.services[0].health;
  EXPECT_EQ(h.line, 11);
  EXPECT_EQ(h.interval_ms, 20000u);
  EXPECT_EQ(h.timeout_ms, 500u);
  EXPECT_EQ(h.expect_status_min, 204);
  EXPECT_EQ(h.expect_status_max, 204);
  EXPECT_EQ(h.path, "/healthcheck");

  const Config d = parse(replace_lines(7, 7, "  flows = { capacity = 2048; };"));
  EXPECT_EQ(d.dataplane.flows.capacity, 2048u);
  EXPECT_EQ(d.dataplane.flows.tcp_established_timeout, 900u);

  const Config e =
      parse(replace_lines(7, 7, "  flows = { persist = false; directory = \"/dev/shm/\"; };"));
  EXPECT_FALSE(e.dataplane.flows.persist);
  EXPECT_EQ(e.dataplane.flows.directory, "/dev/shm");
}

TEST(GoodConfig, IntegerForms) {
  // int64 ("L") and hex literals are integers too, as long as the value fits.
  const Config c = parse(replace_lines(2, 2, "  workers = 3L; mbufs = 0x3FFF;"));
  EXPECT_EQ(c.dataplane.workers, 3u);
  EXPECT_EQ(c.dataplane.mbufs, 16383u);
  // A wrapping literal elsewhere on the line must not make an exact one suspect.
  const Config d =
      parse(replace_lines(7, 7, "  flows = { capacity = 1024; tcp_syn_timeout = 7; };"));
  EXPECT_EQ(d.dataplane.flows.capacity, 1024u);
  EXPECT_EQ(d.dataplane.flows.tcp_syn_timeout, 7u);
  const Config e = parse(replace_lines(2, 2, "  workers =\n    4;"));
  EXPECT_EQ(e.dataplane.workers, 4u);
}

TEST(GoodConfig, EmptyBackendListsAndColonSyntax) {
  const Config c = parse(replace_lines(12, 15, "    backends : [ ]; }"));
  EXPECT_TRUE(c.services[0].backends.empty());
  const Config d = parse(replace_lines(12, 15, "    backends = (); }"));
  EXPECT_TRUE(d.services[0].backends.empty());
}

TEST(GoodConfig, SameVipOtherPortAndAllSchedulers) {
  const Config c = parse(replace_lines(16, 16,
                                       ", { name = \"b\"; vip = \"10.10.0.100\"; port = 81; "
                                       "scheduler = \"wrr\"; backends = (); }\n"
                                       ", { name = \"c\"; vip = \"10.10.0.100\"; port = 82; "
                                       "scheduler = \"random\"; backends = (); }\n"
                                       ", { name = \"d\"; vip = \"10.10.0.100\"; port = 83; "
                                       "scheduler = \"lc\"; backends = (); }\n);"));
  ASSERT_EQ(c.services.size(), 4u);
  EXPECT_EQ(c.services[1].scheduler, Scheduler::kWeightedRoundRobin);
  EXPECT_EQ(c.services[2].scheduler, Scheduler::kRandom);
  EXPECT_EQ(c.services[3].scheduler, Scheduler::kLeastConnections);
  EXPECT_EQ(c.services[3].port, 83);
}

TEST(GoodConfig, SameBackendAddressOtherPort) {
  const Config c = parse(replace_lines(14, 14, "      { address = \"10.20.0.11\"; port = 8081; }"));
  EXPECT_EQ(c.services[0].backends[1].port, 8081);
}

TEST(GoodConfig, GatewayReachesOutsideBackends) {
  const Config c = parse(replace_lines(
      5, 14,
      "    { name = \"backend\"; device = \"net_af_packet1\"; ip = \"10.20.0.1/24\";\n"
      "      gateway = \"10.20.0.254\"; rx_descriptors = 64; tx_descriptors = 16384;\n"
      "      vip_arp = \"all\"; }\n"
      "  );\n"
      "};\n"
      "services = (\n"
      "  { name = \"web\"; vip = \"10.10.0.100\"; port = 80;\n"
      "    backends = (\n"
      "      { address = \"192.168.7.7\"; port = 8080; weight = 0; },\n"
      "      { address = \"10.20.0.12\"; port = 8080; weight = 65535; }"));
  const PortConfig& backend_port = c.dataplane.ports[1];
  ASSERT_TRUE(backend_port.gateway.has_value());
  EXPECT_EQ(*backend_port.gateway, ip(10, 20, 0, 254));
  EXPECT_EQ(backend_port.rx_descriptors, 64);
  EXPECT_EQ(backend_port.tx_descriptors, 16384);
  EXPECT_EQ(backend_port.vip_arp, VipArp::kAll);
  EXPECT_EQ(c.services[0].backends[0].weight, 0u);
  EXPECT_EQ(c.services[0].backends[1].weight, 65535u);
  EXPECT_EQ(egress_port(c.dataplane, ip(192, 168, 7, 7)), &backend_port);
  EXPECT_EQ(egress_port(c.dataplane, ip(10, 10, 0, 9)), &c.dataplane.ports[0]);
  EXPECT_EQ(egress_port(c.dataplane, ip(10, 20, 0, 12)), &backend_port);
}

TEST(GoodConfig, EgressPortWithoutGateway) {
  const Config c = parse(std::string(kBase));
  EXPECT_EQ(egress_port(c.dataplane, ip(10, 20, 0, 99)), &c.dataplane.ports[1]);
  EXPECT_EQ(egress_port(c.dataplane, ip(192, 168, 0, 1)), nullptr);
}

TEST(GoodConfig, SmallSubnetsHaveNoNetworkOrBroadcastAddress) {
  // /31 (RFC 3021) and /32 have no network or broadcast address, so any address is a host.
  const Config c = parse(replace_lines(
      4, 5,
      "    { name = \"client\"; device = \"net_af_packet0\"; ip = \"10.10.0.1/32\"; },\n"
      "    { name = \"p2p\"; device = \"net_af_packet2\"; ip = \"10.30.0.0/31\"; },\n"
      "    { name = \"backend\"; device = \"net_af_packet1\"; ip = \"10.20.0.1/24\"; }"));
  EXPECT_EQ(c.dataplane.ports[0].prefix_len, 32);
  EXPECT_EQ(c.dataplane.ports[1].ip, ip(10, 30, 0, 0));
  EXPECT_EQ(c.dataplane.ports[1].prefix_len, 31);
}

TEST(GoodConfig, NetworkAndBroadcastAddressesOutsideEveryPortSubnetAreHosts) {
  // Routed addresses (a VIP no port's subnet holds, a backend behind the gateway) may end in .0
  // or .255: only a port subnet's own network and broadcast addresses are refused. /31 has
  // neither, so both its addresses are hosts.
  const Config c = parse(
      "dataplane: { workers = 1; ports = (\n"
      "  { name = \"client\"; device = \"d0\"; ip = \"10.10.0.1/24\"; },\n"
      "  { name = \"backend\"; device = \"d1\"; ip = \"10.20.0.1/24\"; gateway = \"10.20.0.254\"; "
      "},\n"
      "  { name = \"p2p\"; device = \"d2\"; ip = \"10.30.0.0/31\"; }\n"
      "); };\n"
      "services = (\n"
      "  { name = \"a\"; vip = \"192.0.2.255\"; port = 80;\n"
      "    backends = ( { address = \"172.16.5.0\"; port = 80; },\n"
      "                 { address = \"172.16.5.255\"; port = 80; },\n"
      "                 { address = \"10.30.0.1\"; port = 80; } ); },\n"
      "  { name = \"b\"; vip = \"192.0.3.0\"; port = 80; backends = (); }\n"
      ");\n");
  EXPECT_EQ(c.services[0].vip, ip(192, 0, 2, 255));
  EXPECT_EQ(c.services[0].backends[0].address, ip(172, 16, 5, 0));
  EXPECT_EQ(c.services[0].backends[1].address, ip(172, 16, 5, 255));
  EXPECT_EQ(c.services[0].backends[2].address, ip(10, 30, 0, 1));
  EXPECT_EQ(c.services[1].vip, ip(192, 0, 3, 0));
}

TEST(GoodConfig, DeviceArgumentsDoNotMakeADifferentDevice) {
  // Sanity check for the rule's other side: different device names with equal arguments pass.
  const Config c = parse(replace_lines(5, 5,
                                       "    { name = \"backend\"; device = "
                                       "\"net_af_packet1,iface=lb-c\"; ip = \"10.20.0.1/24\"; }"));
  EXPECT_EQ(c.dataplane.ports[1].device, "net_af_packet1,iface=lb-c");
}

// -------------------------------------------------------------------------------------------
// lb-healthd's keys.

TEST(HealthdKeys, Defaults) {
  const Config c = parse(std::string(kBase));
  EXPECT_EQ(c.instance, "lbd");
  EXPECT_EQ(c.instance_line, 0);
  const ServiceConfig& s = c.services[0];
  EXPECT_EQ(s.on_all_down, AllDownPolicy::kFailClosed);
  EXPECT_EQ(s.maint, MaintPolicy::kKeep);
  const HealthConfig& h = s.health;
  EXPECT_EQ(h.fast_interval_ms, 1000u);  // = interval_ms
  EXPECT_EQ(h.down_interval_ms, 1000u);
  EXPECT_EQ(h.jitter_pct, 10u);
  EXPECT_EQ(h.expect_body, "");
  EXPECT_EQ(h.host, "");
  EXPECT_EQ(h.port, 0);
  EXPECT_EQ(h.initial_state, InitialState::kUp);
  EXPECT_EQ(h.passive.syn_rst, 0u);
  EXPECT_EQ(h.passive.syn_timeout, 0u);
  for (const BackendConfig& b : s.backends) {
    EXPECT_EQ(b.state, AdminState::kReady);
    EXPECT_FALSE(b.initial_state.has_value());
    EXPECT_EQ(s.initial_state(b), InitialState::kUp);
  }
}

TEST(HealthdKeys, IntervalsDefaultToInterval) {
  const Config c = parse(replace_lines(11, 11, "    health = { interval_ms = 2500; };"));
  EXPECT_EQ(c.services[0].health.fast_interval_ms, 2500u);
  EXPECT_EQ(c.services[0].health.down_interval_ms, 2500u);
  const Config d =
      parse(replace_lines(11, 11, "    health = { interval_ms = 2500; down_interval_ms = 10; };"));
  EXPECT_EQ(d.services[0].health.fast_interval_ms, 2500u);
  EXPECT_EQ(d.services[0].health.down_interval_ms, 10u);
  // Shorter than timeout_ms is fine: the next check starts when the previous one has ended.
  const Config e = parse(replace_lines(
      11, 11,
      "    health = { timeout_ms = 500; fast_interval_ms = 100; down_interval_ms = 100; };"));
  EXPECT_EQ(e.services[0].health.fast_interval_ms, 100u);
}

TEST(HealthdKeys, EverySet) {
  const Config c = parse(replace_lines(
      11, 14,
      "    on_all_down = \"fail_open\"; maint = \"drop\";\n"
      "    health = { fast_interval_ms = 200; down_interval_ms = 5000; jitter_pct = 50;\n"
      "      expect_body = \"OK\"; host = \"www.example.com:8080\"; port = 9000;\n"
      "      initial_state = \"down\"; passive = { syn_rst = 5; syn_timeout = 0; }; };\n"
      "    backends = (\n"
      "      { address = \"10.20.0.11\"; port = 8080; state = \"drain\"; initial_state = \"up\"; "
      "},\n"
      "      { address = \"10.20.0.12\"; port = 8080; state = \"maint\"; },\n"
      "      { address = \"10.20.0.13\"; port = 8080; state = \"ready\"; }"));
  const ServiceConfig& s = c.services[0];
  EXPECT_EQ(s.on_all_down, AllDownPolicy::kFailOpen);
  EXPECT_EQ(s.maint, MaintPolicy::kDrop);
  const HealthConfig& h = s.health;
  EXPECT_EQ(h.line, 12);
  EXPECT_EQ(h.fast_interval_ms, 200u);
  EXPECT_EQ(h.down_interval_ms, 5000u);
  EXPECT_EQ(h.jitter_pct, 50u);
  EXPECT_EQ(h.expect_body, "OK");
  EXPECT_EQ(h.host, "www.example.com:8080");
  EXPECT_EQ(h.port, 9000);
  EXPECT_EQ(h.initial_state, InitialState::kDown);
  EXPECT_EQ(h.passive.syn_rst, 5u);
  EXPECT_EQ(h.passive.syn_timeout, 0u);
  ASSERT_EQ(s.backends.size(), 3u);
  EXPECT_EQ(s.backends[0].state, AdminState::kDrain);
  EXPECT_EQ(s.initial_state(s.backends[0]), InitialState::kUp);  // overridden
  EXPECT_EQ(s.backends[1].state, AdminState::kMaint);
  EXPECT_EQ(s.initial_state(s.backends[1]), InitialState::kDown);  // the service's
  EXPECT_EQ(s.backends[2].state, AdminState::kReady);
}

TEST(HealthdKeys, Instance) {
  const Config c = parse(replace_lines(17, 17, "instance = \"edge-1_a\";"));
  EXPECT_EQ(c.instance, "edge-1_a");
  EXPECT_EQ(c.instance_line, 17);
}

TEST(HealthdKeys, NamesReadBack) {
  for (const InitialState v : {InitialState::kUp, InitialState::kDown}) {
    const Config c = parse(replace_lines(
        11, 11, std::string("    health = { initial_state = \"") + to_string(v) + "\"; };"));
    EXPECT_EQ(c.services[0].health.initial_state, v);
  }
  for (const AllDownPolicy v : {AllDownPolicy::kFailClosed, AllDownPolicy::kFailOpen}) {
    const Config c =
        parse(replace_lines(11, 11, std::string("    on_all_down = \"") + to_string(v) + "\";"));
    EXPECT_EQ(c.services[0].on_all_down, v);
  }
  for (const MaintPolicy v : {MaintPolicy::kKeep, MaintPolicy::kDrop}) {
    const Config c =
        parse(replace_lines(11, 11, std::string("    maint = \"") + to_string(v) + "\";"));
    EXPECT_EQ(c.services[0].maint, v);
  }
  for (const AdminState v : {AdminState::kReady, AdminState::kDrain, AdminState::kMaint}) {
    const Config c = parse(
        replace_lines(14, 14,
                      std::string("      { address = \"10.20.0.12\"; port = 8080; state = \"") +
                          to_string(v) + "\"; }"));
    EXPECT_EQ(c.services[0].backends[1].state, v);
  }
}

TEST(HealthdKeys, StatusRangeParser) {
  const std::optional<StatusRange> r = parse_status_range("200-204");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->min, 200);
  EXPECT_EQ(r->max, 204);
  EXPECT_TRUE(r->contains(204));
  EXPECT_FALSE(r->contains(205));
  EXPECT_FALSE(parse_status_range("204-200").has_value());
  EXPECT_FALSE(parse_status_range("2xx").has_value());
}

// -------------------------------------------------------------------------------------------
// The shipped examples.

TEST(Examples, Demo) {
  const Config c = load_config(example("demo.cfg"));
  EXPECT_EQ(c.file, example("demo.cfg"));
  const DataplaneConfig& dp = c.dataplane;
  EXPECT_EQ(dp.workers, 1u);
  ASSERT_EQ(dp.ports.size(), 2u);
  EXPECT_EQ(dp.ports[0].name, "client");
  EXPECT_EQ(dp.ports[0].device, "net_af_packet0,iface=lb-c");
  EXPECT_EQ(dp.ports[0].ip, ip(10, 10, 0, 1));
  EXPECT_EQ(dp.ports[0].prefix_len, 24);
  EXPECT_EQ(dp.ports[1].name, "backend");
  EXPECT_EQ(dp.ports[1].device, "net_af_packet1,iface=lb-b");
  EXPECT_EQ(dp.ports[1].ip, ip(10, 20, 0, 1));
  EXPECT_EQ(dp.ports[1].prefix_len, 24);
  ASSERT_EQ(c.services.size(), 1u);
  const ServiceConfig& web = c.services[0];
  EXPECT_EQ(web.name, "web");
  EXPECT_EQ(web.vip, ip(10, 10, 0, 100));
  EXPECT_EQ(web.port, 80);
  EXPECT_EQ(web.protocol, Protocol::kTcp);
  EXPECT_EQ(web.scheduler, Scheduler::kRoundRobin);
  EXPECT_EQ(web.health.path, "/healthcheck");
  ASSERT_EQ(web.backends.size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(web.backends[i].address, ip(10, 20, 0, 11 + i));
    EXPECT_EQ(web.backends[i].port, 8080);
    EXPECT_EQ(web.backends[i].weight, 1u);
    EXPECT_GT(web.backends[i].line, web.line);
  }
}

TEST(Examples, Minimal) {
  const Config c = load_config(example("minimal.cfg"));
  ASSERT_EQ(c.dataplane.ports.size(), 1u);
  ASSERT_EQ(c.services.size(), 1u);
  EXPECT_TRUE(c.services[0].backends.empty());
  EXPECT_EQ(c.dataplane.flows.capacity, FlowConfig{}.capacity);
  EXPECT_EQ(c.dataplane.mbufs, DataplaneConfig{}.mbufs);
}

TEST(Examples, FullSetsEveryKey) {
  const Config c = load_config(example("full.cfg"));
  const DataplaneConfig& dp = c.dataplane;
  EXPECT_EQ(dp.workers, 4u);
  EXPECT_EQ(dp.mbufs, 65535u);
  ASSERT_EQ(dp.ports.size(), 2u);
  EXPECT_EQ(dp.ports[0].rx_descriptors, 2048);
  EXPECT_EQ(dp.ports[0].tx_descriptors, 512);
  ASSERT_TRUE(dp.ports[1].gateway.has_value());
  EXPECT_EQ(*dp.ports[1].gateway, ip(10, 20, 0, 254));
  EXPECT_EQ(dp.flows.capacity, 262144u);
  EXPECT_EQ(dp.flows.tcp_syn_timeout, 3u);
  EXPECT_EQ(dp.flows.tcp_established_timeout, 1800u);
  EXPECT_EQ(dp.flows.tcp_fin_timeout, 20u);
  EXPECT_EQ(dp.flows.tcp_closed_timeout, 2u);
  EXPECT_FALSE(dp.retry.on_rst);
  EXPECT_EQ(dp.retry.syn_timeout_ms, 2500u);
  EXPECT_EQ(dp.retry.max_retries, 3u);
  EXPECT_EQ(dp.idle.mode, IdleMode::kSleep);
  EXPECT_EQ(dp.idle.after_empty_polls, 2000u);
  EXPECT_EQ(dp.idle.max_sleep_us, 100u);
  EXPECT_EQ(dp.miss_policy, MissPolicy::kRst);
  EXPECT_EQ(dp.no_backend_policy, NoBackendPolicy::kDrop);
  ASSERT_EQ(c.services.size(), 2u);
  const ServiceConfig& web = c.services[0];
  EXPECT_EQ(web.scheduler, Scheduler::kWeightedRoundRobin);
  EXPECT_EQ(web.health.path, "/healthz");
  EXPECT_EQ(web.health.interval_ms, 2000u);
  EXPECT_EQ(web.health.timeout_ms, 800u);
  EXPECT_EQ(web.health.rise, 3u);
  EXPECT_EQ(web.health.fall, 2u);
  EXPECT_EQ(web.health.expect_status_min, 200);
  EXPECT_EQ(web.health.expect_status_max, 399);
  ASSERT_EQ(web.backends.size(), 3u);
  EXPECT_EQ(web.backends[0].weight, 3u);
  EXPECT_EQ(web.backends[2].address, ip(172, 16, 5, 20));
  EXPECT_EQ(web.backends[2].weight, 0u);
  EXPECT_EQ(egress_port(dp, web.backends[2].address), &dp.ports[1]);
  EXPECT_EQ(c.services[1].scheduler, Scheduler::kLeastConnections);
  EXPECT_EQ(c.services[1].port, 443);
  // lb-healthd's keys.
  EXPECT_EQ(c.instance, "edge1");
  EXPECT_EQ(c.healthd.metrics_listen, "127.0.0.1:9813");
  EXPECT_EQ(web.health.fast_interval_ms, 500u);
  EXPECT_EQ(web.health.down_interval_ms, 10000u);
  EXPECT_EQ(web.health.jitter_pct, 20u);
  EXPECT_EQ(web.health.expect_body, "ok");
  EXPECT_EQ(web.health.host, "www.example.com");
  EXPECT_EQ(web.health.port, 8081);
  EXPECT_EQ(web.health.initial_state, InitialState::kDown);
  EXPECT_EQ(web.health.passive.syn_rst, 5u);
  EXPECT_EQ(web.health.passive.syn_timeout, 3u);
  EXPECT_EQ(web.on_all_down, AllDownPolicy::kFailOpen);
  EXPECT_EQ(web.maint, MaintPolicy::kDrop);
  EXPECT_EQ(web.backends[0].state, AdminState::kReady);
  ASSERT_TRUE(web.backends[0].initial_state.has_value());
  EXPECT_EQ(*web.backends[0].initial_state, InitialState::kUp);
  EXPECT_EQ(web.backends[1].state, AdminState::kDrain);
  EXPECT_EQ(web.backends[2].state, AdminState::kMaint);
  EXPECT_EQ(c.services[1].on_all_down, AllDownPolicy::kFailClosed);
  EXPECT_EQ(c.services[1].maint, MaintPolicy::kKeep);
}

// -------------------------------------------------------------------------------------------
// Files.

class FileTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(testing::TempDir()) /
           ("lb_config_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, std::string_view text) const {
    std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(FileTest, MissingFileIsLineZero) {
  const std::string path = (dir_ / "absent.cfg").string();
  try {
    load_config(path);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 0);
    EXPECT_EQ(e.path(), "");
    EXPECT_EQ(std::string(e.what()), path + ":0: cannot read: No such file or directory");
  }
}

TEST_F(FileTest, DirectoryCannotBeRead) {
  try {
    load_config(dir_.string());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 0);
    EXPECT_NE(std::string(e.what()).find("cannot read"), std::string::npos) << e.what();
  }
}

TEST_F(FileTest, SyntaxErrorNamesTheFile) {
  const std::string path = write("bad.cfg", "dataplane: {\n  workers = ;\n};\n");
  try {
    load_config(path);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), path + ":2: syntax error");
  }
}

TEST_F(FileTest, MissingIncludeNamesTheFileAndWhereItWasLookedFor) {
  const std::string path = write("main.cfg", replace_lines(9, 17, "@include \"svc/none.cfg\""));
  try {
    load_config(path);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), path + ":9: cannot open include file \"svc/none.cfg\" (" +
                                         (dir_ / "svc/none.cfg").string() +
                                         ": No such file or directory)");
  }
  // An include in an included file: that file's name and line.
  write("services.cfg", "\n# two\n@include \"deeper.cfg\"\n");
  const std::string outer = write("outer.cfg", replace_lines(9, 17, "@include \"services.cfg\""));
  try {
    load_config(outer);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              (dir_ / "services.cfg").string() + ":3: cannot open include file \"deeper.cfg\" (" +
                  (dir_ / "deeper.cfg").string() + ": No such file or directory)");
  }
}

TEST_F(FileTest, IncludeIsRelativeToTheIncludingFile) {
  write("services.cfg",
        "services = (\n"
        "  { name = \"web\"; vip = \"10.10.0.100\"; port = 80;\n"
        "    backends = ( { address = \"10.20.0.11\"; port = 99999; } ); }\n"
        ");\n");
  const std::string text = replace_lines(9, 17, "@include \"services.cfg\"");
  const std::string path = write("main.cfg", text);
  try {
    load_config(path);
    FAIL();
  } catch (const ConfigError& e) {
    // The error is in the included file and names it, with its own line numbers.
    EXPECT_EQ(e.file(), (dir_ / "services.cfg").string());
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(e.path(), "services.[0].backends.[0].port");
    EXPECT_NE(std::string(e.what()).find("value 99999 is out of range 1..65535"), std::string::npos)
        << e.what();
  }
  write("services.cfg",
        "services = (\n"
        "  { name = \"web\"; vip = \"10.10.0.100\"; port = 80;\n"
        "    backends = ( { address = \"10.20.0.11\"; port = 80; weight = 4294967297; } ); }\n"
        ");\n");
  try {
    load_config(path);
    FAIL() << "wrapped integer in an included file accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_NE(std::string(e.what()).find("value 4294967297 is out of range 0..65535"),
              std::string::npos)
        << e.what();
  }
}

// -------------------------------------------------------------------------------------------
// Address helpers and names.

TEST(ParseIpv4, Good) {
  EXPECT_EQ(parse_ipv4("0.0.0.0"), 0u);
  EXPECT_EQ(parse_ipv4("255.255.255.255"), 0xffffffffu);
  EXPECT_EQ(parse_ipv4("10.20.0.11"), 0x0a14000bu);
  EXPECT_EQ(parse_ipv4("192.168.100.1"), ip(192, 168, 100, 1));
  EXPECT_EQ(parse_ipv4("1.0.10.100"), ip(1, 0, 10, 100));
}

TEST(ParseIpv4, Bad) {
  for (const char* text :
       {"",           "1",         "1.2.3",     "1.2.3.4.5",  "1.2.3.4.", ".1.2.3.4",
        "1..2.3",     "256.1.1.1", "1.2.3.256", "1000.1.1.1", "01.2.3.4", "1.2.3.00",
        "0x1.2.3.4",  "a.b.c.d",   " 1.2.3.4",  "1.2.3.4 ",   "+1.2.3.4", "1.2.3.-4",
        "1.2.3.4/24", "1.2.3.4x",  "1,2,3,4",   "１.2.3.4"}) {
    EXPECT_EQ(parse_ipv4(text), std::nullopt) << "'" << text << "'";
  }
  EXPECT_EQ(parse_ipv4(std::string("1.2.3.4\0", 8)), std::nullopt);
}

TEST(FormatIpv4, RoundTrips) {
  EXPECT_EQ(format_ipv4(0), "0.0.0.0");
  EXPECT_EQ(format_ipv4(0x0a14000b), "10.20.0.11");
  EXPECT_EQ(format_ipv4(0xffffffff), "255.255.255.255");
  for (const uint32_t addr : {ip(1, 2, 3, 4), ip(192, 0, 2, 255), ip(100, 64, 0, 10)}) {
    EXPECT_EQ(parse_ipv4(format_ipv4(addr)), addr);
  }
}

TEST(ToString, Names) {
  EXPECT_STREQ(to_string(Scheduler::kRoundRobin), "rr");
  EXPECT_STREQ(to_string(Scheduler::kWeightedRoundRobin), "wrr");
  EXPECT_STREQ(to_string(Scheduler::kRandom), "random");
  EXPECT_STREQ(to_string(Scheduler::kLeastConnections), "lc");
  EXPECT_STREQ(to_string(MissPolicy::kDrop), "drop");
  EXPECT_STREQ(to_string(MissPolicy::kRst), "rst");
  EXPECT_STREQ(to_string(NoBackendPolicy::kRst), "rst");
  EXPECT_STREQ(to_string(NoBackendPolicy::kDrop), "drop");
  EXPECT_STREQ(to_string(Protocol::kTcp), "tcp");
  EXPECT_STREQ(to_string(InitialState::kUp), "up");
  EXPECT_STREQ(to_string(InitialState::kDown), "down");
  EXPECT_STREQ(to_string(AdminState::kReady), "ready");
  EXPECT_STREQ(to_string(AdminState::kDrain), "drain");
  EXPECT_STREQ(to_string(AdminState::kMaint), "maint");
  EXPECT_STREQ(to_string(AllDownPolicy::kFailClosed), "fail_closed");
  EXPECT_STREQ(to_string(AllDownPolicy::kFailOpen), "fail_open");
  EXPECT_STREQ(to_string(MaintPolicy::kKeep), "keep");
  EXPECT_STREQ(to_string(MaintPolicy::kDrop), "drop");
}

TEST(Maglev, KeysAndDefaults) {
  const Config d = parse(replace_lines(11, 11, R"(    scheduler = "maglev";)"));
  EXPECT_EQ(d.services[0].scheduler, Scheduler::kMaglev);
  EXPECT_EQ(d.services[0].maglev_table_size, 65537u);
  EXPECT_FALSE(d.services[0].miss_policy);
  EXPECT_EQ(d.services[0].effective_miss_policy(d.dataplane), MissPolicy::kRehash);
  EXPECT_EQ(d.dataplane.maglev_hash_seed, kDefaultMaglevHashSeed);
  const Config c = parse(
      replace_lines(7, 11,
                    "  maglev_hash_seed = 12345678901234L;\n};\nservices = (\n"
                    "  { name = \"web\"; vip = \"10.10.0.100\"; port = 80;\n"
                    "    scheduler = \"maglev\"; maglev_table_size = 257; miss_policy = \"rst\";"));
  EXPECT_EQ(c.dataplane.maglev_hash_seed, 12345678901234u);
  EXPECT_EQ(c.services[0].maglev_table_size, 257u);
  EXPECT_EQ(c.services[0].effective_miss_policy(c.dataplane), MissPolicy::kRst);
  // A service that is not maglev keeps the dataplane's policy.
  const Config r = parse(replace_lines(7, 7, R"(  miss_policy = "rst";)"));
  EXPECT_EQ(r.services[0].effective_miss_policy(r.dataplane), MissPolicy::kRst);
  // So does a full-NAT maglev service: a rehashed flow could not continue its connection.
  const Config f = parse(replace_lines(
      7, 11,
      "  miss_policy = \"rst\";\n  fullnat_addresses = [\"10.20.0.50\"];\n};\nservices = (\n"
      "  { name = \"web\"; vip = \"10.10.0.100\"; port = 80;\n"
      "    scheduler = \"maglev\"; forward = \"fullnat\";"));
  EXPECT_FALSE(f.services[0].miss_policy);
  EXPECT_EQ(f.services[0].effective_miss_policy(f.dataplane), MissPolicy::kRst);
}

TEST(ToString, MatchesWhatTheParserAccepts) {
  // Each name to_string() prints must read back as the same value.
  for (const Scheduler s : {Scheduler::kRoundRobin, Scheduler::kWeightedRoundRobin,
                            Scheduler::kRandom, Scheduler::kLeastConnections, Scheduler::kMaglev}) {
    const Config c =
        parse(replace_lines(11, 11, std::string("    scheduler = \"") + to_string(s) + "\";"));
    EXPECT_EQ(c.services[0].scheduler, s);
  }
  for (const Forward f : {Forward::kDnat, Forward::kTunnel, Forward::kFullnat}) {
    // (fullnat needs a local address)
    const Config c = parse(replace_lines(
        7, 11,
        std::string("  fullnat_addresses = [\"10.20.0.50\"];\n};\nservices = (\n") +
            "  { name = \"web\"; vip = \"10.10.0.100\"; port = 80;\n    forward = \"" +
            to_string(f) + "\";"));
    EXPECT_EQ(c.services[0].forward, f);
  }
  for (const MissPolicy p : {MissPolicy::kDrop, MissPolicy::kRst}) {
    const Config c =
        parse(replace_lines(7, 7, std::string("  miss_policy = \"") + to_string(p) + "\";"));
    EXPECT_EQ(c.dataplane.miss_policy, p);
  }
  for (const NoBackendPolicy p : {NoBackendPolicy::kRst, NoBackendPolicy::kDrop}) {
    const Config c =
        parse(replace_lines(7, 7, std::string("  no_backend_policy = \"") + to_string(p) + "\";"));
    EXPECT_EQ(c.dataplane.no_backend_policy, p);
  }
}

}  // namespace
}  // namespace lb::cfg

// What lbd's tables and one pool update hold is checked when the file is read (lb_limits.h):
// lbd used to keep the first 256 backends of a longer list without a word.
namespace lb::cfg {
namespace {

std::string with_services(int services, int backends_each) {
  std::string text = std::string(kBase.substr(0, kBase.find("services = (")));
  text += "services = (\n";
  for (int s = 0; s < services; ++s) {
    text += "  { name = \"s" + std::to_string(s) +
            "\"; vip = \"10.10.0.100\"; port = " + std::to_string(1000 + s) + "; backends = (";
    for (int b = 0; b < backends_each; ++b) {
      text += std::string(b ? ", " : "") + "{ address = \"10.20." + std::to_string(1 + b / 250) +
              "." + std::to_string(2 + b % 250) + "\"; port = " + std::to_string(8000 + s) + "; }";
    }
    text += "); }" + std::string(s + 1 < services ? "," : "") + "\n";
  }
  return text + ");\n";
}

void expect_refused(const std::string& text, const std::string& what) {
  try {
    parse(text);
    ADD_FAILURE() << "accepted: " << what;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("test.cfg:", 0), 0u) << e.what();
  }
}

TEST(ConfigLimits, BackendsPerServiceServicesAndBackendsInAll) {
  // The backend port's subnet must hold the addresses: a /16 for these tests.
  auto wide = [](std::string t) {
    const std::string from = "ip = \"10.20.0.1/24\"";
    t.replace(t.find(from), from.size(), "ip = \"10.20.0.1/16\"");
    return t;
  };
  EXPECT_EQ(parse(wide(with_services(1, 256))).services[0].backends.size(), 256u);
  expect_refused(wide(with_services(1, 257)),
                 "257 backends: at most 256 per service (what one pool update carries)");
  EXPECT_EQ(parse(wide(with_services(16, 256))).services.size(), 16u);  // 4,096 in all
  expect_refused(wide(with_services(17, 242)), "4114 backends in all: at most 4096");
  expect_refused(wide(with_services(1025, 1)), "1025 services: at most 1024");
}

}  // namespace
}  // namespace lb::cfg
