"""Remote ICE candidates the host would send checks to: table tests of the pure filter
(issue #11 item 10: a peer must not make us probe loopback, link-local, multicast or
addresses outside the policy, nor an unbounded number of them)."""

import pytest

from shortpath.transport.udp.candidate_policy import CandidateFilter, CandidatePolicy, judge

DEFAULT = CandidatePolicy()
LOOPBACK_OK = CandidatePolicy(allow_loopback=True)
ONLY_10 = CandidatePolicy(allowed_networks=("10.0.0.0/8",))
NOT_10_2 = CandidatePolicy(denied_networks=("10.2.0.0/16",))

TABLE = [
    # policy,     address,              expected drop reason (None = kept)
    (DEFAULT, "198.18.0.10", None),             # lab "internet"
    (DEFAULT, "10.2.0.10", None),               # private (managed network)
    (DEFAULT, "192.168.1.5", None),
    (DEFAULT, "100.64.0.7", None),              # carrier-grade NAT segment
    (DEFAULT, "8.8.8.8", None),
    (DEFAULT, "2001:db8::1", None),
    (DEFAULT, "127.0.0.1", "loopback"),
    (DEFAULT, "127.5.6.7", "loopback"),
    (DEFAULT, "::1", "loopback"),
    (DEFAULT, "::ffff:127.0.0.1", "loopback"),  # IPv4-mapped is judged as IPv4
    (DEFAULT, "169.254.169.254", "link-local"),  # cloud metadata
    (DEFAULT, "fe80::1", "link-local"),
    (DEFAULT, "0.0.0.0", "unspecified"),
    (DEFAULT, "0.1.2.3", "unspecified"),
    (DEFAULT, "::", "unspecified"),
    (DEFAULT, "224.0.0.251", "multicast"),
    (DEFAULT, "239.1.1.1", "multicast"),
    (DEFAULT, "ff02::1", "multicast"),
    (DEFAULT, "255.255.255.255", "broadcast"),
    (DEFAULT, "240.0.0.1", "reserved"),
    (DEFAULT, "example.com", "not-an-address"),
    (DEFAULT, "abc.local", "not-an-address"),   # mDNS names are not resolved
    (LOOPBACK_OK, "127.0.0.1", None),
    (LOOPBACK_OK, "169.254.1.1", "link-local"),  # allowing loopback allows nothing else
    (ONLY_10, "10.9.9.9", None),
    (ONLY_10, "198.18.0.10", "not-allowed"),
    (ONLY_10, "2001:db8::1", "not-allowed"),
    (ONLY_10, "127.0.0.1", "loopback"),
    (CandidatePolicy(allow_loopback=True, allowed_networks=("10.0.0.0/8",)), "127.0.0.1", "loopback"),
    (NOT_10_2, "10.2.0.10", "denied"),
    (NOT_10_2, "10.3.0.10", None),
]


@pytest.mark.parametrize("policy,ip,expected", TABLE)
def test_judge_table(policy, ip, expected):
    assert judge(policy, ip, 0) == expected


def test_count_limit_counts_dropped_candidates_too():
    f = CandidateFilter(CandidatePolicy(max_candidates=3))
    assert [f.admit(ip) for ip in ("127.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")] == \
        ["loopback", None, None, "too-many", "too-many"]
    assert f.received == 5
    assert f.dropped == {"loopback": 1, "too-many": 2}


def test_default_cap_bounds_a_flood_of_candidates():
    f = CandidateFilter(DEFAULT)
    kept = [ip for ip in (f"10.0.{i // 250}.{i % 250 + 1}" for i in range(1000)) if f.admit(ip) is None]
    assert len(kept) == DEFAULT.max_candidates
    assert f.dropped["too-many"] == 1000 - DEFAULT.max_candidates


@pytest.mark.parametrize("local,expected", [
    (None, False),                     # aioice's detection: never loopback
    (("10.1.0.2",), False),            # the lab
    (("127.0.0.1",), True),            # demo and loopback tests: the session runs over loopback
    (("10.1.0.2", "127.0.0.1"), True),
    (("not an ip",), False),
])
def test_loopback_only_when_the_session_itself_runs_over_loopback(local, expected):
    assert CandidatePolicy.for_local(local).allow_loopback is expected
    assert CandidatePolicy.for_local(local, allow_loopback=True).allow_loopback is True


@pytest.mark.parametrize("bad", [dict(max_candidates=0), dict(allowed_networks=("10.0.0.0/33",)),
                                 dict(denied_networks=("nonsense",))])
def test_bad_policy_is_refused(bad):
    with pytest.raises(ValueError):
        CandidatePolicy(**bad)
