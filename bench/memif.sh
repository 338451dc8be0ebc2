#!/usr/bin/env bash
# lbd vs dpdk-testpmd --forward-mode=io over the same memif setup, driven and checked by lb-gen.
#
#   lb-gen (core 0, memif server) ==c.sock==> forwarder client port   (lbd or testpmd)
#                                 <==b.sock== forwarder backend port  (worker on core 1)
#
# Scenarios (64-byte frames unless --size): 1k, 1m, 10m established flows (both directions of
# data through the forwarder), syn (SYN-only: every client packet opens a new flow). Each round
# runs every scenario with lbd and with testpmd, alternating which goes first; the report gives
# medians over rounds and the median of the pairwise (same round) ratios.
#
# usage: bench/memif.sh [--rounds N] [--duration S] [--warmup S] [--size B]
#                       [--scenarios "1k 1m 10m syn"] [--build DIR] [--no-huge] [--keep]
#                       [--quiet-wait S] [--nice N] [--order scattered|seq]
# --order: the order lb-gen's data visits the established flows in. scattered (default): each
# next flow ~0.62 of the table away, so the forwarder reads its flow records out of creation
# order, as real traffic does; seq: creation order (friendly to lbd's caches).
# Other work on the machine shares the two CPUs: before each run the script waits up to
# --quiet-wait seconds (default 20) for the other processes to use less than 0.2 CPU, and it
# reports how much CPU they took during each run ("others"). --nice N runs lb-gen and the
# forwarder at that nice level (default 0: no advantage over the rest of the machine).
# Needs root (hugepages, /var/run/dpdk), lbd and lb-gen built (ninja -C build), dpdk-testpmd.
# Last line: "lbd/testpmd-io ratio: X.XX" = median over rounds and the established-flow
# scenarios run of lbd's total forwarded Mpps / testpmd's, round by round.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
rounds=3
duration=5
warmup=1
size=64
scenarios="1k 1m 10m syn"
huge=auto
keep=0
quiet_wait=20
nice_level=0
visit_order=scattered
while [ $# -gt 0 ]; do
  case $1 in
    --quiet-wait) quiet_wait=$2; shift ;;
    --nice) nice_level=$2; shift ;;
    --order) visit_order=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --size) size=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --build) build=$2; shift ;;
    --no-huge) huge=no ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "memif.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

case $visit_order in scattered | seq) ;; *) echo "memif.sh: --order scattered or seq" >&2; exit 2 ;; esac
lbd=$build/dataplane/lbd
gen=$build/tools/lb-gen
testpmd=$(command -v dpdk-testpmd || true)
for f in "$lbd" "$gen"; do
  [ -x "$f" ] || { echo "memif.sh: $f not built (ninja -C build)" >&2; exit 2; }
done
[ -n "$testpmd" ] || { echo "memif.sh: dpdk-testpmd not found (apt-get install dpdk)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "memif.sh: run as root (hugepages, DPDK runtime directory)" >&2; exit 2; }

work=$(mktemp -d /tmp/lbd-bench.XXXXXX)
tag=lbb$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-lbd-flows-* /dev/shm/lbd-lbd-flows-* /dev/shm/lbd-lbd-services.json
  rm -f /dev/hugepages/${tag}* 2>/dev/null
  rm -rf /var/run/dpdk/${tag}* 2>/dev/null
  if [ $keep -eq 1 ]; then echo "memif.sh: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Memory: hugepages when there are enough free ones, else --no-huge (slower TLB behaviour on
# mbufs; both forwarders get the same).
free_huge=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages 2>/dev/null || echo 0)
if [ $huge = auto ]; then
  if mountpoint -q /dev/hugepages && [ "$free_huge" -ge 400 ]; then huge=yes; else huge=no; fi
fi
if [ $huge = yes ]; then
  mem_gen="--huge-unlink"; mem_fwd="--huge-unlink"
