#pragma once
// lb-healthd's control socket: a unix stream socket speaking JSON lines (docs/lbctl.md).
//
// One request per line, one reply line per request, in order. Everything is non-blocking and
// runs on the daemon's one loop: the server's epoll descriptor is among the descriptors
// curl_multi_poll waits on, and service() does whatever is ready. Limits: a request line of at
// most `max_request` bytes (a longer one is answered with an error and the connection closed),
// at most `max_clients` connections (when full, a new client takes the slot of the one silent
// for longest, unless every one has a request in flight), and a client that sends nothing for
// `idle_timeout` is told so and disconnected. A malformed request gets an error reply; nothing a
// client sends can stop the loop.

#include <sys/types.h>

#include <cstdarg>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "health_state.h"
#include "log.h"
#include "state_file.h"

namespace lb::health {

struct ControlOptions {
  std::string path;      // the socket file
  uint32_t mode = 0660;  // its permission bits
  std::string owner;     // user name or uid; empty: ours
  std::string group;     // group name or gid; empty: ours
  Millis idle_timeout{10000};
  size_t max_request = size_t{128} * 1024;
  size_t max_clients = 64;
  size_t max_output = size_t{64} << 20;  // a client that reads nothing loses its connection
};

// A reply that refuses: {"ok": false, "code": code, "error": message}.
Json error_reply(std::string_view code, const std::string& message);

class ControlServer {
 public:
  using ConnId = uint64_t;
  // Answers one request (a JSON object). nullopt: the reply comes later through reply(); the
  // connection reads no further request until then.
  using Handler = std::function<std::optional<Json>(ConnId, const Json& request)>;

  // Creates the socket (a stale socket file of a dead lb-healthd is replaced; a live one is
  // not). Throws std::runtime_error with the reason.
  explicit ControlServer(ControlOptions options);
  ~ControlServer();  // closes every connection and removes the socket file
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Readable when something is to be done: poll it, then call service().
  int fd() const { return epoll_; }
  const std::string& path() const { return options_.path; }
  // Also makes fd() readable when `fd` is (lb-healthd's signalfd): one descriptor to poll.
  void watch(int fd);

  // Accepts, reads, answers, writes and disconnects idle clients. Never blocks.
  void service(TimePoint now, const Handler& handler);
  // The reply to a request the handler deferred; dropped when the client has gone.
  void reply(ConnId id, Json reply);
  // Replies to every deferred request with `reply` (lb-healthd is stopping).
  void reply_all_deferred(const Json& reply);

  // A line about client `id` (what it sent, why it was refused), prefixed with who it is
  // ("control socket: client 7 (pid 4242, uid 1000): "). At most 10 lines at once, then one a
  // second, per uid: a client sending garbage fast does not flood the log (what is held back is
  // counted and said).
  void client_log(ConnId id, LogLevel level, const char* fmt, ...)
      __attribute__((format(printf, 4, 5)));

  size_t clients() const { return conns_.size(); }
  // Clients disconnected to make room for a new one.
  uint64_t evicted() const { return evicted_; }
  // When service() must run next to disconnect an idle client (TimePoint::max(): never).
  TimePoint next_deadline() const;

 private:
  struct Conn {
    int fd = -1;
    std::string in;
    std::string out;
    size_t out_pos = 0;
    TimePoint last_activity;
    bool deferred = false;
    bool spoke = false;  // sent a well-formed request once: a real client, evicted last
    Json deferred_id;
    bool read_closed = false;  // end of file from the client
    bool closing = false;      // close once `out` is written
    bool dead = false;         // close now
    uint32_t events = 0;       // registered with epoll
    pid_t pid = 0;             // the peer, from SO_PEERCRED (for the log)
    uid_t uid = 0;
  };

  void accept_all(TimePoint now);
  // accept() failed for want of a local resource (descriptors, memory): the listening socket
  // stays readable, so it is left out of epoll for kAcceptPause (new clients wait in the
  // backlog) instead of waking the loop on every turn.
  static constexpr Millis kAcceptPause{100};
  void pause_accepting(TimePoint now, int err);
  void resume_accepting(TimePoint now);
  std::optional<TimePoint> accept_paused_until_;
  bool accept_failing_ = false;  // since the last accept() that worked (logged once)
  // Closes the quietest client without a request in flight or waiting to be read (one waiting
  // behind replies the client does not read does not count); clients that never sent a
  // well-formed request go first.
  void evict_quietest(TimePoint now);
  void read_from(Conn& c, TimePoint now);
  bool ready(const Conn& c) const;  // a complete request is buffered and may be served now
  void serve(ConnId id, Conn& c, const Handler& handler, TimePoint now);
  void process(ConnId id, Conn& c, const Handler& handler);
  void dispatch(ConnId id, Conn& c, const std::string& line, const Handler& handler);
  void queue(Conn& c, Json reply, const Json& id);
  void write_to(Conn& c, TimePoint now);
  // Re-registers with epoll, or closes; false when `c` was closed (and erased).
  bool update(ConnId id, Conn& c);
  void close_conn(ConnId id);

  ControlOptions options_;
  int listen_ = -1;
  int epoll_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  ConnId next_id_ = 1;
  uint64_t evicted_ = 0;
  void peer_log(pid_t pid, uid_t uid, const std::string& who, LogLevel level,
                const std::string& message);

  std::map<ConnId, Conn> conns_;
  std::map<int, bool> watched_;
  LogLimiter client_lines_{10, Millis(1000)};  // keyed by the client's uid
  TimePoint next_quiet_check_{};
};

}  // namespace lb::health
