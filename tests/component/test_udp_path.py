"""UdpPath over loopback (public-direct policy, host candidates on 127.0.0.1):
message semantics, DTLS fingerprint check, liveness hooks, cleanup."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest_udp import LOOPBACK, SignalLink, assert_no_leaked_tasks, make_pair
from shortpath.errors import FingerprintMismatch, LocalError, PathError
from shortpath.transport.udp import UdpConfig, UdpUpgrader

DIRECT = UdpConfig(allow_managed=False, allow_turn=False, host_addresses=LOOPBACK, connect_timeout=10)


@pytest.fixture
async def paths():
    pair = make_pair(DIRECT)
    try:
        client, host = await pair.connect()
        yield client, host
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_kind_and_info(paths):
    client, host = paths
    assert client.kind == host.kind == "udp-direct"
    ci, hi = client.info(), host.info()
    assert ci["dtls_role"] == "server" and hi["dtls_role"] == "client"
    assert ci["local_candidate"]["type"] == "host" and ci["local_candidate"]["ip"] == "127.0.0.1"
    # Each side's selected pair is the mirror of the other's.
    assert (ci["local_candidate"]["port"], ci["remote_candidate"]["port"]) == (
        hi["remote_candidate"]["port"], hi["local_candidate"]["port"])
    assert ci["sctp"]["tuned"] and ci["sctp"]["rto"] <= 0.25


async def test_session_channel_streams_are_sent_in_channel_priority_order(paths):
    # input (its own stream) before the default channel and datagram stream, then graphics,
    # then bulk: the sender's per-priority FIFOs let an input event overtake queued frames
    from shortpath.session.channels import BY_NAME
    from shortpath.transport.udp.path import STREAM_BASE
    for path in paths:
        prio = path.info()["sctp"]["stream_priorities"]
        stream = {name: STREAM_BASE + BY_NAME[name].id - 1 for name in ("input", "graphics", "bulk")}
        assert prio[stream["input"]] < prio[0] == prio[1] < prio[stream["graphics"]] < prio[stream["bulk"]]


async def test_60kb_reliable_message_both_ways(paths):
    client, host = paths
    got_host, got_client = asyncio.Queue(), asyncio.Queue()
    host.on_reliable = got_host.put_nowait
    client.on_reliable = got_client.put_nowait
    frame = bytes(range(256)) * 240  # 61440 bytes
    client.send_reliable(frame)
    host.send_reliable(frame[::-1])
    assert await asyncio.wait_for(got_host.get(), 5) == frame
    assert await asyncio.wait_for(got_client.get(), 5) == frame[::-1]


async def test_1000_reliable_messages_complete_and_in_order(paths):
    client, host = paths
    received: list[int] = []
    done = asyncio.Event()

    def on_msg(data: bytes) -> None:
        received.append(int.from_bytes(data[:4], "big"))
        if len(received) == 1000:
            done.set()

    host.on_reliable = on_msg
    for i in range(1000):
        # varied sizes: some messages span several SCTP chunks
        client.send_reliable(i.to_bytes(4, "big") + bytes(i % 3000))
    await asyncio.wait_for(done.wait(), 20)
    assert received == list(range(1000))
    assert client.buffered_amount == 0


async def test_unreliable_datagrams_arrive(paths):
    client, host = paths
    got: list[bytes] = []
    done = asyncio.Event()
    host.on_unreliable = got.append
    host.on_reliable = lambda data: done.set()
    accepted = sum(client.send_unreliable(i.to_bytes(4, "big") + bytes(196)) for i in range(300))
    # The reliable marker follows the datagrams in the same SCTP TSN order,
    # so once it is here every datagram that was not lost has arrived.
    client.send_reliable(b"marker")
    await asyncio.wait_for(done.wait(), 5)
    assert accepted >= 250  # 300 x 200 B is under the 64 KiB unreliable backlog limit
    assert len(got) >= 0.9 * accepted
    assert len({g[:4] for g in got}) == len(got)  # no duplicates (never retransmitted)


async def test_unreliable_is_dropped_not_blocked_when_backlog_is_full(paths):
    client, host = paths
    host.on_unreliable = lambda data: None
    results = [client.send_unreliable(bytes(8000)) for _ in range(40)]  # 320 KB at once
    assert results[0] is True
    assert results.count(False) > 0  # over the 64 KiB limit: refused, never queued
    assert client.info()["unreliable_dropped"] == results.count(False)


async def test_messages_sent_before_callback_is_set_are_kept(paths):
    client, host = paths
    got = asyncio.Queue()
    client.send_reliable(b"early")
    marker = asyncio.Event()
    client.on_reliable = lambda d: marker.set()
    host.send_reliable(b"ping")  # round trip: host has surely received "early" once we get this
    await asyncio.wait_for(marker.wait(), 5)
    host.on_reliable = got.put_nowait
    assert got.get_nowait() == b"early"


async def test_oversized_message_is_refused(paths):
    client, _ = paths
    with pytest.raises(LocalError):
        client.send_reliable(bytes(262145))


async def test_fingerprint_mismatch_fails_both_sides_and_delivers_nothing():
    def tamper(msg: dict) -> dict:
        if msg["type"] == "udp.hello":
            value = msg["dtls"]["fingerprint"]["value"]
            flipped = ("0" if value[0] != "0" else "1") + value[1:]
            msg["dtls"]["fingerprint"]["value"] = flipped
        return msg

    link = SignalLink(tamper_to_client=tamper)  # the host's fingerprint is forged
    pair = make_pair(DIRECT, link=link)
    results = await asyncio.gather(pair.client.connect(timeout=10), pair.host.connect(timeout=10),
                                   return_exceptions=True)
    try:
        assert isinstance(results[0], FingerprintMismatch), results
        assert isinstance(results[1], FingerprintMismatch), results  # told by the client's abort
        assert any(m["type"] == "udp.abort" and m["reason"] == "fingerprint-mismatch" for m in link.seen_to_host)
        # No path exists on either side, so nothing can have been delivered.
        assert pair.client.path is None or pair.client.path.messages_received == 0
        assert pair.host.path is None or pair.host.path.messages_received == 0
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_blackhole_does_not_block_and_recovers(paths):
    client, host = paths
    got = []
    all_in = asyncio.Event()

    def on_msg(d: bytes) -> None:
        got.append(d)
        if len(got) == 20:
            all_in.set()

    host.on_reliable = on_msg
    client.blackhole(True)
    t0 = time.perf_counter()
    for i in range(20):
        client.send_reliable(b"x%d" % i)  # must return at once, path is dark
        assert client.send_unreliable(b"u") in (True, False)
    assert time.perf_counter() - t0 < 0.2
    assert client.info()["impairment"]["blackhole"]
    client.blackhole(False)
    # SCTP retransmits with tuned back-off (<= 1.5 s), everything arrives in order.
    await asyncio.wait_for(all_in.wait(), 5)
    assert got == [b"x%d" % i for i in range(20)]


async def test_close_is_quick_on_a_dark_path_and_leaks_nothing():
    pair = make_pair(DIRECT)
    client, host = await pair.connect()
    reasons = []
    client.on_closed = reasons.append
    client.blackhole(True)
    host.blackhole(True)
    client.send_reliable(b"lost in the dark")
    t0 = time.perf_counter()
    await client.close()
    await host.close()
    assert time.perf_counter() - t0 < 1.0
    assert reasons == ["local"]
    with pytest.raises(PathError):
        client.send_reliable(b"after close")
    await pair.close()
    await assert_no_leaked_tasks()


async def test_peer_close_is_reported():
    pair = make_pair(DIRECT)
    client, host = await pair.connect()
    closed = asyncio.get_running_loop().create_future()
    host.on_closed = lambda reason: closed.done() or closed.set_result(reason)
    await client.close()
    assert await asyncio.wait_for(closed, 5) == "peer-closed"
    with pytest.raises(PathError):
        host.send_reliable(b"x")
    await pair.close()
    await assert_no_leaked_tasks()


async def test_silent_peer_times_out_and_cleans_up():
    sent = []
    up = UdpUpgrader("client", DIRECT, sent.append)
    t0 = time.perf_counter()
    with pytest.raises(PathError) as err:
        await up.connect(timeout=1.0)
    assert err.value.code == "timeout"
    assert time.perf_counter() - t0 < 2.0
    assert sent[0]["type"] == "udp.hello" and sent[-1]["type"] == "udp.abort"
    await up.close()
    await assert_no_leaked_tasks()


async def test_close_before_connect_completes_frees_everything():
    up = UdpUpgrader("host", DIRECT, lambda m: None)
    task = asyncio.ensure_future(up.connect(timeout=10))
    await asyncio.sleep(0)  # let connect() start: gathering binds a socket
    await up.close()
    with pytest.raises((PathError, asyncio.CancelledError)):
        await task
    await assert_no_leaked_tasks()


async def test_garbage_signalling_is_a_remote_error():
    from shortpath.errors import RemoteError

    up = UdpUpgrader("client", DIRECT, lambda m: None)
    up.on_signal({"type": "udp.candidate", "candidate": {"ip": "not an ip"}})
    with pytest.raises(RemoteError):
        await up.connect(timeout=5)
    await up.close()
    await assert_no_leaked_tasks()


def test_policy_must_allow_something():
    with pytest.raises(ValueError):
        UdpConfig(allow_managed=False, allow_direct=False, allow_turn=False)


def test_importing_the_package_does_not_load_aiortc():
    import subprocess
    import sys

    code = ("import sys, shortpath.transport.udp, shortpath.transport.udp.managed, shortpath.transport.udp.ice, "
            "shortpath.transport.udp.sctp; print('aiortc' in sys.modules, 'av' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert out.stdout.split() == ["False", "False"]


async def test_dead_peer_is_reported_by_sctp_retransmit_limit_without_task_errors(caplog):
    import logging

    from shortpath.transport.udp.sctp import SctpTuning

    fast = UdpConfig(allow_managed=False, allow_turn=False, host_addresses=LOOPBACK,
                     sctp_tuning=SctpTuning(rto_min=0.02, rto_max=0.1, max_retrans=4))
    caplog.set_level(logging.WARNING)
    pair = make_pair(fast)
    client, host = await pair.connect()
    closed = asyncio.get_running_loop().create_future()
    client.on_closed = lambda reason: closed.done() or closed.set_result(reason)
    host.blackhole(True)  # the host's network goes dark; the client keeps sending
    for i in range(50):
        client.send_reliable(b"frame %d" % i)
        client.send_unreliable(b"cursor %d" % i)
    assert await asyncio.wait_for(closed, 5) == "sctp-retransmit-limit"
    assert client.closed
    await pair.close()
    await assert_no_leaked_tasks()
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name in ("asyncio", "aiortc", "aioice")
           or "exception was never retrieved" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


async def test_drain_applies_back_pressure(paths):
    client, host = paths
    got = [0]
    done = asyncio.Event()

    def on(d: bytes) -> None:
        if d == b"last":
            done.set()
        else:
            got[0] += len(d)

    host.on_reliable = on
    frame = bytes(60000)
    peak = 0
    for _ in range(60):  # 3.6 MB, never more than ~300 KB queued
        await client.drain(240_000)
        assert client.buffered_amount <= 240_000
        client.send_reliable(frame)
        peak = max(peak, client.buffered_amount)
    await client.drain(0)
    assert client.buffered_amount == 0
    assert peak <= 300_000
    client.send_reliable(b"last")  # ordered: arrives after every frame
    await asyncio.wait_for(done.wait(), 5)
    assert got[0] == 60 * 60000


# --- path MTU search (pmtu.py) --------------------------------------------------------------

async def test_path_mtu_search_confirms_large_packets_on_loopback(paths):
    # loopback carries any size: both senders confirm the largest candidate and cut 1404-byte
    # chunks; a 60 KB message still arrives whole
    client, host = paths
    for path in paths:
        deadline = time.monotonic() + 5
        while path.info()["sctp"]["pmtu"]["state"] != "done" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        sc = path.info()["sctp"]
        assert sc["pmtu"]["state"] == "done" and sc["pmtu"]["packet_size"] == 1432
        assert sc["chunk_payload"] == 1404
    got = asyncio.Queue()
    host.on_reliable = got.put_nowait
    frame = bytes(range(256)) * 240
    client.send_reliable(frame)
    assert await asyncio.wait_for(got.get(), 5) == frame


async def test_path_mtu_search_stops_below_a_size_the_path_drops():
    # a path that silently drops datagrams over 1300 bytes (no ICMP): the probes that fit are
    # acked, the larger ones are not; the search settles on the largest fitting candidate
    # (1232-byte SCTP packets + DTLS), and data cut to that size flows
    from shortpath.transport.udp import pmtu
    pair = make_pair(DIRECT)
    pair.client.impairment.max_size = 1300
    try:
        client, host = await pair.connect()
        for path in (client, host):
            deadline = time.monotonic() + 3 * pmtu.MAX_ROUNDS * pmtu.ROUND_TIMEOUT_MAX
            while path.info()["sctp"]["pmtu"]["state"] != "done" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            sc = path.info()["sctp"]
            assert sc["pmtu"]["state"] == "done", sc["pmtu"]
            assert sc["pmtu"]["packet_size"] == 1232 and sc["chunk_payload"] == 1204
        assert client.info()["impairment"]["dropped_out"] + client.info()["impairment"]["dropped_in"] > 0
        got_host, got_client = asyncio.Queue(), asyncio.Queue()
        host.on_reliable = got_host.put_nowait
        client.on_reliable = got_client.put_nowait
        frame = bytes(range(256)) * 240
        client.send_reliable(frame)
        host.send_reliable(frame[::-1])
        assert await asyncio.wait_for(got_host.get(), 5) == frame
        assert await asyncio.wait_for(got_client.get(), 5) == frame[::-1]
        for path in (client, host):
            assert path.info()["sctp"]["t3_expiries"] == 0
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_timeouts_after_the_path_mtu_shrank_fall_back_to_the_base_chunk_size(paths):
    # the path carried 1432-byte packets, then starts dropping everything over 1300 bytes
    # without a word (a route onto a tunnel, ICMP filtered): the large chunks of the next
    # message time out, and after BLACK_HOLE_T3 timeouts in a row the sender cuts aiortc's
    # 1160-byte chunks again until a new search
    from shortpath.transport.udp import pmtu
    client, host = paths
    deadline = time.monotonic() + 5
    while client.info()["sctp"]["pmtu"]["state"] != "done" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert client.info()["sctp"]["chunk_payload"] == 1404
    client.impairment_max_size(1300)
    client.send_reliable(bytes(60_000))
    deadline = time.monotonic() + 5
    while client.info()["sctp"]["pmtu"]["black_holes"] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    sc = client.info()["sctp"]
    assert sc["pmtu"]["black_holes"] == 1 and sc["t3_expiries"] >= pmtu.BLACK_HOLE_T3
    assert sc["chunk_payload"] == 1160 and sc["pmtu"]["packet_size"] == pmtu.BASE_PACKET
