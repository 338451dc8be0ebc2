#!/usr/bin/env python3
"""Which established connections the router moves when a fleet node goes and comes back, with
plain multipath routes and with a resilient next-hop group, and how many of those lbd saves.

  bench/fleet_resilient.py [BUILD_DIR] [--nodes 2|3] [--conns N] [--modes plain,resilient]
  (root, bird2; run under the shared lock: flock /tmp/lbd-sys.lock bench/fleet_resilient.py)

For each router set-up, on tools/fleet.sh's fleet (2 or 3 nodes, tunnel mode, Maglev):
  lost  N keep-alive connections spread over the nodes (one request each every 0.2 s); node 1's
        lbd is killed -9, its lb-healthd has BIRD withdraw it.
  back  N keep-alive connections opened while node 1 is away; node 1's lbd
        starts again and is announced again.
For each phase: how many connections the router now sends to another node than before ("moved":
the sum of the nodes' flows_rehashed counters: flows that arrived mid-connection at a node that
had no state for them, which lbd's Maglev sent to the same backend), and how many connections
completed every request on their own connection. est_*: the router's choice per connection from
`ip route get ... sport P` before and after; only an estimate: the router hashes the forwarded
packets with the hash the client's socket put on them (skb->hash crosses the veth; policy 1 uses it
when set), route get with a fresh 5-tuple hash, so it names other connections (same proportions
with plain multipath; with the resilient group it names connections in buckets that had no real
traffic).

Router set-ups:
  plain      BIRD's multipath route (`merge paths on`): the kernel's hash-threshold ECMP. Any
             change of the set of next hops re-divides the hash space.
  resilient  a kernel resilient next-hop group (`ip nexthop ... type resilient buckets 64
             idle_timer 5 unbalanced_timer 0`) serving the VIP through a policy rule. BIRD 2.0.12
             programs no next-hop objects, so this script keeps the group's members equal to the
             next hops of BIRD's route (a loop in the router namespace, every 0.1 s): what a
             router with resilient ECMP does. A bucket moves to a returning next hop only after
             idle_timer without traffic; a lost next hop's buckets go to the others at once.
             A group left with ONE member takes no hash, so it records no bucket activity
             (nexthop_num_path() is 1): with 2 nodes, every bucket looks idle when the second
             comes back and half of them move at once. With 3 nodes the group keeps 2 members.
"""
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLEET = os.path.join(ROOT, "tools", "fleet.sh")
CLIENT = os.path.join(ROOT, "tests", "e2e", "client.py")
P = "flr"
VIP = "10.100.0.100"
GROUP = 100  # the resilient group's id; node I's next hop is id I
TABLE = 100  # the policy-routing table the resilient route is in
NODES = 2
ENV = dict(os.environ, LB_FLEET_PREFIX=P, LB_FLEET_NODES="2", LB_FLEET_BACKENDS="3",
           LB_FLEET_HOLD="3", LB_CLIENT_VIP=VIP)

# Mirrors the next hops of BIRD's route (main table) into the resilient group: node I is
# 10.3I.0.2 via rnI. Runs in the router namespace until killed.
SYNC = r"""
last=
while sleep 0.1; do
  ids=$(ip route show VIP | grep -o 'via 10\.3[0-9]\.0\.2' | cut -c9 | sort | paste -sd/)
  [ -n "$ids" ] && [ "$ids" != "$last" ] || continue
  ip nexthop replace id GROUP group "$ids" type resilient buckets 64 idle_timer 5 \
    unbalanced_timer 0 && last=$ids
done
""".replace("VIP", VIP).replace("GROUP", str(GROUP))


def sh(*args, check=True, timeout=120, stdin=None):
    r = subprocess.run(list(args), env=ENV, capture_output=True, text=True, timeout=timeout,
                       input=stdin)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def fleet(*args, **kw):
    return sh("bash", FLEET, *args, **kw)


def router(*args, **kw):
    return sh("ip", "netns", "exec", f"{P}-router", *args, **kw)


def bird_hops():
    return len(re.findall(r"via 10\.3\d\.0\.2", router("ip", "route", "show", VIP).stdout))


def wait_hops(n, seconds):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if bird_hops() == n:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"the router has not {n} next hops after {seconds} s")


def where(ports):
    """The node the router forwards each client connection to now (1, 2, or None)."""
    cmds = "".join(f"route get {VIP} from 10.40.0.50 iif rc ipproto tcp sport {p} dport 80\n"
                   for p in ports)
    out = router("ip", "-batch", "-", stdin=cmds).stdout
    nodes = [int(m.group(1)) if m else None
             for m in (re.search(r"dev rn(\d)", line) for line in out.splitlines() if VIP in line)]
    assert len(nodes) == len(ports), out[-500:]
    return nodes


def rehashed_one(i):
    r = fleet("lbctl", str(i), "--json", "status", check=False)
    if r.returncode != 0:
        return 0
    return sum(int((b.get("lbd") or {}).get("flows_rehashed", 0) or 0)
               for s in json.loads(r.stdout)["services"] for b in s["backends"])


