"""Baseline server: plain TLS over TCP, echo or sink, with the same framing cost
as the relay's application messages (4-byte length prefix). Prints a JSON
ready line with its port. Used only by benchmarks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import struct
import sys
import tempfile

from shortpath.auth.certs import load_or_create


async def handle(reader, writer):
    try:
        while True:
            hdr = await reader.readexactly(5)
            kind, n = hdr[:1], struct.unpack("!I", hdr[1:])[0]
            if kind == b"E":
                data = await reader.readexactly(n)
                writer.write(hdr + data)
                await writer.drain()
            elif kind == b"S":           # sink n bytes of 64 KiB chunks, then answer
                got = 0
                while got < n:
                    chunk = await reader.read(262144)
                    if not chunk:
                        return
                    got += len(chunk)
                writer.write(b"K" + struct.pack("!I", got & 0xFFFFFFFF))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    d = tempfile.mkdtemp(prefix="tls-echo-")
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    load_or_create(cert, key, "bench", ["127.0.0.1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    srv = await asyncio.start_server(handle, host, 0, ssl=ctx)
    print(json.dumps({"port": srv.sockets[0].getsockname()[1], "cert": cert}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    srv.close()


if __name__ == "__main__":
    asyncio.run(main())
