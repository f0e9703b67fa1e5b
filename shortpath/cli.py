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
import contextlib
import errno
import json
import math
import os
import signal
import socket
import ssl
import stat
import statistics
import sys
import time

from . import log
from .config import DEFAULT_GATEWAY_ID, load_gateway_config, state_path
from .errors import AuthError, ConfigError, PathError, ShortpathError
from .runtime import settle_gc

#: How long past ``exp`` a verifier still accepts a token (clock skew between the
#: minting and the checking machine); the value lives in auth/tokens.py.
_SKEW_HELP = "verifiers accept a token up to 30 s past its expiry (clock-skew allowance)"


def _warn(text: str) -> None:
    print(f"shortpath: warning: {text}", file=sys.stderr, flush=True)


def _read_token(args) -> str:
    """The token from --token-file (preferred), --token or SHORTPATH_TOKEN.

    A token on the command line is visible to every local user (``ps``,
    /proc/PID/cmdline): it works, with a warning. SHORTPATH_TOKEN is visible to
    the same user and root (/proc/PID/environ) and to child processes."""
    path = getattr(args, "token_file", None)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                mode = os.fstat(f.fileno()).st_mode
                token = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--token-file {path} does not hold a token (not text)") from None
        if not token:
            raise ConfigError(f"--token-file {path} is empty")
        if stat.S_IMODE(mode) & 0o077:
            _warn(f"--token-file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                  f"chmod 600 {path}")
        return token
    if getattr(args, "token", None):
        _warn("--token puts the token in the process list where any local user can read it; "
              "prefer --token-file FILE (mode 0600)")
        return args.token
    env = os.environ.get("SHORTPATH_TOKEN", "").strip()
    if env:
        return env
    raise ConfigError("no token: pass --token-file FILE (or --token, or set SHORTPATH_TOKEN)")


def _check_ca(path: str | None, option: str = "--ca") -> None:
    """Fail early, in one line, when a CA file is missing or holds no certificate."""
    if not path:
        return
    from .auth import certs
    try:
        certs.client_context(path)
    except ssl.SSLError:
        raise ConfigError(f"{option} {path} holds no PEM certificate; pass the gateway's certificate "
                          f"(gateway.crt in the gateway's --state directory)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {option} {path}: {exc.strerror or exc}") from None


def _gateway_failure(exc: BaseException | None, gateway: str, ca: str | None,
                     waiting_for: str = "the gateway") -> ShortpathError | None:
    """One sentence for a failure to reach or talk to the gateway (None if ``exc``
    is not that kind of failure). Codes: ``gateway-certificate`` (wrong or missing
    --ca), ``gateway-unreachable`` (refused, timed out, TLS or connection failed)."""
    def unreachable(text: str) -> PathError:
        return PathError(text, code="gateway-unreachable")
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or "certificate verify failed"
        if ca:
            return AuthError(f"certificate verify failed ({why}): the gateway at {gateway} does not present "
                             f"the certificate in --ca {ca}; pass that gateway's own gateway.crt (in its "
                             f"--state directory)", code="gateway-certificate")
        return AuthError(f"certificate verify failed ({why}): the system's CAs do not trust the gateway at "
                         f"{gateway}; pass --ca with its gateway.crt (in the gateway's --state directory)",
                         code="gateway-certificate")
    if isinstance(exc, ConnectionRefusedError):
        return unreachable(f"connection refused by {gateway}: no gateway listens there (is it running, and "
                           f"is that the port it printed?)")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return unreachable(f"timed out waiting for {waiting_for} at {gateway}")
    if isinstance(exc, ssl.SSLError):
        return unreachable(f"TLS with {gateway} failed: {exc.reason or exc}")
    if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
        return unreachable(f"the gateway at {gateway} closed the connection")
    if isinstance(exc, OSError):
        return unreachable(f"cannot reach the gateway at {gateway}: {exc.strerror or exc}")
    return None


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
    from .netaddr import parse_hostport
    listen_host = listen_port = None
    if args.listen:
        if ":" not in args.listen:
            raise ConfigError(f"bad --listen {args.listen!r}: expected host:port")
        listen_host, listen_port = parse_hostport(args.listen)
    cfg = load_gateway_config(args.config, state_dir=args.state, listen_host=listen_host or None,
                              listen_port=listen_port)
    if args.redis or args.gateway_id or args.advertise:   # a gateway cluster (issue #14, docs/config.md)
        import dataclasses
        cl = dataclasses.replace(cfg.cluster, **{k: v for k, v in (("redis", args.redis), ("id", args.gateway_id),
                                                                   ("advertise", args.advertise)) if v})
        if not cl.redis:
            raise ConfigError("--gateway-id/--advertise need --redis URL (or [cluster] redis in the config)")
        cfg = dataclasses.replace(cfg, cluster=cl)

    async def run(stop):
        gw = Gateway(cfg)
        await gw.start()
        settle_gc()              # short collector pauses from here on (shortpath/runtime.py)
        metrics = None
        if args.metrics:       # Prometheus /metrics (shortpath/metrics.py)
            from .metrics import serve_gateway
            try:
                metrics = await serve_gateway(gw, args.metrics)
            except BaseException:
                await gw.stop()
                raise
        print(json.dumps({"event": "gateway-ready", "port": gw.port, "cert": gw.cert_path,
                          "metrics": f"http://{metrics.host}:{metrics.port}/metrics" if metrics else None,
                          "web": f"https://{cfg.listen_host}:{gw.port}/",    # the browser client (docs/browser.md)
                          "admin": state_path(cfg.state_dir, "admin.sock"),
                          "signing_key": gw.signer.public_hex()}), flush=True)   # for host --signing-key
        await stop.wait()
        if metrics is not None:
            await metrics.stop()
        await gw.stop()
        return 0
    return _run_until_signal(run)


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (also when the file existed with
    another mode), never through a symbolic link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"--out {path} is a symbolic link; refusing to write a token through it") from None
        raise ConfigError(f"cannot write --out {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"--out {path} is not a regular file")
        os.fchmod(fd, 0o600)
        f.write(text + "\n")


def cmd_token(args) -> int:
    from .auth.tokens import TokenSigner
    if not (math.isfinite(args.ttl) and args.ttl > 0):
        raise ConfigError(f"--ttl must be a positive, finite number of seconds (got {args.ttl})")
    cfg = load_gateway_config(args.config, state_dir=args.state)
    signer = TokenSigner.load_or_create(state_path(cfg.state_dir, "signing.key"))
    if args.kind == "user":
        resources = [r for r in (args.resources or "").split(",") if r]
        tok = signer.mint("user", args.sub, cfg.gateway_id, args.ttl, time.time(), resources=resources)
    else:
        tok = signer.mint("host", args.sub, cfg.gateway_id, args.ttl, time.time(), pool=args.pool)
    if args.out:
        _write_private(args.out, tok)
        return 0
    with contextlib.suppress(OSError, ValueError):
        st = os.fstat(sys.stdout.fileno())
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            _warn(f"the token went to a file other users can read (mode {stat.S_IMODE(st.st_mode):o}); "
                  f"use --out FILE, which writes it with mode 0600")
    print(tok)
    return 0


def _load_app(spec: str):
    """``module:attribute`` -> the host application (an async callable taking a Session)."""
    import importlib
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"--app wants MODULE:ATTRIBUTE, not {spec!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--app {spec}: {exc}") from None


