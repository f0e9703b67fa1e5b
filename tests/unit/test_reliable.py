import random

import pytest
from hypothesis import given, strategies as st

from shortpath.errors import RemoteError
from shortpath.session.reliable import AckClock, ReliableReceiver, ReliableSender


def test_window_and_cumulative_ack():
    s = ReliableSender(window_bytes=10)
    assert s.can_send(100)                      # one message always fits an empty window
    s.push(b"x" * 6)
    assert not s.can_send(5) and s.can_send(4)
    s.push(b"y" * 4)
    assert s.on_ack(1) == 1 and s.unacked_bytes == 4
    assert s.pending() == [(1, b"y" * 4)]
    with pytest.raises(RemoteError):
        s.on_ack(5)                              # acks what was never sent


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_receiver_delivers_once_in_order_despite_duplicates_and_reordering(msgs, rnd):
    arrivals = list(enumerate(msgs)) * 2          # every message twice (replay after a switch)
    rnd.shuffle(arrivals)
    r = ReliableReceiver()
    out = []
    for seq, m in arrivals:
        out.extend(r.on_data(seq, m))
    assert out == msgs
    assert r.stats.duplicates == len(msgs)


def test_reorder_buffer_is_bounded():
    r = ReliableReceiver(max_early=3)
    for seq in (1, 2, 3):
        r.on_data(seq, b"")
    with pytest.raises(RemoteError):
        r.on_data(4, b"")


def test_ack_clock():
    a = AckClock(every=3, delay=0.02)
    assert not a.on_consumed(0.0)
    assert a.get_timer() == pytest.approx(0.02)
    assert not a.due(0.01) and a.due(0.03)
    assert not a.on_consumed(0.005)
    assert a.on_consumed(0.006)                  # third message: ack now
    assert a.sent() == 3 and a.get_timer() is None
