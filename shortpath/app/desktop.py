"""Example application: echo plus a synthetic "desktop".

The client's first reliable message picks the mode:

* ``b"echo"`` -- the host echoes every reliable message (on the channel it came
  on), every datagram and every event (``send_event``, redundancy 2).
* ``b"sink <bytes>"`` -- the host reads messages until it has ``bytes``
  bytes, then answers ``b"sunk <n>"`` (bulk throughput measurements).
* ``b"bulk"`` -- the host counts the bytes of every message and answers each
  ``b"?"`` with ``b"got <n>"`` (``shortpath connect --workload bulk``).
* ``b"desktop <seconds> <fps>"`` -- the host streams frame-sized updates
  (20-60 KB, like screen regions) at ``fps`` for ``seconds`` on the
  ``graphics`` channel, while echoing the client's small input events on the
  ``input`` channel (reliable messages, whatever channel they came on; it goes
  first when the path is busy and never waits behind a frame) and 64-byte
  datagrams and events, so their latency can be measured. It ends with a
  ``b"done <frames>"`` message on ``graphics``, after the last frame.

More modes can be added with :func:`make_host_handler` (benchmarks/bench_app.py adds
``b"bench"`` for the lab benchmark and runs it with ``shortpath host --app``).

Frames carry a header ``b"F" + u32 index + u64 sent_us`` and a body whose
bytes are derived from the index, so the receiver can check integrity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import struct
import time
from typing import Awaitable, Callable

from ..errors import SessionClosed
from ..session.session import Session

#: An extra mode: called with the session and the task echoing datagrams (cancel it to
#: take the datagrams over); returns when the mode is done or the session closed.
Mode = Callable[[Session, asyncio.Future], Awaitable[None]]

_FRAME_HDR = struct.Struct("!cIQ")


def frame_payload(index: int, size: int) -> bytes:
    seed = hashlib.sha256(index.to_bytes(4, "big")).digest()
    body = (seed * (size // len(seed) + 1))[: max(0, size - _FRAME_HDR.size)]
    return _FRAME_HDR.pack(b"F", index, time.time_ns() // 1000) + body


def check_frame(data: bytes) -> tuple[int, int]:
    """Return (index, sent_us); raise ValueError if the body is corrupt."""
    kind, index, sent_us = _FRAME_HDR.unpack_from(data)
    if kind != b"F":
        raise ValueError("not a frame")
    seed = hashlib.sha256(index.to_bytes(4, "big")).digest()
    body = data[_FRAME_HDR.size:]
    if body != (seed * (len(body) // len(seed) + 1))[: len(body)]:
        raise ValueError(f"frame {index} body corrupt")
    return index, sent_us


async def _echo_datagrams(session: Session) -> None:
    events = asyncio.ensure_future(_echo_events(session))
    try:
        with contextlib.suppress(SessionClosed):
            while True:
                session.send_datagram(await session.recv_datagram())
    finally:
        events.cancel()


async def _echo_events(session: Session) -> None:
    with contextlib.suppress(SessionClosed):
        while True:
            session.send_event(await session.recv_event(), redundancy=2)


def make_host_handler(extra_modes: dict[bytes, Mode] | None = None):
    """The host application, with ``extra_modes`` (first message -> Mode) besides the
    built-in ones."""
    modes = dict(extra_modes or {})

    async def handler(session: Session) -> None:
        await _serve(session, modes)
    return handler


async def host_handler(session: Session) -> None:
    """Serve one session until the client closes it."""
    await _serve(session, {})


async def _serve(session: Session, modes: dict[bytes, Mode]) -> None:
    dgrams = asyncio.ensure_future(_echo_datagrams(session))
    try:
        first = await session.recv()
        if first in modes:
            await modes[first](session, dgrams)
        elif first == b"bulk":
            got = 0
            while True:
                m = await session.recv()
                if m == b"?":
                    await session.send(b"got %d" % got)
                else:
                    got += len(m)
        elif first.startswith(b"sink"):
            want, got = int(first.split()[1]), 0
            while got < want:
                got += len(await session.recv())
            await session.send(b"sunk %d" % got)
            await session.recv()   # wait for the client to close
        elif first.startswith(b"desktop"):
            parts = first.split()
            seconds = float(parts[1]) if len(parts) > 1 else 2.0
            fps = float(parts[2]) if len(parts) > 2 else 30.0
            streamer = asyncio.ensure_future(_stream_frames(session, seconds, fps))
            try:
                while True:
                    await session.send(await session.recv(), channel="input")   # echo input events
            finally:
                streamer.cancel()
        else:
            while True:
                channel, msg = await session.recv_from()
                await session.send(msg, channel=channel)
    except SessionClosed:
        pass
    finally:
        dgrams.cancel()


async def _stream_frames(session: Session, seconds: float, fps: float) -> None:
    rng = random.Random(7)
    n = int(seconds * fps)
    start = time.monotonic()
    for i in range(n):
        await session.send(frame_payload(i, rng.randint(20_000, 60_000)), channel="graphics")
        delay = start + (i + 1) / fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await session.send(b"done %d" % n, channel="graphics")


_NUM = struct.Struct("!I")


def numbered(i: int, size: int = 72) -> bytes:
    """A message carrying its index and a checksum (loss/dup/reorder/corruption checks)."""
    body = _NUM.pack(i) + bytes(max(0, size - 12))
    return body + hashlib.sha256(body).digest()[:8]


def check_numbered(msg: bytes) -> int:
    """Return the index of a :func:`numbered` message; ValueError if it is corrupt."""
    body, tag = msg[:-8], msg[-8:]
    if len(msg) < 12 or hashlib.sha256(body).digest()[:8] != tag:
        raise ValueError("corrupt numbered message")
    return _NUM.unpack_from(body)[0]
