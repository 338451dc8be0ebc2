#!/usr/bin/env bash
# A fleet of lbd nodes behind a BGP/ECMP router, on this machine, out of network namespaces
# (docs/operations.md#running-a-fleet; the suite `fleet` runs its scenarios on it):
#
#   [ns P-client] c0 10.40.0.50 ── rc 10.40.0.1 [ns P-router: BIRD, ECMP over BGP routes,
#                                                  fib_multipath_hash_policy = 1 (L4 hash)]
#                                   rnI 10.3I.0.1 ──┐            rb 10.20.0.1 ──┐
#   [ns P-nI] (one per node, I = 1..N)              │                           │
#     br0 10.3I.0.3 (the kernel: BIRD's BGP session)┤                           │
#     f0  lbd's port "front" 10.3I.0.2 (af_packet) ─┘  the VIP's next hop       │
#     b0  lbd's port "back" 10.20.0.2I (af_packet) ──────────────────── br0 [ns P-sw]
#     m0  10.20.0.25I (the kernel: lb-healthd's checks) ─────────────────────── ┤
#   [ns P-bJ] eth0 10.20.0.1J, VIP 10.100.0.100 on lo, lb-decap, lb-backend :80 ┘
#
# Each node runs lbd (scheduler maglev, forward tunnel, dataplane.idle sleep, the same Maglev
# seed on every node), its lb-healthd (whose bgp group writes the node's BIRD config) and its own
# BIRD; the router's BIRD peers with every node (AS 65000 <- AS 65001) and installs one multipath
# route to the VIP. The backends answer the client directly (DSR): backend -> router -> client.
#
# Usage: tools/fleet.sh up|down|status|routes|kill-lbd I|start-lbd I|kill-node I|start-node I|
#                       lbctl I ARGS...
#   up          builds the namespaces, starts everything, waits (bounded) until the router routes
#               the VIP over every node
#   down        stops what `up` started and removes the namespaces, whatever state they are in
#   routes      the router's route to the VIP
#   kill-lbd    kill -9 node I's lbd (its lb-healthd then withdraws the VIP: bgp.lbd_timeout_ms)
#   start-lbd   starts node I's lbd again (its lb-healthd attaches and announces again)
#   kill-node   node I vanishes: cut from the router, then lbd, lb-healthd and BIRD killed with
#               kill -9 (the router withdraws it when its BGP hold timer expires)
#   start-node  links node I to the router again and starts its lbd, lb-healthd and BIRD
#   lbctl       lbctl for node I
# Env: LB_FLEET_PREFIX (default "fl"), LB_FLEET_NODES (2, at most 4), LB_FLEET_BACKENDS (3, at
# most 9), LB_FLEET_HOLD (BGP hold time, s, default 3), LB_BUILD (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
p=${LB_FLEET_PREFIX:-fl}
nodes=${LB_FLEET_NODES:-2}
nb=${LB_FLEET_BACKENDS:-3}
hold=${LB_FLEET_HOLD:-3}
build=${LB_BUILD:-$root/build}
run=/tmp/lbd-fleet-$p
vip=10.100.0.100
[[ $nodes =~ ^[1-4]$ ]] || { echo "fleet.sh: LB_FLEET_NODES must be 1..4" >&2; exit 2; }
[[ $nb =~ ^[1-9]$ ]] || { echo "fleet.sh: LB_FLEET_BACKENDS must be 1..9" >&2; exit 2; }

