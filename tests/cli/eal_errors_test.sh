#!/usr/bin/env bash
# lbd's own error texts and log lines once EAL is involved (root: EAL's runtime directory):
#   - a port whose interface does not exist is named as such, not "Operation not permitted";
#   - an EAL failure says EAL's reason, not "Success" (rte_errno is not set on every failure):
#     a second lbd on the same --file-prefix;
#   - every DPDK message is one line with a timestamp, lbd's pid and the level, and
#     --log-level sets lbd's own types (lb, lb.pool, lb.link, lb.neigh, lb.drops).
# Usage: eal_errors_test.sh LBD. Exit 77 (skip) when not root.
set -u
lbd=$1
[ "$(id -u)" -eq 0 ] || { echo "SKIP: EAL needs root for /var/run/dpdk here"; exit 77; }
tmp=$(mktemp -d)
prefix=lbdcli$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp" "/var/run/dpdk/$prefix" "/var/run/dpdk/${prefix}b" "/dev/shm/lbd-$prefix"
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-{$prefix,${prefix}b}-flows-* /dev/shm/lbd-{$prefix,${prefix}b}-flows-* /dev/shm/lbd-{$prefix,${prefix}b}-services.json
}
trap cleanup EXIT
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
stamp='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z lbd\[[0-9]+\] (INFO|WARNING|ERROR|DEBUG|NOTICE) '
eal=(--lcores 0@0,1@1 --no-pci --no-huge -m 256)

# 1. A missing interface.
cat >"$tmp/noif.cfg" <<CFG
instance = "${prefix}b";
dataplane: { workers = 1; flows = { capacity = 4096; };
  ports = ( { name = "client"; device = "net_af_packet_${prefix},iface=nosuchif9"; ip = "10.10.0.1/24"; } ); };
services = ( { name = "web"; vip = "10.10.0.100"; port = 80;
  backends = ( { address = "10.10.0.11"; port = 8080; } ); } );
CFG
timeout 60 "$lbd" "${eal[@]}" -- --config "$tmp/noif.cfg" >"$tmp/noif.out" 2>&1
rc=$?
if [ $rc -eq 1 ] &&
  grep -q "^lbd: port 'client': no such interface 'nosuchif9' (device 'net_af_packet_${prefix},iface=nosuchif9')$" "$tmp/noif.out" &&
  ! grep -q "Operation not permitted" "$tmp/noif.out"; then
  ok "a missing interface is named: $(grep '^lbd:' "$tmp/noif.out")"
else
  bad "missing interface: exit $rc"; sed 's/^/    /' "$tmp/noif.out" | tail -5
fi

# 2. An lbd running, timestamped lines, --log-level on lbd's types; then a second one on its
#    prefix.
cat >"$tmp/null.cfg" <<CFG
instance = "$prefix";
dataplane: { workers = 1; flows = { capacity = 4096; };
  ports = ( { name = "p"; device = "net_null_${prefix}"; ip = "127.0.0.1/8"; } ); };
services = ( { name = "web"; vip = "127.0.0.100"; port = 80;
  backends = ( { address = "127.0.0.11"; port = 8080; } ); } );
CFG
"$lbd" "${eal[@]}" --log-level=lb.link:warning -- --config "$tmp/null.cfg" >"$tmp/first.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "running" "$tmp/first.out" && break; sleep 0.1; done
if grep -Eq "${stamp}lb: running; SIGINT or SIGTERM stops$" "$tmp/first.out" &&
  grep -Eq "${stamp}EAL: " "$tmp/first.out"; then
  ok "timestamped lines: $(grep 'lb: running' "$tmp/first.out")"
else
  bad "no timestamped 'running' line"; sed 's/^/    /' "$tmp/first.out" | tail -5
fi
timeout 60 "$lbd" "${eal[@]}" -- --config "$tmp/null.cfg" >"$tmp/second.out" 2>&1
rc=$?
msg=$(grep '^lbd:' "$tmp/second.out")
if [ $rc -eq 1 ] && echo "$msg" | grep -q "^lbd: EAL initialisation failed: .*Is another primary process running" &&
  ! echo "$msg" | grep -q "Success"; then
  ok "an EAL failure says why: $msg"
else
  bad "EAL failure text: exit $rc: $msg"; sed 's/^/    /' "$tmp/second.out" | tail -5
fi
kill -TERM "${pids[0]}"
wait "${pids[0]}"
rc=$?
pids=()
if [ $rc -eq 0 ] && grep -Eq "${stamp}lb: summary: [0-9]+ packets in, [0-9]+ out; flows: " "$tmp/first.out"; then
  ok "shutdown summary: $(grep -o 'lb: summary: .\{0,80\}' "$tmp/first.out")..."
else
  bad "no shutdown summary (exit $rc)"; sed 's/^/    /' "$tmp/first.out" | tail -5
fi
if grep -q "lb.link: port p: link up" "$tmp/first.out"; then
  bad "--log-level=lb.link:warning did not hide the link's INFO line"
else
  ok "--log-level=lb.link:warning hides lb.link's INFO lines"
fi
[ $fails -eq 0 ]
