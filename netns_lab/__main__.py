"""Command line: ``python -m netns_lab <command>``.

  up       build a topology and leave it running (detached); prints run id, namespaces, plan
  run      run a command inside a node of a running lab:  run <run_id> <node> -- <cmd...>
  down     tear one lab down by run id
  list     show recorded runs (owner alive? detached? stale?)
  cleanup  remove leftovers: --stale = runs whose owner died; default = stale + detached;
           --all = every recorded run, even ones a live process still owns
  verify   build one lab per NAT type and classify each with the RFC 5780-style probe
  accuracy measure the impairment emulator (see netns_lab/accuracy.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import nat as natmod
from . import state as st
from .lab import Lab

RESULTS = Path(__file__).resolve().parent / "results"


def _need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("netns_lab: needs root (network namespaces, nftables)")


def cmd_up(a) -> int:
    _need_root()
    client = (a.client_nat, a.cgn_nat) if a.cgn_nat else a.client_nat
    lab = Lab(client, a.host_nat, private_link=a.private_link, run_id=a.run_id, detached=True,
              handle_signals=False)
    lab.up()
    info = lab.describe()
    info["up_s"] = round(lab.timings["up_s"], 3)
    print(json.dumps(info, indent=1))
    print(f"# run commands with: python -m netns_lab run {lab.run_id} client -- ip addr",
          file=sys.stderr)
    print(f"# tear down with:    python -m netns_lab down {lab.run_id}", file=sys.stderr)
    return 0


def cmd_run(a) -> int:
    _need_root()
    ns = f"nl-{a.run_id}-{a.node}"
    if not st.netns_exists(ns):
        sys.exit(f"no namespace {ns}")
    argv = a.argv[1:] if a.argv and a.argv[0] == "--" else a.argv
    if not argv:
        sys.exit("nothing to run")
    os.execvp("ip", ["ip", "netns", "exec", ns, *argv])
    return 0


def _find(run_id: str) -> st.RunState:
    for r in st.list_runs():
        if r.run_id == run_id:
            return r
    sys.exit(f"no recorded run {run_id!r} (see: python -m netns_lab list)")


def cmd_down(a) -> int:
    _need_root()
    t0 = time.monotonic()
    problems = st.teardown(_find(a.run_id))
    print(json.dumps({"run_id": a.run_id, "down_s": round(time.monotonic() - t0, 3),
                      "problems": problems}))
    return 1 if problems else 0


def cmd_list(a) -> int:
    for r in st.list_runs():
        alive = st.pid_alive(r.owner_pid, r.owner_start)
        print(json.dumps({"run_id": r.run_id, "owner_pid": r.owner_pid, "owner_alive": alive,
                          "detached": r.detached, "stale": r.is_stale(),
                          "namespaces": r.namespaces, "procs": len(r.procs)}))
    return 0


def cmd_cleanup(a) -> int:
    _need_root()
    rc = 0
    for r in st.list_runs():
        alive = st.pid_alive(r.owner_pid, r.owner_start)
        if a.stale and not r.is_stale():
            continue
        if not a.all and alive and not r.detached:
            continue
        problems = st.teardown(r)
        print(json.dumps({"removed": r.run_id, "namespaces": r.namespaces,
                          "procs": [p.pid for p in r.procs], "problems": problems}))
        rc |= bool(problems)
    return rc


def cmd_verify(a) -> int:
    _need_root()
    cases = [("client", t, "port-restricted") for t in natmod.NAT_TYPES]
    cases += [("client", ("port-restricted", "port-restricted"), "port-restricted"),
              ("client", ("full-cone", "symmetric"), "port-restricted"),
              ("host", "port-restricted", "full-cone"), ("host", "port-restricted", "symmetric")]
    out = []
    ok = True
    for side, cn, hn in cases:
        with Lab(cn, hn) as lab:
            rep = lab.probe_nat(side)
            exp = lab.expected_nat(side)
            good = (rep.mapping, rep.filtering) == exp
            ok &= good
            row = {"side": side, "nat": cn if side == "client" else hn,
                   "expected": list(exp), "measured": [rep.mapping, rep.filtering],
                   "local": list(rep.local), "mapped": list(rep.mapped),
                   "ok": good, "up_s": round(lab.timings["up_s"], 3)}
        row["down_s"] = round(lab.timings["down_s"], 3)
        out.append(row)
        print(json.dumps(row))
    if a.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "nat_verification.json").write_text(json.dumps(
            {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": os.uname().release,
             "results": out}, indent=1) + "\n")
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--client-nat", default="port-restricted",
                   help=f"{', '.join(natmod.NAT_TYPES)} or double")
    u.add_argument("--cgn-nat", help="with double NAT: the carrier-grade NAT's type")
    u.add_argument("--host-nat", default="port-restricted")
    u.add_argument("--private-link", action="store_true")
    u.add_argument("--run-id")
    r = sub.add_parser("run")
    r.add_argument("run_id")
    r.add_argument("node")
    r.add_argument("argv", nargs=argparse.REMAINDER)
    d = sub.add_parser("down")
    d.add_argument("run_id")
    sub.add_parser("list")
    c = sub.add_parser("cleanup")
    c.add_argument("--stale", action="store_true", help="only runs whose owner process died")
    c.add_argument("--all", action="store_true", help="also runs owned by live processes")
    v = sub.add_parser("verify")
    v.add_argument("--save", action="store_true", help="write results/nat_verification.json")
    acc = sub.add_parser("accuracy", add_help=False)
    acc.add_argument("rest", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.cmd == "accuracy":
        from .accuracy import main as acc_main
        return acc_main(a.rest)
    if a.cmd == "up" and a.client_nat == "double" and not a.cgn_nat:
        a.client_nat, a.cgn_nat = "port-restricted", "port-restricted"
    return {"up": cmd_up, "run": cmd_run, "down": cmd_down, "list": cmd_list,
            "cleanup": cmd_cleanup, "verify": cmd_verify}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
