"""Prometheus metrics of a gateway (in a Redis cluster) and a host (issue #14),
scraped over HTTP the way Prometheus does."""

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from shortpath.config import PoolConfig
from shortpath.errors import NoResourcesError
from shortpath.gateway.localcluster import LocalCluster
from shortpath.metrics import serve_gateway, serve_host
from tests.conftest import FAST
from tests.integration.conftest_redis import redis_server  # noqa: F401  (fixture)


async def scrape(server) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_gateway_and_host_metrics(tmp_path, redis_server):
    pools = (PoolConfig("desktop", max_sessions=1),)
    async with LocalCluster(str(tmp_path), redis_server.url, gateways=2, pools=pools, timing=FAST) as c:
        host = await c.add_host("host-1", [0])
        await c.synced()
        gm = await serve_gateway(c.gateways[1], "127.0.0.1:0")
        hm = await serve_host(host, "127.0.0.1:0")
        try:
            async with await c.connect(1) as s:
                await s.send(b"echo")
                for i in range(10):
                    await s.send(b"x" * 1000)
                    assert await s.recv() == b"x" * 1000
                try:
                    await c.connect(1, user="bob")
                    raise AssertionError("the pool has one slot")
                except NoResourcesError:
                    pass
                m = await scrape(gm)
                assert m[("shortpath_gateway_launches_total", (("result", "ok"),))] == 1
                assert m[("shortpath_gateway_launches_total", (("result", "no-resources"),))] == 1
                assert m[("shortpath_gateway_sessions", ())] == 1
                assert m[("shortpath_gateway_connections", ())] >= 2      # the client leg and the host leg
                assert m[("shortpath_gateway_cluster_healthy", ())] == 1
                assert m[("shortpath_gateway_redis_latency_seconds_count", (("op", "reserve"),))] >= 1
                h = await scrape(hm)
                assert h[("shortpath_host_sessions", (("transport", "tcp-relay"),))] == 1
                assert h[("shortpath_host_registered", ())] == 1
            await c.synced()
            for _ in range(100):            # the relay's byte count lands when it ends
                m = await scrape(gm)
                if m.get(("shortpath_gateway_relay_bytes_total", (("direction", "client_to_host"),)), 0) > 10_000:
                    break
                await asyncio.sleep(0.02)
            assert m[("shortpath_gateway_relay_bytes_total", (("direction", "client_to_host"),))] > 10_000
            assert m[("shortpath_gateway_relay_bytes_total", (("direction", "host_to_client"),))] > 10_000
            loads = {dict(k[1]).get("gateway") for k in m if k[0] == "shortpath_gateway_cluster_gateway_connections"}
            assert loads == {"gw-1", "gw-2"}
        finally:
            await gm.stop()
            await hm.stop()
