"""Session set-up time, phase by phase: relay first byte, then time to UDP per path (issue #5).

    python -m benchmarks run --suite quick --only setup        # CI smoke run, about a minute
    python -m benchmarks.setup --suite full [--loopback] [--paths udp-managed ...] [--profiles clean rtt40]

Where it runs
    In the netns lab when it can (root, ip/nft/turnserver): port-restricted NAT at both sites,
    a private link between them, the real gateway + coturn + ``shortpath host`` processes
    (netns_lab.scenario.start_stack), and one client process per network profile in the client
    namespace (``python -m benchmarks.setup peer``) that runs every repetition. Each path is
    forced the way netns_lab/matrix.py and benchmarks/lab_paths.py force it: the client's
    ``modes`` (managed | direct | turn), and the private link carries no UDP but 3390
    (netns_lab.profiles.isolate_private_link), so ``udp-direct`` must hole-punch both NATs with
    STUN and ``udp-managed`` reaches the host's UDP 3390 over the private link. Profiles:
    ``clean`` and ``rtt40`` (20 ms each way on client-lan, which every path crosses).
    Otherwise (or with ``--loopback``) on 127.0.0.1 with shortpath.demo.LocalStack in this
    process and a coturn for STUN/TURN (the integration tests' helper); no root needed.

What is measured (all from time.monotonic(); in the lab every namespace shares the kernel's
CLOCK_MONOTONIC, so the host's stamps line up with the client's)
    The phase stamps come from the code itself, not from polling: ``Session.timeline`` (written
    by client/connect.py, host/agent.py and the session on its first switch to UDP) and the UDP attempt's
    ``UdpUpgrader.timeline`` (transport/udp/upgrader.py; ``UdpSessionPath.setup_timeline``, and
    in the path's ``info()["timeline"]``).

    Relay, first byte (client clock; contiguous, so the phases add up to the total):
      gateway tcp+tls  connect() called -> TCP + TLS to the gateway up
      token check      ClientHello -> Welcome (the gateway verified the user token)
      broker           Launch -> Launched: host choice, the dial order on the host's control
                       channel, the host's new data leg (TCP + TLS + LegHello), the stitch.
                       Split further with the host's stamps: to-host (Launch -> host got the
                       dial order: token already checked, host choice, control message),
                       host-leg (the host's TCP + TLS to the gateway), stitch+launched
                       (LegHello -> the gateway stitches and sends Launched to the client)
      inner tls        end-to-end TLS 1.3 handshake through the relay
      session hello    session ticket to the host -> hello-ok back
      first echo       connect() returned -> the first echoed message is back (the UDP
                       attempt starts at the same moment and shares the CPU)

    Time to UDP (client clock; contiguous from connect(), so relay set-up is its first slice):
      relay setup      connect() -> session confirmed (the relay phases above, first echo aside)
      upgrade start    session confirmed -> UdpUpgrader.connect() called
      gather           our candidates: certificate, ICE credentials, host candidates, STUN
                       (srflx) and TURN allocation (relay), until our end-of-candidates; the
                       first host / srflx / relay candidate times are reported separately
      peer wait        gathering done -> peer's hello in hand (usually 0: it came earlier)
      checks           connectivity checks until the client's nominating check succeeded
      host nomination  client's pair nominated -> the host's ICE agent done too (host stamp,
                       0 when unknown). aioice's controlled side takes a pair only once its
                       own check on it has succeeded; when that first check hit the client's
                       NAT (or a TURN allocation) before it was opened, the retry comes 0.5 s
                       later (aioice RETRY_RTO), and the client's DTLS server waits meanwhile
      dtls             DTLS handshake (client is the DTLS server, host starts it)
      sctp             SCTP association + reliable data channel open
      switch           path up -> the session sends on it (replay of unacknowledged messages)

    Every repetition also records the whole set-up measured from outside (the benchmark's own
    clock around connect() and the first echo), and checks the session really ended on the
    path asked for. The first session of each client process is a warm-up that is not counted
    (it pays for importing aiortc/PyAV, about 0.3-1 s; reported as ``warmup``).

Writes benchmarks/results/setup_{suite}.json and .png (stacked median phases, one bar per path
and profile). Medians of phases do not add up exactly to the median total. The machine is
small and shared: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from .common import lab_skip_reason, percentile, save, table

UDP_PATHS = ("udp-managed", "udp-direct", "udp-turn")
MODE = {"udp-managed": "managed", "udp-direct": "direct", "udp-turn": "turn"}

#: (phase name, start stamp, end stamp) on the client's Session.timeline ("echo" is ours)
RELAY_PHASES = (("gateway tcp+tls", "connect", "gateway_tls"), ("token check", "gateway_tls", "welcome"),
                ("broker", "welcome", "launched"), ("inner tls", "launched", "inner_tls"),
                ("session hello", "inner_tls", "session_ok"), ("first echo", "session_ok", "echo"))
#: broker split with the host's stamps (host:* = host Session.timeline)
#: (the gateway sends LegAccepted to the host and Launched to the client together, so the
#: last slice is the stitch and the Launched message; host:leg_accepted is kept in the stamps)
BROKER_SPLIT = (("to-host", "welcome", "host:dial"), ("host-leg", "host:dial", "host:leg_tls"),
                ("stitch+launched", "host:leg_tls", "launched"))
#: time-to-UDP phases; udp:* = the winning UdpUpgrader.timeline on the client
UDP_PHASES = (("relay setup", "connect", "session_ok"), ("upgrade start", "session_ok", "udp:start"),
              ("gather", "udp:start", "udp:gathered"), ("peer wait", "udp:gathered", "udp:checks"),
              ("checks", "udp:checks", "udp:nominated"), ("host nomination", "udp:nominated", "ice:both"),
              ("dtls", "ice:both", "udp:dtls"),
              ("sctp", "udp:dtls", "udp:sctp"), ("switch", "udp:sctp", "udp_switch"))
CANDIDATES = ("cand_host", "cand_srflx", "cand_relay")

SUITES = {"quick": {"reps": 3, "profiles": ["clean", "rtt40"]},
          "full": {"reps": 15, "profiles": ["clean", "rtt40"]}}




# ------------------------------------------------------------------ one repetition
def phases_of(stamps: dict, spec) -> dict:
    """{phase: seconds} for every phase whose two stamps are known."""
    return {name: stamps[b] - stamps[a] for name, a, b in spec if a in stamps and b in stamps}


async def measure_one(connect, path: str, host_timeline=None, udp_timeout: float = 10.0) -> dict:
    """One session: connect, first echo, wait for the UDP switch, collect every stamp.

    ``connect(modes)`` returns a client Session; ``host_timeline(session_id)`` (optional,
    may be a coroutine function) returns the host's ``{"session": ..., "udp": ...}`` stamps."""
    t0 = time.monotonic()
    s = await connect([MODE[path]])
    try:
        await s.send(b"echo")             # picks echo mode in the demo host handler
        await s.send(b"first")
        reply = await asyncio.wait_for(s.recv(), 10)
        t_echo = time.monotonic()
        if reply != b"first":
            raise RuntimeError(f"echo mismatch: {reply!r}")
        end = time.monotonic() + udp_timeout
        while "udp_switch" not in s.timeline and time.monotonic() < end and not s.closed:
            await asyncio.sleep(0.01)
        info = s.info
        udp = next((p for p in info.paths if p.get("active") and p["kind"].startswith("udp")), None)
        stamps = dict(s.timeline)
        stamps["echo"] = t_echo
        if udp is not None:
            stamps.update({f"udp:{k}": v for k, v in udp.get("timeline", {}).items()})
        host = {}
        if host_timeline is not None:
            host = host_timeline(s.session_id)
            if asyncio.iscoroutine(host):
                host = await host
            stamps.update({f"host:{k}": v for k, v in (host.get("session") or {}).items()})
            stamps.update({f"hostudp:{k}": v for k, v in (host.get("udp") or {}).items()})
        if "udp:nominated" in stamps and "udp:dtls" in stamps:
            # both ICE agents have the pair: the later of the two, never past our DTLS end
            both = max(stamps["udp:nominated"], stamps.get("hostudp:nominated", 0.0))
            stamps["ice:both"] = min(both, stamps["udp:dtls"])
        # an echo on the new path: the session works there (not part of any phase)
        if udp is not None:
            await s.send(b"on-udp")
            if await asyncio.wait_for(s.recv(), 10) != b"on-udp":
                raise RuntimeError("echo mismatch on the UDP path")
    finally:
        await s.close()
    base = stamps["connect"]
    out = {"path": path, "got": info.transport, "ok": info.transport == path,
           "outside_total_s": t_echo - t0, "outside_to_udp_s": (stamps["udp_switch"] - t0)
           if "udp_switch" in stamps else None,
           "relay_total_s": t_echo - base,
           "to_udp_s": stamps["udp_switch"] - base if "udp_switch" in stamps else None,
           "relay": phases_of(stamps, RELAY_PHASES), "broker": phases_of(stamps, BROKER_SPLIT),
           "udp": phases_of(stamps, UDP_PHASES) if "udp_switch" in stamps else {},
           "candidates": {k: stamps[f"udp:{k}"] - stamps["udp:start"] for k in CANDIDATES
                          if f"udp:{k}" in stamps and "udp:start" in stamps},
           "selected": udp and {"local": udp.get("local_candidate"), "remote": udp.get("remote_candidate"),
                                "turn": udp.get("turn")},
           "stamps": {k: round(v - base, 6) for k, v in sorted(stamps.items(), key=lambda kv: kv[1])}}
    return out


