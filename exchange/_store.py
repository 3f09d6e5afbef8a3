"""Alert state: the alerts, who they are addressed to, and acknowledgements.

Writes happen only inside ledger works (see :class:`ledger.store.LedgerWriter`), so each row
commits in the same transaction as the ledger entry that records it. An alert's ``position`` is
assigned while the writer holds the ledger lock, so positions grow in commit order: a
subscriber's cursor never skips a row that commits later with a smaller position.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
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
    Select,
    String,
    Table,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from exchange._errors import ConfigError, Internal, NotFound, Unavailable
from exchange._sealing import OPTION, Keyring
from exchange._subscriptions import CHANNEL
from ledger import normalise_identifier
from ledger.store import create_engine
from sinergi.v1 import alert_pb2, exchange_pb2

T = TypeVar("T")

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
    Column("handling", String(12), nullable=False),
    Column("message_type", String(6), nullable=False),  # ALERT, UPDATE or CANCEL
    Column("thread_id", String(36), nullable=False),  # the original alert's id (its own, if ALERT)
    Column("sent", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=True),
    Column("idempotency_key", String(128), nullable=False),
    Column("request_digest", String(64), nullable=False),
    Column("publish_seq", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),  # plaintext, or sealed (exchange/_sealing.py)
    Column("key_id", String(16), nullable=True),  # the KEK that wrapped the data key; NULL: plain
    Column("wrapped_key", LargeBinary, nullable=True),
    UniqueConstraint("sender_agency", "idempotency_key", name="uq_alerts_idempotency"),
    Index("ix_alerts_thread", "thread_id", "position"),
    sqlite_autoincrement=True,
)

# Search keys: a keyed hash (a blind index: HMAC-SHA256 under a key derived from the KEK) of each
# normalised subject identifier, or its plain SHA-256 without a KEK (see :func:`subject_keys`);
# exact-match only, and a retention purge removes it with the alert.
alert_subjects = Table(
    "alert_subjects",
    metadata,
    Column("alert_position", _Position, ForeignKey("alerts.position"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("thread_id", String(36), nullable=False),
    Index("ix_alert_subjects_key", "key"),
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
    Column("key_id", String(16), nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    # a retried acknowledgement (same agency and key) is answered with the first one
    Column("idempotency_key", String(128), nullable=True),
    Column("request_digest", String(64), nullable=True),
    Column("ack_seq", BigInteger, nullable=True),
    Index("uq_acknowledgements_idempotency", "agency", "idempotency_key", unique=True),
)


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


@dataclass(frozen=True)
class StoredAlert:
    """One stored message (ALERT, UPDATE or CANCEL) and its position, the subscribers' cursor."""

    position: int
    alert: alert_pb2.Alert
    body: bytes


@dataclass(frozen=True)
class Existing:
    """A message already published under an idempotency key."""

    alert_id: str
    request_digest: str
    publish_seq: int


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


def _name(enum: Any, prefix: str, value: int) -> str:  # noqa: ANN401 - protobuf enum wrapper
    return str(enum.Name(value)).removeprefix(prefix)


def _utc(timestamp: Timestamp) -> datetime:
    return timestamp.ToDatetime(UTC)


def keyring_of(connection: Connection | Engine) -> Keyring | None:
    """The server's keyring, carried by its engine's execution options (None: no encryption)."""
    keys = connection.get_execution_options().get(OPTION)
    assert keys is None or isinstance(keys, Keyring)
    return keys


def with_keyring(engine: Engine, keys: Keyring | None) -> Engine:
    """``engine`` whose connections seal and open bodies with ``keys``."""
    return engine.execution_options(**{OPTION: keys}) if keys is not None else engine


def search_key(kind: str, value: str, keys: Keyring | None = None) -> str:
    """The index key of one identifier for a new row: a blind index (HMAC under the current
    KEK's index key), or SHA-256 of its normalised form without a keyring."""
    identifier = normalise_identifier(kind, value)
    return keys.index_key(identifier) if keys else hashlib.sha256(identifier).hexdigest()


def search_keys(kind: str, value: str, keys: Keyring | None) -> list[str]:
    """Every key a row about the identifier may carry: one per KEK, and plain SHA-256 (rows
    written before encryption was turned on)."""
    identifier = normalise_identifier(kind, value)
    return [*(keys.index_keys(identifier) if keys else []), hashlib.sha256(identifier).hexdigest()]


