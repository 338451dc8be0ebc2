#!/usr/bin/env python3
"""HTTP client for the end-to-end tests, run inside the client namespace (stdlib only).

  client.py new N                 N requests, a new TCP connection each: JSON summary
  client.py keepalive N PAUSE     N requests on ONE connection, PAUSE s apart: one JSON line each
  client.py load SECONDS          new connections back to back for SECONDS: one JSON line each
  client.py refused               one request: how it failed and how fast
  client.py keepalive_many C N PAUSE
                                  C connections, N rounds PAUSE s apart of one request on each:
                                  "open" line once all are open (with their local ports), then one JSON line per
                                  connection (its backends, requests, errors)
  client.py keepalive_for C SECONDS PAUSE
                                  the same, rounds until SECONDS have passed (each line also
                                  has the connection's slowest answer, max_ms)
  client.py hold N SECONDS        N keep-alive connections, requests round-robin over them for
                                  SECONDS: one JSON summary (resets, failures, reconnections,
                                  the longest gap between two answers and when it ended)

Each response names its backend (lb-backend's X-Backend header) and the source address the backend
saw (X-Peer; `new` counts them under "peers"). Every loop is bounded.
"""
import http.client
import json
import os
import sys
import time

# The fleet's VIP is another (tools/fleet.sh): LB_CLIENT_VIP overrides the default, and
# LB_CLIENT_PORT the port (a service added at run time listens on another).
VIP, PORT = os.environ.get("LB_CLIENT_VIP", "10.10.0.100"), int(os.environ.get("LB_CLIENT_PORT", 80))


def one(timeout=3.0, peers=None):
    c = http.client.HTTPConnection(VIP, PORT, timeout=timeout)
    try:
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        if peers is not None:
            peer = r.getheader("X-Peer") or "?"
            peers[peer] = peers.get(peer, 0) + 1
        return r.getheader("X-Backend") or f"status {r.status}"
    finally:
        c.close()


def main(argv):
    mode = argv[1]
    if mode == "new":
        counts, errors, peers = {}, [], {}
        t0 = time.monotonic()
        for _ in range(int(argv[2])):
            try:
                b = one(peers=peers)
                counts[b] = counts.get(b, 0) + 1
            except OSError as e:
                errors.append(repr(e))
        print(json.dumps({"counts": counts, "errors": errors, "peers": peers,
                          "seconds": round(time.monotonic() - t0, 3)}))
    elif mode == "keepalive":
        c = http.client.HTTPConnection(VIP, PORT, timeout=3)
        for i in range(int(argv[2])):
            t = time.time()
            try:
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                # The local port tells whether http.client silently opened a new connection.
                print(json.dumps({"t": t, "backend": r.getheader("X-Backend"),
                                  "conn": c.sock.getsockname()[1] if c.sock else None}),
                      flush=True)
            except OSError as e:
                print(json.dumps({"t": t, "error": repr(e)}), flush=True)
                return 1
            time.sleep(float(argv[3]))
        c.close()
    elif mode == "load":
        end = time.monotonic() + float(argv[2])
        while time.monotonic() < end:
            t = time.time()
            try:
                print(json.dumps({"t": t, "backend": one(), "ms": round((time.time() - t) * 1e3, 2)}),
                      flush=True)
            except OSError as e:
                print(json.dumps({"t": t, "error": repr(e)}), flush=True)
    elif mode in ("keepalive_many", "keepalive_for"):
        conns = [http.client.HTTPConnection(VIP, PORT, timeout=20) for _ in range(int(argv[2]))]
        seen = [{"backends": set(), "ports": set(), "ok": 0, "errors": [], "max_ms": 0.0}
                for _ in conns]

        def ask(i):
            c = conns[i]
            t = time.monotonic()
            try:
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                seen[i]["backends"].add(r.getheader("X-Backend"))
                seen[i]["ports"].add(c.sock.getsockname()[1] if c.sock else None)
                seen[i]["ok"] += 1
                seen[i]["max_ms"] = max(seen[i]["max_ms"], (time.monotonic() - t) * 1e3)
            except (OSError, http.client.HTTPException) as e:
                seen[i]["errors"].append(repr(e))
                c.close()

        for i in range(len(conns)):
            ask(i)
        # The local ports name the connections' 5-tuples (bench/fleet_resilient.py asks the
        # router where each one goes).
        print(json.dumps({"open": len(conns),
                          "ports": [c.sock.getsockname()[1] if c.sock else None for c in conns]}),
              flush=True)
        if mode == "keepalive_many":
            rounds, end = int(argv[3]) - 1, None
        else:
            rounds, end = None, time.monotonic() + float(argv[3])
        while (rounds is None or rounds > 0) and (end is None or time.monotonic() < end):
            rounds = None if rounds is None else rounds - 1
            time.sleep(float(argv[4]))
            for i in range(len(conns)):
                if not seen[i]["errors"]:
                    ask(i)
        for i, x in enumerate(seen):
            print(json.dumps({"conn": i, "backends": sorted(b or "?" for b in x["backends"]),
                              "ports": len(x["ports"]), "ok": x["ok"], "errors": x["errors"],
                              "max_ms": round(x["max_ms"], 2)}),
                  flush=True)
    elif mode == "hold":
        n, seconds = int(argv[2]), float(argv[3])
        conns = [http.client.HTTPConnection(VIP, PORT, timeout=15) for _ in range(n)]
        ports = [None] * n
        resets = failures = reconnected = requests = 0
        errors = []
        last_ok = time.time()
        gap, gap_end = 0.0, 0.0
        gaps = []  # (start, end) of every pause over 0.2 s, the first 50
        end = time.monotonic() + seconds
        while time.monotonic() < end and failures == 0:
            for i, c in enumerate(conns):
                try:
                    c.request("GET", "/")
                    r = c.getresponse()
                    r.read()
                    requests += 1
                    port = c.sock.getsockname()[1] if c.sock else None
                    # http.client opens a new connection silently when the old one was closed.
                    if ports[i] is not None and port != ports[i]:
                        reconnected += 1
                    ports[i] = port
                    now = time.time()
                    if now - last_ok > gap:
                        gap, gap_end = now - last_ok, now
                    if now - last_ok > 0.2 and len(gaps) < 50:
                        gaps.append((last_ok, now))
                    last_ok = now
                except ConnectionResetError as e:
                    resets += 1
                    errors.append(repr(e))
                    c.close()
                except (OSError, http.client.HTTPException) as e:
                    failures += 1
                    errors.append(repr(e))
                    c.close()
                    break  # one failure decides: do not wait out the others' timeouts
        for c in conns:
            c.close()
        print(json.dumps({"requests": requests, "resets": resets, "failures": failures,
                          "reconnected": reconnected, "errors": errors[:5],
                          "gap_s": round(gap, 3), "gap_end": gap_end, "last_ok": last_ok,
                          "gaps": gaps}))
    elif mode == "refused":
        t0 = time.monotonic()
        try:
            b = one(timeout=5)
            print(json.dumps({"backend": b, "seconds": time.monotonic() - t0}))
        except OSError as e:
            print(json.dumps({"error": type(e).__name__, "detail": str(e),
                              "seconds": round(time.monotonic() - t0, 4)}))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
