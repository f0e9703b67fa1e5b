"""Path manager timelines on a fake clock and a scripted link (no sockets, no sleeps)."""

import random

import pytest

from shortpath.paths.actions import ClosePath, SendProbe, StartUpgrade, SwitchPath
from shortpath.paths.manager import RELAY_ID, PathManager, PathTiming
from shortpath.paths.path import Quality, better

from tests.unit.corepair import Timeline


class Sim(Timeline):
    """Drives a PathManager: app traffic on the active path, a UDP link that can go dark or lossy."""

    def __init__(self, *, initiator=True, udp_ok=True, rtt=0.02, traffic_every=0.02, setup=0.3,
                 upgrade_timeout=2.0, loss=0.0, seed=1, timing=None):
        super().__init__()
        self.m = PathManager(0.0, initiator=initiator, timing=timing)
        self.udp_ok = udp_ok          # can a new UDP path be set up / does the current one carry packets
        self.rtt, self.setup, self.upgrade_timeout, self.loss = rtt, setup, upgrade_timeout, loss
        self.traffic_every = traffic_every
        self.rng = random.Random(seed)
        self.switches: list[tuple[float, SwitchPath]] = []
        self.probes: list[tuple[float, SendProbe]] = []
        self.upgrades: list[tuple[float, StartUpgrade]] = []
        self.closed: list[tuple[float, ClosePath]] = []
        if traffic_every:
            self.at(0.0, self._traffic)

    def _traffic(self):
        self._send(self.m.active)
        self.at(self.now + self.traffic_every, self._traffic)

    def _send(self, path_id):
        self.m.sent(path_id, self.now)
        if path_id == RELAY_ID or (self.udp_ok and self.rng.random() >= self.loss):
            self.at(self.now + self.rtt, lambda: self.m.received(path_id, self.now))

    def _drain(self):
        for a in self.m.actions():
            if isinstance(a, SwitchPath):
                self.switches.append((self.now, a))
            elif isinstance(a, SendProbe):
                self.probes.append((self.now, a))
                self._send(a.path_id)
            elif isinstance(a, StartUpgrade):
                self.upgrades.append((self.now, a))
                n = a.attempt
                if self.udp_ok:
                    self.at(self.now + self.setup, lambda: self.m.path_up(f"udp-{n}", "udp-direct", self.now))
                else:
                    self.at(self.now + self.upgrade_timeout, lambda: self.m.upgrade_failed(n, "timeout", self.now))
            elif isinstance(a, ClosePath):
                self.closed.append((self.now, a))

    # --- Timeline ---
    def settle(self):
        self._drain()

    def next_timer(self):
        timer = self.m.get_timer()
        return None if timer is None else (timer, self.m.handle_timer)

    def kinds(self):
        return [(round(t, 3), s.to, s.reason) for t, s in self.switches]


def test_starts_on_relay_and_upgrades_when_udp_is_verified():
    s = Sim()
    assert s.m.active == RELAY_ID
    s.run(1.0)
    assert [u.attempt for _, u in s.upgrades] == [1]
    assert s.switches[0][1].to == "udp-1" and s.switches[0][1].reason == "upgrade"
    assert s.switches[0][0] == pytest.approx(0.3)


def test_host_never_starts_upgrades_but_follows_path_events():
    s = Sim(initiator=False)
    s.run(2.0)
    assert s.upgrades == [] and s.m.active == RELAY_ID
    s.m.path_up("udp-1", "udp-managed", s.now)
    s.run(3.0)
    assert s.m.active == "udp-1"


def test_failover_within_one_second_and_return_within_five():
    s = Sim()
    s.run(5.0)
    assert s.m.active == "udp-1"
    s.udp_ok = False                      # blackhole at t=5
    s.run(8.0)
    fail_t, fail = s.switches[1]
    assert fail.to == RELAY_ID and fail.reason.startswith("failover")
    assert fail_t - 5.0 <= 1.0
    s.udp_ok = True                       # restored at t=8
    s.run(14.0)
    back_t, back = s.switches[2]
    assert back.to == "udp-1" and back.reason == "recovered"
    assert back_t - 8.0 <= 5.0
    assert len(s.switches) == 3


