#!/usr/bin/env bash
# lbd against the kernel on the same namespaces, same backends, same wrk runs (not a test).
#
# The kernel peer is an nftables DNAT round-robin balancer (`numgen inc mod 3`; this kernel has
# no IPVS) with conntrack, in its own namespace that takes over lbd's two veth ends and
# addresses (10.10.0.1 + VIP 10.10.0.100, 10.20.0.1), so clients, backends and routes are the
# very same. Runs alternate lbd / nftables, ROUNDS times, for each load:
#   keepalive   wrk -c 16 over persistent connections
#   newconn     wrk -c 16 with "Connection: close": one TCP connection per request
# and print req/s and p50/p99 latency (medians over rounds) and the ratio lbd / nftables. Each
# round's line also gives, for lbd's runs, how often per second the kernel took its worker's CPU
# away (involuntary context switches: packets wait while it is off its CPU, where nftables' NAT
# runs in softirq and never waits for the scheduler), and the load average at the end of the
# round (other work on the machine; docs/benchmarking.md, "Where lbd's tail comes from").
#
# --mode (lbd's forward, docs/configuration.md):
#   dnat     (default) both balancers DNAT; the backends route the clients via 10.20.0.1
#   tunnel   lbd: direct server return over IPIP (tools/netns.sh --dsr: the VIP on the backends'
#            lo, their answers go straight to the client over r0); each backend decapsulates
#            with lb-decap (this kernel has no ipip module: a user-space TUN decapsulator, whose
#            cost is in lbd's figures) and lb-backend listens on *:80. The kernel baseline is
#            nftables DNAT to :80, the backends' route to the clients switched to 10.20.0.1 for
#            its runs (DSR has no kernel balancer here)
#   fullnat  lbd: full-NAT from 10.20.0.50-57 (tools/netns.sh --fullnat: the backends have no
#            route to the clients); nftables: DNAT + masquerade on the backend side
#
# --pin: wrk and the backends on CPU 0, the balancer (lbd's worker, nftables' softirq) on CPU 1.
#
# --napi softirq|threaded:CPUS|busy: where veth's receive for lbd's ports runs (below).
#
# --pmd af_xdp|af_packet: lbd's ports (default af_xdp). With af_packet the kernel copies each
#   frame into the socket's ring in the receive softirq after RPS, so with --pin lbd's two veth
#   ends get rps_cpus = CPU 1 as nftables' do: that copy leaves the load's CPU. With af_xdp the
#   copy runs in veth's NAPI (the XDP program), before RPS: on the sender's CPU (--napi moves it).
#
# Usage: bench/e2e.sh [--mode dnat|tunnel|fullnat] [--pin] [--napi MODE] [--pmd PMD]
#                     [SECONDS_PER_RUN] [ROUNDS]
#        (root; default dnat, 5 s, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=dnat
pin=0
napi=softirq
pmd=af_xdp
while [ $# -gt 0 ]; do
  case $1 in
    --mode) mode=${2:-}; shift 2 || true ;;
    --pin) pin=1; shift ;;
    --napi) napi=${2:-}; shift 2 || true ;;
    --pmd) pmd=${2:-}; shift 2 || true ;;
    *) break ;;
  esac
done
case $napi in
  softirq | busy | threaded:?*) ;;
  *) echo "bench/e2e.sh: --napi softirq, threaded:CPUS or busy, not '$napi'" >&2; exit 2 ;;
esac
case $pmd in
  af_xdp | af_packet) ;;
  *) echo "bench/e2e.sh: --pmd af_xdp or af_packet, not '$pmd'" >&2; exit 2 ;;
esac
[ $pmd = af_packet ] && [ $napi != softirq ] && {
  echo "bench/e2e.sh: --napi is for af_xdp's NAPI; with af_packet, --pin sets RPS" >&2; exit 2; }
