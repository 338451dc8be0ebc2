#pragma once
// The source tree's root for tests that read its files (config/examples, docs): meson passes it
// as LB_SOURCE_DIR; the same variable in the environment overrides it, so a test binary can be
// run against another checkout.

#include <cstdlib>
#include <string>

namespace lb::test {

inline std::string source_dir() {
  if (const char* env = std::getenv("LB_SOURCE_DIR")) return env;
#ifdef LB_SOURCE_DIR
  return LB_SOURCE_DIR;
#else
  return ".";
#endif
}

}  // namespace lb::test
