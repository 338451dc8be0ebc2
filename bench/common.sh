# Sourced by the benchmarks that run lbd on tools/netns.sh's namespaces (bench/e2e.sh,
# bench/idle_wakeup.sh): the checks, the namespaces' set-up and clean-up, lb-backend and lbd
# start/stop, and wrk's output read into numbers. Not executable on its own.
#
#   bench_init NAME PREFIX BACKENDS [netns.sh options...]
#       root, wrk and the build checked (NAME in the messages), $p = PREFIX, $tmp a fresh
#       directory, $build (BUILD, default build); the namespaces rebuilt; everything this file
#       started removed on exit (plus bench_extra_cleanup, if the caller defines it)
#   start_backend NS ADDRESS PORT THREADS [URL]
#       lb-backend in namespace $p-NS, in the background; waits until URL (default
#       http://ADDRESS:PORT/) answers from the host (the management path)
#   lbd_start CONFIG MEMORY_MB READY_COMMAND...
#       lbd with that config (--fresh), waits until READY_COMMAND succeeds (10 s at most)
#   lbd_stop
#   wrk_stats FILE  ->  "req/s p50_ms p99_ms errors" (errors: socket errors + non-2xx/3xx;
#       "0 0 0 1" and wrk's output on stderr if it printed no result)

bench_init() {
  bench_name=$1
  export LB_NS_PREFIX=$2 LB_NS_BACKENDS=$3
  shift 3
  p=$LB_NS_PREFIX
  build=${BUILD:-build}
  [ "$(id -u)" -eq 0 ] || { echo "$bench_name: run as root" >&2; exit 1; }
  command -v wrk >/dev/null || { echo "$bench_name: wrk missing (tools/install-deps.sh)" >&2; exit 1; }
  [ -x "$build/dataplane/lbd" ] || { echo "$bench_name: build first (ninja -C $build)" >&2; exit 1; }
  tmp=$(mktemp -d)
  bench_pids=()
  lbd_pid=
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  tools/netns.sh down >/dev/null 2>&1 || true
  tools/netns.sh up "$@" >/dev/null
}

bench_cleanup() {
  [ -n "$lbd_pid" ] && kill "$lbd_pid" 2>/dev/null && wait "$lbd_pid" 2>/dev/null
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null; done
  if declare -F bench_extra_cleanup >/dev/null; then bench_extra_cleanup || true; fi
  # lbd's flow tables outlive it in these files (docs/operations.md, restarting lbd)
  rm -f /dev/hugepages/lbd-$p-flows-* /dev/shm/lbd-$p-flows-* /dev/shm/lbd-$p-services.json
  tools/netns.sh down >/dev/null 2>&1
  rm -rf "$tmp"
}

nsx() { ip netns exec "$@"; }

start_backend() {
  local url=${5:-http://$2:$3/}
  nsx $p-$1 "$build/tools/lb-backend" --name $1 --listen $2 --port $3 --threads $4 \
    >/dev/null 2>&1 &
  bench_pids+=($!)
  for _ in $(seq 1 50); do curl -s -o /dev/null --max-time 1 "$url" && return 0; sleep 0.1; done
  echo "$bench_name: lb-backend in $p-$1 does not answer $url" >&2
  return 1
}

# A process of our own in a namespace, in the background, stopped at exit.
start_bg() {
  "$@" >/dev/null 2>&1 &
  bench_pids+=($!)
}

lbd_start() {
  local cfg=$1 mem=$2
  shift 2
  "$build/dataplane/lbd" --lcores 0@0,1@1 --no-pci --no-huge -m "$mem" -- --config "$cfg" \
    --fresh >>"$tmp/lbd.log" 2>&1 &
  lbd_pid=$!
  for _ in $(seq 1 100); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$tmp/lbd.log" >&2
  return 1
}

lbd_stop() { kill "$lbd_pid"; wait "$lbd_pid" || true; lbd_pid=; }

wrk_stats() {
  python3 - "$1" <<'PY'
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
