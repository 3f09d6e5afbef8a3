"""From the peer's TLS certificate to a Principal.

grpcio has already verified the chain against the trust bundle and required a client certificate;
here the exchange decides *who* the peer is and whether its CA may say so (federated trust):

1. the certificate's one SPIFFE URI SAN, in our trust domain, for client authentication;
2. its issuing CA, found in the trust bundle by authority key identifier (RFC 5280 4.2.1.1) and
   checked by signature, must have a scope (:class:`certs.CaScope`) that covers the SAN's agency:
   X.509 URI name constraints bind only the trust domain, so a police CA could otherwise issue an
   immigration identity that TLS accepts;
3. on every call, not cached: the certificate is not on a CRL from :class:`Revocations`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs import (
    CertsError,
    RevokedSet,
    SpiffeId,
    ca_scope_of,
    fingerprint,
    identity_of,
    load_crls,
    load_pem_certificate,
)
from exchange._errors import ConfigError, Unauthenticated
from ledger import Actor

_log = structlog.get_logger("sinergi.identity")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its identity and the certificate it used."""

    id: SpiffeId
    fingerprint: str

    @property
    def agency(self) -> str:
        return self.id.agency

    @property
    def actor(self) -> Actor:
        return Actor(str(self.id), self.fingerprint)


@dataclass(frozen=True)
class PeerRejected:
    """Who a refused peer claimed to be, for the DENIED entry."""

    actor: Actor
    reason: str


@dataclass(frozen=True, eq=False)  # hashed by identity: a reloaded bundle is a new cache key
class TrustAnchors:
    """The CA certificates of the server's trust bundle (``ca.crt``), by subject key identifier."""

    certificates: tuple[x509.Certificate, ...]
    by_key_id: Mapping[bytes, tuple[x509.Certificate, ...]]

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustAnchors:
        try:
            certificates = tuple(x509.load_pem_x509_certificates(pem))
        except ValueError:
            raise ConfigError("the trust bundle is not a PEM certificate bundle") from None
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
        for ca in candidates:
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return ca
        return None


@dataclass(frozen=True)
class _Resolved:
    result: Principal | PeerRejected
    revocation_key: tuple[bytes, int] | None  # issuer DER name and serial


@functools.lru_cache(maxsize=4096)
def _resolve(pem: bytes, trust_domain: str, anchors: TrustAnchors) -> _Resolved:
    """Identity and issuer checks of a peer certificate (cached: a connection presents the same
    leaf on every call). Revocation is checked by the caller on every call, never cached."""
    try:
        cert = load_pem_certificate(pem)
    except CertsError:
        digest = hashlib.sha256(pem).hexdigest()
        return _Resolved(
            PeerRejected(Actor("unknown", digest), "peer certificate cannot be parsed"), None
        )
    fp = fingerprint(cert)
    try:
        identity = identity_of(cert)
    except CertsError as exc:
        actor = Actor(f"x509:{cert.subject.rfc4514_string()}", fp)
        return _Resolved(PeerRejected(actor, str(exc)), None)
    actor = Actor(str(identity), fp)
    reason = _client_refusal(cert, identity, trust_domain) or _issuer_refusal(
        cert, identity, anchors
    )
    if reason is not None:
        return _Resolved(PeerRejected(actor, reason), None)
    return _Resolved(Principal(identity, fp), (cert.issuer.public_bytes(), cert.serial_number))


def _client_refusal(cert: x509.Certificate, identity: SpiffeId, trust_domain: str) -> str | None:
    if identity.trust_domain != trust_domain:
        return f"trust domain {identity.trust_domain!r} is not this exchange's"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "certificate has no extended key usage"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:  # RFC 5280 4.2.1.12
        return "certificate is not for client authentication"
    return None


def _issuer_refusal(
    cert: x509.Certificate, identity: SpiffeId, anchors: TrustAnchors
) -> str | None:
    """Federated trust: the issuing CA's scope must cover the identity's agency."""
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


class Revocations:
    """A CRL file (one CA's CRL or several in one PEM file), re-read when it changes.

    One ``stat`` per check: a new file (inode), size or mtime reloads it, as does a new trust
    bundle. Each CRL must be signed by a CA in the bundle. A file that fails to load at start is
    a configuration error; later, the last verified CRLs stay in force and the error is logged.
    """

    def __init__(self, path: Path, anchors: TrustAnchors) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._anchors: TrustAnchors | None = None
        try:
            self._revoked = self._load(anchors)
        except (OSError, CertsError) as exc:
            raise ConfigError(f"CRL {path}: {_reason(exc)}") from None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self, anchors: TrustAnchors) -> RevokedSet:
        stamp = self._stat()
        data = self.path.read_bytes()
        revoked = RevokedSet.verify(load_crls(data, self.path), anchors.certificates)
        self._stamp, self._anchors = stamp, anchors
        _log.info("revocation list loaded", crl=str(self.path), revoked=len(revoked.revoked))
        return revoked

    def current(self, anchors: TrustAnchors) -> RevokedSet:
        if self._stat() != self._stamp or anchors is not self._anchors:
            try:
                self._revoked = self._load(anchors)
            except (OSError, CertsError) as exc:
                # Log once per change of the file, keep the last verified list in force.
                self._stamp, self._anchors = self._stat(), anchors
                _log.error("revocation list not reloaded; the previous one stays in force",
                           crl=str(self.path), error=_reason(exc))  # fmt: skip
        return self._revoked


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


class Trust:
    """What a server checks peers against: its trust domain, trust bundle and revocations.

    The TLS layer (:mod:`exchange._tls`) replaces ``anchors`` when ``ca.crt`` changes.
    """

    def __init__(self, trust_domain: str, anchors: TrustAnchors, crl: Path | None = None) -> None:
        self.trust_domain = trust_domain
        self.anchors = anchors
        self.revocations = Revocations(crl, anchors) if crl is not None else None

    def check(self, pem: bytes) -> Principal | PeerRejected:
        anchors = self.anchors
        resolved = _resolve(pem, self.trust_domain, anchors)
        result = resolved.result
        if isinstance(result, PeerRejected) or self.revocations is None:
            return result
        assert resolved.revocation_key is not None
        reason = self.revocations.current(anchors).revoked.get(resolved.revocation_key)
        if reason is not None:
            return PeerRejected(result.actor, f"certificate revoked ({reason})")
        return result


def peer_certificate_pem(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    for value in context.auth_context().get("x509_pem_cert", ()):
        return value
    return None


def authenticate(
    context: grpc.aio.ServicerContext[Any, Any], trust: Trust
) -> Principal | PeerRejected:
    pem = peer_certificate_pem(context)
    if pem is None:  # cannot happen with required client certificates; refuse, never assume
        return PeerRejected(Actor("unknown", ""), "no client certificate")
    return trust.check(pem)


def require(result: Principal | PeerRejected) -> Principal:
    if isinstance(result, PeerRejected):
        raise Unauthenticated(result.reason)
    return result
