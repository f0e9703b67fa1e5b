"""Gateway: one TLS listener for hosts, clients and host data legs.

Every connection must complete TLS and send its first CONTROL message within
``handshake_timeout``; at most ``max_unauthenticated`` connections may be in
that state at once (the rest are closed at once), so half-open floods do not
starve real users. The first message decides the connection's role:

* ``register``     -> host control channel (heartbeats, dial orders)
* ``client-hello`` -> client: feed, launch, then the connection becomes the
                      client's relay leg
* ``leg-hello``    -> a host's data leg for one launch

A malformed, oversized or unknown frame closes that connection only, after an
``error`` message naming the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from .. import log
from ..auth import certs
from ..auth.tokens import TokenSigner
from ..broker.service import Broker
from ..config import GatewayConfig, state_path
from ..errors import AuthError, NoResourcesError, RateLimited, RemoteError, ShortpathError
from ..framed import FramedConn
from ..wire import control
from ..wire.frames import MAX_CONTROL_PAYLOAD, MAX_RELAY_PAYLOAD
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


def _error(exc: ShortpathError) -> control.Error:
    return control.Error(code=exc.code, message=exc.message, reason=getattr(exc, "reason", ""))


class _Link:
    """A host's control connection as the broker sees it."""

    def __init__(self, conn: FramedConn) -> None:
        self.conn = conn

    def send(self, msg: control.Message) -> None:
        if not self.conn.closing():
            self.conn.send(msg)


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
        self._unauth = 0
        self._conns: dict[asyncio.Task, FramedConn] = {}
        self.counters = {"accepted": 0, "refused_unauth_cap": 0, "handshake_timeouts": 0,
                         "protocol_errors": 0, "auth_failures": 0, "sessions_stitched": 0, "rate_limited": 0}
        self.port: int | None = None
        self.launch_limiter = RateLimiter(config.launch_rate, config.launch_burst)

    # --- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        _shrink_tls_read_buffer()
        ctx = certs.server_context(self.cert_path, self.key_path)
        self._server = await asyncio.start_server(
            self._accept, self.config.listen_host, self.config.listen_port, ssl=ctx,
            ssl_handshake_timeout=self.config.timing.handshake_timeout, limit=MAX_RELAY_PAYLOAD * 2,
            backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        admin_path = state_path(self.config.state_dir, "admin.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(admin_path)
        self._admin = await asyncio.start_unix_server(self._admin_conn, admin_path)
        os.chmod(admin_path, 0o600)
        _log.info(log.kv("listening", addr=f"{self.config.listen_host}:{self.port}", gateway=self.config.gateway_id))

    async def stop(self) -> None:
        self._stop.set()
        for srv in (self._server, self._admin):
            if srv is not None:
                srv.close()
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

    async def serve_forever(self) -> None:
        await self.start()
        await self._stop.wait()

    # --- accepting -------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = FramedConn(reader, writer, MAX_CONTROL_PAYLOAD, self.config.timing.relay_high_water)
        self._conns[task] = conn
        self.counters["accepted"] += 1
        try:
            if self._unauth >= self.config.max_unauthenticated:
                self.counters["refused_unauth_cap"] += 1
                conn.abort()
                return
            self._unauth += 1
            authed = False
            try:
                try:
                    first = await asyncio.wait_for(conn.read_control(), self.config.timing.handshake_timeout)
                except asyncio.TimeoutError:
                    self.counters["handshake_timeouts"] += 1
                    return
                if first is None:
                    return
                authed = True
                self._unauth -= 1
                if isinstance(first, control.RegisterHost):
                    await self._serve_host(conn, first)
                elif isinstance(first, control.ClientHello):
                    await self._serve_client(conn, first)
                elif isinstance(first, control.LegHello):
                    await self._serve_leg(conn, first)
                else:
                    raise RemoteError(f"{first.TYPE} is not a valid first message")
            finally:
                if not authed:
                    self._unauth -= 1
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
        conn.send(self.broker.register_host(hello, link))
        host_id = hello.host_id
        timeout = self.config.timing.heartbeat_interval * self.config.timing.heartbeat_misses
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(conn.read_control(), timeout)
                except asyncio.TimeoutError:
                    _log.info(log.kv("host-heartbeat-missed", host=host_id))
                    return
                if msg is None:
                    return
                if isinstance(msg, control.Heartbeat):
                    conn.send(self.broker.heartbeat(host_id, msg))
                elif isinstance(msg, control.DialResult):
                    self.broker.dial_result(host_id, msg)
                else:
                    raise RemoteError(f"{msg.TYPE} is not valid on a host control channel")
        finally:
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
                try:
                    plan = self.broker.plan_launch(claims, msg.resource)
                except (NoResourcesError, AuthError) as exc:
                    _log.info(log.kv("launch-refused", user=claims.sub, resource=msg.resource, error=exc.code,
                                     why=exc.message))
                    conn.send(_error(exc))
                    continue
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
            client.send(_error(err))
            return
        except asyncio.CancelledError:
            self.broker.launch_finished(plan, ok=False)
            plan.finish()
            raise
        self.broker.launch_finished(plan, ok=True)
        self.counters["sessions_stitched"] += 1
        client.send(control.Launched(session_id=plan.session_id, host_id=plan.host_id,
                                     host_fingerprint=plan.fingerprint, ticket=plan.ticket, policy=plan.policy))
        host.send(control.LegAccepted(session_id=plan.session_id))
        client.max_payload = host.max_payload = MAX_RELAY_PAYLOAD
        reason = "?"
        try:
            reason, _stats = await stitch(plan.session_id, client, host, self._stop)
        finally:
            self.broker.session_ended(plan.session_id, reason)
            plan.finish()

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
                    if cmd == "hosts":
                        resp = {"ok": True, "hosts": self.broker.host_table()}
                    elif cmd == "sessions":
                        resp = {"ok": True, "sessions": self.broker.session_table()}
                    elif cmd == "drain":
                        resp = {"ok": True, **self.broker.set_drain(str(req["host"]), bool(req.get("on", True)))}
                    elif cmd == "stats":
                        resp = {"ok": True, "counters": dict(self.counters)}
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
