"""Every private aiortc name shortpath relies on, in one place, each with why.

aiortc's public ORTC API (RTCIceTransport, RTCDtlsTransport, RTCSctpTransport, RTCDataChannel)
does not let us replace the SCTP sender's congestion control, pacing and loss recovery, nor read
its queues. Where we must reach inside, we do it here and nowhere else, so that an aiortc upgrade
is checked in one file. pyproject.toml pins the aiortc versions these names were read from, and
tests/unit/test_compat_canary.py fails, naming the name, when one of them is gone.

Convention: PRIVATE_NAMES lists (dotted owner, attribute, why). An attribute of an *instance*
(set in __init__, so not visible on the class) is listed with owner ending in "()" and is checked
by the canary on a freshly constructed object where that is cheap, or by reading the source.
"""

from __future__ import annotations

from functools import lru_cache

#: (owner, attribute, why we need it). Filled in as private uses move here.
PRIVATE_NAMES: list[tuple[str, str, str]] = []


# --- DTLS and data channels (not SCTP) ---
# Used by udp/upgrader.py and udp/path.py. aiortc's DTLS transport expects an aiortc
# RTCIceTransport below it; we give it our own datagram pipe (aioice agent or the managed
# listener), so we implement the two private methods it calls on that transport.

PRIVATE_NAMES.extend([
    ("aiortc.rtcicetransport.RTCIceTransport()", "_recv",
     "RTCDtlsTransport reads datagrams through transport._recv(); dtls_pipe() offers it over our "
     "own pipe (aioice agent or the shared managed listener) instead of an RTCIceTransport"),
    ("aiortc.rtcicetransport.RTCIceTransport()", "_send",
     "RTCDtlsTransport writes datagrams through transport._send(); see _recv"),
    ("aiortc.RTCDtlsTransport", "_set_role",
     "the DTLS role follows our session role (client = DTLS server), set explicitly rather than "
     "left to aiortc's ICE-role inference"),
    ("aiortc.RTCDtlsTransport()", "_ssl",
     "after a failed handshake, read the peer certificate to tell a fingerprint mismatch "
     "(FingerprintMismatch, an impostor) from a plain DTLS failure"),
])


PRIVATE_NAMES.append(
    ("aiortc.rtcicetransport.RTCIceTransport()", "_connection",
     "the aioice Connection under an RTCPeerConnection (the host's webrtc lane to a browser), "
     "so that _aioice_compat.follow_latest_nomination can fix its pair selection"))


def ice_connection(ice_transport):
    """The aioice ``Connection`` an aiortc ``RTCIceTransport`` runs on."""
    return ice_transport._connection


def dtls_pipe(recv, send, role: str):
    """What RTCDtlsTransport needs from its "ICE transport": ``role`` ("controlling" or
    "controlled"), ``_recv()`` and ``_send(data)``, built from two public coroutines."""
    return _DtlsPipe(recv, send, role)


class _DtlsPipe:
    def __init__(self, recv, send, role: str) -> None:
        self.role = role
        self._recv = recv    # the names aiortc's RTCDtlsTransport calls
        self._send = send


PRIVATE_NAMES.append(
    ("aiortc.RTCCertificate()", "_key",
     "tests only (test_secrets_in_logs): the DTLS private key, to prove it never reaches a log"))


def certificate_private_key(cert):
    """The private key of an aiortc RTCCertificate (tests: check that it is never logged)."""
    return cert._key


def set_dtls_role(dtls, role: str) -> None:
    """Fix the DTLS role ("server" or "client") before ``start()``."""
    dtls._set_role(role)


def dtls_peer_certificate(dtls):
    """The peer's certificate (cryptography x509) as far as the handshake got, or None."""
    ssl_conn = dtls._ssl
    if ssl_conn is None:
        return None
    return ssl_conn.get_peer_certificate(as_cryptography=True)


# --- SCTP state read by udp/path.py (buffered_amount, info()) ---
# Read-only views. The SCTP section of this module (sctp.py's owner) may supersede these with
# accessors of its own transport; path.py calls only the two functions below.

