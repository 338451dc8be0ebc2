#pragma once
// What lbd does with a backend, as of the pool it applies: the pool's state per backend id, what
// /lb/backends reports by name and lb-healthd's /metrics and lbctl show. Ordered: a larger value
// serves more (lb-healthd keeps the most serving of the ids one backend has).

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lb {

enum class ServingState : uint8_t {
  kNotServing = 0,  // not in the pool, or stopped: its flows are reset
  kDraining = 1,    // no new flows; established flows continue
  kActive = 2,      // takes new flows
};

inline constexpr std::array<std::string_view, 3> kServingStateNames = {"not_serving", "draining",
                                                                       "active"};

constexpr std::string_view to_string(ServingState s) {
  const auto i = static_cast<uint8_t>(s);
  return i < kServingStateNames.size() ? kServingStateNames[i] : "not_serving";
}

// The state a name from /lb/backends stands for; nullopt for a name this build does not know.
constexpr std::optional<ServingState> parse_serving_state(std::string_view name) {
  for (size_t i = 0; i < kServingStateNames.size(); ++i) {
    if (kServingStateNames[i] == name) return static_cast<ServingState>(i);
  }
  return std::nullopt;
}

}  // namespace lb
