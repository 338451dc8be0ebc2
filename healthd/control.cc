#include "control.h"

#include <grp.h>
#include <pwd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "daemon.h"
#include "lb_version.h"
#include "log.h"

namespace lb::health {

namespace {

constexpr uint64_t kListenId = 0;
constexpr uint64_t kWatchBit = uint64_t{1} << 63;
constexpr int64_t kMaxDrainTimeoutMs = 86400000;  // healthd.drain_timeout_ms's range
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

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A numeric uid or gid (all digits); (uid_t)-1 means "unchanged" to chown, so it is refused too.
uint32_t numeric_id(const std::string& digits, const char* what) {
  const size_t first = digits.find_first_not_of('0');
  if (first != std::string::npos &&
      (digits.size() - first > 10 || std::stoull(digits) >= 0xffffffffull))
    throw std::runtime_error(std::string(what) + " " + digits + " is out of range");
  return first == std::string::npos ? 0 : static_cast<uint32_t>(std::stoull(digits));
}

struct TooDeep {};

}  // namespace

uid_t lookup_user(const std::string& name) {
  if (all_digits(name)) return static_cast<uid_t>(numeric_id(name, "uid"));
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  const int rc = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0) throw sys_error("cannot look up user '" + name + "'", rc);
  if (!found) throw std::runtime_error("no such user '" + name + "'");
  return pw.pw_uid;
}

gid_t lookup_group(const std::string& name) {
  if (all_digits(name)) return static_cast<gid_t>(numeric_id(name, "gid"));
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  const int rc = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
  if (rc != 0) throw sys_error("cannot look up group '" + name + "'", rc);
  if (!found) throw std::runtime_error("no such group '" + name + "'");
  return gr.gr_gid;
}

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
  TimePoint next = TimePoint::max();
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

