#!/usr/bin/env bash
# Instructions per packet under valgrind --tool=callgrind: lbd's worker path vs testpmd
# --forward-mode=io, both on net_ring ports (the ring PMD), with full bursts of 32.
#
#   lbd          build/bench/lbd_worker_cost --mode lbd: Dataplane::poll() called on net_ring
#                ports that hold one burst per direction; only poll() is counted
#                (--toggle-collect on its exact name: a pattern such as poll* would also
#                match the lambdas inside it, and toggling on entering one of them would stop
#                the count for the work they do), packets = all that poll() handled (setup included: the
#                same window).
#                Established flows, 64-byte data segments both ways.
#   lbd SYN      the same with SYNs of new flows only (--mode syn), in a table with room for
#                them all and a 100 % embryonic budget: no eviction, no SYN pressure mode.
#                74-byte SYNs as hosts send them (TCP options, no data), which lbd copies into
#                its SYN cache; until 2026-12-07 60-byte SYNs that carried 6 bytes of data and
#                skipped that copy.
#   lbd SYN, budget full  the same SYNs in the table SYN mode had until 2026-12-07 (room for the
#                flows + 1/16, lbd's default 50 % embryonic budget): past half the budget the
#                pressure mode, then one eviction of the oldest embryonic flow per SYN (the
#                SYN-flood steady state; --mode flood measures it with established traffic).
#   io harness   the same ports forwarded the way testpmd io does (--mode io), only that loop.
#   testpmd-io   dpdk-testpmd --forward-mode=io on two net_ring (loopback) vdevs, packets
#                circulating after "start tx_first 8"; the forwarding thread's instructions over
#                its forwarded packets.
#   --memif      also lbd and testpmd as memif clients of lb-gen (lb-gen not under valgrind),
#                whole worker thread / packets forwarded: includes the empty polls memif's
#                32-packet lock-step causes (see docs/benchmarking.md), so read it with care.
#
# usage: bench/instructions.sh [--build DIR] [--flows N] [--bursts N] [--memif] [--keep]
# Last line: "instructions per packet: lbd N, SYN S, SYN budget full F, testpmd-io M".
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
flows=1000
bursts=5000
memif=0
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift ;;
    --flows) flows=$2; shift ;;
    --bursts) bursts=$2; shift ;;
    --memif) memif=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "instructions.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
wc=$build/bench/lbd_worker_cost
testpmd=$(command -v dpdk-testpmd || true)
command -v valgrind > /dev/null || { echo "instructions.sh: valgrind not installed" >&2; exit 2; }
[ -x "$wc" ] || { echo "instructions.sh: $wc not built (ninja -C build)" >&2; exit 2; }
[ -n "$testpmd" ] || { echo "instructions.sh: dpdk-testpmd not found" >&2; exit 2; }

work=$(mktemp -d /tmp/lbd-instr.XXXXXX)
tag=lbi$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  exec 8>&- 2>/dev/null
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd); the memif
  # run's lbd is instance $tag, so only its own are removed
  rm -f /dev/hugepages/lbd-${tag}-flows-* /dev/shm/lbd-${tag}-flows-* /dev/shm/lbd-${tag}-services.json
  rm -f /dev/hugepages/${tag}* 2>/dev/null
  rm -rf /var/run/dpdk/${tag}* 2>/dev/null
  if [ $keep -eq 1 ]; then echo "instructions.sh: files kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# totals and call counts from a callgrind output file
cg() {  # FILE [FUNCTION-SUBSTRING]: prints "total_ir calls_to_function"
  python3 - "$@" <<'PY'
import re, sys
path = sys.argv[1]
want = sys.argv[2] if len(sys.argv) > 2 else None
names, total, calls, cfn = {}, 0, 0, None
for line in open(path):
    if line.startswith(("totals:", "summary:")):
        total = max(total, int(line.split()[1]))
        continue
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, i, name = m.groups()
        if name: names[i] = name
        if kind == "cfn": cfn = i
        continue
    if want and line.startswith("calls=") and want in names.get(cfn, ""):
        calls += int(line.split("=")[1].split()[0])
print(total, calls)
PY
}

