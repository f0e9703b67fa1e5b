"""Several independent reliable channels per session, with priorities (pure: no I/O, no clock).

A session carries a few ordered reliable channels side by side, as RDP's dynamic
virtual channels or QUIC's streams do. Each has its own sequence space, send
window and acknowledgements, so a message that is late or lost on one channel
never holds back another: a 64-byte input event does not wait behind a 60 KB
frame that is being retransmitted.

=====  ==========  ========  ===============================================
id     name        priority  meant for
=====  ==========  ========  ===============================================
1      input       0 (first) keyboard / pointer events, small and urgent
0      default     1         ``send(data)`` with no channel (today's behaviour)
2      graphics    2         screen updates, frames
3      bulk        3 (last)  clipboard, file transfer
=====  ==========  ========  ===============================================

Priority is the core's transmit order: when the sender has a backlog (the path
will not take more yet, see ``Channels.next_frames``), the waiting message of
the highest-priority channel goes first; within a channel the order is the
sequence order. Acknowledged messages (consumed by the peer's application)
leave the window; after a path switch every message the peer has not yet
*received* is sent again on the new path (the receiver drops what it has by
sequence number), per channel, so a switch still loses, duplicates and
reorders nothing on any channel.

Each channel's ACK (frames.py CACK) carries two cumulative marks: ``consumed``
(what the application took: releases the window, end-to-end flow control) and
``received`` (what the peer's session holds). The gap between our send time
and ``received`` is the path's own delay, whatever the peer's application does;
it gives the stall detector (shortpath/paths/stall.py) the age of our oldest
undelivered message and the path's delivery rate.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Iterator

from ..errors import LocalError, RemoteError
from .reliable import ReliableReceiver


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    id: int
    name: str
    #: lower goes first
    priority: int


CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec(0, "default", 1),
    ChannelSpec(1, "input", 0),
    ChannelSpec(2, "graphics", 2),
    ChannelSpec(3, "bulk", 3),
)
DEFAULT = 0
BY_NAME = {c.name: c for c in CHANNELS}
BY_ID = {c.id: c for c in CHANNELS}
#: channel ids, highest priority first
PRIORITY_ORDER = tuple(c.id for c in sorted(CHANNELS, key=lambda c: c.priority))
#: bytes a path may hold unsent before the core keeps the rest (and its priority order) to itself
HANDOVER_BYTES = 256 * 1024


def resolve(channel: str | int | None) -> int:
    """Channel id for a name (``"input"``), an id, or None (the default channel)."""
    if channel is None:
        return DEFAULT
    if isinstance(channel, str):
        spec = BY_NAME.get(channel)
        if spec is None:
            raise LocalError(f"unknown channel {channel!r}; channels: {', '.join(BY_NAME)}")
        return spec.id
    if isinstance(channel, int) and not isinstance(channel, bool) and channel in BY_ID:
        return channel
    raise LocalError(f"unknown channel {channel!r}; channels: {', '.join(BY_NAME)}")


def name(channel_id: int) -> str:
    return BY_ID[channel_id].name


class ChannelSender:
    """One channel's sending side: sequence numbers, the window, what waits to be sent."""

    def __init__(self, window_bytes: int) -> None:
        self.window_bytes = window_bytes
        self.next_seq = 0
        self.unacked: OrderedDict[int, bytes] = OrderedDict()
        self.unacked_bytes = 0
        self.consumed = 0           # peer's application took every seq below this
        self.received = 0           # peer's session holds every seq below this
        self.queue: deque[int] = deque()       # seqs waiting to go on the current path, in order
        self.tx_at: dict[int, float] = {}      # seq -> when it went on the current path
        self.inflight_bytes = 0                 # bytes on the current path the peer has not received

    def can_send(self, size: int) -> bool:
        # One message always fits an empty window, whatever its size.
        return not self.unacked or self.unacked_bytes + size <= self.window_bytes

    def push(self, message: bytes) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = message
        self.unacked_bytes += len(message)
        self.queue.append(seq)
        return seq

    def on_ack(self, consumed: int, received: int) -> tuple[int, int]:
        """Apply the peer's marks; returns (messages released from the window, bytes newly
        received by the peer). Marks only move forward."""
        if received > self.next_seq or consumed > received:
            raise RemoteError(f"ACK for {received} but only {self.next_seq} messages were sent")
        delivered = 0
        for seq in range(self.received, received):
            n = len(self.unacked.get(seq, b""))
            delivered += n
            if self.tx_at.pop(seq, None) is not None:
                self.inflight_bytes -= n
        self.received = max(self.received, received)
        released = 0
        while self.unacked:
            seq = next(iter(self.unacked))
            if seq >= consumed:
                break
            msg = self.unacked.pop(seq)
            self.unacked_bytes -= len(msg)
            if self.tx_at.pop(seq, None) is not None:
                self.inflight_bytes -= len(msg)
            released += 1
        self.consumed = max(self.consumed, consumed)
        return released, delivered

    def pop_next(self) -> tuple[int, bytes] | None:
        """The next message to transmit (skipping any the peer has meanwhile received)."""
        while self.queue:
            seq = self.queue.popleft()
            if seq >= self.received and seq in self.unacked:
                return seq, self.unacked[seq]
        return None

    def mark_sent(self, seq: int, now: float) -> None:
        """``seq`` went on the current path at ``now``."""
        if seq not in self.tx_at and seq in self.unacked:
            self.tx_at[seq] = now
            self.inflight_bytes += len(self.unacked[seq])

    def replay(self) -> tuple[int, int]:
        """A path switch: everything the peer has not received goes again, in order.
        Returns (first seq replayed or next_seq, count)."""
        self.queue = deque(s for s in self.unacked if s >= self.received)
        self.tx_at.clear()
        self.inflight_bytes = 0
        return (self.queue[0] if self.queue else self.next_seq), len(self.queue)

    def oldest_unreceived_tx(self) -> float | None:
        """When the oldest message the peer has not received went on the current path
        (None: nothing sent is outstanding)."""
        for seq in self.unacked:
            if seq >= self.received:
                return self.tx_at.get(seq)
        return None


