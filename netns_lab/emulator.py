"""Userspace link emulator: delay, jitter, loss, bursty loss and reordering via NFQUEUE.

Run inside the namespace that *receives* the impaired direction::

    ip netns exec nl-ab12-core python3 -m netns_lab.emulator --queue 3 --config '{"delay_ms": 20}'

and steer that interface's packets to the queue (``iptables -t raw -A PREROUTING -i IF -j
NFQUEUE --queue-num 3 --queue-bypass``; this kernel has no nft ``queue`` expression, so the
iptables-nft compat target is used).  It prints ``READY`` once bound.  Each stdin line is either
a JSON object (new parameters, see ``netns_lab.impair.Impairment``) or ``stats`` (prints one JSON
line of counters).  On SIGTERM/EOF it releases every held packet (accept) and exits.

Why NFQUEUE in the receiving namespace, metadata only (and not AF_PACKET forwarding)?

* The packet never leaves the kernel: we get a 20-byte header (packet id, kernel receive
  timestamp) and answer with a 32-byte verdict.  An AF_PACKET bridge would copy every packet to
  userspace and back through a second interface, doubling syscalls and per-packet Python work,
  and needs an extra namespace per impaired link.
* The queue hook sits at raw PREROUTING (priority -300) of the receiving node, *before*
  conntrack and NAT: a delayed packet reaches conntrack when it "arrives", exactly as if the wire
  were longer, and no unconfirmed conntrack entry is held inside the queue (holding packets after
  NAT at POSTROUTING would leave conntrack entries unconfirmed while queued, and parallel first
  packets of one flow would clash).
* Unimpaired links have no rule and cost nothing; ``--queue-bypass`` lets packets through if
  the emulator is not running, so stopping it never blackholes a link.
* Arrival time comes from the kernel receive timestamp (``NFQA_TIMESTAMP``) when present, so the
  emulator's own wake-up latency on the receive side does not add to the delay; only the release
  side depends on how punctually we wake up.  We run at SCHED_FIFO (where allowed) with a 1 ns
  timer slack and sleep in ``select()`` (microsecond timeout) until the next release.
* Verdicts may be given in any order, so holding packets is just a heap of (release, id).
* An ACCEPT verdict ends the current chain, so one queue rule per chain and direction (one
  interface) -- never two queue rules that could both match a packet.
"""

from __future__ import annotations

import argparse
import ctypes
import heapq
import json
import os
import select
import signal
import socket
import sys
import time

from .impair import Impairment, LinkModel
from .nfnl import NF_ACCEPT, NF_DROP, NfQueue

EARLY_S = 20e-6  # release a packet if it is due within 20 us (a select() wake-up costs more)


def _realtime_setup(prio: int) -> dict:
    info = {"sched_fifo": False, "timer_slack_ns": None}
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(29, 1, 0, 0, 0) == 0:  # PR_SET_TIMERSLACK = 29
            info["timer_slack_ns"] = 1
    except OSError:
        pass
    if prio > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            info["sched_fifo"] = True
        except (PermissionError, OSError) as e:
            info["sched_fifo_error"] = str(e)
    return info


def _enable_rx_timestamps() -> socket.socket:
    # Any socket asking for receive timestamps makes the kernel stamp incoming skbs, which
    # NFQUEUE then reports as NFQA_TIMESTAMP.  The socket itself is never used.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_TIMESTAMPNS", 35), 1)
    return s


class Lateness:
    """Release lateness (actual verdict time - planned release), a bounded sample."""

    def __init__(self, keep: int = 20000):
        self.keep = keep
        self.samples: list[float] = []
        self.n = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, late: float) -> None:
        self.n += 1
        self.total += late
        if late > self.max:
            self.max = late
        if len(self.samples) < self.keep:
            self.samples.append(late)
        else:
            self.samples[self.n % self.keep] = late

    def summary(self) -> dict:
        if not self.n:
            return {"n": 0}
        s = sorted(self.samples)
        return {"n": self.n, "mean_us": 1e6 * self.total / self.n,
                "p99_us": 1e6 * s[int(0.99 * (len(s) - 1))], "max_us": 1e6 * self.max}


