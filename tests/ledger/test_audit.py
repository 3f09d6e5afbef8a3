"""The audit queries over the scripted week (tests/ledger/history.py): exact rows, and the anomaly
rules firing on the snooper and on no one else. Principals are read as the CLI reads them, with
``certs.SpiffeId.parse``: the ledger itself does not parse them."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from certs import CertsError, SpiffeId
from ledger import Action, Actor, Entry, Outcome, meta
from ledger._audit import (
    PrincipalName,
    Rules,
    acted_by,
    activity,
    anomalies,
    denied,
    related_shown,
    shown_related,
    who_accessed,
)
from tests.ledger.history import (
    BUDI,
    CUSTOMS,
    LABOUR_ONLY,
    SNOOP,
    SNOOP_SEARCHES,
    TARGET,
    WIB,
    alert_id,
    scripted_entries,
)

ENTRIES: list[Entry] = list(scripted_entries())


def spiffe(principal: str) -> SpiffeId | None:
    try:
        return SpiffeId.parse(principal)
    except CertsError:
        return None


def test_the_script_is_what_the_expectations_assume() -> None:
    assert len(ENTRIES) == 121
    assert Counter(e.action for e in ENTRIES)[Action.SEARCH] == 5 * 5 + SNOOP_SEARCHES


def test_who_accessed_follows_the_thread_and_names_every_principal() -> None:
    rows = who_accessed(ENTRIES, TARGET)
    by_principal = Counter((e.actor.id.split("/")[-1], e.action) for e in rows)
    assert by_principal == {
        ("gateway", Action.PUBLISH): 1,  # immigration
        ("gateway", Action.DELIVER): 3,  # police and labour, then police for the update
        ("gateway", Action.UPDATE): 1,
        ("gateway", Action.ACK): 1,
        ("budi", Action.SEARCH): 1,
        ("budi", Action.READ): 1,
        ("rina", Action.SEARCH): 1,
        ("rina", Action.READ): 1,
        ("snoop", Action.SEARCH): 1 + SNOOP_SEARCHES,
        ("ani", Action.READ): 1,
    }
    # Asking by the update's id gives the same thread.
    assert who_accessed(ENTRIES, alert_id(1, 3)) == rows
    assert [e.seq for e in rows] == sorted(e.seq for e in rows)


def test_activity_of_a_principal_and_of_an_agency_in_a_time_range() -> None:
    night = activity(ENTRIES, principals=spiffe, principal=SNOOP.id,
                     since=datetime(2026, 11, 6, 0, tzinfo=WIB),
                     until=datetime(2026, 11, 6, 6, tzinfo=WIB))  # fmt: skip
    assert len(night) == SNOOP_SEARCHES + 1  # and the refused GetAlert at 03:00
    assert {e.action for e in night} == {Action.SEARCH, Action.DENIED}
    labour = activity(ENTRIES, principals=spiffe, agency="labour")
    assert Counter(e.actor.id.split("/")[-1] for e in labour) == {"gateway": 5 + 1, "ani": 5}
    one_day = activity(ENTRIES, principals=spiffe, principal=BUDI.id,
                       since=datetime(2026, 11, 3, tzinfo=WIB),
                       until=datetime(2026, 11, 3, tzinfo=WIB) + timedelta(days=1))  # fmt: skip
    assert [e.action for e in one_day] == [Action.SEARCH, Action.SEARCH, Action.READ]


def test_denied_attempts_grouped_by_principal_and_reason() -> None:
    groups = denied(ENTRIES)
    assert [(g.principal, g.status, g.count, g.methods) for g in groups] == [
        (CUSTOMS.id, "PERMISSION_DENIED", 2, {"Publish"}),
        (SNOOP.id, "NOT_FOUND", 1, {"GetAlert"}),
    ]
    assert groups[0].first < groups[0].last


def test_anomaly_rules_fire_on_the_snooper_and_no_one_else() -> None:
    found = anomalies(ENTRIES, principals=spiffe)
    assert [(a.principal, a.rule) for a in found] == [
        (SNOOP.id, "off-hours"),
        (SNOOP.id, "unaddressed-search"),
        (SNOOP.id, "volume"),
    ]
    off_hours, unaddressed, volume = found
    assert len(off_hours.seqs) == SNOOP_SEARCHES
    assert len(unaddressed.seqs) == SNOOP_SEARCHES // 10
    assert all(f"alert:{LABOUR_ONLY}" in ENTRIES[s - 1].objects for s in unaddressed.seqs)
    assert len(volume.seqs) == SNOOP_SEARCHES + 2
    assert "usually 2 for this principal and 3 for its agency" in volume.detail


def test_rules_are_tunable() -> None:
    # A night-shift team: nobody's searches are off-hours, and a high bar for volume.
    relaxed = Rules(working_hours=(datetime.min.time(), datetime.max.time()), min_count=100)
    assert [a.rule for a in anomalies(ENTRIES, relaxed, principals=spiffe)] == [
        "unaddressed-search"
    ]


def test_the_caller_reads_principals() -> None:
    # Read as a labour officer, the snooper found only alerts addressed to its agency.
    def snoop_in_labour(principal: str) -> PrincipalName | None:
        name = spiffe(principal)
        if name is None or principal != SNOOP.id:
            return name
        return SpiffeId(name.trust_domain, "labour", name.kind, name.name)

    rules = {a.rule for a in anomalies(ENTRIES, principals=snoop_in_labour)}
    assert rules == {"off-hours", "volume"}
    assert activity(ENTRIES, principals=snoop_in_labour, agency="labour", principal=SNOOP.id)
    # A principal the reader does not know is of no agency, and of no kind the rules watch.
    assert activity(ENTRIES, principals=lambda _: None, agency="labour") == []
    unknown = {a.rule for a in anomalies(ENTRIES, principals=lambda _: None)}
    assert not unknown & {"off-hours", "unaddressed-search"}


def test_a_delivery_to_several_subscribers_names_each_of_them() -> None:
    """The exchange records one DELIVER for the subscriptions one wake-up served: who-accessed
    and activity find every principal it names, by name and by agency, and no one else."""
    exchange = Actor("spiffe://sinergi.dev/exchange", "e" * 64)
    police = "spiffe://sinergi.dev/agency/police/system/gateway"
    officer = "spiffe://sinergi.dev/agency/police/officer/budi"
    labour = "spiffe://sinergi.dev/agency/labour/system/gateway"
    publish, deliver = (
        Entry(
            seq=seq,
            time=f"2026-12-07T02:00:0{seq}.000000Z",
            action=action,
            actor=actor,
            objects=(f"alert:{TARGET}",),
            digest="d" * 64,
            outcome=Outcome(),
            meta=fields,
            prev="0" * 64,
        )
        for seq, action, actor, fields in (
            (1, Action.PUBLISH, Actor(labour, "a" * 64), {}),
            (2, Action.DELIVER, exchange,
             {meta.CURSOR: 1, meta.RECEIVED_BY: [f"{officer} {'b' * 64}", f"{police} {'c' * 64}"]}),
        )
    )  # fmt: skip
    assert acted_by(deliver) == (officer, police)
    assert acted_by(publish) == (labour,)
    assert who_accessed([publish, deliver], TARGET) == [publish, deliver]
    found = activity([publish, deliver], principals=spiffe, principal=officer)
    assert found == [deliver]
    assert activity([publish, deliver], principals=spiffe, agency="police") == [deliver]
    assert activity([publish, deliver], principals=spiffe, agency="labour") == [publish]
    assert activity([publish, deliver], principals=spiffe, principal=exchange.id) == []


def test_an_alert_shown_through_correlation_names_who_saw_it_beside_what() -> None:
    """A READ or DELIVER entry names each related alert it showed (``meta.related``):
    shown-related finds it for the thread, with every principal a shared delivery names, the
    alert read beside it and the kinds shared; who-accessed counts it; a SEARCH shows none."""
    exchange = Actor("spiffe://sinergi.dev/exchange", "e" * 64)
    police = "spiffe://sinergi.dev/agency/police/system/gateway"
    officer = "spiffe://sinergi.dev/agency/police/officer/budi"
    other, update = alert_id(2, 1), alert_id(2, 2)
    shown = [f"alert:{TARGET} passport,imei"]

    def entry(
        seq: int, action: Action, actor: Actor, objects: tuple[str, ...], fields: dict[str, Any]
    ) -> Entry:
        return Entry(seq=seq, time=f"2026-12-07T03:00:0{seq}.000000Z", action=action,
                     actor=actor, objects=objects, digest="d" * 64, outcome=Outcome(),
                     meta=fields, prev="0" * 64)  # fmt: skip

    entries = [
        entry(1, Action.PUBLISH, Actor(police, "a" * 64), (f"alert:{TARGET}",), {}),
        entry(
            2, Action.UPDATE, Actor(police, "a" * 64), (f"alert:{update}", f"alert:{TARGET}"), {}
        ),
        entry(
            3,
            Action.READ,
            Actor(officer, "b" * 64),
            (f"alert:{other}",),
            {meta.METHOD: "GetAlert", meta.RELATED: shown},
        ),
        entry(
            4,
            Action.DELIVER,
            exchange,
            (f"alert:{other}",),
            {
                meta.CURSOR: 9,
                meta.RECEIVED_BY: [f"{officer} {'b' * 64}", f"{police} {'c' * 64}"],
                meta.RELATED: [f"alert:{TARGET} passport"],
            },
        ),
        entry(
            5, Action.READ, Actor(officer, "b" * 64), (f"alert:{other}",), {meta.METHOD: "GetAlert"}
        ),
        entry(6, Action.SEARCH, Actor(officer, "b" * 64), (), {meta.RELATED: shown}),
    ]
    assert related_shown(entries[2]) == [(TARGET, ("passport", "imei"))]
    assert related_shown(entries[5]) == []  # only READ and DELIVER show related alerts
    found = shown_related(entries, update)  # any message of the thread names it
    assert [(s.entry.seq, s.principals, s.beside, s.shared) for s in found] == [
        (3, (officer,), (other,), ("passport", "imei")),
        (4, (officer, police), (other,), ("passport",)),
    ]
    assert shown_related(entries, other) == []
    assert [e.seq for e in who_accessed(entries, TARGET)] == [1, 2, 3, 4]
