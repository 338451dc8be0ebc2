#include "daemon.h"

#include <fcntl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <sstream>
#include <utility>

#include "log.h"
#include "metrics_server.h"
#include "protocol.h"
#include "telemetry_client.h"

namespace lb::health {

namespace {

int64_t ms_of(Millis d) {
  return static_cast<int64_t>(d.count());
}

uint64_t monotonic_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<Millis>(Clock::now().time_since_epoch()).count());
}

int64_t unix_ms(std::chrono::system_clock::time_point t) {
  return static_cast<int64_t>(std::chrono::duration_cast<Millis>(t.time_since_epoch()).count());
}

// Gives up the header's healthd_pid only if it is still ours: a second lb-healthd that was
// refused, or one that exits after another attached, must not hide the one that runs.
void release_pid(shm::Header& h) {
  uint64_t mine = static_cast<uint64_t>(getpid());
  // release pairs with the (seq_cst) load of healthd_pid in lbd's telemetry (/lb/pool).
  h.healthd_pid.compare_exchange_strong(mine, 0, std::memory_order_release,
                                        std::memory_order_relaxed);
}

std::string endpoint(uint32_t address, uint16_t port) {
  return cfg::format_ipv4(address) + ":" + std::to_string(port);
}

}  // namespace

std::optional<std::string> check_for_healthd(const cfg::Config& config) {
  if (std::optional<cfg::ConfigError> e = healthd_problem(config)) return std::string(e->what());
  return std::nullopt;
}

std::string format_status(const DaemonStatus& s) {
  std::string out =
      "status: instance " + s.instance + " (" + s.segment + "), " +
      (s.attached ? "attached" : "not attached") + ", generation " + std::to_string(s.generation) +
      " sent, " + std::to_string(s.lbd_applied_generation) + " applied by lbd, " +
      std::to_string(s.updates_sent) + " updates, " + std::to_string(s.ring_full) +
      " ring-full retries, " + std::to_string(s.owed) + " owed, " + std::to_string(s.removals) +
      " removal(s) unacknowledged, " + std::to_string(s.transitions) + " transitions" +
      (s.channel_faults ? ", " + std::to_string(s.channel_faults) + " channel fault(s)" : "");
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
  base_ = services_to_json(config.services);
  if (!options_.runtime_dir.empty()) {
    // One lb-healthd per instance: a second one would be a second writer on a single-producer
    // ring. Taken before anything is attached or checked.
    const std::string instance = options_.instance.empty() ? config.instance : options_.instance;
    prepare_runtime_dir(options_.runtime_dir);
    lock_.emplace(InstanceLock::acquire(options_.runtime_dir, instance));
    const std::string path = health_file_path(options_.runtime_dir, instance);
    std::string why;
    memory_ = read_health_memory(path, instance, unix_ms(std::chrono::system_clock::now()), why);
    if (memory_.empty()) {
      HLOG_INFO("no last health to start from (%s): backends start from initial_state",
                why.empty() ? "the file lists no backend" : why.c_str());
    } else {
      size_t down = 0;
      for (const auto& [key, h] : memory_) down += h.health == Health::kDown ? 1 : 0;
      HLOG_INFO("%s: %zu backend(s) start from their last decided health (%zu DOWN)", path.c_str(),
                memory_.size(), down);
    }
  }
  apply(std::move(config));
  memory_.clear();  // for the first start only: later backends are new
}

Daemon::~Daemon() {
  if (att_) release_pid(att_->header());
}

void Daemon::set_base(Json base) {
  base_ = std::move(base);
  for (const Json& s : base_) {
    const std::string name = s.value("name", std::string());
    if (name.empty() || by_name_.count(name) != 0) continue;
    HLOG_INFO("service %s removed at run time: lbd will be told", name.c_str());
    publisher_.remove(name);
  }
}

std::optional<Health> Daemon::remembered(const std::string& service, const cfg::BackendConfig& b,
                                         TimePoint now, TimePoint& since) {
  const auto it = memory_.find(BackendKey{service, b.address, b.port});
  if (it == memory_.end()) return std::nullopt;
  const int64_t age = unix_ms(std::chrono::system_clock::now()) - it->second.since_unix_ms;
  since = now - Millis(std::max<int64_t>(age, 0));
  return it->second.health;
}

void Daemon::set_control(std::unique_ptr<ControlServer> control) {
  control_ = std::move(control);
}

void Daemon::set_metrics(std::unique_ptr<MetricsServer> metrics) {
  metrics_ = std::move(metrics);
  if (metrics_) metrics_->publish(snapshot());  // something to serve before the first turn
}

void Daemon::tick_metrics(TimePoint now) {
  apply_.observe(publisher_.generation(),
                 att_ ? att_->header().applied_generation.load(std::memory_order_acquire) : 0,
                 att_.has_value(), now);
  if (metrics_ && metrics_->wants_snapshot()) metrics_->publish(snapshot());
}

TimePoint Daemon::first_check(const BackendHealth& h, TimePoint now) {
  // Spread the first checks over (at most) the first second so that they do not start in step.
  const int64_t span = std::min<int64_t>(ms_of(h.base_interval()), 1000);
  return now + Millis(static_cast<int64_t>(random() % static_cast<uint64_t>(span)));
}

