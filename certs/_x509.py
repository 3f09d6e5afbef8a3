"""Issue the certificates of a Sinergi deployment: one root CA, server and agency leaf certificates.

Every key is ECDSA P-256 and every signature ECDSA with SHA-256, which all gRPC TLS stacks accept.
Leaves carry exactly the extensions a TLS peer needs, with the criticality RFC 5280 asks for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs._errors import CertificateError
from certs._names import CaScope, SpiffeId

__all__ = [
    "Issued",
    "ca_scope_of",
    "create_agency_ca",
    "create_ca",
    "fingerprint",
    "identity_of",
    "issue_client",
    "issue_server",
    "issued_by",
    "load_pem_certificate",
]

_CLOCK_SKEW = timedelta(minutes=5)
"""Backdating of notBefore, so a peer whose clock lags a little accepts a fresh certificate."""


@dataclass(frozen=True)
class Issued:
    """A certificate together with its private key."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    #: Intermediates between ``certificate`` and the root, nearest first (the root excluded).
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.private_key.public_key():
            raise CertificateError("the private key does not match the certificate's public key")

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        """The certificate then its intermediates, as a TLS peer sends them (RFC 8446 4.4.2)."""
        return b"".join(
            cert.public_bytes(serialization.Encoding.PEM)
            for cert in (self.certificate, *self.chain)
        )

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        """The key as PKCS#8 PEM, encrypted when a passphrase is given (CA keys kept offline);
        a service's key is unencrypted and protected by its file mode."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(valid_days: int) -> tuple[datetime, datetime]:
    if valid_days < 1:
        raise ValueError(f"valid_days must be positive, not {valid_days}")
    now = datetime.now(UTC)
    return now - _CLOCK_SKEW, now + timedelta(days=valid_days)


def create_ca(common_name: str, *, valid_days: int = 3650, scope: CaScope | None = None) -> Issued:
    """Create a self-signed root CA for signing certificates and CRLs.

    ``path_length=1`` leaves room for one intermediate, such as a per-agency issuing CA, and no
    more (RFC 5280 4.2.1.9). ``scope`` is recorded as the CA's one URI subjectAltName.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(valid_days)
    builder = x509.CertificateBuilder()
    if scope is not None:
        if scope.agency is not None:
            raise CertificateError("a root CA cannot be an agency CA; use create_agency_ca")
        uri = x509.UniformResourceIdentifier(str(scope))
        builder = builder.add_extension(x509.SubjectAlternativeName([uri]), critical=False)
    certificate = (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        # RFC 5280 4.1.2.2: positive, at most 20 octets; random so serials are unpredictable.
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)  # 4.2.1.9
        .add_extension(_key_usage(cert_sign=True), critical=True)  # 4.2.1.3
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def create_agency_ca(root: Issued, agency: str, *, valid_days: int = 1825) -> Issued:
    """An intermediate CA that issues the identities of ``agency`` only.

    ``pathLen 0``: it issues leaves, never another CA (RFC 5280 4.2.1.9). A critical name
    constraint permits URIs in the trust domain only (4.2.1.10, which binds the host part); the
    agency itself is the CA's URI subjectAltName, which the exchange checks on every peer.
    """
    root_scope = ca_scope_of(root.certificate)
    if root_scope is None or root_scope.kind != "root":
        raise CertificateError(
            f"{root.certificate.subject.rfc4514_string()} is not a deployment root CA "
            "(created by `sinergi pki init`)"
        )
    scope = CaScope(root_scope.trust_domain, agency)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Sinergi {agency} CA"),
        ]
    )
    permitted = [x509.UniformResourceIdentifier(root_scope.trust_domain)]
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (_key_usage(cert_sign=True), True),
        (x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), True),
        (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(scope))]), False),
    ]
    return _issue(root, subject, extensions, _validity(valid_days))


