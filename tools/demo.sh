#!/usr/bin/env bash
# The one-command demo: installs what is missing, builds, brings up the namespace topology of
# tools/netns.sh with three real HTTP backends, starts lbd and lb-healthd with
# config/examples/demo.cfg, and shows
#   1. new connections spread round robin over the three backends,
#   2. a backend failing its health check leaving the pool, and coming back,
#   3. a live view of lbd's counters until Ctrl-C.
# Everything it started is stopped and the topology removed on exit.
#
# Usage: tools/demo.sh [--once] [--mode dnat|tunnel] [--fleet]
#   --once  run steps 1-2 without pauses or live view; exit 0 only if every step behaved as shown
#   --mode tunnel  forward = "tunnel" (direct server return over IPIP): the backends answer the
#           client directly (tools/netns.sh --dsr), each decapsulating with lb-decap
#   --fleet a fleet instead (tools/fleet.sh): two lbd nodes behind a BIRD router with ECMP over
#           BGP, the router's routes, a node killed (kill -9) while a client keeps asking, its
#           route withdrawn, traffic going on through the other node; then the node back
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
once=0
mode=dnat
fleet=0
while [ $# -gt 0 ]; do
  case $1 in
    --once) once=1; shift ;;
    --mode) mode=${2:-}; shift 2 || true ;;
    --fleet) fleet=1; shift ;;
    *) echo "usage: tools/demo.sh [--once] [--mode dnat|tunnel] [--fleet]" >&2; exit 2 ;;
  esac
done
case $mode in dnat | tunnel) ;; *) echo "demo: --mode dnat or tunnel, not '$mode'" >&2; exit 2 ;; esac
# In tunnel mode the client's packets keep the VIP's port 80: the backends serve (and are
# checked) on port 80 of every address.
if [ "$mode" = tunnel ]; then bport=80; blisten=0.0.0.0; else bport=8080; blisten=; fi

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: the demo creates network namespaces and runs DPDK"

bold "installing what is missing and building"
bash tools/install-deps.sh || die "tools/install-deps.sh"
# One line per step here too; the build's own output only when it fails.
buildlog=$(mktemp)
if [ ! -f build/build.ninja ]; then
  echo "demo: configuring (meson setup build)"
  meson setup build >"$buildlog" 2>&1 || { cat "$buildlog"; rm -f "$buildlog"; die "meson setup"; }
fi
echo "demo: building (ninja -C build; the first build takes a few minutes)"
if ! ninja -C build >"$buildlog" 2>&1; then
  tail -40 "$buildlog"
  rm -f "$buildlog"
  die "build (above: the end of ninja's output)"
fi
rm -f "$buildlog"

if [ $fleet -eq 1 ]; then
  export LB_FLEET_PREFIX=fl LB_CLIENT_VIP=10.100.0.100
  trap 'tools/fleet.sh down >/dev/null 2>&1' EXIT
  trap 'exit 130' INT TERM
  ask() {  # ask N: N new connections to the VIP from the client; "backend-X" per line
    ip netns exec fl-client python3 tests/e2e/client.py new "$1" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print("   per backend:", r["counts"], "errors:", len(r["errors"]))'
  }
  pause() { [ $once -eq 1 ] || sleep 2; }
  bold "a fleet: a client, a BIRD router (ECMP), two lbd nodes (lbd + lb-healthd + BIRD each)," \
    "three DSR backends (tools/fleet.sh)"
  tools/fleet.sh down >/dev/null 2>&1
  tools/fleet.sh up || die "tools/fleet.sh up"
  bold "1. the router learnt the VIP 10.100.0.100 from both nodes over BGP: one route, two next hops"
  tools/fleet.sh routes
  bold "2. sixty new connections: ECMP spreads them over the nodes, Maglev over the backends"
  ask 60
  for i in 1 2; do
    echo "   node $i: $(tools/fleet.sh lbctl $i status | grep '^node:')"
  done
  pause
  bold "3. a client with 50 keep-alive connections, asking 5 times a second; node 1's lbd is killed (kill -9): its lb-healthd withdraws the VIP"
  ip netns exec fl-client python3 tests/e2e/client.py keepalive_for 50 8 0.2 >"${TMPDIR:-/tmp}/fleet-demo.$$" &
  load=$!
  sleep 2
  tools/fleet.sh kill-lbd 1
  t0=$(date +%s.%N)
  hops() { ip netns exec fl-router ip route show 10.100.0.100 | grep -c 'via 10.3'; }
  for _ in $(seq 200); do [ "$(hops)" -eq 1 ] && break; sleep 0.05; done
  [ "$(hops)" -eq 1 ] || die "the router still routes to node 1"
  printf '=> the router withdrew node 1 after %.2fs:\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
  tools/fleet.sh routes
  wait $load
  python3 - "${TMPDIR:-/tmp}/fleet-demo.$$" <<'EOP' || die "connections failed"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"conn"' in l]
