"""The lab's address plan, link names and node roles (pure data, no side effects).

Everything here exists only inside network namespaces that a lab run creates; nothing is
routed outside them.  The "internet" uses the benchmarking range 198.18.0.0/15 (RFC 2544),
LANs use 10.x (RFC 1918) and the carrier-grade NAT segment uses 100.64.0.0/24 (RFC 6598),
so a reader can tell from an address alone which side of which NAT it lives on::

                     private link 10.255.0.0/30 (no NAT, "managed network")
            .------------------------------------------------------------------.
            |                                                                  |
    client --lan-- crtr [--lan-- cgn] --wan--  core  --wan-- hrtr --lan-- host
   10.1.0.10   10.1.0.1                                          10.2.0.1  10.2.0.10
          (198.19.1.0/24 when "open")                          (198.19.2.0/24 when "open")

   client WAN 198.18.1.0/24: core .1, client edge router .2 (crtr, or cgn with double NAT)
   CGN inside 100.64.0.0/24: cgn .1, crtr .2            (only with double NAT)
   host WAN   198.18.2.0/24: core .1, hrtr .2
   core service addresses (on the core's loopback):
     198.18.0.1  stun      RFC 5780-style probe, primary address
     198.18.0.2  stun-alt  probe alternate address (a second public address)
     198.18.0.10 gateway   the TLS reverse-connect gateway
     198.18.0.20 turn      coturn (3478 UDP/TCP, TLS 443)

Link names and what "up"/"down" mean for impairment:

  ===========  ======================  ==========================================
  link         ends (a <-> b)          "up" direction
  ===========  ======================  ==========================================
  client-lan   client <-> crtr         client -> crtr
  client-cgn   crtr   <-> cgn          crtr -> cgn (double NAT only)
  client-wan   edge   <-> core         edge -> core (edge = cgn or crtr)
  host-wan     hrtr   <-> core         hrtr -> core
  host-lan     host   <-> hrtr         host -> hrtr
  private      crtr   <-> hrtr         crtr -> hrtr (client site -> host VNet)
  ===========  ======================  ==========================================
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Node roles (short, they end up in namespace names "nl-<run>-<role>").
CLIENT = "client"
CLIENT_ROUTER = "crtr"
CGN = "cgn"
CORE = "core"
HOST_ROUTER = "hrtr"
HOST = "host"

ROUTERS = (CLIENT_ROUTER, CGN, HOST_ROUTER)

# Core service addresses (all on the core namespace's loopback device).
SERVICES = {
    "stun": "198.18.0.1",
    "stun-alt": "198.18.0.2",
    "gateway": "198.18.0.10",
    "turn": "198.18.0.20",
}

INTERNET = ipaddress.ip_network("198.18.0.0/15")
CLIENT_WAN = ipaddress.ip_network("198.18.1.0/24")
HOST_WAN = ipaddress.ip_network("198.18.2.0/24")
CGN_NET = ipaddress.ip_network("100.64.0.0/24")
PRIVATE_NET = ipaddress.ip_network("10.255.0.0/30")
CLIENT_LAN_PRIVATE = ipaddress.ip_network("10.1.0.0/24")
HOST_LAN_PRIVATE = ipaddress.ip_network("10.2.0.0/24")
CLIENT_LAN_PUBLIC = ipaddress.ip_network("198.19.1.0/24")
HOST_LAN_PUBLIC = ipaddress.ip_network("198.19.2.0/24")

# Ranges coturn must accept as peers (some coturn builds deny private ranges by default).
LAB_PEER_RANGES = (
    ("198.18.0.0", "198.19.255.255"),
    ("10.0.0.0", "10.255.255.255"),
    ("100.64.0.0", "100.127.255.255"),
)


def host_ip(net: ipaddress.IPv4Network, index: int) -> str:
    return str(net.network_address + index)


@dataclass(frozen=True)
class End:
    """One end of a veth link: node role, interface name inside that node, address/prefix."""

    node: str
    ifname: str
    addr: str | None  # "a.b.c.d/len" or None
    @property
    def ip(self) -> str | None:
        return self.addr.split("/")[0] if self.addr else None


@dataclass(frozen=True)
class Link:
    name: str
    a: End  # the "inner" end: traffic a -> b is "up"
    b: End


@dataclass(frozen=True)
class Route:
    node: str
    dest: str  # "default" or a prefix
    via: str


def lan_nets(client_open: bool, host_open: bool):
    cl = CLIENT_LAN_PUBLIC if client_open else CLIENT_LAN_PRIVATE
    hl = HOST_LAN_PUBLIC if host_open else HOST_LAN_PRIVATE
    return cl, hl


def build_plan(*, double_nat: bool, private_link: bool, client_open: bool, host_open: bool):
    """Return (nodes, links, routes) for one topology.  Pure."""
    cl, hl = lan_nets(client_open, host_open)
    nodes = [CLIENT, CLIENT_ROUTER] + ([CGN] if double_nat else []) + [CORE, HOST_ROUTER, HOST]
    links: list[Link] = [
        Link("client-lan", End(CLIENT, "lan", f"{host_ip(cl, 10)}/24"),
             End(CLIENT_ROUTER, "lan", f"{host_ip(cl, 1)}/24")),
    ]
    edge = CGN if double_nat else CLIENT_ROUTER
    if double_nat:
        links.append(Link("client-cgn", End(CLIENT_ROUTER, "wan", f"{host_ip(CGN_NET, 2)}/24"),
                          End(CGN, "lan", f"{host_ip(CGN_NET, 1)}/24")))
    links += [
        Link("client-wan", End(edge, "wan", f"{host_ip(CLIENT_WAN, 2)}/24"),
             End(CORE, "to-client", f"{host_ip(CLIENT_WAN, 1)}/24")),
        Link("host-wan", End(HOST_ROUTER, "wan", f"{host_ip(HOST_WAN, 2)}/24"),
             End(CORE, "to-host", f"{host_ip(HOST_WAN, 1)}/24")),
        Link("host-lan", End(HOST, "lan", f"{host_ip(hl, 10)}/24"),
             End(HOST_ROUTER, "lan", f"{host_ip(hl, 1)}/24")),
    ]
    if private_link:
        links.append(Link("private", End(CLIENT_ROUTER, "pl", f"{host_ip(PRIVATE_NET, 1)}/30"),
                          End(HOST_ROUTER, "pl", f"{host_ip(PRIVATE_NET, 2)}/30")))

    routes = [
        Route(CLIENT, "default", host_ip(cl, 1)),
        Route(HOST, "default", host_ip(hl, 1)),
        Route(HOST_ROUTER, "default", host_ip(HOST_WAN, 1)),
        Route(CORE, str(CLIENT_LAN_PUBLIC), host_ip(CLIENT_WAN, 2)),
        Route(CORE, str(HOST_LAN_PUBLIC), host_ip(HOST_WAN, 2)),
    ]
    if double_nat:
        routes += [Route(CLIENT_ROUTER, "default", host_ip(CGN_NET, 1)),
                   Route(CGN, "default", host_ip(CLIENT_WAN, 1))]
    else:
        routes.append(Route(CLIENT_ROUTER, "default", host_ip(CLIENT_WAN, 1)))
    if private_link:
        routes += [Route(CLIENT_ROUTER, str(hl), host_ip(PRIVATE_NET, 2)),
                   Route(HOST_ROUTER, str(cl), host_ip(PRIVATE_NET, 1))]
    return nodes, links, routes
