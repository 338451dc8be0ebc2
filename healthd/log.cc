#include "log.h"

#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iterator>

namespace lb::health {

namespace {
LogLevel g_level = LogLevel::kInfo;
int g_fd = -1;
}  // namespace

const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARNING";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

std::optional<LogLevel> parse_log_level(std::string_view text) {
  if (text == "debug") return LogLevel::kDebug;
  if (text == "info") return LogLevel::kInfo;
  if (text == "warning") return LogLevel::kWarning;
  if (text == "error") return LogLevel::kError;
  return std::nullopt;
}

void set_log_level(LogLevel level) {
  g_level = level;
}
LogLevel log_level() {
  return g_level;
}
bool log_enabled(LogLevel level) {
  return level >= g_level;
}
void set_log_fd(int fd) {
  g_fd = fd;
}

namespace {

// Escapes `in` into `out` (at most `cap` bytes); the bytes written.
size_t escape_into(const char* in, size_t n, char* out, size_t cap) {
  size_t len = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(in[i]);
    char esc[5];
    size_t m = 1;
    esc[0] = static_cast<char>(c);
    if (c < 0x20 || c == 0x7f) {
      m = 2;
      esc[0] = '\\';
      switch (c) {
        case '\n':
          esc[1] = 'n';
          break;
        case '\r':
          esc[1] = 'r';
          break;
        case '\t':
          esc[1] = 't';
          break;
        default:
          m = static_cast<size_t>(std::snprintf(esc, sizeof esc, "\\x%02x", c));
      }
    }
    if (len + m > cap) break;
    std::memcpy(out + len, esc, m);
    len += m;
  }
  return len;
}

}  // namespace

std::string escape_control(std::string_view text) {
  std::string out(text.size() * 4, '\0');
  out.resize(escape_into(text.data(), text.size(), out.data(), out.size()));
  return out;
}

void vlog(LogLevel level, const char* fmt, va_list args) {
  if (!log_enabled(level)) return;
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm utc{};
  gmtime_r(&tv.tv_sec, &utc);
  char line[4096];
  int n = std::snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ lb-healthd[%d] %s ",
                        utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                        utc.tm_sec, static_cast<int>(tv.tv_usec / 1000), static_cast<int>(getpid()),
                        to_string(level));
  if (n < 0) return;
  auto len = static_cast<size_t>(n);
  char message[2048];
  const int m = std::vsnprintf(message, sizeof message, fmt, args);
  if (m > 0) {
    const size_t mlen = std::min(static_cast<size_t>(m), sizeof message - 1);
    len += escape_into(message, mlen, line + len, sizeof line - 1 - len);  // room for the newline
  }
  line[len++] = '\n';
  const int fd = g_fd >= 0 ? g_fd : STDERR_FILENO;
  size_t off = 0;
  while (off < len) {
    const ssize_t w = ::write(fd, line + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
}

void log(LogLevel level, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vlog(level, fmt, args);
  va_end(args);
}

void LogLimiter::refill(Bucket& b, Clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - b.last).count();
  const double per_token = std::chrono::duration<double>(period_).count();
  b.tokens = std::min<double>(burst_, b.tokens + elapsed / per_token);
  b.last = now;
}

bool LogLimiter::allow(uint64_t key, Clock::time_point now, uint64_t& suppressed) {
  suppressed = 0;
  auto [it, fresh] = keys_.try_emplace(key);
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = burst_;
    b.last = now;
  }
  refill(b, now);
  if (b.tokens < 1) {
    ++b.suppressed;
    return false;
  }
  b.tokens -= 1;
  suppressed = b.suppressed;
  b.suppressed = 0;
  // Forget keys that are full again and owe nothing: a fresh key starts full anyway.
  if (keys_.size() > 1024) {
    for (auto k = keys_.begin(); k != keys_.end();) {
      refill(k->second, now);
      const bool idle = k->second.tokens >= burst_ && k->second.suppressed == 0;
      k = idle && k->first != key ? keys_.erase(k) : std::next(k);
    }
  }
  return true;
}

std::vector<std::pair<uint64_t, uint64_t>> LogLimiter::take_quiet(Clock::time_point now) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (auto it = keys_.begin(); it != keys_.end();) {
    Bucket& b = it->second;
    refill(b, now);
    if (b.suppressed != 0 && b.tokens >= 1) {
      out.emplace_back(it->first, b.suppressed);
      b.suppressed = 0;
    }
    it = b.tokens >= burst_ && b.suppressed == 0 ? keys_.erase(it) : std::next(it);
  }
  return out;
}

}  // namespace lb::health
