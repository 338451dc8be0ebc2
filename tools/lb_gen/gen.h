#pragma once
// lb-gen's engine: it plays the clients on one DPDK port and the backends on another, with lbd
// (or a plain forwarder) in between, on one lcore. See docs/benchmarking.md.
//
// Flows are numbered. Tuple id t names the client address and port
//     client ip = client_net + t / kPortsPerIp,  client port = kPortBase + t % kPortsPerIp
// so lb-gen finds a flow's state from any packet without hashing. Established-flow runs keep
// `flows` slots; a slot's flow lives on tuple slot or slot + flows (a new connection after a
// FIN uses the other one), so a closed tuple is never reused at once.

#include <cstdint>
#include <string>
#include <vector>

#include "wire.h"

struct rte_mbuf;
struct rte_mempool;

namespace lb::gen {

enum class Peer : uint8_t { kLbd, kIo };

struct Backend {
  uint32_t ip;
  uint16_t port;
};

struct Options {
  uint16_t client_port = 0;
  uint16_t backend_port = 1;
  uint32_t vip = 0;
  uint16_t vport = 80;
  uint64_t flows = 1000;
  double duration = 5;  // measured seconds
  double warmup = 1;    // seconds of load before measuring
  uint16_t burst = 32;
  uint16_t size = 64;       // frame bytes without FCS for data packets
  double syn_share = 0;     // share of client packets that close a flow and open a new one
  bool syn_only = false;    // every client packet is a SYN of a new flow; backends do not answer
  bool client_dir = true;   // send client -> backend data
  bool backend_dir = true;  // send backend -> client data
  bool scattered = false;   // visit established flows in a scattered order, not creation order
  double rate_mpps = 0;     // per direction, 0 = as fast as the ring takes
  Peer peer = Peer::kLbd;
  std::vector<Backend> backends;  // expected backends (lbd) / backends to play (io)
  uint32_t client_net = (10u << 24) | (128u << 16);    // 10.128.0.0
  uint32_t client_ip = (10u << 24) | (10u << 16) | 2;  // ours on the client side, for ARP
  Mac lbd_client_mac;                                  // zero: resolve the VIP by ARP
  Mac lbd_backend_mac;                                 // zero: learn it from lbd's ARP requests
  uint32_t window = 8192;                              // handshakes in flight during setup
  double setup_timeout = 120;                          // seconds
  double link_timeout = 30;
  double resolve_timeout = 15;  // seconds to learn the VIP's MAC and lbd's next-hop ARPs
  double linger = 0;            // after the report, wait up to this long for the peer to disconnect
  bool progress = false;
  bool quiet_errors = false;
};

// The counters lb-gen keeps. Directions: 0 client -> backend, 1 backend -> client.
enum class Err : uint8_t {
  kEth,       // wrong MAC, not IPv4, VLAN, short frame
  kIpHeader,  // IHL, total length, protocol, fragment bits
  kIpChecksum,
  kTcpChecksum,
  kTcpHeader,       // data offset
  kNat,             // backend-side packet not to a backend / reply not from VIP:port
  kUnknownTuple,    // client address or port outside what lb-gen sent
  kUnknownBackend,  // a backend not in --backends
  kBackendChanged,  // an established flow reached another backend
  kTag,             // payload tag names another flow or direction
  kFlags,           // RST or a segment that does not fit the flow's state
  kUnexpected,      // anything else (ICMP, unknown ARP, ...)
  kCount
};
const char* to_string(Err e);

struct Counters {
  uint64_t tx[2]{};             // accepted by the TX ring
  uint64_t flushes[2]{};        // TX bursts handed to the ring
  uint64_t flushes_short[2]{};  // ... of which the ring refused some (full: backpressure)
  uint64_t flushes_zero[2]{};   // ... of which the ring took none
  uint64_t loops = 0;           // polling loop iterations
  uint64_t built = 0;           // packets built (generated and replies)
  uint64_t work_tsc = 0;        // TSC spent receiving, checking, building and sending packets
  uint64_t all_tsc = 0;         // TSC spent in the polling loop
  uint64_t rx[2]{};             // came back and passed every check
  uint64_t rx_bytes[2]{};
  uint64_t syn_tx = 0;       // client SYNs sent
  uint64_t syn_rx = 0;       // SYNs that reached a backend: new flows
  uint64_t resteered = 0;    // a retransmitted SYN reached another backend (lbd's retry)
  uint64_t established = 0;  // handshakes completed (ACK seen at the backend)
  uint64_t closed = 0;       // FIN answered and FIN-ACK seen by the client
  uint64_t replies_tx = 0;   // SYN-ACK, ACK, FIN-ACK, ARP sent by lb-gen in reaction
  uint64_t arp_answered = 0;
  uint64_t ignored = 0;  // frames that are not ours to check (lbd's gratuitous ARP, ...)
  uint64_t errors[static_cast<size_t>(Err::kCount)]{};
  uint64_t error_total() const {
    uint64_t n = 0;
    for (uint64_t e : errors) n += e;
    return n;
  }
};

class Generator {
 public:
  explicit Generator(const Options& o);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // The whole run: wait for links, resolve MACs, set up flows, load, measure, report.
  // `tick` is called about every millisecond from the polling loop (the in-process lbd's
  // control work). Returns the process exit status: 0 clean, 1 errors or setup failure.
  int run(void (*tick)(void*) = nullptr, void* tick_arg = nullptr);