else
  mem_gen="--no-huge -m 1024"; mem_fwd="--no-huge -m 512"
fi

vip=10.10.0.100:80
backends=10.20.0.11:8080,10.20.0.12:8080,10.20.0.13:8080
gen_mac_c=02:00:00:00:01:01; gen_mac_b=02:00:00:00:01:02
fwd_mac_c=02:00:00:00:02:01; fwd_mac_b=02:00:00:00:02:02

# scenario -> lb-gen flows, lbd flow capacity, SYN timeout, extra lb-gen options
scenario_flows() { case $1 in 1k) echo 1000 ;; 1m) echo 1000000 ;; 10m) echo 10000000 ;; syn) echo 33554432 ;; esac; }
scenario_capacity() { case $1 in 10m) echo 10485760 ;; syn) echo 16777216 ;; *) echo 1048576 ;; esac; }
scenario_syn_timeout() { case $1 in syn) echo 1 ;; *) echo 30 ;; esac; }
scenario_opts() { case $1 in syn) echo "--syn-only" ;; *) echo "--order $visit_order" ;; esac; }

write_lbd_config() {  # FILE SCENARIO
  cat > "$1" <<EOF
# written by bench/memif.sh: lbd as memif client of lb-gen, one worker
dataplane: {
  workers = 1;
  mbufs = 16383;
  ports = (
    { name = "client";  device = "net_memif0,role=client,socket=$work/c.sock,socket-abstract=no,mac=$fwd_mac_c";
      ip = "10.10.0.1/24"; },
    { name = "backend"; device = "net_memif1,role=client,socket=$work/b.sock,socket-abstract=no,mac=$fwd_mac_b";
      ip = "10.20.0.1/24"; }
  );
  flows = { capacity = $(scenario_capacity "$2"); tcp_syn_timeout = $(scenario_syn_timeout "$2"); };
};
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "rr";
    backends = ( { address = "10.20.0.11"; port = 8080; },
                 { address = "10.20.0.12"; port = 8080; },
                 { address = "10.20.0.13"; port = 8080; } ); }
);
EOF
}

wait_for() {  # FILE PATTERN SECONDS PID: waits for PATTERN in FILE while PID lives
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || { grep -q "$2" "$1" 2>/dev/null; return $?; }
    sleep 0.1
  done
  return 1
}

child_of() {  # PID: the process `timeout` started
  ps -o pid= --ppid "$1" 2>/dev/null | head -1 | tr -d ' '
}

rss_kib() {  # PID FIELD (from /proc/PID/status)
  awk -v f="$2:" '$1 == f { print $2 }' /proc/"$1"/status 2>/dev/null
}