void Daemon::apply(cfg::Config config, const std::string& why, Millis drain) {
  const TimePoint now = Clock::now();
  const auto wall = std::chrono::system_clock::now();
  std::vector<ServiceRuntime> next;
  next.reserve(config.services.size());
  size_t backends = 0;
  for (const cfg::ServiceConfig& sc : config.services) {
    ServiceRuntime s{sc, {}, {}, 0, {}, false};
    ServiceRuntime* old = nullptr;
    if (auto it = by_name_.find(sc.name); it != by_name_.end()) old = &services_[it->second];
    if (old) {
      s.last_generation = old->last_generation;
      s.pool = old->pool;  // so that fail_open and all-down transitions are logged once
      // Still draining from an earlier reload, unless the service has it again.
      for (Leaving& l : old->leaving) {
        const bool back = std::any_of(sc.backends.begin(), sc.backends.end(), [&](const auto& b) {
          return b.address == l.backend.config.address && b.port == l.backend.config.port;
        });
        if (back) {
          HLOG_INFO("%s is back (%s) before it had drained", l.backend.label.c_str(), why.c_str());
        } else {
          s.leaving.push_back(std::move(l));
        }
      }
      old->leaving.clear();
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
          HLOG_INFO("%s admin state %s -> %s (%s)", b.label.c_str(), cfg::to_string(b.config.state),
                    cfg::to_string(bc.state), why.c_str());
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
        // A restarted lb-healthd starts from the health it last decided, when it knows it
        // (a backend known DOWN must not take connections for a fall period).
        TimePoint since = now;
        const std::optional<Health> last = remembered(sc.name, bc, now, since);
        const Health initial = last.value_or(to_health(sc.initial_state(bc)));
        BackendRuntime b{++next_id_,
                         bc,
                         spec,
                         BackendHealth(params, initial, since),
                         now,
                         wall - (now - since),
                         sc.name + " " + endpoint(bc.address, bc.port)};
        if (last) {
          HLOG_INFO("%s starts %s, as last decided %s ago", b.label.c_str(), to_string(initial),
                    format_duration(std::chrono::duration_cast<Millis>(now - since)).c_str());
        }
        b.next_check = first_check(b.health, now);
        HLOG_DEBUG(
            "%s added: %s, admin %s, first check in %lldms", b.label.c_str(), to_string(initial),
            cfg::to_string(bc.state),
            static_cast<long long>(ms_of(std::chrono::duration_cast<Millis>(b.next_check - now))));
        s.backends.push_back(std::move(b));
      }
    }
    if (old) {
      for (BackendRuntime& ob : old->backends) {
        if (ob.id == 0) continue;
        prober_->cancel(ob.id);
        if (drain > Millis(0)) {
          start_leaving(s, std::move(ob), drain, now);
        } else {
          HLOG_INFO("%s removed (%s)", ob.label.c_str(), why.c_str());
        }
      }
    }
    publisher_.cancel_removal(sc.name);
    next.push_back(std::move(s));
  }
  for (ServiceRuntime& s : services_) {
    const bool kept =
        std::any_of(config.services.begin(), config.services.end(),
                    [&](const cfg::ServiceConfig& c) { return c.name == s.config.name; });
    if (kept) continue;
    for (const BackendRuntime& b : s.backends) {
      if (b.id != 0) prober_->cancel(b.id);
    }
    // A service a reload removes drains like its backends, keeping its VIP meanwhile, unless
    // the new configuration gives that VIP:port to another service (lbd would refuse it).
    const auto taken = std::find_if(config.services.begin(), config.services.end(),
                                    [&](const cfg::ServiceConfig& c) {
                                      return c.vip == s.config.vip && c.port == s.config.port;
                                    });
    const bool drains = (drain > Millis(0) || s.removed) && taken == config.services.end();
    if (drains) {
      if (!s.removed) {
        HLOG_INFO("service %s removed (%s): it drains before lbd is told", s.config.name.c_str(),
                  why.c_str());
      }
      // Its pool (recompute() below) has every backend draining: lbd is sent that.
      ServiceRuntime gone{s.config, {}, s.pool, s.last_generation, std::move(s.leaving), true};
      for (BackendRuntime& b : s.backends) start_leaving(gone, std::move(b), drain, now);
      next.push_back(std::move(gone));
      continue;
    }
    if (taken != config.services.end() && (drain > Millis(0) || s.removed)) {
      HLOG_WARNING(
          "service %s removed (%s): its VIP %s:%u is now service %s's, so it cannot drain: its "
          "connections are reset",
          s.config.name.c_str(), why.c_str(), cfg::format_ipv4(s.config.vip).c_str(),
          static_cast<unsigned>(s.config.port), taken->name.c_str());
    } else {
      HLOG_INFO("service %s removed (%s): lbd will be told", s.config.name.c_str(), why.c_str());
    }
    publisher_.remove(s.config.name);  // owed before the updates below: it may free a VIP
  }
  // What lbd was last told of each service that stays: a runtime change sends only the services
  // whose message it changes; a reload (or the first load) sends them all.
  const bool push_all = config_.file.empty() || why == "reload";
  std::unordered_map<std::string, bool> unchanged;
  for (const ServiceRuntime& s : next) {
    const auto it = by_name_.find(s.config.name);
    if (it == by_name_.end()) continue;
    const cfg::ServiceConfig& o = services_[it->second].config;
    unchanged[s.config.name] =
        o.vip == s.config.vip && o.port == s.config.port && o.scheduler == s.config.scheduler &&
        o.forward == s.config.forward && o.maglev_table_size == s.config.maglev_table_size &&
        o.miss_policy == s.config.miss_policy && o.syn_flood_policy == s.config.syn_flood_policy;
  }
  services_ = std::move(next);
  index();
  health_dirty_ = true;

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
  if (!config_.bgp.enabled()) {
    if (announcer_) {
      HLOG_INFO("bgp: the group was removed: withdrawing every VIP, then leaving BIRD alone");
      announcer_->set({}, Clock::now());
    }
    announcer_.reset();
  } else if (std::string key = render_bird_config(config_, instance_, {});
             !announcer_ || key != bgp_key_) {
    // A new bgp group (or a new instance): written and reloaded on the next turn.
    announcer_.emplace(config_, instance_);
    bgp_key_ = std::move(key);
  }
  for (ServiceRuntime& s : services_) {
    recompute(s);  // owes the service if its pool changed
    const auto it = unchanged.find(s.config.name);
    if (push_all || it == unchanged.end() || !it->second) publisher_.update(s.config.name);
  }
  if (first || why == "reload") {
    HLOG_INFO("%s %s: %zu service(s), %zu backend(s), instance %s (%s)",
              first ? "loaded" : "reloaded", config_.file.c_str(), services_.size(), backends,
              instance_.c_str(), segment_.c_str());
  } else {
    HLOG_INFO("%s: %zu service(s), %zu backend(s)", why.c_str(), services_.size(), backends);
  }
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
  // Backends a reload removed stay in lbd's pool as draining until they have no flow left.
  for (const Leaving& l : s.leaving) {
    shm::BackendEntry e{};
    e.ip = l.backend.config.address;
    e.port = l.backend.config.port;
    e.weight = static_cast<uint16_t>(std::min<uint32_t>(l.backend.config.weight, 65535));
    e.state = static_cast<uint8_t>(shm::BackendState::kDraining);
    pool.entries.push_back(e);
  }
  if (pool == s.pool) return;
  if (s.removed) {
    // The service is going: its pool has nothing active by design.
  } else if (pool.fail_open && !s.pool.fail_open) {
    HLOG_WARNING(
        "%s: no backend is active: on_all_down = fail_open sends all %u non-maint "
        "backend(s) as active (panic mode)",
        s.config.name.c_str(), pool.active);
  } else if (!pool.fail_open && s.pool.fail_open) {
    HLOG_WARNING("%s: fail_open (panic mode) ended: %u backend(s) active on their own",
                 s.config.name.c_str(), pool.active);
  }
  if (s.removed) {
  } else if (none_active(pool) && !none_active(s.pool)) {
    HLOG_WARNING(
        "%s: no backend is active: lbd applies its no_backend_policy (on_all_down = "
        "fail_closed)",
        s.config.name.c_str());
  } else if (!none_active(pool) && none_active(s.pool)) {
    HLOG_INFO("%s: %u backend(s) active again", s.config.name.c_str(), pool.active);
  }
  s.pool = std::move(pool);
  publisher_.update(s.config.name);
}

