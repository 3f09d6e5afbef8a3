"""Verification of a whole ledger: pure logic, fed entries and checkpoints by any source.

What is checked (docs/ledger-format.md): every entry's canonical encoding, its hash, its `prev`
link and its seq (1, 2, 3, ... without gaps); the numbers message entries give their recipients
(``to_index``: 1, 2, 3, ... per agency, ledger/_envelopes.py); the RFC 6962 root at every stored
checkpoint; every checkpoint's signature under a trusted key; and any checkpoint held outside
the database, which catches a rewrite or truncation by someone who could also sign.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ledger._entry import FORMAT_VERSION, GENESIS_PREV, Action, Entry
from ledger._envelopes import MESSAGE_ACTIONS, MESSAGE_PREFIXES, NumberCheck, Numbered, numbered
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
# A message's recipients and their numbers, in a meta object that matched: keys are sorted, so
# "to" is followed by "to_index" when it is there, and strings hold no quote. Anything else (a
# string holding "]", another shape) is left to the JSON parser.
_AGENCIES = rb'(?:"[a-z0-9-]*"(?:,"[a-z0-9-]*")*)?'
_NUMBERS = rb'(?:"[a-z0-9-]*:[0-9]*"(?:,"[a-z0-9-]*:[0-9]*")*)?'
_QUOTED = re.compile(rb'"([^"]*)"').findall
_PAIRS = re.compile(rb'"([a-z0-9-]+):([1-9][0-9]{0,14})"').findall
_TO = re.compile(rb'[{,]"to":\[(%s)\](?:,"to_index":\[(%s)\])?[,}]' % (_AGENCIES, _NUMBERS))
# In a meta object that matched, strings hold no quote, so each '"...":' is exactly one key.
_META_KEY = re.compile(rb'"([^"]*)":')
_LEAF = b"\x00"
_NODE = b"\x01"
#: The checkpoints due at each tree size, with where each came from ("stored", "trusted").
Due = dict[int, list[tuple[Checkpoint, str]]]


@dataclass(frozen=True)
class Report:
    """A ledger that verified: how much, and the newest checkpoint that covers it (with its
    signed note as stored, cosignatures included, for a witness policy to judge)."""

    entries: int
    root: bytes
    checkpoints: int
    latest: Checkpoint | None
    latest_note: bytes | None = None


def verify_ledger(
    entries: Iterable[tuple[int, bytes, bytes]],
    checkpoints: Iterable[tuple[int, bytes]],
    verifiers: Sequence[Verifier],
    *,
    trusted: Sequence[bytes] = (),
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Verify (seq, stored hash, body) rows in seq order against signed checkpoints.

    Every entry must be covered by a signed checkpoint: the exchange signs one per commit batch,
    in the batch's transaction, so an entry beyond the newest checkpoint (or a ledger with none)
    was written, or had its checkpoints deleted, outside the exchange. ``trusted`` are signed
    checkpoints kept outside the ledger (by a client, an auditor or a witness); the ledger must
    contain each of them. Raises :class:`VerificationError` at the first failure, naming the
    entry.
    """
    stored = list(checkpoints)
    due, count, latest = _open_all(stored, trusted, verifiers)
    newest_note = max(stored)[1] if stored else None
    check_checkpoints(due.pop(0, []), EMPTY_ROOT)

    def reached(size: int, hashes: list[bytes]) -> None:
        check_checkpoints(due.pop(size), fold(hashes))

    walked = walk(entries, 0, GENESIS_PREV.encode(), due, reached, progress=progress)
    NumberCheck().feed(walked.messages)
    check_truncation(due, walked.entries)
    check_covered(walked.entries, latest)
    return Report(walked.entries, fold(walked.hashes), count, latest, newest_note)


@dataclass
class Walked:
    """What :func:`walk` verified of a run of entries starting after entry ``base``."""

    entries: int
    #: the compact range of the run's own subtree (roots of perfect subtrees, largest first)
    hashes: list[bytes]
    #: (seq, to, numbers) of each PUBLISH, UPDATE and CANCEL, for :class:`NumberCheck`
    messages: list[Numbered]


def walk(
    entries: Iterable[tuple[int, bytes, bytes]],
    base: int,
    prev: bytes,
    due: Container[int],
    reached: Callable[[int, list[bytes]], None],
    *,
    progress: Callable[[int], None] | None = None,
) -> Walked:
    """Verify entries base+1, base+2, ...: canonical form, hash, seq and ``prev`` links, the
    first to ``prev`` (hex of entry ``base``'s hash). ``base`` must be 0 or a multiple of a
    power of two at least as large as the run, so that the run is one subtree of the RFC 6962
    tree (section 2.1.1) and its compact range, kept here, combines with the tree before it.
    ``reached(size, hashes)`` is called at every size in ``due``. Raises VerificationError at
    the first failure."""
    # The compact range of the run, kept inline (Frontier.append's checks and bookkeeping cost
    # more than the hashing itself at a million entries): hashes[i] is a perfect subtree root.
    sha256 = hashlib.sha256
    hashes: list[bytes] = []
    messages = []
    size = 0
    match = _ENTRY.fullmatch
    for seq, stored_hash, body in entries:
        expected = base + size + 1
        if seq != expected:
            raise VerificationError(
                f"entry {expected} is missing (next stored entry is {seq})", expected
            )
        fields = match(body) if type(body) is bytes else None
        if fields is not None and (fields[1].count(b'":') < 2 or _sorted_keys(fields[1])):
            body_seq, body_prev = int(fields[3]), fields[2]
            # a message's recipients and their numbers (ledger/_envelopes.py)
            message = _addressing(seq, fields[1]) if body.startswith(MESSAGE_PREFIXES) else None
        else:
            try:
                entry = Entry.decode(body)
            except EncodingError as exc:
                raise VerificationError(f"entry {seq}: {exc}", seq) from None
            body_seq, body_prev = entry.seq, entry.prev.encode()
            message = numbered(seq, entry.meta) if entry.action in MESSAGE_ACTIONS else None
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
        if message is not None:
            messages.append(message)
        # Append the leaf: each set low bit of the old size is a left sibling waiting for it.
        node, position = digest, size
        while position & 1:
            node = sha256(_NODE + hashes.pop() + node).digest()
            position >>= 1
        hashes.append(node)
        size += 1
        if expected in due:
            reached(expected, hashes)
        if progress is not None:
            progress(expected)
    return Walked(size, hashes, messages)


