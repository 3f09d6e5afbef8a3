"""From the peer's TLS certificate to a Principal.

grpcio has already verified the chain against the deployment CA and required a client certificate
(``require_client_auth=True``); here the exchange decides *who* the peer is: the certificate's one
SPIFFE URI SAN, in our trust domain, for a client (not server) certificate.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs import CertsError, SpiffeId, fingerprint, identity_of, load_pem_certificate
from exchange._errors import Unauthenticated
from ledger import Actor


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


def peer_certificate_pem(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    for value in context.auth_context().get("x509_pem_cert", ()):
        return value
    return None


@functools.lru_cache(maxsize=4096)
def principal_from_pem(pem: bytes, trust_domain: str) -> Principal | PeerRejected:
    """Resolve a peer certificate (cached: connections present the same leaf on every call)."""
    try:
        cert = load_pem_certificate(pem)
    except CertsError:
        digest = hashlib.sha256(pem).hexdigest()
        return PeerRejected(Actor("unknown", digest), "peer certificate cannot be parsed")
    fp = fingerprint(cert)
    try:
        identity = identity_of(cert)
    except CertsError as exc:
        return PeerRejected(Actor(f"x509:{cert.subject.rfc4514_string()}", fp), str(exc))
    actor = Actor(str(identity), fp)
    if identity.trust_domain != trust_domain:
        return PeerRejected(actor, f"trust domain {identity.trust_domain!r} is not this exchange's")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return PeerRejected(actor, "certificate has no extended key usage")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return PeerRejected(actor, "certificate is not for client authentication")
    return Principal(identity, fp)


def authenticate(
    context: grpc.aio.ServicerContext[Any, Any], trust_domain: str
) -> Principal | PeerRejected:
    pem = peer_certificate_pem(context)
    if pem is None:  # cannot happen with require_client_auth; refuse rather than assume
        return PeerRejected(Actor("unknown", ""), "no client certificate")
    return principal_from_pem(pem, trust_domain)


def require(result: Principal | PeerRejected) -> Principal:
    if isinstance(result, PeerRejected):
        raise Unauthenticated(result.reason)
    return result
