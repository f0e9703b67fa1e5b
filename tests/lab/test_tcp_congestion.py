"""Lab.set_tcp_congestion: the namespaces' default TCP congestion control while a block runs
(what benchmarks/lab_paths.py's tcp-relay-cubic path uses), and that everything comes back.

A TCP echo server listens on the gateway address in the core *before* the block, a client in
the client namespace connects inside it: the core's accepted socket must get the block's
control (as the relay gateway's socket to a client does), and a connection made after the
block gets the previous default again."""

from __future__ import annotations

import sys

import pytest

from netns_lab.lab import TCP_ALLOWED_CC, TCP_AVAILABLE_CC, LabError

pytestmark = pytest.mark.lab

NODES = ("client", "core")

# Connect to the gateway, print our port and the socket's control, hold it until stdin closes.
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 443), timeout=5)
cc = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\\0")[0].decode()
print("READY", s.getsockname()[1], cc, flush=True)
sys.stdin.read()
"""


def _other_cc(default: str) -> str:
    avail = TCP_AVAILABLE_CC.read_text().split()
    for cand in ("cubic", "reno", "bbr"):
        if cand in avail and cand != default:
            return cand
    pytest.skip(f"only {avail} available: nothing to switch to")


def _connect(lab) -> tuple[object, str, dict]:
    """(client proc, client's own cc, the core's side of that connection from ss)."""
    before = {c["peer"] for c in lab.tcp_connections("core")}
    p = lab.spawn("client", [sys.executable, "-c", CLIENT, lab.addr("gateway")], stdin=True, ready=r"^READY")
    _, _port, cc = p.wait_for_line(r"^READY", 1).split()
    conns = lab.tcp_connections("core")
    core_side = [c for c in conns if c["local"].endswith(":443") and c["peer"] not in before]
    assert len(core_side) == 1, conns
    return p, cc, core_side[0]


def test_block_sets_and_restores_defaults(make_lab):
    lab = make_lab("port-restricted", "port-restricted")
    allowed_before = TCP_ALLOWED_CC.read_text().strip()
    defaults = {n: lab.node(n).read_sysctl("net.ipv4.tcp_congestion_control") for n in NODES}
    assert len(set(defaults.values())) == 1, defaults
    algo = _other_cc(defaults["client"])
    lab.echo_server("core", lab.addr("gateway"), tcp=(443,))       # listener made before the block

    with lab.set_tcp_congestion(NODES, algo):
        assert algo in TCP_ALLOWED_CC.read_text().split()
        for n in NODES:
            assert lab.node(n).read_sysctl("net.ipv4.tcp_congestion_control") == algo
        p1, cc1, core1 = _connect(lab)
    assert cc1 == algo
    assert core1["cc"] == algo, core1        # accepted after the switch: the gateway side too

    assert TCP_ALLOWED_CC.read_text().strip() == allowed_before
    for n in NODES:
        assert lab.node(n).read_sysctl("net.ipv4.tcp_congestion_control") == defaults[n]
    p2, cc2, core2 = _connect(lab)
    assert cc2 == defaults["client"] and core2["cc"] == defaults["core"], core2
    # the first connection keeps what it got
    still = [c for c in lab.tcp_connections("core") if c["peer"] == core1["peer"]]
    assert still and still[0]["cc"] == algo, still
    lab.stop(p1)
    lab.stop(p2)


def test_restores_on_error_and_refuses_unknown(make_lab):
    lab = make_lab("port-restricted", "port-restricted")
    allowed_before = TCP_ALLOWED_CC.read_text().strip()
    default = lab.client.read_sysctl("net.ipv4.tcp_congestion_control")
    algo = _other_cc(default)
    with pytest.raises(RuntimeError, match="boom"):
        with lab.set_tcp_congestion(NODES, algo):
            raise RuntimeError("boom")
    assert TCP_ALLOWED_CC.read_text().strip() == allowed_before
    assert lab.client.read_sysctl("net.ipv4.tcp_congestion_control") == default

    with pytest.raises(LabError, match="not available"):
        with lab.set_tcp_congestion(NODES, "no-such-cc"):
            pytest.fail("entered the block")
    assert TCP_ALLOWED_CC.read_text().strip() == allowed_before


def test_down_restores_the_global_list(make_lab):
    lab = make_lab("port-restricted", "port-restricted")
    allowed_before = TCP_ALLOWED_CC.read_text().strip()
    algo = _other_cc(lab.client.read_sysctl("net.ipv4.tcp_congestion_control"))
    cm = lab.set_tcp_congestion(NODES, algo)
    cm.__enter__()                   # a run that ends (signal, crash) inside the block
    lab.down()
    assert TCP_ALLOWED_CC.read_text().strip() == allowed_before
    with pytest.raises(LabError):    # its namespaces are gone: restoring them fails, loudly
        cm.__exit__(None, None, None)
    assert TCP_ALLOWED_CC.read_text().strip() == allowed_before

