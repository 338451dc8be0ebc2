#include "metrics_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "log.h"
#include "metrics.h"

namespace lb::health {

namespace {

constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

// libmicrohttpd's messages: the last is kept for the error of a failed start (read only then,
// when its thread has not started); all are logged at debug (they are about clients: a request
// too big, a connection reset).
void mhd_log(void* cls, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  size_t n = std::strlen(buf);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
  if (cls) *static_cast<std::string*>(cls) = buf;
  HLOG_DEBUG("metrics: %s", buf);
}

// A HEAD gets the GET's response: libmicrohttpd sends its headers (Content-Length the body's
// size, as RFC 9110 asks) and leaves the body out.
MHD_Result reply(MHD_Connection* c, unsigned status, std::string body, const char* type) {
  MHD_Response* r =
      MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  const MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

MHD_Result handle(void* cls, MHD_Connection* c, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/,
                  size_t* /*upload_data_size*/, void** /*request*/) {
  auto* server = static_cast<MetricsServer*>(cls);
  const bool get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0;
  const bool head = std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  const std::string path = url;
  if (path != "/metrics") {
    return reply(c, MHD_HTTP_NOT_FOUND, "lb-healthd serves /metrics only\n",
                 "text/plain; charset=utf-8");
  }
  if (!get && !head) {
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or HEAD only\n", "text/plain; charset=utf-8");
  }
  try {
    return reply(c, MHD_HTTP_OK, server->scrape(), kContentType);
  } catch (const std::exception& e) {
    HLOG_WARNING("metrics: scrape failed: %s", e.what());
    return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, std::string(e.what()) + "\n",
                 "text/plain; charset=utf-8");
  }
}

}  // namespace

MetricsServer::MetricsServer(MetricsOptions options) : options_(std::move(options)) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.listen.port);
  addr.sin_addr.s_addr = htonl(options_.listen.address);
  // One internal thread polls every connection and runs the handler: scrapes are served one at
  // a time, never on the daemon's loop.
  daemon_ = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, options_.listen.port,
      nullptr, nullptr, &handle, this, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_CONNECTION_LIMIT,
      options_.max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT, options_.max_request,
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(options_.idle_timeout.count()),
      MHD_OPTION_EXTERNAL_LOGGER, &mhd_log, &mhd_message_, MHD_OPTION_END);
  const std::string where =
      cfg::format_ipv4(options_.listen.address) + ":" + std::to_string(options_.listen.port);
  if (!daemon_) {
    throw std::runtime_error(
        "cannot serve metrics on " + where + ": " +
        (mhd_message_.empty() ? std::string("libmicrohttpd did not start") : mhd_message_));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info ? info->port : options_.listen.port;
}

MetricsServer::~MetricsServer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  published_cv_.notify_all();
  MHD_stop_daemon(daemon_);  // joins its thread
}

void MetricsServer::publish(DaemonStatus status) {
  auto snapshot = std::make_shared<const DaemonStatus>(std::move(status));
  {
    std::lock_guard lock(mutex_);
    snapshot_ = std::move(snapshot);
    snapshot_time_ = std::chrono::steady_clock::now();
    ++published_;
    // Pairs with the acquire in wants_snapshot(): the loop sees the request cleared only with
    // this snapshot in place.
    wanted_.store(false, std::memory_order_release);
  }
  published_cv_.notify_all();
}

std::string MetricsServer::scrape() {
  std::lock_guard one(scrape_mutex_);
  std::shared_ptr<const DaemonStatus> snapshot;
  std::chrono::steady_clock::time_point taken;
  {
    std::unique_lock lock(mutex_);
    const uint64_t before = published_;
    // Pairs with the acquire in wants_snapshot(): the loop publishes on its next turn.
    wanted_.store(true, std::memory_order_release);
    published_cv_.wait_for(lock, options_.snapshot_wait,
                           [&] { return stopping_ || published_ != before; });
    snapshot = snapshot_;
    taken = snapshot_time_;
  }
  static const DaemonStatus kNothing;
  const double age =
      snapshot ? std::chrono::duration<double>(std::chrono::steady_clock::now() - taken).count()
               : 0.0;

  const ctl::LbdSnapshot lbd = ctl::read_snapshot(options_.telemetry, options_.telemetry_timeout);
  if (!lbd.up && lbd.error != lbd_error_) {
    HLOG_INFO("metrics: lbd's counters left out (lbd_up 0): %s", lbd.error.c_str());
  } else if (lbd.up && !lbd_error_.empty()) {
    HLOG_INFO("metrics: lbd's telemetry answers again");
  }
  lbd_error_ = lbd.up ? "" : lbd.error;
  return render_metrics(snapshot ? *snapshot : kNothing, age, lbd);
}

}  // namespace lb::health
