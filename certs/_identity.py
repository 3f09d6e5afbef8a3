"""Identity and CA directories on disk: the only place private keys are read or written.

An identity directory holds ``tls.crt``, ``tls.key`` and ``ca.crt``; a CA directory ``ca.crt`` and
``ca.key``. Keys are created 0600 from the first byte on and, as OpenSSH does, a key that the group
or others can read is refused rather than used.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from certs._errors import CertificateError, IdentityError
from certs._names import SpiffeId
from certs._x509 import Issued, fingerprint, identity_of, load_pem_certificate

__all__ = ["IDENTITY_FILES", "Identity", "load_ca", "load_identity", "write_ca", "write_identity"]

IDENTITY_FILES = ("tls.crt", "tls.key", "ca.crt")
_CA_FILES = ("ca.crt", "ca.key")
_PRIVATE = 0o600
_PUBLIC = 0o644


@dataclass(frozen=True)
class Identity:
    """A loaded identity: PEM bytes as gRPC credentials take them, and the parsed certificate."""

    directory: Path
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)  # never in a repr, so never in a log line
    ca_pem: bytes = field(repr=False)
    certificate: x509.Certificate

    @cached_property
    def spiffe_id(self) -> SpiffeId | None:
        """The principal, or None for a certificate without a URI SAN (a server certificate).
        Parsed once: a client checks it against every receipt."""
        try:
            san = self.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return None
        if not san.value.get_values_for_type(x509.UniformResourceIdentifier):
            return None
        return identity_of(self.certificate)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)


def load_identity(directory: str | os.PathLike[str]) -> Identity:
    """Load and check an identity directory; :class:`IdentityError` names the offending file."""
    path = _existing_dir(directory)
    cert_path, key_path, ca_path = _existing_files(path, IDENTITY_FILES)
    cert_pem, key_pem, ca_pem = _read(cert_path), _read_private(key_path), _read(ca_path)
    certificate = _parse_certificate(cert_path, cert_pem)
    _check_pair(certificate, cert_path, _parse_key(key_path, key_pem), key_path)
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise IdentityError(f"{ca_path}: not a PEM certificate bundle") from None
    identity = Identity(path, cert_pem, key_pem, ca_pem, certificate)
    try:
        identity.spiffe_id  # noqa: B018 - a malformed URI SAN is refused now, not on first use
    except CertificateError as exc:
        raise IdentityError(f"{cert_path}: {exc}") from None
    return identity


def write_identity(
    directory: str | os.PathLike[str],
    issued: Issued,
    ca_certificate: x509.Certificate | Sequence[x509.Certificate],
    *,
    overwrite: bool = False,
) -> Path:
    """Write an identity directory, created 0700 if absent: ``tls.crt`` holds the certificate and
    its intermediates, ``ca.crt`` the trust bundle (one CA certificate or several)."""
    path = _private_dir(directory)
    cert_path, key_path, ca_path = _files(path, IDENTITY_FILES)
    # The key first: if it exists, nothing has been changed when we refuse.
    _write(key_path, issued.key_pem(), _PRIVATE, replace=overwrite)
    _write(cert_path, issued.chain_pem(), _PUBLIC, replace=True)
    _write(ca_path, _bundle_pem(ca_certificate), _PUBLIC, replace=True)
    return path


def _bundle_pem(certificates: x509.Certificate | Sequence[x509.Certificate]) -> bytes:
    if isinstance(certificates, x509.Certificate):
        certificates = [certificates]
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)


def write_ca(
    directory: str | os.PathLike[str],
    ca: Issued,
    *,
    overwrite: bool = False,
    passphrase: bytes | None = None,
) -> Path:
    """Write a CA certificate and its key as ``ca.crt`` and ``ca.key`` (0600, encrypted with
    ``passphrase`` if given)."""
    if not _is_ca(ca.certificate):
        raise CertificateError(f"{ca.certificate.subject.rfc4514_string()} is not a CA")
    path = _private_dir(directory)
    cert_path, key_path = _files(path, _CA_FILES)
    _write(key_path, ca.key_pem(passphrase), _PRIVATE, replace=overwrite)
    _write(cert_path, ca.cert_pem(), _PUBLIC, replace=True)
    return path


def load_ca(directory: str | os.PathLike[str], *, passphrase: bytes | None = None) -> Issued:
    """Load a CA directory written by :func:`write_ca`, ready to issue certificates."""
    path = _existing_dir(directory)
    cert_path, key_path = _existing_files(path, _CA_FILES)
    cert_pem, key_pem = _read(cert_path), _read_private(key_path)
    certificate = _parse_certificate(cert_path, cert_pem)
    if not _is_ca(certificate):
        raise IdentityError(f"{cert_path}: not a CA certificate (RFC 5280 4.2.1.9)")
    key = _parse_key(key_path, key_pem, passphrase)
    _check_pair(certificate, cert_path, key, key_path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{key_path}: not an EC private key")
    return Issued(certificate, key)


def _existing_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    if not path.is_dir():
        raise IdentityError(f"{path}: no such directory")
    return path


def _files(path: Path, names: tuple[str, ...]) -> list[Path]:
    return [path / name for name in names]


def _existing_files(path: Path, names: tuple[str, ...]) -> list[Path]:
    files = _files(path, names)
    missing = [str(file) for file in files if not file.exists()]
    if missing:
        raise IdentityError(f"missing {', '.join(missing)}")
    return files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{path}: unreadable ({exc.strerror})") from None


def _read_private(path: Path) -> bytes:
    """Read a key, refusing it if group or others may read it (checked on the open file)."""
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise IdentityError(f"{path}: not a regular file")
            if os.name == "posix" and mode & 0o077:
                raise IdentityError(
                    f"{path}: private key is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
                )
            return file.read()
    except OSError as exc:
        raise IdentityError(f"{path}: unreadable ({exc.strerror})") from None


def _parse_certificate(path: Path, data: bytes) -> x509.Certificate:
    try:
        return load_pem_certificate(data)
    except CertificateError as exc:
        raise IdentityError(f"{path}: {exc}") from None


def _parse_key(path: Path, data: bytes, passphrase: bytes | None = None) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if passphrase is not None:
            raise IdentityError(f"{path}: wrong passphrase, or not a PEM private key") from None
        if b"ENCRYPTED" in data:
            raise IdentityError(
                f"{path}: not an unencrypted PEM private key (it is encrypted: "
                "pass --passphrase-file)"
            ) from None
        # A service cannot prompt for a passphrase: its identity key is never encrypted.
        raise IdentityError(f"{path}: not an unencrypted PEM private key") from None


def _check_pair(
    certificate: x509.Certificate, cert_path: Path, key: PrivateKeyTypes, key_path: Path
) -> None:
    if certificate.public_key() != key.public_key():
        raise IdentityError(f"{key_path} does not match the public key in {cert_path}")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _private_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"{path}: cannot create directory ({exc.strerror})") from None
    return path


def _write(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` to ``path``, which never exists with a mode wider than ``mode``.

    With ``replace`` the file is written beside ``path`` and renamed over it, so readers see the
    old or the new content, never half of it. Without, ``path`` must not exist yet.
    """
    target = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp") if replace else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise IdentityError(
            f"{path} already exists; refusing to overwrite a private key (pass overwrite=True)"
        ) from None
    except OSError as exc:
        raise IdentityError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with open(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)  # the umask may have narrowed it; make it exact
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(target, path)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise IdentityError(f"{path}: cannot write ({exc.strerror})") from None
