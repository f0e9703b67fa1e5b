"""Network-facing attacks from issue #11, performed in the namespace lab.

* item 2 -- a STUN check captured on the wire and replayed at the host's managed UDP 3390 from
  another socket must not move the session's DTLS stream there;
* item 3 -- one source holding idle TLS and silent TCP connections to the gateway must not lock
  out a real client (and its host data leg) coming from another site;
* item 5 -- a leaked per-session TURN credential: at most ``user-quota`` allocations, no relay
  to the TURN server's loopback or to denied ranges, a bounded allocation lifetime, and the
  credential stops working at its expiry.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netns_lab import plan

pytestmark = pytest.mark.lab
needs_turnserver = pytest.mark.needs("turnserver")

ROOT = Path(__file__).resolve().parents[2]


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


# ---------------------------------------------------------------------------- item 5: TURN

TURN_PROBE = textwrap.dedent("""
    import asyncio, json, socket, sys, time
    import aioice.stun as stun, aioice.turn as turn
    from shortpath.transport.udp._aioice_compat import turn_inner_protocol

    server, user, pwd, short_user, short_pwd, targets = json.loads(sys.argv[1])
    server = tuple(server)

    async def allocate(u, p):
        try:
            t, proto = await asyncio.wait_for(turn.create_turn_endpoint(
                asyncio.DatagramProtocol, server, u, p), 10)
            return t
        except stun.TransactionFailed as exc:
            return exc.response.attributes["ERROR-CODE"][0]

    class Inbox(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = []
        def datagram_received(self, data, addr):
            self.got.append([addr[0], addr[1], data.decode(errors="replace")])

    async def main():
        out = {}
        # 1. how many allocations does one credential get?
        held, codes = [], []
        for _ in range(8):
            r = await allocate(user, pwd)
            (held.append(r) if not isinstance(r, int) else codes.append(r))
        out["allocations"] = len(held)
        out["refusals"] = codes
        for t in held:
            t.close()
        await asyncio.sleep(1.0)          # let the deletions reach the server
        # 2. who can it reach? a permission (ChannelBind) per target, then a datagram to each
        inbox = Inbox()
        t, _ = await turn.create_turn_endpoint(lambda: inbox, server, user, pwd)
        proto = turn_inner_protocol(t)
        out["bind"] = {}
        for i, (name, host, port) in enumerate(targets):
            try:
                await proto.channel_bind(0x4000 + i, (host, port))
                out["bind"][name] = "ok"
            except stun.TransactionFailed as exc:
                out["bind"][name] = exc.response.attributes["ERROR-CODE"][0]
            except Exception as exc:
                out["bind"][name] = repr(exc)
        for name, host, port in targets:
            t.sendto(("hello " + name).encode(), (host, port))
        await asyncio.sleep(1.5)
        out["echoed"] = sorted({g[2].split("hello ", 1)[-1] for g in inbox.got})
        # 3. the longest lifetime it can ask for
        req = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
        req.attributes["LIFETIME"] = 3600
        resp, _ = await proto.request_with_retry(req)
        out["granted_lifetime"] = resp.attributes["LIFETIME"]
        t.close()
        # 4. a short-lived credential: works now, refused after its expiry
        r = await allocate(short_user, short_pwd)
        out["short_before"] = "ok" if not isinstance(r, int) else r
        if not isinstance(r, int):
            r.close()
        expiry = int(short_user.split(":")[0])
        # The wall clock is what coturn checks, through a time it caches and refreshes about once
        # a second; on a loaded machine (one CI run) 1 s past the expiry was not enough.
        while time.time() <= expiry + 3:
            await asyncio.sleep(0.2)
        r = await allocate(short_user, short_pwd)
        out["short_after"] = "ok" if not isinstance(r, int) else r
        if not isinstance(r, int):
            r.close()
        print(json.dumps(out))

    asyncio.run(main())
""")


def _turn_user_quota() -> int:
    conf = (ROOT / "turnserver_conf" / "lab.conf").read_text()
    return int([l for l in conf.splitlines() if l.startswith("user-quota=")][0].split("=", 1)[1])


@needs_turnserver
def test_leaked_turn_credential_is_bounded(make_lab):
    lab = make_lab("port-restricted", "port-restricted")
    srv = lab.coturn()
    turn_addr = plan.SERVICES["turn"]
    # services the relay must not reach: one on the TURN server's loopback, one on the gateway
    lab.echo_server("core", "127.0.0.1", udp=(7777,))
    lab.echo_server("core", plan.SERVICES["gateway"], udp=(7778,))
    # ... and one it may: on the TURN address itself (a relay-to-relay peer lives there)
    lab.echo_server("core", turn_addr, udp=(7779,))
    user, pwd = srv.credentials("leaked-session", ttl=600)     # what the broker hands a session
    short_user, short_pwd = srv.credentials("short-session", ttl=4)
    targets = [["loopback", "127.0.0.1", 7777], ["gateway", plan.SERVICES["gateway"], 7778],
               ["private-lan", "10.2.0.10", 7777], ["metadata", "169.254.169.254", 80],
               ["turn-address", turn_addr, 7779]]
    args = json.dumps([[srv.host, srv.port], user, pwd, short_user, short_pwd, targets])
    r = lab.python("client", "-c", TURN_PROBE, args, timeout=90, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = _last_json(r.stdout)
    print(json.dumps(out))
    quota = _turn_user_quota()
    # at most the quota of allocations with one credential; the rest refused with 486
    assert out["allocations"] == quota < 8, out
    assert out["refusals"] and set(out["refusals"]) == {486}, out
    # no permission to loopback, the core's other services, private or link-local ranges ...
    for name in ("loopback", "gateway", "private-lan", "metadata"):
        assert out["bind"][name] == 403, (name, out["bind"])
    # ... and nothing came back from them, while the allowed peer did echo (the probe can see)
    assert out["bind"]["turn-address"] == "ok"
    assert out["echoed"] == ["turn-address"], out["echoed"]
    # an allocation lives at most 5 minutes unless refreshed
    assert 0 < out["granted_lifetime"] <= 300
    # the credential stops working at its expiry
    assert out["short_before"] == "ok" and out["short_after"] == 401, out
    assert srv.secret not in srv.log_file.read_text()


# ---------------------------------------------------------------------------- item 2: STUN replay

REPLAYER = textwrap.dedent("""
    import json, os, socket, struct, sys, time
    from scapy.all import IP, UDP, sniff

    target, port, iface, out, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])

    def attrs(payload):
        pos, found = 20, set()
        while pos + 4 <= len(payload):
            kind, n = struct.unpack_from("!HH", payload, pos)
            found.add(kind)
            pos += 4 + n + (4 - n % 4) % 4
        return found

    def nominating(p):
        if not (p.haslayer(UDP) and p.haslayer(IP) and p[IP].dst == target and p[UDP].dport == port):
            return False
        data = bytes(p[UDP].payload)
        return len(data) >= 20 and data[:2] == b"\\x00\\x01" and 0x0025 in attrs(data)   # USE-CANDIDATE

    got = sniff(iface=iface, lfilter=nominating, count=1, timeout=40,
                started_callback=lambda: print("sniffing", flush=True))
    if not got:
        print(json.dumps({"error": "no nominating check seen"}), flush=True)
        sys.exit(1)
    check = bytes(got[0][UDP].payload)
    # from this router's own socket: another address than the client's
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.settimeout(0.05)
    kinds = {"stun": 0, "dtls": 0, "other": 0}
    t_end = time.monotonic() + 8.0
    sent = 0
    while time.monotonic() < t_end:
        if sent < count:
            s.sendto(check, (target, port))
            sent += 1
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        kinds["stun" if data and data[0] < 4 else "dtls" if data and 19 < data[0] < 64 else "other"] += 1
    json.dump({"replayed": sent, "received": kinds, "from": got[0][IP].src + ":" + str(got[0][UDP].sport)},
              open(out, "w"))
    print("done", flush=True)