def subject_keys(alert: alert_pb2.Alert, keys: Keyring | None = None) -> set[str]:
    found = set()
    for subject in alert.subjects:
        kind = subject.WhichOneof("kind")
        if kind == "person":
            person = subject.person
            if person.passport_number:
                found.add(search_key("passport", person.passport_number, keys))
            if person.nik:
                found.add(search_key("nik", person.nik, keys))
            if person.name and person.birth_date:
                found.add(search_key("person", f"{person.name}|{person.birth_date}", keys))
        elif kind == "device":
            found.add(search_key("imei", subject.device.imei, keys))
    return found


def alert_context(alert_id: str) -> bytes:
    """What a sealed alert body is bound to (AES-GCM associated data)."""
    return f"sinergi/v1/alert:{alert_id}".encode()


def ack_context(position: int, agency: str, principal: str) -> bytes:
    return f"sinergi/v1/ack:{position}:{agency}:{principal}".encode()


def stored_body(connection: Connection, body: bytes, context: bytes) -> dict[str, object]:
    """The column values that store ``body``: sealed when the connection has a keyring."""
    keys = keyring_of(connection)
    if keys is None:
        return {"body": body, "key_id": None, "wrapped_key": None}
    sealed = keys.seal(body, context)
    return {"body": sealed.body, "key_id": sealed.key_id, "wrapped_key": sealed.wrapped_key}


def opened_body(
    connection: Connection, body: bytes, key_id: str | None, wrapped: bytes | None,
    context: bytes,
) -> bytes:  # fmt: skip
    """The plaintext of a stored body (plain rows pass through)."""
    if key_id is None:
        return bytes(body)
    keys = keyring_of(connection)
    if keys is None or wrapped is None:
        raise Internal("stored data is encrypted and this process has no key-encryption key")
    return keys.open(key_id, bytes(wrapped), bytes(body), context)


async def read(engine: Engine, query: Callable[[Connection], T]) -> T:
    """Run ``query`` on a pooled connection in a thread, so the event loop never waits on the
    database; a database that cannot be reached is UNAVAILABLE, not INTERNAL."""

    def run() -> T:
        with engine.connect() as connection:
            return query(connection)

    try:
        return await asyncio.to_thread(run)
    except SQLAlchemyError as exc:
        raise Unavailable("the database is unavailable; retry later") from exc


# The statements of every publish, built once: a statement built per call costs its
# construction and its cache key again each time (docs/performance.md, benchmark 1).
_FIND_BY_KEY = select(alerts.c.id, alerts.c.request_digest, alerts.c.publish_seq).where(
    alerts.c.sender_agency == bindparam("agency"), alerts.c.idempotency_key == bindparam("key")
)
_INSERT_ALERT = insert(alerts).returning(alerts.c.position)
_INSERT_RECIPIENTS = insert(alert_recipients)
_INSERT_SUBJECTS = insert(alert_subjects)
_NOTIFY = select(func.pg_notify(CHANNEL, bindparam("recipients", type_=String)))


