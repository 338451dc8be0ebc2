// Over 500 lines on purpose: the command table and the handlers its rows name are read together
// (one command = one row + its handler); the status reply's JSON is theirs too.
#include "protocol.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "lb_version.h"
#include "log.h"

namespace lb::health {

namespace {

constexpr const char* kVersion = LB_VERSION;
constexpr int64_t kMaxDrainTimeoutMs = 86400000;  // healthd.drain_timeout_ms's range
constexpr int64_t kDefaultWaitMs = 5000;
constexpr int64_t kMaxWaitMs = 60000;

// A request the protocol refuses before any handler runs: thrown from deep in the field checks,
// answered by handle_request().
[[noreturn]] void bad(std::string code, std::string message) {
  throw Error{std::move(code), std::move(message)};
}

std::string shorten(const std::string& s) {
  return s.size() > 64 ? s.substr(0, 61) + "..." : s;
}

// Refuses any field the command does not take: a misspelt option must not be ignored.
void allow(const Json& req, const Command& cmd) {
  const bool change = cmd.change != nullptr;
  for (auto it = req.begin(); it != req.end(); ++it) {
    const std::string& k = it.key();
    if (k == "cmd" || k == "id") continue;
    if (change && (k == "wait" || k == "timeout_ms")) continue;
    if (std::find(cmd.fields.begin(), cmd.fields.end(), k) != cmd.fields.end()) continue;
    std::string allowed;
    for (const std::string_view f : cmd.fields)
      allowed += (allowed.empty() ? "" : ", ") + std::string(f);
    if (change) allowed += std::string(allowed.empty() ? "" : ", ") + "wait, timeout_ms";
    bad("bad_request", "unknown field '" + shorten(k) + "' for " + std::string(cmd.name) +
                           (allowed.empty() ? " (it takes none)" : " (allowed: " + allowed + ")"));
  }
}

const Json& field(const Json& req, const char* key) {
  const auto it = req.find(key);
  if (it == req.end()) bad("bad_request", std::string("missing field '") + key + "'");
  return *it;
}

std::string string_field(const Json& req, const char* key) {
  const Json& v = field(req, key);
  if (!v.is_string())
    bad("bad_request",
        std::string("field '") + key + "': expected a string, found " + v.type_name());
  return v.get<std::string>();
}

const Json& object_field(const Json& req, const char* key) {
  const Json& v = field(req, key);
  if (!v.is_object())
    bad("bad_request",
        std::string("field '") + key + "': expected an object, found " + v.type_name());
  return v;
}

// `where` starts the message: what the address and port are of ("service 'web': backend: ").
uint32_t address_field(const Json& req, const std::string& where) {
  const std::string text = string_field(req, "address");
  const std::optional<uint32_t> a = cfg::parse_ipv4(text);
  if (!a)
    bad("invalid", where + "malformed IPv4 address '" + shorten(text) +
                       "' (expected a.b.c.d, decimal, no leading zeros)");
  return *a;
}

uint16_t port_field(const Json& req, const std::string& where) {
  const Json& v = field(req, "port");
  if (!v.is_number_integer())
    bad("invalid", where + "port: expected an integer, found " + v.type_name());
  const auto p = v.get<int64_t>();
  if (p < 1 || p > 65535)
    bad("invalid", where + "port: value " + v.dump() + " is out of range 1..65535");
  return static_cast<uint16_t>(p);
}

bool wait_field(const Json& req) {
  const auto it = req.find("wait");
  if (it == req.end()) return false;
  if (!it->is_boolean()) bad("bad_request", "field 'wait': expected true or false");
  return it->get<bool>();
}

Millis timeout_field(const Json& req) {
  const auto it = req.find("timeout_ms");
  if (it == req.end()) return Millis(kDefaultWaitMs);
  if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > kMaxWaitMs)
    bad("bad_request", "field 'timeout_ms': expected an integer 1.." + std::to_string(kMaxWaitMs));
  return Millis(it->get<int64_t>());
}

std::string endpoint(uint32_t a, uint16_t p) {
  return cfg::format_ipv4(a) + ":" + std::to_string(p);
}

std::string names_of(const Json& services) {
  std::string out;
  for (const Json& s : services) {
    if (s.contains("name") && s["name"].is_string())
      out += (out.empty() ? "" : ", ") + s["name"].get<std::string>();
  }
  return out.empty() ? "none" : out;
}

Json* find_service(Json& services, const std::string& name) {
  for (Json& s : services) {
    if (s.is_object() && s.value("name", std::string()) == name) return &s;
  }
  return nullptr;
}

Error no_service(const Json& services, const std::string& name) {
  return Error{"not_found",
               "unknown service '" + shorten(name) + "' (services: " + names_of(services) + ")"};
}

// The index of backend address:port in `service`, or -1.
long find_backend(const Json& service, uint32_t address, uint16_t port) {
  const auto it = service.find("backends");
  if (it == service.end() || !it->is_array()) return -1;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& b = (*it)[i];
    if (!b.is_object() || !b.contains("address") || !b["address"].is_string()) continue;
    if (cfg::parse_ipv4(b["address"].get<std::string>()) != address) continue;
    if (b.value("port", Json()) == Json(port)) return static_cast<long>(i);
  }
  return -1;
}

