"""Channels, events and datagram deadlines end to end on loopback: gateway + host (the example
app, shortpath/app/desktop.py) + client, real relay and real ICE/DTLS/SCTP."""

import asyncio

from shortpath.demo import LocalStack

from tests.conftest import FAST
from tests.integration.test_shortpath import host_session, wait_for

CHANNELS = ("input", "graphics", "bulk", "default")


async def _echo_session(stack):
    s = await stack.connect()
    await s.send(b"echo")
    return s


async def _round(s, tag: bytes, n: int = 20) -> dict:
    for i in range(n):
        for ch in CHANNELS:
            await s.send(b"%s-%s-%03d" % (tag, ch.encode(), i) + b"." * (3000 if ch == "graphics" else 10),
                         channel=None if ch == "default" else ch)
    got: dict[str, list[bytes]] = {ch: [] for ch in CHANNELS}
    for _ in range(n * len(CHANNELS)):
        ch, msg = await asyncio.wait_for(s.recv_from(), 10.0)
        got[ch].append(msg.split(b".")[0])
    return got


async def test_each_channel_is_echoed_on_its_own_in_order_on_the_relay_and_on_its_own_sctp_stream(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        s = await _echo_session(stack)
        assert s.info.transport == "tcp-relay"
        got = await _round(s, b"r")
        for ch in CHANNELS:
            assert got[ch] == [b"r-%s-%03d" % (ch.encode(), i) for i in range(20)]
        await wait_for(lambda: s.info.transport.startswith("udp"))
        got = await _round(s, b"u")
        for ch in CHANNELS:
            assert got[ch] == [b"u-%s-%03d" % (ch.encode(), i) for i in range(20)]
        # the host's echoes went out on one SCTP stream per channel (0 = default, 2.. = input,
        # graphics, bulk; transport/udp/path.py)
        host = host_session(stack, s)
        udp = next(p for p in host.info.paths if p["kind"].startswith("udp"))
        assert udp["streams"] == 4
        per_stream = udp["stream_messages_sent"]
        assert all(per_stream.get(sid, 0) >= 20 for sid in (2, 3, 4)), per_stream
        await s.close()


async def test_events_with_redundancy_arrive_once_in_order_through_dropped_datagrams(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        s = await _echo_session(stack)
        await wait_for(lambda: s.info.transport.startswith("udp"))
        udp = s.active.udp
        udp.drop_every(7)                # every 7th UDP datagram, both ways, at our socket
        n = 300
        for i in range(n):
            assert s.send_event(b"e%04d" % i, redundancy=3, copies=1)   # repeats only, this way
            await asyncio.sleep(0.004)
        got = []
        while len(got) < n - 10:
            got.append(await asyncio.wait_for(s.recv_event(), 10.0))
        udp.drop_every(0)
        assert got == sorted(set(got))                     # once each, in order
        assert got[: n - 10] == [b"e%04d" % i for i in range(n - 10)]   # nothing skipped
        assert udp.info()["impairment"]["dropped_in"] + udp.info()["impairment"]["dropped_out"] > 0
        # datagrams were dropped both ways and no event was lost: the echo comes back with the
        # host app's defaults (2 copies of each frame), so the copies or the repeats made good
        # every drop (the repeats alone: tests/unit/test_redundancy.py)
        assert s.connection.event_stats.lost == 0
        await s.close()


async def test_under_a_backlog_input_overtakes_queued_graphics_both_ways(tmp_path):
    """2 MB of graphics is queued (more than a path is handed at once, channels.HANDOVER_BYTES),
    then one input message: it goes first at each end, so its echo comes back long before the
    graphics echoes are through."""
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        s = await _echo_session(stack)
        await wait_for(lambda: s.info.transport.startswith("udp"))
        n = 40
        for i in range(n):
            await s.send(b"G%03d" % i + bytes(50_000), channel="graphics")
        assert s.connection.backlog                       # the core holds the rest back
        await s.send(b"I-now", channel="input")
        order = []
        for _ in range(n + 1):
            ch, msg = await asyncio.wait_for(s.recv_from(), 20.0)
            order.append((ch, msg[:5]))
        graphics = [m for ch, m in order if ch == "graphics"]
        assert graphics == [b"G%03d" % i + b"\x00" for i in range(n)]   # its own order kept
        assert order.index(("input", b"I-now")) < n // 2, order
        await s.close()