echo "instructions.sh: callgrind, $flows flows, $bursts bursts of 32 per direction (64 B)"

# 1. lbd, established flows
valgrind --tool=callgrind --toggle-collect='lb::dp::Dataplane::poll(unsigned short, unsigned long)' \
  --callgrind-out-file="$work/lbd.out" "$wc" --mode lbd --flows "$flows" --bursts "$bursts" \
  > "$work/lbd.log" 2>&1 || { cat "$work/lbd.log"; exit 1; }
read -r lbd_ir _ < <(cg "$work/lbd.out")
handled() { grep '^RESULT' "$1" | tr ' ' '\n' | awk -F= '$1 == "handled_all" { print $2 }'; }
lbd_pk=$(handled "$work/lbd.log")
# 2. lbd, SYNs of new flows
valgrind --tool=callgrind --toggle-collect='lb::dp::Dataplane::poll(unsigned short, unsigned long)' \
  --callgrind-out-file="$work/syn.out" "$wc" --mode syn --flows "$flows" \
  --bursts $((bursts / 2)) > "$work/syn.log" 2>&1 || { cat "$work/syn.log"; exit 1; }
read -r syn_ir _ < <(cg "$work/syn.out")
syn_pk=$(handled "$work/syn.log")
grep '^RESULT mode=syn' "$work/syn.log" | sed 's/^RESULT /  SYN run: /'
# 2b. the same SYNs with the embryonic budget filling up (the old SYN-mode table)
opened=$((flows + bursts / 2 * 32))
valgrind --tool=callgrind --toggle-collect='lb::dp::Dataplane::poll(unsigned short, unsigned long)' \
  --callgrind-out-file="$work/synfull.out" "$wc" --mode syn --flows "$flows" \
  --bursts $((bursts / 2)) --capacity $((opened + opened / 16 + 1024)) --syn-budget 50 \
  > "$work/synfull.log" 2>&1 || { cat "$work/synfull.log"; exit 1; }
read -r synfull_ir _ < <(cg "$work/synfull.out")
synfull_pk=$(handled "$work/synfull.log")
grep '^RESULT mode=syn' "$work/synfull.log" | sed 's/^RESULT /  SYN run, budget full: /'
# 3. io loop on the same ports
valgrind --tool=callgrind --toggle-collect='*io_poll*' --callgrind-out-file="$work/io.out" \
  "$wc" --mode io --flows "$flows" --bursts "$bursts" > "$work/io.log" 2>&1 \
  || { cat "$work/io.log"; exit 1; }
read -r io_ir _ < <(cg "$work/io.out")
io_pk=$(grep '^RESULT' "$work/io.log" | tr ' ' '\n' | awk -F= '$1 == "packets" { print $2 }')

# 4. testpmd io on two net_ring vdevs (each loops its TX ring back to its RX ring)
mkfifo "$work/tp.in"
exec 8<>"$work/tp.in"
timeout 300 valgrind --tool=callgrind --separate-threads=yes \
  --callgrind-out-file="$work/tp.out.%p" "$testpmd" -l 0,1 --no-pci --no-huge -m 512 \
  --no-telemetry --file-prefix ${tag}t --vdev=net_ring0 --vdev=net_ring1 \
  -- -i --forward-mode=io --nb-cores=1 --total-num-mbufs=8192 < "$work/tp.in" > "$work/tp.log" 2>&1 &
tp=$!
pids+=("$tp")
for _ in $(seq 1 240); do grep -q 'testpmd>' "$work/tp.log" && break; sleep 0.5; done
echo "start tx_first 8" >&8
sleep 20
echo "stop" >&8
for _ in $(seq 1 120); do grep -q 'Accumulated forward statistics' "$work/tp.log" && break; sleep 0.5; done
echo "quit" >&8
wait $tp
exec 8>&-
tp_pk=$(awk '/Accumulated forward statistics/ { a = 1 } a && /RX-total/ { print $6; exit }' "$work/tp.log")
tp_ir=0
for f in "$work"/tp.out.*; do
  read -r t _ < <(cg "$f")
  [ "$t" -gt "$tp_ir" ] && tp_ir=$t  # the forwarding lcore is by far the busiest thread
