#!/usr/bin/env python3
"""Queries a DPDK process's telemetry socket (v2) and prints one JSON object, command -> reply.

usage: telemetry.py FILE_PREFIX COMMAND...      e.g. telemetry.py lbd /lb/stats /lb/drops

Standard library only (dpdk-telemetry.py is interactive; the benchmark scripts need one shot).
"""
import json
import socket
import sys


def query(prefix, commands, runtime_dir="/var/run/dpdk"):
    path = f"{runtime_dir}/{prefix}/dpdk_telemetry.v2"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(path)
    info = json.loads(s.recv(16384).decode())
    max_len = int(info.get("max_output_len", 16384))
    out = {}
    for c in commands:
        s.send(c.encode())
        out[c] = json.loads(s.recv(max_len).decode()).get(c)
    s.close()
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        print(json.dumps(query(sys.argv[1], sys.argv[2:])))
    except OSError as e:
        print(f"telemetry.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
