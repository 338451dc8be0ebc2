#pragma once
// Typed, immutable view of one lbd configuration file (libconfig syntax), shared by lbd,
// lb-healthd and lbctl. Every key is documented in docs/configuration.md.
//
// Addresses are held in host byte order (10.0.0.1 == 0x0a000001); the dataplane converts once
// when it builds its tables.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace lb::cfg {

// A configuration error: what() is "file:line: setting.path: what is wrong".
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, std::string path, const std::string& what);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& path() const { return path_; }

 private:
  std::string file_;
  int line_;
  std::string path_;
};

struct PortConfig {
  std::string name;                 // unique, [A-Za-z0-9_-]
  std::string device;               // PCI address or vdev spec ("net_af_packet0,iface=lb-c")
  uint32_t ip = 0;                  // the port's own address
  uint8_t prefix_len = 0;           // its subnet
  std::optional<uint32_t> gateway;  // next hop for destinations outside the subnet
  uint16_t rx_descriptors = 1024;
  uint16_t tx_descriptors = 1024;
  int line = 0;

  bool in_subnet(uint32_t addr) const {
    const uint32_t mask = prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
    return (addr & mask) == (ip & mask);
  }
};

struct FlowConfig {
  uint32_t capacity = 1u << 20;  // flows per worker
  uint32_t tcp_syn_timeout = 5;  // seconds, handshake not finished
  uint32_t tcp_established_timeout = 900;
  uint32_t tcp_fin_timeout = 10;    // one side has sent FIN
  uint32_t tcp_closed_timeout = 5;  // both FINs or an RST seen (TIME_WAIT-like)
};

// Retry on another server (the seeds' "retry" feature, at L4).
struct RetryConfig {
  bool on_rst = true;  // backend answers our SYN with RST: re-steer at once
  // The client retransmits its SYN after this long unanswered: re-steer.
  uint32_t syn_timeout_ms = 1000;
  uint32_t max_retries = 2;  // per flow
};

enum class MissPolicy { kDrop, kRst };       // non-SYN packet with no flow
enum class NoBackendPolicy { kRst, kDrop };  // SYN with no live backend

struct DataplaneConfig {
  uint32_t workers = 1;  // worker lcores; the main lcore is the control thread
  std::vector<PortConfig> ports;
  FlowConfig flows;
  RetryConfig retry;
  MissPolicy miss_policy = MissPolicy::kDrop;
  NoBackendPolicy no_backend_policy = NoBackendPolicy::kRst;
  uint32_t mbufs = 16383;  // per-process mbuf pool size
  int line = 0;
};

enum class Scheduler { kRoundRobin, kWeightedRoundRobin, kRandom, kLeastConnections };
enum class Protocol { kTcp };

// `line` is 0 when the service has no health group (every key takes its default).
struct HealthConfig {
  std::string path = "/healthcheck";
  uint32_t interval_ms = 1000;
  uint32_t timeout_ms = 500;
  uint32_t rise = 2;
  uint32_t fall = 3;
  uint16_t expect_status_min = 200;  // "200-299", or one code "200"
  uint16_t expect_status_max = 299;
  int line = 0;
};

struct BackendConfig {
  uint32_t address = 0;
  uint16_t port = 0;
  uint32_t weight = 1;  // 0 .. 65535; 0 takes no new flows
  int line = 0;
};

struct ServiceConfig {
  std::string name;  // unique, [A-Za-z0-9_-]
  uint32_t vip = 0;
  uint16_t port = 0;
  Protocol protocol = Protocol::kTcp;
  Scheduler scheduler = Scheduler::kRoundRobin;
  HealthConfig health;
  std::vector<BackendConfig> backends;
  int line = 0;
};

struct Config {
  std::string file;  // as given
  DataplaneConfig dataplane;
  std::vector<ServiceConfig> services;
};

// Reads and validates a file. Throws ConfigError (with file:line) on any problem, including
// I/O and syntax errors.
Config load_config(const std::string& path);

// The same from text; `name` stands for the file name in errors.
Config parse_config(const std::string& text, const std::string& name);

// Parses "a.b.c.d" (strict: four decimal octets, no leading junk). Returns nullopt when malformed.
std::optional<uint32_t> parse_ipv4(const std::string& text);
std::string format_ipv4(uint32_t addr);

const char* to_string(Scheduler s);
const char* to_string(MissPolicy p);
const char* to_string(NoBackendPolicy p);
const char* to_string(Protocol p);

// The port that reaches `addr`: the first port whose subnet holds it, else the first port (in file
// order) that has a gateway, else nullptr. load_config() refuses a backend for which this is null,
// so the dataplane and the validator agree on where every backend lives.
const PortConfig* egress_port(const DataplaneConfig& dataplane, uint32_t addr);

}  // namespace lb::cfg
