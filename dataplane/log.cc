#include "log.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>

namespace lb::dp {

RTE_LOG_REGISTER(lb_logtype, lb, INFO);
RTE_LOG_REGISTER(lb_pool_logtype, lb.pool, INFO);
RTE_LOG_REGISTER(lb_link_logtype, lb.link, INFO);
RTE_LOG_REGISTER(lb_neigh_logtype, lb.neigh, INFO);
RTE_LOG_REGISTER(lb_drops_logtype, lb.drops, INFO);

namespace {

struct Stream {
  const char* program = "lbd";
  std::mutex mu;                   // the errors, read by another thread than the one logging
  std::deque<std::string> errors;  // guarded by mu
  bool at_line_start = true;       // guarded by the FILE's own lock (writes are serialised by it)
};
Stream g_stream;

const char* level_name(int level) {
  switch (static_cast<uint32_t>(level)) {
    case RTE_LOG_EMERG:
      return "EMERG";
    case RTE_LOG_ALERT:
      return "ALERT";
    case RTE_LOG_CRIT:
      return "CRIT";
    case RTE_LOG_ERR:
      return "ERROR";
    case RTE_LOG_WARNING:
      return "WARNING";
    case RTE_LOG_NOTICE:
      return "NOTICE";
    case RTE_LOG_INFO:
      return "INFO";
    default:
      return "DEBUG";
  }
}

void write_all(const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, p, n);
    if (w <= 0) return;  // nowhere to report it
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// fopencookie's write: called with the stream locked, once per message (the stream is
// unbuffered, and glibc formats a whole vfprintf before writing it). Each line gets the time,
// the program, its pid and the message's level.
ssize_t cookie_write(void*, const char* buf, size_t size) {
  // rte_vlog() sets these for the calling thread before it formats the message.
  const int level = rte_log_cur_msg_loglevel();
  std::string out;
  size_t i = 0;
  while (i < size) {
    const char* nl = static_cast<const char*>(std::memchr(buf + i, '\n', size - i));
    const size_t end = nl ? static_cast<size_t>(nl - buf) + 1 : size;
    if (g_stream.at_line_start) {
      timespec ts{};
      clock_gettime(CLOCK_REALTIME, &ts);
      tm t{};
      gmtime_r(&ts.tv_sec, &t);
      char stamp[96];
      std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s ",
                    t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                    ts.tv_nsec / 1000000, g_stream.program, static_cast<int>(getpid()),
                    level_name(level));
      out += stamp;
    }
    out.append(buf + i, end - i);
    g_stream.at_line_start = nl != nullptr;
    if (level > 0 && level <= static_cast<int>(RTE_LOG_ERR)) {
      std::string text(buf + i, end - i);
      while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
      // "EAL: Cannot ..." -> "Cannot ...": the reason, as a caller's error text ends with it.
      const size_t colon = text.find(": ");
      if (colon != std::string::npos && colon < 24 && text.find(' ') > colon)
        text.erase(0, colon + 2);
      if (!text.empty()) {
        std::lock_guard lock(g_stream.mu);
        if (g_stream.errors.size() == 3) g_stream.errors.pop_front();
        g_stream.errors.push_back(std::move(text));
      }
    }
    i = end;
  }
  write_all(out.data(), out.size());
  return static_cast<ssize_t>(size);
}

}  // namespace

bool open_log_stream(const char* program) {
  g_stream.program = program;
  cookie_io_functions_t io{};
  io.write = cookie_write;
  FILE* f = fopencookie(nullptr, "w", io);
  if (!f) return false;
  setvbuf(f, nullptr, _IONBF, 0);
  return rte_openlog_stream(f) == 0;
}

void clear_errors() {
  std::lock_guard lock(g_stream.mu);
  g_stream.errors.clear();
}

std::string recent_errors() {
  std::lock_guard lock(g_stream.mu);
  std::string out;
  for (const std::string& e : g_stream.errors) out += (out.empty() ? "" : "; ") + e;
  return out;
}

}  // namespace lb::dp