PRIVATE_NAMES.extend([
    ("aiortc.rtcsctptransport.RTCSctpTransport()", "_outbound_queue",
     "bytes queued in SCTP but not yet sent count towards UdpPath.buffered_amount (back-pressure)"),
    ("aiortc.rtcsctptransport.RTCSctpTransport()", "_rto", "path stats: current retransmission timeout"),
    ("aiortc.rtcsctptransport.RTCSctpTransport()", "_srtt", "path stats: SCTP's smoothed RTT"),
    ("aiortc.rtcsctptransport.RTCSctpTransport()", "_cwnd", "path stats: congestion window"),
    ("aiortc.rtcsctptransport.RTCSctpTransport()", "_flight_size", "path stats: bytes in flight"),
])


def sctp_queued_bytes(sctp) -> int:
    """User bytes accepted by SCTP and not yet sent (waiting for the congestion window)."""
    own = getattr(sctp, "sp_queued_bytes", None)   # our sender (sctp.py) keeps its own queues
    if own is not None:
        return own
    return sum(len(chunk.user_data) for chunk in sctp._outbound_queue)


def sctp_state(sctp) -> dict:
    """SCTP sender figures for stats: rto and srtt (seconds), cwnd and flight size (bytes)."""
    out = {"rto": sctp._rto, "srtt": sctp._srtt, "cwnd": sctp._cwnd, "flight_size": sctp._flight_size}
    own = getattr(sctp, "sp_stats", None)          # our sender adds its controller's figures
    if own is not None:
        out.update(own())
    return out


# --- SCTP sender (sctp.py) ---
# aiortc's association sends with NewReno (every loss halves cwnd, T3 drops it to one MTU), no
# pacing, one FIFO for every data channel, and acknowledges every packet. We keep its association
# set-up, chunk formats, receiver, PR-SCTP and data-channel logic (so the wire is a standard
# WebRTC DTLS/SCTP association a browser talks to) and replace only the *sender's policy*:
# :func:`sctp_hook_class` overrides the private methods where aiortc decides what to send and when,
# and hands each decision to public ``sp_*`` hooks that shortpath.transport.udp.sctp implements,
# with ``sp_*`` helpers that do the private bookkeeping (TSNs, flight size, T3, chunk flags).
# sctp.py uses only those; every private name it relies on is listed here.

_SCTP = "aiortc.rtcsctptransport.RTCSctpTransport"
_CHUNK = "aiortc.rtcsctptransport.DataChunk()"

