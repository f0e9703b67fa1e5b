"""Pure, scripted link models for congestion-control timelines (no sockets, no clock).

A tiny discrete-event simulator: a sender drives a congestion controller, a :class:`Pacer` and
a :class:`RackLossDetector` exactly as the SCTP sender does (retransmissions keep their seq,
like SCTP TSNs), over a one-way bottleneck:

    sender --(pacing)--> [FIFO of B bytes, tail drop] --rate R--> random loss p --delay d--> receiver
    receiver --ack (every packet, or every n-th / after a delay; at once on a gap),
               delay d, optionally lossy--> sender

* The bottleneck serves packets at ``rate`` bytes/s (changeable at given times: a rate drop;
  the one-way delay too: a route change);
  a packet that finds more than ``buffer_bytes`` queued is dropped (tail drop).
* Random loss hits packets *after* the bottleneck (they used link capacity), with a seeded
  ``random.Random``, so a run is reproducible.
* Each ack reports everything the receiver got so far (the sender learns every seq that
  arrived up to the ack's position in the receiver's log), as an SCTP SACK with gap blocks does.
  A lost ack therefore only delays information.

Senders: ``bulk`` (always has data) or an application source (``frames``: bursts of ``frame``
bytes every ``interval`` s; :meth:`Simulation.set_source` switches during a run). Several flows
can share one bottleneck queue through a :class:`SharedLink`. Optional: a slow delay variation
on each direction (``jitter``: :class:`DelayJitter`, the lab's model; it never reorders), reordering (a fraction
of packets delayed after the bottleneck), dropping the first transmission of chosen seqs, and a
cwnd floor of the sender's own (``min_cwnd_bytes``: sctp.py keeps 48 KiB whatever the
controller says). The congestion controller is anything with the BbrController
interface; :class:`NewRenoReference` is the loss-based baseline (what aiortc's SCTP does:
halve on loss once per round trip, one MSS after T3, no pacing).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from shortpath.transport.udp.congestion import Pacer
from shortpath.transport.udp.recovery import RackLossDetector

MSS = 1200


class NewRenoReference:
    """A loss-based reference controller with the BbrController interface (RFC 5681/6582 style).

    Slow start (cwnd += acked) below ssthresh, then +1 MSS per cwnd acked; one halving per
    round trip of losses (a recovery episode ends when a packet sent after it began is acked or
    lost); T3 sets cwnd to one MSS. No pacing (``pacing_rate`` is infinite), as aiortc.
    """

    state = "newreno"

    def __init__(self, mss: int = MSS, initial_cwnd_packets: int = 10, now: float = 0.0) -> None:
        self.mss = mss
        self._cwnd = float(initial_cwnd_packets * mss)
        self._ssthresh = math.inf
        self._sent_time: dict[int, float] = {}
        self._recovery_start = -math.inf
        self.min_rtt = None
        self.btl_bw = 0.0

    @property
    def cwnd(self) -> int:
        return int(max(self._cwnd, self.mss))

    @property
    def pacing_rate(self) -> float:
        return math.inf

    def on_sent(self, now, seq, size, bytes_in_flight, app_limited):
        self._sent_time[seq] = now

    def on_acked(self, now, seqs, rtt_sample, bytes_in_flight):
        for seq in seqs:
            sent = self._sent_time.pop(seq, None)
            if sent is None or sent <= self._recovery_start:
                continue
            if self._cwnd < self._ssthresh:
                self._cwnd += self.mss
            else:
                self._cwnd += self.mss * self.mss / self._cwnd

    def on_lost(self, now, seqs, bytes_in_flight):
        for seq in seqs:
            sent = self._sent_time.pop(seq, None)
            if sent is None or sent <= self._recovery_start:
                continue
            self._ssthresh = max(self._cwnd / 2, 2 * self.mss)
            self._cwnd = self._ssthresh
            self._recovery_start = now

    def on_timeout(self, now):
        self._ssthresh = max(self._cwnd / 2, 2 * self.mss)
        self._cwnd = self.mss
        self._recovery_start = now
        self._sent_time.clear()

    def forget(self, seq):
        self._sent_time.pop(seq, None)

    def stats(self):
        return {"state": "newreno", "cwnd": self.cwnd}


class CubicReference(NewRenoReference):
    """A TCP CUBIC-like reference (RFC 9438 shape, simplified): after a loss the window is cut
    to 0.7 of ``w_max`` and then follows ``w_max + C (t - K)^3`` (packets, t in seconds since
    the cut, ``K`` the time to get back to ``w_max``), never slower than the Reno-friendly
    estimate. Slow start, one cut per round trip of losses and T3 as the NewReno reference;
    unpaced. Used to check coexistence against Linux's default TCP, which regrows faster than
    NewReno after a loss and so keeps a shallow buffer fuller."""

    state = "cubic"
    C = 0.4
    BETA = 0.7

    def __init__(self, mss: int = MSS, initial_cwnd_packets: int = 10, now: float = 0.0) -> None:
        super().__init__(mss, initial_cwnd_packets, now)
        self._w_max = 0.0          # packets
        self._epoch = None         # time of the last cut
        self._k = 0.0
        self._w_est = 0.0          # Reno-friendly window (packets)
        self._srtt = None

    def on_acked(self, now, seqs, rtt_sample, bytes_in_flight):
        if rtt_sample:
            self._srtt = rtt_sample if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt_sample
        for seq in seqs:
            sent = self._sent_time.pop(seq, None)
            if sent is None or sent <= self._recovery_start:
                continue
            if self._cwnd < self._ssthresh or self._epoch is None:
                self._cwnd += self.mss
                continue
            w = self._cwnd / self.mss
            t = now - self._epoch + (self._srtt or 0.0)
            target = self._w_max + self.C * (t - self._k) ** 3
            self._w_est += 3 * (1 - self.BETA) / (1 + self.BETA) / w
            target = max(target, self._w_est)
            if target > w:
                self._cwnd += self.mss * min(target - w, w / 2) / w

    def on_lost(self, now, seqs, bytes_in_flight):
        for seq in seqs:
            sent = self._sent_time.pop(seq, None)
            if sent is None or sent <= self._recovery_start:
                continue
            w = self._cwnd / self.mss
            self._w_max = w
            self._k = (w * (1 - self.BETA) / self.C) ** (1 / 3)
            self._cwnd = max(self._cwnd * self.BETA, 2 * self.mss)
            self._ssthresh = self._cwnd
            self._w_est = self._cwnd / self.mss
            self._epoch = now
            self._recovery_start = now

    def stats(self):
        return {"state": "cubic", "cwnd": self.cwnd}


@dataclass
class LinkConfig:
    rate: float                      # bottleneck bytes/s
    delay: float                     # one-way propagation delay each way (RTT = 2 * delay)
    buffer_bytes: int                # FIFO capacity at the bottleneck
    loss: float = 0.0                # random loss after the bottleneck (data direction)
    ack_loss: float = 0.0            # random loss of acks
    seed: int = 1
    rate_changes: list = field(default_factory=list)   # [(time, new_rate)]
    delay_changes: list = field(default_factory=list)  # [(time, new one-way delay)] (a route change)
    loss_changes: list = field(default_factory=list)   # [(time, new loss, new ack_loss)]
    reorder: float = 0.0             # probability that a packet is delayed by reorder_delay
    reorder_delay: float = 0.0
    drop_first_tx: frozenset = frozenset()   # seqs whose first transmission is dropped
    ack_every: int = 1               # receiver acks every n-th packet ...
    ack_delay: float = 0.0           # ... or this long after the first unacked one; at once on a gap
    jitter: float = 0.0              # sd (s) of a slow one-way delay variation (see DelayJitter); 0: off
    jitter_corr: float = 0.08        # seconds between its knots (raised to >= 8 * jitter, as the lab)
    jitter_acks: bool = True         # the ack direction varies too (its own process), as the lab's link


@dataclass
class Result:
    duration: float
    delivered_bytes: int             # unique bytes at the receiver
    sent_packets: int
    retransmissions: int
    dropped_queue: int               # tail drops
    dropped_random: int
    timeouts: int
    probes: int
    goodput_series: list             # (t_end, bytes/s) per bucket
    queue_delay_samples: list        # (t, seconds) at each enqueue
    cc_samples: list                 # (t, pacing_rate, cwnd, btl_bw, state)
    rtt_samples: list
    deliveries: dict                 # seq -> first arrival time
    send_log: list                   # (t, seq, is_retransmission)
    frames: list                     # (handed-over time, end offset in the byte stream)
    drop_log: list                   # times of tail drops
    seq_start: dict                  # seq -> start offset of its bytes in the stream

    def goodput(self, t0: float, t1: float) -> float:
        """Unique bytes/s delivered between t0 and t1 (bucket resolution)."""
        total = 0.0
        n = 0
        for t_end, rate in self.goodput_series:
            if t0 < t_end <= t1 + 1e-9:
                total += rate
                n += 1
        return total / n if n else 0.0

    def queue_delay_percentile(self, q: float, t0: float = 0.0, t1: float = math.inf) -> float:
        values = sorted(d for t, d in self.queue_delay_samples if t0 <= t <= t1)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q * len(values)))]

    def frame_latencies(self) -> list:
        """Per application frame: time from hand-over until it and everything before it
        arrived (an ordered stream), for frames that completed; in hand-over order."""
        order = sorted(self.seq_start.items(), key=lambda kv: kv[1])
        out = []
        done = 0.0
        i = 0
        for t_frame, end in self.frames:
            complete = True
            while i < len(order) and order[i][1] < end:
                seq = order[i][0]
                if seq not in self.deliveries:
                    complete = False
                    break
                done = max(done, self.deliveries[seq])
                i += 1
            if not complete:
                break
            out.append(max(done, t_frame) - t_frame)
        return out

    def loss_rate(self, t0: float = 0.0, t1: float = math.inf) -> float:
        """Fraction of transmissions between t0 and t1 dropped at the bottleneck's queue."""
        sent = sum(1 for t, _, _ in self.send_log if t0 <= t <= t1)
        dropped = sum(1 for t in self.drop_log if t0 <= t <= t1)
        return dropped / max(sent, 1)


