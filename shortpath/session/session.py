"""The application-facing session (asyncio).

A session offers two channels whatever path carries it:

* reliable: ``await send(bytes)`` / ``await recv()`` -- ordered, nothing lost
  or duplicated, back-pressured by the sequencing window (reliable.py);
* datagrams: ``send_datagram(bytes) -> bool`` / ``await recv_datagram()`` --
  best effort; never blocks, returns False when it had to drop.

The session starts on the TCP relay. The UDP upgrade is driven by
driver.py (the asyncio edge of the pure path manager), which adds paths with
:meth:`Session.add_path` and moves sending with :meth:`Session.switch_to`.
A switch replays every unacknowledged message on the new path; the receiver
drops duplicates by sequence number, so nothing is lost, duplicated or
reordered. Losing the relay does not end a session that is live on UDP
(a gateway restart must not cut running sessions); losing the last path does.
When the relay goes while UDP carries the session, the driver probes the UDP
path at once (``on_relay_lost``): if the gateway said the peer is gone
(``host-gone`` / ``client-gone``) and the UDP path is silent too, the session
ends with that reason within the path manager's ``dead_after``; otherwise
(gateway restart) a silence on the last path is ridden out for up to
``alone_dead_after`` (manager.py) before the session ends ``all-paths-lost``.
``info`` reports what is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from .. import log
from ..config import Timing
from ..errors import LocalError, PathError, RemoteError, SessionClosed, ShortpathError
from ..transport.base import Path
from ..wire import frames as fr
from ..wire.frames import Frame, FrameType
from .reliable import AckClock, ReliableReceiver, ReliableSender

_log = log.get("session")

#: Largest application message on the reliable channel.
MAX_MESSAGE = 256 * 1024
#: Largest datagram (it must fit one UDP-path message without fragmentation games).
MAX_DATAGRAM = 1200
#: Datagrams kept for an application that is not reading; older ones are dropped.
DATAGRAM_QUEUE = 1024
#: Relay end reasons (the gateway's GATEWAY_END) that say the peer's leg is gone.
PEER_GONE = ("host-gone", "client-gone")


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

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Session:
    def __init__(self, session_id: str, role: str, timing: Timing | None = None,
                 peer: str = "") -> None:
        self.session_id = session_id
        self.role = role               # "client" or "host"
        self.peer = peer               # user (on a host) or host id (on a client)
        self.timing = timing or Timing()
        self.started_at = time.time()
        self._sender = ReliableSender(self.timing.send_window_bytes)
        self._receiver = ReliableReceiver()
        self._acks = AckClock(self.timing.ack_every, self.timing.ack_delay)
        self._inbox: deque[bytes] = deque()
        self._dgrams: deque[bytes] = deque(maxlen=DATAGRAM_QUEUE)
        self._inbox_ready = asyncio.Event()
        self._dgram_ready = asyncio.Event()
        self._window_open = asyncio.Event()
        self._closed = asyncio.Event()
        self.close_reason: str | None = None
        self.close_detail = ""
        self.relay: Path | None = None
        self.active: Path | None = None
        self.paths: dict[str, Path] = {}
        self.policy: dict = {}
        self.driver = None
        # hooks for the path driver (each takes the Path)
        self.on_rx: Callable[[Path], None] | None = None
        self.on_tx: Callable[[Path], None] | None = None
        self.on_pong: Callable[[Path, float, int], None] | None = None
        self.on_path_down: Callable[[Path, str], None] | None = None
        self.on_relay_lost: Callable[[str], None] | None = None
        self.on_answered: Callable[[Path], None] | None = None   # we answered a PING on a path
        self.on_peer_switch: Callable[[str, str], None] | None = None   # (to kind, reason)
        #: why the relay ended while the session went on over UDP (None while it is up)
        self.relay_lost_reason: str | None = None
        self._activity = 0
        self.history: list[dict] = []
        self._signal_handlers: dict[str, Callable[[dict], None]] = {}
        self._dgram_id = 0
        self._ping_id = 0
        self._pings: dict[int, asyncio.Future] = {}
        self.srtt: float | None = None
        self.counters = {"messages_sent": 0, "messages_received": 0, "datagrams_sent": 0,
                         "datagrams_received": 0, "datagrams_dropped": 0}
        self._ack_handle: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        self.on_close: list[Callable[[str], None]] = []
        #: Set-up phase timestamps, time.monotonic() seconds, keyed by phase end.
        #: Written once each by whoever reaches the point, read by benchmarks
        #: (benchmarks/setup.py); no I/O. Client (client/connect.py): connect,
        #: gateway_tls, welcome, launched, inner_tls, session_ok. Host
        #: (host/agent.py): dial, leg_tls, leg_accepted, inner_tls, hello, hello_ok.
        #: Both: udp_switch (first switch onto a UDP path, below). The UDP attempt's
        #: own phases are in that path's info()["timeline"] (transport/udp.py).
        self.timeline: dict[str, float] = {}

    # --- wiring paths ---------------------------------------------------------
    def attach_relay(self, path: Path) -> None:
        path.path_id = "relay"
        self.relay = path
        self.active = path
        self.add_path(path)
        self._record("start", path.kind, "session starts on the relay")
        self._tasks.append(asyncio.get_running_loop().create_task(self._ping_loop()))

    def add_path(self, path: Path) -> None:
        """Start receiving on ``path`` (it carries nothing of ours until switch_to)."""
        self.paths[path.path_id] = path
        path.on_frame = lambda f, p=path: self._on_frame(p, f)
        path.on_closed = lambda reason, p=path: self._on_path_closed(p, reason)

    def switch_to(self, path: Path, reason: str) -> None:
        """Send on ``path`` from now on; replay what the peer has not acknowledged."""
        if path is self.active or self.close_reason is not None:
            return
        if path.closed_reason is not None:
            raise PathError(f"cannot switch to closed path {path.path_id}")
        old = self.active
        self.active = path
        pending = self._sender.pending()
        path.send_reliable(fr.encode_json(FrameType.SIGNAL, {
            "type": "switch", "to": path.kind, "reason": reason, "next_seq": self._sender.next_seq,
            "replay_from": pending[0][0] if pending else self._sender.next_seq}))
        for seq, msg in pending:
            path.send_reliable(fr.encode_data(seq, msg))
        self._record("switch", path.kind, f"{reason} (from {old.kind if old else '-'}, replayed {len(pending)})")
        if path.kind.startswith("udp"):
            self.timeline.setdefault("udp_switch", time.monotonic())

    def _record(self, event: str, transport: str, reason: str) -> None:
        entry = {"t": time.time(), "event": event, "transport": transport, "reason": reason}
        self.history.append(entry)
        _log.info(log.kv("path", sid=self.session_id, event=event, transport=transport, reason=reason))

    def on_signal(self, kind: str, handler: Callable[[dict], None]) -> None:
        """Register a handler for SIGNAL frames whose ``type`` is ``kind``."""
        self._signal_handlers[kind] = handler

    def send_signal(self, msg: dict) -> None:
        """Send a SIGNAL frame on the reliable lane of the relay (the authenticated channel)."""
        path = self.relay if self.relay is not None and self.relay.closed_reason is None else self.active
        if path is None:
            raise PathError("no path to signal on")
        path.send_reliable(fr.encode_json(FrameType.SIGNAL, msg))

    # --- inbound --------------------------------------------------------------
    def _on_frame(self, path: Path, frame: Frame) -> None:
        if self.on_rx is not None:
            self.on_rx(path)
        try:
            self._dispatch(path, frame)
        except RemoteError as exc:
            _log.warning(log.kv("protocol-error", sid=self.session_id, path=path.kind, error=exc.code))
            self._finish("protocol-error", str(exc))

    def _dispatch(self, path: Path, frame: Frame) -> None:
        t = frame.type
        if t == FrameType.DATA:
            seq, msg = fr.decode_data(frame.payload)
            ready = self._receiver.on_data(seq, msg)
            if ready:
                self._inbox.extend(ready)
                self._inbox_ready.set()
        elif t == FrameType.ACK:
            if self._sender.on_ack(fr.decode_ack(frame.payload)):
                self._window_open.set()
        elif t == FrameType.DGRAM:
            _ident, _sent, data = fr.decode_dgram(frame.payload)
            self.counters["datagrams_received"] += 1
            self._dgrams.append(data)
            self._dgram_ready.set()
        elif t == FrameType.PING:
            ident, sent = fr.decode_ping(frame.payload)
            path.send_unreliable(fr.encode_ping(FrameType.PONG, ident, sent))
            if self.on_answered is not None:
                self.on_answered(path)          # an outbound packet: refreshes NAT bindings too
        elif t == FrameType.PONG:
            ident, sent = fr.decode_ping(frame.payload)
            sample = time.monotonic() - sent / 1e6
            if 0 <= sample < 60:
                prev = getattr(path, "srtt", None)
                path.srtt = sample if prev is None else 0.875 * prev + 0.125 * sample
                if path is self.active:
                    self.srtt = path.srtt
                if self.on_pong is not None:
                    self.on_pong(path, sample, ident)
                fut = self._pings.pop(ident, None)
                if fut is not None and not fut.done():
                    fut.set_result(sample)
        elif t == FrameType.SIGNAL:
            msg = fr.decode_json(frame.payload)
            if msg.get("type") == "switch":
                self._record("peer-switch", str(msg.get("to")), str(msg.get("reason")))
                if self.on_peer_switch is not None:
                    self.on_peer_switch(str(msg.get("to")), str(msg.get("reason")))
                return
            handler = self._signal_handlers.get(str(msg.get("type")))
            if handler is None:
                _log.debug(log.kv("signal-ignored", sid=self.session_id, kind=msg.get("type")))
            else:
                handler(msg)
        elif t == FrameType.CLOSE:
            info = fr.decode_json(frame.payload)
            self._finish(str(info.get("reason", "peer-closed")), str(info.get("detail", "")))
        else:
            raise RemoteError(f"{t.name} frame is not valid inside a session")

    def _on_path_closed(self, path: Path, reason: str) -> None:
        self.paths.pop(getattr(path, "path_id", ""), None)
        if self.close_reason is not None:
            return
        if path is self.relay:
            self.relay = None
            if self.active is path or self.active is None:
                self._finish(reason, "relay path closed")
                return
            self.relay_lost_reason = reason
            self._record("relay-lost", self.active.kind, f"{reason}; session continues on {self.active.kind}")
            if self.on_relay_lost is not None:
                self.on_relay_lost(reason)      # the driver checks the UDP path is still alive
        elif self.on_path_down is not None:
            self.on_path_down(path, reason)     # the driver fails over (SwitchPath) if needed
        elif path is self.active:
            self._finish(reason, f"{path.kind} path closed")

    def fail_over_to_relay(self, reason: str) -> bool:
        """Switch to the relay if it is still there; else end the session."""
        if self.relay is not None and self.relay.closed_reason is None:
            self.switch_to(self.relay, reason)
            return True
        if self.relay_lost_reason in PEER_GONE:
            # The gateway told us the peer's leg ended, and now the UDP path is silent
            # too: the peer is gone, say so rather than a generic "all paths lost".
            self._finish(self.relay_lost_reason, f"relay ended ({self.relay_lost_reason}), then the "
                                                 f"{self.active.kind if self.active else 'UDP'} path failed: {reason}")
        else:
            self._finish("all-paths-lost", reason)
        return False

    # --- reliable channel -----------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Send one message reliably; waits while the window is full."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalError("send() takes bytes")
        if len(data) > MAX_MESSAGE:
            raise LocalError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        self._check_open()
        while not self._sender.can_send(len(data)):
            self._window_open.clear()
            await self._wait_or_closed(self._window_open)
            self._check_open()
        seq = self._sender.push(bytes(data))
        self.counters["messages_sent"] += 1
        path = self.active
        try:
            path.send_reliable(fr.encode_data(seq, bytes(data)))
            if self.on_tx is not None:
                self.on_tx(path)
            await path.drain()
        except PathError:
            # The message stays in the sender's window; a path switch replays it.
            if path is self.relay:
                self._check_open()

    async def recv(self) -> bytes:
        """Next message. Raises SessionClosed once the session ended and the inbox is empty."""
        while not self._inbox:
            if self.close_reason is not None:
                raise SessionClosed(self.close_reason, self.close_detail)
            self._inbox_ready.clear()
            await self._wait_or_closed(self._inbox_ready)
        msg = self._inbox.popleft()
        self.counters["messages_received"] += 1
        if self._acks.on_consumed(time.monotonic()):
            self._send_ack()
        elif self._ack_handle is None:
            self._ack_handle = asyncio.get_running_loop().call_later(self.timing.ack_delay, self._ack_timer)
        return msg

    def _ack_timer(self) -> None:
        self._ack_handle = None
        if self._acks.consumed > self._acks.acked:
            self._send_ack()

    def _send_ack(self) -> None:
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None
        value = self._acks.sent()
        if self.active is not None and self.close_reason is None:
            with contextlib.suppress(PathError):
                self.active.send_reliable(fr.encode_ack(value))

    # --- datagrams -------------------------------------------------------------
    def send_datagram(self, data: bytes) -> bool:
        if len(data) > MAX_DATAGRAM:
            raise LocalError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
        if self.close_reason is not None or self.active is None:
            self.counters["datagrams_dropped"] += 1
            return False
        self._dgram_id += 1
        ok = self.active.send_unreliable(fr.encode_dgram(self._dgram_id, time.time_ns() // 1000, bytes(data)))
        self.counters["datagrams_sent" if ok else "datagrams_dropped"] += 1
        return ok

    async def recv_datagram(self) -> bytes:
        while not self._dgrams:
            if self.close_reason is not None:
                raise SessionClosed(self.close_reason, self.close_detail)
            self._dgram_ready.clear()
            await self._wait_or_closed(self._dgram_ready)
        return self._dgrams.popleft()

    # --- liveness / RTT --------------------------------------------------------
    async def _ping_loop(self) -> None:
        # RTT samples only while the application is active: an idle session
        # sends nothing here (NAT keepalives are the path manager's job).
        last = -1
        while self.close_reason is None:
            path = self.active
            busy = self.counters["messages_sent"] + self.counters["messages_received"] + \
                self.counters["datagrams_sent"]
            if path is not None and busy != last:
                last = busy
                self._ping_id += 1
                path.send_unreliable(fr.encode_ping(FrameType.PING, self._ping_id, int(time.monotonic() * 1e6)))
            try:
                await asyncio.wait_for(self._closed.wait(), self.timing.ping_interval)
            except asyncio.TimeoutError:
                pass

    async def ping(self, timeout: float = 5.0) -> float:
        """Measure one round trip on the active path's best-effort lane (seconds)."""
        self._check_open()
        self._ping_id += 1
        ident = self._ping_id
        fut = asyncio.get_running_loop().create_future()
        self._pings[ident] = fut
        try:
            if not self.active.send_unreliable(fr.encode_ping(FrameType.PING, ident, int(time.monotonic() * 1e6))):
                raise PathError("ping dropped: path buffer full")
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise PathError("ping timed out") from None
        finally:
            self._pings.pop(ident, None)

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

    def _finish(self, reason: str, detail: str = "") -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self.close_detail = detail
        self._closed.set()
        self._inbox_ready.set()
        self._dgram_ready.set()
        self._window_open.set()
        if self._ack_handle is not None:
            self._ack_handle.cancel()
        self._record("end", self.active.kind if self.active else "-", reason)
        for cb in list(self.on_close):
            try:
                cb(reason)
            except Exception:  # pragma: no cover - a callback bug must not stop the close
                _log.exception(log.kv("BUG on_close callback failed", sid=self.session_id))
        if self.driver is not None:
            self.driver.stop()
        for path in {id(p): p for p in (self.relay, self.active, *self.paths.values()) if p is not None}.values():
            asyncio.get_running_loop().create_task(path.close(reason))

    async def close(self, reason: str = "closed", detail: str = "") -> None:
        """Tell the peer why, then close every path."""
        if self.close_reason is None:
            # Tell the peer on every open path: the first to arrive wins.
            for path in {id(p): p for p in (self.active, self.relay) if p is not None}.values():
                if path.closed_reason is None:
                    with contextlib.suppress(PathError, asyncio.TimeoutError):
                        path.send_reliable(fr.encode_json(FrameType.CLOSE, {"reason": reason, "detail": detail}))
                        await asyncio.wait_for(path.drain(), 2.0)
            self._finish(reason, detail)
        for task in self._tasks:
            task.cancel()
        if self.driver is not None:
            await self.driver.aclose()
        for path in {id(p): p for p in (self.relay, self.active, *self.paths.values()) if p is not None}.values():
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

    @property
    def info(self) -> SessionInfo:
        paths = []
        for p in {id(p): p for p in (self.relay, self.active, *self.paths.values()) if p is not None}.values():
            d = p.info()
            d["active"] = p is self.active
            if self.driver is not None and p.path_id:
                d["quality"] = self.driver.path_quality(p.path_id)
            paths.append(d)
        return SessionInfo(
            session_id=self.session_id, role=self.role,
            transport=self.active.kind if self.active else "none",
            rtt_ms=(None if getattr(self.active, "srtt", None) is None
                    else round(self.active.srtt * 1000, 3)),
            bytes_sent=sum(p["bytes_sent"] for p in paths),
            bytes_received=sum(p["bytes_received"] for p in paths),
            started_at=self.started_at,
            messages_sent=self.counters["messages_sent"], messages_received=self.counters["messages_received"],
            datagrams_sent=self.counters["datagrams_sent"], datagrams_received=self.counters["datagrams_received"],
            datagrams_dropped=self.counters["datagrams_dropped"],
            duplicates_dropped=self._receiver.stats.duplicates,
            paths=paths, history=list(self.history), timeline=dict(self.timeline),
            time_to_udp=next((round(h["t"] - self.started_at, 3) for h in self.history
                              if h["event"] == "switch" and h["transport"].startswith("udp")), None))
