"""Every NAT type is classified from the outside by the RFC 5780-style probe as intended."""

from __future__ import annotations

import pytest

from netns_lab.nat import AD, APD, EI, NONE

pytestmark = pytest.mark.lab

CLIENT_CASES = [
    ("open", (NONE, EI)),
    ("full-cone", (EI, EI)),
    ("restricted", (EI, AD)),
    ("port-restricted", (EI, APD)),
    ("symmetric", (APD, APD)),
    ("double", (EI, APD)),
    (("full-cone", "full-cone"), (EI, EI)),
    (("full-cone", "symmetric"), (APD, APD)),
    (("restricted", "full-cone"), (EI, AD)),
]


@pytest.mark.parametrize("nat,expected", CLIENT_CASES, ids=lambda v: str(v))
def test_client_nat_classified(make_lab, nat, expected):
    lab = make_lab(nat, "port-restricted")
    rep = lab.probe_nat("client")
    assert (rep.mapping, rep.filtering) == expected == lab.expected_nat("client"), rep
    if nat == "open":
        assert rep.mapped == rep.local
    else:
        assert rep.mapped[0] == lab.addr("client-public")


@pytest.mark.parametrize("nat", ["full-cone", "restricted", "symmetric"])
def test_host_nat_classified(make_lab, nat):
    lab = make_lab("port-restricted", nat)
    rep = lab.probe_nat("host")
    assert (rep.mapping, rep.filtering) == lab.expected_nat("host"), rep
    assert rep.mapped[0] == lab.addr("host-public")


def test_switch_nat_type_live(make_lab):
    lab = make_lab("port-restricted", "port-restricted")
    first = lab.probe_nat("client")
    assert (first.mapping, first.filtering) == (EI, APD)
    for t in ("full-cone", "symmetric", "restricted"):
        lab.set_nat("client", t)
        rep = lab.probe_nat("client")
        assert (rep.mapping, rep.filtering) == lab.expected_nat("client"), (t, rep)
