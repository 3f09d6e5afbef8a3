"""A scripted week of a TIMPORA team, for the audit queries: four agencies exchange alerts by day,
police officers look things up in office hours, and one of them snoops at night.

Times are local to Asia/Jakarta (UTC+7); the expected answers are spelled out beside the script.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import sqlalchemy

import ledger
import ledger.store
from ledger import Action, Actor, EntryDraft, Outcome

WIB = timezone(timedelta(hours=7))
TD = "spiffe://sinergi.dev/agency"


def actor(agency: str, kind: str, name: str) -> Actor:
    return Actor(f"{TD}/{agency}/{kind}/{name}", f"{hash((agency, name)) & (2**256 - 1):064x}")


IMMIGRATION = actor("immigration", "system", "gateway")
POLICE = actor("police", "system", "gateway")
LABOUR = actor("labour", "system", "gateway")
CUSTOMS = actor("customs", "system", "gateway")
BUDI = actor("police", "officer", "budi")
RINA = actor("police", "officer", "rina")
SNOOP = actor("police", "officer", "snoop")
ANI = actor("labour", "officer", "ani")


def alert_id(day: int, n: int) -> str:
    return f"00000000-0000-4000-8000-{day:06d}{n:06d}"


@dataclass(frozen=True)
class Step:
    when: datetime
    draft: EntryDraft


def _publish(when: datetime, sender: Actor, alert: str, to: list[str], tlp: str) -> Step:
    meta = {"category": "PASSPORT_HOLD", "to": to, "handling": tlp}
    return Step(when, EntryDraft(Action.PUBLISH, sender, (f"alert:{alert}",), "ab" * 32, meta=meta))


def _act(when: datetime, who: Actor, action: Action, alerts: list[str], **meta: str) -> Step:
    objects = tuple(f"alert:{a}" for a in alerts)
    return Step(when, EntryDraft(action, who, objects, "cd" * 32, meta=dict(meta)))


def _denied(
    when: datetime, who: Actor, method: str, status: str, reason: str, alerts: tuple[str, ...] = ()
) -> Step:
    objects = tuple(f"alert:{a}" for a in alerts)
    meta = {"method": f"/sinergi.v1.Exchange/{method}"}
    return Step(when, EntryDraft(Action.DENIED, who, objects, "ef" * 32, Outcome(status, reason),
                                 meta))  # fmt: skip


# The alert everyone asks about: day 1's first, to police and labour.
TARGET = alert_id(1, 1)
# Day 5's GREEN alert for labour only: police may see it, but it was not sent to police.
LABOUR_ONLY = alert_id(5, 9)
SNOOP_SEARCHES = 40


def script() -> list[Step]:
    steps: list[Step] = []
    for day in range(1, 6):
        base = datetime(2026, 11, 1 + day, tzinfo=WIB)

        def at(hours: int, minutes: int, base: datetime = base) -> datetime:
            return base + timedelta(hours=hours, minutes=minutes)

        first, second = alert_id(day, 1), alert_id(day, 2)
        steps += [
            _publish(at(8, 0), IMMIGRATION, first, ["labour", "police"], "AMBER"),
            _act(at(8, 1), POLICE, Action.DELIVER, [first], cursor="1"),
            _act(at(8, 1), LABOUR, Action.DELIVER, [first], cursor="1"),
            _publish(at(9, 0), IMMIGRATION, second, ["police"], "AMBER"),
            _act(at(9, 1), POLICE, Action.DELIVER, [second], cursor="2"),
        ]
        for minute, officer in enumerate((BUDI, RINA)):
            steps += [
                _act(at(10, minute), officer, Action.SEARCH, [first], method="SearchAlerts"),
                _act(at(11, minute), officer, Action.SEARCH, [second], method="SearchAlerts"),
                _act(at(14, minute), officer, Action.READ, [first], method="GetAlert"),
            ]
        steps += [
            _act(at(10, 30), SNOOP, Action.SEARCH, [first], method="SearchAlerts"),
            _act(at(15, 30), SNOOP, Action.READ, [second], method="GetAlert"),
            _act(at(13, 0), ANI, Action.READ, [first], method="GetAlert"),
            _act(at(16, 0), POLICE, Action.ACK, [first], response="ACCEPTED"),
        ]
        if day == 1:
            steps += [
                _denied(at(12, 0), CUSTOMS, "Publish", "PERMISSION_DENIED",
                        "agency 'customs' may not publish PASSPORT_HOLD alerts"),
                _denied(at(12, 5), CUSTOMS, "Publish", "PERMISSION_DENIED",
                        "agency 'customs' may not publish PASSPORT_HOLD alerts"),
                _act(at(17, 0), IMMIGRATION, Action.UPDATE, [alert_id(1, 3), TARGET]),
                _act(at(17, 1), POLICE, Action.DELIVER, [alert_id(1, 3)], cursor="3"),
            ]  # fmt: skip
        if day == 5:
            steps.append(_publish(at(0, 30), LABOUR, LABOUR_ONLY, ["immigration"], "GREEN"))
            for n in range(SNOOP_SEARCHES):  # 01:00 to 02:58 local, every three minutes
                hit = [TARGET] + ([LABOUR_ONLY] if n % 10 == 0 else [])
                steps.append(_act(at(1, 3 * n), SNOOP, Action.SEARCH, hit, method="SearchAlerts"))
            steps.append(_denied(at(3, 0), SNOOP, "GetAlert", "NOT_FOUND",
                                 "no alert with that id is visible to your agency",
                                 (alert_id(9, 9),)))  # fmt: skip
    return sorted(steps, key=lambda s: s.when)


def replay(url: str, signer: ledger.Signer, origin: str) -> int:
    """Write the script into a fresh ledger at ``url`` through the real writer."""
    engine = ledger.store.create_engine(url)
    ledger.store.create_schema(engine)
    steps = iter(script())
    current: list[datetime] = []

    def clock() -> datetime:
        return current[-1].astimezone(UTC)

    writer = ledger.store.LedgerWriter(engine, signer, origin, clock=clock)
    count = 0
    try:
        for step in steps:
            current.append(step.when)
            writer.append(step.draft).result(10)
            count += 1
    finally:
        writer.close()
        engine.dispose()
    return count


def entries_of(url: str) -> list[ledger.Entry]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return [ledger.Entry.decode(b) for _, _, b in ledger.store.iter_entries(connection)]
    finally:
        engine.dispose()


def scripted_entries() -> Iterator[ledger.Entry]:
    """The script placed in a chain without a database (for the pure tests)."""
    prev = ledger.GENESIS_PREV
    for seq, step in enumerate(script(), 1):
        entry = step.draft.at(seq, step.when.astimezone(UTC), prev)
        prev = entry.hash.hex()
        yield entry
