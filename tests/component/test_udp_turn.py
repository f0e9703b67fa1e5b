"""TURN paths through a real coturn on 127.0.0.1, started and stopped by the
module fixture (``conftest_udp.coturn``). The relay is forced by policy
(allow_turn only => relay-only candidates on both sides)."""

from __future__ import annotations

import asyncio
import socket

from conftest_udp import LOOPBACK, assert_no_leaked_tasks, coturn, make_pair  # noqa: F401 (fixture)
from shortpath.errors import PathError
from shortpath.transport.udp import TurnServer, UdpConfig


def relay_only(*servers: TurnServer, **kw) -> UdpConfig:
    return UdpConfig(allow_managed=False, allow_direct=False, allow_turn=True,
                     turn_servers=servers, host_addresses=LOOPBACK, **kw)


async def _roundtrip(client, host) -> None:
    got_h, got_c = asyncio.Queue(), asyncio.Queue()
    host.on_reliable = got_h.put_nowait
    client.on_reliable = got_c.put_nowait
    frame = bytes(range(256)) * 234  # ~60 KB
    client.send_reliable(frame)
    host.send_reliable(b"ack")
    assert await asyncio.wait_for(got_h.get(), 10) == frame
    assert await asyncio.wait_for(got_c.get(), 10) == b"ack"


def _assert_relayed(path, server) -> None:
    info = path.info()
    assert path.kind == "udp-turn"
    for end in ("local_candidate", "remote_candidate"):
        cand = info[end]
        assert cand["type"] == "relay", info
        # relayed transport addresses come from coturn's configured range
        assert server.min_port <= cand["port"] <= server.max_port, info


async def test_turn_udp_relay_only(coturn):
    user, password = coturn.credentials("client")
    huser, hpassword = coturn.credentials("host")
    pair = make_pair(relay_only(TurnServer("127.0.0.1", coturn.port, "udp", user, password)),
                     relay_only(TurnServer("127.0.0.1", coturn.port, "udp", huser, hpassword)))
    try:
        client, host = await pair.connect()
        _assert_relayed(client, coturn)
        _assert_relayed(host, coturn)
        assert client.info()["turn"] == {"server": f"127.0.0.1:{coturn.port}", "transport": "udp"}
        # both peers only ever signalled relay candidates
        assert {c["type"] for c in pair.client.local_candidates} == {"relay"}
        assert {c["type"] for c in pair.host.local_candidates} == {"relay"}
        await _roundtrip(client, host)
        # SCTP packets leave room for the TURN channel header (pmtu.RELAYED_MAX_PACKET), though
        # loopback carries 1432 (the path_mtu tests in test_udp_path.py confirm 1432 there)
        for p in (client, host):
            for _ in range(100):
                if p.info()["sctp"]["pmtu"]["state"] == "done":
                    break
                await asyncio.sleep(0.02)
            assert p.info()["sctp"]["pmtu"]["packet_size"] == 1428, p.info()["sctp"]["pmtu"]
            assert p.info()["sctp"]["chunk_payload"] == 1400
        # 1000 ordered messages through the relay
        got: list[int] = []
        done = asyncio.Event()

        def on(data: bytes) -> None:
            got.append(int.from_bytes(data, "big"))
            if len(got) == 1000:
                done.set()

        host.on_reliable = on
        for i in range(1000):
            client.send_reliable(i.to_bytes(4, "big"))
        await asyncio.wait_for(done.wait(), 20)
        assert got == list(range(1000))
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_turn_tcp_when_udp_to_turn_is_blocked(coturn):
    # "Blocked": a UDP socket that swallows everything at the TURN address.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        blocked = sink.getsockname()[1]
        servers = []
        for who in ("client", "host"):
            u, p = coturn.credentials(who)
            servers.append(relay_only(
                TurnServer("127.0.0.1", blocked, "udp", u, p),
                TurnServer("127.0.0.1", coturn.port, "tcp", u, p),
                turn_attempt_timeout=0.5))
        pair = make_pair(servers[0], servers[1])
        try:
            client, host = await pair.connect()
            _assert_relayed(client, coturn)
            assert client.info()["turn"]["transport"] == "tcp"
            assert host.info()["turn"]["transport"] == "tcp"
            await _roundtrip(client, host)
        finally:
            await pair.close()
    await assert_no_leaked_tasks()


async def test_turn_tls(coturn):
    assert coturn.tls_port is not None
    cfgs = []
    for who in ("client", "host"):
        u, p = coturn.credentials(who)
        cfgs.append(relay_only(TurnServer("127.0.0.1", coturn.tls_port, "tls", u, p, cafile=coturn.cafile)))
    pair = make_pair(*cfgs)
    try:
        client, host = await pair.connect()
        _assert_relayed(client, coturn)
        assert client.info()["turn"]["transport"] == "tls"
        await _roundtrip(client, host)
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_turn_bad_credentials_fail_cleanly(coturn):
    bad = relay_only(TurnServer("127.0.0.1", coturn.port, "udp", "1:nobody", "wrong"), gather_timeout=2)
    pair = make_pair(bad)
    try:
        results = await asyncio.gather(pair.client.connect(timeout=5), pair.host.connect(timeout=5),
                                       return_exceptions=True)
        assert all(isinstance(r, PathError) for r in results), results
        # whichever side finished gathering first saw the 401 and aborted both
        assert any("401" in e for e in pair.client.turn_errors + pair.host.turn_errors)
        assert "no-candidates" in (results[0].code, results[1].code)
    finally:
        await pair.close()
    await assert_no_leaked_tasks()


async def test_turn_path_blackhole_close_is_bounded(coturn):
    u, p = coturn.credentials("c")
    hu, hp = coturn.credentials("h")
    pair = make_pair(relay_only(TurnServer("127.0.0.1", coturn.port, "udp", u, p)),
                     relay_only(TurnServer("127.0.0.1", coturn.port, "udp", hu, hp)))
    client, host = await pair.connect()
    client.blackhole(True)
    client.send_reliable(b"x")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await pair.close()
    assert loop.time() - t0 < 2.5  # two TURN deallocations, each bounded by close_timeout
    await assert_no_leaked_tasks()
