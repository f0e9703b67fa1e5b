"""Namespaces, commands inside them, and long-running processes with recorded pids.

Everything runs through ``ip netns exec <ns> ...`` so that a reader can paste any command the
lab runs into a shell.  ``ip netns exec`` execs the target after ``setns()``, so the pid we get
from ``Popen`` *is* the program's pid; we start it in a new session so that it also leads a
process group, which lets ``stop()`` reach helpers it forks.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from .state import ProcRecord, proc_start_time


class LabError(RuntimeError):
    """A lab operation failed (a command returned an error, a process did not become ready)."""


#: What every lab run needs (see netns_lab.prereq for the table: programs, packages, users).
LAB_TOOLS = ("lab",)


def unavailable_reason(tools: Sequence[str] = LAB_TOOLS) -> str | None:
    """Why the lab cannot run on this machine, or None if it can: what the lab benchmarks print
    and skip with. ``tools``: prerequisite or group names of ``netns_lab.prereq`` (a program
    name such as "turnserver" works). One line per missing prerequisite, naming its package."""
    from .prereq import environment_reason, missing
    why = environment_reason()
    if why:
        return why
    lines = missing(*tools)
    return "\n".join(lines) if lines else None


def lab_env(extra: dict | None = None) -> dict:
    """Environment for helpers: this repo importable, unbuffered output."""
    e = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    e["PYTHONPATH"] = root + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["PYTHONUNBUFFERED"] = "1"
    if extra:
        e.update(extra)
    return e


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float | None = 30, capture: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), input=input, text=True, timeout=timeout,
                       capture_output=capture, env=lab_env(env))
    if check and r.returncode != 0:
        err = (r.stderr or "").strip()
        raise LabError(f"command failed ({r.returncode}): {' '.join(argv)}\n{err}")
    return r


class Proc:
    """A long-running process inside a namespace.

    stdout (and stderr, merged) is drained by a thread into ``log_path`` and a small ring of
    recent lines, so ``wait_for_line`` can wait for a readiness line without sleeping.
    """

    def __init__(self, node: str, ns: str, argv: Sequence[str], popen: subprocess.Popen,
                 log_path: Path | None):
        self.node = node
        self.ns = ns
        self.argv = list(argv)
        self.popen = popen
        self.pid = popen.pid
        self.start_time = proc_start_time(popen.pid)
        self.log_path = log_path
        self.lines: deque[str] = deque(maxlen=2000)
        self.nlines = 0  # lines seen so far (``mark()``); the deque keeps only the last 2000
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None
        if popen.stdout is not None:
            self._reader = threading.Thread(target=self._drain, daemon=True,
                                            name=f"proc-{self.pid}")
            self._reader.start()
        elif log_path is not None:
            # Output goes straight to the log file (a detached lab: the process must outlive
            # the one that started it, so no pipe); follow the file instead.
            self._reader = threading.Thread(target=self._follow, daemon=True,
                                            name=f"proc-{self.pid}")
            self._reader.start()

    def record(self) -> ProcRecord:
        return ProcRecord(self.pid, self.start_time, self.node, os.path.basename(self.argv[0]))

    def _drain(self) -> None:
        log = open(self.log_path, "a", buffering=1) if self.log_path else None
        try:
            for line in self.popen.stdout:  # type: ignore[union-attr]
                if log:
                    log.write(line)
                self._add(line)
        finally:
            if log:
                log.close()
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _add(self, line: str) -> None:
        with self._cond:
            self.lines.append(line.rstrip("\n"))
            self.nlines += 1
            self._cond.notify_all()

    def _follow(self) -> None:
        assert self.log_path is not None
        try:
            with open(self.log_path, "r", errors="replace") as f:
                partial = ""
                while True:
                    chunk = f.readline()
                    if chunk:
                        partial += chunk
                        if partial.endswith("\n"):
                            self._add(partial)
                            partial = ""
                        continue
                    if self.popen.poll() is not None:
                        rest = partial + f.read()
                        for line in rest.splitlines():
                            self._add(line)
                        break
                    # A regular file has no "data ready" event to wait on; a short pause
                    # bounds the delay a readiness line sees (detached labs only).
                    time.sleep(0.05)
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def tail(self, n: int = 20) -> str:
        """The last ``n`` lines of its output (stdout and stderr), kept in memory: still there
        after the lab's temporary directory (and the log file in it) has been deleted."""
        with self._cond:
            return "\n".join(list(self.lines)[-n:])

    def describe_exit(self, what: str = "", n: int = 20) -> str:
        """One message for a helper that failed: what it is, its exit status, its last output."""
        rc = self.popen.poll()
        state = "still running" if rc is None else f"exited rc={rc}"
        name = what or os.path.basename(self.argv[0]) + (
            f" {self.argv[2]}" if len(self.argv) > 2 and self.argv[1] == "-m" else "")
        return f"{name} in {self.ns} {state}; its last output:\n{self.tail(n) or '(none)'}"

    def mark(self) -> int:
        """A position in the output; pass it as ``since`` to only look at later lines."""
        with self._cond:
            return self.nlines

    def wait_for_line(self, pattern: str | Callable[[str], bool], timeout: float = 10.0,
                      since: int = 0) -> str:
        """Block until a stdout line matches (regex search or predicate); raise on exit/timeout.

        Only lines at positions >= ``since`` (see ``mark()``) are considered."""
        pred = pattern if callable(pattern) else (lambda s, rx=re.compile(pattern): bool(rx.search(s)))
        deadline = time.monotonic() + timeout
        pos = since
        with self._cond:
            while True:
                first = self.nlines - len(self.lines)  # position of self.lines[0]
                lines = list(self.lines)
                for i in range(max(pos, first), self.nlines):
                    if pred(lines[i - first]):
                        return lines[i - first]
                pos = self.nlines
                if self._eof:
                    try:
                        self.popen.wait(2)      # output closed: the exit status follows
                    except subprocess.TimeoutExpired:
                        pass
                    raise LabError(f"not ready: {self.describe_exit()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"not ready after {timeout}s: {self.describe_exit()}")
                self._cond.wait(left)

    def send_line(self, line: str) -> None:
        assert self.popen.stdin is not None, "spawned without stdin=PIPE"
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.popen.stdin:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        if self._reader:
            self._reader.join(2)
        return self.popen.poll()

    def __repr__(self) -> str:
        return f"<Proc {self.node} pid={self.pid} {' '.join(self.argv[:3])}>"


class Node:
    """One namespace of a lab: a role name ("client", "core", ...) and its netns name."""

    def __init__(self, role: str, ns: str, lab=None):
        self.role = role
        self.ns = ns
        self._lab = lab

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """Run a command to completion inside this namespace (see ``netns_lab.netns.run``)."""
        return run(self.argv(argv), **kw)

    def python(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run ``python3 <args>`` (same interpreter, this repo importable) in the namespace."""
        return run(self.argv([sys.executable, *args]), **kw)

    def ip(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.ns, *args], **kw)

    def ip_batch(self, lines: Sequence[str]) -> None:
        if lines:
            run(["ip", "-n", self.ns, "-batch", "-"], input="\n".join(lines) + "\n")

    def sysctl(self, settings: dict[str, object]) -> None:
        args = [f"{k}={v}" for k, v in settings.items()]
        self.run(["sysctl", "-q", "-w", *args])

    def read_sysctl(self, key: str) -> str:
        return self.run(["sysctl", "-n", key]).stdout.strip()

    def nft(self, script: str) -> None:
        self.run(["nft", "-f", "-"], input=script)

    def spawn(self, argv: Sequence[str], **kw) -> Proc:
        if self._lab is None:
            raise LabError("node is not attached to a Lab; use Lab.spawn")
        return self._lab.spawn(self.role, argv, **kw)

    def __repr__(self) -> str:
        return f"<Node {self.role} ns={self.ns}>"


def popen_in_ns(ns: str, argv: Sequence[str], *, stdin: bool = False,
                env: dict | None = None, cwd: str | None = None,
                log_file: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in namespace ``ns``: stdout and stderr merged into a pipe, or with
    ``log_file`` appended straight to that file (for processes that outlive their starter)."""
    e = lab_env(env)
    out = open(log_file, "ab") if log_file is not None else subprocess.PIPE
    try:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True, env=e, cwd=cwd)
    finally:
        if log_file is not None:
            out.close()  # type: ignore[union-attr]
