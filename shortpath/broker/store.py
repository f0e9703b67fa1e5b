"""Broker state stores: one async interface, two implementations.

* :class:`MemoryStore` -- the default: the pure :class:`~.registry.Registry` in
  this process, no set-up. One gateway.
* :class:`RedisStore` -- state shared by every gateway of a deployment, in Redis
  (redis-py's asyncio client). Used with ``shortpath gateway --redis URL``.

Both pick hosts with the same pure code: :meth:`RedisStore.reserve` reads the
pool's hosts into a throw-away :class:`Registry` and asks its ``select`` (so
breadth-first / depth-first / personal, limits, drain and the ``NoResourcesError``
reasons are the registry's own), then books the chosen host with ONE Lua script
(:data:`RESERVE_LUA`) that re-checks liveness, drain, the host's session limit
and the user's limit and takes the slot atomically. Two gateways that chose the
same last slot cannot both win: the loser's script answers ``full`` and it
chooses again from fresh state (a few rounds at most, then ``NoResourcesError``).

Redis key schema
----------------
All keys start with ``sp:``. Times in hashes are the writer's wall clock
(seconds); expiry scores in sorted sets are milliseconds.

==========================  ======  ==============================  ==========================================
key                         type    TTL                             who writes
==========================  ======  ==============================  ==========================================
sp:host:{host}              hash    none (drain is operator state)  the gateway holding the host's control
                                                                    channel (pool, fingerprint, gateway,
                                                                    sessions, last_seen, token_jti/exp) at
                                                                    register and each heartbeat; reservation
                                                                    script (last_assigned); launching gateway
                                                                    (sessions, total_sessions); admin (drain)
sp:alive:{host}             string  heartbeat_interval x misses     holding gateway, value = its gateway id;
                                    (refreshed each heartbeat)      deleted by it (compare-and-delete) when
                                                                    the control channel closes. Absent = the
                                                                    host is unavailable: never booked.
sp:pool:{pool}              set     none                            holding gateway at register (host ids)
sp:pending:{host}           zset    pending_ttl (refreshed)         reservation script adds the launch's
                                                                    session id, score = expiry ms; launching
                                                                    gateway removes it when the leg is
                                                                    stitched or abandoned; expired members
                                                                    are trimmed by the script
sp:live:{host}              zset    session_lease (refreshed)       the gateway that stitched a session: its
                                                                    session id, score = lease expiry ms,
                                                                    renewed every sync, removed at the end.
                                                                    A host's load = max(sessions it reported,
                                                                    live members) + pending members, so a
                                                                    heartbeat sent before a stitch cannot
                                                                    hide that session from the limit
sp:user:{pool}:{user}       zset    session_lease (refreshed)       reservation script (pending launch),
                                                                    launching gateway (live session: score
                                                                    renewed every sync), removed at the end
sp:gw:{gw}                  hash    3 x sync interval               that gateway: address, connections,
                                                                    sessions, hosts, updated
sp:gateways                 set     none                            each gateway adds itself; readers drop
                                                                    ids whose sp:gw:{gw} expired
sp:sessions:{gw}            hash    3 x sync interval               that gateway: session id -> JSON (user,
                                                                    host, resource, started), rewritten whole
                                                                    every sync (so it converges after an outage)
sp:dial:{gw}                pubsub  -                               any gateway: "dial your data leg to X"
                                                                    orders for hosts whose channel is on gw
sp:dial-result:{gw}         pubsub  -                               the holding gateway: a host's refusal of
                                                                    an order that gateway gw sent
==========================  ======  ==============================  ==========================================

Nothing here is a secret: the one-time ``conn_id`` of a launch travels only in the
``sp:dial`` message (Redis is inside the deployment's trust boundary, like the
gateways), never in a key. With Redis Cluster, the four keys of one reservation
would need one hash slot (a ``{host}`` hash tag); this module targets one Redis
(with Sentinel for failover), see docs/scale.md.

A Redis without persistence loses drain flags when it restarts; host records,
liveness, sessions and gateways come back within one heartbeat / sync interval
because the gateways rewrite them whole.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Protocol

from ..config import PoolConfig
from ..errors import BrokerUnavailable, NoResourcesError
from .registry import HostRecord, Registry

PREFIX = "sp:"


@dataclass
class HostView:
    """One host as the admin commands show it: its record, its status and the
    gateway that holds its control channel (None when it has none)."""
    record: HostRecord
    status: str
    gateway: str | None


class Store(Protocol):
    """What the broker needs from its state. ``now`` is always an argument."""

    async def register(self, rec: HostRecord, gateway: str, now: float) -> None:
        """Write (or rewrite whole) a host's record; it is live for one liveness window from ``rec.last_seen``."""

    async def disconnected(self, host_id: str, gateway: str) -> None:
        """The host's control channel on ``gateway`` closed (no-op if it moved to another gateway)."""

    async def set_drain(self, host_id: str, drain: bool) -> None:
        """KeyError if the host is unknown."""

    async def reserve(self, pool: PoolConfig, user: str, now: float, launch_id: str) -> tuple[HostRecord, str | None]:
        """Pick a host and book a pending slot on it (and one of the user's): the
        record and the gateway holding its control channel. NoResourcesError if none."""

    async def launch_done(self, host_id: str, stitched: bool, launch_id: str, pool: str, user: str,
                          now: float) -> None: ...

    async def session_ended(self, host_id: str, launch_id: str, pool: str, user: str) -> None: ...

    async def hosts(self, now: float) -> list[HostView]: ...

    async def close(self) -> None: ...


