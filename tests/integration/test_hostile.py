"""Hostile input against a live loopback gateway, and replayed one-time credentials.

* a few hundred fuzzed connections (benchmarks/fuzz.py's gateway target) while a real
  session keeps echoing numbered messages through the same gateway;
* a host data leg replaying a conn_id that was already used is refused;
* a session ticket replayed into another session is refused by the host.
"""

import asyncio
import os
import ssl

import pytest

from benchmarks.fuzz import fuzz_gateway
from shortpath.auth.certs import client_context
from shortpath.demo import LocalStack
from shortpath.errors import AuthError, PathError, SessionClosed
from shortpath.framed import FramedConn
from shortpath.wire import control
from shortpath.wire.frames import MAX_CONTROL_PAYLOAD

from tests.conftest import FAST


async def test_fuzzed_connections_leave_a_live_session_and_the_gateway_unharmed(tmp_path):
    res = await fuzz_gateway(str(tmp_path), 300, workers=8, wait=0.25, seed=int.from_bytes(os.urandom(2), "big"),
                             timing=FAST)
    tally = res["tally"].to_dict()
    assert tally["crash_count"] == 0, (tally["crashes"][:3], res["bug_log"][:3], res["loop_errors"][:3])
    assert tally["inputs"]["gateway"] == 300
    outcomes = tally["outcomes"]["gateway"]
    # the gateway answered most garbage with a typed error before closing
    assert sum(v for k, v in outcomes.items() if k.startswith("error:")) > 150, outcomes
    assert res["counters_delta"]["protocol_errors"] > 150
    live = res["live_session"]
    assert live["error"] is None, live
    assert live["sent"] == live["ok"] > 20          # every numbered echo came back, in order
    assert live["transport"] == "tcp-relay"         # ... through the fuzzed gateway
    assert res["gateway_alive"]
    # nothing stuck: no half-open, leaked connection or pending launch once the storm is over
    settled = res["settled"]
    assert settled["unauthenticated"] == 0 and settled["pending_launches"] == 0
    assert settled["connections"] <= settled["baseline_connections"]


async def _raw(stack) -> FramedConn:
    r, w = await asyncio.open_connection("127.0.0.1", stack.gateway.port, ssl=client_context(stack.cafile))
    return FramedConn(r, w, MAX_CONTROL_PAYLOAD)


async def test_replayed_conn_id_is_refused(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=False) as stack:
        broker = stack.gateway.broker
        used = []
        real_claim = broker.claim_leg

        def recording_claim(conn_id):
            plan = real_claim(conn_id)
            used.append(conn_id)
            return plan
        broker.claim_leg = recording_claim
        async with await stack.connect(shortpath=False) as s:
            assert len(used) == 1
            before = stack.gateway.counters["auth_failures"]
            # a second data leg with the same one-time id, while its session is live ...
            for conn_id in (used[0], "never-issued"):
                leg = await _raw(stack)
                leg.send(control.LegHello(conn_id=conn_id))
                reply = await asyncio.wait_for(leg.read_control(), 5)
                assert isinstance(reply, control.Error) and reply.code == "auth", reply
                assert "already used" in reply.message
                assert await asyncio.wait_for(leg.read_frame(), 5) is None   # and closed
                await leg.close()
            assert stack.gateway.counters["auth_failures"] - before == 2
            # ... and the session it belonged to is untouched
            await s.send(b"echo")
            for i in range(20):
                await s.send(b"%d" % i)
                assert await asyncio.wait_for(s.recv(), 5) == b"%d" % i
        # after the session ended, the id is still spent
        leg = await _raw(stack)
        leg.send(control.LegHello(conn_id=used[0]))
        reply = await asyncio.wait_for(leg.read_control(), 5)
        assert isinstance(reply, control.Error) and reply.code == "auth"
        await leg.close()


async def test_session_ticket_replayed_into_another_session_is_refused(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=False) as stack:
        broker = stack.gateway.broker
        tickets, refusals = [], []
        real_plan, real_result = broker.plan_launch, broker.dial_result

        def replaying_plan(claims, resource):
            plan = real_plan(claims, resource)
            tickets.append(plan.ticket)
            if len(tickets) == 2:
                # the client of session 2 shows session 1's (valid, unexpired) ticket
                plan.ticket = tickets[0]
            return plan

        def recording_result(host_id, msg):
            refusals.append(msg.reason)
            return real_result(host_id, msg)
        broker.plan_launch = replaying_plan
        broker.dial_result = recording_result
        async with await stack.connect(shortpath=False) as first:
            await first.send(b"echo")
            with pytest.raises((SessionClosed, PathError)):
                await stack.connect(shortpath=False)
            # the host refused the set-up because of the ticket (not a timeout)
            for _ in range(200):
                if refusals:
                    break
                await asyncio.sleep(0.01)
            assert refusals == ["auth"]
            assert list(stack.hosts[0].sessions) == [first.session_id]
            await first.send(b"still-here")
            assert await asyncio.wait_for(first.recv(), 5) == b"still-here"
