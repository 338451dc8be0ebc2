#include "log.h"

#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

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

void log(LogLevel level, const char* fmt, ...) {
  if (!log_enabled(level)) return;
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm utc{};
  gmtime_r(&tv.tv_sec, &utc);
  char line[2048];
  int n = std::snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ lb-healthd[%d] %s ",
                        utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                        utc.tm_sec, static_cast<int>(tv.tv_usec / 1000), static_cast<int>(getpid()),
                        to_string(level));
  if (n < 0) return;
  auto len = static_cast<size_t>(n);
  va_list args;
  va_start(args, fmt);
  const int m = std::vsnprintf(line + len, sizeof line - len, fmt, args);
  va_end(args);
  if (m > 0) len += static_cast<size_t>(m);
  if (len > sizeof line - 2) len = sizeof line - 2;  // truncated: keep the newline
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

}  // namespace lb::health
