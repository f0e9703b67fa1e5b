"""``shortpath connect --workload echo|desktop|bulk`` end to end: a real gateway and host
(CLI subprocesses, managed Shortpath on loopback) and the client CLI; its progress lines and
summary, plain and --json, are checked against what the workload must have done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli_errors import Gateway, Proc, cli, free_port, one_error


@pytest.fixture
def stack(tmp_path):
    gw = Gateway(tmp_path / "gw")
    host = None
    try:
        tok = gw.token_file(tmp_path / "h1.tok", "host", "host-1")
        host = Proc("host", "--gateway", gw.address, "--host-id", "host-1", "--token-file", tok, "--ca", gw.ca,
                    "--state", str(tmp_path / "hs"), "--managed", f"127.0.0.1:{free_port()}",
                    "--udp-address", "127.0.0.1")
        host.wait_line(host.out, lambda l: "host-registered" in l)
        user = gw.token_file(tmp_path / "alice.tok", "user", "alice", "--resources", "desktop")
        yield gw, user
    finally:
        if host is not None:
            host.stop()
        gw.proc.stop()


def connect(gw: Gateway, user: str, *extra: str):
    return cli("connect", "--gateway", gw.address, "--token-file", user, "--ca", gw.ca,
               "--udp-address", "127.0.0.1", "--wait-udp", "5", *extra, timeout=90)


def test_echo_workload_json(stack):
    gw, user = stack
    r = connect(gw, user, "--workload", "echo", "--seconds", "2", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    recs = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    assert [x["event"] for x in recs] == ["start", "progress", "progress", "summary"], recs
    start, s = recs[0], recs[-1]
    assert start["workload"] == "echo" and s["session_id"] == start["session_id"]
    assert [x["second"] for x in recs[1:3]] == [1, 2]
    # 50 Hz for 2 s: every reliable echo comes back (a reliable channel loses nothing)
    assert s["echo_sent"] == 100 and s["echo_n"] == 100
    assert 0 < s["echo_p50_ms"] <= s["echo_p99_ms"]
    assert s["datagrams_sent"] == 100 and 0 < s["datagrams_echoed"] <= 100
    assert sum(x["echo_n"] for x in recs[1:3]) <= s["echo_n"]
    assert s["path"].startswith("udp-") and s["path"] == recs[2]["path"]
    assert s["error"] is None


def test_desktop_workload_plain(stack):
    gw, user = stack
    r = connect(gw, user, "--workload", "desktop", "--seconds", "2")
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = r.stdout.splitlines()
    assert out[0].startswith("session ") and "desktop workload for 2 s" in out[0], out
    progress = [l for l in out if l.lstrip().startswith(("1s", "2s"))]
    assert len(progress) == 2 and all("frames/s" in l and "datagrams" in l for l in progress), out
    frames = next(l for l in out if l.startswith("frames "))
    delivered, expected = frames.split()[1].split("/")
    assert int(expected) == 60 and int(delivered) == 60, out      # 30 fps x 2 s, all of them
    assert any(l.startswith("input echo ") for l in out) and any(l.startswith("throughput ") for l in out)


def test_bulk_workload_json_counts_confirmed_bytes(stack):
    gw, user = stack
    r = connect(gw, user, "--workload", "bulk", "--seconds", "1.5", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    s = json.loads(r.stdout.splitlines()[-1])
    assert s["event"] == "summary" and s["workload"] == "bulk"
    # the host's last "got N" covers everything sent; whole 60 KB messages only
    assert s["bytes_delivered"] > 0 and s["bytes_delivered"] % 60_000 == 0
    assert s["mbit_s"] == pytest.approx(s["bytes_delivered"] * 8 / s["seconds"] / 1e6, rel=0.01)
    assert s["query_n"] == s["query_sent"] >= 1


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_bad_seconds_is_one_config_error(tmp_path, seconds):
    tok = tmp_path / "t.tok"
    tok.write_text("x")
    tok.chmod(0o600)
    r = cli("connect", "--gateway", "127.0.0.1:1", "--token-file", str(tok), "--workload", "echo",
            "--seconds", seconds)
    one_error(r, "--seconds", code="config")
