#include "gen.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_prefetch.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <stdexcept>

namespace lb::gen {

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) {
  g_stop.store(true, std::memory_order_relaxed);
}

constexpr uint16_t kRing = 1024;
constexpr double kStallSeconds = 0.5;
constexpr int kMaxSetupPasses = 40;
constexpr uint32_t kMaxBackends = 64;
constexpr uint32_t kPrintErrors = 8;

// Mbuf data rooms are zeroed once: lb-gen writes headers and the payload tag only, so the rest
// of every payload is zero and the TCP checksum needs only the bytes it wrote.
void zero_data(rte_mempool*, void*, void* obj, unsigned) {
  auto* m = static_cast<rte_mbuf*>(obj);
  std::memset(static_cast<uint8_t*>(m->buf_addr), 0, m->buf_len);
}

uint32_t client_isn(uint32_t t) {
  return t * 2654435761u + 1;
}
uint32_t backend_isn(uint32_t t) {
  return t * 40503u + 7;
}

}  // namespace

const char* to_string(Err e) {
  switch (e) {
    case Err::kEth:
      return "ethernet";
    case Err::kIpHeader:
      return "ip_header";
    case Err::kIpChecksum:
      return "ip_checksum";
    case Err::kTcpChecksum:
      return "tcp_checksum";
    case Err::kTcpHeader:
      return "tcp_header";
    case Err::kNat:
      return "nat";
    case Err::kUnknownTuple:
      return "unknown_tuple";
    case Err::kUnknownBackend:
      return "unknown_backend";
    case Err::kBackendChanged:
      return "backend_changed";
    case Err::kTag:
      return "payload_tag";
    case Err::kFlags:
      return "tcp_flags_or_state";
    case Err::kUnexpected:
      return "unexpected_frame";
    case Err::kCount:
      break;
  }
  return "?";
}

