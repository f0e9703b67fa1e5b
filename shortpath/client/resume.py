"""Client side of a resume (#15): dial a gateway, prove the ticket is ours, get a new leg.

``Resumer`` holds what a resume needs and nothing the gateway could hand us: the
session's private key (auth/resume.py ClientKey), the newest resume ticket (the
host passes fresh ones inside the session, SIGNAL ``resume-ticket``), and the host
certificate fingerprint pinned at launch -- the new leg's end-to-end TLS must
present the same host, whatever the gateway says. Calling it returns that TLS,
ready for ``Session.attach_leg``; the session's pump (session.py) calls it again
after ``Timing.resume_retry`` while it fails in a way that may pass (gateway not
listening yet, host not registered again yet).

Gateways: the one of the launch first, then any others given (a cluster whose
broker runs on Redis can resume a session on any of them; see the report on #15
for what the broker still needs for that).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from .. import log
from ..auth import ca, certs
from ..auth import resume as tickets
from ..auth.tokens import unverified_audience
from ..config import Timing
from ..errors import AuthError, RemoteError, from_wire
from ..framed import FramedConn
from ..netaddr import parse_hostport
from ..transport.tcp_relay import InnerTls
from ..wire import control
from ..wire.frames import MAX_CONTROL_PAYLOAD, MAX_RELAY_PAYLOAD

_log = log.get("client")

#: SIGNAL type carrying a fresh resume ticket, host -> client
TICKET_SIGNAL = "resume-ticket"


class Resumer:
    def __init__(self, gateways: list[str], session_id: str, ticket: str, key: tickets.ClientKey,
                 fingerprint: str, *, cafile: str | None, timing: Timing, host_ca: str | None = None,
                 host_id: str = "") -> None:
        self.gateways = list(gateways)
        self.session_id = session_id
        self.ticket = ticket
        self.key = key
        self.fingerprint = fingerprint
        self.cafile = cafile
        self.timing = timing
        self.host_ca = host_ca
        self.host_id = host_id
        self.tries = 0
        self._next = 0

    def on_ticket(self, msg: dict) -> None:
        """A fresh ticket from the host (inside the session). Kept if it looks like one."""
        t = msg.get("ticket")
        if isinstance(t, str) and 0 < len(t) <= 8192 and t.startswith("sp1."):
            self.ticket = t

    async def __call__(self) -> InnerTls:
        gateway = self.gateways[self._next % len(self.gateways)]
        self._next += 1        # the next try goes to the next gateway of the list
        self.tries += 1
        return await self.dial(gateway)

    async def dial(self, gateway: str) -> InnerTls:
        t = self.timing
        host, port = parse_hostport(gateway)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=certs.client_context(self.cafile),
                                    limit=MAX_RELAY_PAYLOAD * 2), t.handshake_timeout)
        conn = FramedConn(reader, writer, MAX_CONTROL_PAYLOAD, t.relay_high_water)
        ok = False
        try:
            conn.send(control.Resume(session_id=self.session_id, ticket=self.ticket))
            challenge = await _expect(conn, control.ResumeChallenge, t.handshake_timeout)
            proof = tickets.proof_message(unverified_audience(self.ticket), self.session_id, challenge.nonce)
            conn.send(control.ResumeProof(signature=self.key.sign(proof)))
            done = await _expect(conn, control.Resumed, t.launch_timeout)
            if done.session_id != self.session_id:
                raise RemoteError("gateway resumed another session")
            self.on_ticket({"ticket": done.ticket})
            conn.max_payload = MAX_RELAY_PAYLOAD
            inner = ca.client_context(self.host_ca) if self.host_ca else certs.pinned_client_context()
            tls = InnerTls(conn, inner, server_side=False)
            try:
                # the host pinned at launch, not whatever this gateway might say
                await asyncio.wait_for(tls.handshake(expected_fingerprint=self.fingerprint), t.handshake_timeout)
            except ssl.SSLCertVerificationError as exc:
                raise AuthError(f"host certificate does not chain to the deployment CA: "
                                f"{exc.verify_message}") from None
            if self.host_ca:
                ca.verify_host_der(tls.ssl.getpeercert(binary_form=True), self.host_ca, self.host_id)
            ok = True
            return tls
        finally:
            if not ok:
                with contextlib.suppress(Exception):
                    await conn.close()


async def _expect(conn: FramedConn, cls, timeout: float):
    msg = await asyncio.wait_for(conn.read_control(), timeout)
    if isinstance(msg, control.Error):
        raise from_wire(msg.code, msg.message, msg.reason)
    if not isinstance(msg, cls):
        raise RemoteError(f"expected {cls.TYPE}, got {msg.TYPE if msg else 'end of connection'}")
    return msg
