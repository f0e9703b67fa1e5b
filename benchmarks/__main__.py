"""python -m benchmarks run [--suite quick|full] [--only NAME ...]"""

from __future__ import annotations

import argparse
import sys
import time

BENCHES = {
    "relay": "benchmarks.relay",
    "switching": "benchmarks.switching",
    "lab_paths": "benchmarks.lab_paths",
    "fairness": "benchmarks.fairness",
    "scale": "benchmarks.scale",
    "load": "benchmarks.load",
    "fuzz": "benchmarks.fuzz",
    "setup": "benchmarks.setup",
    "cluster": "benchmarks.cluster",
    "resume_lab": "benchmarks.resume_lab",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--suite", choices=["quick", "full"], default="quick")
    r.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    r.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    names = args.only or list(BENCHES)
    for i, name in enumerate(names, 1):
        t = time.monotonic()
        print(f"[{i}/{len(names)}] {name} ({args.suite})", flush=True)
        mod = __import__(BENCHES[name], fromlist=["run"])
        mod.run(args.suite, plot=not args.no_plot)
        print(f"[{i}/{len(names)}] {name} done in {time.monotonic() - t:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
