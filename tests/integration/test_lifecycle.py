"""The alert lifecycle (CAP 1.2): update, cancel, expiry, idempotency, acknowledgements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from clients import ExchangeClient, new_alert, parse_subjects
from ledger import Action
from sinergi.v1 import alert_pb2, exchange_pb2
from tests.conftest import RunningServer, wait_for
from tests.integration.support import signed, stub, violations


def publish(server: RunningServer, who: str = "immigration", **fields: object) -> str:
    values: dict[str, object] = {
        "category": "PASSPORT_HOLD",
        "recipients": ["police", "labour"],
        "summary": "Applicant recruited by an unlicensed agent",
        "subjects": parse_subjects(["passport=C1234567"]),
    }
    values.update(fields)
    with ExchangeClient(server.pki / who, server.address) as client:
        return client.publish(new_alert(**values)).alert_id  # type: ignore[arg-type]


def update(server: RunningServer, who: str, alert_id: str, key: str = "u1", **fields: object):  # type: ignore[no-untyped-def]
    content = alert_pb2.Alert(
        status=alert_pb2.STATUS_ACTUAL,
        severity=alert_pb2.SEVERITY_SEVERE,
        urgency=alert_pb2.URGENCY_IMMEDIATE,
        certainty=alert_pb2.CERTAINTY_LIKELY,
        summary="Applicant confirmed as a trafficking victim",
        **fields,  # type: ignore[arg-type]
    )
    request = exchange_pb2.UpdateRequest(idempotency_key=key, alert_id=alert_id, alert=content)
    return stub(server, who).Update(signed(server, who, request))


def cancel(server: RunningServer, who: str, alert_id: str, key: str = "c1"):  # type: ignore[no-untyped-def]
    request = exchange_pb2.CancelRequest(
        idempotency_key=key, alert_id=alert_id, reason="issued in error"
    )
    return stub(server, who).Cancel(signed(server, who, request))


def get(server: RunningServer, who: str, alert_id: str) -> exchange_pb2.AlertView:
    return stub(server, who).GetAlert(exchange_pb2.GetAlertRequest(alert_id=alert_id))


def test_state_is_derived_from_the_history(server: RunningServer) -> None:
    original = publish(server)
    assert get(server, "police", original).state == alert_pb2.ALERT_STATE_ACTIVE

    updated = update(server, "immigration", original)
    view = get(server, "police", original)
    assert view.state == alert_pb2.ALERT_STATE_UPDATED
    assert view.id == original
    assert view.current.id == updated.alert_id
    assert view.current.summary == "Applicant confirmed as a trafficking victim"
    # The update keeps the thread's addressing and references the original (CAP <references>).
    assert view.current.message_type == alert_pb2.MESSAGE_TYPE_UPDATE
    assert list(view.current.references) == [original]
    assert sorted(view.current.recipients) == ["labour", "police"]
    assert view.current.category == alert_pb2.CATEGORY_PASSPORT_HOLD
    # Asking by the update's id finds the same thread.
    assert get(server, "labour", updated.alert_id).id == original

    cancelled = cancel(server, "immigration", original)
    view = get(server, "police", original)
    assert view.state == alert_pb2.ALERT_STATE_CANCELLED
    assert [m.message_type for m in view.history] == [
        alert_pb2.MESSAGE_TYPE_ALERT,
        alert_pb2.MESSAGE_TYPE_UPDATE,
        alert_pb2.MESSAGE_TYPE_CANCEL,
    ]
    assert view.history[2].id == cancelled.alert_id
    assert not view.history[2].subjects  # a cancellation repeats no personal data
    assert view.current.id == updated.alert_id  # the content in force before the cancel

    with pytest.raises(grpc.RpcError) as again:
        update(server, "immigration", original, key="u2")
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    acts = [(e.action, e.objects) for e in server.entries()]
    assert (Action.UPDATE, (f"alert:{updated.alert_id}", f"alert:{original}")) in acts
    assert (Action.CANCEL, (f"alert:{cancelled.alert_id}", f"alert:{original}")) in acts
    reads = [e for e in server.entries() if e.action == Action.READ]
    assert reads[-1].meta == {"method": "GetAlert"}
    assert f"alert:{cancelled.alert_id}" in reads[-1].objects


def test_recipients_receive_updates_and_cancellations(server: RunningServer) -> None:
    original = publish(server)
    update(server, "immigration", original)
    cancel(server, "immigration", original)
    call = stub(server, "police").Subscribe(exchange_pb2.SubscribeRequest(after=0))
    received = [next(call) for _ in range(3)]
    call.cancel()
    assert [d.alert.message_type for d in received] == [
        alert_pb2.MESSAGE_TYPE_ALERT,
        alert_pb2.MESSAGE_TYPE_UPDATE,
        alert_pb2.MESSAGE_TYPE_CANCEL,
    ]
    assert [d.cursor for d in received] == sorted(d.cursor for d in received)


@pytest.mark.parametrize("who", ["police", "labour", "customs"])
def test_only_the_originating_agency_may_update_or_cancel(server: RunningServer, who: str) -> None:
    original = publish(server)
    for attempt in (lambda: update(server, who, original), lambda: cancel(server, who, original)):
        with pytest.raises(grpc.RpcError) as refused:
            attempt()
        # customs may not even see it: it is told the alert does not exist.
        expected = (
            grpc.StatusCode.NOT_FOUND if who == "customs" else grpc.StatusCode.PERMISSION_DENIED
        )
        assert refused.value.code() == expected
    denied = [e for e in server.entries() if e.action == Action.DENIED]
    assert [e.meta["method"].rsplit("/", 1)[1] for e in denied] == ["Update", "Cancel"]
    assert all(e.objects == (f"alert:{original}",) for e in denied)
    assert all(f"/agency/{who}/" in e.actor.id for e in denied)
    assert get(server, "immigration", original).state == alert_pb2.ALERT_STATE_ACTIVE


def test_an_update_cannot_change_the_addressing(server: RunningServer) -> None:
    original = publish(server)
    with pytest.raises(grpc.RpcError) as refused:
        update(server, "immigration", original, recipients=["customs"],
               handling=alert_pb2.TLP_CLEAR, category=alert_pb2.CATEGORY_OTHER)  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(refused.value)) == {
        "alert.recipients",
        "alert.handling",
        "alert.category",
    }
    assert server.entries()[-1].action == Action.DENIED


def test_idempotent_update_and_cancel(server: RunningServer) -> None:
    original = publish(server)
    first = update(server, "immigration", original, key="same")
    retry = update(server, "immigration", original, key="same")
    assert retry.alert_id == first.alert_id
    assert retry.receipt.seq == first.receipt.seq
    with pytest.raises(grpc.RpcError) as reused:
        cancel(server, "immigration", original, key="same")
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(get(server, "immigration", original).history) == 2


def test_an_alert_expires(server: RunningServer) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1)
    content = new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="held")
    content.expires.FromDatetime(expires)
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        alert_id = client.publish(content).alert_id
    assert get(server, "police", alert_id).state == alert_pb2.ALERT_STATE_ACTIVE
    wait_for(
        lambda: get(server, "police", alert_id).state == alert_pb2.ALERT_STATE_EXPIRED,
        what="expiry",
    )
    listed = stub(server, "police").ListAlerts(
        exchange_pb2.ListAlertsRequest(states=[alert_pb2.ALERT_STATE_EXPIRED])
    )
    assert [v.id for v in listed.alerts] == [alert_id]
    active = stub(server, "police").ListAlerts(
        exchange_pb2.ListAlertsRequest(states=[alert_pb2.ALERT_STATE_ACTIVE])
    )
    assert not active.alerts
    # A new subscriber's backlog leaves out what has expired.
    publish(server, recipients=["police"], summary="still in force")
    call = stub(server, "police").Subscribe(exchange_pb2.SubscribeRequest(after=0))
    first = next(call)
    call.cancel()
    assert first.alert.summary == "still in force"


def test_acknowledgements_are_reported_to_the_originator(server: RunningServer) -> None:
    original = publish(server)
    with ExchangeClient(server.pki / "police", server.address) as police:
        police.acknowledge(original, alert_pb2.RESPONSE_ACTION_TAKEN, case_reference="LP/123")
    with ExchangeClient(server.pki / "labour", server.address) as labour:
        labour.acknowledge(original, alert_pb2.RESPONSE_NOT_RELEVANT, note="not ours")
    request = exchange_pb2.ListAcknowledgementsRequest(alert_id=original)
    hits = stub(server, "immigration").ListAcknowledgements(request).acknowledgements
    assert [(a.agency, a.response, a.case_reference) for a in hits] == [
        ("police", alert_pb2.RESPONSE_ACTION_TAKEN, "LP/123"),
        ("labour", alert_pb2.RESPONSE_NOT_RELEVANT, ""),
    ]
    own = stub(server, "labour").ListAcknowledgements(request).acknowledgements
    assert [a.agency for a in own] == ["labour"]
    with pytest.raises(grpc.RpcError) as hidden:
        stub(server, "customs").ListAcknowledgements(request)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    entries = server.entries()
    reads = [e for e in entries if e.action == Action.READ]
    assert [e.meta["results"] for e in reads] == [2, 1]
    assert entries[-1].action == Action.DENIED
    assert entries[-1].objects == (f"alert:{original}",)


def test_every_bad_field_is_reported_with_its_path(server: RunningServer) -> None:
    police = stub(server, "police")
    cases = [
        (
            lambda: police.Update(exchange_pb2.UpdateRequest(idempotency_key="", alert_id="x",
                                  alert=alert_pb2.Alert(summary="", references=["y"]))),
            {"idempotency_key", "alert_id", "alert.summary", "alert.references",
             "alert.references[0]", "alert.status", "alert.severity", "alert.urgency",
             "alert.certainty"},
        ),
        (
            lambda: police.Cancel(exchange_pb2.CancelRequest(idempotency_key="k", alert_id="x")),
            {"alert_id", "reason"},
        ),
        (
            lambda: police.SearchAlerts(exchange_pb2.SearchAlertsRequest(
                imei="490154203237517", nik="12", page_size=1000, page_token="-1")),
            {"passport_number,nik,imei,name", "imei", "nik", "page_size", "page_token"},
        ),
        (
            lambda: police.SearchAlerts(exchange_pb2.SearchAlertsRequest(name="Siti")),
            {"birth_date"},
        ),
        (
            lambda: police.ListAlerts(exchange_pb2.ListAlertsRequest(
                categories=[99], states=[0], sender_agency="Not An Agency")),
            {"categories[0]", "states[0]", "sender_agency"},
        ),
        (
            lambda: police.GetAlert(exchange_pb2.GetAlertRequest(alert_id="../etc/passwd")),
            {"alert_id"},
        ),
    ]  # fmt: skip
    for call, expected in cases:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(violations(refused.value)) == expected
    denied = [e for e in server.entries() if e.action == Action.DENIED]
    assert len(denied) == len(cases)
    assert all(e.outcome.status == "INVALID_ARGUMENT" for e in denied)


def test_an_agency_without_the_publisher_role_may_not_update(server: RunningServer) -> None:
    original = publish(server)
    with pytest.raises(grpc.RpcError) as refused:
        cancel(server, "internal-affairs", original)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "publisher role" in str(refused.value.details())
    last = server.entries()[-1]
    assert last.action == Action.DENIED
    assert "/agency/internal-affairs/" in last.actor.id


def test_a_retried_acknowledgement_is_recorded_once(server: RunningServer) -> None:
    original = publish(server)
    police = stub(server, "police")

    def ack(note: str) -> exchange_pb2.AcknowledgeResponse:
        return police.Acknowledge(exchange_pb2.AcknowledgeRequest(
            alert_id=original, response=alert_pb2.RESPONSE_ACCEPTED, note=note,
            idempotency_key="ack-1"))  # fmt: skip

    first, retry = ack("on it"), ack("on it")
    assert retry.acknowledgement == first.acknowledgement
    assert retry.receipt.seq == first.receipt.seq
    with pytest.raises(grpc.RpcError) as reused:
        ack("something else")
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    entries = server.entries()
    assert [e.action for e in entries].count(Action.ACK) == 1
    assert entries[-1].action == Action.DENIED
    listed = police.ListAcknowledgements(
        exchange_pb2.ListAcknowledgementsRequest(alert_id=original)
    )
    assert len(listed.acknowledgements) == 1
