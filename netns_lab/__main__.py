"""Command line: ``python -m netns_lab <command>`` (root; ``check`` runs as anyone).

  up       build a topology and leave it running (detached); prints run id, namespaces, plan.
           Options: NAT types, --private-link; --profile NAME (netns_lab/profiles.py) and/or
           --delay/--jitter/--loss/--rate on --link (default client-lan, both directions);
           --firewall SITE:PRESET (repeatable); --coturn; --stack (coturn, gateway and host
           running, tokens 0600 in the run's directory, the exact connect command printed);
           --env prints shell assignments (LAB_RUN, LAB_DIR, LAB_CONNECT) instead of JSON
  impair   change a running lab's link impairment:  impair <run_id> [--link L] --profile P | --delay ...
  firewall replace a running lab's presets at a site: firewall <run_id> client|host [PRESET ...]
  run      run a command inside a node of a running lab:  run <run_id> <node> -- <cmd...>
  down     tear one lab down by run id (processes, namespaces, its directory)
  list     show recorded runs (owner alive? detached? stale?)
  cleanup  remove leftovers: --stale = runs whose owner died; default = stale + detached;
           --all = every recorded run, even ones a live process still owns
  check    list the programs and libraries the lab needs, and which are missing
  verify   build one lab per NAT type and classify each with the RFC 5780-style probe
  accuracy measure the impairment emulator (see netns_lab/accuracy.py)

A missing prerequisite stops a command with one line per missing program or library, naming
its Debian package (netns_lab/prereq.py; scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import firewall as fwmod
from . import nat as natmod
from . import prereq
from . import state as st
from .lab import Lab
from .netns import LabError
from .profiles import DEFAULT_LINK, PROFILES

RESULTS = Path(__file__).resolve().parent / "results"


def _need_root(*needs: str) -> None:
    """Exit with one line per reason unless this machine can run the lab (and has ``needs``)."""
    why = prereq.environment_reason()
    lines = [why] if why else prereq.missing(*(needs or ("ip",)))
    if lines:
        sys.exit("\n".join(lines))


def _impairment(a) -> dict:
    """Impairment parameters (netns_lab.impair.Impairment) from --profile and explicit options;
    explicit ones override the profile's."""
    params = dict(PROFILES[a.profile].params) if a.profile else {}
    if a.delay is not None:
        params["delay_ms"] = a.delay
    if a.jitter is not None:
        params["jitter_ms"] = a.jitter
    if a.loss is not None:
        params["loss"] = a.loss / 100.0
    if a.rate is not None:
        params["rate_kbit"] = a.rate
    return params


def _add_impair_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("link impairment (each direction of each --link)")
    g.add_argument("--profile", choices=sorted(PROFILES),
                   help="a named benchmark profile (netns_lab/profiles.py); e.g. rtt40-loss2")
    g.add_argument("--delay", type=float, metavar="MS", help="one-way delay added, ms (20 = 40 ms RTT)")
    g.add_argument("--jitter", type=float, metavar="MS", help="delay variation (standard deviation), ms")
    g.add_argument("--loss", type=_percent, metavar="PCT", help="random loss, percent (2 = 2 %%)")
    g.add_argument("--rate", type=int, metavar="KBIT", help="rate limit, kbit/s (tbf qdisc)")
    g.add_argument("--link", action="append", metavar="LINK",
                   help=f"link to impair (repeatable; default {DEFAULT_LINK}, crossed by every "
                        "client-host path); see `up` output for the names")
    g.add_argument("--direction", choices=("both", "up", "down"), default="both")


def _percent(text: str) -> float:
    v = float(text.rstrip("%"))
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError("loss is a percentage, 0..100")
    return v


