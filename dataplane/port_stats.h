#pragma once
// Drops that happen before lbd's workers see a packet, read on the control side (telemetry): the
// NIC's own counters and, for a port that sits on a kernel interface (af_xdp, af_packet), the
// kernel's. lbd's own counters cannot see these: the packet never reached rte_eth_rx_burst.
// Makes system calls: never call it from a worker.

#include <cstdint>
#include <string>

namespace lb::dp {

struct PortDrops {
  // rte_eth_stats: the device could not take a packet (imissed: its RX ring was full;
  // rx_nombuf: no mbuf to put it in), received a bad one (ierrors) or could not send (oerrors).
  uint64_t imissed = 0;
  uint64_t ierrors = 0;
  uint64_t oerrors = 0;
  uint64_t rx_nombuf = 0;
  // The kernel interface behind the port; empty for a NIC that DPDK drives itself, and then the
  // two counters below are 0.
  std::string kernel_iface;
  // The interface's own RX dropped counter (/sys/class/net/IF/statistics/rx_dropped). On AF_XDP
  // it counts what the kernel could not put in lbd's full RX ring (the PMD's imissed stays 0).
  uint64_t kernel_rx_dropped = 0;
  // af_packet: what the kernel dropped because lbd's socket ring was full (PACKET_STATISTICS of
  // lbd's own sockets on the interface, summed since lbd started; the interface does not count
  // these).
  uint64_t kernel_socket_drops = 0;
};

// Thread-safe. A counter that cannot be read is 0.
PortDrops read_port_drops(uint16_t port_id);

}  // namespace lb::dp
