"""`sinergi serve` and `sinergi db`: the server's commands (loaded lazily by the CLI)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import click

from certs import CertsError
from exchange._errors import ConfigError
from exchange._logging import configure_logging
from exchange._policy import DEFAULT_POLICY
from exchange._server import ExchangeServer, ServerConfig, initialise_database
from ledger import LedgerError

_DB = click.option(
    "--db", envvar="SINERGI_DB", default="sqlite:///var/sinergi.db", show_default=True,
    help="SQLAlchemy database URL [env SINERGI_DB].",
)  # fmt: skip
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

NEXT_STEPS = """\
Sinergi exchange listening on {listen} (ledger origin {origin}). Stop with Ctrl-C.
In another terminal, after `source .venv/bin/activate`:
  sinergi alert watch --identity {pki}/police
  sinergi alert publish --identity {pki}/immigration --category PASSPORT_HOLD --to police,labour \\
      --subject passport=C1234567 --summary "Applicant recruited by an unlicensed agent"
  sinergi alert ack ALERT_ID --identity {pki}/police --response ACCEPTED
  sinergi ledger verify --db {db}
"""


def _fail(message: str, as_json: bool) -> None:
    click.echo(f"sinergi: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message}))
    sys.exit(2)


@click.command()
@_DB
@click.option(
    "--pki", "pki", default="certs/dev", show_default=True, type=click.Path(path_type=Path),
    help="PKI directory: server identity in server/, ledger key ledger.key.",
)  # fmt: skip
@click.option("--listen", default="127.0.0.1:50051", show_default=True)
@click.option(
    "--policy", default=str(DEFAULT_POLICY), type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (TOML). Default: the development policy.",
)  # fmt: skip
@click.option("--trust-domain", default="sinergi.dev", show_default=True)
@click.option(
    "--extra-ledger-key",
    "extra_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also sign checkpoints with this key (key rotation; repeatable).",
)
@click.option("--print-next-steps", is_flag=True, help="Print commands to try once listening.")
@_JSON
def serve(
    db: str,
    pki: Path,
    listen: str,
    policy: Path,
    trust_domain: str,
    extra_keys: tuple[Path, ...],
    print_next_steps: bool,
    as_json: bool,
) -> None:
    """Run the exchange (mutual TLS only) in the foreground.

    \b
    Example:
      sinergi serve --db sqlite:///var/sinergi.db --pki certs/dev
    """
    configure_logging()
    config = ServerConfig(
        identity=pki / "server",
        ledger_key=pki / "ledger.key",
        database=db,
        listen=listen,
        policy=policy,
        trust_domain=trust_domain,
        extra_ledger_keys=extra_keys,
    )
    try:
        asyncio.run(_serve(config, pki, print_next_steps, as_json))
    except (ConfigError, CertsError, LedgerError, OSError) as exc:
        _fail(str(exc), as_json)


async def _serve(config: ServerConfig, pki: Path, next_steps: bool, as_json: bool) -> None:
    server = ExchangeServer(config)
    port = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = config.listen.rpartition(":")[0]
    if as_json:
        click.echo(json.dumps({"ok": True, "listen": f"{host}:{port}", "port": port}))
    elif next_steps:
        click.echo(
            NEXT_STEPS.format(
                listen=f"{host}:{port}", origin=config.ledger_origin, pki=pki, db=config.database
            )
        )
    sys.stdout.flush()
    await stop.wait()
    await server.stop()


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
@_DB
@_JSON
def init(db: str, as_json: bool) -> None:
    """Create the tables and the ledger's append-only triggers, if absent.

    \b
    Example:
      sinergi db init --db sqlite:///var/sinergi.db
    """
    try:
        initialise_database(db)
    except LedgerError as exc:
        _fail(str(exc), as_json)
    message = {"ok": True, "database": db}
    click.echo(json.dumps(message) if as_json else f"database ready: {db}")
