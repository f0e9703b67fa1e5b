"""A controlled aioice agent sends on the pair the controlling agent nominated last
(_aioice_compat.follow_latest_nomination), driven through aioice's own Connection with
hand-made pairs: no sockets, no checks on the wire."""

from __future__ import annotations

import pytest

aioice = pytest.importorskip("aioice")
from aioice import Candidate, stun  # noqa: E402
from aioice.ice import CandidatePair  # noqa: E402

from shortpath.transport.udp import _aioice_compat  # noqa: E402


class _Protocol:
    """What aioice reads of a local socket when it handles an incoming check."""

    def __init__(self, host: str, port: int) -> None:
        self.local_candidate = Candidate(foundation=f"f{port}", component=1, transport="udp",
                                         priority=100, host=host, port=port, type="host")


def _remote(host: str, port: int, kind: str) -> Candidate:
    return Candidate(foundation=f"r{port}", component=1, transport="udp", priority=50,
                     host=host, port=port, type=kind)


def _use_candidate() -> stun.Message:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    msg.attributes["PRIORITY"] = 1234
    msg.attributes["USE-CANDIDATE"] = None
    return msg


def _setup(follow: bool, cls=None):
    conn = (cls or aioice.Connection)(ice_controlling=False)
    if follow and cls is None:
        _aioice_compat.follow_latest_nomination(conn)
    sock = _Protocol("10.2.0.10", 40000)
    direct, relay = _remote("198.18.1.2", 33878, "srflx"), _remote("198.18.0.20", 50000, "relay")
    conn._remote_candidates.extend([direct, relay])
    pairs = {}
    for name, cand in (("direct", direct), ("relay", relay)):
        pair = CandidatePair(sock, cand)
        conn._check_list.append(pair)
        pairs[name] = pair
    return conn, sock, pairs


def _selected(conn):
    return conn._nominated.get(1)


def _chromium_sequence(conn, sock, pairs) -> None:
    """Chromium nominates the relay pair while our check of it is still in flight, then the
    direct pair (already succeeded); then our check of the relay pair completes."""
    pairs["relay"].state = CandidatePair.State.IN_PROGRESS
    conn.check_incoming(_use_candidate(), ("198.18.0.20", 50000), sock)
    assert pairs["relay"].remote_nominated and _selected(conn) is None
    pairs["direct"].state = CandidatePair.State.SUCCEEDED
    conn.check_incoming(_use_candidate(), ("198.18.1.2", 33878), sock)
    assert _selected(conn) is pairs["direct"]
    # aioice's check_start on success: the flag came from the remote, then check_complete
    pairs["relay"].nominated = True
    pairs["relay"].state = CandidatePair.State.SUCCEEDED
    conn.check_complete(pairs["relay"])


def test_stock_aioice_moves_to_the_pair_whose_check_completed_last():
    """The control: without the fix aioice leaves the pair the controlling agent chose."""
    conn, sock, pairs = _setup(follow=False)
    _chromium_sequence(conn, sock, pairs)
    assert _selected(conn) is pairs["relay"]


def test_the_latest_nomination_stays_selected():
    conn, sock, pairs = _setup(follow=True)
    _chromium_sequence(conn, sock, pairs)
    assert _selected(conn) is pairs["direct"]


def test_a_newer_nomination_still_switches():
    conn, sock, pairs = _setup(follow=True)
    _chromium_sequence(conn, sock, pairs)
    # the controlling agent moves to the relay pair (say the direct one stopped working)
    conn.check_incoming(_use_candidate(), ("198.18.0.20", 50000), sock)
    assert _selected(conn) is pairs["relay"]
    conn.check_incoming(_use_candidate(), ("198.18.1.2", 33878), sock)
    assert _selected(conn) is pairs["direct"]


def test_a_check_without_use_candidate_changes_nothing():
    conn, sock, pairs = _setup(follow=True)
    _chromium_sequence(conn, sock, pairs)
    plain = _use_candidate()
    del plain.attributes["USE-CANDIDATE"]
    conn.check_incoming(plain, ("198.18.0.20", 50000), sock)
    assert _selected(conn) is pairs["direct"]


def test_the_controlling_side_is_left_alone():
    conn = aioice.Connection(ice_controlling=True)
    _aioice_compat.follow_latest_nomination(conn)
    sock = _Protocol("10.2.0.10", 40000)
    first = CandidatePair(sock, _remote("198.18.1.2", 33878, "srflx"))
    second = CandidatePair(sock, _remote("198.18.0.20", 50000, "relay"))
    for pair in (first, second):
        conn._check_list.append(pair)
        pair.state, pair.nominated = CandidatePair.State.SUCCEEDED, True
        conn.check_complete(pair)
    assert conn._nominated[1] is second       # aioice's own rule: the last one completed


def test_our_ice_agent_class_follows_too():
    conn, sock, pairs = _setup(follow=True, cls=_aioice_compat.connection_class())
    _chromium_sequence(conn, sock, pairs)
    assert _selected(conn) is pairs["direct"]
