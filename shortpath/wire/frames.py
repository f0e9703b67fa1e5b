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
0x16  CLOSE         session    UTF-8 JSON ``{"reason": str, "detail": str,
                               "sent": {channel: count}}`` (``sent``: rev 2.1)
0x17  CDATA         session    u8 channel | u64 seq | message bytes (rev 2)
0x18  CACK          session    u8 channel | u64 consumed | u64 received |
                               u32 oldest_unacked_ms (rev 2)
0x19  EVENTS        session    u64 newest event seq | u8 count | count x
                               (u16 length | bytes), oldest first (rev 2)
====  ============  =========  ==============================================

``sent_us`` is the sender's clock in microseconds; only the sender interprets
it (PONG echoes it back), except in the lab where namespaces share one clock.

Reliable channels (session revision 2)
--------------------------------------
A session has several independent ordered reliable channels (shortpath/session/
channels.py: 0 ``default``, 1 ``input``, 2 ``graphics``, 3 ``bulk``), each with
its own sequence space, so a message late on one never holds another back.
CDATA carries the channel; CACK acknowledges one channel with two cumulative
marks: ``consumed`` (the application took every message below it; it releases
the sender's window, as ACK did) and ``received`` (the session holds every
message below it, taken or not), plus the acknowledging side's own oldest
unacknowledged message age in milliseconds (0: none; capped at 2^32-1), which
feeds the peer's stall detection (shortpath/paths/stall.py). On a UDP path each
channel travels on an SCTP stream of its own (transport/udp/path.py); on the
relay they are multiplexed by this channel byte. EVENTS is the redundant event
lane (shortpath/session/redundancy.py): best effort, each frame repeats the
last few events, the receiver delivers each event once, in order.

Version history
---------------
1  first version: DATA/ACK, one reliable channel.
2  session revision 2 (SESSION_REVISION): CDATA, CACK and EVENTS. A revision-2
   peer sends only CDATA/CACK for reliable messages (channel 0 included) and
   still reads revision-1 DATA/ACK as channel 0 (``received`` = ``consumed``).
   A revision-1 peer does not know types 0x17-0x19 and ends the session with
   ``protocol-error`` (unknown frame type) on the first one, so client and
   host must both be revision 2; they ship in one package. The gateway only
   relays ciphertext and needs no change. The header ``version`` byte stays 1:
   no existing layout changed, and bumping it would make revision-1 gateways
   refuse the control plane for nothing.
2.1  CLOSE gains ``sent``: per reliable channel (decimal string key) the number
   of messages the closer sent, i.e. its next sequence number; channels with
   none are left out. The closer sends CLOSE only once the peer's CACKs say
   its session *received* all of them (bounded by ``Timing.close_timeout``),
   since on UDP CLOSE (stream 0, and the relay) could otherwise overtake a
   message still being retransmitted on another channel's SCTP stream. A
   receiver that lacks some ends anyway and reports how many
   (``SessionEnded.undelivered``); a malformed ``sent`` is a protocol error.
   Old peers ignore the extra key; an old peer's CLOSE without it is read as
   before (nothing to check). No layout or SESSION_REVISION change.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass

from ..errors import MalformedFrame, UnknownFrame

VERSION = 1
#: revision of the session plane (frame types 0x10-0x19), see the version history
SESSION_REVISION = 2
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
    CDATA = 0x17
    CACK = 0x18
    EVENTS = 0x19


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


_CDATA = struct.Struct("!BQ")
_CACK = struct.Struct("!BQQI")
_EVENTS = struct.Struct("!QB")
_U16 = struct.Struct("!H")
#: most events one EVENTS frame carries
MAX_EVENTS_PER_FRAME = 255


def encode_cdata(channel: int, seq: int, message: bytes) -> bytes:
    return encode(FrameType.CDATA, _CDATA.pack(channel, seq) + message)


def decode_cdata(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < _CDATA.size:
        raise MalformedFrame("CDATA frame shorter than its channel and sequence number")
    channel, seq = _CDATA.unpack_from(payload)
    return channel, seq, bytes(payload[_CDATA.size:])


def encode_cack(channel: int, consumed: int, received: int, oldest_unacked_ms: int = 0) -> bytes:
    return encode(FrameType.CACK, _CACK.pack(channel, consumed, received,
                                             max(0, min(0xFFFFFFFF, int(oldest_unacked_ms)))))


def decode_cack(payload: bytes) -> tuple[int, int, int, int]:
    """(channel, consumed, received, oldest_unacked_ms); ``received`` >= ``consumed``."""
    if len(payload) != _CACK.size:
        raise MalformedFrame(f"CACK frame must carry exactly {_CACK.size} bytes")
    channel, consumed, received, age = _CACK.unpack(payload)
    if received < consumed:
        raise MalformedFrame("CACK says fewer messages received than consumed")
    return channel, consumed, received, age


def encode_events(newest: int, events: list[bytes]) -> bytes:
    """``events`` are the consecutive events ``newest - len(events) + 1 .. newest``."""
    if not 1 <= len(events) <= MAX_EVENTS_PER_FRAME or newest < len(events) - 1:
        raise ValueError("an EVENTS frame carries 1-255 consecutive events ending at newest")
    parts = [_EVENTS.pack(newest, len(events))]
    for e in events:
        parts.append(_U16.pack(len(e)))
        parts.append(e)
    return encode(FrameType.EVENTS, b"".join(parts))


def decode_events(payload: bytes) -> tuple[int, list[bytes]]:
    """(newest seq, events oldest first); the first event's seq is newest - count + 1."""
    if len(payload) < _EVENTS.size:
        raise MalformedFrame("EVENTS frame shorter than its header")
    newest, count = _EVENTS.unpack_from(payload)
    if count == 0 or newest < count - 1:
        raise MalformedFrame("EVENTS frame with no events or a sequence below zero")
    pos, out = _EVENTS.size, []
    for _ in range(count):
        if pos + 2 > len(payload):
            raise MalformedFrame("EVENTS frame truncated")
        (n,) = _U16.unpack_from(payload, pos)
        pos += 2
        if pos + n > len(payload):
            raise MalformedFrame("EVENTS frame truncated")
        out.append(bytes(payload[pos:pos + n]))
        pos += n
    if pos != len(payload):
        raise MalformedFrame("EVENTS frame has trailing bytes")
    return newest, out
