"""Retention under the personal-data protection law: remove the personal data of alerts that
stopped being in force long enough ago, and say so in the ledger.

An alert thread is purged once it has been cancelled or has expired, and its category's
retention period (policy ``[retention]``) has passed since. Every message of the thread keeps its
envelope (id, sender, category, marking, recipients, times) and loses its subjects, place,
summary and details, and the signed statement that repeats them (docs/decisions/0014); the
search index rows go, and acknowledgement notes are cleared. One REDACT entry per thread
records it, in the same transaction. The ledger itself holds digests only, so it stays whole and
verifiable; the original digests still prove what was exchanged to anyone holding a retained
copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select, update

from exchange import _store
from exchange._policy import Policy
from ledger import Action, Actor, EntryDraft
from ledger.store import LedgerWriter
from sinergi.v1 import alert_pb2

REDACTED = "[removed under retention]"


@dataclass(frozen=True)
class Candidate:
    thread_id: str
    category: str
    ended: datetime
    messages: tuple[_store.StoredAlert, ...]


def _ended(messages: Sequence[_store.StoredAlert], now: datetime) -> datetime | None:
    """When the thread stopped being in force, or None while it still is."""
    for message in messages:
        if message.alert.message_type == alert_pb2.MESSAGE_TYPE_CANCEL:
            return message.alert.sent.ToDatetime(UTC)
    current = _store.current_of(messages).alert
    if current.HasField("expires"):
        expires = current.expires.ToDatetime(UTC)
        if expires <= now:
            return expires
    return None


def candidates(
    engine: Engine, policy: Policy, now: datetime, older_than: timedelta | None = None
) -> list[Candidate]:
    """Threads past retention: ``older_than`` replaces the policy's period when given."""
    with engine.connect() as connection:
        originals = connection.execute(
            select(_store.alerts.c.id, _store.alerts.c.category)
            .where(_store.alerts.c.message_type == "ALERT")
            .order_by(_store.alerts.c.position)
        ).all()
        threads = _store.threads(connection, [row.id for row in originals])
    found = []
    for row in originals:
        messages = threads[row.id]
        if _store.current_of(messages).alert.summary == REDACTED:
            continue  # purged before
        ended = _ended(messages, now)
        keep = older_than if older_than is not None else timedelta(
            days=policy.retention_days(row.category)
        )  # fmt: skip
        if ended is not None and ended + keep <= now:
            found.append(Candidate(row.id, row.category, ended, tuple(messages)))
    return found


def _redacted(alert: alert_pb2.Alert) -> bytes:
    kept = alert_pb2.Alert()
    kept.CopyFrom(alert)
    del kept.subjects[:]
    kept.ClearField("place")
    kept.summary = REDACTED
    kept.details = ""
    if kept.HasField("signature"):  # the signed statement repeats the personal data
        kept.signature.statement = b""
        kept.signature.redacted = True
    return kept.SerializeToString(deterministic=True)


def purge(
    engine: Engine, writer: LedgerWriter, actor: Actor, found: Sequence[Candidate], days: str
) -> int:
    """Purge ``found``, one transaction and one REDACT entry per thread; returns entries added."""
    for candidate in found:

        def work(connection: Connection, _seq: int, c: Candidate = candidate) -> tuple[
            None, list[EntryDraft]
        ]:  # fmt: skip
            originals = b"".join(m.body for m in c.messages)
            for message in c.messages:
                redacted = _redacted(message.alert)  # sealed anew when bodies are encrypted
                connection.execute(
                    update(_store.alerts)
                    .where(_store.alerts.c.position == message.position)
                    .values(**_store.stored_body(
                        connection, redacted, _store.alert_context(message.alert.id)))
                )  # fmt: skip
            connection.execute(
                delete(_store.alert_subjects).where(
                    _store.alert_subjects.c.thread_id == c.thread_id
                )
            )
            _clear_notes(connection, c.messages[0].position)
            return None, [
                EntryDraft(
                    Action.REDACT,
                    actor,
                    objects=tuple(f"alert:{m.alert.id}" for m in c.messages),
                    digest=hashlib.sha256(originals).hexdigest(),
                    meta={"category": c.category, "retention_days": days,
                          "ended": c.ended.isoformat(timespec="seconds")},
                )
            ]  # fmt: skip

        writer.submit(work).result(60)
    _store.reclaim(engine)
    return len(found)


def _clear_notes(connection: Connection, position: int) -> None:
    rows = connection.execute(
        select(*_store.ACK_COLUMNS).where(_store.acknowledgements.c.alert_position == position)
    ).all()
    for row in rows:
        ack = alert_pb2.Acknowledgement.FromString(_store.opened_ack(connection, row))
        if ack.note:
            ack.note = ""
            context = _store.ack_context(row.alert_position, row.agency, row.principal)
            body = ack.SerializeToString(deterministic=True)
            connection.execute(
                update(_store.acknowledgements)
                .where(_store.acknowledgements.c.id == row.id)
                .values(**_store.stored_body(connection, body, context))
            )
