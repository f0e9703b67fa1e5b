"""Gateway scale: N concurrent relay sessions through one gateway process.

``python -m benchmarks run --suite quick --only scale`` (N = 50, 100) or ``--suite full``
(N = 100, 500, 1000). For each N a fresh stack is started on loopback: one gateway
process, two host processes and two client worker processes (each worker holds N/2
sessions, all on the tcp-relay: the sessions never upgrade to UDP, so every byte
crosses the gateway). Per N:

* memory: RSS of the gateway, the hosts and the client workers before the sessions
  exist and with all N up; per session = the difference / N;
* **paced** phase: every session sends a 256-byte numbered, checksummed echo every
  200 ms (interactive load, N x 5 messages/s each way); echo RTT p50/p99 across all
  sessions, gateway CPU (from ``/proc/<pid>/stat``, % of one core);
* **bulk** phase: every session keeps 4 echoes of 16 KiB in flight (closed loop):
  relayed throughput (bytes through the gateway, both directions), echo p99 under
  that load, gateway CPU;
* integrity in both phases: lost, duplicated, reordered or corrupt echoes (expected 0).

The soft RLIMIT_NOFILE of this process is raised to its hard limit (children inherit
it); the gateway needs about 2 descriptors per session. The pool allows N sessions
per host and the launch rate limit is lifted (all clients share 127.0.0.1).

The client worker (``python -m benchmarks.scale worker ...``) is shared with the lab
load test (``benchmarks.load``). It speaks JSON lines: commands on stdin
(``connect N CONC``, ``exchange SECONDS COUNT SIZE DEPTH INTERVAL``, ``quit``), one
JSON result line per command on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time

from .common import percentile, save, table

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- measuring processes
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns (old soft, new soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class CpuMeter:
    """CPU used by a set of pids between start() and stop(), as % of one core."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: sum(cpu_seconds(p) for p in v) for k, v in self.pids.items()}

    def stop(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {k: round(100 * (sum(cpu_seconds(p) for p in v) - self.c0[k]) / dt, 1) for k, v in self.pids.items()}


# --------------------------------------------------------------------------- worker side
async def _exchange(session, seconds: float, count: int, size: int, depth: int, interval: float,
                    grace: float = 15.0) -> dict:
    """Numbered, checksummed echoes on one session; returns its counters and RTT samples."""
    from shortpath.app.desktop import check_numbered, numbered

    slots = asyncio.Semaphore(depth)
    sent_at: dict[int, float] = {}
    st = {"sent": 0, "received": 0, "lost": 0, "dup": 0, "reordered": 0, "corrupt": 0, "bytes": 0,
          "error": None, "rtt": []}
    seen: set[int] = set()
    highest = -1
    sender_done = asyncio.Event()
    end = time.monotonic() + seconds if seconds else None

    async def sender():
        i = 0
        if interval:
            await asyncio.sleep(random.uniform(0, interval))
        try:
            while (not count or i < count) and (end is None or time.monotonic() < end):
                await slots.acquire()
                sent_at[i] = time.perf_counter()
                await session.send(numbered(i, size))
                i += 1
                st["sent"] = i
                if interval:
                    await asyncio.sleep(interval)
        finally:
            sender_done.set()

    async def receiver():
        nonlocal highest
        while True:
            msg = await session.recv()
            now = time.perf_counter()
            try:
                idx = check_numbered(msg)
            except ValueError:
                st["corrupt"] += 1
                slots.release()
                continue
            st["received"] += 1
            st["bytes"] += len(msg)
            if idx in seen:
                st["dup"] += 1
                continue
            seen.add(idx)
            if idx != highest + 1:
                st["reordered"] += 1
            highest = max(highest, idx)
            t = sent_at.pop(idx, None)
            if t is not None:
                st["rtt"].append(round((now - t) * 1000, 3))
            slots.release()
            if sender_done.is_set() and len(seen) >= st["sent"]:
                return

    snd = asyncio.ensure_future(sender())
    rcv = asyncio.ensure_future(receiver())
    try:
        await snd
        if len(seen) < st["sent"]:
            # echoes still in flight get a grace period; whatever does not come back is lost
            await asyncio.wait_for(rcv, grace)
    except asyncio.TimeoutError:
        st["error"] = "timeout"
    except Exception as exc:   # a session that fails is reported, not hidden
        st["error"] = getattr(exc, "code", type(exc).__name__)
    finally:
        for t in (snd, rcv):
            t.cancel()
    st["lost"] = st["sent"] - len(seen)
    return st


async def _worker(gateway: str, token: str, cafile: str) -> None:
    from shortpath.client import connect

    loop = asyncio.get_running_loop()
    sessions: list = []
    print(json.dumps({"event": "boot", "pid": os.getpid()}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd, *args = line.split()
        if cmd == "connect":
            n, conc = int(args[0]), int(args[1])
            gate = asyncio.Semaphore(conc)
            setup, errors = [], {}

            async def one():
                async with gate:
                    t = time.perf_counter()
                    try:
                        s = await connect(gateway, token, "desktop", cafile=cafile, shortpath=False)
                        await s.send(b"echo")
                    except Exception as exc:
                        code = getattr(exc, "code", type(exc).__name__)
                        errors[code] = errors.get(code, 0) + 1
                        return
                    setup.append((time.perf_counter() - t) * 1000)
                    sessions.append(s)

            await asyncio.gather(*(one() for _ in range(n)))
            print(json.dumps({"event": "connect", "ok": len(setup), "failed": n - len(setup), "errors": errors,
                              "setup_ms": [round(x, 2) for x in setup]}), flush=True)
        elif cmd == "exchange":
            seconds, count, size, depth, interval = float(args[0]), int(args[1]), int(args[2]), int(args[3]), float(args[4])
            t = time.monotonic()
            per = await asyncio.gather(*(_exchange(s, seconds, count, size, depth, interval) for s in sessions))
            elapsed = time.monotonic() - t
            out = {"event": "exchange", "elapsed_s": round(elapsed, 3), "sessions": len(per), "rtt_ms": [],
                   "failed_sessions": sum(1 for p in per if p["error"]),
                   "errors": sorted({p["error"] for p in per if p["error"]}),
                   "completed_sessions": sum(1 for p in per if not p["error"] and p["lost"] == 0
                                             and (not count or p["sent"] == count))}
            for k in ("sent", "received", "lost", "dup", "reordered", "corrupt", "bytes"):
                out[k] = sum(p[k] for p in per)
            for p in per:
                out["rtt_ms"] += p["rtt"]
            print(json.dumps(out), flush=True)
        elif cmd == "quit":
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
            print(json.dumps({"event": "quit", "closed": len(sessions)}), flush=True)
            break


def worker_argv(gateway: str, token_file: str, cafile: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.scale", "worker", "--gateway", gateway,
            "--token-file", token_file, "--ca", cafile]


# --------------------------------------------------------------------------- driver side
class Child:
    """A child process that prints JSON lines; stderr goes to a log file."""

    def __init__(self, argv: list[str], log_path: str, env: dict | None = None, stdin: bool = False) -> None:
        self.log = open(log_path, "w")
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=self.log, text=True,
                                      env={**os.environ, **(env or {})})
        self.pid = self.popen.pid
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, cmd: str) -> None:
        self.popen.stdin.write(cmd + "\n")
        self.popen.stdin.flush()

    def recv(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"pid {self.pid}: no answer in {timeout:.0f}s (log {self.log.name})") from None
            if line is None:
                raise RuntimeError(f"pid {self.pid} exited (rc={self.popen.poll()}); see {self.log.name}")
            if line.startswith("{"):
                return json.loads(line)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


def gateway_toml(listen: str, state: str, max_sessions: int) -> str:
    return f"""[gateway]
listen = "{listen}"
state_dir = "{state}"
max_unauthenticated = {max(2000, 2 * max_sessions)}
max_unauthenticated_per_source = {max(2000, 2 * max_sessions)}
max_pending_legs = {max(1000, 2 * max_sessions)}
launch_rate = 100000.0
launch_burst = 100000.0

[[pool]]
name = "desktop"
load_balancer = "breadth-first"
max_sessions = {max_sessions}

[pool.shortpath]
enabled = false
"""


def rtt_summary(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    return {"n": len(samples), "p50_ms": round(percentile(samples, 50), 3), "p99_ms": round(percentile(samples, 99), 3),
            "max_ms": round(max(samples), 3)}


def broadcast(workers, cmd: str, timeout: float) -> list[dict]:
    for w in workers:
        w.send(cmd)
    return [w.recv(timeout) for w in workers]


def merge_exchange(results: list[dict]) -> dict:
    out = {k: sum(r[k] for r in results) for k in ("sessions", "sent", "received", "lost", "dup", "reordered",
                                                    "corrupt", "bytes", "failed_sessions", "completed_sessions")}
    out["elapsed_s"] = max(r["elapsed_s"] for r in results)
    out["echoes_per_s"] = round(out["received"] / out["elapsed_s"], 1) if out["elapsed_s"] else None
    out["errors"] = sorted({e for r in results for e in r["errors"]})
    out["rtt"] = rtt_summary([x for r in results for x in r["rtt_ms"]])
    return out


def measure_n(n: int, *, hosts: int, workers: int, paced_s: float, bulk_s: float, log) -> dict:
    """One fresh loopback stack, n sessions; returns the figures for this n."""
    from shortpath.auth.tokens import TokenSigner
    from shortpath.config import DEFAULT_GATEWAY_ID

    with tempfile.TemporaryDirectory(prefix=f"sp-scale-{n}-") as tmp:
        state = os.path.join(tmp, "gw")
        os.makedirs(state)
        cfg = os.path.join(tmp, "gateway.toml")
        with open(cfg, "w") as f:
            f.write(gateway_toml("127.0.0.1:0", state, n))
        procs: list[Child] = []
        try:
            gw = Child([sys.executable, "-m", "shortpath", "gateway", "--config", cfg], os.path.join(tmp, "gw.log"))
            procs.append(gw)
            ready = gw.recv(20)
            addr = f"127.0.0.1:{ready['port']}"
            signer = TokenSigner.load_or_create(os.path.join(state, "signing.key"))
            tok = os.path.join(tmp, "user.tok")
            with open(tok, "w") as f:
                f.write(signer.mint("user", "scale", DEFAULT_GATEWAY_ID, 3600, time.time(), resources=["desktop"]))
            host_procs = []
            for i in range(hosts):
                htok = signer.mint("host", f"h{i}", DEFAULT_GATEWAY_ID, 3600, time.time(), pool="desktop")
                h = Child([sys.executable, "-m", "shortpath", "host", "--gateway", addr, "--host-id", f"h{i}",
                           "--ca", ready["cert"], "--state", os.path.join(tmp, f"h{i}")],
                          os.path.join(tmp, f"h{i}.log"), env={"SHORTPATH_TOKEN": htok})
                procs.append(h)
                host_procs.append(h)
            for h in host_procs:
                h.recv(20)
            wk = []
            for i in range(workers):
                w = Child(worker_argv(addr, tok, ready["cert"]), os.path.join(tmp, f"w{i}.log"), stdin=True)
                procs.append(w)
                wk.append(w)
            for w in wk:
                w.recv(20)
            pids = {"gateway": [gw.pid], "hosts": [h.pid for h in host_procs], "clients": [w.pid for w in wk]}
            rss0 = {k: sum(rss_kib(p) for p in v) for k, v in pids.items()}
            shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
            t = time.monotonic()
            for w, k in zip(wk, shares):
                w.send(f"connect {k} 16")
            conn = [w.recv(60 + n * 0.2) for w in wk]
            setup_s = time.monotonic() - t
            up = sum(c["ok"] for c in conn)
            setup = [x for c in conn for x in c["setup_ms"]]
            errors: dict[str, int] = {}
            for c in conn:
                for k, v in c["errors"].items():
                    errors[k] = errors.get(k, 0) + v
            log(f"  n={n}: {up}/{n} sessions up in {setup_s:.1f}s"
                + (f" (failed: {errors})" if errors else ""))
            time.sleep(1.0)     # let set-up garbage settle before reading RSS
            rss1 = {k: sum(rss_kib(p) for p in v) for k, v in pids.items()}
            meter = CpuMeter(pids)
            meter.start()
            paced = merge_exchange(broadcast(wk, f"exchange {paced_s} 0 256 1 0.2", paced_s + 60))
            paced["cpu_pct"] = meter.stop()
            log(f"  n={n}: paced  {paced['received']} echoes ({paced['echoes_per_s']}/s of {n * 5} asked), rtt p50 {paced['rtt'].get('p50_ms')} ms "
                f"p99 {paced['rtt'].get('p99_ms')} ms, gateway cpu {paced['cpu_pct']['gateway']}%")
            meter.start()
            bulk = merge_exchange(broadcast(wk, f"exchange {bulk_s} 0 16384 4 0", bulk_s + 60))
            bulk["cpu_pct"] = meter.stop()
            # each echoed byte crossed the gateway twice (client->host and back)
            bulk["relayed_mbit_s"] = round(2 * bulk["bytes"] * 8 / bulk["elapsed_s"] / 1e6, 1)
            log(f"  n={n}: bulk   {bulk['relayed_mbit_s']} Mbit/s relayed, rtt p99 {bulk['rtt'].get('p99_ms')} ms, "
                f"gateway cpu {bulk['cpu_pct']['gateway']}%")
            rss2 = {k: sum(rss_kib(p) for p in v) for k, v in pids.items()}
            broadcast(wk, "quit", 60)
            per_session = {k: round((rss1[k] - rss0[k]) / max(1, up), 1) for k in pids}
            return {"n": n, "sessions_up": up, "setup_failed": errors, "setup_wall_s": round(setup_s, 2),
                    "setup_ms": rtt_summary(setup), "rss_kib_before": rss0, "rss_kib_sessions_up": rss1,
                    "rss_kib_after_load": rss2, "rss_kib_per_session": per_session,
                    "processes": {k: len(v) for k, v in pids.items()}, "paced": paced, "bulk": bulk}
        finally:
            for p in reversed(procs):
                p.stop()


def run(suite: str = "quick", plot: bool = True) -> dict:
    sizes, paced_s, bulk_s = ([50, 100], 4.0, 4.0) if suite == "quick" else ([100, 500, 1000], 8.0, 8.0)
    old, new = raise_nofile()
    print(f"RLIMIT_NOFILE soft {old} -> {new} (children inherit it)", flush=True)
    rows, results = [], []
    for n in sizes:
        print(f"scale: {n} sessions ...", flush=True)
        r = measure_n(n, hosts=2, workers=2, paced_s=paced_s, bulk_s=bulk_s, log=lambda s: print(s, flush=True))
        results.append(r)
        integrity = sum(r[ph][k] for ph in ("paced", "bulk") for k in ("lost", "dup", "reordered", "corrupt"))
        rows.append({"sessions": f"{r['sessions_up']}/{n}",
                     "gw KiB/sess": r["rss_kib_per_session"]["gateway"],
                     "host KiB/sess": r["rss_kib_per_session"]["hosts"],
                     "client KiB/sess": r["rss_kib_per_session"]["clients"],
                     "paced p50/p99 ms": f"{r['paced']['rtt'].get('p50_ms')}/{r['paced']['rtt'].get('p99_ms')}",
                     "paced gw cpu%": r["paced"]["cpu_pct"]["gateway"],
                     "bulk Mbit/s": r["bulk"]["relayed_mbit_s"],
                     "bulk p99 ms": r["bulk"]["rtt"].get("p99_ms"),
                     "bulk gw cpu%": r["bulk"]["cpu_pct"]["gateway"],
                     "lost+dup+reord+corrupt": integrity})
    print(table(rows, list(rows[0])))
    data = {"suite": suite, "rlimit_nofile": {"soft_before": old, "soft_now": new},
            "phases": {"paced": {"seconds": paced_s, "size": 256, "interval_s": 0.2, "depth": 1},
                       "bulk": {"seconds": bulk_s, "size": 16384, "depth": 4}},
            "layout": "1 gateway, 2 host processes, 2 client worker processes; loopback; relay only",
            "results": results}
    path = save(f"scale_{suite}", data)
    if plot:
        _plot(results, path.replace(".json", ".png"))
    print(f"saved {path}")
    return data


def _plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = [r["n"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    a, b, c = axes
    for k in ("gateway", "hosts", "clients"):
        a.plot(ns, [r["rss_kib_per_session"][k] for r in results], marker="o", label=k)
    a.set_xlabel("sessions")
    a.set_ylabel("RSS per session (KiB)")
    a.set_title("Memory per session")
    a.legend()
    b.plot(ns, [r["paced"]["rtt"].get("p99_ms") for r in results], marker="o", label="paced p99")
    b.plot(ns, [r["paced"]["rtt"].get("p50_ms") for r in results], marker="o", label="paced p50")
    b.plot(ns, [r["bulk"]["rtt"].get("p99_ms") for r in results], marker="o", label="bulk p99")
    b.set_xlabel("sessions")
    b.set_ylabel("echo RTT (ms)")
    b.set_yscale("log")
    b.set_title("Echo latency under load")
    b.legend()
    c.plot(ns, [r["bulk"]["relayed_mbit_s"] for r in results], marker="o", color="tab:green", label="Mbit/s")
    c.set_xlabel("sessions")
    c.set_ylabel("relayed Mbit/s (bulk)")
    c2 = c.twinx()
    c2.plot(ns, [r["bulk"]["cpu_pct"]["gateway"] for r in results], marker="s", color="tab:red", label="gw cpu %")
    c2.plot(ns, [r["paced"]["cpu_pct"]["gateway"] for r in results], marker="^", color="tab:orange",
            label="gw cpu % (paced)")
    c2.set_ylabel("gateway CPU (% of a core)")
    c.set_title("Throughput and gateway CPU")
    c2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="client worker (JSON lines on stdin/stdout)")
    w.add_argument("--gateway", required=True)
    w.add_argument("--token-file", required=True)
    w.add_argument("--ca", required=True)
    r = sub.add_parser("run")
    r.add_argument("--suite", choices=["quick", "full"], default="quick")
    r.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "worker":
        with open(args.token_file) as f:
            token = f.read().strip()
        asyncio.run(_worker(args.gateway, token, args.ca))
        return 0
    run(args.suite, plot=not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
