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


def test_host_dropping_all_inbound_connections_still_gets_sessions():
    """Reverse connect: the host node drops every new inbound connection (except UDP 3390
    for managed mode) and sessions still come up, on the managed and the punched path."""
    r = run_scenario("port-restricted", "port-restricted", private_link=True, host_fw=("host-managed-inbound",))
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-managed"
    r = run_scenario("port-restricted", "port-restricted", host_fw=("host-managed-inbound",))
    assert r["ok"], r.get("error")
    assert r["path"] == "udp-direct"


def _host_sessions(stack) -> list:
    import json
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(stack["work"] / "h1" / "host-h1.sock"))
        s.sendall(b"stats\n")
        return json.loads(s.makefile().readline())["sessions"]


def test_host_egress_blocked_live_session_survives_new_launch_fails():
    """The control plane goes away for the host: a live UDP session keeps running,
    a new launch fails with a clear no-resources error."""
    import json
    import sys
    import time
    from netns_lab.lab import Lab
    from netns_lab.scenario import client_argv, start_stack

    with Lab(client_nat="port-restricted", host_nat="port-restricted") as lab:
        stack = start_stack(lab)
        live = lab.spawn("client", [sys.executable, *client_argv(stack, "--wait-udp", "10", "--count", "5",
                                                                 "--hold", "16")])
        end = time.monotonic() + 15
        while time.monotonic() < end:          # the host's stats socket says when the session is on UDP
            try:
                sessions = _host_sessions(stack)
            except OSError:
                sessions = []
            if sessions and sessions[0]["transport"].startswith("udp"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("live session never reached UDP")
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


def _capture_session(client_nat, host_nat, *, private_link=False, client_fw=()):
    """Run a held session while capturing on the client's LAN; phase 2 starts once the host
    reports the session on UDP. Returns (client info, [phase summaries])."""
    import json
    import os
    import signal
    import sys
    import time
    from netns_lab.lab import Lab
    from netns_lab.scenario import client_argv, start_stack

    with Lab(client_nat=client_nat, host_nat=host_nat, private_link=private_link) as lab:
        stack = start_stack(lab)
        if client_fw:
            lab.firewall("client", *client_fw)
        out = stack["work"] / "capture.json"
        cap = lab.spawn("client", [sys.executable, "-m", "netns_lab.capture", "--iface", "lan",
                                   "--seconds", "60", "--out", str(out)], ready="capturing", ready_timeout=20)
        live = lab.spawn("client", [sys.executable, *client_argv(stack, "--wait-udp", "10", "--count", "5",
                                                                 "--hold", "6")])
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                sessions = _host_sessions(stack)
            except OSError:
                sessions = []
            if sessions and sessions[0]["transport"].startswith("udp"):
                break
            time.sleep(0.1)
        time.sleep(0.3)                      # let the switch-over replay drain before phase 2
        os.kill(cap.pid, signal.SIGUSR1)
        assert live.popen.wait(60) == 0
        lab.stop(cap)
        info = json.loads([l for l in live.log_path.read_text().splitlines() if l.startswith("{")][-1])
        return info, json.loads(out.read_text())["phases"]


def _gateway_tcp(phase):
    return sum(v for k, v in phase["tcp_payload_bytes"].items() if "198.18.0.10" in k)


def test_capture_managed_path_is_dtls_to_3390_and_bypasses_the_gateway():
    info, phases = _capture_session("port-restricted", "port-restricted", private_link=True)
    assert info["transport"] == "udp-managed" and info["hold_error"] is None
    after = phases[-1]
    dtls_to_host = sum(v for k, v in after["dtls_records"].items() if k.endswith(">10.2.0.10:3390"))
    assert dtls_to_host >= info["hold_sent"] // 2          # the held echoes went as DTLS to 3390
    assert _gateway_tcp(after) < 300                        # no session payload through the gateway
    assert _gateway_tcp(phases[0]) > 1000                   # (the relay did carry setup before)


def test_capture_turn_path_goes_through_the_relay_address():
    info, phases = _capture_session("symmetric", "symmetric")
    assert info["transport"] == "udp-turn" and info["hold_error"] is None
    after = phases[-1]
    to_turn = sum(v for k, v in after["udp_bytes"].items() if ">198.18.0.20:" in k)
    to_host_direct = sum(v for k, v in after["udp_bytes"].items() if "198.18.2." in k.split(">")[1])
    assert to_turn > 72 * info["hold_sent"] // 2            # session traffic goes to coturn
    assert to_host_direct == 0
    assert _gateway_tcp(after) < 300
