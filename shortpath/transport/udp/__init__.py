"""The UDP path (Shortpath): ICE (aioice) + DTLS + SCTP (aiortc), managed listener on UDP 3390.

This package is the only place in shortpath that imports aioice or aiortc, and it does so
lazily, because importing aiortc loads PyAV (~0.3 s). See docs/udp.md.

    path.py      UdpUpgrader (set-up) and UdpPath (the data path)
    ice.py       our ICE agent wrapper around aioice
    managed.py   the host's shared ICE-lite listener on UDP 3390
    sctp.py      SCTP timer tuning over aiortc's association
"""

from .path import SIGNAL_VERSION, BufferFull, ManagedListener, TurnServer, UdpConfig, UdpPath, UdpUpgrader

__all__ = ["UdpConfig", "TurnServer", "UdpUpgrader", "UdpPath", "ManagedListener", "BufferFull",
           "SIGNAL_VERSION"]
