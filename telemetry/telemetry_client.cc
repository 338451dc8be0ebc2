#include "telemetry_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace lb::ctl {

using Clock = std::chrono::steady_clock;

int connect_unix(const std::string& path, int type, const std::string& who,
                 const std::string& hint) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw Error(who + " socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error("cannot connect to " + who + " at " + path + ": " + std::strerror(err) +
                (err == ENOENT || err == ECONNREFUSED ? " (" + hint + ")" : ""));
  }
  return fd;
}

bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // let the read/write report it
  }
}

std::string telemetry_path(const std::string& file_prefix) {
  return "/var/run/dpdk/" + file_prefix + "/dpdk_telemetry.v2";
}

// -- lbd's telemetry -------------------------------------------------------------------------

TelemetryClient::TelemetryClient(const std::string& path, int timeout_ms)
    : path_(path), timeout_ms_(timeout_ms) {
  fd_ = connect_unix(path, SOCK_SEQPACKET, "lbd's telemetry", "is lbd running?");
  try {
    hello_ = receive("hello");
    if (!hello_.is_object()) throw Error("lbd's telemetry at " + path_ + ": unexpected hello");
    if (hello_.contains("max_output_len") && hello_["max_output_len"].is_number_unsigned())
      max_len_ = hello_["max_output_len"].get<size_t>();
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

TelemetryClient::~TelemetryClient() {
  if (fd_ >= 0) ::close(fd_);
}

Json TelemetryClient::receive(const std::string& what) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  std::vector<char> buf(std::max<size_t>(max_len_, 16384) + 1024);
  for (;;) {
    if (!wait_for(fd_, POLLIN, deadline))
      throw Error("no " + what + " from lbd's telemetry at " + path_ + " within " +
                  std::to_string(timeout_ms_) + " ms");
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("lbd's telemetry at " + path_ + ": " + std::strerror(errno));
    if (n == 0) throw Error("lbd's telemetry at " + path_ + " closed the connection");
    try {
      return Json::parse(buf.data(), buf.data() + n);
    } catch (const std::exception&) {
      throw Error("lbd's telemetry at " + path_ + " sent something that is not JSON (" + what +
                  ")");
    }
  }
}

Json TelemetryClient::query(const std::string& command) {
  const ssize_t n = ::send(fd_, command.data(), command.size(), MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(command.size()))
    throw Error("lbd's telemetry at " + path_ + ": send: " + std::strerror(errno));
  Json reply = receive("reply to " + command);
  const std::string key = command.substr(0, command.find(','));
  if (!reply.is_object() || !reply.contains(key))
    throw Error("lbd's telemetry at " + path_ + ": unexpected reply to " + command);
  Json value = reply[key];
  if (value.is_null())
    throw Error("lbd's telemetry refused " + command + " (an lbd without that command?)");
  return value;
}

}  // namespace lb::ctl
