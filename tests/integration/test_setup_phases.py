"""Set-up phase stamps (Session.timeline, UdpUpgrader.timeline) on loopback: recorded, in
order, and adding up to no more than the set-up time measured from outside."""

import asyncio
import time

import pytest

from shortpath.config import PoolConfig, ShortpathPolicy
from shortpath.demo import LocalStack

from tests.conftest import FAST

CLIENT_RELAY = ["connect", "gateway_tls", "welcome", "launched", "inner_tls", "session_ok"]
HOST_RELAY = ["dial", "leg_tls", "leg_accepted", "inner_tls", "hello", "hello_ok"]
UDP_ORDER = ["created", "start", "hello_sent", "gathered", "checks", "nominated", "dtls", "sctp", "up"]


async def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def _assert_in_order(timeline: dict, keys: list, what: str) -> None:
    missing = [k for k in keys if k not in timeline]
    assert not missing, f"{what}: phases not recorded: {missing} (have {sorted(timeline)})"
    values = [timeline[k] for k in keys]
    assert values == sorted(values), f"{what}: out of order: {list(zip(keys, values))}"


@pytest.mark.parametrize("kind", ["udp-managed", "udp-direct"])
async def test_setup_phases_recorded_ordered_and_bounded(tmp_path, kind):
    pools = None if kind == "udp-managed" else (PoolConfig("desktop", shortpath=ShortpathPolicy(managed=False)),)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, pools=pools) as stack:
        t0 = time.monotonic()
        s = await stack.connect()
        t_connected = time.monotonic()
        async with s:
            await s.send(b"echo")
            await s.send(b"first")
            assert await asyncio.wait_for(s.recv(), 10) == b"first"
            t_echo = time.monotonic()
            await _wait(lambda: "udp_switch" in s.timeline)
            t_seen = time.monotonic()
            host = stack.hosts[0].sessions[s.session_id]
            await _wait(lambda: "udp_switch" in host.timeline)
            info = s.info
            assert info.transport == kind

            # client: relay phases in order, within connect(); the switch after them
            tl = info.timeline
            _assert_in_order(tl, CLIENT_RELAY + ["udp_switch"], "client session")
            assert t0 <= tl["connect"] and tl["session_ok"] <= t_connected
            assert t0 <= tl["udp_switch"] <= t_seen
            relay_phases = [tl[b] - tl[a] for a, b in zip(CLIENT_RELAY, CLIENT_RELAY[1:])]
            assert all(p >= 0 for p in relay_phases)
            assert sum(relay_phases) <= t_connected - t0
            assert sum(relay_phases) + (t_echo - tl["session_ok"]) <= t_echo - t0

            # host: its own relay stamps, inside the client's broker/inner-TLS/hello window
            htl = host.timeline
            _assert_in_order(htl, HOST_RELAY + ["udp_switch"], "host session")
            assert tl["welcome"] <= htl["dial"] <= tl["launched"]
            assert htl["hello"] <= tl["session_ok"]

            # the winning UDP attempt, as reported by the path's info()
            udp = next(p for p in info.paths if p["active"])
            utl = udp["timeline"]
            _assert_in_order(utl, UDP_ORDER, "client UDP attempt")
            assert "cand_host" in utl and utl["start"] <= utl["cand_host"] <= utl["gathered"]
            assert utl["start"] >= tl["session_ok"] and utl["up"] <= tl["udp_switch"]
            udp_phases = [tl["session_ok"] - tl["connect"], utl["start"] - tl["session_ok"]]
            udp_phases += [utl[b] - utl[a] for a, b in zip(UDP_ORDER[1:], UDP_ORDER[2:])]
            udp_phases.append(tl["udp_switch"] - utl["up"])
            assert all(p >= 0 for p in udp_phases)
            assert sum(udp_phases) <= t_seen - t0
            assert "remote_hello" in utl and utl["remote_hello"] <= utl["checks"]

            host_udp = host.active.setup_timeline
            _assert_in_order(host_udp, UDP_ORDER, "host UDP attempt")
            if kind == "udp-managed":
                assert "cand_managed" in host_udp


async def test_benchmark_phase_breakdown_adds_up(tmp_path):
    """benchmarks/setup.py's own per-repetition analysis on one loopback session."""
    from benchmarks.setup import RELAY_PHASES, UDP_PHASES, check_phases, measure_one

    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as stack:
        host = stack.hosts[0]

        def host_timeline(sid):
            hs = host.sessions[sid]
            return {"session": dict(hs.timeline), "udp": dict(hs.active.setup_timeline)
                    if hs.active.kind.startswith("udp") else {}}

        async def conn(modes):
            return await stack.connect(udp={**stack.udp, "modes": modes})

        r = await measure_one(conn, "udp-managed", host_timeline)
    assert r["ok"], r
    assert check_phases(r) == []
    assert set(r["relay"]) == {name for name, _, _ in RELAY_PHASES}
    assert set(r["udp"]) == {name for name, _, _ in UDP_PHASES}
    assert abs(sum(r["relay"].values()) - r["relay_total_s"]) < 1e-6     # contiguous by construction
    assert abs(sum(r["udp"].values()) - r["to_udp_s"]) < 1e-6
    assert r["relay_total_s"] <= r["outside_total_s"] and r["to_udp_s"] <= r["outside_to_udp_s"]