class ChannelReceiver:
    """One channel's receiving side: in-order delivery plus its ACK clock. An ACK goes out
    after ``every`` consumed messages, or ``delay`` after anything new (received or
    consumed) that the last ACK did not report."""

    def __init__(self, every: int, delay: float) -> None:
        self.rx = ReliableReceiver()
        self.every = every
        self.delay = delay
        self.consumed = 0
        self.acked_consumed = 0
        self.acked_received = 0
        self.deadline: float | None = None

    @property
    def received(self) -> int:
        return self.rx.next_expected

    def on_data(self, seq: int, message: bytes, now: float) -> list[bytes]:
        out = self.rx.on_data(seq, message)
        if out and self.deadline is None:
            self.deadline = now + self.delay
        return out

    def on_consumed(self, now: float) -> bool:
        """One message taken by the application; True if an ACK should go out now."""
        self.consumed += 1
        if self.consumed - self.acked_consumed >= self.every:
            return True
        if self.deadline is None:
            self.deadline = now + self.delay
        return False

    def due(self, now: float) -> bool:
        return (self.deadline is not None and now >= self.deadline
                and (self.consumed > self.acked_consumed or self.received > self.acked_received))

    def ack(self) -> tuple[int, int]:
        """The marks to send now: (consumed, received)."""
        self.acked_consumed, self.acked_received = self.consumed, self.received
        self.deadline = None
        return self.consumed, self.received


class Channels:
    """Every channel of one session, both directions."""

    def __init__(self, window_bytes: int, ack_every: int, ack_delay: float) -> None:
        self.senders = {c.id: ChannelSender(window_bytes) for c in CHANNELS}
        self.receivers = {c.id: ChannelReceiver(ack_every, ack_delay) for c in CHANNELS}

    def sender(self, channel: int) -> ChannelSender:
        return self.senders[channel]

    def receiver(self, channel: int) -> ChannelReceiver:
        """The receiving side of ``channel``; a channel we do not know is the peer's fault."""
        r = self.receivers.get(channel)
        if r is None:
            raise RemoteError(f"frame for unknown reliable channel {channel}")
        return r

    @property
    def unacked_bytes(self) -> int:
        return sum(s.unacked_bytes for s in self.senders.values())

    @property
    def inflight_bytes(self) -> int:
        """Bytes on the current path that the peer has not received yet."""
        return sum(s.inflight_bytes for s in self.senders.values())

    @property
    def duplicates(self) -> int:
        return sum(r.rx.stats.duplicates for r in self.receivers.values())

    @property
    def backlog(self) -> bool:
        """Messages wait in the core for the path to take them."""
        return any(s.queue for s in self.senders.values())

    def next_frames(self, budget: int | None) -> Iterator[tuple[int, int, bytes]]:
        """(channel, seq, message) to transmit now, highest priority first, until
        ``budget`` bytes (None: no limit) are used; the last one may overshoot it."""
        used = 0
        while budget is None or used < budget:
            for ch in PRIORITY_ORDER:
                item = self.senders[ch].pop_next()
                if item is not None:
                    used += len(item[1])
                    yield ch, item[0], item[1]
                    break
            else:
                return

    def replay(self) -> dict[int, tuple[int, int]]:
        """Queue every unreceived message again (path switch): channel -> (from, count)."""
        return {ch: s.replay() for ch, s in self.senders.items()}

    def oldest_unreceived_tx(self) -> float | None:
        times = [t for t in (s.oldest_unreceived_tx() for s in self.senders.values()) if t is not None]
        return min(times) if times else None

    def ack_timer(self) -> float | None:
        times = [r.deadline for r in self.receivers.values() if r.deadline is not None]
        return min(times) if times else None
