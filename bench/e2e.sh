#!/usr/bin/env bash
# lbd against the kernel on the same namespaces, same backends, same wrk runs (not a test).
#
# The kernel peer is an nftables DNAT round-robin balancer (`numgen inc mod 3`; this kernel has
# no IPVS) with conntrack, in its own namespace that takes over lbd's two veth ends and
# addresses (10.10.0.1 + VIP 10.10.0.100, 10.20.0.1), so clients, backends and routes are the
# very same. Runs alternate lbd / nftables, ROUNDS times, for each mode:
#   keepalive   wrk -c 16 over persistent connections
#   newconn     wrk -c 16 with "Connection: close": one TCP connection per request
# and print req/s and p50/p99 latency (medians over rounds) and the ratio lbd / nftables.
#
# Usage: bench/e2e.sh [SECONDS_PER_RUN] [ROUNDS]     (root; default 5 s, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
[ "$(id -u)" -eq 0 ] || { echo "bench/e2e.sh: run as root" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench/e2e.sh: wrk missing (tools/install-deps.sh)" >&2; exit 1; }
[ -x build/dataplane/lbd ] || { echo "bench/e2e.sh: build first (ninja -C build)" >&2; exit 1; }

export LB_NS_PREFIX=lbb
p=$LB_NS_PREFIX
tmp=$(mktemp -d)
pids=()
lbd_pid=
cleanup() {
  [ -n "$lbd_pid" ] && kill "$lbd_pid" 2>/dev/null && wait "$lbd_pid" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  ip netns del $p-nft 2>/dev/null || true
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-$p-flows-* /dev/shm/lbd-$p-flows-*
  tools/netns.sh down >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nsx() { ip netns exec "$@"; }

tools/netns.sh down >/dev/null 2>&1 || true
tools/netns.sh up >/dev/null
for i in 1 2 3; do
  nsx $p-b$i build/tools/lb-backend --name b$i --listen 10.20.0.1$i --port 8080 --threads 8 \
    >/dev/null 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 50); do curl -s -o /dev/null --max-time 1 http://10.20.0.1$i:8080/ && break; sleep 0.1; done
done

cat >"$tmp/lbd.cfg" <<CFG
instance = "$p";
dataplane: { workers = 1; flows = { capacity = 262144; tcp_closed_timeout = 2; };
  ports = ( { name = "client";  device = "net_af_xdp_${p}0,iface=$p-c"; ip = "10.10.0.1/24"; },
            { name = "backend"; device = "net_af_xdp_${p}1,iface=$p-b"; ip = "10.20.0.1/24"; } ); };
services = ( { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr";
  backends = ( { address = "10.20.0.11"; port = 8080; }, { address = "10.20.0.12"; port = 8080; },
               { address = "10.20.0.13"; port = 8080; } ); } );
CFG

lbd_on() {
  build/dataplane/lbd --lcores 0@0,1@1 --no-pci --no-huge -m 1024 -- --config "$tmp/lbd.cfg" --fresh \
    >>"$tmp/lbd.log" 2>&1 &
  lbd_pid=$!
  for _ in $(seq 1 100); do
    nsx $p-client ping -c1 -W1 10.10.0.100 >/dev/null 2>&1 && { sleep 1.2; return 0; }
    sleep 0.1
  done
  cat "$tmp/lbd.log" >&2
  return 1
}
lbd_off() { kill "$lbd_pid"; wait "$lbd_pid" || true; lbd_pid=; }

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
  nsx $p-nft nft -f - <<'NFT'
table ip lb {
  chain prerouting {
    type nat hook prerouting priority dstnat;
    ip daddr 10.10.0.100 tcp dport 80 dnat to numgen inc mod 3 map { 0 : 10.20.0.11, 1 : 10.20.0.12, 2 : 10.20.0.13 } : 8080
  }
}
NFT
  # the client's neighbour entry for the VIP/gateway belongs to lbd's MAC: forget it
  nsx $p-client ip neigh flush all
  for i in 1 2 3; do nsx $p-b$i ip neigh flush all; done
}
nft_off() {
  nsx $p-nft ip link set $p-c netns 1
  nsx $p-nft ip link set $p-b netns 1
  ip netns del $p-nft
  for ifc in $p-c $p-b; do
    ip addr flush dev $ifc
    sysctl -qw net.ipv6.conf.$ifc.disable_ipv6=1 2>/dev/null || true
    ethtool -K $ifc tx off tso off gso off >/dev/null 2>&1 || true
    ip link set $ifc up
  done
  nsx $p-client ip neigh flush all
  for i in 1 2 3; do nsx $p-b$i ip neigh flush all; done
}

run_wrk() {  # run_wrk MODE -> "req/s p50_ms p99_ms errors"
  local hdr=()
  [ "$1" = newconn ] && hdr=(-H "Connection: close")
  nsx $p-client wrk -t 2 -c 16 -d "${secs}s" --latency "${hdr[@]}" http://10.10.0.100/ \
    >"$tmp/wrk.out" 2>&1 || true
  python3 - "$tmp/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
if "Requests/sec" not in t:
    print("0 0 0 1")
    sys.stderr.write("wrk failed:\n" + t)
    sys.exit(0)
def ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m: raise SystemExit(f"cannot read latency {s!r} in:\n{t}")
    v, u = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
err = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {err + (int(non2xx.group(1)) if non2xx else 0)}")
PY
}

declare -A res
for r in $(seq 1 "$rounds"); do
  lbd_on || { echo "lbd did not come up" >&2; exit 1; }
  for mode in keepalive newconn; do res[lbd,$mode,$r]=$(run_wrk $mode); done
  lbd_off
  nft_on
  for mode in keepalive newconn; do res[nft,$mode,$r]=$(run_wrk $mode); done
  nft_off
  echo "round $r: lbd keepalive ${res[lbd,keepalive,$r]} newconn ${res[lbd,newconn,$r]} |" \
    "nftables keepalive ${res[nft,keepalive,$r]} newconn ${res[nft,newconn,$r]}" \
    "(req/s p50_ms p99_ms errors)"
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
