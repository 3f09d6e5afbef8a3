"""`sinergi ledger`: verify, export, checkpoint, prove and consistency.

Each command reads the database (`--db`, the default), or asks the exchange (`--server` with an
identity: auditors for entries and inclusion proofs, any member for checkpoints and consistency),
and `verify` also reads an export file (`--file`).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from sqlalchemy import Connection

from clients._cli._common import db_option, emit, fail, from_file, handle_errors, json_option
from clients._client import ExchangeClient, load_verifier
from clients._errors import UsageError, VerificationFailed
from ledger import (
    Checkpoint,
    LedgerError,
    VerificationError,
    Verifier,
    export_checkpoints,
    export_entries,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_ledger,
)
from ledger.store import (
    checkpoint_at,
    create_engine,
    entry_count,
    missing_triggers,
    prove,
    prove_consistency,
    verify_database,
    write_export,
)

P = ParamSpec("P")
R = TypeVar("R")
DEV_LEDGER_KEY = "certs/dev/ledger.vkey"


def _vkey_option(fn: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--ledger-key",
        envvar="SINERGI_LEDGER_KEY",
        default=from_file("ledger_key", DEV_LEDGER_KEY),
        show_default=DEV_LEDGER_KEY,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The ledger's verifier key (ledger.vkey) [env SINERGI_LEDGER_KEY; config file: "
        "ledger_key].",
    )(fn)


def _server_options(fn: Callable[P, R]) -> Callable[P, R]:
    fn = click.option(
        "--identity",
        envvar="SINERGI_IDENTITY",
        default=from_file("identity"),
        type=click.Path(file_okay=False, path_type=str),
        help="With --server: your identity directory [env SINERGI_IDENTITY; config file: "
        "identity].",
    )(fn)
    return click.option(
        "--server",
        default=None,
        help="Ask this exchange instead of reading the database (needs --identity).",
    )(fn)


@contextmanager
def _database(url: str) -> Iterator[Connection]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _client(server: str, identity: str | None, ledger_key: Path) -> ExchangeClient:
    if not identity:
        raise UsageError("--server needs --identity (or SINERGI_IDENTITY)")
    return ExchangeClient(identity, server, ledger_key=ledger_key)


def _open(note: bytes, verifier: Verifier, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, [verifier])
    except LedgerError as exc:
        raise VerificationFailed(f"{what} does not verify: {exc}") from None


def _checkpoint_json(cp: Checkpoint, note: bytes) -> dict[str, Any]:
    return {"origin": cp.origin, "size": cp.size, "root": cp.root.hex(), "note": note.decode()}


@click.group()
def ledger() -> None:
    """Verify, export and prove the audit ledger."""


@ledger.command()
@db_option
@click.option(
    "--file",
    "export_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Verify an export file instead of the database.",
)
@_server_options
@_vkey_option
@click.option(
    "--checkpoint",
    "trusted",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A signed checkpoint kept outside; the ledger must contain it (repeatable).",
)
@json_option
@handle_errors
def verify(
    db: str,
    export_file: Path | None,
    server: str | None,
    identity: str | None,
    ledger_key: Path,
    trusted: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Verify every entry, link, Merkle root and checkpoint signature. Exit 1 if broken.

    With --db it also checks that the append-only triggers are in place. With --server (an
    auditor identity) it verifies the entries up to the exchange's newest checkpoint, and
    witnesses that checkpoint.

    \b
    Examples:
      sinergi ledger verify --db sqlite:///var/sinergi.db
      sinergi ledger verify --file ledger.jsonl --checkpoint kept.note
      sinergi ledger verify --server 127.0.0.1:50051 --identity certs/dev/internal-affairs
    """
    verifier = load_verifier(ledger_key)
    kept = [path.read_bytes() for path in trusted]
    missing: list[str] = []
    show = sys.stderr.isatty() and not as_json
    try:
        if export_file is not None:
            total = sum(1 for _ in export_entries(export_file))
            with _progress(total, show) as progress:
                report = verify_ledger(export_entries(export_file),
                                       export_checkpoints(export_file), [verifier],
                                       trusted=kept, progress=progress)  # fmt: skip
        elif server is not None:
            with _client(server, identity, ledger_key) as client:
                cp = client.checkpoint()
                note = _kept_note(client, cp)
                with _progress(cp.size, show) as progress:
                    report = verify_ledger(client.entries(1, cp.size), [(cp.size, note)],
                                           [verifier], trusted=kept, progress=progress)  # fmt: skip
        else:
            with _database(db) as connection:
                missing = missing_triggers(connection)
                total = entry_count(connection)
            with _progress(total, show) as progress:
                report = verify_database(db, [verifier], trusted=kept, progress=progress)
    except VerificationError as exc:
        fail(as_json, f"ledger BROKEN: {exc}", 1, {"seq": exc.seq})
    if missing:
        fail(as_json, f"ledger BROKEN: append-only triggers missing: {', '.join(missing)}", 1,
             {"missing_triggers": missing})  # fmt: skip
    latest_cp = report.latest
    emit(
        as_json,
        {
            "ok": True,
            "entries": report.entries,
            "root": report.root.hex(),
            "checkpoints": report.checkpoints,
            "checkpoint_size": latest_cp.size if latest_cp else 0,
        },
        f"ledger intact: {report.entries} entries, {report.checkpoints} signed "
        f"checkpoint{'' if report.checkpoints == 1 else 's'}, "
        f"root {report.root.hex()}",
    )


