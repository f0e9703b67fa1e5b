"""Many gateways, one broker on Redis (issue #14).

With ``shortpath gateway --redis URL --gateway-id gw-1`` the gateway's broker
keeps its local registry for the hosts whose control channels it holds (proof,
revocation, heartbeats: broker/service.py as before) and shares the state that
decides launches through :class:`~shortpath.broker.store.RedisStore`:

* **Hosts**: each heartbeat or registration marks the host dirty; the sync loop
  (:meth:`Cluster._sync_loop`, every ``[cluster] sync_interval`` or at once when
  woken) rewrites every dirty host's record whole and refreshes its liveness key.
  When Redis was unreachable, every local host is dirty again, so the state
  converges within one sync after it returns. A closed control channel deletes
  the liveness key (only if this gateway still holds it); a gateway that dies
  simply stops refreshing, and its hosts expire after one liveness window.
* **Launches** (:meth:`Cluster.plan_launch`): the store picks a host and books the
  slot atomically (one Lua script). If this gateway holds the host's channel the
  ``dial`` goes straight down it; otherwise it is published on
  ``sp:dial:{holder}`` and the holder passes it down its channel with
  ``gateway = <this gateway's address>``: the host dials its data leg here, to
  the gateway the client is on, and this gateway stitches it. Nothing is
  forwarded between gateways. No subscriber -> ``host-unavailable`` at once; no
  leg within ``leg_timeout`` -> ``host-timeout``; a host's refusal comes back on
  ``sp:dial-result:{origin}`` -> ``host-refused``.
* **Redis down**: live sessions are relays between two legs on one gateway and
  never touch Redis, so they go on; a launch gets ``broker-unavailable``.
* **Admin** commands (hosts, sessions, gateways) read the whole cluster.

Every gateway of a deployment must verify the same tokens: give each the same
``gateway_id`` (token audience, ``[gateway] gateway_id``) and the same
``signing.key`` in its state directory (docs/config.md, "Gateway cluster").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Callable

from .. import log
from ..broker.store import RedisStore
from ..errors import BrokerUnavailable, NoResourcesError
from ..wire import control

_log = log.get("cluster")


class Cluster:
    def __init__(self, broker, gateway_id: str, advertise: str, url: str, *,
                 sync_interval: float = 1.0, load: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        t = broker.config.timing
        self.broker = broker
        self.id = gateway_id
        self.advertise = advertise
        self.sync_interval = sync_interval
        self.liveness = t.heartbeat_interval * t.heartbeat_misses
        self.store = RedisStore(url, liveness=self.liveness, pending_ttl=t.leg_timeout + 5.0,
                                session_lease=max(30.0, 10 * sync_interval))
        self.load = load or (lambda: len(broker.sessions) + len(broker.pending))
        self.clock = clock
        self._dirty: set[str] = set()
        self._left: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._announced = float("-inf")
        self._bg: set[asyncio.Task] = set()
        #: orders relayed to a local host for another gateway: conn_id -> (origin, expiry)
        self._relayed: dict[str, tuple[str, float]] = {}
        #: session id -> (pool, user) of live sessions stitched here (user-slot leases)
        self.healthy = False
        #: set while subscribed to this gateway's order channel
        self.listening = asyncio.Event()
        self.synced = asyncio.Event()
        #: every cluster gateway's connections as last read (metrics; refreshed every 5th sync)
        self.loads: dict[str, int] = {}
        self.stats = {"syncs": 0, "sync_failures": 0, "remote_dials_sent": 0, "remote_dials_served": 0,
                      "redis_rtt_ms": None}

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._sync_loop(), name=f"cluster-sync-{self.id}"),
                       asyncio.get_running_loop().create_task(self._listen(), name=f"cluster-listen-{self.id}")]

    async def stop(self) -> None:
        # The flag as well as cancel(): Python 3.11's wait_for can swallow a cancel
        # that lands as its inner wait completes; the loops check the flag each turn.
        self._stopping = True
        self._wake.set()
        for t in self._tasks + list(self._bg):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._bg, return_exceptions=True)
        # Hand our hosts back at once rather than after the liveness window (best effort).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(self.store.disconnected(h, self.id)
                                                    for h in list(self.broker.links))), 1.0)
        await self.store.close()

    def _spawn(self, coro, what: str) -> None:
        async def run():
            try:
                await coro
            except BrokerUnavailable as exc:
                _log.info(log.kv("store-write-failed", what=what, why=exc.message))
                self.healthy = False
                self.mark_all_dirty()
        task = asyncio.get_running_loop().create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # --- hosts (called by the broker) ----------------------------------------------------
    def host_changed(self, host_id: str) -> None:
        self._dirty.add(host_id)
        self._left.discard(host_id)
        self._wake.set()

    def host_left(self, host_id: str) -> None:
        self._dirty.discard(host_id)
        self._left.add(host_id)
        self._wake.set()

    def mark_all_dirty(self) -> None:
        self._dirty.update(self.broker.links)
        self._wake.set()

    async def flush(self, announce: bool = True) -> None:
        """Push everything pending now: the hosts that left or changed (one pipeline for
        all of them), and with ``announce`` this gateway's load, sessions and leases.
        The sync loop announces once per ``sync_interval``; tests call flush() to wait."""
        now = self.clock()
        t0 = time.monotonic()
        for host_id in list(self._left):
            await self.store.disconnected(host_id, self.id)
            self._left.discard(host_id)
        batch = [h for h in self._dirty if h in self.broker.links and h in self.broker.registry.hosts]
        self._dirty.clear()
        if batch:
            try:
                await self.store.register_many([self.broker.registry.hosts[h] for h in batch], self.id, now)
            except BrokerUnavailable:
                self._dirty.update(batch)
                raise
        if not announce:
            return
        self._announced = time.monotonic()
        sessions = {sid: {"user": s.user, "host_id": s.host_id, "resource": s.resource, "started": s.started}
                    for sid, s in self.broker.sessions.items()}
        leases = [(s.resource, s.user, sid, s.host_id) for sid, s in self.broker.sessions.items()]
        await self.store.announce(self.id, {"address": self.advertise, "connections": self.load(),
                                            "hosts": len(self.broker.links), "sessions": len(sessions)},
                                  sessions, leases, now, ttl=3 * self.sync_interval + self.liveness)
        self.stats["redis_rtt_ms"] = round((time.monotonic() - t0) * 1000, 3)
        self.stats["syncs"] += 1
        if self.stats["syncs"] % 5 == 1:
            self.loads = {g: int(info.get("connections") or 0) for g, info in (await self.store.gateways()).items()}
        if not self.listening.is_set():
            return        # not yet (re)subscribed to orders: not "synced"
        if not self.healthy:
            _log.info(log.kv("store-ok", gateway=self.id))
        self.healthy = True
        self.synced.set()

    async def _sync_loop(self) -> None:
        self.mark_all_dirty()
        stale_cleared = False
        while not self._stopping:
            if not stale_cleared:
                try:
                    n = await self.store.release_all(self.id)
                    stale_cleared = True
                    if n:
                        _log.info(log.kv("stale-claims-dropped", gateway=self.id, hosts=n))
                        self.mark_all_dirty()     # hosts that registered meanwhile: claim them again
                except BrokerUnavailable:
                    pass
            try:
                await self.flush(announce=time.monotonic() - self._announced >= self.sync_interval * 0.9)
            except BrokerUnavailable as exc:
                self.stats["sync_failures"] += 1
                if self.healthy:
                    _log.warning(log.kv("store-unavailable", gateway=self.id, why=exc.message))
                self.healthy = False
                self.mark_all_dirty()
            except Exception:     # should never happen: keep syncing
                _log.exception(log.kv("BUG cluster sync failed", gateway=self.id))
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sync_interval)
            if self._wake.is_set():
                await asyncio.sleep(0.01)      # coalesce a burst of heartbeats into one push

    # --- launches ------------------------------------------------------------------------
    async def plan_launch(self, claims, resource: str):
        b = self.broker
        pool = b.launch_pool(claims, resource)
        if len(b.pending) >= b.config.max_pending_legs:
            raise NoResourcesError("gateway-busy", "too many launches in progress")
        now = self.clock()
        session_id = secrets.token_hex(8)
        rec, holder = await self.store.reserve(pool, claims.sub, now, session_id)
        plan = b.new_plan(claims, resource, rec.host_id, rec.fingerprint, session_id, now)
        try:
            link = b.links.get(rec.host_id)
            if holder == self.id and link is not None:
                link.send(plan.dial())
            else:
                if not holder or not await self.order_remote(plan, holder):
                    raise NoResourcesError("host-unavailable",
                                           f"gateway {holder} holding host {rec.host_id}'s channel is not listening")
                self.stats["remote_dials_sent"] += 1
        except BaseException:
            b.pending.pop(plan.conn_id, None)
            self._spawn(self.store.launch_done(rec.host_id, False, session_id, pool.name, claims.sub, now),
                        "launch-abandoned")
            raise
        _log.info(log.kv("launch", sid=session_id, user=claims.sub, resource=resource, host=rec.host_id,
                         via=holder if holder != self.id else None))
        return plan

    async def remote_holder(self, host_id: str, fingerprint: str) -> str | None:
        """For a resume: the OTHER gateway holding ``host_id``'s channel, or None (the host
        is here, or nowhere: the broker then waits for it locally as a lone gateway does).
        AuthError if the host registered there with another certificate than the session's."""
        if host_id in self.broker.links:
            return None
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.get(self.store.k_alive(host_id))
        pipe.hget(self.store.k_host(host_id), "fingerprint")
        holder, fp = await self.store._call("holder", pipe.execute())
        if not holder or holder == self.id:
            return None
        if fp != fingerprint:
            from ..errors import AuthError
            raise AuthError(f"host {host_id} now has another certificate than the session's")
        return holder

    async def holder(self, host_id: str) -> str | None:
        """The gateway holding ``host_id``'s control channel now (None: nobody)."""
        return await self.store._call("holder", self.store.redis.get(self.store.k_alive(host_id)))

    async def order_remote(self, plan, holder: str) -> bool:
        """Send ``plan``'s dial order (a launch, or a resume's) to the host through the
        gateway ``holder``, naming this gateway for the data leg. False if that gateway
        is not subscribed for ~1 s (one re-subscribing after a Redis outage takes up to 0.5 s)."""
        order = {"conn_id": plan.conn_id, "session_id": plan.session_id, "user": plan.user,
                 "policy": plan.policy, "host_id": plan.host_id, "gateway": self.advertise, "origin": self.id,
                 "resume": dict(plan.resume)}
        for attempt in range(5):
            if plan.resume and plan.host_id in self.broker.links:
                return False        # a resume whose host moved here meanwhile (its gateway died)
            if await self.store.publish(self.store.ch_dial(holder), order) > 0:
                return True
            await asyncio.sleep(0.25)
        return False

    def launch_done(self, plan, ok: bool) -> None:
        self._spawn(self.store.launch_done(plan.host_id, ok, plan.session_id, plan.resource, plan.user, self.clock()),
                    "launch-done")

    def session_ended(self, rec) -> None:
        self._spawn(self.store.session_ended(rec.host_id, rec.session_id, rec.resource, rec.user), "session-ended")

    def dial_result(self, host_id: str, msg: control.DialResult) -> None:
        """A local host refused an order another gateway sent: tell that gateway."""
        origin = self._relayed.pop(msg.conn_id, (None, 0))[0]
        if origin and not msg.ok:
            self._spawn(self.store.publish(self.store.ch_result(origin),
                                           {"conn_id": msg.conn_id, "host_id": host_id, "reason": msg.reason}),
                        "dial-result")

    # --- orders from other gateways --------------------------------------------------------
    def _on_order(self, order: dict) -> None:
        host_id = str(order.get("host_id", ""))
        link = self.broker.links.get(host_id)
        origin = str(order.get("origin", ""))
        if link is None:
            self._spawn(self.store.publish(self.store.ch_result(origin), {
                "conn_id": order.get("conn_id"), "host_id": host_id, "reason": "host-unavailable"}), "dial-result")
            return
        now = time.monotonic()
        for cid in [c for c, (_, exp) in self._relayed.items() if exp < now]:
            del self._relayed[cid]
        self._relayed[str(order["conn_id"])] = (origin, now + 60.0)
        link.send(control.Dial(conn_id=str(order["conn_id"]), session_id=str(order["session_id"]),
                               user=str(order["user"]), policy=dict(order.get("policy") or {}),
                               gateway=str(order.get("gateway", "")), resume=dict(order.get("resume") or {})))
        self.stats["remote_dials_served"] += 1

    def _on_result(self, res: dict) -> None:
        plan = self.broker.pending.get(str(res.get("conn_id")))
        if plan is not None and not plan.leg.done():
            reason = str(res.get("reason") or "host-refused")
            code = "host-unavailable" if reason == "host-unavailable" else "host-refused"
            plan.leg.set_exception(NoResourcesError(code, f"host {plan.host_id}: {reason}"))

    async def _listen(self) -> None:
        """Subscribe to this gateway's order and result channels; resubscribe after a Redis outage."""
        delay = 0.1
        while not self._stopping:
            pubsub = self.store.pubsub_redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.ch_dial(self.id), self.store.ch_result(self.id))
                delay = 0.1
                self.listening.set()
                while not self._stopping:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    try:
                        data = json.loads(msg["data"])
                        if msg["channel"] == self.store.ch_dial(self.id):
                            self._on_order(data)
                        else:
                            self._on_result(data)
                    except (ValueError, KeyError, TypeError) as exc:
                        _log.warning(log.kv("bad-cluster-message", why=type(exc).__name__))
            except asyncio.CancelledError:
                raise
            except Exception as exc:      # Redis down or reset: resubscribe with backoff
                _log.info(log.kv("cluster-listen-lost", gateway=self.id, error=type(exc).__name__))
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 2)

    # --- admin ------------------------------------------------------------------------------
    async def admin(self, cmd: str) -> dict:
        now = self.clock()
        if cmd == "hosts":
            return {"ok": True, "hosts": [
                {"host_id": v.record.host_id, "pool": v.record.pool, "status": v.status, "drain": v.record.drain,
                 "sessions": v.record.sessions, "pending": v.record.pending, "gateway": v.gateway,
                 "total_sessions": v.record.total_sessions, "fingerprint": v.record.fingerprint,
                 "last_seen_s": round(max(0.0, now - v.record.last_seen), 1)}
                for v in await self.store.hosts(now)]}
        gws = await self.store.gateways()
        if cmd == "sessions":
            return {"ok": True, "sessions": [
                {"session_id": sid, "gateway": g, "user": s["user"], "host_id": s["host_id"],
                 "resource": s["resource"], "age_s": round(now - s["started"], 1)}
                for g, info in gws.items() for sid, s in info["session_list"].items()]}
        return {"ok": True, "gateways": [
            {"gateway": g, "address": info.get("address"), "connections": info.get("connections"),
             "hosts": info.get("hosts"), "sessions": info.get("sessions"),
             "age_s": round(now - info.get("updated", now), 1), "self": g == self.id}
            for g, info in gws.items()]}

    async def set_drain(self, host_id: str, drain: bool) -> dict:
        try:
            await self.store.set_drain(host_id, drain)
        except KeyError:
            from ..errors import LocalError
            raise LocalError(f"no host {host_id!r}") from None
        with contextlib.suppress(KeyError):
            self.broker.registry.set_drain(host_id, drain)
        return {"host_id": host_id, "drain": drain}
