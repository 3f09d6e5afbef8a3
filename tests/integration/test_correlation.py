"""Correlation (exchange/_correlation.py): alerts that share a subject identifier are linked,
within what each agency may see, on every path (GetAlert, GetRelatedAlerts, Subscribe), and the
ledger names each related alert shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy

from clients import ExchangeClient, content_alert, new_alert, parse_subjects
from exchange import DEFAULT_POLICY
from exchange._sealing import Keyring, write_kek_file
from ledger import Action, Entry, meta, related_shown, shown_related, who_accessed
from sinergi.v1 import alert_pb2, exchange_pb2
from tests.clients.conftest import last_json, run
from tests.conftest import RunningServer, wait_for
from tests.integration.support import stub, violations

Subjects = Sequence[alert_pb2.Subject]
LABOUR = "spiffe://sinergi.dev/agency/labour/system/gateway"


def _kinds(related: exchange_pb2.RelatedAlert) -> list[str]:
    return [
        exchange_pb2.IdentifierKind.Name(k).removeprefix("IDENTIFIER_KIND_").lower()
        for k in related.shared
    ]


def _publish(
    server: RunningServer,
    agency: str,
    subjects: Subjects,
    *,
    to: Sequence[str] = ("police",),
    category: str = "OTHER",
    tlp: str = "AMBER",
    summary: str = "linked",
    expires: datetime | None = None,
) -> str:
    alert = new_alert(category=category, recipients=list(to), handling=tlp, summary=summary,
                      subjects=subjects, expires=expires)  # fmt: skip
    with ExchangeClient(server.pki / agency, server.address) as client:
        return client.publish(alert).alert_id


def _related(server: RunningServer, who: str, alert_id: str) -> list[tuple[str, list[str]]]:
    """What GetAlert shows ``who`` as related to ``alert_id``: (id, kinds shared), newest first."""
    with ExchangeClient(server.pki / who, server.address) as client:
        view = client.get_alert(alert_id)
    assert not view.related_next_page_token
    return [(r.id, _kinds(r)) for r in view.related]


def _listed(server: RunningServer, who: str, alert_id: str, page_size: int = 0) -> list[str]:
    """The ids GetRelatedAlerts gives ``who``, every page."""
    with ExchangeClient(server.pki / who, server.address) as client:
        return [r.id for r in client.related_alerts(alert_id, page_size=page_size)]


def _organisation(name: str, registration: str = "") -> alert_pb2.Subject:
    organisation = alert_pb2.Organisation(name=name, registration_number=registration)
    return alert_pb2.Subject(organisation=organisation)


# Two spellings of each identifier that must link, and one that must not; spacing and case as
# search normalises them (names case-folded with single spaces, the others upper-case).
KINDS: dict[str, tuple[Subjects, Subjects, Subjects]] = {
    "passport": (
        parse_subjects(["passport=C1234567,nationality=ID"]),
        parse_subjects(["passport=c1234567"]),
        parse_subjects(["passport=C1234568"]),
    ),
    "nik": (
        parse_subjects(["nik=3171012345678901"]),
        parse_subjects(["nik=3171012345678901,name=Budi,birth-date=1980-05-05"]),
        parse_subjects(["nik=3171012345678902"]),
    ),
    "imei": (
        parse_subjects(["imei=490154203237518"]),
        parse_subjects(["imei= 490154203237518"]),
        parse_subjects(["imei=356938035643809"]),
    ),
    "person": (
        parse_subjects(["name=Siti  Aminah,birth-date=1990-01-31"]),
        parse_subjects(["name=SITI AMINAH,birth-date=1990-01-31,nationality=ID"]),
        parse_subjects(["name=Siti Aminah,birth-date=1990-01-30"]),
    ),
    "organisation": (
        [_organisation("PT  Maju   Jaya")],
        [_organisation("pt maju jaya")],
        [_organisation("PT Maju Jaya Abadi")],
    ),
    "registration": (
        [_organisation("PT Sumber Rezeki", "p3mi-0042")],
        [_organisation("CV Lain", " P3MI-0042 ")],
        [_organisation("PT Sumber Rezeki Dua", "P3MI-0043")],
    ),
}


def test_alerts_sharing_each_kind_of_identifier_are_linked(server: RunningServer) -> None:
    pairs = {}
    for kind, (first, second, other) in KINDS.items():
        a = _publish(server, "immigration", first, summary=f"{kind} a")
        b = _publish(server, "police", second, to=("immigration",), summary=f"{kind} b")
        _publish(server, "immigration", other, summary=f"{kind} unrelated")
        pairs[kind] = (a, b)
    for kind, (a, b) in pairs.items():
        # Each side finds the other, by that kind alone: one spelling or another, and whichever
        # agency sent it (immigration's alert to police, police's to immigration).
        assert _related(server, "police", a) == [(b, [kind])], kind
        assert _related(server, "immigration", b) == [(a, [kind])], kind
        assert _listed(server, "police", a) == [b], kind
    # A thread sharing two kinds says both, sorted as the enum is.
    both = _publish(server, "immigration", [*KINDS["passport"][0], *KINDS["imei"][0]])
    found = dict(_related(server, "police", both))
    assert found[pairs["passport"][1]] == ["passport"]
    assert found[pairs["imei"][1]] == ["imei"]
    assert found[pairs["passport"][0]] == ["passport"]
    assert dict(_related(server, "police", pairs["imei"][0]))[both] == ["imei"]
    # An alert without subjects, or whose identifiers no other alert has, is related to none.
    alone = _publish(server, "immigration", parse_subjects(["passport=Z9999999"]))
    assert _related(server, "police", alone) == []
    assert _related(server, "police", _publish(server, "immigration", [])) == []


def test_what_the_viewer_may_not_see_is_never_related(server: RunningServer) -> None:
    passport = parse_subjects(["passport=L1000001"])
    # Not for labour: RED and AMBER+STRICT addressed to police, AMBER to police (which shares
    # with customs, not labour), and a category labour's policy does not receive.
    hidden = {
        "red": _publish(server, "immigration", passport, category="PASSPORT_HOLD", tlp="RED"),
        "strict": _publish(
            server, "immigration", passport, category="PASSPORT_HOLD", tlp="AMBER+STRICT"
        ),
        "amber": _publish(server, "immigration", passport, category="PASSPORT_HOLD"),
        "policy": _publish(server, "customs", passport, category="IMEI_FRAUD", tlp="GREEN"),
    }
    # For labour: AMBER addressed to immigration, which shares its AMBER alerts with labour,
    # and GREEN in a category labour receives.
    shared = _publish(server, "police", passport, to=("immigration",),
                      category="TRAFFICKING_SUSPECT")  # fmt: skip
    green = _publish(server, "police", passport, to=("immigration",),
                     category="TRAFFICKING_SUSPECT", tlp="GREEN")  # fmt: skip
    base = _publish(server, "immigration", passport, to=("labour",), category="PASSPORT_HOLD")

    assert [r for r, _ in _related(server, "labour", base)] == [green, shared]
    assert _listed(server, "labour", base) == [green, shared]
    assert _listed(server, "labour", base, page_size=1) == [green, shared]  # page by page
    # The subscription's related alerts are the same.
    call = stub(server, "labour").Subscribe(exchange_pb2.SubscribeRequest(related=True))
    delivery = next(call)
    call.cancel()
    assert delivery.alert.id == base
    assert [r.id for r in delivery.related] == [green, shared]
    # Police, to which the hidden ones are addressed, sees them, but not labour's alert.
    seen_by_police = {r for r, _ in _related(server, "police", hidden["red"])}
    assert seen_by_police == {hidden["strict"], hidden["amber"], hidden["policy"], shared, green}
    # An alert labour may not see is NOT_FOUND, as an unknown one, and recorded as refused.
    labour = stub(server, "labour")
    for asked in (hidden["red"], "00000000-0000-4000-8000-000000000000"):
        with pytest.raises(grpc.RpcError) as missing:
            labour.GetRelatedAlerts(exchange_pb2.GetRelatedAlertsRequest(alert_id=asked))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == "no alert with that id is visible to your agency"
        refused = server.entries()[-1]
        assert refused.action == Action.DENIED
        assert refused.objects == (f"alert:{asked}",)
    # Nothing labour was given names a hidden alert: not the reads, not the delivery.
    shown = {
        alert_id
        for entry in server.entries()
        if entry.actor.id == LABOUR and entry.outcome.status == "OK"
        for alert_id, _ in related_shown(entry)
    }
    assert shown == {green, shared}


def test_links_survive_updates_and_go_with_cancellation_and_purge(
    server: RunningServer, db_url: str
) -> None:
    passport = parse_subjects(["passport=P2000001"])
    soon = datetime.now(UTC) + timedelta(seconds=1)
    expiring = _publish(server, "immigration", passport, summary="expires", expires=soon)
    cancelled = _publish(server, "police", passport, to=("immigration",), summary="withdrawn")
    kept = _publish(server, "immigration", passport, summary="kept")
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        # An update that restates the subjects, and one that gives none: the thread's messages
        # still name the passport, as search finds it.
        immigration.update(kept, content_alert(summary="kept, updated", subjects=passport))
        immigration.update(kept, content_alert(summary="kept, updated again"))
    with ExchangeClient(server.pki / "police", server.address) as police:
        police_view = police.get_alert(kept)
        assert police_view.state == alert_pb2.ALERT_STATE_UPDATED
        assert [r.id for r in police_view.related] == [cancelled, expiring]
        police.cancel(cancelled, "issued in error")
        assert [r.id for r in police.get_alert(kept).related] == [expiring]
        assert list(police.related_alerts(cancelled)) == []  # a cancelled alert links nothing
        # An expired alert stays related (its state says so) until retention purges it.
        wait_for(lambda: police.get_alert(expiring).state == alert_pb2.ALERT_STATE_EXPIRED,
                 what="expiry")  # fmt: skip
        [related] = police.get_alert(kept).related
        assert (related.id, related.state) == (expiring, alert_pb2.ALERT_STATE_EXPIRED)

    purge = ("db", "purge", "--older-than", "0", "--pki", str(server.pki), "--db", db_url)
    purged = last_json(run(*purge, "--json"))["alerts"]
    assert {a["alert"] for a in purged} == {expiring, cancelled}  # type: ignore[index, union-attr]
    assert _related(server, "police", kept) == []
    assert _listed(server, "immigration", expiring) == []


def test_the_ledger_names_each_related_alert_shown(server: RunningServer) -> None:
    subjects = parse_subjects(["passport=R3000001", "imei=490154203237518"])
    first = _publish(server, "immigration", subjects[:1], summary="first")
    second = _publish(server, "immigration", subjects, summary="second")
    with ExchangeClient(server.pki / "police", server.address) as police:
        police.get_alert(second)
        read = server.entries()[-1]
        list(police.related_alerts(second))
        listed = server.entries()[-1]
        police.get_alert(first)
    police_id = "spiffe://sinergi.dev/agency/police/system/gateway"
    assert read.action == Action.READ
    assert read.meta[meta.METHOD] == "GetAlert"
    assert read.objects == (f"alert:{second}",)
    assert read.meta[meta.RELATED] == [f"alert:{first} passport"]
    assert listed.meta == {
        meta.METHOD: "GetRelatedAlerts",
        meta.RESULTS: 1,
        meta.RELATED: [f"alert:{first} passport"],
    }
    assert listed.objects == (f"alert:{second}",)
    entries = server.entries()
    # Internal affairs: who was shown `first` through correlation, beside what, sharing what.
    found = shown_related(entries, first)
    assert [(s.entry.seq, s.principals, s.beside, s.shared) for s in found] == [
        (read.seq, (police_id,), (second,), ("passport",)),
        (listed.seq, (police_id,), (second,), ("passport",)),
    ]
    assert [s.entry.seq for s in shown_related(entries, second)] == [entries[-1].seq]
    # ... and who-accessed counts a correlation as a showing.
    assert {read.seq, listed.seq} <= {e.seq for e in who_accessed(entries, first)}


def test_a_subscription_carries_related_alerts_only_when_asked(server: RunningServer) -> None:
    passport = parse_subjects(["passport=S4000001"])
    earlier = _publish(server, "immigration", passport, summary="earlier")
    later = _publish(server, "immigration", passport, summary="later")
    police = stub(server, "police")
    asked = police.Subscribe(exchange_pb2.SubscribeRequest(related=True))
    plain = police.Subscribe(exchange_pb2.SubscribeRequest())
    got = [next(asked), next(asked)]
    bare = [next(plain), next(plain)]
    asked.cancel()
    plain.cancel()
    assert [(d.alert.id, [r.id for r in d.related]) for d in got] == [
        (earlier, [later]),
        (later, [earlier]),
    ]
    assert [d.alert.id for d in bare] == [earlier, later]
    assert all(not d.related for d in bare)
    delivered = [e for e in server.entries() if e.action == Action.DELIVER]
    with_related = [e for e in delivered if meta.RELATED in e.meta]
    assert [(e.objects, e.meta[meta.RELATED]) for e in with_related] == [
        ((f"alert:{earlier}",), [f"alert:{later} passport"]),
        ((f"alert:{later}",), [f"alert:{earlier} passport"]),
    ]
    assert len(delivered) == 4  # the plain stream's two carry no related alerts


def test_links_are_found_across_key_encryption_keys(
    start_server: Callable[..., RunningServer], db_url: str, tmp_path: Path
) -> None:
    kek = tmp_path / "sinergi.kek"
    write_kek_file(kek)
    first = start_server(db_url, kek_file=kek)
    passport = parse_subjects(["passport=K5000001"])
    old = _publish(first, "immigration", passport, summary="under the first key")
    first.server_thread.stop()
    write_kek_file(kek, rotate=True)
    second = start_server(db_url, kek_file=kek)
    new = _publish(second, "police", passport, to=("immigration",), summary="under the second")
    # The two rows carry different blind-index keys for the same passport ...
    engine = sqlalchemy.create_engine(db_url)
    with engine.connect() as connection:
        keys = dict(
            connection.execute(sqlalchemy.text("SELECT thread_id, key FROM alert_subjects")).all()
        )
    engine.dispose()
    assert keys[old] != keys[new]
    assert {keys[old], keys[new]} <= set(Keyring.load(kek).index_keys(b"passport:K5000001"))
    # ... and each alert still finds the other.
    assert _related(second, "immigration", old) == [(new, ["passport"])]
    assert _related(second, "police", new) == [(old, ["passport"])]


def test_bad_requests_and_grants_are_refused_with_their_fields(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        DEFAULT_POLICY.read_text().replace(
            "[agencies.customs]\n", '[agencies.customs]\nsystems = ["subscribe", "acknowledge"]\n'
        )
    )
    server = start_server(sqlite_url, policy=policy)
    bad = exchange_pb2.GetRelatedAlertsRequest(alert_id="x", page_size=201, page_token="-1")
    with pytest.raises(grpc.RpcError) as refused:
        stub(server, "police").GetRelatedAlerts(bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(refused.value)) == {"alert_id", "page_size", "page_token"}
    denied = server.entries()[-1]
    assert (denied.action, denied.outcome.status) == (Action.DENIED, "INVALID_ARGUMENT")
    assert denied.meta[meta.METHOD] == "/sinergi.v1.Exchange/GetRelatedAlerts"
    # A gateway granted only subscribe and acknowledge receives, but not related alerts: they
    # are a read.
    customs = stub(server, "customs")
    with pytest.raises(grpc.RpcError) as ungranted:
        next(customs.Subscribe(exchange_pb2.SubscribeRequest(related=True)))
    assert ungranted.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call GetRelatedAlerts" in str(ungranted.value.details())
    last: Entry = server.entries()[-1]
    assert (last.action, last.meta[meta.METHOD]) == (
        Action.DENIED,
        "/sinergi.v1.Exchange/Subscribe",
    )
    plain = customs.Subscribe(exchange_pb2.SubscribeRequest(), timeout=0.5)
    with pytest.raises(grpc.RpcError) as waiting:
        next(plain)
    assert waiting.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # allowed; nothing yet


def test_a_related_alert_that_cannot_be_read_leaves_the_read_whole(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    kek = tmp_path / "sinergi.kek"
    write_kek_file(kek)
    server = start_server(sqlite_url, kek_file=kek)
    passport = parse_subjects(["passport=M6000001"])
    moved, donor = (_publish(server, "immigration", passport, summary=s) for s in ("a", "b"))
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as connection:  # a database administrator moves a sealed body
        connection.execute(sqlalchemy.text(
            "UPDATE alerts SET body = (SELECT body FROM alerts WHERE id = :b), "
            "wrapped_key = (SELECT wrapped_key FROM alerts WHERE id = :b) WHERE id = :a"
        ), {"a": moved, "b": donor})  # fmt: skip
    engine.dispose()
    reader = _publish(server, "immigration", passport, summary="c")
    with ExchangeClient(server.pki / "police", server.address) as police:
        view = police.get_alert(reader)  # not refused because a related row does not open
        assert view.current.summary == "c"
        assert list(view.related) == []  # left out until the row is put right
        assert list(police.related_alerts(reader)) == []
    read = [e for e in server.entries() if e.action == Action.READ]
    assert [meta.RELATED in e.meta for e in read] == [False, False]


def test_db_reindex_links_alerts_stored_before_organisations_were_indexed(
    server: RunningServer, db_url: str
) -> None:
    recruiter = [_organisation("PT Lama Sekali")]
    old = _publish(server, "immigration", recruiter, summary="stored before")
    engine = sqlalchemy.create_engine(db_url)
    with engine.begin() as connection:  # as a release that did not index organisations left it
        connection.execute(
            sqlalchemy.text("DELETE FROM alert_subjects WHERE thread_id = :id"), {"id": old}
        )
    engine.dispose()
    new = _publish(server, "police", recruiter, to=("immigration",), summary="stored after")
    assert _related(server, "immigration", new) == []  # the old alert has no index row
    assert _related(server, "immigration", old) == [(new, ["organisation"])]

    done = run("db", "reindex", "--db", db_url, "--json")
    assert done.returncode == 0, done.stderr
    assert last_json(done) == {"ok": True, "alerts": 2, "key_id": None}
    assert _related(server, "immigration", new) == [(old, ["organisation"])]
    assert last_json(run("db", "reindex", "--db", db_url, "--json"))["alerts"] == 2  # again: same
    assert _related(server, "immigration", old) == [(new, ["organisation"])]
