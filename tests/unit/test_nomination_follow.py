"""The incoming-check fixes (_aioice_compat.fix_incoming_checks), driven through aioice's own
Connection with hand-made pairs: no sockets, no checks on the wire.

* A controlled agent sends on the pair the controlling agent nominated last
  (follow_latest_nomination).
* An incoming check re-checks its pair when our own check of it is in flight (resent) or was
  cancelled by aioice's connect() (a new check): resend_checks_in_progress."""

from __future__ import annotations

import asyncio

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
        self.transactions: dict = {}    # no STUN transaction in flight (nothing to resend)


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


# --- resend_checks_in_progress ------------------------------------------------------------
class _Socket(_Protocol):
    """A local socket whose STUN transactions we answer by hand: ``request`` waits for
    ``answer(addr)``; ``send_stun`` (a resend) is recorded."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.transactions: dict = {}
        self.requests: list[tuple[str, int]] = []
        self.resent: list[tuple[str, int]] = []
        self._waiting: dict[tuple[str, int], asyncio.Future] = {}

    async def request(self, request, addr, integrity_key=None, retransmissions=None):
        self.requests.append(addr)
        fut = self._waiting[addr] = asyncio.get_running_loop().create_future()
        return await fut

    def send_stun(self, message, addr) -> None:
        self.resent.append(addr)

    def answer(self, addr) -> None:
        response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
        self._waiting.pop(addr).set_result((response, addr))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


DIRECT, RELAY = ("198.18.1.2", 33878), ("198.18.0.20", 50000)


async def _browser_lab_trace(fixed: bool, cancel: bool = True):
    """The failing browser-lab cell as the host saw it: our check of the direct pair is in
    flight (its first requests hit Chromium's NAT before Chromium opened it); Chromium's TURN
    pair succeeds and is nominated, so aioice's connect() completes and cancels the checks
    still running (``cancel``)."""
    conn = aioice.Connection(ice_controlling=False)
    conn.remote_username, conn.remote_password = "ruser", "r" * 22
    if fixed:
        _aioice_compat.fix_incoming_checks(conn)
    sock = _Socket("10.2.0.10", 40000)
    direct, relay = _remote(*DIRECT, "srflx"), _remote(*RELAY, "relay")
    conn._remote_candidates.extend([direct, relay])
    pairs = {name: CandidatePair(sock, cand) for name, cand in (("direct", direct), ("relay", relay))}
    conn._check_list.extend(pairs.values())
    conn.check_start_task(pairs["direct"])
    await _settle()
    assert sock.requests == [DIRECT] and pairs["direct"].state == CandidatePair.State.IN_PROGRESS
    pairs["relay"].state = CandidatePair.State.SUCCEEDED
    conn.check_incoming(_use_candidate(), RELAY, sock)
    assert _selected(conn) is pairs["relay"]
    if cancel:
        pairs["direct"].task.cancel()                    # connect() on completion
        await _settle()
    return conn, sock, pairs


@pytest.mark.asyncio
async def test_a_check_cancelled_by_connect_is_started_again_when_the_peer_checks_the_pair():
    conn, sock, pairs = await _browser_lab_trace(fixed=True)
    conn.check_incoming(_use_candidate(), DIRECT, sock)   # Chromium nominates the direct pair
    await _settle()
    assert sock.requests == [DIRECT, DIRECT]              # a new check of the direct pair
    sock.answer(DIRECT)
    await _settle()
    assert pairs["direct"].state == CandidatePair.State.SUCCEEDED
    assert _selected(conn) is pairs["direct"]             # nominated, and newer than the relay pair
    conn.check_incoming(_use_candidate(), DIRECT, sock)   # later checks start nothing more
    await _settle()
    assert sock.requests == [DIRECT, DIRECT] and sock.resent == []


@pytest.mark.asyncio
async def test_stock_aioice_never_checks_the_cancelled_pair_again():
    """The control: the direct pair stays In-Progress and the host stays on the relay pair
    however often Chromium nominates the direct one."""
    conn, sock, pairs = await _browser_lab_trace(fixed=False)
    _aioice_compat.follow_latest_nomination(conn)      # the fix before this one: not enough
    for _ in range(5):
        conn.check_incoming(_use_candidate(), DIRECT, sock)
        await _settle()
    assert sock.requests == [DIRECT] and pairs["direct"].state == CandidatePair.State.IN_PROGRESS
    assert _selected(conn) is pairs["relay"]


@pytest.mark.asyncio
async def test_a_check_in_flight_is_resent_once_not_restarted(monkeypatch):
    conn, sock, pairs = await _browser_lab_trace(fixed=True, cancel=False)
    sent = []
    monkeypatch.setattr(_aioice_compat, "resend_request", lambda proto, addr: sent.append(addr) or True)
    for _ in range(3):
        conn.check_incoming(_use_candidate(), DIRECT, sock)
        await _settle()
    assert sent == [DIRECT]                             # once per pair
    assert sock.requests == [DIRECT]                    # and no second check
    sock.answer(DIRECT)
    await _settle()
    assert _selected(conn) is pairs["direct"]


@pytest.mark.asyncio
async def test_the_controlling_side_starts_no_new_check():
    """A controlling aioice agent nominates in every check it sends: a check started after
    the nomination is over would nominate a pair nobody chose."""
    conn = aioice.Connection(ice_controlling=True)
    conn.remote_username, conn.remote_password = "ruser", "r" * 22
    _aioice_compat.fix_incoming_checks(conn)
    sock = _Socket("10.2.0.10", 40000)
    cand = _remote(*DIRECT, "srflx")
    conn._remote_candidates.append(cand)
    pair = CandidatePair(sock, cand)
    conn._check_list.append(pair)
    conn.check_start_task(pair)
    await _settle()
    pair.task.cancel()
    await _settle()
    plain = _use_candidate()
    del plain.attributes["USE-CANDIDATE"]
    conn.check_incoming(plain, DIRECT, sock)
    await _settle()
    assert sock.requests == [DIRECT] and pair.state == CandidatePair.State.IN_PROGRESS


# --- check_better_pairs_after_completion ---------------------------------------------------
TCP_RELAY, UDP_RELAY, WORSE = ("198.18.0.20", 50435), ("198.18.0.20", 50193), ("198.18.0.20", 50999)


def _cand(addr, priority: int) -> Candidate:
    return Candidate(foundation=f"r{addr[1]}", component=1, transport="udp", priority=priority,
                     host=addr[0], port=addr[1], type="relay")


def _agent(fixed: bool, controlling: bool = False, connect=None):
    """An aioice Connection with one local socket (answered by hand) and one component;
    ``connect`` stands in for aioice's own; ``fixed``: our hooks applied."""
    conn = aioice.Connection(ice_controlling=controlling)
    conn.remote_username, conn.remote_password = "ruser", "r" * 22
    if connect is not None:
        conn.connect = connect
    if fixed:
        _aioice_compat.fix_incoming_checks(conn)
        _aioice_compat.check_better_pairs_after_completion(conn)
    sock = _Socket("10.2.0.10", 40000)
    conn._protocols.append(sock)
    conn._components = {1}
    return conn, sock


async def _completed_on_tcp_relay(fixed: bool, controlling: bool = False, connect=None):
    """The browser lab's TURN cell as the host saw it: Chromium's TURN-over-TCP candidate
    (the lowest relay priority) is checked and nominated, so the check list completes."""
    conn, sock = _agent(fixed, controlling, connect)
    tcp = _cand(TCP_RELAY, 20)
    conn._remote_candidates.append(tcp)
    pair = CandidatePair(sock, tcp)
    conn._check_list.append(pair)
    pair.state, pair.remote_nominated = CandidatePair.State.SUCCEEDED, True
    pair.nominated = True
    conn.check_complete(pair)
    assert conn._check_list_done and _selected(conn) is pair
    return conn, sock, pair


@pytest.mark.asyncio
async def test_stock_aioice_never_checks_a_better_candidate_trickled_after_completion():
    conn, sock, _ = await _completed_on_tcp_relay(fixed=False)
    await conn.add_remote_candidate(_cand(UDP_RELAY, 60))
    await asyncio.sleep(0.05)
    assert sock.requests == []          # Chromium never learns our address for that pair


@pytest.mark.asyncio
async def test_a_better_candidate_trickled_after_completion_is_checked_once():
    conn, sock, tcp_pair = await _completed_on_tcp_relay(fixed=True)
    await conn.add_remote_candidate(_cand(WORSE, 10))      # worse than the selected pair: no check
    await conn.add_remote_candidate(_cand(UDP_RELAY, 60))  # better: one check
    await asyncio.sleep(0.05)
    assert sock.requests == [UDP_RELAY]
    # aioice pairs every trickled candidate itself; the worse pair stays unchecked
    worse = [p for p in conn._check_list if p.remote_addr == WORSE]
    assert len(worse) == 1 and worse[0].state == CandidatePair.State.FROZEN
    sock.answer(UDP_RELAY)
    await _settle()
    udp_pair = next(p for p in conn._check_list if p.remote_addr == UDP_RELAY)
    assert udp_pair.state == CandidatePair.State.SUCCEEDED
    assert _selected(conn) is tcp_pair         # a check alone does not move the selection
    conn.check_incoming(_use_candidate(), UDP_RELAY, sock)    # Chromium nominates the better pair
    assert _selected(conn) is udp_pair
    await conn.add_remote_candidate(_cand(("198.18.0.20", 50777), 40))   # nothing new to check
    await asyncio.sleep(0.05)
    assert sock.requests == [UDP_RELAY]


@pytest.mark.asyncio
async def test_a_better_check_cancelled_at_completion_is_started_again():
    # connect() as aioice ends it: the better pair's check was in flight and gets cancelled
    holder: dict = {}

    async def fake_connect():
        conn, sock = holder["conn"], holder["sock"]
        udp = _cand(UDP_RELAY, 60)
        conn._remote_candidates.append(udp)
        pair = CandidatePair(sock, udp)
        conn._check_list.insert(0, pair)
        conn.check_start_task(pair)
        await _settle()
        pair.task.cancel()
        await _settle()
        holder["pair"] = pair

    conn, sock, _ = await _completed_on_tcp_relay(fixed=True, connect=fake_connect)
    holder.update(conn=conn, sock=sock)
    await conn.connect()
    await asyncio.sleep(0.05)
    assert sock.requests == [UDP_RELAY, UDP_RELAY]         # the first, then a new check
    assert holder["pair"].state == CandidatePair.State.IN_PROGRESS and not holder["pair"].task.done()


@pytest.mark.asyncio
async def test_the_controlling_side_checks_nothing_after_completion():
    conn, sock, _ = await _completed_on_tcp_relay(fixed=True, controlling=True)
    await conn.add_remote_candidate(_cand(UDP_RELAY, 60))
    await asyncio.sleep(0.05)
    assert sock.requests == []


@pytest.mark.asyncio
async def test_a_better_pair_aioice_removed_on_nomination_is_formed_again_and_checked():
    async def fake_connect():       # the check list completed while the better pair waited
        pass

    conn, sock = _agent(fixed=True, connect=fake_connect)
    tcp, udp = _cand(TCP_RELAY, 20), _cand(UDP_RELAY, 60)
    conn._remote_candidates.extend([udp, tcp])
    waiting, chosen = CandidatePair(sock, udp), CandidatePair(sock, tcp)
    conn._check_list.extend([waiting, chosen])
    chosen.state, chosen.remote_nominated, chosen.nominated = CandidatePair.State.SUCCEEDED, True, True
    conn.check_complete(chosen)
    assert waiting not in conn._check_list          # aioice's rule on nomination (RFC 8445 8.1.2)
    await conn.connect()
    await asyncio.sleep(0.05)
    assert sock.requests == [UDP_RELAY]
    assert [p.remote_addr for p in conn._check_list] == [UDP_RELAY, TCP_RELAY]