done

per() { python3 -c "import sys; a, b = int(sys.argv[1]), int(sys.argv[2]); print(round(a / b) if b else 'n/a')" "$1" "$2"; }
lbd_per=$(per "$lbd_ir" "$lbd_pk")
syn_per=$(per "$syn_ir" "$syn_pk")
synfull_per=$(per "$synfull_ir" "$synfull_pk")
io_per=$(per "$io_ir" "${io_pk:-0}")
tp_per=$(per "$tp_ir" "${tp_pk:-0}")

echo
printf '%-44s %14s %12s %10s\n' "path (net_ring, 64 B, bursts of 32)" "instructions" "packets" "per packet"
printf '%-44s %14s %12s %10s\n' "lbd worker, established flows, both ways" "$lbd_ir" "$lbd_pk" "$lbd_per"
printf '%-44s %14s %12s %10s\n' "lbd worker, SYNs of new flows" "$syn_ir" "$syn_pk" "$syn_per"
printf '%-44s %14s %12s %10s\n' "lbd worker, SYNs, embryonic budget full" "$synfull_ir" "$synfull_pk" "$synfull_per"
printf '%-44s %14s %12s %10s\n' "io loop (testpmd io's logic), same ports" "$io_ir" "$io_pk" "$io_per"
printf '%-44s %14s %12s %10s\n' "dpdk-testpmd io, net_ring loopback" "$tp_ir" "$tp_pk" "$tp_per"

echo
echo "Where lbd's instructions go (established flows; instructions per packet, self then inclusive):"
python3 - "$work/lbd.out" "$lbd_pk" <<'PY'
import re, subprocess, sys
path, pk = sys.argv[1], int(sys.argv[2])
def table(inclusive):
    # One function may appear once per source file its inlined code came from: self costs add
    # up; for inclusive costs the largest entry is the function's own (approximate).
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100",
                          "--inclusive=" + ("yes" if inclusive else "no"), path],
                         capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line: continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(2).split(":", 1)[-1] if ":" in m.group(2) else m.group(2)
        fn = re.sub(r"\s*\[.*\]$", "", fn)
        fn = re.sub(r"\(.*\)", "", fn).replace("lb::core::", "").replace("lb::dp::", "")
        fn = fn.strip()
        if fn.startswith("0x"):
            if inclusive: continue
            fn = "(DPDK ring PMD / mbuf, no symbols)"
        if not fn: continue
        rows[fn] = max(rows.get(fn, 0), ir) if inclusive else rows.get(fn, 0) + ir
    return sorted(rows.items(), key=lambda kv: -kv[1])
print("  self:")
for fn, ir in table(False)[:14]:
    print(f"    {ir / pk:7.1f}  {fn}")
print("  inclusive (approximate):")
skip = ("main", "(below main)", "__libc_start", "libc_start", "???")
for fn, ir in [r for r in table(True) if not r[0].startswith(skip)][:14]:
    print(f"    {ir / pk:7.1f}  {fn}")
PY