def _kept_note(client: ExchangeClient, cp: Checkpoint) -> bytes:
    """The signed note of ``cp`` as the witness kept it."""
    notes = client.witness.notes()
    note = notes.get(cp.origin)
    if note is None:
        raise VerificationFailed("the exchange's checkpoint was not kept by the witness")
    return note


@contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal, nothing in a pipe (--json output stays one object)."""
    stream = sys.stderr if show else io.StringIO()
    with click.progressbar(length=total, label="verifying", file=stream) as bar:

        def update(done: int) -> None:
            if done - bar.pos >= 1000 or done == total:
                bar.update(done - bar.pos)

        yield update


@ledger.command()
@db_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the export (JSON Lines).")  # fmt: skip
@json_option
@handle_errors
def export(db: str, out: Path, as_json: bool) -> None:
    """Export the ledger: one canonical entry per line, with its signed checkpoints.

    \b
    Example:
      sinergi ledger export --db sqlite:///var/sinergi.db --out ledger.jsonl
    """
    with _database(db) as connection, open(out, "xb") as target:
        entries, checkpoints = write_export(connection, target)
    emit(as_json, {"ok": True, "file": str(out), "entries": entries, "checkpoints": checkpoints},
         f"exported {entries} entries and {checkpoints} checkpoints to {out}")  # fmt: skip


@ledger.command()
@db_option
@_server_options
@_vkey_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the signed note to this file, to keep outside.")  # fmt: skip
@json_option
@handle_errors
def checkpoint(
    db: str, server: str | None, identity: str | None, ledger_key: Path, out: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Print the newest signed checkpoint (verified; witnessed with --server).

    \b
    Example:
      sinergi ledger checkpoint --server 127.0.0.1:50051 --identity certs/dev/police --out kept.note
    """
    verifier = load_verifier(ledger_key)
    if server is not None:
        with _client(server, identity, ledger_key) as client:
            cp = client.checkpoint()
            note = _kept_note(client, cp)
    else:
        with _database(db) as connection:
            found = checkpoint_at(connection, None)
        if found is None:
            raise UsageError("the ledger has no checkpoint yet")
        note = found[1]
        cp = _open(note, verifier, "the stored checkpoint")
    if out is not None:
        out.write_bytes(note)
    emit(as_json, {"ok": True, **_checkpoint_json(cp, note)}, note.decode().rstrip("\n"))


