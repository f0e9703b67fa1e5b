"""The managed-network listener: one UDP socket (3390) serving many sessions.

Why our own ICE-lite responder instead of aioice on the host: aioice binds a
fresh ephemeral socket per ``Connection`` and has no notion of sharing a socket
between connections, while a managed deployment opens exactly one firewall
hole (UDP 3390) for all sessions of a host. RFC 8445 section 2.5 allows one
side to be "lite": it only answers connectivity checks on a public/well-known
address and never sends its own. That is exactly the host on a managed
network, and it is small enough to write here (a Binding responder with
short-term credentials, ~60 lines), which lets the shared socket demultiplex
without touching aioice's internals. The client side stays a full aioice
agent (controlling, told the peer is lite; see ``ice.py``).

Demultiplexing, per datagram (first byte per RFC 7983):

* 0..3, STUN request: must parse, be a Binding *request*, carry USERNAME
  ``<host-ufrag>:<client-ufrag>`` whose first half names a registered session
  and a MESSAGE-INTEGRITY valid for that session's password. Then the
  session's :class:`~.consent.PathBinding` decides (transaction ids are
  remembered, so a check replayed from another address is dropped unanswered);
  normally we answer (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY). The first
  USE-CANDIDATE check binds the session to its source address (where DTLS goes).
  A fresh check from another address only starts a *consent check*: see below.
* 0..3, STUN success response: accepted only as the answer to one of our own
  consent requests, from the address we sent it to, with MESSAGE-INTEGRITY
  keyed by the client's ICE password.
* 20..63, DTLS: routed by source address, which must be the session's bound
  address or a consented one; otherwise dropped.
* anything else: dropped.

Moving a live session (client NAT rebinding) follows RFC 7675 in spirit
(``consent.py`` has the rules): a fresh authenticated check from a new
address, *our* Binding request to that address answered with the client's
credentials, then DTLS from it that our DTLS stack authenticated, at most
once per ``min_move_interval``. Until all that, DTLS keeps going to the bound
address, so neither a replayed check nor a spoofed source can redirect the
stream (issue #11 item 2).

Every drop is counted (:meth:`ManagedListener.stats`); nothing is answered to
unauthenticated traffic (no 400/401 responses: under a flood we would only be
an amplifier), and one session's queue filling up drops that session's
datagrams only. The per-session receive queue is bounded, and so is the number
of addresses a session may learn.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from typing import Any, Callable, Optional

from .consent import BindingLimits, PathBinding
from .ice import Impairment, is_dtls, is_stun

logger = logging.getLogger("shortpath.transport.udp.managed")

DEFAULT_MANAGED_PORT = 3390


class _ListenerProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: "ManagedListener") -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.listener._on_datagram(data, (addr[0], addr[1]))
        except Exception:  # should-never-happen: a bug must not kill the socket
            self.listener._counters["internal_error"] += 1
            logger.exception("managed: [bug] datagram handler failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a departed client, etc.
        self.listener._counters["socket_errors"] += 1


class ManagedSession:
    """One session's view of the shared socket; also the datagram pipe DTLS uses.

    ``recv()`` / ``send()`` carry the session's DTLS datagrams (the path's
    DatagramPipe wraps them for aiortc's ``RTCDtlsTransport``).

    ``authenticated_rx``: set by the path once SCTP runs, a callable whose
    value changes whenever DTLS delivered an authenticated record (the SCTP
    transport's last-receive stamp). DTLS processes one datagram per
    ``recv()`` call, so when the value moved between two calls, the datagram
    handed out by the first one was authentic: that is what lets a consented
    address become the session's address. Without it the session never moves.
    """

    role = "controlled"  # ICE-lite agents are always controlled

    def __init__(self, listener: "ManagedListener", ufrag: str, pwd: str, queue_size: int,
                 limits: BindingLimits) -> None:
        self.listener = listener
        self.ufrag = ufrag
        self.pwd = pwd
        self.pwd_key = pwd.encode()
        self.remote_ufrag: Optional[str] = None
        self.remote_pwd_key: Optional[bytes] = None
        self.impairment = Impairment()
        self.binding = PathBinding(limits)
        #: addresses routed to this session in the listener (bound + consented)
        self.addresses: list[tuple[str, int]] = []
        self.nominated: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.closed = False
        self.counters: Counter = Counter()
        self.authenticated_rx: Optional[Callable[[], Any]] = None
        self._last_src: Optional[tuple[str, int]] = None
        self._last_mark: Any = None
        self._timer: Optional[asyncio.TimerHandle] = None

    @property
    def remote_addr(self) -> Optional[tuple[str, int]]:
        """Where the session's DTLS goes (None before nomination)."""
        return self.binding.bound

    def set_remote(self, ufrag: str, pwd: str) -> None:
        """The client's ICE credentials (from its udp.hello): checks must name
        its ufrag, and our consent checks are keyed with its password."""
        self.remote_ufrag = ufrag
        self.remote_pwd_key = pwd.encode()

    # -- called by the listener -------------------------------------------------
    def _deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.impairment.drop(outbound=False):
            return
        try:
            self._queue.put_nowait((data, addr))
        except asyncio.QueueFull:
            self.counters["rx_queue_full"] += 1
            self.listener._counters["session_queue_full"] += 1
            return
        self.counters["rx_datagrams"] += 1
        self.counters["rx_bytes"] += len(data)

    def _settle_previous(self) -> None:
        """Was the datagram handed to DTLS last time authentic, from an address
        the session is not bound to? Then the session may move there."""
        src, self._last_src = self._last_src, None
        if src is None or src == self.binding.bound or self.authenticated_rx is None:
            return
        try:
            mark = self.authenticated_rx()
        except Exception:  # should-never-happen: a probe bug must not break the pipe
            logger.exception("managed: [bug] authenticated_rx probe failed")
            return
        if mark is not None and mark != self._last_mark:
            self.listener._authenticated_dtls(self, src)

    # -- the pipe DTLS uses --------------------------------------------------------
    async def recv(self) -> bytes:
        if self.closed:
            raise ConnectionError("managed session closed")
        self._settle_previous()
        item = await self._queue.get()
        if item is None:
            raise ConnectionError("managed session closed")
        data, addr = item
        if addr != self.binding.bound:
            self._last_src = addr
            probe = self.authenticated_rx
            try:
                self._last_mark = probe() if probe is not None else None
            except Exception:
                self._last_mark = None
        return data

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("managed session closed")
        addr = self.binding.bound
        if addr is None:
            raise ConnectionError("managed session has no nominated address")
        if self.impairment.drop(outbound=True):
            return
        self.listener._sendto(data, addr)
        self.counters["tx_datagrams"] += 1
        self.counters["tx_bytes"] += len(data)

    def close(self) -> None:
        """Unregister from the listener and wake a pending ``recv``. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.listener._unregister(self)
        if not self.nominated.done():
            self.nominated.set_exception(ConnectionError("managed session closed"))
            self.nominated.exception()  # mark retrieved
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class ManagedListener:
    """A UDP socket shared by many sessions (default port 3390).

    ``host``/``port``: where to bind (``port=0`` picks a free one, for tests).
    ``advertise``: the IPs to put in the managed candidate (default: the bound
    IP, or all local IPv4 addresses when bound to 0.0.0.0).
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = DEFAULT_MANAGED_PORT,
        *,
        advertise: Optional[list[str]] = None,
        max_addresses_per_session: int = 8,
        session_queue: int = 4096,
        socket_buffer: int = 1 << 21,
        binding_limits: Optional[BindingLimits] = None,
    ) -> None:
        self._bind = (host, port)
        self._advertise = advertise
        self._max_addrs = max_addresses_per_session
        self._limits = binding_limits or BindingLimits(max_pending=max(1, max_addresses_per_session - 1))
        #: our consent requests in flight: transaction id -> session
        self._consent_txids: dict[bytes, ManagedSession] = {}
        self._session_queue = session_queue
        self._socket_buffer = socket_buffer
        self._transport: Optional[asyncio.DatagramTransport] = None
        self._by_ufrag: dict[str, ManagedSession] = {}
        self._by_addr: dict[tuple[str, int], ManagedSession] = {}
        self._counters: Counter = Counter()
        self._stun: Any = None
        self.address: Optional[tuple[str, int]] = None

    async def start(self) -> "ManagedListener":
        from aioice import stun  # lazy

        self._stun = stun
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _ListenerProtocol(self), local_addr=self._bind, family=socket.AF_INET
        )
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self._socket_buffer)
            except OSError:
                pass
        self.address = transport.get_extra_info("sockname")[:2]
        logger.info("managed: listening on %s:%d", *self.address)
        return self

    async def __aenter__(self) -> "ManagedListener":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def advertised_addresses(self) -> list[tuple[str, int]]:
        assert self.address is not None, "start() first"
        if self._advertise:
            ips = list(self._advertise)
        elif self.address[0] not in ("0.0.0.0", ""):
            ips = [self.address[0]]
        else:
            from aioice.ice import get_host_addresses

            ips = get_host_addresses(use_ipv4=True, use_ipv6=False)
        return [(ip, self.address[1]) for ip in ips]

    def register(self, ufrag: str, pwd: str) -> ManagedSession:
        """Add a session answering checks for ``ufrag`` with ``pwd``."""
        if self._transport is None:
            raise RuntimeError("ManagedListener.start() was not called")
        if ufrag in self._by_ufrag:
            raise ValueError("ufrag already registered")
        session = ManagedSession(self, ufrag, pwd, self._session_queue, self._limits)
        self._by_ufrag[ufrag] = session
        return session

    def _unregister(self, session: ManagedSession) -> None:
        if self._by_ufrag.get(session.ufrag) is session:
            del self._by_ufrag[session.ufrag]
        for addr in session.addresses:
            if self._by_addr.get(addr) is session:
                del self._by_addr[addr]
        session.addresses = []
        for txid in [t for t, s in self._consent_txids.items() if s is session]:
            del self._consent_txids[txid]

    def stats(self) -> dict:
        """Counters since start: what was accepted and what was dropped, by reason."""
        out = dict(self._counters)
        out["sessions"] = len(self._by_ufrag)
        out["learned_addresses"] = len(self._by_addr)
        out["dropped_total"] = sum(v for k, v in self._counters.items() if k.startswith("drop_"))
        return out

    async def close(self) -> None:
        for session in list(self._by_ufrag.values()):
            session.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- datagram path -------------------------------------------------------------
    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        c = self._counters
        c["rx_datagrams"] += 1
        if not data:
            c["drop_empty"] += 1
            return
        first = data[0]
        if is_dtls(first):
            session = self._by_addr.get(addr)
            if session is None or not session.binding.accepts_dtls(addr):
                c["drop_dtls_unknown_address"] += 1
                return
            c["rx_dtls"] += 1
            session._deliver(data, addr)
        elif is_stun(first):
            self._on_stun(data, addr)
        else:
            c["drop_not_stun_or_dtls"] += 1

    def _on_stun(self, data: bytes, addr: tuple[str, int]) -> None:
        stun = self._stun
        c = self._counters
        try:
            msg = stun.parse_message(data)
        except Exception:  # truncated, bad length, bad FINGERPRINT, unknown method...
            c["drop_stun_malformed"] += 1
            return
        if msg.message_method == stun.Method.BINDING and msg.message_class == stun.Class.RESPONSE \
                and msg.transaction_id in self._consent_txids:
            self._on_consent_response(msg, addr)
            return
        if msg.message_method != stun.Method.BINDING or msg.message_class != stun.Class.REQUEST:
            c["drop_stun_not_binding_request"] += 1
            return
        username = msg.attributes.get("USERNAME")
        if not isinstance(username, str) or "MESSAGE-INTEGRITY" not in msg.attributes:
            c["drop_stun_unauthenticated"] += 1
            return
        local_ufrag, colon, remote_ufrag = username.partition(":")
        session = self._by_ufrag.get(local_ufrag)
        if session is None or not colon:
            c["drop_stun_unknown_ufrag"] += 1
            return
        if session.remote_ufrag is not None and remote_ufrag != session.remote_ufrag:
            c["drop_stun_wrong_remote_ufrag"] += 1
            return
        if not msg.check_message_integrity(session.pwd_key):
            c["drop_stun_bad_integrity"] += 1
            return
        if session.impairment.drop(outbound=False):
            return
        if "ICE-CONTROLLED" in msg.attributes:
            # Both sides think they are controlled; a lite agent cannot switch
            # (RFC 8445 7.3.1.1): tell the peer to take the controlling role.
            c["stun_role_conflict"] += 1
            self._respond(session, msg, addr, error=(487, "Role Conflict"))
            return
        now = asyncio.get_running_loop().time()
        outcome = session.binding.on_check(addr, msg.transaction_id, "USE-CANDIDATE" in msg.attributes, now)
        if not outcome.answer:
            c["drop_stun_replayed"] += 1
            return
        if outcome.reason == "too-many-pending":
            c["stun_check_not_verified_too_many"] += 1
        elif outcome.reason == "retransmit":
            c["stun_check_retransmitted"] += 1
        c["stun_checks_answered"] += 1
        self._respond(session, msg, addr)
        if outcome.nominated:
            self._route(session)
            if not session.nominated.done():
                session.nominated.set_result(addr)
        if outcome.consent:
            c["consent_checks_started"] += 1
            self._run_consent(session)

    # -- consent checks (our own Binding requests to a new client address) -------------------
    def _run_consent(self, session: ManagedSession) -> None:
        """Send the consent requests that are due, unmap what expired, and
        re-arm the session's timer for the next deadline."""
        if session.closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        before = set(session.binding.pending())
        due = session.binding.consent_due(now)
        gone = before - set(session.binding.pending())
        if gone:
            self._counters["consent_failed"] += len(gone)
            for t in [t for t, s in self._consent_txids.items() if s is session and not session.binding.is_our_request(t)]:
                del self._consent_txids[t]
            self._route(session)
        for addr in due:
            if session.remote_pwd_key is not None:
                self._send_consent(session, addr, now)
            else:
                # The client's hello (its password) has not arrived yet: this try is lost,
                # like a dropped request, so the back-off still runs and the timer cannot spin.
                session.binding.consent_sent(addr, os.urandom(12), now)
                self._counters["consent_unsendable"] += 1
        if session._timer is not None:
            session._timer.cancel()
            session._timer = None
        deadline = session.binding.next_deadline()
        if deadline is not None:
            session._timer = loop.call_at(max(deadline, now) + 0.001, self._run_consent, session)

    def _send_consent(self, session: ManagedSession, addr: tuple[str, int], now: float) -> None:
        stun = self._stun
        txid = os.urandom(12)
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST,
                               transaction_id=txid)
        request.attributes["USERNAME"] = f"{session.remote_ufrag}:{session.ufrag}"
        request.attributes["PRIORITY"] = 0x7E0000FF  # unused by the peer: the pair exists already
        request.attributes["ICE-CONTROLLED"] = int.from_bytes(os.urandom(8), "big")
        assert session.remote_pwd_key is not None
        request.add_message_integrity(session.remote_pwd_key)
        request.add_fingerprint()
        session.binding.consent_sent(addr, txid, now)
        self._consent_txids[txid] = session
        self._counters["consent_requests_sent"] += 1
        if session.impairment.drop(outbound=True):
            return
        self._sendto(bytes(request), addr)

    def _on_consent_response(self, msg: Any, addr: tuple[str, int]) -> None:
        c = self._counters
        session = self._consent_txids.get(msg.transaction_id)
        if session is None or session.closed or session.remote_pwd_key is None:
            c["drop_stun_not_binding_request"] += 1
            return
        if not msg.check_message_integrity(session.remote_pwd_key):
            c["drop_consent_bad_integrity"] += 1
            return
        now = asyncio.get_running_loop().time()
        if not session.binding.on_consent_response(addr, msg.transaction_id, now):
            c["drop_consent_wrong_address"] += 1
            return
        for t in [t for t, s in self._consent_txids.items() if s is session and not session.binding.is_our_request(t)]:
            del self._consent_txids[t]
        c["consent_granted"] += 1
        self._route(session)
        self._run_consent(session)

    def _authenticated_dtls(self, session: ManagedSession, addr: tuple[str, int]) -> None:
        """Called by the session's pipe: DTLS from ``addr`` was authentic."""
        if session.closed:
            return
        now = asyncio.get_running_loop().time()
        if session.binding.on_authenticated_dtls(addr, now):
            self._counters["session_moved"] += 1
            logger.info("managed: session %s moved to %s:%d after consent and authenticated DTLS",
                        session.ufrag[:4], *addr)
            self._route(session)
            self._run_consent(session)
        elif addr != session.binding.bound:
            self._counters["move_deferred"] += 1

    def _route(self, session: ManagedSession) -> None:
        """Make the address map match the session's binding (bound + consented)."""
        want = session.binding.addresses()[: self._max_addrs]
        for addr in session.addresses:
            if addr not in want and self._by_addr.get(addr) is session:
                del self._by_addr[addr]
        for addr in want:
            other = self._by_addr.get(addr)
            if other is not None and other is not session:
                self._counters["address_moved_between_sessions"] += 1
                if addr in other.addresses:
                    other.addresses.remove(addr)
            self._by_addr[addr] = session
        session.addresses = list(want)

    def _respond(self, session: ManagedSession, request: Any, addr: tuple[str, int],
                 error: Optional[tuple[int, str]] = None) -> None:
        stun = self._stun
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.ERROR if error else stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        if error:
            response.attributes["ERROR-CODE"] = error
        else:
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(session.pwd_key)
        if session.impairment.drop(outbound=True):
            return
        self._sendto(bytes(response), addr)
