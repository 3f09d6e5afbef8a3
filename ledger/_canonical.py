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
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise EncodingError("integer outside the exact IEEE 754 range")
    return value


def _no_float(text: str) -> float:
    raise EncodingError(f"non-integer number {text}")


def parse_canonical(data: bytes) -> Any:  # noqa: ANN401 - JSON is dynamically typed
    """Parse ``data`` and insist it is already canonical, so one value has exactly one encoding.

    What :func:`canonical_json` refuses is refused while parsing (ASCII keys, integers in the
    exact range, no floats), so the value needs no second walk before it is encoded again."""
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
