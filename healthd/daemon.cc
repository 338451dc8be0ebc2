#include "daemon.h"

#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <utility>

#include "log.h"

namespace lb::health {

namespace {

int64_t ms_of(Millis d) {
  return static_cast<int64_t>(d.count());
}

uint64_t monotonic_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<Millis>(Clock::now().time_since_epoch()).count());
}

std::string endpoint(uint32_t address, uint16_t port) {
  return cfg::format_ipv4(address) + ":" + std::to_string(port);
}

}  // namespace

std::optional<std::string> check_for_healthd(const cfg::Config& config) {
  for (size_t i = 0; i < config.services.size(); ++i) {
    const cfg::ServiceConfig& s = config.services[i];
    if (s.backends.size() > shm::kMaxBackendsPerService) {
      return config.file + ":" + std::to_string(s.line) + ": services.[" + std::to_string(i) +
             "].backends: " + std::to_string(s.backends.size()) +
             " backends; lb-healthd carries at most " +
             std::to_string(shm::kMaxBackendsPerService) + " per service to lbd";
    }
  }
  return std::nullopt;
}

std::string format_status(const DaemonStatus& s) {
  std::string out = "status: instance " + s.instance + " (" + s.segment + "), " +
                    (s.attached ? "attached" : "not attached") + ", generation " +
                    std::to_string(s.generation) + " sent, " +
                    std::to_string(s.lbd_applied_generation) + " applied by lbd, " +
                    std::to_string(s.updates_sent) + " updates, " + std::to_string(s.ring_full) +
                    " ring-full retries, " + std::to_string(s.transitions) + " transitions";
  for (const ServiceStatus& svc : s.services) {
    out += "\n  service " + svc.name + ": " + std::to_string(svc.active) + "/" +
           std::to_string(svc.backends.size()) + " active" + (svc.fail_open ? " (FAIL-OPEN)" : "") +
           (svc.pending ? " (update pending)" : "");
    for (const BackendStatus& b : svc.backends) {
      out += "\n    " + endpoint(b.address, b.port) + " " + to_string(b.health) + " admin " +
             cfg::to_string(b.admin) + " -> " + to_string(b.live) + ", last " + b.last_result +
             " in " + std::to_string(b.last_latency_ms) + "ms, " +
             std::to_string(b.consecutive_successes) + " ok / " +
             std::to_string(b.consecutive_failures) + " failed in a row, for " +
             format_duration(Millis(b.in_state_ms)) + ", " + std::to_string(b.checks) +
             " checks, " + std::to_string(b.failed_checks) + " failed";
    }
  }
  return out;
}

Daemon::Daemon(cfg::Config config, Options options)
    : options_(std::move(options)),
      rng_(options_.seed != 0 ? options_.seed
                              : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()),
      prober_(std::make_unique<Prober>()),
      scratch_(std::make_unique<shm::ServiceUpdate>()) {
  apply(std::move(config));
}

Daemon::~Daemon() {
  if (att_) att_->header().healthd_pid.store(0, std::memory_order_release);
}

TimePoint Daemon::first_check(const BackendHealth& h, TimePoint now) {
  // Spread the first checks over (at most) the first second so that they do not start in step.
  const int64_t span = std::min<int64_t>(ms_of(h.base_interval()), 1000);
  return now + Millis(static_cast<int64_t>(random() % static_cast<uint64_t>(span)));
}

