"""``shortpath netcheck``: what this network lets a session do (issue #14; in the
spirit of Tailscale's ``netcheck`` and AVD's ``avdnettest``).

Checks, each reported with what it saw or why it failed:

* **UDP**: a STUN Binding to the STUN server answers -> UDP works, and the
  server-reflexive (mapped) address.
* **NAT behaviour** (RFC 5780 sections 4.3/4.4) against a STUN server with two
  addresses (coturn with two ``listening-ip``; its responses carry OTHER-ADDRESS):
  mapping from the addresses seen by A1:P1, A2:P1 and A2:P2; filtering by
  asking, on a fresh socket, for answers from A2:P2 (CHANGE-REQUEST ip+port) and
  then from A1:P2 (port only). The two verdicts are pure functions
  (:func:`mapping_behaviour`, :func:`filtering_behaviour`) using the same words
  as netns_lab's NAT types.
* **STUN/TURN over TCP and TLS** (e.g. TLS on 443 when only that is open): a
  STUN Binding over the stream (RFC 5389 framing), with its RTT.
* **Managed Shortpath** port (``--managed IP:PORT``): a STUN Binding to the
  host's managed UDP listener, which answers only authenticated ICE checks: an
  ICMP port-unreachable says ``closed``, silence says ``open-or-filtered``.
* **Gateways**: latency and load of each, and the one the client would pick
  (client/gateway_choice.py, the AVD rule).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from dataclasses import asdict, dataclass

from .netaddr import parse_hostport

NONE, EI, AD, APD = "none", "endpoint-independent", "address-dependent", "address-and-port-dependent"


# --- pure verdicts ----------------------------------------------------------------------

def mapping_behaviour(local: tuple | None, m1: tuple | None, m2: tuple | None, m3: tuple | None) -> str | None:
    """RFC 5780 4.3 from the mapped addresses seen by A1:P1 (m1), A2:P1 (m2), A2:P2 (m3).
    None when the tests could not run (no answer)."""
    if m1 is None:
        return None
    if local is not None and tuple(m1) == tuple(local):
        return NONE
    if m2 is None:
        return None
    if tuple(m1) == tuple(m2):
        return EI
    if m3 is None:
        return None
    return AD if tuple(m2) == tuple(m3) else APD


def filtering_behaviour(from_other_addr_port: bool | None, from_other_port: bool | None) -> str | None:
    """RFC 5780 4.4: an answer from A2:P2 arrives -> endpoint-independent; else one from
    A1:P2 -> address-dependent; else address-and-port-dependent."""
    if from_other_addr_port is None:
        return None
    if from_other_addr_port:
        return EI
    if from_other_port is None:
        return None
    return AD if from_other_port else APD


# --- STUN over UDP ----------------------------------------------------------------------

def _binding(change_ip: bool = False, change_port: bool = False):
    from aioice import stun
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST,
                       transaction_id=os.urandom(12))
    if change_ip or change_port:
        msg.attributes["CHANGE-REQUEST"] = (4 if change_ip else 0) | (2 if change_port else 0)
    return msg


@dataclass
class StunAnswer:
    mapped: tuple[str, int] | None
    other: tuple[str, int] | None      # OTHER-ADDRESS (RFC 5780), None if the server has one address
    source: tuple[str, int]            # where the answer came from
    rtt_ms: float
    error: str = ""                    # a STUN error response (e.g. 401): still an answer


def _parse(data: bytes, txid: bytes):
    from aioice import stun
    try:
        msg = stun.parse_message(data)
    except ValueError:
        return None
    if msg.transaction_id != txid or msg.message_class not in (stun.Class.RESPONSE, stun.Class.ERROR):
        return None     # not ours, or our own request reflected (an echo, a self-connected socket)
    return msg


def _answer(msg, source, t0) -> StunAnswer:
    from aioice import stun
    mapped = msg.attributes.get("XOR-MAPPED-ADDRESS") or msg.attributes.get("MAPPED-ADDRESS")
    other = msg.attributes.get("OTHER-ADDRESS") or msg.attributes.get("CHANGED-ADDRESS")
    err = ""
    if msg.message_class == stun.Class.ERROR:
        code = msg.attributes.get("ERROR-CODE")
        err = f"{code[0]} {code[1]}" if code else "error"
    return StunAnswer(tuple(mapped) if mapped else None, tuple(other) if other else None, tuple(source[:2]),
                      round((time.monotonic() - t0) * 1000, 3), err)


def stun_udp(sock: socket.socket, server: tuple[str, int], *, change_ip: bool = False, change_port: bool = False,
             timeout: float = 0.5, tries: int = 2) -> StunAnswer | None:
    """One Binding transaction on ``sock`` (retransmitted ``tries`` times); None if no answer."""
    req = _binding(change_ip, change_port)
    raw = bytes(req)
    t0 = time.monotonic()
    for _ in range(tries):
        sock.sendto(raw, server)
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, src = sock.recvfrom(2048)
            except (socket.timeout, BlockingIOError):
                break
            except OSError:         # ICMP unreachable surfaces as ECONNREFUSED on Linux
                return None
            msg = _parse(data, req.transaction_id)
            if msg is not None:
                return _answer(msg, src, t0)
    return None


def _udp_sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    return s


def _local_towards(ip: str, port: int) -> tuple[str, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, port))
        return s.getsockname()[0]


def nat_check(stun: str, timeout: float = 0.5) -> dict:
    """UDP reachability and RFC 5780 mapping/filtering against ``stun`` (host:port)."""
    host, port = parse_hostport(stun, 3478)
    ip = socket.gethostbyname(host)
    out: dict = {"server": f"{ip}:{port}", "udp": False, "mapped": None, "mapping": None, "filtering": None,
                 "rtt_ms": None, "note": ""}
    with _udp_sock() as s:
        a1 = stun_udp(s, (ip, port), timeout=timeout)
        if a1 is None:
            out["note"] = "no STUN answer over UDP (UDP blocked, or no STUN server there)"
            return out
        local = (_local_towards(ip, port), s.getsockname()[1])
        out.update(udp=True, mapped=list(a1.mapped) if a1.mapped else None, rtt_ms=a1.rtt_ms)
        if a1.other is None or a1.other[0] == ip:
            out["note"] = "the STUN server has one address (no OTHER-ADDRESS): NAT behaviour not tested"
            if a1.mapped and tuple(a1.mapped) == local:
                out["mapping"] = NONE
            return out
        other_ip, other_port = a1.other
        a2 = stun_udp(s, (other_ip, port), timeout=timeout)
        m2 = a2.mapped if a2 else None
        m3 = None
        if m2 is not None and tuple(m2) != tuple(a1.mapped or ()):
            a3 = stun_udp(s, (other_ip, other_port), timeout=timeout)
            m3 = a3.mapped if a3 else None
        out["mapping"] = mapping_behaviour(local, a1.mapped, m2, m3)
        out["other_address"] = f"{other_ip}:{other_port}"
    def came_from(ans, want_ip, want_port) -> bool:
        # only a real answer from the other socket counts (not an error from the first one)
        return ans is not None and not ans.error and ans.source == (want_ip, want_port)
    with _udp_sock() as s:
        if stun_udp(s, (ip, port), timeout=timeout) is None:
            return out
        both = came_from(stun_udp(s, (ip, port), change_ip=True, change_port=True, timeout=timeout),
                         other_ip, other_port)
    port_only = None
    if not both:
        with _udp_sock() as s:
            if stun_udp(s, (ip, port), timeout=timeout) is not None:
                port_only = came_from(stun_udp(s, (ip, port), change_port=True, timeout=timeout), ip, other_port)
    out["filtering"] = filtering_behaviour(both, port_only)
    return out


# --- STUN over TCP / TLS ----------------------------------------------------------------

async def stun_stream(server: str, *, tls: bool = False, cafile: str | None = None, timeout: float = 3.0) -> dict:
    """A STUN Binding over TCP or TLS (the way a client reaches TURN when UDP is blocked)."""
    host, port = parse_hostport(server, 443 if tls else 3478)
    kind = "tls" if tls else "tcp"
    ctx = None
    if tls:
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
        if cafile:
            ctx.check_hostname = False
    t0 = time.monotonic()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
        connected = time.monotonic()
        req = _binding()
        writer.write(bytes(req))
        head = await asyncio.wait_for(reader.readexactly(20), timeout)
        body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[2:4], "big")), timeout)
        msg = _parse(head + body, req.transaction_id)
        if msg is None:
            return {"transport": kind, "server": f"{host}:{port}", "ok": False, "error": "not a STUN answer"}
        ans = _answer(msg, (host, port), connected)
        return {"transport": kind, "server": f"{host}:{port}", "ok": True, "connect_ms":
                round((connected - t0) * 1000, 3), "rtt_ms": ans.rtt_ms,
                "mapped": list(ans.mapped) if ans.mapped else None}
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        return {"transport": kind, "server": f"{host}:{port}", "ok": False,
                "error": f"{type(exc).__name__}: {exc}"[:120]}
    finally:
        if writer is not None:
            writer.close()


def _connected_udp(host: str, port: int) -> socket.socket:
    """A UDP socket connected to (host, port) whose own address is not that one. On loopback
    the kernel may give the socket the very port it probes; it would then hear its own request
    and never an ICMP error."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((host, port))
        if s.getsockname() == s.getpeername():
            other = _connected_udp(host, port)   # gets another port: this socket still holds that one
            s.close()
            return other
    except BaseException:
        s.close()
        raise
    return s


