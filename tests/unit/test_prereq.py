"""The lab's prerequisite table (netns_lab.prereq) against scripts/setup.sh, the one list of
Debian packages, and the one-line messages a missing prerequisite gives."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from netns_lab import prereq
from netns_lab.netns import LabError

REPO = Path(__file__).resolve().parents[2]


def setup_sh_packages() -> dict[str, str]:
    """DEBIAN_TEST_PACKAGES of scripts/setup.sh as {package: probe}."""
    text = (REPO / prereq.SETUP_SCRIPT).read_text()
    m = re.search(r"^DEBIAN_TEST_PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert m, "DEBIAN_TEST_PACKAGES=( ... ) not found in scripts/setup.sh"
    out = {}
    for entry in re.findall(r'"([^"]+)"', m.group(1)):
        spec = entry.split()[0]                 # "package:probe   purpose"
        pkg, _, probe = spec.partition(":")
        out[pkg] = probe
    return out


def test_setup_sh_parses():
    pkgs = setup_sh_packages()
    assert len(pkgs) >= 3 and all(pkgs.values()), pkgs


@pytest.mark.parametrize("p", [p for p in prereq.PREREQS.values() if p.kind != "python"],
                         ids=lambda p: p.name)
def test_every_debian_prereq_is_installed_by_setup_sh(p):
    pkgs = setup_sh_packages()
    assert p.package in pkgs, (f"{p.name} needs Debian package {p.package}, which "
                               f"scripts/setup.sh does not list (it lists {sorted(pkgs)})")
    if p.kind == "library":
        # setup.sh probes a library by soname: lib:libpcap.so.0.8 for find_library("pcap")
        assert pkgs[p.package].startswith(f"lib:lib{p.probe}.so"), pkgs[p.package]


def test_setup_sh_probes_are_things_the_lab_checks():
    """setup.sh decides whether to install a package by its probe; a probe that names a program
    the lab does not check would let setup.sh skip a package the lab is missing."""
    probes = {p.probe for p in prereq.PREREQS.values()}
    by_pkg = {p.package for p in prereq.PREREQS.values()}
    for pkg, probe in setup_sh_packages().items():
        if pkg in by_pkg and not probe.startswith("lib:"):
            assert probe in probes, f"setup.sh probes {pkg} with {probe!r}, not a lab prerequisite"


@pytest.mark.parametrize("p", [p for p in prereq.PREREQS.values() if p.kind == "python"],
                         ids=lambda p: p.name)
def test_python_prereqs_are_in_the_test_extra(p):
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[<>=!~\[ ]", d, 1)[0].lower() for d in extra}
    assert p.package.lower() in names, f"{p.package} is not in pyproject's [test] extra: {extra}"


def test_groups_name_known_prereqs():
    for group, names in prereq.GROUPS.items():
        assert names and all(n in prereq.PREREQS for n in names), group


def test_missing_gives_one_line_each_with_package_and_user():
    absent = {"turnserver", "nft"}
    lines = prereq.missing("lab", "turn", "capture",
                           which=lambda name: None if name in absent else f"/usr/bin/{name}",
                           has_library=lambda short: False, has_module=lambda name: True)
    assert len(lines) == 3
    assert all("\n" not in line for line in lines)
    by_name = {re.search(r"'([^']+)'", line).group(1): line for line in lines}
    assert set(by_name) == {"nft", "turnserver", "libpcap"}
    assert "Debian package coturn" in by_name["turnserver"]
    assert "Debian package libpcap0.8" in by_name["libpcap"] and "library" in by_name["libpcap"]
    assert "needed by" in by_name["nft"] and "nftables" in by_name["nft"]


def test_nothing_missing_gives_no_lines():
    assert prereq.missing("lab", "turn", "capture", which=lambda n: "/bin/" + n,
                          has_library=lambda s: True, has_module=lambda n: True) == []


def test_a_group_counts_each_prereq_once():
    lines = prereq.missing("lab", "ip", "tc", which=lambda n: None)
    assert len(lines) == len(prereq.GROUPS["lab"])


def test_unknown_name_is_an_error():
    with pytest.raises(KeyError, match="unknown lab prerequisite 'tcpdump'"):
        prereq.missing("tcpdump")


def test_require_raises_a_lab_error_with_the_lines(monkeypatch):
    monkeypatch.setattr(prereq, "present", lambda p, **kw: p.name != "turnserver")
    with pytest.raises(prereq.PrereqMissing) as ei:
        prereq.require("turn", "lab")
    assert isinstance(ei.value, LabError)
    assert str(ei.value) == prereq.PREREQS["turnserver"].line()
    prereq.require("lab")    # the rest is present: no error
