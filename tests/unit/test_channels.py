"""Reliable channels with priorities and the datagram lane (session/channels.py, connection.py):
tables on one core, and timelines on two cores over a scripted link (tests/unit/corepair.py's
Pair) that behaves like SCTP streams on UDP: each channel is ordered on its own, so a frame held
back on one stream holds only that stream."""

import pytest

from shortpath.errors import LocalError, MalformedFrame, RemoteError
from shortpath.paths.manager import RELAY_ID
from shortpath.session import channels as chn
from shortpath.session import events as ev
from shortpath.session.connection import SessionConnection
from shortpath.wire import frames as fr
from shortpath.wire.frames import FrameType

from tests.unit.corepair import OTHER, SIDES, Pair, drain_events, frame, on_udp, protocol_error_from

NAMES = ("default", "input", "graphics", "bulk")


def cmsg(side: str, ch: int, i: int, size: int = 32) -> bytes:
    head = b"%s%d:%08d" % (side[0].encode(), ch, i)
    return head + b"." * max(0, size - len(head))


class ChannelPair(Pair):
    """Pair with per-channel inboxes and a link that keeps each channel's order on its own
    stream (UDP) or one order for all (the relay). ``hold(side, ch, until)`` keeps what
    ``side`` sends on channel ``ch`` from arriving before ``until`` (a retransmission on one
    SCTP stream); ``lose_unreliable(pred)`` drops best-effort frames; ``stall_dir(side)``
    keeps every reliable frame ``side`` sends on UDP from arriving (packets heard, nothing
    delivered) while best-effort frames still pass; ``rate`` limits reliable bytes/s per
    direction on UDP."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.ch_inbox = {s: {c: [] for c in range(4)} for s in SIDES}
        self.ch_sent = {s: {c: [] for c in range(4)} for s in SIDES}
        self.arrived_at: dict[bytes, float] = {}
        self.sent_at: dict[bytes, float] = {}
        self.holds: dict[tuple[str, int], float] = {}
        self.lose = None                         # fn(side, transmit) -> True to drop a best-effort frame
        self.stalled: set[str] = set()           # sides whose reliable frames on UDP never arrive
        self.rate: float | None = None           # reliable bytes/s per direction on UDP paths
        self._busy = {s: 0.0 for s in SIDES}
        self._last = {}                          # (side, path, stream) -> last delivery time
        self.events_got = {s: [] for s in SIDES}

    def _transmit(self, side: str, t) -> None:
        path = self.paths.get(t.path_id)
        if path is None or not path.open[side] or path.dark:
            return super()._transmit(side, t)
        udp = t.path_id != RELAY_ID
        if not t.reliable:
            if self.lose is not None and self.lose(side, t):
                return
            return super()._transmit(side, t)
        if udp and side in self.stalled:
            return                               # heard (SACKs flow) but never delivered
        at = self.now + path.delay
        if udp and self.rate is not None:
            start = max(self.now, self._busy[side])
            self._busy[side] = start + len(t.frame) / self.rate
            at = self._busy[side] + path.delay
        stream = t.channel if udp else 0         # the relay is one ordered byte stream
        if t.frame_type == FrameType.CDATA:
            hold = self.holds.get((side, t.channel))
            if hold is not None and udp:
                at = max(at, hold)
        key = (side, t.path_id, stream)
        at = max(at, self._last.get(key, 0.0))
        self._last[key] = at
        self.at(at, lambda: self._deliver(OTHER[side], t.path_id, t.frame))

    def _handle(self, side: str, e) -> None:
        if isinstance(e, ev.DataReceived):
            self.events[side].append((self.now, e))
            self.ch_inbox[side][e.channel].append(e.data)
            self.arrived_at.setdefault(e.data, self.now)
            if self.consuming[side]:
                self.cores[side].message_consumed(self.now, e.channel)
            return
        if isinstance(e, ev.EventReceived):
            self.events_got[side].append((self.now, e.data))
        super()._handle(side, e)

    def stream_ch(self, side: str, ch: int, count: int, every: float, start: float = 0.0,
                  size: int = 32) -> None:
        def tick():
            core = self.cores[side]
            sent = self.ch_sent[side][ch]
            if core.closed or len(sent) >= count:
                return
            m = cmsg(side, ch, len(sent), size)
            if core.can_send(len(m), ch):
                core.send(m, self.now, ch)
                sent.append(m)
                self.sent_at[m] = self.now
            self.at(self.now + every, tick)
        self.at(start, tick)

    def assert_channels_exact(self) -> None:
        for side in SIDES:
            for ch in range(4):
                assert self.ch_inbox[side][ch] == self.ch_sent[OTHER[side]][ch], \
                    f"{side} channel {ch}: lost, duplicated or reordered"


# --- names and the wire ----------------------------------------------------------------------------

def test_channel_names_ids_and_priorities():
    assert [chn.resolve(n) for n in NAMES] == [0, 1, 2, 3]
    assert chn.resolve(None) == 0 and chn.resolve(2) == 2
    assert chn.PRIORITY_ORDER == (1, 0, 2, 3)          # input first, bulk last
    for bad in ("video", 7, True, 1.0):
        with pytest.raises(LocalError):
            chn.resolve(bad)


def test_cdata_and_cack_round_trip_and_reject_bad_layouts():
    f = frame(fr.encode_cdata(2, 7, b"abc"))
    assert f.type == FrameType.CDATA and fr.decode_cdata(f.payload) == (2, 7, b"abc")
    f = frame(fr.encode_cack(3, 4, 9, 1500))
    assert f.type == FrameType.CACK and fr.decode_cack(f.payload) == (3, 4, 9, 1500)
    assert fr.decode_cack(frame(fr.encode_cack(0, 0, 0, 10 ** 12)).payload)[3] == 0xFFFFFFFF
    with pytest.raises(MalformedFrame):
        fr.decode_cdata(b"\x01" * 8)
    with pytest.raises(MalformedFrame):
        fr.decode_cack(b"\x00" * 20)
    with pytest.raises(MalformedFrame):                # more consumed than received
        fr.decode_cack(frame(fr.encode_cack(0, 5, 4)).payload)


@pytest.mark.parametrize("bad, why", [
    (fr.encode_cdata(9, 0, b"x"), "unknown reliable channel 9"),
    (fr.encode_cack(9, 0, 0), "unknown reliable channel 9"),
    (fr.encode_cack(1, 0, 3), "ACK for 3"),            # acks messages never sent on that channel
])
def test_a_frame_for_a_channel_that_does_not_exist_is_a_protocol_error(bad, why):
    _, ended = protocol_error_from(bad)
    assert len(ended) == 1 and ended[0].reason == "protocol-error" and why in ended[0].detail


def test_revision_1_data_and_ack_are_read_as_channel_0():
    core = SessionConnection("host", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.send(b"mine", 0.0)
    core.transmits()
    core.receive_frame(RELAY_ID, frame(fr.encode_data(0, b"old")), 0.1)
    core.receive_frame(RELAY_ID, frame(fr.encode_ack(1)), 0.1)
    got = drain_events(core)
    assert [(e.data, e.channel) for e in got if isinstance(e, ev.DataReceived)] == [(b"old", 0)]
    assert [(e.released, e.channel) for e in got if isinstance(e, ev.SendWindowOpened)] == [(1, 0)]
    assert core.unacked_bytes == 0 and not core.closed


# --- priority: the transmit order under a backlog ------------------------------------------------

def data_order(transmits) -> list[tuple[int, int]]:
    return [fr.decode_cdata(frame(t.frame).payload)[:2] for t in transmits if t.frame_type == FrameType.CDATA]


def test_with_a_backlog_higher_priority_channels_go_first_and_each_keeps_its_order():
    core = SessionConnection("client", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.transmits()
    for i in range(3):
        core.send(b"b" * 1000, 0.0, "bulk")
    for i in range(3):
        core.send(b"g" * 1000, 0.0, "graphics")
    core.send(b"d" * 1000, 0.0)
    core.send(b"i" * 10, 0.0, "input")             # sent last, goes first
    room = {"n": 1000}
    first = data_order(core.transmits(0.0, lambda pid: room["n"]))
    assert first == [(1, 0), (0, 0)]                  # input, then default; the budget is used up
    assert core.backlog
    room["n"] = 0
    assert data_order(core.transmits(0.01, lambda pid: room["n"])) == []     # the path is full
    core.send(b"i" * 10, 0.01, "input")               # arrives while graphics and bulk wait
    room["n"] = 2500
    assert data_order(core.transmits(0.02, lambda pid: room["n"])) == [(1, 1), (2, 0), (2, 1), (2, 2)]
    assert data_order(core.transmits(0.03)) == [(3, 0), (3, 1), (3, 2)]
    assert not core.backlog


def test_the_datagram_lane_goes_first_and_drops_what_expired_before_the_path_sees_it():
    core = SessionConnection("client", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.transmits()
    core.send(b"g" * 1000, 0.0, "graphics")
    assert core.send_datagram(b"late", 0.0, deadline=0.05)
    assert core.send_datagram(b"fresh", 0.0, deadline=0.5)
    assert core.send_datagram(b"no-deadline", 0.0)
    out = core.transmits(0.1)
    kinds = [t.frame_type for t in out]
    assert kinds == [FrameType.DGRAM, FrameType.DGRAM, FrameType.CDATA]
    assert [fr.decode_dgram(frame(t.frame).payload)[2] for t in out[:2]] == [b"fresh", b"no-deadline"]
    assert out[0].deadline == 0.5 and out[1].deadline is None
    c = core.counters
    assert (c["datagrams_sent"], c["datagrams_expired"], c["datagrams_dropped"]) == (2, 1, 1)


def test_each_channel_has_its_own_window():
    from shortpath.config import Timing
    core = SessionConnection("client", 0.0, timing=Timing(send_window_bytes=2000))
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.send(b"b" * 1500, 0.0, "bulk")
    assert not core.can_send(1000, "bulk")
    assert core.can_send(1000, "input") and core.can_send(1000)
    with pytest.raises(LocalError, match="bulk"):
        core.send(b"b" * 1000, 0.0, "bulk")
    core.send(b"i" * 1000, 0.0, "input")


# --- timelines ------------------------------------------------------------------------------------

def test_a_message_held_on_one_channel_does_not_hold_another():
    p = ChannelPair()
    p.start_upgrades()
    p.run(0.5)
    assert on_udp(p, "client") and on_udp(p, "host")
    # graphics frames from the host: one is retransmitted for 400 ms (its stream waits)
    p.stream_ch("host", 2, 20, 0.02, start=0.5, size=20_000)
    p.stream_ch("host", 1, 40, 0.01, start=0.5)
    p.at(0.6, lambda: p.holds.__setitem__(("host", 2), 1.0))
    p.at(0.61, lambda: p.holds.pop(("host", 2)))
    p.run(2.0)
    p.assert_channels_exact()
    inputs = p.ch_sent["host"][1]
    late = [p.arrived_at[m] - p.sent_at[m] for m in inputs if 0.6 <= p.sent_at[m] <= 1.0]
    assert late and max(late) <= p.udp_delay + 0.001          # input never waited for graphics
    frames = [m for m in p.ch_sent["host"][2] if 0.6 <= p.sent_at[m] <= 0.95]
    assert frames and min(p.arrived_at[m] for m in frames) >= 1.0   # graphics did wait (in order)


def test_on_the_relay_channels_share_one_stream_but_keep_their_own_order():
    p = ChannelPair()
    for ch in range(4):
        p.stream_ch("client", ch, 30, 0.004 + ch * 0.001)
        p.stream_ch("host", ch, 30, 0.005)
    p.run(1.0)
    p.assert_channels_exact()
    assert all(len(p.ch_sent[s][c]) == 30 for s in SIDES for c in range(4))


def test_switches_replay_every_channel_without_loss_duplication_or_reordering():
    p = ChannelPair()
    p.start_upgrades()
    for side in SIDES:
        for ch in range(4):
            p.stream_ch(side, ch, 400, 0.005, size=200 if ch != 2 else 4000)
    p.run(0.5)
    assert on_udp(p, "client")
    p.set_dark("udp-1", True)                      # failover to the relay, replays per channel
    p.run(1.5)
    assert not on_udp(p, "client")
    p.set_dark("udp-1", False)                     # and back once the path answers again
    p.run(6.0)
    assert on_udp(p, "client") and on_udp(p, "host")
    p.assert_channels_exact()
    assert all(len(p.ch_sent[s][c]) == 400 for s in SIDES for c in range(4))
    reasons = [r for _, _, r in p.switches("client")]
    assert reasons[0] == "upgrade" and reasons[1].startswith("failover") and "recovered" in reasons
    switched = [e for _, e in p.events["client"] if isinstance(e, ev.PathSwitched)]
    assert switched[1].replayed > 0               # something was in flight on several channels


def test_a_switch_replays_only_what_the_peer_has_not_received():
    core = SessionConnection("client", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    for i in range(5):
        core.send(b"m%d" % i, 0.0, "graphics")
    core.transmits(0.0)
    # the host's session holds 0..2 but its application took only 0
    core.receive_frame(RELAY_ID, frame(fr.encode_cack(2, 1, 3)), 0.05)
    drain_events(core)
    core.allow_upgrade(0.05)
    core.manager.path_up("udp-1", "udp-managed", 0.06)
    core.kinds["udp-1"] = "udp-managed"
    core._apply(0.06)
    out = core.transmits(0.06)
    marker = fr.decode_json(frame(out[0].frame).payload)
    assert marker["type"] == "switch" and marker["channels"]["2"] == [5, 3]
    assert data_order(out) == [(2, 3), (2, 4)]
    assert core.unacked_bytes == sum(len(b"m%d" % i) for i in range(1, 5))   # the window still holds 1..4
