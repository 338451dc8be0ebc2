#!/usr/bin/env bash
# Installs, from Debian's own archive only, everything lbd needs to build, test, demo and benchmark.
# Idempotent: packages already present are not touched, and apt is not called at all when nothing
# is missing.
set -euo pipefail

packages=(
  # build (scdoc: the man pages)
  build-essential g++ meson ninja-build pkg-config scdoc
  # dataplane
  dpdk dpdk-dev libdpdk-dev libpcap-dev libbsd-dev libnuma-dev libxdp-dev libbpf-dev libelf-dev
  libarchive-dev libjansson-dev libssl-dev libsystemd-dev
  # config, CLI, control plane (libmicrohttpd: lb-healthd's /metrics)
  libconfig++-dev libcli11-dev nlohmann-json3-dev libcurl4-openssl-dev libcpp-httplib-dev
  libmicrohttpd-dev
  # tests and benchmarks (prometheus: for promtool only, see below)
  libgtest-dev libgmock-dev libbenchmark-dev python3 python3-scapy valgrind prometheus
  # fuzz targets (tests/fuzz): clang with libFuzzer and the sanitizer runtimes
  clang libclang-rt-14-dev
  # end-to-end topology, clients, kernel comparison
  iproute2 iputils-ping ethtool curl wrk nftables procps psmisc util-linux tcpdump bc
  # SYN flood end to end (hping3 --flood --rand-source)
  hping3
  # the fleet (tools/fleet.sh, suite fleet): BIRD 2 speaks BGP for each node and the router
  bird2
  # benchmarks: dry run of the pktgen Lua scripts (tools/pktgen/check.lua)
  lua5.3
  # tools/soak.sh: the soak's plot
  gnuplot-nox
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

# One line per step; apt's own output goes to a log that is shown in full only when a step fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step() {  # step WHAT COMMAND...
  local what=$1
  shift
  printf 'install-deps: %s ... ' "$what"
  if "$@" >"$log" 2>&1 </dev/null; then
    echo done
  else
    local rc=$?
    echo "FAILED (exit $rc)"
    cat "$log" >&2
    exit 1
  fi
}
echo "install-deps: ${#missing[@]} of ${#packages[@]} packages missing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
step "updating the package lists (apt-get update)" apt-get update -qq
# Debian ships promtool (the tests' `promtool check metrics`) only with the Prometheus server
# (96 MB installed, 19 MB to download). The server is not wanted here: kept from starting while
# it installs (policy-rc.d), then disabled.
server=
made_policy=
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  server=1
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# install-deps.sh: no service starts while it installs packages\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f "$log" /usr/sbin/policy-rc.d' EXIT
  fi
fi
step "installing ${#missing[@]} package(s) (the first time takes a few minutes)" \
  apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"
[ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
if [ -n "$server" ]; then
  if [ -d /run/systemd/system ]; then
    step "disabling the Prometheus server (only promtool is used)" \
      systemctl disable --now prometheus.service
  else
    step "disabling the Prometheus server (only promtool is used)" \
      update-rc.d prometheus disable
  fi
fi
installed=()
for p in "${missing[@]}"; do
  v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null) && installed+=("$p=$v")
done
echo "install-deps: installed ${installed[*]}"
