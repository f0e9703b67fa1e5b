"""UDP upgrade signalling checks (transport/udp/signal.py), as tables: what a peer may send,
what it may not (each a RemoteError naming the problem), and the candidate policy."""

import copy
import json

import pytest

from shortpath.errors import RemoteError
from shortpath.transport.udp import signal

FP = ":".join(["AB"] * 32)


def _hello(**over):
    msg = signal.hello(role="host", ufrag="abcdABCD1234efgh", pwd="p" * 32, dtls_role="client",
                       fingerprint=FP.lower(), sctp_port=5000, max_message_size=262144)
    for path, value in over.items():
        node = msg
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return msg


_DELETE = object()


def test_hello_round_trip():
    msg = json.loads(json.dumps(_hello()))
    h = signal.parse(msg)
    assert h == signal.Hello(role="host", ufrag="abcdABCD1234efgh", pwd="p" * 32, dtls_role="client",
                             fingerprint=FP, sctp_port=5000, max_message_size=262144)
    assert signal.check_hello(h, our_role="client", our_dtls_role="server") is h


@pytest.mark.parametrize("over,why", [
    ({"v": 2}, "unsupported UDP signalling version"),
    ({"v": "x"}, "malformed udp.hello"),
    ({"ice": _DELETE}, "malformed udp.hello"),
    ({"ice.pwd": _DELETE}, "malformed udp.hello"),
    ({"dtls.fingerprint": "AB:CD"}, "malformed udp.hello"),
    ({"sctp": None}, "malformed udp.hello"),
    ({"sctp.port": "five"}, "malformed udp.hello"),
    ({"ice.ufrag": "ab"}, "malformed ICE credentials"),
    ({"ice.ufrag": "a b c d"}, "malformed ICE credentials"),
    ({"ice.pwd": "short"}, "malformed ICE credentials"),
    ({"dtls.fingerprint.algorithm": "sha-1"}, "sha-256 DTLS fingerprint"),
    ({"dtls.fingerprint.value": "AB:CD"}, "sha-256 DTLS fingerprint"),
    ({"dtls.fingerprint.value": ":".join(["ZZ"] * 32)}, "sha-256 DTLS fingerprint"),
    ({"sctp.port": 0}, "bad SCTP parameters"),
    ({"sctp.port": 65536}, "bad SCTP parameters"),
    ({"sctp.max_message_size": -1}, "bad SCTP parameters"),
])
def test_bad_hello_is_a_remote_error(over, why):
    with pytest.raises(RemoteError, match=why):
        signal.parse(_hello(**over))


def test_hello_defaults_max_message_size():
    msg = _hello()
    del msg["sctp"]["max_message_size"]
    assert signal.parse(msg).max_message_size == 65536


@pytest.mark.parametrize("peer_role,peer_dtls,ok", [
    ("host", "client", True),
    ("client", "client", False),   # the peer claims our session role
    ("host", "server", False),     # ... or our DTLS role
])
def test_hello_roles(peer_role, peer_dtls, ok):
    h = signal.parse(_hello(role=peer_role, **{"dtls.role": peer_dtls}))
    if ok:
        signal.check_hello(h, our_role="client", our_dtls_role="server")
    else:
        with pytest.raises(RemoteError, match="claims our role"):
            signal.check_hello(h, our_role="client", our_dtls_role="server")


CAND = {"foundation": "f1", "component": 1, "protocol": "udp", "priority": 100, "ip": "10.1.0.10",
        "port": 4000, "type": "host"}


def test_candidate_parsed():
    m = signal.parse(signal.candidate(dict(CAND, raddr="198.18.0.1", rport=9)))
    assert isinstance(m, signal.CandidateMsg)
    c = m.candidate
    assert (c.ip, c.port, c.type, c.priority, c.raddr, c.rport, c.managed) == \
        ("10.1.0.10", 4000, "host", 100, "198.18.0.1", 9, False)
    assert m.raw["ip"] == "10.1.0.10"
    assert signal.parse(signal.managed_candidate("10.2.0.10", 3390, 7)).candidate.managed


@pytest.mark.parametrize("change,why", [
    ({"ip": "not-an-ip"}, "malformed candidate"),
    ({"ip": None}, "malformed candidate"),
    ({"port": "x"}, "malformed candidate"),
    ({"port": 0}, "port out of range"),
    ({"port": 70000}, "port out of range"),
    ({"type": "weird"}, "bad candidate type"),
    ({"protocol": "tcp"}, "only UDP candidates"),
    ({"priority": None}, "malformed candidate"),
    ({"foundation": _DELETE}, "malformed candidate"),
])
def test_bad_candidate_is_a_remote_error(change, why):
    d = copy.deepcopy(CAND)
    for k, v in change.items():
        if v is _DELETE:
            del d[k]
        else:
            d[k] = v
    with pytest.raises(RemoteError, match=why):
        signal.parse(signal.candidate(d))


@pytest.mark.parametrize("msg,why", [
    ({"type": "udp.candidate"}, "without candidate"),
    ({"type": "udp.candidate", "candidate": "10.0.0.1"}, "without candidate"),
    ({"type": "udp.nonsense"}, "unknown UDP signalling message"),
    ({"no": "type"}, "unknown UDP signalling message"),
    ("a string", "unknown UDP signalling message"),
    (None, "unknown UDP signalling message"),
])
def test_unknown_or_empty_messages(msg, why):
    with pytest.raises(RemoteError, match=why):
        signal.parse(msg)


def test_other_messages():
    assert signal.parse(signal.end_of_candidates()) == signal.EndOfCandidates()
    sel = signal.parse(signal.selected("udp-turn", {"ip": "1.2.3.4"}, None))
    assert sel.kind == "udp-turn"
    assert signal.parse({"type": "udp.selected", "kind": 3}).kind is None
    a = signal.parse(signal.abort("fingerprint-mismatch", "x" * 500))
    assert a == signal.Abort("fingerprint-mismatch", "x" * signal.DETAIL_MAX)
    assert signal.abort_is_fingerprint(a)
    assert signal.parse({"type": "udp.abort"}) == signal.Abort("unknown", "")
    assert not signal.abort_is_fingerprint(signal.parse(signal.abort("timeout")))


def _c(ctype="host", managed=False):
    return signal.RemoteCandidate(foundation="f", component=1, priority=1, ip="10.0.0.1", port=1,
                                  type=ctype, managed=managed)


# (candidate, our role, allow managed/direct/turn, every local candidate a relay) -> use
POLICY = [
    (_c(managed=True), "client", (True, True, True), False, "managed"),
    (_c(managed=True), "host", (True, True, True), False, None),        # only clients pair with it
    (_c(managed=True), "client", (False, True, True), False, None),
    (_c("relay"), "client", (True, True, True), False, "relay"),
    (_c("relay"), "host", (True, True, False), False, None),
    (_c("host"), "client", (True, True, True), False, "direct"),
    (_c("srflx"), "host", (True, True, True), False, "direct"),
    (_c("srflx"), "client", (True, False, True), False, None),           # direct off ...
    (_c("srflx"), "client", (True, False, True), True, "direct"),        # ... unless we only relay
    (_c("host"), "client", (False, False, True), True, "direct"),
]


@pytest.mark.parametrize("cand,role,allow,relay_only,use", POLICY)
def test_candidate_use(cand, role, allow, relay_only, use):
    managed, direct, turn = allow
    assert signal.candidate_use(cand, our_role=role, allow_managed=managed, allow_direct=direct,
                                allow_turn=turn, local_relay_only=relay_only) == use
