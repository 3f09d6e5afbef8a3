"""`sinergi witness init` and `serve`: run a witness. The `sinergi` CLI loads these two commands
by name into its own `witness` group (clients/_cli/_witness.py), which adds `status`: that one
needs the exchange's client, which the witness never imports.

Exit codes as everywhere in `sinergi`: 0 ok, 1 refused (a state exists, or belongs to another
key), 2 usage or setup (bad flags, missing or malformed files, a port in use).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import NoReturn

import click

from witness._errors import ConfigError, StateError, WitnessError
from witness._logging import configure_logging
from witness._server import WitnessServer
from witness._setup import init_witness

_DIR = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The witness directory: TLS identity, witness.key, logs, state.db.",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _fail(message: str, as_json: bool, code: int) -> NoReturn:
    click.echo(f"sinergi: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message}))
    sys.exit(code)


def _code(exc: WitnessError) -> int:
    return 1 if isinstance(exc, StateError) else 2


@click.group()
def witness() -> None:
    """A witness of the ledger (C2SP tlog-witness): cosigns a checkpoint only if it is
    consistent with the last one it cosigned, and raises the alarm otherwise (docs/witness.md)."""


@witness.command()
@_DIR
@click.option("--name", required=True, help="The witness's key name, e.g. police.example/witness.")
@click.option(
    "--log",
    "log_keys",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A ledger's vkey file (ledger.vkey) to trust; repeatable. Or edit DIR/logs.",
)
@_JSON
def init(directory: Path, name: str, log_keys: tuple[Path, ...], as_json: bool) -> None:
    """Create the cosigning key (unless present), the logs file and an empty state. Refuses
    when a state exists: a witness that lost its state is re-initialised on purpose only.
    Put its TLS identity (tls.crt, tls.key, ca.crt) in the same directory.

    \b
    Example:
      sinergi witness init --dir /var/lib/sinergi-witness --name police.example/witness \\
          --log /etc/sinergi/ledger.vkey
    """
    try:
        vkeys = [path.read_text(encoding="utf-8").strip() for path in log_keys]
        done = init_witness(directory, name, logs=vkeys)
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}", as_json, 2)
    except WitnessError as exc:
        _fail(str(exc), as_json, _code(exc))
    verb = "created" if done.key_created else "kept"
    click.echo(
        json.dumps(
            {
                "ok": True,
                "directory": str(directory),
                "vkey": done.vkey,
                "key_created": done.key_created,
            }
        )
        if as_json
        else f"witness initialised in {directory}: key {verb}, empty state\n  vkey {done.vkey}"
    )


@witness.command()
@_DIR
@click.option(
    "--listen",
    default="127.0.0.1:50061",
    show_default=True,
    help="HOST:PORT to serve HTTPS on; port 0 picks a free one.",
)
@_JSON
def serve(directory: Path, listen: str, as_json: bool) -> None:
    """Serve the witness (HTTPS, mutual TLS) in the foreground; SIGTERM or Ctrl-C stops it.
    Refuses to start without its state, or with the state of another key.

    \b
    Example:
      sinergi witness serve --dir certs/dev/witness-police --listen 127.0.0.1:50062
    """
    try:
        configure_logging()
        server = WitnessServer(directory, listen)
    except WitnessError as exc:
        _fail(str(exc), as_json, _code(exc))
    try:
        asyncio.run(_serve(server, as_json))
    except ConfigError as exc:
        _fail(str(exc), as_json, 2)


async def _serve(server: WitnessServer, as_json: bool) -> None:
    try:
        port = await server.start()
    except BaseException:
        await server.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    address = f"{server.host}:{port}" if ":" not in server.host else f"[{server.host}]:{port}"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": True,
                    "listen": address,
                    "port": port,
                    "name": server.name,
                    "vkey": server.vkey,
                }
            )
        )
    else:
        click.echo(f"Sinergi witness {server.name} listening on https://{address}")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop()
