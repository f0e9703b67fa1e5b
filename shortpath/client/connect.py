"""Client API.

``session = await connect("gw:443", token, "desktop", cafile=...)`` dials the
gateway (outbound TLS), presents the user token, launches the resource, and
once the broker has had the host dial its leg, runs end-to-end TLS to the host
inside the relay, checking the host certificate's fingerprint the broker
registered. Errors arrive typed: AuthError subclasses for token problems,
NoResourcesError (with ``reason``) when no host can take the session,
FingerprintMismatch when the host is not who the broker said.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from .. import __version__, log
from ..config import Timing
from ..errors import PathError, SessionClosed
from ..framed import FramedConn
from ..session.session import Session, start_session
from ..wire import control
from .dial import expect as _expect
from .dial import host_tls, inner_context, open_gateway

_log = log.get("client")


async def _hello(gateway, token: str, cafile: str | None, timing: Timing,
                 marks: dict | None = None) -> FramedConn:
    conn = await open_gateway(gateway, cafile, timing)
    if marks is not None:
        marks["gateway_tls"] = time.monotonic()
    conn.send(control.ClientHello(token=token, version=__version__))
    await _expect(conn, control.Welcome, timing.handshake_timeout)
    if marks is not None:
        marks["welcome"] = time.monotonic()
    return conn


async def feed(gateway, token: str, *, cafile: str | None = None, timing: Timing | None = None) -> list[dict]:
    """The resources this user may launch."""
    timing = timing or Timing()
    conn = await _hello(gateway, token, cafile, timing)
    try:
        conn.send(control.FeedRequest())
        return list((await _expect(conn, control.Feed, timing.handshake_timeout)).resources)
    finally:
        await conn.close()


async def connect(gateway, token: str, resource: str, *, cafile: str | None = None,
                  timing: Timing | None = None, udp: dict | None = None, shortpath: bool = True,
                  host_ca: str | None = None, resume: bool = True, gateways: list | None = None) -> Session:
    """Launch ``resource`` and return a live session.

    The session starts on the tcp-relay; when the pool's policy allows it (and
    ``shortpath`` is true) it then tries to move to UDP in the background.
    ``udp`` holds local options for the UDP layer: ``host_addresses`` (IPs to
    gather candidates on), ``modes`` (subset of managed/direct/turn),
    ``turn_cafile``, ``connect_timeout``.

    ``host_ca``: the deployment CA certificate (auth/ca.py). With it the host must
    present a certificate chain to that CA naming the host id the broker announced,
    so the client no longer relies on the gateway-supplied fingerprint alone.

    ``gateways``: the other gateways of the deployment (a cluster on Redis, #14). A
    lost relay leg is resumed through ``gateway`` first, then through these (#15).

    Set-up phases land in ``session.timeline`` (time.monotonic() seconds, see
    Session.timeline): ``connect`` (this call), ``gateway_tls`` (TCP + TLS to the
    gateway up), ``welcome`` (gateway accepted the token), ``launched`` (broker chose
    a host, the host dialled its data leg, the gateway stitched it), ``inner_tls``
    (end-to-end TLS with the host done), ``session_ok`` (host confirmed the ticket)."""
    timing = timing or Timing()
    marks = {"connect": time.monotonic()}
    inner_ctx = inner_context(host_ca)
    conn = await _hello(gateway, token, cafile, timing, marks)
    ok = False
    try:
        from ..auth.resume import ClientKey
        key = ClientKey() if resume else None      # this session's resume key (#15); never leaves us
        conn.send(control.Launch(resource=resource, resume_key=key.public_hex if key else ""))
        launched = await _expect(conn, control.Launched, timing.launch_timeout)
        marks["launched"] = time.monotonic()
        tls = await host_tls(conn, inner_ctx, launched.host_fingerprint, host_ca=host_ca,
                             host_id=launched.host_id, timeout=timing.handshake_timeout)
        marks["inner_tls"] = time.monotonic()
        session, ready = start_session(tls, launched.session_id, "client", timing=timing,
                                       peer=launched.host_id, policy=launched.policy, marks=marks,
                                       wait_for="hello-ok")
        resumable = key is not None and bool(launched.resume_ticket) and timing.resume_grace > 0
        if resumable:       # a lost relay leg is replaced by a resume through a gateway (#15)
            from .resume import TICKET_SIGNAL, Resumer
            first = gateway if isinstance(gateway, str) else f"{gateway[0]}:{gateway[1]}"
            others = [g if isinstance(g, str) else f"{g[0]}:{g[1]}" for g in gateways or ()]
            session.resumer = Resumer([first] + [g for g in dict.fromkeys(others) if g != first],
                                      launched.session_id, launched.resume_ticket, key,
                                      launched.host_fingerprint, cafile=cafile, timing=timing,
                                      host_ca=host_ca, host_id=launched.host_id)
            session.on_signal(TICKET_SIGNAL, session.resumer.on_ticket)
            session.allow_resume(timing.resume_grace)
        session.send_signal({"type": "hello", "ticket": launched.ticket, "resume": resumable})
        closed = asyncio.ensure_future(session.wait_closed())
        try:
            done, _ = await asyncio.wait({ready, closed}, timeout=timing.handshake_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not ready.done():
            await session.close("setup-failed")
            if session.close_reason not in (None, "setup-failed"):
                raise SessionClosed(session.close_reason, session.close_detail)
            raise PathError("host did not confirm the session in time")
        session.timeline["session_ok"] = time.monotonic()
        _log.info(log.kv("session-up", sid=launched.session_id, host=launched.host_id, transport="tcp-relay"))
        if shortpath:
            session.enable_shortpath(udp)
        ok = True
        return session
    finally:
        if not ok:
            with contextlib.suppress(Exception):
                await conn.close()
