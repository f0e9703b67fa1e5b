"""The host's side of a browser session (issue #16): a standard WebRTC peer.

A browser cannot speak our end-to-end TLS inside the relay, but its WebRTC
data channels are the same ICE + DTLS + SCTP stack as our UDP path. So for a
browser launch the gateway's relay carries only signalling and the session
runs browser <-> host over one of two *lanes*:

* ``managed``: the host's shared UDP 3390 listener (transport/udp/managed.py),
  an ICE-lite responder. We answer with a hand-written SDP (``a=ice-lite``, one
  host candidate: the listener; DTLS server) and run aiortc's DTLS and SCTP
  transports (ORTC, public API plus the compat module's ``dtls_pipe``, as the
  native managed path does) over that one socket.
* ``webrtc``: aiortc's ``RTCPeerConnection`` (public API only), full ICE with
  host, server-reflexive and relay candidates from the broker's STUN/TURN.

The page offers both at once and keeps the first that opens, preferring
managed (app.js); it then says which with ``select`` and the host drops the
other. A host without a managed listener answers the managed offer with an
empty SDP.

    browser --WebSocket--> gateway (web.py) --data leg--> host (this module)

Leg conversation, after ``leg-accepted(client="browser")``; SIGNAL frames with
JSON objects (<- gateway to host, -> host to gateway)::

    <- {"type": "browser-hello", "ticket": T}   session ticket, checked like a
                                                native client's (single use,
                                                this session id, this host)
    <- {"type": "offer", "lane": L, "sdp": S}   -> {"type": "answer", "lane": L, "sdp": S}
                                                (managed: "" = no listener here)
    <- {"type": "candidate", "candidate": C, "sdpMid": M, "sdpMLineIndex": I}
       (webrtc lane; "" candidate = the browser finished gathering)
    <- {"type": "select", "lane": L}            the page kept lane L
    -> {"type": "bye", "reason": R}             the host ends the session
    <- CONTROL error(session-closed)            the browser went away

Each answer carries the fingerprint of a fresh DTLS certificate made for this
session (and, for webrtc, every host candidate: aiortc gathers before it
answers). The browser checks DTLS against that fingerprint, so whoever carries
the answer (the gateway) is trusted for it: see docs/browser.md. Once a lane
is up the session outlives the signalling (gateway restart), as native UDP
sessions do; it ends when the browser closes its channels or ICE fails.

Channels, created by the browser, as in the native session:

* ``input``    ordered, reliable: text messages echoed back verbatim (the
               tests send N numbered messages and check order).
* ``graphics`` ordered, reliable: the host streams the synthetic desktop, a
               drawable test pattern (:func:`pattern_frame`) at ``FPS``.
* ``events``   unordered, no retransmission (the unreliable lane): mouse and
               key events, echoed back at once so the page shows their RTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
import time
from typing import Callable

from .. import log
from ..errors import MalformedFrame, RemoteError
from ..framed import FramedConn
from ..wire import control
from ..wire.frames import FrameType, decode_json, encode_json

_log = log.get("host.browser")

#: Synthetic desktop size and rate: 128x72 RGBA = 36 KiB a frame, under the
#: 64 KiB data-channel message size aiortc announces, 10 frames/s.
WIDTH, HEIGHT, FPS = 128, 72, 10.0
#: Skip a frame rather than queue when this much is still unsent on the graphics channel.
GRAPHICS_BACKLOG = 256 * 1024
#: Remote candidates accepted per session.
MAX_CANDIDATES = 32
#: Our SCTP port in a managed answer (the usual WebRTC one).
SCTP_PORT = 5000
#: How long the managed lane waits for the browser's nominating check, then for
#: DTLS: off a managed network the listener is unreachable and the lane ends.
MANAGED_NOMINATION_TIMEOUT = 15.0

#: Frame header: b"F", frame index, send time (µs since the epoch), width, height.
FRAME_HDR = struct.Struct("!cIQHH")


def _base_rows(w: int, h: int) -> list[bytes]:
    rows = []
    for y in range(h):
        row = bytearray()
        for x in range(w):
            check = 200 if ((x // 16) + (y // 16)) % 2 else 40
            row += bytes(((x * 2) % 256, (y * 3) % 256, check, 255))
        rows.append(bytes(row))
    return rows


_ROWS: list[bytes] | None = None


def pattern_pixel(x: int, y: int, index: int, w: int = WIDTH) -> tuple[int, int, int, int]:
    """The RGBA value at (x, y) of frame ``index`` (app.js checks the same formula)."""
    sx = (x + 2 * index) % w
    check = 200 if ((sx // 16) + (y // 16)) % 2 else 40
    return ((sx * 2) % 256, (y * 3) % 256, check, 255)


def pattern_frame(index: int, w: int = WIDTH, h: int = HEIGHT) -> bytes:
    """Frame ``index`` of the synthetic desktop: a checkerboard with gradients
    that scrolls 2 pixels left per frame; header (FRAME_HDR) + RGBA rows."""
    global _ROWS
    if _ROWS is None or len(_ROWS) != h or len(_ROWS[0]) != 4 * w:
        _ROWS = _base_rows(w, h)
    shift = 4 * ((2 * index) % w)
    body = b"".join(r[shift:] + r[:shift] for r in _ROWS)
    return FRAME_HDR.pack(b"F", index, time.time_ns() // 1000, w, h) + body


def rtc_ice_servers(policy: dict) -> list:
    """The launch policy's STUN/TURN as aiortc RTCIceServer objects (always an
    explicit list: aiortc's default is a public STUN server)."""
    from aiortc import RTCIceServer
    ice = (policy or {}).get("ice") or {}
    out = []
    if ice.get("stun"):
        out.append(RTCIceServer(urls=f"stun:{ice['stun']}"))
    if ice.get("turn") and ice.get("username"):
        out.append(RTCIceServer(urls=f"turn:{ice['turn']}?transport=udp", username=ice["username"],
                                credential=ice.get("password", "")))
    return out


