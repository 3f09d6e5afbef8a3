"""Reading alert threads: an alert with its updates and cancellation, as stored messages, their
state (CAP 1.2 lifecycle) and the view a reader gets; acknowledgements; subscription pages.

What a caller may see is decided by :mod:`exchange._visibility`; this module reads what it is
asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from exchange._bodies import ACK_COLUMNS, alert_context, opened_ack, opened_body, with_keyring
from exchange._errors import ConfigError, Internal, NotFound
from exchange._sealing import Keyring
from exchange._signatures import signed_addressing
from exchange._tables import acknowledgements, alert_recipients, alerts
from ledger.store import create_engine
from sinergi.v1 import alert_pb2, exchange_pb2


@dataclass(frozen=True)
class Rows:
    """What the alert tables say of a stored message beside its body: the columns the visibility
    filter decides from, and its recipient rows. A database administrator can change these, not
    a sealed body: the read paths check them against what the sender signed."""

    id: str
    thread_id: str
    message_type: str
    sender_agency: str
    category: str
    handling: str
    recipients: frozenset[str]


@dataclass(frozen=True)
class StoredAlert:
    """One stored message (ALERT, UPDATE or CANCEL) and its position, the subscribers' cursor."""

    position: int
    alert: alert_pb2.Alert
    body: bytes
    #: its rows, as the read paths found it (:func:`read_messages`)
    rows: Rows | None = None


#: The columns :func:`opened_messages` needs to open a stored message.
MESSAGE_COLUMNS = (
    alerts.c.position,
    alerts.c.id,
    alerts.c.body,
    alerts.c.key_id,
    alerts.c.wrapped_key,
)
#: The columns :func:`read_messages` needs: a message, and the rows its visibility is read from.
READ_COLUMNS = (
    *MESSAGE_COLUMNS,
    alerts.c.thread_id,
    alerts.c.message_type,
    alerts.c.sender_agency,
    alerts.c.category,
    alerts.c.handling,
)
_RECIPIENT_ROWS = select(alert_recipients.c.alert_position, alert_recipients.c.agency).where(
    alert_recipients.c.alert_position.in_(bindparam("positions", expanding=True))
)
_CHUNK = 500  # positions per query: well under every database's limit on parameters


def opened_messages(connection: Connection, rows: Iterable[Any]) -> list[StoredAlert]:
    """The stored messages of ``rows`` (selected with :data:`MESSAGE_COLUMNS`), opened."""
    found = []
    for row in rows:
        body = opened_body(connection, row, alert_context(row.id))
        found.append(StoredAlert(row.position, alert_pb2.Alert.FromString(body), body))
    return found


def read_messages(connection: Connection, rows: Iterable[Any]) -> list[StoredAlert]:
    """The stored messages of ``rows`` (selected with :data:`READ_COLUMNS`), opened, each with
    its :class:`Rows`; the recipient rows of them all are read in one query."""
    rows = list(rows)
    positions = [row.position for row in rows]
    recipients: dict[int, set[str]] = {position: set() for position in positions}
    for start in range(0, len(positions), _CHUNK):
        chunk = {"positions": positions[start : start + _CHUNK]}
        for position, agency in connection.execute(_RECIPIENT_ROWS, chunk):
            recipients[position].add(agency)
    found = []
    for row in rows:
        body = opened_body(connection, row, alert_context(row.id))
        stored = Rows(
            id=row.id,
            thread_id=row.thread_id,
            message_type=row.message_type,
            sender_agency=row.sender_agency,
            category=row.category,
            handling=row.handling,
            recipients=frozenset(recipients[row.position]),
        )
        found.append(StoredAlert(row.position, alert_pb2.Alert.FromString(body), body, stored))
    return found


def thread_of(connection: Connection, alert_id: str) -> list[StoredAlert]:
    """Every message of the thread that ``alert_id`` belongs to, oldest first; [] if unknown."""
    thread = select(alerts.c.thread_id).where(alerts.c.id == alert_id).scalar_subquery()
    query = select(*READ_COLUMNS).where(alerts.c.thread_id == thread)
    return read_messages(connection, connection.execute(query.order_by(alerts.c.position)))


