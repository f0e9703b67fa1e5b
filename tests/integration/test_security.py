"""Attacks from issue #11 against a loopback gateway, host and client; each must fail.

* a stolen host token + the (public) fingerprint: no takeover, no orphaned host;
* a real takeover (the host's own key) closes the old link instead of orphaning it;
* a host registration outlives neither its token's expiry nor a revocation;
* the deployment CA: a client refuses a host certificate the CA did not issue for
  that host id, so a gateway-supplied fingerprint alone no longer suffices;
* a host given the signing key out of band refuses a gateway announcing another;
* state files: modes enforced, symlinks refused;
* a host closes its data leg when the session set-up fails.
"""

import asyncio
import gc
import json
import logging
import os
import stat
import time
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shortpath.auth import ca, certs, proof
from shortpath.auth.certs import client_context
from shortpath.auth.tokens import TokenSigner
from shortpath.broker.service import Broker
from shortpath.client import connect
from shortpath.config import GatewayConfig, PoolConfig
from shortpath.demo import LocalStack
from shortpath.errors import AuthError, ConfigError, NoResourcesError, TokenExpired
from shortpath.framed import FramedConn
from shortpath.wire import control
from shortpath.wire.frames import MAX_CONTROL_PAYLOAD, FrameType, encode

from tests.conftest import FAST


