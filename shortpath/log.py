r"""Logging conventions: one logger per subsystem, ``event key=value ...`` lines.

Every line that concerns a session carries ``sid=``. Branches that should never
happen log with the ``BUG`` tag so they can be grepped for. Secrets (tokens,
TURN passwords, keys) never go into log lines: use tokens.describe().

Values often come from peers (resource names, host ids, error text), so
:func:`kv` makes every value one token that cannot end the line or pose as
another field: a value that is empty or holds a space, ``=``, a quote, a
backslash or any control or line-breaking character is written in double
quotes, with ``\\``, ``\"``, ``\n``, ``\r``, ``\t`` and ``\xNN`` / ``\uNNNN``
escapes for the rest. Control characters in the event name are escaped the
same way (without quotes).
"""

from __future__ import annotations

import logging
import re


def get(subsystem: str) -> logging.Logger:
    return logging.getLogger(f"shortpath.{subsystem}")


#: Characters that force quoting: whitespace, '=', quotes, backslash, C0/C1
#: controls, DEL, and Unicode line/paragraph separators.
_NEEDS_QUOTES = re.compile(r'[\s="\'\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
#: Characters escaped inside quotes (and in event names).
_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029]')
_SHORT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _esc(m: re.Match) -> str:
    c = m.group()
    if c in _SHORT:
        return _SHORT[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def _value(v) -> str:
    s = str(v)
    if s and not _NEEDS_QUOTES.search(s):
        return s
    return '"' + _ESCAPE.sub(_esc, s) + '"'


def kv(_event: str, **fields) -> str:
    parts = [_CONTROL.sub(_esc, _event)]
    for k, v in fields.items():
        if v is None:
            continue
        parts.append(f"{k}={_value(v)}")
    return " ".join(parts)


def setup(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
