#!/usr/bin/env python3
"""lb-healthd's /metrics on the whole system (system_test.py's topology: lbd, lb-healthd, three
lb-backend servers, real curl in the client namespace):

  - 1,000 curl requests through the VIP, each on a new connection: lbd_backend_connections_total
    moved by exactly 1,000 summed over the backends (333/333/334 round robin) and so did
    lbd_flows_created_total; each backend's packets and bytes moved consistently with its
    connections (and with the client port's counters); lbd_packets_dropped_total has every
    reason;
  - health checks are counted with their durations; a backend that stops answering shows
    lbd_backend_up 0, failures with reason "refused" and a transition; the pool update it
    caused is in lbd_pool_apply_duration_seconds;
  - with lbd stopped, a scrape still answers: lb-healthd's metrics and lbd_up 0;
  - every scrape passes `promtool check metrics` (Debian's prometheus package).

usage: metrics_test.py BUILD_DIR       Exit 0 pass, 1 fail, 77 skipped (no root / namespaces /
promtool, with the reason; the checks that could run have passed).
"""
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbenv import Failure, wait_for  # noqa: E402
from system_test import BACKENDS, PREFIX, System, cannot_run, check  # noqa: E402

METRICS = "127.0.0.1:19813"
REQUESTS = 1000
NAMES = [f"{BACKENDS[i]}:8080" for i in (1, 2, 3)]


class MetricsSystem(System):
    def write_config(self):
        super().write_config()
        with open(self.cfg, "a") as f:
            f.write(f'healthd = {{ metrics_listen = "{METRICS}"; }};\n')


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape():
    with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5) as r:
        check(r.status == 200, f"/metrics: HTTP {r.status}")
        return r.read().decode()


def parse(text):
    """{(name, frozenset of (label, value)): float}"""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        check(m, f"not a sample line: {line!r}")
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def get(m, name, **labels):
    key = (name, frozenset(labels.items()))
    check(key in m, f"no sample {name}{labels}")
    return m[key]


def promtool(text, what, skipped):
    if not shutil.which("promtool"):
        skipped.append("promtool not installed (tools/install-deps.sh installs it)")
        return
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    check(r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
          f"promtool check metrics ({what}): exit {r.returncode}: {r.stdout}{r.stderr}")
    print(f"promtool check metrics ({what}): ok, {len(text.splitlines())} lines")


def settled():
    """A scrape once lbd's counters stopped moving (the last ACKs and FINs have passed)."""
    last = None
    for _ in range(50):
        text = scrape()
        m = parse(text)
        now = {k: v for k, v in m.items() if k[0].startswith(("lbd_backend_", "lbd_port_"))}
        if now == last:
            return text, m
        last = now
        time.sleep(0.3)
    raise Failure("lbd's counters did not settle within 15 s")


