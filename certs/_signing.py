"""Signatures by identity keys over exact bytes: what makes an alert non-repudiable
(docs/decisions/0014).

The encoding is DSSE v1's (secure-systems-lab/dsse, protocol.md): the key signs
``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, so a signature made for
one payload type never verifies as another, and the body travels as the bytes signed, never
re-encoded. An identity key is ECDSA P-256 (signed with SHA-256, RFC 5758 3.2) or Ed25519.
"""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certs._errors import CertificateError, CertsError

__all__ = [
    "STATEMENT_MAX_SKEW",
    "STATEMENT_TYPE",
    "SignatureInvalid",
    "Signer",
    "pae",
    "verify_signature",
]

# A sender's signed statement (sinergi.v1.Statement): its DSSE payload type, and how far its
# signing time may be from the exchange's clock when the exchange takes it.
STATEMENT_TYPE = "application/vnd.sinergi.statement.v1+proto"
STATEMENT_MAX_SKEW = timedelta(minutes=5)


class SignatureInvalid(CertsError):
    """A signature does not verify with the key it is claimed to be from."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding (protocol.md, "Signature definition")."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


class Signer:
    """An identity's private key, loaded once, signing DSSE payloads."""

    def __init__(self, key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise CertificateError("identity keys must be ECDSA or Ed25519 to sign statements")
        self._key = key

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        message = pae(payload_type, payload)
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(message)
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_signature(
    cert: x509.Certificate, payload_type: str, payload: bytes, signature: bytes
) -> None:
    """Raise :class:`SignatureInvalid` unless ``cert``'s key signed ``payload`` as that type."""
    key = cert.public_key()
    message = pae(payload_type, payload)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            raise SignatureInvalid("the certificate's key cannot sign statements")
    except InvalidSignature:
        raise SignatureInvalid("the signature does not verify with the certificate's key") from None
