"""The ledger on real SQLite and PostgreSQL: group commit, append-only triggers, tampering."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text

import ledger
import ledger.store
from ledger import Action, Actor, EntryDraft
from ledger.store import LedgerWriter
from tests.conftest import ORIGIN, as_dba

ACTOR = Actor("spiffe://sinergi.dev/agency/police/system/gateway", "ab" * 32)


def draft(i: int) -> EntryDraft:
    return EntryDraft(Action.READ, ACTOR, objects=(f"alert:{i}",), digest=f"{i:064x}")


def fill(url: str, signer: ledger.Signer, batches: Sequence[int]) -> None:
    """Append entries in commit batches of the given sizes."""
    engine = ledger.store.create_engine(url)
    writer = LedgerWriter(engine, signer, ORIGIN)
    n = 0
    try:
        for size in batches:
            futures = [writer.append(draft(n + i)) for i in range(size)]
            n += size
            for future in futures:
                future.result(30)
    finally:
        writer.close()
        engine.dispose()


def sinergi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def verify(url: str, pki: Path, *extra: str) -> tuple[int, dict[str, object]]:
    result = sinergi(
        "ledger", "verify", "--db", url, "--ledger-key", str(pki / "ledger.vkey"), "--json", *extra
    )
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


def test_concurrent_appenders_share_batches_and_make_one_linear_chain(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    engine = ledger.store.create_engine(db_url)
    writer = LedgerWriter(engine, signer, ORIGIN)
    try:
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda i: writer.append(draft(i)).result(30), range(400)))
    finally:
        writer.close()
    seqs = sorted(r.receipts[0].seq for r in results)
    assert seqs == list(range(1, 401))
    with engine.connect() as connection:
        checkpoints = list(ledger.store.iter_checkpoints(connection))
        report = ledger.verify_ledger(
            ledger.store.iter_entries(connection), checkpoints, [verifier]
        )
    engine.dispose()
    assert report.entries == 400
    assert len(checkpoints) < 400  # group commit: fewer commits (one checkpoint each) than appends
    for result in results:  # every receipt proves inclusion under its own signed checkpoint
        receipt = result.receipts[0]
        checkpoint = ledger.open_checkpoint(receipt.checkpoint, [verifier])
        ledger.verify_inclusion(
            receipt.seq - 1, checkpoint.size, receipt.entry_hash, receipt.inclusion_proof,
            checkpoint.root,
        )  # fmt: skip


def test_receipts_made_after_later_batches_prove_inclusion_in_their_own_checkpoint(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    """Receipts are made on first access, from the nodes their batch knew: asked for after
    more batches have committed, they still prove inclusion in their own batch's checkpoint."""
    engine = ledger.store.create_engine(db_url)
    writer = LedgerWriter(engine, signer, ORIGIN)
    try:
        first = writer.append(draft(0), draft(1), draft(2)).result(30)
        fill_futures = [writer.append(draft(i)) for i in range(3, 40)]
        later = [future.result(30) for future in fill_futures]
    finally:
        writer.close()
        engine.dispose()
    receipts = first.receipts
    assert first.receipts is receipts  # made once
    assert [r.seq for r in receipts] == [1, 2, 3]
    for receipt in receipts + later[-1].receipts:
        checkpoint = ledger.open_checkpoint(receipt.checkpoint, [verifier])
        assert checkpoint.size == receipt.tree_size
        assert receipt.entry_hash == ledger.leaf_hash(receipt.entry)
        ledger.verify_inclusion(
            receipt.seq - 1, checkpoint.size, receipt.entry_hash, receipt.inclusion_proof,
            checkpoint.root,
        )  # fmt: skip
    assert receipts[0].tree_size == 3 < later[-1].receipts[0].tree_size


