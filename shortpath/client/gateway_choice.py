"""Which gateway a client uses (issue #14), the rule AVD documents:

    measure the latency to every gateway, put the gateways into 10 ms buckets,
    and take the one with the fewest connections in the lowest bucket.

:func:`choose` is that rule, pure (probes in, a :class:`Choice` with its reason
out), plus hysteresis so a client does not hop on noise:

* the key is ``(bucket, connections, rtt, name)``; an unknown load counts as
  more than any known one, an unreachable gateway is never chosen;
* with a ``current`` gateway that still answers, the client stays unless
  - the best gateway's bucket is more than ``stick_buckets`` (1) lower: a jitter
    of a few ms across a bucket edge does not move anyone; or
  - they share a bucket and the current gateway carries more than
    ``(1 + stick_load) x best + stick_min`` connections (20 % and 2 by default).

:func:`measure` is the thin I/O edge: one TLS connection per gateway, a few
``probe`` / ``probe-ack`` round trips (the gateway answers with its name and
its connection count), the smallest RTT kept.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass

from ..errors import PathError

BUCKET_MS = 10.0


@dataclass(frozen=True)
class Probe:
    gateway: str                     # "host:port" as the user gave it
    rtt_ms: float | None             # None: no answer
    connections: int | None = None   # the gateway's own count; None: unknown
    name: str = ""                   # the gateway's cluster id, if it said
    error: str = ""

    def bucket(self, bucket_ms: float = BUCKET_MS) -> int | None:
        return None if self.rtt_ms is None else int(self.rtt_ms // bucket_ms)


@dataclass(frozen=True)
class Choice:
    gateway: str
    reason: str
    bucket_ms: float
    probes: tuple[Probe, ...]

    def to_dict(self) -> dict:
        return {"gateway": self.gateway, "reason": self.reason, "bucket_ms": self.bucket_ms,
                "probes": [{**asdict(p), "bucket": p.bucket(self.bucket_ms)} for p in self.probes]}


def _key(p: Probe, bucket_ms: float):
    return (p.bucket(bucket_ms), math.inf if p.connections is None else p.connections, p.rtt_ms, p.gateway)


def choose(probes, current: str | None = None, *, bucket_ms: float = BUCKET_MS, stick_buckets: int = 1,
           stick_load: float = 0.2, stick_min: int = 2) -> Choice:
    probes = tuple(probes)
    live = [p for p in probes if p.rtt_ms is not None]
    if not live:
        raise PathError("no gateway answered: " + ", ".join(f"{p.gateway} ({p.error or 'no answer'})"
                                                          for p in probes))
    best = min(live, key=lambda p: _key(p, bucket_ms))
    lowest = best.bucket(bucket_ms)
    peers = [p for p in live if p.bucket(bucket_ms) == lowest]
    if len(peers) == 1:
        why = f"lowest latency bucket ({lowest * bucket_ms:g}-{(lowest + 1) * bucket_ms:g} ms) has only it"
    elif best.connections is not None:
        why = (f"fewest connections ({best.connections}) of {len(peers)} gateways in the lowest latency "
               f"bucket ({lowest * bucket_ms:g}-{(lowest + 1) * bucket_ms:g} ms)")
    else:
        why = f"lowest latency of {len(peers)} gateways in the lowest bucket (load unknown)"
    cur = next((p for p in live if p.gateway == current), None)
    if cur is None or cur.gateway == best.gateway:
        if cur is not None:
            why = "current gateway is still the best: " + why
        elif current is not None:
            why = f"current gateway {current} did not answer; " + why
        return Choice(best.gateway, why, bucket_ms, probes)
    cb = cur.bucket(bucket_ms)
    if cb - lowest > stick_buckets:
        return Choice(best.gateway, f"moved: {cb - lowest} buckets lower latency than current {cur.gateway}; "
                      + why, bucket_ms, probes)
    if cb == lowest and cur.connections is not None and best.connections is not None \
            and cur.connections > (1 + stick_load) * best.connections + stick_min:
        return Choice(best.gateway, f"moved: current {cur.gateway} carries {cur.connections} connections, "
                      f"over the hysteresis margin; " + why, bucket_ms, probes)
    return Choice(cur.gateway, f"stayed on current gateway (within hysteresis: {cb - lowest} bucket(s) from the "
                  f"best, {best.gateway})", bucket_ms, probes)


async def probe_one(gateway: str, cafile: str | None, *, rounds: int = 3, timeout: float = 3.0) -> Probe:
    """Smallest probe RTT over ``rounds`` on one TLS connection, and the gateway's load."""
    from ..auth import certs
    from ..framed import FramedConn
    from ..netaddr import parse_hostport
    from ..wire import control
    from ..wire.frames import MAX_CONTROL_PAYLOAD
    host, port = parse_hostport(gateway)
    conn = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=certs.client_context(cafile)), timeout)
        conn = FramedConn(reader, writer, MAX_CONTROL_PAYLOAD, 64 * 1024)
        best, ack = None, None
        for i in range(rounds):
            t0 = time.monotonic()
            conn.send(control.Probe(seq=i))
            ack = await asyncio.wait_for(conn.read_control(), timeout)
            if not isinstance(ack, control.ProbeAck) or ack.seq != i:
                return Probe(gateway, None, error=f"unexpected answer {getattr(ack, 'TYPE', 'EOF')}")
            rtt = (time.monotonic() - t0) * 1000
            best = rtt if best is None else min(best, rtt)
        return Probe(gateway, round(best, 3), ack.connections, ack.gateway)
    except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
        return Probe(gateway, None, error=type(exc).__name__ if not str(exc) else str(exc)[:80])
    except Exception as exc:      # a TLS or protocol failure: this gateway is out, say why
        return Probe(gateway, None, error=f"{type(exc).__name__}: {str(exc)[:80]}")
    finally:
        if conn is not None:
            await conn.close()


async def measure(gateways, cafile: str | None, *, rounds: int = 3, timeout: float = 3.0) -> list[Probe]:
    return list(await asyncio.gather(*(probe_one(g, cafile, rounds=rounds, timeout=timeout) for g in gateways)))
