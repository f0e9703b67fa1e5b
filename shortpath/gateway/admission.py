"""Who may hold a not-yet-authenticated connection to the gateway (pure).

Every TCP connection costs a file descriptor and, once TLS starts, a TLS
object and read buffer, from ``accept()`` until its first control message
proves who it is. Before issue #11 only a global cap existed and it started
counting after the TLS handshake, so one address could hold every slot (idle
TLS, or silent TCP that never finished the handshake) and lock out every real
client and every host data leg. The rules now, all counted from ``accept()``
until the first message (or the close):

* ``per_source``: at most this many pre-auth connections from one source
  address;
* ``total``: at most this many pre-auth connections from *strangers* in all;
* a **trusted** source -- the address of a live, authenticated host control
  channel -- is not counted against ``total`` (its data legs are never starved
  by strangers) and has its own per-source cap, ``trusted_per_source``. A
  stranger behind the very same address as a host shares that allowance:
  sources are addresses, nothing finer.

:func:`plan_caps` keeps the caps under the process's file-descriptor limit
(strangers may use at most half of what is left after a fixed reserve),
because the default global cap (2000) is above the usual soft limit of 1024,
where ``accept()`` itself starts failing for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

#: descriptors kept for the process itself (listeners, admin socket, logs, state files, DNS...)
FD_RESERVE = 64


@dataclass(frozen=True)
class Caps:
    total: int
    per_source: int
    trusted_per_source: int


def plan_caps(configured_total: int, configured_per_source: int, fd_soft_limit: Optional[int]) -> Caps:
    """The caps to enforce: the configured ones, lowered so that strangers'
    pre-auth connections take at most half of the descriptors above
    :data:`FD_RESERVE` (``fd_soft_limit`` None = unknown: no lowering)."""
    total = max(1, int(configured_total))
    if fd_soft_limit is not None and fd_soft_limit > 0:
        total = min(total, max(1, (fd_soft_limit - FD_RESERVE) // 2))
    per_source = max(1, min(int(configured_per_source), total))
    return Caps(total=total, per_source=per_source, trusted_per_source=max(per_source, min(total, 8 * per_source)))


@dataclass
class Ticket:
    """One admitted pre-auth connection; hand it back to :meth:`Admission.release`."""
    source: str
    trusted: bool
    released: bool = False


class Admission:
    """Counts pre-auth connections per source and in total; no I/O."""

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self.total = 0                       # strangers' pre-auth connections
        self.by_source: dict[str, int] = {}  # pre-auth connections per source (strangers and trusted)
        self._trusted: dict[str, int] = {}   # source -> live authenticated host channels

    def admit(self, source: str) -> "Ticket | str":
        """A Ticket, or the reason for refusing: "per-source" or "total"."""
        trusted = source in self._trusted
        n = self.by_source.get(source, 0)
        if n >= (self.caps.trusted_per_source if trusted else self.caps.per_source):
            return "per-source"
        if not trusted and self.total >= self.caps.total:
            return "total"
        self.by_source[source] = n + 1
        if not trusted:
            self.total += 1
        return Ticket(source, trusted)

    def release(self, ticket: Ticket) -> None:
        """The connection authenticated or ended. Idempotent."""
        if ticket.released:
            return
        ticket.released = True
        n = self.by_source.get(ticket.source, 0) - 1
        if n > 0:
            self.by_source[ticket.source] = n
        else:
            self.by_source.pop(ticket.source, None)
        if not ticket.trusted:
            self.total -= 1

    def trust(self, source: str) -> None:
        """An authenticated host control channel from ``source`` is up."""
        self._trusted[source] = self._trusted.get(source, 0) + 1

    def untrust(self, source: str) -> None:
        n = self._trusted.get(source, 0) - 1
        if n > 0:
            self._trusted[source] = n
        else:
            self._trusted.pop(source, None)

    @property
    def pending(self) -> int:
        """All pre-auth connections (strangers and trusted sources)."""
        return sum(self.by_source.values())
