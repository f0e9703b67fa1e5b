"""Named firewall presets, as nft rules (pure: this module only builds scripts).

Site presets live on a site's edge router (``crtr`` for the client site, ``hrtr`` for the host
VNet) in a table ``inet labfw`` whose forward chain runs at priority ``filter - 10``, i.e. before
the router's own NAT/filter rules.  They only *drop* (a drop is final; an accept would not be),
and they drop established flows too, so toggling one mid-session cuts a live path at once.
Every rule has a counter with the preset name as comment: tests check that a blocked packet was
really dropped by that rule instead of trusting a timeout.

==========================  ========================================================================
preset                      effect (all forwarded traffic of the site, WAN and private link alike)
==========================  ========================================================================
udp-blocked                 every UDP packet dropped, both directions
udp-3390-blocked            UDP to or from port 3390 dropped (the RDP Shortpath managed port)
udp-turn-only               UDP allowed only to/from the TURN server address (198.18.0.20)
tcp-443-only                outbound TCP allowed only to port 443
gateway-blocked             all traffic between the site and the gateway (198.18.0.10) dropped;
                            toggle mid-session to cut the TLS relay leg
udp-blackhole               every UDP packet silently dropped, both directions, established flows
                            included: the same rules as udp-blocked, meant to be switched on and
                            off during a session (the UDP path disappears, then comes back)
host-managed-inbound        on the *host node itself* (input hook): drop every new inbound
                            connection except UDP 3390; the reverse-connect property of a host
                            that only dials out, with RDP Shortpath for managed networks on
==========================  ========================================================================
"""

from __future__ import annotations

from .plan import SERVICES

SITE_PRESETS = ("udp-blocked", "udp-3390-blocked", "udp-turn-only", "tcp-443-only",
                "gateway-blocked", "udp-blackhole")
HOST_PRESETS = ("host-managed-inbound",)
PRESETS = SITE_PRESETS + HOST_PRESETS


def _rules(preset: str, lan: str) -> list[str]:
    turn = SERVICES["turn"]
    gw = SERVICES["gateway"]
    c = "counter"
    cm = f'comment "{preset}"'
    if preset in ("udp-blocked", "udp-blackhole"):
        return [f"meta l4proto udp {c} drop {cm}"]
    if preset == "udp-3390-blocked":
        return [f"udp dport 3390 {c} drop {cm}", f"udp sport 3390 {c} drop {cm}"]
    if preset == "udp-turn-only":
        return [f'iifname "{lan}" meta l4proto udp ip daddr != {turn} {c} drop {cm}',
                f'oifname "{lan}" meta l4proto udp ip saddr != {turn} {c} drop {cm}']
    if preset == "tcp-443-only":
        return [f'iifname "{lan}" tcp dport != 443 {c} drop {cm}']
    if preset == "gateway-blocked":
        return [f"ip daddr {gw} {c} drop {cm}", f"ip saddr {gw} {c} drop {cm}"]
    raise ValueError(f"unknown site preset {preset!r}; choose from {SITE_PRESETS}")


def site_ruleset(presets, lan: str = "lan") -> str:
    """Replace the router's ``inet labfw`` table with the given presets (empty = no firewall)."""
    lines = ["table inet labfw", "delete table inet labfw", "table inet labfw {",
             "  chain fw_forward {", "    type filter hook forward priority filter - 10; policy accept;"]
    for p in presets:
        lines += ["    " + r for r in _rules(p, lan)]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def host_ruleset(presets) -> str:
    """Replace the host node's ``inet labfw`` table (input hook)."""
    lines = ["table inet labfw", "delete table inet labfw", "table inet labfw {",
             "  chain fw_input {", "    type filter hook input priority filter - 10; policy accept;"]
    for p in presets:
        if p != "host-managed-inbound":
            raise ValueError(f"unknown host preset {p!r}; choose from {HOST_PRESETS}")
        c = "counter"
        cm = f'comment "{p}"'
        lines += ['    iifname "lo" accept',
                  "    ct state established,related accept",
                  "    ct state new udp dport 3390 accept",
                  f"    ct state new {c} drop {cm}"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def parse_counters(nft_json: dict) -> dict[str, int]:
    """Sum packet counters per preset comment from ``nft -j list table inet labfw``."""
    out: dict[str, int] = {}
    for item in nft_json.get("nftables", []):
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                out[rule["comment"]] = out.get(rule["comment"], 0) + expr["counter"]["packets"]
    return out
