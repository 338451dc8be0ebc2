#pragma once
// HTTP checks over libcurl's multi interface: many checks in flight, one thread, never blocking
// longer than the timeout the caller gives poll(). Each check is a fresh connection (no reuse),
// HTTP/1.1 "GET <path>", no proxy, no redirects.

#include <curl/curl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
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
// the body kept, curl's error text, whether the answer's headers ended) turned into a verdict.
// libcurl ends a transfer with CURLE_OK and the status of the line it read when the backend
// closes the connection within the headers ("HTTP/1.1 200 OK\r\n", then nothing): that is no
// answer, and fails (kError).
ProbeResult classify(CURLcode code, long os_errno, long http_status, std::string_view body,
                     std::string_view error_text, const ProbeSpec& spec, Millis latency,
                     bool headers_complete = true);

// Every check in flight holds a socket: with the soft open-file limit systemd gives a service
// (1024), a few hundred backends that hang (a network partition) would leave none for the
// others' checks. Raises the soft RLIMIT_NOFILE to the hard one, at most `want`. Returns the soft
// limit now in force (the old one if it could not be raised); `before` is set to the old one.
uint64_t raise_open_file_limit(uint64_t want, uint64_t& before);
inline constexpr uint64_t kWantedOpenFiles = 65536;

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
    // Not empty: the check never reached the backend because lb-healthd itself could not open
    // a socket (no descriptor or buffer left: "Too many open files"). Says nothing of the
    // backend, whose health must not count it; `result` is then meaningless.
    std::string local_error;
  };
  // Drives every transfer; waits at most `timeout` for network activity or for `wake_fd`
  // (-1: none) to become readable (then `woke` is set), or for one of `also` (descriptor,
  // POLLIN and/or POLLOUT) to be ready. Returns the checks that ended.
  //
  // A check whose timeout expired while the caller was away (the time since the previous
  // poll() returned, more than kLoopStall: a slow fsync, say) is not reported: libcurl looks
  // at the clock before it reads what arrived meanwhile, so the backend may well have
  // answered in time. It starts again at once instead (stall_retries()).
  std::vector<Done> poll(Millis timeout, int wake_fd, bool& woke,
                         const std::vector<std::pair<int, short>>& also = {});
  static constexpr Millis kLoopStall{20};
  uint64_t stall_retries() const { return stall_retries_; }
  // Checks that ended with a local_error.
  uint64_t local_failures() const { return local_failures_; }

 private:
  struct Transfer;
  // `stalled`: the caller was away for that long before this collect's curl_multi_perform.
  std::vector<Done> collect(Millis stalled);
  void remove(uint64_t id);

  CURLM* multi_ = nullptr;
  std::unordered_map<uint64_t, std::unique_ptr<Transfer>> transfers_;
  std::optional<TimePoint> returned_;  // when poll() last returned
  uint64_t stall_retries_ = 0;
  uint64_t local_failures_ = 0;
};

}  // namespace lb::health
