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
#include <string_view>
#include <utility>
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

// Which VIPs a port answers ARP requests for: those inside its subnet (a router or host on that
// segment asks for them), every VIP (the segment treats VIPs outside it as on-link), or none
// (the VIPs are routed to the port's address, which needs no ARP for them).
enum class VipArp { kSubnet, kAll, kNone };

struct PortConfig {
  std::string name;                 // unique, [A-Za-z0-9_-]
  std::string device;               // PCI address or vdev spec ("net_af_packet0,iface=lb-c")
  uint32_t ip = 0;                  // the port's own address
  uint8_t prefix_len = 0;           // its subnet
  std::optional<uint32_t> gateway;  // next hop for destinations outside the subnet
  uint16_t rx_descriptors = 1024;
  uint16_t tx_descriptors = 1024;
  VipArp vip_arp = VipArp::kSubnet;
  int line = 0;

  bool in_subnet(uint32_t addr) const {
    const uint32_t mask = prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
    return (addr & mask) == (ip & mask);
  }
};

// What a SYN does when the embryonic budget or the flow table is full (docs/operations.md,
// "SYN floods"). kStateless: maglev services only.
enum class SynFloodPolicy { kDropNew, kEvictEmbryonic, kStateless };

struct FlowConfig {
  uint32_t capacity = 1u << 20;  // flows per worker
  uint32_t tcp_syn_timeout = 5;  // seconds, handshake not finished
  uint32_t tcp_established_timeout = 900;
  uint32_t tcp_fin_timeout = 10;    // one side has sent FIN
  uint32_t tcp_closed_timeout = 5;  // both FINs or an RST seen (TIME_WAIT-like)
  // Full-NAT: a local port freed by a flow is given to a new one only this many seconds later,
  // so that the backend's TIME_WAIT for the old connection (60 s on Linux) has ended.
  uint32_t fullnat_port_hold = 60;
  // SYN floods: embryonic flows (SYN seen, no SYN-ACK) may take syn_budget % of the capacity;
  // past half of that they time out after tcp_syn_timeout_pressure.
  uint32_t syn_budget = 50;
  uint32_t tcp_syn_timeout_pressure = 1;
  SynFloodPolicy syn_flood_policy = SynFloodPolicy::kEvictEmbryonic;  // never kStateless here
  // Services with syn_flood_policy "stateless": above this many new flows per second per worker
  // a SYN is routed by the Maglev table without a flow (Katran's default is 125 k).
  uint32_t stateless_rate = 125000;
  // Each worker's table in a file that outlives lbd, so that a restart keeps the connections
  // (dataplane/flow_memory.h); false: in lbd's own memory, lost when it exits.
  bool persist = true;
  std::string
      directory;  // on hugetlbfs or tmpfs; empty: /dev/hugepages if it has room, else /dev/shm
};

// Retry on another server (the seeds' "retry" feature, at L4).
struct RetryConfig {
  bool on_rst = true;  // backend answers our SYN with RST: re-steer at once
  // The client retransmits its SYN after this long unanswered: re-steer.
  uint32_t syn_timeout_ms = 1000;
  uint32_t max_retries = 2;  // per flow
};

// A non-SYN packet with no flow. kRehash: a service with scheduler maglev sends it to the
// table's backend of its tuple, which goes on with the connection (services only).
enum class MissPolicy { kDrop, kRst, kRehash };

// What a worker does when its ports have nothing for it. kPoll: spin (a whole core, the lowest
// latency: bare metal). kSleep: after `after_empty_polls` empty polls in a row, sleep 1 us, then
// twice as long after each further empty poll up to `max_sleep_us`, until a packet arrives
// (the way DPDK's l3fwd-power backs off): a packet then waits at most max_sleep_us. For nodes
// that share cores (the fleet tests, the demo, VMs).
enum class IdleMode { kPoll, kSleep };
struct IdleConfig {
  IdleMode mode = IdleMode::kPoll;
  uint32_t after_empty_polls = 1000;
  uint32_t max_sleep_us = 250;
  bool operator==(const IdleConfig&) const = default;
};
enum class NoBackendPolicy { kRst, kDrop };  // SYN with no live backend

