"""The ledger writer's batch path: many works in one submission (``submit_many``), and groups
of entries (``append_many``), committed together under one signed checkpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest
import sqlalchemy
from sqlalchemy import text

import ledger
import ledger.store
from ledger import Action, Actor, EntryDraft
from ledger.store import BatchStats, Committed, LedgerWriter
from tests.conftest import ORIGIN

ACTOR = Actor("spiffe://sinergi.dev/agency/customs/system/gateway", "cd" * 32)


def draft(i: int) -> EntryDraft:
    return EntryDraft(Action.DELIVER, ACTOR, objects=(f"alert:{i}",), digest=f"{i:064x}",
                      meta={"cursor": i})  # fmt: skip


def appending(*drafts: EntryDraft) -> ledger.store.Work[None]:
    return lambda _connection, _seq: (None, drafts)


@pytest.fixture
def engine(db_url: str) -> Iterator[sqlalchemy.Engine]:
    made = ledger.store.create_engine(db_url)
    yield made
    made.dispose()


def verified(engine: sqlalchemy.Engine, verifier: ledger.Verifier) -> tuple[int, int]:
    """(entries, stored checkpoints) of a ledger that verifies."""
    with engine.connect() as connection:
        checkpoints = list(ledger.store.iter_checkpoints(connection))
        report = ledger.verify_ledger(
            ledger.store.iter_entries(connection), checkpoints, [verifier]
        )
    return report.entries, len(checkpoints)


def assert_proven(committed: Sequence[Committed[object]], verifier: ledger.Verifier) -> None:
    for result in committed:
        for receipt in result.receipts:
            checkpoint = ledger.open_checkpoint(receipt.checkpoint, [verifier])
            assert checkpoint.size == receipt.tree_size
            ledger.verify_inclusion(receipt.seq - 1, checkpoint.size, receipt.entry_hash,
                                    receipt.inclusion_proof, checkpoint.root)  # fmt: skip


def test_a_submission_commits_its_works_in_order_under_one_checkpoint(
    engine: sqlalchemy.Engine, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    batches: list[BatchStats] = []
    writer = LedgerWriter(engine, signer, ORIGIN, observe=batches.append)
    try:
        writer.append(draft(0)).result(30)
        futures = writer.submit_many([appending(draft(i)) for i in range(1, 151)])
        committed = [future.result(30) for future in futures]
    finally:
        writer.close()
    assert [(b.works, b.entries, b.tree_size) for b in batches] == [(1, 1, 1), (150, 150, 151)]
    # in the order given, each with its own receipt, all under the one checkpoint
    assert [c.receipts[0].seq for c in committed] == list(range(2, 152))
    assert {c.receipts[0].tree_size for c in committed} == {151}
    with engine.connect() as connection:
        stored = [body for _seq, _hash, body in ledger.store.iter_entries(connection)]
    assert [c.receipts[0].entry for c in committed] == stored[1:]
    assert verified(engine, verifier) == (151, 2)
    assert_proven(committed, verifier)


def test_a_submission_larger_than_max_batch_is_not_split(
    engine: sqlalchemy.Engine, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    batches: list[BatchStats] = []
    writer = LedgerWriter(engine, signer, ORIGIN, max_batch=8, observe=batches.append)
    try:
        futures = writer.submit_many([appending(draft(i)) for i in range(20)])
        committed = [future.result(30) for future in futures]
    finally:
        writer.close()
    assert [b.works for b in batches] == [20]
    assert verified(engine, verifier) == (20, 1)
    assert_proven(committed, verifier)


def test_append_many_gives_each_group_its_receipts_under_one_checkpoint(
    engine: sqlalchemy.Engine, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    batches: list[BatchStats] = []
    writer = LedgerWriter(engine, signer, ORIGIN, observe=batches.append)
    groups = [[draft(100 * g + i) for i in range(100)] for g in range(3)]
    try:
        committed = [future.result(30) for future in writer.append_many(groups)]
    finally:
        writer.close()
    assert [(b.works, b.entries) for b in batches] == [(3, 300)]
    for g, result in enumerate(committed):
        assert [r.seq for r in result.receipts] == list(range(100 * g + 1, 100 * g + 101))
        decoded = [ledger.Entry.decode(r.entry) for r in result.receipts]
        assert [e.objects for e in decoded] == [d.objects for d in groups[g]]
    assert verified(engine, verifier) == (300, 1)
    assert_proven(committed, verifier)


def test_a_failing_work_of_a_submission_fails_alone(
    engine: sqlalchemy.Engine, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    def broken(connection: sqlalchemy.Connection, _seq: int) -> tuple[None, list[EntryDraft]]:
        connection.execute(text("INSERT INTO ledger_nodes VALUES (99, 0, :h)"), {"h": b"\0"})
        raise RuntimeError("boom")

    batches: list[BatchStats] = []
    writer = LedgerWriter(engine, signer, ORIGIN, observe=batches.append)
    try:
        futures = writer.submit_many([appending(draft(0)), broken, appending(draft(1), draft(2))])
        assert futures[0].result(30).receipts[0].seq == 1
        with pytest.raises(RuntimeError, match="boom"):
            futures[1].result(30)
        assert [r.seq for r in futures[2].result(30).receipts] == [2, 3]
    finally:
        writer.close()
    assert [(b.works, b.entries) for b in batches] == [(3, 3)]
    with engine.connect() as connection:
        level = connection.execute(text("SELECT count(*) FROM ledger_nodes WHERE level = 99"))
        assert level.scalar_one() == 0  # the failed work's writes were rolled back
    assert verified(engine, verifier) == (3, 1)


def test_a_cancelled_work_of_a_submission_is_skipped(
    engine: sqlalchemy.Engine, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    """A caller that gives up on one work of a submission (its RPC was cancelled) cancels that
    future: the others commit without it."""
    running, release = threading.Event(), threading.Event()

    def held(_connection: sqlalchemy.Connection, _seq: int) -> tuple[None, list[EntryDraft]]:
        running.set()
        assert release.wait(30)
        return None, [draft(0)]

    writer = LedgerWriter(engine, signer, ORIGIN)
    try:
        first = writer.submit(held)  # keeps the writer busy while the submission waits
        assert running.wait(30)
        futures = writer.submit_many([appending(draft(i)) for i in range(1, 4)])
        assert futures[1].cancel()
        release.set()
        assert first.result(30).receipts[0].seq == 1
        assert futures[0].result(30).receipts[0].seq == 2
        with pytest.raises(CancelledError):
            futures[1].result(30)
        assert futures[2].result(30).receipts[0].seq == 3
    finally:
        release.set()
        writer.close()
    assert verified(engine, verifier) == (3, 2)


def test_submissions_and_single_works_from_many_threads_make_one_chain(
    engine: sqlalchemy.Engine, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    writer = LedgerWriter(engine, signer, ORIGIN)

    def caller(n: int) -> list[int]:
        if n % 2:
            return [writer.append(draft(1000 * n)).result(30).receipts[0].seq]
        groups = [[draft(1000 * n + 10 * g + i) for i in range(g + 1)] for g in range(4)]
        return [r.seq for f in writer.append_many(groups) for r in f.result(30).receipts]

    try:
        with ThreadPoolExecutor(8) as pool:
            seqs = [seq for mine in pool.map(caller, range(40)) for seq in mine]
    finally:
        writer.close()
    total = 20 * 1 + 20 * (1 + 2 + 3 + 4)
    assert sorted(seqs) == list(range(1, total + 1))
    entries, checkpoints = verified(engine, verifier)
    assert entries == total
    assert checkpoints <= 40  # at most one per submission, fewer where they shared a commit


def test_an_empty_submission_and_a_closed_writer(
    engine: sqlalchemy.Engine, signer: ledger.Signer
) -> None:
    writer = LedgerWriter(engine, signer, ORIGIN)
    assert writer.submit_many([]) == []
    assert writer.append_many([]) == []
    writer.close()
    with pytest.raises(ledger.StorageError, match="closed"):
        writer.submit_many([appending(draft(0))])
