"""A gateway cluster from the command line (issue #14): two `shortpath gateway
--redis ... --gateway-id` processes sharing one signing key and certificate, a
`shortpath host --gateway A --gateway B` process, and gateway A killed with
SIGKILL: the host moves to B within seconds and clients launch through B."""

import json
import os
import shutil
import time

from tests.integration.conftest_redis import redis_server  # noqa: F401  (fixture)
from tests.integration.test_cli_errors import Proc, cli


def admin(state, action):
    r = cli("admin", action, "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.1)


def test_cli_cluster_gateway_killed_host_moves(tmp_path, redis_server):
    s1, s2, hs = tmp_path / "gw1", tmp_path / "gw2", tmp_path / "host"
    procs = []
    try:
        g1 = Proc("gateway", "--listen", "127.0.0.1:0", "--state", str(s1), "--redis", redis_server.url,
                  "--gateway-id", "gw-1")
        procs.append(g1)
        a = json.loads(g1.wait_line(g1.out, lambda l: "gateway-ready" in l))["port"]
        s2.mkdir(mode=0o700)
        for name in ("signing.key", "gateway.key", "gateway.crt"):   # one deployment identity
            shutil.copyfile(s1 / name, s2 / name)
            os.chmod(s2 / name, 0o600)
        g2 = Proc("gateway", "--listen", "127.0.0.1:0", "--state", str(s2), "--redis", redis_server.url,
                  "--gateway-id", "gw-2")
        procs.append(g2)
        b = json.loads(g2.wait_line(g2.out, lambda l: "gateway-ready" in l))["port"]
        ca = str(s1 / "gateway.crt")
        assert cli("token", "host", "--state", str(s1), "--sub", "host-1", "--out", str(tmp_path / "h.tok")
                   ).returncode == 0
        assert cli("token", "user", "--state", str(s2), "--sub", "alice", "--resources", "desktop",
                   "--out", str(tmp_path / "u.tok")).returncode == 0      # minted with gw-2's copy of the key
        host = Proc("host", "--gateway", f"127.0.0.1:{a}", "--gateway", f"127.0.0.1:{b}", "--host-id", "host-1",
                    "--token-file", str(tmp_path / "h.tok"), "--ca", ca, "--state", str(hs))
        procs.append(host)
        host.wait_line(host.out, lambda l: "host-registered" in l)
        # seen from gateway B: the host's channel is on gw-1
        wait_for(lambda: [h for h in admin(s2, "hosts")["hosts"] if h["gateway"] == "gw-1"
                          and h["status"] == "available"])
        r = cli("connect", "--gateway", f"127.0.0.1:{b}", "--token-file", str(tmp_path / "u.tok"), "--ca", ca,
                "--no-shortpath", "--count", "5", "--json")
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        g1.popen.kill()                                   # a gateway that dies
        g1.popen.wait(5)
        wait_for(lambda: [h for h in admin(s2, "hosts")["hosts"] if h["gateway"] == "gw-2"
                          and h["status"] == "available"], timeout=10)
        moved_s = time.monotonic() - t0
        r = cli("connect", "--gateway", f"127.0.0.1:{b}", "--token-file", str(tmp_path / "u.tok"), "--ca", ca,
                "--no-shortpath", "--count", "5", "--json")
        assert r.returncode == 0, r.stderr
        # the client given both gateways measures them and takes the one that answers, saying why
        r = cli("connect", "--gateway", f"127.0.0.1:{a}", "--gateway", f"127.0.0.1:{b}", "--token-file",
                str(tmp_path / "u.tok"), "--ca", ca, "--no-shortpath", "--count", "3", "--json")
        assert r.returncode == 0, r.stderr
        choice = json.loads(r.stdout.splitlines()[-1])["gateway_choice"]
        assert choice["gateway"] == f"127.0.0.1:{b}" and "did not answer" not in choice["reason"]
        assert [p["rtt_ms"] is None for p in choice["probes"]] == [True, False]
        print(f"host moved to gw-2 {moved_s:.2f} s after gw-1 was killed")
        assert moved_s < 10
    finally:
        for p in reversed(procs):
            p.stop()