def find_by_idempotency_key(connection: Connection, agency: str, key: str) -> Existing | None:
    row = connection.execute(_FIND_BY_KEY, {"agency": agency, "key": key}).first()
    return Existing(row.id, row.request_digest, row.publish_seq) if row else None


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
    message_type = _name(alert_pb2.MessageType, "MESSAGE_TYPE_", alert.message_type)
    thread_id = alert.id if message_type == "ALERT" else alert.references[0]
    position: int = connection.execute(
        _INSERT_ALERT,
        {
            "id": alert.id,
            "sender": alert.sender,
            "sender_agency": sender_agency,
            "category": _name(alert_pb2.Category, "CATEGORY_", alert.category),
            "handling": _name(alert_pb2.Tlp, "TLP_", alert.handling),
            "message_type": message_type,
            "thread_id": thread_id,
            "sent": _utc(alert.sent),
            "expires": _utc(alert.expires) if alert.HasField("expires") else None,
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
        # for a list longer than PostgreSQL's 8,000-byte payload limit.
        recipients = ",".join(sorted(alert.recipients))
        connection.execute(_NOTIFY, {"recipients": recipients if len(recipients) < 8000 else ""})
    keys = subject_keys(alert, keyring_of(connection))
    if keys:
        connection.execute(
            _INSERT_SUBJECTS,
            [{"alert_position": position, "key": k, "thread_id": thread_id} for k in keys],
        )
    return position


#: The columns :func:`_messages` needs to open a stored message.
_MESSAGE = (alerts.c.position, alerts.c.id, alerts.c.body, alerts.c.key_id, alerts.c.wrapped_key)


def _messages(connection: Connection, rows: Iterable[Any]) -> list[StoredAlert]:
    found = []
    for row in rows:
        body = opened_body(connection, row.body, row.key_id, row.wrapped_key, alert_context(row.id))
        found.append(StoredAlert(row.position, alert_pb2.Alert.FromString(body), body))
    return found


def thread_of(connection: Connection, alert_id: str) -> list[StoredAlert]:
    """Every message of the thread that ``alert_id`` belongs to, oldest first; [] if unknown."""
    thread = select(alerts.c.thread_id).where(alerts.c.id == alert_id).scalar_subquery()
    return _messages(
        connection,
        connection.execute(
            select(*_MESSAGE).where(alerts.c.thread_id == thread).order_by(alerts.c.position)
        ),
    )


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
            messages = thread_of(connection, alert_id)
    except Internal as exc:
        raise ConfigError(f"{exc.reason}: pass the exchange's --kek-file") from None
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot read the alerts of {url}: {exc.__class__.__name__}") from None
    finally:
        engine.dispose()
    for message in messages:
        if message.alert.id == alert_id:
            return message.body
    raise NotFound(f"no alert {alert_id} is stored (never published here, or purged)")


def threads(connection: Connection, thread_ids: Sequence[str]) -> dict[str, list[StoredAlert]]:
    found: dict[str, list[StoredAlert]] = {thread_id: [] for thread_id in thread_ids}
    rows = connection.execute(
        select(*_MESSAGE, alerts.c.thread_id)
        .where(alerts.c.thread_id.in_(list(thread_ids)))
        .order_by(alerts.c.position)
    ).all()
    for message, row in zip(_messages(connection, rows), rows, strict=True):
        found[row.thread_id].append(message)
    return found


def visible(connection: Connection, position: int, visibility: Visibility) -> bool:
    query = select(alerts.c.position).where(alerts.c.position == position, visibility.clause())
    return connection.execute(query).first() is not None


def state_of(messages: Sequence[StoredAlert], now: datetime) -> alert_pb2.AlertState.ValueType:
    """CAP 1.2 lifecycle: cancelled, else expired by the content in force, else (updated) active.

    Mirrors :func:`_state_clause`, which decides the same in SQL for listing."""
    types = {m.alert.message_type for m in messages}
    if alert_pb2.MESSAGE_TYPE_CANCEL in types:
        return alert_pb2.ALERT_STATE_CANCELLED
    current = current_of(messages).alert
    if current.HasField("expires") and _utc(current.expires) <= now:
        return alert_pb2.ALERT_STATE_EXPIRED
    if alert_pb2.MESSAGE_TYPE_UPDATE in types:
        return alert_pb2.ALERT_STATE_UPDATED
    return alert_pb2.ALERT_STATE_ACTIVE


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


def _state_clause(state: str, now: datetime) -> ColumnElement[bool]:
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
        select_ids = select_ids.where(or_(*(_state_clause(s, now) for s in query.states)))
    if query.thread_ids is not None:
        select_ids = select_ids.where(alerts.c.id.in_(query.thread_ids))
    rows = connection.execute(select_ids).all()
    page, more = rows[: query.limit], len(rows) > query.limit
    found = threads(connection, [row.id for row in page])
    return [found[row.id] for row in page], (page[-1].position if more else 0)


def matching_threads(keys: Sequence[str]) -> Select[tuple[str]]:
    return select(alert_subjects.c.thread_id).where(alert_subjects.c.key.in_(list(keys)))


def addressed_to(connection: Connection, alert_id: str, agency: str) -> StoredAlert | None:
    """The original of ``alert_id``'s thread if it is addressed to ``agency``, else None."""
    thread = select(alerts.c.thread_id).where(alerts.c.id == alert_id).scalar_subquery()
    row = connection.execute(
        select(*_MESSAGE)
        .join(alert_recipients, alert_recipients.c.alert_position == alerts.c.position)
        .where(alerts.c.id == thread, alert_recipients.c.agency == agency)
    ).first()
    return _messages(connection, [row])[0] if row else None


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


@dataclass(frozen=True)
class ExistingAck:
    """An acknowledgement already recorded under an idempotency key."""

    acknowledgement: alert_pb2.Acknowledgement
    request_digest: str
    seq: int


def find_acknowledgement(connection: Connection, agency: str, key: str) -> ExistingAck | None:
    row = connection.execute(
        select(*ACK_COLUMNS, acknowledgements.c.request_digest, acknowledgements.c.ack_seq).where(
            acknowledgements.c.agency == agency, acknowledgements.c.idempotency_key == key
        )
    ).first()
    if row is None:
        return None
    ack = alert_pb2.Acknowledgement.FromString(opened_ack(connection, row))
    return ExistingAck(ack, row.request_digest, row.ack_seq)


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


#: The columns :func:`opened_ack` needs.
ACK_COLUMNS = (
    acknowledgements.c.id,
    acknowledgements.c.alert_position,
    acknowledgements.c.agency,
    acknowledgements.c.principal,
    acknowledgements.c.body,
    acknowledgements.c.key_id,
    acknowledgements.c.wrapped_key,
)


def opened_ack(connection: Connection, row: Any) -> bytes:  # noqa: ANN401 - a result row
    context = ack_context(row.alert_position, row.agency, row.principal)
    return opened_body(connection, row.body, row.key_id, row.wrapped_key, context)


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
    return _messages(connection, connection.execute(query, values))


# Every subscription reads its next page with one of these after each wake-up: built once, like
# the publish's statements above.
_ALERTS_FOR = (
    select(*_MESSAGE)
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


@dataclass(frozen=True)
class Resealed:
    """What :func:`reseal` changed, and which key-encryption keys rows still need after it."""

    alerts: int
    acknowledgements: int
    keys_in_use: tuple[str, ...]


def reseal(engine: Engine, batch: int = 500) -> Resealed:
    """Seal every alert and acknowledgement under the current (first) KEK of ``engine``'s
    keyring, and rebuild alerts' search index under it, ``batch`` rows per transaction.

    After a rotation this lets the old KEK be dropped (docs/decisions/0013); it also seals rows
    written before encryption was turned on. Each row gets a fresh data key; the ledger's digests
    are over the plaintext and do not change. Restartable: it only takes rows not yet sealed
    under the current key, so an interrupted run is finished by running it again."""
    keys = keyring_of(engine)
    if keys is None:
        raise ConfigError("resealing needs the key-encryption keys (--kek-file or SINERGI_KEK)")
    current = keys.current_id
    counts = {"alerts": 0, "acknowledgements": 0}
    stale = or_(alerts.c.key_id.is_(None), alerts.c.key_id != current)
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                select(*_MESSAGE, alerts.c.thread_id).where(stale).limit(batch)
            ).all()
            for stored, row in zip(_messages(connection, rows), rows, strict=True):
                connection.execute(
                    update(alerts).where(alerts.c.position == stored.position)
                    .values(**stored_body(connection, stored.body, alert_context(row.id)))
                )  # fmt: skip
                connection.execute(
                    delete(alert_subjects).where(alert_subjects.c.alert_position == row.position)
                )
                index = subject_keys(stored.alert, keys)
                if index:
                    connection.execute(_INSERT_SUBJECTS, [
                        {"alert_position": row.position, "key": k, "thread_id": row.thread_id}
                        for k in index
                    ])  # fmt: skip
        counts["alerts"] += len(rows)
        if len(rows) < batch:
            break
    stale_acks = or_(acknowledgements.c.key_id.is_(None), acknowledgements.c.key_id != current)
    while True:
        with engine.begin() as connection:
            acks = connection.execute(select(*ACK_COLUMNS).where(stale_acks).limit(batch)).all()
            for ack in acks:
                context = ack_context(ack.alert_position, ack.agency, ack.principal)
                connection.execute(
                    update(acknowledgements).where(acknowledgements.c.id == ack.id)
                    .values(**stored_body(connection, opened_ack(connection, ack), context))
                )  # fmt: skip
        counts["acknowledgements"] += len(acks)
        if len(acks) < batch:
            break
    reclaim(engine)
    with engine.connect() as connection:
        used = {
            key
            for table in (alerts, acknowledgements)
            for key in connection.execute(select(table.c.key_id).distinct()).scalars()
        }
    return Resealed(counts["alerts"], counts["acknowledgements"],
                    tuple(sorted(k if k is not None else "(plain)" for k in used)))  # fmt: skip


def reclaim(engine: Engine) -> None:
    """Make the old row versions unreadable on disk too, not just unreachable."""
    if engine.dialect.name == "sqlite":
        # secure_delete (ledger/_engine.py) zeroed the old cells; the WAL still holds old page
        # images until it is checkpointed and truncated.
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM alerts, alert_subjects, acknowledgements"))