def threads(connection: Connection, thread_ids: Sequence[str]) -> dict[str, list[StoredAlert]]:
    found: dict[str, list[StoredAlert]] = {thread_id: [] for thread_id in thread_ids}
    rows = connection.execute(
        select(*READ_COLUMNS)
        .where(alerts.c.thread_id.in_(list(thread_ids)))
        .order_by(alerts.c.position)
    ).all()
    for message in read_messages(connection, rows):
        assert message.rows is not None
        found[message.rows.thread_id].append(message)
    return found


def originals(connection: Connection, thread_ids: Sequence[str]) -> dict[str, StoredAlert]:
    """The stored message of each id in ``thread_ids`` (a thread's original), by its row's id."""
    rows = connection.execute(select(*READ_COLUMNS).where(alerts.c.id.in_(list(thread_ids))))
    found = {}
    for message in read_messages(connection, rows):
        assert message.rows is not None
        found[message.rows.id] = message
    return found


def stored_message(url: str, alert_id: str, kek_file: Path | None = None) -> bytes:
    """The message ``alert_id`` exactly as the exchange stored it (the bytes whose SHA-256 its
    ledger entry records), opened with the key-encryption key in ``kek_file`` if it was sealed.

    For internal affairs matching a stored alert with the ledger (`sinergi audit match
    --alert`): the alert tables are the exchange's, so they are read with its code. Raises
    :class:`ConfigError` if the database cannot be read or a sealed body needs the key, and
    :class:`NotFound` if no such message is stored (never stored, or purged)."""
    engine = with_keyring(create_engine(url), Keyring.load(kek_file) if kek_file else None)
    try:
        with engine.connect() as connection:
            found = thread_of(connection, alert_id)
    except Internal as exc:
        raise ConfigError(f"{exc.reason}: pass the exchange's --kek-file") from None
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot read the alerts of {url}: {exc.__class__.__name__}") from None
    finally:
        engine.dispose()
    for message in found:
        if message.alert.id == alert_id:
            return message.body
    raise NotFound(f"no alert {alert_id} is stored (never published here, or purged)")


def addressed_to(connection: Connection, alert_id: str, agency: str) -> StoredAlert | None:
    """The original of ``alert_id``'s thread if it is addressed to ``agency``, else None: by its
    recipient row, and by the recipients its sender signed (a row added by a database
    administrator does not address it)."""
    thread = select(alerts.c.thread_id).where(alerts.c.id == alert_id).scalar_subquery()
    row = connection.execute(
        select(*MESSAGE_COLUMNS)
        .join(alert_recipients, alert_recipients.c.alert_position == alerts.c.position)
        .where(alerts.c.id == thread, alert_recipients.c.agency == agency)
    ).first()
    if row is None:
        return None
    original = opened_messages(connection, [row])[0]
    signed = signed_addressing(original.alert)
    addressed = not isinstance(signed, str) and agency in signed.recipients
    return original if addressed else None


# -- state and views -------------------------------------------------------------------------


def state_of(messages: Sequence[StoredAlert], now: datetime) -> alert_pb2.AlertState.ValueType:
    """CAP 1.2 lifecycle: cancelled, else expired by the content in force, else (updated) active.

    Mirrors :func:`state_clause`, which decides the same in SQL for listing."""
    types = {m.alert.message_type for m in messages}
    if alert_pb2.MESSAGE_TYPE_CANCEL in types:
        return alert_pb2.ALERT_STATE_CANCELLED
    current = current_of(messages).alert
    if current.HasField("expires") and current.expires.ToDatetime(UTC) <= now:
        return alert_pb2.ALERT_STATE_EXPIRED
    if alert_pb2.MESSAGE_TYPE_UPDATE in types:
        return alert_pb2.ALERT_STATE_UPDATED
    return alert_pb2.ALERT_STATE_ACTIVE


