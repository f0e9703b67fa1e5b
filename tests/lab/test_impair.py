"""Impairment sanity: measured delay, loss and rate within tolerances that do not flake.

The path is client -> crtr -> core with the impairment on client-lan "up" (emulator in crtr);
see netns_lab/accuracy.py for why the receiver sits one hop beyond the emulator.
"""

from __future__ import annotations

import math

import pytest

from netns_lab import gilbert_elliott

pytestmark = pytest.mark.lab

LINK = "client-lan"


def _binomial_ok(measured: float, p: float, n: int, z: float = 5.0) -> bool:
    sd = math.sqrt(p * (1 - p) / n)
    return abs(measured - p) <= z * sd


@pytest.fixture
def plain(make_lab):
    return make_lab("port-restricted", "port-restricted")


def test_delay(plain):
    base = plain.measure_udp("client", "core", rate=500, count=300)
    plain.impair(LINK, "up", delay_ms=20)
    m = plain.measure_udp("client", "core", rate=500, count=1000)
    assert m["loss"] == 0 and m["reordered"] == 0
    # The emulator only adds delay; the minimum may read up to ~0.1 ms short (seen in 1 of 6
    # runs: 19.91 ms; cause not established -- CLOCK_REALTIME adjustments in the VM are the
    # likely one), so allow 0.2 ms.  Mean within 1.5 ms (generous for a busy 2-core machine;
    # accuracy.py measures 0.1-0.8 ms).
    assert m["owd_ms"]["min"] >= 19.8
    assert m["owd_ms"]["mean"] - base["owd_ms"]["mean"] == pytest.approx(20.0, abs=1.5)
    st = plain.emulator_stats(LINK, "up")
    assert st["accepted"] >= 1000 and st["kernel_timestamps"] > 0
    # the other direction is untouched
    back = plain.measure_udp("crtr", "client", rate=500, count=200)
    assert back["owd_ms"]["mean"] < 5


def test_random_loss_binomial(plain):
    plain.impair(LINK, "up", loss=0.1)
    n = 4000
    m = plain.measure_udp("client", "core", rate=4000, count=n)
    assert _binomial_ok(m["loss"], 0.1, n), m["loss"]


def test_gilbert_elliott_bursts(plain):
    plain.impair(LINK, "up", **gilbert_elliott(0.1, 5))
    n = 6000
    m = plain.measure_udp("client", "core", rate=4000, count=n)
    # Bursty loss: mean loss still ~10 % (loose: bursts make the estimate noisier) and bursts
    # are long (random 10 % loss would give a mean burst of 1/(1-0.1) = 1.1).
    assert 0.05 < m["loss"] < 0.17, m["loss"]
    assert m["loss_bursts"]["mean_len"] > 3, m["loss_bursts"]


def test_jitter_keeps_order_and_mean(plain):
    plain.impair(LINK, "up", delay_ms=30, jitter_ms=5, jitter_corr_ms=50)
    m = plain.measure_udp("client", "core", rate=1000, count=3000)
    assert m["reordered"] == 0 and m["loss"] == 0
    o = m["owd_ms"]
    # 3 s of a 50 ms-correlated process: ~60 independent knots -> mean sd ~0.7 ms; allow 3 ms.
    assert o["mean"] == pytest.approx(30, abs=3)
    assert 2 < o["sd"] < 8
    assert plain.emulator_stats(LINK, "up")["model"]["clamped"] == 0


def test_reordering(plain):
    plain.impair(LINK, "up", delay_ms=5, reorder=0.05, reorder_gap_ms=10)
    m = plain.measure_udp("client", "core", rate=1000, count=1000)
    assert m["loss"] == 0
    assert m["reordered"] > 10  # ~50 expected


def test_rate_limit(plain):
    plain.impair(LINK, "up", rate_kbit=1000, rate_queue_ms=50)
    assert not plain._impair[(LINK, "up")]["proc"]  # tbf only, no emulator process
    # 1200-byte datagrams at 400/s = 3.8 Mbit/s offered for 1 s into a 1 Mbit/s link:
    # about 1 Mbit/s / 9.9 kbit per packet ~ 100 pass, plus the 50 ms queue and burst (~9).
    m = plain.measure_udp("client", "core", rate=400, count=400, size=1200, linger=0.3)
    assert 70 <= m["received"] <= 150, m["received"]
    assert m["owd_ms"]["max"] > 20  # packets waited in the tbf queue


def test_clear_removes_emulator_and_rule(plain):
    plain.impair(LINK, "both", delay_ms=10)
    procs = [plain._impair[(LINK, d)]["proc"] for d in ("up", "down")]
    assert all(p.alive() for p in procs)
    plain.clear_impairments()
    assert not plain._impair
    assert all(not p.alive() for p in procs)
    rules = plain.run("crtr", ["iptables", "-t", "raw", "-S", "PREROUTING"]).stdout
    assert "NFQUEUE" not in rules
    m = plain.measure_udp("client", "core", rate=500, count=200)
    assert m["owd_ms"]["mean"] < 5 and m["loss"] == 0
