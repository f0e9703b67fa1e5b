"""Which peer address a managed session sends to, and when it may move (pure).

The host's managed listener (``managed.py``, UDP 3390) is ICE-lite: it answers
the client's authenticated Binding requests and learns the client's address
from them. A check's MESSAGE-INTEGRITY covers the message, not the source
address, so a check captured on the wire and resent from elsewhere is still
"authentic". Before this module, a replayed USE-CANDIDATE check moved the
session's DTLS stream to the replayer (issue #11 item 2). The rules now:

* **Transaction ids are remembered** (``txid_ttl`` seconds, at most
  ``txid_max`` per session). The same id again from the same address is a
  retransmission: answered, nothing changes. From another address it is a
  replay: dropped, not even answered.
* **The first address** a session is bound to is the one its first fresh
  USE-CANDIDATE check came from (regular nomination; the DTLS handshake to it
  then proves the peer).
* **Moving** the bound address needs, for the new address, all of:

  1. a fresh authenticated check from it (that only starts things);
  2. our *own* consent check to it answered (RFC 7675 style): a Binding
     request keyed with the *peer's* ICE password, which never crossed the
     wire in clear; the answer must come from that address and carry our
     transaction id;
  3. DTLS that our DTLS stack authenticated (decrypted into SCTP) arriving
     from it;
  4. at least ``min_move_interval`` since the last move.

  Until then DTLS keeps going to the bound address. A consented address may
  *deliver* DTLS to the session (the DTLS stack discards anything forged), but
  nothing is *sent* there.
* A consent request is retransmitted ``consent_attempts`` times (``consent_rto``
  doubling); an address that never answers is forgotten, as is a consented
  one that sends no authenticated DTLS within ``pending_ttl``. At most
  ``max_pending`` addresses are in flight per session.

Everything here takes ``now`` and returns decisions; the listener is the pump
(sends the requests, owns the socket and the timer). Tested as tables in
tests/unit/test_managed_binding.py.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

Addr = tuple[str, int]


@dataclass(frozen=True)
class BindingLimits:
    txid_ttl: float = 60.0          # how long a check's transaction id is remembered
    txid_max: int = 512             # ... and how many per session (oldest forgotten first)
    consent_rto: float = 0.25       # first consent retransmission; doubles each time
    consent_attempts: int = 4       # requests per address before giving up (~3.75 s)
    pending_ttl: float = 15.0       # a consented address must carry authenticated DTLS by then
    max_pending: int = 4            # addresses being verified at once
    min_move_interval: float = 2.0  # between two moves of one session


@dataclass(frozen=True)
class CheckOutcome:
    """What to do with one authenticated Binding request."""
    answer: bool                    # send a Binding success response
    reason: str                     # counter name suffix: see the table in on_check
    nominated: bool = False         # the session got its first address
    consent: bool = False           # a consent check to this address should be sent now


@dataclass
class _Pending:
    since: float
    consented_at: Optional[float] = None
    attempts: int = 0
    next_send: float = 0.0
    txids: set = field(default_factory=set)


class PathBinding:
    """One managed session's address state. See the module docstring."""

    def __init__(self, limits: BindingLimits = BindingLimits()) -> None:
        self.limits = limits
        self.bound: Optional[Addr] = None
        self.last_move: Optional[float] = None
        self.moves = 0
        self._txids: OrderedDict[bytes, tuple[Addr, float]] = OrderedDict()
        self._pending: dict[Addr, _Pending] = {}
        self._ours: dict[bytes, Addr] = {}   # our consent requests in flight

    # -- the peer's checks -----------------------------------------------------------
    def on_check(self, addr: Addr, txid: bytes, use_candidate: bool, now: float) -> CheckOutcome:
        """An authenticated Binding request (integrity already verified).

        reasons: ``retransmit`` (same id, same address), ``replay`` (same id,
        other address: dropped), ``nominated`` (first address), ``waiting``
        (no address yet, not nominating), ``bound`` (from the bound address),
        ``verify`` (new address: consent check started), ``verifying``
        (already being verified), ``too-many-pending`` (answered, not verified).
        """
        self._expire(now)
        seen = self._txids.get(txid)
        if seen is not None:
            return CheckOutcome(answer=seen[0] == addr, reason="retransmit" if seen[0] == addr else "replay")
        self._txids[txid] = (addr, now)
        while len(self._txids) > self.limits.txid_max:
            self._txids.popitem(last=False)
        if self.bound is None:
            if use_candidate:
                self.bound = addr
                return CheckOutcome(answer=True, reason="nominated", nominated=True)
            return CheckOutcome(answer=True, reason="waiting")
        if addr == self.bound:
            return CheckOutcome(answer=True, reason="bound")
        if addr in self._pending:
            return CheckOutcome(answer=True, reason="verifying")
        if len(self._pending) >= self.limits.max_pending:
            return CheckOutcome(answer=True, reason="too-many-pending")
        self._pending[addr] = _Pending(since=now, next_send=now)
        return CheckOutcome(answer=True, reason="verify", consent=True)

    # -- our consent checks ----------------------------------------------------------
    def consent_due(self, now: float) -> list[Addr]:
        """Addresses a consent request should be (re)sent to now; call
        :meth:`consent_sent` for each one actually sent."""
        self._expire(now)
        return [a for a, p in self._pending.items()
                if p.consented_at is None and p.attempts < self.limits.consent_attempts and p.next_send <= now]

    def consent_sent(self, addr: Addr, txid: bytes, now: float) -> None:
        p = self._pending.get(addr)
        if p is None:
            return
        p.attempts += 1
        p.next_send = now + self.limits.consent_rto * (2 ** (p.attempts - 1))
        p.txids.add(txid)
        self._ours[txid] = addr

    def is_our_request(self, txid: bytes) -> bool:
        return txid in self._ours

    def on_consent_response(self, addr: Addr, txid: bytes, now: float) -> bool:
        """An authenticated success response to one of our requests. True if
        it gave ``addr`` consent (it must come from where we sent the request)."""
        sent_to = self._ours.get(txid)
        if sent_to is None or sent_to != addr:
            return False
        p = self._pending.get(addr)
        if p is None:
            return False
        for t in p.txids:
            self._ours.pop(t, None)
        p.txids.clear()
        if p.consented_at is None:
            p.consented_at = now
        return True

    # -- DTLS ---------------------------------------------------------------------
    def accepts_dtls(self, addr: Addr) -> bool:
        """May DTLS from ``addr`` be handed to the session's DTLS stack?"""
        if addr == self.bound:
            return True
        p = self._pending.get(addr)
        return p is not None and p.consented_at is not None

    def on_authenticated_dtls(self, addr: Addr, now: float) -> bool:
        """The DTLS stack authenticated a datagram from ``addr``. True if the
        session moved there (it becomes :attr:`bound`)."""
        if addr == self.bound:
            return False
        self._expire(now)
        p = self._pending.get(addr)
        if p is None or p.consented_at is None:
            return False
        if self.last_move is not None and now - self.last_move < self.limits.min_move_interval:
            return False
        del self._pending[addr]
        for t in p.txids:
            self._ours.pop(t, None)
        self.bound = addr
        self.last_move = now
        self.moves += 1
        return True

    # -- time --------------------------------------------------------------------------
    def addresses(self) -> list[Addr]:
        """Addresses whose DTLS the session accepts (bound first)."""
        out = [self.bound] if self.bound is not None else []
        return out + [a for a, p in self._pending.items() if p.consented_at is not None]

    def pending(self) -> dict[Addr, str]:
        """Addresses being verified: "checking" or "consented"."""
        return {a: ("checking" if p.consented_at is None else "consented") for a, p in self._pending.items()}

    def next_deadline(self) -> Optional[float]:
        """When :meth:`consent_due` / expiry next has work (None: nothing pending)."""
        times = []
        for p in self._pending.values():
            if p.consented_at is None:
                times.append(p.next_send)   # the next request, or giving up after the last
            else:
                times.append(p.consented_at + self.limits.pending_ttl)
        return min(times) if times else None

    def _expire(self, now: float) -> list[Addr]:
        ttl = self.limits.txid_ttl
        while self._txids:
            txid, (_addr, t) = next(iter(self._txids.items()))
            if now - t < ttl:
                break
            self._txids.popitem(last=False)
        gone = []
        for a, p in list(self._pending.items()):
            if p.consented_at is None:
                dead = p.attempts >= self.limits.consent_attempts and now >= p.next_send
            else:
                dead = now - p.consented_at >= self.limits.pending_ttl
            if dead:
                for t in p.txids:
                    self._ours.pop(t, None)
                del self._pending[a]
                gone.append(a)
        return gone

    def expire(self, now: float) -> list[Addr]:
        """Forget timed-out transaction ids and pending addresses; returns the
        addresses no longer pending (the pump unmaps them)."""
        return self._expire(now)
