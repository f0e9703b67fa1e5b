"""Every private aioice name shortpath relies on, in one place, each with why.

aioice's public API (Connection, Candidate, stun) lacks a fixed host port, loopback host
candidates, ICE restart, and control over nomination, pair pruning and TURN clean-up. Where we
must reach inside, we do it here and nowhere else, so that an aioice upgrade is checked in one
file. pyproject.toml pins the aioice versions these names were read from, and
tests/unit/test_compat_canary.py fails, naming the name, when one of them is gone.

Convention: PRIVATE_NAMES lists (dotted owner, attribute, why). An attribute of an *instance*
(set in __init__, so not visible on the class) is listed with owner ending in "()" and is checked
by the canary on a freshly constructed object where that is cheap, or by reading the source.
A name-mangled attribute (``self.__x`` in class ``C``, reached as ``_C__x``) is listed by its
source spelling ``__x``.

What this module offers instead of the private names:

* :func:`connection_class` -- aioice's ``Connection`` with its private hooks turned into public,
  documented ones (``may_pair``, ``on_remote_candidates_end``, ``may_fail_check_list``) and
  read access to its check list, nominated pairs and sockets. ice.IceAgent subclasses it.
* :func:`resend_request` -- resend the STUN request of a transaction in flight.
* :func:`turn_inner_protocol` -- the TURN client protocol behind a TURN transport.
* :func:`check_better_pairs_after_completion` -- applied to the browser host's aiortc
  connection: a controlled agent keeps checking the pairs better than the one selected, so the
  controlling browser can still find and nominate them.
* :func:`fix_incoming_checks` -- applied to every aioice ``Connection`` we run (``IceAgent``
  and the browser host's aiortc one): :func:`resend_checks_in_progress` (an incoming check
  re-checks its pair at once when our check of it is in progress or was cancelled) and
  :func:`follow_latest_nomination` (a controlled agent sends on the pair the controlling
  agent nominated *last*, not on whichever nominated pair its own check completed last).

No name here is read with ``getattr(..., default)``: a missing one raises :class:`LibraryChanged`
(callers log it as an error), so a workaround is never switched off silently.

aioice is imported lazily (it takes ~0.2 s to import).
"""

from __future__ import annotations

import asyncio
import itertools
from functools import lru_cache
from typing import Any

#: (owner, attribute, why we need it).
PRIVATE_NAMES: list[tuple[str, str, str]] = [
    # -- Connection internals read or replaced by HookedConnection -------------------------------
    ("aioice.Connection", "_pair_remote_candidate",
     "overridden (as may_pair) to keep relay candidates away from remote private host candidates "
     "a public TURN server cannot reach: coturn answers the ICMP error by dropping the allocation; "
     "check_better_pairs_after_completion calls it to form again the pairs aioice removed"),
    ("aioice.Connection", "_end_remote_candidates",
     "overridden (as on_remote_candidates_end): our own nomination re-evaluates at end-of-candidates"),
    ("aioice.Connection", "_check_list_maybe_fail",
     "overridden (as may_fail_check_list): aioice fails a controlling agent with succeeded but "
     "un-nominated pairs, which our own nomination still uses"),
    ("aioice.Connection", "_remote_candidates_expected",
     "nomination holds relay pairs back while more remote candidates may still be trickled"),
    ("aioice.Connection()", "_check_list",
     "our nomination picks from the succeeded pairs; resend_checks_in_progress finds in-progress pairs"),
    ("aioice.Connection()", "_check_list_done",
     "no nomination once aioice has completed or failed the check list"),
    ("aioice.Connection()", "_nominated",
     "the selected pair (no public accessor); and no own nomination once one is nominated"),
    ("aioice.Connection", "check_complete",
     "wrapped by follow_latest_nomination: where aioice records a nominated pair as selected"),
    ("aioice.Connection", "check_incoming",
     "wrapped by fix_incoming_checks: where an authenticated incoming check (and its "
     "USE-CANDIDATE) is seen"),
    ("aioice.Connection()", "_remote_candidates",
     "check_better_pairs_after_completion forms again the better pairs aioice removed on nomination"),
    ("aioice.Connection()", "_closing",
     "check_better_pairs_after_completion starts no check once close() has begun"),
    ("aioice.ice", "candidate_pair_priority",
     "check_better_pairs_after_completion compares a pair's priority with the selected pair's"),
    ("aioice.Connection()", "_nominating",
     "marking the component as being nominated keeps aioice from nominating (we nominate ourselves)"),
    ("aioice.Connection()", "_components",
     "the component set that take_over_nomination marks as nominating"),
    ("aioice.Connection()", "_protocols",
     "our gathering adds its own sockets (aioice gathers on every interface, no loopback); pairing "
     "filters them per remote candidate"),
    # -- STUN transactions --------------------------------------------------------------------------
    ("aioice.stun.Transaction()", "__addr",
     "find the transaction of an in-progress check to resend it at once (RFC 8445 7.3.1.4)"),
    ("aioice.stun.Transaction()", "__request",
     "the request to resend for that check"),
    # -- TURN ------------------------------------------------------------------------------------------
    ("aioice.turn.TurnTransport()", "__inner_protocol",
     "to delete TURN allocations with a bounded wait at close (aioice's own delete retries ~30 s "
     "against an unreachable server)"),
]