inline constexpr uint64_t kDefaultMaglevHashSeed = 0x6d676c762d666c77;  // "mglv-flw"
inline constexpr uint32_t kDefaultMaglevTableSize = 65537;
// Every backend of a service (at most 256) fits with room; Envoy's largest at the top.
inline constexpr uint32_t kMinMaglevTableSize = 257, kMaxMaglevTableSize = 5000011;

struct DataplaneConfig {
  uint32_t workers = 1;  // worker lcores; the main lcore is the control thread
  std::vector<PortConfig> ports;
  FlowConfig flows;
  RetryConfig retry;
  MissPolicy miss_policy = MissPolicy::kDrop;
  NoBackendPolicy no_backend_policy = NoBackendPolicy::kRst;
  // Seeds the hash that places a flow in a maglev table (lb::core::maglev_flow_hash): every
  // node of a cluster, and every restart, must use the same value to agree on backends.
  uint64_t maglev_hash_seed = kDefaultMaglevHashSeed;
  uint32_t mbufs = 16383;  // per-process mbuf pool size
  IdleConfig idle;
  // The sources of full-NAT flows (docs/configuration.md): each in a port's subnet, where lbd
  // answers ARP for it.
  std::vector<uint32_t> fullnat_addresses;
  // The local ports of each, split among the workers (fullnat_ports = [first, last]).
  uint16_t fullnat_port_first = 1024;
  uint16_t fullnat_port_last = 65535;
  int line = 0;
};

enum class Scheduler { kRoundRobin, kWeightedRoundRobin, kRandom, kLeastConnections, kMaglev };
enum class Protocol { kTcp };
// How lbd sends a client's packets to the backend (docs/architecture.md#forwarding-modes): kDnat
// rewrites the destination (replies must route back through lbd), kTunnel wraps the packet
// unchanged in IPIP (direct server return: replies go straight to the client), kFullnat also
// rewrites the source to one of lbd's addresses.
enum class Forward : uint8_t { kDnat, kTunnel, kFullnat };

// The health state a backend has before its first check (lb-healthd).
enum class InitialState { kUp, kDown };

// Passive health signals from lbd (docs/healthd.md): this many SYNs answered by RST, or left
// unanswered, within one interval_ms take an up backend down at once. 0 turns a signal off.
struct PassiveConfig {
  uint32_t syn_rst = 0;
  uint32_t syn_timeout = 0;
};

// `line` is 0 when the service has no health group (every key takes its default).
struct HealthConfig {
  std::string path = "/healthcheck";
  uint32_t interval_ms = 1000;
  uint32_t timeout_ms = 500;
  uint32_t rise = 2;
  uint32_t fall = 3;
  uint16_t expect_status_min = 200;  // "200-299", or one code "200"
  uint16_t expect_status_max = 299;
  // Between checks while a flip is in progress (some consecutive results count toward one), and
  // while the backend is down. When left out of the file they equal interval_ms.
  uint32_t fast_interval_ms = 1000;
  uint32_t down_interval_ms = 1000;
  uint32_t jitter_pct = 10;  // each interval is spread by up to +-this percent, 0..50
  std::string expect_body;   // empty: the body is not checked
  std::string host;          // Host header; empty: the backend's address (and port)
  uint16_t port = 0;         // 0: the backend's own port
  InitialState initial_state = InitialState::kUp;
  PassiveConfig passive;
  int line = 0;
};

// Administrative state of a backend (HAProxy's ready / drain / maint).
enum class AdminState { kReady, kDrain, kMaint };

struct BackendConfig {
  uint32_t address = 0;
  uint16_t port = 0;
  uint32_t weight = 1;  // 0 .. 65535; 0 takes no new flows
  AdminState state = AdminState::kReady;
  std::optional<InitialState> initial_state;  // overrides the service's health.initial_state
  int line = 0;
};

// A service whose backends are all out of the live pool: leave it empty (lbd applies its
// no_backend_policy) or, as a last resort, send every backend not in maint (Envoy's panic mode).
enum class AllDownPolicy { kFailClosed, kFailOpen };
// The established flows of a backend in maint: kept until they end, or dropped.
enum class MaintPolicy { kKeep, kDrop };

