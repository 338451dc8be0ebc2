#pragma once
// Receive-side scaling as lbd predicts it: the Toeplitz hash NICs use to pick an RX queue, and
// the worker that owns a flow (the queue such a NIC would pick for the flow's client side), so
// that every worker agrees with the others and with the NICs' RETA on who owns which flow.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lb::core {

// The standard 40-byte Toeplitz key (Microsoft's RSS verification key), also given to the NICs.
extern const uint8_t kRssKey[40];
uint32_t toeplitz_hash(const uint8_t* key, const uint8_t* data, size_t len);

// Toeplitz is linear over GF(2): the hash of a 6-byte tuple (client address, port) is the XOR of
// one precomputed word per (byte position, byte value). 6 KiB, built once, instead of 48
// shift-and-xor steps.
struct RssOwnerTable {
  uint32_t t[6][256];
  RssOwnerTable();
};
extern const RssOwnerTable kRssOwnerTable;

// The worker that owns flows of client ip:port, for `workers` workers: the RSS queue a NIC
// hashing only the client's address and port (Toeplitz, the standard key, RETA i -> i % workers)
// would pick, so that on such NICs every packet already arrives at its owner. Inline: it is on
// the packet path (every packet's owner is checked).
inline uint16_t flow_owner(uint32_t client_ip, uint16_t client_port, uint16_t workers,
                           uint16_t reta_size) {
  if (workers <= 1) return 0;
  const auto& t = kRssOwnerTable.t;
  const uint32_t h = t[0][client_ip >> 24] ^ t[1][(client_ip >> 16) & 0xff] ^
                     t[2][(client_ip >> 8) & 0xff] ^ t[3][client_ip & 0xff] ^
                     t[4][client_port >> 8] ^ t[5][client_port & 0xff];
  return static_cast<uint16_t>((h & (reta_size - 1u)) % workers);
}

// What a port's RSS hashes, so that a NIC that can hash some fields only delivers each packet to
// its flow's owner (flow_owner): the source on a port that receives clients' packets only, the
// destination on one that receives backends' replies only, all four fields (and handoffs between
// workers) on a port that receives both, as a one-arm port does.
enum class RssFields : uint8_t { kFourTuple, kSource, kDestination };
struct PortRole {
  bool reaches_backends;  // some backend is reached through it
  bool answers_vips;      // it answers ARP for some VIP: clients' packets arrive there
};
// One per port. A port that reaches no backend receives clients' packets only. One that reaches
// backends receives only their replies when it answers ARP for no VIP and another port does
// receive the clients (with no such port, the clients' packets, routed to a VIP, can only come
// in here too).
std::vector<RssFields> rss_fields(const std::vector<PortRole>& ports);

}  // namespace lb::core
