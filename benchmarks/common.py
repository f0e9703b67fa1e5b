"""Helpers shared by the benchmark scripts: processes, percentiles, results."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(samples_s: list[float]) -> dict:
    ms = [x * 1000 for x in samples_s]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 4), "p99_ms": round(percentile(ms, 99), 4),
            "p999_ms": round(percentile(ms, 99.9), 4), "max_ms": round(max(ms), 4) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 4) if ms else None}


class Proc:
    """A child process whose first stdout line is a JSON 'ready' record."""

    def __init__(self, argv: list[str], env: dict | None = None, timeout: float = 20.0) -> None:
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        line = self.popen.stdout.readline()
        if not line or time.monotonic() > deadline:
            err = self.popen.stderr.read()
            self.stop()
            raise RuntimeError(f"{argv[:4]} did not start: {err[-2000:]}")
        self.ready = json.loads(line)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def py(*args: str) -> list[str]:
    return [sys.executable, *args]


def save(name: str, data: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "kernel": platform.release()}, **data}
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    out = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


def lab_skip_reason() -> str | None:
    """Why the netns lab benchmarks cannot run here (None = they can); they need coturn too."""
    from netns_lab.netns import LAB_TOOLS, unavailable_reason
    return unavailable_reason((*LAB_TOOLS, "turnserver"))