def test_silent_path_is_probed_before_it_is_declared_dead():
    s = Sim(traffic_every=0)              # idle session
    s.run(1.0)
    assert s.m.active == "udp-1"
    s.m.sent("udp-1", s.now)              # one message, never answered
    s.udp_ok = False
    s.run(2.0)
    probe_times = [t for t, p in s.probes if not p.keepalive]
    assert probe_times and probe_times[0] == pytest.approx(1.15)
    assert s.switches[-1][1].to == RELAY_ID and s.switches[-1][0] == pytest.approx(1.6)


def test_idle_keepalives_are_spaced_to_the_binding_lifetime():
    s = Sim(traffic_every=0)
    s.run(61.0)
    keepalives = [t for t, p in s.probes if p.keepalive]
    assert len(keepalives) == 4           # t = 15.3, 30.3, 45.3, 60.3
    assert all(b - a == pytest.approx(15.0) for a, b in zip(keepalives, keepalives[1:]))
    assert not [p for _, p in s.probes if not p.keepalive]


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.10])
def test_lossy_path_does_not_flap(loss):
    s = Sim(loss=loss, seed=3)
    s.run(120.0)
    assert len(s.switches) == 1, s.kinds()    # the upgrade, then no failover at all


def test_flapping_path_is_trusted_less_each_time():
    s = Sim()
    s.run(2.0)
    for k in range(4):                        # dark 1 s, light 3 s, four times
        s.udp_ok = False
        s.run(s.now + 1.0)
        s.udp_ok = True
        s.run(s.now + 3.0)
    returns = [t for t, sw in s.switches if sw.reason == "recovered"]
    failovers = [t for t, sw in s.switches if sw.reason.startswith("failover")]
    # holds of 1 s and 2 s fit in the 3 s light periods; the third (4 s) does
    # not, so the path stays on standby and the fourth dark period costs nothing
    assert len(failovers) == 3 and len(returns) == 2
    assert s.m.return_hold(s.now) >= 4.0


def test_path_down_falls_back_and_retries_with_capped_backoff():
    s = Sim()
    s.run(1.0)
    s.udp_ok = False
    s.m.path_down("udp-1", "dtls closed", s.now)
    s.run(12.0)
    assert s.switches[1][1].reason == "failover: dtls closed"
    times = [t for t, _ in s.upgrades]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # attempt 1 at t=0; path dies at 1.0, retry after 0.5 s; each failed attempt
    # then takes 2 s plus a backoff of 0.5, 1.0, 1.5 (cap), 1.5 ... s
    assert gaps[:4] == pytest.approx([1.5, 2.5, 3.0, 3.5])
    s.udp_ok = True
    s.run(s.now + 5.0)
    assert s.m.active.startswith("udp-") and s.switches[-1][1].reason == "upgrade"


def test_standby_that_never_recovers_is_closed_and_replaced():
    s = Sim()
    s.run(1.0)
    s.udp_ok = False
    s.run(1.0 + 20.0 + 2.0)
    assert s.closed and s.closed[0][1].path_id == "udp-1"
    assert s.upgrades[-1][1].attempt == 2


@pytest.mark.parametrize("kind,q,cur,cq,expect", [
    ("udp-managed", Quality(), "tcp-relay", Quality(), True),
    ("udp-turn", Quality(), "tcp-relay", Quality(), True),
    ("udp-turn", Quality(), "udp-direct", Quality(), False),
    ("udp-direct", Quality(), "udp-turn", Quality(), True),
    ("udp-direct", Quality(loss=0.3), "tcp-relay", Quality(), False),   # too lossy to be worth it
    ("udp-direct", Quality(rtt=0.095), "udp-direct", Quality(rtt=0.1), False),  # < 10 % better: stay
    ("udp-direct", Quality(rtt=0.08), "udp-direct", Quality(rtt=0.1), True),
    ("tcp-relay", Quality(), "udp-direct", Quality(), False),
])
def test_comparator(kind, q, cur, cq, expect):
    assert better(kind, q, cur, cq) is expect


