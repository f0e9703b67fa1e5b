"""Our SCTP sender: congestion control, pacing, loss recovery and a datagram lane over aiortc.

aiortc's ``RTCSctpTransport`` gives us a standard WebRTC association (the wire a browser speaks:
DTLS, SCTP chunks, PR-SCTP, data-channel open messages), but its *sender* was built for
signalling traffic:

==================  ===========================================  ==============================
what                aiortc                                       here
==================  ===========================================  ==============================
congestion control  NewReno: every loss halves cwnd, T3 sets it  model-based (congestion.py,
                    to 1 MTU; ~2-3 Mbit/s at 40 ms + 1-2 % loss  BbrController): random loss
                                                                 does not cut the rate
pacing              none: a cwnd leaves as one burst             chunks leave at the controller's
                                                                 pacing rate (Pacer + a timer)
loss recovery       3 SACK strikes (fast retransmit) or T3       RACK (recovery.py): a chunk is
                    (RTO); a lost last chunk waits for T3        lost once a later one is acked
                                                                 and a reorder window passed; a
                                                                 tail-loss probe 1.3 SRTT after
                                                                 the last send resends it
queues              one FIFO for every channel, handed to SCTP   datagrams (unordered, PR-SCTP)
                    only when SCTP's own queue is empty; a TSN   go first, expire before they
                    per chunk from the moment it is queued       get a TSN; TSN given at send;
                                                                 reliable FIFO per stream priority
acknowledgements    one SACK per packet with DATA                one per 2 packets or 5 ms; at
                                                                 once while there is a gap
RTO.Initial / Min   3 s / 1 s, no back-off, Max 60 s             250 ms / 40 ms, doubling, 1.5 s
packet size         1189-byte SCTP packets (fits the IPv6         the largest the path carried
                    minimum MTU): 1160 user bytes a chunk         both ways (pmtu.py: padded
                                                                 HEARTBEATs): 1404 at MTU 1500
==================  ===========================================  ==============================

The association itself (INIT, cookies, the receiver, stream resets) stays aiortc's. The private
methods where aiortc's sender decides what to send are turned into ``sp_*`` hooks by
``_aiortc_compat.sctp_hook_class()``; this module implements the hooks and uses only ``sp_*``
helpers and public chunk fields (``tsn``, ``user_data``...), never an aiortc private name.

The controller and the loss detector are pure (they take ``now``); this class is the pump
around them: it feeds them sends, SACKs and timer expiries, and keeps three timers on the event
loop: pacing (when the pacer says wait), RACK/TLP (``get_timer()``), and aiortc's T3.

Clock: ``loop.time()`` (monotonic) for the controller, RACK and pacing. aiortc keeps wall-clock
``time.time()`` for PR-SCTP lifetimes; the compat helpers handle that.

Nothing here imports aiortc at module import time: :func:`tuned_sctp_transport_class` builds the
class lazily (aiortc loads PyAV, ~0.3 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Optional

logger = logging.getLogger("shortpath.transport.sctp")


@dataclass(frozen=True)
class SctpTuning:
    """The SCTP knobs we change, each with its reason."""

    # Floor of the retransmission timeout (T3). The computed RTO is SRTT + 4*RTTVAR, which on any
    # real path is already above the RTT; the floor only matters on short paths (LAN, loopback).
    # 40 ms is a few LAN RTTs plus the scheduling jitter of a busy Python event loop, and 25x
    # faster than RFC 4960's 1 s. With RACK and tail-loss probes, T3 is the last resort.
    rto_min: float = 0.040

    # RTO before the first RTT sample (INIT, COOKIE-ECHO, first DATA). 250 ms covers
    # intercontinental RTTs (~200 ms) without spurious resends, 12x faster than 3 s.
    rto_initial: float = 0.250

    # Ceiling of the RTO after back-off. Liveness is judged by the session layer, so a long
    # ceiling only makes the path slow to resume after a short outage; 1.5 s keeps the probing
    # rate on a dead path below 1 packet/s.
    rto_max: float = 1.5

    # Multiply the RTO on each T3 (and T1) expiry, as RFC 4960 6.3.3 E2 asks and aiortc omits.
    backoff: float = 2.0

    # Consecutive T3 expiries without progress after which the association is declared dead
    # (RFC 4960 Association.Max.Retrans = 10): ~8 s of silence with the values above.
    max_retrans: int = 10

    # Initial congestion window in DATA chunks (TCP's IW10, RFC 6928): a 12 KB screen update
    # leaves in the first RTT.
    initial_cwnd_chunks: int = 10

    # Ceiling of the congestion window (bytes in flight), whatever the controller says. aiortc's
    # receiver advertises 1 MiB and a flight above the receiver's UDP socket buffer is dropped by
    # its kernel (measured on loopback: 716 of 9099 datagrams lost without a cap). 1 MiB allows
    # ~80 Mbit/s at 100 ms RTT; the peer's advertised window caps it as well.
    max_cwnd_bytes: int = 1024 * 1024

    # Floor of the congestion window, whatever the controller says. The controller sizes cwnd
    # from min_rtt, which on a LAN is the idle round trip (< 1 ms); under load a Python receiver
    # acknowledges in bursts, a few ms apart (one SACK per event-loop batch), so a window of two
    # idle BDPs (~20 KB) capped a clean LAN link below stock aiortc (lab, clean: 33 vs 40
    # Mbit/s). Pacing, not cwnd, sets the rate; 48 KiB in flight is 10 ms at 40 Mbit/s and
    # under a BDP at 40 ms and 10 Mbit/s.
    min_cwnd_bytes: int = 48 * 1024

    # On T3, resend only chunks the peer has not reported in a SACK gap block (aiortc resends
    # every chunk not cumulatively acked; its receiver never reneges, so that is waste).
    t3_skip_gap_acked: bool = True

    # A retransmission (or tail-loss probe) that leaves with nothing queued behind it -- the
    # tail of a frame, a lone input event -- goes out this many times back to back. Nothing
    # sent after it can reveal its loss, so losing it again costs a probe timeout (in the lab
    # at 40 ms + 5 %, with an ack-paced frame stream that then stops, such chains held a frame
    # for close to a second and the stall detector left the path). Two copies: lost together
    # 0.25 % of the time at 5 % random loss, for one extra small packet per repaired tail.
    tail_copies: int = 2

    # Search the path MTU once the association is up (pmtu.py: padded HEARTBEAT probes) and cut
    # DATA chunks to the largest packet the path carried both ways: 1404 user bytes a chunk on
    # a 1500-byte IPv4 path instead of aiortc's 1160, for every path MTU the probes confirm.
    # False keeps aiortc's size (safe for the IPv6 minimum MTU) and sends no probe.
    pmtu_search: bool = True

    # --- datagram lane -----------------------------------------------------------------------
    # False = datagrams wait in the reliable FIFO, as in aiortc (for A/B measurements only).
    datagram_lane: bool = True

    # Unreliable messages (unordered, PR-SCTP: our datagram channel) go before queued reliable
    # data, and may exceed the congestion window by this many bytes so that a full window of
    # frames does not hold an input event for a round trip.
    datagram_cwnd_allowance: int = 4 * 1160

    # A datagram still queued this long after it was sent by the application is dropped before
    # it is given a TSN (an input event 250 ms old is noise; the queue only grows when the path
    # carries less than the application offers).
    datagram_max_age: float = 0.250

    # --- pacing ------------------------------------------------------------------------------
    # Bytes that may leave back to back before the pacer makes the sender wait. The event loop's
    # timers fire with ~1 ms granularity, so a burst must cover about 1 ms at the rates a Python
    # stack reaches (~50-100 Mbit/s -> 6-12 KB); at low rates the pacer spreads packets out.
    pacing_burst_bytes: int = 8 * 1160

    # --- acknowledgements (our receiver) -----------------------------------------------------
    # SACK after this many packets with DATA, or after ack_delay, whichever first; at once when
    # a chunk opens or fills a gap, or is a duplicate (_aiortc_compat's _mark_received: the
    # sender's loss detection needs those soon). aiortc acknowledges every packet, and SACK
    # handling is a large share of a Python sender's (and receiver's) CPU per byte. Every 4th
    # rather than every 2nd (TCP's and QUIC's default): one process sending to itself over
    # loopback (benchmarks/udp_loopback.py, 24 MB, 3 interleaved rounds) moved 9.4-10.7 MB/s
    # with 2 and 11.4-12.7 with 4. Pacing, not ack clocking, spaces our packets, and the
    # delivery-rate samples tolerate acks that cover 4 packets; ack_delay bounds what a
    # frame's last packets wait for theirs.
    ack_every: int = 4
    ack_delay: float = 0.005


DEFAULT_TUNING = SctpTuning()


@dataclass
class _Datagram:
    """One unreliable message waiting in the datagram lane (all its fragments go together)."""
    chunks: list
    size: int
    deadline: float      # loop time after which it is dropped unsent


def _default_controller(tuning: SctpTuning, mss: int, now: float) -> Any:
    from .congestion import BbrController
    return BbrController(mss=mss, initial_cwnd_packets=tuning.initial_cwnd_chunks, now=now)


def _default_pacer(tuning: SctpTuning) -> Any:
    from .congestion import Pacer
    return Pacer(burst_bytes=tuning.pacing_burst_bytes)


def _default_recovery(tuning: SctpTuning, now: float) -> Any:
    from .recovery import RackLossDetector
    # our receiver holds a SACK up to ack_delay; RACK's own RTO is not used (T3 keeps aiortc's)
    return RackLossDetector(max_ack_delay=tuning.ack_delay, initial_rtt=tuning.rto_initial,
                            min_rto=tuning.rto_min, max_rto=tuning.rto_max, initial_rto=tuning.rto_initial)


@lru_cache(maxsize=None)
def tuned_sctp_transport_class() -> type:
    """Return (and cache) our ``RTCSctpTransport`` subclass. Per-instance arguments:
    ``tuning=`` and, for tests, ``controller=``, ``pacer=``, ``recovery=`` (objects with the
    congestion.py / recovery.py interfaces)."""
    from ._aiortc_compat import sctp_hook_class

    base = sctp_hook_class()

    class TunedSctpTransport(base):  # type: ignore[misc,valid-type]
        """aiortc's association with our sender (see the module doc).

        ``on_dead`` (if set) is called once when ``max_retrans`` consecutive T3 expiries happened
        without progress; ``on_progress`` after every SACK and data-channel flush (the moments the
        send backlog can shrink: UdpPath.drain()). ``sp_last_rx`` is the time.monotonic() of the
        last SCTP packet from the peer (it only arrives through DTLS, so it cannot be spoofed):
        packet-level liveness for the session core (SessionConnection.path_heard).
        """

        def __init__(self, transport: Any, port: int = 5000, *, tuning: SctpTuning = DEFAULT_TUNING,
                     controller: Any = None, pacer: Any = None, recovery: Any = None) -> None:
            super().__init__(transport, port=port)
            self._sp_tuning = tuning
            self.sp_rto = tuning.rto_initial
            now = self.sp_loop.time()
            mss = self.sp_max_chunk
            self._sp_cc = controller if controller is not None else _default_controller(tuning, mss, now)
            self._sp_pacer = pacer if pacer is not None else _default_pacer(tuning)
            self._sp_rack = recovery if recovery is not None else _default_recovery(tuning, now)
            self._sp_peer_rwnd: Optional[int] = None
            self.sp_cwnd_view = self._sp_cwnd()
            # sender queues: reliable chunks (FIFO, no TSN yet), the datagram lane, chunks to resend
            #: reliable chunks waiting for their first send, one FIFO per priority (lower first)
            self._sp_queues: dict[int, deque] = {}
            self._sp_prio_order: list[int] = []
            self._sp_stream_prio: dict[int, int] = {}
            self._sp_lane: deque = deque()
            self._sp_rtx: deque = deque()
            self._sp_probe: Any = None
            self._sp_queued = 0          # user bytes in _sp_queues
            self.sp_lane_bytes = 0       # user bytes in _sp_lane
            #: chunks sent and not cumulatively acked, by TSN, in TSN (= first-send) order
            self._sp_by_tsn: dict[int, Any] = {}
            self._sp_prev_gaps: dict[int, int] = {}   # last SACK's gap blocks: first TSN -> last
            self._sp_t3_not_before = 0.0  # loop time before which T3 waits (a probe is due or out)
            self._sp_pumping = False
            self._sp_repump = False
            self._sp_kicked = False
            self._sp_pace_handle: Optional[asyncio.TimerHandle] = None
            self._sp_rack_handle: Optional[asyncio.TimerHandle] = None
            self._sp_sack_handle: Optional[asyncio.TimerHandle] = None
            self._sp_rx_packets = 0      # packets with DATA not yet acknowledged (receiver)
            self._sp_sack_due: Optional[float] = None  # loop time the owed delayed SACK is due
            # counters (stats and tests)
            self.sp_t3_expiries = 0
            self.sp_t3_consecutive = 0
            self.sp_fast_retransmits = 0
            self.sp_tlp_probes = 0
            self.sp_tail_copies = 0
            self.sp_datagrams_expired = 0
            self.sp_dead = False
            self.on_dead: Optional[Callable[[], Any]] = None
            self.on_progress: Optional[Callable[[], Any]] = None
            self.sp_last_rx: Optional[float] = None
            # path MTU search (pmtu.py): started when the association is established
            self._sp_pmtu: Any = None
            self._sp_pmtu_handle: Optional[asyncio.TimerHandle] = None
            if tuning.pmtu_search:
                from .pmtu import DATA_OVERHEAD, PmtuSearch
                self._sp_pmtu = PmtuSearch(os.urandom(8), base=self.sp_max_chunk + DATA_OVERHEAD)

        # ---- figures -----------------------------------------------------------------------
        @property
        def sp_queued_bytes(self) -> int:
            """User bytes accepted and not yet sent (reliable queue + datagram lane)."""
            return self._sp_queued + self.sp_lane_bytes

        @property
        def sp_pacing_rate(self) -> float:
            """The controller's pacing rate, bytes/s: what this sender sends at now."""
            return float(self._sp_cc.pacing_rate)

        def sp_stats(self) -> dict:
            cc = self._sp_cc
            return {"cwnd": self._sp_cwnd(), "pacing_rate": cc.pacing_rate,
                    "t3_expiries": self.sp_t3_expiries, "fast_retransmits": self.sp_fast_retransmits,
                    "tlp_probes": self.sp_tlp_probes, "tail_copies": self.sp_tail_copies,
                    "datagrams_expired": self.sp_datagrams_expired,
                    "chunk_payload": self.sp_max_chunk,
                    "pmtu": self._sp_pmtu.stats() if self._sp_pmtu is not None else None,
                    "controller": cc.stats() if hasattr(cc, "stats") else None}

        def _sp_cwnd(self) -> int:
            t = self._sp_tuning
            cwnd = min(max(int(self._sp_cc.cwnd), t.min_cwnd_bytes), t.max_cwnd_bytes)
            if self._sp_peer_rwnd is not None:
                cwnd = min(cwnd, max(self._sp_peer_rwnd, 4 * self.sp_max_chunk))
            return cwnd

        # ---- hooks: queueing ---------------------------------------------------------------
        def sp_enqueue(self, chunks: list, datagram: bool) -> None:
            size = 0
            for c in chunks:
                c.sp_acked = False
                c.sp_sends = 0
                c.sp_sent_at = 0.0
                c.sp_msg = None
                size += len(c.user_data)
            chunks[0].sp_msg = chunks     # the first fragment knows the whole message
            if datagram and self._sp_tuning.datagram_lane:
                now = self.sp_loop.time()
                self._sp_lane.append(_Datagram(chunks, size, now + self._sp_tuning.datagram_max_age))
                self.sp_lane_bytes += size
            else:
                prio = self._sp_stream_prio.get(chunks[0].stream_id, 0)
                q = self._sp_queues.get(prio)
                if q is None:
                    q = self._sp_queues[prio] = deque()
                    self._sp_prio_order = sorted(self._sp_queues)
                q.extend(chunks)
                self._sp_queued += size

        def sp_set_stream_priority(self, stream_id: int, priority: int) -> None:
            """Messages of ``stream_id`` queued from now on go before those of streams with a
            higher ``priority`` number (default 0; equal priorities share one FIFO). A message
            already partly sent finishes after the more urgent ones: its fragments keep their
            TSNs, and other streams' messages may be sent between them."""
            self._sp_stream_prio[stream_id] = priority

        def sp_stream_priorities(self) -> dict:
            """stream id -> priority for the streams given one (others use 0)."""
            return dict(self._sp_stream_prio)

        def _sp_next_queue(self) -> Optional[deque]:
            for prio in self._sp_prio_order:
                q = self._sp_queues[prio]
                if q:
                    return q
            return None

        def sp_has_queued(self, stream_ids: list) -> bool:
            ids = set(stream_ids)
            return (any(c.stream_id in ids for q in self._sp_queues.values() for c in q)
                    or any(d.chunks[0].stream_id in ids for d in self._sp_lane))

        # ---- hooks: sending ----------------------------------------------------------------
        def _sp_on_pacing_timer(self) -> None:
            self._sp_pace_handle = None
            self._sp_kick()

        def _sp_kick(self) -> None:
            """Run the pump soon (from a timer callback)."""
            if self.state == "closed":
                return
            if not self._sp_kicked:
                self._sp_kicked = True
                asyncio.ensure_future(self.sp_transmit())

        async def sp_pump(self) -> None:
            self._sp_kicked = False
            if self._sp_pumping:
                self._sp_repump = True   # the running pump goes round once more
                return
            self._sp_pumping = True
            try:
                while True:
                    self._sp_repump = False
                    await self._sp_pump_once()
                    if not self._sp_repump:
                        break
            finally:
                self._sp_pumping = False
            self.sp_cwnd_view = self._sp_cwnd()
            self._sp_arm_recovery_timer()

        async def _sp_pump_once(self) -> None:
            await self.sp_send_forward_tsn()
            loop = self.sp_loop
            cc, pacer, tuning = self._sp_cc, self._sp_pacer, self._sp_tuning
            lane, rtx = self._sp_lane, self._sp_rtx
            while True:
                now = loop.time()
                cwnd = self._sp_cwnd()
                # 1. datagrams first; expired ones are dropped before they are given a TSN
                if lane:
                    wall = time.time()
                    while lane and (lane[0].deadline < now or self.sp_wall_expired(lane[0].chunks[0], wall)):
                        d = lane.popleft()
                        self.sp_lane_bytes -= d.size
                        self.sp_datagrams_expired += 1
                    if lane and self.sp_flight_size + lane[0].size <= cwnd + tuning.datagram_cwnd_allowance:
                        d = lane.popleft()
                        self.sp_lane_bytes -= d.size
                        self._sp_assign(d.chunks)
                        for c in d.chunks:
                            await self._sp_send(c, now, cc, pacer)
                        continue
                # 2. a tail-loss probe: the last outstanding chunk again, whatever the window
                probe = self._sp_probe
                if probe is not None:
                    self._sp_probe = None
                    if probe.sp_sends == 0:             # new data as the probe
                        queue = self._sp_next_queue()
                        if queue and queue[0] is probe:
                            queue.popleft()
                            if probe.tsn is None:
                                self._sp_assign(probe.sp_msg)
                            self._sp_queued -= len(probe.user_data)
                            self.sp_tlp_probes += 1
                            await self._sp_send(probe, now, cc, pacer)
                    elif self.sp_outstanding(probe) and probe.tsn in self._sp_by_tsn:
                        self.sp_tlp_probes += 1
                        await self._sp_send(probe, now, cc, pacer)
                        await self._sp_tail_copies(probe)
                    # RFC 8985 7.3: the RTO restarts when a probe leaves, so T3 only fires
                    # when the probe itself went unanswered
                    self._sp_t3_not_before = now + self.sp_rto
                    continue
                # 3. retransmissions, then 4. new reliable data, within cwnd and at the pacing rate
                while rtx and not self.sp_wants_resend(rtx[0]):
                    rtx.popleft()
                queue = None if rtx else self._sp_next_queue()
                src = rtx if rtx else queue
                if not src:
                    break
                if self.sp_flight_size >= cwnd:
                    break
                chunk = src[0]
                t = pacer.next_send_time(now, len(chunk.user_data), cc.pacing_rate)
                if t > now:
                    self._sp_arm_pacing(t)
                    break
                src.popleft()
                if src is queue:
                    self._sp_queued -= len(chunk.user_data)
                    if chunk.tsn is None:
                        self._sp_assign(chunk.sp_msg)
                await self._sp_send(chunk, now, cc, pacer)
                if src is rtx and not rtx and self._sp_next_queue() is None:
                    await self._sp_tail_copies(chunk)

        async def _sp_tail_copies(self, chunk: Any) -> None:
            """Extra copies of a resent chunk with nothing behind it (SctpTuning.tail_copies):
            the same bytes again, booked once (flight, RACK and the controller see one send)."""
            for _ in range(self._sp_tuning.tail_copies - 1):
                self.sp_tail_copies += 1
                await self.sp_wire(chunk)

        def _sp_assign(self, chunks: list) -> None:
            """TSNs for a whole message when its first chunk leaves: fragments need consecutive
            TSNs, so a datagram sent in the middle of a long reliable message takes the TSN after
            that message's last fragment (and arrives out of TSN order, which SCTP allows)."""
            self.sp_assign_tsns(chunks)
            by_tsn = self._sp_by_tsn
            for c in chunks:
                by_tsn[c.tsn] = c

        async def _sp_send(self, chunk: Any, now: float, cc: Any, pacer: Any) -> None:
            size = len(chunk.user_data)
            self.sp_stage(chunk)
            chunk.sp_sends += 1
            chunk.sp_sent_at = now
            app_limited = not (self._sp_queued or self._sp_rtx or self._sp_lane)
            rate = cc.pacing_rate
            cc.on_sent(now, chunk.tsn, size, self.sp_flight_size, app_limited)
            pacer.on_sent(now, size, rate)
            self._sp_rack.on_sent(now, chunk.tsn, size)
            await self.sp_wire(chunk)

        def _sp_arm_pacing(self, when: float) -> None:
            h = self._sp_pace_handle
            if h is not None:
                if h.when() <= when:
                    return
                h.cancel()
            self._sp_pace_handle = self.sp_loop.call_at(when, self._sp_on_pacing_timer)

        # ---- hooks: acknowledgements ----------------------------------------------------------
        def sp_on_sack(self, cum: int, gaps: list, rwnd: int, advanced: bool) -> None:
            now = self.sp_loop.time()
            self._sp_peer_rwnd = rwnd
            by_tsn = self._sp_by_tsn
            cc = self._sp_cc
            newly = []
            for c in self.sp_take_cum_acked(cum):
                by_tsn.pop(c.tsn, None)
                if self.sp_abandoned(c):
                    cc.forget(c.tsn)
                    self._sp_rack.forget(c.tsn)
                elif not c.sp_acked:
                    c.sp_acked = True
                    newly.append(c)
            # abandoned chunks a FORWARD TSN skipped leave aiortc's sent queue before the
            # cumulative TSN covers them: drop them here too (by_tsn is in TSN order), or the
            # map grows by every lost datagram for the life of the association
            while by_tsn:
                first = next(iter(by_tsn))
                if (cum - first) & 0xFFFFFFFF >= 0x80000000:
                    break                      # first > cum (serial number arithmetic)
                c = by_tsn.pop(first)
                cc.forget(first)
                self._sp_rack.forget(first)
            # aiortc's receiver repeats every gap block in every SACK; a block that starts where
            # one of the previous SACK started is only walked past the end it had then
            prev = self._sp_prev_gaps
            seen: dict[int, int] = {}
            for start, end in gaps:
                first = (cum + start) & 0xFFFFFFFF
                n_new = end - start + 1
                old_end = prev.get(first)
                skip = 0 if old_end is None else min(((old_end - first) & 0xFFFFFFFF) + 1, n_new)
                seen[first] = (cum + end) & 0xFFFFFFFF
                for off in range(skip, n_new):
                    c = by_tsn.get((first + off) & 0xFFFFFFFF)
                    if c is not None and not c.sp_acked and not self.sp_abandoned(c):
                        c.sp_acked = True
                        self.sp_mark_acked(c)
                        newly.append(c)
            self._sp_prev_gaps = seen
            lost: list = []
            if newly:
                rtt = None
                latest = None
                for c in newly:   # RTT from the latest chunk sent once (Karn)
                    if c.sp_sends == 1 and (latest is None or c.sp_sent_at > latest.sp_sent_at):
                        latest = c
                if latest is not None:
                    rtt = max(now - latest.sp_sent_at, 1e-6)
                    self.sp_update_rtt(rtt)
                    self._sp_rack.on_rtt_sample(now, rtt)
                seqs = [c.tsn for c in newly]
                cc.on_acked(now, seqs, rtt, self.sp_flight_size)
                lost = self._sp_rack.on_acked(now, seqs)
                self.sp_t3_consecutive = 0
            elif advanced:
                self.sp_t3_consecutive = 0
            self._sp_declare_lost(now, lost)
            # RACK-TLP (RFC 8985 7.3): the RTO restarts on every ack of new data, gap acks
            # included; T3 only has to catch a path that acknowledges nothing
            self.sp_t3_after_sack(advanced or bool(newly))
            self._sp_arm_recovery_timer()
            if self.on_progress is not None:
                self.on_progress()

        def _sp_declare_lost(self, now: float, lost: Any) -> None:
            if not lost:
                return
            by_tsn = self._sp_by_tsn
            out = []
            for tsn in lost:
                c = by_tsn.get(tsn)
                if c is None or c.sp_acked or self.sp_wants_resend(c):
                    continue       # acked meanwhile, or already waiting to be resent (T3)
                if self.sp_declare_lost(c):
                    self._sp_rtx.append(c)
                    self.sp_fast_retransmits += 1
                out.append(tsn)
            if out:
                self._sp_cc.on_lost(now, out, self.sp_flight_size)
                if len(self._sp_rtx) > 1 and len(out) > 1:
                    self._sp_rtx = deque(sorted(self._sp_rtx, key=lambda c: c.sp_sent_at))

        # ---- hooks: timers -----------------------------------------------------------------
        def _sp_arm_recovery_timer(self) -> None:
            when = self._sp_rack.get_timer()
            h = self._sp_rack_handle
            if h is not None:
                if when is not None and h.when() < when + 1e-4 and not self.sp_nothing_outstanding:
                    # lazy: the armed timer fires no later than needed; RACK's handle_timer is a
                    # no-op before its deadline and _sp_on_recovery_timer then re-arms (moving
                    # the deadline on every SACK cost a cancelled TimerHandle per SACK)
                    return
                h.cancel()
                self._sp_rack_handle = None
            if when is not None and not self.sp_nothing_outstanding:
                self._sp_rack_handle = self.sp_loop.call_at(when, self._sp_on_recovery_timer)

        def _sp_on_recovery_timer(self) -> None:
            self._sp_rack_handle = None
            if self.state == "closed":
                return
            now = self.sp_loop.time()
            lost, send_tlp = self._sp_rack.handle_timer(now)
            self._sp_declare_lost(now, lost)
            if lost:
                self.sp_advance_peer_ack_point()   # a lost datagram is abandoned: FORWARD TSN
            if send_tlp:
                # the probe: new data if there is some (it may reveal the tail's loss by its
                # ack), else the most recently sent outstanding chunk again
                queue = self._sp_next_queue()
                if queue:
                    self._sp_probe = queue[0]
                else:
                    seq = self._sp_rack.probe_candidate()
                    c = self._sp_by_tsn.get(seq) if seq is not None else None
                    if c is None or not self.sp_outstanding(c):
                        c = next((self._sp_by_tsn[t] for t in reversed(self._sp_by_tsn)
                                  if self.sp_outstanding(self._sp_by_tsn[t])), None)
                    self._sp_probe = c
            if lost or send_tlp:
                self._sp_kick()
            else:
                self._sp_arm_recovery_timer()

        def sp_on_t3(self) -> None:
            t = self._sp_tuning
            now = self.sp_loop.time()
            due = max(self.sp_t3_since + self.sp_rto, self._sp_t3_not_before)
            rack = self._sp_rack
            pending = rack.get_timer() if self._sp_rack_handle is not None else None
            if pending is not None and pending > now and getattr(rack, "probes_in_a_row", 0) == 0:
                # RACK will declare a loss or send the first tail-loss probe before T3 would:
                # T3 (which resends the whole flight and collapses cwnd) waits until that
                # probe had an RTO to be answered (RTO >= PTO, RFC 8985 7.3)
                due = max(due, pending + self.sp_rto)
            rest = due - now
            if rest > 0.001:
                # armed with a smaller RTO than the current one (the RTT grew meanwhile, e.g. a
                # queue building), or a probe goes first: not a timeout yet
                self.sp_t3_rearm(rest)
                return
            if not any(self.sp_outstanding(c) for c in self._sp_by_tsn.values()):
                # only chunks with a reserved TSN wait, none sent: nothing timed out (T3 is
                # started again when one leaves)
                self._sp_kick()
                return
            self.sp_t3_expiries += 1
            self.sp_t3_consecutive += 1
            self.sp_rto = min(self.sp_rto * t.backoff, t.rto_max)  # before the resend restarts T3
            marked = self.sp_t3_mark(t.t3_skip_gap_acked)
            if not t.t3_skip_gap_acked:
                for c in marked:
                    c.sp_acked = False
            self._sp_rtx = deque(marked)
            self._sp_probe = None
            now = self.sp_loop.time()
            self._sp_cc.on_timeout(now)
            self._sp_rack.on_timeout(now)
            pmtu = self._sp_pmtu
            if pmtu is not None:
                size = pmtu.packet_size
                if pmtu.on_black_hole(now, self.sp_t3_consecutive):
                    self.sp_max_chunk = pmtu.chunk_payload
                    logger.info("sctp: %d timeouts in a row with %d-byte packets: back to %d until "
                                "a new path MTU search", self.sp_t3_consecutive, size, pmtu.packet_size)
                    self._sp_arm_pmtu_timer()
            self._sp_kick()
            if self.sp_t3_consecutive >= t.max_retrans and not self.sp_dead:
                self.sp_dead = True
                logger.info("sctp: %d consecutive T3 expiries, declaring the association dead",
                            self.sp_t3_consecutive)
                if self.on_dead is not None:
                    self.on_dead()

        def sp_on_t1(self) -> None:
            # INIT / COOKIE-ECHO lost: back off before aiortc re-arms T1 with the RTO
            self.sp_rto = min(self.sp_rto * self._sp_tuning.backoff, self._sp_tuning.rto_max)

        def sp_rto_clamp(self, srtt: float, rttvar: float) -> float:
            # RFC 6298's SRTT + 4 RTTVAR is barely above the RTT on a steady path; T3 must not
            # race the tail-loss probe (~1.3 SRTT + ack delay after the last send) or RACK (which
            # needs an ack ~1 RTT after the probe): at least 3 SRTT + ack delay. sp_on_t3 also
            # holds T3 back while the first probe is due.
            t = self._sp_tuning
            rto = max(srtt + 4 * rttvar, 3 * srtt) + t.ack_delay
            return max(t.rto_min, min(rto, t.rto_max))

        # ---- path MTU search (pmtu.py) ----------------------------------------------------------
        def sp_on_established(self) -> None:
            if self._sp_pmtu is not None:
                self._sp_pmtu_send(self._sp_pmtu.start(self.sp_loop.time(), self.sp_srtt))

        def sp_limit_packet(self, max_packet: int) -> None:
            """Never send SCTP packets above ``max_packet`` bytes (pmtu.PmtuSearch.limit):
            messages queued from now on are cut to fit."""
            if self._sp_pmtu is not None and self._sp_pmtu.limit(max_packet):
                self.sp_max_chunk = self._sp_pmtu.chunk_payload

        def sp_on_heartbeat_ack(self, info: bytes) -> None:
            pmtu = self._sp_pmtu
            if pmtu is None:
                return
            if pmtu.on_ack(self.sp_loop.time(), info):
                self.sp_max_chunk = pmtu.chunk_payload
                logger.debug("sctp: path carries %d-byte SCTP packets: %d user bytes a chunk",
                             pmtu.packet_size, self.sp_max_chunk)
            self._sp_arm_pmtu_timer()

        def _sp_on_pmtu_timer(self) -> None:
            self._sp_pmtu_handle = None
            if self.state == "closed" or self._sp_pmtu is None:
                return
            self._sp_pmtu_send(self._sp_pmtu.on_timer(self.sp_loop.time(), self.sp_srtt))

        def _sp_pmtu_send(self, probes: list) -> None:
            if probes:
                asyncio.ensure_future(self._sp_send_probes(probes))
            self._sp_arm_pmtu_timer()

        async def _sp_send_probes(self, probes: list) -> None:
            for p in probes:
                if self.state == "closed":
                    return
                await self.sp_send_heartbeat(p.info)

        def _sp_arm_pmtu_timer(self) -> None:
            h = self._sp_pmtu_handle
            if h is not None:
                h.cancel()
                self._sp_pmtu_handle = None
            when = self._sp_pmtu.timer() if self._sp_pmtu is not None else None
            if when is not None and self.state != "closed":
                self._sp_pmtu_handle = self.sp_loop.call_at(when, self._sp_on_pmtu_timer)

        # ---- hooks: our receiver -----------------------------------------------------------
        def sp_on_packet(self) -> None:
            self.sp_last_rx = time.monotonic()

        def sp_sack_now(self, gap: bool) -> bool:
            self._sp_rx_packets += 1
            t = self._sp_tuning
            if gap or self._sp_rx_packets >= t.ack_every or t.ack_delay <= 0:
                self._sp_rx_packets = 0
                self._sp_sack_due = None   # the timer, if armed, finds nothing owed and stops
                return True
            if self._sp_sack_due is None:
                due = self._sp_sack_due = self.sp_loop.time() + t.ack_delay
                h = self._sp_sack_handle
                if h is None or h.when() > due:
                    if h is not None:
                        h.cancel()
                    self._sp_sack_handle = self.sp_loop.call_at(due, self._sp_delayed_sack)
            return False

        def _sp_delayed_sack(self) -> None:
            # one timer serves many delayed SACKs (one per pair of packets cost a TimerHandle
            # per SACK): it fires at the earliest owed deadline and re-arms for a later one
            self._sp_sack_handle = None
            due = self._sp_sack_due
            if due is None:
                return
            now = self.sp_loop.time()
            if due > now + 1e-4:
                self._sp_sack_handle = self.sp_loop.call_at(due, self._sp_delayed_sack)
                return
            self._sp_sack_due = None
            self._sp_rx_packets = 0
            asyncio.ensure_future(self.sp_send_owed_sack())

        def sp_on_flushed(self) -> None:
            if self.on_progress is not None:
                self.on_progress()

        # ---- closing -----------------------------------------------------------------------
        def _sp_cancel_timers(self) -> None:
            for name in ("_sp_pace_handle", "_sp_rack_handle", "_sp_sack_handle", "_sp_pmtu_handle"):
                h = getattr(self, name)
                if h is not None:
                    h.cancel()
                    setattr(self, name, None)

        async def stop(self) -> None:
            self._sp_cancel_timers()
            await super().stop()

    return TunedSctpTransport