ok = sum(1 for r in rows if not r["errors"])
print(f"=> {ok} of {len(rows)} keep-alive connections went on through node 2 (Maglev: same backend)")
sys.exit(0 if ok >= 0.99 * len(rows) else 1)
EOP
  rm -f "${TMPDIR:-/tmp}/fleet-demo.$$"
  ask 30
  pause
  bold "4. node 1 back: its lbd started again, lb-healthd attaches and announces: two next hops again"
  tools/fleet.sh start-lbd 1
  for _ in $(seq 300); do [ "$(hops)" -eq 2 ] && break; sleep 0.1; done
  [ "$(hops)" -eq 2 ] || die "node 1 did not come back"
  tools/fleet.sh routes
  bold "demo --fleet: every step behaved as shown"
  exit 0
fi

export LB_NS_PREFIX=lb
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-lb-flows-* /dev/shm/lbd-lb-flows-* /dev/shm/lbd-lb-services.json
  tools/netns.sh down >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nsx() { ip netns exec "$@"; }
states() {  # the pool as lbd applies it, from its telemetry: "10.20.0.11:8080=active ..."
  python3 tests/e2e/lbenv.py lb states 2>/dev/null
}
pool_is() { [ "$(states)" = "$1" ]; }
pool_has() { states | grep -q "$1"; }
requests() {  # requests N: N new connections from the client namespace, one line each
  for _ in $(seq 1 "$1"); do
    nsx lb-client curl -s --max-time 2 http://10.10.0.100/ || echo "(failed)"
  done
}
wait_until() {  # wait_until SECONDS COMMAND...: true once COMMAND succeeds
  local end=$((SECONDS + $1))
  shift
  until "$@"; do [ $SECONDS -ge $end ] && return 1; sleep 0.1; done
}

bold "network: a client namespace, lbd's two ports, three backends (tools/netns.sh)"
tools/netns.sh down >/dev/null 2>&1
dsr=()
[ "$mode" = tunnel ] && dsr=(--dsr)
tools/netns.sh up "${dsr[@]}" || die "tools/netns.sh up"
for i in 1 2 3; do
  nsx lb-b$i build/tools/lb-backend --name backend-$i --listen "${blisten:-10.20.0.1$i}" \
    --port $bport >"$tmp/backend-$i.log" 2>&1 &
  pids+=($!)
  if [ "$mode" = tunnel ]; then
    # The stand-in for the kernel's ipip device (docs/operations.md, backend set-up for DSR).
    nsx lb-b$i build/tools/lb-decap >"$tmp/decap-$i.log" 2>&1 &
    pids+=($!)
  fi
done
for i in 1 2 3; do
  wait_until 10 curl -s -o /dev/null --max-time 1 http://10.20.0.1$i:$bport/healthcheck ||
    die "backend-$i does not start"
done
[ "$mode" = tunnel ] && echo "tunnel mode: backends serve the VIP on lo, lb-decap decapsulates"

start_lbd() {  # start_lbd CONFIG
  build/dataplane/lbd --lcores 0@0,1@1 --no-pci --no-huge -m 512 -- --config "$1" \
    >>"$tmp/lbd.log" 2>&1 &
  lbd_pid=$!
  pids+=($lbd_pid)
  wait_until 15 nsx lb-client ping -c1 -W1 10.10.0.100 >/dev/null 2>&1
}
bold "lbd: trying AF_XDP on its ports, else af_packet"
base=config/examples/demo.cfg
if [ "$mode" = tunnel ]; then
  sed -e "s/port = 8080;/port = $bport;/" -e 's/scheduler = "rr";/&\n    forward = "tunnel";/' \
    "$base" >"$tmp/demo.cfg"
  base=$tmp/demo.cfg
