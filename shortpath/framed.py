"""Asyncio edge for the frame codec: read/write whole frames on a stream."""

from __future__ import annotations

import asyncio
import contextlib

from .errors import MalformedFrame, RemoteError
from .wire import control
from .wire.frames import HEADER_SIZE, Frame, FrameType, parse_header


class FramedConn:
    """A StreamReader/StreamWriter pair speaking frames.

    ``read_frame`` enforces ``max_payload`` before reading the payload.
    ``write`` never blocks; ``drain`` applies back-pressure.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_payload: int, high_water: int = 256 * 1024) -> None:
        self.reader = reader
        self.writer = writer
        self.max_payload = max_payload
        with contextlib.suppress(Exception):
            writer.transport.set_write_buffer_limits(high=high_water)
        self.high_water = high_water
        self.peer = writer.get_extra_info("peername")
        self.bytes_in = 0
        self.bytes_out = 0

    async def read_frame(self) -> Frame | None:
        """Next frame, or None on a clean EOF at a frame boundary."""
        raw = await self.read_raw()
        return None if raw is None else raw[1]

    async def read_raw(self) -> tuple[bytes, Frame] | None:
        """Like read_frame but also returns the header bytes (for zero-copy forwarding)."""
        try:
            header = await self.reader.readexactly(HEADER_SIZE)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise MalformedFrame("connection closed inside a frame header") from None
            return None
        ftype, length = parse_header(header, self.max_payload)
        try:
            payload = await self.reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise MalformedFrame("connection closed inside a frame payload") from None
        self.bytes_in += HEADER_SIZE + length
        return header, Frame(ftype, payload)

    async def read_control(self) -> control.Message | None:
        frame = await self.read_frame()
        if frame is None:
            return None
        if frame.type != FrameType.CONTROL:
            raise RemoteError(f"expected a control frame, got {frame.type.name}")
        return control.parse(frame.payload)

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.writer.write(data)

    def send(self, msg: control.Message) -> None:
        self.write(msg.encode())

    @property
    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        await self.writer.drain()

    def closing(self) -> bool:
        return self.writer.is_closing()

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()