def test_a_batch_larger_than_one_insert_statement(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    """PostgreSQL gets multi-row INSERTs of at most 1,000 rows each: a work of 2,500 entries
    spans three statements for its entries, and every entry and node lands once."""
    engine = ledger.store.create_engine(db_url)
    writer = LedgerWriter(engine, signer, ORIGIN)
    try:
        writer.append(draft(0)).result(30)
        committed = writer.append(*(draft(i) for i in range(1, 2501))).result(60)
    finally:
        writer.close()
    assert [r.seq for r in committed.receipts] == list(range(2, 2502))
    with engine.connect() as connection:
        nodes = connection.execute(text("SELECT count(*) FROM ledger_nodes")).scalar_one()
        report = ledger.verify_ledger(
            ledger.store.iter_entries(connection),
            ledger.store.iter_checkpoints(connection),
            [verifier],
        )
        proof = ledger.store.prove(connection, 1234)
    engine.dispose()
    assert report.entries == 2501
    # every leaf, and one node per completed perfect subtree above the leaves
    assert nodes == 2501 + 2501 - bin(2501).count("1")
    checkpoint = ledger.open_checkpoint(proof.checkpoint, [verifier])
    ledger.verify_inclusion(1233, checkpoint.size, proof.entry_hash, proof.inclusion_proof,
                            checkpoint.root)  # fmt: skip


def test_failing_work_does_not_take_its_batch_down(
    sqlite_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    engine = ledger.store.create_engine(sqlite_url)
    writer = LedgerWriter(engine, signer, ORIGIN)

    def broken(connection: sqlalchemy.Connection, seq: int) -> tuple[None, list[EntryDraft]]:
        connection.execute(text("INSERT INTO ledger_nodes VALUES (99, 0, x'00')"))
        raise RuntimeError("boom")

    try:
        futures = [writer.append(draft(0)), writer.submit(broken), writer.append(draft(1))]
        assert futures[0].result(10).receipts[0].seq == 1
        with pytest.raises(RuntimeError, match="boom"):
            futures[1].result(10)
        assert futures[2].result(10).receipts[0].seq == 2
    finally:
        writer.close()
    with engine.connect() as connection:
        nodes = connection.execute(text("SELECT count(*) FROM ledger_nodes WHERE level = 99"))
        assert nodes.scalar_one() == 0  # the failed work's writes were rolled back
        report = ledger.verify_ledger(
            ledger.store.iter_entries(connection),
            ledger.store.iter_checkpoints(connection),
            [verifier],
        )
    engine.dispose()
    assert report.entries == 2


@pytest.mark.parametrize("table", ["ledger_entries", "ledger_nodes", "ledger_checkpoints"])
@pytest.mark.parametrize("statement", ["UPDATE {t} SET {c} = {c}", "DELETE FROM {t}"])
def test_triggers_refuse_update_and_delete(
    db_url: str, signer: ledger.Signer, table: str, statement: str
) -> None:
    fill(db_url, signer, [3])
    column = {"ledger_entries": "body", "ledger_nodes": "hash", "ledger_checkpoints": "note"}[table]
    engine = sqlalchemy.create_engine(db_url)
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
        with engine.begin() as connection:
            connection.execute(text(statement.format(t=table, c=column)))
    engine.dispose()


Tamper = Callable[[str], None]


def _edit_content(url: str) -> None:
    as_dba(url, "UPDATE ledger_entries SET body = REPLACE(body, 'alert:4', 'alert:9') "
                "WHERE seq = 5" if url.startswith("sqlite") else
                "UPDATE ledger_entries SET body = convert_to(replace(convert_from(body, 'UTF8'), "
                "'alert:4', 'alert:9'), 'UTF8') WHERE seq = 5")  # fmt: skip


def _rewrite_without_key(url: str) -> None:
    """Rewrite entry 5 and recompute every later hash and link consistently, but no signature."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT seq, body FROM ledger_entries ORDER BY seq")).all()
    engine.dispose()
    prev = ledger.Entry.decode(bytes(rows[3].body)).hash.hex()
    statements = []
    for seq, body in rows[4:]:
        entry = ledger.Entry.decode(bytes(body))
        objects = ("alert:forged",) if seq == 5 else entry.objects
        forged = ledger.Entry(entry.seq, entry.time, entry.action, entry.actor, objects,
                              entry.digest, entry.outcome, entry.meta, prev)  # fmt: skip
        encoded = forged.encode()
        prev = forged.hash.hex()
        blob = f"x'{encoded.hex()}'" if url.startswith("sqlite") else f"'\\x{encoded.hex()}'"
        digest = (
            f"x'{forged.hash.hex()}'" if url.startswith("sqlite") else f"'\\x{forged.hash.hex()}'"
        )
        statements.append(
            f"UPDATE ledger_entries SET body = {blob}, hash = {digest} WHERE seq = {seq}"
        )
    as_dba(url, *statements)


def _rewrite_and_drop_checkpoints(url: str) -> None:
    _rewrite_without_key(url)
    as_dba(url, "DELETE FROM ledger_checkpoints WHERE size >= 5")


TAMPERS: dict[str, tuple[Tamper, int | None]] = {
    "content edited": (_edit_content, 5),
    "row deleted": (lambda url: as_dba(url, "DELETE FROM ledger_entries WHERE seq = 4"), 4),
    "row inserted": (
        lambda url: as_dba(
            url,
            "UPDATE ledger_entries SET seq = seq + 1000 WHERE seq >= 6",
            "UPDATE ledger_entries SET seq = seq - 999 WHERE seq >= 1006",
            "INSERT INTO ledger_entries (seq, hash, body) "
            "SELECT 6, hash, body FROM ledger_entries WHERE seq = 5",
        ),
        6,
    ),
    "two rows swapped": (
        lambda url: as_dba(
            url,
            "UPDATE ledger_entries SET seq = -1 WHERE seq = 3",
            "UPDATE ledger_entries SET seq = 3 WHERE seq = 7",
            "UPDATE ledger_entries SET seq = 7 WHERE seq = -1",
        ),
        3,
    ),
    "tail truncated": (lambda url: as_dba(url, "DELETE FROM ledger_entries WHERE seq > 8"), 9),
    "consistent rewrite without the key": (_rewrite_without_key, 8),
    # (a) of the witnessed-ledger tamper matrix: nothing left to check the entries against
    "every checkpoint deleted": (lambda url: as_dba(url, "DELETE FROM ledger_checkpoints"), 1),
    # (d): a keyless rewrite made consistent, with the checkpoints it would fail deleted
    "consistent rewrite, its checkpoints deleted": (_rewrite_and_drop_checkpoints, 5),
    "entries appended without a checkpoint": (
        lambda url: as_dba(url, "DELETE FROM ledger_checkpoints WHERE size = 10"),
        9,
    ),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_verify_detects_tampering_and_names_the_entry(
    db_url: str, signer: ledger.Signer, pki: Path, name: str
) -> None:
    fill(db_url, signer, [1, 3, 4, 2])  # checkpoints at 1, 4, 8, 10
    code, report = verify(db_url, pki)
    assert code == 0, report
    assert report["entries"] == 10
    tamper, seq = TAMPERS[name]
    tamper(db_url)
    code, report = verify(db_url, pki)
    assert code == 1, report
    assert report["ok"] is False
    assert report["seq"] == seq, report


def test_verify_reports_missing_triggers(db_url: str, signer: ledger.Signer, pki: Path) -> None:
    fill(db_url, signer, [2])
    as_dba(db_url)
    code, report = verify(db_url, pki)
    assert code == 1
    assert "append-only triggers missing" in str(report["error"])


def test_verify_checks_an_external_checkpoint(
    db_url: str, signer: ledger.Signer, pki: Path, tmp_path: Path
) -> None:
    """A rewrite by someone holding the key is caught by a checkpoint kept outside."""
    fill(db_url, signer, [5])
    engine = ledger.store.create_engine(db_url)
    with engine.connect() as connection:
        kept = ledger.store.latest_checkpoint(connection)
    engine.dispose()
    assert kept is not None
    (tmp_path / "kept.note").write_bytes(kept)
    as_dba(db_url, "DELETE FROM ledger_checkpoints", "DELETE FROM ledger_nodes",
           "DELETE FROM ledger_entries", restore=True)  # fmt: skip
    fill(db_url, signer, [6])  # a fresh, validly signed, different history
    assert verify(db_url, pki)[0] == 0  # internally consistent...
    code, report = verify(db_url, pki, "--checkpoint", str(tmp_path / "kept.note"))
    assert code == 1
    assert "history was rewritten" in str(report["error"])


def test_database_errors_do_not_carry_statement_parameters(sqlite_url: str) -> None:
    """Errors end up in logs; the values written (personal data) must not."""
    engine = ledger.store.create_engine(sqlite_url)
    insert = text("INSERT INTO ledger_nodes VALUES (0, 0, :secret)")
    with engine.begin() as connection:
        connection.execute(insert, {"secret": b"PASSPORT-C1234567"})
        with pytest.raises(sqlalchemy.exc.IntegrityError) as caught:
            connection.execute(insert, {"secret": b"PASSPORT-C1234567"})
    engine.dispose()
    assert "C1234567" not in str(caught.value)


def test_a_caller_that_gives_up_does_not_stop_the_writer(
    sqlite_url: str, signer: ledger.Signer
) -> None:
    engine = ledger.store.create_engine(sqlite_url)
    writer = LedgerWriter(engine, signer, ORIGIN)
    release = threading.Event()

    def slow(connection: sqlalchemy.Connection, seq: int) -> tuple[None, list[EntryDraft]]:
        release.wait(10)
        return None, [draft(0)]

    try:
        first = writer.submit(slow)  # occupies the writer
        abandoned = writer.append(draft(1))
        assert abandoned.cancel()  # as asyncio does when an RPC is cancelled
        release.set()
        assert first.result(10).receipts[0].seq == 1
        assert writer.append(draft(2)).result(10).receipts[0].seq == 2  # still writing
    finally:
        writer.close()
        engine.dispose()


def _statements(engine: sqlalchemy.Engine) -> list[str]:
    """Every statement ``engine`` sends from now on, for counting round trips."""
    sent: list[str] = []
    sqlalchemy.event.listen(
        engine, "before_cursor_execute", lambda _c, _cur, statement, *_: sent.append(statement)
    )
    return sent


def test_proofs_read_their_nodes_in_one_query_and_match_node_by_node_reads(
    db_url: str, signer: ledger.Signer
) -> None:
    fill(db_url, signer, [1, 7, 13, 2, 40, 1, 19])  # 83 entries, a checkpoint per batch
    engine = ledger.store.create_engine(db_url)
    sent = _statements(engine)
    with engine.connect() as connection:
        one_by_one = ledger.store.node_reader(connection)
        sizes = [size for size, _note in ledger.store.iter_checkpoints(connection)][1:]
        for size in sizes:
            root = ledger.root_at(size, one_by_one)
            for seq in (1, size // 2 + 1, size):
                receipt = ledger.store.prove(connection, seq, size)
                expected = ledger.inclusion_proof(seq - 1, size, one_by_one)
                assert list(receipt.inclusion_proof) == expected
                ledger.verify_inclusion(seq - 1, size, receipt.entry_hash, expected, root)
            for first in (1, size // 3 + 1, size - 1):
                sent.clear()
                proof = ledger.store.prove_consistency(connection, first, size)
                # The ledger's size, then every node of the proof at once.
                assert len(sent) == 2, sent
                assert proof == ledger.consistency_proof(first, size, one_by_one)
                old_root = ledger.root_at(first, one_by_one)
                ledger.verify_consistency(first, size, old_root, root, proof)
    engine.dispose()


def test_a_proof_reads_only_the_nodes_its_cache_lacks(db_url: str, signer: ledger.Signer) -> None:
    fill(db_url, signer, [50, 30])
    engine = ledger.store.create_engine(db_url)
    sent = _statements(engine)
    cache = ledger.store.NodeCache()
    with engine.connect() as connection:
        first = ledger.store.prove_consistency(connection, 37, 80, cache)
        sent.clear()
        assert ledger.store.prove_consistency(connection, 37, 80, cache) == first
        assert not any("ledger_nodes" in statement for statement in sent), sent
    engine.dispose()


def test_a_missing_node_is_named(db_url: str, signer: ledger.Signer) -> None:
    fill(db_url, signer, [20])
    as_dba(db_url, "DELETE FROM ledger_nodes WHERE level = 2 AND idx = 4")  # leaves 16..19
    engine = ledger.store.create_engine(db_url)
    with engine.connect() as connection:
        with pytest.raises(ledger.StorageError, match=r"Merkle node \(2, 4\) is missing"):
            ledger.store.prove(connection, 3)
        with pytest.raises(ledger.StorageError, match=r"Merkle node \(2, 4\) is missing"):
            ledger.store.prove_consistency(connection, 5, 20)
        assert ledger.store.prove_consistency(connection, 8, 16)  # needs no node of leaves 16..19
    engine.dispose()


def test_two_writers_on_one_database_continue_each_others_chain(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    """Each batch after the other writer's reloads the tip (size, frontier, last hash) from the
    database, as replicas of the exchange do on PostgreSQL."""
    engines = [ledger.store.create_engine(db_url) for _ in range(2)]
    writers = [LedgerWriter(engine, signer, ORIGIN) for engine in engines]
    receipts = []
    try:
        for i in range(23):
            receipts.append(writers[i % 2].append(draft(i), draft(100 + i)).result(30).receipts)
    finally:
        for writer in writers:
            writer.close()
    with engines[0].connect() as connection:
        report = ledger.verify_ledger(
            ledger.store.iter_entries(connection),
            ledger.store.iter_checkpoints(connection),
            [verifier],
        )
    for engine in engines:
        engine.dispose()
    assert report.entries == 46
    for pair in receipts:
        for receipt in pair:
            cp = ledger.open_checkpoint(receipt.checkpoint, [verifier])
            ledger.verify_inclusion(receipt.seq - 1, cp.size, receipt.entry_hash,
                                    list(receipt.inclusion_proof), cp.root)  # fmt: skip


class _Unreadable(Exception):
    """A row the reader cannot use (a sealed body without its key, say)."""


def _read_one_row_and_fail(engine: sqlalchemy.Engine) -> None:
    with engine.connect() as connection:
        # Kept, as a traceback keeps the frame that was reading: its statement stays active.
        rows = connection.execute(text("SELECT seq FROM ledger_entries"))
        for _row in rows:
            raise _Unreadable  # after the first row of three


def test_a_read_given_up_midway_leaves_no_snapshot_on_a_pooled_connection(
    sqlite_url: str, signer: ledger.Signer
) -> None:
    """A result not read to its end keeps its SQLite statement, and with it a read snapshot,
    after ROLLBACK: the pool must close it when the connection comes back. Else, once another
    connection wrote, reads there see the old snapshot and the writer's BEGIN IMMEDIATE there
    fails with "database is locked" each time the pool hands it out."""
    engine = ledger.store.create_engine(sqlite_url)
    writer = LedgerWriter(engine, signer, ORIGIN)
    try:
        for i in range(3):
            writer.append(draft(i)).result(30)
        with pytest.raises(_Unreadable):
            _read_one_row_and_fail(engine)
        outside = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        outside.execute("CREATE TABLE maintenance (note TEXT)")
        outside.close()
        writer.append(draft(3)).result(30)  # on the connection the read gave back
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM maintenance")).scalar() == 0
            assert ledger.store.entry_count(connection) == 4
        assert writer.failing is None
    finally:
        writer.close()
        engine.dispose()