def run(queue: int, imp: Impairment, prio: int = 50, spin_us: float = 0.0,
        pin: bool = False, control: bool = True) -> int:
    q = NfQueue(queue)
    rt = _realtime_setup(prio)
    # Optionally stay on one CPU: verdicts re-inject packets on the CPU that sends them, and
    # the next hop (veth -> per-CPU backlog) could reorder two batches sent from different
    # CPUs.  Off by default: on the 2-vCPU test machine pinning made tail latency worse.
    if pin:
        try:
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpus[queue % len(cpus)]})
            rt["cpu"] = cpus[queue % len(cpus)]
        except OSError:
            pass
    spin = spin_us * 1e-6
    _ts = _enable_rx_timestamps()
    model = LinkModel(imp)
    late = Lateness()
    heap: list[tuple[float, int, int]] = []
    seq = 0
    accepted = dropped = ts_used = 0
    stop = False

    def on_term(_sig, _frm):
        nonlocal stop
        stop = True

    # select() is restarted after a signal handler runs (PEP 475), so the handler alone would
    # not wake the loop: route signals through a pipe that select() watches.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    stdin = sys.stdin
    # Without control (a detached lab: nobody holds our stdin) stdin is not watched; a new
    # configuration then means a new emulator, and only SIGTERM stops this one.
    watch = [q, stdin, wake_r] if control else [q, wake_r]
    if control:
        os.set_blocking(stdin.fileno(), False)
    inbuf = ""
    print("READY", json.dumps({"queue": queue, **rt}), flush=True)
    mono = time.monotonic
    wall = time.time
    while not stop:
        timeout = None
        if heap:
            timeout = max(0.0, heap[0][0] - mono() - spin)
        try:
            ready, _, _ = select.select(watch, [], [], timeout)
        except InterruptedError:
            continue
        out = []
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        if q in ready:
            pkts = q.read()
            now = mono()
            offset = wall() - now
            for pid, ts in pkts:
                arrival = now
                if ts is not None:
                    a = ts - offset
                    if now - 0.5 < a <= now:
                        arrival = a
                        ts_used += 1
                rel = model.decide(arrival)
                if rel is None:
                    out.append((pid, NF_DROP))
                    dropped += 1
                else:
                    # Always through the heap, even when already due: accepting it
                    # here would put it in this batch ahead of older held packets
                    # that fall due in the same pass (a reordering nobody asked for).
                    heapq.heappush(heap, (rel, seq, pid))
                    seq += 1
        if stdin in ready:
            try:
                chunk = os.read(stdin.fileno(), 65536).decode()
            except BlockingIOError:
                chunk = None
            if chunk == "":
                stop = True
            elif chunk:
                inbuf += chunk
                while "\n" in inbuf:
                    line, inbuf = inbuf.split("\n", 1)
                    line = line.strip()
                    if line == "stats":
                        print(json.dumps({"accepted": accepted, "dropped": dropped,
                                          "held": len(heap), "kernel_timestamps": ts_used,
                                          "model": vars(model.stats),
                                          "release_lateness": late.summary()}), flush=True)
                    elif line:
                        model.configure(Impairment(**json.loads(line)))
                        print("CONFIGURED", flush=True)
        now = mono()
        if spin and heap and not out and heap[0][0] - now <= spin:
            # Woke up early on purpose: wait out the last stretch on the CPU (an idle vCPU
            # can take milliseconds to wake up; a short spin cannot).
            due = heap[0][0] - EARLY_S
            while now < due:
                now = mono()
        while heap and heap[0][0] <= now + EARLY_S:
            rel, _, pid = heapq.heappop(heap)
            out.append((pid, NF_ACCEPT))
            late.add(now - rel)
            accepted += 1
        if out:
            q.verdicts(out)
    # Shutting down: let everything still held go (early rather than lost).
    q.verdicts([(pid, NF_ACCEPT) for _, _, pid in heap])
    q.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.emulator")
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--config", default="{}", help="JSON Impairment parameters")
    p.add_argument("--rt-prio", type=int, default=50, help="SCHED_FIFO priority (0 = off)")
    p.add_argument("--spin-us", type=float, default=0.0,
                   help="wake this early and spin until a release is due (0 = pure sleep)")
    p.add_argument("--pin-cpu", action="store_true", help="pin to one CPU (queue %% ncpus)")
    p.add_argument("--no-stdin", action="store_true",
                   help="ignore stdin (no live reconfiguration or stats); run until SIGTERM")
    a = p.parse_args(argv)
    return run(a.queue, Impairment(**json.loads(a.config)), a.rt_prio, a.spin_us, a.pin_cpu,
               control=not a.no_stdin)


if __name__ == "__main__":
    sys.exit(main())
