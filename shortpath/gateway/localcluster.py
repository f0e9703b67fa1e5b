"""N gateways on loopback sharing one Redis, for tests and benchmarks (issue #14).

Each gateway has its own state directory; they share the deployment's token
audience (``gateway_id``), signing key and TLS certificate (the first gateway's
``signing.key``, ``gateway.key`` and ``gateway.crt`` are copied into the others'
directories before they start, as docs/config.md tells an operator to do), so
hosts and clients pin one certificate for every gateway.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time

from ..app.desktop import host_handler
from ..auth.tokens import TokenSigner
from ..client import connect
from ..config import ClusterConfig, GatewayConfig, PoolConfig, Timing, state_path
from ..host.agent import HostAgent
from .server import Gateway


class LocalCluster:
    def __init__(self, base_dir: str, redis_url: str, gateways: int = 2,
                 pools: tuple[PoolConfig, ...] | None = None, timing: Timing | None = None,
                 sync_interval: float = 0.1, handler=host_handler, **gw_kwargs) -> None:
        self.base = base_dir
        self.redis_url = redis_url
        self.n = gateways
        self.pools = pools or (PoolConfig("desktop"),)
        self.timing = timing or Timing()
        self.sync_interval = sync_interval
        self.handler = handler
        self.gw_kwargs = {"launch_burst": 10_000.0, "launch_rate": 10_000.0, **gw_kwargs}
        self.gateways: list[Gateway | None] = [None] * gateways
        self.ports: list[int] = [0] * gateways
        self.hosts: list[HostAgent] = []
        self.signer: TokenSigner | None = None
        self.cafile = os.path.join(base_dir, "gateway.crt")

    def state_dir(self, i: int) -> str:
        return os.path.join(self.base, f"gw{i + 1}")

    def config(self, i: int) -> GatewayConfig:
        return GatewayConfig(listen_host="127.0.0.1", listen_port=self.ports[i], state_dir=self.state_dir(i),
                             pools=self.pools, timing=self.timing,
                             cluster=ClusterConfig(redis=self.redis_url, id=f"gw-{i + 1}",
                                                   sync_interval=self.sync_interval), **self.gw_kwargs)

    async def start_gateway(self, i: int) -> Gateway:
        for name in ("signing.key", "gateway.key", "gateway.crt"):   # one deployment identity
            if i and not os.path.exists(os.path.join(self.state_dir(i), name)):
                dst = state_path(self.state_dir(i), name)
                shutil.copyfile(os.path.join(self.state_dir(0), name), dst)
                os.chmod(dst, 0o600)
        gw = Gateway(self.config(i))
        await gw.start()
        self.gateways[i] = gw
        self.ports[i] = gw.port        # a restart reuses the port
        if self.signer is None:
            self.signer = gw.signer
        return gw

    async def kill_gateway(self, i: int) -> None:
        """Stop gateway i the hard way: its Redis state is left to expire (a crash)."""
        gw = self.gateways[i]
        self.gateways[i] = None
        cl = gw.broker.cluster
        gw.broker.cluster = None
        cl._stopping = True
        for t in cl._tasks + list(cl._bg):
            t.cancel()
        await asyncio.gather(*cl._tasks, *cl._bg, return_exceptions=True)
        await cl.store.close()
        await gw.stop()

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    @property
    def addresses(self) -> list[str]:
        return [self.address(i) for i in range(self.n)]

    def user_token(self, user: str = "alice", resources=("desktop",), ttl: float = 3600) -> str:
        return self.signer.mint("user", user, self.config(0).gateway_id, ttl, time.time(), resources=list(resources))

    def host_token(self, host_id: str, pool: str = "desktop", ttl: float = 3600) -> str:
        return self.signer.mint("host", host_id, self.config(0).gateway_id, ttl, time.time(), pool=pool)

    async def add_host(self, host_id: str, gateways: list[int], pool: str = "desktop", handler=None) -> HostAgent:
        """A host given the listed gateways (it registers with the first)."""
        agent = HostAgent([self.address(i) for i in gateways], self.host_token(host_id, pool), host_id,
                          handler or self.handler, state_dir=os.path.join(self.base, "hosts"), cafile=self.cafile,
                          timing=self.timing)
        agent.start()
        self.hosts.append(agent)
        await asyncio.wait_for(agent.registered.wait(), 10)
        return agent

    async def synced(self) -> None:
        """Every running gateway has pushed its state to Redis."""
        for gw in self.gateways:
            if gw is not None and gw.broker.cluster is not None:
                await asyncio.wait_for(gw.broker.cluster.listening.wait(), 10)
                await gw.broker.cluster.flush()

    async def connect(self, i: int, user: str = "alice", resource: str = "desktop", **kw):
        kw.setdefault("shortpath", False)
        return await connect(self.address(i), self.user_token(user, (resource,)), resource, cafile=self.cafile,
                             timing=self.timing, **kw)

    async def __aenter__(self) -> "LocalCluster":
        for i in range(self.n):
            await self.start_gateway(i)
        shutil.copyfile(self.gateways[0].cert_path, self.cafile)   # the one certificate they all use
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(h.stop() for h in self.hosts), return_exceptions=True)
        for gw in self.gateways:
            if gw is not None:
                await gw.stop()