""")


def _host_listener_stats(stack: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(str(stack["work"] / "h1" / "host-h1.sock"))
        s.sendall(b"stats\n")
        return json.loads(s.makefile().readline())["managed_listener"]


def test_replayed_stun_check_does_not_hijack_the_managed_path(make_lab):
    from netns_lab.scenario import MANAGED_PORT, client_argv, start_stack, wait_host_on_udp

    lab = make_lab("port-restricted", "port-restricted", private_link=True)
    stack = start_stack(lab)
    out = Path(lab.workdir) / "replay.json"
    replayer = lab.spawn("crtr", [sys.executable, "-c", REPLAYER, lab.addr("host"), str(MANAGED_PORT), "pl",
                                  str(out), "30"], ready="sniffing", ready_timeout=30)
    live = lab.spawn("client", [sys.executable, *client_argv(stack, "--wait-udp", "15", "--count", "5",
                                                             "--hold", "20")])
    assert wait_host_on_udp(stack, 25, live), live.log_path.read_text()[-2000:]
    assert replayer.popen.wait(60) == 0, replayer.log_path.read_text()[-3000:]
    result = json.loads(out.read_text())
    stats = _host_listener_stats(stack)
    assert live.popen.wait(90) == 0, live.log_path.read_text()[-3000:]
    info = _last_json(live.log_path.read_text())
    print(json.dumps({"replay": result, "listener": {k: v for k, v in stats.items() if v},
                      "hold_sent": info["hold_sent"], "hold_transports": info["hold_transports"]}))
    # nothing came back to the replayer: no STUN answer, no DTLS stream
    assert result["replayed"] == 30
    assert result["received"] == {"stun": 0, "dtls": 0, "other": 0}, result
    # the replays did reach the host, and were dropped there as replays
    assert stats.get("drop_stun_replayed", 0) >= 25, stats
    # the session kept its managed path and lost nothing
    assert info["hold_error"] is None, info["hold_error"]
    assert info["hold_sent"] == info["hold_echoed_in_order"] > 100
    assert info["hold_transports"] == ["udp-managed"], info["hold_transports"]
    assert stats.get("session_moved", 0) == 0


# ---------------------------------------------------------------------------- item 3: gateway caps

ATTACKER = textwrap.dedent("""
    import asyncio, json, ssl, sys
    gw, port, source, n_tcp, n_tls = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    counts = {"tcp_opened": 0, "tls_opened": 0, "tls_failed": 0, "tcp_now": 0, "tls_now": 0}
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    async def slot(tls):
        # One connection slot, held as long as the gateway lets it live and re-opened a
        # second after it is closed: a sustained attack, not a one-off burst.
        key = "tls" if tls else "tcp"
        while True:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(
                    gw, port, ssl=ctx if tls else None, local_addr=(source, 0)), 5)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                counts["tls_failed" if tls else "tcp_failed"] = counts.get("tls_failed" if tls else "tcp_failed", 0) + 1
                await asyncio.sleep(1.0)
                continue
            counts[key + "_opened"] += 1
            counts[key + "_now"] += 1
            try:
                await r.read(1)          # silence until the gateway closes it
            except (OSError, ssl.SSLError):
                pass
            counts[key + "_now"] -= 1
            w.close()
            await asyncio.sleep(1.0)

    async def main():
        tasks = [asyncio.ensure_future(slot(False)) for _ in range(n_tcp)]
        await asyncio.sleep(2.0)
        tasks += [asyncio.ensure_future(slot(True)) for _ in range(n_tls)]
        await asyncio.sleep(3.0)
        print(json.dumps(counts), flush=True)
        print("holding", flush=True)
        while True:
            await asyncio.sleep(1.0)
            print(json.dumps(counts), flush=True)

    asyncio.run(main())
