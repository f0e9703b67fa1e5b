"""Workload peers for benchmarks/lab_paths.py, run inside netns_lab namespaces.

Host side (baselines only; the shortpath paths use the real ``shortpath host`` process,
whose app answers the same protocol in ``benchmarks.bench_app.bench_mode``)::

    python -m benchmarks.lab_peer serve --bind 10.2.0.10 --workdir DIR

  raw TLS over TCP on 9102, raw UDP on 9101 (plus a plain TCP control connection on 9103),
  stock-aiortc SCTP (ICE/DTLS signalled over plain TCP on 9104).

Client side, one process per path, driven line by line on stdin (JSON commands; each result
is written to a file and announced as ``RESULT <file>``)::

    python -m benchmarks.lab_peer client --path raw-udp|raw-tls|aiortc|shortpath ...

Every path is wrapped in the Session channel API (``send``/``recv`` reliable,
``send_datagram``/``recv_datagram``), so the host runs one function (``bench_mode``) for all
of them and the client one workload.

Channels of the interactive workload (event entries carry the channel number):

* 0 -- one reliable 64-byte message per event;
* 1 -- one 64-byte datagram per event;
* 2 -- the same events, sent with :class:`RedundantEvents` (each datagram also carries the
  previous ``k`` events, and every datagram goes out ``copies`` times, ``spacing_ms`` apart).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections import deque
from pathlib import Path

from shortpath.app.desktop import check_frame
from shortpath.errors import SessionClosed
from shortpath.runtime import settle_gc

from .bench_app import BENCH_ENTRY, bench_entry, bench_mode
from .stallprobe import StallProbe

PORT_UDP, PORT_TLS, PORT_UDP_CTL, PORT_RTC = 9101, 9102, 9103, 9104
BENCH_PORTS = (PORT_UDP, PORT_TLS, PORT_UDP_CTL, PORT_RTC)
BULK_MSG = 60_000
UDP_BULK_DGRAM = 1200
_LEN = struct.Struct("!I")


# ---------------------------------------------------------------- redundancy (app layer)
class RedundantEvents:
    """Send small events over an unreliable channel so that one lost datagram loses nothing.

    Each event goes out in a datagram that also carries the ``k`` previous events (a lost
    datagram is covered by the next one, one event interval later), and each datagram is sent
    ``copies`` times, ``spacing_ms`` apart (a lost datagram is covered a few ms later, before
    the next event is due: this is what keeps events inside one-way delay + 10 ms). The
    receiver keeps the first copy of each (channel, seq) and ignores the rest.

    Cost: every event is on the wire ``copies * (k + 1)`` times; with the defaults (k=2,
    copies=2) a 64-byte event costs 2 datagrams of 190 bytes instead of one of 64.
    """

    def __init__(self, send, channel: int, k: int = 2, copies: int = 2, spacing_ms: float = 3.0):
        self.send = send                 # send_datagram(bytes) -> bool
        self.channel = channel
        self.k, self.copies, self.spacing = k, copies, spacing_ms / 1000.0
        self.recent: deque[bytes] = deque(maxlen=k)
        self.datagrams = 0
        self.bytes = 0

    def event(self, seq: int, t_ns: int) -> None:
        entry = bench_entry(self.channel, seq, t_ns)
        dgram = b"D" + entry + b"".join(reversed(self.recent))
        self.recent.append(entry)
        self._out(dgram)
        loop = asyncio.get_running_loop()
        for i in range(1, self.copies):
            loop.call_later(self.spacing * i, self._out, dgram)

    def _out(self, dgram: bytes) -> None:
        if self.send(dgram):
            self.datagrams += 1
            self.bytes += len(dgram)


# ---------------------------------------------------------------- Session-like adapters
class _Link:
    """Inbox/closing plumbing shared by the adapters."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._dgrams: asyncio.Queue = asyncio.Queue(maxsize=4096)
        self.closed_reason: str | None = None

    def _deliver(self, data: bytes) -> None:
        self._inbox.put_nowait(data)

    def _deliver_dgram(self, data: bytes) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._dgrams.put_nowait(data)

    def _close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._inbox.put_nowait(None)
            with contextlib.suppress(asyncio.QueueFull):
                self._dgrams.put_nowait(None)

    async def recv(self) -> bytes:
        m = await self._inbox.get()
        if m is None:
            self._inbox.put_nowait(None)
            raise SessionClosed(self.closed_reason or "closed")
        return m

    async def recv_datagram(self) -> bytes:
        m = await self._dgrams.get()
        if m is None:
            with contextlib.suppress(asyncio.QueueFull):
                self._dgrams.put_nowait(None)
            raise SessionClosed(self.closed_reason or "closed")
        return m

    def transport(self) -> str:
        return self.kind


