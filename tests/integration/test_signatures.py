"""Non-repudiation (docs/decisions/0014): every write is signed with the sender's identity key, the
exchange refuses and records any that is not, and recipients check the signature themselves, so a
message the exchange (or its database administrator) forged or altered is caught on receipt."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import sqlalchemy

from certs import Signer, load_identity
from clients import (
    ExchangeClient,
    SignatureFailed,
    content_alert,
    new_alert,
    parse_subjects,
)
from ledger import Action
from sinergi.v1 import exchange_pb2
from tests.conftest import RunningServer
from tests.integration.support import signed, stub, violations

IMMIGRATION = "spiffe://sinergi.dev/agency/immigration/system/gateway"
POLICE = "spiffe://sinergi.dev/agency/police/system/gateway"


def _request(key: str = "k1", summary: str = "Applicant recruited by an unlicensed agent"):  # type: ignore[no-untyped-def]
    return exchange_pb2.PublishRequest(
        idempotency_key=key,
        alert=new_alert(category="TRAFFICKING_SUSPECT", recipients=["immigration"],
                        summary=summary, subjects=parse_subjects(["passport=C7654321"])),
    )  # fmt: skip


def _refused(server: RunningServer, request: exchange_pb2.PublishRequest) -> grpc.RpcError:
    """Publish ``request`` over police's own, valid TLS identity; it must be refused."""
    with pytest.raises(grpc.RpcError) as caught:
        stub(server, "police").Publish(request, timeout=10)
    return caught.value


def _denied(server: RunningServer) -> list[tuple[str, str]]:
    return [(e.actor.id, e.outcome.status) for e in server.entries() if e.action is Action.DENIED]


def _published(server: RunningServer) -> int:
    return sum(e.action is Action.PUBLISH for e in server.entries())


