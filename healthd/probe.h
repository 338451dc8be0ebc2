#pragma once
// HTTP checks over libcurl's multi interface: many checks in flight, one thread, never blocking
// longer than the timeout the caller gives poll(). Each check is a fresh connection (no reuse),
// HTTP/1.1 "GET <path>", no proxy, no redirects.

#include <curl/curl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "health_state.h"
#include "lb_config.h"

namespace lb::health {

// What to ask one backend, and what counts as passing.
struct ProbeSpec {
  std::string url;   // "http://10.20.0.12:8080/healthcheck"
  std::string host;  // Host header; empty: curl's default (address:port)
  Millis timeout{500};
  cfg::StatusRange expect;
  std::string expect_body;  // empty: not checked

  bool operator==(const ProbeSpec&) const = default;
};

ProbeSpec make_spec(const cfg::ServiceConfig& service, const cfg::BackendConfig& backend);

// The most of a body kept for the expect_body search.
inline constexpr size_t kMaxBodyKept = size_t{64} * 1024;

// Pure: a finished transfer (curl's result code, the OS errno of a failed connect, the status,
// the body kept, curl's error text) turned into a verdict.
ProbeResult classify(CURLcode code, long os_errno, long http_status, std::string_view body,
                     std::string_view error_text, const ProbeSpec& spec, Millis latency);

class Prober {
 public:
  Prober();  // throws std::runtime_error when libcurl cannot make a multi handle
  ~Prober();
  Prober(const Prober&) = delete;
  Prober& operator=(const Prober&) = delete;

  // Starts a check; `id` names it in the results. A check already running for `id` is replaced.
  void start(uint64_t id, const ProbeSpec& spec);
  void cancel(uint64_t id);
  bool running(uint64_t id) const { return transfers_.count(id) != 0; }
  size_t running() const { return transfers_.size(); }

  struct Done {
    uint64_t id;
    ProbeResult result;
  };
  // Drives every transfer; waits at most `timeout` for network activity or for `wake_fd`
  // (-1: none) to become readable (then `woke` is set). Returns the checks that ended.
  std::vector<Done> poll(Millis timeout, int wake_fd, bool& woke);

 private:
  struct Transfer;
  std::vector<Done> collect();
  void remove(uint64_t id);

  CURLM* multi_ = nullptr;
  std::unordered_map<uint64_t, std::unique_ptr<Transfer>> transfers_;
};

}  // namespace lb::health
