#!/usr/bin/env bash
# The bare-metal pktgen procedure of docs/benchmarking.md, run here over memif: an installed
# pktgen-dpdk (23.06.1, with the memif MTU patch of docs/benchmarking.md) plays both of lbd's
# sides with tools/pktgen/*.lua, lbd runs as its memif client. Builds nothing.
#
#   pktgen (memif server, started first) ==c.sock==> lbd "client"  (VIP 10.10.0.100:80)
#                                        <==b.sock== lbd "backend" (gateway 10.20.0.2 = pktgen)
#
# usage: bench/pktgen.sh [--script syn|established] [--ips N --ports N] [--sizes "64 1500"]
#                        [--build DIR] [--pktgen PATH] [--map STRING] [--timeout S] [--keep]
# Exit 77 (skipped) when pktgen is not installed (--pktgen, $PKTGEN or `pktgen` on the PATH).
# It checks what it can check from lbd's side, whatever pktgen's figures say: every SYN of the
# sweep created a flow (flows_created = n_ips * n_ports) and nothing was dropped as
# neighbor_unresolved. The results (pktgen's lines, with lbd's own counts) are printed at the end.
# Needs root (DPDK runtime directory). pktgen's default pools want ~2.4 GB of hugepages for two
# ports: it runs with --no-huge -m 3072 here unless --huge is given.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
script=syn
n_ips=8
n_ports=125
sizes="64"
pktgen=${PKTGEN:-}
map="1.[0-1]"
timeout_s=300
keep=0
mem_pg="--no-huge -m 3072"
while [ $# -gt 0 ]; do
  case $1 in
    --script) script=$2; shift ;;
    --ips) n_ips=$2; shift ;;
    --ports) n_ports=$2; shift ;;
    --sizes) sizes=$2; shift ;;
    --build) build=$2; shift ;;
    --pktgen) pktgen=$2; shift ;;
    --map) map=$2; shift ;;
    --timeout) timeout_s=$2; shift ;;
    --huge) mem_pg="" ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "pktgen.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case $script in
  syn) lua=lbd-syn-sweep.lua ;;
  established) lua=lbd-established.lua ;;
  *) echo "pktgen.sh: --script syn or established" >&2; exit 2 ;;
esac
[ -n "$pktgen" ] || pktgen=$(command -v pktgen || true)
if [ -z "$pktgen" ] || [ ! -x "$pktgen" ]; then
  echo "SKIP: pktgen is not installed (pktgen-dpdk 23.06.1 built with -Denable_lua=true and the"
  echo "      memif MTU patch, see docs/benchmarking.md; or give --pktgen PATH / PKTGEN=PATH)"
  exit 77
