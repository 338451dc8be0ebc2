// Over 500 lines on purpose: one epoll server whose parts (accept with its client limits, framed
// reads, dispatch, deferred replies, bounded writes) share one connection table and its deadlines.
#include "control_server.h"

#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <unordered_set>
#include <utility>
#include <vector>

#include "log.h"

namespace lb::health {

namespace {

constexpr uint64_t kListenId = 0;
constexpr uint64_t kWatchBit = uint64_t{1} << 63;
constexpr int kMaxJsonDepth = 32;
constexpr size_t kReadChunk = 65536;
constexpr size_t kReadPerTurn = size_t{256} * 1024;  // per connection: nobody starves the loop

std::runtime_error sys_error(const std::string& what, int err) {
  return std::runtime_error(what + ": " + std::strerror(err));
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path)
    throw std::runtime_error(path + ": too long for a unix socket (at most " +
                             std::to_string(sizeof a.sun_path - 1) + " bytes)");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

// mkdir -p of the socket's directory, 0755 for what it creates.
void make_parent(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    const std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
      throw sys_error("cannot create " + dir, errno);
  }
}

struct TooDeep {};
struct DuplicateKey {
  std::string key;
};

}  // namespace

Json error_reply(std::string_view code, const std::string& message) {
  return Json{{"ok", false}, {"code", std::string(code)}, {"error", message}};
}

// -- The socket ----------------------------------------------------------------------------

ControlServer::ControlServer(ControlOptions options) : options_(std::move(options)) {
  const std::string& path = options_.path;
  const sockaddr_un addr = unix_address(path);
  if (path.empty() || path[0] != '/')
    throw std::runtime_error("control socket '" + path + "': an absolute path is needed");
  make_parent(path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw std::runtime_error(path + " exists and is not a socket; not replacing it");
    // A socket file: in use by a live lb-healthd, or left by a dead one.
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) throw sys_error("socket", errno);
    const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    ::close(probe);
    if (rc == 0)
      throw std::runtime_error(
          "another process (lb-healthd of the same instance?) is listening "
          "on " +
          path);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      throw sys_error("cannot remove the stale socket " + path, errno);
    HLOG_INFO("removed the stale control socket %s", path.c_str());
  }
  listen_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_ < 0) throw sys_error("socket", errno);
  // The file is created with the mode asked for, never wider, even for an instant.
  const mode_t old_mask = ::umask(static_cast<mode_t>(~options_.mode & 0777));
  const int rc = ::bind(listen_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  ::umask(old_mask);
  try {
    if (rc != 0) throw sys_error("cannot bind " + path, bind_errno);
    if (::chmod(path.c_str(), static_cast<mode_t>(options_.mode)) != 0)
      throw sys_error("cannot chmod " + path, errno);
    if (!options_.owner.empty() || !options_.group.empty()) {
      const uid_t uid =
          options_.owner.empty() ? static_cast<uid_t>(-1) : lookup_user(options_.owner);
      const gid_t gid =
          options_.group.empty() ? static_cast<gid_t>(-1) : lookup_group(options_.group);
      if (::chown(path.c_str(), uid, gid) != 0)
        throw sys_error("cannot give " + path + " to " + options_.owner + ":" + options_.group,
                        errno);
    }
    if (::listen(listen_, 64) != 0) throw sys_error("cannot listen on " + path, errno);
    if (::stat(path.c_str(), &st) != 0) throw sys_error("stat " + path, errno);
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) throw sys_error("epoll_create1", errno);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenId;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, listen_, &ev) != 0) throw sys_error("epoll_ctl", errno);
  } catch (...) {
    if (epoll_ >= 0) ::close(epoll_);
    ::close(listen_);
    if (rc == 0) ::unlink(path.c_str());
    throw;
  }
}

