"""The lab from the shell (python -m netns_lab): the script in docs/lab.md, run as written, and
the impair/firewall subcommands on a running lab."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab import state

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- lab-script: tests/lab/test_lab_cli.py runs the next block -->"


def doc_script() -> str:
    text = (REPO / "docs" / "lab.md").read_text()
    after = text.split(MARKER, 1)
    assert len(after) == 2, f"marker {MARKER!r} not in docs/lab.md"
    m = re.match(r"\s*```sh\n(.*?)\n```", after[1], re.S)
    assert m, "no ```sh block right after the marker"
    return m.group(1)


def _env() -> dict:
    # `python` in the script is the interpreter running these tests (the virtual environment's)
    bindir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
                PYTHONPATH=str(REPO))


def _netns_inodes(run_id: str) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in Path("/run/netns").glob(f"nl-{run_id}-*")}


def _procs_in(inodes: set[int]) -> list[str]:
    """Processes whose network namespace is one of ``inodes`` (pid and command)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.stat(d / "ns" / "net").st_ino in inodes:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                out.append(f"{d.name} {cmd[:120]}")
        except OSError:
            continue
    return out


@pytest.mark.needs("turnserver")
@pytest.mark.timeout(180)
def test_doc_lab_script_runs_and_cleans_up(tmp_path):
    script = tmp_path / "lab.sh"
    script.write_text(doc_script() + "\n")
    p = subprocess.Popen(["bash", str(script)], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    lines, run_id, inodes, workdir = [], None, {}, None
    try:
        for line in p.stdout:                      # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            m = re.match(r"lab (\w+) up; connect command: (.*)$", line)
            if m:                                  # the lab is up: note what to look for later
                run_id = m.group(1)
                inodes = _netns_inodes(run_id)
                st = next(r for r in state.list_runs() if r.run_id == run_id)
                workdir = st.workdir
        rc = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    out = "\n".join(lines)
    assert rc == 0, out[-6000:]
    assert run_id and len(inodes) == 5 and workdir, out[-3000:]

    sessions = re.findall(r"transport=(\S+) .*?echo p50=([\d.]+) ms", out)
    assert len(sessions) == 2, out[-6000:]
    (path1, p50_1), (path2, p50_2) = sessions
    assert path1 == "udp-turn" and path2 == "udp-turn", out[-6000:]
    assert float(p50_1) >= 40.0, out[-6000:]          # the profile's 40 ms RTT was there
    assert float(p50_2) < 20.0, out[-6000:]           # ... and `impair --profile clean` removed it
    # the connect line was printed exactly and runs through ip netns exec in the client namespace
    connect = re.search(r"connect command: (.*)$", out, re.M).group(1)
    assert connect.startswith(f"ip netns exec nl-{run_id}-client ") and " -m shortpath connect " in connect

    # the trap's `down` left nothing: namespaces, processes inside them, run directory, state
    assert _netns_inodes(run_id) == {}
    assert _procs_in(set(inodes.values())) == []
    assert not Path(workdir).exists()
    assert not any(r.run_id == run_id for r in state.list_runs())


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "netns_lab", *args], capture_output=True, text=True,
                       env=_env(), timeout=60)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _nfqueue_rules(ns: str) -> list[str]:
    r = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "raw", "-S", "PREROUTING"],
                       capture_output=True, text=True, check=True)
    return [l for l in r.stdout.splitlines() if "NFQUEUE" in l]


def test_impair_and_firewall_change_a_running_lab():
    up = _cli("up", "--delay", "5", "--loss", "1")
    info = json.loads(up.stdout)
    rid = info["run_id"]
    try:
        assert info["impairment"]["params"] == {"delay_ms": 5.0, "loss": 0.01}
        st = next(r for r in state.list_runs() if r.run_id == rid)
        emus = {k: v["rec"]["pid"] for k, v in st.config["impair"].items()}
        assert set(emus) == {"client-lan/up", "client-lan/down"}
        assert all(state.pid_alive(pid, None) for pid in emus.values())
        assert len(_nfqueue_rules(f"nl-{rid}-crtr")) == 1 and len(_nfqueue_rules(f"nl-{rid}-client")) == 1

        # a new impairment from another process replaces the emulators (a detached lab's have
        # no stdin to reconfigure through) and their rules
        _cli("impair", rid, "--profile", "rtt40")
        st = next(r for r in state.list_runs() if r.run_id == rid)
        new = {k: v["rec"]["pid"] for k, v in st.config["impair"].items()}
        assert st.config["impair"]["client-lan/up"]["params"]["delay_ms"] == 20
        assert not any(state.pid_alive(pid, None) for pid in emus.values())
        assert all(state.pid_alive(pid, None) for pid in new.values())
        assert len(_nfqueue_rules(f"nl-{rid}-crtr")) == 1

        _cli("impair", rid, "--clear")
        assert _nfqueue_rules(f"nl-{rid}-crtr") == [] and _nfqueue_rules(f"nl-{rid}-client") == []
        assert not any(state.pid_alive(pid, None) for pid in new.values())

        _cli("firewall", rid, "client", "udp-blocked")
        rules = subprocess.run(["ip", "netns", "exec", f"nl-{rid}-crtr", "nft", "list", "table",
                                "inet", "labfw"], capture_output=True, text=True).stdout
        assert "udp" in rules and "drop" in rules, rules
        bad = _cli("firewall", rid, "client", "no-such-preset", check=False)
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "no-such-preset" in bad.stderr and "Traceback" not in bad.stderr
        _cli("firewall", rid, "client")                  # open again
        rules = subprocess.run(["ip", "netns", "exec", f"nl-{rid}-crtr", "nft", "list", "table",
                                "inet", "labfw"], capture_output=True, text=True).stdout
        assert "drop" not in rules, rules
    finally:
        down = _cli("down", rid, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _netns_inodes(rid) == {}


def test_up_with_a_bad_firewall_spec_is_one_line_and_leaves_nothing():
    before = {r.run_id for r in state.list_runs()}
    r = _cli("up", "--firewall", "client-udp-blocked", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "expected SITE:PRESET" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert {x.run_id for x in state.list_runs()} == before
