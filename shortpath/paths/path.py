"""Path kinds, their quality, and the comparator that decides which is better.

Preference, best first: ``udp-managed`` (private network, no NAT, no relay),
``udp-direct`` (STUN hole punching), ``udp-turn`` (through coturn), and the
``tcp-relay`` through the gateway, which is always there and always last.

The comparator is deliberately sticky (like Tailscale's betterAddr): a path of
the *same* kind must be clearly better -- more than ``RTT_GAIN`` faster -- to
replace the current one, and a UDP path is not taken over the relay when its
measured loss is above ``MAX_LOSS`` (a path that loses a quarter of its probes
would only flap).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFERENCE = {"udp-managed": 0, "udp-direct": 1, "udp-turn": 2, "tcp-relay": 9}
RELAY = "tcp-relay"
#: a same-kind path must beat the current RTT by this fraction to replace it
RTT_GAIN = 0.10
#: above this probe loss a UDP path is not worth switching to
MAX_LOSS = 0.25


@dataclass
class Quality:
    rtt: float | None = None     # smoothed RTT in seconds, None until measured
    loss: float = 0.0            # fraction of recent probes unanswered


def better(kind: str, q: Quality, cur_kind: str, cur_q: Quality) -> bool:
    """Should a path of ``kind``/``q`` replace the current one?"""
    if kind not in PREFERENCE or cur_kind not in PREFERENCE:
        raise ValueError(f"unknown path kind {kind!r} or {cur_kind!r}")
    if kind != RELAY and q.loss > MAX_LOSS:
        return False
    pk, pc = PREFERENCE[kind], PREFERENCE[cur_kind]
    if pk != pc:
        return pk < pc
    if q.rtt is None or cur_q.rtt is None:
        return False
    return q.rtt < cur_q.rtt * (1.0 - RTT_GAIN)