ControlServer::~ControlServer() {
  while (!conns_.empty()) close_conn(conns_.begin()->first);
  if (listen_ >= 0) ::close(listen_);
  if (epoll_ >= 0) ::close(epoll_);
  // Only our own socket: another lb-healthd may have replaced it meanwhile.
  struct stat st {};
  if (::lstat(options_.path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
    ::unlink(options_.path.c_str());
}

void ControlServer::watch(int fd) {
  if (watched_.count(fd) != 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWatchBit | static_cast<uint64_t>(fd);
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) == 0) watched_[fd] = true;
}

bool ControlServer::ready(const Conn& c) const {
  return !c.deferred && !c.closing && !c.dead && c.out_pos == c.out.size() &&
         (c.in.find('\n') != std::string::npos || c.in.size() > options_.max_request ||
          (c.read_closed && !c.in.empty()));
}

TimePoint ControlServer::next_deadline() const {
  TimePoint next = accept_paused_until_.value_or(TimePoint::max());
  for (const auto& [id, c] : conns_) {
    if (ready(c)) return TimePoint::min();  // a request is waiting in the buffer
    if (!c.deferred) next = std::min(next, c.last_activity + options_.idle_timeout);
  }
  return next;
}

namespace {

// The peer of a unix socket; {0, (uid_t)-1} when the kernel does not say.
ucred peer_of(int fd) {
  ucred cred{};
  cred.uid = static_cast<uid_t>(-1);
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    cred.pid = 0;
    cred.uid = static_cast<uid_t>(-1);
  }
  return cred;
}

}  // namespace

void ControlServer::client_log(ConnId id, LogLevel level, const char* fmt, ...) {
  if (!log_enabled(level)) return;
  const auto it = conns_.find(id);
  char message[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(message, sizeof message, fmt, args);
  va_end(args);
  peer_log(it != conns_.end() ? it->second.pid : 0,
           it != conns_.end() ? it->second.uid : static_cast<uid_t>(-1),
           "client " + std::to_string(id), level, message);
}

void ControlServer::peer_log(pid_t pid, uid_t uid, const std::string& who, LogLevel level,
                             const std::string& message) {
  if (!log_enabled(level)) return;
  uint64_t held = 0;
  if (!client_lines_.allow(uid, Clock::now(), held)) return;
  const std::string note = held == 0 ? ""
                                     : " (" + std::to_string(held) + " more line(s) about uid " +
                                           std::to_string(uid) + "'s clients were held back)";
  // log() escapes what the client sent (CR, LF, escape sequences) with the rest of the line.
  log(level, "control socket: %s (pid %d, uid %d): %s%s", who.c_str(), static_cast<int>(pid),
      static_cast<int>(uid), message.c_str(), note.c_str());
}

void ControlServer::pause_accepting(TimePoint now, int err) {
  epoll_event ev{};
  ev.events = 0;  // registered, but never ready
  ev.data.u64 = kListenId;
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, listen_, &ev);
  if (!accept_failing_)  // once per episode
    HLOG_WARNING("control socket: accept: %s: new clients wait, tried again every %lld ms",
                 std::strerror(err), static_cast<long long>(kAcceptPause.count()));
  accept_failing_ = true;
  accept_paused_until_ = now + kAcceptPause;
}

void ControlServer::resume_accepting(TimePoint now) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenId;
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, listen_, &ev);
  accept_paused_until_.reset();
  accept_all(now);  // pauses again at once if it still cannot
}

void ControlServer::accept_all(TimePoint now) {
  for (int i = 0; i < 64; ++i) {
    const int fd = ::accept4(listen_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        pause_accepting(now, errno);
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        HLOG_WARNING("control socket: accept: %s", std::strerror(errno));
      }
      return;
    }
    if (accept_failing_) {
      HLOG_INFO("control socket: accepting clients again");
      accept_failing_ = false;
    }
    // Full: the client silent for longest makes room (idle or slow, it holds a slot another
    // needs: 500 idle connections must not lock `lbctl status` out); refused only when every
    // slot has a request in flight.
    if (conns_.size() >= options_.max_clients) evict_quietest(now);
    if (conns_.size() >= options_.max_clients) {
      const std::string line =
          error_reply("busy", "too many clients (" + std::to_string(options_.max_clients) +
                                  "): try again later")
              .dump() +
          "\n";
      [[maybe_unused]] const ssize_t n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
      const ucred peer = peer_of(fd);
      ::close(fd);
      peer_log(peer.pid, peer.uid, "a new client", LogLevel::kWarning,
               "refused: " + std::to_string(conns_.size()) + " clients already connected");
      continue;
    }
    const ConnId id = next_id_++;
    Conn c;
    c.fd = fd;
    const ucred peer = peer_of(fd);
    c.pid = peer.pid;
    c.uid = peer.uid;
    c.last_activity = now;
    c.events = EPOLLIN;
    epoll_event ev{};
    ev.events = c.events;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      HLOG_WARNING("control socket: epoll_ctl: %s", std::strerror(errno));
      ::close(fd);
      continue;
    }
    conns_.emplace(id, std::move(c));
    HLOG_DEBUG("control socket: client %llu connected (pid %d, uid %d)",
               static_cast<unsigned long long>(id), static_cast<int>(peer.pid),
               static_cast<int>(peer.uid));
  }
}

