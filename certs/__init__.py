"""The Sinergi PKI: a CA, server and agency certificates, and identity directories on disk.

Principals are named by SPIFFE IDs in a certificate's single URI subjectAltName,
``spiffe://<trust-domain>/agency/<agency>/<kind>/<name>``.
"""

from certs._dev import (
    DEV_AGENCIES,
    DEV_AUDITOR_AGENCY,
    DEV_TRUST_DOMAIN,
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
from certs._names import KINDS, SpiffeId
from certs._x509 import (
    Issued,
    create_ca,
    fingerprint,
    identity_of,
    issue_client,
    issue_server,
    load_pem_certificate,
)

__all__ = [
    "DEV_AGENCIES",
    "DEV_AUDITOR_AGENCY",
    "DEV_TRUST_DOMAIN",
    "IDENTITY_FILES",
    "KINDS",
    "CertificateError",
    "CertsError",
    "DevPki",
    "Identity",
    "IdentityError",
    "Issued",
    "SpiffeId",
    "create_ca",
    "create_dev_pki",
    "fingerprint",
    "identity_of",
    "issue_client",
    "issue_server",
    "load_ca",
    "load_identity",
    "load_pem_certificate",
    "write_ca",
    "write_identity",
]
