"""Closing without losing what was sent before close() (session/connection.py, "Closing").

On UDP each reliable channel is an SCTP stream of its own and CLOSE travels on
stream 0 (and on the relay), so a CLOSE sent at once could overtake a message
still being retransmitted on another stream, and the peer would end without it.
These timelines use test_channels.py's ChannelPair, whose link keeps each
stream's order on its own (``holds`` delays one channel's stream)."""

import pytest

from shortpath.errors import SessionClosed
from shortpath.paths.manager import RELAY_ID
from shortpath.session import events as ev
from shortpath.session.connection import SessionConnection
from shortpath.wire import frames as fr
from shortpath.wire.frames import FrameType

from tests.unit.test_channels import ChannelPair, cmsg
from tests.unit.test_connection import drain_events, frame, on_udp


def send_now(p: ChannelPair, side: str, ch: int, i: int, size: int = 32) -> None:
    m = cmsg(side, ch, i, size)
    p.cores[side].send(m, p.now, ch)
    p.ch_sent[side][ch].append(m)
    p.sent_at[m] = p.now


def ended_after_all_data(p: ChannelPair, side: str):
    """(SessionEnded event, its time); asserts no DataReceived came after it."""
    kinds = [type(e).__name__ for _, e in p.events[side]]
    assert "SessionEnded" in kinds, f"{side} never ended"
    end_at = kinds.index("SessionEnded")
    assert "DataReceived" not in kinds[end_at:], f"{side} got data after it ended"
    t, e = p.events[side][end_at]
    return e, t


def test_close_on_udp_waits_for_a_message_still_retransmitted_on_another_stream():
    p = ChannelPair()
    p.start_upgrades()
    p.run(0.5)
    assert on_udp(p, "client") and on_udp(p, "host")
    retransmitted_until = p.now + 1.0
    p.holds[("host", 2)] = retransmitted_until      # the graphics stream is held up
    for i in range(3):
        send_now(p, "host", 2, i, size=20_000)
    send_now(p, "host", 1, 0)
    p.pump()                                         # they leave now; graphics arrives late
    del p.holds[("host", 2)]
    closed_at = p.now
    p.cores["host"].close("bye", "user quit", p.now)
    assert not p.cores["host"].closed and p.cores["host"].closing
    p.run(closed_at + 3.0)
    p.assert_channels_exact()
    end, t = ended_after_all_data(p, "client")
    assert (end.reason, end.detail, end.local, end.undelivered) == ("bye", "user quit", False, 0)
    assert t >= retransmitted_until
    t_host, mine = p.first("host", ev.SessionEnded)
    assert mine.local and mine.undelivered == 0 and retransmitted_until <= t_host
    assert t_host < closed_at + p.timing.close_timeout     # ended on the ACK, not on the timeout


def test_close_on_the_relay_with_unconsumed_data_on_every_channel():
    p = ChannelPair()
    p.consuming["client"] = False                  # received, never consumed: CLOSE must not wait for that
    for ch in range(4):
        for i in range(5):
            send_now(p, "host", ch, i, size=3000)
    p.cores["host"].close("bye", "", 0.0)
    p.run(2.0)
    p.assert_channels_exact()
    end, _ = ended_after_all_data(p, "client")
    assert end.reason == "bye" and end.undelivered == 0
    t, mine = p.first("host", ev.SessionEnded)
    assert mine.undelivered == 0 and t < p.timing.close_timeout


def test_close_with_unreceived_data_during_a_failover_replays_it_on_the_relay_first():
    p = ChannelPair()
    p.start_upgrades()
    p.run(0.5)
    assert on_udp(p, "host")
    p.set_dark("udp-1", True)                      # what goes on UDP now never arrives
    for ch in range(4):
        for i in range(4):
            send_now(p, "host", ch, i, size=5000)
    closed_at = p.now
    p.cores["host"].close("bye", "", p.now)
    p.run(closed_at + p.timing.close_timeout - 0.1)
    assert not on_udp(p, "host")                   # it failed over while closing ...
    switched = [e for _, e in p.events["host"] if isinstance(e, ev.PathSwitched)]
    assert switched[-1].path_id == RELAY_ID and switched[-1].replayed == 16
    p.assert_channels_exact()                      # ... and the replay arrived before the CLOSE
    end, _ = ended_after_all_data(p, "client")
    assert end.reason == "bye" and end.undelivered == 0
    assert p.first("host", ev.SessionEnded)[1].undelivered == 0


