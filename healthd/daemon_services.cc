// lb-healthd's checking job: the running services and their backends, each checked on its own
// schedule, its health decided (BackendHealth) and its service's live pool rebuilt when it
// changes; a configuration applied over the running one; the health kept for a restart; and
// the backends a reload removed, draining until lbd counts no flow on them. Over 500 lines on
// purpose: apply, reload and drain each change the same service and backend records.
#include <algorithm>
#include <cstring>
#include <utility>

#include "daemon.h"
#include "log.h"
#include "telemetry_client.h"

namespace lb::health {

namespace {

int64_t ms_of(Millis d) {
  return static_cast<int64_t>(d.count());
}

int64_t unix_ms(std::chrono::system_clock::time_point t) {
  return static_cast<int64_t>(std::chrono::duration_cast<Millis>(t.time_since_epoch()).count());
}

std::string endpoint(uint32_t address, uint16_t port) {
  return cfg::format_ipv4(address) + ":" + std::to_string(port);
}

}  // namespace

std::optional<Health> Daemon::remembered(const std::string& service, const cfg::BackendConfig& b,
                                         TimePoint now, TimePoint& since) {
  const auto it = memory_.find(BackendKey{service, b.address, b.port});
  if (it == memory_.end()) return std::nullopt;
  const int64_t age = unix_ms(std::chrono::system_clock::now()) - it->second.since_unix_ms;
  since = now - Millis(std::max<int64_t>(age, 0));
  return it->second.health;
}

TimePoint Daemon::first_check(const BackendHealth& h, TimePoint now) {
  // Spread the first checks over (at most) the first second so that they do not start in step.
  const int64_t span = std::min<int64_t>(ms_of(h.base_interval()), 1000);
  return now + Millis(static_cast<int64_t>(random() % static_cast<uint64_t>(span)));
}

void Daemon::apply(cfg::Config config, ApplyKind kind, const std::string& what, Millis drain) {
  // Said in the log.
  const std::string why = kind == ApplyKind::kRuntimeChange ? "runtime change: " + what : "reload";
  const TimePoint now = Clock::now();
  const auto wall = std::chrono::system_clock::now();
  std::vector<ServiceRuntime> next;
  next.reserve(config.services.size());
  size_t backends = 0;
  for (const cfg::ServiceConfig& sc : config.services) {
    ServiceRuntime s{sc, {}, {}, 0, {}, false};
    ServiceRuntime* old = nullptr;
    if (auto it = by_name_.find(sc.name); it != by_name_.end()) old = &services_[it->second];
    // Backends draining from an earlier reload that the service has again: they come back with
    // the health they had (one known DOWN must not take connections until it rises again).
    std::vector<BackendRuntime> back;
    if (old) {
      s.last_generation = old->last_generation;
      s.pool = old->pool;  // so that fail_open and all-down transitions are logged once
      // Still draining from an earlier reload, unless the service has it again.
      for (Leaving& l : old->leaving) {
        const bool again = std::any_of(sc.backends.begin(), sc.backends.end(), [&](const auto& b) {
          return b.address == l.backend.config.address && b.port == l.backend.config.port;
        });
        if (again) {
          HLOG_INFO("%s is back (%s) before it had drained, %s as it was", l.backend.label.c_str(),
                    why.c_str(), to_string(l.backend.health.health()));
          back.push_back(std::move(l.backend));
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
      bool returning = false;
      if (old) {
        for (BackendRuntime& ob : old->backends) {
          if (ob.config.address == bc.address && ob.config.port == bc.port && ob.id != 0) {
            prev = &ob;
            break;
          }
        }
      }
      for (BackendRuntime& bb : back) {
        if (prev) break;
        if (bb.config.address == bc.address && bb.config.port == bc.port && bb.id != 0) {
          prev = &bb;
          returning = true;
        }
      }
      const ProbeSpec spec = make_spec(sc, bc);
      if (prev) {
        BackendRuntime b = std::move(*prev);
        prev->id = 0;  // taken
        // Not checked while it drained: checked again soon.
        if (returning) b.next_check = first_check(b.health, now);
        if (b.config.state != bc.state) {
          HLOG_INFO("%s admin state %s -> %s (%s)", b.label.c_str(), cfg::to_string(b.config.state),
                    cfg::to_string(bc.state), why.c_str());
        }
        b.config = bc;
        const Millis was = b.health.base_interval();
        b.health.set_params(params);
        if (!(b.spec == spec)) {
          b.spec = spec;
          prober_->cancel(b.id);  // a check of the old kind says nothing about the new one
          b.next_check = first_check(b.health, now);
        } else if (b.health.base_interval() < was && !prober_->running(b.id)) {
          // A shorter interval applies to the check already scheduled after the old one: a
          // minute-long wait is not kept after the operator asked for a second.
          b.next_check = std::min(b.next_check, b.health.next_check(now, random()));
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
    link_.publisher().cancel_removal(sc.name);
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
    link_.publisher().remove(s.config.name);  // owed before the updates below: it may free a VIP
  }
  // What lbd was last told of each service that stays: a runtime change sends only the services
  // whose message it changes; a reload (or the first load) sends them all.
  const bool push_all = config_.file.empty() || kind != ApplyKind::kRuntimeChange;
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
    instance_ = std::move(instance);
    link_.set_segment(shm::segment_name(instance_));  // attached on the next turn
  }
  if (!config_.bgp.enabled()) {
    if (announcer_) retire_announcer("the group was removed", Clock::now());
  } else if (std::string key = render_bird_config(config_, instance_, {});
             !announcer_ || key != bgp_key_) {
    // Another BIRD (its files moved): the old one withdraws what it announced for us.
    if (announcer_ && (announcer_->config_path() != cfg::bird_config_path(config_, instance_) ||
                       announcer_->socket_path() != cfg::bird_socket_path(config_, instance_)))
      retire_announcer("BIRD's files moved", Clock::now());
    // A new bgp group (or a new instance): written and reloaded on the next turn.
    announcer_.emplace(config_, instance_);
    bgp_key_ = std::move(key);
  }
  for (ServiceRuntime& s : services_) {
    recompute(s);  // owes the service if its pool changed
    const auto it = unchanged.find(s.config.name);
    if (push_all || it == unchanged.end() || !it->second) link_.publisher().update(s.config.name);
  }
  if (first || kind != ApplyKind::kRuntimeChange) {
    HLOG_INFO("%s %s: %zu service(s), %zu backend(s), instance %s (%s)",
              first ? "loaded" : "reloaded", config_.file.c_str(), services_.size(), backends,
              instance_.c_str(), link_.segment().c_str());
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
  link_.publisher().update(s.config.name);
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

void Daemon::put_off(uint64_t id, const std::string& why, TimePoint now) {
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  BackendRuntime& b = services_[it->second.first].backends[it->second.second];
  b.next_check = b.health.next_check(now, random());
  ++put_off_unlogged_;
  // One line at once, then at most one every 10 s while it lasts (each says how many).
  if (put_off_logged_ == TimePoint{} || now - put_off_logged_ >= Millis(10000)) {
    HLOG_WARNING(
        "%llu check(s) not started: lb-healthd cannot open a socket (%s), e.g. %s: not counted "
        "against the backend(s); raise lb-healthd's open-file limit (LimitNOFILE=)",
        static_cast<unsigned long long>(put_off_unlogged_), why.c_str(), b.label.c_str());
    put_off_unlogged_ = 0;
    put_off_logged_ = now;
  }
}

void Daemon::on_event(const shm::Event& e, TimePoint now) {
  // Well formed (type, count, name: shm::event_problem()); it must also name a backend we run:
  // one just removed is a race, anything else is ignored the same way.
  const PassiveSignal signal = e.type == static_cast<uint32_t>(shm::EventType::kSynRst)
                                   ? PassiveSignal::kSynRst
                                   : PassiveSignal::kSynTimeout;
  const std::string name(e.service, strnlen(e.service, sizeof e.service));
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    HLOG_DEBUG("event for unknown service '%s' ignored", name.c_str());
    return;
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
    // Not synced: the loop that answers lbctl must not wait for a busy disk (a second and more
    // was measured under build load), and the file only saves probes after a restart: one that
    // an OS crash left old or empty is read as stale or refused (read_health_memory).
    write_file_atomic(
        path, format_health_memory(instance_, memory, unix_ms(std::chrono::system_clock::now())),
        0600, std::nullopt, Durability::kAtomicOnly);
    if (health_write_failed_) HLOG_INFO("%s written again", path.c_str());
    health_write_failed_ = false;
  } catch (const std::exception& e) {
    if (!health_write_failed_) {
      HLOG_WARNING("cannot keep the backends' health for a restart: %s", e.what());
      health_write_failed_ = true;
    }
  }
}

// -- Draining what a reload removed -----------------------------------------------------------

namespace {
// How often lbd's flow counts are read while something drains, and after a failed read.
constexpr Millis kLeavingCheck{250};
constexpr Millis kLeavingRetry{2000};
// A read of lbd's telemetry blocks the loop for at most this long per reply (the hello, then
// one per page of a listing: query_all).
constexpr int kTelemetryTimeoutMs = 100;
// How often lbd's services are read again after a failed read (reconcile()).
constexpr Millis kReconcileRetry{5000};
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
  s.leaving.push_back(Leaving{std::move(b), now, now + drain, link_.publisher().generation(), -1});
  next_leaving_check_ = std::min(next_leaving_check_, now + kLeavingCheck);
}

bool Daemon::anything_leaving() const {
  return std::any_of(services_.begin(), services_.end(),
                     [](const ServiceRuntime& s) { return s.removed || !s.leaving.empty(); });
}

Result<Daemon::LbdFlows> Daemon::lbd_flows() {
  const std::string path =
      options_.telemetry.empty() ? ctl::telemetry_path(instance_) : options_.telemetry;
  try {
    ctl::TelemetryClient t(path, kTelemetryTimeoutMs);
    // Every page: one reply holds about 60 backends of lbd's 4,096.
    const ctl::Listing backends = t.query_all("/lb/backends");
    LbdFlows out;
    out.complete = backends.complete;
    for (const auto& [key, b] : backends.entries.items()) {
      if (!b.is_object()) continue;
      const Json flows = b.value("flows_active", Json());
      // An id lbd has not reclaimed yet may repeat a backend: the flows are the sum.
      out.by_backend[b.value("service", std::string()) + "|" + b.value("address", std::string())] +=
          flows.is_number_integer() ? flows.get<int64_t>() : 0;
    }
    return out;
  } catch (const std::exception& e) {
    return Error{"telemetry", e.what()};
  }
}

Result<std::vector<std::string>> Daemon::lbd_services() {
  const std::string path =
      options_.telemetry.empty() ? ctl::telemetry_path(instance_) : options_.telemetry;
  try {
    ctl::TelemetryClient t(path, kTelemetryTimeoutMs);
    // Every page (an incomplete listing only leaves some unknown service for the next attach:
    // what is removed is what lbd listed and lb-healthd does not know).
    const ctl::Listing listing = t.query_all("/lb/services");
    const Json& services = listing.entries;
    if (!services.is_object())
      throw ctl::Error("lbd's telemetry at " + path + ": /lb/services is not an object");
    std::vector<std::string> out;
    for (const auto& [key, s] : services.items()) {
      if (!s.is_object() || !s.contains("name") || !s["name"].is_string())
        throw ctl::Error("lbd's telemetry at " + path + ": /lb/services: " + key + " has no name");
      out.push_back(s["name"].get<std::string>());
    }
    return out;
  } catch (const std::exception& e) {
    return Error{"telemetry", e.what()};
  }
}

void Daemon::reconcile(TimePoint now) {
  if (!link_.attached()) {
    reconcile_ = false;  // attaching again sets it (owe_everything): no retry while detached
    return;
  }
  Result<std::vector<std::string>> names = lbd_services();
  if (!names) {
    if (names.error().message != reconcile_error_) {
      HLOG_WARNING(
          "cannot read which services lbd has: %s: a service lbd has that lb-healthd does not "
          "run (left by an earlier lb-healthd) is not removed until it can; retrying every %s",
          names.error().message.c_str(), format_duration(kReconcileRetry).c_str());
      reconcile_error_ = names.error().message;
    }
    next_reconcile_ = now + kReconcileRetry;
    return;
  }
  if (!reconcile_error_.empty()) HLOG_INFO("read which services lbd has");
  reconcile_error_.clear();
  reconcile_ = false;
  Publisher& publisher = link_.publisher();
  for (const std::string& name : *names) {
    // Those draining after a reload run here too (removed, in services_) until they go.
    if (by_name_.count(name) != 0 || publisher.removing(name)) continue;
    HLOG_INFO(
        "service %s is in lbd but lb-healthd neither runs nor drains it (an earlier "
        "lb-healthd's, removed while it drained?): lbd is told to remove it",
        name.c_str());
    publisher.remove(name);
  }
}

void Daemon::tick_leaving(TimePoint now) {
  if (now < next_leaving_check_ || !anything_leaving()) return;
  next_leaving_check_ = now + kLeavingCheck;
  // lbd's counters, checked (read_lbd()); a segment refused just now decides nothing here.
  LbdView lbd;
  if (link_.attached() && !link_.read_lbd(lbd, now)) return;
  const uint64_t applied = lbd.applied;
  // lbd applies an update that has the backend draining: from then on no new flow reaches it,
  // so a count of 0 stays 0 (an earlier count could still grow).
  const auto drains_in_lbd = [&](const ServiceRuntime& s, const Leaving& l) {
    return link_.attached() && !link_.publisher().owed(s.config.name) &&
           s.last_generation > l.mark && applied >= s.last_generation;
  };
  bool counting = false;
  for (const ServiceRuntime& s : services_) {
    for (const Leaving& l : s.leaving) counting = counting || drains_in_lbd(s, l);
  }
  std::optional<LbdFlows> counts;
  if (counting) {
    Result<LbdFlows> read = lbd_flows();
    const std::string why = read ? "" : read.error().message;
    if (read) counts = std::move(*read);
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
      if (!link_.attached()) {
        HLOG_INFO("%s removed: lbd is not running (or lb-healthd not attached): no flow to drain",
                  label);
        return true;
      }
      if (counts && drains_in_lbd(s, l)) {
        // Not listed: no flow if lbd listed everything, else not known (it waits, up to its
        // deadline).
        const std::optional<int64_t> flows = counts->of(
            s.config.name + "|" + endpoint(l.backend.config.address, l.backend.config.port));
        l.flows = flows.value_or(-1);
        if (flows && *flows <= 0) {
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
    link_.publisher().remove(s.config.name);
    return true;
  });
  if (services_.size() != count) index();
}

}  // namespace lb::health
