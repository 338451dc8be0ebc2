#pragma once
// The configuration written back out: a Config as JSON whose keys are exactly the file's keys
// (docs/configuration.md), and any such JSON as libconfig text for the parser to read. lb-healthd
// makes its runtime changes on that JSON and has the parser judge the text (healthd/state_file.h);
// `lbctl config save` writes the running configuration with it. The keys and their order come
// from the parser's own table (schema.h).

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lb_config.h"

namespace lb::cfg {

using Json = nlohmann::json;

// One service (every key with its effective value, the optional ones only when set), so equal
// services give equal JSON.
Json service_to_json(const ServiceConfig& s);
Json services_to_json(const std::vector<ServiceConfig>& services);
// The whole configuration, the same way (instance, dataplane, services, healthd, bgp).
Json config_to_json(const Config& config);

// libconfig text for a configuration in JSON form, keys in schema order (keys the schema does not
// know follow, alphabetically, for the parser to refuse). Every JSON value is written as it is,
// for the parser to judge; what libconfig cannot express at all (null, a key that is not a setting
// name, nesting deeper than any configuration, a NUL byte) throws ConfigError naming `name` and
// the setting's path. Each line of `header_comment` becomes a "# " comment line at the top.
std::string to_libconfig(const Json& config, const std::string& name,
                         const std::string& header_comment = "");

}  // namespace lb::cfg
