"""Packet capture inside a lab namespace (scapy), summarised for assertions.

    python -m netns_lab.capture --iface IF --seconds S --out FILE.json

Run inside a namespace (``lab.spawn(node, [...])``). It prints ``capturing`` once
the sniffer is up, captures for ``seconds`` (or until SIGTERM) and writes one
summary per *phase* (SIGUSR1 starts the next phase, e.g. "after the upgrade"): UDP bytes per (src, dst, dport), DTLS records seen (first payload byte
20..63, RFC 7983 demultiplexing) per flow, STUN packets, and TCP payload bytes
to/from each address. Payloads themselves are never stored.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections import Counter


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
    a = ap.parse_args(argv)
    done = threading.Event()
    phases: list[list] = [[]]
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: phases.append([]))
    sniffer = AsyncSniffer(iface=a.iface, filter="ip", store=False, prn=lambda p: phases[-1].append(p))
    sniffer.start()
    print("capturing", flush=True)
    done.wait(a.seconds)
    sniffer.stop()
    with open(a.out, "w") as f:
        json.dump({"phases": [summarize(ph) for ph in phases]}, f)
    print("written", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
