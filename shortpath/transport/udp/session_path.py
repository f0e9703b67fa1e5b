"""Adapter: a UdpPath (path.py) seen through the session's Path interface.

UdpPath moves opaque messages; the session moves frames. Each SCTP message
carries exactly one session frame, decoded here with ``decode_one`` so a
malformed message is a typed RemoteError like on the relay.
"""

from __future__ import annotations

from shortpath import log
from shortpath.errors import BufferFull, PathError, RemoteError
from shortpath.wire.frames import MAX_SESSION_PAYLOAD, decode_one

from ..base import Path, ignore_frame

_log = log.get("udp")


class UdpSessionPath(Path):
    """``udp``: a UdpPath (or anything with its callbacks, send_*, drain, close,
    info and last_rx_at)."""

    def __init__(self, udp, path_id: str, session_id: str) -> None:
        self.udp = udp
        self._frame_handler = None
        super().__init__()
        self.path_id = path_id
        self.kind = udp.kind
        self.session_id = session_id
        self.srtt: float | None = None
        self.malformed = 0
        udp.on_closed = self._closed

    # The UdpPath keeps what the peer sent before anyone listened (the peer's
    # side of the path often comes up first and sends its switch marker and
    # replays at once) and hands that backlog over when its callbacks are
    # assigned. So they are assigned only when the session assigns on_frame
    # (Session.add_path): assigning them earlier handed the backlog to the
    # default no-op handler, and those reliable messages were lost for good
    # (SCTP had acknowledged them), leaving the receiver waiting on a gap.
    @property
    def on_frame(self):
        return self._frame_handler

    @on_frame.setter
    def on_frame(self, handler) -> None:
        self._frame_handler = handler
        if handler is not ignore_frame:
            self.udp.on_reliable = self._rx
            self.udp.on_unreliable = self._rx

    def _rx(self, data: bytes) -> None:
        try:
            frame = decode_one(data, MAX_SESSION_PAYLOAD)
        except RemoteError as exc:
            self.malformed += 1
            _log.warning(log.kv("udp-malformed-frame", sid=self.session_id, path=self.path_id, error=exc.code))
            return
        self.bytes_received += len(data)
        self.on_frame(frame)

    @property
    def last_rx_at(self) -> float | None:
        """When the peer was last heard on this path at the packet level (SCTP
        packets through DTLS; see UdpPath.last_rx_at)."""
        return self.udp.last_rx_at

    @property
    def setup_seconds(self) -> float | None:
        """How long the UDP attempt took, from connect() to the path being up."""
        return self.udp.setup_seconds

    @property
    def setup_timeline(self) -> dict:
        """The attempt's set-up phase stamps (UdpUpgrader.timeline)."""
        return self.udp.timeline

    def send_reliable(self, frame: bytes, channel: int = 0) -> None:
        """``channel``: the session channel (channels.py); each goes on an SCTP stream of its own."""
        if self.closed_reason is not None:
            raise PathError(f"{self.path_id} is closed ({self.closed_reason})")
        try:
            if channel:
                self.udp.send_reliable(frame, stream=channel)
            else:
                self.udp.send_reliable(frame)
        except BufferFull as exc:
            raise PathError(str(exc), code="buffer-full") from None
        self.bytes_sent += len(frame)

    def send_unreliable(self, frame: bytes, deadline: float | None = None) -> bool:
        if self.closed_reason is not None:
            return False
        ok = self.udp.send_unreliable(frame) if deadline is None else self.udp.send_unreliable(frame, deadline)
        if ok:
            self.bytes_sent += len(frame)
        return ok

    @property
    def buffered_amount(self) -> int:
        return self.udp.buffered_amount

    @property
    def send_rate(self) -> float | None:
        """The SCTP sender's pacing rate, bytes/s (None on aiortc's stock sender)."""
        return getattr(self.udp, "pacing_rate", None)

    async def drain(self) -> None:
        if self.closed_reason is None:
            try:
                await self.udp.drain()
            except PathError:
                pass   # closed while draining: on_closed tells the session

    async def wait_writable(self, limit: int) -> None:
        if self.closed_reason is None:
            try:
                await self.udp.drain(limit)
            except PathError:
                pass

    async def close(self, reason: str = "closed") -> None:
        await self.udp.close(reason=reason)
        self._closed(reason)

    def info(self) -> dict:
        d = self.udp.info()
        d.update({"path_id": self.path_id, "kind": self.kind, "bytes_sent": self.bytes_sent,
                  "bytes_received": self.bytes_received, "malformed_frames": self.malformed,
                  "rtt_ms": None if self.srtt is None else round(self.srtt * 1000, 3)})
        return d