if [ $memif -eq 1 ]; then
  gen=$build/tools/lb-gen
  lbd=$build/dataplane/lbd
  echo
  echo "memif (lbd / testpmd as memif clients under callgrind, lb-gen native, 1000 flows):"
  for fwd in lbd testpmd; do
    rm -f "$work/c.sock" "$work/b.sock"
    peer=lbd; [ $fwd = testpmd ] && peer=io
    timeout 400 "$gen" -l 0 --no-pci --no-telemetry --file-prefix ${tag}g --no-huge -m 1024 \
      --vdev="net_memif0,role=server,socket=$work/c.sock,socket-abstract=no,mac=02:00:00:00:01:01" \
      --vdev="net_memif1,role=server,socket=$work/b.sock,socket-abstract=no,mac=02:00:00:00:01:02" \
      -- --peer $peer --vip 10.10.0.100:80 --flows 1000 --duration 20 --warmup 1 \
      --link-timeout 180 --resolve-timeout 180 --linger 60 --setup-timeout 200 \
      --backends 10.20.0.11:8080,10.20.0.12:8080,10.20.0.13:8080 > "$work/mg-$fwd.log" 2>&1 &
    g=$!
    pids+=("$g")
    # A client that connects before lb-gen has started its ports is refused and gives up.
    for _ in $(seq 1 300); do grep -q "lb-gen: ports started" "$work/mg-$fwd.log" && break; sleep 0.1; done
    if [ $fwd = lbd ]; then
      cat > "$work/lbd-memif.cfg" <<EOF
instance = "$tag";
dataplane: { workers = 1; mbufs = 16383;
  ports = ( { name = "client"; device = "net_memif0,role=client,socket=$work/c.sock,socket-abstract=no,mac=02:00:00:00:02:01"; ip = "10.10.0.1/24"; },
            { name = "backend"; device = "net_memif1,role=client,socket=$work/b.sock,socket-abstract=no,mac=02:00:00:00:02:02"; ip = "10.20.0.1/24"; } );
  flows = { capacity = 65536; tcp_syn_timeout = 600; }; };
services = ( { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr";
  backends = ( { address = "10.20.0.11"; port = 8080; }, { address = "10.20.0.12"; port = 8080; },
               { address = "10.20.0.13"; port = 8080; } ); } );
EOF
      timeout 400 valgrind --tool=callgrind --separate-threads=yes \
        --callgrind-out-file="$work/m-$fwd.out.%p" "$lbd" --lcores 0@0,1@1 --no-pci --no-huge \
        -m 512 --file-prefix ${tag}l -- --config "$work/lbd-memif.cfg" --fresh > "$work/m-$fwd.log" 2>&1 &
    else
      mkfifo "$work/tpm.in"
      exec 8<>"$work/tpm.in"
      timeout 400 valgrind --tool=callgrind --separate-threads=yes \
        --callgrind-out-file="$work/m-$fwd.out.%p" "$testpmd" --lcores 0@0,1@1 --main-lcore 0 \
        --no-pci --no-huge -m 512 --no-telemetry --file-prefix ${tag}m \
        --vdev="net_memif0,role=client,socket=$work/c.sock,socket-abstract=no,mac=02:00:00:00:02:01" \
        --vdev="net_memif1,role=client,socket=$work/b.sock,socket-abstract=no,mac=02:00:00:00:02:02" \
        -- --forward-mode=io --auto-start --nb-cores=1 --total-num-mbufs=16384 --stats-period 0 \
        < "$work/tpm.in" > "$work/m-$fwd.log" 2>&1 &
    fi
    v=$!
    pids+=("$v")
    for _ in $(seq 1 3000); do grep -q 'lb-gen: done' "$work/mg-$fwd.log" && break
      kill -0 $g 2>/dev/null || break; sleep 0.1; done
    kill -INT "$(ps -o pid= --ppid $v | head -1 | tr -d ' ')" 2>/dev/null
    wait $v
    [ $fwd = testpmd ] && exec 8>&-
    wait $g
    # packets the forwarder received = what lb-gen sent (memif refuses rather than drops)
    pk=$(sed -n 's/.*whole run.*: sent \([0-9]*\),.*/\1/p' "$work/mg-$fwd.log")
    best=0
    for f in "$work"/m-$fwd.out.*; do read -r t _ < <(cg "$f"); [ "$t" -gt "$best" ] && best=$t; done
    printf '  %-8s worker thread %s instructions / %s packets = %s per packet\n' "$fwd" "$best" \
      "${pk:-?}" "$(per "$best" "${pk:-0}")"
  done
fi

echo "instructions per packet: lbd $lbd_per, SYN $syn_per, SYN budget full $synfull_per, testpmd-io $tp_per"
