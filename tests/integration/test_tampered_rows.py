"""Visibility rows a database administrator changed (issue 24, part 1).

The alert rows (``alerts.handling``, ``alert_recipients``, ...) are what the query filters on, and
anyone with the database can change them; the sealed message and its sender's signed statement
they cannot. The exchange checks the rows it read against what the sender signed before sending
anything: a row that disagrees keeps the alert from every agency (answered and recorded as an
alert the caller may not see) and is an alarm, logged at error with the alert's id and the field,
and counted. Put right, the rows serve the alert again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
import sqlalchemy

from clients import ExchangeClient, Refused, new_alert, parse_subjects
from ledger import Action
from sinergi.v1 import alert_pb2, exchange_pb2
from tests.conftest import RunningServer, position_of
from tests.integration.support import stub

PASSPORT = "T7654321"
SUMMARY = "Recruiter holds the passports of 14 workers"


@dataclass(frozen=True)
class Tampering:
    """What a DBA does to a TLP:RED alert to police at ``{position}``, what puts it right, and
    the field the alarm names."""

    statement: str
    undo: str
    field: str


TAMPERINGS = {
    "recipient row added": Tampering(
        "INSERT INTO alert_recipients VALUES ({position}, 'labour')",
        "DELETE FROM alert_recipients WHERE alert_position = {position} AND agency = 'labour'",
        "alert_recipients",
    ),
    "marking lowered": Tampering(
        "UPDATE alerts SET handling = 'GREEN' WHERE position = {position}",
        "UPDATE alerts SET handling = 'RED' WHERE position = {position}",
        "alerts.handling",
    ),
}


def as_dba(url: str, statement: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


def get_code(server: RunningServer, who: str, alert_id: str) -> grpc.StatusCode:
    try:
        stub(server, who).GetAlert(exchange_pb2.GetAlertRequest(alert_id=alert_id), timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def listed(server: RunningServer, who: str) -> set[str]:
    reply = stub(server, who).ListAlerts(exchange_pb2.ListAlertsRequest(page_size=200), timeout=10)
    return {view.id for view in reply.alerts}


def searched(server: RunningServer, who: str) -> set[str]:
    request = exchange_pb2.SearchAlertsRequest(passport_number=PASSPORT)
    return {view.id for view in stub(server, who).SearchAlerts(request, timeout=10).alerts}


def first_delivery(server: RunningServer, who: str) -> str:
    """The id of the first alert ``who``'s subscription from the start delivers."""
    call = stub(server, who).Subscribe(exchange_pb2.SubscribeRequest(), timeout=10)
    try:
        return str(next(call).alert.id)
    finally:
        call.cancel()


def alarms(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "sinergi.visibility"]


def counted(server: RunningServer, field: str) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "sinergi_alerts_tampered_total", {"field": field}
    )
    assert value is not None, "every field is counted from the start"
    return value


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_rows_changed_by_a_dba_show_the_alert_to_no_one_and_raise_the_alarm(
    start_server: Callable[..., RunningServer],
    db_url: str,
    caplog: pytest.LogCaptureFixture,
    tampering: str,
) -> None:
    change = TAMPERINGS[tampering]
    server = start_server(db_url)
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        red = immigration.publish(
            new_alert(
                category="OTHER",
                recipients=["police"],
                handling="RED",
                summary=SUMMARY,
                subjects=parse_subjects([f"passport={PASSPORT}"]),
            )
        ).alert_id
        position = position_of(db_url, red)
        as_dba(db_url, change.statement.format(position=position))
        # Published after the change: what each subscription must deliver first.
        later = immigration.publish(
            new_alert(category="OTHER", recipients=["police", "labour"], summary="to both")
        ).alert_id
    assert counted(server, change.field) == 0

    # Labour, whom the rows now admit, and police, whom the sender addressed: neither is served
    # while the rows disagree with what immigration signed.
    for who in ("labour", "police"):
        assert get_code(server, who, red) == grpc.StatusCode.NOT_FOUND, who
        assert red not in listed(server, who), who
        assert searched(server, who) == set(), who
        assert first_delivery(server, who) == later, who
    # ... answered and recorded as an alert the caller may not see (customs never could).
    assert get_code(server, "customs", red) == grpc.StatusCode.NOT_FOUND
    denied = [e for e in server.entries() if e.action is Action.DENIED]
    assert [(e.actor.id.split("/")[4], e.outcome.status, e.objects) for e in denied] == [
        (who, "NOT_FOUND", (f"alert:{red}",)) for who in ("labour", "police", "customs")
    ]
    delivered = {o for e in server.entries() if e.action is Action.DELIVER for o in e.objects}
    assert delivered == {f"alert:{later}"}

    # The alarm: at error, naming the alert and the field, never its content; each counted.
    raised = alarms(caplog)
    assert raised
    assert {(a["level"], a["alert_id"], a["field"]) for a in raised} == {
        ("error", red, change.field)
    }
    assert {"GetAlert", "ListAlerts", "SearchAlerts", "Subscribe"} <= {a["method"] for a in raised}
    assert counted(server, change.field) == len(raised)
    logged = caplog.text
    assert SUMMARY not in logged
    assert PASSPORT not in logged

    # Put right, the rows serve the alert to police again, and to no one else.
    as_dba(db_url, change.undo.format(position=position))
    with ExchangeClient(server.pki / "police", server.address) as police:
        assert police.get_alert(red).current.summary == SUMMARY
        assert red in {view.id for view in police.search_alerts(passport=PASSPORT)}
    assert first_delivery(server, "police") == red
    assert red in listed(server, "police")
    assert get_code(server, "labour", red) == grpc.StatusCode.NOT_FOUND
    assert red not in listed(server, "labour")
    assert len(alarms(caplog)) == len(raised)  # nothing disagrees any more


def test_acknowledging_or_listing_acknowledgements_of_a_tampered_alert_is_refused(
    start_server: Callable[..., RunningServer],
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The other reads of an alert go by what the sender signed too: a recipient row added for
    labour does not let labour acknowledge police's alert or see its acknowledgements."""
    server = start_server(db_url)
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        red = immigration.publish(
            new_alert(category="OTHER", recipients=["police"], handling="RED", summary=SUMMARY)
        ).alert_id
    as_dba(db_url, f"INSERT INTO alert_recipients VALUES ({position_of(db_url, red)}, 'labour')")
    labour = stub(server, "labour")
    with pytest.raises(grpc.RpcError) as refused:
        labour.ListAcknowledgements(
            exchange_pb2.ListAcknowledgementsRequest(alert_id=red), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert [(a["alert_id"], a["method"]) for a in alarms(caplog)] == [(red, "ListAcknowledgements")]
    with ExchangeClient(server.pki / "labour", server.address) as client:
        with pytest.raises(Refused) as caught:
            client.acknowledge(red, alert_pb2.RESPONSE_RECEIVED)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert not [e for e in server.entries() if e.action is Action.ACK]