Error no_backend(const Json& service, const std::string& name, uint32_t a, uint16_t p) {
  std::string list;
  for (const Json& b : service.value("backends", Json::array())) {
    if (b.is_object() && b.contains("address") && b.contains("port"))
      list += (list.empty() ? "" : ", ") + b["address"].get<std::string>() + ":" + b["port"].dump();
  }
  return Error{"not_found", "service '" + name + "' has no backend " + endpoint(a, p) +
                                " (backends: " + (list.empty() ? "none" : list) + ")"};
}

Json backend_status(const BackendStatus& b) {
  Json j{{"address", cfg::format_ipv4(b.address)},
         {"port", b.port},
         {"weight", b.weight},
         {"admin", cfg::to_string(b.admin)},
         {"health", b.health == Health::kUp ? "up" : "down"},
         {"live", to_string(b.live)},
         {"last_result", b.last_result},
         {"last_http_status", b.last_http_status},
         {"last_latency_ms", b.last_latency_ms},
         {"consecutive_successes", b.consecutive_successes},
         {"consecutive_failures", b.consecutive_failures},
         {"in_state_ms", b.in_state_ms},
         {"last_change_unix_ms", b.last_change_unix_ms},
         {"checks", b.checks},
         {"failed_checks", b.failed_checks},
         {"transitions", b.transitions},
         {"passive_syn_rst", b.passive_syn_rst},
         {"passive_syn_timeout", b.passive_syn_timeout},
         {"check_running", b.check_running},
         {"next_check_in_ms", b.check_running ? 0 : b.next_check_in_ms}};
  if (b.removed) {
    // Removed by a reload, draining in lbd until its flows end (or drain_left_ms has passed).
    j["removed"] = true;
    j["flows_active"] = b.flows < 0 ? Json() : Json(b.flows);
    j["drain_left_ms"] = b.drain_left_ms;
  }
  return j;
}

// The node's state and its announcements (`status`'s "node", `node.drain`, `node.ready`).
Json node_json(const BgpStatus& b) {
  Json vips = Json::array();
  for (const VipDecision& v : b.vips) {
    vips.push_back({{"vip", cfg::format_ipv4(v.vip)}, {"announced", v.announce}, {"why", v.why}});
  }
  Json out = {{"state", to_string(b.node)}, {"bgp", b.enabled}};
  if (!b.enabled) return out;
  out["vips"] = std::move(vips);
  out["in_bird"] = b.in_bird;
  out["bird_error"] = b.last_error;
  out["bird_reloads"] = b.reloads;
  out["bird_reload_failures"] = b.reload_failures;
  out["bird_timeouts"] = b.timeouts;
  out["bird_waiting_ms"] = b.waiting_ms;
  out["bird_config"] = b.bird_config;
  out["bird_socket"] = b.bird_socket;
  return out;
}

