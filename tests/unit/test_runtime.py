"""shortpath.runtime.settle_gc: what it freezes (run in a child process: freezing is process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json, sys
from shortpath.runtime import settle_gc
before_udp = "aiortc" in sys.modules
gc.collect()
tracked_before = len(gc.get_objects())
frozen = settle_gc(udp=%s)
print(json.dumps({"before_udp": before_udp, "after_udp": "aiortc" in sys.modules, "frozen": frozen,
                  "tracked_before": tracked_before, "tracked_after": len(gc.get_objects())}))
"""


def _child(udp: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD % udp], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_everything_alive_leaves_the_collectors_reach():
    r = _child(udp=False)
    assert r["frozen"] >= r["tracked_before"] * 0.9
    # what a full collection still walks: only what was created after the freeze
    assert r["tracked_after"] < r["tracked_before"] / 20


def test_the_udp_stack_is_imported_first_so_it_is_frozen_too():
    plain, udp = _child(udp=False), _child(udp=True)
    assert not udp["before_udp"] and udp["after_udp"] and not plain["after_udp"]
    assert udp["frozen"] > plain["frozen"] * 1.5      # aiortc, aioice, PyAV: most of a peer's objects
    assert udp["tracked_after"] < udp["frozen"] / 20
