#pragma once
// Small file and account helpers the control side shares (lb-healthd, lbctl, the config
// checks): no dependency beyond libc.

#include <sys/types.h>

#include <optional>
#include <string>

namespace lb {

// Who a written file belongs to, when it must not simply be the writer.
struct FileOwner {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Whether write_file_atomic() waits for the disk.
enum class Durability {
  // fsync of the file and of its directory: the new file survives a power loss.
  kSynced,
  // The rename alone: a reader never sees a mix, even if the writer dies, but after an OS crash
  // the file may be old, empty or missing. For files that only save work on a restart and whose
  // readers refuse what they cannot parse (lb-healthd's health memory): an fsync on a busy disk
  // can take a second, which such a writer's event loop must not wait for.
  kAtomicOnly,
};

// Writes `text` to `path` so that a reader sees the old file or the new one, never a mix, even
// after a crash: a temporary file beside it, fsync, rename, fsync of the directory (fsyncs only
// when `durability` is kSynced). The file gets exactly `mode`, and `owner` when given (a file that
// replaces another keeps its owner and group: the temporary file is chowned before it takes the
// old one's place). Throws std::runtime_error("PATH: what failed: strerror"); the old file is then
// untouched.
void write_file_atomic(const std::string& path, const std::string& text, mode_t mode,
                       std::optional<FileOwner> owner = std::nullopt,
                       Durability durability = Durability::kSynced);

// The file a write to `path` should replace: `path` itself, or, when it is a symlink, the file
// it leads to (every link followed), so that writing it leaves the link in place. Throws
// std::runtime_error("PATH: cannot follow the symlink: strerror") for a link that leads nowhere.
std::string symlink_target(const std::string& path);

// The uid of a user name or numeric uid, the gid of a group name or numeric gid (lb-healthd's
// control socket is given to healthd.socket_owner, socket_group). Throw std::runtime_error("no
// such user 'x'", or the lookup's error).
uid_t lookup_user(const std::string& name);
gid_t lookup_group(const std::string& name);

}  // namespace lb
