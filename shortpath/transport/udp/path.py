"""An established UDP path: two SCTP data channels over DTLS over ICE.

Stack of one path, bottom up::

    sockets     ice.IceAgent (aioice, our gathering)  |  managed.ManagedSession (shared 3390)
    pipe        DatagramPipe: counts bytes, stamps the last datagram heard
    DTLS        aiortc RTCDtlsTransport, peer certificate checked against the
                sha-256 fingerprint received by signalling
    SCTP        sctp.TunedSctpTransport (aiortc + our timers), or stock aiortc
    channels    id 0: reliable, ordered     id 1: unordered, maxRetransmits=0
                ids 2-4: reliable, ordered: the session's channels 1-3 (input, graphics,
                bulk; shortpath/session/channels.py), one SCTP stream each, so a
                message held by a retransmission on one stream never holds another's
                delivery (``send_reliable(data, stream=n)``; stream 0 = id 0)

upgrader.py builds this stack and hands it over as one :class:`UdpStack`; from
then on the :class:`UdpPath` owns every part and releases them itself when it
closes, whoever closes it (the application, the network, the peer's abort).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from shortpath.errors import BufferFull, LocalError, PathError

from . import _aiortc_compat as aiortc_compat
from .config import UdpConfig
from .ice import Impairment
from .managed import ManagedSession
from .pmtu import RELAYED_MAX_PACKET

__all__ = ["DatagramPipe", "UdpStack", "UdpPath", "release_parts"]

logger = logging.getLogger("shortpath.transport.udp")


class DatagramPipe:
    """The datagrams under DTLS (an ICE agent's or a managed session's recv/send),
    with counters. ``role`` is our ICE role, "controlling" or "controlled"."""

    def __init__(self, recv: Callable[[], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]],
                 role: str) -> None:
        self._inner_recv = recv
        self._inner_send = send
        self.role = role
        self.tx_bytes = self.rx_bytes = self.tx_datagrams = self.rx_datagrams = 0
        self.last_rx = time.monotonic()

    async def recv(self) -> bytes:
        data = await self._inner_recv()
        self.rx_bytes += len(data)
        self.rx_datagrams += 1
        self.last_rx = time.monotonic()
        return data

    async def send(self, data: bytes) -> None:
        await self._inner_send(data)
        self.tx_bytes += len(data)
        self.tx_datagrams += 1

    def for_dtls(self) -> Any:
        """This pipe in the shape aiortc's RTCDtlsTransport expects below it."""
        return aiortc_compat.dtls_pipe(self.recv, self.send, self.role)


@dataclass
class UdpStack:
    """Everything one established path owns; built by the upgrader, handed to UdpPath."""
    role: str                  # our session role: "client" | "host"
    config: UdpConfig
    pipe: DatagramPipe
    dtls: Any                  # aiortc RTCDtlsTransport
    dtls_role: str             # "server" (client) | "client" (host)
    sctp: Any                  # sctp.TunedSctpTransport, or aiortc's RTCSctpTransport
    reliable: Any              # RTCDataChannel id 0, ordered
    unreliable: Any            # RTCDataChannel id 1, unordered, no retransmission
    impairment: Impairment     # test/bench drops at our socket wrappers
    agent: Any = None          # ice.IceAgent when ICE won (None: the managed listener won)
    managed: Optional[ManagedSession] = None          # when the managed listener won
    listener_address: Optional[tuple[str, int]] = None  # that listener's bound address
    #: set-up phase stamps (time.monotonic()), see UdpUpgrader.timeline
    timeline: dict = field(default_factory=dict)
    #: session channel n (1..) -> its ordered RTCDataChannel (SCTP stream STREAM_BASE + n - 1);
    #: channel 0 is ``reliable``. Empty: every channel shares ``reliable``.
    channels: dict = field(default_factory=dict)


#: SCTP stream (data channel id) of session channel 1; channel n uses STREAM_BASE + n - 1
STREAM_BASE = 2
#: session channels that get a stream of their own (channels.py: input, graphics, bulk)
EXTRA_STREAMS = (1, 2, 3)


