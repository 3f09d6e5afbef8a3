"""From the peer's TLS certificate to a Principal.

grpcio has already verified the chain against the trust bundle and required a client certificate;
here the exchange decides *who* the peer is and whether its CA may say so (federated trust,
:func:`certs.identity_refusal`), and on every call, not cached, that its CA has a current CRL
and the certificate is not on it (:class:`Revocations`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs import (
    CertsError,
    CrlNumbers,
    CrlSet,
    IssuerCrl,
    SpiffeId,
    TrustAnchors,
    ca_scope_of,
    fingerprint,
    identity_of,
    identity_refusal,
    load_crls,
    load_pem_certificate,
)
from exchange._errors import ConfigError, Unauthenticated
from exchange._metrics import CrlStatus
from ledger import Actor

_log = structlog.get_logger("sinergi.identity")
#: How long past its nextUpdate a CA's CRL still counts as current (``crl_grace_seconds``).
DEFAULT_CRL_GRACE = timedelta(days=1)


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
    issuer: x509.Certificate | None = None  # the trusted CA that issued an accepted peer


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
    return _Resolved(principal, anchors.issuer_of(cert))


class Revocations:
    """The CRL file (every CA's CRL in one PEM file, as `sinergi pki crl` writes it), re-read
    when it or the trust bundle changes (one ``stat`` per check), and the CRL in force per CA.

    - A CRL is taken if a CA of the bundle signed it and it has a CRL number and nextUpdate. A
      number lower than the highest accepted before, here or in the ``state`` file that survives
      restarts (:class:`certs.CrlNumbers`), is refused and the CA's previous CRL stays (RFC 5280
      5.2.3).
    - A CA that issues identities but has no CRL in the file has none: its identities are
      refused (fail closed), as they are while its CRL is past nextUpdate by more than
      ``grace`` (5.1.2.5).
    - Each refusal is logged at error naming the CA, and counted (``on_refused``, by reason).

    A file that cannot be read or parsed at start is a configuration error; later, the CRLs in
    force stay.
    """

    def __init__(
        self,
        path: Path,
        anchors: TrustAnchors,
        *,
        state: Path,
        grace: timedelta = DEFAULT_CRL_GRACE,
        on_refused: Callable[[str], None] | None = None,
        remember: bool = True,
    ) -> None:
        """``remember=False`` reads ``state`` but never writes it (`serve --check-config`: a
        check run as another user must not leave a file the exchange cannot write)."""
        self.path = path
        self.grace = grace
        self._on_refused = on_refused
        self._remember = remember
        self._lock = threading.Lock()
        self._reported: set[tuple[bytes, int, str]] = set()  # (CA, CRL number, what) said once
        self._stamp: tuple[int, int, int] | None = None
        self._anchors = anchors
        try:
            self._numbers = CrlNumbers(state)
            crls = self._read()
        except (OSError, CertsError) as exc:
            raise ConfigError(f"CRL {path}: {_reason(exc)}") from None
        self._crls = self._take(crls, anchors, None)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> list[x509.CertificateRevocationList]:
        self._stamp = self._stat()
        return load_crls(self.path.read_bytes(), self.path)

    def _take(
        self,
        crls: list[x509.CertificateRevocationList],
        anchors: TrustAnchors,
        previous: CrlSet | None,
    ) -> CrlSet:
        taken = CrlSet.load(
            crls, anchors.certificates, highest=self._numbers.highest, previous=previous
        )
        self._anchors = anchors
        labels = {ca.subject: _label(ca) for ca in anchors.certificates}
        for refusal in taken.refused:
            named = labels.get(refusal.issuer) if refusal.issuer is not None else None
            self._refuse(refusal.reason, refusal.issuer_name, named, str(refusal))
        try:
            if self._remember:
                self._numbers.remember(taken.crls.values())
        except CertsError as exc:
            _log.error(
                "CRL numbers not saved: after a restart an older CRL would not be told apart",
                crl=str(self.path),
                error=str(exc),
            )
        _log.info(
            "revocation list loaded",
            crl=str(self.path),
            numbers={crl.name: crl.number for crl in taken.crls.values()},
            revoked=sum(len(crl.revoked) for crl in taken.crls.values()),
        )
        now = datetime.now(UTC)
        for ca, label in _issuing_cas(anchors):
            crl = taken.of(ca.subject)
            if crl is None:
                self._refuse(
                    "missing",
                    ca.subject.rfc4514_string(),
                    label,
                    f"{self.path} holds no CRL of issuing CA {label} that can be taken: its "
                    "identities are refused until one is loaded",
                )
            elif crl.out_of_date(now, self.grace):
                self._expired(crl, label)
        return taken

    def _refuse(self, reason: str, issuer: str, ca: str | None, message: str) -> None:
        _log.error(
            "CRL refused", crl=str(self.path), reason=reason, issuer=issuer, ca=ca, error=message
        )
        if self._on_refused is not None:
            self._on_refused(reason)

    def _expired(self, crl: IssuerCrl, label: str) -> None:
        """Log and count, once per CRL, that it is past nextUpdate and the grace."""
        if (crl.key, crl.number, "expired") not in self._reported:
            self._reported.add((crl.key, crl.number, "expired"))
            self._refuse("expired", crl.name, label, _out_of_date(label, crl, self.grace))

    def current(self, anchors: TrustAnchors) -> CrlSet:
        """The CRLs in force, after re-reading the file if it or ``anchors`` changed."""
        with self._lock:
            if self._stat() != self._stamp or anchors is not self._anchors:
                try:
                    crls = self._read()
                except (OSError, CertsError) as exc:
                    # Reported once per change of the file; the CRLs in force stay.
                    self._stamp, self._anchors = self._stat(), anchors
                    self._refuse("unparseable", "unknown", None, _reason(exc))
                else:
                    self._crls = self._take(crls, anchors, self._crls)
            return self._crls

    def refusal(self, anchors: TrustAnchors, ca: x509.Certificate, serial: int) -> str | None:
        """Why the certificate ``serial`` issued by ``ca`` is refused, or None."""
        crl = self.current(anchors).of(ca.subject)
        if crl is None:
            return f"issuing CA {_label(ca)} has no CRL in force: its identities are refused"
        reason = crl.revoked.get(serial)
        if reason is not None:
            return f"certificate revoked ({reason})"
        now = datetime.now(UTC)
        if now <= crl.next_update:
            return None
        with self._lock:
            if crl.out_of_date(now, self.grace):
                self._expired(crl, _label(ca))
                return _out_of_date(_label(ca), crl, self.grace)
            self._late(crl, _label(ca))
        return None

    def _late(self, crl: IssuerCrl, label: str) -> None:
        """Warn, once per CRL, that it is past nextUpdate but within the grace."""
        if (crl.key, crl.number, "late") not in self._reported:
            self._reported.add((crl.key, crl.number, "late"))
            _log.warning(
                "CRL past its nextUpdate, within the grace: publish a new one",
                crl=str(self.path),
                ca=label,
                next_update=crl.next_update.isoformat(),
                refused_after=(crl.next_update + self.grace).isoformat(),
            )

    def status(self, anchors: TrustAnchors) -> list[CrlStatus]:
        """Each identity-issuing CA of ``anchors``: its label, whether its CRL is current, and
        that CRL's nextUpdate."""
        crls = self.current(anchors)
        now = datetime.now(UTC)
        found: list[CrlStatus] = []
        for ca, label in _issuing_cas(anchors):
            crl = crls.of(ca.subject)
            if crl is None:
                found.append((label, False, None))
            else:
                found.append((label, not crl.out_of_date(now, self.grace), crl.next_update))
        return found


