"""Stitch two legs and relay RELAY frames between them.

Each direction is one pump: read a frame (at most MAX_RELAY_PAYLOAD, checked
before the payload is read), write it unchanged to the other leg, and wait for
that leg's write buffer to fall below its high-water mark before reading more.
So a slow reader slows its writer, and the gateway holds at most one frame plus
one high-water mark of bytes per direction.

Anything but RELAY from a peer on a stitched leg is a protocol error that ends
this one session. When one leg ends, the other is sent GATEWAY_END with the
reason (``host-gone`` / ``client-gone`` / ``gateway-shutdown``) and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from .. import log
from ..errors import RemoteError, ShortpathError
from ..framed import FramedConn
from ..wire.frames import FrameType, encode_json

_log = log.get("gateway")


@dataclass
class RelayStats:
    client_to_host: int = 0
    host_to_client: int = 0


async def _pump(src: FramedConn, dst: FramedConn, counter: list[int]) -> str:
    """Forward until ``src`` ends. Returns ``eof`` or an error code."""
    try:
        while True:
            raw = await src.read_raw()
            if raw is None:
                return "eof"
            header, frame = raw
            if frame.type != FrameType.RELAY:
                raise RemoteError(f"{frame.type.name} frame on a stitched leg")
            dst.write(header + frame.payload)
            counter[0] += len(frame.payload)
            if dst.buffered > dst.high_water:
                await dst.drain()
    except ShortpathError as exc:
        return exc.code
    except (ConnectionError, OSError):
        return "reset"


async def stitch(session_id: str, client: FramedConn, host: FramedConn,
                 stop: asyncio.Event | None = None) -> tuple[str, RelayStats]:
    """Relay until either leg ends; returns (reason, stats)."""
    c2h, h2c = [0], [0]
    up = asyncio.ensure_future(_pump(client, host, c2h))
    down = asyncio.ensure_future(_pump(host, client, h2c))
    waiters = {up, down}
    stopper = None
    if stop is not None:
        stopper = asyncio.ensure_future(stop.wait())
        waiters.add(stopper)
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if stopper is not None and stopper in done:
        reason, tell = "gateway-shutdown", (client, host)
    elif down in done:
        reason, tell = "host-gone", (client,)
        if down.result() not in ("eof", "reset"):
            reason = "host-protocol-error"
    else:
        reason, tell = "client-gone", (host,)
        if up.result() not in ("eof", "reset"):
            reason = "client-protocol-error"
    for t in (up, down, stopper):
        if t is not None and not t.done():
            t.cancel()
    for t in (up, down):
        with contextlib.suppress(BaseException):
            await t
    for conn in tell:
        with contextlib.suppress(Exception):
            conn.write(encode_json(FrameType.GATEWAY_END, {"reason": reason, "detail": f"session {session_id}"}))
    await asyncio.gather(client.close(), host.close(), return_exceptions=True)
    stats = RelayStats(client_to_host=c2h[0], host_to_client=h2c[0])
    _log.info(log.kv("relay-end", sid=session_id, reason=reason, up=stats.client_to_host, down=stats.host_to_client))
    return reason, stats
