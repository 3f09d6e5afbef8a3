"""Canonical JSON and ledger entries: one value, one encoding; anything else is refused."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import (
    GENESIS_PREV,
    Action,
    Actor,
    EncodingError,
    Entry,
    EntryDraft,
    Outcome,
    canonical_json,
    leaf_hash,
    parse_canonical,
)
from ledger._canonical import canonical_text
from ledger._entry import _plain_meta, format_time
from tests.ledger.doc_blocks import DOC, check_doc_block, generated_block

ACTOR = Actor("spiffe://sinergi.dev/agency/police/system/gateway", "ab" * 32)


def test_canonical_json_sorts_keys_and_has_no_whitespace() -> None:
    assert (
        canonical_json({"b": 1, "a": [True, None, "é\n"]})
        == b'{"a":[true,null,"\xc3\xa9\\n"],"b":1}'
    )


@pytest.mark.parametrize(
    "value",
    [1.5, 2**53, -(2**53), {1: "x"}, {"é": 1}, object(), "\ud800"],
    ids=["float", "big", "small", "int key", "non-ascii key", "object", "lone surrogate"],
)
def test_canonical_json_refuses_what_the_subset_excludes(value: object) -> None:
    with pytest.raises(EncodingError):
        canonical_json(value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1, "b":2}',
        b'{"b":1,"a":2}',
        b'{"a":1,"a":1}',
        b'{"a":1.0}',
        b'{"a":NaN}',
        b"\xff",
        b'{"a":"\\u00e9"}',
    ],
    ids=["space", "unsorted", "duplicate", "float", "nan", "not utf-8", "needless escape"],
)
def test_parse_canonical_refuses_non_canonical_bytes(data: bytes) -> None:
    with pytest.raises(EncodingError):
        parse_canonical(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(max_codepoint=127), max_size=8), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_round_trip(value: object) -> None:
    encoded = canonical_json(value)
    assert parse_canonical(encoded) == value
    assert canonical_json(parse_canonical(encoded)) == encoded


def test_entry_bytes_are_exact_and_hash_is_the_rfc6962_leaf_hash() -> None:
    draft = EntryDraft(
        Action.DENIED,
        ACTOR,
        objects=("alert:1",),
        digest="00" * 32,
        outcome=Outcome("PERMISSION_DENIED", "no"),
        meta={"method": "/sinergi.v1.Exchange/Publish"},
    )
    entry = draft.at(7, datetime(2026, 11, 23, 9, 0, 0, 123, tzinfo=UTC), GENESIS_PREV)
    assert entry.encode() == (
        b'{"action":"DENIED","actor":{"cert":"' + b"ab" * 32 + b'","id":"spiffe://sinergi.dev/'
        b'agency/police/system/gateway"},"digest":"' + b"0" * 64 + b'","meta":{"method":"/sinergi'
        b'.v1.Exchange/Publish"},"objects":["alert:1"],"outcome":{"reason":"no","status":'
        b'"PERMISSION_DENIED"},"prev":"' + b"0" * 64 + b'","seq":7,"time":"2026-11-23T09:00:00'
        b'.000123Z","v":1}'
    )
    assert entry.hash == leaf_hash(entry.encode())
    assert Entry.decode(entry.encode()) == entry


def test_entry_time_is_normalised_to_utc() -> None:
    wib = timezone(timedelta(hours=7))
    entry = EntryDraft(Action.READ, ACTOR).at(1, datetime(2026, 1, 1, 7, tzinfo=wib), GENESIS_PREV)
    assert entry.time == "2026-01-01T00:00:00.000000Z"
    with pytest.raises(EncodingError):
        EntryDraft(Action.READ, ACTOR).at(1, datetime(2026, 1, 1), GENESIS_PREV)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", 2),
        ("seq", 0),
        ("seq", "1"),
        ("time", "2026-01-01T00:00:00Z"),
        ("time", "\u0662\u0660\u0662\u0666-01-01T00:00:00.000000Z"),  # Arabic-Indic digits
        ("action", "DELETE"),
        ("actor", {"id": "x"}),
        ("objects", [1]),
        ("outcome", {"status": "OK", "x": "y"}),
        ("prev", "00"),
        ("extra", 1),
    ],
)
def test_entry_decode_refuses_malformed_fields(field: str, value: object) -> None:
    good = EntryDraft(Action.READ, ACTOR).at(1, datetime.now(UTC), GENESIS_PREV).to_json()
    good[field] = value
    with pytest.raises(EncodingError):
        Entry.decode(canonical_json(good))


def render_entry_example() -> str:
    """Three chained entries with fixed values, as docs/ledger-format.md section 1.5 shows them."""
    t0 = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)
    server = Actor("x509:CN=sinergi-exchange", "11" * 32)
    immigration = Actor("spiffe://sinergi.dev/agency/immigration/system/gateway", "22" * 32)
    police = Actor("spiffe://sinergi.dev/agency/police/system/gateway", "33" * 32)
    alert = "alert:0b0e6f5e-3c3a-4d5e-9f6a-2b1c0d9e8f7a"
    drafts = [
        EntryDraft(Action.START, server, digest="44" * 32,
                   meta={"origin": "sinergi.dev/ledger", "policy_digest": "44" * 32}),
        EntryDraft(Action.PUBLISH, immigration, objects=(alert,), digest="55" * 32,
                   meta={"category": "PASSPORT_HOLD", "handling": "AMBER",
                         "to": ["labour", "police"]}),
        EntryDraft(Action.DENIED, police, digest="66" * 32,
                   outcome=Outcome("PERMISSION_DENIED", "agency 'police' may not publish "
                                   "PASSPORT_HOLD alerts"),
                   meta={"method": "/sinergi.v1.Exchange/Publish"}),
    ]  # fmt: skip
    out, prev = [], GENESIS_PREV
    for i, draft in enumerate(drafts):
        entry = draft.at(i + 1, t0.replace(microsecond=i * 1000 + 123), prev)
        out += [f"Entry {entry.seq}:", "", "```", entry.encode().decode(), "```", ""]
        out.append(f"entry hash = `{entry.hash.hex()}`")
        out.append("")
        prev = entry.hash.hex()
    return "\n".join(out).rstrip("\n")


def test_doc_entry_example_matches_code() -> None:
    check_doc_block("entry-example", render_entry_example())


def test_doc_entry_example_verifies_from_the_markdown() -> None:
    """An outside verifier's view: hash each entry line from the document, follow the links."""
    doc = DOC.read_text(encoding="utf-8")
    start, stop = generated_block(doc, "entry-example")
    block = doc[start:stop]
    bodies = [b.encode() for b in re.findall(r"```\n(.*?)\n```", block)]
    hashes = re.findall(r"entry hash = `([0-9a-f]{64})`", block)
    assert len(bodies) == len(hashes) == 3
    prev = GENESIS_PREV
    for seq, (body, digest) in enumerate(zip(bodies, hashes, strict=True), 1):
        assert hashlib.sha256(b"\x00" + body).hexdigest() == digest
        parsed = json.loads(body)
        assert (parsed["seq"], parsed["prev"]) == (seq, prev)
        prev = digest


