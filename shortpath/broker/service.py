"""The broker's asyncio side: token checks, host links, launch orchestration.

The broker decides; it never touches session bytes. For a launch it picks a
host (registry.py), mints a one-time ``conn_id`` and a session ticket, and
sends ``Dial`` over the host's control channel. The gateway parks the client
until the host's data leg arrives with that ``conn_id`` (``claim_leg``), then
stitches the two legs itself.

Host registration (issue #11) is two steps: :meth:`Broker.begin_registration`
checks the host token and returns a challenge; :meth:`Broker.register_host`
checks the host's proof that it holds its certificate's key (auth/proof.py)
and, with a deployment CA configured, that the CA issued that certificate for
the host id. Only then may a registration replace a live one of the same host
id, and the replaced link is closed at once (never left behind: a link the
registry no longer points at could keep a record "available" with its
heartbeats while launches found no link). Heartbeats and dial results are only
taken from the current link of a host.

A live registration is cut (error sent, link closed) when its token expires or
its token id or host id is revoked: checked at every message the host sends
(it must send a heartbeat every interval or be dropped) and at once when
:meth:`Broker.revoke` adds to the revocation list.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .. import log
from ..auth import ca, proof
from ..auth import resume as resume_tickets
from ..auth.tokens import CLOCK_SKEW, Claims, ReplayCache, TokenSigner, describe
from ..auth.turn import rest_credentials
from ..config import GatewayConfig
from ..errors import AuthError, LocalError, NoResourcesError, NotAssigned, TokenExpired
from ..wire import control
from .registry import Registry

_log = log.get("broker")


class HostLink(Protocol):
    def send(self, msg: control.Message) -> None: ...

    def close(self, error: control.Error | None = None) -> None:
        """Send ``error`` (if any) and close the control connection."""


@dataclass
class PendingRegistration:
    """A registration whose token checked out, waiting for the host's proof."""
    hello: control.RegisterHost
    claims: Claims
    nonce: str

    @property
    def challenge(self) -> control.RegisterChallenge:
        return control.RegisterChallenge(nonce=self.nonce)


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
    #: the client's per-session public key (hex) and its resume ticket (#15); "" = none
    resume_key: str = ""
    resume_ticket: str = ""
    #: a resume (#15): {"ticket", "nonce", "signature"} for the host; {} for a launch
    resume: dict = field(default_factory=dict)

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def dial(self, gateway: str = "") -> control.Dial:
        """The order for the host ("" = dial the leg to the gateway of its control channel)."""
        return control.Dial(conn_id=self.conn_id, session_id=self.session_id, user=self.user,
                            policy=self.policy, gateway=gateway, resume=dict(self.resume))


@dataclass
class SessionRecord:
    session_id: str
    user: str
    host_id: str
    resource: str
    started: float
    state: str = "active"
    #: when the session's TURN credential expires (0 = it has none); see turn_refresh
    turn_expiry: float = 0.0
    #: resume (#15): the client's key (hex, "" = no resume), the host fingerprint the
    #: tickets name, and when the newest ticket expires (see resume_refresh)
    resume_key: str = ""
    fingerprint: str = ""
    ticket_expiry: float = 0.0
    #: brought back by a resume (not counted by a launch of this gateway's cluster)
    resumed: bool = False


