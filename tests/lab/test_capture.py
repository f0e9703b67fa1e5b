"""The capture helper (netns_lab.capture) on its own, in a namespace: known UDP and TCP packets
come back in its summary, phase by phase; a capture that cannot start fails with its own error."""

from __future__ import annotations

import json

import pytest

from netns_lab import capture
from netns_lab.netns import LabError

pytestmark = [pytest.mark.lab, pytest.mark.needs("capture")]


def _send(lab, proto: str, port: int, msg: str) -> None:
    r = lab.python("client", "-m", "netns_lab.echo", "client", "--to", lab.addr("gateway"),
                   "--port", str(port), "--proto", proto, "--msg", msg, "--timeout", "2")
    assert json.loads(r.stdout)["ok"], r.stdout


def test_capture_summarises_known_flows(make_lab):
    lab = make_lab("port-restricted", "port-restricted")
    gw, client = lab.addr("gateway"), lab.addr("client")
    lab.echo_server("core", gw, udp=(9,), tcp=(443,))
    cap = capture.start(lab, "client", "lan", lab.workdir / "cap.json")
    udp_msg, tcp_msg = "u" * 37, "t" * 51
    for _ in range(3):
        _send(lab, "udp", 9, udp_msg)
    cap.next_phase()
    _send(lab, "tcp", 443, tcp_msg)
    phases = cap.stop()

    assert len(phases) == 2
    udp, tcp = phases
    assert udp["udp_bytes"][f"{client}>{gw}:9"] == 3 * len(udp_msg)
    replies = {k: v for k, v in udp["udp_bytes"].items() if k.startswith(f"{gw}>{client}:")}
    assert len(replies) == 3 and all(v > len(udp_msg) for v in replies.values()), udp
    assert udp["tcp_payload_bytes"] == {} and udp["dtls_records"] == {}
    assert tcp["udp_bytes"] == {}
    assert tcp["tcp_payload_bytes"][f"{client}>{gw}:443"] == len(tcp_msg)
    assert any(k.startswith(f"{gw}>{client}:") for k in tcp["tcp_payload_bytes"]), tcp
    assert tcp["packets"] >= 6          # handshake, data, echo, acks, close


def test_capture_that_cannot_start_fails_with_its_own_error(make_lab):
    lab = make_lab("port-restricted", "port-restricted")
    with pytest.raises(LabError) as ei:
        capture.start(lab, "client", "nosuchif0", lab.workdir / "cap.json", ready_timeout=15)
    msg = str(ei.value)
    # the helper's own words (interface, exception), its exit status, and no "capturing"
    assert "capture: cannot capture on 'nosuchif0'" in msg, msg
    assert "rc=2" in msg, msg
    assert not lab.procs, lab.procs          # nothing left running


def test_capture_that_dies_fails_at_stop_with_its_exit(make_lab):
    import os
    import signal

    lab = make_lab("port-restricted", "port-restricted")
    cap = capture.start(lab, "client", "lan", lab.workdir / "cap.json")
    os.kill(cap.proc.pid, signal.SIGKILL)
    with pytest.raises(LabError, match=r"capture failed: netns_lab.capture in nl-\w+-client exited rc=-9"):
        cap.stop()


def test_capture_without_libpcap_says_so_at_start(make_lab):
    """The fresh-machine failure of issue #10: scapy without libpcap cannot compile the filter.
    The helper must not claim "capturing"; its start fails with scapy's own reason."""
    import sys

    lab = make_lab("port-restricted", "port-restricted")
    hide_libpcap = ("import ctypes.util as u\n"
                    "real = u.find_library\n"
                    "u.find_library = lambda n: None if n == 'pcap' else real(n)\n"
                    "from netns_lab.capture import main\n"
                    f"raise SystemExit(main(['--iface', 'lan', '--out', {str(lab.workdir / 'c.json')!r}]))\n")
    with pytest.raises(LabError) as ei:
        lab.spawn("client", [sys.executable, "-c", hide_libpcap], ready=r"^capturing$", ready_timeout=15)
    assert "libpcap is not available" in str(ei.value) and "rc=2" in str(ei.value), str(ei.value)


def test_a_helper_that_exits_is_reported_with_its_own_stderr(make_lab):
    """Any helper (not only the capture): once it has exited, the lab can say how, with its own
    stderr, even after the log file in the run's directory is gone."""
    import shutil

    lab = make_lab("port-restricted", "port-restricted")
    p = lab.spawn("core", ["sh", "-c", "echo started; echo 'helper broke: no such thing' >&2; exit 3"])
    p.popen.wait(10)
    p.stop()                                         # joins the output reader
    shutil.rmtree(lab.workdir)
    report = lab.helper_failures()
    assert "exited rc=3" in report and "helper broke: no such thing" in report, report
