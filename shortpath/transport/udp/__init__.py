"""The UDP path (Shortpath): ICE (aioice) + DTLS + SCTP (aiortc), managed listener on UDP 3390.

This package is the only place in shortpath that imports aioice or aiortc, and it does so
lazily, because importing aiortc loads PyAV (~0.3 s). See docs/udp.md.

    config.py          UdpConfig: mode policy and timing of an attempt
    signal.py          the signalling messages and their checks (pure)
    upgrader.py        UdpUpgrader: one set-up attempt (gathering, checks, DTLS, SCTP)
    path.py            UdpPath: the established path, owner of its ICE/DTLS/SCTP stack
    session_path.py    UdpSessionPath: a UdpPath seen through the session's Path interface
    candidate_policy.py  which remote candidate addresses we send checks to (pure)
    ice.py             our ICE agent on aioice (gathering, TURN fallback, nomination)
    managed.py         the host's shared ICE-lite listener on UDP 3390
    consent.py         which address a managed session sends to, and when it may move (pure)
    sctp.py            our SCTP sender over aiortc's association (tuning, pacing, loss recovery)
    congestion.py      congestion controller and pacer (pure)
    recovery.py        time-based loss detection and tail-loss probes (pure)
    _aioice_compat.py  every private aioice name we use, each with why
    _aiortc_compat.py  every private aiortc name we use, each with why
"""

from shortpath.errors import BufferFull

from .config import UdpConfig
from .ice import TurnServer
from .managed import ManagedListener
from .path import UdpPath
from .session_path import UdpSessionPath
from .signal import SIGNAL_VERSION
from .upgrader import UdpUpgrader

__all__ = ["UdpConfig", "TurnServer", "UdpUpgrader", "UdpPath", "UdpSessionPath", "ManagedListener",
           "BufferFull", "SIGNAL_VERSION"]