@dataclass
class PendingResume:
    """A resume request whose challenge is out, waiting for the client's proof."""
    msg: control.Resume
    nonce: str

    @property
    def challenge(self) -> control.ResumeChallenge:
        return control.ResumeChallenge(nonce=self.nonce)


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
        self.revoked_jtis: set[str] = set(config.revoked_jtis)
        self.revoked_hosts: set[str] = set(config.revoked_hosts)
        self.host_ca = ca.load_cert(config.host_ca) if config.host_ca else None
        #: gateway/cluster.py's Cluster with ``--redis`` (issue #14): launches are booked in the
        #: shared store and this gateway's hosts are mirrored there; None = this registry alone
        self.cluster = None
        #: resume tickets are single use (#15). In memory: a restarted gateway forgets them,
        #: which is why the host checks single use again with its own cache.
        self.resume_replay = ReplayCache()
        self._link_waiters: dict[str, list[asyncio.Future]] = {}

    # --- tokens ----------------------------------------------------------------
    def verify(self, token: str, typ: str) -> Claims:
        claims = self.verifier.verify(token, typ=typ, audience=self.config.gateway_id, now=self.clock())
        if claims.jti in self.revoked_jtis:
            raise AuthError("token has been revoked")
        return claims

    # --- hosts -----------------------------------------------------------------
    def begin_registration(self, msg: control.RegisterHost) -> PendingRegistration:
        """Check a host's token; the reply is the challenge its proof must answer."""
        claims = self.verify(msg.token, "host")
        if claims.sub != msg.host_id:
            raise AuthError(f"registration token is for host {claims.sub!r}, not {msg.host_id!r}")
        if msg.host_id in self.revoked_hosts:
            raise AuthError(f"host id {msg.host_id} has been revoked")
        if self.config.pool(claims.pool) is None:
            raise AuthError(f"registration token names unknown pool {claims.pool!r}")
        if not msg.fingerprint.startswith("sha-256 "):
            raise AuthError("host fingerprint must be 'sha-256 <hex>'")
        return PendingRegistration(msg, claims, proof.new_nonce())

    def register_host(self, reg: PendingRegistration, answer: control.RegisterProof,
                      link: HostLink) -> control.Registered:
        """Check the proof of key possession, then register (replacing a live link of the same host)."""
        msg = reg.hello
        cert = proof.verify(answer.certificate, msg.fingerprint,
                            proof.challenge_message(self.config.gateway_id, msg.host_id, msg.fingerprint, reg.nonce),
                            answer.signature)
        if self.host_ca is not None:
            ca.verify_host_cert(cert, self.host_ca, msg.host_id)
        # The token may have expired (or been revoked) while the proof was on its way.
        claims = self.verify(msg.token, "host")
        known = self.registry.hosts.get(msg.host_id)
        if known is not None and known.connected and known.fingerprint != msg.fingerprint:
            # Another live host holds this identity with another key: a stolen
            # token and the public fingerprint are not enough to take its place.
            raise AuthError(f"host id {msg.host_id} is already registered with another certificate")
        old = self.links.get(msg.host_id)
        self.links[msg.host_id] = link
        self.registry.register(msg.host_id, claims.pool, msg.fingerprint, self.clock(),
                               token_jti=claims.jti, token_exp=claims.exp)
        if self.cluster is not None:
            self.cluster.host_changed(msg.host_id)
        for fut in self._link_waiters.pop(msg.host_id, []):
            if not fut.done():
                fut.set_result(None)
        if old is not None and old is not link:
            # Same host, proven key: the newer connection wins; the old one is closed, not orphaned.
            old.close(control.Error(code="auth", reason="replaced",
                                    message="this registration was replaced by a newer one of the same host"))
        _log.info(log.kv("host-registered", host=msg.host_id, pool=claims.pool, token=describe(msg.token),
                         replaced=old is not None or None))
        return control.Registered(host_id=msg.host_id, heartbeat_interval=self.config.timing.heartbeat_interval,
                                  signing_key=self.signer.public_hex(), gateway_id=self.config.gateway_id)

    def check_host_link(self, host_id: str, link: HostLink) -> None:
        """Called for every message a host sends on its control channel: it must come
        from the host's current link, and the registration must still stand (token
        not expired, nothing revoked); otherwise AuthError (the caller closes the link)."""
        if self.links.get(host_id) is not link:
            raise AuthError("this control channel was replaced by a newer registration of the host")
        rec = self.registry.hosts.get(host_id)
        if rec is None:
            return
        why = self.registry.invalid(rec, self.clock(), self.revoked_jtis, self.revoked_hosts, CLOCK_SKEW)
        if why is not None:
            self._cut(host_id, why)
            if why == "token-expired":
                raise TokenExpired(f"registration token of host {host_id} has expired")
            raise AuthError(f"registration of host {host_id} has been revoked")

    def _cut(self, host_id: str, why: str) -> None:
        """End a live registration now: forget its link, fail its pending launches, close it."""
        link = self.links.get(host_id)
        if link is None:
            return
        self.host_disconnected(host_id, link)
        code = "token-expired" if why == "token-expired" else "auth"
        link.close(control.Error(code=code, reason=why, message=f"host registration ended: {why}"))
        _log.info(log.kv("host-cut", host=host_id, why=why))

    def sweep(self) -> list[str]:
        """Cut every live registration whose token expired or was revoked; their host ids."""
        now = self.clock()
        cut = []
        for host_id in list(self.links):
            rec = self.registry.hosts.get(host_id)
            why = rec and self.registry.invalid(rec, now, self.revoked_jtis, self.revoked_hosts, CLOCK_SKEW)
            if why:
                self._cut(host_id, why)
                cut.append(host_id)
        return cut

    def revoke(self, jtis=(), hosts=()) -> dict:
        """Add token ids / host ids to the revocation list and apply it to live registrations."""
        self.revoked_jtis.update(str(j) for j in jtis)
        self.revoked_hosts.update(str(h) for h in hosts)
        cut = self.sweep()
        _log.info(log.kv("revoked", jtis=len(jtis), hosts=len(hosts), cut=",".join(cut) or None))
        return {"revoked_jtis": len(self.revoked_jtis), "revoked_hosts": len(self.revoked_hosts), "cut": cut}

    def heartbeat(self, host_id: str, msg: control.Heartbeat) -> control.HeartbeatAck:
        self.registry.heartbeat(host_id, msg.sessions, self.clock())
        if self.cluster is not None:
            self.cluster.host_changed(host_id)
        return control.HeartbeatAck(seq=msg.seq)

    def host_disconnected(self, host_id: str, link: HostLink) -> None:
        if self.links.get(host_id) is not link:
            return  # a newer connection of the same host replaced this one
        del self.links[host_id]
        self.registry.disconnected(host_id)
        if self.cluster is not None:
            self.cluster.host_left(host_id)
        for plan in list(self.pending.values()):
            if plan.host_id == host_id and not plan.leg.done():
                plan.leg.set_exception(NoResourcesError("host-unavailable", f"host {host_id} disconnected"))
        _log.info(log.kv("host-disconnected", host=host_id))

    def dial_result(self, host_id: str, msg: control.DialResult) -> None:
        plan = self.pending.get(msg.conn_id)
        if plan is None and self.cluster is not None:
            self.cluster.dial_result(host_id, msg)   # an order relayed for another gateway
            return
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

    def launch_pool(self, claims: Claims, resource: str):
        """The pool behind ``resource``, if the user may launch it (else a typed error)."""
        if resource not in claims.resources:
            raise NotAssigned(f"resource {resource!r} is not assigned to {claims.sub}")
        pool = self.config.pool(resource)
        if pool is None:
            raise NoResourcesError("unknown-resource", f"no pool named {resource!r}")
        return pool

    async def launch(self, claims: Claims, resource: str) -> LaunchPlan:
        """Plan a launch: in this process's registry, or with ``--redis`` through the
        cluster's shared store (gateway/cluster.py; may raise BrokerUnavailable)."""
        if self.cluster is not None:
            return await self.cluster.plan_launch(claims, resource)
        return self.plan_launch(claims, resource)

    def plan_launch(self, claims: Claims, resource: str) -> LaunchPlan:
        pool = self.launch_pool(claims, resource)
        now = self.clock()
        rec = self.registry.select(pool, claims.sub, now)
        link = self.links.get(rec.host_id)
        if link is None:  # registry said available, but the link is gone: should never happen
            self.registry.launch_done(rec.host_id, stitched=False, pool=pool.name, user=claims.sub)
            _log.error(log.kv("BUG selected host has no link", host=rec.host_id))
            raise NoResourcesError("host-unavailable", rec.host_id)
        if len(self.pending) >= self.config.max_pending_legs:
            self.registry.launch_done(rec.host_id, stitched=False, pool=pool.name, user=claims.sub)
            raise NoResourcesError("gateway-busy", "too many launches in progress")
        plan = self.new_plan(claims, resource, rec.host_id, rec.fingerprint, secrets.token_hex(8), now)
        link.send(plan.dial())
        _log.info(log.kv("launch", sid=plan.session_id, user=claims.sub, resource=resource, host=rec.host_id))
        return plan

    def new_plan(self, claims: Claims, resource: str, host_id: str, fingerprint: str, session_id: str,
                 now: float) -> LaunchPlan:
        """Mint the one-time conn_id, the session ticket and the policy of a launch on
        a host already booked, and park the plan until the host's leg arrives."""
        pool = self.config.pool(resource)
        conn_id = secrets.token_urlsafe(24)
        ticket = self.signer.mint("session", claims.sub, self.config.gateway_id, ttl=60.0, now=now,
                                  sid=session_id, host=host_id)
        policy = {"shortpath": pool.shortpath.to_dict()}
        turn = self.config.turn
        if turn.secret and (turn.turn or turn.turn_tls):
            user, password = rest_credentials(turn.secret, session_id, turn.credential_ttl, now)
            policy["ice"] = {"stun": turn.stun, "turn": turn.turn, "turn_tls": turn.turn_tls,
                             "username": user, "password": password}
        elif turn.stun:
            policy["ice"] = {"stun": turn.stun}
        plan = LaunchPlan(conn_id=conn_id, session_id=session_id, host_id=host_id, user=claims.sub,
                          resource=resource, fingerprint=fingerprint, ticket=ticket, policy=policy,
                          created=now, leg=asyncio.get_running_loop().create_future(),
                          done=asyncio.get_running_loop().create_future())
        self.pending[conn_id] = plan
        return plan

    def claim_leg(self, conn_id: str) -> LaunchPlan:
        """The host's data leg arrived: the conn_id is good exactly once."""
        plan = self.pending.pop(conn_id, None)
        if plan is None or plan.leg.done():
            raise AuthError("unknown or already used connection id")
        return plan

    def launch_finished(self, plan: LaunchPlan, ok: bool) -> None:
        self.pending.pop(plan.conn_id, None)
        if plan.resume:
            self._resume_finished(plan, ok)
            return
        if self.cluster is not None:
            self.cluster.launch_done(plan, ok)
        else:
            self.registry.launch_done(plan.host_id, stitched=ok, pool=plan.resource, user=plan.user)
        if ok:
            self.sessions[plan.session_id] = SessionRecord(plan.session_id, plan.user, plan.host_id,
                                                           plan.resource, self.clock(),
                                                           turn_expiry=_turn_expiry(plan.policy),
                                                           resume_key=plan.resume_key,
                                                           fingerprint=plan.fingerprint,
                                                           ticket_expiry=self.clock() + self._ticket_ttl()
                                                           if plan.resume_ticket else 0.0)

    def turn_refresh(self, host_id: str) -> list[control.TurnCredentials]:
        """Fresh TURN credentials for ``host_id``'s live sessions whose credential is past
        half its lifetime (the gateway calls this on each heartbeat and sends them on the
        host's control channel; the host hands them to its peer inside the session). So a
        credential lives ``credential_ttl`` at most, also after its session ended."""
        turn = self.config.turn
        if not (turn.secret and (turn.turn or turn.turn_tls)):
            return []
        now = self.clock()
        out = []
        for rec in self.sessions.values():
            if rec.host_id != host_id or not rec.turn_expiry or rec.turn_expiry - now > turn.credential_ttl / 2:
                continue
            user, password = rest_credentials(turn.secret, rec.session_id, turn.credential_ttl, now)
            rec.turn_expiry = _turn_expiry({"ice": {"username": user}})
            out.append(control.TurnCredentials(session_id=rec.session_id, username=user, password=password))
        return out

    def session_ended(self, session_id: str, reason: str) -> None:
        rec = self.sessions.pop(session_id, None)
        if rec is not None:
            if self.cluster is not None and rec.resumed:
                pass     # the cluster's store never counted this leg (#15: left for the Redis broker)
            elif self.cluster is not None:
                self.cluster.session_ended(rec)
            else:
                self.registry.session_ended(rec.host_id, pool=rec.resource, user=rec.user)
            _log.info(log.kv("session-ended", sid=session_id, reason=reason))

    # --- resume (#15) ------------------------------------------------------------
    def _ticket_ttl(self) -> float:
        return resume_tickets.ticket_lifetime(self.config.timing.resume_grace)

    def add_resume(self, plan: LaunchPlan, client_key: str) -> None:
        """Give a launch a resume ticket bound to the client's key (no key: no resume)."""
        if not client_key or self.config.timing.resume_grace <= 0:
            return
        resume_tickets.check_key(client_key)
        plan.resume_key = client_key
        plan.resume_ticket = resume_tickets.mint(
            self.signer, user=plan.user, gateway_id=self.config.gateway_id, session_id=plan.session_id,
            host_id=plan.host_id, resource=plan.resource, fingerprint=plan.fingerprint, client_key=client_key,
            grace=self.config.timing.resume_grace, now=self.clock())

    def begin_resume(self, msg: control.Resume) -> PendingResume:
        if not isinstance(msg.session_id, str) or not 0 < len(msg.session_id) <= 64:
            raise AuthError("resume names no session")
        return PendingResume(msg, proof.new_nonce())

    async def resume(self, pending: PendingResume, answer: control.ResumeProof) -> LaunchPlan:
        """Check a resume (ticket, proof of the client's key, single use) and order the
        host to dial a new data leg for its live session; returns the plan to stitch.
        Typed errors: BadSignature (forged), TokenExpired, TicketReplayed, WrongClient,
        NoResourcesError (the host is not back, or busy)."""
        sid = pending.msg.session_id
        claims = resume_tickets.check(self.verifier, pending.msg.ticket, gateway_id=self.config.gateway_id,
                                      session_id=sid, nonce=pending.nonce, signature=answer.signature,
                                      now=self.clock(), replay=self.resume_replay, defer_use=True)
        if claims.jti in self.revoked_jtis or claims.extra["host"] in self.revoked_hosts:
            raise AuthError("resume ticket or its host has been revoked")
        host_id = claims.extra["host"]
        # A gateway cluster (#14): the host's control channel may be on another gateway,
        # which then passes the order on (gateway/cluster.py); None = look here, as alone.
        holder = await self.cluster.remote_holder(host_id, claims.extra["fp"]) if self.cluster is not None else None
        link = None
        if holder is None:
            t = self.config.timing
            rec = self.registry.hosts.get(host_id)
            wait = t.leg_timeout          # a restarted gateway: give the host time to register again
            if rec is not None and not rec.connected:
                # It was here and left: crashed (its sessions died with it), or lost its network
                # and is reconnecting. Wait one heartbeat interval, then take the session as gone.
                wait = min(wait, t.heartbeat_interval)
            link = await self._link_for(host_id, wait)
            rec = self.registry.hosts.get(host_id)
            if link is None or rec is None:
                if rec is not None:
                    raise NoResourcesError("host-gone", f"host {host_id} left and did not come back")
                raise NoResourcesError("host-unavailable", f"host {host_id} is not connected to this gateway")
            if rec.fingerprint != claims.extra["fp"]:
                raise AuthError(f"host {host_id} now has another certificate than the session's")
        if len(self.pending) >= self.config.max_pending_legs:
            raise NoResourcesError("gateway-busy", "too many launches in progress")
        now = self.clock()
        # Single use, spent only now that the dial is ordered: a refusal above (host not
        # back yet) leaves the ticket good for the client's next try, here or elsewhere.
        resume_tickets.spend(self.resume_replay, claims, now)
        plan = LaunchPlan(conn_id=secrets.token_urlsafe(24), session_id=sid, host_id=host_id, user=claims.sub,
                          resource=claims.extra["res"], fingerprint=claims.extra["fp"], ticket="", policy={},
                          created=now, leg=asyncio.get_running_loop().create_future(),
                          done=asyncio.get_running_loop().create_future(),
                          resume={"ticket": pending.msg.ticket, "nonce": pending.nonce,
                                  "signature": answer.signature})
        self.add_resume(plan, claims.extra["ck"])
        self.pending[plan.conn_id] = plan
        if holder is None:
            link.send(plan.dial())
        elif not await self.cluster.order_remote(plan, holder):
            rec, link = self.registry.hosts.get(host_id), self.links.get(host_id)
            if link is not None and rec is not None and rec.fingerprint == claims.extra["fp"]:
                link.send(plan.dial())       # its gateway died and the host registered here meanwhile
            else:
                self.pending.pop(plan.conn_id, None)
                self.resume_replay.release(claims.jti)       # no dial was ordered: the client may try again
                raise NoResourcesError("host-unavailable", f"gateway {holder} holding host {host_id} is not listening")
        _log.info(log.kv("resume", sid=sid, user=claims.sub, host=host_id, ticket=describe(pending.msg.ticket)))
        return plan

    async def _link_for(self, host_id: str, timeout: float) -> HostLink | None:
        """The host's control link, waiting up to ``timeout`` for it to (re)register:
        after a gateway restart clients may come back before their hosts do."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (link := self.links.get(host_id)) is None:
            left = deadline - loop.time()
            if left <= 0:
                return None
            fut = loop.create_future()
            self._link_waiters.setdefault(host_id, []).append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except asyncio.TimeoutError:
                return None
            finally:
                waiters = self._link_waiters.get(host_id, [])
                if fut in waiters:
                    waiters.remove(fut)
                if not waiters:
                    self._link_waiters.pop(host_id, None)
        return link

    def _resume_finished(self, plan: LaunchPlan, ok: bool) -> None:
        if not ok:
            return
        self.sessions[plan.session_id] = SessionRecord(
            plan.session_id, plan.user, plan.host_id, plan.resource, self.clock(), resume_key=plan.resume_key,
            fingerprint=plan.fingerprint, ticket_expiry=self.clock() + self._ticket_ttl(), resumed=True)
        if self.cluster is None:   # count it again: the old leg's end gave its slot back
            key = (plan.resource, plan.user)
            self.registry.user_sessions[key] = self.registry.user_sessions.get(key, 0) + 1
            rec = self.registry.hosts.get(plan.host_id)
            if rec is not None:
                rec.sessions += 1

    def resume_refresh(self, host_id: str) -> list[control.ResumeTicket]:
        """Fresh resume tickets for ``host_id``'s live sessions whose ticket is past half
        its lifetime (sent on each heartbeat; the host passes them to its clients)."""
        now = self.clock()
        ttl = self._ticket_ttl()
        out = []
        for rec in self.sessions.values():
            if rec.host_id != host_id or not rec.resume_key or rec.ticket_expiry - now > ttl / 2:
                continue
            ticket = resume_tickets.mint(self.signer, user=rec.user, gateway_id=self.config.gateway_id,
                                         session_id=rec.session_id, host_id=rec.host_id, resource=rec.resource,
                                         fingerprint=rec.fingerprint, client_key=rec.resume_key,
                                         grace=self.config.timing.resume_grace, now=now)
            rec.ticket_expiry = now + ttl
            out.append(control.ResumeTicket(session_id=rec.session_id, ticket=ticket))
        return out

    # --- admin -----------------------------------------------------------------
    def host_table(self) -> list[dict]:
        now = self.clock()
        return [{"host_id": r.host_id, "pool": r.pool, "status": self.registry.status(r, now),
                 "drain": r.drain, "sessions": r.sessions, "pending": r.pending,
                 "total_sessions": r.total_sessions, "last_seen_s": round(now - r.last_seen, 1),
                 "fingerprint": r.fingerprint, "token_jti": r.token_jti,
                 "token_expires_in_s": round(r.token_exp - now, 1) if r.token_exp != float("inf") else None}
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


def _turn_expiry(policy: dict) -> float:
    """The expiry time in a policy's TURN REST username ("<expiry>:<label>"), 0 if none."""
    user = str((policy or {}).get("ice", {}).get("username", ""))
    head = user.split(":", 1)[0]
    return float(head) if head.isdigit() else 0.0
