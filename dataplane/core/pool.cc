#include "pool.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

namespace lb::core {

Pool::Pool(uint64_t generation, const std::vector<ServiceSpec>& services,
           const std::vector<Address>& retired)
    : generation_(generation),
      state_(size_t{kMaxBackends} + 1, ServingState::kNotServing),  // and kGoneBackend's
      active_at_(kMaxBackends, kEmpty) {
  const size_t nslots = std::bit_ceil(std::max<size_t>(16, services.size() * 4));
  slots_.resize(nslots);
  slot_mask_ = static_cast<uint32_t>(nslots - 1);
  for (const ServiceSpec& spec : services) {
    if (raw(spec.id) >= kMaxServices) throw std::invalid_argument("service id out of range");
    if (find(spec.vip, spec.port)) throw std::invalid_argument("duplicate VIP:port in pool");
    PoolService s{
        spec.id,   spec.vip,     spec.port,       spec.scheduler,
        spec.miss, spec.forward, spec.syn_policy, static_cast<uint32_t>(backends_.size())};
    for (const PoolBackend& b : spec.backends) {
      if (raw(b.id) >= kMaxBackends) throw std::invalid_argument("backend id out of range");
      reserved_.push_back(b.ip);
      if (b.weight == 0) continue;
      active_at_[raw(b.id)] = static_cast<uint32_t>(backends_.size());
      backends_.push_back(b);
      state_[raw(b.id)] = ServingState::kActive;
      ++s.count;
      s.total_weight += b.weight;
    }
    for (BackendId id : spec.serving) {
      if (raw(id) >= kMaxBackends) throw std::invalid_argument("backend id out of range");
      if (state_[raw(id)] == ServingState::kNotServing) state_[raw(id)] = ServingState::kDraining;
    }
    if (spec.scheduler == SchedulerKind::kMaglev) {
      std::shared_ptr<const MaglevTable> t = spec.maglev;
      if (!t)
        t = std::make_shared<const MaglevTable>(
            maglev_backends({backends_.data() + s.first, s.count}), spec.maglev_table_size);
      s.maglev = t.get();
      tables_.push_back(std::move(t));
    }
    const uint32_t index = static_cast<uint32_t>(services_.size());
    services_.push_back(s);
    if (by_id_.size() <= raw(spec.id)) by_id_.resize(raw(spec.id) + 1u, kEmpty);
    by_id_[raw(spec.id)] = index;
    uint32_t i = slot_hash(spec.vip, spec.port);
    while (slots_[i].service != kEmpty) i = (i + 1) & slot_mask_;
    slots_[i] = Slot{spec.vip, spec.port, index};
    vips_.push_back(spec.vip);
  }
  for (const Address& a : retired)
    if (!find(a.vip, a.port)) retired_.push_back(a);
  std::sort(vips_.begin(), vips_.end());
  vips_.erase(std::unique(vips_.begin(), vips_.end()), vips_.end());
  reserved_.insert(reserved_.end(), vips_.begin(), vips_.end());
  std::sort(reserved_.begin(), reserved_.end());
  reserved_.erase(std::unique(reserved_.begin(), reserved_.end()), reserved_.end());
  // 16 bits per address (at least 64): a client address passes the filter ~6 % of the time.
  const size_t bits = std::bit_ceil(std::max<size_t>(64, reserved_.size() * 16));
  filter_shift_ = static_cast<uint32_t>(32 - std::countr_zero(bits));
  filter_.assign(bits / 64, 0);
  for (const uint32_t ip : reserved_) {
    const uint32_t h = (ip * 0x9e3779b1u) >> filter_shift_;
    filter_[h >> 6] |= uint64_t{1} << (h & 63);
  }
}

std::vector<MaglevBackend> maglev_backends(std::span<const PoolBackend> backends) {
  std::vector<MaglevBackend> out;
  out.reserve(backends.size());
  for (const PoolBackend& b : backends)
    if (b.weight != 0) out.push_back({b.ip, b.port, b.weight, raw(b.id)});
  return out;
}

bool Pool::is_vip(uint32_t ip) const {
  return std::binary_search(vips_.begin(), vips_.end(), ip);
}

}  // namespace lb::core
