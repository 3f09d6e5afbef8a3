"""`sinergi serve` and `sinergi db`: the server's commands (loaded lazily by the CLI)."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from certs import CertsError, load_identity
from exchange._bodies import with_keyring
from exchange._config import load_config
from exchange._database import grant_app_role
from exchange._database import upgrade as upgrade_database
from exchange._errors import ConfigError, Internal
from exchange._logging import configure_logging
from exchange._policy import DEFAULT_POLICY, Policy
from exchange._reseal import reindex as reindex_rows
from exchange._reseal import reseal as reseal_rows
from exchange._retention import candidates
from exchange._retention import purge as purge_threads
from exchange._sealing import Keyring, write_kek_file
from exchange._server import SIGNED_HISTORY_FILE, ExchangeServer, ServerConfig, open_database
from exchange._server import check_config as check_server_config
from ledger import DEFAULT_DATABASE, Actor, LedgerError, load_signer
from ledger.store import LedgerWriter, SignedHistory, ledger_origin

_DB = click.option(
    "--db",
    envvar="SINERGI_DB",
    default=DEFAULT_DATABASE,
    show_default=True,
    help="SQLAlchemy database URL [env SINERGI_DB].",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

NEXT_STEPS = """\
Sinergi exchange listening on {listen} (ledger origin {origin}). Stop with Ctrl-C.{witnesses}
In another terminal, after `source .venv/bin/activate`:
  sinergi alert watch --identity {pki}/police --monitor
  sinergi alert publish --identity {pki}/immigration --category PASSPORT_HOLD --to police,labour \\
      --subject passport=C1234567 --summary "Applicant recruited by an unlicensed agent"
  sinergi alert ack ALERT_ID --identity {pki}/police --response ACCEPTED
  sinergi monitor --identity {pki}/police        # did every alert to police reach it?
  sinergi ledger verify --db {db}
