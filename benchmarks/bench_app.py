"""The lab benchmark's side of the host application: the ``b"bench"`` mode.

benchmarks/lab_paths.py runs the real ``shortpath host`` with this application
(``--app benchmarks.bench_app:host_handler``): the normal host app
(shortpath/app/desktop.py) plus one mode, chosen by the client's first reliable
message ``b"bench"``. benchmarks/lab_peer.py serves the same protocol over raw
TLS/UDP and stock aiortc with :func:`bench_mode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import time

from benchmarks.stallprobe import StallProbe
from shortpath.app.desktop import frame_payload, make_host_handler
from shortpath.errors import SessionClosed

# Client and host run on one machine (network namespaces
# share CLOCK_MONOTONIC), so the sender stamps time.monotonic_ns() into each event and the
# receiving application subtracts: a one-way latency that includes both Python stacks.
#
# An event entry is 63 bytes: u8 channel, u32 sequence, u64 sender CLOCK_MONOTONIC ns, zero
# padding. A reliable event is b"E" + entry (64 bytes); a datagram is b"D" + one or more
# entries (one entry = a 64-byte event; more = the same event sent with earlier ones, for
# redundancy). Other tags: b"P" (echoed back on the channel it came on: RTT probes), b"B"
# (bulk bytes, counted), b"A" (the client acknowledges a frame), b"C" + JSON command
# ({"cmd": "frames", "seconds", "fps", "max_inflight"} starts the frame stream towards the
# client; {"cmd": "report", "probe": bool} answers b"R" + JSON and resets; with "probe" the
# host's stall probe runs until the next report, whose answer carries its "stalls").
BENCH_EVENT = struct.Struct("!BIQ")
BENCH_ENTRY = 63


def bench_entry(channel: int, seq: int, t_ns: int) -> bytes:
    return BENCH_EVENT.pack(channel, seq, t_ns).ljust(BENCH_ENTRY, b"\0")


class _BenchRecord:
    def __init__(self) -> None:
        self.first: dict[int, dict[int, int]] = {}   # channel -> seq -> latency ns (first copy)
        self.dups: dict[int, int] = {}
        self.bulk_bytes = 0
        self.bulk_first_ns = self.bulk_last_ns = None

    def entries(self, data: bytes, now: int) -> None:
        for off in range(0, len(data) - BENCH_EVENT.size + 1, BENCH_ENTRY):
            chan, seq, sent = BENCH_EVENT.unpack_from(data, off)
            seen = self.first.setdefault(chan, {})
            if seq in seen:
                self.dups[chan] = self.dups.get(chan, 0) + 1
            else:
                seen[seq] = now - sent

    def bulk(self, n: int, now: int) -> None:
        self.bulk_bytes += n
        if self.bulk_first_ns is None:
            self.bulk_first_ns = now
        self.bulk_last_ns = now

    def report(self) -> dict:
        return {"events": {str(c): [list(d.keys()), [v // 1000 for v in d.values()]]
                           for c, d in self.first.items()},
                "dups": {str(c): n for c, n in self.dups.items()}, "bulk_bytes": self.bulk_bytes,
                "bulk_first_ns": self.bulk_first_ns, "bulk_last_ns": self.bulk_last_ns}


async def bench_mode(session, echo_task: asyncio.Future | None = None) -> None:
    """Record stamped events (reliable and datagram), count bulk bytes, echo probes and
    stream frames on request, until the client closes. ``session`` may be any object with
    the Session channel API (the benchmark also runs it over raw TLS/UDP and aiortc)."""
    if echo_task is not None:
        echo_task.cancel()              # datagrams are recorded here, not echoed
    rec = _BenchRecord()
    probe = StallProbe()               # the host's event-loop stalls and GC pauses, when asked
    streamer: asyncio.Future | None = None
    frames = {"sent": 0, "acked": 0, "skipped": 0}

    async def datagrams() -> None:
        with contextlib.suppress(SessionClosed):
            while True:
                d = await session.recv_datagram()
                now = time.monotonic_ns()
                tag = d[:1]
                if tag == b"D":
                    rec.entries(d[1:], now)
                elif tag == b"P":
                    session.send_datagram(d)
                elif tag == b"B":
                    rec.bulk(len(d), now)

    async def events() -> None:       # the session's built-in redundant events (shortpath only)
        with contextlib.suppress(SessionClosed):
            while True:
                e = await session.recv_event()
                if e[:1] == b"V":
                    rec.entries(e[1:], time.monotonic_ns())

    dg = asyncio.ensure_future(datagrams())
    evt = asyncio.ensure_future(events()) if hasattr(session, "recv_event") else None
    try:
        await session.send(b"ready")
        while True:
            m = await session.recv()
            now = time.monotonic_ns()
            tag = m[:1]
            if tag == b"E":
                rec.entries(m[1:], now)
            elif tag == b"B":
                rec.bulk(len(m), now)
            elif tag == b"P":
                await session.send(m, channel="input")      # never behind a frame (channels.py)
            elif tag == b"A":
                frames["acked"] += 1
            elif tag == b"C":
                cmd = json.loads(m[1:])
                if cmd["cmd"] == "frames":
                    if streamer is not None:
                        streamer.cancel()
                    frames = {"sent": 0, "acked": 0, "skipped": 0}
                    streamer = asyncio.ensure_future(_paced_frames(
                        session, float(cmd["seconds"]), float(cmd.get("fps", 30)),
                        int(cmd.get("max_inflight", 3)), frames))
                elif cmd["cmd"] == "report":
                    out, rec = rec.report(), _BenchRecord()
                    out["frames"] = dict(frames)
                    if probe.running:
                        out["stalls"] = probe.report()
                    probe.stop()
                    if cmd.get("probe"):       # from now until the next report (lab_peer op_events)
                        probe.start()
                    info = getattr(session, "info", None)        # the host's own sender, if on UDP
                    for pth in (getattr(info, "paths", None) or []):
                        if pth.get("active") and pth.get("sctp"):
                            out["sctp"] = pth["sctp"]
                    await session.send(b"R" + json.dumps(out).encode())
    except SessionClosed:
        pass
    finally:
        probe.stop()
        dg.cancel()
        if evt is not None:
            evt.cancel()
        if streamer is not None:
            streamer.cancel()


async def _paced_frames(session, seconds: float, fps: float, max_inflight: int, st: dict) -> None:
    """Frames at ``fps`` like :func:`_stream_frames`, but a frame that falls due while
    ``max_inflight`` frames are unacknowledged by the client is skipped (counted), as a screen
    encoder coalesces updates when the network cannot keep up. Without this the sender queues
    frames without bound on a slow or lossy path and everything behind them waits."""
    rng = random.Random(7)
    start = time.monotonic()
    for i in range(int(seconds * fps)):
        size = rng.randint(20_000, 60_000)
        if st["sent"] - st["acked"] < max_inflight:
            st["sent"] += 1
            await session.send(frame_payload(i, size), channel="graphics")
        else:
            st["skipped"] += 1
        if i % 6 == 0:
            _sample_sender(session, st, time.monotonic() - start)
        delay = start + (i + 1) / fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _sample_sender(session, st: dict, t: float) -> None:
    """Note the frame sender's congestion model (our SCTP sender on a UDP path) in ``st["cc"]``."""
    info = getattr(session, "info", None)
    for pth in (getattr(info, "paths", None) or []):
        sc = pth.get("sctp") if pth.get("active") else None
        cc = (sc or {}).get("controller")
        if cc:
            st.setdefault("cc", []).append({"t": round(t, 3), "srtt": sc.get("srtt"), **{k: cc.get(k) for k in (
                "state", "phase", "btl_bw", "pacing_rate", "cwnd", "min_rtt", "inflight_hi", "competitor",
                "background_loss")}})


#: The host application with the bench mode (``shortpath host --app benchmarks.bench_app:host_handler``).
host_handler = make_host_handler({b"bench": bench_mode})
