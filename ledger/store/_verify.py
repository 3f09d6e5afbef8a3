"""Verification of a ledger in a database, in chunks, on every core.

The checks are :func:`ledger.verify_ledger`'s (``ledger/_verify.py``), with the same messages and
the same first failure; only the work is split. The entries are cut into runs of a power of two,
each one perfect subtree of the RFC 6962 tree (section 2.1.1). A worker process reads its run
through its own connection, verifies its entries from the stored hash of the entry before
(which the previous run checks against that entry's content), computes the run's compact range
at every checkpoint size within it, and checks the signatures of those checkpoints. The parent
then folds the runs together in order and compares every checkpoint's root.

Why: one Ed25519 verification per stored checkpoint and a canonical-form check per entry made
``verify`` of a busy million-entry ledger take about 20 s on one core (docs/performance.md,
benchmark 4); the work is independent per run, so it spreads over processes (the GIL rules out
threads).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from sqlalchemy import func, select

from ledger._entry import GENESIS_PREV
from ledger._envelopes import NumberCheck
from ledger._errors import VerificationError
from ledger._merkle import EMPTY_ROOT, node_hash
from ledger._note import Checkpoint, Verifier
from ledger._verify import (
    Report,
    check_checkpoints,
    check_covered,
    check_truncation,
    collect,
    fold,
    open_stored,
    open_trusted,
    verify_ledger,
    walk,
)
from ledger.store._engine import create_engine, snapshot
from ledger.store._reads import iter_checkpoints, iter_entries
from ledger.store._schema import entries

#: The smallest run handed to a worker: below it, starting processes costs more than it saves.
MIN_CHUNK = 1 << 14
_SPAN = select(func.count(), func.min(entries.c.seq), func.max(entries.c.seq))


def verify_database(
    url: str,
    verifiers: Sequence[Verifier],
    *,
    trusted: Sequence[bytes] = (),
    workers: int | None = None,
    chunk: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """What :func:`ledger.verify_ledger` checks of the ledger at ``url``, with ``workers``
    processes (one per available core by default; 1 verifies in this process). ``chunk`` (a
    power of two) fixes the run size, for tests. Entries appended while it runs are left for
    the next verification; every checkpoint stored when it starts must be covered."""
    engine = create_engine(url)
    try:
        # One snapshot for the checkpoints and the count (PostgreSQL's default READ COMMITTED
        # takes one per statement): a batch committed in between would otherwise show entries
        # beyond every checkpoint read, which is what a forger's entries look like.
        with snapshot(engine.connect()) as connection:
            stored = list(iter_checkpoints(connection))
            count, low, high = connection.execute(_SPAN).one()
            if count and (low != 1 or high != count):
                # A gap or a stray seq: the sequential walk names the entry as it always has.
                return verify_ledger(
                    iter_entries(connection), stored, verifiers, trusted=trusted, progress=progress
                )
    finally:
        engine.dispose()
    workers = workers or _cores()
    size = chunk or _chunk_size(count, workers)
    if size < 1 or size & (size - 1):
        raise ValueError("the chunk size must be a power of two")
    runs = [(first, min(first + size - 1, count)) for first in range(1, count + 1, size)]
    # Trusted checkpoints are opened here, but a failure to open one is reported only after
    # every stored one has opened, as verify_ledger does.
    kept: list[Checkpoint | VerificationError] = []
    for index, note in enumerate(trusted):
        try:
            kept.append(open_trusted(note, index, verifiers))
        except VerificationError as exc:
            kept.append(exc)
    sizes = sorted({cp.size for cp in kept if isinstance(cp, Checkpoint)} | {s for s, _ in stored})
    stored_sizes = [s for s, _ in stored]  # smallest first (iter_checkpoints)

    def within(values: list[int], first: int, last: int) -> slice:
        return slice(bisect_left(values, first), bisect_right(values, last))

    jobs = [
        _Job(
            url,
            first,
            last,
            stored[within(stored_sizes, first, last)],
            sizes[within(sizes, first, last)],
            list(verifiers),
        )
        for first, last in runs
    ]
    results = _run(jobs, workers, progress)
    return _combine(results, stored, kept, verifiers, count=count, size=size)


@dataclass
class _Job:
    url: str
    first: int
    last: int
    notes: list[tuple[int, bytes]]
    sizes: list[int]
    verifiers: list[Verifier]


@dataclass
class _Run:
    """What a worker found in one run: picklable, errors as (message, seq)."""

    first: int
    last: int
    opened: list[tuple[int, Checkpoint]] = field(default_factory=list)
    note_error: tuple[str, int | None] | None = None
    #: at each checkpoint size within the run, the fold of the run's compact range there
    at: dict[int, bytes] = field(default_factory=dict)
    hashes: list[bytes] = field(default_factory=list)
    messages: list[tuple[int, tuple[str, ...], dict[str, int] | None]] = field(default_factory=list)
    error: tuple[str, int | None] | None = None


def _verify_run(job: _Job) -> _Run:
    """A worker's part: the run's checkpoint signatures, then its entries."""
    run = _Run(job.first, job.last)
    for size, note in job.notes:
        try:
            run.opened.append((size, open_stored(note, size, job.verifiers)))
        except VerificationError as exc:
            run.note_error = (str(exc), exc.seq)
            break

    def reached(size: int, hashes: list[bytes]) -> None:
        # MTH(D[size]) is the fold of (the runs before || this run's range): fold the run's
        # part here, in parallel, and leave the parent one hash per run before (_combine).
        run.at[size] = fold(hashes)

    engine = create_engine(job.url)  # one per run, disposed: nothing stays open in the caller
    try:
        with engine.connect() as connection:
            prev = GENESIS_PREV.encode()
            if job.first > 1:  # the stored hash of the entry before: the previous run checks it
                for _seq, digest, _body in iter_entries(connection, job.first - 1, job.first - 1):
                    prev = digest.hex().encode()
            walked = walk(
                iter_entries(connection, job.first, job.last),
                job.first - 1,
                prev,
                set(job.sizes),
                reached,
            )
    except VerificationError as exc:
        run.error = (str(exc), exc.seq)
        return run
    finally:
        engine.dispose()
    run.hashes = walked.hashes
    run.messages = walked.messages
    if walked.entries != job.last - job.first + 1:
        missing = job.first + walked.entries
        run.error = (f"entry {missing} is missing", missing)
    return run


def _run(jobs: list[_Job], workers: int, progress: Callable[[int], None] | None) -> list[_Run]:
    if workers == 1 or len(jobs) <= 1:
        runs = []
        for job in jobs:
            runs.append(_verify_run(job))
            if progress is not None:
                progress(job.last)
        return runs
    try:
        return _in_processes(jobs, workers, progress)
    except (OSError, BrokenProcessPool):
        # No processes here (a sandbox, a worker killed for memory): the same work, in this one.
        return _run(jobs, 1, progress)


def _in_processes(
    jobs: list[_Job], workers: int, progress: Callable[[int], None] | None
) -> list[_Run]:
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    # A worker makes no reference cycles worth collecting (rows and hashes are freed by their
    # counts), and the collector's passes over its young tuples cost about 5% of its time.
    pool: Executor = ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=context, initializer=gc.disable
    )
    with pool:
        futures: dict[Future[_Run], int] = {
            pool.submit(_verify_run, job): i for i, job in enumerate(jobs)
        }
        done = 0
        results: list[_Run | None] = [None] * len(jobs)
        for future in as_completed(futures):
            run = future.result()
            results[futures[future]] = run
            done += run.last - run.first + 1
            if progress is not None:
                progress(done)
    return [run for run in results if run is not None]


def _combine(
    runs: list[_Run],
    stored: list[tuple[int, bytes]],
    kept: list[Checkpoint | VerificationError],
    verifiers: Sequence[Verifier],
    *,
    count: int,
    size: int,
) -> Report:
    """Fold the runs in order, raising the failure verify_ledger would raise first."""

    # Stored checkpoints are opened in size order, as verify_ledger opens them: those outside
    # the runs (size 0, or beyond the last entry) are ordered with the runs' own.
    def in_order() -> Iterator[tuple[str, int, Checkpoint]]:
        for s, n in stored:
            if s >= 1:
                break
            yield "stored", s, open_stored(n, s, verifiers)
        for run in runs:
            for label, cp in run.opened:
                yield "stored", label, cp
            if run.note_error is not None:
                raise VerificationError(*run.note_error)
        for s, n in stored:
            if s > count:
                yield "stored", s, open_stored(n, s, verifiers)
        for index, opened in enumerate(kept):
            if isinstance(opened, VerificationError):
                raise opened
            yield "trusted", index, opened

    due, stored_count, latest = collect(in_order())
    check_checkpoints(due.pop(0, []), EMPTY_ROOT)
    prefix: list[bytes] = []  # the compact range of the runs so far: subtrees of >= size leaves
    numbers = NumberCheck()
    for index, run in enumerate(runs):
        for at, local in sorted(run.at.items()):
            # fold(prefix + the run's range) = fold(prefix + [fold(the run's range)])
            check_checkpoints(due.pop(at), fold([*prefix, local]))
        if run.error is not None:
            raise VerificationError(*run.error)
        numbers.feed(run.messages)
        if run.last - run.first + 1 < size:  # the last run, partial
            prefix = prefix + run.hashes
            break
        # A whole run is one perfect subtree: append it as a leaf one level up per bit of size.
        (node,), position = run.hashes, index
        while position & 1:
            node = node_hash(prefix.pop(), node)
            position >>= 1
        prefix.append(node)
    check_truncation(due, count)
    check_covered(count, latest)
    return Report(count, fold(prefix), stored_count, latest, max(stored)[1] if stored else None)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _chunk_size(count: int, workers: int) -> int:
    """A power of two giving each worker about four runs (so that they finish together)."""
    target = max(MIN_CHUNK, -(-count // (4 * workers)))
    return 1 << (target - 1).bit_length()
