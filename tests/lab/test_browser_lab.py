"""The browser client in the netns lab (issue #16): a real Chromium inside the client
namespace, the real gateway and host processes (netns_lab.scenario.start_stack),
coturn in the core, kernel NAT between them.

Per cell: the path the page reports (from getStats' selected candidate pair), a
scapy capture on the client's LAN link that says where the bytes went, 200
numbered messages echoed in order on the ordered ``input`` channel, frames of the
synthetic desktop drawn and checked, mouse events echoed on the unreliable lane;
a screenshot per cell (kept in the run's directory and copied to
``$SHORTPATH_ARTIFACTS/shortpath-browser/``), time to first frame printed.

Chromium runs as a child of a small driver (this file with ``drive``) that is
started with ``ip netns exec`` in the client namespace (``Lab.spawn``). It trusts
the gateway's certificate and coturn's (TURN over TLS) by their public keys only.

The page races two lanes, managed (the host's shared UDP 3390 ICE-lite listener)
and webrtc (full ICE with STUN/TURN), and keeps managed when it opens (app.js), so
the first cell is the managed path and the others are the webrtc lane's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANAGED_PORT = 3390
ARTIFACTS = Path(os.environ.get("SHORTPATH_ARTIFACTS", tempfile.gettempdir())) / "shortpath-browser"
N_MESSAGES = 200
#: The session bytes a cell carries after the page is up (frames at ~360 KB/s for
#: HOLD seconds): what the capture must find on the path the page reports.
HOLD = 3.0
MIN_PATH_BYTES = 100_000


# --- the driver, run inside the client namespace ----------------------------------------
def drive(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="test_browser_lab drive")
    ap.add_argument("--url", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--pin", action="append", default=[], help="PEM certificate whose key Chromium trusts")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shot", required=True)
    ap.add_argument("--hold", type=float, default=HOLD)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.integration.test_browser import open_browser, run_page, spki_pin

    async def main() -> dict:
        token = Path(a.token_file).read_text().strip()
        extra = [f"--ignore-certificate-errors-spki-list={','.join(spki_pin(p) for p in a.pin)}"]
        async with open_browser(a.pin[0], extra_args=extra) as ctx:
            t0 = time.monotonic()
            result = await run_page(ctx, a.url, token, n=N_MESSAGES, screenshot=a.shot, timeout=40)
            print("page-up", flush=True)
            await asyncio.sleep(a.hold)           # frames keep flowing: the capture's sample
            page = ctx.pages[0]
            result["state"] = await page.evaluate("() => window.shortpath.state")
            result["pairs"] = await page.evaluate("() => window.shortpath.candidatePairs()")
            result["wall_s"] = time.monotonic() - t0
            await page.screenshot(path=a.shot)
            return result

    result = asyncio.run(main())
    result.pop("console", None)
    Path(a.out).write_text(json.dumps(result))
    print("driver-done", flush=True)
    return 0


# --- the cells ---------------------------------------------------------------------
pytestmark = [pytest.mark.lab, pytest.mark.needs("turn", "capture", "browser")]


def _run_cell(label: str, *, client_nat: str, host_nat: str, private_link: bool = False,
              client_fw: tuple = ()) -> tuple[dict, dict, object]:
    from netns_lab import capture
    from netns_lab.lab import Lab
    from netns_lab.scenario import start_stack

    with Lab(client_nat=client_nat, host_nat=host_nat, private_link=private_link) as lab:
        stack = start_stack(lab)
        if client_fw:
            lab.firewall("client", *client_fw)
        work = Path(stack["work"])
        out, shot = work / f"browser-{label}.json", work / f"browser-{label}.png"
        cap = capture.start(lab, "client", "lan", work / f"capture-{label}.json")
        driver = lab.spawn("client", [sys.executable, str(Path(__file__).resolve()), "drive",
                                      "--url", f"https://{lab.addr('gateway')}:443/",
                                      "--token-file", str(work / "user.tok"),
                                      "--pin", str(stack["state"] / "gateway.crt"), "--pin", stack["turn_cert"],
                                      "--out", str(out), "--shot", str(shot)], cwd=str(ROOT))
        try:
            driver.wait_for_line(r"^page-up$", 90)
            cap.next_phase()                     # phase 2: the session running on its path
            driver.wait_for_line(r"^driver-done$", 60)
        except Exception:
            raise AssertionError(f"browser driver failed:\n{driver.log_path.read_text()[-5000:]}\n"
                                 f"host log:\n{stack['host_proc'].log_path.read_text()[-3000:]}\n"
                                 f"{lab.helper_failures()}") from None
        phases = cap.stop()
        lab.stop(driver)
        result = json.loads(out.read_text())
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTIFACTS / f"browser_{label}.png")
        addrs = {"host_lan": lab.addr("host"), "host_public": lab.addr("host-public"),
                 "turn": lab.addr("turn"), "gateway": lab.addr("gateway")}
        from tests.integration.test_browser import report
        report(label, result)
        return result, {"phases": phases, **addrs}, lab


def _bytes(counter: dict, addr: str, port: int | None = None) -> int:
    """Bytes of a capture counter (flows "src>dst:dport") to or from ``addr``, both
    directions (the frames flow host -> browser). ``port``: only flows to addr:port
    and flows from addr (whose source port the summary does not keep)."""
    total = 0
    for flow, n in counter.items():
        src, to = flow.split(">", 1)
        ip, _, p = to.rpartition(":")
        if src == addr or (ip == addr and (port is None or int(p) == port)):
            total += n
    return total


def _to(counter: dict, addr: str) -> dict[int, int]:
    """Bytes per destination port of the flows to ``addr`` (one direction)."""
    out: dict[int, int] = {}
    for flow, n in counter.items():
        ip, _, p = flow.split(">", 1)[1].rpartition(":")
        if ip == addr:
            out[int(p)] = out.get(int(p), 0) + n
    return out


def _pairs(result: dict) -> str:
    """For failure messages: the page's selected pair, the pairs it selected before, and
    Chromium's whole check list at the end (state, checks sent / answered, bytes)."""
    s = result["state"]
    hist = "; ".join(f"{h['at']:.0f} ms {h['path']} {h['desc']}" for h in s.get("pairHistory") or [])
    rows = "\n".join(f"  {p['state']:<11} {'N' if p['nominated'] else ' '} {p['local']} -> {p['remote']} "
                     f"req {p['requests']} resp {p['responses']} sent {p['bytesSent']} recv {p['bytesReceived']}"
                     for p in result.get("pairs") or [])
    return f"{s['pair']} (history: {hist}; marks: {s.get('marks')})\nChromium's pairs:\n{rows}"


