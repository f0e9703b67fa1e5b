"""The host's side of a browser session (issue #16): a standard WebRTC peer.

A browser cannot speak our end-to-end TLS inside the relay, but its WebRTC
data channels are the same ICE + DTLS + SCTP stack as our UDP path. So for a
browser launch the host answers with aiortc's ``RTCPeerConnection`` (public
API only) and the gateway's relay carries only signalling:

    browser --WebSocket--> gateway (web.py) --data leg--> host (this module)

Leg conversation, after ``leg-accepted(client="browser")``; SIGNAL frames with
JSON objects (<- gateway to host, -> host to gateway)::

    <- {"type": "browser-hello", "ticket": T}   session ticket, checked like a
                                                native client's (single use,
                                                this session id, this host)
    <- {"type": "offer", "sdp": S}              -> {"type": "answer", "sdp": S}
    <- {"type": "candidate", "candidate": C, "sdpMid": M, "sdpMLineIndex": I}
       ("" candidate = the browser finished gathering)
    -> {"type": "bye", "reason": R}             the host ends the session
    <- CONTROL error(session-closed)            the browser went away

The answer carries every host candidate (aiortc gathers before it answers:
host addresses, and server-reflexive/relay ones from the broker's STUN/TURN)
and the fingerprint of a fresh DTLS certificate made for this session. The
browser checks DTLS against that fingerprint, so whoever carries the answer
(the gateway) is trusted for it: see docs/browser.md.

Channels, created by the browser, as in the native session:

* ``input``    ordered, reliable: text messages echoed back verbatim (the
               tests send N numbered messages and check order).
* ``graphics`` ordered, reliable: the host streams the synthetic desktop, a
               drawable test pattern (:func:`pattern_frame`) at ``FPS``.
* ``events``   unordered, no retransmission (the unreliable lane): mouse and
               key events, echoed back at once so the page shows their RTT.

Not done: the host's managed UDP 3390 listener is not offered to browsers
(it speaks ICE-lite + DTLS for our own ORTC stack; wiring aiortc's peer
connection onto that shared socket needs private names). Browsers reach the
host over host, server-reflexive and relay candidates.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Callable

from .. import log
from ..errors import AuthError, MalformedFrame, RemoteError
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


class BrowserSession:
    """One browser's WebRTC session on the host: the peer connection and the
    example application on its three channels."""

    def __init__(self, leg: FramedConn, session_id: str, policy: dict) -> None:
        self.leg = leg
        self.session_id = session_id
        self.policy = policy
        self.pc = None
        self.ended = asyncio.Event()
        self.end_reason = "client-gone"
        self.stats = {"frames_sent": 0, "frames_skipped": 0, "input_echoed": 0, "events_echoed": 0,
                      "remote_candidates": 0}
        self._tasks: set[asyncio.Task] = set()
        self._candidates = 0

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

    # --- set-up -----------------------------------------------------------------
    async def run(self, check_ticket: Callable[[str], None], timeout: float) -> None:
        hello = await self._read_signal(timeout)
        if hello is None:
            return
        if hello["type"] != "browser-hello" or not isinstance(hello.get("ticket"), str):
            raise RemoteError("expected browser-hello with a ticket")
        check_ticket(hello["ticket"])
        from aiortc import RTCConfiguration, RTCPeerConnection
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=rtc_ice_servers(self.policy)))
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("connectionstatechange", self._on_state)
        _log.info(log.kv("browser-session-start", sid=self.session_id))
        reader = asyncio.get_running_loop().create_task(self._signals())
        try:
            waiter = asyncio.get_running_loop().create_task(self.ended.wait())
            done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if reader in done and reader.exception() is not None:
                raise reader.exception()
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            self._signal({"type": "bye", "reason": self.end_reason})
            await self.close()

    async def _signals(self) -> None:
        from aiortc import RTCSessionDescription
        from aiortc.sdp import candidate_from_sdp
        answered = False
        while True:
            msg = await self._read_signal()
            if msg is None:
                self.ended.set()
                return
            kind = msg["type"]
            if kind == "offer" and not answered:
                sdp = msg.get("sdp")
                if not isinstance(sdp, str):
                    raise RemoteError("offer without sdp")
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                self._signal({"type": "answer", "sdp": self.pc.localDescription.sdp})
                answered = True
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
                await self.pc.addIceCandidate(cand)
                self.stats["remote_candidates"] += 1
            else:
                raise RemoteError(f"unexpected signal {kind!r} from the browser")

    def _on_state(self) -> None:
        state = self.pc.connectionState if self.pc is not None else "closed"
        _log.info(log.kv("browser-peer-state", sid=self.session_id, state=state))
        if state in ("failed", "closed"):
            self.end_reason = "ice-failed" if state == "failed" else self.end_reason
            self.ended.set()

    # --- the example application ---------------------------------------------------
    def _on_channel(self, channel) -> None:
        label = channel.label
        if label == "input":
            @channel.on("message")
            def _echo_input(message) -> None:
                channel.send(message)
                self.stats["input_echoed"] += 1
        elif label == "events":
            @channel.on("message")
            def _echo_event(message) -> None:
                channel.send(message)
                self.stats["events_echoed"] += 1
        elif label == "graphics":
            self._spawn(self._stream(channel))
        else:
            _log.info(log.kv("browser-unknown-channel", sid=self.session_id, label=label))
            channel.close()

    async def _stream(self, channel) -> None:
        opened = asyncio.Event()
        if channel.readyState == "open":
            opened.set()
        else:
            channel.on("open", opened.set)
        await opened.wait()
        start = time.monotonic()
        i = 0
        while channel.readyState == "open" and not self.ended.is_set():
            if channel.bufferedAmount > GRAPHICS_BACKLOG:
                self.stats["frames_skipped"] += 1
            else:
                channel.send(pattern_frame(i))
                self.stats["frames_sent"] += 1
            i += 1
            delay = start + i / FPS - time.monotonic()
            await asyncio.sleep(max(0.0, delay))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        _log.info(log.kv("browser-session-end", sid=self.session_id, reason=self.end_reason, **self.stats))


async def serve_browser(leg: FramedConn, dial: control.Dial, check_ticket: Callable[[str], None],
                        timeout: float) -> None:
    """Serve one browser session on ``leg`` until either side ends it.
    ``check_ticket(ticket)`` raises AuthError unless the ticket is good for
    this session (the agent's single-use ticket check)."""
    sess = BrowserSession(leg, dial.session_id, dial.policy)
    try:
        await sess.run(check_ticket, timeout)
    except AuthError:
        raise
    finally:
        if sess.pc is not None and not sess.ended.is_set():
            await sess.close()
