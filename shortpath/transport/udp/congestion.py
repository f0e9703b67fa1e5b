"""A model-based, loss-tolerant congestion controller and a pacer (pure, sans-I/O).

Nothing here reads a clock, sleeps or touches a socket: every method takes ``now`` (seconds, any
monotonic origin) and the events the sender saw. Units are seconds, bytes and bytes per second.
The asyncio SCTP sender (``sctp.py`` through ``_aiortc_compat.py``) feeds it and obeys
:attr:`BbrController.cwnd` and :attr:`BbrController.pacing_rate`, the latter through a
:class:`Pacer`.

Why not NewReno (aiortc's own)
------------------------------
A loss-based controller reads every lost packet as "the queue is full": it halves its window.
On a link that drops 1-2 % of packets at random, independently of how fast we send, that keeps
the window near the Mathis bound (about ``1.2 * MSS / (RTT * sqrt(p))``: 2-3 Mbit/s at 40 ms and
1-2 %), whatever the link could carry. The controller below instead keeps an explicit *model* of
the path and sends at the rate the model says the path delivers.

The model
---------
* **Bottleneck bandwidth** ``max_bw``: the highest *delivery rate* measured over the last two
  probe cycles. A delivery rate sample is "bytes the receiver acknowledged between the send of a
  packet and its ack, divided by the time that took" (each packet carries a snapshot of the
  connection's delivery counters taken when it was sent; see :meth:`BbrController.on_sent`).
  A maximum, because queues and ack bunching only ever make a sample *lower* than the
  bottleneck, never higher. Samples taken while the application had nothing to send are marked
  *app-limited*: they may raise the estimate but never lower it (they measure the application,
  not the path).
* **Minimum RTT** ``min_rtt``: the lowest RTT seen in the last 10 s, i.e. the propagation delay
  without our own queue. ``BDP = bw * min_rtt`` is what the path holds with no queue.
* **Lower bounds** ``bw_lo`` / ``inflight_lo``: short-term caps applied when loss well above
  the random background shows up while we are *not* probing. They never go below what was
  actually delivered in the last round, so where delivery keeps up with sending they cost
  nothing; after a rate drop into a shallow buffer (delivery falls behind sending, the buffer
  overflows) they pull the rate down within a round or two. They are cleared each time we start
  a new bandwidth probe.
* **Upper bound** ``inflight_hi``: the amount in flight at which our *own* probing made the loss
  rate jump (a shallow buffer overflowing). Later probes creep up to it carefully instead of
  overshooting again.

How loss is judged ("loss that rises with our own rate")
--------------------------------------------------------
We keep a slow moving average of the loss rate of packets sent while *not* probing (cruising at
the model's rate), taken only from rounds that saw no queue (their smallest RTT within
``max(2 ms, 10 %)`` of min_rtt): that is the link's background, random loss; loss while a queue
stands is a full buffer's doing and must not teach us to ignore it. Loss counts as congestion only
when, over one flight (the packets in flight when a lost packet was sent), the number of lost
packets exceeds the background expectation by ``LOSS_THRESH`` (2 %) of the flight *and* by two
standard deviations of the binomial noise, plus one packet. At 0 % background one flight of 40
packets with 2 lost already counts; at 5 % background the same flight needs 7 lost
(binomial tail < 0.5 %), so 1-5 % random loss is not mistaken for a full queue, while a
tail-drop overflow (a burst of losses exactly when we push harder) is. 2 % is BBRv2's choice of
acceptable loss while probing: low enough that a flow never causes sustained heavy loss for
others, high enough to tolerate a little.

States (``state``)
------------------
``startup``     pacing gain 2.77, cwnd gain 2: doubles the delivery rate every round until the
                bandwidth estimate stops growing by 25 % for 3 rounds in a row, or a round loses
                more than 10 % (and at least 6 packets: far above the 5 % random loss we want
                to survive, so only an overflow stops startup early) once a round carries
                two initial windows (a first window lost in a buffer someone else keeps full
                says nothing about how much we may send).
``drain``       pacing gain 0.35: empties the queue startup built, until inflight <= BDP (or
                ``DRAIN_MAX_ROUNDS`` rounds: a caller's cwnd floor can keep it above).
``probe_bw``    the steady state, a cycle of four phases (``phase``):
                ``down``   pacing 0.9 until inflight <= BDP (at least one min_rtt): leaves no
                           queue behind a probe;
                ``cruise`` pacing 1.0 for ``CRUISE_ROUNDS`` rounds with a little headroom
                           below inflight_hi: uses the path without building a queue;
                ``refill`` pacing 1.0 for one round with the lower bounds cleared: fills the
                           pipe so the probe measures bandwidth, not our own restraint;
                ``up``     pacing 1.25 until inflight reaches 1.25 x BDP (at least one min_rtt),
                           the loss test above fires or a whole round was app-limited; while capped by inflight_hi, the cap
                           grows by 1, 2, 4... packets per round.
``probe_rtt``   entered when min_rtt has not been refreshed for 5 s: cwnd drops to half a BDP
                (at least 4 packets) for 200 ms and one round, so the queue empties and a true
                min_rtt can be seen. Costs ~2 % of throughput. The 200 ms start when the
                flight has fallen to that cwnd, or after 200 ms at the latest (a caller with
                a cwnd floor of its own never gets there).

Congestion responses
--------------------
* Queue growth: if the smallest RTT of ``QUEUE_ROUNDS`` (2) consecutive non-probing rounds stays
  above ``min_rtt * 1.25 + 2 ms`` (a queue that our own pacing at gain <= 1 cannot explain),
  the cycle goes to ``down`` to drain our share of it. If, in addition, what those rounds
  delivered is below ``QUEUE_SHORTFALL`` (60 %) of ``max_bw``, the rate fell under us (a rate
  drop into a deep buffer, where no loss says so): the bandwidth filter forgets the previous
  cycle at once instead of a cycle later (at most once per cycle). We deliberately do *not* cut
  the model on delay alone: a flow sharing a deep buffer with a loss-based flow (TCP CUBIC or
  NewReno) sees a standing queue all the time, and a delay-driven cut hands that flow the
  whole link (measured with the two-flow link model: an earlier version that set ``bw_lo`` to
  the delivered rate on each queue signal got 4-8 % of the link against NewReno).
* Congestion loss (the test above) while not probing: ``bw_lo`` and ``inflight_lo`` are cut to
  ``max(latest delivered, 0.7 x previous)`` each round that shows it.
* Congestion loss while probing: ``inflight_hi`` is set to the flight that caused it and the
  probe ends (``down``) -- unless that flight was app-limited or smaller than a BDP: a short
  flight cannot have overflowed a queue of ours (BBRv3 likewise ignores app-limited samples).
* A foreign queue in a shallow buffer (a loss-based flow sharing it; see COMPETITOR_WEIGHT):
  when most cruise rounds show RTT samples above min_rtt that our own pacing cannot explain,
  and our probes have already met a full buffer (inflight_hi set), we cruise for a BDP's worth
  of rounds between probes, keep 30 % headroom under inflight_hi, pace no faster than that
  window allows at the RTT we get (so a caller's cwnd floor cannot undo it) and cut
  inflight_hi to 0.9 of the overflowing flight on each repeated probe loss: the other flow
  gets room to grow. The signal has hysteresis (on at 0.25, off under 0.1), so a loss-based
  flow that pauses for a timeout does not switch it off.
* A foreign queue in a deep buffer (a loss-based flow keeps it full, the RTT floor stays several
  min_rtts up; see COEXIST_ENTRY_ROUNDS): after the competitor signal, 10 rounds and 2 s of a
  floor above ``2 x min_rtt`` that our own flight cannot explain, cwnd and the probe phases are
  sized on the recent RTT floor instead of min_rtt (``coexist`` in :meth:`stats`): pacing is
  unchanged, so we add no queue, but we are no longer cwnd-limited behind the other flow's. Under
  inflight_hi/inflight_lo as always; min_rtt is held meanwhile; the cruise is 2 rounds. It ends
  on the first round whose floor is back near min_rtt.
* An app-limited overflow (a frame train that overflowed a buffer far slower than the model:
  loss above the test *and* a standing queue in an app-limited round): the max filter is capped
  at the best sample of that round (at least a quarter of the model); while the flow stays
  app-limited it regrows by 1.25x per cycle once 3 s pass without another (see
  APP_OVERFLOW_BETA). An app-limited "up" round also ends the probe: the application cannot
  fill 1.25 BDP, there is nothing to learn.
* Retransmission timeout (T3): cwnd drops to the floor until a packet sent after the timeout is
  acknowledged, then returns to its previous value (a dead path gets probed gently; a T3 that
  merely repaired a lost tail costs nothing); the model itself is kept.

Route changes
-------------
min_rtt is a minimum over 10 s, so a longer route would otherwise be seen only when it expires,
and meanwhile a cwnd sized on the old RTT throttles the flow. Two tests suspect a new route at
a round's end: every RTT sample of 4 rounds above 4x what min_rtt plus our own possible queue
explains (a LAN -> WAN switch), or a flat step of the RTT above 2x min_rtt, right after a round
without one, for 6 rounds (9 -> 40 ms; STEP_PATH_CHANGE). Either starts a PROBE_RTT at the floor
window (PATH_CHECK): if the RTT stays up with our queue drained, it is min_rtt on a new path and
the bounds learnt in bytes on the old one go; if it falls, it was our own queue after a rate
drop, and the rate those rounds delivered replaces the model.

Delay jitter
------------
When the path's own delay varies (see JITTER_ROUNDS: the round minima wander far above the
all-time min_rtt and move from round to round, as no queue does), the all-time min_rtt is one
lucky sample: cwnd is then sized on the typical recent RTT, the queue tests measure from the
recent RTT floor, and the flight caps learnt from loss (inflight_hi, inflight_lo) and the
delay-driven aging of the model are off, because a flight or an RTT there says how long the
wire was at that moment, not how full a buffer is. Rate responses (bw_lo, the probe's end) stay.

cwnd and pacing rate
--------------------
``pacing_rate = gain * min(max_bw, bw_lo) * 0.99`` (1 % under the estimate so that, at gain 1,
no queue builds), never below 4 packets per min_rtt; in startup never below
``gain * initial window / min_rtt``.
Before the first ack the RTT is unknown and the initial window is paced as if it were 10 ms. ``cwnd = 2 * BDP`` (room for delayed and
bunched acks; while coexisting in a deep foreign queue the BDP is taken at the recent RTT floor),
bounded by inflight_hi (with 15 % headroom while cruising), inflight_lo and
probe_rtt's cap, and never below ``MIN_CWND_PACKETS`` (4) packets so the sender never stalls.

References we learned from (no code taken): the BBR Internet-Drafts (draft-cardwell-iccrg-bbr,
draft-ietf-ccwg-bbr), the Linux tcp_bbr.c header comment, s2n-quic's and quiche's BBR modules,
aioquic's congestion package (its pure controller interface).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

# ---- constants (why each value is what it is) ------------------------------------------------

#: Startup pacing gain: the current BBR draft's 4 ln 2 (~2.77), the smallest gain its analysis
#: found that still doubles the delivery rate every round (BBRv1 used 2/ln 2 ~ 2.89).
STARTUP_PACING_GAIN = 2.77
#: Startup cwnd gain: two BDPs leave room for the rate to double while acks are in flight.
STARTUP_CWND_GAIN = 2.0
#: Drain pacing gain: empties startup's queue (at most ~1.77 BDP) in about one round.
DRAIN_PACING_GAIN = 0.35
#: ... but drain ends after this many rounds even if inflight is still above the BDP: a caller
#: that keeps a cwnd floor of its own (sctp.py's 48 KiB) above a small BDP never lets inflight
#: fall that far. Lab (the fairness benchmark, min_rtt still the LAN's 0.8 ms on a 40 ms path):
#: the sender stayed in drain for 4-5 s, paced at the 4-packets-per-min_rtt floor, 8.0-8.4
#: Mbit/s of a 10 Mbit/s link. ``down`` (pacing 0.9, at most 3 rounds) drains what is left.
DRAIN_MAX_ROUNDS = 4
#: Probe-bw pacing gains per phase: probe 25 % above the model (enough to see a bandwidth
#: increase within a few cycles, small enough that the queue it builds is a quarter BDP), then
#: 10 % below it to drain that quarter-BDP queue in ~2.5 rounds.
UP_PACING_GAIN = 1.25
DOWN_PACING_GAIN = 0.9
CRUISE_PACING_GAIN = 1.0
#: cwnd gain in steady state: one BDP in the pipe plus one BDP of slack for acks that arrive
#: late or in bunches (delayed SACKs, an asyncio loop that handles many datagrams at once).
CWND_GAIN = 2.0
#: The rate is set 1 % below the estimate so that a sender exactly at gain 1 does not creep a
#: queue up because of rounding or a slightly optimistic sample.
PACING_MARGIN = 0.01
#: Cruise rounds per probe cycle. With down + refill + up the cycle is ~9 rounds, as BBRv1's
#: eight-phase cycle: frequent enough to find new bandwidth within a second at 40 ms RTT, rare
#: enough that the quarter-BDP probe queue is present only ~1/9 of the time.
CRUISE_ROUNDS = 6
#: Startup ends when three rounds in a row fail to grow the bandwidth estimate by 25 % (a
#: doubling flow that grows less than that has found the bottleneck; three rounds ride out
#: a round of ack noise).
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
#: Startup also ends on a round losing more than this fraction (and at least the count below):
#: far above the random loss rates we want to tolerate (<= 5 %), so only a buffer overflow does it.
STARTUP_LOSS_THRESH = 0.10
STARTUP_MIN_LOST_PACKETS = 6
#: ... and only once a round carried at least this many initial windows: the first round or two
#: of a flow that joins a buffer another flow keeps full (a TCP flow in its own slow start, or
#: a loss-based flow at the top of its sawtooth) can lose most of its few packets at once. That
#: says the buffer was full when we came, not that we overfilled it, and exiting startup there
#: left cwnd capped (inflight_hi) at a few packets: link model, joining a CUBIC-like flow 1 s
#: into its run in a 200 KB buffer, 0.08 of its rate over the next 20 s.
STARTUP_MIN_LOSS_FLIGHT = 2
#: Excess loss (above the random background) tolerated while probing, as a fraction of a flight.
LOSS_THRESH = 0.02
#: Multiplicative cut of the lower bounds per round that shows congestion loss (BBRv2's beta):
#: gentler than NewReno's 0.5 because the cut is floored by what was delivered anyway.
BETA = 0.7
#: Headroom under inflight_hi while cruising, so that a new flow sharing the bottleneck finds
#: some free buffer (BBRv2's value).
HEADROOM = 0.15
#: Background loss estimate: an exponential average over packets sent while not probing, weight
#: 1/1000 per packet (a memory of ~1000 packets: a second or so at 10 Mbit/s, long enough to be
#: stable, short enough to follow a link that gets worse). Capped: beyond 10 % of random loss we
#: stop pretending it is benign.
BACKGROUND_LOSS_WEIGHT = 1.0 / 1000
BACKGROUND_LOSS_MAX = 0.10
#: ... and only from rounds whose smallest RTT is within this margin of min_rtt (no queue): a
#: loss that happens while a queue stands is a full buffer's doing (ours or another flow's).
#: The margin covers a packet or two of our own pacing bursts and a Python sender's jitter.
BACKGROUND_RTT_MARGIN = 0.002
BACKGROUND_RTT_FRACTION = 0.1
#: Persistent-queue test: rounds whose smallest RTT exceeds min_rtt by this factor plus an
#: absolute margin (timer and scheduling jitter of a Python sender), this many rounds in a row.
QUEUE_RTT_FACTOR = 1.25
QUEUE_RTT_MARGIN = 0.002
QUEUE_ROUNDS = 2
#: A standing queue ages the bandwidth filter early only when the best delivery rate of those
#: rounds is below this fraction of the model: the path lost 40 % or more of its rate at once
#: (a competitor usually takes its share gradually, and then the normal two-cycle memory
#: applies). Lower values react to fewer rate drops; higher ones yield more to loss-based flows.
QUEUE_SHORTFALL = 0.6
#: min_rtt is the minimum over this window; older minima are forgotten (the route may change).
MIN_RTT_WINDOW = 10.0
#: Path change: when every RTT sample of this many consecutive rounds exceeds
#: ``PATH_RTT_FACTOR x (min_rtt + our own possible queue) + PATH_RTT_MARGIN``, the path's delay
#: grew (a new route, an emulator's profile change, a radio handover): after a drain that
#: confirms it (PATH_CHECK), the new RTT becomes min_rtt instead of after MIN_RTT_WINDOW. "Our own possible queue" is
#: what the packet had ahead of it at most if we were alone: the flight at its send divided by
#: the bandwidth estimate, so our own standing queue never counts as a path change (no feedback
#: of a larger cwnd into a larger min_rtt). Without it a session measured on a 0.35 ms LAN and
#: then moved to 40 ms kept a 0.35 ms BDP (cwnd at the floor, a quarter of the rate) for 10 s.
#: Factor 4: a loss-based competitor would have to keep three extra min_rtts of queue, without
#: a single drained moment, for four rounds; we then merely size cwnd for that RTT (as BBR does
#: 10 s later anyway), and the first lower sample brings min_rtt back down.
PATH_RTT_FACTOR = 4.0
PATH_RTT_MARGIN = 0.005
PATH_CHANGE_ROUNDS = 4
#: (PATH_CHECK) Neither this test nor the step test below adopts a new RTT at once: each
#: starts a PROBE_RTT whose window is the floor (``min_cwnd``: all of our queue drains), and
#: only if the smallest RTT of packets sent in it still stands above ``CWND_GAIN x min_rtt +
#: PATH_RTT_MARGIN`` is it min_rtt on a new path. Why: our own queue after a large rate drop
#: passes the 4x test (the stale bandwidth estimate counts 1 MiB in flight at 10 Mbit/s as
#: 80 ms, not 800). Link model, 100 -> 10 Mbit/s at 40 ms with a 2 MB buffer: adopted at
#: once, the 800 ms RTT became min_rtt and cwnd kept that queue standing for good (queue p50
#: 795 ms from 2 to 10 s after the drop). Drained, the RTT is 40 ms again: min_rtt stays, and
#: as the inflated rounds were kept from the queue test (they might have been a new path),
#: their delivery rate, if far below the model (QUEUE_SHORTFALL), replaces it (queue p50
#: 4 ms from 2 s after the drop; the model at 10 Mbit/s 5 s after it, where the slow aging
#: of a cycle took 8 s). The check is one round of packets sent at the floor window, with no
#: 200 ms hold and no wait for the drain: those packets leave only as our flight drains, so
#: they see no queue of ours. Its cost for a real change, link model, LAN -> 40 ms: 86-88 % of
#: the link in the 2 s after the switch, against 88-90 % adopted at once (71-73 % with the
#: usual PROBE_RTT's drain wait and 200 ms); lab, frames after the clean -> 40 ms switch on
#: udp-managed, 3 runs each: 135 of 135 shown either way, p95 27.5-28.8 against 27.1-29.3 ms
#: (2 skipped in every run with the usual PROBE_RTT).
#: (STEP_PATH_CHANGE) A moderate route change (the RTT grows 2-4x: 9 -> 40 ms, Wi-Fi to LTE, a
#: VPN switched on) passes under the 4x test above, and min_rtt then stays the old path's for
#: MIN_RTT_WINDOW or longer. A cwnd of ``CWND_GAIN x bw x old min_rtt`` cannot cover the new
#: RTT, the window-limited rate samples age the model down round after round (lab, a clean ->
#: 40 ms switch that left min_rtt at 8.8 ms: 247 -> 92 -> 41 -> 18 Mbit/s in 1.3 s), and the
#: RTT standing above min_rtt then reads as a competitor's queue: coexistence, which holds
#: min_rtt for as long as that "queue" stands, i.e. for good. Link model, bulk at 100-200
#: Mbit/s, 9 -> 40, 6 -> 34 and 10 -> 40 ms: 14-22 % of the link for 2 s, ~70 % for 4 s more,
#: min_rtt never updated.
#: The step test: STEP_ROUNDS consecutive rounds in which every RTT sample stands above
#: ``CWND_GAIN x min_rtt + our own possible queue + PATH_RTT_MARGIN`` (our usual window could
#: not have caused it; "own queue" here is the flight at send beyond a BDP, over the bandwidth
#: estimate), whose minima are flat (within STEP_FLAT_MARGIN or STEP_FLAT_FRACTION of each
#: other), the first of them at least STEP_JUMP_FRACTION (and PATH_RTT_MARGIN) above the
#: round before, which saw no such RTT. That is the shape of a route change: a step, flat from
#: its first round. A loss-based competitor builds its queue over several rounds (a ramp that
#: crosses the threshold by a little, or a slow start whose rounds keep rising) and is left
#: to the coexistence logic (link model, NewReno filling a 250 KB buffer: without the jump
#: condition its slow ramp passed as a step); under delay jitter or while coexisting the test
#: does not run.
#: A step is then checked by draining (PATH_CHECK). A rate drop, whose standing queue is our
#: own (the stale bandwidth estimate under-counts it), drains in that probe and is not taken
#: for a new path (link model, 100 -> 20 Mbit/s at 10 ms: one check, min_rtt kept).
STEP_ROUNDS = 6
STEP_FLAT_MARGIN = 0.002
STEP_FLAT_FRACTION = 0.1
STEP_JUMP_FRACTION = 0.5
#: probe_rtt: when no RTT sample matched the minimum for this long, drain for a fresh one.
PROBE_RTT_INTERVAL = 5.0
#: (PROBE_RTT_AGING) Rate samples limited by a window we know is not the path's are treated
#: like app-limited ones (they may raise the model, never lower it or age it): those of packets
#: sent in PROBE_RTT (its cap), and, at a path change, those of packets still in flight or whose
#: sampling interval began before it (the old RTT's window); the window also jumps to the kept
#: model at the new RTT at once instead of growing by the bytes acked. Why: an app-limited
#: sender (a frame stream) fills the pipe only when such a window squeezes it, so those were
#: the only samples that could age its max filter, and they measure the window. Lab, the
#: clean -> 40 ms profile switch on udp-managed: the frame sender's model fell from 82-93 to
#: 10-16 Mbit/s (once at the path change, once at the first PROBE_RTT exit), frames were paced
#: at that: 319-349 of 375 shown, p50 30-39 ms, against 375 and 25 ms where it did not happen.
#: Link model, frames after bulk, seeds 1-3: RTT 0.4 -> 40 ms (path change): model 10-12 Mbit/s,
#: 271-279 frames, p50 37-38 ms before; 200 Mbit/s kept, 299 frames, p50 22 ms after. RTT
#: 6 -> 34 ms at 100 Mbit/s (no path change, PROBE_RTT every 5 s), seeds 1-2: 10-11 Mbit/s,
#: 342-346 frames, p50 31-32 ms before; seed 1 keeps 100 Mbit/s after (358 frames, 20 ms), seed
#: 2 still falls: the cwnd sized on the stale 6 ms min_rtt (~150 KB) limits two overlapping
#: frames on the 34 ms path. Curing that needed a faster min_rtt update after a moderate route
#: change (the path-change test wants 4x): the step test (STEP_PATH_CHANGE) now finds this one.
PROBE_RTT_DURATION = 0.2
#: (EXPIRED_PATH_CHANGE) When the MIN_RTT_WINDOW expiry replaces min_rtt by one at least
#: PATH_RTT_FACTOR x larger, that is a route change the in-flight test missed, handled like
#: one: the bounds learnt in bytes on the old path (inflight_hi, inflight_lo, bw_lo) go. The
#: in-flight test misses a change whenever our own possible queue could explain the new RTT,
#: as under sctp.py's 48 KiB cwnd floor at 10 Mbit/s (48 KiB is ~40 ms there). Lab (the
#: fairness benchmark: the session measured 0.8 ms on the LAN, then the 40 ms / 10 Mbit/s
#: shallow bottleneck): startup's loss exit set inflight_hi at a 0.8 ms BDP (4.6 KB); the floors
#: kept the flow at the link rate until min_rtt expired to 40 ms, and then the shallow-buffer
#: pacing cap (inflight_hi / RTT) fell to 0.9 Mbit/s: 2 s of data stood in the sender and the
#: session failed over to the relay (1 run in 4-6 of that benchmark).
#: probe_rtt waits for the flight to fall to its cwnd before it starts timing; a caller that
#: keeps a cwnd floor of its own above that (sctp.py keeps 48 KiB) never gets there. So the wait
#: ends after this long in any case: the flight is then as small as the caller lets it be. Before
#: this, the lab's sender stayed in probe_rtt for good behind a deep foreign queue (cwnd half a
#: BDP, 48 KiB in flight at ~200 ms RTT: 2 Mbit/s against TCP CUBIC's 7.5).
PROBE_RTT_DRAIN_TIMEOUT = 0.2
PROBE_RTT_CWND_GAIN = 0.5
#: The floor on cwnd in packets: with fewer than 4 packets in flight, one loss plus delayed
#: acks can leave nothing to clock the next ack; 4 keeps the ack clock (and RACK) running.
MIN_CWND_PACKETS = 4
#: Before any RTT sample, pace the initial window as if the RTT were this long (a guess for the
#: first round only; a too-small guess merely means the first window is sent as a burst).
INITIAL_RTT_GUESS = 0.01
#: Upper bound on how many rounds one "up" phase may last (a safety net if the loss and inflight
#: tests never end it, e.g. an app-limited sender that never fills 1.25 BDP).
MAX_UP_ROUNDS = 8
#: Sharing a shallow buffer with a loss-based flow (TCP CUBIC/NewReno). Such a flow's unpaced
#: bursts lose 3-5 % of its packets in a buffer we keep partly full, while our paced flow loses
#: ~1 %, under LOSS_THRESH: on loss alone we never yield (link model, 12 KB buffer: 0.81 / 0.17
#: of the link). The sign of it is a *foreign* queue: while we cruise (gain 1, under the
#: headroom) our own pacing queues nothing, so a cruise round whose largest RTT sample stands
#: above min_rtt by the background margin saw somebody else's queue. ``competitor`` is a
#: moving share of such rounds (weight 1/8 per cruise round); at or above COMPETITOR_THRESH,
#: and only where our own probes have already met a full buffer (inflight_hi set: a shallow
#: buffer), we make room as BBRv3 does for Reno: cruise for a BDP's worth of rounds (the time
#: Reno needs to grow a BDP, capped at COEXIST_MAX_ROUNDS) instead of CRUISE_ROUNDS, keep
#: COMPETING_HEADROOM under inflight_hi instead of HEADROOM, and set inflight_hi to
#: PROBE_HI_BETA of the overflowing flight on a repeated probe loss. Alone on a clean, lossy or
#: shallow path the share stays near 0 (largest RTT within 1 ms of min_rtt in 90 % of cruise
#: rounds, link model, 1-5 % loss, ack-every-2), so none of this applies there. Measured with
#: the two-flow link model (ours / NewReno, 30-90 s): 12 KB 4.84 -> 2.96, 25 KB 1.08 -> 0.73;
#: long cruise alone 3.8, headroom alone ~4.9 (both are needed).
#: Once on, the responses stay on until the share falls under COMPETITOR_EXIT_THRESH
#: (hysteresis): in a 12 KB buffer the loss-based flow is often silent for a whole T3 (1 s)
#: after a burst loss, the share then sank under 0.25 within ~10 cruise rounds, we took the
#: whole link back with six-round cycles and 15 % headroom, and the other flow came back to
#: a buffer we kept full (share ~3.4 against the CUBIC-like reference; 1.1-1.8 with this).
#: From 1.0 the share needs ~17 foreign-free cruise rounds (0.7-0.8 s) to fall under 0.1: a
#: loss-based flow that left is noticed ~0.4 s later than before. A lone flow's share stays
#: low but can cross 0.25 now and then (its own probe queues); an exit threshold of 0.05 kept
#: it on long enough to cost a lone flow 0.5-2 % (1-5 % loss, 12 KB buffer), 0.1 costs
#: <= 1.3 % there (test_coexistence_mode_costs_a_lone_flow_nothing bounds it at 3 %).
COMPETITOR_WEIGHT = 1.0 / 8
COMPETITOR_THRESH = 0.25
COMPETITOR_EXIT_THRESH = 0.1
COMPETING_HEADROOM = 0.3
COEXIST_MAX_ROUNDS = 63
PROBE_HI_BETA = 0.9
# The competing pacing cap: while those responses are on, the pacing rate in down and cruise
# is also capped at the rate the capped window allows, ``inflight_hi * (1 - COMPETING_HEADROOM)``
# (and inflight_lo) over the recent RTT floor (see COEXIST_RTT_ROUNDS; never under min_rtt).
# The window alone did not hold in the lab: sctp.py floors cwnd at 48 KiB, about the whole
# BDP at 10 Mbit/s and 40 ms, so the capped window (~40 KB) never bound and we kept ~48 KiB
# in flight at the max filter's rate (lab, 15 ms queue, against TCP CUBIC: 3.0-3.4 x its
# rate; link model with that floor, SACK every 4th packet and a 9 KB pacing burst: 2.8-2.9).
# A caller's floor cannot undo a pacing rate. Alone, or in a deep foreign queue, nothing
# changes (the responses are off there).

#: Sharing a *deep* buffer with a loss-based flow. Such a flow keeps the buffer it shares with
#: us full (a CUBIC cut leaves 0.7 of its window: in a 200 ms buffer the queue never drains),
#: so every packet of ours waits behind it and the RTT is several times min_rtt. A cwnd of
#: ``CWND_GAIN * bw * min_rtt`` then caps our delivery rate at ``2 * bw * min_rtt / RTT``
#: (a third of the model at RTT = 6 min_rtt), the samples that cap allows lower the model, and
#: the model lowers the cap again: link model, 250 KB buffer, 0.09-0.14 of the link for the
#: first 30 s against the CUBIC-like reference (lab: about 2 against 7.5-7.9 Mbit/s). When the
#: queue is provably someone else's ("coexisting"), cwnd and the probe phases are sized for the
#: RTT we actually get (``CWND_GAIN * bw * recent RTT floor``), still under inflight_hi and
#: inflight_lo (a loss response still caps it), with pacing unchanged: at gain 1 we add no
#: queue of our own, we only stop being cwnd-limited behind the other flow's.
#: "Provably someone else's" (all of):
#:   * the competitor signal (above) is at or above COMPETITOR_THRESH;
#:   * for COEXIST_ENTRY_ROUNDS rounds in a row *and* at least COEXIST_ENTRY_TIME seconds, the
#:     smallest RTT of each round stood above ``CWND_GAIN * min_rtt`` (below that our usual cwnd
#:     covers the RTT: nothing to fix) and above min_rtt by more than COEXIST_FOREIGN_FACTOR
#:     times the queue our own largest flight of that round could have built alone. A rate
#:     drop into a deep buffer also inflates the RTT, against a stale estimate, but that queue
#:     is ours: the queue signal's drains and the bandwidth aging empty it within about a
#:     second (link model, 10 -> 5 Mbit/s in 100 KB: at most 5 such rounds in 0.8 s), so it
#:     never lasts COEXIST_ENTRY_TIME.
#: While coexisting: the queue signal does not send us to drain (the queue is not ours); a
#: probe loss sets inflight_hi to the flight but never below BETA of the BDP at the RTT floor
#: and without the shallow-buffer 0.9 ratchet (those responses make room in a buffer we could
#: fill; here we are the one short of room); min_rtt is held instead of expiring to the
#: inflated RTT (see _update_min_rtt); the cruise is COEXIST_CRUISE_ROUNDS. It ends on the
#: first round whose smallest RTT is back under the persistent-queue threshold (the other flow
#: left or drained): cwnd returns to its min_rtt size on the next ack and an inflight_hi learnt
#: while coexisting is forgotten, so alone on a deep buffer we keep no standing queue.
#: The "recent RTT floor" is the smallest of the round minima of the last COEXIST_RTT_ROUNDS
#: rounds (the other flow's standing queue, not the peaks of its bursts or of our probes).
#: Two-flow link model, 30-90 s, ours/theirs before -> after: 200 KB vs NewReno 0.61 -> 1.07,
#: vs CUBIC-like 0.61 -> 1.61; 250 KB vs NewReno 0.84 -> 1.42, vs CUBIC-like 0.72 -> 1.53; the
#: lab's sequence (test_congestion.lab_sequence) vs CUBIC-like at 250 KB with sctp.py's cwnd
#: floor 0.21 -> ~0.9.
COEXIST_ENTRY_ROUNDS = 10
COEXIST_ENTRY_TIME = 2.0
COEXIST_FOREIGN_FACTOR = 1.5
COEXIST_RTT_ROUNDS = 4
#: The own-queue estimate above divides our flight by the best delivery rate of the last one to
#: two such windows, not by the model's: starved behind a foreign queue, the model sinks to
#: our shrinking share and would then "explain" any RTT as ours (a slow link).
COEXIST_BW_WINDOW = 5.0
#: Cruise rounds per probe cycle while coexisting. Behind a queue of several min_rtts a round
#: is long (200-250 ms at 40 ms + 200 ms of queue) and each probe wins only a part of its 25 %
#: (the other flow's packets share the queue's service in proportion), so the normal six-round
#: cruise would take tens of seconds to climb from the starved rate to a fair share.
COEXIST_CRUISE_ROUNDS = 2
#: Delay jitter: a path whose own delay varies (a radio link, a busy emulator, the lab's
#: rtt40-jitter10: 20 ms each way + a slow variation of sd 10 ms each way). min_rtt is then one
#: lucky low sample, 20-30 ms under the typical RTT there; everything sized on it breaks: cwnd
#: (2 x bw x min_rtt) caps delivery whenever the RTT is high, the rounds whose lowest RTT is high
#: pass the persistent-queue test (drain; the cwnd-limited delivery looks like a rate drop and
#: ages the model), the competitor signal sees a foreign queue in every round (0.98-1.0), and a
#: probe loss caps the flight at what the wire held at a low-delay moment. Link model, 10 Mbit/s,
#: 40 ms, sd 10 ms each way, 3-20 s, seeds 1-3: 0.72-0.98 of the link with a 100 KB buffer, 0.59-
#: 0.64 with 12 KB, 0.34-0.49 with 6 KB (NewReno: 0.99, 0.66, 0.47-0.52).
#: The window: the smallest RTT of each of the last JITTER_ROUNDS drain and cruise rounds (no
#: probe of ours in them; not app-limited, no path change, not while coexisting, and cleared when
#: coexistence ends). Its JITTER_FLOOR_RANK-th lowest is the "floor" (~p10), the median the
#: "typical" RTT, the JITTER_FLOOR_RANK-th highest the "high" end (~p90). The path is "jittery"
#: when all of:
#:   * the floor stands more than ``max(JITTER_MARGIN, JITTER_FRACTION x min_rtt)`` above min_rtt
#:     (min_rtt is an outlier, not the usual lowest RTT);
#:   * the spread high - floor is at least that gap (the floor itself moves by as much as it
#:     stands above min_rtt: a floor lifted by a standing queue, ours or a loss-based flow's
#:     in a deep buffer, moves less than it stands up: 22-73 ms of spread over a 48-130 ms gap);
#:   * the median step between consecutive rounds' minima is at least JITTER_STEP of the floor:
#:     the path's delay moves from round to round, while a queue (ours, another BBR's, a
#:     loss-based flow's) fills and drains over many rounds. Link model, median over a run:
#:     jitter sd 5-10 ms 0.09-0.27; two of ours in 100 KB 0.03; ours with NewReno or the
#:     CUBIC-like flow (12 KB-250 KB) 0.02 or less. A threshold relative to the gap instead (how
#:     lucky min_rtt was is arbitrary) let two of ours in 100 KB pass as jitter: their median
#:     queue 18 -> 33-45 ms.
#:   It stays on until the spread falls under JITTER_EXIT_SPREAD of the gap or the step under
#:   JITTER_EXIT_STEP (hysteresis: each new, luckier min_rtt widens the gap for a while; without
#:   it the verdict flickered and every off spell aged the model: 12 KB buffer, 0.73-0.75 ->
#:   0.87-0.93 of the link, measured with an earlier form of the test). With a 10 % gap threshold
#:   (not 15 %) and no step test, a 19-25 KB buffer shared with the CUBIC-like flow passed as
#:   jitter (ratio 2.9-5.2 against it instead of ~2).
#: While jittery: cwnd and the up/cruise phases are sized on the typical RTT (the RTT we get half
#: the time; 2 x that covers the usual highs), the persistent-queue test and drain's target use
#: the floor, the competitor signal needs a round lifted above the high end, a congestion loss
#: cuts bw_lo but not inflight_lo, a probe loss ends the probe without learning inflight_hi (the
#: queue at a bottleneck ahead of the jitter follows our rate, not our flight), a queue signal
#: does not age the bandwidth filter (a cwnd-limited round is not a rate drop), the shallow-buffer
#: competitor responses stay off, and probe_rtt's cwnd is half a BDP at the floor.
#: Measured after (same runs): 0.98-0.99 (100 KB), 0.87-0.93 (12 KB), 0.79-0.90 (6 KB); sd 5 ms:
#: 0.97-0.98 -> 0.99, 0.71-0.85 -> 0.92-0.96, 0.58-0.76 -> 0.86-0.91 (NewReno 1.0, 0.77-0.79,
#: 0.56-0.62). Not solved: with a deep buffer the max filter still reads 1.1-1.3 x the link
#: (jitter compresses acks during probes) and we fill it (queue p95 ~70-79 ms of 80, as NewReno;
#: before the change 31-78 ms).
JITTER_ROUNDS = 32
JITTER_FLOOR_RANK = 3          # 4th lowest of 32: ~p10
JITTER_TYPICAL_RANK = 16       # median
JITTER_MARGIN = 0.002
JITTER_FRACTION = 0.15
JITTER_EXIT_SPREAD = 0.5
JITTER_STEP = 0.08
JITTER_EXIT_STEP = 0.06

#: An app-limited sender over a bottleneck far below its model (issue 13: the lab's bw10 profile,
#: 10 Mbit/s with a 62 KB queue, after a clean one had taught 190 Mbit/s). A frame stream (30 fps,
#: 20-60 KB, at most 2 frames unacknowledged) never fills a BDP: none of its samples may lower
#: the model, its probe loss is ignored (app-limited flight), and no cycle counts as measured, so
#: the max filter never aged. (The probe cycle itself did advance: "up" ended at MAX_UP_ROUNDS;
#: but as the cruise is counted from the probe's start, those 8 rounds ate it and "up" filled
#: ~80 % of the time.) Frames left at 1.25 x 236 Mbit/s, two of them overflowed the queue (lab:
#: ~61 chunks lost in 12 s, each delaying a frame by about an RTT). Link model, lab-like sender
#: (SACK every 4th packet or 5 ms, 9 KB pacing burst, cwnd 48 KiB-1 MiB; 3 s of bulk at 200
#: Mbit/s, then frames, rate drop to 10 Mbit/s and 62.5 KB at 6 s; 6-18.5 s, seeds 1-3): 60/33/47
#: drops, 255/260/254 of 374 frames, btl_bw 200 throughout. The responses:
#:   * an "up" round that was app-limited ends the probe (as BBRv3: a probe that cannot fill
#:     1.25 BDP has nothing to learn): an app-limited flow cruises at gain 1;
#:   * an app-limited round in probe_bw whose loss passes the congestion test, over a flight of
#:     at least an initial window, *and* whose largest RTT shows a standing queue (the
#:     persistent-queue threshold) is a train of ours that overflowed a buffer: real information
#:     despite the app limit. Both slots of the max filter are capped at ``max(best rate sample
#:     of that round, app-limited ones included, APP_OVERFLOW_BETA x max_bw)``. Random loss on a
#:     fast link stands on no queue and a clean link loses nothing, so neither triggers it and
#:     frames there keep the high rate (same runs on 200 Mbit/s, clean or 2 % loss both ways: 0
#:     responses, frames and latency as before). The quarter floor keeps one round's samples,
#:     which can be low for an app-limited flow, from cutting the model to nothing at once; in
#:     the lab case the overflowing rounds measured 7-9 Mbit/s, so 200 -> 50 -> 12.5.
#:   * regrowth: the cut model is one an app-limited flow cannot measure back up (its samples
#:     never exceed its own pacing), so once APP_OVERFLOW_HOLD s passed since the last overflow,
#:     each new cycle that had no non-app-limited sample raises the max filter by
#:     APP_OVERFLOW_REGROW towards the model before the first cut; an overflow during the
#:     regrowth doubles the hold (up to APP_OVERFLOW_HOLD_MAX), reaching the old model resets it.
#:     Without regrowth a link that went back to 200 Mbit/s 12 s later kept the frames at ~12
#:     Mbit/s (344/375, p50/p95 38/48 ms against 22/22); regrowing every cycle without the hold
#:     (1.25x or 2x) brought the lab case back to 12-34 drops.
#: Measured after (same runs): 13/11/12 drops, 268/264/260 frames (10 Mbit/s and the right model
#: from the start: 0 drops, 268/263/265); the returning link: 367-375/375, p95 27-40 ms.
#: A foreign full buffer can trigger it too (a flow joining a deep queue that CUBIC keeps full,
#: its first round still app-limited): the model is cut, and the flow's own bulk samples restore
#: it within a cycle or two (test_congestion.lab_sequence: the ratios stay in 1/3-3).
APP_OVERFLOW_BETA = 0.25
APP_OVERFLOW_REGROW = 1.25
APP_OVERFLOW_HOLD = 3.0
APP_OVERFLOW_HOLD_MAX = 24.0

STARTUP = "startup"
DRAIN = "drain"
PROBE_BW = "probe_bw"
PROBE_RTT = "probe_rtt"

DOWN = "down"
CRUISE = "cruise"
REFILL = "refill"
UP = "up"


@dataclass
class _Sent:
    """What we remember about one transmission until it is acked, lost or forgotten."""

    size: int
    sent_time: float
    delivered: int          # connection's delivered bytes when this was sent
    delivered_time: float   # when that delivered count was last increased
    first_sent_time: float  # send time of the packet that started the current sampling interval
    app_limited: bool       # sent while the application, not cwnd/pacing, limited the rate
    tx_in_flight: int       # our bytes in flight just after this was sent
    lost: int               # connection's lost bytes when this was sent
    probing: bool           # sent in startup or a probe phase (excluded from the background loss)
    capped: bool = False    # sent under PROBE_RTT's window cap (see PROBE_RTT_AGING)


class BbrController:
    """Model-based congestion controller (BBR-style, with BBRv2/v3 loss bounds).

    Feed it every transmission (:meth:`on_sent`), every first acknowledgement of a transmission
    (:meth:`on_acked`), every loss declared by loss detection (:meth:`on_lost`), T3 expiry
    (:meth:`on_timeout`) and abandoned chunks (:meth:`forget`); read :attr:`cwnd` and
    :attr:`pacing_rate`. The module docstring explains the model and the states.

    ``seq`` identifies a transmission slot: an SCTP TSN. A retransmission of the same TSN calls
    :meth:`on_sent` again with the same ``seq``, which replaces the earlier snapshot.

    The ``bytes_in_flight`` arguments are the caller's own flight size once the event is
    applied; the controller keeps its own count from the snapshots (so that a caller's
    accounting quirk cannot skew the model) and reports the caller's in :meth:`stats` as a
    cross-check.
    """

    def __init__(self, mss: int = 1200, initial_cwnd_packets: int = 10, now: float = 0.0) -> None:
        if mss <= 0 or initial_cwnd_packets <= 0:
            raise ValueError("mss and initial_cwnd_packets must be positive")
        self.mss = mss
        self._min_cwnd = MIN_CWND_PACKETS * mss
        self._initial_cwnd = max(initial_cwnd_packets * mss, self._min_cwnd)
        self._cwnd = self._initial_cwnd

        # delivery-rate sampling state
        self._sent: dict[int, _Sent] = {}
        self._inflight = 0
        self._delivered = 0
        self._delivered_time = now
        self._first_sent_time = now
        self._lost = 0
        self._app_limited_until = 0  # delivered count until which samples are app-limited

        # the model
        self._bw_hi = [0.0, 0.0]      # per-cycle maxima: previous cycle, current cycle
        self._bw_lo = math.inf
        self._inflight_lo = math.inf
        self._inflight_hi = math.inf
        self._min_rtt = math.inf
        self._min_rtt_stamp = now
        self._probe_rtt_min = math.inf  # minimum over PROBE_RTT_INTERVAL: drives probe_rtt
        self._probe_rtt_min_stamp = now
        self._probe_rtt_due = False
        self._background_loss = 0.0
        self._latest_rtt: Optional[float] = None
        self._competitor = 0.0   # moving share of cruise rounds with a foreign queue
        self._competing_on = False   # the share crossed COMPETITOR_THRESH and not yet back under EXIT
        # deep-buffer coexistence (see COEXIST_ENTRY_ROUNDS)
        self._coexist = False
        self._foreign_rounds = 0          # consecutive rounds standing on a foreign queue
        self._foreign_since = now         # when that run of rounds began
        self._recent_round_min_rtts: list[float] = []   # the last COEXIST_RTT_ROUNDS minima
        self._bw_long = [0.0, 0.0]        # best rate sample: previous, current COEXIST_BW_WINDOW
        self._bw_long_stamp = now
        self._hi_from_coexist = False     # inflight_hi was learnt standing in a foreign queue
        # delay jitter (see JITTER_ROUNDS)
        self._jitter_window: list[float] = []   # round minima of the last JITTER_ROUNDS rounds
        self._jitter_floor = math.inf
        self._jitter_typical = math.inf
        self._jitter_high = math.inf
        self._jitter_on = False

        # rounds
        self._round = 0
        self._next_round_delivered = 0
        self._round_start = False
        self._round_lost = 0
        self._round_lost_packets = 0
        self._round_max_rtt = 0.0
        self._round_bg_packets = 0
        self._round_bg_lost = 0
        self._round_acked = 0
        self._round_packets = 0
        self._round_bw = 0.0          # max non-app-limited rate sample in the round
        self._round_any_bw = 0.0      # max rate sample in the round, app-limited ones included
        self._prev_round_app_limited = False
        self._bw_restore = 0.0            # the model before an app-limited overflow cut it
        self._last_overflow = -math.inf
        self._overflow_hold = APP_OVERFLOW_HOLD   # wait after an overflow before regrowing
        self._regrowing = False           # regrowth steps were taken since the last overflow
        self._round_delivered = 0     # max bytes delivered over one sample in the round
        self._round_min_rtt = math.inf
        self._round_app_limited = True
        self._round_cwnd_limited = False
        self._prev_round_cwnd_limited = False
        self._queue_rounds = 0
        self._queue_bw = 0.0
        self._queue_aged_this_cycle = False
        self._path_rounds = 0              # consecutive rounds whose every RTT was inflated
        self._round_rtt_inflated = True    # no sample of this round was near min_rtt so far
        self._round_rtt_samples = 0
        self._round_max_tx_in_flight = 0   # largest flight (at send) among this round's acks
        # the step test (see STEP_PATH_CHANGE)
        self._round_step_inflated = True   # every sample of this round above the step threshold
        self._step_armed = True            # the last round with samples had no such RTT
        self._step_prev_floor = math.inf   # ... and this smallest RTT
        self._step_floors: list[float] = []   # round minima of the current run of step rounds
        self._path_verifying = False       # a PROBE_RTT checks a suspected new path (PATH_CHECK)
        self._path_verify_min = math.inf   # smallest RTT of packets sent in that PROBE_RTT
        self._path_bw = 0.0                # best round rate of the rounds _path_rounds counts
        self._path_check_bw = 0.0          # ... of those that started the check (4x test only)

        # state machine
        self.state = STARTUP
        self.phase = ""
        self._pacing_gain = STARTUP_PACING_GAIN
        self._cwnd_gain = STARTUP_CWND_GAIN
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._full_pipe = False
        self._phase_start_time = now
        self._phase_start_round = 0
        self._cycle_start_round = 0
        self._probe_up_step = 1
        self._probe_rtt_done_time: Optional[float] = None
        self._probe_rtt_round_done = False
        self._probe_rtt_entered = now
        self._prior_cwnd = 0
        self._pacing_rate = STARTUP_PACING_GAIN * self._initial_cwnd / INITIAL_RTT_GUESS
        self._timeouts = 0
        self._rto_prior_cwnd = 0
        self._caller_inflight = 0
        self._last_sample_app_limited = False
        self._cycle_measured = False
        self._capped_before = -math.inf   # rate samples that began before this do not age the model
        self._counts = {"sent": 0, "acked": 0, "lost": 0, "spurious_ack": 0, "loss_too_high": 0,
                        "lower_bound_cuts": 0, "queue_signals": 0, "queue_agings": 0, "probe_rtt": 0, "cycles": 0,
                        "path_changes": 0, "path_checks": 0, "step_checks": 0, "coexist_entries": 0,
                        "app_overflows": 0}

    # ---- public read-outs -----------------------------------------------------------------

    @property
    def btl_bw(self) -> float:
        """Bottleneck bandwidth the model uses (bytes/s): ``min(max_bw, bw_lo)``; 0 before a sample."""
        max_bw = max(self._bw_hi)
        return min(max_bw, self._bw_lo)

    @property
    def max_bw(self) -> float:
        return max(self._bw_hi)

    @property
    def min_rtt(self) -> Optional[float]:
        """Minimum RTT over the last 10 s, or None before the first sample."""
        return None if self._min_rtt == math.inf else self._min_rtt

    @property
    def bdp(self) -> Optional[int]:
        """Bandwidth-delay product of the model in bytes, or None while unknown."""
        bw = self.btl_bw
        if bw <= 0 or self._min_rtt == math.inf:
            return None
        return int(bw * self._min_rtt)

    def _coexist_rtt(self) -> float:
        """The RTT cwnd and the probe phases are sized for: min_rtt, or, while sharing a deep
        buffer with a loss-based flow, the recent floor of the RTT we actually get."""
        if self._coexist and self._recent_round_min_rtts:
            return max(self._min_rtt, min(self._recent_round_min_rtts))
        if self._jittery():
            return max(self._min_rtt, self._jitter_typical)
        return self._min_rtt

    def _jittery(self) -> bool:
        """The path's own delay varies (see JITTER_ROUNDS), and we are not standing in a foreign
        deep queue (coexistence has its own sizing and takes precedence)."""
        return self._jitter_on and not self._coexist

    def _base_rtt(self) -> float:
        """The RTT the queue tests measure against: min_rtt, or under delay jitter the recent
        floor of the round minima (one lucky low sample must not make every round a queue)."""
        if self._jittery():
            return max(self._min_rtt, self._jitter_floor)
        return self._min_rtt

    def _working_bdp(self) -> Optional[int]:
        """The BDP at :meth:`_coexist_rtt` (equal to :attr:`bdp` outside coexistence)."""
        bw = self.btl_bw
        if bw <= 0 or self._min_rtt == math.inf:
            return None
        return int(bw * self._coexist_rtt())

    @property
    def cwnd(self) -> int:
        """Congestion window in bytes: the model's target with its bounds applied."""
        cwnd = self._cwnd
        if self.state == PROBE_BW:
            if self.phase in (DOWN, CRUISE) and self._inflight_hi != math.inf:
                headroom = COMPETING_HEADROOM if self._shallow_competing() else HEADROOM
                cwnd = min(cwnd, int(self._inflight_hi * (1.0 - headroom)))
            elif self._inflight_hi != math.inf:
                cwnd = min(cwnd, int(self._inflight_hi))
        if self.state != STARTUP and self._inflight_lo != math.inf:
            cwnd = min(cwnd, int(self._inflight_lo))
        if self.state == PROBE_RTT:
            cwnd = min(cwnd, self._probe_rtt_cwnd())
        return max(cwnd, self._min_cwnd)

    @property
    def pacing_rate(self) -> float:
        """Rate in bytes/s at which packets should leave (see :class:`Pacer`)."""
        return self._pacing_rate

    @property
    def pacing_gain(self) -> float:
        return self._pacing_gain

    def stats(self) -> dict:
        """A snapshot for logs and benchmarks (plain numbers and strings)."""
        return {
            "state": self.state,
            "phase": self.phase,
            "cwnd": self.cwnd,
            "pacing_rate": self._pacing_rate,
            "btl_bw": self.btl_bw,
            "max_bw": self.max_bw,
            "bw_lo": None if self._bw_lo == math.inf else self._bw_lo,
            "inflight_hi": None if self._inflight_hi == math.inf else int(self._inflight_hi),
            "inflight_lo": None if self._inflight_lo == math.inf else int(self._inflight_lo),
            "min_rtt": self.min_rtt,
            "background_loss": self._background_loss,
            "competitor": self._competitor,
            "coexist": self._coexist,
            "jitter": self._jitter_on,
            "inflight": self._inflight,
            "caller_inflight": self._caller_inflight,
            "delivered": self._delivered,
            "lost": self._lost,
            "round": self._round,
            "timeouts": self._timeouts,
            **self._counts,
        }

    # ---- events ---------------------------------------------------------------------------

    def on_sent(self, now: float, seq: int, size: int, bytes_in_flight: int, app_limited: bool) -> None:
        """A transmission of ``size`` bytes left (first send or a retransmission of ``seq``).

        ``app_limited``: after this packet the sender has nothing more it could send right now
        (its queue is empty: the application, not cwnd or pacing, sets the rate). Samples taken
        from packets sent before that backlog is acked cannot lower the bandwidth estimate.
        """
        if size <= 0:
            raise ValueError("size must be positive")
        old = self._sent.pop(seq, None)
        if old is not None:
            self._inflight -= old.size
        if self._inflight <= 0:
            # Nothing in flight: a new sampling interval starts now, not at the last ack
            # (otherwise idle time would count as slow delivery).
            self._first_sent_time = now
            self._delivered_time = now
            self._inflight = 0
        self._inflight += size
        self._caller_inflight = bytes_in_flight
        if self._inflight + self.mss > self.cwnd:
            self._round_cwnd_limited = True
        if app_limited:
            self._app_limited_until = max(self._app_limited_until, self._delivered + self._inflight)
        self._sent[seq] = _Sent(
            size=size,
            sent_time=now,
            delivered=self._delivered,
            delivered_time=self._delivered_time,
            first_sent_time=self._first_sent_time,
            app_limited=self._app_limited_until > 0,
            tx_in_flight=self._inflight,
            lost=self._lost,
            probing=self.state == STARTUP or (self.state == PROBE_BW and self.phase in (UP, REFILL)),
            capped=self.state == PROBE_RTT,
        )
        self._counts["sent"] += 1

    def on_acked(self, now: float, seqs: Iterable[int], rtt_sample: Optional[float], bytes_in_flight: int) -> None:
        """Transmissions first acknowledged by one SACK (cumulatively or by a gap block)."""
        self._caller_inflight = bytes_in_flight
        if rtt_sample is not None and rtt_sample > 0:
            self._update_min_rtt(now, rtt_sample)
        newest: Optional[_Sent] = None
        acked_bytes = 0
        for seq in seqs:
            p = self._sent.pop(seq, None)
            if p is None:
                self._counts["spurious_ack"] += 1  # declared lost or forgotten earlier
                continue
            self._inflight -= p.size
            self._delivered += p.size
            self._delivered_time = now
            acked_bytes += p.size
            self._counts["acked"] += 1
            self._round_acked += p.size
            self._round_packets += 1
            if not p.probing:
                self._round_bg_packets += 1
            if newest is None or p.sent_time > newest.sent_time or (
                p.sent_time == newest.sent_time and p.delivered > newest.delivered
            ):
                newest = p
        self._inflight = max(self._inflight, 0)
        if newest is None:
            return
        if self._rto_prior_cwnd:
            # a packet sent after the T3 arrived: the path works, undo the collapse
            self._cwnd = max(self._cwnd, self._rto_prior_cwnd)
            self._rto_prior_cwnd = 0
        if self._app_limited_until and self._delivered > self._app_limited_until:
            self._app_limited_until = 0

        # round counting: a round ends when a packet sent after the previous round ended is acked
        self._round_start = False
        if newest.delivered >= self._next_round_delivered:
            self._end_round(now)
            self._next_round_delivered = self._delivered
            self._round += 1
            self._round_start = True

        # an app-limited round says nothing about whether the pipe is full
        self._last_sample_app_limited = newest.app_limited
        self._take_rate_sample(now, newest)
        if rtt_sample is not None and rtt_sample > 0:
            self._round_min_rtt = min(self._round_min_rtt, rtt_sample)
            self._round_max_rtt = max(self._round_max_rtt, rtt_sample)
            self._classify_rtt(rtt_sample, newest)
            if self._path_verifying and newest.capped:
                self._path_verify_min = min(self._path_verify_min, rtt_sample)
        self._round_max_tx_in_flight = max(self._round_max_tx_in_flight, newest.tx_in_flight)
        self._update_state(now)
        self._update_cwnd(acked_bytes)
        self._update_pacing_rate()

    def on_lost(self, now: float, seqs: Iterable[int], bytes_in_flight: int) -> None:
        """Transmissions declared lost (RACK time/packet threshold or a tail-loss probe)."""
        self._caller_inflight = bytes_in_flight
        for seq in seqs:
            p = self._sent.pop(seq, None)
            if p is None:
                continue
            self._inflight = max(self._inflight - p.size, 0)
            self._lost += p.size
            self._counts["lost"] += 1
            self._round_lost += p.size
            self._round_lost_packets += 1
            self._round_packets += 1
            if not p.probing:
                self._round_bg_packets += 1
                self._round_bg_lost += 1
            self._check_probe_loss(now, p)
        self._update_pacing_rate()

    def on_timeout(self, now: float) -> None:
        """The retransmission timer (T3) fired: every outstanding chunk will be resent.

        The whole flight counts as gone (the SCTP sender stops counting it in flight) and cwnd
        drops to the floor, so that a path that went dark is probed with a few packets, not a
        window. The first acknowledgement of a packet sent after the timeout shows the path
        delivers again: cwnd then returns to what it was (BBR's "restore cwnd after recovery"),
        so a T3 that only repaired a lost tail (a short RTO.min can fire before the tail-loss
        probe) costs no ramp-up. The model (bandwidth, min_rtt) is kept throughout: a timeout
        says the last flight vanished, not that the path got slower, and the lower bounds
        catch the latter if it is true.
        """
        self._timeouts += 1
        self._rto_prior_cwnd = max(self._rto_prior_cwnd, self._cwnd)
        self._sent.clear()
        self._inflight = 0
        self._app_limited_until = 0
        if self.state == PROBE_RTT:
            self._prior_cwnd = 0
            self._path_verifying = False     # the drain was cut short: no verdict
            if self._full_pipe:
                self._enter_probe_bw(now, DOWN)
            else:
                self._enter_startup(now)
        self._cwnd = self._min_cwnd
        self._next_round_delivered = self._delivered  # the next ack starts a fresh round
        self._reset_round_accumulators()

    def forget(self, seq: int) -> None:
        """Drop ``seq`` without counting it as delivered or lost (an abandoned chunk)."""
        p = self._sent.pop(seq, None)
        if p is not None:
            self._inflight = max(self._inflight - p.size, 0)

    # ---- the model ------------------------------------------------------------------------

    def _update_min_rtt(self, now: float, rtt: float) -> None:
        self._latest_rtt = rtt
        expired = now - self._probe_rtt_min_stamp > PROBE_RTT_INTERVAL
        if expired and self.state != PROBE_RTT:
            self._probe_rtt_due = True
        if rtt <= self._probe_rtt_min or expired:
            self._probe_rtt_min = rtt
            self._probe_rtt_min_stamp = now
        if rtt <= self._min_rtt:
            self._min_rtt = rtt
            self._min_rtt_stamp = now
        elif now - self._min_rtt_stamp > MIN_RTT_WINDOW and self._coexist:
            # the RTT stays up because another flow's queue never empties, not because the
            # route changed: adopting it would size cwnd and every queue test on that queue
            # (measured: the shallow-buffer responses then woke up and cut our share to 0.27
            # against the CUBIC-like reference at 250 KB). Coexistence already sizes cwnd for
            # the RTT we get; keep the path's own minimum until that queue goes away.
            self._min_rtt_stamp = now
        elif now - self._min_rtt_stamp > MIN_RTT_WINDOW:
            # the old minimum is too old to trust (the route may have changed, or a queue that
            # never drains now belongs to the path): take the best of the last few seconds
            old = self._min_rtt
            self._min_rtt = self._probe_rtt_min
            self._min_rtt_stamp = now
            if self._min_rtt >= PATH_RTT_FACTOR * old + PATH_RTT_MARGIN:
                # a route change the in-flight test missed (see EXPIRED_PATH_CHANGE)
                self._on_new_path(now)

    def _classify_rtt(self, rtt: float, p: _Sent) -> None:
        """Is this sample far above anything our own queue could explain? (path change test)"""
        if self._min_rtt == math.inf:
            return
        self._round_rtt_samples += 1
        bw = self.max_bw
        own_queue = p.tx_in_flight / bw if bw > 0 else 0.0
        if rtt <= PATH_RTT_FACTOR * (self._min_rtt + own_queue) + PATH_RTT_MARGIN:
            self._round_rtt_inflated = False
        excess = max(p.tx_in_flight - bw * self._min_rtt, 0.0) / bw if bw > 0 else 0.0
        if rtt <= CWND_GAIN * self._min_rtt + excess + PATH_RTT_MARGIN:
            self._round_step_inflated = False

    def _check_path_change(self, now: float) -> None:
        """At a round's end: count rounds whose every RTT sample was inflated; after
        PATH_CHANGE_ROUNDS of them a new path is suspected and checked (see PATH_RTT_FACTOR,
        PATH_CHECK)."""
        if self._round_rtt_samples and self._round_rtt_inflated:
            self._path_rounds += 1
            self._path_bw = max(self._path_bw, self._round_bw)
        elif self._round_rtt_samples:
            self._path_rounds = 0
            self._path_bw = 0.0
        if self._path_rounds >= PATH_CHANGE_ROUNDS and not self._path_verifying:
            self._start_path_check(delivered=self._path_bw)

    def _check_step_change(self, now: float) -> None:
        """At a round's end: a flat step of the RTT right after a round without one starts a
        PROBE_RTT that checks it (see STEP_PATH_CHANGE)."""
        if not self._round_rtt_samples or self._min_rtt == math.inf:
            return
        rtt = self._round_min_rtt
        if rtt <= CWND_GAIN * self._min_rtt + PATH_RTT_MARGIN:
            # a round our usual window covers: no step (yet); the next one is measured from here
            self._step_armed = True
            self._step_prev_floor = rtt
            self._step_floors.clear()
            return
        if not self._round_step_inflated:
            return      # high, but our own flight could explain it (a probe): no verdict
        if not self._step_armed or self._coexist or self._jittery() or self._path_verifying:
            self._step_floors.clear()
            return
        floors = self._step_floors
        base = max(floors) if floors else self._step_prev_floor
        if not floors or rtt > max(floors) + max(STEP_FLAT_MARGIN, STEP_FLAT_FRACTION * max(floors)):
            # a (new) run must begin with a jump; a later jump restarts it (the round that
            # straddled the change sees part of the old RTT and part of the new)
            if rtt - base <= max(PATH_RTT_MARGIN, STEP_JUMP_FRACTION * base):
                self._step_armed = False     # the RTT crept up: a growing queue, not a step
                floors.clear()
                return
            floors.clear()
        floors.append(rtt)
        low, high = min(floors), max(floors)
        if high - low > max(STEP_FLAT_MARGIN, STEP_FLAT_FRACTION * low):
            # fell back within the run: not a flat step (a queue that moves)
            self._step_armed = False
            floors.clear()
            return
        if len(floors) >= STEP_ROUNDS and self.state == PROBE_BW:
            floors.clear()
            self._step_armed = False
            self._counts["step_checks"] += 1
            self._start_path_check(delivered=0.0)

    def _start_path_check(self, delivered: float) -> None:
        """A path change is suspected: drain in a PROBE_RTT at the floor window, and decide at
        its end (see PATH_CHECK). ``delivered``: the suspect rounds' best rate, which replaces
        the model if the RTT falls back (0: do not)."""
        self._path_verifying = True
        self._path_verify_min = math.inf
        self._path_check_bw = delivered
        self._path_rounds = 0
        self._path_bw = 0.0
        self._probe_rtt_due = True
        self._counts["path_checks"] += 1

    def _end_path_check(self, now: float) -> None:
        """PROBE_RTT ends: was the higher RTT still there with our flight drained?"""
        self._path_verifying = False
        self._path_rounds = 0
        self._path_bw = 0.0
        self._probe_rtt_due = False    # this was the drain (a check may start inside a PROBE_RTT)
        rtt = self._path_verify_min
        self._path_verify_min = math.inf
        delivered, self._path_check_bw = self._path_check_bw, 0.0
        if rtt == math.inf:
            return      # no packet of the check came back (cut short): no verdict
        if rtt > CWND_GAIN * self._min_rtt + PATH_RTT_MARGIN:
            self._min_rtt = rtt
            self._min_rtt_stamp = now
            self._probe_rtt_min = rtt
            self._probe_rtt_min_stamp = now
            self._on_new_path(now)
        elif 0 < delivered < QUEUE_SHORTFALL * self.max_bw:
            # the RTT fell back when we drained: the inflated rounds stood in our own queue,
            # delivering far less than the model (a rate drop). Those rounds were kept from
            # the queue test as a possible path change; act on them now as it would have
            self._counts["queue_agings"] += 1
            self._bw_hi = [delivered, 0.0]

    def _on_new_path(self, now: float) -> None:
        """min_rtt now belongs to a new path: count it, drop what was learnt in bytes on the
        old one."""
        self._counts["path_changes"] += 1
        self._path_rounds = 0
        self._path_bw = 0.0
        self._step_floors.clear()
        self._step_armed = True
        self._step_prev_floor = self._min_rtt
        self._queue_rounds = 0
        self._queue_bw = 0.0
        # the bounds were learnt in bytes on the old path (a BDP of the old RTT), and the
        # samples of the inflated rounds were capped by the stale BDP: forget the bounds,
        # keep the best bandwidth seen for two more cycles (probing and the loss and
        # queue tests correct it if the new path is slower)
        self._inflight_hi = math.inf
        self._inflight_lo = math.inf
        self._bw_lo = math.inf
        self._bw_hi = [self.max_bw, 0.0]
        self._cycle_measured = False
        # what is still in flight left under the window of the old RTT (a few KB on a
        # LAN-sized min_rtt: a frame stream window-limited for once); acked from now on,
        # those samples would age the kept model away all the same (see PROBE_RTT_AGING).
        # Every such sample's interval began before now (it was sent before now)
        self._capped_before = now
        # ... and the window jumps to the kept model at the new RTT at once: growing it by
        # the bytes acked (as in steady state) kept a frame stream window-limited at the old
        # RTT's size for several rounds, and those samples aged the model all the same.
        # Pacing, not the window, sets the rate, so the jump is no burst.
        target = self._cwnd_target()
        if target is not None and self._full_pipe:
            self._cwnd = max(self._cwnd, target)

    def _take_rate_sample(self, now: float, p: _Sent) -> None:
        delivered = self._delivered - p.delivered
        send_elapsed = p.sent_time - p.first_sent_time
        ack_elapsed = self._delivered_time - p.delivered_time
        interval = max(send_elapsed, ack_elapsed)
        self._first_sent_time = p.sent_time  # the next sample's interval starts at this send
        if delivered <= 0 or interval <= 0:
            return
        if self._min_rtt != math.inf and interval < self._min_rtt * 0.5:
            # much shorter than the path's RTT: acks bunched together, not a delivery rate
            return
        rate = delivered / interval
        self._round_any_bw = max(self._round_any_bw, rate)
        # a window we know is not the path's (PROBE_RTT's cap, or the old RTT's before a path
        # change) limited this sample: it measures the window (a frame stream squeezed into
        # half a BDP), not the path. Like an app-limited one it may raise the model, never
        # lower it or age older measurements out (see PROBE_RTT_AGING)
        capped = (p.capped or self.state == PROBE_RTT
                  or min(p.first_sent_time, p.delivered_time) <= self._capped_before)
        if p.app_limited or capped:
            # only raises: the application (or our own cap), not the path, limited it
            if rate > self.max_bw:
                self._bw_hi[1] = max(self._bw_hi[1], rate)
            return
        self._round_app_limited = False
        self._cycle_measured = True
        if now - self._bw_long_stamp > COEXIST_BW_WINDOW:
            self._bw_long = [self._bw_long[1], 0.0]
            self._bw_long_stamp = now
        self._bw_long[1] = max(self._bw_long[1], rate)
        self._round_bw = max(self._round_bw, rate)
        self._round_delivered = max(self._round_delivered, delivered)
        self._bw_hi[1] = max(self._bw_hi[1], rate)

    def _flight_loss_too_high(self, lost_bytes: int, flight_bytes: int) -> bool:
        """Loss well above the random background over one flight (see module docstring)."""
        n = max(flight_bytes / self.mss, 1.0)
        lost = lost_bytes / self.mss
        b = self._background_loss
        allowed = n * (b + LOSS_THRESH) + 2.0 * math.sqrt(n * b * (1.0 - b)) + 1.0
        return lost > allowed

    def _check_probe_loss(self, now: float, p: _Sent) -> None:
        """On each loss while probing: did pushing harder make loss jump? (BBRv2's test)."""
        if not (self.state == PROBE_BW and self.phase in (UP, REFILL)):
            return
        bdp = self.bdp
        if p.app_limited or (bdp is not None and p.tx_in_flight < bdp):
            # a flight the application kept short (a frame after a pause) or smaller than
            # the pipe cannot have overflowed a queue of our making: whatever its loss rate,
            # it says nothing about how much we may have in flight (BBRv3 applies inflight_hi
            # only to samples that were not app-limited). Setting inflight_hi from such a
            # flight capped cwnd at a frame's size, and the bandwidth samples that cwnd
            # allowed then shrank the model cycle after cycle (lab, 40 ms + 5 %: 11 -> 2.7
            # Mbit/s within 5 s of a 10 Mbit/s frame stream).
            return
        if not self._flight_loss_too_high(self._lost - p.lost, p.tx_in_flight):
            return
        self._counts["loss_too_high"] += 1
        bdp = bdp or self._min_cwnd
        again = self._inflight_hi != math.inf and self._shallow_competing()
        if self._jittery():
            # under delay jitter the flight at a loss measured the wire at that moment, not the
            # buffer: end the probe, but learn no flight cap (see JITTER_ROUNDS)
            if self.phase == UP:
                self._enter_probe_bw(now, DOWN)
            return
        if self._coexist:
            # a flight that overflowed the other flow's deep queue: a cap for while we stand
            # in that queue, never below most of the BDP at the RTT we get there
            bdp = max(bdp, self._working_bdp() or 0)
            self._hi_from_coexist = True
        else:
            self._hi_from_coexist = False
        self._inflight_hi = max(float(p.tx_in_flight) * (PROBE_HI_BETA if again else 1.0),
                                BETA * bdp, float(self._min_cwnd))
        if self.phase == UP:
            self._enter_probe_bw(now, DOWN)

    def _end_round(self, now: float) -> None:
        """Per-round bookkeeping: startup exit, lower bounds, the persistent-queue signal."""
        if self._round_packets:
            if self.state == STARTUP:
                if (self._round_lost_packets >= STARTUP_MIN_LOST_PACKETS
                        and self._round_lost_packets > STARTUP_LOSS_THRESH * self._round_packets
                        and self._round_acked + self._round_lost >= STARTUP_MIN_LOSS_FLIGHT * self._initial_cwnd):
                    self._full_pipe = True
                    bdp = self.bdp or 0
                    self._inflight_hi = max(float(bdp), float(self._round_delivered), float(self._min_cwnd))
                    self._counts["loss_too_high"] += 1
            elif not (self.state == PROBE_BW and self.phase in (UP, REFILL)):
                flight = self._round_acked + self._round_lost
                if self._round_lost and self._flight_loss_too_high(self._round_lost, flight):
                    self._cut_lower_bounds()
            self._check_app_limited_overflow(now)
        # the background (random) loss: learned only from rounds that saw the path without a
        # queue, because loss while a queue stands is what a full buffer does, not the medium
        if (self._round_bg_packets and self._min_rtt != math.inf
                and self._round_min_rtt <= self._min_rtt + max(BACKGROUND_RTT_MARGIN,
                                                               BACKGROUND_RTT_FRACTION * self._min_rtt)):
            keep = (1.0 - BACKGROUND_LOSS_WEIGHT) ** self._round_bg_packets
            rate = self._round_bg_lost / self._round_bg_packets
            self._background_loss = min(keep * self._background_loss + (1.0 - keep) * rate,
                                        BACKGROUND_LOSS_MAX)
        if (self.state == PROBE_BW and self.phase == CRUISE and not self._round_app_limited
                and self._round_max_rtt > 0 and self._min_rtt != math.inf):
            if self._jittery():
                # the RTT moves by itself: only a round lifted as a whole above the jitter's
                # usual range (its lowest sample above the high end of recent round minima)
                # says somebody else's queue
                foreign = self._round_min_rtt > self._jitter_high + max(
                    BACKGROUND_RTT_MARGIN, BACKGROUND_RTT_FRACTION * self._min_rtt)
            else:
                foreign = self._round_max_rtt > self._min_rtt + max(
                    BACKGROUND_RTT_MARGIN, BACKGROUND_RTT_FRACTION * self._min_rtt)
            self._competitor += COMPETITOR_WEIGHT * ((1.0 if foreign else 0.0) - self._competitor)
            if self._competitor >= COMPETITOR_THRESH:
                self._competing_on = True
            elif self._competitor < COMPETITOR_EXIT_THRESH:
                self._competing_on = False
        # a path change (every sample far above what a queue of ours explains) is not a queue
        path_inflated = bool(self._round_rtt_samples) and self._round_rtt_inflated
        self._check_path_change(now)
        self._check_step_change(now)
        # persistent queue: RTT stays high across non-probing rounds
        queued = False
        if (self._min_rtt != math.inf and self._round_min_rtt != math.inf
                and self.state == PROBE_BW and self.phase in (DOWN, CRUISE)
                and not self._round_app_limited and not path_inflated):
            queued = self._round_min_rtt > self._base_rtt() * QUEUE_RTT_FACTOR + QUEUE_RTT_MARGIN
        self._update_jitter(path_inflated)
        self._update_coexistence(now, path_inflated)
        if queued and self._coexist:
            queued = False   # the queue is the other flow's: draining ours would not empty it
        if queued:
            self._queue_rounds += 1
            self._queue_bw = max(self._queue_bw, self._round_bw)
        else:
            self._queue_rounds = 0
            self._queue_bw = 0.0
        if self._queue_rounds >= QUEUE_ROUNDS and self._queue_bw > 0:
            delivered = self._queue_bw
            self._queue_rounds = 0
            self._queue_bw = 0.0
            self._counts["queue_signals"] += 1
            if (not self._queue_aged_this_cycle and delivered < QUEUE_SHORTFALL * self.max_bw
                    and not self._jittery()):
                # a standing queue while delivering far less than the model: the bandwidth
                # memory is older than the path (a rate drop). Forget the previous cycle's
                # maximum now rather than a cycle later; this cycle's samples stay. Once per
                # cycle, and only for a large shortfall: a flow that shares the queue with a
                # loss-based one (which keeps it full) sees the same delay, and cutting its
                # model on delay alone would hand that flow the whole link.
                self._counts["queue_agings"] += 1
                self._queue_aged_this_cycle = True
                self._bw_hi = [self._bw_hi[1], 0.0]
            if self.phase == CRUISE:
                self._enter_probe_bw(now, DOWN)   # drain our share of the queue
        self._reset_round_accumulators()

    def _update_jitter(self, path_inflated: bool) -> None:
        """At a round's end: the window of round minima and the jitter verdict (JITTER_ROUNDS)."""
        if (self._min_rtt == math.inf or self._round_min_rtt == math.inf or path_inflated
                or self._round_app_limited or self.state != PROBE_BW or self.phase not in (DOWN, CRUISE)):
            return
        if self._coexist:
            return   # a foreign queue's rounds say nothing about the path's own variation
        w = self._jitter_window
        w.append(self._round_min_rtt)
        del w[:-JITTER_ROUNDS]
        if len(w) < JITTER_ROUNDS:
            return
        s = sorted(w)
        self._jitter_floor = s[JITTER_FLOOR_RANK]
        self._jitter_typical = s[JITTER_TYPICAL_RANK]
        self._jitter_high = s[-1 - JITTER_FLOOR_RANK]
        gap = self._jitter_floor - self._min_rtt
        spread = self._jitter_high - self._jitter_floor
        margin = max(JITTER_MARGIN, JITTER_FRACTION * self._min_rtt)
        steps = sorted(abs(b - a) for a, b in zip(w, w[1:]))
        step = steps[len(steps) // 2]
        if self._jitter_on:
            self._jitter_on = (gap > margin and spread >= JITTER_EXIT_SPREAD * gap
                               and step >= JITTER_EXIT_STEP * self._jitter_floor)
        else:
            self._jitter_on = gap > margin and spread >= gap and step >= JITTER_STEP * self._jitter_floor

    def _update_coexistence(self, now: float, path_inflated: bool) -> None:
        """At a round's end: enter or leave deep-buffer coexistence (see COEXIST_ENTRY_ROUNDS)."""
        if (self._min_rtt == math.inf or self._round_min_rtt == math.inf or path_inflated
                or self._round_app_limited or self.state not in (PROBE_BW, PROBE_RTT)):
            return
        rtt = self._round_min_rtt
        self._recent_round_min_rtts.append(rtt)
        del self._recent_round_min_rtts[:-COEXIST_RTT_ROUNDS]
        if rtt <= self._min_rtt * QUEUE_RTT_FACTOR + QUEUE_RTT_MARGIN:
            # the queue emptied: whoever kept it is gone (or it was ours); back to normal
            if self._coexist and self._hi_from_coexist:
                # a cap learnt in bytes behind the other flow's queue says nothing about the
                # empty buffer (and would wake the shallow-buffer responses): forget it
                self._inflight_hi = math.inf
                self._hi_from_coexist = False
            if self._coexist:
                # the rounds before were another flow's queue, not the path's own variation
                self._jitter_window.clear()
                self._jitter_on = False
            self._coexist = False
            self._foreign_rounds = 0
            return
        if self._coexist:
            return
        if rtt <= CWND_GAIN * self._min_rtt + QUEUE_RTT_MARGIN:
            # our usual cwnd (CWND_GAIN x BDP) already covers this RTT: nothing to fix
            self._foreign_rounds = 0
            return
        bw = max(self.max_bw, *self._bw_long)
        own_queue = max(self._round_max_tx_in_flight - bw * self._min_rtt, 0.0) / bw if bw > 0 else math.inf
        if rtt - self._min_rtt <= COEXIST_FOREIGN_FACTOR * own_queue:
            self._foreign_rounds = 0     # our own flight could explain this queue
            return
        if self._foreign_rounds == 0:
            self._foreign_since = now
        self._foreign_rounds += 1
        if (self._foreign_rounds >= COEXIST_ENTRY_ROUNDS and now - self._foreign_since >= COEXIST_ENTRY_TIME
                and self._competing()):
            self._coexist = True
            self._counts["coexist_entries"] += 1

    def _check_app_limited_overflow(self, now: float) -> None:
        """At a round's end: did an app-limited round overflow a queue? (see APP_OVERFLOW_BETA)"""
        if (self.state != PROBE_BW or not self._round_app_limited or not self._round_lost
                or self._round_any_bw <= 0 or self._min_rtt == math.inf or self._coexist):
            return      # (coexisting: the queue is known to be another flow's)
        bw = self.max_bw
        if self._round_any_bw >= bw:
            return
        if self._round_max_rtt <= self._base_rtt() * QUEUE_RTT_FACTOR + QUEUE_RTT_MARGIN:
            return      # no queue stood behind the loss: random loss, not an overflow
        flight = self._round_acked + self._round_lost
        if flight < self._initial_cwnd:
            return      # a message or two lost in somebody else's full buffer: no train of ours
        if not self._flight_loss_too_high(self._round_lost, flight):
            return
        self._counts["app_overflows"] += 1
        cap = max(self._round_any_bw, APP_OVERFLOW_BETA * bw)
        self._bw_restore = max(self._bw_restore, bw)
        if self._regrowing:
            # the regrowth overflowed again: the old model really is stale, wait longer
            self._overflow_hold = min(2 * self._overflow_hold, APP_OVERFLOW_HOLD_MAX)
            self._regrowing = False
        self._last_overflow = now
        self._bw_hi = [min(self._bw_hi[0], cap), min(self._bw_hi[1], cap)]
        if self.phase == UP:
            self._enter_probe_bw(now, DOWN)

    def _cut_lower_bounds(self) -> None:
        if self._round_app_limited or self._round_bw <= 0:
            return
        self._counts["lower_bound_cuts"] += 1
        prev_bw = self.max_bw if self._bw_lo == math.inf else self._bw_lo
        self._bw_lo = max(self._round_bw, BETA * prev_bw)
        if self._jittery():
            return   # the rate cut above is the response (see JITTER_ROUNDS)
        prev_inflight = float(self._cwnd) if self._inflight_lo == math.inf else self._inflight_lo
        self._inflight_lo = max(float(self._round_delivered), BETA * prev_inflight, float(self._min_cwnd))

    def _reset_round_accumulators(self) -> None:
        self._prev_round_cwnd_limited = self._round_cwnd_limited
        self._round_cwnd_limited = False
        self._round_lost = 0
        self._round_lost_packets = 0
        self._round_max_rtt = 0.0
        self._round_bg_packets = 0
        self._round_bg_lost = 0
        self._round_acked = 0
        self._round_packets = 0
        self._round_bw = 0.0
        self._round_any_bw = 0.0
        self._round_delivered = 0
        self._round_min_rtt = math.inf
        self._prev_round_app_limited = self._round_app_limited
        self._round_app_limited = True
        self._round_rtt_inflated = True
        self._round_step_inflated = True
        self._round_rtt_samples = 0
        self._round_max_tx_in_flight = 0

    # ---- the state machine ----------------------------------------------------------------

    def _update_state(self, now: float) -> None:
        if self.state == STARTUP:
            self._check_full_bw()
            if self._full_pipe:
                self._enter_drain(now)
        if self.state == DRAIN:
            bdp = self.bdp
            if ((bdp is not None and self._inflight <= bdp)
                    or self._round - self._phase_start_round >= DRAIN_MAX_ROUNDS):
                self._enter_probe_bw(now, DOWN)
        if self.state == PROBE_BW:
            self._update_probe_bw(now)
        self._check_probe_rtt(now)

    def _check_full_bw(self) -> None:
        if self._full_pipe or not self._round_start or self._last_sample_app_limited:
            return
        bw = self.max_bw
        if bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        if self._full_bw_count >= FULL_BW_ROUNDS:
            self._full_pipe = True

    def _enter_startup(self, now: float) -> None:
        self.state = STARTUP
        self.phase = ""
        self._pacing_gain = STARTUP_PACING_GAIN
        self._cwnd_gain = STARTUP_CWND_GAIN

    def _enter_drain(self, now: float) -> None:
        self.state = DRAIN
        self.phase = ""
        self._phase_start_round = self._round
        self._pacing_gain = DRAIN_PACING_GAIN
        self._cwnd_gain = STARTUP_CWND_GAIN

    def _enter_probe_bw(self, now: float, phase: str) -> None:
        self.state = PROBE_BW
        self.phase = phase
        self._phase_start_time = now
        self._phase_start_round = self._round
        self._cwnd_gain = CWND_GAIN
        if phase == DOWN:
            self._pacing_gain = DOWN_PACING_GAIN
        elif phase == CRUISE:
            self._pacing_gain = CRUISE_PACING_GAIN
        elif phase == REFILL:
            # a new cycle: age the bandwidth filter by one cycle and forget the lower bounds
            self._counts["cycles"] += 1
            self._queue_aged_this_cycle = False
            measured = self._cycle_measured
            if self._cycle_measured:
                # only a cycle that measured the path may push older measurements out: an
                # application that sent too little to fill the pipe says nothing about it
                self._bw_hi = [self._bw_hi[1], 0.0]
                self._cycle_measured = False
            if self._bw_restore > 0:
                if self.max_bw >= self._bw_restore:
                    self._bw_restore = 0.0
                    self._overflow_hold = APP_OVERFLOW_HOLD
                    self._regrowing = False
                elif not measured and now - self._last_overflow >= self._overflow_hold:
                    self._regrowing = True
                    # a cycle without overflow: grow back towards the model we had (see
                    # APP_OVERFLOW_REGROW); an app-limited flow cannot measure it by itself
                    self._bw_hi[1] = max(self._bw_hi[1], min(self._bw_restore,
                                                             APP_OVERFLOW_REGROW * self.max_bw))
            self._bw_lo = math.inf
            self._inflight_lo = math.inf
            self._pacing_gain = CRUISE_PACING_GAIN
            self._probe_up_step = 1
        elif phase == UP:
            self._pacing_gain = UP_PACING_GAIN
            self._cycle_start_round = self._round + 1

    def _update_probe_bw(self, now: float) -> None:
        rounds_in_phase = self._round - self._phase_start_round
        elapsed = now - self._phase_start_time
        min_rtt = self._coexist_rtt() if self._min_rtt != math.inf else 0.0
        bdp = self._working_bdp() or self._min_cwnd
        if self.phase == DOWN:
            if self._jittery():
                # drain to the pipe at the jitter's floor, not at its typical RTT: a queue of
                # our own would otherwise count as pipe and never drain
                bdp = int(self.btl_bw * self._base_rtt()) or self._min_cwnd
            if elapsed >= min_rtt and self._inflight <= bdp:
                self._enter_probe_bw(now, CRUISE)
            elif rounds_in_phase >= 3:
                self._enter_probe_bw(now, CRUISE)  # cannot drain (app or receiver): move on
        elif self.phase == CRUISE:
            # counted from the end of the last probe, so that an extra drain (a queue signal)
            # does not postpone the next probe
            if self._round - self._cycle_start_round >= self._cruise_rounds() + 1:
                self._enter_probe_bw(now, REFILL)
        elif self.phase == REFILL:
            if rounds_in_phase >= 1:
                self._enter_probe_bw(now, UP)
        elif self.phase == UP:
            if self._round_start and self._inflight_hi != math.inf:
                # capped by inflight_hi: raise the cap by 1, 2, 4... packets per round
                if self._prev_round_cwnd_limited and self.cwnd >= int(self._inflight_hi) - self.mss:
                    self._inflight_hi += self._probe_up_step * self.mss
                    self._probe_up_step = min(self._probe_up_step * 2, 64)
            if elapsed >= min_rtt and self._inflight >= UP_PACING_GAIN * bdp:
                self._enter_probe_bw(now, DOWN)
            elif self._round_start and rounds_in_phase >= 1 and self._prev_round_app_limited:
                # a whole round of the probe was app-limited: the application cannot fill
                # 1.25 BDP, so the probe has nothing to learn (see APP_OVERFLOW_BETA)
                self._enter_probe_bw(now, DOWN)
            elif rounds_in_phase >= MAX_UP_ROUNDS:
                self._enter_probe_bw(now, DOWN)

    def _competing(self) -> bool:
        # on at COMPETITOR_THRESH, off under COMPETITOR_EXIT_THRESH (updated at each cruise round)
        return self._competing_on

    def _shallow_competing(self) -> bool:
        # the shallow-buffer responses (long cruise, more headroom, inflight_hi cut to 0.9 on a
        # repeated probe loss) make room in a buffer we could fill; standing in a deep foreign
        # queue we are the one short of room, so they do not apply there
        return self._competing() and not self._coexist and not self._jittery()

    def _cruise_rounds(self) -> int:
        if self._coexist:
            return COEXIST_CRUISE_ROUNDS
        if self._inflight_hi == math.inf or not self._shallow_competing():
            return CRUISE_ROUNDS
        bdp = self.bdp or self._min_cwnd
        return max(CRUISE_ROUNDS, min(int(bdp / self.mss), COEXIST_MAX_ROUNDS))

    def _competing_rate_cap(self) -> Optional[float]:
        """While making room in a shallow buffer (down and cruise): the rate our capped window
        allows at the RTT we currently get, or None (see "the competing pacing cap" by COMPETING_HEADROOM)."""
        if not (self.state == PROBE_BW and self.phase in (DOWN, CRUISE)
                and self._inflight_hi != math.inf and self._min_rtt != math.inf
                and self._shallow_competing()):
            return None
        window = self._inflight_hi * (1.0 - COMPETING_HEADROOM)
        if self._inflight_lo != math.inf:
            window = min(window, self._inflight_lo)
        rtt = self._min_rtt
        if self._recent_round_min_rtts:
            rtt = max(rtt, min(self._recent_round_min_rtts))
        return max(window, float(self._min_cwnd)) / rtt

    def _probe_rtt_cwnd(self) -> int:
        if self._path_verifying:
            return self._min_cwnd     # drain all of our queue (see PATH_CHECK)
        bdp = self.bdp
        if bdp is None:
            return self._min_cwnd
        if self._jittery():
            bdp = int(self.btl_bw * self._base_rtt())
        return max(int(PROBE_RTT_CWND_GAIN * bdp), self._min_cwnd)

    def _check_probe_rtt(self, now: float) -> None:
        if self.state != PROBE_RTT and self._probe_rtt_due:
            self._probe_rtt_due = False
            self._counts["probe_rtt"] += 1
            self._prior_cwnd = self._cwnd
            self.state = PROBE_RTT
            self.phase = ""
            self._pacing_gain = 1.0
            self._cwnd_gain = CWND_GAIN
            self._probe_rtt_done_time = None
            self._probe_rtt_entered = now
        if self.state != PROBE_RTT:
            return
        if self._probe_rtt_done_time is None:
            if (self._path_verifying or self._inflight <= self._probe_rtt_cwnd()
                    or now - self._probe_rtt_entered >= PROBE_RTT_DRAIN_TIMEOUT):
                # a path check needs no wait and no 200 ms: the packets sent at the floor
                # window leave only as our flight drains, so they see no queue of ours; one
                # round of them decides (PATH_CHECK)
                self._probe_rtt_done_time = now + (0.0 if self._path_verifying else PROBE_RTT_DURATION)
                self._probe_rtt_round_done = False
                self._next_round_delivered = self._delivered
            if not self._path_verifying:
                return
        if self._round_start and (not self._path_verifying or self._path_verify_min != math.inf):
            self._probe_rtt_round_done = True
        if self._probe_rtt_round_done and now >= self._probe_rtt_done_time:
            # the queue was empty for a while: whatever we saw is the path's RTT
            self._probe_rtt_min_stamp = now
            if self._probe_rtt_min <= self._min_rtt or now - self._min_rtt_stamp > MIN_RTT_WINDOW:
                self._min_rtt = self._probe_rtt_min
                self._min_rtt_stamp = now
            if self._path_verifying:
                self._end_path_check(now)
            self._cwnd = max(self._cwnd, self._prior_cwnd)
            self._prior_cwnd = 0
            if self._full_pipe:
                self._enter_probe_bw(now, CRUISE)
            else:
                self._enter_startup(now)

    # ---- control outputs ------------------------------------------------------------------

    def _cwnd_target(self) -> Optional[int]:
        """The window the model asks for (cwnd gain x working BDP + 2 packets); None before
        the model has a BDP."""
        bdp = self._working_bdp()
        return None if bdp is None else int(self._cwnd_gain * bdp) + 2 * self.mss

    def _update_cwnd(self, acked: int) -> None:
        target = self._cwnd_target()
        if target is None:
            target = self._initial_cwnd
        if self._full_pipe:
            self._cwnd = min(self._cwnd + acked, max(target, self._min_cwnd))
        elif self._cwnd < target or self._delivered < self._initial_cwnd:
            self._cwnd += acked
        self._cwnd = max(self._cwnd, self._min_cwnd)

    def _update_pacing_rate(self) -> None:
        bw = self.btl_bw
        rtt = self._min_rtt if self._min_rtt != math.inf else INITIAL_RTT_GUESS
        rate = self._pacing_gain * bw * (1.0 - PACING_MARGIN)
        cap = self._competing_rate_cap()
        if cap is not None:
            rate = min(rate, cap)
        if self.state == STARTUP or bw <= 0:
            # startup never paces the initial window slower than over one RTT / gain
            rate = max(rate, self._pacing_gain * self._initial_cwnd / max(rtt, 1e-4))
        # the floor: four packets per RTT, so a collapsed estimate can still recover
        rate = max(rate, self._min_cwnd / max(rtt, 1e-3))
        self._pacing_rate = rate


class Pacer:
    """Spaces packets out at a given rate, allowing small bursts (a token bucket).

    The bucket holds at most ``max(burst_bytes, rate * burst_time)`` bytes of credit, refilled
    at ``rate``. ``burst_time`` exists because an asyncio sender cannot wake up every 100 us:
    at 100 Mbit/s two packets leave every 0.2 ms, so a fixed two-packet bucket would cap the
    rate at what one wake-up per millisecond can send. One millisecond of data (Linux's BBR
    uses the same quantum) keeps bursts far below a BDP while letting a 1 ms timer keep up.
    ``max_burst_bytes`` caps the bucket at high rates.

    Rates of 0, None or infinity mean "no pacing".
    """

    def __init__(self, burst_bytes: int = 2 * 1200, burst_time: float = 0.001,
                 max_burst_bytes: int = 64 * 1024) -> None:
        if burst_bytes <= 0 or burst_time < 0 or max_burst_bytes < burst_bytes:
            raise ValueError("bad pacer burst settings")
        self.burst_bytes = burst_bytes
        self.burst_time = burst_time
        self.max_burst_bytes = max_burst_bytes
        self._tokens = float(burst_bytes)
        self._last: Optional[float] = None

    def _capacity(self, rate: float) -> float:
        return float(min(max(self.burst_bytes, rate * self.burst_time), self.max_burst_bytes))

    def _refill(self, now: float, rate: float) -> None:
        cap = self._capacity(rate)
        if self._last is None:
            self._tokens = cap
        elif now > self._last:
            self._tokens = min(cap, self._tokens + (now - self._last) * rate)
        self._last = now if self._last is None else max(self._last, now)

    @staticmethod
    def _unpaced(rate: Optional[float]) -> bool:
        return rate is None or rate <= 0 or math.isinf(rate)

    def next_send_time(self, now: float, size: int, rate: Optional[float]) -> float:
        """Earliest time ``size`` bytes may leave; ``now`` when they may leave at once."""
        if self._unpaced(rate):
            return now
        self._refill(now, rate)
        need = min(float(size), self._capacity(rate)) - self._tokens
        if need <= 0:
            return now
        return now + need / rate

    def on_sent(self, now: float, size: int, rate: Optional[float]) -> None:
        """``size`` bytes left at ``now``: spend their credit (may go negative after a forced send)."""
        if self._unpaced(rate):
            return
        self._refill(now, rate)
        self._tokens -= size
