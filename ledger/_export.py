"""The export file: JSON Lines, one canonical entry per line, each checkpoint after its last entry.

An entry line is the entry's canonical bytes exactly, so its hash is SHA-256(0x00 || line). A
checkpoint line is a JSON object with the single key ``checkpoint`` whose value is the signed note
(docs/ledger-format.md, section 4). An auditor verifies the file with no access to the database.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import IO

from sqlalchemy import Connection

from ledger._errors import VerificationError
from ledger._merkle import leaf_hash
from ledger._store import iter_checkpoints, iter_entries


def write_export(connection: Connection, out: IO[bytes]) -> tuple[int, int]:
    """Write the whole ledger; returns (entries, checkpoints) written."""
    pending = list(iter_checkpoints(connection))
    pending.reverse()
    entries = checkpoints = 0
    while pending and pending[-1][0] == 0:
        out.write(_checkpoint_line(pending.pop()[1]))
        checkpoints += 1
    for seq, _digest, body in iter_entries(connection):
        out.write(body + b"\n")
        entries += 1
        while pending and pending[-1][0] == seq:
            out.write(_checkpoint_line(pending.pop()[1]))
            checkpoints += 1
    return entries, checkpoints


def _checkpoint_line(note: bytes) -> bytes:
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
