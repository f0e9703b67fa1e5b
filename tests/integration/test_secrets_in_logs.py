"""No secret reaches a log line: a full session (gateway, host, client, TURN through a
real loopback coturn) at DEBUG level, every logger captured (ours, aioice, aiortc,
asyncio), then searched for every secret the run handled, in the encodings a careless
log line would use (as is, hex, base64)."""

import asyncio
import base64
import logging
import re

import pytest
from cryptography.hazmat.primitives import serialization

from shortpath.config import TurnConfig
from shortpath.demo import LocalStack

from tests.conftest import FAST

coturn_mod = pytest.importorskip("netns_lab.coturn")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.loggers: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))     # includes any traceback text
        self.loggers.add(record.name.split(".")[0])


def _variants(secret) -> set[str]:
    """The ways a secret could show up in text."""
    if isinstance(secret, str):
        raw = secret.encode()
        out = {secret}
    else:
        raw = bytes(secret)
        out = set()
    out |= {raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode().rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    if isinstance(secret, str) and len(secret) > 24:
        out.add(secret[:24])          # a truncated copy is still a leak
    return {v for v in out if len(v) >= 12}


def _pem_body(pem: bytes) -> list[str]:
    """Lines of a PEM block's base64 body (any one of them in a log is key material)."""
    return [l for l in pem.decode().splitlines() if l and not l.startswith("-----")]


def _find_leaks(text: str, secrets: dict[str, list]) -> list[str]:
    leaks = []
    for what, values in secrets.items():
        for value in values:
            for v in (_variants(value) if not isinstance(value, tuple) else {value[0]}):
                if v in text:
                    leaks.append(f"{what}: ...{v[:10]}...")
    return leaks


@pytest.fixture
def turn_server(tmp_path):
    if not coturn_mod.TURNSERVER or not __import__("shutil").which(coturn_mod.TURNSERVER):
        pytest.skip("coturn (turnserver) not installed")
    (tmp_path / "coturn").mkdir()
    srv = coturn_mod.start_loopback(tmp_path / "coturn")
    try:
        yield srv
    finally:
        srv.stop()


async def test_full_session_with_turn_logs_no_secret(tmp_path, turn_server, monkeypatch):
    import aiortc
    from shortpath.broker import service
    from shortpath.transport.udp import ice, upgrader as udp
    from shortpath.transport.udp._aiortc_compat import certificate_private_key

    secrets: dict[str, list] = {"turn-password": [], "ice-pwd": [], "dtls-key": []}

    real_rest = service.rest_credentials

    def rest(*a, **kw):
        user, password = real_rest(*a, **kw)
        secrets["turn-password"].append(password)
        return user, password
    monkeypatch.setattr(service, "rest_credentials", rest)

    real_creds = ice.new_credentials

    def creds():
        ufrag, pwd = real_creds()
        secrets["ice-pwd"].append(pwd)
        return ufrag, pwd
    monkeypatch.setattr(udp, "new_credentials", creds)

    real_gen = aiortc.RTCCertificate.generateCertificate.__func__

    def gen(cls):
        cert = real_gen(cls)
        key = certificate_private_key(cert)
        secrets["dtls-key"].append(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
        secrets["dtls-key"].append(key.private_numbers().private_value.to_bytes(32, "big"))
        return cert
    monkeypatch.setattr(aiortc.RTCCertificate, "generateCertificate", classmethod(gen))

    cap = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(cap)
    root.setLevel(logging.DEBUG)
    try:
        turn = TurnConfig(stun=f"127.0.0.1:{turn_server.port}", turn=f"127.0.0.1:{turn_server.port}",
                          secret=turn_server.secret, credential_ttl=120)
        # relay-only on both sides: the TURN credentials must really be used
        async with LocalStack(str(tmp_path / "gw"), hosts=1, timing=FAST, turn=turn, managed=False,
                              udp={"modes": ["turn"]}) as stack:
            user_token = stack.user_token()
            host_token = stack.hosts[0].token
            from shortpath.client import connect
            s = await connect(stack.address, user_token, "desktop", cafile=stack.cafile, timing=FAST,
                              udp=stack.udp)
            async with s:
                await s.send(b"echo")
                for i in range(400):
                    await s.send(b"m%d" % i)
                    assert await asyncio.wait_for(s.recv(), 10) == b"m%d" % i
                    if s.info.transport == "udp-turn" and i > 20:
                        break
                    await asyncio.sleep(0.02)
                assert s.info.transport == "udp-turn", s.info.history
            state = stack.state_dir
    finally:
        root.removeHandler(cap)
        root.setLevel(old)

    with open(f"{state}/signing.key", "rb") as f:
        signing_pem = f.read()
    signing_key = serialization.load_pem_private_key(signing_pem, None)
    signing_raw = signing_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())
    key_files = {}
    for name in ("gateway.key", "host-host-1.key"):
        with open(f"{state}/{name}", "rb") as f:
            key_files[name] = f.read()
    secrets.update({
        "user-token": [user_token, user_token.split(".")[2]],      # whole token and its signature
        "host-token": [host_token, host_token.split(".")[2]],
        "signing-key": [signing_raw, *[(l,) for l in _pem_body(signing_pem)]],
        "turn-secret": [turn_server.secret],
        "tls-keys": [(l,) for pem in key_files.values() for l in _pem_body(pem)],
    })
    # the run handled every kind of secret we look for
    for what in ("turn-password", "ice-pwd", "dtls-key"):
        assert secrets[what], what
    text = "\n".join(cap.lines)
    # ... and the capture really saw DEBUG output from every component and library
    assert len(cap.lines) > 100
    assert {"shortpath", "aioice"} <= cap.loggers, cap.loggers
    assert any(" DEBUG " in l for l in cap.lines)
    assert re.search(r"gateway.*listening", text) and "udp-path-up" in text
    # the checker itself finds a planted secret
    assert _find_leaks(text + "\nplanted " + secrets["ice-pwd"][0], {"ice-pwd": secrets["ice-pwd"][:1]})
    leaks = _find_leaks(text, secrets)
    assert leaks == [], leaks
