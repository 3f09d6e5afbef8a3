"""What each identity of an agency may call: officers read, search and acknowledge; the agency's
gateway (a system) publishes, updates and cancels; a policy can grant an officer more by name.
Refused by the guard before any servicer runs, answered PERMISSION_DENIED and recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from clients import ExchangeClient, Refused, content_alert, new_alert, parse_subjects
from exchange import DEFAULT_POLICY, Policy
from ledger import Action, meta
from sinergi.v1 import alert_pb2
from tests.conftest import RunningServer

OFFICER = "spiffe://sinergi.dev/agency/police/officer/investigator"
GATEWAY = "spiffe://sinergi.dev/agency/police/system/gateway"
PASSPORT = "C7654321"


def _red(summary: str) -> alert_pb2.Alert:
    return new_alert(
        category="TRAFFICKING_SUSPECT",
        recipients=["immigration"],
        summary=summary,
        handling="RED",
        subjects=parse_subjects([f"passport={PASSPORT}"]),
    )


def _refused(call: Callable[[], object]) -> str:
    with pytest.raises(Refused) as caught:
        call()
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    return caught.value.message.removeprefix("PERMISSION_DENIED: ")


def _acts(server: RunningServer, who: str) -> list[tuple[Action, str]]:
    return [
        (e.action, str(e.meta.get("method", "")))
        for e in server.entries()
        if e.actor.id == who and e.action is not Action.LEDGER_READ
    ]


def test_an_officer_does_not_speak_for_its_agency(server: RunningServer) -> None:
    """The issue's officer: it published a TLP:RED alert, acknowledged, and cancelled the
    gateway's alert. Now its Publish, Update, Cancel (and Subscribe, the gateway's feed) are
    refused and recorded; it still reads, searches and acknowledges (the ACK entry names the
    officer, not the agency); the gateway still does everything."""
    pki = server.pki
    with (
        ExchangeClient(pki / "police", server.address) as gateway,
        ExchangeClient(pki / "police-officer", server.address) as officer,
        ExchangeClient(pki / "immigration", server.address) as immigration,
    ):
        ours = gateway.publish(_red("the gateway's alert")).alert_id
        theirs = immigration.publish(
            new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="to police")
        ).alert_id
        gives = "the policy gives officers of police: read, search, acknowledge"
        refusals = {
            "Publish": _refused(lambda: officer.publish(_red("the officer's alert"))),
            "Update": _refused(lambda: officer.update(ours, content_alert(summary="changed"))),
            "Cancel": _refused(lambda: officer.cancel(ours, "not the officer's to cancel")),
            "Subscribe": _refused(lambda: next(officer.subscribe(reconnect=False))),
        }
        assert refusals == {
            method: f"police officer {OFFICER} may not call {method}: {gives}"
            for method in refusals
        }
        assert officer.get_alert(ours).id == ours
        assert [view.id for view in officer.search_alerts(passport=PASSPORT)] == [ours]
        ack = officer.acknowledge(theirs, alert_pb2.RESPONSE_ACCEPTED)
        assert ack.acknowledgement.principal == OFFICER
        assert ack.receipt.entry.actor.id == OFFICER
        # The gateway's own acts are untouched.
        gateway.update(ours, content_alert(summary="the gateway's update"))
        gateway.cancel(ours, "the gateway cancels its own alert")
        assert gateway.publish(_red("the gateway's second alert")).alert_id
    assert _acts(server, OFFICER) == [
        (Action.DENIED, "/sinergi.v1.Exchange/Publish"),
        (Action.DENIED, "/sinergi.v1.Exchange/Update"),
        (Action.DENIED, "/sinergi.v1.Exchange/Cancel"),
        (Action.DENIED, "/sinergi.v1.Exchange/Subscribe"),
        (Action.READ, "GetAlert"),
        (Action.SEARCH, "SearchAlerts"),
        (Action.ACK, ""),
    ]
    denied = [e for e in server.entries() if e.action is Action.DENIED]
    assert {(e.outcome.status, e.outcome.reason) for e in denied} == {
        ("PERMISSION_DENIED", f"police officer {OFFICER} may not call {method}: {gives}")
        for method in refusals
    }
    assert [a for a, _ in _acts(server, GATEWAY)] == [
        Action.PUBLISH,
        Action.UPDATE,
        Action.CANCEL,
        Action.PUBLISH,
    ]


def test_a_policy_grants_an_officer_a_named_role(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    """A duty officer named in the policy publishes, updates and cancels for police; what it
    was not given (Subscribe) stays refused, saying what it has; the START entry records the
    policy's own digest."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        DEFAULT_POLICY.read_text()
        + '\n[agencies.police.principals]\n"officer/investigator" = ["searcher", "publisher"]\n'
    )
    server = start_server(sqlite_url, policy=policy)
    with ExchangeClient(server.pki / "police-officer", server.address) as officer:
        published = officer.publish(_red("published by the duty officer")).alert_id
        officer.update(published, content_alert(summary="updated by the duty officer"))
        officer.cancel(published, "cancelled by the duty officer")
        refused = _refused(lambda: officer.acknowledge(published, alert_pb2.RESPONSE_ACCEPTED))
    gives = "the policy gives officer/investigator of police: read, search, publish, update, cancel"
    assert refused == f"police officer {OFFICER} may not call Acknowledge: {gives}"
    entries = server.entries()
    assert [e.action for e in entries if e.actor.id == OFFICER] == [
        Action.PUBLISH,
        Action.UPDATE,
        Action.CANCEL,
        Action.DENIED,
    ]
    assert entries[0].meta[meta.POLICY_DIGEST] == Policy.load(policy).digest
    assert Policy.load(policy).digest != Policy.load(DEFAULT_POLICY).digest
