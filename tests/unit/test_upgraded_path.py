"""The UDP path adapter hands the session what the peer sent before the session
listened (regression: those frames went to the default no-op handler and the
receiver then waited forever on the gap; seen in the lab matrix as a client that
never got its echo after an upgrade)."""

import asyncio

from shortpath.session.session import Session
from shortpath.transport.udp.session_path import UdpSessionPath
from shortpath.wire import frames as fr


class BackloggedUdp:
    """Stands in for transport.udp.UdpPath: messages that arrived before a
    callback was assigned are handed over on assignment."""

    kind = "udp-direct"

    def __init__(self, early: list[bytes]) -> None:
        self._early = list(early)
        self._on_reliable = None
        self.on_unreliable = None
        self.on_closed = None

    @property
    def on_reliable(self):
        return self._on_reliable

    @on_reliable.setter
    def on_reliable(self, fn) -> None:
        self._on_reliable = fn
        while self._early:
            fn(self._early.pop(0))


async def test_frames_that_arrived_before_the_session_listened_are_delivered():
    early = [fr.encode_data(0, b"first"), fr.encode_data(1, b"second")]
    udp = BackloggedUdp(early)
    path = UdpSessionPath(udp, "udp-1", "s1")
    assert udp.on_reliable is None          # nothing consumed before the session attaches
    session = Session("s1", "client")
    session.add_path(path)
    assert await asyncio.wait_for(session.recv(), 1.0) == b"first"
    assert await asyncio.wait_for(session.recv(), 1.0) == b"second"
    assert path.bytes_received == sum(len(m) for m in early)