def parse_offer(sdp: str) -> dict:
    """What a managed answer needs from a browser's offer: its ICE credentials, its
    DTLS sha-256 fingerprint, the data-channel m-line's mid and SCTP port. Raises
    RemoteError when one is missing (we never guess)."""
    out: dict = {"sctp_port": 5000, "max_message_size": 65536}
    for raw in sdp.splitlines():
        line = raw.strip()
        key, _, value = line.partition(":")
        if key == "a=ice-ufrag":
            out.setdefault("ufrag", value)
        elif key == "a=ice-pwd":
            out.setdefault("pwd", value)
        elif key == "a=fingerprint" and value.lower().startswith("sha-256 "):
            out.setdefault("fingerprint", value.split(" ", 1)[1].strip())
        elif key == "a=mid":
            out.setdefault("mid", value)
        elif key == "a=sctp-port" and value.isdigit():
            out["sctp_port"] = int(value)
        elif key == "a=max-message-size" and value.isdigit():
            out["max_message_size"] = int(value)
    missing = [k for k in ("ufrag", "pwd", "fingerprint", "mid") if k not in out]
    if missing:
        raise RemoteError(f"offer lacks {', '.join(missing)}")
    if not (4 <= len(out["ufrag"]) <= 256 and 22 <= len(out["pwd"]) <= 256):
        raise RemoteError("offer's ICE credentials have an invalid length")
    return out


