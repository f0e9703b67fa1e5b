"""Path MTU search for the SCTP association, from inside the association (pure, sans-I/O).

Why
---
aiortc sizes every DATA chunk so that the whole packet fits the IPv6 minimum MTU (1280 bytes)
after DTLS, UDP, IP and a TURN header: an SCTP packet of at most 1189 bytes, 1160 user bytes a
chunk. That is safe everywhere and wasteful on the paths we actually see, where the MTU is
1500: each packet then carries 93 bytes of headers (IPv4 20, UDP 8, DTLS 1.2 with AES-GCM 37,
SCTP 12 + 16) for 1160 bytes of data, 7.4 % of the wire, against 3.5 % for a 1448-byte TCP
segment. On a link that the stream saturates (lab profile ``bw10``) that difference is the
frames the relay delivers and we do not; and every packet costs our Python stack about the
same CPU whatever its size (one process over loopback moved 15.4 MB/s with 1160-byte chunks and
18.2 MB/s with 1404-byte ones, two alternating pairs each).

How (after RFC 8899, Datagram PLPMTUD, in a simplified form)
-------------------------------------------------------------
Nothing is learnt from ICMP: a UDP socket under asyncio never sees it, and it is often filtered.
Instead the sender *probes*: it sends SCTP HEARTBEAT chunks whose Heartbeat Information is
padded so that the whole SCTP packet has a candidate size. Every SCTP receiver must echo the
information unchanged in a HEARTBEAT-ACK (RFC 9260 8.3), so an ack of that size means the path
carried a packet of that size **both ways** (stricter than RFC 8899's PAD-chunk probe, whose
ack is small: we would rather miss a larger MTU in one direction than lose data).

* Probes are sent only after the association is up, inside DTLS (a probe is authenticated like
  any other chunk) and carry a random 8-byte nonce, so a stale or foreign ack cannot confirm a
  size.
* All candidates above the confirmed size go out at once, one packet each (~10 KB once per
  association): the largest one acknowledged wins, in one round trip on ordinary paths. A
  round ends when the largest candidate is acked or after ``ROUND_TIMEOUT_RTTS`` smoothed RTTs
  (clamped to ``ROUND_TIMEOUT_MIN..MAX``). Candidates still above the confirmed size are sent
  again, for ``MAX_ROUNDS`` rounds in all (RFC 8899's MAX_PROBES is 3), so one random loss does
  not cost the larger size.
* A search that settles below the largest candidate is repeated after ``RAISE_INTERVAL``
  (RFC 8899's PMTU_RAISE_TIMER, 600 s): the path may have changed.
* **Black hole**: if the association sees ``BLACK_HOLE_T3`` retransmission timeouts in a row
  while sending above the base size, the packets may be vanishing because they are too large
  (a route change onto a tunnel, say). The size drops back to the base at once and a new
  search starts ``BLACK_HOLE_RETRY`` later: if the timeouts were an outage, not the size, the
  probes say so within a round trip.

Probes are not counted by the congestion controller and their loss is not congestion (RFC 8899
4.5): a handful of packets once per search.

Candidate sizes (SCTP packet bytes; user data per chunk is 28 fewer, rounded down to 4):
1432 is IPv4 on a 1500-byte link with DTLS 1.2 AES-GCM (20 + 8 + 37 + 1432 = 1497); 1428 the
same through a TURN channel (4 more bytes); 1412 IPv6 on a 1500 link; 1392, 1352, 1292, 1232
leave room for tunnels (IPsec, WireGuard at 1420, PPPoE at 1492) and larger cipher overheads.
The base, 1188, is aiortc's own size (12 + 16 + 1160), which fits the IPv6 minimum MTU.

**Relayed paths** cannot be probed this way: the TURN relay's kernel fragments a datagram that
no longer fits once the 4-byte channel header is added, so every probe is acknowledged and the
fragments double the loss rate. A path through TURN (ours or the peer's relay candidate) is
capped at RELAYED_MAX_PACKET (1428) instead: see TURN_CHANNEL_OVERHEAD. Not covered: an IPv6
path through TURN (1412 - 4 is not a candidate; it may still use 1412 and be fragmented).

The chunk already queued keeps the size it was cut at; only messages queued after a change use
the new one. A chunk lost in a black hole is still resent at its size: with Linux's default
``IP_PMTUDISC_WANT`` the kernel fragments it once an ICMP "too big" reached it; where ICMP is
filtered too, the path's stall detection moves the session to the relay, which loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

#: aiortc's SCTP packet size (common header 12 + DATA header 16 + 1160 user bytes): the size
#: that fits the IPv6 minimum MTU after DTLS, UDP, IPv6 and a TURN channel header.
BASE_PACKET = 1188
#: Sizes probed, largest first (see the module doc for what each one fits).
CANDIDATES = (1432, 1428, 1412, 1392, 1352, 1292, 1232)
#: Bytes a TURN channel adds to every datagram on the TURN client's own link (the ChannelData
#: header, RFC 8656 section 12.4), so a path through a TURN relay carries 4 bytes less. Probing
#: cannot see it: the relay's kernel *fragments* a datagram too large for its link rather than
#: drop it, so the 1432-byte probe is acknowledged, and then every full-size packet crosses the
#: TURN client's link as two IP fragments and is lost when either is. Measured in the lab
#: (udp-turn against udp-direct, 40 ms + 1 % loss each way, 12 s of frames): 173 resends
#: against 82, i.e. twice the loss; TURN's frame p50 was 40 ms against 25 in the full run.
TURN_CHANNEL_OVERHEAD = 4
#: The largest SCTP packet a relayed path may use (see :meth:`PmtuSearch.limit`).
RELAYED_MAX_PACKET = CANDIDATES[0] - TURN_CHANNEL_OVERHEAD
#: SCTP bytes around the padded Heartbeat Information: common header 12, chunk header 4,
#: parameter header 4.
PROBE_OVERHEAD = 20
#: SCTP bytes around a DATA chunk's user data: common header 12, DATA chunk header 16.
DATA_OVERHEAD = 28
#: Bytes of nonce that start every probe's Heartbeat Information.
NONCE_BYTES = 8
#: Rounds of probes per search (RFC 8899's MAX_PROBES).
MAX_ROUNDS = 3
#: A round lasts this many smoothed RTTs, within these bounds (seconds). Before any RTT sample
#: the maximum applies.
ROUND_TIMEOUT_RTTS = 3.0
ROUND_TIMEOUT_MIN = 0.25
ROUND_TIMEOUT_MAX = 2.0
#: A search that stopped below the largest candidate is repeated after this long (RFC 8899).
RAISE_INTERVAL = 600.0
#: Consecutive T3 expiries above the base size that count as a possible black hole ...
BLACK_HOLE_T3 = 2
#: ... after which the next search starts this long later (seconds).
BLACK_HOLE_RETRY = 5.0

IDLE, SEARCHING, DONE = "idle", "searching", "done"


@dataclass(frozen=True)
class Probe:
    """One probe to send: a HEARTBEAT whose Heartbeat Information is ``info`` (so that the SCTP
    packet is ``size`` bytes)."""
    size: int
    info: bytes


def chunk_payload(packet_size: int) -> int:
    """User bytes per DATA chunk for an SCTP packet of ``packet_size`` (a multiple of 4, as
    chunks are padded to 4 bytes)."""
    return (packet_size - DATA_OVERHEAD) // 4 * 4


class PmtuSearch:
    """The search state machine: takes ``now`` (seconds), the smoothed RTT and the acks; says
    which probes to send, when its timer is due and which packet size is confirmed.

    ``nonce`` (8 random bytes, chosen by the caller) identifies this association's probes.
    """

    def __init__(self, nonce: bytes, base: int = BASE_PACKET,
                 candidates: Sequence[int] = CANDIDATES, max_rounds: int = MAX_ROUNDS) -> None:
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes, not {len(nonce)}")
        sizes = sorted({int(c) for c in candidates if int(c) > base}, reverse=True)
        if any(s % 4 or s < PROBE_OVERHEAD + NONCE_BYTES for s in sizes):
            raise ValueError("candidate sizes must be multiples of 4 that hold a probe")
        self._nonce = bytes(nonce)
        self.base = base
        self.candidates = tuple(sizes)
        self.max_rounds = max_rounds
        #: the largest SCTP packet size the path has carried (base until a probe says more)
        self.packet_size = base
        self.state = IDLE
        self._due: Optional[float] = None       # when on_timer wants to run
        self._round = 0
        self._outstanding: set[int] = set()     # sizes probed this round, not yet acked
        #: counters for stats: probes sent, acks matched, searches, black holes
        self.probes_sent = 0
        self.acks = 0
        self.searches = 0
        self.black_holes = 0

    # ---- read-outs -----------------------------------------------------------------------
    @property
    def chunk_payload(self) -> int:
        """User bytes per DATA chunk at the confirmed packet size."""
        return chunk_payload(self.packet_size)

    def timer(self) -> Optional[float]:
        """When :meth:`on_timer` should next be called (None: nothing pending)."""
        return self._due

    def stats(self) -> dict:
        return {"state": self.state, "packet_size": self.packet_size,
                "chunk_payload": self.chunk_payload, "probes_sent": self.probes_sent,
                "acks": self.acks, "searches": self.searches, "black_holes": self.black_holes}

    # ---- events --------------------------------------------------------------------------
    def limit(self, max_packet: int) -> bool:
        """Never use or probe an SCTP packet above ``max_packet`` bytes (a relayed path:
        RELAYED_MAX_PACKET). May come at any time: a size already confirmed above it drops to
        ``max_packet`` (what carried a larger packet carries this one), never under the base.
        True if the confirmed size dropped (the caller cuts smaller chunks from then on)."""
        self.candidates = tuple(c for c in self.candidates if c <= max_packet)
        self._outstanding = {s for s in self._outstanding if s <= max_packet}
        if self.packet_size <= max_packet:
            return False
        self.packet_size = max(max_packet - max_packet % 4, self.base)
        return True

    def start(self, now: float, srtt: Optional[float]) -> list[Probe]:
        """Begin a search (the association just came up, or the caller wants one now)."""
        if not self.candidates:
            self.state, self._due = DONE, None
            return []
        self.state = SEARCHING
        self.searches += 1
        self._round = 0
        return self._next_round(now, srtt)

    def on_ack(self, now: float, info: bytes) -> bool:
        """A HEARTBEAT-ACK arrived carrying ``info``. True if the confirmed size grew."""
        size = len(info) + PROBE_OVERHEAD
        if info[:NONCE_BYTES] != self._nonce or size not in self._outstanding:
            return False                      # not ours, not of this round, or already counted
        self._outstanding.discard(size)
        self.acks += 1
        grew = size > self.packet_size
        if grew:
            self.packet_size = size
        if self.state == SEARCHING and not any(s > self.packet_size for s in self._outstanding):
            self._finish(now)                 # nothing larger can still come back
        return grew

    def on_timer(self, now: float, srtt: Optional[float]) -> list[Probe]:
        """The timer fell due: end the round (and maybe start the next) or start a new search."""
        if self._due is None or now < self._due:
            return []
        if self.state == SEARCHING:
            if self._round < self.max_rounds and any(s > self.packet_size for s in self.candidates):
                return self._next_round(now, srtt)
            self._finish(now)
            return []
        return self.start(now, srtt)          # raise timer or black-hole retry

    def on_black_hole(self, now: float, consecutive_t3: int) -> bool:
        """The sender saw ``consecutive_t3`` timeouts in a row. True if that dropped the packet
        size back to the base (the caller cuts smaller chunks from then on)."""
        if consecutive_t3 < BLACK_HOLE_T3 or self.packet_size <= self.base:
            return False
        self.packet_size = self.base
        self.black_holes += 1
        self.state = IDLE
        self._outstanding.clear()
        self._due = now + BLACK_HOLE_RETRY
        return True

    # ---- internals -----------------------------------------------------------------------
    def _next_round(self, now: float, srtt: Optional[float]) -> list[Probe]:
        self._round += 1
        sizes = [s for s in self.candidates if s > self.packet_size]
        self._outstanding = set(sizes)
        if srtt is None or srtt <= 0:
            timeout = ROUND_TIMEOUT_MAX
        else:
            timeout = min(max(ROUND_TIMEOUT_RTTS * srtt, ROUND_TIMEOUT_MIN), ROUND_TIMEOUT_MAX)
        self._due = now + timeout
        self.probes_sent += len(sizes)
        return [Probe(s, self._nonce + bytes(s - PROBE_OVERHEAD - NONCE_BYTES)) for s in sizes]

    def _finish(self, now: float) -> None:
        self.state = DONE
        self._outstanding.clear()
        largest = self.candidates[0] if self.candidates else self.base
        self._due = None if self.packet_size >= largest else now + RAISE_INTERVAL
