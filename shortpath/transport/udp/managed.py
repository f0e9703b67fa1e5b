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

* 0..3, STUN: must parse, be a Binding *request*, carry USERNAME
  ``<host-ufrag>:<client-ufrag>`` whose first half names a registered session
  and a MESSAGE-INTEGRITY valid for that session's password. Then we answer
  (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT), and the source
  address is *learned* for that session. USE-CANDIDATE nominates the address
  (it becomes where the session's DTLS goes).
* 20..63, DTLS: routed by source address, which must have been learned by an
  authenticated check; otherwise dropped.
* anything else: dropped.

Every drop is counted (:meth:`ManagedListener.stats`); nothing is answered to
unauthenticated traffic (no 400/401 responses: under a flood we would only be
an amplifier), and one session's queue filling up drops that session's
datagrams only. The per-session receive queue is bounded, and so is the number
of addresses a session may learn.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any, Optional

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

    DTLS (aiortc ``RTCDtlsTransport``) only needs ``_recv()`` / ``_send()``
    and a ``role``; this class provides them on top of the listener.
    """

    role = "controlled"  # ICE-lite agents are always controlled

    def __init__(self, listener: "ManagedListener", ufrag: str, pwd: str, queue_size: int) -> None:
        self.listener = listener
        self.ufrag = ufrag
        self.pwd = pwd
        self.pwd_key = pwd.encode()
        self.remote_ufrag: Optional[str] = None
        self.impairment = Impairment()
        self.addresses: list[tuple[str, int]] = []
        self.remote_addr: Optional[tuple[str, int]] = None
        self.nominated: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.closed = False
        self.counters: Counter = Counter()

    # -- called by the listener -------------------------------------------------
    def _checked(self, addr: tuple[str, int], use_candidate: bool) -> None:
        if use_candidate:
            self.remote_addr = addr
            if not self.nominated.done():
                self.nominated.set_result(addr)

    def _deliver(self, data: bytes) -> None:
        if self.impairment.drop(outbound=False):
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.counters["rx_queue_full"] += 1
            self.listener._counters["session_queue_full"] += 1
            return
        self.counters["rx_datagrams"] += 1
        self.counters["rx_bytes"] += len(data)

    # -- the pipe DTLS uses --------------------------------------------------------
    async def _recv(self) -> bytes:
        if self.closed:
            raise ConnectionError("managed session closed")
        data = await self._queue.get()
        if data is None:
            raise ConnectionError("managed session closed")
        return data

    async def _send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("managed session closed")
        if self.remote_addr is None:
            raise ConnectionError("managed session has no nominated address")
        if self.impairment.drop(outbound=True):
            return
        self.listener._sendto(data, self.remote_addr)
        self.counters["tx_datagrams"] += 1
        self.counters["tx_bytes"] += len(data)

    def close(self) -> None:
        """Unregister from the listener and wake a pending ``_recv``. Idempotent."""
        if self.closed:
            return
        self.closed = True
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
    ) -> None:
        self._bind = (host, port)
        self._advertise = advertise
        self._max_addrs = max_addresses_per_session
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
        session = ManagedSession(self, ufrag, pwd, self._session_queue)
        self._by_ufrag[ufrag] = session
        return session

    def _unregister(self, session: ManagedSession) -> None:
        if self._by_ufrag.get(session.ufrag) is session:
            del self._by_ufrag[session.ufrag]
        for addr in session.addresses:
            if self._by_addr.get(addr) is session:
                del self._by_addr[addr]

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
            if session is None:
                c["drop_dtls_unknown_address"] += 1
                return
            c["rx_dtls"] += 1
            session._deliver(data)
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
        if addr not in session.addresses:
            if len(session.addresses) >= self._max_addrs:
                c["drop_stun_too_many_addresses"] += 1
                return
            other = self._by_addr.get(addr)
            if other is not None and other is not session:
                c["address_moved_between_sessions"] += 1
                other.addresses.remove(addr)
            session.addresses.append(addr)
            self._by_addr[addr] = session
        c["stun_checks_answered"] += 1
        self._respond(session, msg, addr)
        session._checked(addr, "USE-CANDIDATE" in msg.attributes)

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
