"""Whether a certificate may name the principal it names: the checks a server makes of a TLS
peer and a recipient makes of an alert's signer (federated trust, docs/decisions/0012).

1. the certificate's one SPIFFE URI SAN is in the trust domain, for client authentication;
2. its issuing CA, found in the trust bundle by authority key identifier (RFC 5280 4.2.1.1) and
   checked by signature, has a scope (:class:`certs.CaScope`) that covers the SAN's agency:
   X.509 URI name constraints bind only the trust domain, so a police CA could otherwise issue an
   immigration identity that TLS accepts.

Pure: no files, no network. Revocation is the caller's (:class:`certs.CrlSet`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs._errors import CertificateError
from certs._names import SpiffeId
from certs._x509 import ca_scope_of, identity_of, issued_by

__all__ = ["TrustAnchors", "identity_refusal", "trusted_signer"]


@dataclass(frozen=True, eq=False)  # hashed by identity: a reloaded bundle is a new cache key
class TrustAnchors:
    """The CA certificates of a trust bundle (``ca.crt``), by subject key identifier."""

    certificates: tuple[x509.Certificate, ...]
    by_key_id: Mapping[bytes, tuple[x509.Certificate, ...]]

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustAnchors:
        try:
            certificates = tuple(x509.load_pem_x509_certificates(pem))
        except ValueError:
            raise CertificateError("the trust bundle is not a PEM certificate bundle") from None
        index: dict[bytes, tuple[x509.Certificate, ...]] = {}
        for cert in certificates:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            index[ski.value.digest] = (*index.get(ski.value.digest, ()), cert)
        return cls(certificates, MappingProxyType(index))

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The trusted CA that signed ``cert``: by authority key identifier, else by name
        (RFC 5280 4.2.1.1), and in either case by a valid signature."""
        try:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            candidates = self.by_key_id.get(aki.key_identifier or b"", ())
        except x509.ExtensionNotFound:
            candidates = ()
        if not candidates:
            candidates = tuple(ca for ca in self.certificates if ca.subject == cert.issuer)
        return next((ca for ca in candidates if issued_by(cert, ca)), None)


def identity_refusal(
    cert: x509.Certificate, identity: SpiffeId, trust_domain: str, anchors: TrustAnchors
) -> str | None:
    """Why ``cert`` may not act as ``identity`` in ``trust_domain``, or None if it may."""
    if identity.trust_domain != trust_domain:
        return f"trust domain {identity.trust_domain!r} is not this exchange's"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "certificate has no extended key usage"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:  # RFC 5280 4.2.1.12
        return "certificate is not for client authentication"
    issuer = anchors.issuer_of(cert)
    if issuer is None:
        return f"issuing CA {cert.issuer.rfc4514_string()!r} is not in the trust bundle"
    scope = ca_scope_of(issuer)
    if scope is None:
        return (
            f"issuing CA {issuer.subject.rfc4514_string()!r} records no agency "
            "(no spiffe:// CA scope): it may not issue identities"
        )
    return scope.refusal(identity)


@functools.lru_cache(maxsize=1024)
def trusted_signer(
    der: bytes, trust_domain: str, anchors: TrustAnchors
) -> tuple[x509.Certificate, SpiffeId]:
    """The certificate in ``der`` and the principal it names, if the trust bundle vouches for
    it; else :class:`CertificateError` saying why. Its validity period is the caller's to check
    against the time of the act. Cached: a recipient sees the same few signers again and again."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise CertificateError("the signer's certificate cannot be parsed") from None
    identity = identity_of(cert)
    refusal = identity_refusal(cert, identity, trust_domain, anchors)
    if refusal is not None:
        raise CertificateError(f"signer {identity}: {refusal}")
    return cert, identity
