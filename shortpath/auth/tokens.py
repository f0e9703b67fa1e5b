"""Signed, expiring tokens (Ed25519).

Layout: ``sp1.<base64url(claims JSON)>.<base64url(signature)>``; the signature
covers the ASCII bytes ``sp1.<claims part>``. No alg negotiation: version
``sp1`` means Ed25519, so a token cannot talk the verifier into a weaker scheme.

Claims (all tokens): ``typ`` (``user`` | ``host`` | ``session``), ``sub``,
``aud`` (the gateway id), ``iat``, ``exp`` (unix seconds), ``jti`` (random id).
Per type:

* user:    ``resources`` -- list of pool names the user is assigned to.
* host:    ``pool``      -- the pool the host registers into; ``sub`` is the host id.
* session: ``sid`` (session id), ``host`` (host id): a short-lived ticket the
  broker gives the client for one launch; the host checks it end to end.

Verification takes ``now`` as an argument (pure; tests pass a fake clock) and
raises a typed AuthError: BadSignature, TokenExpired, WrongAudience, or
AuthError for a token of the wrong type or shape. Tokens are secrets: never log
them; :func:`describe` gives a loggable summary.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import AuthError, BadSignature, TokenExpired, WrongAudience

PREFIX = "sp1"
#: Tolerated clock skew between the minting and the checking machine.
CLOCK_SKEW = 30.0
#: Longest token we accept at all, so a stray token does not stay valid forever.
MAX_TOKEN_CHARS = 8192


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Claims:
    typ: str
    sub: str
    aud: str
    iat: float
    exp: float
    jti: str
    extra: dict = field(default_factory=dict)

    @property
    def resources(self) -> list[str]:
        return list(self.extra.get("resources", []))

    @property
    def pool(self) -> str:
        return str(self.extra.get("pool", ""))


class TokenSigner:
    """Holds the gateway's private signing key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()

    @classmethod
    def generate(cls) -> "TokenSigner":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str) -> "TokenSigner":
        if os.path.exists(path):
            with open(path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise AuthError(f"{path} is not an Ed25519 key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return cls(key)

    def public_hex(self) -> str:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def mint(self, typ: str, sub: str, aud: str, ttl: float, now: float, **extra) -> str:
        if ttl <= 0:
            raise AuthError("token lifetime must be positive")
        claims = {"typ": typ, "sub": sub, "aud": aud, "iat": int(now), "exp": now + ttl,
                  "jti": secrets.token_hex(8), **extra}
        body = _b64e(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signed = f"{PREFIX}.{body}"
        return f"{signed}.{_b64e(self._key.sign(signed.encode()))}"

    def verifier(self) -> "TokenVerifier":
        return TokenVerifier(self.public_key)


class TokenVerifier:
    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._pub = public_key

    @classmethod
    def from_hex(cls, text: str) -> "TokenVerifier":
        try:
            return cls(Ed25519PublicKey.from_public_bytes(bytes.fromhex(text)))
        except ValueError as exc:
            raise AuthError(f"bad signing key: {exc}") from None

    def verify(self, token: str, *, typ: str, audience: str, now: float) -> Claims:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise AuthError("token missing or too long")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise AuthError("not a shortpath token")
        try:
            sig = _b64d(parts[2])
            body = _b64d(parts[1])
        except (ValueError, TypeError):
            raise AuthError("token is not valid base64url") from None
        try:
            self._pub.verify(sig, f"{parts[0]}.{parts[1]}".encode())
        except InvalidSignature:
            raise BadSignature("token signature does not verify") from None
        try:
            raw = json.loads(body)
            claims = Claims(typ=str(raw.pop("typ")), sub=str(raw.pop("sub")), aud=str(raw.pop("aud")),
                            iat=float(raw.pop("iat")), exp=float(raw.pop("exp")),
                            jti=str(raw.pop("jti")), extra=raw)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise AuthError("token claims are malformed") from None
        if claims.typ != typ:
            raise AuthError(f"expected a {typ} token, got {claims.typ}")
        if claims.aud != audience:
            raise WrongAudience(f"token is for audience {claims.aud!r}, not {audience!r}")
        if now > claims.exp + CLOCK_SKEW:
            raise TokenExpired(f"token expired {now - claims.exp:.0f}s ago")
        if claims.iat > now + CLOCK_SKEW:
            raise AuthError("token issued in the future")
        return claims


def describe(token: str) -> str:
    """A loggable fingerprint of a token (never the token itself)."""
    import hashlib
    return "tok:" + hashlib.sha256(token.encode()).hexdigest()[:12]
