"""No module in shortpath/ outside the two compat modules touches a private aioice/aiortc name.

Every private name of those libraries that we rely on lives in transport/udp/_aioice_compat.py or
_aiortc_compat.py, with why, and test_compat_canary.py checks that each still exists. This test
keeps it that way: it reads shortpath/ with ``ast`` and fails, naming file:line, on

* an import of an underscore name from aioice/aiortc;
* ``x._name`` where ``_name`` is private in aioice/aiortc (collected from their installed
  source) and not a name the same module defines for itself (so ``self._agent`` passes and
  ``sctp._cwnd`` does not), or a name-mangled ``x._Class__name`` anywhere;
* ``super()._name``, ``self._name`` and ``def _name`` for such names inside a class that derives
  from an aioice/aiortc class (overriding or reading the library's privates);
* getattr/setattr/hasattr/delattr with such a name as a string.

A private name the same module also defines (``_closed``, ``_transport``...) cannot be told apart
on an object of unknown type; the compat modules, the canary and code review cover that gap.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "shortpath"
LIBRARIES = ("aioice", "aiortc")

EXCLUDED = {
    ROOT / "transport/udp/_aioice_compat.py",   # the fence itself
    ROOT / "transport/udp/_aiortc_compat.py",
}

MANGLED = re.compile(r"^_[A-Za-z][A-Za-z0-9]*__[A-Za-z_]\w*$")
ATTR_FUNCS = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names(tree: ast.AST, skip_class=lambda node: False) -> set[str]:
    """Underscore names a module defines: defs, classes, module/class assignments,
    ``self._x = ...`` (and ``self.__x`` as ``_Class__x`` too)."""
    out: set[str] = set()

    def visit(node: ast.AST, cls: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                if not skip_class(child):
                    if _private(child.name):
                        out.add(child.name)
                    visit(child, child.name)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(child.name):
                out.add(child.name)
                if cls and child.name.startswith("__"):
                    out.add(f"_{cls.lstrip('_')}{child.name}")
            targets: list[ast.AST] = []
            if isinstance(child, ast.Assign):
                targets = list(child.targets)
            elif isinstance(child, (ast.AnnAssign, ast.AugAssign)):
                targets = [child.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and _private(n.id):
                        out.add(n.id)
                    elif isinstance(n, ast.Attribute) and _private(n.attr):
                        out.add(n.attr)
                        if cls and n.attr.startswith("__"):
                            out.add(f"_{cls.lstrip('_')}{n.attr}")
            visit(child, cls)

    visit(tree, None)
    return out


def _library_private_names() -> set[str]:
    names: set[str] = set()
    for lib in LIBRARIES:
        spec = importlib.util.find_spec(lib)
        assert spec is not None and spec.submodule_search_locations, f"{lib} is not installed"
        for folder in spec.submodule_search_locations:
            for path in Path(folder).rglob("*.py"):
                names |= _defined_names(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return names


def _library_aliases(tree: ast.AST) -> set[str]:
    """Local names bound to aioice/aiortc objects or to our compat modules, in one module."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in LIBRARIES:
                    out.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            from_lib = mod.split(".")[0] in LIBRARIES
            from_compat = mod.endswith("_compat")
            for a in node.names:
                if from_lib or from_compat or a.name.endswith("_compat"):
                    out.add(a.asname or a.name)
    return out


def _derives_from_library(cls: ast.ClassDef, aliases: set[str], lib_classes: set[str]) -> bool:
    for base in cls.bases:
        for n in ast.walk(base):
            if isinstance(n, ast.Name) and (n.id in aliases or n.id in lib_classes):
                return True
    return False


def _library_classes(tree: ast.AST, aliases: set[str]) -> set[str]:
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name not in found \
                    and _derives_from_library(node, aliases, found):
                found.add(node.name)
                changed = True
    return found


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _module_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines for itself (not in classes derived from the libraries)."""
    lib_classes = _library_classes(tree, _library_aliases(tree))
    return _defined_names(tree, skip_class=lambda c: c.name in lib_classes)


def violations(source: str, filename: str, lib: set[str], ours: set[str] | None = None) -> list[str]:
    """file:line: what, for every private library name used in ``source``. ``ours``: the
    module's own underscore names (default: read from ``source``)."""
    tree = ast.parse(source, filename)
    aliases = _library_aliases(tree)
    lib_classes = _library_classes(tree, aliases)
    if ours is None:
        ours = _module_names(tree)
    found: list[str] = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    def foreign(name: str) -> bool:
        return bool(MANGLED.match(name)) or (name in lib and name not in ours)

    def visit(node: ast.AST, in_lib_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_lib_class
            if isinstance(child, ast.ClassDef):
                inside = child.name in lib_classes
            elif isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] in LIBRARIES:
                for a in child.names:
                    if _private(a.name):
                        report(child, f"imports private {a.name} from {child.module}")
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] in LIBRARIES and any(_private(p) for p in a.name.split(".")):
                        report(child, f"imports private module {a.name}")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if in_lib_class and _private(child.name) and child.name in lib:
                    report(child, f"overrides library method {child.name}")
            elif isinstance(child, ast.Attribute) and _private(child.attr):
                name, value = child.attr, child.value
                if MANGLED.match(name):
                    report(child, f"reads name-mangled .{name}")
                elif name in lib:
                    if _is_super_call(value):
                        report(child, f"calls library method super().{name}")
                    elif isinstance(value, ast.Name) and value.id in ("self", "cls"):
                        if in_lib_class:
                            report(child, f"uses library attribute self.{name}")
                    elif name not in ours:
                        report(child, f"uses library attribute .{name}")
            elif isinstance(child, ast.Call) and isinstance(child.func, ast.Name) \
                    and child.func.id in ATTR_FUNCS and len(child.args) >= 2 \
                    and isinstance(child.args[1], ast.Constant) and isinstance(child.args[1].value, str):
                name = child.args[1].value
                if _private(name) and foreign(name):
                    report(child, f"{child.func.id}(..., {name!r})")
            elif isinstance(child, ast.Constant) and isinstance(child.value, str) and MANGLED.match(child.value):
                report(child, f"name-mangled string {child.value!r}")
            visit(child, inside)

    visit(tree, False)
    return found


