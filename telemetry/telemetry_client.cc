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

// -- Paged listings ---------------------------------------------------------------------------

namespace lb::ctl {

std::optional<uint64_t> PageMerger::add(const Json& page) {
  if (!page.is_object()) throw Error("a page of an lbd listing is not an object");
  const auto meta = page.find("page");
  if (meta == page.end()) {
    // An lbd from before paging: the one reply is all there is, but it may have left entries
    // out (DPDK drops what does not fit in 16 KiB without a word).
    for (const auto& [key, entry] : page.items()) listing_.entries[key] = entry;
    listing_.total = listing_.entries.size();
    listing_.complete = false;
    return std::nullopt;
  }
  const auto count = [&](const char* key) -> std::optional<uint64_t> {
    const auto it = meta->find(key);
    if (it == meta->end()) return std::nullopt;
    // A count: a whole number, not negative (unsigned once parsed; signed when built in a test).
    if (!it->is_number_integer() || (!it->is_number_unsigned() && it->get<int64_t>() < 0))
      throw Error(std::string("lbd's page has a bad \"") + key + "\"");
    return it->get<uint64_t>();
  };
  if (!meta->is_object()) throw Error("lbd's \"page\" is not an object");
  const std::optional<uint64_t> from = count("from");
  const std::optional<uint64_t> total = count("total");
  const std::optional<uint64_t> next = count("next");
  if (!from || !total) throw Error("lbd's \"page\" lacks \"from\" or \"total\"");
  for (const auto& [key, entry] : page.items()) {
    if (key != "page") listing_.entries[key] = entry;
  }
  listing_.total = *total;
  if (next && *next <= *from)
    throw Error("lbd's listing does not advance (next page " + std::to_string(*next) +
                " after one from " + std::to_string(*from) + ")");
  if (asked_ && *from != *asked_)
    throw Error("lbd answered the page from " + std::to_string(*from) + " for the one from " +
                std::to_string(*asked_));
  asked_ = next;
  listing_.complete = !next;
  return next;
}

Listing TelemetryClient::query_all(const std::string& command) try {
  PageMerger m;
  // The first page without a parameter: an lbd from before paging answers it too.
  std::optional<uint64_t> next = m.add(query(command));
  // lbd's listings are at most 4,096 entries, each page one at least: a bound for a server
  // that never ends.
  constexpr int kMaxPages = 65536;
  for (int pages = 1; next; ++pages) {
    if (pages >= kMaxPages)
      throw Error("lbd's telemetry at " + path_ + ": " + command + " has no end");
    next = m.add(query(command + "," + std::to_string(*next)));
  }
  return m.take();
} catch (const Error& e) {
  const std::string what = e.what();
  if (what.starts_with("lbd's telemetry")) throw;  // query()'s: it says where already
  throw Error("lbd's telemetry at " + path_ + ": " + command + ": " + what);
}

}  // namespace lb::ctl
