"""The ledger's single writer: group-committed appends on SQLAlchemy.

Appends are group-committed (docs/ledger-format.md): callers submit *works*, functions that write
their own state (an alert row, an acknowledgement) on the writer's connection and return the entries
that record it. One writer thread runs every pending work in one transaction, each inside a
savepoint so that one failing work does not take the others down, appends their entries, stores the
new Merkle nodes and one signed checkpoint, and commits once. State and entry commit together or not
at all; a caller hears of success only after the commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine, Table, insert

from ledger._entry import GENESIS_PREV, EntryDraft, format_time
from ledger._errors import LedgerError, StorageError
from ledger._merkle import (
    Frontier,
    NodeReader,
    _decomposition,
    inclusion_proof,
    leaf_hash,
    root_at,
)
from ledger._note import Checkpoint, Signer, sign_checkpoint
from ledger._receipt import Receipt
from ledger.store._engine import lock_ledger, writing
from ledger.store._reads import SIZE, NodeCache, marker, prefetched
from ledger.store._schema import checkpoints, entries, nodes
from ledger.store._signed import RolledBack, SignedHistory

T = TypeVar("T")
#: A work writes its state on the writer's connection and returns (value, entries recording it).
#: It is told the seq its first entry will get, so that state can point at its ledger entry.
Work = Callable[[Connection, int], tuple[T, Sequence[EntryDraft]]]

_log = logging.getLogger(__name__)

#: How long the writer waits for one more work, under load, before it commits (see _run).
LINGER = 0.0005

_INSERT_CHECKPOINT = insert(checkpoints)


class Committed(Generic[T]):
    """What a work returned, and a receipt for each entry it appended, after the commit.

    The receipts are made on first access: an inclusion proof costs about as much as the rest
    of an entry's append, and most works (deliveries, reads, denials) never show theirs."""

    def __init__(self, value: T, receipts: Callable[[], tuple[Receipt, ...]]) -> None:
        self.value = value
        self._make = receipts
        self._receipts: tuple[Receipt, ...] | None = None

    @property
    def receipts(self) -> tuple[Receipt, ...]:
        if self._receipts is None:
            self._receipts = self._make()
        return self._receipts


@dataclass(frozen=True)
class BatchStats:
    """One committed batch, for an observer (metrics, witnesses) that the ledger does not know
    about: with the signed checkpoint it ended with."""

    works: int
    entries: int
    tree_size: int
    seconds: float
    checkpoint: bytes = b""


@dataclass
class _Pending(Generic[T]):
    work: Work[T]
    future: Future[Committed[T]]
    value: T | None = None
    bodies: tuple[bytes, ...] = ()
    hashes: tuple[bytes, ...] = ()
    first_seq: int = 0
    error: BaseException | None = None


class _Head:
    """The chain's tip as the writer last left it, reloaded when another writer moved it."""

    def __init__(self, frontier: Frontier, last_hash: bytes | None) -> None:
        self.frontier = frontier
        self.last_hash = last_hash

    @classmethod
    def load(cls, connection: Connection) -> _Head:
        """Read the tip in two queries: on PostgreSQL with several replicas, every batch after
        another replica's reloads it."""
        size = connection.execute(SIZE).scalar_one()

        def head(node: NodeReader) -> _Head:
            return cls(Frontier.from_reader(size, node), node(0, size - 1) if size else None)

        return prefetched(connection, head, None)


