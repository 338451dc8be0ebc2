#include "daemon.h"

#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <sstream>
#include <utility>

#include "log.h"
#include "metrics_server.h"
#include "protocol.h"

namespace lb::health {

namespace {

int64_t unix_ms(std::chrono::system_clock::time_point t) {
  return static_cast<int64_t>(std::chrono::duration_cast<Millis>(t.time_since_epoch()).count());
}

std::string endpoint(uint32_t address, uint16_t port) {
  return cfg::format_ipv4(address) + ":" + std::to_string(port);
}

}  // namespace

std::optional<std::string> check_for_healthd(const cfg::Config& config) {
  if (std::optional<cfg::ConfigError> e = healthd_problem(config)) return std::string(e->what());
  return std::nullopt;
}

Daemon::Daemon(cfg::Config config, Options options)
    : options_(std::move(options)),
      rng_(options_.seed != 0 ? options_.seed
                              : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()),
      prober_(std::make_unique<Prober>()),
      link_(options_.channel_period, [this] { return owe_everything(); }),
      runtime_(options_.config_path, options_.state_file, services_to_json(config.services)) {
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
  apply(std::move(config), ApplyKind::kLoad);
  memory_.clear();  // for the first start only: later backends are new
}

Daemon::~Daemon() = default;

void Daemon::set_base(Json base) {
  runtime_.set_base(std::move(base));
  for (const Json& s : runtime_.base()) {
    const std::string name = s.value("name", std::string());
    if (name.empty() || by_name_.count(name) != 0) continue;
    HLOG_INFO("service %s removed at run time: lbd will be told", name.c_str());
    link_.publisher().remove(name);
  }
}

void Daemon::set_control(std::unique_ptr<ControlServer> control) {
  control_ = std::move(control);
}

void Daemon::set_metrics(std::unique_ptr<MetricsServer> metrics) {
  metrics_ = std::move(metrics);
  if (metrics_) metrics_->publish(snapshot());  // something to serve before the first turn
}

void Daemon::tick_metrics(TimePoint now) {
  apply_.observe(link_.publisher().generation(), link_.counters().applied, link_.attached(), now);
  if (metrics_ && metrics_->wants_snapshot()) metrics_->publish(snapshot());
}

// -- Publishing ----------------------------------------------------------------------------------

size_t Daemon::owe_everything() {
  // Removals first: a removed service may hold the VIP a running one now takes. A new lbd
  // started from the file: it has the file's services that no longer run. Whatever else it has
  // that we do not know is read from lbd itself (reconcile()).
  Publisher& publisher = link_.publisher();
  reconcile_ = true;
  reconcile(Clock::now());
  std::vector<std::string> gone;
  for (const Json& s : runtime_.base()) {
    const std::string name = s.value("name", std::string());
    if (!name.empty() && by_name_.count(name) == 0) gone.push_back(name);
  }
  for (const std::string& name : gone) publisher.remove(name);
  for (const ServiceRuntime& s : services_) publisher.update(s.config.name);
  return services_.size();
}

void Daemon::flush() {
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
  link_.flush(fill, sent);
}

// -- Runtime configuration -----------------------------------------------------------------------

bool Daemon::reload() {
  return reload_config(false).ok();
}

Result<Change> Daemon::reload_config(bool replace, std::optional<Millis> drain_timeout) {
  // A new instance is another lb-healthd's if it holds that instance's lock: refused.
  std::optional<InstanceLock> lock;
  const auto take_lock = [&](const cfg::Config& config) -> Status {
    const std::string instance = options_.instance.empty() ? config.instance : options_.instance;
    if (!lock_ || instance == lock_->instance()) return Status();
    try {
      lock.emplace(InstanceLock::acquire(options_.runtime_dir, instance));
    } catch (const std::exception& e) {
      HLOG_ERROR("reload failed, keeping the running configuration: instance %s: %s",
                 instance.c_str(), e.what());
      return Status::failure("instance", e.what());
    }
    return Status();
  };
  Result<RuntimeConfig::Plan> plan = runtime_.reload(config_, replace, take_lock);
  if (!plan) return plan.error();
  Change r{std::move(plan->changes), plan->persisted, link_.publisher().generation(),
           link_.publisher().ticket()};
  const Millis drain = drain_timeout.value_or(Millis(plan->config.healthd.drain_timeout_ms));
  // The file's changes outside the services: bgp's, applied, and those only a restart applies,
  // said (they were taken for "no change").
  const std::vector<std::string> settings = settings_changes(config_, plan->config);
  const TimePoint before = Clock::now();
  apply(std::move(plan->config), ApplyKind::kReload, "", drain);
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
  r.changes.insert(r.changes.end(), settings.begin(), settings.end());
  if (lock) lock_ = std::move(lock);
  for (const std::string& c : r.changes) HLOG_INFO("reload: %s", c.c_str());
  if (const std::vector<std::string> kept = runtime_changes(); !kept.empty()) {
    HLOG_INFO("reload: %zu runtime change(s) not in the file kept (lbctl config diff)",
              kept.size());
  }
  runtime_.reloaded();
  return r;
}

Result<Change> Daemon::change(const std::string& what, const ServicesEdit& edit) {
  Result<std::optional<RuntimeConfig::Plan>> plan = runtime_.edit(config_, what, edit);
  if (!plan) return plan.error();
  Change r{{}, false, link_.publisher().generation(), link_.publisher().ticket()};
  if (!*plan) return r;  // nothing to change
  r.changes = std::move((*plan)->changes);
  r.persisted = (*plan)->persisted;
  apply(std::move((*plan)->config), ApplyKind::kRuntimeChange, what);
  return r;
}

Result<Change> Daemon::save_config() {
  Result<RuntimeConfig::Plan> plan = runtime_.save(config_);
  if (!plan) return plan.error();
  return Change{std::move(plan->changes), plan->persisted, link_.publisher().generation(),
                link_.publisher().ticket()};
}

// -- The loop ------------------------------------------------------------------------------------

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

bool Daemon::turn(int signal_fd, Millis max_wait) {
  TimePoint now = Clock::now();
  link_.tick(now);
  if (reconcile_ && now >= next_reconcile_) reconcile(now);
  link_.receive([&](const shm::Event& e) { on_event(e, now); });
  tick_leaving(now);
  const TimePoint due = start_due(now);
  flush();
  link_.check(now);
  link_.heartbeat(now);

  announce_tick(now);
  tick_metrics(now);
  TimePoint until = std::min({due, link_.next_tick(), next_health_write_});
  // lbd's heartbeat is watched; a retiring BIRD is asked again.
  if (announcer_ || retiring_) until = std::min(until, now + Millis(100));
  // An exchange with BIRD in flight: woken by its answer or its deadline, never blocked by it.
  std::vector<std::pair<int, short>> bird;
  for (const std::optional<Announcer>* a : {&announcer_, &retiring_}) {
    if (!*a || !(*a)->busy()) continue;
    bird.emplace_back((*a)->fd(), (*a)->events());
    until = std::min(until, (*a)->deadline());
  }
  if (link_.pending()) until = std::min(until, now + Millis(10));  // retry the ring soon
  if (link_.waiting() || apply_.waiting())
    until = std::min(until, now + Millis(2));  // lbd acks within a tick
  if (anything_leaving()) until = std::min(until, next_leaving_check_);
  if (reconcile_) until = std::min(until, next_reconcile_);
  int wake_fd = signal_fd;
  if (control_) {
    if (signal_fd >= 0) control_->watch(signal_fd);
    wake_fd = control_->fd();
    until = std::min(until, control_->next_deadline());
  }
  Millis wait = until <= now ? Millis(0) : std::chrono::ceil<Millis>(until - now);
  wait = std::min(wait, max_wait);

  bool woke = false;
  const std::vector<Prober::Done> done = prober_->poll(wait, wake_fd, woke, bird);
  now = Clock::now();
  if (announcer_) announcer_->advance(now);
  tick_retiring(now);
  for (const Prober::Done& d : done) {
    if (d.local_error.empty()) {
      handle_result(d.id, d.result, now);
    } else {
      put_off(d.id, d.local_error, now);
    }
  }
  if (!done.empty()) flush();
  if (woke && signal_fd >= 0) handle_signals(signal_fd);
  if (control_) {
    control_->service(now, [this](ControlServer::ConnId id, const Json& request) {
      return handle_request(*this, *control_, id, request);
    });
  }
  if (link_.pending()) flush();  // a change made above goes out in this turn
  now = Clock::now();
  link_.check(now);
  link_.check_waiters(now);
  if (health_dirty_ || now >= next_health_write_) write_health(now);
  answer_announce_waiters();
  tick_metrics(now);
  return !stop_;
}

int Daemon::run(int signal_fd) {
  while (turn(signal_fd, Millis(1000))) {
  }
  link_.fail_waiters("lb-healthd is stopping before lbd applied the change");
  for (const auto& done : std::exchange(announce_waiters_, {})) done();  // as BIRD is now
  if (control_) control_->reply_all_deferred(error_reply("stopping", "lb-healthd is stopping"));
  control_.reset();
  metrics_.reset();
  prober_.reset();
  write_health(Clock::now());
  link_.detach();
  HLOG_INFO("stopped");
  return 0;
}

void Daemon::set_node_state(NodeState state) {
  if (state != node_) HLOG_INFO("node %s -> %s", to_string(node_), to_string(state));
  node_ = state;
  announce_tick(Clock::now());
}

bool Daemon::announcing() const {
  return (announcer_ && announcer_->busy()) || (retiring_ && retiring_->busy());
}

void Daemon::when_announced(std::function<void()> done) {
  announce_waiters_.push_back(std::move(done));  // answered at the end of a turn
}

void Daemon::answer_announce_waiters() {
  if (announcing()) return;
  for (const auto& done : std::exchange(announce_waiters_, {})) done();
}

void Daemon::retire_announcer(const char* why, TimePoint now) {
  if (retiring_) {
    HLOG_WARNING(
        "bgp: the BIRD at %s had not taken the withdrawal yet: left alone now (stop it, "
        "or it keeps announcing)",
        retiring_->socket_path().c_str());
  }
  HLOG_INFO("bgp: %s: withdrawing every VIP from the BIRD at %s, then leaving it alone", why,
            announcer_->socket_path().c_str());
  retiring_ = std::move(announcer_);
  announcer_.reset();
  retiring_until_ = now + kRetireFor;
  retiring_->set({}, now);  // BIRD is told over the next turns (the loop never waits for it)
}

void Daemon::tick_retiring(TimePoint now) {
  if (!retiring_) return;
  retiring_->set({}, now);  // advances; asks again a second after an attempt that failed
  if (retiring_->busy()) return;
  if (retiring_->in_bird()) {
    HLOG_INFO("bgp: the BIRD at %s withdrew every VIP", retiring_->socket_path().c_str());
  } else if (now >= retiring_until_) {
    HLOG_WARNING(
        "bgp: the BIRD at %s did not take the withdrawal in %s (%s): left alone (stop "
        "it, or it keeps announcing)",
        retiring_->socket_path().c_str(), format_duration(kRetireFor).c_str(),
        retiring_->last_error().c_str());
  } else {
    return;
  }
  retiring_.reset();
}

void Daemon::announce_tick(TimePoint now) {
  if (!announcer_) return;
  LbdLiveness lbd;
  lbd.attached = link_.attached();
  lbd.heartbeat_age_ms = link_.lbd_heartbeat_age_ms(now).value_or(-1);
  lbd.unapplied_ms = link_.unapplied_ms(now).value_or(0);
  std::vector<ServiceServing> services;
  for (const ServiceRuntime& s : services_) {
    // Serving: a backend active on its own that takes new connections (weight 0 takes none).
    // A service a reload removed is kept while its connections drain, serving nothing new: its
    // VIP stays announced as long as lbd is alive (announce_when = "alive"), or the connections
    // would lose their route before they end.
    const bool serving =
        !s.removed && !s.pool.fail_open &&
        std::any_of(s.pool.entries.begin(), s.pool.entries.end(), [](const shm::BackendEntry& e) {
          return e.state == static_cast<uint8_t>(shm::BackendState::kActive) && e.weight > 0;
        });
    services.push_back({s.config.vip, serving});
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

}  // namespace lb::health
