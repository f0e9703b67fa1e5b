"""A gateway of a cluster SIGKILLed under relay-only sessions (#15 x #14): two real
``shortpath gateway`` processes share one deployment identity and one broker on Redis; the
host knows both, every client was launched through gateway A and told about B. A dies; the
host registers on B, every client's resume finds A refusing and goes through B, and the
numbered streams come out whole: nothing lost, duplicated or reordered, either way."""

import asyncio
import os
import shutil
import time

from shortpath.client import connect
from shortpath.errors import NoResourcesError
from shortpath.host.agent import HostAgent

from tests.integration.conftest_redis import redis_server  # noqa: F401  (fixture)
from tests.integration.test_resume import GW_ID, TIMING, GatewayProcess, Numbered, _stream


class ClusterGateway(GatewayProcess):
    """GatewayProcess with a ``[cluster]`` section: broker on Redis, a name of its own."""

    def __init__(self, tmp_path, name: str, redis_url: str) -> None:
        super().__init__(tmp_path / name)
        with open(self.config, "a") as f:
            f.write(f'\n[cluster]\nredis = "{redis_url}"\nid = "{name}"\nsync_interval = 0.2\n')


def _share_identity(src: str, dst: str) -> None:
    """One deployment: the same token signing key and TLS certificate on both gateways."""
    os.makedirs(dst, mode=0o700, exist_ok=True)
    for name in ("signing.key", "gateway.key", "gateway.crt"):
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
        os.chmod(os.path.join(dst, name), 0o600)


async def test_gateway_of_a_cluster_sigkilled_sessions_resume_through_the_other(tmp_path, redis_server):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a = ClusterGateway(tmp_path, "a", redis_server.url)
    b = ClusterGateway(tmp_path, "b", redis_server.url)
    app = Numbered()
    agents, sessions = [], []
    try:
        a.start()
        _share_identity(a.state, b.state)
        b.start()
        # the host knows both gateways and registers on A (the first of its list)
        token = a.signer.mint("host", "h1", GW_ID, 3600, time.time(), pool="desktop")
        agent = HostAgent([a.address, b.address], token, "h1", app.handler, state_dir=str(tmp_path / "hosts"),
                          cafile=a.cafile, timing=TIMING)
        agent.start()
        agents.append(agent)
        await asyncio.wait_for(agent.registered.wait(), 10)
        for i in range(3):
            user = a.signer.mint("user", f"u{i}", GW_ID, 3600, time.time(), resources=["desktop"])
            end = time.monotonic() + 10
            while True:        # the broker on Redis sees the host once gateway A has synced it
                try:
                    sessions.append(await connect(a.address, user, "desktop", cafile=a.cafile, timing=TIMING,
                                                  shortpath=False, gateways=[b.address]))
                    break
                except NoResourcesError:
                    if time.monotonic() > end:
                        raise
                    await asyncio.sleep(0.1)
        assert all(s.resumer.gateways == [a.address, b.address] for s in sessions)
        n = 300
        streams = [asyncio.ensure_future(_stream(s, n, 0.01)) for s in sessions]
        await asyncio.sleep(1.0)                          # mid-stream
        a.kill()                                          # SIGKILL: no goodbye to anyone
        t_kill, t_kill_wall = time.monotonic(), time.time()
        results = await asyncio.wait_for(asyncio.gather(*streams), 60)
        took = time.monotonic() - t_kill
        for s, back in zip(sessions, results):
            assert back == list(range(n)), "lost, duplicated or reordered on the way back"
            assert app.got[s.session_id] == list(range(n)), "lost, duplicated or reordered on the way in"
            info = s.info
            assert info.resumes == 1 and info.transport == "tcp-relay" and not s.closed
            assert s.resumer.last_gateway == b.address, "resumed through the gateway that is dead?"
            events = [h["event"] for h in info.history]
            assert events.index("detached") < events.index("resume")
            resumed = next(h["t"] for h in info.history if h["event"] == "resume")
            print(f"{s.session_id}: resumed through B {resumed - t_kill_wall:.3f} s after A was killed")
        host_sessions = agent.stats()["sessions"]
        assert sorted(d["session_id"] for d in host_sessions) == sorted(s.session_id for s in sessions)
        assert all(d["resumes"] == 1 for d in host_sessions)
        print(f"{len(sessions)} sessions resumed through the other gateway; streams done {took:.2f} s after the kill")
        for s in sessions:
            await s.close()
    finally:
        for s in sessions:
            if not s.closed:
                await s.close()
        for ag in agents:
            await ag.stop()
        a.stop()
        b.stop()