def stream_priorities() -> dict[int, int]:
    """SCTP stream id -> send priority for ``TunedSctpTransport.sp_set_stream_priority``
    (lower goes first), from the session channels' own priorities (session/channels.py):
    input first, then the default channel (stream 0) and the unreliable stream 1 (its
    datagrams use the lane ahead of every FIFO anyway), graphics, bulk. So an input event
    waits behind no queued frame fragment, only behind what is already on the wire."""
    from shortpath.session.channels import BY_ID, DEFAULT

    default = BY_ID[DEFAULT].priority
    prio = {0: default, 1: default}
    for ch in EXTRA_STREAMS:
        prio[STREAM_BASE + ch - 1] = BY_ID[ch].priority
    return prio


async def release_parts(*, role: str, close_timeout: float, sctp: Any = None, dtls: Any = None,
                        agent: Any = None, managed: Optional[ManagedSession] = None) -> None:
    """Stop SCTP and DTLS (each bounded by ``close_timeout``), close the ICE agent (TURN
    deallocation bounded inside) and unregister from the managed listener. Never raises."""
    if sctp is not None:
        try:
            await asyncio.wait_for(sctp.stop(), close_timeout)
        except (asyncio.TimeoutError, Exception):
            pass
    if dtls is not None:
        try:
            await asyncio.wait_for(dtls.stop(), close_timeout)
        except (asyncio.TimeoutError, Exception):
            pass
    if agent is not None:
        try:
            await agent.close()
        except Exception:
            logger.exception("udp[%s]: closing ICE agent", role)
    if managed is not None:
        managed.close()


def _describe(candidate: Any) -> Optional[dict]:
    if candidate is None:
        return None
    return {"type": candidate.type, "ip": candidate.host, "port": candidate.port}


