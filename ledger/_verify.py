"""Verification of a whole ledger: pure logic, fed entries and checkpoints by any source.

What is checked (docs/ledger-format.md): every entry's canonical encoding, its hash, its `prev`
link and its seq (1, 2, 3, ... without gaps); the RFC 6962 root at every stored checkpoint; every
checkpoint's signature under a trusted key; and any checkpoint held outside the database, which
catches a rewrite or truncation by someone who could also sign.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ledger._entry import FORMAT_VERSION, GENESIS_PREV, Action, Entry
from ledger._errors import EncodingError, NoteError, VerificationError
from ledger._merkle import EMPTY_ROOT
from ledger._note import Checkpoint, Verifier, open_checkpoint

# The fast path. Most entries are plain ASCII: no string needs an escape and every number is a
# small integer. For those, one regular expression over the bytes checks everything
# Entry.decode checks (the fields of format v1, their types, canonical form: sorted keys, no
# whitespace, no escapes needed, canonical integers) and hands back seq and prev; the meta keys
# are then checked to be strictly increasing (sorted, no duplicates). An entry it does not
# match is not necessarily wrong: it goes to Entry.decode, whose verdict (and message) counts.
# It accepts nothing Entry.decode refuses (tests/ledger/test_verify_fast.py checks this).
_STR = rb'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'  # printable ASCII, no quote or backslash
_INT = rb"(?:0|-?[1-9][0-9]{0,14})"  # |n| < 10**15 < 2**53: always in the exact range
_VALUE = rb"(?:%s|%s|true|false|\[(?:%s(?:,%s)*)?\])" % (_STR, _INT, _STR, _STR)
_ENTRY = re.compile(
    rb'\{"action":"(?:%s)","actor":\{"cert":%s,"id":%s\},"digest":%s,'
    rb'"meta":(\{(?:%s:%s(?:,%s:%s)*)?\}),"objects":\[(?:%s(?:,%s)*)?\],'
    rb'"outcome":\{(?:"reason":%s,)?"status":%s\},"prev":"([0-9a-f]{64})",'
    rb'"seq":([1-9][0-9]{0,14}),"time":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:'
    rb'[0-9]{2}\.[0-9]{6}Z","v":%d\}'
    % (
        "|".join(Action.__members__).encode(), _STR, _STR, _STR,
        _STR, _VALUE, _STR, _VALUE, _STR, _STR, _STR, _STR, FORMAT_VERSION,
    )
)  # fmt: skip
# In a meta object that matched, strings hold no quote, so each '"...":' is exactly one key.
_META_KEY = re.compile(rb'"([^"]*)":')
_LEAF = b"\x00"
_NODE = b"\x01"


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
    due, count, latest = _open_all(checkpoints, trusted, verifiers)
    # The compact range of the tree, kept inline (Frontier.append's checks and bookkeeping cost
    # more than the hashing itself at a million entries): hashes[i] is a perfect subtree root.
    sha256 = hashlib.sha256
    hashes: list[bytes] = []
    size = 0
    prev = GENESIS_PREV.encode()
    _check_checkpoints(due.pop(0, []), EMPTY_ROOT)
    match = _ENTRY.fullmatch
    for seq, stored_hash, body in entries:
        expected = size + 1
        if seq != expected:
            raise VerificationError(
                f"entry {expected} is missing (next stored entry is {seq})", expected
            )
        fields = match(body) if type(body) is bytes else None
        if fields is not None and _sorted_keys(fields[1]):
            body_seq, body_prev = int(fields[3]), fields[2]
        else:
            try:
                entry = Entry.decode(body)
            except EncodingError as exc:
                raise VerificationError(f"entry {seq}: {exc}", seq) from None
            body_seq, body_prev = entry.seq, entry.prev.encode()
        if body_seq != seq:
            raise VerificationError(f"entry {seq}: body says seq {body_seq}", seq)
        digest = sha256(_LEAF + body).digest()
        if digest != stored_hash:
            raise VerificationError(
                f"entry {seq}: content does not match its hash "
                f"(stored {_hex(stored_hash)}, computed {digest.hex()})",
                seq,
            )
        if body_prev != prev:
            raise VerificationError(
                f"entry {seq}: prev {body_prev.decode()} does not link to entry {seq - 1} "
                f"({prev.decode()})",
                seq,
            )
        prev = digest.hex().encode()
        # Append the leaf: each set low bit of the old size is a left sibling waiting for it.
        node, position = digest, size
        while position & 1:
            node = sha256(_NODE + hashes.pop() + node).digest()
            position >>= 1
        hashes.append(node)
        size = expected
        if size in due:
            _check_checkpoints(due.pop(size), _fold(hashes))
        if progress is not None:
            progress(size)
    if due:
        first = min(due)
        _cp, source = due[first][0]
        raise VerificationError(
            f"the ledger ends at entry {size} but a {source} checkpoint covers "
            f"{first} entries: entries were removed",
            size + 1,
        )
    return Report(size, _fold(hashes), count, latest)


def _open_all(
    checkpoints: Iterable[tuple[int, bytes]],
    trusted: Sequence[bytes],
    verifiers: Sequence[Verifier],
) -> tuple[dict[int, list[tuple[Checkpoint, str]]], int, Checkpoint | None]:
    """Open every stored and trusted checkpoint: (those due at each size, how many are stored,
    the newest stored). Raises VerificationError for a bad signature, origin or size."""
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
    return due, count, latest


def _sorted_keys(meta: bytes) -> bool:
    """The keys of a matched meta object are strictly increasing: sorted, none twice."""
    keys = _META_KEY.findall(meta)
    return len(keys) < 2 or keys == sorted(set(keys))


def _fold(hashes: list[bytes]) -> bytes:
    """MTH from the compact range: the right fold of its perfect subtree roots."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = hashlib.sha256(_NODE + h + root).digest()
    return root


def _hex(value: object) -> str:
    return value.hex() if isinstance(value, bytes | bytearray) else repr(value)


def _open(note: bytes, verifiers: Sequence[Verifier], what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, verifiers)
    except NoteError as exc:
        raise VerificationError(f"{what}: {exc}") from None


def _check_checkpoints(due: list[tuple[Checkpoint, str]], root: bytes) -> None:
    for cp, source in due:
        if cp.root != root:
            raise VerificationError(
                f"entries 1..{cp.size} do not have the root of the {source} checkpoint at size "
                f"{cp.size}: history was rewritten",
                cp.size,
            )