# CPU accounting: total busy jiffies of the machine, and of given processes.
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
proc_jiffies() {  # PID...: utime + stime of each, summed (threads included)
  local t=0 p v
  for p in "$@"; do
    [ -n "$p" ] || continue
    v=$(awk '{ print $14 + $15 }' /proc/"$p"/stat 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo $t
}
hz=$(getconf CLK_TCK)
others_cpu() {  # BUSY0 BUSY1 OURS0 OURS1 SECONDS: CPUs used by everything else
  python3 -c "import sys; b0,b1,o0,o1,s=map(float,sys.argv[1:]); print('%.2f' % max(0.0, ((b1-b0)-(o1-o0))/$hz/s))" "$@"
}
wait_quiet() {  # waits (up to --quiet-wait s) until other processes use < 0.2 CPU over 1 s
  local end=$((SECONDS + quiet_wait)) b0 b1 u
  while :; do
    b0=$(busy_jiffies); sleep 1; b1=$(busy_jiffies)
    u=$(python3 -c "print('%.2f' % (($b1 - $b0) / $hz))")
    if python3 -c "import sys; sys.exit(0 if $u < 0.2 else 1)" || [ $SECONDS -ge $end ]; then
      echo "$u"; return
    fi
  done
}

result_field() {  # LOG KEY
  grep '^RESULT ' "$1" | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}

run_one() {  # SCENARIO FORWARDER(lbd|testpmd) ROUND -> appends to $work/results
  local sc=$1 fwd=$2 round=$3
  local d=$work/$sc-$fwd-$round
  mkdir -p "$d"
  rm -f "$work/c.sock" "$work/b.sock"
  local flows; flows=$(scenario_flows "$sc")
  local peer=lbd; [ "$fwd" = testpmd ] && peer=io
  local budget=$(( 60 + duration + ${warmup%.*} + (flows / 200000) ))
  local quiet; quiet=$(wait_quiet)
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  # lb-gen: memif server, main lcore on CPU 0. lbd's links come up before it has built its flow
  # tables (seconds for 32 M flows without hugepages on a loaded machine) and only then does it
  # answer ARP: lb-gen waits for that as long as for the rest of its setup.
  timeout $((budget + 60)) nice -n "$nice_level" "$gen" -l 0 --no-pci --no-telemetry --file-prefix ${tag}g $mem_gen \
    --vdev="net_memif0,role=server,socket=$work/c.sock,socket-abstract=no,mac=$gen_mac_c" \
    --vdev="net_memif1,role=server,socket=$work/b.sock,socket-abstract=no,mac=$gen_mac_b" \
    -- --peer $peer --vip $vip --backends $backends --flows "$flows" --size "$size" \
    --duration "$duration" --warmup "$warmup" --setup-timeout $budget --resolve-timeout $budget \
    --linger 30 --progress \
    $(scenario_opts "$sc") > "$d/gen.log" 2>&1 &
  local gpid=$!
  pids+=("$gpid")
  local i=0
  # Its sockets exist from probe on, but a client that connects before lb-gen has started its
  # ports is refused ("ID not found") and gives up: wait for lb-gen to say it is ready.
  while [ ! -S "$work/c.sock" ] || [ ! -S "$work/b.sock" ] ||
    ! grep -q "lb-gen: ports started" "$d/gen.log" 2>/dev/null; do
    sleep 0.1; i=$((i + 1))
    if [ $i -gt 300 ] || ! kill -0 $gpid 2>/dev/null; then
      echo "memif.sh: lb-gen did not start its memif ports; see below" >&2
      kill $gpid 2>/dev/null; wait $gpid 2>/dev/null
      cat "$d/gen.log" >&2; return 1
    fi
  done
  local fpid
  if [ "$fwd" = lbd ]; then
    write_lbd_config "$d/lbd.cfg" "$sc"
    if ! "$lbd" --config "$d/lbd.cfg" --check > /dev/null; then
      kill $gpid 2>/dev/null; wait $gpid 2>/dev/null; return 1
    fi
    # lbd: main (control, sleeps) lcore 0 on CPU 0 beside lb-gen, worker lcore 1 on CPU 1.
    timeout $((budget + 60)) nice -n "$nice_level" "$lbd" --lcores 0@0,1@1 --no-pci --file-prefix ${tag}l $mem_fwd \
      --log-level=lb:info -- --config "$d/lbd.cfg" --fresh > "$d/fwd.log" 2>&1 &
    fpid=$!
  else
    # testpmd: main lcore 0 on CPU 0 (waits on stdin: a FIFO we hold open, so it never reads
    # end of file), forwarding lcore 1 on CPU 1.
    mkfifo "$d/stdin"
    exec 7<>"$d/stdin"
    timeout $((budget + 60)) nice -n "$nice_level" "$testpmd" --lcores 0@0,1@1 --main-lcore 0 --no-pci --no-telemetry \
      --file-prefix ${tag}t $mem_fwd \
      --vdev="net_memif0,role=client,socket=$work/c.sock,socket-abstract=no,mac=$fwd_mac_c" \
      --vdev="net_memif1,role=client,socket=$work/b.sock,socket-abstract=no,mac=$fwd_mac_b" \
      -- --forward-mode=io --auto-start --nb-cores=1 --rxq=1 --txq=1 --burst=32 \
      --total-num-mbufs=32768 --stats-period 0 < "$d/stdin" > "$d/fwd.log" 2>&1 &
    fpid=$!
  fi
  pids+=("$fpid")
  local rss_setup="" rss_done="" anon="" huge_kib="" thp="" gen_rss="" lpid
  local b0="" b1="" o0="" o1="" t0=$SECONDS others="-"
  if wait_for "$d/gen.log" "setup complete" $((budget + 30)) $gpid; then
    if [ "$fwd" = lbd ]; then rss_setup=$(rss_kib "$(child_of $fpid)" VmRSS); fi
    b0=$(busy_jiffies); o0=$(proc_jiffies "$(child_of $gpid)" "$(child_of $fpid)"); t0=$SECONDS
  fi
  wait_for "$d/gen.log" "lb-gen: done" $((budget + 30)) $gpid
  lpid=$(child_of $fpid)
  if [ -n "$b0" ] && [ $SECONDS -gt $t0 ]; then
    b1=$(busy_jiffies); o1=$(proc_jiffies "$(child_of $gpid)" "$lpid")
    others=$(others_cpu "$b0" "$b1" "$o0" "$o1" $((SECONDS - t0)))
  fi
  if [ "$fwd" = lbd ] && [ -n "$lpid" ]; then
    rss_done=$(rss_kib $lpid VmRSS); anon=$(rss_kib $lpid RssAnon)
    huge_kib=$(rss_kib $lpid HugetlbPages)
    thp=$(awk '$1 == "AnonHugePages:" { print $2 }' /proc/$lpid/smaps_rollup 2>/dev/null)
    python3 "$root/bench/telemetry.py" ${tag}l /lb/stats /lb/drops /lb/ports > "$d/telemetry.json" 2>/dev/null
  fi
  gen_rss=$(rss_kib "$(child_of $gpid)" VmRSS)
  kill -INT $fpid 2>/dev/null   # both stop cleanly on SIGINT; lb-gen is not polling any more
  wait $fpid 2>/dev/null
  [ "$fwd" = testpmd ] && exec 7>&-
  wait $gpid
  local grc=$?
  local tot; tot=$(result_field "$d/gen.log" total_fwd)
  if [ -z "$tot" ]; then
    echo "memif.sh: $sc/$fwd round $round produced no result (lb-gen exit $grc); log:" >&2
    tail -20 "$d/gen.log" >&2; tail -5 "$d/fwd.log" >&2
    return 1
  fi
  local drops="-"
  if [ "$fwd" = lbd ] && [ -s "$d/telemetry.json" ]; then
    drops=$(python3 - "$d/telemetry.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
d = {k: v for k, v in (t.get("/lb/drops") or {}).items() if v}
s = t.get("/lb/stats") or {}
print("dropped=%d%s flows_created=%d" % (s.get("dropped", 0),
      "".join(" %s=%d" % kv for kv in sorted(d.items())), s.get("flows_created", 0)))
PY
)
  elif [ "$fwd" = testpmd ]; then
    drops=$(awk '/Accumulated forward statistics/ { a = 1 } a && /TX-dropped/ { print "tx_dropped=" $4; exit }' "$d/fwd.log")
  fi
  printf '%s %s %s total=%s c2b=%s/%s b2c=%s/%s ringfull=%s/%s newflows=%s lost=%s errors=%s gen_busy=%s gen_cpp=%s gen_exit=%s load=%s quiet=%s others=%s rss_setup=%s rss_done=%s anon=%s huge=%s thp=%s gen_rss=%s | %s\n' \
    "$sc" "$fwd" "$round" "$tot" \
    "$(result_field "$d/gen.log" c2b_offered)" "$(result_field "$d/gen.log" c2b_fwd)" \
    "$(result_field "$d/gen.log" b2c_offered)" "$(result_field "$d/gen.log" b2c_fwd)" \
    "$(result_field "$d/gen.log" ring_full_c2b)" "$(result_field "$d/gen.log" ring_full_b2c)" \
    "$(result_field "$d/gen.log" new_flows_per_s)" "$(result_field "$d/gen.log" lost)" \
    "$(result_field "$d/gen.log" errors)" "$(result_field "$d/gen.log" gen_busy)" \
    "$(result_field "$d/gen.log" gen_cycles_per_pkt)" "$grc" "$load" \
    "$quiet" "$others" "${rss_setup:--}" "${rss_done:--}" \
    "${anon:--}" "${huge_kib:--}" "${thp:--}" "${gen_rss:--}" "$drops" | tee -a "$work/results"
  rm -f "$work/c.sock" "$work/b.sock"
}

echo "memif.sh: $rounds round(s) of: $scenarios; ${size} B frames, ${duration} s measured after" \
     "${warmup} s warm-up; flows visited in $visit_order order;" \
     "memory: $([ $huge = yes ] && echo hugepages || echo --no-huge)"
echo "memif.sh: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //');" \
     "lb-gen on CPU 0, the forwarder's worker on CPU 1"
failed=0
for r in $(seq 1 "$rounds"); do
  for sc in $scenarios; do
    if [ $((r % 2)) -eq 1 ]; then order="lbd testpmd"; else order="testpmd lbd"; fi
    for fwd in $order; do
      run_one "$sc" "$fwd" "$r" || failed=$((failed + 1))
    done
  done
done

touch "$work/results"
python3 - "$work/results" "$failed" <<'PY'
import statistics, sys
rows = []
for line in open(sys.argv[1]):
    head, _, drops = line.partition(" | ")
    f = head.split()
    kv = dict(x.split("=", 1) for x in f[3:])
    rows.append(dict(sc=f[0], fwd=f[1], round=int(f[2]), drops=drops.strip(), **kv))
failed = int(sys.argv[2])
def num(x):
    try: return float(x)
    except (TypeError, ValueError): return None
order = [s for s in ["1k", "1m", "10m", "syn"] if any(r["sc"] == s for r in rows)]
print()
print("scenario  forwarder  rounds  median total Mpps  (per direction c->b / b->c forwarded)"
      "  median new flows/s  errors")
ratios_all = []
for sc in order:
    for fwd in ["lbd", "testpmd"]:
        rs = [r for r in rows if r["sc"] == sc and r["fwd"] == fwd]
        if not rs: continue
        tot = statistics.median(num(r["total"]) for r in rs)
        c2b = statistics.median(num(r["c2b"].split("/")[1]) for r in rs)
        b2c = statistics.median(num(r["b2c"].split("/")[1]) for r in rs)
        nf = statistics.median(num(r["newflows"]) for r in rs)
        errs = sum(int(r["errors"]) for r in rs)
        print(f"{sc:8}  {fwd:9}  {len(rs):6}  {tot:17.3f}  ({c2b:.3f} / {b2c:.3f})"
              f"{'':32}{nf:12.0f}  {errs}")
    pairs = []
    for r in sorted({x["round"] for x in rows}):
        a = [x for x in rows if x["sc"] == sc and x["fwd"] == "lbd" and x["round"] == r]
        b = [x for x in rows if x["sc"] == sc and x["fwd"] == "testpmd" and x["round"] == r]
        if a and b and num(b[0]["total"]):
            pairs.append(num(a[0]["total"]) / num(b[0]["total"]))
    if pairs:
        print(f"{sc:8}  lbd/testpmd pairwise ratios: " + " ".join(f"{p:.2f}" for p in pairs)
              + f"  median {statistics.median(pairs):.2f}")
        if sc != "syn": ratios_all += pairs
# The same over the runs where the rest of the machine stayed under 0.2 CPU (others=...).
quiet = lambda r: num(r.get("others")) is not None and num(r["others"]) < 0.2
qrows = [r for r in rows if quiet(r)]
if qrows and len(qrows) < len(rows):
    print()
    print(f"quiet runs only (other processes < 0.2 CPU during the run): {len(qrows)} of {len(rows)}")
    for sc in order:
        line = []
        for fwd in ["lbd", "testpmd"]:
            rs = [r for r in qrows if r["sc"] == sc and r["fwd"] == fwd]
            if rs:
                line.append(f"{fwd} {statistics.median(num(r['total']) for r in rs):.3f} Mpps"
                            f" ({len(rs)})")
        pairs = []
        for rd in sorted({x["round"] for x in rows}):
            a = [x for x in qrows if x["sc"] == sc and x["fwd"] == "lbd" and x["round"] == rd]
            b = [x for x in qrows if x["sc"] == sc and x["fwd"] == "testpmd" and x["round"] == rd]
            if a and b and num(b[0]["total"]):
                pairs.append(num(a[0]["total"]) / num(b[0]["total"]))
        if line:
            print(f"  {sc:4} " + ", ".join(line)
                  + (f"; quiet pairs {' '.join(f'{p:.2f}' for p in pairs)}" if pairs else ""))
print()
print("Where packets went (per run): ring-full % = share of lb-gen's TX bursts the forwarder's RX")
print("ring refused (backpressure: lb-gen had more to offer); lb-gen busy = share of its loop time")
print("spent receiving or sending (near 100 %: lb-gen itself is the limit); lost = sent - came back.")
for r in rows:
    print(f"  {r['sc']:4} {r['fwd']:8} round {r['round']}: offered c->b {r['c2b'].split('/')[0]}"
          f" b->c {r['b2c'].split('/')[0]} Mpps, ring-full {r['ringfull']} %, lb-gen busy"
          f" {r.get('gen_busy', '?')} % ({r.get('gen_cpp') or '?'} cycles/packet), lost {r['lost']},"
          f" other processes {r['others']} CPU;"
          f" {r['drops']}")
mem = [r for r in rows if r["fwd"] == "lbd" and r["sc"] in ("10m", "1m") and r["anon"] != "-"]
if mem:
    print()
    print("lbd memory (from /proc/PID/status after the run; KiB):")
    for sc in ("1m", "10m"):
        rs = [r for r in mem if r["sc"] == sc]
        if not rs: continue
        r = rs[-1]
        print(f"  {sc}: VmRSS {r['rss_done']} (after setup {r['rss_setup']}), RssAnon {r['anon']},"
              f" AnonHugePages {r['thp']}, HugetlbPages {r['huge']}; lb-gen VmRSS {r['gen_rss']}")
    m1 = [r for r in mem if r["sc"] == "1m"]
    m10 = [r for r in mem if r["sc"] == "10m"]
    if m10:
        anon10 = num(m10[-1]["anon"])
        print(f"  10m: lbd RssAnon / 10,000,000 flows = {anon10 * 1024 / 1e7:.1f} B per flow"
              f" (whole process, table sized for 10,485,760)")
        if m1:
            anon1 = num(m1[-1]["anon"])
            print(f"  marginal: (RssAnon 10m - RssAnon 1m) / (10,485,760 - 1,048,576) capacity ="
                  f" {(anon10 - anon1) * 1024 / (10485760 - 1048576):.1f} B per flow slot")
if failed:
    print(f"\n{failed} run(s) FAILED (see above)")
if any(int(r["errors"]) for r in rows):
    print("\nlb-gen found WRONG PACKETS (errors above): the numbers do not count")
if ratios_all:
    print(f"lbd/testpmd-io ratio: {statistics.median(ratios_all):.2f}")
else:
    print("lbd/testpmd-io ratio: n/a")
PY
