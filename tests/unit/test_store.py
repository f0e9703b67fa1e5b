"""The broker's selection rules as tables, run against BOTH stores (issue #14):
the in-memory registry and Redis (a private redis-server, see
tests/integration/conftest_redis.py). The same tables must give the same picks
and the same NoResourcesError reasons; then Redis-only properties: atomic
reservation under concurrent launches from several "gateways", liveness by key
expiry, and a typed error when Redis is down."""

import asyncio

import pytest

from shortpath.broker.registry import HostRecord
from shortpath.broker.store import BrokerUnavailable, MemoryStore, RedisStore
from shortpath.config import PoolConfig
from shortpath.errors import NoResourcesError
from tests.integration.conftest_redis import RedisServer, require_redis
from tests.unit.test_registry import NO_RESOURCES_CASES, SELECTION_CASES, at

T = 1_000_000.0   # wall-clock-like seconds (Redis keeps ms scores)
LIVENESS = 6.0


@pytest.fixture(scope="module")
def redis_srv():
    require_redis()
    srv = RedisServer()
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        from shortpath.broker.registry import Registry
        yield MemoryStore(Registry(heartbeat_interval=2.0, heartbeat_misses=3))
        return
    srv = request.getfixturevalue("redis_srv")
    s = RedisStore(srv.url, liveness=LIVENESS)
    await s.redis.flushall()
    yield s
    await s.close()


async def setup(store, hosts, now=T, pool="p"):
    """hosts: (host_id, load, drain, last_seen)."""
    for host_id, load, drain, seen in hosts:
        rec = HostRecord(host_id, pool, "sha-256 00", registered_at=seen, last_seen=seen, sessions=load)
        await store.register(rec, "gw-1", now)
        if drain:
            await store.set_drain(host_id, True)


async def pick(store, pool, user="u", now=T, launch_id=None):
    pick.n += 1
    try:
        rec, gw = await store.reserve(pool, user, now, launch_id or f"l{pick.n}")
        return rec.host_id
    except NoResourcesError as exc:
        return exc.reason
pick.n = 0


@pytest.mark.parametrize("lb,hosts,expect", at(SELECTION_CASES, T))
async def test_selection(store, lb, hosts, expect):
    await setup(store, hosts)
    assert await pick(store, PoolConfig("p", load_balancer=lb, max_sessions=4)) == expect


@pytest.mark.parametrize("hosts,reason", at(NO_RESOURCES_CASES, T))
async def test_no_resources_reasons(store, hosts, reason):
    await setup(store, hosts)
    assert await pick(store, PoolConfig("p", max_sessions=4)) == reason


async def test_personal(store):
    pool = PoolConfig("p", load_balancer="personal", max_sessions=1, assignments={"alice": "b", "bob": "zz"})
    await setup(store, [("a", 0, False, T), ("b", 0, False, T)])
    assert [await pick(store, pool, u) for u in ("alice", "alice", "carol", "bob")] == \
        ["b", "full", "not-assigned", "none-registered"]


async def test_breadth_first_spreads_and_abandon_frees(store):
    await setup(store, [("a", 0, False, T), ("b", 0, False, T), ("c", 0, False, T)])
    pool = PoolConfig("p", max_sessions=2)
    picks = [await pick(store, pool, now=T + i * 0.1, launch_id=f"s{i}") for i in range(7)]
    assert picks[:3] == ["a", "b", "c"] and sorted(picks[:6]) == ["a", "a", "b", "b", "c", "c"]
    assert picks[6] == "full"
    await store.launch_done("a", False, "s0", "p", "u", T + 0.8)       # abandoned: slot back
    assert await pick(store, pool, now=T + 0.9) == "a"


async def test_depth_first_fills_one_host_first(store):
    await setup(store, [("a", 0, False, T), ("b", 0, False, T)])
    pool = PoolConfig("p", load_balancer="depth-first", max_sessions=3)
    assert [await pick(store, pool) for _ in range(5)] == ["a", "a", "a", "b", "b"]


