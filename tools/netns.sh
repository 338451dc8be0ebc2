#!/usr/bin/env bash
# A self-contained network for lbd on this machine, made of network namespaces and veth pairs:
#
#   [ns <p>-client] c0 10.10.0.50/24 ──veth── <p>-c  (lbd port "client", 10.10.0.1, VIP 10.10.0.100)
#                                               lbd
#   <p>-b (lbd port "backend", 10.20.0.1) ──veth── sw0 ┐
#   <p>-m 10.20.0.250 (host: healthd's probes) ─veth── swm ┤ br0 in [ns <p>-sw]
#   [ns <p>-b1] eth0 10.20.0.11 ─veth── sw1 ┤
#   [ns <p>-b2] eth0 10.20.0.12 ─veth── sw2 ┤
#   [ns <p>-b3] eth0 10.20.0.13 ─veth── sw3 ┘   (backends route 10.10.0.0/24 via 10.20.0.1 = lbd)
#
# lbd's ports are the host ends <p>-c and <p>-b (no addresses in the kernel: lbd owns them).
# The host reaches the backends for health checks through <p>-m, a management path that does not
# cross lbd. Offloads are off on every veth (a raw-socket or AF_XDP forwarder otherwise sees
# partial checksums), IPv6 is off on lbd's ends.
#
# --dsr (direct server return, lbd's forward = "tunnel"; docs/operations.md): the backends hold
# the VIP 10.10.0.100 on lo with arp_ignore=1 / arp_announce=2 and rp_filter off (also for the
# decapsulating device made later: tunl0, or lb-decap's decap0), and a return path r0
# 10.20.0.200/24 in the client namespace, on br0, is their route to 10.10.0.0/24: replies go
# backend -> br0 -> client, never through lbd. The decapsulator itself is the caller's to start.
#
# --fullnat (lbd's forward = "fullnat"; docs/operations.md, "Full-NAT"): the backends have NO
# route to the clients (10.10.0.0/24 is unreachable for them): only replies addressed to lbd's
# full-NAT address (in their own subnet, lbd answers ARP for it) can leave them.
#
# --narrow MTU (path MTU tests): one more backend, <p>-bn 10.40.0.10/24 (MTU 1500), behind two
# routers whose link has the given MTU, so that either router must answer a 1500-byte packet
# with ICMP fragmentation-needed (Linux sends it from the router's address):
#   br0 ── eth0 10.20.0.254 [ns <p>-r1] n0 10.30.0.1/30 ══MTU══ n0 10.30.0.2/30 [ns <p>-r2]
#       eth1 10.40.0.1/24 ── eth0 10.40.0.10 [ns <p>-bn]
# lbd reaches 10.40.0.10 through its backend port's gateway 10.20.0.254; <p>-r1 routes the
# clients via lbd (unreachable with --fullnat); the host's management path has a route too.
# With --dsr as well, <p>-bn is a DSR backend like the others (the VIP on lo, the sysctls) and
# <p>-r1 routes the clients via the return path r0 (10.20.0.200) but the VIP via lbd: an error
# r2 sends about the backend's answers (from the VIP) reaches lbd, which tunnels it to the backend.
#
# Usage: tools/netns.sh up|down|status [--backends N] [--prefix P] [--dsr|--fullnat]
#                                      [--narrow MTU]
#   up      idempotent: builds what is missing
#   down    removes everything with the prefix, whatever state it is in (also after a crash)
#   status  shows what exists
# Env: LB_NS_PREFIX (default "lb"), LB_NS_BACKENDS (default 3, at most 9).
set -euo pipefail

cmd=${1:-status}
shift || true
p=${LB_NS_PREFIX:-lb}
n=${LB_NS_BACKENDS:-3}
dsr=0
fullnat=0
narrow=
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) p=$2; shift 2 ;;
    --backends) n=$2; shift 2 ;;
    --dsr) dsr=1; shift ;;
    --fullnat) fullnat=1; shift ;;
    --narrow) narrow=$2; shift 2 ;;
    *) echo "netns.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $n =~ ^[1-9]$ ]] || { echo "netns.sh: --backends must be 1..9" >&2; exit 2; }