def test_probes_lost_while_dark_do_not_block_the_return():
    s = Sim(traffic_every=0)
    s.run(1.0)
    s.m.sent("udp-1", s.now)
    s.udp_ok = False
    s.run(4.0)                                     # dark: standby probes go unanswered
    for _ in range(12):
        s.m.probe_result("udp-1", None, s.now)     # as the session core reports lost probes
    assert s.m.paths["udp-1"].quality.loss == 1.0
    s.udp_ok = True
    s.run(7.0)
    assert s.m.active == "udp-1" and s.switches[-1][1].reason == "recovered"
    st = s.m.paths["udp-1"]
    assert st.probes_lost == 12 and st.quality.loss == 0.0   # lifetime kept, window restarted


# --- keepalive knob and relay-loss check (issue #6 item 4, faults) -------------------------

def test_keepalive_interval_follows_the_timing_knob_and_zero_turns_it_off():
    s = Sim(traffic_every=0, timing=PathTiming(keepalive_interval=0.5))
    s.run(3.3)
    keepalives = [t for t, p in s.probes if p.keepalive]
    assert len(keepalives) == 6                    # t = 0.8, 1.3, ... 3.3 (path up at 0.3)
    assert all(b - a == pytest.approx(0.5) for a, b in zip(keepalives, keepalives[1:]))
    off = Sim(traffic_every=0, timing=PathTiming(keepalive_interval=0))
    off.run(120.0)
    assert off.m.active == "udp-1" and off.probes == []
    assert off.m.get_timer() is None               # nothing left to wake up for


def test_keepalive_interval_resolution_env_over_policy_over_default():
    from shortpath.config import (DEFAULT_KEEPALIVE_INTERVAL, KEEPALIVE_ENV, ShortpathPolicy,
                                  keepalive_interval)
    from shortpath.errors import ConfigError
    assert keepalive_interval(None, environ={}) == DEFAULT_KEEPALIVE_INTERVAL == 15.0
    assert ShortpathPolicy().to_dict()["keepalive_interval"] == 15.0
    pol = ShortpathPolicy(keepalive_interval=4).to_dict()
    assert keepalive_interval(pol, environ={}) == 4.0
    assert keepalive_interval(pol, environ={KEEPALIVE_ENV: "0.5"}) == 0.5
    assert keepalive_interval(pol, environ={KEEPALIVE_ENV: "0"}) == 0.0
    assert keepalive_interval(pol, environ={KEEPALIVE_ENV: " "}) == 4.0
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigError):
            keepalive_interval(pol, environ={KEEPALIVE_ENV: bad})
    with pytest.raises(ConfigError):
        ShortpathPolicy(keepalive_interval=-2)


def test_keepalive_interval_from_the_gateway_config_file(tmp_path):
    from shortpath.config import load_gateway_config
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[[pool]]\nname = "desktop"\n[pool.shortpath]\nkeepalive_interval = 2.5\n')
    pool = load_gateway_config(str(cfg)).pool("desktop")
    assert pool.shortpath.to_dict()["keepalive_interval"] == 2.5


def test_relay_lost_with_peer_gone_fails_a_dead_path_within_dead_after():
    s = Sim(traffic_every=0)                       # idle: no keepalive due for 15 s
    s.run(1.0)
    assert s.m.active == "udp-1"
    s.udp_ok = False                               # peer gone
    s.m.relay_lost(s.now, peer_gone=True)          # the gateway said "host-gone"
    s.run(2.0)
    assert [p for t, p in s.probes if t == pytest.approx(1.0)]
    fail_t, fail = s.switches[-1]
    assert fail.to == RELAY_ID and fail_t == pytest.approx(1.6)   # = the session ends


