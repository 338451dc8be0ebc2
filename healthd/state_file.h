#pragma once
// lb-healthd's running configuration as data, and where runtime changes are kept.
//
// Services travel as JSON objects whose keys are exactly the configuration file's keys
// (docs/configuration.md): `{"name": "web", "vip": "10.10.0.100", "port": 80, ...,
// "backends": [{"address": "10.20.0.11", "port": 8080, "weight": 1, ...}]}`. A change is made on
// that JSON, which is then written out as libconfig text and read back by the configuration
// library: a runtime change is validated by exactly the code that validates the file, and a
// value a client sends (a string where a number belongs, 70000 as a weight, a misspelt key) is
// refused with the loader's own words.
//
// The state file (docs/operations.md) holds two lists: `base`, the config file's services when
// lb-healthd last read it, and `running`, the services it runs. Reading the file again (a reload
// or a restart) is a three-way merge: what changed in the file since `base` is applied to
// `running`; runtime changes the file does not touch stay.

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "files.h"  // write_file_atomic, FileOwner
#include "lb_config.h"
#include "writer.h"  // config_to_json, to_libconfig

namespace lb::health {

using Json = cfg::Json;

// The configuration as JSON and as libconfig text: config/writer.h, next to the parser.
using cfg::config_to_json;
using cfg::service_to_json;
using cfg::services_to_json;
using cfg::to_libconfig;

// `config` with its services replaced by `services`, validated as the file would be (the
// configuration library, then lb-healthd's own limits). Throws cfg::ConfigError, in which `name`
// stands for the file name. The result's `file` is `config.file`.
cfg::Config build_config(const cfg::Config& config, const Json& services, const std::string& name);

// The message of a cfg::ConfigError without its "file:line: path: " prefix.
std::string error_message(const cfg::ConfigError& e);
// A path such as "services.[1].backends.[0].weight" said with names: "service 'web' backend
// 10.20.0.14:8080: weight" (indexes when the element has no usable name).
std::string describe_path(const std::string& path, const Json& services);
// One line for a refused runtime change: "service 'web' backend 10.20.0.14:8080: weight: value
// 70000 is out of range 0..65535".
std::string describe_error(const cfg::ConfigError& e, const Json& services);

// Three-way merge of service lists (see the top of this file). Services are matched by name,
// backends by address and port; settings inside them key by key (and the health group's keys
// one by one). The file's order comes first, then what only the running list has.
Json merge_services(const Json& base, const Json& file, const Json& running);

// What differs from `from` to `to`, one line each: "service api added (10.10.0.101:80)",
// "service web: backend 10.20.0.12:8080: weight 1 -> 3", "service web: health.path ...".
std::vector<std::string> diff_services(const Json& from, const Json& to);

// What `to` changes outside the services, one line each: the bgp group (a reload applies it),
// and, saying that only a start applies them, lbd's dataplane group and lb-healthd's healthd
// group but drain_timeout_ms (which a reload applies).
std::vector<std::string> settings_changes(const cfg::Config& from, const cfg::Config& to);

struct RuntimeState {
  Json base = Json::array();
  Json running = Json::array();
};

std::string format_state(const RuntimeState& state, const std::string& config_path);
// nullopt when there is no such file; std::runtime_error("PATH: problem") when it cannot be read
// or is not a state file.
std::optional<RuntimeState> read_state(const std::string& path);

// What lb-healthd starts from: the file's configuration merged with the state file's runtime
// changes (if there is a state file). Throws std::runtime_error with a message that names the
// state file when they cannot be combined.
struct Startup {
  cfg::Config running;
  Json base;                         // the file's services
  bool from_state = false;           // a state file was read
  std::vector<std::string> changes;  // the runtime changes in effect over the file
  bool base_moved = false;           // the file changed since the state was written
};
Startup load_startup(const cfg::Config& file_config, const std::string& state_path);

}  // namespace lb::health
