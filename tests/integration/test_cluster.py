"""Many gateways, one broker on Redis (issue #14), with real parts: a private
redis-server (conftest_redis.py), real gateways, hosts and clients on loopback."""

import asyncio
import dataclasses
import hashlib
import time

import pytest

from shortpath.config import PoolConfig
from shortpath.errors import BrokerUnavailable, NoResourcesError
from shortpath.gateway.localcluster import LocalCluster
from tests.conftest import FAST
from tests.integration.conftest_redis import redis_server  # noqa: F401  (fixture)


async def echo_both_ways(session, n=30, first=True):
    if first:
        await session.send(b"echo")   # the desktop app echoes from here on
    for i in range(n):
        msg = hashlib.sha256(b"%d" % i).digest() * 4
        await session.send(msg)
        assert await asyncio.wait_for(session.recv(), 10) == msg


async def until(pred, timeout=10.0, step=0.02):
    """Wait for a condition the system reaches on its own timers (liveness expiry)."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


async def healthy(gw, timeout=10.0):
    """Wait until the gateway's next successful sync with Redis."""
    gw.broker.cluster.synced.clear()
    await asyncio.wait_for(gw.broker.cluster.synced.wait(), timeout)


async def test_client_on_b_reaches_host_on_a(tmp_path, redis_server):
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=2, timing=FAST) as c:
        await c.add_host("host-1", [0])                     # control channel on gw-1 only
        await c.synced()
        a, b = c.gateways
        async with await c.connect(1) as s:                 # the client is on gw-2
            assert s.peer == "host-1"
            await echo_both_ways(s)
            assert list(b.broker.sessions) == [s.session_id] and not a.broker.sessions  # stitched on B
            assert "host-1" in a.broker.links and "host-1" not in b.broker.links
            assert a.broker.cluster.stats["remote_dials_served"] == 1
            assert b.broker.cluster.stats["remote_dials_sent"] == 1
            await c.synced()
            hosts = (await b.broker.cluster.admin("hosts"))["hosts"]       # whole cluster, from B
            assert [(h["host_id"], h["gateway"], h["status"]) for h in hosts] == [("host-1", "gw-1", "available")]
            sessions = (await a.broker.cluster.admin("sessions"))["sessions"]   # from A
            assert [(x["session_id"], x["gateway"], x["host_id"]) for x in sessions] == [
                (s.session_id, "gw-2", "host-1")]
            gws = (await a.broker.cluster.admin("gateways"))["gateways"]
            assert sorted(g["gateway"] for g in gws) == ["gw-1", "gw-2"]


async def test_200_concurrent_launches_over_3_gateways_never_exceed_limits(tmp_path, redis_server):
    limit, n_hosts = 2, 6
    active: dict[str, int] = {}
    peak: dict[str, int] = {}
    release = asyncio.Event()

    def handler_for(host_id):
        async def handler(session):
            active[host_id] = active.get(host_id, 0) + 1
            peak[host_id] = max(peak.get(host_id, 0), active[host_id])
            try:
                await session.send(b"hi")
                await release.wait()
            finally:
                active[host_id] -= 1
        return handler

    pools = (PoolConfig("desktop", max_sessions=limit),)
    # 200 TLS launches in one process on a shared 2-core machine starve the heartbeats:
    # a 3 s liveness window keeps this test about booking, not about liveness.
    timing = dataclasses.replace(FAST, heartbeat_misses=10)
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=3, pools=pools, timing=timing) as c:
        for i in range(n_hosts):
            await c.add_host(f"host-{i}", [i % 3], handler=handler_for(f"host-{i}"))
        await c.synced()
        sessions = []

        async def one(i):
            try:
                s = await asyncio.wait_for(c.connect(i % 3, user=f"u{i}"), 30)
            except NoResourcesError as exc:
                return exc.reason
            sessions.append(s)
            return s.peer
        gathered = asyncio.ensure_future(asyncio.gather(*(one(i) for i in range(200))))
        done, _ = await asyncio.wait({gathered}, timeout=45)
        if not done:       # say where it is stuck before failing
            for t in asyncio.all_tasks():
                t.print_stack(limit=6)
            raise AssertionError("200 launches did not finish in 45 s")
        results = gathered.result()
        won = [r for r in results if r.startswith("host-")]
        lost = [r for r in results if not r.startswith("host-")]
        per_host = {h: won.count(h) for h in set(won)}
        assert max(per_host.values()) <= limit and max(peak.values()) <= limit, (per_host, peak)
        assert len(won) == limit * n_hosts, (len(won), set(lost))   # every slot used once, none twice
        assert set(lost) == {"full"}
        release.set()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def test_redis_stopped_and_restarted_mid_run(tmp_path, redis_server):
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=2, timing=FAST) as c:
        await c.add_host("host-1", [0])
        await c.synced()
        async with await c.connect(1) as live:
            await echo_both_ways(live, 5)
            redis_server.stop()
            with pytest.raises(BrokerUnavailable) as ei:      # typed, and says so on the wire
                await c.connect(1, user="bob")
            assert ei.value.code == "broker-unavailable"
            await echo_both_ways(live, 20, first=False)                    # the live session goes on
            await asyncio.sleep(FAST.heartbeat_interval * 2)  # heartbeats while Redis is away
            redis_server.start()                              # empty: no persistence
            for gw in c.gateways:
                await healthy(gw)                             # state pushed again whole
            async with await c.connect(1, user="carol") as s2:   # launches work again
                assert s2.peer == "host-1"
                await echo_both_ways(s2, 5)
            await echo_both_ways(live, 5, first=False)
            await c.synced()
            sessions = (await c.gateways[0].broker.cluster.admin("sessions"))["sessions"]
            assert live.session_id in {x["session_id"] for x in sessions}   # converged


