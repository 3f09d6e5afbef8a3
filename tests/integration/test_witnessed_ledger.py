"""The witnessed ledger end to end: real witnesses, a real exchange over mutual TLS, real
databases; each tampering caught, and named (docs/witness.md; docs/operations.md, "When the
exchange refuses to sign")."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import grpc
import pytest

import ledger
import ledger.store
from clients import ExchangeClient, Refused, new_alert
from exchange import ConfigError, ExchangeServer, ServerConfig, initialise_database
from ledger import Action, Actor, EntryDraft, WitnessPolicy
from ledger.store import LedgerWriter
from sinergi.v1 import exchange_pb2, ledger_pb2, ledger_pb2_grpc
from tests.conftest import ORIGIN, RunningServer, ServerThread, as_dba, wait_for
from tests.integration.support import Witnesses, channel, signed, stub
from tests.integration.test_health import NOT_SERVING, SERVING, health, statuses
from tests.witness.conftest import Client

Published = exchange_pb2.PublishResponse


def publish(server: RunningServer, count: int = 1, who: str = "immigration") -> list[Published]:
    """``count`` signed publishes through a bare stub: the receipts exactly as sent."""
    exchange = stub(server, who)
    replies = []
    for i in range(count):
        alert = new_alert(category="PASSPORT_HOLD", recipients=["police"], summary=f"held {i}")
        request = exchange_pb2.PublishRequest(idempotency_key=secrets.token_hex(16), alert=alert)
        replies.append(exchange.Publish(signed(server, who, request), timeout=10))
    return replies


def size_of(reply: Published, verifier: ledger.Verifier) -> int:
    return ledger.open_checkpoint(reply.receipt.checkpoint.note, [verifier]).size


def refused(server: RunningServer) -> grpc.RpcError:
    """The error the next publish gets."""
    with pytest.raises(grpc.RpcError) as caught:
        publish(server)
    return caught.value


def wait_cosigned(server: RunningServer, size: int, timeout: float) -> tuple[int, bytes] | None:
    """Witnessing.wait_cosigned, on the server's own event loop."""
    witnessing = server.server.witnessing
    assert witnessing is not None
    waiting = witnessing.wait_cosigned(size, timeout)
    loop = server.server_thread._loop
    return asyncio.run_coroutine_threadsafe(waiting, loop).result(timeout + 10)


def halted_gauge(server: RunningServer) -> float | None:
    return server.server.metrics.registry.get_sample_value("sinergi_ledger_halted")


def remove_tail(url: str, keep: int) -> None:
    """A database administrator deletes every entry after ``keep`` with its Merkle nodes, its
    checkpoints and their cosignatures, then puts the append-only guards back."""
    as_dba(
        url,
        f"DELETE FROM ledger_entries WHERE seq > {keep}",
        f"DELETE FROM ledger_nodes WHERE ((idx + 1) << level) > {keep}",
        f"DELETE FROM ledger_checkpoints WHERE size > {keep}",
        f"DELETE FROM ledger_cosignatures WHERE size > {keep}",
        restore=True,
    )


