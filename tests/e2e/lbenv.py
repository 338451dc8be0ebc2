"""Shared pieces of the Python end-to-end and integration tests: waiting on conditions, lbd's
DPDK telemetry, and the processes a test starts (stopped by PID, logs kept for failures)."""
import json
import os
import signal
import socket
import subprocess
import time


class Failure(Exception):
    pass


def wait_for(what, cond, timeout, every=0.02):
    """Polls cond() until it returns a true value; returns (value, seconds taken)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            value = cond()
        except (OSError, ValueError, KeyError, TypeError):  # a daemon not up (yet)
            value = None
        if value:
            return value, time.monotonic() - start
        time.sleep(every)
    raise Failure(f"timed out after {timeout:.1f}s waiting for {what}")


class Telemetry:
    """lbd's /lb/... commands over DPDK's telemetry socket (protocol v2)."""

    def __init__(self, prefix):
        self.path = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"

    def query(self, cmd):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(2)
        try:
            s.connect(self.path)
            info = json.loads(s.recv(16384).decode())
            s.send(cmd.encode())
            # Keyed by the command without its parameter ("/lb/backends,58").
            reply = json.loads(s.recv(int(info.get("max_output_len", 16384))).decode())
            return reply[cmd.split(",")[0]]
        finally:
            s.close()

    def query_all(self, cmd):
        """Every page of a listing lbd pages (/lb/backends, /lb/services, /lb/workers), merged:
        (entries by key, total lbd counted). Raises Failure when a page is missing."""
        entries, param = {}, None
        for _ in range(65536):
            reply = self.query(cmd if param is None else f"{cmd},{param}")
            if reply is None:
                raise Failure(f"lbd refused {cmd},{param}")
            page = reply.pop("page", None)
            entries.update(reply)
            if page is None:
                return entries, len(entries)  # an lbd from before paging
            if "next" not in page:
                return entries, page["total"]
            param = page["next"]
        raise Failure(f"{cmd} has no end")

    def states(self, service="web"):
        """address:port -> "active" | "draining" | "not_serving", as lbd applies them."""
        return {b["address"]: b["state"] for b in self.query_all("/lb/backends")[0].values()
                if b["service"] == service}


def remove_instance_files(instance):
    """Remove what an lbd of `instance` stopped with SIGKILL leaves: its flow tables and the
    names of its services beside them (docs/operations.md, restarting lbd), which a test's
    short-lived lbd must not pile up in memory, and its pool segment /dev/shm/lbd-INSTANCE,
    which lbd unlinks only when it exits cleanly."""
    for d in ("/dev/hugepages", "/dev/shm"):
        for name in os.listdir(d) if os.path.isdir(d) else []:
            flows = name.startswith(f"lbd-{instance}-flows-")
            shm = d == "/dev/shm" and name in (f"lbd-{instance}", f"lbd-{instance}-services.json")
            if flows or shm:
                os.unlink(os.path.join(d, name))


class Procs:
    """Processes a test started, each with its log in `logdir`."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = {}

    def start(self, name, argv, **kw):
        log = open(os.path.join(self.logdir, name + ".log"), "a")
        self.procs[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, **kw), log)
        return self.procs[name][0]

    def pid(self, name):
        return self.procs[name][0].pid

    def stop(self, name, sig=signal.SIGTERM, timeout=10):
        p, log = self.procs.pop(name)
        p.send_signal(sig)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        log.close()
        return rc

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL)

    def dump_logs(self, tail=3000):
        for name in sorted(os.listdir(self.logdir)):
            if name.endswith(".log"):
                print(f"--- {name}")
                # errors="replace": a log may hold bytes a hostile client sent.
                with open(os.path.join(self.logdir, name), errors="replace") as f:
                    print(f.read()[-tail:])


def main(argv):
    """lbenv.py PREFIX states | PREFIX query COMMAND (used by tools/demo.sh)."""
    import json as _json
    tel = Telemetry(argv[1])
    if argv[2] == "states":
        print(" ".join(f"{a}={s}" for a, s in sorted(tel.states().items())))
    elif argv[2] == "query":
        print(_json.dumps(tel.query(argv[3])))
    elif argv[2] == "stats":
        for k, v in tel.query("/lb/stats").items():
            print(f"  {k:20} {v}")
    else:
        return 2
    return 0


if __name__ == "__main__":
    import sys as _sys
    _sys.exit(main(_sys.argv))
