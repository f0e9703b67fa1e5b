"""Frame-boundary scanner for the gateway's relay (pure).

The gateway forwards RELAY frames unchanged, so it does not need their
payloads as objects: it only has to check each header (version, type, size)
and know where frames end, so that it can add a GATEWAY_END frame at a
boundary. ``RelayScanner.feed(chunk)`` walks the headers inside an arbitrary
chunk of the byte stream without copying payloads; the caller forwards the
chunk as it is. A header split across chunks is handled (up to 5 bytes are
held until the rest arrives).
"""

from __future__ import annotations

from ..errors import RemoteError
from .frames import HEADER_SIZE, FrameType, parse_header


class RelayScanner:
    def __init__(self, max_payload: int, allowed: frozenset[int] = frozenset({FrameType.RELAY})) -> None:
        self.max_payload = max_payload
        self.allowed = allowed
        self._remaining = 0          # payload bytes of the current frame still to come
        self._partial = b""          # bytes of a header split across chunks
        self.frames = 0

    @property
    def at_boundary(self) -> bool:
        return self._remaining == 0 and not self._partial

    def feed(self, chunk: bytes | memoryview) -> None:
        """Validate the headers in ``chunk``. Raises RemoteError on a bad frame."""
        pos, n = 0, len(chunk)
        while pos < n:
            if self._remaining:
                step = min(self._remaining, n - pos)
                self._remaining -= step
                pos += step
                continue
            need = HEADER_SIZE - len(self._partial)
            if n - pos < need:
                self._partial += bytes(chunk[pos:n])
                return
            header = self._partial + bytes(chunk[pos:pos + need])
            self._partial = b""
            pos += need
            ftype, length = parse_header(header, self.max_payload)
            if ftype not in self.allowed:
                raise RemoteError(f"{ftype.name} frame on a stitched leg")
            self._remaining = length
            self.frames += 1
