"""Where a managed session sends DTLS and when it may move: timelines on a fake clock
(issue #11 item 2: a replayed check must not move the session; a move needs our own
consent check answered, authenticated DTLS from the new address, and a rate limit)."""

import pytest

from shortpath.transport.udp.consent import BindingLimits, PathBinding

A = ("10.1.0.2", 40000)      # the real client
B = ("10.1.0.2", 40001)      # the same client after a NAT rebinding
EVIL = ("10.9.9.9", 5555)    # an attacker's socket (or a spoofed victim)
LIM = BindingLimits(txid_ttl=30.0, txid_max=8, consent_rto=0.25, consent_attempts=3, pending_ttl=5.0,
                    max_pending=2, min_move_interval=2.0)


def tx(n: int) -> bytes:
    return n.to_bytes(12, "big")


def bound_at_a() -> PathBinding:
    b = PathBinding(LIM)
    out = b.on_check(A, tx(1), True, 0.0)
    assert out.nominated and out.answer and b.bound == A
    return b


# Each step: (time, action, args, expected result); actions are PathBinding methods, and
# "bound" checks the bound address. Results: CheckOutcome fields as (answer, reason, consent).
TIMELINES = {
    "replayed USE-CANDIDATE from another socket is dropped unanswered, nothing moves": [
        (1.0, "on_check", (EVIL, tx(1), True), (False, "replay", False)),
        (1.1, "on_check", (EVIL, tx(1), True), (False, "replay", False)),
        (1.2, "accepts_dtls", (EVIL,), False),
        (1.3, "on_authenticated_dtls", (EVIL,), False),
        (1.4, "bound", (), A),
    ],
    "a retransmission from the same address is answered and changes nothing": [
        (0.1, "on_check", (A, tx(1), True), (True, "retransmit", False)),
        (0.2, "bound", (), A),
    ],
    "a replay after the id is forgotten starts a consent check that nobody answers": [
        (31.0, "on_check", (EVIL, tx(1), True), (True, "verify", True)),
        (31.0, "consent_due", (), [EVIL]),
        (31.0, "consent_sent", (EVIL, tx(100)), None),
        (31.0, "accepts_dtls", (EVIL,), False),
        (31.3, "consent_sent", (EVIL, tx(101)), None),
        (31.8, "consent_sent", (EVIL, tx(102)), None),
        (32.0, "consent_due", (), []),              # attempts used up
        (32.9, "pending", (), {}),                  # given up (last request timed out at 32.8)
        (33.0, "on_authenticated_dtls", (EVIL,), False),
        (33.0, "bound", (), A),
    ],
    "a consent answer from an address other than the one asked does not count": [
        (1.0, "on_check", (EVIL, tx(2), False), (True, "verify", True)),
        (1.0, "consent_sent", (EVIL, tx(100)), None),
        (1.1, "on_consent_response", (A, tx(100)), False),     # right id, wrong source
        (1.1, "on_consent_response", (EVIL, tx(999)), False),  # right source, unknown id
        (1.2, "accepts_dtls", (EVIL,), False),
    ],
    "NAT rebinding: fresh check, consent answered, authenticated DTLS -> moved": [
        (10.0, "on_check", (B, tx(2), False), (True, "verify", True)),
        (10.0, "consent_due", (), [B]),
        (10.0, "consent_sent", (B, tx(100)), None),
        (10.0, "accepts_dtls", (B,), False),        # not before consent
        (10.0, "on_authenticated_dtls", (B,), False),
        (10.02, "on_consent_response", (B, tx(100)), True),
        (10.02, "accepts_dtls", (B,), True),        # consented: its DTLS may reach the stack
        (10.02, "bound", (), A),                    # ... but we still send to A
        (10.03, "on_authenticated_dtls", (B,), True),
        (10.03, "bound", (), B),
        (10.04, "accepts_dtls", (A,), False),       # the old address is done
    ],
    "consent alone is not enough: without authenticated DTLS the pending address expires": [
        (10.0, "on_check", (B, tx(2), False), (True, "verify", True)),
        (10.0, "consent_sent", (B, tx(100)), None),
        (10.1, "on_consent_response", (B, tx(100)), True),
        (15.2, "pending", (), {}),
        (15.2, "on_authenticated_dtls", (B,), False),
        (15.3, "bound", (), A),
    ],
    "moves are rate-limited": [
        (10.0, "on_check", (B, tx(2), False), (True, "verify", True)),
        (10.0, "consent_sent", (B, tx(100)), None),
        (10.0, "on_consent_response", (B, tx(100)), True),
        (10.0, "on_authenticated_dtls", (B,), True),
        (10.5, "on_check", (A, tx(3), False), (True, "verify", True)),
        (10.5, "consent_sent", (A, tx(101)), None),
        (10.5, "on_consent_response", (A, tx(101)), True),
        (10.6, "on_authenticated_dtls", (A,), False),   # 0.6 s after the last move
        (11.9, "on_authenticated_dtls", (A,), False),
        (12.1, "on_authenticated_dtls", (A,), True),    # 2.1 s after
        (12.1, "bound", (), A),
    ],
    "at most max_pending addresses are verified at once": [
        (1.0, "on_check", (("10.9.9.1", 1), tx(2), False), (True, "verify", True)),
        (1.0, "on_check", (("10.9.9.2", 1), tx(3), False), (True, "verify", True)),
        (1.0, "on_check", (("10.9.9.3", 1), tx(4), False), (True, "too-many-pending", False)),
        (1.0, "on_check", (("10.9.9.1", 1), tx(5), False), (True, "verifying", False)),
    ],
}


