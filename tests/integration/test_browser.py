"""The browser client in a real Chromium (issue #16), on this machine.

Debian's ``chromium`` (scripts/setup.sh test installs it), driven headless by
Playwright for Python with the system executable: Playwright never downloads a
browser here. The gateway's self-signed certificate is trusted by pinning its
public key (``--ignore-certificate-errors-spki-list``), the way a deployment
would install its CA: any other certificate still fails.

The helpers here (``BROWSER_ARGS``, :func:`open_browser`, :func:`run_page`)
are shared with tests/lab/test_browser_lab.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import ssl
import tempfile
from pathlib import Path

import pytest

from shortpath.demo import LocalStack

from tests.conftest import FAST

CHROMIUM = os.environ.get("SHORTPATH_CHROMIUM", "/usr/bin/chromium")

#: Flags for every browser test: headless, no sandbox (we run as root in the lab),
#: no background traffic of its own (component updates, sync, QUIC probes), and
#: real IP addresses in host candidates instead of mDNS names.
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def skip_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no {CHROMIUM} (Debian package chromium; scripts/setup.sh test installs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Python package playwright missing (pip install -e '.[test]')"
    return None


def spki_pin(cert_path: str) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: Chromium's pin format."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextlib.asynccontextmanager
async def open_browser(cert_path: str, extra_args=()):
    """A fresh headless Chromium profile that trusts only the pinned gateway key."""
    from playwright.async_api import async_playwright
    profile = tempfile.mkdtemp(prefix="shortpath-chromium-")
    try:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True,
                args=BROWSER_ARGS + [f"--ignore-certificate-errors-spki-list={spki_pin(cert_path)}",
                                     *extra_args],
                viewport={"width": 1000, "height": 760})
            try:
                yield ctx
            finally:
                await ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def run_page(ctx, url: str, token: str, n: int = 200, screenshot: str | Path | None = None,
                   timeout: float = 30.0) -> dict:
    """Load the page, sign in, connect to the first resource, wait for the path and
    the first frame, echo ``n`` numbered messages, send mouse events; return what
    the page measured (its ``window.shortpath.state`` plus the echo result)."""
    page = ctx.pages[0] if ctx.pages else await ctx.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    resp = await page.goto(url)
    headers = await resp.all_headers()
    await page.fill("#token", token)
    await page.click("#signin-btn")
    await page.wait_for_selector("#feed:not([hidden])", timeout=timeout * 1000)
    await page.click("#connect-btn")
    await page.wait_for_function(
        "() => { const s = window.shortpath.state; return s.error || (s.phase === 'connected' && s.path && s.frames > 0); }",
        timeout=timeout * 1000)
    state = await page.evaluate("() => window.shortpath.state")
    if state.get("error"):
        raise AssertionError(f"page error: {state['error']}; console: {console[-10:]}")
    echo = await page.evaluate(f"() => window.shortpath.echo({int(n)})")
    box = await page.locator("#screen").bounding_box()
    for i in range(20):
        await page.mouse.move(box["x"] + 10 + 10 * i, box["y"] + 20 + 5 * i)
    await page.wait_for_function("() => window.shortpath.state.eventRtts.length > 0", timeout=timeout * 1000)
    await page.wait_for_function("() => window.shortpath.state.frames >= 5", timeout=timeout * 1000)
    state = await page.evaluate("() => window.shortpath.state")
    shown = await page.text_content("#path")
    if screenshot is not None:
        await page.screenshot(path=str(screenshot))
    return {"state": state, "echo": echo, "headers": headers, "url": page.url, "shown_path": shown,
            "console": console}


def report(label: str, result: dict) -> None:
    """One line per run for the test log (time to first frame is the figure the issue asks for)."""
    s = result["state"]
    ev = sorted(s["eventRtts"])
    print(f"BROWSER {label}: path={s['path']} pair={s['pair']} ttff_ms={s['firstFrameMs']:.0f} "
          f"frames={s['frames']} bad={s['badFrames']} echo={result['echo']['received']}/{result['echo']['sent']} "
          f"in_order={result['echo']['inOrder']} echo_ms={result['echo']['ms']:.0f} "
          f"event_rtt_p50_ms={ev[len(ev) // 2]:.1f} ice_rtt_ms={s['rttMs']} marks={s.get('marks')}")


needs_browser = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

ARTIFACTS = Path(os.environ.get("SHORTPATH_ARTIFACTS", tempfile.gettempdir())) / "shortpath-browser"


@needs_browser
@pytest.mark.parametrize("managed", [True, False], ids=["managed-listener", "no-listener"])
async def test_browser_page_connects_and_echoes_in_order(tmp_path, caplog, managed):
    caplog.set_level(logging.DEBUG)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=managed) as stack:
        token = stack.user_token()
        url = f"https://127.0.0.1:{stack.gateway.port}/"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"browser_loopback_{'managed' if managed else 'webrtc'}.png"
        async with open_browser(stack.cafile) as ctx:
            result = await run_page(ctx, url, token, n=200, screenshot=shot)
            await ctx.pages[0].click("#disconnect-btn")     # the page closes its peer connection
            for _ in range(250):
                if any("browser-session-end" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
        report(f"loopback ({'managed listener' if managed else 'no managed listener'})", result)
        s = result["state"]
        # the page's Content-Security-Policy: own-origin script only, nothing inline
        csp = result["headers"]["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        if managed:
            # the managed lane won (preferred, and reachable here): Chromium's ICE checked the host's
            # shared ICE-lite listener and its DTLS/SCTP ran over that one socket
            port = stack.hosts[0].listener.address[1]
            assert s["path"] == "managed" and result["shown_path"].startswith("managed"), s["pair"]
            assert s["lane"] == "managed" and s["remote"]["port"] == port and s["remote"]["type"] == "host"
        else:
            # no listener: the host declines the managed lane, the page keeps the webrtc one
            assert s["path"] == "direct" and result["shown_path"].startswith("direct"), s["pair"]
            assert s["lane"] == "webrtc" and s["remote"]["type"] in ("host", "prflx", "srflx")
        # N numbered messages echoed, all, in order; frames drawn and each checked
        assert result["echo"] == {**result["echo"], "sent": 200, "received": 200, "inOrder": True}
        assert s["frames"] >= 5 and s["badFrames"] == 0 and s["firstFrameMs"] > 0
        assert s["eventRtts"] and all(r > 0 for r in s["eventRtts"])
        assert shot.stat().st_size > 5000
        # the token went over the WebSocket only: not in the URL, not in any log line
        assert token not in result["url"]
        # our own page runs under its CSP without a single violation report
        assert not [m for m in result["console"] if "Content Security Policy" in m], result["console"]
        assert not [r for r in caplog.records if token in r.getMessage()]
        # the broker saw one session, and forgets it once the browser has gone
        assert stack.gateway.web.counters["launches"] == 1
        for _ in range(250):
            if not stack.gateway.broker.sessions:
                break
            await asyncio.sleep(0.02)
        assert stack.gateway.broker.sessions == {}
        assert any("browser-session-end" in r.getMessage() for r in caplog.records)


@needs_browser
async def test_browser_session_outlives_the_gateway(tmp_path, caplog):
    """The control plane goes away (gateway stopped) and the WebRTC session goes on,
    as native UDP sessions do; closing the page then ends the host's side."""
    caplog.set_level(logging.INFO)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        url = f"https://127.0.0.1:{stack.gateway.port}/"
        async with open_browser(stack.cafile) as ctx:
            await run_page(ctx, url, stack.user_token(), n=20)
            await stack.gateway.stop()
            page = ctx.pages[0]
            echo = await page.evaluate("() => window.shortpath.echo(100)")
            assert echo["received"] == 100 and echo["inOrder"], echo
            assert any("browser-signalling-lost" in r.getMessage() for r in caplog.records)
            assert not any("browser-session-end" in r.getMessage() for r in caplog.records)
            await page.click("#disconnect-btn")
            for _ in range(250):
                if any("browser-session-end" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
        ends = [r.getMessage() for r in caplog.records if "browser-session-end" in r.getMessage()]
        assert ends and "reason=client-gone" in ends[0], ends


async def _ws_exchange(port: int, cafile: str, messages: list, origin: str | None = None, expect: int = 99):
    """Send ``messages``, collect answers until the gateway closes or ``expect`` came."""
    import aiohttp
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["http/1.1"])   # as every browser does: the gateway dispatches on it
    headers = {"Origin": origin if origin is not None else f"https://127.0.0.1:{port}"}
    out = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=ctx, headers=headers) as ws:
            for m in messages:
                await ws.send_str(m if isinstance(m, str) else json.dumps(m))
            while len(out) < expect:
                msg = await asyncio.wait_for(ws.receive(), 5)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                out.append(json.loads(msg.data))
    return out


