"""The browser client's front door on the gateway (issue #16).

A browser reaches the gateway on the same TLS port as hosts and native
clients. Dispatch is by ALPN: the gateway's TLS context offers ``http/1.1``;
browsers always offer it, native peers offer no ALPN at all, so
``selected_alpn_protocol() == "http/1.1"`` means a browser and ``None`` means
the native framed protocol (server.py calls :meth:`WebFront.wants` right after
the TLS handshake and hands such connections here).

HTTP itself is aiohttp's, never a parser of ours. The TLS stream that the
gateway accepted is pumped, after decryption, into one end of a
``socket.socketpair()`` whose other end aiohttp serves as an accepted socket
(``loop.connect_accepted_socket`` with the AppRunner's protocol factory). That
keeps the gateway's own accept path (admission caps, handshake timeout, TLS
buffer size) in charge of every connection, browsers included.

Routes::

    GET /            index.html        (static, Content-Security-Policy below)
    GET /app.js      the page's only script (no inline script anywhere)
    GET /style.css
    GET /ws          WebSocket: the browser's control channel

WebSocket conversation (JSON text messages; -> browser to gateway)::

    -> {"type": "hello", "token": T}           <- {"type": "welcome", "user": U} | error
    -> {"type": "feed"}                        <- {"type": "feed", "resources": [...]}
    -> {"type": "launch", "resource": R}       <- {"type": "launched", "session_id", "host_id",
                                                   "ice_servers": [RTCIceServer...]} | error
    -> {"type": "offer", "lane": L, "sdp": S}  (forwarded to the host; L is "managed" or
                                                "webrtc", one offer each: host/browser.py)
    -> {"type": "candidate", "candidate": C, "sdpMid": M, "sdpMLineIndex": I}   (forwarded)
    -> {"type": "select", "lane": L}           (forwarded: the page kept lane L)
    <- {"type": "answer", "lane": L, "sdp": S} (from the host: its ICE candidates and its
                                                DTLS fingerprint are in it)
    <- {"type": "error", "code", "message", "reason"}   then close

The token travels only as the first WebSocket message, inside TLS: never in a
URL, a header the page sets, or a log line (log lines name ``tok:<hash>``).
After ``launch`` the gateway relays signalling between the WebSocket and the
host's data leg for this session (host/browser.py speaks the leg side: SIGNAL
frames carrying the same JSON objects, plus a first ``browser-hello`` with the
session ticket). The media/data path is WebRTC between the browser and the
host; the gateway carries no session bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from .. import log
from ..auth.tokens import describe as token_summary
from ..errors import AuthError, BrokerUnavailable, NoResourcesError, RemoteError, ShortpathError
from ..framed import FramedConn
from ..wire import control
from ..wire.frames import FrameType, decode_json, encode_json

_log = log.get("gateway.web")

STATIC = Path(__file__).with_name("static")

#: The page's Content-Security-Policy: scripts, styles and connections from this
#: origin only (the WebSocket is same-origin wss:), no inline script or style,
#: no plugins, no framing, no form posts, no <base> tricks.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
          "/style.css": ("style.css", "text/css")}

#: Largest WebSocket message a browser may send (an SDP offer is a few KB).
MAX_WS_MESSAGE = 32 * 1024
#: Time a browser has to send its token after the WebSocket opens.
HELLO_TIMEOUT = 10.0
#: Candidates a browser may trickle for one session (ICE needs a handful).
MAX_CANDIDATES = 32

ALPN = "http/1.1"
#: The two ways a page may reach the host (host/browser.py): full ICE with
#: aiortc's peer connection, or the host's shared managed listener (ICE-lite).
LANES = ("webrtc", "managed")


def token_summary_safe(token: str) -> str:
    try:
        return token_summary(token)
    except Exception:   # a summary must never fail a log line
        return "tok:?"


def ice_servers(policy: dict) -> list[dict]:
    """The launch policy's STUN/TURN endpoints as a browser's RTCIceServer list.
    TURN is offered over UDP, TCP and (``turn_tls``) TLS, with the session's
    short-lived REST credential."""
    ice = (policy or {}).get("ice") or {}
    out: list[dict] = []
    if ice.get("stun"):
        out.append({"urls": [f"stun:{ice['stun']}"]})
    urls = []
    if ice.get("turn"):
        urls += [f"turn:{ice['turn']}?transport=udp", f"turn:{ice['turn']}?transport=tcp"]
    if ice.get("turn_tls"):
        urls.append(f"turns:{ice['turn_tls']}?transport=tcp")
    if urls and ice.get("username"):
        out.append({"urls": urls, "username": ice["username"], "credential": ice.get("password", "")})
    return out


class BrowserError(RemoteError):
    """A browser broke the WebSocket protocol (bad JSON, unknown type, too big)."""


def _parse(text: Any) -> dict:
    if not isinstance(text, str):
        raise BrowserError("expected a JSON text message")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BrowserError(f"not JSON: {exc.msg}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise BrowserError("expected a JSON object with a string 'type'")
    return obj


def _str(obj: dict, key: str, limit: int = 16 * 1024) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or len(v) > limit:
        raise BrowserError(f"'{obj.get('type')}' needs a string '{key}' (at most {limit} characters)")
    return v


def _candidate(obj: dict) -> dict:
    """A trickled candidate, checked field by field (null/"" candidate = end of candidates)."""
    cand = obj.get("candidate")
    if cand is not None and (not isinstance(cand, str) or len(cand) > 1024):
        raise BrowserError("'candidate' must be a string of at most 1024 characters or null")
    mid = obj.get("sdpMid")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
        raise BrowserError("'sdpMid' must be a short string or null")
    idx = obj.get("sdpMLineIndex")
    if idx is not None and (not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < 64):
        raise BrowserError("'sdpMLineIndex' must be a small integer or null")
    return {"type": "candidate", "candidate": cand or "", "sdpMid": mid, "sdpMLineIndex": idx}


def _error(exc: ShortpathError) -> dict:
    return {"type": "error", "code": exc.code, "message": exc.message, "reason": getattr(exc, "reason", "")}


class WebFront:
    """aiohttp app serving the page and the WebSocket, fed by the gateway's accept path."""

    def __init__(self, gateway) -> None:
        self.gw = gateway
        self._runner = None
        self.stopping = asyncio.Event()      # set by stop(): live sessions end with gateway-shutdown
        self._peers: dict[int, tuple] = {}      # aiohttp-side socket fd -> browser's address
        self._release: dict[int, Callable[[], None]] = {}
        self.counters = {"http_connections": 0, "ws_sessions": 0, "launches": 0, "ws_errors": 0}

    # --- lifecycle -----------------------------------------------------------
    async def start(self, tls_ctx) -> None:
        from aiohttp import web

        tls_ctx.set_alpn_protocols([ALPN])
        app = web.Application(client_max_size=MAX_WS_MESSAGE)
        app.on_response_prepare.append(self._harden)
        app.router.add_get("/ws", self._ws)
        for route in _FILES:
            app.router.add_get(route, self._static)
        # No access log: nothing secret is in a URL, but the page has no business there either.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     keepalive_timeout=15.0)
        await self._runner.setup()

    async def stop(self) -> None:
        self.stopping.set()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def wants(writer: asyncio.StreamWriter) -> bool:
        """True when the TLS handshake just done negotiated HTTP (a browser)."""
        obj = writer.get_extra_info("ssl_object")
        return obj is not None and obj.selected_alpn_protocol() == ALPN

    # --- one browser TLS connection -------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer,
                    release: Callable[[], None]) -> None:
        """Pump one decrypted browser connection through aiohttp until either side ends.
        ``release`` takes the connection off the pre-auth count (called once a
        WebSocket on it has shown a valid token)."""
        if self._runner is None or self._runner.server is None:
            return
        self.counters["http_connections"] += 1
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
        self._peers[fd] = peer
        self._release[fd] = release
        try:
            ours.setblocking(False)
            theirs.setblocking(False)
            await loop.connect_accepted_socket(self._runner.server, theirs)
            p_reader, p_writer = await asyncio.open_connection(sock=ours)
        except BaseException:
            self._peers.pop(fd, None)
            self._release.pop(fd, None)
            ours.close()
            theirs.close()
            raise

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(64 * 1024):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

        up = loop.create_task(pump(reader, p_writer))
        down = loop.create_task(pump(p_reader, writer))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            # One direction ended: give the other a moment to flush (a response in flight).
            await asyncio.wait({up, down}, timeout=1.0)
        finally:
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            p_writer.close()
            self._peers.pop(fd, None)
            self._release.pop(fd, None)

    def _peer_of(self, request) -> tuple[tuple | None, Callable[[], None] | None]:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        fd = sock.fileno() if sock is not None else -1
        return self._peers.get(fd), self._release.get(fd)

    # --- handlers --------------------------------------------------------------
    @staticmethod
    async def _harden(request, response) -> None:
        """Every response (404s too) gets the security headers and no Server banner."""
        response.headers.pop("Server", None)
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)

    async def _static(self, request):
        from aiohttp import web
        name, ctype = _FILES[request.path]
        body = (STATIC / name).read_bytes()
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=_HEADERS)

    async def _ws(self, request):
        from aiohttp import web
        # Same-origin only: a page from elsewhere cannot drive this WebSocket with a
        # user's browser (it would still need the token; this stops it earlier).
        origin = request.headers.get("Origin", "")
        if origin != f"https://{request.host}":
            return web.Response(status=403, text="cross-origin WebSocket refused\n", headers=_HEADERS)
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, heartbeat=20.0)
        await ws.prepare(request)
        peer, release = self._peer_of(request)
        self.counters["ws_sessions"] += 1
        try:
            await self._conversation(ws, peer, release)
        except ShortpathError as exc:
            if isinstance(exc, RemoteError):
                self.counters["ws_errors"] += 1
            _log.info(log.kv("browser-refused", peer=peer, error=exc.code, why=exc.message))
            with contextlib.suppress(Exception):
                await ws.send_json(_error(exc))
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            await ws.close()
        return ws

    async def _recv(self, ws, timeout: float | None = None) -> dict | None:
        from aiohttp import WSMsgType
        msg = await (asyncio.wait_for(ws.receive(), timeout) if timeout else ws.receive())
        if msg.type == WSMsgType.TEXT:
            return _parse(msg.data)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if msg.type == WSMsgType.ERROR:
            raise BrowserError("WebSocket error (message too large?)")
        raise BrowserError("expected JSON text messages")

    async def _conversation(self, ws, peer, release) -> None:
        broker = self.gw.broker
        first = await self._recv(ws, HELLO_TIMEOUT)
        if first is None:
            return
        if first["type"] != "hello":
            raise BrowserError("the first message must be {'type': 'hello', 'token': ...}")
        token = _str(first, "token", 8192)
        try:
            claims = broker.verify(token, "user")
        except AuthError:
            self.gw.counters["auth_failures"] += 1
            _log.info(log.kv("browser-auth-failed", peer=peer, token=token_summary_safe(token)))
            raise
        if release is not None:
            release()
        await ws.send_json({"type": "welcome", "user": claims.sub})
        while True:
            msg = await self._recv(ws)
            if msg is None:
                return
            if msg["type"] == "feed":
                await ws.send_json({"type": "feed", "resources": broker.feed(claims)})
            elif msg["type"] == "launch":
                resource = _str(msg, "resource", 256)
                claims = broker.verify(token, "user")       # expiry re-checked per launch
                source = str(peer[0]) if peer else "?"
                now = time.monotonic()
                if not self.gw.launch_limiter.allow(source, now):
                    self.gw.counters["rate_limited"] += 1
                    wait = self.gw.launch_limiter.retry_after(source, now)
                    await ws.send_json({"type": "error", "code": "rate-limited", "reason": "",
                                        "message": f"too many launches; retry in {max(wait, 0.1):.1f} s"})
                    continue
                try:
                    plan = await broker.launch(claims, resource)
                except (NoResourcesError, AuthError, BrokerUnavailable) as exc:
                    _log.info(log.kv("launch-refused", user=claims.sub, resource=resource, error=exc.code))
                    await ws.send_json(_error(exc))
                    continue
                self.counters["launches"] += 1
                await self._session(ws, plan)
                return
            else:
                raise BrowserError(f"'{msg['type']}' is not valid before a launch")

    async def _session(self, ws, plan) -> None:
        """Wait for the host's data leg, then relay signalling until either side ends."""
        broker = self.gw.broker
        try:
            leg: FramedConn = await asyncio.wait_for(asyncio.shield(plan.leg), self.gw.config.timing.leg_timeout)
        except (asyncio.TimeoutError, NoResourcesError) as exc:
            broker.launch_finished(plan, ok=False)
            plan.finish()
            err = exc if isinstance(exc, NoResourcesError) else NoResourcesError(
                "host-timeout", f"host {plan.host_id} did not dial its data leg in time")
            await ws.send_json(_error(err))
            return
        except asyncio.CancelledError:
            broker.launch_finished(plan, ok=False)
            plan.finish()
            raise
        broker.launch_finished(plan, ok=True)
        self.gw.counters["sessions_stitched"] += 1
        reason = "client-gone"
        try:
            leg.send(control.LegAccepted(session_id=plan.session_id, client="browser"))
            leg.write(encode_json(FrameType.SIGNAL, {"type": "browser-hello", "ticket": plan.ticket}))
            await ws.send_json({"type": "launched", "session_id": plan.session_id, "host_id": plan.host_id,
                                "ice_servers": ice_servers(plan.policy)})
            _log.info(log.kv("browser-session", sid=plan.session_id, host=plan.host_id, user=plan.user))
            reason = await self._relay(ws, leg)
        finally:
            broker.session_ended(plan.session_id, reason)
            plan.finish()

    async def _relay(self, ws, leg: FramedConn) -> str:
        loop = asyncio.get_running_loop()
        candidates = 0

        async def from_browser() -> str:
            nonlocal candidates
            offered: set[str] = set()
            while True:
                msg = await self._recv(ws)
                if msg is None:
                    return "client-gone"
                lane = msg.get("lane", "webrtc")
                if lane not in LANES:
                    raise BrowserError(f"unknown lane {lane!r}")
                if msg["type"] == "offer" and lane not in offered:
                    offered.add(lane)
                    out = {"type": "offer", "lane": lane, "sdp": _str(msg, "sdp", MAX_WS_MESSAGE)}
                elif msg["type"] == "select" and lane in offered:
                    out = {"type": "select", "lane": lane}
                elif msg["type"] == "candidate":
                    candidates += 1
                    if candidates > MAX_CANDIDATES:
                        raise BrowserError(f"more than {MAX_CANDIDATES} candidates")
                    out = _candidate(msg)
                else:
                    raise BrowserError(f"'{msg['type']}' is not valid in a session")
                leg.write(encode_json(FrameType.SIGNAL, out))

        async def from_host() -> str:
            while True:
                frame = await leg.read_frame()
                if frame is None:
                    return "host-gone"
                if frame.type == FrameType.CONTROL:
                    msg = control.parse(frame.payload)
                    if isinstance(msg, control.Error):
                        await ws.send_json({"type": "error", "code": msg.code, "message": msg.message,
                                            "reason": msg.reason})
                        return msg.reason or msg.code
                    raise RemoteError(f"unexpected {msg.TYPE} on a browser session's leg")
                if frame.type != FrameType.SIGNAL:
                    raise RemoteError(f"unexpected {frame.type.name} frame on a browser session's leg")
                obj = decode_json(frame.payload)
                if obj.get("type") not in ("answer", "candidate", "bye"):
                    raise RemoteError(f"unexpected signal {obj.get('type')!r} from the host")
                await ws.send_json(obj)
                if obj["type"] == "bye":
                    return str(obj.get("reason", "host-app-done"))

        a = loop.create_task(from_browser())
        b = loop.create_task(from_host())
        stop = loop.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait({a, b, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                with contextlib.suppress(Exception):
                    await ws.send_json({"type": "error", "code": "session-closed", "message": "gateway stopping",
                                        "reason": "gateway-shutdown"})
                return "gateway-shutdown"
            task = done.pop()
            exc = task.exception()
            if exc is not None:
                raise exc
            return task.result()
        finally:
            for t in (a, b, stop):
                t.cancel()
            await asyncio.gather(a, b, stop, return_exceptions=True)
            with contextlib.suppress(Exception):
                leg.send(control.Error(code="session-closed", message="browser session ended",
                                       reason="client-gone"))
            await leg.close()