def _label(ca: x509.Certificate) -> str:
    """How logs, refusals and metrics name a CA: its scope (spiffe://<td>/agency/<agency>)."""
    scope = ca_scope_of(ca)
    return str(scope) if scope is not None else ca.subject.rfc4514_string()


def _issuing_cas(anchors: TrustAnchors) -> list[tuple[x509.Certificate, str]]:
    """The CAs of ``anchors`` that issue identities (agency and development CAs), one per name,
    each with a label of its own."""
    found: dict[bytes, tuple[x509.Certificate, str]] = {}
    labels: set[str] = set()
    for ca in anchors.certificates:
        scope = ca_scope_of(ca)
        if scope is None or scope.kind == "root" or ca.subject.public_bytes() in found:
            continue
        label = str(scope)
        if label in labels:  # two CA names with one scope (a new CA beside the old)
            label = f"{label} ({ca.subject.rfc4514_string()})"
        labels.add(label)
        found[ca.subject.public_bytes()] = (ca, label)
    return list(found.values())


def _out_of_date(label: str, crl: IssuerCrl, grace: timedelta) -> str:
    return (
        f"the CRL of issuing CA {label} is out of date (nextUpdate "
        f"{crl.next_update.isoformat()}, grace {_duration(grace)}): its identities are refused "
        "until a current CRL is loaded"
    )


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"1 {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds} s"


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


class Trust:
    """What a server checks peers against: its trust domain, trust bundle and revocations.

    The TLS layer (:mod:`exchange._tls`) replaces ``anchors`` when ``ca.crt`` changes.
    """

    def __init__(
        self, trust_domain: str, anchors: TrustAnchors, revocations: Revocations | None = None
    ) -> None:
        self.trust_domain = trust_domain
        self.anchors = anchors
        self.revocations = revocations

    def check(self, pem: bytes) -> Principal | PeerRejected:
        anchors = self.anchors
        resolved = _resolve(pem, self.trust_domain, anchors)
        result = resolved.result
        if isinstance(result, PeerRejected) or self.revocations is None:
            return result
        assert resolved.issuer is not None  # an accepted peer has a trusted issuer
        refusal = self.revocations.refusal(
            anchors, resolved.issuer, result.certificate.serial_number
        )
        if refusal is not None:
            return PeerRejected(result.actor, refusal)
        return result

    def crl_status(self) -> list[CrlStatus]:
        """For the metrics: each identity-issuing CA and its CRL (none without ``--crl``)."""
        if self.revocations is None:
            return []
        return self.revocations.status(self.anchors)


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
