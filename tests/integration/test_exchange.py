"""End to end over real mutual TLS on 127.0.0.1: publish, deliver, acknowledge, refuse, resume."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from certs import SpiffeId, create_ca, issue_client, load_ca, write_identity
from clients import ExchangeClient, Refused, Unreachable, new_alert, parse_subjects
from ledger import Action
from sinergi.v1 import alert_pb2, exchange_pb2, exchange_pb2_grpc
from tests.conftest import RunningServer, wait_for
from tests.integration.support import Collector


def passport_hold(**overrides: object) -> alert_pb2.Alert:
    fields: dict[str, object] = {
        "category": "PASSPORT_HOLD",
        "recipients": ["police", "labour"],
        "summary": "Applicant recruited by an unlicensed agent",
        "subjects": parse_subjects(["passport=C1234567,nationality=ID"]),
    }
    fields.update(overrides)
    return new_alert(**fields)  # type: ignore[arg-type]


def test_publish_reaches_only_recipients_and_ledger_records_every_act(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sinergi.rpc")
    police, labour, customs = (Collector(server, a) for a in ("police", "labour", "customs"))
    try:
        with ExchangeClient(server.pki / "immigration", server.address) as immigration:
            published = immigration.publish(passport_hold())
        # The receipt was verified by the client: signed checkpoint plus inclusion proof.
        assert published.receipt.entry.action == Action.PUBLISH
        assert published.receipt.checkpoint.size >= published.receipt.seq
        wait_for(lambda: police.ids() == [published.alert_id], what="police delivery")
        wait_for(lambda: labour.ids() == [published.alert_id], what="labour delivery")
        # Customs is not a recipient: the next thing it receives is an alert addressed to it.
        with ExchangeClient(server.pki / "police", server.address) as police_client:
            imei = police_client.publish(
                new_alert(
                    category="IMEI_FRAUD",
                    recipients=["customs"],
                    summary="IMEI registrations abused by a joki syndicate",
                    subjects=parse_subjects(["imei=490154203237518"]),
                )
            )
            wait_for(lambda: customs.ids() == [imei.alert_id], what="customs delivery")
            acked = police_client.acknowledge(
                published.alert_id, alert_pb2.RESPONSE_ACCEPTED, note="on it"
            )
        assert acked.acknowledgement.agency == "police"
        delivered = police.deliveries[0].alert
        assert delivered.sender == "spiffe://sinergi.dev/agency/immigration/system/gateway"
        assert delivered.subjects[0].person.passport_number == "C1234567"
    finally:
        for collector in (police, labour, customs):
            collector.stop()

    entries = server.entries()
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    acts = [(e.action, e.actor.id.split("/")[4] if "/agency/" in e.actor.id else "-",
             e.objects) for e in entries]  # fmt: skip
    alert1, alert2 = f"alert:{published.alert_id}", f"alert:{imei.alert_id}"
    assert acts[0][0] == Action.START
    expected = {
        (Action.PUBLISH, "immigration", (alert1,)),
        (Action.DELIVER, "police", (alert1,)),
        (Action.DELIVER, "labour", (alert1,)),
        (Action.PUBLISH, "police", (alert2,)),
        (Action.DELIVER, "customs", (alert2,)),
        (Action.ACK, "police", (alert1,)),
    }
    assert set(acts[1:]) == expected
    assert len(acts) == 7
    # Causal order: each delivery after its publish, the acknowledgement last.
    position = {act: i for i, act in enumerate(acts)}
    assert (
        position[(Action.PUBLISH, "immigration", (alert1,))]
        < position[(Action.DELIVER, "police", (alert1,))]
    )
    assert acts[-1] == (Action.ACK, "police", (alert1,))
    publish = entries[position[(Action.PUBLISH, "immigration", (alert1,))]]
    # The sender's signature, which the police client verified on delivery, is in the ledger.
    signature = hashlib.sha256(delivered.signature.signature).hexdigest()
    assert publish.meta == {"category": "PASSPORT_HOLD", "to": ["labour", "police"],
                            "to_index": ["labour:1", "police:1"],  # each agency's first
                            "handling": "AMBER", "signature": signature}  # fmt: skip
    # No personal data in the ledger: the passport number appears nowhere in it.
    assert all(b"C1234567" not in e.encode() for e in entries)
    # One JSON log line per RPC, naming who did what with which outcome, never the contents.
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sinergi.rpc"]
    publishes = [line for line in lines if line["method"] == "/sinergi.v1.Exchange/Publish"]
    assert len(publishes) == 2
    assert publishes[0]["principal"] == "spiffe://sinergi.dev/agency/immigration/system/gateway"
    assert publishes[0]["code"] == "OK"
    assert isinstance(publishes[0]["duration_ms"], float)
    assert len(publishes[0]["cert"]) == 64
    logged = caplog.text
    for personal in ("C1234567", "490154203237518", "unlicensed", "joki", "on it"):
        assert personal not in logged


def _denied(server: RunningServer) -> list[tuple[str, str, str]]:
    return [
        (e.actor.id, str(e.meta.get("method", "")).rsplit("/", 1)[-1], e.outcome.status)
        for e in server.entries()
        if e.action == Action.DENIED
    ]


def test_client_without_certificate_is_refused_at_the_handshake(server: RunningServer) -> None:
    ca = (server.pki / "ca.crt").read_bytes()
    channel = grpc.secure_channel(server.address, grpc.ssl_channel_credentials(ca))
    stub = exchange_pb2_grpc.ExchangeStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Publish(exchange_pb2.PublishRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()
    assert _denied(server) == []  # the handshake fails before any code of ours runs


def test_certificate_from_another_ca_is_refused(server: RunningServer, tmp_path: Path) -> None:
    rogue_ca = create_ca("Rogue CA")
    forged = issue_client(rogue_ca, SpiffeId("sinergi.dev", "immigration", "system", "gateway"))
    identity = write_identity(tmp_path / "rogue", forged, rogue_ca.certificate)
    # Trust the real server CA, present the rogue certificate.
    (identity / "ca.crt").write_bytes((server.pki / "ca.crt").read_bytes())
    (identity / "ledger.vkey").write_bytes((server.pki / "ledger.vkey").read_bytes())
    with ExchangeClient(identity, server.address, timeout=5) as client:
        with pytest.raises(Unreachable):
            client.publish(passport_hold())
    assert _denied(server) == []


def test_forbidden_category_is_refused_and_recorded(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "customs", server.address) as customs:
        with pytest.raises(Refused) as caught:
            customs.publish(passport_hold(recipients=["police"]))
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert _denied(server) == [
        ("spiffe://sinergi.dev/agency/customs/system/gateway", "Publish", "PERMISSION_DENIED")
    ]


def test_auditor_cannot_publish_or_subscribe(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "internal-affairs", server.address) as auditor:
        with pytest.raises(Refused) as publish:
            auditor.publish(passport_hold())
        with pytest.raises(Refused) as subscribe:
            next(auditor.subscribe())
    assert publish.value.code == subscribe.value.code == grpc.StatusCode.PERMISSION_DENIED
    officer = "spiffe://sinergi.dev/agency/internal-affairs/officer/auditor"
    assert _denied(server) == [
        (officer, "Publish", "PERMISSION_DENIED"),
        (officer, "Subscribe", "PERMISSION_DENIED"),
    ]


def test_invalid_fields_are_each_reported_and_recorded(server: RunningServer) -> None:
    alert = passport_hold(recipients=["police", "nobody"])
    alert.subjects.add().person.nik = "12345"
    alert.subjects.add().device.imei = "490154203237519"  # Luhn check digit wrong
    alert.summary = ""
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        with pytest.raises(Refused) as caught:
            client.publish(alert)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(caught.value.violations) == {
        "alert.subjects[1].person.nik": "must be 16 digits",
        "alert.subjects[2].device.imei": "must be 15 digits with a valid Luhn check digit",
        "alert.summary": "is required",
    }
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        with pytest.raises(Refused) as unknown:
            client.publish(passport_hold(recipients=["police", "nobody"]))
    assert unknown.value.violations == (
        ("alert.recipients[1]", "'nobody' is not a recipient agency of this exchange"),
    )
    immigration = "spiffe://sinergi.dev/agency/immigration/system/gateway"
    assert _denied(server) == [(immigration, "Publish", "INVALID_ARGUMENT")] * 2


def test_malformed_request_bytes_get_invalid_argument_and_are_recorded(
    server: RunningServer,
) -> None:
    identity = server.pki / "police"
    credentials = grpc.ssl_channel_credentials(
        (identity / "ca.crt").read_bytes(),
        (identity / "tls.key").read_bytes(),
        (identity / "tls.crt").read_bytes(),
    )
    with grpc.secure_channel(server.address, credentials) as channel:
        raw = channel.unary_unary("/sinergi.v1.Exchange/Publish")
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert status.message == "request is not a valid protobuf message"
    assert _denied(server) == [
        ("spiffe://sinergi.dev/agency/police/system/gateway", "Publish", "INVALID_ARGUMENT")
    ]


def test_wrong_trust_domain_is_unauthenticated_and_recorded(
    server: RunningServer, tmp_path: Path
) -> None:
    ca = load_ca(server.pki / "ca")
    outsider = issue_client(ca, SpiffeId("elsewhere.example", "police", "system", "gateway"))
    identity = write_identity(tmp_path / "outsider", outsider, ca.certificate)
    (identity / "ledger.vkey").write_bytes((server.pki / "ledger.vkey").read_bytes())
    with ExchangeClient(identity, server.address) as client, pytest.raises(Refused) as caught:
        client.publish(passport_hold())
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert _denied(server) == [
        ("spiffe://elsewhere.example/agency/police/system/gateway", "Publish", "UNAUTHENTICATED")
    ]


def test_acknowledging_an_alert_not_addressed_to_you_is_refused_and_recorded(
    server: RunningServer,
) -> None:
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        published = immigration.publish(passport_hold())
    with ExchangeClient(server.pki / "customs", server.address) as customs:
        with pytest.raises(Refused) as caught:
            customs.acknowledge(published.alert_id, alert_pb2.RESPONSE_ACCEPTED)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    denied = [e for e in server.entries() if e.action == Action.DENIED]
    assert [(e.actor.id.split("/")[4], e.objects) for e in denied] == [
        ("customs", (f"alert:{published.alert_id}",))
    ]


def test_idempotent_retry_returns_the_first_result(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        first = client.publish(passport_hold(), idempotency_key="batam-2026-0001")
        again = client.publish(passport_hold(), idempotency_key="batam-2026-0001")
        with pytest.raises(Refused) as conflict:
            client.publish(passport_hold(summary="different"), idempotency_key="batam-2026-0001")
    assert again.alert_id == first.alert_id
    assert again.receipt.seq == first.receipt.seq
    assert conflict.value.code == grpc.StatusCode.ALREADY_EXISTS
    actions = [e.action for e in server.entries()]
    assert actions.count(Action.PUBLISH) == 1
    assert actions.count(Action.DENIED) == 1


def test_resumed_subscriber_loses_nothing(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        ids = [immigration.publish(passport_hold(summary=f"alert {i}")).alert_id for i in range(3)]
        with ExchangeClient(server.pki / "police", server.address) as police:
            stream = police.subscribe()
            first = next(stream)
            cursor = first.cursor
        # Disconnected; two more alerts are published while police is away.
        ids += [immigration.publish(passport_hold(summary=f"alert {i}")).alert_id for i in (3, 4)]
    resumed = Collector(server, "police", after=cursor)
    try:
        wait_for(lambda: len(resumed.deliveries) >= 4, what="the resumed backlog")
    finally:
        resumed.stop()
    received = [first.alert.id, *resumed.ids()]
    assert received == ids  # every alert, in order, none lost, none twice after the cursor
    cursors = [first.cursor] + [d.cursor for d in resumed.deliveries]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == len(cursors)
