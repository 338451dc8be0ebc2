// Fuzz target: lbd's side of the shared-memory channel. The input is the bytes a hostile or
// corrupted lb-healthd could leave in the update ring: a sequence of ServiceUpdate records
// (each the next sizeof(ServiceUpdate) bytes, the last one zero-filled), applied as
// Dataplane::control_tick applies them: apply_update on a copy of the state, then
// PoolBuilder::build. Each update is refused (apply_update says why, or build throws
// std::runtime_error or std::invalid_argument, and the state is unchanged) or applied, never a
// crash or any other exception. An applied pool is usable: every service is found at its
// VIP:port with backends that a port reaches through a known next hop, and a worker passes a
// SYN to each service without trouble.

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "checksum.h"
#include "fuzz.h"
#include "pool_builder.h"
#include "processor.h"

namespace {

using lb::dp::PoolState;

// The same topology as packet_fuzz.cc: a client port, a backend port with a gateway.
lb::cfg::DataplaneConfig dataplane() {
  lb::cfg::DataplaneConfig dc;
  lb::cfg::PortConfig client;
  client.name = "client";
  client.ip = 0x0a0a0001;  // 10.10.0.1/24
  client.prefix_len = 24;
  lb::cfg::PortConfig backend;
  backend.name = "backend";
  backend.ip = 0x0a140001;  // 10.20.0.1/24
  backend.prefix_len = 24;
  backend.gateway = 0x0a1400fe;
  dc.ports = {client, backend};
  return dc;
}

bool same(const PoolState& a, const PoolState& b) {
  if (a.size() != b.size()) return false;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
    const lb::dp::ServiceState& x = ia->second;
    const lb::dp::ServiceState& y = ib->second;
    if (ia->first != ib->first || x.vip != y.vip || x.port != y.port ||
        x.scheduler != y.scheduler || x.backends.size() != y.backends.size())
      return false;
    for (size_t i = 0; i < x.backends.size(); ++i) {
      const auto& p = x.backends[i];
      const auto& q = y.backends[i];
      if (p.ip != q.ip || p.port != q.port || p.weight != q.weight || p.state != q.state)
        return false;
    }
  }
  return true;
}

// A SYN from 10.10.0.50:40000 to vip:port through a worker of the new pool.
void syn_through(lb::core::Processor& p, const lb::core::Pool& pool, uint32_t vip, uint16_t port,
                 lb::core::Tick now) {
  uint8_t buf[128 + 60] = {};
  uint8_t* f = buf + 128;
  const uint8_t dst_mac[6] = {0x02, 0, 0, 0, 0, 0x10};
  const uint8_t src_mac[6] = {0x02, 0xcc, 0, 0, 0, 0x50};
  std::memcpy(f, dst_mac, 6);
  std::memcpy(f + 6, src_mac, 6);
  lb::core::store_be16(f + 12, lb::core::kEtherTypeIpv4);
  uint8_t* ip = f + 14;
  ip[0] = 0x45;
  lb::core::store_be16(ip + 2, 40);
  ip[8] = 64;
  ip[9] = lb::core::kIpProtoTcp;
  lb::core::store_be32(ip + 12, 0x0a0a0032);
  lb::core::store_be32(ip + 16, vip);
  lb::core::store_be16(ip + 10, lb::core::csum(ip, 20));
  uint8_t* t = ip + 20;
  lb::core::store_be16(t, 40000);
  lb::core::store_be16(t + 2, port);
  t[12] = 0x50;
  t[13] = lb::core::tcp_flag::kSyn;
  lb::core::Frame fr{buf, 128, 60, sizeof buf};
  const lb::core::Verdict v = p.process(fr, 0, pool, now);
  LB_FUZZ_CHECK(v.action == lb::core::Action::kTx || v.action == lb::core::Action::kDrop,
                "SYN to a service of an applied pool: action %d", static_cast<int>(v.action));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lb::core::NeighborTable neighbors;
  lb::dp::PoolBuilder builder(dataplane(), neighbors);
  PoolState state;
  lb::core::ProcessorConfig pc;
  pc.nports = 2;
  pc.ports[0] = {0x0a0a0001, 0xffffff00, lb::core::MacAddr{{0x02, 0, 0, 0, 0, 0x10}}};
  pc.ports[1] = {0x0a140001, 0xffffff00, lb::core::MacAddr{{0x02, 0, 0, 0, 0, 0x20}}};
  pc.flow_capacity = 64;
  pc.syn_cache_slots = 0;
  pc.syn_timeout = 10;
  std::unique_ptr<lb::core::Processor> worker;  // made for the first pool applied (it costs)
  auto u = std::make_unique<lb::shm::ServiceUpdate>();
  const size_t count = size == 0 ? 1 : (size + sizeof *u - 1) / sizeof *u;
  for (size_t n = 0; n < count; ++n) {
    std::memset(u.get(), 0, sizeof *u);
    const size_t off = n * sizeof *u;
    if (off < size) std::memcpy(u.get(), data + off, std::min(sizeof *u, size - off));
    PoolState next = state;
    const std::string why = lb::dp::apply_update(next, *u);
    if (!why.empty()) {
      LB_FUZZ_CHECK(same(next, state), "a refused update (%s) changed the state", why.c_str());
      continue;
    }
    std::unique_ptr<lb::core::Pool> pool;
    try {
      pool = builder.build(u->generation, next);
    } catch (const std::runtime_error&) {
      continue;  // refused: ids or next hops exhausted, a backend no port reaches
    } catch (const std::invalid_argument&) {
      continue;  // refused: two services on one VIP:port
    }
    state = std::move(next);
    if (!worker) worker = std::make_unique<lb::core::Processor>(pc, neighbors);
    for (const auto& [name, s] : state) {
      const lb::core::PoolService* svc = pool->find(s.vip, s.port);
      LB_FUZZ_CHECK(svc != nullptr, "service %s not at its VIP:port", name.c_str());
      for (const lb::core::PoolBackend& b : pool->backends(*svc))
        LB_FUZZ_CHECK(b.out_port < 2 && b.neighbor < neighbors.size() &&
                          neighbors.port(b.neighbor) == b.out_port,
                      "service %s: backend %08x reached through port %u slot %u", name.c_str(),
                      b.ip, b.out_port, b.neighbor);
      syn_through(*worker, *pool, s.vip, s.port, n + 1);
    }
  }
  return 0;
}
