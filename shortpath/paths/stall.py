"""Per-direction stall detection for the active UDP path (pure: ``now`` in, verdicts out).

Liveness (manager.py) asks "does the path answer at all?". A path can answer
every probe and still be useless: SCTP stuck in retransmissions while SACKs and
PONGs get through, one direction dead while the other works, or a loss-bound
sender delivering 2 Mbit/s of a 14 Mbit/s screen stream. What the application
feels is the age of its oldest message the peer has not received, so that is
what is watched, in each direction:

* ours: the session core reports when the oldest message the peer's session has
  not yet received went on the active path (``undelivered_since``; from each
  channel's ``received`` mark, channels.py);
* the peer's: the peer puts its own oldest such age in its acknowledgements
  (frames.py CACK); a report at or above the limit is the peer's direction
  stalling (``peer_report``).

A direction is stalled when that age reaches ``max(min_age, rtt_factor x
SRTT)``, plus the time the message may still be waiting in the path's own send
buffer: the session's pump reports how long the active path needs to send what
it holds unsent at its own rate (``local_backlog``; at most ``local_wait_cap``
counts). The pump hands a paced path only about 150 ms of its rate at a time
(session.py ``handover_limit``), so this is small; it keeps a path that is
slow but sending (its fair share of a busy link) from looking stalled, while a
path that delivers nothing is still left about ``limit`` after the message went. The delivery rate is the other input: while the sender keeps a
backlog, bytes the peer reports received per second are a sample of what the
path delivers; the relay's samples (taken while the session was on it) are the
yardstick. A UDP path that delivers under ``rate_fraction`` of the relay's
rate for ``rate_hold`` while backlogged is as bad as a stalled one.

Leaving a stalled path only helps while the relay is up (the manager checks).
A stalled path answers probes, so the liveness rule alone would bring the
session straight back to it (flapping). So each stall exit sets a hold: the
path may be returned to (after its probes pass, as after any failover) only
``backoff`` later, doubling per further stall up to ``backoff_cap``. A path
that then carries the session ``forgive_after`` without a stall clears the
count. A path that is merely slow within bounds (the age stays under the limit
and the rate near the relay's) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StallTiming:
    min_age: float = 1.0          # an undelivered message this old is a stall ...
    rtt_factor: float = 4.0       # ... or this many smoothed RTTs, whichever is longer
    rate_fraction: float = 0.25   # delivering under this share of the relay's rate ...
    rate_hold: float = 2.0        # ... for this long, with a backlog all along, is a stall too
    rate_window: float = 0.5      # one delivery-rate sample covers at least this long
    backoff: float = 5.0          # first hold before a stalled path may carry the session again
    backoff_cap: float = 60.0
    forgive_after: float = 30.0   # carried this long without a stall: the next stall starts over
    local_wait_cap: float = 0.5   # at most this much of the path's own send backlog extends the age limit


@dataclass
class _Rate:
    start: float | None = None    # backlogged since (the window's start)
    bytes: int = 0
    rate: float | None = None     # last sample, bytes/s
    low_since: float | None = None  # samples under the yardstick since


class StallWatch:
    """The stall state of one session (the manager owns one)."""

    def __init__(self, timing: StallTiming | None = None) -> None:
        self.t = timing or StallTiming()
        self.since: float | None = None     # our oldest undelivered message went out then
        self.peer_age: float = 0.0          # the peer's last reported age (seconds)
        self.peer_age_at: float | None = None
        self.local_wait: float = 0.0        # seconds of unsent data the active path holds
        self.relay_rate: float | None = None
        self._rates: dict[str, _Rate] = {}
        self.strikes = 0                    # stall exits not yet forgiven
        self.hold_until: float | None = None
        self.carried_since: float | None = None   # the current UDP path carries the session since

    # --- inputs --------------------------------------------------------------------
    def limit(self, srtt: float | None) -> float:
        return max(self.t.min_age, self.t.rtt_factor * (srtt or 0.0))

    def undelivered_since(self, since: float | None) -> None:
        self.since = since

    def local_backlog(self, seconds: float) -> None:
        """The active path holds ``seconds`` of our data unsent in its own send buffer (its
        unsent bytes over the rate it sends at; 0 when it cannot tell)."""
        self.local_wait = max(0.0, seconds)

    def grace(self) -> float:
        """What the age limit is extended by for the path's own send backlog."""
        return min(self.local_wait, self.t.local_wait_cap)

    def peer_report(self, age: float, now: float) -> None:
        self.peer_age, self.peer_age_at = age, now

    def delivered(self, path_id: str, nbytes: int, outstanding: int, now: float, *, relay: bool) -> None:
        """The peer reported ``nbytes`` more received on ``path_id`` (the active one);
        ``outstanding``: bytes sent and still not received after that."""
        r = self._rates.setdefault(path_id, _Rate())
        if r.start is None:
            r.start, r.bytes = now, 0
            if outstanding <= 0:
                r.start = None
            return
        r.bytes += nbytes
        if now - r.start >= self.t.rate_window:
            r.rate = r.bytes / (now - r.start)
            if relay:
                self.relay_rate = r.rate if self.relay_rate is None else max(r.rate, 0.5 * self.relay_rate)
            elif self.relay_rate is not None and r.rate < self.t.rate_fraction * self.relay_rate:
                if r.low_since is None:
                    r.low_since = r.start
            else:
                r.low_since = None
            r.start, r.bytes = now, 0
        if outstanding <= 0:          # the sender ran dry: app-limited, not a sample
            r.start, r.low_since = None, None

    def path_changed(self, path_id: str | None, udp: bool, now: float) -> None:
        """The session now sends on ``path_id``; start its figures afresh."""
        self.since = None
        self.peer_age, self.peer_age_at = 0.0, None
        self.local_wait = 0.0
        if path_id is not None:
            self._rates[path_id] = _Rate()
        self.carried_since = now if udp else None

    def forget(self, path_id: str) -> None:
        self._rates.pop(path_id, None)

    # --- verdicts ---------------------------------------------------------------------
    def check(self, path_id: str, srtt: float | None, now: float) -> str | None:
        """Why the active UDP path counts as stalled now, or None."""
        lim = self.limit(srtt)
        if self.since is not None and now >= self.since + lim + self.grace():   # the very deadline() value
            return f"stall: oldest undelivered {now - self.since:.2f}s (limit {lim + self.grace():.2f}s)"
        if self.peer_age_at is not None and self.peer_age >= lim:
            self.peer_age_at = None        # one report, one verdict
            return f"stall: peer's oldest undelivered {self.peer_age:.2f}s (limit {lim:.2f}s)"
        r = self._rates.get(path_id)
        if r is not None and r.low_since is not None and r.rate is not None and self.relay_rate \
                and now - r.low_since >= self.t.rate_hold:
            share = r.rate / self.relay_rate
            r.low_since = None
            return f"stall: delivering {share:.0%} of the relay's rate for {self.t.rate_hold:.1f}s"
        if self.carried_since is not None and now - self.carried_since >= self.t.forgive_after:
            self.strikes = 0
        return None

    def deadline(self, srtt: float | None) -> float | None:
        """When check() may next say yes without a new input."""
        return None if self.since is None else self.since + self.limit(srtt) + self.grace()

    def left(self, now: float) -> float:
        """We left a path for a stall (or followed the peer that did): returns the hold."""
        self.strikes += 1
        hold = min(self.t.backoff_cap, self.t.backoff * 2 ** (self.strikes - 1))
        self.hold_until = now + hold
        self.carried_since = None
        return hold

    def may_return(self, now: float) -> bool:
        return self.hold_until is None or now >= self.hold_until
