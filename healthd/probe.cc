#include "probe.h"

#include <poll.h>

#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "log.h"

namespace lb::health {

ProbeSpec make_spec(const cfg::ServiceConfig& service, const cfg::BackendConfig& backend) {
  const cfg::HealthConfig& h = service.health;
  ProbeSpec spec;
  const uint16_t port = h.port != 0 ? h.port : backend.port;
  spec.url = "http://" + cfg::format_ipv4(backend.address) + ":" + std::to_string(port) + h.path;
  spec.host = h.host;
  spec.timeout = Millis(h.timeout_ms);
  spec.expect = cfg::StatusRange{h.expect_status_min, h.expect_status_max};
  spec.expect_body = h.expect_body;
  return spec;
}

ProbeResult classify(CURLcode code, long os_errno, long http_status, std::string_view body,
                     std::string_view error_text, const ProbeSpec& spec, Millis latency,
                     bool headers_complete) {
  ProbeResult r;
  r.latency = latency;
  r.http_status = http_status;
  switch (code) {
    case CURLE_OK:
      if (!headers_complete) {
        r.kind = ResultKind::kError;
        r.detail = "Connection closed within the answer's headers";
      } else if (!spec.expect.contains(http_status)) {
        r.kind = ResultKind::kHttpStatus;
      } else if (!spec.expect_body.empty() &&
                 body.find(spec.expect_body) == std::string_view::npos) {
        r.kind = ResultKind::kBodyMismatch;
      } else {
        r.kind = ResultKind::kOk;
      }
      return r;
    case CURLE_OPERATION_TIMEDOUT:
      r.kind = ResultKind::kTimeout;
      r.detail = std::string(error_text);
      return r;
    case CURLE_COULDNT_CONNECT:
      if (os_errno == ECONNREFUSED) {
        r.kind = ResultKind::kRefused;
        return r;
      }
      break;
    default:
      break;
  }
  r.kind = ResultKind::kError;
  r.detail = error_text.empty() ? std::string(curl_easy_strerror(code)) : std::string(error_text);
  return r;
}

struct Prober::Transfer {
  uint64_t id = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  ProbeSpec spec;
  std::string body;
  char error[CURL_ERROR_SIZE] = {};
  // The blank line that ends the (final) answer's headers was read.
  bool headers_complete = false;
  // socket() failed for want of a local resource (EMFILE, ENFILE, ENOBUFS, ENOMEM): 0 if not.
  int socket_errno = 0;

  ~Transfer() {
    if (easy) curl_easy_cleanup(easy);
    if (headers) curl_slist_free_all(headers);
  }

  static size_t write(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t len = size * n;
    if (!t->spec.expect_body.empty() && t->body.size() < kMaxBodyKept) {
      t->body.append(data, std::min(len, kMaxBodyKept - t->body.size()));
    }
    return len;  // the rest is read and dropped
  }

  // Each header line, the status line first. An interim answer (100 Continue) has its own
  // status line and blank line before the final one's.
  static size_t header(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t len = size * n;
    const std::string_view line(data, len);
    if (line.substr(0, 5) == "HTTP/") {
      t->headers_complete = false;
    } else if (line == "\r\n" || line == "\n") {
      t->headers_complete = true;
    }
    return len;
  }

  // curl's own socket(), but a failure that is lb-healthd's (out of descriptors) is told apart
  // from the backend's: curl reports both as CURLE_COULDNT_CONNECT, with no errno.
  static curl_socket_t open_socket(void* user, curlsocktype, curl_sockaddr* address) {
    auto* t = static_cast<Transfer*>(user);
    const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0) {
      const int e = errno;
      if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) t->socket_errno = e;
      return CURL_SOCKET_BAD;
    }
    return fd;
  }
};

uint64_t raise_open_file_limit(uint64_t want, uint64_t& before) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    before = 0;
    return 0;
  }
  before = lim.rlim_cur;
  const rlim_t target = lim.rlim_max == RLIM_INFINITY
                            ? static_cast<rlim_t>(want)
                            : std::min<rlim_t>(lim.rlim_max, static_cast<rlim_t>(want));
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < target) {
    rlimit raised = lim;
    raised.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return target;
  }
  return lim.rlim_cur;
}

Prober::Prober() {
  multi_ = curl_multi_init();
  if (!multi_) throw std::runtime_error("curl_multi_init failed");
}

Prober::~Prober() {
  while (!transfers_.empty()) remove(transfers_.begin()->first);
  curl_multi_cleanup(multi_);
}

void Prober::remove(uint64_t id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  curl_multi_remove_handle(multi_, it->second->easy);
  transfers_.erase(it);
}

void Prober::cancel(uint64_t id) {
  remove(id);
}

