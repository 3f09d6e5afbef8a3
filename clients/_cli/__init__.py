"""The `sinergi` command line: it parses, calls the library, and prints."""

from __future__ import annotations

import click

from clients._cli._alert import alert
from clients._cli._common import LazyGroup
from clients._cli._config import config
from clients._cli._language import lang_option
from clients._cli._pki import pki


@click.group(
    cls=LazyGroup,
    lazy=("serve", "db", "ledger", "audit", "witness", "monitor"),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="sinergi")
@lang_option
def cli() -> None:
    """Sinergi: inter-agency alert exchange with a tamper-evident audit ledger.

    Exit codes: 0 ok, 1 refused or verification failed, 2 usage, 3 exchange unreachable.
    """


cli.add_command(alert)
cli.add_command(config)
cli.add_command(pki)


def main() -> None:
    cli(prog_name="sinergi")


__all__ = ["cli", "main"]
