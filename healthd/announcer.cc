#include "announcer.h"

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
               ? "lbd's heartbeat has not moved since lb-healthd attached"
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

int64_t left_ms(TimePoint deadline) {
  return std::max<int64_t>(0, std::chrono::duration_cast<Millis>(deadline - Clock::now()).count());
}

// Takes BIRD's complete lines off `buffer` into `text` up to a reply's last line ("NNNN text":
// a code then a space; "NNNN-text" and " text" continue). Returns that line's code once seen.
std::optional<int> take_reply(std::string& buffer, std::string& text) {
  size_t eol;
  while ((eol = buffer.find('\n')) != std::string::npos) {
    const std::string line = buffer.substr(0, eol);
    buffer.erase(0, eol + 1);
    const bool coded = line.size() >= 5 && std::all_of(line.begin(), line.begin() + 4,
                                                       [](char c) { return c >= '0' && c <= '9'; });
    if (!text.empty()) text += " / ";
    text += coded ? line.substr(5) : line.substr(line.empty() ? 0 : 1);
    if (coded && line[4] == ' ') return std::stoi(line.substr(0, 4));
  }
  return std::nullopt;
}

}  // namespace

BirdExchange::BirdExchange(const std::string& socket, TimePoint deadline) : deadline_(deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() >= sizeof addr.sun_path) {
    error_ = "socket path too long: " + socket;
    return;
  }
  std::memcpy(addr.sun_path, socket.c_str(), socket.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    error_ = std::string("socket: ") + std::strerror(errno);
    return;
  }
  // A local stream socket connects at once or fails: no one listening, or (EAGAIN) a backlog
  // BIRD does not accept from.
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINPROGRESS) {
      phase_ = Phase::kConnecting;
      return;
    }
    fail("cannot reach BIRD at " + socket + ": " + std::strerror(errno));
  }
}

BirdExchange::~BirdExchange() {
  if (fd_ >= 0) ::close(fd_);
}

void BirdExchange::fail(std::string why) {
  error_ = std::move(why);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

short BirdExchange::events() const {
  return phase_ == Phase::kConnecting || phase_ == Phase::kSending ? POLLOUT : POLLIN;
}

bool BirdExchange::advance(TimePoint now) {
  while (fd_ >= 0) {
    if (phase_ == Phase::kConnecting) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, 0) == 0) break;
      int error = 0;
      socklen_t len = sizeof error;
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &len);
      if (error != 0) {
        fail(std::string("cannot reach BIRD: ") + std::strerror(error));
        break;
      }
      phase_ = Phase::kGreeting;
      continue;
    }
    if (phase_ == Phase::kSending) {
      const ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
      if (n <= 0) {
        fail(std::string("write: ") + std::strerror(errno));
        break;
      }
      out_.erase(0, static_cast<size_t>(n));
      if (out_.empty()) phase_ = Phase::kReply;
      continue;
    }
    // kGreeting, kReply: read what has come, and act on a reply once its last line is in.
    if (const std::optional<int> code = take_reply(in_, text_)) {
      if (phase_ == Phase::kGreeting) {
        if (*code != 1) {
          fail("unexpected greeting from BIRD: " + text_);
          break;
        }
        text_.clear();
        phase_ = Phase::kSending;
        continue;
      }
      // 0003 Reconfigured, 0004 Reconfiguration in progress, 0019 Nothing to do; 8xxx/9xxx
      // errors (e.g. 8002 for a syntax error, with file:line).
      if (*code >= 8000) {
        fail("BIRD refused: " + text_);
      } else {
        ::close(fd_);
        fd_ = -1;
      }
      break;
    }
    char chunk[1024];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
    if (n <= 0) {
      fail(n == 0 ? "BIRD closed the connection" : std::string("read: ") + std::strerror(errno));
      break;
    }
    in_.append(chunk, static_cast<size_t>(n));
    if (in_.size() > 65536) fail("BIRD's answer is too long");
  }
  if (fd_ >= 0 && now >= deadline_) {
    timed_out_ = true;
    fail(phase_ == Phase::kGreeting ? "BIRD did not greet in time (stopped or stuck?)"
                                    : "no answer from BIRD in time (stopped or stuck?)");
  }
  return fd_ < 0;
}

std::optional<std::string> bird_configure(const std::string& socket, Millis timeout) {
  BirdExchange x(socket, Clock::now() + timeout);
  while (!x.advance(Clock::now())) {
    pollfd p{x.fd(), x.events(), 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms(x.deadline()), 1000)) + 1);
  }
  return x.error();
}

Announcer::Announcer(cfg::Config config, std::string instance, Millis timeout)
    : config_(std::move(config)),
      instance_(std::move(instance)),
      config_path_(cfg::bird_config_path(config_, instance_)),
      socket_path_(cfg::bird_socket_path(config_, instance_)),
      timeout_(timeout) {}

Millis Announcer::waiting(TimePoint now) const {
  if (!exchange_) return Millis(0);
  return std::max(Millis(0), std::chrono::duration_cast<Millis>(now - started_));
}

void Announcer::start(TimePoint now) {
  ++reloads_;
  sent_version_ = file_version_;
  started_ = now;
  exchange_ = std::make_unique<BirdExchange>(socket_path_, now + timeout_);
  if (exchange_->advance(now)) finish(now);
}

void Announcer::finish(TimePoint now) {
  const std::optional<std::string> e = exchange_->error();
  const bool timed_out = exchange_->timed_out();
  exchange_.reset();
  if (e) {
    if (timed_out) {
      ++timeouts_;
      // Said once per episode: the checks go on meanwhile (the loop never waits for BIRD).
      if (*e != last_error_) {
        HLOG_WARNING("bgp: BIRD at %s: %s after %lld ms: retrying; health checks go on",
                     socket_path_.c_str(), e->c_str(), static_cast<long long>(timeout_.count()));
      }
    } else if (*e != last_error_) {
      HLOG_WARNING("bgp: %s (retrying)", e->c_str());
    }
    last_error_ = *e;
    ++reload_failures_;
    in_bird_ = false;
    // Paced from when this attempt ended, not from when it started: a BIRD that takes the
    // whole timeout to fail is not asked again at once.
    next_try_ = now + retry_;
  } else if (sent_version_ == file_version_) {
    if (!last_error_.empty()) HLOG_INFO("bgp: BIRD reloaded %s", config_path_.c_str());
    last_error_.clear();
    in_bird_ = true;
  }
  // The file changed while BIRD was being told: tell it again, at once (a change is never
  // paced; a BIRD that is not answering costs one timeout per change, never a blocked loop).
  if (sent_version_ != file_version_ && written_) start(now);
}

void Announcer::advance(TimePoint now) {
  if (exchange_ && exchange_->advance(now)) finish(now);
}

bool Announcer::set(const std::vector<uint32_t>& vips, TimePoint now, Millis retry) {
  retry_ = retry;
  advance(now);
  const bool changed = !written_ || vips != wanted_;
  if (!changed && (in_bird_ || exchange_ || now < next_try_)) return false;
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
    ++file_version_;
    in_bird_ = false;
    // One in flight already: it asks again for this file once it ends (finish()).
    if (exchange_) return true;
  }
  start(now);
  return true;
}

}  // namespace lb::health
