#include "files.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace lb {

namespace {

std::runtime_error sys_error(const std::string& path, const std::string& what, int err) {
  return std::runtime_error(path + ": " + what + ": " + std::strerror(err));
}

std::runtime_error sys_error(const std::string& what, int err) {
  return std::runtime_error(what + ": " + std::strerror(err));
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

}  // namespace

std::string symlink_target(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return path;
  char* real = ::realpath(path.c_str(), nullptr);
  if (real == nullptr) throw sys_error(path, "cannot follow the symlink", errno);
  std::string out(real);
  std::free(real);
  return out;
}

void write_file_atomic(const std::string& path, const std::string& text, mode_t mode,
                       std::optional<FileOwner> owner, Durability durability) {
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw sys_error(tmp, "cannot create", errno);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw sys_error(tmp, "cannot write", err);
    }
    done += static_cast<size_t>(n);
  }
  // Owner first: chown may clear the set-id bits that fchmod then sets.
  struct stat st {};
  if (owner && ::fstat(fd, &st) == 0 && (st.st_uid != owner->uid || st.st_gid != owner->gid) &&
      ::fchown(fd, owner->uid, owner->gid) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw sys_error(tmp,
                    "cannot give it the owner and group of the file it replaces (uid " +
                        std::to_string(owner->uid) + ", gid " + std::to_string(owner->gid) + ")",
                    err);
  }
  // open() applied the umask: the file gets exactly `mode`.
  const bool synced = durability == Durability::kSynced;
  if (::fchmod(fd, mode) != 0 || (synced && ::fsync(fd) != 0)) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw sys_error(tmp, "cannot sync", err);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw sys_error(tmp, "cannot close", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw sys_error(path, "cannot rename " + tmp + " to it", err);
  }
  if (!synced) return;
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw sys_error(dir, "cannot open the directory to sync it", errno);
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (rc != 0) throw sys_error(dir, "cannot sync the directory", err);
}

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

}  // namespace lb
