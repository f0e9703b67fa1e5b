"""Client side of a resume (#15): dial a gateway, prove the ticket is ours, get a new leg.

``Resumer`` holds what a resume needs and nothing the gateway could hand us: the
session's private key (auth/resume.py ClientKey), the newest resume ticket (the
host passes fresh ones inside the session, SIGNAL ``resume-ticket``), and the host
certificate fingerprint pinned at launch -- the new leg's end-to-end TLS must
present the same host, whatever the gateway says. Calling it returns that TLS,
ready for ``Session.attach_leg``; the session's pump (session.py) calls it again
after ``Timing.resume_retry`` while it fails in a way that may pass (gateway not
listening yet, host not registered again yet).

Gateways: the one of the launch first, then the other gateways of the deployment
the client was given (``connect(..., gateways=[...])``): a cluster whose broker runs
on Redis resumes a session on any of them, so a SIGKILLed gateway costs one refused
dial and the session comes back through the next one.
"""

from __future__ import annotations

import asyncio
import contextlib

from .. import log
from ..auth import resume as tickets
from ..auth.tokens import unverified_audience
from ..config import Timing
from ..errors import RemoteError
from ..transport.tcp_relay import InnerTls
from ..wire import control
from .dial import expect as _expect
from .dial import host_tls, inner_context, open_gateway

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
        self.last_gateway = ""     # the gateway of the last successful resume
        self._next = 0

    def on_ticket(self, msg: dict) -> None:
        """A fresh ticket from the host (inside the session). Kept if it looks like one."""
        t = msg.get("ticket")
        if isinstance(t, str) and 0 < len(t) <= 8192 and t.startswith("sp1."):
            self.ticket = t

    async def __call__(self) -> InnerTls:
        """One resume attempt. A gateway that cannot be reached at all (refused, timed
        out, TLS failed: nothing was sent, so no ticket was spent) is skipped at once for
        the next of the list, so a dead gateway of a cluster costs one failed dial, not a
        retry pause. A gateway that answers but cannot resume yet (host not registered
        again) ends the attempt, and the next one starts at the next gateway. The gateway
        that resumed us is tried first next time."""
        n = len(self.gateways)
        last: BaseException | None = None
        for _ in range(n):
            i = self._next % n
            self._next = i + 1
            self.tries += 1
            try:
                conn = await open_gateway(self.gateways[i], self.cafile, self.timing)
            except (OSError, asyncio.TimeoutError) as exc:
                last = exc
                _log.info(log.kv("resume-gateway-unreachable", gateway=self.gateways[i], error=type(exc).__name__))
                continue
            tls = await self._resume_on(conn)
            self._next = i
            self.last_gateway = self.gateways[i]
            return tls
        assert last is not None
        raise last

    async def dial(self, gateway: str) -> InnerTls:
        """A resume through ``gateway`` only."""
        return await self._resume_on(await open_gateway(gateway, self.cafile, self.timing))

    async def _resume_on(self, conn) -> InnerTls:
        t = self.timing
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
            # the host pinned at launch, not whatever this gateway might say
            tls = await host_tls(conn, inner_context(self.host_ca), self.fingerprint, host_ca=self.host_ca,
                                 host_id=self.host_id, timeout=t.handshake_timeout)
            ok = True
            return tls
        finally:
            if not ok:
                with contextlib.suppress(Exception):
                    await conn.close()

