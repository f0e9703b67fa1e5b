"""What a lab run created, written to disk so that a crashed run can be cleaned up later.

One JSON file per run under ``/run/netns_lab/<run_id>.json`` (override with the environment
variable ``NETNS_LAB_STATE_DIR``).  It lists the namespaces we created, the processes we started
(pid + kernel start time, so a recycled pid is never signalled) and the run's temp directory.
Cleanup deletes exactly those names and pids -- never anything matched by pattern.

A run is *stale* when its owner process is gone and it was not started detached
(``python -m netns_lab up`` leaves a detached run on purpose until ``down``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ.get("NETNS_LAB_STATE_DIR", "/run/netns_lab"))


def proc_start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[19])


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:data.rindex(b")") + 3] == b"Z"


def pid_alive(pid: int, start: int | None) -> bool:
    """``pid`` is running and is the process recorded (same start time). An exited process
    that its parent has not reaped yet (a zombie) is not alive: processes of a detached lab
    are reaped by whatever adopted them, sometimes seconds later."""
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start) and not _zombie(pid)


@dataclass
class ProcRecord:
    pid: int
    start: int | None
    node: str
    argv0: str


@dataclass
class RunState:
    run_id: str
    owner_pid: int
    owner_start: int | None
    detached: bool = False
    created: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    procs: list[ProcRecord] = field(default_factory=list)
    workdir: str | None = None
    config: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.run_id}.json"

    def save(self) -> None:
        d = state_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{self.run_id}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    def remove_file(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    @classmethod
    def load(cls, path: Path) -> "RunState":
        raw = json.loads(path.read_text())
        raw["procs"] = [ProcRecord(**p) for p in raw.get("procs", [])]
        return cls(**raw)

    def is_stale(self) -> bool:
        return not self.detached and not pid_alive(self.owner_pid, self.owner_start)


def list_runs() -> list[RunState]:
    d = state_dir()
    if not d.is_dir():
        return []
    runs = []
    for p in sorted(d.glob("*.json")):
        try:
            runs.append(RunState.load(p))
        except (ValueError, TypeError, KeyError):
            continue
    return runs


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def netns_pids(name: str) -> list[int]:
    """Pids whose network namespace is ``name`` (a namespace we created)."""
    r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def kill_pid(pid: int, start: int | None, grace: float = 2.0) -> None:
    """SIGTERM then SIGKILL one recorded process (and its process group, which it leads)."""
    if not pid_alive(pid, start):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            # Every process we spawn leads its own session/process group (start_new_session).
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                # Reap it if it is our child; otherwise just watch /proc.
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:
                pass
            if not pid_alive(pid, start):
                return
            time.sleep(0.01)


def teardown(state: RunState) -> list[str]:
    """Remove everything ``state`` records.  Returns a list of problems (empty = clean)."""
    problems: list[str] = []
    for rec in reversed(state.procs):
        kill_pid(rec.pid, rec.start)
    # Anything still living inside one of *our* namespaces (e.g. a grandchild we never
    # recorded) is found through `ip netns pids <our name>`, not by name matching.
    for ns in state.namespaces:
        if netns_exists(ns):
            for pid in netns_pids(ns):
                kill_pid(pid, proc_start_time(pid))
    for ns in reversed(state.namespaces):
        if netns_exists(ns):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"ip netns del {ns}: {r.stderr.strip()}")
    if state.workdir and os.path.isdir(state.workdir):
        shutil.rmtree(state.workdir, ignore_errors=True)
    if not problems:
        state.remove_file()
    return problems


def cleanup(stale_only: bool = True) -> list[tuple[str, list[str]]]:
    """Tear down recorded runs (only stale ones by default).  Returns [(run_id, problems)]."""
    out = []
    for st in list_runs():
        if stale_only and not st.is_stale():
            continue
        out.append((st.run_id, teardown(st)))
    return out
