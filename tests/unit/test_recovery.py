"""RackLossDetector: event tables on a fake clock, then timelines over linkmodel.py."""

from __future__ import annotations

import pytest

from shortpath.transport.udp.congestion import BbrController
from shortpath.transport.udp.recovery import PACKET_THRESHOLD, RackLossDetector
from tests.unit.linkmodel import LinkConfig, Simulation, mbit

RTT = 0.04
MSS = 1200


def warmed(**kw) -> RackLossDetector:
    """A detector that has seen a steady 40 ms RTT."""
    rack = RackLossDetector(**kw)
    for _ in range(20):
        rack.on_rtt_sample(0.0, RTT)
    return rack


# ---- RTT estimator and RTO ---------------------------------------------------------------

def test_rto_before_and_after_samples():
    rack = RackLossDetector(initial_rto=1.0, min_rto=0.2, max_rto=60.0)
    assert rack.rto() == 1.0 and rack.srtt is None
    rack.on_rtt_sample(0.0, 0.1)
    assert rack.srtt == pytest.approx(0.1) and rack.rttvar == pytest.approx(0.05)
    assert rack.rto() == pytest.approx(0.1 + 4 * 0.05)
    for _ in range(50):
        rack.on_rtt_sample(0.0, 0.01)
    assert rack.rto() == 0.2                      # clamped at min_rto
    assert rack.min_rtt == 0.01 and rack.latest_rtt == 0.01


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        RackLossDetector(min_rto=0.0)
    with pytest.raises(ValueError):
        RackLossDetector(max_ack_delay=-1)


# ---- RACK time threshold and packet threshold ---------------------------------------------

def test_older_packet_is_lost_only_after_nine_eighths_of_an_rtt():
    rack = warmed()
    rack.on_sent(0.000, 1, MSS)
    rack.on_sent(0.002, 2, MSS)
    rack.on_sent(0.004, 3, MSS)
    # packet 2 is acked at 42 ms (3 is still on its way): packet 1 may be reordered, for 45 ms
    # after its send
    assert rack.on_acked(0.042, [2]) == []
    deadline = rack.get_timer()
    assert deadline == pytest.approx(0.0 + RTT * 9 / 8)
    assert rack.handle_timer(deadline - 0.001) == ([], False)
    assert rack.handle_timer(deadline) == ([1], False)
    assert rack.outstanding == 1 and rack.counts["lost_time"] == 1


def test_once_the_newest_transmission_is_acked_an_older_missing_one_is_lost_at_once():
    rack = warmed()
    for i, t in enumerate((0.000, 0.001, 0.002, 0.003)):
        rack.on_sent(t, i + 1, MSS)
    # the frame's last packet (4) is acked, 3 is missing: nothing sent later can still
    # overtake 3, so it is lost now, not 45 ms after its send (only one packet after it:
    # the packet threshold cannot say so either)
    assert rack.on_acked(0.043, [1, 2, 4]) == [3]
    assert rack.counts["lost_tail"] == 1 and rack.outstanding == 0


def test_the_tail_rule_is_off_once_the_path_has_reordered():
    rack = warmed()
    rack.on_sent(0.000, 1, MSS)
    rack.on_sent(0.001, 2, MSS)
    assert rack.on_acked(0.041, [2]) == [1]         # judged lost by the tail rule ...
    assert rack.on_acked(0.0415, [1]) == []         # ... but it arrives: a spurious loss
    assert rack.reordering_seen
    rack.on_sent(0.100, 3, MSS)
    rack.on_sent(0.101, 4, MSS)
    assert rack.on_acked(0.141, [4]) == []          # now only time counts
    assert rack.get_timer() == pytest.approx(0.100 + rack.reo_wnd + max(rack.srtt, rack.latest_rtt))


