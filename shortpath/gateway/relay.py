"""Stitch two legs and relay RELAY frames between them.

Each direction is one pump: read whatever bytes have arrived (up to
``READ_SIZE``), check the frame headers in them with a RelayScanner (type
RELAY, size at most MAX_RELAY_PAYLOAD) without copying payloads, write the
chunk unchanged to the other leg, and wait for that leg's write buffer to fall
below its high-water mark before reading more. So a slow reader slows its
writer, and the gateway holds at most one read plus one high-water mark of
bytes per direction.

Anything but RELAY from a peer on a stitched leg is a protocol error that ends
this one session. When one leg ends, the other is sent GATEWAY_END with the
reason (``host-gone`` / ``client-gone`` / ``gateway-shutdown``) and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from .. import log
from ..errors import MalformedFrame, ShortpathError
from ..framed import FramedConn
from ..wire.frames import MAX_RELAY_PAYLOAD, FrameType, encode_json
from ..wire.scanner import RelayScanner

_log = log.get("gateway")


@dataclass
class RelayStats:
    client_to_host: int = 0
    host_to_client: int = 0


READ_SIZE = 256 * 1024


async def _pump(src: FramedConn, dst: FramedConn, counter: list[int], scanner: RelayScanner) -> str:
    """Forward until ``src`` ends. Returns ``eof`` or an error code."""
    try:
        while True:
            chunk = await src.reader.read(READ_SIZE)
            if not chunk:
                if not scanner.at_boundary:
                    raise MalformedFrame("leg ended inside a frame")
                return "eof"
            scanner.feed(chunk)
            dst.write(chunk)
            counter[0] += len(chunk)
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
    # Each scanner tracks the frames *written to* one leg, so the gateway knows
    # whether that leg is at a frame boundary before it adds GATEWAY_END.
    to_host = RelayScanner(MAX_RELAY_PAYLOAD)
    to_client = RelayScanner(MAX_RELAY_PAYLOAD)
    up = asyncio.ensure_future(_pump(client, host, c2h, to_host))
    down = asyncio.ensure_future(_pump(host, client, h2c, to_client))
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
    scanners = {id(client): to_client, id(host): to_host}
    for conn in tell:
        if not scanners[id(conn)].at_boundary:
            continue   # the other leg died mid-frame; the peer will see the leg close
        with contextlib.suppress(Exception):
            conn.write(encode_json(FrameType.GATEWAY_END, {"reason": reason, "detail": f"session {session_id}"}))
    await asyncio.gather(client.close(), host.close(), return_exceptions=True)
    stats = RelayStats(client_to_host=c2h[0], host_to_client=h2c[0])
    _log.info(log.kv("relay-end", sid=session_id, reason=reason, up=stats.client_to_host, down=stats.host_to_client))
    return reason, stats
