"""Client-side workloads for ``shortpath connect --workload desktop|bulk|echo``.

A user checks a network in one command: the workload runs over the session for N seconds
against the example host application (shortpath/app/desktop.py), prints one line per second
and a summary. Two layers:

* :class:`WorkloadStats` -- pure. It is fed timestamped observations (``now`` in seconds, from
  the caller's clock; it never reads one) and answers with per-second buckets and a summary.
  Tested as tables in tests/unit/test_workload_stats.py.
* :func:`run_workload` -- the asyncio pump: sends the traffic, feeds the observations in,
  calls ``on_second`` once a second.

The workloads (first message picks the host's mode, see desktop.py):

========  ===========================================================================
desktop   ``desktop <seconds> 30``: the host streams 20-60 KB frames at 30 fps on the
          ``graphics`` channel; the client sends a 64-byte input event (reliable, on the
          ``input`` channel both ways, so it never waits behind a frame; echoed) and a
          64-byte datagram (echoed) every 20 ms. Frame latency is one-way, from the host's
          wall-clock stamp in each frame: it needs the two clocks in step (same machine or NTP).
bulk      ``bulk``: the client sends 60 KB reliable messages as fast as the session takes
          them, and every 256 KB a ``?`` the host answers with the bytes it has received
          (``got N``); throughput is counted from those answers (delivered, not just sent),
          their round trip is the latency under load. Datagrams as above.
echo      ``echo``: 64-byte reliable messages and datagrams every 20 ms, both echoed.
========  ===========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from typing import Callable

from ..errors import SessionClosed, ShortpathError

WORKLOADS = ("desktop", "bulk", "echo")

#: Input events and datagrams: one every 20 ms (50 Hz), 64 bytes each.
EVENT_INTERVAL = 0.02
EVENT_SIZE = 64
#: The desktop stream's frame rate (the host picks 20-60 KB per frame).
DESKTOP_FPS = 30
#: Bulk: message size, and a delivery query after this many bytes; at most two queries
#: unanswered (so the client never queues more than ~0.5 MB beyond what the host confirmed).
BULK_MESSAGE = 60_000
BULK_QUERY_EVERY = 256 * 1024
#: After the sending stops: how long to wait for the last echoes / the end of the frame stream.
ECHO_GRACE = 3.0
DESKTOP_GRACE = 10.0

_EVENT = struct.Struct("!cIQ")      # kind (I input / D datagram), sequence, sent time (ns)


def percentile(values, p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least ``p`` % of the values at or
    below it); None for no values."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(s)))
    return s[min(rank, len(s)) - 1]


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


class _Bucket:
    __slots__ = ("frames", "frame_ms", "echo_ms", "dgram_ms", "dgrams_sent", "dgrams_echoed", "bytes",
                 "path")

    def __init__(self) -> None:
        self.frames = 0
        self.frame_ms: list[float] = []
        self.echo_ms: list[float] = []
        self.dgram_ms: list[float] = []
        self.dgrams_sent = 0
        self.dgrams_echoed = 0
        self.bytes = 0
        self.path: str | None = None


class WorkloadStats:
    """Observations of one workload run, bucketed by whole seconds since ``start``.

    Every method takes ``now`` (seconds on the caller's clock). Observations before ``start``
    land in second 0; the summary covers everything recorded."""

    def __init__(self, kind: str, start: float) -> None:
        if kind not in WORKLOADS:
            raise ValueError(f"unknown workload {kind!r}")
        self.kind = kind
        self.start = start
        self._buckets: dict[int, _Bucket] = {}
        self.paths: list[str] = []           # transports in the order seen (repeats collapsed)
        self.frames_expected: int | None = None
        self.frames_corrupt = 0
        self.frame_ms: list[float] = []
        self.echo_ms: list[float] = []
        self.dgram_ms: list[float] = []
        self.dgrams_sent = 0
        self.echoes_sent = 0
        self.bytes = 0
        self.last_at: float | None = None

    def _b(self, now: float) -> _Bucket:
        i = max(0, int(now - self.start))
        b = self._buckets.get(i)
        if b is None:
            b = self._buckets[i] = _Bucket()
        self.last_at = now if self.last_at is None else max(self.last_at, now)
        return b

    # --- observations ------------------------------------------------------------
    def path(self, now: float, transport: str) -> None:
        """The session's transport at ``now`` (call it often; changes are counted as switches)."""
        self._b(now).path = transport
        if not self.paths or self.paths[-1] != transport:
            self.paths.append(transport)

    def frame(self, now: float, latency_ms: float) -> None:
        b = self._b(now)
        b.frames += 1
        b.frame_ms.append(latency_ms)
        self.frame_ms.append(latency_ms)

    def frame_corrupt(self, now: float) -> None:
        self._b(now)
        self.frames_corrupt += 1

    def echo_sent(self, now: float) -> None:
        self._b(now)
        self.echoes_sent += 1

    def echo(self, now: float, rtt_ms: float) -> None:
        """A reliable message's round trip (input event echo, or a bulk delivery query)."""
        self._b(now).echo_ms.append(rtt_ms)
        self.echo_ms.append(rtt_ms)

    def datagram_sent(self, now: float) -> None:
        self._b(now).dgrams_sent += 1
        self.dgrams_sent += 1

    def datagram_echoed(self, now: float, rtt_ms: float) -> None:
        b = self._b(now)
        b.dgrams_echoed += 1
        b.dgram_ms.append(rtt_ms)
        self.dgram_ms.append(rtt_ms)

    def delivered(self, now: float, nbytes: int) -> None:
        """``nbytes`` more payload confirmed delivered at ``now``."""
        if nbytes < 0:
            raise ValueError("delivered bytes cannot go down")
        self._b(now).bytes += nbytes
        self.bytes += nbytes

    # --- answers -----------------------------------------------------------------
    @property
    def switches(self) -> int:
        return max(0, len(self.paths) - 1)

    def second(self, i: int) -> dict:
        """Second ``i`` (0-based: [start + i, start + i + 1)) as one progress record; its path is
        the last one seen up to the end of that second."""
        b = self._buckets.get(i) or _Bucket()
        path = next((self._buckets[j].path for j in range(i, -1, -1)
                     if j in self._buckets and self._buckets[j].path), None)
        out = {"second": i + 1, "path": path}
        if self.kind == "desktop":
            out.update({"frames": b.frames, "frame_p50_ms": _r(percentile(b.frame_ms, 50)),
                        "frame_p95_ms": _r(percentile(b.frame_ms, 95))})
        if self.kind == "bulk":
            out["mbit_s"] = round(b.bytes * 8 / 1e6, 3)
        out.update({"echo_n": len(b.echo_ms), "echo_p50_ms": _r(percentile(b.echo_ms, 50)),
                    "echo_p95_ms": _r(percentile(b.echo_ms, 95)),
                    "datagrams_sent": b.dgrams_sent, "datagrams_echoed": b.dgrams_echoed})
        return out

    def summary(self, duration: float) -> dict:
        """The whole run; ``duration`` is the sending time in seconds (throughput's divisor)."""
        out: dict = {"workload": self.kind, "seconds": round(duration, 3),
                     "path": self.paths[-1] if self.paths else None, "paths": list(self.paths),
                     "switches": self.switches}
        if self.kind == "desktop":
            out.update({"frames_delivered": len(self.frame_ms), "frames_expected": self.frames_expected,
                        "frames_corrupt": self.frames_corrupt,
                        **{f"frame_p{p}_ms": _r(percentile(self.frame_ms, p)) for p in (50, 95, 99)}})
        what = "query" if self.kind == "bulk" else "echo"
        out.update({f"{what}_sent": self.echoes_sent, f"{what}_n": len(self.echo_ms),
                    **{f"{what}_p{p}_ms": _r(percentile(self.echo_ms, p)) for p in (50, 95, 99)}})
        out.update({"datagrams_sent": self.dgrams_sent, "datagrams_echoed": len(self.dgram_ms),
                    "datagram_p50_ms": _r(percentile(self.dgram_ms, 50)),
                    "datagram_p99_ms": _r(percentile(self.dgram_ms, 99))})
        out["bytes_delivered"] = self.bytes
        out["mbit_s"] = round(self.bytes * 8 / duration / 1e6, 3) if duration > 0 else None
        out["per_second"] = [self.second(i) for i in range(max(0, math.ceil(duration)))]
        return out


# ---------------------------------------------------------------- text output
def _ms(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def format_second(rec: dict) -> str:
    """One progress line."""
    parts = [f"{rec['second']:4d}s", f"{rec['path'] or '-':<12}"]
    echo = f"p50/p95 {_ms(rec['echo_p50_ms'])}/{_ms(rec['echo_p95_ms'])} ms"
    if "frames" in rec:
        parts.append(f"{rec['frames']:3d} frames/s  frame p50/p95 {_ms(rec['frame_p50_ms'])}/"
                     f"{_ms(rec['frame_p95_ms'])} ms  input echo {echo}")
    elif "mbit_s" in rec:
        parts.append(f"{rec['mbit_s']:8.2f} Mbit/s  latency {echo}")
    else:
        parts.append(f"echo {echo}")
    parts.append(f"datagrams {rec['datagrams_echoed']}/{rec['datagrams_sent']}")
    return "  ".join(parts)


def format_summary(s: dict) -> list[str]:
    """The summary as text lines."""
    n = s["switches"]
    lines = [f"workload {s['workload']} for {s['seconds']:.1f} s on {s['path']} "
             f"(paths {' -> '.join(s['paths']) or '-'}; {n} switch{'' if n == 1 else 'es'})"]
    if s["workload"] == "desktop":
        corrupt = f", {s['frames_corrupt']} corrupt" if s["frames_corrupt"] else ""
        expected = "?" if s["frames_expected"] is None else s["frames_expected"]
        lines.append(f"frames      {s['frames_delivered']}/{expected} delivered{corrupt}, latency p50/p95/p99 "
                     f"{_ms(s['frame_p50_ms'])}/{_ms(s['frame_p95_ms'])}/{_ms(s['frame_p99_ms'])} ms "
                     f"(one-way, host clock to client clock)")
        lines.append(f"input echo  p50/p99 {_ms(s['echo_p50_ms'])}/{_ms(s['echo_p99_ms'])} ms "
                     f"({s['echo_n']}/{s['echo_sent']} events echoed)")
    elif s["workload"] == "bulk":
        lines.append(f"latency     p50/p99 {_ms(s['query_p50_ms'])}/{_ms(s['query_p99_ms'])} ms under load "
                     f"({s['query_n']} delivery queries)")
    else:
        lines.append(f"echo        p50/p99 {_ms(s['echo_p50_ms'])}/{_ms(s['echo_p99_ms'])} ms "
                     f"({s['echo_n']}/{s['echo_sent']} messages echoed)")
    lines.append(f"datagrams   {s['datagrams_echoed']}/{s['datagrams_sent']} echoed, p50/p99 "
                 f"{_ms(s['datagram_p50_ms'])}/{_ms(s['datagram_p99_ms'])} ms")
    if s["workload"] != "echo":
        what = "frames" if s["workload"] == "desktop" else "bulk data confirmed by the host"
        lines.append(f"throughput  {s['mbit_s']} Mbit/s ({s['bytes_delivered']} bytes of {what})")
    return lines


# ---------------------------------------------------------------- the pump
class WorkloadFailed(ShortpathError):
    """The session ended or stopped answering during the workload; ``summary`` holds what was
    measured until then."""

    def __init__(self, message: str, summary: dict, code: str = "session-closed") -> None:
        super().__init__(message, code=code)
        self.summary = summary


class _Pump:
    """Sends one workload's traffic and feeds what comes back into a WorkloadStats."""

    def __init__(self, session, kind: str, seconds: float, clock, on_second) -> None:
        self.session, self.kind, self.clock, self.on_second = session, kind, clock, on_second
        self.start = clock()
        self.end = self.start + seconds
        self.stats = WorkloadStats(kind, self.start)
        self.events: dict[int, float] = {}       # input event sequence -> sent at (unanswered)
        self.dgrams: dict[int, float] = {}       # datagram sequence -> sent at (unanswered)
        self.queries: list[tuple[float, asyncio.Future]] = []   # bulk "?": sent at, answer
        self.confirmed = 0                       # bulk bytes the host said it has
        self.done = asyncio.get_running_loop().create_future()  # desktop: the host's "done N"
        self.final: asyncio.Future | None = None                # bulk: the answer to the last query

    def transport(self) -> str:
        return self.session.info.transport

    async def receive(self) -> None:
        from .desktop import check_frame
        while True:
            m = await self.session.recv()
            now = self.clock()
            if m[:1] == b"F":
                try:
                    _, sent_us = check_frame(m)
                except (ValueError, struct.error):
                    self.stats.frame_corrupt(now)
                    continue
                self.stats.frame(now, (time.time_ns() // 1000 - sent_us) / 1000)
                self.stats.delivered(now, len(m))
            elif m[:1] == b"I" and len(m) >= _EVENT.size:
                t = self.events.pop(_EVENT.unpack_from(m)[1], None)
                if t is not None:
                    self.stats.echo(now, (now - t) * 1000)
            elif m.startswith(b"got ") and self.queries:
                t, fut = self.queries.pop(0)
                n = int(m.split()[1])
                self.stats.echo(now, (now - t) * 1000)
                if n > self.confirmed:
                    self.stats.delivered(now, n - self.confirmed)
                    self.confirmed = n
                if not fut.done():
                    fut.set_result(n)
            elif m.startswith(b"done") and not self.done.done():
                self.done.set_result(int(m.split()[1]))

    async def receive_datagrams(self) -> None:
        while True:
            m = await self.session.recv_datagram()
            now = self.clock()
            if m[:1] == b"D" and len(m) >= _EVENT.size:
                t = self.dgrams.pop(_EVENT.unpack_from(m)[1], None)
                if t is not None:
                    self.stats.datagram_echoed(now, (now - t) * 1000)

    async def send_events(self) -> None:
        """A datagram (and, but for bulk, a reliable input event) every EVENT_INTERVAL."""
        pad = bytes(EVENT_SIZE - _EVENT.size)
        i = 0
        while True:
            due = self.start + i * EVENT_INTERVAL
            if due >= self.end:
                return
            if due > self.clock():
                await asyncio.sleep(due - self.clock())
            now = self.clock()
            self.stats.path(now, self.transport())
            self.stats.datagram_sent(now)      # a datagram refused locally counts as sent, never echoed
            self.dgrams[i] = now
            if not self.session.send_datagram(_EVENT.pack(b"D", i, time.time_ns()) + pad):
                self.dgrams.pop(i, None)
            if self.kind != "bulk":
                self.events[i] = now
                self.stats.echo_sent(now)
                await self.session.send(_EVENT.pack(b"I", i, time.time_ns()) + pad, channel="input")
            i += 1

    async def query(self) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        now = self.clock()
        self.queries.append((now, fut))
        self.stats.echo_sent(now)
        await self.session.send(b"?")
        return fut

    async def send_bulk(self) -> None:
        """60 KB messages while the session takes them; a delivery query every BULK_QUERY_EVERY
        bytes, never more than two unanswered; a last query after the end."""
        msg = b"B" * BULK_MESSAGE
        since = 0
        while self.clock() < self.end:
            await self.session.send(msg)
            since += len(msg)
            if since >= BULK_QUERY_EVERY:
                since = 0
                if len(self.queries) >= 2:
                    await self.queries[0][1]
                await self.query()
        self.final = await self.query()

    async def tick(self) -> None:
        """A progress record at the end of every whole second of the run."""
        i = 0
        while self.start + i + 1 <= self.end + 1e-6:
            await asyncio.sleep(max(0.0, self.start + i + 1 - self.clock()))
            self.stats.path(self.clock(), self.transport())
            if self.on_second is not None:
                self.on_second(self.stats.second(i))
            i += 1

    async def tail(self) -> None:
        """After the sending time: the end of the frame stream, the final bulk count, the last echoes."""
        with contextlib.suppress(asyncio.TimeoutError):
            if self.kind == "desktop":
                self.stats.frames_expected = await asyncio.wait_for(asyncio.shield(self.done), DESKTOP_GRACE)
            elif self.final is not None:
                await asyncio.wait_for(asyncio.shield(self.final), DESKTOP_GRACE)
        until = self.clock() + ECHO_GRACE
        while (self.events or self.dgrams) and self.clock() < until:
            await asyncio.sleep(0.02)


async def run_workload(session, kind: str, seconds: float, *,
                       on_second: Callable[[dict], None] | None = None,
                       clock: Callable[[], float] = time.monotonic) -> dict:
    """Run workload ``kind`` for ``seconds`` over ``session``; return the summary dict.

    Raises :class:`WorkloadFailed` (holding the partial summary) when the session ends early."""
    if kind not in WORKLOADS:
        raise ShortpathError(f"unknown workload {kind!r}: pick one of {', '.join(WORKLOADS)}", code="config")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ShortpathError(f"--seconds must be positive and finite (got {seconds})", code="config")
    pump = _Pump(session, kind, seconds, clock, on_second)
    bytes_in0 = session.info.bytes_received
    pump.stats.path(pump.start, pump.transport())
    await session.send(b"desktop %g %d" % (seconds, DESKTOP_FPS) if kind == "desktop" else kind.encode())
    background = [asyncio.ensure_future(pump.receive()), asyncio.ensure_future(pump.receive_datagrams())]
    work = [asyncio.ensure_future(pump.send_events()), asyncio.ensure_future(pump.tick())]
    if kind == "bulk":
        work.append(asyncio.ensure_future(pump.send_bulk()))
    failure: BaseException | None = None
    try:
        # Work ends on its own; a receiver only ends by failing (the session closed).
        pending = set(work) | set(background)
        while any(not t.done() for t in work):
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failure = next((t.exception() for t in finished if not t.cancelled() and t.exception()), None)
            if failure is not None or any(t in background for t in finished):
                break
        sent_until = min(pump.clock(), pump.end)
        if failure is None:
            tail = asyncio.ensure_future(pump.tail())
            await asyncio.wait([tail, *background], return_when=asyncio.FIRST_COMPLETED)
            tail.cancel()
            failure = next((t.exception() for t in background if t.done() and not t.cancelled()
                            and t.exception()), None)
    finally:
        for t in work + background:
            t.cancel()
        await asyncio.gather(*work, *background, return_exceptions=True)
    duration = sent_until - pump.start
    if kind == "desktop" and pump.stats.frames_expected is None:
        # the host never said "done": count against what it was asked to send
        pump.stats.frames_expected = int(seconds * DESKTOP_FPS)
    summary = pump.stats.summary(duration)
    summary["session_bytes_in"] = session.info.bytes_received - bytes_in0
    if failure is not None:
        if isinstance(failure, ShortpathError):
            raise WorkloadFailed(f"the {kind} workload stopped {duration:.1f} s in: {failure.message}",
                                 summary, code=failure.code) from None
        raise failure
    return summary
