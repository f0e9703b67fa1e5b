"""Our SCTP sender (shortpath/transport/udp/sctp.py) against aiortc's stock one, two associations
linked through a scripted in-memory link: one-way delay, a rate limit with a bounded queue, and
seeded random or scripted loss. No DTLS, no sockets: the associations' packets go through
``_aiortc_compat.sctp_dtls_stand_in`` and the link below.

What is shown:
* throughput at 40 ms RTT and 1-5 % random loss, against stock aiortc on the same link;
* a lost last chunk of a message is recovered by a tail-loss probe in a few RTTs, not by T3;
* the datagram lane: a datagram queued behind a reliable backlog goes first, and one that
  waited past its deadline is dropped before it is given a TSN.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Callable, Optional

import pytest

from shortpath.transport.udp._aiortc_compat import sctp_dtls_stand_in

RTT = 0.040


# ------------------------------------------------------------------ the link
class Link:
    """One direction: delay, a rate limit with a drop-tail queue, loss."""

    def __init__(self, loop, one_way: float, loss: float, rng: random.Random,
                 rate_bps: Optional[float] = None, queue_s: float = 0.05) -> None:
        self.loop, self.one_way, self.loss, self.rng = loop, one_way, loss, rng
        self.rate = rate_bps / 8 if rate_bps else None
        self.queue_s = queue_s
        self.busy_until = 0.0
        self.last_arrival = 0.0
        self.dest: Optional[sctp_dtls_stand_in] = None
        self.drop_if: Optional[Callable[[bytes], bool]] = None
        self.sent = self.dropped = 0

    def send(self, data: bytes) -> None:
        self.sent += 1
        if self.drop_if is not None and self.drop_if(data):
            self.dropped += 1
            return
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        now = self.loop.time()
        depart = now
        if self.rate:
            start = max(now, self.busy_until)
            if start - now > self.queue_s:
                self.dropped += 1       # queue full: tail drop
                return
            self.busy_until = start + (len(data) + 28 + 29) / self.rate
            depart = self.busy_until
        arrival = max(depart + self.one_way, self.last_arrival)   # a link does not reorder
        self.last_arrival = arrival
        self.loop.call_at(arrival, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if self.dest is not None:
            asyncio.ensure_future(self.dest.deliver(data))


def data_chunk(data: bytes):
    """(flags, tsn, ppid) of an SCTP packet's first chunk if it is DATA, else None."""
    if len(data) < 28 or data[12] != 0:
        return None
    flags = data[13]
    tsn, = struct.unpack_from("!L", data, 16)
    ppid, = struct.unpack_from("!L", data, 24)
    return flags, tsn, ppid


async def associate(tuned: bool, *, loss: float = 0.0, seed: int = 1, rate_bps: Optional[float] = None,
                    tuning=None):
    """Two associations (client, host) over two Links; returns them, their links and the
    negotiated channels (reliable ordered id 0, datagram unordered maxRetransmits=0 id 1)."""
    from aiortc import RTCDataChannel, RTCDataChannelParameters, RTCSctpCapabilities
    from aiortc.rtcsctptransport import RTCSctpTransport

    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    up = Link(loop, RTT / 2, loss, rng, rate_bps)
    down = Link(loop, RTT / 2, loss, rng, rate_bps)
    d_client = sctp_dtls_stand_in(up.send, "client")
    d_host = sctp_dtls_stand_in(down.send, "server")
    up.dest, down.dest = d_host, d_client

    def make(dtls):
        if not tuned:
            return RTCSctpTransport(dtls)
        from shortpath.transport.udp.sctp import tuned_sctp_transport_class
        kw = {} if tuning is None else {"tuning": tuning}
        return tuned_sctp_transport_class()(dtls, **kw)

    client, host = make(d_client), make(d_host)
    chans = {}
    for name, sctp in (("client", client), ("host", host)):
        rel = RTCDataChannel(sctp, RTCDataChannelParameters(label="r", negotiated=True, id=0, ordered=True))
        dg = RTCDataChannel(sctp, RTCDataChannelParameters(label="d", negotiated=True, id=1, ordered=False,
                                                           maxRetransmits=0))
        chans[name] = (rel, dg)
    opened = [loop.create_future(), loop.create_future()]
    chans["client"][0].once("open", lambda: opened[0].done() or opened[0].set_result(None))
    chans["host"][0].once("open", lambda: opened[1].done() or opened[1].set_result(None))
    caps = RTCSctpCapabilities(maxMessageSize=262144)
    await asyncio.wait_for(asyncio.gather(client.start(caps, 5000), host.start(caps, 5000), *opened), 10)
    return client, host, up, down, chans


async def close(*sctps) -> None:
    for s in sctps:
        await s.stop()