PRIVATE_NAMES.extend([
    # methods replaced or wrapped (hooks into the sender and receiver)
    (_SCTP, "_send", "replaced: a message becomes DATA chunks without a TSN, queued in our sender; the TSN "
     "is given when the chunk leaves, so a datagram can go before queued reliable data and an expired "
     "one is dropped without using a TSN"),
    (_SCTP, "_transmit", "replaced by our pump: cwnd and pacing from our controller, datagrams first, "
     "RACK retransmissions and tail-loss probes"),
    (_SCTP, "_receive_sack_chunk", "replaced: each SACK feeds our controller and RACK, not NewReno"),
    (_SCTP, "_t3_expired", "replaced: T3 resends what the peer has not acknowledged (gap-acked chunks "
     "excepted), tells the controller, backs the RTO off; no collapse to one MTU"),
    (_SCTP, "_t1_expired", "wrapped: RTO back-off before INIT / COOKIE-ECHO is resent"),
    (_SCTP, "_update_rto", "wrapped: aiortc's RFC 6298 filter with our clamps"),
    (_SCTP, "_send_sack", "wrapped: the receiver acknowledges every few packets or after a short delay, "
     "at once when a new gap opens, a gap fills or a duplicate arrives"),
    (_SCTP, "_mark_received", "replaced: aiortc sorts and filters every TSN held above a gap on each "
     "DATA chunk (O(n log n) per packet while any gap is open, i.e. all the time at 1-5 % loss); ours "
     "is O(1) per chunk, right across the TSN wrap (aiortc's numeric sort stalls its cumulative TSN "
     "there when a gap is open), and notes whether the chunk changed the gap picture"),
    (_SCTP, "_receive_forward_tsn_chunk", "wrapped: the SACK answering a FORWARD TSN goes at once"),
    (_SCTP, "_receive_chunk", "wrapped: a HEARTBEAT-ACK goes to sp_on_heartbeat_ack (path MTU probes, "
     "pmtu.py); every other chunk to aiortc"),
    (_SCTP, "_set_state", "wrapped: sp_on_established when the association reaches ESTABLISHED"),
    (_SCTP + ".State", "ESTABLISHED", "the association state _set_state is compared with"),
    ("aiortc.rtcsctptransport", "HeartbeatChunk", "built by sp_send_heartbeat (params: [(1, info)])"),
    ("aiortc.rtcsctptransport", "HeartbeatAckChunk", "recognised in _receive_chunk"),
    (_SCTP, "_handle_data", "wrapped: time of the last packet from the peer (path liveness)"),
    (_SCTP, "_send_chunk", "called to send one chunk; wrapped to count, not raise, errors of a closed "
     "DTLS transport (aiortc sends from fire-and-forget tasks)"),
    (_SCTP, "_data_channel_flush", "wrapped: progress callback (UdpPath.drain)"),
    (_SCTP, "_transmit_reconfig", "wrapped: a stream reset waits for that stream's chunks still queued "
     "in our sender (they have no TSN yet)"),
    (_SCTP, "_get_inbound_stream", "replaced: the receiver's per-stream reassembly is our "
     "_QuickInboundStream (skips the reassembly scan while no message can be complete)"),
    ("aiortc.rtcsctptransport", "InboundStream", "subclassed by _QuickInboundStream (add_chunk, "
     "pop_messages, prune_chunks and reassembly are its interface)"),
    (_SCTP + "()", "_inbound_streams", "the receiver's reassembly per stream id (_get_inbound_stream)"),
    (_SCTP, "_maybe_abandon", "called: PR-SCTP abandonment of a lost partially reliable chunk"),
    (_SCTP, "_update_advanced_peer_ack_point", "called after a SACK or T3: FORWARD TSN over abandoned chunks"),
    (_SCTP, "_flight_size_increase", "called: flight size bookkeeping shared with aiortc"),
    (_SCTP, "_flight_size_decrease", "called: flight size bookkeeping shared with aiortc"),
    (_SCTP, "_t3_start", "called (T3 runs while data is outstanding); wrapped to note when"),
    (_SCTP, "_t3_restart", "called (T3 restarts on acknowledged data); wrapped to note when"),
    (_SCTP, "_t3_cancel", "called: T3 stops when nothing is outstanding"),
    # association state read or written by the helpers
    (_SCTP + "()", "_sent_queue", "chunks with a TSN not yet cumulatively acknowledged, in TSN order"),
    (_SCTP + "()", "_outbound_stream_seq", "stream sequence numbers of ordered messages (_send)"),
    (_SCTP + "()", "_local_tsn", "next TSN, given when a chunk is first sent"),
    (_SCTP + "()", "_last_sacked_tsn", "cumulative TSN acknowledged by the peer"),
    (_SCTP + "()", "_forward_tsn_chunk", "FORWARD TSN to send before data (PR-SCTP)"),
    (_SCTP + "()", "_t3_handle", "whether T3 runs"),
    (_SCTP + "()", "_rttvar", "RTO clamp after aiortc's filter"),
    (_SCTP + "()", "_loop", "the event loop aiortc's timers use; our pacing and RACK timers too"),
    (_SCTP + "()", "_sack_misordered", "receiver: TSNs above a gap (a SACK then goes at once)"),
    (_SCTP + "()", "_sack_duplicates", "receiver: duplicate TSNs to report (a SACK then goes at once)"),
    (_SCTP + "()", "_sack_needed", "receiver: a delayed SACK is still owed"),
    (_SCTP + "()", "_reconfig_queue", "streams waiting to be reset"),
    # per-chunk sender state aiortc keeps on DataChunk (annotated on the class, set in _send)
    (_CHUNK, "_acked", "gap-acknowledged (not in flight, not resent)"),
    (_CHUNK, "_abandoned", "PR-SCTP gave it up (FORWARD TSN skips it)"),
    (_CHUNK, "_book_size", "bytes the chunk counts in the flight size"),
    (_CHUNK, "_expiry", "wall-clock deadline of a maxPacketLifeTime channel"),
    (_CHUNK, "_in_flight", "whether the chunk counts in the flight size"),
    (_CHUNK, "_max_retransmits", "PR-SCTP retransmission limit (0 for our datagram channel)"),
    (_CHUNK, "_misses", "aiortc's fast-retransmit strike count (reset on resend)"),
    (_CHUNK, "_retransmit", "marked for retransmission"),
    (_CHUNK, "_sent_count", "transmissions so far (PR-SCTP limit)"),
    (_CHUNK, "_sent_time", "wall-clock time of the last transmission"),
])


