"""Prometheus metrics for the gateway and the host (``--metrics 127.0.0.1:PORT``; issue #14).

Each process has its own ``CollectorRegistry`` (several gateways in one test
process do not collide) and serves it from its own asyncio loop: a tiny HTTP/1.0
responder on ``/metrics`` (no thread, so the collectors read the loop's state
without locks). Most values are read at scrape time from state the gateway or
host keeps anyway; events that leave no state behind are counted as they happen.

Gateway (``shortpath_gateway_*``)
    connections                 open TCP connections (its load: gateway choice uses it)
    sessions                    relayed sessions stitched here and live
    pending_launches            launches waiting for a host's data leg
    hosts                       hosts whose control channel is here
    launches_total{result}      "ok" or the error code a launch failed with
    connection_events_total{event}  the gateway's counters (accepted, tls_failures, ...)
    relay_bytes_total{direction}    client_to_host / host_to_client, counted when a relay ends
    redis_latency_seconds{op}   histogram of Redis round trips (cluster mode)
    cluster_healthy             1 when the last sync with Redis worked (cluster mode)
    cluster_gateway_connections{gateway}  every cluster gateway's load as last synced
Host (``shortpath_host_*``)
    registered                  1 while the control channel is up
    sessions{transport}         live sessions by transport (tcp-relay, udp-managed, ...)
    path_switches_total         switches seen on live sessions (counted at scrape time:
                                a switch in a session that ends between two scrapes is missed)
    session_resume_events_total{event}  detached / resume / relay-replaced events in live
                                sessions' history (#15; counted at scrape time like switches)
Gateway resumes (#15) are in connection_events_total{event="resumes"} and
{event="auth_failures"} (a refused resume ticket is an auth failure).
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .errors import ConfigError
from .netaddr import parse_hostport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    """Serve ``registry`` on http://HOST:PORT/metrics from the running loop."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        if ":" not in address:
            raise ConfigError(f"bad --metrics {address!r}: expected host:port (e.g. 127.0.0.1:9464)")
        self.registry = registry
        self.host, self.port = parse_hostport(address)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> "MetricsServer":
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            while (line := await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] in (b"/metrics", b"/"):
                body, status, ctype = generate_latest(self.registry), b"200 OK", CONTENT_TYPE.encode()
            else:
                body, status, ctype = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                         + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None


# --- gateway -------------------------------------------------------------------------

class _GatewayCollector:
    def __init__(self, gw) -> None:
        self.gw = gw

    def collect(self):
        gw, b = self.gw, self.gw.broker
        for name, value, doc in (("connections", len(gw._conns), "open TCP connections (the gateway's load)"),
                                 ("sessions", len(b.sessions), "relayed sessions stitched here and live"),
                                 ("pending_launches", len(b.pending), "launches waiting for a host's data leg"),
                                 ("hosts", len(b.links), "hosts whose control channel is on this gateway")):
            g = GaugeMetricFamily(f"shortpath_gateway_{name}", doc)
            g.add_metric([], value)
            yield g
        ev = CounterMetricFamily("shortpath_gateway_connection_events", "gateway connection counters",
                                 labels=["event"])
        for k, v in sorted(gw.counters.items()):
            ev.add_metric([k], v)
        yield ev
        cl = b.cluster
        if cl is not None:
            h = GaugeMetricFamily("shortpath_gateway_cluster_healthy", "1 when the last sync with Redis worked")
            h.add_metric([], 1 if cl.healthy else 0)
            yield h
            load = GaugeMetricFamily("shortpath_gateway_cluster_gateway_connections",
                                     "connections of each cluster gateway as last synced", labels=["gateway"])
            for g_id, conns in sorted(cl.loads.items()):
                load.add_metric([g_id], conns)
            yield load


class GatewayMetrics:
    """Registry of one gateway; ``launch(result)`` and ``relay(stats)`` count events."""

    def __init__(self, gw) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_GatewayCollector(gw))
        self.launches = Counter("shortpath_gateway_launches", "launches by result (ok or error code)",
                                ["result"], registry=self.registry)
        self.relay_bytes = Counter("shortpath_gateway_relay_bytes", "bytes relayed, counted when a relay ends",
                                   ["direction"], registry=self.registry)
        self.redis_latency = Histogram("shortpath_gateway_redis_latency_seconds", "Redis round trips by operation",
                                       ["op"], registry=self.registry,
                                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))

    def launch(self, result: str) -> None:
        self.launches.labels(result).inc()

    def relay(self, stats) -> None:
        self.relay_bytes.labels("client_to_host").inc(getattr(stats, "client_to_host", 0) or 0)
        self.relay_bytes.labels("host_to_client").inc(getattr(stats, "host_to_client", 0) or 0)

    def redis(self, op: str, seconds: float) -> None:
        self.redis_latency.labels(op).observe(seconds)


# --- host ----------------------------------------------------------------------------

#: session history events of a resume (#15, session/connection.py)
RESUME_EVENTS = ("detached", "resume", "relay-replaced")

class _HostCollector:
    def __init__(self, agent) -> None:
        self.agent = agent
        self._switches: dict[str, int] = {}
        self._total = 0
        self._resume_seen: dict[tuple[str, str], int] = {}
        self._resume_total = {e: 0 for e in RESUME_EVENTS}

    def collect(self):
        a = self.agent
        reg = GaugeMetricFamily("shortpath_host_registered", "1 while the control channel is up")
        reg.add_metric([], 1 if a.registered.is_set() else 0)
        yield reg
        by_transport: dict[str, int] = {}
        seen = {}
        resume_seen: dict[tuple[str, str], int] = {}
        for sid, sess in list(a.sessions.items()):
            info = sess.info
            by_transport[info.transport] = by_transport.get(info.transport, 0) + 1
            n = sum(1 for h in info.history if h.get("event") == "switch")
            self._total += max(0, n - self._switches.get(sid, 0))
            seen[sid] = n
            for event in RESUME_EVENTS:
                k = sum(1 for h in info.history if h.get("event") == event)
                self._resume_total[event] += max(0, k - self._resume_seen.get((sid, event), 0))
                resume_seen[(sid, event)] = k
        self._switches = seen
        self._resume_seen = resume_seen
        g = GaugeMetricFamily("shortpath_host_sessions", "live sessions by transport", labels=["transport"])
        for t, n in sorted(by_transport.items()):
            g.add_metric([t], n)
        yield g
        c = CounterMetricFamily("shortpath_host_path_switches", "path switches seen on live sessions")
        c.add_metric([], self._total)
        yield c
        r = CounterMetricFamily("shortpath_host_session_resume_events",
                                "relay legs lost (detached), resumed and replaced in live sessions", labels=["event"])
        for event in RESUME_EVENTS:
            r.add_metric([event], self._resume_total[event])
        yield r


class HostMetrics:
    def __init__(self, agent) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_HostCollector(agent))


async def serve_gateway(gw, address: str) -> MetricsServer:
    """Attach metrics to a started gateway (and its cluster store) and serve them."""
    gw.metrics = GatewayMetrics(gw)
    if gw.broker.cluster is not None:
        gw.broker.cluster.store.on_latency = gw.metrics.redis
    return await MetricsServer(gw.metrics.registry, address).start()


async def serve_host(agent, address: str) -> MetricsServer:
    return await MetricsServer(HostMetrics(agent).registry, address).start()
