"""The fallback-behaviour matrix as tests: every NAT pair and firewall case, the real
gateway/host/client processes, checked by the session's own report AND by packets
captured on the client's LAN link (netns_lab.scenario.check_capture)."""

import pytest

from netns_lab.matrix import cells, run_cell

pytestmark = [pytest.mark.lab, pytest.mark.matrix, pytest.mark.needs("turnserver", "capture")]

CELLS = cells()


@pytest.mark.parametrize("client,host,options,expected,label", CELLS, ids=[c[4] for c in CELLS])
def test_matrix_cell(client, host, options, expected, label):
    r = run_cell(client, host, options)
    assert r["ok"], r.get("error")   # the client process itself failed (rc != 0 or no JSON)
    assert r["path"] == expected, (f"{label}: took {r['path']}, expected {expected}; candidates "
                                   f"{r.get('local_candidate')} -> {r.get('remote_candidate')}; history "
                                   f"{r.get('history')}\nclient log:\n{r.get('client_log', '')[-4000:]}")
    assert r["capture_problems"] == [], r["capture_problems"]
    hold = {k: r.get(k) for k in ("hold_error", "hold_sent", "hold_echoed_in_order", "hold_transports")}
    assert r["hold_error"] is None and r["hold_sent"] == r["hold_echoed_in_order"] > 20, hold
