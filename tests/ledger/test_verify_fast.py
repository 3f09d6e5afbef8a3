"""The verifier's fast path accepts only entries that Entry.decode accepts, with the same seq and
prev; anything else falls back to Entry.decode, whose verdict counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Action, Actor, Entry, EntryDraft, Outcome, leaf_hash, verify_ledger
from ledger._errors import EncodingError, VerificationError
from ledger._verify import _ENTRY, _sorted_keys

PREV = "ab" * 32


def fast(body: bytes) -> tuple[int, bytes] | None:
    fields = _ENTRY.fullmatch(body)
    if fields is None or not _sorted_keys(fields[1]):
        return None
    return int(fields[3]), fields[2]


def decoded(body: bytes) -> tuple[int, bytes] | None:
    try:
        entry = Entry.decode(body)
    except EncodingError:
        return None
    return entry.seq, entry.prev.encode()


def assert_agrees(body: bytes) -> None:
    got = fast(body)
    if got is not None:
        assert decoded(body) == got, body


text = st.text(max_size=12)
ascii_keys = st.text(alphabet=st.characters(max_codepoint=127), max_size=6)
meta_value = st.one_of(
    text,
    st.integers(min_value=-(2**60), max_value=2**60),
    st.booleans(),
    st.lists(text, max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=2**53 - 1),
    action=st.sampled_from(list(Action)),
    actor=text,
    objects=st.lists(text, max_size=3),
    digest=text,
    reason=text,
    meta=st.dictionaries(ascii_keys, meta_value, max_size=4),
)
def test_fast_path_agrees_on_encoded_entries(
    seq: int,
    action: Action,
    actor: str,
    objects: list[str],
    digest: str,
    reason: str,
    meta: dict[str, object],
) -> None:
    draft = EntryDraft(action, Actor(actor, "cd" * 32), tuple(objects), digest,
                       Outcome("OK", reason), meta)  # type: ignore[arg-type]  # fmt: skip
    try:
        body = draft.at(seq, datetime(2026, 1, 1, tzinfo=UTC), PREV).encode()
    except EncodingError:
        return
    assert decoded(body) == (seq, PREV.encode())
    assert_agrees(body)
    for i in range(0, len(body), 7):  # every kind of damage the fast path may meet
        for replacement in (b"", b" ", b'"', b"\\", b"0", b"-", b"9", b"}", b",", b"\x01"):
            assert_agrees(body[:i] + replacement + body[i + 1 :])


BASE = EntryDraft(Action.PUBLISH, Actor("spiffe://x/agency/a/system/b", "cd" * 32),
                  ("alert:1",), "ef" * 32, meta={"a": 1, "b": ["x"]}).at(
    7, datetime(2026, 1, 1, tzinfo=UTC), PREV).encode()  # fmt: skip


@pytest.mark.parametrize(
    "meta",
    [
        b'{"a":1,"a":2}',  # duplicate key
        b'{"b":1,"a":2}',  # unsorted
        b'{"a":-0}',
        b'{"a":01}',
        b'{"a":1.0}',
        b'{"a":9007199254740992}',
        b'{"a":null}',
        b'{"a":{"b":1}}',
        b'{"a": 1}',
        b'{"a":"\\u0041"}',
        b'{"a":"\xc3\xa9"}',
    ],
)
def test_fast_path_leaves_the_unusual_to_entry_decode(meta: bytes) -> None:
    body = BASE.replace(b'{"a":1,"b":["x"]}', meta)
    assert body != BASE
    assert fast(body) is None
    assert_agrees(body)


def test_fast_path_takes_the_common_entry() -> None:
    assert fast(BASE) == (7, PREV.encode())


def test_a_non_canonical_entry_fails_verification_by_name() -> None:
    body = BASE.replace(b'{"a":1,"b":["x"]}', b'{"b":1,"a":2}').replace(b'"seq":7', b'"seq":1')
    body = body.replace(PREV.encode(), b"0" * 64)
    with pytest.raises(VerificationError, match="entry 1: JSON is not in canonical form"):
        verify_ledger([(1, leaf_hash(body), body)], [], [])
