#!/usr/bin/env python3
"""Faults under load: the system of system_test.py (lbd, lb-healthd, three lb-backend
servers, clients in the client namespace) while keep-alive connections are used continuously and
new connections are opened back to back, one fault after another:

  healthd_kill    kill -9 lb-healthd, start it again: lbd forwards on, the new one re-attaches
  backend_kill    kill -9 backend-3's lb-backend, start it again: DOWN, then UP
  flap            backend-2's /healthcheck fails and recovers at the fall/rise edge
  reload_flap     lbctl config reload and SIGHUP while backend-1's check flaps
  control_garbage lb-healthd's control socket: non-JSON lines, a 10 MB line, a line that never
                  ends, 500 idle connections; meanwhile `lbctl status` answers within 1 s and
                  lb-healthd's RSS stays within 16 MiB of where it was
  pool_inject     malformed pool updates on lbd's ring (lb-pool-inject): refused and counted
                  (channel_faults, updates_rejected), the pool unchanged

Every step prints its figures and asserts that no keep-alive connection to a backend the step
does not fault saw an error, a reset or a reconnection, and that every new connection was served
(backend_kill: those the killed backend refused are counted and may fail).

usage: fault_test.py BUILD_DIR [--short | --minutes N [--samples CSV]]
  --short      each step once (the test suite's run, < 3 min)
  --minutes N  the soak: the steps over and over for N minutes (tools/soak.sh); lbd's and
               lb-healthd's RSS, flows and counters sampled every 10 s into CSV (default
               fault-soak.csv), summarised at the end: RSS growth beyond the bound fails
Exit 0 pass, 1 fail, 77 skipped (no root / no namespaces).
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbenv import Failure, wait_for  # noqa: E402
from system_test import (FALL, INTERVAL_MS, PREFIX, RISE, System, addr, cannot_run,  # noqa: E402
                         check, lines)

KA_CONNS = 20         # keep-alive connections, one request each every KA_PAUSE
KA_PAUSE = 0.05
STATUS_BOUND_MS = 1000  # `lbctl status` while lb-healthd is up
RSS_BOUND_KIB = 16 * 1024  # lb-healthd: 64 clients x 128 KiB buffered, plus the allocator's slack
SOCKET = f"/run/lbd/{PREFIX}.sock"  # lb-healthd's control socket (the config names none)
ALL = {addr(i): "active" for i in (1, 2, 3)}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_delay_ms(pid):
    """(CPU ms, ms spent runnable but waiting for a CPU) of pid's threads so far
    (/proc/PID/task/*/schedstat: ns on the CPU, ns waiting on a run queue, timeslices)."""
    cpu = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            on, queued = f.read().split()[:2]
        cpu += int(on)
        wait += int(queued)
    return cpu / 1e6, wait / 1e6


def lbctl_status_detail(s):
    """One `lbctl status`: (milliseconds, exit status, where the time went). The milliseconds
    run from lbctl's start (its fork) to its exit: what a user who runs it sees. Before that,
    this script's own thread may be slow to start it (it shares the interpreter's lock with the
    load threads, on a busy machine): that is `started_ms` in the dict, not counted. The dict also has what the kernel's scheduler statistics say:
    lbctl's CPU time and its time waiting for a CPU (read from the exited, not yet reaped
    process), and lb-healthd's CPU time and time waiting for a CPU meanwhile."""
    where = {}
    boot0 = time.clock_gettime(time.CLOCK_BOOTTIME)
    try:
        hd = s.procs.pid("healthd")
        hd0 = run_delay_ms(hd)
    except (KeyError, OSError):
        hd = hd0 = None
    t = time.monotonic()
    p = subprocess.Popen([os.path.join(s.build, "tools", "lbctl"), "--config", s.cfg, "status"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc = -1
    while time.monotonic() - t < 10:
        # WNOWAIT: the process stays a zombie, so its /proc/PID/schedstat can still be read.
        if os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            ms = (time.monotonic() - t) * 1e3
            try:
                where["lbctl_cpu_ms"], where["lbctl_wait_ms"] = run_delay_ms(p.pid)
                with open(f"/proc/{p.pid}/stat") as f:  # field 22: start, ticks since boot
                    start = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
                # The start time has a tick's granularity (10 ms): never more than the whole.
                where["started_ms"] = min(ms, max(0.0, (start - boot0) * 1e3))
                ms -= where["started_ms"]
            except (OSError, ValueError, IndexError):
                pass
            rc = p.wait()
            break
        time.sleep(0.002)
    else:
        ms = (time.monotonic() - t) * 1e3
        p.kill()
        p.wait()
    if hd is not None:
        try:
            hd1 = run_delay_ms(hd)
            where["healthd_cpu_ms"] = hd1[0] - hd0[0]
            where["healthd_wait_ms"] = hd1[1] - hd0[1]
        except OSError:
            pass
    return ms, rc, where


def lbctl_status(s):
    """(milliseconds, exit status) of one `lbctl status`."""
    ms, rc, _ = lbctl_status_detail(s)
    return ms, rc


def where_str(where):
    if not where:
        return "no breakdown"
    parts = []
    if "started_ms" in where:
        parts.append(f"this script took {where['started_ms']:.0f} ms more to start it")
    if "lbctl_wait_ms" in where:
        parts.append(f"lbctl ran {where['lbctl_cpu_ms']:.0f} ms and waited "
                     f"{where['lbctl_wait_ms']:.0f} ms for a CPU")
    if "healthd_wait_ms" in where:
        parts.append(f"lb-healthd ran {where['healthd_cpu_ms']:.0f} ms and waited "
                     f"{where['healthd_wait_ms']:.0f} ms for a CPU meanwhile")
    return ", ".join(parts)


class Watch(threading.Thread):
    """During a step: `lbctl status` every 0.25 s (latency, failures) and lb-healthd's RSS.
    Paused while a step stops lb-healthd on purpose."""

    def __init__(self, s):
        super().__init__(daemon=True)
        self.s = s
        self.stop_ = threading.Event()
        self.paused = threading.Event()
        self.ms, self.failed, self.rss = [], 0, []
        self.slowest = (0, {})  # the slowest call: (ms, where its time went)

    def run(self):
        while not self.stop_.wait(0.25):
            if self.paused.is_set():
                continue
            ms, rc, where = lbctl_status_detail(self.s)
            if self.paused.is_set():  # lb-healthd was stopped meanwhile: not its latency
                continue
            self.ms.append(ms)
            if ms > self.slowest[0]:
                self.slowest = (ms, where)
            self.failed += rc != 0
            try:
                self.rss.append(rss_kib(self.s.procs.pid("healthd")))
            except (KeyError, OSError):
                pass

    def finish(self):
        self.stop_.set()
        self.join(15)


def healthd_rss(s):
    return rss_kib(s.procs.pid("healthd"))


# -- the steps: each returns (figures to print, backends whose connections may fail) ----------
def healthd_kill(s, watch):
    pid = s.procs.pid("healthd")
    watch.paused.set()
    t0 = time.monotonic()
    s.procs.stop("healthd", signal.SIGKILL)
    time.sleep(1.0)
    s.start_healthd()
    _, took = wait_for("the new lb-healthd attached", lambda: s.tel.query("/lb/pool")[
        "healthd_pid"] == s.procs.pid("healthd"), 10)
    watch.paused.clear()
    check(s.tel.states() == ALL, f"the pool changed: {s.tel.states()}")
    return (f"lb-healthd {pid} killed, down {time.monotonic() - t0 - took:.2f}s, the new one "
            f"attached {took:.2f}s after its start; pool unchanged"), set()


def backend_kill(s, watch):
    t0 = time.monotonic()
    s.procs.stop("backend-3", signal.SIGKILL)
    down = s.wait_states({**ALL, addr(3): "draining"}, 5)
    s.start_backend(3)
    t1 = time.monotonic()
    up = s.wait_states(ALL, 5)
    time.sleep(0.5)  # a while with the backend back under load
    return (f"backend-3 killed: DOWN in lbd after {down:.2f}s (bound fall x interval + timeout "
            f"= {(FALL * INTERVAL_MS + 100) / 1000:.2f}s), restarted {t1 - t0:.2f}s after the "
            f"kill, UP after {up:.2f}s"), {"backend-3"}


class StateLog(threading.Thread):
    """Every change of one backend's state in lbd's pool (telemetry polled every 20 ms)."""

    def __init__(self, s, i):
        super().__init__(daemon=True)
        self.s, self.key, self.stop_, self.changes = s, addr(i), threading.Event(), []

    def run(self):
        last = None
        while not self.stop_.wait(0.02):
            try:
                now = self.s.tel.states().get(self.key)
            except (OSError, ValueError, KeyError):
                continue
            if now != last and last is not None:
                self.changes.append(now)
            last = now

    def finish(self):
        self.stop_.set()
        self.join(5)


def flap_edge(s, i, cycles):
    """backend-i's check fails just long enough to go DOWN (fall checks) and passes just long
    enough to come UP (rise checks), `cycles` times: 2 x cycles transitions at most."""
    fail_s = (FALL * INTERVAL_MS + INTERVAL_MS / 2) / 1000
    ok_s = (RISE * INTERVAL_MS + INTERVAL_MS / 2) / 1000
    for _ in range(cycles):
        s.ctl(i, "/control/health/fail")
        time.sleep(fail_s)
        s.ctl(i, "/control/health/ok")
        time.sleep(ok_s)


def flap(s, watch, cycles=6):
    log = StateLog(s, 2)
    log.start()
    flap_edge(s, 2, cycles)
    s.wait_states(ALL, 5)
    time.sleep(0.3)
    log.finish()
    downs = log.changes.count("draining")
    ups = log.changes.count("active")
    check(downs >= 1 and ups == downs, f"transitions not as flapped: {log.changes}")
    return (f"backend-2 flapped {cycles} times at the edge (fail {FALL}+1/2 intervals, ok "
            f"{RISE}+1/2): lbd saw {downs} DOWN and {ups} UP"), set()


def reload_flap(s, watch, cycles=6):
    log = StateLog(s, 1)
    log.start()
    flapper = threading.Thread(target=flap_edge, args=(s, 1, cycles), daemon=True)
    flapper.start()
    original = open(s.cfg).read()
    changed = original.replace(f'{{ address = "10.20.0.13"; port = 8080; }}',
                               f'{{ address = "10.20.0.13"; port = 8080; weight = 2; }}')
    check(changed != original, "the config's backend-3 line not found")
    reloads = 0
    while flapper.is_alive():
        for text in (changed, original):
            with open(s.cfg + ".tmp", "w") as f:
                f.write(text)
            os.replace(s.cfg + ".tmp", s.cfg)
            s.lbctl("config", "reload")
            reloads += 1
            time.sleep(0.3)
        os.kill(s.procs.pid("healthd"), signal.SIGHUP)
        reloads += 1
        time.sleep(0.3)
    flapper.join()
    s.wait_states(ALL, 5)
    time.sleep(0.3)
    log.finish()
    check(s.procs.procs["healthd"][0].poll() is None, "lb-healthd exited")
    downs = log.changes.count("draining")
    check(log.changes.count("active") == downs, f"transitions: {log.changes}")
    return (f"{reloads} reloads (lbctl config reload, SIGHUP) while backend-1 flapped {cycles} "
            f"times: lbd saw {downs} DOWN and as many UP; every reload answered"), set()


def control_connect(timeout=5):
    """A connection to lb-healthd's control socket. A unix socket's connect() fails with EAGAIN
    while the listen backlog is full: tried again until `timeout`."""
    end = time.monotonic() + timeout
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(timeout)
        try:
            c.connect(SOCKET)
            return c
        except BlockingIOError:
            c.close()
            if time.monotonic() > end:
                raise Failure(f"{SOCKET}: backlog full for {timeout}s: lb-healthd not accepting")
            time.sleep(0.005)


def read_line(c):
    buf = b""
    while not buf.endswith(b"\n"):
        part = c.recv(65536)
        if not part:
            break
        buf += part
    return buf


def control_garbage(s, watch):
    pid = s.procs.pid("healthd")
    rss0 = rss_kib(pid)
    socks, stop = [], threading.Event()
    got = {}
    # Non-JSON lines: each answered "malformed", the connection kept.
    c = control_connect()
    for line in (b"\x01\x02garbage", b"{not json", b"[1,2,3]", b"\xff\xfe\xfd", b"{" * 100):
        c.sendall(line + b"\n")
        got.setdefault("non-JSON", []).append(json.loads(read_line(c)).get("code"))
    c.close()

    def ten_mb():
        c = control_connect(10)
        try:
            chunk = b"{" * (1 << 20)
            for _ in range(10):
                c.sendall(chunk)
        except OSError:
            pass  # closed by lb-healthd once over its limit: what is wanted
        try:
            got["10 MB line"] = json.loads(read_line(c)).get("code")
        except (OSError, ValueError):
            got["10 MB line"] = "no reply"
        c.close()

    trickling = threading.Event()

    def endless():
        # 1 KiB every 50 ms, never a newline: it is never idle, and lb-healthd must not keep
        # more than a request's worth (128 KiB) of it.
        c = control_connect()
        sent, fate = 0, "still open"
        try:
            while sent < (1 << 20):
                c.sendall(b"x" * 1024)
                sent += 1024
                trickling.set()
                if stop.wait(0.05):
                    break
        except OSError:
            try:
                fate = "closed by lb-healthd: " + json.loads(read_line(c)).get("code", "?")
            except (OSError, ValueError):
                fate = "closed by lb-healthd"
        got["endless line"] = f"{sent // 1024} KiB sent, {fate}"
        c.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (ten_mb, endless)]
    # The 10 MB line first, answered before the idle ones come: started with them, it may be
    # the quietest client when they do, and be evicted before lb-healthd has read 128 KiB.
    threads[0].start()
    threads[0].join(30)
    t0 = time.monotonic()
    for _ in range(500):
        socks.append(control_connect())
    opened = time.monotonic() - t0
    # The endless line after the idle ones: started before, it would be the quietest client
    # when they come, and make room for one of them.
    threads[1].start()
    trickling.wait(5)
    time.sleep(0.3)
    samples = [lbctl_status(s) for _ in range(5)]
    stop.set()
    for t in threads:
        t.join(30)
    rss1 = rss_kib(pid)
    for c in socks:
        c.close()
    ms = [m for m, _ in samples]
    bad = [rc for _, rc in samples if rc != 0]
    check(s.procs.procs["healthd"][0].poll() is None, "lb-healthd exited")
    check(set(got["non-JSON"]) == {"malformed"}, f"non-JSON lines: {got['non-JSON']}")
    check(got["10 MB line"] == "too_large", f"10 MB line: {got['10 MB line']}")
    check(not bad, f"lbctl status failed with 500 idle clients: exit {bad}")
    check(max(ms) < STATUS_BOUND_MS, f"lbctl status took {max(ms):.0f} ms")
    check(rss1 - rss0 < RSS_BOUND_KIB, f"lb-healthd grew {rss1 - rss0} KiB")
    return (f"garbage {got}; 500 idle connections opened in {opened:.2f}s; lbctl status "
            f"meanwhile {', '.join(f'{m:.0f}' for m in ms)} ms (bound {STATUS_BOUND_MS}); "
            f"lb-healthd VmRSS {rss0} -> {rss1} KiB (bound +{RSS_BOUND_KIB})"), set()


def pool_inject(s, watch):
    before = s.tel.query("/lb/pool")
    pid = s.procs.pid("healthd")
    watch.paused.set()
    os.kill(pid, signal.SIGSTOP)  # the update ring has a single producer
    try:
        out = subprocess.run([os.path.join(s.build, "tests", "e2e", "lb-pool-inject"), PREFIX,
                              "10.10.0.100", "80"], capture_output=True, text=True, timeout=10)
    finally:
        os.kill(pid, signal.SIGCONT)
    check(out.returncode == 0, f"lb-pool-inject: {out.stderr.strip()}")
    want = json.loads(out.stdout)
    after, _ = wait_for("lbd to count the refusals", lambda: (lambda p: p if p[
        "updates_rejected"] - before["updates_rejected"] >= want["rejected"] and p[
        "channel_faults"] - before["channel_faults"] >= want["channel_faults"] else None)(
        s.tel.query("/lb/pool")), 5)
    watch.paused.clear()
    rejected = after["updates_rejected"] - before["updates_rejected"]
    faults = after["channel_faults"] - before["channel_faults"]
    check(rejected == want["rejected"] and faults == want["channel_faults"],
          f"counted {rejected} rejected, {faults} channel faults; sent {want}")
    check(after["updates_applied"] == before["updates_applied"], "an injected update applied")
    check(s.tel.states() == ALL, f"the pool changed: {s.tel.states()}")
    check(after["healthd_pid"] == pid, "lb-healthd let go of the segment")
    ms, rc = lbctl_status(s)
    check(rc == 0, "lbctl status failed after the injection")
    return (f"{want['rejected'] + want['channel_faults']} malformed updates injected: lbd "
            f"counted {faults} channel_faults, {rejected} updates_rejected, applied none; pool "
            f"unchanged, lb-healthd still attached (lbctl status {ms:.0f} ms)"), set()


STEPS = [(healthd_kill, 9), (backend_kill, 9), (flap, 12), (reload_flap, 14),
         (control_garbage, 10), (pool_inject, 6)]


def run_step(s, step, seconds):
    """One step under both loads, for `seconds` (longer than the step takes)."""
    ka = s.client("keepalive_for", KA_CONNS, seconds, KA_PAUSE, background=True)
    json.loads(ka.stdout.readline())  # all open
    nc = s.client("load", seconds, background=True)
    watch = Watch(s)
    watch.start()
    stats0 = s.tel.query("/lb/stats")
    drops0 = s.tel.query("/lb/drops")
    time.sleep(0.5)
    try:
        what, faulty = step(s, watch)
    finally:
        still = ka.poll() is None and nc.poll() is None
        watch.finish()
        conns = [x for x in lines(ka, timeout=seconds + 60) if "conn" in x]
        news = lines(nc, timeout=seconds + 60)
    stats1 = s.tel.query("/lb/stats")
    drops1 = s.tel.query("/lb/drops")
    check(still, f"the load ended before {step.__name__} did: give it more than {seconds}s")
    hit = [x for x in conns if set(x["backends"]) & faulty]
    healthy = [x for x in conns if x not in hit]
    broken = [x for x in healthy if x["errors"] or x["ports"] != 1 or len(x["backends"]) != 1]
    ka_req = sum(x["ok"] for x in conns)
    ka_err = sum(len(x["errors"]) for x in conns)
    ka_resets = sum(1 for x in conns for e in x["errors"] if "Reset" in e or "Disconnected" in e)
    new_err = [x for x in news if "error" in x]
    new_resets = [x for x in new_err if "Reset" in x["error"]]
    new_ms = sorted(x["ms"] for x in news if "ms" in x) or [0]
    st = sorted(watch.ms) or [0]
    print(f"[{step.__name__}] {what}")
    print(f"  keep-alive: {len(conns)} connections, {ka_req} requests, {ka_err} failed "
          f"({ka_resets} reset), {len(hit)} on the faulted backend, {len(broken)} others "
          f"disturbed; slowest answer {max((x['max_ms'] for x in conns), default=0):.0f} ms")
    print(f"  new connections: {len(news)} requests, {len(new_err)} failed "
          f"({len(new_resets)} reset), median {statistics.median(new_ms):.1f} ms, "
          f"max {new_ms[-1]:.0f} ms")
    print(f"  lbctl status: {len(watch.ms)} runs, median {statistics.median(st):.0f} ms, "
          f"max {st[-1]:.0f} ms, {watch.failed} failed; lb-healthd VmRSS "
          f"{min(watch.rss, default=0)}..{max(watch.rss, default=0)} KiB; lbd flows_reset "
          f"+{stats1['flows_reset'] - stats0['flows_reset']}, rst_flow_miss "
          f"+{stats1['rst_flow_miss'] - stats0['rst_flow_miss']}")
    print(f"  slowest lbctl status: {watch.slowest[0]:.0f} ms: {where_str(watch.slowest[1])}")
    print(f"  lbd drops: {drop_delta(drops0, drops1)}")
    check(len(conns) == KA_CONNS, f"{len(conns)} keep-alive connections reported")
    check(not broken, f"established connections to healthy backends disturbed: {broken[:3]}")
    if not faulty:
        check(not new_err, f"new connections failed: {new_err[:3]}")
    check(watch.failed == 0, f"lbctl status failed {watch.failed} times")
    check(st[-1] < STATUS_BOUND_MS,
          f"lbctl status took {st[-1]:.0f} ms ({where_str(watch.slowest[1])})")
    return {"step": step.__name__, "ka_requests": ka_req, "new_requests": len(news)}


# The drops a soak expects, and why: anything else fails it.
EXPECTED_DROPS = {
    "unsupported_ethertype": "IPv6 router solicitations (to 33:33:00:00:00:02) that the "
    "namespaces' interfaces send after coming up, again and again with a growing interval "
    "(net.ipv6.conf.*.router_solicitations = -1, 4 s doubling up to 3600 s); lbd is IPv4 only",
}


def drop_delta(before, after):
    """Every drop reason that grew between two /lb/drops answers, by name ("none" if none)."""
    grew = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    total = sum(grew.values())
    return f"+{total} (" + ", ".join(f"{k} +{v}" for k, v in sorted(grew.items())) + ")" \
        if grew else "none"


class Sampler(threading.Thread):
    """The soak's samples every 10 s: RSS of lbd and lb-healthd, flows, lbd's counters."""
    FIELDS = ["t", "lbd_rss_kib", "healthd_rss_kib", "flows_active", "flows_created",
              "dropped", "flows_reset", "updates_rejected", "channel_faults"]

    def __init__(self, s, path, every=10.0):
        super().__init__(daemon=True)
        self.s, self.path, self.every = s, path, every
        self.stop_ = threading.Event()
        self.rows = []
        self.drops0 = s.tel.query("/lb/drops")

    def run(self):
        t0 = time.monotonic()
        with open(self.path, "w") as f:
            f.write(" ".join(self.FIELDS) + "\n")
            while True:
                try:
                    st = self.s.tel.query("/lb/stats")
                    pool = self.s.tel.query("/lb/pool")
                    row = [round(time.monotonic() - t0), rss_kib(self.s.procs.pid("lbd")),
                           rss_kib(self.s.procs.pid("healthd")), st["flows_active"],
                           st["flows_created"], st["dropped"], st["flows_reset"],
                           pool["updates_rejected"], pool["channel_faults"]]
                    self.rows.append(row)
                    f.write(" ".join(str(x) for x in row) + "\n")
                    f.flush()
                except (OSError, ValueError, KeyError):
                    pass  # lb-healthd between a kill and its restart
                if self.stop_.wait(self.every):
                    return

    def finish(self):
        self.stop_.set()
        self.join(30)

    def summary(self):
        """Median RSS of the first and last quarter of the run; fails on growth."""
        check(len(self.rows) >= 8, f"only {len(self.rows)} samples")
        q = len(self.rows) // 4
        out = []
        for col, name in ((1, "lbd"), (2, "lb-healthd")):
            first = statistics.median(r[col] for r in self.rows[:q])
            last = statistics.median(r[col] for r in self.rows[-q:])
            out.append(f"{name} RSS median {first:.0f} KiB in the first quarter, {last:.0f} KiB "
                       f"in the last ({last - first:+.0f})")
            check(last - first < max(4096, first * 0.1), f"{name} grew: {out[-1]}")
        print("soak: " + "; ".join(out))
        print(f"soak: flows_active at the end {self.rows[-1][3]}, created "
              f"{self.rows[-1][4] - self.rows[0][4]}, dropped {self.rows[-1][5] - self.rows[0][5]}"
              f", flows_reset {self.rows[-1][6] - self.rows[0][6]} over {len(self.rows)} samples")
        drops1 = self.s.tel.query("/lb/drops")
        print(f"soak: lbd drops by reason over the run: {drop_delta(self.drops0, drops1)}")
        grew = {k for k, v in drops1.items() if v != self.drops0.get(k, 0)}
        other = grew - set(EXPECTED_DROPS)
        for k in sorted(grew & set(EXPECTED_DROPS)):
            print(f"soak:   {k}: {EXPECTED_DROPS[k]}")
        check(not other, f"lbd dropped packets for reasons the soak does not expect: {other}")


def main(argv):
    args = argv[2:]
    if len(argv) < 2 or not (args == ["--short"] or (args[:1] == ["--minutes"] and
                                                     len(args) in (2, 4))):
        print(__doc__)
        return 2
    why = cannot_run()
    if why:
        print(f"SKIP: {why}")
        return 77
    minutes = float(args[1]) if args[0] == "--minutes" else 0
    samples = args[3] if len(args) == 4 and args[2] == "--samples" else "fault-soak.csv"
    s = System(argv[1])
    sampler = None
    try:
        s.up()
        if minutes:
            sampler = Sampler(s, samples)
            sampler.start()
        end = time.monotonic() + minutes * 60
        cycle = 0
        while True:
            cycle += 1
            for step, seconds in STEPS:
                run_step(s, step, seconds)
            if time.monotonic() >= end:
                break
            print(f"-- cycle {cycle} done, {(end - time.monotonic()) / 60:.1f} min to go")
        if sampler:
            sampler.finish()
            sampler.summary()
        print(f"PASS faults ({cycle} cycle(s))")
        return 0
    except (Failure, subprocess.SubprocessError, OSError, ValueError) as e:
        print(f"FAIL faults: {e}")
        s.procs.dump_logs()
        return 1
    finally:
        if sampler and sampler.is_alive():
            sampler.finish()
        s.down()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