# ------------------------------------------------------------------ tests
async def _goodput(tuned: bool, loss: float, seconds: float, seed: int) -> tuple[float, dict]:
    """Bytes/s delivered client -> host in 60 KB reliable messages over ``seconds``."""
    client, host, up, down, chans = await associate(tuned, loss=loss, seed=seed, rate_bps=40e6)
    loop = asyncio.get_running_loop()
    got = [0]
    chans["host"][0].on("message", lambda m: got.__setitem__(0, got[0] + len(m)))
    rel = chans["client"][0]
    msg = b"x" * 60000
    t0 = loop.time()
    while loop.time() - t0 < seconds:
        while rel.bufferedAmount < 300_000:
            rel.send(msg)
        # wait until aiortc's channel buffer drains a little (its bufferedamountlow event)
        low = loop.create_future()
        rel.bufferedAmountLowThreshold = 150_000
        rel.once("bufferedamountlow", lambda: low.done() or low.set_result(None))
        try:
            await asyncio.wait_for(low, max(0.01, seconds - (loop.time() - t0)))
        except asyncio.TimeoutError:
            pass
    elapsed = loop.time() - t0
    stats = {"sent_up": up.sent, "dropped_up": up.dropped,
             **({"t3": client.sp_t3_expiries, "fr": client.sp_fast_retransmits,
                 "tlp": client.sp_tlp_probes, "cc": client._sp_cc.stats()} if tuned else {})}
    await close(client, host)
    return got[0] / elapsed, stats


@pytest.mark.parametrize("loss", [0.01, 0.05])
async def test_throughput_under_random_loss_beats_stock_aiortc(loss):
    ours, st_ours = await _goodput(True, loss, 3.0, seed=7)
    stock, st_stock = await _goodput(False, loss, 3.0, seed=7)
    print(f"loss {loss:.0%}: ours {ours * 8 / 1e6:.2f} Mbit/s {st_ours}; stock {stock * 8 / 1e6:.2f} Mbit/s {st_stock}")
    assert st_ours["dropped_up"] > 0 and st_stock["dropped_up"] > 0   # the link did lose packets
    # NewReno halves per loss (Mathis bound); ours must not: several times the stock rate (3-10x
    # measured on a quiet machine; 2x keeps the test meaningful on a loaded one)
    assert ours > 2 * stock, (ours, stock)


async def _tail_loss_recovery_time(tuned: bool, drops: int = 1) -> tuple[float, Optional[object]]:
    client, host, up, down, chans = await associate(tuned)
    loop = asyncio.get_running_loop()
    rel_c, rel_h = chans["client"][0], chans["host"][0]
    # warm up: a few round trips give the sender an RTT estimate
    for i in range(5):
        fut = loop.create_future()
        rel_h.once("message", lambda m, f=fut: f.done() or f.set_result(m))
        rel_c.send(b"w" * 100)
        await asyncio.wait_for(fut, 5)
    # drop the last fragment of the next binary message ``drops`` times (its first
    # transmission, then the first copy of its resend)
    armed = [drops]

    def drop(data: bytes) -> bool:
        d = data_chunk(data)
        if armed[0] and d is not None and d[0] & 0x01 and d[2] == 53:
            armed[0] -= 1
            return True
        return False

    up.drop_if = drop
    fut = loop.create_future()
    rel_h.once("message", lambda m: fut.done() or fut.set_result(loop.time()))
    t0 = loop.time()
    rel_c.send(b"f" * 3000)      # three chunks; the third is lost
    t1 = await asyncio.wait_for(fut, 10)
    assert not armed[0]
    info = (client.sp_tlp_probes, client.sp_t3_expiries, client.sp_tail_copies) if tuned else None
    await close(client, host)
    return t1 - t0, info


async def test_lost_tail_chunk_is_recovered_by_a_probe_within_a_few_rtts():
    ours, (probes, t3, _) = await _tail_loss_recovery_time(True)
    stock, _ = await _tail_loss_recovery_time(False)
    print(f"tail loss recovered after {ours * 1000:.0f} ms (probes {probes}, T3 {t3}); stock aiortc {stock * 1000:.0f} ms")
    assert probes >= 1 and t3 == 0
    # the probe goes ~1.3-2 SRTT after the last send, the resent chunk needs one way more
    assert ours < 4 * RTT + 0.05, ours
    assert stock >= 1.0             # aiortc waits for T3 (RTO.min 1 s)


async def test_a_resent_tail_goes_out_twice_so_losing_it_again_costs_nothing():
    # the probe's first copy is lost too: nothing sent after it could reveal that, and one
    # copy would wait another (doubled) probe timeout; the second copy arrives
    ours, (probes, t3, copies) = await _tail_loss_recovery_time(True, drops=2)
    assert copies >= 1 and probes >= 1 and t3 == 0
    assert ours < 4 * RTT + 0.05, ours