def check_phases(r: dict) -> list[str]:
    """Problems with one repetition's phases (empty = consistent): every phase present and
    not negative, stamps in order, sums not above the totals."""
    problems = []
    for group, spec, total in (("relay", RELAY_PHASES, r["relay_total_s"]),
                               ("udp", UDP_PHASES, r["to_udp_s"])):
        if total is None:
            problems.append(f"{group}: no total")
            continue
        got = r[group]
        missing = [name for name, _, _ in spec if name not in got]
        if missing:
            problems.append(f"{group}: missing {missing}")
        neg = {k: v for k, v in got.items() if v < 0}
        if neg:
            problems.append(f"{group}: negative {neg}")
        if sum(got.values()) > total + 1e-6:
            problems.append(f"{group}: phases sum {sum(got.values()):.6f} > total {total:.6f}")
    if r["relay_total_s"] > r["outside_total_s"] + 1e-6:
        problems.append("relay total above the time measured outside connect()")
    return problems


# ------------------------------------------------------------------ lab peer (client netns)
def _host_stats(sock_path: str, sid: str) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sk:
        sk.settimeout(2)
        sk.connect(sock_path)
        sk.sendall(b"stats\n")
        data = json.loads(sk.makefile().readline())
    for sess in data.get("sessions", []):
        if sess.get("session_id") == sid:
            udp = next((p for p in sess.get("paths", []) if p.get("active") and p["kind"].startswith("udp")), None)
            return {"session": sess.get("timeline", {}), "udp": (udp or {}).get("timeline", {}),
                    "transport": sess.get("transport")}
    return {}


