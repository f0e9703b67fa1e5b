"""Resume tickets: a client's right to bring a live session back on a new relay leg.

A session outlives its relay leg (a gateway restart, a TCP reset, a client that
changed networks): the client dials a gateway again and asks to *resume* it. What
it shows is a resume ticket, and what makes the ticket worthless to anyone else is
a key only the client holds.

Flow
----
1. At launch the client makes a fresh Ed25519 key pair for this one session and
   sends the public half (``launch.resume_key``, 64 hex digits).
2. The broker mints a ticket (the gateway's token format, auth/tokens.py, type
   ``resume``) bound to the session, the host, the host's certificate fingerprint
   and that public key, and hands it over in ``launched``. Its lifetime is short
   (:func:`ticket_lifetime`); while the session lives the broker mints a fresh one
   at half-life and sends it to the host, which passes it to the client inside the
   session (SIGNAL ``resume-ticket``: end-to-end protected, the gateway relays
   ciphertext only).
3. To resume, the client sends ``resume(session_id, ticket)``; the gateway answers
   with a fresh random nonce; the client signs :func:`proof_message` (gateway id,
   session id, nonce) with its session key. A sniffed ticket without the key gets
   nowhere (:class:`~shortpath.errors.WrongClient`).
4. The broker checks ticket, proof and single use (:func:`check`), then orders the
   host to dial a new data leg, passing ticket, nonce and signature in the dial.
   The host checks them again with its own :class:`ReplayCache`, which lives as long
   as the host does: a gateway restarted from scratch (empty memory) cannot be used
   to replay a ticket the host has seen.

Claims of a ``resume`` ticket (besides ``sub`` = user, ``aud`` = gateway id,
``iat``, ``exp``, ``jti``): ``sid`` session id, ``host`` host id, ``res`` pool,
``fp`` host certificate fingerprint, ``ck`` client public key (hex).

Typed errors: forged ticket or proof -> BadSignature; expired -> TokenExpired;
seen before -> TicketReplayed; proof by another key, or a ticket for another
session/host -> WrongClient; anything malformed -> AuthError.

Pure: no I/O, callers pass ``now``.
"""

from __future__ import annotations

import base64
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import AuthError, BadSignature, TicketReplayed, WrongClient
from .tokens import Claims, ReplayCache, TokenSigner, TokenVerifier

TYP = "resume"
CONTEXT = "shortpath-resume-v1"
#: shortest lifetime of a ticket, seconds (it must outlive a resume grace period)
MIN_LIFETIME = 60.0
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_NONCE_RE = re.compile(r"[0-9a-f]{32,128}")


def ticket_lifetime(grace: float) -> float:
    """A ticket's lifetime. It is refreshed at half-life, so one in hand always has at
    least half of it left, which must cover a whole grace period."""
    return max(MIN_LIFETIME, 2.0 * grace)


class ClientKey:
    """The client's key pair for one session (never leaves the client)."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key or Ed25519PrivateKey.generate()

    @property
    def public_hex(self) -> str:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw).hex()

    def sign(self, message: bytes) -> str:
        return base64.urlsafe_b64encode(self._key.sign(message)).rstrip(b"=").decode()

    def __repr__(self) -> str:       # never the private key
        return f"ClientKey({self.public_hex[:12]}...)"


def check_key(public_hex: str) -> str:
    """A client public key as the launch carries it; AuthError if it is not one."""
    if not isinstance(public_hex, str) or not _KEY_RE.fullmatch(public_hex):
        raise AuthError("resume key must be 64 lowercase hex digits (an Ed25519 public key)")
    return public_hex


def mint(signer: TokenSigner, *, user: str, gateway_id: str, session_id: str, host_id: str, resource: str,
         fingerprint: str, client_key: str, grace: float, now: float) -> str:
    """A fresh ticket for a live session."""
    return signer.mint(TYP, user, gateway_id, ttl=ticket_lifetime(grace), now=now, sid=session_id,
                       host=host_id, res=resource, fp=fingerprint, ck=check_key(client_key))


def proof_message(gateway_id: str, session_id: str, nonce: str) -> bytes:
    """What the client signs: a JSON array, so fields cannot run into each other."""
    return json.dumps([CONTEXT, gateway_id, session_id, nonce], separators=(",", ":")).encode()


def check(verifier: TokenVerifier, ticket: str, *, gateway_id: str, session_id: str, nonce: str,
          signature: str, now: float, replay: ReplayCache | None = None, host_id: str | None = None,
          defer_use: bool = False) -> Claims:
    """Check a resume: the ticket (signed by the gateway, unexpired, for this
    session and, if given, this host), the client's proof over the nonce, and --
    last, so a refused attempt does not burn the ticket -- single use."""
    claims = verifier.verify(ticket, typ=TYP, audience=gateway_id, now=now)
    for name in ("sid", "host", "res", "fp", "ck"):
        if not isinstance(claims.extra.get(name), str):
            raise AuthError("resume ticket claims are malformed")
    if claims.extra["sid"] != session_id:
        raise WrongClient("resume ticket is for another session")
    if host_id is not None and claims.extra["host"] != host_id:
        raise WrongClient("resume ticket is for another host")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise AuthError("resume nonce is malformed")
    try:
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(check_key(claims.extra["ck"])))
        if not isinstance(signature, str) or len(signature) > 128:
            raise ValueError
        sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (ValueError, TypeError):
        raise WrongClient("resume proof is missing or not base64url") from None
    try:
        pub.verify(sig, proof_message(gateway_id, session_id, nonce))
    except InvalidSignature:
        raise WrongClient("resume proof was not made with the key the ticket is bound to") from None
    if replay is not None:
        if replay.seen(claims.jti, now):
            raise TicketReplayed("resume ticket was already used")
        if not defer_use:
            spend(replay, claims, now)
    return claims


def spend(replay: ReplayCache, claims: Claims, now: float) -> None:
    """Mark a checked ticket used (single use); TicketReplayed if it already was. A
    caller that may still refuse for a reason that passes (the host not registered
    again yet) checks with ``defer_use`` and spends only once it goes ahead, with no
    await in between, so a retry can use the same ticket and a replay still cannot."""
    try:
        replay.use(claims, now)
    except AuthError as exc:
        if "already used" in exc.message:
            raise TicketReplayed("resume ticket was already used") from None
        raise


__all__ = ["TYP", "ClientKey", "check", "check_key", "mint", "proof_message", "spend", "ticket_lifetime",
           "BadSignature"]
