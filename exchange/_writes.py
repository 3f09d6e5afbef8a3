"""Storing a message or an acknowledgement, and waking the subscribers of other replicas.

These run only inside ledger works (see :class:`ledger.store.LedgerWriter`), so each row commits
in the same transaction as the ledger entry that records it. An alert's ``position`` is assigned
while the writer holds the ledger lock, so positions grow in commit order: a subscriber's cursor
never skips a row that commits later with a smaller position.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, String, bindparam, func, insert, select

from exchange._bodies import ack_context, alert_context, keyring_of, stored_body
from exchange._search import index_subjects
from exchange._subscriptions import CHANNEL
from exchange._tables import acknowledgements, alert_recipients, alerts, envelope_numbers
from sinergi.v1 import alert_pb2

# The statements of every publish, built once: a statement built per call costs its
# construction and its cache key again each time (docs/performance.md, benchmark 1).
_INSERT_ALERT = insert(alerts).returning(alerts.c.position)
_INSERT_RECIPIENTS = insert(alert_recipients)
_INSERT_NUMBERS = insert(envelope_numbers)
# One agency at a time: an expanding IN with GROUP BY cost four times as much (a publish to two
# agencies: 253 µs against 59 on SQLite), as its statement is compiled anew on every call.
_LAST_NUMBER = select(func.coalesce(func.max(envelope_numbers.c.number), 0)).where(
    envelope_numbers.c.agency == bindparam("agency")
)
_NOTIFY = select(func.pg_notify(CHANNEL, bindparam("recipients", type_=String)))
#: PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more.
_PAYLOAD_LIMIT = 8000


def insert_alert(
    connection: Connection,
    alert: alert_pb2.Alert,
    body: bytes,
    *,
    sender_agency: str,
    idempotency_key: str,
    request_digest: str,
    publish_seq: int,
) -> int:
    """Store one message; an UPDATE or CANCEL joins the thread of ``alert.references[0]``."""
    message_type = alert_pb2.MessageType.Name(alert.message_type).removeprefix("MESSAGE_TYPE_")
    thread_id = alert.id if message_type == "ALERT" else alert.references[0]
    position: int = connection.execute(
        _INSERT_ALERT,
        {
            "id": alert.id,
            "sender": alert.sender,
            "sender_agency": sender_agency,
            "category": alert_pb2.Category.Name(alert.category).removeprefix("CATEGORY_"),
            "handling": alert_pb2.Tlp.Name(alert.handling).removeprefix("TLP_"),
            "message_type": message_type,
            "thread_id": thread_id,
            "sent": alert.sent.ToDatetime(UTC),
            "expires": alert.expires.ToDatetime(UTC) if alert.HasField("expires") else None,
            "idempotency_key": idempotency_key,
            "request_digest": request_digest,
            "publish_seq": publish_seq,
            **stored_body(connection, body, alert_context(alert.id)),
        },
    ).scalar_one()
    connection.execute(
        _INSERT_RECIPIENTS,
        [{"alert_position": position, "agency": agency} for agency in alert.recipients],
    )
    if connection.dialect.name == "postgresql":  # wake every replica's subscribers at commit
        # Whom to wake (agency names hold no comma); an empty payload wakes every subscription,
        # for a list longer than PostgreSQL's payload limit.
        recipients = ",".join(sorted(alert.recipients))
        payload = recipients if len(recipients) < _PAYLOAD_LIMIT else ""
        connection.execute(_NOTIFY, {"recipients": payload})
    index_subjects(connection, position, thread_id, alert, keyring_of(connection))
    return position


def number_envelope(connection: Connection, recipients: Sequence[str], seq: int) -> list[str]:
    """Number the entry at ``seq`` for each of its recipients, one more than the last entry
    addressed to that agency: ``meta.to_index`` ("<agency>:<n>", in the order of ``meta.to``).
    The writer holds the ledger lock, so numbers follow ledger order on every replica."""
    numbers = {
        agency: connection.execute(_LAST_NUMBER, {"agency": agency}).scalar_one() + 1
        for agency in sorted(recipients)
    }
    connection.execute(
        _INSERT_NUMBERS,
        [{"agency": agency, "number": n, "seq": seq} for agency, n in numbers.items()],
    )
    return [f"{agency}:{n}" for agency, n in numbers.items()]


def insert_acknowledgement(
    connection: Connection,
    position: int,
    ack: alert_pb2.Acknowledgement,
    body: bytes,
    time: datetime,
    *,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
    seq: int | None = None,
) -> None:
    connection.execute(
        insert(acknowledgements),
        {
            "alert_position": position,
            "agency": ack.agency,
            "principal": ack.principal,
            "response": alert_pb2.Response.Name(ack.response).removeprefix("RESPONSE_"),
            "time": time,
            "idempotency_key": idempotency_key,
            "request_digest": request_digest,
            "ack_seq": seq,
            **stored_body(connection, body, ack_context(position, ack.agency, ack.principal)),
        },
    )
