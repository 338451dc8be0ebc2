#!/usr/bin/env bash
# lbctl end to end: real lbd (net_af_packet or net_af_xdp on tools/netns.sh's namespaces),
# lb-healthd checking four lb-backend servers through the management path, real curl and a
# keep-alive client in the client namespace. Every lbctl subcommand, and what it must do to
# traffic:
#   backend add      new flows reach the new backend
#   backend drain    established flows continue, new flows avoid it
#   backend maint    new flows avoid it
#   backend weight   new flows shift to the heavier backend
#   backend remove   drains first: waits while a flow is established, removes once it ended
#   service add      a new VIP is served at once, no restart
#   remove --now     every keep-alive connection of the removed backend is reset at once,
#                    whether the client speaks first or the backend (a response in flight)
#   stats / flows    counters and the flow table from lbd's telemetry
#   config reload    a good file applies (runtime changes kept); a broken one changes nothing
#                    and says file:line
#   restart          lb-healthd restarted: every runtime change is still there; while it is
#                    down, status shows what lbd applies and says lb-healthd is unreachable
#   reload removes   a backend the reloaded file removed drains: 10 keep-alive connections on
#                    it go on to the end (0 resets), new flows avoid it, it leaves once idle
#   bad input        unknown names, malformed addresses, out-of-range weights, garbage, 10 MB, a
#                    silent client: each refused, the daemon carries on
# Usage: lbctl_e2e.sh LBD LB_HEALTHD LBCTL LB_BACKEND [af_packet|af_xdp]
# Exit 77 (skip) when namespaces cannot be made here.
set -u
lbd_bin=${1:?usage: lbctl_e2e.sh LBD LB_HEALTHD LBCTL LB_BACKEND [PMD]}
healthd_bin=${2:?}
lbctl_bin=${3:?}
backend_bin=${4:?}
pmd=${5:-af_packet}
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/../../tools/netns.sh"
client="$here/e2e_client.py"
export LB_NS_PREFIX=lbt4 LB_NS_BACKENDS=4
p=$LB_NS_PREFIX
tmp=$(mktemp -d /tmp/lbctl-e2e.XXXXXX)
cfg=$tmp/lbd.cfg
lbd_pid=
healthd_pid=
bg_pids=()

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
ip netns add $p-probe 2>/dev/null || skip "cannot create network namespaces here"
ip netns del $p-probe
for tool in curl python3; do command -v $tool >/dev/null || skip "$tool not installed"; done

