"""What docs/api.md promises a client written from the docs and proto/ alone, over real mTLS.

A grpc-js implementer stumbled on each of these: an unset `message_type`, error details that
needed hand-written google.rpc definitions, and refusals the exchange never sees.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients import ExchangeClient, Refused, content_alert, new_alert, parse_subjects
from exchange import DEFAULT_POLICY
from ledger import Action
from sinergi.v1 import alert_pb2, exchange_pb2, ledger_pb2, ledger_pb2_grpc
from tests.clients.conftest import run
from tests.conftest import RunningServer, wait_for
from tests.integration.support import Collector, channel, signed, stub

RPC_PROTOS = ("status.proto", "error_details.proto")
SHIPPED = Path(__file__).resolve().parents[2] / "proto" / "google" / "rpc"


@pytest.mark.parametrize("name", RPC_PROTOS)
def test_the_shipped_google_rpc_protos_are_the_ones_the_exchange_uses(name: str) -> None:
    """proto/google/rpc/ holds exactly what googleapis-common-protos (which the exchange builds
    its error details with) holds, so the two cannot drift."""
    installed = Path(error_details_pb2.__file__).with_name(name)
    assert (SHIPPED / name).read_bytes() == installed.read_bytes()


def _publish(server: RunningServer, message_type: int) -> exchange_pb2.PublishResponse:
    alert = new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="held")
    alert.message_type = message_type  # type: ignore[assignment]
    request = exchange_pb2.PublishRequest(idempotency_key=f"k{message_type}", alert=alert)
    response: exchange_pb2.PublishResponse = stub(server, "immigration").Publish(
        signed(server, "immigration", request), timeout=10
    )
    return response


def test_publish_with_message_type_unset_is_an_alert_everywhere(server: RunningServer) -> None:
    alert_id = _publish(server, alert_pb2.MESSAGE_TYPE_UNSPECIFIED).alert_id
    with ExchangeClient(server.pki / "police", server.address) as police:
        # Each of these checks the sender's signature, made over the request as sent.
        view = police.get_alert(alert_id)
        delivered = next(police.subscribe()).alert
        listed = next(police.list_alerts()).current
    assert view.state == alert_pb2.ALERT_STATE_ACTIVE
    for message in (view.current, view.history[0], delivered, listed):
        assert message.id == alert_id
        assert message.message_type == alert_pb2.MESSAGE_TYPE_ALERT
    statement = exchange_pb2.Statement.FromString(delivered.signature.statement)
    assert statement.publish.alert.message_type == alert_pb2.MESSAGE_TYPE_UNSPECIFIED
    stored = hashlib.sha256(delivered.SerializeToString(deterministic=True)).hexdigest()
    published = [e for e in server.entries() if e.action == Action.PUBLISH]
    assert [(e.objects, e.digest) for e in published] == [((f"alert:{alert_id}",), stored)]


def test_publish_with_an_unknown_message_type_is_refused_once(server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _publish(server, 7)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        found += [(v.field, v.description) for v in bad.field_violations]
    assert found == [("alert.message_type", "is not a known value")]


def _rpc_pool(tmp_path: Path) -> descriptor_pool.DescriptorPool:
    """Descriptors compiled from the google/rpc/status.proto and error_details.proto shipped in
    proto/ alone, plus the google/protobuf imports every protoc has, in a pool of their own:
    what a client in another language builds."""
    out = tmp_path / "rpc.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{SHIPPED.parents[1]}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *(f"google/rpc/{name}" for name in RPC_PROTOS),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert sorted(f.name for f in files) == [
        "google/protobuf/any.proto",
        "google/protobuf/duration.proto",
        "google/rpc/error_details.proto",
        "google/rpc/status.proto",
    ]
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    return pool


def test_bad_request_details_decode_with_the_google_rpc_protos_alone(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    server = start_server(sqlite_url)
    alert = new_alert(
        category="PASSPORT_HOLD",
        recipients=["police"],
        summary="held",
        subjects=parse_subjects(["nik=123"]),
    )
    request = signed(
        server, "immigration", exchange_pb2.PublishRequest(idempotency_key="k", alert=alert)
    )
    with channel(server, "immigration") as raw:
        publish = raw.unary_unary("/sinergi.v1.Exchange/Publish")
        with pytest.raises(grpc.RpcError) as caught:
            publish(request.SerializeToString(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = caught.value.trailing_metadata()
    [details_bin] = [m.value for m in trailers if m.key == "grpc-status-details-bin"]
    assert isinstance(details_bin, bytes)

    pool = _rpc_pool(tmp_path)
    status_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))
    bad_request_type = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.rpc.BadRequest")
    )
    status = status_type.FromString(details_bin)
    assert (status.code, status.message) == (3, "invalid publish request")  # type: ignore[attr-defined]
    [detail] = status.details  # type: ignore[attr-defined]
    assert detail.type_url == "type.googleapis.com/google.rpc.BadRequest"
    bad = bad_request_type.FromString(detail.value)
    assert [(v.field, v.description) for v in bad.field_violations] == [  # type: ignore[attr-defined]
        ("alert.subjects[0].person.nik", "must be 16 digits")
    ]


def test_refusals_before_the_exchange_code_leave_no_ledger_entry(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    """grpcio answers these itself: no DENIED entry, as docs/api.md says."""
    server = start_server(sqlite_url)
    with channel(server, "police") as raw:
        oversized = b"\x0a\x85\x80\x80\x02" + bytes(4 * 1024 * 1024 + 5)
        with pytest.raises(grpc.RpcError) as too_big:
            raw.unary_unary("/sinergi.v1.Exchange/Publish")(oversized, timeout=10)
        with pytest.raises(grpc.RpcError) as unknown:
            raw.unary_unary("/sinergi.v1.Exchange/Delete")(b"", timeout=10)
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    ca = (server.pki / "ca.crt").read_bytes()
    with grpc.secure_channel(server.address, grpc.ssl_channel_credentials(ca)) as anonymous:
        with pytest.raises(grpc.RpcError) as handshake:
            anonymous.unary_unary("/sinergi.v1.Exchange/Publish")(b"", timeout=10)
    assert handshake.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [e.action for e in server.entries()] == [Action.START]


def _documented_meta() -> dict[str, set[str]]:
    """docs/ledger-format.md's table of `meta` keys, by action."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ledger-format.md").read_text()
    table = doc.split("The keys of `meta`, by action.", 1)[1].split("\n\n", 2)[1]
    keys: dict[str, set[str]] = {}
    actions: list[str] = []
    for row in table.splitlines()[2:]:
        action_cell, key_cell = row.split(" | ")[:2]
        actions = re.findall(r"`(\w+)`", action_cell) or actions
        for action in actions:
            keys.setdefault(action, set()).update(re.findall(r"`(\w+)`", key_cell))
    return keys