def assert_halted(server: RunningServer, named: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every write refused UNAVAILABLE saying why and what to do; health NOT_SERVING for every
    service; the gauge at 1; the reason logged at error."""
    error = refused(server)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert named in error.details()
    assert "restores the missing entries from the newest backup" in error.details()
    wait_for(lambda: statuses(health(server)) == {NOT_SERVING}, what="health NOT_SERVING")
    assert halted_gauge(server) == 1.0
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("ledger halted" in line and named in line for line in logged), logged


@pytest.fixture
def witnessed(
    start_server: Callable[..., RunningServer], witnesses: Witnesses
) -> Callable[[str], RunningServer]:
    """An exchange on ``url`` whose checkpoints the two running witnesses cosign."""

    def start(url: str) -> RunningServer:
        return start_server(url, witness_policy=witnesses.policy, health_interval_seconds=0.1)

    return start


# -- tampering caught ----------------------------------------------------------------------


def test_a_tail_deleted_while_serving_halts_every_write(
    witnessed: Callable[[str], RunningServer],
    db_url: str,
    verifier: ledger.Verifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = witnessed(db_url)
    size = size_of(publish(running, 4)[-1], verifier)
    assert wait_cosigned(running, size, 5) is not None
    assert statuses(health(running)) == {SERVING}
    assert halted_gauge(running) == 0.0
    remove_tail(db_url, size - 3)
    assert_halted(running, "entries were removed", caplog)
    assert len(running.entries()) == size - 3  # the ledger gained nothing
    assert "entries were removed" in refused(running).details()  # and it stays halted
    # A read must be recorded before it is answered: it is refused too, saying why.
    with channel(running, "internal-affairs") as auditor, pytest.raises(grpc.RpcError) as read:
        ledger_pb2_grpc.AuditLedgerStub(auditor).GetCheckpoint(
            ledger_pb2.GetCheckpointRequest(), timeout=10
        )
    assert read.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "entries were removed" in read.value.details()

    # The client library takes it for a refusal (ErrorInfo LEDGER_HALTED), not an outage to
    # retry: one attempt, then the exchange's reason.
    def answered() -> float:
        count = running.server.metrics.registry.get_sample_value(
            "sinergi_rpc_total", {"method": "/sinergi.v1.Exchange/Publish", "code": "UNAVAILABLE"}
        )
        return count or 0.0

    before = answered()
    with ExchangeClient(running.pki / "immigration", running.address) as client:
        with pytest.raises(Refused, match="entries were removed") as caught:
            client.publish(new_alert(category="OTHER", recipients=["police"], summary="x"))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    # The server counts a call just after answering it; retries would all be counted by now.
    wait_for(lambda: answered() >= before + 1, what="the refused publish counted")
    assert answered() == before + 1
    assert len(running.entries()) == size - 3


def test_an_older_backup_restored_is_served_halted(
    witnessed: Callable[[str], RunningServer],
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = witnessed(sqlite_url)
    publish(running, 2)
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    backup = tmp_path / "backup.db"
    with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(backup)) as copy:
        source.backup(copy)  # the online backup of docs/operations.md, while serving
    kept = len(running.entries())
    publish(running, 3)
    running.server_thread.stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)
    restored = witnessed(sqlite_url)  # it starts, and serves health and metrics
    assert statuses(health(restored)) == {NOT_SERVING}
    assert_halted(restored, "an older backup was restored", caplog)
    assert len(restored.entries()) == kept  # not even its START entry


def test_a_tail_deleted_while_stopped_is_served_halted(
    witnessed: Callable[[str], RunningServer],
    pg_url: str,
    verifier: ledger.Verifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = witnessed(pg_url)
    size = size_of(publish(running, 4)[-1], verifier)
    running.server_thread.stop()
    remove_tail(pg_url, size - 3)
    restarted = witnessed(pg_url)
    assert statuses(health(restarted)) == {NOT_SERVING}
    assert_halted(restarted, "entries were removed", caplog)
    assert len(restarted.entries()) == size - 3


def forged_ledger(url: str, signer: ledger.Signer, origin: str, size: int) -> bytes:
    """What the holder of the ledger key can make: another history of ``size`` entries at
    ``origin``, from a START entry on, every checkpoint validly signed. Its newest note."""
    initialise_database(url)
    engine = ledger.store.create_engine(url)
    writer = LedgerWriter(engine, signer, origin)
    actor = Actor("x509:CN=sinergi-exchange", "00" * 32)
    start = EntryDraft(Action.START, actor, meta={"origin": origin, "policy_digest": "00" * 32})
    forged = [EntryDraft(Action.READ, actor, objects=(f"forged:{i}",)) for i in range(size - 1)]
    try:
        writer.append(start, *forged).result(10)
        with engine.connect() as connection:
            note = ledger.store.latest_checkpoint(connection)
    finally:
        writer.close()
        engine.dispose()
    assert note is not None
    return note


def test_a_rewrite_signed_with_the_ledger_key_is_refused_and_halts_its_exchange(
    start_server: Callable[..., RunningServer],
    witnesses: Witnesses,
    db_url: str,
    pki: Path,
    tmp_path: Path,
    signer: ledger.Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    honest = start_server(db_url, witness_policy=witnesses.policy)
    origin = honest.server.origin
    size = size_of(publish(honest, 4)[-1], signer.verifier())
    found = wait_cosigned(honest, size, 5)
    assert found is not None
    witnessed_size = found[0]
    # The key holder writes other histories at the same origin and shows them to a witness.
    police = Client(pki, witnesses.runners["police"].port, identity="server")
    longer_url = f"sqlite:///{tmp_path / 'longer.db'}"
    longer = forged_ledger(longer_url, signer, origin, witnessed_size + 3)
    engine = ledger.store.create_engine(longer_url)
    with engine.connect() as connection:
        proof = ledger.store.prove_consistency(connection, witnessed_size, witnessed_size + 3)
    engine.dispose()
    rewrite = police.add(ledger.AddCheckpoint(witnessed_size, tuple(proof), longer))
    assert rewrite.status == 422, rewrite
    assert b"not consistent with the cosigned size" in rewrite.body
    shorter_url = f"sqlite:///{tmp_path / 'shorter.db'}"
    shorter = forged_ledger(shorter_url, signer, origin, 2)
    rollback = police.add(ledger.AddCheckpoint(witnessed_size, (), shorter))
    assert rollback.status == 400, rollback
    assert police.status()["refusals"] == 2
    # An exchange serving the shorter history, on a host without the honest exchange's record
    # of what it signed: the witnesses' 409 says they cosigned more than this ledger holds.
    elsewhere = Path(shutil.copytree(pki, tmp_path / "elsewhere"))
    (elsewhere / "ledger.signed.json").unlink(missing_ok=True)
    thread = ServerThread(
        ServerConfig(
            identity=elsewhere / "server",
            ledger_key=elsewhere / "ledger.key",
            database=shorter_url,
            listen="127.0.0.1:0",
            grace_seconds=0.5,
            health_interval_seconds=0.1,
            witness_policy=witnesses.policy,
        )
    )
    try:
        server = thread.start()
        assert server.origin == origin
        forged = RunningServer(f"127.0.0.1:{server.port}", shorter_url, elsewhere, server, thread)
        wait_for(lambda: server.ledger.halted, what="the forged ledger's exchange to halt")
        assert_halted(forged, f"entries of {origin}, more than this ledger's 3", caplog)
        alarms = server.metrics.registry.get_sample_value(
            "sinergi_ledger_witness_alarms_total",
            {"witness": "internal-affairs", "reason": "ledger-behind"},
        ) or server.metrics.registry.get_sample_value(
            "sinergi_ledger_witness_alarms_total", {"witness": "police", "reason": "ledger-behind"}
        )
        assert alarms == 1.0
    finally:
        thread.stop()
    # The honest exchange was never disturbed.
    assert size_of(publish(honest)[0], signer.verifier()) > size


# -- the commit-to-quorum window -------------------------------------------------------------


def test_a_quorum_covers_every_commit_within_a_second_and_receipts_carry_it(
    witnessed: Callable[[str], RunningServer],
    witnesses: Witnesses,
    db_url: str,
    verifier: ledger.Verifier,
) -> None:
    running = witnessed(db_url)
    policy = WitnessPolicy.load(witnesses.policy)
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: publish(running, 5), range(4)))
    newest = max(size_of(reply, verifier) for replies in batches for reply in replies)
    found = wait_cosigned(running, newest, 1.0)
    assert found is not None, "no quorum within 1 s of the last commit"
    assert policy.check(found[1], [verifier]).checkpoint.size == found[0] >= newest
    receipt = publish(running)[0].receipt
    assert receipt.HasField("cosigned")
    cosigned = policy.check(receipt.cosigned.note, [verifier]).checkpoint
    assert set(policy.cosigners(receipt.cosigned.note)) == {"internal-affairs", "police"}
    shown = ledger.open_checkpoint(receipt.checkpoint.note, [verifier])
    assert cosigned.origin == shown.origin == running.server.origin
    assert cosigned.size >= newest
    old, new = sorted((cosigned, shown), key=lambda cp: cp.size)
    if old.size == new.size:
        assert list(receipt.cosigned_proof) == []
        assert old.root == new.root
    else:
        proof = list(receipt.cosigned_proof)
        ledger.verify_consistency(old.size, new.size, old.root, new.root, proof)
    # GetCheckpoint answers the newest checkpoint that has its quorum.
    with channel(running, "police") as police:
        note = ledger_pb2_grpc.AuditLedgerStub(police).GetCheckpoint(
            ledger_pb2.GetCheckpointRequest(), timeout=10
        )
    assert policy.check(note.note, [verifier]).checkpoint.size >= cosigned.size
    histogram = running.server.metrics.registry.get_sample_value(
        "sinergi_ledger_commit_to_quorum_seconds_bucket", {"le": "1.0"}
    )
    count = running.server.metrics.registry.get_sample_value(
        "sinergi_ledger_commit_to_quorum_seconds_count"
    )
    assert histogram is not None
    assert count is not None
    assert count >= 1


def test_a_witness_that_was_down_catches_up_with_the_newest_checkpoint(
    witnessed: Callable[[str], RunningServer],
    witnesses: Witnesses,
    sqlite_url: str,
    pki: Path,
    verifier: ledger.Verifier,
) -> None:
    running = witnessed(sqlite_url)
    first = size_of(publish(running)[0], verifier)
    assert wait_cosigned(running, first, 5) is not None
    police = witnesses.runners["police"]
    police.stop()
    newest = size_of(publish(running, 5)[-1], verifier)
    assert wait_cosigned(running, newest, 0.5) is None  # one witness alone is no quorum
    police.start()  # the same port, the same state
    found = wait_cosigned(running, newest, 30)
    assert found is not None
    assert found[0] == newest  # nothing was committed since: the newest one it was given
    status = Client(pki, police.port, identity="server").status()
    logs = status["logs"]
    assert isinstance(logs, list)
    assert [log["size"] for log in logs] == [newest]
    metrics = Client(pki, police.port, identity="server").metrics()
    cosigned = re.search(r'requests_total\{endpoint="add-checkpoint",status="200"\} (\d+)', metrics)
    assert cosigned is not None
    assert int(cosigned[1]) == 1  # one request caught it up, not one per checkpoint it missed


# -- origins ---------------------------------------------------------------------------------


def test_each_new_ledger_has_an_origin_of_its_own_and_keeps_it(
    start_server: Callable[..., RunningServer], tmp_path: Path, verifier: ledger.Verifier
) -> None:
    urls = [f"sqlite:///{tmp_path / f'{name}.db'}" for name in ("one", "two")]
    for url in urls:
        initialise_database(url)
    # The second is a new ledger of an exchange that signed the first: on purpose, so said.
    one, two = start_server(urls[0]), start_server(urls[1], new_ledger=True)
    assert one.server.origin != two.server.origin
    for running in (one, two):
        assert re.fullmatch(rf"{ORIGIN}/\d{{8}}-[0-9a-f]{{8}}", running.server.origin)
        assert running.server.new_ledger
        assert running.entries()[0].meta["origin"] == running.server.origin
        shown = ledger.open_checkpoint(publish(running)[0].receipt.checkpoint.note, [verifier])
        assert shown.origin == running.server.origin
    origin = one.server.origin
    one.server_thread.stop()
    again = start_server(urls[0])
    assert again.server.origin == origin
    assert not again.server.new_ledger
    starts = [e for e in again.entries() if e.action is Action.START]
    assert [e.meta["origin"] for e in starts] == [origin, origin]
    assert ledger.open_checkpoint(publish(again)[0].receipt.checkpoint.note, [verifier]).origin == (
        origin
    )


def test_an_emptied_database_is_not_taken_for_a_new_ledger(
    start_server: Callable[..., RunningServer],
    db_url: str,
    verifier: ledger.Verifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every row deleted looks like a new database; the exchange remembers it signed another
    ledger and refuses to start a new one until told to (--new-ledger)."""
    running = start_server(db_url)
    old = running.server.origin
    size = size_of(publish(running, 2)[-1], verifier)
    running.server_thread.stop()
    as_dba(db_url, *(f"DELETE FROM {table}" for table in ledger.store.APPEND_ONLY_TABLES))
    emptied = start_server(db_url)
    assert emptied.server.origin != old
    assert_halted(emptied, f"signed {size} entries of the ledger {old}", caplog)
    assert emptied.entries() == []  # not even a START: nothing was signed over the old one
    emptied.server_thread.stop()
    chosen = start_server(db_url, new_ledger=True)
    assert chosen.server.origin != old
    assert [e.action for e in chosen.entries()] == [Action.START]
    publish(chosen)


def test_a_ledger_from_before_per_ledger_origins_keeps_the_key_name(
    start_server: Callable[..., RunningServer], sqlite_url: str, signer: ledger.Signer
) -> None:
    """Entry 1 of a ledger written before, or by another tool, names no origin of its own: its
    origin stays the key's name, under which its checkpoints were signed."""
    writer_engine = ledger.store.create_engine(sqlite_url)
    writer = LedgerWriter(writer_engine, signer, ORIGIN)
    actor = Actor("x509:CN=sinergi-exchange", "00" * 32)
    writer.append(EntryDraft(Action.READ, actor, objects=("before",))).result(10)
    writer.close()
    writer_engine.dispose()
    running = start_server(sqlite_url)
    assert running.server.origin == ORIGIN
    assert ledger.open_checkpoint(
        publish(running)[0].receipt.checkpoint.note, [signer.verifier()], origin=ORIGIN
    )


def test_two_exchanges_starting_on_one_empty_ledger_agree_on_its_origin(
    pki: Path, db_url: str
) -> None:
    """Replicas started together on an empty database each choose an origin; the second START
    to commit finds entry 1 naming the first's, and that replica's start fails, saying so."""
    config = ServerConfig(
        identity=pki / "server",
        ledger_key=pki / "ledger.key",
        database=db_url,
        listen="127.0.0.1:0",
        grace_seconds=0.5,
    )

    async def race() -> tuple[str, str]:
        first, second = ExchangeServer(config), ExchangeServer(config)
        assert first.new_ledger
        assert second.new_ledger
        assert first.origin != second.origin
        await first.start()
        try:
            with pytest.raises(ConfigError, match="another exchange created this ledger") as lost:
                await second.start()
            assert first.origin in str(lost.value)
            assert second.origin in str(lost.value)
        finally:
            await first.stop()
        third = ExchangeServer(config)  # started again, it takes the stored origin
        await third.start()
        await third.stop()
        return first.origin, third.origin

    created, taken = asyncio.run(race())
    assert taken == created
    engine = ledger.store.create_engine(db_url)
    with engine.connect() as connection:
        entries = [ledger.Entry.decode(b) for _, _, b in ledger.store.iter_entries(connection)]
    engine.dispose()
    assert [(e.action, e.meta["origin"]) for e in entries] == [(Action.START, created)] * 2
