"""`sinergi witness`: run a witness (`init` and `serve`, the witness package's commands, loaded
by name: clients never import it), and ask the witnesses of a policy how they stand (`status`).

`status` is the operator's view of the alarm (docs/witness.md, section 3): for each witness,
the newest checkpoint of the exchange's ledger it cosigned, how far it trails the exchange's
newest, whether it is consistent with the ledger, and whether it refused anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from certs import Identity, load_identity
from clients._cli._common import (
    LazyGroup,
    emit,
    fail,
    handle_errors,
    identity_option,
    json_option,
    ledger_key_option,
    server_option,
    witness_policy_option,
)
from clients._cli._source import Source
from clients._cli._witnessed import cosigners_of
from clients._client import (
    ExchangeClient,
    find_ledger_key,
    find_witness_policy,
    load_policy,
    load_verifier,
)
from clients._errors import Refused, UsageError
from clients._i18n import L_, LN_, Text, _, joined, ngettext
from clients._witness_api import (
    WitnessLied,
    WitnessUnreachable,
    latest_cosigned,
    tls_context,
)
from clients._witness_api import (
    status as witness_status,
)
from ledger import (
    EMPTY_ROOT,
    Checkpoint,
    LedgerError,
    Verifier,
    WitnessPolicy,
    open_checkpoint,
    verify_consistency,
)
from ledger.store import checkpoint_at, prove_consistency

#: Proves that the smaller of two sizes is a prefix of the larger (RFC 9162 consistency):
#: raises with the reason when it is not, or the ledger cannot show it.
Connects = Callable[[Checkpoint, Checkpoint], None]


@click.group(cls=LazyGroup, lazy={"init": "witness_init", "serve": "witness_serve"})
def witness() -> None:
    """Witnesses of the ledger (C2SP tlog-witness): run one (init, serve), and ask the
    witnesses of a policy how they stand (status). A witness cosigns a checkpoint only if it is
    consistent with the last one it cosigned, and raises the alarm otherwise (docs/witness.md)."""


@dataclass(frozen=True)
class Standing:
    """How one witness stands with the exchange's ledger."""

    name: str
    url: str
    size: int | None = None  # of its latest cosigned checkpoint of the ledger; None: none
    lag: int | None = None  # entries it trails the exchange's newest checkpoint by
    cosigned_at: int | None = None
    consistent: bool | None = None
    why: str | None = None  # why it is not consistent
    refusals: int | None = None
    last_refusal: dict[str, Any] | None = None
    unreachable: str | None = None

    @property
    def problems(self) -> list[Text]:
        """Why this witness makes the command fail (English as a str: --json)."""
        found = []
        if self.unreachable is not None:
            found.append(
                L_("witness {name} unreachable: {why}", name=self.name, why=self.unreachable)
            )
        if self.consistent is False:
            found.append(
                L_(
                    "witness {name} holds a tree the ledger does not: {why}",
                    name=self.name,
                    why=self.why,
                )
            )
        if self.refusals:
            last = self.last_refusal or {}
            found.append(
                L_(
                    "witness {name} recorded {refusals}, the last {status} for {origin}: "
                    "{reason} (400 and 422 are a rollback or a fork it was shown; a 409 alone "
                    "may be a race: docs/witness.md, section 3)",
                    name=self.name,
                    refusals=LN_("{n} refusal", "{n} refusals", self.refusals, n=self.refusals),
                    status=last.get("status"),
                    origin=last.get("origin"),
                    reason=last.get("reason"),
                )
            )
        return found

    def line(self, now: float) -> str:
        if self.unreachable is not None:
            return _("witness {name} ({url}): UNREACHABLE: {why}").format(
                name=self.name, url=self.url, why=self.unreachable
            )
        if self.size is None:
            state = _("has cosigned no checkpoint of this ledger")
        elif self.cosigned_at:
            ago = max(0, int(now) - self.cosigned_at)
            state = _("cosigned size {size}, {ago} s ago, {lag}").format(
                size=self.size, ago=ago, lag=_lag(self.lag)
            )
        else:
            state = _("cosigned size {size}, {lag}").format(size=self.size, lag=_lag(self.lag))
        if self.consistent is True:
            state = _("{state}, consistent with the ledger").format(state=state)
        elif self.consistent is False:
            state = _("{state}, NOT consistent with the ledger: {why}").format(
                state=state, why=self.why
            )
        refused = _("no refusals")
        if self.refusals:
            refused = ngettext(
                "{n} REFUSAL recorded", "{n} REFUSALS recorded", self.refusals
            ).format(n=self.refusals)
        return _("witness {name} ({url}): {state}; {refused}").format(
            name=self.name, url=self.url, state=state, refused=refused
        )

    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "size": self.size,
            "lag": self.lag,
            "cosigned_at": self.cosigned_at,
            "consistent": self.consistent,
            "refusals": self.refusals,
            "last_refusal": self.last_refusal,
        }
        if self.problems:
            found["error"] = "; ".join(self.problems)
        return found