def sctp_datagram_backlog(sctp) -> int | None:
    """User bytes of unreliable messages queued in our sender's datagram lane and not yet sent;
    None for aiortc's stock transport (one FIFO: only its whole backlog means anything)."""
    return getattr(sctp, "sp_lane_bytes", None)


@lru_cache(maxsize=None)
def sctp_hook_class() -> type:
    """aiortc's ``RTCSctpTransport`` with its sender policy turned into ``sp_*`` hooks.

    A subclass implements::

        sp_enqueue(chunks, datagram)       a message's DATA chunks (no TSN yet); datagram=True for
                                           an unordered partially reliable message
        async sp_pump()                    send what may be sent now (called where aiortc would
                                           call _transmit: after a send, a SACK, a T3)
        sp_on_sack(cum, gaps, rwnd, advanced)  a SACK not older than the last one; gaps are (start,
                                           end) offsets from cum, as on the wire
        sp_on_t3()                         T3 expired (the handle is already cleared)
        sp_on_t1()                         T1 expired, before aiortc resends
        sp_rto_clamp(srtt, rttvar) -> rto  RTO after a new RTT sample
        sp_sack_now(gap) -> bool           send the owed SACK now? (else the subclass sends it
                                           later with sp_send_owed_sack)
        sp_on_packet()                     an SCTP packet from the peer is being handled
        sp_on_flushed()                    data channels handed their messages to SCTP
        sp_has_queued(stream_ids) -> bool  chunks of those streams still wait in the sender
    """
    import math
    import time

    from aiortc import rtcsctptransport as m
    from aiortc.utils import uint16_add, uint32_gt, uint32_gte

    base = m.RTCSctpTransport
    max_len = m.USERDATA_MAX_LENGTH
    unordered, first, last = m.SCTP_DATA_UNORDERED, m.SCTP_DATA_FIRST_FRAG, m.SCTP_DATA_LAST_FRAG

    class _QuickInboundStream(m.InboundStream):
        """aiortc's reassembly, minus its per-chunk rescan: ``pop_messages`` walks the whole
        reassembly list on every DATA chunk, which is quadratic in the fragments of a large
        message (a 60 KB frame is 52 chunks; on loopback bulk this was the receiver's largest
        Python cost). No message can come out while no chunk of the list ends a message, so
        then it returns at once; otherwise it is aiortc's walk, unchanged."""

        def __init__(self) -> None:
            super().__init__()
            self.sp_last_frags = 0    # chunks in self.reassembly with the LAST_FRAG flag

        def add_chunk(self, chunk) -> None:
            super().add_chunk(chunk)
            if chunk.flags & last:
                self.sp_last_frags += 1

        def pop_messages(self):
            if not self.sp_last_frags:
                return
            try:
                yield from super().pop_messages()
            finally:
                self.sp_last_frags = sum(1 for c in self.reassembly if c.flags & last)

        def prune_chunks(self, tsn: int) -> int:
            size = super().prune_chunks(tsn)
            self.sp_last_frags = sum(1 for c in self.reassembly if c.flags & last)
            return size

    class SctpHooks(base):  # type: ignore[misc,valid-type]
        #: Most user bytes in one DATA chunk.
        sp_max_chunk = max_len

        # ---- aiortc's private methods, turned into hooks ---------------------------------
        async def _send(self, stream_id: int, pp_id: int, user_data: bytes, expiry=None,
                        max_retransmits=None, ordered: bool = True) -> None:
            if ordered:
                stream_seq = self._outbound_stream_seq.get(stream_id, 0)
                self._outbound_stream_seq[stream_id] = uint16_add(stream_seq, 1)
            else:
                stream_seq = 0
            max_len = self.sp_max_chunk     # may grow once the path MTU search confirms more
            n = max(1, math.ceil(len(user_data) / max_len))
            chunks = []
            for i in range(n):
                chunk = m.DataChunk()
                flags = 0 if ordered else unordered
                if i == 0:
                    flags |= first
                if i == n - 1:
                    flags |= last
                chunk.flags = flags
                chunk.tsn = None          # given when first sent (sp_stage)
                chunk.stream_id = stream_id
                chunk.stream_seq = stream_seq
                chunk.protocol = pp_id
                chunk.user_data = user_data[i * max_len:(i + 1) * max_len]
                chunk._abandoned = False
                chunk._acked = False
                chunk._book_size = len(chunk.user_data)
                chunk._expiry = expiry
                chunk._in_flight = False
                chunk._max_retransmits = max_retransmits
                chunk._misses = 0
                chunk._retransmit = False
                chunk._sent_count = 0
                chunk._sent_time = None
                chunks.append(chunk)
            partial = max_retransmits is not None or expiry is not None
            self.sp_enqueue(chunks, partial and not ordered)
            await self._transmit()

        async def _transmit(self) -> None:
            await self.sp_pump()

        def _get_inbound_stream(self, stream_id: int):
            streams = self._inbound_streams
            stream = streams.get(stream_id)
            if stream is None:
                stream = streams[stream_id] = _QuickInboundStream()
            return stream

        async def _receive_sack_chunk(self, chunk) -> None:
            if uint32_gt(self._last_sacked_tsn, chunk.cumulative_tsn):
                return
            advanced = chunk.cumulative_tsn != self._last_sacked_tsn
            self._last_sacked_tsn = chunk.cumulative_tsn
            self.sp_on_sack(chunk.cumulative_tsn, chunk.gaps, chunk.advertised_rwnd, advanced)
            self._update_advanced_peer_ack_point()
            await self._data_channel_flush()
            await self._transmit()

        def _t3_expired(self) -> None:
            self._t3_handle = None
            self.sp_on_t3()

        def _t3_start(self) -> None:
            self.sp_t3_since = self._loop.time()
            super()._t3_start()

        def _t3_restart(self) -> None:
            self.sp_t3_since = self._loop.time()
            super()._t3_restart()

        def _t1_expired(self) -> None:
            self.sp_on_t1()
            super()._t1_expired()

        def _update_rto(self, R: float) -> None:
            super()._update_rto(R)
            self._rto = self.sp_rto_clamp(self._srtt, self._rttvar)

        #: The receiver owes a SACK at once: a gap opened or (partly) filled, a duplicate
        #: arrived, or a FORWARD TSN moved the cumulative TSN (see _mark_received).
        sp_sack_urgent = False

        async def _send_sack(self) -> None:
            if self.sp_sack_now(self.sp_sack_urgent or bool(self._sack_duplicates)):
                self.sp_sack_urgent = False
                await super()._send_sack()

        def _mark_received(self, tsn: int) -> bool:
            # Same outcome as aiortc's (duplicate -> True and listed; cumulative TSN and the set
            # of TSNs above it kept), in O(1) per chunk instead of a sort and two filters. Urgent
            # (a SACK at once): what the sender's loss detection needs soon -- the first chunk
            # after a hole (the hole's news), a chunk that fills a hole (cumulative TSN jumps),
            # a duplicate. A chunk that only extends the highest block waits for the normal
            # every-few-packets SACK, as QUIC acknowledges (RFC 9000 13.2.1): at 2 % loss a
            # hole is open most of the time, and SACKing every packet then doubled the SACK
            # rate, the receiver's and the sender's largest per-packet cost.
            cum = self._last_received_tsn
            held = self._sack_misordered
            if uint32_gte(cum, tsn) or tsn in held:
                self._sack_duplicates.append(tsn)
                self.sp_sack_urgent = True
                return True
            if self._sack_duplicates:   # as aiortc: only duplicates above the cumulative TSN stay
                self._sack_duplicates = [d for d in self._sack_duplicates if uint32_gt(d, cum)]
            nxt = (cum + 1) & 0xFFFFFFFF
            if tsn != nxt:
                if ((tsn - 1) & 0xFFFFFFFF) not in held:
                    self.sp_sack_urgent = True          # a new hole below this chunk
                held.add(tsn)
                return False
            cum = tsn
            if held:
                self.sp_sack_urgent = True              # a hole (partly) filled
                nxt = (cum + 1) & 0xFFFFFFFF
                while nxt in held:
                    held.discard(nxt)
                    cum = nxt
                    nxt = (cum + 1) & 0xFFFFFFFF
            self._last_received_tsn = cum
            if self._sack_duplicates:
                self._sack_duplicates = [d for d in self._sack_duplicates if uint32_gt(d, cum)]
            return False

        async def _receive_chunk(self, chunk) -> None:
            if isinstance(chunk, m.HeartbeatAckChunk):
                # aiortc sends no HEARTBEAT of its own and ignores acks; ours are path MTU probes
                for ptype, value in chunk.params:
                    if ptype == 1:             # Heartbeat Information (RFC 9260 3.3.5)
                        self.sp_on_heartbeat_ack(value)
                return
            await super()._receive_chunk(chunk)

        def _set_state(self, state) -> None:
            super()._set_state(state)
            if state == self.State.ESTABLISHED:
                self.sp_on_established()

        async def _receive_forward_tsn_chunk(self, chunk) -> None:
            self.sp_sack_urgent = True
            await super()._receive_forward_tsn_chunk(chunk)

        async def _handle_data(self, data: bytes) -> None:
            self.sp_on_packet()
            await super()._handle_data(data)

        async def _send_chunk(self, chunk) -> None:
            try:
                await super()._send_chunk(chunk)
            except ConnectionError:
                self.sp_send_errors += 1

        async def _data_channel_flush(self) -> None:
            await super()._data_channel_flush()
            self.sp_on_flushed()

        async def _transmit_reconfig(self) -> None:
            if self._reconfig_queue and self.sp_has_queued(self._reconfig_queue[:m.RECONFIG_MAX_STREAMS]):
                return  # retried after the next SACK (aiortc's flush calls us again)
            await super()._transmit_reconfig()

        # ---- helpers for the subclass: the private bookkeeping ---------------------------
        sp_send_errors = 0
        #: loop time T3 was last (re)started
        sp_t3_since = 0.0

        def sp_on_established(self) -> None:
            """Hook: the association just reached ESTABLISHED."""

        def sp_on_heartbeat_ack(self, info: bytes) -> None:
            """Hook: a HEARTBEAT-ACK echoed ``info`` (the Heartbeat Information we sent)."""

        async def sp_send_heartbeat(self, info: bytes) -> None:
            """Send one HEARTBEAT carrying ``info`` as its Heartbeat Information, alone in its
            packet (so the packet is ``len(info) + 20`` bytes, info padded to 4)."""
            chunk = m.HeartbeatChunk()
            chunk.params = [(1, info)]
            await self._send_chunk(chunk)

        async def sp_transmit(self) -> None:
            """Run the sender (what aiortc calls _transmit: our sp_pump)."""
            await self._transmit()

        def sp_advance_peer_ack_point(self) -> None:
            """After chunks were abandoned outside a SACK (a RACK timer): queue the FORWARD TSN."""
            self._update_advanced_peer_ack_point()

        def sp_t3_rearm(self, delay: float) -> None:
            """From sp_on_t3: T3 fired early (the RTO grew since it was armed): wait the rest."""
            self._t3_handle = self._loop.call_later(delay, self._t3_expired)

        @property
        def sp_loop(self):
            return self._loop

        @property
        def sp_flight_size(self) -> int:
            return self._flight_size

        @property
        def sp_rto(self) -> float:
            return self._rto

        @sp_rto.setter
        def sp_rto(self, value: float) -> None:
            self._rto = value

        @property
        def sp_srtt(self):
            return self._srtt

        @property
        def sp_cwnd_view(self) -> int:
            return self._cwnd

        @sp_cwnd_view.setter
        def sp_cwnd_view(self, value: int) -> None:
            self._cwnd = value   # what aiortc-minded readers (stats) see

        def sp_update_rtt(self, rtt: float) -> None:
            """A new RTT sample for the RTO (Karn: only from chunks sent once)."""
            self._update_rto(rtt)

        def sp_assign_tsns(self, chunks) -> None:
            """Give a whole message's chunks their TSNs (consecutive, as RFC 9260 6.9 requires
            of fragments) and append them to the queue of chunks awaiting acknowledgement; they
            are sent one by one afterwards (sp_stage). A chunk with a TSN but never sent is
            not in flight and not marked by T3."""
            tsn = self._local_tsn
            for chunk in chunks:
                chunk.tsn = tsn
                tsn = (tsn + 1) & 0xFFFFFFFF
                self._sent_queue.append(chunk)
            self._local_tsn = tsn

        def sp_stage(self, chunk) -> bool:
            """Book one DATA chunk (its TSN already assigned) as sent: flight size, counters, T3.
            Returns whether it is a first transmission. Call sp_wire(chunk) next."""
            new = chunk._sent_count == 0
            if not new:
                chunk._retransmit = False
                chunk._misses = 0
            self._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            if not new and self._sent_queue and self._sent_queue[0] is chunk:
                self._t3_restart()   # the earliest outstanding chunk is resent (as aiortc does)
            elif self._t3_handle is None:
                self._t3_start()
            return new

        async def sp_wire(self, chunk) -> None:
            await self._send_chunk(chunk)

        async def sp_send_forward_tsn(self) -> None:
            """Send the pending FORWARD TSN, if any (before data, as aiortc does)."""
            fwd = self._forward_tsn_chunk
            if fwd is not None:
                self._forward_tsn_chunk = None
                await self._send_chunk(fwd)
                if self._t3_handle is None:
                    self._t3_start()

        def sp_take_cum_acked(self, cum: int) -> list:
            """Remove and return the chunks the cumulative TSN covers."""
            q = self._sent_queue
            out = []
            while q and uint32_gte(cum, q[0].tsn):
                chunk = q.popleft()
                self._flight_size_decrease(chunk)
                out.append(chunk)
            return out

        def sp_mark_acked(self, chunk) -> None:
            """The peer reported the chunk in a gap block: out of flight, never resent."""
            chunk._acked = True
            chunk._retransmit = False
            self._flight_size_decrease(chunk)

        def sp_declare_lost(self, chunk) -> bool:
            """Take a chunk out of flight as lost. True = it is to be resent; False = it was
            acknowledged meanwhile, or PR-SCTP abandoned it (a FORWARD TSN will skip it)."""
            if chunk._acked or chunk._abandoned:
                return False
            self._flight_size_decrease(chunk)
            if self._maybe_abandon(chunk):
                return False
            chunk._retransmit = True
            return True

        def sp_t3_mark(self, skip_gap_acked: bool) -> list:
            """T3: every chunk not acknowledged goes out of flight, to be resent (or abandoned);
            gap-acked ones too unless ``skip_gap_acked``. Returns those to resend, TSN order."""
            marked = []
            for chunk in self._sent_queue:
                if chunk._sent_count == 0:
                    continue      # TSN reserved, not sent yet: still in the sender's queue
                if chunk._acked:
                    if skip_gap_acked:
                        continue
                    chunk._acked = False
                if not self._maybe_abandon(chunk):
                    chunk._retransmit = True
                    marked.append(chunk)
                self._flight_size_decrease(chunk)
            self._update_advanced_peer_ack_point()
            return marked

        @staticmethod
        def sp_wants_resend(chunk) -> bool:
            return chunk._retransmit and not chunk._acked and not chunk._abandoned

        @staticmethod
        def sp_outstanding(chunk) -> bool:
            """Sent, not acknowledged, not abandoned."""
            return chunk._sent_count > 0 and not chunk._acked and not chunk._abandoned

        @staticmethod
        def sp_abandoned(chunk) -> bool:
            return chunk._abandoned

        @staticmethod
        def sp_wall_expired(chunk, wall_now: float) -> bool:
            """The chunk's channel lifetime (maxPacketLifeTime) is over."""
            return chunk._expiry is not None and chunk._expiry < wall_now

        def sp_t3_after_sack(self, advanced: bool) -> None:
            if not self._sent_queue:
                self._t3_cancel()
            elif advanced:
                h = self._t3_handle
                now = self._loop.time()
                if h is not None and h.when() <= now + self._rto:
                    # lazy restart (a timer per SACK was a large share of the sender's CPU):
                    # the armed T3 fires no later than the restarted one would, and the
                    # subclass's T3 hook re-arms for the rest counted from sp_t3_since
                    self.sp_t3_since = now
                else:
                    self._t3_restart()

        @property
        def sp_nothing_outstanding(self) -> bool:
            return not self._sent_queue

        async def sp_send_owed_sack(self) -> None:
            """Send the SACK the receiver still owes (a delayed one), if any."""
            if self._sack_needed:
                self.sp_sack_urgent = False
                await base._send_sack(self)

    return SctpHooks


