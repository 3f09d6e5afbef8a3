"""What an agency may see: decided first in the query, one predicate added to every read of
alerts (docs/decisions/0009), then for each candidate from what its sender signed, which the rows
must agree with; and the listing of the threads it may see (ListAlerts, SearchAlerts).

The rows are a database administrator's to change, the sealed message is not: a row that
disagrees with the message is an alarm (:class:`Tampered`), and the alert is served to no one
until it is put right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Select, Table, and_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from exchange._policy import AgencyPolicy, Policy
from exchange._signatures import (
    Addressing,
    envelope_of,
    follow_up_mismatch,
    signed_addressing,
)
from exchange._tables import alert_recipients, alerts
from exchange._threads import StoredAlert, originals, state_clause, threads
from sinergi.v1 import alert_pb2

_SHARED = "AMBER"  # shared with the agencies a recipient's policy names
_OPEN = frozenset({"GREEN", "CLEAR"})  # every member that receives the category


@dataclass(frozen=True)
class Visibility:
    """What one agency may see (TLP 2.0 as enforced here, docs/api.md "Handling markings").

    Its own agency's alerts; otherwise only categories its policy receives, and then: alerts
    addressed to it (every marking), TLP:AMBER alerts addressed to an agency that shares with it,
    and TLP:GREEN and TLP:CLEAR alerts. RED and AMBER+STRICT never reach anyone not addressed.
    """

    agency: str
    receive: frozenset[str]
    sharers: frozenset[str]

    @classmethod
    def of(
        cls, policy: Policy, agency: str, authorize: Callable[[str], AgencyPolicy]
    ) -> Visibility:
        """What ``agency`` may see under ``policy``, once ``authorize`` (the policy's check for
        the call: read, receive, search) lets it call at all."""
        return cls(agency, authorize(agency).receive, policy.amber_sharers(agency))

    def clause(self, table: Table = alerts) -> ColumnElement[bool]:
        recipients = alert_recipients.alias()
        addressed = (
            select(recipients.c.agency)
            .where(recipients.c.alert_position == table.c.position)
            .where(recipients.c.agency == self.agency)
            .exists()
        )
        shared = (
            select(recipients.c.agency)
            .where(recipients.c.alert_position == table.c.position)
            .where(recipients.c.agency.in_(sorted(self.sharers)))
            .exists()
        )
        return or_(
            table.c.sender_agency == self.agency,
            and_(
                table.c.category.in_(sorted(self.receive)),
                or_(
                    addressed,
                    and_(table.c.handling == _SHARED, shared),
                    table.c.handling.in_(sorted(_OPEN)),
                ),
            ),
        )

    def sees(self, signed: Addressing) -> bool:
        """The decision of :meth:`clause`, made from what the sender signed."""
        if signed.sender_agency == self.agency:
            return True
        if signed.category not in self.receive:
            return False
        return (
            self.agency in signed.recipients
            or (signed.handling == _SHARED and bool(signed.recipients & self.sharers))
            or signed.handling in _OPEN
        )


@dataclass(frozen=True)
class Tampered:
    """An alarm: a stored alert whose rows (``alerts.*``, ``alert_recipients``) or message
    (``message.*``) disagree with what its sender signed, and the first field that does (one of
    :data:`exchange._tables.TAMPERED_FIELDS`)."""

    alert_id: str
    field: str


def _message_type(alert: alert_pb2.Alert) -> str:
    return alert_pb2.MessageType.Name(alert.message_type).removeprefix("MESSAGE_TYPE_")


def _belongs(alert: alert_pb2.Alert, thread_id: str) -> bool:
    """Whether the message is of the thread ``thread_id``, as it says itself: the original, or
    a follow-up whose first reference is the original."""
    if alert.message_type == alert_pb2.MESSAGE_TYPE_ALERT:
        return alert.id == thread_id
    return alert.references[:1] == [thread_id]


def _first(differs: dict[str, bool]) -> str | None:
    return next((name for name, differ in differs.items() if differ), None)


def _misplaced(message: StoredAlert, thread_id: str) -> str | None:
    """The row that puts ``message`` in the thread ``thread_id`` (or gives it another id or
    type) against what the message says, or None."""
    rows, alert = message.rows, message.alert
    assert rows is not None, "read with read_messages"
    return _first(
        {
            "alerts.id": rows.id != alert.id,
            "alerts.message_type": rows.message_type != _message_type(alert),
            "alerts.thread_id": rows.thread_id != thread_id or not _belongs(alert, thread_id),
        }
    )


def _readdressed(message: StoredAlert, signed: Addressing) -> str | None:
    """The first row or field of ``message`` that addresses it otherwise than its thread's
    sender signed, or None."""
    rows, alert = message.rows, message.alert
    assert rows is not None, "read with read_messages"
    kept = envelope_of(alert)
    found = _first(
        {
            "alerts.sender_agency": rows.sender_agency != signed.sender_agency,
            "alerts.category": rows.category != signed.category,
            "alerts.handling": rows.handling != signed.handling,
            "alert_recipients": rows.recipients != signed.recipients,
            "message.sender": kept.sender_agency != signed.sender_agency,
            "message.category": kept.category != signed.category,
            "message.handling": kept.handling != signed.handling,
            "message.recipients": kept.recipients != signed.recipients,
        }
    )
    if found is None and alert.message_type != alert_pb2.MESSAGE_TYPE_ALERT:
        return follow_up_mismatch(alert)
    return found


def signed_thread(messages: Sequence[StoredAlert]) -> Addressing | Tampered:
    """The addressing the sender of a thread signed, once every message of ``messages`` (its
    original first, then any of its other messages, read with their rows) and every row of
    theirs agrees with it; else the first disagreement.

    An UPDATE or CANCEL keeps the original's category, marking and recipients (docs/api.md), so
    the original's statement decides for the whole thread; each follow-up's own statement must
    still be about it."""
    thread_id = messages[0].alert.id
    for message in messages:
        found = _misplaced(message, thread_id)
        if found is not None:
            return Tampered(message.alert.id, found)
    signed = signed_addressing(messages[0].alert)
    if isinstance(signed, str):
        return Tampered(thread_id, signed)
    for message in messages:
        found = _readdressed(message, signed)
        if found is not None:
            return Tampered(message.alert.id, found)
    return signed


@dataclass
class Checked:
    """What the checks let through for one agency, and the alarms they raised."""

    served: list[list[StoredAlert]] = field(default_factory=list)
    tampered: list[Tampered] = field(default_factory=list)


def deliverable(connection: Connection, page: Sequence[StoredAlert], agency: str) -> Checked:
    """The messages of a subscription's ``page`` (from :func:`exchange._threads.alerts_for`)
    whose thread's sender addressed them to ``agency``, each as a one-message list.

    A follow-up is checked with its thread's original, read here for the whole page at once."""
    by_id = {m.rows.id: m for m in page if m.rows is not None}
    wanted = {m.rows.thread_id for m in page if m.rows is not None} - by_id.keys()
    if wanted:
        by_id.update(originals(connection, sorted(wanted)))
    checked = Checked()
    for message in page:
        assert message.rows is not None, "read with read_messages"
        first = by_id.get(message.rows.thread_id, message)
        signed = signed_thread([message] if first is message else [first, message])
        if isinstance(signed, Tampered):
            checked.tampered.append(signed)
        elif agency in signed.recipients:
            checked.served.append([message])
    return checked