void ControlServer::evict_quietest(TimePoint now) {
  // A client that just connected and sent its request has bytes waiting that this thread has
  // not read yet: it is not quiet, and evicting it would fail an `lbctl status` in a crowd of
  // idle connections. Unless a reply to it waits to be written: then its requests wait unread
  // because it does not read its replies (reading stops until they are out), and it is quiet
  // since its reply last moved (last_activity) — else clients that send without reading would
  // hold every slot. Among the rest, those that never sent a well-formed request go first, then
  // the longest silent; ties go to the older connection (std::map: ascending ids).
  const auto unread = [](int fd) {
    int n = 0;
    return ::ioctl(fd, FIONREAD, &n) == 0 && n > 0;
  };
  auto victim = conns_.end();
  for (auto it = conns_.begin(); it != conns_.end(); ++it) {
    const Conn& c = it->second;
    const bool replies_unread = c.out_pos < c.out.size();
    if (c.deferred || (!replies_unread && unread(c.fd))) continue;
    if (victim == conns_.end() ||
        std::make_pair(c.spoke, c.last_activity) <
            std::make_pair(victim->second.spoke, victim->second.last_activity))
      victim = it;
  }
  if (victim == conns_.end()) return;
  Conn& c = victim->second;
  if (c.out_pos == c.out.size()) {
    queue(c,
          error_reply("evicted", "disconnected to make room for a new client (" +
                                     std::to_string(options_.max_clients) +
                                     " connected); this one was the quietest"),
          Json());
    write_to(c, now);  // best effort: it is closed either way
  }
  ++evicted_;
  client_log(
      victim->first, LogLevel::kWarning,
      "evicted: %zu clients connected, this one quiet for %lld ms", conns_.size(),
      static_cast<long long>(std::chrono::duration_cast<Millis>(now - c.last_activity).count()));
  close_conn(victim->first);
}

void ControlServer::read_from(Conn& c, TimePoint now) {
  size_t total = 0;
  char buf[kReadChunk];
  // Never more than a request's worth beyond what is buffered: the buffer stays bounded.
  while (total < kReadPerTurn && c.in.size() <= options_.max_request) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      total += static_cast<size_t>(n);
      c.last_activity = now;
      continue;
    }
    if (n == 0) {
      c.read_closed = true;
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) c.dead = true;
    return;
  }
}

void ControlServer::queue(Conn& c, Json reply, const Json& id) {
  if (!id.is_null()) reply["id"] = id;
  // Replace, never throw, on invalid UTF-8 (a name echoed from a request, say).
  c.out += reply.dump(-1, ' ', false, Json::error_handler_t::replace);
  c.out += '\n';
}