class DelayJitter:
    """A slow, seeded variation of one direction's delay, shaped like netns_lab/impair.py's.

    Target offsets ("knots") are drawn every ``period`` seconds from a normal distribution cut
    off at +-2.5 sd and the offset moves linearly from one knot to the next. A linear ramp
    between independent knots has a time-averaged variance of 2/3 of the knots', so knots are
    drawn sqrt(3/2) times wider and the offset's sd over time is ``sd``. With ``period >= 8 sd``
    the offset changes by less than the time that passes, so it cannot reorder by itself;
    :meth:`release` also never lets a packet leave before the previous one of its direction (the
    lab's safety clamp) and never before it was sent (delay + offset clamped at 0).
    """

    CUT = 2.5

    def __init__(self, sd: float, period: float, rng: random.Random) -> None:
        self.sd = sd
        self.period = max(period, 8 * sd)
        self.rng = rng
        self._t0: Optional[float] = None
        self._a = self._b = 0.0
        self._last = -math.inf

    def _knot(self) -> float:
        while True:
            x = self.rng.gauss(0.0, 1.0)
            if abs(x) <= self.CUT:
                return x * self.sd * math.sqrt(1.5)

    def offset(self, t: float) -> float:
        if self._t0 is None:
            self._t0, self._a, self._b = t, self._knot(), self._knot()
        while t - self._t0 >= self.period:
            self._t0 += self.period
            self._a, self._b = self._b, self._knot()
        return self._a + (self._b - self._a) * (t - self._t0) / self.period

    def release(self, t: float, delay: float) -> float:
        """When a packet that enters this direction at ``t`` (with base ``delay``) arrives."""
        arrive = max(t + max(delay + self.offset(t), 0.0), self._last)
        self._last = arrive
        return arrive


