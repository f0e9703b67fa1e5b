"""coturn: TURN REST credentials, a relay on loopback (no namespaces) and inside the lab."""

from __future__ import annotations

import json
import textwrap

import pytest

from netns_lab import plan
from netns_lab.coturn import start_loopback, turn_rest_credentials
from netns_lab.state import pid_alive

# Missing turnserver: one line naming the package; a failure as root, a skip otherwise
# (tests/lab/conftest.py).
needs_turnserver = pytest.mark.needs("turnserver")


def test_turn_rest_credentials_known_answer():
    # Expected password from: echo -n "1700003600:alice" | openssl dgst -sha1 -hmac north -binary | base64
    user, pwd = turn_rest_credentials("north", "alice", ttl=3600, now=1_700_000_000)
    assert user == "1700003600:alice"
    assert pwd == "wjwSXO2ch1B6VaLTLMy2Avn5O9o="


async def _gather(**kw):
    import aioice
    conn = aioice.Connection(ice_controlling=True, components=1, **kw)
    try:
        await conn.gather_candidates()
        return [c for c in conn.local_candidates if c.type == "relay"]
    finally:
        await conn.close()


@needs_turnserver
async def test_loopback_relay_and_auth():
    with start_loopback() as srv:
        relays = await _gather(**srv.aioice_kwargs("alice"))
        assert len(relays) == 1
        r = relays[0]
        assert r.host == "127.0.0.1" and srv.relay_range[0] <= r.port <= srv.relay_range[1]
        # a wrong password gets no allocation (auth is really enforced)
        bad = dict(srv.aioice_kwargs("mallory"), turn_password="not-the-password")
        assert await _gather(**bad) == []
        # an expired credential is refused as well
        u, p = turn_rest_credentials(srv.secret, "late", ttl=-60)
        assert await _gather(turn_server=(srv.host, srv.port), turn_username=u,
                             turn_password=p) == []
        log = srv.log_file.read_text()
        assert srv.secret not in log
        assert oct(srv.conf.stat().st_mode & 0o777) == "0o600"
        pid = int(srv.pidfile.read_text())
    assert not pid_alive(pid, None)


@pytest.mark.lab
@needs_turnserver
def test_relay_inside_lab(make_lab):
    lab = make_lab("symmetric", "port-restricted")
    srv = lab.coturn()
    assert srv.host == plan.SERVICES["turn"] and srv.tls_port == 443
    kw = srv.aioice_kwargs("client1")
    code = textwrap.dedent(f"""
        import asyncio, json, ssl, socket, aioice
        async def main():
            c = aioice.Connection(ice_controlling=True, components=1, **{kw!r})
            await c.gather_candidates()
            out = [[x.type, x.host, x.port, x.related_address] for x in c.local_candidates]
            await c.close()
            return out
        cands = asyncio.run(main())
        ctx = ssl.create_default_context(cafile={str(srv.cert)!r})
        with socket.create_connection(({srv.host!r}, {srv.tls_port})) as s:
            with ctx.wrap_socket(s, server_hostname="turn.shortpath.lab") as t:
                tls = t.version()
        print(json.dumps({{"cands": cands, "tls": tls}}))
    """)
    out = json.loads(lab.client.python("-c", code).stdout.strip().splitlines()[-1])
    relays = [c for c in out["cands"] if c[0] == "relay"]
    assert len(relays) == 1
    assert relays[0][1] == plan.SERVICES["turn"] and 50000 <= relays[0][2] <= 50999
    assert relays[0][3] == lab.addr("client-public")  # coturn saw the NATed address
    assert out["tls"] in ("TLSv1.2", "TLSv1.3")
    pid = int(srv.pidfile.read_text())
    assert srv.secret not in srv.log_file.read_text()
    srv.stop()
    assert not pid_alive(pid, None)
