"""Reverse connect end to end on loopback: gateway + hosts + clients in one process
(host-crash and no-listener tests run the host as a real subprocess)."""

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from shortpath.app.desktop import check_frame
from shortpath.client import connect, feed
from shortpath.config import PoolConfig
from shortpath.demo import LocalStack
from shortpath.errors import (AuthError, BadSignature, FingerprintMismatch, NoResourcesError, NotAssigned,
                              SessionClosed, TokenExpired, WrongAudience)
from shortpath.auth.tokens import TokenSigner

from tests.conftest import FAST


async def echo_check(session, n=50, size=64):
    await session.send(b"echo")
    for i in range(n):
        msg = hashlib.sha256(b"%d" % i).digest() * (size // 32)
        await session.send(msg)
        assert await session.recv() == msg


async def test_full_session_data_both_ways(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        assert await feed(stack.address, stack.user_token(), cafile=stack.cafile) == [
            {"name": "desktop", "kind": "pooled"}]
        async with await stack.connect() as s:
            assert s.info.transport == "tcp-relay"
            await s.send(b"desktop 0.5 30")
            got = []
            while True:
                m = await s.recv()
                if m.startswith(b"done"):
                    break
                got.append(check_frame(m)[0])
            assert got == list(range(int(m.split()[1])))
            # datagrams echo too (best effort, but loopback loses none here)
            for i in range(20):
                assert s.send_datagram(b"d%03d" % i)
            echoed = {await asyncio.wait_for(s.recv_datagram(), 5) for _ in range(20)}
            assert echoed == {b"d%03d" % i for i in range(20)}
            rtt = await s.ping()
            assert 0 < rtt < 1.0
            info = s.info
            assert info.bytes_received > 15 * 20_000 and info.rtt_ms is not None
        # the gateway forgets the session once the relay ends
        for _ in range(100):
            if not stack.gateway.broker.sessions:
                break
            await asyncio.sleep(0.02)
        assert stack.gateway.broker.sessions == {}


async def test_50_concurrent_sessions_lose_nothing(tmp_path):
    pools = (PoolConfig("desktop", max_sessions=30),)
    # all 50 launches come from 127.0.0.1 at once: lift the per-source burst
    async with LocalStack(str(tmp_path), hosts=2, pools=pools, timing=FAST, launch_burst=100) as stack:
        async def one(i):
            async with await stack.connect(user=f"u{i}") as s:
                await s.send(b"echo")
                msgs = [b"%d:%d:" % (i, k) + os.urandom(100) for k in range(100)]
                async def sender():
                    for m in msgs:
                        await s.send(m)
                t = asyncio.ensure_future(sender())
                got = [await s.recv() for _ in msgs]
                await t
                assert got == msgs
                return s.peer
        peers = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(50))), 60)
        # breadth-first spread them over both hosts
        assert set(peers) == {"host-1", "host-2"}


async def test_no_resources_reasons_reach_the_client(tmp_path):
    pools = (PoolConfig("desktop", max_sessions=1), PoolConfig("empty"),
             PoolConfig("mine", load_balancer="personal", assignments={"alice": "host-1"}))
    async with LocalStack(str(tmp_path), hosts=1, pools=pools, timing=FAST) as stack:
        s1 = await stack.connect()
        with pytest.raises(NoResourcesError) as ei:
            await stack.connect()
        assert ei.value.reason == "full"
        await s1.close()
        with pytest.raises(NoResourcesError) as ei:
            await stack.connect(resource="empty")
        assert ei.value.reason == "none-registered"
        with pytest.raises(NoResourcesError) as ei:
            await stack.connect(user="bob", resource="mine")
        assert ei.value.reason == "not-assigned"
        with pytest.raises(NotAssigned):
            await stack.connect(resource="desktop", resources=("empty",))
        # drain through the admin interface
        from shortpath.cli import main as cli
        for _ in range(100):   # wait for the first session's slot to be released
            if stack.gateway.broker.registry.hosts["host-1"].load == 0:
                break
            await asyncio.sleep(0.02)
        rc = await asyncio.to_thread(cli, ["admin", "--state", stack.state_dir, "drain", "host-1"])
        assert rc == 0
        with pytest.raises(NoResourcesError) as ei:
            await stack.connect()
        assert ei.value.reason == "draining"
        rc = await asyncio.to_thread(cli, ["admin", "--state", stack.state_dir, "undrain", "host-1"])
        async with await stack.connect() as s:
            await echo_check(s, 3)


