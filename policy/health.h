#pragma once
// A backend's health as its checks see it: what the pool policy (live_pool.h) takes in, and what
// lb-healthd's rise/fall state machine (health_state.h) puts out.

#include <cstdint>

namespace lb::health {

enum class Health : uint8_t { kUp, kDown };
inline const char* to_string(Health h) {
  return h == Health::kUp ? "UP" : "DOWN";
}

}  // namespace lb::health