def test_packets_sent_after_the_newest_acked_one_are_not_judged():
    rack = warmed()
    for seq in range(5):
        rack.on_sent(seq * 0.001, seq, MSS)
    assert rack.on_acked(0.1, [1]) == [0]          # only 0 was sent before 1
    assert rack.outstanding == 3


def test_packet_threshold_declares_loss_before_the_time_window():
    rack = warmed()
    for seq in range(5):
        rack.on_sent(seq * 0.001, seq, MSS)
    # at 40.5 ms the time window (45 ms) has not passed for packet 0, but 1..3 are acked
    assert rack.on_acked(0.0405, [1, 2]) == []
    assert rack.on_acked(0.0405, [3]) == [0]
    assert PACKET_THRESHOLD == 3


def test_reordering_grows_the_window_and_turns_the_packet_threshold_off():
    rack = warmed()
    for seq in range(6):
        rack.on_sent(seq * 0.001, seq, MSS)
    lost = rack.on_acked(0.06, [1, 2, 3, 4, 5])
    assert lost == [0]
    window = rack.reo_wnd
    assert not rack.reordering_seen
    # ... but 0 was only late: its ack arrives before any retransmission
    assert rack.on_acked(0.061, [0]) == []
    assert rack.counts["spurious"] == 1
    assert rack.reordering_seen and rack.reo_wnd > window
    # from now on, three later acks alone do not make a packet lost
    for seq in range(10, 15):
        rack.on_sent(1.0 + (seq - 10) * 0.001, seq, MSS)
    assert rack.on_acked(1.0405, [11, 12, 13, 14]) == []
    assert rack.get_timer() == pytest.approx(1.0 + RTT + rack.reo_wnd)


def test_ack_of_a_retransmission_too_early_to_be_its_own_is_spurious():
    rack = warmed()
    rack.on_sent(0.0, 1, MSS)
    rack.on_sent(0.01, 2, MSS)
    assert rack.on_acked(0.05, [2]) == [1]
    rack.on_sent(0.05, 1, MSS)                        # the retransmission
    rack.on_acked(0.052, [1])                         # 2 ms later: the original's ack
    assert rack.counts["spurious"] == 1
    rack2 = warmed()
    rack2.on_sent(0.0, 1, MSS)
    rack2.on_sent(0.01, 2, MSS)
    rack2.on_acked(0.05, [2])
    rack2.on_sent(0.05, 1, MSS)
    rack2.on_acked(0.091, [1])                        # one RTT later: a genuine repair
    assert rack2.counts["spurious"] == 0


def test_forget_stops_tracking():
    rack = warmed()
    rack.on_sent(0.0, 1, MSS)
    rack.on_sent(0.001, 2, MSS)
    rack.forget(1)
    assert rack.on_acked(1.0, [2]) == []
    assert rack.get_timer() is None


# ---- tail-loss probe ----------------------------------------------------------------------

def test_tail_loss_probe_fires_when_the_last_ack_is_overdue_and_backs_off():
    rack = warmed(max_ack_delay=0.005)
    rack.on_sent(0.0, 1, MSS)
    rack.on_sent(0.001, 2, MSS)
    first = rack.get_timer()
    # a steady path (rttvar ~ 0): srtt + srtt / 4 + the peer's ack delay after the last send
    pto = RTT * 1.25 + 0.005
    assert first == pytest.approx(0.001 + pto)
    assert rack.handle_timer(first - 0.001) == ([], False)
    assert rack.handle_timer(first) == ([], True)
    assert rack.probe_candidate() == 2                # the most recently sent packet
    rack.on_sent(first, 2, MSS)                       # resent as the probe
    second = rack.get_timer()
    assert second - first == pytest.approx(2 * pto)
    assert rack.handle_timer(second) == ([], True)
    # an ack resets the back-off
    rack.on_acked(second + 0.01, [2])
    assert rack.handle_timer(second + 0.01)[1] is False


