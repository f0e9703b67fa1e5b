"""HostAgent: the session host. It only ever dials out.

* Control channel: one TLS connection to the gateway, ``register`` with a
  host registration token and the host certificate's fingerprint, then a
  heartbeat every ``heartbeat_interval``. When the channel drops (or the
  gateway stops answering heartbeats) the agent reconnects with exponential
  backoff and full jitter, so a restarted gateway is not stampeded.
* For each ``dial`` order it opens a *new* outbound TLS connection (the data
  leg) carrying the one-time ``conn_id``, runs the end-to-end TLS server side
  with its own certificate inside the stitched relay, checks the client's
  session ticket (signed by the gateway for this very session id), and hands
  the :class:`Session` to the application's handler.

There is no listening socket anywhere in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from typing import Awaitable, Callable

from .. import __version__, log
from ..auth import certs
from ..auth import proof
from ..auth import resume as resume_tickets
from ..auth.tokens import ReplayCache, TokenVerifier, unverified_audience
from ..config import Timing, state_path
from ..errors import AuthError, RemoteError, ShortpathError, from_wire
from ..framed import FramedConn
from ..netaddr import parse_hostport
from ..session.session import Session, start_session
from ..transport.tcp_relay import InnerTls
from ..wire import control
from ..wire.frames import MAX_CONTROL_PAYLOAD, MAX_RELAY_PAYLOAD

_log = log.get("host")

Handler = Callable[[Session], Awaitable[None]]


class HostAgent:
    def __init__(self, gateway: str | tuple | list, token: str, host_id: str, handler: Handler, *,
                 state_dir: str = "./state", cafile: str | None = None, timing: Timing | None = None,
                 managed: tuple[str, int] | None = None, udp: dict | None = None,
                 signing_key: str | None = None) -> None:
        """``managed``: (ip, port) to listen on for managed Shortpath (UDP 3390 on
        the private network); None = no managed mode, and no socket at all.
        ``udp``: local UDP options (see client.connect).
        ``signing_key``: the gateway's ticket signing public key (hex), given out
        of band; the agent then refuses a gateway that announces another key
        instead of trusting whatever key the gateway sends (README, security)."""
        # One gateway, or a list (a gateway cluster, issue #14): when the control
        # channel is lost the agent moves on to the next one in the list.
        gws = list(gateway) if isinstance(gateway, list) else [gateway]
        if not gws:
            raise ValueError("at least one gateway")
        self.gateways = [parse_hostport(g) for g in gws]
        self.gateway = self.gateways[0]
        self.token = token
        self.host_id = host_id
        self.handler = handler
        self.timing = timing or Timing()
        self.cafile = cafile
        self.cert_path = state_path(state_dir, f"host-{host_id}.crt")
        self.key_path = state_path(state_dir, f"host-{host_id}.key")
        certs.load_or_create(self.cert_path, self.key_path, f"shortpath-host-{host_id}")
        self.fingerprint = certs.fingerprint_pem_file(self.cert_path)
        self._gw_ctx = certs.client_context(cafile)
        self._e2e_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._e2e_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self._e2e_ctx.load_cert_chain(self.cert_path, self.key_path)
        self.sessions: dict[str, Session] = {}
        self.registered = asyncio.Event()
        self.registrations = 0
        self.last_error: ShortpathError | None = None
        #: Set when the gateway refused the registration (an AuthError: wrong host id,
        #: not a host token, expired, bad signature...): retrying cannot help, so the
        #: agent stops trying; ``last_error`` says why.
        self.refused = asyncio.Event()
        #: Called as ``on_retry(error_or_None, delay_s)`` before each reconnect wait
        #: (None: the gateway closed the channel), so an owner can say it is retrying.
        self.on_retry: Callable[[BaseException | None, float], None] | None = None
        self._verifier: TokenVerifier | None = None
        self._gateway_id = ""
        self.signing_key = signing_key.strip().lower() if signing_key else None
        self._tickets = ReplayCache()    # session tickets are single use
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session_tasks: set[asyncio.Task] = set()
        self._control: FramedConn | None = None
        self.stats_path = state_path(state_dir, f"host-{host_id}.sock")
        self._stats_server: asyncio.AbstractServer | None = None
        self.managed = managed
        self.udp_options = udp or {}
        self.listener = None

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"host-{self.host_id}")

    async def stop(self, close_sessions: bool = True) -> None:
        self._stop.set()
        if self._control is not None:
            self._control.abort()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if close_sessions:
            await asyncio.gather(*(s.close("host-shutdown") for s in list(self.sessions.values())),
                                 return_exceptions=True)
            for t in list(self._session_tasks):
                t.cancel()
            await asyncio.gather(*self._session_tasks, return_exceptions=True)
            if self.listener is not None:
                await self.listener.close()
                self.listener = None
        if self._stats_server is not None:
            self._stats_server.close()
            self._stats_server = None

    def stats(self) -> dict:
        """What ``shortpath stats`` shows: every live session and the managed listener."""
        out = {"host_id": self.host_id, "registered": self.registered.is_set(), "sessions": []}
        for sess in list(self.sessions.values()):
            d = sess.info.to_dict()
            d["user"] = sess.peer
            out["sessions"].append(d)
        if self.listener is not None:
            out["managed_listener"] = {"address": list(self.listener.address), **self.listener.stats()}
        return out

    async def _stats_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import json
        try:
            await reader.readline()
            writer.write((json.dumps(self.stats(), default=str) + "\n").encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def run(self) -> None:
        import os
        if self._stats_server is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stats_path)
            self._stats_server = await asyncio.start_unix_server(self._stats_conn, self.stats_path)
            os.chmod(self.stats_path, 0o600)
        if self.managed is not None and self.listener is None:
            from ..transport.udp.managed import ManagedListener
            self.listener = await ManagedListener(host=self.managed[0], port=self.managed[1]).start()
            _log.info(log.kv("managed-listener", host=self.host_id, addr=f"{self.managed[0]}:{self.listener.address[1]}"))
        attempt = 0
        while not self._stop.is_set():
            failure: BaseException | None = None
            try:
                await self._control_channel()
                attempt = 0
            except AuthError as exc:
                self.last_error = exc
                # INFO: the agent stops here and ``refused``/``last_error`` tell its owner,
                # who reports it (the CLI prints one line and exits non-zero).
                _log.info(log.kv("registration-refused", host=self.host_id, error=exc.code, why=exc.message))
                self.refused.set()
                break
            except (OSError, ConnectionError, asyncio.TimeoutError, RemoteError, ssl.SSLError) as exc:
                failure = exc
                _log.info(log.kv("control-channel-lost", host=self.host_id, error=type(exc).__name__))
            finally:
                self.registered.clear()
                self._control = None
            if self._stop.is_set():
                break
            if len(self.gateways) > 1:   # try the next gateway of the cluster
                self.gateway = self.gateways[(self.gateways.index(self.gateway) + 1) % len(self.gateways)]
            cap = min(self.timing.reconnect_cap, self.timing.reconnect_base * (2 ** attempt))
            delay = random.uniform(0, cap)   # full jitter
            attempt += 1
            if self.on_retry is not None:
                self.on_retry(failure, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _open(self, target: tuple[str, int] | None = None) -> FramedConn:
        """A TLS connection to ``target`` (default: the gateway of the control channel),
        checked against the same pinned gateway certificate(s)."""
        host, port = target or self.gateway
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self._gw_ctx, limit=MAX_RELAY_PAYLOAD * 2),
            self.timing.handshake_timeout)
        return FramedConn(reader, writer, MAX_CONTROL_PAYLOAD, self.timing.relay_high_water)

    # --- control channel -------------------------------------------------------
    async def _control_channel(self) -> None:
        conn = await self._open()
        self._control = conn
        hb: asyncio.Task | None = None
        try:
            conn.send(control.RegisterHost(token=self.token, host_id=self.host_id,
                                           fingerprint=self.fingerprint, version=__version__))
            msg = await asyncio.wait_for(conn.read_control(), self.timing.handshake_timeout)
            if isinstance(msg, control.RegisterChallenge):
                # Prove we hold our certificate's key (auth/proof.py).
                signed = proof.challenge_message(unverified_audience(self.token), self.host_id,
                                                 self.fingerprint, msg.nonce)
                with open(self.cert_path) as f:
                    cert_pem = f.read()   # (must still be the certificate behind self.fingerprint)
                conn.send(control.RegisterProof(certificate=cert_pem,
                                                signature=proof.sign(proof.load_private_key(self.key_path), signed)))
                msg = await asyncio.wait_for(conn.read_control(), self.timing.handshake_timeout)
            if isinstance(msg, control.Error):
                raise from_wire(msg.code, msg.message, msg.reason)
            if not isinstance(msg, control.Registered):
                raise RemoteError(f"expected 'registered', got {msg.TYPE if msg else 'EOF'}")
            if self.signing_key is not None and msg.signing_key.lower() != self.signing_key:
                raise AuthError("the gateway announced a ticket signing key other than the one configured "
                                "for this host (--signing-key)")
            self._verifier = TokenVerifier.from_hex(msg.signing_key)
            self._gateway_id = msg.gateway_id
            interval = msg.heartbeat_interval
            self.registrations += 1
            self.last_error = None
            self.registered.set()
            _log.info(log.kv("registered", host=self.host_id, gateway=f"{self.gateway[0]}:{self.gateway[1]}"))
            hb = asyncio.get_running_loop().create_task(self._heartbeats(conn, interval))
            silence = interval * self.timing.heartbeat_misses
            while True:
                msg = await asyncio.wait_for(conn.read_control(), silence)
                if msg is None:
                    return
                if isinstance(msg, control.Dial):
                    task = asyncio.get_running_loop().create_task(self._serve_dial(conn, msg))
                    self._session_tasks.add(task)
                    task.add_done_callback(self._session_tasks.discard)
                elif isinstance(msg, control.HeartbeatAck):
                    pass
                elif isinstance(msg, control.TurnCredentials):   # re-minted while the session lives
                    sess = self.sessions.get(msg.session_id)
                    if sess is not None:
                        sess.update_turn_credentials(msg.username, msg.password)
                elif isinstance(msg, control.ResumeTicket):      # passed on to the client (#15)
                    sess = self.sessions.get(msg.session_id)
                    if sess is not None and not sess.closed:
                        with contextlib.suppress(ShortpathError):    # detached: the next one will do
                            sess.send_signal({"type": "resume-ticket", "ticket": msg.ticket})
                elif isinstance(msg, control.Error):
                    _log.warning(log.kv("gateway-error", host=self.host_id, error=msg.code, why=msg.message))
                else:
                    raise RemoteError(f"unexpected {msg.TYPE} on the control channel")
        finally:
            if hb is not None:
                hb.cancel()
            await conn.close()

    async def _heartbeats(self, conn: FramedConn, interval: float) -> None:
        seq = 0
        while not conn.closing():
            seq += 1
            conn.send(control.Heartbeat(seq=seq, sessions=len(self.sessions)))
            await asyncio.sleep(interval)

    # --- sessions --------------------------------------------------------------
    async def _serve_dial(self, control_conn: FramedConn, dial: control.Dial) -> None:
        if dial.resume:
            await self._serve_resume(control_conn, dial)
            return
        sid = dial.session_id
        session: Session | None = None
        leg: FramedConn | None = None
        end_reason = "host-app-done"
        marks = {"dial": time.monotonic()}     # set-up phases, see Session.timeline
        try:
            # In a gateway cluster the order names the gateway the client is on (issue #14).
            leg = await self._open(parse_hostport(dial.gateway) if dial.gateway else None)
            marks["leg_tls"] = time.monotonic()
            reply = await self._present_leg(leg, dial)
            marks["leg_accepted"] = time.monotonic()
            if reply.client == "browser":   # a browser over WebRTC: host/browser.py answers it
                from .browser import serve_browser
                await serve_browser(leg, dial, lambda ticket: self._use_session_ticket(ticket, sid),
                                    self.timing.handshake_timeout, self.listener)
                return
            tls = await self._inner_tls(leg)
            marks["inner_tls"] = time.monotonic()
            session, hello = start_session(tls, sid, "host", timing=self.timing, peer=dial.user,
                                           policy=dial.policy, marks=marks, wait_for="hello")
            msg = await asyncio.wait_for(hello, self.timing.handshake_timeout)
            session.timeline["hello"] = time.monotonic()
            self._use_session_ticket(str(msg.get("ticket", "")), sid)
            if msg.get("resume") is True and self.timing.resume_grace > 0:
                session.allow_resume()        # keep it through a lost relay leg (#15)
            session.enable_shortpath(self.udp_options, listener=self.listener)
            session.send_signal({"type": "hello-ok", "host_id": self.host_id})
            session.timeline["hello_ok"] = time.monotonic()
            self.sessions[sid] = session
            _log.info(log.kv("session-start", sid=sid, user=dial.user))
            await self.handler(session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, ShortpathError) else type(exc).__name__
            end_reason = code
            _log.info(log.kv("session-setup-failed" if sid not in self.sessions else "session-handler-ended",
                             sid=sid, error=code))
            if sid not in self.sessions and not control_conn.closing():
                control_conn.send(control.DialResult(conn_id=dial.conn_id, ok=False, reason=code))
        finally:
            self.sessions.pop(sid, None)
            if session is not None:
                if self._stop.is_set() and end_reason == "host-app-done":
                    # stop() is under way: an app that returned while the host was shutting
                    # down (its session torn down around it) ends with the host, and the client
                    # must hear that reason, whichever of the two closes comes first
                    end_reason = "host-shutdown"
                await session.close(end_reason)
            if leg is not None:
                await leg.close()   # also after a set-up failure: never leave the data leg open

    async def _present_leg(self, leg: FramedConn, dial: control.Dial) -> control.LegAccepted:
        """Present a freshly dialled data leg for ``dial``; the gateway must accept it for
        that session."""
        leg.send(control.LegHello(conn_id=dial.conn_id))
        reply = await asyncio.wait_for(leg.read_control(), self.timing.leg_timeout)
        if isinstance(reply, control.Error):
            raise from_wire(reply.code, reply.message, reply.reason)
        if not isinstance(reply, control.LegAccepted) or reply.session_id != dial.session_id:
            raise RemoteError("gateway did not accept the data leg")
        return reply

    async def _inner_tls(self, leg: FramedConn) -> InnerTls:
        """The end-to-end TLS with the client inside an accepted leg (from now on a relay)."""
        leg.max_payload = MAX_RELAY_PAYLOAD
        tls = InnerTls(leg, self._e2e_ctx, server_side=True)
        await asyncio.wait_for(tls.handshake(), self.timing.handshake_timeout)
        return tls

    def _use_session_ticket(self, ticket: str, sid: str) -> None:
        """The client's session ticket must be valid, for this session on this host, and
        unused (it is used up here)."""
        claims = self._verifier.verify(ticket, typ="session", audience=self._gateway_id, now=time.time())
        if claims.extra.get("sid") != sid or claims.extra.get("host") != self.host_id:
            raise AuthError("session ticket is for another session or host")
        self._tickets.use(claims, time.time())

    async def _serve_resume(self, control_conn: FramedConn, dial: control.Dial) -> None:
        """The broker checked a client's resume (#15): check it again here (the host's
        replay cache outlives any gateway restart), dial a new data leg, run the
        end-to-end TLS again and give the live session the leg as a new relay path."""
        sid = dial.session_id
        leg: FramedConn | None = None
        t0 = time.monotonic()
        try:
            session = self.sessions.get(sid)
            if session is None or session.closed:
                raise AuthError(f"no live session {sid} on this host")
            r = dial.resume
            resume_tickets.check(self._verifier, str(r.get("ticket", "")), gateway_id=self._gateway_id,
                                 session_id=sid, nonce=str(r.get("nonce", "")),
                                 signature=str(r.get("signature", "")), now=time.time(), replay=self._tickets,
                                 host_id=self.host_id)
            leg = await self._open(parse_hostport(dial.gateway) if dial.gateway else None)
            await self._present_leg(leg, dial)
            tls = await self._inner_tls(leg)
            path = session.attach_leg(tls)
            leg = None                       # the session owns it now
            _log.info(log.kv("session-resumed", sid=sid, path=path.path_id,
                             took_ms=round((time.monotonic() - t0) * 1000, 1)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, ShortpathError) else type(exc).__name__
            _log.info(log.kv("resume-refused", sid=sid, error=code,
                             why=exc.message[:120] if isinstance(exc, ShortpathError) else ""))
            if not control_conn.closing():
                control_conn.send(control.DialResult(conn_id=dial.conn_id, ok=False, reason=code))
        finally:
            if leg is not None:
                await leg.close()