struct ServiceConfig {
  std::string name;  // unique, [A-Za-z0-9_-]
  uint32_t vip = 0;
  uint16_t port = 0;
  Protocol protocol = Protocol::kTcp;
  Scheduler scheduler = Scheduler::kRoundRobin;
  Forward forward = Forward::kDnat;
  uint32_t maglev_table_size = kDefaultMaglevTableSize;  // prime; used by scheduler maglev
  std::optional<MissPolicy> miss_policy;  // unset: rehash for maglev, else the dataplane's
  // Unset: the dataplane's flows.syn_flood_policy. kStateless: maglev + tunnel services only.
  std::optional<SynFloodPolicy> syn_flood_policy;
  HealthConfig health;
  std::vector<BackendConfig> backends;
  AllDownPolicy on_all_down = AllDownPolicy::kFailClosed;
  MaintPolicy maint = MaintPolicy::kKeep;
  int line = 0;

  MissPolicy effective_miss_policy(const DataplaneConfig& dp) const {
    if (miss_policy) return *miss_policy;
    return rehash_by_default() ? MissPolicy::kRehash : dp.miss_policy;
  }
  // Maglev services rehash their misses unless told otherwise, but for full-NAT: its backend
  // knows a connection by the local address:port of the node that began it, so a flow made
  // for a miss elsewhere (another local port) can never continue it; it would only hold a
  // local port (and flows_rehashed would count connections that are lost anyway).
  bool rehash_by_default() const {
    return scheduler == Scheduler::kMaglev && forward != Forward::kFullnat;
  }
  InitialState initial_state(const BackendConfig& b) const {
    return b.initial_state.value_or(health.initial_state);
  }
};

// lb-healthd's control socket (lbctl talks to it) and where it keeps runtime changes
// (docs/lbctl.md, docs/operations.md). The `healthd` group; lbd ignores it.
struct HealthdConfig {
  // Unset: default_control_socket(instance). Empty: no control socket.
  std::optional<std::string> control_socket;
  uint32_t socket_mode = 0660;  // permission bits of the socket file
  std::string socket_owner;     // a user name or numeric uid; empty: lb-healthd's own
  std::string socket_group;     // a group name or numeric gid; empty: lb-healthd's own
  // Where each was set (0: left out). Whether the account exists is lb-healthd's check (lbd
  // ignores this group), made where it validates the file: healthd_problem().
  int socket_owner_line = 0;
  int socket_group_line = 0;
  // Unset: "<config file>.state". Empty: runtime changes are not persisted. A relative path is
  // relative to the config file's directory.
  std::optional<std::string> state_file;
  uint32_t control_timeout_ms = 10000;  // a client that sends nothing this long is disconnected
  // A backend a reload removes drains first: no new flows, and it leaves lbd's pool once lbd has
  // no flow left on it, or after this long (its remaining connections are then reset). 0: at
  // once. The one key of the group a reload applies.
  uint32_t drain_timeout_ms = 300000;
  // lb-healthd's Prometheus endpoint (GET /metrics, docs/operations.md#monitoring), as
  // "ADDRESS:PORT" (IPv4). Unset: kDefaultMetricsListen, loopback only. Empty: no endpoint.
  std::optional<std::string> metrics_listen;
  int metrics_listen_line = 0;  // 0: left out
  int line = 0;                 // 0 when the group is left out
};

// When a node announces a VIP (lb-healthd's announcer, docs/architecture.md#announcing-vips):
// kServing while lbd is alive, up to date and the VIP has a service with a serving backend;
// kAlive while lbd is alive and up to date, whatever the backends.
enum class AnnounceWhen { kServing, kAlive };

struct BgpNeighbor {
  uint32_t address = 0;
  uint32_t as = 0;
  int line = 0;
};

// The `bgp` group: lb-healthd announces the VIPs as /32 routes through a local BIRD 2, whose
// whole configuration it writes (bird_config) and reloads over BIRD's control socket
// (bird_socket). lbd ignores the group. `line` is 0 when the group is left out (no announcing).
struct BgpConfig {
  uint32_t local_as = 0;
  uint32_t router_id = 0;
  uint32_t next_hop = 0;  // where routers send the VIPs' packets: one of lbd's port addresses
  std::vector<BgpNeighbor> neighbors;
  uint32_t hold_time = 9;  // seconds (BGP's minimum is 3); keepalives every hold_time / 3
  std::vector<std::pair<uint16_t, uint16_t>> communities;  // (asn, value), added to every route
  std::optional<uint32_t> med;
  AnnounceWhen announce_when = AnnounceWhen::kServing;
  // lbd counts as down, and the VIPs go, once its heartbeat has not moved for this long or a
  // generation sent to it has waited this long unapplied.
  uint32_t lbd_timeout_ms = 1000;
  // Unset: default_bird_config(instance) / default_bird_socket(instance).
  std::optional<std::string> bird_config;
  std::optional<std::string> bird_socket;
  int line = 0;
  bool enabled() const { return line != 0; }
};

