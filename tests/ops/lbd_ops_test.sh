#!/usr/bin/env bash
# lbd as an operator runs it, on the namespace topology of tools/netns.sh (prefix lbo), with
# real curl through the VIP:
#   capture PMD  lbd on hugepages; `lbctl capture client FILTER` (dpdk-dumpcap underneath) and a
#                plain dpdk-dumpcap on the backend port each record one curl's flow; the pcapng
#                files must hold exactly that flow's packets, from its SYN, and no other traffic.
#   drops PMD    the drops before lbd (/lb/ports, lbctl stats): present, equal to the kernel's
#                counters, and moving when lbd stops polling while the client floods its port.
# Usage: lbd_ops_test.sh MODE PMD LBD LBCTL   (PMD: af_xdp | af_packet)
# Exit 77 (skip) when this machine cannot run it (no root, namespaces, hugepages, dumpcap).
set -u
mode=${1:?usage: lbd_ops_test.sh capture|drops af_xdp|af_packet LBD LBCTL}
pmd=${2:?}
lbd=${3:?}
lbctl=${4:?}
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/../../tools/netns.sh"
export LB_NS_PREFIX=lbo
p=$LB_NS_PREFIX
tmp=$(mktemp -d)
lbd_pid=
pids=()

cleanup() {
  [ -n "$lbd_pid" ] && kill -CONT "$lbd_pid" 2>/dev/null
  [ -n "$lbd_pid" ] && kill "$lbd_pid" 2>/dev/null && wait "$lbd_pid" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-$p-flows-* /dev/shm/lbd-$p-flows-* /dev/shm/lbd-$p-services.json
  "$netns" down >/dev/null 2>&1
  rm -rf "$tmp"
}
skip() { echo "SKIP: $*"; exit 77; }
fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.log; do
    [ -f "$f" ] && { echo "--- $(basename "$f")"; tail -20 "$f"; }
  done
  exit 1
}
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
ip netns add $p-probe 2>/dev/null || skip "cannot create network namespaces here"
ip netns del $p-probe
command -v curl >/dev/null || skip "curl not installed"
if [ "$mode" = capture ]; then
  command -v dpdk-dumpcap >/dev/null || skip "dpdk-dumpcap not installed (Debian package dpdk)"
  command -v tcpdump >/dev/null || skip "tcpdump not installed"
  # A capture attaches to lbd's memory: lbd must run on hugepages (tools/test.sh reserves them).
  free=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages 2>/dev/null || echo 0)
  mountpoint -q /dev/hugepages || skip "no hugetlbfs on /dev/hugepages (see lbd(8), HUGEPAGES)"
  [ "$free" -ge 128 ] || skip "$free free 2 MiB hugepages, 128 needed (tools/test.sh reserves 512)"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM
"$netns" down >/dev/null 2>&1  # leftovers of an earlier run that was killed
"$netns" up >/dev/null || fail "tools/netns.sh up"

nsx() { ip netns exec "$@"; }
# shellcheck source=../support/topology.sh
. "$here/../support/topology.sh"
http_backends 3
lbd_devices "$pmd"
cat >"$tmp/lbd.cfg" <<CFG
instance = "$p";
dataplane: {
  workers = 1;
  flows = { capacity = 65536; };
  ports = (
    { name = "client";  device = "$devc"; ip = "10.10.0.1/24"; },
    { name = "backend"; device = "$devb"; ip = "10.20.0.1/24"; }
  );
};
services = ( { name = "web"; vip = "10.10.0.100"; port = 80;
  backends = ( { address = "10.20.0.11"; port = 8080; }, { address = "10.20.0.12"; port = 8080; },
               { address = "10.20.0.13"; port = 8080; } ); } );
healthd = { control_socket = ""; };
CFG
# The EAL file prefix is the instance ("lbo"): lbctl and dpdk-dumpcap find lbd by it.
memory=(--no-huge -m 512)
[ "$mode" = capture ] && memory=()
"$lbd" --lcores 0@0,1@1 --no-pci "${memory[@]}" --log-level=lb:info -- --config "$tmp/lbd.cfg" \
  >"$tmp/lbd.log" 2>&1 &
