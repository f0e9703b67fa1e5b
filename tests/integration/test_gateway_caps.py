"""One source must not lock everyone out of the gateway (issue #11 item 3).

Loopback gives distinct source addresses (127.0.0.2, 127.0.0.3, ...). The attacker holds
idle TLS connections (handshake done, no first message) and silent TCP connections (no
TLS ClientHello at all) from one address; a client from another address and the host's
data leg must still work at once, not after the handshake timeout. With the attack spread
over many addresses so that the global cap is full, an authenticated host's data leg still
gets in. Plus the pure cap planning under the fd limit, as a table.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from shortpath.auth.certs import client_context
from shortpath.config import Timing
from shortpath.demo import LocalStack
from shortpath.framed import FramedConn
from shortpath.gateway.admission import FD_RESERVE, Admission, Caps, Ticket, plan_caps
from shortpath.wire import control
from shortpath.wire.frames import MAX_CONTROL_PAYLOAD

# A long handshake timeout: a client that had to wait for an attacker's slot to expire
# would be visibly slow; the real ones below must get in within a fraction of it.
SLOW = Timing(heartbeat_interval=0.3, heartbeat_misses=3, reconnect_base=0.05, reconnect_cap=0.5,
              handshake_timeout=20.0, leg_timeout=5.0, launch_timeout=10.0, ping_interval=0.5)
QUICK = 3.0   # seconds a real client may take, far below handshake_timeout


async def _silent_tcp(port: int, source: str, n: int) -> list:
    """TCP connections that never start TLS."""
    out = []
    for _ in range(n):
        try:
            out.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
        except OSError:
            break
    return out


async def _idle_tls(stack, source: str, n: int) -> tuple[list, int]:
    """TLS connections that finish the handshake and then say nothing. Returns the
    connections the gateway did not close at once, and how many it refused."""
    ctx = client_context(stack.cafile)
    kept, refused = [], 0

    async def one():
        nonlocal refused
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", stack.gateway.port, ssl=ctx, local_addr=(source, 0)), QUICK)
            kept.append((r, w))
        except (OSError, asyncio.TimeoutError, ConnectionError):
            refused += 1
    await asyncio.gather(*(one() for _ in range(n)))
    return kept, refused


async def _client_hello(stack, source: str) -> tuple[FramedConn, float]:
    """A real client's first exchange from ``source``: TLS, client-hello -> welcome."""
    t0 = time.monotonic()
    r, w = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", stack.gateway.port, ssl=client_context(stack.cafile), local_addr=(source, 0)), QUICK)
    conn = FramedConn(r, w, MAX_CONTROL_PAYLOAD)
    conn.send(control.ClientHello(token=stack.user_token()))
    reply = await asyncio.wait_for(conn.read_control(), QUICK)
    assert isinstance(reply, control.Welcome), reply
    return conn, time.monotonic() - t0


async def _launch(conn: FramedConn) -> control.Message:
    """Launch on an already authenticated client connection: the gateway answers
    ``launched`` only once the host's data leg has arrived and been stitched."""
    conn.send(control.Launch(resource="desktop"))
    return await asyncio.wait_for(conn.read_control(), QUICK + 5)


def _close_all(conns) -> None:
    for _r, w in conns:
        w.close()


async def test_one_source_cannot_lock_out_clients_or_host_legs(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=SLOW, managed=False, max_unauthenticated=100) as stack:
        gw = stack.gateway
        per_source = gw.admission.caps.per_source
        assert per_source < gw.admission.caps.total <= 100
        # 150 idle TLS and 150 silent TCP connections from one address
        idle, refused = await _idle_tls(stack, "127.0.0.2", 150)
        silent = await _silent_tcp(gw.port, "127.0.0.2", 150)
        try:
            assert refused > 0 and gw.counters["refused_per_source"] > 0
            # counted from accept(): silent TCP connections hold slots too, never more than the cap
            assert gw.admission.by_source.get("127.0.0.2", 0) <= per_source
            assert gw._unauth <= per_source
            # a real client from another address gets in at once ...
            conn, took = await _client_hello(stack, "127.0.0.3")
            assert took < QUICK
            # ... and launches: the host's data leg gets in too
            reply = await _launch(conn)
            assert isinstance(reply, control.Launched), reply
            await conn.close()
            # and a whole session through the public API (relay echo)
            async with await stack.connect(shortpath=False) as s:
                await s.send(b"echo")
                await s.send(b"ping")
                assert await asyncio.wait_for(s.recv(), QUICK) == b"ping"
        finally:
            _close_all(idle)
            _close_all(silent)