nsx() { ip netns exec "$@"; }
has_ns() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
offload_off() { nsx "$1" ethtool -K "$2" tx off tso off gso off >/dev/null 2>&1 || true; }
need() {
  [ "$(id -u)" -eq 0 ] || { echo "fleet.sh: must run as root (namespaces, DPDK)" >&2; exit 1; }
  command -v bird >/dev/null || { echo "fleet.sh: bird not installed (apt-get install bird2)" >&2; exit 1; }
  for b in dataplane/lbd healthd/lb-healthd tools/lb-decap tools/lb-backend tools/lbctl; do
    [ -x "$build/$b" ] || { echo "fleet.sh: $build/$b missing: build first" >&2; exit 1; }
  done
}
wait_until() {  # wait_until SECONDS COMMAND...
  local end=$((SECONDS + $1))
  shift
  until "$@"; do [ $SECONDS -ge $end ] && return 1; sleep 0.2; done
}
start() {  # start NAME NS COMMAND...: in the background, its pid kept in $run/NAME.pid
  local name=$1 ns=$2
  shift 2
  # exec, and `ip netns exec` execs too: $! is the command itself. (A function run in the
  # background is a subshell whose child is the command: kill -9 of $! left lbd running.)
  (exec ip netns exec "$ns" "$@" >"$run/$name.log" 2>&1) &
  echo $! >"$run/$name.pid"
}
veth() {  # veth NS1 IF1 NS2 IF2
  nsx "$1" ip link show "$2" >/dev/null 2>&1 && return 0
  ip link add "$p-tmp" type veth peer name "$p-tmq"
  ip link set "$p-tmp" netns "$1"
  ip link set "$p-tmq" netns "$3"
  nsx "$1" ip link set "$p-tmp" name "$2"
  nsx "$3" ip link set "$p-tmq" name "$4"
  for x in "$1 $2" "$3 $4"; do
    set -- $x
    nsx "$1" ip link set "$2" up
    offload_off "$1" "$2"
  done
}
bridge() {  # bridge NS BR
  nsx "$1" ip link show "$2" >/dev/null 2>&1 || nsx "$1" ip link add "$2" type bridge
  nsx "$1" ip link set "$2" up
}

node_config() {  # node_config I: lbd's (and lb-healthd's) config for node I
  local i=$1 backends=""
  for j in $(seq 1 "$nb"); do
    backends+="      { address = \"10.20.0.1$j\"; port = 80; },"$'\n'
  done
  cat <<EOC
# tools/fleet.sh node $i
instance = "$p-n$i";
dataplane: {
  workers = 1;
  idle = { mode = "sleep"; };  # several nodes and a router share two cores
  ports = (
    { name = "front"; device = "net_af_packet0,iface=f0"; ip = "10.3$i.0.2/24";
      gateway = "10.3$i.0.1"; vip_arp = "none"; },
    { name = "back"; device = "net_af_packet1,iface=b0"; ip = "10.20.0.2$i/24"; }
  );
  flows = { persist = false; };
};
services = (
  { name = "web"; vip = "$vip"; port = 80; scheduler = "maglev"; forward = "tunnel";
    health = { interval_ms = 500; timeout_ms = 300; rise = 2; fall = 2; };
    backends = (
${backends%,$'\n'}
    );
  }
);
healthd = { control_socket = "$run/n$i.sock"; state_file = ""; metrics_listen = ""; };
bgp = {
  local_as = 65001;
  router_id = "10.3$i.0.3";
  next_hop = "10.3$i.0.2";
  neighbors = ( { address = "10.3$i.0.1"; as = 65000; } );
  hold_time = $hold;
  lbd_timeout_ms = 1000;  # an lbd whose heartbeat stops this long is withdrawn (fleet_test.py)
  communities = [ "65000:100" ];
  bird_config = "$run/n$i-bird.conf";
  bird_socket = "$run/n$i-bird.ctl";
};
EOC
}

router_config() {
  echo "router id 10.40.0.1;"
  echo "protocol device {}"
  # merge paths: the equal BGP routes of every node become one multipath kernel route.
  echo "protocol kernel { ipv4 { import none; export all; }; merge paths on; }"
  for i in $(seq 1 "$nodes"); do
    echo "protocol bgp n$i { local as 65000; neighbor 10.3$i.0.3 as 65001; hold time $hold;"
    # error wait time: after a session error (the hold timer of a vanished node) BIRD waits
    # 60 s by default before it accepts the node again; the fleet's nodes come back in seconds.
    echo "  keepalive time 1; connect retry time 1; error wait time 1, 5;"
    echo "  ipv4 { import all; export none; }; }"
  done
}

