"""A client that changes networks mid-stream (#15), in the netns lab: real gateway, host, coturn
and the scripted client of test_faults.py (its ``drive`` mode) behind kernel NAT.

The move: the client's address 10.1.0.10 is taken away and 10.1.0.77 given instead, and its
router switches to another NAT behaviour with every mapping flushed (``Lab.set_nat``): the old
UDP path and the old TCP relay leg lead nowhere and nothing tells the client so (no RST).
Expected: the UDP path fails over, the silent relay is given up, the session resumes on a new
relay leg through the gateway (ticket + proof), a fresh UDP attempt on the new address brings
it back to UDP, and the numbered stream arrives complete, once, in order. Times are printed
(``-s``)."""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.test_faults import CLIENT_IP, _cmd, _host_sessions, _ready, _spawn_driver, _start

pytestmark = pytest.mark.lab

NEW_IP = "10.1.0.77"


def _client_ifname(lab) -> str:
    out = lab.client.run(["ip", "-j", "addr", "show"]).stdout
    for dev in json.loads(out):
        if any(a.get("local") == CLIENT_IP for a in dev.get("addr_info", [])):
            return dev["ifname"]
    raise AssertionError(f"no interface with {CLIENT_IP} in the client namespace: {out}")


def test_client_moves_to_another_network_mid_stream_resumes_and_returns_to_udp():
    from netns_lab import Lab

    with Lab(client_nat="port-restricted", host_nat="port-restricted") as lab:
        st = _start(lab)
        d = _spawn_driver(lab, st)
        r = _ready(d)
        _cmd(d, "stream 0.02", "streaming")
        time.sleep(1.0)
        before = _cmd(d, "count", "count")
        dev = _client_ifname(lab)
        t_move = time.time()
        lab.client.ip_batch([f"addr del {CLIENT_IP}/24 dev {dev}", f"addr add {NEW_IP}/24 dev {dev}",
                             "route add default via 10.1.0.1"])
        lab.set_nat("client", "symmetric" if r["transport"] != "udp-turn" else "port-restricted")
        # wait for the stream to flow again, then for UDP
        flowing = back_on_udp = None
        deadline = time.monotonic() + 40
        last = before["received"]
        while time.monotonic() < deadline and back_on_udp is None:
            c = _cmd(d, "count", "count")
            assert c["closed"] is None, f"the session ended: {c}"
            if flowing is None and c["received"] > last + 5:
                flowing = time.time()
            if flowing is not None and c["transport"].startswith("udp"):
                back_on_udp = time.time()
            time.sleep(0.05)
        stopped = _cmd(d, "stop 20", "stopped", 30)
        info = _cmd(d, "info", "info")
        host = next(s for s in _host_sessions(st, "h1") if s["session_id"] == info["session_id"])

    events = [(round(h["t"] - t_move, 3), h["event"], h["transport"], h["reason"]) for h in info["history"]
              if h["t"] >= t_move - 0.01]
    print(f"\nclient moved at +0.000 s; data flowing again at +{(flowing or float('nan')) - t_move:.3f} s, "
          f"back on UDP at +{(back_on_udp or float('nan')) - t_move:.3f} s; "
          f"{stopped['sent']} sent, {stopped['received']} echoed in order, longest gap {stopped['max_gap_ms']} ms")
    for e in events:
        print("  client", e)
    for h in host["history"]:
        if h["t"] >= t_move - 0.01:
            print("  host  ", (round(h["t"] - t_move, 3), h["event"], h["transport"], h["reason"]))
    assert flowing is not None, f"the stream never flowed again: {events}"
    assert back_on_udp is not None, f"the session never returned to UDP: {events}"
    assert stopped["errors"] == [] and stopped["all_echoed"] and stopped["sent"] == stopped["received"], stopped
    # A new relay leg either way: usually the relay goes silent after the UDP failover and
    # the client detaches, then resumes; if the old leg is reset first (the NAT answering for
    # a flow it forgot), it is replaced in the background and the UDP failover lands on it.
    kinds = [e[1] for e in events]
    assert ("detached" in kinds and "resume" in kinds and kinds.index("detached") < kinds.index("resume")) \
        or "relay-replaced" in kinds, events
    assert any(h["event"] in ("resume", "relay-replaced") for h in host["history"]), host["history"]
    assert info["transport"].startswith("udp")
