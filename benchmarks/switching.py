"""Time to UDP, failover and return, over many runs (loopback, real ICE/DTLS/SCTP).

Each run: a fresh session through the gateway (host and gateway in this
process, as in the integration tests); time from connect() to the session
sending on UDP; then a stream of numbered, checksummed messages (one per
5 ms, echoed by the host) while the UDP path is blackholed at both ends
(the UdpPath socket hook; no root needed) for ``dark`` seconds and restored.
Recorded: failover time (blackhole -> client sending on tcp-relay), return
time (restore -> client sending on UDP again), and messages lost, duplicated
or reordered (must be 0).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time

from shortpath.app.desktop import check_numbered, numbered
from shortpath.demo import LocalStack

from .common import save, table


async def _until(pred, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return time.monotonic()
        await asyncio.sleep(0.002)
    return None


async def one_run(stack: LocalStack, dark: float) -> dict:
    t0 = time.monotonic()
    s = await stack.connect()
    relay_up = time.monotonic() - t0
    await s.send(b"echo")
    t_udp = await _until(lambda: s.info.transport.startswith("udp"), 10)
    hs = next(h.sessions[s.session_id] for h in stack.hosts if s.session_id in h.sessions)
    await _until(lambda: hs.active.kind.startswith("udp"), 5)
    got: list[int] = []
    sent = 0
    stop = asyncio.Event()

    async def sender():
        nonlocal sent
        while not stop.is_set():
            await s.send(numbered(sent))
            sent += 1
            await asyncio.sleep(0.005)

    async def receiver():
        while True:
            got.append(check_numbered(await s.recv()))

    tx, rx = asyncio.ensure_future(sender()), asyncio.ensure_future(receiver())
    await asyncio.sleep(0.3)
    paths = [s.active, hs.active]
    t_dark = time.monotonic()
    for p in paths:
        p.udp.blackhole(True)
    t_fail = await _until(lambda: s.info.transport == "tcp-relay", 5)
    await asyncio.sleep(max(0.0, dark - (time.monotonic() - t_dark)))
    t_light = time.monotonic()
    for p in paths:
        p.udp.blackhole(False)
    t_back = await _until(lambda: s.info.transport.startswith("udp"), 10)
    await asyncio.sleep(0.3)
    stop.set()
    await tx
    await _until(lambda: len(got) >= sent, 10)
    rx.cancel()
    info = s.info.to_dict()
    lost = len(set(range(sent)) - set(got))
    dup = len(got) - len(set(got))
    reordered = sum(1 for a, b in zip(got, got[1:]) if b < a)
    await s.close()
    return {"relay_up_s": relay_up, "time_to_udp_s": None if t_udp is None else t_udp - t0,
            "failover_s": None if t_fail is None else t_fail - t_dark,
            "return_s": None if t_back is None else t_back - t_light,
            "messages": sent, "lost": lost, "duplicated": dup, "reordered": reordered,
            "in_order_exactly_once": got == list(range(sent)), "info": info}


def _stats(xs: list) -> dict:
    ok = [x for x in xs if x is not None]
    return {"median_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
            "max_ms": round(max(ok) * 1000, 1) if ok else None, "n": len(ok), "missing": len(xs) - len(ok)}


async def _main(runs: int, dark: float, progress: bool) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(prefix="sp-switch-") as state:
        async with LocalStack(state, hosts=1) as stack:
            for i in range(runs):
                r = await one_run(stack, dark)
                r.pop("info")
                out.append(r)
                if progress:
                    print(f"  run {i + 1}/{runs}: udp {r['time_to_udp_s']:.3f}s failover "
                          f"{r['failover_s']:.3f}s return {r['return_s']:.3f}s lost={r['lost']} dup={r['duplicated']} "
                          f"reordered={r['reordered']}", flush=True)
    return out


def run(suite: str = "quick", plot: bool = True) -> dict:
    runs = 5 if suite == "quick" else 25
    dark = 2.0
    results = asyncio.run(_main(runs, dark, progress=True))
    summary = {k: _stats([r[k] for r in results]) for k in ("relay_up_s", "time_to_udp_s", "failover_s", "return_s")}
    totals = {k: sum(r[k] for r in results) for k in ("messages", "lost", "duplicated", "reordered")}
    rows = [{"figure": k.replace("_s", ""), "median ms": v["median_ms"], "max ms": v["max_ms"], "runs": v["n"]}
            for k, v in summary.items()]
    print(table(rows, ["figure", "median ms", "max ms", "runs"]))
    print(f"messages {totals['messages']}: lost {totals['lost']}, duplicated {totals['duplicated']}, "
          f"reordered {totals['reordered']}  (targets: failover <= 1000 ms, return <= 5000 ms, 0 lost)")
    data = {"suite": suite, "runs": runs, "dark_s": dark, "summary": summary, "totals": totals, "raw": results}
    path = save(f"switching_{suite}", data)
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = ["time_to_udp_s", "failover_s", "return_s"]
        ax.boxplot([[r[k] * 1000 for r in results if r[k] is not None] for k in keys],
                   tick_labels=["time to UDP", "failover", "return to UDP"])
        ax.axhline(1000, ls="--", c="tab:red", lw=0.8, label="failover target 1 s")
        ax.set_ylabel("ms")
        ax.set_title(f"Path switching on loopback, {runs} runs, {dark:.0f} s UDP blackhole")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path.replace(".json", ".png"), dpi=100)
        plt.close(fig)
    print(f"saved {path}")
    return data