def managed_check(address: str, timeout: float = 0.5) -> dict:
    """Can UDP reach a host's managed Shortpath port? The managed listener answers only
    authenticated ICE checks, so a STUN Binding gets silence from it; what we can tell:
    ``closed`` (an ICMP port-unreachable came back: nothing listens, or a REJECT rule),
    ``open-or-filtered`` (silence: the listener, or a firewall dropping), ``answered``
    (something answered STUN there)."""
    host, port = parse_hostport(address, 3390)
    req = _binding()
    with _connected_udp(host, port) as s:   # connected: an ICMP error surfaces as ECONNREFUSED
        t0 = time.monotonic()
        verdict, rtt = "open-or-filtered", None
        for _ in range(2):
            try:
                s.send(bytes(req))
                s.settimeout(timeout)
                data = s.recv(2048)
                if _parse(data, req.transaction_id) is not None:
                    verdict, rtt = "answered", round((time.monotonic() - t0) * 1000, 3)
                    break
            except ConnectionRefusedError:
                verdict = "closed"
                break
            except (socket.timeout, OSError):
                continue
    return {"address": f"{host}:{port}", "verdict": verdict, "reachable": verdict != "closed", "rtt_ms": rtt}


# --- the whole report -------------------------------------------------------------------

async def run(*, stun: str | None = None, turn: str | None = None, turn_tls: str | None = None,
              turn_cafile: str | None = None, managed: str | None = None, gateways=(), cafile: str | None = None,
              timeout: float = 0.5) -> dict:
    from .client.gateway_choice import choose, measure
    report: dict = {}
    if stun:
        report["nat"] = await asyncio.to_thread(nat_check, stun, timeout)
    streams = []
    if turn:
        streams.append(stun_stream(turn))
    if turn_tls:
        streams.append(stun_stream(turn_tls, tls=True, cafile=turn_cafile))
    if streams:
        report["stun_streams"] = list(await asyncio.gather(*streams))
    if managed:
        report["managed"] = await asyncio.to_thread(managed_check, managed, timeout)
    if gateways:
        probes = await measure(list(gateways), cafile)
        report["gateways"] = [{**asdict(p), "bucket": p.bucket()} for p in probes]
        try:
            c = choose(probes)
            report["pick"] = {"gateway": c.gateway, "reason": c.reason}
        except Exception as exc:      # nothing answered: say so, the rest of the report stands
            report["pick"] = {"gateway": None, "reason": getattr(exc, "message", str(exc))}
    return report


