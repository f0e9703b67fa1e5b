"""Client address change in the netns lab (#15): data flowing again on the relay, and back
on UDP, timed from numbered messages (root; one lab for every run).

Each run: a fresh session from the client namespace (this module run as ``drive``) reaches
UDP; it sends a numbered, checksummed message every 5 ms, echoed by the host, and records the
wall-clock time and the client's transport of every send and every echo arrival (one kernel,
one clock with this process). Then the client moves: its address is taken away and another one
on the LAN given instead, and its router switches NAT type with every mapping flushed
(``Lab.set_nat``), so the old UDP path and the old relay leg lead nowhere and nothing says so.
Runs alternate the direction: 10.1.0.10 <-> 10.1.0.77, port-restricted <-> symmetric (a
session behind the symmetric NAT is on TURN, behind the port-restricted one on a punched path).

Figures, from the moment the move starts:

* ``relay_s``: the end of the echo gap the move made -- the first echo arriving after the
  longest inter-arrival gap following the move; the client must be sending on the relay then;
* ``udp_s``: the first echo of a message the client sent on UDP after it had moved onto the
  relay (the new UDP path: a fresh ICE agent on the new address);
* lost / duplicated / reordered among all echoes of the run (must be 0).

``python -m benchmarks run --only resume_lab --suite full`` (25 runs; quick: 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from .common import save, table
from .switching import _boxplot, _faults, _p95, _stats

ROOT = Path(__file__).resolve().parents[1]
ADDRS = ("10.1.0.10", "10.1.0.77")
NATS = ("port-restricted", "symmetric")
INTERVAL = 0.005
TARGET_RELAY_MS, TARGET_UDP_MS = 1500, 3000


# ----------------------------------------------------------------------------------------
# The client (runs inside the client namespace; line commands on stdin, JSON lines out)
# ----------------------------------------------------------------------------------------

async def _drive(a) -> int:
    from shortpath.app.desktop import check_numbered, numbered
    from shortpath.client import connect
    from shortpath.errors import SessionClosed

    def out(**kw) -> None:
        print(json.dumps({"t": time.time(), **kw}, default=str), flush=True)

    token = Path(a.token_file).read_text().strip()
    s = await connect(a.gateway, token, "desktop", cafile=a.ca, udp={"turn_cafile": a.turn_ca})
    await s.send(b"echo")                    # the host app echoes
    sends: list[tuple[float, str]] = []      # index = message number
    arrivals: list[tuple[float, int, str]] = []
    errors: list[str] = []

    async def receiver() -> None:
        try:
            while True:
                msg = await s.recv()
                now = time.time()
                try:
                    arrivals.append((now, check_numbered(msg), s.info.transport))
                except ValueError as exc:
                    errors.append(f"corrupt: {exc}")
        except SessionClosed as exc:
            errors.append(f"closed: {exc.reason}")

    rx = asyncio.ensure_future(receiver())
    end = time.monotonic() + 20
    while time.monotonic() < end and not s.closed and not (
            s.info.transport.startswith("udp")
            and any(e["event"] == "peer-switch" and e["transport"].startswith("udp") for e in s.history)):
        await asyncio.sleep(0.02)
    out(ev="ready", transport=s.info.transport)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    on = {"go": False}

    async def streamer() -> None:
        while on["go"] and not s.closed:
            i = len(sends)
            sends.append((time.time(), s.info.transport))
            try:
                await s.send(numbered(i))
            except SessionClosed:
                sends.pop()
                return
            await asyncio.sleep(INTERVAL)

    task = None
    while line := (await stdin.readline()).decode():
        cmd = line.split()[0]
        if cmd == "stream":
            on["go"] = True
            task = asyncio.ensure_future(streamer())
            out(ev="streaming")
        elif cmd == "count":
            out(ev="count", sent=len(sends), received=len(arrivals), transport=s.info.transport,
                closed=s.close_reason)
        elif cmd == "stop":
            on["go"] = False
            if task is not None:
                await task
            end = time.monotonic() + 20
            while len(arrivals) < len(sends) and time.monotonic() < end and not s.closed:
                await asyncio.sleep(0.02)
            out(ev="stopped", sends=sends, arrivals=arrivals, errors=errors[:10],
                history=s.info.to_dict()["history"], transport=s.info.transport, closed=s.close_reason)
        elif cmd == "close":
            break
    await s.close()
    rx.cancel()
    out(ev="bye")
    return 0


def _driver_main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["drive"])
    for name in ("--gateway", "--token-file", "--ca", "--turn-ca"):
        ap.add_argument(name, required=True)
    a = ap.parse_args(argv)
    from shortpath import log
    log.setup("WARNING")
    return asyncio.run(_drive(a))


# ----------------------------------------------------------------------------------------
# Figures from one run's record (pure)
# ----------------------------------------------------------------------------------------

def figures(sends: list, arrivals: list, t_move: float) -> dict:
    """``sends``: [(t, transport)] by message number; ``arrivals``: [(t, number, transport)]
    in arrival order; times in seconds (one clock). See the module docstring."""
    after = [a for a in arrivals if a[0] >= t_move]
    before = [a for a in arrivals if a[0] < t_move]
    relay = udp = None
    relay_transport = None
    if after:
        prev = before[-1][0] if before else t_move
        gaps = []
        for a in after:
            gaps.append((a[0] - prev, a))
            prev = a[0]
        _, first = max(gaps, key=lambda g: g[0])
        relay, relay_transport = first[0] - t_move, first[2]
        # UDP again: sent on UDP after the client had moved onto the relay (before that, sends
        # on the old UDP path that the move had not yet cut could still come back)
        on_relay = next((t for t, tr in sends if t >= t_move and tr == "tcp-relay"), None)
        on_udp = [a[0] for a in after if on_relay is not None and sends[a[1]][0] >= on_relay
                  and sends[a[1]][1].startswith("udp")]
        udp = min(on_udp) - t_move if on_udp else None
    nums = [a[1] for a in arrivals]
    return {"relay_s": relay, "relay_on": relay_transport, "udp_s": udp, **_faults(len(sends), nums)}


# ----------------------------------------------------------------------------------------
# The runs (this process, root)
# ----------------------------------------------------------------------------------------

def _cmd(proc, line: str, ev: str, timeout: float = 30.0) -> dict:
    mark = proc.mark()
    proc.send_line(line)
    return json.loads(proc.wait_for_line(lambda l: l.startswith("{") and json.loads(l).get("ev") == ev,
                                         timeout, since=mark))


def _client_ifname(lab, ip: str) -> str:
    for dev in json.loads(lab.client.run(["ip", "-j", "addr", "show"]).stdout):
        if any(a.get("local") == ip for a in dev.get("addr_info", [])):
            return dev["ifname"]
    raise RuntimeError(f"no interface with {ip} in the client namespace")


def one_run(lab, st: dict, k: int) -> dict:
    from tests.lab.test_faults import _client_args
    old, new = ADDRS[k % 2], ADDRS[(k + 1) % 2]
    nat_to = NATS[(k + 1) % 2]
    argv = [sys.executable, "-m", "benchmarks.resume_lab", "drive",
            *_client_args(st)[:8]]               # --gateway --token-file --ca --turn-ca
    d = lab.spawn("client", argv, stdin=True, cwd=str(ROOT))
    try:
        ready = json.loads(d.wait_for_line(lambda l: l.startswith("{") and json.loads(l).get("ev") == "ready", 60))
        _cmd(d, "stream", "streaming")
        time.sleep(1.0)
        dev = _client_ifname(lab, old)
        t_move = time.time()
        lab.client.ip_batch([f"addr del {old}/24 dev {dev}", f"addr add {new}/24 dev {dev}",
                             "route add default via 10.1.0.1"])
        lab.set_nat("client", nat_to)
        moved_in = time.time() - t_move
        deadline = time.monotonic() + 30
        seen_relay = False
        while time.monotonic() < deadline:      # only to know when to stop; figures come from the record
            c = _cmd(d, "count", "count")
            seen_relay = seen_relay or c["transport"] == "tcp-relay"
            if c["closed"] or seen_relay and c["transport"].startswith("udp"):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        rec = _cmd(d, "stop", "stopped", 40)
        _cmd(d, "close", "bye", 15)
    finally:
        lab.stop(d)
    fig = figures(rec["sends"], rec["arrivals"], t_move)
    kinds = [h["event"] for h in rec["history"] if h["t"] >= t_move - 0.01]
    return {"run": k + 1, "from": f"{old} {NATS[k % 2]}", "to": f"{new} {nat_to}", "start": ready["transport"],
            "end": rec["transport"], "move_cmds_s": round(moved_in, 4), **fig, "errors": rec["errors"],
            "closed": rec["closed"], "events": kinds}


def _main(runs: int) -> list[dict]:
    from netns_lab import Lab
    from tests.lab.test_faults import _start
    out = []
    with Lab(client_nat=NATS[0], host_nat="port-restricted") as lab:
        st = _start(lab)
        for k in range(runs):
            r = one_run(lab, st, k)
            out.append(r)
            print(f"  run {k + 1}/{runs} {r['from']} -> {r['to']}: start {r['start']}, relay "
                  f"{r['relay_s'] and round(r['relay_s'] * 1000)} ms ({r['relay_on']}), udp "
                  f"{r['udp_s'] and round(r['udp_s'] * 1000)} ms ({r['end']}); lost={r['lost']} "
                  f"dup={r['duplicated']} reordered={r['reordered']} {r['errors'] or ''}", flush=True)
    return out


def run(suite: str = "quick", plot: bool = True) -> dict:
    runs = 3 if suite == "quick" else 25
    rs = _main(runs)
    summary = {}
    for key in ("relay_s", "udp_s"):
        xs = [r[key] for r in rs]
        summary[key] = {**_stats(xs), "p95_ms": None if _p95(xs) is None else round(_p95(xs) * 1000, 1)}
    totals = {k: sum(r[k] for r in rs) for k in ("messages", "lost", "duplicated", "reordered")}
    summary["relay_not_on_relay"] = sum(1 for r in rs if r["relay_on"] != "tcp-relay")
    summary["not_back_on_udp"] = sum(1 for r in rs if not str(r["end"]).startswith("udp"))
    summary["sessions_closed"] = sum(1 for r in rs if r["closed"])
    summary.update(totals)
    rows = [{"figure": name, "median ms": summary[k]["median_ms"], "p95 ms": summary[k]["p95_ms"],
             "max ms": summary[k]["max_ms"], "runs": summary[k]["n"], "target p95": f"{tgt} ms"}
            for name, k, tgt in (("move -> data on relay", "relay_s", TARGET_RELAY_MS),
                                 ("move -> data on UDP", "udp_s", TARGET_UDP_MS))]
    print(table(rows, ["figure", "median ms", "p95 ms", "max ms", "runs", "target p95"]))
    print(f"messages {totals['messages']}, lost {totals['lost']}, duplicated {totals['duplicated']}, "
          f"reordered {totals['reordered']}; first data not on the relay: {summary['relay_not_on_relay']}, "
          f"not back on UDP: {summary['not_back_on_udp']}, sessions closed: {summary['sessions_closed']}")
    data = {"suite": suite, "runs": runs, "interval_s": INTERVAL, "summary": summary, "raw": rs}
    path = save(f"resume_lab_{suite}", data)
    if plot:
        _boxplot(path, [[r[k] * 1000 for r in rs if r[k] is not None] for k in ("relay_s", "udp_s")],
                 ["move -> data on the relay", "move -> data on UDP"], target_ms=TARGET_RELAY_MS,
                 target_label="target p95 1.5 s (relay); UDP target 3 s", ylabel="ms after the move",
                 title=f"Client address change in the lab, {runs} runs")
    print(f"saved {path}")
    return data


if __name__ == "__main__":
    sys.exit(_driver_main())
