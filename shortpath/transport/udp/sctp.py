"""SCTP timer tuning for interactive traffic, kept in one place.

aiortc's ``RTCSctpTransport`` follows the RFC 4960 defaults, which were chosen
for the Internet of 2000 and for signalling traffic that tolerates seconds of
delay:

==================  ===========  ============================================
knob                aiortc       effect on a remote-desktop session
==================  ===========  ============================================
RTO.Initial         3.0 s        a packet lost before the first RTT sample
                                 (e.g. the first frame after the switch to
                                 UDP) is resent after 3 s
RTO.Min             1.0 s        on a LAN (RTT < 1 ms) a lost lone message
                                 (a key press, a cursor update) waits 1 s; fast
                                 retransmit needs 3 later packets, which an
                                 interactive stream often does not have
RTO.Max             60 s         after a few timeouts in a row the sender may
                                 sit silent for up to a minute
T3 back-off         none         aiortc does not double the RTO when T3
                                 expires (RFC 4960 6.3.3 E2 says it should);
                                 with a small RTO.Min that would retransmit
                                 into a dead path at a fixed, high rate
Association.Max     not used     aiortc never gives up on DATA
.Retrans (T3)                    retransmissions; a dead peer is only noticed
                                 by ICE consent (~30 s)
initial cwnd        3 x MTU      a 60 KB frame needs ~5 RTTs of slow start
cwnd ceiling        none         slow start runs up to the peer's 1 MiB rwnd
                                 (the sender never checks rwnd); on loopback
                                 the receiving socket overflowed (716 of 9099
                                 datagrams lost in an 8 MB transfer, counted
                                 in /proc/net/snmp RcvbufErrors), and every
                                 later SACK then carries gap blocks that
                                 aiortc walks in O(window) Python: CPU went
                                 to SACK processing instead of data
==================  ===========  ============================================

Delayed SACK is *not* a problem here: aiortc's receiver sends a SACK at the end
of every packet that carried DATA (``_handle_data``), so there is no 200 ms
SACK timer to tune.

We keep aiortc's RTO *estimator* (RFC 6298 SRTT/RTTVAR with alpha 1/8, beta
1/4) and only change the clamps, the initial values and the back-off, via a
subclass: the stock class and its module constants stay untouched, so a
default data channel in the same process (the benchmark's baseline) keeps RFC
behaviour.

Nothing here is imported at module import time from aiortc: call
:func:`tuned_sctp_transport_class` to get the subclass (aiortc loads PyAV,
~0.3 s).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

logger = logging.getLogger("shortpath.transport.sctp")


@dataclass(frozen=True)
class SctpTuning:
    """The SCTP knobs we change, each with its reason."""

    # Floor of the retransmission timeout. The computed RTO is
    # SRTT + 4*RTTVAR, which on any real path is already above the RTT; the
    # floor only matters on short paths (LAN, loopback), where it decides how
    # long a lone lost message waits. 40 ms is a few LAN RTTs plus the
    # scheduling jitter of a busy Python event loop (SACKs are processed in
    # the same loop as everything else, so a loop stalled for a few ms by a
    # big frame would otherwise trigger spurious retransmissions), and it is
    # 25x faster than RFC 4960's 1 s.
    rto_min: float = 0.040

    # RTO before the first RTT sample (INIT, COOKIE-ECHO, first DATA).
    # 250 ms covers intercontinental RTTs (~200 ms) so the first exchange is
    # not retransmitted spuriously, yet recovers 12x faster than 3 s.
    rto_initial: float = 0.250

    # Ceiling of the RTO after back-off. Liveness is judged by the session
    # layer (probes), so a long ceiling only makes the path slow to resume
    # after a short outage; 1.5 s keeps the probing rate on a dead path low
    # (<1 packet/s) while resuming within ~1.5 s once the path comes back.
    rto_max: float = 1.5

    # Double the RTO on each T3 (and T1) expiry, as RFC 4960 6.3.3 E2 asks
    # and aiortc omits. With rto_min at 40 ms this is what keeps a blackholed
    # path from being hammered at 25 packets/s.
    backoff: float = 2.0

    # Consecutive T3 expiries without any acknowledgement after which the
    # association is declared dead (RFC 4960 Association.Max.Retrans = 10).
    # With the values above that is ~0.04+0.08+...+1.5 s ~= 8 s of silence;
    # the session layer usually fails over earlier from its own probes.
    max_retrans: int = 10

    # Initial congestion window in DATA chunks. RFC 4960 gives ~4 KB (3-4
    # chunks); 10 chunks follows TCP's IW10 (RFC 6928), so a 12 KB burst (a
    # typical small screen update) leaves in the first RTT and a 60 KB frame
    # needs ~3 RTTs of slow start instead of ~5.
    initial_cwnd_chunks: int = 10

    # Ceiling of the congestion window (bytes in flight). aiortc ignores the
    # peer's advertised window, and a flight larger than the receiver's UDP
    # socket buffer (2 MiB here, i.e. ~1 MB of 1.2 KB datagrams once kernel
    # overhead is counted) is dropped by the receiving kernel. 256 KiB keeps
    # well below that, and still allows ~20 Mbit/s at 100 ms RTT, which is
    # more than a Python SCTP stack pushes anyway (~3 MB/s measured on
    # loopback, see udp_bench). Measured on loopback with both peers in one
    # process, 16 MB in 60 KB messages: no cap -> 716 datagrams lost, 2.5 MB/s;
    # 256 KiB -> none lost, 2.8 MB/s.
    max_cwnd_bytes: int = 256 * 1024

    # Congestion window right after a T3 expiry, in DATA chunks (RFC 4960
    # 7.2.3 says 1 MTU). With rto_min at 40 ms a T3 is often just a loss that
    # fast retransmit had no time to catch, and interactive traffic (100 input
    # events/s on both channels, ~0.5 KB per 10 ms) needs more than one MTU per
    # RTT: with 1 MTU everything queued behind, unreliable datagrams included
    # (both channels share one FIFO), waited a round trip after each T3. Measured
    # in the lab at 40 ms RTT + 2 % loss (benchmarks/lab_paths.py): 7-10 T3
    # expiries in 4 s, and datagram events late by 40-100 ms after each.
    # 4 chunks is RFC 4960's minimum ssthresh. 1 = RFC behaviour.
    t3_cwnd_chunks: int = 4

    # On T3, aiortc marks every chunk not cumulatively acknowledged for
    # retransmission, including chunks the peer already reported received in
    # SACK gap blocks. aiortc's receiver never reneges on gap-acked data, so
    # those resends are pure waste: with 3 frames (~120 KB) in flight, one lost
    # chunk made the host re-encrypt and resend ~100 packets, a CPU burst that
    # delayed everything else in its event loop. True = resend only chunks not
    # gap-acked (as TCP does with SACK after an RTO); False = aiortc behaviour.
    t3_skip_gap_acked: bool = True


DEFAULT_TUNING = SctpTuning()


@lru_cache(maxsize=None)
def tuned_sctp_transport_class() -> type:
    """Return (and cache) an ``RTCSctpTransport`` subclass applying tuning.

    The tuning object is passed per instance (``tuning=``), the class is
    created once, lazily, because it needs aiortc.
    """
    from aiortc.rtcsctptransport import (  # lazy: pulls in PyAV
        USERDATA_MAX_LENGTH,
        RTCSctpTransport,
    )

    class TunedSctpTransport(RTCSctpTransport):  # type: ignore[misc]
        """aiortc SCTP with our timers, T3/T1 back-off and a retransmit limit.

        ``on_dead`` (if set) is called once when ``max_retrans`` consecutive
        T3 expiries happened without progress. Sending errors raised by the
        DTLS layer (path closed) are swallowed and counted, because aiortc
        sends from fire-and-forget tasks whose exceptions would otherwise be
        logged as "Task exception was never retrieved".
        """

        def __init__(self, transport: Any, port: int = 5000, *, tuning: SctpTuning = DEFAULT_TUNING) -> None:
            super().__init__(transport, port=port)
            self._sp_tuning = tuning
            self._rto = tuning.rto_initial
            self._cwnd = min(tuning.initial_cwnd_chunks * USERDATA_MAX_LENGTH, tuning.max_cwnd_bytes)
            self.sp_t3_expiries = 0
            self.sp_t3_consecutive = 0
            self.sp_send_errors = 0
            self.sp_dead = False
            self.on_dead: Any = None
            # Called after every SACK and every data-channel flush: the moments
            # the send backlog can shrink (drives UdpPath.drain()).
            self.on_progress: Any = None
            #: time.monotonic() of the last SCTP packet from the peer. It reaches us
            #: only through DTLS, so a spoofed datagram cannot move it; the path
            #: driver reads it as packet-level liveness (session/driver.py).
            self.sp_last_rx: Optional[float] = None

        async def _handle_data(self, data: bytes) -> None:
            self.sp_last_rx = time.monotonic()
            await super()._handle_data(data)

        # --- RTO ---------------------------------------------------------
        def _update_rto(self, R: float) -> None:
            super()._update_rto(R)  # keeps the RFC 6298 SRTT/RTTVAR filter
            t = self._sp_tuning
            assert self._srtt is not None and self._rttvar is not None
            self._rto = max(t.rto_min, min(self._srtt + 4 * self._rttvar, t.rto_max))

        def _sp_back_off(self) -> None:
            t = self._sp_tuning
            self._rto = min(self._rto * t.backoff, t.rto_max)

        # --- timers ------------------------------------------------------
        def _t1_expired(self) -> None:
            # INIT / COOKIE-ECHO lost: back off before the resend is armed.
            self._sp_back_off()
            super()._t1_expired()

        def _sp_t3_cwnd_floor(self) -> None:
            # aiortc set cwnd to 1 MTU and scheduled _transmit() (not run yet):
            # raise it before that runs. See SctpTuning.t3_cwnd_chunks.
            floor = self._sp_tuning.t3_cwnd_chunks * USERDATA_MAX_LENGTH
            if self._cwnd < floor:
                self._cwnd = floor
            if self._sp_tuning.t3_skip_gap_acked:
                # gap-acked chunks are not in flight (their SACK took them out of
                # flight_size), so un-marking them needs no other bookkeeping
                for chunk in self._sent_queue:
                    if chunk._acked and chunk._retransmit:
                        chunk._retransmit = False

        def _t3_expired(self) -> None:
            self.sp_t3_expiries += 1
            self.sp_t3_consecutive += 1
            # Back off first: the retransmission that super() schedules
            # restarts T3 with self._rto.
            self._sp_back_off()
            super()._t3_expired()
            self._sp_t3_cwnd_floor()
            if self.sp_t3_consecutive >= self._sp_tuning.max_retrans and not self.sp_dead:
                self.sp_dead = True
                logger.info("sctp: %d consecutive T3 expiries, declaring the association dead",
                            self.sp_t3_consecutive)
                if self.on_dead is not None:
                    self.on_dead()

        async def _receive_sack_chunk(self, chunk: Any) -> None:
            before = self._last_sacked_tsn
            await super()._receive_sack_chunk(chunk)
            if self._cwnd > self._sp_tuning.max_cwnd_bytes:
                self._cwnd = self._sp_tuning.max_cwnd_bytes
            if self._last_sacked_tsn != before or not self._sent_queue:
                self.sp_t3_consecutive = 0
            if self.on_progress is not None:
                self.on_progress()

        async def _data_channel_flush(self) -> None:
            await super()._data_channel_flush()
            if self.on_progress is not None:
                self.on_progress()

        # --- sending -----------------------------------------------------
        async def _send_chunk(self, chunk: Any) -> None:
            try:
                await super()._send_chunk(chunk)
            except ConnectionError:
                self.sp_send_errors += 1

    return TunedSctpTransport