class StreamLink(_Link):
    """Length-prefixed messages over a TCP (optionally TLS) stream; optional raw UDP socket
    for datagrams (connected, so replies go straight back)."""

    def __init__(self, kind: str, reader, writer, udp=None) -> None:
        super().__init__()
        self.kind = kind
        self.reader, self.writer, self.udp = reader, writer, udp
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                n = _LEN.unpack(await self.reader.readexactly(4))[0]
                self._deliver(await self.reader.readexactly(n))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._close("stream-closed")

    async def send(self, data: bytes, channel: str | None = None) -> None:
        # The baselines have one ordered stream: the app's channel names are accepted and ignored
        # (that head-of-line blocking is part of what the baseline measures).
        if self.closed_reason:
            raise SessionClosed(self.closed_reason)
        self.writer.write(_LEN.pack(len(data)) + data)
        await self.writer.drain()

    def send_datagram(self, data: bytes) -> bool:
        if self.udp is None or self.closed_reason:
            return False
        self.udp.send(data)
        return True

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        if self.udp is not None:
            self.udp.close()
        self._close("local")


class _UdpProto(asyncio.DatagramProtocol):
    """A UDP endpoint that hands datagrams to whichever link currently owns it."""

    def __init__(self) -> None:
        self.link: _Link | None = None
        self.peer = None
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.peer = addr
        if self.link is not None:
            self.link._deliver_dgram(data)

    def error_received(self, exc) -> None:
        pass

    # the shape StreamLink.udp expects
    def send(self, data: bytes) -> None:
        if self.peer is not None:
            self.transport.sendto(data, self.peer)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def close(self) -> None:
        pass


class RtcLink(_Link):
    """A UdpPath (our ICE + DTLS + SCTP; the bench uses aiortc's stock SCTP)."""

    kind = "aiortc-default"

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path
        path.on_reliable = self._deliver
        path.on_unreliable = self._deliver_dgram
        path.on_closed = self._close

    async def send(self, data: bytes, channel: str | None = None) -> None:
        # Stock aiortc baseline: one ordered stream, channel names ignored (see StreamLink.send).
        if self.closed_reason:
            raise SessionClosed(self.closed_reason)
        if self.path.buffered_amount > 1_000_000:
            await self.path.drain(1_000_000)
        self.path.send_reliable(data)

    def send_datagram(self, data: bytes) -> bool:
        return bool(self.path.send_unreliable(data))


def _rtc_config(local_ip: str, stun: tuple[str, int] | None):
    from shortpath.transport.udp import UdpConfig
    # Stock aiortc SCTP (sctp_tuning=None); hole punching via STUN like udp-direct.
    return UdpConfig(allow_managed=False, allow_turn=False, stun_server=stun,
                     host_addresses=(local_ip,), sctp_tuning=None, connect_timeout=15.0)


async def _rtc_signalled(role: str, reader, writer, cfg):
    from shortpath.transport.udp import UdpUpgrader

    def send(msg: dict) -> None:
        writer.write(json.dumps(msg).encode() + b"\n")

    up = UdpUpgrader(role, cfg, send)

    async def pump() -> None:
        with contextlib.suppress(Exception):
            while True:
                line = await reader.readline()
                if not line:
                    return
                up.on_signal(json.loads(line))

    t = asyncio.ensure_future(pump())
    try:
        path = await up.connect(timeout=cfg.connect_timeout)
    finally:
        t.cancel()
    return up, path


