"""UDP upgrade signalling: the messages and their checks, as pure code.

The peers exchange these JSON dicts inside the end-to-end protected session
(the session layer carries them; see docs/udp.md for the table). This module
builds them and checks what the peer sent: no asyncio, no sockets, no aioice.
Everything the peer may get wrong is a :class:`~shortpath.errors.RemoteError`
with a message naming the field.

    udp.hello              ufrag/pwd, DTLS role + sha-256 fingerprint, SCTP port/max size
    udp.candidate          one candidate, trickled as gathered ("managed": true on the
                           host's listener candidate)
    udp.end-of-candidates
    udp.selected           client -> host after ICE: the pair it nominated (informational)
    udp.abort              reason: fingerprint-mismatch | ice-failed | dtls-failed | timeout | ...

:func:`parse` turns one received dict into one of the dataclasses below;
:func:`candidate_use` applies the mode policy to a remote candidate.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional, Union

from shortpath.errors import RemoteError

SIGNAL_VERSION = 1

_FP_RE = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$")
_UFRAG_RE = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD_RE = re.compile(r"[A-Za-z0-9+/]{22,256}")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
#: The longest abort detail we send or keep (the rest is cut).
DETAIL_MAX = 200


# --------------------------------------------------------------------------
# what the peer can send

@dataclass(frozen=True)
class Hello:
    """The peer's ``udp.hello``, checked."""
    role: str               # "client" | "host": the peer's session role
    ufrag: str              # its ICE credentials
    pwd: str
    dtls_role: str          # "server" | "client"
    fingerprint: str        # sha-256 of its DTLS certificate, upper-case hex pairs
    sctp_port: int
    max_message_size: int   # 0 = no limit (RFC 8841)


@dataclass(frozen=True)
class RemoteCandidate:
    """One trickled candidate, checked (UDP only)."""
    foundation: str
    component: int
    priority: int
    ip: str
    port: int
    type: str               # host | srflx | prflx | relay
    raddr: Optional[str] = None
    rport: Optional[int] = None
    managed: bool = False   # the host's shared listener (UDP 3390)

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


@dataclass(frozen=True)
class CandidateMsg:
    candidate: RemoteCandidate
    raw: dict               # as received, for the attempt's record


@dataclass(frozen=True)
class EndOfCandidates:
    pass


@dataclass(frozen=True)
class Selected:
    """The client's report of the pair it nominated (informational)."""
    kind: Optional[str]
    raw: dict


@dataclass(frozen=True)
class Abort:
    reason: str
    detail: str


Message = Union[Hello, CandidateMsg, EndOfCandidates, Selected, Abort]


# --------------------------------------------------------------------------
# building our messages

def hello(*, role: str, ufrag: str, pwd: str, dtls_role: str, fingerprint: str, sctp_port: int,
          max_message_size: int) -> dict:
    return {
        "type": "udp.hello",
        "v": SIGNAL_VERSION,
        "role": role,
        "ice": {"ufrag": ufrag, "pwd": pwd},
        "dtls": {"role": dtls_role, "fingerprint": {"algorithm": "sha-256", "value": fingerprint}},
        "sctp": {"port": sctp_port, "max_message_size": max_message_size},
    }


def candidate(d: dict) -> dict:
    return {"type": "udp.candidate", "candidate": d}


def managed_candidate(ip: str, port: int, priority: int) -> dict:
    """The host's listener candidate: one fixed foundation, flagged ``managed``."""
    return candidate({"foundation": "managed", "component": 1, "protocol": "udp", "priority": priority,
                      "ip": ip, "port": port, "type": "host", "managed": True})


def end_of_candidates() -> dict:
    return {"type": "udp.end-of-candidates"}


def selected(kind: str, local: Optional[dict], remote: Optional[dict]) -> dict:
    return {"type": "udp.selected", "kind": kind, "local": local, "remote": remote}


def abort(reason: str, detail: str = "") -> dict:
    return {"type": "udp.abort", "reason": reason, "detail": detail[:DETAIL_MAX]}


# --------------------------------------------------------------------------
# checking what the peer sent

