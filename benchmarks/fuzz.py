"""Long fuzz run: the pure codecs and a live gateway, fed mutated and random input.

``python -m benchmarks run --suite quick|full --only fuzz`` (or ``python -m benchmarks.fuzz``).

Inputs come from valid seeds (every frame type, every control message, real
tokens, relay streams) through mutators -- bit flips, byte overwrites,
truncations, extensions, length-field lies, splices of two seeds, duplicated or
deleted spans, JSON-level value swaps -- plus plain random bytes. Targets:

* ``frame_buffer``  FrameBuffer fed the input in random-sized chunks; after an
  error the buffer must stay poisoned.
* ``decode_one``    one whole frame (a datagram), then the typed payload decoder
                    for its type.
* ``control``       control.parse on mutated payloads and mutated JSON objects.
* ``token``         TokenVerifier.verify on mutated tokens, and on tokens whose
                    claims are mutated *and re-signed* (so the claim parser
                    itself is reached, not only the signature check).
* ``scanner``       RelayScanner over mutated relay streams in random chunks.
* ``gateway``       a live LocalStack gateway: each input is a TLS connection
                    that sends mutated frames (raw, or after a valid hello /
                    registration), while a real session keeps echoing
                    numbered messages through the same gateway.

Every outcome is counted by class: ``ok`` / ``need-data`` or the name of the
typed ShortpathError raised. Anything else (an untyped exception, a broken
invariant, a gateway ``BUG`` log line, a dead session) is a *crash* and is
recorded with the input that caused it. Results: ``benchmarks/results/fuzz_<suite>.json``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import json
import logging
import os
import random
import struct
import sys
import tempfile
import time
import typing

from shortpath.auth.tokens import TokenSigner
from shortpath.errors import ShortpathError
from shortpath.wire import control
from shortpath.wire import frames as fr
from shortpath.wire.buffer import FrameBuffer
from shortpath.wire.frames import FrameType
from shortpath.wire.scanner import RelayScanner

NOW = 1_700_000_000.0
AUD = "fuzz-gw"

# ---- seeds -----------------------------------------------------------------------


def _sample_message(cls, rng: random.Random) -> control.Message:
    hints = typing.get_type_hints(cls)
    values = {str: lambda: rng.choice(["x", "desktop", "host-1", "a" * 40, ""]),
              int: lambda: rng.randrange(0, 1 << 31), float: lambda: rng.random() * 10,
              bool: lambda: rng.random() < 0.5, list: lambda: [{"name": "desktop", "kind": "pooled"}],
              dict: lambda: {"shortpath": {"enabled": True}}}
    kw = {f.name: values[typing.get_origin(hints[f.name]) or hints[f.name]]() for f in dataclasses.fields(cls)}
    return cls(**kw)


def frame_seeds(rng: random.Random) -> list[bytes]:
    out = [fr.encode_data(rng.randrange(1 << 64), os.urandom(rng.randrange(0, 200))),
           fr.encode_ack(rng.randrange(1 << 64)),
           fr.encode_dgram(rng.randrange(1 << 32), rng.randrange(1 << 64), os.urandom(40)),
           fr.encode_ping(FrameType.PING, 1, 2), fr.encode_ping(FrameType.PONG, 3, 4),
           fr.encode_json(FrameType.SIGNAL, {"type": "hello", "ticket": "t"}),
           fr.encode_json(FrameType.CLOSE, {"reason": "bye", "detail": ""}),
           fr.encode_json(FrameType.GATEWAY_END, {"reason": "host-gone", "detail": "x"}),
           fr.encode(FrameType.RELAY, os.urandom(rng.randrange(0, 300)))]
    out += [_sample_message(cls, rng).encode() for cls in control.all_message_types().values()]
    return out


def relay_stream(rng: random.Random) -> bytes:
    return b"".join(fr.encode(FrameType.RELAY, os.urandom(rng.randrange(0, 400)))
                    for _ in range(rng.randrange(1, 6)))


# ---- mutators --------------------------------------------------------------------

INTERESTING_U32 = [0, 1, 5, 6, 0x7F, 0xFF, 0x100, 0xFFFF, 0x10000, 0x10001, 64 * 1024, 64 * 1024 + 1,
                   256 * 1024 + 16, 256 * 1024 + 17, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def _bitflip(rng, d):
    if not d:
        return d
    b = bytearray(d)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _byteset(rng, d):
    if not d:
        return d
    b = bytearray(d)
    for _ in range(rng.randrange(1, 4)):
        b[rng.randrange(len(b))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    return bytes(b)


def _truncate(rng, d):
    return d[:rng.randrange(0, len(d) + 1)]


def _extend(rng, d):
    return d + os.urandom(rng.randrange(1, 64))


def _length_lie(rng, d):
    """Rewrite the u32 length of the first (or a random later) frame header."""
    if len(d) < fr.HEADER_SIZE:
        return d
    off = 0
    if rng.random() < 0.3:
        off = rng.randrange(0, len(d) - fr.HEADER_SIZE + 1)
    n = rng.choice(INTERESTING_U32 + [max(0, len(d) - fr.HEADER_SIZE + rng.randrange(-3, 4))])
    return d[:off + 2] + struct.pack("!I", n) + d[off + 6:]


def _header_field(rng, d):
    if len(d) < 2:
        return d
    i = rng.randrange(2)
    v = rng.choice([0, 1, 2, 3, 0x10, 0x16, 0x17, 0x7F, 0xFF]) if i else rng.choice([0, 2, 255])
    return d[:i] + bytes([v]) + d[i + 1:]


def _delete_span(rng, d):
    if len(d) < 2:
        return d
    a = rng.randrange(len(d))
    return d[:a] + d[a + rng.randrange(1, min(32, len(d) - a) + 1):]


def _dup_span(rng, d):
    if not d:
        return d
    a = rng.randrange(len(d))
    b = min(len(d), a + rng.randrange(1, 64))
    return d[:b] + d[a:b] + d[b:]


MUTATORS = [_bitflip, _byteset, _truncate, _extend, _length_lie, _header_field, _delete_span, _dup_span]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> tuple[str, bytes]:
    """One input from a seed: a stack of 1-3 mutations, a splice, or random bytes."""
    r = rng.random()
    if r < 0.08:
        return "random", os.urandom(rng.randrange(0, 200))
    if r < 0.2:
        other = rng.choice(pool)
        return "splice", data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]
    if r < 0.28:
        return "concat", data + rng.choice(pool)
    names = []
    for _ in range(rng.randrange(1, 4)):
        m = rng.choice(MUTATORS)
        names.append(m.__name__[1:])
        data = m(rng, data)
    return "+".join(names[:1]), data


WEIRD_VALUES = [None, True, False, 0, -1, 2**63, 2**200, 1.5, float("inf"), "", "x" * 5000, "\u0000",
                "\ud800", "é", [], [1, [2, [3]]], {}, {"a": {"b": None}}, "sha-256 zz", "../../etc"]


def mutate_json(rng: random.Random, obj: dict) -> dict:
    obj = dict(obj)
    r = rng.random()
    keys = list(obj)
    if r < 0.4 and keys:
        obj[rng.choice(keys)] = rng.choice(WEIRD_VALUES)
    elif r < 0.55 and keys:
        del obj[rng.choice(keys)]
    elif r < 0.7:
        obj[rng.choice(["extra", "type", "token", "conn_id", "__class__"])] = rng.choice(WEIRD_VALUES)
    elif r < 0.85:
        obj["type"] = rng.choice(list(control.all_message_types()) + ["", "REGISTER", "dial ", 7])
    else:
        depth = rng.choice([10, 100, 2000, 50000])
        obj[rng.choice(keys or ["x"])] = json.loads("[" * min(depth, 900) + "]" * min(depth, 900))
    return obj


def json_bytes(rng: random.Random, obj) -> bytes:
    try:
        text = json.dumps(obj, separators=(",", ":"))
    except (ValueError, RecursionError):
        text = "{}"
    if rng.random() < 0.1:   # nesting deeper than json.dumps would write
        text = '{"type":"launch","resource":' + "[" * rng.choice([1000, 100000]) + "]"
    return text.encode("utf-8", "surrogatepass")


# ---- outcome bookkeeping ---------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.inputs = collections.Counter()
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.mutators: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.crashes: list[dict] = []
        self.seconds: dict[str, float] = collections.Counter()

    def add(self, target: str, outcome: str, mutator: str = "") -> None:
        self.inputs[target] += 1
        self.outcomes[target][outcome] += 1
        if mutator:
            self.mutators[target][mutator] += 1

    def crash(self, target: str, what: str, data: bytes | str) -> None:
        self.add(target, "CRASH")
        if len(self.crashes) < 50:
            raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
            self.crashes.append({"target": target, "error": what[:500], "input_hex": raw[:300].hex(),
                                 "input_len": len(raw)})

    def judge(self, target: str, mutator: str, data: bytes | str, call) -> None:
        """Run ``call()`` on one input: a typed error or success is an outcome,
        anything else a crash."""
        try:
            call()
        except ShortpathError as exc:
            self.add(target, _typed(exc), mutator)
        except Exception as exc:  # noqa: BLE001
            self.crash(target, repr(exc), data)
        else:
            self.add(target, "ok", mutator)

    def to_dict(self) -> dict:
        return {"inputs": dict(self.inputs), "inputs_total": sum(self.inputs.values()),
                "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
                "mutators": {k: dict(v) for k, v in self.mutators.items()},
                "crashes": self.crashes, "crash_count": sum(v.get("CRASH", 0) for v in self.outcomes.values()),
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def _typed(exc: BaseException) -> str | None:
    return type(exc).__name__ if isinstance(exc, ShortpathError) else None


# ---- codec targets ---------------------------------------------------------------

TYPED_DECODERS = {FrameType.DATA: fr.decode_data, FrameType.ACK: fr.decode_ack, FrameType.DGRAM: fr.decode_dgram,
                  FrameType.PING: fr.decode_ping, FrameType.PONG: fr.decode_ping,
                  FrameType.SIGNAL: fr.decode_json, FrameType.CLOSE: fr.decode_json,
                  FrameType.GATEWAY_END: fr.decode_json, FrameType.CONTROL: control.parse}


def chunks(rng: random.Random, data: bytes):
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 2, 5, 6, 7, rng.randrange(1, 64), len(data)])
        yield data[pos:pos + n]
        pos += n


def fuzz_frame_buffer(t: Tally, rng: random.Random, data: bytes, mut: str) -> None:
    buf = FrameBuffer(rng.choice([256, 64 * 1024]))
    got = 0
    try:
        for piece in chunks(rng, data):
            buf.feed(piece)
            while buf.next_frame() is not None:
                got += 1
    except ShortpathError as exc:
        try:                      # invariant: a broken stream stays broken
            buf.next_frame()
            t.crash("frame_buffer", f"buffer not poisoned after {type(exc).__name__}", data)
            return
        except ShortpathError:
            pass
        t.add("frame_buffer", _typed(exc), mut)
        return
    except Exception as exc:  # noqa: BLE001
        t.crash("frame_buffer", repr(exc), data)
        return
    t.add("frame_buffer", "ok" if buf.buffered == 0 else "need-data", mut)


def fuzz_decode_one(t: Tally, rng: random.Random, data: bytes, mut: str) -> None:
    def call() -> None:
        f = fr.decode_one(data, 64 * 1024)
        TYPED_DECODERS.get(f.type, bytes)(f.payload)
    t.judge("decode_one", mut, data, call)


def fuzz_control(t: Tally, rng: random.Random, seeds: list[dict], pool: list[bytes]) -> None:
    base = rng.choice(seeds)
    if rng.random() < 0.5:
        payload = json_bytes(rng, mutate_json(rng, base))
        mut = "json"
    else:
        mut, payload = mutate(rng, json_bytes(rng, base), pool)
    t.judge("control", mut, payload,
            lambda: control.parse(payload).encode())   # whatever parses must also re-encode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fuzz_token(t: Tally, rng: random.Random, signer: TokenSigner, verifier) -> None:
    tok = signer.mint(rng.choice(["user", "host", "session"]), "alice", AUD, 60, NOW,
                      resources=["desktop"], pool="desktop")
    prefix, body, sig = tok.split(".")
    r = rng.random()
    if r < 0.35:
        mut, raw = mutate(rng, tok.encode(), [tok.encode()])
        cand = raw.decode("utf-8", "replace")
    elif r < 0.5:
        parts = [prefix, body, sig]
        i = rng.randrange(3)
        parts[i] = rng.choice(["", "sp2", "!!", "=" * 5, "a", body, sig, "\u00e9", "x" * 9000])
        mut, cand = "part", ".".join(parts)
        if rng.random() < 0.3:
            cand += "." + rng.choice(["", "x"])
    else:
        # Re-signed garbage claims: only the gateway's key could do this, but the
        # verifier must still fail typed, not crash.
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if rng.random() < 0.8:
            obj = mutate_json(rng, claims)
            raw = json_bytes(rng, obj)
        else:
            raw = rng.choice([b"[]", b"null", b"1", b'"x"', b"\xff\xfe", b"{" * 3,
                              b'{"typ":"user","sub":"a","aud":"fuzz-gw","iat":1,"exp":"nan","jti":"j"}',
                              b"[" * 100000])
        b = _b64(raw)
        cand = f"{prefix}.{b}.{_b64(signer._key.sign(f'{prefix}.{b}'.encode()))}"
        mut = "resigned"
    typ = rng.choice(["user", "host", "session"])
    t.judge("token", mut, cand, lambda: verifier.verify(cand, typ=typ, audience=AUD, now=NOW + 1))


def fuzz_scanner(t: Tally, rng: random.Random, data: bytes, mut: str) -> None:
    sc = RelayScanner(rng.choice([512, 64 * 1024]))
    try:
        for piece in chunks(rng, data):
            sc.feed(piece if rng.random() < 0.5 else memoryview(piece))
    except ShortpathError as exc:
        t.add("scanner", _typed(exc), mut)
        return
    except Exception as exc:  # noqa: BLE001
        t.crash("scanner", repr(exc), data)
        return
    # cross-check against the full decoder: same frame count when the stream is whole
    if sc.at_boundary:
        buf = FrameBuffer(sc.max_payload)
        buf.feed(data)
        n = 0
        try:
            while buf.next_frame() is not None:
                n += 1
        except ShortpathError:
            n = -1
        if n != sc.frames:
            t.crash("scanner", f"scanner counted {sc.frames} frames, decoder {n}", data)
            return
    t.add("scanner", "ok" if sc.at_boundary else "mid-frame", mut)


def run_codecs(n: int, seed: int = 1) -> Tally:
    """``n`` inputs spread over the five codec targets."""
    rng = random.Random(seed)
    t = Tally()
    signer = TokenSigner.generate()
    verifier = signer.verifier()
    ctrl_seeds = [_sample_message(c, rng).to_dict() for c in control.all_message_types().values()]
    per = max(1, n // 5)
    pool = frame_seeds(rng)
    for target in ("frame_buffer", "decode_one", "control", "token", "scanner"):
        t0 = time.monotonic()
        for i in range(per):
            if i % 500 == 0:
                pool = frame_seeds(rng) + [relay_stream(rng)]
            if target == "control":
                fuzz_control(t, rng, ctrl_seeds, pool)
            elif target == "token":
                fuzz_token(t, rng, signer, verifier)
            elif target == "scanner":
                base = relay_stream(rng)
                mut, data = mutate(rng, base, pool)
                fuzz_scanner(t, rng, data, mut)
            else:
                base = rng.choice(pool)
                if target == "frame_buffer" and rng.random() < 0.5:
                    base = base + rng.choice(pool) + rng.choice(pool)
                mut, data = mutate(rng, base, pool)
                (fuzz_frame_buffer if target == "frame_buffer" else fuzz_decode_one)(t, rng, data, mut)
        t.seconds[target] += time.monotonic() - t0
    return t


# ---- gateway target --------------------------------------------------------------


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class _BugLog(logging.Handler):
    """Collects ERROR records and 'BUG' lines from every shortpath logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR or "BUG" in msg or "[bug]" in msg:
            self.records.append(f"{record.name} {record.levelname} {msg}"[:400])


