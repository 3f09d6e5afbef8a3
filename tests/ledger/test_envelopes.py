"""The numbers message entries give their recipients (``meta.to_index``): what `verify` refuses
(a number skipped or given twice, an entry left unnumbered), on every chunking of a stored
ledger, and what a monitor makes of the entries it is shown (ledger/_envelopes.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import ledger
import ledger.store
from ledger import Action, Actor, EntryDraft, VerificationError, meta
from ledger._envelopes import NumberCheck, numbered
from ledger._verify import _addressing
from ledger.store import LedgerWriter
from tests.conftest import ORIGIN
from tests.ledger.test_verify_store import verdicts

SENDER = Actor("spiffe://sinergi.dev/agency/immigration/system/gateway", "ab" * 32)
OTHER = EntryDraft(Action.READ, SENDER, ("alert:x",), "cd" * 32, meta={meta.METHOD: "GetAlert"})


def message(n: int, to: Sequence[str], numbers: Sequence[int] | None) -> EntryDraft:
    told: dict[str, ledger.MetaValue] = {meta.CATEGORY: "PASSPORT_HOLD", meta.TO: list(to)}
    if numbers is not None:
        told[meta.TO_INDEX] = [f"{a}:{k}" for a, k in zip(to, numbers, strict=True)]
    return EntryDraft(Action.PUBLISH, SENDER, (f"alert:a{n}",), f"{n:064x}", meta=told)


def write(url: str, signer: ledger.Signer, drafts: Sequence[EntryDraft]) -> None:
    engine = ledger.store.create_engine(url)
    writer = LedgerWriter(engine, signer, ORIGIN)
    try:
        for draft in drafts:
            writer.append(draft).result(30)
    finally:
        writer.close()
        engine.dispose()


GOOD = [
    message(0, ["police"], None),  # before numbering began: not checked
    message(1, ["labour", "police"], [1, 1]),
    OTHER,
    message(2, ["police"], [2]),
    message(3, ["customs", "police"], [1, 3]),
]
TAMPERED = {
    "skipped": (message(4, ["police"], [5]), "numbers skipped"),
    "repeated": (message(4, ["labour"], [1]), "two entries share a number"),
    "unnumbered": (message(4, ["police"], None), "without meta.to_index"),
}


def test_consecutive_numbers_verify(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    write(db_url, signer, GOOD)
    for chunk in (1, 2, 4):
        expected, got = verdicts(db_url, verifier, workers=1, chunk=chunk)
        assert isinstance(expected, ledger.Report)
        assert got == expected


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_number_skipped_repeated_or_missing_is_refused_on_every_chunking(
    sqlite_url: str, signer: ledger.Signer, verifier: ledger.Verifier, case: str
) -> None:
    bad, words = TAMPERED[case]
    write(sqlite_url, signer, [*GOOD, bad])
    for chunk in (1, 2, 4, 8):
        expected, got = verdicts(sqlite_url, verifier, workers=1, chunk=chunk)
        assert got == expected
        assert isinstance(expected, tuple)
        message_text, seq = expected
        assert seq == len(GOOD) + 1
        assert words in str(message_text)


def test_to_index_must_number_exactly_to() -> None:
    check = NumberCheck()
    with pytest.raises(ledger.EncodingError, match="does not number each agency"):
        ledger.addressed({meta.TO: ["police"], meta.TO_INDEX: ["labour:1"]})
    with pytest.raises(ledger.EncodingError, match="not <agency>:<n>"):
        ledger.addressed({meta.TO: ["police"], meta.TO_INDEX: ["police:01"]})
    check.see(1, ["police"], {"police": 1})
    with pytest.raises(VerificationError):
        check.see(2, ["police"], {"police": 1})


def _node(hashes: list[bytes], level: int, index: int) -> bytes:
    return ledger.root_of(hashes[index << level : (index + 1) << level])


def test_open_envelopes_reports_gaps_and_refuses_wrong_answers() -> None:
    drafts = [message(1, ["police"], [1]), OTHER, message(2, ["police"], [2]),
              message(3, ["police"], [3]), message(4, ["labour"], [1])]  # fmt: skip
    prev = ledger.GENESIS_PREV
    bodies = []
    for seq, draft in enumerate(drafts, 1):
        body = draft.encode_at(seq, "2026-12-07T00:00:00.000000Z", prev)
        bodies.append((seq, body))
        prev = ledger.leaf_hash(body).hex()
    hashes = [ledger.leaf_hash(b) for _, b in bodies]
    cp = ledger.Checkpoint(ORIGIN, len(hashes), ledger.root_of(hashes))

    def proven(seq: int) -> tuple[int, bytes, list[bytes]]:
        proof = ledger.inclusion_proof(seq - 1, len(hashes), lambda lv, i: _node(hashes, lv, i))
        return seq, bodies[seq - 1][1], list(proof)

    opened = ledger.open_envelopes("police", [proven(1), proven(4)], cp, after=0, last_number=0)
    assert [e.number for e in opened.envelopes] == [1, 3]
    assert opened.missing == (2,)
    assert opened.envelopes[1].message_id == "a3"
    with pytest.raises(VerificationError, match="not addressed to police"):
        ledger.open_envelopes("police", [proven(5)], cp, after=0, last_number=0)
    seq, body, proof = proven(3)
    with pytest.raises(VerificationError, match="envelope at 3"):
        ledger.open_envelopes("police", [(seq, body, proof[::-1])], cp, after=0, last_number=0)
    with pytest.raises(VerificationError, match="two entries one number"):
        ledger.open_envelopes("police", [proven(3)], cp, after=0, last_number=2)


@pytest.mark.parametrize(
    "values",
    [
        {"category": "OTHER", "to": ["police"]},
        {"to": ["labour", "police"], "to_index": ["labour:3", "police:12"]},
        {"to": [], "to_index": []},
        {"to": ["police"], "to_index": ["police:01"]},
        {"to": ["police"], "to_index": ["police:0"]},
        {"to": ["labour", "police"], "to_index": ["police:1", "labour:1"]},
        {"to": ["Police"], "to_index": ["Police:1"]},
        {"to": ["po]lice"], "to_index": ["po]lice:1"]},
        {"to": ["police"], "to_index": ["police:1"], "zz": "x"},
    ],
)
def test_the_quick_reading_of_numbers_agrees_with_the_careful_one(
    values: dict[str, ledger.MetaValue],
) -> None:
    """`verify` reads a message's numbers with a regular expression where it can: it must give
    what the JSON parser and the item-by-item check give, refusals included."""
    raw = ledger.canonical_json(values)
    outcomes = []
    for read in (lambda: _addressing(7, raw), lambda: numbered(7, values)):
        try:
            outcomes.append(read())
        except VerificationError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
