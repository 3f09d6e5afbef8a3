"""The server's TLS: mutual TLS only, with its identity and trust bundle reloaded without a restart.

``grpc.dynamic_ssl_server_credentials`` asks :meth:`ServerTls._fetch` for a configuration on
each new connection; when ``tls.crt``, ``tls.key`` or ``ca.crt`` changed, it returns the new one,
so a renewed server certificate or a new CA bundle (an agency joining) takes effect for new
connections while established streams carry on (docs/grpc-python.md, "Rotation and revocation").
A set of files that does not load (a key not matching its certificate, half-copied) is logged
and the previous configuration stays. With a CRL file, the highest CRL number accepted per CA is
kept in ``crl.state.json`` in this directory, unless told another path (docs/pki.md).
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import structlog

from certs import IDENTITY_FILES, CertsError, Identity, TrustAnchors, expiring, load_identity
from exchange._errors import ConfigError
from exchange._identity import DEFAULT_CRL_GRACE, Revocations, Trust
from exchange._metrics import Metrics

_log = structlog.get_logger("sinergi.tls")
_Stamp = tuple[tuple[int, int, int] | None, ...]
#: Beside the server's own identity: the highest CRL number accepted per CA (certs.CrlNumbers).
CRL_STATE_FILE = "crl.state.json"


class ServerTls:
    """The server identity directory as live TLS credentials, and the :class:`Trust` that the
    guard checks peers against (kept in step with the bundle the TLS layer uses)."""

    def __init__(
        self,
        identity_dir: Path,
        trust_domain: str,
        *,
        crl: Path | None = None,
        crl_grace_seconds: float = DEFAULT_CRL_GRACE.total_seconds(),
        crl_state: Path | None = None,
        metrics: Metrics | None = None,
        check_only: bool = False,
    ) -> None:
        """``crl_state`` defaults to ``crl.state.json`` in ``identity_dir``; ``metrics``, if
        given, counts refused CRLs and shows each CA's CRL; ``check_only`` reads the state file
        but never writes it (`serve --check-config`)."""
        self.directory = Path(identity_dir)
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self.identity = load_identity(self.directory)
        anchors = TrustAnchors.from_pem(self.identity.ca_pem)
        revocations = None
        if crl is not None:
            revocations = Revocations(
                crl,
                anchors,
                state=crl_state or self.directory / CRL_STATE_FILE,
                grace=timedelta(seconds=crl_grace_seconds),
                on_refused=metrics.crl_refused if metrics is not None else None,
                remember=not check_only,
            )
        self.trust = Trust(trust_domain, anchors, revocations)
        if metrics is not None:
            metrics.crls(self.trust.crl_status)
        self.reloads = 0
        _warn_expiring(self.identity, self.trust.anchors)

    def crl_summary(self) -> dict[str, str]:
        """Each identity-issuing CA and its CRL's nextUpdate, for `serve --check-config`; a
        :class:`ConfigError` naming every CA whose identities would be refused (no CRL that can
        be taken, or one past nextUpdate and the grace: RFC 5280 5.1.2.5)."""
        revocations = self.trust.revocations
        if revocations is None:
            return {}
        status = self.trust.crl_status()
        refused = [label for label, current, _ in status if not current]
        if refused:
            raise ConfigError(
                f"CRL {revocations.path}: no current CRL for issuing CA "
                f"{', '.join(refused)}: its identities would be refused (the log says why; "
                "docs/pki.md, Revocation)"
            )
        return {label: when.isoformat() for label, _, when in status if when is not None}

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self.identity),
            self._fetch,  # type: ignore[arg-type]  # grpc-stubs omit None ("keep the current")
            require_client_authentication=True,
        )

    def _files_stamp(self) -> _Stamp:
        stamps: list[tuple[int, int, int] | None] = []
        for name in IDENTITY_FILES:
            try:
                st = os.stat(self.directory / name)
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc for each new connection; None keeps the current configuration."""
        with self._lock:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return None
            self._stamp = stamp  # a broken set is reported once, not on every connection
            try:
                identity = load_identity(self.directory)
                anchors = TrustAnchors.from_pem(identity.ca_pem)
            except (CertsError, ConfigError) as exc:
                _log.error(
                    "server identity not reloaded; the previous one stays in use",
                    directory=str(self.directory),
                    error=str(exc),
                )
                return None
            self.identity = identity
            self.trust.anchors = anchors
            self.reloads += 1
            _log.info(
                "server identity reloaded",
                directory=str(self.directory),
                certificate=identity.fingerprint,
                not_after=identity.certificate.not_valid_after_utc.isoformat(),
                trusted_cas=len(anchors.certificates),
            )
            _warn_expiring(identity, anchors)
            return _configuration(identity)


def _configuration(identity: Identity) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(identity.key_pem, identity.cert_pem)], root_certificates=identity.ca_pem
    )


def _warn_expiring(identity: Identity, anchors: TrustAnchors) -> None:
    """Log the server certificate and trusted CAs that expire within 30 days."""
    now = datetime.now(UTC)
    for cert in expiring([identity.certificate, *anchors.certificates]):
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        _log.warning(
            "certificate expires soon" if days > 0 else "certificate has expired",
            subject=cert.subject.rfc4514_string(),
            role="server" if cert == identity.certificate else "trusted CA",
            not_after=cert.not_valid_after_utc.isoformat(),
            days_left=round(days, 1),
        )