def test_relay_lost_keeps_a_live_path():
    s = Sim(traffic_every=0)
    s.run(1.0)
    s.m.relay_lost(s.now, peer_gone=True)
    s.run(5.0)
    assert s.m.active == "udp-1" and len(s.switches) == 1
    assert not s.m.peer_gone_hint                  # the peer answered


def test_alone_on_udp_a_hiccup_is_ridden_out_and_a_long_silence_ends_it():
    s = Sim()                                      # traffic every 20 ms
    s.run(1.0)
    s.m.relay_lost(s.now)                          # gateway restart: no peer-gone hint
    s.run(2.0)
    s.udp_ok = False                               # 2 s hiccup: far past dead_after
    s.run(4.0)
    assert s.m.active == "udp-1" and len(s.switches) == 1
    probes = [t for t, p in s.probes if t > 2.0]
    assert len(probes) >= 6                        # probed every 0.25 s while silent
    s.udp_ok = True
    s.run(6.0)
    st = s.m.paths["udp-1"]
    assert s.m.active == "udp-1" and (st.awaiting_since is None or s.now - st.awaiting_since < 0.1)
    assert len(s.switches) == 1
    s.udp_ok = False                               # now for good
    s.run(12.0)
    fail_t, fail = s.switches[-1]
    assert fail.to == RELAY_ID and 6.0 + 5.0 <= fail_t <= 6.0 + 5.0 + 0.05


def test_answering_the_peers_probe_postpones_our_own_keepalive():
    s = Sim(traffic_every=0, timing=PathTiming(keepalive_interval=1.0))
    s.run(1.0)                                     # path up at 0.3, idle
    for t in (1.2, 2.1, 3.0, 3.9):                 # the peer's keepalives, answered by us
        s.at(t, lambda: s.m.sent("udp-1", s.now, answer_expected=False))
    s.run(4.5)
    assert not [p for _, p in s.probes if p.keepalive]        # the peer keeps the binding for both
    assert s.m.paths["udp-1"].awaiting_since is None          # an answer expects no answer
    s.run(5.0)
    assert [round(t, 3) for t, p in s.probes if p.keepalive] == [4.9]


def test_following_the_peers_failover_then_returning_on_our_own_probes():
    s = Sim(traffic_every=0)
    s.run(1.0)
    s.m.peer_failover("failover: silent 0.60s", s.now)
    s.run(1.01)
    assert s.m.active == RELAY_ID and s.switches[-1][1].reason.startswith("failover: peer")
    assert s.m.paths["udp-1"].state == "standby"
    s.m.peer_failover("failover: silent 0.60s", s.now)          # already on the relay: nothing
    assert len(s.switches) == 2
    s.run(4.0)                                     # the path answers our standby probes: back
    assert s.m.active == "udp-1" and s.switches[-1][1].reason == "recovered"


def test_the_responder_keepalive_timer_runs_longer_so_the_initiator_leads():
    from shortpath.paths.manager import RESPONDER_KEEPALIVE_SLACK
    host = Sim(initiator=False, traffic_every=0, timing=PathTiming(keepalive_interval=1.0))
    host.m.path_up("udp-1", "udp-direct", 0.0)
    host.run(3.0)
    ka = [t for t, p in host.probes if p.keepalive]
    assert ka and ka[0] == pytest.approx(RESPONDER_KEEPALIVE_SLACK) and RESPONDER_KEEPALIVE_SLACK > 1.0


def _on_udp() -> PathManager:
    """A manager whose session moved to a verified udp-direct path at t=0.1."""
    m = PathManager(0.0, initiator=True)
    m.path_up("udp-1", "udp-direct", 0.1)
    m.probe_result("udp-1", 0.01, 0.1)
    m.received("udp-1", 0.1)
    m.handle_timer(0.2)
    m.actions()
    assert m.active == "udp-1"
    return m


