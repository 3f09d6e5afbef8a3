"""Revocation: a CA's revocation database, the CRLs built from it (RFC 5280 section 5), and the
set of revoked serials a server checks peers against."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certs._errors import CertificateError, IdentityError
from certs._identity import _PUBLIC, _write
from certs._x509 import Issued

__all__ = [
    "REVOCATION_REASONS",
    "RevocationDatabase",
    "RevocationRecord",
    "RevokedSet",
    "build_crl",
    "load_crls",
    "parse_reason",
]

#: CRLReason values (RFC 5280 5.3.1) an operator may give; removeFromCRL is for delta CRLs only.
REVOCATION_REASONS = tuple(
    flag.value for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
)
_CRL_PEM = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\s*", re.DOTALL)


def parse_reason(reason: str) -> x509.ReasonFlags:
    """``keyCompromise``, ``key-compromise`` or ``key_compromise`` -> the RFC 5280 reason."""
    wanted = reason.replace("-", "").replace("_", "").lower()
    for value in REVOCATION_REASONS:
        if value.lower() == wanted:
            return x509.ReasonFlags(value)
    raise CertificateError(
        f"revocation reason {reason!r} is not one of {', '.join(REVOCATION_REASONS)}"
    )


@dataclass(frozen=True)
class RevocationRecord:
    serial: int
    reason: str  # an RFC 5280 5.3.1 CRLReason value, e.g. "keyCompromise"
    revoked_at: datetime
    subject: str
    identity: str  # the certificate's SAN identity, for people reading the database

    def to_json(self) -> dict[str, str]:
        return {
            "serial": f"{self.serial:x}",
            "reason": self.reason,
            "revoked_at": self.revoked_at.isoformat(),
            "subject": self.subject,
            "identity": self.identity,
        }


class RevocationDatabase:
    """``revoked.json`` in a CA directory: what the CA has revoked and the last CRL number.

    Written atomically (beside, then renamed), so a reader never sees half a file.
    """

    FILE = "revoked.json"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE
        self.records: dict[int, RevocationRecord] = {}
        self.crl_number = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.crl_number = int(data["crl_number"])
            for item in data["revoked"]:
                record = RevocationRecord(
                    int(item["serial"], 16),
                    item["reason"],
                    datetime.fromisoformat(item["revoked_at"]),
                    item.get("subject", ""),
                    item.get("identity", ""),
                )
                self.records[record.serial] = record
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"{self.path}: not a revocation database ({exc})") from None

    def revoke(
        self, certificate: x509.Certificate, reason: x509.ReasonFlags, identity: str
    ) -> bool:
        """Record the revocation; False if it was already revoked (the first record stands)."""
        serial = certificate.serial_number
        if serial in self.records:
            return False
        self.records[serial] = RevocationRecord(
            serial,
            reason.value,
            datetime.now(UTC).replace(microsecond=0),
            certificate.subject.rfc4514_string(),
            identity,
        )
        self.save()
        return True

    def save(self) -> None:
        body = {
            "crl_number": self.crl_number,
            "revoked": [r.to_json() for r in sorted(self.records.values(), key=lambda r: r.serial)],
        }
        _write(self.path, (json.dumps(body, indent=2) + "\n").encode(), _PUBLIC, replace=True)


def build_crl(
    ca: Issued, records: Iterable[RevocationRecord], *, number: int, next_update_days: int = 7
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca``: CRL number (RFC 5280 5.2.3), authority key identifier (5.2.1),
    and a reason code per entry (5.3.1), left out when unspecified as 5.3.1 asks."""
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + timedelta(days=next_update_days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(aki, critical=False)
    )
    for record in records:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(record.serial)
            .revocation_date(record.revoked_at)
        )
        if record.reason != x509.ReasonFlags.unspecified.value:
            entry = entry.add_extension(
                x509.CRLReason(x509.ReasonFlags(record.reason)), critical=False
            )
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.private_key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def load_crls(
    data: bytes, source: str | os.PathLike[str] = "CRL"
) -> list[x509.CertificateRevocationList]:
    """Every PEM CRL in ``data`` (one CA's, or a combined bundle)."""
    blocks = _CRL_PEM.findall(data)
    if not blocks:
        raise CertificateError(f"{source}: no PEM CRL found")
    try:
        return [x509.load_pem_x509_crl(block) for block in blocks]
    except ValueError as exc:
        raise CertificateError(f"{source}: not a valid CRL ({exc})") from None


@dataclass(frozen=True)
class RevokedSet:
    """Revoked serials per issuer, from CRLs whose signatures were verified against trusted CAs.

    Keyed by the issuer's DER name and the serial, which identify a certificate (RFC 5280 4.1.2.2).
    """

    revoked: Mapping[tuple[bytes, int], str]
    next_update: datetime | None  # the earliest nextUpdate among the CRLs

    @classmethod
    def verify(
        cls,
        crls: Sequence[x509.CertificateRevocationList],
        trusted: Sequence[x509.Certificate],
    ) -> RevokedSet:
        """Check each CRL's signature by a trusted CA of the same name (RFC 5280 6.3.3 (f));
        raise :class:`CertificateError` for one that no trusted CA signed."""
        revoked: dict[tuple[bytes, int], str] = {}
        next_updates: list[datetime] = []
        for crl in crls:
            signers = [
                ca
                for ca in trusted
                if ca.subject == crl.issuer and _may_sign_crl(ca) and _signed_by(crl, ca)
            ]
            if not signers:
                raise CertificateError(
                    f"the CRL of {crl.issuer.rfc4514_string()} is not signed by a trusted CA"
                )
            issuer = crl.issuer.public_bytes()
            for entry in crl:
                try:
                    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                    text = reason.value
                except x509.ExtensionNotFound:
                    text = x509.ReasonFlags.unspecified.value
                revoked[(issuer, entry.serial_number)] = text
            if crl.next_update_utc is not None:
                next_updates.append(crl.next_update_utc)
        return cls(MappingProxyType(revoked), min(next_updates, default=None))

    def reason(self, certificate: x509.Certificate) -> str | None:
        """The revocation reason if ``certificate`` is revoked, else None."""
        return self.revoked.get((certificate.issuer.public_bytes(), certificate.serial_number))


def _may_sign_crl(ca: x509.Certificate) -> bool:
    try:
        return ca.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign  # 4.2.1.3
    except x509.ExtensionNotFound:
        return False


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    try:
        return crl.is_signature_valid(key)  # type: ignore[arg-type]
    except TypeError:
        return False
