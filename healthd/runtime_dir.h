#pragma once
// lb-healthd's runtime directory: files that belong to one boot of the machine, where a reboot
// clears them (/run is a tmpfs). For an instance:
//
//   <dir>/<instance>.lock    held (flock) by the one lb-healthd that runs the instance; its pid
//                            is written in it. Never removed: unlinking a lock file lets a third
//                            process lock a new file while a second still holds the old one.
//   <dir>/<instance>.health  every backend's last decided health, rewritten (temporary file and
//                            rename) on every transition and every 10 s; read once at start so a
//                            restarted lb-healthd starts each backend where the last one left it.
//
// The directory must be writable by lb-healthd's user alone: whoever else could write there
// could take the lock first or forge the health file.

#include <compare>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "health_state.h"

namespace lb::health {

// root: /run/lbd (beside the default control socket). Another user: $XDG_RUNTIME_DIR/lbd, else
// /tmp/lbd-<uid>.
std::string default_runtime_dir();

// Creates `dir` (the last component, 0755 for root, else 0700) if missing, and checks that it is
// a directory (not a symbolic link) owned by our user or root and not writable by group or
// others. Throws std::runtime_error saying what is wrong and how to fix it.
void prepare_runtime_dir(const std::string& dir);

// Holds `<dir>/<instance>.lock` exclusively for as long as it lives.
class InstanceLock {
 public:
  // Throws std::runtime_error("another lb-healthd (pid N) is running instance X (it holds
  // FILE)") when another process holds the lock, or why the file cannot be used.
  static InstanceLock acquire(const std::string& dir, const std::string& instance);
  InstanceLock(InstanceLock&& o) noexcept;
  InstanceLock& operator=(InstanceLock&& o) noexcept;
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  ~InstanceLock();

  const std::string& path() const { return path_; }
  const std::string& instance() const { return instance_; }

 private:
  InstanceLock() = default;
  int fd_ = -1;
  std::string path_;
  std::string instance_;
};

// -- The health file --------------------------------------------------------------------------

struct BackendKey {
  std::string service;
  uint32_t address = 0;
  uint16_t port = 0;
  auto operator<=>(const BackendKey&) const = default;
};

struct RememberedHealth {
  Health health = Health::kUp;
  int64_t since_unix_ms = 0;  // when it was decided (the last flip, or the start)
  bool operator==(const RememberedHealth&) const = default;
};

using HealthMemory = std::map<BackendKey, RememberedHealth>;

// Health older than this is not trusted at start (the backends may have changed since);
// the file is rewritten at least every kHealthRefresh while lb-healthd runs.
inline constexpr Millis kHealthMaxAge{5 * 60 * 1000};
inline constexpr Millis kHealthRefresh{10 * 1000};

std::string health_file_path(const std::string& dir, const std::string& instance);
std::string lock_file_path(const std::string& dir, const std::string& instance);

std::string format_health_memory(const std::string& instance, const HealthMemory& memory,
                                 int64_t now_unix_ms);
// The health last written to `path`; empty, with the reason in `why`, when there is no file or
// it is not ours, malformed, for another instance, or written more than kHealthMaxAge before
// `now_unix_ms` (or after it: a clock set back).
HealthMemory read_health_memory(const std::string& path, const std::string& instance,
                                int64_t now_unix_ms, std::string& why);

}  // namespace lb::health