def test_packets_heard_below_the_frames_keep_a_stalled_path_up():
    """Frames (answers included) stuck behind an SCTP retransmission timeout, while
    the peer's SACKs keep arriving: the path is not dead. Without the packet-level
    evidence the same timeline fails over at dead_after."""
    def stalled(feed_packets: bool, until: float = 2.5):
        m = _on_udp()
        m.sent("udp-1", 1.0)                       # an event goes out; its answer is stuck
        t = 1.0
        while t < until:
            t += 0.05
            if feed_packets:
                m.heard("udp-1", t - 0.01)         # a SACK heard just before each check
            m.handle_timer(t)
            m.sent("udp-1", t)                     # the app keeps sending meanwhile
        return [a for a in m.actions() if isinstance(a, SwitchPath)]

    assert stalled(feed_packets=False) and stalled(feed_packets=False)[0].to == RELAY_ID
    assert stalled(feed_packets=True) == []
    # ... but not for ever: frames stuck for stall_limit (2 s) fail over even so
    late = stalled(feed_packets=True, until=3.2)
    assert late and late[0].to == RELAY_ID and late[0].reason.startswith("failover: stalled")


def test_packets_that_stop_being_heard_fail_over_dead_after_later():
    m = _on_udp()
    m.sent("udp-1", 1.0)
    m.heard("udp-1", 1.3)                          # the last packet; then the path goes dark
    assert m.get_timer() <= 1.3 + 0.6 + 1e-9
    m.handle_timer(1.6)                            # dead_after since the send, but heard at 1.3
    assert not [a for a in m.actions() if isinstance(a, SwitchPath)]
    m.handle_timer(1.9)                            # dead_after since the last packet
    switches = [a for a in m.actions() if isinstance(a, SwitchPath)]
    assert switches and switches[0].to == RELAY_ID


def test_a_packet_heard_before_the_wait_began_is_no_answer():
    m = _on_udp()
    m.sent("udp-1", 1.0)
    m.heard("udp-1", 0.9)                          # old news: heard before we started waiting
    m.handle_timer(1.7)
    switches = [a for a in m.actions() if isinstance(a, SwitchPath)]
    assert switches and switches[0].to == RELAY_ID and switches[0].reason.startswith("failover")
    # and a standby path does not start recovering on packets alone
    m.heard("udp-1", 1.8)
    assert m.paths["udp-1"].recovered_since is None


def test_upgrades_wait_until_the_session_allows_them():
    m = PathManager(0.0, initiator=True, upgrade=False)
    m.handle_timer(1.0)
    assert m.actions() == [] and m.get_timer() is None
    m.allow_upgrade(2.0)
    assert m.get_timer() == 2.0
    m.handle_timer(2.0)
    assert m.actions() == [StartUpgrade(1, "initial")]
    m.allow_upgrade(2.5)                      # a second call changes nothing
    assert m.get_timer() is None or m.get_timer() > 2.5


def test_a_probe_lost_in_the_dark_counts_in_lifetime_figures_not_against_the_recovery():
    m = PathManager(0.0, initiator=True, upgrade=False)
    m.path_up("udp-1", "udp-direct", 0.1)
    m.sent("udp-1", 0.2)
    m.handle_timer(0.8)                       # silent for dead_after: standby
    assert m.active == RELAY_ID and m.paths["udp-1"].state == "standby"
    m.received("udp-1", 2.0)                  # answers again: recovery starts
    st = m.paths["udp-1"]
    m.probe_result("udp-1", None, 2.1, sent_at=1.5)      # sent while dark, given up on now
    assert (st.quality.loss, st.probes_lost, st.probes_total) == (0.0, 1, 1)
    m.probe_result("udp-1", None, 2.6, sent_at=2.05)     # lost during the recovery: counts
    assert st.quality.loss == 1.0 and st.probes_lost == 2
