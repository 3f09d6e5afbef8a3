"""Writing the export file (its format, and reading it, are in ledger/_export.py)."""

from __future__ import annotations

from typing import IO

from sqlalchemy import Connection

from ledger._export import checkpoint_line
from ledger.store._reads import iter_checkpoints, iter_entries


def write_export(connection: Connection, out: IO[bytes]) -> tuple[int, int]:
    """Write the whole ledger; returns (entries, checkpoints) written."""
    pending = list(iter_checkpoints(connection))
    pending.reverse()
    entries = checkpoints = 0
    while pending and pending[-1][0] == 0:
        out.write(checkpoint_line(pending.pop()[1]))
        checkpoints += 1
    for seq, _digest, body in iter_entries(connection):
        out.write(body + b"\n")
        entries += 1
        while pending and pending[-1][0] == seq:
            out.write(checkpoint_line(pending.pop()[1]))
            checkpoints += 1
    return entries, checkpoints