def run(s, skipped):
    wait_for("lb-healthd's /metrics", scrape, 10)
    before_text, before = settled()
    promtool(before_text, "before the traffic", skipped)
    check(get(before, "lbd_up") == 1, "lbd_up is not 1")

    # 1,000 requests, each on a new connection (Connection: close), from one curl process.
    out = subprocess.run(
        ["ip", "netns", "exec", f"{PREFIX}-client", "curl", "-s", "-o", "/dev/null",
         "--max-time", "5", "-H", "Connection: close", "-w", "%{http_code} %{num_connects}\\n",
         f"http://10.10.0.100/[1-{REQUESTS}]"],
        capture_output=True, text=True, timeout=300)
    codes = out.stdout.split("\n")[:-1]
    ok = sum(1 for c in codes if c == "200 1")
    print(f"curl: {len(codes)} requests, {ok} answered 200 on a new connection")
    check(ok == REQUESTS, f"only {ok} of {REQUESTS} requests got 200 on a new connection: "
                          f"{sorted(set(codes))}")

    # Closed flows stay for tcp_closed_timeout (5 s, like TIME_WAIT) and then expire, unless a
    # new connection reuses the tuple first: all 1,000 leave lbd's table.
    def drained():
        m = parse(scrape())
        return all(get(m, "lbd_backend_connections_active", service="web", backend=b) == 0
                   for b in NAMES) and m

    _, took = wait_for("the 1,000 flows to expire", drained, 30, every=0.5)
    print(f"every flow expired {took:.1f}s after the traffic")
    after_text, after = settled()
    promtool(after_text, "after the traffic", skipped)

    def delta(name, **labels):
        return get(after, name, **labels) - get(before, name, **labels)

    conns = {b: delta("lbd_backend_connections_total", service="web", backend=b) for b in NAMES}
    print(f"lbd_backend_connections_total moved by {conns} (sum {sum(conns.values()):.0f})")
    check(sum(conns.values()) == REQUESTS,
          f"connections summed over backends moved by {sum(conns.values())}, not {REQUESTS}")
    check(sorted(conns.values()) == [333, 333, 334], f"round robin: 333/333/334 expected")
    check(delta("lbd_flows_created_total") == REQUESTS, "lbd_flows_created_total")
    # A flow leaves by its timeout, or earlier when the client reuses its port for a new
    # connection while the old flow is closing (the backend closed first, so the client holds
    # no TIME_WAIT; Linux may pick the same port again): lbd_flows_reused_total counts those.
    expired = delta("lbd_flows_expired_total")
    reused = delta("lbd_flows_reused_total")
    print(f"lbd_flows_expired_total moved by {expired:.0f}, lbd_flows_reused_total by {reused:.0f}")
    check(expired + reused == REQUESTS,
          f"expired {expired} + reused {reused} flows, not the {REQUESTS} created")
    check(reused <= REQUESTS // 10, f"{reused} of {REQUESTS} connections reused a closing tuple")
    pin = pout = bin_ = bout = 0
    for b in NAMES:
        n = conns[b]
        p_in = delta("lbd_backend_packets_total", service="web", backend=b, direction="in")
        p_out = delta("lbd_backend_packets_total", service="web", backend=b, direction="out")
        b_in = delta("lbd_backend_bytes_total", service="web", backend=b, direction="in")
        b_out = delta("lbd_backend_bytes_total", service="web", backend=b, direction="out")
        print(f"  {b}: {n:.0f} connections, packets in/out {p_in:.0f}/{p_out:.0f}, "
              f"bytes in/out {b_in:.0f}/{b_out:.0f}")
        # A connection is at least SYN, ACK + request, FIN, ACK in and SYN-ACK, response, FIN
        # out; a few more with delayed ACKs; never a dozen.
        check(4 * n <= p_in <= 12 * n, f"{b}: {p_in} packets in for {n} connections")
        check(3 * n <= p_out <= 12 * n, f"{b}: {p_out} packets out for {n} connections")
        # Every packet is an IP header and a TCP header at least; the request and the response
        # carry their HTTP text.
        check(b_in >= 40 * p_in + 50 * n, f"{b}: {b_in} bytes in for {p_in} packets")
        check(b_out >= 40 * p_out + 100 * n, f"{b}: {b_out} bytes out for {p_out} packets")
        check(b_in <= 1514 * p_in and b_out <= 1514 * p_out, f"{b}: more bytes than packets hold")
        pin, pout, bin_, bout = pin + p_in, pout + p_out, bin_ + b_in, bout + b_out
    # What the client port received is what went to the backends (plus ARP and ping).
    rx = delta("lbd_port_packets_total", port="client", direction="rx")
    tx = delta("lbd_port_packets_total", port="client", direction="tx")
    print(f"client port: {rx:.0f} packets in, {tx:.0f} out; backends: {pin:.0f} in, {pout:.0f} out")
    check(pin <= rx <= pin + 20, f"client port rx {rx} vs backends' packets in {pin}")
    check(pout <= tx <= pout + 20, f"client port tx {tx} vs backends' packets out {pout}")
    drops = [k for k in after if k[0] == "lbd_packets_dropped_total"]
    check(len(drops) >= 30, f"only {len(drops)} drop reasons")
    check(delta("lbd_packets_dropped_total", reason="no_backend") == 0, "no_backend drops")
    # A service's rehashed misses (maglev services only: web is rr, so none).
    check(get(after, "lbd_service_flows_rehashed_total", service="web") == 0,
          "lbd_service_flows_rehashed_total of an rr service")

    # Health checks ran and were timed.
    for b in NAMES:
        check(get(after, "lbd_backend_up", service="web", backend=b) == 1, f"{b} not up")
        n = get(after, "lbd_health_checks_total", service="web", backend=b)
        c = get(after, "lbd_health_check_duration_seconds_count", service="web", backend=b)
        check(n > 0 and c == n, f"{b}: {n} checks, {c} timed")

    # backend-3 stops: DOWN, refused checks, a transition, an update lbd applied.
    s.procs.stop("backend-3")
    b3 = NAMES[2]

    def down():
        m = parse(scrape())
        return get(m, "lbd_backend_up", service="web", backend=b3) == 0 and m

    m, took = wait_for("backend-3 DOWN in /metrics", down, 10, every=0.1)
    refused = get(m, "lbd_health_check_failures_total", service="web", backend=b3,
                  reason="refused")
    # The check in flight when the server stopped may fail for another reason (its keep-alive
    # connection closed, a reset): the fall threshold (2) counts failures of every reason.
    failed = sum(v for (name, labels), v in m.items()
                 if name == "lbd_health_check_failures_total"
                 and ("backend", b3) in labels and ("service", "web") in labels)
    flips = get(m, "lbd_health_transitions_total", service="web", backend=b3)
    applied = get(m, "lbd_pool_apply_duration_seconds_count")
    print(f"backend-3 stopped: lbd_backend_up 0 after {took:.2f}s, {failed:.0f} failed checks "
          f"({refused:.0f} refused), {flips:.0f} transition(s), {applied:.0f} pool update(s) "
          f"timed to lbd")
    check(failed >= 2 and refused >= 1 and flips >= 1,
          "failed/refused checks or transitions not counted")
    check(applied >= 1, "no pool update timed")
    m = wait_for("lbd's state for backend-3", lambda: (
        (x := parse(scrape())) and
        get(x, "lbd_backend_state", service="web", backend=b3, state="draining") == 1 and x),
        5, every=0.1)[0]
    check(get(m, "lbd_pool_generation_applied") == get(m, "lbd_pool_generation_sent"),
          "lbd has not applied the newest generation")

    # lbd stops: lb-healthd still answers, with lbd_up 0.
    s.procs.stop("lbd")
    text = scrape()
    m = parse(text)
    check(get(m, "lbd_up") == 0, "lbd_up is not 0 with lbd stopped")
    check(get(m, "lbd_backend_up", service="web", backend=NAMES[0]) == 1,
          "lb-healthd's own metrics missing with lbd stopped")
    check(not any(k[0] == "lbd_backend_connections_total" for k in m), "lbd's counters shown")
    promtool(text, "lbd stopped", skipped)
    print("lbd stopped: /metrics answers with lbd_up 0 and lb-healthd's metrics")


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    why = cannot_run()
    if why:
        print(f"SKIP: {why}")
        return 77
    s = MetricsSystem(argv[1])
    skipped = []
    try:
        s.up()
        run(s, skipped)
    except (Failure, subprocess.SubprocessError, OSError, ValueError) as e:
        print(f"FAIL metrics: {e}")
        s.procs.dump_logs()
        return 1
    finally:
        s.down()
    if skipped:
        print(f"SKIP: {skipped[0]}; every other check passed")
        return 77
    print("PASS metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