class SharedLink:
    """The clock (an event heap) and the bottleneck queue that one or more flows share.

    Create flows with ``Simulation(cc, world=shared)``; :meth:`run` runs them all and returns
    one :class:`Result` per flow, in creation order.
    """

    def __init__(self, link: LinkConfig, start_time: float = 0.0) -> None:
        self.link = link
        self.now = start_time
        self.events: list = []
        self.eid = 0
        self.rate = link.rate
        self.queue: deque = deque()          # (departure_time, size)
        self.queued = 0                      # bytes in it
        self.last_departure = start_time
        self.flows: list = []
        # delay variation, one process per direction, shared by every flow (off when jitter == 0);
        # its own generator, so the loss draws of a run are the same with and without it
        self.jitter_data: Optional[DelayJitter] = None
        self.jitter_ack: Optional[DelayJitter] = None
        if link.jitter > 0:
            rng = random.Random(link.seed * 7919 + 13)
            self.jitter_data = DelayJitter(link.jitter, link.jitter_corr, rng)
            if link.jitter_acks:
                self.jitter_ack = DelayJitter(link.jitter, link.jitter_corr, rng)

    def arrival(self, t: float, acks: bool = False) -> float:
        """When something handed to the propagation delay at ``t`` arrives (data or ack direction)."""
        jitter = self.jitter_ack if acks else self.jitter_data
        if jitter is None:
            return t + self.link.delay
        return jitter.release(t, self.link.delay)

    def at(self, t: float, fn, *args) -> None:
        self.eid += 1
        heapq.heappush(self.events, (t, self.eid, fn, args))

    def _set_rate(self, rate: float) -> None:
        self.rate = rate

    def _set_delay(self, delay: float) -> None:
        self.link.delay = delay     # packets already on their way keep the delay they had

    def _set_loss(self, loss: float, ack_loss: float) -> None:
        self.link.loss, self.link.ack_loss = loss, ack_loss

    def run(self, duration: float) -> list:
        end = self.now + duration
        for t, rate in self.link.rate_changes:
            self.at(t, self._set_rate, rate)
        for t, delay in self.link.delay_changes:
            self.at(t, self._set_delay, delay)
        for t, loss, ack_loss in self.link.loss_changes:
            self.at(t, self._set_loss, loss, ack_loss)
        for flow in self.flows:
            flow._start()
        events = self.events
        flows = self.flows
        while events and events[0][0] <= end:
            t, _, fn, args = heapq.heappop(events)
            for flow in flows:
                flow._advance(t)
            self.now = t
            fn(*args)
        for flow in flows:
            flow._advance(end)
        self.now = end
        return [flow._result(duration) for flow in flows]


