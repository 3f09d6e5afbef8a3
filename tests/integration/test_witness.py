"""Witnessing clients and the AuditLedger service, over real mTLS."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

import exchange._audit as exchange_audit
import ledger
import ledger.store
from clients import ExchangeClient, ForkDetected, new_alert
from ledger import Action, Actor, EntryDraft
from ledger.store import LedgerWriter
from sinergi.v1 import exchange_pb2, ledger_pb2, ledger_pb2_grpc
from tests.conftest import ORIGIN, RunningServer, as_dba
from tests.integration.support import signed, stub, violations


def alert(summary: str = "held") -> object:
    return new_alert(category="PASSPORT_HOLD", recipients=["police"], summary=summary)


def rewrite_with_the_key(url: str, signer: ledger.Signer, entries: int, origin: str) -> None:
    """A database administrator who also holds the signing key replaces the whole history of
    the ledger ``origin``: its START entry, naming the origin, then forged entries."""
    as_dba(
        url,
        "DELETE FROM ledger_checkpoints",
        "DELETE FROM ledger_nodes",
        "DELETE FROM ledger_entries",
        restore=True,
    )
    engine = ledger.store.create_engine(url)
    writer = LedgerWriter(engine, signer, origin)
    actor = Actor("spiffe://sinergi.dev/agency/police/system/gateway", "00" * 32)
    start = EntryDraft(Action.START, actor, meta={"origin": origin, "policy_digest": "00" * 32})
    try:
        writer.append(start).result(10)
        for i in range(entries - 1):
            writer.append(EntryDraft(Action.READ, actor, objects=(f"forged:{i}",))).result(10)
    finally:
        writer.close()
        engine.dispose()


def refused_publish(server: RunningServer) -> grpc.RpcError:
    request = exchange_pb2.PublishRequest(idempotency_key="after-the-tampering", alert=alert())
    with pytest.raises(grpc.RpcError) as caught:
        stub(server, "immigration").Publish(signed(server, "immigration", request), timeout=10)
    return caught.value


def test_a_rewrite_by_a_key_holder_is_caught_by_the_next_receipt(
    start_server: Callable[[str], RunningServer], db_url: str, signer: ledger.Signer, pki: Path
) -> None:
    first = start_server(db_url)
    origin = first.server.origin
    with ExchangeClient(first.pki / "immigration", first.address) as client:
        client.publish(alert())
        kept = client.witness.latest(origin)
    assert kept is not None
    first.server_thread.stop()
    rewrite_with_the_key(db_url, signer, kept.size + 5, origin)  # longer, validly signed
    # The exchange itself refuses to sign over it: it remembers what it signed.
    second = start_server(db_url)
    assert second.server.ledger.halted is not None
    error = refused_publish(second)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "the history was rewritten" in error.details()
    second.server_thread.stop()
    # Without that record (the same hands removed it), the next receipt shows the rewrite.
    (pki / "ledger.signed.json").unlink()
    third = start_server(db_url)
    with ExchangeClient(third.pki / "immigration", third.address) as client:
        with pytest.raises(ForkDetected, match="history was rewritten"):
            client.publish(alert("after the rewrite"))
        with pytest.raises(ForkDetected):
            client.checkpoint()


def test_a_rolled_back_ledger_is_caught(
    start_server: Callable[[str], RunningServer], db_url: str, signer: ledger.Signer, pki: Path
) -> None:
    first = start_server(db_url)
    with ExchangeClient(first.pki / "immigration", first.address) as client:
        for i in range(3):
            client.publish(alert(str(i)))
        kept = client.checkpoint()
    first.server_thread.stop()
    rewrite_with_the_key(db_url, signer, 1, kept.origin)
    second = start_server(db_url)
    error = refused_publish(second)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "entries were removed, or an older backup was restored" in error.details()
    second.server_thread.stop()
    (pki / "ledger.signed.json").unlink()
    third = start_server(db_url)
    with ExchangeClient(third.pki / "immigration", third.address) as client:
        with pytest.raises(
            ForkDetected, match=f"older than one already verified.*size {kept.size}"
        ):
            client.checkpoint()


def test_concurrent_writes_from_one_client_all_witness(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: client.publish(alert(str(i))), range(40)))
        kept = client.witness.latest(server.server.origin)
        newest = client.checkpoint()
    assert len({r.alert_id for r in results}) == 40
    assert kept is not None
    assert kept.size == max(r.receipt.checkpoint.size for r in results)
    assert newest.size >= kept.size


def test_a_checkpoint_overtaken_by_a_receipt_of_the_same_agency_is_no_rollback(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two systems of one agency share its witness state. A checkpoint the exchange answered just
    before the other system's receipt was kept is older than the kept one by the time it is
    checked: it is still the exchange's newest as of the question, and a prefix of the kept
    one, so it is accepted; only one older than what was kept when asking is a rollback."""
    with (
        ExchangeClient(server.pki / "immigration", server.address) as reader,
        ExchangeClient(server.pki / "immigration", server.address) as publisher,
    ):
        publisher.publish(alert("before"))
        opened = reader._open
        overtaken: list[int] = []

        def receipt_arrives_meanwhile(note: bytes) -> ledger.Checkpoint:
            answered = opened(note)
            if not overtaken:  # once: the answer to GetCheckpoint, not the proof asked after it
                overtaken.append(publisher.publish(alert("meanwhile")).receipt.checkpoint.size)
            return answered

        monkeypatch.setattr(reader, "_open", receipt_arrives_meanwhile)
        answered = reader.checkpoint()
        kept = reader.witness.latest(server.server.origin)
    assert kept is not None
    assert answered.size < overtaken[0] == kept.size  # the race happened, and was accepted


