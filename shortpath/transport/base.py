"""The interface every path offers to the session layer.

A path moves whole *session frames* (see wire/frames.py): a reliable, ordered
lane for DATA/ACK/SIGNAL/CLOSE frames and a best-effort lane for DGRAM/PING/
PONG. It reports each received frame through ``on_frame`` and its end through
``on_closed(reason)`` exactly once.
"""

from __future__ import annotations

import abc
from typing import Callable

from ..wire.frames import Frame

PATH_KINDS = ("tcp-relay", "udp-managed", "udp-direct", "udp-turn")


def ignore_frame(frame: Frame) -> None:
    """The handler of a path no session has attached yet."""


class Path(abc.ABC):
    kind: str = ""

    def __init__(self) -> None:
        self.on_frame: Callable[[Frame], None] = ignore_frame
        self.on_closed: Callable[[str], None] = lambda reason: None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closed_reason: str | None = None
        self.path_id = ""                    # set by the session: "relay", "udp-<attempt>"
        self.srtt: float | None = None       # smoothed RTT from PING/PONG on this path

    @abc.abstractmethod
    def send_reliable(self, frame: bytes, channel: int = 0) -> None:
        """Queue one encoded frame on the reliable lane. Raises PathError if the path is closed.
        ``channel``: the session channel of a DATA frame (session/channels.py); a path with
        independent streams (UDP: SCTP streams) keeps each channel on its own, others ignore it
        (the frame names its channel)."""

    @abc.abstractmethod
    def send_unreliable(self, frame: bytes, deadline: float | None = None) -> bool:
        """Send one encoded frame best-effort; False if it was dropped (never blocks).
        ``deadline`` (time.monotonic()): a path that queues may drop it unsent after then."""

    @property
    @abc.abstractmethod
    def buffered_amount(self) -> int:
        """Bytes queued locally and not yet handed to the network."""

    @property
    def send_rate(self) -> float | None:
        """Bytes/s the path sends at now, if its sender knows (a paced UDP path);
        None: unknown (the relay's TCP leg), the session then hands over a fixed amount."""
        return None

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until the local send buffer is below its high-water mark."""

    async def wait_writable(self, limit: int) -> None:
        """Wait until ``buffered_amount`` is at most ``limit`` (or the path closed): the session
        keeps its backlog, in priority order, until then. This default waits for drain() and
        then, if that stopped above ``limit``, for a few milliseconds at a time."""
        import asyncio
        while self.closed_reason is None and self.buffered_amount > limit:
            before = self.buffered_amount
            await self.drain()
            if self.buffered_amount >= before:
                await asyncio.sleep(0.002)

    @abc.abstractmethod
    async def close(self, reason: str = "closed") -> None:
        """Close the path; on_closed fires if it had not already."""

    @property
    @abc.abstractmethod
    def last_rx_at(self) -> float | None:
        """Liveness below the frames: time.monotonic() when the peer's traffic last
        arrived on this path (bytes on the relay leg; SCTP packets through DTLS on
        UDP), or None if nothing was heard yet or the path cannot tell. A packet
        can arrive while the frames it carries wait behind a retransmission, so
        this says "the peer is there" sooner than the next frame does."""

    def info(self) -> dict:
        return {"kind": self.kind, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received}

    def _closed(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self.on_closed(reason)