class Simulation:
    """One sender and its receiver over a bottleneck (its own, or a :class:`SharedLink`)."""

    def __init__(self, cc, link: Optional[LinkConfig] = None, *, world: Optional[SharedLink] = None,
                 bulk: bool = True,
                 frames: Optional[tuple[int, float]] = None,
                 bucket: float = 0.1, rack: Optional[RackLossDetector] = None,
                 pacer: Optional[Pacer] = None, min_rto: float = 1.0,
                 start_time: float = 0.0, max_packets: Optional[int] = None,
                 min_cwnd_bytes: int = 0, max_cwnd_bytes: Optional[int] = None) -> None:
        if world is None:
            if link is None:
                raise ValueError("a LinkConfig or a SharedLink is needed")
            world = SharedLink(link, start_time)
        self.world = world
        world.flows.append(self)
        self.link = link = world.link
        self.cc = cc
        self.rng = random.Random(link.seed + 1000 * (len(world.flows) - 1))
        self.rack = rack or RackLossDetector(min_rto=min_rto)
        self.pacer = pacer or Pacer()
        self.bulk = bulk and frames is None
        self.frames = frames
        self.max_packets = max_packets
        self.min_cwnd_bytes = min_cwnd_bytes   # a floor the sender applies to cc.cwnd (sctp.py's)
        self.max_cwnd_bytes = max_cwnd_bytes   # and a ceiling (sctp.py's 1 MiB); None: none
        self.bucket = bucket
        # sender state
        self.next_seq = 0
        self.app_bytes = 0                    # bytes the application has handed over
        self.sent_bytes_new = 0               # of which sent at least once
        self.outstanding: dict[int, tuple[int, float, bool]] = {}   # seq -> (size, sent, retx)
        self.size_of: dict[int, int] = {}
        self.acked: set[int] = set()
        self.retx_queue: deque = deque()
        self.inflight = 0
        self._wake_at: Optional[float] = None
        self._timer_token = 0
        self._timer_at: Optional[float] = None
        self._t3_at: Optional[float] = None
        self._t3_token = 0
        self._t3_backoff = 1
        # receiver
        self._tx_seen: set[int] = set()
        self._rx_next = 0
        self._rx_max = -1
        self._rx_unacked = 0
        self._ack_timer_token = 0
        self.rx_log: list[int] = []
        self.rx_seen: set[int] = set()
        self._rx_processed = 0
        # results
        self.deliveries: dict[int, float] = {}
        self.delivered_bytes = 0
        self._bucket_bytes = 0
        self._bucket_end = world.now + bucket
        self.goodput_series: list = []
        self.queue_delay_samples: list = []
        self.cc_samples: list = []
        self.rtt_samples: list = []
        self.send_log: list = []
        self.frame_log: list = []
        self.drop_log: list = []
        self.seq_start: dict[int, int] = {}
        self.stream_offset = 0
        self.sent_packets = 0
        self.retransmissions = 0
        self.dropped_queue = 0
        self.dropped_random = 0
        self.timeouts = 0
        self.probes = 0

    # ---- event loop ---------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.world.now

    def _at(self, t: float, fn, *args) -> None:
        self.world.at(t, fn, *args)

    def run(self, duration: float) -> Result:
        """Run this flow (and any others on the same SharedLink); this flow's result."""
        return self.world.run(duration)[self.world.flows.index(self)]

    def _start(self) -> None:
        if self.frames is not None:
            self._at(self.now, self._frame_tick)
        self._at(self.now, self._try_send)
        self._at(self.now, self._sample_cc)

    def _result(self, duration: float) -> Result:
        return Result(duration=duration, delivered_bytes=self.delivered_bytes,
                      sent_packets=self.sent_packets, retransmissions=self.retransmissions,
                      dropped_queue=self.dropped_queue, dropped_random=self.dropped_random,
                      timeouts=self.timeouts, probes=self.probes,
                      goodput_series=self.goodput_series,
                      queue_delay_samples=self.queue_delay_samples, cc_samples=self.cc_samples,
                      rtt_samples=self.rtt_samples, deliveries=self.deliveries,
                      send_log=self.send_log, frames=self.frame_log, drop_log=self.drop_log, seq_start=self.seq_start)

    def _advance(self, t: float) -> None:
        while t >= self._bucket_end:
            self.goodput_series.append((self._bucket_end, self._bucket_bytes / self.bucket))
            self._bucket_bytes = 0
            self._bucket_end += self.bucket

    def _sample_cc(self) -> None:
        bw = getattr(self.cc, "btl_bw", 0.0)
        self.cc_samples.append((self.now, self.cc.pacing_rate, self.cc.cwnd, bw,
                                getattr(self.cc, "state", "")))
        self._at(self.now + 0.01, self._sample_cc)

    # ---- application ----------------------------------------------------------------------

    def _frame_tick(self) -> None:
        if self.frames is None:
            return
        size, interval = self.frames
        self.app_bytes += size
        self.frame_log.append((self.now, self.app_bytes))
        self._try_send()
        self._at(self.now + interval, self._frame_tick)

    def schedule(self, t: float, fn, *args) -> None:
        """Run ``fn(*args)`` at simulated time ``t`` (scripted changes during a run)."""
        self._at(t, fn, *args)

    def set_source(self, *, bulk: bool = False, frames: Optional[tuple[int, float]] = None) -> None:
        """Switch the application between bulk and frames (call at a scheduled time)."""
        was_frames = self.frames is not None
        self.bulk = bulk
        self.frames = frames
        if frames is not None and not was_frames:
            self._frame_tick()
        self._try_send()

    def _has_new_data(self) -> bool:
        if self.max_packets is not None and self.next_seq >= self.max_packets:
            return False
        if self.bulk:
            return True
        return self.app_bytes - self.sent_bytes_new > 0

    def _new_packet_size(self) -> int:
        if self.bulk:
            return MSS
        return min(MSS, self.app_bytes - self.sent_bytes_new)

    # ---- sender -------------------------------------------------------------------------

    def _next_retx(self) -> Optional[int]:
        while self.retx_queue:
            seq = self.retx_queue[0]
            if seq in self.acked or seq in self.outstanding:
                self.retx_queue.popleft()
                continue
            return seq
        return None

    def _try_send(self) -> None:
        while True:
            seq = self._next_retx()
            if seq is not None:
                size = self.size_of[seq]
                retx = True
            elif self._has_new_data():
                size = self._new_packet_size()
                retx = False
            else:
                break
            cwnd = max(self.cc.cwnd, self.min_cwnd_bytes)
            if self.max_cwnd_bytes is not None:
                cwnd = min(cwnd, self.max_cwnd_bytes)
            if self.inflight + size > cwnd:
                break
            t = self.pacer.next_send_time(self.now, size, self.cc.pacing_rate)
            if t > self.now:
                if self._wake_at is None or t < self._wake_at - 1e-12 or self._wake_at < self.now:
                    self._wake_at = t
                    self._at(t, self._wake)
                break
            if retx:
                self.retx_queue.popleft()
            else:
                seq = self._new_seq(size)
            self._transmit(seq, size, retx)
        self._arm_timers()

    def _new_seq(self, size: int) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.seq_start[seq] = self.stream_offset
        self.stream_offset += size
        if self.bulk:
            self.app_bytes += size   # bulk data counts as handed over when sent
        self.sent_bytes_new += size
        self.size_of[seq] = size
        return seq

    def _wake(self) -> None:
        if self._wake_at is not None and self.now + 1e-12 >= self._wake_at:
            self._wake_at = None
        self._try_send()

    def _transmit(self, seq: int, size: int, retx: bool) -> None:
        prev = self.outstanding.get(seq)
        if prev is None:
            self.inflight += size
        self.outstanding[seq] = (size, self.now, retx or prev is not None)
        app_limited = (not self._has_new_data()) and self._next_retx() is None
        self.cc.on_sent(self.now, seq, size, self.inflight, app_limited)
        self.rack.on_sent(self.now, seq, size)
        self.pacer.on_sent(self.now, size, self.cc.pacing_rate)
        self.sent_packets += 1
        if retx or prev is not None:
            self.retransmissions += 1
        self.send_log.append((self.now, seq, retx or prev is not None))
        self._enqueue(seq, size)

    def _arm_timers(self) -> None:
        t = self.rack.get_timer()
        if t is not None and t != self._timer_at:
            self._timer_token += 1
            self._timer_at = t
            self._at(max(t, self.now), self._rack_timer, self._timer_token)
        if self.outstanding and self._t3_at is None:
            self._t3_token += 1
            self._t3_at = self.now + self.rack.rto() * self._t3_backoff
            self._at(self._t3_at, self._t3_timer, self._t3_token)
        if not self.outstanding:
            self._t3_at = None

    def _rack_timer(self, token: int) -> None:
        if token != self._timer_token:
            return
        self._timer_at = None
        lost, probe = self.rack.handle_timer(self.now)
        self._declare_lost(lost)
        if probe:
            self.probes += 1
            if self._has_new_data():
                size = self._new_packet_size()
                seq = self._new_seq(size)
                self._transmit(seq, size, False)
            else:
                seq = self.rack.probe_candidate()
                if seq is not None:
                    self._transmit(seq, self.size_of[seq], True)
        self._try_send()

    def _t3_timer(self, token: int) -> None:
        if token != self._t3_token:
            return
        self._t3_at = None
        if not self.outstanding:
            return
        self.timeouts += 1
        self._t3_backoff = min(self._t3_backoff * 2, 64)
        for seq in sorted(self.outstanding, key=lambda s: self.outstanding[s][1]):
            self.retx_queue.append(seq)
        self.outstanding.clear()
        self.inflight = 0
        self.cc.on_timeout(self.now)
        self.rack.on_timeout(self.now)
        self._try_send()

    def _declare_lost(self, lost: list[int]) -> None:
        if not lost:
            return
        for seq in lost:
            entry = self.outstanding.pop(seq, None)
            if entry is not None:
                self.inflight -= entry[0]
            self.retx_queue.append(seq)
        self.cc.on_lost(self.now, lost, self.inflight)

    def _on_ack(self, upto: int) -> None:
        newly: list[int] = []
        while self._rx_processed < upto:
            seq = self.rx_log[self._rx_processed]
            self._rx_processed += 1
            if seq not in self.acked:
                self.acked.add(seq)
                newly.append(seq)
        if not newly:
            return
        rtt = None
        newest_time = -1.0
        for seq in newly:
            entry = self.outstanding.pop(seq, None)
            if entry is None:
                continue
            size, sent, retx = entry
            self.inflight -= size
            if not retx and sent > newest_time:
                newest_time = sent
                rtt = self.now - sent
        self._t3_backoff = 1
        self._t3_at = None      # restart T3 on new acks (RFC 4960 6.3.2 R3)
        self._t3_token += 1
        if rtt is not None:
            self.rack.on_rtt_sample(self.now, rtt)
            self.rtt_samples.append((self.now, rtt))
        lost = self.rack.on_acked(self.now, newly)
        self.cc.on_acked(self.now, newly, rtt, self.inflight)
        self._declare_lost(lost)
        self._try_send()

    # ---- the link ---------------------------------------------------------------------------

    def _enqueue(self, seq: int, size: int) -> None:
        now = self.now
        w = self.world
        while w.queue and w.queue[0][0] <= now:
            w.queued -= w.queue.popleft()[1]
        queued = w.queued
        if queued + size > self.link.buffer_bytes:
            self.dropped_queue += 1
            self.drop_log.append(now)
            return
        start = max(now, w.last_departure)
        self.queue_delay_samples.append((now, start - now))
        depart = start + size / w.rate
        w.last_departure = depart
        w.queue.append((depart, size))
        w.queued += size
        if seq in self.link.drop_first_tx and seq not in self._tx_seen:
            self._tx_seen.add(seq)
            self.dropped_random += 1
            return
        if self.link.loss and self.rng.random() < self.link.loss:
            self.dropped_random += 1
            return
        arrive = w.arrival(depart)
        if self.link.reorder and self.rng.random() < self.link.reorder:
            arrive += self.link.reorder_delay
        self._at(arrive, self._receive, seq, size)

    def _receive(self, seq: int, size: int) -> None:
        self.rx_log.append(seq)
        in_order = seq == self._rx_next
        if seq not in self.rx_seen:
            self.rx_seen.add(seq)
            self.deliveries[seq] = self.now
            self.delivered_bytes += size
            self._bucket_bytes += size
        while self._rx_next in self.rx_seen:
            self._rx_next += 1
        self._rx_max = max(self._rx_max, seq)
        self._rx_unacked += 1
        gap = not in_order or self._rx_next <= self._rx_max
        if self._rx_unacked >= self.link.ack_every or gap or self.link.ack_delay <= 0:
            self._send_ack()
        elif self._rx_unacked == 1:
            self._ack_timer_token += 1
            self._at(self.now + self.link.ack_delay, self._ack_timer, self._ack_timer_token)

    def _ack_timer(self, token: int) -> None:
        if token == self._ack_timer_token and self._rx_unacked:
            self._send_ack()

    def _send_ack(self) -> None:
        self._rx_unacked = 0
        self._ack_timer_token += 1
        if self.link.ack_loss and self.rng.random() < self.link.ack_loss:
            return
        self._at(self.world.arrival(self.now, acks=True), self._on_ack, len(self.rx_log))