case $mode in
  dnat) netns_opt=() ;;
  tunnel) netns_opt=(--dsr) ;;
  fullnat) netns_opt=(--fullnat) ;;
  *) echo "bench/e2e.sh: --mode dnat, tunnel or fullnat, not '$mode'" >&2; exit 2 ;;
esac
secs=${1:-5}
rounds=${2:-3}
. bench/common.sh
# --pin: wrk and the backends (every process in their namespaces) are held to CPU 0 and the
# balancer gets CPU 1, as where it is deployed: lbd's worker by its lcore (--lcores 1@1, its
# other threads on CPU 0), nftables' NAT by RPS on its two interfaces (rps_cpus = CPU 1: the
# softirq that runs the NAT moves off the sender's CPU). The load then has one CPU in both, and
# each balancer one of its own.
all_cpus=0-$(($(nproc) - 1))
load_cpus=$all_cpus
pin_load() {  # pin_load CPUS: wrk and every backend thread on those CPUs from now on
  [ $pin = 1 ] || return 0
  load_cpus=$1
  # every process in the backends' namespaces (bench_pids holds the subshells that started them)
  for i in 1 2 3; do
    for pid in $(ip netns pids $p-b$i); do taskset -apc "$1" "$pid" >/dev/null; done
  done
}
bench_extra_cleanup() { ip netns del $p-nft 2>/dev/null || true; }
bench_init bench/e2e.sh lbb 3 "${netns_opt[@]}"

# In tunnel mode the inner packet keeps the VIP's port: the backends listen on *:80.
bport=8080
[ $mode = tunnel ] && bport=80
for i in 1 2 3; do
  if [ $mode = tunnel ]; then
    start_backend b$i 0.0.0.0 80 8 http://10.20.0.1$i/
    start_bg nsx $p-b$i "$build/tools/lb-decap"
  else
    start_backend b$i 10.20.0.1$i 8080 8
  fi
done

fullnat_cfg=
# Eight local addresses: each port waits flows.fullnat_port_hold (60 s, the backends' TIME_WAIT)
# after its flow, so one address sustains ~64512 / 60 = 1,075 new connections/s; wrk's newconn
# runs reach ~8,000/s for minutes of rounds.
[ $mode = fullnat ] && fullnat_cfg='fullnat_addresses = [ "10.20.0.50", "10.20.0.51", "10.20.0.52",
  "10.20.0.53", "10.20.0.54", "10.20.0.55", "10.20.0.56", "10.20.0.57" ];'
cat >"$tmp/lbd.cfg" <<CFG
instance = "$p";
dataplane: { workers = 1; flows = { capacity = 262144; tcp_closed_timeout = 2; }; $fullnat_cfg
  ports = ( { name = "client";  device = "net_${pmd}_${p}0,iface=$p-c"; ip = "10.10.0.1/24"; },
            { name = "backend"; device = "net_${pmd}_${p}1,iface=$p-b"; ip = "10.20.0.1/24"; } ); };
services = ( { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr"; forward = "$mode";
  backends = ( { address = "10.20.0.11"; port = $bport; }, { address = "10.20.0.12"; port = $bport; },
               { address = "10.20.0.13"; port = $bport; } ); } );
CFG

