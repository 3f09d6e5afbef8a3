"""parse_canonical's fast path (the C parser and encoder, then a scan) accepts only what the
strict parse accepts, with the same value; whatever the C encoder writes but the subset
excludes goes to the strict parse, whose verdict and message count."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import EncodingError, canonical_json, parse_canonical
from ledger import _canonical as canonical

DEFERRED = object()
STRICT = canonical._parse_strict  # the strict parse itself, whatever a test replaces


@pytest.fixture
def strict_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The strict parse replaced by a recorder: what parse_canonical hands it, the fast path
    did not accept."""
    calls: list[bytes] = []

    def record(data: bytes) -> object:
        calls.append(data)
        return DEFERRED

    monkeypatch.setattr(canonical, "_parse_strict", record)
    return calls


def fast(data: bytes) -> Any:
    """The fast path's verdict alone: the value it accepts, or DEFERRED."""
    original = canonical._parse_strict
    canonical._parse_strict = lambda _data: DEFERRED
    try:
        return parse_canonical(data)
    finally:
        canonical._parse_strict = original


def strict(data: bytes) -> Any:
    try:
        return STRICT(data)
    except EncodingError:
        return DEFERRED


# What json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes, or what the
# C parser reads, that the ledger's subset (docs/ledger-format.md, 1.2) forbids.
FORBIDDEN = {
    # floats: the encoder writes them, most of them spelled as it reads them back
    "float": b'{"a":1.5}',
    "float with zero fraction": b'{"a":1.0}',
    "negative zero float": b'{"a":-0.0}',
    "float in exponent form": b'{"a":1e+16}',
    "small float": b'{"a":1e-07}',
    "float in a list": b'{"a":[1,2.5]}',
    "float at the top": b"1.5",
    "NaN": b'{"a":NaN}',
    "Infinity": b'{"a":Infinity}',
    "-Infinity": b'{"a":-Infinity}',
    "NaN at the top": b"NaN",
    # integers beyond 2**53 - 1: written exactly by the encoder
    "2**53": b'{"a":9007199254740992}',
    "-(2**53)": b'{"a":-9007199254740992}',
    "big integer in a list": b'{"a":[1,99999999999999999999]}',
    "big integer at the top": b"9007199254740992",
    "big negative integer at the top": b"-9007199254740992",
    "integer of 5000 digits": b'{"a":' + b"9" * 5000 + b"}",
    # object keys that are not ASCII: written raw with ensure_ascii=False
    "non-ASCII key": '{"é":1}'.encode(),
    "non-ASCII nested key": '{"a":{"ключ":1}}'.encode(),
    "non-ASCII key after a non-ASCII value": '{"a":"é","é":1}'.encode(),
    "non-ASCII key in a list's object": '{"a":[{"ü":true}]}'.encode(),
    # lone surrogates: the parser reads the escapes, the encoder writes them raw
    "lone high surrogate": b'{"a":"\\ud800"}',
    "lone low surrogate": b'{"a":"\\udc00"}',
    "reversed surrogate pair": b'{"a":"\\udc00\\ud800"}',
    "escaped surrogate pair": b'{"a":"\\ud83d\\ude00"}',
    # duplicate keys: the parser keeps the last
    "duplicate key": b'{"a":1,"a":1}',
    "duplicate nested key": b'{"a":{"b":1,"b":1}}',
    # spellings the parser reads and the encoder never writes
    "needless escape of a letter": b'{"a":"\\u0041"}',
    "needless escape of non-ASCII": b'{"a":"\\u00e9"}',
    "escaped key": b'{"\\u0061":1}',
    "escaped slash": b'{"a":"\\/"}',
    "upper-case hex escape": b'{"a":"\\u001F"}',
    "long form of a short escape": b'{"a":"\\u000a"}',
    "escaped DEL": b'{"a":"\\u007f"}',
    "raw control character": b'{"a":"\x01"}',
    "space after a colon": b'{"a": 1}',
    "leading space": b' {"a":1}',
    "trailing newline": b'{"a":1}\n',
    "unsorted keys": b'{"b":1,"a":2}',
    "negative zero": b'{"a":-0}',
    "leading zero": b'{"a":01}',
    "exponent without fraction": b'{"a":1E5}',
    "byte order mark": b'\xef\xbb\xbf{"a":1}',
    "not UTF-8": b"\xff",
    "overlong UTF-8": b'{"a":"\xc0\xaf"}',
    "encoded surrogate": b'{"a":"\xed\xa0\x80"}',
    "two values": b'{"a":1}{"a":1}',
    "Python literal": b'{"a":True}',
}


