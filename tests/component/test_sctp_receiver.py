"""Our SCTP receiver's bookkeeping of received TSNs (``_aiortc_compat.sctp_hook_class``'s
``_mark_received``) against aiortc's own, on the same arrival sequences.

aiortc re-sorts and re-filters every TSN held above a gap on each DATA chunk; ours does O(1)
work per chunk. Both must agree on what matters to the peer: which chunks are duplicates, the
cumulative TSN, the TSNs held above it (the SACK's gap blocks) and the duplicates reported.
Ours also says when a SACK is owed at once (a hole opened or filled, a duplicate arrived),
and no more often than that.
"""

from __future__ import annotations

import random

import pytest

from shortpath.transport.udp._aiortc_compat import sctp_dtls_stand_in


def _pair():
    from aiortc.rtcsctptransport import RTCSctpTransport
    from shortpath.transport.udp.sctp import tuned_sctp_transport_class
    stock = RTCSctpTransport(sctp_dtls_stand_in(lambda data: None, "server"))
    ours = tuned_sctp_transport_class()(sctp_dtls_stand_in(lambda data: None, "server"))
    return stock, ours


def _state(sctp) -> tuple:
    cum = sctp._last_received_tsn
    above = sorted(t for t in sctp._sack_misordered if (t - cum) & 0xFFFFFFFF < 0x80000000 and t != cum)
    return cum, above, list(sctp._sack_duplicates)


def _arrivals(first: int, n: int, loss: float, dup: float, reorder: float, rng: random.Random) -> list[int]:
    """TSNs from ``first`` as a lossy, reordering, duplicating link delivers them, with every
    lost one resent later (as a sender's loss recovery would)."""
    out, pending = [], []
    for i in range(n):
        tsn = (first + i) & 0xFFFFFFFF
        if rng.random() < loss:
            pending.append((i + rng.randint(3, 40), tsn))      # resent a few packets later
        else:
            out.append(tsn)
        if rng.random() < dup:
            out.append(tsn)
        if out and rng.random() < reorder and len(out) > 1:
            out[-1], out[-2] = out[-2], out[-1]
        for due, t in list(pending):
            if due <= i:
                out.append(t)
                pending.remove((due, t))
    out.extend(t for _, t in pending)
    return out


class _Oracle:
    """What a receiver must end up with, written plainly: every TSN seen, the cumulative TSN
    in serial-number arithmetic (RFC 1982), duplicates reported as aiortc keeps them."""

    def __init__(self, cum: int) -> None:
        self.cum, self.seen, self.dups = cum, set(), []

    def mark(self, tsn: int) -> bool:
        behind = (self.cum - tsn) & 0xFFFFFFFF < 0x80000000
        if behind or tsn in self.seen:
            self.dups.append(tsn)
            return True
        self.seen.add(tsn)
        while (self.cum + 1) & 0xFFFFFFFF in self.seen:
            self.cum = (self.cum + 1) & 0xFFFFFFFF
            self.seen.discard(self.cum)
        self.dups = [d for d in self.dups if 0 < (d - self.cum) & 0xFFFFFFFF < 0x80000000]
        return False

    def state(self) -> tuple:
        return self.cum, sorted(self.seen), list(self.dups)


CASES = [(0.0, 0.0, 0.0), (0.02, 0.0, 0.0), (0.05, 0.01, 0.02), (0.2, 0.05, 0.1)]


@pytest.mark.asyncio
@pytest.mark.parametrize("loss,dup,reorder", CASES)
async def test_same_duplicates_cumulative_tsn_and_gaps_as_aiortc(loss, dup, reorder):
    rng = random.Random(hash((loss, dup, reorder)) & 0xFFFF)
    stock, ours = _pair()
    for s in (stock, ours):
        s._last_received_tsn = 999
    for k, tsn in enumerate(_arrivals(1000, 800, loss, dup, reorder, rng)):
        assert ours._mark_received(tsn) == stock._mark_received(tsn), (k, tsn)
        assert _state(ours) == _state(stock), (k, tsn)
    assert ours._last_received_tsn == 1799
    assert not ours._sack_misordered


@pytest.mark.asyncio
@pytest.mark.parametrize("loss,dup,reorder", CASES)
async def test_right_across_the_tsn_wrap(loss, dup, reorder):
    # aiortc's own version sorts TSNs numerically, so once a TSN past 2**32 - 1 is held above
    # a gap its cumulative TSN stops moving (aiortc 1.16, these arrivals at 2 % loss: stuck 32
    # below the wrap with 531 TSNs held); the initial TSN is random, so an association can
    # get there
    rng = random.Random(hash((loss, dup, reorder, "wrap")) & 0xFFFF)
    first = 0xFFFFFFFF - 300
    _, ours = _pair()
    ours._last_received_tsn = first - 1
    oracle = _Oracle(first - 1)
    for k, tsn in enumerate(_arrivals(first, 800, loss, dup, reorder, rng)):
        assert ours._mark_received(tsn) == oracle.mark(tsn), (k, tsn)
        assert _state(ours) == oracle.state(), (k, tsn)
    assert ours._last_received_tsn == (first + 799) & 0xFFFFFFFF


@pytest.mark.asyncio
async def test_a_sack_is_urgent_only_when_the_gap_picture_changes():
    _, ours = _pair()
    ours._last_received_tsn = 99
    steps = [  # (tsn, urgent?)
        (100, False),   # in order
        (101, False),
        (103, True),    # 102 missing: a new hole
        (104, False),   # extends the block above the hole: no news
        (105, False),
        (108, True),    # 106-107 missing: another hole
        (102, True),    # fills the first hole: the cumulative TSN jumps to 105
        (106, True),    # partly fills the second (cumulative TSN moves)
        (107, True),    # fills it
        (109, False),   # in order again
        (109, True),    # a duplicate
    ]
    for tsn, urgent in steps:
        ours.sp_sack_urgent = False
        ours._mark_received(tsn)
        assert ours.sp_sack_urgent == urgent, tsn
    assert ours._last_received_tsn == 109
