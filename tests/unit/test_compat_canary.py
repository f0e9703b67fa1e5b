"""Canary: every private aioice/aiortc name that shortpath uses still exists in the installed
versions. A library upgrade that renames one fails here, naming it, instead of silently switching
off a workaround (TURN clean-up, SCTP tuning, ...)."""

import importlib

import pytest

from shortpath.transport.udp import _aioice_compat, _aiortc_compat


def _resolve(owner: str):
    """'pkg.mod.Class' -> the class (or module) object."""
    parts = owner.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(owner)


def _cases():
    for mod in (_aioice_compat, _aiortc_compat):
        for owner, name, why in mod.PRIVATE_NAMES:
            yield pytest.param(mod.__name__, owner, name, why, id=f"{owner}.{name}")


@pytest.mark.parametrize("module,owner,name,why", list(_cases()))
def test_private_name_still_exists(module, owner, name, why):
    if owner.endswith("()"):
        # An instance attribute: assigned in the class's source (self.NAME = ...).
        import inspect
        cls = _resolve(owner[:-2])
        src = inspect.getsource(cls)
        # set in __init__ (self.NAME = ...) or declared as an annotation on the class (aiortc's
        # DataChunk declares the sender's per-chunk state that way)
        declared = name in getattr(cls, "__annotations__", {})
        assert declared or f"self.{name}" in src, f"{module}: {owner[:-2]} no longer sets self.{name} ({why})"
    else:
        obj = _resolve(owner)
        assert hasattr(obj, name), f"{module}: {owner}.{name} is gone ({why})"


def test_every_compat_module_lists_its_names():
    # Each compat module must register the names it uses; an empty list is allowed only while
    # nothing private is used from that library.
    for mod in (_aioice_compat, _aiortc_compat):
        for entry in mod.PRIVATE_NAMES:
            assert len(entry) == 3 and all(isinstance(x, str) and x for x in entry), (mod.__name__, entry)
