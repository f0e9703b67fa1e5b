"""In-order delivery for a reliable channel (pure: no I/O, no clock reads).

Every application message on a channel gets a 64-bit sequence number. The sender
(``channels.ChannelSender``) keeps each message until the peer acknowledges it and,
after a path switch, replays every message the peer has not received on the new path.
This receiving side drops what it already has (seq < next expected) and holds early
arrivals until the gap is filled, so the application sees each message once, in order:
that is what makes path switches lossless. The ACK clock is ``channels.ChannelReceiver``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RemoteError


@dataclass
class ReceiveStats:
    delivered: int = 0
    duplicates: int = 0
    early: int = 0


class ReliableReceiver:
    def __init__(self, max_early: int = 65536) -> None:
        self.next_expected = 0
        self.early: dict[int, bytes] = {}
        self.max_early = max_early
        self.stats = ReceiveStats()

    def on_data(self, seq: int, message: bytes) -> list[bytes]:
        """Accept one DATA frame; return the messages now deliverable in order."""
        if seq < self.next_expected or seq in self.early:
            self.stats.duplicates += 1
            return []
        if seq != self.next_expected:
            if len(self.early) >= self.max_early:
                raise RemoteError("peer overran the reorder buffer")
            self.early[seq] = message
            self.stats.early += 1
            return []
        out = [message]
        self.next_expected += 1
        while self.next_expected in self.early:
            out.append(self.early.pop(self.next_expected))
            self.next_expected += 1
        self.stats.delivered += len(out)
        return out
