#!/usr/bin/env bash
# lb-gen against lbd's real Dataplane in the same process (--inproc-lbd: two net_ring pairs,
# lbd's worker on the second lcore, --no-huge): the generator the benchmarks rely on sets flows
# up, checks every packet that comes back, and turns a wrong packet into an error and a
# non-zero exit. Not a timing: only counts are checked.
#
# usage: lbgen_test.sh BUILD_DIR SCENARIO
#   seq | scattered   1000 established flows, data both ways in creation / scattered order
#   churn             --syn-share 0.05: flows closed (FIN) and reopened (SYN) under load
#   syn               --syn-only: every client packet opens a new flow
#   io                --inproc-io --peer io: the testpmd-io stand-in
#   wrong_backend     lbd balances over 3 backends, lb-gen is told of 2: must report errors
set -uo pipefail
build=$1
scenario=$2
gen=$build/tools/lb-gen
[ -x "$gen" ] || { echo "lbgen_test: $gen not built"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/lbd.cfg" <<CFG
dataplane: {
  workers = 1;
  mbufs = 16383;
  ports = (
    { name = "client";  device = "net_ring_c"; ip = "10.10.0.1/24"; },
    { name = "backend"; device = "net_ring_b"; ip = "10.20.0.1/24"; }
  );
  flows = { capacity = 65536; };
};
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr";
    backends = ( { address = "10.20.0.11"; port = 8080; },
                 { address = "10.20.0.12"; port = 8080; },
                 { address = "10.20.0.13"; port = 8080; } ); }
);
CFG
three=10.20.0.11:8080,10.20.0.12:8080,10.20.0.13:8080
eal=(-l 0,1 --no-pci --no-huge -m 512 --file-prefix "lbgt$$" --log-level=lib.eal:error)
common=(--flows 1000 --duration 0.5 --warmup 0.2 --setup-timeout 20)
case $scenario in
  seq) args=(--inproc-lbd "$work/lbd.cfg" --backends "$three" "${common[@]}") ;;
  scattered) args=(--inproc-lbd "$work/lbd.cfg" --backends "$three" "${common[@]}" --order scattered) ;;
  churn) args=(--inproc-lbd "$work/lbd.cfg" --backends "$three" "${common[@]}" --syn-share 0.05) ;;
  syn) args=(--inproc-lbd "$work/lbd.cfg" --backends "$three" "${common[@]}" --syn-only) ;;
  io) args=(--inproc-io --peer io --backends "$three" "${common[@]}") ;;
  wrong_backend) args=(--inproc-lbd "$work/lbd.cfg" --backends 10.20.0.11:8080,10.20.0.12:8080
                       "${common[@]}" --quiet-errors) ;;
  *) echo "lbgen_test: unknown scenario $scenario"; exit 2 ;;
esac

timeout 120 "$gen" "${eal[@]}" -- "${args[@]}" > "$work/out" 2>&1
rc=$?
cat "$work/out"
result=$(grep '^RESULT ' "$work/out" | tail -1)
[ -n "$result" ] || { echo "FAIL: no RESULT line (exit $rc)"; exit 1; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$result"; }
fail() { echo "FAIL ($scenario): $*"; exit 1; }
errors=$(field errors)
total=$(field total_fwd)
newflows=$(field new_flows_per_s)
positive() { python3 -c "import sys; sys.exit(0 if float('$1') > 0 else 1)"; }

if [ "$scenario" = wrong_backend ]; then
  [ $rc -ne 0 ] || fail "lb-gen exited 0 although lbd sent flows to a backend it was not told of"
  [ "$errors" -gt 0 ] || fail "no error counted"
  grep -qE '^ +unknown_backend +[1-9]' "$work/out" || fail "errors not classified as unknown_backend"
  # rr over 3 backends: a third of the 1000 flows went to the unlisted one.
  echo "ok: exit $rc, $errors errors, classified unknown_backend"
  exit 0
fi
[ $rc -eq 0 ] || fail "lb-gen exited $rc"
[ "$errors" = 0 ] || fail "$errors errors"
case $scenario in
  syn | churn) positive "$newflows" || fail "no new flows per second: $newflows" ;;
esac
if [ "$scenario" != syn ]; then
  positive "$total" || fail "nothing forwarded: $total Mpps"
fi
if [ "$scenario" = seq ] || [ "$scenario" = scattered ]; then
  grep -q 'flows per backend: 10.20.0.11:8080=334 10.20.0.12:8080=333 10.20.0.13:8080=333' "$work/out" ||
    fail "round robin did not spread 1000 flows 334/333/333"
  grep -qE 'lbd \(in-process\): flows created 1000, active 1000, dropped [0-9]+$' "$work/out" ||
    fail "lbd did not hold exactly the 1000 flows"
  # The only drop allowed is tx_full: lb-gen's RX ring full when it cannot drain fast enough.
  if grep -E 'lbd \(in-process\): dropped [0-9]+ as ' "$work/out" | grep -qv ' as tx_full$'; then
    fail "lbd dropped packets for another reason than tx_full"
  fi
fi
echo "ok: exit 0, 0 errors, forwarded $total Mpps, new flows/s $newflows"
