"""Path MTU search by padded HEARTBEAT probes (transport/udp/pmtu.py): timelines on a fake clock
(plain floats for ``now``). A "path" here is a rule deciding which probes come back acked."""

import pytest

from shortpath.transport.udp import pmtu
from shortpath.transport.udp.pmtu import (
    BASE_PACKET, BLACK_HOLE_RETRY, BLACK_HOLE_T3, CANDIDATES, DATA_OVERHEAD, DONE, IDLE,
    MAX_ROUNDS, NONCE_BYTES, PROBE_OVERHEAD, RAISE_INTERVAL, ROUND_TIMEOUT_MAX, ROUND_TIMEOUT_MIN,
    ROUND_TIMEOUT_RTTS, SEARCHING, PmtuSearch, chunk_payload)

NONCE = bytes(range(1, NONCE_BYTES + 1))
ABOVE_BASE = sorted((c for c in CANDIDATES if c > BASE_PACKET), reverse=True)
LARGEST = ABOVE_BASE[0]


def deliver(search, now, probes, mtu, lost=()):
    """The path carries packets up to ``mtu`` bytes both ways, except the sizes in ``lost``."""
    return [search.on_ack(now, p.info) for p in probes if p.size <= mtu and p.size not in lost]


def info_of(size, nonce=NONCE):
    return nonce + bytes(size - PROBE_OVERHEAD - len(nonce))


def test_a_1500_path_is_confirmed_in_one_round():
    s = PmtuSearch(NONCE)
    assert (s.state, s.packet_size, s.timer()) == (IDLE, BASE_PACKET, None)
    probes = s.start(100.0, 0.05)
    assert [p.size for p in probes] == ABOVE_BASE
    for p in probes:
        assert p.size == len(p.info) + PROBE_OVERHEAD and p.info.startswith(NONCE)
    assert s.state == SEARCHING
    assert s.on_ack(100.05, probes[0].info) is True
    assert (s.state, s.timer(), s.packet_size, s.chunk_payload) == (DONE, None, 1432, 1404)
    st = s.stats()
    assert (st["probes_sent"], st["acks"], st["searches"]) == (len(ABOVE_BASE), 1, 1)
    assert s.on_timer(1e6, 0.05) == []                       # nothing pending after done


def test_smallest_first_acks_grow_the_size_and_the_largest_ends_the_round():
    s = PmtuSearch(NONCE)
    probes = s.start(0.0, 0.1)
    for i, p in enumerate(reversed(probes)):
        assert s.on_ack(0.1, p.info) is True
        assert s.packet_size == p.size
        assert s.state == (DONE if p.size == LARGEST else SEARCHING), i
    assert s.timer() is None


@pytest.mark.parametrize("mtu", [1412, 1292, ABOVE_BASE[-1], BASE_PACKET])
def test_a_narrow_path_keeps_the_largest_acked_size_after_max_rounds(mtu):
    srtt = 0.1
    rt = ROUND_TIMEOUT_RTTS * srtt
    s = PmtuSearch(NONCE)
    now = 50.0
    probes = s.start(now, srtt)
    deliver(s, now + srtt, probes, mtu)
    fits = max([c for c in ABOVE_BASE if c <= mtu], default=BASE_PACKET)
    above = [c for c in ABOVE_BASE if c > fits]
    assert (s.state, s.packet_size) == (SEARCHING, fits)     # larger ones may still come back
    for rnd in range(2, MAX_ROUNDS + 1):                      # the timer ends each round
        assert s.timer() == pytest.approx(now + rt)
        now = s.timer()
        probes = s.on_timer(now, srtt)
        assert [p.size for p in probes] == above, rnd
        deliver(s, now + srtt, probes, mtu)
        assert s.state == SEARCHING
    now = s.timer()
    assert s.on_timer(now, srtt) == []
    assert (s.state, s.packet_size) == (DONE, fits)
    assert s.timer() == pytest.approx(now + RAISE_INTERVAL)
    assert s.stats()["probes_sent"] == len(ABOVE_BASE) + (MAX_ROUNDS - 1) * len(above)
    assert s.on_timer(now + RAISE_INTERVAL - 0.001, srtt) == []
    again = s.on_timer(now + RAISE_INTERVAL, srtt)            # the raise timer: a new search
    assert [p.size for p in again] == above
    assert (s.state, s.stats()["searches"]) == (SEARCHING, 2)
    deliver(s, now + RAISE_INTERVAL + srtt, again, 1500)      # the path has grown meanwhile
    assert (s.state, s.packet_size, s.timer()) == (DONE, LARGEST, None)


