"""Which remote ICE candidates we are willing to send connectivity checks to.

A candidate is only an address the peer *claims*; every one we accept makes
our ICE agent send STUN Binding requests there (and, for a host, from inside
its network). Without a filter a peer could point the host at anything it can
route to: its loopback services, link-local metadata endpoints, multicast
groups, or a thousand internal addresses. So before a remote candidate reaches
the ICE agent it passes :meth:`CandidateFilter.judge`, pure code (no sockets,
no clock) with these rules, in this order:

====================  ==========================================================
reason                dropped when
====================  ==========================================================
``too-many``          the peer already sent ``max_candidates`` candidates (all
                      of them count, kept or not: the cap bounds our work)
``unspecified``       0.0.0.0/8 or ``::`` (no host can be reached there)
``loopback``          127/8, ``::1`` -- unless the policy allows loopback
``link-local``        169.254/16, fe80::/10 (cloud metadata lives here)
``multicast``         224/4, ff00::/8; also 255.255.255.255 (``broadcast``)
``reserved``          240/4 and other IETF-reserved space
``denied``            inside one of ``denied_networks``
``not-allowed``       ``allowed_networks`` is set and the address is in none
====================  ==========================================================

IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are judged as the IPv4
address they carry. Private ranges (10/8, 172.16/12, 192.168/16, 100.64/10)
are *allowed* by default: the managed path lives on a private network, and a
NAT'd peer's host candidates are private too; a deployment that wants less
sets ``allowed_networks`` / ``denied_networks``.

Loopback is allowed only when the session itself runs over loopback (our own
host addresses are loopback, as in the demo and the loopback tests; see
:meth:`CandidatePolicy.for_local`) or when configured explicitly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Default cap on candidates accepted from one peer in one attempt. A normal
#: peer sends one host candidate per interface, one server-reflexive and up to
#: three relay candidates (UDP/TCP/TLS TURN): well under this.
DEFAULT_MAX_CANDIDATES = 16


def _networks(items: Iterable[str]) -> tuple[Network, ...]:
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise ValueError(f"bad network {item!r} in the candidate policy: {exc}") from None
    return tuple(out)


@dataclass(frozen=True)
class CandidatePolicy:
    """What remote candidate addresses we accept (see the module table)."""

    max_candidates: int = DEFAULT_MAX_CANDIDATES
    allow_loopback: bool = False
    #: empty = any address that passes the other rules
    allowed_networks: tuple[str, ...] = ()
    denied_networks: tuple[str, ...] = ()
    _allowed: tuple[Network, ...] = field(init=False, repr=False, compare=False)
    _denied: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")
        object.__setattr__(self, "_allowed", _networks(self.allowed_networks))
        object.__setattr__(self, "_denied", _networks(self.denied_networks))

    @classmethod
    def for_local(cls, local_addresses: Optional[Iterable[str]], **kw) -> "CandidatePolicy":
        """The policy for a session gathering on ``local_addresses``: loopback
        peers are allowed only if we ourselves gather on loopback (a session
        that runs over loopback); ``allow_loopback=`` in ``kw`` overrides."""
        if "allow_loopback" not in kw:
            kw["allow_loopback"] = any(_is_loopback(a) for a in (local_addresses or ()))
        return cls(**kw)


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def judge(policy: CandidatePolicy, ip: str, received_before: int) -> Optional[str]:
    """Why the candidate at ``ip`` is dropped, or None to keep it.

    ``received_before``: how many candidates this peer sent before this one
    in the same attempt (kept or dropped)."""
    if received_before >= policy.max_candidates:
        return "too-many"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "not-an-address"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified or (addr.version == 4 and addr in _THIS_NETWORK):
        return "unspecified"
    if addr.is_loopback:
        return None if policy.allow_loopback and _allowed(policy, addr) else "loopback"
    if addr.is_link_local:
        return "link-local"
    if addr.version == 4 and addr == _BROADCAST:
        return "broadcast"
    if addr.is_multicast:
        return "multicast"
    if addr.is_reserved:
        return "reserved"
    if any(addr in net for net in policy._denied if net.version == addr.version):
        return "denied"
    if not _allowed(policy, addr):
        return "not-allowed"
    return None


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


def _allowed(policy: CandidatePolicy, addr) -> bool:
    if not policy._allowed:
        return True
    return any(addr in net for net in policy._allowed if net.version == addr.version)


class CandidateFilter:
    """One attempt's view: counts what the peer sent and what was dropped why.

    ``admit(ip)`` -> None (keep: pass the candidate to the ICE agent) or the
    drop reason. Pure: no I/O, no clock."""

    def __init__(self, policy: CandidatePolicy) -> None:
        self.policy = policy
        self.received = 0
        self.dropped: dict[str, int] = {}

    def admit(self, ip: str) -> Optional[str]:
        reason = judge(self.policy, ip, self.received)
        self.received += 1
        if reason is not None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return reason
