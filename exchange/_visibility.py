"""What an agency may see, decided in the query: one predicate added to every read of alerts
(docs/decisions/0009), and the listing of the threads it may see (ListAlerts, SearchAlerts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Select, Table, and_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from exchange._tables import alert_recipients, alerts
from exchange._threads import StoredAlert, state_clause, threads


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
                    and_(table.c.handling == "AMBER", shared),
                    table.c.handling.in_(("GREEN", "CLEAR")),
                ),
            ),
        )


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


def list_threads(
    connection: Connection, visibility: Visibility, query: ListQuery, now: datetime
) -> tuple[list[list[StoredAlert]], int]:
    """Visible threads matching ``query``, newest first, and the next page token (0: no more)."""
    select_ids = (
        select(alerts.c.id, alerts.c.position)
        .where(alerts.c.message_type == "ALERT", visibility.clause())
        .order_by(alerts.c.position.desc())
        .limit(query.limit + 1)
    )
    if query.before:
        select_ids = select_ids.where(alerts.c.position < query.before)
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
    rows = connection.execute(select_ids).all()
    page, more = rows[: query.limit], len(rows) > query.limit
    found = threads(connection, [row.id for row in page])
    return [found[row.id] for row in page], (page[-1].position if more else 0)
