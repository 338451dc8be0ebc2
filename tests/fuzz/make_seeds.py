#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/), small inputs that
reach the interesting states at once; libFuzzer mutates from there. Run it again after changing a
target's input format (packet_fuzz.cc's decoder, ServiceUpdate) and commit the result.

usage: tests/fuzz/make_seeds.py [CORPUS-DIR]   (default: tests/fuzz/corpus next to this file)
"""
import json
import os
import struct
import sys

# --- packet: programs for packet_fuzz.cc's decoder -------------------------------------------

# Policy byte (first byte of the input).
RST_ON_MISS, NO_RST_ON_NO_BACKEND, NO_RETRY_ON_RST, NO_RETRY_ON_SYN, NO_SYN_CACHE, TWO_WORKERS = (
    1, 2, 4, 8, 16, 32)

# Indexes into packet_fuzz.cc's tables.
CLIENT_FLAGS = {"S": 0, "A": 1, "PA": 2, "FA": 3, "R": 4, "RA": 5, "SA": 8, "F": 9}
BACKEND_FLAGS = {"SA": 0, "A": 1, "PA": 2, "FA": 3, "R": 4, "RA": 5, "S": 7}
DEST = {"web": 0, "tls": 1, "v2": 2, "empty": 3, "nosvc": 4, "local": 5, "tunnel": 6,
        "fullnat": 7}
# eth_to's byte: low 3 bits 0-4 our MAC, 5 broadcast, 6 multicast, 7 another host's; 0x10 a VLAN
# tag (two more bytes); 0x60 a group source MAC.
ETH_OURS, ETH_BCAST, ETH_MCAST, ETH_OTHER, ETH_TAG, ETH_GROUP_SRC = 0, 5, 6, 7, 0x10, 0x60


class Program:
    def __init__(self, policy=0):
        self.b = bytearray([policy])

    def u8(self, *vals):
        for v in vals:
            self.b.append(v & 0xff)
        return self

    def damage(self, d):
        """damage()'s byte and the bytes its bits read (a tuple), or just the byte."""
        return self.u8(*d) if isinstance(d, tuple) else self.u8(d)

    def eth(self, how=ETH_OURS, tag=0x0064):
        self.u8(how)
        if how & ETH_TAG:
            self.u8(tag >> 8, tag)

    def segment(self, flags_syn, seq=1, ack=0, payload=0):
        # how: seq and ack as one byte each, SYN options on, payload < 40 bytes
        self.u8(0, seq, ack)
        if flags_syn:
            self.u8(7)  # tsval
        self.u8(payload)

    def client(self, who=0, cport=0, dest="web", flags="S", eth=ETH_OURS, seq=1, ack=0,
               payload=0, damage=0):
        self.u8(0, who, cport, DEST[dest], CLIENT_FLAGS[flags])
        self.eth(eth)
        self.u8(0x11, 61)  # IP id, TTL
        self.segment("S" in flags, seq, ack, payload)
        return self.damage(damage)

    def backend(self, b=0, client=0, cport=0, flags="SA", seq=5, ack=2, payload=0, damage=0):
        self.u8(4, b, client, cport, BACKEND_FLAGS[flags])
        self.eth(ETH_OURS)
        self.u8(0x22, 61)  # TTL 62 (64 would be TTL 1: ip_header takes 1 + TTL % 64)
        self.segment("S" in flags, seq, ack, payload)
        return self.damage(damage)

    def backend_answers(self, flags="SA", to_syn=True, payload=0, damage=0):
        """The backend's answer to the last segment lbd sent it: to a SYN, a byte below 0xc0
        means SYN|ACK and anything else is followed by the flags' index."""
        self.u8(6)
        if to_syn:
            self.u8(0) if flags == "SA" else self.u8(0xc0, BACKEND_FLAGS[flags])
        else:
            self.u8(BACKEND_FLAGS[flags])
        self.eth(ETH_OURS)
        self.u8(0x33, 61)
        self.segment("S" in flags, 9, 0, payload)
        return self.damage(damage)

    def client_answers(self, flags="A", payload=0, damage=0):
        """The client's answer to the last segment lbd sent it (never a SYN, so the flags are
        read from the table directly)."""
        self.u8(8, BACKEND_FLAGS[flags])
        self.eth(ETH_OURS)
        self.u8(0x44, 61)
        self.segment("S" in flags, 2, 0, payload)
        return self.damage(damage)

    def arp(self, op=1, sender=0, target=0, port=0, sha_kind=0, unicast=False):
        how = (op - 1) | (sha_kind << 1) | (port << 3) | (0x10 if unicast else 0)
        self.u8(9, how, sender, target)
        self.eth(ETH_BCAST if op == 1 else ETH_OURS)
        return self.u8(0)

    def icmp(self, target=0, client=0, martian=None, echo=True):
        how = (0 if echo else 1) | (0x80 if martian is not None else 0)
        self.u8(10, how, client)
        if martian is not None:
            self.u8(martian)
        if not echo:
            self.u8(13)  # type: timestamp request
        self.u8(0, 7, 0, 1, 16)  # id, seq, 16 bytes of payload
        self.eth(ETH_OURS)
        self.u8(target, 0x55, 64)  # target, IP id, TTL
        return self.u8(0)

    def error(self, which=0, made_up=None, kind=0, cut=0, dmg=(), fix=False, other_side=False,
              wrong=None, sender=0, any_type=None):
        """An ICMP error (op 3) quoting the which-th last frame lbd sent (0: the last), or a
        packet lbd never sent: made_up = (how, dest, client, cport, backend, flags) (how & 3:
         0 VIP:port -> client, 1 client or (how & 4) local address -> backend, 2 IPIP, 3 any
        protocol, whose byte follows). kind & 7: 0-1 fragmentation needed (MTU index kind >> 3),
        2 port, 3 host unreachable, 4 code kind >> 3, 5-6 time exceeded, 7 its code 1; any_type
        = (type, code). cut: < 0x40 whole, < 0x80 28 bytes, else 20 + (cut & 0x3f). dmg: (index,
        xor) pairs; fix: its IPv4 checksum fixed up after. sender: which router (port 0: client
        index, 12 for its router; port 1: 0 gateway, 1 the quote's destination, 2 another host);
        wrong: the index of another destination than the quote's source."""
        how = (0x08 if other_side else 0) | (0x02 if wrong is not None else 0)
        self.u8(3, 0x80 if made_up else which)
        if made_up:
            mhow, dest, client, cport, b, flags = made_up
            self.u8(mhow, DEST[dest], client, cport, b, CLIENT_FLAGS[flags])
            if mhow & 3 == 1 and mhow & 4:
                self.u8(0)  # local port: the first
            if mhow & 3 == 3:
                self.u8(17)  # protocol
            self.segment("S" in flags, 1, 0, 8)
        self.u8(how, 0xf8 if any_type else kind)
        if any_type:
            self.u8(*any_type)
        self.u8(cut, len(dmg) | (4 if fix else 0))
        for i, x in dmg:
            self.u8(i, x)
        self.u8(sender)
        if wrong is not None:
            self.u8(wrong)
        self.eth(ETH_OURS)
        self.u8(0x66, 61)
        return self.u8(0)

    def raw(self, data, port=0):
        self.u8(11, port, len(data))
        self.b += data
        return self

    def clock(self, ticks):
        if ticks > 255:
            self.u8(12 | 0x80, ticks >> 8, ticks)
        else:
            self.u8(12, ticks)
        return self

    def age(self, budget=None):
        return self.u8(13 | 0x80) if budget is None else self.u8(13, budget)

    def pool(self, n):
        return self.u8(14, n)

    def burst(self, n, next_worker=False):
        return self.u8(15 | (0x80 if next_worker else 0), n - 1)


