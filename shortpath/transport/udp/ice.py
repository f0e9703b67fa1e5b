"""Our one adaptation of aioice: sockets we control, trickle, TURN fallback.

aioice's ``Connection`` does full ICE (checks, nomination, consent) well, but
its candidate gathering is not what a remote-desktop transport needs:

* it never gathers loopback host candidates, and binds on every interface
  with no way to choose (tests and private "managed" networks need to pick);
* it gathers everything, then returns: no trickle;
* its STUN and TURN sockets are plain ``StunProtocol`` objects: no place to
  count, filter or impair traffic (test blackhole, benchmark loss);
* one TURN server, one transport, and a fixed 5 s gathering timeout; we want
  TURN/UDP first and TURN/TCP or TURN/TLS only when UDP gets no answer, and a
  TLS context we choose (private CA).

So :class:`IceAgent` subclasses ``Connection`` (through
``_aioice_compat.connection_class()``, which turns the private aioice methods we
change into public hooks) and overrides ``get_component_candidates`` (aioice
calls it from ``gather_candidates``), and adds a bounded ``close``. Connectivity checks,
nomination and consent remain aioice's. Every socket it creates carries
:class:`_Proto`, a ``StunProtocol`` subclass that applies the shared
:class:`Impairment` and counters in both directions, and drops datagrams that
are neither STUN nor DTLS (RFC 7983 first-byte demultiplexing) before they
reach DTLS.

Nomination: the controlling side (always our *client*) is told the peer is
"lite", so its checks carry no USE-CANDIDATE, and ``IceAgent`` performs
regular nomination itself. It sends one nominating check at a time, on the best
succeeded pair, and holds relay pairs back for ``RELAY_NOMINATION_HOLD`` while a
direct pair may still succeed. (aioice would nominate whichever pair succeeded
first, which is often a relay pair while a hole punch waits for its first
retransmission.) The host relies on that: only one of its two possible responders (the
managed listener's ICE-lite responder and its own full agent, which share one
ufrag/pwd) ever sees USE-CANDIDATE, so the host knows which one won without an
extra signalling round trip.

Two gathering/pairing rules come from the NAT lab (docs/udp.md has the
evidence): the STUN Binding for a server-reflexive candidate is bounded like
one TURN attempt (checks start only after gathering, so a blocked STUN must
not eat the connect budget), and a relay candidate is not paired with a remote
host candidate on a LAN-only address when the TURN server is not itself on
one. Such a relayed check cannot arrive, and coturn answers the resulting ICMP
"network unreachable" by closing the whole allocation, which loses the relay for
every other pair.

No private aioice name is used here: they all live in ``_aioice_compat.py``.

aioice is imported lazily (it takes ~0.2 s to import).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Optional

from . import _aioice_compat as compat
from .signal import RemoteCandidate

logger = logging.getLogger("shortpath.transport.udp.ice")

UDP_SOCKET_BUFFER = 1 << 20
# How long the controlling side holds back nominating a relay pair while a
# direct (host/srflx/prflx) pair may still succeed. A hole-punched pair often
# needs the first STUN retransmission (aioice: 0.5 s) to get through.
RELAY_NOMINATION_HOLD = 1.0
# How long the controlling side holds back a direct pair while a check to the
# host's managed listener (UDP 3390) on the *same remote address* is still in
# flight. Both pairs then cross the same network, and the policy prefers
# managed; without the hold, whichever answer arrives first wins, a race of a
# millisecond or two that the NAT lab's "private link" cell lost about one
# time in ten. One STUN retransmission (aioice: 0.5 s) fits in the hold; if
# managed is blocked, udp-direct comes up this much later.
MANAGED_NOMINATION_HOLD = 1.0


def is_stun(first_byte: int) -> bool:
    """RFC 7983: 0..3 is STUN."""
    return first_byte <= 3


def is_dtls(first_byte: int) -> bool:
    """RFC 7983: 20..63 is DTLS."""
    return 19 < first_byte < 64


class Impairment:
    """Drop datagrams at our socket wrappers, in both directions.

    Used by tests (``blackhole``) and the benchmark (``drop_every``). One
    instance is shared by all sockets of one path attempt.
    """

    def __init__(self) -> None:
        self.blackhole = False
        self.drop_every = 0  # drop every Nth datagram (0 = never)
        #: drop datagrams longer than this (0 = no limit): a path MTU smaller than the
        #: sender believes, with no ICMP to say so (a "black hole" for large packets)
        self.max_size = 0
        self._count = 0
        self.dropped_in = 0
        self.dropped_out = 0

    def drop(self, outbound: bool, size: int = 0) -> bool:
        if self.blackhole or (self.max_size and size > self.max_size):
            hit = True
        elif self.drop_every:
            self._count += 1
            hit = self._count % self.drop_every == 0
        else:
            return False
        if hit:
            if outbound:
                self.dropped_out += 1
            else:
                self.dropped_in += 1
        return hit


@dataclass(frozen=True)
class TurnServer:
    """One way to reach a TURN server. ``transport``: "udp", "tcp" or "tls".

    ``username``/``password`` are short-lived TURN REST credentials minted by
    the broker. For "tls", ``ssl_context`` (or ``cafile``) decides trust;
    ``server_hostname`` overrides the name checked in the certificate.
    """

    host: str
    port: int
    transport: str = "udp"
    username: str = ""
    password: str = ""
    cafile: Optional[str] = None
    server_hostname: Optional[str] = None
    ssl_context: Optional[ssl.SSLContext] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"TURN transport must be udp, tcp or tls, not {self.transport!r}")

    def make_ssl_context(self) -> ssl.SSLContext:
        if self.ssl_context is not None:
            return self.ssl_context
        return ssl.create_default_context(cafile=self.cafile)


# --------------------------------------------------------------------------
# candidate <-> JSON dict (the signalling format)

def candidate_to_dict(c: Any, *, managed: bool = False) -> dict:
    d = {
        "foundation": c.foundation,
        "component": c.component,
        "protocol": c.transport,
        "priority": c.priority,
        "ip": c.host,
        "port": c.port,
        "type": c.type,
    }
    if c.related_address is not None:
        d["raddr"] = c.related_address
        d["rport"] = c.related_port
    if managed:
        d["managed"] = True
    return d


def to_aioice_candidate(c: RemoteCandidate) -> Any:
    """A checked remote candidate (signal.parse_candidate) as an aioice ``Candidate``."""
    from aioice import Candidate

    return Candidate(foundation=c.foundation, component=c.component, transport="udp", priority=c.priority,
                     host=c.ip, port=c.port, type=c.type, related_address=c.raddr, related_port=c.rport)


def host_priority(component: int, index: int) -> int:
    """Priority of our index-th host candidate.

    Local preference 65535 is kept for the managed listener's candidate, so a
    managed path always sorts first; our own host candidates use 65534 down.
    """
    from aioice.candidate import candidate_priority

    return candidate_priority(component, "host", local_pref=max(0, 65534 - index))


def managed_priority(component: int = 1) -> int:
    from aioice.candidate import candidate_priority

    return candidate_priority(component, "host", local_pref=65535)


# --------------------------------------------------------------------------
# which relay pairs make sense

_PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",                                  # RFC 6598 (carrier-grade NAT)
    "169.254.0.0/16", "fc00::/7", "fe80::/10",         # link-local, ULA
))


def is_private_address(ip: str) -> bool:
    """True for LAN-only addresses (RFC 1918, CGNAT, link-local, ULA).

    Deliberately not ``ipaddress.is_private``, which also covers documentation
    and benchmarking ranges (192.0.2/24, 198.18/15) that are routed in labs.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in _PRIVATE_NETS if net.version == addr.version)


