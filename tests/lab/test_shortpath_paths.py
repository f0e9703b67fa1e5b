"""Which path a real session takes through real kernel NAT (gateway, host and client
are separate processes in their namespaces; see netns_lab/scenario.py).

The full fallback-behaviour matrix with packet-capture checks is issue 4's; these
cells are the ones every change must keep working.
"""

import pytest

from netns_lab.scenario import run_scenario

pytestmark = pytest.mark.lab


def _cands(r):
    return (r["local_candidate"] or {}).get("type"), (r["remote_candidate"] or {}).get("type")


def test_private_link_gives_managed_path_on_3390():
    r = run_scenario("port-restricted", "port-restricted", private_link=True)
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-managed"
    assert r["remote_candidate"]["port"] == 3390 and r["remote_candidate"]["ip"].startswith("10.2.")
    assert r["time_to_udp_ms"] is not None


def test_port_restricted_both_sides_hole_punch_with_stun():
    r = run_scenario("port-restricted", "port-restricted")
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-direct"
    assert "srflx" in _cands(r) or "prflx" in _cands(r)


def test_symmetric_both_sides_needs_turn():
    r = run_scenario("symmetric", "symmetric")
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-turn"
    assert "relay" in _cands(r)


def test_udp_blocked_client_reaches_turn_over_tcp():
    r = run_scenario("port-restricted", "open", client_fw=("udp-blocked",))
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-turn"
    assert r["local_candidate"]["type"] == "relay"


def test_udp_blocked_and_tcp_443_only_uses_turn_over_tls():
    r = run_scenario("port-restricted", "port-restricted", client_fw=("udp-blocked", "tcp-443-only"))
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-turn" and r["local_candidate"]["type"] == "relay"


def test_matrix_expectations_follow_nat_behaviour():
    from netns_lab.matrix import expected_path
    assert expected_path("symmetric", "symmetric") == "udp-turn"
    assert expected_path("symmetric", "restricted") == "udp-direct"     # ADF lets the new port in
    assert expected_path("port-restricted", "symmetric") == "udp-turn"
    assert expected_path("double", "symmetric") == "udp-turn"
    assert expected_path("full-cone", "open") == "udp-managed"
