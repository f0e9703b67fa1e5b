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
