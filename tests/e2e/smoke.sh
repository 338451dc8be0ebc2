#!/usr/bin/env bash
# End-to-end smoke: lbd on the namespace topology of tools/netns.sh, three HTTP backends, real
# curl from the client namespace. New connections through the VIP must be spread round robin and
# backends must see the client's real address; SIGTERM must stop lbd cleanly.
# Usage: smoke.sh LBD_BINARY [WORKERS [PMD]]   PMD: af_xdp (default for 1 worker) | af_packet
# With 2 workers (two lcores sharing the second CPU on a 2-core machine) af_packet spreads packets
# over two queue pairs by its own fanout hash, so flows cross workers through the handoff rings.
# Exit 77 (skip) when namespaces cannot be made here.
set -u
lbd=${1:?usage: smoke.sh LBD [WORKERS [PMD]]}
workers=${2:-1}
pmd=${3:-$([ "$workers" -eq 1 ] && echo af_xdp || echo af_packet)}
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/../../tools/netns.sh"
export LB_NS_PREFIX=lbs$workers
p=$LB_NS_PREFIX
tmp=$(mktemp -d)
lbd_pid=

cleanup() {
  [ -n "$lbd_pid" ] && kill "$lbd_pid" 2>/dev/null && wait "$lbd_pid" 2>/dev/null
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-$p-flows-* /dev/shm/lbd-$p-flows-* /dev/shm/lbd-$p-services.json
  "$netns" down >/dev/null 2>&1
  rm -rf "$tmp"
}
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
ip netns add $p-probe 2>/dev/null || skip "cannot create network namespaces here"
ip netns del $p-probe
command -v curl >/dev/null || skip "curl not installed"
trap cleanup EXIT
trap 'exit 130' INT TERM
"$netns" down >/dev/null 2>&1  # leftovers of an earlier run that was killed
"$netns" up >/dev/null || { echo "FAIL: tools/netns.sh up"; exit 1; }

nsx() { ip netns exec "$@"; }
# shellcheck source=../support/topology.sh
. "$here/../support/topology.sh"
pids=()  # the backends go with their namespaces
http_backends 3
lbd_devices "$pmd" "$workers"
cat >"$tmp/lbd.cfg" <<CFG
dataplane: {
  workers = $workers;
  flows = { capacity = 65536; };
  ports = (
    { name = "client";  device = "$devc"; ip = "10.10.0.1/24"; },
    { name = "backend"; device = "$devb"; ip = "10.20.0.1/24"; }
  );
};
services = ( { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr";
  backends = ( { address = "10.20.0.11"; port = 8080; }, { address = "10.20.0.12"; port = 8080; },
               { address = "10.20.0.13"; port = 8080; } ); } );
CFG
lcores="0@0,1@1"
[ "$workers" -eq 1 ] || lcores="0@0,$(seq -s, -f '%g@1' 1 "$workers")"
"$lbd" --lcores "$lcores" --no-pci --no-huge -m 512 --file-prefix $p --log-level=lb:info \
  -- --config "$tmp/lbd.cfg" --instance $p >"$tmp/lbd.log" 2>&1 &
lbd_pid=$!

fail() {
  echo "FAIL: $*"
  echo "--- lbd log"
  cat "$tmp/lbd.log"
  exit 1
}
# Wait until lbd answers ARP and ping for the VIP, and the backends listen.
lbd_ready $lbd_pid 3 || fail "the VIP does not answer ping ($pmd)"

declare -A seen
fails=0
for _ in $(seq 1 30); do
  out=$(nsx $p-client curl -s --max-time 3 http://10.10.0.100/name)
  if [ -z "$out" ]; then fails=$((fails + 1)); continue; fi
  seen[$out]=$(( ${seen[$out]:-0} + 1 ))
done
echo "30 new connections, $workers worker(s), $pmd:" \
  "$(for k in "${!seen[@]}"; do printf '%s=%s ' "$k" "${seen[$k]}"; done)"
[ $fails -eq 0 ] || fail "$fails of 30 requests failed"
# Round robin is exact per worker: one worker gives 10 each; w workers each keep their own
# cursor, so the spread (max - min) is at most w.
min=30 max=0
for i in 1 2 3; do
  n=${seen[backend-$i]:-0}
  [ "$n" -lt "$min" ] && min=$n
  [ "$n" -gt "$max" ] && max=$n
done
if [ $((max - min)) -gt "$workers" ] || { [ "$workers" -eq 1 ] && [ "$min" -ne 10 ]; }; then
  fail "spread $min..$max is not round robin for $workers worker(s)"
fi
grep -q "10.10.0.50" "$tmp/http1.log" || fail "backend did not see the client's address"
kill -TERM $lbd_pid
wait $lbd_pid
rc=$?
lbd_pid=
[ $rc -eq 0 ] || fail "lbd exited $rc on SIGTERM"
echo "PASS"