vip_paths() {  # how many next hops the router's kernel has for the VIP
  nsx $p-router ip route show $vip 2>/dev/null | grep -c "nexthop via" || true
}
vip_routed() {  # vip_routed N: the router has N next hops (1: a plain route)
  if [ "$1" -eq 1 ]; then
    nsx $p-router ip route show $vip 2>/dev/null | grep -q "via 10.3"
  else
    [ "$(vip_paths)" -eq "$1" ]
  fi
}

up() {
  need
  mkdir -p "$run"
  for ns in client router sw; do has_ns $p-$ns || ip netns add $p-$ns; done
  for ns in client router sw; do nsx $p-$ns ip link set lo up; done
  # client <-> router
  veth $p-client c0 $p-router rc
  nsx $p-client ip addr replace 10.40.0.50/24 dev c0
  nsx $p-client ip route replace default via 10.40.0.1
  nsx $p-router ip addr replace 10.40.0.1/24 dev rc
  nsx $p-router sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  # the backends' LAN, which the router joins for the replies
  bridge $p-sw br0
  veth $p-router rb $p-sw srb
  nsx $p-sw ip link set srb master br0
  nsx $p-router ip addr replace 10.20.0.1/24 dev rb
  for j in $(seq 1 "$nb"); do
    ns=$p-b$j
    has_ns $ns || ip netns add $ns
    nsx $ns ip link set lo up
    veth $p-sw sb$j $ns eth0
    nsx $p-sw ip link set sb$j master br0
    nsx $ns ip addr replace 10.20.0.1$j/24 dev eth0
    nsx $ns ip addr replace $vip/32 dev lo
    nsx $ns sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    nsx $ns ip route replace default via 10.20.0.1
  done
  for i in $(seq 1 "$nodes"); do
    ns=$p-n$i
    has_ns $ns || ip netns add $ns
    nsx $ns ip link set lo up
    bridge $ns br0
    veth $p-router rn$i $ns rl
    nsx $ns ip link set rl master br0
    veth $ns f0 $ns fp
    nsx $ns ip link set fp master br0
    nsx $ns ip addr replace 10.3$i.0.3/24 dev br0
    nsx $p-router ip addr replace 10.3$i.0.1/24 dev rn$i
    veth $ns b0 $p-sw sd$i
    nsx $p-sw ip link set sd$i master br0
    veth $ns m0 $p-sw sm$i
    nsx $p-sw ip link set sm$i master br0
    nsx $ns ip addr replace 10.20.0.25$i/24 dev m0
    for ifc in f0 b0; do nsx $ns sysctl -qw net.ipv6.conf.$ifc.disable_ipv6=1 || true; done
  done

  # processes
  router_config >"$run/router-bird.conf"
  start router-bird $p-router bird -f -c "$run/router-bird.conf" -s "$run/router-bird.ctl" \
    -P "$run/router-bird.bpid"
  for j in $(seq 1 "$nb"); do
    start backend-$j $p-b$j "$build/tools/lb-backend" --name backend-$j --listen 0.0.0.0 --port 80
    start decap-$j $p-b$j "$build/tools/lb-decap"
  done
  for i in $(seq 1 "$nodes"); do
    node_config "$i" >"$run/n$i.cfg"
    start_node "$i"
  done
  for j in $(seq 1 "$nb"); do
    wait_until 10 nsx $p-n1 curl -s -o /dev/null --max-time 1 http://10.20.0.1$j/healthcheck ||
      { echo "fleet.sh: backend-$j does not answer" >&2; exit 1; }
  done
  if ! wait_until 30 vip_routed "$nodes"; then
    echo "fleet.sh: the router does not route $vip over $nodes node(s):" >&2
    routes >&2
    exit 1
  fi
  echo "fleet.sh: up: client $p-client (10.40.0.50) -> router $p-router -> $nodes node(s)," \
    "VIP $vip over $(vip_paths) next hops; $nb backends (tunnel mode); files in $run"
}

start_lbd() {  # start_lbd I: node I's lbd (its running lb-healthd attaches to the new one)
  local i=$1
  rm -f /dev/shm/lbd-$p-n$i
  start lbd-$i $p-n$i "$build/dataplane/lbd" --lcores 0@0,1@1 --no-pci --no-huge -m 256 -- \
    --config "$run/n$i.cfg"
}

