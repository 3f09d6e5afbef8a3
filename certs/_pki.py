"""A deployment's PKI directory: the root, one issuing CA per agency, what they issued and revoked.

```
DIR/root/              ca.crt, ca.key, revoked.json, crl.pem, issued/<serial>.crt
DIR/agencies/<agency>/ the same, for that agency's CA
DIR/ca.crt             the trust bundle: the root and every agency CA
DIR/crl.pem            every CA's CRL in one file (what `serve --crl` reads)
```
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs._crl import RevocationDatabase, build_crl, crl_pem, parse_reason
from certs._errors import CertificateError, CertsError, IdentityError
from certs._identity import (
    _PUBLIC,
    _bundle_pem,
    _private_dir,
    _write,
    load_ca,
    write_ca,
    write_identity,
)
from certs._names import CaScope, SpiffeId
from certs._x509 import (
    Issued,
    _leaf,
    _validity,
    ca_scope_of,
    create_agency_ca,
    create_ca,
    fingerprint,
    issue_client,
    issue_server,
    issued_by,
)

__all__ = ["EXPIRY_WARNING", "CertificateInfo", "Pki", "describe", "expiring", "read_certificates"]

EXPIRY_WARNING = timedelta(days=30)
_ROOT = "root"
_AGENCIES = "agencies"
_ISSUED = "issued"
_BUNDLE = "ca.crt"
_CRL = "crl.pem"


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate as `pki list` and `pki inspect` show it."""

    subject: str
    identity: str  # the SAN URI, else the DNS names and IP addresses
    serial: str
    issuer: str
    not_after: datetime
    fingerprint: str
    is_ca: bool
    revoked: str | None  # the reason, if revoked
    path: str = ""

    @property
    def expires_soon(self) -> bool:
        return self.not_after - datetime.now(UTC) < EXPIRY_WARNING

    @property
    def expired(self) -> bool:
        return self.not_after <= datetime.now(UTC)

    def to_json(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "identity": self.identity,
            "serial": self.serial,
            "issuer": self.issuer,
            "not_after": self.not_after.isoformat(),
            "fingerprint": self.fingerprint,
            "ca": self.is_ca,
            "revoked": self.revoked,
            "expired": self.expired,
            "expires_soon": self.expires_soon,
            "path": self.path,
        }


def describe(
    cert: x509.Certificate, revoked: str | None = None, path: str | os.PathLike[str] = ""
) -> CertificateInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names = names or [
            *san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        ]
    except x509.ExtensionNotFound:
        names = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        identity=",".join(names),
        serial=f"{cert.serial_number:x}",
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert),
        is_ca=is_ca,
        revoked=revoked,
        path=str(path),
    )


def expiring(
    certificates: Iterable[x509.Certificate], within: timedelta = EXPIRY_WARNING
) -> list[x509.Certificate]:
    """The certificates whose notAfter (RFC 5280 4.1.2.5) is less than ``within`` away."""
    limit = datetime.now(UTC) + within
    return [cert for cert in certificates if cert.not_valid_after_utc < limit]


def read_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """The certificates in a PEM file, or in ``tls.crt`` of an identity or CA directory."""
    target = Path(path)
    if target.is_dir():
        target = next((target / n for n in ("tls.crt", "ca.crt") if (target / n).exists()), target)
    try:
        return x509.load_pem_x509_certificates(target.read_bytes())
    except OSError as exc:
        raise IdentityError(f"{target}: unreadable ({exc.strerror})") from None
    except ValueError:
        raise IdentityError(f"{target}: not a PEM certificate file") from None