  const Counters& counters() const { return c_; }

 private:
  struct TxQueue {
    uint16_t port = 0;
    rte_mbuf* pend[512];
    uint16_t n = 0;
  };
  // A TCP frame prebuilt with every field that is the same for all flows (MACs, IPv4 and TCP
  // constants, flags, the payload tag's magic and direction), and the one's-complement sums of
  // those fields: a packet is a copy of the template, the per-flow fields stored, and both
  // checksums finished from the template's sums with a few adds (pktgen builds its packets the
  // same way).
  struct Template {
    alignas(64) uint8_t f[64]{};
    uint16_t copy = 0;     // bytes of f to copy: headers, tag or padding
    uint16_t len = 0;      // frame length
    bool tag = false;      // the payload holds the tag
    uint64_t ip_sum = 0;   // the IPv4 header words that do not vary
    uint64_t tcp_sum = 0;  // the pseudo header, TCP header and tag words that do not vary
  };
  // Templates by side (0: clients, toward the VIP; 1: backends, toward clients) and kind.
  enum Kind : uint8_t { kData, kSynKind, kAckKind, kFinAck, kKinds };
  // The per-flow fields of a TCP packet lb-gen sends.
  struct Fields {
    uint32_t sip, dip;
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t bidx;
    uint32_t t;
  };
  // Per tuple: what lb-gen knows of the flow, in one place so that a packet touches one line.
  struct FlowState {
    uint8_t st;  // State
    uint8_t bk;  // backend index + 1, 0 unknown
  };

  // setup and phases
  bool wait_links();
  bool resolve_macs();
  bool setup_flows();
  void load(double seconds, bool measure);
  void drain(double seconds);
  void report(const Counters& a, const Counters& b, double secs, double total_secs);

  // the polling loop's pieces
  void poll_once(bool generate);
  uint16_t rx_port(uint16_t port, bool client_side);
  void on_client_side(const uint8_t* p, uint16_t len);
  void on_backend_side(const uint8_t* p, uint16_t len);
  struct Seen {  // the fields of a checked IPv4 + TCP packet lbd sent back
    uint32_t sip, dip;
    uint16_t sport, dport;
    uint8_t flags;
    uint16_t payload;
  };
  bool check_headers(const uint8_t* p, uint16_t len, Seen& h);
  bool check_frame(const uint8_t* p, uint16_t len, bool client_side, const Mac& want_dst,
                   bool src_ok, Seen& h);
  void on_arp(const uint8_t* p, uint16_t len, bool client_side);
  void prefetch_ahead(uint32_t& ahead);
  void gen_client(uint16_t budget);
  void gen_backend(uint16_t budget);
  uint16_t flush(TxQueue& q, int dir);
  void maybe_tick();

