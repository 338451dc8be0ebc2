#include "port_stats.h"

#include <rte_ethdev.h>

#include <dirent.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

namespace lb::dp {

namespace {

uint64_t read_sysfs_counter(const std::string& iface, const char* counter) {
  const std::string path = "/sys/class/net/" + iface + "/statistics/" + counter;
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return 0;
  unsigned long long v = 0;
  if (std::fscanf(f, "%llu", &v) != 1) v = 0;
  std::fclose(f);
  return v;
}

// PACKET_STATISTICS clears the socket's counters on every read, so the totals live here. The
// af_packet PMD of DPDK 22.11 never reads them itself; a later one that does would report them
// as imissed instead, and the two would split the count.
std::mutex g_mu;
std::map<int, uint64_t> g_socket_drops;  // by ifindex, guarded by g_mu

// Adds what lbd's AF_PACKET sockets bound to `ifindex` dropped since the last read. The PMD
// keeps its sockets to itself: they are found among the process's own descriptors.
uint64_t packet_socket_drops(int ifindex) {
  std::lock_guard lock(g_mu);
  uint64_t& total = g_socket_drops[ifindex];
  DIR* d = opendir("/proc/self/fd");
  if (!d) return total;
  const int own = dirfd(d);
  while (const dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || fd == own) continue;
    const int s = static_cast<int>(fd);
    struct stat st;
    if (fstat(s, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(s, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_PACKET) continue;
    sockaddr_ll sll{};
    len = sizeof sll;
    if (getsockname(s, reinterpret_cast<sockaddr*>(&sll), &len) != 0 || sll.sll_ifindex != ifindex)
      continue;
    tpacket_stats ts{};
    len = sizeof ts;
    if (getsockopt(s, SOL_PACKET, PACKET_STATISTICS, &ts, &len) == 0) total += ts.tp_drops;
  }
  closedir(d);
  return total;
}

}  // namespace

PortDrops read_port_drops(uint16_t port_id) {
  PortDrops r;
  rte_eth_stats st;
  if (rte_eth_stats_get(port_id, &st) == 0) {
    r.imissed = st.imissed;
    r.ierrors = st.ierrors;
    r.oerrors = st.oerrors;
    r.rx_nombuf = st.rx_nombuf;
  }
  // af_xdp and af_packet report the interface they are bound to; a NIC DPDK owns has none.
  rte_eth_dev_info info;
  char name[IF_NAMESIZE];
  if (rte_eth_dev_info_get(port_id, &info) != 0 || info.if_index == 0 ||
      !if_indextoname(info.if_index, name))
    return r;
  r.kernel_iface = name;
  r.kernel_rx_dropped = read_sysfs_counter(r.kernel_iface, "rx_dropped");
  r.kernel_socket_drops = packet_socket_drops(static_cast<int>(info.if_index));
  return r;
}

}  // namespace lb::dp
