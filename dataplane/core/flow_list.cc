#include "flow_list.h"

#include <algorithm>

namespace lb::core {

void FlowLister::start(uint32_t max) {
  cursor_ = 0;
  max_ = std::min(max, kMaxListed);
  kept_ = 0;
  total_ = 0;
  done_ = false;
  sorted_ = false;
}

bool FlowLister::step(const FlowTable& t, Tick now, uint32_t budget) {
  if (done_) return true;
  const uint32_t end = t.capacity() - cursor_ < budget ? t.capacity() : cursor_ + budget;
  for (uint32_t idx = cursor_; idx < end; ++idx) {
    const Flow& f = t.at(idx);
    if (!f.in_use || f.expires <= now || f.state == TcpState::kReset) continue;
    ++total_;
    if (kept_ < max_) {
      flows_[kept_++] = f;
      std::push_heap(flows_.begin(), flows_.begin() + kept_, older);
    } else if (max_ != 0 && older(f, flows_[0])) {
      std::pop_heap(flows_.begin(), flows_.begin() + kept_, older);
      flows_[kept_ - 1] = f;
      std::push_heap(flows_.begin(), flows_.begin() + kept_, older);
    }
  }
  cursor_ = end;
  done_ = cursor_ == t.capacity();
  return done_;
}

std::span<const Flow> FlowLister::oldest() {
  if (!sorted_) std::sort_heap(flows_.begin(), flows_.begin() + kept_, older);  // oldest first
  sorted_ = true;
  return {flows_.data(), kept_};
}

}  // namespace lb::core