void Prober::start(uint64_t id, const ProbeSpec& spec) {
  remove(id);
  auto t = std::make_unique<Transfer>();
  t->id = id;
  t->spec = spec;
  t->easy = curl_easy_init();
  if (!t->easy) throw std::runtime_error("curl_easy_init failed");
  CURL* e = t->easy;
  const long timeout_ms = static_cast<long>(spec.timeout.count());
  curl_easy_setopt(e, CURLOPT_URL, t->spec.url.c_str());
  curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  // A fresh connection per check, closed after it: a check proves the backend accepts
  // connections now, not that an old one is still open.
  curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
  curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  // The backend, never a proxy from the environment (http_proxy would otherwise apply).
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_IPRESOLVE, static_cast<long>(CURL_IPRESOLVE_V4));
  curl_easy_setopt(e, CURLOPT_USERAGENT, "lb-healthd/0.1");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Transfer::write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Transfer::header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &Transfer::open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t.get());
  t->headers = curl_slist_append(t->headers, "Connection: close");
  t->headers = curl_slist_append(t->headers, "Accept: */*");
  if (!t->spec.host.empty()) {
    t->headers = curl_slist_append(t->headers, ("Host: " + t->spec.host).c_str());
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
  const CURLMcode rc = curl_multi_add_handle(multi_, e);
  if (rc != CURLM_OK)
    throw std::runtime_error(std::string("curl_multi_add_handle: ") + curl_multi_strerror(rc));
  transfers_.emplace(id, std::move(t));
}

std::vector<Prober::Done> Prober::collect(Millis stalled) {
  std::vector<Done> done;
  std::vector<std::pair<uint64_t, ProbeSpec>> again;  // timed out while the caller was away
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    void* priv = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    auto* t = static_cast<Transfer*>(priv);
    long status = 0;
    long os_errno = 0;
    curl_off_t total_us = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os_errno);
    curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    const Millis latency(static_cast<int64_t>(total_us / 1000));
    if (msg->data.result == CURLE_OPERATION_TIMEDOUT && stalled > kLoopStall) {
      again.emplace_back(t->id, t->spec);
    } else if (t->socket_errno != 0) {
      ++local_failures_;
      done.push_back(Done{t->id, ProbeResult{}, std::strerror(t->socket_errno)});
    } else {
      done.push_back(Done{t->id,
                          classify(msg->data.result, os_errno, status, t->body, t->error, t->spec,
                                   latency, t->headers_complete),
                          {}});
    }
    remove(t->id);  // t is gone after this
  }
  for (const auto& [id, spec] : again) start(id, spec);
  stall_retries_ += again.size();
  if (!again.empty()) {
    HLOG_WARNING(
        "%zu check(s) timed out while lb-healthd's loop was held up for %lld ms (an answer "
        "may have arrived unread): checking again, not counted against the backend(s)",
        again.size(), static_cast<long long>(stalled.count()));
  }
  return done;
}

std::vector<Prober::Done> Prober::poll(Millis timeout, int wake_fd, bool& woke,
                                       const std::vector<std::pair<int, short>>& also) {
  woke = false;
  // Only this first look can find a timeout that expired while we were away: the one after
  // curl_multi_poll() follows a wait that curl's own timers bound.
  const Millis away =
      returned_ ? std::chrono::duration_cast<Millis>(Clock::now() - *returned_) : Millis(0);
  int still = 0;
  curl_multi_perform(multi_, &still);
  std::vector<Done> done = collect(away);
  if (!done.empty()) timeout = Millis(0);
  std::vector<curl_waitfd> extra;
  if (wake_fd >= 0) extra.push_back(curl_waitfd{wake_fd, CURL_WAIT_POLLIN, 0});
  for (const auto& [fd, events] : also) {
    short want = 0;
    if ((events & POLLIN) != 0) want |= CURL_WAIT_POLLIN;
    if ((events & POLLOUT) != 0) want |= CURL_WAIT_POLLOUT;
    if (fd >= 0 && want != 0) extra.push_back(curl_waitfd{fd, want, 0});
  }
  int numfds = 0;
  const int ms = static_cast<int>(std::max<int64_t>(0, timeout.count()));
  curl_multi_poll(multi_, extra.empty() ? nullptr : extra.data(),
                  static_cast<unsigned>(extra.size()), ms, &numfds);
  if (wake_fd >= 0 && (extra[0].revents & CURL_WAIT_POLLIN) != 0) woke = true;
  curl_multi_perform(multi_, &still);
  std::vector<Done> more = collect(Millis(0));
  returned_ = Clock::now();
  done.insert(done.end(), std::make_move_iterator(more.begin()),
              std::make_move_iterator(more.end()));
  return done;
}

}  // namespace lb::health
