"""The UDP path layer: ICE (aioice) + DTLS + SCTP data channels (aiortc ORTC).

This is the only module family in shortpath that imports aioice/aiortc, and
it does so lazily (inside functions), because importing aiortc loads PyAV
(~0.3 s).

Stack of one path, bottom up::

    sockets     ice.IceAgent (aioice, our gathering)  |  managed.ManagedListener (shared 3390)
    pipe        _Pipe: counts bytes, offers _recv/_send/role to DTLS
    DTLS        aiortc RTCDtlsTransport, peer certificate checked against the
                sha-256 fingerprint received by signalling
    SCTP        sctp_tuning.TunedSctpTransport (aiortc + our timers)
    channels    id 0: reliable, ordered     id 1: unordered, maxRetransmits=0
                (both negotiated out of band: no DCEP round trip)

Roles are fixed by our role, never negotiated: the *client* is ICE
controlling and DTLS server; the *host* is ICE controlled (ICE-lite on the
managed listener) and DTLS client. Both ends start SCTP (RFC 8841 9.3).

Signalling (JSON dicts, carried by the session layer over the TLS relay); see
``docs/udp.md`` for the full table::

    udp.hello            ufrag/pwd, DTLS role + sha-256 fingerprint, SCTP port/max size
    udp.candidate        one candidate, trickled as gathered ("managed": true on the
                         host's listener candidate)
    udp.end-of-candidates
    udp.selected         client -> host after ICE: the pair it nominated (informational)
    udp.abort            reason: fingerprint-mismatch | ice-failed | dtls-failed | timeout | closed | ...
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

from shortpath.errors import BufferFull, FingerprintMismatch, LocalError, PathError, RemoteError

from .ice import (
    Impairment,
    TurnServer,
    candidate_from_dict,
    candidate_to_dict,
    make_agent,
    managed_priority,
    new_credentials,
)
from .managed import DEFAULT_MANAGED_PORT, ManagedListener, ManagedSession
from .sctp import DEFAULT_TUNING, SctpTuning

__all__ = [
    "UdpConfig",
    "TurnServer",
    "UdpUpgrader",
    "UdpPath",
    "ManagedListener",
    "BufferFull",
    "SIGNAL_VERSION",
]

logger = logging.getLogger("shortpath.transport.udp")

SIGNAL_VERSION = 1
_FP_RE = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$")

RELIABLE_CHANNEL_ID = 0
UNRELIABLE_CHANNEL_ID = 1




@dataclass(frozen=True)
class UdpConfig:
    """Mode policy and timing for one UDP upgrade attempt.

    Both peers should use the same policy; each side also enforces its own
    (it gathers only allowed candidate kinds and ignores disallowed remote
    ones), so the effective policy is the intersection.
    """

    # -- which paths may be used --------------------------------------------------
    allow_managed: bool = True   # host's shared listener (UDP 3390), no STUN/TURN
    allow_direct: bool = True    # host + server-reflexive (STUN) candidates
    allow_turn: bool = True      # relay candidates (TURN); alone => relay-only policy

    # -- servers (always explicit: aioice/aiortc defaults point at Google STUN) --
    stun_server: Optional[tuple[str, int]] = None
    # Tried in order until one allocates: put UDP first, then TCP, then TLS.
    turn_servers: tuple[TurnServer, ...] = ()

    # -- addresses -----------------------------------------------------------------
    # The port a host's ManagedListener binds (the listener is created by the
    # host application and passed to UdpUpgrader; this is its default).
    managed_port: int = DEFAULT_MANAGED_PORT
    # Local IPs to gather host candidates on. None = every non-loopback IPv4
    # address (aioice's detection). Tests use ("127.0.0.1",).
    host_addresses: Optional[tuple[str, ...]] = None

    # -- timing (seconds) ------------------------------------------------------------
    connect_timeout: float = 10.0       # whole connect(): ICE + DTLS + SCTP
    gather_timeout: float = 4.0         # STUN/TURN candidate gathering, all servers
    turn_attempt_timeout: float = 1.5   # per TURN server/transport, before trying the next
    close_timeout: float = 1.0          # bound on TURN deallocation and SCTP abort at close

    # -- data ----------------------------------------------------------------------------
    sctp_port: int = 5000
    max_message_size: int = 262144      # we accept up to this; peers advertise theirs
    unreliable_buffer_limit: int = 64 * 1024   # send_unreliable drops above this backlog
    reliable_buffer_limit: int = 16 * 1024 * 1024  # send_reliable raises BufferFull above
    drain_high_water: int = 1024 * 1024  # drain() returns once buffered_amount is at or below
    receive_backlog: int = 10000        # messages kept until on_reliable/on_unreliable is set
    sctp_tuning: Optional[SctpTuning] = DEFAULT_TUNING  # None = aiortc's RFC 4960 defaults

    def __post_init__(self) -> None:
        if not (self.allow_managed or self.allow_direct or self.allow_turn):
            raise ValueError("UdpConfig allows no path at all")

    @property
    def relay_only(self) -> bool:
        return self.allow_turn and not self.allow_direct and not self.allow_managed


def _sha256_fingerprint(cert: Any) -> str:
    from aiortc.rtcdtlstransport import certificate_digest

    return certificate_digest(cert, "sha-256")


def _maybe_await_send(send_signal: Callable[[dict], Any], msg: dict, tasks: set) -> None:
    result = send_signal(msg)
    if inspect.isawaitable(result):
        task = asyncio.ensure_future(result)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class _Pipe:
    """What aiortc's RTCDtlsTransport needs from an "ICE transport":
    ``role``, ``_recv()``, ``_send()``; plus our counters."""

    def __init__(self, recv: Callable, send: Callable, role: str) -> None:
        self._inner_recv = recv
        self._inner_send = send
        self.role = role
        self.tx_bytes = self.rx_bytes = self.tx_datagrams = self.rx_datagrams = 0
        self.last_rx = time.monotonic()

    async def _recv(self) -> bytes:
        data = await self._inner_recv()
        self.rx_bytes += len(data)
        self.rx_datagrams += 1
        self.last_rx = time.monotonic()
        return data

    async def _send(self, data: bytes) -> None:
        await self._inner_send(data)
        self.tx_bytes += len(data)
        self.tx_datagrams += 1


def _describe(candidate: Any) -> Optional[dict]:
    if candidate is None:
        return None
    return {"type": candidate.type, "ip": candidate.host, "port": candidate.port}


class UdpUpgrader:
    """One attempt to move a session to UDP. See module and docs/udp.md.

    ``role``: "client" or "host". ``send_signal``: called with each JSON dict
    to deliver to the peer, in order (may return an awaitable).
    ``managed_listener``: host side only, the shared listener (started).
    """

    def __init__(
        self,
        role: str,
        config: UdpConfig,
        send_signal: Callable[[dict], Any],
        managed_listener: Optional[ManagedListener] = None,
    ) -> None:
        if role not in ("client", "host"):
            raise ValueError("role must be 'client' or 'host'")
        if role == "client" and managed_listener is not None:
            raise ValueError("only the host has a managed listener")
        self.role = role
        self.config = config
        self._send_signal = send_signal
        self._listener = managed_listener
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._send_tasks: set = set()
        self._impairment = Impairment()
        self._agent: Any = None
        self._managed: Optional[ManagedSession] = None
        self._remote_managed: set[tuple[str, int]] = set()
        self._remote_relay: set[tuple[str, int]] = set()
        self._remote_hello: Optional[asyncio.Future] = None
        self._failure: Optional[asyncio.Future] = None
        self._pump_task: Optional[asyncio.Task] = None
        self._connect_task: Optional[asyncio.Task] = None
        self._path: Optional[UdpPath] = None
        self._dtls: Any = None
        self._sctp: Any = None
        self._closed = False
        self._aborted_by_peer = False
        self._peer_selected: Optional[dict] = None
        self.local_candidates: list[dict] = []
        self.remote_candidates: list[dict] = []
        self.turn_errors: list[str] = []  # one line per failed TURN server/transport
        #: Phase timestamps of this attempt (time.monotonic() seconds), each set once
        #: when reached; also in UdpPath.info()["timeline"]. Read by benchmarks/setup.py.
        #: created, start (connect() called), hello_sent, cand_host / cand_srflx /
        #: cand_relay (first local candidate of that type trickled), cand_managed (host:
        #: listener candidate signalled), gathered (our end-of-candidates sent),
        #: remote_hello, remote_eoc (peer's hello / end-of-candidates applied),
        #: checks (connectivity checks begin: gathered and peer's hello in), nominated
        #: (ICE pair selected; host: first responder to win), dtls (handshake done),
        #: sctp (association up, reliable channel open), up (path returned).
        self.timeline: dict[str, float] = {"created": time.monotonic()}

    def _mark(self, phase: str) -> None:
        self.timeline.setdefault(phase, time.monotonic())

    # -- signalling in -------------------------------------------------------------
    def on_signal(self, msg: dict) -> None:
        """Feed one signalling message received from the peer (never blocks)."""
        if self._closed:
            return
        self._inbox.put_nowait(msg)

    # -- connect ---------------------------------------------------------------------
    async def connect(self, timeout: Optional[float] = None) -> "UdpPath":
        """Gather, check, handshake; return the path or raise PathError /
        FingerprintMismatch / RemoteError (peer sent nonsense)."""
        if self._closed:
            raise PathError("upgrader closed", code="closed")
        if self._connect_task is not None:
            raise LocalError("connect() already called")
        timeout = self.config.connect_timeout if timeout is None else timeout
        self._mark("start")
        self._connect_task = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.wait_for(asyncio.shield(self._connect_task), timeout)
        except asyncio.TimeoutError:
            self._send_abort("timeout")
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
            raise PathError(f"UDP connect timed out after {timeout:.1f} s", code="timeout") from None
        except asyncio.CancelledError:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
            me = asyncio.current_task()
            if self._closed and me is not None and not me.cancelling():
                # close() was called from elsewhere; the caller was not cancelled.
                raise PathError("upgrader closed during connect", code="closed") from None
            raise

    async def _connect(self) -> "UdpPath":
        try:
            return await self._connect_steps()
        except BaseException as exc:
            if isinstance(exc, FingerprintMismatch):
                self._send_abort("fingerprint-mismatch")
            elif isinstance(exc, RemoteError):
                self._send_abort("protocol-error", str(exc))
            elif isinstance(exc, PathError) and not self._aborted_by_peer:
                self._send_abort(exc.code, str(exc))
            await self._release()
            raise

    async def _connect_steps(self) -> "UdpPath":
        from aiortc import RTCCertificate

        loop = asyncio.get_running_loop()
        cfg = self.config
        self._failure = loop.create_future()
        self._remote_hello = loop.create_future()
        is_client = self.role == "client"

        cert = RTCCertificate.generateCertificate()
        self._cert = cert
        fingerprint = _sha256_fingerprint(cert._cert)
        ufrag, pwd = new_credentials()
        self._ufrag, self._pwd = ufrag, pwd
        self._dtls_role = "server" if is_client else "client"
        self._signal({
            "type": "udp.hello",
            "v": SIGNAL_VERSION,
            "role": self.role,
            "ice": {"ufrag": ufrag, "pwd": pwd},
            "dtls": {"role": self._dtls_role, "fingerprint": {"algorithm": "sha-256", "value": fingerprint}},
            "sctp": {"port": cfg.sctp_port, "max_message_size": cfg.max_message_size},
        })
        self._mark("hello_sent")

        # Local resources -----------------------------------------------------
        if not is_client and cfg.allow_managed and self._listener is not None:
            self._managed = self._listener.register(ufrag, pwd)
            self._managed.impairment = self._impairment
        want_agent = (
            (is_client and (cfg.allow_direct or cfg.allow_turn or cfg.allow_managed))
            or (not is_client and (cfg.allow_direct or cfg.allow_turn))
        )
        if want_agent:
            host_cands = cfg.allow_direct or (is_client and cfg.allow_managed)
            relay_only = cfg.allow_turn and not host_cands
            self._agent = make_agent(
                controlling=is_client,
                ufrag=ufrag,
                pwd=pwd,
                host_addresses=list(cfg.host_addresses) if cfg.host_addresses is not None else None,
                stun_server=cfg.stun_server if cfg.allow_direct else None,
                turn_servers=list(cfg.turn_servers) if cfg.allow_turn else [],
                relay_only=relay_only,
                impairment=self._impairment,
                on_candidate=self._trickle,
                gather_timeout=cfg.gather_timeout,
                turn_attempt_timeout=cfg.turn_attempt_timeout,
                close_timeout=cfg.close_timeout,
            )
        if self._managed is None and self._agent is None:
            raise PathError("no UDP path allowed by policy for this side", code="policy")

        self._pump_task = asyncio.ensure_future(self._pump())

        # Gather and trickle ----------------------------------------------------
        if self._managed is not None:
            for ip, port in self._listener.advertised_addresses():  # type: ignore[union-attr]
                self._signal({"type": "udp.candidate", "candidate": {
                    "foundation": "managed", "component": 1, "protocol": "udp",
                    "priority": managed_priority(1), "ip": ip, "port": port, "type": "host",
                    "managed": True}})
                self._mark("cand_managed")
        if self._agent is not None:
            await self._until(self._agent.gather_candidates())
            self.turn_errors = list(self._agent._sp_turn_errors)
        self._signal({"type": "udp.end-of-candidates"})
        self._mark("gathered")
        if self._managed is None and not self.local_candidates:
            raise PathError("no local UDP candidate could be gathered"
                            + (f" (TURN: {'; '.join(self.turn_errors)})" if self.turn_errors else ""),
                            code="no-candidates")

        # Connectivity checks --------------------------------------------------
        hello = await self._until(self._remote_hello)
        self._mark("checks")
        if self._managed is not None:
            self._managed.remote_ufrag = hello["ufrag"]
        if self._agent is not None:
            self._agent.remote_username = hello["ufrag"]
            self._agent.remote_password = hello["pwd"]
            # Regular nomination; see ice.py for why.
            self._agent.remote_is_lite = is_client
        if is_client:
            pipe = await self._client_ice()
        else:
            pipe = await self._host_ice()
        self._mark("nominated")

        # DTLS ---------------------------------------------------------------------
        from aiortc import RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport

        self._dtls = dtls = RTCDtlsTransport(pipe, [cert])
        dtls._set_role(self._dtls_role)
        await self._until(dtls.start(RTCDtlsParameters(
            fingerprints=[RTCDtlsFingerprint(algorithm="sha-256", value=hello["fingerprint"])])))
        if dtls.state != "connected":
            peer_cert = None
            try:
                if dtls._ssl is not None:
                    peer_cert = dtls._ssl.get_peer_certificate(as_cryptography=True)
            except Exception:
                peer_cert = None
            if peer_cert is not None and _sha256_fingerprint(peer_cert) != hello["fingerprint"].upper():
                raise FingerprintMismatch(
                    "peer DTLS certificate does not match the signalled sha-256 fingerprint")
            raise PathError("DTLS handshake failed", code="dtls-failed")
        self._mark("dtls")

        # SCTP + channels -------------------------------------------------------
        from aiortc import RTCDataChannel, RTCDataChannelParameters, RTCSctpCapabilities
        from aiortc.rtcsctptransport import RTCSctpTransport

        if cfg.sctp_tuning is not None:
            from .sctp import tuned_sctp_transport_class

            self._sctp = sctp = tuned_sctp_transport_class()(dtls, port=cfg.sctp_port, tuning=cfg.sctp_tuning)
        else:
            self._sctp = sctp = RTCSctpTransport(dtls, port=cfg.sctp_port)
        reliable = RTCDataChannel(sctp, RTCDataChannelParameters(
            label="reliable", negotiated=True, id=RELIABLE_CHANNEL_ID, ordered=True))
        unreliable = RTCDataChannel(sctp, RTCDataChannelParameters(
            label="unreliable", negotiated=True, id=UNRELIABLE_CHANNEL_ID, ordered=False, maxRetransmits=0))
        opened = loop.create_future()
        reliable.once("open", lambda: opened.done() or opened.set_result(True))
        reliable.once("close", lambda: opened.done() or opened.set_exception(
            PathError("SCTP association failed", code="sctp-failed")))
        # The association can fail after connect() stopped waiting on this future
        # (timeout, or the peer closed first); retrieve the exception so it is not
        # reported as "never retrieved". Whoever awaits it still gets it.
        opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        path = UdpPath(self, pipe, dtls, sctp, reliable, unreliable, self._kind(), hello)
        self._path = path
        await self._until(sctp.start(RTCSctpCapabilities(maxMessageSize=hello["max_message_size"]), hello["sctp_port"]))
        await self._until(opened)
        self._mark("sctp")
        if is_client:
            self._signal({"type": "udp.selected", "kind": path.kind,
                          "local": path.info()["local_candidate"], "remote": path.info()["remote_candidate"]})
        path._start()
        self._mark("up")
        logger.info("udp[%s]: path up, kind=%s pair=%s", self.role, path.kind, path.info()["selected_pair"])
        return path

    async def _client_ice(self) -> _Pipe:
        agent = self._agent
        try:
            await self._until(agent.connect())
        except ConnectionError:
            raise PathError("ICE failed: no candidate pair worked", code="ice-failed") from None
        return _Pipe(agent.recv, agent.send, "controlling")

    async def _host_ice(self) -> _Pipe:
        waiters: dict[asyncio.Future, str] = {}
        if self._managed is not None:
            waiters[self._managed.nominated] = "managed"
        if self._agent is not None:
            agent_task = asyncio.ensure_future(self._agent.connect())
            # It may fail after this method has stopped waiting (the managed
            # responder won, or the attempt timed out): retrieve its exception.
            agent_task.add_done_callback(lambda f: f.cancelled() or f.exception())
            waiters[agent_task] = "agent"
        winner = None
        errors = []
        pending = set(waiters)
        try:
            while pending and winner is None:
                done, pending = await self._until(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                for fut in done:
                    if fut.cancelled() or fut.exception() is not None:
                        errors.append(f"{waiters[fut]}: {None if fut.cancelled() else fut.exception()!r}")
                    elif winner is None:
                        winner = waiters[fut]
        finally:
            for fut in pending:
                fut.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if winner is None:
            raise PathError("ICE failed: " + "; ".join(errors), code="ice-failed")
        if winner == "managed":
            self._managed_won = True
            if self._agent is not None:
                agent, self._agent = self._agent, None
                await agent.close()
            m = self._managed
            assert m is not None
            return _Pipe(m._recv, m._send, "controlled")
        self._managed_won = False
        if self._managed is not None:
            self._managed.close()
            self._managed = None
        return _Pipe(self._agent.recv, self._agent.send, "controlled")

    def _kind(self) -> str:
        if self._managed is not None and self._agent is None:
            return "udp-managed"
        pair = self._agent.selected_pair() if self._agent is not None else None
        if pair is None:
            return "udp-direct"
        raddr = (pair.remote_candidate.host, pair.remote_candidate.port)
        # Relay first: our relay can reach the host's managed listener (a
        # public one), and that path still goes through the TURN server.
        if pair.local_candidate.type == "relay" or pair.remote_candidate.type == "relay" \
                or raddr in self._remote_relay:
            return "udp-turn"
        if raddr in self._remote_managed:
            return "udp-managed"
        return "udp-direct"

    # -- signalling helpers -------------------------------------------------------
    def _signal(self, msg: dict) -> None:
        try:
            _maybe_await_send(self._send_signal, msg, self._send_tasks)
        except Exception:
            logger.exception("udp[%s]: send_signal failed", self.role)

    def _send_abort(self, reason: str, detail: str = "") -> None:
        if self._aborted_by_peer:
            return
        self._signal({"type": "udp.abort", "reason": reason, "detail": detail[:200]})

    def _trickle(self, candidate: Any) -> None:
        d = candidate_to_dict(candidate)
        self._mark(f"cand_{d.get('type')}")
        self.local_candidates.append(d)
        self._signal({"type": "udp.candidate", "candidate": d})

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(exc)
            self._failure.exception()  # retrieved: never logged as unhandled

    async def _until(self, aw: Any) -> Any:
        """Await ``aw`` unless the peer aborts / sends garbage first."""
        assert self._failure is not None
        fut = asyncio.ensure_future(aw)
        if self._failure.done():
            fut.cancel()
            await asyncio.gather(fut, return_exceptions=True)
            raise self._failure.exception()  # type: ignore[misc]
        await asyncio.wait({fut, self._failure}, return_when=asyncio.FIRST_COMPLETED)
        if fut.done():
            return fut.result()
        fut.cancel()
        await asyncio.gather(fut, return_exceptions=True)
        raise self._failure.exception()  # type: ignore[misc]

    async def _pump(self) -> None:
        """Apply the peer's signalling messages in order."""
        eoc = False
        while True:
            msg = await self._inbox.get()
            try:
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "udp.hello":
                    self._on_hello(msg)
                elif kind == "udp.candidate":
                    if eoc:
                        raise RemoteError("candidate after end-of-candidates")
                    await self._on_candidate(msg.get("candidate"))
                elif kind == "udp.end-of-candidates":
                    if not eoc:
                        eoc = True
                        self._mark("remote_eoc")
                        if self._agent is not None:
                            await self._agent.add_remote_candidate(None)
                elif kind == "udp.selected":
                    self._peer_selected = msg
                    if self._path is not None and msg.get("kind") == "udp-turn":
                        self._path.kind = "udp-turn"
                elif kind == "udp.abort":
                    self._aborted_by_peer = True
                    reason = str(msg.get("reason", "unknown"))
                    detail = str(msg.get("detail", ""))[:200]
                    if reason == "fingerprint-mismatch":
                        self._fail(FingerprintMismatch("peer reports that our DTLS certificate "
                                                       "does not match the fingerprint it received"))
                    else:
                        self._fail(PathError(f"peer aborted the UDP upgrade: {reason} {detail}".strip(),
                                             code="peer-abort"))
                    if self._path is not None:
                        self._path._network_closed(f"peer-abort:{reason}")
                else:
                    raise RemoteError(f"unknown UDP signalling message {kind!r}")
            except RemoteError as exc:
                self._fail(exc)
            except ValueError as exc:
                self._fail(RemoteError(f"bad UDP signalling message: {exc}"))
            except Exception as exc:  # should-never-happen
                logger.exception("udp[%s]: [bug] signalling pump", self.role)
                self._fail(PathError(f"internal error: {exc!r}"))

    def _on_hello(self, msg: dict) -> None:
        if self._remote_hello is None or self._remote_hello.done():
            raise RemoteError("duplicate or early udp.hello")
        try:
            if int(msg.get("v", 0)) != SIGNAL_VERSION:
                raise RemoteError(f"unsupported UDP signalling version {msg.get('v')!r}")
            ice, dtls, sctp = msg["ice"], msg["dtls"], msg["sctp"]
            ufrag, pwd = str(ice["ufrag"]), str(ice["pwd"])
            fp = dtls["fingerprint"]
            algorithm, value = str(fp["algorithm"]).lower(), str(fp["value"])
            role = str(dtls["role"])
            peer_role = str(msg["role"])
            port = int(sctp["port"])
            max_size = int(sctp.get("max_message_size", 65536))
        except (KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"malformed udp.hello: {exc!r}") from None
        if not re.fullmatch(r"[A-Za-z0-9+/]{4,256}", ufrag) or not re.fullmatch(r"[A-Za-z0-9+/]{22,256}", pwd):
            raise RemoteError("malformed ICE credentials")
        if algorithm != "sha-256" or not _FP_RE.match(value):
            raise RemoteError("udp.hello needs a sha-256 DTLS fingerprint")
        if peer_role == self.role or role == self._dtls_role:
            raise RemoteError("peer claims our role")
        if not 0 < port < 65536 or max_size < 0:
            raise RemoteError("bad SCTP parameters")
        self._mark("remote_hello")
        self._remote_hello.set_result({
            "ufrag": ufrag, "pwd": pwd, "fingerprint": value.upper(), "sctp_port": port,
            "max_message_size": max_size,
        })

    async def _on_candidate(self, d: Any) -> None:
        if not isinstance(d, dict):
            raise RemoteError("udp.candidate without candidate")
        candidate = candidate_from_dict(d)  # ValueError -> RemoteError in the pump
        managed = bool(d.get("managed"))
        cfg = self.config
        self.remote_candidates.append(dict(d))
        if managed:
            if self.role != "client" or not cfg.allow_managed:
                return
            self._remote_managed.add((candidate.host, candidate.port))
            if self._agent is not None:
                self._agent._sp_managed_remote.add((candidate.host, candidate.port))
        elif candidate.type == "relay":
            if not cfg.allow_turn:
                return
            self._remote_relay.add((candidate.host, candidate.port))
        elif not cfg.allow_direct:
            # Keep it only if every local candidate is a relay (then the pair
            # is relayed anyway); otherwise it would make a direct pair.
            if self._agent is None or not self._agent._sp_relay_only:
                return
        if self._agent is not None:
            await self._agent.add_remote_candidate(candidate)

    # -- closing ------------------------------------------------------------------
    async def _release(self) -> None:
        """Free everything this attempt created (not a returned path's parts
        when the path is alive: UdpPath.close() frees those through us)."""
        if self._sctp is not None:
            sctp, self._sctp = self._sctp, None
            try:
                await asyncio.wait_for(sctp.stop(), self.config.close_timeout)
            except (asyncio.TimeoutError, Exception):
                pass
        if self._dtls is not None:
            dtls, self._dtls = self._dtls, None
            try:
                await asyncio.wait_for(dtls.stop(), self.config.close_timeout)
            except (asyncio.TimeoutError, Exception):
                pass
        if self._agent is not None:
            agent, self._agent = self._agent, None
            if len(agent._sp_turn_errors) > len(self.turn_errors):
                self.turn_errors = list(agent._sp_turn_errors)
            try:
                await agent.close()
            except Exception:
                logger.exception("udp[%s]: closing ICE agent", self.role)
        if self._managed is not None:
            self._managed.close()
            self._managed = None
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
            self._pump_task = None
        # Give queued signalling sends (abort) a chance, but never wait for them.
        for task in list(self._send_tasks):
            if not task.done():
                task.cancel()

    async def close(self) -> None:
        """Close the attempt and its path (if any). Idempotent, quick."""
        if self._closed:
            return
        self._closed = True
        if self._path is not None:
            await self._path.close()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        await self._release()


