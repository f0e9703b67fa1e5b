"""The fallback-behaviour matrix: every client-NAT x host-NAT pair, plus firewall and
private-link cases, run with the real gateway/host/client processes (scenario.py).

    python -m netns_lab.matrix [--quick] [--out DIR]

Writes ``matrix.json``, ``matrix.md`` and ``matrix.png`` (NAT pair -> path and time to
UDP) and prints a table. Each cell also records what we *expect* from the NAT
behaviours (see :func:`expected_path`), so a regression shows as a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import time


NATS = ("open", "full-cone", "restricted", "port-restricted", "symmetric", "double")

# RFC 4787 behaviour of each type: (mapping, filtering). "double" is two
# port-restricted NATs in series, which behaves like one (EIM, APDF).
BEHAVIOUR = {"open": ("none", "none"), "full-cone": ("EIM", "EIF"), "restricted": ("EIM", "ADF"),
             "port-restricted": ("EIM", "APDF"), "symmetric": ("APDM", "APDF"),
             "double": ("EIM", "APDF")}


def expected_path(client: str, host: str) -> str:
    """What ICE should find between two NATs, with STUN and TURN available.

    Hole punching fails only when one side maps per destination (APDM: the peer
    learns a port that is not the one used towards it) *and* the other side
    filters by port (APDF), or both map per destination. Otherwise the
    server-reflexive (or peer-reflexive) pair works and is preferred to TURN.
    """
    if host == "open":
        # The host has a public address and its managed listener (UDP 3390, on in
        # these scenarios) is then reachable straight from the client: managed wins.
        return "udp-managed"
    cm, cf = BEHAVIOUR[client]
    hm, hf = BEHAVIOUR[host]
    if cm == "APDM" and hm == "APDM":
        return "udp-turn"
    if (cm == "APDM" and hf == "APDF") or (hm == "APDM" and cf == "APDF"):
        return "udp-turn"
    return "udp-direct"


SPECIALS = [
    # (label, client_nat, host_nat, kwargs, expected)
    ("private link (managed)", "port-restricted", "port-restricted", {"private_link": True}, "udp-managed"),
    ("private link, UDP 3390 blocked", "port-restricted", "port-restricted",
     {"private_link": True, "client_fw": ("udp-3390-blocked",)}, "udp-direct"),
    ("client UDP blocked", "port-restricted", "port-restricted", {"client_fw": ("udp-blocked",)}, "udp-turn"),
    ("client TCP 443 only (UDP still open)", "port-restricted", "port-restricted",
     {"client_fw": ("tcp-443-only",)}, "udp-direct"),
    ("client UDP blocked + TCP 443 only (TURN over TLS)", "port-restricted", "port-restricted",
     {"client_fw": ("udp-blocked", "tcp-443-only")}, "udp-turn"),
]


def _nat_arg(n: str):
    return "double" if n == "double" else n


def cells(quick: bool = False) -> list[tuple]:
    """(client NAT, host NAT, scenario options, expected path, label) for every cell."""
    nats = ("open", "port-restricted", "symmetric") if quick else NATS
    out = [(c, h, {}, expected_path(c, h), f"{c} / {h}") for c in nats for h in nats if h != "double"]
    return out + [(c, h, kw, exp, label) for label, c, h, kw, exp in SPECIALS]


def run_cell(client: str, host: str, options: dict) -> dict:
    """One cell: a held session with packet capture. The session's own report gives the
    path; check_capture() says whether the packets agree."""
    from .scenario import check_capture, run_captured, summarize
    try:
        info, phases, addrs = run_captured(_nat_arg(client), _nat_arg(host), **options)
    except Exception as exc:  # one broken cell must not stop the matrix
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    r = summarize(info)
    r["capture_problems"] = check_capture(info["transport"], phases, addrs)
    r["capture_after_upgrade"] = phases[-1]
    return r


def run_matrix(quick: bool = False, progress: bool = True) -> list[dict]:
    todo = cells(quick)
    out = []
    for i, (c, h, kw, exp, label) in enumerate(todo, 1):
        t = time.monotonic()
        r = run_cell(c, h, kw)
        r.pop("client_log", None)
        r.pop("history", None)
        cell = {"label": label, "client_nat": c, "host_nat": h, "options": {k: list(v) if isinstance(v, tuple) else v
                                                                              for k, v in kw.items()},
                "expected": exp, "path": r.get("path"), "ok": r.get("ok", False),
                "time_to_udp_ms": r.get("time_to_udp_ms"), "setup_ms": r.get("setup_ms"),
                "echo_rtt_p50_ms": r.get("echo_rtt_p50_ms"),
                "candidates": [(r.get("local_candidate") or {}).get("type"),
                               (r.get("remote_candidate") or {}).get("type")],
                "capture_problems": r.get("capture_problems"),
                "error": r.get("error"), "seconds": round(time.monotonic() - t, 1)}
        cell["match"] = cell["path"] == exp and not cell["capture_problems"]
        out.append(cell)
        if progress:
            print(f"[{i}/{len(todo)}] {label:<40} -> {cell['path']!s:<12} expected {exp:<12}"
                  f"{'' if cell['match'] else '  MISMATCH'}"
                  f"{'  capture: ' + '; '.join(cell['capture_problems']) if cell['capture_problems'] else ''}"
                  f"  ({cell['seconds']}s)", flush=True)
    return out


def write_reports(cells: list[dict], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "matrix.json"), "w") as f:
        json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cells": cells}, f, indent=1)
    nats = [n for n in NATS if any(c["client_nat"] == n and not c["options"] for c in cells)]
    hosts = [n for n in nats if n != "double"]
    grid = {(c["client_nat"], c["host_nat"]): c for c in cells if not c["options"]}
    lines = ["# Fallback-behaviour matrix", "",
             "Rows: client site NAT; columns: host site NAT. Cell: path taken (time to UDP).",
             "Each cell is checked two ways: the session's own report, and scapy captures on the",
             "client's LAN link after the upgrade (DTLS to host:3390 for managed, DTLS to the host",
             "site for direct, traffic to the TURN address for turn; no session bytes via the gateway).",
             "A cell marked ✗ differs from the expected path or the packets disagree.", "",
             "| client \\ host | " + " | ".join(hosts) + " |", "|---" * (len(hosts) + 1) + "|"]
    for c in nats:
        row = []
        for h in hosts:
            cell = grid.get((c, h))
            if cell is None:
                row.append("")
                continue
            t = f" ({cell['time_to_udp_ms']:.0f} ms)" if cell["time_to_udp_ms"] else ""
            row.append(f"{cell['path']}{t}{'' if cell['match'] else ' ✗ expected ' + cell['expected']}")
        lines.append(f"| **{c}** | " + " | ".join(row) + " |")
    lines += ["", "| special case | path | expected | time to UDP |", "|---|---|---|---|"]
    for cell in cells:
        if cell["options"]:
            lines.append(f"| {cell['label']} | {cell['path']} | {cell['expected']} | "
                         f"{cell['time_to_udp_ms'] or '-'} |")
    with open(os.path.join(out_dir, "matrix.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _png(cells, nats, hosts, grid, os.path.join(out_dir, "matrix.png"))


def _png(cells, nats, hosts, grid, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"udp-managed": "#2ca02c", "udp-direct": "#98df8a", "udp-turn": "#ffbb78", "tcp-relay": "#ff9896",
              None: "#dddddd"}
    fig, ax = plt.subplots(figsize=(1.9 * len(hosts) + 2, 0.8 * len(nats) + 1.5))
    for i, c in enumerate(nats):
        for j, h in enumerate(hosts):
            cell = grid.get((c, h))
            if cell is None:
                continue
            ax.add_patch(plt.Rectangle((j, len(nats) - 1 - i), 1, 1, color=colors.get(cell["path"], "#dddddd"),
                                       ec="white" if cell["match"] else "red", lw=3 if not cell["match"] else 1))
            t = f"\n{cell['time_to_udp_ms']:.0f} ms" if cell["time_to_udp_ms"] else ""
            ax.text(j + 0.5, len(nats) - 0.5 - i, f"{cell['path']}{t}", ha="center", va="center", fontsize=8)
    ax.set_xlim(0, len(hosts))
    ax.set_ylim(0, len(nats))
    ax.set_xticks([j + 0.5 for j in range(len(hosts))], hosts, fontsize=8)
    ax.set_yticks([len(nats) - 0.5 - i for i in range(len(nats))], nats, fontsize=8)
    ax.set_xlabel("host site NAT")
    ax.set_ylabel("client site NAT")
    ax.set_title("Path per NAT pair (red border: differs from expectation)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.matrix")
    p.add_argument("--quick", action="store_true", help="open/port-restricted/symmetric only")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args(argv)
    cells = run_matrix(args.quick)
    write_reports(cells, args.out)
    bad = [c for c in cells if not c["match"]]
    print(f"{len(cells) - len(bad)}/{len(cells)} cells as expected; reports in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
