"""Verification of a whole ledger: pure logic, fed entries and checkpoints by any source.

What is checked (docs/ledger-format.md): every entry's canonical encoding, its hash, its `prev`
link and its seq (1, 2, 3, ... without gaps); the RFC 6962 root at every stored checkpoint; every
checkpoint's signature under a trusted key; and any checkpoint held outside the database, which
catches a rewrite or truncation by someone who could also sign.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ledger._entry import GENESIS_PREV, Entry
from ledger._errors import EncodingError, NoteError, VerificationError
from ledger._merkle import Frontier, leaf_hash
from ledger._note import Checkpoint, Verifier, open_checkpoint


@dataclass(frozen=True)
class Report:
    """A ledger that verified: how much, and the newest checkpoint that covers it."""

    entries: int
    root: bytes
    checkpoints: int
    latest: Checkpoint | None


def verify_ledger(
    entries: Iterable[tuple[int, bytes, bytes]],
    checkpoints: Iterable[tuple[int, bytes]],
    verifiers: Sequence[Verifier],
    *,
    trusted: Sequence[bytes] = (),
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Verify (seq, stored hash, body) rows in seq order against signed checkpoints.

    ``trusted`` are signed checkpoints kept outside the ledger (by a client, an auditor or a
    witness); the ledger must contain each of them. Raises :class:`VerificationError` at the first
    failure, naming the entry.
    """
    due: dict[int, list[tuple[Checkpoint, str]]] = {}
    count = 0
    latest: Checkpoint | None = None
    origin: str | None = None
    for source, notes in (
        ("stored", ((s, n) for s, n in checkpoints)),
        ("trusted", enumerate(trusted)),
    ):
        for label, note in notes:
            cp = _open(note, verifiers, f"{source} checkpoint {label}")
            if origin is not None and cp.origin != origin:
                raise VerificationError(
                    f"{source} checkpoint at size {cp.size} is for origin {cp.origin!r}, "
                    f"not {origin!r}"
                )
            origin = cp.origin
            if source == "stored" and cp.size != label:
                raise VerificationError(f"checkpoint stored as size {label} says size {cp.size}")
            due.setdefault(cp.size, []).append((cp, source))
            if source == "stored":
                count += 1
                latest = cp if latest is None or cp.size > latest.size else latest

    frontier = Frontier()
    prev = GENESIS_PREV
    _check_checkpoints(due.pop(0, []), frontier)
    for seq, stored_hash, body in entries:
        expected = frontier.size + 1
        if seq != expected:
            raise VerificationError(
                f"entry {expected} is missing (next stored entry is {seq})", expected
            )
        try:
            entry = Entry.decode(body)
        except EncodingError as exc:
            raise VerificationError(f"entry {seq}: {exc}", seq) from None
        if entry.seq != seq:
            raise VerificationError(f"entry {seq}: body says seq {entry.seq}", seq)
        digest = leaf_hash(body)
        if digest != stored_hash:
            raise VerificationError(
                f"entry {seq}: content does not match its hash "
                f"(stored {stored_hash.hex()}, computed {digest.hex()})",
                seq,
            )
        if entry.prev != prev:
            raise VerificationError(
                f"entry {seq}: prev {entry.prev} does not link to entry {seq - 1} ({prev})", seq
            )
        prev = digest.hex()
        frontier.append(digest)
        _check_checkpoints(due.pop(frontier.size, []), frontier)
        if progress is not None:
            progress(frontier.size)
    if due:
        size = min(due)
        cp, source = due[size][0]
        raise VerificationError(
            f"the ledger ends at entry {frontier.size} but a {source} checkpoint covers "
            f"{size} entries: entries were removed",
            frontier.size + 1,
        )
    return Report(frontier.size, frontier.root(), count, latest)


def _open(note: bytes, verifiers: Sequence[Verifier], what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, verifiers)
    except NoteError as exc:
        raise VerificationError(f"{what}: {exc}") from None


def _check_checkpoints(due: list[tuple[Checkpoint, str]], frontier: Frontier) -> None:
    for cp, source in due:
        if cp.root != frontier.root():
            raise VerificationError(
                f"entries 1..{cp.size} do not have the root of the {source} checkpoint at size "
                f"{cp.size}: history was rewritten",
                cp.size,
            )