@ledger.command(name="prove")
@click.argument("seq", type=click.IntRange(min=1))
@db_option
@_server_options
@_vkey_option
@json_option
@handle_errors
def prove_command(
    seq: int, db: str, server: str | None, identity: str | None, ledger_key: Path, as_json: bool
) -> None:
    """Prove that entry SEQ is in the newest checkpoint (RFC 6962 inclusion proof), verified.

    \b
    Example:
      sinergi ledger prove 42 --db sqlite:///var/sinergi.db
    """
    verifier = load_verifier(ledger_key)
    proof: list[bytes] | None = None
    if server is not None:
        with _client(server, identity, ledger_key) as client:
            verified = client.inclusion(seq)
    else:
        with _database(db) as connection:
            try:
                receipt = prove(connection, seq)
            except LedgerError as exc:
                raise UsageError(str(exc)) from None
        try:
            verified = receipt.verify([verifier])
        except LedgerError as exc:
            raise VerificationFailed(str(exc)) from None
        proof = list(receipt.inclusion_proof)
    entry, cp = verified.entry.encode(), verified.checkpoint
    result: dict[str, Any] = {"ok": True, "seq": seq, "entry": entry.decode(),
                              "entry_hash": leaf_hash(entry).hex(), "tree_size": cp.size,
                              "root": cp.root.hex()}  # fmt: skip
    if proof is not None:
        result["proof"] = [h.hex() for h in proof]
    emit(as_json, result,
         f"entry {seq} is included in the signed checkpoint of size {cp.size} (proof verified)\n"
         f"  {entry.decode()}")  # fmt: skip


@ledger.command()
@click.argument("old", type=click.IntRange(min=1))
@click.argument("new", type=click.IntRange(min=1))
@db_option
@_server_options
@_vkey_option
@click.option("--checkpoint", "old_note", type=click.Path(dir_okay=False, exists=True,
              path_type=Path), help="With --server: your kept checkpoint of size OLD.")  # fmt: skip
@json_option
@handle_errors
def consistency(
    old: int, new: int, db: str, server: str | None, identity: str | None, ledger_key: Path,
    old_note: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Prove that the checkpoint of size OLD is a prefix of the one of size NEW, verified.

    \b
    Example:
      sinergi ledger consistency 10 250 --db sqlite:///var/sinergi.db
    """
    if old > new:
        raise UsageError("OLD must not be larger than NEW")
    verifier = load_verifier(ledger_key)
    if server is not None:
        if old_note is None:
            raise UsageError("with --server, pass your kept checkpoint of size OLD (--checkpoint)")
        with _client(server, identity, ledger_key) as client:
            old_cp = _open(old_note.read_bytes(), verifier, str(old_note))
            new_cp, proof = client.consistency(old, new)
    else:
        with _database(db) as connection:
            notes = [checkpoint_at(connection, size) for size in (old, new)]
            if None in notes:
                missing = [s for s, n in zip((old, new), notes, strict=True) if n is None]
                raise UsageError(f"no stored checkpoint of size {missing[0]}")
            proof = prove_consistency(connection, old, new) if old < new else []
        old_cp, new_cp = (_open(n[1], verifier, f"checkpoint {n[0]}") for n in notes if n)
    if old_cp.size != old or new_cp.size != new:
        raise VerificationFailed(
            f"checkpoints of sizes {old_cp.size}, {new_cp.size}, not {old}, {new}"
        )
    try:
        verify_consistency(old, new, old_cp.root, new_cp.root, proof)
    except LedgerError as exc:
        fail(as_json, f"NOT consistent: {exc}", 1)
    result = {"ok": True, "old": old, "new": new, "proof": [h.hex() for h in proof],
              "old_root": old_cp.root.hex(), "new_root": new_cp.root.hex()}  # fmt: skip
    hashes = "1 hash" if len(proof) == 1 else f"{len(proof)} hashes"
    human = f"checkpoint {old} is a prefix of checkpoint {new} ({hashes} verified)"
    emit(as_json, result, human)
