"""Fairness at a shared bottleneck: a shortpath UDP-path bulk flow against a TCP CUBIC flow
(issue #13, "Fairness").

    python -m benchmarks run --suite quick --only fairness      # ~2.5 min
    python -m benchmarks.fairness --suite full [--queues shallow deep] [--no-plot]

The lab (port-restricted NAT at both sites, a private link) runs the real gateway, coturn and
``shortpath host`` (netns_lab.scenario.start_stack). Both flows go client -> host over the
private link and meet one bottleneck: a tbf qdisc of 10 Mbit/s on the client router's private
link interface (``Lab.impair("private", "up", rate_kbit=...)``), with a shallow queue (15 ms
worth of bytes) or a deep one (200 ms). The client LAN link adds 20 ms each way (40 ms RTT).

* UDP flow: the shortpath session as benchmarks/lab_peer.py runs it for lab_paths' udp-managed
  path (client policy managed only, host UDP 3390 over the private link), its ``bulk``
  operation (60 KB reliable messages for N seconds).
* TCP flow: one TCP connection, client -> host, sending as fast as the socket takes data, its
  congestion control set to CUBIC on the socket (TCP_CONGESTION, checked with getsockopt).
  Why on the socket: the machine's default is BBR and ``net.ipv4.tcp_allowed_congestion_control``
  is a global sysctl (read-only inside a namespace), so a namespace cannot make CUBIC its
  default (``sysctl net.ipv4.tcp_congestion_control=cubic`` there fails with EPERM) without
  changing the whole machine; a process with CAP_NET_ADMIN in the namespace may still pick
  any loaded algorithm for its own socket. The benchmark tries the namespace sysctl first and
  records what happened.
* Probe flow: 64-byte UDP pings every 50 ms through the same bottleneck; queue delay = its RTT
  under load minus its RTT on the idle link.

Phases per queue: idle probe; UDP alone; TCP alone; both together. Throughput of each flow is
counted at the bottleneck's exit (nft counters on the host router's private-link input, IP bytes,
sampled every 0.25 s) so both flows are measured the same way; the TCP receiver's payload bytes
and lab_peer's own goodput are kept beside. The "together" figures cover the window where both
flows run, after a warm-up. Target: each flow gets between 1/3 and 3x of the other's throughput.

Writes benchmarks/results/fairness_{suite}.json and .png (throughput and probe RTT over time
per queue). The machine is small and shared: figures of one run compare with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .common import RESULTS, lab_skip_reason, percentile, save, table

BOTTLENECK_KBIT = 10_000
QUEUES_MS = {"shallow": 15, "deep": 200}
ONE_WAY_MS = 20
TCP_PORT, PROBE_PORT = 9201, 9202
MANAGED_PORT = 3390
PROBE_INTERVAL = 0.05
SAMPLE_INTERVAL = 0.25
#: Target: each flow's throughput between 1/3 and 3x of the other's.
RATIO_BOUNDS = (1 / 3, 3.0)

SUITES = {
    "quick": {"queues": ["shallow", "deep"], "idle_s": 3.0, "alone_s": 6.0, "together_s": 20.0, "warmup_s": 4.0},
    "full": {"queues": ["shallow", "deep"], "idle_s": 5.0, "alone_s": 12.0, "together_s": 45.0, "warmup_s": 8.0},
}


# ---------------------------------------------------------------- helpers (run in namespaces)
async def _sink(bind: str, out_dir: str) -> None:
    """TCP sink (cumulative bytes every 0.1 s per connection, written at its end) and UDP echo."""
    loop = asyncio.get_running_loop()
    count = [0]

    async def on_conn(reader, writer) -> None:
        count[0] += 1
        n, total, series = count[0], 0, []
        t0 = time.monotonic()
        series.append((t0, 0))
        next_at = t0 + 0.1
        while True:
            data = await reader.read(262144)
            if not data:
                break
            total += len(data)
            now = time.monotonic()
            if now >= next_at:
                series.append((now, total))
                next_at = now + 0.1
        series.append((time.monotonic(), total))
        path = Path(out_dir) / f"tcp-{n}.json"
        path.write_text(json.dumps({"bytes": total, "series": series}))
        print(f"TCPDONE {path}", flush=True)
        writer.close()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.t = transport

        def datagram_received(self, data, addr):
            self.t.sendto(data, addr)

    await asyncio.start_server(on_conn, bind, TCP_PORT)
    await loop.create_datagram_endpoint(Echo, local_addr=(bind, PROBE_PORT))
    print("READY", flush=True)
    await asyncio.Event().wait()


def _tcp_send(to: str, seconds: float, cc: str) -> int:
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    got = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    if got != cc:
        print(f"ERROR congestion control is {got}, not {cc}", flush=True)
        return 2
    s.connect((to, TCP_PORT))
    got = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    print(f"CC {got}", flush=True)
    buf = bytes(65536)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        sent += s.send(buf)
    end = time.monotonic()
    s.shutdown(socket.SHUT_WR)
    s.recv(1)                  # the sink closes once it has read everything
    s.close()
    print("RESULT " + json.dumps({"cc": got, "sent_bytes": sent, "start": start, "end": end}), flush=True)
    return 0


async def _probe(to: str, seconds: float, out: str) -> None:
    """UDP pings every PROBE_INTERVAL; records (sent at, RTT ms or None)."""
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}
    rtts: dict[int, float] = {}

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            seq = int.from_bytes(data[:4], "big")
            if seq in sent and seq not in rtts:
                rtts[seq] = (time.monotonic() - sent[seq]) * 1000

    transport, _ = await loop.create_datagram_endpoint(P, remote_addr=(to, PROBE_PORT))
    print("READY", flush=True)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        sent[i] = time.monotonic()
        transport.sendto(i.to_bytes(4, "big") + bytes(60))
        i += 1
        await asyncio.sleep(max(0.0, start + i * PROBE_INTERVAL - time.monotonic()))
    await asyncio.sleep(1.0)       # late answers (deep queue)
    Path(out).write_text(json.dumps([(sent[k], rtts.get(k)) for k in sorted(sent)]))
    print(f"RESULT {out}", flush=True)


# ---------------------------------------------------------------- pure analysis
def at(series: list, t: float) -> float:
    """Cumulative value of a (time, cumulative) series at ``t`` (linear between samples)."""
    if not series or t <= series[0][0]:
        return series[0][1] if series else 0.0
    for (t0, v0), (t1, v1) in zip(series, series[1:]):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return series[-1][1]


def mbit_s(series: list, t0: float, t1: float) -> float | None:
    if t1 <= t0:
        return None
    return (at(series, t1) - at(series, t0)) * 8 / (t1 - t0) / 1e6


def rates(series: list, t0: float, t1: float, step: float = 0.5) -> list[tuple[float, float]]:
    """Throughput (Mbit/s) per ``step`` between t0 and t1, as (bin middle - t0, Mbit/s)."""
    out, t = [], t0
    while t + step <= t1 + 1e-9:
        out.append((round(t + step / 2 - t0, 3), round(mbit_s(series, t, t + step), 3)))
        t += step
    return out


def rtt_stats(probes: list, t0: float, t1: float) -> dict:
    """Probe RTTs of pings sent in [t0, t1]: p50/p95/p99 and the share lost."""
    sel = [r for t, r in probes if t0 <= t <= t1]
    got = [r for r in sel if r is not None]
    return {"n": len(sel), "lost": round(1 - len(got) / len(sel), 4) if sel else None,
            "p50_ms": round(percentile(got, 50), 2) if got else None,
            "p95_ms": round(percentile(got, 95), 2) if got else None,
            "p99_ms": round(percentile(got, 99), 2) if got else None}


def judge(udp: float | None, tcp: float | None) -> dict:
    """UDP/TCP throughput ratio and whether each is within RATIO_BOUNDS of the other."""
    if not udp or not tcp:
        return {"ratio_udp_tcp": None, "met": False if (udp is not None and tcp is not None) else None}
    r = udp / tcp
    return {"ratio_udp_tcp": round(r, 3), "met": RATIO_BOUNDS[0] <= r <= RATIO_BOUNDS[1]}


# ---------------------------------------------------------------- running
class _Counters:
    """nft counters on the host router for packets leaving the bottleneck, sampled in a thread."""

    NAMES = ("udpflow", "tcpflow", "probe")

    def __init__(self, lab) -> None:
        self.node = lab.host_router
        self.node.nft(f"""table inet spfair {{
    counter udpflow {{ }}
    counter tcpflow {{ }}
    counter probe {{ }}
    chain spcount {{
        type filter hook forward priority filter - 30; policy accept;
        iifname "pl" udp dport {MANAGED_PORT} counter name "udpflow"
        iifname "pl" tcp dport {TCP_PORT} counter name "tcpflow"
        iifname "pl" udp dport {PROBE_PORT} counter name "probe"
    }}
}}
""")
        self.series: dict[str, list] = {k: [] for k in self.NAMES}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self) -> dict[str, int]:
        r = self.node.run(["nft", "-j", "list", "counters", "table", "inet", "spfair"])
        out = {}
        for item in json.loads(r.stdout)["nftables"]:
            c = item.get("counter")
            if c:
                out[c["name"]] = c["bytes"]
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                vals = self.read()
            except Exception:  # noqa: BLE001 -- a missed sample is a gap, not a failure
                vals = {}
            t = (t + time.monotonic()) / 2
            for k, v in vals.items():
                self.series[k].append((t, v))
            self._stop.wait(SAMPLE_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _set_cubic_default(lab) -> dict:
    """Try to make CUBIC the client namespace's default; say what the kernel allowed."""
    node = lab.client
    allowed = node.read_sysctl("net.ipv4.tcp_allowed_congestion_control")
    res = {"allowed": allowed, "default_before": node.read_sysctl("net.ipv4.tcp_congestion_control")}
    r = node.run(["sysctl", "-w", "net.ipv4.tcp_congestion_control=cubic"], check=False)
    res["sysctl_error"] = (r.stderr or "").strip() or None
    res["default_after"] = node.read_sysctl("net.ipv4.tcp_congestion_control")
    res["namespace_default_is_cubic"] = res["default_after"] == "cubic"
    return res


