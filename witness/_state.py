"""The witness's state: one SQLite file, ``state.db``, of its own.

For each origin it keeps the latest checkpoint it cosigned: size, root, the note as submitted
and the cosignature line it returned (C2SP tlog-witness: "only required to keep track of the
latest checkpoint it observed and verified"; the note and line are what the monitoring
endpoint serves). It also keeps every refusal of a checkpoint that the log's key signed, with
the request, as evidence (tlog-witness: such a request "might be proof of log misbehavior").

Check and update are one ``BEGIN IMMEDIATE`` transaction, committed before the answer
(tlog-witness: "checking the old size against the latest checkpoint and persisting the new
checkpoint must be performed atomically", and "MUST persist the new checkpoint before
responding"), in WAL mode with ``synchronous=FULL``, so that a committed record survives a
power cut. Sizes are stored as decimal text: a checkpoint's size may reach 2**64 - 1, and
SQLite integers stop at 2**63 - 1.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ledger import (
    AddCheckpoint,
    Checkpoint,
    Cosigner,
    LedgerError,
    Verifier,
    WitnessRefusal,
    decide,
    open_checkpoint,
    origin_hash,
)
from witness._errors import StateError

STATE_FILE = "state.db"
FORMAT = 1

_SCHEMA = (
    """CREATE TABLE witness (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        format INTEGER NOT NULL,
        vkey TEXT NOT NULL,
        created_at INTEGER NOT NULL
    )""",
    """CREATE TABLE logs (
        origin TEXT PRIMARY KEY,
        origin_hash TEXT NOT NULL UNIQUE,
        size TEXT NOT NULL,
        root BLOB NOT NULL,
        note BLOB NOT NULL,
        cosignature BLOB NOT NULL,
        cosigned_at INTEGER NOT NULL
    )""",
    """CREATE TABLE refusals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        origin TEXT NOT NULL,
        status INTEGER NOT NULL,
        reason TEXT NOT NULL,
        submitter TEXT NOT NULL,
        old_size TEXT NOT NULL,
        size TEXT NOT NULL,
        request BLOB NOT NULL
    )""",
    # Evidence is appended, never rewritten (a mistake, not an attacker with the file, is what
    # this stops; backups of state.db are the record).
    """CREATE TRIGGER refusals_no_update BEFORE UPDATE ON refusals
        BEGIN SELECT RAISE(ABORT, 'refusals are append-only'); END""",
    """CREATE TRIGGER refusals_no_delete BEFORE DELETE ON refusals
        BEGIN SELECT RAISE(ABORT, 'refusals are append-only'); END""",
)


@dataclass(frozen=True)
class Cosigned:
    """What add-checkpoint recorded and answers: the checkpoint and the cosignature lines."""

    checkpoint: Checkpoint
    old_size: int
    lines: bytes
    timestamp: int


@dataclass(frozen=True)
class LogState:
    origin: str
    size: int
    root: bytes
    cosigned_at: int


@dataclass(frozen=True)
class Refusal:
    time: int
    origin: str
    status: int
    reason: str
    submitter: str
    old_size: int
    size: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "origin": self.origin,
            "status": self.status,
            "reason": self.reason,
            "submitter": self.submitter,
            "old_size": self.old_size,
            "size": self.size,
        }


def _connect(path: Path) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) that never creates the file."""
    try:
        db = sqlite3.connect(
            path.resolve().as_uri() + "?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,  # one worker thread at a time: the server's executor
        )
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise StateError(f"{path}: {exc}") from None
    return db


