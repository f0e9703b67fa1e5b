"""Stitch two legs and relay RELAY frames between them.

Once a session is stitched, the gateway stops reading the two legs through
their StreamReaders: each leg's TLS transport is handed to a small
``asyncio.Protocol`` (:class:`_LegProtocol`) for the life of the relay. The
TLS layer hands it the decrypted bytes of each read (up to 256 KiB at a time);
``data_received`` checks the frame headers in them with a RelayScanner (type
RELAY, size at most MAX_RELAY_PAYLOAD) without copying payloads, and writes the
very same bytes object to the other leg's transport. No task, no future and no
StreamReader buffer (two copies) per read.

Flow control is the transports' own: when the other leg's write buffer goes
over ``relay_high_water`` its transport calls ``pause_writing`` on that leg's
protocol, which pauses *reading* on this leg until ``resume_writing``. The TLS
layer stops reading the socket once its own incoming buffer is full, so TCP
pushes back on the sender. Per direction the gateway holds at most one read,
one high-water mark of outgoing bytes and the TLS layer's incoming buffer: a
bounded queue whose full outcome is explicit back-pressure (counted in
``RelayStats.pauses``), never an unbounded buffer and never a silent drop.

Anything but RELAY from a peer on a stitched leg is a protocol error that ends
this one session. When one leg ends, the other is sent GATEWAY_END with the
reason (``host-gone`` / ``client-gone`` / ``gateway-shutdown``) and closed.
GATEWAY_END is only added where the receiving leg is at a frame boundary.

The first version pumped each direction with a task over the legs'
StreamReader/StreamWriter; docs/relay.md has the side-by-side figures that
replaced it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from .. import log
from ..errors import MalformedFrame, ShortpathError
from ..framed import FramedConn
from ..wire.frames import MAX_RELAY_PAYLOAD, FrameType, encode_json
from ..wire.scanner import RelayScanner

_log = log.get("gateway")


@dataclass
class RelayStats:
    client_to_host: int = 0
    host_to_client: int = 0
    #: times a direction stopped reading because the other leg's write buffer was full
    pauses: int = 0




class _LegProtocol(asyncio.Protocol):
    """One stitched leg while the relay owns it.

    ``out`` is the scanner of the frames written *to the other leg* (the bytes
    this leg reads); ``peer`` is the other leg's protocol. ``ended`` is called
    once with (this leg's name, outcome): ``eof``, ``reset`` or an error code.
    """

    def __init__(self, name: str, conn: FramedConn, out: RelayScanner, ended) -> None:
        self.name = name
        self.conn = conn
        self.transport = conn.writer.transport
        self.original = self.transport.get_protocol()
        self.out = out
        self.ended = ended
        self.peer: _LegProtocol | None = None
        self.count = 0
        self.pauses = 0
        self.lost: tuple[Exception | None] | None = None   # connection_lost seen while we owned it
        self.finished = False
        #: False when the other leg is known to be mid-frame although the scanner
        #: says otherwise (a chunk rejected half way was never forwarded)
        self.peer_at_boundary_override: bool | None = None
        self._reading_paused = False
        try:
            self.high_water = self.transport.get_write_buffer_limits()[1]
        except Exception:
            self.high_water = conn.high_water

    # -- taking over and giving back -------------------------------------------------
    def take_over(self) -> bytes:
        """Become the transport's protocol; returns bytes the StreamReader already held."""
        reader = self.conn.reader
        pending = b""
        buf = getattr(reader, "_buffer", None)      # bytes read before the stitch (rare)
        if buf:
            pending = bytes(buf)
            buf.clear()
        self.transport.set_protocol(self)
        if not self.transport.is_reading():         # the StreamReader may have paused it
            self.transport.resume_reading()
        return pending

    def give_back(self) -> None:
        """Hand the transport back to the StreamReader's protocol (for close/wait_closed)."""
        with contextlib.suppress(Exception):
            if self.transport.get_protocol() is self:
                self.transport.set_protocol(self.original)
        if self.lost is not None:
            with contextlib.suppress(Exception):
                self.original.connection_lost(self.lost[0])

    # -- asyncio.Protocol ------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.finished:
            return
        peer = self.peer
        was_at_boundary = self.out.at_boundary
        try:
            self.out.feed(data)
        except ShortpathError as exc:
            self.peer_at_boundary_override = was_at_boundary
            self._finish(exc.code)
            return
        peer.transport.write(data)
        n = len(data)
        self.count += n
        self.conn.bytes_in += n
        peer.conn.bytes_out += n
        # The TLS transport calls peer.pause_writing() when it crosses its high-water
        # mark; checking here too covers a transport that was already paused before
        # the relay took it over (no second pause_writing call would come).
        if not self._reading_paused and peer.transport.get_write_buffer_size() >= peer.high_water:
            self._pause()

    def eof_received(self):
        self._finish("eof" if self.out.at_boundary else MalformedFrame.code)
        return False

    def connection_lost(self, exc) -> None:
        self.lost = (exc,)
        if exc is None and not self.out.at_boundary:
            self._finish(MalformedFrame.code)
        else:
            self._finish("reset" if exc is not None else "eof")

    def pause_writing(self) -> None:
        # our outgoing buffer is full: stop reading the other leg
        if self.peer is not None:
            self.peer._pause()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer._resume()

    # -- helpers ---------------------------------------------------------------------
    def _pause(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self.pauses += 1
            with contextlib.suppress(Exception):
                self.transport.pause_reading()

    def _resume(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            with contextlib.suppress(Exception):
                self.transport.resume_reading()

    def _finish(self, outcome: str) -> None:
        if not self.finished:
            self.finished = True
            self.ended(self.name, outcome)


async def _stitch_protocols(client: FramedConn, host: FramedConn, stop: asyncio.Event | None,
                            to_host: RelayScanner, to_client: RelayScanner):
    loop = asyncio.get_running_loop()
    result: asyncio.Future = loop.create_future()

    def ended(name: str, outcome: str) -> None:
        if not result.done():
            result.set_result((name, outcome))

    up = _LegProtocol("client", client, to_host, ended)      # reads client, writes host
    down = _LegProtocol("host", host, to_client, ended)      # reads host, writes client
    up.peer, down.peer = down, up
    legs = (up, down)
    try:
        pending = [(leg, leg.take_over()) for leg in legs]
        for leg, data in pending:
            if data:
                leg.data_received(data)
        for leg in legs:   # the StreamReader had already seen the end of this leg
            if getattr(leg.conn.reader, "_eof", False):
                leg.eof_received()
        waiters = {result}
        stopper = None
        if stop is not None:
            stopper = asyncio.ensure_future(stop.wait())
            waiters.add(stopper)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopper is not None:
                stopper.cancel()
    finally:
        for leg in legs:
            leg.finished = True
            leg.give_back()
    if stop is not None and stop.is_set():
        outcome = ("stop", "stop")
    else:
        outcome = result.result()
    overrides = {id(client): down.peer_at_boundary_override, id(host): up.peer_at_boundary_override}
    return outcome, up.count, down.count, up.pauses + down.pauses, overrides


async def stitch(session_id: str, client: FramedConn, host: FramedConn,
                 stop: asyncio.Event | None = None) -> tuple[str, RelayStats]:
    """Relay until either leg ends; returns (reason, stats)."""
    # Each scanner tracks the frames *written to* one leg, so the gateway knows
    # whether that leg is at a frame boundary before it adds GATEWAY_END.
    to_host = RelayScanner(MAX_RELAY_PAYLOAD)
    to_client = RelayScanner(MAX_RELAY_PAYLOAD)
    (who, outcome), c2h, h2c, pauses, overrides = await _stitch_protocols(client, host, stop, to_host, to_client)
    if who == "stop":
        reason, tell = "gateway-shutdown", (client, host)
    elif who == "host":
        reason, tell = "host-gone", (client,)
        if outcome not in ("eof", "reset"):
            reason = "host-protocol-error"
    else:
        reason, tell = "client-gone", (host,)
        if outcome not in ("eof", "reset"):
            reason = "client-protocol-error"
    scanners = {id(client): to_client, id(host): to_host}
    for conn in tell:
        at_boundary = scanners[id(conn)].at_boundary
        if overrides.get(id(conn)) is False:
            at_boundary = False
        if not at_boundary:
            continue   # the other leg died mid-frame; the peer will see the leg close
        with contextlib.suppress(Exception):
            conn.write(encode_json(FrameType.GATEWAY_END, {"reason": reason, "detail": f"session {session_id}"}))
    await asyncio.gather(client.close(), host.close(), return_exceptions=True)
    stats = RelayStats(client_to_host=c2h, host_to_client=h2c, pauses=pauses)
    _log.info(log.kv("relay-end", sid=session_id, reason=reason, up=stats.client_to_host,
                     down=stats.host_to_client, pauses=pauses))
    return reason, stats
