"""Optional deployment CA: host certificates whose trust does not come from the gateway.

Without it, a client trusts the host certificate fingerprint the broker hands
out, and a host trusts the ticket signing key the gateway sends at
registration: an *active*, malicious gateway could put itself in the middle.
With it:

* ``shortpath ca init --ca-dir DIR`` makes a CA key (``ca.key``, 0600) and
  certificate (``ca.crt``) on an operator's machine -- never on a gateway;
* ``shortpath ca sign --ca-dir DIR --host-id ID --cert HOSTCERT`` issues a
  certificate for the *public key* in a host's existing certificate (the host's
  private key never moves), naming the host id as a URI subject alternative
  name ``urn:shortpath:host:<percent-encoded id>``; copy it over the host's
  ``host-<id>.crt``;
* clients given ``ca.crt`` (``connect(host_ca=...)``, ``--host-ca``) verify the
  chain in the end-to-end TLS and that the certificate names the host id the
  broker announced; the gateway given ``ca.crt`` (``[gateway] host_ca``) accepts
  a registration only for a certificate the CA issued for that host id, so a
  stolen host token alone no longer registers a host.

Only a CA that signs leaf certificates directly is supported (no intermediates).
"""

from __future__ import annotations

import datetime
import os
import ssl
import urllib.parse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import AuthError, ConfigError
from . import files

URI_PREFIX = "urn:shortpath:host:"
CA_KEY = "ca.key"
CA_CERT = "ca.crt"


def host_uri(host_id: str) -> str:
    return URI_PREFIX + urllib.parse.quote(host_id, safe="")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def init(ca_dir: str, name: str = "shortpath deployment CA", days: int = 3650) -> str:
    """Create a CA in ``ca_dir``; returns the certificate path. Refuses to overwrite one."""
    files.private_dir(ca_dir)
    key_path, cert_path = os.path.join(ca_dir, CA_KEY), os.path.join(ca_dir, CA_CERT)
    if os.path.lexists(key_path) or os.path.lexists(cert_path):
        raise ConfigError(f"{ca_dir} already holds a CA; refusing to overwrite it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    files.write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()), exclusive=True)
    files.write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), exclusive=True)
    return cert_path


def load_cert(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc}") from None


def sign_host(ca_dir: str, host_id: str, host_cert_path: str, out_path: str | None = None,
              days: int = 365) -> str:
    """Issue a certificate for ``host_id`` over the public key in ``host_cert_path``."""
    if not host_id:
        raise ConfigError("a host id is needed")
    key_pem = files.read_private(os.path.join(ca_dir, CA_KEY))
    if key_pem is None:
        raise ConfigError(f"no CA key in {ca_dir} (run 'shortpath ca init' first)")
    ca_key = serialization.load_pem_private_key(key_pem, password=None)
    ca_cert = load_cert(os.path.join(ca_dir, CA_CERT))
    host_pub = load_cert(host_cert_path).public_key()
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_id[:64])]))
            .issuer_name(ca_cert.subject).public_key(host_pub).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(host_uri(host_id))]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(host_pub), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = out_path or host_cert_path
    files.write_private(out, cert.public_bytes(serialization.Encoding.PEM))
    return out


def verify_host_cert(cert: x509.Certificate, ca_cert: x509.Certificate, host_id: str,
                     now: datetime.datetime | None = None) -> None:
    """AuthError unless ``cert`` was issued by ``ca_cert`` for ``host_id`` and is valid at ``now``."""
    now = now or _now()
    if cert.issuer != ca_cert.subject:
        raise AuthError("host certificate was not issued by the deployment CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise AuthError("host certificate signature does not verify with the deployment CA") from None
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise AuthError("host certificate is outside its validity period")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise AuthError("host certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if host_uri(host_id) not in uris:
        raise AuthError(f"host certificate is not issued for host id {host_id!r}")


def verify_host_der(der: bytes, ca_path: str, host_id: str) -> None:
    """The client's check after the inner TLS handshake (the chain was already
    verified by OpenSSL against the same CA): the certificate names ``host_id``."""
    if not der:
        raise AuthError("host presented no certificate")
    verify_host_cert(x509.load_der_x509_certificate(der), load_cert(ca_path), host_id)


def client_context(ca_path: str) -> ssl.SSLContext:
    """Inner-TLS client context that verifies the host's chain against the deployment CA.
    The host id is checked after the handshake (:func:`verify_host_der`): OpenSSL
    does not match URI names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(ca_path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the deployment CA {ca_path}: {exc}") from None
    return ctx
