"""One attempt to move a session to UDP: signalling, gathering, checks, DTLS, SCTP.

The upgrader only *sets up*. When the stack is complete it hands every part
(ICE agent or managed registration, DTLS, SCTP, channels) to a new
:class:`~.path.UdpPath` as one :class:`~.path.UdpStack`, and the path owns and
releases them from then on. The upgrader stays only as the signalling endpoint
of the attempt: a late ``udp.selected`` or ``udp.abort`` from the peer is
passed to the path through its public methods.

Roles are fixed by our role, never negotiated: the *client* is ICE
controlling and DTLS server; the *host* is ICE controlled (ICE-lite on the
managed listener) and DTLS client. Both ends start SCTP (RFC 8841 9.3).

The signalling messages and their checks are in signal.py (pure); the table is
in docs/udp.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Callable, Optional

from shortpath.errors import FingerprintMismatch, LocalError, PathError, RemoteError

from . import _aiortc_compat as aiortc_compat
from . import signal
from .candidate_policy import CandidateFilter, CandidatePolicy
from .config import UdpConfig
from .ice import Impairment, candidate_to_dict, make_agent, managed_priority, new_credentials, to_aioice_candidate
from .managed import ManagedListener, ManagedSession
from .path import EXTRA_STREAMS, STREAM_BASE, DatagramPipe, UdpPath, UdpStack, release_parts, stream_priorities

__all__ = ["UdpUpgrader", "RELIABLE_CHANNEL_ID", "UNRELIABLE_CHANNEL_ID"]

logger = logging.getLogger("shortpath.transport.udp")

RELIABLE_CHANNEL_ID = 0
UNRELIABLE_CHANNEL_ID = 1


def _sha256_fingerprint(cert: Any) -> str:
    """sha-256 fingerprint of a cryptography x509 certificate, as DTLS signals it."""
    from aiortc.rtcdtlstransport import certificate_digest

    return certificate_digest(cert, "sha-256")


def _local_fingerprint(cert: Any) -> str:
    """sha-256 fingerprint of our aiortc RTCCertificate."""
    for fp in cert.getFingerprints():
        if fp.algorithm == "sha-256":
            return fp.value
    raise PathError("aiortc offers no sha-256 fingerprint of our DTLS certificate", code="dtls-failed")


def pair_kind(pair: Any, *, remote_managed: set, remote_relay: set) -> str:
    """The path kind of a selected ICE pair (None: "udp-direct").

    ``remote_managed`` / ``remote_relay``: (ip, port) of the peer's candidates
    signalled as its managed listener / as relay candidates. Relay wins: our
    relay can reach the host's managed listener (a public one), and that path
    still goes through the TURN server."""
    if pair is None:
        return "udp-direct"
    raddr = (pair.remote_candidate.host, pair.remote_candidate.port)
    if pair.local_candidate.type == "relay" or pair.remote_candidate.type == "relay" or raddr in remote_relay:
        return "udp-turn"
    if raddr in remote_managed:
        return "udp-managed"
    return "udp-direct"


def _maybe_await_send(send_signal: Callable[[dict], Any], msg: dict, tasks: set) -> None:
    result = send_signal(msg)
    if inspect.isawaitable(result):
        task = asyncio.ensure_future(result)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


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
        # What this attempt holds. Once the path is built these belong to it (_handed_over):
        # the agent/managed references stay only to feed late signalling to them.
        self._agent: Any = None
        self._managed: Optional[ManagedSession] = None
        self._dtls: Any = None
        self._sctp: Any = None
        self._handed_over = False
        self._remote_managed: set[tuple[str, int]] = set()
        self._remote_relay: set[tuple[str, int]] = set()
        self._remote_hello: Optional[asyncio.Future] = None
        self._failure: Optional[asyncio.Future] = None
        self._pump_task: Optional[asyncio.Task] = None
        self._connect_task: Optional[asyncio.Task] = None
        self._path: Optional[UdpPath] = None
        self._closed = False
        self._aborted_by_peer = False
        self._peer_selected: Optional[dict] = None
        self._ufrag = ""
        self._dtls_role = "server" if role == "client" else "client"
        self.local_candidates: list[dict] = []
        self.remote_candidates: list[dict] = []
        #: which remote candidates we send checks to (candidate_policy.py); .dropped counts the rest
        self.candidate_filter = CandidateFilter(CandidatePolicy.for_local(config.host_addresses))
        self.turn_errors: list[str] = []  # one line per failed TURN server/transport
        #: Phase timestamps of this attempt (time.monotonic() seconds), each set once
        #: when reached; also in UdpPath.timeline and info()["timeline"]. Read by benchmarks/setup.py.
        #: created, start (connect() called), hello_sent, cand_host / cand_srflx /
        #: cand_relay (first local candidate of that type trickled), cand_managed (host:
        #: listener candidate signalled), gathered (our end-of-candidates sent),
        #: remote_hello, remote_eoc (peer's hello / end-of-candidates applied),
        #: checks (connectivity checks begin: gathered and peer's hello in), nominated
        #: (ICE pair selected; host: first responder to win), dtls (handshake done),
        #: sctp (association up, reliable channel open), up (path returned).
        self.timeline: dict[str, float] = {"created": time.monotonic()}

    @property
    def impairment(self) -> Impairment:
        """Test / bench hook: the drops at our socket wrappers for this attempt and the path it
        builds (the path's blackhole() / drop_every() set the same object)."""
        return self._impairment

    def _mark(self, phase: str) -> None:
        self.timeline.setdefault(phase, time.monotonic())

    @property
    def path(self) -> Optional[UdpPath]:
        """The path this attempt built (None until DTLS is up and SCTP is starting)."""
        return self._path

    @property
    def local_ufrag(self) -> str:
        """Our ICE username fragment ("" before connect())."""
        return self._ufrag

    # -- signalling in -------------------------------------------------------------
    def on_signal(self, msg: dict) -> None:
        """Feed one signalling message received from the peer (never blocks)."""
        if self._closed:
            return
        self._inbox.put_nowait(msg)

    # -- connect ---------------------------------------------------------------------
    async def connect(self, timeout: Optional[float] = None) -> UdpPath:
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

    async def _connect(self) -> UdpPath:
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

    async def _connect_steps(self) -> UdpPath:
        from aiortc import RTCCertificate

        loop = asyncio.get_running_loop()
        cfg = self.config
        self._failure = loop.create_future()
        self._remote_hello = loop.create_future()
        is_client = self.role == "client"

        cert = RTCCertificate.generateCertificate()
        ufrag, pwd = new_credentials()
        self._ufrag = ufrag
        self._signal(signal.hello(role=self.role, ufrag=ufrag, pwd=pwd, dtls_role=self._dtls_role,
                                  fingerprint=_local_fingerprint(cert), sctp_port=cfg.sctp_port,
                                  max_message_size=cfg.max_message_size))
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
            assert self._listener is not None
            for ip, port in self._listener.advertised_addresses():
                self._signal(signal.managed_candidate(ip, port, managed_priority(1)))
                self._mark("cand_managed")
        if self._agent is not None:
            await self._until(self._agent.gather_candidates())
            self.turn_errors = list(self._agent.turn_errors)
        self._signal(signal.end_of_candidates())
        self._mark("gathered")
        if self._managed is None and not self.local_candidates:
            raise PathError("no local UDP candidate could be gathered"
                            + (f" (TURN: {'; '.join(self.turn_errors)})" if self.turn_errors else ""),
                            code="no-candidates")

        # Connectivity checks --------------------------------------------------
        hello: signal.Hello = await self._until(self._remote_hello)
        self._mark("checks")
        if self._managed is not None:
            self._managed.set_remote(hello.ufrag, hello.pwd)   # consent checks use the client's password
        if self._agent is not None:
            self._agent.remote_username = hello.ufrag
            self._agent.remote_password = hello.pwd
            # Regular nomination; see ice.py for why.
            self._agent.remote_is_lite = is_client
        if is_client:
            pipe = await self._client_ice()
        else:
            pipe = await self._host_ice()
        self._mark("nominated")

        # DTLS ---------------------------------------------------------------------
        from aiortc import RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport

        self._dtls = dtls = RTCDtlsTransport(pipe.for_dtls(), [cert])
        aiortc_compat.set_dtls_role(dtls, self._dtls_role)
        await self._until(dtls.start(RTCDtlsParameters(
            fingerprints=[RTCDtlsFingerprint(algorithm="sha-256", value=hello.fingerprint)])))
        if dtls.state != "connected":
            try:
                peer_cert = aiortc_compat.dtls_peer_certificate(dtls)
            except AttributeError:
                raise   # aiortc changed: the compat module must follow (see the canary test)
            except Exception:
                peer_cert = None
            if peer_cert is not None and _sha256_fingerprint(peer_cert) != hello.fingerprint:
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
        if self._managed is not None:   # authenticated DTLS may move the managed session (consent.py)
            self._managed.authenticated_rx = lambda: getattr(sctp, "sp_last_rx", None)
        reliable = RTCDataChannel(sctp, RTCDataChannelParameters(
            label="reliable", negotiated=True, id=RELIABLE_CHANNEL_ID, ordered=True))
        unreliable = RTCDataChannel(sctp, RTCDataChannelParameters(
            label="unreliable", negotiated=True, id=UNRELIABLE_CHANNEL_ID, ordered=False, maxRetransmits=0))
        # One ordered stream per further session channel (input, graphics, bulk; path.py)
        streams = {ch: RTCDataChannel(sctp, RTCDataChannelParameters(
            label=f"channel-{ch}", negotiated=True, id=STREAM_BASE + ch - 1, ordered=True))
            for ch in EXTRA_STREAMS}
        # ... and our sender serves those streams in the channels' priority order (input first)
        set_priority = getattr(sctp, "sp_set_stream_priority", None)   # absent on stock aiortc
        if set_priority is not None:
            for stream_id, prio in stream_priorities().items():
                set_priority(stream_id, prio)
        opened = loop.create_future()
        reliable.once("open", lambda: opened.done() or opened.set_result(True))
        reliable.once("close", lambda: opened.done() or opened.set_exception(
            PathError("SCTP association failed", code="sctp-failed")))
        # The association can fail after connect() stopped waiting on this future
        # (timeout, or the peer closed first); retrieve the exception so it is not
        # reported as "never retrieved". Whoever awaits it still gets it.
        opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Hand the stack over before SCTP starts: the path's message handlers must be
        # attached before the peer's first message can arrive.
        path = self._hand_over(pipe, reliable, unreliable, hello, streams)
        await self._until(sctp.start(RTCSctpCapabilities(maxMessageSize=hello.max_message_size), hello.sctp_port))
        await self._until(opened)
        self._mark("sctp")
        if is_client:
            info = path.info()
            self._signal(signal.selected(path.kind, info["local_candidate"], info["remote_candidate"]))
        path.start()
        self._mark("up")
        logger.info("udp[%s]: path up, kind=%s pair=%s", self.role, path.kind, path.info()["selected_pair"])
        return path

    def _hand_over(self, pipe: DatagramPipe, reliable: Any, unreliable: Any, hello: signal.Hello,
                   streams: dict | None = None) -> UdpPath:
        stack = UdpStack(channels=streams or {},
            role=self.role, config=self.config, pipe=pipe, dtls=self._dtls, dtls_role=self._dtls_role,
            sctp=self._sctp, reliable=reliable, unreliable=unreliable, impairment=self._impairment,
            agent=self._agent, managed=self._managed,
            listener_address=self._listener.address if self._listener is not None else None,
            timeline=self.timeline)
        path = UdpPath(stack, kind=self._kind(), peer_max_message_size=hello.max_message_size,
                       on_release=self._stop_signalling)
        self._path = path
        self._handed_over = True
        self._dtls = self._sctp = None
        return path

    async def _client_ice(self) -> DatagramPipe:
        agent = self._agent
        try:
            await self._until(agent.connect())
        except ConnectionError:
            raise PathError("ICE failed: no candidate pair worked", code="ice-failed") from None
        return DatagramPipe(agent.recv, agent.send, "controlling")

    async def _host_ice(self) -> DatagramPipe:
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
            if self._agent is not None:
                agent, self._agent = self._agent, None
                await agent.close()
            m = self._managed
            assert m is not None
            return DatagramPipe(m.recv, m.send, "controlled")
        if self._managed is not None:
            self._managed.close()
            self._managed = None
        return DatagramPipe(self._agent.recv, self._agent.send, "controlled")

    def _kind(self) -> str:
        if self._managed is not None and self._agent is None:
            return "udp-managed"
        pair = self._agent.selected_pair() if self._agent is not None else None
        return pair_kind(pair, remote_managed=self._remote_managed, remote_relay=self._remote_relay)

    # -- signalling helpers -------------------------------------------------------
    def _signal(self, msg: dict) -> None:
        try:
            _maybe_await_send(self._send_signal, msg, self._send_tasks)
        except Exception:
            logger.exception("udp[%s]: send_signal failed", self.role)

    def _send_abort(self, reason: str, detail: str = "") -> None:
        if self._aborted_by_peer:
            return
        self._signal(signal.abort(reason, detail))

    def _trickle(self, candidate: Any) -> None:
        d = candidate_to_dict(candidate)
        self._mark(f"cand_{d.get('type')}")
        self.local_candidates.append(d)
        self._signal(signal.candidate(d))

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
                m = signal.parse(msg)
                if isinstance(m, signal.Hello):
                    self._on_hello(m)
                elif isinstance(m, signal.CandidateMsg):
                    if eoc:
                        raise RemoteError("candidate after end-of-candidates")
                    await self._on_candidate(m)
                elif isinstance(m, signal.EndOfCandidates):
                    if not eoc:
                        eoc = True
                        self._mark("remote_eoc")
                        if self._agent is not None:
                            await self._agent.add_remote_candidate(None)
                elif isinstance(m, signal.Selected):
                    self._peer_selected = m.raw
                    if self._path is not None:
                        self._path.note_peer_selected(m.kind)
                elif isinstance(m, signal.Abort):
                    self._aborted_by_peer = True
                    if signal.abort_is_fingerprint(m):
                        self._fail(FingerprintMismatch("peer reports that our DTLS certificate "
                                                       "does not match the fingerprint it received"))
                    else:
                        self._fail(PathError(f"peer aborted the UDP upgrade: {m.reason} {m.detail}".strip(),
                                             code="peer-abort"))
                    if self._path is not None:
                        self._path.peer_aborted(m.reason)
            except RemoteError as exc:
                self._fail(exc)
            except ValueError as exc:
                self._fail(RemoteError(f"bad UDP signalling message: {exc}"))
            except Exception as exc:  # should-never-happen
                logger.exception("udp[%s]: [bug] signalling pump", self.role)
                self._fail(PathError(f"internal error: {exc!r}"))

    def _on_hello(self, hello: signal.Hello) -> None:
        if self._remote_hello is None or self._remote_hello.done():
            raise RemoteError("duplicate or early udp.hello")
        signal.check_hello(hello, our_role=self.role, our_dtls_role=self._dtls_role)
        self._mark("remote_hello")
        self._remote_hello.set_result(hello)

    async def _on_candidate(self, m: signal.CandidateMsg) -> None:
        c = m.candidate
        cfg = self.config
        self.remote_candidates.append(m.raw)
        if self.candidate_filter.admit(c.ip) is not None:   # loopback, link-local, too many... (candidate_policy.py)
            return
        use = signal.candidate_use(c, our_role=self.role, allow_managed=cfg.allow_managed,
                                   allow_direct=cfg.allow_direct, allow_turn=cfg.allow_turn,
                                   local_relay_only=self._agent is not None and self._agent.relay_only)
        if use is None:
            return
        if use == "managed":
            self._remote_managed.add(c.address)
            if self._agent is not None:
                self._agent.managed_remote.add(c.address)
        elif use == "relay":
            self._remote_relay.add(c.address)
        if self._agent is not None:
            await self._agent.add_remote_candidate(to_aioice_candidate(c))

    # -- closing ------------------------------------------------------------------
    async def _stop_signalling(self) -> None:
        """Stop the signalling pump; let queued sends (an abort) go, but never wait for them."""
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
            self._pump_task = None
        for task in list(self._send_tasks):
            if not task.done():
                task.cancel()

    async def _release(self) -> None:
        """Free what this attempt still holds. After the hand-over the path holds the
        stack: a path that never reached the caller (set-up failed after it was built)
        is closed here, which releases it."""
        if self._handed_over:
            if self._path is not None and not self._path.closed:
                await self._path.close("setup-failed")
            self._agent = self._managed = None
        else:
            sctp, dtls, agent, managed = self._sctp, self._dtls, self._agent, self._managed
            self._sctp = self._dtls = self._agent = self._managed = None
            if agent is not None and len(agent.turn_errors) > len(self.turn_errors):
                self.turn_errors = list(agent.turn_errors)
            await release_parts(role=self.role, close_timeout=self.config.close_timeout,
                                sctp=sctp, dtls=dtls, agent=agent, managed=managed)
        await self._stop_signalling()

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
