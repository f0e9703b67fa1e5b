"""Outputs of the path manager: small dataclasses under one base.

The manager (manager.py) never acts; it returns these for the session core
(shortpath/session/connection.py) to carry out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    """Base of every path-manager output."""


@dataclass(frozen=True)
class SwitchPath(Action):
    #: path id to send on from now on
    to: str
    #: path id we sent on until now
    from_: str
    #: why, e.g. ``upgrade``, ``failover: silent 0.60s``, ``recovered``
    reason: str


@dataclass(frozen=True)
class SendProbe(Action):
    #: path to send a PING on
    path_id: str
    #: True for a NAT keepalive on an idle path, False for a liveness probe
    keepalive: bool = False


@dataclass(frozen=True)
class StartUpgrade(Action):
    #: attempt number (increases by one per attempt; tags the signaling)
    attempt: int
    #: ``initial`` or ``retry``
    reason: str


@dataclass(frozen=True)
class ClosePath(Action):
    #: path the manager gave up on (replaced, or a standby path that never recovered)
    path_id: str
    #: why, for the log and the path's close reason
    reason: str