def test_timeout_resets_probing():
    rack = warmed()
    rack.on_sent(0.0, 1, MSS)
    t = rack.get_timer()
    rack.handle_timer(t)
    rack.on_timeout(1.0)
    rack.on_sent(1.0, 1, MSS)
    assert rack.get_timer() == pytest.approx(1.0 + 1.25 * RTT)


def test_probe_waits_longer_on_a_path_whose_rtt_varies_but_never_past_two_srtt():
    rack = warmed()
    for rtt in (0.035, 0.045, 0.035, 0.045):
        rack.on_rtt_sample(0.0, rtt)
    rack.on_sent(0.0, 1, MSS)
    assert rack.get_timer() == pytest.approx(rack.srtt + 4 * rack.rttvar)
    assert 1.25 * rack.srtt < rack.get_timer() < 2 * rack.srtt
    for rtt in (0.03, 0.4, 0.03, 0.4):          # a peer that stalls now and then
        rack.on_rtt_sample(0.0, rtt)
    rack.on_sent(1.0, 2, MSS)
    assert 4 * rack.rttvar > rack.srtt
    assert rack.get_timer() == pytest.approx(1.0 + 2 * rack.srtt)


# ---- timelines over the link model --------------------------------------------------------

R = mbit(10)


class _NoProbe(RackLossDetector):
    """RACK without tail-loss probes: the control for the TLP timeline."""

    def handle_timer(self, now):
        lost, _ = super().handle_timer(now)
        return lost, False


@pytest.mark.parametrize("rack_cls, bound", [(RackLossDetector, 2.75 * RTT), (_NoProbe, None)])
def test_lost_last_packet_of_a_burst_is_resent_by_a_probe_in_about_two_rtts(rack_cls, bound):
    # 12 KB frames (10 packets) every 200 ms; the application stops after the sixth frame,
    # whose last packet is dropped: no later packet can reveal the loss
    lost_seq = 59
    sim = Simulation(BbrController(), LinkConfig(rate=R, delay=RTT / 2, buffer_bytes=100_000,
                                                 drop_first_tx=frozenset({lost_seq})),
                     frames=(12_000, 0.2), rack=rack_cls(min_rto=1.0))
    sim.schedule(1.1, lambda: sim.set_source(frames=None))
    res = sim.run(3.0)
    assert max(seq for _, seq, retx in res.send_log if not retx) == lost_seq   # the tail
    sends = [t for t, seq, _ in res.send_log if seq == lost_seq]
    assert len(sends) == 2
    resend_after = sends[1] - sends[0]
    if bound is not None:
        assert resend_after <= bound                  # ~2 srtt: the probe
        assert res.probes >= 1 and res.timeouts == 0
        assert res.deliveries[lost_seq] - sends[0] <= 3.5 * RTT
    else:
        assert resend_after >= 1.0                    # without a probe: T3's second
        assert res.timeouts == 1


@pytest.mark.parametrize("delay", [0.004, 0.02])
def test_reordering_does_not_cause_spurious_loss_beyond_the_window(delay):
    # 2 % of packets arrive `delay` late. 4 ms is inside the initial window (40 ms / 8 = 5 ms);
    # 20 ms is outside it, so a few losses are spurious until the window has grown past it.
    rack = RackLossDetector(min_rto=1.0)
    sim = Simulation(BbrController(), LinkConfig(rate=R, delay=RTT / 2, buffer_bytes=100_000,
                                                 reorder=0.02, reorder_delay=delay, seed=5),
                     rack=rack)
    res = sim.run(10.0)
    spurious_times = [t for t, seq, retx in res.send_log if retx]
    if delay < RTT / 8:
        assert rack.counts["spurious"] == 0 and res.retransmissions == 0
    else:
        assert 0 < rack.counts["spurious"] <= 8
        assert rack.reo_wnd >= delay
        assert max(spurious_times) < 2.0              # none once the window had adapted
    assert res.goodput(0.0, 10.0) >= 0.95 * R
