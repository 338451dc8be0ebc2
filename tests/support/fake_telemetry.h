#pragma once
// A stand-in for lbd's DPDK telemetry socket in tests of its readers (lb-healthd's drain and
// /metrics, lbctl): DPDK's v2 protocol — a hello, then any number of commands on one
// connection, one reply message {cmd: value} each — answered by a function of the command.

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

namespace lb::test {

class FakeTelemetry {
 public:
  using Json = nlohmann::json;
  // The value of each command's reply (null for a command lbd does not know). Called on the
  // server's thread, under the server's lock (see locked()).
  using Answer = std::function<Json(const std::string& cmd)>;

  FakeTelemetry(std::string path, Answer answer)
      : path_(std::move(path)), answer_(std::move(answer)) {
    std::filesystem::remove(path_);
    fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeTelemetry() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
    std::filesystem::remove(path_);
  }
  FakeTelemetry(const FakeTelemetry&) = delete;
  FakeTelemetry& operator=(const FakeTelemetry&) = delete;

  // Runs `f` while no command is being answered: for changing what answer() reads.
  template <typename F>
  void locked(F&& f) {
    std::lock_guard<std::mutex> lock(mutex_);
    f();
  }
  void set_delay(std::chrono::milliseconds d) { delay_ms_ = static_cast<int>(d.count()); }
  int commands() const { return commands_; }  // answered so far
  const std::string& path() const { return path_; }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      const std::string hello = R"({"version": "DPDK 22.11.0", "pid": 1, "max_output_len": 16384})";
      ::send(c, hello.data(), hello.size(), MSG_NOSIGNAL);
      for (;;) {
        pollfd q{c, POLLIN, 0};
        char buf[256];
        if (::poll(&q, 1, 1000) <= 0) break;
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        const std::string cmd(buf, static_cast<size_t>(n));
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_.load()));
        std::string reply;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          // Keyed by the command without its parameter, as DPDK does.
          reply = Json{{cmd.substr(0, cmd.find(',')), answer_(cmd)}}.dump();
        }
        ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
        ++commands_;
      }
      ::close(c);
    }
  }

  std::string path_;
  Answer answer_;
  int fd_ = -1;
  std::thread thread_;
  std::mutex mutex_;
  std::atomic<bool> stop_{false};
  std::atomic<int> commands_{0};
  std::atomic<int> delay_ms_{0};
};

// A page of a listing as lbd pages it (dataplane/telemetry.cc, list_page): the entries of
// `by_id` from the command's parameter ("/lb/backends,FROM"; 0 without one), `per_page` at most,
// keyed PREFIX<id>, and "page": {"from", "listed", "total", "next" while more remain}.
inline nlohmann::json lbd_page(const std::string& cmd, const std::string& prefix,
                               const std::map<uint64_t, nlohmann::json>& by_id, size_t per_page) {
  const size_t comma = cmd.find(',');
  const uint64_t from = comma == std::string::npos ? 0 : std::stoull(cmd.substr(comma + 1));
  nlohmann::json out = nlohmann::json::object();
  uint64_t listed = 0;
  std::optional<uint64_t> next;
  for (auto it = by_id.lower_bound(from); it != by_id.end(); ++it) {
    if (listed == per_page) {
      next = it->first;
      break;
    }
    out[prefix + std::to_string(it->first)] = it->second;
    ++listed;
  }
  out["page"] = {{"from", from}, {"listed", listed}, {"total", by_id.size()}};
  if (next) out["page"]["next"] = *next;
  return out;
}

}  // namespace lb::test