  // packets
  rte_mbuf* alloc();
  void make_templates();
  void make_template(Template& tp, const Mac& dst, const Mac& src, uint8_t flags, uint16_t payload,
                     uint8_t dir);
  static uint16_t stamp(uint8_t* f, const Template& tp, const Fields& x);
  static Kind kind_of(uint8_t flags);
  // `reply`: a reaction to what came back, sent before generated traffic.
  void send_client(uint32_t t, uint8_t flags, bool reply);
  void send_backend(uint32_t t, uint8_t flags, bool reply);
  void send_arp(uint16_t port, uint16_t op, const Mac& eth_dst, const Mac& sha, uint32_t spa,
                const Mac& tha, uint32_t tpa);
  void send_arp_request(uint16_t port, const Mac& src, uint32_t sip, uint32_t tip);
  void queue(TxQueue& q, rte_mbuf* m);

  // flows
  uint32_t client_ip(uint32_t t) const { return o_.client_net + t / kPortsPerIp; }
  uint16_t client_tcp_port(uint32_t t) const {
    return static_cast<uint16_t>(kPortBase + t % kPortsPerIp);
  }
  bool tuple_of(uint32_t ip, uint16_t port, uint32_t& t) const;
  uint32_t current_tuple(uint32_t slot) const {
    return churn_ && gen_[slot] ? slot + slots_ : slot;
  }
  uint32_t advance(uint32_t cursor) const {  // the next slot to visit (step_ < slots_)
    const uint32_t n = cursor + step_;
    return n >= slots_ ? n - slots_ : n;
  }
  uint8_t backend_index(uint32_t ip, uint16_t port);
  bool error(Err e, const uint8_t* p, uint16_t len, const char* why);

  static constexpr uint32_t kPortsPerIp = 60000;
  static constexpr uint16_t kPortBase = 2048;
  enum State : uint8_t {
    kIdle = 0,
    kSynSent,      // client SYN sent
    kSynSeen,      // SYN reached a backend, SYN-ACK sent
    kSynAckSeen,   // SYN-ACK (NATed) reached the client, ACK sent
    kEstablished,  // the ACK reached the backend: lbd has the flow ESTABLISHED
    kFinSent,      // client FIN sent (the slot moved on to its other tuple)
    kClosed,       // FIN-ACK reached the client
  };

  Options o_;
  Counters c_;
  uint64_t hz_;
  rte_mempool* tx_pool_ = nullptr;
  rte_mempool* rx_pool_ = nullptr;
  Mac my_client_mac_, my_backend_mac_;
  Mac lbd_client_mac_, lbd_backend_mac_;
  bool have_lbd_backend_mac_ = false;
  std::vector<Backend> seen_backends_;  // index + 1 is what bk_ stores
  std::vector<bool> arp_done_;          // per expected backend: its ARP request was answered

  uint32_t slots_ = 0;         // concurrent flows
  uint32_t tuples_ = 0;        // tuple ids in use
  std::vector<FlowState> fs_;  // per tuple
  std::vector<uint8_t> gen_;   // per slot: which of its two tuples is current (--syn-share)
  bool churn_ = false;         // --syn-share: slots move between their two tuples
  uint32_t client_cursor_ = 0;
  uint32_t backend_cursor_ = 0;
  static constexpr uint32_t kAhead = 32;  // flows a cursor's prefetch runs ahead of it
  uint32_t client_ahead_ = 0;             // the slot each cursor visits kAhead steps later
  uint32_t backend_ahead_ = 0;
  uint32_t step_ = 1;  // cursor stride: 1, or (scattered) ~0.618 slots, coprime with slots
  uint64_t syn_cursor_ = 0;
  double churn_acc_ = 0;

  TxQueue txq_[2];  // [0] client port, [1] backend port: generated data
  Template tpl_[2][kKinds];
  // mbufs taken from the pool a burst at a time
  rte_mbuf* spare_[64];
  uint16_t nspare_ = 0;
  TxQueue replies_[2];  // reactive packets, sent before generated ones
  // pacing
  uint64_t next_tx_tsc_[2]{};
  uint64_t tsc_per_burst_ = 0;
  uint64_t last_tick_ = 0;
  void (*tick_)(void*) = nullptr;
  void* tick_arg_ = nullptr;
  uint32_t errors_printed_ = 0;
  uint64_t lbd_unexpected_arp_ = 0;
};

}  // namespace lb::gen