meta_values = st.one_of(
    st.text(), st.integers(-(2**53) + 1, 2**53 - 1), st.booleans(), st.lists(st.text(), max_size=3)
)


@given(
    st.sampled_from(Action),
    st.text(),
    st.text(),
    st.lists(st.text(), max_size=3),
    st.text(),
    st.text(),
    st.text(),
    st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), meta_values, max_size=4),
    st.integers(1, 2**53 - 1),
)
def test_the_writers_encoding_is_the_canonical_encoding(
    action: Action,
    actor_id: str,
    cert: str,
    objects: list[str],
    status: str,
    reason: str,
    digest: str,
    meta: dict[str, object],
    seq: int,
) -> None:
    """``encode`` writes the fields one by one for speed; it must give exactly the bytes of the
    canonical encoding of ``to_json``, or, when it cannot (a lone surrogate, an integer outside
    the range), refuse exactly as that does."""
    draft = EntryDraft(action, Actor(actor_id, cert), tuple(objects), digest,
                       Outcome(status, reason), meta)  # type: ignore[arg-type]  # fmt: skip
    when = datetime(2026, 11, 23, tzinfo=UTC)
    entry = draft.at(seq, when, GENESIS_PREV)
    assert _outcome(entry.encode) == _outcome(lambda: canonical_json(entry.to_json()))
    # the writer's path: the time formatted once, no Entry built
    stamp = format_time(when)
    assert _outcome(lambda: draft.encode_at(seq, stamp, GENESIS_PREV)) == _outcome(entry.encode)


any_meta_values = st.one_of(
    st.text(),
    st.integers(-(2**60), 2**60),
    st.booleans(),
    st.none(),
    st.floats(),
    st.lists(st.one_of(st.text(), st.integers(), st.booleans()), max_size=3),
    st.tuples(st.text()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), any_meta_values, max_size=5))
def test_the_writers_meta_encoding_is_the_canonical_one(meta: dict[object, object]) -> None:
    """The writer encodes plain metas itself: exactly as the canonical encoder does; anything
    else (None) is left to it."""
    plain = _plain_meta(meta)  # type: ignore[arg-type]
    if plain is not None:
        assert plain == canonical_text(meta)


def _outcome(encode: Callable[[], bytes]) -> bytes | str:
    try:
        return encode()
    except EncodingError as exc:
        return f"EncodingError: {exc}"


@pytest.mark.parametrize(
    "change",
    [
        {"seq": True},
        {"seq": 2**53},
        {"digest": b"00"},
        {"objects": ("alert:1", 2)},
        {"meta": {"n": 2**60}},
        {"meta": {"\u00e9": 1}},
        {"meta": MappingProxyType({"b": 1, "a": "x"})},
        {"prev": "\ud800"},
    ],
    ids=["bool seq", "big seq", "bytes digest", "int object", "big meta", "non-ascii key",
         "read-only meta", "lone surrogate"],
)  # fmt: skip
def test_the_writers_encoding_of_unusual_fields_is_the_canonical_one(
    change: dict[str, object],
) -> None:
    """Fields of other types than an entry is made of take the general path: the same bytes,
    or the same refusal."""
    fields = {**EntryDraft(Action.READ, ACTOR).at(1, datetime.now(UTC), GENESIS_PREV).__dict__}
    entry = Entry(**{**fields, **change})  # type: ignore[arg-type]
    assert _outcome(entry.encode) == _outcome(lambda: canonical_json(entry.to_json()))
    draft = EntryDraft(entry.action, entry.actor, entry.objects, entry.digest, entry.outcome,
                       entry.meta)  # fmt: skip
    encoded = _outcome(lambda: draft.encode_at(entry.seq, entry.time, entry.prev))
    assert encoded == _outcome(entry.encode)


def test_bytes_have_no_canonical_encoding() -> None:
    with pytest.raises(EncodingError, match="bytes has no canonical encoding"):
        canonical_json({"digest": b"00"})
