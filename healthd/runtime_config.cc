#include "runtime_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "healthd_check.h"  // cfg::healthd_problem
#include "log.h"

namespace lb::health {

namespace {

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot read: " + std::strerror(errno));
  std::string text;
  char buf[65536];
  ssize_t n = 0;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  const int error = n < 0 ? errno : 0;
  ::close(fd);
  if (error != 0) throw std::runtime_error(path + ": cannot read: " + std::strerror(error));
  return text;
}

}  // namespace

RuntimeConfig::RuntimeConfig(std::string config_path, std::string state_file, Json base)
    : config_path_(std::move(config_path)),
      state_file_(std::move(state_file)),
      base_(std::move(base)) {}

Result<bool> RuntimeConfig::persist(const Json& base, const Json& running) const {
  if (state_file_.empty()) return false;
  // Nothing to remember and nothing remembered: no file is needed (a read-only config
  // directory keeps working as long as nothing is changed at run time).
  if (base == running && !file_exists(state_file_)) return false;
  try {
    // Synced, on the loop: a change is `persisted` only once it is on disk. A busy disk holds
    // the loop meanwhile; the checks whose timeout that crosses run again (Prober::poll).
    write_file_atomic(state_file_, format_state(RuntimeState{base, running}, config_path_), 0600);
  } catch (const std::exception& e) {
    return Error{"io", e.what()};
  }
  return true;
}

Error RuntimeConfig::reload_failed(Error e) {
  ++reload_failures_;
  HLOG_ERROR("reload failed, keeping the running configuration: %s", e.message.c_str());
  return e;
}

Result<RuntimeConfig::Plan> RuntimeConfig::reload(
    const cfg::Config& running_config, bool replace,
    const std::function<Status(const cfg::Config&)>& accept) {
  cfg::Config file;
  try {
    file = cfg::load_config(config_path_);
    if (std::optional<cfg::ConfigError> problem = cfg::healthd_problem(file)) throw *problem;
  } catch (const cfg::ConfigError& e) {
    return reload_failed(Error{"config", e.what()});
  }
  const Json file_services = services_to_json(file.services);
  const Json running = services_to_json(running_config.services);
  const Json next = replace ? file_services : merge_services(base_, file_services, running);
  Plan plan{file, {}, false};
  if (next != file_services) {
    try {
      plan.config = build_config(file, next, config_path_ + " + runtime changes");
    } catch (const cfg::ConfigError& e) {
      return reload_failed(Error{
          "conflict", config_path_ +
                          ": the file conflicts with runtime changes: " + describe_error(e, next) +
                          " (change the file, or reload with --replace to "
                          "drop the runtime changes)"});
    }
  }
  if (Status s = accept(plan.config); !s.ok()) {
    ++reload_failures_;  // accept() logged why
    return s.error();
  }
  Result<bool> kept = persist(file_services, next);
  if (!kept) {
    return reload_failed(Error{"io", "cannot keep the runtime state: " + kept.error().message});
  }
  plan.persisted = *kept;
  plan.changes = diff_services(running, next);
  base_ = file_services;
  return plan;
}

Result<std::optional<RuntimeConfig::Plan>> RuntimeConfig::edit(const cfg::Config& running_config,
                                                               const std::string& what,
                                                               const ServicesEdit& edit) {
  const Json running = services_to_json(running_config.services);
  Json next = running;
  if (Status s = edit(next); !s.ok()) {
    // The control socket logs it.
    HLOG_DEBUG("refused %s: %s", what.c_str(), s.error().message.c_str());
    return s.error();
  }
  if (next == running) return std::optional<Plan>();
  Plan plan;
  try {
    plan.config = build_config(running_config, next, "(runtime change)");
  } catch (const cfg::ConfigError& e) {
    const std::string why = describe_error(e, next);
    HLOG_DEBUG("refused %s: %s", what.c_str(), why.c_str());  // the control socket logs it
    return Error{"invalid", why};
  }
  // From here on the services as the configuration library read them: every key with its
  // effective value, whatever the client left out.
  const Json canonical = services_to_json(plan.config.services);
  if (canonical == running) return std::optional<Plan>();
  Result<bool> kept = persist(base_, canonical);
  if (!kept) {
    HLOG_ERROR("refused %s: cannot keep the runtime state: %s", what.c_str(),
               kept.error().message.c_str());
    return Error{"io", "cannot keep the runtime state: " + kept.error().message};
  }
  plan.persisted = *kept;
  plan.changes = diff_services(running, canonical);
  for (const std::string& c : plan.changes) HLOG_INFO("runtime change: %s", c.c_str());
  return std::optional<Plan>(std::move(plan));
}

std::string RuntimeConfig::text(const cfg::Config& running) {
  return to_libconfig(config_to_json(running), running.file,
                      "lbd / lb-healthd configuration (docs/configuration.md), written by "
                      "lb-healthd from its running state.");
}

Result<RuntimeConfig::Plan> RuntimeConfig::save(const cfg::Config& running_config) {
  const std::string& path = config_path_;
  const std::string written = text(running_config);
  const Json running = services_to_json(running_config.services);
  // The file must read back as what runs (it always should: the same code wrote and validated
  // it); check before replacing anything.
  try {
    const cfg::Config check = cfg::parse_config(written, path);
    if (services_to_json(check.services) != running)
      return Error{"internal", "the written configuration would not read back the same"};
  } catch (const cfg::ConfigError& e) {
    return Error{"internal", std::string("the written configuration is not valid: ") + e.what()};
  }
  mode_t mode = 0644;
  std::optional<FileOwner> owner;  // the file's owner and group stay: others may read it by group
  try {
    // A config file that is a symlink (to a file a deployment manages, say) is written through:
    // the link stays, the file it leads to gets the new text.
    const std::string target = symlink_target(path);
    if (struct stat st{}; ::stat(target.c_str(), &st) == 0) {
      mode = st.st_mode & 07777;
      owner = FileOwner{st.st_uid, st.st_gid};
      write_file_atomic(path + ".bak", read_file(target), mode, owner);
    }
    write_file_atomic(target, written, mode, owner);
  } catch (const std::exception& e) {
    HLOG_ERROR("config save failed: %s", e.what());
    return Error{"io", e.what()};
  }
  Plan plan{running_config, diff_services(base_, running), false};  // what the file gained
  base_ = running;
  if (Result<bool> kept = persist(base_, running); kept) {
    plan.persisted = *kept;
  } else {
    HLOG_WARNING("saved %s, but the state file could not be updated: %s", path.c_str(),
                 kept.error().message.c_str());
  }
  HLOG_INFO("saved the running configuration to %s (previous file kept as %s.bak)", path.c_str(),
            path.c_str());
  return plan;
}

std::vector<std::string> RuntimeConfig::runtime_changes(const cfg::Config& running) const {
  return diff_services(base_, services_to_json(running.services));
}

}  // namespace lb::health
