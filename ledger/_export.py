"""The export file: JSON Lines, one canonical entry per line, each checkpoint after its last entry.

An entry line is the entry's canonical bytes exactly, so its hash is SHA-256(0x00 || line). A
checkpoint line is a JSON object with the single key ``checkpoint`` whose value is the signed note
(docs/ledger-format.md, section 4). An auditor verifies the file with no access to the database;
:mod:`ledger.store` writes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from ledger._errors import VerificationError
from ledger._merkle import leaf_hash


def checkpoint_line(note: bytes) -> bytes:
    """The export line of a signed checkpoint."""
    return json.dumps({"checkpoint": note.decode("utf-8")}, ensure_ascii=False).encode() + b"\n"


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as source:
        for number, line in enumerate(source, 1):
            if not line.endswith(b"\n"):
                raise VerificationError(f"line {number}: truncated (no final newline)")
            yield number, line[:-1]


def _checkpoint_note(line: bytes) -> bytes | None:
    if not line.startswith(b'{"checkpoint":'):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if (
        isinstance(value, dict)
        and set(value) == {"checkpoint"}
        and isinstance(value["checkpoint"], str)
    ):
        return value["checkpoint"].encode("utf-8")
    return None


def export_checkpoints(path: str | os.PathLike[str]) -> list[tuple[int, bytes]]:
    """(entries before it, note) for each checkpoint line of an export file."""
    found, count = [], 0
    for _number, line in _lines(path):
        note = _checkpoint_note(line)
        if note is None:
            count += 1
        else:
            found.append((count, note))
    return found


def export_entries(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes, bytes]]:
    """(position, hash, bytes) for each entry line, in file order, for :func:`verify_ledger`."""
    position = 0
    for _number, line in _lines(path):
        if _checkpoint_note(line) is None:
            position += 1
            yield position, leaf_hash(line), line