FORGERIES: dict[str, Callable[[RunningServer], exchange_pb2.PublishRequest]] = {
    # Police's TLS identity, another agency's key: the forged alert of the issue.
    "another agency's key": lambda s: signed(s, "immigration", _request(), sender=POLICE),
    # ... claiming that agency as the sender as well.
    "another agency's key and name": lambda s: signed(s, "immigration", _request()),
    # A police officer's key: same agency, another principal; the TLS peer must be the signer.
    "a colleague's key": lambda s: signed(s, "police-officer", _request(), sender=POLICE),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_request_signed_with_another_key_is_refused_and_recorded(
    server: RunningServer, forgery: str
) -> None:
    error = _refused(server, FORGERIES[forgery](server))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert violations(error) == {
        "signature.signature": "does not verify with your certificate's key"
    }
    assert _denied(server) == [(POLICE, "UNAUTHENTICATED")]
    assert _published(server) == 0


def test_every_malformed_signature_is_refused_with_its_field_and_recorded(
    server: RunningServer,
) -> None:
    unsigned = _request("k1")
    as_other = signed(server, "police", _request("k2"), sender=IMMIGRATION)
    stale = signed(server, "police", _request("k3"), now=datetime.now(UTC) - timedelta(minutes=6))
    swapped = signed(server, "police", _request("k4", summary="What was signed"))
    swapped.alert.summary = "What was sent"
    garbage = _request("k5")
    garbage.signature.statement = b"\xff\xff not a statement"
    garbage.signature.signature = Signer(load_identity(server.pki / "police").key_pem).sign(
        "application/vnd.sinergi.statement.v1+proto", garbage.signature.statement
    )
    cases = [
        (unsigned, grpc.StatusCode.INVALID_ARGUMENT, "signature"),
        (as_other, grpc.StatusCode.PERMISSION_DENIED, "signature.statement.sender"),
        (stale, grpc.StatusCode.INVALID_ARGUMENT, "signature.statement.signed_at"),
        (swapped, grpc.StatusCode.INVALID_ARGUMENT, "signature.statement"),
        (garbage, grpc.StatusCode.INVALID_ARGUMENT, "signature.statement"),
    ]
    for request, code, field in cases:
        error = _refused(server, request)
        assert (error.code(), list(violations(error))) == (code, [field])
    assert _denied(server) == [(POLICE, code.name) for _, code, _ in cases]
    assert _published(server) == 0


def test_recipients_verify_the_sender_and_the_ledger_holds_the_signature_digest(
    server: RunningServer,
) -> None:
    with ExchangeClient(server.pki / "police", server.address) as police:
        published = police.publish(_request().alert)
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        view = immigration.get_alert(published.alert_id)  # verified, or SignatureFailed
        signed = immigration.verify_sender(view.current)
    police_identity = load_identity(server.pki / "police")
    assert str(signed.sender) == POLICE
    assert signed.fingerprint == police_identity.fingerprint
    assert signed.signed_at is not None
    assert abs(signed.signed_at - view.current.sent.ToDatetime(UTC)) < timedelta(seconds=30)
    digest = hashlib.sha256(view.current.signature.signature).hexdigest()
    assert published.receipt.entry.meta["signature"] == digest


def test_updates_and_cancellations_are_signed_and_checked_against_their_thread(
    server: RunningServer,
) -> None:
    with ExchangeClient(server.pki / "police", server.address) as police:
        original = police.publish(_request().alert).alert_id
        update = content_alert(summary="Suspect seen at Batam ferry terminal")
        first = police.update(original, update).alert_id
        update.summary = "Suspect detained"
        police.update(first, update)  # names the first update, not the original
        police.cancel(original, "case closed")
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        view = immigration.get_alert(original)  # each message checked against the original
        assert [m.summary for m in view.history] == [
            "Applicant recruited by an unlicensed agent",
            "Suspect seen at Batam ferry terminal",
            "Suspect detained",
            "case closed",
        ]
        assert list(view.history[2].references) == [original, first]
        # The exchange copies an update's addressing from the original: a recipient holding the
        # thread catches an update whose addressing was altered.
        altered = exchange_pb2.AlertView()
        altered.CopyFrom(view)
        altered.history[1].recipients.append("customs")
        with pytest.raises(SignatureFailed, match="recipients differ"):
            immigration.verify_sender(altered.history[1], altered.history[0])


def test_an_alert_altered_in_the_database_fails_verification_at_the_recipient(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    """The exchange's operator or DBA can rewrite a stored message (here: unsealed bodies), but
    cannot make the recipient accept it: the sender's signature no longer matches."""
    server = start_server(sqlite_url)
    with ExchangeClient(server.pki / "police", server.address) as police:
        alert_id = police.publish(_request().alert).alert_id
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as connection:
        body = connection.execute(
            sqlalchemy.text("SELECT body FROM alerts WHERE id = :id"), {"id": alert_id}
        ).scalar_one()
        forged = exchange_pb2.Delivery().alert
        forged.ParseFromString(body)
        forged.summary = "Applicant cleared; release the passport"
        connection.execute(
            sqlalchemy.text("UPDATE alerts SET body = :body WHERE id = :id"),
            {"body": forged.SerializeToString(deterministic=True), "id": alert_id},
        )
    engine.dispose()
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        with pytest.raises(SignatureFailed, match="not what its sender signed: fields summary"):
            immigration.get_alert(alert_id)
        unchecked = ExchangeClient(server.pki / "immigration", server.address,
                                   verify_senders=False)  # fmt: skip
        with unchecked:
            assert unchecked.get_alert(alert_id).current.summary.startswith("Applicant cleared")


def test_a_visibility_row_added_in_the_database_delivers_nothing_and_raises_the_alarm(
    start_server: Callable[..., RunningServer],
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A DBA adds a visibility row so that customs would receive police's alert to immigration:
    the exchange checks the rows against what police signed, delivers customs nothing of it, and
    raises the alarm. Customs' next alert is the first it receives, and the ledger's DELIVER
    entries show nothing went where it must not (tests/integration/test_tampered_rows.py has
    every read path)."""
    server = start_server(sqlite_url)
    with ExchangeClient(server.pki / "police", server.address) as police:
        alert_id = police.publish(_request().alert).alert_id
        engine = sqlalchemy.create_engine(sqlite_url)
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO alert_recipients (alert_position, agency) "
                    "SELECT position, 'customs' FROM alerts WHERE id = :id"
                ),
                {"id": alert_id},
            )
        engine.dispose()
        to_customs = new_alert(category="OTHER", recipients=["customs"], summary="for customs")
        legitimate = police.publish(to_customs).alert_id
    with ExchangeClient(server.pki / "customs", server.address) as customs:
        assert next(iter(customs.subscribe())).alert.id == legitimate
    delivered = [e for e in server.entries() if e.action is Action.DELIVER]
    assert [(e.actor.id.split("/")[4], e.objects) for e in delivered] == [
        ("customs", (f"alert:{legitimate}",))
    ]
    alarms = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sinergi.visibility"]
    assert [(a["level"], a["alert_id"], a["field"], a["method"]) for a in alarms] == [
        ("error", alert_id, "alert_recipients", "Subscribe")
    ]
    counted = server.server.metrics.registry.get_sample_value(
        "sinergi_alerts_tampered_total", {"field": "alert_recipients"}
    )
    assert counted == 1
