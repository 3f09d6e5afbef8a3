"""`sinergi ledger`: verify, export, checkpoint, prove, consistency and trust.

Each command reads the database (`--db`, the default), or asks the exchange (`--server` with an
identity: auditors for entries and inclusion proofs, any member for checkpoints and consistency),
and `verify` also reads an export file (`--file`). With a witness policy, `verify` and
`checkpoint` say who cosigned the newest checkpoint and require the policy's quorum, and
`verify` holds the ledger to what each witness cosigned; `trust` accepts a ledger made anew.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Connection

from clients._cli._common import (
    emit,
    fail,
    handle_errors,
    hashes_verified,
    identity_option,
    json_option,
    ledger_intact,
    ledger_key_option,
    proof_verified,
    server_option,
    witness_policy_option,
    witnessing_line,
)
from clients._cli._language import Group
from clients._cli._proof import verify_proof
from clients._cli._source import Source, db_option, source_options, witnessed_checkpoint
from clients._cli._witnessed import (
    Asked,
    ask_witnesses,
    blamed,
    cosigners_of,
    origin_of,
    trusted_notes,
)
from clients._client import ExchangeClient
from clients._errors import UsageError, VerificationFailed
from clients._i18n import L_, N_, Text, _, joined, ngettext, translated
from clients._witness import QuorumFailed
from ledger import (
    Checkpoint,
    LedgerError,
    Report,
    VerificationError,
    Verifier,
    WitnessPolicy,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_ledger,
)
from ledger.store import (
    checkpoint_at,
    cosigned_checkpoints,
    entry_count,
    first_checkpoint_after,
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
        raise VerificationFailed(L_("{what} does not verify: {why}", what=what, why=exc)) from None


def _checkpoint_json(cp: Checkpoint, note: bytes) -> dict[str, Any]:
    return {"origin": cp.origin, "size": cp.size, "root": cp.root.hex(), "note": note.decode()}


@click.group(cls=Group)
def ledger() -> None:
    """Verify, export and prove the audit ledger."""


@ledger.command()
@source_options(file_help=N_("Verify an export file instead of the database."))
@click.option(
    "--checkpoint",
    "trusted",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A signed checkpoint kept outside; the ledger must contain it (repeatable).",
)
@click.option(
    "--witness-grace",
    "grace",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="With --db and a witness policy: seconds for which the newest checkpoints may still "
    "await their quorum (witnesses cosign off the publish path, within a second).",
)
@json_option
@handle_errors
def verify(source: Source, trusted: tuple[Path, ...], grace: float, as_json: bool) -> None:
    """Verify every entry, link, Merkle root and checkpoint signature. Exit 1 if broken.

    With --db it also checks that the append-only triggers are in place. With --server (an
    auditor identity) it verifies the entries up to the exchange's newest checkpoint, and
    witnesses that checkpoint. It then says who cosigned the newest checkpoint.

    With a witness policy (--witness-policy, or witness-policy beside --identity) the newest
    checkpoint must have the policy's quorum (from a live database: the newest committed more
    than --witness-grace seconds ago, or its witnesses, asked, cosigned past it), and every
    witness of the policy with a URL is
    asked for the latest checkpoint of the ledger it cosigned (over mutual TLS as --identity):
    the ledger must contain each one, so a deleted tail, a restored backup or a rewrite fails,
    naming the witness. A witness that cannot be reached fails the command too.

    \b
    Examples:
      sinergi ledger verify --db sqlite:///var/sinergi.db
      sinergi ledger verify --file ledger.jsonl --checkpoint kept.note
      sinergi ledger verify --server 127.0.0.1:50051 --identity certs/dev/internal-affairs
      sinergi ledger verify --db sqlite:///var/sinergi.db \\
        --identity certs/dev/internal-affairs --witness-policy certs/dev/witness-policy
    """
    verifier = source.verifier()
    policy = source.policy()
    kept = [path.read_bytes() for path in trusted]
    missing: list[str] = []
    asked: list[Asked] = []
    newest: bytes | None = None  # the checkpoint whose cosigners are reported
    show = sys.stderr.isatty() and not as_json
    try:
        if source.is_database:
            with source.database() as connection:
                missing = missing_triggers(connection)
                total = entry_count(connection)
                stored = checkpoint_at(connection, None)
            # Asked before the verification's snapshot is taken: a witness cosigns committed
            # checkpoints only, so the snapshot holds whatever it cosigned by then.
            asked = _ask(policy, source, stored[1] if stored else None, verifier)
            trusted_all = [*kept, *trusted_notes(asked)]
            with _progress(total, show) as progress:
                report = verify_database(
                    source.db, [verifier], trusted=trusted_all, progress=progress
                )
        elif source.server is not None:
            report, asked, newest = _verify_served(source, verifier, policy, kept, show)
        else:
            with source.open() as whole, _progress(whole.size(), show) as progress:
                rows, checkpoints = whole.entries(), whole.checkpoints()
                file_newest = max(checkpoints) if checkpoints else None
                asked = _ask(policy, source, file_newest[1] if file_newest else None, verifier)
                # An export is a snapshot: what a witness cosigned after it cannot be in it.
                asked = [_ahead_of(a, file_newest[0] if file_newest else 0) for a in asked]
                trusted_all = [*kept, *trusted_notes(asked)]
                report = verify_ledger(
                    rows, checkpoints, [verifier], trusted=trusted_all, progress=progress
                )
    except VerificationError as exc:
        _broken(exc, asked, as_json)
    if missing:
        triggers = ", ".join(missing)
        fail(
            as_json,
            L_("ledger BROKEN: append-only triggers missing: {triggers}", triggers=triggers),
            1,
            {"missing_triggers": missing},
        )
    pending = (
        _awaiting_quorum(source, report, policy, verifier, asked, grace)
        if source.is_database
        else None
    )
    _verified(report, newest or report.latest_note, policy, verifier, asked, as_json, pending)


def _awaiting_quorum(
    source: Source,
    report: Report,
    policy: WitnessPolicy | None,
    verifier: Verifier,
    asked: list[Asked],
    grace: float,
) -> Text | None:
    """Why the newest stored checkpoint may lack its quorum yet, or None when it may not: the
    witnesses asked cosigned trees that cover it (so they saw it), or every checkpoint after the
    newest one with its quorum was committed within ``grace`` seconds (witnesses cosign off the
    publish path: a live ledger's newest checkpoints are a moment from their quorum)."""
    latest, note = report.latest, report.latest_note
    if policy is None or latest is None or note is None:
        return None
    covering = {
        a.name
        for a in asked
        if a.checkpoint is not None and a.problem is None and a.checkpoint.size >= latest.size
    }
    if policy.satisfied(covering):
        return L_(
            "the witnesses asked cosigned past it: {names}", names=", ".join(sorted(covering))
        )
    with source.database() as connection:
        witnessed = 0
        for size, found in [(latest.size, note), *cosigned_checkpoints(connection)]:
            if policy.satisfied(policy.cosigners(found)):
                witnessed = size
                break
        first = first_checkpoint_after(connection, witnessed)
    if first is None:
        return None
    age = (datetime.now(UTC) - first[1]).total_seconds()
    if age > grace:
        return None
    return L_(
        "entries {first}..{last} await their quorum, the oldest committed {age:.1f} s ago "
        "(--witness-grace {grace:g} s)",
        first=witnessed + 1,
        last=latest.size,
        age=age,
        grace=grace,
    )


def _verify_served(
    source: Source,
    verifier: Verifier,
    policy: WitnessPolicy | None,
    kept: list[bytes],
    show: bool,
) -> tuple[Report, list[Asked], bytes]:
    """Verify the exchange's ledger up to its newest checkpoint (with a policy, the newest with
    its quorum), or further, to the newest a witness cosigned: a witness is often ahead of the
    quorum, and its checkpoint, signed by the ledger's key, covers the entries up to it."""
    with source.client() as client:
        cp, note = witnessed_checkpoint(client)
        asked = _ask(policy, source, note, verifier)
        beyond = {
            a.checkpoint.size: a.note
            for a in asked
            if a.checkpoint is not None and a.note is not None and a.checkpoint.size > cp.size
        }
        size = max([cp.size, *beyond])
        checkpoints = [(cp.size, note), *sorted(beyond.items())]
        with _progress(size, show) as progress:
            report = verify_ledger(
                client.entries(1, size) if size else iter(()),
                checkpoints,
                [verifier],
                trusted=[*kept, *trusted_notes(asked)],
                progress=progress,
            )
    return report, asked, note


def _ahead_of(asked: Asked, size: int) -> Asked:
    """``asked`` without its checkpoint when it is larger than the export's ``size``: not
    checked, and said so."""
    if asked.checkpoint is None or asked.checkpoint.size <= size:
        return asked
    return replace(asked, note=None, ahead=size)


def _ask(
    policy: WitnessPolicy | None, source: Source, newest: bytes | None, verifier: Verifier
) -> list[Asked]:
    """With a policy, what its witnesses cosigned of the ledger whose newest checkpoint is
    ``newest`` (nothing to ask about without one: the verification says why)."""
    origin = origin_of(newest, verifier)
    if policy is None or origin is None:
        return []
    return ask_witnesses(policy, source.identity, origin, verifier)


def _broken(error: VerificationError, asked: list[Asked], as_json: bool) -> None:
    """Fail with the verification's reason, naming the witnesses whose checkpoint it failed."""
    culprits = blamed(error, asked)
    message = L_("ledger BROKEN: {error}", error=error)
    if culprits:
        named = ", ".join(f"{a.name} (size {a.checkpoint.size})" for a in culprits if a.checkpoint)
        message = L_(
            "ledger BROKEN: {error}; that checkpoint was cosigned by witness {named}",
            error=error,
            named=named,
        )
    witnesses = [{**a.json(), "consistent": False if a in culprits else None} for a in asked]
    fail(as_json, message, 1, {"seq": error.seq, "witnesses": witnesses})


def _verified(
    report: Report,
    newest: bytes | None,
    policy: WitnessPolicy | None,
    verifier: Verifier,
    asked: list[Asked],
    as_json: bool,
    pending: Text | None = None,
) -> None:
    """Report a ledger that verified, and who cosigned its newest checkpoint; fail when a
    policy's quorum is not met (unless ``pending`` says why it may not be yet) or a witness
    could not be used."""
    checked = [
        replace(a, consistent=True)
        if a.checkpoint is not None and a.problem is None and a.ahead is None
        else a
        for a in asked
    ]
    result: dict[str, Any] = {
        "ok": True,
        "entries": report.entries,
        "root": report.root.hex(),
        "checkpoints": report.checkpoints,
        "checkpoint_size": report.latest.size if report.latest else 0,
    }
    checkpoints = ngettext(
        "{n} signed checkpoint", "{n} signed checkpoints", report.checkpoints
    ).format(n=report.checkpoints)
    lines = [
        ngettext(
            "{verdict}: {n} entry, {checkpoints}, root {root}",
            "{verdict}: {n} entries, {checkpoints}, root {root}",
            report.entries,
        ).format(
            verdict=ledger_intact(),
            n=report.entries,
            checkpoints=checkpoints,
            root=report.root.hex(),
        )
    ]
    problems = []
    if newest is not None:
        cosigners = cosigners_of(newest, verifier, policy)
        result.update(cosigners.json())
        lines.append(f"  {cosigners.line()}")
        if cosigners.met is False and pending is not None:
            lines.append(
                _("  not yet witnessed, within reason: {why}").format(why=translated(pending))
            )
            result["awaiting_quorum"] = pending
        elif cosigners.met is False:
            problems.append(cosigners.lacking())
    if policy is not None:
        result["witnesses"] = [a.json() for a in checked]
        lines += [f"  {a.line()}" for a in checked]
    problems += [a.problem for a in checked if a.problem is not None]
    if problems:
        if not as_json:
            click.echo("\n".join(lines), err=True)
        fail(
            as_json,
            L_("ledger NOT witnessed: {problems}", problems=joined(problems)),
            1,
            {**result, "ok": False},
        )
    emit(as_json, result, "\n".join(lines))


@contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal, nothing in a pipe (--json output stays one object)."""
    stream = sys.stderr if show else io.StringIO()
    with click.progressbar(length=total, label=_("verifying"), file=stream) as bar:

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
    human = _("exported {entries} entries and {checkpoints} checkpoints to {out}")
    emit(as_json, result, human.format(entries=entries, checkpoints=checkpoints, out=out))


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
    """Print the newest signed checkpoint (verified; witnessed with --server), exactly as
    signed, and on stderr who cosigned it.

    With a witness policy (--witness-policy, or witness-policy beside --identity) it is the
    newest checkpoint with the policy's quorum, and exit 1 if there is none: the one to keep.

    \b
    Example:
      sinergi ledger checkpoint --server 127.0.0.1:50051 --identity certs/dev/police --out kept.note
    """
    verifier = source.verifier()
    policy = source.policy()
    if source.server is not None:
        with source.client() as client:
            cp, note = witnessed_checkpoint(client)
    else:
        with source.database() as connection:
            found = checkpoint_at(connection, None)
            if found is not None and policy is not None:
                found = _with_quorum(connection, found, verifier, policy)
        if found is None:
            raise UsageError(L_("the ledger has no checkpoint yet"))
        note = found[1]
        cp = _open(note, verifier, L_("the stored checkpoint"))
    cosigners = cosigners_of(note, verifier, policy)
    if out is not None:
        out.write_bytes(note)
    if not as_json:
        click.echo(cosigners.line(), err=True)
    result = {"ok": True, **_checkpoint_json(cp, note), **cosigners.json()}
    emit(as_json, result, note.decode().rstrip("\n"))


def _with_quorum(
    connection: Connection, newest: tuple[int, bytes], verifier: Verifier, policy: WitnessPolicy
) -> tuple[int, bytes]:
    """The newest stored checkpoint with the policy's quorum; :class:`QuorumFailed` naming
    who cosigned the newest one when none has."""
    for found in [newest, *cosigned_checkpoints(connection)]:
        try:
            if policy.satisfied(policy.cosigners(found[1])):
                return found
        except LedgerError as exc:
            raise VerificationFailed(
                L_("stored checkpoint {size}: {why}", size=found[0], why=exc)
            ) from None
    lacking = cosigners_of(newest[1], verifier, policy).lacking()
    raise QuorumFailed(L_("no stored checkpoint has its quorum: {lacking}", lacking=lacking))


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
    included = _("entry {seq} is included in the signed checkpoint of size {size} {verified}")
    human = included.format(seq=seq, size=cp.size, verified=proof_verified())
    emit(as_json, result, f"{human}\n  {entry.decode()}")


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
        raise UsageError(L_("OLD must not be larger than NEW"))
    verifier = source.verifier()
    if source.server is not None:
        if old_note is None:
            raise UsageError(
                L_("with --server, pass your kept checkpoint of size OLD (--checkpoint)")
            )
        with source.client() as client:
            old_cp = _open(old_note.read_bytes(), verifier, str(old_note))
            new_cp, proof = client.consistency(old, new)
    else:
        with source.database() as connection:
            notes = [checkpoint_at(connection, size) for size in (old, new)]
            if None in notes:
                missing = [s for s, n in zip((old, new), notes, strict=True) if n is None]
                raise UsageError(L_("no stored checkpoint of size {size}", size=missing[0]))
            proof = prove_consistency(connection, old, new) if old < new else []
        old_cp, new_cp = (
            _open(n[1], verifier, L_("checkpoint {size}", size=n[0])) for n in notes if n
        )
    if old_cp.size != old or new_cp.size != new:
        raise VerificationFailed(
            L_(
                "checkpoints of sizes {found_old}, {found_new}, not {old}, {new}",
                found_old=old_cp.size,
                found_new=new_cp.size,
                old=old,
                new=new,
            )
        )
    try:
        verify_consistency(old, new, old_cp.root, new_cp.root, proof)
    except LedgerError as exc:
        fail(as_json, L_("NOT consistent: {why}", why=exc), 1)
    result = {
        "ok": True,
        "old": old,
        "new": new,
        "proof": [h.hex() for h in proof],
        "old_root": old_cp.root.hex(),
        "new_root": new_cp.root.hex(),
    }
    human = _("checkpoint {old} is a prefix of checkpoint {new} {verified}").format(
        old=old, new=new, verified=hashes_verified(len(proof))
    )
    emit(as_json, result, human)


@ledger.command()
@click.argument("origin")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@json_option
@handle_errors
def trust(
    origin: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    as_json: bool,
) -> None:
    """Trust the exchange's ledger ORIGIN after it was made anew on purpose (a deleted
    development database): its newest checkpoint, verified (with a witness policy, with its
    quorum) and of origin ORIGIN, becomes the kept checkpoint of the ledger key in the
    identity's witness.json, replacing the ledger witnessed before, which is kept there as
    evidence. If nobody replaced the exchange's ledger on purpose, do not: report it to
    internal affairs.

    \b
    Example:
      sinergi ledger trust sinergi.dev/ledger/20261207-3f9a01c2 --identity certs/dev/police \\
        --server 127.0.0.1:50051
    """
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        trusted = client.trust(origin)
    cp, replaced = trusted.newest.checkpoint, trusted.replaced
    result: dict[str, Any] = {"ok": True, **_checkpoint_json(cp, trusted.newest.note)}
    lines = [
        _("trusted ledger {origin}: size {size}, root {root}").format(
            origin=cp.origin, size=cp.size, root=cp.root.hex()
        )
    ]
    witnessing = trusted.newest.witnessing
    if witnessing is not None:
        result["cosigners"] = list(witnessing.cosigners)
        lines.append(f"  {witnessing_line(witnessing)}")
    if replaced is not None:
        old = replaced.checkpoint
        result["replaced"] = {"origin": old.origin, "size": old.size, "root": old.root.hex()}
        lines.append(
            _(
                "  replaces ledger {origin} (size {size}, root {root}), kept in {path} as evidence"
            ).format(
                origin=old.origin, size=old.size, root=old.root.hex(), path=client.witness.path
            )
        )
    emit(as_json, result, "\n".join(lines))


ledger.add_command(verify_proof)
