"""Resume timelines in the session core (#15) on a fake clock, and the resume ticket checks.

The scripted link is corepair.py's Pair; a resume is a new relay leg (``relay-<n>``)
handed to both cores, as the client's dialer and the host's dial order do in session.py."""

import time

import pytest

from shortpath.auth import resume
from shortpath.auth.tokens import ReplayCache, TokenSigner
from shortpath.errors import AuthError, BadSignature, TicketReplayed, TokenExpired, WrongClient
from shortpath.paths.manager import RELAY_ID
from shortpath.session import events as ev
from tests.unit.corepair import SIDES, FakePath, Pair, msg, on_udp, streaming_on_udp

GRACE = 30.0


def resumable(**kw) -> Pair:
    p = Pair(**kw)
    for core in p.cores.values():
        core.allow_resume(GRACE)
    return p


def new_leg(p: Pair, path_id: str, delay: float = 0.02, host_after: float = 0.05) -> None:
    """A new relay leg: the client has it first (it dialled), the host a moment later."""
    p.paths[path_id] = FakePath(path_id, "tcp-relay", delay)
    p.cores["client"].path_added(path_id, "tcp-relay", p.now)
    p.at(p.now + host_after, lambda: p.cores["host"].path_added(path_id, "tcp-relay", p.now))


def history(p: Pair, side: str) -> list[str]:
    return [h["event"] for h in p.cores[side].history]


