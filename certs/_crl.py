"""Revocation: a CA's revocation database, the CRLs built from it (RFC 5280 section 5), the CRLs
a server verifies and holds in force per issuing CA, and the highest CRL number it accepted per
issuer, kept in a file so that an older CRL is refused after a restart too (5.2.3)."""

from __future__ import annotations

import fcntl
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

from certs._errors import CertificateError, CertsError, IdentityError
from certs._identity import _PUBLIC, _write
from certs._x509 import Issued

__all__ = [
    "CRL_REFUSALS",
    "REVOCATION_REASONS",
    "CrlNumbers",
    "CrlRefused",
    "CrlSet",
    "IssuerCrl",
    "RevocationDatabase",
    "RevocationRecord",
    "build_crl",
    "load_crls",
    "parse_reason",
    "verify_crl",
]

#: CRLReason values (RFC 5280 5.3.1) an operator may give; removeFromCRL is for delta CRLs only.
REVOCATION_REASONS = tuple(
    flag.value for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
)
#: Why a CRL is not in force, as logs and the metric's label name it (a fixed set): the file or a
#: CRL in it does not parse; no trusted CA has its issuer's name; the named CA did not sign it;
#: it lacks the CRL number or nextUpdate RFC 5280 requires (5.2.3, 5.1.2.5); its number is lower
#: than one accepted before (5.2.3); it is past nextUpdate and the grace; the file has no CRL of
#: a CA that issues identities.
CRL_REFUSALS = (
    "unparseable",
    "unknown_issuer",
    "bad_signature",
    "incomplete",
    "rollback",
    "expired",
    "missing",
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
    ca: Issued,
    records: Iterable[RevocationRecord],
    *,
    number: int,
    next_update_days: int = 7,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca``: CRL number (RFC 5280 5.2.3), authority key identifier (5.2.1),
    and a reason code per entry (5.3.1), left out when unspecified as 5.3.1 asks. thisUpdate is
    now and nextUpdate (5.1.2.5) ``next_update_days`` later, unless given."""
    now = this_update or datetime.now(UTC).replace(microsecond=0)
    try:
        ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(next_update or now + timedelta(days=next_update_days))
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
    """Every PEM CRL in ``data`` (one CA's, or a combined bundle); :class:`CrlRefused`
    (``unparseable``) if there is none or one does not parse."""
    blocks = _CRL_PEM.findall(data)
    if not blocks:
        raise CrlRefused("unparseable", None, f"{source}: no PEM CRL found")
    try:
        return [x509.load_pem_x509_crl(block) for block in blocks]
    except ValueError as exc:
        raise CrlRefused("unparseable", None, f"{source}: not a valid CRL ({exc})") from None


class CrlRefused(CertificateError):
    """A CRL not taken into force: ``reason`` is one of :data:`CRL_REFUSALS`; ``issuer`` the name
    it claims, None when it could not be read."""

    def __init__(self, reason: str, issuer: x509.Name | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.issuer = issuer

    @property
    def issuer_name(self) -> str:
        return self.issuer.rfc4514_string() if self.issuer is not None else "unknown"


@dataclass(frozen=True)
class IssuerCrl:
    """One CA's CRL, its signature verified: what is revoked, and until when it is current."""

    issuer: x509.Name
    number: int  # RFC 5280 5.2.3
    this_update: datetime
    next_update: datetime  # RFC 5280 5.1.2.5
    revoked: Mapping[int, str]  # serial -> CRLReason (5.3.1)

    @property
    def key(self) -> bytes:
        """The issuer's DER name: what a certificate's issuer field matches (4.1.2.4)."""
        return self.issuer.public_bytes()

    @property
    def name(self) -> str:
        return self.issuer.rfc4514_string()

    def out_of_date(self, now: datetime, grace: timedelta) -> bool:
        """Whether ``now`` is past nextUpdate (RFC 5280 5.1.2.5) by more than ``grace``."""
        return now > self.next_update + grace


def verify_crl(
    crl: x509.CertificateRevocationList, trusted: Sequence[x509.Certificate]
) -> IssuerCrl:
    """``crl`` if a trusted CA of its issuer's name, allowed to sign CRLs, signed it (RFC 5280
    6.3.3 (f)) and it has the CRL number and nextUpdate a conforming CRL has (5.2.3, 5.1.2.5);
    else :class:`CrlRefused` saying why."""
    issuer = crl.issuer
    name = issuer.rfc4514_string()
    named = [ca for ca in trusted if ca.subject == issuer and _may_sign_crl(ca)]
    if not named:
        raise CrlRefused(
            "unknown_issuer",
            issuer,
            f"the CRL of {name} is not signed by a trusted CA (no CA of that name in the bundle)",
        )
    if not any(_signed_by(crl, ca) for ca in named):
        raise CrlRefused(
            "bad_signature",
            issuer,
            f"the CRL of {name} is not signed by a trusted CA (its signature does not verify)",
        )
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise CrlRefused("incomplete", issuer, f"the CRL of {name} has no CRL number") from None
    except ValueError as exc:
        raise CrlRefused("unparseable", issuer, f"the CRL of {name}: {exc}") from None
    if crl.next_update_utc is None:
        raise CrlRefused("incomplete", issuer, f"the CRL of {name} has no nextUpdate")
    revoked: dict[int, str] = {}
    try:
        for entry in crl:
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                text = reason.value
            except x509.ExtensionNotFound:
                text = x509.ReasonFlags.unspecified.value
            revoked[entry.serial_number] = text
    except ValueError as exc:
        raise CrlRefused("unparseable", issuer, f"the CRL of {name}: {exc}") from None
    return IssuerCrl(
        issuer, number, crl.last_update_utc, crl.next_update_utc, MappingProxyType(revoked)
    )


@dataclass(frozen=True)
class CrlSet:
    """The CRL in force for each issuer, by DER name, and the CRLs refused by the last load."""

    crls: Mapping[bytes, IssuerCrl]
    refused: tuple[CrlRefused, ...] = ()

    @classmethod
    def load(
        cls,
        crls: Sequence[x509.CertificateRevocationList],
        trusted: Sequence[x509.Certificate],
        *,
        highest: Mapping[str, int] | None = None,
        previous: CrlSet | None = None,
    ) -> CrlSet:
        """Take into force each CRL that :func:`verify_crl` accepts and whose number is not
        lower than ``highest`` (by issuer name, RFC 4514) or the previous CRL's (RFC 5280
        5.2.3); of one issuer's CRLs, the highest number. An issuer whose CRL is refused keeps
        its previous CRL; an issuer without a CRL in ``crls`` has none. If none is accepted,
        the previous set stays whole (a file of foreign or old CRLs is no new state)."""
        highest = highest or {}
        before = previous.crls if previous is not None else {}
        taken: dict[bytes, IssuerCrl] = {}
        refused: list[CrlRefused] = []
        for crl in crls:
            try:
                issued = verify_crl(crl, trusted)
            except CrlRefused as exc:
                refused.append(exc)
                continue
            floor = max(
                highest.get(issued.name, 0),
                before[issued.key].number if issued.key in before else 0,
                taken[issued.key].number if issued.key in taken else 0,
            )
            if issued.number < floor:
                refused.append(
                    CrlRefused(
                        "rollback",
                        issued.issuer,
                        f"the CRL of {issued.name} has number {issued.number}, lower than "
                        f"number {floor} accepted before: an older CRL, refused",
                    )
                )
                continue
            taken[issued.key] = issued
        if not taken and previous is not None:
            return cls(previous.crls, tuple(refused))
        for refusal in refused:
            key = refusal.issuer.public_bytes() if refusal.issuer is not None else b""
            if key in before and key not in taken:
                taken[key] = before[key]
        return cls(MappingProxyType(taken), tuple(refused))

    def of(self, issuer: x509.Name) -> IssuerCrl | None:
        """The CRL in force for ``issuer``, or None."""
        return self.crls.get(issuer.public_bytes())


class CrlNumbers:
    """The highest CRL number (RFC 5280 5.2.3) accepted per issuer, kept in a JSON file apart
    from the CRL file, so that an older CRL put in its place is refused after a restart too.

    ``{"version": 1, "issuers": {"<RFC 4514 name>": {"number": N, "this_update": ISO}}}``,
    written atomically (temporary file, fsync, rename) under a lock; processes sharing the file
    only ever raise a number.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._records = self._read()

    @property
    def highest(self) -> dict[str, int]:
        return {name: number for name, (number, _) in self._records.items()}

    def _read(self) -> dict[str, tuple[int, str]]:
        """Issuer name -> (highest number, that CRL's thisUpdate)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise IdentityError(f"{self.path}: unreadable ({exc}); {_RESTORE}") from None
        try:
            if data["version"] != self.VERSION:
                raise ValueError(f"version {data['version']!r}")
            return {
                str(name): (int(record["number"]), str(record.get("this_update", "")))
                for name, record in data["issuers"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IdentityError(
                f"{self.path}: not a CRL number file ({exc!r}); {_RESTORE}"
            ) from None

    def remember(self, crls: Iterable[IssuerCrl]) -> list[IssuerCrl]:
        """Raise each issuer's number to its CRL's and write the file if one rose; returns the
        CRLs whose number rose. :class:`CertsError` if the file cannot be written."""
        rose = [crl for crl in crls if crl.number > self._records.get(crl.name, (0, ""))[0]]
        if not rose:
            return []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_suffix(".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                records = self._read()
                for crl in rose:
                    if crl.number > records.get(crl.name, (0, ""))[0]:
                        records[crl.name] = (crl.number, crl.this_update.isoformat())
                body = {
                    "version": self.VERSION,
                    "issuers": {
                        name: {"number": number, "this_update": this_update}
                        for name, (number, this_update) in sorted(records.items())
                    },
                }
                data = (json.dumps(body, indent=1) + "\n").encode()
                _write(self.path, data, _PUBLIC, replace=True)
                _fsync_directory(self.path.parent)
        except OSError as exc:
            raise CertsError(f"{self.path}: cannot write ({exc.strerror})") from None
        self._records = records
        return rose


_RESTORE = (
    "restore it from a backup, or publish new CRLs (`sinergi pki crl`) and then remove it: the "
    "next start takes the CRL file's numbers as they are (docs/pki.md, Revocation)"
)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
