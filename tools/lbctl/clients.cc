#include "clients.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace lb::ctl {

// -- lb-healthd ------------------------------------------------------------------------------

ControlClient::ControlClient(const std::string& path, int) : path_(path) {
  // connect() on a unix stream socket does not block once the server is there (the backlog
  // takes it), so no timeout is needed for it.
  fd_ = connect_unix(path, SOCK_STREAM, "lb-healthd", "is lb-healthd running?");
}

ControlClient::~ControlClient() {
  if (fd_ >= 0) ::close(fd_);
}

Json ControlClient::request(const Json& req, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // lb-healthd, full of clients, makes room by evicting the quietest one ("evicted") or
  // refuses a new one ("busy"); either way it did not read this request, so sending it again
  // on a new connection is safe. A few tries, a little apart, within the same deadline.
  for (int attempt = 1;; ++attempt) {
    Json reply = exchange(req, deadline, timeout_ms);
    const std::string code = reply.value("code", std::string());
    if ((code != "evicted" && code != "busy") || attempt == kAttempts) return reply;
    const auto pause = std::chrono::milliseconds(20 * attempt);
    if (Clock::now() + pause >= deadline) return reply;
    std::this_thread::sleep_for(pause);
    ::close(fd_);
    fd_ = -1;
    buffered_.clear();
    fd_ = connect_unix(path_, SOCK_STREAM, "lb-healthd", "is lb-healthd running?");
  }
}

Json ControlClient::exchange(const Json& req, Clock::time_point deadline, int timeout_ms) {
  const std::string line = req.dump() + "\n";
  size_t sent = 0;
  while (sent < line.size()) {
    if (!wait_for(fd_, POLLOUT, deadline))
      throw Error("lb-healthd at " + path_ + " did not take the request within " +
                  std::to_string(timeout_ms) + " ms");
    const ssize_t n = ::send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // Closed before it read anything: its last words ("evicted", "busy") are still to be read.
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) break;
    if (n < 0) throw Error("lb-healthd at " + path_ + ": send: " + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
  for (;;) {
    const size_t nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      const std::string reply = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      try {
        Json j = Json::parse(reply);
        if (!j.is_object()) throw Error("not an object");
        return j;
      } catch (const std::exception& e) {
        throw Error("lb-healthd at " + path_ + " sent a reply that is not a JSON object");
      }
    }
    if (!wait_for(fd_, POLLIN, deadline))
      throw Error("no reply from lb-healthd at " + path_ + " within " + std::to_string(timeout_ms) +
                  " ms");
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("lb-healthd at " + path_ + ": " + std::strerror(errno));
    if (n == 0) throw Error("lb-healthd at " + path_ + " closed the connection without a reply");
    buffered_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace lb::ctl
