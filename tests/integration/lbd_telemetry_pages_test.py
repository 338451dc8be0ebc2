#!/usr/bin/env python3
"""lbd's paged telemetry listings, read from the real lbd (net_null) with 600 backends.

DPDK's telemetry answers at most 16 KiB of JSON and 256 entries a dict, and leaves out what does
not fit without a word: /lb/backends used to list about 60 backends, so lb-healthd and lbctl took
a draining backend they did not see for one without flows. lbd now pages /lb/backends,
/lb/services and /lb/workers ("page": {"from", "listed", "total", "next"}). This test starts lbd
with 302 services (names of 32 characters, the longest the config allows) and 600 backends, and
checks that every page fits in a reply, that the pages list every backend and service once, that
a bad parameter is refused, that a port named with a '-' is in /lb/ports, and that lbctl
(status, with lbd alone) shows every backend.

usage: lbd_telemetry_pages_test.py LBD LBCTL
Exit 0 on success, 1 on failure, 77 when it cannot run here (with the reason).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from lbenv import Failure, Procs, Telemetry, remove_instance_files, wait_for  # noqa: E402

MAX_OUTPUT_LEN = 16384  # DPDK 22.11's lib/telemetry/telemetry.c
MAX_DICT_ENTRIES = 256


def raw(tel, cmd):
    """A reply's bytes and its value."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(2)
    try:
        s.connect(tel.path)
        s.recv(16384)
        s.send(cmd.encode())
        data = s.recv(65536)
        return len(data), json.loads(data.decode())[cmd.split(",")[0]]
    finally:
        s.close()


