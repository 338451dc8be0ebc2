#include "state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <regex>
#include <stdexcept>
#include <string_view>

#include "daemon.h"

namespace lb::health {

namespace {

// -- Paths and names ---------------------------------------------------------------------------

// "[12]" at the front of `s` (after an optional '.'): the index, and `s` advanced past it.
std::optional<size_t> take_index(std::string_view& s) {
  if (s.starts_with(".")) s.remove_prefix(1);
  if (!s.starts_with("[")) return std::nullopt;
  const size_t close = s.find(']');
  if (close == std::string_view::npos) return std::nullopt;
  size_t n = 0;
  const auto r = std::from_chars(s.data() + 1, s.data() + close, n);
  if (r.ec != std::errc{} || r.ptr != s.data() + close) return std::nullopt;
  s.remove_prefix(close + 1);
  return n;
}

std::string service_label(const Json& services, size_t i) {
  if (services.is_array() && i < services.size() && services[i].is_object()) {
    const Json& s = services[i];
    if (auto it = s.find("name"); it != s.end() && it->is_string())
      return "service '" + it->get<std::string>() + "'";
  }
  return "service #" + std::to_string(i + 1);
}

std::string backend_key(const Json& b) {
  if (!b.is_object()) return "";
  const auto a = b.find("address");
  const auto p = b.find("port");
  if (a == b.end() || !a->is_string()) return "";
  if (p == b.end() || !p->is_number_integer()) return a->get<std::string>();
  return a->get<std::string>() + ":" + p->dump();
}

std::string backend_label(const Json& services, size_t i, size_t j) {
  if (services.is_array() && i < services.size() && services[i].is_object()) {
    const auto bs = services[i].find("backends");
    if (bs != services[i].end() && bs->is_array() && j < bs->size()) {
      const std::string key = backend_key((*bs)[j]);
      if (!key.empty()) return "backend " + key;
    }
  }
  return "backend #" + std::to_string(j + 1);
}

// -- Merge and diff ----------------------------------------------------------------------------

std::string service_key(const Json& s) {
  if (!s.is_object()) return "";
  const auto n = s.find("name");
  return n != s.end() && n->is_string() ? n->get<std::string>() : "";
}

using KeyFn = std::string (*)(const Json&);

std::map<std::string, const Json*> by_key(const Json& list, KeyFn key) {
  std::map<std::string, const Json*> out;
  if (!list.is_array()) return out;
  for (const Json& e : list) {
    const std::string k = key(e);
    if (!k.empty()) out.emplace(k, &e);
  }
  return out;
}

Json merge_list(const Json& base, const Json& file, const Json& running, KeyFn key);

// Key by key: what the file changed since `base` wins; everything else is `running`'s.
Json merge_object(const Json& base, const Json& file, const Json& running) {
  Json out = running;
  std::vector<std::string> keys;
  for (auto it = base.begin(); it != base.end(); ++it) keys.push_back(it.key());
  for (auto it = file.begin(); it != file.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (const std::string& k : keys) {
    const auto b = base.find(k);
    const auto f = file.find(k);
    const auto r = running.find(k);
    const bool in_b = b != base.end();
    const bool in_f = f != file.end();
    const bool in_r = r != running.end();
    if (in_b && in_f && in_r && k == "backends" && b->is_array() && f->is_array() &&
        r->is_array()) {
      out[k] = merge_list(*b, *f, *r, &backend_key);
      continue;
    }
    if (in_b && in_f && *b == *f) continue;  // the file left it alone
    if (!in_f) {
      if (in_b) out.erase(k);  // the file took it out
      continue;
    }
    if (in_b && in_r && b->is_object() && f->is_object() && r->is_object()) {
      out[k] = merge_object(*b, *f, *r);
    } else {
      out[k] = *f;
    }
  }
  return out;
}

Json merge_list(const Json& base, const Json& file, const Json& running, KeyFn key) {
  const auto b = by_key(base, key);
  const auto f = by_key(file, key);
  const auto r = by_key(running, key);
  Json out = Json::array();
  if (file.is_array()) {
    for (const Json& fe : file) {
      const std::string k = key(fe);
      const auto bi = b.find(k);
      const auto ri = r.find(k);
      if (bi == b.end()) {
        out.push_back(fe);  // the file added it
      } else if (ri != r.end()) {
        out.push_back(merge_object(*bi->second, fe, *ri->second));
      } else if (*bi->second != fe) {
        out.push_back(fe);  // removed at run time, but the file changed it since: it is back
      }
    }
  }
  if (running.is_array()) {
    for (const Json& re : running) {
      const std::string k = key(re);
      if (k.empty() || f.count(k) != 0 || b.count(k) != 0) continue;
      out.push_back(re);  // added at run time
    }
  }
  return out;
}

std::string shown(const Json& v) {
  if (v.is_string()) {
    const std::string& t = v.get_ref<const std::string&>();
    // Control characters (and DEL) go through dump(), escaped: one line, nothing a terminal
    // would act on.
    const bool plain =
        !t.empty() && t.size() <= 80 && t.find_first_of(" \"'\\") == std::string::npos &&
        std::none_of(t.begin(), t.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == '\x7f'; });
    if (plain) return t;
  }
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

void diff_object(const Json& from, const Json& to, const std::string& prefix,
                 const std::string& path, std::vector<std::string>& out) {
  std::vector<std::string> keys;
  for (auto it = from.begin(); it != from.end(); ++it) keys.push_back(it.key());
  for (auto it = to.begin(); it != to.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (const std::string& k : keys) {
    if (k == "backends" && path.empty()) continue;  // listed backend by backend
    const auto a = from.find(k);
    const auto b = to.find(k);
    const std::string p = path.empty() ? k : path + "." + k;
    if (a == from.end()) {
      out.push_back(prefix + p + " set to " + shown(*b));
    } else if (b == to.end()) {
      out.push_back(prefix + p + " unset (was " + shown(*a) + ")");
    } else if (*a != *b) {
      if (a->is_object() && b->is_object()) {
        diff_object(*a, *b, prefix, p, out);
      } else {
        out.push_back(prefix + p + " " + shown(*a) + " -> " + shown(*b));
      }
    }
  }
}

std::string service_summary(const Json& s) {
  std::string out;
  const auto vip = s.find("vip");
  const auto port = s.find("port");
  if (vip != s.end() && port != s.end()) out = vip->dump() + ":" + port->dump();
  const auto bs = s.find("backends");
  const size_t n = bs != s.end() && bs->is_array() ? bs->size() : 0;
  out.erase(std::remove(out.begin(), out.end(), '"'), out.end());
  return out + (out.empty() ? "" : ", ") + std::to_string(n) + " backend(s)";
}

std::string iso_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::runtime_error sys_error(const std::string& path, const std::string& what, int err) {
  return std::runtime_error(path + ": " + what + ": " + std::strerror(err));
}

}  // namespace

// -- Public ----------------------------------------------------------------------------------

cfg::Config build_config(const cfg::Config& config, const Json& services, const std::string& name) {
  Json j = config_to_json(config);
  j["services"] = services;
  cfg::Config out = cfg::parse_config(to_libconfig(j, name), name);
  // The healthd group is the running one, checked when lb-healthd started.
  if (std::optional<cfg::ConfigError> problem = healthd_problem(out, false)) throw *problem;
  out.file = config.file;
  return out;
}

std::string error_message(const cfg::ConfigError& e) {
  std::string prefix = e.file() + ":" + std::to_string(e.line()) + ": ";
  if (!e.path().empty()) prefix += e.path() + ": ";
  const std::string what = e.what();
  return what.starts_with(prefix) ? what.substr(prefix.size()) : what;
}

std::string describe_path(const std::string& path, const Json& services) {
  std::string_view rest = path;
  if (!rest.starts_with("services")) return path;
  rest.remove_prefix(std::string_view("services").size());
  const std::optional<size_t> i = take_index(rest);
  if (!i) return path;
  std::string out = service_label(services, *i);
  if (rest.starts_with(".backends")) {
    std::string_view after = rest.substr(std::string_view(".backends").size());
    if (const std::optional<size_t> j = take_index(after)) {
      out += " " + backend_label(services, *i, *j);
      rest = after;
    }
  }
  if (rest.starts_with(".")) rest.remove_prefix(1);
  if (!rest.empty()) out += ": " + std::string(rest);
  return out;
}

std::string describe_error(const cfg::ConfigError& e, const Json& services) {
  // Line numbers of the generated text mean nothing to the client: "(first at line 13)",
  // "(line 4)" and "(first at line 3, services.[0])" are left out.
  static const std::regex kLine(R"( \((first at )?line [0-9]+(, [^)]*)?\))");
  const std::string message = std::regex_replace(error_message(e), kLine, "");
  if (e.path().empty()) return message;
  return describe_path(e.path(), services) + ": " + message;
}

Json merge_services(const Json& base, const Json& file, const Json& running) {
  return merge_list(base, file, running, &service_key);
}

std::vector<std::string> diff_services(const Json& from, const Json& to) {
  std::vector<std::string> out;
  const auto a = by_key(from, &service_key);
  const auto b = by_key(to, &service_key);
  for (const auto& [name, s] : a) {
    if (b.count(name) == 0) out.push_back("service " + name + " removed");
  }
  if (!to.is_array()) return out;
  for (const Json& s : to) {
    const std::string name = service_key(s);
    const auto old = a.find(name);
    if (old == a.end()) {
      out.push_back("service " + name + " added (" + service_summary(s) + ")");
      continue;
    }
    const std::string prefix = "service " + name + ": ";
    diff_object(*old->second, s, prefix, "", out);
    const auto ob = old->second->find("backends");
    const auto nb = s.find("backends");
    const Json empty = Json::array();
    const Json& olist = ob != old->second->end() ? *ob : empty;
    const Json& nlist = nb != s.end() ? *nb : empty;
    const auto x = by_key(olist, &backend_key);
    const auto y = by_key(nlist, &backend_key);
    for (const auto& [key, be] : x) {
      if (y.count(key) == 0) out.push_back(prefix + "backend " + key + " removed");
    }
    for (const Json& be : nlist) {
      const std::string key = backend_key(be);
      const auto o = x.find(key);
      if (o == x.end()) {
        std::string what = prefix + "backend " + key + " added";
        if (be.contains("weight") && be.contains("state"))
          what += " (weight " + be["weight"].dump() + ", " + be["state"].get<std::string>() + ")";
        out.push_back(what);
      } else {
        diff_object(*o->second, be, prefix + "backend " + key + ": ", "", out);
      }
    }
  }
  return out;
}

std::vector<std::string> settings_changes(const cfg::Config& from, const cfg::Config& to) {
  const Json a = cfg::config_to_json(from);
  const Json b = cfg::config_to_json(to);
  std::vector<std::string> out;
  const auto group = [&](const char* key, const char* note) {
    Json x = a.contains(key) ? a[key] : Json::object();
    Json y = b.contains(key) ? b[key] : Json::object();
    if (std::string_view(key) == "healthd" && x.is_object() && y.is_object()) {
      x.erase("drain_timeout_ms");
      y.erase("drain_timeout_ms");
    }
    std::vector<std::string> lines;
    diff_object(x, y, "", key, lines);
    for (std::string& l : lines) out.push_back(l + note);
  };
  group("dataplane", ": lbd reads it at its start only (restart lbd to apply it)");
  group("healthd", ": lb-healthd reads it at its start only (restart lb-healthd to apply it)");
  group("bgp", "");  // applied by the reload itself
  return out;
}

std::string format_state(const RuntimeState& state, const std::string& config_path) {
  Json j = Json::object();
  j["lb_healthd_state"] = 1;
  j["config_file"] = config_path;
  j["saved_at"] = iso_now();
  j["about"] =
      "lb-healthd's runtime changes (lbctl). base: the config file's services when lb-healthd "
      "last read it; running: the services it runs. Written by lb-healthd at every change; to "
      "make the changes permanent use `lbctl config save`.";
  j["base"] = state.base;
  j["running"] = state.running;
  return j.dump(2) + "\n";
}

std::optional<RuntimeState> read_state(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw sys_error(path, "cannot read", errno);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw sys_error(path, "cannot read", err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  // lb-healthd does not start with a state file it cannot read: say what to do about it.
  const std::string what_to_do =
      " (move it away to start from the config file alone: the runtime changes it kept are then "
      "lost)";
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    std::string why = e.what();  // without nlohmann's "[json.exception.parse_error.101] "
    if (why.starts_with("[json.exception.")) why.erase(0, why.find("] ") + 2);
    throw std::runtime_error(path + ": not a lb-healthd state file: " + why + what_to_do);
  }
  if (!j.is_object() || j.value("lb_healthd_state", Json()) != Json(1) || !j.contains("base") ||
      !j["base"].is_array() || !j.contains("running") || !j["running"].is_array()) {
    throw std::runtime_error(path +
                             ": not a lb-healthd state file (version 1 with \"base\" and "
                             "\"running\" lists expected)" +
                             what_to_do);
  }
  return RuntimeState{j["base"], j["running"]};
}

Startup load_startup(const cfg::Config& file_config, const std::string& state_path) {
  Startup st;
  st.running = file_config;
  st.base = services_to_json(file_config.services);
  if (state_path.empty()) return st;
  const std::optional<RuntimeState> state = read_state(state_path);
  if (!state) return st;
  st.from_state = true;
  st.base_moved = state->base != st.base;
  const Json merged = merge_services(state->base, st.base, state->running);
  st.changes = diff_services(st.base, merged);
  if (merged == st.base) return st;
  try {
    st.running = build_config(file_config, merged, state_path);
  } catch (const cfg::ConfigError& e) {
    throw std::runtime_error(state_path + ": the runtime changes kept there do not fit " +
                             file_config.file + " any more: " + describe_error(e, merged) +
                             " (fix the file, or move the state file away to start from the "
                             "file alone)");
  }
  return st;
}

}  // namespace lb::health
