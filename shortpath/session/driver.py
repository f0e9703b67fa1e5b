"""The asyncio edge of the path manager: a thin pump.

It feeds the pure PathManager (manager.py) what the session sees -- frames
received per path, sends, probe answers, paths closing -- runs one timer at
``manager.get_timer()``, and carries out the actions it returns: start a UDP
upgrade attempt, switch the session's sending path, probe a path, close one.

Signaling for an attempt travels inside the session's end-to-end protected
channel on the relay as SIGNAL frames: ``{"type": "upgrade", "attempt": n}``
(client -> host, starts attempt n) and ``{"type": "udp", "attempt": n, "m": {...}}``
carrying the UDP layer's own messages (ICE parameters, trickled candidates,
DTLS fingerprints). The gateway sees none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from .. import log
from ..errors import PathError, ShortpathError
from ..netaddr import parse_hostport
from ..transport.base import Path
from ..wire import frames as fr
from ..wire.frames import FrameType
from .events import ClosePath, SendProbe, StartUpgrade, SwitchPath
from .manager import RELAY_ID, PathManager, PathTiming

_log = log.get("shortpath")

#: a probe not answered within this long counts as lost in the path's loss figure
PROBE_LOSS_AFTER = 1.0


def udp_config(policy: dict, options: dict):
    """Build the UDP layer's config from the broker's per-pool policy plus local options.

    Returns None when the policy allows no UDP path."""
    from ..transport.udp.ice import TurnServer
    from ..transport.udp import UdpConfig

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


def _keepalive(session) -> float:
    """Idle keepalive interval for this session (pool policy, env override; see config.py)."""
    from ..config import DEFAULT_KEEPALIVE_INTERVAL, keepalive_interval
    from ..errors import ConfigError
    try:
        return keepalive_interval((session.policy or {}).get("shortpath"))
    except ConfigError as exc:
        _log.warning(log.kv("keepalive-setting-ignored", sid=session.session_id, why=exc.message,
                            using=DEFAULT_KEEPALIVE_INTERVAL))
        return DEFAULT_KEEPALIVE_INTERVAL


class PathDriver:
    def __init__(self, session, *, options: dict | None = None, listener=None,
                 timing: PathTiming | None = None) -> None:
        self.session = session
        self.options = options or {}
        self.listener = listener
        self.role = session.role
        self.config = udp_config(session.policy or {}, self.options)
        if timing is None:
            timing = PathTiming(keepalive_interval=_keepalive(session))
        now = time.monotonic()
        self.mgr = PathManager(now, initiator=self.role == "client", upgrade=self.config is not None,
                               timing=timing)
        self.paths: dict[str, Path] = {RELAY_ID: session.relay}
        self.upgraders: dict[int, object] = {}
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._stopped = False
        self._probe_ident = 1 << 31           # probe ids apart from the session's own pings
        self._outstanding: dict[int, tuple[str, float]] = {}   # probe id -> (path id, sent at)
        session.driver = self
        session.on_rx = self._on_rx
        session.on_tx = self._on_tx
        session.on_pong = self._on_pong
        session.on_path_down = self._on_path_down
        session.on_relay_lost = self._on_relay_lost
        session.on_answered = self._on_answered
        session.on_peer_switch = self._on_peer_switch
        session.on_signal("upgrade", self._on_upgrade_signal)
        session.on_signal("udp", self._on_udp_signal)
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name=f"paths-{session.session_id}")

    # --- hooks from the session -------------------------------------------------
    def _on_rx(self, path: Path) -> None:
        self.mgr.received(path.path_id, time.monotonic())

    def _on_tx(self, path: Path) -> None:
        st = self.mgr.paths.get(path.path_id)
        waiting = st is not None and st.awaiting_since is None
        self.mgr.sent(path.path_id, time.monotonic())
        if waiting:
            self._wake.set()

    def _on_answered(self, path: Path) -> None:
        # Our PONG went out on the path: as good as a keepalive of our own for the NAT
        # bindings, so an idle session is kept alive by one side's probes, not both.
        self.mgr.sent(path.path_id, time.monotonic(), answer_expected=False)

    def _on_pong(self, path: Path, rtt: float, ident: int | None = None) -> None:
        if ident is not None:
            self._outstanding.pop(ident, None)
        self.mgr.probe_result(path.path_id, rtt, time.monotonic())

    def _feed_packet_rx(self) -> None:
        """Tell the manager about packets heard on each UDP path, not only frames.

        Session frames, probe answers included, share SCTP's one ordered send
        queue with everything else the peer sends. On a lossy path carrying a
        frame stream, a retransmission timeout (RTO backing off) can hold that
        queue for longer than ``dead_after`` while the path itself works: the
        peer's SACKs and retransmissions keep arriving. Judged on frames alone,
        such a path was declared dead and the session fell back to the relay
        (the lab benchmark saw this at 2-5 % loss). A packet heard after the
        manager started waiting for an answer is proof the peer is there and
        the path carries packets both ways (a SACK means our data arrived), so
        it counts as an answer (PathManager.heard). A blackholed path hears
        nothing and still fails over after ``dead_after``. Checked just before
        the manager's timers run, which is the only moment the answer matters."""
        for pid, path in self.paths.items():
            if pid == RELAY_ID:
                continue
            heard = getattr(path, "last_rx_at", None)
            if heard is not None:
                self.mgr.heard(pid, heard)      # it keeps only news (later than what it had)

    def _expire_probes(self, now: float) -> None:
        """A probe unanswered for PROBE_LOSS_AFTER counts as lost (path loss figure)."""
        for ident, (pid, sent) in list(self._outstanding.items()):
            if now - sent >= PROBE_LOSS_AFTER:
                del self._outstanding[ident]
                self.mgr.probe_result(pid, None, now)

    def _on_path_down(self, path: Path, reason: str) -> None:
        self.paths.pop(path.path_id, None)
        self.mgr.path_down(path.path_id, reason, time.monotonic())
        self._wake.set()

    def _on_relay_lost(self, reason: str) -> None:
        # The active UDP path is all that is left: make sure the peer is still there.
        from .session import PEER_GONE
        self.mgr.relay_lost(time.monotonic(), peer_gone=reason in PEER_GONE)
        self._wake.set()

    def _on_peer_switch(self, to: str, reason: str) -> None:
        if to == "tcp-relay" and reason.startswith("failover"):
            self.mgr.peer_failover(reason, time.monotonic())
            self._wake.set()

    # --- the pump -----------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while not self._stopped:
                self._apply()
                deadline = self.mgr.get_timer()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                now = time.monotonic()
                self._expire_probes(now)
                self._feed_packet_rx()
                self.mgr.handle_timer(now)
        except asyncio.CancelledError:
            pass
        except Exception:
            _log.exception(log.kv("BUG path driver crashed", sid=self.session.session_id))

    def _apply(self) -> None:
        for action in self.mgr.actions():
            try:
                if isinstance(action, SwitchPath):
                    self._switch(action)
                elif isinstance(action, SendProbe):
                    self._probe(action)
                elif isinstance(action, StartUpgrade):
                    self._new_upgrader(action.attempt)   # ready before the host can answer
                    self.session.send_signal({"type": "upgrade", "attempt": action.attempt})
                    self._spawn(self._attempt(action.attempt))
                elif isinstance(action, ClosePath):
                    path = self.paths.pop(action.path_id, None)
                    if path is not None:
                        self._spawn(path.close(action.reason))
            except ShortpathError as exc:
                _log.warning(log.kv("path-action-failed", sid=self.session.session_id,
                                    action=type(action).__name__, error=exc.code, why=exc.message))

    def _switch(self, action: SwitchPath) -> None:
        s = self.session
        if action.to == RELAY_ID:
            s.fail_over_to_relay(action.reason)
        else:
            path = self.paths.get(action.to)
            if path is None:
                _log.error(log.kv("BUG switch to unknown path", sid=s.session_id, path=action.to))
                return
            s.switch_to(path, action.reason)
        _log.info(log.kv("path-change", sid=s.session_id, to=s.active.kind if s.active else None,
                         reason=action.reason))

    def _probe(self, action: SendProbe) -> None:
        path = self.paths.get(action.path_id)
        if path is None:
            return
        self._probe_ident += 1
        now = time.monotonic()
        if path.send_unreliable(fr.encode_ping(FrameType.PING, self._probe_ident, int(now * 1e6))):
            self._outstanding[self._probe_ident] = (action.path_id, now)
            if len(self._outstanding) > 256:   # bounded even if a path never answers
                self._outstanding.pop(next(iter(self._outstanding)))
        self.mgr.sent(action.path_id, now)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- upgrade attempts ---------------------------------------------------------
    def _new_upgrader(self, attempt: int):
        from ..transport.udp import UdpUpgrader
        session = self.session

        def send(m: dict) -> None:
            if session.close_reason is None:
                with contextlib.suppress(PathError):
                    session.send_signal({"type": "udp", "attempt": attempt, "m": m})
        up = UdpUpgrader(role=self.role, config=self.config, send_signal=send,
                         managed_listener=self.listener if self.role == "host" else None)
        self.upgraders[attempt] = up
        return up

    async def _attempt(self, attempt: int) -> None:
        s = self.session
        up = self.upgraders.get(attempt) or self._new_upgrader(attempt)
        t0 = time.monotonic()
        try:
            udp = await up.connect(timeout=self.config.connect_timeout)
        except (ShortpathError, OSError, asyncio.TimeoutError) as exc:
            code = getattr(exc, "code", type(exc).__name__)
            _log.info(log.kv("upgrade-failed", sid=s.session_id, attempt=attempt, error=code,
                             why=str(exc)[:120]))
            self.upgraders.pop(attempt, None)
            with contextlib.suppress(Exception):
                await up.close()
            if self.role == "client":
                self.mgr.upgrade_failed(attempt, str(code), time.monotonic())
            self._wake.set()
            return
        from ..transport.upgraded import UdpSessionPath
        path = UdpSessionPath(udp, f"udp-{attempt}", s.session_id)
        path.setup_seconds = time.monotonic() - t0
        path.upgrader = up
        if s.close_reason is not None:
            await path.close("session closed")
            return
        self.paths[path.path_id] = path
        s.add_path(path)
        _log.info(log.kv("udp-path-up", sid=s.session_id, attempt=attempt, kind=udp.kind,
                         setup_ms=round(path.setup_seconds * 1000, 1)))
        self.mgr.path_up(path.path_id, udp.kind, time.monotonic())
        self._wake.set()

    def _on_upgrade_signal(self, msg: dict) -> None:
        if self.role != "host" or self.config is None:
            return
        attempt = msg.get("attempt")
        if not isinstance(attempt, int) or attempt in self.upgraders:
            return
        self._new_upgrader(attempt)
        self._spawn(self._attempt(attempt))

    def _on_udp_signal(self, msg: dict) -> None:
        up = self.upgraders.get(msg.get("attempt"))
        m = msg.get("m")
        if up is not None and isinstance(m, dict):
            up.on_signal(m)

    # --- lifecycle ------------------------------------------------------------------
    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def aclose(self) -> None:
        self.stop()
        self._loop_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(self._loop_task, *self._tasks, return_exceptions=True)
        for up in list(self.upgraders.values()):
            with contextlib.suppress(Exception):
                await up.close()
        self.upgraders.clear()

    def path_quality(self, path_id: str) -> dict | None:
        st = self.mgr.paths.get(path_id)
        if st is None:
            return None
        return {"state": st.state, "probes": st.probes_total,
                "probe_loss": round(st.probes_lost / st.probes_total, 3) if st.probes_total else 0.0,
                "recent_probe_loss": round(st.quality.loss, 3),
                "probe_rtt_ms": None if st.quality.rtt is None else round(st.quality.rtt * 1000, 3)}

    def stats(self) -> dict:
        return {"active": self.session.active.kind if self.session.active else None,
                "attempts": self.mgr.attempt, "history": list(self.mgr.history),
                "paths": {pid: self.path_quality(pid) for pid in self.mgr.paths}}
