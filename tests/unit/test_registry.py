"""Host selection as tables: breadth-first, depth-first, personal, limits, drain."""

import pytest

from shortpath.broker.registry import Registry
from shortpath.config import PoolConfig
from shortpath.errors import NoResourcesError

T = 100.0


def registry(hosts, now=T):
    """hosts: list of (host_id, load, drain, last_seen)."""
    r = Registry(heartbeat_interval=2.0, heartbeat_misses=3)
    for host_id, load, drain, seen in hosts:
        rec = r.register(host_id, "p", "sha-256 00", seen)
        rec.sessions = load
        rec.drain = drain
    return r


# Host tables shared with tests/unit/test_store.py, which runs the same selection rules against
# both broker stores: (host id, sessions, drain, last seen relative to the test's T).
SELECTION_CASES = [
    ("breadth-first", [("a", 2, False, 0), ("b", 1, False, 0), ("c", 3, False, 0)], "b"),
    ("breadth-first", [("a", 1, False, 0), ("b", 1, False, 0)], "a"),                   # tie -> id
    ("breadth-first", [("a", 0, True, 0), ("b", 3, False, 0)], "b"),                    # drain skipped
    ("breadth-first", [("a", 0, False, -7), ("b", 3, False, 0)], "b"),                   # stale skipped
    ("depth-first", [("a", 2, False, 0), ("b", 1, False, 0), ("c", 3, False, 0)], "c"),
    ("depth-first", [("a", 2, False, 0), ("b", 4, False, 0)], "a"),                     # b full (max 4)
    ("depth-first", [("a", 0, False, 0), ("b", 0, False, 0)], "a"),
]

NO_RESOURCES_CASES = [
    ([], "none-registered"),
    ([("a", 4, False, 0), ("b", 4, False, 0)], "full"),
    ([("a", 0, True, 0), ("b", 1, True, 0)], "draining"),
    ([("a", 0, False, -10)], "unavailable"),
    ([("a", 4, False, 0), ("b", 0, True, 0)], "draining+full"),
]


def at(cases, t):
    """The shared cases with each host's relative last-seen time made absolute at ``t``."""
    return [(*head, [(h, load, drain, t + seen) for h, load, drain, seen in hosts], last)
            for (*head, hosts, last) in cases]


@pytest.mark.parametrize("lb,hosts,expect", at(SELECTION_CASES, T))
def test_selection(lb, hosts, expect):
    r = registry(hosts)
    assert r.select(PoolConfig("p", load_balancer=lb, max_sessions=4), "u", T).host_id == expect


@pytest.mark.parametrize("hosts,reason", at(NO_RESOURCES_CASES, T))
def test_no_resources_reasons(hosts, reason):
    r = registry(hosts)
    with pytest.raises(NoResourcesError) as ei:
        r.select(PoolConfig("p", max_sessions=4), "u", T)
    assert ei.value.reason == reason


def test_personal_assignment():
    pool = PoolConfig("p", load_balancer="personal", max_sessions=1, assignments={"alice": "b", "bob": "zz"})
    r = registry([("a", 0, False, T), ("b", 0, False, T)])
    assert r.select(pool, "alice", T).host_id == "b"
    with pytest.raises(NoResourcesError) as ei:
        r.select(pool, "alice", T)          # b now has one pending session: full
    assert ei.value.reason == "full"
    with pytest.raises(NoResourcesError) as ei:
        r.select(pool, "carol", T)
    assert ei.value.reason == "not-assigned"
    with pytest.raises(NoResourcesError) as ei:
        r.select(pool, "bob", T)
    assert ei.value.reason == "none-registered"


def test_breadth_first_spreads_and_pending_counts_toward_limit():
    r = registry([("a", 0, False, T), ("b", 0, False, T), ("c", 0, False, T)])
    pool = PoolConfig("p", max_sessions=2)
    picks = [r.select(pool, "u", T + i * 0.1).host_id for i in range(6)]
    assert sorted(picks) == ["a", "a", "b", "b", "c", "c"]
    assert picks[:3] == ["a", "b", "c"]
    with pytest.raises(NoResourcesError):
        r.select(pool, "u", T + 0.7)
    r.launch_done("a", stitched=False)      # an abandoned launch frees its slot
    assert r.select(pool, "u", T + 0.8).host_id == "a"


def test_depth_first_fills_one_host_first():
    r = registry([("a", 0, False, T), ("b", 0, False, T)])
    pool = PoolConfig("p", load_balancer="depth-first", max_sessions=3)
    assert [r.select(pool, "u", T).host_id for _ in range(5)] == ["a", "a", "a", "b", "b"]


def test_heartbeat_revives_and_reconnect_keeps_drain():
    r = registry([("a", 0, True, T - 10)])
    r.heartbeat("a", 2, T)
    assert r.status(r.hosts["a"], T) == "draining"
    r.register("a", "p", "sha-256 00", T + 1)
    assert r.hosts["a"].drain and r.hosts["a"].sessions == 2