# --- in memory -------------------------------------------------------------------------

class MemoryStore:
    """The registry in this process behind the store interface (one gateway)."""

    def __init__(self, registry: Registry | None = None, gateway: str = "local") -> None:
        self.registry = registry if registry is not None else Registry()
        self.gateway = gateway
        self.placement: dict[str, str] = {}

    async def register(self, rec: HostRecord, gateway: str, now: float) -> None:
        new = self.registry.register(rec.host_id, rec.pool, rec.fingerprint, rec.registered_at,
                                     token_jti=rec.token_jti, token_exp=rec.token_exp)
        new.last_seen = rec.last_seen
        new.sessions = rec.sessions
        self.placement[rec.host_id] = gateway

    async def disconnected(self, host_id: str, gateway: str) -> None:
        if self.placement.get(host_id) == gateway:
            self.registry.disconnected(host_id)
            del self.placement[host_id]

    async def set_drain(self, host_id: str, drain: bool) -> None:
        self.registry.set_drain(host_id, drain)

    async def reserve(self, pool, user, now, launch_id):
        rec = self.registry.select(pool, user, now)
        return rec, self.placement.get(rec.host_id)

    async def launch_done(self, host_id, stitched, launch_id, pool, user, now) -> None:
        self.registry.launch_done(host_id, stitched, pool=pool, user=user)

    async def session_ended(self, host_id, launch_id, pool, user) -> None:
        self.registry.session_ended(host_id, pool=pool, user=user)

    async def hosts(self, now: float) -> list[HostView]:
        return [HostView(r, self.registry.status(r, now), self.placement.get(r.host_id))
                for r in sorted(self.registry.hosts.values(), key=lambda r: r.host_id)]

    async def close(self) -> None:
        pass


# --- Redis -----------------------------------------------------------------------------

