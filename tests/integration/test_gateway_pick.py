"""Gateway choice against real gateways (issue #14): three gateways behind
delaying TCP proxies (5, 12 and 30 ms one way, like the issue's lab), and two
gateways in the same 10 ms bucket with different loads. The client's measured
pick must follow the AVD rule."""

import asyncio

from shortpath.client.gateway_choice import choose, measure
from shortpath.demo import LocalStack
from tests.conftest import FAST


class DelayProxy:
    """Loopback TCP proxy adding ``delay_ms`` to each direction (chunks keep their order)."""

    def __init__(self, target_port: int, delay_ms: float) -> None:
        self.target_port, self.delay = target_port, delay_ms / 1000
        self.server = None
        self.port = 0

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, reader, writer):
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await q.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if data is None:
                    writer.close()
                    return
                writer.write(data)
        t = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                q.put_nowait((loop.time() + self.delay, data))
        except ConnectionError:
            pass
        q.put_nowait((loop.time() + self.delay, None))
        await t

    async def _conn(self, reader, writer):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, uw), self._pipe(ur, writer), return_exceptions=True)

    async def stop(self):
        self.server.close()


async def test_three_gateways_at_5_12_30_ms_and_load_within_a_bucket(tmp_path):
    stacks = [LocalStack(str(tmp_path / f"gw{i}"), hosts=0, timing=FAST) for i in range(4)]
    proxies = []
    try:
        for st in stacks:
            await st.__aenter__()
        for st, d in zip(stacks, (5, 12, 30, 6)):
            proxies.append(await DelayProxy(st.gateway.port, d).start())
        addr = [f"127.0.0.1:{p.port}" for p in proxies]
        cafiles = [st.cafile for st in stacks]
        # each gateway has its own certificate here: probe each with its own pin
        probes = [(await measure([a], ca, rounds=3))[0] for a, ca in zip(addr[:3], cafiles)]
        assert [p.bucket() for p in probes] == [1, 2, 6], probes      # 2 x one-way delay
        assert choose(probes).gateway == addr[0]
        # gateways 0 (5 ms) and 3 (6 ms) share the 10-20 ms bucket; load gateway 0 with idle connections
        idle = [await asyncio.open_connection("127.0.0.1", stacks[0].gateway.port) for _ in range(5)]
        await asyncio.sleep(0.05)   # let the gateway accept them
        pair = [(await measure([addr[i]], cafiles[i], rounds=3))[0] for i in (0, 3)]
        assert [p.bucket() for p in pair] == [1, 1], pair
        c = choose(pair)
        assert c.gateway == addr[3] and "fewest connections" in c.reason, (c.reason, pair)
        for _, w in idle:
            w.close()
    finally:
        for p in proxies:
            await p.stop()
        for st in stacks:
            await st.__aexit__(None, None, None)
