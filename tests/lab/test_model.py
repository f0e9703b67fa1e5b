"""Pure parts of the lab (no root): impairment model, NAT ruleset shape, firewall presets."""

from __future__ import annotations

import pytest

from netns_lab import firewall, nat
from netns_lab.impair import Impairment, LinkModel, gilbert_elliott


def _run(imp: Impairment, n: int, dt: float = 0.001):
    m = LinkModel(imp)
    return m, [m.decide(i * dt) for i in range(n)]


def test_delay_is_constant_without_jitter():
    _, rel = _run(Impairment(delay_ms=20, seed=1), 100)
    assert all(r == pytest.approx(i * 0.001 + 0.020) for i, r in enumerate(rel))


def test_jitter_monotone_and_zero_mean():
    m, rel = _run(Impairment(delay_ms=50, jitter_ms=10, jitter_corr_ms=20, seed=2), 200_000,
                  dt=0.0001)
    assert all(b >= a for a, b in zip(rel, rel[1:]))
    assert m.stats.clamped == 0  # corr raised to 8 x jitter keeps the slope below 1
    delays = [r - i * 0.0001 for i, r in enumerate(rel)]
    mean = sum(delays) / len(delays)
    sd = (sum((d - mean) ** 2 for d in delays) / len(delays)) ** 0.5
    # 20 s of a process with 80 ms knots: 250 knots -> mean sd ~ 0.6 ms
    assert mean == pytest.approx(0.050, abs=0.003)
    assert sd == pytest.approx(0.010, rel=0.25)


def test_random_loss_rate():
    m, rel = _run(Impairment(loss=0.05, seed=3), 100_000)
    lost = sum(r is None for r in rel) / len(rel)
    assert lost == pytest.approx(0.05, abs=0.004)  # ~6 sd


def test_gilbert_elliott_mean_and_burst():
    imp = Impairment(seed=4, **gilbert_elliott(0.05, 4))
    assert imp.mean_loss() == pytest.approx(0.05)
    _, rel = _run(imp, 400_000)
    lost = [r is None for r in rel]
    rate = sum(lost) / len(lost)
    bursts, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert rate == pytest.approx(0.05, abs=0.006)
    assert sum(bursts) / len(bursts) == pytest.approx(4, rel=0.1)


def test_reorder_packets_overtaken():
    m, rel = _run(Impairment(delay_ms=5, reorder=0.1, reorder_gap_ms=10, seed=5), 10_000)
    order = sorted(range(len(rel)), key=lambda i: rel[i])
    inversions = sum(1 for a, b in zip(order, order[1:]) if b < a)
    assert m.stats.reordered > 800 and inversions > 800


def test_rate_only_needs_no_queue():
    assert not Impairment(rate_kbit=1000).needs_queue()
    assert Impairment(delay_ms=1).needs_queue()


@pytest.mark.parametrize("t", nat.NAT_TYPES)
def test_ruleset_per_type(t):
    s = nat.router_ruleset(t, private="pl")
    assert "policy drop" in s  # routers never accept unsolicited inbound to themselves
    assert ("fully-random" in s) == (t == "symmetric")
    assert ("dnat ip to" in s) == (t in ("full-cone", "restricted"))
    assert ("masquerade" in s) == (t != "open")


def test_expected_double():
    assert nat.expected_double("full-cone", "symmetric") == (nat.APD, nat.APD)
    assert nat.expected_double("restricted", "full-cone") == (nat.EI, nat.AD)


def test_firewall_presets_build():
    assert "drop" in firewall.site_ruleset(firewall.SITE_PRESETS)
    assert firewall.site_ruleset([]).count("drop") == 0
    with pytest.raises(ValueError):
        firewall.site_ruleset(["no-such-preset"])