void Daemon::apply(cfg::Config config) {
  const TimePoint now = Clock::now();
  const auto wall = std::chrono::system_clock::now();
  std::vector<ServiceRuntime> next;
  next.reserve(config.services.size());
  size_t backends = 0;
  for (const cfg::ServiceConfig& sc : config.services) {
    ServiceRuntime s{sc, {}, {}, true, 0};
    ServiceRuntime* old = nullptr;
    if (auto it = by_name_.find(sc.name); it != by_name_.end()) old = &services_[it->second];
    if (old) {
      s.last_generation = old->last_generation;
      s.pool = old->pool;  // so that fail_open and all-down transitions are logged once
    }
    const HealthParams params = HealthParams::from(sc.health);
    for (const cfg::BackendConfig& bc : sc.backends) {
      ++backends;
      BackendRuntime* prev = nullptr;
      if (old) {
        for (BackendRuntime& ob : old->backends) {
          if (ob.config.address == bc.address && ob.config.port == bc.port && ob.id != 0) {
            prev = &ob;
            break;
          }
        }
      }
      const ProbeSpec spec = make_spec(sc, bc);
      if (prev) {
        BackendRuntime b = std::move(*prev);
        prev->id = 0;  // taken
        if (b.config.state != bc.state) {
          HLOG_INFO("%s admin state %s -> %s (reload)", b.label.c_str(),
                    cfg::to_string(b.config.state), cfg::to_string(bc.state));
        }
        b.config = bc;
        b.health.set_params(params);
        if (!(b.spec == spec)) {
          b.spec = spec;
          prober_->cancel(b.id);  // a check of the old kind says nothing about the new one
          b.next_check = first_check(b.health, now);
        }
        s.backends.push_back(std::move(b));
      } else {
        const Health initial = to_health(sc.initial_state(bc));
        BackendRuntime b{++next_id_,
                         bc,
                         spec,
                         BackendHealth(params, initial, now),
                         now,
                         wall,
                         sc.name + " " + endpoint(bc.address, bc.port)};
        b.next_check = first_check(b.health, now);
        HLOG_DEBUG(
            "%s added: %s, admin %s, first check in %lldms", b.label.c_str(), to_string(initial),
            cfg::to_string(bc.state),
            static_cast<long long>(ms_of(std::chrono::duration_cast<Millis>(b.next_check - now))));
        s.backends.push_back(std::move(b));
      }
    }
    if (old) {
      for (const BackendRuntime& ob : old->backends) {
        if (ob.id == 0) continue;
        prober_->cancel(ob.id);
        HLOG_INFO("%s removed (reload)", ob.label.c_str());
      }
    }
    removed_.erase(sc.name);
    next.push_back(std::move(s));
  }
  for (const ServiceRuntime& s : services_) {
    const bool kept =
        std::any_of(config.services.begin(), config.services.end(),
                    [&](const cfg::ServiceConfig& c) { return c.name == s.config.name; });
    if (kept) continue;
    for (const BackendRuntime& b : s.backends) {
      if (b.id != 0) prober_->cancel(b.id);
    }
    HLOG_INFO("service %s removed (reload): lbd will be told", s.config.name.c_str());
    removed_.insert(s.config.name);
    removals_pending_ = true;
  }
  services_ = std::move(next);
  index();

  std::string instance = options_.instance.empty() ? config.instance : options_.instance;
  const bool first = config_.file.empty();
  config_ = std::move(config);
  if (instance != instance_) {
    if (!first) HLOG_INFO("instance %s -> %s", instance_.c_str(), instance.c_str());
    detach();
    instance_ = std::move(instance);
    segment_ = shm::segment_name(instance_);
    next_channel_ = TimePoint{};  // attach on the next turn
  }
  for (ServiceRuntime& s : services_) {
    recompute(s);
    s.pending = true;  // a reload pushes every service: lbd applies identical updates harmlessly
  }
  if (!removed_.empty()) removals_pending_ = true;
  HLOG_INFO("%s %s: %zu service(s), %zu backend(s), instance %s (%s)",
            first ? "loaded" : "reloaded", config_.file.c_str(), services_.size(), backends,
            instance_.c_str(), segment_.c_str());
}

void Daemon::index() {
  by_id_.clear();
  by_name_.clear();
  for (size_t i = 0; i < services_.size(); ++i) {
    by_name_[services_[i].config.name] = i;
    for (size_t j = 0; j < services_[i].backends.size(); ++j) {
      by_id_[services_[i].backends[j].id] = {i, j};
    }
  }
}

namespace {
// fail_closed with nothing to offer: lbd applies its no_backend_policy.
bool none_active(const LivePool& p) {
  return p.active == 0 && !p.entries.empty() && !p.fail_open;
}
}  // namespace

