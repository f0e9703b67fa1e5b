"""Time-based loss detection (RACK) and tail-loss probes (TLP), pure and sans-I/O.

Why
---
SCTP as aiortc implements it (RFC 4960) finds a loss in one of two ways: three SACKs that
report a later TSN ("fast retransmit"), or the T3 timer (at least 1 s). Interactive traffic
defeats the first: the last packet of a frame, or a lone key press, has no later packets
behind it, so its loss is only seen when T3 fires, a second later. This module detects losses
the way RFC 8985 (RACK-TLP) and QUIC (RFC 9002) do, by *time*:

* **RACK (recent acknowledgement).** When a packet is acknowledged, every packet that was sent
  *before* it and is still unacknowledged is either reordered or lost. We give it a reordering
  window: it is lost once it is older than ``rtt + reo_wnd``, where ``rtt = max(srtt,
  latest_rtt)`` and ``reo_wnd = rtt / 8`` at first (so "older than ~1.125 RTT", QUIC's 9/8).
  A packet is also lost at once when ``PACKET_THRESHOLD`` (3) packets sent after it have been
  acknowledged (the classic dup-ack rule, for large flights where it is faster than time),
  until the path is seen to reorder (a packet acknowledged after one sent later than it): from
  then on only time counts, as RFC 8985 section 6.2 advises, because at high rates many packets
  overtake a slightly delayed one well inside the time window.
  If a timer is needed to declare a packet lost later (its window has not passed yet),
  :meth:`RackLossDetector.get_timer` returns that deadline.
* **The tail of a burst.** Once the newest transmission is acknowledged, nothing sent later
  can still overtake an older packet that is missing, and until the path has reordered once
  (above) such a packet is lost at once, without the time window: RFC 5827's early
  retransmit, for the tail of a frame that has fewer than three packets after a loss. A frame
  whose second-to-last packet was lost is then resent when its last packet's ack arrives,
  ~1/8 RTT (plus however far srtt is above this round trip) sooner. The first reordering such
  a rule misjudges shows as a spurious loss and turns it off with the packet threshold.
* **Adaptive reordering window.** When a packet we declared lost turns out to have arrived
  (its original is acknowledged: no retransmission could have been acked that soon), the loss
  was spurious: the path reorders more than we allowed. The window then grows by another
  ``rtt / 8`` (up to one whole RTT) and the packet threshold by one (up to 10); after 16 loss
  episodes in a row without a spurious one both return to their defaults, so one burst of
  reordering does not slow loss detection forever (RFC 8985 section 6.2 does the same).
* **Tail-loss probe.** When packets are outstanding and nothing is acknowledged, no ack can
  trigger RACK. After ``PTO = srtt + min(max(4 rttvar, srtt / 4), srtt) + max_ack_delay``
  since the last transmission (the time the last packet's ack is overdue; QUIC's PTO, at most
  RFC 8985's 2 srtt), :meth:`RackLossDetector.handle_timer` asks the
  sender to send one probe: new data if it has any, else the most recently sent outstanding
  packet again (:meth:`RackLossDetector.probe_candidate`). The probe's acknowledgement either
  acknowledges the lost tail (the probe was its retransmission) or, acknowledging a later
  packet, lets RACK find the tail lost. So a lost last packet of a frame is repaired after
  about 2 RTTs instead of T3's second. Consecutive probes without any ack back off (2x each).

The caller (the SCTP sender) keeps its own T3 timer as the last resort; :meth:`rto` gives
the RFC 6298 value from our estimator for it.

Everything takes ``now`` (seconds); nothing reads a clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional

#: Packets acknowledged after a missing one before it is lost regardless of time (RFC 9002 and
#: SCTP's fast-retransmit count: three reorderings deep is rare on real paths).
PACKET_THRESHOLD = 3
MAX_PACKET_THRESHOLD = 10
#: The reordering window as a fraction of the RTT (1/8: QUIC's 9/8 time threshold). It grows by
#: this step on each spurious loss, up to one RTT.
REO_WND_FRACTION = 1.0 / 8
MAX_REO_WND_STEPS = 8
#: Loss episodes without a spurious loss after which the window returns to its default.
REO_WND_RESET_EPISODES = 16
#: The tail-loss probe waits at least srtt x (1 + this) (+ the peer's ack delay): a quarter RTT
#: covers the scheduling jitter of two Python stacks on a steady path.
PTO_SRTT_FLOOR = 0.25
#: Timer granularity: no deadline is closer than this (a Python event loop cannot do better).
GRANULARITY = 0.001
#: A retransmission cannot be acknowledged sooner than this fraction of min_rtt after it was
#: sent; an ack arriving sooner belongs to the original, so the loss was spurious.
SPURIOUS_ACK_FRACTION = 0.75
#: Declared losses remembered for spurious-loss detection (bounded memory).
LOST_MEMORY = 4096


@dataclass
class _Outstanding:
    size: int
    sent_time: float
    order: int              # send order: a retransmission gets a new, higher order
    resent_after_loss: bool  # this transmission is a retransmission of a declared loss


class RackLossDetector:
    """RACK-TLP loss detection for one association (see the module docstring).

    Call :meth:`on_sent` for every transmission (a retransmission of ``seq`` replaces the
    earlier record), :meth:`on_rtt_sample` with each valid RTT measurement (Karn: not from a
    retransmitted chunk), :meth:`on_acked` with the seqs first acknowledged by each SACK; it
    returns the seqs now deemed lost. Arm one timer at :meth:`get_timer` and call
    :meth:`handle_timer` when it fires.

    ``max_ack_delay``: how long the peer may hold a SACK (aiortc: 0, it acks every packet that
    carried DATA; RFC 4960 peers: up to 0.2 s). ``initial_rtt``: the RTT assumed before the
    first sample (timers only). ``min_rto``/``max_rto``/``initial_rto`` clamp :meth:`rto`.
    """

    def __init__(self, max_ack_delay: float = 0.0, initial_rtt: float = 0.1, min_rto: float = 0.2,
                 max_rto: float = 60.0, initial_rto: float = 1.0) -> None:
        if max_ack_delay < 0 or initial_rtt <= 0 or not 0 < min_rto <= max_rto:
            raise ValueError("bad RACK timing settings")
        self.max_ack_delay = max_ack_delay
        self.initial_rtt = initial_rtt
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.initial_rto = initial_rto

        self._out: "OrderedDict[int, _Outstanding]" = OrderedDict()
        self._order = 0
        self._last_send_time: Optional[float] = None
        # RACK: the most recently *sent* packet that has been acknowledged
        self._rack_order = -1
        self._rack_time = -math.inf
        self._largest_acked_order = -1
        self._loss_deadline: Optional[float] = None
        # RTT estimator (RFC 6298)
        self._srtt: Optional[float] = None
        self._rttvar: Optional[float] = None
        self._min_rtt: Optional[float] = None
        self._latest_rtt: Optional[float] = None
        # reordering adaptation
        self._reo_steps = 1
        self._pkt_threshold = PACKET_THRESHOLD
        self._episodes_clean = 0
        self._reordering_seen = False
        self._lost_memory: "OrderedDict[int, float]" = OrderedDict()  # seq -> declared time
        # tail-loss probes
        self._probe_count = 0
        self._last_probe_time: Optional[float] = None
        self.counts = {"lost_time": 0, "lost_packets": 0, "lost_tail": 0, "spurious": 0, "probes": 0}

    # ---- RTT estimator ------------------------------------------------------------------

    @property
    def srtt(self) -> Optional[float]:
        return self._srtt

    @property
    def rttvar(self) -> Optional[float]:
        return self._rttvar

    @property
    def min_rtt(self) -> Optional[float]:
        return self._min_rtt

    @property
    def latest_rtt(self) -> Optional[float]:
        return self._latest_rtt

    @property
    def reo_wnd(self) -> float:
        """Current reordering window (seconds)."""
        base = self._rtt_base()
        return min(self._reo_steps * REO_WND_FRACTION * base, base)

    @property
    def packet_threshold(self) -> int:
        return self._pkt_threshold

    @property
    def reordering_seen(self) -> bool:
        """True once the path reordered packets: the packet threshold is then off."""
        return self._reordering_seen

    @property
    def probes_in_a_row(self) -> int:
        """Tail-loss probes sent since the last acknowledgement (0: the first is still due)."""
        return self._probe_count

    @property
    def outstanding(self) -> int:
        """Transmissions neither acknowledged nor declared lost."""
        return len(self._out)

    def on_rtt_sample(self, now: float, rtt: float) -> None:
        """A valid RTT measurement (seconds): RFC 6298 smoothing, min and latest RTT."""
        if rtt <= 0:
            return
        self._latest_rtt = rtt
        self._min_rtt = rtt if self._min_rtt is None else min(self._min_rtt, rtt)
        if self._srtt is None or self._rttvar is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt

    def rto(self) -> float:
        """Retransmission timeout for the caller's T3 (RFC 6298, clamped; no back-off here)."""
        if self._srtt is None or self._rttvar is None:
            return self.initial_rto
        value = self._srtt + max(4 * self._rttvar, GRANULARITY) + self.max_ack_delay
        return min(max(value, self.min_rto), self.max_rto)

    def _rtt_base(self) -> float:
        if self._srtt is None:
            return self.initial_rtt
        return max(self._srtt, self._latest_rtt or 0.0)

    def pto(self) -> float:
        """Tail-loss probe timeout before back-off: when the last packet's ack is overdue,
        ``srtt + min(max(4 rttvar, srtt / 4), srtt) + max_ack_delay``: QUIC's PTO (RFC 9002
        6.2.1) with a quarter-RTT floor for a path whose samples stopped varying, and RFC
        8985's 2 x srtt as the ceiling. On a steady path a lost frame tail costs ~2.3 RTT
        instead of ~3; on a jittery one (a busy Python peer: samples of 40-400 ms on a 40 ms
        path) 4 rttvar alone reached several srtt, and a lost retransmission, which only a
        probe can reveal when nothing else is in flight, then waited close to a second."""
        if self._srtt is None or self._rttvar is None:
            return max(2 * self.initial_rtt + self.max_ack_delay, GRANULARITY)
        srtt = self._srtt
        spread = min(max(4 * self._rttvar, PTO_SRTT_FLOOR * srtt), srtt)
        return max(srtt + spread + self.max_ack_delay, GRANULARITY)

    # ---- events -------------------------------------------------------------------------

    def on_sent(self, now: float, seq: int, size: int) -> None:
        """A transmission of ``seq`` (first or a retransmission) left at ``now``."""
        old = self._out.pop(seq, None)
        resent = seq in self._lost_memory or (old is not None and old.resent_after_loss)
        self._out[seq] = _Outstanding(size=size, sent_time=now, order=self._order,
                                      resent_after_loss=resent)
        self._order += 1
        self._last_send_time = now

    def on_acked(self, now: float, seqs: Iterable[int]) -> list[int]:
        """Seqs first acknowledged by one SACK; returns the seqs now deemed lost."""
        any_acked = False
        for seq in seqs:
            p = self._out.pop(seq, None)
            declared = self._lost_memory.pop(seq, None)
            if p is None:
                if declared is not None:
                    self._on_spurious()  # acked while we thought it lost, before any resend
                continue
            any_acked = True
            if p.resent_after_loss and declared is not None:
                min_rtt = self._min_rtt or self.initial_rtt
                if now - p.sent_time < SPURIOUS_ACK_FRACTION * min_rtt:
                    self._on_spurious()  # too early to be the retransmission's ack
            if p.order < self._rack_order and not p.resent_after_loss:
                # acked after a packet sent later than it: the path reorders
                self._reordering_seen = True
            if p.order > self._rack_order:
                self._rack_order = p.order
                self._rack_time = p.sent_time
            self._largest_acked_order = max(self._largest_acked_order, p.order)
        if any_acked:
            self._probe_count = 0
            self._last_probe_time = None
        return self._detect(now)

    def get_timer(self) -> Optional[float]:
        """The next deadline: a reordering window running out, else the tail-loss probe."""
        if not self._out:
            return None
        if self._loss_deadline is not None:
            return self._loss_deadline
        base = self._last_send_time if self._last_send_time is not None else 0.0
        if self._last_probe_time is not None:
            base = max(base, self._last_probe_time)
        return base + self.pto() * (2 ** self._probe_count)

    def handle_timer(self, now: float) -> tuple[list[int], bool]:
        """The timer fired: (seqs now deemed lost, whether to send a tail-loss probe)."""
        if not self._out:
            return [], False
        if self._loss_deadline is not None:
            if now < self._loss_deadline:
                return [], False
            return self._detect(now), False
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return [], False
        self._probe_count += 1
        self._last_probe_time = now
        self.counts["probes"] += 1
        return [], True

    def probe_candidate(self) -> Optional[int]:
        """The seq to resend as a probe when there is no new data: the most recently sent one."""
        if not self._out:
            return None
        return next(reversed(self._out))

    def forget(self, seq: int) -> None:
        """Stop tracking ``seq`` (an abandoned chunk): never reported lost afterwards."""
        self._out.pop(seq, None)
        self._lost_memory.pop(seq, None)
        if not self._out:
            self._loss_deadline = None

    def on_timeout(self, now: float) -> None:
        """The caller's T3 fired and it will resend everything: restart probing from scratch."""
        self._probe_count = 0
        self._last_probe_time = None
        self._loss_deadline = None

    # ---- detection ----------------------------------------------------------------------

    def _loss_delay(self) -> float:
        return max(self._rtt_base() + self.reo_wnd, GRANULARITY)

    def _detect(self, now: float) -> list[int]:
        lost: list[int] = []
        self._loss_deadline = None
        if self._rack_order < 0:
            return lost
        delay = self._loss_delay()
        earliest: Optional[float] = None
        for seq, p in self._out.items():
            if p.order >= self._rack_order:
                break  # sent after the newest acked packet: no evidence yet (dict is in send order)
            if (not self._reordering_seen
                    and self._largest_acked_order - p.order >= self._pkt_threshold):
                lost.append(seq)
                self.counts["lost_packets"] += 1
            elif not self._reordering_seen and self._largest_acked_order == self._order - 1:
                lost.append(seq)        # the newest transmission is acked: the tail rule
                self.counts["lost_tail"] += 1
            elif now >= p.sent_time + delay:
                lost.append(seq)
                self.counts["lost_time"] += 1
            else:
                deadline = p.sent_time + delay
                earliest = deadline if earliest is None else min(earliest, deadline)
        for seq in lost:
            del self._out[seq]
            self._lost_memory[seq] = now
            if len(self._lost_memory) > LOST_MEMORY:
                self._lost_memory.popitem(last=False)
        if lost:
            self._episodes_clean += 1
            if self._episodes_clean >= REO_WND_RESET_EPISODES:
                self._reo_steps = 1
                self._pkt_threshold = PACKET_THRESHOLD
                self._reordering_seen = False
                self._episodes_clean = 0
        self._loss_deadline = earliest
        return lost

    def _on_spurious(self) -> None:
        self.counts["spurious"] += 1
        self._reordering_seen = True
        self._episodes_clean = 0
        self._reo_steps = min(self._reo_steps + 1, MAX_REO_WND_STEPS)
        self._pkt_threshold = min(self._pkt_threshold + 1, MAX_PACKET_THRESHOLD)