def test_a_lost_largest_probe_is_confirmed_in_the_next_round():
    s = PmtuSearch(NONCE)
    probes = s.start(0.0, 0.1)
    deliver(s, 0.1, probes, 1500, lost={LARGEST})
    assert (s.state, s.packet_size) == (SEARCHING, ABOVE_BASE[1])
    probes = s.on_timer(s.timer(), 0.1)
    assert [p.size for p in probes] == [LARGEST]
    assert deliver(s, s.timer(), probes, 1500) == [True]
    assert (s.state, s.packet_size, s.timer()) == (DONE, LARGEST, None)


def test_acks_that_must_be_ignored():
    s = PmtuSearch(NONCE)
    assert s.on_ack(0.0, info_of(1292)) is False              # before any search
    s.start(0.0, 0.1)
    other = bytes(NONCE_BYTES)
    assert s.on_ack(0.1, info_of(LARGEST, other)) is False    # wrong nonce
    assert s.on_ack(0.1, NONCE[:4]) is False                  # shorter than a nonce
    assert s.on_ack(0.1, info_of(1400)) is False              # a size never probed
    assert s.on_ack(0.1, info_of(BASE_PACKET)) is False       # the base is not probed either
    assert (s.packet_size, s.stats()["acks"], s.state) == (BASE_PACKET, 0, SEARCHING)
    assert s.on_ack(0.1, info_of(1292)) is True
    assert s.on_ack(0.1, info_of(1292)) is False              # duplicate
    assert s.stats()["acks"] == 1
    assert s.on_ack(0.2, info_of(1232)) is False              # smaller: counted, no growth
    assert (s.packet_size, s.stats()["acks"]) == (1292, 2)
    assert s.on_ack(0.2, info_of(LARGEST)) is True and s.state == DONE
    assert s.on_ack(0.3, info_of(ABOVE_BASE[1])) is False     # after done
    assert (s.packet_size, s.stats()["acks"]) == (LARGEST, 3)


@pytest.mark.parametrize("srtt, timeout", [
    (None, ROUND_TIMEOUT_MAX),
    (0.0, ROUND_TIMEOUT_MAX),
    (0.001, ROUND_TIMEOUT_MIN),
    (0.2, ROUND_TIMEOUT_RTTS * 0.2),
    (0.5, ROUND_TIMEOUT_RTTS * 0.5),
    (5.0, ROUND_TIMEOUT_MAX),
])
def test_round_timeout_follows_srtt_within_bounds(srtt, timeout):
    assert ROUND_TIMEOUT_MIN <= timeout <= ROUND_TIMEOUT_MAX
    s = PmtuSearch(NONCE)
    s.start(10.0, srtt)
    assert s.timer() == pytest.approx(10.0 + timeout)
    s2 = PmtuSearch(NONCE)                    # the second round uses the srtt given to on_timer
    s2.start(0.0, None)
    s2.on_timer(ROUND_TIMEOUT_MAX, srtt)
    assert s2.timer() == pytest.approx(ROUND_TIMEOUT_MAX + timeout)


def test_on_timer_before_due_does_nothing():
    s = PmtuSearch(NONCE)
    assert s.on_timer(0.0, None) == [] and s.state == IDLE    # nothing pending
    s.start(10.0, None)
    due = s.timer()
    assert s.on_timer(due - 0.001, None) == []
    assert (s.timer(), s.state, s.stats()["probes_sent"]) == (due, SEARCHING, len(ABOVE_BASE))
    assert len(s.on_timer(due, None)) == len(ABOVE_BASE)      # at due: round 2


def test_black_hole_drops_to_base_and_a_later_search_confirms_again():
    s = PmtuSearch(NONCE)
    assert s.on_black_hole(0.0, BLACK_HOLE_T3 + 5) is False   # already at base
    first = s.start(0.0, 0.05)
    deliver(s, 0.05, first, 1500)
    assert s.packet_size == LARGEST
    assert s.on_black_hole(100.0, BLACK_HOLE_T3 - 1) is False
    assert (s.packet_size, s.state, s.timer()) == (LARGEST, DONE, None)
    assert s.on_black_hole(100.0, BLACK_HOLE_T3) is True
    assert (s.packet_size, s.chunk_payload, s.state) == (BASE_PACKET, chunk_payload(BASE_PACKET),
                                                         IDLE)
    assert s.timer() == pytest.approx(100.0 + BLACK_HOLE_RETRY)
    assert s.stats()["black_holes"] == 1
    assert s.on_black_hole(100.5, BLACK_HOLE_T3 + 1) is False # now at base
    assert s.on_ack(101.0, first[0].info) is False            # a stale probe confirms nothing
    assert s.on_timer(100.0 + BLACK_HOLE_RETRY - 0.001, 0.05) == []
    probes = s.on_timer(100.0 + BLACK_HOLE_RETRY, 0.05)
    assert [p.size for p in probes] == ABOVE_BASE and s.state == SEARCHING
    deliver(s, 105.1, probes, 1500)
    assert (s.state, s.packet_size, s.timer()) == (DONE, LARGEST, None)
    assert s.stats()["searches"] == 2