def rehashed():
    return [rehashed_one(i) for i in range(1, NODES + 1)]


def buckets():
    """Buckets per next hop of the resilient group."""
    out = router("ip", "nexthop", "bucket", "show", "id", str(GROUP), check=False).stdout
    got = {}
    for m in re.finditer(r"nhid (\d+)", out):
        got[int(m.group(1))] = got.get(int(m.group(1)), 0) + 1
    return got


def resilient_on():
    for i in range(1, NODES + 1):
        router("ip", "nexthop", "replace", "id", str(i), "via", f"10.3{i}.0.2", "dev", f"rn{i}")
    router("ip", "nexthop", "replace", "id", str(GROUP), "group",
           "/".join(str(i) for i in range(1, NODES + 1)), "type", "resilient",
           "buckets", "64", "idle_timer", "5", "unbalanced_timer", "0")
    router("ip", "route", "replace", VIP, "nhid", str(GROUP), "table", str(TABLE))
    router("ip", "rule", "add", "to", VIP, "lookup", str(TABLE), "pref", "100")
    return subprocess.Popen(["ip", "netns", "exec", f"{P}-router", "bash", "-c", SYNC],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def phase(name, mode, conns, event, settle_hops):
    """Opens conns keep-alive connections, runs event() once they are established, and counts
    the connections the router moved and how many of those completed."""
    proc = subprocess.Popen(["ip", "netns", "exec", f"{P}-client", "python3", CLIENT,
                             "keepalive_for", str(conns), "14", "0.2"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    assert first.get("open") == conns, first
    ports = first["ports"]
    time.sleep(1.5)
    before = where(ports)
    rh0 = rehashed()
    event()
    took = wait_hops(settle_hops, 15)
    time.sleep(1.0)  # the resilient group follows BIRD's route within 0.1 s
    after = where(ports)
    bk = buckets() if mode == "resilient" else None
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"client exit {proc.returncode}: {err[-2000:]}")
    res = [json.loads(l) for l in out.splitlines() if l.strip()]
    done = [not r["errors"] and r["ports"] == 1 for r in res]
    moved = [i for i in range(conns) if before[i] != after[i]]
    stayed_survivor = [i for i in range(conns) if before[i] == after[i]]
    rh = [a - b for a, b in zip(rehashed(), rh0)]
    row = {
        "mode": mode, "phase": name, "connections": conns,
        "nodes": NODES,
        "before": {n: before.count(n) for n in range(1, NODES + 1)},
        "after": {n: after.count(n) for n in range(1, NODES + 1)},
        # lbd's count: flows that arrived mid-connection at a node without their state
        "moved": sum(rh),
        "completed": f"{sum(done)}/{conns}",
        # ip route get's view (an estimate, see above)
        "est_moved": len(moved),
        "est_moved_between_survivors": sum(1 for i in moved if before[i] != 1 and after[i] != 1),
        "est_moved_completed": sum(done[i] for i in moved),
        "stayed_completed": f"{sum(done[i] for i in stayed_survivor)}/{len(stayed_survivor)}",
        "rehashed_per_node": rh,
        "route_change_s": round(took, 2),
    }
    if bk is not None:
        row["buckets"] = bk
    print(json.dumps(row), flush=True)
    return row


def run_mode(mode, conns):
    fleet("down", check=False)
    sync = None
    try:
        fleet("up", timeout=180)
        if mode == "resilient":
            sync = resilient_on()
        wait_hops(NODES, 15)
        time.sleep(1)
        # lost: node 1's lbd killed -9; its lb-healthd withdraws it within bgp.lbd_timeout_ms.
        phase("lost", mode, conns, lambda: fleet("kill-lbd", "1"), NODES - 1)
        # back: connections opened while node 1 is away, then node 1 announced again.
        phase("back", mode, conns, lambda: fleet("start-lbd", "1"), NODES)
    finally:
        if sync is not None:
            sync.kill()
            sync.wait()
        fleet("down", check=False)


def main(argv):
    global NODES
    if os.geteuid() != 0:
        print("needs root (network namespaces, DPDK)", file=sys.stderr)
        return 2
    args = argv[1:]
    conns, modes, build = 200, ["plain", "resilient"], os.path.join(ROOT, "build")
    while args:
        a = args.pop(0)
        if a == "--nodes":
            NODES = int(args.pop(0))
            ENV["LB_FLEET_NODES"] = str(NODES)
        elif a == "--conns":
            conns = int(args.pop(0))
        elif a == "--modes":
            modes = args.pop(0).split(",")
        else:
            build = a
    ENV["LB_BUILD"] = os.path.abspath(build)
    for mode in modes:
        if mode not in ("plain", "resilient"):
            print(f"unknown mode {mode}: plain or resilient", file=sys.stderr)
            return 2
        run_mode(mode, conns)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