def test_every_action_writes_the_meta_keys_docs_ledger_format_lists(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    """A strict verifier checks `meta` against that table: it must name exactly the keys the
    exchange writes, for every action (REDACT through `sinergi db purge`; a DELIVER to two
    principals at once, with a policy letting police's officer subscribe too)."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        DEFAULT_POLICY.read_text()
        + '\n[agencies.police.principals]\n"officer/investigator" = ["read", "subscribe"]\n'
    )
    server = start_server(sqlite_url, policy=policy)
    subjects = parse_subjects(["passport=C1234567"])
    alert = new_alert(
        category="PASSPORT_HOLD", recipients=["police"], summary="held", subjects=subjects
    )
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        earlier = new_alert(category="PASSPORT_HOLD", recipients=["police"],
                            summary="held before", subjects=subjects)  # fmt: skip
        immigration.publish(earlier)  # related to the next: they share the passport
        alert_id = immigration.publish(alert).alert_id
        immigration.update(alert_id, content_alert(summary="still held"))
    with ExchangeClient(server.pki / "police", server.address) as police:
        next(police.subscribe(related=True))
        police.acknowledge(alert_id, alert_pb2.RESPONSE_RECEIVED)
        police.get_alert(alert_id)
        list(police.list_alerts())
        police.acknowledgements(alert_id)
        list(police.search_alerts(passport="C1234567"))
        police.consistency(1, 0)
        police.envelopes(1, 0)  # LEDGER_READ with results
        police.alert_proof(alert_id)  # READ by GetAlertProof
        with pytest.raises(Refused):
            police.get_alert("00000000-0000-4000-8000-000000000000")  # DENIED: NOT_FOUND
    both = [Collector(server, name) for name in ("police", "police-officer")]
    try:  # both idle at the same cursor: one publish wakes them together
        wait_for(lambda: all(len(c.ids()) == 3 for c in both), what="both subscriptions")
        with ExchangeClient(server.pki / "immigration", server.address) as immigration:
            immigration.cancel(alert_id, "issued in error")
        wait_for(lambda: all(len(c.ids()) == 4 for c in both), what="the cancellation")
    finally:
        for collector in both:
            collector.stop()
    with ExchangeClient(server.pki / "internal-affairs", server.address) as auditor:
        list(auditor.entries(1, 0))
        auditor.inclusion(1)
    with channel(server, "internal-affairs") as raw:
        list(
            ledger_pb2_grpc.AuditLedgerStub(raw).GetEntries(
                ledger_pb2.GetEntriesRequest(start=1), timeout=10
            )
        )
    purge = ["--older-than", "0", "--pki", str(server.pki), "--db", sqlite_url]
    purged = run("db", "purge", *purge)
    assert purged.returncode == 0, purged.stderr

    written: dict[str, set[str]] = {}
    for entry in server.entries():
        written.setdefault(entry.action.value, set()).update(entry.meta)
    assert written == _documented_meta()
