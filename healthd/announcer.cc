#include "announcer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <utility>

#include "log.h"

namespace lb::health {

const char* to_string(NodeState s) {
  return s == NodeState::kReady ? "ready" : "draining";
}

std::vector<VipDecision> decide(const cfg::BgpConfig& bgp, NodeState node, const LbdLiveness& lbd,
                                const std::vector<ServiceServing>& services) {
  const auto bound = static_cast<int64_t>(bgp.lbd_timeout_ms);
  std::string down;  // why lbd does not count as alive; empty when it does
  if (!lbd.attached) {
    down = "lbd is not attached";
  } else if (lbd.heartbeat_age_ms < 0 || lbd.heartbeat_age_ms >= bound) {
    down = lbd.heartbeat_age_ms < 0
               ? "lbd's heartbeat was not seen yet"
               : "lbd's heartbeat stopped " + std::to_string(lbd.heartbeat_age_ms) + " ms ago";
  } else if (lbd.unapplied_ms >= bound) {
    down =
        "lbd has not applied the newest generation for " + std::to_string(lbd.unapplied_ms) + " ms";
  }
  std::map<uint32_t, bool> vips;  // vip -> one of its services serves
  for (const ServiceServing& s : services) vips[s.vip] = vips[s.vip] || s.serving;
  std::vector<VipDecision> out;
  for (const auto& [vip, serving] : vips) {
    VipDecision d{vip, false, ""};
    if (node == NodeState::kDraining) {
      d.why = "node draining";
    } else if (!down.empty()) {
      d.why = down;
    } else if (bgp.announce_when == cfg::AnnounceWhen::kServing && !serving) {
      d.why = "no serving backend";
    } else {
      d.announce = true;
      d.why = bgp.announce_when == cfg::AnnounceWhen::kServing ? "serving" : "lbd alive";
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::string render_bird_config(const cfg::Config& config, const std::string& instance,
                               const std::vector<uint32_t>& vips) {
  const cfg::BgpConfig& bgp = config.bgp;
  std::string out;
  out += "# Written by lb-healthd (instance " + instance + ") from " + config.file +
         "; rewritten at every change, do not edit.\n";
  out += "# Run: bird -c " + cfg::bird_config_path(config, instance) + " -s " +
         cfg::bird_socket_path(config, instance) + "\n";
  out += "router id " + cfg::format_ipv4(bgp.router_id) + ";\n";
  out += "protocol device {}\n";
  // The VIPs this node announces: static routes via lbd's port (never sent to the kernel here:
  // there is no kernel protocol), exported as BGP routes whose next hop is that address.
  out += "protocol static lbd_vips {\n  ipv4;\n";
  for (const uint32_t vip : vips) {
    out += "  route " + cfg::format_ipv4(vip) + "/32 via " + cfg::format_ipv4(bgp.next_hop) + ";\n";
  }
  out += "}\n";
  out += "filter lbd_export {\n  if proto != \"lbd_vips\" then reject;\n";
  for (const auto& [asn, value] : bgp.communities) {
    out += "  bgp_community.add((" + std::to_string(asn) + "," + std::to_string(value) + "));\n";
  }
  if (bgp.med) out += "  bgp_med = " + std::to_string(*bgp.med) + ";\n";
  out += "  accept;\n}\n";
  const uint32_t keepalive = std::max<uint32_t>(1, bgp.hold_time / 3);
  for (const cfg::BgpNeighbor& n : bgp.neighbors) {
    std::string name = "n_" + cfg::format_ipv4(n.address);
    std::replace(name.begin(), name.end(), '.', '_');
    out += "protocol bgp " + name + " {\n";
    out += "  local as " + std::to_string(bgp.local_as) + ";\n";
    out += "  neighbor " + cfg::format_ipv4(n.address) + " as " + std::to_string(n.as) + ";\n";
    out += "  hold time " + std::to_string(bgp.hold_time) + ";\n";
    out += "  keepalive time " + std::to_string(keepalive) + ";\n";
    out += "  connect retry time 1;\n";
    out += "  ipv4 { import none; export filter lbd_export; };\n}\n";
  }
  return out;
}

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int64_t left_ms(TimePoint deadline) {
  return std::max<int64_t>(0, std::chrono::duration_cast<Millis>(deadline - Clock::now()).count());
}

// Reads BIRD's reply up to its last line ("NNNN text": a code then a space; "NNNN-text" and
// " text" continue). Returns that line's code and the reply's text, or nullopt (with `error`).
std::optional<std::pair<int, std::string>> read_reply(int fd, TimePoint deadline,
                                                      std::string& buffer, std::string& error) {
  std::string text;
  for (;;) {
    size_t eol;
    while ((eol = buffer.find('\n')) != std::string::npos) {
      const std::string line = buffer.substr(0, eol);
      buffer.erase(0, eol + 1);
      const bool coded =
          line.size() >= 5 &&
          std::all_of(line.begin(), line.begin() + 4, [](char c) { return c >= '0' && c <= '9'; });
      if (!text.empty()) text += " / ";
      text += coded ? line.substr(5) : line.substr(line.empty() ? 0 : 1);
      if (coded && line[4] == ' ') return std::make_pair(std::stoi(line.substr(0, 4)), text);
    }
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left_ms(deadline)));
    if (r == 0) {
      error = "no answer from BIRD in time";
      return std::nullopt;
    }
    if (r < 0 && errno == EINTR) continue;
    char chunk[1024];
    const ssize_t n = r < 0 ? -1 : ::read(fd, chunk, sizeof chunk);
    if (n <= 0) {
      error = n == 0 ? "BIRD closed the connection" : std::string("read: ") + std::strerror(errno);
      return std::nullopt;
    }
    buffer.append(chunk, static_cast<size_t>(n));
    if (buffer.size() > 65536) {
      error = "BIRD's answer is too long";
      return std::nullopt;
    }
  }
}

}  // namespace

std::optional<std::string> bird_configure(const std::string& socket, Millis timeout) {
  const TimePoint deadline = Clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() >= sizeof addr.sun_path) return "socket path too long: " + socket;
  std::memcpy(addr.sun_path, socket.c_str(), socket.size() + 1);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return std::string("socket: ") + std::strerror(errno);
  // A local stream socket connects at once or fails (no one listening): no need to wait.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return "cannot reach BIRD at " + socket + ": " + std::strerror(errno);
  std::string buffer;
  std::string error;
  const auto hello = read_reply(fd.get(), deadline, buffer, error);
  if (!hello) return error;
  if (hello->first != 1) return "unexpected greeting from BIRD: " + hello->second;
  const std::string request = "configure\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    return std::string("write: ") + std::strerror(errno);
  const auto reply = read_reply(fd.get(), deadline, buffer, error);
  if (!reply) return error;
  // 0003 Reconfigured, 0004 Reconfiguration in progress, 0019 Nothing to do; 8xxx/9xxx errors
  // (e.g. 8002 for a syntax error, with file:line).
  if (reply->first >= 8000) return "BIRD refused: " + reply->second;
  return std::nullopt;
}

