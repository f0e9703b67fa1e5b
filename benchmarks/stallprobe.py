"""Where a latency tail comes from: event-loop stalls and garbage-collector pauses in one process.

A benchmark peer runs a :class:`StallProbe` next to its work. The probe wakes every
``period`` seconds and notes how late it woke: a late wake-up means the event loop was busy
(a long callback, a burst of packets to decrypt) or the process was not scheduled. It also
times every garbage collection through ``gc.callbacks``. Both are stamped with
CLOCK_MONOTONIC, which every network namespace of the lab shares, so the stalls of the client
and of the host can be laid next to the send times of the events that came late.

The probe costs one wake-up per period (~20 us of Python each: 1 % of a core at 2 ms), so the
lab runs it only while a measurement runs: tickers left on in every idle client and session of
a full run took enough CPU from the measured peers to cut their bulk by 15-35 %.
"""

from __future__ import annotations

import asyncio
import gc
import time

#: Stalls and collections kept per report (the longest are kept when there are more).
KEEP = 200


class StallProbe:
    def __init__(self, period: float = 0.002, threshold: float = 0.005) -> None:
        self.period = period
        self.threshold = threshold
        self._task: asyncio.Task | None = None
        self._gc_start: dict[int, int] = {}
        self.reset()

    def reset(self) -> None:
        self.stalls: list[tuple[float, float]] = []     # (start monotonic s, lag ms)
        self.gcs: list[tuple[float, int, float]] = []   # (start monotonic s, generation, ms)
        self.wakeups = 0
        self.lag_total = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Start measuring afresh (what an earlier run recorded is dropped)."""
        self.reset()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            if self._on_gc in gc.callbacks:
                gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        gen = int(info.get("generation", -1))
        if phase == "start":
            self._gc_start[gen] = time.monotonic_ns()
        elif gen in self._gc_start:
            t0 = self._gc_start.pop(gen)
            ms = (time.monotonic_ns() - t0) / 1e6
            if ms >= 1.0 or gen == 2:
                self.gcs.append((t0 / 1e9, gen, round(ms, 2)))

    async def _run(self) -> None:
        period = self.period
        while True:
            t = time.monotonic()
            await asyncio.sleep(period)
            lag = time.monotonic() - t - period
            self.wakeups += 1
            self.lag_total += max(lag, 0.0)
            if lag >= self.threshold:
                self.stalls.append((round(t + period, 4), round(lag * 1000, 2)))

    def report(self, reset: bool = True) -> dict:
        """The stalls and collections since the last report, longest first if trimmed."""
        stalls = sorted(self.stalls, key=lambda s: -s[1])[:KEEP]
        gcs = sorted(self.gcs, key=lambda g: -g[2])[:KEEP]
        out = {"period_ms": self.period * 1000, "threshold_ms": self.threshold * 1000,
               "wakeups": self.wakeups,
               "mean_lag_ms": round(self.lag_total / self.wakeups * 1000, 3) if self.wakeups else None,
               "stalls": sorted(stalls), "stall_count": len(self.stalls),
               "max_stall_ms": max((s[1] for s in self.stalls), default=0.0),
               "gc": sorted(gcs), "gc_count": len(self.gcs),
               "max_gc_ms": max((g[2] for g in self.gcs), default=0.0)}
        if reset:
            self.reset()
        return out
