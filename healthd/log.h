#pragma once
// lb-healthd's log: one line per event on stderr,
//   2024-05-01T12:00:00.123Z lb-healthd[4242] WARNING web 10.20.0.12:8080 DOWN after ...
// with a process-wide minimum level. Single-threaded by design (the daemon has one loop); the
// line is formatted first and written with one write(2), so concurrent writers never interleave
// within a line.

#include <cstdarg>
#include <optional>
#include <string>
#include <string_view>

namespace lb::health {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

const char* to_string(LogLevel level);
std::optional<LogLevel> parse_log_level(std::string_view text);

void set_log_level(LogLevel level);
LogLevel log_level();
bool log_enabled(LogLevel level);

// printf-style; the newline is added.
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Where lines go; -1 (default) is stderr. For tests.
void set_log_fd(int fd);

}  // namespace lb::health

#define HLOG_DEBUG(...)                                               \
  do {                                                                \
    if (::lb::health::log_enabled(::lb::health::LogLevel::kDebug))    \
      ::lb::health::log(::lb::health::LogLevel::kDebug, __VA_ARGS__); \
  } while (0)
#define HLOG_INFO(...) ::lb::health::log(::lb::health::LogLevel::kInfo, __VA_ARGS__)
#define HLOG_WARNING(...) ::lb::health::log(::lb::health::LogLevel::kWarning, __VA_ARGS__)
#define HLOG_ERROR(...) ::lb::health::log(::lb::health::LogLevel::kError, __VA_ARGS__)