async def test_bad_tokens_are_refused_with_typed_errors(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        gw = stack.gateway
        expired = gw.signer.mint("user", "alice", stack.config.gateway_id, 1, time.time() - 100,
                                 resources=["desktop"])
        with pytest.raises(TokenExpired):
            await connect(stack.address, expired, "desktop", cafile=stack.cafile, timing=FAST)
        forged = TokenSigner.generate().mint("user", "alice", stack.config.gateway_id, 60, time.time(),
                                             resources=["desktop"])
        with pytest.raises(BadSignature):
            await connect(stack.address, forged, "desktop", cafile=stack.cafile, timing=FAST)
        wrong_aud = gw.signer.mint("user", "alice", "another-gateway", 60, time.time(), resources=["desktop"])
        with pytest.raises(WrongAudience):
            await connect(stack.address, wrong_aud, "desktop", cafile=stack.cafile, timing=FAST)
        with pytest.raises(AuthError):   # a host token is not a user token
            await connect(stack.address, stack.host_token("host-1"), "desktop", cafile=stack.cafile, timing=FAST)
        assert gw.counters["auth_failures"] == 4
        async with await stack.connect() as s:     # and the gateway still serves
            await echo_check(s, 3)


async def test_host_identity_cannot_be_taken_over(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        from shortpath.host import HostAgent
        # same host id, different state dir -> different certificate
        impostor = HostAgent(stack.address, stack.host_token("host-1"), "host-1", lambda s: None,
                             state_dir=str(tmp_path / "other"), cafile=stack.cafile, timing=FAST)
        impostor.start()
        for _ in range(200):
            if impostor.last_error is not None:
                break
            await asyncio.sleep(0.01)
        await impostor.stop()
        assert isinstance(impostor.last_error, AuthError)
        assert "already registered" in impostor.last_error.message
        expired = stack.gateway.signer.mint("host", "host-9", stack.config.gateway_id, 1, time.time() - 100,
                                            pool="desktop")
        late = HostAgent(stack.address, expired, "host-9", lambda s: None, state_dir=str(tmp_path),
                         cafile=stack.cafile, timing=FAST)
        late.start()
        for _ in range(200):
            if late.last_error is not None:
                break
            await asyncio.sleep(0.01)
        await late.stop()
        assert isinstance(late.last_error, TokenExpired)


async def test_client_refuses_a_host_with_the_wrong_certificate(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        stack.gateway.broker.registry.hosts["host-1"].fingerprint = "sha-256 " + "00" * 32
        with pytest.raises(FingerprintMismatch):
            await stack.connect()


async def test_garbage_client_does_not_disturb_others(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        async with await stack.connect() as good:
            await good.send(b"echo")
            import ssl
            from shortpath.auth.certs import client_context

            async def attacker(payload):
                r, w = await asyncio.open_connection("127.0.0.1", stack.gateway.port,
                                                     ssl=client_context(stack.cafile))
                w.write(payload)
                await w.drain()
                try:
                    await asyncio.wait_for(r.read(), 5)   # the gateway answers (error) and closes
                finally:
                    w.close()

            junk = [os.urandom(200), b"\x01\x01\xff\xff\xff\xff" + b"x" * 100, b"\x01\x7f\x00\x00\x00\x00",
                    b"\x01\x01\x00\x00\x00\x05hello", b"\x09" * 64]
            before = stack.gateway.counters["protocol_errors"]
            tasks = [asyncio.ensure_future(attacker(j)) for j in junk]
            for i in range(200):
                m = b"%d" % i
                await good.send(m)
                assert await good.recv() == m
            await asyncio.gather(*tasks)
            assert stack.gateway.counters["protocol_errors"] - before == len(junk)
            # plain TCP garbage that is not even TLS
            r, w = await asyncio.open_connection("127.0.0.1", stack.gateway.port)
            w.write(os.urandom(500))
            await w.drain()
            await asyncio.wait_for(r.read(), 5)
            w.close()
            await good.send(b"still-here")
            assert await good.recv() == b"still-here"


async def test_gateway_restart_hosts_reregister_by_themselves(tmp_path):
    stack = LocalStack(str(tmp_path), hosts=2, timing=FAST)
    async with stack:
        port = stack.gateway.port
        first = [h.registrations for h in stack.hosts]
        await stack.gateway.stop()
        for h in stack.hosts:
            await asyncio.wait_for(_cleared(h), 5)
        await stack.start_gateway(port)
        await asyncio.wait_for(asyncio.gather(*(h.registered.wait() for h in stack.hosts)), 10)
        assert [h.registrations for h in stack.hosts] == [n + 1 for n in first]
        async with await stack.connect() as s:
            await echo_check(s, 3)


async def _cleared(agent):
    while agent.registered.is_set():
        await asyncio.sleep(0.01)


async def test_back_pressure_bounds_memory_when_the_host_does_not_read(tmp_path):
    from shortpath.config import Timing
    timing = Timing(**{**FAST.__dict__, "send_window_bytes": 512 * 1024})
    stalled = asyncio.Event()

    async def lazy_host(session):
        await stalled.wait()          # never reads
    stack = LocalStack(str(tmp_path), hosts=1, timing=timing, handler=lazy_host)
    async with stack:
        s = await stack.connect()
        sent = 0

        async def flood():
            nonlocal sent
            while True:
                await s.send(b"z" * 16384)
                sent += 16384
        t = asyncio.ensure_future(flood())
        await asyncio.sleep(1.0)
        t.cancel()
        # The window stops the sender at 512 KiB plus one message; nothing was lost
        # or buffered without bound in between.
        assert 0 < sent <= 512 * 1024 + 16384
        assert s.connection.unacked_bytes <= 512 * 1024 + 16384
        stalled.set()
        await s.close()


def _host_subprocess(stack, host_id, tmp_path):
    env = dict(os.environ, SHORTPATH_TOKEN=stack.host_token(host_id))
    return subprocess.Popen([sys.executable, "-m", "shortpath", "host", "--gateway", stack.address,
                             "--host-id", host_id, "--ca", stack.cafile, "--state", str(tmp_path / host_id),
                             "--udp-address", "127.0.0.1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def _wait_registered(stack, host_id, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rec = stack.gateway.broker.registry.hosts.get(host_id)
        if rec is not None and rec.connected:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"{host_id} never registered")


async def test_host_crash_mid_session_ends_client_session_with_reason(tmp_path):
    async with LocalStack(str(tmp_path), hosts=0, timing=FAST) as stack:
        proc = _host_subprocess(stack, "crashy", tmp_path)
        try:
            await _wait_registered(stack, "crashy")
            s = await stack.connect()
            await echo_check(s, 5)
            os.kill(proc.pid, signal.SIGKILL)
            with pytest.raises(SessionClosed) as ei:
                await asyncio.wait_for(s.recv(), 10)
            assert ei.value.reason == "host-gone"
            await s.close()
        finally:
            proc.kill()
            proc.wait()


def _listening_sockets(pid: int) -> list[str]:
    """Listening TCP sockets owned by ``pid`` (from /proc). UDP sockets are
    not listeners in this sense: ICE binds them to dial out (public Shortpath),
    and only managed mode -- off here -- binds a fixed port for peers to reach."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if inode in inodes and state == "0A":
                    found.append(f"{table} {local}")
    return found


async def test_host_process_opens_no_listening_socket(tmp_path):
    async with LocalStack(str(tmp_path), hosts=0, timing=FAST) as stack:
        proc = _host_subprocess(stack, "quiet", tmp_path)
        try:
            await _wait_registered(stack, "quiet")
            async with await stack.connect() as s:
                await echo_check(s, 5)
                assert _listening_sockets(proc.pid) == []
                # sanity: the checker does see our own gateway's listener
                assert any(x.startswith("tcp") for x in _listening_sockets(os.getpid()))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


async def test_launch_rate_limit_per_source(tmp_path):
    from shortpath.errors import RateLimited
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, launch_rate=0.5, launch_burst=2) as stack:
        a = await stack.connect(shortpath=False)
        b = await stack.connect(shortpath=False)
        with pytest.raises(RateLimited):
            await stack.connect(shortpath=False)
        assert stack.gateway.counters["rate_limited"] == 1
        await a.close()
        await b.close()


async def test_slowloris_half_open_connections_do_not_stop_real_clients(tmp_path):
    """1000 TCP connections that never finish TLS, plus 200 that finish TLS and never speak."""
    import ssl as _ssl
    from shortpath.auth.certs import client_context
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        port = stack.gateway.port
        # From another address than the client's: the gateway caps pre-auth connections per
        # source (gateway/admission.py; tests/integration/test_gateway_caps.py), so those over
        # the cap are closed at once.
        attacker = ("127.0.0.2", 0)
        silent, idle = [], []
        for _ in range(200):
            try:
                silent.append(await asyncio.open_connection("127.0.0.1", port, ssl=client_context(stack.cafile),
                                                            local_addr=attacker))
            except (ConnectionError, OSError, _ssl.SSLError):
                pass
        for _ in range(1000):
            idle.append(await asyncio.open_connection("127.0.0.1", port, local_addr=attacker))
        idle += silent
        assert silent
        t = time.monotonic()
        async with await stack.connect(shortpath=False) as s:
            await echo_check(s, 20)
        elapsed = time.monotonic() - t
        # a real client got through promptly, and the silent TLS peers are cut at the
        # handshake timeout (FAST: 5 s) rather than held forever
        assert elapsed < 3.0, elapsed
        ends = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in silent), return_exceptions=True), 15)
        assert all(e == b"" or isinstance(e, Exception) for e in ends)
        assert stack.gateway.counters["handshake_timeouts"] >= len(silent)
        for _, w in idle:
            w.close()