Json status(const Daemon& d) {
  const DaemonStatus st = d.snapshot();
  char epoch[24];
  std::snprintf(epoch, sizeof epoch, "%016llx", static_cast<unsigned long long>(st.epoch));
  Json out = {{"ok", true}};
  out["healthd"] = {{"pid", static_cast<int64_t>(getpid())},
                    {"version", kVersion},
                    {"config_file", st.config_file},
                    {"state_file", st.state_file},
                    {"instance", st.instance},
                    {"segment", st.segment},
                    {"reloads", st.reloads},
                    {"reload_failures", st.reload_failures},
                    {"transitions", st.transitions},
                    {"checks_retried_after_stall", st.stall_retries},
                    {"checks_not_started", st.checks_not_started},
                    {"runtime_changes", d.runtime_changes()}};
  out["lbd"] = {{"attached", st.attached},
                {"epoch", st.attached ? epoch : ""},
                {"pid", st.lbd_pid},
                {"generation_sent", st.generation},
                {"received_generation", st.lbd_received_generation},
                {"applied_generation", st.lbd_applied_generation},
                {"rejected_generation", st.lbd_rejected_generation},
                {"heartbeat_age_ms", st.lbd_heartbeat_age_ms},
                {"updates_sent", st.updates_sent},
                {"ring_full", st.ring_full}};
  Json services = Json::array();
  for (const ServiceStatus& ss : st.services) {
    const auto& cs = d.config().services;
    const auto it = std::find_if(cs.begin(), cs.end(),
                                 [&](const cfg::ServiceConfig& c) { return c.name == ss.name; });
    Json s = it != cs.end()
                 ? service_to_json(*it)
                 : Json{{"name", ss.name}, {"vip", cfg::format_ipv4(ss.vip)}, {"port", ss.port}};
    if (ss.removed) s["removed"] = true;  // by a reload: draining until its flows end
    s["fail_open"] = ss.fail_open;
    s["active"] = ss.active;
    s["pending"] = ss.pending;
    s["last_generation"] = ss.last_generation;
    Json backends = Json::array();
    for (const BackendStatus& b : ss.backends) backends.push_back(backend_status(b));
    s["backends"] = std::move(backends);
    services.push_back(std::move(s));
  }
  out["services"] = std::move(services);
  out["node"] = node_json(st.bgp);
  return out;
}

Json node_state(Daemon& d, NodeState state) {
  if (!d.config().bgp.enabled())
    return error_reply("invalid",
                       "this node announces nothing: the config has no bgp group "
                       "(docs/configuration.md#bgp)");
  d.set_node_state(state);
  Json out = {{"ok", true}};
  out["node"] = node_json(d.snapshot().bgp);
  return out;
}

// -- The commands ---------------------------------------------------------------------------------

Json ping(Daemon& d, const Json&) {
  return Json{{"ok", true},
              {"version", kVersion},
              {"pid", static_cast<int64_t>(getpid())},
              {"instance", d.snapshot().instance},
              {"config_file", d.options().config_path}};
}

Result<Change> backend_add(Daemon& d, const Json& req) {
  const std::string name = string_field(req, "service");
  const Json backend = object_field(req, "backend");
  std::string label = "backend.add " + name;
  const std::optional<uint32_t> addr = backend.contains("address") && backend["address"].is_string()
                                           ? cfg::parse_ipv4(backend["address"].get<std::string>())
                                           : std::nullopt;
  const bool has_port = backend.contains("port") && backend["port"].is_number_integer();
  if (addr && has_port) label += " " + cfg::format_ipv4(*addr) + ":" + backend["port"].dump();
  return d.change(label, [&](Json& services) -> Status {
    Json* s = find_service(services, name);
    if (!s) return no_service(services, name);
    if (addr && has_port) {
      const int64_t port = backend["port"].get<int64_t>();
      if (port >= 1 && port <= 65535 && find_backend(*s, *addr, static_cast<uint16_t>(port)) >= 0)
        return Error{"exists", "service '" + name + "' already has backend " +
                                   endpoint(*addr, static_cast<uint16_t>(port)) +
                                   " (use backend set to change it)"};
    }
    if (!s->contains("backends") || !(*s)["backends"].is_array()) (*s)["backends"] = Json::array();
    (*s)["backends"].push_back(backend);
    return Status();
  });
}

// backend.set (a patch) and backend.remove (patch == nullopt) find the backend the same way.
Result<Change> edit_backend(Daemon& d, const Json& req, const char* cmd,
                            const std::optional<Json>& patch) {
  const std::string name = string_field(req, "service");
  const std::string where = "service '" + shorten(name) + "': backend: ";
  const uint32_t addr = address_field(req, where);
  const uint16_t port = port_field(req, where);
  return d.change(std::string(cmd) + " " + name + " " + endpoint(addr, port),
                  [&](Json& services) -> Status {
                    Json* s = find_service(services, name);
                    if (!s) return no_service(services, name);
                    const long i = find_backend(*s, addr, port);
                    if (i < 0) return no_backend(*s, name, addr, port);
                    Json& list = (*s)["backends"];
                    if (patch) {
                      list[static_cast<size_t>(i)].merge_patch(*patch);
                    } else {
                      list.erase(static_cast<size_t>(i));
                    }
                    return Status();
                  });
}

