#pragma once
// lbctl's two connections: lb-healthd's control socket (JSON lines, docs/lbctl.md) here, and
// lbd's DPDK telemetry socket (telemetry/telemetry_client.h, shared with lb-healthd).
//
// Every wait is bounded; every failure is a lb::ctl::Error whose message is one line that says
// what was tried ("cannot connect to lb-healthd at /run/lbd/lbd.sock: No such file or directory
// (is lb-healthd running?)").

#include <chrono>
#include <string>

#include "telemetry_client.h"

namespace lb::ctl {

class ControlClient {
 public:
  // Connects; throws Error.
  ControlClient(const std::string& path, int timeout_ms);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Sends one request and returns its reply (a JSON object), waiting at most `timeout_ms`;
  // sent again on a new connection when lb-healthd answers "evicted" or "busy".
  Json request(const Json& req, int timeout_ms);
  const std::string& path() const { return path_; }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr int kAttempts = 4;
  Json exchange(const Json& req, Clock::time_point deadline, int timeout_ms);

  std::string path_;
  int fd_ = -1;
  std::string buffered_;
};

}  // namespace lb::ctl
