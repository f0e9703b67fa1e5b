"""shortpath netcheck (issue #14): the RFC 5780 verdicts as tables, then the real
command against coturn listening on two loopback addresses (RFC 5780 mode: its
answers carry OTHER-ADDRESS and honour CHANGE-REQUEST), over UDP, TCP and TLS,
plus a gateway. The NAT verdicts per lab NAT type are tests/lab/test_netcheck_lab.py."""

import json
import shutil
import subprocess
import time

import pytest

from shortpath.netcheck import AD, APD, EI, NONE, filtering_behaviour, mapping_behaviour
from tests.integration.test_cli_errors import cli

L, M1, M2 = ("10.0.0.2", 5000), ("198.51.100.7", 40000), ("198.51.100.7", 40001)


@pytest.mark.parametrize("local,m1,m2,m3,expect", [
    (L, L, L, L, NONE),                 # mapped == local: no NAT
    (L, M1, M1, M1, EI),
    (L, M1, M2, M2, AD),
    (L, M1, M2, ("198.51.100.7", 40002), APD),
    (L, None, None, None, None),        # no answer: no verdict
    (L, M1, None, None, None),
])
def test_mapping_verdicts(local, m1, m2, m3, expect):
    assert mapping_behaviour(local, m1, m2, m3) == expect


@pytest.mark.parametrize("both,port,expect", [
    (True, None, EI), (False, True, AD), (False, False, APD), (None, None, None), (False, None, None)])
def test_filtering_verdicts(both, port, expect):
    assert filtering_behaviour(both, port) == expect


@pytest.fixture
def coturn_two_addresses(tmp_path):
    from tests.component.conftest_udp import coturn_ports, make_self_signed, stun_binding_probe
    binary = shutil.which("turnserver")
    if binary is None:
        from tests.conftest import is_root
        (pytest.fail if is_root() else pytest.skip)("coturn (turnserver) is not installed")
    port, tls_port = coturn_ports()
    cert, key = make_self_signed(tmp_path)
    conf = tmp_path / "turnserver.conf"
    conf.write_text("\n".join([
        "listening-ip=127.0.0.1", "listening-ip=127.0.0.2", "relay-ip=127.0.0.1",
        f"listening-port={port}", f"tls-listening-port={tls_port}", f"alt-listening-port={port + 1}",
        f"cert={cert}", f"pkey={key}", "use-auth-secret", "static-auth-secret=x", "realm=netcheck.test",
        "no-cli", "no-dtls", "fingerprint", f"pidfile={tmp_path / 'pid'}", f"log-file={tmp_path / 'log'}",
        "simple-log", "no-stdout-log", f"userdb={tmp_path / 'db'}"]) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert stun_binding_probe("127.0.0.1", port, time.monotonic() + 10), "coturn did not start"
        yield port, tls_port, str(cert)
    finally:
        proc.terminate()          # by PID
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_netcheck_cli_against_coturn_and_a_gateway(coturn_two_addresses, tmp_path):
    from tests.integration.test_cli_errors import Proc
    port, tls_port, turn_ca = coturn_two_addresses
    gw = Proc("gateway", "--listen", "127.0.0.1:0", "--state", str(tmp_path / "gw"))
    try:
        ready = json.loads(gw.wait_line(gw.out, lambda l: "gateway-ready" in l))
        r = cli("netcheck", "--stun", f"127.0.0.1:{port}", "--turn", f"127.0.0.1:{port}",
                "--turn-tls", f"127.0.0.1:{tls_port}", "--turn-ca", turn_ca,
                "--gateway", f"127.0.0.1:{ready['port']}", "--gateway", "127.0.0.1:1", "--ca", ready["cert"],
                "--json")
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout)
        nat = rep["nat"]
        assert nat["udp"] and nat["other_address"].startswith("127.0.0.2:"), nat
        # loopback has no NAT and no filter: answers from the other address and port arrive
        assert (nat["mapping"], nat["filtering"]) == (NONE, EI), nat
        assert [(s["transport"], s["ok"]) for s in rep["stun_streams"]] == [("tcp", True), ("tls", True)]
        assert rep["pick"]["gateway"] == f"127.0.0.1:{ready['port']}"
        assert [g["rtt_ms"] is None for g in rep["gateways"]] == [False, True]
        human = cli("netcheck", "--stun", f"127.0.0.1:{port}", "--gateway", f"127.0.0.1:{ready['port']}",
                    "--ca", ready["cert"])
        assert human.returncode == 0 and "mapping=none filtering=endpoint-independent" in human.stdout, human
        assert "pick        127.0.0.1:" in human.stdout
    finally:
        gw.stop()


async def test_managed_port_open_vs_closed(tmp_path):
    """A live managed listener stays silent to a bare STUN Binding (it answers only ICE
    checks): open-or-filtered; a port nobody listens on sends ICMP back: closed."""
    import asyncio
    import socket

    from shortpath.demo import LocalStack
    from shortpath.netcheck import managed_check
    from tests.conftest import FAST
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST) as st:
        ip, port = st.hosts[0].listener.address
        live = await asyncio.to_thread(managed_check, f"{ip}:{port}", 0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    dead = await asyncio.to_thread(managed_check, f"127.0.0.1:{free}", 0.3)
    assert (live["verdict"], dead["verdict"]) == ("open-or-filtered", "closed")


def test_a_reflected_request_is_not_an_answer():
    """A socket connected to its own address hears its own Binding request: no STUN answer."""
    import socket

    from shortpath import netcheck
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.connect(s.getsockname())
        req = netcheck._binding()
        s.send(bytes(req))
        s.settimeout(2)
        data = s.recv(2048)
    assert netcheck._parse(data, req.transaction_id) is None


def test_managed_check_never_probes_from_the_port_it_probes(monkeypatch):
    """On loopback the kernel may give the probing socket the very port it probes (seen once in
    CI: a free port reported "answered"). The check must move to another port and still see
    the ICMP error of a port nobody listens on."""
    import socket

    from shortpath import netcheck
    real = socket.socket
    trap = real(socket.AF_INET, socket.SOCK_DGRAM)
    trap.bind(("127.0.0.1", 0))
    port = trap.getsockname()[1]
    made = []

    def kernel(*a, **k):          # the first socket made "happens" to hold the probed port
        s = trap if not made else real(*a, **k)
        made.append(s)
        return s
    monkeypatch.setattr(socket, "socket", kernel)
    r = netcheck.managed_check(f"127.0.0.1:{port}", 0.3)
    monkeypatch.undo()
    assert len(made) == 2 and made[0].fileno() == -1       # the trapped socket was given up
    assert r["verdict"] == "closed", r
