"""A peer's hostile ICE candidates never reach our ICE agent (issue #11 item 10).

Loopback session, direct path only. The client's signalling is tampered with in flight:
before its end-of-candidates the host also receives link-local, multicast, unspecified,
broadcast and reserved candidates, and a flood of loopback ones (loopback is allowed here
because the session itself runs over loopback; their ports are closed, so nothing leaves the
machine). The host must drop the first kind, cap the count, and still connect.
"""

from __future__ import annotations

import asyncio

from conftest_udp import LOOPBACK, SignalLink, assert_no_leaked_tasks, make_pair
from shortpath.transport.udp import UdpConfig
from shortpath.transport.udp.candidate_policy import DEFAULT_MAX_CANDIDATES

DIRECT = UdpConfig(allow_managed=False, allow_turn=False, host_addresses=LOOPBACK, connect_timeout=10)
HOSTILE = ["169.254.169.254", "224.0.0.251", "0.0.0.0", "255.255.255.255", "240.0.0.1", "fe80::1"]
FLOOD = [f"127.0.1.{i}" for i in range(1, 31)]


def _cand(ip: str, n: int) -> dict:
    return {"type": "udp.candidate", "candidate": {"foundation": f"x{n}", "component": 1, "protocol": "udp",
                                                   "priority": 1000 + n, "ip": ip, "port": 9, "type": "host"}}


async def test_hostile_and_excess_candidates_are_dropped_before_any_check():
    pair_box: list = []

    def tamper(msg: dict) -> dict:
        if msg.get("type") == "udp.end-of-candidates":
            host = pair_box[0].host
            for n, ip in enumerate(HOSTILE + FLOOD):
                host.on_signal(_cand(ip, n))
        return msg

    link = SignalLink(tamper_to_host=tamper)
    pair = make_pair(DIRECT, link=link)
    pair_box.append(pair)
    try:
        client, host = await pair.connect()
        assert client.kind == host.kind == "udp-direct"
        f = pair.host.candidate_filter
        for reason in ("link-local", "multicast", "unspecified", "broadcast", "reserved", "too-many"):
            assert f.dropped.get(reason, 0) >= 1, f.dropped
        assert f.received == len(pair.host.remote_candidates)
        # what reached the ICE agent: the real candidates and loopback ones up to the cap
        agent = pair.host._agent
        remote = [c.host for c in agent.remote_candidates]
        assert not set(remote) & set(HOSTILE), remote
        assert len(remote) <= DEFAULT_MAX_CANDIDATES
        assert not {p.remote_candidate.host for p in agent.check_list} & set(HOSTILE)
        # the path works
        got = asyncio.Queue()
        host.on_reliable = got.put_nowait
        client.send_reliable(b"still fine")
        assert await asyncio.wait_for(got.get(), 5) == b"still fine"
    finally:
        await pair.close()
    await assert_no_leaked_tasks()