start_node() {  # start_node I: lbd, lb-healthd and BIRD of node I, linked to the router again
  local i=$1 ns=$p-n$1
  nsx $ns ip link set rl master br0  # kill-node cut it
  start_lbd "$i"
  # lb-healthd writes BIRD's config (bgp group) before BIRD starts: a file left by an earlier
  # run would have BIRD announce the VIP before lb-healthd has seen this lbd alive.
  rm -f "$run/n$i-bird.conf"
  start healthd-$i $ns "$build/healthd/lb-healthd" --config "$run/n$i.cfg"
  wait_until 10 test -s "$run/n$i-bird.conf" ||
    { echo "fleet.sh: node $i: lb-healthd wrote no BIRD config" >&2; cat "$run/healthd-$i.log" >&2; exit 1; }
  start bird-$i $ns bird -f -c "$run/n$i-bird.conf" -s "$run/n$i-bird.ctl"
  # BIRD must not outlive lb-healthd (docs/architecture.md#announcing-vips): when lb-healthd
  # exits, its BIRD goes and the BGP session closes.
  local hpid bpid
  hpid=$(cat "$run/healthd-$i.pid")
  bpid=$(cat "$run/bird-$i.pid")
  (tail --pid="$hpid" -f /dev/null; kill "$bpid" 2>/dev/null) >/dev/null 2>&1 &
  echo $! >"$run/watch-$i.pid"
}

kill_node() {  # kill_node I: node I vanishes as a host does when it loses power: cut from the
  # router first (no FIN or RST of a dying BIRD reaches it, only the hold timer can tell), then
  # lbd, lb-healthd and BIRD killed with SIGKILL.
  local i=$1
  nsx $p-n$i ip link set rl nomaster
  echo "cut $(date +%s.%N)"  # when the router last could hear from the node (fleet_test.py)
  for x in lbd healthd bird watch; do stop_pid "$run/$x-$i.pid" KILL; done
}

stop_pid() {  # stop_pid FILE [SIGNAL]
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  rm -f "$1"
}

down() {
  [ "$(id -u)" -eq 0 ] || { echo "fleet.sh: must run as root" >&2; exit 1; }
  if [ -d "$run" ]; then
    for f in "$run"/*.pid; do [ -e "$f" ] && stop_pid "$f"; done
    sleep 0.5
    for f in "$run"/*.pid; do [ -e "$f" ] && stop_pid "$f" KILL; done
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$p-(client|router|sw|n[0-9]|b[0-9])$" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$p-tmp" 2>/dev/null || true
  rm -f /dev/shm/lbd-$p-n* 2>/dev/null || true
  rm -rf "$run" /var/run/dpdk/$p-n* 2>/dev/null || true
  echo "fleet.sh: down ($p)"
}

routes() {
  echo "router: $(nsx $p-router ip route show $vip | tr -s ' \n\t' ' ')"
  nsx $p-router birdc -s "$run/router-bird.ctl" show protocols 2>/dev/null | grep -E "^n[0-9]" || true
}

status() {
  for ns in client router sw $(seq -f "n%g" 1 "$nodes") $(seq -f "b%g" 1 "$nb"); do
    if has_ns $p-$ns; then echo "ns $p-$ns"; else echo "ns $p-$ns MISSING"; fi
  done
  for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then s=running; else s=gone; fi
    echo "$(basename "$f" .pid): $s"
  done
  routes
}

cmd=${1:-status}
shift || true
case $cmd in
  up) up ;;
  down) down ;;
  status) status ;;
  routes) routes ;;
  kill-lbd) stop_pid "$run/lbd-$1.pid" KILL ;;
  start-lbd) start_lbd "$1" ;;
  kill-node) kill_node "$1" ;;
  start-node) start_node "$1" ;;
  lbctl) i=$1; shift; exec "$build/tools/lbctl" --config "$run/n$i.cfg" --socket "$run/n$i.sock" "$@" ;;
  *) echo "usage: fleet.sh up|down|status|routes|kill-lbd I|start-lbd I|kill-node I|start-node I|lbctl I ARGS..." >&2; exit 2 ;;
esac