async def test_many_sources_filling_the_global_cap_do_not_starve_a_host_data_leg(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=SLOW, managed=False, max_unauthenticated=60) as stack:
        gw = stack.gateway
        # the client authenticates first (its own pre-auth slot is released at its first message)
        conn, _ = await _client_hello(stack, "127.0.0.3")
        attackers = [f"127.0.0.{i}" for i in range(10, 20)]
        held = []
        try:
            for src in attackers:
                kept, _ = await _idle_tls(stack, src, 10)
                held += kept
                held += await _silent_tcp(gw.port, src, 10)
            assert gw.admission.total == gw.admission.caps.total     # strangers filled the cap
            assert gw.counters["refused_unauth_cap"] > 0
            # a stranger from yet another address is refused now (documented: the cap is global) ...
            with pytest.raises((OSError, ConnectionError, asyncio.TimeoutError, AssertionError,
                                asyncio.IncompleteReadError)):
                c2, _ = await _client_hello(stack, "127.0.0.4")
            # ... but the host's data leg, from the address of its authenticated control channel, is not
            reply = await _launch(conn)
            assert isinstance(reply, control.Launched), reply
        finally:
            await conn.close()
            _close_all(held)


async def test_gateway_start_raises_the_fd_limit_and_plans_caps_under_it(tmp_path):
    """In a child process with a soft fd limit of 128 (hard 512): start() raises the soft
    limit to the hard one, and the strangers' cap fits in half of it."""
    code = f"""
import asyncio, json, resource
from shortpath.config import GatewayConfig
from shortpath.gateway.server import Gateway
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 512))
async def main():
    gw = Gateway(GatewayConfig(listen_port=0, state_dir={str(tmp_path)!r}))
    await gw.start()
    print(json.dumps({{"soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "total": gw.admission.caps.total,
                      "per_source": gw.admission.caps.per_source}}))
    await gw.stop()
asyncio.run(main())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["soft"] == 512
    assert got["total"] == (512 - FD_RESERVE) // 2 < 2000        # the configured 2000 would not fit
    assert got["per_source"] <= got["total"]


@pytest.mark.parametrize("configured,per_source,soft,expected", [
    (2000, 32, 1024, Caps(total=(1024 - FD_RESERVE) // 2, per_source=32, trusted_per_source=256)),
    (2000, 32, 1 << 20, Caps(total=2000, per_source=32, trusted_per_source=256)),
    (2000, 32, None, Caps(total=2000, per_source=32, trusted_per_source=256)),
    (100, 500, 1 << 20, Caps(total=100, per_source=100, trusted_per_source=100)),
    (2000, 32, 80, Caps(total=8, per_source=8, trusted_per_source=8)),
    (2000, 32, 10, Caps(total=1, per_source=1, trusted_per_source=1)),
])
def test_plan_caps_table(configured, per_source, soft, expected):
    assert plan_caps(configured, per_source, soft) == expected


def test_admission_counts_per_source_and_trusts_host_addresses():
    adm = Admission(Caps(total=3, per_source=2, trusted_per_source=4))
    a1, a2 = adm.admit("A"), adm.admit("A")
    assert isinstance(a1, Ticket) and isinstance(a2, Ticket)
    assert adm.admit("A") == "per-source"
    b1 = adm.admit("B")
    assert adm.admit("C") == "total"
    adm.trust("H")                                   # a host's control channel is up at H
    hs = [adm.admit("H") for _ in range(4)]
    assert all(isinstance(t, Ticket) for t in hs) and adm.admit("H") == "per-source"
    assert adm.total == 3 and adm.pending == 7
    adm.release(a1)
    adm.release(a1)                                  # idempotent
    assert isinstance(adm.admit("C"), Ticket)
    for t in hs:
        adm.release(t)
    adm.untrust("H")
    assert adm.admit("H") == "total"                 # no longer trusted: a stranger again
    adm.release(a2), adm.release(b1)
    assert adm.by_source == {"C": 1}