@pytest.fixture
def sqlite_server(start_server: Callable[..., RunningServer], sqlite_url: str) -> RunningServer:
    return start_server(sqlite_url)


def _audit_stub(server: RunningServer, identity: str) -> tuple[grpc.Channel, object]:
    directory = server.pki / identity
    credentials = grpc.ssl_channel_credentials(
        (directory / "ca.crt").read_bytes(),
        (directory / "tls.key").read_bytes(),
        (directory / "tls.crt").read_bytes(),
    )
    channel = grpc.secure_channel(server.address, credentials)
    return channel, ledger_pb2_grpc.AuditLedgerStub(channel)


def test_auditor_reads_and_proves_and_is_recorded(
    server: RunningServer, verifier: ledger.Verifier
) -> None:
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        for i in range(5):
            client.publish(alert(str(i)))
    channel, stub = _audit_stub(server, "internal-affairs")
    with channel:
        cp = ledger.open_checkpoint(
            stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest()).note, [verifier]
        )
        rows = list(stub.GetEntries(ledger_pb2.GetEntriesRequest(start=1, end=cp.size)))
        assert [r.seq for r in rows] == list(range(1, cp.size + 1))
        pages = list(stub.GetEntryPages(ledger_pb2.GetEntriesRequest(start=1, end=cp.size)))
        assert [r for page in pages for r in page.entries] == rows
        leaves = [ledger.leaf_hash(r.entry) for r in rows]
        assert ledger.root_of(leaves) == cp.root
        inclusion = stub.GetInclusionProof(ledger_pb2.InclusionProofRequest(seq=3))
        proof_cp = ledger.open_checkpoint(inclusion.checkpoint.note, [verifier])
        ledger.verify_inclusion(
            2,
            proof_cp.size,
            ledger.leaf_hash(inclusion.entry),
            list(inclusion.proof),
            proof_cp.root,
        )
        consistency = stub.GetConsistencyProof(ledger_pb2.ConsistencyProofRequest(first=2))
        new = ledger.open_checkpoint(consistency.checkpoint.note, [verifier])
        old_root = ledger.root_of(leaves[:2])
        ledger.verify_consistency(2, new.size, old_root, new.root, list(consistency.proof))
    reads = [e for e in server.entries() if e.action == Action.LEDGER_READ]
    assert [e.meta["method"] for e in reads] == [
        "GetCheckpoint",
        "GetEntries",
        "GetEntryPages",
        "GetInclusionProof",
        "GetConsistencyProof",
    ]
    assert reads[1].meta == {"method": "GetEntries", "start": 1, "end": cp.size}
    assert reads[2].meta == {"method": "GetEntryPages", "start": 1, "end": cp.size}
    assert {e.actor.id for e in reads} == {
        "spiffe://sinergi.dev/agency/internal-affairs/officer/auditor"
    }