Result<Change> backend_set(Daemon& d, const Json& req) {
  Json patch = Json::object();
  for (const char* k : {"weight", "state", "initial_state"}) {
    if (req.contains(k)) patch[k] = req[k];  // null unsets (initial_state)
  }
  if (patch.empty())
    bad("bad_request", "backend.set: nothing to set (weight, state, initial_state)");
  return edit_backend(d, req, "backend.set", patch);
}

Result<Change> backend_remove(Daemon& d, const Json& req) {
  return edit_backend(d, req, "backend.remove", std::nullopt);
}

Result<Change> service_add(Daemon& d, const Json& req) {
  Json service = object_field(req, "service");
  const std::string name = service.contains("name") && service["name"].is_string()
                               ? service["name"].get<std::string>()
                               : "";
  if (!service.contains("backends")) service["backends"] = Json::array();
  return d.change("service.add " + name, [&](Json& services) -> Status {
    if (!name.empty() && find_service(services, name))
      return Error{"exists",
                   "service '" + shorten(name) + "' already exists (use service set to change it)"};
    services.push_back(service);
    return Status();
  });
}

Result<Change> service_set(Daemon& d, const Json& req) {
  const std::string name = string_field(req, "name");
  const Json patch = object_field(req, "set");
  if (patch.empty()) bad("bad_request", "service.set: nothing to set");
  if (patch.contains("name"))
    bad("bad_request", "a service cannot be renamed: add it under the new name, then remove it");
  if (patch.contains("backends"))
    bad("bad_request", "service.set does not take backends: use backend.add, remove or set");
  return d.change("service.set " + name, [&](Json& services) -> Status {
    Json* s = find_service(services, name);
    if (!s) return no_service(services, name);
    const Json old_health = s->value("health", Json::object());
    s->merge_patch(patch);
    // A VIP:port another service has: said of this one (the whole configuration's check, which
    // follows, would blame whichever of the two comes later in the file).
    const Json vip = s->value("vip", Json()), port = s->value("port", Json());
    if ((patch.contains("vip") || patch.contains("port")) && vip.is_string() &&
        port.is_number_integer()) {
      for (const Json& o : services) {
        if (&o == s || !o.is_object() || o.value("vip", Json()) != vip ||
            o.value("port", Json()) != port)
          continue;
        return Error{"invalid", "service '" + shorten(name) +
                                    "': vip: " + shorten(vip.get<std::string>()) + ":" +
                                    port.dump() + " is already used by service '" +
                                    shorten(o.value("name", std::string())) + "'"};
      }
    }
    // fast_interval_ms and down_interval_ms left out of a file follow interval_ms; here, those
    // that were equal to it follow it too, unless set at the same time.
    const auto ph = patch.find("health");
    if (ph != patch.end() && ph->is_object() && ph->contains("interval_ms") &&
        s->contains("health") && (*s)["health"].is_object() && old_health.contains("interval_ms")) {
      for (const char* k : {"fast_interval_ms", "down_interval_ms"}) {
        if (!ph->contains(k) && old_health.value(k, Json()) == old_health["interval_ms"])
          (*s)["health"][k] = (*ph)["interval_ms"];
      }
    }
    return Status();
  });
}

Result<Change> service_remove(Daemon& d, const Json& req) {
  const std::string name = string_field(req, "name");
  return d.change("service.remove " + name, [&](Json& services) -> Status {
    for (size_t i = 0; i < services.size(); ++i) {
      if (services[i].is_object() && services[i].value("name", std::string()) == name) {
        services.erase(i);
        return Status();
      }
    }
    return no_service(services, name);
  });
}

Result<Change> config_reload(Daemon& d, const Json& req) {
  bool replace = false;
  if (req.contains("replace")) {
    if (!req["replace"].is_boolean()) bad("bad_request", "field 'replace': expected true or false");
    replace = req["replace"].get<bool>();
  }
  std::optional<Millis> drain;
  if (const auto it = req.find("drain_timeout_ms"); it != req.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
        it->get<int64_t>() > kMaxDrainTimeoutMs) {
      bad("bad_request", "field 'drain_timeout_ms': expected an integer 0.." +
                             std::to_string(kMaxDrainTimeoutMs) + " (0: remove at once)");
    }
    drain = Millis(it->get<int64_t>());
  }
  HLOG_INFO("control socket: reloading %s%s%s", d.options().config_path.c_str(),
            replace ? " (replacing runtime changes)" : "",
            !drain                ? ""
            : *drain == Millis(0) ? " (removals at once, no drain)"
                                  : " (drain timeout given)");
  return d.reload_config(replace, drain);
}

