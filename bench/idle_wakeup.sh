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
. bench/common.sh
bench_init bench/idle_wakeup.sh lbw 1
start_backend b1 10.20.0.11 8080 4

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
  lbd_start "$tmp/lbd.cfg" 512 vip_answers && sleep 1
}
vip_answers() { nsx $p-client curl -s -o /dev/null --max-time 1 http://10.10.0.100/; }

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
  wrk_stats "$tmp/wrk.out" | awk '$1 > 0 {print $1, $3; next} {exit 1}'
}

declare -A res
for r in $(seq 1 "$rounds"); do
  for mode in poll sleep; do
    lbd_on $mode || { echo "lbd did not come up" >&2; exit 1; }
    res[$mode,c,$r]=$(connect_ms)
    res[$mode,w,$r]=$(wrk_load)
    lbd_stop
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