class LedgerWriter:
    """The single writer of a ledger in this process; safe to call from any thread."""

    def __init__(
        self,
        engine: Engine,
        signer: Signer | Sequence[Signer],
        origin: str,
        *,
        max_batch: int = 256,
        observe: Callable[[BatchStats], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        history: SignedHistory | None = None,
    ) -> None:
        """``history`` is what this exchange signed before (:class:`SignedHistory`): with it,
        the writer refuses to sign a tree that is smaller or inconsistent, and stays halted
        (:attr:`halted`) until restarted."""
        #: Every node this writer committed, newest kept: receipts' proofs (which mostly need
        #: the newest nodes) read through it and so seldom touch the database.
        self.nodes = NodeCache()
        self._engine = engine
        self._observe = observe
        self._clock = clock  # entries' time; replaced only to replay a scripted history
        # Several signers during a key rotation: each checkpoint carries every signature, and
        # verifiers ignore keys they do not know (C2SP signed-note).
        self._signers = [signer] if isinstance(signer, Signer) else list(signer)
        if not self._signers:
            raise StorageError("a ledger writer needs at least one signing key")
        self._origin = origin
        self._max_batch = max_batch
        #: submissions, each one or more works that commit in the same batch (submit_many)
        self._queue: queue.SimpleQueue[list[_Pending[object]] | None] = queue.SimpleQueue()
        self._head: _Head | None = None
        self._history = history
        #: the size up to which the head is known to extend what was signed before
        self._consistent_to = -1
        self._halted: StorageError | None = None
        self._failing: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def halted(self) -> str | None:
        """Why the writer refuses every write, or None while it writes."""
        return str(self._halted) if self._halted is not None else None

    @property
    def failing(self) -> str | None:
        """Why the last batch could not commit (the database refused its transaction), or None
        once a batch commits: the writer is not halted, but nothing it is given is recorded
        until the database takes a commit again (health reports it; :meth:`probe` tries)."""
        return self._failing

    def probe(self) -> Future[Committed[None]]:
        """Whether the writer can write and commit, on its own connection, lock and
        transaction, leaving nothing: the work inserts the next checkpoint's row, as a batch
        would, and rolls it back (a refused insert fails the future)."""
        return self.submit(_probe)

    def halt(self, error: StorageError) -> None:
        """Refuse every write from now on, with ``error`` (for example, a witness has cosigned a
        larger tree than this ledger holds). Only a restart lifts it, after an operator acted."""
        if self._halted is None:
            self._halted = error
            _log.error("ledger writes halted: %s", error)

    def submit(self, work: Work[T]) -> Future[Committed[T]]:
        """Queue ``work`` for the next commit batch. A work may run twice (when another work of
        its batch raises, the batch is rolled back and rerun with savepoints): it must touch
        nothing but the connection it is given, and rebuild anything it returns."""
        if self._closed:
            raise StorageError("the ledger writer is closed")
        future: Future[Committed[T]] = Future()
        self._queue.put([_Pending(work, future)])  # type: ignore[arg-type]
        return future

    def submit_many(self, works: Sequence[Work[T]]) -> list[Future[Committed[T]]]:
        """Queue several works as one submission: they are handed to the writer thread at once
        (one hand-off, where each :meth:`submit` costs one) and commit in the same batch, in
        this order, under one signed checkpoint, never split between two commits (a group
        larger than ``max_batch`` is committed whole). Each work keeps its own outcome, as if
        submitted alone: one that raises fails its own future only (the batch is rerun with
        savepoints, as for works submitted apart). The futures are in the order of ``works``."""
        if self._closed:
            raise StorageError("the ledger writer is closed")
        pending = [_Pending(work, Future[Committed[T]]()) for work in works]
        if pending:
            self._queue.put(pending)  # type: ignore[arg-type]
        return [item.future for item in pending]

    def append(self, *drafts: EntryDraft) -> Future[Committed[None]]:
        """Append entries that record no other state, in one work: one commit, one signed
        checkpoint and a receipt per entry (the batch path for entries alone; benchmark 8
        appends 100 at a time this way)."""
        return self.submit(lambda _connection, _seq: (None, drafts))

    def append_many(self, groups: Sequence[Sequence[EntryDraft]]) -> list[Future[Committed[None]]]:
        """Append groups of entries that record no other state, each group its own work of
        one :meth:`submit_many` submission: one commit and one signed checkpoint for them
        all, and for each group a :class:`Committed` with a receipt per entry."""
        return self.submit_many([_appending(tuple(group)) for group in groups])

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit what is queued, then stop the writer thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        stopping, previous = False, 1
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, submissions = list(first), 1
            # Under concurrent load (the last batch had several submissions), the callers it
            # just answered are about to submit again: linger while works keep arriving, up to
            # LINGER after the last one, so that they share this commit instead of waiting a whole
            # commit for the next (a single caller never waits for it, even one that submits
            # many works at once).
            linger = LINGER if previous > 1 else 0.0
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get(timeout=linger) if linger else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.extend(item)  # a submission's works are never split between commits
                submissions += 1
            previous = submissions
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Pending[object]]) -> None:
        # A caller that gave up (its RPC was cancelled) cancelled its future: skip its work. From
        # here on the futures are running and can no longer be cancelled under our feet.
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not batch:
            return
        if self._halted is not None:
            for item in batch:
                item.future.set_exception(self._halted)
            return
        started = time.perf_counter()
        try:
            try:
                size, note, known = self._write(batch, careful=False)
            except _WorkFailed:
                # A work raised: nothing was committed. Run the batch again with a savepoint
                # around each work, so that the others still commit (works are re-runnable:
                # they read and write only inside the transaction).
                size, note, known = self._write(batch, careful=True)
        except RolledBack as exc:
            self._head = None
            self.halt(exc)
            for item in batch:
                item.future.set_exception(exc)
            return
        except Exception as exc:  # the transaction failed as a whole: nothing was committed
            self._head = None
            reason, self._failing = self._failing, _reason(exc)
            if reason == self._failing:  # the same failure again: one line, not a traceback
                _log.error("ledger batch of %d failed again: %s", len(batch), reason)
            else:
                _log.exception("ledger batch of %d failed", len(batch))
            error = exc if isinstance(exc, LedgerError) else StorageError("ledger commit failed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        self._failing = None
        if self._observe is not None:
            stats = BatchStats(
                works=len(batch),
                entries=sum(len(item.bodies) for item in batch),
                tree_size=size,
                seconds=time.perf_counter() - started,
                checkpoint=note,
            )
            try:
                self._observe(stats)
            except Exception:  # an observer's failure must not fail the commit it observes
                _log.exception("ledger observer failed")
        for item in batch:
            if item.error is not None:
                item.future.set_exception(item.error)
            else:
                item.future.set_result(Committed(item.value, _receipts(item, note, size, known)))

    def _write(
        self, batch: list[_Pending[object]], *, careful: bool
    ) -> tuple[int, bytes, dict[tuple[int, int], bytes]]:
        """One transaction for the whole batch. Savepoints cost a round trip each, so the first
        attempt runs the works without them; only a work that raises makes the batch ``careful``
        (a savepoint per work, the failing one rolled back alone)."""
        with self._engine.connect() as connection, writing(connection).begin():
            lock_ledger(connection)
            head = self._current_head(connection)
            frontier = head.frontier
            # Nodes a receipt's proof can need: the frontier before the batch and the batch's own
            # (the left siblings of leaf i are the frontier at size i; its right ones are newer).
            known = dict(zip(_decomposition(0, frontier.size), frontier.hashes, strict=True))
            prev = head.last_hash.hex() if head.last_hash else GENESIS_PREV
            entry_rows: list[tuple[int, bytes, bytes]] = []
            node_rows: list[tuple[int, int, bytes]] = []
            for item in batch:
                savepoint = connection.begin_nested() if careful else None
                try:
                    value, drafts = item.work(connection, frontier.size + 1)
                    now = format_time(self._clock())  # once for the work's entries
                    placed, hashes, link = [], [], prev
                    for offset, draft in enumerate(drafts):
                        body = draft.encode_at(frontier.size + 1 + offset, now, link)
                        digest = leaf_hash(body)
                        placed.append(body)
                        hashes.append(digest)
                        link = digest.hex()
                    if savepoint is not None:
                        savepoint.commit()
                except Exception as exc:
                    if savepoint is None:
                        raise _WorkFailed from exc  # roll back all; rerun the batch carefully
                    savepoint.rollback()
                    item.error = exc
                    continue
                item.value, item.first_seq = value, frontier.size + 1
                item.bodies, item.hashes = tuple(placed), tuple(hashes)
                for body, digest in zip(placed, hashes, strict=True):
                    entry_rows.append((frontier.size + 1, digest, body))
                    for level, index, node in frontier.append(digest):
                        known[level, index] = node
                        node_rows.append((level, index, node))
                prev = link
            if entry_rows:
                _insert(connection, entries, entry_rows)
                _insert(connection, nodes, node_rows)
                if self._history is not None and self._consistent_to != head.frontier.size:
                    # A head read from the database (the first batch, another replica's, or
                    # someone else's rows): check it extends what was signed before.
                    self._history.check(
                        self._origin,
                        frontier.size,
                        lambda size: prefetched(connection, lambda node: root_at(size, node), None),
                    )
            note = sign_checkpoint(
                Checkpoint(self._origin, frontier.size, frontier.root()), self._signers
            )
            if entry_rows:
                connection.execute(
                    _INSERT_CHECKPOINT,
                    {"size": frontier.size, "note": note, "created": datetime.now(UTC)},
                )
        self._head = _Head(frontier, bytes.fromhex(prev) if frontier.size else None)
        self.nodes.put_all(known)  # committed: only now may a proof rely on them
        if entry_rows:
            self._consistent_to = frontier.size
            if self._history is not None:
                self._history.record(self._origin, frontier.size, frontier.root())
        return frontier.size, note, known

    def _current_head(self, connection: Connection) -> _Head:
        size = connection.execute(SIZE).scalar_one()
        if self._head is None or self._head.frontier.size != size:
            self._head = _Head.load(connection)  # first batch, or another replica appended
        tip = self._head.frontier
        return _Head(Frontier(tip.size, tip.hashes), self._head.last_hash)


#: Rows per multi-row INSERT on PostgreSQL: far below its 65,535 parameters per statement.
_ROWS_PER_INSERT = 1000


def _insert(connection: Connection, table: Table, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert a batch's rows (tuples in the table's column order) through the driver: SQLAlchemy
    Core's per-row parameter processing cost more than SQLite's insert itself. On SQLite, one
    ``executemany``, which runs in process. On PostgreSQL, multi-row ``INSERT ... VALUES``
    statements: psycopg's ``executemany`` sends one INSERT per row, which took 42% of the
    writer's time there (docs/performance.md, benchmark 3)."""
    names = ", ".join(column.name for column in table.columns)
    # Names from the schema and placeholders only: every value is a bound parameter.
    head = f"INSERT INTO {table.name} ({names}) VALUES "  # noqa: S608
    placeholders = "(" + ", ".join([marker(connection)] * len(table.columns)) + ")"
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql(head + placeholders, list(rows))
        return
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[start : start + _ROWS_PER_INSERT]
        connection.exec_driver_sql(
            head + ", ".join([placeholders] * len(part)),
            tuple(value for row in part for value in row),
        )


def _appending(drafts: tuple[EntryDraft, ...]) -> Work[None]:
    return lambda _connection, _seq: (None, drafts)


def _probe(connection: Connection, seq: int) -> tuple[None, Sequence[EntryDraft]]:
    with connection.begin_nested() as savepoint:
        connection.execute(
            _INSERT_CHECKPOINT, {"size": seq, "note": b"probe", "created": datetime.now(UTC)}
        )
        savepoint.rollback()
    return None, ()


def _reason(exc: BaseException) -> str:
    """A failed commit's cause in one line for the operator: the driver's message (statement
    parameters are hidden by the engine), never a traceback."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__


class _WorkFailed(Exception):
    """A work raised in a batch run without savepoints: roll the transaction back."""


def _receipts(
    item: _Pending[object], note: bytes, size: int, known: dict[tuple[int, int], bytes]
) -> Callable[[], tuple[Receipt, ...]]:
    """Make a work's receipts, later, from the nodes its batch knew (all its proofs need)."""
    first, bodies, hashes = item.first_seq, item.bodies, item.hashes

    def make() -> tuple[Receipt, ...]:
        def node(level: int, index: int) -> bytes:
            return known[level, index]

        made = []
        for i, (body, digest) in enumerate(zip(bodies, hashes, strict=True)):
            proof = tuple(inclusion_proof(first + i - 1, size, node))
            made.append(Receipt(first + i, digest, body, note, size, proof))
        return tuple(made)

    return make