Json config_save(Daemon& d, const Json&) {
  const Result<Change> r = d.save_config();
  if (!r) return error_reply(r.error().code, r.error().message);
  return Json{{"ok", true},
              {"path", d.options().config_path},
              {"backup", d.options().config_path + ".bak"},
              {"changes", r->changes}};
}

Json config_show(Daemon& d, const Json&) {
  return Json{{"ok", true}, {"path", d.options().config_path}, {"text", d.running_config_text()}};
}

Json config_diff(Daemon& d, const Json&) {
  return Json{{"ok", true}, {"path", d.options().config_path}, {"changes", d.runtime_changes()}};
}

Json help(Daemon&, const Json&);

const std::vector<Command> kCommands = {
    {"ping", {}, "", "`version`, `pid`, `instance`, `config_file`", ping},
    {"status",
     {},
     "",
     "`healthd` (pid, files, instance, runtime_changes...), `lbd` (attached, pid, "
     "generations...), `services` (every key of the file per service, plus `active`, "
     "`fail_open`, `pending`, and `removed` for a service a reload removed that still drains; per "
     "backend: `admin`, `health`, `live`, last check, counts, and for one a reload removed: "
     "`removed`, `flows_active`, `drain_left_ms`), `node` (`state`: ready or draining, `bgp`, "
     "and with a bgp group: `vips` with `announced` and `why`, `in_bird`, `bird_error`...)",
     [](Daemon& d, const Json&) { return status(d); }},
    {"help",
     {},
     "",
     "`commands`: each command's `cmd`, `fields`, `changes` (takes `wait`) and `reply`",
     help},
    {"backend.add",
     {"service", "backend"},
     "`service`, `backend` (an object with the file's keys: `address`, `port`, `weight`, `state`, "
     "`initial_state`)",
     "`changes`",
     nullptr,
     backend_add},
    {"backend.set",
     {"service", "address", "port", "weight", "state", "initial_state"},
     "`service`, `address`, `port`, and any of `weight`, `state`, `initial_state` (null unsets)",
     "`changes`",
     nullptr,
     backend_set},
    {"backend.remove",
     {"service", "address", "port"},
     "`service`, `address`, `port`",
     "`changes` (removes at once; lbctl drains first)",
     nullptr,
     backend_remove},
    {"service.add",
     {"service"},
     "`service` (an object with the file's service keys; `backends` defaults to `[]`)",
     "`changes`",
     nullptr,
     service_add},
    {"service.set",
     {"name", "set"},
     "`name`, `set` (an object: a JSON merge patch of the service's keys, e.g. `{\"vip\": "
     "\"10.10.0.102\", \"health\": {\"interval_ms\": 500, \"host\": null}}`)",
     "`changes`",
     nullptr,
     service_set},
    {"service.remove", {"name"}, "`name`", "`changes`", nullptr, service_remove},
    {"config.reload",
     {"replace", "drain_timeout_ms"},
     "`replace` (boolean, default false), `drain_timeout_ms` (0..86400000; default "
     "`healthd.drain_timeout_ms`; 0: what the file removes goes at once)",
     "`changes` (with a `drains: ...` line per backend that drains)",
     nullptr,
     config_reload},
    {"node.drain",
     {},
     "",
     "`node`: `state` (`draining`), `vips` (each `vip`, `announced`, `why`), `in_bird` (BIRD "
     "read it). Withdraws every VIP at once (lbctl then waits for lbd's traffic to stop)",
     [](Daemon& d, const Json&) { return node_state(d, NodeState::kDraining); },
     nullptr,
     true},
    {"node.ready",
     {},
     "",
     "`node`, as for `node.drain`: the VIPs are announced again as the bgp group says",
     [](Daemon& d, const Json&) { return node_state(d, NodeState::kReady); },
     nullptr,
     true},
    {"config.save", {}, "", "`path`, `backup`, `changes`", config_save},
    {"config.show", {}, "", "`text`: the running configuration as a config file", config_show},
    {"config.diff", {}, "", "`changes`: runtime changes over the file", config_diff},
};