"""


#: Why `db reseal` or `db reindex` stopped: a body opened by none of the keys given.
_KEYS_IN_USE = "stored data cannot be decrypted with the keys given: list every key in use"


def _reason(exc: Exception) -> str:
    """One line for an error: the driver's own message when SQLAlchemy wraps one."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _fail(message: str, as_json: bool) -> NoReturn:
    click.echo(f"sinergi: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message}))
    sys.exit(2)


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML configuration file (docs/sinergi.example.toml); flags override it.",
)
@click.option(
    "--db",
    envvar="SINERGI_DB",
    default=None,
    help=f"SQLAlchemy database URL [env SINERGI_DB; default {DEFAULT_DATABASE}].",
)
@click.option(
    "--pki",
    "pki",
    default=None,
    type=click.Path(path_type=Path),
    help="PKI directory: server identity in server/, ledger key ledger.key [default certs/dev].",
)
@click.option("--listen", default=None, help="Address to serve on [default 127.0.0.1:50051].")
@click.option(
    "--policy",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (TOML). Default: the development policy.",
)
@click.option(
    "--crl",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM CRL file(s) (`sinergi pki crl`), re-read when it changes; every CA that issues "
    "identities needs a current CRL in it [default none].",
)
@click.option(
    "--crl-grace-seconds",
    type=click.FloatRange(0),
    default=None,
    help="How long past its nextUpdate a CA's CRL still counts; after that the CA's identities "
    "are refused [default 86400].",
)
@click.option(
    "--crl-state",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the highest CRL number accepted per CA is kept, out of reach of whoever writes "
    "the CRL file [default <identity>/crl.state.json].",
)
@click.option("--trust-domain", default=None, help="SPIFFE trust domain [default sinergi.dev].")
@click.option(
    "--kek-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key-encryption keys for alert bodies at rest (`sinergi db kek`) [default: env "
    "SINERGI_KEK, else bodies are stored unencrypted].",
)
@click.option(
    "--witness-policy",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Witness policy (C2SP tlog-policy, docs/witness.md): the witnesses that cosign the "
    "ledger's checkpoints [default none].",
)
@click.option(
    "--extra-ledger-key",
    "extra_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also sign checkpoints with this key (key rotation; repeatable).",
)
@click.option(
    "--metrics-listen",
    default=None,
    help='Prometheus /metrics over plain HTTP: HOST:PORT, or PORT for 127.0.0.1; "" is off '
    "[default off].",
)
@click.option(
    "--reflection/--no-reflection",
    default=None,
    help="gRPC server reflection (mutual TLS like every call) [default on].",
)
@click.option(
    "--stall-seconds",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Cut off a stream consumer that reads nothing this long [default 30].",
)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(0),
    default=None,
    help="On SIGTERM, time in-flight calls get to finish [default 5].",
)
@click.option(
    "--health-interval-seconds",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="How often health probes the database [default 2].",
)
@click.option(
    "--max-message-bytes",
    type=click.IntRange(1),
    default=None,
    help="Largest request or response [default 4 MiB].",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(0),
    default=None,
    help="Requests per second per principal; 0 = none [default 20].",
)
@click.option(
    "--rate-burst",
    type=click.IntRange(1),
    default=None,
    help="Requests at once above the rate [default 100].",
)
@click.option(
    "--new-ledger",
    is_flag=True,
    help="Start a new ledger on an empty database although this exchange signed another "
    "(an operator's decision, recorded in the log: docs/operations.md).",
)
@click.option(
    "--check-config",
    is_flag=True,
    help="Check configuration, policy, PKI files and database, then exit without serving.",
)
@click.option(
    "--upgrade",
    is_flag=True,
    help="Apply pending database migrations first (`sinergi db upgrade`).",
)
@click.option("--print-next-steps", is_flag=True, help="Print commands to try once listening.")
@_JSON
def serve(
    config_file: Path | None,
    db: str | None,
    pki: Path | None,
    listen: str | None,
    policy: Path | None,
    crl: Path | None,
    crl_grace_seconds: float | None,
    crl_state: Path | None,
    trust_domain: str | None,
    kek_file: Path | None,
    witness_policy: Path | None,
    extra_keys: tuple[Path, ...],
    metrics_listen: str | None,
    reflection: bool | None,
    stall_seconds: float | None,
    grace_seconds: float | None,
    health_interval_seconds: float | None,
    max_message_bytes: int | None,
    rate_limit: float | None,
    rate_burst: int | None,
    new_ledger: bool,
    check_config: bool,
    upgrade: bool,
    print_next_steps: bool,
    as_json: bool,
) -> None:
    """Run the exchange (mutual TLS only) in the foreground; SIGTERM or Ctrl-C stops it
    gracefully.

    \b
    Example:
      sinergi serve --db sqlite:///var/sinergi.db --pki certs/dev
      sinergi serve --pki certs/dev --witness-policy certs/dev/witness-policy
      sinergi serve --config sinergi.toml --check-config
    """
    flags = {
        "database": db,
        "pki": pki,
        "listen": listen,
        "policy": policy,
        "crl": crl,
        "crl_grace_seconds": crl_grace_seconds,
        "crl_state": crl_state,
        "kek_file": kek_file,
        "witness_policy": witness_policy,
        "trust_domain": trust_domain,
        "extra_ledger_keys": [str(k) for k in extra_keys] or None,
        "metrics_listen": metrics_listen,
        "reflection": reflection,
        "stall_seconds": stall_seconds,
        "grace_seconds": grace_seconds,
        "health_interval_seconds": health_interval_seconds,
        "max_message_bytes": max_message_bytes,
        "rate_limit": rate_limit,
        "rate_burst": rate_burst,
        "new_ledger": new_ledger or None,
    }
    try:
        values = dict(load_config(config_file).values) if config_file else {}
        values.update({key: value for key, value in flags.items() if value is not None})
        config, pki_dir = _server_config(values)
        configure_logging()
        if upgrade:
            upgrade_database(config.database)
        if check_config:
            summary = check_server_config(config)
            witnesses, crls = summary["witnesses"], summary["crl_next_updates"]
            message = (
                f"configuration ok: listen {summary['listen']}, database {summary['database']}, "
                f"policy {str(summary['policy_digest'])[:12]} ({summary['agencies']} agencies), "
                f"{summary['ledger_entries']} ledger entries (origin "
                f"{summary['origin'] or 'chosen at the first start'}), "
                + (f"witnesses {witnesses['quorum']}, " if isinstance(witnesses, dict) else "")
                + f"server certificate expires {summary['certificate_expires']}"
                + (f", {_crls(crls)}" if isinstance(crls, dict) else "")
            )
            click.echo(json.dumps({"ok": True, **summary}) if as_json else message)
            return
        asyncio.run(_serve(config, pki_dir, print_next_steps, as_json))
    except (ConfigError, CertsError, LedgerError, OSError) as exc:
        _fail(str(exc), as_json)