void ControlServer::dispatch(ConnId id, Conn& c, const std::string& line, const Handler& handler) {
  const auto malformed = [&](const std::string& why) {
    queue(c, error_reply("malformed", "malformed request: " + why), Json());
    // The start of what was sent, for whoever reads the log; escaped there.
    const std::string start = line.size() > 64 ? line.substr(0, 64) + "..." : line;
    client_log(id, LogLevel::kWarning, "malformed request: %s: %s", why.c_str(), start.c_str());
  };
  if (line.find('\0') != std::string::npos) {
    // nlohmann-json would stop at the NUL and take what came before for the whole request.
    malformed("contains a NUL byte");
    return;
  }
  Json request;
  try {
    // Each open object's keys: a key given twice is refused (nlohmann-json would keep the last,
    // so {"name": "web", "name": "api"} would act on a service the sender may not have meant).
    std::vector<std::unordered_set<std::string>> keys;
    request = Json::parse(line, [&keys](int depth, Json::parse_event_t event, Json& parsed) {
      if (depth > kMaxJsonDepth) throw TooDeep{};
      if (event == Json::parse_event_t::object_start) {
        keys.emplace_back();
      } else if (event == Json::parse_event_t::object_end) {
        keys.pop_back();
      } else if (event == Json::parse_event_t::key && !keys.empty()) {
        if (!keys.back().insert(parsed.get_ref<const std::string&>()).second)
          throw DuplicateKey{parsed.get<std::string>()};
      }
      return true;
    });
  } catch (const TooDeep&) {
    malformed("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return;
  } catch (const DuplicateKey& d) {
    const std::string key = d.key.size() > 64 ? d.key.substr(0, 64) + "..." : d.key;
    malformed("key " + Json(key).dump(-1, ' ', false, Json::error_handler_t::replace) +
              " given twice in one object");
    return;
  } catch (const Json::exception& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 1: syntax error ..."
    if (const size_t p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    if (what.size() > 200) what = what.substr(0, 197) + "...";
    malformed("not JSON (" + what + ")");
    return;
  }
  if (!request.is_object()) {
    malformed("expected a JSON object, found " + std::string(request.type_name()));
    return;
  }
  c.spoke = true;
  const Json req_id = request.contains("id") ? request["id"] : Json();
  std::optional<Json> reply;
  try {
    reply = handler(id, request);
  } catch (const std::exception& e) {
    client_log(id, LogLevel::kError, "request failed: %s", e.what());
    reply = error_reply("internal", std::string("internal error: ") + e.what());
  }
  if (reply) {
    queue(c, std::move(*reply), req_id);
  } else {
    c.deferred = true;
    c.deferred_id = req_id;
  }
}

void ControlServer::process(ConnId id, Conn& c, const Handler& handler) {
  // One request at a time: the next is read once the previous reply is out.
  while (!c.dead && !c.closing && !c.deferred && c.out_pos == c.out.size()) {
    const size_t nl = c.in.find('\n');
    std::string line;
    if (nl == std::string::npos || nl > options_.max_request) {
      if (c.in.size() > options_.max_request) {
        queue(c,
              error_reply("too_large", "request too large: no end of line within " +
                                           std::to_string(options_.max_request) + " bytes"),
              Json());
        client_log(id, LogLevel::kWarning,
                   "sent more than %zu bytes without a newline: disconnected",
                   options_.max_request);
        c.in.clear();
        c.closing = true;
        return;
      }
      if (!c.read_closed || c.in.empty()) return;
      line = std::move(c.in);  // the last request may end with the connection
      c.in.clear();
    } else {
      line = c.in.substr(0, nl);
      c.in.erase(0, nl + 1);
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    dispatch(id, c, line, handler);
  }
}

void ControlServer::serve(ConnId id, Conn& c, const Handler& handler, TimePoint now) {
  // Each reply that goes out at once lets the next buffered request in; bounded per turn.
  for (int i = 0; i < 64 && ready(c); ++i) {
    process(id, c, handler);
    write_to(c, now);
  }
  write_to(c, now);
}

void ControlServer::write_to(Conn& c, TimePoint now) {
  while (c.out_pos < c.out.size()) {
    const ssize_t n =
        ::send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos, MSG_NOSIGNAL);
    if (n > 0) {
      c.out_pos += static_cast<size_t>(n);
      c.last_activity = now;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    c.dead = true;  // EPIPE, ECONNRESET: the client has gone
    return;
  }
  if (c.out_pos == c.out.size()) {
    c.out.clear();
    c.out_pos = 0;
  } else if (c.out.size() - c.out_pos > options_.max_output) {
    c.dead = true;
  }
}

bool ControlServer::update(ConnId id, Conn& c) {
  const bool flushed = c.out_pos == c.out.size();
  const bool done =
      c.dead || (flushed && c.closing) || (flushed && c.read_closed && !c.deferred && c.in.empty());
  if (done) {
    close_conn(id);
    return false;
  }
  uint32_t want = 0;
  if (!c.read_closed && !c.closing && !c.deferred && flushed && c.in.size() <= options_.max_request)
    want |= EPOLLIN;
  if (!flushed) want |= EPOLLOUT;
  if (want != c.events) {
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev) != 0) {
      close_conn(id);
      return false;
    }
    c.events = want;
  }
  return true;
}

void ControlServer::close_conn(ConnId id) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, it->second.fd, nullptr);
  ::close(it->second.fd);
  conns_.erase(it);
  HLOG_DEBUG("control socket: client %llu disconnected", static_cast<unsigned long long>(id));
}

