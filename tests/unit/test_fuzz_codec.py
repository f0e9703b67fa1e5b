"""Mutation fuzzing of the pure codecs (a short slice of benchmarks/fuzz.py) and the
regressions it found."""

import base64
import json

import pytest
from hypothesis import given, settings, strategies as st

from benchmarks.fuzz import run_codecs
from shortpath.auth.tokens import TokenSigner
from shortpath.errors import AuthError, MalformedFrame, ShortpathError
from shortpath.wire import control


def test_three_thousand_mutated_inputs_end_typed():
    t = run_codecs(3000, seed=11).to_dict()
    assert t["inputs_total"] == 3000
    assert t["crash_count"] == 0, t["crashes"][:3]
    # the mutators reach every layer: each target sees successes and typed failures
    for target, outcomes in t["outcomes"].items():
        assert sum(v for k, v in outcomes.items() if k in ("ok", "need-data", "mid-frame")) > 0, target
        assert any(k[0].isupper() for k in outcomes), (target, outcomes)
    assert {"FrameTooLarge", "MalformedFrame", "UnknownFrame"} <= set(t["outcomes"]["frame_buffer"])
    assert {"BadSignature", "AuthError"} <= set(t["outcomes"]["token"])


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_control_field_is_refused_typed():
    # Found by the fuzzer: ~900 levels parse, then re-encoding the message raised RecursionError.
    deep = ('{"type":"dial","conn_id":"c","session_id":"s","user":"u","policy":{"x":%s}}' % _nested(900))
    with pytest.raises(MalformedFrame, match="nested too deeply"):
        control.parse(deep.encode())
    ok = control.parse(('{"type":"feed","resources":%s}' % _nested(10)).encode())
    assert control.parse(ok.encode()[6:]) == ok


def test_signed_token_with_deeply_nested_claims_fails_typed():
    # Found by the fuzzer: claims nested past the recursion limit raised RecursionError
    # from json.loads (reachable only with the signing key, but must still fail typed).
    signer = TokenSigner.generate()
    body = base64.urlsafe_b64encode(_nested(2000).encode()).rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(signer._key.sign(f"sp1.{body}".encode())).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="malformed"):
        signer.verifier().verify(f"sp1.{body}.{sig}", typ="user", audience="gw", now=1.0)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
                     max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(control.all_message_types())), st.dictionaries(st.text(max_size=12), _json, max_size=6))
def test_any_json_object_parses_or_fails_typed_and_round_trips(mtype, fields):
    obj = {**fields, "type": mtype}
    try:
        msg = control.from_dict(obj)
    except ShortpathError:
        return
    assert control.parse(msg.encode()[6:]) == msg


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_string_as_token_fails_typed(text):
    verifier = TokenSigner.generate().verifier()
    with pytest.raises(AuthError):
        verifier.verify(text, typ="user", audience="gw", now=1.0)
    with pytest.raises(AuthError):
        verifier.verify("sp1." + text + ".x", typ="user", audience="gw", now=1.0)
