"""`shortpath netcheck`'s NAT verdict (RFC 5780 against coturn with two addresses)
matches each lab NAT type (issue #14): coturn runs in the core on the stun and
stun-alt addresses, netcheck runs in the client node behind real kernel NAT."""

from __future__ import annotations

import json
import time

import pytest

from netns_lab import plan

pytestmark = [pytest.mark.lab, pytest.mark.needs("turnserver")]

CONF = """listening-ip={a1}
listening-ip={a2}
relay-ip={a1}
listening-port=3478
alt-listening-port=3479
no-tls
no-dtls
no-cli
use-auth-secret
static-auth-secret=netcheck
realm=netcheck.lab
fingerprint
simple-log
log-file={log}
pidfile={pid}
userdb={db}
"""


def start_rfc5780_coturn(lab):
    work = lab.workdir
    conf = work / "netcheck-turnserver.conf"
    conf.write_text(CONF.format(a1=plan.SERVICES["stun"], a2=plan.SERVICES["stun-alt"],
                                log=work / "netcheck-turn.log", pid=work / "netcheck-turn.pid",
                                db=work / "netcheck-turn.db"))
    proc = lab.spawn("core", ["turnserver", "-c", str(conf)])
    probe = ("import sys; from netns_lab.coturn import stun_binding; "
             f"sys.exit(0 if stun_binding('{plan.SERVICES['stun']}', 3478) else 1)")
    end = time.monotonic() + 10
    while lab.core.python("-c", probe, check=False).returncode != 0:
        assert time.monotonic() < end, f"coturn did not answer: {proc.tail()}"
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("nat", ["open", "full-cone", "restricted", "port-restricted", "symmetric"])
def test_netcheck_nat_verdict_matches_lab_nat(make_lab, nat):
    lab = make_lab(nat, "port-restricted")
    start_rfc5780_coturn(lab)
    r = lab.client.python("-m", "shortpath", "netcheck", "--stun", f"{plan.SERVICES['stun']}:3478", "--json",
                          check=False)
    assert r.returncode == 0, r.stderr
    nat_rep = json.loads(r.stdout)["nat"]
    assert nat_rep["udp"], nat_rep
    assert (nat_rep["mapping"], nat_rep["filtering"]) == lab.expected_nat("client"), (nat, nat_rep)