class _BugLog(logging.Handler):
    """Every ERROR record and every line tagged BUG from shortpath loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR or "BUG" in msg:
            self.lines.append(msg)


@pytest.fixture
def bug_log():
    h = _BugLog()
    logger = logging.getLogger("shortpath")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(h)
    yield h
    logger.removeHandler(h)
    logger.setLevel(old)


async def _raw(stack) -> FramedConn:
    r, w = await asyncio.open_connection("127.0.0.1", stack.gateway.port, ssl=client_context(stack.cafile))
    return FramedConn(r, w, MAX_CONTROL_PAYLOAD)


async def _read(conn, timeout=5.0):
    return await asyncio.wait_for(conn.read_control(), timeout)


async def _wait_for(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _cert_pem(agent) -> str:
    with open(agent.cert_path) as f:
        return f.read()


async def _echo(session, n=5):
    await session.send(b"echo")
    for i in range(n):
        await session.send(b"m%d" % i)
        assert await asyncio.wait_for(session.recv(), 5) == b"m%d" % i


# --- item 1: host takeover ------------------------------------------------------------

async def test_stolen_token_and_public_fingerprint_do_not_take_over_a_host(tmp_path, bug_log):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=False) as stack:
        host = stack.hosts[0]
        broker = stack.gateway.broker
        real_link = broker.links["host-1"]
        stolen = stack.host_token("host-1")
        attacker_key = ec.generate_private_key(ec.SECP256R1())
        # Two impostors: one shows the real (public) certificate and signs with its own
        # key; one shows its own certificate under the real fingerprint.
        own_cert, _ = certs.generate_self_signed("impostor")
        for cert_pem in (_cert_pem(host), own_cert.decode()):
            conn = await _raw(stack)
            conn.send(control.RegisterHost(token=stolen, host_id="host-1", fingerprint=host.fingerprint))
            reply = await _read(conn)
            assert not isinstance(reply, control.Registered), "a stolen token registered as host-1"
            assert isinstance(reply, control.RegisterChallenge)
            signed = proof.challenge_message(stack.config.gateway_id, "host-1", host.fingerprint, reply.nonce)
            conn.send(control.RegisterProof(certificate=cert_pem, signature=proof.sign(attacker_key, signed)))
            reply = await _read(conn)
            assert isinstance(reply, control.Error) and reply.code in ("auth", "bad-signature"), reply
            assert await _read(conn) is None          # and the gateway hung up
            await conn.close()
        # The real host is untouched: same link, available, sessions still launch.
        assert broker.links["host-1"] is real_link
        assert broker.host_table()[0]["status"] == "available"
        assert host.registrations == 1
        plan = broker.plan_launch(broker.verify(stack.user_token(), "user"), "desktop")
        assert plan.host_id == "host-1"
        broker.launch_finished(plan, ok=False)
        plan.finish()
    assert bug_log.lines == []


async def test_takeover_with_the_host_key_closes_the_old_link(tmp_path, bug_log):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=False) as stack:
        host = stack.hosts[0]
        broker = stack.gateway.broker
        key = proof.load_private_key(host.key_path)
        # The host's own key on a second connection (a restarted host whose old
        # connection the gateway still believes in): allowed, and the old link closed.
        conn = await _raw(stack)
        conn.send(control.RegisterHost(token=stack.host_token("host-1"), host_id="host-1",
                                       fingerprint=host.fingerprint))
        challenge = await _read(conn)
        assert isinstance(challenge, control.RegisterChallenge)
        signed = proof.challenge_message(stack.config.gateway_id, "host-1", host.fingerprint, challenge.nonce)
        conn.send(control.RegisterProof(certificate=_cert_pem(host), signature=proof.sign(key, signed)))
        assert isinstance(await _read(conn), control.Registered)
        # The agent's old control channel was closed by the gateway: it re-registers,
        # which in turn closes our link, telling us why.
        await _wait_for(lambda: host.registrations >= 2, what="the agent to re-register")
        msg = await _read(conn)
        assert isinstance(msg, control.Error) and msg.reason == "replaced", msg
        assert await _read(conn) is None
        await conn.close()
        # heartbeats flow on the agent's new link, and only there
        rec = broker.registry.hosts["host-1"]
        since = rec.last_seen
        await _wait_for(lambda: rec.last_seen > since, what="a heartbeat on the new link")
        assert broker.links["host-1"].conn.peer is not None and not broker.links["host-1"].conn.closing()
        assert broker.host_table()[0]["status"] == "available"
        async with await stack.connect(shortpath=False) as s:
            await _echo(s)
    assert bug_log.lines == []


class _FakeLink:
    def __init__(self):
        self.sent, self.closed = [], None

    def send(self, msg):
        self.sent.append(msg)

    def close(self, error=None):
        self.closed = error


def _register(broker, signer, key, cert_pem, host_id="host-1", link=None, ttl=3600):
    fp = certs.fingerprint_der(proof.load_certificate(cert_pem).public_bytes(serialization.Encoding.DER))
    hello = control.RegisterHost(token=signer.mint("host", host_id, broker.config.gateway_id, ttl, time.time(),
                                                   pool="desktop"), host_id=host_id, fingerprint=fp)
    reg = broker.begin_registration(hello)
    msg = proof.challenge_message(broker.config.gateway_id, host_id, fp, reg.nonce)
    link = link or _FakeLink()
    return broker.register_host(reg, control.RegisterProof(certificate=cert_pem, signature=proof.sign(key, msg)),
                                link), link


def test_broker_never_orphans_a_replaced_link():
    """The issue's sequence at broker level: the replaced link is closed, its heartbeats are
    refused, and its disconnect does not take the new link's registration down."""
    signer = TokenSigner.generate()
    broker = Broker(GatewayConfig(), signer)
    cert_pem, key_pem = certs.generate_self_signed("h")
    key = serialization.load_pem_private_key(key_pem, None)
    _, old = _register(broker, signer, key, cert_pem.decode())
    _, new = _register(broker, signer, key, cert_pem.decode())
    assert old.closed is not None and old.closed.reason == "replaced" and new.closed is None
    with pytest.raises(AuthError):
        broker.check_host_link("host-1", old)        # the gateway checks every message this way
    broker.host_disconnected("host-1", old)
    assert broker.links["host-1"] is new
    broker.check_host_link("host-1", new)
    broker.heartbeat("host-1", control.Heartbeat(seq=1, sessions=0))
    assert broker.host_table()[0]["status"] == "available"
    # another key under the same host id while the host is live: refused
    other_cert, other_key = certs.generate_self_signed("h")
    with pytest.raises(AuthError, match="already registered"):
        _register(broker, signer, serialization.load_pem_private_key(other_key, None), other_cert.decode())
    assert broker.links["host-1"] is new and new.closed is None


# --- item 11: expiry re-checked while registered, revocation --------------------------