def test_black_hole_during_a_search_above_base_stops_it():
    s = PmtuSearch(NONCE)
    probes = s.start(0.0, 0.1)
    deliver(s, 0.1, probes, 1292)
    assert s.on_black_hole(0.2, BLACK_HOLE_T3) is True
    assert (s.state, s.packet_size) == (IDLE, BASE_PACKET)
    assert s.on_ack(0.25, info_of(LARGEST)) is False          # the old round is over
    assert s.timer() == pytest.approx(0.2 + BLACK_HOLE_RETRY)


@pytest.mark.parametrize("nonce", [b"", bytes(NONCE_BYTES - 1), bytes(NONCE_BYTES + 1)])
def test_a_nonce_of_the_wrong_length_is_refused(nonce):
    with pytest.raises(ValueError, match="nonce"):
        PmtuSearch(nonce)


def test_candidates_must_be_multiples_of_four():
    with pytest.raises(ValueError):
        PmtuSearch(NONCE, candidates=(1432, 1430))


def test_candidates_at_or_below_base_are_ignored():
    s = PmtuSearch(NONCE, candidates=(1292, BASE_PACKET + 4, 1292, BASE_PACKET, 1001, 576))
    assert s.candidates == (1292, BASE_PACKET + 4)            # deduplicated, largest first
    empty = PmtuSearch(NONCE, candidates=(BASE_PACKET, 1001, 576))
    assert empty.candidates == ()
    assert empty.start(0.0, 0.1) == []
    assert (empty.state, empty.timer(), empty.packet_size) == (DONE, None, BASE_PACKET)
    assert empty.on_timer(1e6, 0.1) == []


@pytest.mark.parametrize("size, payload", [
    (BASE_PACKET, 1160), (1432, 1404), (1428, 1400), (1412, 1384), (1292, 1264),
    (1190, 1160), (1231, 1200),
])
def test_chunk_payload(size, payload):
    assert chunk_payload(size) == payload
    assert payload % 4 == 0 and payload + DATA_OVERHEAD <= size < payload + DATA_OVERHEAD + 4


def test_every_candidate_fits_a_data_chunk_and_a_probe():
    for c in CANDIDATES:
        assert chunk_payload(c) + DATA_OVERHEAD == c                 # no padding wasted
        assert c - PROBE_OVERHEAD >= NONCE_BYTES
    assert pmtu.chunk_payload(BASE_PACKET) == 1160                   # aiortc's own chunk size


# --- relayed paths (limit) -----------------------------------------------------------------
def fragmenting_relay(search, now, probes):
    """A TURN relay whose kernel fragments what does not fit its link: every probe comes back,
    whatever its size (the probe cannot see the 4-byte channel header)."""
    return deliver(search, now, probes, mtu=10_000)


def test_a_relayed_path_probes_nothing_above_the_channel_limit():
    s = PmtuSearch(NONCE)
    assert s.limit(pmtu.RELAYED_MAX_PACKET) is False          # nothing confirmed above it yet
    probes = s.start(0.0, 0.05)
    assert max(p.size for p in probes) == pmtu.RELAYED_MAX_PACKET == 1428
    fragmenting_relay(s, 0.05, probes)
    assert (s.state, s.packet_size, s.timer()) == (DONE, 1428, None)   # the largest left: no raise timer
    # the control: without the limit the fragmenting relay confirms 1432
    c = PmtuSearch(NONCE)
    fragmenting_relay(c, 0.05, c.start(0.0, 0.05))
    assert c.packet_size == 1432


def test_a_limit_after_the_search_lowers_the_confirmed_size():
    """The host learns that the client's pair is relayed after its own search ended."""
    s = PmtuSearch(NONCE)
    fragmenting_relay(s, 0.05, s.start(0.0, 0.05))
    assert s.packet_size == 1432
    assert s.limit(pmtu.RELAYED_MAX_PACKET) is True
    assert (s.packet_size, s.chunk_payload) == (1428, 1400)
    assert s.limit(pmtu.RELAYED_MAX_PACKET) is False           # idempotent
    assert all(c <= 1428 for c in s.candidates)


def test_a_limit_during_a_search_ignores_acks_of_larger_probes():
    s = PmtuSearch(NONCE)
    probes = s.start(0.0, 0.05)
    s.limit(pmtu.RELAYED_MAX_PACKET)
    assert s.on_ack(0.05, probes[0].info) is False             # the 1432 probe's ack
    assert s.packet_size == BASE_PACKET
    assert s.on_ack(0.05, info_of(1428)) is True
    assert (s.state, s.packet_size) == (DONE, 1428)


def test_a_limit_never_goes_under_the_base():
    s = PmtuSearch(NONCE)
    fragmenting_relay(s, 0.05, s.start(0.0, 0.05))
    assert s.limit(BASE_PACKET - 100) is True
    assert s.packet_size == BASE_PACKET and s.candidates == ()
