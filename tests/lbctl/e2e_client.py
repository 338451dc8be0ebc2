#!/usr/bin/env python3
"""Clients for lbctl_e2e.sh.

  e2e_client.py keepalive HOST COUNT INTERVAL
      One TCP connection to HOST:80, COUNT requests on it INTERVAL seconds apart. Prints
      "<i> <backend name>" per answer as it comes (flushed), "ERR <i> <what>" on a failure.
      Exit 0 when every request was answered on the same connection, 1 otherwise.

  e2e_client.py resets HOST COUNT ORDER TRIGGER
      COUNT keep-alive connections to HOST:80, one answered request each; prints "ready". Then
      ORDER client-first: waits for the file TRIGGER to exist, then sends one more request on
      every connection; backend-first: sends on every connection a request the backend answers
      1.5 s later (GET /?delay_ms=1500), prints "sent", and sends nothing more. Prints
      "reset <i> <ms>" for a connection reset (ECONNRESET) <ms> after the trigger / the sending,
      "answered <i>" or "hung <i>" otherwise (nothing within 6 s). Exit 0 when every connection
      was reset, within 1 s (client-first) or 1.5 s + 1 s (backend-first).

  e2e_client.py abuse SOCKET
      Hostile clients on lb-healthd's control socket: garbage, a 10 MB request, a client that
      says nothing. Prints one line per case; exit 0 when each was refused as documented.
"""
import http.client
import json
import os
import socket
import sys
import threading
import time


def keepalive(host, count, interval):
    conn = http.client.HTTPConnection(host, 80, timeout=5)
    sock_id = None
    ok = True
    for i in range(count):
        try:
            conn.request("GET", "/", headers={"Connection": "keep-alive"})
            resp = conn.getresponse()
            body = resp.read().decode().strip()
            if sock_id is None:
                sock_id = id(conn.sock)
            elif id(conn.sock) != sock_id:
                print(f"ERR {i} reconnected", flush=True)
                ok = False
            print(f"{i} {body}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
            print(f"ERR {i} {type(e).__name__}: {e}", flush=True)
            ok = False
            conn.close()
            conn = http.client.HTTPConnection(host, 80, timeout=5)
            sock_id = None
        time.sleep(interval)
    conn.close()
    return 0 if ok else 1


def resets(host, count, order, trigger):
    conns = []
    for i in range(count):
        c = http.client.HTTPConnection(host, 80, timeout=6)
        c.request("GET", "/", headers={"Connection": "keep-alive"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            print(f"ERR {i} status {r.status}", flush=True)
            return 1
        conns.append(c)
    print("ready", flush=True)
    path = "/"
    bound_ms = 1000
    if order == "client-first":
        while not os.path.exists(trigger):
            time.sleep(0.01)
    else:
        path = "/?delay_ms=1500"
        bound_ms = 2500
        for c in conns:
            c.request("GET", path, headers={"Connection": "keep-alive"})
        print("sent", flush=True)
    t0 = time.monotonic()
    results = [None] * count

    def one(i, c):
        try:
            if order == "client-first":
                c.request("GET", path, headers={"Connection": "keep-alive"})
            c.getresponse().read()
            results[i] = f"answered {i}"
        except ConnectionResetError:
            results[i] = f"reset {i} {(time.monotonic() - t0) * 1000:.0f}"
        except socket.timeout:
            results[i] = f"hung {i}"
        except Exception as e:  # noqa: BLE001 - reported as it is
            results[i] = f"other {i} {type(e).__name__}: {e}"

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = True
    for r in results:
        print(r, flush=True)
        ok = ok and r.startswith("reset ") and float(r.split()[2]) <= bound_ms
    return 0 if ok else 1


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def read_line(s):
    data = b""
    while b"\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[0]


def abuse(path):
    ok = True

    s = connect(path)
    s.sendall(b"\x00\x01garbage {]\n")
    r = json.loads(read_line(s))
    good = r.get("ok") is False and r.get("code") == "malformed"
    s.sendall(b'{"cmd":"ping"}\n')
    alive = json.loads(read_line(s)).get("ok") is True
    print(f"garbage: {r.get('error')} -> {'refused' if good else 'NOT REFUSED'}, "
          f"connection {'still serves' if alive else 'BROKEN'}")
    ok = ok and good and alive
    s.close()

    s = connect(path)
    def flood():
        try:
            chunk = b"[" * (1 << 20)
            for _ in range(10):
                s.sendall(chunk)
        except OSError:
            pass
    t = threading.Thread(target=flood)
    t.start()
    r = json.loads(read_line(s))
    t.join()
    good = r.get("code") == "too_large"
    print(f"10 MB request: {r.get('error')} -> {'refused' if good else 'NOT REFUSED'}")
    ok = ok and good
    s.close()

    s = connect(path)
    t0 = time.monotonic()
    line = read_line(s)
    rest = s.recv(100)
    waited = time.monotonic() - t0
    r = json.loads(line) if line else {}
    good = r.get("code") == "idle" and rest == b""
    print(f"silent client: disconnected after {waited:.1f}s ({r.get('error')}) -> "
          f"{'ok' if good else 'NOT DISCONNECTED'}")
    ok = ok and good
    s.close()
    return 0 if ok else 1


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "keepalive" and len(sys.argv) == 5:
        return keepalive(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    if len(sys.argv) == 6 and sys.argv[1] == "resets":
        return resets(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    if len(sys.argv) == 3 and sys.argv[1] == "abuse":
        return abuse(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
