"""Load test in the namespace lab: many concurrent sessions through one gateway.

``python -m benchmarks.load [--sessions 500] [--count 200]`` (root; builds its own lab)
or ``python -m benchmarks run --only load --suite full`` (500 sessions; quick: 100).

Topology (``netns_lab.Lab``, port-restricted NAT on both sites): the gateway runs in
the core on its service address (TLS 443), two host processes in the host site dial
out through the host NAT, two client worker processes (``benchmarks.scale`` worker)
in the client site dial out through the client NAT. Every session stays on the
tcp-relay (the pool's Shortpath policy is off), so all of its bytes cross the one
gateway process.

All sessions are brought up first and held open together; then every session
exchanges ``count`` numbered, checksummed messages (``shortpath.app.desktop.numbered``)
with up to ``depth`` in flight, echoed by the host. The receiver checks each echo's
checksum and index: lost (never came back), duplicated, reordered (not the next
index) and corrupt are counted; every one must be 0 and every session must finish
all of its messages. CPU (% of one core, from /proc/<pid>/stat) and RSS of the
gateway, host and client processes are recorded per phase. The gateway's own
counters (admin socket) confirm how many sessions it stitched and that all ended.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from .common import lab_skip_reason, save, table
from .scale import CpuMeter, gateway_toml, merge_exchange, raise_nofile, rss_kib, worker_argv


class _LabChild:
    """A lab process (``netns_lab.netns.Proc``) speaking the worker's JSON lines."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._mark = 0

    def send(self, cmd: str) -> None:
        self._mark = self.proc.mark()
        self.proc.send_line(cmd)

    def recv(self, timeout: float) -> dict:
        line = self.proc.wait_for_line(lambda s: s.startswith("{"), timeout, since=self._mark)
        self._mark = self.proc.mark()
        return json.loads(line)


def _admin(state_dir: str, cmd: str) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(os.path.join(state_dir, "admin.sock"))
        s.sendall((json.dumps({"cmd": cmd}) + "\n").encode())
        return json.loads(s.makefile().readline())