@pytest.mark.parametrize("method", ["GetEntries", "GetEntryPages"])
def test_members_may_witness_but_not_read_entries(server: RunningServer, method: str) -> None:
    with ExchangeClient(server.pki / "police", server.address) as police:
        police.checkpoint()  # allowed: hashes only
    channel, stub = _audit_stub(server, "police")
    with channel, pytest.raises(grpc.RpcError) as caught:
        list(getattr(stub, method)(ledger_pb2.GetEntriesRequest(start=1)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    entries = server.entries()
    assert [(e.action, e.meta.get("method")) for e in entries[1:]] == [
        (Action.LEDGER_READ, "GetCheckpoint"),
        (Action.DENIED, f"/sinergi.v1.AuditLedger/{method}"),
    ]


def test_entry_pages_keep_to_their_entry_and_byte_limits(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages hold consecutive entries, at most PAGE of them and PAGE_BYTES of entry bytes (one
    entry alone may exceed it), and together are exactly what GetEntries streams."""
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        for i in range(12):
            client.publish(alert(str(i)))
        end = client.checkpoint().size  # each read below appends its own LEDGER_READ entry
    channel, stub = _audit_stub(server, "internal-affairs")
    with channel:
        rows = list(stub.GetEntries(ledger_pb2.GetEntriesRequest(start=2, end=end)))
        assert len(rows) == end - 1 >= 12
        sizes = [len(r.entry) for r in rows]
        for page_entries, page_bytes in ((4, 1 << 20), (1000, 2 * max(sizes)), (1000, 1)):
            monkeypatch.setattr(exchange_audit, "PAGE", page_entries)
            monkeypatch.setattr(exchange_audit, "PAGE_BYTES", page_bytes)
            request = ledger_pb2.GetEntriesRequest(start=2, end=end)
            pages = [list(p.entries) for p in stub.GetEntryPages(request)]
            assert [r for page in pages for r in page] == rows
            for page in pages:
                assert 1 <= len(page) <= page_entries
                assert len(page) == 1 or sum(len(r.entry) for r in page) <= page_bytes
            if page_bytes == 1:
                assert len(pages) == len(rows)


def test_bad_audit_requests_get_field_errors(server: RunningServer) -> None:
    channel, stub = _audit_stub(server, "internal-affairs")
    with channel:
        with pytest.raises(grpc.RpcError) as entries:
            list(stub.GetEntries(ledger_pb2.GetEntriesRequest(start=0)))
        with pytest.raises(grpc.RpcError) as pages:
            list(stub.GetEntryPages(ledger_pb2.GetEntriesRequest(start=3, end=2)))
        with pytest.raises(grpc.RpcError) as inclusion:
            stub.GetInclusionProof(ledger_pb2.InclusionProofRequest(seq=0))
        with pytest.raises(grpc.RpcError) as consistency:
            stub.GetConsistencyProof(ledger_pb2.ConsistencyProofRequest(first=0))
        for caught in (entries, pages, inclusion, consistency):
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetInclusionProof(ledger_pb2.InclusionProofRequest(seq=1, tree_size=999))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


MAX = exchange_audit.MAX_POSITION
LOW, NEWEST = "must be >= 1", "must be 0 (the newest) or more"
AFTER, HUGE = "must be 0 (the newest) or >= start", f"must be at most {MAX}"
#: (method, request fields) -> the violation of each bad field, and of no other.
BAD_POSITIONS: dict[tuple[str, tuple[tuple[str, int], ...]], dict[str, str]] = {
    ("GetEntries", (("start", 0), ("end", 0))): {"start": LOW},
    ("GetEntries", (("start", -1), ("end", 5))): {"start": LOW},
    ("GetEntries", (("start", 1), ("end", -1))): {"end": AFTER},
    ("GetEntries", (("start", 3), ("end", 2))): {"end": AFTER},
    ("GetEntries", (("start", 0), ("end", -1))): {"start": LOW, "end": AFTER},
    ("GetEntries", (("start", MAX + 1), ("end", 0))): {"start": HUGE},
    ("GetEntries", (("start", MAX + 1), ("end", 5))): {"start": HUGE},
    ("GetEntries", (("start", 1), ("end", MAX + 1))): {"end": HUGE},
    ("GetEntries", (("start", -1), ("end", MAX + 1))): {"start": LOW, "end": HUGE},
    ("GetEntryPages", (("start", 2), ("end", 1))): {"end": AFTER},
    ("GetEntryPages", (("start", 0), ("end", -1))): {"start": LOW, "end": AFTER},
    ("GetInclusionProof", (("seq", 0), ("tree_size", 0))): {"seq": LOW},
    ("GetInclusionProof", (("seq", 1), ("tree_size", -1))): {"tree_size": NEWEST},
    ("GetInclusionProof", (("seq", 0), ("tree_size", -1))): {"seq": LOW, "tree_size": NEWEST},
    ("GetInclusionProof", (("seq", MAX + 1), ("tree_size", 0))): {"seq": HUGE},
    ("GetInclusionProof", (("seq", 1), ("tree_size", MAX + 1))): {"tree_size": HUGE},
    ("GetInclusionProof", (("seq", MAX + 1), ("tree_size", -1))): {
        "seq": HUGE,
        "tree_size": NEWEST,
    },
    ("GetConsistencyProof", (("first", 0), ("second", 0))): {"first": LOW},
    ("GetConsistencyProof", (("first", 1), ("second", -1))): {"second": NEWEST},
    ("GetConsistencyProof", (("first", -3), ("second", -1))): {"first": LOW, "second": NEWEST},
    ("GetConsistencyProof", (("first", MAX + 1), ("second", 0))): {"first": HUGE},
    ("GetConsistencyProof", (("first", 1), ("second", MAX + 1))): {"second": HUGE},
    ("GetConsistencyProof", (("first", 0), ("second", MAX + 1))): {"first": LOW, "second": HUGE},
}
_REQUESTS = {
    "GetEntries": ledger_pb2.GetEntriesRequest,
    "GetEntryPages": ledger_pb2.GetEntriesRequest,
    "GetInclusionProof": ledger_pb2.InclusionProofRequest,
    "GetConsistencyProof": ledger_pb2.ConsistencyProofRequest,
}


def _answer(call: Callable[..., Any], request: object, *, streamed: bool) -> object:
    """A unary answer, or a stream's read to its end (where its error comes)."""
    answer = call(request, timeout=10)
    return list(answer) if streamed else answer


def test_each_bad_position_is_named_by_its_own_field(sqlite_server: RunningServer) -> None:
    """Every combination of bad positions: the answer names each bad field with its own
    violation and no other field (``tree_size=-1`` once answered ``seq: must be >= 1``), and
    each refusal is a DENIED entry, never a LEDGER_READ."""
    channel, stub = _audit_stub(sqlite_server, "internal-affairs")
    found = {}
    with channel:
        for (method, fields), _expected in BAD_POSITIONS.items():
            request = _REQUESTS[method](**dict(fields))
            call = getattr(stub, method)
            streamed = method.startswith("GetEntr")
            with pytest.raises(grpc.RpcError) as caught:
                _answer(call, request, streamed=streamed)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, fields)
            found[method, fields] = violations(caught.value)
    assert found == BAD_POSITIONS
    recorded = [e for e in sqlite_server.entries() if e.action is not Action.START]
    assert [(e.action, e.meta["method"]) for e in recorded] == [
        (Action.DENIED, f"/sinergi.v1.AuditLedger/{method}") for method, _ in BAD_POSITIONS
    ]


def test_key_rotation_checkpoints_carry_both_signatures(
    start_server: Callable[..., RunningServer], db_url: str, pki: Path
) -> None:
    """Old clients keep verifying with the old key, new ones with the new key, unknown ignored."""
    (pki / "next").mkdir()
    assert ledger.write_signing_key(pki / "next", ORIGIN)
    running = start_server(db_url, extra_ledger_keys=(pki / "next" / "ledger.key",))
    old = ledger.Verifier.from_vkey((pki / "ledger.vkey").read_text().strip())
    new = ledger.Verifier.from_vkey((pki / "next" / "ledger.vkey").read_text().strip())
    with ExchangeClient(running.pki / "immigration", running.address) as client:
        note = client.publish(alert()).receipt
    with ExchangeClient(
        running.pki / "police", running.address, ledger_key=pki / "next" / "ledger.vkey"
    ) as rotated:
        newest = rotated.checkpoint()
    assert newest.size >= note.seq
    engine = ledger.store.create_engine(db_url)
    with engine.connect() as connection:
        stored = ledger.store.latest_checkpoint(connection)
    engine.dispose()
    assert stored is not None
    assert ledger.open_note(stored, [old])[1] == [ORIGIN]
    assert ledger.open_note(stored, [new])[1] == [ORIGIN]
    assert len(ledger.open_note(stored, [old, new])[1]) == 2


def test_the_client_reads_entries_one_by_one_from_a_server_without_pages(
    start_server: Callable[..., RunningServer],
    db_url: str,
    verifier: ledger.Verifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server from before GetEntryPages (the method not registered) answers UNIMPLEMENTED,
    and ExchangeClient.entries reads the same entries through GetEntries."""
    register = ledger_pb2_grpc.add_AuditLedgerServicer_to_server

    def without_pages(servicer: object, server: grpc.Server) -> None:
        class Capture:
            def __init__(self) -> None:
                self.handlers: dict[str, grpc.RpcMethodHandler] = {}

            def add_generic_rpc_handlers(self, _handlers: object) -> None:
                pass

            def add_registered_method_handlers(self, _service: str, handlers: dict) -> None:  # type: ignore[type-arg]
                self.handlers = handlers

        capture = Capture()
        register(servicer, capture)  # type: ignore[arg-type]
        old = {k: v for k, v in capture.handlers.items() if k != "GetEntryPages"}
        service = "sinergi.v1.AuditLedger"
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, old),))
        server.add_registered_method_handlers(service, old)  # type: ignore[attr-defined]

    monkeypatch.setattr(ledger_pb2_grpc, "add_AuditLedgerServicer_to_server", without_pages)
    old_server = start_server(db_url)
    with ExchangeClient(old_server.pki / "immigration", old_server.address) as client:
        for i in range(3):
            client.publish(alert(str(i)))
    channel, stub = _audit_stub(old_server, "internal-affairs")
    with channel, pytest.raises(grpc.RpcError) as caught:
        list(stub.GetEntryPages(ledger_pb2.GetEntriesRequest(start=1)))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with ExchangeClient(old_server.pki / "internal-affairs", old_server.address) as auditor:
        cp = auditor.checkpoint()
        rows = list(auditor.entries(1, cp.size))
    assert [seq for seq, _, _ in rows] == list(range(1, cp.size + 1))
    note = auditor.witness.notes()[cp.origin]
    report = ledger.verify_ledger(rows, [(cp.size, note)], [verifier])
    assert report.entries == cp.size
    reads = [e.meta for e in old_server.entries() if e.action == Action.LEDGER_READ]
    assert {"method": "GetEntries", "start": 1, "end": cp.size} in reads
