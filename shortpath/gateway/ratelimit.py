"""Per-source token buckets (pure: the clock is an argument).

The gateway charges one token per launch to the client's source address:
``burst`` launches at once, then ``rate`` per second. Buckets that are full
again are forgotten, so memory stays bounded by the number of *active*
sources; ``max_sources`` caps even that (the oldest bucket is dropped).
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_sources: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # source -> (tokens, t)

    def allow(self, source: str, now: float) -> bool:
        tokens, t = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - t) * self.rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        if tokens < self.burst:
            self._buckets[source] = (tokens, now)
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        return ok

    def retry_after(self, source: str, now: float) -> float:
        tokens, t = self._buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - t) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)