def run_load(sessions: int = 500, count: int = 200, size: int = 256, depth: int = 4, hosts: int = 2,
             workers: int = 2, log=print) -> dict:
    """Build a lab, run the load, tear everything down; returns the figures (no assertions)."""
    from netns_lab import plan
    from netns_lab.lab import Lab
    from shortpath.auth.tokens import TokenSigner
    from shortpath.config import DEFAULT_GATEWAY_ID

    old, new = raise_nofile()
    py = sys.executable
    gw_addr = plan.SERVICES["gateway"]
    t_start = time.monotonic()
    with Lab(client_nat="port-restricted", host_nat="port-restricted") as lab:
        work = lab.workdir / "load"
        state = work / "gateway"
        state.mkdir(parents=True)
        cfg = work / "gateway.toml"
        cfg.write_text(gateway_toml(f"{gw_addr}:443", str(state), sessions))
        gw = lab.spawn("core", [py, "-m", "shortpath", "gateway", "--config", str(cfg)],
                       ready="gateway-ready", ready_timeout=20)
        signer = TokenSigner.load_or_create(str(state / "signing.key"))
        now = time.time()
        (work / "user.tok").write_text(signer.mint("user", "load", DEFAULT_GATEWAY_ID, 3600, now,
                                                   resources=["desktop"]))
        host_procs = []
        for i in range(hosts):
            tok = work / f"h{i}.tok"
            tok.write_text(signer.mint("host", f"h{i}", DEFAULT_GATEWAY_ID, 3600, now, pool="desktop"))
            host_procs.append(lab.spawn("host", [py, "-m", "shortpath", "host", "--gateway", f"{gw_addr}:443",
                                                 "--host-id", f"h{i}", "--token-file", str(tok),
                                                 "--ca", str(state / "gateway.crt"), "--state", str(work / f"h{i}")],
                                        ready="host-registered", ready_timeout=20))
        wk = []
        for i in range(workers):
            p = lab.spawn("client", worker_argv(f"{gw_addr}:443", str(work / "user.tok"), str(state / "gateway.crt")),
                          stdin=True, ready='"boot"', ready_timeout=20)
            wk.append(_LabChild(p))
        pids = {"gateway": [gw.pid], "hosts": [h.pid for h in host_procs], "clients": [w.pid for w in wk]}
        rss0 = {k: sum(rss_kib(p) for p in v) for k, v in pids.items()}
        log(f"load: lab up, {hosts} hosts + {workers} client workers; connecting {sessions} sessions")

        meter = CpuMeter(pids)
        meter.start()
        t = time.monotonic()
        shares = [sessions // workers + (1 if i < sessions % workers else 0) for i in range(workers)]
        for w, k in zip(wk, shares):
            w.send(f"connect {k} 16")
        conn = [w.recv(90 + sessions * 0.3) for w in wk]
        connect_s = time.monotonic() - t
        connect_cpu = meter.stop()
        up = sum(c["ok"] for c in conn)
        errors: dict[str, int] = {}
        for c in conn:
            for k, v in c["errors"].items():
                errors[k] = errors.get(k, 0) + v
        gw_live = len(_admin(str(state), "sessions")["sessions"])
        rss1 = {k: sum(rss_kib(p) for p in v) for k, v in pids.items()}
        log(f"load: {up}/{sessions} sessions up in {connect_s:.1f}s (gateway holds {gw_live})"
            + (f", failed: {errors}" if errors else ""))

        log(f"load: each session exchanges {count} numbered messages of {size} B, {depth} in flight")
        meter.start()
        for w in wk:
            w.send(f"exchange 0 {count} {size} {depth} 0")
        ex = merge_exchange([w.recv(120 + count * sessions / 200) for w in wk])
        ex["cpu_pct"] = meter.stop()
        rss2 = {k: sum(rss_kib(p) for p in v) for k, v in pids.items()}
        log(f"load: {ex['completed_sessions']}/{ex['sessions']} sessions completed; sent {ex['sent']} "
            f"echoed {ex['received']}; lost {ex['lost']} dup {ex['dup']} reordered {ex['reordered']} "
            f"corrupt {ex['corrupt']}; rtt p50 {ex['rtt'].get('p50_ms')} ms p99 {ex['rtt'].get('p99_ms')} ms "
            f"in {ex['elapsed_s']:.1f}s")

        for w in wk:
            w.send("quit")
        closed = sum(w.recv(60)["closed"] for w in wk)
        # the gateway forgets each session once its relay has ended
        end = time.monotonic() + 15
        left = -1
        while time.monotonic() < end:
            left = len(_admin(str(state), "sessions")["sessions"])
            if left == 0:
                break
            time.sleep(0.2)
        counters = _admin(str(state), "stats")["counters"]
    elapsed = time.monotonic() - t_start
    per_session = {k: round((rss1[k] - rss0[k]) / max(1, up), 1) for k in pids}
    return {"sessions": sessions, "count": count, "size": size, "depth": depth, "hosts": hosts, "workers": workers,
            "topology": "client site (port-restricted NAT) -> core gateway:443 <- host site (port-restricted NAT)",
            "rlimit_nofile": {"soft_before": old, "soft_now": new},
            "sessions_up": up, "connect_failed": errors, "connect_wall_s": round(connect_s, 2),
            "gateway_sessions_live_after_connect": gw_live, "connect_cpu_pct": connect_cpu,
            "exchange": ex, "closed": closed, "gateway_sessions_left_after_close": left,
            "gateway_counters": counters, "rss_kib_before": rss0, "rss_kib_sessions_up": rss1,
            "rss_kib_after_exchange": rss2, "rss_kib_per_session": per_session, "total_wall_s": round(elapsed, 1)}


def run(suite: str = "quick", plot: bool = True) -> dict | None:
    reason = lab_skip_reason()
    if reason:
        print(f"load: {reason}; skipped")
        return None
    sessions, count = (100, 50) if suite == "quick" else (500, 200)
    r = run_load(sessions, count)
    ex = r["exchange"]
    rows = [{"sessions": f"{r['sessions_up']}/{sessions}", "completed": ex["completed_sessions"],
             "messages": ex["sent"], "lost": ex["lost"], "dup": ex["dup"], "reordered": ex["reordered"],
             "corrupt": ex["corrupt"], "rtt p99 ms": ex["rtt"].get("p99_ms"),
             "gw cpu%": ex["cpu_pct"]["gateway"], "host cpu%": ex["cpu_pct"]["hosts"],
             "client cpu%": ex["cpu_pct"]["clients"], "gw KiB/sess": r["rss_kib_per_session"]["gateway"]}]
    print(table(rows, list(rows[0])))
    ok = (r["sessions_up"] == sessions and ex["completed_sessions"] == sessions
          and ex["lost"] == ex["dup"] == ex["reordered"] == ex["corrupt"] == 0)
    print(f"load: {'PASS' if ok else 'FAIL'} (zero lost/dup/reordered/corrupt and every session completed)")
    r["pass"] = ok
    path = save(f"load_{suite}", r)
    print(f"saved {path}")
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load")
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--suite", choices=["quick", "full"], default=None,
                   help="run the registered suite instead (saves load_<suite>.json)")
    a = p.parse_args(argv)
    if a.suite:
        r = run(a.suite)
        return 0 if r and r["pass"] else 1
    r = run_load(a.sessions, a.count, a.size, a.depth)
    print(json.dumps({k: v for k, v in r.items() if k != "exchange"}, indent=1))
    ex = r["exchange"]
    return 0 if ex["lost"] == ex["dup"] == ex["reordered"] == ex["corrupt"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