class UdpPath:
    """An established UDP path: two SCTP data channels over DTLS over ICE.

    Callbacks (assign any time; messages received before assignment are kept,
    up to ``receive_backlog``, and delivered on assignment):

    * ``on_reliable(bytes)`` / ``on_unreliable(bytes)``
    * ``on_closed(reason: str)``, called once, whatever closed the path
      ("local", "peer-closed", "dtls-closed", "sctp-retransmit-limit",
      "peer-abort:...").
    """

    def __init__(self, upgrader: UdpUpgrader, pipe: _Pipe, dtls: Any, sctp: Any,
                 reliable: Any, unreliable: Any, kind: str, hello: dict) -> None:
        self._up = upgrader
        self._pipe = pipe
        self._dtls = dtls
        self._sctp = sctp
        self._rel = reliable
        self._unrel = unreliable
        self.kind = kind
        self._max_send = min(hello["max_message_size"] or (1 << 30), upgrader.config.max_message_size)
        self._closed = False
        self._close_reason: Optional[str] = None
        self._close_task: Optional[asyncio.Task] = None
        self._on_reliable: Optional[Callable[[bytes], Any]] = None
        self._on_unreliable: Optional[Callable[[bytes], Any]] = None
        self._on_closed: Optional[Callable[[str], Any]] = None
        self._backlog_rel: deque = deque()
        self._backlog_unrel: deque = deque()
        self.messages_sent = self.messages_received = 0
        self.unreliable_sent = self.unreliable_received = 0
        self.unreliable_dropped = 0
        self.backlog_dropped = 0
        self._started = False
        self._progress: Optional[asyncio.Future] = None
        # Attached before SCTP starts: the peer may send as soon as its side
        # is open, before our connect() has returned.
        self._rel.on("message", self._rx_reliable)
        self._unrel.on("message", self._rx_unreliable)

    @property
    def last_rx_at(self) -> float:
        """time.monotonic() of the last SCTP packet from the peer on this path
        (data, SACKs and heartbeats alike), which only arrives through DTLS;
        None without our tuned SCTP (stock aiortc keeps no such stamp)."""
        return getattr(self._sctp, "sp_last_rx", None)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._rel.on("close", lambda: self._network_closed("peer-closed"))
        self._dtls.on("statechange", self._dtls_state)
        if hasattr(self._sctp, "on_dead"):
            self._sctp.on_dead = lambda: self._network_closed("sctp-retransmit-limit")
            self._sctp.on_progress = self._notify_progress

    def _notify_progress(self) -> None:
        fut, self._progress = self._progress, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- callbacks ------------------------------------------------------------------
    @property
    def on_reliable(self) -> Optional[Callable[[bytes], Any]]:
        return self._on_reliable

    @on_reliable.setter
    def on_reliable(self, cb: Optional[Callable[[bytes], Any]]) -> None:
        self._on_reliable = cb
        while cb is not None and self._backlog_rel:
            self._call(cb, self._backlog_rel.popleft())

    @property
    def on_unreliable(self) -> Optional[Callable[[bytes], Any]]:
        return self._on_unreliable

    @on_unreliable.setter
    def on_unreliable(self, cb: Optional[Callable[[bytes], Any]]) -> None:
        self._on_unreliable = cb
        while cb is not None and self._backlog_unrel:
            self._call(cb, self._backlog_unrel.popleft())

    @property
    def on_closed(self) -> Optional[Callable[[str], Any]]:
        return self._on_closed

    @on_closed.setter
    def on_closed(self, cb: Optional[Callable[[str], Any]]) -> None:
        self._on_closed = cb
        if cb is not None and self._close_reason is not None:
            self._call(cb, self._close_reason)

    def _call(self, cb: Callable, arg: Any) -> None:
        try:
            result = cb(arg)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            logger.exception("udp: application callback raised")

    def _rx_reliable(self, data: Any) -> None:
        self.messages_received += 1
        data = data.encode() if isinstance(data, str) else data
        if self._on_reliable is not None:
            self._call(self._on_reliable, data)
        elif len(self._backlog_rel) < self._up.config.receive_backlog:
            self._backlog_rel.append(data)
        else:
            self.backlog_dropped += 1

    def _rx_unreliable(self, data: Any) -> None:
        self.unreliable_received += 1
        data = data.encode() if isinstance(data, str) else data
        if self._on_unreliable is not None:
            self._call(self._on_unreliable, data)
        elif len(self._backlog_unrel) < self._up.config.receive_backlog:
            self._backlog_unrel.append(data)
        else:
            self.backlog_dropped += 1

    # -- sending ------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by send_* but not yet handed to the network
        (data-channel queue + SCTP chunks waiting for congestion window)."""
        queued = sum(len(c.user_data) for c in self._sctp._outbound_queue)
        return self._rel.bufferedAmount + self._unrel.bufferedAmount + queued

    def _check_send(self, data: bytes) -> None:
        if self._closed or self._rel.readyState != "open":
            raise PathError("UDP path is closed", code="closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalError("send needs bytes")
        if len(data) > self._max_send:
            raise LocalError(f"message of {len(data)} bytes exceeds the {self._max_send}-byte limit")

    def send_reliable(self, data: bytes) -> None:
        """Queue one message, delivered once, in order. Never blocks.

        Raises PathError if the path is closed, BufferFull if the backlog is
        above ``reliable_buffer_limit`` (watch ``buffered_amount``)."""
        self._check_send(data)
        if self.buffered_amount + len(data) > self._up.config.reliable_buffer_limit:
            raise BufferFull(f"UDP path backlog above {self._up.config.reliable_buffer_limit} bytes")
        self._rel.send(bytes(data))
        self.messages_sent += 1

    def send_unreliable(self, data: bytes) -> bool:
        """Send one message unordered, never retransmitted. Returns False
        (and counts it) if the backlog is above ``unreliable_buffer_limit``.
        Never blocks; raises PathError if the path is closed."""
        self._check_send(data)
        if self.buffered_amount + len(data) > self._up.config.unreliable_buffer_limit:
            self.unreliable_dropped += 1
            return False
        self._unrel.send(bytes(data))
        self.unreliable_sent += 1
        return True

    async def drain(self, high_water: Optional[int] = None) -> None:
        """Wait until ``buffered_amount <= high_water`` (default
        ``UdpConfig.drain_high_water``). Raises PathError if the path closes.

        Woken by SCTP progress (SACKs, flushes) on the tuned transport; with
        aiortc's stock SCTP (``sctp_tuning=None``, benchmarks only) it polls
        every 5 ms."""
        hw = self._up.config.drain_high_water if high_water is None else high_water
        loop = asyncio.get_running_loop()
        tuned = hasattr(self._sctp, "on_progress")
        while self.buffered_amount > hw:
            if self._closed:
                raise PathError("UDP path is closed", code="closed")
            if not tuned:
                await asyncio.sleep(0.005)
                continue
            if self._progress is None:
                self._progress = loop.create_future()
            await self._progress
        if self._closed:
            raise PathError("UDP path is closed", code="closed")

    # -- state -------------------------------------------------------------------------
    @property
    def bytes_sent(self) -> int:
        return self._pipe.tx_bytes

    @property
    def bytes_received(self) -> int:
        return self._pipe.rx_bytes

    @property
    def closed_reason(self) -> Optional[str]:
        return self._close_reason

    def info(self) -> dict:
        up = self._up
        agent = up._agent
        local = remote = None
        turn = None
        if agent is not None and agent.selected_pair() is not None:
            pair = agent.selected_pair()
            local, remote = _describe(pair.local_candidate), _describe(pair.remote_candidate)
            ts = getattr(pair.protocol, "sp_turn", None)
            if ts is not None:
                turn = {"server": f"{ts.host}:{ts.port}", "transport": ts.transport}
        elif up._managed is not None:
            la = up._listener.address if up._listener is not None else None
            local = {"type": "managed-listener", "ip": la[0], "port": la[1]} if la else None
            ra = up._managed.remote_addr
            remote = {"type": "peer", "ip": ra[0], "port": ra[1]} if ra else None
        sctp = self._sctp
        out = {
            "kind": self.kind,
            "role": up.role,
            "ice_role": self._pipe.role,
            "dtls_role": up._dtls_role,
            "dtls_state": self._dtls.state,
            "local_candidate": local,
            "remote_candidate": remote,
            "selected_pair": (f"{local['ip']}:{local['port']} -> {remote['ip']}:{remote['port']}"
                              if local and remote else None),
            "turn": turn,
            "bytes_sent": self._pipe.tx_bytes,
            "bytes_received": self._pipe.rx_bytes,
            "datagrams_sent": self._pipe.tx_datagrams,
            "datagrams_received": self._pipe.rx_datagrams,
            "seconds_since_rx": round(time.monotonic() - self._pipe.last_rx, 3),
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "unreliable_sent": self.unreliable_sent,
            "unreliable_received": self.unreliable_received,
            "unreliable_dropped": self.unreliable_dropped,
            "buffered_amount": self.buffered_amount if not self._closed else 0,
            "sctp": {
                "state": sctp.state,
                "rto": round(sctp._rto, 4),
                "srtt": None if sctp._srtt is None else round(sctp._srtt, 5),
                "cwnd": sctp._cwnd,
                "flight_size": sctp._flight_size,
                "t3_expiries": getattr(sctp, "sp_t3_expiries", None),
                "tuned": up.config.sctp_tuning is not None,
            },
            "impairment": {"blackhole": up._impairment.blackhole,
                           "dropped_in": up._impairment.dropped_in,
                           "dropped_out": up._impairment.dropped_out},
            "closed": self._closed,
            "close_reason": self._close_reason,
            "timeline": dict(up.timeline),
        }
        if agent is not None:
            out["ice_drops"] = dict(agent._sp_stats)
        return out

    # -- test / bench hooks ------------------------------------------------------------
    def _blackhole(self, on: bool = True) -> None:
        """Drop every datagram of this path in both directions at our socket
        wrapper (STUN consent included), as if the network went dark."""
        self._up._impairment.blackhole = on

    def _drop_every(self, n: int) -> None:
        """Drop every n-th datagram (both directions counted together); 0 = off."""
        self._up._impairment.drop_every = n

    # -- closing -----------------------------------------------------------------------
    def _network_closed(self, reason: str) -> None:
        if self._closed:
            return
        self._close_task = asyncio.ensure_future(self._do_close(reason))

    def _dtls_state(self) -> None:
        if self._dtls.state in ("closed", "failed"):
            self._network_closed("dtls-closed")

    async def close(self, reason: str = "local") -> None:
        """Close quickly (bounded by ``close_timeout``); idempotent.
        ``reason`` is what ``on_closed`` receives if this call closes the path."""
        if self._close_task is not None:
            await asyncio.gather(self._close_task, return_exceptions=True)
            return
        if self._closed:
            return
        self._close_task = asyncio.ensure_future(self._do_close(reason))
        await asyncio.gather(self._close_task, return_exceptions=True)

    async def _do_close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._notify_progress()  # wake drain(), which then raises PathError
        logger.info("udp[%s]: path closed (%s)", self._up.role, reason)
        try:
            await self._up._release()
        finally:
            if self._on_closed is not None:
                self._call(self._on_closed, reason)
