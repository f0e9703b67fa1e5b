"""The broker's asyncio side: token checks, host links, launch orchestration.

The broker decides; it never touches session bytes. For a launch it picks a
host (registry.py), mints a one-time ``conn_id`` and a session ticket, and
sends ``Dial`` over the host's control channel. The gateway parks the client
until the host's data leg arrives with that ``conn_id`` (``claim_leg``), then
stitches the two legs itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .. import log
from ..auth.tokens import Claims, TokenSigner, describe
from ..auth.turn import rest_credentials
from ..config import GatewayConfig
from ..errors import AuthError, LocalError, NoResourcesError, NotAssigned
from ..wire import control
from .registry import Registry

_log = log.get("broker")


class HostLink(Protocol):
    def send(self, msg: control.Message) -> None: ...


@dataclass
class LaunchPlan:
    conn_id: str
    session_id: str
    host_id: str
    user: str
    resource: str
    fingerprint: str
    ticket: str
    policy: dict
    created: float
    leg: asyncio.Future = field(repr=False, default=None)    # -> the host's data leg
    done: asyncio.Future = field(repr=False, default=None)   # set when the relay is over

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


@dataclass
class SessionRecord:
    session_id: str
    user: str
    host_id: str
    resource: str
    started: float
    state: str = "active"


class Broker:
    def __init__(self, config: GatewayConfig, signer: TokenSigner,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.signer = signer
        self.verifier = signer.verifier()
        self.clock = clock
        t = config.timing
        self.registry = Registry(heartbeat_interval=t.heartbeat_interval, heartbeat_misses=t.heartbeat_misses)
        self.links: dict[str, HostLink] = {}
        self.pending: dict[str, LaunchPlan] = {}
        self.sessions: dict[str, SessionRecord] = {}

    # --- tokens ----------------------------------------------------------------
    def verify(self, token: str, typ: str) -> Claims:
        return self.verifier.verify(token, typ=typ, audience=self.config.gateway_id, now=self.clock())

    # --- hosts -----------------------------------------------------------------
    def register_host(self, msg: control.RegisterHost, link: HostLink) -> control.Registered:
        claims = self.verify(msg.token, "host")
        if claims.sub != msg.host_id:
            raise AuthError(f"registration token is for host {claims.sub!r}, not {msg.host_id!r}")
        if self.config.pool(claims.pool) is None:
            raise AuthError(f"registration token names unknown pool {claims.pool!r}")
        if not msg.fingerprint.startswith("sha-256 "):
            raise AuthError("host fingerprint must be 'sha-256 <hex>'")
        known = self.registry.hosts.get(msg.host_id)
        if known is not None and known.connected and known.fingerprint != msg.fingerprint:
            # Another live host already holds this identity: do not let a second
            # machine with a stolen token take its sessions.
            raise AuthError(f"host id {msg.host_id} is already registered with another certificate")
        old = self.links.get(msg.host_id)
        self.links[msg.host_id] = link
        self.registry.register(msg.host_id, claims.pool, msg.fingerprint, self.clock())
        _log.info(log.kv("host-registered", host=msg.host_id, pool=claims.pool, token=describe(msg.token),
                         replaced=old is not None or None))
        return control.Registered(host_id=msg.host_id, heartbeat_interval=self.config.timing.heartbeat_interval,
                                  signing_key=self.signer.public_hex(), gateway_id=self.config.gateway_id)

    def heartbeat(self, host_id: str, msg: control.Heartbeat) -> control.HeartbeatAck:
        self.registry.heartbeat(host_id, msg.sessions, self.clock())
        return control.HeartbeatAck(seq=msg.seq)

    def host_disconnected(self, host_id: str, link: HostLink) -> None:
        if self.links.get(host_id) is not link:
            return  # a newer connection of the same host replaced this one
        del self.links[host_id]
        self.registry.disconnected(host_id)
        for plan in list(self.pending.values()):
            if plan.host_id == host_id and not plan.leg.done():
                plan.leg.set_exception(NoResourcesError("host-unavailable", f"host {host_id} disconnected"))
        _log.info(log.kv("host-disconnected", host=host_id))

    def dial_result(self, host_id: str, msg: control.DialResult) -> None:
        plan = self.pending.get(msg.conn_id)
        if plan is None or plan.host_id != host_id:
            return
        if not msg.ok and not plan.leg.done():
            plan.leg.set_exception(NoResourcesError("host-refused", msg.reason or "host refused the session"))

    # --- clients ---------------------------------------------------------------
    def feed(self, claims: Claims) -> list[dict]:
        out = []
        for name in claims.resources:
            pool = self.config.pool(name)
            if pool is not None:
                out.append({"name": pool.name, "kind": pool.kind})
        return out

    def plan_launch(self, claims: Claims, resource: str) -> LaunchPlan:
        if resource not in claims.resources:
            raise NotAssigned(f"resource {resource!r} is not assigned to {claims.sub}")
        pool = self.config.pool(resource)
        if pool is None:
            raise NoResourcesError("unknown-resource", f"no pool named {resource!r}")
        now = self.clock()
        rec = self.registry.select(pool, claims.sub, now)
        link = self.links.get(rec.host_id)
        if link is None:  # registry said available, but the link is gone: should never happen
            self.registry.launch_done(rec.host_id, stitched=False)
            _log.error(log.kv("BUG selected host has no link", host=rec.host_id))
            raise NoResourcesError("host-unavailable", rec.host_id)
        if len(self.pending) >= self.config.max_pending_legs:
            self.registry.launch_done(rec.host_id, stitched=False)
            raise NoResourcesError("gateway-busy", "too many launches in progress")
        session_id = secrets.token_hex(8)
        conn_id = secrets.token_urlsafe(24)
        ticket = self.signer.mint("session", claims.sub, self.config.gateway_id, ttl=60.0, now=now,
                                  sid=session_id, host=rec.host_id)
        policy = {"shortpath": pool.shortpath.to_dict()}
        turn = self.config.turn
        if turn.secret and (turn.turn or turn.turn_tls):
            user, password = rest_credentials(turn.secret, session_id, turn.credential_ttl, now)
            policy["ice"] = {"stun": turn.stun, "turn": turn.turn, "turn_tls": turn.turn_tls,
                             "username": user, "password": password}
        elif turn.stun:
            policy["ice"] = {"stun": turn.stun}
        plan = LaunchPlan(conn_id=conn_id, session_id=session_id, host_id=rec.host_id, user=claims.sub,
                          resource=resource, fingerprint=rec.fingerprint, ticket=ticket, policy=policy,
                          created=now, leg=asyncio.get_running_loop().create_future(),
                          done=asyncio.get_running_loop().create_future())
        self.pending[conn_id] = plan
        link.send(control.Dial(conn_id=conn_id, session_id=session_id, user=claims.sub, policy=policy))
        _log.info(log.kv("launch", sid=session_id, user=claims.sub, resource=resource, host=rec.host_id))
        return plan

    def claim_leg(self, conn_id: str) -> LaunchPlan:
        """The host's data leg arrived: the conn_id is good exactly once."""
        plan = self.pending.pop(conn_id, None)
        if plan is None or plan.leg.done():
            raise AuthError("unknown or already used connection id")
        return plan

    def launch_finished(self, plan: LaunchPlan, ok: bool) -> None:
        self.pending.pop(plan.conn_id, None)
        self.registry.launch_done(plan.host_id, stitched=ok)
        if ok:
            self.sessions[plan.session_id] = SessionRecord(plan.session_id, plan.user, plan.host_id,
                                                           plan.resource, self.clock())

    def session_ended(self, session_id: str, reason: str) -> None:
        rec = self.sessions.pop(session_id, None)
        if rec is not None:
            self.registry.session_ended(rec.host_id)
            _log.info(log.kv("session-ended", sid=session_id, reason=reason))

    # --- admin -----------------------------------------------------------------
    def host_table(self) -> list[dict]:
        now = self.clock()
        return [{"host_id": r.host_id, "pool": r.pool, "status": self.registry.status(r, now),
                 "drain": r.drain, "sessions": r.sessions, "pending": r.pending,
                 "total_sessions": r.total_sessions, "last_seen_s": round(now - r.last_seen, 1),
                 "fingerprint": r.fingerprint}
                for r in sorted(self.registry.hosts.values(), key=lambda r: r.host_id)]

    def session_table(self) -> list[dict]:
        now = self.clock()
        return [{"session_id": s.session_id, "user": s.user, "host_id": s.host_id, "resource": s.resource,
                 "age_s": round(now - s.started, 1)} for s in self.sessions.values()]

    def set_drain(self, host_id: str, drain: bool) -> dict:
        try:
            self.registry.set_drain(host_id, drain)
        except KeyError:
            raise LocalError(f"no host {host_id!r}") from None
        _log.info(log.kv("drain", host=host_id, on=drain))
        return {"host_id": host_id, "drain": drain}
