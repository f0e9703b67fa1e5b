"""The path manager (pure: events and ``now`` in, actions out; no I/O, no clock).

It decides which path a session *sends* on. Each side runs one; receiving is
accepted on any path (the reliable channel's sequence numbers make that safe,
see shortpath/session/reliable.py). The client is the *initiator*: only it starts upgrade
attempts; the host answers them through signaling.

Path states and transitions (one table; rules below it)
------------------------------------------------------
======================  ==========================  ==================================
state                   event                       -> state, actions
======================  ==========================  ==================================
(none)                  path_up                     up; SwitchPath if better than active
up (active)             silent for dead_after       standby; SwitchPath(relay, failover)
                        (packets still heard, see   ... deferred until they stop for
                        heard()): stalled           dead_after or the wait reaches
                                                    stall_limit
up (active), relay up   stalled (stall.py: oldest   standby; SwitchPath(relay, failover:
                        undelivered message older   stall: ...); no return before the
                        than max(1 s, 4 SRTT), the  stall hold (5 s, doubling per stall)
                        peer reports so, or a
                        fraction of the relay's
                        delivery rate)
up (active)             silent for probe_after      up; SendProbe
up                      idle for keepalive_interval up; SendProbe(keepalive) (0 = never)
up (active)             relay_lost                  up; SendProbe, answer due within dead_after
                                                    (peer said gone) or alone_dead_after
up (active), no relay   silent for alone_dead_after SwitchPath(relay) = the session ends
up (active)             peer failed over to relay   standby; SwitchPath(relay, failover: peer)
up / standby            path_down                   (none); SwitchPath(relay) if active;
                                                    upgrade retry scheduled (initiator)
standby                 every standby_probe_interval standby; SendProbe
standby                 answered for return_hold    up; SwitchPath(path, recovered)
                        and past the stall hold
standby                 standby_timeout, no answer  (none); ClosePath; upgrade retry
======================  ==========================  ==================================

Rules:

* *Silent* means: something that calls for an answer (DATA, PING) was sent on
  the path and nothing at all has been received on it since. Any received
  frame -- data, ack, pong -- proves the path alive. Probes go out only while
  an answer is overdue, so a busy path costs no extra packets and an idle one
  costs a keepalive every ``keepalive_interval`` (spaced to the NAT binding
  lifetime, not chattier; 0 turns keepalives off). The interval is a pool
  policy knob with a per-process override, resolved in
  ``shortpath.config.keepalive_interval``. Answering the peer's probe counts
  as sending (``sent(..., answer_expected=False)``): the PONG crosses both
  NATs outbound just as a probe would, so on an idle session only one side
  sends keepalives. The host (responder) waits ``RESPONDER_KEEPALIVE_SLACK``
  times longer than the client, so it is the client's timer that runs out
  first and the host's probes only fill in when the client's stop.
* When the relay goes away while a UDP path is active, that path is all the
  session has left (``relay_lost``). It is probed at once. If the gateway said
  the *peer* is gone (a crashed host takes its relay leg and its UDP socket
  with it) the path gets ``dead_after`` to answer, so the session learns it
  then instead of at the next keepalive. Otherwise (gateway restart) and once
  the peer has answered, a silence is a hiccup to ride out, not a reason to
  end the session: there is nowhere to fail over to, so the path is probed
  every ``standby_probe_interval`` and only declared dead after
  ``alone_dead_after``.
* Failover happens ``dead_after`` after the first unanswered send: with the
  defaults, within 0.6 s of a path going dark while traffic flows.
* When the peer fails over to the relay (its ``switch`` signal says so), this
  side follows at once: the peer has just seen the path silent for
  ``dead_after``, and its acks and answers now come by the relay. Waiting for
  our own evidence would cost another ``dead_after`` whenever we had nothing
  in flight when the path died (e.g. a host that only answers). Switches the
  peer makes for other reasons (upgrade, recovered) are its own business.
* Return after a failover needs the old path to answer probes continuously for
  ``return_hold``, doubled for each further failover within ``flap_window``
  (capped at ``return_hold_max``): a path that keeps dying is trusted less.
* A path that answers but does not deliver (stall.py) is left like a silent
  one, but only while the relay is up: with nothing better to go to it is kept.
  A peer's failover marker that says ``stall:`` sets the same hold here, so both
  sides retry the path at about the same time.
* Upgrade retries (initiator only) start when no UDP path exists, after a
  backoff of ``upgrade_backoff`` doubling to ``upgrade_backoff_cap``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .actions import Action, ClosePath, SendProbe, StartUpgrade, SwitchPath
from .path import RELAY, Quality, better
from .stall import StallTiming, StallWatch

RELAY_ID = "relay"
#: the responder's keepalive timer runs this much longer than the initiator's (see Rules)
RESPONDER_KEEPALIVE_SLACK = 1.25


@dataclass(frozen=True)
class PathTiming:
    probe_after: float = 0.15           # send a probe when an answer is this late
    dead_after: float = 0.6             # fail over when an answer is this late
    alone_dead_after: float = 5.0       # ... when there is no relay left to fail over to
    stall_limit: float = 2.0            # answers this late fail over even while packets are heard
    keepalive_interval: float = 15.0    # idle keepalive (NAT UDP bindings last >= 30 s); 0 = off
    standby_probe_interval: float = 0.25
    return_hold: float = 1.0            # a failed path must answer this long before we return
    return_hold_max: float = 16.0
    flap_window: float = 60.0
    standby_timeout: float = 20.0       # give up on a standby path, start afresh
    upgrade_backoff: float = 0.5
    upgrade_backoff_cap: float = 1.5


@dataclass
class PathState:
    path_id: str
    kind: str
    state: str                           # "up" | "standby"
    since: float
    last_rx: float
    last_tx: float
    awaiting_since: float | None = None
    last_probe: float | None = None
    recovered_since: float | None = None
    last_heard: float | None = None      # last packet below the frames (heard()), active path only
    quality: Quality = field(default_factory=Quality)
    probes: deque = field(default_factory=lambda: deque(maxlen=20))   # True = answered
    probes_total: int = 0          # lifetime counts, for stats
    probes_lost: int = 0


class PathManager:
    def __init__(self, now: float, *, initiator: bool, upgrade: bool = True,
                 timing: PathTiming | None = None, stall_timing: StallTiming | None = None) -> None:
        self.t = timing or PathTiming()
        self.initiator = initiator
        self.keepalive_every = self.t.keepalive_interval * (1.0 if initiator else RESPONDER_KEEPALIVE_SLACK)
        self.upgrade_enabled = upgrade
        self.paths: dict[str, PathState] = {RELAY_ID: PathState(RELAY_ID, RELAY, "up", now, now, now)}
        self.active = RELAY_ID
        self.attempt = 0
        self.upgrading = False
        self.upgrade_failures = 0
        self.next_upgrade_at: float | None = now if (initiator and upgrade) else None
        self.failovers: deque[float] = deque()
        self.relay_up = True             # False once the relay path is lost (no failover target)
        self.peer_gone_hint = False      # the relay ended saying the peer is gone; unproven yet
        self.history: list[dict] = []
        self._out: list[Action] = []
        #: per-direction stall detection of the active UDP path (stall.py); the session
        #: core feeds it (undelivered_since, delivered, peer_report)
        self.stall = StallWatch(stall_timing)

    # --- outputs ---------------------------------------------------------------
    def actions(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _switch(self, to: str, reason: str, now: float) -> None:
        if to == self.active:
            return
        self._out.append(SwitchPath(to=to, from_=self.active, reason=reason))
        self.history.append({"t": now, "from": self.paths[self.active].kind if self.active in self.paths else "?",
                             "to": self.paths[to].kind, "reason": reason})
        self.active = to
        self.stall.path_changed(to, to != RELAY_ID, now)

    # --- inputs ------------------------------------------------------------------
    def path_up(self, path_id: str, kind: str, now: float) -> None:
        """A UDP path passed ICE + DTLS and its channels are open."""
        self.upgrading = False
        self.upgrade_failures = 0
        self.next_upgrade_at = None
        for other in [p for p in self.paths.values() if p.path_id not in (RELAY_ID, path_id)]:
            # one UDP path at a time: a fresh one replaces a standby one
            if other.state == "standby" or other.path_id != self.active:
                del self.paths[other.path_id]
                self._out.append(ClosePath(other.path_id, "replaced by a new path"))
        st = PathState(path_id, kind, "up", now, now, now)
        self.paths[path_id] = st
        cur = self.paths[self.active]
        if better(kind, st.quality, cur.kind, cur.quality):
            self._switch(path_id, "upgrade", now)

    def path_down(self, path_id: str, reason: str, now: float) -> None:
        st = self.paths.pop(path_id, None)
        if st is None or path_id == RELAY_ID:
            return
        if self.active == path_id:
            self.failovers.append(now)
            self.active = RELAY_ID
            self._out.append(SwitchPath(to=RELAY_ID, from_=path_id, reason=f"failover: {reason}"))
            self.history.append({"t": now, "from": st.kind, "to": RELAY, "reason": f"failover: {reason}"})
        self._schedule_upgrade(now)

    def upgrade_failed(self, attempt: int, reason: str, now: float) -> None:
        if attempt != self.attempt:
            return
        self.upgrading = False
        self.upgrade_failures += 1
        self.history.append({"t": now, "from": None, "to": None, "reason": f"upgrade failed: {reason}"})
        self._schedule_upgrade(now)

    def sent(self, path_id: str, now: float, answer_expected: bool = True) -> None:
        st = self.paths.get(path_id)
        if st is None:
            return
        st.last_tx = now
        if answer_expected and st.awaiting_since is None:
            st.awaiting_since = now

    def heard(self, path_id: str, at: float) -> None:
        """A packet from the peer arrived on ``path_id`` at ``at`` (below the
        session's frames: an SCTP SACK or retransmission, authenticated by
        DTLS). On the active path it answers a wait that began at or before
        ``at``: frames can sit behind a retransmission timeout in SCTP's one
        send queue while the path works. It never starts a standby path's
        recovery; that still takes answered probes."""
        st = self.paths.get(path_id)
        if st is None or st.state != "up":
            return
        if st.last_heard is None or at > st.last_heard:
            st.last_heard = at

    def _heard_deadline(self, st: PathState) -> float | None:
        """While packets are heard on the active path during a wait for an
        answer, failover waits until they stop for ``dead_after`` or the wait
        reaches ``stall_limit``: the deadline for that, or None if nothing
        was heard since the wait began."""
        aw = st.awaiting_since
        if aw is None or st.last_heard is None or st.last_heard < aw:
            return None
        dead = self._dead_after()
        return min(max(aw + dead, st.last_heard + dead), aw + max(dead, self.t.stall_limit))

    def received(self, path_id: str, now: float) -> None:
        st = self.paths.get(path_id)
        if st is None:
            return
        st.last_rx = now
        st.awaiting_since = None
        if path_id == self.active:
            self.peer_gone_hint = False      # the peer answered: it is not gone
        if st.state == "standby" and st.recovered_since is None:
            st.recovered_since = now
            # Judge a recovering path on what it does from now on: the probes lost
            # while it was dark must not keep it from ever being chosen again.
            st.probes.clear()
            st.quality.loss = 0.0

    def peer_failover(self, reason: str, now: float) -> None:
        """The peer moved to the relay because the active UDP path failed: follow it."""
        st = self.paths.get(self.active)
        if st is None or self.active == RELAY_ID or st.state != "up":
            return
        st.state, st.since, st.recovered_since, st.awaiting_since = "standby", now, None, None
        st.last_probe = None
        self.failovers.append(now)
        if "stall:" in reason:          # the peer left a stalled path: hold off returning as it does
            self.stall.left(now)
        self._switch(RELAY_ID, f"failover: peer ({reason})", now)

    def relay_lost(self, now: float, peer_gone: bool = False) -> None:
        """The relay path ended while a UDP path carries the session. Probe the active
        path now and count it silent from now on: with ``peer_gone`` (the gateway said
        the peer's leg ended) it must answer within ``dead_after``, otherwise within
        ``alone_dead_after``; if it does not, SwitchPath(relay) follows, which the
        session turns into its end."""
        self.relay_up = False
        self.peer_gone_hint = peer_gone
        st = self.paths.get(self.active)
        if st is None or self.active == RELAY_ID or st.state != "up":
            return
        if st.awaiting_since is None:
            st.awaiting_since = now
        st.last_probe = now
        self._out.append(SendProbe(self.active))

    def relay_back(self, now: float) -> None:
        """A new relay leg replaced the lost one (a resume, #15): there is a failover
        target again. With no working UDP path (none, or only standby ones that went
        silent with everything else: a changed network) the initiator tries UDP afresh
        at once -- a fresh ICE agent is our ICE restart; a new path replaces a standby
        one (path_up). An attempt already scheduled keeps its time."""
        self.relay_up = True
        self.peer_gone_hint = False
        if self.initiator and self.upgrade_enabled and not self.upgrading and self.next_upgrade_at is None \
                and not any(p.path_id != RELAY_ID and p.state == "up" for p in self.paths.values()):
            self.next_upgrade_at = now

    def _may_upgrade(self) -> bool:
        """No attempt while the session has no path to signal on (relay lost, on the relay)."""
        return self.relay_up or self.active != RELAY_ID

    def _dead_after(self) -> float:
        if self.relay_up or self.peer_gone_hint:
            return self.t.dead_after
        return max(self.t.dead_after, self.t.alone_dead_after)

    def probe_result(self, path_id: str, rtt: float | None, now: float, sent_at: float | None = None) -> None:
        """A probe on ``path_id`` was answered (rtt) or given up on (None). A probe
        given up on that was sent (``sent_at``) before a standby path began to
        recover was lost in the dark: it counts in the lifetime figures but not
        against the recovery (the recent loss the comparator looks at)."""
        st = self.paths.get(path_id)
        if st is None:
            return
        st.probes_total += 1
        st.probes_lost += rtt is None
        if rtt is None and sent_at is not None and st.recovered_since is not None and sent_at < st.recovered_since:
            return
        st.probes.append(rtt is not None)
        st.quality.loss = 1.0 - sum(st.probes) / len(st.probes)
        if rtt is not None:
            self.rtt_sample(path_id, rtt)

    def rtt_sample(self, path_id: str, rtt: float) -> None:
        """One round-trip sample on ``path_id`` (any PING answered, probe or not).
        The session's one RTT estimator: a smoothed RTT per path (RFC 6298 gain 1/8),
        used by the comparator and reported in the session's info."""
        st = self.paths.get(path_id)
        if st is None:
            return
        q = st.quality
        q.rtt = rtt if q.rtt is None else 0.875 * q.rtt + 0.125 * rtt

    def allow_upgrade(self, now: float) -> None:
        """UDP upgrades are allowed from now on (the session is confirmed end to end);
        the initiator starts its first attempt at the next timer."""
        if self.upgrade_enabled:
            return
        self.upgrade_enabled = True
        if self.initiator and not self.upgrading and self.next_upgrade_at is None and \
                not any(p != RELAY_ID for p in self.paths):
            self.next_upgrade_at = now

    # --- time ------------------------------------------------------------------
    def _schedule_upgrade(self, now: float) -> None:
        if not (self.initiator and self.upgrade_enabled) or self.upgrading:
            return
        if any(p.path_id != RELAY_ID for p in self.paths.values()):
            return
        delay = min(self.t.upgrade_backoff_cap, self.t.upgrade_backoff * (2 ** max(0, self.upgrade_failures - 1)))
        self.next_upgrade_at = now + (delay if self.upgrade_failures or self.failovers else 0.0)

    def return_hold(self, now: float) -> float:
        while self.failovers and now - self.failovers[0] > self.t.flap_window:
            self.failovers.popleft()
        extra = max(0, len(self.failovers) - 1)
        return min(self.t.return_hold_max, self.t.return_hold * (2 ** extra))

    def handle_timer(self, now: float) -> None:
        t = self.t
        if self.next_upgrade_at is not None and now >= self.next_upgrade_at and self._may_upgrade():
            self.next_upgrade_at = None
            self.attempt += 1
            self.upgrading = True
            self._out.append(StartUpgrade(self.attempt, "initial" if self.attempt == 1 else "retry"))
        for st in list(self.paths.values()):
            if st.path_id == RELAY_ID:
                continue
            if st.state == "up":
                # Compare against the very deadlines get_timer() returns, so a
                # timer firing at its deadline always acts (no float drift).
                aw = st.awaiting_since
                late = None if aw is None else now - aw
                dead = self._dead_after()
                heard_until = self._heard_deadline(st) if st.path_id == self.active else None
                stalled = self.stall.check(st.path_id, st.quality.rtt, now) \
                    if st.path_id == self.active and self.relay_up else None
                if stalled is not None:
                    # It answers, but what we send is not delivered (or far too slowly):
                    # the relay does better. Return only after a hold that grows per stall.
                    st.state, st.since, st.recovered_since, st.awaiting_since = "standby", now, None, None
                    st.last_probe = None
                    st.last_heard = None
                    self.failovers.append(now)
                    hold = self.stall.left(now)
                    self._switch(RELAY_ID, f"failover: {stalled}; retry in {hold:.0f}s", now)
                elif st.path_id == self.active and aw is not None and now >= aw + dead and (
                        heard_until is None or now >= heard_until):
                    why = "silent" if heard_until is None else "stalled (packets heard, no answer)"
                    st.state, st.since, st.recovered_since, st.awaiting_since = "standby", now, None, None
                    st.last_probe = None
                    st.last_heard = None
                    self.failovers.append(now)
                    self._switch(RELAY_ID, f"failover: {why} {late:.2f}s", now)
                elif aw is not None and now >= aw + t.probe_after and (
                        st.last_probe is None or st.last_probe < aw or self._reprobe_at(st) <= now):
                    st.last_probe = now
                    self._out.append(SendProbe(st.path_id))
                elif self.keepalive_every > 0 and now >= st.last_tx + self.keepalive_every:
                    st.last_probe = now
                    self._out.append(SendProbe(st.path_id, keepalive=True))
            else:  # standby
                if st.recovered_since is not None and now >= st.last_rx + t.dead_after + 1e-6:
                    st.recovered_since = None          # answered once, then silent again
                if st.recovered_since is not None and now >= st.recovered_since + self.return_hold(st.recovered_since) \
                        and self.stall.may_return(now):
                    st.state, st.since, st.awaiting_since = "up", now, None
                    cur = self.paths[self.active]
                    if better(st.kind, st.quality, cur.kind, cur.quality):
                        self._switch(st.path_id, "recovered", now)
                elif st.recovered_since is None and now >= st.since + t.standby_timeout:
                    del self.paths[st.path_id]
                    self._out.append(ClosePath(st.path_id, "standby path never recovered"))
                    self._schedule_upgrade(now)
                elif now >= (st.last_probe or st.since) + t.standby_probe_interval or st.last_probe is None:
                    st.last_probe = now
                    self._out.append(SendProbe(st.path_id))

    def _reprobe_at(self, st: PathState) -> float:
        """Alone on a silent path (no relay): probe again every standby_probe_interval,
        so one lost probe does not leave a hiccup unnoticed once it is over."""
        if self.relay_up or st.path_id != self.active or st.last_probe is None:
            return float("inf")
        return st.last_probe + self.t.standby_probe_interval

    def get_timer(self) -> float | None:
        t = self.t
        deadlines = []
        if self.next_upgrade_at is not None and self._may_upgrade():
            deadlines.append(self.next_upgrade_at)
        for st in self.paths.values():
            if st.path_id == RELAY_ID:
                continue
            if st.state == "up":
                if st.path_id == self.active and self.relay_up:
                    stall_at = self.stall.deadline(st.quality.rtt)
                    if stall_at is not None:
                        deadlines.append(stall_at)
                if st.awaiting_since is not None:
                    if st.last_probe is None or st.last_probe < st.awaiting_since:
                        deadlines.append(st.awaiting_since + t.probe_after)
                    elif self._reprobe_at(st) != float("inf"):
                        deadlines.append(max(st.awaiting_since + t.probe_after, self._reprobe_at(st)))
                    if st.path_id == self.active:
                        heard_until = self._heard_deadline(st)
                        deadlines.append(st.awaiting_since + self._dead_after() if heard_until is None
                                         else heard_until)
                if self.keepalive_every > 0:
                    deadlines.append(st.last_tx + self.keepalive_every)
            else:
                deadlines.append((st.last_probe or st.since) + t.standby_probe_interval)
                if st.recovered_since is not None:
                    deadlines.append(max(st.recovered_since + self.return_hold(st.recovered_since),
                                         self.stall.hold_until or 0.0))
                    deadlines.append(st.last_rx + t.dead_after + 1e-6)
                else:
                    deadlines.append(st.since + t.standby_timeout)
        return min(deadlines) if deadlines else None