vip_answers() { nsx $p-client ping -c1 -W1 10.10.0.100; }
# --napi MODE: how the receive side of lbd's two veth ends runs (veth's NAPI, where the XDP
# program redirects each frame into the AF_XDP socket and copies it):
#   softirq      (default) the kernel's default: in the softirq of the sender's CPU (wrk's or a
#                backend's), so with --pin on the load's CPU
#   threaded:CPUS  NAPI kernel threads, held to CPUS
#   busy         DPDK's af_xdp guide's settings for preferred busy polling (napi_defer_hard_irqs
#                2, gro_flush_timeout 200 us): the NAPI is left to the socket's busy poll, which
#                lbd's worker runs on every empty receive (busy_budget, on by default)
napi_mode() {  # napi_mode on|off
  local ifc t
  case $napi in
    softirq) ;;
    threaded:*)
      for ifc in $p-c $p-b; do echo "$([ "$1" = on ] && echo 1 || echo 0)" >/sys/class/net/$ifc/threaded; done
      [ "$1" = on ] || return 0
      for t in $(ps -e -o pid=,comm= | awk -v c="napi/$p-c-" -v b="napi/$p-b-" \
        'index($2, c) == 1 || index($2, b) == 1 { print $1 }'); do
        taskset -pc "${napi#threaded:}" "$t" >/dev/null
      done ;;
    busy)
      for ifc in $p-c $p-b; do
        echo "$([ "$1" = on ] && echo 2 || echo 0)" >/sys/class/net/$ifc/napi_defer_hard_irqs
        echo "$([ "$1" = on ] && echo 200000 || echo 0)" >/sys/class/net/$ifc/gro_flush_timeout
      done ;;
  esac
}
# --pin with af_packet: the receive softirq of lbd's veth ends (where af_packet copies each frame
# into its ring) on the balancer's CPU, by RPS, as for nftables.
lbd_rps() {  # lbd_rps MASK
  [ $pin = 1 ] && [ $pmd = af_packet ] || return 0
  local ifc
  for ifc in $p-c $p-b; do echo "$1" >/sys/class/net/$ifc/queues/rx-0/rps_cpus; done
}
lbd_on() { lbd_start "$tmp/lbd.cfg" 1024 vip_answers && napi_mode on && lbd_rps 2 && sleep 1.2; }
lbd_off() { lbd_rps 0; napi_mode off; lbd_stop; }

# tunnel: the backends' answers go via lbd's address for nftables' runs (it must see them to
# undo its DNAT), straight to the client (r0, 10.20.0.200) for lbd's.
backends_return_via() {
  [ $mode = tunnel ] || return 0
  for i in 1 2 3; do nsx $p-b$i ip route replace 10.10.0.0/24 via $1; done
}

nft_on() {  # the kernel balancer takes lbd's interfaces and addresses
  ip netns add $p-nft
  ip link set $p-c netns $p-nft
  ip link set $p-b netns $p-nft
  nsx $p-nft sh -c "
    ip link set lo up
    ip addr add 10.10.0.1/24 dev $p-c; ip addr add 10.10.0.100/32 dev $p-c; ip link set $p-c up
    ip addr add 10.20.0.1/24 dev $p-b; ip link set $p-b up
    sysctl -qw net.ipv4.ip_forward=1
    ethtool -K $p-c tx off tso off gso off >/dev/null 2>&1 || true
    ethtool -K $p-b tx off tso off gso off >/dev/null 2>&1 || true"
  if [ $pin = 1 ]; then
    for ifc in $p-c $p-b; do nsx $p-nft sh -c "echo 2 > /sys/class/net/$ifc/queues/rx-0/rps_cpus"; done
  fi
  local snat=""
  [ $mode = fullnat ] && snat="chain postrouting { type nat hook postrouting priority srcnat; oifname \"$p-b\" masquerade; }"
  nsx $p-nft nft -f - <<NFT
table ip lb {
  chain prerouting {
    type nat hook prerouting priority dstnat;
    ip daddr 10.10.0.100 tcp dport 80 dnat to numgen inc mod 3 map { 0 : 10.20.0.11, 1 : 10.20.0.12, 2 : 10.20.0.13 } : $bport
  }
  $snat
}
NFT
  backends_return_via 10.20.0.1
  # the client's neighbour entry for the VIP/gateway belongs to lbd's MAC: forget it
  nsx $p-client ip neigh flush all
  for i in 1 2 3; do nsx $p-b$i ip neigh flush all; done
}
nft_off() {
  for ifc in $p-c $p-b; do nsx $p-nft sh -c "echo 0 > /sys/class/net/$ifc/queues/rx-0/rps_cpus"; done
  nsx $p-nft ip link set $p-c netns 1
  nsx $p-nft ip link set $p-b netns 1
  ip netns del $p-nft
  for ifc in $p-c $p-b; do
    ip addr flush dev $ifc
    sysctl -qw net.ipv6.conf.$ifc.disable_ipv6=1 2>/dev/null || true
    ethtool -K $ifc tx off tso off gso off >/dev/null 2>&1 || true
    ip link set $ifc up
  done
  backends_return_via 10.20.0.200
  nsx $p-client ip neigh flush all
  for i in 1 2 3; do nsx $p-b$i ip neigh flush all; done
}

