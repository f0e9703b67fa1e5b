"""Gateway cluster on Redis (issue #14): launch cost and integrity across gateways.

``python -m benchmarks run --suite quick --only cluster`` (or ``--suite full``).
Everything runs in ONE process on loopback (gateways, hosts, clients; a private
``redis-server`` child), so the figures compare configurations on equal terms
but are not what separate machines would do: every gateway, host and client
shares one event loop and this machine's cores.

1. **Launches**: L launches, C at a time, each a full client connect (TLS to the
   gateway, launch, host data leg, end-to-end TLS, ticket check) then close; for
   the in-memory broker on one gateway, and Redis with 1, 2 and 3 gateways (the
   clients spread round robin, each host's control channel on one gateway, so
   with k gateways about (k-1)/k of the launches cross gateways). Launch latency
   p50/p99, launches per second, Redis round trips per launch (counted in the
   store, all gateways).
2. **Heartbeats**: Redis round trips per host heartbeat, counted over an idle
   window (heartbeat pushes plus each gateway's periodic sync).
3. **Integrity**: S sessions over 3 gateways, each sending M numbered messages
   and checking the echoes (``exchanging`` sessions at a time, all of them open): lost,
   duplicated, reordered (expected 0), sessions that stalled and why; the
   Python heap growth per session (tracemalloc, whole process, all 3 gateways
   and the hosts and clients) as a rough upper bound of a gateway's share.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import tracemalloc

from .common import percentile, save, table

SUITES = {"quick": {"launches": 120, "concurrency": 12, "sessions": 150, "messages": 50, "idle_s": 3.0,
                    "exchanging": 100},
          "full": {"launches": 400, "concurrency": 20, "sessions": 1000, "messages": 100, "idle_s": 6.0,
                   "exchanging": 100}}


def _redis():
    from tests.integration.conftest_redis import RedisServer, redis_missing_reason
    why = redis_missing_reason()
    if why:
        raise SystemExit(f"cluster benchmark: {why}")
    srv = RedisServer()
    srv.start()
    return srv


async def _launches(connect, n: int, conc: int) -> dict:
    sem = asyncio.Semaphore(conc)
    lat: list[float] = []
    errors: dict[str, int] = {}

    async def one(i):
        async with sem:
            t = time.monotonic()
            try:
                s = await connect(i)
            except Exception as exc:        # counted and reported, not hidden
                key = getattr(exc, "reason", None) or getattr(exc, "code", type(exc).__name__)
                errors[key] = errors.get(key, 0) + 1
                return
            lat.append(time.monotonic() - t)
            await s.close()
    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.monotonic() - t0
    ms = [x * 1000 for x in lat]
    return {"ok": len(lat), "errors": errors, "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "launches_per_s": round(len(lat) / wall, 1)}


def _round_trips(cluster) -> int:
    return sum(sum(gw.broker.cluster.store.round_trips.values()) for gw in cluster.gateways if gw)


async def bench_launches(cfg: dict, redis_url: str, tmp: str, log) -> list[dict]:
    from shortpath.config import PoolConfig, Timing
    from shortpath.demo import LocalStack
    from shortpath.gateway.localcluster import LocalCluster
    pools = (PoolConfig("desktop", max_sessions=1000),)
    timing = Timing(heartbeat_interval=1.0)
    rows = []
    async with LocalStack(os.path.join(tmp, "mem"), hosts=4, pools=pools, timing=timing, managed=False,
                          launch_burst=1e6, launch_rate=1e6) as st:
        r = await _launches(lambda i: st.connect(user=f"u{i}", shortpath=False), cfg["launches"],
                            cfg["concurrency"])
        rows.append({"broker": "memory", "gateways": 1, **r, "redis_rt_per_launch": 0})
        log(rows[-1])
    for k in (1, 2, 3):
        import redis
        redis.Redis.from_url(redis_url).flushall()
        async with LocalCluster(os.path.join(tmp, f"c{k}"), redis_url, gateways=k, pools=pools, timing=timing,
                                sync_interval=1.0) as c:
            for h in range(4):
                await c.add_host(f"host-{h}", [h % k])
            await c.synced()
            before = _round_trips(c)
            r = await _launches(lambda i: c.connect(i % k, user=f"u{i}"), cfg["launches"], cfg["concurrency"])
            rts = _round_trips(c) - before
            rows.append({"broker": "redis", "gateways": k, **r,
                         "redis_rt_per_launch": round(rts / max(1, r["ok"]), 2)})
            log(rows[-1])
    return rows


async def bench_heartbeats(cfg: dict, redis_url: str, tmp: str) -> dict:
    import redis
    redis.Redis.from_url(redis_url).flushall()
    from shortpath.config import Timing
    from shortpath.gateway.localcluster import LocalCluster
    timing = Timing(heartbeat_interval=0.5)
    n_hosts = 20
    async with LocalCluster(tmp, redis_url, gateways=2, timing=timing, sync_interval=1.0) as c:
        for h in range(n_hosts):
            await c.add_host(f"host-{h}", [h % 2])
        await c.synced()
        beats = {"n": 0}
        for gw in c.gateways:
            orig = gw.broker.heartbeat

            def counted(host_id, msg, _orig=orig):
                beats["n"] += 1
                return _orig(host_id, msg)
            gw.broker.heartbeat = counted
        before = _round_trips(c)
        await asyncio.sleep(cfg["idle_s"])
        rts = _round_trips(c) - before
    return {"hosts": n_hosts, "gateways": 2, "seconds": cfg["idle_s"], "heartbeats": beats["n"],
            "redis_round_trips": rts, "rt_per_heartbeat": round(rts / max(1, beats["n"]), 3)}


async def bench_integrity(cfg: dict, redis_url: str, tmp: str) -> dict:
    import redis
    redis.Redis.from_url(redis_url).flushall()
    from shortpath.config import PoolConfig, Timing
    from shortpath.gateway.localcluster import LocalCluster
    n, m = cfg["sessions"], cfg["messages"]
    pools = (PoolConfig("desktop", max_sessions=n),)
    timing = Timing(heartbeat_interval=1.0, heartbeat_misses=10, launch_timeout=60.0, leg_timeout=30.0,
                    handshake_timeout=30.0)
    async with LocalCluster(tmp, redis_url, gateways=3, pools=pools, timing=timing, sync_interval=1.0,
                            max_pending_legs=10_000) as c:
        for h in range(6):
            await c.add_host(f"host-{h}", [h % 3])
        await c.synced()
        tracemalloc.start()
        heap0 = tracemalloc.get_traced_memory()[0]
        sem = asyncio.Semaphore(25)
        sessions = []
        open_errors: dict[str, int] = {}

        async def open_one(i):
            async with sem:
                try:
                    s = await c.connect(i % 3, user=f"u{i}")
                    await s.send(b"echo")
                except Exception as exc:       # reported, not hidden
                    key = f"{getattr(exc, 'code', type(exc).__name__)}:{getattr(exc, 'reason', '')}"
                    open_errors[key] = open_errors.get(key, 0) + 1
                    return
                sessions.append(s)
        t_open = time.monotonic()
        await asyncio.gather(*(open_one(i) for i in range(n)))
        open_s = time.monotonic() - t_open
        heap1 = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        per_gw = [len(gw.broker.sessions) for gw in c.gateways]
        lost = dup = reordered = 0
        stalled: list[str] = []          # sessions still waiting at the deadline (and why, if closed)
        deadline = time.monotonic() + 300.0

        busy = asyncio.Semaphore(cfg["exchanging"])   # sessions exchanging at a time (all stay open)

        async def exchange(s, i):
            async with busy:
                await _exchange(s, i)

        async def _exchange(s, i):
            nonlocal lost, dup, reordered
            for k in range(m):
                await s.send(b"%d:%d:" % (i, k) + b"x" * 64)
            seen = []
            while len(seen) < m:
                try:
                    msg = await asyncio.wait_for(s.recv(), max(0.1, deadline - time.monotonic()))
                except Exception as exc:      # deadline, or the session ended: say which
                    stalled.append(getattr(s, "close_reason", None) or type(exc).__name__)
                    break
                seen.append(int(msg.split(b":")[1]))
            lost += m - len(set(seen))
            dup += len(seen) - len(set(seen))
            reordered += sum(1 for a, b in zip(seen, seen[1:]) if b < a)
        t0 = time.monotonic()
        await asyncio.gather(*(exchange(s, i) for i, s in enumerate(sessions)))
        wall = time.monotonic() - t0
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return {"sessions": n, "opened": len(sessions), "open_errors": open_errors, "open_s": round(open_s, 1),
            "gateways": 3, "sessions_per_gateway": per_gw, "messages_per_session": m,
            "lost": lost, "duplicated": dup, "reordered": reordered, "exchange_s": round(wall, 2),
            "sessions_stalled": len(stalled),
            "stall_reasons": {r: stalled.count(r) for r in set(stalled)},
            "heap_kib_per_session_all_parts": round((heap1 - heap0) / 1024 / n, 1)}


def run(suite: str = "quick", plot: bool = True) -> dict:
    cfg = SUITES[suite]
    from benchmarks.scale import raise_nofile
    raise_nofile()
    srv = _redis()
    out: dict = {"suite": suite, "config": cfg}
    try:
        with tempfile.TemporaryDirectory(prefix="sp-bench-cluster-") as tmp:
            def log(row):
                print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            out["launches"] = asyncio.run(bench_launches(cfg, srv.url, tmp, log))
            print(table(out["launches"], ["broker", "gateways", "ok", "p50_ms", "p99_ms", "launches_per_s",
                                          "redis_rt_per_launch", "errors"]), flush=True)
            out["heartbeats"] = asyncio.run(bench_heartbeats(cfg, srv.url, os.path.join(tmp, "hb")))
            print("  heartbeats:", out["heartbeats"], flush=True)
            out["integrity"] = asyncio.run(bench_integrity(cfg, srv.url, os.path.join(tmp, "int")))
            print("  integrity:", out["integrity"], flush=True)
    finally:
        srv.cleanup()
    path = save(f"cluster_{suite}", out)
    print(f"  saved {path}", flush=True)
    return out


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "quick")
