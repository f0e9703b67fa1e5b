import pytest
from hypothesis import given, strategies as st

from shortpath.errors import FrameTooLarge, RemoteError
from shortpath.wire import frames as fr
from shortpath.wire.frames import FrameType
from shortpath.wire.scanner import RelayScanner


@given(st.lists(st.binary(max_size=300), max_size=10), st.lists(st.integers(0, 50), max_size=30))
def test_scanner_tracks_boundaries_under_any_chunking(payloads, cuts):
    data = b"".join(fr.encode(FrameType.RELAY, p) for p in payloads)
    sc = RelayScanner(1024)
    pos = 0
    for c in cuts:
        sc.feed(data[pos:pos + c])
        pos += c
        pos = min(pos, len(data))
    sc.feed(data[pos:])
    assert sc.frames == len(payloads) and sc.at_boundary


def test_scanner_mid_frame_and_errors():
    sc = RelayScanner(1024)
    frame = fr.encode(FrameType.RELAY, b"abc")
    sc.feed(frame[:4])
    assert not sc.at_boundary
    sc.feed(frame[4:7])
    assert not sc.at_boundary
    sc.feed(frame[7:])
    assert sc.at_boundary
    with pytest.raises(RemoteError):
        RelayScanner(1024).feed(fr.encode(FrameType.CONTROL, b"{}"))
    with pytest.raises(FrameTooLarge):
        RelayScanner(10).feed(fr.encode(FrameType.RELAY, b"x" * 11))
