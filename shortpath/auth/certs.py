"""Self-signed certificates and their SHA-256 fingerprints.

The gateway's certificate is what clients and hosts pin (``--ca``). Each host
has its own certificate for the end-to-end TLS inside the relay; the broker
records its fingerprint at registration and hands it to the client, which
refuses any other certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import FingerprintMismatch
from . import files


def generate_self_signed(common_name: str, sans: list[str] | None = None,
                         days: int = 3650) -> tuple[bytes, bytes]:
    """Return (cert PEM, key PEM) for a fresh P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = []
    for s in sans or []:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            alt.append(x509.DNSName(s))
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def load_or_create(cert_path: str, key_path: str, common_name: str,
                   sans: list[str] | None = None) -> None:
    """Create a cert/key pair at the given paths unless both exist.

    Both files are private state (auth/files.py): created 0600, tightened to
    0600 when they already exist, and refused (ConfigError) if either is a
    symbolic link."""
    have_key = files.tighten(key_path)
    have_cert = files.tighten(cert_path)
    if have_key and have_cert:
        return
    cert_pem, key_pem = generate_self_signed(common_name, sans)
    files.write_private(key_path, key_pem)
    files.write_private(cert_path, cert_pem)


def fingerprint_der(der: bytes) -> str:
    return "sha-256 " + hashlib.sha256(der).hexdigest()


def fingerprint_pem_file(path: str) -> str:
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def check_fingerprint(sslobj: ssl.SSLObject | ssl.SSLSocket, expected: str) -> None:
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        raise FingerprintMismatch("peer presented no certificate")
    got = fingerprint_der(der)
    if got != expected:
        raise FingerprintMismatch("peer certificate fingerprint does not match the one the broker registered")


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def client_context(cafile: str | None) -> ssl.SSLContext:
    """Context for dialing the gateway: verify against the pinned gateway cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile:
        ctx.load_verify_locations(cafile)
        # The lab and demo reach the gateway by IP or "localhost"; the pinned
        # self-signed cert is the trust anchor, so the name check adds nothing.
        ctx.check_hostname = False
    else:
        ctx.load_default_certs()
    return ctx


def pinned_client_context() -> ssl.SSLContext:
    """Context for the end-to-end TLS to a host: no CA, the fingerprint is checked after the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