fi
lbd=$build/dataplane/lbd
[ -x "$lbd" ] || { echo "pktgen.sh: $lbd not built (ninja -C build)" >&2; exit 2; }
command -v script > /dev/null || { echo "pktgen.sh: script(1) missing (bsdutils)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "pktgen.sh: run as root (DPDK runtime directory)" >&2; exit 2; }

work=$(mktemp -d /tmp/lbd-pktgen.XXXXXX)
tag=lbpg$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-lbd-flows-* /dev/shm/lbd-lbd-flows-* /dev/shm/lbd-lbd-services.json
  rm -rf /var/run/dpdk/${tag}* 2>/dev/null
  if [ $keep -eq 1 ]; then echo "pktgen.sh: files kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lbd_mac_c=02:00:00:00:02:01; lbd_mac_b=02:00:00:00:02:02
pg_mac_c=02:00:00:00:03:01; pg_mac_b=02:00:00:00:03:02
flows=$((n_ips * n_ports))

# lbd: the bare-metal configuration (tools/pktgen/lbd-baremetal.cfg) on memif client ports.
sed -e "s|device = \"0000:01:00.0\"|device = \"net_memif0,role=client,socket=$work/c.sock,socket-abstract=no,mac=$lbd_mac_c\"|" \
    -e "s|device = \"0000:01:00.1\"|device = \"net_memif1,role=client,socket=$work/b.sock,socket-abstract=no,mac=$lbd_mac_b\"|" \
    -e "s|capacity = 16777216;|capacity = 1048576;|" -e "s|mbufs = 65535;|mbufs = 16383;|" \
    -e "s|rx_descriptors = 2048; tx_descriptors = 2048;|rx_descriptors = 1024; tx_descriptors = 1024;|" \
    "$root/tools/pktgen/lbd-baremetal.cfg" > "$work/lbd.cfg"
grep -q "net_memif1" "$work/lbd.cfg" || { echo "pktgen.sh: could not adapt lbd-baremetal.cfg" >&2; exit 1; }
"$lbd" --config "$work/lbd.cfg" --check > /dev/null || exit 1

# The scripts' parameters for this run (lbd_params.lua reads LBD_PKTGEN_PARAMS).
lua_sizes=$(echo "$sizes" | tr ' ' ',')
cat > "$work/params.lua" <<EOF
return {
  lbd_client_mac = "$lbd_mac_c", lbd_backend_mac = "$lbd_mac_b",
  n_ips = $n_ips, n_ports = $n_ports, sizes = { $lua_sizes },
  samples = 3, warmup_s = 1, results = "$work/results.csv",
  lbd_stats_cmd = "python3 $root/bench/telemetry.py ${tag}l /lb/stats /lb/drops",
}
EOF

# pktgen first: it is the memif server, and a client that connects before the server's ports
# exist is refused. -T needs a terminal: script(1) gives it one.
echo "pktgen.sh: $pktgen, $lua over $flows client tuples ($n_ips x $n_ports), sizes $sizes"
pg_cmd="LBD_PKTGEN_PARAMS=$work/params.lua $pktgen -l 0,1 --file-prefix ${tag}p --no-pci $mem_pg"
pg_cmd+=" --vdev=net_memif0,role=server,socket=$work/c.sock,socket-abstract=no,mac=$pg_mac_c"
pg_cmd+=" --vdev=net_memif1,role=server,socket=$work/b.sock,socket-abstract=no,mac=$pg_mac_b"
pg_cmd+=" -- -T -P -m '$map' -f $root/tools/pktgen/$lua"
timeout "$timeout_s" script -qfec "$pg_cmd" "$work/pktgen.log" > /dev/null 2>&1 < /dev/null &
pg=$!
pids+=("$pg")
for _ in $(seq 1 300); do
  [ -S "$work/c.sock" ] && [ -S "$work/b.sock" ] && break
  kill -0 $pg 2>/dev/null || break
  sleep 0.1
done
if ! [ -S "$work/c.sock" ] || ! [ -S "$work/b.sock" ]; then
  echo "pktgen.sh: pktgen did not create its memif sockets; its output:" >&2
  tail -30 "$work/pktgen.log" >&2
  exit 1
fi
sleep 1  # the server's ports are started a moment after its sockets exist

# lbd: main lcore (control thread) and its worker; both CPUs are shared with pktgen here, so
# the figures are the procedure's, not lbd's capacity.
"$lbd" --lcores 0@0,1@1 --no-pci --no-huge -m 1024 --file-prefix ${tag}l -- --config "$work/lbd.cfg" --fresh \
  > "$work/lbd.log" 2>&1 &
lp=$!
pids+=("$lp")
wait $pg
rc=$?
python3 "$root/bench/telemetry.py" ${tag}l /lb/stats /lb/drops > "$work/telemetry.json" 2> /dev/null
kill -INT $lp 2> /dev/null
wait $lp 2> /dev/null

echo "--- pktgen's output (last lines)"
tr -d '\r' < "$work/pktgen.log" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' | grep -v '^\s*$' | tail -25
echo "--- results ($work/results.csv)"
cat "$work/results.csv" 2> /dev/null || echo "(none)"
[ $rc -eq 0 ] || { echo "FAIL: pktgen exited $rc (timeout ${timeout_s} s?)"; tail -5 "$work/lbd.log"; exit 1; }
python3 - "$work/telemetry.json" "$flows" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
flows = int(sys.argv[2])
s, d = t.get("/lb/stats") or {}, t.get("/lb/drops") or {}
print("lbd: flows_created %d, rx %d, tx %d, dropped %d%s" % (
    s.get("flows_created", 0), s.get("rx_packets", 0), s.get("tx_packets", 0), s.get("dropped", 0),
    "".join(" %s=%d" % kv for kv in sorted(d.items()) if kv[1])))
bad = []
if s.get("flows_created", 0) != flows:
    bad.append("flows_created %d, not %d (one per client tuple)" % (s.get("flows_created", 0), flows))
if d.get("neighbor_unresolved", 0):
    bad.append("%d packets dropped as neighbor_unresolved" % d["neighbor_unresolved"])
for b in bad:
    print("FAIL:", b)
sys.exit(1 if bad else 0)
PY