def walk(tel, cmd):
    """Every page of `cmd` by hand, each checked against DPDK's limits: (entries, pages)."""
    entries, param, pages = {}, None, 0
    while True:
        size, page = raw(tel, cmd if param is None else f"{cmd},{param}")
        pages += 1
        if page is None:
            raise Failure(f"lbd refused {cmd},{param}")
        if size >= MAX_OUTPUT_LEN or len(page) > MAX_DICT_ENTRIES:
            raise Failure(f"{cmd},{param}: {size} bytes, {len(page)} entries: beyond DPDK's limits")
        meta = page.pop("page", None)
        if meta is None:
            raise Failure(f"{cmd} is not paged: {len(page)} entries, {size} bytes")
        if meta["listed"] != len(page):
            raise Failure(f"{cmd},{param}: says {meta['listed']} listed, has {len(page)}")
        for key in page:
            if key in entries:
                raise Failure(f"{cmd}: {key} on two pages")
        entries.update(page)
        if "next" not in meta:
            return entries, meta["total"], pages
        if param is not None and meta["next"] <= param:
            raise Failure(f"{cmd}: next {meta['next']} after {param}")
        param = meta["next"]


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    lbd, lbctl = sys.argv[1:]
    if os.geteuid() != 0:
        print("SKIP: lbd needs root for /var/run/dpdk and its shared memory")
        return 77
    tag = f"lbpg{os.getpid()}"
    tmp = tempfile.TemporaryDirectory()
    procs = Procs(tmp.name)
    cfg = os.path.join(tmp.name, "lbd.cfg")
    # Two services of 256 and 44 backends, and 300 of one backend each: 600 backends, 302
    # services, the names as long as the config allows (32 characters).
    services, want = [], set()
    for s, count in ((0, 256), (1, 44)):
        name = f"big-{s}-" + "x" * (32 - len(f"big-{s}-"))
        addrs = [f"127.{1 + s}.{i // 250}.{1 + i % 250}" for i in range(count)]
        want |= {(name, f"{a}:8080") for a in addrs}
        backends = ", ".join(f'{{ address = "{a}"; port = 8080; }}' for a in addrs)
        services.append(f'{{ name = "{name}"; vip = "127.0.0.{100 + s}"; port = 80; '
                        f'backends = ( {backends} ); }}')
    for i in range(300):
        name = f"one-{i:03d}-" + "y" * (32 - len(f"one-{i:03d}-"))
        want.add((name, f"127.9.{i // 250}.{1 + i % 250}:9000"))
        services.append(f'{{ name = "{name}"; vip = "127.0.1.{1 + i // 100}"; port = {1000 + i}; '
                        f'backends = ( {{ address = "127.9.{i // 250}.{1 + i % 250}"; '
                        f'port = 9000; }} ); }}')
    with open(cfg, "w") as f:
        f.write(f"""
instance = "{tag}";
dataplane: {{ workers = 1; flows = {{ capacity = 4096; }};
  ports = ( {{ name = "p-0"; device = "net_null_{tag}"; ip = "127.0.0.1/8"; }} ); }};
services = ( {", ".join(services)} );
healthd = {{ control_socket = "{os.path.join(tmp.name, 'nobody.sock')}"; }};
""")
    tel = Telemetry(tag)
    try:
        procs.start("lbd", [lbd, "--lcores", "0@0,1@1", "--no-pci", "--no-huge", "-m", "512",
                            "--", "--config", cfg])
        wait_for("lbd's telemetry", lambda: tel.query("/lb/pool") is not None, 60)

        backends, total, pages = walk(tel, "/lb/backends")
        got = {(b["service"], b["address"]) for b in backends.values()}
        if total != 600 or len(backends) != 600 or got != want:
            raise Failure(f"/lb/backends: {len(backends)} listed, total {total}, "
                          f"{len(want - got)} missing")
        ids = sorted(b["id"] for b in backends.values())
        print(f"/lb/backends: 600 backends in {pages} pages (ids {ids[0]}..{ids[-1]}), "
              f"every one once")
        # Without a parameter: the first page, saying there is more.
        _, first = raw(tel, "/lb/backends")
        if first["page"].get("next") is None or first["page"]["from"] != 0:
            raise Failure(f"/lb/backends' first page: {first['page']}")
        # lbenv's reader (the e2e tests') merges the same.
        merged, merged_total = tel.query_all("/lb/backends")
        if len(merged) != 600 or merged_total != 600:
            raise Failure(f"query_all: {len(merged)} of {merged_total}")

        svcs, total, pages = walk(tel, "/lb/services")
        if total != 302 or len(svcs) != 302:
            raise Failure(f"/lb/services: {len(svcs)} listed, total {total}")
        print(f"/lb/services: 302 services in {pages} pages")
        workers, total, _ = walk(tel, "/lb/workers")
        if len(workers) != total or total < 1:
            raise Failure(f"/lb/workers: {len(workers)} of {total}")

        # Past the last id: an empty page, the total still said. A bad parameter is refused.
        _, past = raw(tel, "/lb/backends,100000")
        if past != {"page": {"from": 100000, "listed": 0, "total": 600}}:
            raise Failure(f"/lb/backends,100000: {past}")
        for bad in ("x", "-1", "1.5", "99999999999"):
            if raw(tel, f"/lb/backends,{bad}")[1] is not None:
                raise Failure(f"/lb/backends,{bad} not refused")

        # A port named with a '-' (the config allows it, DPDK refuses it as a key): keyed
        # port_<index>, its name inside, rather than left out.
        ports = tel.query("/lb/ports")
        if list(ports) != ["port_0"] or ports["port_0"]["name"] != "p-0":
            raise Failure(f"/lb/ports: {ports}")

        # lbctl status with lbd alone (lb-healthd unreachable: exit 1, lbd's view shown).
        r = subprocess.run([lbctl, "-c", cfg, "--json", "status"], capture_output=True,
                           text=True, timeout=60)
        view = json.loads(r.stdout)
        shown = {(s["name"], f"{b['address']}:{b['port']}")
                 for s in view["services"] for b in s["backends"]}
        if r.returncode != 1 or shown != want:
            raise Failure(f"lbctl status: exit {r.returncode}, {len(shown)} backends shown, "
                          f"{len(want - shown)} missing: {r.stderr.strip()}")
        print("lbctl status (lbd alone): all 600 backends shown")

        rc = procs.stop("lbd")
        if rc != 0:
            raise Failure(f"lbd exited {rc} on SIGTERM")
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