#: The one reservation script. It is given the candidates in the order the pure
#: selection ranks them and books the first that still fits, so concurrent launches
#: on other gateways cost a retry only when every candidate filled up meanwhile.
#: KEYS[1]: the user's zset; then per candidate: host hash, alive key, pending zset,
#: live zset. ARGV: pool, max_sessions, max_per_user (0 = none), now_ms, launch id,
#: pending expiry ms, pending ttl ms, lease ttl ms, then the candidates' host ids.
#: Returns {"ok", host id, gateway} or {reason the last candidate failed for}.
RESERVE_LUA = """
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local per_user = tonumber(ARGV[3])
if per_user > 0 and redis.call('ZCARD', KEYS[1]) >= per_user then return {'user-limit'} end
local reason = 'full'
local n = (#KEYS - 1) / 4
for i = 0, n - 1 do
  local host, alive, pending, live = KEYS[2 + 4*i], KEYS[3 + 4*i], KEYS[4 + 4*i], KEYS[5 + 4*i]
  redis.call('ZREMRANGEBYSCORE', pending, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', live, '-inf', now)
  local gw = redis.call('GET', alive)
  local h = redis.call('HMGET', host, 'pool', 'drain', 'sessions')
  if not gw or h[1] ~= ARGV[1] then
    reason = 'unavailable'
  elseif h[2] == '1' then
    reason = 'draining'
  elseif math.max(0, tonumber(h[3] or '0') or 0, redis.call('ZCARD', live)) + redis.call('ZCARD', pending)
         >= tonumber(ARGV[2]) then
    reason = 'full'
  else
    redis.call('ZADD', pending, ARGV[6], ARGV[5])
    redis.call('PEXPIRE', pending, ARGV[7])
    redis.call('ZADD', KEYS[1], ARGV[6], ARGV[5])
    redis.call('PEXPIRE', KEYS[1], ARGV[8])
    redis.call('HSET', host, 'last_assigned', ARGV[4])
    return {'ok', ARGV[9 + i], gw}
  end
end
return {reason}
"""