def mbit(x: float) -> float:
    """Mbit/s -> bytes/s."""
    return x * 1e6 / 8


class WindowedFrames:
    """The lab's desktop stream as an application on a :class:`Simulation`: every ``interval``
    s a frame of a seeded random size in ``[min_size, max_size]`` bytes, handed over only if
    fewer than ``max_unacked`` earlier frames still wait for the client's acknowledgement;
    otherwise the frame is skipped (never sent). The client acknowledges a frame when it and
    everything before it arrived (an ordered stream); that acknowledgement reaches the sender
    one one-way delay later (the link's base delay, as a small message on an idle reverse path).

    Attach with ``WindowedFrames(sim, ...).start(t)`` before ``sim.run``; :meth:`stop` ends it.
    Read-outs: :attr:`ticks` (frames the application produced), :attr:`skipped`,
    :meth:`delivered` (frames complete at the receiver), :meth:`latencies` (hand-over to
    complete, for frames handed over at or after ``t0``).
    """

    def __init__(self, sim: "Simulation", *, min_size: int = 20_000, max_size: int = 60_000,
                 interval: float = 1 / 30, max_unacked: int = 2, seed: int = 1) -> None:
        self.sim = sim
        self.min_size, self.max_size = min_size, max_size
        self.interval = interval
        self.max_unacked = max_unacked
        self.rng = random.Random(seed)
        self.ticks: list = []          # (time, handed over?)
        self.sent: list = []           # (hand-over time, end offset)
        self._running = False
        self._until = math.inf
        # incremental completion scan (frames and seqs in stream order)
        self._done_times: list = []    # completion time at the receiver, per handed-over frame
        self._seq = 0
        self._done = 0.0

    def start(self, t: float, until: float = math.inf) -> "WindowedFrames":
        self._until = until
        self.sim.schedule(t, self._begin)
        return self

    def _begin(self) -> None:
        self.sim.bulk = False      # the stream replaces any other source
        self.sim.frames = None
        self._tick()

    def _scan(self) -> None:
        sim = self.sim
        while len(self._done_times) < len(self.sent):
            end = self.sent[len(self._done_times)][1]
            while self._seq < sim.next_seq and sim.seq_start[self._seq] < end:
                t = sim.deliveries.get(self._seq)
                if t is None:
                    return
                self._done = max(self._done, t)
                self._seq += 1
            if self._seq >= sim.next_seq and sim.sent_bytes_new < end:
                return      # part of the frame not even sent yet
            self._done_times.append(max(self._done, self.sent[len(self._done_times)][0]))

    def _unacked(self, now: float) -> int:
        self._scan()
        acked = sum(1 for t in self._done_times if t + self.sim.link.delay <= now)
        return len(self.sent) - acked

    def _tick(self) -> None:
        sim = self.sim
        now = sim.now
        if now >= self._until:
            return
        size = self.rng.randint(self.min_size, self.max_size)
        if self._unacked(now) < self.max_unacked:
            sim.app_bytes += size
            sim.frame_log.append((now, sim.app_bytes))
            self.sent.append((now, sim.app_bytes))
            self.ticks.append((now, True))
            sim._try_send()
        else:
            self.ticks.append((now, False))
        sim.schedule(now + self.interval, self._tick)

    @property
    def skipped(self) -> int:
        return sum(1 for _, handed in self.ticks if not handed)

    def delivered(self, t0: float = 0.0, t1: float = math.inf) -> int:
        self._scan()
        return sum(1 for (t, _), _d in zip(self.sent, self._done_times) if t0 <= t < t1)

    def produced(self, t0: float = 0.0, t1: float = math.inf) -> int:
        return sum(1 for t, _ in self.ticks if t0 <= t < t1)

    def latencies(self, t0: float = 0.0, t1: float = math.inf) -> list:
        self._scan()
        return sorted(d - t for (t, _), d in zip(self.sent, self._done_times) if t0 <= t < t1)