def parse(msg: object) -> Message:
    """One received signalling dict -> a typed message. Raises RemoteError.

    ``udp.hello`` is returned *unchecked against our own roles*; pass it to
    :func:`check_hello` (which needs them)."""
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind == "udp.hello":
        return parse_hello(msg)  # type: ignore[arg-type]
    if kind == "udp.candidate":
        d = msg.get("candidate")  # type: ignore[union-attr]
        if not isinstance(d, dict):
            raise RemoteError("udp.candidate without candidate")
        return CandidateMsg(parse_candidate(d), dict(d))
    if kind == "udp.end-of-candidates":
        return EndOfCandidates()
    if kind == "udp.selected":
        k = msg.get("kind")  # type: ignore[union-attr]
        return Selected(k if isinstance(k, str) else None, dict(msg))  # type: ignore[arg-type]
    if kind == "udp.abort":
        return Abort(str(msg.get("reason", "unknown")),  # type: ignore[union-attr]
                     str(msg.get("detail", ""))[:DETAIL_MAX])  # type: ignore[union-attr]
    raise RemoteError(f"unknown UDP signalling message {kind!r}")


def parse_hello(msg: dict) -> Hello:
    try:
        if int(msg.get("v", 0)) != SIGNAL_VERSION:
            raise RemoteError(f"unsupported UDP signalling version {msg.get('v')!r}")
        ice, dtls, sctp = msg["ice"], msg["dtls"], msg["sctp"]
        ufrag, pwd = str(ice["ufrag"]), str(ice["pwd"])
        fp = dtls["fingerprint"]
        algorithm, value = str(fp["algorithm"]).lower(), str(fp["value"])
        dtls_role = str(dtls["role"])
        role = str(msg["role"])
        port = int(sctp["port"])
        max_size = int(sctp.get("max_message_size", 65536))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise RemoteError(f"malformed udp.hello: {exc!r}") from None
    if not _UFRAG_RE.fullmatch(ufrag) or not _PWD_RE.fullmatch(pwd):
        raise RemoteError("malformed ICE credentials")
    if algorithm != "sha-256" or not _FP_RE.match(value):
        raise RemoteError("udp.hello needs a sha-256 DTLS fingerprint")
    if not 0 < port < 65536 or max_size < 0:
        raise RemoteError("bad SCTP parameters")
    return Hello(role=role, ufrag=ufrag, pwd=pwd, dtls_role=dtls_role, fingerprint=value.upper(),
                 sctp_port=port, max_message_size=max_size)


def check_hello(h: Hello, *, our_role: str, our_dtls_role: str) -> Hello:
    """The peer must take the other session role and the other DTLS role."""
    if h.role == our_role or h.dtls_role == our_dtls_role:
        raise RemoteError("peer claims our role")
    return h


def parse_candidate(d: dict) -> RemoteCandidate:
    try:
        ip = str(ipaddress.ip_address(d["ip"]))
        port = int(d["port"])
        ctype = str(d["type"])
        protocol = str(d.get("protocol", "udp")).lower()
        foundation = str(d["foundation"])[:32]
        component = int(d.get("component", 1))
        priority = int(d["priority"])
        raddr = d.get("raddr")
        rport = d.get("rport")
        raddr = None if raddr is None else str(raddr)
        rport = None if rport is None else int(rport)
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(f"bad UDP signalling message: malformed candidate: {exc!r}") from None
    if not 0 < port < 65536:
        raise RemoteError("bad UDP signalling message: candidate port out of range")
    if ctype not in CANDIDATE_TYPES:
        raise RemoteError(f"bad UDP signalling message: bad candidate type {ctype!r}")
    if protocol != "udp":
        raise RemoteError("bad UDP signalling message: only UDP candidates are supported")
    return RemoteCandidate(foundation=foundation, component=component, priority=priority, ip=ip,
                           port=port, type=ctype, raddr=raddr, rport=rport, managed=bool(d.get("managed")))


# --------------------------------------------------------------------------
# policy

def candidate_use(c: RemoteCandidate, *, our_role: str, allow_managed: bool, allow_direct: bool,
                  allow_turn: bool, local_relay_only: bool) -> Optional[str]:
    """What to do with a remote candidate under our mode policy.

    Returns "managed" (the host's listener: pair it, remember it as managed),
    "relay" (the peer's TURN candidate: remember it as relayed), "direct", or
    None (ignore it). Only a client pairs with a managed candidate. With
    direct paths off, a host/srflx candidate is still useful when every local
    candidate is a relay (``local_relay_only``): the pair is relayed anyway.
    """
    if c.managed:
        return "managed" if our_role == "client" and allow_managed else None
    if c.type == "relay":
        return "relay" if allow_turn else None
    if not allow_direct and not local_relay_only:
        return None
    return "direct"


def abort_is_fingerprint(a: Abort) -> bool:
    return a.reason == "fingerprint-mismatch"
