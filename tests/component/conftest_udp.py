"""Helpers for the UDP path tests: an in-process signalling link, a coturn
fixture, TURN REST credentials, a leak check.

Imported by ``test_udp_*.py`` (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from shortpath.transport.udp import UdpConfig, UdpUpgrader

LOOPBACK = ("127.0.0.1",)


# --------------------------------------------------------------------------
# signalling through a pair of asyncio.Queues

class SignalLink:
    """Carries signalling both ways through asyncio.Queues, JSON round-trip
    included (proves the messages are JSON-serialisable). ``tamper_to_client``
    / ``tamper_to_host`` may rewrite messages in flight."""

    def __init__(self, tamper_to_client: Optional[Callable[[dict], dict]] = None,
                 tamper_to_host: Optional[Callable[[dict], dict]] = None) -> None:
        self.to_host: asyncio.Queue = asyncio.Queue()
        self.to_client: asyncio.Queue = asyncio.Queue()
        self.tamper_to_client = tamper_to_client
        self.tamper_to_host = tamper_to_host
        self.seen_to_host: list[dict] = []
        self.seen_to_client: list[dict] = []
        self._tasks: list[asyncio.Task] = []

    def attach(self, client: UdpUpgrader, host: UdpUpgrader) -> None:
        self._tasks = [
            asyncio.ensure_future(self._forward(self.to_host, host, self.tamper_to_host, self.seen_to_host)),
            asyncio.ensure_future(self._forward(self.to_client, client, self.tamper_to_client, self.seen_to_client)),
        ]

    @staticmethod
    async def _forward(q: asyncio.Queue, dest: UdpUpgrader, tamper: Any, seen: list) -> None:
        while True:
            msg = json.loads(json.dumps(await q.get()))
            if tamper is not None:
                msg = tamper(msg)
            seen.append(msg)
            dest.on_signal(msg)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class Pair:
    client: UdpUpgrader
    host: UdpUpgrader
    link: SignalLink

    async def connect(self, timeout: float = 10.0) -> tuple[Any, Any]:
        return await asyncio.gather(self.client.connect(timeout=timeout), self.host.connect(timeout=timeout))

    async def close(self) -> None:
        await asyncio.gather(self.client.close(), self.host.close())
        await self.link.close()


def make_pair(client_cfg: UdpConfig, host_cfg: Optional[UdpConfig] = None, listener: Any = None,
              link: Optional[SignalLink] = None) -> Pair:
    link = link or SignalLink()
    client = UdpUpgrader("client", client_cfg, link.to_host.put_nowait)
    host = UdpUpgrader("host", host_cfg or client_cfg, link.to_client.put_nowait, managed_listener=listener)
    link.attach(client, host)
    return Pair(client, host, link)


async def assert_no_leaked_tasks(grace: float = 2.0) -> None:
    """After everything is closed, no other task may stay alive.

    aiortc/aioice leave a few fire-and-forget tasks that end on their own
    within a loop turn or two; we wait on *them* (an event) for at most
    ``grace`` seconds. A background loop that never ends fails the test."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if others:
        _, pending = await asyncio.wait(others, timeout=grace)
        assert not pending, f"leaked tasks: {pending}"


# --------------------------------------------------------------------------
# ports

def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


# --------------------------------------------------------------------------
# TURN REST credentials (draft-uberti-behave-turn-rest, coturn use-auth-secret)

def turn_rest_credentials(secret: str, user: str, ttl: int = 600) -> tuple[str, str]:
    username = f"{int(time.time()) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


# --------------------------------------------------------------------------
# coturn

def stun_binding_probe(host: str, port: int, deadline: float) -> bool:
    """Send STUN Binding requests until a matching response arrives or the
    deadline passes. Each wait is a blocking recv with a timeout (an event),
    not a sleep."""
    txid = secrets.token_bytes(12)
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, txid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while time.monotonic() < deadline:
            try:
                s.sendto(request, (host, port))
                s.settimeout(0.1)
                data, _ = s.recvfrom(2048)
            except (socket.timeout, ConnectionRefusedError):
                continue
            if len(data) >= 20 and data[8:20] == txid and struct.unpack("!H", data[:2])[0] == 0x0101:
                return True
    return False


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "turn.shortpath.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "turn.crt", directory / "turn.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Coturn:
    port: int
    tls_port: Optional[int]
    secret: str
    realm: str
    min_port: int
    max_port: int
    cafile: Optional[str]
    proc: subprocess.Popen
    log: Path

    def credentials(self, user: str = "test") -> tuple[str, str]:
        return turn_rest_credentials(self.secret, user)


def _bindable(port: int) -> bool:
    """Can UDP and TCP both bind 127.0.0.1:port right now?"""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def coturn_ports() -> tuple[int, int]:
    """A listening port and a TLS port for coturn. coturn also binds each one's "alternate"
    port (port + 1, its default), so those must be free too and must not overlap: two
    independent free ports once came out as N and N + 1, and coturn could not start."""
    for _ in range(50):
        port, tls_port = free_udp_tcp_port(), free_udp_tcp_port()
        if len({port, port + 1, tls_port, tls_port + 1}) == 4 and _bindable(port + 1) \
                and _bindable(tls_port + 1):
            return port, tls_port
    raise RuntimeError("no free pair of coturn ports on 127.0.0.1")


def start_coturn(tmp: Path, tls: bool = True) -> Coturn:
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn (turnserver) is not installed")
    port, tls_port = coturn_ports()
    if not tls:
        tls_port = None
    # A small relay range; coturn skips ports it cannot bind.
    base = random.randrange(40000, 49000, 100)
    min_port, max_port = base, base + 99
    secret = secrets.token_hex(16)
    realm = "shortpath.test"
    log = tmp / "turnserver.log"
    lines = [
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        f"listening-port={port}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={realm}",
        "no-cli",
        "fingerprint",
        # Our peers are on loopback: coturn refuses loopback peers unless told.
        "allow-loopback-peers",
        "allowed-peer-ip=127.0.0.1",
        "no-multicast-peers",
        f"min-port={min_port}",
        f"max-port={max_port}",
        f"pidfile={tmp / 'turnserver.pid'}",
        f"log-file={log}",
        "simple-log",
        "no-stdout-log",
        "no-dtls",
    ]
    cafile = None
    if tls:
        cert, key = make_self_signed(tmp)
        cafile = str(cert)
        lines += [f"tls-listening-port={tls_port}", f"cert={cert}", f"pkey={key}"]
    else:
        lines.append("no-tls")
    conf = tmp / "turnserver.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Coturn(port, tls_port, secret, realm, min_port, max_port, cafile, proc, log)
    if not stun_binding_probe("127.0.0.1", port, time.monotonic() + 10):
        stop_coturn(server)
        raise RuntimeError(f"coturn did not answer STUN on {port}; log: {log.read_text()[-2000:] if log.exists() else '-'}")
    return server


def stop_coturn(server: Coturn) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.terminate()  # by our recorded PID (Popen), never by name
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory):
    server = start_coturn(tmp_path_factory.mktemp("coturn"), tls=True)
    try:
        yield server
    finally:
        stop_coturn(server)
