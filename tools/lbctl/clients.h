#pragma once
// lbctl's two connections: lb-healthd's control socket (JSON lines, docs/lbctl.md) and lbd's
// DPDK telemetry socket (the v2 protocol: a SOCK_SEQPACKET unix socket; the server says hello
// with a JSON object on connect, then every request is a command such as "/lb/stats" or
// "/lb/flows,20" and every reply one JSON message {"<command>": value}).
//
// Every wait is bounded; every failure is a lb::ctl::Error whose message is one line that says
// what was tried ("cannot connect to lb-healthd at /run/lbd/lbd.sock: No such file or directory
// (is lb-healthd running?)").

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace lb::ctl {

using Json = nlohmann::json;

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ControlClient {
 public:
  // Connects; throws Error.
  ControlClient(const std::string& path, int timeout_ms);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Sends one request and returns its reply (a JSON object), waiting at most `timeout_ms`.
  Json request(const Json& req, int timeout_ms);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::string buffered_;
};

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
