#!/usr/bin/env bash
# Time from lb-healthd's decision to every lbd worker applying it: the pool-apply latency benchmark.
# Starts lbd on a virtual device (net_null, one worker on the second core), drives its pool
# channel with build/bench/lbd_apply_latency, prints the percentiles, stops lbd.
# Usage: bench/apply_latency.sh [UPDATES [MAGLEV_N]]   (root: lbd needs /var/run/dpdk, /dev/shm)
# MAGLEV_N: the service is maglev (65537 entries) with that many backends, rebuilt every update.
# LB_APPLY_GAP_US (environment): least time between an acknowledgement and the next update (200).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
tag=lbapply$$
tmp=$(mktemp -d)
lbd_pid=
cleanup() { [ -n "$lbd_pid" ] && kill "$lbd_pid" 2>/dev/null && wait "$lbd_pid" 2>/dev/null; rm -rf "$tmp"
  rm -f /dev/hugepages/lbd-$tag-flows-* /dev/shm/lbd-$tag-flows-* /dev/shm/lbd-$tag-services.json; }  # docs/operations.md
trap cleanup EXIT
cat >"$tmp/lbd.cfg" <<CFG
instance = "$tag";
dataplane: { workers = 1; flows = { capacity = 4096; };
  ports = ( { name = "p"; device = "net_null_$tag"; ip = "10.20.0.1/24"; } ); };
services = ( { name = "web"; vip = "10.20.0.100"; port = 80;
  backends = ( { address = "10.20.0.11"; port = 8080; } ); } );
CFG
${BUILD:-build}/dataplane/lbd --lcores 0@0,1@1 --no-pci --no-huge -m 256 -- --config "$tmp/lbd.cfg" --fresh \
  >"$tmp/lbd.log" 2>&1 &
lbd_pid=$!
for _ in $(seq 1 100); do [ -e /dev/shm/lbd-$tag ] && break; sleep 0.1; done
sleep 0.5
# The client wakes every 10 us to look for the acknowledgement: on lbd's control core (0) it would
# take that thread's CPU and time itself. It shares the worker's core, whose poll loop only delays
# the quiescent report by the client's few microseconds a wake-up.
taskset -c 1 "${BUILD:-build}"/bench/lbd_apply_latency "$tag" web 10.20.0.100 80 10.20.0.11 8080 "$n" ${2:+"$2"}
