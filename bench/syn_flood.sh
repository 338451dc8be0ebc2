#!/usr/bin/env bash
# Established flows under a spoofed SYN flood, in process: lbd_worker_cost --mode flood for each
# syn_flood_policy. Each run opens --flows established flows in a table of 4 x that many, polls
# them alone for half the bursts, then with a flood of new SYNs in every poll (3 SYNs per
# established packet by default) that fills the table. Prints one row per policy: established
# packets forwarded per million cycles before and during the flood, their ratio, established
# packets lost (must be 0), and what became of the SYNs. Bounded: each run is --bursts polls
# (default 20000), under `timeout`.
#
# usage: bench/syn_flood.sh [--build DIR] [--flows N] [--bursts N] [--est N] [--syn N]
# lbd_worker_cost runs EAL with --no-huge and a per-process file prefix (no hugepage files, no
# shm segments, its own /var/run/dpdk/lbdwcPID, removed at exit), on one core.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
flows=1000
bursts=20000
est=8
syn=24
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift ;;
    --flows) flows=$2; shift ;;
    --bursts) bursts=$2; shift ;;
    --est) est=$2; shift ;;
    --syn) syn=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "syn_flood.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
wc=$build/bench/lbd_worker_cost
[ -x "$wc" ] || { echo "syn_flood.sh: $wc not built (ninja -C build)" >&2; exit 2; }

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
printf '%-16s %-7s %12s %12s %7s %5s %8s %8s %9s %9s %9s\n' policy forward est/Mc-before \
  est/Mc-flood ratio lost syn-in syn-out refused evicted stateless
rc=0
for run in "evict-embryonic dnat both" "drop-new dnat both" "evict-embryonic tunnel c2b" \
           "drop-new tunnel c2b" "stateless tunnel c2b"; do
  set -- $run
  out=$(timeout 300 "$wc" --mode flood --policy "$1" --forward "$2" --dir "$3" --flows "$flows" \
        --bursts "$bursts" --est "$est" --syn "$syn" 2>&1)
  status=$?
  line=$(grep '^RESULT mode=flood' <<<"$out")
  if [ $status -ne 0 ] || [ -z "$line" ]; then
    echo "syn_flood.sh: $run failed (exit $status):" >&2
    echo "$out" >&2
    rc=1
    continue
  fi
  printf '%-16s %-7s %12s %12s %7s %5s %8s %8s %9s %9s %9s\n' "$1" "$2" \
    "$(field est_before_per_mcycle "$line")" "$(field est_during_per_mcycle "$line")" \
    "$(field ratio "$line")" "$(field est_lost "$line")" "$(field syn_in "$line")" \
    "$(field syn_out "$line")" "$(field flows_refused "$line")" "$(field syn_evicted "$line")" \
    "$(field syn_stateless "$line")"
done
exit $rc