void Daemon::recompute(ServiceRuntime& s) {
  std::vector<BackendView> views;
  views.reserve(s.backends.size());
  for (const BackendRuntime& b : s.backends) {
    views.push_back(BackendView{b.config.address, b.config.port, b.config.weight, b.config.state,
                                b.health.health()});
  }
  LivePool pool = build_pool(views, s.config.on_all_down, s.config.maint);
  if (pool == s.pool) return;
  if (pool.fail_open && !s.pool.fail_open) {
    HLOG_WARNING(
        "%s: no backend is active: on_all_down = fail_open sends all %u non-maint "
        "backend(s) as active (panic mode)",
        s.config.name.c_str(), pool.active);
  } else if (!pool.fail_open && s.pool.fail_open) {
    HLOG_WARNING("%s: fail_open (panic mode) ended: %u backend(s) active on their own",
                 s.config.name.c_str(), pool.active);
  }
  if (none_active(pool) && !none_active(s.pool)) {
    HLOG_WARNING(
        "%s: no backend is active: lbd applies its no_backend_policy (on_all_down = "
        "fail_closed)",
        s.config.name.c_str());
  } else if (!none_active(pool) && none_active(s.pool)) {
    HLOG_INFO("%s: %u backend(s) active again", s.config.name.c_str(), pool.active);
  }
  s.pool = std::move(pool);
  s.pending = true;
}

void Daemon::on_transition(ServiceRuntime& s, BackendRuntime& b, const Transition& t) {
  ++transitions_;
  b.changed_wall = std::chrono::system_clock::now();
  const LogLevel level = t.to == Health::kDown ? LogLevel::kWarning : LogLevel::kInfo;
  log(level, "%s %s %s (was %s for %s)", b.label.c_str(), to_string(t.to), t.reason.c_str(),
      to_string(t.from), format_duration(t.was_for).c_str());
  recompute(s);
}

TimePoint Daemon::start_due(TimePoint now) {
  TimePoint next = TimePoint::max();
  for (ServiceRuntime& s : services_) {
    for (BackendRuntime& b : s.backends) {
      if (prober_->running(b.id)) continue;
      if (b.next_check <= now) {
        prober_->start(b.id, b.spec);
        HLOG_DEBUG("%s check %s", b.label.c_str(), b.spec.url.c_str());
      } else {
        next = std::min(next, b.next_check);
      }
    }
  }
  return next;
}

void Daemon::handle_result(uint64_t id, const ProbeResult& r, TimePoint now) {
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  ServiceRuntime& s = services_[it->second.first];
  BackendRuntime& b = s.backends[it->second.second];
  const std::optional<Transition> t = b.health.on_probe(r, now);
  b.next_check = b.health.next_check(now, random());
  HLOG_DEBUG("%s %s in %lldms (%u ok / %u failed in a row, %s)", b.label.c_str(),
             describe(r).c_str(), static_cast<long long>(ms_of(r.latency)), b.health.successes(),
             b.health.failures(), to_string(b.health.health()));
  if (t) on_transition(s, b, *t);
}

void Daemon::mark_all_pending() {
  for (ServiceRuntime& s : services_) s.pending = true;
  if (!removed_.empty()) removals_pending_ = true;
}

void Daemon::detach() {
  if (!att_) return;
  att_->header().healthd_pid.store(0, std::memory_order_release);
  att_.reset();
  wait_logged_ = false;
}

void Daemon::attach(TimePoint) {
  std::string why;
  std::optional<shm::Attachment> a = shm::Attachment::try_attach(segment_, why);
  if (!a) {
    if (!wait_logged_) {
      HLOG_INFO("waiting for lbd: %s (retrying every %lldms)", why.c_str(),
                static_cast<long long>(ms_of(options_.channel_period)));
      wait_logged_ = true;
    }
    return;
  }
  att_ = std::move(a);
  ++attaches_;
  wait_logged_ = false;
  epoch_ = att_->epoch();
  shm::Header& h = att_->header();
  // Generations must keep rising for lbd even across our own restarts: start above anything a
  // previous lb-healthd may still have in the ring.
  const uint64_t seen = std::max(h.received_generation.load(std::memory_order_acquire),
                                 h.applied_generation.load(std::memory_order_acquire));
  generation_ = std::max(generation_, seen + shm::kUpdateRingSlots);
  h.healthd_pid.store(static_cast<uint64_t>(getpid()), std::memory_order_release);
  h.healthd_heartbeat_ms.store(monotonic_ms(), std::memory_order_release);
  HLOG_INFO(
      "attached to %s (epoch %016llx, lbd pid %llu): pushing the full state of %zu "
      "service(s)",
      segment_.c_str(), static_cast<unsigned long long>(epoch_),
      static_cast<unsigned long long>(h.lbd_pid.load(std::memory_order_relaxed)), services_.size());
  ring_full_logged_ = false;
  mark_all_pending();
}

