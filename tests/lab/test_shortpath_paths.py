"""Reverse-connect properties with real processes in the lab (the per-NAT-pair paths
are covered cell by cell in test_matrix.py)."""

import json
import sys
import time

import pytest

from netns_lab.scenario import client_argv, run_scenario, start_stack, wait_host_on_udp

pytestmark = pytest.mark.lab


def test_host_dropping_all_inbound_connections_still_gets_sessions():
    """The host node drops every new inbound connection (except UDP 3390 for managed
    mode) and sessions still come up, on the managed and on the hole-punched path."""
    r = run_scenario("port-restricted", "port-restricted", private_link=True, host_fw=("host-managed-inbound",))
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-managed"
    r = run_scenario("port-restricted", "port-restricted", host_fw=("host-managed-inbound",))
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-direct"


def test_host_egress_blocked_live_session_survives_new_launch_fails():
    """The control plane goes away for the host: a live UDP session keeps running,
    a new launch fails with a clear no-resources error."""
    from netns_lab.lab import Lab

    with Lab(client_nat="port-restricted", host_nat="port-restricted") as lab:
        stack = start_stack(lab)
        live = lab.spawn("client", [sys.executable, *client_argv(stack, "--wait-udp", "10", "--count", "5",
                                                                 "--hold", "16")])
        # the host's stats socket says when the session is on UDP
        assert wait_host_on_udp(stack, 15, live), "live session never reached UDP"
        lab.firewall("host", "gateway-blocked")
        t = time.monotonic()
        new = lab.python("client", *client_argv(stack, "--no-shortpath", "--count", "1", "--wait-udp", "0"),
                         check=False, timeout=60)
        assert new.returncode == 2, new.stdout
        assert "no-resources" in new.stderr, new.stderr
        assert time.monotonic() - t < 25
        assert live.popen.wait(40) == 0
        lines = [l for l in live.log_path.read_text().splitlines() if l.startswith("{")]
        info = json.loads(lines[-1])
        assert info["hold_error"] is None
        assert info["hold_sent"] == info["hold_echoed_in_order"] > 100
        assert info["transport"].startswith("udp")


def test_matrix_expectations_follow_nat_behaviour():
    from netns_lab.matrix import expected_path
    assert expected_path("symmetric", "symmetric") == "udp-turn"
    assert expected_path("symmetric", "restricted") == "udp-direct"     # ADF lets the new port in
    assert expected_path("port-restricted", "symmetric") == "udp-turn"
    assert expected_path("double", "symmetric") == "udp-turn"
    assert expected_path("full-cone", "open") == "udp-managed"
