"""Gateway choice (issue #14): the AVD rule -- 10 ms latency buckets, fewest
connections in the lowest bucket -- with hysteresis, as tables. Then the probe
edge against real gateways on loopback."""

import pytest

from shortpath.client.gateway_choice import Probe, choose
from shortpath.errors import PathError


def P(name, rtt, conns=None):
    return Probe(name, rtt, conns)


@pytest.mark.parametrize("probes,expect", [
    # lowest bucket wins whatever the load
    ([P("a", 25.0, 0), P("b", 4.0, 900)], "b"),
    # same bucket (0-10 ms): fewest connections, not lowest rtt
    ([P("a", 1.0, 50), P("b", 9.9, 10)], "b"),
    # 9.9 and 10.0 ms are different buckets: the lower bucket wins despite its load
    ([P("a", 10.0, 0), P("b", 9.9, 500)], "b"),
    # equal load in a bucket: lower rtt, then name
    ([P("a", 6.0, 5), P("b", 3.0, 5)], "b"),
    ([P("a", 3.0, 5), P("b", 3.0, 5)], "a"),
    # unknown load counts as more than any known load
    ([P("a", 2.0, None), P("b", 8.0, 100)], "b"),
    # unreachable gateways are never chosen
    ([P("a", None), P("b", 60.0, 3)], "b"),
    # the lab: 5, 12 and 30 ms one way (10, 24, 60 ms round trip)
    ([P("gw5", 10.4, 40), P("gw12", 24.2, 1), P("gw30", 60.3, 0)], "gw5"),
    # ... and a second gateway in gw5's 10-20 ms bucket with fewer connections takes it
    ([P("gw5", 10.4, 40), P("gw5b", 19.9, 39), P("gw12", 24.2, 1)], "gw5b"),
])
def test_avd_rule(probes, expect):
    c = choose(probes)
    assert c.gateway == expect, c.reason


@pytest.mark.parametrize("current,probes,expect,why", [
    # one bucket worse than the best: stays (a few ms of jitter over an edge)
    ("a", [P("a", 11.0, 5), P("b", 9.0, 5)], "a", "stayed"),
    # two buckets worse: moves
    ("a", [P("a", 21.0, 5), P("b", 9.0, 5)], "b", "moved"),
    # same bucket, a little busier: stays (20 % + 2)
    ("a", [P("a", 3.0, 14), P("b", 4.0, 10)], "a", "stayed"),
    # same bucket, much busier: moves
    ("a", [P("a", 3.0, 15), P("b", 4.0, 10)], "b", "moved"),
    # current gone: the best
    ("a", [P("a", None), P("b", 40.0, 10), P("c", 41.0, 1)], "c", "did not answer"),
    # current is the best
    ("b", [P("a", 30.0, 1), P("b", 4.0, 10)], "b", "still the best"),
])
def test_hysteresis(current, probes, expect, why):
    c = choose(probes, current=current)
    assert c.gateway == expect and why in c.reason, c.reason


def test_jitter_timeline_does_not_hop():
    """A client re-measuring each round with +-3 ms noise around a bucket edge keeps its gateway."""
    rtts_a = [9.0, 11.5, 8.2, 12.0, 10.1, 9.7]
    current, hops = None, 0
    for ra in rtts_a:
        c = choose([P("a", ra, 5), P("b", 10.5, 5)], current=current)
        hops += current is not None and c.gateway != current
        current = c.gateway
    assert hops == 0


def test_nothing_answers_is_a_path_error():
    with pytest.raises(PathError) as ei:
        choose([Probe("a", None, error="ConnectionRefusedError"), Probe("b", None)])
    assert "a (ConnectionRefusedError)" in ei.value.message


def test_choice_json_says_why():
    d = choose([P("a", 12.0, 3), P("b", 4.0, 7), P("c", 6.0, 2)]).to_dict()
    assert d["gateway"] == "c" and "fewest connections (2)" in d["reason"]
    assert [(p["gateway"], p["bucket"]) for p in d["probes"]] == [("a", 1), ("b", 0), ("c", 0)]


async def test_probe_real_gateways(tmp_path):
    from shortpath.client.gateway_choice import measure
    from shortpath.demo import LocalStack
    from tests.conftest import FAST
    async with LocalStack(str(tmp_path), hosts=0, timing=FAST) as stack:
        dead = "127.0.0.1:1"
        probes = await measure([stack.address, dead], stack.cafile, rounds=3)
        assert probes[0].rtt_ms is not None and probes[0].rtt_ms < 1000 and probes[0].connections >= 1
        assert probes[1].rtt_ms is None and probes[1].error
        assert choose(probes).gateway == stack.address
