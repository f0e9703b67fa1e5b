"""Sessions that survive (#15) on loopback: a gateway process SIGKILLed and restarted under live
sessions, bad resume tickets refused with typed errors, a lost relay replaced while on UDP.

The gateway runs as a real subprocess (``shortpath gateway``) so it can be killed for real;
hosts and clients run in this process. Streams are numbered both ways and checked message by
message: nothing lost, duplicated or reordered."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from shortpath.auth import resume as tickets
from shortpath.auth.tokens import TokenSigner
from shortpath.client import connect
from shortpath.client.resume import Resumer
from shortpath.config import Timing, state_path
from shortpath.demo import LocalStack
from shortpath.errors import BadSignature, SessionClosed, TicketReplayed, TokenExpired, WrongClient
from shortpath.host.agent import HostAgent

from tests.conftest import FAST

TIMING = Timing(**{**FAST.__dict__, "resume_grace": 20.0, "resume_retry": 0.1})
GW_ID = "gw-resume-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    def __init__(self, tmp_path) -> None:
        self.state = str(tmp_path / "gw")
        self.port = _free_port()
        self.config = str(tmp_path / "gw.toml")
        timing = "\n".join(f"{k} = {v!r}" for k, v in TIMING.__dict__.items())
        with open(self.config, "w") as f:
            f.write(f'[gateway]\ngateway_id = "{GW_ID}"\n\n[[pool]]\nname = "desktop"\nmax_sessions = 20\n\n'
                    f"[pool.shortpath]\nenabled = false\n\n[timing]\n{timing}\n")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        self.proc = subprocess.Popen([sys.executable, "-m", "shortpath", "--log", "INFO", "gateway",
                                      "--config", self.config, "--state", self.state,
                                      "--listen", self.address],
                                     env=env, stdout=subprocess.PIPE, stderr=open(f"{self.state}.log.{self.starts}", "w"))
        self.starts += 1
        line = self.proc.stdout.readline()
        ready = json.loads(line)
        assert ready["event"] == "gateway-ready" and ready["port"] == self.port
        self.cafile = ready["cert"]
        self.signer = TokenSigner.load_or_create(state_path(self.state, "signing.key"))

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def gateway(tmp_path):
    gw = GatewayProcess(tmp_path)
    gw.start()
    yield gw
    gw.stop()


class Numbered:
    """Host side: echo each numbered message and check the stream it receives."""

    def __init__(self) -> None:
        self.got: dict[str, list[int]] = {}

    async def handler(self, session) -> None:
        got = self.got.setdefault(session.session_id, [])
        try:
            while True:
                m = await session.recv()
                got.append(int(m))
                await session.send(m)
        except SessionClosed:
            pass


async def _host(gw: GatewayProcess, host_id: str, app: Numbered, tmp_path) -> HostAgent:
    token = gw.signer.mint("host", host_id, GW_ID, 3600, time.time(), pool="desktop")
    agent = HostAgent(gw.address, token, host_id, app.handler, state_dir=str(tmp_path / "hosts"),
                      cafile=gw.cafile, timing=TIMING)
    agent.start()
    await asyncio.wait_for(agent.registered.wait(), 10)
    return agent


async def _client(gw: GatewayProcess, user: str = "alice", **kw):
    token = gw.signer.mint("user", user, GW_ID, 3600, time.time(), resources=["desktop"])
    return await connect(gw.address, token, "desktop", cafile=gw.cafile, timing=TIMING, **kw)


async def _stream(session, n: int, every: float) -> list[int]:
    """Send n numbered messages, reading the echoes; returns what came back."""
    back: list[int] = []

    async def reader():
        while len(back) < n:
            back.append(int(await session.recv()))
    r = asyncio.ensure_future(reader())
    try:
        for i in range(n):
            await session.send(b"%d" % i)
            await asyncio.sleep(every)
        await asyncio.wait_for(r, 30)
    finally:
        r.cancel()
    return back


async def test_gateway_sigkilled_and_restarted_every_relay_only_session_resumes(gateway, tmp_path):
    app = Numbered()
    agents = [await _host(gateway, f"h{i}", app, tmp_path) for i in range(2)]
    try:
        sessions = [await _client(gateway, f"u{i}", shortpath=False) for i in range(4)]
        n = 300
        streams = [asyncio.ensure_future(_stream(s, n, 0.01)) for s in sessions]
        await asyncio.sleep(1.0)                         # mid-stream
        gateway.kill()
        t_kill = time.monotonic()
        await asyncio.sleep(0.5)
        assert all(s.info.history[-1]["event"] == "detached" for s in sessions)
        gateway.start()                                  # same port, same state directory
        t_up = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*streams), 60)
        for s, back in zip(sessions, results):
            assert back == list(range(n)), "lost, duplicated or reordered on the way back"
            assert app.got[s.session_id] == list(range(n)), "lost, duplicated or reordered on the way in"
            info = s.info
            assert info.resumes == 1 and info.transport == "tcp-relay"
            events = [h["event"] for h in info.history]
            assert events.index("detached") < events.index("resume")
            resumed_at = next(h["t"] for h in info.history if h["event"] == "resume")
            print(f"{s.session_id}: data flowing again {resumed_at - (time.time() - (time.monotonic() - t_up)):.3f}s "
                  f"after the gateway was back ({time.monotonic() - t_kill:.1f}s since the kill)")
        # the host side saw the same: one resume per session, visible in its stats
        host_sessions = [d for a in agents for d in a.stats()["sessions"]]
        assert sorted(d["session_id"] for d in host_sessions) == sorted(s.session_id for s in sessions)
        assert all(d["resumes"] == 1 for d in host_sessions)
        for s in sessions:
            await s.close()
    finally:
        for a in agents:
            await a.stop()


async def _try_resume(gw: GatewayProcess, sid: str, ticket: str, key: tickets.ClientKey, fingerprint: str):
    r = Resumer([gw.address], sid, ticket, key, fingerprint, cafile=gw.cafile, timing=TIMING)
    tls = await r()
    await tls.conn.close()


async def test_bad_tickets_are_refused_with_typed_errors_while_the_real_session_resumes(gateway, tmp_path):
    app = Numbered()
    agent = await _host(gateway, "h1", app, tmp_path)
    try:
        s = await _client(gateway, shortpath=False)
        assert [int(x) for x in await _stream(s, 20, 0)] == list(range(20))
        real = s.resumer
        sid, first_ticket, fp = s.session_id, real.ticket, real.fingerprint
        thief = tickets.ClientKey()
        gateway.kill()
        await asyncio.sleep(0.3)
        gateway.start()
        back = await asyncio.wait_for(_stream(s, 50, 0.005), 30)
        assert back == list(range(50)) and s.info.resumes == 1
        assert real.ticket != first_ticket                 # the resume handed out a fresh ticket
        # replayed: the ticket the real client used, with the real key
        with pytest.raises(TicketReplayed):
            await _try_resume(gateway, sid, first_ticket, real.key, fp)
        # wrong client: the live ticket (sniffed) without the key it is bound to
        with pytest.raises(WrongClient):
            await _try_resume(gateway, sid, real.ticket, thief, fp)
        # forged: minted by another signing key, bound to the thief's key
        forged = tickets.mint(TokenSigner.generate(), user="alice", gateway_id=GW_ID, session_id=sid,
                              host_id="h1", resource="desktop", fingerprint=fp, client_key=thief.public_hex,
                              grace=20, now=time.time())
        with pytest.raises(BadSignature):
            await _try_resume(gateway, sid, forged, thief, fp)
        # expired: a real signature, long past its lifetime
        old = tickets.mint(gateway.signer, user="alice", gateway_id=GW_ID, session_id=sid, host_id="h1",
                           resource="desktop", fingerprint=fp, client_key=real.key.public_hex, grace=20,
                           now=time.time() - 3600)
        with pytest.raises(TokenExpired):
            await _try_resume(gateway, sid, old, real.key, fp)
        # none of that touched the real session
        assert await asyncio.wait_for(_stream(s, 30, 0), 10) == list(range(30))
        assert s.info.resumes == 1 and not s.closed
        await s.close()
    finally:
        await agent.stop()


async def test_host_ends_a_detached_session_after_the_grace_period(tmp_path):
    timing = Timing(**{**TIMING.__dict__, "resume_grace": 1.0})
    async with LocalStack(str(tmp_path), hosts=1, timing=timing) as stack:
        s = await stack.connect(shortpath=False)
        await s.send(b"echo")
        await s.send(b"x")
        assert await s.recv() == b"x"
        host = stack.hosts[0].sessions[s.session_id]
        s.resumer = None                         # this client will never come back
        for p in list(s.paths.values()):
            p.conn.abort()                       # its TCP leg is reset
        t0 = time.monotonic()
        reason = await asyncio.wait_for(host.wait_closed(), 10)
        took = time.monotonic() - t0
        assert reason == "resume-timeout" and "client-gone" in host.close_detail
        assert 0.9 <= took <= 2.0
        await s.close()


async def test_relay_lost_while_on_udp_is_replaced_in_the_background(tmp_path):
    async with LocalStack(str(tmp_path), hosts=1, timing=TIMING) as stack:
        s = await stack.connect()
        await s.send(b"echo")
        end = time.monotonic() + 15
        while s.info.transport == "tcp-relay" and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert s.info.transport.startswith("udp")
        port = stack.gateway.port
        await stack.gateway.stop()               # the relay goes; UDP carries on
        await asyncio.sleep(0.2)
        assert s.relay is None and s.info.transport.startswith("udp") and not s.closed
        t0 = time.monotonic()
        await stack.start_gateway(port)
        end = time.monotonic() + 20
        while s.relay is None and time.monotonic() < end:
            await asyncio.sleep(0.02)
        print(f"relay replaced {time.monotonic() - t0:.3f}s after the gateway was back")
        assert s.relay is not None and s.relay.path_id == "relay-2"
        assert s.info.relay_replacements == 1 and s.info.transport.startswith("udp")
        assert any(h["event"] == "relay-replaced" for h in s.info.history)
        for i in range(30):
            await s.send(b"%d" % i)
            assert await s.recv() == b"%d" % i
        await s.close()


async def test_tickets_are_refreshed_inside_the_session_and_the_newest_one_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(tickets, "MIN_LIFETIME", 2.0)     # 2 s tickets, refreshed at half-life
    timing = Timing(**{**TIMING.__dict__, "resume_grace": 1.0})
    async with LocalStack(str(tmp_path), hosts=1, timing=timing) as stack:
        s = await stack.connect(shortpath=False)
        await s.send(b"echo")
        first = s.resumer.ticket
        end = time.monotonic() + 10
        seen = {first}
        while len(seen) < 3 and time.monotonic() < end:    # two refreshes, by heartbeat
            await asyncio.sleep(0.05)
            seen.add(s.resumer.ticket)
        assert len(seen) >= 3, "no fresh tickets reached the client"
        assert s.resumer.ticket != first
        port = stack.gateway.port
        await stack.gateway.stop()
        await stack.start_gateway(port)
        for i in range(20):
            await s.send(b"%d" % i)
            assert await asyncio.wait_for(s.recv(), 10) == b"%d" % i
        assert s.info.resumes == 1
        await s.close()