def create_state(path: str | os.PathLike[str], vkey: str, now: int) -> None:
    """Create an empty state for the witness key ``vkey``; :class:`StateError` if one exists
    (re-initialising is a decision, never a side effect)."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise StateError(
            f"{path} exists: this witness has a state already; move it away first if you "
            "really mean to start over (every log it witnessed is then trusted on first use again)"
        ) from None
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror}") from None
    try:
        db = _connect(path)
        try:
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(
                "INSERT INTO witness (id, format, vkey, created_at) VALUES (1, ?, ?, ?)",
                (FORMAT, vkey, now),
            )
            db.execute("COMMIT")
        finally:
            db.close()
    except BaseException:
        # No half-made state: it would block init and, unlike a missing one, look deliberate.
        for leftover in (
            path,
            path.with_name(path.name + "-wal"),
            path.with_name(path.name + "-shm"),
        ):
            leftover.unlink(missing_ok=True)
        raise


class State:
    """An open state. Not thread-safe: the server calls it from one worker thread only."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str], vkey: str) -> State:
        """The state at ``path``, which must exist and belong to the witness key ``vkey``."""
        path = Path(path)
        if not path.is_file():
            raise StateError(
                f"{path} is missing: a witness without its state would cosign a log rolled back "
                "or forked behind its back. Restore it from a backup; or, only if this witness "
                "has never cosigned or you accept losing what it saw, run `sinergi witness init`"
            )
        db = _connect(path)
        try:
            row = db.execute("SELECT format, vkey FROM witness WHERE id = 1").fetchone()
        except sqlite3.Error as exc:
            db.close()
            raise StateError(f"{path} is not a witness state: {exc}") from None
        if row is None or row[0] != FORMAT:
            db.close()
            raise StateError(f"{path}: unknown state format {row[0] if row else None}")
        if row[1] != vkey:
            db.close()
            raise StateError(
                f"{path} belongs to the witness key {row[1]}, not to {vkey}: "
                "the key or the state was replaced"
            )
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def add_checkpoint(
        self,
        origin: str,
        request: AddCheckpoint,
        *,
        keys: list[Verifier],
        cosigner: Cosigner,
        now: int,
        submitter: str,
        body: bytes,
    ) -> Cosigned:
        """Decide and record in one transaction, then answer (tlog-witness, add-checkpoint).

        Raises :class:`WitnessRefusal`; a refusal of a checkpoint the log signed (anything but
        403) is recorded in ``refusals`` in the same transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT size, root, cosigned_at FROM logs WHERE origin = ?", (origin,)
            ).fetchone()
            latest = Checkpoint(origin, int(row[0]), row[1]) if row else None
            try:
                shown = decide(latest, request, keys)
            except WitnessRefusal as refusal:
                if refusal.status != 403:
                    size = _claimed_size(request, keys)
                    db.execute(
                        "INSERT INTO refusals (time, origin, status, reason, submitter, old_size,"
                        " size, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            now,
                            origin,
                            refusal.status,
                            str(refusal),
                            submitter,
                            str(request.old_size),
                            "" if size is None else str(size),
                            body,
                        ),
                    )
                db.execute("COMMIT")
                raise
            # A cosignature's time never goes backwards for an origin, whatever the clock does
            # (tlog-cosignature: the largest tree seen "as of" that time).
            timestamp = max(now, row[2] if row else 0)
            lines = cosigner.cosign(shown.body(), timestamp)
            db.execute(
                "INSERT INTO logs (origin, origin_hash, size, root, note, cosignature, cosigned_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET"
                " size = excluded.size, root = excluded.root, note = excluded.note,"
                " cosignature = excluded.cosignature, cosigned_at = excluded.cosigned_at",
                (
                    origin,
                    origin_hash(origin),
                    str(shown.size),
                    shown.root,
                    request.note,
                    lines,
                    timestamp,
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return Cosigned(shown, request.old_size, lines, timestamp)

    def checkpoint(self, hashed_origin: str) -> bytes | None:
        """The latest cosigned checkpoint of the origin whose SHA-256 is ``hashed_origin``: the
        note as submitted, then this witness's cosignature (tlog-witness, Monitor Retrieval)."""
        row = self._db.execute(
            "SELECT note, cosignature FROM logs WHERE origin_hash = ?", (hashed_origin,)
        ).fetchone()
        return None if row is None else bytes(row[0]) + bytes(row[1])

    def logs(self) -> list[LogState]:
        rows = self._db.execute(
            "SELECT origin, size, root, cosigned_at FROM logs ORDER BY origin"
        ).fetchall()
        return [LogState(origin, int(size), bytes(root), at) for origin, size, root, at in rows]

    def refusals(self) -> tuple[int, Refusal | None]:
        """How many refusals are recorded, and the last one."""
        (count,) = self._db.execute("SELECT count(*) FROM refusals").fetchone()
        row = self._db.execute(
            "SELECT time, origin, status, reason, submitter, old_size, size FROM refusals"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return count, None
        time, origin, status, reason, submitter, old, size = row
        return count, Refusal(
            time, origin, status, reason, submitter, int(old), int(size) if size else None
        )


def _claimed_size(request: AddCheckpoint, keys: list[Verifier]) -> int | None:
    """The size of a refused checkpoint, whose signature :func:`ledger.decide` verified."""
    try:
        return open_checkpoint(request.note, keys).size
    except LedgerError:
        return None
