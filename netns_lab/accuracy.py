"""Measure the impairment emulator: ``python -m netns_lab accuracy [--quick] [--out FILE]``.

Path: client -> crtr -> core.  The impairment sits on ``client-lan`` "up" (the emulator runs in
crtr, the receiving node), and the receiver is in the core, one forwarding hop further.  That
hop matters: the kernel keeps a packet's *arrival* timestamp through NFQUEUE, so a receiver on
the impaired node itself would get SO_TIMESTAMPNS values from before the delay; crossing a veth
into another namespace clears the stamp and the core stamps it on arrival.

Experiments (each reports what ``netns_lab.udpmeter.summarize`` measures):

  baseline        no impairment: the path's own one-way delay
  delay_20ms      delay 20 ms, three runs: error of mean and p99 one-way delay vs 20 ms (raw,
                  and with the baseline mean subtracted), plus the emulator's own release
                  lateness (verdict time - planned release)
  jitter          delay 20 ms, jitter 5 ms (corr 50 ms): mean, sd, reordered packets
  loss_1pct/5pct  random loss: measured rate and a 99.9 % binomial interval for the setting
  gilbert_elliott mean loss 5 %, mean burst 4: measured loss and mean burst length
  rate_sweep      delay 20 ms at increasing packet rates; also without the emulator (to see
                  the sender/receiver limits of this machine).  "sustained" = highest rate with
                  loss <= 0.1 % and p99 one-way delay <= 22 ms.

Results go to ``netns_lab/results/accuracy.json`` (or --out) and are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from .impair import gilbert_elliott
from .netns import LabError
from .lab import Lab

RESULTS = Path(__file__).resolve().parent / "results"
LINK, DIR = "client-lan", "up"


def _binom_interval(p: float, n: int, z: float = 3.29) -> list[float]:
    sd = math.sqrt(p * (1 - p) / n)
    return [max(0.0, p - z * sd), p + z * sd]


def _compact(m: dict) -> dict:
    o = m["owd_ms"]
    return {"sent": m["sent"], "received": m["received"], "loss": round(m["loss"], 5),
            "owd_ms": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in o.items()},
            "reordered": m["reordered"], "loss_bursts": m["loss_bursts"],
            "receiver_socket_drops": m["receiver_socket_drops"],
            "send_rate_achieved": round(m["sender"]["rate_achieved"], 1)}


def run(quick: bool = False) -> dict:
    scale = 0.25 if quick else 1.0
    res: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": platform.release(),
                 "cpus": os.cpu_count(), "python": platform.python_version(),
                 "path": "client -> crtr (emulator, client-lan up) -> core", "quick": quick,
                 "loadavg_at_start": os.getloadavg()}
    with Lab() as lab:
        res["topology_up_s"] = round(lab.timings["up_s"], 3)
        n = lambda x: max(200, int(x * scale))  # noqa: E731

        base = lab.measure_udp("client", "core", rate=1000, count=n(5000))
        res["baseline"] = _compact(base)
        b = base["owd_ms"]["mean"]

        # Three repetitions: on a shared 2-vCPU VM, scheduling noise varies from run to run.
        lab.impair(LINK, DIR, delay_ms=20)
        runs = []
        for _ in range(3):
            m = lab.measure_udp("client", "core", rate=1000, count=n(5000))
            o = m["owd_ms"]
            runs.append({**_compact(m),
                         "mean_error_ms": round(o["mean"] - 20, 4),
                         "p99_error_ms": round(o["p99"] - 20, 4),
                         "mean_error_minus_baseline_ms": round(o["mean"] - 20 - b, 4),
                         "p99_error_minus_baseline_ms": round(o["p99"] - 20 - b, 4)})
        res["delay_20ms"] = {"runs": runs,
                             "mean_error_ms_per_run": [r["mean_error_ms"] for r in runs],
                             "p99_error_ms_per_run": [r["p99_error_ms"] for r in runs],
                             "emulator": lab.emulator_stats(LINK, DIR)}

        lab.impair(LINK, DIR, delay_ms=20, jitter_ms=5, jitter_corr_ms=50)
        m = lab.measure_udp("client", "core", rate=500, count=n(10000))
        res["jitter_5ms"] = {**_compact(m), "setting": {"delay_ms": 20, "jitter_ms": 5,
                                                         "jitter_corr_ms": 50},
                             "mean_error_ms": round(m["owd_ms"]["mean"] - 20, 4)}

        for p in (0.01, 0.05):
            lab.impair(LINK, DIR, loss=p)
            cnt = n(40000)
            m = lab.measure_udp("client", "core", rate=5000, count=cnt)
            res[f"loss_{int(p * 100)}pct"] = {
                **_compact(m), "setting": p,
                "binomial_99.9pct_interval": [round(x, 5) for x in _binom_interval(p, cnt)],
                "within_interval": _binom_interval(p, cnt)[0] <= m["loss"] <= _binom_interval(p, cnt)[1]}

        ge = gilbert_elliott(0.05, 4)
        lab.impair(LINK, DIR, **ge)
        m = lab.measure_udp("client", "core", rate=5000, count=n(40000))
        res["gilbert_elliott"] = {**_compact(m), "setting": {"mean_loss": 0.05, "mean_burst": 4,
                                                             **ge}}

        sweep = []
        for rate in (5000, 10000, 20000, 40000, 80000):
            row = {"rate_pps": rate}
            cnt = n(rate * 2)
            lab.impair(LINK, DIR)  # no emulator: what can sender/receiver do on their own?
            m0 = lab.measure_udp("client", "core", rate=rate, count=cnt)
            row["no_emulator"] = {"loss": round(m0["loss"], 5),
                                  "receiver_socket_drops": m0["receiver_socket_drops"],
                                  "p99_owd_ms": round(m0["owd_ms"]["p99"], 3),
                                  "send_rate_achieved": round(m0["sender"]["rate_achieved"])}
            lab.impair(LINK, DIR, delay_ms=20)
            try:
                m1 = lab.measure_udp("client", "core", rate=rate, count=cnt, linger=0.5)
            except LabError as exc:
                # Past saturation the measuring processes themselves starve; record
                # that as the result of this rate and stop the sweep here.
                row["delay_20ms"] = {"error": str(exc)[:200]}
                row["sustained"] = False
                sweep.append(row)
                print(json.dumps(row), file=sys.stderr)
                break
            row["delay_20ms"] = {"loss": round(m1["loss"], 5),
                                 "receiver_socket_drops": m1["receiver_socket_drops"],
                                 "mean_owd_ms": round(m1["owd_ms"]["mean"], 3),
                                 "p99_owd_ms": round(m1["owd_ms"]["p99"], 3),
                                 "send_rate_achieved": round(m1["sender"]["rate_achieved"]),
                                 "emulator": lab.emulator_stats(LINK, DIR)}
            row["sustained"] = m1["loss"] <= 0.001 and m1["owd_ms"]["p99"] <= 22.0
            sweep.append(row)
            print(json.dumps(row), file=sys.stderr)
        res["rate_sweep"] = sweep
        ok = [r["rate_pps"] for r in sweep if r["sustained"]]
        res["max_sustained_pps"] = max(ok) if ok else 0
    res["topology_down_s"] = round(lab.timings["down_s"], 3)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab accuracy")
    p.add_argument("--quick", action="store_true", help="quarter-length runs (smoke test)")
    p.add_argument("--out", help="JSON file (default netns_lab/results/accuracy.json)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("needs root")
    res = run(a.quick)
    out = Path(a.out) if a.out else RESULTS / ("accuracy-quick.json" if a.quick else "accuracy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    print(f"saved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