async def test_expired_host_token_is_cut_while_registered_and_refused_on_reconnect(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=False) as stack:
        host = stack.hosts[0]
        broker = stack.gateway.broker
        real_clock = broker.clock
        broker.clock = lambda: real_clock() + 3600 + 60      # the host token (1 h) is now past expiry
        await _wait_for(lambda: "host-1" not in broker.links, what="the expired host to be cut")
        await _wait_for(lambda: isinstance(host.last_error, TokenExpired), what="the re-registration refusal")
        assert not host.registered.is_set()
        with pytest.raises(NoResourcesError):
            broker.plan_launch(broker.verify(stack.user_token(ttl=7200), "user"), "desktop")


async def test_revocation_cuts_a_live_host_and_refuses_tokens(tmp_path):
    async with LocalStack(str(tmp_path), hosts=2, timing=FAST, managed=False) as stack:
        broker = stack.gateway.broker
        h1, h2 = stack.hosts
        jti = broker.host_table()[1]["token_jti"]               # host-2's registration token id
        assert jti and broker.host_table()[1]["host_id"] == "host-2"
        # through the admin socket, as `shortpath admin` does
        r, w = await asyncio.open_unix_connection(os.path.join(str(tmp_path), "admin.sock"))
        w.write((json.dumps({"cmd": "revoke", "hosts": ["host-1"], "jtis": [jti]}) + "\n").encode())
        resp = json.loads(await r.readline())
        w.close()
        assert resp["ok"] and sorted(resp["cut"]) == ["host-1", "host-2"]
        assert broker.links == {}
        for h in (h1, h2):
            await _wait_for(lambda: isinstance(h.last_error, AuthError), what="re-registration refused")
        # a revoked user token is refused too
        tok = stack.user_token()
        broker.revoke(jtis=[broker.verify(tok, "user").jti])
        with pytest.raises(AuthError, match="revoked"):
            await connect(stack.address, tok, "desktop", cafile=stack.cafile, timing=FAST)


async def test_revocation_list_in_config_applies_at_registration(tmp_path):
    signer = TokenSigner.load_or_create(str(tmp_path / "signing.key"))
    token = signer.mint("host", "host-1", "shortpath-gateway", 3600, time.time(), pool="desktop")
    jti = signer.verifier().verify(token, typ="host", audience="shortpath-gateway", now=time.time()).jti
    async with LocalStack(str(tmp_path), hosts=0, timing=FAST, managed=False, revoked_jtis=(jti,),
                          revoked_hosts=("host-9",)) as stack:
        from shortpath.host import HostAgent
        from shortpath.app.desktop import host_handler
        for host_id, tok in (("host-1", token), ("host-9", stack.host_token("host-9"))):
            agent = HostAgent(stack.address, tok, host_id, host_handler, state_dir=str(tmp_path),
                              cafile=stack.cafile, timing=FAST)
            agent.start()
            try:
                await _wait_for(lambda: isinstance(agent.last_error, AuthError), what=f"{host_id} refused")
                assert "revoked" in agent.last_error.message and not agent.registered.is_set()
            finally:
                await agent.stop()
        await stack.add_host("host-2")                      # not revoked: fine
        assert "host-2" in stack.gateway.broker.links


# --- item 6: deployment CA ------------------------------------------------------------

def _host_files(state, host_id):
    return os.path.join(state, f"host-{host_id}.crt"), os.path.join(state, f"host-{host_id}.key")


async def test_deployment_ca_client_refuses_a_host_cert_the_ca_did_not_issue(tmp_path):
    cadir = str(tmp_path / "ca")
    ca_cert = ca.init(cadir)
    state = str(tmp_path / "gw")
    os.makedirs(state, mode=0o700)
    # host-1: a CA-signed certificate over its own key; host-2: the CA signed it for host-1
    for host_id, named in (("host-1", "host-1"), ("host-2", "host-1")):
        crt, key = _host_files(state, host_id)
        certs.load_or_create(crt, key, f"shortpath-host-{host_id}")
        ca.sign_host(cadir, named, crt)
    pools = (PoolConfig("desktop"), PoolConfig("two"))
    async with LocalStack(state, hosts=0, timing=FAST, managed=False, pools=pools) as stack:
        await stack.add_host("host-1", "desktop")
        await stack.add_host("host-2", "two")
        async with await stack.connect(host_ca=ca_cert, shortpath=False) as s:
            await _echo(s)
        # host-2's certificate chains to the CA but names another host: refused
        with pytest.raises(AuthError, match="host id"):
            await stack.connect(resource="two", host_ca=ca_cert, shortpath=False)