fi
sed 's/net_af_packet\([01]\)/net_af_xdp\1/' "$base" >"$tmp/demo-xdp.cfg"
if start_lbd "$tmp/demo-xdp.cfg"; then
  cfg="$tmp/demo-xdp.cfg"
  echo "lbd is up on net_af_xdp (config/examples/demo.cfg with AF_XDP devices, forward $mode)"
else
  kill "$lbd_pid" 2>/dev/null
  wait "$lbd_pid" 2>/dev/null
  cfg=$base
  start_lbd "$cfg" || { cat "$tmp/lbd.log"; die "lbd does not answer for the VIP"; }
  echo "lbd is up on net_af_packet (config/examples/demo.cfg)"
fi
build/healthd/lb-healthd --config "$cfg" >"$tmp/healthd.log" 2>&1 &
pids+=($!)
all_active="10.20.0.11:$bport=active 10.20.0.12:$bport=active 10.20.0.13:$bport=active"
wait_until 10 pool_is "$all_active" ||
  die "lb-healthd did not bring the pool up: $(cat "$tmp/healthd.log")"
echo "lb-healthd is checking the backends; lbd's pool: $(states)"
sleep 1.2  # lbd resolves the backends' MACs once a second

bold "1. twelve new connections to the VIP 10.10.0.100:80, from the client namespace"
out=$(requests 12)
echo "$out" | sed 's/^/   /'
for i in 1 2 3; do
  n=$(echo "$out" | grep -c "^backend-$i$")
  [ "$n" -eq 4 ] || die "backend-$i answered $n of 12, not 4 (round robin)"
done
echo "=> round robin: 4 each"
[ $once -eq 1 ] || sleep 2

bold "2. backend-2 starts failing its health check (/healthcheck answers 503)"
curl -s -d '' --max-time 2 http://10.20.0.12:$bport/control/health/fail >/dev/null
t0=$(date +%s.%N)
wait_until 5 pool_has "10.20.0.12:$bport=draining" || die "backend-2 was not taken out"
printf '=> lb-healthd took it out after %.2fs: ' "$(echo "$(date +%s.%N) - $t0" | bc)"
grep "10.20.0.12:$bport DOWN" "$tmp/healthd.log" | tail -1 | sed 's/^.* WARNING //'
echo "   lbd's pool: $(states)"
out=$(requests 6)
echo "$out" | sed 's/^/   /'
echo "$out" | grep -q "backend-2" && die "a new connection still reached backend-2"
echo "$out" | grep -q "failed" && die "a request failed"
echo "=> new connections avoid it"
[ $once -eq 1 ] || sleep 2

bold "   backend-2 recovers"
curl -s -d '' --max-time 2 http://10.20.0.12:$bport/control/health/ok >/dev/null
wait_until 5 pool_is "$all_active" || die "backend-2 did not come back"
grep "10.20.0.12:$bport UP" "$tmp/healthd.log" | tail -1 | sed 's/^.* INFO /=> /'
out=$(requests 6)
echo "$out" | sed 's/^/   /'
[ "$(echo "$out" | grep -c backend-2)" -eq 2 ] || die "backend-2 did not get its share back"
echo "=> back in the pool"

if [ "$mode" = tunnel ]; then
  tunnel=$(python3 tests/e2e/lbenv.py lb stats | awk '$1 == "tunnel_packets" {print $2}')
  echo "=> lbd sent ${tunnel:-0} packets through the tunnel; the replies went to the client directly"
  [ "${tunnel:-0}" -gt 0 ] || die "no packet went through the tunnel"
fi

if [ $once -eq 1 ]; then
  bold "demo --once: every step behaved as shown"
  exit 0
fi

bold "3. live view of lbd's counters (Ctrl-C ends the demo and cleans up)"
echo "Try it yourself from another shell:  ip netns exec lb-client curl http://10.10.0.100/"
# A gentle client in the background so the counters move.
(while :; do nsx lb-client curl -s -o /dev/null --max-time 1 http://10.10.0.100/; sleep 0.3; done) &
pids+=($!)
if [ -x build/tools/lbctl ]; then
  build/tools/lbctl --config "$cfg" stats --watch 1
else
  while :; do
    clear
    echo "lbd counters (dpdk-telemetry /lb/stats), $(date +%T)"
    python3 tests/e2e/lbenv.py lb stats
    echo "pool: $(states)"
    sleep 1
  done
fi