void Daemon::on_transition(ServiceRuntime& s, BackendRuntime& b, const Transition& t) {
  ++transitions_;
  b.changed_wall = std::chrono::system_clock::now();
  health_dirty_ = true;  // kept for a restart at the end of this turn
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
  b.checks.observe(r);
  b.next_check = b.health.next_check(now, random());
  HLOG_DEBUG("%s %s in %lldms (%u ok / %u failed in a row, %s)", b.label.c_str(),
             describe(r).c_str(), static_cast<long long>(ms_of(r.latency)), b.health.successes(),
             b.health.failures(), to_string(b.health.health()));
  if (t) on_transition(s, b, *t);
}

void Daemon::owe_everything() {
  // Removals first: a removed service may hold the VIP a running one now takes. A new lbd
  // started from the file: it has the file's services that no longer run.
  std::vector<std::string> gone;
  for (const Json& s : base_) {
    const std::string name = s.value("name", std::string());
    if (!name.empty() && by_name_.count(name) == 0) gone.push_back(name);
  }
  for (const std::string& name : gone) publisher_.remove(name);
  for (const ServiceRuntime& s : services_) publisher_.update(s.config.name);
}

void Daemon::detach() {
  if (!att_) return;
  release_pid(att_->header());
  att_.reset();
  wait_logged_ = false;
  lbd_beat_ = 0;
}

void Daemon::refuse_segment(const std::string& why, TimePoint now) {
  ++channel_faults_;
  if (now >= next_fault_log_) {
    HLOG_ERROR("%s refused: %s: detached; attaching again once it is valid", segment_.c_str(),
               why.c_str());
    next_fault_log_ = now + Millis(10000);
  }
  detach();
}

