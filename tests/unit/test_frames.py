"""Frame codec and control messages: round trips, truncation, oversize, garbage."""

import json
import struct

import pytest
from hypothesis import given, settings, strategies as st

from shortpath.errors import FrameTooLarge, MalformedFrame, RemoteError, UnknownFrame
from shortpath.wire import control
from shortpath.wire import frames as fr
from shortpath.wire.buffer import FrameBuffer
from shortpath.wire.frames import FrameType

MAX = 64 * 1024


def feed_all(data: bytes, chunks: list[int], max_payload=MAX) -> list:
    buf = FrameBuffer(max_payload)
    out, pos = [], 0
    for n in chunks + [len(data)]:
        buf.feed(data[pos:pos + n])
        pos += n
        while (f := buf.next_frame()) is not None:
            out.append(f)
    return out


@given(st.sampled_from(list(FrameType)), st.binary(max_size=3000),
       st.lists(st.integers(min_value=0, max_value=700), max_size=12))
def test_any_frame_round_trips_through_arbitrary_chunking(ftype, payload, chunks):
    data = fr.encode(ftype, payload) * 3
    frames = feed_all(data, chunks)
    assert [(f.type, f.payload) for f in frames] == [(ftype, payload)] * 3


@given(st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=2000))
def test_data_round_trip(seq, msg):
    f = fr.decode_one(fr.encode_data(seq, msg), MAX)
    assert f.type == FrameType.DATA and fr.decode_data(f.payload) == (seq, msg)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_ack_round_trip(n):
    assert fr.decode_ack(fr.decode_one(fr.encode_ack(n), MAX).payload) == n


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=2**64 - 1),
       st.binary(max_size=1200))
def test_dgram_and_ping_round_trip(ident, ts, data):
    assert fr.decode_dgram(fr.decode_one(fr.encode_dgram(ident, ts, data), MAX).payload) == (ident, ts, data)
    for t in (FrameType.PING, FrameType.PONG):
        assert fr.decode_ping(fr.decode_one(fr.encode_ping(t, ident, ts), MAX).payload) == (ident, ts)


def _sample(cls):
    """A valid instance of each control message, with every field filled."""
    import dataclasses, typing
    hints = typing.get_type_hints(cls)
    values = {str: "x-1", int: 7, float: 2.5, bool: True, list: [{"name": "p", "kind": "pooled"}],
              dict: {"a": 1}}
    kwargs = {}
    for f in dataclasses.fields(cls):
        h = hints[f.name]
        kwargs[f.name] = values[typing.get_origin(h) or h]
    return cls(**kwargs)


@pytest.mark.parametrize("cls", list(control.all_message_types().values()), ids=lambda c: c.TYPE)
def test_every_control_message_round_trips(cls):
    msg = _sample(cls)
    frame = fr.decode_one(msg.encode(), MAX)
    assert frame.type == FrameType.CONTROL
    assert control.parse(frame.payload) == msg


@pytest.mark.parametrize("cls", [c for c in control.all_message_types().values()
                                 if __import__("dataclasses").fields(c)], ids=lambda c: c.TYPE)
def test_control_message_with_wrong_field_type_is_rejected(cls):
    d = _sample(cls).to_dict()
    first = __import__("dataclasses").fields(cls)[0].name
    d[first] = None
    with pytest.raises(MalformedFrame):
        control.from_dict(d)


def test_control_message_missing_field_and_unknown_type():
    with pytest.raises(MalformedFrame, match="missing field"):
        control.from_dict({"type": "launch"})
    with pytest.raises(UnknownFrame):
        control.from_dict({"type": "make-coffee"})
    with pytest.raises(MalformedFrame):
        control.parse(b"\xff\xfe")
    with pytest.raises(MalformedFrame):
        control.parse(b"[1,2]")
    with pytest.raises(MalformedFrame):
        control.from_dict({"type": "heartbeat", "seq": True, "sessions": 1})  # bool is not an int


def test_oversized_frame_is_refused_from_the_header_alone():
    buf = FrameBuffer(1024)
    buf.feed(struct.pack("!BBI", fr.VERSION, FrameType.RELAY, 2**31))
    with pytest.raises(FrameTooLarge):
        buf.next_frame()
    assert buf.buffered == fr.HEADER_SIZE   # refused on the header; no payload awaited
    with pytest.raises(FrameTooLarge):  # poisoned: a broken stream stays broken
        buf.next_frame()


def test_unknown_type_and_bad_version():
    with pytest.raises(UnknownFrame):
        feed_all(struct.pack("!BBI", fr.VERSION, 0x7F, 0), [])
    with pytest.raises(MalformedFrame):
        feed_all(struct.pack("!BBI", 9, FrameType.DATA, 0), [])


@given(st.binary(max_size=40))
def test_garbage_either_parses_or_raises_a_remote_error(data):
    buf = FrameBuffer(256)
    buf.feed(data)
    try:
        while buf.next_frame() is not None:
            pass
    except RemoteError:
        pass


@pytest.mark.parametrize("cut", [0, 1, 5, 6, 9])
def test_truncated_frames(cut):
    data = fr.encode_data(1, b"abcdef")
    buf = FrameBuffer(MAX)
    buf.feed(data[:cut])
    assert buf.next_frame() is None          # incomplete: needs more, not an error
    with pytest.raises(MalformedFrame):
        fr.decode_one(data[:cut], MAX)       # a datagram cannot be "incomplete"


def test_short_typed_payloads_are_malformed():
    with pytest.raises(MalformedFrame):
        fr.decode_data(b"1234567")
    with pytest.raises(MalformedFrame):
        fr.decode_ack(b"123")
    with pytest.raises(MalformedFrame):
        fr.decode_dgram(b"123")
    with pytest.raises(MalformedFrame):
        fr.decode_json(json.dumps([1]).encode())