@pytest.fixture(scope="module")
def lib_names() -> set[str]:
    return _library_private_names()


def _our_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p not in EXCLUDED)


def test_no_private_library_names_outside_the_compat_modules(lib_names):
    found: list[str] = []
    for path in _our_files():
        found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT.parent)), lib_names)
    assert not found, ("private aioice/aiortc names outside transport/udp/_aio*_compat.py "
                       "(move them there, with why, and list them in PRIVATE_NAMES):\n  " + "\n  ".join(found))


# -- the checker itself must be able to fail ---------------------------------------------------

CAUGHT = [
    ("def f(agent):\n    return agent._check_list\n", "uses library attribute ._check_list"),
    ("def f(sctp):\n    return sctp._cwnd\n", "uses library attribute ._cwnd"),
    ("def f(t):\n    return t._TurnTransport__inner_protocol\n", "name-mangled"),
    ("def f(t):\n    return getattr(t, '_TurnTransport__inner_protocol', None)\n", "getattr"),
    ("def f(tx):\n    return getattr(tx, '_Transaction__request', None)\n", "getattr"),
    ("def f(dtls):\n    return dtls._ssl\n", "uses library attribute ._ssl"),
    ("from aiortc.rtcsctptransport import _foo\n", "imports private"),
    ("from aioice import Connection\nclass A(Connection):\n"
     "    def _pair_remote_candidate(self, c):\n        return super()._pair_remote_candidate(c)\n",
     "overrides library method _pair_remote_candidate"),
    ("from aioice import Connection\nclass A(Connection):\n"
     "    def f(self):\n        return self._protocols\n", "uses library attribute self._protocols"),
    ("from . import _aioice_compat as compat\nclass A(compat.connection_class()):\n"
     "    def f(self):\n        return self._nominated\n", "uses library attribute self._nominated"),
]

PASSED = [
    "class A:\n    def __init__(self):\n        self._agent = 1\n    def f(self):\n        return self._agent\n",
    "class A:\n    def __init__(self):\n        self._check_list = []\n    def f(self):\n"
    "        return self._check_list\n",   # our own class, our own attribute, whatever its name
    "def f(agent):\n    return agent.check_list\n",
    "def f(x):\n    return x.__class__\n",
]


@pytest.mark.parametrize("source,what", CAUGHT)
def test_checker_catches(source, what, lib_names):
    found = violations(source, "snippet.py", lib_names, ours=set())
    assert any(what in f for f in found), found


@pytest.mark.parametrize("source", PASSED)
def test_checker_passes(source, lib_names):
    assert violations(source, "snippet.py", lib_names, ours={"_agent", "_check_list"}) == []


def test_library_names_were_collected(lib_names):
    # if this fails, the collection is broken and the test above would pass vacuously
    assert {"_check_list", "_cwnd", "_outbound_queue", "_ssl", "_pair_remote_candidate",
            "_TurnTransport__inner_protocol", "_Transaction__request"} <= lib_names


def test_a_missing_private_name_fails_loudly():
    # what a renamed attribute in a new aioice looks like to the compat module: a typed error
    # naming the name, never a silent None that would switch a workaround off
    from types import SimpleNamespace

    from shortpath.transport.udp import _aioice_compat as compat

    with pytest.raises(compat.LibraryChanged, match="_TurnTransport__inner_protocol"):
        compat.turn_inner_protocol(SimpleNamespace())
    proto = SimpleNamespace(transactions={b"t": SimpleNamespace()}, send_stun=lambda *a: None)
    with pytest.raises(compat.LibraryChanged, match="_Transaction__addr"):
        compat.resend_request(proto, ("127.0.0.1", 1))
