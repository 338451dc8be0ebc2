#pragma once
// What the loader (lb_config.h) cannot judge from the file alone because it depends on the
// host: the healthd.socket_owner and socket_group accounts must exist (lb-healthd gives its
// control socket to them at start). lb-healthd checks it at start and reload, lbctl check too.

#include <optional>

#include "lb_config.h"

namespace lb::cfg {

// The problem as a ConfigError ("file:line: path: message"); nullopt when the config is fine.
// `accounts`: look the socket's accounts up (false for runtime changes, which cannot touch
// them).
std::optional<ConfigError> healthd_problem(const Config& config, bool accounts = true);

}  // namespace lb::cfg
