"""Per-path, per-network-profile benchmark inside the netns lab (issues #5 and #13).

    python -m benchmarks run --suite quick --only lab_paths      # ~3 min, CI smoke run
    python -m benchmarks.lab_paths --suite full [--paths ...] [--profiles ...]
    python -m benchmarks.lab_paths --targets-markdown benchmarks/results/lab_paths_full.json [--issue '#13']
    python -m benchmarks.lab_paths --markdown benchmarks/results/lab_paths_full.json

One lab (port-restricted NAT at both sites, a private link between them), the real gateway,
coturn and ``shortpath host`` processes (netns_lab.scenario.start_stack), and one client
process per path in the client namespace (benchmarks/lab_peer.py). Paths, side by side:

==============  =====================================================================
raw-udp         plain UDP datagrams between the two namespaces (over the private link);
                no background stream: the Python-stack floor for datagrams
raw-tls         TLS over one TCP connection between the same namespaces (private link)
tcp-relay       a shortpath session with Shortpath off (client and host via the gateway);
                the relay's TCP legs use the machine's default congestion control (BBR here)
tcp-relay-cubic the same with host TCP CUBIC: while its client starts, the client, core
                (gateway) and host namespaces default to CUBIC (``Lab.set_tcp_congestion``,
                which also allows CUBIC machine-wide for the time and restores both after),
                so its connection to the gateway, the gateway's accepted socket and the
                host's data leg for the session are CUBIC; the next paths get BBR again.
                ``ss`` in those namespaces is read once the client is up and what each leg
                uses is in the JSON (``paths.tcp-relay-cubic.tcp_cc``; ``at_end`` rechecks the
                gateway's sockets after the last profile). A leg that is not CUBIC, or a kernel
                that refuses CUBIC, is an error of the path, never a silent BBR measurement.
                In the full suite only (the quick, CI suite keeps its paths and run time).
udp-managed     shortpath, client policy managed only (host UDP 3390 over the private link)
udp-direct      shortpath, direct only: the private link carries no UDP but 3390 and the
                bench port (netns_lab.profiles.isolate_private_link), so ICE must hole-punch
                both NATs with STUN (server-reflexive pair)
udp-turn        shortpath, TURN only (relay candidates on coturn, UDP)
aiortc-default  our ICE+DTLS with aiortc's stock SCTP (no tuning), stock data channels,
                hole-punched like udp-direct
==============  =====================================================================

Profiles (netns_lab/profiles.py) impair the client-lan link, which every path crosses, in
both directions. Measurements per path and profile:

* interactive: 64-byte events at 100 Hz client -> host while the host streams 30 frames/s of
  20-60 KB to the client in the same session; every event's one-way latency from the shared
  CLOCK_MONOTONIC, on four channels: reliable (0), datagram (1), datagram with redundancy
  (2, benchmarks.lab_peer.RedundantEvents: k previous events per datagram, each datagram sent
  twice a few ms apart) and, on shortpath paths, the session's built-in redundant events (4,
  Session.send_event with the same k and copies). Reported: delivery ratio, share within one-way delay + 10 ms,
  p50/p99/p99.9/max of delivered events.
* bulk: 60 KB reliable messages client -> host for a fixed time (raw-udp: 1200-byte
  datagrams, what arrives counts), Mbit/s; in the full suite 3 rounds of 3 s per path, the
  paths taking turns, and the median round reported (every round's figure is kept).
* small-message RTT on the clean link: 64-byte reliable ping (raw-udp: datagram ping).

Targets (``targets()``), each judged from the run's own rows: met True/False, None (shown "not
measured") when a row it needs was not run. A shortpath row measured after the session fell back
to another transport never counts as met, and a UDP path that errored where it was due counts as
missed. Issue #13 ("relay" = tcp-relay, and also tcp-relay-cubic when that path was run):

* frames delivered (the reliable row's ``frames``) on every UDP path >= every relay's, in every
  profile run;
* frame latency p95 on every UDP path <= every relay's at rtt40-loss1, rtt40-loss2, rtt40-loss5;
* loss tolerance: a UDP path's bulk at rtt40-loss2 >= 0.7 x the same path's bulk at rtt40;
* distance tolerance: a UDP path's bulk at rtt40 >= 0.8 x the same path's bulk at clean;
* input at rtt40-loss2: events sent with the session's built-in redundancy (channel 4,
  Session.send_event) p99 <= tcp-relay's reliable p99 / 3 with none lost; ``reliable|red`` (the
  application's own redundancy, first copy of channels 0 and 2) the same; datagrams (with
  redundancy) within one-way + 10 ms >= 99.9 % on udp-managed and udp-direct;
* clean-link bulk of every UDP path >= 1.5 x aiortc-default's.

Kept from issue #5 (marked so): reliable p99 <= tcp-relay's / 3 and udp-turn's datagrams at
rtt40-loss2, bulk >= aiortc-default in every profile, clean RTT p50 <= 3 x raw-udp. The fairness
target of #13 is benchmarks/fairness.py's. ``--targets-markdown JSON`` prints a saved run's
targets, judged again with these rules, as a Markdown table (target, value, reference, met).

Writes benchmarks/results/lab_paths_{suite}.json and .png (event-latency CDF per profile and a
throughput bar chart) and lab_paths_{suite}_frames.png (frames delivered per profile and path,
frame-latency CDF per profile, bulk throughput over time in one lossy profile). The machine is
shared and small: compare rows of one run as ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from .common import RESULTS, lab_skip_reason, percentile, save, table

PATHS = ("raw-udp", "raw-tls", "tcp-relay", "tcp-relay-cubic", "udp-managed", "udp-direct", "udp-turn",
         "aiortc-default")
UDP_PATHS = ("udp-managed", "udp-direct", "udp-turn")
#: Shortpath sessions with Shortpath off: the session's transport is "tcp-relay" on both.
RELAY_PATHS = ("tcp-relay", "tcp-relay-cubic")
#: The namespaces that terminate a relayed session's TCP legs: the client (client -> gateway),
#: the core, where the gateway runs (its end of both legs), and the host (its data leg).
RELAY_TCP_NODES = ("client", "core", "host")
COLORS = dict(zip(PATHS, ["#7f7f7f", "#8c564b", "#d62728", "#e377c2", "#2ca02c", "#1f77b4", "#ff7f0e",
                          "#9467bd"]))
CHANNELS = {0: "reliable", 1: "datagram", 2: "datagram+red", 3: "reliable|red", 4: "events"}
# Channel 4 is the session's built-in redundancy (Session.send_event with REDUNDANCY's k and
# copies; shortpath paths only): the same events again, each EVENTS frame repeating the last k
# and sent ``copies`` times 2 ms apart, delivered once and in order by Session.recv_event().
# Channel 3 is not sent: it is computed from channels 0 and 2, which carry the same events
# (same sequence numbers and stamps). An application that sends each event on the reliable
# channel *and* redundantly as datagrams, and acts on whichever copy arrives first, gets
# reliable delivery at the latency of the first copy (events may then arrive out of order;
# input events carry their sequence number, so stale ones can be discarded).

# What each path carries: peer implementation, shortpath modes, channels, background frames.
SPEC = {
    "raw-udp": {"peer": "raw-udp", "reliable": False, "datagram": True, "frames": False},
    "raw-tls": {"peer": "raw-tls", "reliable": True, "datagram": False, "frames": True},
    "tcp-relay": {"peer": "shortpath", "modes": "none", "reliable": True, "datagram": True, "frames": True},
    # the same, but the relay's TCP legs are created while the lab's namespaces default to CUBIC
    "tcp-relay-cubic": {"peer": "shortpath", "modes": "none", "reliable": True, "datagram": True, "frames": True,
                        "tcp_cc": "cubic"},
    "udp-managed": {"peer": "shortpath", "modes": "managed", "reliable": True, "datagram": True, "frames": True},
    "udp-direct": {"peer": "shortpath", "modes": "direct", "reliable": True, "datagram": True, "frames": True},
    "udp-turn": {"peer": "shortpath", "modes": "turn", "reliable": True, "datagram": True, "frames": True},
    "aiortc-default": {"peer": "aiortc", "reliable": True, "datagram": True, "frames": True},
}

#: Frames the host may have unacknowledged before it skips one (see bench_app.bench_mode). At
#: 2 % loss a UDP path carries ~2 Mbit/s: 3 frames (~120 KB) were ~0.5 s of queue, and the
#: session's liveness probes, in the same SCTP FIFO, came back later than its 0.6 s failover
#: threshold (the sessions fell back to the relay); 2 frames keep that queue near 0.3 s.
FRAMES_INFLIGHT = 2

#: Datagram redundancy used on channel 2 (see lab_peer.RedundantEvents for what it costs).
REDUNDANCY = {"k": 2, "copies": 2, "spacing_ms": 3.0}

SUITES = {
    # quick (CI): every path but the CUBIC relay, which would add ~15 % to the run
    "quick": {"paths": [p for p in PATHS if p != "tcp-relay-cubic"], "profiles": ["clean", "rtt40-loss2"],
              "events_s": 4.0, "bulk_s": 2.0, "rtt_n": 100, "grace_s": 1.0},
    "full": {"paths": list(PATHS),
             "profiles": ["clean", "rtt40", "rtt40-loss1", "rtt40-loss2", "rtt40-loss5", "rtt40-burst",
                          "rtt40-jitter10", "bw10"],
             "events_s": 12.0, "bulk_s": 3.0, "bulk_rounds": 3, "rtt_n": 300, "grace_s": 1.5},
}




# ---------------------------------------------------------------- running
def _client_argv(name: str, lab, stack: dict, out_dir: Path, server_ca: Path) -> list[str]:
    from netns_lab import plan
    spec = SPEC[name]
    argv = [sys.executable, "-m", "benchmarks.lab_peer", "client", "--path", spec["peer"], "--name", name,
            "--out-dir", str(out_dir)]
    if spec["peer"] == "shortpath":
        argv += ["--gateway", f"{plan.SERVICES['gateway']}:443", "--token-file", str(stack["work"] / "user.tok"),
                 "--ca", str(stack["state"] / "gateway.crt"), "--turn-ca", stack["turn_cert"],
                 "--modes", spec["modes"]]
    else:
        argv += ["--server", lab.addr("host"), "--server-ca", str(server_ca), "--local", lab.addr("client"),
                 "--stun", f"{plan.SERVICES['turn']}:3478"]
    return argv


class CongestionControlError(RuntimeError):
    """A path's relay connections did not get the congestion control it asked for."""


