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
          f"event_rtt_p50_ms={ev[len(ev) // 2]:.1f} ice_rtt_ms={s['rttMs']}")


pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

ARTIFACTS = Path(os.environ.get("SHORTPATH_ARTIFACTS", tempfile.gettempdir())) / "shortpath-browser"


async def test_browser_page_connects_and_echoes_in_order(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        token = stack.user_token()
        url = f"https://127.0.0.1:{stack.gateway.port}/"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "browser_loopback.png"
        async with open_browser(stack.cafile) as ctx:
            result = await run_page(ctx, url, token, n=200, screenshot=shot)
        report("loopback", result)
        s = result["state"]
        # the page's Content-Security-Policy: own-origin script only, nothing inline
        csp = result["headers"]["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        # a WebRTC path straight to the host (no relay on one machine), in the page's words too
        assert s["path"] == "direct" and result["shown_path"].startswith("direct")
        assert s["local"]["type"] in ("host", "prflx", "srflx") and s["remote"]["type"] in ("host", "prflx", "srflx")
        # N numbered messages echoed, all, in order; frames drawn and each checked
        assert result["echo"] == {**result["echo"], "sent": 200, "received": 200, "inOrder": True}
        assert s["frames"] >= 5 and s["badFrames"] == 0 and s["firstFrameMs"] > 0
        assert s["eventRtts"] and all(r > 0 for r in s["eventRtts"])
        assert shot.stat().st_size > 5000
        # the token went over the WebSocket only: not in the URL, not in any log line
        assert token not in result["url"]
        assert not [r for r in caplog.records if token in r.getMessage()]
        # the broker saw one session, and forgets it once the browser has gone
        assert stack.gateway.web.counters["launches"] == 1
        for _ in range(250):
            if not stack.gateway.broker.sessions:
                break
            await asyncio.sleep(0.02)
        assert stack.gateway.broker.sessions == {}
        assert any("browser-session-end" in r.getMessage() for r in caplog.records)


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