Generator::Generator(const Options& o) : o_(o), hz_(rte_get_tsc_hz()) {
  if (o_.flows == 0) throw std::runtime_error("--flows must be at least 1");
  if (o_.size < kMinFrame || o_.size > kMaxFrame)
    throw std::runtime_error("--size must be 60..1514 (frame bytes without FCS)");
  if (o_.burst == 0 || o_.burst > 256) throw std::runtime_error("--burst must be 1..256");
  if (o_.syn_share < 0 || o_.syn_share > 0.5)
    throw std::runtime_error("--syn-share must be 0..0.5");
  if (o_.syn_only && o_.syn_share > 0)
    throw std::runtime_error("--syn-only and --syn-share exclude each other");
  const uint64_t tuples = o_.syn_only ? o_.flows : (o_.syn_share > 0 ? 2 * o_.flows : o_.flows);
  if (tuples > (uint64_t{1} << 26))
    throw std::runtime_error("too many flows: at most 64 Mi tuples (32 Mi flows with --syn-share)");
  tuples_ = static_cast<uint32_t>(tuples);
  slots_ = o_.syn_only ? 0 : static_cast<uint32_t>(o_.flows);
  fs_.assign(tuples_, FlowState{kIdle, 0});
  churn_ = o_.syn_share > 0;
  gen_.assign(churn_ ? slots_ : 0, 0);
  if (o_.scattered && slots_ > 2) {
    // A stride coprime with the slot count visits every slot once per round, each next one
    // far from the last: the forwarder's flow records are touched out of creation order.
    step_ = static_cast<uint32_t>(double(slots_) * 0.6180339887);
    while (std::gcd(step_, slots_) != 1) ++step_;
  }
  if (slots_ > 0) {
    for (uint32_t i = 0; i < kAhead; ++i) client_ahead_ = advance(client_ahead_);
    backend_ahead_ = client_ahead_;
  }
  if (o_.backends.size() > kMaxBackends) throw std::runtime_error("at most 64 backends");
  if (o_.peer == Peer::kIo) {
    if (o_.backends.empty()) o_.backends.push_back({(10u << 24) | (20u << 16) | 11, 8080});
    seen_backends_ = o_.backends;
  }
  arp_done_.assign(o_.backends.size(), false);
  if (o_.rate_mpps > 0)
    tsc_per_burst_ =
        static_cast<uint64_t>(static_cast<double>(hz_) * o_.burst / (o_.rate_mpps * 1e6));

  const int socket = static_cast<int>(rte_socket_id());
  tx_pool_ = rte_pktmbuf_pool_create("lbgen_tx", 65535, 512, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
  rx_pool_ = rte_pktmbuf_pool_create("lbgen_rx", 16383, 512, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
  if (!tx_pool_ || !rx_pool_)
    throw std::runtime_error(
        "cannot create lb-gen's mbuf pools (hugepages, or -m with --no-huge?)");
  rte_mempool_obj_iter(tx_pool_, zero_data, nullptr);

  const uint16_t ports[2] = {o_.client_port, o_.backend_port};
  if (ports[0] == ports[1]) throw std::runtime_error("client and backend ports must differ");
  for (uint16_t p : ports) {
    if (!rte_eth_dev_is_valid_port(p))
      throw std::runtime_error("port " + std::to_string(p) + " does not exist (" +
                               std::to_string(rte_eth_dev_count_avail()) +
                               " ports; give them with --vdev)");
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(p, 1, 1, &conf) != 0)
      throw std::runtime_error("cannot configure port " + std::to_string(p));
    uint16_t nrx = kRing, ntx = kRing;
    rte_eth_dev_adjust_nb_rx_tx_desc(p, &nrx, &ntx);
    const int ps = rte_eth_dev_socket_id(p) < 0 ? 0 : rte_eth_dev_socket_id(p);
    if (rte_eth_rx_queue_setup(p, 0, nrx, static_cast<unsigned>(ps), nullptr, rx_pool_) != 0 ||
        rte_eth_tx_queue_setup(p, 0, ntx, static_cast<unsigned>(ps), nullptr) != 0)
      throw std::runtime_error("cannot set up the queues of port " + std::to_string(p));
    if (rte_eth_dev_start(p) != 0)
      throw std::runtime_error("cannot start port " + std::to_string(p));
    rte_eth_promiscuous_enable(p);  // not every PMD has it; memif and ring take everything
  }
  rte_ether_addr a;
  rte_eth_macaddr_get(o_.client_port, &a);
  std::memcpy(my_client_mac_.b, a.addr_bytes, 6);
  rte_eth_macaddr_get(o_.backend_port, &a);
  std::memcpy(my_backend_mac_.b, a.addr_bytes, 6);
  lbd_client_mac_ = o_.lbd_client_mac;
  lbd_backend_mac_ = o_.lbd_backend_mac;
  have_lbd_backend_mac_ = !lbd_backend_mac_.zero();
  if (o_.peer == Peer::kIo) {
    // A plain forwarder does not care; pick recognisable unicast addresses.
    if (lbd_client_mac_.zero()) lbd_client_mac_ = Mac{{0x02, 0, 0, 0, 0xfe, 0x01}};
    if (lbd_backend_mac_.zero()) lbd_backend_mac_ = Mac{{0x02, 0, 0, 0, 0xfe, 0x02}};
  }
  txq_[0].port = replies_[0].port = o_.client_port;
  txq_[1].port = replies_[1].port = o_.backend_port;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

Generator::~Generator() {
  for (TxQueue* q : {&txq_[0], &txq_[1], &replies_[0], &replies_[1]}) {
    rte_pktmbuf_free_bulk(q->pend, q->n);
    q->n = 0;
  }
  for (uint16_t p : {o_.client_port, o_.backend_port}) {
    rte_eth_dev_stop(p);
    rte_eth_dev_close(p);
  }
  rte_mempool_free(tx_pool_);
  rte_mempool_free(rx_pool_);
}

// ---------------------------------------------------------------------------------------------
// Packets

rte_mbuf* Generator::alloc() {
  ++c_.built;
  if (nspare_ == 0) {
    // A burst's worth at a time: one trip to the mempool instead of one per packet.
    if (rte_pktmbuf_alloc_bulk(tx_pool_, spare_, 32) != 0)
      throw std::runtime_error("lb-gen's TX mbuf pool is exhausted (mbufs leaking?)");
    nspare_ = 32;
  }
  return spare_[--nspare_];
}

void Generator::make_template(Template& tp, const Mac& dst, const Mac& src, uint8_t flags,
                              uint16_t payload, uint8_t dir) {
  uint8_t* f = tp.f;
  std::memset(f, 0, sizeof tp.f);
  dst.put(f);
  src.put(f + 6);
  wr16(f + 12, kTypeIpv4);
  uint8_t* ip = f + kIp;
  ip[0] = 0x45;
  wr16(ip + 2, static_cast<uint16_t>(40 + payload));
  wr16(ip + 6, 0x4000);
  ip[8] = 64;
  ip[9] = 6;
  uint8_t* tcp = f + kTcp;
  tcp[12] = 0x50;
  tcp[13] = flags;
  wr16(tcp + 14, 65535);
  tp.tag = payload >= kTagLen;
  if (tp.tag) {
    wr16(f + kPayload, kTagMagic);
    f[kPayload + 2] = dir;
  }
  // Identification, addresses, ports, sequence numbers, tag backend and tuple are zero here:
  // stamp() adds them to these sums.
  tp.ip_sum = sum_words(ip, 20);
  tp.tcp_sum = sum_words(tcp, 20 + (tp.tag ? kTagLen : 0), 6u + 20u + payload);
  const uint16_t len = static_cast<uint16_t>(kPayload + payload);
  tp.len = std::max<uint16_t>(len, kMinFrame);
  // Up to the tag, or the Ethernet padding (zero) of a short frame; the payload past the tag is
  // zero in every mbuf (zero_data) and never written.
  tp.copy = std::max<uint16_t>(
      static_cast<uint16_t>(kPayload + std::min<uint16_t>(payload, kTagLen)), kMinFrame);
}

void Generator::make_templates() {
  const uint16_t data = static_cast<uint16_t>(o_.size - kPayload);
  const Mac* mac[2][2] = {{&lbd_client_mac_, &my_client_mac_},
                          {&lbd_backend_mac_, &my_backend_mac_}};
  const uint8_t syn[2] = {flag::kSyn, flag::kSyn | flag::kAck};
  for (uint8_t side = 0; side < 2; ++side) {
    const Mac& dst = *mac[side][0];
    const Mac& src = *mac[side][1];
    make_template(tpl_[side][kData], dst, src, flag::kAck | flag::kPsh, data, side);
    make_template(tpl_[side][kSynKind], dst, src, syn[side], 0, side);
    make_template(tpl_[side][kAckKind], dst, src, flag::kAck, 0, side);
    make_template(tpl_[side][kFinAck], dst, src, flag::kFin | flag::kAck, 0, side);
  }
}

Generator::Kind Generator::kind_of(uint8_t flags) {
  if (flags & flag::kFin) return kFinAck;
  if (flags & flag::kSyn) return kSynKind;
  if (flags & flag::kPsh) return kData;
  return kAckKind;
}

uint16_t Generator::stamp(uint8_t* f, const Template& tp, const Fields& x) {
  std::memcpy(f, tp.f, tp.copy);
  uint8_t* ip = f + kIp;
  const uint16_t id = static_cast<uint16_t>(x.t);
  wr16(ip + 4, id);
  wr32(ip + 12, x.sip);
  wr32(ip + 16, x.dip);
  // A 32-bit value added whole sums its two 16-bit words once folded.
  wr16(ip + 10, finish(tp.ip_sum + id + x.sip + x.dip));
  uint8_t* tcp = f + kTcp;
  wr16(tcp, x.sport);
  wr16(tcp + 2, x.dport);
  wr32(tcp + 4, x.seq);
  wr32(tcp + 8, x.ack);
  uint64_t acc = tp.tcp_sum + x.sip + x.dip + x.sport + x.dport + x.seq + x.ack;
  if (tp.tag) {
    f[kPayload + 3] = x.bidx;
    wr32(f + kPayload + 4, x.t);
    acc += uint64_t{x.bidx} + x.t;
  }
  wr16(tcp + 16, finish(acc));
  return tp.len;
}

void Generator::queue(TxQueue& q, rte_mbuf* m) {
  if (q.n == sizeof q.pend / sizeof q.pend[0]) {
    // Only replies can pile up this far (the ring refuses everything for a long time).
    flush(q, q.port == o_.client_port ? 0 : 1);
    if (q.n == sizeof q.pend / sizeof q.pend[0]) {
      rte_pktmbuf_free(m);
      return;
    }
  }
  q.pend[q.n++] = m;
}

void Generator::send_client(uint32_t t, uint8_t flags, bool reply) {
  const Template& tp = tpl_[0][kind_of(flags)];
  rte_mbuf* m = alloc();
  const uint8_t bk = fs_[t].bk;
  const Fields x{client_ip(t),
                 o_.vip,
                 client_tcp_port(t),
                 o_.vport,
                 client_isn(t) + ((flags & flag::kSyn) ? 0 : 1),
                 (flags & flag::kAck) ? backend_isn(t) + 1 : 0,
                 static_cast<uint8_t>(bk ? bk - 1 : 0xff),
                 t};
  const uint16_t len = stamp(rte_pktmbuf_mtod(m, uint8_t*), tp, x);
  m->data_len = len;
  m->pkt_len = len;
  queue(reply ? replies_[0] : txq_[0], m);
}

void Generator::send_backend(uint32_t t, uint8_t flags, bool reply) {
  const Template& tp = tpl_[1][kind_of(flags)];
  const uint8_t bidx = static_cast<uint8_t>(fs_[t].bk - 1u);
  const Backend& b = seen_backends_[bidx];
  rte_mbuf* m = alloc();
  const Fields x{b.ip,
                 client_ip(t),
                 b.port,
                 client_tcp_port(t),
                 backend_isn(t) + ((flags & flag::kSyn) ? 0 : 1),
                 client_isn(t) + 1,
                 bidx,
                 t};
  const uint16_t len = stamp(rte_pktmbuf_mtod(m, uint8_t*), tp, x);
  m->data_len = len;
  m->pkt_len = len;
  queue(reply ? replies_[1] : txq_[1], m);
}

void Generator::send_arp(uint16_t port, uint16_t op, const Mac& eth_dst, const Mac& sha,
                         uint32_t spa, const Mac& tha, uint32_t tpa) {
  rte_mbuf* m = alloc();
  uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
  std::memset(f, 0, kMinFrame);
  eth_dst.put(f);
  sha.put(f + 6);
  wr16(f + 12, kTypeArp);
  uint8_t* a = f + kEthHdr;
  wr16(a, 1);
  wr16(a + 2, kTypeIpv4);
  a[4] = 6;
  a[5] = 4;
  wr16(a + 6, op);
  sha.put(a + 8);
  wr32(a + 14, spa);
  tha.put(a + 18);
  wr32(a + 24, tpa);
  m->data_len = kMinFrame;
  m->pkt_len = kMinFrame;
  if (rte_eth_tx_burst(port, 0, &m, 1) != 1) rte_pktmbuf_free(m);
}

void Generator::send_arp_request(uint16_t port, const Mac& src, uint32_t sip, uint32_t tip) {
  Mac broadcast;
  std::memset(broadcast.b, 0xff, sizeof broadcast.b);
  send_arp(port, 1, broadcast, src, sip, Mac{}, tip);
}

// ---------------------------------------------------------------------------------------------
// What comes back

bool Generator::tuple_of(uint32_t ip, uint16_t port, uint32_t& t) const {
  if (ip < o_.client_net || port < kPortBase || port >= kPortBase + kPortsPerIp) return false;
  const uint64_t v = uint64_t{ip - o_.client_net} * kPortsPerIp + (port - kPortBase);
  if (v >= tuples_) return false;
  t = static_cast<uint32_t>(v);
  return true;
}

uint8_t Generator::backend_index(uint32_t ip, uint16_t port) {
  for (size_t i = 0; i < seen_backends_.size(); ++i)
    if (seen_backends_[i].ip == ip && seen_backends_[i].port == port)
      return static_cast<uint8_t>(i + 1);
  if (o_.peer == Peer::kLbd && !o_.backends.empty()) {
    // Expected list given: a backend in it not seen yet gets its index now.
    for (const Backend& b : o_.backends) {
      if (b.ip == ip && b.port == port) {
        seen_backends_.push_back(b);
        return static_cast<uint8_t>(seen_backends_.size());
      }
    }
    return 0;
  }
  if (seen_backends_.size() >= kMaxBackends || ip == o_.vip) return 0;
  seen_backends_.push_back({ip, port});
  return static_cast<uint8_t>(seen_backends_.size());
}

bool Generator::error(Err e, const uint8_t* p, uint16_t len, const char* why) {
  ++c_.errors[static_cast<size_t>(e)];
  if (!o_.quiet_errors && errors_printed_ < kPrintErrors) {
    ++errors_printed_;
    std::fprintf(stderr, "lb-gen: ERROR %s: %s (frame of %u bytes)\n%s\n", to_string(e), why, len,
                 hex(p, len, 64).c_str());
  }
  return false;
}

void Generator::on_arp(const uint8_t* p, uint16_t len, bool client_side) {
  if (len < kEthHdr + 28) {
    error(Err::kUnexpected, p, len, "short ARP");
    return;
  }
  const uint8_t* a = p + kEthHdr;
  const uint16_t op = rd16(a + 6);
  const Mac sha = Mac::at(a + 8);
  const uint32_t spa = rd32(a + 14);
  const uint32_t tpa = rd32(a + 24);
  if (client_side) {
    if (op == 2 && spa == o_.vip && tpa == o_.client_ip) {
      lbd_client_mac_ = sha;
      return;
    }
    ++c_.ignored;
    return;
  }
  if (op != 1) {
    ++c_.ignored;
    return;
  }
  // lbd resolving a next hop: every backend (and gateway) is lb-gen's backend port.
  if (!have_lbd_backend_mac_) {
    lbd_backend_mac_ = sha;
    have_lbd_backend_mac_ = true;
  }
  for (size_t i = 0; i < o_.backends.size(); ++i)
    if (o_.backends[i].ip == tpa) arp_done_[i] = true;
  send_arp(o_.backend_port, 2, sha, my_backend_mac_, tpa, sha, spa);  // the reply
  ++c_.arp_answered;
}

// Frames lb-gen's backend port receives: client -> backend through the forwarder.
// The IPv4 + TCP checks every packet lbd sends back must pass, on either side; false (with the
// error counted) when one fails.
bool Generator::check_headers(const uint8_t* p, uint16_t len, Seen& h) {
  if (len < kPayload) {
    error(Err::kIpHeader, p, len, "shorter than IPv4 + TCP headers");
    return false;
  }
  const uint8_t* ip = p + kIp;
  const uint16_t total = rd16(ip + 2);
  if (ip[0] != 0x45 || total < 40 || size_t{kEthHdr} + total > len || (rd16(ip + 6) & 0x3fff) ||
      ip[9] != 6) {
    error(Err::kIpHeader, p, len, "IPv4 header (version/IHL, length, fragment or protocol)");
    return false;
  }
  if (!ip_csum_ok(p)) {
    error(Err::kIpChecksum, p, len, "IPv4 header checksum");
    return false;
  }
  const uint8_t* tcp = p + kTcp;
  if ((tcp[12] >> 4) != 5) {
    error(Err::kTcpHeader, p, len, "TCP data offset (lb-gen sends no options)");
    return false;
  }
  if (!tcp_csum_ok(p, total)) {
    error(Err::kTcpChecksum, p, len, "TCP checksum");
    return false;
  }
  const uint32_t sip = rd32(ip + 12), dip = rd32(ip + 16);
  const uint16_t sport = rd16(tcp), dport = rd16(tcp + 2);
  const uint8_t flags = tcp[13];
  const uint16_t payload = static_cast<uint16_t>(total - 40);
  h = {sip, dip, sport, dport, flags, payload};
  return true;
}

// The Ethernet checks both sides share, then the IPv4/TCP ones: false when the frame was
// handled here (an ARP) or counted as an error. `src_ok` is false when the source MAC is wrong.
bool Generator::check_frame(const uint8_t* p, uint16_t len, bool client_side, const Mac& want_dst,
                            bool src_ok, Seen& h) {
  if (len < kEthHdr) {
    error(Err::kEth, p, len, "runt frame");
    return false;
  }
  const uint16_t type = rd16(p + 12);
  if (type == kTypeArp) {
    on_arp(p, len, client_side);
    return false;
  }
  if (type != kTypeIpv4) {
    error(Err::kEth, p, len,
          client_side ? "not IPv4 (or tagged) on the client side"
                      : "not IPv4 (or tagged) on the backend side");
    return false;
  }
  if (Mac::at(p) != want_dst || !src_ok) {
    error(Err::kEth, p, len,
          client_side ? "wrong Ethernet addresses on the client side"
                      : "wrong Ethernet addresses on the backend side");
    return false;
  }
  return check_headers(p, len, h);
}

void Generator::on_backend_side(const uint8_t* p, uint16_t len) {
  const bool lbd = o_.peer == Peer::kLbd;
  const Mac src = len >= kEthHdr ? Mac::at(p + 6) : Mac{};
  Seen h;
  if (!check_frame(
          p, len, false, lbd ? my_backend_mac_ : lbd_client_mac_,
          lbd ? (!have_lbd_backend_mac_ || src == lbd_backend_mac_) : src == my_client_mac_, h))
    return;
  const uint32_t sip = h.sip, dip = h.dip;
  const uint16_t sport = h.sport, dport = h.dport;
  const uint8_t flags = h.flags;
  const uint16_t payload = h.payload;
  uint32_t t;
  if (!tuple_of(sip, sport, t)) {
    error(Err::kUnknownTuple, p, len, "source is no client of lb-gen's");
    return;
  }
  if (flags & flag::kRst) {
    error(Err::kFlags, p, len, "RST toward a backend");
    return;
  }
  if (payload >= kTagLen) {
    const uint8_t* tag = p + kPayload;
    if (rd16(tag) != kTagMagic || tag[2] != 0 || rd32(tag + 4) != t) {
      error(Err::kTag, p, len, "payload tag names another flow or direction");
      return;
    }
  }
  if (!lbd) {
    if (dip != o_.vip || dport != o_.vport) {
      error(Err::kNat, p, len, "io forwarder changed the destination");
      return;
    }
    if (o_.syn_only) ++c_.syn_rx;
    ++c_.rx[0];
    c_.rx_bytes[0] += len;
    return;
  }
  if (dip == o_.vip && dport == o_.vport) {
    error(Err::kNat, p, len, "reached the backend side still addressed to the VIP");
    return;
  }
  const uint8_t b = backend_index(dip, dport);
  if (b == 0) {
    error(Err::kUnknownBackend, p, len, "destination is not a backend of the service");
    return;
  }
  if (o_.syn_only) {
    if (flags != flag::kSyn) {
      error(Err::kFlags, p, len, "SYN-only run: not a SYN");
      return;
    }
    fs_[t].bk = b;
    ++c_.syn_rx;
    ++c_.rx[0];
    c_.rx_bytes[0] += len;
    return;
  }
  uint8_t& s = fs_[t].st;
  if (flags & flag::kSyn) {
    if (flags & flag::kAck) {
      error(Err::kFlags, p, len, "SYN-ACK toward a backend");
      return;
    }
    if (s == kSynSent) {
      fs_[t].bk = b;
      s = kSynSeen;
      ++c_.syn_rx;
    } else if (s == kSynSeen) {
      // lb-gen retransmitted the SYN (its SYN-ACK was lost): lbd may move it to another
      // backend (retry on SYN timeout), which is its documented behaviour.
      if (fs_[t].bk != b) {
        ++c_.resteered;
        fs_[t].bk = b;
      }
    } else if (s == kSynAckSeen || s == kEstablished) {
      if (fs_[t].bk != b) {
        error(Err::kBackendChanged, p, len, "SYN of a live flow went to another backend");
        return;
      }
    } else {
      error(Err::kFlags, p, len, "SYN for a flow lb-gen did not open");
      return;
    }
    send_backend(t, flag::kSyn | flag::kAck, true);
    ++c_.replies_tx;
  } else {
    if (fs_[t].bk == 0) {
      error(Err::kFlags, p, len, "segment of a flow whose SYN never reached a backend");
      return;
    }
    if (fs_[t].bk != b) {
      error(Err::kBackendChanged, p, len, "flow reached another backend than its SYN");
      return;
    }
    if (flags & flag::kFin) {
      if (s != kFinSent) {
        error(Err::kFlags, p, len, "FIN for a flow lb-gen did not close");
        return;
      }
      send_backend(t, flag::kFin | flag::kAck, true);
      ++c_.replies_tx;
    } else if (payload == 0) {
      if (s == kSynAckSeen) {
        s = kEstablished;
        ++c_.established;
      } else if (s != kEstablished) {
        error(Err::kFlags, p, len, "ACK of a flow in the wrong state");
        return;
      }
    } else if (s != kEstablished && s != kFinSent) {
      error(Err::kFlags, p, len, "data of a flow that is not established");
      return;
    }
  }
  ++c_.rx[0];
  c_.rx_bytes[0] += len;
}

// Frames lb-gen's client port receives: backend -> client through the forwarder.
void Generator::on_client_side(const uint8_t* p, uint16_t len) {
  const bool lbd = o_.peer == Peer::kLbd;
  const Mac src = len >= kEthHdr ? Mac::at(p + 6) : Mac{};
  Seen h;
  if (!check_frame(p, len, true, lbd ? my_client_mac_ : lbd_backend_mac_,
                   src == (lbd ? lbd_client_mac_ : my_backend_mac_), h))
    return;
  const uint32_t sip = h.sip, dip = h.dip;
  const uint16_t sport = h.sport, dport = h.dport;
  const uint8_t flags = h.flags;
  const uint16_t payload = h.payload;
  uint32_t t;
  if (!tuple_of(dip, dport, t)) {
    error(Err::kUnknownTuple, p, len, "destination is no client of lb-gen's");
    return;
  }
  if (o_.syn_only) {
    error(Err::kFlags, p, len, "SYN-only run: nothing should come back to the clients");
    return;
  }
  if (fs_[t].bk == 0) {
    error(Err::kFlags, p, len, "reply for a flow that has no backend");
    return;
  }
  if (lbd) {
    if (sip != o_.vip || sport != o_.vport) {
      error(Err::kNat, p, len, "reply not translated back to the VIP");
      return;
    }
  } else {
    const Backend& b = seen_backends_[fs_[t].bk - 1u];
    if (sip != b.ip || sport != b.port) {
      error(Err::kNat, p, len, "io forwarder changed the source");
      return;
    }
  }
  if (flags & flag::kRst) {
    error(Err::kFlags, p, len, "RST to a client");
    return;
  }
  if (payload >= kTagLen) {
    const uint8_t* tag = p + kPayload;
    if (rd16(tag) != kTagMagic || tag[2] != 1 || rd32(tag + 4) != t || tag[3] != fs_[t].bk - 1u) {
      error(Err::kTag, p, len, "payload tag names another flow, backend or direction");
      return;
    }
  }
  uint8_t& s = fs_[t].st;
  if ((flags & (flag::kSyn | flag::kAck)) == (flag::kSyn | flag::kAck)) {
    if (s == kSynSeen) {
      s = kSynAckSeen;
    } else if (s != kSynAckSeen && s != kEstablished) {
      error(Err::kFlags, p, len, "SYN-ACK in the wrong state");
      return;
    }
    if (s == kSynAckSeen) {
      send_client(t, flag::kAck, true);
      ++c_.replies_tx;
    }
  } else if (flags & flag::kSyn) {
    error(Err::kFlags, p, len, "SYN to a client");
    return;
  } else if (flags & flag::kFin) {
    if (s != kFinSent) {
      error(Err::kFlags, p, len, "FIN-ACK for a flow lb-gen did not close");
      return;
    }
    s = kClosed;
    ++c_.closed;
  } else if (lbd && s != kEstablished && s != kFinSent) {
    error(Err::kFlags, p, len, "data to a client of a flow that is not established");
    return;
  }
  ++c_.rx[1];
  c_.rx_bytes[1] += len;
}

uint16_t Generator::rx_port(uint16_t port, bool client_side) {
  rte_mbuf* burst[64];
  const uint16_t n = rte_eth_rx_burst(port, 0, burst, 64);
  // First the flow state of every frame of the burst is prefetched (its tuple is in headers the
  // PMD has just written), then the frames are checked: the misses overlap instead of queueing.
  for (uint16_t i = 0; i < n; ++i) {
    const uint8_t* p = rte_pktmbuf_mtod(burst[i], const uint8_t*);
    if (burst[i]->data_len < kPayload) continue;
    const size_t at = client_side ? 16 : 12;  // the client's address: destination or source
    uint32_t t;
    if (tuple_of(rd32(p + kIp + at), rd16(p + kTcp + (client_side ? 2 : 0)), t))
      rte_prefetch0(&fs_[t]);
  }
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = burst[i];
    const uint8_t* p = rte_pktmbuf_mtod(m, const uint8_t*);
    if (m->nb_segs != 1) {
      error(Err::kUnexpected, p, m->data_len, "chained mbuf");
      continue;
    }
    if (client_side)
      on_client_side(p, m->data_len);
    else
      on_backend_side(p, m->data_len);
  }
  if (n) rte_pktmbuf_free_bulk(burst, n);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Sending

uint16_t Generator::flush(TxQueue& q, int dir) {
  if (q.n == 0) return 0;
  const uint16_t sent = rte_eth_tx_burst(q.port, 0, q.pend, q.n);
  c_.tx[dir] += sent;
  ++c_.flushes[dir];
  if (sent < q.n) {
    ++c_.flushes_short[dir];
    if (sent == 0) ++c_.flushes_zero[dir];
    std::memmove(q.pend, q.pend + sent, (q.n - sent) * sizeof q.pend[0]);
  }
  q.n = static_cast<uint16_t>(q.n - sent);
  return sent;
}

// The state of the flow a cursor will visit kAhead packets from now: in scattered order (and
// at millions of flows in any order) each visit is a cache miss, which is then taken early.
void Generator::prefetch_ahead(uint32_t& ahead) {
  rte_prefetch0(&fs_[ahead]);
  if (churn_) {
    rte_prefetch0(&fs_[ahead + slots_]);
    rte_prefetch0(&gen_[ahead]);
  }
  ahead = advance(ahead);
}

void Generator::gen_client(uint16_t budget) {
  if (txq_[0].n) return;  // the ring refused the last burst: retry it first
  if (tsc_per_burst_) {
    const uint64_t now = rte_rdtsc();
    if (now < next_tx_tsc_[0]) return;
    next_tx_tsc_[0] = std::max(next_tx_tsc_[0] + tsc_per_burst_, now - 4 * tsc_per_burst_);
  }
  if (o_.syn_only) {
    for (uint16_t i = 0; i < budget; ++i) {
      const uint32_t t = static_cast<uint32_t>(syn_cursor_++ % tuples_);
      fs_[t].st = kSynSent;
      fs_[t].bk = 0;
      send_client(t, flag::kSyn, false);
      ++c_.syn_tx;
    }
    return;
  }
  if (!o_.client_dir && o_.syn_share == 0) return;
  for (uint16_t i = 0; i < budget; ++i) {
    const uint32_t slot = client_cursor_;
    client_cursor_ = advance(client_cursor_);
    prefetch_ahead(client_ahead_);
    const uint32_t t = current_tuple(slot);
    if (o_.syn_share > 0) {
      churn_acc_ += o_.syn_share;
      if (churn_acc_ >= 1) {
        churn_acc_ -= 1;
        const uint32_t next = gen_[slot] ? slot : slot + slots_;
        if (fs_[t].st == kEstablished && (fs_[next].st == kIdle || fs_[next].st == kClosed)) {
          // Close this connection and open its successor on the slot's other tuple.
          send_client(t, flag::kFin | flag::kAck, false);
          fs_[t].st = kFinSent;
          gen_[slot] ^= 1;
          fs_[next].st = kSynSent;
          fs_[next].bk = 0;
          send_client(next, flag::kSyn, false);
          ++c_.syn_tx;
          ++i;
          continue;
        }
      }
    }
    if (!o_.client_dir || fs_[t].st != kEstablished) continue;
    send_client(t, flag::kAck | flag::kPsh, false);
  }
}

void Generator::gen_backend(uint16_t budget) {
  if (txq_[1].n || o_.syn_only || !o_.backend_dir) return;
  if (tsc_per_burst_) {
    const uint64_t now = rte_rdtsc();
    if (now < next_tx_tsc_[1]) return;
    next_tx_tsc_[1] = std::max(next_tx_tsc_[1] + tsc_per_burst_, now - 4 * tsc_per_burst_);
  }
  for (uint16_t i = 0; i < budget; ++i) {
    const uint32_t slot = backend_cursor_;
    backend_cursor_ = advance(backend_cursor_);
    prefetch_ahead(backend_ahead_);
    const uint32_t t = current_tuple(slot);
    if (fs_[t].st != kEstablished) continue;
    send_backend(t, flag::kAck | flag::kPsh, false);
  }
}

void Generator::maybe_tick() {
  if (!tick_) return;
  const uint64_t now = rte_rdtsc();
  if (now - last_tick_ < hz_ / 1000) return;
  last_tick_ = now;
  tick_(tick_arg_);
}

void Generator::poll_once(bool generate) {
  // Time spent on packets (an RX burst that returned some, building, a TX burst the ring took
  // some of) is work; an empty RX poll or a TX burst refused whole is waiting on the peer. The
  // share of work says whether lb-gen itself is the limit.
  ++c_.loops;
  uint64_t t = rte_rdtsc();
  const uint64_t start = t;
  auto account = [&](bool worked) {
    const uint64_t now = rte_rdtsc();
    if (worked) c_.work_tsc += now - t;
    t = now;
  };
  account(rx_port(o_.client_port, true) > 0);
  account(rx_port(o_.backend_port, false) > 0);
  account(flush(replies_[0], 0) + flush(replies_[1], 1) > 0);
  if (generate) {
    const uint64_t built = c_.built;
    gen_client(o_.burst);
    gen_backend(o_.burst);
    account(c_.built != built);
  }
  account(flush(txq_[0], 0) + flush(txq_[1], 1) > 0);
  maybe_tick();
  c_.all_tsc += rte_rdtsc() - start;
}

// ---------------------------------------------------------------------------------------------
// Phases

bool Generator::wait_links() {
  // Scripts start the peer after this line: a memif server refuses a client that connects
  // before its ports are started ("ID not found"), and the client does not retry for long.
  std::fprintf(stderr, "lb-gen: ports started, waiting for links\n");
  const uint64_t end =
      rte_rdtsc() + static_cast<uint64_t>(o_.link_timeout * static_cast<double>(hz_));
  while (!g_stop.load(std::memory_order_relaxed)) {
    rte_eth_link l0{}, l1{};
    rte_eth_link_get_nowait(o_.client_port, &l0);
    rte_eth_link_get_nowait(o_.backend_port, &l1);
    if (l0.link_status && l1.link_status) return true;
    if (rte_rdtsc() > end) {
      std::fprintf(stderr, "lb-gen: links not up after %.0f s (client %s, backend %s)\n",
                   o_.link_timeout, l0.link_status ? "up" : "down", l1.link_status ? "up" : "down");
      return false;
    }
    maybe_tick();
    usleep(1000);
  }
  return false;
}

bool Generator::resolve_macs() {
  if (o_.peer != Peer::kLbd) return true;
  const uint64_t start = rte_rdtsc();
  const uint64_t end = start + static_cast<uint64_t>(o_.resolve_timeout * static_cast<double>(hz_));
  uint64_t next_arp = 0;
  uint64_t first_answer = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    const uint64_t now = rte_rdtsc();
    if (lbd_client_mac_.zero() && now >= next_arp) {
      send_arp_request(o_.client_port, my_client_mac_, o_.client_ip, o_.vip);
      next_arp = now + hz_ / 5;
    }
    poll_once(false);
    if (c_.arp_answered && !first_answer) first_answer = now;
    bool backends_done;
    if (!o_.backends.empty())
      backends_done = std::all_of(arp_done_.begin(), arp_done_.end(), [](bool b) { return b; });
    else  // lbd asks for all unresolved next hops at once, every second
      backends_done = first_answer && now - first_answer > hz_ / 5;
    if (!lbd_client_mac_.zero() && backends_done) {
      // How long lbd took to ask for its next hops once the links were up: it asks when they
      // are unresolved, and a request sent before its link came up is lost.
      std::printf("lb-gen: lbd asked for every next hop %.0f ms after the links came up\n",
                  static_cast<double>(now - start) * 1e3 / static_cast<double>(hz_));
      // Give lbd's worker time to apply what it learned before the first SYN.
      const uint64_t settle = rte_rdtsc() + hz_ / 20;
      while (rte_rdtsc() < settle) poll_once(false);
      return true;
    }
    if (now > end) {
      std::fprintf(stderr,
                   "lb-gen: no %s after %.0f s (is lbd running with VIP %s on the client port?)\n",
                   lbd_client_mac_.zero() ? "ARP reply for the VIP"
                                          : "ARP request from lbd for every backend",
                   o_.resolve_timeout, ip_str(o_.vip).c_str());
      return false;
    }
  }
  return false;
}

bool Generator::setup_flows() {
  if (o_.syn_only) return true;
  if (o_.peer == Peer::kIo) {
    const uint32_t nb = static_cast<uint32_t>(seen_backends_.size());
    for (uint32_t t = 0; t < slots_; ++t) {
      fs_[t].st = kEstablished;
      fs_[t].bk = static_cast<uint8_t>(t % nb + 1);
    }
    c_.established = slots_;
    return true;
  }
  uint32_t next = 0;
  uint64_t last_progress = rte_rdtsc();
  uint64_t last_count = 0;
  const uint64_t deadline =
      last_progress + static_cast<uint64_t>(o_.setup_timeout * static_cast<double>(hz_));
  int passes = 0;
  while (c_.established < slots_) {
    if (g_stop.load(std::memory_order_relaxed)) return false;
    poll_once(false);
    if (txq_[0].n == 0) {
      for (uint16_t i = 0; i < o_.burst && next < slots_ && c_.syn_tx - c_.established < o_.window;
           ++i, ++next) {
        fs_[next].st = kSynSent;
        send_client(next, flag::kSyn, false);
        ++c_.syn_tx;
      }
    }
    const uint64_t now = rte_rdtsc();
    if (c_.established != last_count) {
      last_count = c_.established;
      last_progress = now;
    } else if (now - last_progress >
               static_cast<uint64_t>(kStallSeconds * static_cast<double>(hz_))) {
      // Something was lost (lbd had no MAC for a backend yet, a ring was full, ...): resend the
      // step each incomplete handshake is waiting for.
      if (++passes > kMaxSetupPasses || now > deadline) break;
      uint64_t resent = 0;
      for (uint32_t t = 0; t < next; ++t) {
        const uint8_t s = fs_[t].st;
        if (s == kEstablished) continue;
        // Odd passes resend the step the flow waits for; even passes start it over with the
        // client's SYN, in case lbd expired the flow meanwhile (then only a SYN revives it).
        const bool restart = passes % 2 == 0;
        if (s == kSynSent || (restart && (s == kSynSeen || s == kSynAckSeen))) {
          if (s == kSynAckSeen) fs_[t].st = kSynSent;
          send_client(t, flag::kSyn, true);
        } else if (s == kSynSeen) {
          send_backend(t, flag::kSyn | flag::kAck, true);
        } else if (s == kSynAckSeen) {
          send_client(t, flag::kAck, true);
        } else {
          continue;
        }
        ++resent;
        while ((replies_[0].n > 256 || replies_[1].n > 256) && rte_rdtsc() < deadline &&
               !g_stop.load(std::memory_order_relaxed))
          poll_once(false);
      }
      if (o_.progress)
        std::printf("lb-gen: setup pass %d: %llu of %u established, %llu resent\n", passes,
                    static_cast<unsigned long long>(c_.established), slots_,
                    static_cast<unsigned long long>(resent));
      last_progress = rte_rdtsc();
    }
    if (now > deadline) break;
  }
  if (c_.established < slots_) {
    std::fprintf(stderr, "lb-gen: setup incomplete: %llu of %u flows established\n",
                 static_cast<unsigned long long>(c_.established), slots_);
    return false;
  }
  return true;
}

void Generator::load(double seconds, bool measure) {
  const uint64_t start = rte_rdtsc();
  const uint64_t end = start + static_cast<uint64_t>(seconds * static_cast<double>(hz_));
  uint64_t next_print = start + hz_;
  Counters prev = c_;
  uint32_t iter = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    poll_once(true);
    if (++iter & 63) continue;
    const uint64_t now = rte_rdtsc();
    if (now >= end) break;
    if (o_.progress && now >= next_print) {
      next_print += hz_;
      std::printf(
          "lb-gen: %s %4.1fs  c->b tx %6.3f rx %6.3f  b->c tx %6.3f rx %6.3f Mpps"
          "  new flows %7.0f/s  errors %llu\n",
          measure ? "measure" : "warm-up",
          static_cast<double>(now - start) / static_cast<double>(hz_),
          static_cast<double>(c_.tx[0] - prev.tx[0]) / 1e6,
          static_cast<double>(c_.rx[0] - prev.rx[0]) / 1e6,
          static_cast<double>(c_.tx[1] - prev.tx[1]) / 1e6,
          static_cast<double>(c_.rx[1] - prev.rx[1]) / 1e6,
          static_cast<double>(c_.syn_rx - prev.syn_rx),
          static_cast<unsigned long long>(c_.error_total()));
      std::fflush(stdout);
      prev = c_;
    }
  }
}

