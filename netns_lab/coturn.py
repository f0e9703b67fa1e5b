"""coturn for the lab: config rendering, start/ready/stop, TURN REST credentials.

Two ways to run it:

* ``start_in_lab(lab)`` (or ``lab.coturn()``): inside the core namespace on the "turn" address
  198.18.0.20 -- UDP/TCP 3478, TLS 443, relays 50000-50999.
* ``start_loopback()``: on 127.0.0.1 with free high ports, no root and no namespaces needed
  (for component tests).  Its pid is recorded in a state file too, so
  ``python -m netns_lab cleanup --stale`` stops it if the owner crashed.

Readiness is checked by sending STUN Binding requests until one is answered (and, for TLS,
until the TLS port accepts a TCP connection), never by sleeping a fixed time.  The per-run
shared secret is written only to the instance's 0600 config file; it is not passed on a command
line and the tests check it is not in the log.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import plan
from .certs import make_cert
from .state import ProcRecord, RunState, proc_start_time

BASE_CONF = Path(__file__).resolve().parent.parent / "turnserver_conf" / "lab.conf"
TURNSERVER = "turnserver"
REALM = "shortpath.lab"


def turn_rest_credentials(secret: str, user: str, ttl: int = 3600,
                          now: float | None = None) -> tuple[str, str]:
    """TURN REST API credentials as coturn's ``use-auth-secret`` checks them.

    username = "<unix time of expiry>:<user>", password = base64(HMAC-SHA1(secret, username)).
    """
    expiry = int(time.time() if now is None else now) + int(ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


# ---------------------------------------------------------------- STUN readiness probe
_MAGIC = 0x2112A442


def stun_binding(host: str, port: int, timeout: float = 0.3) -> tuple[str, int] | None:
    """Send one STUN Binding request; return the XOR-MAPPED-ADDRESS or None on timeout."""
    txid = os.urandom(12)
    req = struct.pack("!HHI", 0x0001, 0, _MAGIC) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(req, (host, port))
            while True:
                data, _ = s.recvfrom(2048)
                if len(data) >= 20 and data[8:20] == txid and data[:2] == b"\x01\x01":
                    break
        except (socket.timeout, ConnectionRefusedError):
            return None
    off = 20
    while off + 4 <= len(data):
        atype, alen = struct.unpack_from("!HH", data, off)
        val = data[off + 4: off + 4 + alen]
        if atype == 0x0020 and alen >= 8:  # XOR-MAPPED-ADDRESS, IPv4
            xport = struct.unpack_from("!H", val, 2)[0] ^ (_MAGIC >> 16)
            xip = struct.unpack_from("!I", val, 4)[0] ^ _MAGIC
            return socket.inet_ntoa(struct.pack("!I", xip)), xport
        off += 4 + ((alen + 3) & ~3)
    return ("", 0)


def wait_ready(host: str, port: int, tls_port: int | None = None, timeout: float = 10.0,
               alive=lambda: True) -> float:
    """Probe until coturn answers STUN (and accepts TCP on the TLS port).  Returns seconds."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while stun_binding(host, port, timeout=0.1) is None:
        if not alive():
            raise RuntimeError("turnserver exited before answering STUN")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no STUN answer from {host}:{port} within {timeout}s")
    if tls_port:
        while True:
            try:
                socket.create_connection((host, tls_port), timeout=0.2).close()
                break
            except OSError:
                if not alive():
                    raise RuntimeError("turnserver exited before its TLS port opened")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"TLS port {host}:{tls_port} not open in {timeout}s")
                # A refused connect returns at once; back off a little before the next try.
                time.sleep(0.02)
    return time.monotonic() - t0


# ---------------------------------------------------------------- config and server handle
def render_config(*, listen_ip: str, port: int, tls_port: int, relay_range: tuple[int, int],
                  pidfile: Path, log_file: Path, cert: Path, key: Path, secret: str,
                  external_ip: str | None = None, loopback_peers: bool = False,
                  verbose: bool = False) -> str:
    lines = [BASE_CONF.read_text(), "", "# ---- instance settings (netns_lab/coturn.py) ----",
             f"listening-ip={listen_ip}", f"relay-ip={listen_ip}",
             f"listening-port={port}", f"tls-listening-port={tls_port}",
             f"min-port={relay_range[0]}", f"max-port={relay_range[1]}",
             f"pidfile={pidfile}", f"log-file={log_file}",
             f"cert={cert}", f"pkey={key}", f"static-auth-secret={secret}",
             # coturn opens an SQLite user DB even with static secrets; keep it per instance
             # (the packaged default /var/lib/turn/turndb needs root and is shared).
             f"userdb={pidfile.with_suffix('.db')}"]
    if external_ip:
        lines.append(f"external-ip={external_ip}")
    if loopback_peers:
        # The peers of a loopback instance are on 127.0.0.1. lab.conf denies 127/8, and a
        # denial beats allow-loopback-peers, so that one address is allowed explicitly (an
        # allowed-peer-ip entry beats a denial); the rest of 127/8 stays denied.
        lines += ["allow-loopback-peers", "allowed-peer-ip=127.0.0.1"]
    if verbose:
        # One log line per STUN/TURN message processed (session id, user, method, result):
        # for tests that need to tell "coturn refused" from "coturn never saw it". Usernames
        # are logged; passwords and the secret are not (test_secrets_in_logs checks this).
        lines.append("verbose")
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass
class CoturnServer:
    host: str
    port: int
    tls_port: int
    secret: str = field(repr=False)
    relay_range: tuple[int, int]
    cert: Path
    conf: Path
    log_file: Path
    pidfile: Path
    ready_s: float = 0.0
    realm: str = REALM
    _stop: object = field(default=None, repr=False)

    def credentials(self, user: str = "lab", ttl: int = 3600) -> tuple[str, str]:
        return turn_rest_credentials(self.secret, user, ttl)

    def aioice_kwargs(self, user: str = "lab", transport: str = "udp") -> dict:
        """Keyword arguments for ``aioice.Connection`` to use this server."""
        u, p = self.credentials(user)
        port = self.tls_port if transport == "tls" else self.port
        return {"turn_server": (self.host, port), "turn_username": u, "turn_password": p,
                "turn_transport": "tcp" if transport != "udp" else "udp",
                "turn_ssl": transport == "tls"}

    def log_tail(self, n: int = 15) -> str:
        """The last ``n`` lines of this instance's log (for failure messages)."""
        return _tail(self.log_file, n)

    def stop(self) -> None:
        if self._stop:
            self._stop()  # type: ignore[operator]
            self._stop = None

    def __enter__(self) -> "CoturnServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _prepare(workdir: Path, name: str, listen_ip: str, **kw) -> tuple[Path, Path, Path, Path, str]:
    secret = secrets.token_urlsafe(32)
    cert, key = make_cert(workdir, f"{name}-tls", dns=("turn.shortpath.lab",), ips=(listen_ip,))
    conf = workdir / f"{name}.conf"
    log = workdir / f"{name}.log"
    pidfile = workdir / f"{name}.pid"
    _write_private(conf, render_config(listen_ip=listen_ip, pidfile=pidfile, log_file=log,
                                       cert=cert, key=key, secret=secret, **kw))
    return conf, log, pidfile, cert, secret


