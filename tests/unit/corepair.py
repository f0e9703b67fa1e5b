"""Test helpers shared by the session-core timelines (test_connection, test_channels,
test_resume, test_close, test_stall, test_redundancy) and the path manager's
(test_path_manager): a fake clock (``Timeline``), and ``Pair``, two SessionConnections
joined by a scripted link with no sockets and no sleeps. The link plays the pump's part:
it carries transmits with a delay, holds a dark path's reliable frames and delivers them
when it lights up (as SCTP retransmission does), loses its best-effort ones, sets up UDP
attempts, and tells each side when a path ends."""

from __future__ import annotations

import heapq
from typing import Callable

from shortpath.config import Timing
from shortpath.paths.manager import RELAY_ID, PathTiming
from shortpath.session import events as ev
from shortpath.session.connection import SessionConnection
from shortpath.wire import frames as fr
from shortpath.wire.frames import MAX_SESSION_PAYLOAD, Frame


class Timeline:
    """A fake clock for pure code: callbacks scheduled with ``at`` and the timer of the
    object(s) under test, run in time order by ``run``. A subclass says what its timer is
    (``next_timer``) and what to do after every step (``settle``: take outputs, send frames)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.q: list = []             # (time, seq, fn)
        self.seq = 0

    def at(self, t: float, fn) -> None:
        self.seq += 1
        heapq.heappush(self.q, (t, self.seq, fn))

    def settle(self) -> None:
        pass

    def next_timer(self) -> tuple[float, Callable[[float], None]] | None:
        """(when, handle_timer) of the earliest timer under test, or None."""
        return None

    def run(self, until: float) -> None:
        same_instant = 0
        while True:
            self.settle()
            timer = self.next_timer()
            nxt = self.q[0][0] if self.q else None
            if timer is not None and (nxt is None or timer[0] <= nxt) and timer[0] <= until:
                same_instant = same_instant + 1 if timer[0] <= self.now else 0
                assert same_instant < 1000, "the timer does not move on after handle_timer"
                self.now = max(self.now, timer[0])
                timer[1](self.now)
                continue
            if nxt is None or nxt > until:
                self.now = until
                return
            t, _, fn = heapq.heappop(self.q)
            self.now = max(self.now, t)
            fn()


SIDES = ("client", "host")
OTHER = {"client": "host", "host": "client"}
#: what the gateway tells a peer when the other side's relay leg ends
GONE = {"client": "client-gone", "host": "host-gone"}


def msg(side: str, i: int, size: int = 32) -> bytes:
    head = b"%s%08d" % (side[0].encode(), i)
    return head + b"." * max(0, size - len(head))


class FakePath:
    """Both directions of one path."""

    def __init__(self, path_id: str, kind: str, delay: float) -> None:
        self.path_id, self.kind, self.delay = path_id, kind, delay
        self.dark = False
        self.open = {s: True for s in SIDES}
        self.held: list[tuple[str, bytes]] = []     # (sender, frame) sent reliably while dark


class Pair(Timeline):
    """Two session cores (client and host) joined by scripted paths: the relay from the
    start, ``udp-<n>`` once an upgrade attempt succeeds."""

    def __init__(self, *, timing: Timing | None = None, path_timing: PathTiming | None = None,
                 relay_delay: float = 0.02, udp_delay: float = 0.003, setup: float = 0.2,
                 upgrade_ok: bool = True) -> None:
        super().__init__()
        self.timing = timing or Timing()
        self.cores = {s: SessionConnection(s, 0.0, timing=self.timing, path_timing=path_timing or PathTiming(),
                                           session_id="t") for s in SIDES}
        self.paths: dict[str, FakePath] = {}
        self.udp_delay, self.setup, self.upgrade_ok = udp_delay, setup, upgrade_ok
        self.inbox = {s: [] for s in SIDES}          # delivered to each application, in order
        self.unconsumed = {s: 0 for s in SIDES}
        self.consuming = {s: True for s in SIDES}
        self.events = {s: [] for s in SIDES}         # (time, event)
        self.sent = {s: [] for s in SIDES}           # messages each application sent
        self.stalls = {s: 0 for s in SIDES}          # writer ticks that found the window full
        self.max_unacked = {s: 0 for s in SIDES}
        self.on_event = None                         # test hook: fn(side, event)
        self.paths[RELAY_ID] = FakePath(RELAY_ID, "tcp-relay", relay_delay)
        for core in self.cores.values():
            core.path_added(RELAY_ID, "tcp-relay", 0.0)

    # --- scheduling (Timeline) ---------------------------------------------------------
    def settle(self) -> None:
        self.pump()

    def next_timer(self):
        timers = [(c.get_timer(), s) for s, c in self.cores.items() if c.get_timer() is not None]
        if not timers:
            return None
        t, side = min(timers)
        return t, self.cores[side].handle_timer

    # --- the pump's part ----------------------------------------------------------------
    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for side, core in self.cores.items():
                while (e := core.next_event()) is not None:
                    busy = True
                    self._handle(side, e)
                for t in self._transmits(side, core):
                    busy = True
                    self._transmit(side, t)
                self.max_unacked[side] = max(self.max_unacked[side], core.unacked_bytes)

    def _transmits(self, side: str, core):
        """What ``core`` hands the pump now (a subclass may limit what the path takes)."""
        return core.transmits()

    def _transmit(self, side: str, t) -> None:
        path = self.paths.get(t.path_id)
        if path is None or not path.open[side]:
            self.cores[side].transmit_refused(t)
            return
        if path.dark:
            if t.reliable:
                path.held.append((side, t.frame))
            return
        self.at(self.now + path.delay, lambda: self._deliver(OTHER[side], t.path_id, t.frame))

    def _deliver(self, to: str, path_id: str, frame: bytes) -> None:
        path = self.paths.get(path_id)
        if path is not None and path.open[to]:
            self.cores[to].receive_frame(path_id, fr.decode_one(frame, MAX_SESSION_PAYLOAD), self.now)

    def _handle(self, side: str, e) -> None:
        self.events[side].append((self.now, e))
        if self.on_event is not None:
            self.on_event(side, e)
        core = self.cores[side]
        if isinstance(e, ev.DataReceived):
            self.inbox[side].append(e.data)
            self.unconsumed[side] += 1
            if self.consuming[side]:
                self.consume(side)
        elif isinstance(e, ev.UpgradeRequested) and e.initiator:
            n = e.attempt
            if self.upgrade_ok:
                self.at(self.now + self.setup, lambda: self._udp_up(n))
            else:
                self.at(self.now + self.setup, lambda: core.upgrade_failed(n, "timeout", self.now))
        elif isinstance(e, ev.PathAbandoned):
            self.close_path(e.path_id, side, e.reason)
        elif isinstance(e, ev.SessionEnded):
            # as the pump: the last frames (a CLOSE) go out first, then the paths close
            for pid, path in list(self.paths.items()):
                if path.open[side]:
                    self.at(self.now, lambda pid=pid: self.close_path(pid, side, e.reason))

    def _udp_up(self, n: int) -> None:
        assert any(isinstance(e, ev.UpgradeRequested) and e.attempt == n for _, e in self.events["host"]), \
            "the host never heard of the attempt"
        pid = f"udp-{n}"
        self.paths[pid] = FakePath(pid, "udp-managed", self.udp_delay)
        self.cores["host"].path_added(pid, "udp-managed", self.now)
        self.at(self.now + self.udp_delay, lambda: self.cores["client"].path_added(pid, "udp-managed", self.now))

    def consume(self, side: str) -> None:
        while self.unconsumed[side]:
            self.unconsumed[side] -= 1
            self.cores[side].message_consumed(self.now)

    # --- what a test does --------------------------------------------------------------
    def start_upgrades(self) -> None:
        self.cores["host"].allow_upgrade(self.now)
        self.cores["client"].allow_upgrade(self.now)

    def stream(self, side: str, count: int, every: float, start: float = 0.0, size: int = 32) -> None:
        """The application on ``side`` sends ``count`` numbered messages, one per ``every``
        seconds, waiting while the window is full."""
        def tick():
            core = self.cores[side]
            if core.closed or len(self.sent[side]) >= count:
                return
            m = msg(side, len(self.sent[side]), size)
            if core.can_send(len(m)):
                core.send(m, self.now)
                self.sent[side].append(m)
            else:
                self.stalls[side] += 1
            self.at(self.now + every, tick)
        self.at(start, tick)

    def set_dark(self, path_id: str, dark: bool) -> None:
        path = self.paths[path_id]
        path.dark = dark
        if not dark:
            held, path.held = path.held, []
            for sender, frame in held:     # retransmitted, in order, once the path carries again
                self.at(self.now + path.delay, lambda s=sender, f=frame: self._deliver(OTHER[s], path_id, f))

    def close_path(self, path_id: str, by: str, reason: str) -> None:
        """``by`` closes its end; the other end hears of it one delay later (from the
        gateway, for the relay: ``host-gone``/``client-gone``)."""
        path = self.paths[path_id]
        if not path.open[by]:
            return
        path.open[by] = False
        self.cores[by].path_closed(path_id, reason, self.now)
        told = GONE[by] if path_id == RELAY_ID else "closed"
        other = OTHER[by]

        def tell():
            if path.open[other] and not path.dark:
                path.open[other] = False
                self.cores[other].path_closed(path_id, told, self.now)
        self.at(self.now + path.delay, tell)

    def path_ends(self, path_id: str, reason: str) -> None:
        """The path ends under both sides at once (e.g. the gateway restarts)."""
        path = self.paths[path_id]
        for side in SIDES:
            if path.open[side]:
                path.open[side] = False
                self.cores[side].path_closed(path_id, reason, self.now)

    def first(self, side: str, cls, pred=lambda e: True):
        return next(((t, e) for t, e in self.events[side] if isinstance(e, cls) and pred(e)), (None, None))

    def switches(self, side: str) -> list[tuple[float, str, str]]:
        return [(round(t, 3), e.path_id, e.reason) for t, e in self.events[side] if isinstance(e, ev.PathSwitched)]

    def assert_exactly_once_in_order(self) -> None:
        for side in SIDES:
            assert self.inbox[side] == self.sent[OTHER[side]], f"{side} got a different stream"


def on_udp(pair: Pair, side: str) -> bool:
    return pair.cores[side].active is not None and pair.cores[side].active.startswith("udp")


def frame(data: bytes) -> Frame:
    return fr.decode_one(data, MAX_SESSION_PAYLOAD)


def drain_events(core: SessionConnection) -> list:
    out = []
    while (e := core.next_event()) is not None:
        out.append(e)
    return out


def protocol_error_from(data: bytes) -> tuple[SessionConnection, list[ev.SessionEnded]]:
    """A client core on the relay given one frame ``data`` from its peer: the core and the
    SessionEnded events it reported."""
    core = SessionConnection("client", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.receive_frame(RELAY_ID, frame(data), 0.1)
    return core, [e for e in drain_events(core) if isinstance(e, ev.SessionEnded)]


def streaming_on_udp(p: Pair, senders: tuple[str, ...], count: int, *, until: float = 0.6,
                     check: str = "client") -> Pair:
    """``p`` allowed to upgrade, each of ``senders`` streaming ``count`` messages (one per
    5 ms) from t=0, run to ``until``; ``check`` must be on UDP by then."""
    p.start_upgrades()
    for side in senders:
        p.stream(side, count, 0.005)
    p.run(until)
    assert on_udp(p, check)
    return p
