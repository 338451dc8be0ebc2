// lb-decap: a user-space stand-in for a kernel ipip device on a DSR backend (docs/operations.md,
// "Backend set-up for DSR"). It takes every IPIP packet the host receives (a raw socket for
// protocol 4 gets the outer IPv4 header and the inner packet), strips the outer header and writes
// the inner IPv4 packet to a TUN device, so the kernel receives the client's original packet.
// For test stands whose kernel has no ipip module; real backends use `ip link add ... type ipip`.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <CLI/CLI.hpp>

#include "lb_version.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  g_stop.store(true, std::memory_order_relaxed);
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "lb-decap: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// A TUN device without packet information: each write() is one IPv4 packet to the kernel.
int open_tun(const std::string& name) {
  const int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (name.size() >= IFNAMSIZ) {
    errno = ENAMETOOLONG;
    die("device name " + name);
  }
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF " + name);
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die("SIOCGIFFLAGS " + name);
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die("bringing " + name + " up");
  close(s);
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lb-decap: IPIP decapsulation into a TUN device (test stand-in for ipip)"};
  std::string dev = "decap0";
  app.add_option("--dev", dev, "TUN device to create and bring up (default decap0)");
  app.set_version_flag("--version", "lb-decap " LB_VERSION);
  CLI11_PARSE(app, argc, argv);

  struct sigaction sa {};
  sa.sa_handler = on_signal;  // no SA_RESTART: poll() returns EINTR and the loop ends
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  const int raw = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_IPIP);
  if (raw < 0) die("raw socket for IPPROTO_IPIP (needs CAP_NET_RAW)");
  const int tun = open_tun(dev);
  std::fprintf(stderr, "lb-decap: IPIP -> %s\n", dev.c_str());

  uint64_t packets = 0, bytes = 0, malformed = 0, write_errors = 0;
  std::array<uint8_t, 65536> buf;
  pollfd pfd{raw, POLLIN, 0};
  while (!g_stop.load(std::memory_order_relaxed)) {
    const int n = poll(&pfd, 1, 500);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (n == 0) continue;
    const ssize_t len = recv(raw, buf.data(), buf.size(), 0);
    if (len < 0) {
      if (errno == EINTR) continue;
      die("recv");
    }
    // Outer header: version 4, IHL >= 5, protocol IPIP; then an inner IPv4 header at least.
    const auto outer = static_cast<size_t>(buf[0] & 0x0f) * 4;
    if (len < 20 || (buf[0] >> 4) != 4 || outer < 20 || buf[9] != IPPROTO_IPIP ||
        static_cast<size_t>(len) < outer + 20 || (buf[outer] >> 4) != 4) {
      ++malformed;
      continue;
    }
    const auto inner = static_cast<size_t>(len) - outer;
    if (write(tun, buf.data() + outer, inner) != static_cast<ssize_t>(inner)) {
      ++write_errors;
      continue;
    }
    ++packets;
    bytes += inner;
  }
  std::fprintf(stderr,
               "lb-decap: stopped: %llu packets (%llu bytes) decapsulated, %llu malformed, "
               "%llu write errors\n",
               static_cast<unsigned long long>(packets), static_cast<unsigned long long>(bytes),
               static_cast<unsigned long long>(malformed),
               static_cast<unsigned long long>(write_errors));
  close(tun);
  close(raw);
  return 0;
}
