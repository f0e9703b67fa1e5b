"""Logging conventions: one logger per subsystem, ``event key=value ...`` lines.

Every line that concerns a session carries ``sid=``. Branches that should never
happen log with the ``BUG`` tag so they can be grepped for. Secrets (tokens,
TURN passwords, keys) never go into log lines: use tokens.describe().
"""

from __future__ import annotations

import logging


def get(subsystem: str) -> logging.Logger:
    return logging.getLogger(f"shortpath.{subsystem}")


def kv(_event: str, **fields) -> str:
    parts = [_event]
    for k, v in fields.items():
        if v is None:
            continue
        s = str(v)
        if " " in s or not s:
            s = repr(s)
        parts.append(f"{k}={s}")
    return " ".join(parts)


def setup(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