async def test_websocket_refuses_bad_tokens_and_bad_messages(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        port, ca = stack.gateway.port, stack.cafile
        forged = stack.user_token()[:-4] + "AAAA"
        got = await _ws_exchange(port, ca, [{"type": "hello", "token": forged}])
        assert got[-1]["type"] == "error" and got[-1]["code"] in ("bad-signature", "auth")
        assert not [r for r in caplog.records if forged in r.getMessage()]
        # refusals name the browser's real address (the socket pair hides it from aiohttp)
        assert [r for r in caplog.records if "browser-refused" in r.getMessage() and "127.0.0.1" in r.getMessage()]
        got = await _ws_exchange(port, ca, ["not json"])
        assert got[-1]["type"] == "error" and got[-1]["code"] == "protocol"
        got = await _ws_exchange(port, ca, [{"type": "launch", "resource": "desktop"}])
        assert got[-1]["type"] == "error"
        # a valid token, then a resource the user does not have
        got = await _ws_exchange(port, ca, [{"type": "hello", "token": stack.user_token()},
                                            {"type": "launch", "resource": "nope"}, {"type": "feed"}],
                                 expect=3)
        assert got[0]["type"] == "welcome" and got[1]["type"] == "error" and got[2]["type"] == "feed"
        # a page from another origin cannot open the control channel
        import aiohttp
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await _ws_exchange(port, ca, [{"type": "feed"}], origin="https://evil.example")
        # native clients still work on the same port
        async with await stack.connect() as s:
            await s.send(b"echo")
            await s.send(b"x")
            assert await s.recv() == b"x"


def test_pattern_frames_match_the_pixel_formula_the_page_checks():
    from shortpath.host.browser import FRAME_HDR, HEIGHT, WIDTH, pattern_frame, pattern_pixel
    for index in (0, 1, 63, 64, 1000):
        frame = pattern_frame(index)
        kind, i, _sent, w, h = FRAME_HDR.unpack_from(frame)
        assert (kind, i, w, h) == (b"F", index, WIDTH, HEIGHT)
        body = frame[FRAME_HDR.size:]
        assert len(body) == 4 * w * h
        for x, y in ((0, 0), (w - 1, h - 1), (w // 2, h // 2), (17, 33)):
            at = 4 * (y * w + x)
            assert tuple(body[at:at + 4]) == pattern_pixel(x, y, index)
    assert pattern_frame(1)[FRAME_HDR.size:] != pattern_frame(2)[FRAME_HDR.size:]   # it moves
    assert len(pattern_frame(0)) < 64 * 1024                                       # one SCTP message


def test_ice_servers_for_the_browser_come_from_the_launch_policy():
    from shortpath.gateway.web import ice_servers
    policy = {"ice": {"stun": "198.18.0.20:3478", "turn": "198.18.0.20:3478", "turn_tls": "198.18.0.20:443",
                      "username": "1700000000:sid", "password": "pw"}}
    assert ice_servers(policy) == [
        {"urls": ["stun:198.18.0.20:3478"]},
        {"urls": ["turn:198.18.0.20:3478?transport=udp", "turn:198.18.0.20:3478?transport=tcp",
                  "turns:198.18.0.20:443?transport=tcp"], "username": "1700000000:sid", "credential": "pw"}]
    assert ice_servers({"ice": {"stun": "s:1"}}) == [{"urls": ["stun:s:1"]}]
    assert ice_servers({}) == []


def test_browser_messages_are_checked_field_by_field():
    from shortpath.errors import RemoteError
    from shortpath.gateway.web import _candidate, _parse
    for bad in ("[]", "{}", '{"type": 3}', "nope", b"{}"):
        with pytest.raises(RemoteError):
            _parse(bad)
    ok = _candidate({"type": "candidate", "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host",
                     "sdpMid": "0", "sdpMLineIndex": 0})
    assert ok["sdpMid"] == "0" and ok["sdpMLineIndex"] == 0
    assert _candidate({"type": "candidate", "candidate": None})["candidate"] == ""   # end of candidates
    for bad in ({"candidate": 5}, {"candidate": "x" * 2000}, {"candidate": "", "sdpMLineIndex": True},
                {"candidate": "", "sdpMLineIndex": 99}, {"candidate": "", "sdpMid": ["0"]}):
        with pytest.raises(RemoteError):
            _candidate({"type": "candidate", **bad})


OFFER = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
         "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
         "a=ice-ufrag:AbCd\r\na=ice-pwd:0123456789abcdefghijklmn\r\n"
         "a=fingerprint:sha-256 AA:BB:CC\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n"
         "a=max-message-size:262144\r\n")


def test_managed_answer_is_an_ice_lite_answer_for_the_offer():
    from shortpath.host.browser import managed_answer, parse_offer
    offer = parse_offer(OFFER)
    assert offer == {"ufrag": "AbCd", "pwd": "0123456789abcdefghijklmn", "fingerprint": "AA:BB:CC",
                     "mid": "0", "sctp_port": 5000, "max_message_size": 262144}
    sdp = managed_answer(offer, "wxyz", "p" * 32, "11:22", ("10.2.0.10", 3390))
    lines = sdp.split("\r\n")
    for want in ("a=ice-lite", "a=group:BUNDLE 0", "a=mid:0", "a=ice-ufrag:wxyz", f"a=ice-pwd:{'p' * 32}",
                 "a=fingerprint:sha-256 11:22", "a=setup:passive",
                 "a=candidate:1 1 udp 2130706431 10.2.0.10 3390 typ host",
                 "m=application 3390 UDP/DTLS/SCTP webrtc-datachannel"):
        assert want in lines, want


def test_offers_missing_what_the_managed_answer_needs_are_refused():
    from shortpath.errors import RemoteError
    from shortpath.host.browser import parse_offer
    for drop in ("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=mid"):
        bad = "\r\n".join(l for l in OFFER.split("\r\n") if not l.startswith(drop))
        with pytest.raises(RemoteError):
            parse_offer(bad)
    with pytest.raises(RemoteError):
        parse_offer(OFFER.replace("a=ice-pwd:0123456789abcdefghijklmn", "a=ice-pwd:short"))