lbd_pid=$!
lbd_ready $lbd_pid 3 || fail "the VIP does not answer ping ($pmd)"
nsx $p-client curl -s --max-time 3 -o /dev/null http://10.10.0.100/name || fail "no answer via VIP"

# -- capture ------------------------------------------------------------------------------------
# check_capture FILE CLIENT_PORT PEER: every packet in FILE is CLIENT_PORT's flow (the client
# 10.10.0.50 with PEER, both ways), there are at least $count (dumpcap checks -c after each
# burst, so it may write a few more), and the first is the client's SYN.
count=6
check_capture() {
  local file=$1 cport=$2 peer=$3
  tcpdump -nn -r "$file" >"$tmp/read.txt" 2>"$tmp/tcpdump.log" || fail "tcpdump cannot read $file"
  local n others syn
  n=$(wc -l <"$tmp/read.txt")
  others=$(grep -vcE "IP (10\.10\.0\.50\.$cport > $peer|$peer > 10\.10\.0\.50\.$cport): " \
    "$tmp/read.txt")
  syn=$(head -1 "$tmp/read.txt" | grep -cE "10\.10\.0\.50\.$cport > $peer: Flags \[S\]")
  echo "$file: $n packets, $others of other flows, first is the SYN: $syn"
  sed 's/^/    /' "$tmp/read.txt"
  [ "$n" -ge $count ] || fail "$n packets captured, $count wanted"
  [ "$others" -eq 0 ] || fail "packets of other flows in the capture (filter not applied)"
  [ "$syn" -eq 1 ] || fail "the capture does not start with the flow's SYN"
}
# wait_capturing LOG PID: dumpcap starts counting ("Packets captured:", on stderr) once lbd has
# answered its request and copies the port's packets to it ("File:" comes before the request).
wait_capturing() {
  for _ in $(seq 1 100); do
    grep -q "Packets captured:" "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  fail "dumpcap did not start capturing"
}
# other_traffic: what the filter must keep out (another client port, ping).
other_traffic() {
  nsx $p-client curl -s --max-time 3 --local-port 40200 -o /dev/null http://10.10.0.100/name
  nsx $p-client ping -c2 -i0.2 -W1 10.10.0.100 >/dev/null
}

