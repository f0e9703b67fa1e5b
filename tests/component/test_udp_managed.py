"""Managed path: one ManagedListener socket serving several sessions, and
what it does with traffic that belongs to none of them."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading

import pytest

from conftest_udp import LOOPBACK, assert_no_leaked_tasks, make_pair
from shortpath.transport.udp.managed import ManagedListener
from shortpath.transport.udp import UdpConfig

MANAGED = UdpConfig(allow_direct=False, allow_turn=False, host_addresses=LOOPBACK, connect_timeout=10)


@pytest.fixture
async def listener():
    lst = await ManagedListener("127.0.0.1", 0).start()  # tests: a free port, not 3390
    try:
        yield lst
    finally:
        await lst.close()


async def _exchange(client, host, count: int) -> None:
    """Send ``count`` numbered reliable messages each way; wait for all."""
    done_h, done_c = asyncio.Event(), asyncio.Event()
    got_h: list[int] = []
    got_c: list[int] = []

    def sink(store, event):
        def on(data: bytes) -> None:
            store.append(int.from_bytes(data[:4], "big"))
            if len(store) == count:
                event.set()
        return on

    host.on_reliable = sink(got_h, done_h)
    client.on_reliable = sink(got_c, done_c)
    for i in range(count):
        client.send_reliable(i.to_bytes(4, "big") + bytes(300))
        host.send_reliable(i.to_bytes(4, "big") + bytes(900))
        if i % 50 == 0:
            await asyncio.sleep(0)  # interleave with other sessions (a yield, not a timer)
    await asyncio.wait_for(asyncio.gather(done_h.wait(), done_c.wait()), 30)
    assert got_h == list(range(count)) and got_c == list(range(count))


async def _three_sessions(listener):
    pairs = [make_pair(MANAGED, listener=listener) for _ in range(3)]
    paths = await asyncio.gather(*(p.connect() for p in pairs))
    return pairs, paths


async def test_three_concurrent_sessions_share_one_socket(listener):
    pairs, paths = await _three_sessions(listener)
    try:
        assert listener.stats()["sessions"] == 3
        for client, host in paths:
            assert client.kind == host.kind == "udp-managed"
            # every host path talks through the one listener port
            assert host.info()["local_candidate"]["port"] == listener.address[1]
            assert client.info()["remote_candidate"]["port"] == listener.address[1]
        # distinct client sockets, one learned address each
        assert len({c.info()["local_candidate"]["port"] for c, _ in paths}) == 3
        await asyncio.gather(*(_exchange(c, h, 300) for c, h in paths))
        # a 60 KB frame on each session at the same time
        frames = asyncio.Queue()
        for i, (client, host) in enumerate(paths):
            host.on_reliable = frames.put_nowait
            client.send_reliable(bytes([i]) * 60000)
        got = sorted([await asyncio.wait_for(frames.get(), 5) for _ in range(3)])
        assert got == sorted(bytes([i]) * 60000 for i in range(3))
        assert listener.stats()["dropped_total"] == 0
    finally:
        for p in pairs:
            await p.close()
    assert listener.stats()["sessions"] == 0
    assert listener.stats()["learned_addresses"] == 0
    await assert_no_leaked_tasks()


def _stun(method_class: int, attrs: bytes, txid: bytes) -> bytes:
    return struct.pack("!HHI12s", method_class, len(attrs), 0x2112A442, txid) + attrs


def _attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + bytes(pad)


def _flood(target, ufrags, stop: threading.Event, sent: list) -> None:
    """Hostile traffic from a foreign socket, in a thread (real concurrency)."""
    kinds = []
    for host_uf, client_uf in ufrags:
        # Binding request naming a real session (both ufrags right), with a
        # forged MESSAGE-INTEGRITY
        body = _attr(0x0006, f"{host_uf}:{client_uf}".encode()) + _attr(0x0008, os.urandom(20))
        kinds.append(lambda b=body: _stun(0x0001, b, os.urandom(12)))
        # ... and one with the wrong remote ufrag
        body = _attr(0x0006, f"{host_uf}:evil".encode()) + _attr(0x0008, os.urandom(20))
        kinds.append(lambda b=body: _stun(0x0001, b, os.urandom(12)))
    unknown = _attr(0x0006, b"nobody:evil") + _attr(0x0008, os.urandom(20))
    kinds += [
        lambda: os.urandom(200),                                   # random garbage
        lambda: bytes([0x90]) + os.urandom(50),                    # RTP-looking
        lambda: _stun(0x0001, unknown, os.urandom(12))[:30],       # truncated STUN
        lambda: _stun(0x0001, unknown, os.urandom(12)),            # unknown ufrag
        lambda: _stun(0x0001, b"", os.urandom(12)),                # unauthenticated
        lambda: bytes([23, 0xFE, 0xFD]) + os.urandom(100),         # DTLS from an unknown address
        lambda: b"",                                               # empty
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        n = 0
        while not stop.is_set():
            s.sendto(kinds[n % len(kinds)](), target)
            n += 1
            if n % 64 == 0:
                stop.wait(0.001)  # leave the GIL to the event loop now and then
    sent.append(n)


async def test_garbage_and_flood_are_dropped_counted_and_disturb_nobody(listener):
    pairs, paths = await _three_sessions(listener)
    stop = threading.Event()
    sent: list[int] = []
    ufrags = [(p.host.local_ufrag, p.client.local_ufrag) for p in pairs]
    flooder = threading.Thread(target=_flood, args=(listener.address, ufrags, stop, sent), daemon=True)
    flooder.start()
    try:
        await asyncio.gather(*(_exchange(c, h, 200) for c, h in paths))
        # a few more round trips while the flood goes on
        await asyncio.gather(*(_exchange(c, h, 50) for c, h in paths))
    finally:
        stop.set()
        await asyncio.get_running_loop().run_in_executor(None, flooder.join)
    try:
        stats = listener.stats()
        assert sent and sent[0] > 500
        for counter in ("drop_not_stun_or_dtls", "drop_stun_malformed", "drop_stun_unknown_ufrag",
                        "drop_stun_unauthenticated", "drop_stun_bad_integrity", "drop_stun_wrong_remote_ufrag",
                        "drop_dtls_unknown_address", "drop_empty"):
            assert stats.get(counter, 0) > 0, (counter, stats)
        assert stats["dropped_total"] > 0.5 * sent[0]  # the rest may be lost by the kernel buffer
        assert stats["sessions"] == 3 and stats["learned_addresses"] == 3
        for client, host in paths:
            assert not client.closed and not host.closed
    finally:
        for p in pairs:
            await p.close()
    await assert_no_leaked_tasks()


async def test_managed_plus_direct_prefers_managed(listener):
    both = UdpConfig(allow_turn=False, host_addresses=LOOPBACK)
    pair = make_pair(both, listener=listener)
    try:
        client, host = await pair.connect()
        assert client.kind == host.kind == "udp-managed"
        got = asyncio.Queue()
        host.on_reliable = got.put_nowait
        client.send_reliable(b"hello")
        assert await asyncio.wait_for(got.get(), 5) == b"hello"
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_host_without_listener_falls_to_direct_when_allowed():
    both = UdpConfig(allow_turn=False, host_addresses=LOOPBACK)
    pair = make_pair(both, listener=None)
    try:
        client, host = await pair.connect()
        assert client.kind == host.kind == "udp-direct"
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_managed_only_without_listener_fails_fast():
    from shortpath.errors import PathError

    pair = make_pair(MANAGED, listener=None)
    try:
        results = await asyncio.gather(pair.client.connect(timeout=5), pair.host.connect(timeout=5),
                                       return_exceptions=True)
        assert all(isinstance(r, PathError) for r in results), results
    finally:
        await pair.close()
    await assert_no_leaked_tasks()