def test_close_gives_up_after_the_close_timeout_and_both_sides_say_what_is_missing():
    p = ChannelPair()
    p.set_dark(RELAY_ID, True)                     # nothing arrives, nothing is acknowledged
    for i in range(3):
        send_now(p, "host", 2, i)
    p.cores["host"].close("bye", "", 0.0)
    p.run(p.timing.close_timeout - 0.01)
    assert p.cores["host"].closing and p.first("host", ev.SessionEnded)[1] is None
    with pytest.raises(SessionClosed):             # closing: no new messages
        p.cores["host"].send(b"late", p.now)
    assert not p.cores["host"].send_datagram(b"late", p.now)
    p.run(p.timing.close_timeout + 0.01)
    t, mine = p.first("host", ev.SessionEnded)
    assert t == pytest.approx(p.timing.close_timeout)
    assert mine.local and mine.reason == "bye" and mine.undelivered == 3 and "3" in mine.detail
    # the peer reads a CLOSE that says what was sent, whatever it got
    client = SessionConnection("client", 0.0)
    client.path_added(RELAY_ID, "tcp-relay", 0.0)
    closes = [fr.decode_json(frame(f).payload) for s, f in p.paths[RELAY_ID].held
              if s == "host" and frame(f).type == FrameType.CLOSE]
    assert closes and closes[0]["sent"] == {"2": 3}
    client.receive_frame(RELAY_ID, frame(fr.encode_cdata(2, 0, b"first")), 0.1)
    client.receive_frame(RELAY_ID, frame(fr.encode_json(FrameType.CLOSE, closes[0])), 0.1)
    end = [e for e in drain_events(client) if isinstance(e, ev.SessionEnded)][0]
    assert (end.reason, end.local, end.undelivered) == ("bye", False, 2) and "2" in end.detail


@pytest.mark.parametrize("sent, why", [
    ([3], "not an object"),
    ({"2": -1}, "negative"),
    ({"9": 1}, "unknown channel"),
    ({"2": True}, "not a count"),
    ({"2": 1.5}, "not a count"),
])
def test_a_close_with_malformed_marks_is_a_protocol_error(sent, why):
    core = SessionConnection("client", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.receive_frame(RELAY_ID, frame(fr.encode_json(FrameType.CLOSE, {"reason": "bye", "sent": sent})), 0.1)
    end = [e for e in drain_events(core) if isinstance(e, ev.SessionEnded)][0]
    assert end.reason == "protocol-error", why


def test_a_revision_2_close_without_marks_ends_at_once():
    core = SessionConnection("client", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.receive_frame(RELAY_ID, frame(fr.encode_json(FrameType.CLOSE, {"reason": "bye", "detail": "d"})), 0.1)
    end = [e for e in drain_events(core) if isinstance(e, ev.SessionEnded)][0]
    assert (end.reason, end.detail, end.undelivered) == ("bye", "d", 0)


def test_close_with_nothing_outstanding_is_immediate():
    core = SessionConnection("client", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.close("bye", "", 0.0)
    assert core.closed and not core.closing
    out = core.transmits(0.0)
    assert [t.frame_type for t in out] == [FrameType.CLOSE]
    assert fr.decode_json(frame(out[0].frame).payload)["sent"] == {}


def test_both_sides_close_at_once_with_data_in_flight_both_ways():
    p = ChannelPair()
    p.start_upgrades()
    p.run(0.5)
    assert on_udp(p, "client")
    for side in ("client", "host"):
        for ch in range(4):
            for i in range(3):
                send_now(p, side, ch, i, size=8000)
    p.cores["client"].close("bye", "", p.now)
    p.cores["host"].close("bye", "", p.now)
    p.run(p.now + p.timing.close_timeout - 0.1)
    p.assert_channels_exact()
    for side in ("client", "host"):
        end, _ = ended_after_all_data(p, side)
        assert end.reason == "bye" and end.undelivered == 0