async def test_datagram_goes_before_queued_reliable_data_and_expires_unsent():
    from shortpath.transport.udp.sctp import SctpTuning
    # datagrams expire after 60 ms here: shorter than any T3 (>= 3 SRTT), so the expiry below is
    # seen while the window is still full
    tuning = SctpTuning(datagram_max_age=0.060)
    client, host, up, down, chans = await associate(True, rate_bps=10e6, tuning=tuning)
    loop = asyncio.get_running_loop()
    rel_c, dg_c = chans["client"]
    rel_h, dg_h = chans["host"]
    done_rel = loop.create_future()
    got = [0]

    def on_rel(m):
        got[0] += len(m)
        if got[0] >= 20 * 60000 and not done_rel.done():
            done_rel.set_result(loop.time())

    rel_h.on("message", on_rel)
    dg_at = loop.create_future()
    dg_h.on("message", lambda m: dg_at.done() or dg_at.set_result((loop.time(), m)))
    for _ in range(20):                 # 1.2 MB: ~1 s at 10 Mbit/s
        rel_c.send(b"r" * 60000)
    await asyncio.sleep(0)              # let the channel flush into SCTP
    assert client.sp_queued_bytes > 500_000
    t0 = loop.time()
    dg_c.send(b"event")
    t_dg, payload = await asyncio.wait_for(dg_at, 5)
    t_rel = await asyncio.wait_for(done_rel, 10)
    print(f"datagram after {1000 * (t_dg - t0):.0f} ms, reliable backlog done after {1000 * (t_rel - t0):.0f} ms")
    assert payload == b"event"
    assert t_dg - t0 < 3 * RTT          # not behind ~1 s of frames
    assert t_rel - t0 > 10 * (t_dg - t0)

    # expiry: with the window full, a datagram older than datagram_max_age is dropped unsent
    up.drop_if = lambda data: True      # blackhole the uplink: nothing is acked, cwnd stays full
    for _ in range(5):
        rel_c.send(b"r" * 60000)
    while client.sp_flight_size < client._sp_cwnd():     # wait for the window to fill
        await asyncio.sleep(0.005)
    tsn_before = len(client._sp_by_tsn)
    expired0, t3_0 = client.sp_datagrams_expired, client.sp_t3_expiries
    for i in range(50):                 # 50 KB: far past the datagram allowance over cwnd
        dg_c.send(b"d" * 1000)
    await asyncio.sleep(0.08)
    client._sp_kick()                   # the pump drops what expired on its next pass
    await asyncio.sleep(0.005)
    assert client.sp_t3_expiries == t3_0
    sent_dg = len(client._sp_by_tsn) - tsn_before
    assert client.sp_datagrams_expired > 0 and client.sp_lane_bytes == 0
    assert client.sp_datagrams_expired - expired0 + sent_dg == 50   # each either sent or dropped unsent
    up.drop_if = None
    await close(client, host)


async def test_stream_priority_puts_an_urgent_message_before_queued_bulk():
    """A message on a stream of higher priority (lower number) goes before reliable data queued
    earlier on another stream, even in the middle of a long message of that stream."""
    from aiortc import RTCDataChannel, RTCDataChannelParameters
    client, host, up, down, chans = await associate(True, rate_bps=10e6)
    loop = asyncio.get_running_loop()
    urgent_c = RTCDataChannel(client, RTCDataChannelParameters(label="u", negotiated=True, id=2, ordered=True))
    urgent_h = RTCDataChannel(host, RTCDataChannelParameters(label="u", negotiated=True, id=2, ordered=True))
    client.sp_set_stream_priority(2, 0)
    client.sp_set_stream_priority(0, 1)
    got = loop.create_future()
    urgent_h.on("message", lambda m: got.done() or got.set_result(loop.time()))
    bulk_done = loop.create_future()
    n = [0]

    def on_bulk(m):
        n[0] += 1
        if n[0] == 10 and not bulk_done.done():
            bulk_done.set_result(loop.time())

    chans["host"][0].on("message", on_bulk)
    for _ in range(10):                 # 600 KB on stream 0: ~0.5 s at 10 Mbit/s
        chans["client"][0].send(b"b" * 60000)
    await asyncio.sleep(0.1)            # the first message is partly sent, the rest queued
    t0 = loop.time()
    urgent_c.send(b"key")
    t_urgent = await asyncio.wait_for(got, 5)
    t_bulk = await asyncio.wait_for(bulk_done, 10)
    print(f"urgent after {1000 * (t_urgent - t0):.0f} ms, bulk done after {1000 * (t_bulk - t0):.0f} ms")
    assert t_urgent - t0 < 3 * RTT
    assert t_bulk - t0 > 4 * (t_urgent - t0)
    await close(client, host)
