"""Redundant small events: reliable-ish delivery without waiting for retransmissions (pure).

An application's small events (pointer moves, key presses) want the latency of a
datagram and the completeness of a reliable channel. Retransmission costs at
least one RTT per loss; instead each EVENTS frame (frames.py) carries the new
event *and the last k before it*. The receiver delivers each event exactly once,
in order, as soon as the first copy of it arrives:

* a lost frame costs nothing as long as one of the next k frames arrives, since
  each of them repeats the lost events; they are delivered with that frame, at
  its latency, and never wait for anything else;
* more than k frames lost in a row lose the events only they carried: the
  receiver skips them (counted in ``lost``) rather than wait, since no later
  frame can carry them;
* an older frame that arrives late repeats only what was delivered or skipped:
  it is dropped (``duplicates``), so order is never broken.

``k`` is chosen per event (``redundancy``), up to ``MAX_REDUNDANCY``; a frame
carries fewer repeats when the events are too big to fit ``max_payload``.
Events travel on the datagram lane (best effort, first in the transmit order).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import LocalError

#: most earlier events one frame may repeat
MAX_REDUNDANCY = 8
#: largest single event, bytes
MAX_EVENT = 512
#: per-frame overhead (u64 newest + u8 count) and per-event overhead (u16 length)
_FRAME_OVERHEAD = 9
_EVENT_OVERHEAD = 2


class EventSender:
    """Numbers events and picks what each frame carries."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.next_seq = 0
        self._recent: deque[bytes] = deque(maxlen=MAX_REDUNDANCY)

    def push(self, data: bytes, redundancy: int) -> tuple[int, list[bytes]]:
        """Number one event; returns (its seq, the events the frame carries, oldest first,
        ending with it)."""
        if not isinstance(redundancy, int) or isinstance(redundancy, bool) or \
                not 0 <= redundancy <= MAX_REDUNDANCY:
            raise LocalError(f"redundancy must be an integer 0..{MAX_REDUNDANCY}, not {redundancy!r}")
        if len(data) > MAX_EVENT:
            raise LocalError(f"event of {len(data)} bytes exceeds {MAX_EVENT}")
        data = bytes(data)
        seq = self.next_seq
        self.next_seq += 1
        carried = [data]
        size = _FRAME_OVERHEAD + _EVENT_OVERHEAD + len(data)
        for old in reversed(self._recent):
            if len(carried) > redundancy or size + _EVENT_OVERHEAD + len(old) > self.max_payload:
                break
            carried.append(old)
            size += _EVENT_OVERHEAD + len(old)
        carried.reverse()
        self._recent.append(data)
        return seq, carried


@dataclass
class EventStats:
    delivered: int = 0
    #: events no frame that arrived carried (more than k frames lost in a row)
    lost: int = 0
    #: frames that carried nothing new
    duplicates: int = 0
    #: events delivered from a repeat (their own frame was lost or late)
    recovered: int = 0


class EventReceiver:
    """Delivers each event once, in order, at the first copy's arrival."""

    def __init__(self) -> None:
        self.next_expected = 0
        self.stats = EventStats()

    def on_frame(self, newest: int, events: list[bytes]) -> list[bytes]:
        """One EVENTS frame: (newest seq, events oldest first). Returns the events to
        deliver now, in order."""
        first = newest - len(events) + 1
        if newest < self.next_expected:
            self.stats.duplicates += 1
            return []
        if first > self.next_expected:           # nothing that can still arrive carries these
            self.stats.lost += first - self.next_expected
            self.next_expected = first
        out = events[self.next_expected - first:]
        self.stats.recovered += len(out) - 1
        self.next_expected = newest + 1
        self.stats.delivered += len(out)
        return out
