import pytest

from shortpath.auth.tokens import TokenSigner, TokenVerifier, describe
from shortpath.errors import AuthError, BadSignature, TokenExpired, WrongAudience

NOW = 1_700_000_000.0


@pytest.fixture
def signer():
    return TokenSigner.generate()


def test_valid_user_token(signer):
    tok = signer.mint("user", "alice", "gw", 60, NOW, resources=["desktop", "apps"])
    c = signer.verifier().verify(tok, typ="user", audience="gw", now=NOW + 10)
    assert (c.sub, c.resources) == ("alice", ["desktop", "apps"])


def test_expired(signer):
    tok = signer.mint("user", "alice", "gw", 60, NOW)
    with pytest.raises(TokenExpired):
        signer.verifier().verify(tok, typ="user", audience="gw", now=NOW + 60 + 31)
    # within the clock-skew allowance it still passes
    signer.verifier().verify(tok, typ="user", audience="gw", now=NOW + 60 + 29)


def test_bad_signature_other_key(signer):
    tok = TokenSigner.generate().mint("user", "alice", "gw", 60, NOW)
    with pytest.raises(BadSignature):
        signer.verifier().verify(tok, typ="user", audience="gw", now=NOW)


def test_tampered_claims(signer):
    import base64, json
    tok = signer.mint("user", "alice", "gw", 60, NOW, resources=["a"])
    prefix, body, sig = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["resources"] = ["a", "admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignature):
        signer.verifier().verify(f"{prefix}.{forged}.{sig}", typ="user", audience="gw", now=NOW)


def test_wrong_audience_and_type(signer):
    tok = signer.mint("user", "alice", "other-gw", 60, NOW)
    with pytest.raises(WrongAudience):
        signer.verifier().verify(tok, typ="user", audience="gw", now=NOW)
    host = signer.mint("host", "h1", "gw", 60, NOW, pool="p")
    with pytest.raises(AuthError, match="expected a user token"):
        signer.verifier().verify(host, typ="user", audience="gw", now=NOW)


@pytest.mark.parametrize("junk", ["", "abc", "sp1.x.y", "sp2.a.b", "sp1..", "x" * 10000, "sp1.!!!.???"])
def test_garbage_tokens(signer, junk):
    with pytest.raises(AuthError):
        signer.verifier().verify(junk, typ="user", audience="gw", now=NOW)


def test_public_key_round_trip_and_describe_hides_token(signer):
    tok = signer.mint("host", "h1", "gw", 60, NOW, pool="p")
    v = TokenVerifier.from_hex(signer.public_hex())
    assert v.verify(tok, typ="host", audience="gw", now=NOW).pool == "p"
    assert tok not in describe(tok) and describe(tok).startswith("tok:")


def test_signing_key_persists(tmp_path):
    path = str(tmp_path / "k")
    a = TokenSigner.load_or_create(path)
    b = TokenSigner.load_or_create(path)
    assert a.public_hex() == b.public_hex()
    import os, stat
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# --- issue #11 item 8: one spelling per token, jti checked, single-use tickets ---------

import base64 as _b64
import json as _json
import math as _math

from shortpath.auth.tokens import CLOCK_SKEW, ReplayCache, unverified_audience


def _lenient(text: str) -> bytes:
    """How the old verifier decoded a part: pad, then urlsafe_b64decode."""
    return _b64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _respell(part: str, how: str) -> str:
    """Another spelling of a base64url part that a lenient decoder reads as the same bytes."""
    if how == "extra-padding":
        return part + "=" * (-len(part) % 4 or 4)
    if how == "spare-bits":
        # The last character of an unpadded part carries 2 or 4 unused low bits;
        # flipping the lowest one gives the same bytes.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        i = alphabet.index(part[-1])
        return part[:-1] + alphabet[i ^ 1]
    raise AssertionError(how)


@pytest.mark.parametrize("where", ["body", "sig"])
@pytest.mark.parametrize("how", ["extra-padding", "spare-bits"])
def test_non_canonical_spellings_do_not_verify(signer, where, how):
    tok = signer.mint("user", "alice", "gw", 60, NOW, resources=["desktop"])
    prefix, body, sig = tok.split(".")
    assert len(body) % 4 and len(sig) % 4      # both parts have spare bits to play with
    if where == "body":
        other = f"{prefix}.{_respell(body, how)}.{sig}"
        assert _lenient(other.split(".")[1]) == _lenient(body)   # same bytes, other text
    else:
        other = f"{prefix}.{body}.{_respell(sig, how)}"
        assert _lenient(other.split(".")[2]) == _lenient(sig)
    assert other != tok
    with pytest.raises(AuthError):
        signer.verifier().verify(other, typ="user", audience="gw", now=NOW)
    # the canonical spelling still verifies
    signer.verifier().verify(tok, typ="user", audience="gw", now=NOW)


@pytest.mark.parametrize("bad", ["A", "ab+c", "ab/c", "ab c", "abc=", "a=bc"])
def test_b64_outside_the_unpadded_urlsafe_alphabet_is_refused(signer, bad):
    tok = signer.mint("user", "alice", "gw", 60, NOW)
    prefix, body, sig = tok.split(".")
    with pytest.raises(AuthError):
        signer.verifier().verify(f"{prefix}.{body}.{bad}", typ="user", audience="gw", now=NOW)


def _signed(signer, claims: dict) -> str:
    """A correctly signed token with arbitrary claims (what a key holder could mint)."""
    body = _b64.urlsafe_b64encode(_json.dumps(claims).encode()).rstrip(b"=").decode()
    signed = f"sp1.{body}"
    sig = _b64.urlsafe_b64encode(signer._key.sign(signed.encode())).rstrip(b"=").decode()
    return f"{signed}.{sig}"


BASE = {"typ": "user", "sub": "alice", "aud": "gw", "iat": NOW, "exp": NOW + 60, "jti": "0123456789abcdef"}


@pytest.mark.parametrize("change,ok", [
    ({}, True),
    ({"jti": "0123456789abcdef" * 4}, True),
    ({"jti": None}, False),               # missing (key removed below)
    ({"jti": ""}, False),
    ({"jti": "short"}, False),
    ({"jti": "0123456789ABCDEF"}, False),  # upper case: another spelling
    ({"jti": "0123456789abcdeg"}, False),
    ({"jti": 1234567890123456}, False),    # not a string
    ({"jti": "0" * 65}, False),
    ({"sub": 5}, False),
    ({"exp": "1e30"}, False),
    ({"exp": True}, False),
])
def test_claim_shapes(signer, change, ok):
    claims = {**BASE, **change}
    if claims["jti"] is None:
        del claims["jti"]
    tok = _signed(signer, claims)
    if ok:
        assert signer.verifier().verify(tok, typ="user", audience="gw", now=NOW).jti == claims["jti"]
    else:
        with pytest.raises(AuthError):
            signer.verifier().verify(tok, typ="user", audience="gw", now=NOW)


def test_non_finite_times_are_refused(signer):
    for ttl in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(AuthError):
            signer.mint("user", "alice", "gw", ttl, NOW)
    # JSON from another minter could say Infinity / NaN: never "valid forever"
    for exp in ("Infinity", "NaN"):
        body = _json.dumps({**BASE, "exp": 0}).replace('"exp": 0', f'"exp": {exp}')
        assert _math.isnan(_json.loads(body)["exp"]) or _json.loads(body)["exp"] == float("inf")
        b = _b64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode()
        sig = _b64.urlsafe_b64encode(signer._key.sign(f"sp1.{b}".encode())).rstrip(b"=").decode()
        with pytest.raises(AuthError):
            signer.verifier().verify(f"sp1.{b}.{sig}", typ="user", audience="gw", now=NOW + 10 ** 9)


def test_replay_cache_timeline(signer):
    v = signer.verifier()
    t1 = v.verify(signer.mint("session", "alice", "gw", 60, NOW, sid="s1", host="h"), typ="session",
                  audience="gw", now=NOW)
    t2 = v.verify(signer.mint("session", "alice", "gw", 60, NOW, sid="s2", host="h"), typ="session",
                  audience="gw", now=NOW)
    cache = ReplayCache(max_entries=2)
    cache.use(t1, NOW)
    with pytest.raises(AuthError, match="already used"):
        cache.use(t1, NOW + 1)                     # replay
    cache.use(t2, NOW + 1)
    t3 = v.verify(signer.mint("session", "alice", "gw", 60, NOW + 2, sid="s3", host="h"), typ="session",
                  audience="gw", now=NOW + 2)
    with pytest.raises(AuthError, match="too many"):
        cache.use(t3, NOW + 2)                     # full of live ids: refuse, do not forget one
    later = NOW + 60 + CLOCK_SKEW + 1              # t1 and t2 can no longer verify: forgotten
    cache.use(t3, later)
    assert len(cache) == 1


def test_unverified_audience_reads_own_token(signer):
    assert unverified_audience(signer.mint("host", "h1", "gw-7", 60, NOW, pool="p")) == "gw-7"
    for junk in ("", "sp1", "sp1.!!.x", "sp1." + _b64.urlsafe_b64encode(b"[1]").decode().rstrip("=") + ".x"):
        assert unverified_audience(junk) == ""