Json help(Daemon&, const Json&) {
  Json list = Json::array();
  for (const Command& c : kCommands) {
    Json fields = Json::array();
    for (const std::string_view f : c.fields) fields.push_back(std::string(f));
    list.push_back({{"cmd", std::string(c.name)},
                    {"fields", std::move(fields)},
                    {"changes", c.change != nullptr},
                    {"reply", std::string(c.reply_doc)}});
  }
  return Json{{"ok", true}, {"commands", std::move(list)}};
}

std::optional<Json> finish(Daemon& d, ControlServer& server, ControlServer::ConnId id,
                           const Result<Change>& r, bool wait, Millis timeout) {
  if (!r) return error_reply(r.error().code, r.error().message);
  Json reply = {{"ok", true}, {"changes", r->changes}, {"persisted", r->persisted}};
  if (!wait) return reply;
  d.when_applied(
      r->mark, timeout,
      [&server, id, reply](const AckResult& a) {
        Json out = reply;
        out["lbd"] = {{"applied", a.ok},
                      {"generation", a.generation},
                      {"applied_generation", a.applied_generation},
                      {"waited_ms", a.waited_ms}};
        if (!a.ok) {
          out["ok"] = false;
          out["code"] = a.code;
          out["error"] = a.error;
          out["accepted"] = true;  // lb-healthd runs it and has kept it; lbd has not (yet)
        }
        server.reply(id, std::move(out));
      },
      r->ticket);
  return std::nullopt;
}

std::optional<Json> dispatch_command(Daemon& d, ControlServer& server, ControlServer::ConnId id,
                                     const Json& req) {
  const auto c = req.find("cmd");
  if (c == req.end()) bad("bad_request", "missing field 'cmd'");
  if (!c->is_string())
    bad("bad_request", std::string("field 'cmd': expected a string, found ") + c->type_name());
  const std::string name = c->get<std::string>();
  const auto cmd = std::find_if(kCommands.begin(), kCommands.end(),
                                [&](const Command& k) { return k.name == name; });
  if (cmd == kCommands.end()) {
    std::string names;
    for (const Command& k : kCommands) names += (names.empty() ? "" : ", ") + std::string(k.name);
    bad("unknown_command", "unknown command '" + shorten(name) + "' (commands: " + names + ")");
  }
  allow(req, *cmd);
  if (cmd->query) {
    Json reply = cmd->query(d, req);
    if (!cmd->after_bird || !reply.value("ok", false) || !d.announcing()) return reply;
    // The reply says whether BIRD has it: sent once BIRD has answered (or failed, or timed
    // out), meanwhile the loop goes on.
    d.when_announced([&d, &server, id] {
      Json out = {{"ok", true}};
      out["node"] = node_json(d.snapshot().bgp);
      server.reply(id, std::move(out));
    });
    return std::nullopt;
  }
  const bool wait = wait_field(req);
  const Millis timeout = timeout_field(req);
  return finish(d, server, id, cmd->change(d, req), wait, timeout);
}

}  // namespace

const std::vector<Command>& commands() {
  return kCommands;
}

std::string protocol_table_markdown() {
  std::string out = "| cmd | fields | reply |\n|---|---|---|\n";
  for (const Command& c : kCommands) {
    out += "| `" + std::string(c.name) + "` | " + std::string(c.fields_doc) +
           (c.fields_doc.empty() ? "" : " ") + "| " + std::string(c.reply_doc) + " |\n";
  }
  return out;
}

std::optional<Json> handle_request(Daemon& daemon, ControlServer& server, ControlServer::ConnId id,
                                   const Json& request) {
  std::optional<Json> reply;
  try {
    reply = dispatch_command(daemon, server, id, request);
  } catch (const Error& e) {
    reply = error_reply(e.code, e.message);
  }
  // Refusals are the client's to read; the log keeps a rate-limited note of them (a client
  // repeating a bad request must not flood it).
  const std::string code = reply ? reply->value("code", std::string()) : "";
  // A reload's refusals (the file, the state file) are the daemon's own errors, logged as such.
  const bool logged = code == "config" || code == "conflict" || code == "io";
  if (reply && !reply->value("ok", true) && !logged) {
    const Json cmd = request.value("cmd", Json());
    const std::string name = cmd.is_string() ? shorten(cmd.get<std::string>()) : cmd.dump();
    const bool bad = code == "bad_request" || code == "unknown_command";
    server.client_log(id, bad ? LogLevel::kWarning : LogLevel::kInfo, "%s refused (%s): %s",
                      name.c_str(), code.c_str(), reply->value("error", std::string()).c_str());
  }
  return reply;
}

}  // namespace lb::health