# Involuntary context switches of lbd's worker so far (0 when lbd is not running).
worker_preempted() {
  local t
  [ -n "$lbd_pid" ] || { echo 0; return; }
  t=$(grep -l '^rte-worker' /proc/$lbd_pid/task/*/comm 2>/dev/null | head -1) || true
  [ -n "$t" ] || { echo 0; return; }
  awk '/^nr_involuntary_switches/ { print $3 }' "${t%/comm}/sched"
}

run_wrk() {  # run_wrk LOAD -> "req/s p50_ms p99_ms errors"; the worker's preemptions/s in $preempt
  local hdr=() before
  [ "$1" = newconn ] && hdr=(-H "Connection: close")
  before=$(worker_preempted)
  nsx $p-client taskset -c "$load_cpus" wrk -t 2 -c 16 -d "${secs}s" --latency "${hdr[@]}" http://10.10.0.100/ \
    >"$tmp/wrk.out" 2>&1 || true
  preempt=$((($(worker_preempted) - before) / secs))
  wrk_stats "$tmp/wrk.out"
}

echo "bench/e2e.sh --mode $mode$([ $pin = 1 ] && echo ' --pin') --pmd $pmd: $rounds round(s) of $secs s per run"
declare -A res
for r in $(seq 1 "$rounds"); do
  pin_load 0
  lbd_on || { echo "lbd did not come up" >&2; exit 1; }
  preempts=()
  for load in keepalive newconn; do
    run_wrk $load >"$tmp/stats"
    res[lbd,$load,$r]=$(cat "$tmp/stats")
    preempts+=("$preempt")
  done
  lbd_off
  nft_on
  for load in keepalive newconn; do res[nft,$load,$r]=$(run_wrk $load); done
  nft_off
  echo "round $r: lbd keepalive ${res[lbd,keepalive,$r]} newconn ${res[lbd,newconn,$r]} |" \
    "nftables keepalive ${res[nft,keepalive,$r]} newconn ${res[nft,newconn,$r]}" \
    "(req/s p50_ms p99_ms errors); lbd's worker preempted ${preempts[0]}/s, ${preempts[1]}/s;" \
    "load average $(cut -d' ' -f1 /proc/loadavg)"
done

python3 - "$rounds" "$(for k in "${!res[@]}"; do echo "$k=${res[$k]}"; done)" <<'PY'
import statistics, sys
rounds = int(sys.argv[1])
res = {}
for line in sys.argv[2].splitlines():
    k, v = line.split("=")
    res[tuple(k.split(","))] = [float(x) for x in v.split()]
print()
print(f"{'':10} {'':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   (medians of {rounds} alternating runs)")
for mode in ("keepalive", "newconn"):
    med = {}
    for lb in ("lbd", "nft"):
        runs = [res[(lb, mode, str(r))] for r in range(1, rounds + 1)]
        med[lb] = [statistics.median(x[i] for x in runs) for i in range(4)]
        print(f"{mode:10} {('lbd' if lb == 'lbd' else 'nftables'):10} {med[lb][0]:9.0f} "
              f"{med[lb][1]:8.3f} {med[lb][2]:8.3f} {sum(x[3] for x in runs):7.0f}")
    pair = [res[("lbd", mode, str(r))][0] / res[("nft", mode, str(r))][0] for r in range(1, rounds + 1)]
    print(f"{mode:10} lbd/nftables req/s ratio: {statistics.median(pair):.2f} "
          f"(per round: {', '.join(f'{x:.2f}' for x in pair)})")
PY
