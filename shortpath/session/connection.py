"""The session protocol as one sans-I/O state machine.

``SessionConnection`` is everything a session decides, with no I/O and no
clock: every input carries ``now`` (seconds on one monotonic clock of the
caller's choosing), and the outputs are frames to send on named paths, one
timer deadline and events. session.py is its asyncio pump; tests drive it on a
fake clock (tests/unit/test_connection.py). The shape is aioquic's
QuicConnection.

Inputs                                        Outputs
------                                        -------
path_added(path_id, kind, now)                transmits(now, room) -> [Transmit(path_id, frame, ...)]
path_closed(path_id, reason, now)             next_event() -> Event | None (events.py)
path_heard(path_id, at)   (packet liveness)   get_timer() -> deadline | None
receive_frame(path_id, frame, now)
send(data, now, channel) / message_consumed(now, channel)
send_datagram(data, now, deadline) / send_event(data, now, redundancy)
transmit_refused(t)
send_signal(msg) / ping(now)
allow_upgrade(now) / upgrade_failed(attempt, reason, now)
close(reason, detail, now) / handle_timer(now)

What it holds
-------------
* The reliable channel (reliable.py): every message gets a sequence number and
  stays in the sender's window until the peer's cumulative ACK says the peer's
  *application* consumed it, so the window is also end-to-end flow control.
  The receiver acks after ``Timing.ack_every`` consumed messages or
  ``ack_delay`` after the first unacknowledged one (the ack clock).
* The path manager (shortpath/paths/manager.py), which decides where we send.
  Its actions are carried out here: a switch sends the ``switch`` marker and
  replays every unacknowledged message on the new path (the peer drops what it
  has by sequence number), a probe is a PING whose answer is bookkept (a probe
  unanswered for ``PROBE_LOSS_AFTER`` counts as lost), an upgrade attempt is a
  SIGNAL to the peer plus an UpgradeRequested event for the pump.
* One RTT estimator: every PONG gives a sample to the manager's smoothed RTT of
  the path it came back on (``rtt(path_id)``).
* One timer: the earliest of the ack clock, the manager's deadlines, probe
  expiry and the RTT ping (a PING on the active path every ``ping_interval``
  while the application is active; an idle session sends nothing here).

Rules
-----
* Frames are accepted on any path, known or not: sequence numbers make that
  safe, and a peer's first frames on a new UDP path can beat our own
  ``path_added``. Anything received on a path proves it alive.
* Signals (hello, upgrade, the UDP layer's messages) go on the relay while it
  is up, since it is the authenticated channel set up first; then on the
  active path.
* Losing the relay ends the session only if the relay was the active path.
  Otherwise the session goes on over UDP and the manager probes at once
  (``PEER_GONE`` reasons shorten its patience, see manager.py); a later
  failover with no relay left ends the session, saying ``host-gone`` /
  ``client-gone`` if the gateway said so, else ``all-paths-lost``.
* Resume (#15, after ``allow_resume(grace)``): instead of ending, a session
  that loses its last path is *detached*: no active path, messages the
  application sends wait in the window, and it ends with ``resume-timeout``
  after ``grace``. Every lost relay leg raises ``RelayLost`` (detached or
  not); the client's pump dials a new leg through a gateway. A new leg is just
  another path: ``path_added("relay-<n>", "tcp-relay")``; it becomes the relay
  (the manager still calls it ``relay``), an open older leg is abandoned, and
  if the session was detached or on the old leg it switches to the new one and
  replays what is unacknowledged (and re-sends its ACKs); on UDP it is only
  the new fallback. With no working UDP path the client then tries UDP afresh.
  The client (who can dial) also watches its active relay: nothing received
  for ``relay_silent_after`` after data or a ping, or ``relay_check_after``
  after a ping sent on a failover from UDP, and the leg is given up for a
  resume (a changed network leaves TCP silent, not reset). A slow relay is not
  a dead one: bytes heard on the leg (``path_heard``) count as an answer, a
  leg silent a third of that long gets a PING and is given up only once that
  PING has also gone ``RELAY_RTT_FACTOR`` x its RTT unanswered, and each leg
  given up doubles the next limit (``_relay_deadline``).
* A peer that breaks the protocol (malformed or out-of-place frame, an ACK for
  a message never sent, a reorder-buffer overrun) ends the session with
  ``protocol-error``.
* After the end, inputs are ignored; queued transmits (a CLOSE) still go out.
* Closing loses nothing sent before close(): the CLOSE frame waits until the
  peer's CACKs say its *session* received (not consumed) every message of every
  channel. On UDP each channel is its own SCTP stream and CLOSE rides stream 0
  (and the relay), so sent at once it could overtake a message still being
  retransmitted on another stream. Meanwhile the core is ``closing``: no new
  messages, but ACKs, switches and replays go on (a failover while closing
  replays on the relay first). After ``Timing.close_timeout`` it sends CLOSE
  anyway. CLOSE carries ``sent`` (channel -> messages sent); a receiver short
  of them ends at once all the same, with the shortfall in
  ``SessionEnded.undelivered`` and its detail, as does a sender whose close
  timed out. (A receiver-side wait alone would not do: the sender's pump tears
  down its paths after CLOSE, which stops any SCTP retransmission.)

Wire formats are wire/frames.py's, unchanged: SIGNAL ``{"type": "switch", "to":
kind, "reason": str, "next_seq": n, "replay_from": n}`` announces a switch;
``{"type": "upgrade", "attempt": n}`` (client -> host) starts attempt n.

Channels, lanes, stalls (#13)
----------------------------
* Reliable channels (channels.py): ``send(data, now, channel)`` on ``default``,
  ``input``, ``graphics`` or ``bulk``, each its own sequence space, window and
  ACK (CDATA/CACK frames), so one never waits for another. DATA is not framed
  at ``send()`` but at ``transmits(now, room)``: control frames first, then
  datagrams and events (the datagram lane always goes first; a datagram past its
  ``deadline`` is dropped there, never handed to a path), then DATA of the
  highest-priority channel with a message waiting, while the pump says the
  active path has ``room``. A switch replays, per channel, everything the peer's
  session has not received. On UDP each channel has an SCTP stream of its own
  (``Transmit.channel``).
* Redundant events (redundancy.py): ``send_event(data, now, redundancy=k, copies=c)``;
  each EVENTS frame repeats the last k events and goes out c times (default 2),
  ``EVENT_COPY_SPACING`` apart (the later copies when get_timer() says so); the
  receiver delivers each event once, in order (EventReceived).
* Stall detection (shortpath/paths/stall.py): after every ACK and transmit the
  core tells the manager when our oldest message the peer has not received went
  out, how many bytes the peer received, and the peer's own oldest age (from its
  CACK); the manager leaves a stalled UDP path for the relay, with a backoff.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .. import log
from ..config import Timing
from ..errors import LocalError, PathError, RemoteError, SessionClosed
from ..paths.actions import ClosePath, SendProbe, StartUpgrade, SwitchPath
from ..paths.manager import RELAY_ID, PathManager, PathTiming
from ..paths.path import RELAY
from ..wire import frames as fr
from ..wire.frames import Frame, FrameType
from . import events as ev
from . import channels as chn
from .redundancy import EventReceiver, EventSender

_log = log.get("session")

#: Largest application message on the reliable channel.
MAX_MESSAGE = 256 * 1024
#: Largest datagram (it must fit one UDP-path message without fragmentation games).
MAX_DATAGRAM = 1200
#: Relay end reasons (the gateway's GATEWAY_END) that say the peer's leg is gone.
PEER_GONE = ("host-gone", "client-gone")
#: a probe not answered within this long counts as lost in the path's loss figure
PROBE_LOSS_AFTER = 1.0
#: probe PING ids start here, apart from the RTT pings and ping() ids below it
PROBE_ID_BASE = 1 << 31
#: outstanding probes and ping() calls kept at most (bounded even if a path never answers)
MAX_OUTSTANDING = 256
#: send_event(): each EVENTS frame goes out this many times by default ...
EVENT_COPIES = 2
#: ... this far apart (s): past one lost packet's neighbours when loss comes in short bursts,
#: and well inside the 10 ms an interactive event may be late (at 100 events/s the next frame,
#: which repeats it too, is 10 ms away)
EVENT_COPY_SPACING = 0.002
#: most copies send_event() accepts
MAX_EVENT_COPIES = 4
#: client relay watch (#15): a relay silent for this share of its limit gets a PING (the probe) ...
RELAY_PROBE_SHARE = 1 / 3
#: ... and is given up only when that probe has also gone this many relay RTTs (the larger of the
#: smoothed RTT and the last sample) without anything heard, so a slow relay is never "silent"
RELAY_RTT_FACTOR = 4.0
#: each leg given up for silence doubles the next silence limit, up to this factor ...
RELAY_BACKOFF_CAP = 8
#: ... until a relay leg answers this long after the last give-up
RELAY_FORGIVE_AFTER = 30.0
#: the gateway's TCP acknowledging all we wrote (relay_acked) defers the verdict, for at most
#: this many times the limit (a hung gateway's kernel still acknowledges for a while)
RELAY_ACKED_CAP = 10


@dataclass(frozen=True, slots=True)
class Transmit:
    """One encoded frame for the pump to send."""
    #: path to send it on
    path_id: str
    #: the whole frame (header + payload), ready for Path.send_reliable / send_unreliable
    frame: bytes
    #: True: the path's reliable, ordered lane; False: best effort
    reliable: bool
    #: the frame's type, so the pump can count what the transport dropped
    frame_type: FrameType
    #: reliable channel of a DATA frame (channels.py); a UDP path sends each on its own SCTP stream
    channel: int = 0
    #: best effort only: drop it rather than send it after this time (the core's clock)
    deadline: float | None = None


class SessionConnection:
    """One side of a session. ``role`` is ``client`` (the initiator: it starts
    upgrade attempts) or ``host`` (answers them)."""

    def __init__(self, role: str, now: float, *, timing: Timing | None = None,
                 path_timing: PathTiming | None = None, session_id: str = "") -> None:
        if role not in ("client", "host"):
            raise LocalError(f"role must be 'client' or 'host', not {role!r}")
        self.role = role
        self.session_id = session_id
        self.timing = timing or Timing()
        self.manager = PathManager(now, initiator=role == "client", upgrade=False, timing=path_timing)
        #: the reliable channels, both directions (channels.py)
        self.channels = chn.Channels(self.timing.send_window_bytes, self.timing.ack_every,
                                     self.timing.ack_delay)
        self._events_out = EventSender(MAX_DATAGRAM)
        self._events_in = EventReceiver()
        self._dgram_lane: deque[tuple[float | None, bytes, FrameType]] = deque()
        #: later copies of EVENTS frames: (when due, frame, deadline), in due order
        self._event_copies: deque[tuple[float, bytes, float | None]] = deque()
        self._now = now                                # the latest ``now`` any input carried
        #: path id -> kind, for every open path we know of
        self.kinds: dict[str, str] = {}
        #: path we send on (None before the first path)
        self.active: str | None = None
        #: the relay's path id while it is up
        self.relay: str | None = None
        #: why the relay ended while the session went on over UDP (None while it is up)
        self.relay_lost_reason: str | None = None
        self.close_reason: str | None = None
        self.close_detail = ""
        #: close() called, CLOSE held until the peer received everything: (reason, detail, give up at)
        self._closing: tuple[str, str, float] | None = None
        #: path events, oldest first: {"t": now, "event", "transport", "reason"}
        self.history: list[dict] = []
        self.counters = {"messages_sent": 0, "messages_received": 0, "datagrams_sent": 0,
                         "datagrams_received": 0, "datagrams_dropped": 0, "datagrams_expired": 0,
                         "events_sent": 0, "events_received": 0}
        self._events: deque[ev.Event] = deque()
        self._out: list[Transmit] = []
        self._dgram_id = 0
        self._ping_id = 0                              # RTT pings and ping() calls
        self._pings: dict[int, float] = {}             # ping() id -> sent at
        self._next_ping_at: float | None = None
        self._activity_at_ping = -1
        self._probe_id = PROBE_ID_BASE
        self._probes: dict[int, tuple[str, float]] = {}   # probe id -> (path id, sent at)
        self._upgrades_answered: set[int] = set()
        #: resume (#15): seconds a session whose relay leg is gone waits for a new one
        #: (0 = no resume: losing the active relay ends the session at once)
        self.resume_grace = 0.0
        #: while detached (no path at all): when the core gives up waiting for a resume
        self.detached_until: float | None = None
        self._relay_legs = 0                           # relay legs seen (ids relay, relay-2, ...)
        #: client with resume: since when an answer on the active relay is awaited, and for how
        #: long it may be awaited before the leg counts as dead (relay_silent_after/check_after)
        self._relay_wait: float | None = None
        self._relay_wait_limit = 0.0
        #: when the probe PING of the current wait went out (None: not yet)
        self._relay_probe_at: float | None = None
        #: last time the gateway's TCP had acknowledged all we wrote during the current wait
        self._relay_acked_at: float | None = None
        self._relay_rtt_last: float | None = None      # the relay's last PING sample
        self._relay_strikes = 0                        # legs given up for silence, not yet forgiven
        self._relay_strike_at = 0.0

    # --- outputs ----------------------------------------------------------------
    def transmits(self, now: float | None = None, room=None) -> list[Transmit]:
        """Frames to send, in order; each call hands them over once. ``now``: when they
        leave (default: the latest input's time). ``room(path_id) -> bytes``: what the
        path takes now (None: no limit); DATA beyond it waits here, and the next call
        sends the highest-priority channel's first (channels.py). Order: the datagram
        lane (expired datagrams dropped, counted in ``datagrams_expired``), control
        frames, then DATA."""
        if now is not None and now > self._now:
            self._now = now
        now = self._now
        out: list[Transmit] = []
        copies = self._event_copies
        while copies and copies[0][0] <= now:
            _due, frame, deadline = copies.popleft()
            if self.active is not None and self.close_reason is None and (deadline is None or now <= deadline):
                self._dgram_lane.append(Transmit(self.active, frame, False, FrameType.EVENTS, 0, deadline))
        while self._dgram_lane:
            t = self._dgram_lane.popleft()
            if t.deadline is not None and now > t.deadline:
                self.counters["datagrams_expired"] += 1
                self.counters["datagrams_dropped"] += 1
                self.counters["datagrams_sent"] -= 1
                continue
            out.append(t)
        out += self._out
        self._out = []
        if self.close_reason is None and self.active is not None:
            self._flush_data(now, None if room is None else room(self.active))
            out += self._out
            self._out = []
        return out

    def _flush_data(self, now: float, budget: int | None) -> None:
        """Frame waiting DATA for the active path, highest priority first, within ``budget``."""
        path_id = self.active
        sent = False
        for ch, seq, msg in self.channels.next_frames(budget):
            self._out.append(Transmit(path_id, fr.encode_cdata(ch, seq, msg), True, FrameType.CDATA, ch))
            self.channels.sender(ch).mark_sent(seq, now)
            sent = True
        if sent:
            self.manager.sent(self._mid(path_id), now)
            self._relay_sent(path_id, now)
            self.manager.stall.undelivered_since(self.channels.oldest_unreceived_tx())

    @property
    def backlog(self) -> bool:
        """Reliable messages wait in the core for the active path to take them
        (``transmits(room=...)`` held them back)."""
        return self.channels.backlog

    def next_event(self) -> ev.Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When handle_timer() wants to run next (None: nothing scheduled)."""
        if self.close_reason is not None:
            return None
        deadlines = [d for d in (self.manager.get_timer(), self.channels.ack_timer(), self._next_ping_at,
                                 self._event_copies[0][0] if self._event_copies else None,
                                 self.detached_until, self._relay_deadline(),
                                 self._closing[2] if self._closing else None) if d is not None]
        if self._probes:
            deadlines.append(min(sent for _, sent in self._probes.values()) + PROBE_LOSS_AFTER)
        return min(deadlines) if deadlines else None

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    @property
    def closing(self) -> bool:
        """close() was called and its CLOSE waits for the peer to receive what we sent."""
        return self._closing is not None and self.close_reason is None

    def can_send(self, size: int, channel: int | str = 0) -> bool:
        """Does a message of ``size`` bytes fit ``channel``'s send window now?"""
        return self.channels.sender(chn.resolve(channel)).can_send(size)

    @property
    def unacked_bytes(self) -> int:
        """Bytes sent and not yet acknowledged by the peer's application (all channels)."""
        return self.channels.unacked_bytes

    @property
    def duplicates_dropped(self) -> int:
        return self.channels.duplicates

    def rtt(self, path_id: str | None) -> float | None:
        """Smoothed RTT of a path in seconds (None until a PING came back on it)."""
        st = self.manager.paths.get(self._mid(path_id)) if path_id is not None else None
        return None if st is None else st.quality.rtt

    def path_quality(self, path_id: str) -> dict | None:
        st = self.manager.paths.get(self._mid(path_id))
        if st is None:
            return None
        return {"state": st.state, "probes": st.probes_total,
                "probe_loss": round(st.probes_lost / st.probes_total, 3) if st.probes_total else 0.0,
                "recent_probe_loss": round(st.quality.loss, 3),
                "probe_rtt_ms": None if st.quality.rtt is None else round(st.quality.rtt * 1000, 3)}

    # --- paths ------------------------------------------------------------------
    def path_added(self, path_id: str, kind: str, now: float) -> None:
        """A path is ready to carry frames: the relay (kind ``tcp-relay``, id
        ``relay``; the session starts on it) or a UDP path from an attempt."""
        if self.close_reason is not None:
            self._events.append(ev.PathAbandoned(path_id, "session closed"))
            return
        if kind == RELAY:
            if path_id != RELAY_ID and not path_id.startswith(RELAY_ID + "-"):
                raise LocalError(f"a relay path must be called {RELAY_ID!r} or '{RELAY_ID}-<n>'")
            self._relay_legs += 1
            if self._relay_legs > 1:
                self._new_relay_leg(path_id, now)
                return
            self.kinds[path_id] = kind
            self.relay = path_id
            if self.active is None:
                self.active = path_id
                self._record(now, "start", kind, "session starts on the relay")
                self._next_ping_at = now
            return
        self.kinds[path_id] = kind
        self.manager.path_up(path_id, kind, now)
        self._apply(now)

    def path_closed(self, path_id: str, reason: str, now: float) -> None:
        """A path ended (its transport said so, or we closed it)."""
        if self.kinds.pop(path_id, None) is None or self.close_reason is not None:
            return
        if path_id == self.relay:
            self.relay = None
            if self.active == path_id or self.active is None:
                if self.resume_grace > 0:
                    self._detach(path_id, reason, now)
                    self._apply(now)
                    return
                self._finish(reason, "relay path closed", now)
                return
            self.relay_lost_reason = reason
            if self.resume_grace > 0:
                self._events.append(ev.RelayLost(path_id, reason, detached=False))
            active_kind = self.kinds.get(self.active, "?")
            self._record(now, "relay-lost", active_kind, f"{reason}; session continues on {active_kind}")
            # The active UDP path is all that is left: make sure the peer is still there.
            self.manager.relay_lost(now, peer_gone=reason in PEER_GONE)
        else:
            self.manager.path_down(path_id, reason, now)
        self._apply(now)

    def path_heard(self, path_id: str, at: float) -> None:
        """A packet from the peer arrived on ``path_id`` at ``at``, below the
        session's frames (e.g. an SCTP SACK through DTLS). On a lossy UDP path a
        retransmission timeout can hold our frames, probe answers included, in
        the path's one send queue while the path works; packets heard meanwhile
        defer a failover (PathManager.heard, up to ``stall_limit``). A
        blackholed path hears nothing and still fails over after ``dead_after``.
        Feed it just before handle_timer(), the only moment it matters. On the
        active relay leg (client with resume) bytes arriving after we began to
        wait for an answer prove the leg alive, even if no whole frame was
        processed yet: a slow relay is not a dead one."""
        self.manager.heard(path_id, at)
        if path_id == self.relay and self._relay_wait is not None and at >= self._relay_wait:
            self._relay_answered(at)

    # --- inbound ------------------------------------------------------------------
    def receive_frame(self, path_id: str, frame: Frame, now: float) -> None:
        if self.close_reason is not None:
            return
        if now > self._now:
            self._now = now
        self.manager.received(path_id, now)
        if path_id == self.relay:
            self._relay_answered(now)
        try:
            self._dispatch(path_id, frame, now)
        except RemoteError as exc:
            _log.warning(log.kv("protocol-error", sid=self.session_id, path=path_id, error=exc.code))
            self._finish("protocol-error", str(exc), now)
        self._apply(now)

    def _dispatch(self, path_id: str, frame: Frame, now: float) -> None:
        t = frame.type
        if t == FrameType.CDATA:
            self._on_data(*fr.decode_cdata(frame.payload), now)
        elif t == FrameType.CACK:
            ch, consumed, received, age_ms = fr.decode_cack(frame.payload)
            # the peer acks on the path it sends on: its age describes that path, one way
            self._on_ack(ch, consumed, received, now, peer_age=age_ms / 1000 if path_id == self.active else 0.0)
        elif t == FrameType.EVENTS:
            for data in self._events_in.on_frame(*fr.decode_events(frame.payload)):
                self.counters["events_received"] += 1
                self._events.append(ev.EventReceived(data))
        elif t == FrameType.DATA:            # revision 1: channel 0 (frames.py)
            self._on_data(chn.DEFAULT, *fr.decode_data(frame.payload), now)
        elif t == FrameType.ACK:             # revision 1: channel 0, received = consumed
            value = fr.decode_ack(frame.payload)
            self._on_ack(chn.DEFAULT, value, max(value, self.channels.sender(chn.DEFAULT).received), now)
        elif t == FrameType.DGRAM:
            _ident, _sent, data = fr.decode_dgram(frame.payload)
            self.counters["datagrams_received"] += 1
            self._events.append(ev.DatagramReceived(data))
        elif t == FrameType.PING:
            ident, sent = fr.decode_ping(frame.payload)
            self._queue(path_id, fr.encode_ping(FrameType.PONG, ident, sent), False, FrameType.PONG)
            # Our PONG is an outbound packet too: as good as a keepalive of our own for
            # the NAT bindings, so an idle session is kept alive by one side's probes.
            self.manager.sent(path_id, now, answer_expected=False)
        elif t == FrameType.PONG:
            self._on_pong(path_id, *fr.decode_ping(frame.payload), now)
        elif t == FrameType.SIGNAL:
            self._on_signal(fr.decode_json(frame.payload), now)
        elif t == FrameType.CLOSE:
            info = fr.decode_json(frame.payload)
            reason, detail = str(info.get("reason", "peer-closed")), str(info.get("detail", ""))
            missing = self._missing_at_close(info.get("sent"))
            if missing:
                detail = f"{detail}; {missing} message(s) the peer sent before closing never arrived".lstrip("; ")
            self._finish(reason, detail, now, undelivered=missing)
        else:
            raise RemoteError(f"{t.name} frame is not valid inside a session")

    def _on_pong(self, path_id: str, ident: int, sent_us: int, now: float) -> None:
        sample = now - sent_us / 1e6
        if not 0 <= sample < 60:        # not a PING of ours (or a clock we do not share)
            return
        probe = self._probes.pop(ident, None)
        if probe is not None:
            self.manager.probe_result(probe[0], sample, now)
        else:
            self.manager.rtt_sample(self._mid(path_id), sample)
        if path_id == self.relay:
            self._relay_rtt_last = sample
        if self._pings.pop(ident, None) is not None:
            self._events.append(ev.PingAnswered(ident, sample))

    def _on_signal(self, msg: dict, now: float) -> None:
        kind = msg.get("type")
        if kind == "switch":
            to, reason = str(msg.get("to")), str(msg.get("reason"))
            self._record(now, "peer-switch", to, reason)
            if to == RELAY and (reason.startswith("failover") or reason == "resume"):
                # A peer that resumed on a new relay leg lost every other path (#15): follow it
                # now rather than find the UDP path dead ourselves dead_after later.
                self.manager.peer_failover(reason, now)
        elif kind == "upgrade":
            attempt = msg.get("attempt")
            if self.role != "host" or not self.manager.upgrade_enabled or not isinstance(attempt, int) \
                    or isinstance(attempt, bool) or attempt in self._upgrades_answered:
                return
            self._upgrades_answered.add(attempt)
            self._events.append(ev.UpgradeRequested(attempt, initiator=False))
        else:
            self._events.append(ev.SignalReceived(msg))

    # --- reliable channel -----------------------------------------------------------
    def send(self, data: bytes, now: float, channel: int | str = 0) -> str | None:
        """Queue one message on a reliable ``channel`` (channels.py: an id or ``default``,
        ``input``, ``graphics``, ``bulk``); returns the path it will go on (None while
        detached: it waits in the window and a resume replays it). It is framed at the
        next transmits(), in priority order. Check can_send() first: a full window is a
        LocalError here."""
        ch = chn.resolve(channel)
        if len(data) > MAX_MESSAGE:
            raise LocalError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        self._check_open()
        if self.active is None and self.detached_until is None:
            raise PathError("no path to send on")
        sender = self.channels.sender(ch)
        if not sender.can_send(len(data)):
            raise LocalError(f"send window of channel {chn.name(ch)} is full (wait for SendWindowOpened)")
        sender.push(bytes(data))
        self.counters["messages_sent"] += 1
        if now > self._now:
            self._now = now
        return self.active

    def message_consumed(self, now: float, channel: int = 0) -> None:
        """The application took one received message of ``channel``: it counts towards its ACK."""
        self.counters["messages_received"] += 1
        if self.close_reason is None and self.channels.receiver(channel).on_consumed(now):
            self._send_ack(channel)

    def _send_ack(self, channel: int, path_id: str | None = None) -> None:
        consumed, received = self.channels.receiver(channel).ack()
        path_id = path_id or self.active
        if path_id is not None:
            since = self.channels.oldest_unreceived_tx()
            # less what our path still holds unsent (stall.py: not the path's delay)
            age_ms = 0 if since is None else max(0.0, self._now - since - self.manager.stall.grace()) * 1000
            self._queue(path_id, fr.encode_cack(channel, consumed, received, age_ms), True, FrameType.CACK)

    def _queue_acks(self, path_id: str) -> None:
        """Every channel's receive state again, on ``path_id`` (a new leg may be all the peer has)."""
        for ch in self.channels.receivers:
            self._send_ack(ch, path_id)

    def _on_data(self, ch: int, seq: int, msg: bytes, now: float) -> None:
        for data in self.channels.receiver(ch).on_data(seq, msg, now):
            self._events.append(ev.DataReceived(data, ch))

    def _on_ack(self, ch: int, consumed: int, received: int, now: float, peer_age: float = 0.0) -> None:
        if ch not in self.channels.senders:
            raise RemoteError(f"ACK for unknown reliable channel {ch}")
        sender = self.channels.sender(ch)
        released, delivered = sender.on_ack(consumed, received)
        if released:
            self._events.append(ev.SendWindowOpened(released, ch))
        if self._closing is not None and self._unreceived() == 0:
            self._send_close(now)
            return
        stall = self.manager.stall
        stall.undelivered_since(self.channels.oldest_unreceived_tx())
        if self.active is not None:
            if delivered:
                stall.delivered(self.active, delivered, self.channels.inflight_bytes, now,
                                relay=self.active == self.relay)
            if peer_age > 0:
                stall.peer_report(peer_age, now)

    # --- datagrams, signals, pings ---------------------------------------------------
    def send_datagram(self, data: bytes, now: float, deadline: float | None = None) -> bool:
        """Queue one best-effort datagram on the active path, on the datagram lane (the
        first thing transmits() hands out); False (counted as dropped) when there is no
        path or the session is over. ``deadline`` (the core's clock): if it has passed
        when the frame would be handed to the path, the datagram is dropped instead
        (``datagrams_expired``); the path gets it too, to drop it before it is sent."""
        if len(data) > MAX_DATAGRAM:
            raise LocalError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
        if self.close_reason is not None or self._closing is not None or self.active is None:
            self.counters["datagrams_dropped"] += 1
            return False
        if now > self._now:
            self._now = now
        self._dgram_id += 1
        self._dgram_lane.append(Transmit(self.active, fr.encode_dgram(self._dgram_id, int(now * 1e6), bytes(data)),
                                         False, FrameType.DGRAM, 0, deadline))
        self.counters["datagrams_sent"] += 1
        return True

    def send_event(self, data: bytes, now: float, redundancy: int = 2, deadline: float | None = None,
                   copies: int = EVENT_COPIES, spacing: float = EVENT_COPY_SPACING) -> bool:
        """Queue one small event (up to redundancy.MAX_EVENT bytes) on the datagram lane,
        repeated in the next ``redundancy`` EVENTS frames (redundancy.py): the peer gets
        each event once, in order, as soon as one copy arrives, with no retransmission
        wait. The frame itself goes out ``copies`` times, ``spacing`` seconds apart (the
        later copies when the timer says so): a frame lost on its own is made good a few
        ms later, not one event interval later, and a lone last event (which no later frame
        repeats) is not lost with one packet. False when there is no path or the session
        is over (the event still takes its number, so the peer counts it as lost)."""
        if not isinstance(copies, int) or isinstance(copies, bool) or not 1 <= copies <= MAX_EVENT_COPIES:
            raise LocalError(f"copies must be an integer 1..{MAX_EVENT_COPIES}, not {copies!r}")
        if not 0 <= spacing <= 0.1:
            raise LocalError(f"spacing must be 0..0.1 s, not {spacing!r}")
        newest, carried = self._events_out.push(data, redundancy)
        if self.close_reason is not None or self._closing is not None or self.active is None:
            return False
        if now > self._now:
            self._now = now
        frame = fr.encode_events(newest, carried)
        self._dgram_lane.append(Transmit(self.active, frame, False, FrameType.EVENTS, 0, deadline))
        for i in range(1, copies):
            self._event_copies.append((now + i * spacing, frame, deadline))
        if copies > 1 and len(self._event_copies) > 1 and self._event_copies[-2][0] > self._event_copies[-1][0]:
            self._event_copies = deque(sorted(self._event_copies, key=lambda c: c[0]))
        self.counters["events_sent"] += 1
        return True

    @property
    def event_stats(self):
        """The event lane's receive figures (redundancy.EventStats: delivered, lost, duplicates, recovered)."""
        return self._events_in.stats

    def transmit_refused(self, t: Transmit) -> None:
        """The path would not take ``t`` (closed, or a best-effort send with its buffer
        full). A reliable frame needs nothing: DATA stays in the window and a switch
        replays it. A refused DGRAM counts as dropped; a refused probe never left, so
        it does not count as lost in the path's probe-loss figure."""
        if t.frame_type == FrameType.DGRAM:
            self.counters["datagrams_sent"] -= 1
            self.counters["datagrams_dropped"] += 1
        elif t.frame_type == FrameType.PING:
            ident, _sent = fr.decode_ping(t.frame[fr.HEADER_SIZE:])
            self._probes.pop(ident, None)

    def send_signal(self, msg: dict) -> None:
        """Queue a SIGNAL frame: on the relay while it is up, else on the active path."""
        path_id = self.relay if self.relay is not None else self.active
        if path_id is None or self.close_reason is not None:
            raise PathError("no path to signal on")
        self._queue(path_id, fr.encode_json(FrameType.SIGNAL, msg), True, FrameType.SIGNAL)

    def ping(self, now: float) -> int:
        """Send a PING on the active path; PingAnswered(id, rtt) follows if it comes back."""
        self._check_open()
        if self.active is None:
            raise PathError("no path to ping on")
        self._ping_id += 1
        self._pings[self._ping_id] = now
        if len(self._pings) > MAX_OUTSTANDING:
            self._pings.pop(next(iter(self._pings)))
        self._queue(self.active, fr.encode_ping(FrameType.PING, self._ping_id, int(now * 1e6)), False,
                    FrameType.PING)
        return self._ping_id

    # --- upgrades -------------------------------------------------------------------------
    def allow_upgrade(self, now: float) -> None:
        """The session is confirmed end to end and UDP is allowed: the client starts
        attempts (at the next timer), the host answers them."""
        self.manager.allow_upgrade(now)

    def upgrade_failed(self, attempt: int, reason: str, now: float) -> None:
        if self.role == "client" and self.close_reason is None:
            self.manager.upgrade_failed(attempt, reason, now)
            self._apply(now)

    # --- time -------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        if self.close_reason is not None:
            return
        if self._closing is not None and now >= self._closing[2]:
            self._send_close(now)
            return
        if self.detached_until is not None and now >= self.detached_until:
            self._finish("resume-timeout", f"relay lost ({self.relay_lost_reason}) and no new leg within "
                         f"{self.resume_grace:g}s", now)
            return
        self._relay_check(now)
        if now > self._now:
            self._now = now
        for ch, rx in self.channels.receivers.items():
            if rx.due(now):
                self._send_ack(ch)
        for ident, (pid, sent) in list(self._probes.items()):
            if now >= sent + PROBE_LOSS_AFTER:      # the very deadline get_timer() gave
                del self._probes[ident]
                self.manager.probe_result(pid, None, now, sent_at=sent)
        self.manager.handle_timer(now)
        self._apply(now)
        if self._next_ping_at is not None and now >= self._next_ping_at and self.close_reason is None:
            c = self.counters
            busy = c["messages_sent"] + c["messages_received"] + c["datagrams_sent"]
            if self.active is not None and busy != self._activity_at_ping:
                self._activity_at_ping = busy
                self._ping_id += 1
                self._queue(self.active, fr.encode_ping(FrameType.PING, self._ping_id, int(now * 1e6)),
                            False, FrameType.PING)
                self._relay_sent(self.active, now)
            self._next_ping_at = now + self.timing.ping_interval

    # --- closing --------------------------------------------------------------------------
    def close(self, reason: str, detail: str, now: float) -> None:
        """Stop taking messages; once the peer's session has received every message
        sent before (or after ``Timing.close_timeout``), tell it why on every open path
        we use (the first CLOSE to arrive wins) and end. See "Rules": closing."""
        if self.close_reason is not None or self._closing is not None:
            return
        self._closing = (reason, detail, now + self.timing.close_timeout)
        if self._unreceived() == 0:
            self._send_close(now)
        else:
            self._record(now, "closing", self.kinds.get(self.active, "-") if self.active else "-",
                         f"{reason}; CLOSE waits for the peer to receive {self._unreceived()} message(s)")

    def _unreceived(self) -> int:
        """Messages we sent that the peer's session has not received (all channels)."""
        return sum(s.next_seq - s.received for s in self.channels.senders.values())

    def _send_close(self, now: float) -> None:
        """The CLOSE frame, with our ``sent`` marks, then the end (closing)."""
        reason, detail, _ = self._closing
        missing = self._unreceived()
        sent = {str(ch): s.next_seq for ch, s in self.channels.senders.items() if s.next_seq}
        msg = fr.encode_json(FrameType.CLOSE, {"reason": reason, "detail": detail, "sent": sent})
        for path_id in dict.fromkeys(p for p in (self.active, self.relay) if p in self.kinds):
            self._queue(path_id, msg, True, FrameType.CLOSE)
        if missing:
            detail = f"{detail}; close timed out after {self.timing.close_timeout:g}s with {missing} " \
                     f"message(s) not received by the peer".lstrip("; ")
        self._finish(reason, detail, now, local=True)

    def _missing_at_close(self, sent) -> int:
        """Messages a peer's CLOSE says it sent (``sent``: channel -> count; absent from
        older peers) that our session has not received."""
        if sent is None:
            return 0
        if not isinstance(sent, dict):
            raise RemoteError("CLOSE 'sent' must be an object of channel -> count")
        missing = 0
        for key, n in sent.items():
            ch = int(key) if isinstance(key, str) and key.isdigit() else -1
            if ch not in self.channels.receivers or not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise RemoteError(f"CLOSE 'sent' has a bad entry {key!r}: {n!r}")
            missing += max(0, n - self.channels.receiver(ch).received)
        return missing

    def _check_open(self) -> None:
        if self.close_reason is not None:
            raise SessionClosed(self.close_reason, self.close_detail)
        if self._closing is not None:
            raise SessionClosed(self._closing[0], self._closing[1])

    def _finish(self, reason: str, detail: str, now: float, local: bool = False, undelivered: int = 0) -> None:
        if self.close_reason is not None:
            return
        if self._closing is not None:       # ended while closing: ours that never got there count too
            undelivered += self._unreceived()
        self.close_reason = reason
        self.close_detail = detail
        self._record(now, "end", self.kinds.get(self.active, "-") if self.active else "-", reason)
        self._events.append(ev.SessionEnded(reason, detail, local, undelivered))

    # --- resume (#15): a new relay leg is just another path ------------------------------------
    def allow_resume(self, grace: float) -> None:
        """From now on a lost relay leg does not end the session: with no other path
        the session waits ``grace`` seconds (detached) for a new leg, and a
        RelayLost event asks the pump for one (the client dials; the host waits)."""
        if not grace >= 0:
            raise LocalError("resume grace must be >= 0 seconds")
        self.resume_grace = float(grace)

    def _mid(self, path_id: str | None) -> str | None:
        """The path manager's name for a path: it knows the relay, whichever leg it is, as ``relay``."""
        return RELAY_ID if path_id is not None and path_id == self.relay else path_id

    def _relay_watched(self) -> bool:
        """Only the client watches its relay leg for silence: it is the side that can dial a new one."""
        return self.role == "client" and self.resume_grace > 0 and self.relay is not None \
            and self.active == self.relay

    def _relay_sent(self, path_id: str | None, now: float) -> None:
        """Something that calls for an answer went out on ``path_id``."""
        if path_id == self.relay and self._relay_wait is None and self._relay_watched():
            self._relay_wait = now
            self._relay_probe_at = self._relay_acked_at = None
            self._relay_wait_limit = self.timing.relay_silent_after * \
                min(RELAY_BACKOFF_CAP, 2 ** self._relay_strikes)

    def _relay_answered(self, now: float) -> None:
        """Something (a frame, or bytes below the frames) arrived on the relay leg."""
        self._relay_wait = None
        self._relay_probe_at = self._relay_acked_at = None
        if self._relay_strikes and now >= self._relay_strike_at + RELAY_FORGIVE_AFTER:
            self._relay_strikes = 0

    def _relay_deadline(self) -> float | None:
        """The watch of the active relay leg (client with resume). A wait for an answer
        began at ``w`` (data or a PING sent, nothing heard since); its limit is
        ``relay_silent_after`` (doubled per leg already given up, RELAY_BACKOFF_CAP) or
        ``relay_check_after`` after a failover, which sends its PING at once. Silent for
        RELAY_PROBE_SHARE of the limit: one PING goes out (the probe, at ``p``). The leg
        is dead at ``max(w + limit, p + RELAY_RTT_FACTOR x relay RTT)`` with still nothing
        heard: a relay whose answers are merely late is kept."""
        if self._relay_wait is None or not self._relay_watched():
            return None
        if self._relay_probe_at is None:
            return self._relay_wait + self._relay_wait_limit * RELAY_PROBE_SHARE
        rtt = max(self.rtt(self.relay) or 0.0, self._relay_rtt_last or 0.0)
        dead = max(self._relay_wait + self._relay_wait_limit, self._relay_probe_at + RELAY_RTT_FACTOR * rtt)
        if self._relay_acked_at is not None:     # the network to the gateway works: a busy peer
            dead = max(dead, min(self._relay_acked_at + self._relay_wait_limit,
                                 self._relay_wait + RELAY_ACKED_CAP * self._relay_wait_limit))
        return dead

    def relay_acked(self, at: float) -> None:
        """The gateway's TCP had acknowledged every byte we wrote on the relay leg at
        ``at`` (the pump reads the socket just before handle_timer()). The network to
        the gateway works, so a silent peer is a busy one (a dead peer is the gateway's to
        report, GATEWAY_END): the client's relay watch waits on, up to RELAY_ACKED_CAP x
        its limit. A changed network acknowledges nothing."""
        if self._relay_wait is not None and at >= self._relay_wait and self._relay_watched():
            self._relay_acked_at = max(at, self._relay_acked_at or at)

    def _relay_check(self, now: float) -> None:
        deadline = self._relay_deadline()
        if deadline is None or now < deadline:
            return
        if self._relay_probe_at is None:       # silent a while: ask the peer directly
            self._relay_probe_at = now
            self._ping_id += 1
            self._queue(self.relay, fr.encode_ping(FrameType.PING, self._ping_id, int(now * 1e6)),
                        False, FrameType.PING)
            return
        self._relay_silent(now)

    def _relay_silent(self, now: float) -> None:
        """The active relay leg stopped answering: give it up and resume on a new one."""
        pid = self.relay
        why = f"relay silent {now - self._relay_wait:.2f}s"
        self._relay_wait = None
        self._relay_probe_at = self._relay_acked_at = None
        self._relay_strikes += 1
        self._relay_strike_at = now
        self.kinds.pop(pid, None)
        self._events.append(ev.PathAbandoned(pid, why))
        self._detach(pid, why, now)

    def _detach(self, path_id: str | None, reason: str, now: float) -> None:
        """No path left: keep every unacknowledged message and wait for a new relay leg."""
        self.relay = None
        self.active = None
        self.relay_lost_reason = reason
        self.detached_until = now + self.resume_grace
        self._record(now, "detached", RELAY, f"{reason}; waiting up to {self.resume_grace:g}s for a resume")
        self._events.append(ev.RelayLost(path_id or "-", reason, detached=True, resume_by=self.detached_until))
        self.manager.relay_lost(now)

    def _new_relay_leg(self, path_id: str, now: float) -> None:
        """A relay leg after the first: a resume (the session was detached or on the
        relay being replaced) or a relay replaced while the session runs on UDP."""
        if path_id in self.kinds:
            raise LocalError(f"path {path_id!r} was already added")
        old = self.relay
        self.kinds[path_id] = RELAY
        self.relay = path_id
        self._relay_wait = None
        self._relay_probe_at = self._relay_acked_at = None
        gone = self.relay_lost_reason
        self.relay_lost_reason = None
        if old is not None:            # still open but given up on (e.g. silent after an address change)
            self.kinds.pop(old, None)
            self._events.append(ev.PathAbandoned(old, "replaced by a new relay leg"))
        self.manager.relay_back(now)
        if self.active is None or self.active == old:
            self.counters["resumes"] = self.counters.get("resumes", 0) + 1
            self._record(now, "resume", RELAY, f"new relay leg {path_id} (was: {gone or 'replaced'})")
            self._switch(path_id, "resume", now)
            # our receive state may never have reached the peer: tell it again on the new leg
            self._queue_acks(path_id)
        else:
            self.counters["relay_replacements"] = self.counters.get("relay_replacements", 0) + 1
            self._record(now, "relay-replaced", RELAY, f"new relay leg {path_id} (was: {gone or '-'}); "
                         f"session stays on {self.kinds.get(self.active, '?')}")
        self._apply(now)

    # --- carrying out the path manager's actions ----------------------------------------------
    def _apply(self, now: float) -> None:
        for action in self.manager.actions():
            if self.close_reason is not None:
                return
            if isinstance(action, SwitchPath):
                self._on_switch(action, now)
            elif isinstance(action, SendProbe):
                self._probe(action.path_id, now)
            elif isinstance(action, StartUpgrade):
                try:
                    self.send_signal({"type": "upgrade", "attempt": action.attempt})
                except PathError as exc:
                    _log.warning(log.kv("upgrade-not-signalled", sid=self.session_id, why=exc.message))
                    self.manager.upgrade_failed(action.attempt, "no path to signal on", now)
                    continue
                self._events.append(ev.UpgradeRequested(action.attempt, initiator=True))
            elif isinstance(action, ClosePath):
                self.kinds.pop(action.path_id, None)
                self._events.append(ev.PathAbandoned(action.path_id, action.reason))

    def _on_switch(self, action: SwitchPath, now: float) -> None:
        if action.to == RELAY_ID:
            if self.relay is not None:
                self._switch(self.relay, action.reason, now)
                if action.reason.startswith("failover") and self._relay_watched():
                    # Is the relay alive at all? (After a network change nothing is.) Ask first,
                    # ahead of the replay, and give it relay_check_after to answer.
                    self._ping_id += 1
                    self._queue(self.relay, fr.encode_ping(FrameType.PING, self._ping_id, int(now * 1e6)),
                                False, FrameType.PING)
                    self._relay_wait = now
                    self._relay_probe_at, self._relay_acked_at = now, None
                    self._relay_wait_limit = self.timing.relay_check_after
            elif self.resume_grace > 0 and not (self.role == "client" and self.relay_lost_reason == "host-gone"):
                # No relay and now no UDP either: wait (detached) for a resume on a new leg.
                # The host waits even when told "client-gone": a client that changed networks
                # looks just like that. A client told "host-gone" takes the silent UDP path as
                # proof (hosts do not roam): that ends the session below, as without resume.
                self._detach(self.active, f"{self.relay_lost_reason or 'relay lost'}, then the "
                             f"{self.kinds.get(self.active, 'UDP')} path failed: {action.reason}", now)
                return
            elif self.relay_lost_reason in PEER_GONE:
                # The gateway told us the peer's leg ended, and now the UDP path is silent
                # too: the peer is gone, say so rather than a generic "all paths lost".
                self._finish(self.relay_lost_reason, f"relay ended ({self.relay_lost_reason}), then the "
                             f"{self.kinds.get(self.active, 'UDP')} path failed: {action.reason}", now)
                return
            else:
                self._finish("all-paths-lost", action.reason, now)
                return
        elif action.to not in self.kinds:
            _log.error(log.kv("BUG switch to unknown path", sid=self.session_id, path=action.to))
            return
        else:
            self._switch(action.to, action.reason, now)
        _log.info(log.kv("path-change", sid=self.session_id, to=self.kinds.get(self.active),
                         reason=action.reason))

    def _switch(self, path_id: str, reason: str, now: float) -> None:
        """Send on ``path_id`` from now on; replay what the peer has not acknowledged."""
        if path_id == self.active:
            return
        old = self.active
        self.active = path_id
        self.detached_until = None
        kind = self.kinds[path_id]
        # Every channel sends again, on the new path, what the peer's session has not
        # received (channels.py); the DATA follows this marker at the next transmits().
        replay = self.channels.replay()
        d = self.channels.sender(chn.DEFAULT)
        self._queue(path_id, fr.encode_json(FrameType.SIGNAL, {
            "type": "switch", "to": kind, "reason": reason, "next_seq": d.next_seq,
            "replay_from": replay[chn.DEFAULT][0],
            "channels": {str(ch): [self.channels.sender(ch).next_seq, first] for ch, (first, _n) in replay.items()}}),
            True, FrameType.SIGNAL)
        replayed = sum(n for _first, n in replay.values())
        self.manager.stall.undelivered_since(None)
        old_kind = self.kinds.get(old, RELAY if old == RELAY_ID else "-") if old else "-"
        self._record(now, "switch", kind, f"{reason} (from {old_kind}, replayed {replayed})")
        self._events.append(ev.PathSwitched(path_id, kind, old, reason, replayed))

    def _probe(self, path_id: str, now: float) -> None:
        if path_id not in self.kinds:
            return
        self._probe_id += 1
        self._queue(path_id, fr.encode_ping(FrameType.PING, self._probe_id, int(now * 1e6)), False,
                    FrameType.PING)
        self._probes[self._probe_id] = (path_id, now)
        if len(self._probes) > MAX_OUTSTANDING:
            self._probes.pop(next(iter(self._probes)))
        self.manager.sent(path_id, now)

    def _queue(self, path_id: str, frame: bytes, reliable: bool, frame_type: FrameType) -> None:
        """A control frame (everything but DATA and the datagram lane) for ``path_id``."""
        self._out.append(Transmit(path_id, frame, reliable, frame_type))

    def _record(self, now: float, event: str, transport: str, reason: str) -> None:
        self.history.append({"t": now, "event": event, "transport": transport, "reason": reason})
        _log.info(log.kv("path", sid=self.session_id, event=event, transport=transport, reason=reason))
