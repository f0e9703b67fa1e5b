"""Common mistakes with the real CLI give one clear line and a non-zero exit code.

Every case runs ``python -m shortpath ...`` as a subprocess on loopback with a
temporary state directory (issue #10 item 5, issue #11 items 1 (token files),
7 and 12): the mistake's stderr is one ``shortpath: error [...]`` line naming
what to fix, never a traceback; empty listings say so; permanent registration
refusals stop the host; transient failures retry and say so; one gateway per
state directory; a session that ends during ``--hold`` makes ``connect`` fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shortpath.auth import certs
from shortpath.auth.tokens import CLOCK_SKEW, TokenSigner
from shortpath.config import DEFAULT_GATEWAY_ID
from shortpath.errors import NoResourcesError, SessionClosed, from_wire

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "SHORTPATH_LOG": "WARNING"}
ENV.pop("SHORTPATH_TOKEN", None)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shortpath", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if l.strip()]


def one_error(r: subprocess.CompletedProcess, *fragments: str, code: str | None = None) -> str:
    """The run failed with exactly one error line on stderr (warnings aside) holding ``fragments``."""
    out = f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == 2, out
    assert "Traceback" not in r.stderr, out
    errors = [l for l in lines(r.stderr) if not l.startswith("shortpath: warning:")]
    assert len(errors) == 1 and errors[0].startswith("shortpath: error ["), out
    for f in fragments:
        assert f in errors[0], out
    if code is not None:
        assert errors[0].startswith(f"shortpath: error [{code}]: "), out
    return errors[0]


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A CLI process whose stdout/stderr lines are collected by threads, so a test
    can wait for a line (an event) instead of sleeping."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "shortpath", *args], cwd=ROOT, env=ENV, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(s, l), daemon=True)
                         for s, l in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, sink: list[str], pred, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for l in sink:
                    if pred(l):
                        return l
                left = end - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not any(t.is_alive() for t in self._threads)):
                    raise AssertionError(f"no such line within {timeout} s (rc={self.popen.poll()}); "
                                         f"stdout={self.out} stderr={self.err}")
                self._cond.wait(min(left, 0.5))

    def finish(self, timeout: float = 30) -> int:
        rc = self.popen.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for t in self._threads:
            t.join(5)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


class Gateway:
    def __init__(self, state: Path, port: int = 0) -> None:
        self.state = state
        self.proc = Proc("gateway", "--listen", f"127.0.0.1:{port}", "--state", str(state))
        ready = json.loads(self.proc.wait_line(self.proc.out, lambda l: "gateway-ready" in l))
        self.port = ready["port"]
        self.address = f"127.0.0.1:{self.port}"
        self.ca = ready["cert"]
        self.admin_sock = Path(ready["admin"])
        self.signer = TokenSigner.load_or_create(str(state / "signing.key"))

    def token_file(self, path: Path, kind: str, sub: str, *extra: str) -> str:
        r = cli("token", kind, "--state", str(self.state), "--sub", sub, "--out", str(path), *extra)
        assert r.returncode == 0, r.stderr
        return str(path)

    def write_token(self, path: Path, token: str) -> str:
        path.write_text(token)
        path.chmod(0o600)
        return str(path)


@pytest.fixture
def gateway(tmp_path):
    gw = Gateway(tmp_path / "gw")
    try:
        yield gw
    finally:
        gw.proc.stop()


def start_host(gw: Gateway, tmp_path: Path, host_id: str = "host-1") -> Proc:
    tok = gw.token_file(tmp_path / f"{host_id}.tok", "host", host_id)
    host = Proc("host", "--gateway", gw.address, "--host-id", host_id, "--token-file", tok, "--ca", gw.ca,
                "--state", str(tmp_path / "hs"))
    host.wait_line(host.out, lambda l: "host-registered" in l)
    return host


# --- tokens and files ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["connect", "host"])
def test_missing_or_unreadable_token_file(tmp_path, command):
    extra = ["--host-id", "host-1", "--state", str(tmp_path / "hs")] if command == "host" else []
    missing = tmp_path / "nope.tok"
    r = cli(command, "--gateway", f"127.0.0.1:{free_port()}", "--token-file", str(missing), *extra)
    one_error(r, f"cannot read --token-file {missing}", "No such file", code="config")
    r = cli(command, "--gateway", f"127.0.0.1:{free_port()}", "--token-file", str(tmp_path), *extra)
    one_error(r, f"cannot read --token-file {tmp_path}", "directory", code="config")
    empty = tmp_path / "empty.tok"
    empty.write_text("\n")
    r = cli(command, "--gateway", f"127.0.0.1:{free_port()}", "--token-file", str(empty), *extra)
    one_error(r, f"--token-file {empty} is empty", code="config")


def test_no_token_at_all_says_how_to_give_one():
    r = cli("connect", "--gateway", f"127.0.0.1:{free_port()}")
    one_error(r, "no token", "--token-file", code="config")


def test_token_out_writes_0600_and_ttl_must_be_finite(tmp_path):
    state = tmp_path / "gw"
    out = tmp_path / "alice.tok"
    out.write_text("old")
    out.chmod(0o644)                       # an existing, looser file is tightened
    r = cli("token", "user", "--state", str(state), "--sub", "alice", "--resources", "desktop", "--out", str(out))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    claims = TokenSigner.load_or_create(str(state / "signing.key")).verifier().verify(
        out.read_text().strip(), typ="user", audience=DEFAULT_GATEWAY_ID, now=time.time())
    assert claims.sub == "alice"
    fresh = tmp_path / "host.tok"
    r = cli("token", "host", "--state", str(state), "--sub", "host-1", "--out", str(fresh))
    assert r.returncode == 0 and stat.S_IMODE(fresh.stat().st_mode) == 0o600, r.stderr
    link = tmp_path / "link.tok"
    link.symlink_to(tmp_path / "elsewhere.tok")
    one_error(cli("token", "user", "--state", str(state), "--sub", "a", "--out", str(link)),
              "symbolic link", code="config")
    assert not (tmp_path / "elsewhere.tok").exists()
    for bad in ("nan", "inf", "-inf", "0", "-5"):
        one_error(cli("token", "user", "--state", str(state), "--sub", "a", f"--ttl={bad}"),
                  "--ttl must be a positive, finite number", code="config")


def test_token_printed_into_a_world_readable_file_warns(tmp_path):
    target = tmp_path / "loose.tok"
    with open(target, "w") as f:
        os.chmod(target, 0o644)
        r = subprocess.run([sys.executable, "-m", "shortpath", "token", "user", "--state", str(tmp_path / "gw"),
                            "--sub", "a"], cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.PIPE, text=True,
                           timeout=60)
    assert r.returncode == 0
    assert "shortpath: warning:" in r.stderr and "--out" in r.stderr, r.stderr
    assert target.read_text().startswith("sp1.")


def test_skew_allowance_is_documented_next_to_ttl():
    r = cli("token", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert f"{CLOCK_SKEW:g} s past its expiry" in text, text
    docs = (ROOT / "docs" / "config.md").read_text()
    assert f"{CLOCK_SKEW:g} s" in docs and "--ttl" in docs


def test_token_on_the_command_line_warns_and_a_loose_token_file_warns(tmp_path):
    port = free_port()
    r = cli("connect", "--gateway", f"127.0.0.1:{port}", "--token", "sp1.x.y")
    one_error(r, "connection refused", code="gateway-unreachable")
    assert any(l.startswith("shortpath: warning: --token puts the token in the process list")
               for l in lines(r.stderr)), r.stderr
    loose = tmp_path / "loose.tok"
    loose.write_text("sp1.x.y")
    loose.chmod(0o644)
    r = cli("connect", "--gateway", f"127.0.0.1:{port}", "--token-file", str(loose))
    one_error(r, "connection refused")
    assert any("readable by other users" in l and "chmod 600" in l for l in lines(r.stderr)), r.stderr
    # from the environment: no warning, same error
    env = {**ENV, "SHORTPATH_TOKEN": "sp1.x.y"}
    r = subprocess.run([sys.executable, "-m", "shortpath", "connect", "--gateway", f"127.0.0.1:{port}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    one_error(r, "connection refused")
    assert "warning" not in r.stderr


# --- reaching the gateway ------------------------------------------------------------

def test_connect_to_a_port_without_a_gateway(tmp_path):
    tok = tmp_path / "t.tok"
    tok.write_text("sp1.x.y")
    tok.chmod(0o600)
    port = free_port()
    r = cli("connect", "--gateway", f"127.0.0.1:{port}", "--token-file", str(tok))
    one_error(r, f"connection refused by 127.0.0.1:{port}", code="gateway-unreachable")
    r = cli("connect", "--gateway", f"127.0.0.1:{port}", "--token-file", str(tok), "--feed")
    one_error(r, "connection refused", code="gateway-unreachable")


def test_wrong_or_missing_ca(gateway, tmp_path):
    tok = gateway.token_file(tmp_path / "alice.tok", "user", "alice", "--resources", "desktop")
    # no --ca: the system's CAs do not know a self-signed gateway
    r = cli("connect", "--gateway", gateway.address, "--token-file", tok)
    one_error(r, "certificate verify failed", "pass --ca", "gateway.crt", code="gateway-certificate")
    # another gateway's certificate
    other = tmp_path / "other.crt"
    other.write_bytes(certs.generate_self_signed("another-gateway", ["127.0.0.1"])[0])
    r = cli("connect", "--gateway", gateway.address, "--token-file", tok, "--ca", str(other))
    one_error(r, "certificate verify failed", f"--ca {other}", code="gateway-certificate")
    # a file that is not a certificate, and no file at all
    r = cli("connect", "--gateway", gateway.address, "--token-file", tok, "--ca", tok)
    one_error(r, f"--ca {tok} holds no PEM certificate", code="config")
    r = cli("connect", "--gateway", gateway.address, "--token-file", tok, "--ca", str(tmp_path / "none.crt"))
    one_error(r, f"cannot read --ca {tmp_path / 'none.crt'}", code="config")
    # the host: the pinned certificate will not change by retrying, so it stops
    htok = gateway.token_file(tmp_path / "host.tok", "host", "host-1")
    r = cli("host", "--gateway", gateway.address, "--host-id", "host-1", "--token-file", htok, "--ca", str(other),
            "--state", str(tmp_path / "hs"))
    one_error(r, "certificate verify failed", f"--ca {other}", code="gateway-certificate")


# --- the gateway's port and state directory -------------------------------------------

def test_gateway_on_a_port_in_use(gateway, tmp_path):
    r = cli("gateway", "--listen", gateway.address, "--state", str(tmp_path / "gw2"))
    one_error(r, f"cannot listen on {gateway.address}", "address already in use", code="config")
    one_error(cli("gateway", "--listen", "127.0.0.1", "--state", str(tmp_path / "gw2")),
              "bad --listen", code="config")


def test_state_directory_is_locked_by_one_gateway(gateway, tmp_path):
    before = gateway.admin_sock.stat().st_ino
    r = cli("gateway", "--listen", "127.0.0.1:0", "--state", str(gateway.state))
    one_error(r, f"state directory {gateway.state} is in use by another gateway",
              f"pid {gateway.proc.popen.pid}", code="config")
    assert gateway.admin_sock.stat().st_ino == before       # not replaced
    r = cli("admin", "--state", str(gateway.state), "stats")
    assert r.returncode == 0 and "counters" in r.stdout, r.stderr


def test_gateway_removes_admin_sock_on_sigterm_and_frees_the_state_dir(tmp_path):
    gw = Gateway(tmp_path / "gw")
    assert gw.admin_sock.exists()
    gw.proc.popen.send_signal(signal.SIGTERM)
    assert gw.proc.finish() == 0, gw.proc.stderr
    assert "Traceback" not in gw.proc.stderr
    assert not gw.admin_sock.exists()
    one_error(cli("admin", "--state", str(gw.state), "hosts"), "cannot reach the gateway admin socket",
              "is a gateway running", code="config")
    again = Gateway(tmp_path / "gw")         # the lock went with the first gateway
    try:
        assert cli("admin", "--state", str(again.state), "hosts").returncode == 0
    finally:
        again.proc.stop()


# --- hosts -------------------------------------------------------------------------------

def _bad_host_tokens(gw: Gateway) -> dict:
    now = time.time()
    return {
        "wrong host id": (gw.signer.mint("host", "host-1", DEFAULT_GATEWAY_ID, 600, now, pool="desktop"),
                          "registration token is for host 'host-1', not 'host-2'", "auth"),
        "a user token": (gw.signer.mint("user", "host-2", DEFAULT_GATEWAY_ID, 600, now, resources=["desktop"]),
                         "expected a host token, got user", "auth"),
        "expired": (gw.signer.mint("host", "host-2", DEFAULT_GATEWAY_ID, 1, now - 100, pool="desktop"),
                    "token expired", "token-expired"),
        "bad signature": (TokenSigner.generate().mint("host", "host-2", DEFAULT_GATEWAY_ID, 600, now,
                                                      pool="desktop"),
                          "signature does not verify", "bad-signature"),
    }


def test_host_with_a_refused_registration_stops_with_the_reason(gateway, tmp_path):
    for name, (token, why, code) in _bad_host_tokens(gateway).items():
        tok = gateway.write_token(tmp_path / f"{name.replace(' ', '_')}.tok", token)
        r = cli("host", "--gateway", gateway.address, "--host-id", "host-2", "--token-file", tok,
                "--ca", gateway.ca, "--state", str(tmp_path / "hs"), timeout=30)
        line = one_error(r, "host host-2 gave up registering with the gateway", why, code=code)
        assert "retrying" not in r.stderr, (name, line)


def test_host_pointed_at_a_wrong_port_says_it_is_retrying(gateway, tmp_path):
    tok = gateway.token_file(tmp_path / "host.tok", "host", "host-1")
    port = free_port()
    host = Proc("host", "--gateway", f"127.0.0.1:{port}", "--host-id", "host-1", "--token-file", tok,
                "--ca", gateway.ca, "--state", str(tmp_path / "hs"))
    try:
        line = host.wait_line(host.err, lambda l: "retrying in" in l, timeout=20)
        assert line.startswith("shortpath: host host-1: retrying in ")
        assert f"connection refused by 127.0.0.1:{port}" in line
    finally:
        host.stop()
    assert host.popen.returncode == 0
    assert "Traceback" not in host.stderr
    assert all(l.startswith("shortpath: host host-1: retrying in ") for l in host.err), host.err


# --- sessions, listings, messages --------------------------------------------------------

def test_empty_listings_say_so(gateway, tmp_path):
    r = cli("admin", "--state", str(gateway.state), "sessions")
    assert r.returncode == 0 and lines(r.stdout) == ["no sessions"], r
    r = cli("admin", "--state", str(gateway.state), "hosts")
    assert r.returncode == 0 and lines(r.stdout) == ["no hosts registered"], r
    host = start_host(gateway, tmp_path)
    try:
        r = cli("stats", "--state", str(tmp_path / "hs"), "--host-id", "host-1")
        assert r.returncode == 0, r.stderr
        assert "lists live sessions only" in r.stdout, r.stdout
        r = cli("admin", "--state", str(gateway.state), "hosts")
        assert r.returncode == 0 and "host-1" in r.stdout and "no hosts" not in r.stdout, r
    finally:
        host.stop()
    one_error(cli("stats", "--state", str(tmp_path / "nowhere"), "--host-id", "host-1"),
              "cannot reach host host-1", code="config")


def test_errors_are_not_repeated_inside_themselves(gateway, tmp_path):
    # what arrives over the wire is shown as sent, not wrapped a second time
    err = from_wire("no-resources", "no resources available: draining (host-1: draining)", "draining")
    assert isinstance(err, NoResourcesError) and err.reason == "draining"
    assert err.message == "no resources available: draining (host-1: draining)"
    closed = from_wire("session-closed", "session closed: host-gone (session 12)", "host-gone")
    assert isinstance(closed, SessionClosed) and closed.message == "session closed: host-gone (session 12)"
    assert from_wire("no-resources", "", "full").message == "no resources available: full"

    tok = gateway.token_file(tmp_path / "alice.tok", "user", "alice", "--resources", "desktop")
    r = cli("connect", "--gateway", gateway.address, "--token-file", tok, "--ca", gateway.ca)
    line = one_error(r, "none-registered", code="no-resources")
    assert line.count("no resources available") == 1, line
    host = start_host(gateway, tmp_path)
    try:
        assert cli("admin", "--state", str(gateway.state), "drain", "host-1").returncode == 0
        r = cli("connect", "--gateway", gateway.address, "--token-file", tok, "--ca", gateway.ca)
        line = one_error(r, "draining", code="no-resources")
        assert line.count("no resources available") == 1 and line.count("draining") <= 2, line
    finally:
        host.stop()


def test_connect_hold_that_ends_early_exits_non_zero_with_the_reason(gateway, tmp_path):
    tok = gateway.token_file(tmp_path / "alice.tok", "user", "alice", "--resources", "desktop")
    host = start_host(gateway, tmp_path)
    common = ["connect", "--gateway", gateway.address, "--token-file", tok, "--ca", gateway.ca, "--no-shortpath",
              "--wait-udp", "0", "--count", "2", "--hold", "60"]
    plain, as_json = Proc(*common), Proc(*common, "--json")
    try:
        deadline = time.monotonic() + 30
        while True:       # both sessions live (the admin socket answers at once; no fixed sleep)
            r = cli("admin", "--state", str(gateway.state), "--json", "sessions")
            if len(json.loads(r.stdout)["sessions"]) == 2:
                break
            assert time.monotonic() < deadline, (r.stdout, plain.err, as_json.err)
        host.stop()                           # SIGTERM: the host closes its sessions, "host-shutdown"
        assert host.popen.returncode == 0
        for client in (plain, as_json):
            assert client.finish(30) == 2, (client.out, client.err)
            assert "Traceback" not in client.stderr
            errors = [l for l in client.err if l.strip()]
            assert len(errors) == 1 and errors[0].startswith("shortpath: error [session-closed]: "), client.err
            assert "host-shutdown" in errors[0] and "--hold 60" in errors[0], errors
        info = json.loads(as_json.out[-1])
        assert "host-shutdown" in info["hold_error"] and info["hold_sent"] >= 1
        assert plain.out and plain.out[-1].startswith("session "), plain.out
    finally:
        for p in (plain, as_json, host):
            p.stop()
