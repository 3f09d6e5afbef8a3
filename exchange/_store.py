"""Alert state: the alerts, who they are addressed to, and acknowledgements.

Writes happen only inside ledger works (see :class:`ledger.LedgerWriter`), so each row commits in
the same transaction as the ledger entry that records it. An alert's ``position`` is assigned while
the writer holds the ledger lock, so positions grow in commit order: a subscriber's cursor never
skips a row that commits later with a smaller position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
)

from sinergi.v1 import alert_pb2

metadata = MetaData()

_Position = BigInteger().with_variant(Integer, "sqlite")

alerts = Table(
    "alerts",
    metadata,
    Column("position", _Position, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("sender", String(255), nullable=False),
    Column("sender_agency", String(63), nullable=False),
    Column("category", String(40), nullable=False),
    Column("sent", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("request_digest", String(64), nullable=False),
    Column("publish_seq", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    UniqueConstraint("sender_agency", "idempotency_key", name="uq_alerts_idempotency"),
    sqlite_autoincrement=True,
)

alert_recipients = Table(
    "alert_recipients",
    metadata,
    Column("alert_position", _Position, ForeignKey("alerts.position"), primary_key=True),
    Column("agency", String(63), primary_key=True),
    Index("ix_alert_recipients_agency", "agency", "alert_position"),
)

acknowledgements = Table(
    "acknowledgements",
    metadata,
    Column("id", _Position, primary_key=True, autoincrement=True),
    Column("alert_position", _Position, ForeignKey("alerts.position"), nullable=False),
    Column("agency", String(63), nullable=False),
    Column("principal", String(255), nullable=False),
    Column("response", String(20), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
)


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


@dataclass(frozen=True)
class StoredAlert:
    position: int
    alert: alert_pb2.Alert
    body: bytes


@dataclass(frozen=True)
class Existing:
    """An alert already published under an idempotency key."""

    alert_id: str
    request_digest: str
    publish_seq: int


def find_by_idempotency_key(connection: Connection, agency: str, key: str) -> Existing | None:
    row = connection.execute(
        select(alerts.c.id, alerts.c.request_digest, alerts.c.publish_seq).where(
            alerts.c.sender_agency == agency, alerts.c.idempotency_key == key
        )
    ).first()
    return Existing(row.id, row.request_digest, row.publish_seq) if row else None


def insert_alert(
    connection: Connection,
    alert: alert_pb2.Alert,
    body: bytes,
    *,
    sender_agency: str,
    category: str,
    idempotency_key: str,
    request_digest: str,
    publish_seq: int,
) -> int:
    position: int = connection.execute(
        insert(alerts).returning(alerts.c.position),
        {
            "id": alert.id,
            "sender": alert.sender,
            "sender_agency": sender_agency,
            "category": category,
            "sent": alert.sent.ToDatetime(),
            "idempotency_key": idempotency_key,
            "request_digest": request_digest,
            "publish_seq": publish_seq,
            "body": body,
        },
    ).scalar_one()
    connection.execute(
        insert(alert_recipients),
        [{"alert_position": position, "agency": agency} for agency in alert.recipients],
    )
    return position


def addressed_to(connection: Connection, alert_id: str, agency: str) -> int | None:
    """The alert's position if it exists and is addressed to ``agency``, else None."""
    row = connection.execute(
        select(alerts.c.position)
        .join(alert_recipients, alert_recipients.c.alert_position == alerts.c.position)
        .where(alerts.c.id == alert_id, alert_recipients.c.agency == agency)
    ).first()
    return row.position if row else None


def insert_acknowledgement(
    connection: Connection,
    position: int,
    ack: alert_pb2.Acknowledgement,
    body: bytes,
    time: datetime,
) -> None:
    connection.execute(
        insert(acknowledgements),
        {
            "alert_position": position,
            "agency": ack.agency,
            "principal": ack.principal,
            "response": alert_pb2.Response.Name(ack.response).removeprefix("RESPONSE_"),
            "body": body,
            "time": time,
        },
    )


def alerts_for(
    connection: Connection, agency: str, after: int, categories: Sequence[str], limit: int
) -> list[StoredAlert]:
    """Alerts addressed to ``agency`` after cursor ``after``, oldest first."""
    query = (
        select(alerts.c.position, alerts.c.body)
        .join(alert_recipients, alert_recipients.c.alert_position == alerts.c.position)
        .where(alert_recipients.c.agency == agency, alerts.c.position > after)
        .order_by(alerts.c.position)
        .limit(limit)
    )
    if categories:
        query = query.where(alerts.c.category.in_(categories))
    return [
        StoredAlert(row.position, alert_pb2.Alert.FromString(row.body), bytes(row.body))
        for row in connection.execute(query)
    ]