@pytest.mark.parametrize("limit,steps", [
    (2, [("launch", "alice", "a"), ("launch", "alice", "a"), ("launch", "alice", "user-limit"),
         ("launch", "bob", "a")]),
    (1, [("pending", "alice", "a"), ("launch", "alice", "user-limit"), ("abandon", "alice", None),
         ("launch", "alice", "a")]),
    (1, [("launch", "alice", "a"), ("launch", "alice", "user-limit"), ("end", "alice", None),
         ("launch", "alice", "a"), ("launch", "bob", "a"), ("launch", "carol", "a"), ("launch", "dave", "full")]),
])
async def test_max_sessions_per_user(store, limit, steps):
    await setup(store, [("a", 0, False, T)])
    pool = PoolConfig("p", max_sessions=3, max_sessions_per_user=limit)
    pending, live = {}, {}
    for i, (action, user, expect) in enumerate(steps):
        now = T + i * 0.01
        if action == "abandon":
            await store.launch_done("a", False, pending[user].pop(0), "p", user, now)
            continue
        if action == "end":
            await store.session_ended("a", live[user].pop(0), "p", user)
            continue
        lid = f"x{i}"
        got = await pick(store, pool, user, now, lid)
        assert got == expect, (i, action, user)
        if got == "a":
            if action == "launch":
                await store.launch_done("a", True, lid, "p", user, now)
                live.setdefault(user, []).append(lid)
            else:
                pending.setdefault(user, []).append(lid)


async def test_disconnect_only_by_holder_and_reconnect_keeps_drain(store):
    await setup(store, [("a", 0, True, T)])
    await store.disconnected("a", "gw-other")          # not the holder: no effect
    assert [v.status for v in await store.hosts(T)] == ["draining"]
    await store.disconnected("a", "gw-1")
    assert [v.status for v in await store.hosts(T)] == ["unavailable"]
    await setup(store, [("a", 0, False, T + 1)], now=T + 1)   # registers again (drain not passed)
    views = await store.hosts(T + 1)
    assert [(v.status, v.gateway) for v in views] == [("draining", "gw-1")]
    with pytest.raises(KeyError):
        await store.set_drain("nope", True)


# --- Redis only ---------------------------------------------------------------------------

async def test_concurrent_reservations_from_three_gateways_never_overbook(redis_srv):
    """200 concurrent launches through three store clients (three gateways) against
    10 hosts of limit 3: exactly 30 succeed, none over its limit, the rest 'full'."""
    stores = [RedisStore(redis_srv.url, liveness=60.0) for _ in range(3)]
    await stores[0].redis.flushall()
    try:
        await setup(stores[0], [(f"h{i}", 0, False, T) for i in range(10)])
        pool = PoolConfig("p", max_sessions=3)
        results = await asyncio.gather(*(
            stores[i % 3].reserve(pool, f"user{i}", T, f"launch-{i}") for i in range(200)), return_exceptions=True)
        won = [r[0].host_id for r in results if isinstance(r, tuple)]
        lost = [r for r in results if not isinstance(r, tuple)]
        assert all(isinstance(e, NoResourcesError) and e.reason == "full" for e in lost), lost[:3]
        assert len(won) == 30
        counts = {h: won.count(h) for h in set(won)}
        assert max(counts.values()) <= 3 and len(counts) == 10
        for i in range(10):   # Redis agrees: 3 pending on each
            assert await stores[0].redis.zcard(RedisStore.k_pending(f"h{i}")) == 3
    finally:
        for s in stores:
            await s.close()


async def test_liveness_expires_and_pending_launches_expire(redis_srv):
    s = RedisStore(redis_srv.url, liveness=0.3, pending_ttl=0.3)
    await s.redis.flushall()
    try:
        import time
        now = time.time()
        await setup(s, [("a", 0, False, now)], now=now)
        pool = PoolConfig("p", max_sessions=1)
        assert (await s.reserve(pool, "u", now, "l1"))[0].host_id == "a"
        assert await pick(s, pool, now=now) == "full"
        await asyncio.sleep(0.4)              # Redis's own clock expires the alive key
        assert await pick(s, pool, now=time.time()) == "unavailable"
        await setup(s, [("a", 0, False, time.time())], now=time.time())   # heartbeat again
        assert await pick(s, pool, now=time.time()) == "a"   # the old pending launch expired
    finally:
        await s.close()


async def test_redis_down_is_broker_unavailable(redis_srv):
    srv = RedisServer()
    srv.start()
    s = RedisStore(srv.url, timeout=0.5)
    try:
        await setup(s, [("a", 0, False, T)])
        srv.stop()
        with pytest.raises(BrokerUnavailable) as ei:
            await s.reserve(PoolConfig("p"), "u", T, "l1")
        assert ei.value.code == "broker-unavailable"
        srv.start()                           # same port, empty (no persistence)
        assert await pick(s, PoolConfig("p")) == "none-registered"
        await setup(s, [("a", 0, False, T)])  # the next heartbeat rewrites the host whole
        assert await pick(s, PoolConfig("p")) == "a"
    finally:
        await s.close()
        srv.cleanup()
