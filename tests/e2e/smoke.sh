#!/usr/bin/env bash
# End-to-end smoke: lbd on net_af_packet over veth pairs, a client namespace, three HTTP backends
# in their own namespaces on a bridge. 30 new connections through the VIP must be spread exactly
# round robin (10 each), and the client must only ever talk to the VIP.
# Usage: smoke.sh LBD_BINARY [WORKERS]. Exit 77 (skip) when namespaces cannot be made here.
# With 2 workers (two lcores sharing the second CPU on a 2-core machine) af_packet spreads packets
# over two queue pairs by its own fanout hash, so flows cross workers through the handoff rings.
set -u
lbd=${1:?usage: smoke.sh LBD [WORKERS]}
workers=${2:-1}
p=lbs$workers  # prefix of everything this script creates
tmp=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in ${p}-client ${p}-sw ${p}-b1 ${p}-b2 ${p}-b3; do
    # whatever this script started inside its own namespaces goes with them
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  ip link del ${p}-c 2>/dev/null
  ip link del ${p}-b 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
cleanup  # leftovers of an earlier run that was killed
ip netns add ${p}-probe 2>/dev/null || skip "cannot create network namespaces here"
ip netns del ${p}-probe
command -v curl >/dev/null || skip "curl not installed"

set -e
nsx() { ip netns exec "$@"; }
offload_off() { nsx "$1" ethtool -K "$2" tx off tso off gso off >/dev/null 2>&1 || true; }

# client side: lbs-c (lbd, host namespace) <-> c0 (client namespace)
ip netns add ${p}-client
ip link add ${p}-c type veth peer name c0 netns ${p}-client
nsx ${p}-client ip addr add 10.10.0.50/24 dev c0
nsx ${p}-client ip link set c0 up
nsx ${p}-client ip link set lo up
nsx ${p}-client ip route add default via 10.10.0.1
offload_off ${p}-client c0

# backend side: lbs-b (lbd) <-> sw0 on a bridge in the switch namespace, one veth per backend
ip netns add ${p}-sw
ip link add ${p}-b type veth peer name sw0 netns ${p}-sw
nsx ${p}-sw ip link add br0 type bridge
nsx ${p}-sw ip link set sw0 master br0
nsx ${p}-sw ip link set sw0 up
nsx ${p}-sw ip link set br0 up
offload_off ${p}-sw sw0
for i in 1 2 3; do
  ns=${p}-b$i
  ip netns add "$ns"
  nsx ${p}-sw ip link add sw$i type veth peer name eth0 netns "$ns"
  nsx ${p}-sw ip link set sw$i master br0
  nsx ${p}-sw ip link set sw$i up
  offload_off ${p}-sw sw$i
  nsx "$ns" ip addr add 10.20.0.1$i/24 dev eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip link set lo up
  nsx "$ns" ip route add default via 10.20.0.1
  offload_off "$ns" eth0
  mkdir -p "$tmp/www$i"
  echo "backend-$i" >"$tmp/www$i/name"
  nsx "$ns" python3 -m http.server 8080 --bind 10.20.0.1$i --directory "$tmp/www$i" \
    >"$tmp/http$i.log" 2>&1 &
  pids+=($!)
done
for ifc in ${p}-c ${p}-b; do
  sysctl -qw net.ipv6.conf.$ifc.disable_ipv6=1 || true
  ethtool -K $ifc tx off tso off gso off >/dev/null 2>&1 || true
  ip link set $ifc up
done

cat >"$tmp/lbd.cfg" <<CFG
dataplane: {
  workers = $workers;
  flows = { capacity = 65536; };
  ports = (
    { name = "client";  device = "net_af_packet_${p}0,iface=${p}-c,qpairs=$workers"; ip = "10.10.0.1/24"; },
    { name = "backend"; device = "net_af_packet_${p}1,iface=${p}-b,qpairs=$workers"; ip = "10.20.0.1/24"; }
  );
};
services = ( { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr";
  backends = ( { address = "10.20.0.11"; port = 8080; }, { address = "10.20.0.12"; port = 8080; },
               { address = "10.20.0.13"; port = 8080; } ); } );
CFG
lcores="0@0,1@1"
[ "$workers" -eq 1 ] || lcores="0@0,$(seq -s, -f '%g@1' 1 "$workers")"
"$lbd" --lcores "$lcores" --no-pci --no-huge -m 512 --file-prefix ${p} --log-level=lb:info \
  -- --config "$tmp/lbd.cfg" >"$tmp/lbd.log" 2>&1 &
lbd_pid=$!
pids+=($lbd_pid)
set +e

# Wait for lbd to answer ARP for the VIP and for the backends to listen.
ok=0
for _ in $(seq 1 100); do
  if nsx ${p}-client ping -c1 -W1 10.10.0.100 >/dev/null 2>&1; then ok=1; break; fi
  kill -0 $lbd_pid 2>/dev/null || break
  sleep 0.1
done
if [ $ok -ne 1 ]; then
  echo "FAIL: the VIP does not answer ping"; cat "$tmp/lbd.log"; [ -n "${LB_SMOKE_HOLD:-}" ] && sleep "$LB_SMOKE_HOLD"; exit 1
fi
for i in 1 2 3; do  # the backends listen
  for _ in $(seq 1 100); do
    nsx ${p}-b$i curl -s --max-time 1 -o /dev/null http://10.20.0.1$i:8080/name && break
    sleep 0.1
  done
done
sleep 1.5  # lbd resolves the backends' MACs within a second

declare -A seen
fails=0
for n in $(seq 1 30); do
  out=$(nsx ${p}-client curl -s --max-time 3 http://10.10.0.100/name)
  if [ -z "$out" ]; then fails=$((fails + 1)); continue; fi
  seen[$out]=$(( ${seen[$out]:-0} + 1 ))
done
echo "distribution over 30 new connections ($workers worker(s)): $(for k in "${!seen[@]}"; do printf '%s=%s ' "$k" "${seen[$k]}"; done)"
rc=0
[ $fails -eq 0 ] || { echo "FAIL: $fails of 30 requests failed"; rc=1; }
# Round robin is exact per worker: one worker gives 10 each; w workers each keep their own
# cursor, so the spread (max - min) is at most w.
min=30 max=0
for i in 1 2 3; do
  n=${seen[backend-$i]:-0}
  [ "$n" -lt "$min" ] && min=$n
  [ "$n" -gt "$max" ] && max=$n
done
if [ $((max - min)) -gt "$workers" ] || { [ "$workers" -eq 1 ] && [ "$min" -ne 10 ]; }; then
  echo "FAIL: spread $min..$max is not round robin for $workers worker(s)"
  rc=1
fi
# Backends saw the client's real address (NAT keeps it).
grep -q "10.10.0.50" "$tmp/http1.log" || { echo "FAIL: backend did not see the client address"; rc=1; }
[ $rc -eq 0 ] || [ -z "${LB_SMOKE_HOLD:-}" ] || sleep "$LB_SMOKE_HOLD"
kill -TERM $lbd_pid
wait $lbd_pid
lrc=$?
[ $lrc -eq 0 ] || { echo "FAIL: lbd exited $lrc on SIGTERM"; rc=1; }
[ $rc -eq 0 ] || { echo "--- lbd log"; cat "$tmp/lbd.log"; }
[ $rc -eq 0 ] || [ -z "${LB_SMOKE_HOLD:-}" ] || sleep "$LB_SMOKE_HOLD"
[ $rc -eq 0 ] && echo "PASS"
exit $rc