def gateway_inputs(rng: random.Random, stack) -> tuple[str, bytes]:
    """One hostile connection's bytes: a prefix that gets it somewhere, then mutated frames."""
    user = control.ClientHello(token=stack.user_token()).encode()
    host = control.RegisterHost(token=stack.host_token("fuzz-host"), host_id="fuzz-host",
                                fingerprint="sha-256 " + "ab" * 32).encode()
    seeds = frame_seeds(rng) + [control.Launch(resource="desktop").encode(), control.FeedRequest().encode(),
                                control.LegHello(conn_id=os.urandom(8).hex()).encode(),
                                control.Heartbeat(seq=1, sessions=0).encode()]
    r = rng.random()
    if r < 0.35:
        prefix, kind = b"", "first"
    elif r < 0.7:
        prefix, kind = user, "after-client-hello"
    elif r < 0.85:
        prefix, kind = host, "after-register"
    else:
        prefix, kind = user + control.FeedRequest().encode(), "after-feed"
    if rng.random() < 0.3:
        body = json_bytes(rng, mutate_json(rng, _sample_message(
            rng.choice(list(control.all_message_types().values())), rng).to_dict()))
        data = fr.encode(FrameType.CONTROL, body)
        if rng.random() < 0.3:
            data = _length_lie(rng, data)
        mut = "json"
    else:
        mut, data = mutate(rng, rng.choice(seeds), seeds)
    return f"{kind}/{mut}", prefix + data


