"""RFC 5780-style NAT behaviour discovery: a small UDP probe server and client.

The server listens on two addresses x two ports of the core (A1:P1, A1:P2, A2:P1, A2:P2).  It
answers each request with the source address it saw ("mapped") and can answer from another of
its sockets, like STUN's CHANGE-REQUEST.  Messages are JSON in one UDP datagram::

    client -> server  {"t": <txid>, "reply": "same" | "other-addr-port" | "other-port"}
    server -> client  {"t": <txid>, "mapped": [ip, port], "from": [ip, port], "control": bool}

For "other-*" the server first sends the answer from the other socket, then a *control* answer
from the socket that received the request.  The control answer proves the request arrived and
the other answer was sent; the client then waits only a short grace period for the other answer
instead of a long timeout.

Classification (RFC 5780 sec. 4.3 and 4.4), each test on its own fresh client socket:

  mapping:   M1 = mapped seen by A1:P1, M2 by A2:P1, M3 by A2:P2.
             M1 == local address -> "none" (no NAT); M1 == M2 -> endpoint-independent;
             M2 == M3 -> address-dependent; else address-and-port-dependent.
  filtering: after contacting only A1:P1, ask for an answer from A2:P2: arrives ->
             endpoint-independent.  Else (new socket) ask for an answer from A1:P2: arrives ->
             address-dependent, else address-and-port-dependent.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
from dataclasses import asdict, dataclass

from .nat import AD, APD, EI, NONE

DEFAULT_PORTS = (3480, 3481)


def serve(a1: str, a2: str, p1: int, p2: int) -> None:
    socks = {}
    for addr in (a1, a2):
        for port in (p1, p2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            socks[(addr, port)] = s
    other = {a1: a2, a2: a1}
    otherp = {p1: p2, p2: p1}
    print("READY", json.dumps([list(k) for k in socks]), flush=True)
    while True:
        ready, _, _ = select.select(list(socks.values()), [], [])
        for s in ready:
            try:
                data, src = s.recvfrom(2048)
                req = json.loads(data)
            except (OSError, ValueError):
                continue
            here = s.getsockname()
            mode = req.get("reply", "same")
            base = {"t": req.get("t"), "mapped": list(src)}
            if mode == "other-addr-port":
                alt = (other[here[0]], otherp[here[1]])
            elif mode == "other-port":
                alt = (here[0], otherp[here[1]])
            else:
                alt = None
            if alt is not None:
                socks[alt].sendto(json.dumps({**base, "from": list(alt), "control": False})
                                  .encode(), src)
            s.sendto(json.dumps({**base, "from": list(here), "control": alt is not None})
                     .encode(), src)


class ProbeTimeout(RuntimeError):
    pass


def _query(sock: socket.socket, server: tuple[str, int], mode: str = "same",
           tries: int = 5, rto: float = 0.2, grace: float = 0.15):
    """Return (mapped, control_reply, other_reply_or_None)."""
    txid = os.urandom(6).hex()
    msg = json.dumps({"t": txid, "reply": mode}).encode()
    alt_reply = None
    for _ in range(tries):
        sock.sendto(msg, server)
        deadline = time.monotonic() + rto
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([sock], [], [], left)
            if not r:
                break
            data, src = sock.recvfrom(2048)
            try:
                rep = json.loads(data)
            except ValueError:
                continue
            if rep.get("t") != txid:
                continue
            if mode != "same" and not rep.get("control"):
                alt_reply = rep
                continue
            if mode != "same" and alt_reply is None:
                # The other answer was sent before this one; give it a short grace period.
                end = time.monotonic() + grace
                while alt_reply is None and (left2 := end - time.monotonic()) > 0:
                    r2, _, _ = select.select([sock], [], [], left2)
                    if not r2:
                        break
                    d2, _ = sock.recvfrom(2048)
                    try:
                        rep2 = json.loads(d2)
                    except ValueError:
                        continue
                    if rep2.get("t") == txid and not rep2.get("control"):
                        alt_reply = rep2
            return tuple(rep["mapped"]), rep, alt_reply
    raise ProbeTimeout(f"no answer from probe server {server[0]}:{server[1]} ({mode})")


def _sock(bind_ip: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind_ip, 0))
    return s


def _local_ip_towards(ip: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))
        return s.getsockname()[0]


@dataclass
class NatReport:
    mapping: str
    filtering: str
    local: tuple[str, int]
    mapped: tuple[str, int]
    mapped_by_endpoint: dict

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> "NatReport":
        d = json.loads(s)
        d["local"] = tuple(d["local"])
        d["mapped"] = tuple(d["mapped"])
        return cls(**d)


def classify(a1: str, a2: str, p1: int = DEFAULT_PORTS[0], p2: int = DEFAULT_PORTS[1],
             bind_ip: str | None = None) -> NatReport:
    bind_ip = bind_ip or _local_ip_towards(a1)
    with _sock(bind_ip) as s:
        local = s.getsockname()
        m1, _, _ = _query(s, (a1, p1))
        m2, _, _ = _query(s, (a2, p1))
        m3, _, _ = _query(s, (a2, p2))
    if tuple(m1) == tuple(local) and m1 == m2 == m3:
        mapping = NONE
    elif m1 == m2:
        mapping = EI
    elif m2 == m3:
        mapping = AD
    else:
        mapping = APD
    with _sock(bind_ip) as s:
        _, _, alt = _query(s, (a1, p1), "other-addr-port")
    if alt is not None:
        filtering = EI
    else:
        with _sock(bind_ip) as s:
            _, _, alt = _query(s, (a1, p1), "other-port")
        filtering = AD if alt is not None else APD
    return NatReport(mapping, filtering, tuple(local), tuple(m1),
                     {f"{a1}:{p1}": list(m1), f"{a2}:{p1}": list(m2), f"{a2}:{p2}": list(m3)})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.probe")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("server", "client"):
        sp = sub.add_parser(name)
        sp.add_argument("--addr", required=True, help="primary server address (A1)")
        sp.add_argument("--alt", required=True, help="alternate server address (A2)")
        sp.add_argument("--port", type=int, default=DEFAULT_PORTS[0])
        sp.add_argument("--alt-port", type=int, default=DEFAULT_PORTS[1])
    a = p.parse_args(argv)
    if a.cmd == "server":
        serve(a.addr, a.alt, a.port, a.alt_port)
        return 0
    try:
        rep = classify(a.addr, a.alt, a.port, a.alt_port)
    except ProbeTimeout as e:
        print(json.dumps({"error": str(e)}))
        return 2
    print(rep.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