async def test_deployment_ca_defeats_a_gateway_supplied_fingerprint(tmp_path):
    """What an active gateway could do: hand the client the fingerprint of a certificate
    it controls. Without a CA the client accepts it; with the CA it refuses."""
    cadir = str(tmp_path / "ca")
    ca_cert = ca.init(cadir)
    async with LocalStack(str(tmp_path / "gw"), hosts=1, timing=FAST, managed=False) as stack:
        # host-1 has a self-signed certificate, as a gateway's impostor would
        async with await stack.connect(shortpath=False) as s:
            await _echo(s)                           # fingerprint pinning alone: accepted
        with pytest.raises(AuthError, match="deployment CA"):
            await stack.connect(host_ca=ca_cert, shortpath=False)


async def test_gateway_with_host_ca_refuses_a_host_without_a_ca_certificate(tmp_path):
    cadir = str(tmp_path / "ca")
    ca_cert = ca.init(cadir)
    state = str(tmp_path / "gw")
    os.makedirs(state, mode=0o700)
    crt, key = _host_files(state, "host-1")
    certs.load_or_create(crt, key, "shortpath-host-host-1")
    ca.sign_host(cadir, "host-1", crt)
    async with LocalStack(state, hosts=0, timing=FAST, managed=False, host_ca=ca_cert) as stack:
        await stack.add_host("host-1")                       # CA-signed for host-1: accepted
        from shortpath.host import HostAgent
        from shortpath.app.desktop import host_handler
        # a stolen token for host-4 with a self-signed certificate: refused
        agent = HostAgent(stack.address, stack.host_token("host-4"), "host-4", host_handler,
                          state_dir=state, cafile=stack.cafile, timing=FAST)
        agent.start()
        try:
            await _wait_for(lambda: isinstance(agent.last_error, AuthError), what="registration refused")
            assert "deployment CA" in agent.last_error.message
        finally:
            await agent.stop()


def test_ca_files_and_checks(tmp_path):
    cadir = str(tmp_path / "ca")
    ca_path = ca.init(cadir)
    assert stat.S_IMODE(os.stat(os.path.join(cadir, "ca.key")).st_mode) == 0o600
    with pytest.raises(ConfigError):
        ca.init(cadir)                                        # never overwrite a CA
    crt, key = str(tmp_path / "h.crt"), str(tmp_path / "h.key")
    certs.load_or_create(crt, key, "h")
    with open(key, "rb") as f:
        key_before = f.read()
    ca.sign_host(cadir, "odd id/with spaces", crt)
    with open(key, "rb") as f:
        assert f.read() == key_before                         # the host key never moved
    issued, root = ca.load_cert(crt), ca.load_cert(ca_path)
    ca.verify_host_cert(issued, root, "odd id/with spaces")
    with pytest.raises(AuthError):
        ca.verify_host_cert(issued, root, "odd id")
    other = ca.load_cert(ca.init(str(tmp_path / "other")))
    with pytest.raises(AuthError):
        ca.verify_host_cert(issued, other, "odd id/with spaces")


async def test_host_with_out_of_band_signing_key_refuses_another_gateway_key(tmp_path):
    from shortpath.app.desktop import host_handler
    from shortpath.host import HostAgent
    async with LocalStack(str(tmp_path), hosts=0, timing=FAST, managed=False) as stack:
        wrong = TokenSigner.generate().public_hex()
        agent = HostAgent(stack.address, stack.host_token("host-1"), "host-1", host_handler,
                          state_dir=str(tmp_path), cafile=stack.cafile, timing=FAST, signing_key=wrong)
        agent.start()
        try:
            await _wait_for(lambda: isinstance(agent.last_error, AuthError), what="the key mismatch")
            assert "signing key" in agent.last_error.message and not agent.registered.is_set()
        finally:
            await agent.stop()
        right = stack.gateway.signer.public_hex()
        agent = HostAgent(stack.address, stack.host_token("host-2"), "host-2", host_handler,
                          state_dir=str(tmp_path), cafile=stack.cafile, timing=FAST, signing_key=right)
        agent.start()
        stack.hosts.append(agent)
        await asyncio.wait_for(agent.registered.wait(), 10)