class Pki:
    """A deployment PKI directory (see the module docstring). Open with :meth:`open`."""

    def __init__(self, directory: Path, root: x509.Certificate, scope: CaScope) -> None:
        self.directory = directory
        self.root = root
        self.scope = scope

    @property
    def trust_domain(self) -> str:
        return self.scope.trust_domain

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        trust_domain: str,
        *,
        common_name: str | None = None,
        valid_days: int = 3650,
        passphrase: bytes | None = None,
    ) -> Pki:
        """Create the deployment root CA; refuse if ``directory`` already has one."""
        path = Path(directory)
        if (path / _ROOT / "ca.crt").exists() or (path / _ROOT / "ca.key").exists():
            raise CertsError(
                f"{path / _ROOT} already holds a root CA; refusing to replace it "
                "(every certificate it issued would stop working)"
            )
        scope = CaScope(trust_domain)
        root = create_ca(
            common_name or f"Sinergi Root CA ({trust_domain})", valid_days=valid_days, scope=scope
        )
        _private_dir(path)
        write_ca(path / _ROOT, root, passphrase=passphrase)
        pki = cls(path, root.certificate, scope)
        pki.write_bundle()
        return pki

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Pki:
        path = Path(directory)
        cert_path = path / _ROOT / "ca.crt"
        if not cert_path.exists():
            raise IdentityError(
                f"{cert_path}: no such file; create the PKI with `sinergi pki init`"
            )
        root = read_certificates(cert_path)[0]
        scope = ca_scope_of(root)
        if scope is None or scope.kind != "root":
            raise IdentityError(f"{cert_path}: not a deployment root CA (no spiffe://<td> scope)")
        return cls(path, root, scope)

    # --- CAs ---------------------------------------------------------------------------------

    def agency_dir(self, agency: str) -> Path:
        return self.directory / _AGENCIES / agency

    def agencies(self) -> list[str]:
        base = self.directory / _AGENCIES
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "ca.crt").exists())

    def ca_dirs(self) -> list[Path]:
        return [self.directory / _ROOT, *(self.agency_dir(a) for a in self.agencies())]

    def _load(self, ca_dir: Path, passphrase: bytes | None) -> Issued:
        return load_ca(ca_dir, passphrase=passphrase)

    def create_agency_ca(
        self,
        agency: str,
        *,
        valid_days: int = 1825,
        root_passphrase: bytes | None = None,
        passphrase: bytes | None = None,
    ) -> Issued:
        """Issue the agency's CA from the root and add it to the trust bundle."""
        CaScope(self.trust_domain, agency)  # validates the name before anything is written
        target = self.agency_dir(agency)
        if (target / "ca.crt").exists() or (target / "ca.key").exists():
            raise CertsError(f"{target} already holds the CA of {agency!r}; refusing to replace it")
        root = self._load(self.directory / _ROOT, root_passphrase)
        _private_dir(self.directory / _AGENCIES)
        ca = create_agency_ca(root, agency, valid_days=valid_days)
        write_ca(target, ca, passphrase=passphrase)
        self._record(self.directory / _ROOT, ca.certificate)
        self.write_bundle()
        return ca

    def bundle(self) -> list[x509.Certificate]:
        """The trust bundle: the root, then each agency CA (the exchange looks issuers up here)."""
        return [self.root, *(read_certificates(self.agency_dir(a) / "ca.crt")[0]
                             for a in self.agencies())]  # fmt: skip

    def write_bundle(self) -> Path:
        path = self.directory / _BUNDLE
        _write(path, _bundle_pem(self.bundle()), _PUBLIC, replace=True)
        return path

    # --- issuing -------------------------------------------------------------------------------

    def issue_identity(
        self,
        out: str | os.PathLike[str],
        identity: SpiffeId,
        *,
        dns_names: Sequence[str] = (),
        valid_days: int = 397,
        passphrase: bytes | None = None,
        overwrite: bool = False,
    ) -> Issued:
        """Issue a system or officer identity from its agency CA into identity directory ``out``."""
        if identity.trust_domain != self.trust_domain:
            raise CertificateError(
                f"{identity} is not in this PKI's trust domain {self.trust_domain!r}"
            )
        ca_dir = self.agency_dir(identity.agency)
        if not (ca_dir / "ca.crt").exists():
            raise IdentityError(
                f"agency {identity.agency!r} has no CA in {ca_dir}; "
                f"run `sinergi pki agency-ca {identity.agency}` first"
            )
        _refuse_existing(Path(out), overwrite)
        ca = self._load(ca_dir, passphrase)
        issued = issue_client(ca, identity, valid_days=valid_days, dns_names=dns_names)
        write_identity(out, issued, self.bundle(), overwrite=overwrite)
        self._record(ca_dir, issued.certificate)
        return issued

    def issue_server(
        self,
        out: str | os.PathLike[str],
        *,
        common_name: str,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str],
        valid_days: int = 397,
        passphrase: bytes | None = None,
        overwrite: bool = False,
    ) -> Issued:
        """Issue the exchange's server certificate from the root into identity directory ``out``."""
        _refuse_existing(Path(out), overwrite)
        root = self._load(self.directory / _ROOT, passphrase)
        issued = issue_server(
            root,
            common_name=common_name,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            valid_days=valid_days,
        )
        write_identity(out, issued, self.bundle(), overwrite=overwrite)
        self._record(self.directory / _ROOT, issued.certificate)
        return issued

    def renew(
        self,
        identity_dir: str | os.PathLike[str],
        *,
        valid_days: int = 397,
        passphrase: bytes | None = None,
    ) -> Issued:
        """Reissue an identity's certificate (same subject and names, new key and serial) from
        the CA that issued it, and replace the identity directory's files."""
        old = read_certificates(Path(identity_dir) / "tls.crt")[0]
        ca_dir = self.issuer_dir(old)
        ca = self._load(ca_dir, passphrase)
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usages = old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        purpose = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if ExtendedKeyUsageOID.SERVER_AUTH in usages
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        key = ec.generate_private_key(ec.SECP256R1())
        issued = _leaf(ca, old.subject, list(san), purpose, _validity(valid_days), key=key)
        write_identity(identity_dir, issued, self.bundle(), overwrite=True)
        self._record(ca_dir, issued.certificate)
        return issued

    def _record(self, ca_dir: Path, certificate: x509.Certificate) -> None:
        issued = _private_dir(ca_dir / _ISSUED)
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        _write(issued / f"{certificate.serial_number:x}.crt", pem, _PUBLIC, replace=True)

    # --- looking up ------------------------------------------------------------------------------

    def issuer_dir(self, certificate: x509.Certificate) -> Path:
        """The CA directory whose CA issued ``certificate`` (name and signature checked)."""
        for ca_dir in self.ca_dirs():
            if issued_by(certificate, read_certificates(ca_dir / "ca.crt")[0]):
                return ca_dir
        raise CertificateError(
            f"{certificate.subject.rfc4514_string()} (serial {certificate.serial_number:x}) "
            f"was not issued by a CA of {self.directory}"
        )

    def find(self, serial: str) -> tuple[Path, x509.Certificate]:
        """The issued certificate with hex serial ``serial`` and the directory of its CA."""
        try:
            number = int(serial.replace(":", ""), 16)
        except ValueError:
            raise CertificateError(f"{serial!r} is not a hexadecimal serial number") from None
        for ca_dir in self.ca_dirs():
            path = ca_dir / _ISSUED / f"{number:x}.crt"
            if path.exists():
                return ca_dir, read_certificates(path)[0]
        raise CertificateError(
            f"no certificate with serial {number:x} was issued by {self.directory}"
        )

    def certificates(self) -> list[CertificateInfo]:
        """Every certificate this PKI issued, with its revocation status, oldest CA first."""
        found: list[CertificateInfo] = []
        for ca_dir in self.ca_dirs():
            database = RevocationDatabase(ca_dir)
            issued = ca_dir / _ISSUED
            paths = sorted(issued.glob("*.crt")) if issued.is_dir() else []
            for path in paths:
                cert = read_certificates(path)[0]
                record = database.records.get(cert.serial_number)
                found.append(describe(cert, record.reason if record else None, path))
        return sorted(found, key=lambda info: (info.issuer, info.subject, info.not_after))

    def revocation_reason(self, certificate: x509.Certificate) -> str | None:
        try:
            ca_dir = self.issuer_dir(certificate)
        except CertificateError:
            return None
        record = RevocationDatabase(ca_dir).records.get(certificate.serial_number)
        return record.reason if record else None

    # --- revoking --------------------------------------------------------------------------------

    def revoke(self, target: str | os.PathLike[str], reason: str) -> tuple[x509.Certificate, bool]:
        """Revoke a certificate named by a hex serial, a certificate file or an identity directory.

        Returns the certificate and whether it was newly revoked. Run :meth:`write_crls` to publish.
        """
        flag = parse_reason(reason)
        if Path(target).exists():
            certificate = read_certificates(target)[0]
            ca_dir = self.issuer_dir(certificate)
        else:
            ca_dir, certificate = self.find(str(target))
        identity = describe(certificate).identity
        return certificate, RevocationDatabase(ca_dir).revoke(certificate, flag, identity)

    def write_crls(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        next_update_days: int = 7,
        passphrase: bytes | None = None,
    ) -> list[Path]:
        """Sign a fresh CRL for every CA (``crl.pem`` in its directory) and write them all, one
        after the other, to ``out`` (default ``DIR/crl.pem``). Returns the files written."""
        written: list[Path] = []
        combined: list[bytes] = []
        for ca_dir in self.ca_dirs():
            database = RevocationDatabase(ca_dir)
            database.crl_number += 1  # RFC 5280 5.2.3: monotonically increasing
            ca = self._load(ca_dir, passphrase)
            crl = build_crl(
                ca,
                database.records.values(),
                number=database.crl_number,
                next_update_days=next_update_days,
            )
            database.save()
            pem = crl_pem(crl)
            _write(ca_dir / _CRL, pem, _PUBLIC, replace=True)
            written.append(ca_dir / _CRL)
            combined.append(pem)
        target = Path(out) if out is not None else self.directory / _CRL
        _write(target, b"".join(combined), _PUBLIC, replace=True)
        written.append(target)
        return written


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if not overwrite and (out / "tls.key").exists():
        raise IdentityError(
            f"{out / 'tls.key'} already exists; refusing to overwrite an identity "
            "(use `sinergi pki renew`, or pass --force)"
        )
