"""The demo: gateway + host + client on loopback, one session, its path and RTT.

No root needed. Everything lives in a temporary state directory that is
removed afterwards. Run it with ``shortpath demo`` (or ``python -m shortpath demo``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time

from .app.desktop import check_frame, host_handler
from .config import GatewayConfig, PoolConfig, Timing
from .gateway import Gateway
from .host import HostAgent
from .client import connect, feed


class LocalStack:
    """A gateway with N hosts on loopback, for the demo, tests and benchmarks."""

    def __init__(self, state_dir: str, hosts: int = 1, pools: tuple[PoolConfig, ...] | None = None,
                 timing: Timing | None = None, handler=host_handler, managed: bool | int = True,
                 udp: dict | None = None, **gw_kwargs) -> None:
        self.state_dir = state_dir
        self.timing = timing or Timing()
        self.config = GatewayConfig(listen_host="127.0.0.1", listen_port=0, state_dir=state_dir,
                                    pools=pools or (PoolConfig("desktop"),), timing=self.timing, **gw_kwargs)
        self.n_hosts = hosts
        self.handler = handler
        self.gateway: Gateway | None = None
        self.hosts: list[HostAgent] = []
        # Loopback: gather candidates on 127.0.0.1 (aioice skips loopback by default)
        self.udp = {"host_addresses": ["127.0.0.1"], **(udp or {})}
        self.managed = managed

    @property
    def managed_address(self) -> tuple[str, int] | None:
        """managed=True: a free loopback port; an int: that port (3390 in a test)."""
        if self.managed is False:
            return None
        return ("127.0.0.1", 0 if self.managed is True else int(self.managed))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    @property
    def cafile(self) -> str:
        return self.gateway.cert_path

    def user_token(self, user: str = "alice", resources=("desktop",), ttl: float = 3600) -> str:
        return self.gateway.signer.mint("user", user, self.config.gateway_id, ttl, time.time(),
                                        resources=list(resources))

    def host_token(self, host_id: str, pool: str = "desktop", ttl: float = 3600) -> str:
        return self.gateway.signer.mint("host", host_id, self.config.gateway_id, ttl, time.time(), pool=pool)

    async def start_gateway(self, port: int = 0) -> Gateway:
        cfg = self.config if not port else GatewayConfig(**{**self.config.__dict__, "listen_port": port})
        self.gateway = Gateway(cfg)
        await self.gateway.start()
        return self.gateway

    async def add_host(self, host_id: str, pool: str = "desktop", wait: bool = True) -> HostAgent:
        agent = HostAgent(self.address, self.host_token(host_id, pool), host_id, self.handler,
                          state_dir=self.state_dir, cafile=self.cafile, timing=self.timing,
                          managed=self.managed_address, udp=self.udp)
        agent.start()
        self.hosts.append(agent)
        if wait:
            await asyncio.wait_for(agent.registered.wait(), 10)
        return agent

    async def __aenter__(self) -> "LocalStack":
        await self.start_gateway()
        for i in range(self.n_hosts):
            await self.add_host(f"host-{i + 1}")
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(h.stop() for h in self.hosts), return_exceptions=True)
        if self.gateway is not None:
            await self.gateway.stop()

    async def connect(self, user: str = "alice", resource: str = "desktop", **kw):
        kw.setdefault("udp", self.udp)
        return await connect(self.address, self.user_token(user, kw.pop("resources", (resource,))), resource,
                             cafile=self.cafile, timing=self.timing, **kw)


async def run_demo(seconds: float = 2.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="shortpath-demo-") as state:
        async with LocalStack(state, hosts=1) as stack:
            print(f"gateway  listening on {stack.address} (TLS, self-signed cert in a temp state dir)")
            host = stack.hosts[0]
            print(f"host     {host.host_id} registered over its outbound control channel "
                  f"(cert {host.fingerprint[:23]}...); no TCP listener; managed Shortpath on "
                  f"udp {host.listener.address[0]}:{host.listener.address[1]}")
            token = stack.user_token()
            resources = await feed(stack.address, token, cafile=stack.cafile)
            print(f"client   feed: {', '.join(r['name'] + ' (' + r['kind'] + ')' for r in resources)}")
            t0 = time.monotonic()
            session = await connect(stack.address, token, "desktop", cafile=stack.cafile, udp=stack.udp)
            setup_ms = (time.monotonic() - t0) * 1000
            async with session:
                print(f"session  {session.session_id} up on {session.info.transport} after {setup_ms:.1f} ms")
                await session.send(b"desktop %.1f 30" % seconds)
                rtts: dict[str, list[float]] = {}
                frames = 0
                pending_done = None
                # Input events every 20 ms while frames stream; each echo's RTT is
                # filed under the path the session was sending on at the time.
                while pending_done is None:
                    kind = session.info.transport
                    t = time.monotonic()
                    await session.send(b"E" * 64, channel="input")
                    while True:
                        msg = await session.recv()
                        if msg.startswith(b"F"):
                            check_frame(msg)
                            frames += 1
                        elif msg.startswith(b"done"):
                            pending_done = msg
                        else:
                            break
                    rtts.setdefault(kind, []).append((time.monotonic() - t) * 1000)
                    await asyncio.sleep(0.02)
                expected = int(pending_done.split()[1])
                ok = frames == expected
                info = session.info
            for h in info.history:
                print(f"  +{(h['t'] - info.started_at) * 1000:7.1f} ms  {h['event']:<10} {h['transport']:<12} {h['reason']}")
            for kind, xs in rtts.items():
                print(f"rtt      {kind:<12} p50={statistics.median(xs):.2f} ms over {len(xs)} input events")
            print(f"path     {info.transport}" + (f" (time to UDP {info.time_to_udp * 1000:.0f} ms)" if info.time_to_udp else ""))
            print(f"stream   {frames}/{expected} desktop frames received intact, {info.bytes_received / 1e6:.2f} MB in")
            return {"transport": info.transport, "setup_ms": setup_ms, "time_to_udp": info.time_to_udp,
                    "frames_ok": ok}


def main(seconds: float = 2.0) -> int:
    result = asyncio.run(run_demo(seconds))
    return 0 if result["frames_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
