"""Handling markings (TLP 2.0) and the policy, enforced through every way of reaching an alert."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from functools import partial

import grpc
import pytest

from clients import ExchangeClient, new_alert, parse_subjects
from exchange import DEFAULT_POLICY, Policy
from ledger import Action, Entry
from sinergi.v1 import alert_pb2, exchange_pb2
from tests.conftest import RunningServer
from tests.integration.support import signed, stub, violations

MEMBERS = ("immigration", "police", "customs", "labour")
# Sent by immigration to police, category OTHER (which every member receives). Police shares
# its AMBER alerts with customs in the development policy; immigration shares with labour.
SEES = {
    "RED": {"immigration", "police"},
    "AMBER+STRICT": {"immigration", "police"},
    "AMBER": {"immigration", "police", "customs"},
    "GREEN": set(MEMBERS),
    "CLEAR": set(MEMBERS),
}
PASSPORTS = {tlp: f"TLP{i:04d}" for i, tlp in enumerate(SEES)}


def found_by_get(server: RunningServer, who: str, alert_id: str) -> bool:
    request = exchange_pb2.GetAlertRequest(alert_id=alert_id)
    code = outcome(lambda: stub(server, who).GetAlert(request))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
    return code == grpc.StatusCode.OK


def listed(server: RunningServer, who: str) -> set[str]:
    reply = stub(server, who).ListAlerts(exchange_pb2.ListAlertsRequest(page_size=200))
    return {view.id for view in reply.alerts}


def searched(server: RunningServer, who: str, passport: str) -> set[str]:
    request = exchange_pb2.SearchAlertsRequest(passport_number=passport)
    return {view.id for view in stub(server, who).SearchAlerts(request).alerts}


def test_each_marking_through_read_list_search_and_subscribe(server: RunningServer) -> None:
    ids = {}
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        for tlp, passport in PASSPORTS.items():
            alert = new_alert(category="OTHER", recipients=["police"], handling=tlp,
                              summary=f"marked {tlp}",
                              subjects=parse_subjects([f"passport={passport}"]))  # fmt: skip
            ids[tlp] = immigration.publish(alert).alert_id
    for who, (tlp, alert_id) in itertools.product(MEMBERS, ids.items()):
        expected = who in SEES[tlp]
        assert found_by_get(server, who, alert_id) is expected, (who, tlp, "get")
        assert (alert_id in listed(server, who)) is expected, (who, tlp, "list")
        assert (searched(server, who, PASSPORTS[tlp]) == {alert_id}) is expected, (who, tlp)
    # Subscribe pushes only what is addressed: police gets all five, nobody else any.
    call = stub(server, "police").Subscribe(exchange_pb2.SubscribeRequest())
    assert [next(call).alert.id for _ in ids] == list(ids.values())
    call.cancel()
    for who in ("customs", "labour"):
        call = stub(server, who).Subscribe(exchange_pb2.SubscribeRequest(), timeout=0.5)
        with pytest.raises(grpc.RpcError) as nothing:
            next(call)
        assert nothing.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Every miss by id was recorded as a refusal naming the alert.
    denied = [e for e in server.entries() if e.action == Action.DENIED]
    misses = sum(len(set(MEMBERS) - seen) for seen in SEES.values())
    assert len(denied) == misses
    assert all(e.outcome.status == "NOT_FOUND" and e.objects[0].startswith("alert:")
               for e in denied)  # fmt: skip
    # ... with the digest of the request bytes, so a retained copy can be matched to it.
    red_miss = exchange_pb2.GetAlertRequest(alert_id=ids["RED"]).SerializeToString()
    assert hashlib.sha256(red_miss).hexdigest() in {e.digest for e in denied}


def test_red_cannot_be_sent_to_every_member(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        wide = immigration.publish(new_alert(category="PASSPORT_HOLD", recipients=["*"],
                                             handling="GREEN", summary="to all"))  # fmt: skip
        entry = Entry.decode(server_entry_bytes(server, wide.receipt.seq))
        # '*' is expanded by policy: every other member that receives PASSPORT_HOLD.
        assert entry.meta["to"] == ["labour", "police"]
    red = new_alert(category="PASSPORT_HOLD", recipients=["police"], handling="RED", summary="x")
    red.recipients[:] = ["*"]  # the library refuses this too; ask the server directly
    with pytest.raises(grpc.RpcError) as refused:
        stub(server, "immigration").Publish(
            exchange_pb2.PublishRequest(idempotency_key="red", alert=red)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(refused.value) == {
        "alert.recipients": "TLP:RED alerts must name their recipients"
    }
    assert server.entries()[-1].action == Action.DENIED


def server_entry_bytes(server: RunningServer, seq: int) -> bytes:
    return next(e for e in server.entries() if e.seq == seq).encode()


def test_search_records_a_salted_digest_and_never_the_query(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        alert_id = immigration.publish(
            new_alert(
                category="PASSPORT_HOLD",
                recipients=["police"],
                summary="held",
                subjects=parse_subjects(
                    ["nik=3171012345678901,name=Siti Aminah,birth-date=1990-01-31"]
                ),
            )
        ).alert_id
    police = stub(server, "police")
    by_nik = police.SearchAlerts(exchange_pb2.SearchAlertsRequest(nik="3171012345678901"))
    by_name = police.SearchAlerts(
        exchange_pb2.SearchAlertsRequest(name="  siti   AMINAH ", birth_date="1990-01-31")
    )
    miss = police.SearchAlerts(exchange_pb2.SearchAlertsRequest(nik="3171012345678902"))
    assert [v.id for v in by_nik.alerts] == [alert_id]
    assert [v.id for v in by_name.alerts] == [alert_id]
    assert not miss.alerts
    searches = [e for e in server.entries() if e.action == Action.SEARCH]
    assert [e.objects for e in searches] == [(f"alert:{alert_id}",)] * 2 + [()]
    assert [e.meta["kind"] for e in searches] == ["nik", "person", "nik"]
    assert searches[0].meta["salt"] != searches[2].meta["salt"]
    for entry in searches:
        assert b"3171012345678901" not in entry.encode()
        assert b"siti" not in entry.encode().lower()
    # An auditor holding a candidate identifier can test it against the entry.
    salt = bytes.fromhex(str(searches[0].meta["salt"]))
    assert searches[0].digest == hashlib.sha256(salt + b"nik:3171012345678901").hexdigest()


def test_list_filters_and_pages(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "police", server.address) as police:
        published = [
            police.publish(new_alert(category=category, recipients=["immigration"],
                                     summary=f"alert {i}")).alert_id
            for i, category in enumerate(["IMEI_FRAUD", "OTHER"] * 3)
        ]  # fmt: skip
    immigration = stub(server, "immigration")
    seen, token = [], ""
    while True:
        page = immigration.ListAlerts(
            exchange_pb2.ListAlertsRequest(
                page_size=2, page_token=token, categories=[alert_pb2.CATEGORY_IMEI_FRAUD]
            )
        )
        seen.extend(view.id for view in page.alerts)
        token = page.next_page_token
        if not token:
            break
    assert seen == published[::2][::-1]  # newest first
    by_sender = immigration.ListAlerts(exchange_pb2.ListAlertsRequest(sender_agency="customs"))
    assert not by_sender.alerts


def outcome(action: Callable[[], object]) -> grpc.StatusCode:
    try:
        result = action()
    except grpc.RpcError as error:
        return error.code()
    return result if isinstance(result, grpc.StatusCode) else grpc.StatusCode.OK


def _open_stream(server: RunningServer, agency: str) -> grpc.StatusCode:
    """Allowed means the stream stays open (nothing addressed yet, or a delivery arrives)."""
    call = stub(server, agency).Subscribe(exchange_pb2.SubscribeRequest(), timeout=0.3)
    code = outcome(lambda: next(call))
    return grpc.StatusCode.OK if code == grpc.StatusCode.DEADLINE_EXCEEDED else code


def test_policy_matrix(server: RunningServer) -> None:
    """Every agency x category x operation is allowed or refused exactly as the policy says."""
    policy = Policy.load(DEFAULT_POLICY)
    rules = policy.agencies
    categories = [n.removeprefix("CATEGORY_") for n in alert_pb2.Category.keys()[1:]]
    refused = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
    cases: list[tuple[tuple[str, ...], Callable[[], object], bool]] = []

    def send(sender: str, category: str, to: str) -> Callable[[], object]:
        request = exchange_pb2.PublishRequest(
            idempotency_key=f"{sender}-{category}-{to}",
            alert=new_alert(category=category, recipients=[to], summary="matrix"),
        )
        return lambda: stub(server, sender).Publish(signed(server, sender, request))

    for agency, category in itertools.product(sorted(rules), categories):
        to = "police" if agency != "police" else "immigration"  # both receive every category
        allowed = "publisher" in rules[agency].roles and category in rules[agency].publish
        cases.append((("publish", agency, category), send(agency, category, to), allowed))
        senders = [n for n in rules if n != agency and category in rules[n].publish]
        if senders:
            allowed = "recipient" in rules[agency].roles and category in rules[agency].receive
            cases.append((("receive", agency, category), send(senders[0], category, agency),
                          allowed))  # fmt: skip
    for agency in sorted(rules):
        roles = rules[agency].roles
        search = exchange_pb2.SearchAlertsRequest(imei="490154203237518")
        cases += [
            (("search", agency), partial(stub(server, agency).SearchAlerts, search),
             "searcher" in roles),
            (("list", agency), partial(stub(server, agency).ListAlerts,
                                       exchange_pb2.ListAlertsRequest()),
             bool(roles & {"publisher", "recipient", "searcher"})),
            (("subscribe", agency), partial(_open_stream, server, agency),
             "recipient" in roles),
        ]  # fmt: skip
    results = {what: outcome(action) for what, action, _ in cases}
    wrong = {
        what: results[what]
        for what, _, allowed in cases
        if (results[what] == grpc.StatusCode.OK) != allowed
        or (not allowed and results[what] not in refused)
    }
    assert not wrong
    refusals = sum(1 for _, _, allowed in cases if not allowed)
    assert refusals > 0
    denied = [e for e in server.entries() if e.action == Action.DENIED]
    assert len(denied) == refusals