void ControlServer::accept_all(TimePoint now) {
  for (int i = 0; i < 64; ++i) {
    const int fd = ::accept4(listen_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        HLOG_WARNING("control socket: accept: %s", std::strerror(errno));
      return;
    }
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
    request = Json::parse(line, [](int depth, Json::parse_event_t, Json&) {
      if (depth > kMaxJsonDepth) throw TooDeep{};
      return true;
    });
  } catch (const TooDeep&) {
    malformed("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
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

namespace {

constexpr const char* kVersion = LB_VERSION;
constexpr int64_t kDefaultWaitMs = 5000;
constexpr int64_t kMaxWaitMs = 60000;

struct BadRequest {
  std::string code;
  std::string message;
};

[[noreturn]] void bad(std::string code, std::string message) {
  throw BadRequest{std::move(code), std::move(message)};
}

std::string shorten(const std::string& s) {
  return s.size() > 64 ? s.substr(0, 61) + "..." : s;
}

// Refuses any field the command does not take: a misspelt option must not be ignored.
void allow(const Json& req, const std::string& cmd, std::initializer_list<const char*> fields,
           bool change) {
  for (auto it = req.begin(); it != req.end(); ++it) {
    const std::string& k = it.key();
    if (k == "cmd" || k == "id") continue;
    if (change && (k == "wait" || k == "timeout_ms")) continue;
    if (std::any_of(fields.begin(), fields.end(), [&](const char* f) { return k == f; })) continue;
    std::string allowed;
    for (const char* f : fields) allowed += std::string(allowed.empty() ? "" : ", ") + f;
    if (change) allowed += std::string(allowed.empty() ? "" : ", ") + "wait, timeout_ms";
    bad("bad_request", "unknown field '" + shorten(k) + "' for " + cmd +
                           (allowed.empty() ? " (it takes none)" : " (allowed: " + allowed + ")"));
  }
}

const Json& field(const Json& req, const char* key) {
  const auto it = req.find(key);
  if (it == req.end()) bad("bad_request", std::string("missing field '") + key + "'");
  return *it;
}

std::string string_field(const Json& req, const char* key) {
  const Json& v = field(req, key);
  if (!v.is_string())
    bad("bad_request",
        std::string("field '") + key + "': expected a string, found " + v.type_name());
  return v.get<std::string>();
}

const Json& object_field(const Json& req, const char* key) {
  const Json& v = field(req, key);
  if (!v.is_object())
    bad("bad_request",
        std::string("field '") + key + "': expected an object, found " + v.type_name());
  return v;
}

uint32_t address_field(const Json& req) {
  const std::string text = string_field(req, "address");
  const std::optional<uint32_t> a = cfg::parse_ipv4(text);
  if (!a)
    bad("invalid", "malformed IPv4 address '" + shorten(text) +
                       "' (expected a.b.c.d, decimal, no leading zeros)");
  return *a;
}

uint16_t port_field(const Json& req) {
  const Json& v = field(req, "port");
  if (!v.is_number_integer())
    bad("invalid", std::string("port: expected an integer, found ") + v.type_name());
  const auto p = v.get<int64_t>();
  if (p < 1 || p > 65535) bad("invalid", "port: value " + v.dump() + " is out of range 1..65535");
  return static_cast<uint16_t>(p);
}

bool wait_field(const Json& req) {
  const auto it = req.find("wait");
  if (it == req.end()) return false;
  if (!it->is_boolean()) bad("bad_request", "field 'wait': expected true or false");
  return it->get<bool>();
}

Millis timeout_field(const Json& req) {
  const auto it = req.find("timeout_ms");
  if (it == req.end()) return Millis(kDefaultWaitMs);
  if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > kMaxWaitMs)
    bad("bad_request", "field 'timeout_ms': expected an integer 1.." + std::to_string(kMaxWaitMs));
  return Millis(it->get<int64_t>());
}

std::string endpoint(uint32_t a, uint16_t p) {
  return cfg::format_ipv4(a) + ":" + std::to_string(p);
}

std::string names_of(const Json& services) {
  std::string out;
  for (const Json& s : services) {
    if (s.contains("name") && s["name"].is_string())
      out += (out.empty() ? "" : ", ") + s["name"].get<std::string>();
  }
  return out.empty() ? "none" : out;
}

Json* find_service(Json& services, const std::string& name) {
  for (Json& s : services) {
    if (s.is_object() && s.value("name", std::string()) == name) return &s;
  }
  return nullptr;
}

Refusal no_service(const Json& services, const std::string& name) {
  return Refusal{"not_found",
                 "unknown service '" + shorten(name) + "' (services: " + names_of(services) + ")"};
}

// The index of backend address:port in `service`, or -1.
long find_backend(const Json& service, uint32_t address, uint16_t port) {
  const auto it = service.find("backends");
  if (it == service.end() || !it->is_array()) return -1;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& b = (*it)[i];
    if (!b.is_object() || !b.contains("address") || !b["address"].is_string()) continue;
    if (cfg::parse_ipv4(b["address"].get<std::string>()) != address) continue;
    if (b.value("port", Json()) == Json(port)) return static_cast<long>(i);
  }
  return -1;
}

Refusal no_backend(const Json& service, const std::string& name, uint32_t a, uint16_t p) {
  std::string list;
  for (const Json& b : service.value("backends", Json::array())) {
    if (b.is_object() && b.contains("address") && b.contains("port"))
      list += (list.empty() ? "" : ", ") + b["address"].get<std::string>() + ":" + b["port"].dump();
  }
  return Refusal{"not_found", "service '" + name + "' has no backend " + endpoint(a, p) +
                                  " (backends: " + (list.empty() ? "none" : list) + ")"};
}

std::optional<Json> finish(Daemon& d, ControlServer& server, ControlServer::ConnId id,
                           const ChangeResult& r, bool wait, Millis timeout) {
  if (!r.ok) return error_reply(r.refusal.code, r.refusal.message);
  Json reply = {{"ok", true}, {"changes", r.changes}, {"persisted", r.persisted}};
  if (!wait) return reply;
  d.when_applied(r.mark, timeout, [&server, id, reply](const AckResult& a) {
    Json out = reply;
    out["lbd"] = {{"applied", a.ok},
                  {"generation", a.generation},
                  {"applied_generation", a.applied_generation},
                  {"waited_ms", a.waited_ms}};
    if (!a.ok) {
      out["ok"] = false;
      out["code"] = a.code;
      out["error"] = a.error;
      out["accepted"] = true;  // lb-healthd runs it and has kept it; lbd has not (yet)
    }
    server.reply(id, std::move(out));
  });
  return std::nullopt;
}

Json backend_status(const BackendStatus& b) {
  Json j{{"address", cfg::format_ipv4(b.address)},
         {"port", b.port},
         {"weight", b.weight},
         {"admin", cfg::to_string(b.admin)},
         {"health", b.health == Health::kUp ? "up" : "down"},
         {"live", to_string(b.live)},
         {"last_result", b.last_result},
         {"last_http_status", b.last_http_status},
         {"last_latency_ms", b.last_latency_ms},
         {"consecutive_successes", b.consecutive_successes},
         {"consecutive_failures", b.consecutive_failures},
         {"in_state_ms", b.in_state_ms},
         {"last_change_unix_ms", b.last_change_unix_ms},
         {"checks", b.checks},
         {"failed_checks", b.failed_checks},
         {"transitions", b.transitions},
         {"passive_syn_rst", b.passive_syn_rst},
         {"passive_syn_timeout", b.passive_syn_timeout},
         {"check_running", b.check_running},
         {"next_check_in_ms", b.check_running ? 0 : b.next_check_in_ms}};
  if (b.removed) {
    // Removed by a reload, draining in lbd until its flows end (or drain_left_ms has passed).
    j["removed"] = true;
    j["flows_active"] = b.flows < 0 ? Json() : Json(b.flows);
    j["drain_left_ms"] = b.drain_left_ms;
  }
  return j;
}

Json status(const Daemon& d) {
  const DaemonStatus st = d.snapshot();
  char epoch[24];
  std::snprintf(epoch, sizeof epoch, "%016llx", static_cast<unsigned long long>(st.epoch));
  Json out = {{"ok", true}};
  out["healthd"] = {{"pid", static_cast<int64_t>(getpid())},
                    {"version", kVersion},
                    {"config_file", st.config_file},
                    {"state_file", st.state_file},
                    {"instance", st.instance},
                    {"segment", st.segment},
                    {"reloads", st.reloads},
                    {"reload_failures", st.reload_failures},
                    {"transitions", st.transitions},
                    {"runtime_changes", d.runtime_changes()}};
  out["lbd"] = {{"attached", st.attached},
                {"epoch", st.attached ? epoch : ""},
                {"pid", st.lbd_pid},
                {"generation_sent", st.generation},
                {"received_generation", st.lbd_received_generation},
                {"applied_generation", st.lbd_applied_generation},
                {"rejected_generation", st.lbd_rejected_generation},
                {"heartbeat_age_ms", st.lbd_heartbeat_age_ms},
                {"updates_sent", st.updates_sent},
                {"ring_full", st.ring_full}};
  Json services = Json::array();
  for (const ServiceStatus& ss : st.services) {
    const auto& cs = d.config().services;
    const auto it = std::find_if(cs.begin(), cs.end(),
                                 [&](const cfg::ServiceConfig& c) { return c.name == ss.name; });
    Json s = it != cs.end()
                 ? service_to_json(*it)
                 : Json{{"name", ss.name}, {"vip", cfg::format_ipv4(ss.vip)}, {"port", ss.port}};
    if (ss.removed) s["removed"] = true;  // by a reload: draining until its flows end
    s["fail_open"] = ss.fail_open;
    s["active"] = ss.active;
    s["pending"] = ss.pending;
    s["last_generation"] = ss.last_generation;
    Json backends = Json::array();
    for (const BackendStatus& b : ss.backends) backends.push_back(backend_status(b));
    s["backends"] = std::move(backends);
    services.push_back(std::move(s));
  }
  out["services"] = std::move(services);
  return out;
}

std::optional<Json> dispatch_command(Daemon& d, ControlServer& server, ControlServer::ConnId id,
                                     const Json& req) {
  const auto c = req.find("cmd");
  if (c == req.end()) bad("bad_request", "missing field 'cmd'");
  if (!c->is_string())
    bad("bad_request", std::string("field 'cmd': expected a string, found ") + c->type_name());
  const std::string cmd = c->get<std::string>();

  if (cmd == "ping") {
    allow(req, cmd, {}, false);
    return Json{{"ok", true},
                {"version", kVersion},
                {"pid", static_cast<int64_t>(getpid())},
                {"instance", d.snapshot().instance},
                {"config_file", d.options().config_path}};
  }
  if (cmd == "status") {
    allow(req, cmd, {}, false);
    return status(d);
  }
  if (cmd == "backend.add") {
    allow(req, cmd, {"service", "backend"}, true);
    const std::string name = string_field(req, "service");
    const Json backend = object_field(req, "backend");
    const bool wait = wait_field(req);
    const Millis timeout = timeout_field(req);
    std::string label = "backend.add " + name;
    const std::optional<uint32_t> addr =
        backend.contains("address") && backend["address"].is_string()
            ? cfg::parse_ipv4(backend["address"].get<std::string>())
            : std::nullopt;
    const bool has_port = backend.contains("port") && backend["port"].is_number_integer();
    if (addr && has_port) label += " " + cfg::format_ipv4(*addr) + ":" + backend["port"].dump();
    const ChangeResult r = d.change(label, [&](Json& services) -> std::optional<Refusal> {
      Json* s = find_service(services, name);
      if (!s) return no_service(services, name);
      if (addr && has_port) {
        const int64_t port = backend["port"].get<int64_t>();
        if (port >= 1 && port <= 65535 && find_backend(*s, *addr, static_cast<uint16_t>(port)) >= 0)
          return Refusal{"exists", "service '" + name + "' already has backend " +
                                       endpoint(*addr, static_cast<uint16_t>(port)) +
                                       " (use backend set to change it)"};
      }
      if (!s->contains("backends") || !(*s)["backends"].is_array())
        (*s)["backends"] = Json::array();
      (*s)["backends"].push_back(backend);
      return std::nullopt;
    });
    return finish(d, server, id, r, wait, timeout);
  }
  if (cmd == "backend.remove" || cmd == "backend.set") {
    const bool set = cmd == "backend.set";
    if (set) {
      allow(req, cmd, {"service", "address", "port", "weight", "state", "initial_state"}, true);
    } else {
      allow(req, cmd, {"service", "address", "port"}, true);
    }
    const std::string name = string_field(req, "service");
    const uint32_t addr = address_field(req);
    const uint16_t port = port_field(req);
    const bool wait = wait_field(req);
    const Millis timeout = timeout_field(req);
    Json patch = Json::object();
    if (set) {
      for (const char* k : {"weight", "state", "initial_state"}) {
        if (req.contains(k)) patch[k] = req[k];  // null unsets (initial_state)
      }
      if (patch.empty())
        bad("bad_request", "backend.set: nothing to set (weight, state, initial_state)");
    }
    const ChangeResult r = d.change(cmd + " " + name + " " + endpoint(addr, port),
                                    [&](Json& services) -> std::optional<Refusal> {
                                      Json* s = find_service(services, name);
                                      if (!s) return no_service(services, name);
                                      const long i = find_backend(*s, addr, port);
                                      if (i < 0) return no_backend(*s, name, addr, port);
                                      Json& list = (*s)["backends"];
                                      if (set) {
                                        list[static_cast<size_t>(i)].merge_patch(patch);
                                      } else {
                                        list.erase(static_cast<size_t>(i));
                                      }
                                      return std::nullopt;
                                    });
    return finish(d, server, id, r, wait, timeout);
  }
  if (cmd == "service.add") {
    allow(req, cmd, {"service"}, true);
    Json service = object_field(req, "service");
    const bool wait = wait_field(req);
    const Millis timeout = timeout_field(req);
    const std::string name = service.contains("name") && service["name"].is_string()
                                 ? service["name"].get<std::string>()
                                 : "";
    if (!service.contains("backends")) service["backends"] = Json::array();
    const ChangeResult r =
        d.change("service.add " + name, [&](Json& services) -> std::optional<Refusal> {
          if (!name.empty() && find_service(services, name))
            return Refusal{"exists", "service '" + shorten(name) +
                                         "' already exists (use service set to change it)"};
          services.push_back(service);
          return std::nullopt;
        });
    return finish(d, server, id, r, wait, timeout);
  }
  if (cmd == "service.remove") {
    allow(req, cmd, {"name"}, true);
    const std::string name = string_field(req, "name");
    const bool wait = wait_field(req);
    const Millis timeout = timeout_field(req);
    const ChangeResult r =
        d.change("service.remove " + name, [&](Json& services) -> std::optional<Refusal> {
          for (size_t i = 0; i < services.size(); ++i) {
            if (services[i].is_object() && services[i].value("name", std::string()) == name) {
              services.erase(i);
              return std::nullopt;
            }
          }
          return no_service(services, name);
        });
    return finish(d, server, id, r, wait, timeout);
  }
  if (cmd == "service.set") {
    allow(req, cmd, {"name", "set"}, true);
    const std::string name = string_field(req, "name");
    const Json patch = object_field(req, "set");
    const bool wait = wait_field(req);
    const Millis timeout = timeout_field(req);
    if (patch.empty()) bad("bad_request", "service.set: nothing to set");
    if (patch.contains("name"))
      bad("bad_request", "a service cannot be renamed: add it under the new name, then remove it");
    if (patch.contains("backends"))
      bad("bad_request", "service.set does not take backends: use backend.add, remove or set");
    const ChangeResult r =
        d.change("service.set " + name, [&](Json& services) -> std::optional<Refusal> {
          Json* s = find_service(services, name);
          if (!s) return no_service(services, name);
          const Json old_health = s->value("health", Json::object());
          s->merge_patch(patch);
          // fast_interval_ms and down_interval_ms left out of a file follow interval_ms; here,
          // those that were equal to it follow it too, unless set at the same time.
          const auto ph = patch.find("health");
          if (ph != patch.end() && ph->is_object() && ph->contains("interval_ms") &&
              s->contains("health") && (*s)["health"].is_object() &&
              old_health.contains("interval_ms")) {
            for (const char* k : {"fast_interval_ms", "down_interval_ms"}) {
              if (!ph->contains(k) && old_health.value(k, Json()) == old_health["interval_ms"])
                (*s)["health"][k] = (*ph)["interval_ms"];
            }
          }
          return std::nullopt;
        });
    return finish(d, server, id, r, wait, timeout);
  }
  if (cmd == "config.reload") {
    allow(req, cmd, {"replace", "drain_timeout_ms"}, true);
    bool replace = false;
    if (req.contains("replace")) {
      if (!req["replace"].is_boolean())
        bad("bad_request", "field 'replace': expected true or false");
      replace = req["replace"].get<bool>();
    }
    std::optional<Millis> drain;
    if (const auto it = req.find("drain_timeout_ms"); it != req.end()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
          it->get<int64_t>() > kMaxDrainTimeoutMs) {
        bad("bad_request", "field 'drain_timeout_ms': expected an integer 0.." +
                               std::to_string(kMaxDrainTimeoutMs) + " (0: remove at once)");
      }
      drain = Millis(it->get<int64_t>());
    }
    const bool wait = wait_field(req);
    const Millis timeout = timeout_field(req);
    HLOG_INFO("control socket: reloading %s%s%s", d.options().config_path.c_str(),
              replace ? " (replacing runtime changes)" : "",
              !drain                ? ""
              : *drain == Millis(0) ? " (removals at once, no drain)"
                                    : " (drain timeout given)");
    const ChangeResult r = d.reload_config(replace, drain);
    return finish(d, server, id, r, wait, timeout);
  }
  if (cmd == "config.save") {
    allow(req, cmd, {}, false);
    const ChangeResult r = d.save_config();
    if (!r.ok) return error_reply(r.refusal.code, r.refusal.message);
    return Json{{"ok", true},
                {"path", d.options().config_path},
                {"backup", d.options().config_path + ".bak"},
                {"changes", r.changes}};
  }
  if (cmd == "config.show") {
    allow(req, cmd, {}, false);
    return Json{{"ok", true}, {"path", d.options().config_path}, {"text", d.running_config_text()}};
  }
  if (cmd == "config.diff") {
    allow(req, cmd, {}, false);
    return Json{{"ok", true}, {"path", d.options().config_path}, {"changes", d.runtime_changes()}};
  }
  bad("unknown_command",
      "unknown command '" + shorten(cmd) +
          "' (commands: ping, status, backend.add, backend.remove, backend.set, service.add, "
          "service.remove, service.set, config.reload, config.save, config.show, config.diff)");
}

}  // namespace

std::optional<Json> handle_request(Daemon& daemon, ControlServer& server, ControlServer::ConnId id,
                                   const Json& request) {
  std::optional<Json> reply;
  try {
    reply = dispatch_command(daemon, server, id, request);
  } catch (const BadRequest& e) {
    reply = error_reply(e.code, e.message);
  }
  // Refusals are the client's to read; the log keeps a rate-limited note of them (a client
  // repeating a bad request must not flood it).
  const std::string code = reply ? reply->value("code", std::string()) : "";
  // A reload's refusals (the file, the state file) are the daemon's own errors, logged as such.
  const bool logged = code == "config" || code == "conflict" || code == "io";
  if (reply && !reply->value("ok", true) && !logged) {
    const Json cmd = request.value("cmd", Json());
    const std::string name = cmd.is_string() ? shorten(cmd.get<std::string>()) : cmd.dump();
    const bool bad = code == "bad_request" || code == "unknown_command";
    server.client_log(id, bad ? LogLevel::kWarning : LogLevel::kInfo, "%s refused (%s): %s",
                      name.c_str(), code.c_str(), reply->value("error", std::string()).c_str());
  }
  return reply;
}

}  // namespace lb::health
