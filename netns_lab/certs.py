"""Lab TLS certificates: one self-signed EC P-256 cert per use, per run.

Generation is shortpath's own (``shortpath.auth.certs.generate_self_signed``);
this module only decides names, lifetime and file modes. The certificate is
its own trust anchor: a lab client that wants to verify loads ``cert_path`` as
its CA file. Files are written with mode 0600 into the caller's directory (the
run's temp dir), never into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from shortpath.auth.certs import generate_self_signed


def make_cert(directory: str | Path, name: str, *, dns: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), days: int = 2) -> tuple[Path, Path]:
    """Write ``<name>.crt`` and ``<name>.key`` (PEM) into ``directory``; return both paths."""
    directory = Path(directory)
    cert_pem, key_pem = generate_self_signed(dns[0] if dns else name, list(dns) + list(ips), days=days)
    crt_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    _write_private(key_path, key_pem)
    _write_private(crt_path, cert_pem)
    return crt_path, key_path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
