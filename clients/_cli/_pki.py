"""`sinergi pki`: the deployment PKI (root, agency CAs, identities, revocation) and the
development PKI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from certs import (
    DEV_TRUST_DOMAIN,
    KINDS,
    REVOCATION_REASONS,
    CertificateInfo,
    Pki,
    SpiffeId,
    create_dev_pki,
    describe,
    read_certificates,
)
from clients._cli._common import DEV_PKI, by_name, emit, handle_errors, json_option
from clients._cli._language import Group
from clients._client import LEDGER_KEY_FILE
from clients._errors import UsageError
from clients._i18n import L_, _
from ledger import write_signing_key

_PKI_DIR_ENV = "SINERGI_PKI_DIR"
_dir_option = click.option(
    "--dir",
    "directory",
    envvar=_PKI_DIR_ENV,
    default="certs/pki",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=L_("The deployment PKI directory [env {env}].", env=_PKI_DIR_ENV),
)
_passphrase_option = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the passphrase of the CA key (first line).",
)
_days_option = click.option(
    "--days", type=click.IntRange(1), default=397, show_default=True, help="Validity in days."
)


def _passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    lines = path.read_bytes().splitlines()
    if not lines or not lines[0]:
        raise UsageError(L_("{path}: the passphrase file is empty", path=path))
    return lines[0]


def _summary(info: CertificateInfo) -> dict[str, object]:
    return info.to_json()


@click.group(cls=Group)
def pki() -> None:
    """Certificates and keys: a root CA per deployment, one issuing CA per agency, identities,
    revocation lists; and the development PKI."""


@pki.command()
@click.option(
    "--dir", "directory", default=DEV_PKI, show_default=True, type=click.Path(path_type=Path)
)
@click.option("--trust-domain", default=DEV_TRUST_DOMAIN, show_default=True)
@json_option
@handle_errors
def dev(directory: Path, trust_domain: str, as_json: bool) -> None:
    """Create the development PKI if absent: CA, server, agency identities, ledger key, and
    the two development witnesses (their cosigning keys and state) with the witness policy
    that needs both (witness-policy, which clients find beside their identities).

    \b
    Example:
      sinergi pki dev --dir certs/dev
    """
    result = create_dev_pki(directory, trust_domain=trust_domain)
    key_created = write_signing_key(directory, f"{trust_domain}/ledger")
    try:
        witnesses = by_name("dev_witnesses")(directory, trust_domain=trust_domain)
    except by_name("witness_error") as exc:
        raise UsageError(str(exc)) from None
    identities = {name: str(path) for name, path in sorted(result.identities.items())}
    created = result.created or key_created
    listed = {
        **identities,
        _("ledger key"): str(directory / LEDGER_KEY_FILE),
        _("witness policy"): str(witnesses.policy),
    }
    width = max(map(len, listed)) + 2  # the names line up however long the longest
    done = _("development PKI created in {directory}")
    if not created:
        done = _("development PKI already present in {directory}")
    lines = [done.format(directory=directory)]
    lines += [f"  {name:<{width}}{path}" for name, path in listed.items()]
    emit(
        as_json,
        {
            "ok": True,
            "created": created,
            "directory": str(directory),
            "identities": identities,
            "witness_policy": str(witnesses.policy),
        },
        "\n".join(lines),
    )


@pki.command()
@_dir_option
@click.option("--trust-domain", required=True, help="The deployment's SPIFFE trust domain.")
@click.option("--name", "common_name", default=None, help="Common name of the root CA.")
@click.option("--days", type=click.IntRange(1), default=3650, show_default=True)
@_passphrase_option
@json_option
@handle_errors
def init(
    directory: Path,
    trust_domain: str,
    common_name: str | None,
    days: int,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Create the deployment's root CA (it issues agency CAs and server certificates only).

    The key is written 0600, encrypted when --passphrase-file is given; an existing root is
    never replaced.

    \b
    Example:
      sinergi pki init --dir /etc/sinergi/pki --trust-domain timpora.go.id \\
          --passphrase-file /run/secrets/root-pass
    """
    created = Pki.init(
        directory,
        trust_domain,
        common_name=common_name,
        valid_days=days,
        passphrase=_passphrase(passphrase_file),
    )
    info = describe(created.root)
    emit(
        as_json,
        {"ok": True, "directory": str(directory), "root": _summary(info)},
        _(
            "root CA {identity} created in {directory}\n"
            "  serial {serial}, expires {expires:%Y-%m-%d}\n"
            "  trust bundle {bundle}"
        ).format(
            identity=info.identity,
            directory=directory / "root",
            serial=info.serial,
            expires=info.not_after,
            bundle=directory / "ca.crt",
        ),
    )


