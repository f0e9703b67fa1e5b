"""Process settings for a real-time peer: short garbage-collector pauses.

CPython frees most objects by reference counting; the cyclic collector only looks for
reference cycles. A full (generation 2) collection walks *every* container object the
process holds: the modules of aiortc, aioice, cryptography and PyAV, their classes and
functions, and our own long-lived state. In the lab a client's full collection took 46 ms
(benchmarks/stallprobe.py, `lab_paths` at 40 ms + 2 % loss): every datagram, event and packet
of that moment waited for it, which is more than the latency budget of an input event.

:func:`settle_gc` collects once and then freezes (``gc.freeze``) everything alive at that
moment: later collections skip it, so a full collection costs what the process created since,
not what it imported. The CLI calls it once a peer is set up (``shortpath host``/``gateway``
after start-up, ``shortpath connect`` once the session is up); an application that embeds the
library can call it at the same point. Anything frozen is never collected afterwards: call it
after set-up, not in a loop (objects alive at set-up are meant to live as long as the process).
"""

from __future__ import annotations

import gc
import importlib

#: What a peer with a UDP path imports on its first upgrade (shortpath imports aiortc and
#: aioice lazily; with cryptography and PyAV they are most of the process's objects):
#: ``settle_gc(udp=True)`` imports them first so that they are frozen too.
UDP_STACK = ("shortpath.transport.udp", "aioice", "aiortc")


def settle_gc(udp: bool = False) -> int:
    """Collect, then freeze every live object out of the collector's reach; returns how many
    objects are now frozen (``gc.get_freeze_count()``). ``udp``: import the UDP stack first."""
    if udp:
        for name in UDP_STACK:
            importlib.import_module(name)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