[ $dsr -eq 1 ] && [ $fullnat -eq 1 ] && { echo "netns.sh: --dsr or --fullnat, not both" >&2; exit 2; }
[ -z "$narrow" ] || [[ $narrow =~ ^[0-9]+$ && $narrow -ge 576 && $narrow -le 1500 ]] ||
  { echo "netns.sh: --narrow MTU must be 576..1500" >&2; exit 2; }

need_root() {
  [ "$(id -u)" -eq 0 ] || { echo "netns.sh: must run as root (ip netns)" >&2; exit 1; }
}
nsx() { ip netns exec "$@"; }
has_ns() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
has_link() { ip link show "$1" >/dev/null 2>&1; }
offload_off() {  # [ns] ifname
  if [ $# -eq 2 ]; then
    nsx "$1" ethtool -K "$2" tx off tso off gso off >/dev/null 2>&1 || true
  else
    ethtool -K "$1" tx off tso off gso off >/dev/null 2>&1 || true
  fi
}

up() {
  need_root
  # client
  has_ns $p-client || ip netns add $p-client
  if ! has_link $p-c; then
    ip link add $p-c type veth peer name c0 netns $p-client
  fi
  nsx $p-client ip addr replace 10.10.0.50/24 dev c0
  nsx $p-client ip link set c0 up
  nsx $p-client ip link set lo up
  nsx $p-client ip route replace default via 10.10.0.1
  offload_off $p-client c0

  # switch
  has_ns $p-sw || ip netns add $p-sw
  nsx $p-sw ip link show br0 >/dev/null 2>&1 || nsx $p-sw ip link add br0 type bridge
  nsx $p-sw ip link set br0 up
  if ! has_link $p-b; then
    ip link add $p-b type veth peer name sw0 netns $p-sw
  fi
  if ! has_link $p-m; then
    ip link add $p-m type veth peer name swm netns $p-sw
  fi
  for port in sw0 swm; do
    nsx $p-sw ip link set $port master br0
    nsx $p-sw ip link set $port up
    offload_off $p-sw $port
  done
  ip addr replace 10.20.0.250/24 dev $p-m
  ip link set $p-m up
  offload_off $p-m

  # backends
  for i in $(seq 1 "$n"); do
    ns=$p-b$i
    has_ns "$ns" || ip netns add "$ns"
    if ! nsx $p-sw ip link show sw$i >/dev/null 2>&1; then
      nsx $p-sw ip link add sw$i type veth peer name eth0 netns "$ns"
    fi
    nsx $p-sw ip link set sw$i master br0
    nsx $p-sw ip link set sw$i up
    offload_off $p-sw sw$i
    nsx "$ns" ip addr replace 10.20.0.1$i/24 dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip link set lo up
    if [ $fullnat -eq 1 ]; then
      nsx "$ns" ip route replace unreachable 10.10.0.0/24
    else
      nsx "$ns" ip route replace 10.10.0.0/24 via 10.20.0.1
    fi
    offload_off "$ns" eth0
  done

  [ $dsr -eq 1 ] && dsr_up
  [ -n "$narrow" ] && narrow_up

  # lbd's ends: no kernel addresses, no IPv6 chatter, offloads off
  for ifc in $p-c $p-b; do
    sysctl -qw net.ipv6.conf.$ifc.disable_ipv6=1 2>/dev/null || true
    offload_off $ifc
    ip link set $ifc up
  done
  echo "netns.sh: up: client $p-client (10.10.0.50), lbd ports $p-c/$p-b, backends" \
    "$(seq -s' ' -f "10.20.0.1%g" 1 "$n"), management $p-m (10.20.0.250)"
}

dsr_up() {
  if ! nsx $p-client ip link show r0 >/dev/null 2>&1; then
    ip link add $p-r type veth peer name r0 netns $p-client
    ip link set $p-r netns $p-sw
  fi
  nsx $p-sw ip link set $p-r master br0
  nsx $p-sw ip link set $p-r up
  offload_off $p-sw $p-r
  nsx $p-client ip addr replace 10.20.0.200/24 dev r0
  nsx $p-client ip link set r0 up
  offload_off $p-client r0
  # replies from the VIP arrive on r0 while the VIP routes via c0: no strict rp_filter
  nsx $p-client sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.r0.rp_filter=0
  for i in $(seq 1 "$n"); do
    ns=$p-b$i
    nsx "$ns" ip addr replace 10.10.0.100/32 dev lo
    nsx "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    nsx "$ns" ip route replace 10.10.0.0/24 via 10.20.0.200
  done
}

narrow_up() {
  local ns
  for ns in $p-r1 $p-r2 $p-bn; do
    has_ns $ns || ip netns add $ns
    nsx $ns ip link set lo up
  done
  nsx $p-sw ip link show swr >/dev/null 2>&1 ||
    nsx $p-sw ip link add swr type veth peer name eth0 netns $p-r1
  nsx $p-sw ip link set swr master br0
  nsx $p-sw ip link set swr up
  offload_off $p-sw swr
  nsx $p-r1 ip link show n0 >/dev/null 2>&1 ||
    nsx $p-r1 ip link add n0 type veth peer name n0 netns $p-r2
  nsx $p-r2 ip link show eth1 >/dev/null 2>&1 ||
    nsx $p-r2 ip link add eth1 type veth peer name eth0 netns $p-bn
  nsx $p-r1 ip addr replace 10.20.0.254/24 dev eth0
  nsx $p-r1 ip addr replace 10.30.0.1/30 dev n0
  nsx $p-r2 ip addr replace 10.30.0.2/30 dev n0
  nsx $p-r2 ip addr replace 10.40.0.1/24 dev eth1
  nsx $p-bn ip addr replace 10.40.0.10/24 dev eth0
  for ns in $p-r1 $p-r2; do
    nsx $ns ip link set n0 mtu "$narrow"
    nsx $ns sysctl -qw net.ipv4.ip_forward=1
  done
  for link in "$p-r1 eth0" "$p-r1 n0" "$p-r2 n0" "$p-r2 eth1" "$p-bn eth0"; do
    nsx "${link% *}" ip link set "${link#* }" up
    offload_off "${link% *}" "${link#* }"
  done
  nsx $p-r1 ip route replace 10.40.0.0/24 via 10.30.0.2
  if [ $fullnat -eq 1 ]; then
    nsx $p-r1 ip route replace unreachable 10.10.0.0/24
  elif [ $dsr -eq 1 ]; then
    nsx $p-r1 ip route replace 10.10.0.0/24 via 10.20.0.200
    nsx $p-r1 ip route replace 10.10.0.100/32 via 10.20.0.1
    nsx $p-bn ip addr replace 10.10.0.100/32 dev lo
    nsx $p-bn sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  else
    nsx $p-r1 ip route replace 10.10.0.0/24 via 10.20.0.1
  fi
  nsx $p-r2 ip route replace default via 10.30.0.1
  nsx $p-bn ip route replace default via 10.40.0.1
  ip route replace 10.40.0.0/24 via 10.20.0.254 dev $p-m
}

down() {
  need_root
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$p-(client|sw|b[0-9]|r1|r2|bn)$" || true); do
    # whatever runs inside our own namespaces goes with them
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for ifc in $p-c $p-b $p-m; do
    if has_link $ifc; then
      ip link set $ifc promisc off 2>/dev/null || true
      ip link del $ifc 2>/dev/null || true
    fi
  done
  echo "netns.sh: down ($p)"
}

status() {
  local rc=0
  for ns in $p-client $p-sw $(seq -f "$p-b%g" 1 "$n"); do
    if has_ns "$ns"; then echo "ns    $ns"; else echo "ns    $ns MISSING"; rc=1; fi
  done
  for ifc in $p-c $p-b $p-m; do
    if has_link $ifc; then
      echo "link  $(ip -br link show $ifc)"
    else
      echo "link  $ifc MISSING"
      rc=1
    fi
  done
  return $rc
}

case $cmd in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: netns.sh up|down|status [--backends N] [--prefix P] [--dsr|--fullnat]" >&2
     exit 2 ;;
esac
