#pragma once
// lb-healthd's log: one line per event on stderr,
//   2024-05-01T12:00:00.123Z lb-healthd[4242] WARNING web 10.20.0.12:8080 DOWN after ...
// with a process-wide minimum level. Single-threaded by design (the daemon has one loop); the
// line is formatted first and written with one write(2), so concurrent writers never interleave
// within a line. One event is always one line: control characters in the message (a client's
// CR/LF, an escape sequence) are written escaped (\n, \r, \t, \xNN), so nothing a control
// socket client sends can forge a line or reach the operator's terminal raw.

#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lb::health {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

const char* to_string(LogLevel level);
std::optional<LogLevel> parse_log_level(std::string_view text);

void set_log_level(LogLevel level);
LogLevel log_level();
bool log_enabled(LogLevel level);

// printf-style; the newline is added.
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void vlog(LogLevel level, const char* fmt, va_list args) __attribute__((format(printf, 2, 0)));

// `text` with every control character escaped as the log writes it: "a\r\nb" -> "a\\r\\nb".
std::string escape_control(std::string_view text);

// A budget of log lines per key (a control socket client's user, say): `burst` lines at once,
// then one per `period`; what is over the budget is counted, and said once the budget allows a
// line again ("... (12 similar lines suppressed)"). Keys are forgotten once they have been
// quiet for long enough, so the table stays small whatever the number of keys.
class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  LogLimiter(uint32_t burst, std::chrono::milliseconds period) : burst_(burst), period_(period) {}

  // Whether a line for `key` may be written at `now`. When it may, `suppressed` is the number of
  // lines refused for that key since the last one written.
  bool allow(uint64_t key, Clock::time_point now, uint64_t& suppressed);
  // Keys whose refused lines have not been said yet although their budget has refilled (the
  // flood stopped): each with its count, which is then cleared. For a summary line.
  std::vector<std::pair<uint64_t, uint64_t>> take_quiet(Clock::time_point now);
  size_t keys() const { return keys_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point last{};
    uint64_t suppressed = 0;
  };
  void refill(Bucket& b, Clock::time_point now) const;
  uint32_t burst_;
  std::chrono::milliseconds period_;
  std::unordered_map<uint64_t, Bucket> keys_;
};

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