def measure(queues=("shallow", "deep"), *, idle_s=3.0, alone_s=6.0, together_s=20.0, warmup_s=4.0,
            progress=print) -> dict:
    from netns_lab import Lab
    from netns_lab.scenario import start_stack
    from .lab_paths import SPEC, _client_argv, _op

    t_start = time.monotonic()

    def say(msg: str) -> None:
        if progress:
            progress(f"  [{time.monotonic() - t_start:6.1f}s] {msg}")

    out: dict = {"bottleneck_kbit": BOTTLENECK_KBIT, "one_way_ms": ONE_WAY_MS, "queues": {}}
    with Lab(client_nat="port-restricted", host_nat="port-restricted", private_link=True) as lab:
        stack = start_stack(lab, host_app="benchmarks.bench_app:host_handler")
        work = Path(lab.workdir) / "fair"
        work.mkdir()
        host_ip = lab.addr("host")
        lab.spawn("host", [sys.executable, "-m", "benchmarks.fairness", "sink", "--bind", host_ip,
                           "--out-dir", str(work)], ready=r"^READY", ready_timeout=20)
        out["cubic"] = _set_cubic_default(lab)
        counters = _Counters(lab)
        assert SPEC["udp-managed"]["modes"] == "managed"
        udp = lab.spawn("client", _client_argv("udp-managed", lab, stack, work, work / "unused.crt"),
                        stdin=True, ready=r"^READY ", ready_timeout=60)
        ready = json.loads(udp.wait_for_line(r"^READY ", 1).split(" ", 1)[1])
        out["udp_ready"] = ready
        say(f"lab {lab.run_id}: stack, sink and UDP client up (on {ready['transport']}); "
            f"cubic: {out['cubic']}")

        def probe(seconds: float) -> Path:
            f = work / f"probe-{time.monotonic_ns()}.json"
            p = lab.spawn("client", [sys.executable, "-m", "benchmarks.fairness", "probe", "--to", host_ip,
                                     "--seconds", str(seconds), "--out", str(f)], ready=r"^READY", ready_timeout=20)
            return p, f

        allprobes: list = []

        def probe_result(p, f) -> list:
            p.wait_for_line(r"^RESULT ", 60)
            lab.stop(p)                 # exited on its own: forget it (no "exited before down" note)
            got = json.loads(f.read_text())
            allprobes.extend(got)
            return got

        def tcp(seconds: float):
            return lab.spawn("client", [sys.executable, "-m", "benchmarks.fairness", "tcp-send", "--to", host_ip,
                                        "--seconds", str(seconds), "--cc", "cubic"], ready=r"^CC ", ready_timeout=20)

        def tcp_result(p) -> dict:
            res = json.loads(p.wait_for_line(r"^RESULT ", 120).split(" ", 1)[1])
            lab.stop(p)
            return res

        sink_files = iter(range(1, 100))

        def tcp_series() -> dict:
            f = work / f"tcp-{next(sink_files)}.json"
            deadline = time.monotonic() + 30
            while not f.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            return json.loads(f.read_text())

        try:
            for q in queues:
                qms = QUEUES_MS[q]
                lab.impair("client-lan", "both", delay_ms=ONE_WAY_MS)
                lab.impair("private", "up", rate_kbit=BOTTLENECK_KBIT, rate_queue_ms=qms)
                time.sleep(0.5)
                res = out["queues"][q] = {"queue_ms": qms, "phases": {}}
                allprobes.clear()
                # idle
                p, f = probe(idle_s)
                t0 = time.monotonic()
                probes = probe_result(p, f)
                res["idle"] = rtt_stats(probes, 0, float("inf"))
                say(f"{q} ({qms} ms queue): idle probe RTT p50 {res['idle']['p50_ms']} ms")
                # UDP alone
                p, f = probe(alone_s + 2)
                t0 = time.monotonic()
                b = _op(udp, {"op": "bulk", "seconds": alone_s, "datagram": False}, alone_s + 120)
                t1 = time.monotonic()
                probes = probe_result(p, f)
                w0, w1 = t0 + 1.0, t1 - 0.5
                res["phases"]["udp_alone"] = {
                    "window": [w0, w1], "udp_goodput_mbit_s": round(b.get("mbit_s", 0), 3) if b.get("ok") else None,
                    "udp_transport": b.get("transports_seen"), "udp_error": b.get("error"),
                    "udp_wire_mbit_s": _r(mbit_s(counters.series["udpflow"], w0, w1)),
                    "probe": rtt_stats(probes, w0, w1)}
                say(f"{q}: UDP alone {res['phases']['udp_alone']['udp_wire_mbit_s']} Mbit/s on the wire, "
                    f"probe p50 {res['phases']['udp_alone']['probe']['p50_ms']} ms")
                # TCP alone
                p, f = probe(alone_s + 1)
                tp = tcp(alone_s)
                tr = tcp_result(tp)
                probes = probe_result(p, f)
                ts = tcp_series()
                w0, w1 = tr["start"] + 1.0, tr["end"]
                res["phases"]["tcp_alone"] = {
                    "window": [w0, w1], "tcp_cc": tr["cc"],
                    "tcp_goodput_mbit_s": _r(mbit_s(ts["series"], w0, w1)),
                    "tcp_wire_mbit_s": _r(mbit_s(counters.series["tcpflow"], w0, w1)),
                    "probe": rtt_stats(probes, w0, w1)}
                say(f"{q}: TCP ({tr['cc']}) alone {res['phases']['tcp_alone']['tcp_wire_mbit_s']} Mbit/s, "
                    f"probe p50 {res['phases']['tcp_alone']['probe']['p50_ms']} ms")
                # together: TCP starts first, the UDP bulk right after; both stop together
                p, f = probe(together_s + 3)
                tp = tcp(together_s + 1.0)
                t0 = time.monotonic()
                b = _op(udp, {"op": "bulk", "seconds": together_s, "datagram": False}, together_s + 120)
                t1 = time.monotonic()
                tr = tcp_result(tp)
                probes = probe_result(p, f)
                ts = tcp_series()
                w0 = max(t0, tr["start"]) + warmup_s
                w1 = min(t1 - 0.5, tr["end"])
                u = mbit_s(counters.series["udpflow"], w0, w1)
                tw = mbit_s(counters.series["tcpflow"], w0, w1)
                ph = res["phases"]["together"] = {
                    "window": [w0, w1], "window_s": round(w1 - w0, 2), "tcp_cc": tr["cc"],
                    "udp_wire_mbit_s": _r(u), "tcp_wire_mbit_s": _r(tw),
                    "tcp_goodput_mbit_s": _r(mbit_s(ts["series"], w0, w1)),
                    "udp_goodput_mbit_s": round(b["mbit_s"], 3) if b.get("ok") else None,
                    "udp_transport": b.get("transports_seen"), "udp_error": b.get("error"),
                    "udp_history": b.get("history"),
                    "probe": rtt_stats(probes, w0, w1), **judge(u, tw)}
                idle = res["idle"]["p50_ms"]
                for name in ("udp_alone", "tcp_alone", "together"):
                    pr = res["phases"][name]["probe"]
                    pr["queue_delay_p50_ms"] = _r(pr["p50_ms"] - idle if pr["p50_ms"] is not None and idle else None)
                    pr["queue_delay_p95_ms"] = _r(pr["p95_ms"] - idle if pr["p95_ms"] is not None and idle else None)
                # time series for the plot (seconds since the first phase)
                base = res["phases"]["udp_alone"]["window"][0] - 1.0
                res["series"] = {
                    "t0": base,
                    "udp": rates(counters.series["udpflow"], base, time.monotonic()),
                    "tcp": rates(counters.series["tcpflow"], base, time.monotonic()),
                    "probe": [(round(t - base, 3), r) for t, r in allprobes],
                    "phases": {k: [round(v["window"][0] - base, 2), round(v["window"][1] - base, 2)]
                               for k, v in res["phases"].items()}}
                say(f"{q}: together UDP {ph['udp_wire_mbit_s']} / TCP {ph['tcp_wire_mbit_s']} Mbit/s "
                    f"(ratio {ph['ratio_udp_tcp']}, {'MET' if ph['met'] else 'MISSED'}), queue delay p50 "
                    f"{ph['probe']['queue_delay_p50_ms']} ms")
        finally:
            counters.stop()
            lab.impair("private", "up")
            lab.impair("client-lan", "both")
    return out


