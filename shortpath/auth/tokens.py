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

One spelling per token: both base64url parts must be *canonical* -- the
unpadded urlsafe alphabet only, no ``=``, and the unused low bits of the last
character zero (re-encoding the decoded bytes gives back the same text).
Otherwise one signed token would have several spellings (and several log
hashes, and several entries in a replay cache). ``jti`` must be present and
16-64 lowercase hex digits; ``iat`` and ``exp`` finite numbers. Single-use
tokens (session tickets) are remembered by :class:`ReplayCache` until they
expire, so a captured ticket cannot be presented twice.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import AuthError, BadSignature, TokenExpired, WrongAudience
from . import files

PREFIX = "sp1"
#: Tolerated clock skew between the minting and the checking machine.
CLOCK_SKEW = 30.0
#: Longest token we accept at all, so a stray token does not stay valid forever.
MAX_TOKEN_CHARS = 8192
#: What a ``jti`` looks like (mint() makes 16 hex digits).
JTI_RE = re.compile(r"[0-9a-f]{16,64}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    """Decode canonical unpadded base64url; anything else raises ValueError."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64e(data) != text:      # non-zero spare bits in the last character
        raise ValueError("not canonical base64url")
    return data


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
        """Load the key at ``path`` (a private state file: 0600, no symlink), or create it."""
        pem = files.read_private(path)
        if pem is not None:
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise AuthError(f"{path} is not an Ed25519 key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        files.write_private(path, pem, exclusive=True)
        return cls(key)

    def public_hex(self) -> str:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def mint(self, typ: str, sub: str, aud: str, ttl: float, now: float, **extra) -> str:
        if not (math.isfinite(ttl) and ttl > 0) or not math.isfinite(now):
            raise AuthError("token lifetime must be a positive, finite number of seconds")
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
            for name in ("typ", "sub", "aud", "jti"):
                if not isinstance(raw[name], str):
                    raise TypeError(name)
            claims = Claims(typ=raw.pop("typ"), sub=raw.pop("sub"), aud=raw.pop("aud"),
                            iat=_number(raw.pop("iat")), exp=_number(raw.pop("exp")),
                            jti=raw.pop("jti"), extra=raw)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise AuthError("token claims are malformed") from None
        if not (math.isfinite(claims.iat) and math.isfinite(claims.exp)):
            raise AuthError("token times are not finite")
        if not JTI_RE.fullmatch(claims.jti):
            raise AuthError("token id (jti) is malformed")
        if claims.typ != typ:
            raise AuthError(f"expected a {typ} token, got {claims.typ}")
        if claims.aud != audience:
            raise WrongAudience(f"token is for audience {claims.aud!r}, not {audience!r}")
        if now > claims.exp + CLOCK_SKEW:
            raise TokenExpired(f"token expired {now - claims.exp:.0f}s ago")
        if claims.iat > now + CLOCK_SKEW:
            raise AuthError("token issued in the future")
        return claims


def _number(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("not a number")
    return float(v)


class ReplayCache:
    """Single-use token ids, remembered until the token could no longer verify anyway.

    Pure: the caller passes ``now``. ``use(claims, now)`` raises AuthError if
    the id was seen before; otherwise it remembers it until ``exp + CLOCK_SKEW``.
    At ``max_entries`` live ids, new ones are refused (AuthError) rather than
    forgetting a live one, which would re-open replay."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}    # jti -> forget after

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        for jti in [j for j, until in self._seen.items() if until < now]:
            del self._seen[jti]

    def seen(self, jti: str, now: float) -> bool:
        """Whether ``jti`` was used and is still remembered (nothing is recorded)."""
        return jti in self._seen and self._seen[jti] >= now

    def release(self, jti: str) -> None:
        """Forget a use that did not go ahead (the order it was spent on never left)."""
        self._seen.pop(jti, None)

    def use(self, claims: Claims, now: float) -> None:
        if claims.jti in self._seen and self._seen[claims.jti] >= now:
            raise AuthError("token was already used (replay)")
        if len(self._seen) >= self.max_entries:
            self._expire(now)
            if len(self._seen) >= self.max_entries:
                raise AuthError("too many single-use tokens in flight")
        self._seen[claims.jti] = claims.exp + CLOCK_SKEW


def unverified_audience(token: str) -> str:
    """The ``aud`` claim of a token *without* checking it: for the token's own
    holder (a host binds its registration proof to the gateway its token names).
    Never use this to trust a token. "" if it cannot be read."""
    try:
        aud = json.loads(_b64d(token.split(".")[1])).get("aud", "")
    except (ValueError, IndexError, AttributeError, RecursionError):
        return ""
    return aud if isinstance(aud, str) else ""


def describe(token: str) -> str:
    """A loggable fingerprint of a token (never the token itself)."""
    import hashlib
    return "tok:" + hashlib.sha256(token.encode()).hexdigest()[:12]
