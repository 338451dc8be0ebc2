#include "publisher.h"

#include <algorithm>

#include "live_pool.h"

namespace lb::health {

void Publisher::owe(const std::string& name) {
  if (const auto it = where_.find(name); it != where_.end()) queue_.erase(it->second);
  where_[name] = queue_.insert(queue_.end(), Entry{name, next_seq_++});
}

void Publisher::update(const std::string& name) {
  cancel_removal(name);
  owe(name);
}

void Publisher::remove(const std::string& name) {
  removals_[name] = 0;
  owe(name);
}

void Publisher::cancel_removal(const std::string& name) {
  const auto it = removals_.find(name);
  if (it == removals_.end()) return;
  removals_.erase(it);
  if (const auto w = where_.find(name); w != where_.end()) {
    queue_.erase(w->second);
    where_.erase(w);
  }
}

Publisher::Outcome Publisher::flush(shm::Attachment& att, shm::ServiceUpdate& scratch,
                                    const Fill& fill, const Sent& sent) {
  while (!queue_.empty()) {
    const std::string& name = queue_.front().name;
    const auto removal = removals_.find(name);
    const bool is_removal = removal != removals_.end();
    const uint64_t generation = generation_ + 1;
    bool send = true;
    if (is_removal) {
      send = removal->second == 0;  // else sent already: waiting for lbd's acknowledgement
      if (send) fill_removal(scratch, name, generation);
    } else {
      send = fill(name, generation, scratch);
    }
    if (send) {
      if (!att.send(scratch)) {
        if (att.broken()) return Outcome::kRefused;
        ++ring_full_;
        return Outcome::kFull;
      }
      generation_ = generation;
      ++messages_sent_;
      if (is_removal) removal->second = generation;
      sent(name, generation, is_removal);
    }
    where_.erase(name);
    queue_.pop_front();
  }
  return Outcome::kDone;
}

void Publisher::acknowledged(uint64_t received) {
  std::erase_if(removals_,
                [received](const auto& r) { return r.second != 0 && r.second <= received; });
}

void Publisher::attached(uint64_t seen, bool same_lbd) {
  // Generations keep rising for lbd across our own restarts too: start above anything a
  // previous lb-healthd may still have in the ring.
  generation_ = std::max(generation_, seen + shm::kUpdateRingSlots);
  if (!same_lbd) {
    for (const auto& [name, generation] : removals_) {
      if (const auto w = where_.find(name); w != where_.end()) {
        queue_.erase(w->second);
        where_.erase(w);
      }
    }
    removals_.clear();
    return;
  }
  std::vector<std::string> unacknowledged;
  for (auto& [name, generation] : removals_) {
    if (generation != 0) unacknowledged.push_back(name);
    generation = 0;
  }
  std::sort(unacknowledged.begin(), unacknowledged.end());  // a stable order for lbd
  for (const std::string& name : unacknowledged) owe(name);
}

}  // namespace lb::health
