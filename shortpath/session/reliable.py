"""Sequencing for the reliable channel (pure: no I/O, no clock reads).

Every application message gets a 64-bit sequence number. The sender keeps each
message until the receiver acknowledges it; acknowledgements are cumulative
("I have *consumed* everything below N"). Because the receiver only acks what
the application has taken, the sender's window (bytes in flight) also bounds
the receiver's buffer: end-to-end flow control with no other mechanism.

This is what makes path switches lossless: after a switch the sender replays
every unacknowledged message on the new path, and the receiver drops what it
already has (seq < next expected) and holds early arrivals until the gap is
filled, so the application sees each message once, in order.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..errors import RemoteError


class ReliableSender:
    def __init__(self, window_bytes: int) -> None:
        self.window_bytes = window_bytes
        self.next_seq = 0
        self.unacked: OrderedDict[int, bytes] = OrderedDict()
        self.unacked_bytes = 0
        self.acked_upto = 0   # every seq below this is acknowledged

    def can_send(self, size: int) -> bool:
        # Always allow one message when nothing is in flight, whatever its size.
        return not self.unacked or self.unacked_bytes + size <= self.window_bytes

    def push(self, message: bytes) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = message
        self.unacked_bytes += len(message)
        return seq

    def on_ack(self, next_expected: int) -> int:
        """Apply a cumulative ACK; returns how many messages it released."""
        if next_expected > self.next_seq:
            raise RemoteError(f"ACK for {next_expected} but only {self.next_seq} messages were sent")
        released = 0
        while self.unacked:
            seq = next(iter(self.unacked))
            if seq >= next_expected:
                break
            self.unacked_bytes -= len(self.unacked.pop(seq))
            released += 1
        self.acked_upto = max(self.acked_upto, next_expected)
        return released

    def pending(self) -> list[tuple[int, bytes]]:
        """Unacknowledged messages, oldest first (for replay after a switch)."""
        return list(self.unacked.items())


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


class AckClock:
    """When to send a cumulative ACK: after ``every`` consumed messages or
    ``delay`` seconds after the first unacknowledged one, whichever is first."""

    def __init__(self, every: int, delay: float) -> None:
        self.every = every
        self.delay = delay
        self.consumed = 0        # messages the application has taken
        self.acked = 0           # value of the last ACK sent
        self.deadline: float | None = None

    def on_consumed(self, now: float) -> bool:
        """Record one consumed message; True if an ACK should go out now."""
        self.consumed += 1
        if self.consumed - self.acked >= self.every:
            return True
        if self.deadline is None:
            self.deadline = now + self.delay
        return False

    def get_timer(self) -> float | None:
        return self.deadline

    def due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline and self.consumed > self.acked

    def sent(self) -> int:
        self.acked = self.consumed
        self.deadline = None
        return self.acked
