# Shared by the shell tests that run lbd on tools/netns.sh's topology (prefix $p): sourced, not
# run. Each function uses $p (the namespace prefix) and $tmp (the test's scratch directory).

# http_backends N: python HTTP servers on 10.20.0.1{1..N}:8080 in the backend namespaces, each
# answering /name with "backend-i"; their pids are appended to the array `pids`.
http_backends() {
  local i
  for i in $(seq 1 "$1"); do
    mkdir -p "$tmp/www$i"
    echo "backend-$i" >"$tmp/www$i/name"
    ip netns exec "$p-b$i" python3 -m http.server 8080 --bind "10.20.0.1$i" \
      --directory "$tmp/www$i" >"$tmp/http$i.log" 2>&1 &
    pids+=($!)
  done
}

# lbd_devices PMD [QPAIRS]: sets devc and devb, lbd's two port devices on $p-c and $p-b.
lbd_devices() {
  if [ "$1" = af_xdp ]; then
    devc="net_af_xdp_${p}0,iface=${p}-c"
    devb="net_af_xdp_${p}1,iface=${p}-b"
  else
    devc="net_af_packet_${p}0,iface=${p}-c${2:+,qpairs=$2}"
    devb="net_af_packet_${p}1,iface=${p}-b${2:+,qpairs=$2}"
  fi
}

# lbd_ready LBD_PID N: true once lbd answers ping for the VIP 10.10.0.100 (false if it exits or
# 15 s pass), the N backends answer on the management path and lbd had a second to resolve
# their MACs.
lbd_ready() {
  local ok=1 i
  for _ in $(seq 1 150); do
    ip netns exec "$p-client" ping -c1 -W1 10.10.0.100 >/dev/null 2>&1 && { ok=0; break; }
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  [ $ok -eq 0 ] || return 1
  for i in $(seq 1 "$2"); do
    for _ in $(seq 1 100); do
      curl -s --max-time 1 -o /dev/null "http://10.20.0.1$i:8080/name" && break
      sleep 0.1
    done
  done
  sleep 1.5  # lbd asks for next hops' MACs once a second
}