def _relay_connections(lab, before: dict | None = None) -> dict:
    """Established TCP connections in RELAY_TCP_NODES ({node: [{"local", "peer", "cc"}]}); with
    ``before`` (an earlier result), only those that are new since."""
    out = {}
    for n in RELAY_TCP_NODES:
        conns = lab.tcp_connections(n)
        if before is not None:
            old = {(c["local"], c["peer"]) for c in before.get(n, ())}
            conns = [c for c in conns if (c["local"], c["peer"]) not in old]
        out[n] = conns
    return out


def _tcp_cc_report(lab, new: dict, wanted: str | None) -> dict:
    """Which congestion control a relay path's own TCP connections use, by leg. The gateway's
    socket to the client matters most: the lossy link is the client's."""
    from netns_lab import plan
    gw = f"{plan.SERVICES['gateway']}:"
    legs = {"gateway->client": [c for c in new.get("core", []) if c["local"].startswith(gw)
                                and c["peer"].startswith(lab.addr("client-public") + ":")],
            "gateway->host": [c for c in new.get("core", []) if c["peer"].startswith(lab.addr("host-public") + ":")],
            "client->gateway": [c for c in new.get("client", []) if c["peer"].startswith(gw)],
            "host->gateway": [c for c in new.get("host", []) if c["peer"].startswith(gw)]}
    return {"wanted": wanted, **{k: sorted({str(c["cc"]) for c in v}) for k, v in legs.items()},
            "connections": new}


def _check_tcp_cc(rep: dict) -> None:
    """Raise CongestionControlError unless every leg found uses ``rep["wanted"]`` (and the
    gateway->client leg was found at all)."""
    want = rep["wanted"]
    if not rep["gateway->client"]:
        raise CongestionControlError(f"found no new gateway->client TCP connection to check for {want}: "
                                     f"{rep['connections']}")
    wrong = {k: v for k, v in rep.items() if "->" in k and v and v != [want]}
    if wrong:
        raise CongestionControlError(f"relay TCP connections do not use {want}: {wrong}")


def _op(proc, cmd: dict, timeout: float) -> dict:
    mark = proc.mark()
    proc.send_line(json.dumps(cmd))
    line = proc.wait_for_line(r"^RESULT ", timeout, since=mark)
    return json.loads(Path(line.split(" ", 1)[1]).read_text())