def start_in_lab(lab, *, port: int = 3478, tls_port: int = 443,
                 relay_range: tuple[int, int] = (50000, 50999), external_ip: str | None = None,
                 name: str = "coturn", timeout: float = 10.0) -> CoturnServer:
    """Start coturn in ``lab``'s core namespace on the "turn" address and wait until ready."""
    from .prereq import require
    require("turnserver")
    host = plan.SERVICES["turn"]
    conf, log, pidfile, cert, secret = _prepare(
        lab.workdir, name, host, port=port, tls_port=tls_port, relay_range=relay_range,
        external_ip=external_ip)
    proc = lab.spawn("core", [TURNSERVER, "-c", str(conf)])
    try:
        r = lab.core.python("-m", "netns_lab.coturn", "wait-ready", "--host", host,
                            "--port", str(port), "--tls-port", str(tls_port),
                            "--timeout", str(timeout), check=False, timeout=timeout + 5)
        if r.returncode != 0 or not proc.alive():
            raise RuntimeError(f"coturn in lab not ready: {r.stdout}{r.stderr}"
                               + _tail(log) + "\n" + proc.describe_exit("turnserver"))
    except BaseException:
        lab.stop(proc)
        raise
    return CoturnServer(host, port, tls_port, secret, relay_range, cert, conf, log, pidfile,
                        ready_s=float(r.stdout.strip() or 0), _stop=lambda: lab.stop(proc))


def _tail(log: Path, n: int = 15) -> str:
    try:
        return "\nlog tail:\n" + "\n".join(log.read_text().splitlines()[-n:])
    except OSError:
        return ""


def _free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` (the usual bind-to-0 race applies)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            p = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port")


def start_loopback(workdir: str | Path | None = None, timeout: float = 10.0,
                   relay_ports: int = 200, verbose: bool = False) -> CoturnServer:
    """Start coturn on 127.0.0.1 (free ports; no root needed) and wait until it answers.

    ``verbose`` makes coturn log every message it processes (see ``render_config``)."""
    from .prereq import require
    require("turnserver")
    own_dir = workdir is None
    wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="netns_lab-turn-"))
    port, tls_port = _free_port(), _free_port()
    lo = random.randrange(20000, 30000 - relay_ports)
    conf, log, pidfile, cert, secret = _prepare(
        wd, "coturn", "127.0.0.1", port=port, tls_port=tls_port,
        relay_range=(lo, lo + relay_ports - 1), loopback_peers=True, verbose=verbose)
    popen = subprocess.Popen([TURNSERVER, "-c", str(conf)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    st = RunState(f"turn-{secrets.token_hex(3)}", os.getpid(), proc_start_time(os.getpid()),
                  workdir=str(wd) if own_dir else None)
    st.procs.append(ProcRecord(popen.pid, proc_start_time(popen.pid), "loopback", TURNSERVER))
    try:
        st.save()
    except OSError:
        st = None  # type: ignore[assignment]  # no writable state dir (not root): still fine

    def stop() -> None:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(3)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(3)
        if st is not None:
            st.remove_file()
        if own_dir:
            shutil.rmtree(wd, ignore_errors=True)

    try:
        ready = wait_ready("127.0.0.1", port, tls_port, timeout, alive=lambda: popen.poll() is None)
    except BaseException as e:
        msg = _tail(log)
        stop()
        raise RuntimeError(f"coturn on loopback not ready: {e}{msg}") from e
    return CoturnServer("127.0.0.1", port, tls_port, secret, (lo, lo + relay_ports - 1), cert,
                        conf, log, pidfile, ready_s=ready, _stop=stop)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.coturn")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-ready", help="probe a coturn with STUN until it answers")
    w.add_argument("--host", required=True)
    w.add_argument("--port", type=int, default=3478)
    w.add_argument("--tls-port", type=int)
    w.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args(argv)
    try:
        print(f"{wait_ready(a.host, a.port, a.tls_port, a.timeout):.3f}")
    except (TimeoutError, RuntimeError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