void ControlServer::service(TimePoint now, const Handler& handler) {
  if (accept_paused_until_ && now >= *accept_paused_until_) resume_accepting(now);
  epoll_event events[64];
  for (int round = 0; round < 8; ++round) {
    const int n = ::epoll_wait(epoll_, events, 64, 0);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == kListenId) {
        accept_all(now);
        continue;
      }
      if ((key & kWatchBit) != 0) continue;  // the caller's own descriptor
      const auto it = conns_.find(key);
      if (it == conns_.end()) continue;
      Conn& c = it->second;
      const uint32_t ev = events[i].events;
      if ((ev & EPOLLOUT) != 0) write_to(c, now);
      if ((ev & EPOLLIN) != 0) read_from(c, now);
      // Gone entirely (not a half-close): whatever it asked, nobody reads the answer.
      if ((ev & (EPOLLHUP | EPOLLERR)) != 0 && (ev & EPOLLIN) == 0) c.dead = true;
      serve(key, c, handler, now);
      update(key, c);
    }
    if (n < 64) break;
  }
  // Requests already buffered (behind a reply that has now gone out, or a deferred one that was
  // answered) need no event to be served.
  std::vector<ConnId> waiting;
  for (const auto& [id, c] : conns_) {
    if (ready(c)) waiting.push_back(id);
  }
  for (const ConnId id : waiting) {
    const auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    serve(id, it->second, handler, now);
    update(id, it->second);
  }
  // Lines held back while a client flooded, said once it has stopped.
  if (now >= next_quiet_check_) {
    next_quiet_check_ = now + Millis(1000);
    for (const auto& [uid, held] : client_lines_.take_quiet(now)) {
      HLOG_WARNING("control socket: %llu line(s) about uid %d's clients were held back",
                   static_cast<unsigned long long>(held), static_cast<int>(uid));
    }
  }
  // Silent clients.
  std::vector<ConnId> idle;
  for (const auto& [id, c] : conns_) {
    if (!c.deferred && now - c.last_activity >= options_.idle_timeout) idle.push_back(id);
  }
  for (const ConnId id : idle) {
    Conn& c = conns_.at(id);
    if (c.out_pos == c.out.size()) {
      queue(
          c,
          error_reply("idle", "no request within " + std::to_string(options_.idle_timeout.count()) +
                                  " ms: disconnecting"),
          Json());
      write_to(c, now);  // best effort: it is closed either way
    }
    HLOG_DEBUG("control socket: client %llu idle: disconnected",
               static_cast<unsigned long long>(id));
    close_conn(id);
  }
}

void ControlServer::reply(ConnId id, Json reply) {
  const auto it = conns_.find(id);
  if (it == conns_.end() || !it->second.deferred) return;
  Conn& c = it->second;
  c.deferred = false;
  queue(c, std::move(reply), c.deferred_id);
  c.deferred_id = Json();
  const TimePoint now = Clock::now();
  write_to(c, now);
  c.last_activity = now;
  update(id, c);
}

void ControlServer::reply_all_deferred(const Json& r) {
  std::vector<ConnId> ids;
  for (const auto& [id, c] : conns_) {
    if (c.deferred) ids.push_back(id);
  }
  for (const ConnId id : ids) reply(id, r);
}

// -- The protocol ----------------------------------------------------------------------------

}  // namespace lb::health
