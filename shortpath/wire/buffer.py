"""Incremental frame parser: ``feed(bytes)`` then ``next_frame()`` until None.

The parser validates each header as soon as its 6 bytes are in, so an
oversized or unknown frame is refused before its payload is buffered. After an
error the buffer is poisoned: the connection must be closed (frames after a
broken one cannot be trusted to start at a frame boundary).
"""

from __future__ import annotations

from ..errors import LocalError
from .frames import HEADER_SIZE, Frame, FrameType, parse_header

#: Returned by :meth:`FrameBuffer.next_frame` when more bytes are needed.
NEED_DATA = None


class FrameBuffer:
    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._pos = 0
        self._head: tuple[FrameType, int] | None = None
        self._error: Exception | None = None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise LocalError("feed() after a protocol error; close the connection")
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> Frame | None:
        if self._error is not None:
            raise self._error
        if self._head is None:
            if len(self._buf) - self._pos < HEADER_SIZE:
                self._compact()
                return NEED_DATA
            try:
                self._head = parse_header(bytes(self._buf[self._pos:self._pos + HEADER_SIZE]), self.max_payload)
            except Exception as exc:
                self._error = exc
                raise
            self._pos += HEADER_SIZE
        ftype, length = self._head
        if len(self._buf) - self._pos < length:
            self._compact()
            return NEED_DATA
        payload = bytes(self._buf[self._pos:self._pos + length])
        self._pos += length
        self._head = None
        return Frame(ftype, payload)

    def _compact(self) -> None:
        # Drop consumed bytes only occasionally, so parsing many small frames
        # from one chunk is not quadratic.
        if self._pos and (self._pos > 65536 or self._pos == len(self._buf)):
            del self._buf[:self._pos]
            self._pos = 0