def measure(paths=PATHS, profiles=("clean", "rtt40-loss2"), *, events_s=4.0, bulk_s=2.0, rtt_n=100,
            grace_s=1.0, redundancy=REDUNDANCY, bulk=True, rtt=True, frames_inflight=FRAMES_INFLIGHT,
            frames=True, bulk_rounds=1, progress=print) -> dict:
    """Build the lab, run every (profile, path) measurement, tear everything down.

    Returns raw results: {"paths": {name: {"ready": ..., "rtt": ..., "profiles": {p: {"events",
    "bulk"}}}}, "profiles": {...}}. Analysis is :func:`analyse`."""
    from netns_lab import Lab
    from netns_lab.profiles import PROFILES, apply_profile, isolate_private_link, packet_sized_segments
    from netns_lab.scenario import start_stack
    from .lab_peer import PORT_UDP

    t_start = time.monotonic()
    out: dict = {"frames_inflight": frames_inflight, "paths": {}, "profiles": {p: {"description": PROFILES[p].description,
                                               "one_way_ms": PROFILES[p].one_way_ms,
                                               "params": PROFILES[p].params} for p in profiles},
                 "redundancy": redundancy, "events_s": events_s, "bulk_s": bulk_s}

    def say(msg: str) -> None:
        if progress:
            progress(f"  [{time.monotonic() - t_start:6.1f}s] {msg}")

    with Lab(client_nat="port-restricted", host_nat="port-restricted", private_link=True) as lab:
        stack = start_stack(lab, host_app="benchmarks.bench_app:host_handler")
        isolate_private_link(lab, keep_udp_ports=(3390, PORT_UDP))
        packet_sized_segments(lab)
        work = Path(lab.workdir) / "bench"
        work.mkdir()
        from netns_lab import plan
        lab.spawn("host", [sys.executable, "-m", "benchmarks.lab_peer", "serve", "--bind", lab.addr("host"),
                           "--workdir", str(work), "--stun", f"{plan.SERVICES['turn']}:3478"],
                  ready=r"^READY", ready_timeout=20)
        say(f"lab {lab.run_id} (namespaces nl-{lab.run_id}-*), gateway, coturn, host and bench peer up")
        procs = {}
        for name in paths:
            entry = out["paths"][name] = {"spec": SPEC[name], "profiles": {}}
            cc = SPEC[name].get("tcp_cc")
            p, stage = None, "congestion control"
            try:
                # tcp-relay-cubic: every namespace that terminates the relay's TCP legs defaults
                # to CUBIC while this client starts (its connection to the gateway and the host's
                # data leg are made then); the previous default is back for the next path.
                with (lab.set_tcp_congestion(RELAY_TCP_NODES, cc) if cc else contextlib.nullcontext()):
                    stage = "did not start"
                    before = _relay_connections(lab) if name in RELAY_PATHS else None
                    p = lab.spawn("client", _client_argv(name, lab, stack, work, work / "bench-peer.crt"),
                                  stdin=True, ready=r"^READY ", ready_timeout=45)
                    ready = json.loads(p.wait_for_line(r"^READY ", 1).split(" ", 1)[1])
                    if before is not None:
                        entry["tcp_cc"] = _tcp_cc_report(lab, _relay_connections(lab, before), cc)
                        stage = "congestion control"
                        if cc:
                            _check_tcp_cc(entry["tcp_cc"])
            except Exception as exc:  # noqa: BLE001 -- a path that cannot start is reported
                if p is not None:
                    lab.stop(p)
                entry["error"] = f"{stage}: {type(exc).__name__}: {str(exc)[-800:]}"
                say(f"{name:<15} FAILED to start ({stage})")
                continue
            entry["ready"] = ready
            procs[name] = p
            say(f"{name:<15} up on {ready['transport']} after {ready['setup_s']:.1f}s"
                + (f"; relay TCP gateway->client {','.join(entry['tcp_cc']['gateway->client'])}"
                   if "tcp_cc" in entry else ""))
        if rtt:
            apply_profile(lab, "clean")
            for name, p in procs.items():
                try:
                    out["paths"][name]["rtt"] = _op(p, {"op": "rtt", "n": rtt_n,
                                                        "datagram": not SPEC[name]["reliable"]}, 120)
                except Exception as exc:  # noqa: BLE001
                    out["paths"][name]["rtt"] = {"ok": False, "error": str(exc)[-500:]}
            say("clean-link RTT done")
        for prof in profiles:
            apply_profile(lab, prof)
            time.sleep(0.3)
            for name, p in list(procs.items()):
                spec = SPEC[name]
                res = out["paths"][name]["profiles"][prof] = {}
                try:
                    res["events"] = _op(p, {"op": "events", "seconds": events_s, "rate": 100,
                                            "reliable": spec["reliable"], "datagram": spec["datagram"],
                                            "frames": spec["frames"] and frames,
                                            "red": redundancy if spec["datagram"] else None,
                                            "grace": grace_s, "frames_inflight": frames_inflight},
                               events_s + 150)
                except Exception as exc:  # noqa: BLE001 -- the process died or hung: drop the path
                    res["error"] = str(exc)[-800:]
                    lab.stop(p)
                    del procs[name]
                    say(f"{prof:<15} {name:<15} FAILED: {str(exc)[-200:]}")
                    continue
                ev = res["events"]
                say(f"{prof:<15} {name:<15} events on {ev.get('transport_after')}"
                    f"{' (path changed)' if ev.get('path_changes') else ''}")
            # Bulk in rounds that take turns across the paths (a, b, c, a, b, c, ...): a burst of
            # load from elsewhere on this shared machine then hits every path about equally,
            # and the median round is reported (bulk_rounds()).
            rounds: dict = {name: [] for name in procs}
            for _ in range(bulk_rounds if bulk else 0):
                for name, p in list(procs.items()):
                    try:
                        rounds[name].append(_op(p, {"op": "bulk", "seconds": bulk_s,
                                                    "datagram": not SPEC[name]["reliable"]}, bulk_s + 150))
                    except Exception as exc:  # noqa: BLE001 -- the process died or hung: drop the path
                        out["paths"][name]["profiles"][prof]["error"] = str(exc)[-800:]
                        lab.stop(p)
                        del procs[name]
                        say(f"{prof:<15} {name:<15} bulk FAILED: {str(exc)[-200:]}")
            for name, got in rounds.items():
                if got and name in procs:
                    res = out["paths"][name]["profiles"][prof]
                    res["bulk"] = median_round(got)
                    say(f"{prof:<15} {name:<15} bulk {res['bulk'].get('mbit_s', float('nan')):.1f} Mbit/s"
                        + (f" (rounds {', '.join(f'{r:.1f}' for r in res['bulk']['rounds_mbit_s'])})"
                           if len(got) > 1 else ""))
        for name, p in procs.items():
            tc = out["paths"][name].get("tcp_cc")
            if tc:     # are the connections checked at start still the ones in use?
                try:
                    now = {(c["local"], c["peer"]): c["cc"] for c in lab.tcp_connections("core")}
                    tc["at_end"] = {f"{c['local']} {c['peer']}": now.get((c["local"], c["peer"]), "closed")
                                    for c in tc["connections"].get("core", [])}
                except Exception as exc:  # noqa: BLE001
                    tc["at_end"] = {"error": str(exc)[-300:]}
        for p in procs.values():
            try:
                p.send_line(json.dumps({"op": "quit"}))
            except OSError:
                pass
        lab.clear_impairments()
    out["seconds"] = round(time.monotonic() - t_start, 1)
    return out


