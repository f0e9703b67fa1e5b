"""Redundant events (session/redundancy.py): tables on the pure sender/receiver, and timelines
over a lossy scripted link (each frame repeats the last k events; the receiver gets each event
once, in order, at the first copy's arrival)."""

import random

import pytest

from shortpath.errors import LocalError, MalformedFrame
from shortpath.session.connection import MAX_DATAGRAM
from shortpath.session.redundancy import MAX_EVENT, MAX_REDUNDANCY, EventReceiver, EventSender
from shortpath.wire import frames as fr
from shortpath.wire.frames import FrameType

from tests.unit.test_channels import ChannelPair
from tests.unit.test_connection import frame, on_udp


def test_each_frame_carries_the_new_event_and_the_last_k_before_it():
    s = EventSender(MAX_DATAGRAM)
    frames = [s.push(b"e%d" % i, 2) for i in range(4)]
    assert frames == [(0, [b"e0"]), (1, [b"e0", b"e1"]), (2, [b"e0", b"e1", b"e2"]),
                      (3, [b"e1", b"e2", b"e3"])]
    assert s.push(b"e4", 0) == (4, [b"e4"])


def test_repeats_are_cut_to_fit_one_datagram():
    s = EventSender(1200)
    for i in range(MAX_REDUNDANCY):
        s.push(bytes([i]) * 500, MAX_REDUNDANCY)
    newest, carried = s.push(b"x" * 500, MAX_REDUNDANCY)
    assert len(carried) == 2 and carried[-1] == b"x" * 500
    assert len(frame(fr.encode_events(newest, carried)).payload) <= 1200


@pytest.mark.parametrize("bad", [-1, MAX_REDUNDANCY + 1, 1.5, True])
def test_bad_redundancy_or_size_is_a_local_error(bad):
    with pytest.raises(LocalError):
        EventSender(1200).push(b"x", bad)
    with pytest.raises(LocalError):
        EventSender(1200).push(b"x" * (MAX_EVENT + 1), 1)


def test_events_frame_round_trip_and_malformed_payloads():
    f = frame(fr.encode_events(9, [b"a", b"", b"ccc"]))
    assert f.type == FrameType.EVENTS and fr.decode_events(f.payload) == (9, [b"a", b"", b"ccc"])
    good = f.payload
    for bad in (good[:5], good[:-1], good + b"x", b"\x00" * 8 + b"\x00",
                fr.encode_events(1, [b"a"])[6:][:8] + b"\x05" + b"\x00\x01a"):
        with pytest.raises(MalformedFrame):
            fr.decode_events(bad)


# (frames that arrive, in arrival order, as (newest, events)) -> delivered, lost, duplicates
@pytest.mark.parametrize("arrivals, delivered, lost, dups", [
    ([(0, [b"0"]), (1, [b"0", b"1"]), (2, [b"1", b"2"])], [b"0", b"1", b"2"], 0, 0),
    # frame 1 lost: frame 2 repeats event 1, delivered with it, in order
    ([(0, [b"0"]), (2, [b"1", b"2"])], [b"0", b"1", b"2"], 0, 0),
    # frames 1 and 2 lost with k = 1: event 1 is gone for good, skipped, never waited for
    ([(0, [b"0"]), (3, [b"2", b"3"])], [b"0", b"2", b"3"], 1, 0),
    # a late frame after a newer one: only repeats, dropped, order kept
    ([(0, [b"0"]), (2, [b"1", b"2"]), (1, [b"0", b"1"])], [b"0", b"1", b"2"], 0, 1),
    # the first frames lost: the receiver starts at what arrives
    ([(5, [b"4", b"5"])], [b"4", b"5"], 4, 0),
])
def test_receiver_delivers_each_event_once_in_order(arrivals, delivered, lost, dups):
    r = EventReceiver()
    got = []
    for newest, events in arrivals:
        got += r.on_frame(newest, events)
    assert got == delivered
    assert (r.stats.lost, r.stats.duplicates, r.stats.delivered) == (lost, dups, len(delivered))


