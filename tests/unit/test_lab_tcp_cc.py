"""The congestion-control check of lab_paths' tcp-relay-cubic path, on canned ``ss`` output:
which of a relay path's new TCP connections is which leg, and that a leg on the wrong control
(or no gateway->client leg at all) is an error rather than a silent BBR measurement."""

from __future__ import annotations

import pytest

from benchmarks import lab_paths as lp
from netns_lab.lab import parse_ss_tcp

SS_CORE = ("0      0      198.18.0.10:443 198.18.1.2:40000\n"
           "\t ts sack cubic wscale:7,7 rto:204 rtt:40.1/2 mss:1448 cwnd:10\n"
           "0      0      198.18.0.10:443 198.18.2.2:51000\n"
           "\t bbr wscale:7,7 rto:204 bbr:(bw:1Mbps,mrtt:0.1)\n")


class FakeLab:
    ADDRS = {"client-public": "198.18.1.2", "host-public": "198.18.2.2"}

    def addr(self, name):
        return self.ADDRS[name]


def test_parse_ss_tcp():
    assert parse_ss_tcp(SS_CORE) == [
        {"local": "198.18.0.10:443", "peer": "198.18.1.2:40000", "cc": "cubic"},
        {"local": "198.18.0.10:443", "peer": "198.18.2.2:51000", "cc": "bbr"}]
    assert parse_ss_tcp("") == []


def _new(core_cc="cubic", host_leg_cc="cubic"):
    return {"core": [{"local": "198.18.0.10:443", "peer": "198.18.1.2:40000", "cc": core_cc},
                     {"local": "198.18.0.10:443", "peer": "198.18.2.2:51000", "cc": host_leg_cc}],
            "client": [{"local": "10.1.0.10:40000", "peer": "198.18.0.10:443", "cc": "cubic"}],
            "host": [{"local": "10.2.0.10:51000", "peer": "198.18.0.10:443", "cc": host_leg_cc}]}


def test_report_names_the_legs_and_passes_when_all_cubic():
    rep = lp._tcp_cc_report(FakeLab(), _new(), "cubic")
    assert rep["gateway->client"] == ["cubic"] and rep["gateway->host"] == ["cubic"]
    assert rep["client->gateway"] == ["cubic"] and rep["host->gateway"] == ["cubic"]
    lp._check_tcp_cc(rep)


@pytest.mark.parametrize("new", [_new(core_cc="bbr"), _new(host_leg_cc="bbr"),
                                 {"core": [], "client": [], "host": []}])
def test_wrong_or_missing_leg_is_an_error(new):
    rep = lp._tcp_cc_report(FakeLab(), new, "cubic")
    with pytest.raises(lp.CongestionControlError):
        lp._check_tcp_cc(rep)
