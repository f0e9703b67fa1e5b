"""Time to UDP, failover and return, over many runs (loopback, real ICE/DTLS/SCTP).

Each run: a fresh session through the gateway (host and gateway in this
process, as in the integration tests); time from connect() to the session
sending on UDP; then a stream of numbered, checksummed messages (one per
5 ms, echoed by the host) while the UDP path is blackholed at both ends
(the UdpPath socket hook; no root needed) for ``dark`` seconds and restored.
Recorded: failover time (blackhole -> client sending on tcp-relay), return
time (restore -> client sending on UDP again), and messages lost, duplicated
or reordered (must be 0).

Resume (#15), same stream, two more figures per run (``resume_run``):

* gateway crash under a relay-only session -> data flowing again: the gateway's
  connections are all cut at once with no goodbye (as its process dying does),
  a new gateway starts on the same port and state; measured from the moment it
  listens to the first echoed message the client receives after that;
* relay lost while on UDP -> replaced: same crash under a UDP session; measured
  from the moment the new gateway listens to the client holding a new relay leg.
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


class _EchoStream:
    """Numbered, checksummed messages on ``s`` every 5 ms (the host echoes them); ``got``
    holds (arrival time, number) of every echo, in arrival order."""

    def __init__(self, s) -> None:
        self.s = s
        self.sent = 0
        self.got: list[tuple[float, int]] = []
        self._stop = asyncio.Event()
        self._tx = asyncio.ensure_future(self._send())
        self._rx = asyncio.ensure_future(self._recv())

    async def _send(self) -> None:
        while not self._stop.is_set():
            await self.s.send(numbered(self.sent))
            self.sent += 1
            await asyncio.sleep(0.005)

    async def _recv(self) -> None:
        while True:
            n = check_numbered(await self.s.recv())
            self.got.append((time.monotonic(), n))

    async def finish(self) -> list[int]:
        """Stop sending, wait (10 s at most) for the echoes and return their numbers."""
        self._stop.set()
        await self._tx
        await _until(lambda: len(self.got) >= self.sent, 10)
        self._rx.cancel()
        return [n for _, n in self.got]


def _faults(sent: int, nums: list[int]) -> dict:
    """Messages lost, duplicated and reordered among the echoes ``nums`` of 0..sent-1."""
    return {"messages": sent, "lost": len(set(range(sent)) - set(nums)), "duplicated": len(nums) - len(set(nums)),
            "reordered": sum(1 for a, b in zip(nums, nums[1:]) if b < a)}


async def one_run(stack: LocalStack, dark: float) -> dict:
    t0 = time.monotonic()
    s = await stack.connect()
    relay_up = time.monotonic() - t0
    await s.send(b"echo")
    t_udp = await _until(lambda: s.info.transport.startswith("udp"), 10)
    hs = next(h.sessions[s.session_id] for h in stack.hosts if s.session_id in h.sessions)
    await _until(lambda: hs.active.kind.startswith("udp"), 5)
    stream = _EchoStream(s)
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
    got = await stream.finish()
    info = s.info.to_dict()
    await s.close()
    return {"relay_up_s": relay_up, "time_to_udp_s": None if t_udp is None else t_udp - t0,
            "failover_s": None if t_fail is None else t_fail - t_dark,
            "return_s": None if t_back is None else t_back - t_light,
            **_faults(stream.sent, got), "in_order_exactly_once": got == list(range(stream.sent)), "info": info}


async def _crash_and_restart(stack: LocalStack) -> float:
    """Cut every connection of the gateway at once (no GATEWAY_END: a crash as the peers
    see it), then start a fresh gateway on the same port and state; returns when it listens."""
    gw = stack.gateway
    port = gw.port
    for conn in list(gw._conns.values()):
        conn.abort()
    await gw.stop()
    await stack.start_gateway(port)
    return time.monotonic()


async def resume_run(stack: LocalStack, udp: bool) -> dict:
    s = await stack.connect(shortpath=udp)
    await s.send(b"echo")
    if udp:
        await _until(lambda: s.info.transport.startswith("udp"), 10)
    stream = _EchoStream(s)
    await asyncio.sleep(0.3)
    on_udp = s.info.transport.startswith("udp")
    t_ready = await _crash_and_restart(stack)
    if udp:
        t_done = await _until(lambda: s.relay is not None and s.relay.path_id != "relay", 20)
    else:
        t_done = await _until(lambda: stream.got and stream.got[-1][0] > t_ready, 20)
    await asyncio.sleep(0.3)
    nums = await stream.finish()
    info = s.info
    await s.close()
    return {"on_udp": on_udp, "after_gateway_ready_s": None if t_done is None else t_done - t_ready,
            **_faults(stream.sent, nums), "resumes": info.resumes,
            "relay_replacements": info.relay_replacements, "closed": s.close_reason}


def _p95(xs: list) -> float | None:
    ok = sorted(x for x in xs if x is not None)
    if not ok:
        return None
    return ok[min(len(ok) - 1, max(0, int(round(0.95 * len(ok) + 0.5)) - 1))]


async def _resume_main(runs: int) -> dict:
    out: dict = {"gateway_kill_relay_only": [], "relay_replaced_on_udp": []}
    with tempfile.TemporaryDirectory(prefix="sp-resume-") as state:
        async with LocalStack(state, hosts=1) as stack:
            for i in range(runs):
                for key, udp in (("gateway_kill_relay_only", False), ("relay_replaced_on_udp", True)):
                    await asyncio.wait_for(stack.hosts[0].registered.wait(), 30)
                    r = await resume_run(stack, udp)
                    out[key].append(r)
                    print(f"  run {i + 1}/{runs} {key}: {r['after_gateway_ready_s']} s lost={r['lost']} "
                          f"dup={r['duplicated']} reordered={r['reordered']}", flush=True)
    return out


def run_resume(suite: str = "quick", plot: bool = True) -> dict:
    runs = 5 if suite == "quick" else 25
    results = asyncio.run(_resume_main(runs))
    summary = {}
    for key, rs in results.items():
        xs = [r["after_gateway_ready_s"] for r in rs]
        summary[key] = {**_stats(xs), "p95_ms": None if _p95(xs) is None else round(_p95(xs) * 1000, 1),
                        **{k: sum(r[k] for r in rs) for k in ("messages", "lost", "duplicated", "reordered")}}
    rows = [{"figure": k, "median ms": v["median_ms"], "p95 ms": v["p95_ms"], "max ms": v["max_ms"],
             "runs": v["n"], "lost/dup/reord": f"{v['lost']}/{v['duplicated']}/{v['reordered']}"}
            for k, v in summary.items()]
    print(table(rows, ["figure", "median ms", "p95 ms", "max ms", "runs", "lost/dup/reord"]))
    print("(targets #15: gateway kill -> data flowing p95 <= 2000 ms after a gateway is reachable; "
          "relay replaced p95 <= 2000 ms; 0 lost)")
    data = {"suite": suite, "runs": runs, "summary": summary, "raw": results}
    path = save(f"switching_resume_{suite}", data)
    if plot:
        _boxplot(path, [[r["after_gateway_ready_s"] * 1000 for r in rs if r["after_gateway_ready_s"] is not None]
                        for rs in results.values()],
                 ["gateway crash -> data again\n(relay only)", "relay replaced\n(session on UDP)"],
                 target_ms=2000, target_label="target p95 2 s", ylabel="ms after the new gateway listens",
                 title=f"Resume on loopback, {runs} runs each")
    print(f"saved {path}")
    return data


def _boxplot(path: str, series: list[list[float]], labels: list[str], *, target_ms: float, target_label: str,
             ylabel: str, title: str) -> None:
    """One box per series with a dashed target line, saved next to ``path`` as .png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot(series, tick_labels=labels)
    ax.axhline(target_ms, ls="--", c="tab:red", lw=0.8, label=target_label)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.replace(".json", ".png"), dpi=100)
    plt.close(fig)


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
        keys = ["time_to_udp_s", "failover_s", "return_s"]
        _boxplot(path, [[r[k] * 1000 for r in results if r[k] is not None] for k in keys],
                 ["time to UDP", "failover", "return to UDP"], target_ms=1000, target_label="failover target 1 s",
                 ylabel="ms", title=f"Path switching on loopback, {runs} runs, {dark:.0f} s UDP blackhole")
    print(f"saved {path}")
    data["resume"] = run_resume(suite, plot)      # #15: gateway crash, relay replaced while on UDP
    return data
