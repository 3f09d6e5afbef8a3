"""The Sinergi PKI: a CA, server and agency certificates, and identity directories on disk;
whether a certificate may speak for the principal it names (:func:`identity_refusal`); and
signatures by identity keys over statements (:class:`Signer`, :func:`verify_signature`).

Principals are named by SPIFFE IDs in a certificate's single URI subjectAltName,
``spiffe://<trust-domain>/agency/<agency>/<kind>/<name>``.
"""

from certs._crl import (
    CRL_REFUSALS,
    REVOCATION_REASONS,
    CrlNumbers,
    CrlRefused,
    CrlSet,
    IssuerCrl,
    RevocationDatabase,
    RevocationRecord,
    build_crl,
    load_crls,
    parse_reason,
    verify_crl,
)
from certs._dev import (
    DEV_AGENCIES,
    DEV_AUDITOR_AGENCY,
    DEV_TRUST_DOMAIN,
    DEV_WITNESSES,
    DevPki,
    create_dev_pki,
)
from certs._errors import CertificateError, CertsError, IdentityError
from certs._identity import (
    IDENTITY_FILES,
    Identity,
    load_ca,
    load_identity,
    write_ca,
    write_identity,
)
from certs._names import KINDS, CaScope, SpiffeId
from certs._pki import (
    EXPIRY_WARNING,
    CertificateInfo,
    Pki,
    describe,
    expiring,
    read_certificates,
)
from certs._signing import (
    STATEMENT_MAX_SKEW,
    STATEMENT_TYPE,
    SignatureInvalid,
    Signer,
    pae,
    verify_signature,
)
from certs._trust import TrustAnchors, identity_refusal, trusted_signer
from certs._x509 import (
    Issued,
    ca_scope_of,
    create_agency_ca,
    create_ca,
    fingerprint,
    identity_of,
    issue_client,
    issue_server,
    load_pem_certificate,
)

__all__ = [
    "CRL_REFUSALS",
    "DEV_AGENCIES",
    "DEV_AUDITOR_AGENCY",
    "DEV_TRUST_DOMAIN",
    "DEV_WITNESSES",
    "EXPIRY_WARNING",
    "IDENTITY_FILES",
    "KINDS",
    "REVOCATION_REASONS",
    "STATEMENT_MAX_SKEW",
    "STATEMENT_TYPE",
    "CaScope",
    "CertificateError",
    "CertificateInfo",
    "CertsError",
    "CrlNumbers",
    "CrlRefused",
    "CrlSet",
    "DevPki",
    "Identity",
    "IdentityError",
    "Issued",
    "IssuerCrl",
    "Pki",
    "RevocationDatabase",
    "RevocationRecord",
    "SignatureInvalid",
    "Signer",
    "SpiffeId",
    "TrustAnchors",
    "build_crl",
    "ca_scope_of",
    "create_agency_ca",
    "create_ca",
    "create_dev_pki",
    "describe",
    "expiring",
    "fingerprint",
    "identity_of",
    "identity_refusal",
    "issue_client",
    "issue_server",
    "load_ca",
    "load_crls",
    "load_identity",
    "load_pem_certificate",
    "pae",
    "parse_reason",
    "read_certificates",
    "trusted_signer",
    "verify_crl",
    "verify_signature",
    "write_ca",
    "write_identity",
]
