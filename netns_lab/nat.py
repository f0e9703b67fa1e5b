"""NAT types named by RFC 4787 behaviour, implemented with real kernel NAT (nftables).

======================  =================================  ===================================
name                    mapping (RFC 4787 sec. 4.1)         filtering (RFC 4787 sec. 5)
======================  =================================  ===================================
open                    none (routed public LAN)           endpoint-independent (no firewall)
full-cone               endpoint-independent               endpoint-independent
restricted              endpoint-independent               address-dependent
port-restricted         endpoint-independent               address-and-port-dependent
symmetric               address-and-port-dependent         address-and-port-dependent
double                  two NAT routers in series (home router + carrier-grade NAT); each one
                        takes any of the types above, default port-restricted + port-restricted
======================  =================================  ===================================

How each is built (UDP; TCP always gets plain masquerade = EIM + APDF):

* **port-restricted**: ``masquerade`` on the WAN interface.  Linux keeps the source port when the
  resulting tuple is unique, so one internal socket keeps one external port for every destination
  (endpoint-independent mapping in practice), and only packets matching a conntrack entry, i.e.
  from the exact remote address *and port* contacted, get back in.
* **symmetric**: ``masquerade fully-random``: every new conntrack entry (new destination
  address/port) gets a random external port.
* **full-cone** / **restricted**: port-preserving masquerade plus two dynamic nft sets filled
  from the packet path *after* SNAT (postrouting, priority 200, when the packet already carries
  the external port):

  - ``@cone``: external port -> internal address . port (``ct original`` tuple), refreshed by
    every outbound packet of an outbound-initiated flow; entries expire like conntrack UDP
    streams (``map_timeout``).
  - ``@contacted``: external port . remote address, refreshed by every outbound packet.

  In prerouting (dstnat) a *new* inbound UDP packet to the WAN address whose destination port is
  in ``@cone`` is DNATed to the internal endpoint -- for full-cone from anyone, for restricted
  only if ``dport . saddr`` is in ``@contacted``.  The forward chain admits ``ct status dnat``.
  The DNAT creates an ordinary conntrack entry whose reply direction is translated back to the
  same external port, so the mapping stays endpoint-independent.

Routers drop unsolicited inbound traffic addressed to themselves (input policy drop): a router
that answered or accepted such packets would create conntrack state for the mapped port and break
hole punching with port clashes.  Conntrack entries survive rule changes, so switching a router's
NAT type flushes its conntrack table (``nfnl.flush_conntrack``) and the dynamic sets are
recreated with the table.

The lab never trusts this table: ``netns_lab.probe`` classifies every configured NAT from the
outside with an RFC 5780-style test and the tests compare against ``EXPECTED``.
"""

from __future__ import annotations

NAT_TYPES = ("open", "full-cone", "restricted", "port-restricted", "symmetric")

# Mapping / filtering vocabulary shared with netns_lab.probe.
EI, AD, APD, NONE = ("endpoint-independent", "address-dependent",
                     "address-and-port-dependent", "none")

EXPECTED = {
    "open": (NONE, EI),
    "full-cone": (EI, EI),
    "restricted": (EI, AD),
    "port-restricted": (EI, APD),
    "symmetric": (APD, APD),
}

ALIASES = {
    "none": "open", "public": "open",
    "eim-eif": "full-cone", "cone": "full-cone", "fullcone": "full-cone",
    "eim-adf": "restricted", "address-restricted": "restricted",
    "eim-apdf": "port-restricted", "port-restricted-cone": "port-restricted",
    "apdm-apdf": "symmetric",
}


def canonical(name: str) -> str:
    n = ALIASES.get(name.lower(), name.lower())
    if n not in NAT_TYPES:
        raise ValueError(f"unknown NAT type {name!r}; choose one of {NAT_TYPES} or 'double'")
    return n


def expected_double(inner: str, outer: str) -> tuple[str, str]:
    """What a probe beyond two NATs in series should see.

    Mapping: independent only if both are; otherwise the stricter one shows.  Filtering: the
    stricter of the two (a packet must pass both).  (APD > AD > EI; NONE is transparent.)
    """
    order = {NONE: -1, EI: 0, AD: 1, APD: 2}
    m = max(EXPECTED[inner][0], EXPECTED[outer][0], key=order.__getitem__)
    f = max(EXPECTED[inner][1], EXPECTED[outer][1], key=order.__getitem__)
    return m, f


def router_ruleset(nat_type: str, *, wan: str = "wan", lan: str = "lan",
                   private: str | None = None, map_timeout_s: int = 120) -> str:
    """nft script for one NAT router (replaces the tables ``labnat`` and ``labrtr``).  Pure."""
    nat_type = canonical(nat_type)
    trusted = [lan] + ([private] if private else [])
    trusted_set = "{ " + ", ".join(f'"{i}"' for i in trusted) + " }"
    lines = [
        # Idempotent replace: create-if-missing, then delete, then define afresh.
        "table ip labnat", "delete table ip labnat",
        "table inet labrtr", "delete table inet labrtr",
        "table inet labrtr {",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        '    iifname "lo" accept',
        "    ct state established,related accept",
        f"    iifname {trusted_set} accept",
        "    # anything else reaching the router itself from the WAN is unsolicited: drop",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        "    ct status dnat accept  # admitted by the full-cone/restricted dstnat rules",
        f'    iifname "{lan}" accept',
    ]
    if private:
        lines.append(f'    iifname "{private}" oifname "{lan}" accept  # managed network')
    if nat_type == "open":
        lines.append(f'    iifname "{wan}" accept  # open: routed public LAN, no filtering')
    lines += ["  }", "}"]
    if nat_type == "open":
        return "\n".join(lines) + "\n"

    masq = "masquerade fully-random" if nat_type == "symmetric" else "masquerade"
    lines += [
        "table ip labnat {",
        "  map cone {",
        "    type inet_service : ipv4_addr . inet_service",
        f"    flags dynamic,timeout; timeout {map_timeout_s}s;",
        "  }",
        "  set contacted {",
        "    type inet_service . ipv4_addr",
        f"    flags dynamic,timeout; timeout {map_timeout_s}s;",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "{wan}" {masq}',
        "  }",
    ]
    if nat_type in ("full-cone", "restricted"):
        lines += [
            "  chain learn {",
            "    # after SNAT: the packet carries the external port now",
            "    type filter hook postrouting priority 200; policy accept;",
            f'    oifname "{wan}" ct direction original meta l4proto udp '
            "update @cone { udp sport : ct original ip saddr . ct original proto-src }",
            f'    oifname "{wan}" meta l4proto udp update @contacted {{ udp sport . ip daddr }}',
            "  }",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
        ]
        if nat_type == "full-cone":
            lines.append(f'    iifname "{wan}" meta l4proto udp dnat ip to udp dport map @cone')
        else:
            lines.append(f'    iifname "{wan}" meta l4proto udp udp dport . ip saddr @contacted '
                         "dnat ip to udp dport map @cone")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
