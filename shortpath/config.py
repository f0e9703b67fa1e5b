"""Configuration: frozen dataclasses, every timing knob in one place.

Timing knobs (defaults and why)
-------------------------------
==========================  =======  ==========================================================
knob                        default  why
==========================  =======  ==========================================================
heartbeat_interval          2.0 s    host -> broker liveness; cheap (one small frame)
heartbeat_misses            3        a host is Unavailable after 3 missed beats (~6 s): long
                                     enough to ride out a GC pause, short enough that launches
                                     stop going to a dead host quickly
handshake_timeout           10.0 s   TLS handshake + first control message on any gateway
                                     connection; slowloris connections are cut after this
leg_timeout                 10.0 s   how long the broker waits for the host's data leg
launch_timeout              20.0 s   client side: launch request to Launched
reconnect_base / _cap       0.2/10 s host reconnect backoff: exponential with full jitter so a
                                     restarted gateway is not hit by every host at once
ack_delay                   0.02 s   session receiver sends a cumulative ACK at most this late
ack_every                   32       ... or after this many DATA frames, whichever first
send_window_bytes           4 MiB    unacknowledged bytes a session may have in flight; send()
                                     waits beyond it (back-pressure; bounds replay memory)
ping_interval               1.0 s    session RTT probe on the active path
relay_high_water            256 KiB  gateway/peer transport write buffer above which writers
                                     pause (relay) or datagrams are dropped (peer)
resume_grace                30.0 s   a session whose relay leg is gone (and no UDP path left)
                                     waits this long for the client to resume it on a new leg
                                     (#15), then ends with ``resume-timeout``. Covers a gateway
                                     restart and a client changing networks; 0 = no resume
relay_silent_after          3.0 s    client with resume: the relay leg counts as dead (and is
                                     replaced by a resume) when nothing arrived on it for this
                                     long after we sent data or a ping on it; TCP alone takes
                                     minutes to notice a vanished network. Generous: a false
                                     alarm costs a resume, not data. Bytes arriving count; a
                                     PING goes out a third of the way in, and the leg is kept
                                     while that PING is younger than 4 relay RTTs (a slow
                                     relay is not a dead one); doubled per leg given up
relay_check_after           0.7 s    ... right after a failover from UDP onto the relay (a ping
                                     goes first): every path silent at once is how a changed
                                     network looks, so the relay gets less time to answer. With
                                     dead_after (0.6 s) a client on a vanished network asks for a
                                     resume 1.3 s after its last packet while data flows
resume_retry                0.25 s   client: pause between attempts to reach a gateway for a
                                     resume (a restarting gateway refuses connections until it
                                     listens; short, so data flows soon after it is back);
                                     each pause is jittered 0.75-1.25 x so that the clients of
                                     a gateway that died do not retry in lockstep
==========================  =======  ==========================================================

Idle keepalive on a UDP path (one knob, both ends)
--------------------------------------------------
An idle UDP path gets a keepalive probe (a PING the peer answers) every
``keepalive_interval`` seconds, default 15 s, so that NAT bindings on both sides
stay open (RFC 4787 asks NATs for >= 2 min, many home routers use 30 s). Set it
per pool in the gateway config, ``[pool.shortpath] keepalive_interval = 5``:
the broker hands the pool policy to the client and the host of every session,
so both ends use the same value. A process can override it locally with the
environment variable ``SHORTPATH_KEEPALIVE_INTERVAL`` (seconds; ``0`` turns the
keepalives off). :func:`keepalive_interval` is the one place that resolves it;
the session (session/session.py) feeds the result to ``PathTiming.keepalive_interval``. (aioice's
ICE consent checks, one STUN request per side every 4-6 s, also cross the NAT;
the keepalive does not rely on them.)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from .errors import ConfigError

DEFAULT_GATEWAY_ID = "shortpath-gateway"
DEFAULT_MANAGED_PORT = 3390
#: idle keepalive on a UDP path, seconds (see "Idle keepalive" above)
DEFAULT_KEEPALIVE_INTERVAL = 15.0
#: environment variable that overrides the keepalive interval for one process (0 = off)
KEEPALIVE_ENV = "SHORTPATH_KEEPALIVE_INTERVAL"


@dataclass(frozen=True)
class Timing:
    heartbeat_interval: float = 2.0
    heartbeat_misses: int = 3
    handshake_timeout: float = 10.0
    leg_timeout: float = 10.0
    launch_timeout: float = 20.0
    reconnect_base: float = 0.2
    reconnect_cap: float = 10.0
    ack_delay: float = 0.02
    ack_every: int = 32
    send_window_bytes: int = 4 * 1024 * 1024
    ping_interval: float = 1.0
    relay_high_water: int = 256 * 1024
    resume_grace: float = 30.0
    relay_silent_after: float = 3.0
    relay_check_after: float = 0.7
    resume_retry: float = 0.25
    #: close(): how long CLOSE may wait for the peer's session to have received every
    #: message sent before it (a failover and its replay fit in it; after it the
    #: session ends anyway and reports what is missing)
    close_timeout: float = 5.0


@dataclass(frozen=True)
class ShortpathPolicy:
    """Per-pool UDP upgrade policy (the RDP Shortpath settings)."""

    enabled: bool = True
    managed: bool = True
    public_direct: bool = True
    turn: bool = True
    managed_port: int = DEFAULT_MANAGED_PORT
    #: idle keepalive on the UDP path, seconds; 0 = none (both ends get it with the policy)
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL

    def __post_init__(self) -> None:
        _check_keepalive(self.keepalive_interval, "pool shortpath.keepalive_interval")

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "managed": self.managed, "public_direct": self.public_direct,
                "turn": self.turn, "managed_port": self.managed_port,
                "keepalive_interval": self.keepalive_interval}


def _check_keepalive(value, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number of seconds, not {value!r}") from None
    if not v >= 0 or v == float("inf"):
        raise ConfigError(f"{where} must be >= 0 seconds (0 = no keepalive), not {value!r}")
    return v


def keepalive_interval(shortpath_policy: dict | None = None, environ=None) -> float:
    """The idle keepalive interval this process uses on a UDP path (seconds; 0 = off).

    ``SHORTPATH_KEEPALIVE_INTERVAL`` in ``environ`` (default ``os.environ``) wins;
    else the pool policy's ``keepalive_interval`` as the broker sent it (the
    ``"shortpath"`` part of a session's policy); else 15 s. A bad value raises
    ConfigError rather than silently keeping the default."""
    env = os.environ if environ is None else environ
    raw = env.get(KEEPALIVE_ENV, "").strip()
    if raw:
        return _check_keepalive(raw, KEEPALIVE_ENV)
    value = (shortpath_policy or {}).get("keepalive_interval")
    if value is None:
        return DEFAULT_KEEPALIVE_INTERVAL
    return _check_keepalive(value, "policy keepalive_interval")


LOAD_BALANCERS = ("breadth-first", "depth-first", "personal")


@dataclass(frozen=True)
class PoolConfig:
    name: str
    load_balancer: str = "breadth-first"
    max_sessions: int = 10
    #: personal pools: user -> host id
    assignments: dict = field(default_factory=dict)
    shortpath: ShortpathPolicy = field(default_factory=ShortpathPolicy)
    #: sessions one user may hold in this pool at once (live + launching); 0 = no limit
    max_sessions_per_user: int = 0

    def __post_init__(self) -> None:
        if self.load_balancer not in LOAD_BALANCERS:
            raise ConfigError(f"pool {self.name}: load_balancer must be one of {', '.join(LOAD_BALANCERS)}")
        if self.max_sessions < 1:
            raise ConfigError(f"pool {self.name}: max_sessions must be >= 1")
        if isinstance(self.max_sessions_per_user, bool) or not isinstance(self.max_sessions_per_user, int) \
                or self.max_sessions_per_user < 0:
            raise ConfigError(f"pool {self.name}: max_sessions_per_user must be an integer >= 0 (0 = no limit)")

    @property
    def kind(self) -> str:
        return "personal" if self.load_balancer == "personal" else "pooled"


@dataclass(frozen=True)
class TurnConfig:
    """Where clients and hosts find STUN/TURN, and the coturn REST secret."""

    stun: str = ""            # "host:port"
    turn: str = ""            # "host:port" (UDP/TCP)
    turn_tls: str = ""        # "host:port" (TLS)
    secret: str = ""          # coturn static-auth-secret; never logged
    #: seconds a TURN credential is valid; the broker re-mints it over the host's control
    #: channel at half-life while the session lives (issue #11), so this bounds how long a
    #: leaked one works, also after its session ended
    credential_ttl: float = 120.0


@dataclass(frozen=True)
class ClusterConfig:
    """Many gateways, one broker on Redis (issue #14; docs/config.md ``[cluster]``).
    Empty ``redis``: the default single gateway with its broker in memory."""

    redis: str = ""           # redis://HOST:PORT/DB
    id: str = ""              # this gateway's name in the cluster (default: host:port it listens on)
    advertise: str = ""       # host:port hosts dial their data legs to (default: the listen address)
    sync_interval: float = 1.0   # how often this gateway pushes its hosts, sessions and load

    def __post_init__(self) -> None:
        if self.redis and not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("[cluster] redis must be a redis://HOST:PORT/DB URL")
        if not (0.05 <= float(self.sync_interval) <= 60):
            raise ConfigError("[cluster] sync_interval must be between 0.05 and 60 s")


@dataclass(frozen=True)
class GatewayConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 4443
    gateway_id: str = DEFAULT_GATEWAY_ID
    state_dir: str = "./state"
    pools: tuple[PoolConfig, ...] = (PoolConfig("desktop"),)
    timing: Timing = field(default_factory=Timing)
    turn: TurnConfig = field(default_factory=TurnConfig)
    #: caps against abuse (issue: resource limits)
    max_unauthenticated: int = 2000
    #: ... of which one source address may hold (both counted from accept() to the
    #: first message; lowered at start to fit the fd limit: gateway/admission.py)
    max_unauthenticated_per_source: int = 32
    max_pending_legs: int = 1000
    #: launches per second per client source address, and the burst allowed
    launch_rate: float = 5.0
    launch_burst: float = 20.0
    #: revocation list (issue #11): token ids (``jti``, any token type) and host ids
    #: refused at registration, launch and every heartbeat of a live host
    revoked_jtis: tuple[str, ...] = ()
    revoked_hosts: tuple[str, ...] = ()
    #: optional deployment CA certificate (PEM file, ``shortpath ca init``): when
    #: set, a host must present a certificate this CA issued for its host id
    host_ca: str = ""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def pool(self, name: str) -> PoolConfig | None:
        for p in self.pools:
            if p.name == name:
                return p
        return None


def load_gateway_config(path: str | None, **overrides) -> GatewayConfig:
    """Read a gateway TOML file (see docs/config.md); keyword overrides win."""
    data: dict = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    gw = dict(data.get("gateway", {}))
    pools = []
    for raw in data.get("pool", []):
        raw = dict(raw)
        sp = ShortpathPolicy(**raw.pop("shortpath", {}))
        try:
            pools.append(PoolConfig(shortpath=sp, **raw))
        except TypeError as exc:
            raise ConfigError(f"pool entry: {exc}") from None
    kwargs: dict = {}
    if "listen" in gw:
        host, _, port = str(gw.pop("listen")).rpartition(":")
        kwargs["listen_host"], kwargs["listen_port"] = host or "0.0.0.0", int(port)
    for key in ("gateway_id", "state_dir", "max_unauthenticated", "max_unauthenticated_per_source",
                "max_pending_legs", "launch_rate",
                "launch_burst", "host_ca"):
        if key in gw:
            kwargs[key] = gw.pop(key)
    revoked = dict(data.get("revoked", {}))
    for key, name in (("jtis", "revoked_jtis"), ("hosts", "revoked_hosts")):
        value = revoked.pop(key, [])
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"[revoked] {key} must be a list of strings")
        if value:
            kwargs[name] = tuple(value)
    if revoked:
        raise ConfigError(f"unknown [revoked] keys: {', '.join(sorted(revoked))}")
    if gw:
        raise ConfigError(f"unknown [gateway] keys: {', '.join(sorted(gw))}")
    if pools:
        kwargs["pools"] = tuple(pools)
    if "timing" in data:
        kwargs["timing"] = Timing(**data["timing"])
    if "turn" in data:
        kwargs["turn"] = TurnConfig(**data["turn"])
    if "cluster" in data:
        try:
            kwargs["cluster"] = ClusterConfig(**data["cluster"])
        except TypeError as exc:
            raise ConfigError(f"[cluster]: {exc}") from None
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    names = [p.name for p in kwargs.get("pools", GatewayConfig.pools)]
    if len(set(names)) != len(names):
        raise ConfigError("pool names must be unique")
    return GatewayConfig(**kwargs)


def state_path(state_dir: str, name: str) -> str:
    """A path in the state directory, which is created if needed and kept 0700
    (auth/files.py: also when it already existed with a looser mode)."""
    from .auth.files import private_dir
    private_dir(state_dir)
    return os.path.join(state_dir, name)