def test_bad_pool_config():
    from shortpath.errors import ConfigError
    with pytest.raises(ConfigError):
        PoolConfig("p", load_balancer="random")
    with pytest.raises(ConfigError):
        PoolConfig("p", max_sessions=0)


def test_launch_rate_limiter_buckets():
    from shortpath.gateway.ratelimit import RateLimiter
    rl = RateLimiter(rate=2.0, burst=3)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", 0.0)                 # other sources are not affected
    assert rl.retry_after("a", 0.0) == pytest.approx(0.5)
    assert rl.allow("a", 0.5) and not rl.allow("a", 0.5)
    assert rl.allow("a", 10.0)                # refilled (capped at burst)
    rl2 = RateLimiter(rate=1.0, burst=1, max_sources=2)
    for src in "xyz":
        rl2.allow(src, 0.0)
    assert len(rl2) == 2                      # bounded memory


# --- issue #11 item 4: max_sessions_per_user ------------------------------------------
# Each step: (action, user) with action "launch" (select + stitched), "pending" (select
# only), "abandon" (the user's oldest pending launch gives up), "end" (one of the user's
# live sessions ends); expected: host id picked, or the NoResourcesError reason.

@pytest.mark.parametrize("limit,steps", [
    # the attack from the issue: one pool of max_sessions=3, alice takes every slot
    (0, [("launch", "alice", "a"), ("launch", "alice", "a"), ("launch", "alice", "a"), ("launch", "bob", "full")]),
    (2, [("launch", "alice", "a"), ("launch", "alice", "a"), ("launch", "alice", "user-limit"),
         ("launch", "bob", "a")]),
    # pending launches count toward the limit, and an abandoned one gives its slot back
    (1, [("pending", "alice", "a"), ("launch", "alice", "user-limit"), ("abandon", "alice", None),
         ("launch", "alice", "a")]),
    # an ended session gives its slot back; other users are not affected
    (1, [("launch", "alice", "a"), ("launch", "alice", "user-limit"), ("end", "alice", None),
         ("launch", "alice", "a"), ("launch", "bob", "a"), ("launch", "carol", "a"), ("launch", "dave", "full")]),
    # the user limit is reported even when the hosts are full too
    (1, [("launch", "alice", "a"), ("launch", "bob", "a"), ("launch", "carol", "a"),
         ("launch", "alice", "user-limit")]),
])
def test_max_sessions_per_user(limit, steps):
    r = registry([("a", 0, False, T)])
    pool = PoolConfig("p", max_sessions=3, max_sessions_per_user=limit)
    pending, live = {}, {}
    for i, (action, user, expect) in enumerate(steps):
        now = T + i * 0.01
        if action == "abandon":
            r.launch_done(pending[user].pop(0), stitched=False, pool="p", user=user)
            continue
        if action == "end":
            r.session_ended(live[user].pop(0), pool="p", user=user)
            continue
        try:
            got = r.select(pool, user, now).host_id
        except NoResourcesError as exc:
            got = exc.reason
        assert got == expect, (i, action, user)
        if got == "a":
            if action == "launch":
                r.launch_done("a", stitched=True, pool="p", user=user)
                live.setdefault(user, []).append("a")
            else:
                pending.setdefault(user, []).append("a")


def test_per_user_limit_is_per_pool_and_config_checked():
    from shortpath.errors import ConfigError
    r = Registry()
    for pool in ("p", "q"):
        r.register(f"h-{pool}", pool, "sha-256 00", T)
    p, q = PoolConfig("p", max_sessions_per_user=1), PoolConfig("q", max_sessions_per_user=1)
    assert r.select(p, "alice", T).host_id == "h-p"
    assert r.select(q, "alice", T).host_id == "h-q"      # another pool: its own count
    with pytest.raises(NoResourcesError):
        r.select(p, "alice", T)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError):
            PoolConfig("p", max_sessions_per_user=bad)


@pytest.mark.parametrize("jti,exp,rev_jtis,rev_hosts,now,why", [
    ("j1", T + 10, (), (), T, None),
    ("j1", T + 10, (), (), T + 10 + 29, None),            # inside the clock-skew allowance
    ("j1", T + 10, (), (), T + 10 + 31, "token-expired"),
    ("j1", T + 10, ("j1",), (), T, "revoked"),
    ("j1", T + 10, ("j2",), (), T, None),
    ("j1", T + 10, (), ("a",), T, "revoked"),
    ("", float("inf"), ("",), (), T, None),                  # a record without a token id
])
def test_registration_validity(jti, exp, rev_jtis, rev_hosts, now, why):
    r = Registry()
    rec = r.register("a", "p", "sha-256 00", T, token_jti=jti, token_exp=exp)
    assert r.invalid(rec, now, rev_jtis, rev_hosts, skew=30.0) == why
