"""Lab TLS certificates (``cryptography``): one self-signed EC P-256 cert per use, per run.

The certificate is its own trust anchor: a lab client that wants to verify loads ``cert_path``
as its CA file.  Files are written with mode 0600 into the caller's directory (the run's temp
dir), never into the repository.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_cert(directory: str | Path, name: str, *, dns: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), days: int = 2) -> tuple[Path, Path]:
    """Write ``<name>.crt`` and ``<name>.key`` (PEM) into ``directory``; return both paths."""
    directory = Path(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cn = dns[0] if dns else name
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shortpath lab")])
    now = dt.datetime.now(dt.timezone.utc)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    crt_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write_private(crt_path, cert.public_bytes(serialization.Encoding.PEM))
    return crt_path, key_path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