def test_relay_only_session_survives_a_gateway_restart_nothing_lost_or_duplicated():
    p = resumable()
    p.stream("client", 400, 0.005)
    p.stream("host", 400, 0.005)
    p.run(0.5)
    p.path_ends(RELAY_ID, "gateway-shutdown")
    p.pump()
    t_lost = p.now
    for side in SIDES:
        t, lost = p.first(side, ev.RelayLost)
        assert lost.detached and lost.resume_by == pytest.approx(t_lost + GRACE)
        assert p.cores[side].active is None and not p.cores[side].closed
    p.run(1.5)                      # both applications keep sending while detached: into the window
    assert all(not p.cores[s].closed for s in SIDES)
    new_leg(p, "relay-2")
    p.run(4.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 400 and len(p.sent["host"]) == 400
    for side in SIDES:
        core = p.cores[side]
        assert core.active == "relay-2" and core.relay == "relay-2" and core.counters["resumes"] == 1
        h = history(p, side)
        assert h.index("detached") < h.index("resume") < len(h) - 1 and h[h.index("resume") + 1] == "switch"
    assert p.cores["client"].rtt("relay-2") is not None      # the RTT estimator follows the new leg


def test_detached_session_ends_with_a_clear_reason_after_the_grace_period():
    p = resumable()
    p.stream("client", 50, 0.01)
    p.run(0.3)
    p.close_path(RELAY_ID, "client", "reset")        # the client vanishes; the host hears client-gone
    p.run(0.5)
    t_host_lost = p.first("host", ev.RelayLost)[0]
    p.run(t_host_lost + GRACE - 0.01)
    assert not p.cores["host"].closed
    p.run(t_host_lost + GRACE + 1)
    t_end, end = p.first("host", ev.SessionEnded)
    assert end.reason == "resume-timeout" and "client-gone" in end.detail
    assert t_end == pytest.approx(t_host_lost + GRACE)


def test_without_resume_a_lost_relay_still_ends_the_session_at_once():
    p = Pair()
    p.run(0.1)
    p.path_ends(RELAY_ID, "gateway-shutdown")
    assert all(p.cores[s].closed for s in SIDES)
    assert not any(isinstance(e, ev.RelayLost) for s in SIDES for _, e in p.events[s])


def test_no_upgrade_while_detached_and_a_fresh_one_right_after_the_resume():
    p = resumable(upgrade_ok=False)              # every attempt fails: stays on the relay
    p.start_upgrades()
    p.run(0.5)
    p.path_ends(RELAY_ID, "gateway-shutdown")
    t_lost = p.now
    p.run(t_lost + 5.0)
    asked = [t for t, e in p.events["client"] if isinstance(e, ev.UpgradeRequested)]
    assert asked and not [t for t in asked if t_lost < t <= t_lost + 5.0]
    p.upgrade_ok = True
    new_leg(p, "relay-2")
    p.run(p.now + 3.0)
    assert [t for t in (t for t, e in p.events["client"] if isinstance(e, ev.UpgradeRequested)) if t > t_lost]
    assert on_udp(p, "client") and on_udp(p, "host")


def test_relay_replaced_in_the_background_while_on_udp_then_used_for_a_failover():
    p = streaming_on_udp(resumable(), SIDES, 2000)
    assert on_udp(p, "host")
    p.path_ends(RELAY_ID, "gateway-shutdown")
    p.pump()
    for side in SIDES:
        lost = p.first(side, ev.RelayLost)[1]
        assert lost is not None and not lost.detached
    p.run(p.now + 0.5)
    new_leg(p, "relay-2")
    p.run(p.now + 0.3)
    for side in SIDES:
        core = p.cores[side]
        assert on_udp(p, side) and core.relay == "relay-2" and core.counters["relay_replacements"] == 1
        assert "relay-replaced" in history(p, side)
    p.set_dark("udp-1", True)                    # the UDP path dies: the replacement leg takes over
    t_dark = p.now
    p.run(t_dark + 1.0)
    for side in SIDES:
        assert p.cores[side].active == "relay-2"
    t_sw = [t for t, e in p.events["client"] if isinstance(e, ev.PathSwitched) and e.path_id == "relay-2"]
    assert t_sw and t_sw[0] - t_dark <= 0.61
    p.run(p.now + 15.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 2000


def test_address_change_every_path_dies_resume_on_the_relay_then_back_to_udp():
    """The client moves: its UDP path and its relay leg die together. The gateway tells the host
    its peer's leg went (client-gone); the client, alone on a silent path that may only be
    hiccuping, detaches after alone_dead_after (unless a background resume brought a new relay
    leg first), and a fresh UDP attempt after the resume brings it back to UDP."""
    p = streaming_on_udp(resumable(), SIDES, 3000)
    p.set_dark("udp-1", True)
    p.close_path(RELAY_ID, "client", "connection reset")
    t_move = p.now
    p.run(t_move + 10.0)
    t_det, lost = p.first("client", ev.RelayLost, lambda e: e.detached)
    assert lost is not None and "udp-managed path failed" in lost.reason
    assert t_det - t_move == pytest.approx(p.cores["client"].manager.t.alone_dead_after, abs=0.01)
    new_leg(p, "relay-2")                      # the client's dialer delivers a new leg
    p.paths["udp-1"].open = {s: False for s in SIDES}   # the old UDP path is gone for good
    for side in SIDES:
        p.cores[side].path_closed("udp-1", "ice failed", p.now)
    p.run(p.now + 8.0)
    for side in SIDES:
        assert on_udp(p, side) and p.cores[side].active != "udp-1", p.cores[side].active
        assert p.cores[side].counters["resumes"] == 1
    p.run(p.now + 20.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 3000 and len(p.sent["host"]) == 3000


def test_a_still_open_relay_replaced_by_a_new_leg_is_abandoned_and_replayed_on_the_new_one():
    p = resumable()
    p.stream("client", 300, 0.005)
    p.run(0.4)
    p.set_dark(RELAY_ID, True)                  # silent, but TCP has not said so
    new_leg(p, "relay-2")
    p.run(3.0)
    for side in SIDES:
        assert p.cores[side].active == "relay-2" and RELAY_ID not in p.cores[side].kinds
        assert p.first(side, ev.PathAbandoned, lambda e: e.path_id == RELAY_ID)[1] is not None
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 300


def test_a_relay_path_needs_a_relay_name_and_a_new_id():
    p = resumable()
    with pytest.raises(Exception, match="relay path must be called"):
        p.cores["client"].path_added("udp-x", "tcp-relay", 0.0)
    p.path_ends(RELAY_ID, "gateway-shutdown")
    new_leg(p, "relay-2")
    with pytest.raises(Exception, match="already added"):
        p.cores["client"].path_added("relay-2", "tcp-relay", p.now)


# --- tickets -------------------------------------------------------------------------------

GW = "gw-test"


def _ticket(signer, key, now, sid="s1", host="h1", grace=30.0):
    return resume.mint(signer, user="alice", gateway_id=GW, session_id=sid, host_id=host, resource="desktop",
                       fingerprint="sha-256 ab", client_key=key.public_hex, grace=grace, now=now)


def _proof(key, sid="s1", nonce="ab" * 16):
    return nonce, key.sign(resume.proof_message(GW, sid, nonce))


def test_resume_ticket_checks_are_typed():
    signer, key, other = TokenSigner.generate(), resume.ClientKey(), resume.ClientKey()
    now = time.time()
    ver = signer.verifier()
    cache = ReplayCache()
    t = _ticket(signer, key, now)
    nonce, sig = _proof(key)
    # wrong client: a sniffed ticket with a proof by another key; a ticket for another session
    with pytest.raises(WrongClient):
        resume.check(ver, t, gateway_id=GW, session_id="s1", nonce=nonce, signature=_proof(other)[1],
                     now=now, replay=cache)
    with pytest.raises(WrongClient):
        resume.check(ver, t, gateway_id=GW, session_id="s2", nonce=nonce, signature=sig, now=now, replay=cache)
    with pytest.raises(WrongClient):
        resume.check(ver, t, gateway_id=GW, session_id="s1", nonce=nonce, signature=sig, now=now,
                     replay=cache, host_id="h2")
    # forged: signed by another gateway key, or one claim changed
    with pytest.raises(BadSignature):
        resume.check(ver, _ticket(TokenSigner.generate(), key, now), gateway_id=GW, session_id="s1",
                     nonce=nonce, signature=sig, now=now)
    head, body, tail = t.split(".")
    import base64
    import json
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["ck"] = other.public_hex
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(), tail])
    with pytest.raises(BadSignature):
        resume.check(ver, forged, gateway_id=GW, session_id="s1", nonce=nonce, signature=_proof(other)[1], now=now)
    # expired
    old = _ticket(signer, key, now - 1000)
    with pytest.raises(TokenExpired):
        resume.check(ver, old, gateway_id=GW, session_id="s1", nonce=nonce, signature=sig, now=now)
    # the refused attempts above did not burn the ticket: the real client resumes, once
    claims = resume.check(ver, t, gateway_id=GW, session_id="s1", nonce=nonce, signature=sig, now=now,
                          replay=cache)
    assert claims.extra["ck"] == key.public_hex and claims.extra["host"] == "h1"
    with pytest.raises(TicketReplayed):
        resume.check(ver, t, gateway_id=GW, session_id="s1", nonce=nonce, signature=sig, now=now, replay=cache)
    assert issubclass(TicketReplayed, AuthError) and issubclass(WrongClient, AuthError)


def test_ticket_lifetime_covers_the_grace_period_at_half_life_and_keys_are_checked():
    assert resume.ticket_lifetime(30) / 2 >= 30 and resume.ticket_lifetime(100) / 2 >= 100
    with pytest.raises(AuthError):
        resume.check_key("zz" * 32)
    with pytest.raises(AuthError):
        resume.mint(TokenSigner.generate(), user="a", gateway_id=GW, session_id="s", host_id="h", resource="r",
                    fingerprint="f", client_key="short", grace=30, now=time.time())
    assert "ClientKey(" in repr(resume.ClientKey()) and len(repr(resume.ClientKey())) < 40


def test_every_path_silent_at_once_the_client_gives_up_the_relay_and_resumes():
    """A network change as the client sees it: UDP and the relay go dark together and TCP says
    nothing. UDP fails over after dead_after, the relay gets relay_check_after to answer a ping,
    then the client abandons it and asks for a resume; the host, which cannot dial, only waits."""
    p = streaming_on_udp(resumable(), SIDES, 3000)
    p.set_dark("udp-1", True)
    p.set_dark(RELAY_ID, True)
    t_move = p.now
    p.run(t_move + 3.0)
    t_det, lost = p.first("client", ev.RelayLost, lambda e: e.detached)
    assert lost is not None and lost.reason.startswith("relay silent")
    bound = 0.6 + p.timing.relay_check_after
    assert bound - 0.05 <= t_det - t_move <= bound + 0.01, t_det - t_move
    assert p.first("client", ev.PathAbandoned, lambda e: e.path_id == RELAY_ID)[1] is not None
    assert p.first("host", ev.RelayLost)[1] is None          # the host never heard a thing
    new_leg(p, "relay-2")
    p.run(p.now + 10.0)
    for side in SIDES:
        assert p.cores[side].counters["resumes"] == 1 and RELAY_ID not in p.cores[side].kinds
    p.run(p.now + 20.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 3000 and len(p.sent["host"]) == 3000


def test_a_busy_relay_that_answers_is_never_given_up_and_the_host_never_watches():
    p = resumable(relay_delay=0.4)              # slow, but it answers
    p.stream("client", 2000, 0.002)
    p.stream("host", 2000, 0.002)
    p.run(15.0)
    for side in SIDES:
        assert p.first(side, ev.RelayLost)[1] is None and p.cores[side].active == RELAY_ID
    p.assert_exactly_once_in_order()


def test_address_change_with_the_background_resume_first_fails_over_onto_the_new_leg():
    """As the pump does it: the client's relay leg is reset, RelayLost(detached=False) starts a
    resume at once, the new leg is up 0.2 s later; the silent UDP path then fails over onto it
    within dead_after of the new leg (a relay is there again), not after alone_dead_after."""
    p = streaming_on_udp(resumable(), SIDES, 3000)
    p.set_dark("udp-1", True)
    p.close_path(RELAY_ID, "client", "connection reset")
    p.pump()
    assert not p.first("client", ev.RelayLost)[1].detached
    p.run(p.now + 0.2)
    new_leg(p, "relay-2")
    t_leg = p.now
    p.run(p.now + 2.0)
    t_sw = [t for t, e in p.events["client"] if isinstance(e, ev.PathSwitched) and e.path_id == "relay-2"]
    assert t_sw and t_sw[0] - t_leg <= 0.61 and p.first("client", ev.RelayLost, lambda e: e.detached)[1] is None
    p.paths["udp-1"].open = {s: False for s in SIDES}
    for side in SIDES:
        p.cores[side].path_closed("udp-1", "ice failed", p.now)
    p.run(p.now + 25.0)
    assert on_udp(p, "client") and on_udp(p, "host")
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 3000 and len(p.sent["host"]) == 3000


def test_host_gone_and_silent_udp_ends_the_client_but_client_gone_only_detaches_the_host():
    """A crashed host takes its relay leg and its UDP socket: the client ends at once
    (host-gone), resume or not. The host, told client-gone with UDP silent, cannot tell a
    crashed client from a moved one: it waits for a resume."""
    p = streaming_on_udp(resumable(), ("client",), 10_000)
    p.set_dark("udp-1", True)
    p.path_ends(RELAY_ID, "host-gone")
    t0 = p.now
    p.run(t0 + 2.0)
    t_end, end = p.first("client", ev.SessionEnded)
    assert end is not None and end.reason == "host-gone" and t_end - t0 <= 0.61

    q = streaming_on_udp(resumable(), ("host",), 10_000, check="host")
    q.set_dark("udp-1", True)
    q.path_ends(RELAY_ID, "client-gone")
    t0 = q.now
    q.run(t0 + 5.0)
    assert not q.cores["host"].closed
    t_det, lost = q.first("host", ev.RelayLost, lambda e: e.detached)
    assert lost is not None and t_det - t0 <= 0.61


def test_broker_refreshes_tickets_at_half_life_for_the_sessions_of_that_host_only():
    from shortpath.broker.service import Broker, SessionRecord
    from shortpath.client.resume import Resumer
    from shortpath.config import GatewayConfig

    clock = [1_000_000.0]
    signer = TokenSigner.generate()
    b = Broker(GatewayConfig(gateway_id=GW), signer, clock=lambda: clock[0])
    key = resume.ClientKey()
    ttl = resume.ticket_lifetime(b.config.timing.resume_grace)
    b.sessions["s1"] = SessionRecord("s1", "alice", "h1", "desktop", clock[0], resume_key=key.public_hex,
                                     fingerprint="sha-256 ab", ticket_expiry=clock[0] + ttl)
    b.sessions["s2"] = SessionRecord("s2", "bob", "h2", "desktop", clock[0], resume_key=key.public_hex,
                                     fingerprint="sha-256 ab", ticket_expiry=clock[0] + ttl)
    b.sessions["s3"] = SessionRecord("s3", "carol", "h1", "desktop", clock[0])      # no resume key
    assert b.resume_refresh("h1") == []                    # fresh: nothing to do
    clock[0] += ttl / 2 + 1
    out = b.resume_refresh("h1")
    assert [m.session_id for m in out] == ["s1"]
    assert b.resume_refresh("h1") == []                    # once per half-life
    nonce, sig = _proof(key)
    claims = resume.check(signer.verifier(), out[0].ticket, gateway_id=GW, session_id="s1", nonce=nonce,
                          signature=sig, now=clock[0], host_id="h1")
    assert claims.extra["ck"] == key.public_hex and claims.exp == pytest.approx(clock[0] + ttl)
    # the client keeps what looks like a ticket, and nothing else
    r = Resumer(["127.0.0.1:1"], "s1", "sp1.old", key, "sha-256 ab", cafile=None, timing=b.config.timing)
    r.on_ticket({"ticket": 42})
    r.on_ticket({"ticket": "x" * 10})
    assert r.ticket == "sp1.old"
    r.on_ticket({"ticket": out[0].ticket})
    assert r.ticket == out[0].ticket


def test_a_host_still_on_udp_follows_the_clients_resume_onto_the_new_leg_at_once():
    """Only the client streams; the host just acks on its UDP path, which went dark with the
    client's move. When the client resumes on relay-2 and says so, the host switches too."""
    p = streaming_on_udp(resumable(), ("client",), 3000, check="host")
    p.set_dark("udp-1", True)
    p.set_dark(RELAY_ID, True)
    p.run(p.now + 2.5)
    assert p.first("client", ev.RelayLost, lambda e: e.detached)[1] is not None
    new_leg(p, "relay-2", host_after=0.0)
    t_leg = p.now
    p.run(p.now + 0.2)
    t_sw = [t for t, e in p.events["host"] if isinstance(e, ev.PathSwitched) and e.path_id == "relay-2"]
    assert t_sw and t_sw[0] - t_leg <= 0.05, p.switches("host")
    p.run(p.now + 20.0)
    p.assert_exactly_once_in_order()
    assert len(p.sent["client"]) == 3000


# --- a slow relay is not a dead one (the scale regression: overload read as silence) -----------------
def _ramp_delay(p: Pair, path_id: str, to: float, over: float, steps: int = 50) -> None:
    """The path's one-way delay grows linearly to ``to`` within ``over`` seconds (a queue
    filling up; it only grows, so frames stay in order as on TCP)."""
    start = p.paths[path_id].delay
    for i in range(1, steps + 1):
        p.at(over * i / steps, lambda d=start + (to - start) * i / steps: setattr(p.paths[path_id], "delay", d))


def test_a_relay_slowing_to_seconds_under_a_closed_loop_echo_is_kept_and_never_resumed():
    """As the scale benchmark's sessions: one echo in flight at a time, and the relay's
    delay grows to 2.5 s each way (RTT 5 s, longer than relay_silent_after), so after each
    send the client hears nothing for seconds. The probe PING is answered late, within
    RELAY_RTT_FACTOR x the relay RTT the earlier pings measured: the leg is kept, every echo
    comes back, and no resume is started."""
    p = resumable()
    _ramp_delay(p, RELAY_ID, 2.5, over=15.0)
    echoes = []

    def echo(side, e):
        if isinstance(e, ev.DataReceived):
            if side == "host":
                p.cores["host"].send(e.data, p.now)
            else:
                echoes.append(e.data)
                if len(echoes) < 40:
                    p.cores["client"].send(msg("client", len(echoes)), p.now)
    p.on_event = echo
    p.cores["client"].send(msg("client", 0), 0.0)
    p.run(200.0)
    for side in SIDES:
        assert p.first(side, ev.RelayLost)[1] is None and p.first(side, ev.PathAbandoned)[1] is None
        assert p.cores[side].active == RELAY_ID and "resumes" not in p.cores[side].counters
    assert p.cores["client"].rtt(RELAY_ID) > p.timing.relay_silent_after       # slower than the old limit
    assert echoes == [msg("client", i) for i in range(40)]


def test_bytes_heard_on_the_relay_count_as_life_while_no_whole_frame_arrives():
    """A saturated relay delivers no whole frame for 8 s, but bytes keep arriving at the
    client's socket (the pump feeds path_heard before every timer): the leg is kept; the
    frames then arrive, nothing lost. Without those bytes the same relay is given up."""
    for bytes_arrive in (True, False):
        p = resumable()
        p.stream("client", 400, 0.005)
        p.stream("host", 400, 0.005)
        p.run(0.5)
        p.set_dark(RELAY_ID, True)
        client = p.cores["client"]
        if bytes_arrive:
            def trickle():
                client.path_heard(RELAY_ID, p.now)
                if p.paths[RELAY_ID].dark:
                    p.at(p.now + 0.3, trickle)
            p.at(p.now + 0.3, trickle)
        p.at(8.5, lambda: p.set_dark(RELAY_ID, False))
        p.run(20.0)
        lost = p.first("client", ev.RelayLost)[1]
        if bytes_arrive:
            assert lost is None and client.active == RELAY_ID
            p.assert_exactly_once_in_order()
            assert len(p.inbox["host"]) == 400 and len(p.inbox["client"]) == 400
        else:
            assert lost is not None and lost.reason.startswith("relay silent")


def test_a_dead_relay_is_still_found_in_relay_silent_after_and_the_next_give_up_backs_off():
    """Real silence (relay-only, nothing arrives, no bytes either) is still found
    relay_silent_after after the last thing heard (the probe PING went out a third of the
    way in); a second leg given up for silence right after waits twice as long, so a
    relay that only looked dead does not start a storm of resumes."""
    p = resumable()
    p.stream("client", 3000, 0.005)
    p.run(1.0)
    p.set_dark(RELAY_ID, True)
    t_dark = p.now
    p.run(t_dark + 6.0)
    t_det, lost = p.first("client", ev.RelayLost, lambda e: e.detached)
    assert lost is not None and lost.reason.startswith("relay silent")
    limit = p.timing.relay_silent_after
    assert limit - 0.05 <= t_det - t_dark <= limit + 0.1, t_det - t_dark
    new_leg(p, "relay-2")
    p.run(p.now + 1.0)
    assert p.cores["client"].active == "relay-2"
    p.set_dark("relay-2", True)
    t_dark2 = p.now
    p.run(t_dark2 + 10.0)
    t_det2 = [t for t, e in p.events["client"] if isinstance(e, ev.RelayLost) and e.detached and t > t_dark2]
    assert t_det2 and 2 * limit - 0.05 <= t_det2[0] - t_dark2 <= 2 * limit + 0.1, t_det2


def test_a_gateway_that_acknowledges_everything_keeps_the_leg_up_to_a_cap():
    """The peer is silent (a host starved of CPU) but the gateway's TCP acknowledges all we
    write (the pump reads it off the socket: relay_acked): the network works, so the leg is
    kept past relay_silent_after; a gateway that only acknowledges (hung, its kernel still
    taking bytes) is given up after RELAY_ACKED_CAP x the limit all the same."""
    from shortpath.session.connection import RELAY_ACKED_CAP
    p = resumable()
    p.stream("client", 3000, 0.005)
    p.run(1.0)
    p.set_dark(RELAY_ID, True)
    t_dark = p.now
    client = p.cores["client"]

    def acked():
        client.relay_acked(p.now)
        p.at(p.now + 0.3, acked)
    p.at(p.now + 0.3, acked)
    p.run(t_dark + 3 * p.timing.relay_silent_after)
    assert p.first("client", ev.RelayLost)[1] is None and client.active == RELAY_ID
    p.run(t_dark + RELAY_ACKED_CAP * p.timing.relay_silent_after + 1.0)
    t_det, lost = p.first("client", ev.RelayLost, lambda e: e.detached)
    cap = RELAY_ACKED_CAP * p.timing.relay_silent_after
    assert lost is not None and cap - 0.1 <= t_det - t_dark <= cap + 0.4, t_det - t_dark


def test_a_deferred_use_keeps_the_ticket_for_a_retry_until_it_is_spent_once():
    """The broker checks with ``defer_use`` and spends the ticket only once the host's dial
    is ordered: a refusal that may pass (host not back yet) leaves it good for the next try;
    a dial order that never left releases it; once spent it is refused, checked or spent again."""
    signer, key = TokenSigner.generate(), resume.ClientKey()
    now = time.time()
    ver, cache = signer.verifier(), ReplayCache()
    t = _ticket(signer, key, now)
    nonce, sig = _proof(key)
    for _ in range(3):           # refused for another reason after the check: nothing recorded
        claims = resume.check(ver, t, gateway_id=GW, session_id="s1", nonce=nonce, signature=sig, now=now,
                              replay=cache, defer_use=True)
    assert len(cache) == 0
    resume.spend(cache, claims, now)
    cache.release(claims.jti)    # the order was never sent
    resume.spend(cache, claims, now)
    with pytest.raises(TicketReplayed):
        resume.spend(cache, claims, now)
    with pytest.raises(TicketReplayed):
        resume.check(ver, t, gateway_id=GW, session_id="s1", nonce=nonce, signature=sig, now=now,
                     replay=cache, defer_use=True)
