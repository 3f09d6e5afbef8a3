"""Ledger appends through LedgerWriter (32 appenders, group commit) beside bare batched inserts.

Project: 32 threads each append one entry at a time through
:class:`ledger.store.LedgerWriter` and wait for its receipt: the writer encodes, chains, stores the
entry, its Merkle nodes and one signed checkpoint per batch and commits durably; each thread then
takes its receipt, whose inclusion proof is made on that first access.

Baseline: the same entry rows (seq, hash, body, read back from the project's database) inserted
into a table of the same definition with the database driver alone, 100 rows per durable commit:
``sqlite3`` with WAL and synchronous=FULL, and ``psycopg`` (``executemany``) on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

import psycopg
from sqlalchemy.engine import make_url

import ledger
import ledger.store
from bench._build import _drafts
from bench._common import ORIGIN, RESULTS, Result, Sizes, dev_pki, log, postgres_database
from ledger import EntryDraft
from ledger.store import LINGER, BatchStats

T = TypeVar("T")

APPENDERS = 32
BASELINE_BATCH = 100


def _append(url: str, signer: ledger.Signer, drafts: list[EntryDraft]) -> dict[str, object]:
    """Append ``drafts`` from 32 threads through a LedgerWriter: entries/s and batch sizes."""
    engine = ledger.store.create_engine(url)
    ledger.store.create_schema(engine)
    batches: list[BatchStats] = []
    writer = ledger.store.LedgerWriter(engine, signer, ORIGIN, observe=batches.append)
    writer.append(drafts[0]).result()  # first batch loads the head; not timed
    batches.clear()
    elapsed = _from_threads(
        drafts[1:],
        lambda draft: writer.append(draft).result().receipts[0],  # the proof is made here
    )
    writer.close()
    engine.dispose()
    count = len(drafts) - 1
    return {
        "entries": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "batches": len(batches),
        "mean_batch": sum(b.entries for b in batches) / len(batches),
        "mean_commit_ms": 1000 * sum(b.seconds for b in batches) / len(batches),
    }


def _from_threads(items: list[T], call: Callable[[T], object]) -> float:
    """Seconds for 32 threads to ``call`` each of their share of ``items``, one at a time."""
    barrier = threading.Barrier(APPENDERS + 1)

    def run(mine: list[T]) -> None:
        barrier.wait()
        for item in mine:
            call(item)

    threads = [threading.Thread(target=run, args=(items[i::APPENDERS],)) for i in range(APPENDERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def _handoffs(count: int) -> float:
    """Calls/s of the same 32 threads through a group committer that does nothing: a queue, a
    thread that takes what is queued (lingering as the writer does) and answers each future.
    Not a target's baseline: the bound that handing work between Python threads puts on any
    library appending this way, on this machine, in this run."""
    work: queue.SimpleQueue[Future[None] | None] = queue.SimpleQueue()

    def committer() -> None:
        while (first := work.get()) is not None:
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(work.get(timeout=LINGER))  # type: ignore[arg-type]
            for future in batch:
                future.set_result(None)

    def submit(_item: int) -> None:
        future: Future[None] = Future()
        work.put(future)
        future.result()

    thread = threading.Thread(target=committer)
    thread.start()
    elapsed = _from_threads(list(range(count)), submit)
    work.put(None)
    thread.join()
    return count / elapsed


def _rows(url: str) -> list[tuple[int, bytes, bytes]]:
    engine = ledger.store.create_engine(url)
    with engine.connect() as connection:
        rows = list(ledger.store.iter_entries(connection))
    engine.dispose()
    return rows[1:]  # the untimed first entry


Row = tuple[int, bytes, bytes]


def _timed_batches(rows: list[Row], insert: Callable[[list[Row]], None]) -> float:
    began = time.perf_counter()
    for i in range(0, len(rows), BASELINE_BATCH):
        insert(rows[i : i + BASELINE_BATCH])
    return len(rows) / (time.perf_counter() - began)


def _sqlite_baseline(path: Path, rows: list[tuple[int, bytes, bytes]]) -> float:
    engine = ledger.store.create_engine(f"sqlite:///{path}")
    ledger.store.create_schema(engine)  # the same table definition
    engine.dispose()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")

    def insert(batch: list[tuple[int, bytes, bytes]]) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO ledger_entries (seq, hash, body) VALUES (?, ?, ?)",
                               batch)  # fmt: skip
        connection.execute("COMMIT")

    rate = _timed_batches(rows, insert)
    connection.close()
    return rate


def _postgres_baseline(url: str, rows: list[tuple[int, bytes, bytes]]) -> float:
    engine = ledger.store.create_engine(url)
    ledger.store.create_schema(engine)
    engine.dispose()
    parsed = make_url(url)
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                         dbname=parsed.database) as connection:  # fmt: skip

        def insert(batch: list[tuple[int, bytes, bytes]]) -> None:
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO ledger_entries (seq, hash, body) VALUES (%s, %s, %s)", batch
                )
            connection.commit()

        return _timed_batches(rows, insert)


def run(sizes: Sizes) -> list[Result]:
    pki = dev_pki(RESULTS / "cache" / "pki")
    signer = ledger.load_signer(pki / "ledger.key", ORIGIN)
    drafts = _drafts(sizes.append_entries + 1, seed=3)
    results = []
    handoffs = _handoffs(sizes.append_entries)
    log(f"3. {APPENDERS} threads through a group committer that does nothing: {handoffs:,.0f}/s")
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        log(f"3. ledger append, {APPENDERS} appenders, SQLite")
        url = f"sqlite:///{Path(tmp) / 'append.db'}"
        project = {**_append(url, signer, drafts), "handoff_only_rate": handoffs}
        rate = float(project["rate"])  # type: ignore[arg-type]
        baseline = _sqlite_baseline(Path(tmp) / "baseline.db", _rows(url))
        log(f"   {rate:,.0f} entries/s vs {baseline:,.0f} rows/s bare")
        results.append(Result(
            "3", f"ledger append, {APPENDERS} appenders, SQLite", "entries/s",
            rate, baseline, 0.25,
            notes="baseline: sqlite3 executemany of the same rows, 100 per commit, WAL, "
            "synchronous=FULL", details=project,
        ))  # fmt: skip
    log(f"3. ledger append, {APPENDERS} appenders, PostgreSQL")
    with postgres_database() as url, postgres_database() as baseline_url:
        project = {**_append(url, signer, drafts), "handoff_only_rate": handoffs}
        rate = float(project["rate"])  # type: ignore[arg-type]
        baseline = _postgres_baseline(baseline_url, _rows(url))
    log(f"   {rate:,.0f} entries/s vs {baseline:,.0f} rows/s bare")
    results.append(Result(
        "3", f"ledger append, {APPENDERS} appenders, PostgreSQL", "entries/s",
        rate, baseline, 0.5,
        notes="baseline: psycopg executemany of the same rows, 100 per commit",
        details=project,
    ))  # fmt: skip
    return results
