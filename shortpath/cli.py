"""``shortpath`` command line.

  shortpath demo                         gateway + host + client on loopback, prints the path taken
  shortpath gateway [--config F]         run the gateway (and its broker)
  shortpath token user|host ...          mint a signed token with the gateway's key
  shortpath host --gateway H:P ...       run a session host (dials out only)
  shortpath connect --gateway H:P ...    launch a resource and exchange echo traffic
  shortpath admin hosts|sessions|drain|undrain|stats   local admin socket of a running gateway
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import time

from . import log
from .config import DEFAULT_GATEWAY_ID, load_gateway_config, state_path
from .errors import ShortpathError


def _read_token(args) -> str:
    if getattr(args, "token_file", None):
        with open(args.token_file) as f:
            return f.read().strip()
    if getattr(args, "token", None):
        return args.token
    env = os.environ.get("SHORTPATH_TOKEN")
    if env:
        return env
    raise ShortpathError("no token: pass --token-file, --token or set SHORTPATH_TOKEN")


def _run_until_signal(coro_factory) -> int:
    async def runner():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await coro_factory(stop)
    return asyncio.run(runner())


def cmd_demo(args) -> int:
    from .demo import main as demo_main
    return demo_main(args.seconds)


def cmd_gateway(args) -> int:
    from .gateway import Gateway
    listen_host = listen_port = None
    if args.listen:
        listen_host, _, port = args.listen.rpartition(":")
        listen_port = int(port)
    cfg = load_gateway_config(args.config, state_dir=args.state, listen_host=listen_host or None,
                              listen_port=listen_port)

    async def run(stop):
        gw = Gateway(cfg)
        await gw.start()
        print(json.dumps({"event": "gateway-ready", "port": gw.port, "cert": gw.cert_path,
                          "admin": state_path(cfg.state_dir, "admin.sock")}), flush=True)
        await stop.wait()
        await gw.stop()
        return 0
    return _run_until_signal(run)


def cmd_token(args) -> int:
    from .auth.tokens import TokenSigner
    cfg = load_gateway_config(args.config, state_dir=args.state)
    signer = TokenSigner.load_or_create(state_path(cfg.state_dir, "signing.key"))
    if args.kind == "user":
        resources = [r for r in (args.resources or "").split(",") if r]
        tok = signer.mint("user", args.sub, cfg.gateway_id, args.ttl, time.time(), resources=resources)
    else:
        tok = signer.mint("host", args.sub, cfg.gateway_id, args.ttl, time.time(), pool=args.pool)
    print(tok)
    return 0


def cmd_host(args) -> int:
    from .app.desktop import host_handler
    from .host import HostAgent
    token = _read_token(args)

    async def run(stop):
        from .netaddr import parse_hostport
        managed = parse_hostport(args.managed, 3390) if args.managed else None
        udp = {"host_addresses": args.udp_address} if args.udp_address else {}
        if args.turn_ca:
            udp["turn_cafile"] = args.turn_ca
        agent = HostAgent(args.gateway, token, args.host_id, host_handler, state_dir=args.state, cafile=args.ca,
                          managed=managed, udp=udp)
        agent.start()
        reg = asyncio.ensure_future(agent.registered.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({reg, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if agent.registered.is_set():
            print(json.dumps({"event": "host-registered", "host_id": args.host_id,
                              "fingerprint": agent.fingerprint}), flush=True)
        await stopper
        reg.cancel()
        await agent.stop()
        return 0
    return _run_until_signal(run)


async def _hold(session, seconds: float) -> dict:
    """Keep the session busy: a numbered, checksummed echo every 50 ms for ``seconds``."""
    from .app.desktop import check_numbered, numbered
    end = time.monotonic() + seconds
    sent = ok = 0
    error = None
    transports = []
    try:
        while time.monotonic() < end:
            await session.send(numbered(sent))
            sent += 1
            got = check_numbered(await asyncio.wait_for(session.recv(), 5.0))
            if got != ok:
                raise ShortpathError(f"echo {got} arrived when {ok} was expected")
            ok += 1
            if not transports or transports[-1] != session.info.transport:
                transports.append(session.info.transport)
            await asyncio.sleep(0.05)
    except (ShortpathError, asyncio.TimeoutError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {"hold_sent": sent, "hold_echoed_in_order": ok, "hold_error": error, "hold_transports": transports}


def _dump_tasks_on_sigusr2(loop) -> None:
    """``kill -USR2 <client pid>`` prints every asyncio task's stack to stderr: how a
    hung client explains itself (the lab runner sends it before giving up)."""
    def dump():
        for task in asyncio.all_tasks(loop):
            print(f"--- task {task.get_name()} {task!r}"[:400], file=sys.stderr)
            task.print_stack(limit=12, file=sys.stderr)
        sys.stderr.flush()
    loop.add_signal_handler(signal.SIGUSR2, dump)


async def _recv(session, what: str, timeout: float = 10.0) -> bytes:
    """A reply, or a clear error: the CLI never waits forever on a silent session."""
    try:
        return await asyncio.wait_for(session.recv(), timeout)
    except asyncio.TimeoutError:
        raise ShortpathError(f"no reply within {timeout:.0f} s ({what}) on {session.info.transport}") from None


def cmd_connect(args) -> int:
    from .client import connect, feed
    token = _read_token(args)

    async def run():
        _dump_tasks_on_sigusr2(asyncio.get_running_loop())
        if args.feed:
            print(json.dumps(await feed(args.gateway, token, cafile=args.ca)))
            return 0
        t0 = time.monotonic()
        udp = {"host_addresses": args.udp_address} if args.udp_address else {}
        if args.turn_ca:
            udp["turn_cafile"] = args.turn_ca
        session = await connect(args.gateway, token, args.resource, cafile=args.ca, udp=udp,
                                shortpath=not args.no_shortpath)
        setup = (time.monotonic() - t0) * 1000
        async with session:
            await session.send(b"echo")
            if args.wait_udp > 0 and session.driver is not None:
                end = time.monotonic() + args.wait_udp
                while session.info.transport == "tcp-relay" and time.monotonic() < end:
                    await session.send(b"probe")      # traffic lets the path manager act
                    await _recv(session, "waiting for UDP")
                    await asyncio.sleep(0.05)
            rtts = []
            for i in range(args.count):
                payload = b"%08d" % i + b"x" * 56
                t = time.monotonic()
                await session.send(payload)
                if await _recv(session, f"echo {i}") != payload:
                    raise ShortpathError("echo mismatch")
                rtts.append((time.monotonic() - t) * 1000)
            hold = {}
            if args.hold > 0:
                hold = await _hold(session, args.hold)
            info = session.info.to_dict()
        info.update(hold)
        info.update({"setup_ms": round(setup, 2), "echo_count": len(rtts),
                     "echo_rtt_p50_ms": round(statistics.median(rtts), 3) if rtts else None})
        if args.json:
            print(json.dumps(info))
        else:
            print(f"session {info['session_id']} transport={info['transport']} setup={setup:.1f} ms "
                  f"echo p50={info['echo_rtt_p50_ms']} ms over {len(rtts)} messages")
        return 0
    return asyncio.run(run())


def cmd_admin(args) -> int:
    cfg = load_gateway_config(args.config, state_dir=args.state)
    path = state_path(cfg.state_dir, "admin.sock")
    req = {"cmd": args.action}
    if args.action in ("drain", "undrain"):
        if not args.host:
            raise ShortpathError(f"admin {args.action} needs a host id")
        req = {"cmd": "drain", "host": args.host, "on": args.action == "drain"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as exc:
            raise ShortpathError(f"cannot reach the gateway admin socket {path}: {exc.strerror}") from None
        s.sendall((json.dumps(req) + "\n").encode())
        resp = json.loads(s.makefile().readline())
    if not resp.get("ok"):
        raise ShortpathError(resp.get("error", "admin command failed"))
    if args.json:
        print(json.dumps(resp))
    elif "hosts" in resp:
        print(f"{'HOST':16} {'POOL':12} {'STATUS':12} {'SESSIONS':>8} {'PENDING':>7} {'SEEN':>6}")
        for h in resp["hosts"]:
            print(f"{h['host_id']:16} {h['pool']:12} {h['status']:12} {h['sessions']:>8} {h['pending']:>7} "
                  f"{h['last_seen_s']:>5}s")
    elif "sessions" in resp:
        for s_ in resp["sessions"]:
            print(f"{s_['session_id']} user={s_['user']} host={s_['host_id']} resource={s_['resource']} "
                  f"age={s_['age_s']}s")
    else:
        print(json.dumps({k: v for k, v in resp.items() if k != "ok"}))
    return 0


def cmd_stats(args) -> int:
    path = os.path.join(args.state, f"host-{args.host_id}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as exc:
            raise ShortpathError(f"cannot reach host {args.host_id} at {path}: {exc.strerror}") from None
        s.sendall(b"stats\n")
        data = json.loads(s.makefile().readline())
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"host {data['host_id']} registered={data['registered']} sessions={len(data['sessions'])}")
    ml = data.get("managed_listener")
    if ml:
        drops = {k[5:]: v for k, v in ml.items() if k.startswith("drop_") and v}
        print(f"managed listener {ml['address'][0]}:{ml['address'][1]} drops={drops or 0}")
    for sess in data["sessions"]:
        ttu = sess.get("time_to_udp")
        print(f"\nsession {sess['session_id']} user={sess['user']} transport={sess['transport']} "
              f"rtt={sess['rtt_ms']} ms time-to-udp={'-' if ttu is None else f'{ttu * 1000:.0f} ms'}")
        for p in sess["paths"]:
            lc, rc = p.get("local_candidate"), p.get("remote_candidate")
            cands = f" {lc['type']} {lc['ip']}:{lc['port']} -> {rc['type']} {rc['ip']}:{rc['port']}" if lc and rc else ""
            q = p.get("quality") or {}
            qual = f" probe-loss={q['probe_loss']:.1%} probe-rtt={q['probe_rtt_ms']} ms" if q.get("probes") else ""
            star = "*" if p.get("active") else " "
            print(f" {star}path {p['kind']:<12} sent={p['bytes_sent']} recv={p['bytes_received']}{cands}{qual}")
        for h in sess["history"]:
            print(f"  +{h['t'] - sess['started_at']:8.3f}s {h['event']:<11} {h['transport']:<12} {h['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shortpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", default=os.environ.get("SHORTPATH_LOG", "WARNING"), help="log level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run gateway, host and client on loopback and show the path")
    d.add_argument("--seconds", type=float, default=2.0, help="length of the synthetic desktop stream")
    d.set_defaults(func=cmd_demo)

    def common(sp, config=True):
        sp.add_argument("--state", default=None, help="state directory (keys, certs, admin socket)")
        if config:
            sp.add_argument("--config", default=None, help="gateway TOML config")

    g = sub.add_parser("gateway", help="run the gateway and broker")
    common(g)
    g.add_argument("--listen", default=None, help="host:port (default from config, else 127.0.0.1:4443)")
    g.set_defaults(func=cmd_gateway)

    t = sub.add_parser("token", help="mint a token with the gateway's signing key")
    common(t)
    t.add_argument("kind", choices=["user", "host"])
    t.add_argument("--sub", required=True, help="user name, or host id for a host token")
    t.add_argument("--resources", default="", help="user: comma-separated pools the user may launch")
    t.add_argument("--pool", default="desktop", help="host: the pool it registers into")
    t.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    t.set_defaults(func=cmd_token)

    h = sub.add_parser("host", help="run a session host (outbound connections only)")
    h.add_argument("--gateway", required=True)
    h.add_argument("--host-id", required=True)
    h.add_argument("--token", default=None)
    h.add_argument("--token-file", default=None)
    h.add_argument("--ca", default=None, help="the gateway's certificate (pinned)")
    h.add_argument("--state", default="./host-state")
    h.add_argument("--managed", default=None, metavar="IP:PORT",
                   help="listen for managed Shortpath on this UDP address (e.g. 10.1.0.2:3390); off by default")
    h.add_argument("--udp-address", action="append", default=None, metavar="IP",
                   help="local IP to gather ICE candidates on (repeatable; default: all interfaces)")
    h.add_argument("--turn-ca", default=None, help="CA file to verify the TURN server's TLS certificate")
    h.set_defaults(func=cmd_host)

    c = sub.add_parser("connect", help="launch a resource and run an echo exchange")
    c.add_argument("--gateway", required=True)
    c.add_argument("--resource", default="desktop")
    c.add_argument("--token", default=None)
    c.add_argument("--token-file", default=None)
    c.add_argument("--ca", default=None)
    c.add_argument("--count", type=int, default=20)
    c.add_argument("--feed", action="store_true", help="only list the resources")
    c.add_argument("--udp-address", action="append", default=None, metavar="IP",
                   help="local IP to gather ICE candidates on (repeatable)")
    c.add_argument("--no-shortpath", action="store_true", help="stay on the tcp-relay")
    c.add_argument("--hold", type=float, default=0.0,
                   help="after the echo test, keep echoing numbered messages for this many seconds")
    c.add_argument("--turn-ca", default=None, help="CA file to verify the TURN server's TLS certificate")
    c.add_argument("--wait-udp", type=float, default=3.0,
                   help="seconds to wait for the UDP upgrade before the echo test (0: do not wait)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_connect)

    st = sub.add_parser("stats", help="per-session path, candidates, RTT, bytes and switch history of a running host")
    st.add_argument("--state", default="./host-state", help="the host's state directory")
    st.add_argument("--host-id", required=True)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    a = sub.add_parser("admin", help="talk to a running gateway's local admin socket")
    common(a)
    a.add_argument("action", choices=["hosts", "sessions", "drain", "undrain", "stats"])
    a.add_argument("host", nargs="?")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_admin)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.log)
    try:
        return args.func(args)
    except ShortpathError as exc:
        print(f"shortpath: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
