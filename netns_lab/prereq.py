"""What the lab needs from the machine, checked before anything is built.

Every external program and shared library that the lab, the lab tests and the lab benchmarks
call is listed once in ``PREREQS``, with the Debian package that brings it (the same names as
``DEBIAN_TEST_PACKAGES`` in ``scripts/setup.sh``, the one list of Debian packages; the unit test
``tests/unit/test_prereq.py`` keeps the two in agreement). A missing one is reported as ONE line:
what is missing, who needs it, which package to install::

    netns_lab: missing program 'turnserver' (Debian package coturn; scripts/setup.sh test installs it), needed by ...

Three places use this:

* ``environment_reason()``: the machine cannot run a lab at all (not Linux, not root, ``ip netns``
  refused). Lab tests are *skipped* with it and the CLI exits with it.
* ``missing(...)`` / ``require(...)`` for the programs and libraries. Lab code calls ``require``
  at the point of use (``Lab.up`` for the core tools, ``Lab.coturn`` for turnserver,
  ``capture.start`` for libpcap), so whatever uses a prerequisite fails with that line, and
  only that. ``tests/lab/conftest.py`` also checks the core tools (and a test's
  ``@pytest.mark.needs(...)``) before a lab test starts: as root a missing one FAILS the test
  (a missing install step must not hide behind a skip in CI); as a normal user lab tests are
  skipped anyway.
* ``python -m netns_lab check`` prints the whole table.

No kernel features are probed here (nf_tables, NFQUEUE, veth): they are part of every stock
Debian kernel, and a kernel without them fails the first lab command with the kernel's own error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

from .netns import LabError

SETUP_SCRIPT = "scripts/setup.sh"


@dataclass(frozen=True)
class Prereq:
    name: str        # what a user sees: a program name, or a library's short name
    kind: str        # "program" (on PATH), "library" (ctypes.util.find_library) or "python" (import)
    probe: str       # the program / find_library name / module to look for
    package: str     # Debian package (programs, libraries) or pip distribution (python)
    needed_by: str   # who calls it, in a few words

    def line(self) -> str:
        """The one line a user sees when this is missing."""
        if self.kind == "python":
            how = f"Python package {self.package}; scripts/setup.sh test installs it into .venv"
        else:
            how = f"Debian package {self.package}; scripts/setup.sh test installs it"
        kind = "Python module" if self.kind == "python" else self.kind
        return f"netns_lab: missing {kind} '{self.name}' ({how}), needed by {self.needed_by}"


#: Everything the lab calls outside Python's standard library and shortpath's own dependencies.
PREREQS: dict[str, Prereq] = {p.name: p for p in (
    Prereq("ip", "program", "ip", "iproute2",
           "every lab: namespaces, veth links, addresses, routes (netns_lab.lab, netns_lab.state)"),
    Prereq("tc", "program", "tc", "iproute2",
           "lab rate limits: tbf qdiscs of Lab.impair(rate_kbit=...) and the bw10 profile"),
    Prereq("nft", "program", "nft", "nftables",
           "every lab: the NAT types (netns_lab.nat) and firewall presets (netns_lab.firewall)"),
    Prereq("iptables", "program", "iptables", "iptables",
           "lab link impairment: the NFQUEUE rules that feed netns_lab.emulator (Lab.impair)"),
    Prereq("sysctl", "program", "sysctl", "procps",
           "every lab: per-namespace forwarding and conntrack timeouts (Node.sysctl)"),
    Prereq("turnserver", "program", "turnserver", "coturn",
           "the lab's TURN/STUN server (Lab.coturn, netns_lab.scenario's stack: matrix, "
           "lab benchmarks, coturn and fault tests)"),
    Prereq("libpcap", "library", "pcap", "libpcap0.8",
           "scapy's capture filter in netns_lab.capture (matrix cells, tests/lab/test_capture.py)"),
    Prereq("chromium", "program", "chromium", "chromium",
           "the browser-client tests (tests/integration/test_browser.py, tests/lab/test_browser_lab.py), "
           "run headless by Playwright"),
    Prereq("playwright", "python", "playwright", "playwright",
           "driving chromium in the browser-client tests (tests/lab/test_browser_lab.py)"),
    Prereq("scapy", "python", "scapy", "scapy",
           "packet capture and crafted packets in the lab (netns_lab.capture, hostile-UDP tests)"),
)}

#: Named sets. "lab" is what every lab needs (checked by Lab.up and before every lab test).
GROUPS: dict[str, tuple[str, ...]] = {
    "lab": ("ip", "tc", "nft", "iptables", "sysctl"),
    "turn": ("turnserver",),
    "capture": ("libpcap", "scapy"),
    "browser": ("chromium", "playwright"),
}


def _expand(names: Iterable[str]) -> list[Prereq]:
    out: list[Prereq] = []
    for n in names:
        for m in GROUPS.get(n, (n,)):
            if m not in PREREQS:
                raise KeyError(f"unknown lab prerequisite {m!r}; known: {sorted(PREREQS)} "
                               f"and groups {sorted(GROUPS)}")
            if PREREQS[m] not in out:
                out.append(PREREQS[m])
    return out


def _has_library(short: str) -> bool:
    # What scapy does (scapy/libs/winpcapy.py): find_library, then load it.
    import ctypes
    import ctypes.util
    found = ctypes.util.find_library(short)
    if not found:
        return False
    try:
        ctypes.CDLL(found)
    except OSError:
        return False
    return True


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def present(p: Prereq, *, which: Callable[[str], str | None] = shutil.which,
            has_library: Callable[[str], bool] = _has_library,
            has_module: Callable[[str], bool] = _has_module) -> bool:
    if p.kind == "program":
        return which(p.probe) is not None
    if p.kind == "library":
        return has_library(p.probe)
    return has_module(p.probe)


def missing(*names: str, **probes) -> list[str]:
    """One line per missing prerequisite among ``names`` (prerequisites or group names)."""
    return [p.line() for p in _expand(names or ("lab",)) if not present(p, **probes)]


class PrereqMissing(LabError):
    """A program or library the lab needs is not installed (the message says which package)."""


def require(*names: str) -> None:
    """Raise ``PrereqMissing`` (one line per missing prerequisite) unless all are present."""
    lines = missing(*names)
    if lines:
        raise PrereqMissing("\n".join(lines))


def environment_reason() -> str | None:
    """Why this machine cannot run a lab at all (None = it can), whatever is installed."""
    if sys.platform != "linux":
        return "netns lab needs Linux"
    if os.geteuid() != 0:
        return "netns lab needs root (network namespaces, nftables, NFQUEUE)"
    if shutil.which("ip"):
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        if r.returncode != 0:
            return f"'ip netns' unavailable: {r.stderr.strip()}"
    return None


def report(**probes) -> list[dict]:
    """The whole table (``python -m netns_lab check``)."""
    return [{"name": p.name, "kind": p.kind, "package": p.package, "needed_by": p.needed_by,
             "present": present(p, **probes)} for p in PREREQS.values()]