@pytest.mark.parametrize("name", list(TIMELINES))
def test_timeline(name):
    b = bound_at_a()
    for t, action, args, expected in TIMELINES[name]:
        if action == "bound":
            got = b.bound
        elif action == "pending":
            b.expire(t)
            got = b.pending()
        elif action in ("accepts_dtls",):
            got = b.accepts_dtls(*args)
        elif action == "consent_due":
            got = b.consent_due(t)
        else:
            got = getattr(b, action)(*args, t)
            if action == "on_check":
                got = (got.answer, got.reason, got.consent)
        assert got == expected, (name, t, action, args)


def test_no_address_before_nomination_and_nothing_accepted():
    b = PathBinding(LIM)
    out = b.on_check(A, tx(1), False, 0.0)
    assert (out.answer, out.reason, out.nominated) == (True, "waiting", False)
    assert b.bound is None and not b.accepts_dtls(A)
    # the first USE-CANDIDATE binds, a replay of it from elsewhere does not re-bind
    assert b.on_check(A, tx(2), True, 0.1).nominated
    assert b.on_check(EVIL, tx(2), True, 0.2).reason == "replay"
    assert b.bound == A


def test_transaction_memory_is_bounded():
    b = bound_at_a()
    for n in range(2, 40):                      # 38 more checks from A
        assert b.on_check(A, tx(n), False, 1.0).reason == "bound"
    assert len(b._txids) == LIM.txid_max
    # the newest ids are still remembered (a replay of them is refused) ...
    assert b.on_check(EVIL, tx(39), False, 1.0).reason == "replay"
    # ... the oldest were forgotten: a replay of one only starts a consent check
    assert b.on_check(EVIL, tx(2), False, 1.0).reason == "verify"
    assert b.bound == A


def test_consent_retransmissions_back_off_and_stop():
    b = bound_at_a()
    b.on_check(B, tx(2), False, 0.0)
    sent = []
    t = 0.0
    while t < 5.0:
        for addr in b.consent_due(t):
            b.consent_sent(addr, tx(100 + len(sent)), t)
            sent.append(round(t, 2))
        nxt = b.next_deadline()
        if nxt is None:
            break
        t = max(nxt, t + 0.01)
    assert sent == [0.0, 0.25, 0.75]            # rto 0.25 doubling, 3 attempts
    assert b.pending() == {} and b.next_deadline() is None