def _r(x, nd=3):
    return None if x is None else round(x, nd)


# ---------------------------------------------------------------- output
def rows(raw: dict) -> list[dict]:
    out = []
    for q, res in raw["queues"].items():
        for name, ph in res["phases"].items():
            out.append({"queue": f"{q} ({res['queue_ms']} ms)", "phase": name,
                        "udp_wire": ph.get("udp_wire_mbit_s"), "tcp_wire": ph.get("tcp_wire_mbit_s"),
                        "udp_goodput": ph.get("udp_goodput_mbit_s"), "tcp_goodput": ph.get("tcp_goodput_mbit_s"),
                        "ratio": ph.get("ratio_udp_tcp"), "idle_rtt_p50": res["idle"]["p50_ms"],
                        "rtt_p50": ph["probe"]["p50_ms"], "rtt_p95": ph["probe"]["p95_ms"],
                        "qdelay_p50": ph["probe"].get("queue_delay_p50_ms"),
                        "qdelay_p95": ph["probe"].get("queue_delay_p95_ms"),
                        "probe_lost": ph["probe"]["lost"]})
    return out


def targets(raw: dict) -> list[dict]:
    out = []
    for q, res in raw["queues"].items():
        ph = res["phases"].get("together", {})
        note = None
        seen = set(ph.get("udp_transport") or ())
        if seen and seen != {"udp-managed"}:
            note = f"the UDP flow's session was on {'+'.join(sorted(seen))}"
        t = {"target": f"{q} queue ({res['queue_ms']} ms): UDP and TCP CUBIC each within 1/3..3x of the other",
             "value": ph.get("ratio_udp_tcp"), "udp_mbit_s": ph.get("udp_wire_mbit_s"),
             "tcp_mbit_s": ph.get("tcp_wire_mbit_s"),
             "queue_delay_p50_ms": ph.get("probe", {}).get("queue_delay_p50_ms"), "met": ph.get("met")}
        if note:
            t["note"], t["met"] = note, False
        out.append(t)
    return out


