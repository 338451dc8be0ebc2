#!/usr/bin/env bash
# Installs what is missing, builds (build/ and, with sanitizers, build-asan/), prepares hugepages
# when it can, runs every test suite, and ends with one line: "N passed, N failed[, N skipped]".
# Exit status is non-zero when anything failed.
#
# Usage: tools/test.sh [--no-asan] [--no-deps] [--suite NAME]... [-- MESON_TEST_ARGS...]
#   --no-asan      no sanitizer builds
#   --no-deps      do not run tools/install-deps.sh (everything is installed already)
#   --suite NAME   only this suite (repeatable); the sanitizer builds run only for the suites they
#                  cover (unit and packet under ASan, the channel test of unit under TSan)
#   -- ARGS        passed to `meson test` for build/ (e.g. a test's name: tools/test.sh -- channel);
#                  the sanitizer builds are left out
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() {  # usage EXIT_STATUS
  sed -n '/^# Usage:/,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit "$1"
}
asan=1
deps=1
suites=()
passthrough=()
while [ $# -gt 0 ]; do
  case $1 in
    --no-asan) asan=0 ;;
    --no-deps) deps=0 ;;
    --suite)
      [ $# -ge 2 ] || usage 2
      suites+=("$2")
      shift
      ;;
    --suite=*) suites+=("${1#--suite=}") ;;
    --) shift; passthrough=("$@"); break ;;
    -h | --help) usage 0 ;;
    *) echo "test.sh: unknown argument '$1'" >&2; usage 2 ;;
  esac
  shift
done
[ ${#passthrough[@]} -eq 0 ] || asan=0
wanted() {  # wanted SUITE: true when no --suite was given or SUITE was
  [ ${#suites[@]} -eq 0 ] && return 0
  local s
  for s in "${suites[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}
suite_args=()
for s in "${suites[@]}"; do suite_args+=(--suite "$s"); done

fail_setup() {
  echo "test.sh: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

if [ $deps -eq 1 ]; then
  bash tools/install-deps.sh || fail_setup "installing dependencies failed"
fi

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

run_suites build "" "${suite_args[@]}" "${passthrough[@]}"
asan_suites=()
wanted unit && asan_suites+=(--suite unit)
wanted packet && asan_suites+=(--suite packet)
if [ $asan -eq 1 ] && [ ${#asan_suites[@]} -gt 0 ]; then
  if build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    # LeakSanitizer: DPDK keeps process-lifetime allocations (EAL, drivers) it never frees.
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      run_suites build-asan "asan" "${asan_suites[@]}"
  else
    echo "test.sh: the sanitizer build failed"
    results+=("sanitizer-build-failed")
  fi
  # ThreadSanitizer for the lbd <-> lb-healthd channel (the only code with two threads or
  # processes sharing memory outside the dataplane's own RCU).
  tsan_tests=(channel)
  if ! wanted unit; then
    true  # --suite without unit: the channel test is not wanted
  elif configure build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug &&
    ninja -C build-tsan tests/unit/channel_test; then
    TSAN_OPTIONS=halt_on_error=1 run_suites build-tsan "tsan" --no-rebuild "${tsan_tests[@]}"
  else
    echo "test.sh: the thread-sanitizer build failed"
    results+=("sanitizer-build-failed")
  fi
fi

exec python3 tools/test_summary.py "${results[@]}"
