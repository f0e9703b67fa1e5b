"""Host registry and host selection (pure: no I/O, the clock is an argument).

A host is *assignable* for a new session when it is registered, Available
(heard from within ``heartbeat_interval * heartbeat_misses``), not draining,
and its load (live sessions it reported + launches still pending) is below the
pool's ``max_sessions``.

Selection rules
---------------
* breadth-first: the assignable host with the lowest load; ties go to the host
  that was least recently given a session, then to host id (deterministic).
* depth-first: the assignable host with the *highest* load (fill one host to
  its limit before starting the next); ties go to host id.
* personal: the host assigned to the user in the pool config, if assignable.

Per-user limit: with ``max_sessions_per_user`` > 0 a user may hold at most that
many sessions in the pool at once, counting live sessions and launches still
pending (reserved by :meth:`Registry.select`, released by ``launch_done`` with
``stitched=False`` or by ``session_ended``). The limit is checked before any
host is looked at, so a user at the limit gets ``user-limit`` whatever the hosts'
state.

When nothing is assignable, :class:`NoResourcesError` says why: the reason is
``user-limit``, ``none-registered``, ``not-assigned``, or the set of reasons the
hosts were excluded for (``unavailable``, ``draining``, ``full``) joined by
``+``, and the detail names each host's reason.

Registration validity: each record keeps its registration token's id and
expiry; :meth:`Registry.invalid` says whether a live registration must be cut
(token expired, token id or host id revoked). The broker asks on every
message a host sends (a heartbeat at least every interval) and when the
revocation list changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import PoolConfig
from ..errors import NoResourcesError


@dataclass
class HostRecord:
    host_id: str
    pool: str
    fingerprint: str
    registered_at: float
    last_seen: float
    connected: bool = True
    drain: bool = False
    sessions: int = 0          # live sessions the host last reported
    pending: int = 0           # launches dispatched but not yet stitched
    last_assigned: float = float("-inf")
    total_sessions: int = 0
    token_jti: str = ""        # id of the registration token (not a secret)
    token_exp: float = float("inf")

    @property
    def load(self) -> int:
        return self.sessions + self.pending


@dataclass
class Registry:
    heartbeat_interval: float = 2.0
    heartbeat_misses: int = 3
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    #: (pool, user) -> sessions the user holds there (live + pending launches)
    user_sessions: dict[tuple[str, str], int] = field(default_factory=dict)

    # --- host lifecycle ------------------------------------------------------
    def register(self, host_id: str, pool: str, fingerprint: str, now: float,
                 token_jti: str = "", token_exp: float = float("inf")) -> HostRecord:
        old = self.hosts.get(host_id)
        rec = HostRecord(host_id, pool, fingerprint, registered_at=now, last_seen=now,
                         token_jti=token_jti, token_exp=token_exp)
        if old is not None:
            # Reconnect: keep operator state and counters.
            rec.drain = old.drain
            rec.last_assigned = old.last_assigned
            rec.total_sessions = old.total_sessions
            rec.sessions = old.sessions
        self.hosts[host_id] = rec
        return rec

    def heartbeat(self, host_id: str, sessions: int, now: float) -> None:
        rec = self.hosts.get(host_id)
        if rec is not None:
            rec.last_seen = now
            rec.sessions = max(0, sessions)
            rec.connected = True

    def disconnected(self, host_id: str) -> None:
        rec = self.hosts.get(host_id)
        if rec is not None:
            rec.connected = False

    def set_drain(self, host_id: str, drain: bool) -> HostRecord:
        rec = self.hosts.get(host_id)
        if rec is None:
            raise KeyError(host_id)
        rec.drain = drain
        return rec

    def available(self, rec: HostRecord, now: float) -> bool:
        return rec.connected and now - rec.last_seen <= self.heartbeat_interval * self.heartbeat_misses

    def invalid(self, rec: HostRecord, now: float, revoked_jtis=(), revoked_hosts=(),
                skew: float = 0.0) -> str | None:
        """Why a registration may no longer stand (``revoked`` or ``token-expired``), or None."""
        if rec.host_id in revoked_hosts or (rec.token_jti and rec.token_jti in revoked_jtis):
            return "revoked"
        if now > rec.token_exp + skew:
            return "token-expired"
        return None

    def status(self, rec: HostRecord, now: float) -> str:
        if not self.available(rec, now):
            return "unavailable"
        return "draining" if rec.drain else "available"

    # --- selection -----------------------------------------------------------
    def _exclusion(self, rec: HostRecord, pool: PoolConfig, now: float) -> str | None:
        if not self.available(rec, now):
            return "unavailable"
        if rec.drain:
            return "draining"
        if rec.load >= pool.max_sessions:
            return "full"
        return None

    def select(self, pool: PoolConfig, user: str, now: float) -> HostRecord:
        """Pick a host for ``user`` in ``pool`` and reserve a pending slot on it
        (and one of the user's slots in the pool)."""
        held = self.user_sessions.get((pool.name, user), 0)
        if pool.max_sessions_per_user and held >= pool.max_sessions_per_user:
            raise NoResourcesError("user-limit", f"{user} holds {held} of {pool.max_sessions_per_user} "
                                                 f"sessions allowed per user in pool {pool.name}")
        members = sorted((r for r in self.hosts.values() if r.pool == pool.name), key=lambda r: r.host_id)
        if pool.load_balancer == "personal":
            target = pool.assignments.get(user)
            if target is None:
                raise NoResourcesError("not-assigned", f"user {user} has no personal host in pool {pool.name}")
            members = [r for r in members if r.host_id == target]
            if not members:
                raise NoResourcesError("none-registered", f"assigned host {target} is not registered")
        if not members:
            raise NoResourcesError("none-registered", f"no host registered in pool {pool.name}")
        excluded = {r.host_id: self._exclusion(r, pool, now) for r in members}
        candidates = [r for r in members if excluded[r.host_id] is None]
        if not candidates:
            reasons = sorted(set(v for v in excluded.values() if v))
            detail = ", ".join(f"{h}: {why}" for h, why in excluded.items())
            raise NoResourcesError("+".join(reasons), detail)
        if pool.load_balancer == "depth-first":
            chosen = min(candidates, key=lambda r: (-r.load, r.host_id))
        else:  # breadth-first, or personal (one candidate)
            chosen = min(candidates, key=lambda r: (r.load, r.last_assigned, r.host_id))
        chosen.pending += 1
        chosen.last_assigned = now
        self.user_sessions[(pool.name, user)] = held + 1
        return chosen

    def _release_user(self, pool: str | None, user: str | None) -> None:
        if pool is None or user is None:
            return
        key = (pool, user)
        left = self.user_sessions.get(key, 0) - 1
        if left > 0:
            self.user_sessions[key] = left
        else:
            self.user_sessions.pop(key, None)

    def launch_done(self, host_id: str, stitched: bool, pool: str | None = None, user: str | None = None) -> None:
        """A pending launch finished: stitched (now a live session) or abandoned.
        ``pool``/``user``: whose slot an abandoned launch gives back."""
        if not stitched:
            self._release_user(pool, user)
        rec = self.hosts.get(host_id)
        if rec is None:
            return
        rec.pending = max(0, rec.pending - 1)
        if stitched:
            rec.sessions += 1   # until the host's next heartbeat says otherwise
            rec.total_sessions += 1

    def session_ended(self, host_id: str, pool: str | None = None, user: str | None = None) -> None:
        self._release_user(pool, user)
        rec = self.hosts.get(host_id)
        if rec is not None:
            rec.sessions = max(0, rec.sessions - 1)
