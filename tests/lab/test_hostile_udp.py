"""Hostile datagrams at the host's managed UDP 3390 in the lab, during a live session.

Real processes (gateway, coturn, host with managed Shortpath on 10.2.0.10:3390, a client
holding a numbered echo session on udp-managed over the private link). From the client's
router namespace -- on the managed network's path, where it can also sniff the client's
STUN consent checks -- scapy sends garbage, empty, oversized (fragmented) and truncated
datagrams, malformed STUN (length lies, bad MESSAGE-INTEGRITY for the live session's
USERNAME, unknown usernames, wrong remote ufrag, non-Binding classes, a Binding flood) and
malformed DTLS records (bad content type, version, lengths, a ClientHello from an unknown
peer), and finally DTLS garbage and a ClientHello spoofed from the live client's own
address and port, which do reach the session's DTLS and must be discarded there. The host's managed-listener drop counters must rise by reason, the host must stay
up, and the live session must stay on udp-managed and lose nothing.
"""

import json
import re
import socket
import sys
import time
from pathlib import Path

import pytest

from netns_lab.scenario import MANAGED_PORT, client_argv, host_sessions, start_stack, wait_host_on_udp

pytestmark = pytest.mark.lab

SENDER = Path(__file__).with_name("hostile_udp_sender.py")

# what each kind of datagram must be counted as (at least this share of those sent)
EXPECTED = {
    "empty": ("drop_empty", 0.9),
    "not_stun_or_dtls": ("drop_not_stun_or_dtls", 0.9),
    "stun_truncated": ("drop_stun_malformed", 0.9),
    "stun_not_binding_request": ("drop_stun_not_binding_request", 0.9),
    "stun_unauthenticated": ("drop_stun_unauthenticated", 0.9),
    "stun_bad_integrity": ("drop_stun_bad_integrity", 0.9),
    "stun_wrong_remote_ufrag": ("drop_stun_wrong_remote_ufrag", 0.9),
    "dtls_client_hello_unknown_peer": ("drop_dtls_unknown_address", 0.9),
}


