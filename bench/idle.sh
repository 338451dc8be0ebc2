#!/usr/bin/env bash
# What a worker costs when nothing arrives: lbd's CPU use with dataplane.idle.mode "poll" and
# "sleep", one worker, a port that never receives (net_null with no-rx=1). Prints both and their ratio.
# Usage: bench/idle.sh [SECONDS]   (root: lbd needs /var/run/dpdk, /dev/shm); BUILD=build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
tmp=$(mktemp -d)
lbd_pid=
cleanup() { [ -n "$lbd_pid" ] && kill "$lbd_pid" 2>/dev/null && wait "$lbd_pid" 2>/dev/null; rm -rf "$tmp"
  rm -f /dev/hugepages/lbd-lbidle$$-flows-* /dev/shm/lbd-lbidle$$-flows-* /dev/shm/lbd-lbidle$$-services.json; }
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for mode in poll sleep; do
  tag=lbidle$$
  cat >"$tmp/lbd.cfg" <<CFG
instance = "$tag";
dataplane: { workers = 1; flows = { capacity = 4096; }; idle = { mode = "$mode"; };
  ports = ( { name = "p"; device = "net_null_$tag,no-rx=1"; ip = "10.20.0.1/24"; } ); };
services = ( { name = "web"; vip = "10.20.0.100"; port = 80;
  backends = ( { address = "10.20.0.11"; port = 8080; } ); } );
CFG
  "${BUILD:-build}"/dataplane/lbd --lcores 0@0,1@1 --no-pci --no-huge -m 256 -- \
    --config "$tmp/lbd.cfg" --fresh >"$tmp/lbd-$mode.log" 2>&1 &
  lbd_pid=$!
  for _ in $(seq 1 100); do grep -q "worker 0 on lcore" "$tmp/lbd-$mode.log" && break; sleep 0.1; done
  sleep 1
  a=$(cpu_of "$lbd_pid")
  sleep "$secs"
  b=$(cpu_of "$lbd_pid")
  kill "$lbd_pid"; wait "$lbd_pid" 2>/dev/null || true; lbd_pid=
  pct=$(awk -v a="$a" -v b="$b" -v t="$ticks" -v s="$secs" 'BEGIN{printf "%.1f", (b - a) / t / s * 100}')
  echo "idle mode $mode: lbd used $pct % of one CPU over ${secs}s with nothing arriving"
  eval "cpu_$mode=$pct"
done
awk -v p="$cpu_poll" -v s="$cpu_sleep" 'BEGIN{printf "sleep / poll CPU: %.3f\n", (p > 0 ? s / p : 0)}'
