"""Witnessing rules: when a newly shown checkpoint may replace the newest one verified before.

A party that keeps the newest checkpoint it verified (a client, an auditor) catches a rewritten
or rolled-back history when the next checkpoint it is shown is not consistent with the kept one
(RFC 9162 section 2.1.4), even if the key holder signed it. These are the rules alone: where the
kept checkpoint lives, and how it is locked and cached, is the keeper's business
(clients/_witness.py), as python-tuf keeps its trust rules apart from its I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from ledger._errors import ForkError, LedgerError, NoteError, QuorumError, VerificationError
from ledger._merkle import EMPTY_ROOT, verify_consistency
from ledger._note import Checkpoint, Verifier
from ledger._policy import Cosigned, WitnessPolicy

#: The gRPC metadata key of a write: the size of the newest checkpoint the caller verified, so
#: that the receipt's consistency proof starts there (docs/api.md). Clients send it, the exchange
#: reads it; one spelling for both.
WITNESSED_SIZE_HEADER: Final = "sinergi-witnessed-size"

#: Fetches the consistency proof between two sizes, smaller first, from the exchange.
ProofFetcher = Callable[[int, int], Sequence[bytes]]


def describe(cp: Checkpoint) -> str:
    return f"{cp.origin} size {cp.size} root {cp.root.hex()}"


def new_origin(key_name: str, today: date) -> str:
    """The origin of a new ledger signed by the key named ``key_name``: that name, the day and
    8 random hex digits (``sinergi.dev/ledger/20261207-3f9a01c2``). Each ledger is its own log
    for witnesses and clients, so a ledger made anew (a deleted development database, a
    rebuilt deployment) is never mistaken for a rewrite of the old one, nor the other way round
    (C2SP tlog-checkpoint: the origin identifies the log)."""
    return f"{key_name}/{today:%Y%m%d}-{secrets.token_hex(4)}"


def under_key(origin: str, key_name: str) -> bool:
    """Whether a checkpoint of ``origin`` may be signed by the key named ``key_name``: the
    name itself (ledgers from before per-ledger origins) or a ledger under it."""
    return origin == key_name or origin.startswith(key_name + "/")


def advance(
    kept: Checkpoint | None,
    shown: Checkpoint,
    *,
    proof: Sequence[bytes] = (),
    proof_from: int = 0,
    fetch: ProofFetcher | None = None,
    newest_since: int | None = None,
) -> bool:
    """Whether ``shown`` (already verified against the ledger's keys) replaces ``kept``, the
    newest checkpoint of its origin verified before; :class:`ForkError` if it is not consistent
    with it.

    ``proof`` is a consistency proof between ``proof_from`` and ``shown.size`` (as a receipt
    carries it); when it does not connect to the kept checkpoint, ``fetch`` gets one that does.
    ``newest_since`` marks a checkpoint presented as the newest, asked for when the kept one had
    that size: a smaller one is a rollback. One between that size and the kept one is not: the
    kept one arrived meanwhile (another thread's or process's receipt), and the answer must then
    be a prefix of it, which a consistency proof shows."""
    if kept is None:
        return True
    if newest_since is not None and shown.size < newest_since:
        raise ForkError(
            f"the exchange's newest checkpoint ({describe(shown)}) is older than one already "
            f"verified ({describe(kept)}): the ledger was rolled back"
        )
    if shown.size == kept.size:
        if shown.root != kept.root:
            raise ForkError(
                f"two different ledgers: {describe(shown)}, verified before: {describe(kept)}"
            )
        return False
    old, new = sorted((kept, shown), key=lambda cp: cp.size)
    if proof_from != kept.size or not proof:
        if fetch is None:
            raise ForkError(f"no consistency proof between {describe(old)} and {describe(new)}")
        proof = fetch(old.size, new.size)
    try:
        verify_consistency(old.size, new.size, old.root, new.root, list(proof))
    except LedgerError as exc:
        raise ForkError(
            f"checkpoint {describe(new)} is not consistent with {describe(old)}: "
            f"history was rewritten ({exc})"
        ) from None
    return shown.size > kept.size


def pinned_elsewhere(kept: Iterable[str], origin: str, key_name: str) -> str | None:
    """The kept origin that ``origin`` contradicts, if any: another ledger under the same key
    name. A keeper witnesses one ledger per key; a checkpoint of another origin under that name
    is a ledger made anew (a deleted database, a rebuilt deployment), never a continuation of
    the kept one, so it is refused until someone decides to trust it."""
    if not under_key(origin, key_name):
        return None
    others = sorted(o for o in kept if o != origin and under_key(o, key_name))
    return others[0] if others else None


@dataclass(frozen=True)
class Witnessing:
    """What a witness policy made of a receipt or checkpoint: the newest checkpoint with its
    quorum (``cosigned``, its note with the cosignatures, and who cosigned it, by policy name),
    or ``cosigned`` None: not yet witnessed. The caller must report either (docs/cli.md)."""

    quorum: str  # the policy's quorum in words: "2 of (internal-affairs, police)"
    cosigned: Checkpoint | None = None
    note: bytes = b""
    cosigners: tuple[str, ...] = ()

    @classmethod
    def of(cls, policy: WitnessPolicy, cosigned: Cosigned, note: bytes) -> Witnessing:
        return cls(policy.describe(), cosigned.checkpoint, note, tuple(sorted(cosigned.cosigners)))

    @property
    def witnessed(self) -> bool:
        return self.cosigned is not None

    def describe(self) -> str:
        """One line: ``witnessed: checkpoint of size K cosigned by a, b (quorum: ...)``, or
        ``not yet witnessed: ...``."""
        if self.cosigned is None:
            return "not yet witnessed: no checkpoint has its quorum yet"
        return (
            f"witnessed: checkpoint of size {self.cosigned.size} cosigned by "
            f"{', '.join(self.cosigners)} (quorum: {self.quorum})"
        )


def check_cosigned(
    checkpoint: Checkpoint,
    cosigned: bytes,
    proof: Sequence[bytes],
    policy: WitnessPolicy,
    verifiers: Sequence[Verifier],
) -> Witnessing:
    """A receipt's cosigned checkpoint judged by ``policy``: signed by the ledger's key
    (``verifiers``), its quorum met (:class:`QuorumError` naming who cosigned and what the
    policy needs), and ``proof`` the RFC 9162 consistency proof between it and ``checkpoint``
    (the receipt's, already verified), smaller first. Once they are consistent, whatever is
    consistent with the receipt's tree is consistent with the cosigned one too, so a keeper
    may keep the cosigned checkpoint without another proof. An empty ``cosigned`` is a ledger
    whose witnesses have not answered yet: not witnessed, and not an error.
    :class:`VerificationError` for anything else wrong."""
    if not cosigned:
        return Witnessing(policy.describe())
    try:
        found = policy.check(cosigned, verifiers)
    except QuorumError as exc:
        raise QuorumError(f"the receipt's cosigned {exc}") from None
    except NoteError as exc:
        raise VerificationError(
            f"the receipt's cosigned checkpoint does not verify: {exc}"
        ) from None
    witnessed = found.checkpoint
    if witnessed.origin != checkpoint.origin:
        raise VerificationError(
            f"the receipt's cosigned checkpoint is of {witnessed.origin}, its checkpoint of "
            f"{checkpoint.origin}"
        )
    old, new = sorted((witnessed, checkpoint), key=lambda cp: cp.size)
    empty = old.size == 0 and old.root == EMPTY_ROOT and not proof  # every tree extends it
    try:
        if not empty:
            verify_consistency(old.size, new.size, old.root, new.root, list(proof))
    except LedgerError as exc:
        raise VerificationError(
            f"the receipt's cosigned_proof does not connect the cosigned checkpoint of size "
            f"{witnessed.size} to the receipt's checkpoint of size {checkpoint.size} ({exc})"
        ) from None
    return Witnessing.of(policy, found, cosigned)


def keeps(
    kept: Checkpoint | None,
    kept_witnessed: bool,
    shown: Checkpoint,
    cosigned: Checkpoint | None,
) -> Checkpoint | None:
    """Under a witness policy, which checkpoint a keeper keeps next, once ``shown`` was found
    consistent with ``kept`` (:func:`advance`) and ``cosigned`` (with its quorum) with
    ``shown`` (:func:`check_cosigned`): ``cosigned`` or ``shown``, or None to keep ``kept``.

    The newest checkpoint with its quorum is kept: it is what witnesses vouch for, and what a
    receipt's consistency proof starts from. Until one has been seen, the newest verified
    checkpoint is kept (trust on first use), so that a new ledger is still pinned and checked
    for consistency; the first one with its quorum replaces it even if smaller, which loses
    nothing, as both are prefixes of the same tree."""
    if cosigned is not None:
        if kept is None or not kept_witnessed or cosigned.size > kept.size:
            return cosigned
        return None
    if kept is None or (not kept_witnessed and shown.size > kept.size):
        return shown
    return None