def host_stats(stack: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(str(stack["work"] / "h1" / "host-h1.sock"))
        s.sendall(b"stats\n")
        return json.loads(s.makefile().readline())


def test_hostile_datagrams_to_udp_3390_are_dropped_by_reason_and_the_live_session_loses_nothing(make_lab):
    lab = make_lab("port-restricted", "port-restricted", private_link=True)
    stack = start_stack(lab)
    host_proc = next(p for p in lab.procs if p.node == "host")
    live = lab.spawn("client", [sys.executable, *client_argv(stack, "--wait-udp", "15", "--count", "5",
                                                             "--hold", "40")])
    assert wait_host_on_udp(stack, 25, live), live.log_path.read_text()[-2000:]
    assert host_sessions(stack)[0]["transport"] == "udp-managed"
    before = host_stats(stack)["managed_listener"]
    out = Path(lab.workdir) / "hostile.json"
    t0 = time.monotonic()
    r = lab.python("crtr", str(SENDER), lab.addr("host"), str(MANAGED_PORT), "pl", str(out), "--spoof",
                   check=False, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    attack_s = time.monotonic() - t0
    sent = json.loads(out.read_text())["sent"]
    assert live.alive(), "the live session ended before the attack did: lengthen --hold"
    # the listener has counted what the kernel delivered once the counters stop moving
    after = host_stats(stack)["managed_listener"]
    for _ in range(50):
        time.sleep(0.1)
        again = host_stats(stack)["managed_listener"]
        if again["dropped_total"] == after["dropped_total"]:
            break
        after = again
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if isinstance(after.get(k), int)}

    total = sum(sent.values())
    problems = []
    for kind, (counter, share) in EXPECTED.items():
        if delta.get(counter, 0) < share * sent[kind]:
            problems.append(f"{kind}: sent {sent[kind]}, {counter} +{delta.get(counter, 0)}")
    malformed = sent["stun_truncated"] + sent["stun_length_lie"] + sent["oversized_stun_malformed"]
    if delta.get("drop_stun_malformed", 0) < 0.9 * malformed:
        problems.append(f"malformed STUN: sent {malformed}, +{delta.get('drop_stun_malformed', 0)}")
    dtls = sum(v for k, v in sent.items() if k.startswith("dtls_"))
    if delta.get("drop_dtls_unknown_address", 0) < 0.9 * dtls:
        problems.append(f"DTLS from an unknown address: sent {dtls}, +{delta.get('drop_dtls_unknown_address', 0)}")
    if delta.get("drop_stun_unknown_ufrag", 0) < sent["stun_unknown_username"] + 0.5 * sent["stun_binding_flood"]:
        problems.append(f"unknown username + flood: +{delta.get('drop_stun_unknown_ufrag', 0)}")
    # (a kernel buffer may lose some of the flood; nearly everything sent must be counted)
    if delta["dropped_total"] < 0.8 * total:
        problems.append(f"only {delta['dropped_total']} of {total} datagrams counted as drops")
    assert not problems, (problems, delta, sent)
    # nothing hostile was answered or learned, nothing reached the session, no handler bug
    assert delta.get("stun_checks_answered", 0) <= 3 * (attack_s + 5) / 5 + 2   # the client's own consent checks
    assert after["learned_addresses"] == before["learned_addresses"]
    assert after.get("internal_error", 0) == 0 and after.get("session_queue_full", 0) == 0
    assert delta.get("rx_dtls", 0) >= sent["spoofed_dtls_from_client_address"]   # the spoofed ones got in

    # the host survived, and the live session carried on untouched
    assert host_proc.alive()
    assert live.popen.wait(90) == 0, live.log_path.read_text()[-3000:]
    info = json.loads([l for l in live.log_path.read_text().splitlines() if l.startswith("{")][-1])
    assert info["hold_error"] is None, info["hold_error"]
    assert info["hold_sent"] == info["hold_echoed_in_order"] > 200
    assert info["hold_transports"] == ["udp-managed"], info["hold_transports"]
    assert info["transport"] == "udp-managed"
    assert host_proc.alive() and host_stats(stack)["registered"]
    print(json.dumps({"sent": sent, "listener_delta": {k: v for k, v in delta.items() if v},
                      "hold_sent": info["hold_sent"], "attack_s": round(attack_s, 1)}))


MITM = Path(__file__).with_name("dtls_mitm.py")

# On the client's router: drop DTLS between host and client both ways (so only the
# impostor's handshake reaches the client, and the host cannot abort it early) and all UDP over the WAN (so no TURN or hole-punched path can be chosen
# instead: the private link is the only UDP route left).
MITM_NFT = """table inet mitm {
  chain mitm_fwd {
    type filter hook forward priority -20; policy accept;
    ip saddr 10.2.0.0/24 udp length > 8 @th,64,8 >= 20 @th,64,8 < 64 counter drop
    ip daddr 10.2.0.0/24 udp length > 8 @th,64,8 >= 20 @th,64,8 < 64 counter drop
    oifname "wan" meta l4proto udp counter drop
    iifname "wan" meta l4proto udp counter drop
  }
}
"""


def test_dtls_man_in_the_middle_is_refused_and_the_session_stays_on_the_relay(make_lab):
    lab = make_lab("port-restricted", "port-restricted", private_link=True)
    stack = start_stack(lab)
    lab.run("crtr", ["nft", "-f", "-"], input=MITM_NFT)
    out = Path(lab.workdir) / "mitm.json"
    mitm = lab.spawn("crtr", [sys.executable, str(MITM), "10.2.0.", "pl", "lan", str(out)], ready="sniffing",
                     ready_timeout=30)
    live = lab.spawn("client", [sys.executable, *client_argv(stack, "--wait-udp", "12", "--count", "5",
                                                             "--hold", "3")], env={"SHORTPATH_LOG": "INFO"})
    assert live.popen.wait(90) == 0, live.log_path.read_text()[-3000:]
    assert mitm.popen.wait(30) == 0, mitm.log_path.read_text()[-3000:]
    result = json.loads(out.read_text())
    log = live.log_path.read_text()
    info = json.loads([l for l in log.splitlines() if l.startswith("{")][-1])
    # the impostor really got to talk DTLS with the client from the host's address ...
    assert result["host_dtls"] > 0 and result["spoofed_sent"] > 0 and result["client_replies"] > 0, result
    # ... and the client refused its certificate, so the session never left the relay
    print(json.dumps(result))
    assert re.search(r"upgrade-failed .*error=fingerprint-mismatch", log), log[-3000:]
    assert info["transport"] == "tcp-relay", info["history"]
    assert all(p["kind"] == "tcp-relay" for p in info["paths"] if p.get("active")), info["paths"]
    assert info["hold_error"] is None and info["hold_sent"] == info["hold_echoed_in_order"] > 20
    assert info["hold_transports"] == ["tcp-relay"]
    assert "udp-managed" not in [h["transport"] for h in info["history"]]