def median_round(results: list[dict]) -> dict:
    """One bulk figure from several rounds of one path: the round with the median Mbit/s (the
    lower middle one of an even count), plus every round's figure (``rounds_mbit_s``) and every
    transport any round was on (a fallback in any round shows)."""
    ok = [r for r in results if r.get("ok", True) and r.get("mbit_s") is not None]
    if not ok:
        return results[-1]
    pick = dict(sorted(ok, key=lambda r: r["mbit_s"])[(len(ok) - 1) // 2])
    pick["rounds_mbit_s"] = [round(r["mbit_s"], 2) for r in results if r.get("mbit_s") is not None]
    seen = set(pick.get("transports_seen") or ())
    for r in results:
        seen |= set(r.get("transports_seen") or ())
    pick["transports_seen"] = sorted(seen)
    return pick


# ---------------------------------------------------------------- analysis
def _channel_events(ev: dict, channel: int) -> tuple[int, list, list]:
    """(events sent, seqs, latencies in us) of one channel; channel 3 = first of 0 and 2."""
    sent = ev["sent"]
    if channel == 3:
        n0, n2 = sent.get("0", 0), sent.get("2", 0)
        if not n0 or not n2:
            return 0, [], []
        best: dict = {}
        for ch in ("0", "2"):
            seqs, lats = ev["host"]["events"].get(ch, [[], []])
            for s_, l_ in zip(seqs, lats):
                if s_ not in best or l_ < best[s_]:
                    best[s_] = l_
        return min(n0, n2), list(best), list(best.values())
    seqs, lats = ev["host"]["events"].get(str(channel), [[], []])
    return sent.get(str(channel), 0), seqs, lats


def event_stats(ev: dict, channel: int, one_way_ms: float) -> dict | None:
    sent, seqs, lats = _channel_events(ev, channel)
    if not sent:
        return None
    lat_ms = sorted(l / 1000 for s, l in zip(seqs, lats) if s < sent)
    deadline = one_way_ms + 10.0
    out = {"sent": sent, "delivered": len(lat_ms), "delivery_ratio": round(len(lat_ms) / sent, 5),
           "deadline_ms": deadline,
           "within_deadline": round(sum(1 for x in lat_ms if x <= deadline) / sent, 5),
           "p50_ms": round(percentile(lat_ms, 50), 2), "p99_ms": round(percentile(lat_ms, 99), 2),
           "p999_ms": round(percentile(lat_ms, 99.9), 2), "max_ms": round(lat_ms[-1], 2) if lat_ms else None,
           "min_ms": round(lat_ms[0], 2) if lat_ms else None,
           "duplicates": ev["host"]["dups"].get(str(channel), 0)}
    if channel in (1, 2):
        out["wire_bytes_per_event"] = round(ev["datagram_bytes"][str(channel)] / sent, 1)
    return out


def _stall_fields(ev: dict) -> dict:
    """The longest event-loop stall and GC pause of each peer during the events run
    (benchmarks/stallprobe.py; ms), where the peer reported them."""
    out = {}
    for who, rep in (("host", (ev.get("host") or {}).get("stalls")), ("client", ev.get("client_stalls"))):
        if rep:
            out[f"{who}_max_stall_ms"] = rep["max_stall_ms"]
            out[f"{who}_stalls_over_5ms"] = rep["stall_count"]
            out[f"{who}_max_gc_ms"] = rep["max_gc_ms"]
    return out


def analyse(raw: dict) -> dict:
    rows, cdf = [], {}
    for prof, pinfo in raw["profiles"].items():
        for name, pr in raw["paths"].items():
            res = pr["profiles"].get(prof)
            if not res or "events" not in res or not res["events"].get("ok"):
                rows.append({"profile": prof, "path": name, "error": (res or {}).get("error")
                             or (res or {}).get("events", {}).get("error") or pr.get("error", "not run")})
                continue
            ev = res["events"]
            for ch in CHANNELS:
                st = event_stats(ev, ch, pinfo["one_way_ms"])
                if st is None:
                    continue
                _, seqs, lats = _channel_events(ev, ch)
                cdf[(prof, name, ch)] = ([l / 1000 for s, l in zip(seqs, lats) if s < st["sent"]], st["sent"])
                rows.append({"profile": prof, "path": name, "channel": CHANNELS[ch],
                             "transport": ev["transport_after"], "path_changes": ev["path_changes"],
                             "transports_seen": ev.get("transports_seen"),
                             "frames": ev["frames"] if ch == 0 else None,
                             "frames_skipped": ev["host"].get("frames", {}).get("skipped") if ch == 0 else None,
                             "frame_p50_ms": round(percentile(ev["frame_latency_ms"], 50), 1)
                             if ch == 0 and ev["frame_latency_ms"] else None,
                             "frame_p95_ms": round(percentile(ev["frame_latency_ms"], 95), 1)
                             if ch == 0 and ev["frame_latency_ms"] else None,
                             **(_stall_fields(ev) if ch == 0 else {}), **st})
            b = res.get("bulk")
            if b and not b.get("ok"):
                rows.append({"profile": prof, "path": name, "error": f"bulk: {b.get('error')}"})
            if b and b.get("ok"):
                rows.append({"profile": prof, "path": name, "channel": "bulk", "transport": b["transport_after"],
                             "transports_seen": b.get("transports_seen"),
                             "mbit_s": round(b["mbit_s"], 2), "received_bytes": b["received_bytes"],
                             "sent_bytes": b["sent_bytes"]})
    rtt = {}
    for name, pr in raw["paths"].items():
        r = pr.get("rtt")
        if r and r.get("ok") and r["rtt_ms"]:
            rtt[name] = {"n": len(r["rtt_ms"]), "lost": r["lost"], "p50_ms": round(percentile(r["rtt_ms"], 50), 3),
                         "p99_ms": round(percentile(r["rtt_ms"], 99), 3)}
    return {"rows": rows, "rtt": rtt, "targets": targets(rows, rtt), "_cdf": cdf}


def _row(rows, prof, path, channel):
    return next((r for r in rows if r["profile"] == prof and r["path"] == path and r.get("channel") == channel), None)


def _off_path(*rows) -> str | None:
    """A note when a shortpath row was measured on another transport (it fell back)."""
    for r in rows:
        if r is None or r["path"] not in UDP_PATHS + RELAY_PATHS:
            continue
        seen = set(r.get("transports_seen") or ()) | {r.get("transport")}
        if seen != {"tcp-relay" if r["path"] in RELAY_PATHS else r["path"]}:
            return f"{r['path']} was on {'+'.join(sorted(seen))} during {r['profile']} {r.get('channel')}"
    return None


def _judge(t: dict, ok: bool | None, *rows) -> dict:
    note = _off_path(*rows)
    if note:
        t["note"] = note
        ok = False if ok is not None else None
    t["met"] = ok
    return t


#: Profiles where UDP frame latency p95 must not exceed the relay's (issue #13).
P95_PROFILES = ("rtt40-loss1", "rtt40-loss2", "rtt40-loss5")
LOSSY = "rtt40-loss2"


def _error(rows, prof, path) -> str | None:
    """The error of a path in a profile (it did not start, died, or an operation failed)."""
    return next((str(r["error"]) for r in rows if r["profile"] == prof and r["path"] == path and "error" in r),
                None)


def _missed_if_errored(t: dict, rows, prof: str, path: str) -> dict:
    """A UDP path that errored where it should have been measured missed the target (not n/a)."""
    err = _error(rows, prof, path) if t["met"] is None else None
    if err:
        t["met"] = False
        t["note"] = f"{path} at {prof}: {err[-200:]}"
    return t


def _relay_refs(rows, prof: str, channel: str = "reliable") -> dict:
    """{relay path: its row} for the relay paths run in ``prof`` (tcp-relay, tcp-relay-cubic)."""
    return {r: row for r in RELAY_PATHS if (row := _row(rows, prof, r, channel)) is not None}


def _ratio_target(rows, path: str, prof: str, base_prof: str, factor: float, what: str) -> dict:
    b, base = _row(rows, prof, path, "bulk"), _row(rows, base_prof, path, "bulk")
    t = {"target": f"{path}: {what}: bulk at {prof} >= {factor:g} x bulk at {base_prof}", "issue": "#13",
         "value": b and b["mbit_s"], "reference": base and base["mbit_s"], "unit": "Mbit/s"}
    ok = None
    if b is not None and base is not None:
        t["ratio"] = round(b["mbit_s"] / base["mbit_s"], 3) if base["mbit_s"] else None
        ok = b["mbit_s"] >= factor * base["mbit_s"]
    t = _judge(t, ok, b, base)
    return _missed_if_errored(_missed_if_errored(t, rows, prof, path), rows, base_prof, path)


def targets(rows: list[dict], rtt: dict) -> list[dict]:
    """The targets, each judged from this run's own rows: met True/False, None when not
    measured. A shortpath row measured after the session fell back to another transport never
    counts as met; a UDP path that errored where it was due counts as missed. "issue" says
    where a target comes from: #13 (loss/distance tolerance, the relay comparison with BBR and
    CUBIC) or #5 (the first lab_paths round, kept)."""
    out = []
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    # frames delivered: every UDP path >= every relay path run, in every profile
    for prof in profiles:
        refs = {k: r for k, r in _relay_refs(rows, prof).items() if r.get("frames") is not None}
        names = " and ".join(refs) or "tcp-relay"
        for p in UDP_PATHS:
            u = _row(rows, prof, p, "reliable")
            t = {"target": f"{p}: frames delivered >= {names} at {prof}", "issue": "#13",
                 "value": u and u.get("frames"), "reference": max((r["frames"] for r in refs.values()), default=None),
                 "unit": "frames"}
            if len(refs) > 1:
                t["reference_by_path"] = {k: r["frames"] for k, r in refs.items()}
            ok = None if u is None or u.get("frames") is None or not refs \
                else all(u["frames"] >= r["frames"] for r in refs.values())
            out.append(_missed_if_errored(_judge(t, ok, u, *refs.values()), rows, prof, p))
    # frame latency p95 at 40 ms + 1/2/5 % loss: UDP <= every relay path run
    for prof in (q for q in P95_PROFILES if q in profiles):
        refs = {k: r for k, r in _relay_refs(rows, prof).items() if r.get("frame_p95_ms") is not None}
        # (a relay row without frames, or from an older result without the field: not measured)
        names = " and ".join(refs) or "tcp-relay"
        for p in UDP_PATHS:
            u = _row(rows, prof, p, "reliable")
            t = {"target": f"{p}: frame latency p95 <= {names} at {prof}", "issue": "#13",
                 "value": u and u.get("frame_p95_ms"),
                 "reference": min((r["frame_p95_ms"] for r in refs.values()), default=None), "unit": "ms"}
            if len(refs) > 1:
                t["reference_by_path"] = {k: r["frame_p95_ms"] for k, r in refs.items()}
            ok = None
            if u is not None and refs:
                if u.get("frame_p95_ms") is None and u.get("frames") == 0:
                    ok, t["note"] = False, f"{p} delivered no frames at {prof}"
                elif u.get("frame_p95_ms") is None:
                    ok = None
                else:
                    ok = all(u["frame_p95_ms"] <= r["frame_p95_ms"] for r in refs.values())
            out.append(_missed_if_errored(_judge(t, ok, u, *refs.values()), rows, prof, p))
    # loss and distance tolerance, per UDP path (the same path's own bulk as the reference)
    for p in UDP_PATHS:
        out.append(_ratio_target(rows, p, LOSSY, "rtt40", 0.7, "loss tolerance"))
        out.append(_ratio_target(rows, p, "rtt40", "clean", 0.8, "distance tolerance"))
    # clean-link bulk against stock aiortc's data channel
    base = _row(rows, "clean", "aiortc-default", "bulk")
    for p in UDP_PATHS:
        b = _row(rows, "clean", p, "bulk")
        t = {"target": f"{p}: clean-link bulk >= 1.5 x aiortc-default", "issue": "#13", "value": b and b["mbit_s"],
             "reference": base and base["mbit_s"], "unit": "Mbit/s"}
        ok = None
        if b is not None and base is not None:
            t["ratio"] = round(b["mbit_s"] / base["mbit_s"], 3) if base["mbit_s"] else None
            ok = b["mbit_s"] >= 1.5 * base["mbit_s"]
        out.append(_missed_if_errored(_judge(t, ok, b), rows, "clean", p))
    # input events at 40 ms + 2 % loss
    relay = _row(rows, LOSSY, "tcp-relay", "reliable")
    for p in UDP_PATHS:
        red = _row(rows, LOSSY, p, "datagram+red")
        plain = _row(rows, LOSSY, p, "datagram")
        out.append(_judge({"target": f"{p}: datagram events within one-way+10 ms >= 99.9 % at {LOSSY} "
                                     "(with redundancy)", "issue": "#5" if p == "udp-turn" else "#13",
                           "value": red and red["within_deadline"], "reference": 0.999,
                           "without_redundancy": plain and plain["within_deadline"]},
                          None if red is None else red["within_deadline"] >= 0.999, red))
        rel = _row(rows, LOSSY, p, "reliable")
        out.append(_judge({"target": f"{p}: reliable p99 <= tcp-relay p99 / 3 at {LOSSY}", "issue": "#5",
                           "value": rel and rel["p99_ms"], "reference": relay and relay["p99_ms"], "unit": "ms"},
                          None if rel is None or relay is None else rel["p99_ms"] <= relay["p99_ms"] / 3,
                          rel, relay))
        evs = _row(rows, LOSSY, p, "events")
        out.append(_judge({"target": f"{p}: input events with the built-in redundancy (Session.send_event) "
                                     f"p99 <= tcp-relay reliable p99 / 3 at {LOSSY}, none lost", "issue": "#13",
                           "value": evs and evs["p99_ms"], "reference": relay and relay["p99_ms"], "unit": "ms",
                           "delivery_ratio": evs and evs["delivery_ratio"]},
                          None if evs is None or relay is None
                          else evs["p99_ms"] <= relay["p99_ms"] / 3 and evs["delivery_ratio"] >= 1.0,
                          evs, relay))
        hyb = _row(rows, LOSSY, p, "reliable|red")
        out.append(_judge({"target": f"{p}: reliable|red (reliable + redundant datagrams, first copy) p99 <= "
                                     f"tcp-relay reliable p99 / 3 at {LOSSY}", "issue": "#13",
                           "value": hyb and hyb["p99_ms"], "reference": relay and relay["p99_ms"], "unit": "ms"},
                          None if hyb is None or relay is None else hyb["p99_ms"] <= relay["p99_ms"] / 3,
                          hyb, relay))
    # first round (#5), kept
    for prof in sorted({r["profile"] for r in rows}):
        base = _row(rows, prof, "aiortc-default", "bulk")
        for p in UDP_PATHS:
            b = _row(rows, prof, p, "bulk")
            out.append(_judge({"target": f"{p}: bulk >= aiortc-default at {prof}", "issue": "#5",
                               "value": b and b["mbit_s"], "reference": base and base["mbit_s"], "unit": "Mbit/s"},
                              None if b is None or base is None else b["mbit_s"] >= base["mbit_s"], b))
    for p in UDP_PATHS:
        out.append({"target": f"{p}: clean RTT p50 <= 3 x raw-udp", "issue": "#5",
                    "value": rtt.get(p, {}).get("p50_ms"), "reference": rtt.get("raw-udp", {}).get("p50_ms"),
                    "unit": "ms", "met": None if p not in rtt or "raw-udp" not in rtt
                    else rtt[p]["p50_ms"] <= 3 * rtt["raw-udp"]["p50_ms"]})
    return out


# ---------------------------------------------------------------- output
def print_summary(an: dict) -> None:
    ev_cols = ["profile", "path", "channel", "transport", "delivery_ratio", "within_deadline", "p50_ms", "p99_ms",
               "p999_ms", "max_ms", "wire_bytes_per_event", "frames", "frames_skipped"]
    ev = [r for r in an["rows"] if r.get("channel") in CHANNELS.values()]
    print(table(ev, ev_cols))
    stall_cols = ["profile", "path", "host_max_stall_ms", "host_stalls_over_5ms", "host_max_gc_ms",
                  "client_max_stall_ms", "client_stalls_over_5ms", "client_max_gc_ms"]
    stalls = [r for r in ev if "host_max_stall_ms" in r or "client_max_stall_ms" in r]
    if stalls:
        print("event-loop stalls and GC pauses during the events run (benchmarks/stallprobe.py):")
        print(table(stalls, stall_cols))
    bulk = [r for r in an["rows"] if r.get("channel") == "bulk"]
    if bulk:
        print()
        print(table(bulk, ["profile", "path", "transport", "mbit_s", "received_bytes"]))
    errs = [r for r in an["rows"] if "error" in r]
    for r in errs:
        print(f"ERROR {r['profile']} {r['path']}: {str(r['error'])[-300:]}")
    if an["rtt"]:
        print()
        print(table([{"path": k, **v} for k, v in an["rtt"].items()], ["path", "n", "lost", "p50_ms", "p99_ms"]))
    print()
    for t in an["targets"]:
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
        extra = "".join(f" {k}={t[k]}" for k in ("reference", "reference_by_path", "ratio", "without_redundancy",
                                                 "note") if k in t)
        print(f"{mark} {t['target']}: {t['value']}{extra}")


def markdown(data: dict) -> str:
    """A compact Markdown table of a saved result (one line per profile and path)."""
    rows = data["rows"]
    lines = ["| profile | path | on | reliable p99 | dgram+red in OWD+10 ms (plain) | dgram+red p99 | "
             "reliable\\|red p99 | events p99 (built-in) | frames shown/skipped | frame p50 / p95 | bulk Mbit/s |",
             "|---" * 11 + "|"]
    for prof in data["raw"]["profiles"]:
        for name in PATHS:
            rel, red = _row(rows, prof, name, "reliable"), _row(rows, prof, name, "datagram+red")
            dg, hyb, b = _row(rows, prof, name, "datagram"), _row(rows, prof, name, "reliable|red"), \
                _row(rows, prof, name, "bulk")
            evs = _row(rows, prof, name, "events")
            any_row = rel or red or b
            if any_row is None:
                continue
            f = lambda r, k, fmt="{:.1f}": fmt.format(r[k]) if r and r.get(k) is not None else "-"  # noqa: E731
            on = "+".join(sorted(set(any_row.get("transports_seen") or ()) | {any_row.get("transport")}))
            if b and b.get("transports_seen") and set(b["transports_seen"]) != {any_row.get("transport")}:
                on += f" (bulk: {'+'.join(b['transports_seen'])})"
            lines.append(f"| {prof} | {name} | {on} | {f(rel, 'p99_ms')} | "
                         f"{f(red, 'within_deadline', '{:.2%}')} ({f(dg, 'within_deadline', '{:.2%}')}) | "
                         f"{f(red, 'p99_ms')} | {f(hyb, 'p99_ms')} | {f(evs, 'p99_ms')} | "
                         f"{(str(rel['frames']) + '/' + str(rel['frames_skipped'])) if rel else '-'} | "
                         f"{f(rel, 'frame_p50_ms')} / {f(rel, 'frame_p95_ms')} | {f(b, 'mbit_s')} |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def targets_markdown(data: dict, issue: str | None = None) -> str:
    """The targets of a saved result as a Markdown table (target, value, reference, met);
    ``issue="#13"`` keeps only that issue's targets. The targets are judged again from the saved
    rows (the current rules, as ``--rejudge`` does)."""
    lines = ["| target | value | reference | met |", "|---|---|---|---|"]
    for t in targets(data["rows"], data.get("rtt") or {}):
        if issue and t.get("issue") != issue:
            continue
        unit = f" {t['unit']}" if t.get("unit") and t.get("value") is not None else ""
        value = _fmt(t.get("value")) + unit
        if t.get("ratio") is not None:
            value += f" ({t['ratio']:g} x)"
        if t.get("without_redundancy") is not None:
            value += f" (without redundancy {_fmt(t['without_redundancy'])})"
        ref = t.get("reference_by_path")
        ref = ", ".join(f"{k} {_fmt(v)}" for k, v in ref.items()) if ref else _fmt(t.get("reference"))
        if ref != "-" and t.get("unit"):
            ref += f" {t['unit']}"
        met = {True: "met", False: "**missed**", None: "not measured"}[t.get("met")]
        if t.get("note"):
            met += f" ({t['note']})"
        lines.append(f"| {t['target'].replace('|', chr(92) + '|')} | {value} | {ref} | {met} |")
    return "\n".join(lines)


def plot(an: dict, raw: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    profs = list(raw["profiles"])
    n = len(profs) + 1
    ncols = 2 if n <= 4 else 3
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 4.3 * nrows), squeeze=False)
    colors = COLORS
    styles = {0: "-", 1: "--", 2: ":", 3: "-.", 4: (0, (1, 3))}
    for i, prof in enumerate(profs):
        ax = axes[i // ncols][i % ncols]
        for (p, name, ch), (lats, sent) in an["_cdf"].items():
            if p != prof or not lats:
                continue
            xs = sorted(lats)
            ys = [(k + 1) / sent for k in range(len(xs))]
            ax.step(xs, ys, where="post", color=colors.get(name), ls=styles[ch], lw=1.2,
                    label=f"{name} {CHANNELS[ch]}")
        dl = raw["profiles"][prof]["one_way_ms"] + 10
        ax.axvline(dl, color="black", lw=0.8, alpha=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("one-way event latency (ms, log)")
        ax.set_ylabel("share of events sent")
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{prof}: {raw['profiles'][prof]['description']}", fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax = axes[len(profs) // ncols][len(profs) % ncols]
    bulk = [r for r in an["rows"] if r.get("channel") == "bulk"]
    width = 0.8 / max(1, len(PATHS))
    for j, name in enumerate(PATHS):
        rs = [next((r for r in bulk if r["profile"] == p and r["path"] == name), None) for p in profs]
        bars = ax.bar([k + j * width for k in range(len(profs))], [r["mbit_s"] if r else 0 for r in rs], width,
                      color=colors[name], label=name)
        for bar, r in zip(bars, rs):
            if r and _off_path(r):
                bar.set_hatch("//")       # the session had fallen back to another transport
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(profs))], profs, fontsize=7, rotation=20)
    ax.set_ylabel("bulk Mbit/s (client -> host)")
    ax.set_title("bulk throughput (raw-udp: datagrams that arrived; hatched: session had fallen back)",
                 fontsize=9)
    ax.legend(fontsize=6)
    for k in range(len(profs) + 1, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle("shortpath lab paths: vertical line = one-way delay + 10 ms", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _frames_due(ev: dict) -> int | None:
    """Frames the host had to show (sent + skipped while too many were in flight)."""
    fr = (ev.get("host") or {}).get("frames") or {}
    if "sent" not in fr:
        return None
    return fr["sent"] + fr.get("skipped", 0)


def _lossy_profile(profiles: list[str]) -> str | None:
    """The profile whose throughput over time is drawn: rtt40-loss2 if run, else the first lossy one."""
    if "rtt40-loss2" in profiles:
        return "rtt40-loss2"
    return next((p for p in profiles if "loss" in p or "burst" in p), None)


def _bins(series: list, step: float = 0.5) -> list[tuple[float, float]]:
    """(seconds, cumulative bytes) samples -> (bin middle, Mbit/s) per ``step``."""
    out, prev_t, prev_b, edge = [], 0.0, 0, step
    for t, b in series:
        if t >= edge:
            out.append((prev_t + (t - prev_t) / 2, (b - prev_b) * 8 / (t - prev_t) / 1e6))
            prev_t, prev_b, edge = t, b, t + step
    return out


def plot_frames(raw: dict, path: str) -> None:
    """Per profile: frames delivered per path (bars) and the frame-latency CDF per path; the
    throughput over time of every reliable path in one lossy profile."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    profs = list(raw["profiles"])
    lossy = _lossy_profile(profs)
    n = len(profs) + 1 + (lossy is not None)
    ncols = 2 if n <= 4 else 3
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 4.3 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    colors = COLORS
    framed = [name for name in PATHS if name in raw["paths"] and SPEC[name]["frames"]]

    def events(name, prof):
        res = raw["paths"][name]["profiles"].get(prof) or {}
        ev = res.get("events") or {}
        return ev if ev.get("ok") else None

    # frames delivered (share of the frames due), per profile and path
    ax = flat[0]
    width = 0.8 / max(1, len(framed))
    for j, name in enumerate(framed):
        xs, ys, labels = [], [], []
        for k, prof in enumerate(profs):
            ev = events(name, prof)
            due = _frames_due(ev) if ev else None
            if ev is None or not due:
                continue
            xs.append(k + j * width)
            ys.append(ev["frames"] / due)
            labels.append(f"{ev['frames']}")
        bars = ax.bar(xs, ys, width, color=colors[name], label=name)
        for bar, lab in zip(bars, labels):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, lab, ha="center", va="bottom",
                    fontsize=5, rotation=90)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(profs))], profs, fontsize=7, rotation=20)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("frames shown / frames due (30 fps)")
    ax.set_title("frames delivered per path (count above each bar)\nframes the host skipped while "
                 f"{raw.get('frames_inflight', '?')} were unacknowledged count as not delivered", fontsize=8)
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    ax.grid(alpha=0.3, axis="y")

    # frame-latency CDF per profile
    for i, prof in enumerate(profs):
        ax = flat[1 + i]
        for name in framed:
            ev = events(name, prof)
            due = _frames_due(ev) if ev else None
            lats = sorted(ev.get("frame_latency_ms") or []) if ev else []
            if not lats or not due:
                continue
            ax.step(lats, [(k + 1) / due for k in range(len(lats))], where="post", color=colors[name], lw=1.2,
                    label=f"{name} ({len(lats)}/{due})")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("frame latency, host send -> client receive (ms, log)")
        ax.set_ylabel("share of frames due")
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{prof}: {raw['profiles'][prof]['description']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left")

    # throughput over time in one lossy run (bulk, client -> host)
    if lossy is not None:
        ax = flat[1 + len(profs)]
        for name in PATHS:
            pr = raw["paths"].get(name) or {}
            b = ((pr.get("profiles") or {}).get(lossy) or {}).get("bulk") or {}
            pts = _bins(b.get("sent_series") or []) if b.get("ok") else []
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], color=colors[name], lw=1.2,
                        label=f"{name} (avg delivered {b['mbit_s']:.1f})")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("seconds into the bulk run")
        ax.set_ylabel("Mbit/s taken by the transport (0.5 s bins)")
        ax.set_title(f"bulk throughput over time at {lossy}, client -> host\n(bytes the transport accepted; "
                     "the session window bounds what is unacknowledged)", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle("shortpath lab paths: desktop frames (20-60 KB at 30 fps, reliable) and bulk over time",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _compact(raw: dict) -> dict:
    """The raw results without per-event arrays (the rows keep the statistics)."""
    import copy
    out = copy.deepcopy(raw)
    for pr in out["paths"].values():
        if pr.get("rtt"):
            pr["rtt"].pop("rtt_ms", None)
        for res in pr["profiles"].values():
            ev = res.get("events") or {}
            ev.pop("frame_latency_ms", None)
            if "host" in ev:
                ev["host"]["events"] = {ch: len(v[0]) for ch, v in ev["host"]["events"].items()}
            for rep in ((ev.get("host") or {}).get("stalls"), ev.get("client_stalls")):
                if rep:           # keep the ten longest stalls and collections
                    rep["stalls"] = sorted(sorted(rep["stalls"], key=lambda x: -x[1])[:10])
                    rep["gc"] = sorted(sorted(rep["gc"], key=lambda x: -x[2])[:10])
    return out


def run(suite: str = "quick", plot: bool = True, paths=None, profiles=None) -> dict | None:
    reason = lab_skip_reason()
    if reason:
        print(f"lab_paths: skipped: {reason}", flush=True)
        return None
    cfg = dict(SUITES[suite])
    if profiles:
        cfg["profiles"] = list(profiles)
    prof = cfg.pop("profiles")
    paths = list(paths or cfg.pop("paths"))
    cfg.pop("paths", None)
    print(f"lab_paths ({suite}): paths {', '.join(paths)}; profiles {', '.join(prof)}; "
          f"{cfg['events_s']:g}s events + {cfg['bulk_s']:g}s bulk per path and profile", flush=True)
    raw = measure(paths, prof, progress=lambda m: print(m, flush=True), **cfg)
    an = analyse(raw)
    print_summary(an)
    for name, pr in raw["paths"].items():
        tc = pr.get("tcp_cc")
        if tc:
            print(f"relay TCP congestion control, {name}: "
                  + ", ".join(f"{k} {'+'.join(v) or '-'}" for k, v in tc.items() if "->" in k)
                  + (f"; gateway sockets at the end: {tc['at_end']}" if "at_end" in tc else ""))
    data = {"suite": suite, "config": {**cfg, "paths": paths}, "raw": _compact(raw),
            **{k: v for k, v in an.items() if not k.startswith("_")}}
    jpath = save(f"lab_paths_{suite}", data)
    print(f"results: {jpath}")
    if plot:
        png = os.path.join(RESULTS, f"lab_paths_{suite}.png")
        globals()["plot"](an, raw, png)
        print(f"plot: {png}")
        png = os.path.join(RESULTS, f"lab_paths_{suite}_frames.png")
        plot_frames(raw, png)
        print(f"plot: {png}")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lab_paths")
    p.add_argument("--suite", choices=sorted(SUITES), default="quick")
    p.add_argument("--paths", nargs="*", choices=PATHS, default=None)
    p.add_argument("--profiles", nargs="*", default=None)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--rejudge", metavar="JSON", help="recompute the targets of a saved result file and print it")
    p.add_argument("--markdown", metavar="JSON", help="print a saved result as a Markdown table")
    p.add_argument("--targets-markdown", metavar="JSON",
                   help="print the targets of a saved result as a Markdown table (target, value, reference, met)")
    p.add_argument("--issue", default=None, help="with --targets-markdown: only this issue's targets, e.g. '#13'")
    a = p.parse_args(argv)
    if a.markdown or a.targets_markdown:
        if a.markdown:
            with open(a.markdown) as f:
                print(markdown(json.load(f)))
        if a.targets_markdown:
            with open(a.targets_markdown) as f:
                print(("\n" if a.markdown else "") + targets_markdown(json.load(f), a.issue))
        return 0
    if a.rejudge:
        with open(a.rejudge) as f:
            data = json.load(f)
        data["targets"] = targets(data["rows"], data["rtt"])
        with open(a.rejudge, "w") as f:
            json.dump(data, f, indent=2)
        print_summary(data)
        return 0
    run(a.suite, plot=not a.no_plot, paths=a.paths, profiles=a.profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
