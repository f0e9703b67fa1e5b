"""A private ``redis-server`` for the tests (issue #14).

:class:`RedisServer` runs one on loopback on a free port with no persistence
(``--save '' --appendonly no``, its own temp dir), and can be stopped and
started again on the same port (the "Redis restarted mid-run" tests). The
``redis_server`` fixture starts one per test and stops it after, by its PID.

Policy (same as netns_lab/prereq.py): if ``redis-server`` is missing, a normal
user's run SKIPS with the reason; a root run FAILS, because ``scripts/setup.sh
test`` installs it as root and a missing install step must not hide behind a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

REDIS_SERVER = "redis-server"


def redis_missing_reason() -> str | None:
    if shutil.which(REDIS_SERVER):
        return None
    return "redis-server is not installed (Debian package redis-server; `bash scripts/setup.sh test` as root)"


def require_redis() -> None:
    why = redis_missing_reason()
    if why is None:
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.fail(why)
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="sp-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + timeout
        while time.monotonic() < end:       # wait for the port to answer PING
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.proc.stderr.read().decode(errors='replace')[:300]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within the timeout")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()           # by our own PID; no persistence to flush
            self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    require_redis()
    srv = RedisServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()
