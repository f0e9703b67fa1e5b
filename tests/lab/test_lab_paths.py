"""A very short run of the lab path benchmark (benchmarks/lab_paths.py): one lossy profile,
two paths (raw UDP between the namespaces, and a shortpath session on the managed path), to
check that what it measures is sane, not how fast it is. Events only, without the background
frame stream: with frames at 5 % loss the session sometimes fails over to the relay (a finding
of the benchmark, reported there), which would leave nothing for these checks to judge."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.needs("turnserver")]


@pytest.fixture(scope="module")
def lossy_run():
    from benchmarks import lab_paths
    raw = lab_paths.measure(paths=("raw-udp", "udp-managed"), profiles=("rtt40-loss5",), events_s=3.0,
                            grace_s=1.0, bulk=False, rtt=False, frames=False, progress=None)
    return raw, lab_paths.analyse(raw)


def _row(an, path, channel):
    rows = [r for r in an["rows"] if r["path"] == path and r.get("channel") == channel]
    assert rows, f"no {channel} row for {path}: {[r for r in an['rows'] if r['path'] == path]}"
    return rows[0]


def test_paths_came_up_where_forced(lossy_run):
    raw, _ = lossy_run
    for name in ("raw-udp", "udp-managed"):
        assert "error" not in raw["paths"][name], raw["paths"][name].get("error")
    assert raw["paths"]["udp-managed"]["ready"]["transport"] == "udp-managed"
    ev = raw["paths"]["udp-managed"]["profiles"]["rtt40-loss5"]["events"]
    assert ev["ok"], ev
    assert ev["transport_before"] == "udp-managed", ev
    # (at 5 % loss the session may fail over to the relay mid-run; the benchmark reports that,
    # see test_redundancy_on_the_shortpath_datagram_channel)


def test_latency_is_at_least_the_emulated_one_way_delay(lossy_run):
    _, an = lossy_run
    for path, channel in (("raw-udp", "datagram"), ("udp-managed", "reliable"), ("udp-managed", "datagram")):
        r = _row(an, path, channel)
        assert r["delivered"] > 0.8 * r["sent"], r
        # the emulator holds every packet 20 ms; a stamp taken before sending cannot beat that
        assert r["min_ms"] >= 19.9, r
        # ... and the median event is not wildly late. Raw UDP only: on the UDP path the
        # datagram channel shares SCTP's one send queue with the reliable channel, and at
        # 5 % loss each way a chain of T3 back-offs holds datagrams too (p50 790 ms seen
        # once in 8 runs on a loaded machine). A known limit, reported in docs/lab_paths.md.
        if path == "raw-udp":
            assert r["p50_ms"] < 20 + 80, r


def test_reliable_channel_loses_nothing(lossy_run):
    _, an = lossy_run
    r = _row(an, "udp-managed", "reliable")
    assert r["delivery_ratio"] == 1.0, r
    assert r["duplicates"] == 0, r


def _check_redundancy(plain, red, floor=0.99):
    # 5 % loss on ~300 events: plain datagrams must show it ...
    assert 0.85 < plain["delivery_ratio"] < 0.995, plain
    # ... and the redundant copies must cover (nearly) all of it
    assert red["delivery_ratio"] > plain["delivery_ratio"], (plain, red)
    assert red["delivery_ratio"] >= floor, red
    assert red["duplicates"] > 0, red           # the copies really were sent and arrived
    assert red["wire_bytes_per_event"] > 3 * plain["wire_bytes_per_event"], (plain, red)


def test_redundancy_beats_plain_datagrams_under_loss(lossy_run):
    _, an = lossy_run
    _check_redundancy(_row(an, "raw-udp", "datagram"), _row(an, "raw-udp", "datagram+red"))


def test_redundancy_on_the_shortpath_datagram_channel(lossy_run):
    _, an = lossy_run
    plain, red = _row(an, "udp-managed", "datagram"), _row(an, "udp-managed", "datagram+red")
    seen = set(plain.get("transports_seen") or ()) | {plain["transport"]}
    if seen != {"udp-managed"}:
        # over the TCP relay nothing is lost, so there is nothing for redundancy to recover
        pytest.skip(f"the session failed over during the run (on {sorted(seen)}); see docs/lab_paths.md")
    # SCTP abandons unreliable chunks still queued at a T3 expiry, copies included, so the
    # UDP path recovers less than raw UDP (0.977 seen once): a lower floor, same direction.
    _check_redundancy(plain, red, floor=0.95)