void Daemon::channel_tick(TimePoint now) {
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
      mark_all_pending();
    }
  }
  if (!att_) attach(now);
}

void Daemon::drain_events(TimePoint now) {
  if (!att_) return;
  shm::Event events[64];
  for (int round = 0; round < 16; ++round) {  // at most 1024 per turn: the ring's size
    const unsigned n = att_->receive(events, 64);
    for (unsigned i = 0; i < n; ++i) {
      const shm::Event& e = events[i];
      PassiveSignal signal;
      if (e.type == static_cast<uint32_t>(shm::EventType::kSynRst)) {
        signal = PassiveSignal::kSynRst;
      } else if (e.type == static_cast<uint32_t>(shm::EventType::kSynTimeout)) {
        signal = PassiveSignal::kSynTimeout;
      } else {
        HLOG_DEBUG("event of unknown type %u ignored", e.type);
        continue;
      }
      const std::string name(e.service, strnlen(e.service, sizeof e.service));
      const auto it = by_name_.find(name);
      if (it == by_name_.end()) {
        HLOG_DEBUG("event for unknown service '%s' ignored", name.c_str());
        continue;
      }
      ServiceRuntime& s = services_[it->second];
      for (BackendRuntime& b : s.backends) {
        if (b.config.address != e.ip || b.config.port != e.port) continue;
        HLOG_DEBUG("%s passive: %u %s", b.label.c_str(), e.count, describe(signal));
        if (const std::optional<Transition> t = b.health.on_passive(signal, e.count, now)) {
          on_transition(s, b, *t);
        }
        break;
      }
    }
    if (n < 64) break;
  }
}

void Daemon::flush() {
  if (!att_) return;
  bool full = false;
  if (removals_pending_) {
    for (const std::string& name : removed_) {
      fill_removal(*scratch_, name, generation_ + 1);
      if (!att_->send(*scratch_)) {
        full = true;
        break;
      }
      ++generation_;
      ++updates_sent_;
    }
    if (!full) removals_pending_ = false;
  }
  const size_t n = services_.size();
  for (size_t k = 0; k < n && !full; ++k) {
    const size_t i = (flush_cursor_ + k) % n;
    ServiceRuntime& s = services_[i];
    if (!s.pending) continue;
    fill_update(*scratch_, s.config, s.pool, generation_ + 1);
    if (!att_->send(*scratch_)) {
      full = true;
      flush_cursor_ = i;  // start here next time: every service gets its turn
      break;
    }
    ++generation_;
    ++updates_sent_;
    s.pending = false;
    s.last_generation = generation_;
    HLOG_DEBUG("sent %s: generation %llu, %u/%u active%s", s.config.name.c_str(),
               static_cast<unsigned long long>(generation_), s.pool.active,
               static_cast<unsigned>(s.pool.entries.size()),
               s.pool.fail_open ? " (fail_open)" : "");
  }
  if (full) {
    ++ring_full_;
    if (!ring_full_logged_) {
      size_t waiting = 0;
      for (const ServiceRuntime& s : services_) waiting += s.pending ? 1 : 0;
      HLOG_WARNING(
          "update ring to lbd is full (lbd is not reading?): %zu service update(s) "
          "pending; retrying, newest state wins",
          waiting);
      ring_full_logged_ = true;
    }
  } else if (ring_full_logged_) {
    HLOG_INFO("update ring has room again: pending updates sent");
    ring_full_logged_ = false;
  }
}

void Daemon::handle_signals(int signal_fd) {
  for (int i = 0; i < 64; ++i) {
    signalfd_siginfo si{};
    const ssize_t n = ::read(signal_fd, &si, sizeof si);
    if (n != static_cast<ssize_t>(sizeof si)) break;
    switch (static_cast<int>(si.ssi_signo)) {
      case SIGHUP:
        HLOG_INFO("SIGHUP: reloading %s", options_.config_path.c_str());
        reload();
        break;
      case SIGUSR1:
        HLOG_INFO("%s", format_status(snapshot()).c_str());
        break;
      case SIGTERM:
      case SIGINT:
        HLOG_INFO("%s: stopping", strsignal(static_cast<int>(si.ssi_signo)));
        stop_ = true;
        break;
      default:
        break;
    }
  }
}

