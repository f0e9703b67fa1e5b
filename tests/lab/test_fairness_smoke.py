"""The fairness benchmark (benchmarks/fairness.py): its pure analysis helpers, and one very short
lab run (shallow queue only) that checks what it measures is sane -- the bottleneck caps the
flows, the TCP flow really runs CUBIC, each flow is counted on its own -- not how fair it is."""

from __future__ import annotations

import pytest

from benchmarks import fairness


def test_window_throughput_interpolates_a_cumulative_series():
    series = [(0.0, 0), (1.0, 1_250_000), (2.0, 2_500_000)]          # 10 Mbit/s
    assert fairness.at(series, 0.5) == 625_000
    assert fairness.at(series, 5.0) == 2_500_000 and fairness.at(series, -1) == 0
    assert fairness.mbit_s(series, 0.5, 1.5) == pytest.approx(10.0)
    assert fairness.mbit_s(series, 1.0, 1.0) is None
    assert fairness.rates(series, 0.0, 2.0, step=1.0) == [(0.5, 10.0), (1.5, 10.0)]


@pytest.mark.parametrize("udp,tcp,ratio,met", [
    (5.0, 5.0, 1.0, True),
    (7.5, 2.5, 3.0, True),        # the bounds are inclusive
    (2.5, 7.5, 0.333, True),
    (8.0, 2.0, 4.0, False),
    (0.2, 9.7, 0.021, False),
    (0.0, 9.0, None, False),      # a starved flow misses
    (None, 9.0, None, None),      # not measured
])
def test_judge_ratio_bounds(udp, tcp, ratio, met):
    j = fairness.judge(udp, tcp)
    assert j["ratio_udp_tcp"] == ratio and j["met"] is met


def test_rtt_stats_counts_lost_probes_in_the_window():
    probes = [(0.0, 40.0), (0.05, 42.0), (0.1, None), (0.15, 44.0), (9.0, 500.0)]
    st = fairness.rtt_stats(probes, 0.0, 1.0)
    assert st["n"] == 4 and st["lost"] == 0.25 and st["p50_ms"] == 42.0


@pytest.mark.lab
@pytest.mark.needs("turnserver")
def test_short_shallow_run_is_sane():
    raw = fairness.measure(("shallow",), idle_s=1.0, alone_s=3.0, together_s=5.0, warmup_s=1.0, progress=None)
    res = raw["queues"]["shallow"]
    ph = res["phases"]
    cap = fairness.BOTTLENECK_KBIT / 1000
    assert ph["tcp_alone"]["tcp_cc"] == ph["together"]["tcp_cc"] == "cubic"
    # each flow alone shows up on its own counter only, and never above the bottleneck's rate
    assert 0 < ph["udp_alone"]["udp_wire_mbit_s"] <= cap * 1.05
    assert 0 < ph["tcp_alone"]["tcp_wire_mbit_s"] <= cap * 1.05
    assert ph["together"]["udp_wire_mbit_s"] + ph["together"]["tcp_wire_mbit_s"] <= cap * 1.05
    assert ph["udp_alone"]["udp_transport"] == ["udp-managed"]
    # a TCP flow alone fills the queue: the probe's RTT rises above the idle one
    assert ph["tcp_alone"]["probe"]["p95_ms"] > res["idle"]["p50_ms"]
    assert res["idle"]["p50_ms"] >= 2 * fairness.ONE_WAY_MS
