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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select, update

from exchange import _entries
from exchange._bodies import ACK_COLUMNS, ack_context, alert_context, opened_ack, stored_body
from exchange._policy import Policy
from exchange._reseal import reclaim
from exchange._tables import acknowledgements, alert_subjects, alerts
from exchange._threads import StoredAlert, current_of, threads
from ledger import Actor, EntryDraft
from ledger.store import LedgerWriter, Work
from sinergi.v1 import alert_pb2

REDACTED = "[removed under retention]"


@dataclass(frozen=True)
class Candidate:
    thread_id: str
    category: str
    ended: datetime
    messages: tuple[StoredAlert, ...]


def _ended(messages: Sequence[StoredAlert], now: datetime) -> datetime | None:
    """When the thread stopped being in force, or None while it still is."""
    for message in messages:
        if message.alert.message_type == alert_pb2.MESSAGE_TYPE_CANCEL:
            return message.alert.sent.ToDatetime(UTC)
    current = current_of(messages).alert
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
            select(alerts.c.id, alerts.c.category)
            .where(alerts.c.message_type == "ALERT")
            .order_by(alerts.c.position)
        ).all()
        found_threads = threads(connection, [row.id for row in originals])
    found = []
    for row in originals:
        messages = found_threads[row.id]
        if current_of(messages).alert.summary == REDACTED:
            continue  # purged before
        ended = _ended(messages, now)
        if older_than is not None:
            keep = older_than
        else:
            keep = timedelta(days=policy.retention_days(row.category))
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
        writer.submit(_purge(candidate, actor, days)).result(60)
    reclaim(engine)
    return len(found)


def _purge(candidate: Candidate, actor: Actor, days: str) -> Work[None]:
    """The work that purges ``candidate`` and records it."""

    def work(connection: Connection, _seq: int) -> tuple[None, list[EntryDraft]]:
        for message in candidate.messages:
            redacted = _redacted(message.alert)  # sealed anew when bodies are encrypted
            sealed = stored_body(connection, redacted, alert_context(message.alert.id))
            connection.execute(
                update(alerts).where(alerts.c.position == message.position).values(**sealed)
            )
        connection.execute(
            delete(alert_subjects).where(alert_subjects.c.thread_id == candidate.thread_id)
        )
        _clear_notes(connection, candidate.messages[0].position)
        entry = _entries.redaction(
            actor, candidate.messages, candidate.category, days, candidate.ended
        )
        return None, [entry]

    return work


def _clear_notes(connection: Connection, position: int) -> None:
    rows = connection.execute(
        select(*ACK_COLUMNS).where(acknowledgements.c.alert_position == position)
    ).all()
    for row in rows:
        ack = alert_pb2.Acknowledgement.FromString(opened_ack(connection, row))
        if ack.note:
            ack.note = ""
            context = ack_context(row.alert_position, row.agency, row.principal)
            body = ack.SerializeToString(deterministic=True)
            connection.execute(
                update(acknowledgements)
                .where(acknowledgements.c.id == row.id)
                .values(**stored_body(connection, body, context))
            )