def state_clause(state: str, now: datetime) -> ColumnElement[bool]:
    """SQL true for the threads (rows of their original alert) in ``state`` at ``now``.

    Mirrors :func:`state_of`."""
    other = alerts.alias("other")

    def has(kind: str) -> ColumnElement[bool]:
        return (
            select(other.c.position)
            .where(other.c.thread_id == alerts.c.id, other.c.message_type == kind)
            .exists()
        )

    current_expires = (
        select(other.c.expires)
        .where(other.c.thread_id == alerts.c.id, other.c.message_type != "CANCEL")
        .order_by(other.c.position.desc())
        .limit(1)
        .scalar_subquery()
    )
    expired = and_(current_expires.is_not(None), current_expires <= now)
    cancelled, updated = has("CANCEL"), has("UPDATE")
    return {
        "CANCELLED": cancelled,
        "EXPIRED": and_(~cancelled, expired),
        "UPDATED": and_(~cancelled, ~expired, updated),
        "ACTIVE": and_(~cancelled, ~expired, ~updated),
    }[state]


def current_of(messages: Sequence[StoredAlert]) -> StoredAlert:
    """The content in force: the newest ALERT or UPDATE message."""
    return [m for m in messages if m.alert.message_type != alert_pb2.MESSAGE_TYPE_CANCEL][-1]


def view_of(
    messages: Sequence[StoredAlert], now: datetime, *, history: bool
) -> exchange_pb2.AlertView:
    return exchange_pb2.AlertView(
        id=messages[0].alert.id,
        state=state_of(messages, now),
        current=current_of(messages).alert,
        history=[m.alert for m in messages] if history else [],
        cursor=messages[-1].position,
    )


# -- acknowledgements ------------------------------------------------------------------------


def acknowledgements_of(
    connection: Connection, position: int, agency: str | None
) -> list[alert_pb2.Acknowledgement]:
    """Acknowledgements of the alert at ``position``, oldest first; only ``agency``'s if given."""
    query = (
        select(*ACK_COLUMNS)
        .where(acknowledgements.c.alert_position == position)
        .order_by(acknowledgements.c.id)
    )
    if agency is not None:
        query = query.where(acknowledgements.c.agency == agency)
    return [
        alert_pb2.Acknowledgement.FromString(opened_ack(connection, row))
        for row in connection.execute(query)
    ]


# -- subscriptions ---------------------------------------------------------------------------


def alerts_for(
    connection: Connection,
    agency: str,
    *,
    after: int,
    categories: Sequence[str],
    limit: int,
    now: datetime,
) -> list[StoredAlert]:
    """Messages addressed to ``agency`` after cursor ``after``, oldest first, unexpired."""
    query = _ALERTS_FOR_CATEGORIES if categories else _ALERTS_FOR
    values: dict[str, object] = {"agency": agency, "after": after, "now": now, "limit": limit}
    if categories:
        values["categories"] = list(categories)
    return read_messages(connection, connection.execute(query, values))


# Every subscription reads its next page with one of these after each wake-up: built once, as a
# statement built per call costs its construction and its cache key again each time
# (docs/performance.md, benchmark 1).
_ALERTS_FOR = (
    select(*READ_COLUMNS)
    .join(alert_recipients, alert_recipients.c.alert_position == alerts.c.position)
    .where(alert_recipients.c.agency == bindparam("agency"))
    .where(alerts.c.position > bindparam("after"))
    .where(or_(alerts.c.expires.is_(None), alerts.c.expires > bindparam("now")))
    # The index's own order (the same positions, by the join): the database walks the agency's
    # index from the cursor and stops at the limit, instead of sorting the whole backlog first.
    .order_by(alert_recipients.c.alert_position)
    .limit(bindparam("limit", type_=Integer))
)
_ALERTS_FOR_CATEGORIES = _ALERTS_FOR.where(
    alerts.c.category.in_(bindparam("categories", expanding=True))
)
