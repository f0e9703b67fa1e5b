"""Typed control messages carried in CONTROL frames (peer <-> gateway).

Each message is a frozen dataclass with a ``TYPE`` string; on the wire it is a
JSON object ``{"type": TYPE, ...fields}``. :func:`parse` validates every field's
type and rejects unknown types and missing fields with a RemoteError, so
handler code only ever sees well-formed messages.

Conversations (-> is peer to gateway, <- gateway to peer):

host control channel::

    -> RegisterHost(token, host_id, fingerprint, version)
    <- RegisterChallenge(nonce)                                  | Error
    -> RegisterProof(certificate, signature)
    <- Registered(host_id, heartbeat_interval, signing_key, gateway_id) | Error
    -> Heartbeat(seq, sessions)  <- HeartbeatAck(seq)           (every interval)
    <- Dial(conn_id, session_id, user, policy)   -> DialResult(conn_id, ok, reason)
    <- Error(...)  then close: registration revoked, token expired, or taken
                   over by a newer registration of the same host (with proof)

client::

    -> ClientHello(token)   <- Welcome(user) | Error
    -> FeedRequest()        <- Feed(resources)
    -> Launch(resource)     <- Launched(...) then the connection is a relay leg | Error

host data leg (a new connection per session)::

    -> LegHello(conn_id)    <- LegAccepted(session_id) then relay | Error

Message table (peer -> gateway unless marked <-):

==================  =====================================================================
type                fields
==================  =====================================================================
register            token (host token), host_id, fingerprint ("sha-256 <hex>"), version
<- register-        nonce: 64 hex digits, fresh per registration attempt
   challenge
register-proof      certificate: PEM of the host's end-to-end TLS certificate (its SHA-256
                    must be the registered fingerprint); signature: base64url signature by
                    that certificate's key over auth/proof.py's challenge_message(gateway_id,
                    host_id, fingerprint, nonce)
<- registered       host_id, heartbeat_interval, signing_key (hex Ed25519), gateway_id
heartbeat           seq, sessions      <- heartbeat-ack: seq
<- dial             conn_id, session_id, user, policy,   dial-result: conn_id, ok, reason
                   gateway ("" or host:port to dial the data leg to)
client-hello        token, version     <- welcome: user
feed-request        (none)             <- feed: resources
launch              resource           <- launched: session_id, host_id, host_fingerprint,
                                          ticket, policy
leg-hello           conn_id            <- leg-accepted: session_id, client ("" | "browser")
resume              session_id, ticket <- resume-challenge: nonce (a first message, no user
                                          token: the resume ticket is the credential, #15)
resume-proof        signature          <- resumed: session_id, host_id, ticket (a fresh
                                          one), then the connection is a relay leg | error
                                          (bad-signature, token-expired, ticket-replayed,
                                          wrong-client, no-resources)
<- resume-ticket    session_id, ticket  (gateway -> host while the session lives; the host
                                          passes it to its client inside the session)
probe               seq                <- probe-ack: seq, connections, gateway (no token: a
                                          client measuring latency and load to choose a gateway;
                                          at most 16 per connection, then it is closed)
<- error            code, message, reason
==================  =====================================================================

Resume (#15, auth/resume.py): launch.resume_key (the client's per-session
Ed25519 public key, hex) and launched.resume_ticket are optional ("" = no
resume); dial.resume is {} for a launch, or {"ticket", "nonce", "signature"}
for a resume: the host dials a new leg for its live session after checking
them itself.

History: dial.gateway (issue #14, gateway clusters) is optional; a host that
ignores it dials its own gateway, which then refuses the unknown conn_id.
register-challenge / register-proof (issue #11) sit between register
and registered: a host proves it holds its certificate's key. A host from
before that change does not answer the challenge and is not registered.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import MalformedFrame, UnknownFrame
from .frames import FrameType, encode


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["type"] = self.TYPE
        return d

    def encode(self) -> bytes:
        return encode(FrameType.CONTROL, json.dumps(self.to_dict(), separators=(",", ":")).encode())


_REGISTRY: dict[str, type[Message]] = {}


def message(cls):
    cls = dataclass(frozen=True)(cls)
    _REGISTRY[cls.TYPE] = cls
    return cls


# --- host control channel ----------------------------------------------------

@message
class RegisterHost(Message):
    TYPE: ClassVar[str] = "register"
    token: str
    host_id: str
    fingerprint: str
    version: str = ""


@message
class RegisterChallenge(Message):
    TYPE: ClassVar[str] = "register-challenge"
    nonce: str        # fresh random hex; signed by the host (auth/proof.py)


@message
class RegisterProof(Message):
    TYPE: ClassVar[str] = "register-proof"
    certificate: str  # PEM of the host's certificate (hashes to the registered fingerprint)
    signature: str    # base64url signature over proof.challenge_message(...) with its key


@message
class Registered(Message):
    TYPE: ClassVar[str] = "registered"
    host_id: str
    heartbeat_interval: float
    signing_key: str  # gateway's Ed25519 public key (hex), to check session tickets
    gateway_id: str   # audience of the session tickets the host will be shown


@message
class Heartbeat(Message):
    TYPE: ClassVar[str] = "heartbeat"
    seq: int
    sessions: int


@message
class HeartbeatAck(Message):
    TYPE: ClassVar[str] = "heartbeat-ack"
    seq: int


@message
class Dial(Message):
    TYPE: ClassVar[str] = "dial"
    conn_id: str
    session_id: str
    user: str
    policy: dict = field(default_factory=dict)
    #: host:port of the gateway to dial the data leg to (a gateway cluster: the
    #: one the client is on, issue #14); "" = the gateway of this control channel
    gateway: str = ""
    #: {} for a launch; for a resume (#15) {"ticket", "nonce", "signature"}: the leg
    #: is a new relay leg for the live session ``session_id``
    resume: dict = field(default_factory=dict)


@message
class DialResult(Message):
    TYPE: ClassVar[str] = "dial-result"
    conn_id: str
    ok: bool
    reason: str = ""


@message
class TurnCredentials(Message):
    """Gateway -> host, while a session lives: a fresh TURN REST credential for it
    (issue #11: credentials are short-lived and re-minted, not minted once for long)."""
    TYPE: ClassVar[str] = "turn-credentials"
    session_id: str
    username: str
    password: str


# --- gateway probe (gateway choice, issue #14) ---------------------------------

@message
class Probe(Message):
    TYPE: ClassVar[str] = "probe"
    seq: int


@message
class ProbeAck(Message):
    TYPE: ClassVar[str] = "probe-ack"
    seq: int
    connections: int = 0     # the gateway's open connections (its load)
    gateway: str = ""        # its name in a cluster ("" when alone)


# --- client ------------------------------------------------------------------

@message
class ClientHello(Message):
    TYPE: ClassVar[str] = "client-hello"
    token: str
    version: str = ""


@message
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    user: str


@message
class FeedRequest(Message):
    TYPE: ClassVar[str] = "feed-request"


@message
class Feed(Message):
    TYPE: ClassVar[str] = "feed"
    resources: list  # list of {"name": str, "kind": "pooled"|"personal"}


@message
class Launch(Message):
    TYPE: ClassVar[str] = "launch"
    resource: str
    #: the client's per-session Ed25519 public key (hex) for resume tickets; "" = none
    resume_key: str = ""


@message
class Launched(Message):
    TYPE: ClassVar[str] = "launched"
    session_id: str
    host_id: str
    host_fingerprint: str
    ticket: str
    policy: dict = field(default_factory=dict)
    #: resume ticket bound to launch.resume_key (auth/resume.py); "" = no resume
    resume_ticket: str = ""


# --- resume (#15) -------------------------------------------------------------

@message
class Resume(Message):
    """Client -> gateway, first message of a connection: bring a live session back."""
    TYPE: ClassVar[str] = "resume"
    session_id: str
    ticket: str


@message
class ResumeChallenge(Message):
    TYPE: ClassVar[str] = "resume-challenge"
    nonce: str        # fresh random hex; the client signs auth/resume.py's proof_message


@message
class ResumeProof(Message):
    TYPE: ClassVar[str] = "resume-proof"
    signature: str    # base64url Ed25519 signature by the key the ticket is bound to


@message
class Resumed(Message):
    TYPE: ClassVar[str] = "resumed"
    session_id: str
    host_id: str
    ticket: str       # a fresh resume ticket (the one presented is used up)


@message
class ResumeTicket(Message):
    """Gateway -> host while a session lives: a fresh resume ticket for its client."""
    TYPE: ClassVar[str] = "resume-ticket"
    session_id: str
    ticket: str


# --- host data leg -----------------------------------------------------------

@message
class LegHello(Message):
    TYPE: ClassVar[str] = "leg-hello"
    conn_id: str


@message
class LegAccepted(Message):
    TYPE: ClassVar[str] = "leg-accepted"
    session_id: str
    #: "" = a native client (end-to-end TLS inside the relay follows); "browser" = a
    #: browser over WebRTC: SIGNAL frames with SDP follow (gateway/web.py, host/browser.py)
    client: str = ""


# --- both --------------------------------------------------------------------

@message
class Error(Message):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    reason: str = ""


def _check(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, dict):
        return isinstance(value, origin)
    if isinstance(annotation, types.UnionType):
        return any(_check(value, a) for a in typing.get_args(annotation))
    return isinstance(value, annotation)


_HINTS: dict[type, dict[str, Any]] = {}

#: Deepest list/dict nesting a control message field may carry. JSON parses far
#: deeper than anything here needs, and a value nested ~1000 deep parses but then
#: breaks every recursive consumer (dataclasses.asdict, json.dumps) with an
#: untyped RecursionError.
MAX_NESTING = 16


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth > MAX_NESTING:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def from_dict(obj: dict) -> Message:
    """Validate a decoded JSON object and build its message."""
    mtype = obj.get("type")
    if not isinstance(mtype, str):
        raise MalformedFrame("control message without a string 'type'")
    cls = _REGISTRY.get(mtype)
    if cls is None:
        raise UnknownFrame(f"unknown control message {mtype!r}")
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in obj:
            value = obj[f.name]
            if not _check(value, hints[f.name]):
                raise MalformedFrame(f"{mtype}.{f.name} has the wrong type")
            if isinstance(value, (list, dict)) and _too_deep(value):
                raise MalformedFrame(f"{mtype}.{f.name} is nested too deeply")
            kwargs[f.name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise MalformedFrame(f"{mtype} is missing field {f.name!r}")
    return cls(**kwargs)


def parse(payload: bytes) -> Message:
    """Parse a CONTROL frame payload."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedFrame(f"control payload is not UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise MalformedFrame("control payload must be a JSON object")
    return from_dict(obj)


def all_message_types() -> dict[str, type[Message]]:
    return dict(_REGISTRY)
