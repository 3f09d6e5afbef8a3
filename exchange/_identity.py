"""From the peer's TLS certificate to a Principal.

grpcio has already verified the chain against the trust bundle and required a client certificate;
here the exchange decides *who* the peer is and whether its CA may say so (federated trust,
:func:`certs.identity_refusal`), and on every call, not cached, that the certificate is not on a
CRL from :class:`Revocations`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs import (
    CertsError,
    RevokedSet,
    SpiffeId,
    TrustAnchors,
    fingerprint,
    identity_of,
    identity_refusal,
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
    certificate: x509.Certificate = field(compare=False, repr=False)
    certificate_der: bytes = field(compare=False, repr=False)  # what signed messages carry

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
    reason = identity_refusal(cert, identity, trust_domain, anchors)
    if reason is not None:
        return _Resolved(PeerRejected(actor, reason), None)
    principal = Principal(identity, fp, cert, cert.public_bytes(Encoding.DER))
    return _Resolved(principal, (cert.issuer.public_bytes(), cert.serial_number))


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
                _log.error(
                    "revocation list not reloaded; the previous one stays in force",
                    crl=str(self.path),
                    error=_reason(exc),
                )
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