stop_pid() {  # PID: SIGTERM, then SIGKILL after 5 s; the exit status
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
cleanup() {
  local pid
  for pid in "${bg_pids[@]}"; do stop_pid "$pid"; done
  [ -n "$healthd_pid" ] && stop_pid "$healthd_pid"
  [ -n "$lbd_pid" ] && stop_pid "$lbd_pid"
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-$p-flows-* /dev/shm/lbd-$p-flows-* /dev/shm/lbd-$p-services.json
  "$netns" down >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*"
  for f in lbd healthd lbctl; do
    [ -f "$tmp/$f.log" ] && { echo "--- $f log (last 40 lines)"; tail -n 40 "$tmp/$f.log"; }
  done
  exit 1
}
pass() { echo "ok: $*"; }

lbctl() { "$lbctl_bin" -c "$cfg" "$@"; }
# lbctl with its exit status checked and its output kept in $out / $err.
expect() {  # expect STATUS lbctl-args...
  local want=$1
  shift
  out=$(lbctl "$@" 2>"$tmp/err")
  local rc=$?
  err=$(cat "$tmp/err")
  echo "\$ lbctl $* -> $rc ${err:+($err)}" >>"$tmp/lbctl.log"
  echo "$out" >>"$tmp/lbctl.log"
  [ "$rc" -eq "$want" ] || fail "lbctl $* exited $rc, expected $want: $err"
}
# Bounded wait for a condition (a shell command): wait_for SECONDS WHAT COMMAND...
wait_for() {
  local limit=$1 what=$2 i
  shift 2
  for i in $(seq 1 $((limit * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "timed out after ${limit}s waiting for $what"
}
nsx() { ip netns exec "$@"; }

# hits VIP N: N new connections (in this shell: no $(...)); counts in seen[], summary in $r.
hits() {
  local vip=$1 n=$2 i name
  declare -gA seen=()
  local failed=0
  for i in $(seq 1 "$n"); do
    name=$(nsx $p-client curl -s --max-time 3 "http://$vip/")
    if [ -z "$name" ]; then failed=$((failed + 1)); continue; fi
    seen[$name]=$(( ${seen[$name]:-0} + 1 ))
  done
  seen[failed]=$failed
  r=
  for name in b1 b2 b3 b4 failed; do r+="$name=${seen[$name]:-0} "; done
}
count() { echo "${seen[$1]:-0}"; }

# -- The topology, the backends, lbd, lb-healthd ---------------------------------------------
"$netns" down >/dev/null 2>&1
"$netns" up >/dev/null || fail "tools/netns.sh up"
for i in 1 2 3 4; do
  nsx $p-b$i "$backend_bin" --name b$i --listen 10.20.0.1$i --port 8080 --threads 32 \
    >"$tmp/b$i.log" 2>&1 &
  bg_pids+=($!)
done
for i in 1 2 3 4; do
  wait_for 10 "lb-backend b$i" curl -s --max-time 1 -o /dev/null http://10.20.0.1$i:8080/healthcheck
done

if [ "$pmd" = af_xdp ]; then
  devc="net_af_xdp_${p}0,iface=${p}-c"
  devb="net_af_xdp_${p}1,iface=${p}-b"
else
  devc="net_af_packet_${p}0,iface=${p}-c"
  devb="net_af_packet_${p}1,iface=${p}-b"
fi
write_config() {  # write_config HEALTH_INTERVAL_MS [BACKEND_NUMBERS, default "1 2 3"]
  local n list=""
  for n in ${2:-1 2 3}; do
    list+="${list:+,
}      { address = \"10.20.0.1$n\"; port = 8080; }"
  done
  cat >"$cfg.tmp" <<CFG
instance = "$p";
dataplane: {
  workers = 1;
  flows = { capacity = 65536; tcp_fin_timeout = 1; tcp_closed_timeout = 1; };
  ports = (
    { name = "client";  device = "$devc"; ip = "10.10.0.1/24"; },
    { name = "backend"; device = "$devb"; ip = "10.20.0.1/24"; }
  );
};
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "wrr";
    health = { interval_ms = $1; timeout_ms = 150; rise = 1; fall = 2; };
    backends = (
$list
    ); }
);
healthd = { control_socket = "$tmp/run/lbd.sock"; control_timeout_ms = 1000; };
CFG
  mv "$cfg.tmp" "$cfg"
}
write_config 200
"$lbd_bin" --lcores 0@0,1@1 --no-pci --no-huge -m 512 --log-level=lb:info -- --config "$cfg" \
  >"$tmp/lbd.log" 2>&1 &
lbd_pid=$!
wait_for 20 "the VIP to answer ping" nsx $p-client ping -c1 -W1 10.10.0.100
[ -S /var/run/dpdk/$p/dpdk_telemetry.v2 ] || fail "no telemetry socket at /var/run/dpdk/$p"

start_healthd() {
  # Its instance lock and health file in the test's own runtime directory.
  "$healthd_bin" --config "$cfg" --runtime-dir "$tmp/run" >>"$tmp/healthd.log" 2>&1 &
  healthd_pid=$!
  wait_for 10 "lb-healthd's control socket" test -S "$tmp/run/lbd.sock"
  wait_for 10 "lb-healthd attached to lbd" attached
}
attached() { lbctl --json status 2>/dev/null | grep -q '"attached": true'; }
get() { nsx $p-client curl -s --max-time 2 "http://$1/"; }  # get VIP: the backend's name
start_healthd
# lbd resolves next hops within a second: wait until every backend answers through the VIP.
three_answer() { [ "$(for i in 1 2 3 4 5 6; do get 10.10.0.100; done | sort -u | wc -l)" -ge 3 ]; }
sleep_until_resolved() { wait_for 10 "all backends answering through the VIP" three_answer; }
sleep_until_resolved

# -- status ----------------------------------------------------------------------------------
expect 0 status
echo "$out" | grep -q "TCP  10.10.0.100:80 wrr (web, 3/3 active)" || fail "status: $out"
echo "$out" | grep -q "flow counters: unavailable" && fail "status without lbd's counters: $out"
[ "$(echo "$out" | grep -c -- '-> 10.20.0.1')" -eq 3 ] || fail "status: 3 backends expected: $out"
expect 0 --json status
echo "$out" | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["lbd_counters"]["available"]
assert all(b["lbd"] is not None for b in s["services"][0]["backends"])
' || fail "status --json: lbd's counters missing"
pass "status: services, backends, health and lbd's counters"
hits 10.10.0.100 30
echo "  30 new connections: $r"
[ "$(count b1)" -eq 10 ] && [ "$(count b2)" -eq 10 ] && [ "$(count b3)" -eq 10 ] \
  || fail "equal weights, one worker: 10 each expected ($r)"

# -- backend add ---------------------------------------------------------------------------
expect 0 --wait backend add web 10.20.0.14:8080
echo "$out" | grep -q "applied by lbd" || fail "--wait: $out"
# The first SYN to a new next hop may wait for its ARP: a few tries, then a fair share.
b4_answers() { [ "$(get 10.10.0.100)" = b4 ]; }
wait_for 10 "a new flow on b4" b4_answers
hits 10.10.0.100 40
echo "  40 new connections after adding b4: $r"
[ "$(count b4)" -ge 8 ] || fail "b4 should take a quarter of new flows ($r)"
[ "$(count failed)" -eq 0 ] || fail "requests failed ($r)"
pass "backend add: new flows reach 10.20.0.14"

# -- drain: established flows continue, new flows avoid the backend ----------------------------
# keepalive_start NAME COUNT: a keep-alive client in the background; its backend in $ka_backend.
keepalive_start() {
  nsx $p-client python3 "$client" keepalive 10.10.0.100 "$2" 0.1 >"$tmp/$1.out" 2>&1 &
  ka_pid=$!
  bg_pids+=($ka_pid)
  wait_for 10 "the keep-alive client's first answer" grep -q "^0 " "$tmp/$1.out"
  ka_backend=$(awk '$1 == 0 {print $2}' "$tmp/$1.out")
}
keepalive_check() {  # keepalive_check NAME BACKEND: every answer on one connection, from BACKEND
  wait "$ka_pid"
  local rc=$?
  grep -q ERR "$tmp/$1.out" && fail "keep-alive client: $(grep ERR "$tmp/$1.out" | head -3)"
  [ $rc -eq 0 ] || fail "keep-alive client exited $rc"
  local others
  others=$(awk -v b="$2" '$2 != b' "$tmp/$1.out" | wc -l)
  [ "$others" -eq 0 ] || fail "the established flow moved off $2"
  echo "  keep-alive connection: $(wc -l <"$tmp/$1.out") answers, all from $2"
}
addr_of() { echo "10.20.0.1${1#b}:8080"; }

# 150 requests (15 s): the connection must outlive the 30 new connections below and the status
# check after them on a loaded machine (with 50, the 30 curls sometimes outlasted it).
keepalive_start ka1 150
drained=$ka_backend
expect 0 --wait backend set web "$(addr_of "$drained")" --state drain
hits 10.10.0.100 30
echo "  30 new connections with $drained draining: $r"
[ "$(count "$drained")" -eq 0 ] || fail "new flows reached draining $drained ($r)"
[ "$(count failed)" -eq 0 ] || fail "requests failed ($r)"
expect 0 status
echo "$out" | grep -E -- "-> $(addr_of "$drained") +1 +drain +up +draining +[1-9]" >/dev/null \
  || fail "status should show $drained draining with its established flow: $out"
keepalive_check ka1 "$drained"
pass "drain: $drained keeps its established flow, takes no new ones"
expect 0 --wait backend set web "$(addr_of "$drained")" --state ready

# -- maint -------------------------------------------------------------------------------------
expect 0 --wait backend set web 10.20.0.13:8080 --state maint
hits 10.10.0.100 30
echo "  30 new connections with b3 in maint: $r"
[ "$(count b3)" -eq 0 ] || fail "new flows reached b3 in maint ($r)"
expect 0 --json status
echo "$out" | grep -q '"admin": "maint"' || fail "status: maint not shown"
expect 0 --wait backend set web 10.20.0.13:8080 --state ready
pass "maint: b3 takes no new flows"

# -- weight ------------------------------------------------------------------------------------
expect 0 --wait backend set web 10.20.0.11:8080 --weight 5
hits 10.10.0.100 40
echo "  40 new connections with b1 at weight 5 (others 1): $r"
# Smooth WRR: 5 of every 8 new flows.
[ "$(count b1)" -ge 22 ] || fail "b1 should take 5/8 of new flows ($r)"
for b in b2 b3 b4; do [ "$(count $b)" -le 7 ] || fail "$b took too many ($r)"; done
pass "weight: new flows shift to b1"

# -- stats and flows ---------------------------------------------------------------------------
expect 0 stats --interval 0.5
echo "$out" | grep -q "^new flows" || fail "stats: $out"
echo "$out" | grep -q "web      10.20.0.11:8080" || fail "stats: per-backend rows missing: $out"
expect 0 --json stats --watch 0.2 --count 2
[ "$(echo "$out" | wc -l)" -eq 2 ] || fail "stats --watch --count 2: two JSON lines expected"
echo "$out" | head -1 | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["totals"]["flows_created"] > 100, r["totals"]
' || fail "stats --json: $out"
keepalive_start ka2 30
expect 0 flows --limit 5
echo "$out" | grep -q "10.10.0.50:" || fail "flows: $out"
echo "$out" | grep -qi "established" || fail "flows: no established flow while one is open: $out"
pass "stats and flows from lbd's telemetry"

# -- remove drains first -----------------------------------------------------------------------
removed=$ka_backend
lbctl --wait backend remove web "$(addr_of "$removed")" --drain-timeout 60 >"$tmp/remove.out" 2>&1 &
remove_pid=$!
bg_pids+=($remove_pid)
wait_for 10 "remove to start draining" grep -q "draining web" "$tmp/remove.out"
# The keep-alive client is still talking (30 requests, 0.1 s apart): remove must be waiting.
wait_for 10 "the keep-alive client's 20th answer" grep -q "^19 " "$tmp/ka2.out"
kill -0 $remove_pid 2>/dev/null ||
  fail "remove finished while a flow was established: $(cat "$tmp/remove.out")"
hits 10.10.0.100 20
[ "$(count "$removed")" -eq 0 ] || fail "new flows reached $removed while it drained ($r)"
keepalive_check ka2 "$removed"
wait $remove_pid || fail "backend remove: $(cat "$tmp/remove.out")"
echo "  $(tail -2 "$tmp/remove.out" | tr '\n' ' ')"
expect 0 status
echo "$out" | grep -q -- "-> $(addr_of "$removed")" && fail "status still lists $removed"
pass "backend remove: drained $removed, waited for its flow, removed it"

# -- service add: a new VIP, no restart --------------------------------------------------------
expect 0 --wait service add api 10.10.0.101:80 --backend 10.20.0.11:8080 --backend 10.20.0.12:8080 \
  --interval 200 --health-timeout 150
wait_for 10 "the new VIP to answer" get 10.10.0.101
hits 10.10.0.101 10
echo "  10 connections to the new VIP 10.10.0.101: $r"
[ $(( $(count b1) + $(count b2) )) -eq 10 ] || fail "api's backends are b1 and b2 ($r)"
pass "service add: 10.10.0.101 served without restarting lbd"

# -- remove --now: every connection reset, whichever side speaks first ---------------------------
# A service of its own on b4, so that every connection lands on the backend that is removed.
expect 0 --wait service add cut 10.10.0.103:80 --backend 10.20.0.14:8080 --interval 200 \
  --health-timeout 150
wait_for 10 "the VIP of service cut to answer" get 10.10.0.103
tel_stat() {  # tel_stat KEY: a counter of lbd's /lb/stats
  python3 "$here/../e2e/lbenv.py" "$p" query /lb/stats | python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"
}
for order in client-first backend-first; do
  rm -f "$tmp/go"
  resets_before=$(tel_stat rst_backend_stopped)
  nsx $p-client python3 "$client" resets 10.10.0.103 8 $order "$tmp/go" >"$tmp/resets-$order.out" 2>&1 &
  rs_pid=$!
  bg_pids+=($rs_pid)
  wait_for 10 "8 keep-alive connections to cut" grep -q "^ready" "$tmp/resets-$order.out"
  [ $order = backend-first ] &&
    wait_for 10 "the delayed requests to be sent" grep -q "^sent" "$tmp/resets-$order.out"
  expect 0 --wait backend remove cut 10.20.0.14:8080 --now
  touch "$tmp/go"
  wait $rs_pid || fail "remove --now, $order: $(grep -v '^reset' "$tmp/resets-$order.out" | head -5;
    sort -k3 -n "$tmp/resets-$order.out" | tail -2)"
  slowest=$(awk '$1 == "reset" {print $3}' "$tmp/resets-$order.out" | sort -n | tail -1)
  resets=$(( $(tel_stat rst_backend_stopped) - resets_before ))
  [ "$resets" -ge 8 ] || fail "remove --now, $order: lbd sent $resets RSTs for 8 connections"
  echo "  $order: 8 of 8 connections reset, the last after ${slowest} ms; lbd sent $resets RSTs"
  expect 0 --wait backend add cut 10.20.0.14:8080
  wait_for 10 "b4 back in service cut" get 10.10.0.103
done
expect 0 --wait service remove cut
pass "backend remove --now: every connection reset, client or backend first"

# -- config reload -----------------------------------------------------------------------------
before=$(lbctl config save -o -)
write_config 250
expect 0 --wait config reload
echo "$out" | grep -q "service web: health.interval_ms 200 -> 250" || fail "reload: $out"
expect 0 --json status
echo "$out" | python3 -c '
import json, sys
s = json.load(sys.stdin)
svc = {x["name"]: x for x in s["services"]}
web = {b["address"]: b for b in svc["web"]["backends"]}
removed = sys.argv[1].split(":")[0]
assert svc["web"]["health"]["interval_ms"] == 250, "the file change"
assert "10.20.0.14" in web, "a runtime addition"
assert removed not in web, "a runtime removal"
assert removed == "10.20.0.11" or web["10.20.0.11"]["weight"] == 5, "a runtime weight"
assert "api" in svc, "a runtime service"
' "$(addr_of "$removed")" || fail "reload: the file's change and the runtime changes should all run"
pass "config reload: the file's change applied, runtime changes kept"
before=$(lbctl config save -o -)
cp "$cfg" "$tmp/good.cfg"
sed -i 's/interval_ms = 250;/interval_ms = 250;;; oops/' "$cfg"
expect 1 config reload
echo "$err" | grep -q "^lbctl: $cfg:[0-9]*: " || fail "reload error without file:line: $err"
echo "  broken file: $err"
[ "$(lbctl config save -o -)" = "$before" ] || fail "a broken file changed the running state"
cp "$tmp/good.cfg" "$cfg"
pass "config reload of a broken file: refused with file:line, nothing changed"

# -- restart lb-healthd: nothing lost ----------------------------------------------------------
stop_pid "$healthd_pid"
healthd_pid=
get 10.10.0.101 >/dev/null || fail "lbd stopped serving the new VIP without lb-healthd"
# Meanwhile `status` shows what lbd applies and says plainly that lb-healthd is unreachable.
expect 1 status
echo "$out" | grep -q "^lb-healthd: UNREACHABLE: cannot connect to lb-healthd at $tmp/run/lbd.sock" \
  || fail "status without lb-healthd: $out"
echo "$out" | grep -E -q -- "-> 10.20.0.13:8080 +active +[0-9]+ +[0-9]+" \
  || fail "status without lb-healthd should list lbd's backends: $out"
echo "$out" | grep -q "^api (2 backend(s) in lbd)" || fail "status without lb-healthd: api? $out"
echo "$err" | grep -q "cannot connect to lb-healthd" || fail "status without lb-healthd: $err"
expect 1 --json status
echo "$out" | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["ok"] is False and s["healthd"]["reachable"] is False, s
web = [x for x in s["services"] if x["name"] == "web"][0]
assert all("flows_active" in b["lbd"] for b in web["backends"]), web
' || fail "status --json without lb-healthd: $out"
pass "status without lb-healthd: lbd's pool shown, lb-healthd said unreachable (exit 1)"
start_healthd
[ "$(lbctl config save -o -)" = "$before" ] || fail "lb-healthd lost runtime changes over a restart"
expect 0 config diff
echo "  runtime changes after the restart:"
echo "$out" | sed 's/^/    /'
hits 10.10.0.101 4
[ "$(count failed)" -eq 0 ] || fail "the new VIP after the restart ($r)"
pass "restart: every runtime change is still there"

# -- bad input ---------------------------------------------------------------------------------
expect 1 backend add nope 10.20.0.14:8080
expect 1 backend add web 10.20.0.300:8080
echo "$err" | grep -q "malformed IPv4 address" || fail "$err"
expect 1 backend set web 10.20.0.12:8080 --weight 70000
echo "$err" | grep -q "out of range 0..65535" || fail "$err"
expect 1 backend remove web 10.20.0.99:8080 --now
expect 2 backend add web 10.20.0.15
python3 "$client" abuse "$tmp/run/lbd.sock" >"$tmp/abuse.out" 2>&1 ||
  fail "abuse: $(cat "$tmp/abuse.out")"
sed 's/^/  /' "$tmp/abuse.out"
expect 0 status
[ "$(lbctl config save -o -)" = "$before" ] || fail "bad input changed the running state"
pass "bad input: refused, nothing changed, lb-healthd still serving"

# -- service set / remove ----------------------------------------------------------------------
expect 0 --wait service set api --vip 10.10.0.102:80 --scheduler lc
wait_for 10 "the moved VIP to answer" get 10.10.0.102
get 10.10.0.101 >/dev/null && fail "the old VIP is still served"
expect 0 --wait service remove api
get 10.10.0.102 >/dev/null && fail "a removed service is still served"
hits 10.10.0.100 4
[ "$(count failed)" -eq 0 ] || fail "web after removing api ($r)"
pass "service set moved api to 10.10.0.102; service remove withdrew it; web unaffected"

# -- a reload that removes a backend drains it: no connection reset ------------------------------
# The file as it runs now (b1..b4), then 10 keep-alive connections, all on b2 (the others drained
# while they connect), then a file without b2: its connections must go on to their end.
write_config 250 "1 2 3 4"
expect 0 --wait config reload --replace
for b in 1 3 4; do expect 0 --wait backend set web "10.20.0.1$b:8080" --state drain; done
ka_pids=()
for i in $(seq 1 10); do
  nsx $p-client python3 "$client" keepalive 10.10.0.100 60 0.1 >"$tmp/kr$i.out" 2>&1 &
  ka_pids+=($!)
  bg_pids+=($!)
done
for i in $(seq 1 10); do wait_for 10 "keep-alive client $i" grep -q "^0 " "$tmp/kr$i.out"; done
for b in 1 3 4; do expect 0 --wait backend set web "10.20.0.1$b:8080" --state ready; done
write_config 250 "1 3 4"
expect 0 --wait config reload
echo "$out" | grep -q "service web: backend 10.20.0.12:8080 drains" || fail "reload: $out"
echo "  $(echo "$out" | tr '\n' ' ')"
expect 0 status
echo "$out" | grep -E -q -- "-> 10.20.0.12:8080 +1 +removed +- +draining +[1-9][0-9]* " \
  || fail "status should show b2 removed, draining with its flows: $out"
hits 10.10.0.100 20
echo "  20 new connections while b2 drains: $r"
[ "$(count b2)" -eq 0 ] || fail "new flows reached b2 after the reload removed it ($r)"
resets=0
moved=
for i in $(seq 1 10); do
  wait "${ka_pids[$((i - 1))]}"
  grep -q ERR "$tmp/kr$i.out" && resets=$((resets + 1))
  [ "$(awk '$1 != "ERR" && $2 != "b2"' "$tmp/kr$i.out" | wc -l)" -eq 0 ] || moved=$i
done
echo "  10 keep-alive connections on b2 across the reload: $resets failed" \
  "($(cat "$tmp"/kr*.out | grep -vc ERR) answers)"
[ "$resets" -eq 0 ] || fail "$resets keep-alive connection(s) broken by the reload: $(grep -h ERR "$tmp"/kr*.out | head -3)"
[ -z "$moved" ] || fail "keep-alive connection $moved was answered by another backend than b2"
b2_gone() { ! lbctl status 2>/dev/null | grep -q -- "-> 10.20.0.12:8080"; }
wait_for 20 "b2 to leave once its connections ended" b2_gone
grep -q "web 10.20.0.12:8080 drained in" "$tmp/healthd.log" || fail "lb-healthd's log: no drain"
pass "reload removed b2: its 10 connections ran to their end (0 resets), then it left"

# -- config save ---------------------------------------------------------------------------------
expect 0 config save
expect 0 config diff
echo "$out" | grep -q "no runtime changes" || fail "after save: $out"
expect 0 config check "$cfg"
pass "config save: the file now holds the running state"

kill -TERM "$healthd_pid"
wait "$healthd_pid"
rc=$?
healthd_pid=
[ $rc -eq 0 ] || fail "lb-healthd exited $rc on SIGTERM"
grep -E "Sanitizer|runtime error:" "$tmp/healthd.log" "$tmp/lbctl.log" && fail "sanitizer reports"
kill -TERM "$lbd_pid"
wait "$lbd_pid"
rc=$?
lbd_pid=
[ $rc -eq 0 ] || fail "lbd exited $rc on SIGTERM"
echo "PASS"