async def test_gateway_killed_hosts_move_and_stale_state_expires(tmp_path, redis_server):
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=2, timing=FAST) as c:
        host = await c.add_host("host-1", [0, 1])
        await c.synced()
        assert host.gateway == ("127.0.0.1", c.ports[0])
        t0 = time.monotonic()
        host.registered.clear()
        await c.kill_gateway(0)
        await asyncio.wait_for(host.registered.wait(), 5)      # moved to gw-2
        moved_s = time.monotonic() - t0
        assert host.gateway == ("127.0.0.1", c.ports[1]) and moved_s < 5
        await c.synced()
        async with await c.connect(1) as s:
            await echo_both_ways(s, 5)
        b = c.gateways[1].broker.cluster
        # gw-1's record expires on its own (it no longer refreshes it)
        async def gone():
            while "gw-1" in {g["gateway"] for g in (await b.admin("gateways"))["gateways"]}:
                await asyncio.sleep(0.1)
        await asyncio.wait_for(gone(), 10)


async def test_no_session_on_a_host_that_is_gone(tmp_path, redis_server):
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=2, timing=FAST) as c:
        host = await c.add_host("host-1", [0])
        await c.synced()
        await host.stop()
        c.hosts.remove(host)
        await until(lambda: "host-1" not in c.gateways[0].broker.links)
        await c.synced()
        with pytest.raises(NoResourcesError) as ei:
            await c.connect(1)
        assert ei.value.reason == "unavailable"


async def test_restarted_gateway_drops_claims_of_its_previous_life(tmp_path, redis_server):
    """gw-1 dies holding host-1's claim, the host goes away too, gw-1 comes back
    (same id) before the claim would expire: no launch is sent to a host nobody holds."""
    timing = dataclasses.replace(FAST, heartbeat_misses=30)      # a 9 s claim: expiry cannot be the reason
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=2, timing=timing) as c:
        host = await c.add_host("host-1", [0])
        await c.synced()
        await c.kill_gateway(0)
        await host.stop()
        c.hosts.remove(host)
        await c.start_gateway(0)
        await c.synced()
        with pytest.raises(NoResourcesError) as ei:
            await c.connect(1)
        assert ei.value.reason == "unavailable", ei.value


async def test_resume_on_a_gateway_that_does_not_hold_the_host(tmp_path, redis_server):
    """The client's relay leg on gw-2 is cut; it resumes on gw-2, whose broker finds
    the host's channel on gw-1 in Redis and has it dial the new leg to gw-2 (#14 x #15)."""
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=2, timing=FAST) as c:
        await c.add_host("host-1", [0])
        await c.synced()
        s = await c.connect(1)
        await echo_both_ways(s, 3)
        for p in list(s.paths.values()):
            p.conn.abort()                       # the relay leg is reset
        for i in range(20):                      # the session carries on over the resumed leg
            await s.send(b"after %d" % i)
            assert await asyncio.wait_for(s.recv(), 15) == b"after %d" % i
        assert s.relay is not None and s.relay.path_id == "relay-2"
        assert c.gateways[0].broker.cluster.stats["remote_dials_served"] == 2    # launch + resume
        await s.close()
