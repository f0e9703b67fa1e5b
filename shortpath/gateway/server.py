"""Gateway: one TLS listener for hosts, clients and host data legs.

Every connection must complete TLS and send its first CONTROL message within
``handshake_timeout``. Until then it is *pre-auth*, counted from ``accept()``
(before the TLS handshake, which we start ourselves) per source address and in
total; over a cap it is closed at once, before any TLS work (admission.py: one
address cannot lock everyone out, and a live host's address is never starved
by strangers). The caps are kept under the fd limit, which start() raises to
the hard limit. The first message decides the connection's role:

* ``register``     -> host control channel: challenge, proof of the host key
                      (broker/service.py), then heartbeats and dial orders
* ``client-hello`` -> client: feed, launch, then the connection becomes the
                      client's relay leg
* ``leg-hello``    -> a host's data leg for one launch

A malformed, oversized or unknown frame closes that connection only, after an
``error`` message naming the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import resource
import time

from .. import log
from ..auth import certs
from ..auth.resume import check_key as check_resume_key
from ..auth.tokens import TokenSigner
from ..broker.service import Broker
from ..config import GatewayConfig, state_path
from ..errors import (AuthError, BrokerUnavailable, ConfigError, NoResourcesError, RateLimited, RemoteError,
                      ShortpathError)
from ..framed import FramedConn
from ..wire import control
from ..wire.frames import MAX_CONTROL_PAYLOAD, MAX_RELAY_PAYLOAD
from .admission import Admission, plan_caps
from .ratelimit import RateLimiter
from .relay import stitch

#: Per-connection TLS read buffer in the gateway process. asyncio allocates a
#: fixed 256 KiB buffer for every TLS connection (``SSLProtocol.max_size``);
#: with two legs per session that was ~2/3 of the gateway's memory per session
#: (572 KiB at 100 sessions, benchmarks/scale.py) and what an idle,
#: unauthenticated connection costs. 64 KiB measured the same CPU per relayed
#: byte in a 5-round A/B and brought it to ~187 KiB per session.
TLS_READ_BUFFER = 64 * 1024


def _shrink_tls_read_buffer() -> None:
    """Set asyncio's TLS read buffer size for this process (a class attribute of
    a private module: checked, and left alone if asyncio changes)."""
    import asyncio.sslproto as sslproto
    proto = getattr(sslproto, "SSLProtocol", None)
    if proto is not None and isinstance(getattr(proto, "max_size", None), int) and proto.max_size > TLS_READ_BUFFER:
        proto.max_size = TLS_READ_BUFFER

_log = log.get("gateway")


def _raise_nofile() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return the
    soft limit now in force (None if unknown). The connection caps are planned
    under it (admission.plan_caps)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 1 << 20:
            hard = 1 << 20
        if soft == resource.RLIM_INFINITY or soft < hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else int(soft)
    except (ValueError, OSError):
        return None


def _error(exc: ShortpathError) -> control.Error:
    return control.Error(code=exc.code, message=exc.message, reason=getattr(exc, "reason", ""))


class _Closed:
    """Stands in for a StreamWriter that lost its transport in a failed TLS upgrade."""

    transport = None

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        pass


class _Link:
    """A host's control connection as the broker sees it."""

    def __init__(self, conn: FramedConn) -> None:
        self.conn = conn

    def send(self, msg: control.Message) -> None:
        if not self.conn.closing():
            self.conn.send(msg)

    def close(self, error: control.Error | None = None) -> None:
        """The broker ends this link (replaced, revoked, token expired): say why, then close."""
        if error is not None:
            self.send(error)
        if not self.conn.closing():
            self.conn.writer.close()


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.cert_path = state_path(config.state_dir, "gateway.crt")
        self.key_path = state_path(config.state_dir, "gateway.key")
        certs.load_or_create(self.cert_path, self.key_path, config.gateway_id,
                             sans=["localhost", "127.0.0.1", config.listen_host])
        self.signer = TokenSigner.load_or_create(state_path(config.state_dir, "signing.key"))
        self.broker = Broker(config, self.signer)
        self._server: asyncio.AbstractServer | None = None
        self._admin: asyncio.AbstractServer | None = None
        self._stop = asyncio.Event()
        self.admission = Admission(plan_caps(config.max_unauthenticated, config.max_unauthenticated_per_source, None))
        self._tls = None
        self._conns: dict[asyncio.Task, FramedConn] = {}
        self.counters = {"accepted": 0, "refused_unauth_cap": 0, "refused_per_source": 0, "tls_failures": 0,
                         "handshake_timeouts": 0,
                         "protocol_errors": 0, "auth_failures": 0, "sessions_stitched": 0, "rate_limited": 0,
                         "resumes": 0}
        self.port: int | None = None
        self.web = None      # gateway/web.py, set up in start()
        self.launch_limiter = RateLimiter(config.launch_rate, config.launch_burst)
        #: shortpath/metrics.py GatewayMetrics when served (--metrics), else None
        self.metrics = None
        self.admin_path = state_path(config.state_dir, "admin.sock")
        self._lock_fd: int | None = None

    # --- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Lock the state directory, bind the TLS listener, open the admin socket.
        Each failure is a ConfigError in one sentence (another gateway on the same
        state directory, a port in use), and leaves nothing behind."""
        _shrink_tls_read_buffer()
        ctx = self._tls = certs.server_context(self.cert_path, self.key_path)
        from .web import WebFront     # the browser client (issue #16): page + WebSocket, by ALPN
        self.web = WebFront(self)
        await self.web.start(ctx)
        self.admission = Admission(plan_caps(self.config.max_unauthenticated,
                                             self.config.max_unauthenticated_per_source, _raise_nofile()))
        self._lock_state_dir()
        try:
            try:
                self._server = await asyncio.start_server(
                    self._accept, self.config.listen_host, self.config.listen_port,  # TLS: in _accept
                    limit=MAX_RELAY_PAYLOAD * 2, backlog=1024)
            except OSError as exc:
                where = f"{self.config.listen_host}:{self.config.listen_port}"
                why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                raise ConfigError(f"cannot listen on {where}: {why} (another gateway or program has that "
                                  f"port? pick another --listen)") from None
            self.port = self._server.sockets[0].getsockname()[1]
            # The lock makes the admin socket ours: one left by a gateway that died is stale.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.admin_path)
            self._admin = await asyncio.start_unix_server(self._admin_conn, self.admin_path)
            os.chmod(self.admin_path, 0o600)
        except BaseException:
            if self._server is not None:
                self._server.close()
                self._server = None
            self._unlock_state_dir()
            raise
        _log.info(log.kv("listening", addr=f"{self.config.listen_host}:{self.port}", gateway=self.config.gateway_id))
        if self.config.cluster.redis:    # many gateways, one broker on Redis (gateway/cluster.py)
            from .cluster import Cluster
            cl = self.config.cluster
            advertise = cl.advertise or f"{self.config.listen_host}:{self.port}"
            self.broker.cluster = Cluster(self.broker, cl.id or advertise, advertise, cl.redis,
                                          sync_interval=cl.sync_interval, load=lambda: len(self._conns))
            await self.broker.cluster.start()

    def _lock_state_dir(self) -> None:
        """One gateway per state directory: an exclusive ``flock`` on ``gateway.lock``
        there, held while the gateway runs (the kernel drops it when the process
        dies, however it dies). ``flock`` rather than ``lockf``: two gateways in one
        process (tests) exclude each other too. The file is never removed; removing
        it would let a third gateway lock a fresh file while the first still runs."""
        path = state_path(self.config.state_dir, "gateway.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the state lock {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"state directory {self.config.state_dir} is in use by another gateway "
                              f"(pid {holder}); stop it, or give this one another --state") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock_state_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)      # closing the descriptor releases the flock
            self._lock_fd = None

    async def stop(self) -> None:
        self._stop.set()
        if self.broker.cluster is not None:
            await self.broker.cluster.stop()
        for srv in (self._server, self._admin):
            if srv is not None:
                srv.close()
        if self.web is not None:
            await self.web.stop()
        # Relays see _stop and tell both legs "gateway-shutdown"; give them a
        # moment, then cut whatever is left (control channels, half-open peers).
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=0.5)
        for conn in list(self._conns.values()):
            conn.abort()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2.0)
        for t in list(self._conns):
            t.cancel()
        for srv in (self._server, self._admin):
            if srv is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(srv.wait_closed(), 2.0)
        if self._admin is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.admin_path)      # only ours: the state lock is still held
            self._admin = None
        self._unlock_state_dir()

    async def serve_forever(self) -> None:
        await self.start()
        await self._stop.wait()

    # --- accepting -------------------------------------------------------------
    @property
    def _unauth(self) -> int:
        """Pre-auth connections now (all sources)."""
        return self.admission.pending

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = FramedConn(reader, writer, MAX_CONTROL_PAYLOAD, self.config.timing.relay_high_water)
        self._conns[task] = conn
        self.counters["accepted"] += 1
        try:
            # Pre-auth admission, counted from accept(): see admission.py.
            ticket = self.admission.admit(str(conn.peer[0]) if conn.peer else "?")
            if isinstance(ticket, str):
                self.counters["refused_per_source" if ticket == "per-source" else "refused_unauth_cap"] += 1
                conn.abort()
                return
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.config.timing.handshake_timeout
                raw = writer.transport
                try:
                    await writer.start_tls(self._tls, ssl_handshake_timeout=self.config.timing.handshake_timeout)
                except BaseException as exc:  # failed or timed out, peer gone, gateway stopping
                    if writer.transport is None:   # asyncio leaves the writer without a transport
                        conn.writer = _Closed()
                        raw.abort()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    self.counters["tls_failures"] += 1
                    return
                with contextlib.suppress(Exception):
                    writer.transport.set_write_buffer_limits(high=self.config.timing.relay_high_water)
                if self.web is not None and self.web.wants(writer):   # ALPN http/1.1: a browser (web.py)
                    await self.web.serve(reader, writer, conn.peer, lambda: self.admission.release(ticket))
                    return
                try:
                    first = await asyncio.wait_for(conn.read_control(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    self.counters["handshake_timeouts"] += 1
                    return
                if first is None:
                    return
                self.admission.release(ticket)
                if isinstance(first, control.RegisterHost):
                    await self._serve_host(conn, first)
                elif isinstance(first, control.ClientHello):
                    await self._serve_client(conn, first)
                elif isinstance(first, control.LegHello):
                    await self._serve_leg(conn, first)
                elif isinstance(first, control.Resume):
                    await self._serve_resume(conn, first)
                elif isinstance(first, control.Probe):
                    await self._serve_probe(conn, first)
                else:
                    raise RemoteError(f"{first.TYPE} is not a valid first message")
            finally:
                self.admission.release(ticket)   # idempotent
        except AuthError as exc:
            self.counters["auth_failures"] += 1
            _log.info(log.kv("auth-failed", peer=conn.peer, error=exc.code, why=exc.message))
            conn.send(_error(exc))
        except RemoteError as exc:
            self.counters["protocol_errors"] += 1
            _log.info(log.kv("protocol-error", peer=conn.peer, error=exc.code, why=exc.message))
            with contextlib.suppress(Exception):
                conn.send(_error(exc))
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # should never happen: keep serving everyone else
            _log.exception(log.kv("BUG connection handler crashed", peer=conn.peer))
        finally:
            self._conns.pop(task, None)
            await conn.close()

    # --- hosts -----------------------------------------------------------------
    async def _serve_host(self, conn: FramedConn, hello: control.RegisterHost) -> None:
        link = _Link(conn)
        # Proof of possession of the host key (broker/service.py, auth/proof.py).
        reg = self.broker.begin_registration(hello)
        conn.send(reg.challenge)
        answer = await asyncio.wait_for(conn.read_control(), self.config.timing.handshake_timeout)
        if not isinstance(answer, control.RegisterProof):
            raise RemoteError(f"expected register-proof, got {answer.TYPE if answer else 'end of connection'}")
        conn.send(self.broker.register_host(reg, answer, link))
        host_id = hello.host_id
        timeout = self.config.timing.heartbeat_interval * self.config.timing.heartbeat_misses
        source = str(conn.peer[0]) if conn.peer else "?"
        self.admission.trust(source)   # this host's data legs are not counted against strangers
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(conn.read_control(), timeout)
                except asyncio.TimeoutError:
                    _log.info(log.kv("host-heartbeat-missed", host=host_id))
                    return
                if msg is None:
                    return
                # current link, token unexpired, nothing revoked: else AuthError ends it
                self.broker.check_host_link(host_id, link)
                if isinstance(msg, control.Heartbeat):
                    conn.send(self.broker.heartbeat(host_id, msg))
                    for fresh in self.broker.turn_refresh(host_id):   # short-lived TURN credentials
                        conn.send(fresh)
                    for fresh in self.broker.resume_refresh(host_id):  # short-lived resume tickets (#15)
                        conn.send(fresh)
                elif isinstance(msg, control.DialResult):
                    self.broker.dial_result(host_id, msg)
                else:
                    raise RemoteError(f"{msg.TYPE} is not valid on a host control channel")
        finally:
            self.admission.untrust(source)
            self.broker.host_disconnected(host_id, link)

    # --- clients ---------------------------------------------------------------
    async def _serve_client(self, conn: FramedConn, hello: control.ClientHello) -> None:
        claims = self.broker.verify(hello.token, "user")
        conn.send(control.Welcome(user=claims.sub))
        while True:
            msg = await conn.read_control()
            if msg is None:
                return
            if isinstance(msg, control.FeedRequest):
                conn.send(control.Feed(resources=self.broker.feed(claims)))
            elif isinstance(msg, control.Launch):
                claims = self.broker.verify(hello.token, "user")  # expiry re-checked per launch
                source = str(conn.peer[0]) if conn.peer else "?"
                now = time.monotonic()
                if not self.launch_limiter.allow(source, now):
                    self.counters["rate_limited"] += 1
                    wait = self.launch_limiter.retry_after(source, now)
                    conn.send(_error(RateLimited(f"too many launches from {source}; retry in {max(wait, 0.1):.1f} s")))
                    continue
                if msg.resume_key:      # a malformed resume key is refused before a host is booked
                    check_resume_key(msg.resume_key)
                try:
                    plan = await self.broker.launch(claims, msg.resource)
                except (NoResourcesError, AuthError, BrokerUnavailable) as exc:
                    _log.info(log.kv("launch-refused", user=claims.sub, resource=msg.resource, error=exc.code,
                                     why=exc.message))
                    if self.metrics is not None:
                        self.metrics.launch(exc.code)
                    conn.send(_error(exc))
                    continue
                try:
                    self.broker.add_resume(plan, msg.resume_key)      # a resume ticket (#15)
                except AuthError as exc:
                    self.broker.launch_finished(plan, ok=False)
                    plan.finish()
                    raise exc
                await self._wait_and_stitch(conn, plan)
                return
            else:
                raise RemoteError(f"{msg.TYPE} is not valid from a client")

    async def _wait_and_stitch(self, client: FramedConn, plan) -> None:
        try:
            host = await asyncio.wait_for(asyncio.shield(plan.leg), self.config.timing.leg_timeout)
        except (asyncio.TimeoutError, NoResourcesError) as exc:
            self.broker.launch_finished(plan, ok=False)
            plan.finish()
            err = exc if isinstance(exc, NoResourcesError) else NoResourcesError(
                "host-timeout", f"host {plan.host_id} did not dial its data leg in time")
            _log.info(log.kv("launch-failed", sid=plan.session_id, host=plan.host_id, why=err.reason))
            if self.metrics is not None:
                self.metrics.launch(err.code)
            client.send(_error(err))
            return
        except asyncio.CancelledError:
            self.broker.launch_finished(plan, ok=False)
            plan.finish()
            raise
        self.broker.launch_finished(plan, ok=True)
        self.counters["sessions_stitched"] += 1
        if self.metrics is not None:
            self.metrics.launch("ok")
        if plan.resume:
            client.send(control.Resumed(session_id=plan.session_id, host_id=plan.host_id, ticket=plan.resume_ticket))
        else:
            client.send(control.Launched(session_id=plan.session_id, host_id=plan.host_id,
                                         host_fingerprint=plan.fingerprint, ticket=plan.ticket, policy=plan.policy,
                                         resume_ticket=plan.resume_ticket))
        host.send(control.LegAccepted(session_id=plan.session_id))
        client.max_payload = host.max_payload = MAX_RELAY_PAYLOAD
        reason = "?"
        try:
            reason, _stats = await stitch(plan.session_id, client, host, self._stop)
            if self.metrics is not None:
                self.metrics.relay(_stats)
        finally:
            self.broker.session_ended(plan.session_id, reason)
            plan.finish()

    # --- gateway probes (client/gateway_choice.py) -------------------------------
    async def _serve_probe(self, conn: FramedConn, msg: control.Probe) -> None:
        """Answer up to 16 latency probes with this gateway's load, then close."""
        name = self.broker.cluster.id if self.broker.cluster is not None else ""
        for _ in range(16):
            conn.send(control.ProbeAck(seq=msg.seq, connections=len(self._conns), gateway=name))
            try:
                msg = await asyncio.wait_for(conn.read_control(), self.config.timing.handshake_timeout)
            except asyncio.TimeoutError:
                return
            if not isinstance(msg, control.Probe):
                return

    # --- resume (#15) ---------------------------------------------------------------
    async def _serve_resume(self, conn: FramedConn, msg: control.Resume) -> None:
        """A client brings a live session back on this connection: challenge, proof,
        then the broker has the host dial a new leg, stitched here like a launch."""
        pending = self.broker.begin_resume(msg)
        conn.send(pending.challenge)
        answer = await asyncio.wait_for(conn.read_control(), self.config.timing.handshake_timeout)
        if not isinstance(answer, control.ResumeProof):
            raise RemoteError(f"expected resume-proof, got {answer.TYPE if answer else 'end of connection'}")
        source = str(conn.peer[0]) if conn.peer else "?"
        if not self.launch_limiter.allow(source, time.monotonic()):   # a resume costs the host a dial
            self.counters["rate_limited"] += 1
            conn.send(_error(RateLimited(f"too many launches and resumes from {source}")))
            return
        try:
            plan = await self.broker.resume(pending, answer)
        except (NoResourcesError, BrokerUnavailable) as exc:
            _log.info(log.kv("resume-refused", sid=msg.session_id, error=exc.code, why=exc.message))
            conn.send(_error(exc))
            return
        self.counters["resumes"] += 1
        await self._wait_and_stitch(conn, plan)

    # --- host data legs ----------------------------------------------------------
    async def _serve_leg(self, conn: FramedConn, hello: control.LegHello) -> None:
        plan = self.broker.claim_leg(hello.conn_id)
        plan.leg.set_result(conn)
        # The client's task owns the relay from here; this task (which owns the
        # connection's lifetime) waits until that relay has ended.
        await plan.done

    # --- admin (local Unix socket) -------------------------------------------
    async def _admin_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    cmd = req.get("cmd")
                    if self.broker.cluster is not None and cmd in ("hosts", "sessions", "gateways"):
                        resp = await self.broker.cluster.admin(cmd)   # the whole cluster
                    elif self.broker.cluster is not None and cmd == "drain":
                        resp = {"ok": True, **await self.broker.cluster.set_drain(str(req["host"]),
                                                                                bool(req.get("on", True)))}
                    elif cmd == "gateways":
                        resp = {"ok": False, "error": "this gateway runs alone (no --redis): no cluster to list"}
                    elif cmd == "hosts":
                        resp = {"ok": True, "hosts": self.broker.host_table()}
                    elif cmd == "sessions":
                        resp = {"ok": True, "sessions": self.broker.session_table()}
                    elif cmd == "drain":
                        resp = {"ok": True, **self.broker.set_drain(str(req["host"]), bool(req.get("on", True)))}
                    elif cmd == "stats":
                        resp = {"ok": True, "counters": dict(self.counters)}
                    elif cmd == "revoke":   # {"cmd": "revoke", "jtis": [...], "hosts": [...]}
                        resp = {"ok": True, **self.broker.revoke(list(req.get("jtis", [])),
                                                                 list(req.get("hosts", [])))}
                    else:
                        resp = {"ok": False, "error": f"unknown command {cmd!r}"}
                except (ValueError, KeyError, TypeError, ShortpathError) as exc:
                    resp = {"ok": False, "error": str(exc)}
                writer.write((json.dumps(resp) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