async def _one_connection(stack, ctx, data: bytes, wait: float) -> str:
    """Send ``data``, collect what the gateway says within ``wait``; outcome name."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", stack.gateway.port, ssl=ctx), 10)
    try:
        writer.write(data)
        await writer.drain()
        got = b""
        try:
            while True:
                piece = await asyncio.wait_for(reader.read(65536), wait)
                if not piece:
                    break
                got += piece
        except asyncio.TimeoutError:
            pass
        except (ConnectionError, OSError):
            return "reset"
        codes = []
        buf = FrameBuffer(1 << 20)
        buf.feed(got)
        try:
            while (f := buf.next_frame()) is not None:
                if f.type == FrameType.CONTROL:
                    m = control.parse(f.payload)
                    codes.append(m.code if isinstance(m, control.Error) else m.TYPE)
                else:
                    codes.append(f.type.name)
        except ShortpathError:
            codes.append("unparsable-reply")
        errors = [c for c in codes if c not in ("welcome", "registered", "feed", "heartbeat-ack", "launched", "dial")]
        return "error:" + errors[-1] if errors else ("closed" if reader.at_eof() else "held-open")
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (asyncio.TimeoutError, ConnectionError, OSError, Exception):  # noqa: BLE001
            pass


async def fuzz_gateway(state_dir: str, n: int, *, workers: int = 8, wait: float = 0.25, seed: int = 2,
                       timing=None, progress=None) -> dict:
    """``n`` hostile connections against a live LocalStack gateway while one real
    session echoes numbered messages through it. Returns counts and checks."""
    from shortpath.app.desktop import check_numbered, numbered
    from shortpath.auth.certs import client_context
    from shortpath.demo import LocalStack

    rng = random.Random(seed)
    bugs = _BugLog()
    root = logging.getLogger("shortpath")
    root.addHandler(bugs)
    old_level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    loop = asyncio.get_running_loop()
    loop_errors: list[str] = []
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda lp, ctx: loop_errors.append(str(ctx.get("exception") or ctx.get("message"))[:300]))
    t = Tally()
    res: dict = {}
    try:
        async with LocalStack(state_dir, hosts=1, timing=timing, launch_rate=1000.0, launch_burst=1000.0,
                              managed=False) as stack:
            ctx = client_context(stack.cafile)
            session = await stack.connect(shortpath=False)
            await session.send(b"echo")
            baseline_conns = len(stack.gateway._conns)
            counters0 = dict(stack.gateway.counters)
            stop = asyncio.Event()
            echoed = {"sent": 0, "ok": 0, "error": None}

            async def live():
                try:
                    while not stop.is_set():
                        await session.send(numbered(echoed["sent"]))
                        echoed["sent"] += 1
                        got = check_numbered(await asyncio.wait_for(session.recv(), 15))
                        if got != echoed["ok"]:
                            raise AssertionError(f"echo {got} when {echoed['ok']} was expected")
                        echoed["ok"] += 1
                        await asyncio.sleep(0.005)
                except Exception as exc:  # noqa: BLE001
                    echoed["error"] = f"{type(exc).__name__}: {exc}"

            live_task = asyncio.ensure_future(live())
            rss0 = rss_kb()
            rss_samples = [(0, rss0)]
            todo = iter(range(n))
            t0 = time.monotonic()

            async def worker():
                for i in todo:
                    kind, data = gateway_inputs(rng, stack)
                    try:
                        outcome = await _one_connection(stack, ctx, data, wait)
                    except Exception as exc:  # noqa: BLE001  (our side; not a gateway crash)
                        outcome = "client-side:" + type(exc).__name__
                    t.add("gateway", outcome, kind.split("/")[0])
                    if i and i % 500 == 0:
                        rss_samples.append((i, rss_kb()))
                        if progress:
                            progress(i)

            await asyncio.gather(*(worker() for _ in range(workers)))
            elapsed = time.monotonic() - t0
            rss1 = rss_kb()
            # The gateway must settle back: no stuck half-open or leaked connections.
            settle_end = time.monotonic() + 20
            while time.monotonic() < settle_end and (stack.gateway._unauth or
                                                     len(stack.gateway._conns) > baseline_conns
                                                     or stack.gateway.broker.pending):
                await asyncio.sleep(0.1)
            # a little more live traffic after the storm, then stop
            target = echoed["ok"] + 20
            while echoed["ok"] < target and echoed["error"] is None and not live_task.done():
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(live_task, 20)
            live_transport = session.info.transport
            await session.close()
            rss2 = rss_kb()
            counters1 = dict(stack.gateway.counters)
            res = {
                "inputs": n, "elapsed_s": round(elapsed, 2), "per_second": round(n / elapsed, 1),
                "live_session": {**echoed, "transport": live_transport},
                "gateway_alive": stack.gateway._server is not None and stack.gateway._server.is_serving(),
                "settled": {"unauthenticated": stack.gateway._unauth,
                            "connections": len(stack.gateway._conns), "baseline_connections": baseline_conns,
                            "pending_launches": len(stack.gateway.broker.pending)},
                "counters_delta": {k: counters1[k] - counters0.get(k, 0) for k in counters1},
                "rss_kb": {"before": rss0, "after_fuzz": rss1, "after_settle": rss2,
                           "samples": rss_samples},
            }
    finally:
        root.removeHandler(bugs)
        root.setLevel(old_level)
        loop.set_exception_handler(old_handler)
    for b in bugs.records:
        t.crash("gateway", "log: " + b, b"")
        t.outcomes["gateway"]["CRASH"] -= 1   # a log line is a finding, not an extra input
        t.inputs["gateway"] -= 1
    for e in loop_errors:
        t.crash("gateway", "loop: " + e, b"")
        t.outcomes["gateway"]["CRASH"] -= 1
        t.inputs["gateway"] -= 1
    res["tally"] = t
    res["bug_log"] = bugs.records
    res["loop_errors"] = loop_errors
    return res


# ---- the benchmark entry ---------------------------------------------------------

SUITES = {"quick": {"codec": 4000, "gateway": 300}, "full": {"codec": 110_000, "gateway": 10_000}}


def run(suite: str = "quick", plot: bool = True) -> dict:
    from benchmarks.common import save
    from shortpath.config import Timing

    sizes = SUITES[suite]
    t0 = time.monotonic()
    codec = run_codecs(sizes["codec"])
    codec_s = time.monotonic() - t0
    print(f"  codecs: {sum(codec.inputs.values())} inputs in {codec_s:.1f}s, "
          f"crashes={codec.to_dict()['crash_count']}", flush=True)
    timing = Timing(heartbeat_interval=0.5, heartbeat_misses=6, handshake_timeout=3.0, leg_timeout=3.0)
    with tempfile.TemporaryDirectory(prefix="shortpath-fuzz-") as state:
        gw = asyncio.run(fuzz_gateway(state, sizes["gateway"], timing=timing,
                                      progress=lambda i: print(f"  gateway: {i} ...", flush=True)))
    gt: Tally = gw.pop("tally")
    total = codec.to_dict()
    g = gt.to_dict()
    data = {
        "suite": suite,
        "inputs_total": total["inputs_total"] + g["inputs_total"],
        "crash_count": total["crash_count"] + g["crash_count"],
        "codec": total,
        "gateway": {**gw, **{k: g[k] for k in ("inputs", "outcomes", "mutators", "crashes", "crash_count")}},
        "seconds_total": round(time.monotonic() - t0, 1),
        "command": f"python -m benchmarks run --suite {suite} --only fuzz",
    }
    path = save(f"fuzz_{suite}", data)
    print(f"  gateway: {g['inputs_total']} connections in {gw['elapsed_s']}s, crashes={g['crash_count']}, "
          f"live session {gw['live_session']['ok']}/{gw['live_session']['sent']} echoed "
          f"(error={gw['live_session']['error']}), RSS kB before/after/settled "
          f"{gw['rss_kb']['before']}/{gw['rss_kb']['after_fuzz']}/{gw['rss_kb']['after_settle']}", flush=True)
    print(f"  total inputs {data['inputs_total']}, crashes {data['crash_count']} -> {path}", flush=True)
    if plot:
        _plot(data, suite)
    return data


def _plot(data: dict, suite: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from benchmarks.common import RESULTS
    targets = {**data["codec"]["outcomes"], "gateway": data["gateway"]["outcomes"].get("gateway", {})}
    fig, axes = plt.subplots(1, len(targets), figsize=(4 * len(targets), 4))
    for ax, (name, counts) in zip(axes, targets.items()):
        items = sorted(counts.items(), key=lambda kv: -kv[1])[:10]
        ax.barh([k[:28] for k, _ in items], [v for _, v in items])
        ax.set_title(f"{name} ({sum(counts.values())})")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"fuzz outcomes by class ({suite}); crashes: {data['crash_count']}")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"fuzz_{suite}.png"), dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "quick")
