#!/usr/bin/env bash
# What dataplane.idle.mode "sleep" costs a packet, against "poll", on the same namespaces (not a
# test; root; uses tools/netns.sh with the prefix lbw and one lb-backend):
#   wake-up  sequential TCP connects to the VIP, one every GAP ms (the worker has gone back to
#            sleep between them): the connect time (SYN -> SYN-ACK, through lbd both ways) in
#            each mode; the difference of the medians is what waking costs the first packet
#   load     wrk keep-alive at full load: req/s and p99 in each mode (sleep must cost nothing
#            when packets keep coming: the worker never has a run of empty polls)
# Runs alternate poll / sleep ROUNDS times and print medians and ratios.
#
# Usage: bench/idle_wakeup.sh [ROUNDS] [CONNECTS] [GAP_MS]   (default 3 rounds, 200 connects, 20 ms)
#        BUILD=build dir (default build), MAX_SLEEP_US (default: lbd's default, 250)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
connects=${2:-200}
gap=${3:-20}
build=${BUILD:-build}
[ "$(id -u)" -eq 0 ] || { echo "bench/idle_wakeup.sh: run as root" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench/idle_wakeup.sh: wrk missing (tools/install-deps.sh)" >&2; exit 1; }
[ -x "$build/dataplane/lbd" ] || { echo "bench/idle_wakeup.sh: build first (ninja -C $build)" >&2; exit 1; }

export LB_NS_PREFIX=lbw LB_NS_BACKENDS=1
p=$LB_NS_PREFIX
tmp=$(mktemp -d)
backend_pid=
lbd_pid=
cleanup() {
  [ -n "$lbd_pid" ] && kill "$lbd_pid" 2>/dev/null && wait "$lbd_pid" 2>/dev/null
  [ -n "$backend_pid" ] && kill "$backend_pid" 2>/dev/null
  rm -f /dev/hugepages/lbd-$p-flows-* /dev/shm/lbd-$p-flows-*
  tools/netns.sh down >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nsx() { ip netns exec "$@"; }

tools/netns.sh down >/dev/null 2>&1 || true
tools/netns.sh up >/dev/null
nsx $p-b1 "$build/tools/lb-backend" --name b1 --listen 10.20.0.11 --port 8080 --threads 4 \
  >/dev/null 2>&1 &
backend_pid=$!
for _ in $(seq 1 50); do curl -s -o /dev/null --max-time 1 http://10.20.0.11:8080/ && break; sleep 0.1; done

lbd_on() {  # lbd_on MODE
  local extra=""
  [ -n "${MAX_SLEEP_US:-}" ] && extra="max_sleep_us = $MAX_SLEEP_US;"
  cat >"$tmp/lbd.cfg" <<CFG
instance = "$p";
dataplane: { workers = 1; flows = { capacity = 65536; tcp_closed_timeout = 2; };
  idle = { mode = "$1"; $extra };
  ports = ( { name = "client";  device = "net_af_xdp_${p}0,iface=$p-c"; ip = "10.10.0.1/24"; },
            { name = "backend"; device = "net_af_xdp_${p}1,iface=$p-b"; ip = "10.20.0.1/24"; } ); };
services = ( { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr";
  backends = ( { address = "10.20.0.11"; port = 8080; } ); } );
CFG
  "$build/dataplane/lbd" --lcores 0@0,1@1 --no-pci --no-huge -m 512 -- --config "$tmp/lbd.cfg" \
    --fresh >>"$tmp/lbd.log" 2>&1 &
  lbd_pid=$!
  for _ in $(seq 1 100); do
    nsx $p-client curl -s -o /dev/null --max-time 1 http://10.10.0.100/ && { sleep 1; return 0; }
    sleep 0.1
  done
  cat "$tmp/lbd.log" >&2
  return 1
}
lbd_off() { kill "$lbd_pid"; wait "$lbd_pid" || true; lbd_pid=; }

connect_ms() {  # -> median and p90 connect time (ms) of $connects connects, $gap ms apart
  nsx $p-client python3 - "$connects" "$gap" <<'PY'
import socket, statistics, sys, time
n, gap = int(sys.argv[1]), float(sys.argv[2]) / 1000
ms = []
for _ in range(n):
    time.sleep(gap)
    s = socket.socket()
    s.settimeout(2)
    t = time.perf_counter()
    try:
        s.connect(("10.10.0.100", 80))
        ms.append((time.perf_counter() - t) * 1e3)
    except OSError:
        pass
    s.close()
ms.sort()
if len(ms) < n * 0.9:
    sys.exit(f"only {len(ms)} of {n} connects succeeded")
print(f"{statistics.median(ms):.3f} {ms[int(len(ms) * 0.9)]:.3f}")
PY
}

wrk_load() {  # -> req/s and p99 (ms) of wrk keep-alive, 5 s
  nsx $p-client wrk -t 2 -c 16 -d 5s --latency http://10.10.0.100/ >"$tmp/wrk.out" 2>&1 || true
  python3 - "$tmp/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
if "Requests/sec" not in t:
    sys.exit("wrk failed:\n" + t)
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)$", t, re.M)
p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
print(f"{rps:.0f} {p99:.3f}")
PY
}

declare -A res
for r in $(seq 1 "$rounds"); do
  for mode in poll sleep; do
    lbd_on $mode || { echo "lbd did not come up" >&2; exit 1; }
    res[$mode,c,$r]=$(connect_ms)
    res[$mode,w,$r]=$(wrk_load)
    lbd_off
    echo "round $r $mode: connect median/p90 ms ${res[$mode,c,$r]}; wrk req/s p99 ms ${res[$mode,w,$r]}"
  done
done

med() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
col() { for r in $(seq 1 "$rounds"); do echo "${res[$1,$2,$r]}" | awk -v c="$3" '{print $c}'; done | med; }
cp=$(col poll c 1); cs=$(col sleep c 1)
wp=$(col poll w 1); ws=$(col sleep w 1)
pp=$(col poll w 2); ps=$(col sleep w 2)
echo
echo "medians over $rounds rounds ($connects connects ${gap} ms apart; wrk -c 16 keep-alive 5 s):"
echo "  connect median: poll $cp ms, sleep $cs ms: waking adds $(awk -v a="$cs" -v b="$cp" 'BEGIN{printf "%.3f", a - b}') ms"
echo "  full load: poll $wp req/s (p99 $pp ms), sleep $ws req/s (p99 $ps ms): sleep / poll $(awk -v a="$ws" -v b="$wp" 'BEGIN{printf "%.3f", a / b}')"
