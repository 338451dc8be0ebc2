#pragma once
// The configuration's keys as data: every group's keys in one list. The parser closes each group
// with it (a key not listed is refused, the list named in the message) and the writer
// (writer.h) orders what it writes by it, so a key is added in one place for both;
// tests/unit/config_writer_test.cc fails when the writer does not write a listed key.

#include <optional>
#include <span>
#include <string_view>

namespace lb::cfg::schema {

enum class Group {
  kRoot,
  kDataplane,
  kPort,
  kFlows,
  kRetry,
  kIdle,
  kService,
  kHealth,
  kPassive,
  kBackend,
  kHealthd,
  kBgp,
  kBgpNeighbor,
};

struct GroupKeys {
  Group group;
  // Where the group sits, list elements as "[]": "services.[].health".
  std::string_view path;
  // In the order docs/configuration.md and a written file list them.
  std::span<const std::string_view> keys;
};

// Every group, the root first.
std::span<const GroupKeys> groups();
std::span<const std::string_view> keys(Group group);

// The group a setting path such as "services.[2].health" names (any index), nullopt when none.
std::optional<Group> group_at(std::string_view path);

}  // namespace lb::cfg::schema