def _common(result: dict) -> dict:
    s = result["state"]
    assert result["echo"]["sent"] == result["echo"]["received"] == N_MESSAGES, result["echo"]
    assert result["echo"]["inOrder"], result["echo"]
    assert s["frames"] >= 10 and s["badFrames"] == 0, s
    assert s["eventRtts"], "no mouse event came back on the events lane"
    assert s["firstFrameMs"] > 0
    return s


def _session_phase(cap: dict) -> dict:
    after = cap["phases"][-1]
    # Nothing of the session through the gateway: once the page is up its WebSocket
    # carries no more than heartbeats (a few bytes), while the path carries the frames.
    gw = _bytes(after["tcp_payload_bytes"], cap["gateway"])
    assert gw < 5_000, f"{gw} bytes of TCP to/from the gateway while the session ran"
    return after


def test_browser_managed_path_on_a_private_link():
    result, cap, _ = _run_cell("managed", client_nat="port-restricted", host_nat="port-restricted",
                               private_link=True)
    s = _common(result)
    assert s["path"] == "managed" and s["lane"] == "managed", _pairs(result)
    assert (s["remote"]["address"], s["remote"]["port"]) == (cap["host_lan"], MANAGED_PORT), s["pair"]
    after = _session_phase(cap)
    # the session's bytes are DTLS with the host's one managed socket, UDP 3390, and nothing else:
    # everything the browser sends the host goes to port 3390 (echoes, SCTP acks of ~1 MB of
    # frames), and the frames come back from the host's LAN address
    to_host = _to(after["udp_bytes"], cap["host_lan"])
    assert set(to_host) == {MANAGED_PORT} and to_host[MANAGED_PORT] > 5_000, to_host
    assert _to(after["dtls_records"], cap["host_lan"]).get(MANAGED_PORT, 0) > 0
    assert _bytes(after["udp_bytes"], cap["host_lan"]) > MIN_PATH_BYTES, after["udp_bytes"]
    assert _bytes(after["udp_bytes"], cap["turn"]) < 5_000
    assert _bytes(after["udp_bytes"], cap["host_public"]) < 5_000


