#!/usr/bin/env bash
# Installs what is missing, builds (build/; build-asan/ and build-tsan/ with sanitizers; build-fuzz/
# with clang and libFuzzer), prepares hugepages when it can, runs every test suite, and ends with
# one line: "N passed, N failed[, N skipped]".
# Exit status is non-zero when anything failed. Usage: tools/test.sh [--no-asan] (--no-asan: none
# of the sanitizer builds, fuzz targets included)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

asan=1
[ "${1:-}" = "--no-asan" ] && asan=0

fail_setup() {
  echo "test.sh: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

bash tools/install-deps.sh || fail_setup "installing dependencies failed"

# Hugepages: only the end-to-end and benchmark runs want them; unit and packet tests use
# --no-huge. Prepare them when we are root, and say so when we cannot.
if [ "$(id -u)" -eq 0 ] && [ -w /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages ]; then
  cur=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)
  [ "$cur" -ge 512 ] || echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
  mkdir -p /dev/hugepages
  mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages || true
else
  echo "test.sh: not root: hugepages not prepared (tests run with --no-huge)"
fi

configure() {  # configure DIR [meson options]
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  else
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  fi
}
build() {  # build DIR [meson options]
  configure "$@" && ninja -C "$1"
}

build build || fail_setup "build failed"
results=("build")

run_suites() {  # run_suites BUILD_DIR LABEL [meson test args]
  local dir=$1 label=$2
  shift 2
  local out="$root/$dir/test-results"
  rm -rf "$out"
  mkdir -p "$out"
  GTEST_OUTPUT="json:$out/" GTEST_COLOR=no meson test -C "$dir" --print-errorlogs \
    --num-processes 1 "$@" </dev/null
  cp "$dir/meson-logs/testlog.json" "$out/testlog.json" 2>/dev/null || true
  results+=("$label:$out")
}

run_suites build ""
if [ $asan -eq 1 ]; then
  if build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    # LeakSanitizer: DPDK keeps process-lifetime allocations (EAL, drivers) it never frees.
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      run_suites build-asan "asan" --suite unit --suite packet
  else
    echo "test.sh: the sanitizer build failed"
    results+=("sanitizer-build-failed")
  fi
  # ThreadSanitizer for the lbd <-> lb-healthd channel (the only code with two threads or
  # processes sharing memory outside the dataplane's own RCU).
  tsan_tests=(channel)
  if configure build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug &&
    ninja -C build-tsan tests/unit/channel_test; then
    TSAN_OPTIONS=halt_on_error=1 run_suites build-tsan "tsan" --no-rebuild "${tsan_tests[@]}"
  else
    echo "test.sh: the thread-sanitizer build failed"
    results+=("sanitizer-build-failed")
  fi
fi

# libFuzzer targets (tests/fuzz, docs/testing.md; AddressSanitizer and UBSan as well): a short run
# of a fixed number of executions each, one test per target. Longer runs: tools/fuzz.sh.
if [ $asan -eq 1 ]; then
  if command -v clang++ > /dev/null; then
    if CXX=clang++ configure build-fuzz -Dfuzz=true && ninja -C build-fuzz fuzz; then
      run_suites build-fuzz "fuzz" --no-rebuild --suite fuzz
    else
      echo "test.sh: the fuzz build failed"
      results+=("sanitizer-build-failed")
    fi
  else
    echo "test.sh: clang++ not installed: the fuzz targets did not run (tools/install-deps.sh)"
    results+=("fuzz-skipped")
  fi
fi

exec python3 tools/test_summary.py "${results[@]}"