void Generator::drain(double seconds) {
  const uint64_t end = rte_rdtsc() + static_cast<uint64_t>(seconds * static_cast<double>(hz_));
  while (rte_rdtsc() < end) poll_once(false);
}

void Generator::report(const Counters& a, const Counters& b, double secs, double total_secs) {
  const char* dir_name[2] = {"client->backend", "backend->client"};
  double off[2], fwd[2], full[2], gbps[2];
  for (int d = 0; d < 2; ++d) {
    off[d] = static_cast<double>(b.tx[d] - a.tx[d]) / secs / 1e6;
    fwd[d] = static_cast<double>(b.rx[d] - a.rx[d]) / secs / 1e6;
    gbps[d] = static_cast<double>(b.rx_bytes[d] - a.rx_bytes[d]) * 8 / secs / 1e9;
    const uint64_t fl = b.flushes[d] - a.flushes[d];
    full[d] = fl ? 100.0 * static_cast<double>(b.flushes_short[d] - a.flushes_short[d]) /
                       static_cast<double>(fl)
                 : 0;
  }
  const double new_flows = static_cast<double>(b.syn_rx - a.syn_rx) / secs;
  const uint64_t sent = c_.tx[0] + c_.tx[1];
  const uint64_t back = c_.rx[0] + c_.rx[1];
  const uint64_t lost = sent > back ? sent - back : 0;
  std::printf(
      "lb-gen: peer %s, %s%llu %s, %u B frames, burst %u, %.1f s measured after %.1f s "
      "warm-up\n",
      o_.peer == Peer::kLbd ? "lbd" : "io", o_.syn_only ? "SYN-only over " : "",
      static_cast<unsigned long long>(o_.flows), o_.syn_only ? "tuples" : "flows", o_.size,
      o_.burst, secs, o_.warmup);
  std::printf("  %-16s %13s %15s %12s %10s\n", "direction", "offered Mpps", "forwarded Mpps",
              "ring-full %", "Gbit/s");
  for (int d = 0; d < 2; ++d)
    std::printf("  %-16s %13.3f %15.3f %12.1f %10.2f\n", dir_name[d], off[d], fwd[d], full[d],
                gbps[d]);
  std::printf("  %-16s %13.3f %15.3f\n", "total", off[0] + off[1], fwd[0] + fwd[1]);
  std::printf("  new flows/s %.0f, handshakes completed %llu, closed %llu, resteered SYNs %llu\n",
              new_flows, static_cast<unsigned long long>(c_.established),
              static_cast<unsigned long long>(c_.closed),
              static_cast<unsigned long long>(c_.resteered));
  std::printf(
      "  whole run (%.1f s): sent %llu, came back %llu, lost %llu (%.4f %%), ARP answered "
      "%llu, ignored %llu\n",
      total_secs, static_cast<unsigned long long>(sent), static_cast<unsigned long long>(back),
      static_cast<unsigned long long>(lost),
      sent ? 100.0 * static_cast<double>(lost) / static_cast<double>(sent) : 0.0,
      static_cast<unsigned long long>(c_.arp_answered),
      static_cast<unsigned long long>(c_.ignored));
  const double busy = b.all_tsc > a.all_tsc ? 100.0 * static_cast<double>(b.work_tsc - a.work_tsc) /
                                                  static_cast<double>(b.all_tsc - a.all_tsc)
                                            : 0.0;
  // lb-gen's own cost: the TSC it spent on packets over every packet it sent or checked.
  const uint64_t moved =
      (b.tx[0] - a.tx[0]) + (b.tx[1] - a.tx[1]) + (b.rx[0] - a.rx[0]) + (b.rx[1] - a.rx[1]);
  const double cycles =
      moved ? static_cast<double>(b.work_tsc - a.work_tsc) / static_cast<double>(moved) : 0.0;
  std::printf(
      "  lb-gen: busy %.0f %% of its loop on packets (the rest polling empty queues and "
      "full rings), %.0f TSC cycles per packet sent or checked\n",
      busy, cycles);
  std::printf(
      "  lb-gen loop: %.2f M iterations/s; TX bursts %.3f M/s (c->b) %.3f M/s (b->c), refused "
      "whole %.1f %% / %.1f %%\n",
      static_cast<double>(b.loops - a.loops) / secs / 1e6,
      static_cast<double>(b.flushes[0] - a.flushes[0]) / secs / 1e6,
      static_cast<double>(b.flushes[1] - a.flushes[1]) / secs / 1e6,
      b.flushes[0] > a.flushes[0]
          ? 100.0 * static_cast<double>(b.flushes_zero[0] - a.flushes_zero[0]) /
                static_cast<double>(b.flushes[0] - a.flushes[0])
          : 0.0,
      b.flushes[1] > a.flushes[1]
          ? 100.0 * static_cast<double>(b.flushes_zero[1] - a.flushes_zero[1]) /
                static_cast<double>(b.flushes[1] - a.flushes[1])
          : 0.0);
  const uint64_t errs = c_.error_total();
  if (errs == 0) {
    std::printf(
        "  errors: none (every returned packet checked: MACs, IPv4 and TCP checksums, "
        "NAT, backend per flow, payload tag)\n");
  } else {
    std::printf("  ERRORS: %llu\n", static_cast<unsigned long long>(errs));
    for (size_t e = 0; e < static_cast<size_t>(Err::kCount); ++e)
      if (c_.errors[e])
        std::printf("    %-20s %llu\n", to_string(static_cast<Err>(e)),
                    static_cast<unsigned long long>(c_.errors[e]));
  }
  // lb-gen is the limit when the rings took (nearly) every burst, or when it was busy nearly all
  // of the time: then it could not have offered more.
  const bool gen_bound = (full[0] < 1.0 && full[1] < 1.0) || busy > 90.0;
  if (gen_bound)
    std::printf(
        "  verdict: GENERATOR-BOUND: lb-gen could not offer more than the forwarder took "
        "(rings full for %.0f %% / %.0f %% of its bursts, lb-gen busy %.0f %%); the "
        "forwarder may go faster than this\n",
        full[0], full[1], busy);
  else
    std::printf(
        "  verdict: not generator-bound: the forwarder's RX rings were full for %.0f %% / "
        "%.0f %% of lb-gen's bursts and lb-gen was busy %.0f %% of the time (it had more "
        "to offer)\n",
        full[0], full[1], busy);
  if (seen_backends_.size() > 1 && o_.peer == Peer::kLbd) {
    std::vector<uint64_t> per(seen_backends_.size(), 0);
    for (uint32_t t = 0; t < tuples_; ++t)
      if (fs_[t].bk) ++per[fs_[t].bk - 1u];
    std::printf("  flows per backend:");
    for (size_t i = 0; i < per.size(); ++i)
      std::printf(" %s:%u=%llu", ip_str(seen_backends_[i].ip).c_str(), seen_backends_[i].port,
                  static_cast<unsigned long long>(per[i]));
    std::printf("\n");
  }
  std::printf(
      "RESULT peer=%s flows=%llu size=%u burst=%u syn_only=%d syn_share=%g secs=%.3f "
      "c2b_offered=%.3f c2b_fwd=%.3f b2c_offered=%.3f b2c_fwd=%.3f total_fwd=%.3f "
      "ring_full_c2b=%.1f ring_full_b2c=%.1f new_flows_per_s=%.0f lost=%llu errors=%llu "
      "generator_bound=%d gen_busy=%.0f gen_cycles_per_pkt=%.0f\n",
      o_.peer == Peer::kLbd ? "lbd" : "io", static_cast<unsigned long long>(o_.flows), o_.size,
      o_.burst, o_.syn_only ? 1 : 0, o_.syn_share, secs, off[0], fwd[0], off[1], fwd[1],
      fwd[0] + fwd[1], full[0], full[1], new_flows, static_cast<unsigned long long>(lost),
      static_cast<unsigned long long>(errs), gen_bound ? 1 : 0, busy, cycles);
  std::fflush(stdout);
}

