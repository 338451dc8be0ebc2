#include "runtime_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "lb_config.h"

namespace lb::health {

namespace {

constexpr const char* kHealthFormat = "lb-healthd health 1";
constexpr off_t kMaxHealthFile = off_t{16} << 20;
constexpr int64_t kClockSlackMs = 60 * 1000;  // a file "from the future" by less: clock skew

std::runtime_error sys_error(const std::string& what, int err) {
  return std::runtime_error(what + ": " + std::strerror(err));
}

std::string octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// Opens a file of the runtime directory that must be a regular file of ours, not writable by
// others; -1 with errno when it cannot be opened, throws when it is not what it should be.
int open_own(const std::string& path, int flags, mode_t mode) {
  const int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  struct stat st {};
  std::string problem;
  if (::fstat(fd, &st) != 0) {
    problem = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    problem = "not a regular file";
  } else if (st.st_uid != ::geteuid()) {
    problem = "owned by uid " + std::to_string(st.st_uid) + ", not by us (uid " +
              std::to_string(::geteuid()) + ")";
  } else if ((st.st_mode & 022) != 0) {
    problem = "mode " + octal(st.st_mode) + ": writable by others";
  }
  if (!problem.empty()) {
    ::close(fd);
    throw std::runtime_error(path + ": " + problem);
  }
  return fd;
}

}  // namespace

std::string default_runtime_dir() {
  const uid_t uid = ::geteuid();
  if (uid == 0) return "/run/lbd";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && xdg[0] == '/')
    return std::string(xdg) + "/lbd";
  return "/tmp/lbd-" + std::to_string(uid);
}

void prepare_runtime_dir(const std::string& dir) {
  if (dir.empty() || dir[0] != '/')
    throw std::runtime_error("runtime directory '" + dir + "': an absolute path is needed");
  const mode_t mode = ::geteuid() == 0 ? 0755 : 0700;
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST)
    throw sys_error("cannot create the runtime directory " + dir, errno);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) throw sys_error("runtime directory " + dir, errno);
  std::string problem;
  if (!S_ISDIR(st.st_mode)) {
    problem = "not a directory";
  } else if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    problem = "owned by uid " + std::to_string(st.st_uid);
  } else if ((st.st_mode & 022) != 0) {
    problem = "mode " + octal(st.st_mode) + ": others may write in it";
  }
  if (!problem.empty()) {
    throw std::runtime_error("runtime directory " + dir + ": " + problem +
                             ": another user could take the instance lock or forge the health "
                             "file (give lb-healthd a directory only it writes to: --runtime-dir)");
  }
}

std::string lock_file_path(const std::string& dir, const std::string& instance) {
  return dir + "/" + instance + ".lock";
}

std::string health_file_path(const std::string& dir, const std::string& instance) {
  return dir + "/" + instance + ".health";
}

InstanceLock InstanceLock::acquire(const std::string& dir, const std::string& instance) {
  InstanceLock l;
  l.path_ = lock_file_path(dir, instance);
  l.instance_ = instance;
  l.fd_ = open_own(l.path_, O_RDWR | O_CREAT, 0600);
  if (l.fd_ < 0) throw sys_error("cannot open the instance lock " + l.path_, errno);
  if (::flock(l.fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) throw sys_error("cannot lock " + l.path_, err);
    char buf[32] = {};
    const ssize_t n = ::pread(l.fd_, buf, sizeof buf - 1, 0);
    const long pid = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
    throw std::runtime_error(
        "another lb-healthd" + (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
        " is running instance " + instance + " (it holds " + l.path_ + "); stop it first");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(l.fd_, 0) != 0 ||
      ::pwrite(l.fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    throw sys_error("cannot write " + l.path_, errno);
  return l;
}

InstanceLock::InstanceLock(InstanceLock&& o) noexcept {
  *this = std::move(o);
}

InstanceLock& InstanceLock::operator=(InstanceLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    instance_ = std::move(o.instance_);
    o.fd_ = -1;
  }
  return *this;
}

InstanceLock::~InstanceLock() {
  if (fd_ >= 0) ::close(fd_);  // the kernel releases the lock with the last descriptor
}

std::string format_health_memory(const std::string& instance, const HealthMemory& memory,
                                 int64_t now_unix_ms) {
  nlohmann::json backends = nlohmann::json::array();
  for (const auto& [key, h] : memory) {
    backends.push_back({{"service", key.service},
                        {"address", cfg::format_ipv4(key.address)},
                        {"port", key.port},
                        {"health", h.health == Health::kUp ? "up" : "down"},
                        {"since_unix_ms", h.since_unix_ms}});
  }
  const nlohmann::json doc = {{"format", kHealthFormat},
                              {"instance", instance},
                              {"written_unix_ms", now_unix_ms},
                              {"backends", std::move(backends)}};
  return doc.dump(1) + "\n";
}

HealthMemory read_health_memory(const std::string& path, const std::string& instance,
                                int64_t now_unix_ms, std::string& why) {
  HealthMemory out;
  int fd = -1;
  try {
    fd = open_own(path, O_RDONLY, 0);
  } catch (const std::exception& e) {
    why = e.what();
    return out;
  }
  if (fd < 0) {
    why = path + ": " + std::strerror(errno);
    return out;
  }
  std::string text;
  char buf[65536];
  ssize_t n = 0;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 &&
         text.size() + static_cast<size_t>(n) <= static_cast<size_t>(kMaxHealthFile))
    text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (n != 0) {
    why = path + ": unreadable or too large";
    return out;
  }
  try {
    const nlohmann::json doc = nlohmann::json::parse(text);
    if (!doc.is_object() || doc.value("format", "") != kHealthFormat)
      throw std::runtime_error("not an lb-healthd health file");
    if (doc.at("instance").get<std::string>() != instance)
      throw std::runtime_error("written for instance " + doc.at("instance").get<std::string>());
    const auto written = doc.at("written_unix_ms").get<int64_t>();
    if (written > now_unix_ms + kClockSlackMs)
      throw std::runtime_error("written in the future (the clock was set back?)");
    if (now_unix_ms - written > static_cast<int64_t>(kHealthMaxAge.count()))
      throw std::runtime_error("written " + format_duration(Millis(now_unix_ms - written)) +
                               " ago, longer than " + format_duration(kHealthMaxAge) +
                               ": too old to trust");
    for (const nlohmann::json& b : doc.at("backends")) {
      BackendKey key;
      key.service = b.at("service").get<std::string>();
      const std::optional<uint32_t> address = cfg::parse_ipv4(b.at("address").get<std::string>());
      const auto port = b.at("port").get<int64_t>();
      const std::string health = b.at("health").get<std::string>();
      const auto since = b.at("since_unix_ms").get<int64_t>();
      if (key.service.empty() || !address || port < 1 || port > 65535 ||
          (health != "up" && health != "down") || since > written)
        throw std::runtime_error("malformed backend entry " + b.dump());
      key.address = *address;
      key.port = static_cast<uint16_t>(port);
      out[key] = RememberedHealth{health == "up" ? Health::kUp : Health::kDown, since};
    }
  } catch (const std::exception& e) {
    why = path + ": " + e.what();
    out.clear();
  }
  return out;
}

}  // namespace lb::health