# ---------------------------------------------------------------- host side (baselines)
async def serve(bind: str, workdir: str, stun: tuple[str, int] | None) -> None:
    from netns_lab.certs import make_cert
    from shortpath.auth import certs

    crt, key = make_cert(workdir, "bench-peer", ips=(bind,))
    ctx = certs.server_context(str(crt), str(key))
    loop = asyncio.get_running_loop()
    udp_t, udp_proto = await loop.create_datagram_endpoint(_UdpProto, local_addr=(bind, PORT_UDP))

    async def serve_link(link) -> None:
        try:
            await bench_mode(link)
        finally:
            with contextlib.suppress(Exception):
                await link.close()

    async def on_tls(reader, writer) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await serve_link(StreamLink("raw-tls", reader, writer))

    async def on_udp_ctl(reader, writer) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = StreamLink("raw-udp", reader, writer, udp=udp_proto)
        udp_proto.link = link
        await serve_link(link)

    async def on_rtc(reader, writer) -> None:
        try:
            up, path = await _rtc_signalled("host", reader, writer, _rtc_config(bind, stun))
        except Exception as exc:  # noqa: BLE001 -- report and wait for the next client
            print(f"aiortc setup failed: {exc!r}", flush=True)
            writer.close()
            return
        link = RtcLink(path)
        link.close = up.close        # type: ignore[method-assign]
        await serve_link(link)

    servers = [await asyncio.start_server(on_tls, bind, PORT_TLS, ssl=ctx),
               await asyncio.start_server(on_udp_ctl, bind, PORT_UDP_CTL),
               await asyncio.start_server(on_rtc, bind, PORT_RTC)]
    settle_gc(udp=True)      # as `shortpath host` does: every baseline served alike
    print("READY", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for s in servers:
            s.close()
        udp_t.close()


# ---------------------------------------------------------------- client side
class Client:
    def __init__(self, link, path_name: str, session=None) -> None:
        self.link, self.path_name, self.session = link, path_name, session
        self.rtt_waiter: asyncio.Future | None = None
        self.report_waiter: asyncio.Future | None = None
        self.frames = 0
        self.frame_lat_ms: list[float] = []
        self.ready = asyncio.get_running_loop().create_future()
        # this process's event-loop stalls and GC pauses, during op_events only: a ticker in
        # each of the run's idle clients and sessions cost the measured ones CPU (a full run
        # with tickers always on moved 15-35 % less UDP and raw-UDP bulk)
        self.probe = StallProbe()
        self._tasks = [asyncio.ensure_future(self._reliable()), asyncio.ensure_future(self._dgrams())]

    async def _reliable(self) -> None:
        with contextlib.suppress(SessionClosed):
            while True:
                m = await self.link.recv()
                tag = m[:1]
                if tag == b"F":
                    idx, sent_us = check_frame(m)
                    self.frames += 1
                    asyncio.ensure_future(self._ack_frame(idx))
                    self.frame_lat_ms.append((time.time_ns() // 1000 - sent_us) / 1000)
                elif tag == b"P":
                    if self.rtt_waiter and not self.rtt_waiter.done():
                        self.rtt_waiter.set_result(m)
                elif tag == b"R":
                    if self.report_waiter and not self.report_waiter.done():
                        self.report_waiter.set_result(json.loads(m[1:]))
                elif m == b"ready" and not self.ready.done():
                    self.ready.set_result(None)

    async def _ack_frame(self, idx: int) -> None:
        with contextlib.suppress(SessionClosed):
            await self.link.send(b"A" + idx.to_bytes(4, "big"))

    async def _dgrams(self) -> None:
        with contextlib.suppress(SessionClosed):
            while True:
                m = await self.link.recv_datagram()
                if m[:1] == b"P" and self.rtt_waiter and not self.rtt_waiter.done():
                    self.rtt_waiter.set_result(m)

    def transport(self) -> str:
        return self.session.info.transport if self.session is not None else self.link.kind

    def sctp(self) -> dict | None:
        """SCTP counters of the active UDP path (t3_expiries, cwnd, ...), when there is one."""
        if self.session is not None:
            for p in self.session.info.paths:
                if p.get("active") and p.get("sctp"):
                    return p["sctp"]
        elif isinstance(self.link, RtcLink):
            return self.link.path.info().get("sctp")
        return None

    def switches(self) -> int:
        return len(self.session.history) if self.session is not None else 0

    async def report(self, timeout: float = 90.0, probe: bool = False) -> dict:
        """The host's record since the last report (then reset); ``probe``: the host runs its
        stall probe until the next report."""
        self.report_waiter = asyncio.get_running_loop().create_future()
        await self.link.send(b"C" + json.dumps({"cmd": "report", "probe": probe}).encode())
        return await asyncio.wait_for(self.report_waiter, timeout)

    async def ping(self, datagram: bool, i: int, timeout: float = 2.0) -> float | None:
        self.rtt_waiter = asyncio.get_running_loop().create_future()
        msg = b"P" + i.to_bytes(4, "big") + bytes(59)
        t = time.monotonic_ns()
        if datagram:
            self.link.send_datagram(msg)
        else:
            await self.link.send(msg)
        try:
            await asyncio.wait_for(self.rtt_waiter, timeout)
        except asyncio.TimeoutError:
            return None
        return (time.monotonic_ns() - t) / 1e6

    async def wait_udp(self, seconds: float) -> None:
        """Shortpath: probe traffic until the session is on UDP (the path manager acts on it)."""
        end = time.monotonic() + seconds
        i = 0
        while self.transport() == "tcp-relay" and time.monotonic() < end:
            await self.ping(False, i)
            i += 1
            await asyncio.sleep(0.05)

    # --- operations -----------------------------------------------------------------
    async def op_rtt(self, n: int, datagram: bool) -> dict:
        rtts, lost = [], 0
        for i in range(n):
            r = await self.ping(datagram, i)
            if r is None:
                lost += 1
            else:
                rtts.append(r)
        return {"rtt_ms": rtts, "lost": lost}

    async def op_events(self, seconds: float, rate: float, reliable: bool, datagram: bool,
                        frames: bool, red: dict | None, grace: float, frames_inflight: int = 2) -> dict:
        await self.report(probe=True)                         # reset the host's record
        self.probe.start()
        t_before, sw_before, sctp_before = self.transport(), self.switches(), self.sctp()
        self.frames, self.frame_lat_ms = 0, []
        if frames:
            await self.link.send(b"C" + json.dumps({"cmd": "frames", "seconds": seconds + 0.5, "fps": 30,
                                                    "max_inflight": frames_inflight}).encode())
            await asyncio.sleep(0.3)
        redundant = RedundantEvents(self.link.send_datagram, 2, **red) if red else None
        n = int(seconds * rate)
        sent = {0: 0, 1: 0, 2: 0, 4: 0}
        # channel 4: the session's built-in redundant events (Session.send_event), shortpath only
        builtin = red is not None and self.session is not None
        dg_bytes = 0
        start = time.monotonic()
        seen = {t_before}
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            seen.add(self.transport())
            now = time.monotonic_ns()
            if reliable:
                await self.link.send(b"E" + bench_entry(0, i, now))
                sent[0] += 1
            if datagram:
                d = b"D" + bench_entry(1, i, now)
                if self.link.send_datagram(d):
                    dg_bytes += len(d)
                sent[1] += 1
            if redundant is not None:
                redundant.event(i, now)
                sent[2] += 1
            if builtin:
                self.session.send_event(b"V" + bench_entry(4, i, now), redundancy=red["k"], copies=red["copies"])
                sent[4] += 1
        await asyncio.sleep(grace)
        rep = await self.report()
        self.probe.stop()
        return {"sent": sent, "host": rep, "frames": self.frames,
                "frame_latency_ms": sorted(self.frame_lat_ms),
                "transport_before": t_before, "transport_after": self.transport(),
                "path_changes": self.switches() - sw_before,
                "transports_seen": sorted(seen | {self.transport()}),
                "history": self.session.history[sw_before:] if self.session is not None else [],
                "sctp_before": sctp_before, "sctp_after": self.sctp(),
                "datagram_bytes": {"1": dg_bytes, "2": redundant.bytes if redundant else 0},
                "datagrams": {"1": sent[1], "2": redundant.datagrams if redundant else 0},
                "elapsed_s": time.monotonic() - start,
                "client_stalls": self.probe.report()}

    async def op_bulk(self, seconds: float, datagram: bool) -> dict:
        await self.report()
        t_before = self.transport()
        seen = {t_before}
        t0 = time.monotonic()
        sw_before = self.switches()
        sent = 0
        series: list[tuple[float, int]] = []   # reliable only: (seconds, bytes sent so far)
        cc_series: list[dict] = []              # our SCTP sender's controller, sampled with series
        if datagram:         # raw UDP: blast, backing off while the socket buffer is full
            msg = b"B" + bytes(UDP_BULK_DGRAM - 1)
            udp = self.link.udp
            while time.monotonic() - t0 < seconds:
                for _ in range(32):
                    self.link.send_datagram(msg)
                    sent += len(msg)
                await asyncio.sleep(0 if udp.buffered() == 0 else 0.001)
            await asyncio.sleep(0.3)
            rep = await self.report()
            elapsed = seconds
        else:
            # At most ~2 MB unacknowledged (a probe every 1 MB, and we wait for the previous
            # one's echo): on a slow path the final wait then stays short, whatever the
            # session's own send window is.
            msg = b"B" + bytes(BULK_MSG - 1)
            since, marker = 0, None
            next_sample = t0 + 0.1
            while time.monotonic() - t0 < seconds:
                seen.add(self.transport())
                await self.link.send(msg)
                sent += len(msg)
                since += len(msg)
                if time.monotonic() >= next_sample:    # bytes the transport took, for lab_paths' plot
                    series.append((round(time.monotonic() - t0, 3), sent))
                    st = self.sctp()
                    cc = (st or {}).get("controller")
                    if cc:      # our sender's model as it went (state, bandwidth, cwnd, min RTT)
                        cc_series.append({"t": round(time.monotonic() - t0, 3), "srtt": st.get("srtt"),
                                          "flight": st.get("flight_size"), **{k: cc.get(k) for k in (
                                              "state", "phase", "btl_bw", "pacing_rate", "cwnd", "min_rtt",
                                              "inflight_hi", "background_loss", "competitor", "coexist",
                                              "jitter", "lost", "delivered")}})
                    next_sample += 0.1
                if since >= 1_000_000:
                    if marker is not None:
                        await asyncio.wait_for(marker, 60)
                    marker = self.rtt_waiter = asyncio.get_running_loop().create_future()
                    await self.link.send(b"P" + bytes(63))
                    since = 0
            rep = await self.report()        # ordered after every bulk message: all delivered
            elapsed = time.monotonic() - t0
        got = rep["bulk_bytes"]
        return {"sent_bytes": sent, "received_bytes": got, "elapsed_s": elapsed,
                "mbit_s": got * 8 / elapsed / 1e6, "transport_before": t_before,
                "transport_after": self.transport(), "transports_seen": sorted(seen | {self.transport()}),
                "history": self.session.history[sw_before:] if self.session is not None else [],
                "sent_series": series, "cc_series": cc_series}


async def _open_client(a) -> Client:
    loop = asyncio.get_running_loop()
    if a.path == "raw-tls":
        import ssl
        ctx = ssl.create_default_context(cafile=a.server_ca)
        ctx.check_hostname = False
        r, w = await asyncio.open_connection(a.server, PORT_TLS, ssl=ctx)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Client(StreamLink("raw-tls", r, w), a.path)
    if a.path == "raw-udp":
        _, proto = await loop.create_datagram_endpoint(_UdpProto, remote_addr=(a.server, PORT_UDP))
        proto.peer = (a.server, PORT_UDP)
        r, w = await asyncio.open_connection(a.server, PORT_UDP_CTL)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = StreamLink("raw-udp", r, w, udp=proto)
        proto.link = link
        return Client(link, a.path)
    if a.path == "aiortc":
        r, w = await asyncio.open_connection(a.server, PORT_RTC)
        stun = (a.stun.split(":")[0], int(a.stun.split(":")[1])) if a.stun else None
        up, path = await _rtc_signalled("client", r, w, _rtc_config(a.local, stun))
        return Client(RtcLink(path), a.path)
    # shortpath through the real gateway and host
    from shortpath.client import connect
    token = Path(a.token_file).read_text().strip()
    udp = {"turn_cafile": a.turn_ca, "modes": a.modes.split(",")} if a.modes != "none" else {}
    session = await connect(a.gateway, token, "desktop", cafile=a.ca, udp=udp, shortpath=a.modes != "none")
    c = Client(session, a.path, session)
    await session.send(b"bench")
    return c


async def client_main(a) -> int:
    t0 = time.monotonic()
    c = await _open_client(a)
    await asyncio.wait_for(c.ready, 20)
    settle_gc(udp=True)      # as `shortpath connect` does: every path measured alike
    if a.modes not in (None, "none") and a.path == "shortpath":
        await c.wait_udp(a.wait_udp)
    print("READY " + json.dumps({"transport": c.transport(), "setup_s": round(time.monotonic() - t0, 3)}),
          flush=True)
    loop = asyncio.get_running_loop()
    seq = 0
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "quit":
            break
        try:
            res = await getattr(c, "op_" + op)(**cmd)
            res["ok"] = True
        except Exception as exc:  # noqa: BLE001 -- one failed measurement is reported, not fatal
            c.probe.stop()
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "transport_after": c.transport()}
        seq += 1
        out = Path(a.out_dir) / f"{a.name}-{seq}-{op}.json"
        out.write_text(json.dumps(res))
        print(f"RESULT {out}", flush=True)
    with contextlib.suppress(Exception):
        if c.session is not None:
            await asyncio.wait_for(c.session.close(), 3)
    os._exit(0)        # skip slow aiortc/aioice teardown; the lab stops us anyway


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lab_peer")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", required=True)
    s.add_argument("--workdir", required=True)
    s.add_argument("--stun", default=None, help="HOST:PORT for the aiortc baseline's srflx candidates")
    c = sub.add_parser("client")
    c.add_argument("--path", required=True, choices=["raw-udp", "raw-tls", "aiortc", "shortpath"])
    c.add_argument("--name", required=True)
    c.add_argument("--out-dir", required=True)
    c.add_argument("--server", help="bench peer address (baselines)")
    c.add_argument("--server-ca")
    c.add_argument("--local", help="our address (aiortc host candidates)")
    c.add_argument("--stun", default=None)
    c.add_argument("--gateway")
    c.add_argument("--token-file")
    c.add_argument("--ca")
    c.add_argument("--turn-ca")
    c.add_argument("--modes", default="none", help="shortpath: none (tcp-relay) or managed/direct/turn")
    c.add_argument("--wait-udp", type=float, default=20.0)
    a = p.parse_args(argv)
    if a.cmd == "serve":
        stun = (a.stun.split(":")[0], int(a.stun.split(":")[1])) if a.stun else None
        asyncio.run(serve(a.bind, a.workdir, stun))
        return 0
    return asyncio.run(client_main(a))


if __name__ == "__main__":
    sys.exit(main())
