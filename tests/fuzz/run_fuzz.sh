#!/usr/bin/env bash
# One fuzz target for a short, fixed run (the `fuzz` suite of a -Dfuzz=true build; tools/test.sh):
# its seed corpus and regression inputs first, then executions up to RUNS in all (LB_FUZZ_RUNS
# overrides it) from a fixed seed, so that a run can be repeated. New inputs go to a scratch directory,
# never into the source tree; an input that breaks the target is kept in ARTIFACTS (add it to
# tests/fuzz/regressions/TARGET with its fix). Longer runs: tools/fuzz.sh.
# usage: run_fuzz.sh TARGET-BINARY CORPUS REGRESSIONS ARTIFACTS MAX_LEN RUNS
set -euo pipefail
[ $# -eq 6 ] || { sed -n '2,/^set/p' "$0" | sed '$d' >&2; exit 2; }
bin=$1 corpus=$2 regressions=$3 artifacts=$4 max_len=$5 runs=$6
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/lbd-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$artifacts"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
"$bin" -runs="${LB_FUZZ_RUNS:-$runs}" -seed=1 -max_len="$max_len" -timeout=20 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
  "$work" "$corpus" "$regressions"