def _lag(lag: int | None) -> str:
    if lag is None or lag == 0:
        return _("up to date")
    if lag < 0:
        return ngettext(
            "ahead of the ledger's newest by {n} entry",
            "ahead of the ledger's newest by {n} entries",
            -lag,
        ).format(n=-lag)
    return ngettext("{n} entry behind", "{n} entries behind", lag).format(n=lag)


@witness.command()
@identity_option
@server_option
@click.option(
    "--db",
    default=None,
    help="Read the exchange's newest checkpoint from this database instead of asking --server.",
)
@ledger_key_option
@witness_policy_option
@json_option
@click.pass_context
@handle_errors
def status(
    ctx: click.Context,
    identity: str,
    server: str,
    db: str | None,
    ledger_key: str | None,
    witness_policy: str | None,
    as_json: bool,
) -> None:
    """For each witness of the policy: the newest checkpoint of the exchange's ledger it
    cosigned, how far it trails the exchange's newest (GetCheckpoint with --server, the newest
    stored with --db), whether it is consistent with the ledger, and the refusals it recorded.
    Exit 1 if a witness is unreachable, recorded a refusal (the alarm: a rollback or a fork it
    was shown), or cosigned a tree the ledger does not hold. Witnesses are asked over mutual TLS
    as --identity.

    \b
    Examples:
      sinergi witness status --identity certs/dev/internal-affairs
      sinergi witness status --identity certs/dev/internal-affairs --db sqlite:///var/sinergi.db \\
        --witness-policy certs/dev/witness-policy --json
    """
    me = load_identity(Path(identity))
    verifier = load_verifier(find_ledger_key(me.directory, ledger_key))
    policy = _policy(me, witness_policy)
    if db is not None:
        if ctx.get_parameter_source("server") is ParameterSource.COMMANDLINE:
            raise UsageError(L_("give --server or --db, not both"))
        with Source(db).database() as connection:
            found = checkpoint_at(connection, None)
            if found is None:
                raise UsageError(L_("the ledger has no checkpoint yet"))
            newest = open_checkpoint(found[1], [verifier])

            def stored(old: Checkpoint, new: Checkpoint) -> None:
                if new.size > newest.size:
                    raise LedgerError(
                        f"the ledger's newest checkpoint has {newest.size} entries, the "
                        f"witness cosigned {new.size}: entries were removed"
                    )
                proof = prove_consistency(connection, old.size, new.size)
                verify_consistency(old.size, new.size, old.root, new.root, proof)

            standings = _standings(policy, me, verifier, newest, stored)
        note = found[1]
    else:
        with ExchangeClient(me, server, ledger_key=ledger_key, witness_policy=policy) as client:
            answer = client.newest(quorum=False)
            newest, note = answer.checkpoint, answer.note

            def served(old: Checkpoint, new: Checkpoint) -> None:
                try:
                    at, proof = client.consistency(old.size, new.size)
                except Refused as exc:
                    raise LedgerError(
                        f"the exchange proves no tree of {new.size} entries: {exc}"
                    ) from None
                if at.root != new.root:
                    raise LedgerError(f"the exchange's checkpoint of size {new.size} differs")
                verify_consistency(old.size, new.size, old.root, new.root, proof)

            standings = _standings(policy, me, verifier, newest, served)
    _report(newest, note, verifier, policy, standings, as_json, served=db is None)


