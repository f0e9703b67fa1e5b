"""Packet capture inside a lab namespace (scapy), summarised for assertions.

    python -m netns_lab.capture --iface IF --seconds S --out FILE.json

From Python: ``cap = start(lab, node, iface, out)``, ``cap.next_phase()``, ``cap.stop()``.
The helper prints ``capturing`` only once the sniffer's socket is open and its filter
(compiled by libpcap) is attached; a sniffer that cannot start (no libpcap, no such interface)
prints the reason on stderr and exits non-zero, and ``start``/``stop`` raise with that text.
It captures for ``seconds`` (or until SIGTERM) and writes one summary per *phase* (SIGUSR1
starts the next phase, e.g. "after the upgrade"): UDP bytes per (src, dst, dport), DTLS
records seen (first payload byte 20..63, RFC 7983 demultiplexing) per flow, STUN packets,
and TCP payload bytes to/from each address. Payloads themselves are never stored.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path


def summarize(packets) -> dict:
    from scapy.layers.inet import IP, TCP, UDP

    udp_bytes, dtls, stun, tcp_bytes = Counter(), Counter(), Counter(), Counter()
    for p in packets:
        if IP not in p:
            continue
        ip = p[IP]
        if UDP in p:
            payload = bytes(p[UDP].payload)
            flow = f"{ip.src}>{ip.dst}:{p[UDP].dport}"
            udp_bytes[flow] += len(payload)
            if payload and 20 <= payload[0] <= 63:
                dtls[flow] += 1
            elif len(payload) >= 20 and payload[0] < 2 and payload[4:8] == b"\x21\x12\xa4\x42":
                stun[flow] += 1
        elif TCP in p:
            n = len(bytes(p[TCP].payload))
            if n:
                tcp_bytes[f"{ip.src}>{ip.dst}:{p[TCP].dport}"] += n
    return {"packets": len(packets), "udp_bytes": dict(udp_bytes), "dtls_records": dict(dtls),
            "stun_packets": dict(stun), "tcp_payload_bytes": dict(tcp_bytes)}


def main(argv=None) -> int:
    import scapy.layers.inet  # noqa: F401 -- registers Ether/IP/UDP/TCP dissection before sniffing
    import scapy.layers.l2  # noqa: F401
    from scapy.sendrecv import AsyncSniffer

    ap = argparse.ArgumentParser(prog="python -m netns_lab.capture")
    ap.add_argument("--iface", required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--start-timeout", type=float, default=10.0)
    a = ap.parse_args(argv)
    done = threading.Event()
    started = threading.Event()
    phases: list[list] = [[]]
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def next_phase(*_):
        phases.append([])
        print(f"phase {len(phases)}", flush=True)   # packets from now on count in this phase

    signal.signal(signal.SIGUSR1, next_phase)
    # started_callback runs in the sniffer thread once its socket is open and the BPF filter
    # (compiled by libpcap) is attached; an error before that ends the thread and is kept in
    # sniffer.exception. So "capturing" is printed only when packets are really being seen.
    sniffer = AsyncSniffer(iface=a.iface, filter="ip", store=False, started_callback=started.set,
                           prn=lambda p: phases[-1].append(p))
    sniffer.start()
    thread = sniffer.thread
    deadline = time.monotonic() + a.start_timeout
    while not started.wait(0.05):
        if thread is None or not thread.is_alive() or time.monotonic() > deadline:
            why = sniffer.exception or "did not start within " f"{a.start_timeout} s"
            print(f"capture: cannot capture on {a.iface!r}: {_err(why)}", file=sys.stderr,
                  flush=True)
            return 2
    print("capturing", flush=True)
    end = time.monotonic() + a.seconds
    # Wait for SIGTERM or the time limit, but notice a sniffer that dies on the way.
    while not done.wait(min(0.2, max(0.0, end - time.monotonic()))):
        if time.monotonic() >= end:
            break
        if not thread.is_alive():
            print(f"capture: sniffer on {a.iface!r} stopped: {_err(sniffer.exception)}",
                  file=sys.stderr, flush=True)
            return 1
    try:
        sniffer.stop()
    except Exception as e:  # noqa: BLE001 -- reported with its type, exit non-zero
        print(f"capture: sniffer on {a.iface!r} failed: {_err(e)}", file=sys.stderr, flush=True)
        return 1
    with open(a.out, "w") as f:
        json.dump({"phases": [summarize(ph) for ph in phases]}, f)
    print("written", flush=True)
    return 0


def _err(e) -> str:
    return f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e)


class Capture:
    """A running capture helper (``start()``): next phase, then stop and read the summary."""

    def __init__(self, lab, proc, out: Path):
        self.lab, self.proc, self.out = lab, proc, out

    def next_phase(self, timeout: float = 5.0) -> None:
        """Start the next phase (e.g. "after the upgrade"); returns once the helper has."""
        mark = self.proc.mark()
        os.kill(self.proc.pid, signal.SIGUSR1)
        self.proc.wait_for_line(r"^phase \d+$", timeout, since=mark)

    def stop(self) -> list[dict]:
        """Stop the helper and return its phase summaries; a helper that failed raises
        ``LabError`` with its own output (exit status and stderr), not a missing file."""
        from .netns import LabError
        rc = self.lab.stop(self.proc)
        if rc != 0 or not self.out.exists():
            raise LabError(f"capture failed: {self.proc.describe_exit('netns_lab.capture')}")
        return json.loads(self.out.read_text())["phases"]


def start(lab, node: str, iface: str, out: str | Path, seconds: float = 120.0,
          ready_timeout: float = 20.0) -> Capture:
    """Start ``python -m netns_lab.capture`` in ``node`` on ``iface``; returns once it captures.

    Checks libpcap and scapy first (``netns_lab.prereq``); a helper that cannot start raises
    ``LabError`` carrying its own error text."""
    from .prereq import require
    require("capture")
    out = Path(out)
    proc = lab.spawn(node, [sys.executable, "-m", "netns_lab.capture", "--iface", iface,
                            "--seconds", str(seconds), "--out", str(out)],
                     ready=r"^capturing$", ready_timeout=ready_timeout)
    return Capture(lab, proc, out)


if __name__ == "__main__":
    raise SystemExit(main())
