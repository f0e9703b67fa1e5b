"""Gateway choice in the lab (issue #14, "Tests with real parts"): three real
``shortpath gateway`` processes in the core, one cluster (one identity, a real
``redis-server`` in the core), each gateway address behind its own one-way delay
on the client's WAN link (the lab's NFQUEUE emulator, ``Lab.impair(..., peer=ADDR)``).
``shortpath connect --gateway A --gateway B --gateway C --json`` from the client
namespace must pick per the rule of shortpath/client/gateway_choice.py: lowest
10 ms RTT bucket first, then fewest connections.

The host's control channel is on the slowest gateway, so the two fast gateways
start with the same load (only the client's own probe connection each) and the
load step of the test is the only difference between them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from netns_lab import plan
from netns_lab.netns import LabError

pytestmark = pytest.mark.lab

BASE = plan.SERVICES["gateway"]                     # 198.18.0.10, already on the core's lo
GATEWAYS = [BASE, "198.18.0.11", "198.18.0.12"]     # two more "public" addresses on the core
LINK = "client-wan"                                 # edge router <-> core: client side only
REDIS_PORT = 6379

# A process in the core holding N idle TCP connections to one gateway, reopening any the
# gateway closes (it drops pre-auth connections after its handshake timeout), so the
# gateway's connection count stays at N + whatever else it carries.
HOLDER = r"""
import socket, sys, threading
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
up = threading.Barrier(n + 1)
def hold(first=True):
    while True:
        s = socket.create_connection((addr, port))
        if first:
            up.wait(); first = False
        try:
            s.recv(1)
        except OSError:
            pass
        s.close()
for _ in range(n):
    threading.Thread(target=hold, daemon=True).start()
