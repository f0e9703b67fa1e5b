"""TCP relay vs direct TLS on loopback, measured side by side in one run.

Processes: gateway and host run as their own processes (as deployed), the
client runs here; the baseline is a plain TLS echo/sink server process. Both
are measured with the same message sizes and the same client loop.

Figures: small-message (64 B) echo RTT p50/p99, bulk one-way throughput with
64 KiB messages, and session setup time (connect() to session up).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import struct
import tempfile
import time

from shortpath.auth.tokens import TokenSigner
from shortpath.client import connect
from shortpath.config import DEFAULT_GATEWAY_ID

from .common import Proc, py, save, summary_ms, table

CHUNK = 64 * 1024


async def _relay_measure(addr: str, token: str, cafile: str, n_echo: int, bulk: int) -> dict:
    t0 = time.monotonic()
    s = await connect(addr, token, "desktop", cafile=cafile, shortpath=False)
    setup = time.monotonic() - t0
    async with s:
        await s.send(b"echo")
        for _ in range(50):                      # warm-up
            await s.send(b"w" * 64)
            await s.recv()
        rtts = []
        for i in range(n_echo):
            t = time.perf_counter()
            await s.send(b"e" * 64)
            await s.recv()
            rtts.append(time.perf_counter() - t)
    s2 = await connect(addr, token, "desktop", cafile=cafile, shortpath=False)
    async with s2:
        await s2.send(b"sink %d" % bulk)
        block = os.urandom(CHUNK)
        t = time.perf_counter()
        sent = 0
        while sent < bulk:
            await s2.send(block)
            sent += CHUNK
        reply = await s2.recv()
        elapsed = time.perf_counter() - t
        assert reply == b"sunk %d" % sent, reply
    return {"rtt": rtts, "setup_s": setup, "mbit_s": sent * 8 / elapsed / 1e6}


async def _tls_measure(port: int, n_echo: int, bulk: int) -> dict:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t0 = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    setup = time.monotonic() - t0
    msg = b"E" + struct.pack("!I", 64) + b"e" * 64
    for _ in range(50):
        w.write(msg)
        await r.readexactly(len(msg))
    rtts = []
    for _ in range(n_echo):
        t = time.perf_counter()
        w.write(msg)
        await w.drain()
        await r.readexactly(len(msg))
        rtts.append(time.perf_counter() - t)
    block = os.urandom(CHUNK)
    w.write(b"S" + struct.pack("!I", bulk))
    t = time.perf_counter()
    sent = 0
    while sent < bulk:
        w.write(block)
        await w.drain()
        sent += CHUNK
    await r.readexactly(5)
    elapsed = time.perf_counter() - t
    w.close()
    return {"rtt": rtts, "setup_s": setup, "mbit_s": sent * 8 / elapsed / 1e6}


def run(suite: str = "quick", plot: bool = True) -> dict:
    n_echo, bulk = (1000, 32 * 2**20) if suite == "quick" else (5000, 256 * 2**20)
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as state:
        gw = Proc(py("-m", "shortpath", "gateway", "--listen", "127.0.0.1:0", "--state", state))
        procs = [gw]
        try:
            addr = f"127.0.0.1:{gw.ready['port']}"
            signer = TokenSigner.load_or_create(os.path.join(state, "signing.key"))
            host_tok = signer.mint("host", "bench-host", DEFAULT_GATEWAY_ID, 3600, time.time(), pool="desktop")
            user_tok = signer.mint("user", "bench", DEFAULT_GATEWAY_ID, 3600, time.time(), resources=["desktop"])
            procs.append(Proc(py("-m", "shortpath", "host", "--gateway", addr, "--host-id", "bench-host",
                                 "--ca", gw.ready["cert"], "--state", os.path.join(state, "host")),
                              env={"SHORTPATH_TOKEN": host_tok}))
            tls = Proc(py("-m", "benchmarks.tls_echo"))
            procs.append(tls)
            # Interleave: direct, relay, direct, relay -- so drift on a shared machine hits both.
            results = {"direct-tls": [], "tcp-relay": []}
            for _ in range(2):
                results["direct-tls"].append(asyncio.run(_tls_measure(tls.ready["port"], n_echo // 2, bulk // 2)))
                results["tcp-relay"].append(asyncio.run(_relay_measure(addr, user_tok, gw.ready["cert"],
                                                                       n_echo // 2, bulk // 2)))
        finally:
            for p in procs:
                p.stop()
    rows, out = [], {}
    for name, runs in results.items():
        rtt = [x for r in runs for x in r["rtt"]]
        mbit = sum(r["mbit_s"] for r in runs) / len(runs)
        out[name] = {"rtt": summary_ms(rtt), "throughput_mbit_s": round(mbit, 1),
                     "setup_ms": round(1000 * sum(r["setup_s"] for r in runs) / len(runs), 2),
                     "rtt_samples_ms": [round(x * 1000, 4) for x in rtt]}
        rows.append({"path": name, "rtt p50 ms": out[name]["rtt"]["p50_ms"], "rtt p99 ms": out[name]["rtt"]["p99_ms"],
                     "Mbit/s": out[name]["throughput_mbit_s"], "setup ms": out[name]["setup_ms"]})
    ratios = {"relay_over_direct_throughput": round(out["tcp-relay"]["throughput_mbit_s"]
                                                    / out["direct-tls"]["throughput_mbit_s"], 3),
              "relay_over_direct_rtt_p50": round(out["tcp-relay"]["rtt"]["p50_ms"] / out["direct-tls"]["rtt"]["p50_ms"], 2)}
    print(table(rows, ["path", "rtt p50 ms", "rtt p99 ms", "Mbit/s", "setup ms"]))
    print(f"relay throughput = {ratios['relay_over_direct_throughput']:.0%} of direct TLS "
          f"(target >= 50%); relay RTT p50 = {ratios['relay_over_direct_rtt_p50']}x direct")
    data = {"suite": suite, "n_echo": n_echo, "bulk_bytes": bulk, "paths": out, "ratios": ratios}
    path = save(f"relay_{suite}", data)
    if plot:
        _plot(out, path.replace(".json", ".png"))
    print(f"saved {path}")
    return data


def _plot(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, d in out.items():
        xs = sorted(d["rtt_samples_ms"])
        a.plot(xs, [i / len(xs) for i in range(len(xs))], label=name)
    a.set_xlabel("64 B echo RTT (ms)")
    a.set_ylabel("CDF")
    a.set_xscale("log")
    a.legend()
    a.set_title("Loopback RTT")
    names = list(out)
    b.bar(names, [out[n]["throughput_mbit_s"] for n in names], color=["tab:blue", "tab:orange"])
    b.set_ylabel("Mbit/s")
    b.set_title("Bulk throughput (64 KiB messages)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