def print_summary(data: dict) -> None:
    print(table(data["rows"], ["queue", "phase", "udp_wire", "tcp_wire", "udp_goodput", "tcp_goodput", "ratio",
                               "idle_rtt_p50", "rtt_p50", "rtt_p95", "qdelay_p50", "qdelay_p95", "probe_lost"]))
    print("(Mbit/s: wire = IP bytes leaving the bottleneck; goodput = payload the receiver counted. ms: probe RTT)")
    for t in data["targets"]:
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
        print(f"{mark} {t['target']}: ratio UDP/TCP {t['value']} (UDP {t['udp_mbit_s']}, TCP {t['tcp_mbit_s']} "
              f"Mbit/s; queue delay p50 {t['queue_delay_p50_ms']} ms)" + (f" note: {t['note']}" if t.get("note") else ""))


def plot(raw: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    qs = list(raw["queues"])
    fig, axes = plt.subplots(2, len(qs), figsize=(6.5 * len(qs), 7), squeeze=False, sharex="col")
    for j, q in enumerate(qs):
        res = raw["queues"][q]
        s = res["series"]
        ax = axes[0][j]
        for name, color in (("udp", "#2ca02c"), ("tcp", "#d62728")):
            xs = [x for x, _ in s[name]]
            ax.plot(xs, [y for _, y in s[name]], color=color, lw=1.2,
                    label="shortpath UDP (udp-managed)" if name == "udp" else "TCP CUBIC")
        for ph, (a, b) in s["phases"].items():
            ax.axvspan(a, b, color="#999999", alpha=0.12)
            ax.text((a + b) / 2, raw["bottleneck_kbit"] / 1000 * 1.15, ph.replace("_", " "), ha="center", fontsize=7)
        ax.axhline(raw["bottleneck_kbit"] / 1000, color="black", lw=0.7, ls=":")
        ax.set_ylim(0, raw["bottleneck_kbit"] / 1000 * 1.25)
        ax.set_ylabel("Mbit/s leaving the bottleneck (0.5 s bins)")
        tog = res["phases"]["together"]
        ax.set_title(f"{q} queue ({res['queue_ms']} ms at 10 Mbit/s), 40 ms RTT: together UDP/TCP = "
                     f"{tog.get('ratio_udp_tcp')}", fontsize=9)
        ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
        ax.grid(alpha=0.3)
        ax = axes[1][j]
        pts = [(x, r) for x, r in s["probe"] if r is not None]
        ax.plot([x for x, _ in pts], [r for _, r in pts], ".", ms=2, color="#1f77b4", label="probe RTT")
        ax.axhline(res["idle"]["p50_ms"], color="black", lw=0.7, ls=":", label="idle p50")
        for ph, (a, b) in s["phases"].items():
            ax.axvspan(a, b, color="#999999", alpha=0.12)
        ax.set_ylabel("probe RTT (ms), 64 B UDP every 50 ms")
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("fairness at a 10 Mbit/s tbf bottleneck (shaded: measurement windows)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(suite: str = "quick", plot: bool = True, queues=None) -> dict | None:
    reason = lab_skip_reason()
    if reason:
        print(f"fairness: skipped: {reason}", flush=True)
        return None
    cfg = dict(SUITES[suite])
    qs = list(queues or cfg.pop("queues"))
    cfg.pop("queues", None)
    print(f"fairness ({suite}): queues {', '.join(qs)}; {cfg}", flush=True)
    raw = measure(qs, progress=lambda m: print(m, flush=True), **cfg)
    data = {"suite": suite, "config": cfg, "raw": raw, "rows": rows(raw), "targets": targets(raw)}
    print_summary(data)
    jpath = save(f"fairness_{suite}", data)
    print(f"results: {jpath}")
    if plot:
        png = os.path.join(RESULTS, f"fairness_{suite}.png")
        globals()["plot"](raw, png)
        print(f"plot: {png}")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fairness")
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("sink")
    s.add_argument("--bind", required=True)
    s.add_argument("--out-dir", required=True)
    t = sub.add_parser("tcp-send")
    t.add_argument("--to", required=True)
    t.add_argument("--seconds", type=float, required=True)
    t.add_argument("--cc", default="cubic")
    pr = sub.add_parser("probe")
    pr.add_argument("--to", required=True)
    pr.add_argument("--seconds", type=float, required=True)
    pr.add_argument("--out", required=True)
    p.add_argument("--suite", choices=sorted(SUITES), default="quick")
    p.add_argument("--queues", nargs="*", choices=sorted(QUEUES_MS), default=None)
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "sink":
        asyncio.run(_sink(a.bind, a.out_dir))
        return 0
    if a.cmd == "tcp-send":
        return _tcp_send(a.to, a.seconds, a.cc)
    if a.cmd == "probe":
        asyncio.run(_probe(a.to, a.seconds, a.out))
        return 0
    run(a.suite, plot=not a.no_plot, queues=a.queues)
    return 0


if __name__ == "__main__":
    sys.exit(main())
