"""What the auditor commands say about witnesses: who cosigned a checkpoint (under a policy, by
the policy's names and against its quorum; without one, how many lines, unchecked), and what
each witness of the policy cosigned of the ledger (`ledger verify`, `ledger checkpoint`,
`witness status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs import load_identity
from clients._errors import UsageError
from clients._i18n import L_, Text, _, ngettext, translated
from clients._witness_api import (
    WitnessLied,
    WitnessUnreachable,
    latest_cosigned,
    tls_context,
)
from ledger import (
    Checkpoint,
    LedgerError,
    VerificationError,
    Verifier,
    WitnessPolicy,
    open_checkpoint,
)


@dataclass(frozen=True)
class Cosigners:
    """The cosignatures on one checkpoint: under a policy, who cosigned it (policy names) and
    whether that meets the quorum; without one, only how many lines it carries."""

    checkpoint: Checkpoint
    lines: int  # signature lines other than the ledger key's: cosignatures, unchecked
    names: tuple[str, ...] = ()
    quorum: str | None = None  # the policy's quorum in words; None without a policy
    met: bool | None = None  # whether ``names`` meet it; None without a policy

    def line(self) -> str:
        cp = self.checkpoint
        if self.quorum is None:
            return ngettext(
                "newest checkpoint: size {size} of {origin}, {n} cosignature line (not checked: "
                "no witness policy)",
                "newest checkpoint: size {size} of {origin}, {n} cosignature lines (not checked: "
                "no witness policy)",
                self.lines,
            ).format(size=cp.size, origin=cp.origin, n=self.lines)
        who = ", ".join(self.names) or _("no witness of the policy")
        verdict = (
            _(
                "newest checkpoint: size {size} of {origin}, cosigned by {who} (quorum {quorum}: "
                "met)"
            )
            if self.met
            else _(
                "newest checkpoint: size {size} of {origin}, cosigned by {who} (quorum {quorum}: "
                "NOT met)"
            )
        )
        return verdict.format(size=cp.size, origin=cp.origin, who=who, quorum=self.quorum)

    def lacking(self) -> Text:
        """Why a checkpoint without its quorum is refused: who cosigned, what was needed."""
        return L_(
            "the newest checkpoint (size {size}) lacks its quorum: cosigned by {who}; the policy "
            "needs {quorum}",
            size=self.checkpoint.size,
            who=", ".join(self.names) or L_("no witness of the policy"),
            quorum=self.quorum,
        )

    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"cosignature_lines": self.lines}
        if self.quorum is not None:
            found["cosigners"] = list(self.names)
            found["quorum"] = {"needs": self.quorum, "met": self.met}
        return found


def cosigners_of(note: bytes, verifier: Verifier, policy: WitnessPolicy | None) -> Cosigners:
    """Who cosigned ``note`` (a checkpoint signed by ``verifier``'s key), as the policy names
    them. :class:`LedgerError` for a note that does not verify, or a cosignature by a witness
    key of the policy that does not."""
    checkpoint = open_checkpoint(note, [verifier])
    own = f"\u2014 {verifier.name} ".encode()
    _text, _, signatures = note.rpartition(b"\n\n")
    lines = sum(1 for line in signatures.split(b"\n") if line and not line.startswith(own))
    if policy is None:
        return Cosigners(checkpoint, lines)
    names = tuple(sorted(policy.cosigners(note)))
    return Cosigners(checkpoint, lines, names, policy.describe(), policy.satisfied(names))


@dataclass(frozen=True)
class Asked:
    """What one witness of the policy answered about the ledger: its latest cosigned checkpoint
    (None: it cosigned none of this origin), or why it could not be used."""

    name: str
    url: str
    checkpoint: Checkpoint | None = None
    note: bytes | None = None
    cosigned_at: int | None = None
    unreachable: str | None = None
    lied: str | None = None
    consistent: bool | None = None  # with the ledger; None: not known
    ahead: int | None = None  # the size of the export it is ahead of, and so not checked

    @property
    def problem(self) -> Text | None:
        """Why this witness makes the command fail, or None (English as a str: --json)."""
        if self.unreachable is not None:
            return L_("witness {name} unreachable: {why}", name=self.name, why=self.unreachable)
        if self.lied is not None:
            return L_("witness {name}: {why}", name=self.name, why=self.lied)
        if self.consistent is False:
            size = self.checkpoint.size if self.checkpoint else "?"
            return L_(
                "witness {name} cosigned a tree of {size} entries the ledger does not hold",
                name=self.name,
                size=size,
            )
        return None

    def line(self) -> str:
        if self.problem is not None:
            return str(translated(self.problem))
        if self.checkpoint is None:
            return _("witness {name}: has cosigned no checkpoint of this ledger").format(
                name=self.name
            )
        if self.ahead is not None:
            return _(
                "witness {name}: cosigned size {size}, after this export (size {ahead}): not "
                "checked"
            ).format(name=self.name, size=self.checkpoint.size, ahead=self.ahead)
        if self.consistent:
            return _("witness {name}: cosigned size {size}, consistent with the ledger").format(
                name=self.name, size=self.checkpoint.size
            )
        return _("witness {name}: cosigned size {size}").format(
            name=self.name, size=self.checkpoint.size
        )

    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "size": self.checkpoint.size if self.checkpoint else None,
            "consistent": self.consistent,
        }
        if self.problem is not None:
            found["error"] = self.problem
        return found


def ask_witnesses(
    policy: WitnessPolicy, identity: str | None, origin: str, verifier: Verifier
) -> list[Asked]:
    """Ask every witness of ``policy`` that has a URL for its latest cosigned checkpoint of
    ``origin``, over mutual TLS as ``identity``; each answer's cosignature and ledger signature
    checked. :class:`UsageError` without an identity."""
    witnesses = [w for w in policy.witnesses.values() if w.url]
    if not witnesses:
        return []
    if not identity:
        raise UsageError(L_("asking the witnesses needs --identity (or SINERGI_IDENTITY)"))
    context = tls_context(load_identity(Path(identity)))
    answers = []
    for witness in witnesses:
        assert witness.url is not None
        try:
            found = latest_cosigned(
                witness.name,
                witness.url,
                witness.verifier,
                origin,
                verifiers=[verifier],
                context=context,
            )
        except WitnessUnreachable as exc:
            answers.append(Asked(witness.name, witness.url, unreachable=str(exc)))
            continue
        except WitnessLied as exc:
            answers.append(Asked(witness.name, witness.url, lied=str(exc)))
            continue
        answers.append(
            Asked(witness.name, witness.url, found.checkpoint, found.note, found.cosigned_at)
        )
    return answers


def trusted_notes(asked: list[Asked]) -> list[bytes]:
    """The witnesses' checkpoints, for the verification to hold the ledger to."""
    return [a.note for a in asked if a.note is not None]


def blamed(error: VerificationError, asked: list[Asked]) -> list[Asked]:
    """The witnesses whose checkpoint the ledger failed, judged by the failure: the checkpoint
    of the size it names, or, for a ledger that ends early, every one beyond its end."""
    if error.seq is None or "trusted" not in str(error):
        return []
    sized = [a for a in asked if a.checkpoint is not None]
    exact = [a for a in sized if a.checkpoint and a.checkpoint.size == error.seq]
    return exact or [a for a in sized if a.checkpoint and a.checkpoint.size >= error.seq]


def origin_of(note: bytes | None, verifier: Verifier) -> str | None:
    """The origin of the ledger's newest checkpoint, or None when it has none or it does not
    verify (the verification then says why)."""
    if note is None:
        return None
    try:
        return open_checkpoint(note, [verifier]).origin
    except LedgerError:
        return None
