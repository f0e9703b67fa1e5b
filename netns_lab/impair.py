"""Link impairment: parameters and the per-packet model (pure; the clock is an argument).

The model decides, for each packet arriving at ``now``, either "drop" or a release time.  The
emulator process (``netns_lab.emulator``) holds the packet in the kernel (NFQUEUE) until then.

Delay and jitter
    release = arrival + delay + j(arrival), where j is a *time-correlated* process: knots drawn
    every ``jitter_corr_ms`` from a normal distribution (truncated at +-2.5 sd, so its mean is
    exactly zero) and linearly interpolated.  Knots are scaled by sqrt(3/2) so the time-averaged
    standard deviation of j equals ``jitter_ms``.  Because j changes slowly, consecutive packets
    get almost the same delay, so jitter alone does not reorder: the slope of j is bounded by
    6.1 * jitter_ms / corr, and ``corr`` is raised to at least 8 * jitter_ms, keeping the slope
    below 1 (release times stay monotone).  As a safety net the release time is also clamped to
    be >= the previous one unless reordering is requested; the clamp is counted in stats.  If
    delay + j would be negative it is clamped to zero (document delay >= 2.5 * jitter to avoid).
Random loss
    each packet is dropped with probability ``loss``.
Bursty loss (Gilbert-Elliott)
    a two-state Markov chain stepped once per packet: good -> bad with probability ``ge_p``,
    bad -> good with ``ge_r``; a packet is lost with probability ``ge_loss_good`` in the good
    state and ``ge_loss_bad`` in the bad one.  Mean loss = (p*lb + r*lg) / (p + r); with lg = 0 and
    lb = 1 the mean burst length is 1/r.  ``gilbert_elliott(mean_loss, mean_burst)`` derives p, r.
Reordering
    each packet is, with probability ``reorder``, held ``reorder_gap_ms`` longer than its normal
    release (not subject to the monotone clamp), so packets behind it overtake it.
Rate limit
    not in this model: a tbf qdisc on the sending interface (``rate_kbit``, ``rate_queue_ms``),
    i.e. serialisation happens before propagation delay, as on a real link.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Impairment:
    delay_ms: float = 0.0          # constant one-way delay added
    jitter_ms: float = 0.0         # standard deviation of the delay variation
    jitter_corr_ms: float = 50.0   # correlation time of the variation (raised to >= 8*jitter)
    loss: float = 0.0              # independent random loss probability
    ge_p: float = 0.0              # Gilbert-Elliott good -> bad per packet (0 = off)
    ge_r: float = 1.0              # Gilbert-Elliott bad -> good per packet
    ge_loss_good: float = 0.0
    ge_loss_bad: float = 1.0
    reorder: float = 0.0           # probability a packet is held back (and overtaken)
    reorder_gap_ms: float = 10.0   # extra hold for a reordered packet
    rate_kbit: float | None = None  # tbf rate limit on the sender side; None = unlimited
    rate_queue_ms: float = 50.0    # tbf queue (latency) before tail drop
    seed: int | None = None

    def needs_queue(self) -> bool:
        """True if a userspace emulator is needed (rate limits are done by tbf alone)."""
        return bool(self.delay_ms or self.jitter_ms or self.loss or self.ge_p or self.reorder)

    def is_noop(self) -> bool:
        return not self.needs_queue() and not self.rate_kbit

    def to_dict(self) -> dict:
        return asdict(self)

    def mean_loss(self) -> float:
        ge = 0.0
        if self.ge_p:
            ge = (self.ge_p * self.ge_loss_bad + self.ge_r * self.ge_loss_good) / (self.ge_p + self.ge_r)
        return 1 - (1 - self.loss) * (1 - ge)


def gilbert_elliott(mean_loss: float, mean_burst: float) -> dict:
    """Parameters for a simple Gilbert model (loss only in the bad state, always there)."""
    if not 0 < mean_loss < 1 or mean_burst < 1:
        raise ValueError("need 0 < mean_loss < 1 and mean_burst >= 1")
    r = 1.0 / mean_burst
    p = mean_loss * r / (1 - mean_loss)
    return {"ge_p": p, "ge_r": r, "ge_loss_good": 0.0, "ge_loss_bad": 1.0}


_TRUNC = 2.5
_SCALE = math.sqrt(1.5)


class _Knots:
    """Piecewise-linear zero-mean process with knots every ``period`` seconds."""

    def __init__(self, sd: float, period: float, rng: random.Random):
        self.sd = sd
        self.period = period
        self.rng = rng
        self.t0: float | None = None
        self.v0 = self.v1 = 0.0

    def _draw(self) -> float:
        while True:
            x = self.rng.gauss(0.0, 1.0)
            if -_TRUNC <= x <= _TRUNC:
                return x * self.sd * _SCALE

    def value(self, now: float) -> float:
        if self.sd <= 0:
            return 0.0
        if self.t0 is None:
            self.t0, self.v0, self.v1 = now, self._draw(), self._draw()
        if now - self.t0 >= self.period:
            steps = int((now - self.t0) // self.period)
            if steps > 1:  # idle for a while: restart from fresh knots
                self.v0, self.v1 = self._draw(), self._draw()
            else:
                self.v0, self.v1 = self.v1, self._draw()
            self.t0 += steps * self.period
        u = (now - self.t0) / self.period
        return self.v0 + (self.v1 - self.v0) * u


@dataclass
class ModelStats:
    packets: int = 0
    dropped_random: int = 0
    dropped_burst: int = 0
    reordered: int = 0
    clamped: int = 0


class LinkModel:
    """Per-packet decisions for one direction of one link."""

    def __init__(self, imp: Impairment):
        self.stats = ModelStats()
        self._last_release = -math.inf
        self._bad = False
        self.configure(imp)

    def configure(self, imp: Impairment) -> None:
        self.imp = imp
        self.rng = random.Random(imp.seed)
        corr = max(imp.jitter_corr_ms, 8 * imp.jitter_ms) / 1000.0
        self._jit = _Knots(imp.jitter_ms / 1000.0, corr or 0.05, self.rng)

    def decide(self, now: float) -> float | None:
        """Return the release time for a packet that arrived at ``now``, or None to drop it."""
        imp = self.imp
        st = self.stats
        st.packets += 1
        rnd = self.rng.random
        if imp.ge_p:
            if self._bad:
                if rnd() < imp.ge_r:
                    self._bad = False
            elif rnd() < imp.ge_p:
                self._bad = True
            if rnd() < (imp.ge_loss_bad if self._bad else imp.ge_loss_good):
                st.dropped_burst += 1
                return None
        if imp.loss and rnd() < imp.loss:
            st.dropped_random += 1
            return None
        d = imp.delay_ms / 1000.0 + self._jit.value(now)
        release = now + (d if d > 0 else 0.0)
        if imp.reorder and rnd() < imp.reorder:
            st.reordered += 1
            return release + imp.reorder_gap_ms / 1000.0
        if release < self._last_release:
            st.clamped += 1
            release = self._last_release
        self._last_release = release
        return release


def merge(base: Impairment | None, **changes) -> Impairment:
    return replace(base or Impairment(), **changes)
