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
from typing import Any

import click

from clients._cli._common import emit, fail, handle_errors, json_option
from clients._cli._source import Source, db_option, source_options, witnessed_checkpoint
from clients._errors import UsageError, VerificationFailed
from ledger import (
    Checkpoint,
    LedgerError,
    VerificationError,
    Verifier,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_ledger,
)
from ledger.store import (
    checkpoint_at,
    entry_count,
    missing_triggers,
    prove,
    prove_consistency,
    verify_database,
    write_export,
)


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
@source_options(file_help="Verify an export file instead of the database.")
@click.option(
    "--checkpoint",
    "trusted",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A signed checkpoint kept outside; the ledger must contain it (repeatable).",
)
@json_option
@handle_errors
def verify(source: Source, trusted: tuple[Path, ...], as_json: bool) -> None:
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
    verifier = source.verifier()
    kept = [path.read_bytes() for path in trusted]
    missing: list[str] = []
    show = sys.stderr.isatty() and not as_json
    try:
        if source.is_database:
            with source.database() as connection:
                missing = missing_triggers(connection)
                total = entry_count(connection)
            with _progress(total, show) as progress:
                report = verify_database(source.db, [verifier], trusted=kept, progress=progress)
        else:
            with source.open() as whole, _progress(whole.size(), show) as progress:
                rows, checkpoints = whole.entries(), whole.checkpoints()
                report = verify_ledger(
                    rows, checkpoints, [verifier], trusted=kept, progress=progress
                )
    except VerificationError as exc:
        fail(as_json, f"ledger BROKEN: {exc}", 1, {"seq": exc.seq})
    if missing:
        triggers = ", ".join(missing)
        fail(
            as_json,
            f"ledger BROKEN: append-only triggers missing: {triggers}",
            1,
            {"missing_triggers": missing},
        )
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
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the export (JSON Lines).",
)
@json_option
@handle_errors
def export(db: str, out: Path, as_json: bool) -> None:
    """Export the ledger: one canonical entry per line, with its signed checkpoints.

    \b
    Example:
      sinergi ledger export --db sqlite:///var/sinergi.db --out ledger.jsonl
    """
    with Source(db).database() as connection, open(out, "xb") as target:
        entries, checkpoints = write_export(connection, target)
    result = {"ok": True, "file": str(out), "entries": entries, "checkpoints": checkpoints}
    emit(as_json, result, f"exported {entries} entries and {checkpoints} checkpoints to {out}")


@ledger.command()
@source_options()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the signed note to this file, to keep outside.",
)
@json_option
@handle_errors
def checkpoint(source: Source, out: Path | None, as_json: bool) -> None:
    """Print the newest signed checkpoint (verified; witnessed with --server).

    \b
    Example:
      sinergi ledger checkpoint --server 127.0.0.1:50051 --identity certs/dev/police --out kept.note
    """
    verifier = source.verifier()
    if source.server is not None:
        with source.client() as client:
            cp, note = witnessed_checkpoint(client)
    else:
        with source.database() as connection:
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
@source_options()
@json_option
@handle_errors
def prove_command(seq: int, source: Source, as_json: bool) -> None:
    """Prove that entry SEQ is in the newest checkpoint (RFC 6962 inclusion proof), verified.

    \b
    Example:
      sinergi ledger prove 42 --db sqlite:///var/sinergi.db
    """
    verifier = source.verifier()
    proof: list[bytes] | None = None
    if source.server is not None:
        with source.client() as client:
            verified = client.inclusion(seq)
    else:
        with source.database() as connection:
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
    result: dict[str, Any] = {
        "ok": True,
        "seq": seq,
        "entry": entry.decode(),
        "entry_hash": leaf_hash(entry).hex(),
        "tree_size": cp.size,
        "root": cp.root.hex(),
    }
    if proof is not None:
        result["proof"] = [h.hex() for h in proof]
    included = f"entry {seq} is included in the signed checkpoint of size {cp.size}"
    emit(as_json, result, f"{included} (proof verified)\n  {entry.decode()}")


@ledger.command()
@click.argument("old", type=click.IntRange(min=1))
@click.argument("new", type=click.IntRange(min=1))
@source_options()
@click.option(
    "--checkpoint",
    "old_note",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --server: your kept checkpoint of size OLD.",
)
@json_option
@handle_errors
def consistency(old: int, new: int, source: Source, old_note: Path | None, as_json: bool) -> None:
    """Prove that the checkpoint of size OLD is a prefix of the one of size NEW, verified.

    \b
    Example:
      sinergi ledger consistency 10 250 --db sqlite:///var/sinergi.db
    """
    if old > new:
        raise UsageError("OLD must not be larger than NEW")
    verifier = source.verifier()
    if source.server is not None:
        if old_note is None:
            raise UsageError("with --server, pass your kept checkpoint of size OLD (--checkpoint)")
        with source.client() as client:
            old_cp = _open(old_note.read_bytes(), verifier, str(old_note))
            new_cp, proof = client.consistency(old, new)
    else:
        with source.database() as connection:
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
    result = {
        "ok": True,
        "old": old,
        "new": new,
        "proof": [h.hex() for h in proof],
        "old_root": old_cp.root.hex(),
        "new_root": new_cp.root.hex(),
    }
    hashes = "1 hash" if len(proof) == 1 else f"{len(proof)} hashes"
    human = f"checkpoint {old} is a prefix of checkpoint {new} ({hashes} verified)"
    emit(as_json, result, human)
