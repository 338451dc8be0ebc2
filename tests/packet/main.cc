// The packet tests' main: EAL is initialised once for the whole process (it cannot be
// re-initialised), without PCI or hugepages, with a file prefix of its own so that parallel runs
// and a running lbd do not collide.

#include <gtest/gtest.h>
#include <rte_eal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::vector<std::string> args = {"packet_test",
                                   "-l",
                                   "0",
                                   "--no-pci",
                                   "--no-huge",
                                   "-m",
                                   "512",
                                   "--no-telemetry",
                                   "--file-prefix",
                                   "lbd_packet_" + std::to_string(getpid()),
                                   "--log-level=lb*:warning"};
  std::vector<char*> eal_argv;
  for (std::string& a : args) eal_argv.push_back(a.data());
  eal_argv.push_back(nullptr);
  if (rte_eal_init(static_cast<int>(args.size()), eal_argv.data()) < 0) {
    std::fprintf(stderr, "packet_test: rte_eal_init failed\n");
    return 1;
  }
  // --no-huge rules out --in-memory, so EAL makes a runtime directory for the prefix; it is
  // ours alone, and of no use once we exit.
  const std::string runtime_dir = rte_eal_get_runtime_dir();
  const int rc = RUN_ALL_TESTS();
  rte_eal_cleanup();
  std::error_code ec;
  std::filesystem::remove_all(runtime_dir, ec);
  return rc;
}
