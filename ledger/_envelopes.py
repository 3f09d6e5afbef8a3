"""Envelopes: the ledger entries addressed to an agency, and the numbers that make a withheld one
show (docs/ledger-format.md, section 1.1, ``to_index``; docs/threat-model.md, "Suppression").

Each PUBLISH, UPDATE and CANCEL entry numbers itself for each agency it is addressed to: the n-th
entry addressed to an agency records ``"<agency>:<n>"``. An agency sees only its own entries, so it
cannot scan the whole ledger as a Certificate Transparency monitor does; the numbers give it the
same guarantee. An exchange that keeps an entry from it must either leave a gap in its numbers
(which its monitor sees) or give two entries one number (which ``verify``, reading every entry,
refuses). Pure rules only: the monitor's state and I/O live in the client (clients/_monitor.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ledger import _meta as meta
from ledger._entry import Action, Entry, MetaValue
from ledger._errors import EncodingError, ProofError, VerificationError
from ledger._merkle import leaf_hash, verify_inclusion
from ledger._note import Checkpoint

#: The entries that address agencies: what a recipient must receive.
MESSAGE_ACTIONS = frozenset({Action.PUBLISH, Action.UPDATE, Action.CANCEL})
#: How each of them starts in canonical form (keys sorted: "action" comes first).
MESSAGE_PREFIXES = tuple(b'{"action":"%s"' % a.value.encode() for a in MESSAGE_ACTIONS)
_ALERT = "alert:"
#: "<agency>:<n>", n from 1 in decimal without a leading zero (and below 2^53, as every integer)
_NUMBERED = re.compile(r"(.+):([1-9][0-9]{0,14})").fullmatch


def addressed(values: Mapping[str, MetaValue]) -> tuple[tuple[str, ...], dict[str, int] | None]:
    """An entry's ``to`` and its ``to_index`` as {agency: n} (None when the entry predates
    numbering); :class:`EncodingError` when ``to_index`` does not number exactly ``to``."""
    to = values.get(meta.TO, [])
    if not isinstance(to, list):
        raise EncodingError("meta.to is not a list")
    index = values.get(meta.TO_INDEX)
    if index is None:
        return tuple(to), None
    if not isinstance(index, list):
        raise EncodingError("meta.to_index is not a list")
    numbers: dict[str, int] = {}
    for item in index:
        found = _NUMBERED(item)
        if found is None:
            raise EncodingError(f"meta.to_index has {item!r}, not <agency>:<n> with n >= 1")
        numbers[found[1]] = int(found[2])
    if list(numbers) != to:
        raise EncodingError("meta.to_index does not number each agency of meta.to, in order")
    return tuple(to), numbers


class NumberCheck:
    """What ``verify`` checks of the numbers, fed every message entry in ledger order: each
    agency's numbers run 1, 2, 3, ... from the first numbered entry on, and no message entry
    after it goes without numbers (an exchange that dropped them could hide an entry)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._since: int | None = None

    def see(self, seq: int, to: Sequence[str], numbers: Mapping[str, int] | None) -> None:
        if numbers is None:
            if self._since is not None:
                raise VerificationError(
                    f"entry {seq}: addressed to {', '.join(to)} without meta.to_index, though "
                    f"entries are numbered since entry {self._since}: an entry left unnumbered "
                    "could be kept from its recipients unseen",
                    seq,
                )
            return
        if self._since is None:
            self._since = seq
        for agency, number in numbers.items():
            expected = self._last.get(agency, 0) + 1
            if number != expected:
                raise VerificationError(
                    f"entry {seq}: numbered {number} for {agency}, the entry before it addressed "
                    f"to {agency} was {expected - 1}: "
                    + ("two entries share a number" if number < expected else "numbers skipped"),
                    seq,
                )
            self._last[agency] = number

    def feed(self, found: Iterable[tuple[int, Sequence[str], Mapping[str, int] | None]]) -> None:
        for seq, to, numbers in found:
            self.see(seq, to, numbers)


#: (seq, to, numbers) of a message entry: what :class:`NumberCheck` is fed
Numbered = tuple[int, tuple[str, ...], dict[str, int] | None]


def numbered(seq: int, values: Mapping[str, MetaValue]) -> Numbered:
    """(seq, to, numbers) of a message entry's ``meta``, for :class:`NumberCheck`."""
    try:
        return (seq, *addressed(values))
    except EncodingError as exc:
        raise VerificationError(f"entry {seq}: {exc}", seq) from None


@dataclass(frozen=True)
class Envelope:
    """A message entry addressed to the monitoring agency, proven in a checkpoint."""

    seq: int
    number: int  # the entry's number for the agency
    action: Action
    message_id: str  # the PUBLISH, UPDATE or CANCEL message the entry records
    thread_id: str  # the thread's original alert
    time: str  # when the exchange recorded it (RFC 3339)
    entry: bytes


@dataclass(frozen=True)
class Opened:
    """Envelopes checked against a checkpoint: those found, and the numbers the agency should
    have been shown and was not (each an entry addressed to it that the exchange kept back)."""

    envelopes: tuple[Envelope, ...]
    missing: tuple[int, ...]
    last_number: int


def open_envelopes(
    agency: str,
    found: Iterable[tuple[int, bytes, Sequence[bytes]]],
    checkpoint: Checkpoint,
    *,
    after: int,
    last_number: int,
) -> Opened:
    """Check (seq, entry bytes, inclusion proof) answers for entries after ``after`` addressed to
    ``agency``, against ``checkpoint`` (verified and witnessed by the caller): each entry in
    canonical form, of a message action, addressed to ``agency`` and numbered for it, included
    in the checkpoint's tree, in seq order. ``last_number`` is the agency's number seen last
    (0 for none); a number skipped after it is reported in ``missing``.

    :class:`VerificationError` when an answer is wrong in itself (the exchange lied, or a
    proof is broken): the caller must not treat that as "nothing to see"."""
    envelopes: list[Envelope] = []
    missing: list[int] = []
    last_seq = after
    number_seen = last_number
    for seq, body, proof in found:
        if seq <= last_seq or seq > checkpoint.size:
            raise VerificationError(
                f"envelope at {seq} is out of order or outside entries {after + 1}.."
                f"{checkpoint.size}",
                seq,
            )
        try:
            entry = Entry.decode(body)
            to, numbers = addressed(entry.meta)
            verify_inclusion(seq - 1, checkpoint.size, leaf_hash(body), proof, checkpoint.root)
        except (EncodingError, ProofError) as exc:
            raise VerificationError(f"envelope at {seq}: {exc}", seq) from None
        if entry.seq != seq or entry.action not in MESSAGE_ACTIONS:
            raise VerificationError(f"envelope at {seq} is not a message entry at {seq}", seq)
        if numbers is None or agency not in numbers:
            raise VerificationError(
                f"envelope at {seq} is not addressed to {agency} (to: {', '.join(to)})", seq
            )
        number = numbers[agency]
        if number <= number_seen:
            raise VerificationError(
                f"envelope at {seq} is numbered {number} for {agency}, after {number_seen}: "
                "the exchange gave two entries one number",
                seq,
            )
        missing.extend(range(number_seen + 1, number))
        objects = [o.removeprefix(_ALERT) for o in entry.objects if o.startswith(_ALERT)]
        if not objects:
            raise VerificationError(f"envelope at {seq} names no alert", seq)
        envelopes.append(
            Envelope(seq, number, entry.action, objects[0], objects[-1], entry.time, body)
        )
        last_seq, number_seen = seq, number
    return Opened(tuple(envelopes), tuple(missing), number_seen)
