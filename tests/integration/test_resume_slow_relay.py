"""A slow relay is not a dead one (#15 regression, found by the scale benchmark under CPU
overload): on loopback, a client reaches its gateway through a TCP proxy whose delay grows
to 2 s each way (echo RTT 4 s, longer than relay_silent_after) while a closed-loop echo runs.
The client's relay watch must keep the leg: no resume, every echo back, in order. (A leg
that goes silent for real is still given up: tests/unit/test_resume.py, tests/lab.)

The gateway is a subprocess as in test_resume.py; host, client and proxy run in this process."""

import asyncio
import time

from shortpath.session import events as ev

from tests.integration.test_resume import TIMING, Numbered, _client, _host, gateway  # noqa: F401 (fixture)


class DelayProxy:
    """TCP proxy on loopback: every chunk goes on ``delay`` seconds after it arrived (never
    before an earlier chunk: TCP keeps order)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [cw, uw]
        for r, w in ((cr, uw), (ur, cw)):
            q: asyncio.Queue = asyncio.Queue()
            for coro in (self._read(r, q), self._write(q, w)):
                t = asyncio.ensure_future(coro)
                self.tasks.add(t)

    async def _read(self, r: asyncio.StreamReader, q: asyncio.Queue) -> None:
        last = 0.0
        while data := await r.read(65536):
            last = max(last, time.monotonic() + self.delay)
            q.put_nowait((last, data))
        q.put_nowait((last, b""))

    async def _write(self, q: asyncio.Queue, w: asyncio.StreamWriter) -> None:
        while True:
            due, data = await q.get()
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            if not data:
                w.close()
                return
            w.write(data)

    async def ramp(self, to: float, over: float, steps: int = 40) -> None:
        start = self.delay
        for i in range(1, steps + 1):
            await asyncio.sleep(over / steps)
            self.delay = start + (to - start) * i / steps

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in self.writers:
            w.close()
        self.server.close()


async def test_a_relay_slowing_to_seconds_is_kept_without_a_resume(gateway, tmp_path):
    app = Numbered()
    agent = await _host(gateway, "h1", app, tmp_path)
    proxy = DelayProxy(gateway.port)
    await proxy.start()
    real = gateway.port
    gateway.port = proxy.port          # the client (and its resumer) dial the proxy
    try:
        s = await _client(gateway)
    finally:
        gateway.port = real
    try:
        lost: list = []
        handle = s._handle

        def spy(e):
            if isinstance(e, ev.RelayLost):
                lost.append(e)
            handle(e)
        s._handle = spy
        ramp = asyncio.ensure_future(proxy.ramp(2.0, over=6.0))
        back: list[int] = []
        took: list[float] = []
        t_end = time.monotonic() + 16.0
        i = 0
        while time.monotonic() < t_end:          # one echo in flight at a time
            t0 = time.monotonic()
            await s.send(b"%d" % i)
            back.append(int(await asyncio.wait_for(s.recv(), 15)))
            took.append(time.monotonic() - t0)
            i += 1
        await ramp
        assert max(took) > TIMING.relay_silent_after, took        # silent longer than the old limit
        assert lost == [] and s.counters.get("resumes", 0) == 0, (lost, s.history)
        assert back == list(range(i)) and i >= 3
    finally:
        await s.close()
        await proxy.close()
        await agent.stop()