""")


def test_one_source_cannot_lock_everyone_out_of_the_gateway(make_lab):
    """The gateway runs with a hard fd limit of 256 that start() cannot raise (the issue's
    ``ulimit -n`` case; the same happens at 1024 with more connections). One address in the
    core (the STUN server's) keeps 300 silent TCP and 50 idle TLS connections open, re-opening
    each one a second after the gateway closes it. A real client from the client site
    launches a session (which needs the host's data leg from the host site) at once."""
    from shortpath.auth.tokens import TokenSigner
    from shortpath.config import DEFAULT_GATEWAY_ID

    lab = make_lab("port-restricted", "port-restricted")
    gw_addr, attacker_src = plan.SERVICES["gateway"], plan.SERVICES["stun"]
    work = Path(lab.workdir) / "caps"
    state = work / "gateway"
    state.mkdir(parents=True)
    cfg = work / "gateway.toml"
    cfg.write_text(f'[gateway]\nlisten = "{gw_addr}:443"\nstate_dir = "{state}"\n\n'
                   '[[pool]]\nname = "desktop"\nmax_sessions = 10\n\n[pool.shortpath]\nenabled = false\n')
    signer = TokenSigner.load_or_create(str(state / "signing.key"))
    now = time.time()
    for name, tok in (("host.tok", signer.mint("host", "h1", DEFAULT_GATEWAY_ID, 3600, now, pool="desktop")),
                      ("user.tok", signer.mint("user", "alice", DEFAULT_GATEWAY_ID, 3600, now,
                                               resources=["desktop"]))):
        (work / name).write_text(tok)
        (work / name).chmod(0o600)
    py = sys.executable
    lab.spawn("core", ["prlimit", "--nofile=256:256", "--", py, "-m", "shortpath", "gateway",
                       "--config", str(cfg), "--state", str(state)], ready="gateway-ready", ready_timeout=20)
    lab.spawn("host", [py, "-m", "shortpath", "host", "--gateway", f"{gw_addr}:443", "--host-id", "h1",
                       "--token-file", str(work / "host.tok"), "--ca", str(state / "gateway.crt"),
                       "--state", str(work / "h1")], ready="host-registered", ready_timeout=20)
    attacker = lab.spawn("core", [py, "-c", ATTACKER, gw_addr, "443", attacker_src, "300", "50"],
                         ready="holding", ready_timeout=120)
    t0 = time.monotonic()
    r = lab.python("client", "-m", "shortpath", "connect", "--gateway", f"{gw_addr}:443",
                   "--token-file", str(work / "user.tok"), "--ca", str(state / "gateway.crt"),
                   "--json", "--count", "5", "--no-shortpath", check=False, timeout=60)
    took = time.monotonic() - t0
    assert attacker.alive(), "the attacker let go before the client ran"
    held = _last_json(attacker.log_path.read_text())
    print(json.dumps({"attacker": held, "client_s": round(took, 2), "rc": r.returncode}))
    assert held["tcp_opened"] >= 300, held   # the kernel completes TCP handshakes either way
    assert r.returncode == 0, r.stderr[-3000:]
    info = _last_json(r.stdout)
    assert info["transport"] == "tcp-relay"
    # at once: not after an attacker's slot timed out (handshake_timeout is 10 s)
    assert info["setup_ms"] < 3000, info["setup_ms"]
    # the attacker never held more than its per-source share of idle TLS
    assert held["tls_now"] <= 32, held
    lab.stop(attacker)
