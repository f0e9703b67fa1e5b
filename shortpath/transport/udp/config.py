"""UdpConfig: the mode policy and timing of one UDP upgrade attempt (both peers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .ice import TurnServer
from .managed import DEFAULT_MANAGED_PORT
from .sctp import DEFAULT_TUNING, SctpTuning

__all__ = ["UdpConfig"]


@dataclass(frozen=True)
class UdpConfig:
    """Mode policy and timing for one UDP upgrade attempt.

    Both peers should use the same policy; each side also enforces its own
    (it gathers only allowed candidate kinds and ignores disallowed remote
    ones), so the effective policy is the intersection.
    """

    # -- which paths may be used --------------------------------------------------
    allow_managed: bool = True   # host's shared listener (UDP 3390), no STUN/TURN
    allow_direct: bool = True    # host + server-reflexive (STUN) candidates
    allow_turn: bool = True      # relay candidates (TURN); alone => relay-only policy

    # -- servers (always explicit: aioice/aiortc defaults point at Google STUN) --
    stun_server: Optional[tuple[str, int]] = None
    # Tried in order until one allocates: put UDP first, then TCP, then TLS.
    turn_servers: tuple[TurnServer, ...] = ()

    # -- addresses -----------------------------------------------------------------
    # The port a host's ManagedListener binds (the listener is created by the
    # host application and passed to UdpUpgrader; this is its default).
    managed_port: int = DEFAULT_MANAGED_PORT
    # Local IPs to gather host candidates on. None = every non-loopback IPv4
    # address (aioice's detection). Tests use ("127.0.0.1",).
    host_addresses: Optional[tuple[str, ...]] = None

    # -- timing (seconds) ------------------------------------------------------------
    connect_timeout: float = 10.0       # whole connect(): ICE + DTLS + SCTP
    gather_timeout: float = 4.0         # STUN/TURN candidate gathering, all servers
    turn_attempt_timeout: float = 1.5   # per TURN server/transport, before trying the next
    close_timeout: float = 1.0          # bound on TURN deallocation and SCTP abort at close

    # -- data ----------------------------------------------------------------------------
    sctp_port: int = 5000
    max_message_size: int = 262144      # we accept up to this; peers advertise theirs
    unreliable_buffer_limit: int = 64 * 1024   # send_unreliable drops above this backlog
    reliable_buffer_limit: int = 16 * 1024 * 1024  # send_reliable raises BufferFull above
    drain_high_water: int = 1024 * 1024  # drain() returns once buffered_amount is at or below
    receive_backlog: int = 10000        # messages kept until on_reliable/on_unreliable is set
    sctp_tuning: Optional[SctpTuning] = DEFAULT_TUNING  # None = aiortc's RFC 4960 defaults

    def __post_init__(self) -> None:
        if not (self.allow_managed or self.allow_direct or self.allow_turn):
            raise ValueError("UdpConfig allows no path at all")

    @property
    def relay_only(self) -> bool:
        return self.allow_turn and not self.allow_direct and not self.allow_managed
