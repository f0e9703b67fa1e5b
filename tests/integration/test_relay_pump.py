"""The gateway's relay pump on real TLS legs: bytes exact, back-pressure bounded,
GATEWAY_END only at a frame boundary, bad frames end the session."""

import asyncio
import hashlib
import os

from shortpath.auth import certs
from shortpath.framed import FramedConn
from shortpath.gateway.relay import stitch
from shortpath.wire.frames import HEADER, MAX_RELAY_PAYLOAD, FrameType, decode_json, encode

HIGH_WATER = 64 * 1024


async def _legs(tmp_path, n=2):
    """n TLS connections to a local server; returns (peer-side conns, gateway-side conns, server)."""
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    certs.load_or_create(cert, key, "relay-test", sans=["127.0.0.1"])
    accepted: asyncio.Queue = asyncio.Queue()

    async def on_conn(r, w):
        accepted.put_nowait(FramedConn(r, w, MAX_RELAY_PAYLOAD, HIGH_WATER))
        await asyncio.Event().wait()      # the test owns the connection

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=certs.server_context(cert, key))
    port = srv.sockets[0].getsockname()[1]
    peers, gws = [], []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_context(cert))
        peers.append((r, w))
        gws.append(await accepted.get())
    return peers, gws, srv


def _relay_stream(total: int, seed: bytes = b"s") -> bytes:
    """RELAY frames of varied sizes whose payloads are a checkable byte stream."""
    out, i = bytearray(), 0
    while len(out) < total:
        size = [1, 100, 16384, MAX_RELAY_PAYLOAD, 777][i % 5]
        payload = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() * (size // 32 + 1))[:size]
        out += encode(FrameType.RELAY, payload)
        i += 1
    return bytes(out)


async def _read_frames(reader, until_end=True):
    frames = []
    while True:
        try:
            hdr = await reader.readexactly(6)
        except asyncio.IncompleteReadError:
            return frames
        _, ftype, n = HEADER.unpack(hdr)
        payload = await reader.readexactly(n)
        frames.append((ftype, payload))
        if ftype == FrameType.GATEWAY_END and until_end:
            return frames


async def test_bytes_exact_with_back_pressure_then_gateway_end(tmp_path):
    (client, host), (gc, gh), srv = await _legs(tmp_path)
    relay = asyncio.ensure_future(stitch("t1", gc, gh))
    data = _relay_stream(6 * 2**20)
    client[1].write(data)                # the host does not read yet
    await asyncio.sleep(0.5)
    # the gateway holds a bounded amount for the stalled host: it paused reading the client
    assert gh.buffered <= HIGH_WATER + 512 * 1024
    got = bytearray()
    while len(got) < len(data):
        got += await host[0].read(1 << 20)
    assert bytes(got[:len(data)]) == data and len(got) == len(data)
    # the client leaves: the host gets GATEWAY_END client-gone at a frame boundary
    client[1].close()
    frames = await asyncio.wait_for(_read_frames(host[0]), 10)
    assert frames[-1][0] == FrameType.GATEWAY_END
    assert decode_json(frames[-1][1])["reason"] == "client-gone"
    reason, stats = await asyncio.wait_for(relay, 10)
    assert reason == "client-gone"
    assert stats.client_to_host == len(data)
    assert stats.pauses >= 1          # back-pressure happened, and was counted
    host[1].close()
    srv.close()


async def test_control_frame_on_stitched_leg_ends_session(tmp_path):
    (client, host), (gc, gh), srv = await _legs(tmp_path)
    relay = asyncio.ensure_future(stitch("t2", gc, gh))
    ok = encode(FrameType.RELAY, b"x" * 1000)
    client[1].write(ok)
    assert await host[0].readexactly(len(ok)) == ok
    # half a frame, then (in a later write) the rest plus a CONTROL frame in the same chunk
    frame = encode(FrameType.RELAY, os.urandom(5000))
    client[1].write(frame[:2000])
    await client[1].drain()
    await asyncio.sleep(0.2)
    client[1].write(frame[2000:] + encode(FrameType.CONTROL, b"{}"))
    reason, _ = await asyncio.wait_for(relay, 10)
    assert reason == "client-protocol-error"
    rest = await asyncio.wait_for(host[0].read(), 10)
    # the bad chunk was not forwarded and the host's leg is mid-frame: the gateway must not
    # splice a GATEWAY_END into the frame; the host just sees its leg close
    assert rest == frame[:2000]
    for _, w in (client, host):
        w.close()
    srv.close()


async def test_stop_tells_both_legs(tmp_path):
    (client, host), (gc, gh), srv = await _legs(tmp_path)
    stop = asyncio.Event()
    relay = asyncio.ensure_future(stitch("t3", gc, gh, stop))
    client[1].write(encode(FrameType.RELAY, b"a" * 10))
    assert (await host[0].readexactly(16))[6:] == b"a" * 10
    stop.set()
    reason, _ = await asyncio.wait_for(relay, 10)
    assert reason == "gateway-shutdown"
    for r, w in (client, host):
        frames = await asyncio.wait_for(_read_frames(r), 10)
        assert frames and frames[-1][0] == FrameType.GATEWAY_END
        assert decode_json(frames[-1][1])["reason"] == "gateway-shutdown"
        w.close()
    srv.close()