def managed_answer(offer: dict, ufrag: str, pwd: str, fingerprint: str, address: tuple[str, int]) -> str:
    """An SDP answer for an ICE-lite host on the shared managed listener: one
    data-channel m-line, one host candidate (the listener), DTLS server (passive)."""
    ip, port = address
    lines = [
        "v=0", f"o=- {secrets.randbelow(1 << 62)} 1 IN IP4 {ip}", "s=-", "t=0 0",
        f"a=group:BUNDLE {offer['mid']}", "a=ice-lite", "a=msid-semantic: WMS",
        f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel", f"c=IN IP4 {ip}",
        f"a=mid:{offer['mid']}", f"a=sctp-port:{SCTP_PORT}", "a=max-message-size:65536",
        f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:passive", f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host", "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"


class _Lane:
    """One way to the browser: ``webrtc`` (aiortc's RTCPeerConnection, full ICE) or
    ``managed`` (ICE-lite on the shared listener + aiortc's DTLS/SCTP)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ended = False
        self.connected = False


class BrowserSession:
    """One browser's session on the host: up to two lanes (the page offers both and
    keeps the one that opens first, managed preferred; see app.js) and the example
    application on the three channels of each."""

    def __init__(self, leg: FramedConn, session_id: str, policy: dict, listener=None) -> None:
        self.leg = leg
        self.session_id = session_id
        self.policy = policy
        self.listener = listener
        self.pc = None
        self.lanes: dict[str, _Lane] = {}
        self.ended = asyncio.Event()
        self.end_reason = "client-gone"
        self.stats = {"frames_sent": 0, "frames_skipped": 0, "input_echoed": 0, "events_echoed": 0,
                      "remote_candidates": 0}
        self._tasks: set[asyncio.Task] = set()
        self._closers: set[asyncio.Task] = set()
        self._candidates = 0
        self.closed = False
        self._managed = None          # transport.udp.managed.ManagedSession
        self._m_dtls = None
        self._m_sctp = None

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _signal(self, obj: dict) -> None:
        if not self.leg.closing():
            self.leg.write(encode_json(FrameType.SIGNAL, obj))

    async def _read_signal(self, timeout: float | None = None) -> dict | None:
        frame = await (asyncio.wait_for(self.leg.read_frame(), timeout) if timeout else self.leg.read_frame())
        if frame is None:
            return None
        if frame.type == FrameType.CONTROL:
            msg = control.parse(frame.payload)
            if isinstance(msg, control.Error):
                self.end_reason = msg.reason or msg.code
                return None
            raise RemoteError(f"unexpected {msg.TYPE} on a browser session's leg")
        if frame.type != FrameType.SIGNAL:
            raise RemoteError(f"unexpected {frame.type.name} frame on a browser session's leg")
        obj = decode_json(frame.payload)
        if not isinstance(obj.get("type"), str):
            raise MalformedFrame("signal without a type")
        return obj

    # --- lanes ------------------------------------------------------------------
    def _lane_ended(self, name: str, why: str) -> None:
        lane = self.lanes.get(name)
        if lane is None or lane.ended:
            return
        lane.ended = True
        _log.info(log.kv("browser-lane-end", sid=self.session_id, lane=name, why=why))
        if all(lane.ended for lane in self.lanes.values()):
            self.end_reason = why
            self.ended.set()          # close() takes everything down
            return
        closer = self._close_managed() if name == "managed" else self.pc.close()
        task = asyncio.get_running_loop().create_task(closer)   # not cancelled by close(): awaited
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _any_connected(self) -> bool:
        return any(lane.connected and not lane.ended for lane in self.lanes.values())

    # --- set-up -----------------------------------------------------------------
    async def run(self, check_ticket: Callable[[str], None], timeout: float) -> None:
        hello = await self._read_signal(timeout)
        if hello is None:
            return
        if hello["type"] != "browser-hello" or not isinstance(hello.get("ticket"), str):
            raise RemoteError("expected browser-hello with a ticket")
        check_ticket(hello["ticket"])
        _log.info(log.kv("browser-session-start", sid=self.session_id, managed=self.listener is not None))
        reader = asyncio.get_running_loop().create_task(self._signals(timeout))
        waiter = asyncio.get_running_loop().create_task(self.ended.wait())
        try:
            done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done and reader.exception() is not None:
                raise reader.exception()
            await waiter     # the signalling may end first; the session lives on (_signals)
        finally:
            waiter.cancel()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            self._signal({"type": "bye", "reason": self.end_reason})
            await self.close()

    async def _signals(self, timeout: float) -> None:
        """Answer the offers, add the browser's candidates (kept until the webrtc
        offer is in: a peer connection takes candidates only after its remote
        description), drop the lane the page did not select."""
        from aiortc.sdp import candidate_from_sdp
        answered = False
        early: list = []
        while True:
            try:
                msg = await self._read_signal(None if answered else timeout)
            except asyncio.TimeoutError:
                self.end_reason = "offer-timeout"
                self.ended.set()
                return
            if msg is None:
                # The leg is gone (browser left, or the gateway went away). Like a native
                # UDP session, a connected browser session outlives its control plane: it
                # ends when the browser closes its channels or ICE consent fails.
                if self._any_connected() and not self.ended.is_set():
                    _log.info(log.kv("browser-signalling-lost", sid=self.session_id, why=self.end_reason))
                else:
                    self.ended.set()
                return
            kind = msg["type"]
            lane = msg.get("lane", "webrtc")
            if kind == "offer" and lane in ("webrtc", "managed") and lane not in self.lanes:
                sdp = msg.get("sdp")
                if not isinstance(sdp, str):
                    raise RemoteError("offer without sdp")
                if lane == "managed":
                    self._signal({"type": "answer", "lane": "managed", "sdp": await self._answer_managed(sdp)})
                    continue
                await self._answer_webrtc(sdp)
                answered = True
                for cand in early:
                    await self.pc.addIceCandidate(cand)
            elif kind == "select" and lane in self.lanes:
                for other in list(self.lanes):
                    if other != lane:
                        self._lane_ended(other, "not-selected")
            elif kind == "candidate":
                text = msg.get("candidate") or ""
                if not isinstance(text, str):
                    raise RemoteError("candidate must be a string")
                if not text:
                    continue      # end of the browser's candidates
                self._candidates += 1
                if self._candidates > MAX_CANDIDATES:
                    raise RemoteError(f"more than {MAX_CANDIDATES} remote candidates")
                if text.startswith("candidate:"):
                    text = text[len("candidate:"):]
                try:
                    cand = candidate_from_sdp(text)
                except (ValueError, IndexError) as exc:
                    raise RemoteError(f"malformed candidate: {exc}") from None
                if cand.type == "host" and cand.ip.endswith(".local"):
                    continue      # an mDNS name: we do not resolve those
                cand.sdpMid = msg.get("sdpMid") if isinstance(msg.get("sdpMid"), str) else None
                idx = msg.get("sdpMLineIndex")
                cand.sdpMLineIndex = idx if isinstance(idx, int) else None
                if answered:
                    await self.pc.addIceCandidate(cand)
                else:
                    early.append(cand)
                self.stats["remote_candidates"] += 1
            else:
                raise RemoteError(f"unexpected signal {kind!r} (lane {lane!r}) from the browser")

    async def _answer_webrtc(self, sdp: str) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        self.lanes["webrtc"] = _Lane("webrtc")
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=rtc_ice_servers(self.policy)))
        self.pc.on("datachannel", lambda ch: self._on_channel(ch, "webrtc"))
        self.pc.on("connectionstatechange", self._on_state)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if self.pc.sctp is None:
            raise RemoteError("the browser's webrtc offer has no data channel section")
        # resend our check when Chromium's arrives; send on the pair it nominated last; keep
        # checking pairs better than the selected one, so Chromium can still move to them
        # (see there)
        from ..transport.udp import _aioice_compat, _aiortc_compat
        ice = _aiortc_compat.ice_connection(self.pc.sctp.transport.transport)
        _aioice_compat.fix_incoming_checks(ice)
        _aioice_compat.check_better_pairs_after_completion(ice)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._signal({"type": "answer", "lane": "webrtc", "sdp": self.pc.localDescription.sdp})

    async def _answer_managed(self, sdp: str) -> str:
        """The managed lane's answer, or "" when this host has no managed listener."""
        if self.listener is None or self.listener.address is None:
            return ""
        from aiortc import RTCCertificate
        offer = parse_offer(sdp)
        ufrag, pwd = secrets.token_hex(4), secrets.token_hex(16)
        self._managed = self.listener.register(ufrag, pwd)
        self._managed.set_remote(offer["ufrag"], offer["pwd"])
        cert = RTCCertificate.generateCertificate()
        ours = next(f.value for f in cert.getFingerprints() if f.algorithm == "sha-256")
        address = self.listener.advertised_addresses()[0]
        self.lanes["managed"] = _Lane("managed")
        self._spawn(self._run_managed(cert, offer))
        return managed_answer(offer, ufrag, pwd, ours, address)

    async def _run_managed(self, cert, offer: dict) -> None:
        from aiortc import (RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport, RTCSctpCapabilities,
                            RTCSctpTransport)
        from ..transport.udp import _aiortc_compat as compat
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(self._managed.nominated), MANAGED_NOMINATION_TIMEOUT)
            t_nom = time.monotonic()
            pipe = compat.dtls_pipe(self._managed.recv, self._managed.send, "controlled")
            self._m_dtls = dtls = RTCDtlsTransport(pipe, [cert])
            compat.set_dtls_role(dtls, "server")
            await asyncio.wait_for(dtls.start(RTCDtlsParameters(
                fingerprints=[RTCDtlsFingerprint(algorithm="sha-256", value=offer["fingerprint"])])),
                MANAGED_NOMINATION_TIMEOUT)
            self._m_sctp = sctp = RTCSctpTransport(dtls, port=SCTP_PORT)
            sctp.on("datachannel", lambda ch: self._on_channel(ch, "managed"))
            await sctp.start(RTCSctpCapabilities(maxMessageSize=offer["max_message_size"]),
                             remotePort=offer["sctp_port"])
            self.lanes["managed"].connected = True
            t_up = time.monotonic()
            _log.info(log.kv("browser-lane-up", sid=self.session_id, lane="managed", peer=self._managed.remote_addr,
                             nominated_ms=round((t_nom - t0) * 1000), up_ms=round((t_up - t0) * 1000)))
        except (asyncio.TimeoutError, ConnectionError) as exc:
            self._lane_ended("managed", "managed-unreached" if isinstance(exc, asyncio.TimeoutError)
                             else "managed-closed")
        except Exception as exc:    # DTLS refused (wrong fingerprint), SCTP failure
            self._lane_ended("managed", f"managed-failed:{type(exc).__name__}")

    async def _close_managed(self) -> None:
        for part in (self._m_sctp, self._m_dtls):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        self._m_sctp = self._m_dtls = None
        if self._managed is not None:
            self._managed.close()

    def _on_state(self) -> None:
        state = self.pc.connectionState if self.pc is not None else "closed"
        _log.info(log.kv("browser-peer-state", sid=self.session_id, state=state))
        if state == "connected" and "webrtc" in self.lanes:
            self.lanes["webrtc"].connected = True
        if state in ("failed", "closed"):
            self._lane_ended("webrtc", "ice-failed" if state == "failed" else "client-gone")

    # --- the example application ---------------------------------------------------
    def _on_channel(self, channel, lane: str) -> None:
        label = channel.label
        if label == "input":
            @channel.on("message")
            def _echo_input(message) -> None:
                channel.send(message)
                self.stats["input_echoed"] += 1

            @channel.on("close")
            def _input_closed() -> None:     # the browser closed this lane
                self._lane_ended(lane, "client-gone")
        elif label == "events":
            @channel.on("message")
            def _echo_event(message) -> None:
                channel.send(message)
                self.stats["events_echoed"] += 1
        elif label == "graphics":
            self._spawn(self._stream(channel, lane))
        else:
            _log.info(log.kv("browser-unknown-channel", sid=self.session_id, label=label))
            channel.close()

    async def _stream(self, channel, lane: str) -> None:
        opened = asyncio.Event()
        if channel.readyState == "open":
            opened.set()
        else:
            channel.on("open", opened.set)
        await opened.wait()
        start = time.monotonic()
        i = 0
        while channel.readyState == "open" and not self.lanes[lane].ended and not self.ended.is_set():
            if channel.bufferedAmount > GRAPHICS_BACKLOG:
                self.stats["frames_skipped"] += 1
            else:
                channel.send(pattern_frame(i))
                self.stats["frames_sent"] += 1
            i += 1
            delay = start + i / FPS - time.monotonic()
            await asyncio.sleep(max(0.0, delay))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._closers:
            await asyncio.wait(list(self._closers), timeout=5.0)
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        await self._close_managed()
        _log.info(log.kv("browser-session-end", sid=self.session_id, reason=self.end_reason,
                         lanes=",".join(f"{n}:{'up' if l.connected else 'never'}" for n, l in self.lanes.items()),
                         **self.stats))


async def serve_browser(leg: FramedConn, dial: control.Dial, check_ticket: Callable[[str], None],
                        timeout: float, listener=None) -> None:
    """Serve one browser session on ``leg`` until either side ends it.
    ``check_ticket(ticket)`` raises AuthError unless the ticket is good for
    this session (the agent's single-use ticket check)."""
    sess = BrowserSession(leg, dial.session_id, dial.policy, listener)
    try:
        await sess.run(check_ticket, timeout)
    finally:
        await sess.close()     # (once: run() closes it on its way out too)
