"""Loopback benchmark: raw UDP vs stock aiortc SCTP vs our tuned UdpPath.

    python -m benchmarks.udp_loopback [--pings 300] [--bulk-mb 16] [--loss-every 13]

Both peers run in one process and one event loop (so CPU is shared and the
numbers are a lower bound for two machines); everything goes over 127.0.0.1.

Rows:

* ``raw-udp``   asyncio datagram sockets, echo; no reliability, no crypto.
* ``aiortc``    our ICE + DTLS, with aiortc's stock RTCSctpTransport
                (RFC 4960 timers: RTO min 1 s, initial 3 s).
* ``tuned``     the same with ``transport/udp/sctp.py``'s TunedSctpTransport.

Columns: small-message RTT (64-byte reliable message echoed back, sequential),
bulk throughput (60 KB reliable messages, back-pressured on
``buffered_amount``), then the same ping test while every Nth datagram is
dropped at our socket wrapper (both directions; this kernel has no netem):
p50 / p99 / max RTT and how many pings took longer than 100 ms. With lone
messages there is no fast retransmit, so a lost DATA chunk waits for the T3
timer: that is where RTO.min shows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any, Optional

from shortpath.transport.udp import UdpConfig, UdpUpgrader

PING_SIZE = 64
BULK_MSG = 60_000


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# ---------------------------------------------------------------- raw UDP
class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:1] == b"P":
            self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: Optional[asyncio.Future] = None
        self.bulk_bytes = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.bytes = 0
        self.count = 0
        self.target = 0
        self.waiter: Optional[asyncio.Future] = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.bytes += len(data)
        self.count += 1
        if self.waiter is not None and self.count >= self.target and not self.waiter.done():
            self.waiter.set_result(None)


async def bench_raw(pings: int, bulk_bytes: int, loss_every: int) -> dict:
    loop = asyncio.get_running_loop()
    echo_t, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    addr = echo_t.get_extra_info("sockname")
    cli_t, cli = await loop.create_datagram_endpoint(_Client, remote_addr=addr)
    rtts = []
    for i in range(pings):
        cli.waiter = loop.create_future()
        t0 = time.perf_counter()
        cli_t.sendto(b"P" + bytes(PING_SIZE - 1))
        await asyncio.wait_for(cli.waiter, 2)
        rtts.append(time.perf_counter() - t0)
    # bulk: windows of WINDOW 1200-byte datagrams; wait until the sink has
    # them all (or 50 ms, counting the rest as lost) before the next window,
    # so the sender cannot simply overrun the receiver's socket buffer.
    window = 64
    sink_t, sink = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0))
    blast_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                     remote_addr=sink_t.get_extra_info("sockname"))
    payload = b"B" + bytes(1199)
    t0 = time.perf_counter()
    sent = 0
    while sent < bulk_bytes:
        sink.target = sink.count + window
        sink.waiter = loop.create_future()
        for _ in range(window):
            blast_t.sendto(payload)
        sent += window * len(payload)
        try:
            await asyncio.wait_for(sink.waiter, 0.05)
        except asyncio.TimeoutError:
            sink.count = sink.target  # resynchronise: the rest of this window is lost
    elapsed = time.perf_counter() - t0
    for t in (echo_t, cli_t, sink_t, blast_t):
        t.close()
    return {
        "rtt_p50": _pct(rtts, 50), "rtt_p99": _pct(rtts, 99),
        "mbps": sink.bytes / elapsed / 1e6, "bulk_loss": 1 - sink.bytes / sent,
        "loss": None,
    }


# ---------------------------------------------------------------- UdpPath
async def _connect(tuned: bool) -> tuple[Any, Any, Any, Any]:
    from shortpath.transport.udp.sctp import DEFAULT_TUNING

    cfg = UdpConfig(allow_managed=False, allow_turn=False, host_addresses=("127.0.0.1",),
                    sctp_tuning=DEFAULT_TUNING if tuned else None,
                    reliable_buffer_limit=64 * 1024 * 1024)
    a = UdpUpgrader("client", cfg, lambda m: b.on_signal(m))
    b = UdpUpgrader("host", cfg, lambda m: a.on_signal(m))
    pa, pb = await asyncio.gather(a.connect(), b.connect())
    return a, b, pa, pb


async def _pings(client: Any, host: Any, n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    host.on_reliable = host.send_reliable  # echo
    rtts = []
    waiter: list[asyncio.Future] = []
    client.on_reliable = lambda d: waiter[0].done() or waiter[0].set_result(d)
    for i in range(n):
        waiter[:] = [loop.create_future()]
        t0 = time.perf_counter()
        client.send_reliable(i.to_bytes(4, "big") + bytes(PING_SIZE - 4))
        await asyncio.wait_for(waiter[0], 30)
        rtts.append(time.perf_counter() - t0)
    return rtts


async def _bulk(client: Any, host: Any, total: int) -> float:
    loop = asyncio.get_running_loop()
    got = [0]
    done = loop.create_future()

    def sink(d: bytes) -> None:
        got[0] += len(d)
        if got[0] >= total and not done.done():
            done.set_result(None)

    host.on_reliable = sink
    msg = bytes(BULK_MSG)
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        await client.drain(1_000_000)
        client.send_reliable(msg)
        sent += len(msg)
    await asyncio.wait_for(done, 120)
    return got[0] / (time.perf_counter() - t0) / 1e6


async def bench_path(tuned: bool, pings: int, bulk_bytes: int, loss_every: int, loss_pings: int) -> dict:
    a, b, client, host = await _connect(tuned)
    try:
        rtts = await _pings(client, host, pings)
        mbps = await _bulk(client, host, bulk_bytes)
        client.drop_every(loss_every)
        t0 = time.perf_counter()
        lossy = await _pings(client, host, loss_pings)
        loss_elapsed = time.perf_counter() - t0
        dropped = client.info()["impairment"]
        client.drop_every(0)
        t3 = client.info()["sctp"]["t3_expiries"]
        t3 = "n/a" if t3 is None else t3
        return {
            "rtt_p50": _pct(rtts, 50), "rtt_p99": _pct(rtts, 99), "mbps": mbps, "bulk_loss": 0.0,
            "loss": {
                "p50": _pct(lossy, 50), "p99": _pct(lossy, 99), "max": max(lossy),
                "mean": statistics.mean(lossy), "slow": sum(1 for r in lossy if r > 0.1),
                "n": len(lossy), "dropped": dropped["dropped_in"] + dropped["dropped_out"],
                "elapsed": loss_elapsed, "t3": t3,
            },
        }
    finally:
        await a.close()
        await b.close()


def _ms(x: float) -> str:
    return f"{x * 1000:8.2f}"


async def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pings", type=int, default=300)
    ap.add_argument("--bulk-mb", type=float, default=16)
    ap.add_argument("--loss-every", type=int, default=13, help="drop every Nth datagram (both directions)")
    ap.add_argument("--loss-pings", type=int, default=100)
    args = ap.parse_args(argv)
    bulk = int(args.bulk_mb * 1e6)

    rows = [("raw-udp", await bench_raw(args.pings, bulk, args.loss_every))]
    rows.append(("aiortc", await bench_path(False, args.pings, bulk, args.loss_every, args.loss_pings)))
    rows.append(("tuned", await bench_path(True, args.pings, bulk, args.loss_every, args.loss_pings)))

    print(f"loopback, one process; {args.pings} pings of {PING_SIZE} B; bulk {args.bulk_mb:g} MB "
          f"in {BULK_MSG} B messages; loss: every {args.loss_every}th datagram dropped, "
          f"{args.loss_pings} pings")
    print(f"{'path':8} | {'RTT p50 ms':>10} {'p99 ms':>8} | {'bulk MB/s':>9} | "
          f"{'loss p50':>8} {'p99':>8} {'max':>8} {'mean':>8} {'>100ms':>6} {'T3':>4} {'total s':>7}")
    for name, r in rows:
        line = f"{name:8} | {_ms(r['rtt_p50']):>10} {_ms(r['rtt_p99'])} | {r['mbps']:9.1f} | "
        loss = r["loss"]
        if loss is None:
            line += f"(no recovery; bulk loss {100 * r['bulk_loss']:.1f}%)"
        else:
            line += (f"{_ms(loss['p50'])} {_ms(loss['p99'])} {_ms(loss['max'])} {_ms(loss['mean'])} "
                     f"{loss['slow']:6d} {loss['t3']:>4} {loss['elapsed']:7.2f}")
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
