"""The application-facing session: the asyncio pump around the session core.

A session offers, whatever path carries it:

* reliable channels: ``await send(bytes, channel=None|"input"|"graphics"|"bulk")``
  / ``await recv(channel=None)`` / ``await recv_from()`` -> ``(channel, bytes)``
  -- each ordered on its own, nothing lost or duplicated, back-pressured by its
  window; under a backlog ``input`` goes first (channels.py). ``recv()`` with no
  channel takes the oldest message of any channel, so one-channel apps see no
  change;
* datagrams: ``send_datagram(bytes, ttl=None) -> bool`` / ``await recv_datagram()``
  -- best effort, first in the transmit order, dropped unsent once ``ttl`` old;
  never blocks, returns False when it had to drop;
* events: ``send_event(bytes, redundancy=2, copies=2)`` / ``await recv_event()`` --
  small events repeated in the next frames, each frame sent ``copies`` times 2 ms
  apart, delivered once, in order, at the first copy's arrival (redundancy.py).

Every decision is the core's (connection.py: sequencing, acks, switch and
replay, failover, probes, RTT, when to try UDP). This module only does what
the core cannot: it owns the paths and feeds the core what they deliver (frames,
closes, packet liveness), sends the frames the core hands out, keeps one asyncio
timer at ``connection.get_timer()``, turns core events into wake-ups for the
application, and carries out UDP attempts (``UdpUpgrader``) when the core asks.
After every input it pumps: events first, then transmits, then the timer.

Signaling for an attempt travels inside the session's end-to-end protected
channel on the relay as SIGNAL frames: ``{"type": "upgrade", "attempt": n}``
(client -> host, starts attempt n; the core sends and answers it) and
``{"type": "udp", "attempt": n, "m": {...}}`` carrying the UDP layer's own
messages (ICE parameters, trickled candidates, DTLS fingerprints), routed here
to attempt n's upgrader. The gateway sees none of it.

Clock: ``time.monotonic()`` for everything fed to the core (the UDP layer's
``last_rx_at`` uses it too); ``history`` is shown in wall-clock seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

from .. import log
from ..config import DEFAULT_KEEPALIVE_INTERVAL, Timing, keepalive_interval
from ..errors import ConfigError, LocalError, PathError, SessionClosed, ShortpathError
from ..netaddr import parse_hostport
from ..paths.manager import RELAY_ID, PathTiming
from ..transport.base import Path
from ..wire.frames import Frame, FrameType
from . import channels as chn
from . import events as ev
from .connection import EVENT_COPIES, MAX_DATAGRAM, MAX_MESSAGE, PEER_GONE, SessionConnection, Transmit

_log = log.get("session")
_splog = log.get("shortpath")
#: Spreads resume retries between clients (the resume loop below); not a secret.
_RETRY_JITTER = random.Random()

#: Datagrams kept for an application that is not reading; older ones are dropped.
DATAGRAM_QUEUE = 1024

#: A paced path is handed only what it sends in about this long (handover_limit) ...
HANDOVER_SECONDS = 0.15
#: ... but never less than this, so a slow path still gets whole frames to pack
MIN_HANDOVER_BYTES = 64 * 1024


def handover_limit(rate: float | None) -> int:
    """Bytes a path may hold unsent before the core keeps the rest (in channel priority
    order). A paced path (``rate``: its sender's bytes/s) gets what it sends in about
    ``HANDOVER_SECONDS``, between ``MIN_HANDOVER_BYTES`` and ``channels.HANDOVER_BYTES``;
    one whose rate is unknown (the relay) gets ``channels.HANDOVER_BYTES``.

    Why not always the fixed amount: the stall detector (paths/stall.py) ages a message
    from when it was handed to the path, and 256 KiB waiting in a path that sends
    2-4 Mbit/s (a fair share of a busy link) is 0.5-1 s of age that is no stall at all;
    kept in the core, the backlog also stays behind higher-priority channels."""
    if rate is None or rate <= 0:
        return chn.HANDOVER_BYTES
    return int(min(chn.HANDOVER_BYTES, max(MIN_HANDOVER_BYTES, rate * HANDOVER_SECONDS)))


__all__ = ["Session", "SessionInfo", "start_session", "udp_config", "MAX_MESSAGE", "MAX_DATAGRAM",
           "PEER_GONE", "DATAGRAM_QUEUE"]


@dataclass
class SessionInfo:
    session_id: str
    role: str
    transport: str
    rtt_ms: float | None
    bytes_sent: int
    bytes_received: int
    started_at: float
    messages_sent: int
    messages_received: int
    datagrams_sent: int
    datagrams_received: int
    datagrams_dropped: int
    duplicates_dropped: int
    paths: list = field(default_factory=list)
    history: list = field(default_factory=list)
    #: seconds from session start to the first switch onto UDP (None if never)
    time_to_udp: float | None = None
    #: set-up phase timestamps (time.monotonic() seconds); see Session.timeline
    timeline: dict = field(default_factory=dict)
    #: resumes onto a new relay leg, and relay legs replaced while on UDP (#15)
    resumes: int = 0
    relay_replacements: int = 0
    #: channels and lanes (#13): datagrams expired unsent, the event lane's figures
    #: (sent, delivered, lost, recovered from a repeat), unforgiven stall exits, the current hold
    lanes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def udp_config(policy: dict, options: dict):
    """Build the UDP layer's config from the broker's per-pool policy plus local options.

    Returns None when the policy allows no UDP path."""
    from ..transport.udp import TurnServer, UdpConfig

    sp = policy.get("shortpath", {})
    if not sp.get("enabled", True):
        return None
    ice = policy.get("ice", {})
    turn: list = []
    if ice.get("turn") and sp.get("turn", True):
        h, p = parse_hostport(ice["turn"], 3478)
        for transport in ("udp", "tcp"):          # UDP to TURN first, TCP when UDP is blocked
            turn.append(TurnServer(h, p, transport, ice.get("username", ""), ice.get("password", "")))
    if ice.get("turn_tls") and sp.get("turn", True):
        h, p = parse_hostport(ice["turn_tls"], 443)
        turn.append(TurnServer(h, p, "tls", ice.get("username", ""), ice.get("password", ""),
                               cafile=options.get("turn_cafile")))
    allow_managed = bool(sp.get("managed", True))
    allow_direct = bool(sp.get("public_direct", True))
    allow_turn = bool(turn)
    if options.get("modes") is not None:         # local restriction (tests, lab scenarios)
        modes = set(options["modes"])
        allow_managed &= "managed" in modes
        allow_direct &= "direct" in modes
        allow_turn &= "turn" in modes
    if not (allow_managed or allow_direct or allow_turn):
        return None
    stun = parse_hostport(ice["stun"], 3478) if ice.get("stun") and allow_direct else None
    return UdpConfig(allow_managed=allow_managed, allow_direct=allow_direct, allow_turn=allow_turn,
                     stun_server=stun, turn_servers=tuple(turn),
                     managed_port=int(sp.get("managed_port", 3390)),
                     host_addresses=tuple(options["host_addresses"]) if options.get("host_addresses") else None,
                     # TURN transports are tried in turn (UDP, TCP, TLS; 1.5 s each at worst),
                     # so gathering and the whole attempt must leave room for all three.
                     gather_timeout=float(options.get("gather_timeout", 6.0)),
                     connect_timeout=float(options.get("connect_timeout", 8.0)))


def _keepalive(policy: dict, session_id: str) -> float:
    """Idle keepalive interval for this session (pool policy, env override; see config.py)."""
    try:
        return keepalive_interval((policy or {}).get("shortpath"))
    except ConfigError as exc:
        _log.warning(log.kv("keepalive-setting-ignored", sid=session_id, why=exc.message,
                            using=DEFAULT_KEEPALIVE_INTERVAL))
        return DEFAULT_KEEPALIVE_INTERVAL


def start_session(tls, session_id: str, role: str, *, timing: Timing, peer: str, policy: dict,
                  marks: dict, wait_for: str) -> tuple["Session", asyncio.Future]:
    """Assemble a session on an end-to-end TLS channel through the relay (both peers
    use this). Returns the session, live on the relay, and a future for the first
    SIGNAL of type ``wait_for`` (the host waits for ``hello``, the client for
    ``hello-ok``), watched before the relay's first byte is read. Once the peer is
    confirmed, call ``session.enable_shortpath(...)`` to allow UDP upgrades."""
    from ..transport.tcp_relay import RelayPath

    session = Session(session_id, role, timing, peer=peer, policy=policy)
    session.timeline.update(marks)
    got = asyncio.get_running_loop().create_future()
    session.on_signal(wait_for, lambda m: got.done() or got.set_result(m))
    path = RelayPath(tls, session_id, timing.relay_high_water)
    session.attach_relay(path)
    path.start()
    return session, got


#: SIGNAL frame type carrying a re-minted TURN credential, host -> client
TURN_CREDENTIALS = "turn-credentials"


class Session:
    def __init__(self, session_id: str, role: str, timing: Timing | None = None,
                 peer: str = "", policy: dict | None = None) -> None:
        self.session_id = session_id
        self.role = role               # "client" or "host"
        self.peer = peer               # user (on a host) or host id (on a client)
        self.timing = timing or Timing()
        self.policy: dict = policy or {}
        self.started_at = time.time()
        self._t0 = time.monotonic()
        #: the sans-I/O core: every protocol decision and its state
        self.connection = SessionConnection(
            role, self._t0, timing=self.timing, session_id=session_id,
            path_timing=PathTiming(keepalive_interval=_keepalive(self.policy, session_id)))
        self._paths: dict[str, Path] = {}            # open paths by id
        self._known: dict[str, Path] = {}            # every path by id, closed ones too
        #: per reliable channel: (arrival number, message), so recv() can take the oldest of all
        self._inboxes: dict[int, deque[tuple[int, bytes]]] = {c.id: deque() for c in chn.CHANNELS}
        self._arrivals = 0
        self._dgrams: deque[bytes] = deque(maxlen=DATAGRAM_QUEUE)
        self._event_inbox: deque[bytes] = deque(maxlen=DATAGRAM_QUEUE)
        self._event_ready = asyncio.Event()
        #: waits for the active path to take more while the core keeps a backlog: (path, task)
        self._writer: tuple[Path, asyncio.Task] | None = None
        self._inbox_ready = asyncio.Event()
        self._dgram_ready = asyncio.Event()
        self._window_open = asyncio.Event()
        self._closed = asyncio.Event()
        self._signal_handlers: dict[str, Callable[[dict], None]] = {}
        if role == "client":   # the host passes on the broker's re-minted TURN credentials
            self._signal_handlers[TURN_CREDENTIALS] = self._on_turn_credentials
        self._pings: dict[int, asyncio.Future] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._tasks: set[asyncio.Task] = set()        # UDP attempts
        self._closers: set[asyncio.Task] = set()      # paths being closed
        self._udp_config = None
        self._udp_listener = None
        self._upgraders: dict[int, object] = {}
        #: client, resume (#15): ``async () -> InnerTls`` that dials a gateway, presents the
        #: resume ticket and returns the new leg's end-to-end TLS (client/resume.py)
        self.resumer = None
        self._resuming: asyncio.Task | None = None
        self._resume_kick = asyncio.Event()
        self._relay_legs = 0
        self.on_close: list[Callable[[str], None]] = []
        #: Set-up phase timestamps, time.monotonic() seconds, keyed by phase end.
        #: Written once each by whoever reaches the point, read by benchmarks
        #: (benchmarks/setup.py); no I/O. Client (client/connect.py): connect,
        #: gateway_tls, welcome, launched, inner_tls, session_ok. Host
        #: (host/agent.py): dial, leg_tls, leg_accepted, inner_tls, hello, hello_ok.
        #: Both: udp_switch (first switch onto a UDP path, below). The UDP attempt's
        #: own phases are in that path's info()["timeline"] (transport/udp/).
        self.timeline: dict[str, float] = {}

    # --- what the core knows, as the application sees it -------------------------
    @property
    def active(self) -> Path | None:
        """The path we send on."""
        pid = self.connection.active
        return None if pid is None else self._known.get(pid)

    @property
    def relay(self) -> Path | None:
        pid = self.connection.relay
        return None if pid is None else self._paths.get(pid)

    @property
    def paths(self) -> dict[str, Path]:
        return dict(self._paths)

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    @property
    def close_detail(self) -> str:
        return self.connection.close_detail

    @property
    def relay_lost_reason(self) -> str | None:
        return self.connection.relay_lost_reason

    @property
    def counters(self) -> dict:
        return self.connection.counters

    @property
    def srtt(self) -> float | None:
        """Smoothed RTT of the active path, seconds."""
        return self.connection.rtt(self.connection.active)

    @property
    def history(self) -> list[dict]:
        """Path events (start, switch, peer-switch, relay-lost, end), ``t`` in wall-clock seconds."""
        return [dict(h, t=self.started_at + (h["t"] - self._t0)) for h in self.connection.history]

    @property
    def shortpath_enabled(self) -> bool:
        """True once UDP upgrades are allowed for this session (enable_shortpath with a usable policy)."""
        return self._udp_config is not None

    # --- wiring paths ---------------------------------------------------------
    def attach_relay(self, path: Path) -> None:
        """The session starts on ``path``, the relay; later relay legs (a resume) get
        the ids ``relay-2``, ``relay-3``...: to the core each is just another path."""
        self._relay_legs += 1
        path.path_id = RELAY_ID if self._relay_legs == 1 else f"{RELAY_ID}-{self._relay_legs}"
        self.add_path(path)
        self.connection.path_added(path.path_id, path.kind, time.monotonic())
        self._pump()

    def allow_resume(self, grace: float | None = None) -> None:
        """A lost relay leg no longer ends the session (#15): it waits ``grace`` seconds
        (default Timing.resume_grace) for a new leg; the client dials one with ``resumer``."""
        self.connection.allow_resume(self.timing.resume_grace if grace is None else grace)

    def attach_leg(self, tls) -> Path:
        """A new relay leg for this live session (a resume): its end-to-end TLS is done."""
        from ..transport.tcp_relay import RelayPath
        path = RelayPath(tls, self.session_id, self.timing.relay_high_water)
        if self.close_reason is not None:
            raise SessionClosed(self.close_reason, self.close_detail)
        self.attach_relay(path)
        path.start()
        return path

    def _start_resume(self, e: ev.RelayLost) -> None:
        if self.role != "client" or self.resumer is None or self.close_reason is not None:
            return
        if self._resuming is not None and not self._resuming.done():
            self._resume_kick.set()      # e.g. now detached: stop backing off, try at once
            return
        self._resuming = asyncio.get_running_loop().create_task(self._resume(e), name=f"resume-{self.session_id}")

    async def _resume(self, e: ev.RelayLost) -> None:
        """Dial for a new relay leg until one is up, the session ends, or the broker or
        host refuse for good (an AuthError, or the host does not know the session)."""
        from ..errors import AuthError, NoResourcesError
        t0 = time.monotonic()
        tries = 0
        _splog.info(log.kv("resume-start", sid=self.session_id, why=e.reason, detached=e.detached))
        while self.close_reason is None:
            tries += 1
            try:
                tls = await self.resumer()
            except asyncio.CancelledError:
                raise
            except (AuthError, NoResourcesError) as exc:
                definitive = isinstance(exc, AuthError) or getattr(exc, "reason", "") in ("host-refused", "host-gone")
                _splog.info(log.kv("resume-refused" if definitive else "resume-retry", sid=self.session_id,
                                   error=exc.code, why=exc.message[:120], tries=tries))
                if definitive and self.connection.active is not None:
                    return       # the session runs on UDP: it goes on, without a relay to fall back to
                if definitive:
                    # The gateway said the peer's leg ended and the peer is not coming back:
                    # that is the reason the application sees; else the resume was refused.
                    reason = e.reason if e.reason in PEER_GONE else "resume-refused"
                    await self.close(reason, f"resume failed: {exc.code}: {exc.message}"[:200])
                    return
            except (ShortpathError, OSError, asyncio.TimeoutError, EOFError) as exc:
                _splog.info(log.kv("resume-retry", sid=self.session_id, error=getattr(exc, "code", type(exc).__name__),
                                   tries=tries))
            except Exception:       # a bug: say so, keep trying while the grace period lasts
                _splog.exception(log.kv("BUG resume attempt crashed", sid=self.session_id, tries=tries))
            else:
                if self.close_reason is not None:
                    with contextlib.suppress(Exception):
                        await tls.conn.close()
                    return
                path = self.attach_leg(tls)
                _splog.info(log.kv("resumed", sid=self.session_id, path=path.path_id, tries=tries,
                                   took_ms=round((time.monotonic() - t0) * 1000, 1), detached=e.detached))
                return
            # Detached: every moment counts. On UDP the new leg is only a fallback: back off
            # (up to 5 s) rather than knock on a gateway that is down every quarter second.
            # Jittered (0.75-1.25 x): the clients of a gateway that died all detach at the same
            # moment, and would otherwise knock on the next gateway in lockstep.
            detached = self.connection.active is None
            self._resume_kick.clear()
            pause = (self.timing.resume_retry if detached
                     else min(5.0, self.timing.resume_retry * 2 ** min(tries, 5)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._resume_kick.wait(), pause * _RETRY_JITTER.uniform(0.75, 1.25))

    def add_path(self, path: Path) -> None:
        """Start receiving on ``path`` (it carries nothing of ours until the core switches to it)."""
        self._paths[path.path_id] = path
        self._known[path.path_id] = path
        path.on_frame = lambda f, p=path: self._on_frame(p, f)
        path.on_closed = lambda reason, p=path: self._on_path_closed(p, reason)

    def enable_shortpath(self, options: dict | None = None, listener=None) -> None:
        """Allow UDP upgrades, if the pool's policy and ``options`` (see client.connect)
        leave any UDP mode: the client starts attempts, the host answers them (with
        its managed ``listener``, if any)."""
        self._udp_config = udp_config(self.policy or {}, options or {})
        if self._udp_config is None:
            return
        self._udp_listener = listener if self.role == "host" else None
        self.connection.allow_upgrade(time.monotonic())
        self._pump()

    def on_signal(self, kind: str, handler: Callable[[dict], None]) -> None:
        """Register a handler for SIGNAL frames whose ``type`` is ``kind``."""
        self._signal_handlers[kind] = handler

    def send_signal(self, msg: dict) -> None:
        """Send a SIGNAL frame on the reliable lane of the relay (the authenticated channel)."""
        self.connection.send_signal(msg)
        self._pump()

    def update_turn_credentials(self, username: str, password: str) -> None:
        """A fresh TURN REST credential for this session. The broker mints short-lived
        ones and re-mints them over the host's control channel while the session lives
        (issue #11); later UDP attempts use the newest. The host passes it on to its peer
        inside the session (a SIGNAL frame: end-to-end protected)."""
        ice = self.policy.setdefault("ice", {})
        ice["username"], ice["password"] = username, password
        cfg = self._udp_config
        if cfg is not None and cfg.turn_servers:
            self._udp_config = replace(cfg, turn_servers=tuple(
                replace(t, username=username, password=password) for t in cfg.turn_servers))
        if self.role == "host":
            self.send_signal({"type": TURN_CREDENTIALS, "username": username, "password": password})

    def _on_turn_credentials(self, msg: dict) -> None:
        username, password = msg.get("username"), msg.get("password")
        if not (isinstance(username, str) and isinstance(password, str)
                and 0 < len(username) <= 256 and 0 < len(password) <= 256
                and username.partition(":")[2] == self.session_id):
            _log.info(log.kv("turn-credentials-ignored", sid=self.session_id, why="malformed or another session's"))
            return
        self.update_turn_credentials(username, password)

    # --- the pump ----------------------------------------------------------------
    def _pump(self) -> list[Transmit]:
        """Hand out the core's events, send its frames, re-arm the timer. Returns the
        transmits the paths refused (empty when called from inside a pump)."""
        if self._pumping:
            return []
        self._pumping = True
        failed: list[Transmit] = []
        try:
            core = self.connection
            while True:
                event = core.next_event()
                if event is not None:
                    self._handle(event)
                    continue
                out = core.transmits(time.monotonic(), self._room)
                if not out:
                    break
                for t in out:
                    if not self._transmit(t):
                        failed.append(t)
        finally:
            self._pumping = False
        self._note_local_backlog()
        self._arm_timer()
        self._watch_backlog()
        return failed

    def _note_local_backlog(self) -> None:
        """Tell the stall watch how long the active path needs to send what it holds unsent
        (paths/stall.py: that wait is not the path failing to deliver)."""
        core = self.connection
        path = self._paths.get(core.active) if core.active is not None else None
        rate = None if path is None else path.send_rate
        core.manager.stall.local_backlog(path.buffered_amount / rate if rate else 0.0)

    def _room(self, path_id: str) -> int:
        """Bytes the path takes now (handover_limit); the core keeps the rest, in priority
        order (channels.py)."""
        path = self._paths.get(path_id)
        return 0 if path is None else max(0, handover_limit(path.send_rate) - path.buffered_amount)

    def _watch_backlog(self) -> None:
        """While the core holds DATA back, wake the pump when the active path has room."""
        core = self.connection
        path = self._paths.get(core.active) if core.active is not None else None
        if self._writer is not None:
            if self._writer[0] is path and not self._writer[1].done():
                return
            self._writer[1].cancel()
            self._writer = None
        if path is None or not core.backlog or self.close_reason is not None:
            return
        task = asyncio.get_running_loop().create_task(self._when_writable(path))
        self._writer = (path, task)

    async def _when_writable(self, path: Path) -> None:
        await path.wait_writable(handover_limit(path.send_rate) // 2)
        if self._writer is not None and self._writer[0] is path:
            self._writer = None
        if self.close_reason is None:
            self._pump()

    def _transmit(self, t: Transmit) -> bool:
        path = self._paths.get(t.path_id)
        ok = False
        if path is not None:
            if t.reliable:
                try:
                    if t.channel:
                        path.send_reliable(t.frame, channel=t.channel)
                    else:
                        path.send_reliable(t.frame)
                    ok = True
                except PathError:
                    pass     # a DATA frame stays in the window; a switch replays it
            elif t.deadline is not None:
                ok = path.send_unreliable(t.frame, deadline=t.deadline)
            else:
                ok = path.send_unreliable(t.frame)
        if not ok:
            self.connection.transmit_refused(t)
        return ok

    def _handle(self, e: ev.Event) -> None:
        if isinstance(e, ev.DataReceived):
            self._arrivals += 1
            self._inboxes[e.channel].append((self._arrivals, e.data))
            self._inbox_ready.set()
        elif isinstance(e, ev.EventReceived):
            self._event_inbox.append(e.data)
            self._event_ready.set()
        elif isinstance(e, ev.DatagramReceived):
            self._dgrams.append(e.data)
            self._dgram_ready.set()
        elif isinstance(e, ev.SendWindowOpened):
            self._window_open.set()
        elif isinstance(e, ev.PingAnswered):
            fut = self._pings.pop(e.ping_id, None)
            if fut is not None and not fut.done():
                fut.set_result(e.rtt)
        elif isinstance(e, ev.SignalReceived):
            self._on_signal_frame(e.message)
        elif isinstance(e, ev.PathSwitched):
            if e.kind.startswith("udp"):
                self.timeline.setdefault("udp_switch", time.monotonic())
        elif isinstance(e, ev.UpgradeRequested):
            self._start_attempt(e.attempt)
        elif isinstance(e, ev.PathAbandoned):
            path = self._paths.pop(e.path_id, None)
            if path is not None:
                self._close_later(path, e.reason)
        elif isinstance(e, ev.RelayLost):
            self._start_resume(e)
        elif isinstance(e, ev.SessionEnded):
            self._on_ended(e)

    def _on_signal_frame(self, msg: dict) -> None:
        kind = str(msg.get("type"))
        if kind == "udp":
            up = self._upgraders.get(msg.get("attempt"))
            m = msg.get("m")
            if up is not None and isinstance(m, dict):
                up.on_signal(m)
            return
        handler = self._signal_handlers.get(kind)
        if handler is None:
            _log.debug(log.kv("signal-ignored", sid=self.session_id, kind=kind))
        else:
            handler(msg)

    def _arm_timer(self) -> None:
        deadline = self.connection.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        # asyncio may run a handle a hair before its time: never tell the core less
        # than the deadline it asked for, or it would ask again at once.
        now = max(time.monotonic(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        for pid, path in list(self._paths.items()):
            heard = path.last_rx_at
            if heard is not None:
                self.connection.path_heard(pid, heard)
            if pid == self.connection.relay and getattr(path, "all_acked", None) is not None and path.all_acked():
                self.connection.relay_acked(now)      # the gateway took all we wrote: the leg works
        self.connection.handle_timer(now)
        self._pump()

    # --- inbound --------------------------------------------------------------
    def _on_frame(self, path: Path, frame: Frame) -> None:
        self.connection.receive_frame(path.path_id, frame, time.monotonic())
        self._pump()

    def _on_path_closed(self, path: Path, reason: str) -> None:
        if self._paths.get(path.path_id) is path:
            del self._paths[path.path_id]
        self.connection.path_closed(path.path_id, reason, time.monotonic())
        self._pump()

    # --- reliable channel -----------------------------------------------------
    async def send(self, data: bytes, channel: str | int | None = None) -> None:
        """Send one message reliably on ``channel`` (``"input"``, ``"graphics"``, ``"bulk"``;
        None: the default channel, as before channels existed). Each channel is ordered on
        its own and never waits for another; when the path is busy, ``input`` goes first,
        then the default, ``graphics``, ``bulk`` (session/channels.py). Waits while the
        channel's window is full."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalError("send() takes bytes")
        ch = chn.resolve(channel)
        if len(data) > MAX_MESSAGE:
            raise LocalError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        self._check_open()
        while not self.connection.can_send(len(data), ch):
            self._window_open.clear()
            await self._wait_or_closed(self._window_open)
            self._check_open()
        path_id = self.connection.send(data, time.monotonic(), ch)
        failed = self._pump()
        if any(t.frame_type == FrameType.CDATA and t.path_id == path_id for t in failed):
            # The message stays in the sender's window; a path switch replays it.
            if path_id == RELAY_ID:
                self._check_open()

    async def recv(self, channel: str | int | None = None) -> bytes:
        """Next message: of ``channel`` if given, else the oldest of any channel. Raises
        SessionClosed once the session ended and there is nothing left to read."""
        return (await self.recv_from(channel))[1]

    async def recv_from(self, channel: str | int | None = None) -> tuple[str, bytes]:
        """As recv(), with the channel's name: ``("input", b"...")``."""
        want = None if channel is None else chn.resolve(channel)
        while (item := self._take(want)) is None:
            if self.close_reason is not None:
                raise SessionClosed(self.close_reason, self.close_detail)
            self._inbox_ready.clear()
            await self._wait_or_closed(self._inbox_ready)
        ch, msg = item
        self.connection.message_consumed(time.monotonic(), ch)
        self._pump()
        return chn.name(ch), msg

    def _take(self, want: int | None) -> tuple[int, bytes] | None:
        if want is None:
            heads = [(q[0][0], ch) for ch, q in self._inboxes.items() if q]
            if not heads:
                return None
            want = min(heads)[1]
        q = self._inboxes[want]
        return (want, q.popleft()[1]) if q else None

    # --- events (redundant, small) ------------------------------------------------
    def send_event(self, data: bytes, redundancy: int = 2, ttl: float | None = None,
                   copies: int = EVENT_COPIES) -> bool:
        """Send one small event (<= 512 bytes) on the datagram lane, repeated in the next
        ``redundancy`` event frames (session/redundancy.py), each frame sent ``copies``
        times a couple of ms apart: the peer's recv_event() gets each event once, in
        order, as soon as any copy arrives, with no retransmission wait. Events lost in
        every copy of more than ``redundancy`` frames in a row are skipped. False if it
        could not be sent (no path, session over, path buffer full)."""
        now = time.monotonic()
        if not self.connection.send_event(bytes(data), now, redundancy,
                                          None if ttl is None else now + ttl, copies=copies):
            return False
        return not any(t.frame_type == FrameType.EVENTS for t in self._pump())

    async def recv_event(self) -> bytes:
        while not self._event_inbox:
            if self.close_reason is not None:
                raise SessionClosed(self.close_reason, self.close_detail)
            self._event_ready.clear()
            await self._wait_or_closed(self._event_ready)
        return self._event_inbox.popleft()

    # --- datagrams -------------------------------------------------------------
    def send_datagram(self, data: bytes, ttl: float | None = None) -> bool:
        """Send one best-effort datagram; it goes before any queued reliable data. With
        ``ttl`` (seconds) it is dropped rather than sent once it is that old (by the
        session before it reaches the path, or by the path before it leaves).
        False if it was dropped now."""
        if len(data) > MAX_DATAGRAM:
            raise LocalError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
        now = time.monotonic()
        if not self.connection.send_datagram(bytes(data), now, None if ttl is None else now + ttl):
            return False
        return not any(t.frame_type == FrameType.DGRAM for t in self._pump())

    async def recv_datagram(self) -> bytes:
        while not self._dgrams:
            if self.close_reason is not None:
                raise SessionClosed(self.close_reason, self.close_detail)
            self._dgram_ready.clear()
            await self._wait_or_closed(self._dgram_ready)
        return self._dgrams.popleft()

    # --- RTT ---------------------------------------------------------------------
    async def ping(self, timeout: float = 5.0) -> float:
        """Measure one round trip on the active path's best-effort lane (seconds)."""
        self._check_open()
        ident = self.connection.ping(time.monotonic())
        fut = asyncio.get_running_loop().create_future()
        self._pings[ident] = fut
        try:
            if any(t.frame_type == FrameType.PING for t in self._pump()):
                raise PathError("ping dropped: path buffer full")
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise PathError("ping timed out") from None
        finally:
            self._pings.pop(ident, None)

    # --- UDP upgrade attempts (the I/O the core asks for) ------------------------------
    def _new_upgrader(self, attempt: int):
        from ..transport.udp import UdpUpgrader

        def send(m: dict) -> None:
            if self.close_reason is None:
                with contextlib.suppress(PathError):
                    self.send_signal({"type": "udp", "attempt": attempt, "m": m})
        up = UdpUpgrader(role=self.role, config=self._udp_config, send_signal=send,
                         managed_listener=self._udp_listener)
        self._upgraders[attempt] = up
        return up

    def _start_attempt(self, attempt: int) -> None:
        if self._udp_config is None or attempt in self._upgraders:
            _log.error(log.kv("BUG upgrade without a UDP config or twice", sid=self.session_id, attempt=attempt))
            return
        up = self._new_upgrader(attempt)     # ready before the peer can answer
        task = asyncio.get_running_loop().create_task(self._attempt(attempt, up))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, attempt: int, up) -> None:
        t0 = time.monotonic()
        try:
            udp = await up.connect(timeout=self._udp_config.connect_timeout)
        except (ShortpathError, OSError, asyncio.TimeoutError, Exception) as exc:
            code = getattr(exc, "code", type(exc).__name__)
            if isinstance(exc, (ShortpathError, OSError, asyncio.TimeoutError)):
                _splog.info(log.kv("upgrade-failed", sid=self.session_id, attempt=attempt, error=code,
                                   why=str(exc)[:120]))
            else:       # a bug in the UDP layer: the session stays on the relay, the log says so
                _splog.exception(log.kv("BUG upgrade attempt crashed", sid=self.session_id, attempt=attempt))
            self._upgraders.pop(attempt, None)
            with contextlib.suppress(Exception):
                await up.close()
            self.connection.upgrade_failed(attempt, str(code), time.monotonic())
            self._pump()
            return
        from ..transport.udp import UdpSessionPath
        path = UdpSessionPath(udp, f"udp-{attempt}", self.session_id)
        if self.close_reason is not None:
            await path.close("session closed")
            return
        self.add_path(path)
        _splog.info(log.kv("udp-path-up", sid=self.session_id, attempt=attempt, kind=udp.kind,
                           setup_ms=round((time.monotonic() - t0) * 1000, 1)))
        self.connection.path_added(path.path_id, udp.kind, time.monotonic())
        self._pump()

    # --- lifecycle -------------------------------------------------------------
    def _check_open(self) -> None:
        if self.close_reason is not None:
            raise SessionClosed(self.close_reason, self.close_detail)

    async def _wait_or_closed(self, event: asyncio.Event) -> None:
        if self._closed.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closer.cancel()

    def _close_later(self, path: Path, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(path.close(reason))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _on_ended(self, e: ev.SessionEnded) -> None:
        self._closed.set()
        if self._resuming is not None and self._resuming is not asyncio.current_task():
            self._resuming.cancel()
        self._inbox_ready.set()
        self._dgram_ready.set()
        self._event_ready.set()
        self._window_open.set()
        if self._writer is not None:
            self._writer[1].cancel()
            self._writer = None
        for cb in list(self.on_close):
            try:
                cb(e.reason)
            except Exception:  # pragma: no cover - a callback bug must not stop the close
                _log.exception(log.kv("BUG on_close callback failed", sid=self.session_id))
        if not e.local:        # close() drains the CLOSE frame first, then closes the paths itself
            for path in list(self._paths.values()):
                self._close_later(path, e.reason)

    async def close(self, reason: str = "closed", detail: str = "") -> None:
        """Wait (up to ``Timing.close_timeout``) until the peer's session received every
        message sent so far, tell it why, then close every path."""
        if self.close_reason is None:
            core = self.connection
            core.close(reason, detail, time.monotonic())
            self._pump()
            if not core.closed:
                # CLOSE waits until the peer received what we sent (connection.py, Rules:
                # closing); the core's timer ends that after close_timeout, this only
                # guards against a pump that stopped running.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), self.timing.close_timeout + 1.0)
                if not core.closed:
                    core.handle_timer(time.monotonic())      # past the close deadline: CLOSE now
                    self._pump()
            # the CLOSE went on the paths in use when the core ended (a failover may have moved them)
            told = [self._paths[p] for p in dict.fromkeys((core.active, core.relay)) if p in self._paths]
            for path in told:
                if path.closed_reason is None:
                    with contextlib.suppress(PathError, asyncio.TimeoutError):
                        await asyncio.wait_for(path.drain(), 2.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None:
            self._writer[1].cancel()
            self._writer = None
        if self._resuming is not None and self._resuming is not asyncio.current_task():
            self._resuming.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for up in list(self._upgraders.values()):
            with contextlib.suppress(Exception):
                await up.close()
        self._upgraders.clear()
        for path in list(self._paths.values()):
            await path.close(reason)

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self.close_reason or ""

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _lanes(self) -> dict:
        core = self.connection
        st = core.event_stats
        stall = core.manager.stall
        hold = stall.hold_until
        return {"datagrams_expired": self.counters.get("datagrams_expired", 0),
                "events_sent": self.counters.get("events_sent", 0),
                "events": {"delivered": st.delivered, "lost": st.lost, "recovered": st.recovered},
                "stall_strikes": stall.strikes,
                "stall_hold_s": None if hold is None else round(max(0.0, hold - time.monotonic()), 3)}

    @property
    def info(self) -> SessionInfo:
        core = self.connection
        paths = []
        active = self.active
        for p in {id(p): p for p in (self.relay, active, *self._paths.values()) if p is not None}.values():
            d = p.info()
            d["active"] = p is active
            if p.path_id:
                d["quality"] = core.path_quality(p.path_id)
                rtt = core.rtt(p.path_id)
                d["rtt_ms"] = None if rtt is None else round(rtt * 1000, 3)
            paths.append(d)
        history = self.history
        rtt = core.rtt(core.active)
        return SessionInfo(
            session_id=self.session_id, role=self.role,
            transport=active.kind if active is not None else "none",
            rtt_ms=None if rtt is None else round(rtt * 1000, 3),
            bytes_sent=sum(p["bytes_sent"] for p in paths),
            bytes_received=sum(p["bytes_received"] for p in paths),
            started_at=self.started_at,
            messages_sent=self.counters["messages_sent"], messages_received=self.counters["messages_received"],
            datagrams_sent=self.counters["datagrams_sent"], datagrams_received=self.counters["datagrams_received"],
            datagrams_dropped=self.counters["datagrams_dropped"],
            duplicates_dropped=core.duplicates_dropped,
            paths=paths, history=history, timeline=dict(self.timeline),
            resumes=self.counters.get("resumes", 0), relay_replacements=self.counters.get("relay_replacements", 0),
            lanes=self._lanes(),
            time_to_udp=next((round(h["t"] - self.started_at, 3) for h in history
                              if h["event"] == "switch" and h["transport"].startswith("udp")), None))