int Generator::run(void (*tick)(void*), void* tick_arg) {
  tick_ = tick;
  tick_arg_ = tick_arg;
  const uint64_t t0 = rte_rdtsc();
  if (!wait_links()) return 1;
  std::printf("lb-gen: links up; client port %u (%s), backend port %u (%s)\n", o_.client_port,
              my_client_mac_.str().c_str(), o_.backend_port, my_backend_mac_.str().c_str());
  if (!resolve_macs()) return 1;
  make_templates();  // every MAC is known from here on
  if (o_.peer == Peer::kLbd)
    std::printf("lb-gen: VIP %s:%u is at %s; lbd's backend port is %s\n", ip_str(o_.vip).c_str(),
                o_.vport, lbd_client_mac_.str().c_str(), lbd_backend_mac_.str().c_str());
  const uint64_t s0 = rte_rdtsc();
  const bool setup_ok = setup_flows();
  const double setup_s = static_cast<double>(rte_rdtsc() - s0) / static_cast<double>(hz_);
  if (!o_.syn_only)
    std::printf("lb-gen: setup %s: %llu flows established in %.2f s (%.0f handshakes/s)\n",
                setup_ok ? "complete" : "FAILED", static_cast<unsigned long long>(c_.established),
                setup_s, setup_s > 0 ? static_cast<double>(c_.established) / setup_s : 0.0);
  else
    std::printf("lb-gen: setup complete: SYN-only over %u tuples\n", tuples_);
  std::fflush(stdout);
  if (!setup_ok) return 1;
  load(o_.warmup, false);
  const Counters a = c_;
  const uint64_t m0 = rte_rdtsc();
  load(o_.duration, true);
  const uint64_t m1 = rte_rdtsc();
  const Counters b = c_;
  drain(0.3);
  const double secs = static_cast<double>(m1 - m0) / static_cast<double>(hz_);
  const bool interrupted = g_stop.load(std::memory_order_relaxed);
  report(a, b, secs, static_cast<double>(rte_rdtsc() - t0) / static_cast<double>(hz_));
  std::printf("lb-gen: done\n");
  std::fflush(stdout);
  if (o_.linger > 0) {
    // Stop polling before the peer goes away (a memif side polling a vanished peer has been
    // seen to crash), then wait for it to disconnect.
    const uint64_t end = rte_rdtsc() + static_cast<uint64_t>(o_.linger * static_cast<double>(hz_));
    while (rte_rdtsc() < end) {
      rte_eth_link l0{}, l1{};
      rte_eth_link_get_nowait(o_.client_port, &l0);
      rte_eth_link_get_nowait(o_.backend_port, &l1);
      if (!l0.link_status && !l1.link_status) break;
      usleep(20000);
    }
  }
  if (interrupted) return 1;
  return c_.error_total() == 0 ? 0 : 1;
}

}  // namespace lb::gen