@pytest.mark.parametrize("data", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_the_fast_path_leaves_each_forbidden_case_to_the_strict_parse(
    data: bytes, strict_calls: list[bytes]
) -> None:
    assert parse_canonical(data) is DEFERRED
    assert strict_calls == [data]


@pytest.mark.parametrize("data", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_each_forbidden_case_is_refused(data: bytes) -> None:
    with pytest.raises(EncodingError):
        parse_canonical(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1,"a":1}', "duplicate key 'a'"),
        ('{"é":1}'.encode(), "object keys must be ASCII strings"),
        (b'{"a":9007199254740992}', "integer outside the exact IEEE 754 range"),
        (b'{"a":' + b"9" * 5000 + b"}", "integer outside the exact IEEE 754 range"),
        (b'{"a":1e+16}', r"non-integer number 1e\+16"),
        (b'{"a":NaN}', "non-integer number NaN"),
        (b'{"a":"\\ud800"}', "string is not valid Unicode"),
        (b'{"a":"\\u0041"}', "JSON is not in canonical form"),
        (b"\xff", "not JSON"),
    ],
)
def test_refusals_keep_their_messages(data: bytes, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        parse_canonical(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":9007199254740991,"b":-9007199254740991}',  # the exact range's ends
        b'{"a":"x:1234567890123456789"}',  # a long run of digits inside a string
        b'{"a":"\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f"}',  # every escape the subset keeps
        b'{"a":"\\":1","b":{"c":"\\""}}',  # a quote and a colon inside a string
        b'{"a":[],"b":{},"c":null,"d":true,"e":false,"f":-1,"g":0}',
        b'"text"',
        b"[]",
        b"123",
    ],
)
def test_the_fast_path_takes_canonical_values(data: bytes, strict_calls: list[bytes]) -> None:
    value = parse_canonical(data)
    assert value is not DEFERRED
    assert canonical_json(value) == data
    assert strict_calls == []


@pytest.mark.parametrize(
    "data",
    [
        '{"a":"é\u2028😀","b":["ü"]}'.encode(),  # non-ASCII, raw, outside keys
        '{"a":"\\"é\\":1","b":{"c":"ключ"}}'.encode(),  # a quote and a colon inside a string
    ],
)
def test_text_that_is_not_ascii_goes_to_the_strict_parse(
    data: bytes, strict_calls: list[bytes]
) -> None:
    """Finding its object keys would cost as much as the strict parse, which checks them."""
    assert parse_canonical(data) is DEFERRED
    assert strict_calls == [data]
    assert canonical_json(STRICT(data)) == data


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


#: Every kind of damage the fast path may meet, one byte replaced.
DAMAGE = [b"", b" ", b'"', b"\\", b"0", b"-", b"9", b"}", b",", b":", b".", b"e", b"\xc3\xa9"]


def spellings(value: object) -> list[bytes]:
    """Bytes a writer could produce for ``value``: the encoder's own (as the subset would,
    were it not for what the subset excludes), with escapes, unsorted, spaced."""
    out = []
    for ensure_ascii in (False, True):
        for sort_keys in (True, False):
            text = json.dumps(value, ensure_ascii=ensure_ascii, sort_keys=sort_keys,
                              separators=(",", ":"))  # fmt: skip
            out.append(text.encode("utf-8", "surrogatepass"))
    return out


@settings(max_examples=500, deadline=None)
@given(json_values, st.data())
def test_the_fast_path_accepts_only_what_the_strict_parse_accepts(
    value: object, data: st.DataObject
) -> None:
    for body in spellings(value):
        candidates = [body]
        if body:
            i = data.draw(st.integers(0, len(body) - 1))
            replacement = data.draw(st.sampled_from(DAMAGE))
            candidates.append(body[:i] + replacement + body[i + 1 :])
        for candidate in candidates:
            got = fast(candidate)
            if got is not DEFERRED:
                assert strict(candidate) == got, candidate