def _crls(next_updates: dict[str, str]) -> str:
    """The CRLs' part of the check-config line: how many CAs, and the earliest nextUpdate."""
    cas = "1 CA" if len(next_updates) == 1 else f"{len(next_updates)} CAs"
    return f"CRLs current for {cas} (first nextUpdate {min(next_updates.values())})"


def _server_config(values: dict[str, object]) -> tuple[ServerConfig, Path]:
    """The configuration from file values and flags (already merged, flags winning)."""
    pki = Path(str(values.get("pki", "certs/dev")))
    extra = values.get("extra_ledger_keys", [])
    assert isinstance(extra, list)
    numbers = {
        key: values[key]
        for key in (
            "stall_seconds",
            "grace_seconds",
            "health_interval_seconds",
            "max_message_bytes",
            "reflection",
            "rate_limit",
            "rate_burst",
            "crl_grace_seconds",
            "keepalive_seconds",
            "max_connection_age_seconds",
            "new_ledger",
        )
        if key in values
    }
    config = ServerConfig(
        identity=Path(str(values.get("identity", pki / "server"))),
        ledger_key=Path(str(values.get("ledger_key", pki / "ledger.key"))),
        extra_ledger_keys=tuple(Path(str(k)) for k in extra),
        database=str(values.get("database", DEFAULT_DATABASE)),
        listen=str(values.get("listen", "127.0.0.1:50051")),
        policy=Path(str(values.get("policy", DEFAULT_POLICY))),
        crl=Path(str(values["crl"])) if values.get("crl") else None,
        crl_state=Path(str(values["crl_state"])) if values.get("crl_state") else None,
        kek_file=Path(str(values["kek_file"])) if values.get("kek_file") else None,
        witness_policy=(
            Path(str(values["witness_policy"])) if values.get("witness_policy") else None
        ),
        trust_domain=str(values.get("trust_domain", "sinergi.dev")),
        metrics_listen=str(values.get("metrics_listen", "")),
        **numbers,  # type: ignore[arg-type]  # types checked by load_config and click
    )
    return config, pki


