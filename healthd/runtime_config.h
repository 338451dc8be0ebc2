#pragma once
// lb-healthd's runtime configuration changes (docs/lbctl.md, docs/operations.md): a reload of
// the file merged with the changes made at run time, an edit of the running services, and
// saving what runs over the file. RuntimeConfig decides the next configuration, validates it
// exactly like the file and keeps it in the state file (state_file.h); the daemon applies it.
// Single-threaded: the daemon's loop owns it.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "lb_config.h"
#include "result.h"
#include "state_file.h"  // Json

namespace lb::health {

// Edits the running services (JSON with the config file's keys, state_file.h) in place; an
// error refuses the change (a short code for programs: "not_found", "exists", "invalid", ...).
using ServicesEdit = std::function<Status(Json& services)>;

// A change made (or nothing to change), as its caller reports it.
struct Change {
  std::vector<std::string> changes;  // what changed, one line each (diff_services)
  bool persisted = false;            // written to the state file
  // Every update sent to lbd after this generation carries the change (Daemon::when_applied()).
  uint64_t mark = 0;
  // Publisher::ticket() before the change: what it owes lbd was marked after.
  uint64_t ticket = 0;
};

// Why lb-healthd applies a configuration: the log says it, and a reload (or the first load)
// sends lbd every service while a runtime change sends only the services it changed.
enum class ApplyKind { kLoad, kReload, kRuntimeChange };

class RuntimeConfig {
 public:
  // `base`: the config file's services (state_file.h).
  RuntimeConfig(std::string config_path, std::string state_file, Json base);

  // The next configuration, and what it changes against the running one.
  struct Plan {
    cfg::Config config;
    std::vector<std::string> changes;
    bool persisted = false;
  };

  // Re-reads the file: what changed in it since it was last read is merged into the running
  // services (with `replace`, the file's services replace them). `accept` has the last word
  // before anything is kept (the daemon's instance lock); it logs its own refusal. A failure is
  // logged and counted, and changes nothing: "config" (the file is bad), "conflict" (with the
  // runtime changes), accept's error, "io" (the state file cannot be written).
  Result<Plan> reload(const cfg::Config& running, bool replace,
                      const std::function<Status(const cfg::Config&)>& accept);
  void reloaded() { ++reloads_; }

  // `edit` works on a copy of the running services; the result is validated like the file and
  // kept in the state file. nullopt when it changes nothing. Errors: the edit's own, "invalid",
  // "io". `what` names the change in the log.
  Result<std::optional<Plan>> edit(const cfg::Config& running, const std::string& what,
                                   const ServicesEdit& edit);

  // Writes `running` over the config file (the old one kept as FILE.bak); the plan's changes
  // are what the file gained. Errors: "internal" (it would not read back), "io".
  Result<Plan> save(const cfg::Config& running);

  // `running` as a config file.
  static std::string text(const cfg::Config& running);
  // The running services against the file's (diff_services(base, running)).
  std::vector<std::string> runtime_changes(const cfg::Config& running) const;

  const Json& base() const { return base_; }
  void set_base(Json base) { base_ = std::move(base); }
  uint64_t reloads() const { return reloads_; }
  uint64_t reload_failures() const { return reload_failures_; }

 private:
  // Writes the state file for (base, running): whether it was written (no file is needed when
  // nothing was ever changed at run time), or why it could not be.
  Result<bool> persist(const Json& base, const Json& running) const;
  Error reload_failed(Error e);

  std::string config_path_;
  std::string state_file_;  // empty: runtime changes are kept in memory only
  Json base_;               // the config file's services when last read
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
};

}  // namespace lb::health
