"""What the session core (connection.py) tells its pump: small dataclasses under one base.

The core never acts on the world. After each input the pump (session.py) takes
these one by one with ``SessionConnection.next_event()`` and, separately, the
frames to send with ``SessionConnection.transmits()``. Some events are news for
the application (data, datagrams, the end of the session); the others ask the
pump for I/O the core cannot do itself (start a UDP attempt, close a path).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """Base of every session-core event."""


@dataclass(frozen=True)
class DataReceived(Event):
    #: one application message from the reliable channel, in order, exactly once
    data: bytes
    #: reliable channel it arrived on (channels.py: 0 default, 1 input, 2 graphics, 3 bulk)
    channel: int = 0


@dataclass(frozen=True)
class DatagramReceived(Event):
    #: one best-effort datagram, as the peer passed it to send_datagram
    data: bytes


@dataclass(frozen=True)
class EventReceived(Event):
    """One event of the redundant event lane (redundancy.py): each exactly once, in
    order, at the first copy's arrival; events lost in more than k frames in a row
    are skipped (SessionConnection.event_stats)."""
    data: bytes


@dataclass(frozen=True)
class SendWindowOpened(Event):
    """The peer acknowledged messages, so the send window has room again."""
    #: how many messages the ACK released
    released: int
    #: the reliable channel whose window opened (channels.py)
    channel: int = 0


@dataclass(frozen=True)
class PingAnswered(Event):
    #: the id ``SessionConnection.ping()`` returned
    ping_id: int
    #: round trip in seconds, on the core's clock
    rtt: float


@dataclass(frozen=True)
class SignalReceived(Event):
    """A SIGNAL frame for someone else than the core (``hello``, ``hello-ok``,
    ``udp`` messages for a UDP attempt, ...). The core keeps ``switch`` and
    ``upgrade`` for itself."""
    #: the decoded JSON object; its ``type`` key says what it is
    message: dict


@dataclass(frozen=True)
class PathSwitched(Event):
    """We send on another path from now on (the peer was told, and our
    unacknowledged messages were replayed on it)."""
    #: path id we send on now (``relay``, ``udp-<attempt>``)
    path_id: str
    #: its kind (``tcp-relay``, ``udp-managed``, ``udp-direct``, ``udp-turn``)
    kind: str
    #: path id we sent on until now (None if there was none)
    from_path_id: str | None
    #: why: ``upgrade``, ``failover: silent 0.60s``, ``recovered`` ...
    reason: str
    #: unacknowledged messages sent again on the new path
    replayed: int


@dataclass(frozen=True)
class UpgradeRequested(Event):
    """Start UDP attempt ``attempt`` now: set up a path and report
    ``path_added(f"udp-{attempt}", kind, now)`` or ``upgrade_failed(attempt, ...)``."""
    #: attempt number; tags the attempt's signaling both ways
    attempt: int
    #: True on the side that asked for it (the client); False when answering the peer
    initiator: bool


@dataclass(frozen=True)
class PathAbandoned(Event):
    """The core will not use this path any more: close it (and its resources)."""
    path_id: str
    #: why, for the log and the path's close reason
    reason: str


@dataclass(frozen=True)
class SessionEnded(Event):
    """The session is over; the pump closes every path. (Named apart from the
    exception ``errors.SessionClosed``, which is what the application sees.)"""
    #: short code: ``closed``, ``host-gone``, ``all-paths-lost``, ``protocol-error`` ...
    reason: str
    #: free text for humans
    detail: str
    #: True when this side closed it (``close()``), False when the peer or the paths did
    local: bool
    #: reliable messages sent before the close that the receiving session never got:
    #: ours the peer had not received when our close timed out (or the session ended
    #: while closing), plus, on a peer's CLOSE, those its ``sent`` marks name and we lack
    undelivered: int = 0


@dataclass(frozen=True)
class RelayLost(Event):
    """The relay leg ended in a session that may resume (``allow_resume``): the
    client dials a gateway for a new leg and hands it to ``path_added`` (kind
    ``tcp-relay``, id ``relay-<n>``); the host waits for the broker's dial."""
    #: the relay path that ended
    path_id: str
    #: why (the path's close reason, e.g. ``gateway-shutdown``, ``host-gone``)
    reason: str
    #: True: it carried the session, which now has no path and sends nothing until a
    #: new leg arrives; False: the session goes on over UDP, the new leg is a fallback
    detached: bool
    #: detached only: the core ends the session (``resume-timeout``) at this time
    resume_by: float | None = None
