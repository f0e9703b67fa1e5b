"""How fast an *idle* session learns that its UDP path died (#15), in the netns lab.

An idle UDP path carries nothing but the keepalive: the client sends a PING every
``keepalive_interval`` of its own silence and the host answers with a PONG. A keepalive is a probe
that expects an answer, so when the path has died (here: the TURN server SIGKILLed under a
session that can only use TURN) the first keepalive after the death goes unanswered and the
client fails over ``dead_after`` (0.6 s) later. Bound: ``keepalive_interval + dead_after`` after
the death; cost: one PING and one PONG per interval per idle session. The interval is the pool's
``[pool.shortpath] keepalive_interval`` (default 15 s, the NAT binding lifetime it must beat);
this test sets 3 s and checks the bound holds."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.lab.test_faults import _cmd, _ready, _spawn_driver, _start, _switches_to_relay

pytestmark = pytest.mark.lab

KEEPALIVE = 3.0
DEAD_AFTER = 0.6          # PathTiming.dead_after


def test_idle_session_on_turn_learns_of_a_dead_turn_server_within_keepalive_plus_dead_after():
    from netns_lab import Lab

    with Lab(client_nat="symmetric", host_nat="symmetric") as lab:    # TURN is the only UDP path
        st = _start(lab, pools={"desktop": KEEPALIVE})
        d = _spawn_driver(lab, st)
        r = _ready(d)
        assert r["transport"] == "udp-turn", r["history"]
        assert r["keepalive_interval"] == KEEPALIVE
        time.sleep(1.0)                                    # idle: nothing sent but keepalives
        turn = next(p for p in lab.procs if os.path.basename(p.argv[0]) == "turnserver")
        t_kill = time.time()
        os.kill(turn.pid, signal.SIGKILL)
        turn.popen.wait(5)
        deadline = time.monotonic() + KEEPALIVE + DEAD_AFTER + 5
        fb = []
        while time.monotonic() < deadline and not fb:
            info = _cmd(d, "info", "info")
            fb = _switches_to_relay(info["history"], t_kill)
            time.sleep(0.1)
        burst = _cmd(d, "burst 50", "burst", 30)           # and the session still works, on the relay

    assert fb, f"the idle client never noticed the dead TURN server: {info['history']}"
    took = fb[0]["t"] - t_kill
    print(f"\nidle session, keepalive {KEEPALIVE} s: TURN killed, client on tcp-relay after {took:.3f} s "
          f"({fb[0]['reason']}); bound {KEEPALIVE + DEAD_AFTER:.1f} s")
    assert took <= KEEPALIVE + DEAD_AFTER + 0.3, took
    assert burst["all_echoed"] and burst["errors"] == [] and burst["transport"] == "tcp-relay", burst
