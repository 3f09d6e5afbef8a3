"""`sinergi pki`: the development PKI (CA, server, agency identities, ledger signing key)."""

from __future__ import annotations

from pathlib import Path

import click

from certs import DEV_TRUST_DOMAIN, create_dev_pki
from clients._cli._common import emit, handle_errors, json_option
from ledger import write_signing_key


@click.group()
def pki() -> None:
    """Certificates and keys."""


@pki.command()
@click.option(
    "--dir", "directory", default="certs/dev", show_default=True, type=click.Path(path_type=Path)
)
@click.option("--trust-domain", default=DEV_TRUST_DOMAIN, show_default=True)
@json_option
@handle_errors
def dev(directory: Path, trust_domain: str, as_json: bool) -> None:
    """Create the development PKI if absent: CA, server, agency identities, ledger key.

    \b
    Example:
      sinergi pki dev --dir certs/dev
    """
    result = create_dev_pki(directory, trust_domain=trust_domain)
    key_created = write_signing_key(directory, f"{trust_domain}/ledger")
    identities = {name: str(path) for name, path in sorted(result.identities.items())}
    created = result.created or key_created
    lines = [f"development PKI {'created' if created else 'already present'} in {directory}"]
    lines += [f"  {name:<18} {path}" for name, path in identities.items()]
    lines.append(f"  {'ledger key':<18} {directory / 'ledger.vkey'}")
    emit(
        as_json,
        {"ok": True, "created": created, "directory": str(directory), "identities": identities},
        "\n".join(lines),
    )
