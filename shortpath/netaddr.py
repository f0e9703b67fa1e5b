"""Small address helpers shared by the CLI and the peers."""

from __future__ import annotations

from .errors import ConfigError


def parse_hostport(text: str | tuple, default_port: int = 443) -> tuple[str, int]:
    if isinstance(text, tuple):
        return str(text[0]), int(text[1])
    host, sep, port = str(text).rpartition(":")
    if not sep:
        return str(text), default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"bad address {text!r}: expected host:port") from None
