#pragma once
// lb-healthd's Prometheus endpoint: GET /metrics over HTTP, served by libmicrohttpd on its own
// thread so that a scrape never stalls the daemon's loop (health checks, the control socket).
//
// A scrape asks the loop for a fresh snapshot of lb-healthd's state (the loop checks
// wants_snapshot() every turn, at least every 100 ms, and publish()es one), waits for it at most
// `snapshot_wait` (then serves the last one, with its age), reads lbd's counters from lbd's
// telemetry socket itself (each reply waited for at most `telemetry_timeout`) and renders
// metrics.h's exposition. Scrapes are served one at a time.
//
// Bounds: at most `max_connections` clients, `max_request` bytes per request (more: 431 and the
// connection closed, by libmicrohttpd), `idle_timeout` per connection; only GET and HEAD of
// /metrics (others: 404 or 405).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "daemon.h"
#include "lb_config.h"

struct MHD_Daemon;

namespace lb::health {

struct MetricsOptions {
  cfg::ListenAddress listen;  // port 0: any free port (tests); port() says which
  std::string telemetry;      // lbd's telemetry socket
  Millis telemetry_timeout{250};
  Millis snapshot_wait{500};
  unsigned max_connections = 16;
  size_t max_request = 16384;
  std::chrono::seconds idle_timeout{10};
};

class MetricsServer {
 public:
  // Listens at once; throws std::runtime_error saying why it cannot.
  explicit MetricsServer(MetricsOptions options);
  ~MetricsServer();  // stops serving (a scrape in progress ends first)
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  uint16_t port() const { return port_; }
  const MetricsOptions& options() const { return options_; }

  // -- The loop's side.
  // A scrape is waiting for a snapshot.
  bool wants_snapshot() const { return wanted_.load(std::memory_order_acquire); }
  void publish(DaemonStatus status);

  // -- The server's side (any thread): the body of GET /metrics.
  std::string scrape();

 private:
  MetricsOptions options_;
  uint16_t port_ = 0;
  MHD_Daemon* daemon_ = nullptr;

  std::mutex scrape_mutex_;  // one scrape at a time
  std::mutex mutex_;         // guards the fields below
  std::condition_variable published_cv_;
  std::shared_ptr<const DaemonStatus> snapshot_;
  std::chrono::steady_clock::time_point snapshot_time_{};
  uint64_t published_ = 0;  // snapshots published so far
  bool stopping_ = false;
  // Set by a scrape (release) and read by the loop (acquire) before it takes mutex_ to publish.
  std::atomic<bool> wanted_{false};
  std::string lbd_error_;    // the last reason lbd could not be read, said once in the log
  std::string mhd_message_;  // libmicrohttpd's last message (written by its logger)
};

}  // namespace lb::health
