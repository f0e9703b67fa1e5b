"""The TCP relay against direct TLS, interleaved over several rounds in one run.

``python -m benchmarks.relay_ab [--rounds N] [--mib M]``

A gateway+host stack and a plain TLS echo server run at once; each round
measures both back to back, in a rotating order. (This benchmark used to
compare relay implementations, before / after, selected by environment
variables; those older implementations are gone from the code. The figures
of the run that decided it, 2026-11-21, are in docs/relay.md.)
CPU seconds of every process involved are recorded too (ms per MiB moved), a
figure much less sensitive to a shared machine than wall-clock throughput. Each
round measures direct TLS and every variant back to back, in a rotating order,
so drift on a shared machine hits both; figures are medians over rounds and
ratios to the direct TLS run of the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from shortpath.auth.tokens import TokenSigner
from shortpath.config import DEFAULT_GATEWAY_ID

from .common import Proc, py, save, table
from .relay import _relay_measure, _tls_measure
from .scale import cpu_seconds

#: relay stacks measured against direct TLS (name -> extra environment of gateway / peers)
VARIANTS = {
    "relay": {"gateway": {}, "peers": {}},
}


def _stack(state: str, env: dict) -> tuple[list[Proc], str, str, str]:
    gw = Proc(py("-m", "shortpath", "gateway", "--listen", "127.0.0.1:0", "--state", state), env=env["gateway"])
    addr = f"127.0.0.1:{gw.ready['port']}"
    signer = TokenSigner.load_or_create(os.path.join(state, "signing.key"))
    host_tok = signer.mint("host", "ab-host", DEFAULT_GATEWAY_ID, 3600, time.time(), pool="desktop")
    user_tok = signer.mint("user", "ab", DEFAULT_GATEWAY_ID, 3600, time.time(), resources=["desktop"])
    host = Proc(py("-m", "shortpath", "host", "--gateway", addr, "--host-id", "ab-host", "--ca", gw.ready["cert"],
                   "--state", os.path.join(state, "host")),
                env={"SHORTPATH_TOKEN": host_tok, **env["peers"]})
    return [gw, host], addr, user_tok, gw.ready["cert"]


def run(rounds: int = 4, mib: int = 64, n_echo: int = 300) -> dict:
    bulk = mib * 2**20
    load_before = os.getloadavg()
    procs: list[Proc] = []
    samples: dict[str, list[dict]] = {"direct-tls": [], **{v: [] for v in VARIANTS}}
    with tempfile.TemporaryDirectory(prefix="sp-relay-ab-") as tmp:
        try:
            stacks, stack_procs = {}, {}
            for name, env in VARIANTS.items():
                ps, addr, tok, ca = _stack(os.path.join(tmp, name), env)
                procs += ps
                stacks[name] = (addr, tok, ca)
                stack_procs[name] = ps
            tls = Proc(py("-m", "benchmarks.tls_echo"))
            procs.append(tls)
            order = ["direct-tls", *VARIANTS]
            for r in range(rounds):
                k = r % len(order)
                for name in order[k:] + order[:k]:
                    # CPU seconds of every process involved (this one is the client), so the
                    # cost per byte can be compared even when the machine is shared
                    others = [tls.popen.pid] if name == "direct-tls" else [p.popen.pid for p in stack_procs[name]]
                    p0 = [time.process_time()] + [cpu_seconds(p) for p in others]
                    c0 = sum(p0)
                    if name == "direct-tls":
                        res = asyncio.run(_tls_measure(tls.ready["port"], n_echo, bulk))
                    else:
                        addr, tok, ca = stacks[name]
                        res = asyncio.run(_relay_measure(addr, tok, ca, n_echo, bulk))
                    p1 = [time.process_time()] + [cpu_seconds(p) for p in others]
                    cpu = sum(p1) - c0
                    res["cpu_ms_per_mib"] = 1000 * cpu / mib
                    # per process: client (this one), then gateway and host, or the TLS server
                    res["cpu_ms_per_mib_by_process"] = [round(1000 * (b - a) / mib, 2) for a, b in zip(p0, p1)]
                    res["rtt_p50_ms"] = statistics.median(res.pop("rtt")) * 1000
                    samples[name].append(res)
                    print(f"  round {r + 1}/{rounds} {name:<11} {res['mbit_s']:8.1f} Mbit/s  "
                          f"rtt p50 {res['rtt_p50_ms']:.3f} ms  cpu {res['cpu_ms_per_mib']:.2f} ms/MiB "
                          f"{res['cpu_ms_per_mib_by_process']}", flush=True)
        finally:
            for p in procs:
                p.stop()
    out, rows = {}, []
    for name, runs in samples.items():
        ratios = [run_["mbit_s"] / samples["direct-tls"][i]["mbit_s"] for i, run_ in enumerate(runs)]
        out[name] = {"mbit_s": [round(x["mbit_s"], 1) for x in runs],
                     "median_mbit_s": round(statistics.median(x["mbit_s"] for x in runs), 1),
                     "ratio_to_direct_per_round": [round(x, 3) for x in ratios],
                     "median_ratio_to_direct": round(statistics.median(ratios), 3),
                     "median_rtt_p50_ms": round(statistics.median(x["rtt_p50_ms"] for x in runs), 4),
                     "cpu_ms_per_mib": [round(x["cpu_ms_per_mib"], 2) for x in runs],
                     "cpu_ms_per_mib_by_process": [x["cpu_ms_per_mib_by_process"] for x in runs],
                     "median_cpu_ms_per_mib": round(statistics.median(x["cpu_ms_per_mib"] for x in runs), 2)}
        rows.append({"variant": name, "median Mbit/s": out[name]["median_mbit_s"],
                     "ratio to direct (median)": out[name]["median_ratio_to_direct"],
                     "rtt p50 ms": out[name]["median_rtt_p50_ms"],
                     "cpu ms/MiB (all procs)": out[name]["median_cpu_ms_per_mib"]})
    for name in out:
        out[name]["cpu_over_direct"] = round(out[name]["median_cpu_ms_per_mib"]
                                             / out["direct-tls"]["median_cpu_ms_per_mib"], 2)
    print(table(rows, ["variant", "median Mbit/s", "ratio to direct (median)", "rtt p50 ms", "cpu ms/MiB (all procs)"]))
    print("cpu per byte relative to direct TLS: " + ", ".join(f"{n} {out[n]['cpu_over_direct']}" for n in out))
    data = {"loadavg_1_5_15_before": [round(x, 2) for x in load_before],
            "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
            "rounds": rounds, "bulk_bytes": bulk, "n_echo": n_echo, "variants": VARIANTS, "results": out}
    print(f"saved {save('relay_ab', data)}")
    return data


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m benchmarks.relay_ab")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--mib", type=int, default=64)
    a = ap.parse_args()
    run(a.rounds, a.mib)
