"""Frame codec shared by every shortpath connection.

Flow
----
Every byte stream shortpath speaks (peer <-> gateway TLS, and the end-to-end
session channel between client and host) is a sequence of frames. On UDP paths
each SCTP message carries exactly one frame, so the same parser serves both.

::

    peer --TLS--> gateway : CONTROL frames (hello, register, launch, heartbeat ...)
                            then, on a stitched leg, RELAY frames (opaque ciphertext
                            of the inner TLS) and at most one GATEWAY_END.
    client <--inner TLS--> host : DATA / ACK / DGRAM / PING / PONG / SIGNAL / CLOSE

Header (6 bytes, network byte order)
------------------------------------
::

     0         1         2                                   6
    +---------+---------+-----------------------------------+----------------+
    | version |  type   |          payload length (u32)     |   payload ...  |
    +---------+---------+-----------------------------------+----------------+

* ``version`` is :data:`VERSION`. A frame with another version is a
  :class:`~shortpath.errors.MalformedFrame` (we do not guess at layouts).
* ``length`` counts payload bytes only. Each reader enforces its own hard
  maximum *before* buffering the payload, so a 4 GiB length costs nothing.

Frame table
-----------
====  ============  =========  ==============================================
type  name          plane      payload
====  ============  =========  ==============================================
0x01  CONTROL       control    UTF-8 JSON object with a ``type`` key (control.py)
0x02  RELAY         relay      opaque bytes, forwarded unchanged by the gateway
0x03  GATEWAY_END   relay      UTF-8 JSON ``{"reason": str, "detail": str}``
0x10  DATA          session    u64 seq | message bytes   (reliable, ordered)
0x11  ACK           session    u64 next expected seq (cumulative)
0x12  DGRAM         session    u32 id | u64 sent_us | bytes (best effort)
0x13  PING          session    u32 id | u64 sent_us
0x14  PONG          session    u32 id | u64 echoed sent_us
0x15  SIGNAL        session    UTF-8 JSON object (path signaling, switch)
0x16  CLOSE         session    UTF-8 JSON ``{"reason": str, "detail": str}``
====  ============  =========  ==============================================

``sent_us`` is the sender's clock in microseconds; only the sender interprets
it (PONG echoes it back), except in the lab where namespaces share one clock.

Version history
---------------
1  first version (this file).
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass

from ..errors import MalformedFrame, UnknownFrame

VERSION = 1
HEADER = struct.Struct("!BBI")
HEADER_SIZE = HEADER.size  # 6

#: Hard maximum payload on the control plane (peer <-> gateway control messages).
MAX_CONTROL_PAYLOAD = 64 * 1024
#: Hard maximum payload of a session frame (one application message + 8 bytes).
MAX_SESSION_PAYLOAD = 256 * 1024 + 16
#: Hard maximum of a RELAY frame as accepted by the gateway.
MAX_RELAY_PAYLOAD = 64 * 1024


class FrameType(enum.IntEnum):
    CONTROL = 0x01
    RELAY = 0x02
    GATEWAY_END = 0x03
    DATA = 0x10
    ACK = 0x11
    DGRAM = 0x12
    PING = 0x13
    PONG = 0x14
    SIGNAL = 0x15
    CLOSE = 0x16


_KNOWN = frozenset(int(t) for t in FrameType)

_U64 = struct.Struct("!Q")
_DGRAM = struct.Struct("!IQ")
_PING = struct.Struct("!IQ")


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    payload: bytes


def encode(ftype: FrameType, payload: bytes = b"") -> bytes:
    """Header + payload as one bytes object."""
    return HEADER.pack(VERSION, ftype, len(payload)) + payload


def parse_header(header: bytes, max_payload: int) -> tuple[FrameType, int]:
    """Validate a 6-byte header; return (type, payload length).

    Raises MalformedFrame (bad version), UnknownFrame, or FrameTooLarge."""
    from ..errors import FrameTooLarge

    version, ftype, length = HEADER.unpack(header)
    if version != VERSION:
        raise MalformedFrame(f"unsupported frame version {version}")
    if ftype not in _KNOWN:
        raise UnknownFrame(f"unknown frame type 0x{ftype:02x}")
    if length > max_payload:
        raise FrameTooLarge(f"frame of {length} bytes exceeds limit {max_payload}")
    return FrameType(ftype), length


def decode_one(data: bytes, max_payload: int) -> Frame:
    """Decode exactly one whole frame (e.g. one SCTP message)."""
    if len(data) < HEADER_SIZE:
        raise MalformedFrame(f"truncated frame header ({len(data)} bytes)")
    ftype, length = parse_header(data[:HEADER_SIZE], max_payload)
    if len(data) != HEADER_SIZE + length:
        raise MalformedFrame(f"frame length {length} does not match {len(data) - HEADER_SIZE} bytes")
    return Frame(ftype, bytes(data[HEADER_SIZE:]))


# ---- typed payload helpers (session plane) ----------------------------------

def encode_json(ftype: FrameType, obj: dict) -> bytes:
    return encode(ftype, json.dumps(obj, separators=(",", ":")).encode())


def decode_json(payload: bytes) -> dict:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedFrame(f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedFrame("JSON payload must be an object")
    return obj


def encode_data(seq: int, message: bytes) -> bytes:
    return encode(FrameType.DATA, _U64.pack(seq) + message)


def decode_data(payload: bytes) -> tuple[int, bytes]:
    if len(payload) < 8:
        raise MalformedFrame("DATA frame shorter than its sequence number")
    return _U64.unpack_from(payload)[0], bytes(payload[8:])


def encode_ack(next_expected: int) -> bytes:
    return encode(FrameType.ACK, _U64.pack(next_expected))


def decode_ack(payload: bytes) -> int:
    if len(payload) != 8:
        raise MalformedFrame("ACK frame must carry exactly 8 bytes")
    return _U64.unpack(payload)[0]


def encode_dgram(ident: int, sent_us: int, data: bytes) -> bytes:
    return encode(FrameType.DGRAM, _DGRAM.pack(ident & 0xFFFFFFFF, sent_us) + data)


def decode_dgram(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < _DGRAM.size:
        raise MalformedFrame("DGRAM frame shorter than its header")
    ident, sent_us = _DGRAM.unpack_from(payload)
    return ident, sent_us, bytes(payload[_DGRAM.size:])


def encode_ping(ftype: FrameType, ident: int, sent_us: int) -> bytes:
    return encode(ftype, _PING.pack(ident & 0xFFFFFFFF, sent_us))


def decode_ping(payload: bytes) -> tuple[int, int]:
    if len(payload) != _PING.size:
        raise MalformedFrame("PING/PONG frame must carry exactly 12 bytes")
    return _PING.unpack(payload)
