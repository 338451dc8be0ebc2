// lb-pool-inject INSTANCE VIP PORT: what a buggy lb-healthd could put on lbd's update ring.
// Attaches to the instance's segment as lb-healthd does and sends updates that lbd must refuse
// without effect: two with impossible generations (refused by the channel: lbd's
// channel_faults), and nine with well-formed generations but contents no lb-healthd sends
// (refused by apply_update() or the pool builder: lbd's updates_rejected). Prints
// {"channel_faults": 2, "rejected": 9} (what lbd should count) on success, exit 1 with the
// reason otherwise. Run only while the real lb-healthd is not sending (the update ring has one
// producer): the fault test stops it (SIGSTOP) around this.
#include <arpa/inet.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "channel.h"
#include "shm_abi.h"

namespace {

using lb::shm::ServiceUpdate;

ServiceUpdate base(uint32_t vip, uint16_t port) {
  ServiceUpdate u{};
  // 1: never above what lb-healthd sent, so the real one does not take the header for corrupt.
  u.generation = 1;
  std::strncpy(u.name, "web", sizeof u.name - 1);
  u.vip = vip;
  u.port = port;
  u.backend_count = 1;
  u.backends[0] = {0x0a14000b, 8080, 1, 0, {}};  // 10.20.0.11:8080
  return u;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: lb-pool-inject INSTANCE VIP PORT\n");
    return 2;
  }
  in_addr a{};
  if (inet_pton(AF_INET, argv[2], &a) != 1) {
    std::fprintf(stderr, "lb-pool-inject: %s is not an IPv4 address\n", argv[2]);
    return 2;
  }
  const uint32_t vip = ntohl(a.s_addr);
  const auto port = static_cast<uint16_t>(std::stoul(argv[3]));
  std::string why;
  auto att = lb::shm::Attachment::try_attach(lb::shm::segment_name(argv[1]), why);
  if (!att) {
    std::fprintf(stderr, "lb-pool-inject: cannot attach: %s\n", why.c_str());
    return 1;
  }
  std::vector<ServiceUpdate> bad;
  ServiceUpdate u = base(vip, port);
  u.generation = 0;  // impossible generations: the channel refuses them
  bad.push_back(u);
  u.generation = lb::shm::kMaxGeneration + 1;
  bad.push_back(u);
  u = base(vip, port);
  std::memset(u.name, 'A', sizeof u.name);  // not terminated
  bad.push_back(u);
  u = base(vip, port);
  u.flags = 0x80;
  bad.push_back(u);
  u = base(vip, port);
  u.backend_count = lb::shm::kMaxBackendsPerService + 1;
  bad.push_back(u);
  u = base(vip, port);
  u.scheduler = 9;
  bad.push_back(u);
  u = base(vip, port);
  u.maglev_table_size = 12;  // for a service that is not maglev
  bad.push_back(u);
  u = base(vip, port);
  u.vip = 0;
  bad.push_back(u);
  u = base(vip, port);
  u.backends[0].ip = 0;
  bad.push_back(u);
  u = base(vip, port);
  u.backends[0].state = 7;
  bad.push_back(u);
  u = base(vip, port);
  std::strncpy(u.name, "impostor", sizeof u.name - 1);  // another service on web's VIP:port
  bad.push_back(u);
  for (const ServiceUpdate& m : bad) {
    if (!att->send(m)) {
      std::fprintf(stderr, "lb-pool-inject: the update ring is full or broken (%s)\n",
                   att->last_fault().c_str());
      return 1;
    }
  }
  std::printf("{\"channel_faults\": 2, \"rejected\": %zu}\n", bad.size() - 2);
  return 0;
}