// Where lb-healthd serves /metrics unless healthd.metrics_listen says otherwise.
inline constexpr const char* kDefaultMetricsListen = "127.0.0.1:9813";

// An endpoint "a.b.c.d:port" (port 1..65535), parsed; nullopt when malformed.
struct ListenAddress {
  uint32_t address = 0;
  uint16_t port = 0;
};
std::optional<ListenAddress> parse_listen(const std::string& text);
// healthd.metrics_listen's value, or the default when unset; "" when the endpoint is off.
std::string metrics_listen(const HealthdConfig& healthd);

struct Config {
  std::string file;  // as given
  // Names this lbd and its lb-healthd: the shared-memory segment is "/lbd-<instance>".
  std::string instance = "lbd";
  int instance_line = 0;  // 0 when the key is left out
  DataplaneConfig dataplane;
  std::vector<ServiceConfig> services;
  HealthdConfig healthd;
  BgpConfig bgp;
};

// Reads and validates a file. Throws ConfigError (with file:line) on any problem, including
// I/O and syntax errors.
Config load_config(const std::string& path);

// The same from text; `name` stands for the file name in errors.
Config parse_config(const std::string& text, const std::string& name);

// "/run/lbd/<instance>.sock": where lb-healthd listens unless healthd.control_socket says
// otherwise.
std::string default_control_socket(const std::string& instance);
// The control socket of lb-healthd for `config` run as `instance` (empty: the config's own);
// "" when the config turns the socket off.
std::string control_socket_path(const Config& config, const std::string& instance = "");
// "/run/lbd/<instance>-bird.conf" and "/run/lbd/<instance>-bird.ctl": the BIRD configuration
// lb-healthd writes and the control socket of the BIRD that reads it, unless bgp.bird_config and
// bgp.bird_socket say otherwise; for `config` run as `instance` (empty: the config's own).
std::string bird_config_path(const Config& config, const std::string& instance = "");
std::string bird_socket_path(const Config& config, const std::string& instance = "");
// The state file for `config` loaded from `config_path`; "" when persistence is off.
std::string state_file_path(const Config& config, const std::string& config_path);

// Parses "a.b.c.d" (strict: four decimal octets, no leading junk). Returns nullopt when malformed.
std::optional<uint32_t> parse_ipv4(const std::string& text);
std::string format_ipv4(uint32_t addr);

const char* to_string(Scheduler s);
const char* to_string(MissPolicy p);
const char* to_string(SynFloodPolicy p);
const char* to_string(NoBackendPolicy p);
const char* to_string(IdleMode m);
const char* to_string(Protocol p);
const char* to_string(Forward f);
const char* to_string(InitialState s);
const char* to_string(AdminState s);
const char* to_string(AllDownPolicy p);
const char* to_string(MaintPolicy p);
const char* to_string(AnnounceWhen w);
const char* to_string(VipArp v);

// Parses an HTTP status range as health.expect_status takes it: "NNN" or "NNN-MMM", codes
// 100..599, NNN <= MMM. Returns {min, max}, or nullopt when malformed.
struct StatusRange {
  uint16_t min = 200;
  uint16_t max = 299;
  bool contains(long status) const { return status >= min && status <= max; }
  bool operator==(const StatusRange&) const = default;
};
std::optional<StatusRange> parse_status_range(std::string_view text);

// The port that reaches `addr`: the first port whose subnet holds it, else the first port (in file
// order) that has a gateway, else nullptr. load_config() refuses a backend for which this is null,
// so the dataplane and the validator agree on where every backend lives.
const PortConfig* egress_port(const DataplaneConfig& dataplane, uint32_t addr);

}  // namespace lb::cfg
