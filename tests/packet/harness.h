#pragma once
// The packet-test harness: a real lb::dp::Dataplane on two DPDK net_ring ports ("client" and
// "backend"), one RX and one TX rte_ring per port and worker. Tests put frames on a port's RX
// ring (queue = worker), call Dataplane::poll() with an injected clock, and read back what the
// dataplane put on the TX rings. EAL must be initialised (see main.cc).
//
// Every Harness uses fresh rings, ports and a mempool of its own, all named with a per-process
// sequence number, so tests do not see each other's state.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane.h"
#include "packet_builder.h"

struct rte_mempool;
struct rte_ring;

namespace lb::test {

inline constexpr uint16_t kClientPort = 0;   // port index in the config (10.10.0.1/24)
inline constexpr uint16_t kBackendPort = 1;  // 10.20.0.1/24, reaches the backends
inline constexpr uint16_t kPorts = 2;

// What varies between cases in the generated config.
struct HarnessOptions {
  uint16_t workers = 1;
  const char* miss_policy = "drop";       // "drop" | "rst"
  const char* no_backend_policy = "rst";  // "rst" | "drop"
  bool retry_on_rst = true;
  bool channel = false;  // create the pool channel (shm segment) lb-healthd would attach to
  uint32_t flow_capacity = 1024;  // per worker
  const char* forward = "dnat";   // the service "web"'s forward mode
  const char* scheduler = "rr";   // the service "web"'s scheduler
  std::string flows_extra;        // more settings of dataplane.flows (SYN floods)
  std::string web_extra;          // more settings of the service "web"
  uint8_t backends = 3;           // the config's service "web" has the first N of 10.20.0.11 .. 13
  std::string services_extra;     // more services, each "{ ... },\n", before the service "empty"
  dp::FlowMemoryOptions flows;    // with an instance: flow tables in files (flow_memory.h)
  // Service "web" in full-NAT mode from 10.20.0.50 (and 10.20.0.51 with 2 addresses), local
  // ports [fullnat_first, fullnat_last].
  bool fullnat = false;
  uint8_t fullnat_addresses = 1;
  uint16_t fullnat_first = 1024;
  uint16_t fullnat_last = 65535;
};

// A frame taken off a TX ring.
struct Emitted {
  uint16_t port;
  uint16_t queue;
  Bytes frame;
};

// The MAC addresses the harness gives the two ports.
inline const MacAddr kLbClientMac = mac(0x02, 0x1b, 0xd0, 0x00, 0x00, 0x01);
inline const MacAddr kLbBackendMac = mac(0x02, 0x1b, 0xd0, 0x00, 0x00, 0x02);

class Harness {
 public:
  explicit Harness(const HarnessOptions& options);
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  dp::Dataplane& dp() { return *dp_; }
  const std::string& config_text() const { return config_text_; }
  // The channel's segment name (empty without HarnessOptions::channel).
  const std::string& shm_name() const { return shm_name_; }
  uint16_t workers() const { return workers_; }

  // Puts a copy of `frame` on RX queue `queue` of port `port` (an index: kClientPort, ...).
  void inject(uint16_t port, uint16_t queue, const Bytes& frame);
  // The same, as a chain of two mbufs: bytes [0, split) and [split, end).
  void inject_chained(uint16_t port, uint16_t queue, const Bytes& frame, size_t split);

  // `rounds` times: polls worker `first`, then every other worker in order, at time `now`.
  void poll(uint16_t first, int rounds);

  // Takes every frame off every TX ring: by port, then queue, then ring order.
  std::vector<Emitted> drain();

  core::Tick now = 0;

 private:
  void setup(const HarnessOptions& options);
  std::string device_name(uint16_t port) const;
  void release();  // everything the constructor made, also when it fails halfway
  static void free_ring_contents(rte_ring* r);

  uint16_t workers_;
  unsigned seq_;
  std::string config_text_;
  std::string shm_name_;
  std::string port_names_[kPorts];
  rte_mempool* pool_ = nullptr;
  std::vector<rte_ring*> rx_[kPorts];
  std::vector<rte_ring*> tx_[kPorts];
  std::unique_ptr<dp::Dataplane> dp_;
};

}  // namespace lb::test