def visible(connection: Connection, position: int, visibility: Visibility) -> bool:
    query = select(alerts.c.position).where(alerts.c.position == position, visibility.clause())
    return connection.execute(query).first() is not None


@dataclass(frozen=True)
class ListQuery:
    categories: Sequence[str] = ()
    sender_agency: str = ""
    sent_after: datetime | None = None
    sent_before: datetime | None = None
    states: Sequence[str] = ()
    thread_ids: Select[tuple[str]] | None = None  # only these threads (a search)
    before: int = 0  # page token: positions below this one; 0 for the first page
    limit: int = 50


def visible_thread(
    visibility: Visibility, messages: Sequence[StoredAlert], thread_id: str
) -> Checked:
    """``messages``, the thread ``thread_id`` that the query found visible, if its rows agree
    with what its sender signed, and that lets ``visibility``'s agency see it."""
    checked = Checked()
    signed = signed_thread(messages) if messages else Tampered(thread_id, "alerts.thread_id")
    if isinstance(signed, Tampered):
        checked.tampered.append(signed)
    elif visibility.sees(signed):
        checked.served.append(list(messages))
    return checked


def list_threads(
    connection: Connection, visibility: Visibility, query: ListQuery, now: datetime
) -> tuple[Checked, int]:
    """Visible threads matching ``query``, newest first, each checked against what its sender
    signed, and the next page token (0: no more). A thread the check refuses is left out as if
    the query had not found it: the page is filled from the next candidates, so its length does
    not tell."""
    checked = Checked()
    before = query.before
    while True:
        wanted = query.limit + 1 - len(checked.served)
        rows = connection.execute(_candidates(visibility, query, now, before, wanted)).all()
        found = threads(connection, [row.id for row in rows])
        for row in rows:
            one = visible_thread(visibility, found[row.id], row.id)
            checked.served += one.served
            checked.tampered += one.tampered
        if len(rows) < wanted or len(checked.served) > query.limit:
            break
        before = rows[-1].position
    more = len(checked.served) > query.limit
    del checked.served[query.limit :]
    return checked, (checked.served[-1][0].position if more else 0)


def _candidates(
    visibility: Visibility, query: ListQuery, now: datetime, before: int, limit: int
) -> Select[tuple[str, int]]:
    """The originals the query lets ``visibility``'s agency see, newest first, below ``before``."""
    select_ids = (
        select(alerts.c.id, alerts.c.position)
        .where(alerts.c.message_type == "ALERT", visibility.clause())
        .order_by(alerts.c.position.desc())
        .limit(limit)
    )
    if before:
        select_ids = select_ids.where(alerts.c.position < before)
    if query.categories:
        select_ids = select_ids.where(alerts.c.category.in_(list(query.categories)))
    if query.sender_agency:
        select_ids = select_ids.where(alerts.c.sender_agency == query.sender_agency)
    if query.sent_after is not None:
        select_ids = select_ids.where(alerts.c.sent >= query.sent_after)
    if query.sent_before is not None:
        select_ids = select_ids.where(alerts.c.sent < query.sent_before)
    if query.states:
        select_ids = select_ids.where(or_(*(state_clause(s, now) for s in query.states)))
    if query.thread_ids is not None:
        select_ids = select_ids.where(alerts.c.id.in_(query.thread_ids))
    return select_ids