async def _host_timeline(sock_path: str, sid: str, timeout: float = 3.0) -> dict:
    """The host's stamps for ``sid`` once it has switched too (its own switch may trail ours)."""
    end = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < end:
        try:
            got = await asyncio.to_thread(_host_stats, sock_path, sid)
        except (OSError, ValueError):
            got = {}
        if "udp_switch" in got.get("session", {}):
            break
        await asyncio.sleep(0.05)
    return got


async def _peer(args) -> int:
    from shortpath import log
    from shortpath.client import connect
    if os.environ.get("SHORTPATH_LOG"):
        log.setup(os.environ["SHORTPATH_LOG"])
    token = Path(args.token_file).read_text().strip()

    async def conn(modes):
        udp = {"modes": modes}
        if args.turn_ca:
            udp["turn_cafile"] = args.turn_ca
        return await connect(args.gateway, token, "desktop", cafile=args.ca, udp=udp)

    host = (lambda sid: _host_timeline(args.host_stats, sid)) if args.host_stats else None
    paths = args.paths.split(",")
    plan = [("warmup", paths[0])] + [(i, p) for i in range(args.reps) for p in paths]
    from shortpath.errors import RateLimited
    for rep, path in plan:
        for _ in range(50):
            try:
                r = await measure_one(conn, path, host)
            except RateLimited:
                # the gateway allows 5 launches/s per source (burst 20); with set-up now
                # this quick a run exceeds it: wait as a real client would, then measure
                await asyncio.sleep(0.25)
                continue
            except Exception as exc:   # one failed session must not stop the run
                r = {"path": path, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            break
        r["rep"] = rep
        print("REP " + json.dumps(r), flush=True)
    print("DONE", flush=True)
    return 0


# ------------------------------------------------------------------ lab run
def _private_link_3390_only(lab) -> None:
    """On the client router, let UDP cross the private link only to or from port 3390.

    Managed Shortpath (the host's UDP 3390) keeps the private link; ICE host-candidate pairs
    (and the peer-reflexive pairs the host's own checks would create) do not, so a direct path
    must hole-punch both NATs with STUN. One port match per rule, on purpose:
    netns_lab.profiles.isolate_private_link(lab, keep_udp_ports=(3390,)) (a single port, so
    nft lists it as ``udp sport != 3390 udp dport != 3390``) also dropped the client's
    checks *to* 3390 here (its drop counter matched them), and udp-managed never came up."""
    lab.client_router.nft("""table inet setupbench {
    chain setupfwd {
        type filter hook forward priority filter - 20; policy accept;
        iifname "pl" udp dport 3390 accept
        iifname "pl" udp sport 3390 accept
        oifname "pl" udp dport 3390 accept
        oifname "pl" udp sport 3390 accept
        iifname "pl" meta l4proto udp counter drop
        oifname "pl" meta l4proto udp counter drop
    }
}
""")


def measure_lab(paths, profiles, reps: int, progress=print) -> dict:
    from netns_lab import Lab
    from netns_lab import plan as lab_plan
    from netns_lab.profiles import PROFILES, apply_profile
    from netns_lab.scenario import start_stack

    t_start = time.monotonic()

    def say(msg):
        if progress:
            progress(f"  [{time.monotonic() - t_start:5.1f}s] {msg}")

    out = {"where": "netns lab: port-restricted NAT both sites, private link (UDP 3390 only)",
           "profiles": {p: {"description": PROFILES[p].description, "rtt_added_ms": PROFILES[p].rtt_ms}
                        for p in profiles}, "reps": []}
    with Lab(client_nat="port-restricted", host_nat="port-restricted", private_link=True) as lab:
        stack = start_stack(lab)
        _private_link_3390_only(lab)
        say(f"lab {lab.run_id} up: coturn, gateway, host h1 (managed {lab.addr('host')}:3390)")
        for prof in profiles:
            apply_profile(lab, prof)
            argv = [sys.executable, "-m", "benchmarks.setup", "peer",
                    "--gateway", f"{lab_plan.SERVICES['gateway']}:443",
                    "--token-file", str(stack["work"] / "user.tok"), "--ca", str(stack["state"] / "gateway.crt"),
                    "--turn-ca", stack["turn_cert"], "--paths", ",".join(paths), "--reps", str(reps),
                    "--host-stats", str(stack["work"] / "h1" / "host-h1.sock")]
            p = lab.spawn("client", argv, cwd=str(Path(__file__).resolve().parent.parent))
            try:
                n, done = 0, False
                total = 1 + reps * len(paths)
                deadline = time.monotonic() + 60 + 30 * total
                while not done:
                    lines = [l for l in list(p.lines) if l.startswith(("REP ", "DONE"))]
                    for line in lines[n:]:
                        if line.startswith("DONE"):
                            done = True
                            break
                        r = json.loads(line.split(" ", 1)[1])
                        r["profile"] = prof
                        n += 1
                        out["reps"].append(r)
                        say(_progress_line(prof, r, n, total))
                    if not done and (not p.alive() or time.monotonic() > deadline):
                        raise RuntimeError(f"lab client stopped after {n}/{total} sessions; its log:\n"
                                           + "\n".join(list(p.lines)[-30:]))
                    time.sleep(0.1)
            finally:
                lab.stop(p)
        lab.clear_impairments()
    say("lab down")
    return out


def _progress_line(prof, r, n, total) -> str:
    if not r.get("ok"):
        return f"{prof:<6} {n}/{total} {r['path']:<12} FAILED: {r.get('error') or 'ended on ' + str(r.get('got'))}"
    udp = f"{r['to_udp_s'] * 1000:7.1f}" if r.get("to_udp_s") is not None else "      -"
    return (f"{prof:<6} {n}/{total} {r['path']:<12} rep {r['rep']!s:<6} relay first echo "
            f"{r['relay_total_s'] * 1000:6.1f} ms  to UDP {udp} ms")


# ------------------------------------------------------------------ loopback run
async def _measure_loopback(paths, reps: int, progress=print) -> dict:
    from shortpath.config import TurnConfig
    from shortpath.demo import LocalStack

    t_start = time.monotonic()
    out = {"where": "loopback (LocalStack in one process, coturn on 127.0.0.1 for STUN/TURN)",
           "profiles": {"clean": {"description": "loopback", "rtt_added_ms": 0}}, "reps": []}
    with tempfile.TemporaryDirectory(prefix="sp-setup-") as state:
        coturn = None
        kw = {}
        if "udp-turn" in paths or "udp-direct" in paths:
            if shutil.which("turnserver"):
                from tests.component.conftest_udp import start_coturn
                coturn = start_coturn(Path(state), tls=False)
                kw["turn"] = TurnConfig(stun=f"127.0.0.1:{coturn.port}", turn=f"127.0.0.1:{coturn.port}",
                                        secret=coturn.secret)
            else:
                paths = [p for p in paths if p != "udp-turn"]
                out["note"] = "coturn not installed: udp-turn skipped, udp-direct without STUN"
        try:
            async with LocalStack(state, hosts=1, **kw) as stack:
                host = stack.hosts[0]

                def host_timeline(sid):
                    hs = host.sessions.get(sid)
                    if hs is None:
                        return {}
                    udp = hs.active if hs.active is not None and hs.active.kind.startswith("udp") else None
                    return {"session": dict(hs.timeline),
                            "udp": dict(udp.setup_timeline) if udp is not None else {}}

                async def conn(modes):
                    return await stack.connect(udp={**stack.udp, "modes": modes})

                plan = [("warmup", paths[0])] + [(i, p) for i in range(reps) for p in paths]
                for n, (rep, path) in enumerate(plan, 1):
                    try:
                        r = await measure_one(conn, path, _after_host_switch(host_timeline))
                    except Exception as exc:
                        r = {"path": path, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    r.update({"rep": rep, "profile": "clean"})
                    out["reps"].append(r)
                    if progress:
                        progress(f"  [{time.monotonic() - t_start:5.1f}s] "
                                 + _progress_line("clean", r, n, len(plan)))
        finally:
            if coturn is not None:
                from tests.component.conftest_udp import stop_coturn
                stop_coturn(coturn)
    return out


def _after_host_switch(host_timeline):
    async def get(sid):
        end = time.monotonic() + 3
        got = host_timeline(sid)
        while "udp_switch" not in got.get("session", {}) and time.monotonic() < end:
            await asyncio.sleep(0.01)
            got = host_timeline(sid)
        return got
    return get


# ------------------------------------------------------------------ analysis
def _stat(xs: list[float]) -> dict:
    ms = [x * 1000 for x in xs]
    return {"n": len(ms), "median_ms": round(percentile(ms, 50), 2) if ms else None,
            "p90_ms": round(percentile(ms, 90), 2) if ms else None}


def analyse(raw: dict) -> dict:
    """Per profile and path: median/p90 of every phase and total over the counted reps."""
    out: dict = {}
    for prof in raw["profiles"]:
        reps = [r for r in raw["reps"] if r.get("profile") == prof and r.get("rep") != "warmup"]
        relay_ok = [r for r in reps if "relay" in r]
        pr: dict = {"relay first byte": {
            "total": _stat([r["relay_total_s"] for r in relay_ok]),
            "outside_total": _stat([r["outside_total_s"] for r in relay_ok]),
            "phases": {name: _stat([r["relay"][name] for r in relay_ok if name in r["relay"]])
                       for name, _, _ in RELAY_PHASES},
            "broker_split": {name: _stat([r["broker"][name] for r in relay_ok if name in r.get("broker", {})])
                             for name, _, _ in BROKER_SPLIT}}}
        for path in dict.fromkeys(r["path"] for r in reps):
            mine = [r for r in reps if r["path"] == path]
            good = [r for r in mine if r.get("ok") and r.get("to_udp_s") is not None]
            pr[path] = {"runs": len(mine), "on_expected_path": len(good),
                        "failures": [r.get("error") or f"ended on {r.get('got')}" for r in mine if r not in good],
                        "total": _stat([r["to_udp_s"] for r in good]),
                        "phases": {name: _stat([r["udp"][name] for r in good if name in r["udp"]])
                                   for name, _, _ in UDP_PHASES},
                        "first_candidate": {k: _stat([r["candidates"][k] for r in good if k in r["candidates"]])
                                            for k in CANDIDATES},
                        "phase_problems": sum(1 for r in good if check_phases(r))}
        out[prof] = pr
    return out


def print_summary(an: dict) -> None:
    for prof, pr in an.items():
        print(f"\n== profile {prof} ==")
        rb = pr["relay first byte"]
        rows = [{"phase": k, "median ms": v["median_ms"], "p90 ms": v["p90_ms"], "n": v["n"]}
                for k, v in rb["phases"].items()]
        rows += [{"phase": f"  broker: {k}", "median ms": v["median_ms"], "p90 ms": v["p90_ms"], "n": v["n"]}
                 for k, v in rb["broker_split"].items() if v["n"]]
        rows.append({"phase": "TOTAL connect() -> first echo", "median ms": rb["total"]["median_ms"],
                     "p90 ms": rb["total"]["p90_ms"], "n": rb["total"]["n"]})
        print("relay, connect() to first echo:")
        print(table(rows, ["phase", "median ms", "p90 ms", "n"]))
        paths = [p for p in pr if p != "relay first byte"]
        if not paths:
            continue
        rows = []
        for name in [n for n, _, _ in UDP_PHASES] + ["first host cand", "first srflx cand", "first relay cand",
                                                     "TOTAL time to UDP"]:
            row = {"phase": name}
            for p in paths:
                d = pr[p]
                if name.startswith("first "):
                    v = d["first_candidate"]["cand_" + name.split()[1]]
                elif name.startswith("TOTAL"):
                    v = d["total"]
                else:
                    v = d["phases"][name]
                row[p] = "-" if not v["n"] else f"{v['median_ms']:.1f} / {v['p90_ms']:.1f}"
            rows.append(row)
        rows.append({"phase": "runs on expected path", **{p: f"{pr[p]['on_expected_path']}/{pr[p]['runs']}"
                                                          for p in paths}})
        print("time to UDP, median / p90 ms (from connect(); 'first ... cand' from the start of gathering):")
        print(table(rows, ["phase", *paths]))
        for p in paths:
            if pr[p]["failures"]:
                print(f"  {p} failures: {pr[p]['failures']}")


COLORS = {"gateway tcp+tls": "#1f77b4", "token check": "#aec7e8", "broker": "#ff7f0e", "inner tls": "#ffbb78",
          "session hello": "#2ca02c", "first echo": "#98df8a", "relay setup": "#7f7f7f",
          "upgrade start": "#c7c7c7", "gather": "#d62728", "peer wait": "#ff9896", "checks": "#9467bd",
          "host nomination": "#dbdb8d", "dtls": "#c5b0d5", "sctp": "#8c564b", "switch": "#e377c2"}


def plot_phases(an: dict, path: str, where: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bars = []   # (label, [(phase, median_ms)])
    for prof, pr in an.items():
        rb = pr["relay first byte"]
        bars.append((f"relay 1st echo\n{prof}", [(k, v["median_ms"] or 0) for k, v in rb["phases"].items()]))
        for p in (x for x in pr if x != "relay first byte"):
            bars.append((f"{p}\n{prof}", [(k, v["median_ms"] or 0) for k, v in pr[p]["phases"].items()]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(bars)), 5))
    seen = set()
    for i, (label, parts) in enumerate(bars):
        bottom = 0.0
        for phase, ms in parts:
            ax.bar(i, ms, bottom=bottom, color=COLORS.get(phase, "#bcbd22"),
                   label=phase if phase not in seen else None, edgecolor="white", linewidth=0.5)
            seen.add(phase)
            bottom += ms
        ax.text(i, bottom, f"{bottom:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("ms (median of each phase, stacked)")
    ax.set_title(f"Session set-up phases: {where}", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ entry points
def run(suite: str = "quick", plot: bool = True, *, paths=None, profiles=None, loopback: bool = False,
        reps: int | None = None) -> dict:
    cfg = SUITES[suite]
    paths = list(paths or UDP_PATHS)
    reps = reps or cfg["reps"]
    why = "asked for (--loopback)" if loopback else lab_skip_reason()
    if why is None:
        raw = measure_lab(paths, profiles or cfg["profiles"], reps)
    else:
        print(f"  lab not used ({why}): measuring on loopback", flush=True)
        raw = asyncio.run(_measure_loopback(paths, reps))
    an = analyse(raw)
    print_summary(an)
    problems = {f"{r['profile']}/{r['path']}/{r['rep']}": check_phases(r) for r in raw["reps"]
                if r.get("ok") and check_phases(r)}
    if problems:
        print(f"phase consistency problems: {problems}")
    data = {"suite": suite, "reps_per_path": reps, "where": raw["where"], "profiles": raw["profiles"],
            "note": raw.get("note"), "summary": an, "phase_problems": problems, "raw": raw["reps"]}
    out = save(f"setup_{suite}", data)
    if plot:
        plot_phases(an, out.replace(".json", ".png"), raw["where"])
    print(f"saved {out}")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.setup")
    sub = p.add_subparsers(dest="cmd")
    peer = sub.add_parser("peer", help="(internal) the lab client: runs every repetition")
    peer.add_argument("--gateway", required=True)
    peer.add_argument("--token-file", required=True)
    peer.add_argument("--ca", required=True)
    peer.add_argument("--turn-ca")
    peer.add_argument("--paths", required=True)
    peer.add_argument("--reps", type=int, required=True)
    peer.add_argument("--host-stats")
    p.add_argument("--suite", choices=sorted(SUITES), default="quick")
    p.add_argument("--paths", nargs="*", choices=UDP_PATHS)
    p.add_argument("--profiles", nargs="*")
    p.add_argument("--reps", type=int)
    p.add_argument("--loopback", action="store_true")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "peer":
        return asyncio.run(_peer(args))
    run(args.suite, plot=not args.no_plot, paths=args.paths, profiles=args.profiles, loopback=args.loopback,
        reps=args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
