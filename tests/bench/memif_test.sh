#!/usr/bin/env bash
# bench/memif.sh end to end, one short round of 1 k established flows and of SYNs: lbd and
# testpmd each run as memif clients of lb-gen. Passes when every run produced a result, lb-gen
# found no wrong packet, and the script ends with its ratio line. Not a timing.
# Exit 77 (skipped) without root or without dpdk-testpmd. Runs under --no-huge, so that it does
# not depend on the machine's hugepages.
set -uo pipefail
src=$1
build=$2
[ "$(id -u)" -eq 0 ] || { echo "SKIP: memif.sh needs root (DPDK runtime directory)"; exit 77; }
command -v dpdk-testpmd > /dev/null || { echo "SKIP: dpdk-testpmd not installed"; exit 77; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout 280 bash "$src/bench/memif.sh" --build "$build" --rounds 1 --scenarios "1k syn" \
  --duration 1 --warmup 0.5 --no-huge --quiet-wait 5 > "$out" 2>&1
rc=$?
cat "$out"
fail() { echo "FAIL: $*"; exit 1; }
[ $rc -eq 0 ] || fail "memif.sh exited $rc"
grep -q 'FAILED' "$out" && fail "a run failed"
grep -q 'WRONG PACKETS' "$out" && fail "lb-gen found wrong packets"
for fwd in lbd testpmd; do
  for sc in 1k syn; do
    grep -qE "^$sc $fwd 1 total=[0-9.]+ .* errors=0 " "$out" || fail "no clean result for $sc/$fwd"
  done
done
grep -qE '^1k +lbd +1 +[0-9.]+ ' "$out" || fail "no summary row for 1k/lbd"
tail -1 "$out" | grep -qE '^lbd/testpmd-io ratio: [0-9]+\.[0-9]{2}$' || fail "last line is not the ratio"
echo "ok: $(tail -1 "$out")"