class UdpPath:
    """An established UDP path. See the module docstring and docs/udp.md.

    Callbacks (assign any time; messages received before assignment are kept,
    up to ``receive_backlog``, and delivered on assignment):

    * ``on_reliable(bytes)`` / ``on_unreliable(bytes)``
    * ``on_closed(reason: str)``, called once, whatever closed the path
      ("local", "peer-closed", "dtls-closed", "sctp-retransmit-limit",
      "peer-abort:...").

    ``on_release`` (constructor): awaited once after the stack is released, so
    whoever built the path can stop what it runs alongside (the upgrader's
    signalling pump).
    """

    def __init__(self, stack: UdpStack, *, kind: str, peer_max_message_size: int,
                 on_release: Optional[Callable[[], Awaitable[None]]] = None) -> None:
        self._stack = stack
        self._cfg = stack.config
        self._pipe = stack.pipe
        self._dtls = stack.dtls
        self._sctp = stack.sctp
        self._rel = stack.reliable
        self._unrel = stack.unreliable
        self._tuned = stack.config.sctp_tuning is not None
        self._on_release = on_release
        self.kind = kind
        self._fit_relay()
        self.role = stack.role
        self._max_send = min(peer_max_message_size or (1 << 30), stack.config.max_message_size)
        self._closed = False
        self._close_reason: Optional[str] = None
        self._close_task: Optional[asyncio.Task] = None
        self._on_reliable: Optional[Callable[[bytes], Any]] = None
        self._on_unreliable: Optional[Callable[[bytes], Any]] = None
        self._on_closed: Optional[Callable[[str], Any]] = None
        self._backlog_rel: deque = deque()
        self._backlog_unrel: deque = deque()
        self.messages_sent = self.messages_received = 0
        self.unreliable_sent = self.unreliable_received = 0
        self.unreliable_dropped = 0
        self.unreliable_expired = 0
        #: SCTP stream id -> reliable messages sent on it
        self.stream_messages_sent: dict[int, int] = {}
        self.backlog_dropped = 0
        self._started = False
        self._progress: Optional[asyncio.Future] = None
        # Attached before SCTP starts: the peer may send as soon as its side
        # is open, before our connect() has returned.
        self._rel.on("message", self._rx_reliable)
        self._unrel.on("message", self._rx_unreliable)
        #: session channel -> data channel; each carries whole frames, which name their channel
        self._streams = {0: self._rel, **stack.channels}
        for ch in stack.channels.values():
            ch.on("message", self._rx_reliable)

    def start(self) -> None:
        """Watch the stack for its end (channel closed, DTLS closed, SCTP given up).
        Called once SCTP is up; idempotent."""
        if self._started:
            return
        self._started = True
        self._rel.on("close", lambda: self._network_closed("peer-closed"))
        self._dtls.on("statechange", self._dtls_state)
        if self._tuned:
            self._sctp.on_dead = lambda: self._network_closed("sctp-retransmit-limit")
            self._sctp.on_progress = self._notify_progress

    # -- what the peer tells us after set-up (the upgrader's signalling) ------------------
    def note_peer_selected(self, kind: Optional[str]) -> None:
        """The client reported the pair it nominated. Its relay candidate can reach our
        managed listener (a public one), and that path still goes through TURN."""
        if kind == "udp-turn":
            self.kind = "udp-turn"
            self._fit_relay()

    def _fit_relay(self) -> None:
        """Through a TURN relay, SCTP packets leave room for the channel header (see
        pmtu.TURN_CHANNEL_OVERHEAD: probing cannot tell, the relay fragments instead)."""
        if self.kind == "udp-turn" and self._tuned:
            self._sctp.sp_limit_packet(RELAYED_MAX_PACKET)

    def peer_aborted(self, reason: str) -> None:
        """The peer sent udp.abort: close with reason ``peer-abort:<reason>``."""
        self._network_closed(f"peer-abort:{reason}")

    # -- liveness and set-up --------------------------------------------------------------
    @property
    def last_rx_at(self) -> Optional[float]:
        """time.monotonic() of the last SCTP packet from the peer on this path
        (data, SACKs and heartbeats alike), which only arrives through DTLS;
        None before the first one and with aiortc's stock SCTP (no such stamp)."""
        return self._sctp.sp_last_rx if self._tuned else None

    @property
    def timeline(self) -> dict:
        """Set-up phase stamps of the attempt that made this path (see UdpUpgrader.timeline)."""
        return self._stack.timeline

    @property
    def setup_seconds(self) -> Optional[float]:
        """From connect() to the path being up."""
        tl = self._stack.timeline
        if "start" in tl and "up" in tl:
            return tl["up"] - tl["start"]
        return None

    def _notify_progress(self) -> None:
        fut, self._progress = self._progress, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- callbacks ------------------------------------------------------------------
    @property
    def on_reliable(self) -> Optional[Callable[[bytes], Any]]:
        return self._on_reliable

    @on_reliable.setter
    def on_reliable(self, cb: Optional[Callable[[bytes], Any]]) -> None:
        self._on_reliable = cb
        while cb is not None and self._backlog_rel:
            self._call(cb, self._backlog_rel.popleft())

    @property
    def on_unreliable(self) -> Optional[Callable[[bytes], Any]]:
        return self._on_unreliable

    @on_unreliable.setter
    def on_unreliable(self, cb: Optional[Callable[[bytes], Any]]) -> None:
        self._on_unreliable = cb
        while cb is not None and self._backlog_unrel:
            self._call(cb, self._backlog_unrel.popleft())

    @property
    def on_closed(self) -> Optional[Callable[[str], Any]]:
        return self._on_closed

    @on_closed.setter
    def on_closed(self, cb: Optional[Callable[[str], Any]]) -> None:
        self._on_closed = cb
        if cb is not None and self._close_reason is not None:
            self._call(cb, self._close_reason)

    def _call(self, cb: Callable, arg: Any) -> None:
        try:
            result = cb(arg)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            logger.exception("udp: application callback raised")

    def _rx_reliable(self, data: Any) -> None:
        self.messages_received += 1
        data = data.encode() if isinstance(data, str) else data
        if self._on_reliable is not None:
            self._call(self._on_reliable, data)
        elif len(self._backlog_rel) < self._cfg.receive_backlog:
            self._backlog_rel.append(data)
        else:
            self.backlog_dropped += 1

    def _rx_unreliable(self, data: Any) -> None:
        self.unreliable_received += 1
        data = data.encode() if isinstance(data, str) else data
        if self._on_unreliable is not None:
            self._call(self._on_unreliable, data)
        elif len(self._backlog_unrel) < self._cfg.receive_backlog:
            self._backlog_unrel.append(data)
        else:
            self.backlog_dropped += 1

    # -- sending ------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by send_* but not yet handed to the network
        (data-channel queue + SCTP chunks waiting for congestion window)."""
        queued = aiortc_compat.sctp_queued_bytes(self._sctp)
        extra = sum(ch.bufferedAmount for ch in self._stack.channels.values())
        return self._rel.bufferedAmount + self._unrel.bufferedAmount + extra + queued

    @property
    def pacing_rate(self) -> Optional[float]:
        """Bytes/s our SCTP sender paces at now (its congestion controller's rate), or
        None with aiortc's stock sender or once closed."""
        rate = getattr(self._sctp, "sp_pacing_rate", None)
        return None if self._closed or rate is None else float(rate)

    def _check_send(self, data: bytes) -> None:
        if self._closed or self._rel.readyState != "open":
            raise PathError("UDP path is closed", code="closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalError("send needs bytes")
        if len(data) > self._max_send:
            raise LocalError(f"message of {len(data)} bytes exceeds the {self._max_send}-byte limit")

    def send_reliable(self, data: bytes, stream: int = 0) -> None:
        """Queue one message, delivered once, in order within its ``stream`` (a session
        channel id; one without a stream of its own shares stream 0). Never blocks.

        Raises PathError if the path is closed, BufferFull if the backlog is
        above ``reliable_buffer_limit`` (watch ``buffered_amount``)."""
        self._check_send(data)
        if self.buffered_amount + len(data) > self._cfg.reliable_buffer_limit:
            raise BufferFull(f"UDP path backlog above {self._cfg.reliable_buffer_limit} bytes")
        channel = self._streams.get(stream, self._rel)
        if channel.readyState != "open":
            channel = self._rel
        channel.send(bytes(data))
        self.messages_sent += 1
        sid = channel.id
        self.stream_messages_sent[sid] = self.stream_messages_sent.get(sid, 0) + 1

    def send_unreliable(self, data: bytes, deadline: Optional[float] = None) -> bool:
        """Send one message unordered, never retransmitted. Returns False
        (and counts it) if the backlog is above ``unreliable_buffer_limit``, or
        if ``deadline`` (time.monotonic()) has passed: an expired datagram is
        never handed to SCTP (counted in ``unreliable_expired``). Once queued,
        SCTP's datagram lane drops it unsent past its own max age (sctp.py).
        Never blocks; raises PathError if the path is closed."""
        self._check_send(data)
        if deadline is not None and time.monotonic() > deadline:
            self.unreliable_expired += 1
            return False
        # Our SCTP sender queues datagrams in a lane of their own that goes before reliable
        # data, so only that lane's backlog counts; stock aiortc has one FIFO for both.
        backlog = aiortc_compat.sctp_datagram_backlog(self._sctp)
        backlog = self.buffered_amount if backlog is None else backlog + self._unrel.bufferedAmount
        if backlog + len(data) > self._cfg.unreliable_buffer_limit:
            self.unreliable_dropped += 1
            return False
        self._unrel.send(bytes(data))
        self.unreliable_sent += 1
        return True

    async def drain(self, high_water: Optional[int] = None) -> None:
        """Wait until ``buffered_amount <= high_water`` (default
        ``UdpConfig.drain_high_water``). Raises PathError if the path closes.

        Woken by SCTP progress (SACKs, flushes) on the tuned transport; with
        aiortc's stock SCTP (``sctp_tuning=None``, benchmarks only) it polls
        every 5 ms."""
        hw = self._cfg.drain_high_water if high_water is None else high_water
        loop = asyncio.get_running_loop()
        while self.buffered_amount > hw:
            if self._closed:
                raise PathError("UDP path is closed", code="closed")
            if not self._tuned:
                await asyncio.sleep(0.005)
                continue
            if self._progress is None:
                self._progress = loop.create_future()
            await self._progress
        if self._closed:
            raise PathError("UDP path is closed", code="closed")

    # -- state -------------------------------------------------------------------------
    @property
    def bytes_sent(self) -> int:
        return self._pipe.tx_bytes

    @property
    def bytes_received(self) -> int:
        return self._pipe.rx_bytes

    @property
    def closed_reason(self) -> Optional[str]:
        return self._close_reason

    def info(self) -> dict:
        st = self._stack
        agent = st.agent
        local = remote = None
        turn = None
        if agent is not None and agent.selected_pair() is not None:
            pair = agent.selected_pair()
            local, remote = _describe(pair.local_candidate), _describe(pair.remote_candidate)
            ts = getattr(pair.protocol, "sp_turn", None)   # ours, set on relay sockets only
            if ts is not None:
                turn = {"server": f"{ts.host}:{ts.port}", "transport": ts.transport}
        elif st.managed is not None:
            la = st.listener_address
            local = {"type": "managed-listener", "ip": la[0], "port": la[1]} if la else None
            ra = st.managed.remote_addr
            remote = {"type": "peer", "ip": ra[0], "port": ra[1]} if ra else None
        sctp = aiortc_compat.sctp_state(self._sctp)
        out = {
            "kind": self.kind,
            "role": st.role,
            "ice_role": self._pipe.role,
            "dtls_role": st.dtls_role,
            "dtls_state": self._dtls.state,
            "local_candidate": local,
            "remote_candidate": remote,
            "selected_pair": (f"{local['ip']}:{local['port']} -> {remote['ip']}:{remote['port']}"
                              if local and remote else None),
            "turn": turn,
            "bytes_sent": self._pipe.tx_bytes,
            "bytes_received": self._pipe.rx_bytes,
            "datagrams_sent": self._pipe.tx_datagrams,
            "datagrams_received": self._pipe.rx_datagrams,
            "seconds_since_rx": round(time.monotonic() - self._pipe.last_rx, 3),
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "unreliable_sent": self.unreliable_sent,
            "unreliable_received": self.unreliable_received,
            "unreliable_dropped": self.unreliable_dropped,
            "unreliable_expired": self.unreliable_expired,
            "streams": 1 + len(st.channels),
            "stream_messages_sent": dict(self.stream_messages_sent),
            "buffered_amount": self.buffered_amount if not self._closed else 0,
            "sctp": {
                "state": self._sctp.state,
                "rto": round(sctp["rto"], 4),
                "srtt": None if sctp["srtt"] is None else round(sctp["srtt"], 5),
                "cwnd": sctp["cwnd"],
                "flight_size": sctp["flight_size"],
                "t3_expiries": self._sctp.sp_t3_expiries if self._tuned else None,
                "stream_priorities": self._sctp.sp_stream_priorities() if self._tuned else None,
                "tuned": self._tuned,
                **({k: sctp.get(k) for k in ("pacing_rate", "fast_retransmits", "tlp_probes", "tail_copies",
                                             "datagrams_expired", "chunk_payload", "pmtu",
                                             "controller")} if self._tuned else {}),
            },
            "impairment": {"blackhole": st.impairment.blackhole, "max_size": st.impairment.max_size,
                           "dropped_in": st.impairment.dropped_in,
                           "dropped_out": st.impairment.dropped_out},
            "closed": self._closed,
            "close_reason": self._close_reason,
            "timeline": dict(st.timeline),
        }
        if agent is not None:
            out["ice_drops"] = dict(agent.drop_stats)
        return out

    # -- test / bench hooks ------------------------------------------------------------
    def blackhole(self, on: bool = True) -> None:
        """Test hook: drop every datagram of this path in both directions at our
        socket wrapper (STUN consent included), as if the network went dark."""
        self._stack.impairment.blackhole = on

    def impairment_max_size(self, size: int) -> None:
        """Test hook: drop datagrams longer than ``size`` bytes in both directions (0 = no
        limit), as a path whose MTU shrank and that sends no ICMP about it."""
        self._stack.impairment.max_size = size

    def drop_every(self, n: int) -> None:
        """Bench hook: drop every n-th datagram (both directions counted together); 0 = off."""
        self._stack.impairment.drop_every = n

    # -- closing -----------------------------------------------------------------------
    def _network_closed(self, reason: str) -> None:
        if self._closed:
            return
        self._close_task = asyncio.ensure_future(self._do_close(reason))

    def _dtls_state(self) -> None:
        if self._dtls.state in ("closed", "failed"):
            self._network_closed("dtls-closed")

    async def close(self, reason: str = "local") -> None:
        """Close quickly (bounded by ``close_timeout``); idempotent.
        ``reason`` is what ``on_closed`` receives if this call closes the path."""
        if self._close_task is not None:
            await asyncio.gather(self._close_task, return_exceptions=True)
            return
        if self._closed:
            return
        self._close_task = asyncio.ensure_future(self._do_close(reason))
        await asyncio.gather(self._close_task, return_exceptions=True)

    async def _do_close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._notify_progress()  # wake drain(), which then raises PathError
        logger.info("udp[%s]: path closed (%s)", self.role, reason)
        st = self._stack
        try:
            await release_parts(role=st.role, close_timeout=self._cfg.close_timeout, sctp=st.sctp,
                                dtls=st.dtls, agent=st.agent, managed=st.managed)
            if self._on_release is not None:
                await self._on_release()
        finally:
            if self._on_closed is not None:
                self._call(self._on_closed, reason)
