"""close() right after a large send loses nothing, end to end on loopback (gateway + host + client,
real relay and real ICE/DTLS/SCTP). On UDP the graphics channel has an SCTP stream of its own and
CLOSE travels on stream 0 and the relay, so it must wait until the host's session has received
every message (session/connection.py, Rules: closing)."""

import asyncio

from shortpath.demo import LocalStack
from shortpath.session import channels as chn

from tests.conftest import FAST
from tests.integration.test_shortpath import host_session, wait_for


async def _close_after_a_backlog(stack, on_udp: bool) -> None:
    s = await stack.connect()
    if on_udp:
        await wait_for(lambda: s.info.transport.startswith("udp"))
    else:
        assert s.info.transport == "tcp-relay"
    host = host_session(stack, s)
    ch = chn.resolve("graphics")
    before = host.connection.channels.receiver(ch).received
    n = 30
    for i in range(n):
        await s.send(b"G%03d" % i + bytes(40_000), channel="graphics")
    assert s.connection.unacked_bytes > 0           # most of it is still on its way
    await asyncio.wait_for(s.close("bye", "test done"), FAST.close_timeout + 2.0)
    reason = await asyncio.wait_for(host.wait_closed(), 5.0)
    assert reason == "bye"
    assert host.connection.channels.receiver(ch).received - before == n
    assert s.connection.channels.sender(ch).received == s.connection.channels.sender(ch).next_seq
    assert "timed out" not in s.close_detail and "never arrived" not in host.close_detail


async def test_close_after_a_backlog_on_udp_delivers_every_message_first(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        await _close_after_a_backlog(stack, on_udp=True)


async def test_close_after_a_backlog_on_the_relay_delivers_every_message_first(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        await _close_after_a_backlog(stack, on_udp=False)
