"""Firewall presets: blocked traffic is dropped *by the preset's rule* (counter), allowed passes."""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.lab


def _dropped(lab, site, preset):
    return lab.firewall_counters(site).get(preset, 0)


def test_udp_blocked(echo_core):
    lab = echo_core
    gw = lab.addr("gateway")
    assert lab.reach("client", gw, 9, "udp")
    lab.firewall("client", "udp-blocked")
    assert not lab.reach("client", gw, 9, "udp", timeout=0.3)
    assert not lab.reach("client", lab.addr("host"), 3390, "udp", timeout=0.3)  # private link too
    assert _dropped(lab, "client", "udp-blocked") >= 2
    assert lab.reach("client", gw, 443, "tcp")  # TCP untouched
    lab.firewall("client")
    assert lab.reach("client", gw, 9, "udp")


def test_udp_3390_blocked(echo_core):
    lab = echo_core
    gw = lab.addr("gateway")
    lab.firewall("client", "udp-3390-blocked")
    assert not lab.reach("client", gw, 3390, "udp", timeout=0.3)
    assert _dropped(lab, "client", "udp-3390-blocked") >= 1
    assert lab.reach("client", gw, 3391, "udp")


def test_udp_turn_only(echo_core):
    lab = echo_core
    lab.firewall("client", "udp-turn-only")
    assert lab.reach("client", lab.addr("turn"), 9, "udp")
    assert not lab.reach("client", lab.addr("stun"), 9, "udp", timeout=0.3)
    assert _dropped(lab, "client", "udp-turn-only") >= 1


def test_tcp_443_only(echo_core):
    lab = echo_core
    gw = lab.addr("gateway")
    lab.firewall("client", "tcp-443-only")
    assert lab.reach("client", gw, 443, "tcp")
    assert not lab.reach("client", gw, 8443, "tcp", timeout=0.3)
    assert _dropped(lab, "client", "tcp-443-only") >= 1


def _session(lab, node, to, port, proto):
    p = lab.spawn(node, [sys.executable, "-m", "netns_lab.echo", "session", "--to", to,
                         "--port", str(port), "--proto", proto, "--timeout", "0.4"],
                  stdin=True, ready=r"^(CONNECTED|CONNECT-FAILED)$")
    assert p.lines[-1] == "CONNECTED"

    def ask(msg: str) -> str:
        mark = p.mark()
        p.send_line(msg)
        return p.wait_for_line(lambda s: s.startswith("seen ") or s == "TIMEOUT", 5, since=mark)
    return ask


def test_gateway_blocked_mid_session(echo_core):
    lab = echo_core
    ask = _session(lab, "host", lab.addr("gateway"), 443, "tcp")
    assert ask("one").endswith("one")
    lab.firewall("host", "gateway-blocked")
    assert ask("two") == "TIMEOUT"  # the established connection is cut
    assert _dropped(lab, "host", "gateway-blocked") >= 1
    lab.firewall("host")
    # TCP retransmits "two" and then "three" arrives: the same connection recovers.
    answers = [ask("three")]
    while answers[-1] == "TIMEOUT" and len(answers) < 20:  # RTO backoff: a few seconds at most
        answers.append(ask("again"))
    assert answers[-1].startswith("seen "), answers


def test_udp_blackhole_mid_session(echo_core):
    lab = echo_core
    ask = _session(lab, "client", lab.addr("stun"), 9, "udp")
    assert ask("a").endswith("a")
    lab.firewall("client", "udp-blackhole")
    assert ask("b") == "TIMEOUT"
    assert _dropped(lab, "client", "udp-blackhole") >= 1
    lab.firewall("client")
    assert ask("c").endswith("c")  # same socket, same NAT mapping: the path comes back


def test_host_managed_inbound(lab):
    lab.echo_server("host", lab.addr("host"), udp=(3390, 3391), tcp=(3389,))
    lab.echo_server("core", lab.addr("gateway"), tcp=(443,))
    host = lab.addr("host")
    assert lab.reach("client", host, 3391, "udp")  # before: the private link lets all in
    lab.firewall("host", "host-managed-inbound")
    assert lab.reach("client", host, 3390, "udp")
    assert not lab.reach("client", host, 3391, "udp", timeout=0.3)
    assert not lab.reach("client", host, 3389, "tcp", timeout=0.3)
    assert lab.firewall_counters("host").get("host-managed-inbound", 0) >= 2
    assert lab.reach("host", lab.addr("gateway"), 443, "tcp")  # reverse connect still works
