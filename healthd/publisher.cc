#include "publisher.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "live_pool.h"
#include "log.h"

namespace lb::health {

void Publisher::owe(const std::string& name) {
  if (const auto it = where_.find(name); it != where_.end()) queue_.erase(it->second);
  where_[name] = queue_.insert(queue_.end(), Entry{name, next_seq_++});
}

void Publisher::update(const std::string& name) {
  cancel_removal(name);
  resends_.erase(name);  // a new state: lbd may take it
  owe(name);
}

void Publisher::remove(const std::string& name) {
  removals_[name] = 0;
  resends_.erase(name);
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

std::vector<std::string> Publisher::owed_since(uint64_t ticket) const {
  std::vector<std::string> out;
  for (const Entry& e : queue_) {
    if (e.seq > ticket) out.push_back(e.name);
  }
  return out;
}

void Publisher::hold(const std::string& name, uint64_t key) {
  release(name);
  // Another service that lbd still has there (not owed: sent anyway, lbd refuses it) keeps it.
  if (holder_.emplace(key, name).second) held_[name] = key;
}

void Publisher::release(const std::string& name) {
  const auto it = held_.find(name);
  if (it == held_.end()) return;
  if (const auto h = holder_.find(it->second); h != holder_.end() && h->second == name)
    holder_.erase(h);
  held_.erase(it);
}

bool Publisher::send(shm::Attachment& att, shm::ServiceUpdate& scratch, const std::string& name,
                     bool removal, const Sent& sent) {
  if (!att.send(scratch)) return false;
  generation_ = scratch.generation;
  ++messages_sent_;
  last_sent_[name] = generation_;
  if (removal) {
    release(name);
  } else {
    hold(name, uint64_t{scratch.vip} << 16 | scratch.port);
    unsettled_.emplace_back(generation_, name);
    // While lbd receives but does not apply (a worker stalled), updates pile up here. Only a
    // service's newest counts (progress() skips the others, and generations only grow), so
    // the others go once they outnumber the services.
    if (unsettled_.size() > 2 * last_sent_.size() + 16) {
      std::erase_if(unsettled_, [&](const auto& u) { return last_sent(u.second) != u.first; });
    }
  }
  sent(name, generation_, removal);
  return true;
}

Publisher::Outcome Publisher::flush(shm::Attachment& att, shm::ServiceUpdate& scratch,
                                    const Fill& fill, const Sent& sent) {
  const auto failed = [&] {
    if (att.broken()) return Outcome::kRefused;
    ++ring_full_;
    return Outcome::kFull;
  };
  // Services moved ahead of the one that takes their VIP:port, in this flush.
  std::vector<std::string> waiting;
  const auto is_waiting = [&](const std::string& n) {
    return std::find(waiting.begin(), waiting.end(), n) != waiting.end();
  };
  while (!queue_.empty()) {
    const std::string name = queue_.front().name;
    const auto removal = removals_.find(name);
    const bool is_removal = removal != removals_.end();
    const uint64_t generation = generation_ + 1;
    if (is_removal) {
      if (removal->second == 0) {  // else sent already: waiting for lbd's acknowledgement
        fill_removal(scratch, name, generation);
        if (!send(att, scratch, name, true, sent)) return failed();
        removal->second = generation;
      }
    } else if (fill(name, generation, scratch)) {
      const auto h = holder_.find(uint64_t{scratch.vip} << 16 | scratch.port);
      if (h != holder_.end() && h->second != name && owed(h->second)) {
        const std::string other = h->second;
        if (!is_waiting(other)) {
          // lbd still has `other` on this VIP:port and is owed its newer state (elsewhere, or
          // its removal): that goes first, or lbd would refuse this one.
          waiting.push_back(name);
          queue_.splice(queue_.begin(), queue_, where_.at(other));
          continue;
        }
        // A cycle: `other` waits for a VIP:port this one holds. lbd is told `other` goes for
        // now, which frees its VIP:port; its whole state follows (it is still owed).
        HLOG_WARNING(
            "services %s and %s each take the other's VIP:port: %s is removed from lbd for a "
            "moment, then sent whole again",
            name.c_str(), other.c_str(), other.c_str());
        fill_removal(scratch, other, generation);
        if (!send(att, scratch, other, true, sent)) return failed();
        continue;  // `name` is filled again, with the next generation
      }
      if (!send(att, scratch, name, false, sent)) return failed();
    }
    where_.erase(name);
    queue_.pop_front();
  }
  return Outcome::kDone;
}

void Publisher::progress(uint64_t received, uint64_t applied, uint64_t rejected) {
  if (rejected != rejected_seen_) {
    rejected_seen_ = rejected;
    // lbd refused an update it took since we last looked; its header says only which one was
    // the newest (and lbd may refuse an earlier one of the same batch after it): every update
    // it took and had not applied is owed again, once that is its newest message.
    size_t again = 0;
    const uint64_t took = std::max(received, rejected);
    while (!unsettled_.empty() && unsettled_.front().first <= took) {
      const auto [generation, name] = unsettled_.front();
      unsettled_.pop_front();
      if (last_sent(name) != generation || owed(name)) continue;  // newer on its way
      Resends& n = resends_[name];
      const bool surely = generation == rejected;
      int& count = surely ? n.refused : n.maybe;
      const int most = surely ? kMaxResends : 2 * kMaxResends;
      if (n.refused <= kMaxResends && n.maybe <= 2 * kMaxResends && count < most) {
        ++count;
        ++again;
        owe(name);
      } else if (count == most) {
        ++count;
        if (surely) {
          HLOG_ERROR(
              "lbd refused the state of service %s %d times in a row (lbd's log says why): not "
              "sent again until it changes",
              name.c_str(), kMaxResends + 1);
        } else {
          HLOG_WARNING(
              "lbd refused updates sent with service %s's %d times in a row (lbd's log says "
              "why): its state is not sent again until it changes",
              name.c_str(), most + 1);
        }
      }
    }
    if (again > 0) {
      HLOG_WARNING(
          "lbd refused update %llu (lbd's log says why): sending the state of %zu service(s) it "
          "took since again",
          static_cast<unsigned long long>(rejected), again);
    }
  }
  // Applied: lbd took them (a refusal is in its header before its applied_generation moves).
  while (!unsettled_.empty() && unsettled_.front().first <= applied) {
    const auto& [generation, name] = unsettled_.front();
    if (last_sent(name) == generation) resends_.erase(name);
    unsettled_.pop_front();
  }
}

void Publisher::acknowledged(uint64_t received) {
  const size_t before = removals_.size();
  std::erase_if(removals_, [&](const auto& r) {
    if (r.second == 0 || r.second > received) return false;
    if (last_sent(r.first) == r.second) last_sent_.erase(r.first);  // gone: nothing of it is kept
    return true;
  });
  if (removals_.size() == before) return;
  // A removal lbd took frees its VIP:port: a service whose resends ran out (lbd refused it,
  // perhaps for that very VIP:port) gets its state sent again, with a fresh count.
  for (auto it = resends_.begin(); it != resends_.end();) {
    if (it->second.refused > kMaxResends || it->second.maybe > 2 * kMaxResends) {
      const std::string name = it->first;
      it = resends_.erase(it);
      if (!owed(name) && !removing(name)) owe(name);
    } else {
      ++it;
    }
  }
}

void Publisher::attached(uint64_t seen, bool same_lbd, uint64_t rejected) {
  // Generations keep rising for lbd across our own restarts too: start above anything a
  // previous lb-healthd may still have in the ring.
  generation_ = std::max(generation_, seen + shm::kUpdateRingSlots);
  unsettled_.clear();  // everything is owed again (or was, to this lbd, which kept it)
  rejected_seen_ = rejected;
  if (!same_lbd) {
    // A new lbd started from its config file: what it holds is not what we sent.
    held_.clear();
    holder_.clear();
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

// -- LbdLink -------------------------------------------------------------------------------------

namespace {

int64_t ms_of(Millis d) {
  return static_cast<int64_t>(d.count());
}

uint64_t monotonic_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<Millis>(Clock::now().time_since_epoch()).count());
}

// Gives up the header's healthd_pid only if it is still ours: a second lb-healthd that was
// refused, or one that exits after another attached, must not hide the one that runs.
void release_pid(shm::Header& h) {
  uint64_t mine = static_cast<uint64_t>(getpid());
  // release pairs with the (seq_cst) load of healthd_pid in lbd's telemetry (/lb/pool).
  h.healthd_pid.compare_exchange_strong(mine, 0, std::memory_order_release,
                                        std::memory_order_relaxed);
}

}  // namespace

LbdLink::LbdLink(Millis retry_period, std::function<size_t()> owe_everything)
    : retry_period_(retry_period),
      owe_everything_(std::move(owe_everything)),
      scratch_(std::make_unique<shm::ServiceUpdate>()) {}

LbdLink::~LbdLink() {
  if (att_) release_pid(att_->header());
}

void LbdLink::set_segment(std::string segment) {
  detach();
  segment_ = std::move(segment);
  next_tick_ = TimePoint{};  // attach on the next turn
}

void LbdLink::detach() {
  if (!att_) return;
  release_pid(att_->header());
  att_.reset();
  wait_logged_ = false;
  lbd_beat_ = 0;
  lbd_beat_seen_.reset();
}

void LbdLink::refuse_segment(const std::string& why, TimePoint now) {
  ++channel_faults_;
  if (now >= next_fault_log_) {
    HLOG_ERROR("%s refused: %s: detached; attaching again once it is valid", segment_.c_str(),
               why.c_str());
    next_fault_log_ = now + Millis(10000);
  }
  detach();
}

bool LbdLink::read_lbd(LbdView& v, TimePoint now) {
  if (!att_) return false;
  const shm::Header& h = att_->header();
  // acquire pairs with lbd's release stores of its counters (dataplane.cc).
  LbdView read;
  read.received = h.received_generation.load(std::memory_order_acquire);
  read.applied = h.applied_generation.load(std::memory_order_acquire);
  read.rejected = h.rejected_generation.load(std::memory_order_acquire);
  // Nothing above what we sent can be true of this lbd (attach() starts above what it had).
  const uint64_t sent = publisher_.generation();
  if (read.received <= sent && read.applied <= sent && read.rejected <= sent) {
    v = read;
    return true;
  }
  refuse_segment("lbd's header claims generations we never sent (received " +
                     std::to_string(read.received) + ", applied " + std::to_string(read.applied) +
                     ", rejected " + std::to_string(read.rejected) + ", sent " +
                     std::to_string(sent) + ")",
                 now);
  return false;
}

void LbdLink::check(TimePoint now) {
  if (!att_) return;
  if (att_->faults() != faults_seen_) {
    channel_faults_ += att_->faults() - faults_seen_;
    if (now >= next_fault_log_) {
      HLOG_WARNING("%s: refused %llu invalid message(s) or operation(s) from lbd: %s",
                   segment_.c_str(), static_cast<unsigned long long>(att_->faults() - faults_seen_),
                   att_->last_fault().c_str());
      next_fault_log_ = now + Millis(10000);
    }
    faults_seen_ = att_->faults();
  }
  if (att_->broken()) {
    refuse_segment(att_->last_fault(), now);
    return;
  }
  LbdView v;
  if (read_lbd(v, now)) {
    publisher_.acknowledged(v.received);
    publisher_.progress(v.received, v.applied, v.rejected);
  }
}

void LbdLink::attach() {
  std::string why;
  std::optional<shm::Attachment> a = shm::Attachment::try_attach(segment_, why);
  if (!a) {
    if (!wait_logged_) {
      HLOG_INFO("waiting for lbd: %s (retrying every %lldms)", why.c_str(),
                static_cast<long long>(ms_of(retry_period_)));
      wait_logged_ = true;
    }
    return;
  }
  att_ = std::move(a);
  ++attaches_;
  wait_logged_ = false;
  faults_seen_ = 0;
  const bool same_lbd = epoch_ != 0 && att_->epoch() == epoch_;
  epoch_ = att_->epoch();
  shm::Header& h = att_->header();
  // lbd is alive once its heartbeat moves: the value it has now may be a dead lbd's last.
  lbd_beat_ = h.lbd_heartbeat_ms.load(std::memory_order_relaxed);
  lbd_beat_seen_.reset();
  // try_attach() checked these are at most shm::kMaxGeneration. acquire pairs with lbd's
  // release stores (dataplane.cc).
  const uint64_t seen = std::max({h.received_generation.load(std::memory_order_acquire),
                                  h.applied_generation.load(std::memory_order_acquire),
                                  h.rejected_generation.load(std::memory_order_acquire)});
  publisher_.attached(seen, same_lbd, h.rejected_generation.load(std::memory_order_acquire));
  // release pairs with the (seq_cst) load of healthd_pid in lbd's telemetry (/lb/pool).
  h.healthd_pid.store(static_cast<uint64_t>(getpid()), std::memory_order_release);
  h.healthd_heartbeat_ms.store(monotonic_ms(), std::memory_order_release);
  ring_full_logged_ = false;
  // The events queued before we attached carry no time (shm::Event has none) and may be
  // minutes old: lbd keeps the oldest ring's worth while nobody reads. Counted as fresh they
  // would land in one passive window and could take a backend DOWN at start; they are dropped
  // instead (at most the last 100 ms of real signals go with them, and lbd's counts go on).
  shm::Event events[64];
  size_t dropped = 0;
  for (int round = 0; round < 17; ++round) dropped += att_->receive(events, 64);  // 1024 + 64
  if (dropped != 0) {
    HLOG_INFO(
        "dropped %zu passive event(s) lbd had queued before we attached: their age is "
        "unknown",
        dropped);
  }
  const size_t services = owe_everything_();
  HLOG_INFO(
      "attached to %s (epoch %016llx, lbd pid %llu): pushing the full state of %zu "
      "service(s)",
      segment_.c_str(), static_cast<unsigned long long>(epoch_),
      static_cast<unsigned long long>(
          shm::plausible_pid(h.lbd_pid.load(std::memory_order_relaxed))),
      services);
}

void LbdLink::tick(TimePoint now) {
  if (now < next_tick_) return;
  next_tick_ = now + retry_period_;
  if (att_) {
    if (att_->stale()) {
      HLOG_WARNING("%s was removed or replaced (lbd restarted or stopped): attaching again",
                   segment_.c_str());
      detach();
    } else if (att_->epoch() != epoch_) {
      HLOG_WARNING("lbd's epoch changed (%016llx -> %016llx): pushing the full state again",
                   static_cast<unsigned long long>(epoch_),
                   static_cast<unsigned long long>(att_->epoch()));
      epoch_ = att_->epoch();
      publisher_.attached(0, false,
                          att_->header().rejected_generation.load(std::memory_order_acquire));
      owe_everything_();
    }
  }
  if (!att_) attach();
}

void LbdLink::receive(const std::function<void(const shm::Event&)>& on_event) {
  if (!att_) return;
  shm::Event events[64];
  for (int round = 0; round < 16; ++round) {  // at most 1024 per turn: the ring's size
    const unsigned n = att_->receive(events, 64);
    for (unsigned i = 0; i < n; ++i) on_event(events[i]);
    if (n < 64) break;
  }
}

void LbdLink::flush(const Publisher::Fill& fill, const Publisher::Sent& sent) {
  if (!att_) return;
  const Publisher::Outcome outcome = publisher_.flush(*att_, *scratch_, fill, sent);
  if (outcome == Publisher::Outcome::kRefused) {
    check(Clock::now());
    return;
  }
  if (outcome == Publisher::Outcome::kFull) {
    if (!ring_full_logged_) {
      HLOG_WARNING(
          "update ring to lbd is full (lbd is not reading?): %zu update(s) or removal(s) "
          "owed; retrying, newest state per service wins",
          publisher_.owed_count());
      ring_full_logged_ = true;
    }
  } else if (ring_full_logged_) {
    HLOG_INFO("update ring has room again: pending updates sent");
    ring_full_logged_ = false;
  }
}

void LbdLink::heartbeat(TimePoint now) {
  if (!att_) return;
  // release: lbd does not read it; lbctl and tests load it (seq_cst) to see lb-healthd live.
  att_->header().healthd_heartbeat_ms.store(monotonic_ms(), std::memory_order_release);
  const uint64_t beat = att_->header().lbd_heartbeat_ms.load(std::memory_order_relaxed);
  if (beat != lbd_beat_) {
    lbd_beat_ = beat;
    lbd_beat_seen_ = now;
  }
}

LbdView LbdLink::counters() const {
  LbdView v;
  if (!att_) return v;
  // acquire pairs with lbd's release stores of its counters (dataplane.cc).
  v.received = att_->header().received_generation.load(std::memory_order_acquire);
  v.applied = att_->header().applied_generation.load(std::memory_order_acquire);
  v.rejected = att_->header().rejected_generation.load(std::memory_order_acquire);
  return v;
}

uint64_t LbdLink::lbd_pid() const {
  return att_ ? shm::plausible_pid(att_->header().lbd_pid.load(std::memory_order_relaxed)) : 0;
}

std::optional<int64_t> LbdLink::lbd_heartbeat_age_ms(TimePoint now) const {
  // lbd's heartbeat runs on its own clock (TSC): its age is how long ago it last moved.
  if (!att_ || !lbd_beat_seen_) return std::nullopt;
  return ms_of(std::chrono::duration_cast<Millis>(now - *lbd_beat_seen_));
}

std::optional<int64_t> LbdLink::unapplied_ms(TimePoint now) {
  if (!att_) {
    unapplied_since_.reset();
    return std::nullopt;
  }
  const LbdView v = counters();
  if (std::max(v.applied, v.rejected) >= publisher_.generation()) {
    unapplied_since_.reset();
  } else if (!unapplied_since_) {
    unapplied_since_ = now;
  }
  if (!unapplied_since_) return std::nullopt;
  return ms_of(std::chrono::duration_cast<Millis>(now - *unapplied_since_));
}

void LbdLink::when_applied(uint64_t mark, Millis timeout,
                           std::function<void(const AckResult&)> done, uint64_t ticket) {
  const TimePoint now = Clock::now();
  waiters_.push_back(Waiter{mark,
                            publisher_.ticket(),
                            publisher_.owed_since(ticket),
                            {},
                            std::nullopt,
                            now,
                            now + timeout,
                            std::move(done)});
}

void LbdLink::fail_waiters(const std::string& why) {
  std::vector<Waiter> waiters = std::move(waiters_);
  waiters_.clear();
  for (Waiter& w : waiters) {
    AckResult a;
    a.code = "timeout";
    a.error = why;
    w.done(a);
  }
}

void LbdLink::check_waiters(TimePoint now) {
  if (waiters_.empty()) return;
  LbdView lbd;
  read_lbd(lbd, now);  // zeros when not attached (or just refused)
  const uint64_t applied = lbd.applied;
  const uint64_t rejected = lbd.rejected;
  std::vector<Waiter> still;
  std::vector<std::pair<Waiter, AckResult>> finished;
  for (Waiter& w : waiters_) {
    // Everything owed when the change was made is on the ring: the newest message carries it.
    if (!w.target && att_ && publisher_.sent_through(w.ticket)) w.target = publisher_.generation();
    AckResult a;
    a.applied_generation = applied;
    a.waited_ms = ms_of(std::chrono::duration_cast<Millis>(now - w.start));
    // The change is in the newest message of each service owed when it was made (sent again
    // when lbd refused it): only those decide, not another change's update lbd refused.
    bool resending = false;
    bool refused = false;
    uint64_t newest = 0;
    w.sent.resize(w.names.size(), 0);
    for (size_t i = 0; i < w.names.size(); ++i) {
      const std::string& name = w.names[i];
      if (w.target) w.sent[i] = std::max(w.sent[i], publisher_.last_sent(name));
      const uint64_t g = w.sent[i];
      newest = std::max(newest, g);
      resending = resending || publisher_.owed(name);
      refused = refused || (g > w.mark && g == rejected);
    }
    if (w.target && w.names.empty()) newest = *w.target;  // nothing was owed: what was sent
    a.generation = w.target ? newest : 0;
    if (w.target && refused && !resending) {
      a.code = "rejected";
      a.error = "lbd refused update " + std::to_string(rejected) +
                ", which carries this change (lbd's log says why)";
    } else if (w.target && !resending && applied >= newest) {
      a.ok = true;
    } else if (now >= w.deadline) {
      a.code = "timeout";
      const std::string waited = format_duration(Millis(a.waited_ms));
      if (!att_) {
        a.error = "lbd did not apply the change within " + waited +
                  ": lb-healthd is not attached to " + segment_ + " (is lbd running?)";
      } else if (!w.target) {
        a.error = "lbd did not apply the change within " + waited +
                  ": the update is still waiting for room in the ring (is lbd's control thread "
                  "stuck?)";
      } else {
        a.error = "lbd did not apply the change within " + waited + ": it has applied generation " +
                  std::to_string(applied) + ", the change is in " + std::to_string(a.generation);
      }
    } else {
      still.push_back(std::move(w));
      continue;
    }
    finished.emplace_back(std::move(w), std::move(a));
  }
  waiters_ = std::move(still);
  for (auto& [w, a] : finished) w.done(a);
}

}  // namespace lb::health