def packet_seeds():
    s = {}
    p = Program()
    p.client(flags="S").backend_answers().client_answers("A")
    p.client(flags="PA", seq=2, payload=20).backend_answers("PA", to_syn=False, payload=30)
    p.client(flags="FA", seq=3).backend_answers("FA", to_syn=False).client_answers("A")
    p.clock(300).age()
    s["handshake_data_fin"] = p
    p = Program()
    p.client(flags="S").backend_answers("R").backend_answers("R").backend_answers("SA")
    s["retry_on_rst"] = p
    p = Program(RST_ON_MISS)
    p.client(flags="S").clock(30).client(flags="S").clock(30).client(flags="S")
    p.client(who=1, cport=1, flags="A").clock(100).age()
    s["syn_retransmit_and_miss"] = p
    p = Program()
    p.client(flags="S").backend_answers().client_answers("A")
    p.pool(1).client(flags="PA", payload=5).pool(3).client(who=2, flags="S")
    p.pool(2).client(who=3, dest="tls", flags="S").pool(0)
    s["pool_changes"] = p
    p = Program(NO_RST_ON_NO_BACKEND)
    p.burst(40)
    for i in range(40):
        p.client(who=i % 12, cport=i // 12, dest=["web", "tls", "v2", "empty"][i % 4], flags="S")
    p.clock(60).age(255).clock(2000).age()
    s["table_fills_and_ages"] = p
    p = Program(TWO_WORKERS)
    for i in range(6):
        p.client(who=i, cport=i, flags="S").backend_answers().client_answers("A")
    p.burst(8, next_worker=True)
    for i in range(8):
        p.client(who=i, cport=i, flags="PA", payload=3)
    s["two_workers"] = p
    p = Program()
    p.arp(1, sender=3, target=0).arp(1, sender=0, target=2, port=1).arp(2, sender=1, target=1, port=1)
    p.arp(1, sender=3, target=4, sha_kind=2).client(dest="tls", flags="S").client(who=5, dest="tls", flags="S")
    s["arp"] = p
    p = Program()
    p.icmp(target=0).icmp(target=1).icmp(target=3).icmp(martian=0).icmp(echo=False)
    s["icmp"] = p
    p = Program()
    for m in range(0xf0, 0xfb):
        p.client(who=m, flags="S")
    p.client(eth=ETH_OTHER).client(eth=ETH_BCAST).client(eth=ETH_MCAST).client(eth=ETH_GROUP_SRC)
    s["martians_and_macs"] = p
    p = Program(RST_ON_MISS | NO_SYN_CACHE | NO_RETRY_ON_RST)
    p.client(eth=ETH_TAG, flags="S").backend_answers().client_answers("A")
    p.client(eth=ETH_TAG, flags="PA", payload=12).client(eth=ETH_TAG, cport=3, flags="A")
    p.backend(b=2, client=4, flags="A")
    s["vlan_and_rst_on_miss"] = p
    p = Program()
    p.client(flags="S", damage=(0x01, 0x55)).client(cport=1, flags="S", damage=(0x02, 0x10))
    p.client(cport=2, flags="S", damage=(0x04, 1, 0x00, 0x10, 0xff, 0x00, 0x22, 0x45, 1))
    p.client(cport=3, flags="S", damage=(0x08, 0x00, 0x20))
    p.client(cport=4, flags="S", damage=(0x10 | 0x20 | 0x40, 2, 0))
    p.raw(bytes(range(60))).raw(b"\xff" * 14 + b"\x08\x00\x45", port=1)
    s["damaged"] = p
    # Tunnel: a flow, errors from a router between lbd and the backend about lbd's IPIP packet
    # (fragmentation needed: to the client, MTU - 20) and from one between the backend and the
    # client about the backend's packet from the VIP (tunnelled to the backend).
    p = Program()
    p.client(dest="tunnel", flags="S").client(dest="tunnel", flags="A", seq=2)
    p.client(dest="tunnel", flags="PA", seq=2, payload=20)
    p.error(0, kind=0, sender=0).error(1, kind=5, cut=0x40, sender=1)
    p.error(made_up=(0, "tunnel", 0, 0, 7, "A"), kind=1 | 2 << 3, sender=12)
    p.error(made_up=(2, "tunnel", 0, 0, 7, "PA"), kind=0, sender=0)
    s["tunnel_flow_and_errors"] = p
    # Full-NAT: a flow through the backend's answers to the local address, then errors about
    # lbd's packets both ways (to the client from the VIP; to the backend from the local address).
    p = Program()
    p.arp(1, sender=1, target=1, port=1)  # 10.20.0.14, a full-NAT backend, known from ARP only
    p.client(dest="fullnat", flags="S").backend_answers().client_answers("A")
    p.client(dest="fullnat", flags="PA", seq=2, payload=10)
    p.backend_answers("PA", to_syn=False, payload=10)
    p.error(1, kind=0, sender=0).error(1, kind=5, sender=12, cut=0x40)
    p.error(made_up=(1 | 4, "fullnat", 0, 0, 9, "A"), kind=2, sender=0)
    s["fullnat_flow_and_errors"] = p
    # dnat, two workers: errors both ways, and not as the RFCs say: to another address, from
    # the other side, cut short, damaged, of another type; errors about made-up packets.
    p = Program(TWO_WORKERS)
    p.client(flags="S").backend_answers().client_answers("A")
    p.client(flags="PA", seq=2, payload=10).backend_answers("PA", to_syn=False, payload=10)
    p.error(1, kind=0 | 1 << 3).error(1, kind=6, sender=3, cut=0x81)
    p.error(3, kind=2, wrong=2).error(3, kind=3, other_side=True)
    p.error(3, kind=4, dmg=((21, 1),), fix=True).error(3, any_type=(12, 0), dmg=((5, 2),))
    for how in range(4):
        p.error(made_up=(how, "web", 1, 1, 0, "S"), kind=how)
    s["dnat_errors"] = p
    return {k: bytes(v.b) for k, v in s.items()}


# --- config ------------------------------------------------------------------------------------

def config_seeds(root):
    s = {}
    for name in ("minimal.cfg", "demo.cfg", "full.cfg"):
        with open(os.path.join(root, "config", "examples", name), "rb") as f:
            s["example_" + name.replace(".cfg", "")] = f.read()
    s["two_services"] = b"""dataplane: { workers = 2;
  ports = ( { name = "c"; device = "net_null0"; ip = "10.10.0.1/24"; },
            { name = "b"; device = "net_null1"; ip = "10.20.0.1/24"; gateway = "10.20.0.254"; } );
  flows = { capacity = 4096; tcp_syn_timeout = 3; }; retry = { on_rst = false; };
  miss_policy = "rst"; no_backend_policy = "drop"; };
services = (
  { name = "web"; vip = "10.10.0.100"; port = 80; scheduler = "lc";
    health = { path = "/h"; interval_ms = 200; expect_status = "200-204"; passive = { syn_rst = 3; }; };
    backends = ( { address = "10.20.0.11"; port = 8080; weight = 5; state = "drain"; },
                 { address = "192.0.2.9"; port = 80; initial_state = "down"; } ); },
  { name = "api"; vip = "10.10.0.101"; port = 443; on_all_down = "fail_open"; maint = "drop";
    backends = ( { address = "10.20.0.12"; port = 8443; state = "maint"; } ); } );
healthd = { control_socket = "/run/lbd/x.sock"; socket_mode = 0600; state_file = ""; };
"""
    s["errors"] = b"""dataplane: { ports = ( { name = "c"; ip = "10.10.0.1/33"; } ); };
services = ( { name = "web"; vip = "10.10.0.1"; port = 70000; backends = ( { address = "x"; } ); } );
"""
    return s


# --- control: JSON lines for lb-healthd's control socket ---------------------------------------

def control_seeds():
    def lines(*reqs):
        return "".join(json.dumps(r) + "\n" for r in reqs).encode()
    b = {"address": "10.20.0.14", "port": 8080, "weight": 3}
    s = {
        "ping_status": lines({"cmd": "ping", "id": 1}, {"cmd": "status"}),
        "backend_changes": lines(
            {"cmd": "backend.add", "service": "web", "backend": b},
            {"cmd": "backend.set", "service": "web", "address": "10.20.0.14", "port": 8080,
             "weight": 0, "state": "drain"},
            {"cmd": "backend.set", "service": "web", "address": "10.20.0.14", "port": 8080,
             "initial_state": None},
            {"cmd": "backend.remove", "service": "web", "address": "10.20.0.14", "port": 8080},
            {"cmd": "backend.add", "service": "web", "backend": b, "wait": True, "timeout_ms": 1}),
        "service_changes": lines(
            {"cmd": "service.add", "service": {"name": "mail", "vip": "10.10.0.102", "port": 25,
                                               "backends": [b]}},
            {"cmd": "service.set", "name": "web", "set": {"scheduler": "rr",
                                                          "health": {"interval_ms": 500}}},
            {"cmd": "service.remove", "name": "api"}),
        "config": lines({"cmd": "config.diff"}, {"cmd": "config.show"},
                        {"cmd": "config.reload", "replace": True}, {"cmd": "config.save"}),
        "malformed": b'{"cmd": "nope"}\nnot json\n[1,2]\n{"cmd": 5}\n\n{"cmd":"ping","x":1}\n'
                     b'{"cmd": "backend.add", "service": "web", "backend": {"address": "1.2.3"}}\n'
                     b'[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n'
                     b'{"cmd": "ping"}\x00\n{"cmd": "status"}',
    }
    return s


# --- pool_update: ServiceUpdate records (channel/shm_abi.h, little-endian x86) ----------------

def update(generation, name, vip, port, backends, scheduler=0, flags=0, count=None, full=True):
    rec = struct.pack("<Q48sIHBBII", generation, name.encode(), vip, port, scheduler, flags,
                      len(backends) if count is None else count, 0)
    for ip, bport, weight, state in backends:
        rec += struct.pack("<IHHB3x", ip, bport, weight, state)
    if full:
        rec += b"\0" * (3144 - len(rec))
    return rec


def ip(a, b, c, d):
    return a << 24 | b << 16 | c << 8 | d


def pool_update_seeds():
    web = [(ip(10, 20, 0, 11), 8080, 1, 0), (ip(10, 20, 0, 12), 8080, 2, 1),
           (ip(10, 20, 0, 13), 8080, 1, 2), (ip(192, 0, 2, 9), 80, 1, 0)]
    return {
        "one_service": update(1, "web", ip(10, 10, 0, 100), 80, web, full=False),
        "add_then_remove": update(1, "api", ip(10, 10, 0, 101), 443, web[:1], scheduler=1)
        + update(2, "api", 0, 0, [], flags=1, full=False),
        "clash_and_bad": update(3, "web", ip(10, 10, 0, 100), 80, web[:2], scheduler=3)
        + update(4, "web2", ip(10, 10, 0, 100), 80, web[2:], full=False),
        "malformed": update(5, "x", ip(10, 10, 0, 100), 80, [(0, 0, 0, 9)], scheduler=7,
                            count=300, full=False),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    root = os.path.normpath(os.path.join(here, "..", ".."))
    for target, seeds in (("packet", packet_seeds()), ("config", config_seeds(root)),
                          ("control", control_seeds()), ("pool_update", pool_update_seeds())):
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            os.remove(os.path.join(d, old))
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds, {sum(len(v) for v in seeds.values())} bytes")


if __name__ == "__main__":
    main()
