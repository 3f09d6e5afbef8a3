"""Chunked verification (ledger.store.verify_database) gives verify_ledger's verdict, on real SQLite
and PostgreSQL: the same report on an intact ledger, the same first failure on a tampered one."""

from __future__ import annotations

import random

import pytest

import ledger
import ledger.store
from ledger.store import _verify as store_verify
from tests.conftest import as_dba
from tests.ledger.test_store import TAMPERS, fill


def sequential(url: str, verifier: ledger.Verifier, trusted: list[bytes]) -> ledger.Report:
    engine = ledger.store.create_engine(url)
    try:
        with engine.connect() as connection:
            return ledger.verify_ledger(
                ledger.store.iter_entries(connection),
                ledger.store.iter_checkpoints(connection),
                [verifier],
                trusted=trusted,
            )
    finally:
        engine.dispose()


def verdicts(
    url: str, verifier: ledger.Verifier, trusted: list[bytes] | None = None, **how: int
) -> tuple[object, object]:
    """(sequential, chunked): each a Report or the (message, seq) of the failure."""
    outcomes: list[object] = []
    for run in (
        lambda: sequential(url, verifier, trusted or []),
        lambda: ledger.store.verify_database(url, [verifier], trusted=trusted or [], **how),
    ):
        try:
            outcomes.append(run())
        except ledger.VerificationError as exc:
            outcomes.append((str(exc), exc.seq))
    return outcomes[0], outcomes[1]


def latest(url: str) -> bytes:
    engine = ledger.store.create_engine(url)
    with engine.connect() as connection:
        note = ledger.store.latest_checkpoint(connection)
    engine.dispose()
    assert note is not None
    return note


@pytest.mark.parametrize("chunk", [1, 2, 4, 16])
def test_chunks_give_the_same_report(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier, chunk: int
) -> None:
    rng = random.Random(chunk)
    fill(db_url, signer, [rng.randint(1, 5) for _ in range(12)])
    kept = latest(db_url)
    fill(db_url, signer, [3, 1])
    expected, got = verdicts(db_url, verifier, [kept], workers=1, chunk=chunk)
    assert isinstance(expected, ledger.Report)
    assert got == expected
    assert expected.entries == ledger.open_checkpoint(latest(db_url), [verifier]).size


def test_worker_processes_give_the_same_report(
    sqlite_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    fill(sqlite_url, signer, [7, 1, 9, 2, 13])
    progress: list[int] = []
    expected, got = verdicts(sqlite_url, verifier, workers=2, chunk=8)
    assert isinstance(expected, ledger.Report)
    assert got == expected
    ledger.store.verify_database(
        sqlite_url, [verifier], workers=2, chunk=8, progress=progress.append
    )
    assert sorted(progress) == progress
    assert progress[-1] == 32


@pytest.mark.parametrize("name", list(TAMPERS))
def test_chunks_report_the_same_first_failure(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier, name: str
) -> None:
    fill(db_url, signer, [1, 3, 4, 2])
    tamper, seq = TAMPERS[name]
    tamper(db_url)
    expected, got = verdicts(db_url, verifier, workers=1, chunk=2)
    assert isinstance(expected, tuple)
    assert expected[1] == seq
    assert got == expected


def test_a_bad_checkpoint_signature_is_reported_before_an_entry(
    sqlite_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    """verify_ledger opens every checkpoint first: a forged one in a later run wins over a
    broken entry in an earlier run."""
    fill(sqlite_url, signer, [2, 2, 2, 2])
    as_dba(sqlite_url,
           "UPDATE ledger_entries SET hash = x'00' WHERE seq = 1",
           "UPDATE ledger_checkpoints SET note = CAST(REPLACE(CAST(note AS TEXT), "
           "char(10) || '6' || char(10), char(10) || '6' || char(10) || 'x') AS BLOB) "
           "WHERE size = 6")  # fmt: skip
    expected, got = verdicts(sqlite_url, verifier, workers=1, chunk=2)
    assert isinstance(expected, tuple)
    assert "stored checkpoint 6" in expected[0]
    assert got == expected


def test_a_trusted_checkpoint_of_another_history_is_caught(
    db_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    fill(db_url, signer, [5])
    kept = latest(db_url)
    as_dba(db_url, "DELETE FROM ledger_checkpoints", "DELETE FROM ledger_nodes",
           "DELETE FROM ledger_entries", restore=True)  # fmt: skip
    fill(db_url, signer, [2, 2, 2])  # a fresh, validly signed, different history
    expected, got = verdicts(db_url, verifier, [kept], workers=1, chunk=2)
    assert isinstance(expected, tuple)
    assert "history was rewritten" in expected[0]
    assert got == expected


def test_an_empty_ledger_verifies(sqlite_url: str, verifier: ledger.Verifier) -> None:
    report = ledger.store.verify_database(sqlite_url, [verifier])
    assert (report.entries, report.root, report.checkpoints) == (0, ledger.EMPTY_ROOT, 0)


def test_the_chunk_size_must_be_a_power_of_two(
    sqlite_url: str, signer: ledger.Signer, verifier: ledger.Verifier
) -> None:
    fill(sqlite_url, signer, [3])
    with pytest.raises(ValueError, match="power of two"):
        ledger.store.verify_database(sqlite_url, [verifier], chunk=3)


def test_without_worker_processes_it_verifies_in_process(
    sqlite_url: str, signer: ledger.Signer, verifier: ledger.Verifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Where processes cannot be started, the same checks run in this one: never fewer."""

    def refused(*_args: object, **_kwargs: object) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(store_verify, "ProcessPoolExecutor", refused)
    fill(sqlite_url, signer, [5, 6, 7])
    expected, got = verdicts(sqlite_url, verifier, workers=2, chunk=4)
    assert isinstance(expected, ledger.Report)
    assert got == expected
    as_dba(sqlite_url, "UPDATE ledger_entries SET hash = x'00' WHERE seq = 14")
    expected, got = verdicts(sqlite_url, verifier, workers=2, chunk=4)
    assert isinstance(expected, tuple)
    assert expected[1] == 14
    assert got == expected
