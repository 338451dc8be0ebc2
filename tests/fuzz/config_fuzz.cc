// Fuzz target: the configuration loader. Any text gives a Config or a cfg::ConfigError that
// names the file and a line ("fuzz.cfg:12: dataplane.ports: ..."; line 0 only for a missing
// top-level setting, as config_test expects), nothing else: no other exception, no crash, no
// hang. A Config also survives the checks lb-healthd adds
// (healthd_problem) and the round trip lb-healthd's runtime changes rely on (config -> JSON
// -> libconfig text -> the same config).

#include <string>
#include <string_view>

#include "daemon.h"
#include "fuzz.h"
#include "lb_config.h"
#include "state_file.h"

namespace {

constexpr const char* kName = "fuzz.cfg";

// "fuzz.cfg:<line>: " at the front.
bool names_a_line(std::string_view what) {
  const std::string_view prefix = "fuzz.cfg:";
  if (what.substr(0, prefix.size()) != prefix) return false;
  size_t i = prefix.size();
  size_t digits = 0;
  while (i < what.size() && what[i] >= '0' && what[i] <= '9') {
    ++i;
    ++digits;
  }
  return digits > 0 && what.substr(i, 2) == ": ";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // @include reads other files: the loader resolves them next to the config, and that is tested
  // with files in config_test; here the input stays the whole config.
  if (text.find("@include") != std::string::npos) return 0;
  lb::cfg::Config config;
  try {
    config = lb::cfg::parse_config(text, kName);
  } catch (const lb::cfg::ConfigError& e) {
    // Line 0 is the file as a whole: a top-level setting that is missing has no line.
    const bool line_ok =
        e.line() >= 1 || (e.line() == 0 && e.path().find('.') == std::string::npos);
    LB_FUZZ_CHECK(e.file() == kName && line_ok && names_a_line(e.what()),
                  "error without file:line: file '%s' line %d: %s", e.file().c_str(), e.line(),
                  e.what());
    return 0;
  }
  // lb-healthd's own limits are refused the same way.
  if (const auto problem = lb::cfg::healthd_problem(config)) {
    LB_FUZZ_CHECK(problem->line() >= 1 && names_a_line(problem->what()), "healthd: %s",
                  problem->what());
    return 0;
  }
  // What lb-healthd writes back (state file, config.save) reads back as the same services.
  const lb::health::Json services = lb::health::services_to_json(config.services);
  lb::cfg::Config back;
  try {
    back = lb::health::build_config(config, services, kName);
  } catch (const lb::cfg::ConfigError& e) {
    LB_FUZZ_CHECK(false, "a valid config does not read back: %s\n--- input\n%s", e.what(),
                  text.c_str());
  }
  LB_FUZZ_CHECK(lb::health::services_to_json(back.services) == services,
                "the services read back differ\n--- input\n%s", text.c_str());
  return 0;
}