def _relay_cannot_reach(protocol: Any, remote_candidate: Any) -> bool:
    """Our relay candidate on ``protocol`` vs a remote private host candidate.

    The pair is useless when the TURN server is on a non-private address (a
    hostname counts as non-private): see ``IceAgent.may_pair``.
    A TURN server on a private address may share the peer's LAN, so its
    pairs are kept.
    """
    ts = getattr(protocol, "sp_turn", None)
    local = getattr(protocol, "local_candidate", None)
    if ts is None or local is None or local.type != "relay":
        return False
    if remote_candidate.type != "host" or not is_private_address(remote_candidate.host):
        return False
    return not is_private_address(ts.host)


# --------------------------------------------------------------------------
# the aioice subclasses (built lazily)

@lru_cache(maxsize=None)
def _classes() -> tuple[type, type]:
    from aioice import Candidate, TransportPolicy, stun, turn
    from aioice.candidate import candidate_foundation, candidate_priority
    from aioice.ice import CandidatePair, StunProtocol, candidate_pair_priority, server_reflexive_candidate

    succeeded_state = CandidatePair.State.SUCCEEDED
    failed_state = CandidatePair.State.FAILED
    pending_states = (CandidatePair.State.FROZEN, CandidatePair.State.WAITING, CandidatePair.State.IN_PROGRESS)

    def is_relay_pair(pair: Any) -> bool:
        return pair.local_candidate.type == "relay" or pair.remote_candidate.type == "relay"

    class _Proto(StunProtocol):  # type: ignore[misc]
        """A StunProtocol whose traffic passes our impairment and filters."""

        def datagram_received(self, data: Any, addr: Any) -> None:
            agent = self.receiver
            if agent.impairment.drop(outbound=False, size=len(data)) or not data:
                return
            first = data[0]
            if not is_stun(first) and not is_dtls(first):
                agent.drop_stats["rx_dropped_not_dtls"] += 1
                return
            try:
                super().datagram_received(data, addr)
            except compat.LibraryChanged:
                logger.exception("ice: [bug] aioice changed under us")
            except Exception:  # malformed STUN that aioice's parser chokes on
                agent.drop_stats["rx_dropped_malformed"] += 1

        async def send_data(self, data: bytes, addr: tuple[str, int]) -> None:
            if self.receiver.impairment.drop(outbound=True, size=len(data)):
                return
            self.transport.sendto(data, addr)

        def send_stun(self, message: Any, addr: tuple[str, int]) -> None:
            if self.receiver.impairment.drop(outbound=True):
                return
            self.transport.sendto(bytes(message), addr)

    class IceAgent(compat.connection_class()):  # type: ignore[misc]
        """aioice Connection with our gathering (see module docstring)."""

        def __init__(
            self,
            *,
            controlling: bool,
            ufrag: str,
            pwd: str,
            host_addresses: Optional[list[str]],
            stun_server: Optional[tuple[str, int]],
            turn_servers: list[TurnServer],
            relay_only: bool,
            impairment: Impairment,
            on_candidate: Callable[[Any], None],
            gather_timeout: float,
            turn_attempt_timeout: float,
            close_timeout: float,
            relay_hold: float = RELAY_NOMINATION_HOLD,
        ) -> None:
            super().__init__(
                ice_controlling=controlling,
                components=1,
                stun_server=None,  # handled by our gathering
                turn_server=None,
                use_ipv6=False,
                transport_policy=TransportPolicy.RELAY if relay_only else TransportPolicy.ALL,
                local_username=ufrag,
                local_password=pwd,
            )
            self._sp_host_addresses = host_addresses
            self._sp_stun_server = stun_server
            self._sp_turn_servers = list(turn_servers)
            #: every local candidate is a relay (relay-only policy)
            self.relay_only = relay_only
            #: drops at our socket wrappers (tests, benchmarks); shared with the attempt
            self.impairment = impairment
            self._sp_on_candidate = on_candidate
            self._sp_gather_timeout = gather_timeout
            self._sp_turn_attempt_timeout = turn_attempt_timeout
            self._sp_close_timeout = close_timeout
            #: datagrams dropped before aioice/DTLS saw them, by reason
            self.drop_stats: dict[str, int] = {"rx_dropped_not_dtls": 0, "rx_dropped_malformed": 0}
            self._sp_turn_used: Optional[TurnServer] = None
            #: one line per TURN server/transport that did not allocate
            self.turn_errors: list[str] = []
            self._sp_turn_inner: list[Any] = []
            # our regular nomination (controlling side, see _sp_consider_nomination)
            self._sp_relay_hold = relay_hold
            self._sp_own_nomination = False
            self._sp_hold_deadline = 0.0
            self._sp_managed_deadline = 0.0
            self._sp_hold_timer: Optional[asyncio.TimerHandle] = None
            self._sp_nominate_task: Optional[asyncio.Task] = None
            self._sp_nominate_failed: set[int] = set()  # id() of pairs whose nomination failed
            #: (ip, port) of the host's managed listener candidates (preferred by policy)
            self.managed_remote: set[tuple[str, int]] = set()
            self._sp_managed_hold = MANAGED_NOMINATION_HOLD
            self._sp_managed_timer: Optional[asyncio.TimerHandle] = None

        # -- gathering ------------------------------------------------------
        def _sp_emit(self, candidate: Any) -> None:
            try:
                self._sp_on_candidate(candidate)
            except Exception:  # a broken callback must not break gathering
                logger.exception("ice: on_candidate callback failed")

        async def get_component_candidates(self, component: int, addresses: list[str], timeout: int = 5) -> list:
            loop = asyncio.get_running_loop()
            candidates: list[Any] = []
            host_protocols: list[Any] = []

            if not self.relay_only:
                addrs = self._sp_host_addresses if self._sp_host_addresses is not None else addresses
                for index, address in enumerate(addrs):
                    try:
                        transport, protocol = await loop.create_datagram_endpoint(
                            lambda: _Proto(self), local_addr=(address, 0)
                        )
                    except OSError as exc:
                        logger.info("ice: cannot bind %s: %s", address, exc)
                        continue
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                            try:
                                sock.setsockopt(socket.SOL_SOCKET, opt, UDP_SOCKET_BUFFER)
                            except OSError:
                                pass
                    host, port = transport.get_extra_info("sockname")[:2]
                    protocol.local_candidate = Candidate(
                        foundation=candidate_foundation("host", "udp", host),
                        component=component,
                        transport="udp",
                        priority=host_priority(component, index),
                        host=host,
                        port=port,
                        type="host",
                    )
                    self.add_protocol(protocol)
                    host_protocols.append(protocol)
                    candidates.append(protocol.local_candidate)
                    self._sp_emit(protocol.local_candidate)

            tasks: list[asyncio.Task] = []
            if self._sp_stun_server and not self.relay_only:
                for protocol in host_protocols:
                    if ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                        # Bounded like one TURN attempt: when UDP is blocked,
                        # aioice's transaction would keep retrying until the
                        # gathering deadline, and checks only start once
                        # gathering is over (a TURN/TCP relay found after
                        # 1.5 s would then wait for nothing).
                        tasks.append(asyncio.ensure_future(asyncio.wait_for(
                            server_reflexive_candidate(protocol, self._sp_stun_server),
                            self._sp_turn_attempt_timeout)))
            if self._sp_turn_servers:
                tasks.append(asyncio.ensure_future(self._sp_relay_candidate(component)))

            # Trickle each server-derived candidate as soon as it is known.
            pending = set(tasks)
            deadline = loop.time() + self._sp_gather_timeout
            try:
                while pending:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if task.cancelled() or task.exception() is not None:
                            exc = None if task.cancelled() else task.exception()
                            if isinstance(exc, compat.LibraryChanged):
                                logger.error("ice: [bug] candidate gathering step failed: %s", exc)
                            else:
                                logger.info("ice: candidate gathering step failed: %r", exc)
                            continue
                        result = task.result()
                        if result is None:
                            continue
                        candidate, relay_protocol = result
                        if relay_protocol is not None:
                            self.add_protocol(relay_protocol)
                        if self._sp_is_duplicate(candidates, candidate):
                            continue  # srflx equal to a host candidate (no NAT)
                        candidates.append(candidate)
                        self._sp_emit(candidate)
            finally:
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            return candidates

        @staticmethod
        def _sp_is_duplicate(candidates: list, candidate: Any) -> bool:
            return any(c.host == candidate.host and c.port == candidate.port for c in candidates)

        async def _sp_relay_candidate(self, component: int) -> Optional[tuple[Any, Any]]:
            """Allocate on the first TURN server/transport that answers."""
            for ts in self._sp_turn_servers:
                ssl_ctx = None
                kwargs: dict[str, Any] = {}
                if ts.transport == "tls":
                    ssl_ctx = ts.make_ssl_context()
                try:
                    coro = turn.create_turn_endpoint(
                        lambda: _Proto(self),
                        server_addr=(ts.host, ts.port),
                        username=ts.username,
                        password=ts.password,
                        ssl=ssl_ctx,
                        transport="udp" if ts.transport == "udp" else "tcp",
                        **kwargs,
                    )
                    turn_transport, protocol = await asyncio.wait_for(coro, self._sp_turn_attempt_timeout)
                except (asyncio.TimeoutError, OSError, ConnectionError, stun.TransactionError, ssl.SSLError) as exc:
                    msg = f"{ts.transport}://{ts.host}:{ts.port}: {type(exc).__name__}: {exc}"
                    logger.info("ice: TURN allocation failed %s", msg)
                    self.turn_errors.append(msg)
                    continue
                relayed = turn_transport.get_extra_info("sockname")
                related = turn_transport.get_extra_info("related_address") or ("0.0.0.0", 9)
                if self.relay_only:
                    related = ("0.0.0.0", 9)  # do not leak the mapped address (RFC 9429 3.5.3)
                # Prefer UDP to the TURN server over TCP/TLS (RFC 8445 5.1.2.1).
                local_pref = {"udp": 65535, "tcp": 32767, "tls": 16383}[ts.transport]
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("relay", ts.transport, relayed[0]),
                    component=component,
                    transport="udp",
                    priority=candidate_priority(component, "relay", local_pref=local_pref),
                    host=relayed[0],
                    port=relayed[1],
                    type="relay",
                    related_address=related[0],
                    related_port=related[1],
                )
                protocol.sp_turn = ts
                self._sp_turn_used = ts
                self._sp_turn_inner.append(compat.turn_inner_protocol(turn_transport))
                return protocol.local_candidate, protocol
            return None

        # -- pairing ----------------------------------------------------------
        def may_pair(self, protocol: Any, remote_candidate: Any) -> bool:
            """aioice's pairing, minus relay pairs the TURN server cannot route.

            A relay candidate is not paired with a remote *host* candidate on
            a private address (RFC 1918, CGNAT, link-local, ULA) when the TURN
            server itself is on a non-private address: a public relay cannot
            reach a LAN behind some NAT, and trying is not harmless. coturn
            answers the ICMP "network unreachable" by tearing the whole
            allocation down, so every later ChannelBind on it fails (438, then
            400) and the relay is lost for every other pair too.
            """
            if not _relay_cannot_reach(protocol, remote_candidate):
                return True
            logger.info("ice: not pairing relay candidate with private host candidate %s:%d",
                        remote_candidate.host, remote_candidate.port)
            return False

        # -- nomination (controlling side) -------------------------------------
        async def connect(self) -> None:
            if self.ice_controlling and self.remote_is_lite:
                # Regular nomination, done by us rather than aioice: aioice
                # nominates the first pair that succeeds, and a relay pair
                # often succeeds first (the peer's own relayed checks have
                # already opened its NAT) while a hole-punched srflx pair is
                # waiting for its first retransmission. Marking the component
                # as "nominating" keeps aioice from nominating anything.
                self._sp_own_nomination = True
                self.take_over_nomination()
                loop = asyncio.get_running_loop()
                self._sp_hold_deadline = loop.time() + self._sp_relay_hold
                self._sp_hold_timer = loop.call_at(self._sp_hold_deadline, self._sp_consider_nomination)
                self._sp_managed_deadline = loop.time() + self._sp_managed_hold
                self._sp_managed_timer = loop.call_at(self._sp_managed_deadline, self._sp_consider_nomination)
            try:
                await super().connect()
            finally:
                self._sp_stop_nomination()

        def _sp_stop_nomination(self) -> None:
            if self._sp_hold_timer is not None:
                self._sp_hold_timer.cancel()
                self._sp_hold_timer = None
            if self._sp_managed_timer is not None:
                self._sp_managed_timer.cancel()
                self._sp_managed_timer = None
            task, self._sp_nominate_task = self._sp_nominate_task, None
            if task is not None and not task.done():
                task.cancel()

        def check_complete(self, pair: Any) -> None:
            super().check_complete(pair)
            if self._sp_own_nomination and not pair.nominated:
                self._sp_consider_nomination()

        def on_remote_candidates_end(self) -> None:
            if self._sp_own_nomination:
                self._sp_consider_nomination()

        def may_fail_check_list(self) -> bool:
            # aioice fails a controlling agent once no check is pending, even
            # with succeeded pairs: with our nomination they are still usable.
            return not (self._sp_own_nomination and not self.check_list_done and (
                self._sp_nominate_task is not None
                or any(p.state == succeeded_state for p in self.check_list)))

        def _sp_consider_nomination(self) -> None:
            """Nominate the best succeeded pair, holding relay pairs back.

            A non-relay pair is nominated as soon as it succeeds. A relay pair
            is nominated only once ``relay_hold`` has passed since checks
            began, or earlier if no non-relay pair can still succeed. Exactly
            one nominating check is in flight at a time; the host relies on
            that (see the module docstring).
            """
            if not self._sp_own_nomination or self.check_list_done or self._sp_nominate_task is not None:
                return
            if self.nominated_pairs:
                return
            good = [p for p in self.check_list
                    if p.state == succeeded_state and id(p) not in self._sp_nominate_failed]
            if not good:
                return
            good.sort(key=lambda p: candidate_pair_priority(p.local_candidate, p.remote_candidate, True),
                      reverse=True)
            direct = [p for p in good if not is_relay_pair(p)]
            if direct:
                choice = direct[0]
                if self._sp_managed_pending(choice):
                    return  # the managed check answers, fails, or the hold timer calls us again
            else:
                waiting_direct = self.remote_candidates_expected() or any(
                    p.state in pending_states and not is_relay_pair(p) for p in self.check_list)
                if waiting_direct and asyncio.get_running_loop().time() < self._sp_hold_deadline:
                    return  # the hold timer calls us again
                choice = good[0]
            self._sp_nominate_task = asyncio.ensure_future(self._sp_nominate(choice))

        def _sp_managed_pending(self, choice: Any) -> bool:
            """True while ``choice`` (a succeeded direct pair) should wait for a
            managed-listener check to the same remote IP that is still pending
            and the managed hold has not run out."""
            rc = choice.remote_candidate
            if not self.managed_remote or (rc.host, rc.port) in self.managed_remote:
                return False
            if asyncio.get_running_loop().time() >= self._sp_managed_deadline:
                return False
            return any(p.state in pending_states and p.remote_candidate.host == rc.host
                       and (p.remote_candidate.host, p.remote_candidate.port) in self.managed_remote
                       for p in self.check_list)

        async def _sp_nominate(self, pair: Any) -> None:
            logger.info("ice: nominating %s (%s)", pair, "relay" if is_relay_pair(pair) else "direct")
            assert self.remote_password is not None
            request = self.build_request(pair, nominate=True)
            try:
                await pair.protocol.request(request, pair.remote_addr,
                                            integrity_key=self.remote_password.encode("utf8"))
            except stun.TransactionError:
                logger.info("ice: nomination of %s failed", pair)
                self._sp_nominate_task = None
                self._sp_nominate_failed.add(id(pair))
                self.check_state(pair, failed_state)
                self.check_complete(pair)  # tries the next pair, or fails ICE
                return
            self._sp_nominate_task = None
            pair.nominated = True
            self.check_complete(pair)  # aioice: selected, ICE completed

        # -- queries ----------------------------------------------------------
        def selected_pair(self) -> Any:
            return self.nominated_pairs.get(1)

        # -- closing ----------------------------------------------------------
        async def close(self) -> None:
            """aioice's close, with TURN deallocation bounded in time.

            aioice deletes each TURN allocation with a STUN transaction that
            retries for ~30 s when the server is unreachable; we give it
            ``close_timeout`` and then just drop the socket (the allocation
            expires on the server).
            """
            self._sp_stop_nomination()
            inner = [p for p in self._sp_turn_inner if not p.transport.is_closing()]
            self._sp_turn_inner = []
            if inner:
                tasks = [asyncio.ensure_future(p.delete()) for p in inner]
                done, pending = await asyncio.wait(tasks, timeout=self._sp_close_timeout)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for p in inner:  # delete() closes in finally; be sure anyway
                    if not p.transport.is_closing():
                        p.transport.close()
            await super().close()

    return _Proto, IceAgent


def make_agent(**kwargs: Any) -> Any:
    """Create an :class:`IceAgent` (see ``_classes``) with keyword arguments."""
    _, agent_cls = _classes()
    return agent_cls(**kwargs)


def new_credentials() -> tuple[str, str]:
    """A random ICE ufrag (16 chars) and password (32 chars), RFC 8445 ice-chars."""
    import secrets
    import string

    alphabet = string.ascii_letters + string.digits
    ufrag = "".join(secrets.choice(alphabet) for _ in range(16))
    pwd = "".join(secrets.choice(alphabet) for _ in range(32))
    return ufrag, pwd