bool Daemon::read_lbd(LbdView& v, TimePoint now) {
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

void Daemon::check_channel(TimePoint now) {
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
  if (read_lbd(v, now)) publisher_.acknowledged(v.received);
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
  faults_seen_ = 0;
  const bool same_lbd = epoch_ != 0 && att_->epoch() == epoch_;
  epoch_ = att_->epoch();
  shm::Header& h = att_->header();
  // try_attach() checked these are at most shm::kMaxGeneration. acquire pairs with lbd's
  // release stores (dataplane.cc).
  const uint64_t seen = std::max({h.received_generation.load(std::memory_order_acquire),
                                  h.applied_generation.load(std::memory_order_acquire),
                                  h.rejected_generation.load(std::memory_order_acquire)});
  publisher_.attached(seen, same_lbd);
  // release pairs with the (seq_cst) load of healthd_pid in lbd's telemetry (/lb/pool).
  h.healthd_pid.store(static_cast<uint64_t>(getpid()), std::memory_order_release);
  h.healthd_heartbeat_ms.store(monotonic_ms(), std::memory_order_release);
  HLOG_INFO(
      "attached to %s (epoch %016llx, lbd pid %llu): pushing the full state of %zu "
      "service(s)",
      segment_.c_str(), static_cast<unsigned long long>(epoch_),
      static_cast<unsigned long long>(
          shm::plausible_pid(h.lbd_pid.load(std::memory_order_relaxed))),
      services_.size());
  ring_full_logged_ = false;
  owe_everything();
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
      publisher_.attached(0, false);
      owe_everything();
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
      // Well formed (type, count, name: shm::event_problem()); it must also name a backend
      // we run: one just removed is a race, anything else is ignored the same way.
      const shm::Event& e = events[i];
      const PassiveSignal signal = e.type == static_cast<uint32_t>(shm::EventType::kSynRst)
                                       ? PassiveSignal::kSynRst
                                       : PassiveSignal::kSynTimeout;
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
  const auto fill = [this](const std::string& name, uint64_t generation, shm::ServiceUpdate& out) {
    const auto it = by_name_.find(name);
    if (it == by_name_.end()) return false;
    const ServiceRuntime& s = services_[it->second];
    fill_update(out, s.config, s.pool, generation);
    return true;
  };
  const auto sent = [this](const std::string& name, uint64_t generation, bool removal) {
    const auto it = by_name_.find(name);
    if (removal || it == by_name_.end()) {
      HLOG_DEBUG("sent the removal of %s: generation %llu", name.c_str(),
                 static_cast<unsigned long long>(generation));
      return;
    }
    ServiceRuntime& s = services_[it->second];
    s.last_generation = generation;
    HLOG_DEBUG("sent %s: generation %llu, %u/%u active%s", name.c_str(),
               static_cast<unsigned long long>(generation), s.pool.active,
               static_cast<unsigned>(s.pool.entries.size()),
               s.pool.fail_open ? " (fail_open)" : "");
  };
  const Publisher::Outcome outcome = publisher_.flush(*att_, *scratch_, fill, sent);
  if (outcome == Publisher::Outcome::kRefused) {
    check_channel(Clock::now());
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
      case SIGUSR1: {
        // One log line per line of the status: the log escapes newlines within a line.
        std::istringstream lines(format_status(snapshot()));
        for (std::string line; std::getline(lines, line);) HLOG_INFO("%s", line.c_str());
        break;
      }
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
  return reload_config(false).ok;
}

namespace {

ChangeResult refused(std::string code, std::string message) {
  ChangeResult r;
  r.refusal = Refusal{std::move(code), std::move(message)};
  return r;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

std::string Daemon::persist(const Json& base, const Json& running, bool& persisted) {
  persisted = false;
  const std::string& path = options_.state_file;
  if (path.empty()) return "";
  // Nothing to remember and nothing remembered: no file is needed (a read-only config
  // directory keeps working as long as nothing is changed at run time).
  if (base == running && !file_exists(path)) return "";
  try {
    write_file_atomic(path, format_state(RuntimeState{base, running}, options_.config_path), 0600);
  } catch (const std::exception& e) {
    return e.what();
  }
  persisted = true;
  return "";
}

ChangeResult Daemon::reload_config(bool replace, std::optional<Millis> drain_timeout) {
  cfg::Config file;
  try {
    file = cfg::load_config(options_.config_path);
    if (std::optional<cfg::ConfigError> problem = healthd_problem(file)) throw *problem;
  } catch (const cfg::ConfigError& e) {
    ++reload_failures_;
    HLOG_ERROR("reload failed, keeping the running configuration: %s", e.what());
    return refused("config", e.what());
  }
  const Json file_services = services_to_json(file.services);
  const Json running = services_to_json(config_.services);
  const Json next = replace ? file_services : merge_services(base_, file_services, running);
  cfg::Config config = file;
  if (next != file_services) {
    try {
      config = build_config(file, next, options_.config_path + " + runtime changes");
    } catch (const cfg::ConfigError& e) {
      ++reload_failures_;
      const std::string why = options_.config_path + ": the file conflicts with runtime changes: " +
                              describe_error(e, next) +
                              " (change the file, or reload with --replace to drop the runtime "
                              "changes)";
      HLOG_ERROR("reload failed, keeping the running configuration: %s", why.c_str());
      return refused("conflict", why);
    }
  }
  // A new instance is another lb-healthd's if it holds that instance's lock: refused.
  std::optional<InstanceLock> lock;
  const std::string instance = options_.instance.empty() ? config.instance : options_.instance;
  if (lock_ && instance != lock_->instance()) {
    try {
      lock.emplace(InstanceLock::acquire(options_.runtime_dir, instance));
    } catch (const std::exception& e) {
      ++reload_failures_;
      HLOG_ERROR("reload failed, keeping the running configuration: instance %s: %s",
                 instance.c_str(), e.what());
      return refused("instance", e.what());
    }
  }
  ChangeResult r;
  if (const std::string problem = persist(file_services, next, r.persisted); !problem.empty()) {
    ++reload_failures_;
    HLOG_ERROR("reload failed, keeping the running configuration: %s", problem.c_str());
    return refused("io", "cannot keep the runtime state: " + problem);
  }
  r.ok = true;
  r.changes = diff_services(running, next);
  r.mark = publisher_.generation();
  base_ = file_services;
  const Millis drain = drain_timeout.value_or(Millis(config.healthd.drain_timeout_ms));
  const TimePoint before = Clock::now();
  apply(std::move(config), "reload", drain);
  // Say which removals drain (and so are not gone yet): the operator sees them in the reply.
  for (const ServiceRuntime& s : services_) {
    const std::string at_most = " (at most " + format_duration(drain) + ")";
    bool service_line = false;
    for (const Leaving& l : s.leaving) {
      if (l.since < before) continue;
      if (s.removed && !service_line) {
        r.changes.push_back("service " + s.config.name +
                            ": drains before it goes: no new connections; lbd keeps it until its "
                            "backends have no flow left" +
                            at_most);
        service_line = true;
      }
      r.changes.push_back("service " + s.config.name + ": backend " +
                          endpoint(l.backend.config.address, l.backend.config.port) +
                          " drains: no new flows; it leaves lbd's pool once its flows have "
                          "ended" +
                          at_most);
    }
  }
  if (lock) lock_ = std::move(lock);
  for (const std::string& c : r.changes) HLOG_INFO("reload: %s", c.c_str());
  if (const std::vector<std::string> kept = runtime_changes(); !kept.empty()) {
    HLOG_INFO("reload: %zu runtime change(s) not in the file kept (lbctl config diff)",
              kept.size());
  }
  ++reloads_;
  return r;
}

ChangeResult Daemon::change(const std::string& what, const ServicesEdit& edit) {
  const Json running = services_to_json(config_.services);
  Json next = running;
  if (std::optional<Refusal> no = edit(next)) {
    HLOG_DEBUG("refused %s: %s", what.c_str(), no->message.c_str());  // the control socket logs it
    return refused(no->code, no->message);
  }
  ChangeResult r;
  if (next == running) {
    r.ok = true;
    r.mark = publisher_.generation();
    return r;
  }
  cfg::Config config;
  try {
    config = build_config(config_, next, "(runtime change)");
  } catch (const cfg::ConfigError& e) {
    const std::string why = describe_error(e, next);
    HLOG_DEBUG("refused %s: %s", what.c_str(), why.c_str());  // the control socket logs it
    return refused("invalid", why);
  }
  // From here on the services as the configuration library read them: every key with its
  // effective value, whatever the client left out.
  const Json canonical = services_to_json(config.services);
  if (canonical == running) {
    r.ok = true;
    r.mark = publisher_.generation();
    return r;
  }
  if (const std::string problem = persist(base_, canonical, r.persisted); !problem.empty()) {
    HLOG_ERROR("refused %s: cannot keep the runtime state: %s", what.c_str(), problem.c_str());
    return refused("io", "cannot keep the runtime state: " + problem);
  }
  r.ok = true;
  r.changes = diff_services(running, canonical);
  r.mark = publisher_.generation();
  for (const std::string& c : r.changes) HLOG_INFO("runtime change: %s", c.c_str());
  apply(std::move(config), "runtime change: " + what);
  return r;
}

std::string Daemon::running_config_text() const {
  return to_libconfig(config_to_json(config_), config_.file,
                      "lbd / lb-healthd configuration (docs/configuration.md), written by "
                      "lb-healthd from its running state.");
}

ChangeResult Daemon::save_config() {
  const std::string& path = options_.config_path;
  std::string text = running_config_text();
  // The file must read back as what runs (it always should: the same code wrote and validated
  // it); check before replacing anything.
  try {
    const cfg::Config check = cfg::parse_config(text, path);
    if (services_to_json(check.services) != services_to_json(config_.services))
      return refused("internal", "the written configuration would not read back the same");
  } catch (const cfg::ConfigError& e) {
    return refused("internal", std::string("the written configuration is not valid: ") + e.what());
  }
  struct stat st {};
  mode_t mode = 0644;
  std::optional<FileOwner> owner;  // the file's owner and group stay: others may read it by group
  try {
    if (::stat(path.c_str(), &st) == 0) {
      mode = st.st_mode & 07777;
      owner = FileOwner{st.st_uid, st.st_gid};
      int error = 0;
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw std::runtime_error(path + ": cannot read: " + std::strerror(errno));
      std::string old;
      char buf[65536];
      ssize_t n = 0;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) old.append(buf, static_cast<size_t>(n));
      error = n < 0 ? errno : 0;
      ::close(fd);
      if (error != 0) throw std::runtime_error(path + ": cannot read: " + std::strerror(error));
      write_file_atomic(path + ".bak", old, mode, owner);
    }
    write_file_atomic(path, text, mode, owner);
  } catch (const std::exception& e) {
    HLOG_ERROR("config save failed: %s", e.what());
    return refused("io", e.what());
  }
  ChangeResult r;
  r.ok = true;
  const Json running = services_to_json(config_.services);
  r.changes = diff_services(base_, running);  // what the file gained
  base_ = running;
  if (const std::string problem = persist(base_, running, r.persisted); !problem.empty()) {
    HLOG_WARNING("saved %s, but the state file could not be updated: %s", path.c_str(),
                 problem.c_str());
  }
  r.mark = publisher_.generation();
  HLOG_INFO("saved the running configuration to %s (previous file kept as %s.bak)", path.c_str(),
            path.c_str());
  return r;
}

std::vector<std::string> Daemon::runtime_changes() const {
  return diff_services(base_, services_to_json(config_.services));
}

void Daemon::when_applied(uint64_t mark, Millis timeout,
                          std::function<void(const AckResult&)> done) {
  const TimePoint now = Clock::now();
  waiters_.push_back(
      Waiter{mark, publisher_.ticket(), std::nullopt, now, now + timeout, std::move(done)});
}

void Daemon::check_waiters(TimePoint now) {
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
    a.generation = w.target.value_or(0);
    a.applied_generation = applied;
    a.waited_ms = ms_of(std::chrono::duration_cast<Millis>(now - w.start));
    if (w.target && rejected > w.mark && rejected <= *w.target) {
      a.code = "rejected";
      a.error = "lbd refused update " + std::to_string(rejected) +
                ", which carries this change (lbd's log says why)";
    } else if (w.target && applied >= *w.target) {
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
                  std::to_string(applied) + ", the change is in " + std::to_string(*w.target);
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

// -- Draining what a reload removed -----------------------------------------------------------

namespace {
// How often lbd's flow counts are read while something drains, and after a failed read.
constexpr Millis kLeavingCheck{250};
constexpr Millis kLeavingRetry{2000};
// A read of lbd's telemetry blocks the loop for at most this long (twice: hello, reply).
constexpr int kTelemetryTimeoutMs = 100;
}  // namespace

void Daemon::start_leaving(ServiceRuntime& s, BackendRuntime b, Millis drain, TimePoint now) {
  if (s.backends.size() + s.leaving.size() >= shm::kMaxBackendsPerService) {
    HLOG_WARNING(
        "%s removed: it cannot drain (service %s already sends lbd %u backends, the most one "
        "update carries): its connections are reset",
        b.label.c_str(), s.config.name.c_str(), shm::kMaxBackendsPerService);
    return;
  }
  HLOG_INFO(
      "%s removed: draining (no new flows; it leaves lbd's pool once its flows have ended, "
      "at most %s)",
      b.label.c_str(), format_duration(drain).c_str());
  s.leaving.push_back(Leaving{std::move(b), now, now + drain, publisher_.generation(), -1});
  next_leaving_check_ = std::min(next_leaving_check_, now + kLeavingCheck);
}

bool Daemon::anything_leaving() const {
  return std::any_of(services_.begin(), services_.end(),
                     [](const ServiceRuntime& s) { return s.removed || !s.leaving.empty(); });
}

std::optional<std::unordered_map<std::string, int64_t>> Daemon::lbd_flows(std::string& why) {
  const std::string path =
      options_.telemetry.empty() ? ctl::telemetry_path(instance_) : options_.telemetry;
  try {
    ctl::TelemetryClient t(path, kTelemetryTimeoutMs);
    const Json backends = t.query("/lb/backends");
    std::unordered_map<std::string, int64_t> out;
    if (!backends.is_object())
      throw ctl::Error("lbd's telemetry at " + path + ": /lb/backends is not an object");
    for (const auto& [key, b] : backends.items()) {
      if (!b.is_object()) continue;
      const Json flows = b.value("flows_active", Json());
      // An id lbd has not reclaimed yet may repeat a backend: the flows are the sum.
      out[b.value("service", std::string()) + "|" + b.value("address", std::string())] +=
          flows.is_number_integer() ? flows.get<int64_t>() : 0;
    }
    return out;
  } catch (const std::exception& e) {
    why = e.what();
    return std::nullopt;
  }
}

void Daemon::tick_leaving(TimePoint now) {
  if (now < next_leaving_check_ || !anything_leaving()) return;
  next_leaving_check_ = now + kLeavingCheck;
  // lbd's counters, checked (read_lbd()); a segment refused just now decides nothing here.
  LbdView lbd;
  if (att_ && !read_lbd(lbd, now)) return;
  const uint64_t applied = lbd.applied;
  // lbd applies an update that has the backend draining: from then on no new flow reaches it,
  // so a count of 0 stays 0 (an earlier count could still grow).
  const auto drains_in_lbd = [&](const ServiceRuntime& s, const Leaving& l) {
    return att_ && !publisher_.owed(s.config.name) && s.last_generation > l.mark &&
           applied >= s.last_generation;
  };
  bool counting = false;
  for (const ServiceRuntime& s : services_) {
    for (const Leaving& l : s.leaving) counting = counting || drains_in_lbd(s, l);
  }
  std::optional<std::unordered_map<std::string, int64_t>> counts;
  if (counting) {
    std::string why;
    counts = lbd_flows(why);
    if (!counts) {
      if (why != telemetry_error_) {
        HLOG_WARNING(
            "cannot count the flows of draining backends: %s: they leave lbd's pool "
            "after their drain timeout",
            why.c_str());
      }
      next_leaving_check_ = now + kLeavingRetry;
    } else if (!telemetry_error_.empty()) {
      HLOG_INFO("counting the flows of draining backends again (lbd's telemetry answers)");
    }
    telemetry_error_ = counts ? "" : why;
  }
  for (ServiceRuntime& s : services_) {
    const size_t before = s.leaving.size();
    std::erase_if(s.leaving, [&](Leaving& l) {
      const char* label = l.backend.label.c_str();
      const std::string took = format_duration(std::chrono::duration_cast<Millis>(now - l.since));
      if (!att_) {
        HLOG_INFO("%s removed: lbd is not running (or lb-healthd not attached): no flow to drain",
                  label);
        return true;
      }
      if (counts && drains_in_lbd(s, l)) {
        const auto it = counts->find(s.config.name + "|" +
                                     endpoint(l.backend.config.address, l.backend.config.port));
        l.flows = it == counts->end() ? 0 : it->second;
        if (l.flows <= 0) {
          HLOG_INFO("%s drained in %s: removed from lbd's pool", label, took.c_str());
          return true;
        }
      }
      if (now >= l.deadline) {
        const std::string flows = l.flows < 0 ? std::string("its flows not counted")
                                              : std::to_string(l.flows) + " active flow(s)";
        HLOG_WARNING(
            "%s: drain timeout after %s with %s: removed from lbd's pool (lbd resets "
            "its connections)",
            label, took.c_str(), flows.c_str());
        return true;
      }
      return false;
    });
    if (s.leaving.size() != before) recompute(s);
  }
  // A service a reload removed goes once its backends have: now lbd is told.
  const size_t count = services_.size();
  std::erase_if(services_, [&](const ServiceRuntime& s) {
    if (!s.removed || !s.leaving.empty()) return false;
    HLOG_INFO("service %s drained: lbd will be told it is removed", s.config.name.c_str());
    publisher_.remove(s.config.name);
    return true;
  });
  if (services_.size() != count) index();
}

bool Daemon::turn(int signal_fd, Millis max_wait) {
  TimePoint now = Clock::now();
  if (now >= next_channel_) {
    channel_tick(now);
    next_channel_ = now + options_.channel_period;
  }
  drain_events(now);
  tick_leaving(now);
  const TimePoint due = start_due(now);
  flush();
  check_channel(now);
  if (att_) {
    att_->header().healthd_heartbeat_ms.store(monotonic_ms(), std::memory_order_release);
    const uint64_t beat = att_->header().lbd_heartbeat_ms.load(std::memory_order_relaxed);
    if (beat != lbd_beat_) {
      lbd_beat_ = beat;
      lbd_beat_seen_ = now;
    }
  }

  announce_tick(now);
  tick_metrics(now);
  TimePoint until = std::min({due, next_channel_, next_health_write_});
  if (announcer_) until = std::min(until, now + Millis(100));         // lbd's heartbeat is watched
  if (anything_pending()) until = std::min(until, now + Millis(10));  // retry the ring soon
  if (!waiters_.empty() || apply_.waiting())
    until = std::min(until, now + Millis(2));  // lbd acks within a tick
  if (anything_leaving()) until = std::min(until, next_leaving_check_);
  int wake_fd = signal_fd;
  if (control_) {
    if (signal_fd >= 0) control_->watch(signal_fd);
    wake_fd = control_->fd();
    until = std::min(until, control_->next_deadline());
  }
  Millis wait = until <= now ? Millis(0) : std::chrono::ceil<Millis>(until - now);
  wait = std::min(wait, max_wait);

  bool woke = false;
  const std::vector<Prober::Done> done = prober_->poll(wait, wake_fd, woke);
  now = Clock::now();
  for (const Prober::Done& d : done) handle_result(d.id, d.result, now);
  if (!done.empty()) flush();
  if (woke && signal_fd >= 0) handle_signals(signal_fd);
  if (control_) {
    control_->service(now, [this](ControlServer::ConnId id, const Json& request) {
      return handle_request(*this, *control_, id, request);
    });
  }
  if (anything_pending()) flush();  // a change made above goes out in this turn
  now = Clock::now();
  check_channel(now);
  check_waiters(now);
  if (health_dirty_ || now >= next_health_write_) write_health(now);
  tick_metrics(now);
  return !stop_;
}

void Daemon::write_health(TimePoint now) {
  health_dirty_ = false;
  next_health_write_ = now + kHealthRefresh;
  if (options_.runtime_dir.empty()) {
    next_health_write_ = TimePoint::max();
    return;
  }
  HealthMemory memory;
  for (const ServiceRuntime& s : services_) {
    for (const BackendRuntime& b : s.backends) {
      memory[BackendKey{s.config.name, b.config.address, b.config.port}] =
          RememberedHealth{b.health.health(), unix_ms(b.changed_wall)};
    }
  }
  const std::string path = health_file_path(options_.runtime_dir, instance_);
  try {
    write_file_atomic(
        path, format_health_memory(instance_, memory, unix_ms(std::chrono::system_clock::now())),
        0600);
    if (health_write_failed_) HLOG_INFO("%s written again", path.c_str());
    health_write_failed_ = false;
  } catch (const std::exception& e) {
    if (!health_write_failed_) {
      HLOG_WARNING("cannot keep the backends' health for a restart: %s", e.what());
      health_write_failed_ = true;
    }
  }
}

int Daemon::run(int signal_fd) {
  while (turn(signal_fd, Millis(1000))) {
  }
  for (Waiter& w : waiters_) {
    AckResult a;
    a.code = "timeout";
    a.error = "lb-healthd is stopping before lbd applied the change";
    w.done(a);
  }
  waiters_.clear();
  if (control_) control_->reply_all_deferred(error_reply("stopping", "lb-healthd is stopping"));
  control_.reset();
  metrics_.reset();
  prober_.reset();
  write_health(Clock::now());
  detach();
  HLOG_INFO("stopped");
  return 0;
}

void Daemon::set_node_state(NodeState state) {
  if (state != node_) HLOG_INFO("node %s -> %s", to_string(node_), to_string(state));
  node_ = state;
  announce_tick(Clock::now());
}

void Daemon::announce_tick(TimePoint now) {
  if (!announcer_) return;
  LbdLiveness lbd;
  lbd.attached = att_.has_value();
  if (att_) {
    if (lbd_beat_ != 0)
      lbd.heartbeat_age_ms = ms_of(std::chrono::duration_cast<Millis>(now - lbd_beat_seen_));
    const shm::Header& h = att_->header();
    const uint64_t done = std::max(h.applied_generation.load(std::memory_order_acquire),
                                   h.rejected_generation.load(std::memory_order_acquire));
    if (done >= publisher_.generation()) {
      unapplied_since_.reset();
    } else if (!unapplied_since_) {
      unapplied_since_ = now;
    }
    if (unapplied_since_)
      lbd.unapplied_ms = ms_of(std::chrono::duration_cast<Millis>(now - *unapplied_since_));
  } else {
    unapplied_since_.reset();
  }
  std::vector<ServiceServing> services;
  for (const ServiceRuntime& s : services_) {
    if (s.removed) continue;
    services.push_back({s.config.vip, s.pool.active > 0 && !s.pool.fail_open});
  }
  std::vector<VipDecision> decisions = decide(config_.bgp, node_, lbd, services);
  std::vector<uint32_t> vips;
  for (const VipDecision& d : decisions) {
    if (d.announce) vips.push_back(d.vip);
  }
  for (const VipDecision& d : decisions) {
    const auto old = std::find_if(decisions_.begin(), decisions_.end(),
                                  [&](const VipDecision& o) { return o.vip == d.vip; });
    if (old == decisions_.end() || old->announce != d.announce) {
      HLOG_INFO("bgp: %s %s (%s)", cfg::format_ipv4(d.vip).c_str(),
                d.announce ? "announced" : "withdrawn", d.why.c_str());
    }
  }
  decisions_ = std::move(decisions);
  announcer_->set(vips, now);
}

DaemonStatus Daemon::snapshot() const {
  const TimePoint now = Clock::now();
  DaemonStatus st;
  st.config_file = config_.file;
  st.state_file = options_.state_file;
  st.instance = instance_;
  st.segment = segment_;
  st.attached = att_.has_value();
  st.epoch = att_ ? att_->epoch() : 0;
  st.generation = publisher_.generation();
  if (att_) {
    st.lbd_received_generation = att_->header().received_generation.load(std::memory_order_acquire);
    st.lbd_applied_generation = att_->header().applied_generation.load(std::memory_order_acquire);
    st.lbd_rejected_generation = att_->header().rejected_generation.load(std::memory_order_acquire);
    st.lbd_pid = shm::plausible_pid(att_->header().lbd_pid.load(std::memory_order_relaxed));
    // lbd's heartbeat runs on its own clock (TSC): its age is how long ago it last moved.
    if (lbd_beat_ != 0)
      st.lbd_heartbeat_age_ms = ms_of(std::chrono::duration_cast<Millis>(now - lbd_beat_seen_));
  }
  st.updates_sent = publisher_.messages_sent();
  st.ring_full = publisher_.ring_full();
  st.owed = publisher_.owed_count();
  st.removals = publisher_.removals();
  st.channel_faults = channel_faults_;
  st.attaches = attaches_;
  st.transitions = transitions_;
  st.reloads = reloads_;
  st.reload_failures = reload_failures_;
  st.pool_apply_seconds = apply_.latency();
  if (announcer_) {
    st.bgp.enabled = true;
    st.bgp.node = node_;
    st.bgp.vips = decisions_;
    st.bgp.in_bird = announcer_->in_bird();
    st.bgp.last_error = announcer_->last_error();
    st.bgp.reloads = announcer_->reloads();
    st.bgp.reload_failures = announcer_->reload_failures();
    st.bgp.bird_config = announcer_->config_path();
    st.bgp.bird_socket = announcer_->socket_path();
  }
  for (const ServiceRuntime& s : services_) {
    ServiceStatus ss;
    ss.name = s.config.name;
    ss.fail_open = s.pool.fail_open;
    ss.active = s.pool.active;
    ss.pending = publisher_.owed(s.config.name);
    ss.last_generation = s.last_generation;
    ss.removed = s.removed;
    ss.vip = s.config.vip;
    ss.port = s.config.port;
    // The backends, then those a reload removed that are still draining (the pool's order).
    const size_t kept = s.backends.size();
    for (size_t j = 0; j < kept + s.leaving.size(); ++j) {
      const Leaving* l = j < kept ? nullptr : &s.leaving[j - kept];
      const BackendRuntime& b = l ? l->backend : s.backends[j];
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
      bs.check_stats = b.checks;
      bs.check_running = !l && prober_ && prober_->running(b.id);
      bs.next_check_in_ms = ms_of(std::chrono::duration_cast<Millis>(b.next_check - now));
      if (l) {
        bs.removed = true;
        bs.next_check_in_ms = 0;
        bs.flows = l->flows;
        bs.drain_left_ms =
            std::max<int64_t>(0, ms_of(std::chrono::duration_cast<Millis>(l->deadline - now)));
      }
      ss.backends.push_back(std::move(bs));
    }
    st.services.push_back(std::move(ss));
  }
  return st;
}

}  // namespace lb::health
