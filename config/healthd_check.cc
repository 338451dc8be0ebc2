#include "healthd_check.h"

#include <exception>
#include <string>

#include "files.h"

namespace lb::cfg {

std::optional<ConfigError> healthd_problem(const Config& config, bool accounts) {
  // What one pool update carries (backends per service) the loader checks already.
  // The same lookups as ControlServer makes at start: a name that passes here cannot stop it.
  const HealthdConfig& h = config.healthd;
  const struct {
    const char* path;
    const std::string& name;
    int line;
    void (*lookup)(const std::string&);
  } kAccounts[] = {
      {"healthd.socket_owner", h.socket_owner, h.socket_owner_line,
       [](const std::string& n) { lookup_user(n); }},
      {"healthd.socket_group", h.socket_group, h.socket_group_line,
       [](const std::string& n) { lookup_group(n); }},
  };
  for (const auto& a : kAccounts) {
    try {
      if (accounts && !a.name.empty()) a.lookup(a.name);
    } catch (const std::exception& e) {
      return ConfigError(config.file, a.line, a.path,
                         std::string(e.what()) +
                             " on this host (lb-healthd gives its control socket to it when "
                             "it starts)");
    }
  }
  return std::nullopt;
}

}  // namespace lb::cfg
