#!/usr/bin/env bash
# The fault run of tests/e2e/fault_test.py, long: lbd, lb-healthd and three lb-backend servers on
# tools/netns.sh's topology, keep-alive and new-connection load, and the faults one after another
# over and over (lb-healthd and a backend killed and restarted, health flapping at the fall/rise
# edge, reloads while it flaps, garbage on the control socket, malformed pool updates on lbd's
# ring). Every step prints its figures and fails the run if an established connection to a
# healthy backend is disturbed or `lbctl status` takes 1 s or more. lbd's and lb-healthd's RSS,
# flows and counters are sampled every 10 s into OUT/soak.csv and plotted into OUT/soak.png
# (gnuplot, when installed: apt-get install gnuplot-nox); the run fails when either RSS grows by
# more than max(4 MiB, 10 %) between the first and the last quarter.
#
# usage: tools/soak.sh [--minutes N] [--build DIR] [--out DIR]
#   --minutes N  how long (default 30; 0: each step once, as the test suite's --short)
#   --build DIR  a built tree (default build/)
#   --out DIR    where the log, CSV and PNG go (default DIR/soak)
# Needs root (namespaces); takes the shared lock /tmp/lbd-sys.lock for the whole run.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
minutes=30
build=$root/build
out=
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift ;;
    --build) build=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
python3 -c "import sys; assert float(sys.argv[1]) >= 0" "$minutes" 2>/dev/null ||
  { echo "soak.sh: --minutes wants a number >= 0" >&2; exit 2; }
[ -x "$build/dataplane/lbd" ] || { echo "soak.sh: no lbd in $build: build first" >&2; exit 2; }
# Only what the run starts: the whole tree (unit tests and all) takes long on a shared machine.
ninja -C "$build" -j2 dataplane/lbd healthd/lb-healthd tools/lb-backend tools/lbctl \
  tests/e2e/lb-pool-inject > /dev/null || exit 2
out=${out:-$build/soak}
mkdir -p "$out"
log=$out/soak.log
csv=$out/soak.csv
if [ "$minutes" = 0 ]; then
  args=(--short)
else
  args=(--minutes "$minutes" --samples "$csv")
fi
echo "soak: $minutes minute(s), log $log"
flock /tmp/lbd-sys.lock python3 "$root/tests/e2e/fault_test.py" "$build" "${args[@]}" 2>&1 |
  tee "$log" | grep -E '^\[|^soak|^PASS|^FAIL|^SKIP|^-- cycle'
rc=${PIPESTATUS[0]}
if [ "$minutes" != 0 ] && [ -s "$csv" ]; then
  if command -v gnuplot > /dev/null; then
    gnuplot <<PLOT
set terminal pngcairo size 1200,800 noenhanced
set output "$out/soak.png"
set multiplot layout 2,1 title "lbd soak: $minutes min, faults every cycle"
set key autotitle columnhead left top
set xlabel "seconds"
set ylabel "RSS (KiB)"
plot "$csv" using 1:2 with lines title "lbd RSS", "$csv" using 1:3 with lines title "lb-healthd RSS"
set ylabel "count"
plot "$csv" using 1:4 with lines title "flows_active", "$csv" using 1:7 with lines title "flows_reset", \
     "$csv" using 1:8 with lines title "updates_rejected", "$csv" using 1:9 with lines title "channel_faults"
unset multiplot
PLOT
    echo "soak: plot $out/soak.png"
  else
    echo "soak: gnuplot not installed (apt-get install gnuplot-nox): samples in $csv, no plot"
  fi
fi
exit "$rc"
