"""Fixtures for lab tests (real namespaces; need root, ``ip netns`` and nft).

Tests marked ``@pytest.mark.lab`` are skipped with the reason below when the machine cannot run
them.  Reusable fixtures:

* ``make_lab(**kw)`` -> a started ``netns_lab.Lab``; torn down after the test even on failure.
* ``lab`` -> the standard topology: port-restricted NAT on both sides plus the private link.
* ``echo_core`` -> an echo server in the core on the gateway, turn and stun addresses
  (UDP 9/3390/3391, TCP 443/8443 on the gateway) -- see ``netns_lab.echo``.
"""

from __future__ import annotations

import pytest

from netns_lab.netns import unavailable_reason

LAB_SKIP = unavailable_reason()


def pytest_collection_modifyitems(config, items):
    if LAB_SKIP is None:
        return
    skip = pytest.mark.skip(reason=LAB_SKIP)
    for item in items:
        if item.get_closest_marker("lab"):
            item.add_marker(skip)


@pytest.fixture
def make_lab():
    from netns_lab import Lab

    labs = []

    def _make(*args, **kw) -> Lab:
        lab = Lab(*args, **kw)
        labs.append(lab)
        return lab.up()

    yield _make
    errors = []
    for lab in reversed(labs):
        try:
            lab.down()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def lab(make_lab):
    return make_lab("port-restricted", "port-restricted", private_link=True)


@pytest.fixture
def echo_core(lab):
    """Echo servers in the core: gateway (UDP 9/3390/3391, TCP 443/8443), turn and stun (UDP)."""
    for name in ("gateway", "turn", "stun"):
        lab.echo_server("core", lab.addr(name), udp=(9, 3390, 3391),
                        tcp=(443, 8443) if name == "gateway" else ())
    return lab