def format_report(r: dict) -> list[str]:
    lines = []
    nat = r.get("nat")
    if nat:
        lines.append(f"udp         {'yes' if nat['udp'] else 'NO'} (STUN {nat['server']}"
                     + (f", {nat['rtt_ms']} ms, mapped {nat['mapped'][0]}:{nat['mapped'][1]})" if nat["udp"]
                        and nat["mapped"] else ")"))
        lines.append(f"nat         mapping={nat['mapping'] or '?'} filtering={nat['filtering'] or '?'}"
                     + (f"  ({nat['note']})" if nat.get("note") else ""))
    for st in r.get("stun_streams", []):
        lines.append(f"stun/{st['transport']:4}   {st['server']}: "
                     + (f"ok, {st['rtt_ms']} ms (connect {st['connect_ms']} ms)" if st["ok"] else f"FAILED {st['error']}"))
    m = r.get("managed")
    if m:
        lines.append(f"managed     {m['address']}: " + {
            "answered": f"answered STUN in {m['rtt_ms']} ms",
            "open-or-filtered": "no ICMP error (open: the listener answers only ICE checks; or a firewall drops)",
            "closed": "CLOSED (ICMP port unreachable)"}[m["verdict"]])
    for g in r.get("gateways", []):
        lines.append(f"gateway     {g['gateway']}: " + (f"{g['rtt_ms']} ms (bucket {g['bucket']}), "
                                                        f"{g['connections']} connections" if g["rtt_ms"] is not None
                                                        else f"no answer ({g['error']})"))
    if "pick" in r:
        lines.append(f"pick        {r['pick']['gateway'] or 'none'}: {r['pick']['reason']}")
    return lines
