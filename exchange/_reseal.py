"""Resealing after a key rotation (`sinergi db reseal`), and making old row versions unreadable
on disk once rows were rewritten (also after a retention purge).

After a rotation this lets the old KEK be dropped (docs/decisions/0013); it also seals rows
written before encryption was turned on.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, or_, select, text, update

from exchange._bodies import (
    ACK_COLUMNS,
    ack_context,
    alert_context,
    keyring_of,
    opened_ack,
    stored_body,
)
from exchange._errors import ConfigError
from exchange._sealing import Keyring
from exchange._search import index_subjects
from exchange._tables import acknowledgements, alert_subjects, alerts
from exchange._threads import MESSAGE_COLUMNS, StoredAlert, opened_messages


@dataclass(frozen=True)
class Resealed:
    """What :func:`reseal` changed, and which key-encryption keys rows still need after it."""

    alerts: int
    acknowledgements: int
    keys_in_use: tuple[str, ...]


def reseal(engine: Engine, batch: int = 500) -> Resealed:
    """Seal every alert and acknowledgement under the current (first) KEK of ``engine``'s
    keyring, and rebuild alerts' search index under it, ``batch`` rows per transaction.

    Each row gets a fresh data key; the ledger's digests are over the plaintext and do not
    change. Restartable: it only takes rows not yet sealed under the current key, so an
    interrupted run is finished by running it again."""
    keys = keyring_of(engine)
    if keys is None:
        raise ConfigError("resealing needs the key-encryption keys (--kek-file or SINERGI_KEK)")
    resealed_alerts = _reseal_alerts(engine, keys, batch)
    resealed_acks = _reseal_acknowledgements(engine, keys, batch)
    reclaim(engine)
    with engine.connect() as connection:
        used = {
            key
            for table in (alerts, acknowledgements)
            for key in connection.execute(select(table.c.key_id).distinct()).scalars()
        }
    in_use = tuple(sorted(key if key is not None else "(plain)" for key in used))
    return Resealed(resealed_alerts, resealed_acks, in_use)


def _reseal_alerts(engine: Engine, keys: Keyring, batch: int) -> int:
    stale = or_(alerts.c.key_id.is_(None), alerts.c.key_id != keys.current_id)
    count = 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                select(*MESSAGE_COLUMNS, alerts.c.thread_id).where(stale).limit(batch)
            ).all()
            for stored, row in zip(opened_messages(connection, rows), rows, strict=True):
                sealed = stored_body(connection, stored.body, alert_context(row.id))
                connection.execute(
                    update(alerts).where(alerts.c.position == stored.position).values(**sealed)
                )
                _index_anew(connection, stored, row.thread_id, keys)
        count += len(rows)
        if len(rows) < batch:
            return count


def reindex(engine: Engine, batch: int = 500) -> int:
    """Rebuild the search index of every stored alert under ``engine``'s current KEK (plain
    SHA-256 without a keyring), ``batch`` alerts per transaction, oldest first; the number of
    alerts read. After an upgrade that indexes more identifiers (organisations, which related
    alerts are found by: exchange/_correlation.py), so that alerts stored before are found by
    them too. Restartable; a purged alert has no subjects left, and gets no rows."""
    keys = keyring_of(engine)
    count, after = 0, 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                select(*MESSAGE_COLUMNS, alerts.c.thread_id)
                .where(alerts.c.position > after)
                .order_by(alerts.c.position)
                .limit(batch)
            ).all()
            for stored, row in zip(opened_messages(connection, rows), rows, strict=True):
                _index_anew(connection, stored, row.thread_id, keys)
        count += len(rows)
        if len(rows) < batch:
            return count
        after = rows[-1].position


def _reseal_acknowledgements(engine: Engine, keys: Keyring, batch: int) -> int:
    stale = or_(acknowledgements.c.key_id.is_(None), acknowledgements.c.key_id != keys.current_id)
    count = 0
    while True:
        with engine.begin() as connection:
            acks = connection.execute(select(*ACK_COLUMNS).where(stale).limit(batch)).all()
            for ack in acks:
                context = ack_context(ack.alert_position, ack.agency, ack.principal)
                sealed = stored_body(connection, opened_ack(connection, ack), context)
                connection.execute(
                    update(acknowledgements).where(acknowledgements.c.id == ack.id).values(**sealed)
                )
        count += len(acks)
        if len(acks) < batch:
            return count


def reclaim(engine: Engine) -> None:
    """Make the old row versions unreadable on disk too, not just unreachable."""
    if engine.dialect.name == "sqlite":
        # secure_delete (ledger/store/_engine.py) zeroed the old cells; the WAL still holds old
        # page images until it is checkpointed and truncated.
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM alerts, alert_subjects, acknowledgements"))


def _index_anew(
    connection: Connection, stored: StoredAlert, thread_id: str, keys: Keyring | None
) -> None:
    """Replace the search keys of ``stored`` with those ``keys`` make now."""
    connection.execute(
        delete(alert_subjects).where(alert_subjects.c.alert_position == stored.position)
    )
    index_subjects(connection, stored.position, thread_id, stored.alert, keys)
