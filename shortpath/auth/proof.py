"""Proof that a registering host holds its certificate's private key.

A host token says "this host id may register into this pool"; it is a bearer
secret and can be stolen (a readable file, a log, a backup). A certificate
fingerprint is public (clients receive it). So at registration the gateway
sends a fresh random ``nonce`` and the host signs, with the private key of the
certificate it uses for the end-to-end TLS, the message built by
:func:`challenge_message`. The broker checks that the certificate the host
sends hashes to the fingerprint it registers and that the signature verifies
with that certificate's key. A host id that is live can only be taken over by
a registration with a valid proof for the *same* certificate (broker/service.py).

The signed message is a JSON array, so its fields cannot run into each other:
``["shortpath-host-registration-v1", gateway_id, host_id, fingerprint, nonce]``.
Binding the gateway id and host id means a proof made for one gateway or host
id is worthless for another; the nonce makes every proof single-use.

Keys: ECDSA P-256 with SHA-256 (what certs.generate_self_signed and
``shortpath ca sign`` make) or Ed25519. Signatures travel as unpadded base64url.
"""

from __future__ import annotations

import base64
import json
import secrets

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..errors import AuthError, BadSignature
from . import files
from .certs import fingerprint_der

CONTEXT = "shortpath-host-registration-v1"
NONCE_BYTES = 32
#: Longest PEM certificate accepted in a proof (a host cert is ~600 characters).
MAX_CERT_CHARS = 8192


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def challenge_message(gateway_id: str, host_id: str, fingerprint: str, nonce: str) -> bytes:
    return json.dumps([CONTEXT, gateway_id, host_id, fingerprint, nonce], separators=(",", ":")).encode()


def load_private_key(key_path: str):
    pem = files.read_private(key_path)
    if pem is None:
        raise AuthError(f"no private key at {key_path}")
    return serialization.load_pem_private_key(pem, password=None)


def sign(key, message: bytes) -> str:
    """Sign with a host's private key object; unpadded base64url."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(message)
    else:
        raise AuthError(f"host key type {type(key).__name__} cannot sign a registration proof")
    return base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def load_certificate(cert_pem: str) -> x509.Certificate:
    if not isinstance(cert_pem, str) or not cert_pem or len(cert_pem) > MAX_CERT_CHARS:
        raise AuthError("registration proof carries no usable certificate")
    try:
        return x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise AuthError("registration proof certificate is not a PEM certificate") from None


def verify(cert_pem: str, fingerprint: str, message: bytes, signature: str) -> x509.Certificate:
    """Check a proof; returns the certificate. AuthError / BadSignature otherwise."""
    cert = load_certificate(cert_pem)
    if fingerprint_der(cert.public_bytes(serialization.Encoding.DER)) != fingerprint:
        raise AuthError("registration proof certificate does not match the registered fingerprint")
    try:
        if not isinstance(signature, str) or len(signature) > 512:
            raise ValueError
        sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except ValueError:
        raise BadSignature("registration proof signature is not base64url") from None
    pub = cert.public_key()
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, message)
        else:
            raise AuthError(f"host certificate key type {type(pub).__name__} is not accepted")
    except InvalidSignature:
        raise BadSignature("registration proof does not verify with the host certificate's key") from None
    return cert