def _site_presets(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        site, sep, preset = spec.partition(":")
        if not sep or site not in ("client", "host") or preset not in fwmod.PRESETS:
            raise LabError(f"--firewall {spec!r}: expected SITE:PRESET with SITE client or host "
                           f"and PRESET one of {', '.join(fwmod.PRESETS)}")
        out.setdefault(site, []).append(preset)
    return out


def _apply_impairment(lab: Lab, a) -> dict:
    params = _impairment(a)
    links = a.link or [DEFAULT_LINK]
    for link in links:
        lab.impair(link, a.direction, **params)
    return {"links": links, "direction": a.direction, "params": params}


def cmd_up(a) -> int:
    turn = a.coturn or a.stack
    _need_root("lab", *(["turn"] if turn else []))
    client = (a.client_nat, a.cgn_nat) if a.cgn_nat else a.client_nat
    firewalls = _site_presets(a.firewall or [])
    lab = Lab(client, a.host_nat, private_link=a.private_link, run_id=a.run_id, detached=True,
              handle_signals=False)
    connect = None
    try:
        lab.up()
        info = lab.describe()
        info["up_s"] = round(lab.timings["up_s"], 3)
        info["workdir"] = str(lab.workdir)
        if a.stack:
            from .scenario import connect_command, start_stack
            stack = start_stack(lab, managed=not a.no_managed)
            connect = shlex.join(connect_command(lab, stack))
            info["stack"] = {"gateway": f"{lab.addr('gateway')}:443",
                             "tokens": [str(stack["work"] / "user.tok"), str(stack["work"] / "host.tok")],
                             "connect": connect}
        elif a.coturn:
            srv = lab.coturn()
            info["coturn"] = {"address": f"{srv.host}:{srv.port}", "tls": f"{srv.host}:{srv.tls_port}",
                              "cert": str(srv.cert), "config": str(srv.conf)}   # 0600: holds the REST secret
        for site, presets in firewalls.items():
            lab.firewall(site, *presets)
        info["firewall"] = firewalls
        if a.profile or any(v is not None for v in (a.delay, a.jitter, a.loss, a.rate)):
            info["impairment"] = _apply_impairment(lab, a)
    except BaseException:
        lab.down()
        raise
    if a.env:
        print(f"LAB_RUN={shlex.quote(lab.run_id)}")
        print(f"LAB_DIR={shlex.quote(str(lab.workdir))}")
        if connect:
            print(f"LAB_CONNECT={shlex.quote(connect)}")
    else:
        print(json.dumps(info, indent=1))
    if connect:
        print(f"# connect from the client namespace with:\n{connect}", file=sys.stderr)
    print(f"# run commands with: python -m netns_lab run {lab.run_id} client -- ip addr",
          file=sys.stderr)
    print(f"# tear down with:    python -m netns_lab down {lab.run_id}", file=sys.stderr)
    return 0


def cmd_impair(a) -> int:
    _need_root("lab")
    lab = Lab.attach(a.run_id)
    if not (a.profile or a.clear or any(v is not None for v in (a.delay, a.jitter, a.loss, a.rate))):
        raise LabError("nothing to do: give --profile, --delay/--jitter/--loss/--rate, or --clear")
    out = _apply_impairment(lab, a)      # --clear alone: no parameters = no impairment
    print(json.dumps({"run_id": lab.run_id, **out}))
    return 0


def cmd_firewall(a) -> int:
    _need_root("nft")
    lab = Lab.attach(a.run_id)
    lab.firewall(a.site, *a.presets)
    print(json.dumps({"run_id": lab.run_id, "site": a.site, "presets": a.presets}))
    return 0


def cmd_check(a) -> int:
    rows = prereq.report()
    for r in rows:
        mark = "ok     " if r["present"] else "MISSING"
        print(f"{mark} {r['kind']:8} {r['name']:11} {r['package']:11} {r['needed_by']}")
    why = prereq.environment_reason()
    if why:
        print(f"note: {why}")
    return 0 if all(r["present"] for r in rows) else 1


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
    _need_root("lab")
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
    u = sub.add_parser("up", help="build a lab and leave it running")
    u.add_argument("--client-nat", default="port-restricted",
                   help=f"{', '.join(natmod.NAT_TYPES)} or double")
    u.add_argument("--cgn-nat", help="with double NAT: the carrier-grade NAT's type")
    u.add_argument("--host-nat", default="port-restricted")
    u.add_argument("--private-link", action="store_true")
    u.add_argument("--run-id")
    u.add_argument("--firewall", action="append", metavar="SITE:PRESET",
                   help=f"site client or host; presets: {', '.join(fwmod.PRESETS)} (repeatable)")
    u.add_argument("--coturn", action="store_true", help="start coturn on the turn address")
    u.add_argument("--stack", action="store_true",
                   help="coturn, a gateway and a host (h1, pool desktop) running; prints the "
                        "connect command for the client namespace")
    u.add_argument("--no-managed", action="store_true",
                   help="with --stack: the host without managed Shortpath (UDP 3390)")
    u.add_argument("--env", action="store_true",
                   help="print LAB_RUN, LAB_DIR and LAB_CONNECT as shell assignments, not JSON")
    _add_impair_options(u)
    im = sub.add_parser("impair", help="change the impairment of a running lab's link(s)")
    im.add_argument("run_id")
    im.add_argument("--clear", action="store_true", help="remove the impairment")
    _add_impair_options(im)
    f = sub.add_parser("firewall", help="replace the firewall presets of a running lab's site")
    f.add_argument("run_id")
    f.add_argument("site", choices=("client", "host"))
    f.add_argument("presets", nargs="*", metavar="PRESET",
                   help=f"{', '.join(fwmod.PRESETS)}; none = open again")
    sub.add_parser("check", help="list the lab's prerequisites and which are missing")
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
    cmd = {"up": cmd_up, "impair": cmd_impair, "firewall": cmd_firewall, "run": cmd_run,
           "down": cmd_down, "list": cmd_list, "cleanup": cmd_cleanup, "check": cmd_check,
           "verify": cmd_verify}[a.cmd]
    try:
        return cmd(a)
    except (LabError, RuntimeError) as e:       # one message, no traceback
        print(e if isinstance(e, prereq.PrereqMissing) else f"netns_lab {a.cmd}: {e}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
