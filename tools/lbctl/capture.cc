#include "capture.h"

#include <cmath>
#include <filesystem>
#include <stdexcept>

namespace lb::ctl {

std::vector<std::string> dumpcap_args(const cfg::Config* config, const std::string& file_prefix,
                                      const CaptureRequest& r) {
  std::string device = r.port;
  if (config) {
    // The config's port names are what an operator knows; dumpcap wants the ethdev name, which
    // is the device string up to its first ',' (as lbd itself probes it).
    std::string known;
    bool found = false;
    for (const cfg::PortConfig& p : config->dataplane.ports) {
      const std::string dev = p.device.substr(0, p.device.find(','));
      if (p.name == r.port || dev == r.port) {
        device = dev;
        found = true;
        break;
      }
      known += (known.empty() ? "" : ", ") + p.name;
    }
    const bool number =
        !r.port.empty() && r.port.find_first_not_of("0123456789") == std::string::npos;
    if (!found && !number)
      throw std::invalid_argument("unknown port '" + r.port + "': lbd's ports are " + known);
  }
  std::vector<std::string> a = {"--file-prefix=" + file_prefix, "-i", device,
                                // lbd's view, not more: the port's promiscuous mode is left
                                // as lbd set it.
                                "-p", "-w", r.file};
  if (!r.filter.empty()) a.insert(a.end(), {"-f", r.filter});
  if (r.count > 0) a.insert(a.end(), {"-c", std::to_string(r.count)});
  if (r.duration > 0)
    a.insert(a.end(), {"-a", "duration:" + std::to_string(std::llround(std::ceil(r.duration)))});
  return a;
}

std::string capture_blocker(const std::string& runtime_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(runtime_dir + "/mp_socket", ec))
    return "no lbd runs with this file prefix: " + runtime_dir +
           "/mp_socket does not exist (lbctl -i INSTANCE, or --telemetry PATH)";
  // EAL's memory map file of a process without hugepages.
  if (fs::exists(runtime_dir + "/fbarray_nohugemem", ec))
    return "lbd runs without hugepages (EAL --no-huge): a capture attaches to lbd's memory, "
           "which needs lbd on hugepages (docs/operations.md, \"Capturing packets\")";
  return {};
}

std::string file_prefix_of(const std::string& telemetry_path) {
  const std::string tail = "/dpdk_telemetry.v2";
  if (telemetry_path.size() <= tail.size() ||
      telemetry_path.compare(telemetry_path.size() - tail.size(), tail.size(), tail) != 0)
    return {};
  const std::string dir = telemetry_path.substr(0, telemetry_path.size() - tail.size());
  const size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace lb::ctl
