"""Topology lifecycle: namespaces, sysctls, addressing, private link, cleanup paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab import Lab, plan, state

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def _ns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def test_up_creates_namespaces_links_and_sysctls(make_lab):
    lab = make_lab("symmetric", "full-cone", private_link=True)
    names = [n.ns for n in lab.nodes.values()]
    assert all(_ns_exists(n) for n in names)
    assert all(len(n) <= 15 for n in names), "namespace names must stay short"
    assert lab.state is not None and lab.state.path.exists()
    assert json.loads(lab.state.path.read_text())["namespaces"] == names
    for l in lab.links_list:
        for end in (l.a, l.b):
            assert len(end.ifname) <= 15
            out = lab.node(end.node).ip("-br", "addr", "show", "dev", end.ifname).stdout
            assert end.ip in out and "UP" in out
    assert lab.client_router.read_sysctl("net.ipv4.ip_forward") == "1"
    assert lab.core.read_sysctl("net.ipv4.ip_forward") == "1"
    assert lab.client.read_sysctl("net.ipv4.ip_forward") == "0"
    for n in lab.nodes.values():
        assert n.read_sysctl("net.ipv4.conf.all.rp_filter") == "0"
        assert n.read_sysctl("net.netfilter.nf_conntrack_udp_timeout") == "30"
        assert n.read_sysctl("net.netfilter.nf_conntrack_udp_timeout_stream") == "120"
    core_lo = lab.core.ip("-br", "addr", "show", "dev", "lo").stdout
    for ip in plan.SERVICES.values():
        assert ip in core_lo


def test_down_removes_everything():
    lab = Lab(private_link=True).up()
    names = [n.ns for n in lab.nodes.values()]
    p = lab.spawn("core", ["sleep", "300"])
    workdir = lab.workdir
    state_file = lab.state.path
    lab.down()
    assert not any(_ns_exists(n) for n in names)
    assert p.popen.poll() is not None
    assert not state_file.exists() and not workdir.exists()
    assert lab.timings["up_s"] > 0 and lab.timings["down_s"] > 0
    lab.down()  # idempotent


def test_private_link_has_no_nat_and_internet_path_has(lab):
    lab.spawn("host", [sys.executable, "-m", "netns_lab.echo", "server", "--bind",
                       lab.addr("host"), "--udp", "3390"], ready=r"^READY")
    r = lab.python("client", "-m", "netns_lab.echo", "client", "--to", lab.addr("host"),
                   "--port", "3390")
    reply = json.loads(r.stdout)["reply"]
    assert reply.startswith(f"seen {lab.addr('client')}:"), reply  # client's own LAN address
    rep = lab.probe_nat("client")
    assert rep.mapped[0] == lab.addr("client-public") != rep.local[0]


def test_routers_drop_unsolicited_inbound(lab):
    # An echo server on the client router itself answers its LAN but not the internet:
    # unsolicited inbound traffic to the router is dropped (input policy drop, no ICMP).
    lab.echo_server("crtr", "0.0.0.0", udp=(9,), tcp=(22,))
    assert lab.reach("client", "10.1.0.1", 9, "udp")
    assert lab.reach("client", "10.1.0.1", 22, "tcp")
    assert not lab.reach("core", lab.addr("client-public"), 9, "udp", timeout=0.3)
    assert not lab.reach("core", lab.addr("client-public"), 22, "tcp", timeout=0.3)


def test_two_labs_side_by_side(make_lab):
    a = make_lab("full-cone", "open")
    b = make_lab("symmetric", "open")
    assert a.run_id != b.run_id
    assert a.probe_nat("client").filtering == "endpoint-independent"
    assert b.probe_nat("client").mapping == "address-and-port-dependent"


def _child(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)


def test_stale_cleanup_after_crash():
    # The child builds a lab, starts a process in it and dies without any cleanup.
    child = _child(
        "import os,sys\n"
        "from netns_lab import Lab\n"
        "lab = Lab().up()\n"
        "p = lab.spawn('core', ['sleep', '300'])\n"
        "print(lab.run_id, p.pid, p.start_time, flush=True)\n"
        "os._exit(0)\n")
    out, _ = child.communicate(timeout=60)
    run_id, pid, start = out.split()
    run = [r for r in state.list_runs() if r.run_id == run_id]
    assert run and run[0].is_stale()
    assert state.pid_alive(int(pid), int(start))
    results = dict(state.cleanup(stale_only=True))
    assert results[run_id] == []
    assert not state.pid_alive(int(pid), int(start))
    assert not any(_ns_exists(n) for n in run[0].namespaces)
    assert not run[0].path.exists()


def test_sigterm_cleans_up():
    child = _child(
        "import time\n"
        "from netns_lab import Lab\n"
        "lab = Lab().up()\n"
        "lab.spawn('client', ['sleep', '300'])\n"
        "print(lab.run_id, flush=True)\n"
        "time.sleep(60)\n")
    run_id = child.stdout.readline().strip()
    names = [f"nl-{run_id}-{r}" for r in ("client", "crtr", "core", "hrtr", "host")]
    assert all(_ns_exists(n) for n in names)
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == -signal.SIGTERM
    assert not any(_ns_exists(n) for n in names)
    assert not any(r.run_id == run_id for r in state.list_runs())


def test_cli_up_run_down():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    up = subprocess.run([sys.executable, "-m", "netns_lab", "up", "--client-nat", "double",
                         "--private-link"], capture_output=True, text=True, env=env, check=True)
    info = json.loads(up.stdout)
    rid = info["run_id"]
    try:
        assert "cgn" in info["namespaces"]
        r = subprocess.run([sys.executable, "-m", "netns_lab", "run", rid, "client", "--",
                            "ip", "-br", "addr"], capture_output=True, text=True, env=env)
        assert "10.1.0.10/24" in r.stdout
        # a detached run is not stale: cleanup --stale leaves it alone
        subprocess.run([sys.executable, "-m", "netns_lab", "cleanup", "--stale"], env=env,
                       check=True, capture_output=True)
        assert _ns_exists(f"nl-{rid}-client")
    finally:
        down = subprocess.run([sys.executable, "-m", "netns_lab", "down", rid],
                              capture_output=True, text=True, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not _ns_exists(f"nl-{rid}-client")