# captured_curl NAME CLIENT_PORT CAPTURE_COMMAND...: starts the capture (its output in
# NAME.log), sends the other traffic and then a curl from CLIENT_PORT, and waits for the capture.
captured_curl() {
  local name=$1 cport=$2 cap out
  shift 2
  timeout 60 "$@" >"$tmp/$name.log" 2>&1 &
  cap=$!
  wait_capturing "$tmp/$name.log" $cap
  other_traffic
  out=$(nsx $p-client curl -s --max-time 3 --local-port "$cport" http://10.10.0.100/name)
  [ -n "$out" ] || fail "the captured curl got no answer"
  wait $cap || fail "$1 exited $?"
}

if [ "$mode" = capture ]; then
  # 1. lbctl capture, by the port's name in the config, on the client side (VIP).
  captured_curl lbctl-capture 40123 "$lbctl" -c "$tmp/lbd.cfg" capture client "tcp port 40123" \
    -w "$tmp/client.pcapng" --count $count --duration 30
  check_capture "$tmp/client.pcapng" 40123 "10\\.10\\.0\\.100\\.80"
  # 2. dpdk-dumpcap itself, as docs/operations.md shows it, on the backend side (after DNAT).
  captured_curl dumpcap 40124 dpdk-dumpcap --file-prefix=$p -i "${devb%%,*}" -p \
    -f "tcp port 40124" -w "$tmp/backend.pcapng" -c $count -a duration:30
  check_capture "$tmp/backend.pcapng" 40124 "10\\.20\\.0\\.1[123]\\.8080"

  # 3. An unknown port is refused with the ports there are.
  "$lbctl" -c "$tmp/lbd.cfg" capture clinet -w "$tmp/x.pcapng" >"$tmp/refused.log" 2>&1
  rc=$?
  grep -q "unknown port 'clinet': lbd's ports are client, backend" "$tmp/refused.log" &&
    [ $rc -eq 1 ] || fail "lbctl capture with an unknown port: exit $rc, $(cat "$tmp/refused.log")"
fi

# -- drops before lbd ----------------------------------------------------------------------------
ports() {  # the /lb/ports counters, through lbctl
  "$lbctl" -c "$tmp/lbd.cfg" stats --json --interval 0.1 >"$tmp/stats.json" ||
    fail "lbctl stats: $(cat "$tmp/stats.json")"
}
field() {  # field PORT KEY
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ports"][sys.argv[2]][sys.argv[3]])' \
    "$tmp/stats.json" "$1" "$2"
}
if [ "$mode" = drops ]; then
  ports
  for key in imissed ierrors oerrors rx_nombuf kernel_iface kernel_rx_dropped kernel_socket_drops \
    dropped_before_lbd; do
    v=$(field client $key) || fail "/lb/ports has no $key for port client"
    echo "client $key = $v"
  done
  [ "$(field client kernel_iface)" = "$p-c" ] || fail "kernel_iface is not $p-c"
  [ "$(field backend kernel_iface)" = "$p-b" ] || fail "kernel_iface is not $p-b"
  sysfs=/sys/class/net/$p-c/statistics/rx_dropped
  [ "$(field client kernel_rx_dropped)" = "$(cat $sysfs)" ] ||
    fail "kernel_rx_dropped $(field client kernel_rx_dropped) != $sysfs $(cat $sysfs)"
  before=$(field client dropped_before_lbd)

  # lbd stops polling; the client sends 20,000 datagrams to the VIP: the kernel fills lbd's
  # ring and drops the rest where lbd cannot count them.
  kill -STOP $lbd_pid
  nsx $p-client /usr/bin/python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20000):
    s.sendto(b"x" * 64, ("10.10.0.100", 9))'
  kill -CONT $lbd_pid
  sleep 0.5
  ports
  kernel=$(field client kernel_rx_dropped)
  socket_drops=$(field client kernel_socket_drops)
  after=$(field client dropped_before_lbd)
  echo "after 20000 datagrams to a stopped lbd ($pmd): kernel_rx_dropped $kernel" \
    "(sysfs $(cat $sysfs)), kernel_socket_drops $socket_drops, imissed $(field client imissed)," \
    "dropped before lbd $before -> $after"
  [ "$kernel" = "$(cat $sysfs)" ] || fail "kernel_rx_dropped $kernel != $sysfs $(cat $sysfs)"
  # Most of the 20,000 cannot have fit in one ring of a few thousand frames.
  [ $((after - before)) -ge 10000 ] || fail "drops before lbd moved by $((after - before)) only"
  if [ "$pmd" = af_xdp ]; then
    [ "$kernel" -ge 10000 ] || fail "AF_XDP ring-full drops are not in kernel_rx_dropped"
  else
    [ "$socket_drops" -ge 10000 ] || fail "af_packet ring-full drops are not in kernel_socket_drops"
  fi
  "$lbctl" -c "$tmp/lbd.cfg" stats --interval 0.1 >"$tmp/stats.txt" || fail "lbctl stats"
  grep -A3 "dropped before lbd" "$tmp/stats.txt"
  shown=$(awk -v n="$after" 'BEGIN { if (n < 1000) print n; else if (n < 1e6) printf "%.1fk", n / 1e3;
                                     else printf "%.1fM", n / 1e6 }')
  grep -qE "^client +$shown " "$tmp/stats.txt" || fail "lbctl stats does not show $shown for client"
  # This lbd runs with --no-huge: a capture cannot attach, and lbctl says why.
  "$lbctl" -c "$tmp/lbd.cfg" capture client -w "$tmp/x.pcapng" >"$tmp/nohuge.log" 2>&1
  rc=$?
  grep -q "cannot capture: lbd runs without hugepages" "$tmp/nohuge.log" && [ $rc -eq 1 ] ||
    fail "lbctl capture on a --no-huge lbd: exit $rc, $(cat "$tmp/nohuge.log")"
fi

kill -TERM $lbd_pid
wait $lbd_pid
rc=$?
lbd_pid=
[ $rc -eq 0 ] || fail "lbd exited $rc on SIGTERM"
echo "PASS"