def _events_over_a_lossy_udp_path(k: int, loss: float, seed: int = 5, copies: int = 1):
    p = ChannelPair()
    p.start_upgrades()
    p.run(0.3)
    assert on_udp(p, "client")
    rng = random.Random(seed)
    p.lose = lambda side, t: t.frame_type == FrameType.EVENTS and rng.random() < loss
    sent_at = {}

    def tick(i=[0]):
        if i[0] >= 500:
            return
        data = b"ev%05d" % i[0]
        sent_at[data] = p.now
        p.cores["client"].send_event(data, p.now, redundancy=k, copies=copies)
        i[0] += 1
        p.at(p.now + 0.01, tick)
    p.at(0.3, tick)
    p.run(6.0)
    got = p.events_got["host"]
    return p, sent_at, got


def test_with_redundancy_lost_frames_cost_no_events_and_no_retransmission_wait():
    p, sent_at, got = _events_over_a_lossy_udp_path(k=3, loss=0.10)
    data = [d for _, d in got]
    stats = p.cores["host"].event_stats
    # every event once, in order, unless more than 3 frames in a row were lost (a loss at
    # the very end is not known to the receiver: count up to the newest event it got)
    newest = int(data[-1][2:])
    assert data == sorted(set(data)) and len(data) + stats.lost == newest + 1 and newest >= 496
    assert stats.recovered > 20 and stats.lost <= 2
    # a recovered event arrives with the next frame that got through: one send interval per
    # lost frame at most, never a retransmission timeout
    late = [t - sent_at[d] - p.udp_delay for t, d in got]
    assert max(late) <= 3 * 0.01 + 1e-6


def test_without_redundancy_the_same_losses_lose_events():
    p, _sent_at, got = _events_over_a_lossy_udp_path(k=0, loss=0.10)
    stats = p.cores["host"].event_stats
    assert stats.lost > 20 and stats.recovered == 0
    newest = int(got[-1][1][2:])
    assert len(got) + stats.lost == newest + 1 and newest >= 490


def test_second_copies_make_good_a_lost_frame_within_the_spacing():
    from shortpath.session.connection import EVENT_COPY_SPACING
    p, sent_at, got = _events_over_a_lossy_udp_path(k=0, loss=0.10, copies=2)
    stats = p.cores["host"].event_stats
    # both copies of one frame are lost ~1 % of the time (k=0: nothing else carries it)
    assert stats.lost <= 15 and stats.duplicates > 300
    late = sorted(t - sent_at[d] - p.udp_delay for t, d in got)
    n_late = sum(1 for x in late if x > 1e-6)
    assert 20 < n_late < 100                    # the first copy was lost, the second arrived ...
    assert late[-1] <= EVENT_COPY_SPACING + 1e-6   # ... one spacing later, never more


def test_a_lone_event_whose_first_copy_is_lost_arrives_with_the_second():
    from shortpath.session.connection import EVENT_COPY_SPACING
    p = ChannelPair()
    p.start_upgrades()
    p.run(0.3)
    assert on_udp(p, "client")
    dropped = []

    def lose(side, t):
        if t.frame_type == FrameType.EVENTS and not dropped:
            dropped.append(p.now)
            return True
        return False
    p.lose = lose
    p.at(0.5, lambda: p.cores["client"].send_event(b"click", p.now, redundancy=2))
    p.run(1.0)
    assert dropped == [0.5]
    assert [d for _, d in p.events_got["host"]] == [b"click"]
    (t, _), = p.events_got["host"]
    assert t == pytest.approx(0.5 + EVENT_COPY_SPACING + p.udp_delay, abs=1e-6)


@pytest.mark.parametrize("copies", [0, 5, True, 1.5])
def test_bad_copies_is_a_local_error(copies):
    p = ChannelPair()
    with pytest.raises(LocalError):
        p.cores["client"].send_event(b"x", 0.0, copies=copies)
