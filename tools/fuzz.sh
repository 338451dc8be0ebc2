#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz for a while, one after the other, and says what each
# reached: executions, executions per second, coverage (libFuzzer's cov: edges and ft: features),
# corpus size and findings. Builds build-fuzz/ first (clang, -Dfuzz=true) when needed. Each
# target keeps its corpus in build-fuzz/fuzz-corpus/TARGET (started from tests/fuzz/corpus/TARGET),
# so successive runs carry on where the last one stopped. An input that breaks a target is kept
# in build-fuzz/tests/fuzz/artifacts/TARGET/: add it to tests/fuzz/regressions/TARGET with the fix.
#
# usage: tools/fuzz.sh [--minutes N] [--build DIR] [TARGET...]
#   --minutes N   per target (default 5; fractions allowed)
#   TARGET        packet, config, control, pool_update (default: all)
# Runs at nice 10: the machine is shared. Exit status 1 when any target found something.
#
# config runs with -detect_leaks=0 and then replays its whole corpus once through the ASan replay
# build (config_fuzz_replay), whose LeakSanitizer checks at exit. libconfig 1.5 leaks on some
# syntax errors (lsan.supp), so many mutated configs allocate more than they free, and libFuzzer
# then re-runs the input and scans the heap for leaks each time: 8 times the cost of the input
# (112 against 893 exec/s in one-minute runs, docs/testing.md), until libFuzzer gives the check
# up by itself after 1,000 such scans. The replay afterwards checks every input the run kept, with
# no such limit.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
minutes=5
build=$root/build-fuzz
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift ;;
    --build) build=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=(packet config control pool_update)
seconds=$(python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * 60)))" "$minutes") ||
  { echo "fuzz.sh: --minutes wants a number" >&2; exit 2; }
command -v clang++ > /dev/null || { echo "fuzz.sh: clang++ not installed (apt-get install clang)" >&2; exit 2; }

if [ ! -f "$build/build.ninja" ]; then
  mkdir -p "$build"
  CXX=clang++ meson setup "$build" -Dfuzz=true > "$build/fuzz-setup.log" 2>&1 ||
    { cat "$build/fuzz-setup.log"; exit 2; }
fi
nice -n 10 ninja -C "$build" fuzz tests/fuzz/config_fuzz_replay > "$build/fuzz-ninja.log" 2>&1 ||
  { tail -40 "$build/fuzz-ninja.log"; exit 2; }

declare -A max_len=([packet]=4096 [config]=8192 [control]=8192 [pool_update]=16384)
# control: libFuzzer's entropic bookkeeping (InputCorpus::UpdateFeatureFrequency, AddRareFeature)
# took 39 % of its samples, the target 24 % (docs/testing.md, "Cost per execution"). Without it
# an execution costs half the CPU and the same CPU reaches as many edges (5,227 against 5,207)
# with 5 % fewer features.
declare -A extra=([config]=-detect_leaks=0 [control]=-entropic=0)
export LSAN_OPTIONS="suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0"
# ASan's bookkeeping, not the code under test, took most of packet's and control's time
# (docs/testing.md, "Cost per execution"): a 256 MB quarantine hands every allocation memory that
# must be faulted in again, and each malloc and free unwinds 30 frames into the stack depot. A
# 16 MB quarantine still catches a use after free within an input, and 5 frames locate one;
# replay the input with the default options (or the _replay binary) for the full stacks.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16:malloc_context_size=5}
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
found=0
summary=()
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/${t}_fuzz
  [ -x "$bin" ] || { echo "fuzz.sh: no target $t ($bin)" >&2; exit 2; }
  corpus=$build/fuzz-corpus/$t
  artifacts=$build/tests/fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  log=$build/fuzz-$t.log
  before=$(ls "$artifacts" | wc -l)
  echo "== $t: $minutes minute(s), corpus $corpus"
  # shellcheck disable=SC2086 # extra: one flag or none
  nice -n 10 "$bin" ${extra[$t]:-} -max_total_time="$seconds" -max_len="${max_len[$t]}" \
    -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$corpus" "$root/tests/fuzz/corpus/$t" "$root/tests/fuzz/regressions/$t" > "$log" 2>&1
  rc=$?
  if [ "$t" = config ] && [ $rc -eq 0 ]; then
    # The leak check the run left out, on every input it kept (see the top of this file).
    nice -n 10 "$build/tests/fuzz/config_fuzz_replay" "$corpus" >> "$log" 2>&1 || {
      rc=$?
      echo "   config: the corpus replay found a leak (see $log)"
    }
  fi
  after=$(ls "$artifacts" | wc -l)
  execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
  rate=$(awk '/stat::average_exec_per_sec/ { print $2 }' "$log")
  status=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$status")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<< "$status")
  findings=$((after - before))
  # libFuzzer exits 72 (-interrupted_exitcode) when stopped by SIGINT: the run ends early, which
  # is not a finding.
  if [ $rc -eq 72 ] && [ $findings -eq 0 ] && grep -q 'libFuzzer: run interrupted' "$log"; then
    echo "   interrupted (SIGINT) before its time was up: not a finding"
  elif [ $rc -ne 0 ] || [ $findings -ne 0 ]; then
    found=1
    echo "   FOUND something (exit $rc): $(ls -t "$artifacts" | head -3 | tr '\n' ' ')"
    grep -E 'ERROR|fuzz invariant|SUMMARY' "$log" | head -5 | sed 's/^/   /'
  fi
  line=$(printf '%-12s %12s execs %8s exec/s  cov %6s  ft %7s  corpus %-12s findings %d' \
    "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$findings")
  echo "   $line"
  summary+=("$line")
done
echo
printf '%s\n' "${summary[@]}"
exit $found