def cmd_host(args) -> int:
    from .host import HostAgent
    host_handler = _load_app(args.app)
    token = _read_token(args)
    _check_ca(args.ca)
    _check_ca(args.turn_ca, "--turn-ca")

    async def run(stop):
        from .netaddr import parse_hostport
        managed = parse_hostport(args.managed, 3390) if args.managed else None
        udp = {"host_addresses": args.udp_address} if args.udp_address else {}
        if args.turn_ca:
            udp["turn_cafile"] = args.turn_ca
        agent = HostAgent(list(args.gateway), token, args.host_id, host_handler, state_dir=args.state, cafile=args.ca,
                          managed=managed, udp=udp, signing_key=args.signing_key)
        metrics = None
        if args.metrics:       # Prometheus /metrics (shortpath/metrics.py)
            from .metrics import serve_host
            metrics = await serve_host(agent, args.metrics)
            print(json.dumps({"event": "host-metrics", "metrics": f"http://{metrics.host}:{metrics.port}/metrics"}),
                  flush=True)
        fatal: list[ShortpathError] = []

        def on_retry(exc: BaseException | None, delay: float) -> None:
            err = _gateway_failure(exc, "%s:%s" % agent.gateway, args.ca)
            if isinstance(exc, ssl.SSLCertVerificationError):
                fatal.append(err)        # the pinned certificate will not change: stop
                stop.set()
                return
            if err is not None:
                why = err.message
            elif isinstance(exc, ShortpathError):
                why = f"{exc.code}: {exc.message}"
            elif exc is not None:
                why = f"{type(exc).__name__}: {exc}"
            else:
                why = "the gateway closed the control channel"
            print(f"shortpath: host {args.host_id}: retrying in {delay:.1f} s: {why}", file=sys.stderr, flush=True)

        agent.on_retry = on_retry

        async def announce():
            await agent.registered.wait()
            print(json.dumps({"event": "host-registered", "host_id": args.host_id,
                              "fingerprint": agent.fingerprint}), flush=True)

        settle_gc(udp=True)      # short collector pauses from here on (shortpath/runtime.py)
        agent.start()
        waits = [asyncio.ensure_future(w) for w in (announce(), agent.refused.wait(), stop.wait())]
        await asyncio.wait(waits[1:], return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await agent.stop()
        if metrics is not None:
            await metrics.stop()
        if fatal:
            raise fatal[0]
        if agent.refused.is_set() and agent.last_error is not None:
            err = agent.last_error
            raise ShortpathError(f"host {args.host_id} gave up registering with the gateway at "
                                 f"{'%s:%s' % agent.gateway}: "
                                 f"{err.message}", code=err.code)
        return 0
    return _run_until_signal(run)


async def _hold(session, seconds: float) -> tuple[dict, ShortpathError | None]:
    """Keep the session busy: a numbered, checksummed echo every 50 ms for ``seconds``.
    Returns the counts and, if the hold ended early, why (as a ShortpathError)."""
    from .app.desktop import check_numbered, numbered
    t0 = time.monotonic()
    end = t0 + seconds
    sent = ok = 0
    error = failure = None
    transports = []
    try:
        while time.monotonic() < end:
            await session.send(numbered(sent))
            sent += 1
            try:
                got = check_numbered(await asyncio.wait_for(session.recv(), 5.0))
            except asyncio.TimeoutError:
                raise PathError(f"no echo of message {sent - 1} within 5 s on {session.info.transport}") from None
            if got != ok:
                raise ShortpathError(f"echo {got} arrived when {ok} was expected")
            ok += 1
            if not transports or transports[-1] != session.info.transport:
                transports.append(session.info.transport)
            await asyncio.sleep(0.05)
    except (ShortpathError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        why = exc.message if isinstance(exc, ShortpathError) else f"bad echo: {exc}"
        failure = ShortpathError(f"the session ended {time.monotonic() - t0:.1f} s into --hold {seconds:g} "
                                 f"({ok} of {sent} echoed): {why}",
                                 code=exc.code if isinstance(exc, ShortpathError) else "protocol")
    return ({"hold_sent": sent, "hold_echoed_in_order": ok, "hold_error": error, "hold_transports": transports},
            failure)


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


async def _connect_workload(session, args, setup_ms: float) -> int:
    """``connect --workload``: one progress line a second, then the summary (plain or --json
    lines). The measuring is shortpath/app/workload.py; a session that ends early prints the
    partial summary, then fails (exit 2)."""
    from .app.workload import WorkloadFailed, format_second, format_summary, run_workload
    if args.wait_udp > 0 and session.shortpath_enabled:
        end = time.monotonic() + args.wait_udp      # pings (not app messages) let the upgrade finish
        while session.info.transport == "tcp-relay" and time.monotonic() < end:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await session.ping(timeout=1.0)
            await asyncio.sleep(0.05)
    head = {"session_id": session.session_id, "setup_ms": round(setup_ms, 2), "workload": args.workload,
            "seconds": args.seconds, "transport": session.info.transport}
    if args.json:
        print(json.dumps({"event": "start", **head}), flush=True)
    else:
        print(f"session {head['session_id']} on {head['transport']} (setup {setup_ms:.1f} ms): "
              f"{args.workload} workload for {args.seconds:g} s", flush=True)

    def progress(rec: dict) -> None:
        print(json.dumps({"event": "progress", **rec}) if args.json else format_second(rec), flush=True)
    failure = None
    try:
        summary = await run_workload(session, args.workload, args.seconds, on_second=progress)
    except WorkloadFailed as exc:
        summary, failure = exc.summary, exc
    if args.json:
        print(json.dumps({"event": "summary", **head, **summary, "error": failure and failure.message}),
              flush=True)
    else:
        print("\n".join(format_summary(summary)), flush=True)
    if failure is not None:
        raise failure          # after the summary: one error line on stderr, exit 2
    return 0


def cmd_connect(args) -> int:
    from .client import connect, feed
    token = _read_token(args)
    _check_ca(args.ca)
    _check_ca(args.turn_ca, "--turn-ca")
    _check_ca(getattr(args, "host_ca", None), "--host-ca")
    if args.workload and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ConfigError(f"--seconds must be a positive, finite number (got {args.seconds})")
    choice = None
    if len(args.gateway) > 1:    # a gateway cluster: measure and pick (client/gateway_choice.py)
        from .client.gateway_choice import choose, measure
        choice = choose(asyncio.run(measure(args.gateway, args.ca)))
        if not args.json:
            print(f"gateway {choice.gateway}: {choice.reason}", flush=True)
    all_gateways = list(args.gateway)        # a resume may go through any of them (#15)
    args.gateway = choice.gateway if choice else args.gateway[0]

    async def reach(coro):
        """Await a call that dials the gateway; a failure to reach it becomes one sentence."""
        try:
            return await coro
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            err = _gateway_failure(exc, args.gateway, args.ca, "the gateway (or the host behind it)")
            if err is None:
                raise
            raise err from None

    async def run():
        _dump_tasks_on_sigusr2(asyncio.get_running_loop())
        if args.feed:
            print(json.dumps(await reach(feed(args.gateway, token, cafile=args.ca))))
            return 0
        t0 = time.monotonic()
        udp = {"host_addresses": args.udp_address} if args.udp_address else {}
        if args.turn_ca:
            udp["turn_cafile"] = args.turn_ca
        session = await reach(connect(args.gateway, token, args.resource, cafile=args.ca, udp=udp,
                                      shortpath=not args.no_shortpath, host_ca=args.host_ca,
                                      gateways=all_gateways))
        setup = (time.monotonic() - t0) * 1000
        settle_gc(udp=session.shortpath_enabled)   # short collector pauses (shortpath/runtime.py)
        async with session:
            if args.workload:
                return await _connect_workload(session, args, setup)
            await session.send(b"echo")
            if args.wait_udp > 0 and session.shortpath_enabled:
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
            hold, failure = {}, None
            if args.hold > 0:
                hold, failure = await _hold(session, args.hold)
            info = session.info.to_dict()
        info.update(hold)
        info.update({"setup_ms": round(setup, 2), "echo_count": len(rtts),
                     "echo_rtt_p50_ms": round(statistics.median(rtts), 3) if rtts else None})
        if choice is not None:
            info["gateway_choice"] = choice.to_dict()
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            held = (f"; held {hold['hold_echoed_in_order']}/{hold['hold_sent']} echoes in order" if hold else "")
            print(f"session {info['session_id']} transport={info['transport']} setup={setup:.1f} ms "
                  f"echo p50={info['echo_rtt_p50_ms']} ms over {len(rtts)} messages{held}", flush=True)
        if failure is not None:
            raise failure        # after the summary: one error line on stderr, exit 2
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
    if args.action == "revoke":   # a host id and/or --jti token ids; live registrations are cut at once
        if not args.host and not args.jti:
            raise ShortpathError("admin revoke needs a host id and/or --jti TOKEN_ID")
        req = {"cmd": "revoke", "hosts": [args.host] if args.host else [], "jtis": args.jti or []}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as exc:
            raise ConfigError(f"cannot reach the gateway admin socket {path}: {exc.strerror} (is a gateway "
                              f"running with this --state?)") from None
        s.sendall((json.dumps(req) + "\n").encode())
        try:
            resp = json.loads(s.makefile().readline())
        except ValueError:
            raise ShortpathError(f"the gateway closed the admin socket {path} without an answer") from None
    if not resp.get("ok"):
        raise ShortpathError(resp.get("error", "admin command failed"))
    if args.json:
        print(json.dumps(resp))
    elif "hosts" in resp and not resp["hosts"]:
        print("no hosts registered")
    elif "sessions" in resp and not resp["sessions"]:
        print("no sessions")
    elif "hosts" in resp:
        print(f"{'HOST':16} {'POOL':12} {'STATUS':12} {'SESSIONS':>8} {'PENDING':>7} {'SEEN':>6}"
              + ("  GATEWAY" if any("gateway" in h for h in resp["hosts"]) else ""))
        for h in resp["hosts"]:
            print(f"{h['host_id']:16} {h['pool']:12} {h['status']:12} {h['sessions']:>8} {h['pending']:>7} "
                  f"{h['last_seen_s']:>5}s" + (f"  {h['gateway'] or '-'}" if "gateway" in h else ""))
    elif "gateways" in resp:
        for g_ in resp["gateways"]:
            print(f"{g_['gateway']:16} {g_['address'] or '-':22} connections={g_['connections']} "
                  f"hosts={g_['hosts']} sessions={g_['sessions']} updated {g_['age_s']}s ago"
                  + ("  (this gateway)" if g_["self"] else ""))
    elif "sessions" in resp:
        for s_ in resp["sessions"]:
            print(f"{s_['session_id']} user={s_['user']} host={s_['host_id']} resource={s_['resource']} "
                  f"age={s_['age_s']}s")
    else:
        print(json.dumps({k: v for k, v in resp.items() if k != "ok"}))
    return 0


def cmd_ca(args) -> int:
    from .auth import ca
    if args.action == "init":
        path = ca.init(args.ca_dir)
        print(json.dumps({"event": "ca-ready", "cert": path}))
        return 0
    if not args.host_id or not args.cert:
        raise ConfigError("ca sign needs --host-id and --cert")
    out = ca.sign_host(args.ca_dir, args.host_id, args.cert, args.out, days=args.days)
    print(json.dumps({"event": "host-cert-signed", "host_id": args.host_id, "cert": out}))
    return 0


def cmd_netcheck(args) -> int:
    """UDP, NAT behaviour (RFC 5780), STUN/TURN over TCP/TLS, managed port, gateways and the pick."""
    from . import netcheck
    if not (args.stun or args.turn or args.turn_tls or args.managed or args.gateway):
        raise ConfigError("netcheck needs something to check: --stun, --turn, --turn-tls, --managed or --gateway")
    _check_ca(args.ca)
    _check_ca(args.turn_ca, "--turn-ca")
    report = asyncio.run(netcheck.run(stun=args.stun, turn=args.turn, turn_tls=args.turn_tls,
                                      turn_cafile=args.turn_ca, managed=args.managed,
                                      gateways=args.gateway or (), cafile=args.ca, timeout=args.timeout))
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print("\n".join(netcheck.format_report(report)), flush=True)
    return 0


def cmd_stats(args) -> int:
    path = os.path.join(args.state, f"host-{args.host_id}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as exc:
            raise ConfigError(f"cannot reach host {args.host_id} at {path}: {exc.strerror} (is that host "
                              f"running with this --state?)") from None
        s.sendall(b"stats\n")
        data = json.loads(s.makefile().readline())
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"host {data['host_id']} registered={data['registered']} sessions={len(data['sessions'])}")
    if not data["sessions"]:
        print("no live sessions (stats lists live sessions only; ended ones are not kept)")
    ml = data.get("managed_listener")
    if ml:
        drops = {k[5:]: v for k, v in ml.items() if k.startswith("drop_") and v}
        print(f"managed listener {ml['address'][0]}:{ml['address'][1]} drops={drops or 0}")
    for sess in data["sessions"]:
        ttu = sess.get("time_to_udp")
        print(f"\nsession {sess['session_id']} user={sess['user']} transport={sess['transport']} "
              f"rtt={sess['rtt_ms']} ms time-to-udp={'-' if ttu is None else f'{ttu * 1000:.0f} ms'}"
              f" resumes={sess.get('resumes', 0)} relay-replaced={sess.get('relay_replacements', 0)}")
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
    g.add_argument("--redis", default=None, metavar="URL",
                   help="redis://HOST:PORT/DB: share the broker with the other gateways of a cluster "
                        "(default: the broker in memory, one gateway)")
    g.add_argument("--gateway-id", default=None, metavar="ID",
                   help="this gateway's name in the cluster (default: its host:port)")
    g.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (e.g. 127.0.0.1:9464)")
    g.add_argument("--advertise", default=None, metavar="HOST:PORT",
                   help="the address hosts dial their data legs to on this gateway (default: --listen)")
    g.set_defaults(func=cmd_gateway)

    t = sub.add_parser("token", help="mint a token with the gateway's signing key")
    common(t)
    t.add_argument("kind", choices=["user", "host"])
    t.add_argument("--sub", required=True, help="user name, or host id for a host token")
    t.add_argument("--resources", default="", help="user: comma-separated pools the user may launch")
    t.add_argument("--pool", default="desktop", help="host: the pool it registers into")
    t.add_argument("--ttl", type=float, default=3600.0,
                   help=f"lifetime in seconds (positive, finite; default 3600); {_SKEW_HELP}")
    t.add_argument("--out", default=None, metavar="FILE",
                   help="write the token to FILE with mode 0600 (instead of printing it)")
    t.set_defaults(func=cmd_token)

    h = sub.add_parser("host", help="run a session host (outbound connections only)")
    h.add_argument("--gateway", required=True, action="append",
                   help="host:port; repeat for a gateway cluster (the host moves to the next when one is lost)")
    h.add_argument("--host-id", required=True)
    h.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics")
    h.add_argument("--token", default=None, help="the host token itself (visible in ps: prefer --token-file)")
    h.add_argument("--token-file", default=None, help="file holding the host token (mode 0600)")
    h.add_argument("--ca", default=None, help="the gateway's certificate (pinned)")
    h.add_argument("--state", default="./host-state")
    h.add_argument("--managed", default=None, metavar="IP:PORT",
                   help="listen for managed Shortpath on this UDP address (e.g. 10.1.0.2:3390); off by default")
    h.add_argument("--udp-address", action="append", default=None, metavar="IP",
                   help="local IP to gather ICE candidates on (repeatable; default: all interfaces)")
    h.add_argument("--turn-ca", default=None, help="CA file to verify the TURN server's TLS certificate")
    h.add_argument("--signing-key", default=None, metavar="HEX",
                   help="the gateway's ticket signing public key, given out of band (refuse a gateway "
                        "announcing another)")
    h.add_argument("--app", default="shortpath.app.desktop:host_handler", metavar="MODULE:ATTR",
                   help="the application serving each session (default: the example desktop app; "
                        "the lab benchmark uses benchmarks.bench_app:host_handler)")
    h.set_defaults(func=cmd_host)

    c = sub.add_parser("connect", help="launch a resource and run an echo exchange")
    c.add_argument("--gateway", required=True, action="append",
                   help="host:port; repeat to let the client pick by latency bucket and load (AVD's rule)")
    c.add_argument("--resource", default="desktop")
    c.add_argument("--token", default=None, help="the user token itself (visible in ps: prefer --token-file)")
    c.add_argument("--token-file", default=None, help="file holding the user token (mode 0600)")
    c.add_argument("--ca", default=None, help="the gateway's certificate (pinned)")
    c.add_argument("--count", type=int, default=20)
    c.add_argument("--feed", action="store_true", help="only list the resources")
    c.add_argument("--udp-address", action="append", default=None, metavar="IP",
                   help="local IP to gather ICE candidates on (repeatable)")
    c.add_argument("--no-shortpath", action="store_true", help="stay on the tcp-relay")
    c.add_argument("--hold", type=float, default=0.0,
                   help="after the echo test, keep echoing numbered messages for this many seconds "
                        "(a session that ends sooner: exit code 2 and the reason)")
    c.add_argument("--turn-ca", default=None, help="CA file to verify the TURN server's TLS certificate")
    c.add_argument("--wait-udp", type=float, default=3.0,
                   help="seconds to wait for the UDP upgrade before the echo test (0: do not wait)")
    c.add_argument("--json", action="store_true")
    c.add_argument("--workload", choices=["desktop", "bulk", "echo"], default=None,
                   help="instead of the echo test, run a workload for --seconds with a progress line a second "
                        "and a summary: desktop (30 fps frame stream + input events + datagrams), bulk "
                        "(throughput and latency under load), echo (round trips)")
    c.add_argument("--seconds", type=float, default=10.0, help="length of --workload (default 10)")
    c.add_argument("--host-ca", default=None, metavar="FILE",
                   help="deployment CA certificate: the host must present a certificate it issued for the "
                        "host id (see 'shortpath ca')")
    c.set_defaults(func=cmd_connect)

    nc = sub.add_parser("netcheck", help="what this network allows: UDP, NAT type (RFC 5780), STUN/TURN over "
                                         "TCP/TLS, managed port, gateway latency and the pick")
    nc.add_argument("--stun", default=None, metavar="HOST:PORT",
                    help="STUN server (two addresses, e.g. coturn with two listening-ip, for the NAT type)")
    nc.add_argument("--turn", default=None, metavar="HOST:PORT", help="TURN server to reach over TCP")
    nc.add_argument("--turn-tls", default=None, metavar="HOST:PORT", help="TURN server to reach over TLS (e.g. :443)")
    nc.add_argument("--turn-ca", default=None, help="CA file for the TURN server's TLS certificate")
    nc.add_argument("--managed", default=None, metavar="IP:PORT", help="a host's managed Shortpath UDP port")
    nc.add_argument("--gateway", action="append", default=None, metavar="HOST:PORT",
                    help="gateway to measure (repeat); the report says which one a client would pick")
    nc.add_argument("--ca", default=None, help="the gateway's certificate (pinned)")
    nc.add_argument("--timeout", type=float, default=0.5, help="seconds to wait for each UDP answer")
    nc.add_argument("--json", action="store_true")
    nc.set_defaults(func=cmd_netcheck)

    st = sub.add_parser("stats", help="per-session path, candidates, RTT, bytes and switch history of a running host")
    st.add_argument("--state", default="./host-state", help="the host's state directory")
    st.add_argument("--host-id", required=True)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    a = sub.add_parser("admin", help="talk to a running gateway's local admin socket")
    common(a)
    a.add_argument("action", choices=["hosts", "sessions", "drain", "undrain", "stats", "revoke", "gateways"])
    a.add_argument("host", nargs="?")
    a.add_argument("--jti", action="append", default=None, metavar="TOKEN_ID",
                   help="revoke: a token id (the 'token_jti' of 'admin hosts --json'); repeatable")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_admin)

    ca_p = sub.add_parser("ca", help="optional deployment CA for host certificates (keep it off the gateway)")
    ca_p.add_argument("action", choices=["init", "sign"])
    ca_p.add_argument("--ca-dir", required=True, help="directory of ca.key and ca.crt")
    ca_p.add_argument("--host-id", default=None, help="sign: the host id the certificate is for")
    ca_p.add_argument("--cert", default=None,
                      help="sign: the host's current certificate (its state dir's host-ID.crt); only its "
                           "public key is used")
    ca_p.add_argument("--out", default=None, help="sign: where to write the new certificate (default: --cert)")
    ca_p.add_argument("--days", type=int, default=365, help="sign: validity in days")
    ca_p.set_defaults(func=cmd_ca)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.log)
    try:
        return args.func(args)
    except ShortpathError as exc:
        print(f"shortpath: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:       # the environment (a file, a socket): one line, no traceback
        print(f"shortpath: error [os]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
