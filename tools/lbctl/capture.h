#pragma once
// `lbctl capture`: dpdk-dumpcap pointed at one of lbd's ports by its name in the config. lbd
// serves captures itself (rte_pdump); dpdk-dumpcap attaches to it as a DPDK secondary process,
// which needs lbd to run on hugepages, and the same --file-prefix (docs/operations.md).

#include <cstdint>
#include <string>
#include <vector>

#include "lb_config.h"

namespace lb::ctl {

struct CaptureRequest {
  std::string port;     // a port name from the config, an ethdev name, or a DPDK port number
  std::string filter;   // libpcap syntax; empty: everything
  std::string file;     // pcapng output
  int64_t count = 0;    // stop after this many packets (0: no limit)
  double duration = 0;  // stop after this many seconds (0: no limit)
};

// The dpdk-dumpcap command line (argv, without the program) for lbd running with EAL
// --file-prefix `file_prefix`. `config` may be null (no file): the port is then passed as it
// is. Throws std::invalid_argument, with the ports there are, for a name the config lacks.
std::vector<std::string> dumpcap_args(const cfg::Config* config, const std::string& file_prefix,
                                      const CaptureRequest& r);

// Why dumpcap cannot attach to the lbd whose DPDK runtime directory is `runtime_dir`
// (/var/run/dpdk/<prefix>), or empty: no lbd there, or one without hugepages (--no-huge), which
// no secondary process can map ("EAL init failed: is primary process running?" otherwise).
std::string capture_blocker(const std::string& runtime_dir);

// The EAL --file-prefix of the lbd whose telemetry socket is `telemetry_path`
// (/var/run/dpdk/<prefix>/dpdk_telemetry.v2); empty when the path is not of that form.
std::string file_prefix_of(const std::string& telemetry_path);

}  // namespace lb::ctl