def check_truncation(due: Due, size: int) -> None:
    if due:
        first = min(due)
        _cp, source = due[first][0]
        raise VerificationError(
            f"the ledger ends at entry {size} but a {source} checkpoint covers "
            f"{first} entries: entries were removed",
            size + 1,
        )


def check_covered(entries: int, latest: Checkpoint | None) -> None:
    """Every entry is under a signed checkpoint (:func:`verify_ledger` says why)."""
    if entries and latest is None:
        raise VerificationError(
            f"{entries} entries and no signed checkpoint: every commit batch signs one, so the "
            "checkpoints were deleted",
            1,
        )
    if latest is not None and latest.size < entries:
        raise VerificationError(
            f"entries {latest.size + 1}..{entries} are covered by no signed checkpoint (the "
            f"newest covers {latest.size}): every commit batch signs one, so they were written, "
            "or their checkpoints deleted, outside the exchange",
            latest.size + 1,
        )


def _open_all(
    checkpoints: Iterable[tuple[int, bytes]],
    trusted: Sequence[bytes],
    verifiers: Sequence[Verifier],
) -> tuple[Due, int, Checkpoint | None]:
    """Open every stored and trusted checkpoint: (those due at each size, how many are stored,
    the newest stored). Raises VerificationError for a bad signature, origin or size."""

    def opened() -> Iterator[tuple[str, int, Checkpoint]]:
        for size, note in checkpoints:
            yield "stored", size, open_stored(note, size, verifiers)
        for index, note in enumerate(trusted):
            yield "trusted", index, open_trusted(note, index, verifiers)

    return collect(opened())


def open_stored(note: bytes, size: int, verifiers: Sequence[Verifier]) -> Checkpoint:
    return _open(note, verifiers, f"stored checkpoint {size}")


def open_trusted(note: bytes, index: int, verifiers: Sequence[Verifier]) -> Checkpoint:
    return _open(note, verifiers, f"trusted checkpoint {index}")


def collect(opened: Iterable[tuple[str, int, Checkpoint]]) -> tuple[Due, int, Checkpoint | None]:
    """(source, label, checkpoint) as opened, stored (labelled by size) before trusted: check
    each one's origin and stored size in that order, so that the first failure is the one
    reported, whoever opened them (an iterator that raises stops here)."""
    due: Due = {}
    count = 0
    latest: Checkpoint | None = None
    origin: str | None = None
    for source, label, cp in opened:
        if origin is not None and cp.origin != origin:
            raise VerificationError(
                f"{source} checkpoint at size {cp.size} is for origin {cp.origin!r}, not {origin!r}"
            )
        origin = cp.origin
        if source == "stored" and cp.size != label:
            raise VerificationError(f"checkpoint stored as size {label} says size {cp.size}")
        due.setdefault(cp.size, []).append((cp, source))
        if source == "stored":
            count += 1
            latest = cp if latest is None or cp.size > latest.size else latest
    return due, count, latest


def _addressing(seq: int, meta: bytes) -> Numbered:
    """:func:`ledger._envelopes.numbered` of a message entry's canonical ``meta`` bytes, read
    with :data:`_TO` where it can (a third of the cost of parsing the JSON and checking it
    item by item); anything unusual takes that careful path, which names what is wrong."""
    found = _TO.search(meta)
    if found is not None and (found[2] is not None or b'"to_index"' not in meta):
        to = tuple(agency.decode() for agency in _QUOTED(found[1]))
        if found[2] is None:
            return seq, to, None
        pairs = _PAIRS(found[2])
        numbers = {agency.decode(): int(n) for agency, n in pairs}
        if len(pairs) == found[2].count(b'"') // 2 and tuple(numbers) == to:
            return seq, to, numbers
    return numbered(seq, json.loads(meta))


def _sorted_keys(meta: bytes) -> bool:
    """The keys of a matched meta object are strictly increasing: sorted, none twice. (One key
    has nothing to compare: the caller skips the call when the meta holds one '":' at most.)"""
    keys = _META_KEY.findall(meta)
    return len(keys) < 2 or keys == sorted(set(keys))


def fold(hashes: list[bytes]) -> bytes:
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


def check_checkpoints(due: list[tuple[Checkpoint, str]], root: bytes) -> None:
    for cp, source in due:
        if cp.root != root:
            raise VerificationError(
                f"entries 1..{cp.size} do not have the root of the {source} checkpoint at size "
                f"{cp.size}: history was rewritten",
                cp.size,
            )
