"""What a launch (connect.py) and a resume (resume.py) both do on a gateway connection:
dial it, read the control message we expect, and run the end-to-end TLS with the host
inside the relay, checking the host is the one we were told."""

from __future__ import annotations

import asyncio
import ssl

from ..auth import ca, certs
from ..config import Timing
from ..errors import AuthError, RemoteError, from_wire
from ..framed import FramedConn
from ..netaddr import parse_hostport
from ..transport.tcp_relay import InnerTls
from ..wire import control
from ..wire.frames import MAX_CONTROL_PAYLOAD, MAX_RELAY_PAYLOAD


async def open_gateway(gateway, cafile: str | None, timing: Timing) -> FramedConn:
    """TCP + TLS to ``gateway`` ("host:port" or (host, port)), framed for control messages."""
    host, port = parse_hostport(gateway)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=certs.client_context(cafile), limit=MAX_RELAY_PAYLOAD * 2),
        timing.handshake_timeout)
    return FramedConn(reader, writer, MAX_CONTROL_PAYLOAD, timing.relay_high_water)


async def expect(conn: FramedConn, cls, timeout: float):
    """The next control message, which must be a ``cls``; an ERROR becomes its typed error."""
    msg = await asyncio.wait_for(conn.read_control(), timeout)
    if isinstance(msg, control.Error):
        raise from_wire(msg.code, msg.message, msg.reason)
    if not isinstance(msg, cls):
        raise RemoteError(f"expected {cls.TYPE}, got {msg.TYPE if msg else 'end of connection'}")
    return msg


def inner_context(host_ca: str | None) -> ssl.SSLContext:
    """The client context for the end-to-end TLS: the deployment CA if given, else a pin."""
    return ca.client_context(host_ca) if host_ca else certs.pinned_client_context()


async def host_tls(conn: FramedConn, ctx: ssl.SSLContext, fingerprint: str, *, host_ca: str | None,
                   host_id: str, timeout: float) -> InnerTls:
    """End-to-end TLS with the host over ``conn`` (now a relay leg): the host must present
    ``fingerprint`` and, with ``host_ca``, a chain to that CA naming ``host_id``."""
    conn.max_payload = MAX_RELAY_PAYLOAD
    tls = InnerTls(conn, ctx, server_side=False)
    try:
        await asyncio.wait_for(tls.handshake(expected_fingerprint=fingerprint), timeout)
    except ssl.SSLCertVerificationError as exc:
        raise AuthError(f"host certificate does not chain to the deployment CA: {exc.verify_message}") from None
    if host_ca:
        ca.verify_host_der(tls.ssl.getpeercert(binary_form=True), host_ca, host_id)
    return tls