PRIVATE_NAMES.extend([
    ("aiortc.RTCDtlsTransport", "_register_data_receiver",
     "sctp_dtls_stand_in: what RTCSctpTransport calls on its DTLS transport (tests link two "
     "associations through a scripted in-memory link instead of DTLS)"),
    ("aiortc.RTCDtlsTransport", "_unregister_data_receiver", "sctp_dtls_stand_in, as above"),
    ("aiortc.RTCDtlsTransport", "_send_data", "sctp_dtls_stand_in, as above"),
    ("aiortc.RTCDtlsTransport()", "_role", "sctp_dtls_stand_in: RTCSctpTransport.is_server reads it"),
])


class sctp_dtls_stand_in:  # noqa: N801 (used like a function: tests build one per endpoint)
    """Stands where an ``RTCDtlsTransport`` would below an ``RTCSctpTransport``: ``send(bytes)``
    (a plain callable) carries each SCTP packet away, and :meth:`deliver` hands a packet from
    the other side to the association. For tests over a scripted link (loss, delay)."""

    def __init__(self, send, role: str) -> None:
        self.state = "connected"
        self._role = role            # "server" or "client": the name aiortc reads
        self._send_cb = send
        self._receiver = None

    def _register_data_receiver(self, receiver) -> None:
        self._receiver = receiver

    def _unregister_data_receiver(self, receiver) -> None:
        if self._receiver is receiver:
            self._receiver = None

    async def _send_data(self, data: bytes) -> None:
        if self.state != "connected":
            raise ConnectionError("link closed")
        self._send_cb(data)

    async def deliver(self, data: bytes) -> None:
        if self._receiver is not None:
            await self._receiver._handle_data(data)
