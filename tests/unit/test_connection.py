"""Session core timelines: two SessionConnections on a fake clock, joined by a scripted link
(no sockets, no sleeps). The link plays the pump's part: it carries transmits with a delay,
holds a dark path's reliable frames and delivers them when it lights up (as SCTP
retransmission does), loses its best-effort ones, sets up UDP attempts, and tells each side
when a path ends."""

import pytest

from shortpath.config import Timing
from shortpath.errors import LocalError, SessionClosed
from shortpath.paths.manager import RELAY_ID
from shortpath.session import events as ev
from shortpath.session.connection import MAX_MESSAGE, SessionConnection
from shortpath.wire import frames as fr
from shortpath.wire.frames import MAX_SESSION_PAYLOAD, FrameType

# the link and its helpers live in corepair.py; the names stay importable from here
from tests.unit.corepair import (  # noqa: F401
    GONE, OTHER, SIDES, FakePath, Pair, drain_events, frame, msg, on_udp, protocol_error_from, streaming_on_udp,
)


# --- upgrade and replay ----------------------------------------------------------------------

def test_upgrade_switches_both_sides_and_replays_what_is_unacknowledged():
    p = Pair()
    p.start_upgrades()
    p.stream("client", 200, 0.005)
    p.run(1.5)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 200
    t, sw = p.first("client", ev.PathSwitched)
    assert sw.path_id == "udp-1" and sw.reason == "upgrade" and sw.from_path_id == RELAY_ID
    assert 0.2 <= t <= 0.25                       # set-up time plus one UDP delay
    assert sw.replayed > 0                        # messages in flight on the relay went again on UDP
    assert p.cores["host"].duplicates_dropped > 0    # ... and the receiver dropped the copies
    assert on_udp(p, "client") and on_udp(p, "host")
    peer = [h for h in p.cores["host"].history if h["event"] == "peer-switch"]
    assert peer and peer[0]["transport"] == "udp-managed"


def test_no_upgrade_before_it_is_allowed_and_failures_back_off():
    p = Pair(upgrade_ok=False)
    p.run(1.0)
    assert p.first("client", ev.UpgradeRequested) == (None, None)     # not allowed yet
    p.start_upgrades()
    p.run(7.0)
    asked = [round(t, 2) for t, e in p.events["client"] if isinstance(e, ev.UpgradeRequested)]
    # first at once, then after each failure (set-up 0.2 s) a backoff 0.5, 1.0, 1.5, 1.5 s
    gaps = [round(b - a, 2) for a, b in zip(asked, asked[1:])]
    assert asked[0] == 1.0 and gaps[:4] == [0.7, 1.2, 1.7, 1.7]
    assert p.cores["client"].active == RELAY_ID and p.cores["client"].manager.attempt == len(asked)


def test_host_answers_each_attempt_once_and_only_when_allowed():
    host = SessionConnection("host", 0.0)
    host.path_added(RELAY_ID, "tcp-relay", 0.0)
    up = fr.decode_one(fr.encode_json(FrameType.SIGNAL, {"type": "upgrade", "attempt": 1}), MAX_SESSION_PAYLOAD)
    host.receive_frame(RELAY_ID, up, 0.1)
    assert host.next_event() is None              # UDP not allowed for this session (yet)
    host.allow_upgrade(0.2)
    host.receive_frame(RELAY_ID, up, 0.3)
    host.receive_frame(RELAY_ID, up, 0.4)         # the same attempt again: ignored
    assert host.next_event() == ev.UpgradeRequested(1, initiator=False)
    assert host.next_event() is None


# --- duplicates, early messages, bad input -----------------------------------------------------