#: Delete the alive key only if this gateway still holds the host (KEYS[1]; ARGV[1] gateway id).
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _num(value, default=0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class RedisStore:
    """Broker state in Redis, shared by every gateway (see the key table above).

    Every Redis failure (refused, timed out, reset) surfaces as
    :class:`BrokerUnavailable`; callers that only mirror state (heartbeats) catch
    it and retry at the next sync."""

    #: reservation rounds before giving up when other gateways keep taking the chosen slot
    RESERVE_ROUNDS = 8

    def __init__(self, url: str, *, liveness: float = 6.0, pending_ttl: float = 30.0,
                 session_lease: float = 60.0, timeout: float = 1.0, client=None) -> None:
        import redis.asyncio as aioredis
        self.url = url
        self.liveness = liveness
        self.pending_ttl = pending_ttl
        self.session_lease = session_lease
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        def pool(size: int):
            # Bounded: a burst of launches waits for a connection instead of opening hundreds.
            # One retry on a broken connection (a pooled socket from before a Redis restart);
            # none on a timeout, which could run a script twice.
            return aioredis.BlockingConnectionPool.from_url(
                url, max_connections=size, timeout=5.0, socket_timeout=timeout, socket_connect_timeout=timeout,
                decode_responses=True, retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        self.redis = client or aioredis.Redis(connection_pool=pool(32))
        # Heartbeat and sync writes get their own connections: a burst of launches
        # queued on the pool above must not delay them past the liveness window.
        self.sync_redis = client or aioredis.Redis(connection_pool=pool(4))
        # Subscriptions block on reads for as long as they like: no socket timeout there
        # (a dead Redis still shows as a closed connection).
        self.pubsub_redis = client or aioredis.Redis.from_url(url, socket_connect_timeout=timeout,
                                                              socket_keepalive=True, decode_responses=True)
        self._reserve = self.redis.register_script(RESERVE_LUA)
        self._release = self.redis.register_script(RELEASE_LUA)
        #: Redis round trips made, by operation (benchmarks, metrics)
        self.round_trips: dict[str, int] = {}
        #: called as on_latency(op, seconds) after each round trip (shortpath/metrics.py)
        self.on_latency = None

    # keys
    @staticmethod
    def k_host(h): return f"{PREFIX}host:{h}"
    @staticmethod
    def k_alive(h): return f"{PREFIX}alive:{h}"
    @staticmethod
    def k_pool(p): return f"{PREFIX}pool:{p}"
    @staticmethod
    def k_pending(h): return f"{PREFIX}pending:{h}"
    @staticmethod
    def k_live(h): return f"{PREFIX}live:{h}"
    @staticmethod
    def k_user(p, u): return f"{PREFIX}user:{p}:{u}"
    @staticmethod
    def k_gw(g): return f"{PREFIX}gw:{g}"
    K_GATEWAYS = f"{PREFIX}gateways"
    @staticmethod
    def k_sessions(g): return f"{PREFIX}sessions:{g}"
    @staticmethod
    def ch_dial(g): return f"{PREFIX}dial:{g}"
    @staticmethod
    def ch_result(g): return f"{PREFIX}dial-result:{g}"

    async def _call(self, op: str, coro):
        """Await one Redis round trip; any Redis/connection failure -> BrokerUnavailable."""
        import redis.exceptions as rex          # lazy: the in-memory default needs no redis
        self.round_trips[op] = self.round_trips.get(op, 0) + 1
        t0 = time.perf_counter()
        try:
            out = await coro
            if self.on_latency is not None:
                self.on_latency(op, time.perf_counter() - t0)
            return out
        except (rex.ConnectionError, rex.TimeoutError, ConnectionError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"broker store unreachable ({type(exc).__name__}); "
                                    f"live sessions go on, new launches wait for it") from None
        except rex.ResponseError as exc:
            if "LOADING" in str(exc) or "MASTERDOWN" in str(exc) or "READONLY" in str(exc):
                raise BrokerUnavailable(f"broker store not ready ({str(exc)[:60]})") from None
            raise

    async def ping(self) -> float:
        await self._call("ping", self.redis.ping())
        return 0.0

    # --- hosts ----------------------------------------------------------------------
    async def register(self, rec: HostRecord, gateway: str, now: float) -> None:
        await self.register_many([rec], gateway, now)

    async def register_many(self, recs: list[HostRecord], gateway: str, now: float) -> None:
        """Rewrite several hosts' records in one round trip (a sync of this gateway)."""
        pipe = self.sync_redis.pipeline(transaction=False)
        for rec in recs:
            self._register_into(pipe, rec, gateway, now)
        await self._call("register", pipe.execute())

    def _register_into(self, pipe, rec: HostRecord, gateway: str, now: float) -> None:
        left_ms = int((self.liveness - (now - rec.last_seen)) * 1000)
        fields = {"pool": rec.pool, "fingerprint": rec.fingerprint, "gateway": gateway,
                  "sessions": rec.sessions, "registered_at": rec.registered_at, "last_seen": rec.last_seen,
                  "token_jti": rec.token_jti,
                  "token_exp": "inf" if math.isinf(rec.token_exp) else rec.token_exp}
        pipe.hset(self.k_host(rec.host_id), mapping=fields)
        pipe.sadd(self.k_pool(rec.pool), rec.host_id)
        if rec.connected and left_ms > 0:
            pipe.set(self.k_alive(rec.host_id), gateway, px=left_ms)
        else:
            pipe.delete(self.k_alive(rec.host_id))

    async def disconnected(self, host_id: str, gateway: str) -> None:
        await self._call("disconnect", self._release(keys=[self.k_alive(host_id)], args=[gateway],
                                                     client=self.sync_redis))

    async def release_all(self, gateway: str) -> int:
        """Drop every liveness key naming ``gateway`` (a gateway that starts holds no
        host yet: claims left by its previous life must not attract launches)."""
        n = 0
        async for key in self.sync_redis.scan_iter(match=f"{PREFIX}alive:*", count=1000):
            n += int(await self._call("disconnect", self._release(keys=[key], args=[gateway],
                                                                  client=self.sync_redis)))
        return n

    async def set_drain(self, host_id: str, drain: bool) -> None:
        if not await self._call("drain", self.redis.exists(self.k_host(host_id))):
            raise KeyError(host_id)
        await self._call("drain", self.redis.hset(self.k_host(host_id), "drain", "1" if drain else "0"))

    async def _snapshot(self, pool: str, now: float, user: str | None = None) -> tuple[Registry, dict]:
        """A throw-away registry of the pool's hosts as Redis has them now (2 round trips),
        and the gateway holding each live host."""
        now_ms = int(now * 1000)
        ids = sorted(await self._call("snapshot", self.redis.smembers(self.k_pool(pool))))
        pipe = self.redis.pipeline(transaction=False)
        for h in ids:
            pipe.hgetall(self.k_host(h))
            pipe.get(self.k_alive(h))
            pipe.zcount(self.k_pending(h), now_ms + 1, "+inf")
            pipe.zcount(self.k_live(h), now_ms + 1, "+inf")
        if user is not None:
            pipe.zcount(self.k_user(pool, user), now_ms + 1, "+inf")
        res = await self._call("snapshot", pipe.execute()) if (ids or user is not None) else []
        reg = Registry(heartbeat_interval=self.liveness, heartbeat_misses=1)
        where = {}
        for i, h in enumerate(ids):
            fields, gw, pending, live = res[4 * i:4 * i + 4]
            if not fields or fields.get("pool") != pool:
                continue
            rec = HostRecord(h, pool, fields.get("fingerprint", ""), registered_at=_num(fields.get("registered_at")),
                             # liveness is Redis's (the alive key's TTL): one clock for every gateway
                             last_seen=now if gw else _num(fields.get("last_seen"), float("-inf")),
                             connected=bool(gw), drain=fields.get("drain") == "1",
                             sessions=max(0, int(_num(fields.get("sessions"))), int(live)), pending=int(pending),
                             last_assigned=_num(fields.get("last_assigned"), float("-inf")) / 1000.0,
                             total_sessions=int(_num(fields.get("total_sessions"))),
                             token_jti=fields.get("token_jti", ""), token_exp=_num(fields.get("token_exp"), math.inf))
            reg.hosts[h] = rec
            where[h] = gw
        if user is not None:
            held = int(res[-1])
            if held:
                reg.user_sessions[(pool, user)] = held
        return reg, where

    @staticmethod
    def _ranked(reg: Registry, pool: PoolConfig, user: str, now: float) -> list[HostRecord]:
        """Every assignable host, best first, by asking the pure selection again and
        again on the throw-away registry (each pick set aside before the next). The
        first call raises the registry's NoResourcesError when none is assignable."""
        held = dict(reg.user_sessions)
        out = [reg.select(pool, user, now)]
        while True:
            out[-1].drain = True                  # set aside (throw-away copy)
            reg.user_sessions = dict(held)
            try:
                out.append(reg.select(pool, user, now))
            except NoResourcesError:
                return out

    async def reserve(self, pool: PoolConfig, user: str, now: float, launch_id: str):
        reason = "full"
        for _ in range(self.RESERVE_ROUNDS):
            reg, where = await self._snapshot(pool.name, now, user)
            ranked = self._ranked(reg, pool, user, now)   # raises the registry's reasons
            keys = [self.k_user(pool.name, user)]
            for rec in ranked:
                keys += [self.k_host(rec.host_id), self.k_alive(rec.host_id), self.k_pending(rec.host_id),
                         self.k_live(rec.host_id)]
            now_ms = int(now * 1000)
            out = await self._call("reserve", self._reserve(
                keys=keys, args=[pool.name, pool.max_sessions, pool.max_sessions_per_user, now_ms, launch_id,
                                 now_ms + int(self.pending_ttl * 1000), int(self.pending_ttl * 1000),
                                 int(self.session_lease * 1000), *(r.host_id for r in ranked)]))
            if out[0] == "ok":
                rec = next(r for r in ranked if r.host_id == out[1])
                rec.drain = False
                return rec, out[2]
            reason = out[0]
            if reason == "user-limit":
                raise NoResourcesError("user-limit", f"{user} is at the per-user limit of pool {pool.name}")
        raise NoResourcesError(reason, f"every candidate was taken by other launches {self.RESERVE_ROUNDS} times")

    async def launch_done(self, host_id, stitched, launch_id, pool, user, now) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.k_pending(host_id), launch_id)
        if stitched:
            pipe.zadd(self.k_live(host_id), {launch_id: int((now + self.session_lease) * 1000)})
            pipe.pexpire(self.k_live(host_id), int(self.session_lease * 1000))
            pipe.hincrby(self.k_host(host_id), "total_sessions", 1)
            pipe.zadd(self.k_user(pool, user), {launch_id: int((now + self.session_lease) * 1000)})
            pipe.pexpire(self.k_user(pool, user), int(self.session_lease * 1000))
        else:
            pipe.zrem(self.k_user(pool, user), launch_id)
        await self._call("launch-done", pipe.execute())

    async def session_ended(self, host_id, launch_id, pool, user) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.k_user(pool, user), launch_id)
        pipe.zrem(self.k_live(host_id), launch_id)
        await self._call("session-ended", pipe.execute())

    async def hosts(self, now: float) -> list[HostView]:
        pools = [k async for k in self.redis.scan_iter(match=f"{PREFIX}pool:*", count=500)]
        out = []
        for key in sorted(pools):
            reg, where = await self._snapshot(key[len(PREFIX) + 5:], now)
            out.extend(HostView(r, reg.status(r, now), where.get(r.host_id)) for r in reg.hosts.values())
        return sorted(out, key=lambda v: v.record.host_id)

    # --- gateways and sessions ------------------------------------------------------------
    async def announce(self, gateway: str, info: dict, sessions: dict[str, dict],
                       leases: list[tuple[str, str, str, str]],
                       now: float, ttl: float) -> None:
        """One sync of this gateway: its load, its live sessions (rewritten whole),
        and the leases of each live session's slots: (pool, user, session id, host)."""
        ttl_ms = int(ttl * 1000)
        pipe = self.sync_redis.pipeline(transaction=True)
        pipe.hset(self.k_gw(gateway), mapping={**{k: json.dumps(v) for k, v in info.items()}, "updated": now})
        pipe.pexpire(self.k_gw(gateway), ttl_ms)
        pipe.sadd(self.K_GATEWAYS, gateway)
        pipe.delete(self.k_sessions(gateway))
        if sessions:
            pipe.hset(self.k_sessions(gateway), mapping={k: json.dumps(v) for k, v in sessions.items()})
            pipe.pexpire(self.k_sessions(gateway), ttl_ms)
        lease_ms = int((now + self.session_lease) * 1000)
        for pool, user, launch_id, host in leases:
            pipe.zadd(self.k_user(pool, user), {launch_id: lease_ms})
            pipe.pexpire(self.k_user(pool, user), int(self.session_lease * 1000))
            pipe.zadd(self.k_live(host), {launch_id: lease_ms})
            pipe.pexpire(self.k_live(host), int(self.session_lease * 1000))
        await self._call("announce", pipe.execute())

    async def gateways(self) -> dict[str, dict]:
        ids = sorted(await self._call("gateways", self.redis.smembers(self.K_GATEWAYS)))
        pipe = self.redis.pipeline(transaction=False)
        for g in ids:
            pipe.hgetall(self.k_gw(g))
            pipe.hgetall(self.k_sessions(g))
        res = await self._call("gateways", pipe.execute()) if ids else []
        out, gone = {}, []
        for i, g in enumerate(ids):
            info, sess = res[2 * i], res[2 * i + 1]
            if not info:
                gone.append(g)
                continue
            d = {k: (json.loads(v) if k != "updated" else _num(v)) for k, v in info.items()}
            d["session_list"] = {sid: json.loads(v) for sid, v in sess.items()}
            out[g] = d
        if gone:
            await self._call("gateways", self.redis.srem(self.K_GATEWAYS, *gone))
        return out

    async def publish(self, channel: str, message: dict) -> int:
        return int(await self._call("publish", self.redis.publish(channel, json.dumps(message))))

    async def close(self) -> None:
        import contextlib
        for client in {id(c): c for c in (self.redis, self.sync_redis, self.pubsub_redis)}.values():
            with contextlib.suppress(Exception):
                await client.aclose(close_connection_pool=True)
