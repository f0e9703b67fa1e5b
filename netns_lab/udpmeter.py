"""One-way UDP measurement between two lab nodes (same kernel, so clocks agree exactly).

Receiver (start first; prints READY, then on the END marker writes results and exits)::

    python -m netns_lab.udpmeter recv --bind 198.18.0.1 --port 9000 --out /tmp/x.json

Sender::

    python -m netns_lab.udpmeter send --to 198.18.0.1 --port 9000 --rate 1000 --count 5000

Each datagram carries ``seq`` (u32) and the sender's CLOCK_REALTIME just before ``sendto``
(u64 ns).  The receiver takes the kernel receive timestamp (SO_TIMESTAMPNS), so its own
scheduling delay is not counted.  One-way delay = rx - tx; both are CLOCK_REALTIME of the same
machine.  After the last packet the sender sends an END marker several times (it may be
impaired too); the receiver then waits ``--linger`` seconds for stragglers.

``summarize()`` turns the raw samples into loss, delay statistics, reordering and loss bursts;
``receiver_socket_drops`` (SO_RXQ_OVFL) tells losses at the receiving socket apart from losses
on the path.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

_PKT = struct.Struct("!IQ")
_END = b"END!"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # ancillary u32: datagrams this socket dropped
SO_RCVBUFFORCE = 33


def send(to: str, port: int, rate: float, count: int, size: int = 64, ends: int = 20) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((to, port))
    pad = b"\0" * max(0, size - _PKT.size)
    t0 = time.perf_counter()
    sent = 0
    errors = 0
    pack = _PKT.pack
    now_ns = time.time_ns
    while sent < count:
        due = min(count, int((time.perf_counter() - t0) * rate) + 1)
        if due <= sent:
            # Sleep until the next packet is due (sub-ms precision is not needed here).
            time.sleep(max(0.0, (sent / rate) - (time.perf_counter() - t0)))
            continue
        while sent < due:
            try:
                s.send(pack(sent, now_ns()) + pad)
            except OSError:
                errors += 1
            sent += 1
    elapsed = time.perf_counter() - t0
    for _ in range(ends):
        s.send(_END)
        time.sleep(0.002)
    return {"sent": sent, "elapsed_s": elapsed, "rate_achieved": sent / elapsed if elapsed else 0,
            "send_errors": errors}


def recv(bind: str, port: int, out: str, linger: float = 0.3, timeout: float = 120) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # root may exceed net.core.rmem_max: bursts released by the emulator must fit
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    s.bind((bind, port))
    print("READY", flush=True)
    seqs, txs, rxs = [], [], []
    ancsize = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
    sock_drops = 0
    s.settimeout(timeout)
    end_at = None
    while True:
        if end_at is not None:
            left = end_at - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
        try:
            data, anc, _f, _a = s.recvmsg(2048, ancsize)
        except socket.timeout:
            break
        if data == _END:
            if end_at is None:
                end_at = time.monotonic() + linger
            continue
        rx = None
        for lvl, typ, val in anc:
            if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", val[:16])
                rx = sec * 1_000_000_000 + nsec
            elif lvl == socket.SOL_SOCKET and typ == SO_RXQ_OVFL:
                sock_drops = struct.unpack("I", val[:4])[0]
        if rx is None:
            rx = time.time_ns()
        seq, tx = _PKT.unpack_from(data)
        seqs.append(seq)
        txs.append(tx)
        rxs.append(rx)
    with open(out, "w") as f:
        json.dump({"seq": seqs, "tx": txs, "rx": rxs, "socket_drops": sock_drops}, f)
    print("DONE", len(seqs), flush=True)


def _pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * (len(sorted_vals) - 1) + 0.5))]


def summarize(raw: dict, sent: int) -> dict:
    seqs, txs, rxs = raw["seq"], raw["tx"], raw["rx"]
    owd = sorted((r - t) / 1e6 for t, r in zip(txs, rxs))  # ms
    n = len(seqs)
    uniq = set(seqs)
    reordered = sum(1 for a, b in zip(seqs, seqs[1:]) if b < a)
    # loss bursts: runs of missing sequence numbers
    bursts = []
    run = 0
    for i in range(sent):
        if i in uniq:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    if run:
        bursts.append(run)
    mean = sum(owd) / n if n else float("nan")
    sd = (sum((x - mean) ** 2 for x in owd) / (n - 1)) ** 0.5 if n > 1 else float("nan")
    return {"sent": sent, "received": n, "loss": 1 - len(uniq) / sent if sent else float("nan"),
            "owd_ms": {"mean": mean, "sd": sd, "min": owd[0] if owd else None,
                       "p50": _pct(owd, 0.5), "p99": _pct(owd, 0.99),
                       "max": owd[-1] if owd else None},
            "reordered": reordered, "duplicates": n - len(uniq),
            "receiver_socket_drops": raw.get("socket_drops", 0),
            "loss_bursts": {"count": len(bursts),
                            "mean_len": sum(bursts) / len(bursts) if bursts else 0.0}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.udpmeter")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, default=9000)
    r.add_argument("--out", required=True)
    r.add_argument("--linger", type=float, default=0.3)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, default=9000)
    s.add_argument("--rate", type=float, default=1000)
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--size", type=int, default=64)
    a = p.parse_args(argv)
    if a.cmd == "recv":
        recv(a.bind, a.port, a.out, a.linger)
    else:
        print(json.dumps(send(a.to, a.port, a.rate, a.count, a.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