@pki.command("agency-ca")
@click.argument("agency")
@_dir_option
@click.option("--days", type=click.IntRange(1), default=1825, show_default=True)
@click.option(
    "--root-passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Passphrase of the root CA key.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Encrypt the new agency CA key with this passphrase.",
)
@json_option
@handle_errors
def agency_ca(
    agency: str,
    directory: Path,
    days: int,
    root_passphrase_file: Path | None,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Create AGENCY's issuing CA (pathLen 0, scope spiffe://<td>/agency/AGENCY) and add it
    to the trust bundle ca.crt; give the new bundle to the exchange (it reloads it).

    \b
    Example:
      sinergi pki agency-ca police --dir /etc/sinergi/pki
    """
    deployment = Pki.open(directory)
    ca = deployment.create_agency_ca(
        agency,
        valid_days=days,
        root_passphrase=_passphrase(root_passphrase_file),
        passphrase=_passphrase(passphrase_file),
    )
    info = describe(ca.certificate)
    emit(
        as_json,
        {"ok": True, "agency": agency, "ca": _summary(info), "bundle": str(directory / "ca.crt")},
        _(
            "agency CA {identity} created in {directory}\n"
            "  serial {serial}, expires {expires:%Y-%m-%d}\n"
            "  trust bundle updated: {bundle}"
        ).format(
            identity=info.identity,
            directory=deployment.agency_dir(agency),
            serial=info.serial,
            expires=info.not_after,
            bundle=directory / "ca.crt",
        ),
    )


@pki.command()
@click.argument("kind", type=click.Choice(["server", *KINDS]))
@click.argument("name", required=False)
@_dir_option
@click.option("--agency", help="Agency of a system or officer identity.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Identity directory to write (tls.crt, tls.key, ca.crt).",
)
@click.option("--dns", multiple=True, help="DNS name in the SAN (repeatable).")
@click.option("--ip", multiple=True, help="IP address in the SAN of a server (repeatable).")
@_days_option
@click.option("--force", is_flag=True, help="Replace an existing identity in --out.")
@_passphrase_option
@json_option
@handle_errors
def issue(
    kind: str,
    name: str | None,
    directory: Path,
    agency: str | None,
    out: Path,
    dns: Sequence[str],
    ip: Sequence[str],
    days: int,
    force: bool,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Issue a certificate into an identity directory: KIND is server (from the root), or
    system or officer (from the agency's CA, named spiffe://<td>/agency/AGENCY/KIND/NAME).

    tls.crt holds the certificate and its issuing CA; ca.crt is the trust bundle.

    \b
    Example:
      sinergi pki issue officer budi --agency police --out ~/.sinergi/budi --days 90
      sinergi pki issue system gateway --agency police --out /etc/sinergi/police-gw
      sinergi pki issue server --dns exchange.timpora.go.id --ip 10.0.0.5 --out /etc/sinergi/server
    """
    deployment = Pki.open(directory)
    passphrase = _passphrase(passphrase_file)
    if kind == "server":
        if not dns and not ip:
            raise click.UsageError(_("a server certificate needs --dns or --ip"))
        issued = deployment.issue_server(
            out,
            common_name=name or "sinergi-exchange",
            dns_names=dns,
            ip_addresses=ip,
            valid_days=days,
            passphrase=passphrase,
            overwrite=force,
        )
    else:
        if agency is None or name is None:
            raise click.UsageError(_("a {kind} identity needs NAME and --agency").format(kind=kind))
        if ip:
            raise click.UsageError(_("--ip is for server certificates"))
        identity = SpiffeId(deployment.trust_domain, agency, kind, name)
        issued = deployment.issue_identity(
            out,
            identity,
            dns_names=dns,
            valid_days=days,
            passphrase=passphrase,
            overwrite=force,
        )
    info = describe(issued.certificate, path=out)
    emit(
        as_json,
        {"ok": True, "certificate": _summary(info), "identity_dir": str(out)},
        _(
            "issued {identity} into {out}\n"
            "  serial {serial}, issuer {issuer}, expires {expires:%Y-%m-%d}"
        ).format(
            identity=info.identity,
            out=out,
            serial=info.serial,
            issuer=info.issuer,
            expires=info.not_after,
        ),
    )


@pki.command()
@click.argument("target")
@_dir_option
@click.option(
    "--reason",
    required=True,
    type=click.Choice(REVOCATION_REASONS, case_sensitive=False),
    help="RFC 5280 reason code.",
)
@json_option
@handle_errors
def revoke(target: str, directory: Path, reason: str, as_json: bool) -> None:
    """Revoke a certificate named by its hex SERIAL, a certificate file or an identity
    directory. Recorded in the issuing CA's revoked.json; publish with `sinergi pki crl`.

    \b
    Example:
      sinergi pki revoke 3f2a9c... --reason keyCompromise
      sinergi pki revoke ~/.sinergi/budi --reason keyCompromise && sinergi pki crl
    """
    deployment = Pki.open(directory)
    certificate, new = deployment.revoke(target, reason)
    info = describe(certificate)
    emit(
        as_json,
        {"ok": True, "newly_revoked": new, "certificate": _summary(info), "reason": reason},
        (
            _("revoked: {identity} serial {serial} ({reason}); run `sinergi pki crl` to publish")
            if new
            else _(
                "already revoked: {identity} serial {serial} ({reason}); run `sinergi pki crl` "
                "to publish"
            )
        ).format(identity=info.identity, serial=info.serial, reason=reason),
    )


@pki.command()
@_dir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Combined CRL file [default DIR/crl.pem].",
)
@click.option("--next-update-days", type=click.IntRange(1), default=7, show_default=True)
@_passphrase_option
@json_option
@handle_errors
def crl(
    directory: Path,
    out: Path | None,
    next_update_days: int,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Sign a CRL for every CA (crl.pem in its directory) and write them together to one file,
    the one the exchange's --crl reads; it reloads it when it changes.

    \b
    Example:
      sinergi pki crl --dir /etc/sinergi/pki --out /etc/sinergi/crl.pem
    """
    deployment = Pki.open(directory)
    written = deployment.write_crls(
        out, next_update_days=next_update_days, passphrase=_passphrase(passphrase_file)
    )
    emit(
        as_json,
        {"ok": True, "files": [str(p) for p in written], "crl": str(written[-1])},
        "\n".join(_("wrote {path}").format(path=path) for path in written),
    )


def _table(infos: Sequence[CertificateInfo]) -> str:
    headers = (
        _("SUBJECT"),
        _("SAN IDENTITY"),
        _("SERIAL"),
        _("ISSUER"),
        _("NOT AFTER"),
        _("REVOKED"),
    )
    rows = [
        (
            i.subject,
            i.identity,
            i.serial,
            i.issuer,
            f"{i.not_after:%Y-%m-%d %H:%M}" + (_(" (expired)") if i.expired else ""),
            i.revoked or "-",
        )
        for i in infos
    ]
    widths = [max(len(r[n]) for r in [headers, *rows]) for n in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _show(infos: Sequence[CertificateInfo], as_json: bool) -> None:
    soon = [i for i in infos if i.expires_soon and not i.revoked]
    for info in soon:
        state = _("{name} has expired") if info.expired else _("{name} expires {date:%Y-%m-%d}")
        named = state.format(name=info.identity or info.subject, date=info.not_after)
        click.echo(_("sinergi: warning: {warning}").format(warning=named), err=True)
    emit(
        as_json,
        {
            "ok": True,
            "certificates": [_summary(i) for i in infos],
            "expiring": [i.serial for i in soon],
        },
        _table(infos),
    )


@pki.command("list")
@_dir_option
@json_option
@handle_errors
def list_(directory: Path, as_json: bool) -> None:
    """Every certificate the PKI issued: subject, SAN identity, serial, issuer, not-after,
    revocation; warns about those expiring within 30 days.

    \b
    Example:
      sinergi pki list --dir /etc/sinergi/pki --json
    """
    _show(Pki.open(directory).certificates(), as_json)


@pki.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--dir",
    "directory",
    envvar=_PKI_DIR_ENV,
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help=L_("Deployment PKI to look revocations up in [env {env}].", env=_PKI_DIR_ENV),
)
@json_option
@handle_errors
def inspect(paths: tuple[Path, ...], directory: Path | None, as_json: bool) -> None:
    """Show certificate files or identity directories (their tls.crt: leaf and chain), with
    revocation status when --dir names the PKI; warns about expiry within 30 days.

    \b
    Example:
      sinergi pki inspect certs/dev/police ~/.sinergi/budi/tls.crt --dir /etc/sinergi/pki
    """
    deployment = Pki.open(directory) if directory is not None else None
    infos = []
    for path in paths:
        for cert in read_certificates(path):
            revoked = deployment.revocation_reason(cert) if deployment is not None else None
            infos.append(describe(cert, revoked, path))
    _show(infos, as_json)


@pki.command()
@click.argument("identity_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_dir_option
@_days_option
@_passphrase_option
@json_option
@handle_errors
def renew(
    identity_dir: Path, directory: Path, days: int, passphrase_file: Path | None, as_json: bool
) -> None:
    """Reissue an identity's certificate with a new key (same subject and names) from the CA
    that issued it, replacing the files in IDENTITY_DIR; the old certificate stays valid until
    it expires or is revoked. A running exchange picks up a renewed server identity by itself.

    \b
    Example:
      sinergi pki renew /etc/sinergi/server --days 397
    """
    issued = Pki.open(directory).renew(
        identity_dir, valid_days=days, passphrase=_passphrase(passphrase_file)
    )
    info = describe(issued.certificate, path=identity_dir)
    emit(
        as_json,
        {"ok": True, "certificate": _summary(info), "identity_dir": str(identity_dir)},
        _(
            "renewed {identity} in {directory}\n  serial {serial}, expires {expires:%Y-%m-%d}"
        ).format(
            identity=info.identity,
            directory=identity_dir,
            serial=info.serial,
            expires=info.not_after,
        ),
    )