def test_duplicate_and_early_messages_across_paths_are_delivered_once_in_order():
    core = SessionConnection("host", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    script = [("udp-1", 2, b"c"),        # early, on a path the core has not been told about yet
              (RELAY_ID, 1, b"b"),       # still early
              ("udp-1", 0, b"a"),        # fills the gap: a, b, c
              (RELAY_ID, 1, b"b"),       # replayed copies
              (RELAY_ID, 2, b"c"),
              ("udp-1", 3, b"d")]
    got = []
    for i, (pid, seq, data) in enumerate(script):
        core.receive_frame(pid, frame(fr.encode_data(seq, data)), 0.01 * i)
        got += [e.data for e in drain_events(core) if isinstance(e, ev.DataReceived)]
    assert got == [b"a", b"b", b"c", b"d"]
    assert core.duplicates_dropped == 2
    assert not core.closed


@pytest.mark.parametrize("bad, why", [
    (fr.encode_ack(5), "ACK for 5"),                                       # acks a message never sent
    (fr.encode(FrameType.RELAY, b"x"), "RELAY frame is not valid"),        # a gateway frame inside the session
    (fr.encode(FrameType.SIGNAL, b"not json"), "not UTF-8 JSON"),
    (fr.encode(FrameType.ACK, b"123"), "exactly 8 bytes"),
])
def test_a_peer_that_breaks_the_protocol_ends_the_session(bad, why):
    core, ended = protocol_error_from(bad)
    assert len(ended) == 1 and ended[0].reason == "protocol-error" and why in ended[0].detail
    assert not ended[0].local
    with pytest.raises(SessionClosed):
        core.send(b"x", 0.2)


def test_misuse_is_a_local_error():
    core = SessionConnection("client", 0.0, timing=Timing(send_window_bytes=100))
    with pytest.raises(LocalError):
        SessionConnection("server", 0.0)
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    with pytest.raises(LocalError):
        core.send(b"x" * (MAX_MESSAGE + 1), 0.0)
    core.send(b"x" * 150, 0.0)                     # one message always fits an empty window
    assert not core.can_send(1)
    with pytest.raises(LocalError):
        core.send(b"y", 0.0)                       # ignoring can_send()
    with pytest.raises(LocalError):
        core.send(b"y", 0.0, channel=9)            # no such channel (channels.py)
    with pytest.raises(LocalError):
        core.send(b"y", 0.0, channel="video")


# --- ack clock and back-pressure ------------------------------------------------------------------

def test_ack_clock_acks_after_every_n_or_after_the_delay():
    core = SessionConnection("host", 0.0, timing=Timing(ack_every=4, ack_delay=0.02))
    core.path_added(RELAY_ID, "tcp-relay", 0.0)
    core.handle_timer(0.0)                           # the first RTT ping; the next is 1 s away
    core.transmits()
    for seq in range(5):
        core.receive_frame(RELAY_ID, frame(fr.encode_data(seq, b"m")), 0.1)
    for _ in range(5):
        core.message_consumed(0.1)
    acks = [fr.decode_cack(frame(t.frame).payload)[1] for t in core.transmits() if t.frame_type == FrameType.CACK]
    assert acks == [4]                               # the fourth consumed message
    deadline = core.get_timer()
    assert deadline == pytest.approx(0.12)           # the fifth waits for the delay
    core.handle_timer(deadline - 0.001)
    assert core.transmits() == []
    core.handle_timer(deadline)
    acks = [fr.decode_cack(frame(t.frame).payload)[1] for t in core.transmits() if t.frame_type == FrameType.CACK]
    assert acks == [5]


def test_ack_back_pressure_bounds_what_is_in_flight_and_resumes():
    window = 16 * 1024
    p = Pair(timing=Timing(send_window_bytes=window))
    p.consuming["host"] = False                      # the host application stops reading
    p.stream("client", 100, 0.001, size=1024)
    p.run(0.5)
    assert len(p.sent["client"]) == window // 1024   # the window is full and stays full
    assert len(p.inbox["host"]) == window // 1024     # delivered, not consumed: no ACK went back
    assert p.stalls["client"] > 100
    assert p.cores["client"].unacked_bytes == window
    p.consuming["host"] = True
    p.consume("host")
    p.run(3.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 100
    assert p.max_unacked["client"] <= window
    assert any(isinstance(e, ev.SendWindowOpened) for _, e in p.events["client"])


# --- failover and return -------------------------------------------------------------------------------

def test_failover_during_a_replay_loses_nothing_and_returns():
    p = Pair()
    dark_at = []

    def blackhole_at_the_switch(side, e):
        # The UDP path goes dark the moment the client switches to it: the switch
        # marker and the whole replay are stuck in it.
        if side == "client" and isinstance(e, ev.PathSwitched) and e.reason == "upgrade":
            p.set_dark(e.path_id, True)
            dark_at.append(p.now)
    p.on_event = blackhole_at_the_switch
    p.start_upgrades()
    p.stream("client", 600, 0.005)
    p.run(1.0)
    assert dark_at
    t_fail, fail = p.first("client", ev.PathSwitched, lambda e: e.path_id == RELAY_ID)
    assert fail.reason.startswith("failover: silent")
    assert 0.6 <= t_fail - dark_at[0] <= 0.61        # dead_after from the first unanswered send
    assert fail.replayed > 0
    p.set_dark("udp-1", False)                       # the held frames arrive now: all duplicates
    light = p.now
    p.run(4.0)
    p.assert_exactly_once_in_order()
    assert p.cores["host"].duplicates_dropped >= fail.replayed
    t_back, back = p.first("client", ev.PathSwitched, lambda e: e.reason == "recovered")
    assert back is not None and 1.0 <= t_back - light <= 1.5     # return_hold of answered probes
    assert on_udp(p, "client")


def test_both_directions_at_once_through_upgrade_failover_and_return():
    p = Pair()
    p.start_upgrades()
    p.stream("client", 800, 0.004)
    p.stream("host", 800, 0.004, start=0.001)
    p.run(0.6)
    assert on_udp(p, "client") and on_udp(p, "host")
    p.set_dark("udp-1", True)
    t0 = p.now
    p.run(t0 + 1.0)
    assert p.cores["client"].active == RELAY_ID and p.cores["host"].active == RELAY_ID
    # the side that noticed first told the other, which followed at once (not after its own dead_after)
    fails = {s: p.first(s, ev.PathSwitched, lambda e: e.path_id == RELAY_ID) for s in SIDES}
    assert all(t is not None and t - t0 <= 0.65 for t, _ in fails.values())
    for side in SIDES:      # what was stuck in the dark path was replayed on the relay: no gap
        assert len(p.sent[OTHER[side]]) - len(p.inbox[side]) <= 10
    p.set_dark("udp-1", False)
    p.run(8.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == len(p.sent["host"]) == 800
    assert on_udp(p, "client") and on_udp(p, "host")


def test_a_probe_lost_in_the_dark_is_not_held_against_the_recovery():
    """Probes the transport accepted while the path was dark expire after the path came
    back; counting them would keep a working path from ever being chosen again."""
    p = Pair()
    p.start_upgrades()
    p.stream("client", 1000, 0.005)
    p.run(0.5)
    p.set_dark("udp-1", True)
    p.run(2.5)
    p.set_dark("udp-1", False)
    p.run(5.0)
    assert on_udp(p, "client")
    q = p.cores["client"].path_quality("udp-1")
    assert q["probe_loss"] > 0 and q["recent_probe_loss"] == 0.0


# --- closing -------------------------------------------------------------------------------------

def test_close_with_unacknowledged_data_delivers_it_before_the_end():
    p = Pair()
    p.consuming["host"] = False                       # nothing gets acknowledged
    for i in range(10):
        p.cores["client"].send(msg("client", i), 0.0)
        p.sent["client"].append(msg("client", i))
    assert p.cores["client"].unacked_bytes > 0
    p.cores["client"].close("bye", "user quit", 0.0)
    p.run(1.0)
    assert p.inbox["host"] == p.sent["client"]
    kinds = [type(e).__name__ for _, e in p.events["host"]]
    assert kinds.index("SessionEnded") > max(i for i, k in enumerate(kinds) if k == "DataReceived")
    _, end = p.first("host", ev.SessionEnded)
    assert (end.reason, end.detail, end.local) == ("bye", "user quit", False)
    _, mine = p.first("client", ev.SessionEnded)
    assert mine.local and p.cores["client"].history[-1]["event"] == "end"
    with pytest.raises(SessionClosed):
        p.cores["client"].send(b"late", 1.0)
    assert p.cores["client"].get_timer() is None
    assert not p.cores["client"].send_datagram(b"late", 1.0)
    assert p.cores["client"].counters["datagrams_dropped"] == 1


def test_close_on_udp_tells_the_peer_on_both_paths_once():
    p = Pair()
    p.start_upgrades()
    p.run(0.5)
    assert on_udp(p, "client")
    p.cores["client"].close("bye", "", p.now)
    closes = [t.path_id for t in p.cores["client"].transmits() if t.frame_type == FrameType.CLOSE]
    assert sorted(closes) == [RELAY_ID, "udp-1"]
    for pid in closes:         # deliver both by hand; the second is ignored
        p.cores["host"].receive_frame(pid, frame(fr.encode_json(FrameType.CLOSE, {"reason": "bye"})), p.now)
    ends = [e for e in drain_events(p.cores["host"]) if isinstance(e, ev.SessionEnded)]
    assert len(ends) == 1 and ends[0].reason == "bye"


# --- the relay leg ends while the session is on UDP -------------------------------------------------

def test_relay_leg_ends_while_on_udp_the_session_goes_on_and_signals_move_to_udp():
    p = Pair()
    p.start_upgrades()
    p.stream("client", 600, 0.005)
    p.stream("host", 600, 0.005)
    p.run(0.5)
    p.path_ends(RELAY_ID, "gateway-shutdown")           # a gateway restart
    p.run(1.0)
    for side in SIDES:
        core = p.cores[side]
        assert not core.closed and core.relay is None and core.relay_lost_reason == "gateway-shutdown"
        assert any(h["event"] == "relay-lost" for h in core.history)
    p.cores["client"].send_signal({"type": "hello-again"})
    assert [t.path_id for t in p.cores["client"].transmits()] == ["udp-1"]
    # a hiccup shorter than alone_dead_after (5 s) is ridden out: there is nowhere to go
    p.set_dark("udp-1", True)
    p.run(3.5)
    assert not p.cores["client"].closed and not p.cores["host"].closed
    p.set_dark("udp-1", False)
    p.run(6.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 600
    # dark for good: the session ends alone_dead_after after the first unanswered send
    p.stream("client", 10_000, 0.005, start=p.now)
    p.set_dark("udp-1", True)
    dark = p.now
    p.run(dark + 8.0)
    t_end, end = p.first("client", ev.SessionEnded)
    assert end.reason == "all-paths-lost" and 5.0 <= t_end - dark <= 5.1


def test_relay_says_the_host_is_gone_and_udp_is_silent_the_client_learns_it_in_dead_after():
    p = streaming_on_udp(Pair(), ("client",), 10_000, until=0.5)
    # the host process dies: its UDP socket goes silent and the gateway ends the relay saying so
    p.set_dark("udp-1", True)
    p.path_ends(RELAY_ID, "host-gone")
    t0 = p.now
    p.run(3.0)
    t_end, end = p.first("client", ev.SessionEnded)
    assert end.reason == "host-gone" and "udp-managed path failed" in end.detail
    assert t_end - t0 <= 0.61


def test_relay_loss_while_on_the_relay_ends_the_session_at_once():
    p = Pair()
    p.run(0.1)
    p.close_path(RELAY_ID, "host", "host-app-done")
    p.run(0.5)
    t, end = p.first("client", ev.SessionEnded)
    assert end.reason == "host-gone" and t == pytest.approx(0.12)


def test_the_core_does_no_io_and_reads_no_clock():
    """connection.py names no asyncio, socket, time or transport module, and importing it
    (with what it imports) loads none of them."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import shortpath.session.connection as core_module
    tree = ast.parse(Path(core_module.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    banned = ("asyncio", "socket", "time", "transport", "ssl", "selectors")
    assert not [m for m in names if any(part in banned for part in m.split("."))], names
    probe = ("import sys, shortpath.session.connection; "
             "print([m for m in ('asyncio', 'socket', 'ssl', 'shortpath.transport') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