Announcer::Announcer(cfg::Config config, std::string instance)
    : config_(std::move(config)),
      instance_(std::move(instance)),
      config_path_(cfg::bird_config_path(config_, instance_)),
      socket_path_(cfg::bird_socket_path(config_, instance_)) {}

bool Announcer::set(const std::vector<uint32_t>& vips, TimePoint now, Millis retry) {
  const bool changed = !written_ || vips != wanted_;
  if (!changed && (in_bird_ || now < next_try_)) return false;
  if (changed && write_failed_ && now < next_try_) return false;
  if (changed) {
    // Written whole then renamed: BIRD never reads half a file.
    const std::string text = render_bird_config(config_, instance_, vips);
    const std::string tmp = config_path_ + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    bool ok = f != nullptr && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (f != nullptr) ok = (std::fclose(f) == 0) && ok;
    if (!ok || std::rename(tmp.c_str(), config_path_.c_str()) != 0) {
      last_error_ = "cannot write " + config_path_ + ": " + std::strerror(errno);
      HLOG_ERROR("bgp: %s", last_error_.c_str());
      next_try_ = now + retry;
      ++reload_failures_;
      in_bird_ = false;
      write_failed_ = true;
      return true;
    }
    std::string list;
    for (const uint32_t v : vips) list += (list.empty() ? "" : " ") + cfg::format_ipv4(v);
    HLOG_INFO("bgp: announcing %s", list.empty() ? "nothing" : list.c_str());
    wanted_ = vips;
    written_ = true;
    write_failed_ = false;
  }
  ++reloads_;
  if (std::optional<std::string> e = bird_configure(socket_path_, Millis(1000))) {
    if (*e != last_error_) HLOG_WARNING("bgp: %s (retrying)", e->c_str());
    last_error_ = *e;
    ++reload_failures_;
    in_bird_ = false;
    next_try_ = now + retry;
  } else {
    if (!last_error_.empty()) HLOG_INFO("bgp: BIRD reloaded %s", config_path_.c_str());
    last_error_.clear();
    in_bird_ = true;
  }
  return true;
}

}  // namespace lb::health