bool Daemon::reload() {
  try {
    cfg::Config config = cfg::load_config(options_.config_path);
    if (std::optional<std::string> problem = check_for_healthd(config))
      throw cfg::ConfigError(options_.config_path, 0, "", *problem);
    apply(std::move(config));
    ++reloads_;
    return true;
  } catch (const cfg::ConfigError& e) {
    ++reload_failures_;
    HLOG_ERROR("reload failed, keeping the running configuration: %s", e.what());
    return false;
  }
}

bool Daemon::turn(int signal_fd, Millis max_wait) {
  TimePoint now = Clock::now();
  if (now >= next_channel_) {
    channel_tick(now);
    next_channel_ = now + options_.channel_period;
  }
  drain_events(now);
  const TimePoint due = start_due(now);
  flush();
  if (att_) att_->header().healthd_heartbeat_ms.store(monotonic_ms(), std::memory_order_release);

  TimePoint until = std::min(due, next_channel_);
  bool pending = removals_pending_;
  for (const ServiceRuntime& s : services_) pending = pending || s.pending;
  if (pending && att_) until = std::min(until, now + Millis(10));  // retry the ring soon
  Millis wait = until <= now ? Millis(0) : std::chrono::ceil<Millis>(until - now);
  wait = std::min(wait, max_wait);

  bool woke = false;
  const std::vector<Prober::Done> done = prober_->poll(wait, signal_fd, woke);
  now = Clock::now();
  for (const Prober::Done& d : done) handle_result(d.id, d.result, now);
  if (!done.empty()) flush();
  if (woke) handle_signals(signal_fd);
  return !stop_;
}

int Daemon::run(int signal_fd) {
  while (turn(signal_fd, Millis(1000))) {
  }
  prober_.reset();
  detach();
  HLOG_INFO("stopped");
  return 0;
}

DaemonStatus Daemon::snapshot() const {
  const TimePoint now = Clock::now();
  DaemonStatus st;
  st.config_file = config_.file;
  st.instance = instance_;
  st.segment = segment_;
  st.attached = att_.has_value();
  st.epoch = att_ ? att_->epoch() : 0;
  st.generation = generation_;
  if (att_) {
    st.lbd_received_generation = att_->header().received_generation.load(std::memory_order_acquire);
    st.lbd_applied_generation = att_->header().applied_generation.load(std::memory_order_acquire);
  }
  st.updates_sent = updates_sent_;
  st.ring_full = ring_full_;
  st.attaches = attaches_;
  st.transitions = transitions_;
  st.reloads = reloads_;
  st.reload_failures = reload_failures_;
  for (const ServiceRuntime& s : services_) {
    ServiceStatus ss;
    ss.name = s.config.name;
    ss.fail_open = s.pool.fail_open;
    ss.active = s.pool.active;
    ss.pending = s.pending;
    ss.last_generation = s.last_generation;
    for (size_t j = 0; j < s.backends.size(); ++j) {
      const BackendRuntime& b = s.backends[j];
      BackendStatus bs;
      bs.address = b.config.address;
      bs.port = b.config.port;
      bs.weight = b.config.weight;
      bs.admin = b.config.state;
      bs.health = b.health.health();
      bs.live = j < s.pool.entries.size() ? static_cast<shm::BackendState>(s.pool.entries[j].state)
                                          : shm::BackendState::kDraining;
      bs.last_result = describe(b.health.last_result());
      bs.last_http_status = b.health.last_result().http_status;
      bs.last_latency_ms = ms_of(b.health.last_result().latency);
      bs.consecutive_successes = b.health.successes();
      bs.consecutive_failures = b.health.failures();
      bs.in_state_ms = ms_of(std::chrono::duration_cast<Millis>(now - b.health.since()));
      bs.last_change_unix_ms = static_cast<int64_t>(
          std::chrono::duration_cast<Millis>(b.changed_wall.time_since_epoch()).count());
      bs.checks = b.health.checks();
      bs.failed_checks = b.health.failed_checks();
      bs.transitions = b.health.transitions();
      bs.passive_syn_rst = b.health.passive_signals(PassiveSignal::kSynRst);
      bs.passive_syn_timeout = b.health.passive_signals(PassiveSignal::kSynTimeout);
      bs.check_running = prober_ && prober_->running(b.id);
      bs.next_check_in_ms = ms_of(std::chrono::duration_cast<Millis>(b.next_check - now));
      ss.backends.push_back(std::move(bs));
    }
    st.services.push_back(std::move(ss));
  }
  return st;
}

}  // namespace lb::health