def _policy(me: Identity, explicit: str | None) -> WitnessPolicy:
    found = find_witness_policy(me.directory, explicit)
    if found is None:
        raise UsageError(
            L_(
                "no witness policy: pass --witness-policy FILE (or put witness-policy beside the "
                "identity or in its parent)"
            )
        )
    policy = load_policy(found)
    if not any(w.url for w in policy.witnesses.values()):
        raise UsageError(L_("{path}: the policy names no witness with a URL to ask", path=found))
    return policy


def _standings(
    policy: WitnessPolicy,
    me: Identity,
    verifier: Verifier,
    newest: Checkpoint,
    connects: Connects,
) -> list[Standing]:
    context = tls_context(me)
    standings = []
    for w in policy.witnesses.values():
        if not w.url:
            continue
        standing = Standing(w.name, w.url)
        try:
            told = witness_status(w.url, context)
            cosigned = latest_cosigned(
                w.name, w.url, w.verifier, newest.origin, verifiers=[verifier], context=context
            )
        except (WitnessUnreachable, WitnessLied) as exc:
            standings.append(replace(standing, unreachable=str(exc)))
            continue
        refusals = told.get("refusals")
        last = told.get("last_refusal")
        standing = replace(
            standing,
            refusals=refusals if isinstance(refusals, int) else None,
            last_refusal=last if isinstance(last, dict) else None,
        )
        if cosigned.checkpoint is not None:
            standing = _judged(standing, cosigned.checkpoint, newest, connects)
            standing = replace(standing, cosigned_at=cosigned.cosigned_at)
        else:
            standing = replace(standing, lag=newest.size)
        standings.append(standing)
    return standings


def _judged(
    standing: Standing, theirs: Checkpoint, newest: Checkpoint, connects: Connects
) -> Standing:
    """The witness's checkpoint against the exchange's newest: the smaller must be a prefix of
    the larger (with --server the exchange's newest may be the newest with its quorum, which a
    witness that already cosigned a newer one is ahead of)."""
    standing = replace(standing, size=theirs.size, lag=newest.size - theirs.size)
    try:
        if min(theirs.size, newest.size) == 0:  # every tree extends the empty one
            empty = theirs if theirs.size == 0 else newest
            if empty.root != EMPTY_ROOT:
                raise LedgerError("a checkpoint of size 0 without the empty tree's root")
        elif theirs.size == newest.size:
            if theirs.root != newest.root:
                raise LedgerError(f"size {theirs.size} with another root: a fork")
        elif theirs.size < newest.size:
            connects(theirs, newest)
        else:
            connects(newest, theirs)
    except LedgerError as exc:
        return replace(standing, consistent=False, why=str(exc))
    return replace(standing, consistent=True)


def _report(
    newest: Checkpoint,
    note: bytes,
    verifier: Verifier,
    policy: WitnessPolicy,
    standings: list[Standing],
    as_json: bool,
    *,
    served: bool,
) -> None:
    cosigners = cosigners_of(note, verifier, policy)
    now = time.time()
    whose = _("the exchange's {line}") if served else _("the ledger's {line}")
    lines = [whose.format(line=cosigners.line()), *(s.line(now) for s in standings)]
    result: dict[str, Any] = {
        "ok": True,
        "origin": newest.origin,
        "checkpoint_size": newest.size,
        **cosigners.json(),
        "witnesses": [s.json() for s in standings],
    }
    problems = [p for s in standings for p in s.problems]
    if problems:
        if not as_json:
            click.echo("\n".join(lines), err=True)
        fail(as_json, joined(problems), 1, {**result, "ok": False})
    emit(as_json, result, "\n".join(lines))
