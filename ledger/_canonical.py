"""Canonical JSON: the RFC 8785 (JCS) subset the ledger uses for entry bytes.

The subset keeps the encoding easy to reproduce in any language: object keys are ASCII (so
RFC 8785 §3.2.3's UTF-16 ordering equals byte ordering), numbers are integers within the IEEE 754
exact range (§3.2.2.3 then prints them as plain decimals), strings are UTF-8 with only the
escapes of §3.2.2.2, and there is no insignificant whitespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ledger._errors import EncodingError

MAX_SAFE_INTEGER = 2**53 - 1

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def _check(value: object, path: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise EncodingError(f"{path}: integer outside the exact IEEE 754 range")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise EncodingError(f"{path}: object keys must be ASCII strings")
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    raise EncodingError(f"{path}: {type(value).__name__} has no canonical encoding")


def canonical_json(value: object) -> bytes:
    """Encode ``value`` canonically; raise :class:`EncodingError` for what the subset excludes."""
    try:
        return canonical_text(value).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise EncodingError("string is not valid Unicode") from exc


def canonical_text(value: object) -> str:
    """:func:`canonical_json` before UTF-8 encoding (which can still refuse lone surrogates)."""
    _check(value, "$")
    return _ENCODER.encode(value)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if not key.isascii():
            raise EncodingError("object keys must be ASCII strings")
        if key in result:
            raise EncodingError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _integer(text: str) -> int:
    if len(text.removeprefix("-")) > 16:  # refused before int() (which limits digits itself)
        raise EncodingError("integer outside the exact IEEE 754 range")
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise EncodingError("integer outside the exact IEEE 754 range")
    return value


def _no_float(text: str) -> float:
    raise EncodingError(f"non-integer number {text}")


class _Excluded(Exception):
    """A number the subset excludes met by the fast parse: the strict parse words the error."""


def _excluded(_text: str) -> Any:  # noqa: ANN401 - a JSON parser hook
    raise _Excluded


def _exact(text: str) -> int:
    if len(text) > 17:  # a sign and 16 digits at most: longer is refused unparsed
        raise _Excluded
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise _Excluded
    return value


#: The fast parse: the C scanner, with a hook for integers (a few per entry; a scan of the
#: text for long digit runs cost more, digits being common in hex strings) and for floats and
#: NaN/Infinity, which it calls only when it meets one (so never on a canonical value).
_DECODER = json.JSONDecoder(parse_int=_exact, parse_float=_excluded, parse_constant=_excluded)


def parse_canonical(data: bytes) -> Any:  # noqa: ANN401 - JSON is dynamically typed
    """Parse ``data`` and insist it is already canonical, so one value has exactly one encoding.

    For ASCII text (every entry the exchange writes but those with a non-ASCII string), the C
    parser reads it and the C encoder writes it again: canonical bytes are exactly what comes
    back. What that encoder writes but the subset excludes is checked besides: floats and
    NaN/Infinity (refused by the parser's hooks, called only when it meets one), integers
    outside the exact range (the parser's integer hook), object keys that are not ASCII (none
    in ASCII text). Duplicate keys, needless escapes, lone surrogates and every other spelling
    do not re-encode to themselves. Anything else (text that is not ASCII, where finding the
    keys would cost as much as the strict parse) goes to the strict parse
    (:func:`_parse_strict`), whose verdict and message count."""
    if data.isascii():
        try:
            text = data.decode("ascii")
            value = _DECODER.decode(text)
            if _ENCODER.encode(value) == text:
                return value
        except (ValueError, _Excluded):  # not JSON, a float: the strict parse says so
            pass
    return _parse_strict(data)


def _parse_strict(data: bytes) -> Any:  # noqa: ANN401 - JSON is dynamically typed
    """:func:`parse_canonical` with every exclusion checked while parsing (hooks for keys,
    integers and floats) and its own message for each: slower, for what the fast path does
    not accept."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_no_float,
            parse_constant=_no_float,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncodingError(f"not JSON: {exc}") from exc
    try:
        encoded = _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise EncodingError("string is not valid Unicode") from exc
    if encoded != data:
        raise EncodingError("JSON is not in canonical form")
    return value
