"""Fixtures for lab tests (real namespaces; need root, ``ip netns`` and nft).

Prerequisites (``netns_lab.prereq``; the packages are those of ``scripts/setup.sh``):

* A machine that cannot run a lab at all (not Linux, not root, ``ip netns`` refused) SKIPS
  every ``@pytest.mark.lab`` test, with the reason.
* A missing program or library is one line (what, needed by what, which Debian package). Every
  lab test needs the core lab tools (ip, tc, nft, iptables, sysctl); ``@pytest.mark.needs(...)``
  names more (``"turnserver"``, ``"libpcap"``, groups ``"turn"``, ``"capture"``). As root a missing
  one FAILS the test: root is where the lab runs and where ``scripts/setup.sh test`` installs
  packages, so in CI a missing install step shows up as failures, never as quiet skips. As a
  normal user it skips (only ``needs`` tests that run without root get this far).
* Lab code also checks at the point of use (``Lab.up``, ``Lab.coturn``, ``capture.start``), so a
  test that uses coturn or a capture without declaring it still fails with the same line.

Reusable fixtures:

* ``make_lab(**kw)`` -> a started ``netns_lab.Lab``; torn down after the test even on failure.
* ``lab`` -> the standard topology: port-restricted NAT on both sides plus the private link.
* ``echo_core`` -> an echo server in the core on the gateway, turn and stun addresses
  (UDP 9/3390/3391, TCP 443/8443 on the gateway) -- see ``netns_lab.echo``.
"""

from __future__ import annotations

import os

import pytest

from netns_lab.prereq import environment_reason, missing

LAB_SKIP = environment_reason()


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*names): lab prerequisites (netns_lab.prereq) the "
                            "test needs beyond the core lab tools; missing = fail as root, else skip")


def pytest_collection_modifyitems(config, items):
    if LAB_SKIP is None:
        return
    skip = pytest.mark.skip(reason=LAB_SKIP)
    for item in items:
        if item.get_closest_marker("lab"):
            item.add_marker(skip)


def pytest_runtest_setup(item):
    names = ["lab"] if item.get_closest_marker("lab") else []
    for m in item.iter_markers("needs"):
        names += m.args
    lines = missing(*names) if names else []
    if not lines:
        return
    if os.geteuid() == 0:
        pytest.fail("\n".join(lines), pytrace=False)
    pytest.skip("\n".join(lines))


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
