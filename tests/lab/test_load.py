"""Load through one gateway in the lab (issue #6), CI-sized: 100 concurrent sessions.

The full-size run (500 sessions) is ``python -m benchmarks.load``; results in
benchmarks/results/load_*.json.
"""

import asyncio
import os

import pytest

from benchmarks.scale import _exchange
from shortpath.app.desktop import numbered

SESSIONS = 100
COUNT = 100


@pytest.mark.lab
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
@pytest.mark.timeout(110)
def test_100_sessions_through_one_gateway_lose_nothing():
    from benchmarks.load import run_load

    r = run_load(sessions=SESSIONS, count=COUNT, size=256, depth=4, log=lambda s: None)
    ex = r["exchange"]
    assert r["connect_failed"] == {}
    assert r["sessions_up"] == SESSIONS
    assert r["gateway_sessions_live_after_connect"] == SESSIONS      # all held open at once
    assert ex["failed_sessions"] == 0, ex["errors"]
    assert ex["completed_sessions"] == SESSIONS
    assert ex["sent"] == SESSIONS * COUNT
    assert ex["received"] == ex["sent"]
    assert (ex["lost"], ex["dup"], ex["reordered"], ex["corrupt"]) == (0, 0, 0, 0)
    assert ex["rtt"]["n"] == SESSIONS * COUNT
    assert r["gateway_counters"]["sessions_stitched"] == SESSIONS
    assert r["gateway_counters"]["protocol_errors"] == 0
    assert r["closed"] == SESSIONS
    assert r["gateway_sessions_left_after_close"] == 0
    for role in ("gateway", "hosts", "clients"):
        assert r["rss_kib_sessions_up"][role] > 0
        assert ex["cpu_pct"][role] > 0


class _FakeSession:
    """Echoes numbered messages, with scripted faults keyed by message index."""

    def __init__(self, drop=(), dup=(), swap=(), corrupt=()) -> None:
        self.q: asyncio.Queue = asyncio.Queue()
        self.drop, self.dup, self.swap, self.corrupt = set(drop), set(dup), set(swap), set(corrupt)
        self.held = None
        self.i = 0

    async def send(self, msg: bytes) -> None:
        i, self.i = self.i, self.i + 1
        if i in self.drop:
            return
        if i in self.corrupt:
            msg = msg[:-1] + bytes([msg[-1] ^ 1])
        if i in self.swap:            # hold this one back until after the next
            self.held = msg
            return
        self.q.put_nowait(msg)
        if self.held is not None:
            self.q.put_nowait(self.held)
            self.held = None
        if i in self.dup:
            self.q.put_nowait(msg)

    async def recv(self) -> bytes:
        return await self.q.get()


def test_exchange_checker_counts_each_fault():
    """The load checker is not vacuous: each injected fault shows up in its counter."""
    async def go(**faults):
        return await asyncio.wait_for(_exchange(_FakeSession(**faults), 0, 20, 64, 4, 0), 30)

    clean = asyncio.run(go())
    assert (clean["lost"], clean["dup"], clean["reordered"], clean["corrupt"], clean["error"]) == (0, 0, 0, 0, None)
    assert clean["sent"] == clean["received"] == 20
    swapped = asyncio.run(go(swap={5}))
    assert swapped["reordered"] >= 1 and swapped["lost"] == 0
    duped = asyncio.run(go(dup={3}))
    assert duped["dup"] == 1 and duped["lost"] == 0


def test_exchange_checker_reports_loss_and_corruption():
    """A lost or corrupt echo never comes back valid: counted lost once the grace period ends."""
    async def go(**faults):
        return await _exchange(_FakeSession(**faults), 0, 10, 64, 2, 0, grace=0.5)

    lost = asyncio.run(go(drop={4}))
    assert lost["lost"] == 1 and lost["error"] == "timeout"
    bad = asyncio.run(go(corrupt={2}))
    assert bad["corrupt"] == 1 and bad["lost"] == 1


def test_numbered_messages_differ_per_index():
    assert numbered(1) != numbered(2)