def _issue(
    ca: Issued,
    subject: x509.Name,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    validity: tuple[datetime, datetime],
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise CertificateError(f"{ca.certificate.subject.rfc4514_string()} is not a CA")
    not_before, not_after = validity
    # A certificate that outlives its issuer fails path validation (RFC 5280 6.1.3 (a)(2)).
    not_after = min(not_after, ca.certificate.not_valid_after_utc)
    if not_after <= not_before:
        raise CertificateError("the CA has expired")
    try:
        ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key())
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    certificate = (
        builder.add_extension(aki, critical=False)  # 4.2.1.1
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    self_signed = ca.certificate.issuer == ca.certificate.subject
    chain = () if self_signed else (ca.certificate, *ca.chain)
    return Issued(certificate, key, chain)


def _leaf(
    ca: Issued,
    subject: x509.Name,
    san: Sequence[x509.GeneralName],
    purpose: x509.ObjectIdentifier,
    validity: tuple[datetime, datetime],
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    also: Sequence[x509.ObjectIdentifier] = (),
) -> Issued:
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        # ECDHE key exchange: the leaf key only signs the handshake (RFC 5280 4.2.1.3).
        (_key_usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([purpose, *also]), False),  # 4.2.1.12
        # The subject is never empty, so the SAN is not critical (RFC 5280 4.2.1.6).
        (x509.SubjectAlternativeName(san), False),
    ]
    return _issue(ca, subject, extensions, validity, key)


def issue_server(
    ca: Issued,
    *,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    valid_days: int = 397,
    key: ec.EllipticCurvePrivateKey | None = None,
    client_auth: bool = False,
) -> Issued:
    """Issue a TLS server certificate; clients match the SAN, never the CN (RFC 6125 6.4.4).

    ``client_auth`` adds the clientAuth usage (RFC 5280 4.2.1.12), for the exchange, which is
    also the TLS client of the witnesses: OpenSSL refuses a client certificate without it. It
    names no SPIFFE ID, so the exchange's own trust check refuses it as a client of its own."""
    scope = ca_scope_of(ca.certificate)
    if scope is not None and scope.agency is not None:
        raise CertificateError(f"agency CA {scope} does not issue server certificates")
    san: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    for address in ip_addresses:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise CertificateError(f"{address!r} is not an IP address") from None
    if not san:
        raise CertificateError("a server certificate needs at least one DNS name or IP address")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _leaf(
        ca,
        subject,
        san,
        ExtendedKeyUsageOID.SERVER_AUTH,
        _validity(valid_days),
        key=key,
        also=[ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [],
    )


def issue_client(
    ca: Issued,
    identity: SpiffeId,
    *,
    valid_days: int = 397,
    dns_names: Sequence[str] = (),
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    """Issue a mutual-TLS client certificate naming ``identity``.

    The SAN holds exactly one URI (grpcio reports ``peer_spiffe_id`` only then), and any DNS
    names asked for. A CA with a scope (:class:`CaScope`) issues only identities it may vouch for.
    """
    scope = ca_scope_of(ca.certificate)
    # The development CA issues anything asked of it (tests make odd peers with it); the
    # exchange still refuses what its scope does not cover.
    refusal = scope.refusal(identity) if scope is not None and not scope.development else None
    if refusal is not None:
        raise CertificateError(refusal)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.agency),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.kind),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
        ]
    )
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(identity))]
    san += [x509.DNSName(name) for name in dns_names]
    return _leaf(ca, subject, san, ExtendedKeyUsageOID.CLIENT_AUTH, _validity(valid_days), key=key)


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER certificate, as the ledger records it."""
    return cert.fingerprint(hashes.SHA256()).hex()


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` directly issued ``cert``: its subject is the issuer name and its key made
    the signature (RFC 5280 4.1.2.4 and 6.1.3; no chain, no validity or extension checks)."""
    if ca.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def identity_of(cert: x509.Certificate) -> SpiffeId:
    """The principal a certificate names: its one URI subjectAltName (RFC 5280 4.2.1.6)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("the certificate has no subjectAltName extension") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateError(f"the certificate has {len(uris)} URI subjectAltNames, not one")
    return SpiffeId.parse(uris[0])


def ca_scope_of(cert: x509.Certificate) -> CaScope | None:
    """The scope a CA certificate records in its one URI subjectAltName, or None if it has none.

    A certificate that is no CA (RFC 5280 4.2.1.9) has no scope, whatever its names say.
    """
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return None
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        return None
    try:
        return CaScope.parse(uris[0])
    except CertificateError:
        return None


def load_pem_certificate(data: bytes) -> x509.Certificate:
    """Parse the first PEM certificate in ``data``."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None
