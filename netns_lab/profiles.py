"""Named network profiles for benchmarks: impairment applied per direction of one link.

    from netns_lab.profiles import PROFILES, apply_profile
    apply_profile(lab, "rtt40-loss2")            # client-lan, both directions

Every path between the client site and the host site (raw sockets over the private link,
the gateway relay, managed, hole-punched, TURN) crosses the ``client-lan`` link, so impairing
that link in both directions gives every path the same added delay and loss: a profile's
RTT is ``2 * one_way_ms`` on top of the lab's own (sub-millisecond) latency. Loss and jitter
are applied in each direction independently (``loss=0.02`` = 2 % each way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .impair import gilbert_elliott

#: The link impaired by default (crossed by every client<->host path in the lab).
DEFAULT_LINK = "client-lan"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    params: dict = field(default_factory=dict)   # netns_lab.impair.Impairment fields, per direction

    @property
    def one_way_ms(self) -> float:
        return float(self.params.get("delay_ms", 0.0))

    @property
    def rtt_ms(self) -> float:
        return 2 * self.one_way_ms


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("clean", "no impairment"),
    Profile("rtt40", "40 ms RTT", {"delay_ms": 20}),
    Profile("rtt40-loss1", "40 ms RTT, 1 % random loss each way", {"delay_ms": 20, "loss": 0.01}),
    Profile("rtt40-loss2", "40 ms RTT, 2 % random loss each way", {"delay_ms": 20, "loss": 0.02}),
    Profile("rtt40-loss5", "40 ms RTT, 5 % random loss each way", {"delay_ms": 20, "loss": 0.05}),
    Profile("rtt40-burst", "40 ms RTT, Gilbert-Elliott loss (2 % mean, mean burst 4 packets) each way",
            {"delay_ms": 20, **gilbert_elliott(0.02, 4)}),
    # jitter_ms is the standard deviation of each direction's one-way delay (time-correlated,
    # so it does not reorder); delay < 2.5 * jitter, so the emulator clamps the rare negative tail.
    Profile("rtt40-jitter10", "40 ms RTT, 10 ms jitter each way", {"delay_ms": 20, "jitter_ms": 10}),
    Profile("bw10", "40 ms RTT, 10 Mbit/s bottleneck each way (tbf, 50 ms queue)",
            {"delay_ms": 20, "rate_kbit": 10_000, "rate_queue_ms": 50}),
)}


def apply_profile(lab, profile: str | Profile, link: str = DEFAULT_LINK) -> Profile:
    """Replace the impairment of ``link`` (both directions) with ``profile``'s."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    lab.impair(link, "both", **p.params)
    return p


def isolate_private_link(lab, keep_udp_ports=(3390,)) -> None:
    """On the client router, drop UDP crossing the private link unless one end uses a port in
    ``keep_udp_ports``. Managed Shortpath (UDP 3390) and chosen benchmark ports still use the
    private link; ICE host-candidate pairs do not, so a direct path must hole-punch through
    both NATs with STUN (what ``udp-direct`` means on the Internet). TCP is untouched.
    (Written as accepts then a drop: a negated one-element set, ``!= { 3390 }``, also
    dropped traffic to 3390 with this nft.)"""
    ports = ", ".join(str(int(p)) for p in keep_udp_ports)
    lab.client_router.nft(f"""table inet benchpl {{
    chain benchfwd {{
        type filter hook forward priority filter - 20; policy accept;
        iifname "pl" udp sport {{ {ports} }} accept
        iifname "pl" udp dport {{ {ports} }} accept
        oifname "pl" udp sport {{ {ports} }} accept
        oifname "pl" udp dport {{ {ports} }} accept
        iifname "pl" meta l4proto udp counter drop
        oifname "pl" meta l4proto udp counter drop
    }}
}}
""")


def packet_sized_segments(lab, link: str = DEFAULT_LINK) -> None:
    """Make both ends of ``link`` transmit MTU-sized packets (``gso_max_segs 1``).

    veth devices hand TCP super-packets of up to 64 KB to the next namespace, and the
    emulator decides loss per packet it sees: without this, "2 % loss" would hit a 45-segment
    TCP burst as one packet and TCP would see far less loss per byte than UDP does."""
    l = lab.links[link]
    for end in (l.a, l.b):
        lab.nodes[end.node].run(["ip", "link", "set", "dev", end.ifname, "gso_max_segs", "1"])
