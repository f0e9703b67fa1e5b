"""Tiny UDP/TCP echo server and client for reachability checks in the lab.

Server (prints READY; answers every UDP datagram / TCP line with "seen <ip>:<port> <data>")::

    python -m netns_lab.echo server --bind 198.18.0.10 --udp 9 --tcp 443 --tcp 8443

Client, one shot (prints JSON {"ok": bool, "reply": str|None}; exit 0 if answered)::

    python -m netns_lab.echo client --to 198.18.0.10 --port 443 --proto tcp --timeout 0.5

Client, session (keeps ONE socket/connection; each stdin line is sent, the answer or TIMEOUT
printed), for toggling firewalls mid-session::

    python -m netns_lab.echo session --to 198.18.0.10 --port 9 --proto udp --timeout 0.5
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys


def serve(bind: str, udp_ports: list[int], tcp_ports: list[int]) -> None:
    udp = []
    for p in udp_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((bind, p))
        udp.append(s)
    listeners = []
    for p in tcp_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind, p))
        s.listen(64)
        listeners.append(s)
    conns: dict[socket.socket, tuple] = {}
    print("READY", flush=True)
    while True:
        r, _, _ = select.select(udp + listeners + list(conns), [], [])
        for s in r:
            if s in udp:
                data, src = s.recvfrom(65536)
                s.sendto(f"seen {src[0]}:{src[1]} ".encode() + data, src)
            elif s in listeners:
                c, src = s.accept()
                conns[c] = src
            else:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    conns.pop(s, None)
                    s.close()
                    continue
                src = conns[s]
                try:
                    s.sendall(f"seen {src[0]}:{src[1]} ".encode() + data)
                except OSError:
                    pass


def _exchange(sock: socket.socket, proto: str, to, msg: bytes, timeout: float) -> str | None:
    try:
        if proto == "udp":
            sock.sendto(msg, to)
        else:
            sock.sendall(msg)
    except OSError:
        return None
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return None
    try:
        data = sock.recv(65536)
    except OSError:
        return None
    return data.decode(errors="replace").strip() or None


def _connect(proto: str, to, timeout: float) -> socket.socket | None:
    if proto == "udp":
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(to)
    except OSError:
        s.close()
        return None
    s.settimeout(None)
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.echo")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", required=True)
    s.add_argument("--udp", type=int, action="append", default=[])
    s.add_argument("--tcp", type=int, action="append", default=[])
    for name in ("client", "session"):
        c = sub.add_parser(name)
        c.add_argument("--to", required=True)
        c.add_argument("--port", type=int, required=True)
        c.add_argument("--proto", choices=["udp", "tcp"], default="udp")
        c.add_argument("--timeout", type=float, default=0.5)
        c.add_argument("--msg", default="ping")
    a = p.parse_args(argv)
    if a.cmd == "server":
        serve(a.bind, a.udp, a.tcp)
        return 0
    to = (a.to, a.port)
    sock = _connect(a.proto, to, a.timeout)
    if a.cmd == "client":
        reply = _exchange(sock, a.proto, to, a.msg.encode(), a.timeout) if sock else None
        print(json.dumps({"ok": reply is not None, "reply": reply}))
        return 0 if reply is not None else 1
    print("CONNECTED" if sock else "CONNECT-FAILED", flush=True)
    for line in sys.stdin:
        reply = _exchange(sock, a.proto, to, line.strip().encode(), a.timeout) if sock else None
        print(reply if reply is not None else "TIMEOUT", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
