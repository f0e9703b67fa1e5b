import random

import pytest
from hypothesis import given, strategies as st

from shortpath.errors import RemoteError
from shortpath.session.channels import ChannelReceiver, ChannelSender
from shortpath.session.reliable import ReliableReceiver


def test_window_and_cumulative_ack():
    s = ChannelSender(window_bytes=10)
    assert s.can_send(100)                      # one message always fits an empty window
    s.push(b"x" * 6)
    assert not s.can_send(5) and s.can_send(4)
    s.push(b"y" * 4)
    assert s.on_ack(1, 2) == (1, 10)            # releases seq 0; the peer holds 0 and 1
    assert s.unacked_bytes == 4 and list(s.unacked.items()) == [(1, b"y" * 4)]
    assert s.on_ack(1, 2) == (0, 0)             # marks only move forward
    with pytest.raises(RemoteError):
        s.on_ack(2, 5)                           # acks what was never sent
    with pytest.raises(RemoteError):
        s.on_ack(2, 1)                           # consumed more than it received


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
    a = ChannelReceiver(every=3, delay=0.02)
    assert not a.on_consumed(0.0)
    assert a.deadline == pytest.approx(0.02)
    assert not a.due(0.01) and a.due(0.03)
    assert not a.on_consumed(0.005)
    assert a.on_consumed(0.006)                  # third message: ack now
    assert a.ack() == (3, 0) and a.deadline is None
    assert not a.due(1.0)                        # nothing new since that ack