# --- item 13: state files -------------------------------------------------------------

def test_state_dir_and_files_are_made_private(tmp_path):
    from shortpath.gateway import Gateway
    state = tmp_path / "gw"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    cert, key = state / "gateway.crt", state / "gateway.key"
    certs.load_or_create(str(cert), str(key), "x")
    TokenSigner.load_or_create(str(state / "signing.key"))
    for p in (cert, key, state / "signing.key"):
        os.chmod(p, 0o644)
    Gateway(GatewayConfig(state_dir=str(state), listen_port=0))
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for p in (cert, key, state / "signing.key"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


@pytest.mark.parametrize("name", ["gateway.key", "gateway.crt", "signing.key"])
def test_state_file_symlinks_are_refused(tmp_path, name):
    from shortpath.gateway import Gateway
    state = tmp_path / "gw"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    os.symlink(target, state / name)
    with pytest.raises(ConfigError, match="symbolic link"):
        Gateway(GatewayConfig(state_dir=str(state), listen_port=0))
    assert target.read_bytes() == b""          # nothing written through the link


# --- item 14: the host closes its data leg after a set-up failure ---------------------

async def test_host_closes_its_data_leg_when_setup_fails(tmp_path):
    """The host must close the leg itself. (Before the fix the leg was only closed when
    the garbage collector finalised its StreamWriter, with an 'unclosed' ResourceWarning;
    a reference cycle would have kept it open for good.)"""
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=False) as stack:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            conn = await _raw(stack)
            conn.send(control.ClientHello(token=stack.user_token()))
            assert isinstance(await _read(conn), control.Welcome)
            conn.send(control.Launch(resource="desktop"))
            assert isinstance(await _read(conn), control.Launched)
            # not TLS: the host's end-to-end handshake fails at once
            conn.write(encode(FrameType.RELAY, b"\x16\x03\x01\x00\x05hello, not tls"))
            conn.max_payload = 1 << 20
            # The host closed its leg, so the gateway ends the relay and closes ours.
            frames = []
            while True:
                frame = await asyncio.wait_for(conn.read_frame(), 4.0)
                if frame is None:
                    break
                frames.append(frame.type)
            assert FrameType.GATEWAY_END in frames
            await conn.close()
            await _wait_for(lambda: not stack.gateway.broker.sessions, what="the session record to go")
            gc.collect()
        unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
                    and "StreamWriter" in str(w.message)]
        assert unclosed == []


# --- item 4: max_sessions_per_user through the broker ----------------------------------

async def test_one_user_cannot_take_every_slot(tmp_path):
    pools = (PoolConfig("desktop", max_sessions=3, max_sessions_per_user=2),)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, managed=False, pools=pools) as stack:
        a1 = await stack.connect("alice", shortpath=False)
        a2 = await stack.connect("alice", shortpath=False)
        with pytest.raises(NoResourcesError) as ei:
            await stack.connect("alice", shortpath=False)
        assert ei.value.reason == "user-limit"
        async with await stack.connect("bob", shortpath=False) as b:
            await _echo(b)
        await a1.close()
        registry = stack.gateway.broker.registry
        await _wait_for(lambda: registry.user_sessions.get(("desktop", "alice")) == 1, what="alice's slot back")
        async with await stack.connect("alice", shortpath=False) as a3:
            await _echo(a3)
        await a2.close()
        await _wait_for(lambda: not registry.user_sessions, what="every slot back")


def test_cli_ca_init_and_sign(tmp_path, capsys):
    from shortpath.cli import main
    cadir, crt, key = str(tmp_path / "ca"), str(tmp_path / "h.crt"), str(tmp_path / "h.key")
    certs.load_or_create(crt, key, "h")
    assert main(["ca", "init", "--ca-dir", cadir]) == 0
    assert main(["ca", "sign", "--ca-dir", cadir, "--host-id", "host-1", "--cert", crt]) == 0
    ca.verify_host_cert(ca.load_cert(crt), ca.load_cert(os.path.join(cadir, "ca.crt")), "host-1")
    assert main(["ca", "sign", "--ca-dir", cadir, "--cert", crt]) == 2          # no host id: one-line error
    assert "needs --host-id" in capsys.readouterr().err
