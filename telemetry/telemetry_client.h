#pragma once
// lbd's DPDK telemetry socket, as lbctl and lb-healthd read it (the v2 protocol: a SOCK_SEQPACKET
// unix socket; the server says hello with a JSON object on connect, then every request is a
// command such as "/lb/stats" or "/lb/flows,20" and every reply one JSON message
// {"<command>": value}). lb-healthd counts the flows of backends it drains with it.
//
// Every wait is bounded; every failure is a lb::ctl::Error whose message is one line that says
// what was tried ("cannot connect to lbd's telemetry at /var/run/dpdk/lbd/dpdk_telemetry.v2: No
// such file or directory (is lbd running?)").

#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace lb::ctl {

using Json = nlohmann::json;

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A connected unix socket of `type` (SOCK_STREAM, SOCK_SEQPACKET) to `path`; throws Error
// naming `who`, with `hint` when nobody listens there.
int connect_unix(const std::string& path, int type, const std::string& who,
                 const std::string& hint);
// Waits until `fd` is ready for `events` (poll's) or the deadline passes; false on timeout.
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline);

class TelemetryClient {
 public:
  // Connects and reads the hello; throws Error.
  TelemetryClient(const std::string& path, int timeout_ms);
  ~TelemetryClient();
  TelemetryClient(const TelemetryClient&) = delete;
  TelemetryClient& operator=(const TelemetryClient&) = delete;

  // The value of one command ("/lb/stats", "/lb/flows,20"); throws Error when the command is
  // unknown to lbd or fails there (the reply's value is null).
  Json query(const std::string& command);
  const Json& hello() const { return hello_; }
  const std::string& path() const { return path_; }

 private:
  Json receive(const std::string& what);

  std::string path_;
  int fd_ = -1;
  int timeout_ms_ = 0;
  size_t max_len_ = 16384;
  Json hello_;
};

// Where lbd's telemetry socket is for an EAL --file-prefix (lbd's default: the instance name).
std::string telemetry_path(const std::string& file_prefix);

}  // namespace lb::ctl
