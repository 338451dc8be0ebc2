// How long from lb-healthd's decision to every lbd worker using it: sends full-state updates
// through the shared-memory channel of a running lbd, as lb-healthd does, and times each until
// lbd's applied_generation (stored once every worker has passed an RCU quiescent state after the
// swap) reaches it. Prints percentiles. Not a test: bench/apply_latency.sh runs it.
//
// usage: lbd_apply_latency INSTANCE SERVICE VIP PORT BACKEND_IP BACKEND_PORT [UPDATES [MAGLEV_N]]
// MAGLEV_N: the service is maglev (table 65537) with N backends (BACKEND_PORT, +1, ...); every
// update drains or restores the first, so lbd rebuilds the table each time.
#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "channel.h"

int main(int argc, char** argv) {
  using Clock = std::chrono::steady_clock;
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s INSTANCE SERVICE VIP PORT BACKEND_IP BACKEND_PORT [UPDATES]\n",
                 argv[0]);
    return 2;
  }
  const std::string name = lb::shm::segment_name(argv[1]);
  in_addr vip{}, backend{};
  if (inet_pton(AF_INET, argv[3], &vip) != 1 || inet_pton(AF_INET, argv[5], &backend) != 1) {
    std::fprintf(stderr, "bad address\n");
    return 2;
  }
  const int updates = argc > 7 ? std::atoi(argv[7]) : 1000;
  std::string why;
  auto ch = lb::shm::Attachment::try_attach(name, why);
  if (!ch) {
    std::fprintf(stderr, "%s\n", why.c_str());
    return 1;
  }
  auto u = std::make_unique<lb::shm::ServiceUpdate>();
  std::strncpy(u->name, argv[2], lb::shm::kNameLen - 1);
  u->vip = ntohl(vip.s_addr);
  u->port = static_cast<uint16_t>(std::atoi(argv[4]));
  const int maglev_n = argc > 8 ? std::atoi(argv[8]) : 0;
  if (maglev_n < 0 || maglev_n > static_cast<int>(lb::shm::kMaxBackendsPerService)) {
    std::fprintf(stderr, "MAGLEV_N: 0..%u\n", lb::shm::kMaxBackendsPerService);
    return 2;
  }
  u->backend_count = maglev_n > 0 ? static_cast<uint32_t>(maglev_n) : 1;
  for (uint32_t i = 0; i < u->backend_count; ++i)
    u->backends[i] = {
        ntohl(backend.s_addr), static_cast<uint16_t>(std::atoi(argv[6]) + int(i)), 1, 0, {}};
  if (maglev_n > 0) {
    u->scheduler = 4;  // lb::cfg::Scheduler::kMaglev
    u->maglev_table_size = 65537;
  }
  uint64_t gen = ch->header().received_generation.load() + 1000;
  // LB_APPLY_GAP_US: the least time between an update's acknowledgement and the next (default
  // 200; a jitter of up to 1 ms is added). With maglev, lbd builds the new table right after
  // acknowledging the pool (published with the previous table), so an update that comes sooner
  // than a build waits for it.
  const char* gap_env = std::getenv("LB_APPLY_GAP_US");
  const int gap_us = gap_env ? std::atoi(gap_env) : 200;
  std::vector<double> us;
  for (int i = 0; i < updates; ++i) {
    // Alternate active / draining so that every update really changes the pool.
    u->backends[0].state = static_cast<uint8_t>(i % 2);
    u->generation = ++gen;
    const auto t0 = Clock::now();
    while (!ch->send(*u)) std::this_thread::yield();
    while (ch->header().applied_generation.load(std::memory_order_acquire) < gen) {
      // Sleep, not spin: on two cores this process shares one with lbd's control thread.
      std::this_thread::sleep_for(std::chrono::microseconds(10));
      if (Clock::now() - t0 > std::chrono::seconds(5)) {
        std::fprintf(stderr, "generation %llu not applied within 5 s\n",
                     static_cast<unsigned long long>(gen));
        return 1;
      }
    }
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    std::this_thread::sleep_for(std::chrono::microseconds(gap_us + (i * 7919) % 1000));
  }
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) {
    return us[static_cast<size_t>(p * static_cast<double>(us.size() - 1))];
  };
  std::printf(
      "%d updates: decision -> every worker applied: p50 %.0f us, p90 %.0f us, "
      "p99 %.0f us, max %.0f us\n",
      updates, pct(0.5), pct(0.9), pct(0.99), us.back());
  return 0;
}
