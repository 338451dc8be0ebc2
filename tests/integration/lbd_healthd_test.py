#!/usr/bin/env python3
"""lbd + lb-healthd + real HTTP backends, checked through lbd's own telemetry.

lbd runs on a virtual device (net_null: no traffic is needed to see which pool it applies);
three lb-backend servers listen on 127.0.0.11-13; lb-healthd checks them over loopback and
pushes the live pool to lbd through shared memory. The test fails a backend's health and
watches lbd take it out of the pool and back, kills lb-healthd with SIGKILL and restarts it,
restarts lb-healthd while a backend is DOWN (lbd must never get it back as active), adds and
removes 200 services with lbctl (a later health change must still reach lbd), and restarts
lbd; each time the pool lbd applies must follow the backends' real health.

usage: lbd_healthd_test.py LBD LB_HEALTHD LB_BACKEND LBCTL
Exit 0 on success, 1 on failure, 77 when it cannot run here (with the reason).
"""
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

INTERVAL_MS, TIMEOUT_MS, RISE, FALL = 100, 80, 2, 2
# Scheduling slack on a loaded two-core machine (lbd polls one core): generous, but far below
# what a broken implementation would take (never).
SLACK_S = 1.5


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from lbenv import Failure, Procs, Telemetry, remove_instance_files, wait_for  # noqa: E402


