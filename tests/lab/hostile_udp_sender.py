"""Hostile datagrams at a host's managed UDP port, sent with scapy from inside a lab node.

``python hostile_udp_sender.py TARGET_IP PORT IFACE OUT.json``

First it listens on IFACE for one STUN Binding request towards TARGET:PORT (the live
client's consent check crosses the private link in clear) to learn the session's
USERNAME, as an on-path attacker could. Then it sends each kind of bad datagram from
its own address and writes how many of each it sent. Used by test_hostile_udp.py.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import time

from scapy.all import IP, UDP, Raw, conf, fragment, sniff  # noqa: E402
from scapy.supersocket import L3RawSocket

COOKIE = 0x2112A442


def stun(method_class: int, attrs: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHI12s", method_class, len(attrs) if length is None else length, COOKIE,
                       os.urandom(12)) + attrs


def attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes((4 - len(value) % 4) % 4)


def username_of(payload: bytes) -> str | None:
    """USERNAME attribute of a STUN message, if any."""
    pos = 20
    while pos + 4 <= len(payload):
        kind, n = struct.unpack_from("!HH", payload, pos)
        if kind == 0x0006:
            return payload[pos + 4:pos + 4 + n].decode()
        pos += 4 + n + (4 - n % 4) % 4
    return None


def dtls_record(content_type: int, version: bytes, body: bytes, length: int | None = None) -> bytes:
    # type | version | epoch(2) | sequence(6) | length(2) | fragment
    return (bytes([content_type]) + version + b"\x00\x00" + os.urandom(6)
            + struct.pack("!H", len(body) if length is None else length) + body)


def client_hello() -> bytes:
    body = (b"\xfe\xfd" + os.urandom(32) + b"\x00" + b"\x00" + b"\x00\x02\xc0\x2b" + b"\x01\x00")
    hs = bytes([1]) + struct.pack("!I", len(body))[1:] + b"\x00\x00" + b"\x00\x00\x00" + struct.pack("!I", len(body))[1:] + body
    return dtls_record(22, b"\xfe\xfd", hs)


def main() -> int:
    target, port, iface, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def is_check(p) -> bool:
        return (p.haslayer(UDP) and p[UDP].dport == port and p.haslayer(IP) and p[IP].dst == target
                and len(bytes(p[UDP].payload)) >= 20 and bytes(p[UDP].payload)[:2] == b"\x00\x01")

    got = sniff(iface=iface, lfilter=is_check, count=1, timeout=20)
    username = username_of(bytes(got[0][UDP].payload)) if got else None
    if not username or ":" not in username:
        print(json.dumps({"error": "no STUN check seen", "sniffed": len(got)}), flush=True)
        return 1
    host_uf, client_uf = username.split(":", 1)
    client_addr = (got[0][IP].src, got[0][UDP].sport)

    conf.L3socket = L3RawSocket          # the kernel routes, inside this namespace
    sock = conf.L3socket()
    rng = random.Random(7)
    sent: dict[str, int] = {}

    def send(kind: str, payload: bytes, n: int = 1, frag: bool = False) -> None:
        for _ in range(n):
            pkt = IP(dst=target) / UDP(sport=rng.randrange(20000, 60000), dport=port) / Raw(payload)
            for piece in (fragment(pkt, fragsize=1400) if frag else [pkt]):
                sock.send(piece)
            sent[kind] = sent.get(kind, 0) + 1

    t0 = time.monotonic()
    mi = lambda: attr(0x0008, os.urandom(20))  # noqa: E731  forged MESSAGE-INTEGRITY
    send("empty", b"", 50)
    for _ in range(300):
        send("not_stun_or_dtls", bytes([rng.randrange(64, 256)]) + os.urandom(rng.randrange(0, 300)))
        send("random", os.urandom(rng.randrange(1, 600)))
    send("oversized_not_stun_or_dtls", b"\x80" + os.urandom(40000), 5, frag=True)
    send("oversized_stun_malformed", b"\x00\x01" + os.urandom(30000), 5, frag=True)
    for _ in range(100):
        body = attr(0x0006, b"nobody:evil") + mi()
        send("stun_truncated", stun(0x0001, body)[:rng.randrange(1, 20 + len(body) - 1)])
        send("stun_length_lie", stun(0x0001, body, length=len(body) + 4 * rng.randrange(1, 50)))
        send("stun_unaligned_length", stun(0x0001, body + b"\x00\x00\x00", length=len(body) + 3))
        send("stun_not_binding_request", stun(rng.choice([0x0011, 0x0101, 0x0111, 0x0003]), body))
        send("stun_unauthenticated", stun(0x0001, attr(0x0006, username.encode())))
        send("stun_unknown_username", stun(0x0001, attr(0x0006, f"nobody{rng.randrange(1000)}:{client_uf}".encode()) + mi()))
        send("stun_bad_integrity", stun(0x0001, attr(0x0006, username.encode()) + mi()))
        send("stun_wrong_remote_ufrag", stun(0x0001, attr(0x0006, f"{host_uf}:evil".encode()) + mi()))
        send("dtls_bad_content_type", dtls_record(rng.choice([20, 33, 50, 63]), b"\xfe\xfd", os.urandom(40)))
        send("dtls_bad_version", dtls_record(23, rng.choice([b"\x03\x03", b"\x00\x00", b"\xff\xff"]), os.urandom(40)))
        send("dtls_bad_length", dtls_record(23, b"\xfe\xfd", os.urandom(40), length=rng.choice([0, 1, 2000, 65535])))
        send("dtls_client_hello_unknown_peer", client_hello())
    # a Binding flood naming no session, as fast as this process can send
    flood = stun(0x0001, attr(0x0006, b"flood:flood") + mi())
    for _ in range(3000):
        sock.send(IP(dst=target) / UDP(sport=rng.randrange(20000, 60000), dport=port) / Raw(flood))
    sent["stun_binding_flood"] = 3000
    if "--spoof" in sys.argv:
        # Records forged with the live client's own source address (an on-path attacker
        # that can spoof): they reach the session's DTLS, which must discard them.
        for _ in range(100):
            for payload in (dtls_record(23, b"\xfe\xfd", os.urandom(rng.randrange(1, 300))),
                            dtls_record(21, b"\xfe\xfd", os.urandom(2)),
                            client_hello(),
                            dtls_record(23, b"\xfe\xfd", os.urandom(40), length=65535)):
                sock.send(IP(src=client_addr[0], dst=target) / UDP(sport=client_addr[1], dport=port) / Raw(payload))
        sent["spoofed_dtls_from_client_address"] = 400
    sock.close()
    with open(out, "w") as f:
        json.dump({"sent": sent, "username_seen": True, "seconds": round(time.monotonic() - t0, 2)}, f)
    print(json.dumps({"done": True, "sent_total": sum(sent.values())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