up.wait()
print("holding", n, flush=True)
threading.Event().wait()
"""


def _cli(*args: str) -> None:
    """A shortpath command that touches only files (token minting), in this namespace."""
    r = subprocess.run([sys.executable, "-m", "shortpath", *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def cluster(make_lab, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; "
                    "`bash scripts/setup.sh test` as root)")
    lab = make_lab("port-restricted", "port-restricted")
    for a in GATEWAYS[1:]:
        lab.core.run(["ip", "addr", "add", f"{a}/32", "dev", "lo"])
    work = lab.workdir / "gwchoice"
    work.mkdir()
    lab.spawn("core", ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                       "--save", "", "--appendonly", "no", "--dir", str(work),
                       "--daemonize", "no", "--protected-mode", "yes"],
              ready=r"(?i)ready to accept", ready_timeout=15)
    redis = f"redis://127.0.0.1:{REDIS_PORT}/0"
    states = [work / f"gw{i}" for i in range(3)]
    for i, (addr, st) in enumerate(zip(GATEWAYS, states)):
        if i:       # one deployment identity: the first gateway's keys and certificate
            st.mkdir(mode=0o700)
            for name in ("signing.key", "gateway.key", "gateway.crt"):
                shutil.copyfile(states[0] / name, st / name)
                (st / name).chmod(0o600)
        lab.spawn("core", [sys.executable, "-m", "shortpath", "gateway", "--listen", f"{addr}:443",
                           "--state", str(st), "--redis", redis, "--gateway-id", f"gw-{i}"],
                  ready="gateway-ready", ready_timeout=20)
    ca = str(states[0] / "gateway.crt")
    _cli("token", "host", "--state", str(states[0]), "--sub", "h1", "--out", str(work / "h.tok"))
    _cli("token", "user", "--state", str(states[0]), "--sub", "alice", "--resources", "desktop",
         "--out", str(work / "u.tok"))
    # the host's control channel on the slowest gateway (the host side has no delay)
    lab.spawn("host", [sys.executable, "-m", "shortpath", "host", "--gateway", f"{GATEWAYS[2]}:443",
                       "--host-id", "h1", "--token-file", str(work / "h.tok"), "--ca", ca,
                       "--state", str(work / "h1")], ready="host-registered", ready_timeout=20)
    return lab, work, ca


def _connect(lab, work, ca) -> dict:
    argv = ["-m", "shortpath", "connect"]
    for a in GATEWAYS:
        argv += ["--gateway", f"{a}:443"]
    argv += ["--token-file", str(work / "u.tok"), "--ca", ca, "--no-shortpath", "--count", "3", "--json"]
    r = lab.python("client", *argv, check=False, timeout=90)
    assert r.returncode == 0, (r.stderr[-3000:], lab.helper_failures())
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["echo_count"] == 3          # a real session ran through the chosen gateway
    return info["gateway_choice"]


def _delays(lab, delays_ms) -> None:
    for a, d in zip(GATEWAYS, delays_ms):
        lab.impair(LINK, "both", delay_ms=d, peer=a)


def _by_addr(choice) -> dict:
    return {p["gateway"].rsplit(":", 1)[0]: p for p in choice["probes"]}


def _check_buckets(choice, delays_ms) -> None:
    probes = _by_addr(choice)
    assert choice["bucket_ms"] == 10
    for a, d in zip(GATEWAYS, delays_ms):
        p = probes[a]
        # the delay is added both ways, so the probe RTT is at least twice the one-way delay,
        # and the small rest (kernel, TLS records, Python) must keep it in the same bucket
        assert p["rtt_ms"] is not None and p["rtt_ms"] >= 2 * d - 0.5, (a, d, p)
        assert p["bucket"] == int(2 * d // 10), (a, d, p)


def test_clients_pick_per_bucket_then_load(cluster):
    lab, work, ca = cluster
    seen = []

    # 1. 5 / 12 / 30 ms one way: three buckets (10-20, 20-30, 60-70 ms RTT); the 5 ms one wins
    delays = (5, 12, 30)
    _delays(lab, delays)
    c = _connect(lab, work, ca)
    seen.append(("5/12/30", c))
    _check_buckets(c, delays)
    assert c["gateway"] == f"{GATEWAYS[0]}:443", c
    assert "has only it" in c["reason"], c["reason"]

    # 2. the second gateway moved to 7 ms: two gateways share the 10-20 ms bucket with the
    #    same load (the probe's own connection), so the lower RTT decides: still the first
    delays = (5, 7, 30)
    lab.impair(LINK, "both", delay_ms=7, peer=GATEWAYS[1])
    c = _connect(lab, work, ca)
    seen.append(("5/7/30", c))
    _check_buckets(c, delays)
    p = _by_addr(c)
    assert p[GATEWAYS[0]]["connections"] == p[GATEWAYS[1]]["connections"], c
    assert c["gateway"] == f"{GATEWAYS[0]}:443", c

    # 3. the 5 ms gateway carries 6 more connections: the 7 ms one in the same bucket wins
    holder = lab.spawn("core", [sys.executable, "-c", HOLDER, GATEWAYS[0], "443", "6"],
                       ready=r"^holding")
    try:
        c = _connect(lab, work, ca)
    finally:
        lab.stop(holder)
    seen.append(("5/7/30 + 6 connections on the 5 ms gateway", c))
    _check_buckets(c, delays)
    p = _by_addr(c)
    assert p[GATEWAYS[0]]["connections"] >= p[GATEWAYS[1]]["connections"] + 6, c
    assert c["gateway"] == f"{GATEWAYS[1]}:443", c
    assert "fewest connections" in c["reason"], c["reason"]

    for label, c in seen:
        print(f"{label}: picked {c['gateway']} -- " + ", ".join(
            f"{a} rtt {p['rtt_ms']} ms bucket {p['bucket']} conns {p['connections']}"
            for a, p in _by_addr(c).items()))


def test_peer_impairment_delays_only_that_address(make_lab):
    """``impair(..., peer=ADDR)`` delays packets to ADDR only; other addresses behind the same
    link keep their delay; clearing the peer removes its rules and emulator.  Measured on the
    client's LAN link (emulator in the client router) so the receiver, in the core, sits one
    hop beyond the emulator: its kernel receive timestamps are taken after the hold (see
    netns_lab/accuracy.py)."""
    lab = make_lab("port-restricted", "port-restricted")
    link, other = "client-lan", plan.SERVICES["stun"]
    base = lab.measure_udp("client", "core", BASE, rate=500, count=200)
    lab.impair(link, "up", delay_ms=20, peer=BASE)
    hit = lab.measure_udp("client", "core", BASE, rate=500, count=500)
    miss = lab.measure_udp("client", "core", other, rate=500, count=500)
    assert hit["loss"] == 0 and hit["owd_ms"]["min"] >= 19.8, hit["owd_ms"]
    assert hit["owd_ms"]["mean"] - base["owd_ms"]["mean"] == pytest.approx(20.0, abs=1.5)
    assert miss["owd_ms"]["mean"] < 5, miss["owd_ms"]
    st = lab.emulator_stats(link, "up", peer=BASE)
    assert st["accepted"] >= 500
    rules = lab.client_router.run(["iptables", "-w", "-t", "raw", "-S", "PREROUTING"]).stdout
    assert f"-d {BASE}/32" in rules and f"-s {BASE}/32" in rules, rules
    lab.impair(link, "up", peer=BASE)               # clear
    rules = lab.client_router.run(["iptables", "-w", "-t", "raw", "-S", "PREROUTING"]).stdout
    assert "NFQUEUE" not in rules, rules
    after = lab.measure_udp("client", "core", BASE, rate=500, count=200)
    assert after["owd_ms"]["mean"] < 5, after["owd_ms"]
    with pytest.raises(LabError, match="one IPv4 address"):
        lab.impair(link, "up", delay_ms=5, peer="gateway")
