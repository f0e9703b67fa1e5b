"""Candidate pairing and gathering rules that the NAT lab showed we need
(loopback only, no coturn): relay pairs a public TURN server cannot route,
a bounded STUN attempt, and the path kind of a relayed pair to the managed
listener."""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

from conftest_udp import LOOPBACK
from shortpath.transport.udp.ice import Impairment, TurnServer, is_private_address, make_agent
from shortpath.transport.udp.upgrader import pair_kind


def _agent(**kw):
    args = dict(controlling=True, ufrag="abcdABCD1234efgh", pwd="p" * 32, host_addresses=list(LOOPBACK),
                stun_server=None, turn_servers=[], relay_only=False, impairment=Impairment(),
                on_candidate=lambda c: None, gather_timeout=5.0, turn_attempt_timeout=1.5,
                close_timeout=1.0)
    args.update(kw)
    return make_agent(**args)


def _cand(ctype: str, ip: str, port: int):
    from aioice import Candidate

    return Candidate(foundation=f"{ctype}{port}", component=1, transport="udp", priority=1000,
                     host=ip, port=port, type=ctype)


class _FakeRelaySocket(SimpleNamespace):
    """Stands in for a relay socket: a local relay candidate on a TURN server, no socket."""

    async def close(self) -> None:
        pass


def _relay_protocol(turn_host: str):
    return _FakeRelaySocket(local_candidate=_cand("relay", "198.18.0.20", 50000),
                            sp_turn=TurnServer(turn_host, 3478))


def test_private_ranges():
    for ip in ("10.1.0.10", "172.20.1.1", "192.168.1.5", "100.64.3.4", "169.254.9.9", "fd00::1"):
        assert is_private_address(ip), ip
    # lab "internet" and documentation ranges are routed: not LAN-only
    for ip in ("198.18.0.20", "198.19.2.10", "192.0.2.1", "8.8.8.8", "127.0.0.1", "not-an-ip"):
        assert not is_private_address(ip), ip


async def test_public_relay_not_paired_with_private_host_candidates():
    agent = _agent()
    try:
        relay = _relay_protocol("198.18.0.20")
        agent.add_protocol(relay)
        for remote in (_cand("host", "10.1.0.10", 4000), _cand("host", "198.19.2.10", 3390),
                       _cand("srflx", "198.18.1.2", 5000), _cand("relay", "198.18.0.20", 50001)):
            await agent.add_remote_candidate(remote)
        paired = {(p.remote_candidate.host, p.remote_candidate.port) for p in agent.check_list
                  if p.protocol is relay}
        assert paired == {("198.19.2.10", 3390), ("198.18.1.2", 5000), ("198.18.0.20", 50001)}
        assert agent.protocols[-1] is relay  # the filter is temporary
    finally:
        await agent.close()


async def test_private_turn_server_keeps_private_pairs():
    agent = _agent()
    try:
        relay = _relay_protocol("10.0.0.5")
        agent.add_protocol(relay)
        await agent.add_remote_candidate(_cand("host", "10.1.0.10", 4000))
        assert [p for p in agent.check_list if p.protocol is relay]
    finally:
        await agent.close()


async def test_unanswered_stun_does_not_hold_gathering_until_the_deadline():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never answers
    silent.bind(("127.0.0.1", 0))
    agent = _agent(stun_server=silent.getsockname(), gather_timeout=5.0, turn_attempt_timeout=0.3)
    try:
        t0 = time.monotonic()
        await agent.gather_candidates()
        assert time.monotonic() - t0 < 2.0
        assert [c.type for c in agent.local_candidates] == ["host"]
    finally:
        await agent.close()
        silent.close()


def test_relayed_pair_to_managed_listener_is_turn():
    managed = {("198.19.2.10", 3390)}
    pair = SimpleNamespace(local_candidate=_cand("relay", "198.18.0.20", 50000),
                           remote_candidate=_cand("host", "198.19.2.10", 3390))
    assert pair_kind(pair, remote_managed=managed, remote_relay=set()) == "udp-turn"
    pair.local_candidate = _cand("host", "10.9.0.2", 40000)
    assert pair_kind(pair, remote_managed=managed, remote_relay=set()) == "udp-managed"


async def test_relay_pair_nomination_waits_for_direct_pairs():
    from aioice.ice import CandidatePair

    S = CandidatePair.State
    loop = asyncio.get_running_loop()

    async def setup(direct_state):
        agent = _agent()
        await agent.add_remote_candidate(None)   # end-of-candidates: nothing more to wait for
        agent._sp_own_nomination = True
        agent._sp_hold_deadline = loop.time() + 30
        relay = CandidatePair(_relay_protocol("198.18.0.20"), _cand("srflx", "198.18.2.2", 4000))
        direct = CandidatePair(SimpleNamespace(local_candidate=_cand("host", "10.1.0.10", 5000)),
                               _cand("srflx", "198.18.2.2", 4000))
        relay.state, direct.state = S.SUCCEEDED, direct_state
        agent.check_list[:] = [direct, relay]
        chosen = []

        async def nominate(pair):
            chosen.append(pair)

        agent._sp_nominate = nominate
        return agent, relay, direct, chosen

    async def settle(agent):
        if agent._sp_nominate_task is not None:
            await agent._sp_nominate_task

    # a direct pair still in progress holds the relay back ...
    agent, relay, direct, chosen = await setup(S.IN_PROGRESS)
    agent._sp_consider_nomination()
    assert agent._sp_nominate_task is None
    # ... and wins when it succeeds
    direct.state = S.SUCCEEDED
    agent._sp_consider_nomination()
    await settle(agent)
    assert chosen == [direct]

    # no direct pair left: the relay is nominated at once
    agent, relay, direct, chosen = await setup(S.FAILED)
    agent._sp_consider_nomination()
    await settle(agent)
    assert chosen == [relay]

    # the hold expires: the relay is nominated even with a direct pair pending
    agent, relay, direct, chosen = await setup(S.IN_PROGRESS)
    agent._sp_hold_deadline = loop.time() - 0.01
    agent._sp_consider_nomination()
    await settle(agent)
    assert chosen == [relay]
