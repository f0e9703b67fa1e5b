"""Path manager timelines on a fake clock and a scripted link (no sockets, no sleeps)."""

import heapq
import random

import pytest

from shortpath.session.events import ClosePath, SendProbe, StartUpgrade, SwitchPath
from shortpath.session.manager import RELAY_ID, PathManager, PathTiming
from shortpath.session.path import Quality, better


class Sim:
    """Drives a PathManager: app traffic on the active path, a UDP link that can go dark or lossy."""

    def __init__(self, *, initiator=True, udp_ok=True, rtt=0.02, traffic_every=0.02, setup=0.3,
                 upgrade_timeout=2.0, loss=0.0, seed=1, timing=None):
        self.now = 0.0
        self.m = PathManager(0.0, initiator=initiator, timing=timing)
        self.udp_ok = udp_ok          # can a new UDP path be set up / does the current one carry packets
        self.rtt, self.setup, self.upgrade_timeout, self.loss = rtt, setup, upgrade_timeout, loss
        self.traffic_every = traffic_every
        self.rng = random.Random(seed)
        self.q = []                   # (time, seq, fn)
        self.seq = 0
        self.switches: list[tuple[float, SwitchPath]] = []
        self.probes: list[tuple[float, SendProbe]] = []
        self.upgrades: list[tuple[float, StartUpgrade]] = []
        self.closed: list[tuple[float, ClosePath]] = []
        if traffic_every:
            self.at(0.0, self._traffic)

    def at(self, t, fn):
        self.seq += 1
        heapq.heappush(self.q, (t, self.seq, fn))

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

    def run(self, until):
        while True:
            self._drain()
            timer = self.m.get_timer()
            nxt = self.q[0][0] if self.q else None
            if timer is not None and (nxt is None or timer <= nxt) and timer <= until:
                self.now = max(self.now, timer)
                self.m.handle_timer(self.now)
                continue
            if nxt is None or nxt > until:
                self.now = until
                return
            t, _, fn = heapq.heappop(self.q)
            self.now = max(self.now, t)
            fn()

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
        s.m.probe_result("udp-1", None, s.now)     # as the driver reports lost probes
    assert s.m.paths["udp-1"].quality.loss == 1.0
    s.udp_ok = True
    s.run(7.0)
    assert s.m.active == "udp-1" and s.switches[-1][1].reason == "recovered"
    st = s.m.paths["udp-1"]
    assert st.probes_lost == 12 and st.quality.loss == 0.0   # lifetime kept, window restarted