class LibraryChanged(RuntimeError):
    """A private aioice name we rely on is gone: this module must follow the new version."""


def _private(obj: Any, name: str, why: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise LibraryChanged(f"aioice {type(obj).__name__} has no {name} ({why}); "
                             f"see shortpath/transport/udp/_aioice_compat.py") from None


def _transaction_addr(tx: Any) -> Any:
    return _private(tx, "_Transaction__addr", "resend of an in-progress check")


def _transaction_request(tx: Any) -> Any:
    return _private(tx, "_Transaction__request", "resend of an in-progress check")


def resend_request(protocol: Any, addr: tuple[str, int]) -> bool:
    """Send again, now, the request of the STUN transaction in flight on ``protocol`` to
    ``addr`` (aioice only resends from its retransmission timer). False if none is in flight."""
    for tx in list(protocol.transactions.values()):
        if _transaction_addr(tx) == addr:
            protocol.send_stun(_transaction_request(tx), addr)
            return True
    return False


def turn_inner_protocol(turn_transport: Any) -> Any:
    """The TURN client protocol (allocation owner) behind an aioice ``TurnTransport``."""
    return _private(turn_transport, "_TurnTransport__inner_protocol", "bounded TURN deallocation")


def _check_again(connection: Any, pair: Any) -> None:
    """Start a new check of ``pair``, whose last one has ended (or was cancelled): aioice's
    ``check_start_task`` assumes no task is set."""
    pair.task = None
    connection.check_start_task(pair)


def fix_incoming_checks(connection: Any) -> None:
    """Both incoming-check fixes below, on one aioice ``Connection`` (ours or aiortc's)."""
    resend_checks_in_progress(connection)
    follow_latest_nomination(connection)


def resend_checks_in_progress(connection: Any) -> None:
    """On an authenticated incoming check for a pair whose own check is in progress, check
    that pair now, as RFC 8445 section 7.3.1.4 asks (aioice only does it for Frozen and Failed
    pairs):

    * the check is still running: resend its request at once; aioice would wait for its
      retransmission timer (0.5, 1, 2, 4 s back-off);
    * the check was cancelled, which aioice does to every check still running when its
      ``connect()`` completes, leaving the pair In-Progress for good (and, with a task set,
      never checked again): on a *controlled* agent, start a new check. The controlling agent
      is still checking, and maybe nominating, that pair; without a check of our own that
      succeeds, aioice can never select it.

    Why: in hole punching our first check usually reaches the peer's NAT before the peer's
    own check has opened it, and is dropped. The peer's check arriving now says the way is
    open. Without the resend, every udp-direct and udp-turn set-up waited ~0.47 s more in the
    lab (benchmarks/setup.py). Without the new check, the browser lab's direct cell failed
    in 5 of 34 runs with the CPU busy: Chromium's TURN pair succeeded and was nominated
    first, aioice completed and cancelled the direct pair's check, and the host sent every
    frame through coturn while Chromium nominated, and sent on, the direct pair
    (tests/lab/test_browser_lab.py).

    One resend per pair; a new check only when none is running; and only for checks aioice
    has authenticated (it calls ``check_incoming`` after MESSAGE-INTEGRITY passed), so a peer
    cannot make us send more than it sends. The resent request is the same transaction's, so
    a response to any copy counts. The controlling side starts no new check: aioice would
    nominate with it (aggressive nomination) after the nomination is over.
    """
    from aioice.ice import CandidatePair

    in_progress = CandidatePair.State.IN_PROGRESS
    resent: set[int] = set()   # id() of pairs whose check was resent
    incoming = connection.check_incoming

    def check_incoming(message: Any, addr: Any, protocol: Any) -> None:
        source = tuple(addr[:2])   # (host, port): an IPv6 source has four items
        waiting = [p for p in _private(connection, "_check_list", "the check list")
                   if p.protocol is protocol and p.remote_addr == source and p.state == in_progress]
        incoming(message, addr, protocol)
        for p in waiting:
            if p.state != in_progress:
                continue
            if p.task is not None and p.task.done():
                if not connection.ice_controlling:
                    _check_again(connection, p)
            elif id(p) not in resent:
                resent.add(id(p))
                resend_request(protocol, p.remote_addr)

    connection.check_incoming = check_incoming


def follow_latest_nomination(connection: Any) -> None:
    """Make a *controlled* aioice ``connection`` send on the pair the controlling agent
    nominated most recently.

    Why: aioice selects a pair whenever a check on it completes with the nominated flag set,
    and the flag can come from a USE-CANDIDATE received long before. Chromium (libwebrtc)
    nominates "semi-aggressively": until it has selected a pair, every check it sends carries
    USE-CANDIDATE, so a TURN pair gets the flag early; its own direct pair then wins and is
    nominated again, and Chromium sends on it. But aioice's check of the TURN pair (one more
    hop, a permission to create) often completes *after* that, and aioice then moves to the
    TURN pair: the host sent every frame through coturn while the browser sent on the direct
    pair (seen in the browser lab: 1.2 MB from coturn, 32 KB of SACKs direct).

    Here every USE-CANDIDATE received is numbered per pair (socket, remote address). When a
    check completion would replace the selected pair by one whose latest nomination is older
    than the selected pair's, the selected pair stays. A newer nomination still switches, as
    the controlling agent intends. The controlling side is not affected.
    """
    numbers: dict[tuple[int, tuple], int] = {}
    counter = itertools.count(1)
    incoming, complete = connection.check_incoming, connection.check_complete

    def key(protocol: Any, addr: Any) -> tuple[int, tuple]:
        return id(protocol), tuple(addr[:2])   # (host, port): an IPv6 source has 4 items

    def check_incoming(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        if "USE-CANDIDATE" in message.attributes and not connection.ice_controlling:
            numbers[key(protocol, addr)] = next(counter)   # before aioice may select the pair
        incoming(message, addr, protocol)

    def check_complete(pair: Any) -> None:
        nominated = _private(connection, "_nominated", "the selected pair")
        before = nominated.get(pair.component)
        complete(pair)
        if (connection.ice_controlling or before is None or before is pair
                or nominated.get(pair.component) is not pair):
            return
        if (numbers.get(key(before.protocol, before.remote_addr), 0)
                > numbers.get(key(pair.protocol, pair.remote_addr), 0)):
            nominated[pair.component] = before   # the controlling agent's latest choice stands

    # instance attributes: aioice calls self.check_incoming / self.check_complete
    connection.check_incoming = check_incoming
    connection.check_complete = check_complete


def check_better_pairs_after_completion(connection: Any) -> None:
    """Once a *controlled* aioice ``connection`` has completed, check (once each) the pairs
    whose priority is above the selected pair's, and those formed with remote candidates
    trickled later.

    Why: aioice stops all checking when its check list completes: ``connect()`` cancels every
    check still running, ``check_complete`` has removed the pairs not yet checked, and pairs
    of a remote candidate added afterwards are never checked. RFC 8445 (section 8.1.2) keeps
    the checks of higher-priority pairs going. It matters where only our check can open the
    way: behind the host's symmetric NAT the browser learns the host's address for a pair
    (peer-reflexive) only from a check the host sends on it. In the browser lab's TURN cell,
    with the CPU busy, Chromium's TURN-over-TCP pair completed first; the host never checked
    Chromium's better TURN/UDP candidate again, and Chromium stayed on TCP to coturn
    (tests/lab/test_browser_lab.py, turn-udp cell: once in a full run with a busy loop).

    Each such pair is checked once, 20 ms apart (RFC 8445's Ta). A check that succeeds does
    not change the selected pair by itself: the controlling agent still has to nominate it
    (and :func:`follow_latest_nomination` keeps its latest choice). The controlling side is
    left alone (aioice would nominate with every check).
    """
    from aioice.ice import CandidatePair, candidate_pair_priority

    state = CandidatePair.State
    checked: set[tuple[int, tuple]] = set()     # (id(local socket), remote address)
    connect, add_remote = connection.connect, connection.add_remote_candidate

    def priority(pair: Any) -> int:
        return candidate_pair_priority(pair.local_candidate, pair.remote_candidate,
                                       connection.ice_controlling)

    def better_pairs() -> list:
        if connection.ice_controlling or not _private(connection, "_check_list_done", "done"):
            return []
        nominated = _private(connection, "_nominated", "the selected pair")
        if not nominated:
            return []
        check_list = _private(connection, "_check_list", "the check list")
        before = set(map(id, check_list))
        pair_remote = _private(connection, "_pair_remote_candidate", "pairing")
        for remote in list(_private(connection, "_remote_candidates", "remote candidates")):
            pair_remote(remote)                         # forms only the missing pairs
        out = []
        for pair in list(check_list):
            selected = nominated.get(pair.component)
            better = selected is not None and priority(pair) > priority(selected)
            fresh = id(pair) not in before
            if fresh and not better:
                check_list.remove(pair)                 # leave the list as aioice had it
                continue
            key = (id(pair.protocol), pair.remote_addr)
            stalled = pair.state == state.IN_PROGRESS and (pair.task is None or pair.task.done())
            if better and key not in checked and (fresh or stalled or pair.state in (
                    state.FROZEN, state.WAITING)):
                checked.add(key)
                if pair.state != state.IN_PROGRESS:
                    connection.check_state(pair, state.WAITING)
                out.append(pair)
        if len(check_list) != len(before):
            connection.sort_check_list()
        return out

    def start(pair: Any) -> None:
        if not _private(connection, "_closing", "closed") and (pair.task is None or pair.task.done()):
            _check_again(connection, pair)

    def kick() -> None:
        loop = asyncio.get_running_loop()
        for i, pair in enumerate(sorted(better_pairs(), key=priority, reverse=True)):
            loop.call_later(0.02 * i, start, pair)

    async def connect_and_go_on(*args: Any, **kwargs: Any) -> None:
        await connect(*args, **kwargs)
        kick()

    async def add_remote_and_check(*args: Any, **kwargs: Any) -> None:
        await add_remote(*args, **kwargs)
        kick()

    # instance attributes: aiortc calls connection.connect / connection.add_remote_candidate
    connection.connect = connect_and_go_on
    connection.add_remote_candidate = add_remote_and_check


@lru_cache(maxsize=None)
def connection_class() -> type:
    """aioice ``Connection`` with public hooks in place of the private methods we change."""
    from aioice import Connection

    class HookedConnection(Connection):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            fix_incoming_checks(self)

        # -- read access -------------------------------------------------------------------------
        @property
        def check_list(self) -> list:
            """The live check list (CandidatePair objects)."""
            return self._check_list

        @property
        def check_list_done(self) -> bool:
            """aioice has completed or failed the check list."""
            return self._check_list_done

        @property
        def nominated_pairs(self) -> dict:
            """component -> nominated CandidatePair."""
            return self._nominated

        @property
        def protocols(self) -> list:
            """The live list of local sockets (StunProtocol objects) checks are paired on."""
            return self._protocols

        def add_protocol(self, protocol: Any) -> None:
            """Pair checks on ``protocol`` too (a socket our own gathering made)."""
            self._protocols.append(protocol)

        def remote_candidates_expected(self) -> bool:
            """More remote candidates may still be trickled."""
            return self._remote_candidates_expected()

        def take_over_nomination(self) -> None:
            """Keep aioice from nominating any pair: the subclass nominates itself."""
            self._nominating.update(self._components)

        # -- hooks (override these, not aioice's private methods) --------------------------------
        def may_pair(self, protocol: Any, remote_candidate: Any) -> bool:
            """Whether aioice may pair local ``protocol`` with ``remote_candidate``."""
            return True

        def on_remote_candidates_end(self) -> None:
            """Called after aioice has handled end-of-candidates."""

        def may_fail_check_list(self) -> bool:
            """Whether aioice may declare ICE failed now (it would with no check pending)."""
            return True

        # -- aioice's private methods, routed to the hooks ----------------------------------------
        def _pair_remote_candidate(self, remote_candidate: Any) -> None:
            keep = [p for p in self._protocols if self.may_pair(p, remote_candidate)]
            if len(keep) == len(self._protocols):
                super()._pair_remote_candidate(remote_candidate)
                return
            saved = self._protocols
            self._protocols = keep
            try:
                super()._pair_remote_candidate(remote_candidate)
            finally:
                self._protocols = saved

        def _end_remote_candidates(self) -> None:
            super()._end_remote_candidates()
            self.on_remote_candidates_end()

        def _check_list_maybe_fail(self) -> None:
            if self.may_fail_check_list():
                super()._check_list_maybe_fail()

    return HookedConnection