def free_port(addrs):
    for _ in range(50):
        port = random.randint(20000, 60000)
        ok = True
        for a in addrs:
            s = socket.socket()
            try:
                s.bind((a, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise Failure("no free port")


STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z lbd\[\d+\] "
APPLIED = re.compile(STAMP + r"INFO lb\.pool: pool generation [1-9]\d* applied(?: \(\d+ updates\))?: .+")
SUMMARY = re.compile(STAMP + r"INFO lb: summary: \d+ packets in, \d+ out; flows: \d+ created, .*"
                     r"pool updates: [1-9]\d* applied, \d+ refused$")


def lbd_log_line(logdir, pattern):
    """The last line of lbd's log matching `pattern`, or None."""
    with open(os.path.join(logdir, "lbd.log")) as f:
        found = [line.rstrip("\n") for line in f if pattern.match(line)]
    return found[-1] if found else None


def post(addr, port, path):
    req = urllib.request.Request(f"http://{addr}:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=2) as r:
        r.read()


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    lbd, healthd, backend, lbctl = sys.argv[1:]
    if os.geteuid() != 0:
        print("SKIP: lbd needs root for /var/run/dpdk and its shared memory")
        return 77
    tag = f"lbit{os.getpid()}"
    addrs = [f"127.0.0.1{i}" for i in (1, 2, 3)]
    port = free_port(addrs)
    tmp = tempfile.TemporaryDirectory()
    procs = Procs(tmp.name)
    cfg = os.path.join(tmp.name, "lbd.cfg")
    sock = os.path.join(tmp.name, "ctl.sock")
    # lb-healthd's instance lock and health file: the test's own directory.
    healthd_argv = [healthd, "--config", cfg, "--runtime-dir", os.path.join(tmp.name, "run")]
    with open(cfg, "w") as f:
        f.write(f"""
instance = "{tag}";
dataplane: {{ workers = 1; flows = {{ capacity = 4096; }};
  ports = ( {{ name = "p"; device = "net_null_{tag}"; ip = "127.0.0.1/8"; }} ); }};
services = ( {{ name = "web"; vip = "127.0.0.100"; port = 80;
  health = {{ interval_ms = {INTERVAL_MS}; timeout_ms = {TIMEOUT_MS}; rise = {RISE};
             fall = {FALL}; jitter_pct = 0; }};
  backends = ( {", ".join(f'{{ address = "{a}"; port = {port}; }}' for a in addrs)} ); }} );
healthd = {{ control_socket = "{sock}"; socket_mode = "0600"; }};
""")

    start, stop = procs.start, procs.stop

    lbd_argv = [lbd, "--lcores", "0@0,1@1", "--no-pci", "--no-huge", "-m", "256",
                "--", "--config", cfg]
    tel = Telemetry(tag)
    all_active = {f"{a}:{port}": "active" for a in addrs}
    b2 = f"{addrs[1]}:{port}"
    b3 = f"{addrs[2]}:{port}"
    try:
        for i, a in enumerate(addrs, 1):
            start(f"backend{i}", [backend, "--name", f"b{i}", "--listen", a, "--port", str(port)])
        start("lbd", lbd_argv)
        wait_for("lbd's telemetry", lambda: tel.query("/lb/pool") is not None, 30)
        start("healthd", healthd_argv)
        pool, t = wait_for("lb-healthd's first push applied",
                           lambda: (p := tel.query("/lb/pool"))["applied_generation"] > 0 and p, 10)
        print(f"first push applied after {t:.2f}s (generation {pool['applied_generation']})")
        # lbd says so in its log, with a timestamp (and what changed).
        line, _ = wait_for("lbd's log line for the generation applied",
                           lambda: lbd_log_line(tmp.name, APPLIED), 5)
        print(f"lbd logged: {line}")
        wait_for("all three active", lambda: tel.states() == all_active, 5)

        # A backend fails its health check: lbd stops sending it new flows.
        post(addrs[1], port, "/control/health/fail")
        bound = (FALL * INTERVAL_MS + TIMEOUT_MS) / 1000
        _, t = wait_for("b2 out of the pool", lambda: tel.states().get(b2) == "draining",
                        bound + SLACK_S)
        print(f"b2 failing: out of lbd's pool after {t:.3f}s "
              f"(fall x interval + timeout = {bound:.3f}s)")
        if tel.states() != {**all_active, b2: "draining"}:
            raise Failure(f"only b2 should have left: {tel.states()}")

        # It recovers.
        post(addrs[1], port, "/control/health/ok")
        bound = (RISE * INTERVAL_MS + TIMEOUT_MS) / 1000
        _, t = wait_for("b2 back", lambda: tel.states() == all_active, bound + SLACK_S)
        print(f"b2 healthy: back in lbd's pool after {t:.3f}s "
              f"(rise x interval + timeout = {bound:.3f}s)")

        # kill -9 lb-healthd: lbd keeps forwarding with the last pool it applied.
        before = tel.query("/lb/pool")["applied_generation"]
        stop("healthd", signal.SIGKILL)
        post(addrs[2], port, "/control/health/fail")  # nobody is checking now
        time.sleep(4 * INTERVAL_MS / 1000)
        if tel.states() != all_active:
            raise Failure(f"lbd's pool changed with no lb-healthd: {tel.states()}")
        start("healthd", healthd_argv)
        _, t = wait_for("restarted lb-healthd takes b3 out",
                        lambda: tel.states() == {**all_active, b3: "draining"}, 5)
        after = tel.query("/lb/pool")["applied_generation"]
        print(f"lb-healthd restarted: full state re-pushed (generation {before} -> {after}), "
              f"b3 out after {t:.3f}s")
        if after <= before:
            raise Failure("the restarted lb-healthd's generations must be newer")

        # b3 is DOWN. lb-healthd restarts (cleanly, then killed): the new one starts from the
        # health the last one decided, so lbd never gets b3 back as active (with initial_state
        # = up it was active again for a fall period).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            before = tel.query("/lb/pool")["applied_generation"]
            stop("healthd", sig)
            start("healthd", healthd_argv)
            samples = 0
            end = time.monotonic() + 3 * FALL * INTERVAL_MS / 1000 + 1.0
            while time.monotonic() < end:
                states = tel.states()
                if states.get(b3) == "active":
                    raise Failure(f"after lb-healthd's restart ({sig.name}) lbd put the DOWN "
                                  f"backend b3 back in service: {states}")
                samples += 1
                time.sleep(0.01)
            after = tel.query("/lb/pool")["applied_generation"]
            if after <= before:
                raise Failure("the restarted lb-healthd pushed nothing")
            print(f"lb-healthd restarted ({sig.name}) with b3 DOWN: b3 never active in lbd "
                  f"({samples} samples over the fall period, generation {before} -> {after})")

        # 200 services added and removed at run time, then b1 fails: it still leaves lbd's pool
        # within the usual bound (each removal used to be resent on every push until nothing
        # else reached lbd).
        def ctl(*args):
            r = subprocess.run([lbctl, "-c", cfg, *args], capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0:
                raise Failure(f"lbctl {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
            return r.stdout
        t0 = time.monotonic()
        for i in range(200):
            ctl("service", "add", f"t{i}", f"127.0.0.200:{2000 + i}")
            ctl("service", "remove", f"t{i}")
        churn = time.monotonic() - t0
        t0 = time.monotonic()
        ctl("--wait", "--timeout", "3", "backend", "set", "web", f"{addrs[0]}:{port}",
            "--weight", "2")
        print(f"200 service add/remove cycles in {churn:.1f}s; then a weight change applied by "
              f"lbd in {time.monotonic() - t0:.3f}s (lbctl --wait)")
        b1 = f"{addrs[0]}:{port}"
        post(addrs[0], port, "/control/health/fail")
        bound = (FALL * INTERVAL_MS + TIMEOUT_MS) / 1000
        _, t = wait_for("b1 out of the pool after the churn",
                        lambda: tel.states().get(b1) == "draining", bound + SLACK_S)
        print(f"b1 failing after the churn: out of lbd's pool after {t:.3f}s")
        post(addrs[0], port, "/control/health/ok")
        wait_for("b1 back", lambda: tel.states().get(b1) == "active", 5)

        # Restart lbd: it starts from the config's pool (all active); lb-healthd notices the new
        # segment and pushes its state again without help.
        rc = stop("lbd")
        if rc != 0:
            raise Failure(f"lbd exited {rc} on SIGTERM")
        start("lbd", lbd_argv)
        wait_for("the new lbd's telemetry", lambda: tel.query("/lb/pool") is not None, 30)
        _, t = wait_for("lb-healthd resyncs the new lbd",
                        lambda: tel.states() == {**all_active, b3: "draining"}, 5)
        print(f"lbd restarted: lb-healthd resynced it after {t:.3f}s")

        for name in ("healthd", "lbd"):
            rc = stop(name)
            if rc != 0:
                raise Failure(f"{name} exited {rc} on SIGTERM")
        summary = lbd_log_line(tmp.name, SUMMARY)
        if not summary:
            raise Failure("lbd logged no shutdown summary")
        print(f"lbd's shutdown summary: {summary}")
        print("PASS")
        return 0
    except Failure as e:
        print(f"FAIL: {e}")
        procs.dump_logs()
        return 1
    finally:
        procs.stop_all()
        remove_instance_files(tag)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