async def _serve(config: ServerConfig, pki: Path, next_steps: bool, as_json: bool) -> None:
    server = ExchangeServer(config)
    port = await server.start()
    # What startup made (modules, policy, statements, TLS contexts) lives as long as this
    # process. Frozen out of the collector's reach, it is no longer walked by every full
    # collection, which paused every call in flight for 54 to 77 ms, 5 to 10 ms now
    # (docs/performance.md, benchmark 2). Here, not in ExchangeServer: an application that
    # embeds the server owns its own process's collector.
    gc.collect()
    gc.freeze()
    # Every delivery allocates short-lived objects (futures, task steps): a young collection
    # every 20,000 allocations instead of 700 took 10 to 20% off the server's CPU per delivery
    # under fan-out (docs/performance.md, "Fan-out").
    gc.set_threshold(20_000, 10, 10)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = config.listen.rpartition(":")[0]
    if as_json:
        listening = {
            "ok": True,
            "listen": f"{host}:{port}",
            "port": port,
            "metrics_port": server.metrics_port or None,
            "origin": server.origin,
            "halted": server.ledger.halted,
        }
        click.echo(json.dumps(listening))
    elif next_steps:
        witnessing = server.witnessing
        witnesses = (
            f"\nCheckpoints are cosigned by the witnesses of {config.witness_policy}: "
            f"{', '.join(w.url or w.name for w in witnessing.policy.witnesses.values())}."
            if witnessing is not None
            else ""
        )
        click.echo(
            NEXT_STEPS.format(
                listen=f"{host}:{port}",
                origin=server.origin,
                witnesses=witnesses,
                pki=pki,
                db=config.database,
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
    """Create the database, or bring it to the current schema: the same as `db upgrade`.

    \b
    Example:
      sinergi db init --db sqlite:///var/sinergi.db
    """
    _upgrade(db, None, as_json)


@db.command()
@_DB
@click.option(
    "--app-role",
    default=None,
    help="PostgreSQL: create this role if absent and grant it SELECT and INSERT only.",
)
@_JSON
def upgrade(db: str, app_role: str | None, as_json: bool) -> None:
    """Apply pending schema migrations (Alembic), with the ledger's append-only triggers.

    \b
    Example:
      sinergi db upgrade --db postgresql+psycopg://admin@db/sinergi --app-role sinergi_app
    """
    _upgrade(db, app_role, as_json)


def _upgrade(db: str, app_role: str | None, as_json: bool) -> None:
    try:
        before, after = upgrade_database(db)
        if app_role:
            grant_app_role(db, app_role)
    except (LedgerError, ConfigError, SQLAlchemyError) as exc:
        _fail(_reason(exc), as_json)
    message = {"ok": True, "database": db, "from": before, "to": after, "app_role": app_role}
    text = (
        f"database ready: {db} (schema {after})"
        if before == after
        else f"database ready: {db} (schema {before or 'none'} -> {after})"
    )
    if app_role:
        text += f"; role {app_role} may SELECT and INSERT only"
    click.echo(json.dumps(message) if as_json else text)


@db.command()
@click.option(
    "--kek-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key-encryption key file to create (mode 0600) or rotate.",
)
@click.option(
    "--rotate",
    is_flag=True,
    help="Put a new key first (it wraps new data keys); old keys stay for reading.",
)
@_JSON
def kek(kek_file: Path, rotate: bool, as_json: bool) -> None:
    """Create the key-encryption key file for alert bodies at rest, if absent; or rotate it.
    Keep it outside the database and its backups: whoever holds both can read every alert.

    \b
    Example:
      sinergi db kek --kek-file var/sinergi.kek
      sinergi serve --kek-file var/sinergi.kek ...
    """
    try:
        written, current = write_kek_file(kek_file, rotate=rotate)
    except (ConfigError, OSError) as exc:
        _fail(str(exc), as_json)
    verb = ("rotated" if rotate else "created") if written else "kept"
    text = f"{verb} {kek_file}: new bodies are sealed under key {current}"
    click.echo(json.dumps({"ok": True, "written": written, "key_id": current}) if as_json else text)


@db.command()
@_DB
@click.option(
    "--kek-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key-encryption keys: the first seals, every one listed opens "
    "[default: env SINERGI_KEK].",
)
@_JSON
def reseal(db: str, kek_file: Path | None, as_json: bool) -> None:
    """Seal every stored alert and acknowledgement under the first key of the KEK file, and
    rebuild the search index under it: after `db kek --rotate`, so that the old key can be
    removed from the file; also seals rows stored before encryption was turned on. Safe while
    the exchange runs, and to run again if interrupted.

    \b
    Example:
      sinergi db kek --kek-file var/sinergi.kek --rotate   # then restart serve with it
      sinergi db reseal --db sqlite:///var/sinergi.db --kek-file var/sinergi.kek
    """
    try:
        keys = Keyring.configured(kek_file)
        if keys is None:
            raise ConfigError("give the key-encryption keys: --kek-file or SINERGI_KEK")
        database = open_database(db)
        done = reseal_rows(with_keyring(database, keys))
        database.dispose()
    except Internal:  # a body that does not open under any listed key: the detail is in the log
        _fail(_KEYS_IN_USE, as_json)
    except (ConfigError, SQLAlchemyError) as exc:
        _fail(_reason(exc), as_json)
    retired = [k for k in keys.ids[1:] if k not in done.keys_in_use]
    record = {
        "ok": True,
        "alerts": done.alerts,
        "acknowledgements": done.acknowledgements,
        "key_id": keys.current_id,
        "keys_in_use": list(done.keys_in_use),
        "keys_no_longer_used": retired,
    }
    text = (
        f"resealed {done.alerts} alerts and {done.acknowledgements} acknowledgements under "
        f"key {keys.current_id}; keys in use: {', '.join(done.keys_in_use) or 'none'}"
        + (f"; no row needs {', '.join(retired)} any more" if retired else "")
    )
    click.echo(json.dumps(record) if as_json else text)


@db.command()
@_DB
@click.option(
    "--kek-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key-encryption keys the exchange runs with: the first keys the index, every one "
    "listed opens [default: env SINERGI_KEK; neither: bodies in plain, plain SHA-256 keys].",
)
@_JSON
def reindex(db: str, kek_file: Path | None, as_json: bool) -> None:
    """Rebuild the search index of every stored alert, under the first key of the KEK file:
    after an upgrade that indexes more kinds of identifier (organisations, by which related
    alerts are found), so that alerts stored before are found by them too. Safe while the
    exchange runs, and to run again.

    \b
    Example:
      sinergi db reindex --db sqlite:///var/sinergi.db --kek-file var/sinergi.kek
    """
    try:
        keys = Keyring.configured(kek_file)
        database = open_database(db)
        count = reindex_rows(with_keyring(database, keys))
        database.dispose()
    except Internal:  # a body that does not open under any listed key: the detail is in the log
        _fail(_KEYS_IN_USE, as_json)
    except (ConfigError, SQLAlchemyError) as exc:
        _fail(_reason(exc), as_json)
    key_id = keys.current_id if keys is not None else None
    under = f"key {key_id}" if key_id else "plain SHA-256 (no key-encryption key)"
    record = {"ok": True, "alerts": count, "key_id": key_id}
    text = f"rebuilt the search index of {count} alerts under {under}"
    click.echo(json.dumps(record) if as_json else text)


@db.command()
@_DB
@click.option(
    "--pki",
    default="certs/dev",
    show_default=True,
    type=click.Path(path_type=Path),
    help="PKI directory: the ledger key (ledger.key) and the server identity (server/).",
)
@click.option(
    "--kek-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's key-encryption keys, when bodies are encrypted [default: env SINERGI_KEK].",
)
@click.option(
    "--policy",
    default=str(DEFAULT_POLICY),
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file with the [retention] periods. Default: the development policy.",
)
@click.option("--trust-domain", default="sinergi.dev", show_default=True)
@click.option(
    "--older-than",
    type=click.IntRange(0),
    default=None,
    help="Days since an alert stopped being in force, for every category, instead of "
    "the policy's retention periods.",
)
@click.option("--dry-run", is_flag=True, help="List what would be purged; change nothing.")
@_JSON
def purge(
    db: str,
    pki: Path,
    kek_file: Path | None,
    policy: Path,
    trust_domain: str,
    older_than: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove the personal data of alerts past retention (expired or cancelled, and older than
    their category's period); one REDACT ledger entry per alert; the ledger stays verifiable.

    \b
    Example:
      sinergi db purge --db sqlite:///var/sinergi.db --pki certs/dev --dry-run
    """
    try:
        rules = Policy.load(policy)
        database = open_database(db)
        engine = with_keyring(database, Keyring.configured(kek_file))
        override = timedelta(days=older_than) if older_than is not None else None
        found = candidates(engine, rules, datetime.now(UTC), override)
        if not dry_run and found:
            identity = load_identity(pki / "server")
            key_name = f"{trust_domain}/ledger"
            with engine.connect() as connection:
                origin = ledger_origin(connection, key_name) or key_name
            # The server's record of what it signed: a purge signs checkpoints too, and must
            # refuse to sign over a rolled-back ledger just as the server does.
            history = SignedHistory(pki / SIGNED_HISTORY_FILE)
            signer = load_signer(pki / "ledger.key", key_name)
            writer = LedgerWriter(engine, signer, origin, history=history)
            actor = Actor(str(identity.spiffe_id), identity.fingerprint)
            try:
                days = str(older_than) if older_than is not None else "policy"
                purge_threads(engine, writer, actor, found, days)
            finally:
                writer.close()
                history.close()
        database.dispose()
    except Internal:  # a sealed body that does not open: the detail is in the log
        _fail("stored alerts cannot be decrypted: give the server's --kek-file", as_json)
    except (ConfigError, CertsError, LedgerError, OSError, SQLAlchemyError) as exc:
        _fail(_reason(exc), as_json)
    listed = [
        {
            "alert": c.thread_id,
            "category": c.category,
            "ended": c.ended.isoformat(timespec="seconds"),
        }
        for c in found
    ]
    verb = "would purge" if dry_run else "purged"
    lines = [f"  {a['alert']} {a['category']} ended {a['ended']}" for a in listed]
    text = "\n".join([f"{verb} {len(found)} alerts", *lines])
    click.echo(json.dumps({"ok": True, "dry_run": dry_run, "alerts": listed}) if as_json else text)