def test_browser_private_link_with_3390_blocked_keeps_the_webrtc_lane():
    """The managed lane cannot get through (UDP 3390 dropped at the client's router), so the
    page keeps the webrtc lane: direct, here over the private link."""
    result, cap, _ = _run_cell("managed-blocked", client_nat="port-restricted", host_nat="port-restricted",
                               private_link=True, client_fw=("udp-3390-blocked",))
    s = _common(result)
    assert s["path"] == "direct" and s["lane"] == "webrtc", _pairs(result)
    after = _session_phase(cap)
    assert _to(after["udp_bytes"], cap["host_lan"]).get(MANAGED_PORT, 0) < 5_000
    on_path = _bytes(after["udp_bytes"], cap["host_lan"]) + _bytes(after["udp_bytes"], cap["host_public"])
    assert on_path > MIN_PATH_BYTES, after["udp_bytes"]
    assert _bytes(after["udp_bytes"], cap["turn"]) < 5_000


def test_browser_hole_punched_direct_through_two_nats():
    result, cap, _ = _run_cell("direct", client_nat="port-restricted", host_nat="port-restricted")
    s = _common(result)
    assert s["path"] == "direct" and s["remote"]["address"] == cap["host_public"], _pairs(result)
    assert s["local"]["type"] in ("host", "srflx", "prflx")
    after = _session_phase(cap)
    assert _bytes(after["udp_bytes"], cap["host_public"]) > MIN_PATH_BYTES, after["udp_bytes"]
    assert _bytes(after["dtls_records"], cap["host_public"]) > 0
    assert _bytes(after["udp_bytes"], cap["turn"]) < 5_000


def test_browser_turn_udp_through_symmetric_nat():
    result, cap, _ = _run_cell("turn-udp", client_nat="symmetric", host_nat="symmetric")
    s = _common(result)
    assert s["path"] == "turn", _pairs(result)
    after = _session_phase(cap)
    assert _bytes(after["udp_bytes"], cap["turn"]) > MIN_PATH_BYTES, after["udp_bytes"]
    assert _bytes(after["udp_bytes"], cap["host_public"]) < 5_000


def test_browser_turn_over_tls_443_with_udp_blocked():
    result, cap, _ = _run_cell("turn-tls", client_nat="port-restricted", host_nat="port-restricted",
                               client_fw=("udp-blocked", "tcp-443-only"))
    s = _common(result)
    assert s["path"] == "turn-tls", _pairs(result)
    assert s["local"]["relayProtocol"] == "tls"
    after = _session_phase(cap)
    assert _bytes(after["tcp_payload_bytes"], cap["turn"], 443) > MIN_PATH_BYTES, after["tcp_payload_bytes"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["drive"]:
        raise SystemExit(drive(sys.argv[2:]))
    raise SystemExit("usage: test_browser_lab.py drive --url ... (the lab tests start it)")
