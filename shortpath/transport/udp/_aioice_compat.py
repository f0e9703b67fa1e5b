"""Every private aioice name shortpath relies on, in one place, each with why.

aioice's public API (Connection, Candidate, stun) lacks a fixed host port, loopback host
candidates, ICE restart, and control over nomination, pair pruning and TURN clean-up. Where we
must reach inside, we do it here and nowhere else, so that an aioice upgrade is checked in one
file. pyproject.toml pins the aioice versions these names were read from, and
tests/unit/test_compat_canary.py fails, naming the name, when one of them is gone.

Convention: PRIVATE_NAMES lists (dotted owner, attribute, why). An attribute of an *instance*
(set in __init__, so not visible on the class) is listed with owner ending in "()" and is checked
by the canary on a freshly constructed object where that is cheap, or by reading the source.
"""

from __future__ import annotations

#: (owner, attribute, why we need it). Filled in as private uses move here.
PRIVATE_NAMES: list[tuple[str, str, str]] = []
